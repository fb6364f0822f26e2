//! Hopper (`sm_90a`) tensor-memory copies and the shared-memory barriers they complete on:
//! `cp.async.bulk.tensor` moves a whole box of a matrix, described by a [`TensorMap`], into
//! shared memory, and credits its bytes to an `mbarrier` that the consumers wait on.
//!
//! A tensor map must sit in kernel parameter, constant or global memory and be named by its
//! generic address; [`entry_param_address!`] gives the generic address of an entry's
//! parameter struct, so maps carried inside it ([`crate::abi::GemmParams`]) cost no upload.
//!
//! Only compiled for `sm_90a` (the instructions do not exist on `sm_80`).
//!
//! [`TensorMap`]: crate::abi::TensorMap

use core::arch::asm;

/// The generic address of entry `$entry`'s (only) parameter, `<entry>_param_0`: `mov` gives
/// its `.param`-space address and `cvta.param` (PTX 7.7) the generic one, as CUDA does for a
/// `__grid_constant__` parameter. Use it only inside the entry `$entry` itself.
macro_rules! entry_param_address {
    ($entry:ident) => {{
        let address: u64;
        // SAFETY: names the parameter of the entry the macro is used in (the macro's
        // contract) and only computes its address.
        unsafe {
            core::arch::asm!(
                concat!("mov.b64 {0}, ", stringify!($entry), "_param_0;\n\tcvta.param.u64 {0}, {0};"),
                out(reg64) address,
                options(pure, nomem, nostack)
            )
        };
        address
    }};
}
pub(crate) use entry_param_address;

/// Initialises the `mbarrier` at shared address `barrier` (8-byte aligned) to expect
/// `arrivals` arrivals per phase.
///
/// # Safety
/// `barrier` must be 8 bytes of the CTA's shared memory that nothing else uses while the
/// barrier is live; the initialisation must be made visible ([`fence_barrier_init`] and a CTA
/// barrier) before any other thread or copy uses it.
#[inline(always)]
pub unsafe fn barrier_init(barrier: u32, arrivals: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("mbarrier.init.shared::cta.b64 [{0}], {1};", in(reg32) barrier, in(reg32) arrivals, options(nostack))
    };
}

/// Makes this thread's `mbarrier` initialisations visible to the asynchronous proxy (the
/// tensor copies that will complete on them).
#[inline(always)]
pub fn fence_barrier_init() {
    // SAFETY: a fence only orders memory.
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) };
}

/// Arrives on `barrier` and adds `bytes` to the transaction count its current phase waits for
/// (the bytes of the tensor copies issued next that complete on it).
///
/// # Safety
/// `barrier` must be an initialised `mbarrier` in the CTA's shared memory.
#[inline(always)]
pub unsafe fn barrier_arrive_expect_bytes(barrier: u32, bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{0}], {1};",
            in(reg32) barrier, in(reg32) bytes, options(nostack)
        )
    };
}

/// Arrives on `barrier` once (release semantics at CTA scope: this thread's earlier reads and
/// writes of shared memory happen before the phase completes for its waiters).
///
/// # Safety
/// `barrier` must be an initialised `mbarrier` in the CTA's shared memory that expects this
/// arrival in its current phase.
#[inline(always)]
pub unsafe fn barrier_arrive(barrier: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mbarrier.arrive.shared::cta.b64 _, [{0}];", in(reg32) barrier, options(nostack)) };
}

/// Whether the phase of `barrier` with parity `parity` has completed (one bounded, hardware-
/// suspended wait; call again until it returns true).
///
/// # Safety
/// `barrier` must be an initialised `mbarrier` in the CTA's shared memory.
#[inline(always)]
pub unsafe fn barrier_try_wait(barrier: u32, parity: u32) -> bool {
    let done: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "{{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [{1}], {2};\n\tselp.u32 {0}, 1, 0, p;\n\t}}",
            out(reg32) done, in(reg32) barrier, in(reg32) parity, options(nostack)
        )
    };
    done != 0
}

/// Waits until the phase of `barrier` with parity `parity` has completed; the data of the
/// copies that completed on it is then visible to this thread and to `wgmma`.
///
/// # Safety
/// As for [`barrier_try_wait`].
#[inline(always)]
pub unsafe fn barrier_wait(barrier: u32, parity: u32) {
    // SAFETY: forwarded.
    while !unsafe { barrier_try_wait(barrier, parity) } {}
}

/// Copies the box at element coordinates (`x`, `y`) (`x` along the contiguous axis) of the 2-D
/// tensor that `map` describes into shared memory at `destination`, zero-filling what lies
/// outside the tensor, and credits the box's bytes to `barrier`. `policy` is an L2 cache
/// policy (`createpolicy`) for the lines it reads.
///
/// # Safety
/// `map` must be the generic address of a valid tensor map in parameter, constant or global
/// memory; `destination` must be the box's bytes of the CTA's shared memory, aligned as the
/// map's swizzle requires (1024 bytes for the 128-byte swizzle); `barrier` an initialised
/// `mbarrier` whose phase expects these bytes.
#[inline(always)]
pub unsafe fn load_box_2d(destination: u32, map: u64, x: u32, y: u32, barrier: u32, policy: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [{0}], [{1}, {{{2}, {3}}}], [{4}], {5};",
            in(reg32) destination, in(reg64) map, in(reg32) x, in(reg32) y, in(reg32) barrier, in(reg64) policy,
            options(nostack)
        )
    };
}

/// Stores the box at element coordinates (`x`, `y`) of the 2-D tensor that `map` describes
/// from shared memory at `source` (in the map's swizzle), dropping what lies outside the
/// tensor, as one bulk copy group of this thread. `policy` is an L2 cache policy for the
/// written lines. See [`wait_stores_read`].
///
/// # Safety
/// `map` as for [`load_box_2d`]; `source` must hold the box, written before a
/// `fence.proxy.async` and a barrier that this thread passed, and stay unchanged until
/// [`wait_stores_read`] returns.
#[inline(always)]
pub unsafe fn store_box_2d(map: u64, x: u32, y: u32, source: u32, policy: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint [{0}, {{{1}, {2}}}], [{3}], {4};",
            "cp.async.bulk.commit_group;",
            in(reg64) map, in(reg32) x, in(reg32) y, in(reg32) source, in(reg64) policy, options(nostack)
        )
    };
}

/// Waits until every bulk store group of this thread has finished reading shared memory.
#[inline(always)]
pub fn wait_stores_read() {
    // SAFETY: waiting has no other effect.
    unsafe { asm!("cp.async.bulk.wait_group.read 0;", options(nostack)) };
}

/// Starts fetching the tensor map at generic address `map` into the descriptor cache.
///
/// # Safety
/// `map` must be a generic address in parameter, constant or global memory.
#[inline(always)]
pub unsafe fn prefetch_map(map: u64) {
    // SAFETY: a prefetch has no architectural effect.
    unsafe { asm!("prefetch.tensormap [{0}];", in(reg64) map, options(nostack)) };
}
