//! Raw kernel launches through the driver API.
//!
//! cust 0.3.2's `launch!` wants `DeviceCopy` arguments and a cust `Stream`; our kernels take one
//! `#[repr(C)]` struct by value and may run on a stream another library created, so we call
//! `cuLaunchKernel` directly. Launches in thread-block clusters go through `cuLaunchKernelEx`
//! (CUDA 12), which cust 0.3.2's bindings predate, so its types are declared here and the
//! function is looked up in the driver when first needed.

use core::ffi::c_void;
use std::sync::OnceLock;

use cust::sys::{CUfunction, CUresult, CUstream};

use crate::error::{Error, Result};

/// Maps a raw driver status to our error type, with the driver's own name for the code.
pub(crate) fn check(status: CUresult, context: &'static str) -> Result<()> {
    if status == CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut name: *const core::ffi::c_char = core::ptr::null();
    // SAFETY: the driver writes a pointer to a static string, or leaves it null.
    let known = unsafe { cust::sys::cuGetErrorName(status, &mut name) } == CUresult::CUDA_SUCCESS;
    let name = if known && !name.is_null() {
        // SAFETY: a non-null result points to a NUL-terminated static string.
        unsafe { core::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()
    } else {
        "unknown error".to_owned()
    };
    Err(Error::Driver { context, code: status as u32, name })
}

/// Grid and block shape of one launch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LaunchShape {
    /// CTAs along x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per CTA (x only).
    pub threads: u32,
    /// Dynamic shared memory per CTA in bytes.
    pub shared_bytes: u32,
    /// CTAs per thread-block cluster along x (1: no clusters; more needs compute capability
    /// 9.0 and a grid of whole clusters).
    pub cluster: u32,
}

/// `CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION` of `cuda.h`.
const LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;

/// `CUlaunchAttribute` of `cuda.h` (CUDA 12): an attribute id, padding to 8 bytes, and a
/// 64-byte value union (8-byte aligned: some members hold pointers), of which the cluster
/// dimension uses the first three `u32`s.
#[repr(C, align(8))]
struct LaunchAttribute {
    id: u32,
    padding: u32,
    value: [u32; 16],
}

/// `CUlaunchConfig` of `cuda.h` (CUDA 12).
#[repr(C)]
struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    stream: CUstream,
    attributes: *mut LaunchAttribute,
    attribute_count: u32,
}

/// The signature of `cuLaunchKernelEx` (CUDA 12.0 and newer).
type LaunchKernelEx =
    unsafe extern "C" fn(*const LaunchConfig, CUfunction, *mut *mut c_void, *mut *mut c_void) -> CUresult;

/// `cuLaunchKernelEx`, looked up in the driver on first use rather than linked, so that the
/// library still loads with drivers older than CUDA 12.0, which never launch in clusters.
fn launch_kernel_ex() -> Result<LaunchKernelEx> {
    static RESOLVED: OnceLock<Option<LaunchKernelEx>> = OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| {
        let mut address = core::ptr::null_mut();
        // SAFETY: the name is NUL-terminated and the driver writes a function address (or
        // nothing) into `address`; flags 0 is `CU_GET_PROC_ADDRESS_DEFAULT`.
        let status = unsafe { cust::sys::cuGetProcAddress(c"cuLaunchKernelEx".as_ptr(), &mut address, 12000, 0) };
        (status == CUresult::CUDA_SUCCESS && !address.is_null()).then(|| {
            // SAFETY: the driver's `cuLaunchKernelEx` of the CUDA 12.0 ABI has this signature.
            unsafe { core::mem::transmute::<*mut c_void, LaunchKernelEx>(address) }
        })
    });
    resolved.ok_or_else(|| {
        Error::Unsupported("thread-block clusters with this driver (no cuLaunchKernelEx: CUDA 12.0 or newer)".into())
    })
}

/// Launches `function` with `params` as its only by-value parameter.
///
/// # Safety
/// `function` must be a live kernel of the current context whose single parameter has the
/// layout of `P`, and `params` must describe memory that stays valid until the launch
/// completes on `stream`.
pub(crate) unsafe fn launch<P>(function: CUfunction, shape: LaunchShape, stream: CUstream, params: &P) -> Result<()> {
    if shape.grid.0 == 0 || shape.grid.1 == 0 || shape.grid.2 == 0 {
        return Ok(());
    }
    let mut argument = (params as *const P).cast_mut().cast::<c_void>();
    if shape.cluster > 1 {
        let mut attribute = LaunchAttribute { id: LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, padding: 0, value: [0; 16] };
        attribute.value[..3].copy_from_slice(&[shape.cluster, 1, 1]);
        let config = LaunchConfig {
            grid: [shape.grid.0, shape.grid.1, shape.grid.2],
            block: [shape.threads, 1, 1],
            shared_bytes: shape.shared_bytes,
            stream,
            attributes: &mut attribute,
            attribute_count: 1,
        };
        let launch_kernel_ex = launch_kernel_ex()?;
        // SAFETY: as below; `config` and its one attribute live until the call returns, and
        // the driver validates the cluster shape against the grid and the device.
        let status = unsafe { launch_kernel_ex(&config, function, &mut argument, core::ptr::null_mut()) };
        return check(status, "launching a kernel in thread-block clusters");
    }
    // SAFETY: the caller guarantees the kernel's signature; the driver copies the parameter
    // bytes before returning, so pointing at a stack value is fine.
    let status = unsafe {
        cust::sys::cuLaunchKernel(
            function,
            shape.grid.0,
            shape.grid.1,
            shape.grid.2,
            shape.threads,
            1,
            1,
            shape.shared_bytes,
            stream,
            &mut argument,
            core::ptr::null_mut(),
        )
    };
    check(status, "launching a kernel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_structs_have_the_layout_of_cuda_h() {
        assert_eq!((size_of::<LaunchAttribute>(), align_of::<LaunchAttribute>()), (72, 8));
        assert_eq!((size_of::<LaunchConfig>(), align_of::<LaunchConfig>()), (56, 8));
        assert_eq!(core::mem::offset_of!(LaunchConfig, stream), 32);
        assert_eq!(core::mem::offset_of!(LaunchConfig, attributes), 40);
        assert_eq!(core::mem::offset_of!(LaunchConfig, attribute_count), 48);
    }
}
