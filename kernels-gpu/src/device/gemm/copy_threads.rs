//! How the portable (`sm_80`) GEMM moves tiles between global and shared memory: every
//! thread issues 16-byte `cp.async` copies of the A and W k-tiles into the swizzled stage, one
//! commit group per k-tile (a stage has landed when at most `STAGES - 2` groups are still
//! pending), and of GEMM-O's `C` tile; the output tile is stored by the epilogue's threads.

use super::crew::Crew;
use super::epilogue::{OUT_CHUNKS, OUT_PANELS, out_panel};
use super::{ELEMENT_BYTES, K_CHUNKS, tile_m};
use crate::abi::{GEMM_THREADS, GemmParams};
use crate::device::ptx::cp_async_wait;
use crate::device::tile::Tile;

/// What the `sm_90a` module carries to find its tensor maps; the portable module copies
/// through plain pointers and needs nothing.
#[derive(Clone, Copy)]
pub(super) struct TensorMaps;

impl TensorMaps {
    /// Nothing to prefetch.
    #[inline(always)]
    pub(super) fn prefetch(&self) {}
}

/// The [`TensorMaps`] of entry `$entry` (nothing to compute here).
macro_rules! entry_tensor_maps {
    ($entry:ident) => {
        super::copy::TensorMaps
    };
}
pub(super) use entry_tensor_maps;

/// The slices of the two operands that one CTA copies into its stages.
pub(super) struct StageSource {
    /// Row `m0` of A.
    a: *const u8,
    /// Row `n0` of W.
    w: *const u8,
    /// Bytes per row of A and of W (`k · 2`).
    row_bytes: u64,
    /// Rows of A from `m0` on that exist (`m - m0`); the others are zero-filled.
    a_rows: u32,
    /// Rows of W from `n0` on that exist (`n - n0`); the others are zero-filled.
    w_rows: u32,
    /// Reduction length; chunks past it are zero-filled.
    k: u32,
    /// The CTA's first output row and column.
    origin: (u32, u32),
}

impl StageSource {
    /// The source of the CTA whose output tile starts at row `m0`, column `n0`.
    ///
    /// # Safety
    /// `p` must describe buffers validated by the host launcher, and rows `m0 < m` and
    /// `n0 < n` must exist (the grid covers m and n).
    #[inline(always)]
    pub(super) unsafe fn new(p: &GemmParams, _maps: TensorMaps, m0: u32, n0: u32) -> Self {
        let row_bytes = p.k as u64 * ELEMENT_BYTES;
        Self {
            // SAFETY: rows m0 and n0 exist (guaranteed by the caller), so these are in bounds.
            a: unsafe { (p.a as *const u8).add((m0 as u64 * row_bytes) as usize) },
            // SAFETY: as above.
            w: unsafe { (p.w as *const u8).add((n0 as u64 * row_bytes) as usize) },
            row_bytes,
            a_rows: p.m - m0,
            w_rows: p.n - n0,
            k: p.k,
            origin: (m0, n0),
        }
    }

    /// The CTA's first output row and column (`m0`, `n0`).
    #[inline(always)]
    pub(super) const fn origin(&self) -> (u32, u32) {
        self.origin
    }

    /// Readies the stage barriers at `barriers` before the first copy: cp.async groups need
    /// none.
    #[inline(always)]
    pub(super) fn prepare<const STAGES: u32>(&self, _barriers: u32) {}

    /// Issues (every thread) the copies of the k-tile starting at reduction index `k0` into
    /// the stage's tiles `a` and `w`; the caller commits them as one group.
    ///
    /// # Safety
    /// `k0` must be below `k`; the tiles must lie in the CTA's shared memory and not be read
    /// until [`StageSource::wait`] for this stage returns.
    #[inline(always)]
    pub(super) unsafe fn load(&self, a: &Tile, w: &Tile, k0: u32, _barrier: u32) {
        let chunks = ((self.k - k0) / 8).min(K_CHUNKS);
        let offset = k0 as usize * ELEMENT_BYTES as usize;
        // SAFETY: rows below a_rows/w_rows and chunks below `chunks` are inside the operands
        // (the constructor's contract); everything else is zero-filled, not read.
        unsafe {
            a.load_async_clipped_evict_first::<GEMM_THREADS>(self.a.add(offset), self.row_bytes, self.a_rows, chunks);
            w.load_async_clipped::<GEMM_THREADS>(self.w.add(offset), self.row_bytes, self.w_rows, chunks);
        }
    }

    /// Waits (every thread) until the oldest loaded stage has landed: at most `STAGES - 2`
    /// commit groups pending (`STAGES` is 2 or 3, see `check_shape`). The caller's barrier
    /// then publishes it to the other threads.
    #[inline(always)]
    pub(super) fn wait<const STAGES: u32>(&self, _barrier: u32, _parity: u32) {
        if STAGES == 2 { cp_async_wait::<0>() } else { cp_async_wait::<1>() }
    }

    /// Issues (every thread; not committed) the copies of the CTA's `C` tile into the staged
    /// output tile at `staging`, zero-filling what lies outside `C`. The main loop's final
    /// wait makes them visible.
    ///
    /// # Safety
    /// `p` must be a validated launch with a `C` matrix; `staging` must be the
    /// [`super::epilogue::staging_bytes`] bytes of the tail stage, 1024-byte aligned.
    #[inline(always)]
    pub(super) unsafe fn load_c<const MT: usize>(&self, p: &GemmParams, staging: u32, _barrier: u32) {
        let (m0, n0) = self.origin;
        let rows = (p.m - m0).min(tile_m(MT));
        let chunks = ((p.n - n0) / 8).min(OUT_CHUNKS);
        let row_bytes = p.n as u64 * ELEMENT_BYTES;
        let corner = (m0 as u64 * p.n as u64 + n0 as u64) * ELEMENT_BYTES;
        let mut panel = 0;
        while panel < OUT_PANELS {
            let first = panel * K_CHUNKS;
            // A panel with no chunk inside C (n − n0 ≤ 64) may start past C's end, so its
            // address is formed with wrapping arithmetic; it is then never read.
            let source = (p.c as *const u8).wrapping_add((corner + first as u64 * 16) as usize);
            // SAFETY: rows below `rows` and chunks below `chunks` lie inside C ([m, n]); the
            // rest is zero-filled, not read.
            unsafe {
                out_panel::<MT>(staging, panel).load_async_clipped_evict_first::<GEMM_THREADS>(
                    source,
                    row_bytes,
                    rows,
                    chunks.saturating_sub(first).min(K_CHUNKS),
                )
            };
            panel += 1;
        }
    }

    /// The `C` copies were waited for by the main loop's last `cp.async` wait and barrier.
    #[inline(always)]
    pub(super) fn wait_c(&self, _barrier: u32, _parity: u32) {}

    /// The portable module has no bulk store: returns false, and the epilogue's threads store
    /// the tile.
    ///
    /// # Safety
    /// None needed here; the signature matches the `sm_90a` module's.
    #[inline(always)]
    pub(super) unsafe fn store_tile<const MT: usize>(&self, _staging: u32, _crew: Crew) -> bool {
        false
    }
}
