//! [`Engine`]: the device, its primary context, the loaded kernel module and a stream.

use cust::context::{Context, CurrentContext};
use cust::device::{Device, DeviceAttribute};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use cust::sys::{CUfunction, CUfunction_attribute};
use flashomni_kernels::abi::{self, HOPPER_KERNELS, KERNELS, KernelAbi};

use crate::error::{CudaContext, Error, Result};
use crate::launch::check;
use crate::module::Arch;

/// Kernel handles resolved once at load time, in the order of [`entries`].
struct Functions(Vec<CUfunction>);

// SAFETY: CUfunction handles are immutable driver objects usable from any thread once the
// owning context is current; we never mutate them after loading.
unsafe impl Send for Functions {}
// SAFETY: as above.
unsafe impl Sync for Functions {}

/// The entries of `arch`'s module: [`KERNELS`], then on `sm_90a` [`HOPPER_KERNELS`].
fn entries(arch: Arch) -> impl Iterator<Item = &'static KernelAbi> {
    let hopper: &[KernelAbi] = if arch == Arch::Sm90a { HOPPER_KERNELS } else { &[] };
    KERNELS.iter().chain(hopper)
}

/// Owns everything a FlashOmni call needs on one device.
///
/// The engine retains the device's **primary** context, the one the CUDA runtime and other
/// Rust CUDA stacks (cudarc, candle) use, so device pointers can be shared with them. The
/// kernel module is loaded once, and every entry is resolved and configured up front.
///
/// Everything passed to an engine must live in the engine's context: arrays, symbols, plans
/// and workspaces are allocated in the context current when they are made, which is the last
/// engine's (or [`Engine::make_current`]'s) on the calling thread. Symbols, plans and
/// workspaces made in another context are rejected with [`Error::WrongContext`]. Raw buffer
/// views carry no context, so with several devices in one process a buffer of another device
/// makes the kernel fault (`CUDA_ERROR_ILLEGAL_ADDRESS` at the next synchronisation, and the
/// context is lost).
pub struct Engine {
    // Field order matters: the stream and module go before the context they live in.
    stream: Stream,
    functions: Functions,
    /// Owns the code the function handles point into.
    _module: Module,
    context: Context,
    device: Device,
    arch: Arch,
    multiprocessors: u32,
}

impl Engine {
    /// Initialises the driver, retains the primary context of device `ordinal`, makes it
    /// current on this thread and loads the kernel module for the device (the Hopper module
    /// on compute capability 9.0, the portable one on other 8.x+ devices).
    pub fn new(ordinal: u32) -> Result<Self> {
        Self::open(ordinal, None)
    }

    /// Like [`Engine::new`], with the kernel module chosen by the caller, for example the
    /// portable [`Arch::Sm80`] module on a Hopper device to compare the two. Fails with
    /// [`Error::Unsupported`] when the module cannot run on the device ([`Arch::runs_on`]).
    pub fn with_arch(ordinal: u32, arch: Arch) -> Result<Self> {
        Self::open(ordinal, Some(arch))
    }

    fn open(ordinal: u32, requested: Option<Arch>) -> Result<Self> {
        cust::init(cust::CudaFlags::empty()).map_err(|err| Error::NoDevice(format!("cuInit failed: {err}")))?;
        let count = Device::num_devices().during("counting devices")?;
        if ordinal >= count {
            return Err(Error::NoDevice(format!("device {ordinal} requested, {count} present")));
        }
        let device = Device::get_device(ordinal).during("opening the device")?;
        let major = device.get_attribute(DeviceAttribute::ComputeCapabilityMajor).during("reading the device")?;
        let minor = device.get_attribute(DeviceAttribute::ComputeCapabilityMinor).during("reading the device")?;
        let arch = match requested {
            Some(arch) if !arch.runs_on(major, minor) => {
                return Err(Error::Unsupported(format!(
                    "the {} kernel module does not run on compute capability {major}.{minor}",
                    arch.target()
                )));
            }
            Some(arch) => arch,
            None => Arch::for_compute_capability(major, minor).ok_or(Error::UnsupportedDevice { major, minor })?,
        };
        let multiprocessors =
            device.get_attribute(DeviceAttribute::MultiprocessorCount).during("reading the device")? as u32;
        let context = Context::new(device).during("retaining the primary context")?;
        CurrentContext::set_current(&context).during("making the primary context current")?;
        let module = Module::from_ptx(arch.ptx(), &[]).during("loading the kernel module")?;
        let mut functions = Vec::new();
        for kernel in entries(arch) {
            let function = module.get_function(kernel.name).during("resolving a kernel entry")?.to_raw();
            functions.push(function);
        }
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None).during("creating a stream")?;
        let engine =
            Self { stream, functions: Functions(functions), _module: module, context, device, arch, multiprocessors };
        engine.configure_shared_memory()?;
        Ok(engine)
    }

    /// Raises each attention and GEMM entry's dynamic shared-memory limit to what it uses.
    fn configure_shared_memory(&self) -> Result<()> {
        let mut limits = Vec::new();
        for element in [abi::ElementKind::Bf16, abi::ElementKind::F16] {
            for head_dim in [64, 128] {
                for rows in [abi::AttentionRows::Rows64, abi::AttentionRows::Rows128] {
                    let name = abi::attention_entry(element, head_dim, rows).expect("built for these head dims");
                    limits.push((name, abi::attention_shared_bytes(head_dim, rows)));
                }
            }
            for rows in abi::GemmRows::ALL {
                limits.push((abi::gemm_q_entry(element, rows), abi::gemm_shared_bytes(rows)));
                limits.push((abi::gemm_o_entry(element, rows), abi::gemm_shared_bytes(rows)));
            }
            if self.arch == Arch::Sm90a {
                limits.push((abi::gemm_o_wide_entry(element), abi::gemm_o_wide_shared_bytes()));
            }
        }
        for (name, bytes) in limits {
            // SAFETY: a live function of this context; the attribute takes a byte count.
            let status = unsafe {
                cust::sys::cuFuncSetAttribute(
                    self.function(name)?,
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            };
            check(status, "raising a kernel's shared-memory limit")?;
        }
        Ok(())
    }

    /// The resolved handle of entry `name`.
    pub(crate) fn function(&self, name: &str) -> Result<CUfunction> {
        entries(self.arch)
            .position(|kernel| kernel.name == name)
            .map(|index| self.functions.0[index])
            .ok_or_else(|| Error::Unsupported(format!("no kernel entry named {name}")))
    }

    /// The engine's context handle as a number (what [`DeviceArray`](crate::DeviceArray)s
    /// record of the context they were allocated in).
    pub(crate) fn raw_context(&self) -> usize {
        self.context.as_raw() as usize
    }

    /// Makes this engine's context current on the calling thread (done by every launch).
    pub fn make_current(&self) -> Result<()> {
        CurrentContext::set_current(&self.context).during("making the primary context current")
    }

    /// The engine's own stream; operations take a stream argument, this is a convenient one.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Which embedded module was loaded.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> u32 {
        self.multiprocessors
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> Result<String> {
        self.device.name().during("reading the device name")
    }

    /// Blocks until all work on the engine's stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().during("synchronizing the stream")
    }
}
