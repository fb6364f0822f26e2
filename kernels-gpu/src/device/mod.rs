//! Device-side code: PTX primitives, shared tile helpers and the kernel entries.

mod attention;
mod element;
mod gemm;
mod params;
mod ptx;
mod tile;
#[cfg(target_feature = "sm_90a")]
mod tma;
#[cfg(target_feature = "sm_90a")]
mod wgmma;

use core::arch::global_asm;

// All dynamic shared memory of a CTA, aligned for 128-byte swizzled tiles.
global_asm!(".extern .shared .align 1024 .b8 dyn_smem[];");

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` aborts the kernel; there is nothing to unwind to on the GPU.
    unsafe { core::arch::nvptx::trap() }
}
