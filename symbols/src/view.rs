//! Validated, borrowed read view over packed symbol buffers.

use crate::error::{SymbolError, SymbolKind};
use crate::geometry::SymbolGeometry;
use crate::index::{bit_in_byte, byte_of, caching_index, skip_index};
use crate::state::BlockState;
use crate::stats::DensityStats;

/// Borrowed view over packed S_c / S_s buffers whose layout has been checked
/// against a [`SymbolGeometry`].
///
/// Lookups come in two flavours: `try_*` methods return
/// [`SymbolError`] for out-of-range indices, the plain ones panic (like slice
/// indexing) and are meant for loops whose bounds come from the geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolsView<'a> {
    geom: SymbolGeometry<'a>,
    caching: &'a [u8],
    caching_indptr: &'a [u32],
    skip: &'a [u8],
    skip_indptr: &'a [u32],
}

/// Checks one packed buffer + byte indptr against the geometry.
fn validate(geom: &SymbolGeometry<'_>, symbol: SymbolKind, buf: &[u8], indptr: &[u32]) -> Result<(), SymbolError> {
    let requests = geom.num_requests();
    if indptr.len() != requests + 1 {
        return Err(SymbolError::IndptrLength { symbol, expected: requests + 1, got: indptr.len() });
    }
    if indptr[0] != 0 {
        return Err(SymbolError::IndptrStart { symbol, got: indptr[0] });
    }
    for (request, w) in indptr.windows(2).enumerate() {
        let (start, end) = (w[0], w[1]);
        if end < start {
            return Err(SymbolError::IndptrDecreasing { symbol, request, start, end });
        }
        let bits = geom.bits(symbol, request);
        let expected = bits.div_ceil(8);
        if end - start != expected {
            return Err(SymbolError::SegmentSize { symbol, request, bits, expected, got: end - start });
        }
    }
    let expected = indptr[requests] as usize;
    if buf.len() != expected {
        return Err(SymbolError::BufferLength { symbol, expected, got: buf.len() });
    }
    Ok(())
}

fn unwrap_or_panic<T>(r: Result<T, SymbolError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

impl<'a> SymbolsView<'a> {
    /// Validates the packed buffers and byte indptrs against `geom`.
    ///
    /// Checks, S_c first then S_s, in this order: indptr length is `B + 1`
    /// ([`SymbolError::IndptrLength`]), `indptr[0] == 0`
    /// ([`SymbolError::IndptrStart`]), indptr non-decreasing
    /// ([`SymbolError::IndptrDecreasing`]), each segment has exactly
    /// `ceil(bits / 8)` bytes ([`SymbolError::SegmentSize`]), and the buffer length
    /// equals `indptr[B]` ([`SymbolError::BufferLength`]). Padding bits are ignored.
    ///
    /// # Errors
    /// The first violated check, as listed above.
    pub fn new(
        geom: SymbolGeometry<'a>,
        caching: &'a [u8],
        caching_indptr: &'a [u32],
        skip: &'a [u8],
        skip_indptr: &'a [u32],
    ) -> Result<Self, SymbolError> {
        validate(&geom, SymbolKind::Caching, caching, caching_indptr)?;
        validate(&geom, SymbolKind::Skip, skip, skip_indptr)?;
        Ok(Self { geom, caching, caching_indptr, skip, skip_indptr })
    }

    /// The geometry the buffers were validated against.
    #[must_use]
    pub const fn geometry(&self) -> SymbolGeometry<'a> {
        self.geom
    }

    /// Packed S_c buffer (all requests).
    #[must_use]
    pub const fn caching(&self) -> &'a [u8] {
        self.caching
    }

    /// S_c byte indptr (`B + 1` entries).
    #[must_use]
    pub const fn caching_indptr(&self) -> &'a [u32] {
        self.caching_indptr
    }

    /// Packed S_s buffer (all requests).
    #[must_use]
    pub const fn skip(&self) -> &'a [u8] {
        self.skip
    }

    /// S_s byte indptr (`B + 1` entries).
    #[must_use]
    pub const fn skip_indptr(&self) -> &'a [u32] {
        self.skip_indptr
    }

    /// Packed S_c segment of request `b`, or `None` if `b >= B`.
    #[must_use]
    pub fn caching_segment(&self, b: usize) -> Option<&'a [u8]> {
        segment(self.caching, self.caching_indptr, b)
    }

    /// Packed S_s segment of request `b`, or `None` if `b >= B`.
    #[must_use]
    pub fn skip_segment(&self, b: usize) -> Option<&'a [u8]> {
        segment(self.skip, self.skip_indptr, b)
    }

    /// Reads a bit whose position has already been range-checked.
    fn bit(buf: &[u8], indptr: &[u32], b: usize, index: u32) -> bool {
        let byte = indptr[b] as usize + byte_of(index) as usize;
        // In range: the index was checked against the geometry and the segment
        // length against `ceil(bits / 8)` in `new`.
        bit_in_byte(buf[byte], index)
    }

    /// S_c(b, qb, h): `true` = computed, `false` = cached.
    ///
    /// # Errors
    /// [`SymbolError::RequestOutOfRange`], [`SymbolError::QBlockOutOfRange`] or
    /// [`SymbolError::HeadOutOfRange`].
    pub fn try_compute(&self, b: usize, qb: u32, h: u32) -> Result<bool, SymbolError> {
        self.geom.check_row(b, qb, h)?;
        let idx = caching_index(qb, h, self.geom.heads());
        Ok(Self::bit(self.caching, self.caching_indptr, b, idx))
    }

    /// S_c(b, qb, h), panicking on out-of-range indices.
    ///
    /// # Panics
    /// Where [`Self::try_compute`] would return an error.
    #[must_use]
    pub fn compute(&self, b: usize, qb: u32, h: u32) -> bool {
        unwrap_or_panic(self.try_compute(b, qb, h))
    }

    /// S_s(b, qb, h, kb): `true` = KV block `kb` is attended, `false` = dropped.
    ///
    /// # Errors
    /// As [`Self::try_compute`], plus [`SymbolError::KvBlockOutOfRange`].
    pub fn try_attend(&self, b: usize, qb: u32, h: u32, kb: u32) -> Result<bool, SymbolError> {
        self.geom.check_block(b, qb, h, kb)?;
        let idx = skip_index(qb, h, kb, self.geom.heads(), self.geom.num_kv_blocks(b));
        Ok(Self::bit(self.skip, self.skip_indptr, b, idx))
    }

    /// S_s(b, qb, h, kb), panicking on out-of-range indices.
    ///
    /// # Panics
    /// Where [`Self::try_attend`] would return an error.
    #[must_use]
    pub fn attend(&self, b: usize, qb: u32, h: u32, kb: u32) -> bool {
        unwrap_or_panic(self.try_attend(b, qb, h, kb))
    }

    /// Number of kept KV blocks in the S_s row (b, qb, h).
    ///
    /// # Errors
    /// As [`Self::try_compute`].
    pub fn try_kept_kv_blocks(&self, b: usize, qb: u32, h: u32) -> Result<u32, SymbolError> {
        self.geom.check_row(b, qb, h)?;
        let nk = self.geom.num_kv_blocks(b);
        let base = skip_index(qb, h, 0, self.geom.heads(), nk);
        let kept = (0..nk).filter(|&kb| Self::bit(self.skip, self.skip_indptr, b, base + kb)).count();
        // kept <= nk, which is a u32.
        Ok(u32::try_from(kept).unwrap_or(u32::MAX))
    }

    /// Combined [`BlockState`] of (b, qb, h).
    ///
    /// # Errors
    /// As [`Self::try_compute`].
    pub fn try_state(&self, b: usize, qb: u32, h: u32) -> Result<BlockState, SymbolError> {
        let compute = self.try_compute(b, qb, h)?;
        let kept = self.try_kept_kv_blocks(b, qb, h)?;
        Ok(BlockState::from_row(compute, kept, self.geom.num_kv_blocks(b)))
    }

    /// Combined [`BlockState`] of (b, qb, h), panicking on out-of-range indices.
    ///
    /// # Panics
    /// Where [`Self::try_state`] would return an error.
    #[must_use]
    pub fn state(&self, b: usize, qb: u32, h: u32) -> BlockState {
        unwrap_or_panic(self.try_state(b, qb, h))
    }

    /// Counts computed rows and kept KV blocks over the whole set. O(total S_s bits).
    #[must_use]
    pub fn stats(&self) -> DensityStats {
        let mut s = DensityStats::default();
        for b in 0..self.geom.num_requests() {
            let nk = u64::from(self.geom.num_kv_blocks(b));
            for qb in 0..self.geom.num_q_blocks(b) {
                for h in 0..self.geom.heads() {
                    let compute = self.compute(b, qb, h);
                    let kept = u64::from(unwrap_or_panic(self.try_kept_kv_blocks(b, qb, h)));
                    s.rows += 1;
                    s.kv_blocks += nk;
                    s.kept_kv_blocks += kept;
                    if compute {
                        s.computed_rows += 1;
                        s.computed_kv_blocks += nk;
                        s.kept_computed_kv_blocks += kept;
                    }
                }
            }
        }
        s
    }
}

fn segment<'a>(buf: &'a [u8], indptr: &[u32], b: usize) -> Option<&'a [u8]> {
    let start = *indptr.get(b)? as usize;
    let end = *indptr.get(b + 1)? as usize;
    buf.get(start..end)
}
