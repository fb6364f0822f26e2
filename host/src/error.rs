//! The error type of every fallible call in this crate.

use core::fmt;

use cust::error::CudaError;
use flashomni_symbols::SymbolError;

/// Result alias for this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What went wrong. Inputs are validated before anything is launched, so a returned error
/// means nothing was written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A CUDA driver call failed.
    Cuda {
        /// What we were doing.
        context: &'static str,
        /// The driver's error.
        source: CudaError,
    },
    /// A raw driver call (one cust does not wrap) failed.
    Driver {
        /// What we were doing.
        context: &'static str,
        /// The `CUresult` code.
        code: u32,
        /// The driver's name for the code.
        name: String,
    },
    /// No CUDA device could be initialised (no driver, no GPU, or the ordinal does not exist).
    NoDevice(String),
    /// The device is older than the kernels need (sm_80).
    UnsupportedDevice {
        /// Compute capability major.
        major: i32,
        /// Compute capability minor.
        minor: i32,
    },
    /// A shape or size argument is inconsistent or out of the supported range.
    InvalidShape(String),
    /// A buffer is smaller than its shape and strides require.
    BufferTooSmall {
        /// Which argument.
        buffer: &'static str,
        /// Elements required.
        required: usize,
        /// Elements present.
        actual: usize,
    },
    /// A buffer's address or strides break the 16-byte alignment the kernels load with.
    Misaligned {
        /// Which argument.
        buffer: &'static str,
        /// What is misaligned.
        detail: String,
    },
    /// The combination asked for has no kernel (for example an unsupported head dimension).
    Unsupported(String),
    /// A symbol buffer failed validation.
    Symbols(SymbolError),
    /// The NCCL library could not be loaded, or lacks a function we bind.
    NcclUnavailable(String),
    /// Symbols, a plan or a workspace were made in another CUDA context than the engine's
    /// (another device, or a context of another library).
    WrongContext {
        /// Which argument.
        object: &'static str,
    },
    /// An NCCL call failed.
    Nccl {
        /// What we were doing.
        context: &'static str,
        /// The `ncclResult_t` code.
        code: i32,
        /// NCCL's description of the code.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cuda { context, source } => write!(f, "CUDA error while {context}: {source}"),
            Error::Driver { context, code, name } => write!(f, "CUDA error while {context}: {name} ({code})"),
            Error::NoDevice(why) => write!(f, "no usable CUDA device: {why}"),
            Error::UnsupportedDevice { major, minor } => {
                write!(f, "compute capability {major}.{minor} is not supported (sm_80 or newer is required)")
            }
            Error::InvalidShape(what) => write!(f, "invalid shape: {what}"),
            Error::BufferTooSmall { buffer, required, actual } => {
                write!(f, "buffer `{buffer}` holds {actual} elements but {required} are required")
            }
            Error::Misaligned { buffer, detail } => write!(f, "buffer `{buffer}` is misaligned: {detail}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::Symbols(err) => write!(f, "invalid sparse symbols: {err}"),
            Error::NcclUnavailable(why) => write!(f, "NCCL is not available: {why}"),
            Error::WrongContext { object } => write!(
                f,
                "`{object}` was made in another CUDA context than the engine's (another device?); make it \
                 after `Engine::make_current` of the engine that uses it"
            ),
            Error::Nccl { context, code, message } => write!(f, "NCCL error while {context}: {message} ({code})"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Cuda { source, .. } => Some(source),
            Error::Symbols(err) => Some(err),
            _ => None,
        }
    }
}

impl From<SymbolError> for Error {
    fn from(err: SymbolError) -> Self {
        Error::Symbols(err)
    }
}

/// Attaches a description of the operation to a driver error.
pub(crate) trait CudaContext<T> {
    /// Maps a `CudaError` into [`Error::Cuda`] with `context`.
    fn during(self, context: &'static str) -> Result<T>;
}

impl<T> CudaContext<T> for core::result::Result<T, CudaError> {
    fn during(self, context: &'static str) -> Result<T> {
        self.map_err(|source| Error::Cuda { context, source })
    }
}
