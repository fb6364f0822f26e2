//! Owned packed symbols (`alloc` feature): building packed buffers from masks.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{SymbolError, SymbolKind};
use crate::geometry::{RequestShape, SymbolGeometry};
use crate::index::{caching_index, packed_len, read_bit, skip_index};
use crate::view::SymbolsView;

/// Packs one logical segment LSB-first (element `k` -> byte `k / 8`, bit `k % 8`)
/// into `ceil(len / 8)` bytes; padding bits are 0.
#[must_use]
pub fn pack_segment(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (k, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
        out[k / 8] |= 1 << (k % 8);
    }
    out
}

/// Unpacks the first `bits` logical elements of an LSB-first segment; bits past
/// the end of `segment` read as `false`.
#[must_use]
pub fn unpack_segment(segment: &[u8], bits: u32) -> Vec<bool> {
    (0..bits).map(|i| read_bit(segment, i).unwrap_or(false)).collect()
}

/// Owned packed S_c / S_s buffers plus the geometry they were built for.
///
/// Always consistent with its geometry, so [`Self::view`] cannot fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedSymbols {
    heads: u32,
    block_q: u32,
    block_kv: u32,
    requests: Vec<RequestShape>,
    caching: Vec<u8>,
    caching_indptr: Vec<u32>,
    skip: Vec<u8>,
    skip_indptr: Vec<u32>,
}

impl PackedSymbols {
    /// Allocates all-zero buffers (everything cached, every KV block dropped).
    fn zeros(geom: &SymbolGeometry<'_>) -> Self {
        let n = geom.num_requests();
        let mut caching_indptr = Vec::with_capacity(n + 1);
        let mut skip_indptr = Vec::with_capacity(n + 1);
        let (mut c, mut s) = (0u32, 0u32);
        caching_indptr.push(0);
        skip_indptr.push(0);
        for b in 0..n {
            c += geom.caching_bytes(b);
            s += geom.skip_bytes(b);
            caching_indptr.push(c);
            skip_indptr.push(s);
        }
        Self {
            heads: geom.heads(),
            block_q: geom.block_q(),
            block_kv: geom.block_kv(),
            requests: geom.requests().to_vec(),
            caching: vec![0; c as usize],
            caching_indptr,
            skip: vec![0; s as usize],
            skip_indptr,
        }
    }

    fn set(buf: &mut [u8], indptr: &[u32], b: usize, index: u32) {
        buf[indptr[b] as usize + (index / 8) as usize] |= 1 << (index % 8);
    }

    /// Builds the symbols by evaluating `caching(b, qb, h)` for every S_c bit and
    /// `skip(b, qb, h, kb)` for every S_s bit (in logical order).
    #[must_use]
    pub fn from_fn(
        geom: &SymbolGeometry<'_>,
        mut caching: impl FnMut(usize, u32, u32) -> bool,
        mut skip: impl FnMut(usize, u32, u32, u32) -> bool,
    ) -> Self {
        let mut out = Self::zeros(geom);
        let heads = geom.heads();
        for b in 0..geom.num_requests() {
            let nk = geom.num_kv_blocks(b);
            for qb in 0..geom.num_q_blocks(b) {
                for h in 0..heads {
                    if caching(b, qb, h) {
                        Self::set(&mut out.caching, &out.caching_indptr, b, caching_index(qb, h, heads));
                    }
                    for kb in 0..nk {
                        if skip(b, qb, h, kb) {
                            let i = skip_index(qb, h, kb, heads, nk);
                            Self::set(&mut out.skip, &out.skip_indptr, b, i);
                        }
                    }
                }
            }
        }
        out
    }

    /// Builds the symbols from logical masks: per request, `caching` holds the
    /// `[nq][H]` S_c matrix and `skip` the `[nq][H][nk]` S_s tensor (row-major);
    /// requests are concatenated.
    ///
    /// # Errors
    /// [`SymbolError::MaskLength`] if a mask does not have exactly
    /// `Σ nq·H` resp. `Σ nq·H·nk` elements.
    pub fn from_masks(geom: &SymbolGeometry<'_>, caching: &[bool], skip: &[bool]) -> Result<Self, SymbolError> {
        let n = geom.num_requests();
        let c_len: usize = (0..n).map(|b| geom.caching_bits(b) as usize).sum();
        let s_len: usize = (0..n).map(|b| geom.skip_bits(b) as usize).sum();
        if caching.len() != c_len {
            return Err(SymbolError::MaskLength { symbol: SymbolKind::Caching, expected: c_len, got: caching.len() });
        }
        if skip.len() != s_len {
            return Err(SymbolError::MaskLength { symbol: SymbolKind::Skip, expected: s_len, got: skip.len() });
        }
        let mut out = Self::zeros(geom);
        let (mut c_off, mut s_off) = (0usize, 0usize);
        for b in 0..n {
            let (cb, sb) = (geom.caching_bits(b) as usize, geom.skip_bits(b) as usize);
            write_segment(&mut out.caching, &out.caching_indptr, b, &caching[c_off..c_off + cb]);
            write_segment(&mut out.skip, &out.skip_indptr, b, &skip[s_off..s_off + sb]);
            c_off += cb;
            s_off += sb;
        }
        Ok(out)
    }

    /// All-ones symbols: every block computed, every KV block attended (dense).
    #[must_use]
    pub fn dense(geom: &SymbolGeometry<'_>) -> Self {
        Self::from_fn(geom, |_, _, _| true, |_, _, _, _| true)
    }

    /// The geometry these buffers were built for.
    #[must_use]
    pub fn geometry(&self) -> SymbolGeometry<'_> {
        match SymbolGeometry::new(self.heads, self.block_q, self.block_kv, &self.requests) {
            Ok(g) => g,
            Err(e) => unreachable!("geometry was validated at construction: {e}"),
        }
    }

    /// Validated read view over the buffers.
    #[must_use]
    pub fn view(&self) -> SymbolsView<'_> {
        match SymbolsView::new(self.geometry(), &self.caching, &self.caching_indptr, &self.skip, &self.skip_indptr) {
            Ok(v) => v,
            Err(e) => unreachable!("buffers are consistent by construction: {e}"),
        }
    }

    /// Number of heads.
    #[must_use]
    pub const fn heads(&self) -> u32 {
        self.heads
    }

    /// Query block size in tokens.
    #[must_use]
    pub const fn block_q(&self) -> u32 {
        self.block_q
    }

    /// KV block size in tokens.
    #[must_use]
    pub const fn block_kv(&self) -> u32 {
        self.block_kv
    }

    /// Per-request sequence lengths.
    #[must_use]
    pub fn requests(&self) -> &[RequestShape] {
        &self.requests
    }

    /// Packed S_c buffer.
    #[must_use]
    pub fn caching(&self) -> &[u8] {
        &self.caching
    }

    /// S_c byte indptr (`B + 1` entries, `u32`; the kernels read it as int32/uint32).
    #[must_use]
    pub fn caching_indptr(&self) -> &[u32] {
        &self.caching_indptr
    }

    /// Packed S_s buffer.
    #[must_use]
    pub fn skip(&self) -> &[u8] {
        &self.skip
    }

    /// S_s byte indptr (`B + 1` entries).
    #[must_use]
    pub fn skip_indptr(&self) -> &[u32] {
        &self.skip_indptr
    }
}

fn write_segment(buf: &mut [u8], indptr: &[u32], b: usize, bits: &[bool]) {
    let start = indptr[b] as usize;
    let packed = pack_segment(bits);
    debug_assert_eq!(packed.len(), packed_len(bits.len() as u32) as usize);
    buf[start..start + packed.len()].copy_from_slice(&packed);
}
