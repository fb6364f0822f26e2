//! Thin wrappers over the PTX instructions the kernels use, one function per instruction.
//!
//! Register-only instructions are `pure, nomem`; memory instructions are left volatile so the
//! compiler neither reorders nor drops them across barriers.

use core::arch::asm;

/// Index of this thread within its CTA (x dimension).
#[inline(always)]
pub fn thread_index() -> u32 {
    // SAFETY: reading a special register has no side effects.
    unsafe { core::arch::nvptx::_thread_idx_x() as u32 }
}

/// CTA index along x.
#[inline(always)]
pub fn block_index_x() -> u32 {
    // SAFETY: reading a special register has no side effects.
    unsafe { core::arch::nvptx::_block_idx_x() as u32 }
}

/// CTA index along y.
#[inline(always)]
pub fn block_index_y() -> u32 {
    // SAFETY: reading a special register has no side effects.
    unsafe { core::arch::nvptx::_block_idx_y() as u32 }
}

/// 32-bit shared-memory address of the start of dynamic shared memory.
#[inline(always)]
pub fn shared_base() -> u32 {
    let address: u32;
    // SAFETY: `dyn_smem` is declared in `device/mod.rs`; taking its address reads nothing.
    unsafe { asm!("mov.u32 {0}, dyn_smem;", out(reg32) address, options(pure, nomem, nostack)) };
    address
}

/// CTA-wide barrier (`bar.sync 0`). Every thread of the CTA must reach it.
///
/// It is LLVM's `llvm.nvvm.barrier0`, not an `asm!` block: the intrinsic is *convergent*, so
/// LLVM may not duplicate it into divergent paths. As `asm!` it was, in an experiment build
/// (docs/perf-journal.md, runs 153–155): "thread 0 initialises the barriers; barrier; thread 0 issues
/// a copy" was threaded into one `bar.sync` for thread 0 and another for the rest of its warp,
/// which `bar.sync` (aligned) does not allow, and the kernel hung. The link step now also marks
/// every warp-collective `asm!` call convergent (`tools/nvptx-link.sh`), which covers
/// [`sync_named`], the shuffles, the votes and the tensor-core instructions.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: a barrier only orders memory; callers keep control flow CTA-uniform.
    unsafe { core::arch::nvptx::_syncthreads() };
}

/// Barrier `id` (0–15) for `threads` threads (a multiple of 32; `bar.sync id, threads`): the
/// first `threads` threads to arrive, counted by warp, release each other. Every warp of the
/// group that synchronizes on `id` must reach it, and no other warp may use `id` meanwhile.
#[inline(always)]
pub fn sync_named(id: u32, threads: u32) {
    // SAFETY: a barrier only orders memory; callers keep each group's control flow uniform.
    unsafe { asm!("bar.sync {0}, {1};", in(reg32) id, in(reg32) threads, options(nostack)) };
}

/// Number of CTAs of the grid along x.
#[cfg(target_feature = "sm_90a")]
#[inline(always)]
pub fn grid_dim_x() -> u32 {
    // SAFETY: reading a special register has no side effects.
    unsafe { core::arch::nvptx::_grid_dim_x() as u32 }
}

/// Lowers this warpgroup's per-thread register allocation to `REGISTERS` (`setmaxnreg.dec`), so
/// that other warpgroups of the CTA may raise theirs. Every warp of the warpgroup executes it.
#[cfg(target_feature = "sm_90a")]
#[inline(always)]
pub fn release_registers<const REGISTERS: u32>() {
    // SAFETY: only changes the register budget; all warps of the warpgroup execute it.
    unsafe { asm!("setmaxnreg.dec.sync.aligned.u32 {0};", const REGISTERS, options(nostack)) };
}

/// Raises this warpgroup's per-thread register allocation to `REGISTERS` (`setmaxnreg.inc`),
/// waiting until other warpgroups released enough. Every warp of the warpgroup executes it.
#[cfg(target_feature = "sm_90a")]
#[inline(always)]
pub fn claim_registers<const REGISTERS: u32>() {
    // SAFETY: only changes the register budget; all warps of the warpgroup execute it.
    unsafe { asm!("setmaxnreg.inc.sync.aligned.u32 {0};", const REGISTERS, options(nostack)) };
}

/// Warp-wide barrier that also orders shared memory among the warp's lanes.
#[inline(always)]
pub fn sync_warp() {
    // SAFETY: all 32 lanes of every warp execute the kernels' warp-level code together.
    unsafe { asm!("bar.warp.sync 0xffffffff;", options(nostack)) };
}

/// Asynchronous 16-byte copy global → shared; `src_bytes` below 16 zero-fills the rest
/// (0 reads nothing and writes 16 zero bytes).
///
/// # Safety
/// `shared` must be a 16-byte aligned shared address inside the CTA's allocation; when
/// `src_bytes > 0`, `global` must point to `src_bytes` readable, 16-byte aligned device bytes.
#[inline(always)]
pub unsafe fn cp_async_16(shared: u32, global: *const u8, src_bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.cg.shared.global [{0}], [{1}], 16, {2};",
            in(reg32) shared, in(reg64) global, in(reg32) src_bytes, options(nostack)
        )
    };
}

/// `createpolicy.fractional` with primary priority `$priority` for every line: the policy value
/// in a register.
macro_rules! fractional_policy {
    ($priority:literal) => {{
        let policy: u64;
        // SAFETY: only computes a policy value into a register.
        unsafe {
            asm!(
                concat!("createpolicy.fractional.L2::", $priority, ".b64 {0}, 1.0;"),
                out(reg64) policy, options(pure, nomem, nostack)
            )
        };
        policy
    }};
}

/// An L2 cache policy (`createpolicy`) under which the lines an access brings into L2 are the
/// first to be evicted: for data read or written once, so that it does not push out lines
/// that other CTAs will read again.
#[inline(always)]
pub fn evict_first_policy() -> u64 {
    fractional_policy!("evict_first")
}

/// An L2 cache policy under which the lines an access brings into L2 are the last to be
/// evicted (`evict_last`): for data that many CTAs of the launch re-read from L2 over its whole
/// run, so that streams of once-read lines do not push it out. The lines keep that priority
/// after the launch, until another access re-marks them or L2 has nothing of lower priority
/// left to evict.
#[cfg(target_feature = "sm_90a")]
#[inline(always)]
pub fn evict_last_policy() -> u64 {
    fractional_policy!("evict_last")
}

/// [`cp_async_16`] under the L2 cache policy `policy` (from [`evict_first_policy`]).
///
/// # Safety
/// As for [`cp_async_16`].
#[inline(always)]
pub unsafe fn cp_async_16_with_policy(shared: u32, global: *const u8, src_bytes: u32, policy: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.cg.shared.global.L2::cache_hint [{0}], [{1}], 16, {2}, {3};",
            in(reg32) shared, in(reg64) global, in(reg32) src_bytes, in(reg64) policy, options(nostack)
        )
    };
}

/// Closes the current group of asynchronous copies.
#[inline(always)]
pub fn cp_async_commit() {
    // SAFETY: committing a (possibly empty) group has no other effect.
    unsafe { asm!("cp.async.commit_group;", options(nostack)) };
}

/// Waits until at most `N` committed groups of this thread are still in flight.
#[inline(always)]
pub fn cp_async_wait<const N: u32>() {
    // SAFETY: waiting has no other effect.
    unsafe { asm!("cp.async.wait_group {0};", const N, options(nostack)) };
}

/// Runs the read-only shared-memory load `$op` with operands `{a, b, c, d}, [$address]` and
/// returns the four 32-bit registers. Expands to an `asm!` call, so it must be used inside an
/// `unsafe` block whose contract makes the load valid.
macro_rules! shared_load_x4 {
    ($op:literal, $address:expr) => {{
        let (a, b, c, d): (u32, u32, u32, u32);
        asm!(
            concat!($op, " {{{0}, {1}, {2}, {3}}}, [{4}];"),
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) $address,
            options(nostack, readonly)
        );
        [a, b, c, d]
    }};
}

/// `ldmatrix.x4`: four 8×8 16-bit matrices, row addresses supplied by lanes 0–31.
///
/// # Safety
/// `address` must be a 16-byte aligned shared address of 16 readable bytes.
#[inline(always)]
pub unsafe fn ldmatrix_x4(address: u32) -> [u32; 4] {
    // SAFETY: guaranteed by the caller; the instruction only reads shared memory.
    unsafe { shared_load_x4!("ldmatrix.sync.aligned.m8n8.x4.shared.b16", address) }
}

/// `ldmatrix.x4.trans`: like [`ldmatrix_x4`], each 8×8 matrix transposed.
///
/// # Safety
/// As for [`ldmatrix_x4`].
#[inline(always)]
pub unsafe fn ldmatrix_x4_trans(address: u32) -> [u32; 4] {
    // SAFETY: guaranteed by the caller; the instruction only reads shared memory.
    unsafe { shared_load_x4!("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", address) }
}

/// Stores one 32-bit word to shared memory.
///
/// # Safety
/// `address` must be a 4-byte aligned shared address inside the CTA's allocation.
#[inline(always)]
pub unsafe fn st_shared_b32(address: u32, value: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.shared.b32 [{0}], {1};", in(reg32) address, in(reg32) value, options(nostack)) };
}

/// Loads 16 bytes from shared memory.
///
/// # Safety
/// `address` must be a 16-byte aligned shared address inside the CTA's allocation.
#[inline(always)]
pub unsafe fn ld_shared_v4(address: u32) -> [u32; 4] {
    // SAFETY: guaranteed by the caller.
    unsafe { shared_load_x4!("ld.shared.v4.b32", address) }
}

/// Stores 16 bytes to global memory.
///
/// # Safety
/// `global` must point to 16 writable, 16-byte aligned device bytes.
#[inline(always)]
pub unsafe fn st_global_v4(global: *mut u8, value: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "st.global.v4.b32 [{0}], {{{1}, {2}, {3}, {4}}};",
            in(reg64) global, in(reg32) value[0], in(reg32) value[1], in(reg32) value[2],
            in(reg32) value[3], options(nostack)
        )
    };
}

/// Stores 16 bytes to global memory with the streaming hint (`st.global.cs`: the lines are
/// the first to be evicted from the caches), for outputs no CTA of the launch reads back.
///
/// # Safety
/// `global` must point to 16 writable, 16-byte aligned device bytes.
#[inline(always)]
pub unsafe fn st_global_v4_streaming(global: *mut u8, value: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "st.global.cs.v4.b32 [{0}], {{{1}, {2}, {3}, {4}}};",
            in(reg64) global, in(reg32) value[0], in(reg32) value[1], in(reg32) value[2],
            in(reg32) value[3], options(nostack)
        )
    };
}

/// `2^x`, approximate (2 ulp), flushing subnormals; `2^-inf = 0`.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only arithmetic.
    unsafe { asm!("ex2.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// `log2(x)`, approximate; callers pass positive finite values.
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    let r: f32;
    // SAFETY: register-only arithmetic.
    unsafe { asm!("lg2.approx.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// Exchanges `value` with the lane whose index differs by the bits of `mask`.
#[inline(always)]
pub fn shfl_xor(value: f32, mask: u32) -> f32 {
    let r: f32;
    // SAFETY: all 32 lanes execute the shuffle together (full member mask).
    unsafe {
        asm!(
            "shfl.sync.bfly.b32 {0}, {1}, {2}, 0x1f, 0xffffffff;",
            out(reg32) r, in(reg32) value, in(reg32) mask, options(nostack, nomem)
        )
    };
    r
}

/// The `value` of lane `lane` (`shfl.sync.idx`).
#[cfg(target_feature = "sm_90a")]
#[inline(always)]
pub fn shfl_idx_u32(value: u32, lane: u32) -> u32 {
    let r: u32;
    // SAFETY: all 32 lanes execute the shuffle together (full member mask).
    unsafe {
        asm!(
            "shfl.sync.idx.b32 {0}, {1}, {2}, 0x1f, 0xffffffff;",
            out(reg32) r, in(reg32) value, in(reg32) lane, options(nostack, nomem)
        )
    };
    r
}

/// Loads one 32-bit word from shared memory.
///
/// # Safety
/// `address` must be a 4-byte aligned shared address inside the CTA's allocation.
#[inline(always)]
pub unsafe fn ld_shared_b32(address: u32) -> u32 {
    let r: u32;
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("ld.shared.b32 {0}, [{1}];", out(reg32) r, in(reg32) address, options(nostack, readonly)) };
    r
}

/// Bit `i` set for every lane `i` of the warp whose `predicate` holds (`vote.sync.ballot`).
#[inline(always)]
pub fn ballot(predicate: bool) -> u32 {
    let r: u32;
    // SAFETY: all 32 lanes execute the vote together (full member mask); register-only.
    unsafe {
        asm!(
            "{{ .reg .pred p; setp.ne.u32 p, {1}, 0; vote.sync.ballot.b32 {0}, p, 0xffffffff; }}",
            out(reg32) r, in(reg32) predicate as u32, options(nostack, nomem)
        )
    };
    r
}

/// Memory fence at GPU scope with acquire-release semantics (`fence.acq_rel.gpu`): this
/// thread's earlier writes are ordered before its later ones as seen from any CTA.
#[inline(always)]
pub fn fence_gpu() {
    // SAFETY: a fence only orders memory.
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) };
}

/// Atomically adds `value` to the `u32` at `global` with acquire-release semantics at GPU
/// scope; returns the previous value.
///
/// # Safety
/// `global` must point to a writable, 4-byte aligned device `u32`.
#[inline(always)]
pub unsafe fn atomic_add_gpu(global: *mut u32, value: u32) -> u32 {
    let old: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "atom.acq_rel.gpu.global.add.u32 {0}, [{1}], {2};",
            out(reg32) old, in(reg64) global, in(reg32) value, options(nostack)
        )
    };
    old
}

/// Stores one `u32` to global memory.
///
/// # Safety
/// `global` must point to a writable, 4-byte aligned device `u32`.
#[inline(always)]
pub unsafe fn st_global_u32(global: *mut u32, value: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.global.u32 [{0}], {1};", in(reg64) global, in(reg32) value, options(nostack)) };
}

/// Loads one `u32` from global memory when `load` holds, and returns 0 otherwise, without a
/// branch: the load is predicated in PTX, so the caller's control flow stays one path (which
/// keeps the compiler from duplicating a `wgmma` pipeline around the choice).
///
/// # Safety
/// When `load` holds, `global` must point to a readable, 4-byte aligned device `u32`; otherwise
/// it is not dereferenced.
#[inline(always)]
pub unsafe fn ld_global_u32_if(load: bool, global: *const u32) -> u32 {
    let value: u32;
    // SAFETY: guaranteed by the caller; a false predicate issues no access.
    unsafe {
        asm!(
            "{{ .reg .pred p; setp.ne.u32 p, {load}, 0; mov.b32 {value}, 0; @p ld.global.u32 {value}, [{global}]; }}",
            load = in(reg32) u32::from(load), global = in(reg64) global, value = out(reg32) value,
            options(nostack, readonly, preserves_flags)
        )
    };
    value
}
