//! A minimal NCCL binding, loaded at run time.
//!
//! Nothing links NCCL at build time: [`Nccl::load`] opens `libnccl.so.2` with `dlopen`
//! (through `libloading`) and resolves only the functions the sequence-parallel path needs:
//! `ncclGetUniqueId`, `ncclCommInitRank`, `ncclCommDestroy`, `ncclGroupStart`/`ncclGroupEnd`,
//! `ncclSend`/`ncclRecv` and `ncclGetErrorString`. A machine without NCCL builds, links and
//! runs everything else; only creating a [`Communicator`] fails, with
//! [`Error::NcclUnavailable`].
//!
//! Where the library comes from: the path in `FLASHOMNI_NCCL_LIB` ([`LIBRARY_ENV`]; a file,
//! or a folder holding `libnccl.so.2`) when set, else the dynamic loader's search path. The
//! Python wheel `nvidia-nccl-cu13` ships it in `site-packages/nvidia/nccl/lib`.
//!
//! Loading also sets `NCCL_NVLS_ENABLE=0` in the process environment unless the variable is
//! already set: NVLink multicast (NVLS) must stay off on the machines we run on, and the
//! grouped send/receive transfers used here gain nothing from it. Changing the environment
//! races with other threads that read it, and a library that merely exports NCCL's names could
//! have other signatures, so the loaders are `unsafe`: set the variable before the program
//! starts threads (or in its environment), and point them at NCCL.
//!
//! All-to-all is expressed as grouped point-to-point transfers
//! ([`Communicator::all_to_all`]): inside one `ncclGroupStart`/`ncclGroupEnd`, every rank
//! sends chunk `j` of its send buffer to rank `j` and receives chunk `j` of its receive buffer
//! from rank `j` (itself included).

use core::ffi::{c_char, c_int, c_void};
use core::mem::{ManuallyDrop, size_of};
use std::ffi::{CStr, OsStr};
use std::path::Path;
use std::sync::{Arc, Once};

use cust::context::{Context, CurrentContext};
use cust::device::Device;
use cust::stream::Stream;
use cust::sys::CUstream;
use libloading::Library;

use crate::element::Plain;
use crate::engine::Engine;
use crate::error::{CudaContext, Error, Result};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::validate::check_len;

/// The environment variable naming the NCCL library (a file, or a folder holding
/// [`LIBRARY_NAME`]).
pub const LIBRARY_ENV: &str = "FLASHOMNI_NCCL_LIB";

/// The file name [`Nccl::load`] asks the dynamic loader for when [`LIBRARY_ENV`] is unset.
pub const LIBRARY_NAME: &str = "libnccl.so.2";

/// The NCCL variable that switches NVLink multicast (NVLS) on or off.
pub const NVLS_ENV: &str = "NCCL_NVLS_ENABLE";

/// `ncclResult_t` (a C enum).
type RawResult = c_int;
/// `ncclComm_t` (an opaque pointer).
type RawComm = *mut c_void;
/// `ncclDataType_t` (a C enum).
type RawDataType = c_int;

/// `ncclSuccess`.
const NCCL_SUCCESS: RawResult = 0;
/// `ncclUint8`: transfers are counted in bytes, whatever the element type.
const NCCL_UINT8: RawDataType = 1;

/// Size of `ncclUniqueId` (`NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

/// The rendezvous token of one communicator (`ncclUniqueId`): created once by
/// [`Nccl::unique_id`] and handed to every rank (across threads, or across processes as
/// bytes).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UniqueId {
    internal: [u8; UNIQUE_ID_BYTES],
}

impl UniqueId {
    /// The raw bytes, to send to other processes.
    pub fn as_bytes(&self) -> &[u8; UNIQUE_ID_BYTES] {
        &self.internal
    }

    /// Rebuilds an id from the bytes of [`Self::as_bytes`].
    pub fn from_bytes(bytes: [u8; UNIQUE_ID_BYTES]) -> Self {
        Self { internal: bytes }
    }
}

impl core::fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UniqueId(..)")
    }
}

/// The resolved entry points (copied out of the library, which [`Nccl`] keeps open).
struct Functions {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> RawResult,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> RawResult,
    comm_destroy: unsafe extern "C" fn(RawComm) -> RawResult,
    group_start: unsafe extern "C" fn() -> RawResult,
    group_end: unsafe extern "C" fn() -> RawResult,
    send: unsafe extern "C" fn(*const c_void, usize, RawDataType, c_int, RawComm, CUstream) -> RawResult,
    recv: unsafe extern "C" fn(*mut c_void, usize, RawDataType, c_int, RawComm, CUstream) -> RawResult,
    get_error_string: unsafe extern "C" fn(RawResult) -> *const c_char,
}

/// Resolves `name` in `library` as a value of type `F` (a function pointer type).
///
/// # Safety
/// `F` must be the exact C signature of the symbol.
unsafe fn symbol<F: Copy>(library: &Library, name: &'static str) -> Result<F> {
    // SAFETY: the caller guarantees the signature; the pointer is copied out, and the
    // library outlives it because `Nccl` owns both.
    let found = unsafe { library.get::<F>(name.as_bytes()) };
    found.map(|symbol| *symbol).map_err(|err| Error::NcclUnavailable(format!("the library has no {name}: {err}")))
}

impl Functions {
    /// Resolves every entry point.
    ///
    /// # Safety
    /// `library` must be an NCCL 2.x library (whose C signatures are those declared above).
    unsafe fn resolve(library: &Library) -> Result<Self> {
        // SAFETY: every call passes the exact signature from `nccl.h` (NCCL 2.x): results and
        // data types are C enums (int), communicators are pointers, `ncclUniqueId` is passed by
        // value as a 128-byte `#[repr(C)]` struct, and `cudaStream_t` is the driver's
        // `CUstream`.
        unsafe {
            Ok(Self {
                get_unique_id: symbol(library, "ncclGetUniqueId")?,
                comm_init_rank: symbol(library, "ncclCommInitRank")?,
                comm_destroy: symbol(library, "ncclCommDestroy")?,
                group_start: symbol(library, "ncclGroupStart")?,
                group_end: symbol(library, "ncclGroupEnd")?,
                send: symbol(library, "ncclSend")?,
                recv: symbol(library, "ncclRecv")?,
                get_error_string: symbol(library, "ncclGetErrorString")?,
            })
        }
    }
}

/// Sets `NCCL_NVLS_ENABLE=0` ([`NVLS_ENV`]) unless the variable is already set (the loaders
/// call it; a program may call it first thing in `main`, so that loading writes nothing).
///
/// # Safety
/// Unless the variable is already set, no other thread may read or write the process
/// environment while this runs (the CUDA driver and other C code read it without Rust's lock).
pub unsafe fn disable_nvls() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(NVLS_ENV).is_none() {
            // SAFETY: changing the environment races with code that reads it without Rust's
            // lock (C `getenv`) on other threads; the caller guarantees that no other thread
            // reads or writes the environment now, since the variable is not set.
            unsafe { std::env::set_var(NVLS_ENV, "0") };
        }
    });
}

/// An opened NCCL library. Share it between ranks with the [`Arc`] the loaders return.
pub struct Nccl {
    functions: Functions,
    path: String,
    /// Keeps the code the function pointers point into mapped, for the rest of the process:
    /// NCCL is never unloaded, because `ncclGetUniqueId` and communicators leave NCCL's own
    /// threads (the bootstrap listener, proxies) running in its code after the calls return,
    /// and unmapping the library under them crashes the process (seen on the H200 machine as a
    /// segmentation fault once a test's `Nccl` was dropped).
    _library: ManuallyDrop<Library>,
}

impl Nccl {
    /// Opens the library named by `FLASHOMNI_NCCL_LIB` ([`LIBRARY_ENV`]) if set and not
    /// empty, else `libnccl.so.2` from the dynamic loader's search path.
    ///
    /// Sets `NCCL_NVLS_ENABLE=0` unless already set (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::NcclUnavailable`] when the library cannot be opened or lacks a function.
    ///
    /// # Safety
    /// As for [`Self::load_from`].
    pub unsafe fn load() -> Result<Arc<Self>> {
        // SAFETY: forwarded from the caller.
        unsafe {
            match std::env::var_os(LIBRARY_ENV) {
                Some(path) if !path.is_empty() => Self::load_from(path),
                _ => Self::load_from(LIBRARY_NAME),
            }
        }
    }

    /// Opens the library at `path`: a file, a folder holding `libnccl.so.2`, or a bare file
    /// name for the dynamic loader to search. Sets `NCCL_NVLS_ENABLE=0` as [`Self::load`] does.
    ///
    /// # Errors
    /// [`Error::NcclUnavailable`] when the library cannot be opened or lacks a function.
    ///
    /// # Safety
    /// - `path` must name NCCL 2.x, whose functions are called with the signatures of
    ///   `nccl.h`, or a library that is harmless to load (its initialisers run) and lacks one
    ///   of those functions (reported as an error; nothing in it is called).
    /// - Unless `NCCL_NVLS_ENABLE` is already set, no other thread may read or write the
    ///   process environment while this runs (the CUDA driver and other C code read it without
    ///   Rust's lock): call it before starting threads, or set the variable beforehand.
    pub unsafe fn load_from(path: impl AsRef<OsStr>) -> Result<Arc<Self>> {
        let path = Path::new(path.as_ref());
        let path = if path.is_dir() { path.join(LIBRARY_NAME) } else { path.to_path_buf() };
        // SAFETY: the caller's contract covers writing the environment.
        unsafe { disable_nvls() };
        // SAFETY: opening a shared library runs its initialisers: NCCL's only set up internal
        // state, and another library is harmless to load (the caller's contract). Once it
        // resolves, the library stays open for the rest of the process.
        let library = unsafe { Library::new(path.as_os_str()) }
            .map_err(|err| Error::NcclUnavailable(format!("cannot open {}: {err}", path.display())))?;
        // SAFETY: a library exporting these names is NCCL (the caller's contract), whose
        // signatures `resolve` declares.
        let functions = unsafe { Functions::resolve(&library) }?;
        Ok(Arc::new(Self { functions, path: path.display().to_string(), _library: ManuallyDrop::new(library) }))
    }

    /// The path the library was opened from (as given, or as the loader was asked).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// NCCL's description of a result code.
    fn describe(&self, code: RawResult) -> String {
        // SAFETY: ncclGetErrorString accepts any code and returns a static string (or null).
        let text = unsafe { (self.functions.get_error_string)(code) };
        if text.is_null() {
            return "unknown NCCL error".to_owned();
        }
        // SAFETY: a non-null result is a NUL-terminated static string.
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }

    /// Maps an NCCL result to our error type.
    fn check(&self, code: RawResult, context: &'static str) -> Result<()> {
        if code == NCCL_SUCCESS {
            return Ok(());
        }
        Err(Error::Nccl { context, code, message: self.describe(code) })
    }

    /// Creates the rendezvous token of a new communicator (`ncclGetUniqueId`). Call it on one
    /// rank and hand the result to all.
    ///
    /// # Errors
    /// [`Error::Nccl`] when NCCL fails (for example when no network interface is usable for
    /// its bootstrap).
    pub fn unique_id(&self) -> Result<UniqueId> {
        let mut id = UniqueId { internal: [0; UNIQUE_ID_BYTES] };
        // SAFETY: NCCL writes `NCCL_UNIQUE_ID_BYTES` bytes into the struct.
        let code = unsafe { (self.functions.get_unique_id)(&mut id) };
        self.check(code, "creating a unique id")?;
        Ok(id)
    }
}

/// One rank of an NCCL communicator, bound to the device of the [`Engine`] it was created
/// with.
///
/// The communicator keeps the device's primary context retained and makes it current before
/// every NCCL call, so it can be used from any thread (it is `Send`, not `Sync`: NCCL calls
/// on one communicator must not run concurrently). Dropping it destroys the communicator.
pub struct Communicator {
    raw: RawComm,
    ranks: u32,
    rank: u32,
    device: Device,
    context: Context,
    nccl: Arc<Nccl>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; `Communicator` is not `Sync`, so `&self` calls cannot run on two threads at once.
unsafe impl Send for Communicator {}

/// One all-to-all exchange of [`Communicator::all_to_all`]: `send` and `recv` each hold
/// `ranks` consecutive chunks of `chunk` elements; chunk `j` of `send` goes to rank `j`, chunk
/// `j` of `recv` comes from rank `j`.
pub struct AllToAll<'a, T> {
    /// What this rank sends, at least `ranks · chunk` elements.
    pub send: DeviceView<'a, T>,
    /// Where this rank receives, at least `ranks · chunk` elements; must not overlap `send`.
    pub recv: DeviceViewMut<'a, T>,
    /// Elements per peer (the same on every rank).
    pub chunk: usize,
}

impl Communicator {
    /// Joins communicator `id` as rank `rank` of `ranks` on `engine`'s device
    /// (`ncclCommInitRank`). Blocks until every rank has joined, so the ranks of one process
    /// must call it from different threads.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] if `rank >= ranks`, `ranks == 0` or `ranks` exceeds `i32`;
    /// [`Error::Nccl`] when NCCL fails; [`Error::Cuda`] when the context cannot be made current.
    pub fn init_rank(nccl: &Arc<Nccl>, engine: &Engine, id: &UniqueId, ranks: u32, rank: u32) -> Result<Self> {
        let (Ok(n), Ok(r)) = (c_int::try_from(ranks), c_int::try_from(rank)) else {
            return Err(Error::InvalidShape(format!("{ranks} ranks do not fit NCCL's int")));
        };
        if ranks == 0 || rank >= ranks {
            return Err(Error::InvalidShape(format!("rank {rank} of {ranks} ranks")));
        }
        engine.make_current()?;
        let device = engine.device();
        let context = Context::new(device).during("retaining the primary context")?;
        let mut raw: RawComm = core::ptr::null_mut();
        // SAFETY: `raw` receives the new communicator; `id` is passed by value as NCCL expects;
        // the device's primary context is current, which tells NCCL's runtime which GPU to use.
        let code = unsafe { (nccl.functions.comm_init_rank)(&mut raw, n, *id, r) };
        nccl.check(code, "initialising a communicator rank")?;
        Ok(Self { raw, ranks, rank, device, context, nccl: Arc::clone(nccl) })
    }

    /// Number of ranks.
    pub fn ranks(&self) -> u32 {
        self.ranks
    }

    /// This rank.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The device this rank runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The library this communicator was created with.
    pub fn nccl(&self) -> &Arc<Nccl> {
        &self.nccl
    }

    /// All-to-all of each exchange (see [`AllToAll`]), all in one NCCL group, enqueued on
    /// `stream`. Returns once enqueued.
    ///
    /// A collective: every rank must call it with the same number of exchanges and the same
    /// chunk sizes, in the same order, or the transfers hang. As with any asynchronous call,
    /// the buffers must stay alive until `stream` has run the transfers.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] / [`Error::InvalidShape`] before anything is enqueued;
    /// [`Error::Nccl`] when NCCL rejects a transfer (the group is still closed).
    pub fn all_to_all<T: Plain>(&self, exchanges: &[AllToAll<'_, T>], stream: &Stream) -> Result<()> {
        let ranks = self.ranks as usize;
        let mut chunk_bytes = Vec::with_capacity(exchanges.len());
        for exchange in exchanges {
            let total = exchange
                .chunk
                .checked_mul(ranks)
                .ok_or_else(|| Error::InvalidShape(format!("all-to-all chunk {} overflows", exchange.chunk)))?;
            check_len("send", exchange.send.len(), total as u64)?;
            check_len("recv", exchange.recv.len(), total as u64)?;
            // Cannot overflow: `total` elements of `T` are allocated.
            chunk_bytes.push(exchange.chunk * size_of::<T>());
        }
        if chunk_bytes.iter().all(|&bytes| bytes == 0) {
            return Ok(());
        }
        CurrentContext::set_current(&self.context).during("making the primary context current")?;
        let f = &self.nccl.functions;
        // SAFETY: opens a group on this thread; closed below on every path.
        self.nccl.check(unsafe { (f.group_start)() }, "opening an NCCL group")?;
        let mut first_error = Ok(());
        'transfers: for (exchange, &bytes) in exchanges.iter().zip(&chunk_bytes) {
            if bytes == 0 {
                continue;
            }
            for peer in 0..ranks {
                let offset = (peer * bytes) as u64;
                let (send, recv) = (exchange.send.address() + offset, exchange.recv.address() + offset);
                // `peer < ranks`, which fits in c_int (checked in `init_rank`).
                let peer = peer as c_int;
                // SAFETY: `send`/`recv` are chunk `peer` of buffers checked above to hold
                // `ranks` chunks of `bytes` bytes; the views keep them alive for this call and
                // the caller until the stream has run the transfers.
                let code =
                    unsafe { (f.send)(send as *const c_void, bytes, NCCL_UINT8, peer, self.raw, stream.as_inner()) };
                first_error = self.nccl.check(code, "enqueueing an NCCL send");
                if first_error.is_err() {
                    break 'transfers;
                }
                // SAFETY: as above.
                let code =
                    unsafe { (f.recv)(recv as *mut c_void, bytes, NCCL_UINT8, peer, self.raw, stream.as_inner()) };
                first_error = self.nccl.check(code, "enqueueing an NCCL receive");
                if first_error.is_err() {
                    break 'transfers;
                }
            }
        }
        // SAFETY: closes the group opened above.
        let closed = self.nccl.check(unsafe { (f.group_end)() }, "closing an NCCL group");
        first_error.and(closed)
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Best effort: a destructor cannot report errors. NCCL needs the device current.
        let _ = CurrentContext::set_current(&self.context);
        // SAFETY: `raw` is a live communicator created by `init_rank` and destroyed only here.
        let _ = unsafe { (self.nccl.functions.comm_destroy)(self.raw) };
    }
}
