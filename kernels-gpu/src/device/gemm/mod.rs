//! Sparse GEMMs around attention, on tensor cores: GEMM-Q ([`q`]) and GEMM-O ([`o`]).
//!
//! Both are `out = addend + A·Wᵀ` with `A` `[M, K]` and `W` `[N, K]` row-major, and share one
//! CTA design (`BM × GEMM_TILE_N` output tile, `GEMM_TILE_K`-deep k-tiles). The CTA size is a
//! pair of const generics, `MT` (m16 tiles per warp, so `BM = GEMM_WARPS_M · 16 · MT` rows)
//! and `STAGES` (pipeline depth); each [`GemmRows`] is one instantiation and one entry:
//! - [`mainloop`]: a `STAGES`-deep pipeline over swizzled shared-memory tiles, filled by the
//!   module's copies ([`copy_threads`]: every thread's `cp.async` in the portable module,
//!   [`copy_tma`]: one thread's tensor-memory copies in the `sm_90a` one), feeding the
//!   tensor-core math with f32 accumulators: [`mma_sync`] (`ldmatrix.x4` +
//!   `mma.sync.m16n8k16`, one warp per `16·MT × 64` block) in the portable `sm_80` module,
//!   [`warpgroup`] (the four warps as one warpgroup issuing `wgmma.mma_async.m64n128k16`
//!   straight from the stages) in the `sm_90a` module. *Which* k-tiles it
//!   walks is a parameter ([`mainloop::KWalk`]): GEMM-Q walks all of them, GEMM-O only the
//!   slices of the heads it selected once, up front.
//! - [`bias`]: the accumulators start at the bias vector (when the launch has one).
//! - [`epilogue`]: adds the `C` tile to the accumulators (when the launch has one), rounds,
//!   stages the tile through shared memory and writes it with 16-byte stores, each
//!   `(row, 8-column chunk)` filtered by a predicate (GEMM-Q: "its (q block, head) is
//!   computed"; GEMM-O: always).

mod bias;
#[cfg(not(target_feature = "sm_90a"))]
mod copy_threads;
#[cfg(target_feature = "sm_90a")]
mod copy_tma;
mod crew;
mod epilogue;
mod mainloop;
#[cfg(not(target_feature = "sm_90a"))]
mod mma_sync;
mod o;
#[cfg(target_feature = "sm_90a")]
mod o_wide;
mod q;
mod split;
#[cfg(target_feature = "sm_90a")]
mod warpgroup;

#[cfg(not(target_feature = "sm_90a"))]
use copy_threads as copy;
#[cfg(target_feature = "sm_90a")]
use copy_tma as copy;
#[cfg(not(target_feature = "sm_90a"))]
use mma_sync as math;
#[cfg(target_feature = "sm_90a")]
use warpgroup as math;

use crate::abi::{GEMM_THREADS, GEMM_TILE_K, GEMM_TILE_N, GEMM_WARPS_M, GEMM_WARPS_N, GemmRows, gemm_partial_bytes};
use copy::TensorMaps;

/// Bytes per element of every instantiated type.
const ELEMENT_BYTES: u64 = 2;
/// 16-byte chunks per k-tile row (8: what the `Tile` swizzle needs).
const K_CHUNKS: u32 = GEMM_TILE_K / 8;
/// Output columns of one warp.
const WARP_N: u32 = GEMM_TILE_N / GEMM_WARPS_N;
/// n8 tiles per warp.
const NT: usize = WARP_N as usize / 8;

const _: () = assert!(K_CHUNKS == 8, "the Tile swizzle needs 8 chunks per row");
const _: () = assert!(WARP_N.is_multiple_of(16), "warp tiles are made of m16 × n16 blocks");
const _: () = assert!(
    GEMM_THREADS.is_multiple_of(8 * K_CHUNKS) && GEMM_THREADS.is_multiple_of(GEMM_TILE_N),
    "Tile::load_async_clipped needs THREADS to be a multiple of 8 × chunks (k-tiles and the output tile)"
);

/// Output rows of one warp with `MT` m16 tiles.
const fn warp_m(mt: usize) -> u32 {
    16 * mt as u32
}

/// Output rows of a CTA whose warps hold `MT` m16 tiles each (`BM`).
pub(super) const fn tile_m(mt: usize) -> u32 {
    GEMM_WARPS_M * warp_m(mt)
}

/// m16 tiles per warp of a CTA size.
const fn mt_of(rows: GemmRows) -> usize {
    (rows.rows() / (16 * GEMM_WARPS_M)) as usize
}

/// Bytes of one pipeline stage of a CTA with `MT` m16 tiles per warp.
const fn stage_bytes(mt: usize) -> u32 {
    (tile_m(mt) + GEMM_TILE_N) * GEMM_TILE_K * ELEMENT_BYTES as u32
}

/// Checks, at compile time, what every instantiation `(MT, STAGES)` relies on: the pipeline
/// depth the main loop supports, 16-row copy passes, and room to stage the output tile in
/// one pipeline stage. Evaluate as `const { check_shape(MT, STAGES) }`.
const fn check_shape(mt: usize, stages: u32) {
    assert!(mt >= 1 && (tile_m(mt) * K_CHUNKS).is_multiple_of(GEMM_THREADS), "whole copy passes per tile");
    assert!(stages == 2 || stages == 3, "the pipeline has 2 or 3 stages");
    assert!(
        epilogue::staging_bytes(mt) <= stage_bytes(mt),
        "the output tile (and GEMM-O's C tile, copied as the main loop's tail) fits in one stage"
    );
}

const _: () = {
    let mut i = 0;
    while i < GemmRows::ALL.len() {
        let rows = GemmRows::ALL[i];
        assert!(tile_m(mt_of(rows)) == rows.rows(), "each CTA size is whole m16 tiles per warp");
        assert!(stage_bytes(mt_of(rows)) == crate::abi::gemm_stage_bytes(rows), "host and device stage sizes agree");
        check_shape(mt_of(rows), rows.stages());
        let partial = mt_of(rows) as u64 * NT as u64 * 16 * GEMM_THREADS as u64;
        assert!(partial == gemm_partial_bytes(rows), "a split part's partial tile is its accumulators");
        assert!(partial <= (rows.stages() * stage_bytes(mt_of(rows))) as u64, "a partial tile fits in the stages");
        i += 1;
    }
};

/// A warp's f32 accumulators: `[m16 tile][n8 tile][mma C fragment]`.
type Accumulators<const MT: usize> = [[[f32; 4]; NT]; MT];

/// Defines the `extern "ptx-kernel"` entry `$name` that runs `$kernel` for element `$element`:
/// with `$rows`, the per-tile kernel instantiated for the CTA size `GemmRows::$rows`; without,
/// a kernel generic over the element only.
macro_rules! gemm_entry {
    ($name:ident, $kernel:ident, $element:ty, $rows:ident) => {
        gemm_entry!(
            @entry $name,
            concat!("Kernel entry: see [`", stringify!($kernel), "`] (`GemmRows::", stringify!($rows), "`)."),
            $kernel::<
                $element,
                { super::mt_of(crate::abi::GemmRows::$rows) },
                { crate::abi::GemmRows::$rows.stages() },
            >
        );
    };
    ($name:ident, $kernel:ident, $element:ty) => {
        gemm_entry!(@entry $name, concat!("Kernel entry: see [`", stringify!($kernel), "`]."), $kernel::<$element>);
    };
    (@entry $name:ident, $doc:expr, $($kernel:tt)*) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// Launched only by the host crate with a validated [`GemmParams`].
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(params: GemmParams) {
            let maps = super::copy::entry_tensor_maps!($name);
            maps.prefetch();
            // SAFETY: forwarded from the entry's contract.
            unsafe { $($kernel)*(&params, maps) }
        }
    };
}
use gemm_entry;
