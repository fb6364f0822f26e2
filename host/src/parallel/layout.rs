//! The strided-copy layout of a Ulysses all-to-all, and its enqueueing: which rows of a
//! token shard `[T/P, H, D]` go to which peer's chunk of the send buffer (pack), and back from
//! the staging buffer into the shard (unpack), each as the shape of one `cuMemcpy2D`. The
//! layout is pure bookkeeping, the same on every rank, and is tested on the CPU against a
//! reference all-to-all (`tests/tests/reference_ulysses.rs`).

use core::mem::size_of;

use cust::stream::Stream;
use cust::sys::{CUDA_MEMCPY2D, CUmemorytype};

use crate::element::Plain;
use crate::error::{Error, Result};
use crate::launch::check;

/// A strided copy between two element buffers, counted in elements: for every
/// `row < rows`, `dst[dst_offset + row·dst_pitch ..][..width] =
/// src[src_offset + row·src_pitch ..][..width]` (the shape of one `cuMemcpy2D`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StridedCopy {
    /// First source element.
    pub src_offset: usize,
    /// Elements between the starts of consecutive source rows.
    pub src_pitch: usize,
    /// First destination element.
    pub dst_offset: usize,
    /// Elements between the starts of consecutive destination rows.
    pub dst_pitch: usize,
    /// Elements per row.
    pub width: usize,
    /// Number of rows.
    pub rows: usize,
}

/// The layout of one tensor's Ulysses all-to-all: `ranks` shards of `tokens_per_rank` tokens,
/// `heads` heads of `head_dim` elements. Pure bookkeeping, the same on every rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UlyssesLayout {
    ranks: usize,
    heads: usize,
    head_dim: usize,
    tokens_per_rank: usize,
}

impl UlyssesLayout {
    /// Validates a layout.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] if `ranks` or `head_dim` is 0, `heads` is not a positive
    /// multiple of `ranks`, or the shard size overflows `usize`.
    pub fn new(ranks: u32, heads: u32, head_dim: u32, tokens_per_rank: u32) -> Result<Self> {
        if ranks == 0 || heads == 0 || !heads.is_multiple_of(ranks) {
            return Err(Error::InvalidShape(format!(
                "{heads} heads cannot be split into equal contiguous ranges over {ranks} ranks"
            )));
        }
        if head_dim == 0 {
            return Err(Error::InvalidShape("head_dim must be positive".into()));
        }
        let layout = Self {
            ranks: ranks as usize,
            heads: heads as usize,
            head_dim: head_dim as usize,
            tokens_per_rank: tokens_per_rank as usize,
        };
        let shard = layout
            .tokens_per_rank
            .checked_mul(layout.heads)
            .and_then(|n| n.checked_mul(layout.head_dim))
            .and_then(|n| n.checked_mul(layout.ranks));
        if shard.is_none() {
            return Err(Error::InvalidShape("the all-to-all buffers overflow usize".into()));
        }
        Ok(layout)
    }

    /// Number of ranks `P`.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Total heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Heads per rank `H/P`.
    pub fn local_heads(&self) -> usize {
        self.heads / self.ranks
    }

    /// Elements per head `D`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Tokens per shard `T/P`.
    pub fn tokens_per_rank(&self) -> usize {
        self.tokens_per_rank
    }

    /// Elements of one token shard `[T/P, H, D]` (also of the send and staging buffers).
    pub fn shard_elements(&self) -> usize {
        self.tokens_per_rank * self.heads * self.head_dim
    }

    /// Elements exchanged with one peer: `[T/P, H/P, D]`.
    pub fn chunk_elements(&self) -> usize {
        self.tokens_per_rank * self.local_heads() * self.head_dim
    }

    /// Elements of the head-sliced full sequence `[T, H/P, D]` (equal to
    /// [`Self::shard_elements`]).
    pub fn local_elements(&self) -> usize {
        self.ranks * self.chunk_elements()
    }

    /// Copies from a token shard `[T/P, H, D]` into a send buffer of `P` contiguous chunks
    /// `[T/P, H/P, D]`, chunk `j` holding heads `j·H/P .. (j+1)·H/P` (one copy per peer).
    pub fn pack_copies(&self) -> Vec<StridedCopy> {
        let row = self.local_heads() * self.head_dim;
        (0..self.ranks)
            .map(|j| StridedCopy {
                src_offset: j * row,
                src_pitch: self.heads * self.head_dim,
                dst_offset: j * self.chunk_elements(),
                dst_pitch: row,
                width: row,
                rows: self.tokens_per_rank,
            })
            .collect()
    }

    /// The inverse of [`Self::pack_copies`]: from `P` contiguous chunks `[T/P, H/P, D]` (chunk
    /// `j` = heads of rank `j`) back into a token shard `[T/P, H, D]`.
    pub fn unpack_copies(&self) -> Vec<StridedCopy> {
        self.pack_copies()
            .into_iter()
            .map(|c| StridedCopy {
                src_offset: c.dst_offset,
                src_pitch: c.dst_pitch,
                dst_offset: c.src_offset,
                dst_pitch: c.src_pitch,
                width: c.width,
                rows: c.rows,
            })
            .collect()
    }
}

/// Enqueues `copy` between device buffers of `T` at `src` and `dst` on `stream`.
///
/// # Safety
/// Both buffers must be device memory of the current context covering every element the copy
/// touches, alive until the stream has run the copy, and must not overlap.
unsafe fn copy_on_device<T: Plain>(copy: &StridedCopy, src: u64, dst: u64, stream: &Stream) -> Result<()> {
    if copy.rows == 0 || copy.width == 0 {
        return Ok(());
    }
    let e = size_of::<T>();
    let descriptor = CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: core::ptr::null(),
        srcDevice: src + (copy.src_offset * e) as u64,
        srcArray: core::ptr::null_mut(),
        srcPitch: copy.src_pitch * e,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: core::ptr::null_mut(),
        dstDevice: dst + (copy.dst_offset * e) as u64,
        dstArray: core::ptr::null_mut(),
        dstPitch: copy.dst_pitch * e,
        WidthInBytes: copy.width * e,
        Height: copy.rows,
    };
    // SAFETY: the caller guarantees both ranges; the driver reads the descriptor before
    // returning.
    let status = unsafe { cust::sys::cuMemcpy2DAsync_v2(&descriptor, stream.as_inner()) };
    check(status, "enqueueing a strided all-to-all copy")
}

/// Runs every copy of `copies` from `src` to `dst`.
///
/// # Safety
/// As for [`copy_on_device`], for every copy.
pub(super) unsafe fn copy_all<T: Plain>(copies: &[StridedCopy], src: u64, dst: u64, stream: &Stream) -> Result<()> {
    for copy in copies {
        // SAFETY: forwarded from the caller.
        unsafe { copy_on_device::<T>(copy, src, dst, stream) }?;
    }
    Ok(())
}
