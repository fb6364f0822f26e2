//! Split-K for GEMM-Q: the reduction of a tile cut into parts that run as separate CTAs, so
//! that a launch's last, partly filled wave is made of shorter work (see `GemmParams`).
//!
//! Every part stores its f32 accumulators as a partial tile, then arrives at its tile's
//! counter. The part that arrives last sums all the partials *in part order* (its own read back
//! like the others, so the sum, and the result, do not depend on which part came last), resets
//! the counter, and goes on to the epilogue; the others are done. Nobody waits for anybody,
//! so the parts need not be resident at the same time.
//!
//! A partial tile is laid out by thread: fragment `j` of thread `t` is the 16 bytes at
//! `(j · GEMM_THREADS + t) · 16`, so a warp's stores and loads are contiguous 512-byte runs and
//! each thread reads back exactly what the same thread of the other parts wrote. The last part
//! reads a partial by copying its own fragments into shared memory with `cp.async` (all of them
//! in flight at once, no registers held) and then adding them from there.

use super::{Accumulators, NT};
use crate::abi::{GEMM_THREADS, GemmParams, gemm_split_k_tiles};
use crate::device::ptx::{
    atomic_add_gpu, cp_async_16, cp_async_commit, cp_async_wait, fence_gpu, ld_shared_b32, ld_shared_v4, st_global_u32,
    st_global_v4, st_shared_b32, sync_threads, thread_index,
};

/// The work of one GEMM-Q CTA.
pub(super) struct WorkItem {
    /// Index of the output tile (into the tile list, or row-major without one).
    pub tile: u32,
    /// The k-tiles it multiplies, `[first, end)`.
    pub k_tiles: (u32, u32),
    /// `Some` for a part of a split tile.
    pub part: Option<Part>,
}

/// A CTA computing one part of a split tile.
pub(super) struct Part {
    /// This part's partial slot (`CTA index − split_first`).
    slot: u32,
    /// The slot of part 0 of the same tile.
    first_slot: u32,
    /// The tile's arrival counter (index into `GemmParams::arrivals`).
    counter: u32,
    /// Parts the tile is split into.
    parts: u32,
}

/// The work of CTA `block` in a reduction of `k_tiles` k-tiles.
#[inline(always)]
pub(super) fn work_item(p: &GemmParams, block: u32, k_tiles: u32) -> WorkItem {
    if p.splits <= 1 || block < p.split_first {
        return WorkItem { tile: block, k_tiles: (0, k_tiles), part: None };
    }
    let slot = block - p.split_first;
    let (counter, index) = (slot / p.splits, slot % p.splits);
    WorkItem {
        tile: p.split_first + counter,
        k_tiles: gemm_split_k_tiles(k_tiles, p.splits, index),
        part: Some(Part { slot, first_slot: slot - index, counter, parts: p.splits }),
    }
}

impl Part {
    /// Which part of its tile this is (0 for the first k-tiles).
    #[inline(always)]
    pub(super) const fn index(&self) -> u32 {
        self.slot - self.first_slot
    }
}

/// Byte offset of fragment `fragment` of thread `thread` in a partial tile.
#[inline(always)]
fn fragment_offset(fragment: usize, thread: u32) -> usize {
    (fragment * GEMM_THREADS as usize + thread as usize) * 16
}

/// Stores `acc` as `part`'s partial tile and arrives at the tile's counter. The part that
/// arrives last gets `acc` replaced by the sum of all parts of the tile (in part order, from
/// the partial tiles: its own is read back too) and
/// `true`; the others get `false` (and `acc` unchanged).
///
/// `smem` must be at least a partial tile (`tile_m(MT) · GEMM_TILE_N · 4` bytes) of the CTA's
/// shared memory and `flag` a 4-byte shared word outside it; both unused by anything in flight.
/// On return the CTA has passed a barrier after its last use of either.
///
/// Must be called by all threads of the CTA.
///
/// # Safety
/// `p` must describe a launch the host validated: `partials` holds the slots of every split
/// CTA and `arrivals` one zeroed counter per split tile; `smem`/`flag` as above.
#[inline(always)]
pub(super) unsafe fn combine_parts<const MT: usize>(
    p: &GemmParams,
    part: &Part,
    acc: &mut Accumulators<MT>,
    smem: u32,
    flag: u32,
) -> bool {
    let tid = thread_index();
    let slot_bytes = (MT * NT * 16) as u64 * GEMM_THREADS as u64;
    let slot = |index: u32| (p.partials + index as u64 * slot_bytes) as *mut u8;
    let offset = |mt: usize, nt: usize| fragment_offset(mt * NT + nt, tid);

    let mine = slot(part.slot);
    for (mt, row) in acc.iter().enumerate() {
        for (nt, fragment) in row.iter().enumerate() {
            // SAFETY: the slot holds MT · NT fragments of every thread (host-sized).
            unsafe { st_global_v4(mine.add(offset(mt, nt)), fragment.map(f32::to_bits)) };
        }
    }
    // Release: every thread's stores are ordered before the arrival that the barrier orders
    // after them.
    fence_gpu();
    sync_threads();
    if tid == 0 {
        // SAFETY: counter `part.counter` exists (one per split tile, host-sized).
        let counter = unsafe { (p.arrivals as *mut u32).add(part.counter as usize) };
        // SAFETY: as above.
        let last = unsafe { atomic_add_gpu(counter, 1) } + 1 == part.parts;
        if last {
            // Every part has arrived: nobody touches the counter again in this launch.
            // SAFETY: as above.
            unsafe { st_global_u32(counter, 0) };
        }
        // SAFETY: `flag` is a shared word reserved for this (caller's contract).
        unsafe { st_shared_b32(flag, last as u32) };
    }
    sync_threads();
    // SAFETY: written by thread 0 before the barrier.
    if unsafe { ld_shared_b32(flag) } == 0 {
        return false;
    }
    // Acquire: the other parts' partials are visible from here on.
    fence_gpu();

    // 0 + p0 + p1 + …: the same sum whichever part arrives last.
    *acc = [[[0.0; 4]; NT]; MT];
    let mut index = 0;
    while index < part.parts {
        let source = slot(part.first_slot + index);
        for mt in 0..MT {
            for nt in 0..NT {
                // SAFETY: the slot is a written partial tile; `smem` holds a partial tile.
                unsafe { cp_async_16(smem + offset(mt, nt) as u32, source.add(offset(mt, nt)), 16) };
            }
        }
        cp_async_commit();
        cp_async_wait::<0>();
        for (mt, row) in acc.iter_mut().enumerate() {
            for (nt, fragment) in row.iter_mut().enumerate() {
                // SAFETY: this thread's own copy of the fragment, landed above.
                let partial = unsafe { ld_shared_v4(smem + offset(mt, nt) as u32) };
                for (value, bits) in fragment.iter_mut().zip(&partial) {
                    *value += f32::from_bits(*bits);
                }
            }
        }
        index += 1;
    }
    // The caller's epilogue reuses the shared memory every thread just read.
    sync_threads();
    true
}
