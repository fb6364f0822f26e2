//! The GEMM epilogue shared by GEMM-Q and GEMM-O: f32 addends, rounding, and 16-byte stores
//! through a swizzled shared-memory staging tile.
//!
//! 1. When the launch has a `C` matrix, its tile is copied (`cp.async`, edges zero-filled) into
//!    the staging tile, which lives in the drained pipeline's shared memory: by the main loop
//!    as its tail copies ([`load_c_tile`], overlapping the last k-tiles) when the tile fits in
//!    one stage ([`c_in_stage`]), otherwise here. `C` is read once, so its lines enter L2 as
//!    the first to be evicted.
//! 2. Each lane adds `C` (read back from the staging tile) and the bias vector to its
//!    accumulators in f32, rounds, and writes the pairs into the staging tile (the swizzle
//!    makes both the 4-byte fragment accesses and the 16-byte row reads conflict-free).
//! 3. The CTA writes the tile row by row with 16-byte streaming stores (no CTA reads the
//!    output back), skipping rows and columns past the matrix and every `(row, chunk)` the
//!    caller's predicate rejects.
//!
//! Keeping the streamed `C` and output out of L2's way leaves it to the operands that every
//! CTA of a row or column re-reads (docs/PERF.md, runs 28–29: GEMM-O active at r = 0.9 ~5%
//! faster).

use super::math::fragment_origin;
use super::{Accumulators, ELEMENT_BYTES, stage_bytes, tile_m};
use crate::abi::{GEMM_THREADS, GEMM_TILE_N, GemmParams};
use crate::device::element::MmaElement;
use crate::device::ptx::{
    cp_async_commit, cp_async_wait, ld_shared_b32, ld_shared_v4, st_global_v4_streaming, st_shared_b32, sync_threads,
    thread_index,
};
use crate::device::tile::Tile;

/// 16-byte chunks per output tile row.
const OUT_CHUNKS: u32 = GEMM_TILE_N / 8;

/// Whether the staged output tile of a CTA with `MT` m16 tiles per warp fits in one pipeline
/// stage, so that the main loop can copy the `C` tile there as its tail copies.
pub(super) const fn c_in_stage(mt: usize) -> bool {
    tile_m(mt) * OUT_CHUNKS * 16 <= stage_bytes(mt)
}

/// Issues (does not commit) the `cp.async` copies of the CTA's `C` tile at (`m0`, `n0`) into
/// the staging tile at shared address `staging`; edges are zero-filled.
///
/// # Safety
/// `p` must describe a validated launch with a `C` matrix; `staging` must be the base of
/// `tile_m(MT) · GEMM_TILE_N · 2` bytes of the CTA's shared memory, 1024-byte aligned.
#[inline(always)]
pub(super) unsafe fn load_c_tile<const MT: usize>(p: &GemmParams, m0: u32, n0: u32, staging: u32) {
    let rows = (p.m - m0).min(tile_m(MT));
    let chunks = ((p.n - n0) / 8).min(OUT_CHUNKS);
    let row_bytes = p.n as u64 * ELEMENT_BYTES;
    let corner = (m0 as u64 * p.n as u64 + n0 as u64) * ELEMENT_BYTES;
    // SAFETY: rows below `rows` and chunks below `chunks` lie inside C ([m, n]); the rest is
    // zero-filled.
    unsafe {
        Tile::at(staging, tile_m(MT), OUT_CHUNKS).load_async_clipped_evict_first::<GEMM_THREADS>(
            (p.c as *const u8).add(corner as usize),
            row_bytes,
            rows,
            chunks,
        );
    }
}

/// Writes the CTA's output tile at (`m0`, `n0`): `out = acc + C + bias` (the addends a launch
/// has), rounded to the element type. Row `r` / chunk `j` of the tile (columns
/// `n0 + 8j … n0 + 8j + 7`) is written only if it exists and `writable(r, j)` holds.
///
/// The tile is staged at shared address `staging` (`tile_m(MT) · GEMM_TILE_N · 2` bytes,
/// 1024-byte aligned); `c_staged` says that the `C` tile already landed there (and is visible
/// to every thread), copied by [`load_c_tile`] as the main loop's tail.
///
/// Must be called by all threads of the CTA, after [`super::mainloop::mainloop`] (its shared
/// memory is reused).
///
/// # Safety
/// `p` must describe a launch the host validated (buffer sizes, 16-byte aligned rows, a bias
/// holding `n` elements); `staging` must lie in the CTA's dynamic shared memory as above.
#[inline(always)]
pub(super) unsafe fn epilogue<E: MmaElement, const MT: usize>(
    p: &GemmParams,
    mut acc: Accumulators<MT>,
    m0: u32,
    n0: u32,
    staging: u32,
    c_staged: bool,
    writable: impl Fn(u32, u32) -> bool,
) {
    let tid = thread_index();
    let lane = tid % 32;
    let warp = tid / 32;
    let rows = (p.m - m0).min(tile_m(MT));
    let chunks = ((p.n - n0) / 8).min(OUT_CHUNKS);
    let row_bytes = p.n as u64 * ELEMENT_BYTES;
    let corner = (m0 as u64 * p.n as u64 + n0 as u64) * ELEMENT_BYTES;
    let staging = Tile::at(staging, tile_m(MT), OUT_CHUNKS);

    let has_c = p.c != 0;
    if has_c && !c_staged {
        // SAFETY: a validated launch with C; the staging tile is the caller's.
        unsafe { load_c_tile::<MT>(p, m0, n0, staging.chunk_address(0, 0)) };
        cp_async_commit();
        cp_async_wait::<0>();
        sync_threads();
    }

    // Shared address of the staged pair (`half` 0: row g, 1: row g + 8) of accumulator tile
    // (mt, nt).
    let pair_address = |mt: usize, nt: usize, half: usize| {
        let (row0, col0) = fragment_origin::<MT>(warp, mt);
        let row = row0 + lane / 4 + 8 * half as u32;
        let col = col0 + 8 * nt as u32 + 2 * (lane % 4);
        staging.chunk_address(row, col / 8) + (col % 8) * ELEMENT_BYTES as u32
    };

    if p.bias != 0 {
        for (mt, row_tiles) in acc.iter_mut().enumerate() {
            let col0 = n0 + fragment_origin::<MT>(warp, mt).1 + 2 * (lane % 4);
            for (nt, fragment) in row_tiles.iter_mut().enumerate() {
                let col = col0 + 8 * nt as u32;
                if col < p.n {
                    // SAFETY: `col` is even and below `n`, and `n` is a multiple of 8, so both
                    // elements are inside the bias, whose address is 4-byte aligned.
                    let [lo, hi] = E::unpack(unsafe { *(p.bias as *const u32).add(col as usize / 2) });
                    for half in 0..2 {
                        fragment[2 * half] += lo;
                        fragment[2 * half + 1] += hi;
                    }
                }
            }
        }
    }
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
    sync_threads();

    let out = p.out as *mut u8;
    let mut i = 0;
    while i < tile_m(MT) * OUT_CHUNKS / GEMM_THREADS {
        let linear = tid + i * GEMM_THREADS;
        let (row, chunk) = (linear / OUT_CHUNKS, linear % OUT_CHUNKS);
        if row < rows && chunk < chunks && writable(row, chunk) {
            // SAFETY: the chunk was staged above; the destination is element
            // (m0 + row, n0 + 8·chunk) of the [m, n] output, 16-byte aligned.
            unsafe {
                let value = ld_shared_v4(staging.chunk_address(row, chunk));
                let dst = out.add((corner + row as u64 * row_bytes + chunk as u64 * 16) as usize);
                st_global_v4_streaming(dst, value);
            }
        }
        i += 1;
    }
}
