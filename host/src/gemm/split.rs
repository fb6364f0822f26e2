//! Split-K for GEMM-Q: when a launch's tiles fill the GPU's CTA slots a whole number of times
//! plus a partly filled last wave, the tiles of that last wave are cut along the reduction
//! axis into parts that run as separate CTAs, so the wave is made of shorter work and more of
//! the GPU takes part in it. The last part of a tile to finish sums the parts and writes the
//! tile (see the kernel's `split` module); the partial sums live in a [`GemmWorkspace`], which
//! also holds the persistent GEMM-O's tile counters.
//!
//! The plan ([`gemm_q_split`]) depends only on the number of working tiles, the reduction
//! length, the CTA size and the multiprocessor count; the result does not depend on it beyond
//! f32 rounding (the parts are summed in a fixed order, so a given plan is deterministic).

use flashomni_kernels::abi::{GEMM_MAX_SPLITS, GEMM_O_TILE_COUNTERS, GEMM_TILE_K, GemmRows, gemm_partial_bytes};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::memory::DeviceArray;

/// A part covers at least this many k-tiles: shorter parts spend too much of their time
/// filling and draining the pipeline.
const MIN_K_TILES_PER_PART: u32 = 8;

/// GEMM CTAs of a size that one multiprocessor holds at once (registers and shared memory:
/// ~97 KiB per 128-row CTA, ~73 KiB per 64-row one).
pub(crate) const fn resident_ctas(rows: GemmRows) -> u32 {
    match rows {
        GemmRows::Rows64 => 3,
        GemmRows::Rows128 => 2,
    }
}

/// How a GEMM-Q launch splits its reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmSplit {
    /// The first `whole_tiles` working tiles run whole (clamped to the tiles there are).
    pub whole_tiles: u32,
    /// Parts each later tile's reduction is cut into (1 to [`GEMM_MAX_SPLITS`]; 1 splits
    /// nothing). Parts cover consecutive k-tile ranges of equal length (±1).
    pub parts: u32,
}

/// The launcher's split for `tiles` working tiles of `rows`-row CTAs over a reduction of
/// length `k` on `multiprocessors` SMs: `None` when the tiles fill whole waves, when the last
/// wave is more than half full, or when `k` is too short to cut; otherwise the tiles of the
/// last wave are cut into as many parts as still fit in one wave (at most
/// [`GEMM_MAX_SPLITS`], each part at least 8 k-tiles).
pub fn gemm_q_split(tiles: u32, k: u32, rows: GemmRows, multiprocessors: u32) -> Option<GemmSplit> {
    split_over_slots(tiles, k, resident_ctas(rows).saturating_mul(multiprocessors))
}

/// [`gemm_q_split`] for a wave of `slots` CTAs.
pub(crate) fn split_over_slots(tiles: u32, k: u32, slots: u32) -> Option<GemmSplit> {
    if slots == 0 {
        return None;
    }
    let tail = tiles % slots;
    if tail == 0 {
        return None;
    }
    let parts = (slots / tail).min(GEMM_MAX_SPLITS).min(k.div_ceil(GEMM_TILE_K) / MIN_K_TILES_PER_PART);
    (parts >= 2).then_some(GemmSplit { whole_tiles: tiles - tail, parts })
}

/// Device memory that GEMM launches may write besides their output: for split GEMM-Q
/// launches the f32 partial sums of one wave of parts and one arrival counter per split tile;
/// for the persistent GEMM-O the counters its CTAs claim tiles from. Every counter is zero
/// between launches (the launch that used it zeroes it again).
///
/// A launch that uses its workspace writes it, like its output: launches that may run at the
/// same time (on streams not ordered with each other) need workspaces of their own.
pub struct GemmWorkspace {
    partials: DeviceArray<f32>,
    arrivals: DeviceArray<u32>,
    tile_counters: DeviceArray<u32>,
}

impl GemmWorkspace {
    /// Allocates a workspace for `engine`'s GPU: room for every part of one wave of either CTA
    /// size (~16 MiB on a 132-SM H200), counters zeroed.
    pub fn new(engine: &Engine) -> Result<Self> {
        engine.make_current()?;
        let slots = |rows: GemmRows| u64::from(resident_ctas(rows)) * u64::from(engine.multiprocessors());
        let bytes = GemmRows::ALL.into_iter().map(|rows| slots(rows) * gemm_partial_bytes(rows)).max().unwrap_or(0);
        let counters = GemmRows::ALL.into_iter().map(slots).max().unwrap_or(0);
        Ok(Self {
            partials: DeviceArray::uninitialized((bytes / 4) as usize)?,
            arrivals: DeviceArray::from_host(&vec![0u32; counters as usize])?,
            tile_counters: DeviceArray::from_host(&[0u32; GEMM_O_TILE_COUNTERS])?,
        })
    }

    /// Fails with [`Error::WrongContext`] unless the workspace was allocated in `engine`'s
    /// context.
    pub(crate) fn check_context(&self, engine: &Engine) -> Result<()> {
        self.partials.check_context(engine, "workspace")
    }

    /// The device address of the persistent GEMM-O's tile counters (see
    /// [`GEMM_O_TILE_COUNTERS`]).
    pub(crate) fn tile_counters(&mut self) -> u64 {
        self.tile_counters.view_mut().address()
    }

    /// Partial tiles of `rows`-row CTAs the workspace holds.
    fn partial_slots(&self, rows: GemmRows) -> u64 {
        self.partials.len() as u64 * 4 / gemm_partial_bytes(rows)
    }

    /// Checks that a launch of `split_tiles` tiles cut into `parts` fits; returns the device
    /// addresses of the partials and of the counters.
    pub(crate) fn reserve(&mut self, rows: GemmRows, split_tiles: u32, parts: u32) -> Result<(u64, u64)> {
        let needed = u64::from(split_tiles) * u64::from(parts);
        if needed > self.partial_slots(rows) || split_tiles as usize > self.arrivals.len() {
            return Err(Error::InvalidShape(format!(
                "the GEMM-Q split needs {needed} partial tiles and {split_tiles} counters; the workspace holds {} \
                 and {}",
                self.partial_slots(rows),
                self.arrivals.len()
            )));
        }
        Ok((self.partials.view_mut().address(), self.arrivals.view_mut().address()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_partly_filled_last_wave_is_split() {
        // 132 SMs, 128-row CTAs: 264 slots; K = 3072 is 48 k-tiles (at most 6 parts of 8).
        // M = 33792, r = 0.9: 606 tiles = 2 waves + 78, cut in 3 (234 parts).
        assert_eq!(gemm_q_split(606, 3072, GemmRows::Rows128, 132), Some(GemmSplit { whole_tiles: 528, parts: 3 }));
        // M = 4608, r = 0.9: 86 tiles, all in the last wave.
        assert_eq!(gemm_q_split(86, 3072, GemmRows::Rows128, 132), Some(GemmSplit { whole_tiles: 0, parts: 3 }));
        // Whole waves, or a last wave more than half full: nothing to gain.
        assert_eq!(gemm_q_split(6336, 3072, GemmRows::Rows128, 132), None);
        assert_eq!(gemm_q_split(264 + 200, 3072, GemmRows::Rows128, 132), None);
        // A few tiles get many parts, but no more than the cap or the reduction allows.
        assert_eq!(gemm_q_split(10, 3072, GemmRows::Rows128, 132).map(|s| s.parts), Some(6));
        assert_eq!(gemm_q_split(10, 1 << 20, GemmRows::Rows128, 132).map(|s| s.parts), Some(GEMM_MAX_SPLITS));
        assert_eq!(gemm_q_split(10, 960, GemmRows::Rows128, 132), None, "15 k-tiles: one part of 8");
        // 64-row CTAs: three per SM.
        assert_eq!(gemm_q_split(396 + 90, 3072, GemmRows::Rows64, 132), Some(GemmSplit { whole_tiles: 396, parts: 4 }));
        assert_eq!(gemm_q_split(5, 3072, GemmRows::Rows128, 0), None);
    }
}
