//! The GEMM main loop shared by GEMM-Q and GEMM-O: a multi-stage `cp.async` pipeline of
//! swizzled A and W tiles feeding the module's tensor-core math (`super::math`: `mma.sync`
//! in the portable module, asynchronous `wgmma` in the Hopper one).
//!
//! Pipeline (S = `STAGES`, one commit group per k-tile, empty groups keep the count):
//! ```text
//! prologue: load tiles 0 … S-2 into stages 0 … S-2
//! for i in 0..count:
//!     wait until tile i has landed (≤ S-2 groups pending)
//!     settle: (wgmma) fence the landed copies for the async proxy, wait for tile i-1's products
//!     barrier (publishes tile i; proves every warp is done with tile i-1's stage)
//!     load tile i+S-1 into the stage tile i-1 used
//!     multiply tile i (mma.sync: done on return; wgmma: issued, runs under the next copies)
//! drain: (wgmma) wait for the last products
//! ```
//!
//! A's lines enter L2 evict-first: the CTAs that share an A row block (the column tiles of
//! one row, adjacent in launch order) run at the same time, while W's lines are re-read by
//! every row block over the whole launch and should be what L2 keeps (docs/PERF.md, run 34:
//! dense GEMM-Q 2–4% faster, sparse GEMM-Q up to 8%, GEMM-O unchanged).
//!
//! The slot of the virtual tile `count` (the first stage nobody multiplies) goes to the
//! caller's `tail` copies: GEMM-O loads its `C` tile there, so that the copy overlaps the last
//! `S - 1` k-tiles instead of starting after the loop ([`tail_stage`] says where it lands).

use super::math::{GemmElement, drain, multiply, settle, zeroed};
use super::{Accumulators, ELEMENT_BYTES, K_CHUNKS, check_shape, stage_bytes, tile_m};
use crate::abi::{GEMM_THREADS, GEMM_TILE_K, GEMM_TILE_N};
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

/// The CTA's slices of the two operands.
pub(super) struct Operands {
    /// Row `m0` of A.
    pub a: *const u8,
    /// Row `n0` of W.
    pub w: *const u8,
    /// Bytes per row of A and of W (`k · 2`).
    pub row_bytes: u64,
    /// Rows of A from `m0` on that exist (`m - m0`); the others are zero-filled.
    pub a_rows: u32,
    /// Rows of W from `n0` on that exist (`n - n0`); the others are zero-filled.
    pub w_rows: u32,
    /// Reduction length; chunks past it are zero-filled.
    pub k: u32,
}

/// The A tile of pipeline stage `stage` (`MT` m16 tiles per warp).
#[inline(always)]
fn a_tile<const MT: usize>(smem: u32, stage: u32) -> Tile {
    Tile::at(smem + stage * stage_bytes(MT), tile_m(MT), K_CHUNKS)
}

/// The W tile of pipeline stage `stage`.
#[inline(always)]
fn w_tile<const MT: usize>(smem: u32, stage: u32) -> Tile {
    Tile::at(a_tile::<MT>(smem, stage).end(), GEMM_TILE_N, K_CHUNKS)
}

/// Shared address of the stage that receives the `tail` copies of a main loop of `count`
/// k-tiles (the stage the virtual k-tile `count` would use).
#[inline(always)]
pub(super) fn tail_stage<const MT: usize, const STAGES: u32>(smem: u32, count: u32) -> u32 {
    smem + (count % STAGES) * stage_bytes(MT)
}

/// The stage after `stage`, cyclically.
#[inline(always)]
fn next_stage<const STAGES: u32>(stage: u32) -> u32 {
    if stage + 1 == STAGES { 0 } else { stage + 1 }
}

/// Waits until at most `STAGES - 2` commit groups are pending (the pipeline's steady-state
/// wait; `STAGES` is 2 or 3, see `check_shape`).
#[inline(always)]
fn wait_for_oldest<const STAGES: u32>() {
    if STAGES == 2 { cp_async_wait::<0>() } else { cp_async_wait::<1>() }
}

/// Multiplies `count` k-tiles chosen by `walk` into fresh f32 accumulators; this warp's part of
/// the CTA tile. On return every copy has landed and every warp has passed a barrier after its
/// last shared-memory read, so the caller may reuse the pipeline's shared memory.
///
/// `tail(stage_address)` is called once, by every thread, in place of loading the virtual
/// k-tile `count`: it may issue `cp.async` copies (without committing) into the
/// `stage_bytes(MT)` bytes at `stage_address` (= [`tail_stage`]`(smem, count)`); they
/// have landed and are visible on return.
///
/// Must be called by all threads of the CTA with CTA-uniform `count`.
///
/// # Safety
/// `ops` must describe readable operands (rows below `a_rows`/`w_rows`, reduction indices
/// below `k`, 16-byte aligned rows); `walk` must yield `count` k-tile starts below `k`;
/// `smem` must be the base of `STAGES` stages of `stage_bytes(MT)` bytes of dynamic shared
/// memory.
#[inline(always)]
pub(super) unsafe fn mainloop<E: GemmElement, W: KWalk, const MT: usize, const STAGES: u32>(
    ops: &Operands,
    count: u32,
    walk: &mut W,
    smem: u32,
    tail: impl Fn(u32),
) -> Accumulators<MT> {
    const { check_shape(MT, STAGES) };

    // Issues the copies of the k-tile starting at reduction index `k0` into `stage`.
    let load = |stage: u32, k0: u32| {
        let chunks = ((ops.k - k0) / 8).min(K_CHUNKS);
        let offset = k0 as usize * ELEMENT_BYTES as usize;
        // SAFETY: rows below a_rows/w_rows and chunks below `chunks` are inside the operands
        // (guaranteed by the caller); everything else is zero-filled, not read.
        unsafe {
            a_tile::<MT>(smem, stage).load_async_clipped_evict_first::<GEMM_THREADS>(
                ops.a.add(offset),
                ops.row_bytes,
                ops.a_rows,
                chunks,
            );
            w_tile::<MT>(smem, stage).load_async_clipped::<GEMM_THREADS>(
                ops.w.add(offset),
                ops.row_bytes,
                ops.w_rows,
                chunks,
            );
        }
    };

    let mut stage = 0;
    while stage < STAGES - 1 {
        if stage < count {
            load(stage, walk.next_k());
        } else if stage == count {
            tail(smem + stage * stage_bytes(MT));
        }
        cp_async_commit();
        stage += 1;
    }

    let mut acc = zeroed::<MT>();
    let mut read = 0;
    let mut write = STAGES - 1;
    let mut i = 0;
    while i < count {
        wait_for_oldest::<STAGES>();
        settle(&mut acc);
        sync_threads();
        if i + STAGES - 1 < count {
            load(write, walk.next_k());
        } else if i + STAGES - 1 == count {
            tail(smem + write * stage_bytes(MT));
        }
        cp_async_commit();
        // SAFETY: tile i landed in stage `read` and was published by the barrier; the stage is
        // not written again before the next `settle` and barrier.
        unsafe { multiply::<E, MT>(&mut acc, &a_tile::<MT>(smem, read), &w_tile::<MT>(smem, read)) };
        read = next_stage::<STAGES>(read);
        write = next_stage::<STAGES>(write);
        i += 1;
    }
    drain(&mut acc);
    cp_async_wait::<0>();
    sync_threads();
    acc
}
