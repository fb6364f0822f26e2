//! The GEMM epilogue shared by GEMM-Q and GEMM-O: f32 addends, rounding, and the output tile
//! written through a swizzled shared-memory staging tile.
//!
//! The staging tile is [`OUT_PANELS`] panels of 64 columns, each a 128-byte-swizzled
//! [`Tile`] of 8 chunks per row: the layout a tensor-memory copy writes and reads, so that on
//! `sm_90a` the `C` tile arrives and the output tile leaves as whole boxes.
//!
//! 1. When the launch has a `C` matrix, the main loop already copied its tile into the
//!    staging tile as its tail copies (the module's `load_c`, overlapping the last k-tiles; `C`
//!    is read once, so its lines enter L2 as the first to be evicted).
//! 2. Each lane adds `C` (read back from the staging tile) to its accumulators in f32 (the
//!    bias is already in them: they started at it, see `super::bias`), rounds, and writes the
//!    pairs into the staging tile (the swizzle makes both the 4-byte fragment accesses and the
//!    16-byte row reads conflict-free).
//! 3. A whole tile leaves through the module's bulk store when it has one (`sm_90a`: two
//!    boxes, clipped to the matrix by the copy engine). Otherwise the CTA writes it row by
//!    row with 16-byte streaming stores, skipping rows and columns past the matrix and every
//!    `(row, chunk)` the caller's predicate rejects.
//!
//! Keeping the streamed `C` and output out of L2's way leaves it to the operands that every
//! CTA of a row or column re-reads (docs/perf-journal.md, runs 28–29: GEMM-O active at r = 0.9 ~5%
//! faster).

use super::copy::StageSource;
use super::crew::Crew;
use super::math::fragment_origin;
use super::{Accumulators, ELEMENT_BYTES, K_CHUNKS, tile_m};
use crate::abi::{GEMM_THREADS, GEMM_TILE_N, GemmParams};
use crate::device::element::MmaElement;
use crate::device::ptx::{ld_shared_b32, ld_shared_v4, st_global_v4_streaming, st_shared_b32};
use crate::device::tile::Tile;

/// 16-byte chunks per output tile row.
pub(super) const OUT_CHUNKS: u32 = GEMM_TILE_N / 8;
/// Columns of one panel of the staged output tile (one 128-byte swizzled row).
pub(super) const PANEL_COLUMNS: u32 = K_CHUNKS * 8;
/// 64-column panels of the staged output tile.
pub(super) const OUT_PANELS: u32 = GEMM_TILE_N / PANEL_COLUMNS;

/// Bytes of the staged output tile of a CTA with `MT` m16 tiles per warp.
pub(super) const fn staging_bytes(mt: usize) -> u32 {
    tile_m(mt) * OUT_CHUNKS * 16
}

/// Panel `panel` (columns `64·panel …`) of the staged output tile at shared address `staging`.
#[inline(always)]
pub(super) const fn out_panel<const MT: usize>(staging: u32, panel: u32) -> Tile {
    Tile::at(staging + panel * tile_m(MT) * K_CHUNKS * 16, tile_m(MT), K_CHUNKS)
}

/// Shared address of logical chunk `chunk` (of [`OUT_CHUNKS`]) of row `row` of the staged tile.
#[inline(always)]
const fn staged_chunk<const MT: usize>(staging: u32, row: u32, chunk: u32) -> u32 {
    out_panel::<MT>(staging, chunk / K_CHUNKS).chunk_address(row, chunk % K_CHUNKS)
}

/// Writes the CTA's output tile at `source.origin()` (`m0`, `n0`): `out = acc + C` (when the
/// launch has `C`; the bias is already in `acc`), rounded to the element type. With `whole`,
/// every element inside the matrix is written; otherwise row `r` / chunk `j` of the tile
/// (columns `n0 + 8j … n0 + 8j + 7`) is written only if it exists and `writable(r, j)` holds.
///
/// The tile is staged at shared address `staging` ([`staging_bytes`], 1024-byte aligned);
/// when the launch has `C`, its tile must already have landed there and be visible to every
/// thread (the module's `load_c` and `wait_c`).
///
/// Must be called by all threads of `crew` (the threads that computed `acc`), after the main
/// loop (its shared memory may be reused).
///
/// # Safety
/// `p` must describe a launch the host validated (buffer sizes, 16-byte aligned rows) and
/// `source` be this CTA's; `staging` must lie in the CTA's dynamic shared memory as above.
#[inline(always)]
pub(super) unsafe fn epilogue<E: MmaElement, const MT: usize>(
    p: &GemmParams,
    source: &StageSource,
    mut acc: Accumulators<MT>,
    staging: u32,
    crew: Crew,
    whole: bool,
    writable: impl Fn(u32, u32) -> bool,
) {
    let tid = crew.thread;
    let lane = tid % 32;
    let warp = crew.warp();
    let (m0, n0) = source.origin();
    let rows = (p.m - m0).min(tile_m(MT));
    let chunks = ((p.n - n0) / 8).min(OUT_CHUNKS);
    let row_bytes = p.n as u64 * ELEMENT_BYTES;
    let corner = (m0 as u64 * p.n as u64 + n0 as u64) * ELEMENT_BYTES;
    let has_c = p.c != 0;

    // Shared address of the staged pair (`half` 0: row g, 1: row g + 8) of accumulator tile
    // (mt, nt).
    let pair_address = |mt: usize, nt: usize, half: usize| {
        let (row0, col0) = fragment_origin::<MT>(warp, mt);
        let row = row0 + lane / 4 + 8 * half as u32;
        let col = col0 + 8 * nt as u32 + 2 * (lane % 4);
        staged_chunk::<MT>(staging, row, col / 8) + (col % 8) * ELEMENT_BYTES as u32
    };

    if has_c {
        for (mt, row_tiles) in acc.iter_mut().enumerate() {
            for (nt, fragment) in row_tiles.iter_mut().enumerate() {
                for half in 0..2 {
                    // SAFETY: the address lies in the staging tile, loaded and visible.
                    let [lo, hi] = E::unpack(unsafe { ld_shared_b32(pair_address(mt, nt, half)) });
                    fragment[2 * half] += lo;
                    fragment[2 * half + 1] += hi;
                }
            }
        }
    }
    for (mt, row_tiles) in acc.iter().enumerate() {
        for (nt, fragment) in row_tiles.iter().enumerate() {
            for half in 0..2 {
                let packed = E::pack(fragment[2 * half], fragment[2 * half + 1]);
                // SAFETY: the address lies in the staging tile; this lane is the only one
                // reading or writing these 4 bytes.
                unsafe { st_shared_b32(pair_address(mt, nt, half), packed) };
            }
        }
    }
    // SAFETY: the staged tile is complete in this thread's part; the store's contract is
    // this function's.
    if whole && unsafe { source.store_tile::<MT>(staging, crew) } {
        return;
    }
    crew.sync();

    let out = p.out as *mut u8;
    let mut i = 0;
    while i < tile_m(MT) * OUT_CHUNKS / GEMM_THREADS {
        let linear = tid + i * GEMM_THREADS;
        let (row, chunk) = (linear / OUT_CHUNKS, linear % OUT_CHUNKS);
        if row < rows && chunk < chunks && writable(row, chunk) {
            // SAFETY: the chunk was staged above; the destination is element
            // (m0 + row, n0 + 8·chunk) of the [m, n] output, 16-byte aligned.
            unsafe {
                let value = ld_shared_v4(staged_chunk::<MT>(staging, row, chunk));
                let dst = out.add((corner + row as u64 * row_bytes + chunk as u64 * 16) as usize);
                st_global_v4_streaming(dst, value);
            }
        }
        i += 1;
    }
}
