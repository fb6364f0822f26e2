//! GEMM-O on `sm_90a` as a persistent, warp-specialized kernel ("wide" CTAs): the same sums as
//! [`super::o`], for launches large enough to keep one such CTA per multiprocessor busy (the
//! host's `gemm_o_persistent` rule).
//!
//! One CTA per multiprocessor claims `GEMM_O_WIDE_ROWS × (GEMM_O_WIDE_CONSUMERS · GEMM_TILE_N)`
//! tiles, row-major, from the launch's tile counter until none is left ([`TileSource`]). Its
//! warps split the work:
//! - **Producer** (the first warp after the consumers): claims each tile, counts its k-tiles
//!   (warp ballots over the S_c row), announces the tile in a small queue, and issues every
//!   tensor-memory copy from lane 0: per tile, the summed heads' k-tiles into a ring of
//!   `GEMM_O_WIDE_STAGES` stages (one A k-tile and one W k-tile per consumer), then one ring
//!   slot per consumer holding its `C` tile (or nothing, without `C`), where the consumer also
//!   stages its output.
//! - **Consumers** (warpgroups `0 … GEMM_O_WIDE_CONSUMERS − 1`): warpgroup `j` takes each tile
//!   from the queue and multiplies the tile's columns `j · GEMM_TILE_N …` with `wgmma`, reading
//!   the stage's one A k-tile (A crosses from L2 once per wide tile, not once per 128 columns)
//!   and its own W k-tile, then runs the shared [`epilogue`] in its slot on a named barrier of
//!   its own.
//!
//! Hand-offs are `mbarrier`s only, so neither side waits for the other's unrelated work:
//! - stage *full*: the producer arms it with the slot's bytes; the copies complete it;
//! - stage *empty*: one arrival per consumer thread once it stopped reading (or, in its
//!   output slot, writing) the slot; the producer waits for it before refilling;
//! - queue slot *announced* / *taken*: the same pair for the tile numbers and k-tile counts.
//!
//! Every consumer thread arrives itself, rather than one lane per warp after a warp barrier:
//! an `mbarrier` arrival releases the arriving thread's own accesses, so the hand-off needs no
//! argument about how far a warp barrier carries the other lanes' accesses, and
//! `compute-sanitizer --tool racecheck` can follow it (with one arrival per warp it reported
//! hazards on the queue and the output slots). The extra arrivals cost nothing measurable
//! (docs/perf-journal.md, run 91).
//!
//! Both sides count ring slots over the whole launch (`ring`): slot `r` uses stage
//! `r % STAGES` in that stage's fill `r / STAGES`, whose parity names the barrier phase; the
//! queue works the same way over the CTA's tiles (`sequence`). A parity wait cannot tell a
//! phase from the one two before it, so every consumer waits for every fill of every stage,
//! in order (also the other consumer's output slots): no wait is ever more than one phase
//! ahead of its barrier. A schedule whose consumers skip each other's fills needs a barrier
//! that orders their waits (docs/perf-journal.md, runs 59–61).

use super::bias::starting_accumulators;
use super::copy::{StageSource, TensorMaps};
use super::crew::Crew;
use super::epilogue::{epilogue, staging_bytes};
use super::mainloop::ring_position;
use super::math::{GemmElement, drain, multiply};
use super::o::summed_heads;
use super::{K_CHUNKS, gemm_entry, mt_of, tile_m};
use crate::abi::{
    GEMM_O_WIDE_CONSUMERS, GEMM_O_WIDE_ROWS, GEMM_O_WIDE_STAGES, GEMM_O_WIDE_TILE_SLOTS, GEMM_THREADS, GEMM_TILE_K,
    GEMM_TILE_N, GemmParams, GemmRows, gemm_o_wide_shared_bytes, gemm_o_wide_stage_bytes,
};
use crate::device::element::{Bf16, F16};
use crate::device::params::nonzero;
use crate::device::ptx::{
    atomic_add_gpu, claim_registers, grid_dim_x, ld_shared_b32, release_registers, shared_base, shfl_idx_u32,
    st_global_u32, st_shared_b32, sync_threads, thread_index,
};
use crate::device::tile::Tile;
use crate::device::tma::{barrier_arrive, barrier_init, barrier_wait, fence_barrier_init};

/// m16 tiles per warp of a consumer's 128-row tile (the per-tile kernels' 128-row shape).
const MT: usize = mt_of(GemmRows::Rows128);
/// Consumer warpgroups.
const CONSUMERS: u32 = GEMM_O_WIDE_CONSUMERS;
/// Pipeline stages.
const STAGES: u32 = GEMM_O_WIDE_STAGES;
/// Columns of a CTA tile.
const CTA_COLUMNS: u32 = CONSUMERS * GEMM_TILE_N;
/// The warp that issues the copies.
const PRODUCER_WARP: u32 = CONSUMERS * GEMM_THREADS / 32;
/// Registers per thread of the producer warpgroup after it hands the rest to the consumers.
const PRODUCER_REGISTERS: u32 = 56;
/// Registers per consumer thread: the launch's 168 (65536 over 384 threads) plus the
/// producer warpgroup's released ones.
const CONSUMER_REGISTERS: u32 = 224;
/// Tile numbers the producer may announce before the consumers took them.
const TILE_SLOTS: u32 = GEMM_O_WIDE_TILE_SLOTS;
/// Arrivals that empty a stage or a queue slot: one per consumer thread.
const CONSUMER_THREADS: u32 = CONSUMERS * GEMM_THREADS;

const _: () = {
    assert!(tile_m(MT) == GEMM_O_WIDE_ROWS, "a consumer tile is the CTA's rows");
    let a_bytes = GEMM_O_WIDE_ROWS * K_CHUNKS * 16;
    let w_bytes = GEMM_TILE_N * K_CHUNKS * 16;
    assert!(a_bytes + CONSUMERS * w_bytes == gemm_o_wide_stage_bytes(), "host and device stage sizes agree");
    assert!(
        Layout::tile_numbers() + 8 * TILE_SLOTS == gemm_o_wide_shared_bytes(),
        "host and device shared-memory sizes agree"
    );
    assert!(gemm_o_wide_stage_bytes().is_multiple_of(1024), "stages keep the 1024-byte swizzle alignment");
    assert!(staging_bytes(MT) <= gemm_o_wide_stage_bytes(), "a consumer's output tile is staged in one stage");
};

/// Where everything lives in the CTA's dynamic shared memory: the stages, then the barriers.
#[derive(Clone, Copy)]
struct Layout {
    smem: u32,
}

impl Layout {
    /// Offset of the first barrier from the start of dynamic shared memory.
    const fn barrier_region() -> u32 {
        STAGES * gemm_o_wide_stage_bytes()
    }

    /// Shared address of stage `stage`.
    #[inline(always)]
    fn stage(self, stage: u32) -> u32 {
        self.smem + stage * gemm_o_wide_stage_bytes()
    }

    /// The A k-tile of stage `stage`.
    #[inline(always)]
    fn a_tile(self, stage: u32) -> Tile {
        Tile::at(self.stage(stage), GEMM_O_WIDE_ROWS, K_CHUNKS)
    }

    /// The W k-tile of consumer `consumer` in stage `stage` (the consumers' tiles follow A, one
    /// after another).
    #[inline(always)]
    fn w_tile(self, stage: u32, consumer: u32) -> Tile {
        let first = self.a_tile(stage).end();
        Tile::at(first + consumer * GEMM_TILE_N * K_CHUNKS * 16, GEMM_TILE_N, K_CHUNKS)
    }

    /// Barrier `index` of the barrier region.
    #[inline(always)]
    fn barrier(self, index: u32) -> u32 {
        self.smem + Self::barrier_region() + 8 * index
    }

    /// "Stage `stage` was filled."
    #[inline(always)]
    fn full(self, stage: u32) -> u32 {
        self.barrier(stage)
    }

    /// "Stage `stage` was released by every consumer thread."
    #[inline(always)]
    fn empty(self, stage: u32) -> u32 {
        self.barrier(STAGES + stage)
    }

    /// "Queue slot `slot` holds the next tile number."
    #[inline(always)]
    fn tile_announced(self, slot: u32) -> u32 {
        self.barrier(2 * STAGES + slot)
    }

    /// "Every consumer thread read queue slot `slot`."
    #[inline(always)]
    fn tile_taken(self, slot: u32) -> u32 {
        self.barrier(2 * STAGES + TILE_SLOTS + slot)
    }

    /// Offset of the queue's tile numbers (after every barrier) from the start of dynamic
    /// shared memory.
    const fn tile_numbers() -> u32 {
        Self::barrier_region() + 8 * (2 * STAGES + 2 * TILE_SLOTS)
    }

    /// Queue slot `slot`: the announced tile's number, then its k-tile count.
    #[inline(always)]
    fn tile_number(self, slot: u32) -> u32 {
        self.smem + Self::tile_numbers() + 8 * slot
    }
}

/// First row and column of CTA tile `tile` (row-major over `ceil(n / CTA_COLUMNS)` columns).
#[inline(always)]
fn tile_origin(p: &GemmParams, tile: u32) -> (u32, u32) {
    let columns = nonzero(p.n.div_ceil(CTA_COLUMNS));
    (tile / columns * GEMM_O_WIDE_ROWS, tile % columns * CTA_COLUMNS)
}

/// Consumer tiles of the CTA tile at column `n0` that lie (at least partly) inside the output.
#[inline(always)]
fn live_consumers(p: &GemmParams, n0: u32) -> u32 {
    (p.n - n0).div_ceil(GEMM_TILE_N).min(CONSUMERS)
}

/// Heads this launch sums for the CTA tile at row `m0`, passed one by one to `each` (every
/// lane of the calling warp gets every head, in increasing order).
///
/// # Safety
/// As for [`summed_heads`].
#[inline(always)]
unsafe fn for_each_head(p: &GemmParams, m0: u32, mut each: impl FnMut(u32)) {
    let q_block = (p.token_offset + m0) / nonzero(p.block_q);
    let mut base = 0;
    while base < p.heads {
        // SAFETY: forwarded from the caller.
        let mut mask = unsafe { summed_heads(p, q_block, base) };
        while mask != 0 {
            each(base + mask.trailing_zeros());
            mask &= mask - 1;
        }
        base += 32;
    }
}

/// Where the CTAs' tiles come from: the launch's tile counters (`GemmParams::arrivals`, zero at
/// launch). Every CTA claims the next unclaimed tile, row-major, when its producer is ready
/// for one, so CTAs whose tiles sum fewer heads take more of them, and the CTAs at work at any
/// moment hold neighbouring tiles (which share A's row block in L2).
#[derive(Clone, Copy)]
struct TileSource {
    counter: *mut u32,
    tiles: u32,
}

impl TileSource {
    /// The launch's tile source.
    #[inline(always)]
    fn new(p: &GemmParams) -> Self {
        let tiles = p.m.div_ceil(GEMM_O_WIDE_ROWS) * p.n.div_ceil(CTA_COLUMNS);
        Self { counter: p.arrivals as *mut u32, tiles }
    }

    /// Claims the next tile (`≥ tiles` once there are none left). Every lane of the calling
    /// warp calls it and gets the result.
    ///
    /// # Safety
    /// `counter` must be [`GEMM_O_TILE_COUNTERS`](crate::abi::GEMM_O_TILE_COUNTERS) writable device `u32`s that nothing but this
    /// launch uses while it runs.
    #[inline(always)]
    unsafe fn claim(self) -> u32 {
        let lane = thread_index() % 32;
        // SAFETY: forwarded from the caller.
        let claimed = if lane == 0 { unsafe { atomic_add_gpu(self.counter, 1) } } else { 0 };
        shfl_idx_u32(claimed, 0)
    }

    /// Called once per CTA by one thread after its last [`Self::claim`]: the last CTA to get
    /// here zeroes the counters for the next launch (every CTA has claimed its last tile).
    ///
    /// # Safety
    /// As for [`Self::claim`].
    #[inline(always)]
    unsafe fn finish(self) {
        // SAFETY: forwarded from the caller; the second word counts finished CTAs.
        unsafe {
            let finished = self.counter.add(1);
            if atomic_add_gpu(finished, 1) == grid_dim_x() - 1 {
                st_global_u32(self.counter, 0);
                st_global_u32(finished, 0);
            }
        }
    }
}

/// The producer warp: issues every copy of the CTA's tiles (lane 0), in the order the
/// consumers use them: per tile, the selected heads' k-tiles, then one ring slot per live
/// consumer holding its `C` tile (or nothing, without `C`), where its output is staged.
///
/// # Safety
/// A validated launch (see [`gemm_o_wide`]); `layout`'s barriers initialised.
#[inline(always)]
unsafe fn produce(p: &GemmParams, maps: TensorMaps, layout: Layout) {
    let issuer = thread_index().is_multiple_of(32);
    let tiles_per_head = p.head_dim / GEMM_TILE_K;
    let source_of_tiles = TileSource::new(p);
    let mut ring = 0;
    let mut sequence = 0;
    loop {
        // SAFETY: a validated launch: the counters are this launch's.
        let tile = unsafe { source_of_tiles.claim() };
        let mut count = 0;
        if tile < source_of_tiles.tiles {
            // SAFETY: a validated launch.
            unsafe { for_each_head(p, tile_origin(p, tile).0, |_| count += tiles_per_head) };
        }
        if issuer {
            let (slot, parity) = ring_position::<TILE_SLOTS>(sequence);
            // SAFETY: the slot is free once every consumer thread read its previous number; the
            // arrival releases the number to the consumers that wait on the slot's barrier.
            unsafe {
                barrier_wait(layout.tile_taken(slot), parity ^ 1);
                st_shared_b32(layout.tile_number(slot), tile);
                st_shared_b32(layout.tile_number(slot) + 4, count);
                barrier_arrive(layout.tile_announced(slot));
            }
        }
        sequence += 1;
        if tile >= source_of_tiles.tiles {
            break;
        }
        let (m0, n0) = tile_origin(p, tile);
        let live = live_consumers(p, n0);
        // SAFETY: row m0 and column n0 exist (the tile is inside the output).
        let source = unsafe { StageSource::new(p, maps, m0, n0) };
        let issue_head = |head: u32| {
            let mut t = 0;
            while t < tiles_per_head {
                if issuer {
                    let (stage, parity) = ring_position::<STAGES>(ring);
                    // SAFETY: the stage is free once its previous fill was read by every consumer
                    // thread; the k-tile lies in the head's slice, below k.
                    unsafe {
                        barrier_wait(layout.empty(stage), parity ^ 1);
                        let k0 = head * p.head_dim + t * GEMM_TILE_K;
                        let w = layout.w_tile(stage, 0);
                        source.issue_load(&layout.a_tile(stage), &w, live, k0, layout.full(stage));
                    }
                }
                ring += 1;
                t += 1;
            }
        };
        // SAFETY: a validated launch.
        unsafe { for_each_head(p, m0, issue_head) };
        for consumer in (0..CONSUMERS).filter(|&consumer| consumer < live) {
            if issuer {
                let (stage, parity) = ring_position::<STAGES>(ring);
                // SAFETY: as above; the consumer's columns exist.
                unsafe {
                    barrier_wait(layout.empty(stage), parity ^ 1);
                    if p.c == 0 {
                        barrier_arrive(layout.full(stage));
                    } else {
                        let columns = StageSource::new(p, maps, m0, n0 + consumer * GEMM_TILE_N);
                        columns.issue_load_c::<MT>(layout.stage(stage), layout.full(stage));
                    }
                }
            }
            ring += 1;
        }
    }
    if issuer {
        // SAFETY: this CTA claims no more tiles.
        unsafe { source_of_tiles.finish() };
    }
}

/// Consumer warpgroup `consumer`: multiplies its columns of every CTA tile and writes them.
///
/// # Safety
/// A validated launch (see [`gemm_o_wide`]); `layout`'s barriers initialised.
#[inline(always)]
unsafe fn consume<E: GemmElement>(p: &GemmParams, maps: TensorMaps, layout: Layout, consumer: u32) {
    let crew = Crew::number(consumer);
    let mut ring = 0;
    // Waits until ring slot `ring` is filled; returns its stage.
    let wait = |ring: u32| {
        let (stage, parity) = ring_position::<STAGES>(ring);
        // SAFETY: the barriers are initialised; once the phase completed the stage holds fill
        // `ring`, and nobody overwrites it before every consumer thread released it.
        unsafe { barrier_wait(layout.full(stage), parity) };
        stage
    };
    // Arrives for this thread on `barrier`, after its earlier reads and writes.
    let thread_arrive = |barrier: u32| {
        // SAFETY: the consumers' barriers (stage empty, tile taken) expect one arrival per
        // consumer thread per phase, made after the phase's fill was waited for by this thread.
        unsafe { barrier_arrive(barrier) };
    };
    // Tells the producer that this thread is done with the stage of ring slot `ring`.
    let release = |ring: u32| thread_arrive(layout.empty(ring_position::<STAGES>(ring).0));
    let tiles = TileSource::new(p).tiles;
    let mut sequence = 0;
    loop {
        let (slot, parity) = ring_position::<TILE_SLOTS>(sequence);
        // SAFETY: once the slot's phase completed it holds the producer's `sequence`-th tile
        // number, which stays until every consumer thread arrived on `tile_taken`.
        let tile = unsafe {
            barrier_wait(layout.tile_announced(slot), parity);
            ld_shared_b32(layout.tile_number(slot))
        };
        if tile >= tiles {
            break;
        }
        let (m0, n0) = tile_origin(p, tile);
        let live = live_consumers(p, n0);
        // SAFETY: the slot's second word holds the tile's k-tile count (as its number above).
        let count = unsafe { ld_shared_b32(layout.tile_number(slot) + 4) };
        thread_arrive(layout.tile_taken(slot));
        sequence += 1;
        // SAFETY: a validated launch (the bias, if any, holds n elements).
        let mut acc = unsafe { starting_accumulators::<E, MT>(p, n0 + consumer * GEMM_TILE_N, crew, true) };
        let mut i = 0;
        while i < count {
            let stage = wait(ring);
            // SAFETY: the stage holds k-tile `ring` until this warpgroup releases it.
            unsafe { multiply::<E, MT>(&mut acc, &layout.a_tile(stage), &layout.w_tile(stage, consumer)) };
            drain(&mut acc);
            release(ring);
            ring += 1;
            i += 1;
        }
        // The tile's output slots, one per live consumer: release the others' at once (after
        // they were filled, so that the arrival counts for that fill), then use this one's.
        for owner in (0..CONSUMERS).filter(|&owner| owner < live && owner != consumer) {
            wait(ring + owner);
            release(ring + owner);
        }
        if consumer < live {
            let mine = ring + consumer;
            let stage = wait(mine);
            // SAFETY: row m0 and this consumer's first column exist.
            let source = unsafe { StageSource::new(p, maps, m0, n0 + consumer * GEMM_TILE_N) };
            // SAFETY: a validated launch; the stage holds this consumer's `C` tile (if any) in
            // the staging layout; GEMM-O writes every element.
            unsafe { epilogue::<E, MT>(p, &source, acc, layout.stage(stage), crew, true, |_, _| true) };
            // The store has read the stage (the crew's thread 0 waited for it).
            crew.sync();
            release(mine);
        }
        ring += live;
    }
}

/// Computes the CTA tiles `blockIdx.x + i · gridDim.x` of a wide GEMM-O launch.
///
/// # Safety
/// `p` must describe buffers and symbols validated by the host launcher (see [`GemmParams`]; in
/// addition `heads ≤ GEMM_MAX_HEADS`, `head_dim` a multiple of `GEMM_TILE_K`, `token_offset`
/// and `block_q` multiples of [`GEMM_O_WIDE_ROWS`]); the launch must have
/// `GEMM_O_WIDE_THREADS` threads and [`gemm_o_wide_shared_bytes`] of dynamic shared memory.
#[inline(always)]
unsafe fn gemm_o_wide<E: GemmElement>(p: &GemmParams, maps: TensorMaps) {
    let layout = Layout { smem: shared_base() };
    if thread_index() == 0 {
        // SAFETY: the barrier region holds these barriers; nobody uses them before the CTA
        // barrier below. The producer fills stages and announces tiles (one arrival); every
        // consumer thread empties stages and takes tiles.
        unsafe {
            let mut stage = 0;
            while stage < STAGES {
                barrier_init(layout.full(stage), 1);
                barrier_init(layout.empty(stage), CONSUMER_THREADS);
                stage += 1;
            }
            let mut slot = 0;
            while slot < TILE_SLOTS {
                barrier_init(layout.tile_announced(slot), 1);
                barrier_init(layout.tile_taken(slot), CONSUMER_THREADS);
                slot += 1;
            }
        }
        fence_barrier_init();
    }
    sync_threads();
    let warp = thread_index() / 32;
    if warp >= PRODUCER_WARP {
        // The producer warpgroup's registers go to the consumers; one warp issues the copies.
        release_registers::<PRODUCER_REGISTERS>();
        if warp == PRODUCER_WARP {
            // SAFETY: forwarded from the entry; the barriers are initialised.
            unsafe { produce(p, maps, layout) };
        }
    } else {
        claim_registers::<CONSUMER_REGISTERS>();
        // SAFETY: as above.
        unsafe { consume::<E>(p, maps, layout, warp * 32 / GEMM_THREADS) };
    }
}

gemm_entry!(flashomni_gemm_o_bf16_wide, gemm_o_wide, Bf16);
gemm_entry!(flashomni_gemm_o_f16_wide, gemm_o_wide, F16);
