//! The GEMM main loop shared by GEMM-Q and GEMM-O: a multi-stage `cp.async` pipeline of
//! swizzled A and W tiles and the `ldmatrix` + `mma.sync` compute on them.
//!
//! Pipeline (S = `STAGES`, one commit group per k-tile, empty groups keep the count):
//! ```text
//! prologue: load tiles 0 … S-2 into stages 0 … S-2
//! for i in 0..count:
//!     wait until tile i has landed (≤ S-2 groups pending); barrier
//!         (the barrier also proves every warp is done with tile i-1's stage)
//!     load tile i+S-1 into the stage tile i-1 used
//!     multiply tile i
//! ```
//!
//! The slot of the virtual tile `count` (the first stage nobody multiplies) goes to the
//! caller's `tail` copies: GEMM-O loads its `C` tile there, so that the copy overlaps the last
//! `S - 1` k-tiles instead of starting after the loop ([`tail_stage`] says where it lands).

use super::{Accumulators, ELEMENT_BYTES, K_CHUNKS, NT, WARP_N, check_shape, stage_bytes, tile_m, warp_m};
use crate::abi::{GEMM_THREADS, GEMM_TILE_K, GEMM_TILE_N, GEMM_WARPS_N};
use crate::device::element::MmaElement;
use crate::device::ptx::{cp_async_commit, cp_async_wait, ldmatrix_x4, sync_threads, thread_index};
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
pub(super) unsafe fn mainloop<E: MmaElement, W: KWalk, const MT: usize, const STAGES: u32>(
    ops: &Operands,
    count: u32,
    walk: &mut W,
    smem: u32,
    tail: impl Fn(u32),
) -> Accumulators<MT> {
    const { check_shape(MT, STAGES) };
    let tid = thread_index();
    let lane = tid % 32;
    let warp = tid / 32;
    let a_row0 = (warp / GEMM_WARPS_N) * warp_m(MT);
    let w_row0 = (warp % GEMM_WARPS_N) * WARP_N;

    // Issues the copies of the k-tile starting at reduction index `k0` into `stage`.
    let load = |stage: u32, k0: u32| {
        let chunks = ((ops.k - k0) / 8).min(K_CHUNKS);
        let offset = k0 as usize * ELEMENT_BYTES as usize;
        // SAFETY: rows below a_rows/w_rows and chunks below `chunks` are inside the operands
        // (guaranteed by the caller); everything else is zero-filled, not read.
        unsafe {
            a_tile::<MT>(smem, stage).load_async_clipped::<GEMM_THREADS>(
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

    let mut acc = [[[0f32; 4]; NT]; MT];
    let mut read = 0;
    let mut write = STAGES - 1;
    let mut i = 0;
    while i < count {
        wait_for_oldest::<STAGES>();
        sync_threads();
        if i + STAGES - 1 < count {
            load(write, walk.next_k());
        } else if i + STAGES - 1 == count {
            tail(smem + write * stage_bytes(MT));
        }
        cp_async_commit();
        multiply::<E, MT>(&mut acc, &a_tile::<MT>(smem, read), &w_tile::<MT>(smem, read), a_row0, w_row0, lane);
        read = next_stage::<STAGES>(read);
        write = next_stage::<STAGES>(write);
        i += 1;
    }
    cp_async_wait::<0>();
    sync_threads();
    acc
}

/// `acc += A_tile[a_row0.., :] · W_tile[w_row0.., :]ᵀ` for this warp's `16·MT × WARP_N` block.
///
/// Every fragment address is derived from one base per operand (`Tile::at_chunk` and whole
/// 16-row steps), so the compiler keeps two address registers instead of one per fragment.
#[inline(always)]
fn multiply<E: MmaElement, const MT: usize>(
    acc: &mut Accumulators<MT>,
    a: &Tile,
    w: &Tile,
    a_row0: u32,
    w_row0: u32,
    lane: u32,
) {
    let a_base = a.a_fragment_base(a_row0, lane);
    let w_base = w.b_fragment_base(w_row0, lane);
    let (a_step, w_step) = (16 * a.row_bytes(), 16 * w.row_bytes());
    for kk in 0..GEMM_TILE_K / 16 {
        let mut a_frag = [[0u32; 4]; MT];
        for (mt, frag) in a_frag.iter_mut().enumerate() {
            // SAFETY: the address lies in this stage's A tile, complete and visible.
            *frag = unsafe { ldmatrix_x4(Tile::at_chunk(a_base, 2 * kk) + mt as u32 * a_step) };
        }
        let mut w_frag = [[0u32; 4]; NT / 2];
        for (pair, frag) in w_frag.iter_mut().enumerate() {
            // SAFETY: the address lies in this stage's W tile, complete and visible.
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
