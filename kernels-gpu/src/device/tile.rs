//! Swizzled shared-memory tiles of 16-bit elements and the fragment addressing of the
//! tensor-core instructions that read them. Shared by every tensor-core kernel.
//!
//! A tile row is `chunks` 16-byte chunks (8 elements each; `chunks` is a multiple of 8). Chunk
//! `c` of row `r` is stored at chunk `c ^ (r % 8)`, so the 8 rows an `ldmatrix` phase reads, or
//! the 8 rows a warp's 16-byte copies write, always fall in 8 distinct bank groups.

use super::ptx::{cp_async_16, cp_async_16_with_policy, thread_index};

/// A `rows × chunks·8` tile of 16-bit elements at a shared address. The sizes are plain fields:
/// kernels build tiles from constants, so they fold away after inlining.
#[derive(Clone, Copy)]
pub struct Tile {
    base: u32,
    rows: u32,
    chunks: u32,
}

impl Tile {
    /// The `rows × chunks·8` tile at shared address `base` (1024-byte aligned keeps the
    /// swizzle bank-exact); `chunks` must be a multiple of 8.
    #[inline(always)]
    pub const fn at(base: u32, rows: u32, chunks: u32) -> Self {
        Self { base, rows, chunks }
    }

    /// Bytes the tile occupies.
    #[inline(always)]
    pub const fn bytes(&self) -> u32 {
        self.rows * self.chunks * 16
    }

    /// Shared address just past the tile.
    #[inline(always)]
    pub const fn end(&self) -> u32 {
        self.base + self.bytes()
    }

    /// Shared address of logical chunk `chunk` of row `row`.
    #[inline(always)]
    pub const fn chunk_address(&self, row: u32, chunk: u32) -> u32 {
        self.base + row * self.chunks * 16 + ((chunk ^ (row % 8)) << 4)
    }

    /// Copies the tile's rows from global memory (row `r` at `global + r * row_stride` bytes)
    /// with `THREADS` threads; rows at or past `valid_rows` are zero-filled.
    ///
    /// Thread `t` copies chunk `t % chunks` of rows `t / chunks + i · (THREADS / chunks)`:
    /// `THREADS` must be a multiple of `8 · chunks`, so that a thread's rows share one swizzle
    /// and its addresses advance by constants (no per-copy address registers).
    ///
    /// # Safety
    /// The first `valid_rows` rows must be readable, 16-byte aligned device memory of
    /// `chunks * 16` bytes each; the tile must lie inside the CTA's shared memory.
    #[inline(always)]
    pub unsafe fn load_async<const THREADS: u32>(&self, global: *const u8, row_stride: u64, valid_rows: u32) {
        // SAFETY: forwarded; every chunk of a valid row is readable.
        unsafe { self.load_async_clipped::<THREADS>(global, row_stride, valid_rows, self.chunks) }
    }

    /// Like [`Tile::load_async`], and in addition chunks at or past `valid_chunks` of every
    /// row are zero-filled (a ragged right edge, such as a GEMM's K tail).
    ///
    /// # Safety
    /// In each of the first `valid_rows` rows, the first `valid_chunks` chunks must be
    /// readable, 16-byte aligned device memory; the tile must lie inside the CTA's shared
    /// memory.
    #[inline(always)]
    pub unsafe fn load_async_clipped<const THREADS: u32>(
        &self,
        global: *const u8,
        row_stride: u64,
        valid_rows: u32,
        valid_chunks: u32,
    ) {
        // SAFETY: forwarded.
        unsafe { self.copy_rows::<THREADS>(global, row_stride, valid_rows, valid_chunks, None) }
    }

    /// Like [`Tile::load_async_clipped`], for data that no CTA needs from L2 for long (read
    /// once, or only by CTAs running at the same time): the copies bring the lines into L2 as
    /// the first to be evicted ([`super::ptx::evict_first_policy`]), so that they do not push out operands
    /// that CTAs re-read over the whole launch.
    ///
    /// Only the portable module copies tiles this way; `sm_90a` uses tensor-memory copies.
    ///
    /// # Safety
    /// As for [`Tile::load_async_clipped`].
    #[cfg(not(target_feature = "sm_90a"))]
    #[inline(always)]
    pub unsafe fn load_async_clipped_evict_first<const THREADS: u32>(
        &self,
        global: *const u8,
        row_stride: u64,
        valid_rows: u32,
        valid_chunks: u32,
    ) {
        let policy = super::ptx::evict_first_policy();
        // SAFETY: forwarded.
        unsafe { self.copy_rows::<THREADS>(global, row_stride, valid_rows, valid_chunks, Some(policy)) }
    }

    /// The copies of [`Tile::load_async_clipped`], each under the L2 cache `policy` when one is
    /// given (the callers pass a constant choice, so the branch folds away).
    ///
    /// # Safety
    /// As for [`Tile::load_async_clipped`].
    #[inline(always)]
    unsafe fn copy_rows<const THREADS: u32>(
        &self,
        global: *const u8,
        row_stride: u64,
        valid_rows: u32,
        valid_chunks: u32,
        policy: Option<u64>,
    ) {
        let tid = thread_index();
        let rows_per_pass = THREADS / self.chunks;
        let (first_row, chunk) = (tid / self.chunks, tid % self.chunks);
        let shared = self.chunk_address(first_row, chunk);
        let source = global as u64 + first_row as u64 * row_stride + chunk as u64 * 16;
        let chunk_valid = chunk < valid_chunks;
        let mut i = 0;
        while i < self.rows / rows_per_pass {
            let row = first_row + i * rows_per_pass;
            let (src, bytes) = if chunk_valid && row < valid_rows {
                ((source + (i * rows_per_pass) as u64 * row_stride) as *const u8, 16)
            } else {
                (global, 0)
            };
            // SAFETY: the chunk lies in the tile (its swizzle is the first row's, as rows
            // differ by multiples of 8); the source is valid or not read (0 bytes).
            unsafe {
                let chunk_address = shared + i * rows_per_pass * self.row_bytes();
                match policy {
                    None => cp_async_16(chunk_address, src, bytes),
                    Some(policy) => cp_async_16_with_policy(chunk_address, src, bytes, policy),
                }
            };
            i += 1;
        }
    }

    /// This lane's `ldmatrix.x4` address for the A fragments of rows `row0..row0+16` at chunk 0;
    /// the fragment at chunk `2k` is [`Tile::at_chunk`]`(base, 2k)`, and 16 rows further down
    /// is `+ 16 * row_bytes`. Deriving every address from one base keeps the compiler from
    /// holding one register per fragment address.
    #[inline(always)]
    pub const fn a_fragment_base(&self, row0: u32, lane: u32) -> u32 {
        self.a_fragment_address(row0, 0, lane)
    }

    /// This lane's `ldmatrix.x4` (no transpose) base for the B fragments of rows
    /// `row0..row0+16` of a `[n][k]` tile at chunk 0; see [`Tile::a_fragment_base`].
    #[inline(always)]
    pub const fn b_fragment_base(&self, row0: u32, lane: u32) -> u32 {
        self.b_fragment_address(row0, 0, lane)
    }

    /// This lane's `ldmatrix.x4.trans` base for the B fragments of rows `row0..row0+16` of a
    /// `[k][n]` tile at chunk 0; see [`Tile::a_fragment_base`].
    #[inline(always)]
    pub const fn b_fragment_trans_base(&self, row0: u32, lane: u32) -> u32 {
        self.b_fragment_address_trans(row0, 0, lane)
    }

    /// The address of the fragment `chunk` chunks (an even number) to the right of a fragment
    /// base. The swizzle is an XOR on the chunk bits, which the base's row offset leaves
    /// zero, and a base's own chunk is 0 or 1, so moving by an even chunk count is an XOR.
    #[inline(always)]
    pub const fn at_chunk(base: u32, chunk: u32) -> u32 {
        base ^ (chunk << 4)
    }

    /// Bytes per row.
    #[inline(always)]
    pub const fn row_bytes(&self) -> u32 {
        self.chunks * 16
    }

    /// Address this lane passes to `ldmatrix.x4` for the m16k16 A fragment whose top-left
    /// element is (`row0`, chunk `chunk0`) of a row-major `[m][k]` tile.
    #[inline(always)]
    pub const fn a_fragment_address(&self, row0: u32, chunk0: u32, lane: u32) -> u32 {
        self.chunk_address(row0 + lane % 16, chunk0 + lane / 16)
    }

    /// Address this lane passes to `ldmatrix.x4` (no transpose) for the B fragments of two
    /// n8k16 tiles stored as rows `[n][k]` starting at (`row0`, chunk `chunk0`): registers
    /// 0,1 feed n-tile `row0..row0+8`, registers 2,3 n-tile `row0+8..row0+16`.
    #[inline(always)]
    pub const fn b_fragment_address(&self, row0: u32, chunk0: u32, lane: u32) -> u32 {
        self.chunk_address(row0 + lane % 8 + (lane / 16) * 8, chunk0 + (lane / 8) % 2)
    }

    /// Address this lane passes to `ldmatrix.x4.trans` for the B fragments of two n8k16 tiles
    /// stored as rows `[k][n]` starting at (`row0`, chunk `chunk0`): registers 0,1 feed the
    /// n-tile at chunk `chunk0`, registers 2,3 the one at chunk `chunk0 + 1`.
    #[inline(always)]
    pub const fn b_fragment_address_trans(&self, row0: u32, chunk0: u32, lane: u32) -> u32 {
        self.chunk_address(row0 + lane % 8 + ((lane / 8) % 2) * 8, chunk0 + lane / 16)
    }
}
