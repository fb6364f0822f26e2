//! The bias vector as the accumulators' starting value.
//!
//! `out = bias + A·Wᵀ (+ C)`: instead of adding the bias after the main loop, a CTA starts its
//! f32 accumulators at the bias. The loads and conversions then run while the CTA waits for
//! its first k-tile, and nothing is left for the epilogue, which runs while the tensor cores
//! of the CTA's multiprocessor have nothing else to do. Adding the bias at the end cost
//! GEMM-Q 3–7% (docs/perf-journal.md, runs 107–113). The sums differ only in where the bias enters
//! the f32 accumulation.
//!
//! The bias pairs are read with predicated loads, not behind a branch: with a branch the
//! compiler duplicated the pipeline for the two cases, ptxas then serialized the `wgmma`s of
//! one copy (advisory C7515), and every GEMM got ~10% slower (run 114). `cargo xtask ptx`
//! fails on that advisory.

use super::crew::Crew;
use super::math::{fragment_origin, pinned};
use super::{Accumulators, NT};
use crate::abi::GemmParams;
use crate::device::element::MmaElement;
use crate::device::ptx::ld_global_u32_if;

/// This thread's starting accumulators for the tile whose first column is `n0`: each element
/// holds the bias of its column when `carries_bias` (the CTA computes the whole reduction, or
/// the part of it that carries the bias) and the launch has a bias, and zero otherwise or past
/// column `n`. `crew` is the crew that computes the tile (and runs its epilogue).
///
/// # Safety
/// `p` must describe a launch the host validated: a bias, when present, holds `n` elements at
/// a 4-byte aligned address.
#[inline(always)]
pub(super) unsafe fn starting_accumulators<E: MmaElement, const MT: usize>(
    p: &GemmParams,
    n0: u32,
    crew: Crew,
    carries_bias: bool,
) -> Accumulators<MT> {
    let (warp, lane) = (crew.warp(), crew.thread % 32);
    let mut acc = [[[0f32; 4]; NT]; MT];
    let has_bias = carries_bias && p.bias != 0;
    let bias = p.bias as *const u32;
    for (mt, row_tiles) in acc.iter_mut().enumerate() {
        let col0 = n0 + fragment_origin::<MT>(warp, mt).1 + 2 * (lane % 4);
        for (nt, fragment) in row_tiles.iter_mut().enumerate() {
            let col = col0 + 8 * nt as u32;
            // SAFETY: with a bias and `col` below `n` (even, and `n` a multiple of 8), both
            // elements of the pair lie inside the bias; otherwise nothing is read.
            let pair = unsafe { ld_global_u32_if(has_bias && col < p.n, bias.wrapping_add(col as usize / 2)) };
            let [lo, hi] = E::unpack(pair);
            *fragment = [lo, hi, lo, hi];
        }
    }
    pinned(acc)
}
