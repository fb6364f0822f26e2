//! The Hopper (`sm_90a`) GEMM math: the CTA's four warps are one warpgroup that multiplies the
//! whole tile with asynchronous `wgmma.mma_async.m64n128k16`, straight from the swizzled
//! pipeline stages (no `ldmatrix`, no fragment registers).
//!
//! The accumulators keep the portable shape `[MT][NT][4]` so that the epilogue is shared:
//! m64 slab `h` is accumulator tiles `2h` (columns 0–63) and `2h + 1` (64–127), see
//! [`fragment_origin`]. A k-tile's products are issued as one `wgmma` group as soon as its stage
//! has landed, before the barrier that frees the previous stage ([`MULTIPLY_BEFORE_BARRIER`]);
//! [`settle`] then waits only for the previous k-tile's group. So the tensor cores always have
//! the next group queued while the warps wait, pass the barrier and issue copies: a CTA alone
//! on its multiprocessor keeps them busy too (with a wait for every group before the barrier,
//! a lone CTA ran at ~78% of the rate of two, docs/perf-journal.md run 75).

use super::{Accumulators, NT, WARP_N};
use crate::abi::GEMM_TILE_K;
use crate::device::tile::Tile;
use crate::device::wgmma::{
    WarpgroupAccumulators, advance, commit, descriptor, fence, pin, wait_all, wait_all_but_newest,
};

/// The element types this math multiplies.
pub(super) use crate::device::wgmma::WgmmaElement as GemmElement;

/// Rows of one `wgmma` A slab.
const SLAB_ROWS: u32 = 64;

const _: () = assert!(NT == 8 && WARP_N == 64, "an m64n128 product is two n64 halves of 8 n8 tiles");

/// Tile row and column of the top-left element of accumulator tile `mt` (its n8 tiles follow
/// at 8-column steps) of warp `warp`.
#[inline(always)]
pub(super) const fn fragment_origin<const MT: usize>(warp: u32, mt: usize) -> (u32, u32) {
    (SLAB_ROWS * (mt as u32 / 2) + 16 * warp, WARP_N * (mt as u32 % 2))
}

/// The accumulators as `m64n128` slabs.
#[inline(always)]
fn slabs<const MT: usize>(acc: &mut Accumulators<MT>) -> &mut [WarpgroupAccumulators] {
    const { assert!(MT.is_multiple_of(2), "whole m64 slabs") };
    acc.as_chunks_mut::<2>().0
}

/// The starting accumulators `acc`, pinned: their values are materialised once, before the
/// pipeline, instead of on every path that reaches a `wgmma` wait (ptxas serializes the
/// `wgmma`s of a function in which non-`wgmma` instructions define accumulators on such a path).
#[inline(always)]
pub(super) fn pinned<const MT: usize>(mut acc: Accumulators<MT>) -> Accumulators<MT> {
    for slab in slabs(&mut acc) {
        pin(slab);
    }
    acc
}

/// The main loop issues a k-tile's products before the barrier that frees the previous stage,
/// and [`settle`] waits for the previous k-tile's group only.
pub(super) const MULTIPLY_BEFORE_BARRIER: bool = true;

/// Called by every thread after it issued the products of the k-tile that just landed and
/// before the barrier that follows: waits for the previous k-tile's products (so that after
/// the barrier its stage may be overwritten), leaving the new group running. The
/// tensor-memory copies that fill the stages write through the async proxy that `wgmma` reads
/// through, so no proxy fence is needed.
#[inline(always)]
pub(super) fn settle<const MT: usize>(_acc: &mut Accumulators<MT>) {
    wait_all_but_newest();
}

/// Issues `acc += A_tile · W_tileᵀ` for the whole CTA tile as one `wgmma` group; it has
/// completed once the [`settle`] after the next `multiply`, or [`drain`], returns.
///
/// # Safety
/// Both tiles must be complete and visible to the async proxy (this thread waited on their
/// stage's barrier) and stay unchanged until the [`settle`] after the next `multiply` (or
/// [`drain`]); all 128 threads call it.
#[inline(always)]
pub(super) unsafe fn multiply<E: GemmElement, const MT: usize>(acc: &mut Accumulators<MT>, a: &Tile, w: &Tile) {
    let a_base = descriptor(a.chunk_address(0, 0));
    let w_base = descriptor(w.chunk_address(0, 0));
    let slab_bytes = SLAB_ROWS * a.row_bytes();
    fence();
    for kk in 0..GEMM_TILE_K / 16 {
        for (h, slab) in slabs(acc).iter_mut().enumerate() {
            let a_desc = advance(a_base, h as u32 * slab_bytes + 32 * kk);
            // SAFETY: the slabs lie in the published tiles (caller); all threads issue it.
            unsafe { E::wgmma_m64n128k16(slab, a_desc, advance(w_base, 32 * kk)) };
        }
    }
    commit();
}

/// Called by every thread after the last k-tile: waits for its products.
#[inline(always)]
pub(super) fn drain<const MT: usize>(acc: &mut Accumulators<MT>) {
    wait_all();
    for slab in slabs(acc) {
        pin(slab);
    }
}
