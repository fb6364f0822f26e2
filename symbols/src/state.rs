//! Named per-(request, query block, head) state derived from both symbols.

bitflags::bitflags! {
    /// Summary of one (request, query block, head) row of the symbols.
    ///
    /// The `ATTENDS_*` flags describe the S_s row itself and are set independently
    /// of `COMPUTE` (kernels never read the S_s row of a cached block).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct BlockState: u8 {
        /// S_c = 1: the block is computed now (attention runs, GEMM-Q writes its Q
        /// tile, GEMM-O dispatch mode includes the head). Unset = cached/reused.
        const COMPUTE = 1 << 0;
        /// At least one KV block of the row has S_s = 1. A computed row without it
        /// produces zeros and LSE = -inf.
        const ATTENDS_ANY = 1 << 1;
        /// Every KV block of the row has S_s = 1 (dense row). Vacuously set when
        /// the request has no KV blocks (`kv_len == 0`).
        const ATTENDS_ALL = 1 << 2;
    }
}

impl BlockState {
    /// Builds the state of a row from its S_c bit, its number of kept KV blocks
    /// and the request's KV block count `nk` (`kept <= nk`).
    #[must_use]
    pub const fn from_row(compute: bool, kept: u32, nk: u32) -> Self {
        let mut bits = 0;
        if compute {
            bits |= Self::COMPUTE.bits();
        }
        if kept > 0 {
            bits |= Self::ATTENDS_ANY.bits();
        }
        if kept >= nk {
            bits |= Self::ATTENDS_ALL.bits();
        }
        Self::from_bits_retain(bits)
    }

    /// `true` if the block is cached (S_c = 0): nothing is computed or written.
    #[must_use]
    pub const fn is_cached(self) -> bool {
        !self.contains(Self::COMPUTE)
    }

    /// `true` if the block is computed but every KV block is dropped, so the
    /// attention output is all zeros and the LSE is -inf.
    #[must_use]
    pub const fn is_computed_empty(self) -> bool {
        self.contains(Self::COMPUTE) && !self.contains(Self::ATTENDS_ANY)
    }

    /// `true` if the block is computed with every KV block kept (dense attention).
    #[must_use]
    pub const fn is_computed_dense(self) -> bool {
        self.contains(Self::COMPUTE.union(Self::ATTENDS_ALL))
    }
}

#[cfg(test)]
mod tests {
    use super::BlockState;

    #[test]
    fn from_row() {
        let s = BlockState::from_row(true, 3, 3);
        assert_eq!(s, BlockState::all());
        assert!(s.is_computed_dense() && !s.is_cached() && !s.is_computed_empty());
        let s = BlockState::from_row(true, 0, 3);
        assert_eq!(s, BlockState::COMPUTE);
        assert!(s.is_computed_empty());
        let s = BlockState::from_row(false, 1, 3);
        assert_eq!(s, BlockState::ATTENDS_ANY);
        assert!(s.is_cached() && !s.is_computed_dense());
        assert_eq!(BlockState::from_row(true, 0, 0), BlockState::COMPUTE | BlockState::ATTENDS_ALL);
    }
}
