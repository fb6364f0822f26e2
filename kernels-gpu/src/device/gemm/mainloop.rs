//! The GEMM main loop shared by GEMM-Q and GEMM-O: a multi-stage pipeline of swizzled A and W
//! tiles feeding the module's tensor-core math (`super::math`: `mma.sync` in the portable
//! module, asynchronous `wgmma` in the Hopper one). How a stage is filled is the module's
//! `super::copy`: every thread's `cp.async` copies in the portable module, one thread's
//! tensor-memory copies completing on a per-stage `mbarrier` in the Hopper one.
//!
//! Pipeline (S = `STAGES`; one `cp.async` commit group per k-tile, empty groups keep the count):
//! ```text
//! prologue: load tiles 0 … S-2 into stages 0 … S-2
//! for i in 0..count:
//!     wait until tile i has landed (cp.async: ≤ S-2 groups pending; TMA: its stage barrier)
//!     (wgmma) issue tile i's products
//!     settle: (wgmma) wait for tile i-1's products; tile i's keep running
//!     barrier (publishes tile i; proves every warp is done with tile i-1's stage)
//!     load tile i+S-1 into the stage tile i-1 used
//!     (mma.sync) multiply tile i, done on return
//! drain: (wgmma) wait for the last products
//! ```
//!
//! A's lines enter L2 evict-first: the CTAs that share an A row block (the column tiles of
//! one row, adjacent in launch order) run at the same time, while W's lines are re-read by
//! every row block over the whole launch and should be what L2 keeps (docs/perf-journal.md, run 34:
//! dense GEMM-Q 2–4% faster, sparse GEMM-Q up to 8%, GEMM-O unchanged). On `sm_90a` W's
//! copies also mark its lines evict-last, so that the A, `C` and output streams cannot push
//! them out (runs 130–131: sparse GEMM-Q at M = 33792 3–6% faster, dense ~1%; attention
//! launched right after a GEMM-Q measured the same).
//!
//! The slot of the virtual tile `count` (the first stage nobody multiplies) goes to the
//! caller's `tail` copies: GEMM-O loads its `C` tile there, so that the copy overlaps the last
//! `S - 1` k-tiles instead of starting after the loop (`ring_position::<S>(count)` says where
//! it lands).

use super::copy::StageSource;
use super::math::{GemmElement, MULTIPLY_BEFORE_BARRIER, drain, multiply, settle};
use super::{Accumulators, K_CHUNKS, check_shape, stage_bytes, tile_m};
use crate::abi::{GEMM_MAX_HEADS, GEMM_TILE_K, GEMM_TILE_N};
use crate::device::ptx::{cp_async_commit, cp_async_wait, sync_threads};
use crate::device::tile::Tile;

/// Which k-tiles the main loop multiplies, in order. Called exactly once per executed k-tile,
/// in increasing order, so an implementation can walk with a cursor instead of decoding.
pub(super) trait KWalk {
    /// The first reduction index (a multiple of `GEMM_TILE_K`) of the next k-tile.
    fn next_k(&mut self) -> u32;
}

/// Every k-tile in order (dense reduction).
pub(super) struct AllTiles {
    /// Reduction index of the next tile.
    pub k: u32,
}

impl KWalk for AllTiles {
    #[inline(always)]
    fn next_k(&mut self) -> u32 {
        let k = self.k;
        self.k += GEMM_TILE_K;
        k
    }
}

/// The A tile of pipeline stage `stage` (`MT` m16 tiles per warp).
#[inline(always)]
fn a_tile<const MT: usize>(smem: u32, stage: u32) -> Tile {
    Tile::at(stage_address::<MT>(smem, stage), tile_m(MT), K_CHUNKS)
}

/// The W tile of pipeline stage `stage`.
#[inline(always)]
fn w_tile<const MT: usize>(smem: u32, stage: u32) -> Tile {
    Tile::at(a_tile::<MT>(smem, stage).end(), GEMM_TILE_N, K_CHUNKS)
}

/// Shared address of pipeline stage `stage`.
#[inline(always)]
pub(super) fn stage_address<const MT: usize>(smem: u32, stage: u32) -> u32 {
    smem + stage * stage_bytes(MT)
}

/// The slot that fill `index` of a ring of `SLOTS` barrier-guarded slots uses, and the parity
/// of the barrier phase that fill completes (the slot's fill count, mod 2). For a main loop of
/// `count` k-tiles, `ring_position::<STAGES>(count)` is the stage of its `tail` copies.
#[inline(always)]
pub(super) const fn ring_position<const SLOTS: u32>(index: u32) -> (u32, u32) {
    (index % SLOTS, (index / SLOTS) % 2)
}

/// The stage after `stage`, cyclically.
#[inline(always)]
fn next_stage<const STAGES: u32>(stage: u32) -> u32 {
    if stage + 1 == STAGES { 0 } else { stage + 1 }
}

/// Shared address of the barrier of stage `stage` (see [`crate::abi::gemm_shared_bytes`]:
/// after the stages and GEMM-O's head list).
#[inline(always)]
pub(super) fn stage_barrier<const MT: usize, const STAGES: u32>(smem: u32, stage: u32) -> u32 {
    smem + STAGES * stage_bytes(MT) + GEMM_MAX_HEADS * 4 + 8 * stage
}

/// Multiplies `count` k-tiles chosen by `walk` into f32 accumulators that start at `start()`
/// (evaluated once the prologue's copies are issued, so that its loads overlap them; see
/// [`super::bias`]); this warp's part of the CTA tile. On return every k-tile copy has landed
/// and every warp has passed a barrier after its last shared-memory read, so the caller may
/// reuse the pipeline's shared memory (except the tail stage while tensor-memory `tail` copies
/// are in flight).
///
/// `tail(stage)` is called once, by every thread, in place of loading the virtual k-tile
/// `count` into stage `stage` (= [`ring_position`]`::<STAGES>(count).0`): it may issue copies into that
/// stage, `cp.async` ones without committing (landed and visible on return) or tensor-memory
/// ones completing on the stage's barrier (the caller waits for them).
///
/// Must be called by all threads of the CTA with CTA-uniform `count`.
///
/// # Safety
/// `source` must describe the validated operands of this CTA; `walk` must yield `count`
/// k-tile starts below `k`; `smem` must be the base of the CTA's dynamic shared memory, sized
/// by [`crate::abi::gemm_shared_bytes`] for `STAGES` stages of `stage_bytes(MT)` bytes.
#[inline(always)]
pub(super) unsafe fn mainloop<E: GemmElement, W: KWalk, const MT: usize, const STAGES: u32>(
    source: &StageSource,
    count: u32,
    walk: &mut W,
    smem: u32,
    tail: impl Fn(u32),
    start: impl FnOnce() -> Accumulators<MT>,
) -> Accumulators<MT> {
    const { check_shape(MT, STAGES) };

    // Issues the copies of the k-tile starting at reduction index `k0` into `stage`.
    let load = |stage: u32, k0: u32| {
        // SAFETY: `k0` comes from the walk (below k); the stage is not read before its wait,
        // and its previous contents were released by the barrier before this call.
        unsafe {
            source.load(
                &a_tile::<MT>(smem, stage),
                &w_tile::<MT>(smem, stage),
                k0,
                stage_barrier::<MT, STAGES>(smem, stage),
            )
        }
    };

    source.prepare::<STAGES>(stage_barrier::<MT, STAGES>(smem, 0));
    let mut stage = 0;
    while stage < STAGES - 1 {
        if stage < count {
            load(stage, walk.next_k());
        } else if stage == count {
            tail(stage);
        }
        cp_async_commit();
        stage += 1;
    }

    let mut acc = start();
    let mut read = 0;
    let mut write = STAGES - 1;
    let mut i = 0;
    while i < count {
        source.wait::<STAGES>(stage_barrier::<MT, STAGES>(smem, read), ring_position::<STAGES>(i).1);
        if MULTIPLY_BEFORE_BARRIER {
            // SAFETY: tile i landed in stage `read` and is visible to the async proxy after this
            // thread's wait (tensor-memory copies); the stage is not written again before the
            // next `settle` and barrier, by which this k-tile's products have completed.
            unsafe { multiply::<E, MT>(&mut acc, &a_tile::<MT>(smem, read), &w_tile::<MT>(smem, read)) };
        }
        settle(&mut acc);
        sync_threads();
        if i + STAGES - 1 < count {
            load(write, walk.next_k());
        } else if i + STAGES - 1 == count {
            tail(write);
        }
        cp_async_commit();
        if !MULTIPLY_BEFORE_BARRIER {
            // SAFETY: tile i landed in stage `read` and was published by the barrier; the stage
            // is not written again before the next barrier.
            unsafe { multiply::<E, MT>(&mut acc, &a_tile::<MT>(smem, read), &w_tile::<MT>(smem, read)) };
        }
        read = next_stage::<STAGES>(read);
        write = next_stage::<STAGES>(write);
        i += 1;
    }
    drain(&mut acc);
    cp_async_wait::<0>();
    sync_threads();
    acc
}
