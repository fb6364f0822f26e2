//! The portable (`sm_80`+) GEMM math: each warp multiplies its `16·MT × WARP_N` block of the
//! CTA tile with `ldmatrix.x4` + `mma.sync.m16n8k16`, synchronously.
//!
//! Warps form a `GEMM_WARPS_M × GEMM_WARPS_N` grid over the CTA tile; accumulator tile
//! `(mt, nt)` of a warp covers rows `row0 + 16·mt …`, columns `col0 + 8·nt …`
//! ([`fragment_origin`]).

use super::{Accumulators, WARP_N, warp_m};
use crate::abi::{GEMM_TILE_K, GEMM_WARPS_N};
use crate::device::ptx::{ldmatrix_x4, thread_index};
use crate::device::tile::Tile;

/// The element types this math multiplies.
pub(super) use crate::device::element::MmaElement as GemmElement;

/// Tile row and column of the top-left element of accumulator tile `mt` (its n8 tiles follow
/// at 8-column steps) of warp `warp` in a CTA with `MT` m16 tiles per warp.
#[inline(always)]
pub(super) const fn fragment_origin<const MT: usize>(warp: u32, mt: usize) -> (u32, u32) {
    ((warp / GEMM_WARPS_N) * warp_m(MT) + 16 * mt as u32, (warp % GEMM_WARPS_N) * WARP_N)
}

/// The starting accumulators `acc` (the synchronous math needs nothing done to them).
#[inline(always)]
pub(super) const fn pinned<const MT: usize>(acc: Accumulators<MT>) -> Accumulators<MT> {
    acc
}

/// Each thread copied only part of a stage (`cp.async`), so a k-tile is multiplied after the
/// barrier that publishes it.
pub(super) const MULTIPLY_BEFORE_BARRIER: bool = false;

/// Called by every thread before the barrier that publishes a landed k-tile; the synchronous
/// math has nothing in flight.
#[inline(always)]
pub(super) fn settle<const MT: usize>(_acc: &mut Accumulators<MT>) {}

/// `acc += A_tile · W_tileᵀ` for this warp's block, finished on return.
///
/// Every fragment address is derived from one base per operand (`Tile::at_chunk` and whole
/// 16-row steps), so the compiler keeps two address registers instead of one per fragment.
///
/// # Safety
/// Both tiles must be complete and visible to every thread (after the barrier).
#[inline(always)]
pub(super) unsafe fn multiply<E: GemmElement, const MT: usize>(acc: &mut Accumulators<MT>, a: &Tile, w: &Tile) {
    let tid = thread_index();
    let lane = tid % 32;
    let (a_row0, w_row0) = fragment_origin::<MT>(tid / 32, 0);
    let a_base = a.a_fragment_base(a_row0, lane);
    let w_base = w.b_fragment_base(w_row0, lane);
    let (a_step, w_step) = (16 * a.row_bytes(), 16 * w.row_bytes());
    for kk in 0..GEMM_TILE_K / 16 {
        let mut a_frag = [[0u32; 4]; MT];
        for (mt, frag) in a_frag.iter_mut().enumerate() {
            // SAFETY: the address lies in the A tile, complete and visible (caller).
            *frag = unsafe { ldmatrix_x4(Tile::at_chunk(a_base, 2 * kk) + mt as u32 * a_step) };
        }
        let mut w_frag = [[0u32; 4]; super::NT / 2];
        for (pair, frag) in w_frag.iter_mut().enumerate() {
            // SAFETY: the address lies in the W tile, complete and visible (caller).
            *frag = unsafe { ldmatrix_x4(Tile::at_chunk(w_base, 2 * kk) + pair as u32 * w_step) };
        }
        for (mt, row) in acc.iter_mut().enumerate() {
            for (nt, tile) in row.iter_mut().enumerate() {
                let b = &w_frag[nt / 2];
                E::mma(tile, &a_frag[mt], b[2 * (nt % 2)], b[2 * (nt % 2) + 1]);
            }
        }
    }
}

/// Called by every thread after the last k-tile; nothing is in flight.
#[inline(always)]
pub(super) fn drain<const MT: usize>(_acc: &mut Accumulators<MT>) {}
