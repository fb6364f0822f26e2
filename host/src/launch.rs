//! Raw kernel launches through the driver API.
//!
//! cust 0.3.2's `launch!` wants `DeviceCopy` arguments and a cust `Stream`; our kernels take one
//! `#[repr(C)]` struct by value and may run on a stream another library created, so we call
//! `cuLaunchKernel` directly.

use core::ffi::c_void;

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
