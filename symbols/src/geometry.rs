//! Shape bookkeeping: how many blocks, bits and bytes each request's symbols have.

use crate::error::{SymbolError, SymbolKind};
use crate::index::{blocks, packed_len};

/// Sequence lengths of one request, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RequestShape {
    /// Number of query tokens.
    pub q_len: u32,
    /// Number of key/value tokens.
    pub kv_len: u32,
}

impl RequestShape {
    /// Convenience constructor.
    #[must_use]
    pub const fn new(q_len: u32, kv_len: u32) -> Self {
        Self { q_len, kv_len }
    }
}

/// Validated symbol geometry: head count, block sizes and per-request lengths.
///
/// Invariants established by [`SymbolGeometry::new`]:
/// * `heads`, `block_q` and `block_kv` are positive;
/// * for every request the S_c and S_s bit counts fit in `u32`, and so do the
///   total packed byte counts (the indptrs are `u32`).
///
/// An empty request list is allowed (both indptrs are then `[0]`), and so are
/// zero-length requests: `q_len == 0` gives `nq = 0` (empty segments),
/// `kv_len == 0` gives `nk = 0` (empty S_s segment, S_c still has `nq * H` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolGeometry<'a> {
    heads: u32,
    block_q: u32,
    block_kv: u32,
    requests: &'a [RequestShape],
}

impl<'a> SymbolGeometry<'a> {
    /// Validates and builds a geometry.
    ///
    /// # Errors
    /// [`SymbolError::ZeroHeads`], [`SymbolError::ZeroBlockSize`], or
    /// [`SymbolError::TooLarge`] when a bit count or the total byte count of a
    /// symbol does not fit in `u32`.
    pub fn new(heads: u32, block_q: u32, block_kv: u32, requests: &'a [RequestShape]) -> Result<Self, SymbolError> {
        if heads == 0 {
            return Err(SymbolError::ZeroHeads);
        }
        if block_q == 0 {
            return Err(SymbolError::ZeroBlockSize { query: true });
        }
        if block_kv == 0 {
            return Err(SymbolError::ZeroBlockSize { query: false });
        }
        let (mut c_total, mut s_total) = (0u64, 0u64);
        for (request, r) in requests.iter().enumerate() {
            let nq = u64::from(blocks(r.q_len, block_q));
            let nk = u64::from(blocks(r.kv_len, block_kv));
            // Both products fit in u64 (u32 · u32, then ≤ 2³² · u32 once `c_bits` passed its
            // check below, which runs first).
            let c_bits = nq * u64::from(heads);
            c_total += c_bits.div_ceil(8);
            if c_bits > u64::from(u32::MAX) || c_total > u64::from(u32::MAX) {
                return Err(SymbolError::TooLarge { symbol: SymbolKind::Caching, request });
            }
            let s_bits = c_bits * nk;
            s_total += s_bits.div_ceil(8);
            if s_bits > u64::from(u32::MAX) || s_total > u64::from(u32::MAX) {
                return Err(SymbolError::TooLarge { symbol: SymbolKind::Skip, request });
            }
        }
        Ok(Self { heads, block_q, block_kv, requests })
    }

    /// Number of heads `H` (query heads = KV heads in sparse mode).
    #[must_use]
    pub const fn heads(&self) -> u32 {
        self.heads
    }

    /// Query block size `Bq` in tokens.
    #[must_use]
    pub const fn block_q(&self) -> u32 {
        self.block_q
    }

    /// KV block size `Bk` in tokens.
    #[must_use]
    pub const fn block_kv(&self) -> u32 {
        self.block_kv
    }

    /// Per-request sequence lengths.
    #[must_use]
    pub const fn requests(&self) -> &'a [RequestShape] {
        self.requests
    }

    /// Number of requests `B`.
    #[must_use]
    pub const fn num_requests(&self) -> usize {
        self.requests.len()
    }

    /// Shape of request `b`, or `None` if `b >= B`.
    #[must_use]
    pub fn request(&self, b: usize) -> Option<RequestShape> {
        self.requests.get(b).copied()
    }

    fn req(&self, b: usize) -> RequestShape {
        match self.requests.get(b) {
            Some(r) => *r,
            None => panic!("request {b} out of range ({} requests)", self.requests.len()),
        }
    }

    /// Query block count `nq = ceil(q_len / Bq)` of request `b`.
    ///
    /// # Panics
    /// If `b >= B` (use [`Self::request`] for a checked lookup).
    #[must_use]
    pub fn num_q_blocks(&self, b: usize) -> u32 {
        blocks(self.req(b).q_len, self.block_q)
    }

    /// KV block count `nk = ceil(kv_len / Bk)` of request `b`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn num_kv_blocks(&self, b: usize) -> u32 {
        blocks(self.req(b).kv_len, self.block_kv)
    }

    /// Logical S_c bit count of request `b`: `nq * H`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn caching_bits(&self, b: usize) -> u32 {
        // Fits in u32: checked in `new`.
        self.num_q_blocks(b) * self.heads
    }

    /// Logical S_s bit count of request `b`: `nq * H * nk`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn skip_bits(&self, b: usize) -> u32 {
        self.caching_bits(b) * self.num_kv_blocks(b)
    }

    /// Packed S_c byte length of request `b`: `ceil(nq * H / 8)`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn caching_bytes(&self, b: usize) -> u32 {
        packed_len(self.caching_bits(b))
    }

    /// Packed S_s byte length of request `b`: `ceil(nq * H * nk / 8)`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn skip_bytes(&self, b: usize) -> u32 {
        packed_len(self.skip_bits(b))
    }

    /// Expected S_c byte indptr entry `b` (`0 <= b <= B`): the sum of the packed
    /// segment lengths of requests `0..b`. O(b).
    ///
    /// # Panics
    /// If `b > B`.
    #[must_use]
    pub fn caching_indptr_at(&self, b: usize) -> u32 {
        assert!(b <= self.requests.len(), "indptr entry {b} out of range");
        (0..b).map(|i| self.caching_bytes(i)).sum()
    }

    /// Expected S_s byte indptr entry `b` (`0 <= b <= B`). O(b).
    ///
    /// # Panics
    /// If `b > B`.
    #[must_use]
    pub fn skip_indptr_at(&self, b: usize) -> u32 {
        assert!(b <= self.requests.len(), "indptr entry {b} out of range");
        (0..b).map(|i| self.skip_bytes(i)).sum()
    }

    /// Total packed S_c length in bytes (`caching_indptr_at(B)`).
    #[must_use]
    pub fn caching_bytes_total(&self) -> u32 {
        self.caching_indptr_at(self.requests.len())
    }

    /// Total packed S_s length in bytes (`skip_indptr_at(B)`).
    #[must_use]
    pub fn skip_bytes_total(&self) -> u32 {
        self.skip_indptr_at(self.requests.len())
    }

    /// Logical bit count of `symbol` for request `b`.
    ///
    /// # Panics
    /// If `b >= B`.
    #[must_use]
    pub fn bits(&self, symbol: SymbolKind, b: usize) -> u32 {
        match symbol {
            SymbolKind::Caching => self.caching_bits(b),
            SymbolKind::Skip => self.skip_bits(b),
        }
    }

    /// Checks `(b, qb, h)` against the geometry.
    ///
    /// # Errors
    /// [`SymbolError::RequestOutOfRange`], [`SymbolError::QBlockOutOfRange`] or
    /// [`SymbolError::HeadOutOfRange`].
    pub fn check_row(&self, b: usize, qb: u32, h: u32) -> Result<(), SymbolError> {
        let Some(r) = self.requests.get(b) else {
            return Err(SymbolError::RequestOutOfRange { request: b, requests: self.requests.len() });
        };
        let nq = blocks(r.q_len, self.block_q);
        if qb >= nq {
            return Err(SymbolError::QBlockOutOfRange { request: b, q_block: qb, num_q_blocks: nq });
        }
        if h >= self.heads {
            return Err(SymbolError::HeadOutOfRange { head: h, heads: self.heads });
        }
        Ok(())
    }

    /// Checks `(b, qb, h, kb)` against the geometry.
    ///
    /// # Errors
    /// As [`Self::check_row`], plus [`SymbolError::KvBlockOutOfRange`].
    pub fn check_block(&self, b: usize, qb: u32, h: u32, kb: u32) -> Result<(), SymbolError> {
        self.check_row(b, qb, h)?;
        let nk = self.num_kv_blocks(b);
        if kb >= nk {
            return Err(SymbolError::KvBlockOutOfRange { request: b, kv_block: kb, num_kv_blocks: nk });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_sizes() {
        let r = [RequestShape::new(1, 1)];
        assert_eq!(SymbolGeometry::new(0, 1, 1, &r), Err(SymbolError::ZeroHeads));
        assert_eq!(SymbolGeometry::new(1, 0, 1, &r), Err(SymbolError::ZeroBlockSize { query: true }));
        assert_eq!(SymbolGeometry::new(1, 1, 0, &r), Err(SymbolError::ZeroBlockSize { query: false }));
    }

    #[test]
    fn rejects_overflow() {
        let r = [RequestShape::new(1 << 20, 1 << 20)];
        assert_eq!(
            SymbolGeometry::new(8, 1, 1, &r),
            Err(SymbolError::TooLarge { symbol: SymbolKind::Skip, request: 0 })
        );
        let r = [RequestShape::new(u32::MAX, 0)];
        assert_eq!(
            SymbolGeometry::new(2, 1, 1, &r),
            Err(SymbolError::TooLarge { symbol: SymbolKind::Caching, request: 0 })
        );
        // S_c far too large: its bit count is rejected before the S_s product (2⁶⁸) is formed.
        let r = [RequestShape::new(1 << 24, u32::MAX)];
        assert_eq!(
            SymbolGeometry::new(1 << 16, 1, 1, &r),
            Err(SymbolError::TooLarge { symbol: SymbolKind::Caching, request: 0 })
        );
        // Each request fits but the total byte count does not.
        let r = [RequestShape::new(1 << 16, (1 << 16) - 1); 9];
        assert_eq!(
            SymbolGeometry::new(1, 1, 1, &r),
            Err(SymbolError::TooLarge { symbol: SymbolKind::Skip, request: 8 })
        );
    }

    #[test]
    fn flux_sizes() {
        // Spec §3.2 worked sizes: 4608 tokens, H = 24 -> 108 B of S_c, 3888 B of S_s.
        let r = [RequestShape::new(4608, 4608)];
        let g = SymbolGeometry::new(24, 128, 128, &r).unwrap();
        assert_eq!(g.num_q_blocks(0), 36);
        assert_eq!(g.caching_bytes_total(), 108);
        assert_eq!(g.skip_bytes_total(), 3888);
        let r = [RequestShape::new(16_896, 16_896)];
        let g = SymbolGeometry::new(24, 128, 128, &r).unwrap();
        assert_eq!(g.caching_bytes_total(), 396);
        assert_eq!(g.skip_bytes_total(), 52_272);
    }

    #[test]
    fn empty_and_zero_length() {
        let g = SymbolGeometry::new(3, 128, 128, &[]).unwrap();
        assert_eq!(g.caching_bytes_total(), 0);
        assert_eq!(g.skip_indptr_at(0), 0);
        let r = [RequestShape::new(0, 10), RequestShape::new(10, 0), RequestShape::new(10, 10)];
        let g = SymbolGeometry::new(3, 128, 128, &r).unwrap();
        assert_eq!((g.caching_bits(0), g.skip_bits(0)), (0, 0));
        assert_eq!((g.caching_bits(1), g.skip_bits(1)), (3, 0));
        assert_eq!((g.caching_bits(2), g.skip_bits(2)), (3, 3));
        assert_eq!([0, 1, 2, 3].map(|b| g.caching_indptr_at(b)), [0, 0, 1, 2]);
        assert_eq!([0, 1, 2, 3].map(|b| g.skip_indptr_at(b)), [0, 0, 0, 1]);
        assert_eq!(
            g.check_row(0, 0, 0),
            Err(SymbolError::QBlockOutOfRange { request: 0, q_block: 0, num_q_blocks: 0 })
        );
        assert_eq!(
            g.check_block(1, 0, 2, 0),
            Err(SymbolError::KvBlockOutOfRange { request: 1, kv_block: 0, num_kv_blocks: 0 })
        );
        assert_eq!(g.check_row(3, 0, 0), Err(SymbolError::RequestOutOfRange { request: 3, requests: 3 }));
        assert_eq!(g.check_row(2, 0, 3), Err(SymbolError::HeadOutOfRange { head: 3, heads: 3 }));
        assert_eq!(g.check_block(2, 0, 2, 0), Ok(()));
    }
}
