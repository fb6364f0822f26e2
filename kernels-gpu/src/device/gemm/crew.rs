//! The threads that run a GEMM epilogue together: the whole CTA (one warpgroup, CTA barrier
//! 0) in the per-tile kernels, or one consumer warpgroup of the warp-specialized GEMM-O
//! ([`super::o_wide`]), which synchronizes on a named barrier of its own so that the other
//! warpgroup and the producer warp run on.

use crate::abi::GEMM_THREADS;
use crate::device::ptx::{sync_named, thread_index};

/// A group of [`GEMM_THREADS`] consecutive threads of the CTA (whole warps) and the barrier
/// they synchronize on.
#[derive(Clone, Copy)]
pub(super) struct Crew {
    /// This thread's index within the crew.
    pub thread: u32,
    /// The hardware barrier the crew synchronizes on.
    barrier: u32,
}

impl Crew {
    /// Crew number `index` (threads `index · GEMM_THREADS …`), synchronizing on barrier
    /// `index`; crew 0 of a [`GEMM_THREADS`]-thread CTA is the whole CTA on barrier 0.
    #[inline(always)]
    pub(super) fn number(index: u32) -> Self {
        Self { thread: thread_index() - index * GEMM_THREADS, barrier: index }
    }

    /// Waits until every thread of the crew has arrived; orders their shared-memory accesses.
    #[inline(always)]
    pub(super) fn sync(&self) {
        sync_named(self.barrier, GEMM_THREADS);
    }

    /// This thread's warp within the crew.
    #[inline(always)]
    pub(super) const fn warp(&self) -> u32 {
        self.thread / 32
    }
}
