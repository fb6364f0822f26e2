//! GEMM-Q: the Q projection `Y = X·Wᵀ + b` that computes only what attention will read.
//!
//! Row `r` of X is query token `token_offset + r` (query block `qb(r)`), column `c` of Y
//! belongs to head `c / head_dim`. A CTA first decodes the S_c bits of every (q block, head)
//! pair its tile touches: with none computed it returns before any load; otherwise it runs
//! the dense main loop and writes exactly the `(row, 8-column chunk)`s whose pair is computed
//! (head boundaries are multiples of 8 columns, so a chunk lies in one head). Cached elements
//! keep the output buffer's contents.
//!
//! The grid is one CTA per work item: a whole tile, or, in a split launch, one part of a tile's
//! reduction ([`super::split`]), whose last part to finish writes the tile. A clustered launch
//! rounds the grid up to whole clusters; the CTAs past the last item return at once.

use super::bias::starting_accumulators;
use super::copy::StageSource;
use super::crew::Crew;
use super::epilogue::epilogue;
use super::mainloop::{AllTiles, mainloop};
use super::math::GemmElement;
use super::split::{combine_parts, work_item};
use super::{TensorMaps, gemm_entry, stage_bytes, tile_m};
use crate::abi::{GEMM_TILE_K, GEMM_TILE_N, GemmParams};
use crate::device::element::{Bf16, F16};
use crate::device::params::{nonzero, read_u32, symbol_bit};
use crate::device::ptx::{block_index_x, shared_base};

/// Computes one work item of a GEMM-Q launch (a tile, or one part of a split tile, see
/// [`super::split`]) with `tile_m(MT)`-row tiles and a `STAGES`-deep pipeline.
///
/// # Safety
/// `p` must describe buffers and symbols validated by the host launcher (see
/// [`GemmParams`]); the launch must use the grid, threads and shared memory documented there.
#[inline(always)]
unsafe fn gemm_q<E: GemmElement, const MT: usize, const STAGES: u32>(p: &GemmParams, maps: TensorMaps) {
    if block_index_x() >= p.items {
        return; // padding of the last cluster
    }
    let k_tiles = p.k.div_ceil(GEMM_TILE_K);
    let item = work_item(p, block_index_x(), k_tiles);
    let (column_tile, row_tile) = if p.tiles == 0 {
        let columns = nonzero(p.n.div_ceil(GEMM_TILE_N));
        (item.tile % columns, item.tile / columns)
    } else {
        let entry = 2 * item.tile as usize;
        // SAFETY: the host sized the tile list for this grid: pair `item.tile` exists.
        unsafe { (read_u32(p.tiles, entry), read_u32(p.tiles, entry + 1)) }
    };
    let n0 = column_tile * GEMM_TILE_N;
    let m0 = row_tile * tile_m(MT);
    let rows = (p.m - m0).min(tile_m(MT));
    let cols = (p.n - n0).min(GEMM_TILE_N);
    let block_q = nonzero(p.block_q);
    let head_dim = nonzero(p.head_dim);
    let segment = p.caching as *const u8;
    let first_token = p.token_offset + m0;

    // Which of the tile's (q block, head) pairs are computed: any → run, all → no filtering.
    // A listed tile holds a computed pair, so one inside a single pair is wholly computed: its
    // bit is not read, which keeps a dependent load off the path to the first copies.
    let (mut any, mut all) = (true, true);
    if !segment.is_null() {
        let (qb_first, qb_last) = (first_token / block_q, (first_token + rows - 1) / block_q);
        let (head_first, head_last) = (n0 / head_dim, (n0 + cols - 1) / head_dim);
        let one_listed_pair = p.tiles != 0 && qb_first == qb_last && head_first == head_last;
        if !one_listed_pair {
            any = false;
            let mut qb = qb_first;
            while qb <= qb_last {
                let mut head = head_first;
                while head <= head_last {
                    // SAFETY: the host checked that the segment's request covers tokens up to
                    // token_offset + m, so the segment holds every (qb, head) bit of the grid.
                    let bit = unsafe { symbol_bit(segment, qb * p.heads + head) };
                    any |= bit;
                    all &= bit;
                    head += 1;
                }
                qb += 1;
            }
        }
    }
    if !any {
        return; // every pair is cached: the tile keeps the output buffer's contents
    }

    // SAFETY: rows m0 and n0 exist (the grid covers m and n).
    let source = unsafe { StageSource::new(p, maps, m0, n0) };
    let smem = shared_base();
    let (first, end) = item.k_tiles;
    let mut walk = AllTiles { k: first * GEMM_TILE_K };
    let crew = Crew::number(0);
    // Part 0 of a split tile carries the bias, which the parts' sum then holds once.
    let carries_bias = item.part.as_ref().is_none_or(|part| part.index() == 0);
    // SAFETY: a validated launch (the bias, if any, holds n elements).
    let start = || unsafe { starting_accumulators::<E, MT>(p, n0, crew, carries_bias) };
    // SAFETY: the operands and walk cover the validated buffers; shared memory is sized by
    // the host for the pipeline.
    let mut acc = unsafe { mainloop::<E, _, MT, STAGES>(&source, end - first, &mut walk, smem, |_| {}, start) };
    if let Some(part) = &item.part {
        let flag = smem + STAGES * stage_bytes(MT);
        // SAFETY: a validated split launch; the pipeline's drained stages hold a partial tile
        // (checked at compile time in `super`) and the head-list word after them is unused by
        // GEMM-Q.
        if !unsafe { combine_parts::<MT>(p, part, &mut acc, smem, flag) } {
            return; // another part of the tile finishes it
        }
    }
    let writable = |row: u32, chunk: u32| {
        // SAFETY: `row` and `chunk` lie inside the matrix (checked by the epilogue first),
        // so the bit is inside the segment as above.
        all || unsafe { symbol_bit(segment, (first_token + row) / block_q * p.heads + (n0 + 8 * chunk) / head_dim) }
    };
    // SAFETY: as for the main loop.
    unsafe { epilogue::<E, MT>(p, &source, acc, smem, crew, all, writable) };
}

gemm_entry!(flashomni_gemm_q_bf16, gemm_q, Bf16, Rows128);
gemm_entry!(flashomni_gemm_q_f16, gemm_q, F16, Rows128);
gemm_entry!(flashomni_gemm_q_bf16_m64, gemm_q, Bf16, Rows64);
gemm_entry!(flashomni_gemm_q_f16_m64, gemm_q, F16, Rows64);
