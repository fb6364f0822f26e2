//! GEMM-O: the output projection with the reduction axis `K = H·D` split by head.
//!
//! - Cache mode: `C = b + Σ_{h : S_c(qb, h) = 0} A_h·W_hᵀ` (the heads that will be cached).
//! - Active mode: `Y = C + Σ_{h : S_c(qb, h) = 1} A_h·W_hᵀ` (the heads computed now).
//!
//! A CTA's rows lie in one query block (the host requires `token_offset` and `block_q` to be
//! multiples of the CTA's rows, `tile_m(MT)`). Before the main loop, warp-wide ballots over the S_c row turn
//! it into a compact list of the selected heads' first reduction indices in shared memory;
//! the pipeline then walks `D / GEMM_TILE_K` k-tiles per listed head with a cursor, so no
//! symbol is decoded inside the loop. Every output tile is written, also when no head is
//! selected (then it is the bias or `C` tile).
//!
//! The `C` tile of active mode is copied into shared memory as the main loop's tail (in the
//! stage after the last k-tile's, overlapping the last k-tiles; `cp.async` in the portable
//! module, two tensor-memory boxes on `sm_90a`). An L2 prefetch of it at the CTA's start no
//! longer pays once `C` streams through L2 as evict-first (docs/perf-journal.md, runs 28–29).

use super::bias::starting_accumulators;
use super::copy::StageSource;
use super::crew::Crew;
use super::epilogue::epilogue;
use super::mainloop::{KWalk, mainloop, ring_position, stage_address, stage_barrier};
use super::math::GemmElement;
use super::{TensorMaps, gemm_entry, stage_bytes, tile_m};
use crate::abi::{GEMM_O_MODE_ACTIVE, GEMM_TILE_K, GEMM_TILE_N, GemmParams};
use crate::device::element::{Bf16, F16};
use crate::device::params::{nonzero, symbol_bit};
use crate::device::ptx::{
    ballot, block_index_x, block_index_y, ld_shared_b32, shared_base, st_shared_b32, sync_threads, thread_index,
};

/// Walks the k-tiles of the listed heads: `tiles_per_head` consecutive tiles from each
/// entry's first reduction index.
struct HeadWalk {
    /// Shared address of the list (`u32` reduction index per selected head).
    list: u32,
    /// Current list entry.
    entry: u32,
    /// K-tile within the current head.
    tile: u32,
    tiles_per_head: u32,
    /// First reduction index of the current head.
    head_k: u32,
}

impl KWalk for HeadWalk {
    #[inline(always)]
    fn next_k(&mut self) -> u32 {
        if self.tile == 0 {
            // SAFETY: the main loop asks for `selected · tiles_per_head` tiles, so `entry` is
            // below the number of entries written (and visible after the barrier).
            self.head_k = unsafe { ld_shared_b32(self.list + 4 * self.entry) };
        }
        let k = self.head_k + self.tile * GEMM_TILE_K;
        self.tile += 1;
        if self.tile == self.tiles_per_head {
            self.tile = 0;
            self.entry += 1;
        }
        k
    }
}

/// The heads `base … base + 31` whose reduction slices a GEMM-O launch sums for query block
/// `q_block` (active mode: S_c = 1, cache mode: S_c = 0; without symbols every head is
/// computed), as a mask: bit `i` for head `base + i`. Every lane of the warp calls it.
///
/// # Safety
/// `p` must be a validated GEMM-O launch whose symbols (if any) hold `q_block`'s bits: the
/// host checked that the segment's request covers tokens up to `token_offset + m`.
#[inline(always)]
pub(super) unsafe fn summed_heads(p: &GemmParams, q_block: u32, base: u32) -> u32 {
    let head = base + thread_index() % 32;
    let segment = p.caching as *const u8;
    // SAFETY: `head < heads` and `q_block` is covered (the caller's contract).
    let computed = |head: u32| segment.is_null() || unsafe { symbol_bit(segment, q_block * p.heads + head) };
    ballot(head < p.heads && computed(head) == (p.mode == GEMM_O_MODE_ACTIVE))
}

/// Computes CTA `(column tile, row tile)` of a GEMM-O launch with `tile_m(MT)`-row tiles and
/// a `STAGES`-deep pipeline.
///
/// # Safety
/// `p` must describe buffers and symbols validated by the host launcher (see
/// [`GemmParams`]; in addition `heads ≤ GEMM_MAX_HEADS`, `head_dim` a multiple of
/// `GEMM_TILE_K`, `token_offset` and `block_q` multiples of `tile_m(MT)`); the launch must
/// use the grid, threads and shared memory documented there.
#[inline(always)]
unsafe fn gemm_o<E: GemmElement, const MT: usize, const STAGES: u32>(p: &GemmParams, maps: TensorMaps) {
    let tid = thread_index();
    let lane = tid % 32;
    let warp = tid / 32;
    let n0 = block_index_x() * GEMM_TILE_N;
    let m0 = block_index_y() * tile_m(MT);
    let smem = shared_base();
    let list = smem + STAGES * stage_bytes(MT);
    let q_block = (p.token_offset + m0) / nonzero(p.block_q);
    let has_c = p.c != 0;

    // Every warp ballots the S_c row 32 heads at a time (so each knows the count); warp 0
    // writes the list.
    let mut selected = 0;
    let mut base = 0;
    while base < p.heads {
        // SAFETY: a validated launch (this function's contract).
        let mask = unsafe { summed_heads(p, q_block, base) };
        if warp == 0 && mask & (1 << lane) != 0 {
            let slot = selected + (mask & ((1u32 << lane) - 1)).count_ones();
            // SAFETY: `slot < heads ≤ GEMM_MAX_HEADS`, inside the list region the host sized.
            unsafe { st_shared_b32(list + 4 * slot, (base + lane) * p.head_dim) };
        }
        selected += mask.count_ones();
        base += 32;
    }
    sync_threads();

    let tiles_per_head = p.head_dim / GEMM_TILE_K;
    let mut walk = HeadWalk { list, entry: 0, tile: 0, tiles_per_head, head_k: 0 };
    // SAFETY: rows m0 and n0 exist (the grid covers m and n); the maps are the entry's.
    let source = unsafe { StageSource::new(p, maps, m0, n0) };
    let count = selected * tiles_per_head;
    let tail = |stage: u32| {
        if has_c {
            // SAFETY: a validated launch with C; the tail stage holds the staged tile (checked
            // at compile time in `super`) and is free once the main loop asks for its tail.
            unsafe {
                source.load_c::<MT>(p, stage_address::<MT>(smem, stage), stage_barrier::<MT, STAGES>(smem, stage))
            };
        }
    };
    let crew = Crew::number(0);
    // SAFETY: a validated launch (the bias, if any, holds n elements).
    let start = || unsafe { starting_accumulators::<E, MT>(p, n0, crew, true) };
    // SAFETY: every listed head's slice lies below k; shared memory is sized by the host for
    // the pipeline, the list and the barriers.
    let acc = unsafe { mainloop::<E, _, MT, STAGES>(&source, count, &mut walk, smem, tail, start) };
    let (stage, parity) = ring_position::<STAGES>(count);
    if has_c {
        source.wait_c(stage_barrier::<MT, STAGES>(smem, stage), parity);
    }
    // SAFETY: as for the main loop; GEMM-O writes every element, C (if any) is staged.
    unsafe { epilogue::<E, MT>(p, &source, acc, stage_address::<MT>(smem, stage), crew, true, |_, _| true) };
}

gemm_entry!(flashomni_gemm_o_bf16, gemm_o, Bf16, Rows128);
gemm_entry!(flashomni_gemm_o_f16, gemm_o, F16, Rows128);
gemm_entry!(flashomni_gemm_o_bf16_m64, gemm_o, Bf16, Rows64);
gemm_entry!(flashomni_gemm_o_f16_m64, gemm_o, F16, Rows64);
