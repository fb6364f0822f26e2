//! How the Hopper (`sm_90a`) GEMM moves tiles between global and shared memory: tensor-memory
//! copies (`cp.async.bulk.tensor`), each issued by one thread for a whole box.
//! - A stage: the A box and the W box of the k-tile, which land in the 128-byte swizzle that
//!   `wgmma` reads and complete on the stage's `mbarrier`.
//! - GEMM-O's `C` tile: two 64-column boxes into the staged output tile's panels, completing
//!   on the barrier of the stage they land in.
//! - The output tile, when the epilogue writes all of it: two boxes from the panels to global
//!   memory.
//!
//! Rows and columns past the matrices are zero-filled on loads and dropped on stores by the
//! copy engine, so nothing is clipped by hand, and the other threads issue nothing.
//!
//! The host encodes the maps into [`GemmParams::maps`] (`a`: boxes of `GEMM_TILE_K` × the CTA
//! rows, `w`: `GEMM_TILE_K` × `GEMM_TILE_N`, `c`/`out`: 64 columns × the CTA rows); the entry passes their generic addresses in the parameter space
//! ([`entry_tensor_maps!`]).

use core::mem::offset_of;

use super::crew::Crew;
use super::epilogue::{OUT_PANELS, PANEL_COLUMNS, out_panel, staging_bytes};
use crate::abi::{GEMM_TILE_N, GemmParams, GemmTensorMaps};
use crate::device::ptx::{evict_first_policy, evict_last_policy, sync_threads, thread_index};
use crate::device::tile::Tile;
use crate::device::tma::{
    barrier_arrive_expect_bytes, barrier_init, barrier_wait, fence_barrier_init, load_box_2d, prefetch_map,
    store_box_2d, wait_stores_read,
};
use crate::device::wgmma::fence_proxy_async;

/// Generic addresses of the launch's tensor maps.
#[derive(Clone, Copy)]
pub(super) struct TensorMaps {
    a: u64,
    w: u64,
    c: u64,
    out: u64,
}

impl TensorMaps {
    /// The maps inside the `GemmParams` at generic address `params`.
    #[inline(always)]
    pub(super) const fn in_params(params: u64) -> Self {
        let maps = params + offset_of!(GemmParams, maps) as u64;
        Self {
            a: maps + offset_of!(GemmTensorMaps, a) as u64,
            w: maps + offset_of!(GemmTensorMaps, w) as u64,
            c: maps + offset_of!(GemmTensorMaps, c) as u64,
            out: maps + offset_of!(GemmTensorMaps, out) as u64,
        }
    }

    /// Starts fetching the maps into the copy engine's descriptor cache (thread 0), so that
    /// the first copies do not wait for them. Harmless for a blank map.
    #[inline(always)]
    pub(super) fn prefetch(&self) {
        if thread_index() == 0 {
            for map in [self.a, self.w, self.c, self.out] {
                // SAFETY: the addresses are inside the entry's parameter.
                unsafe { prefetch_map(map) };
            }
        }
    }
}

/// The [`TensorMaps`] inside entry `$entry`'s parameter; use it only inside that entry.
macro_rules! entry_tensor_maps {
    ($entry:ident) => {
        super::copy::TensorMaps::in_params(crate::device::tma::entry_param_address!($entry))
    };
}
pub(super) use entry_tensor_maps;

/// One CTA's view of the two operands: the maps and the CTA's box coordinates.
pub(super) struct StageSource {
    maps: TensorMaps,
    /// First row of the CTA's A boxes.
    m0: u32,
    /// First row of the CTA's W boxes.
    n0: u32,
}

impl StageSource {
    /// The source of the CTA whose output tile starts at row `m0`, column `n0`.
    ///
    /// # Safety
    /// `maps` must point at the tensor maps the host encoded for `p`'s A and W, with A boxes
    /// of this entry's rows; rows `m0 < m` and `n0 < n` must exist.
    #[inline(always)]
    pub(super) unsafe fn new(_p: &GemmParams, maps: TensorMaps, m0: u32, n0: u32) -> Self {
        Self { maps, m0, n0 }
    }

    /// The CTA's first output row and column (`m0`, `n0`).
    #[inline(always)]
    pub(super) const fn origin(&self) -> (u32, u32) {
        (self.m0, self.n0)
    }

    /// Initialises the `STAGES` stage barriers at shared address `barriers` (8 bytes each) for
    /// one arrival per phase (the issuing thread's) and publishes them to every thread and to
    /// the copy engine. Every thread calls it, before the first [`StageSource::load`].
    #[inline(always)]
    pub(super) fn prepare<const STAGES: u32>(&self, barriers: u32) {
        if thread_index() == 0 {
            let mut stage = 0;
            while stage < STAGES {
                // SAFETY: the host sized the barrier region for STAGES barriers; no thread
                // uses them before the barrier below.
                unsafe { barrier_init(barriers + 8 * stage, 1) };
                stage += 1;
            }
            fence_barrier_init();
        }
        sync_threads();
    }

    /// Issues the copies of the k-tile starting at reduction index `k0` into the stage's tiles
    /// `a` and `w`, completing on the stage's `barrier`. Every thread calls it; thread 0 issues
    /// them ([`StageSource::issue_load`]).
    ///
    /// # Safety
    /// As for [`StageSource::issue_load`].
    #[inline(always)]
    pub(super) unsafe fn load(&self, a: &Tile, w: &Tile, k0: u32, barrier: u32) {
        if thread_index() == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.issue_load(a, w, 1, k0, barrier) };
        }
    }

    /// Arms `barrier` with the stage's bytes and issues its boxes of the k-tile starting at
    /// reduction index `k0`: A's rows `m0 …` into `a`, and W's rows `n0 + j·GEMM_TILE_N …` for
    /// `j < w_tiles` into `w_tiles` consecutive tiles the size of `w`, from `w` on. Called by
    /// the one thread that issues the CTA's copies. A's lines enter L2 evict-first (read by the
    /// CTAs of one row block at about the same time), W's evict-last (re-read all launch long).
    ///
    /// # Safety
    /// `k0` must be below `k`; the tiles must be 1024-byte aligned shared memory of one box
    /// each, which nobody reads or writes until a wait on `barrier` returns; `barrier` must have
    /// been prepared and its previous phase waited for.
    #[inline(always)]
    pub(super) unsafe fn issue_load(&self, a: &Tile, w: &Tile, w_tiles: u32, k0: u32, barrier: u32) {
        let bytes = a.bytes() + w_tiles * w.bytes();
        // SAFETY: the maps describe the validated operands (constructor's contract);
        // out-of-range rows and columns of a box are zero-filled by the copy; the barrier
        // expects exactly the boxes' bytes.
        unsafe {
            barrier_arrive_expect_bytes(barrier, bytes);
            load_box_2d(a.chunk_address(0, 0), self.maps.a, k0, self.m0, barrier, evict_first_policy());
            let mut j = 0;
            while j < w_tiles {
                let destination = w.chunk_address(0, 0) + j * w.bytes();
                load_box_2d(destination, self.maps.w, k0, self.n0 + j * GEMM_TILE_N, barrier, evict_last_policy());
                j += 1;
            }
        }
    }

    /// Waits (every thread) until the stage whose barrier is `barrier` landed: the phase with
    /// parity `parity` (the stage's fill count, mod 2) completed. Its data is then visible to
    /// this thread and to `wgmma`.
    #[inline(always)]
    pub(super) fn wait<const STAGES: u32>(&self, barrier: u32, parity: u32) {
        // SAFETY: the barrier was prepared (the main loop's contract).
        unsafe { barrier_wait(barrier, parity) };
    }

    /// Issues the copies of the CTA's `C` tile into the staged output tile at `staging`,
    /// completing on `barrier`, the barrier of the stage they land in. Every thread calls it;
    /// thread 0 issues them ([`Self::issue_load_c`]).
    ///
    /// # Safety
    /// As for [`Self::issue_load_c`].
    #[inline(always)]
    pub(super) unsafe fn load_c<const MT: usize>(&self, _p: &GemmParams, staging: u32, barrier: u32) {
        if thread_index() == 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.issue_load_c::<MT>(staging, barrier) };
        }
    }

    /// Arms `barrier` with the `C` tile's bytes and issues it as two 64-column boxes into the
    /// staged output tile at `staging` (columns outside `C` read as zero). Called by the one
    /// thread that issues the CTA's copies.
    ///
    /// # Safety
    /// The launch must have a `C` matrix and its `maps.c`; `staging` must be
    /// [`staging_bytes`]`(MT)` bytes of shared memory, 1024-byte aligned, that nobody reads or
    /// writes until a wait on `barrier` returns; `barrier` prepared, its previous phase waited
    /// for.
    #[inline(always)]
    pub(super) unsafe fn issue_load_c<const MT: usize>(&self, staging: u32, barrier: u32) {
        // SAFETY: as for `issue_load`; the two boxes are exactly the bytes the barrier expects.
        unsafe {
            barrier_arrive_expect_bytes(barrier, staging_bytes(MT));
            let mut panel = 0;
            while panel < OUT_PANELS {
                let x = self.n0 + panel * PANEL_COLUMNS;
                let destination = out_panel::<MT>(staging, panel).chunk_address(0, 0);
                load_box_2d(destination, self.maps.c, x, self.m0, barrier, evict_first_policy());
                panel += 1;
            }
        }
    }

    /// Waits (every thread) until the `C` tile issued by [`Self::load_c`] on `barrier` landed:
    /// the phase with parity `parity` (that stage's fill count, mod 2). It is then visible to
    /// this thread.
    #[inline(always)]
    pub(super) fn wait_c(&self, barrier: u32, parity: u32) {
        // SAFETY: the barrier was prepared (the main loop's contract).
        unsafe { barrier_wait(barrier, parity) };
    }

    /// Stores the staged output tile at `staging` to the CTA's place in the output as two
    /// 64-column boxes (the copy engine drops what lies outside the matrix) and returns true.
    /// Every thread of `crew` calls it after writing its part of the staged tile; the crew's
    /// thread 0 issues the stores and waits until they have read shared memory.
    ///
    /// # Safety
    /// `p.maps.out` must describe the validated output; `staging` must be the staged tile
    /// ([`super::epilogue::staging_bytes`], 1024-byte aligned), complete once every thread
    /// has called this.
    #[inline(always)]
    pub(super) unsafe fn store_tile<const MT: usize>(&self, staging: u32, crew: Crew) -> bool {
        // Each thread's shared-memory writes become visible to the copy engine, then the
        // barrier collects every thread's.
        fence_proxy_async();
        crew.sync();
        if crew.thread == 0 {
            let mut panel = 0;
            while panel < OUT_PANELS {
                let x = self.n0 + panel * PANEL_COLUMNS;
                let source = out_panel::<MT>(staging, panel).chunk_address(0, 0);
                // SAFETY: the panel is staged and published; the map describes the output.
                unsafe { store_box_2d(self.maps.out, x, self.m0, source, evict_first_policy()) };
                panel += 1;
            }
            // The CTA's shared memory must outlive the copies' reads of it.
            wait_stores_read();
        }
        true
    }
}
