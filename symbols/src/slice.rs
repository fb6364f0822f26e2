//! Head slicing for sequence parallelism (`alloc` feature).
//!
//! Under DeepSpeed-Ulysses style sequence parallelism each of `P` ranks runs attention on
//! every token but only on a contiguous subset of the heads. The symbols it needs are the
//! global symbols restricted to that subset: [`rank_heads`] gives the subset of a rank
//! (an equal contiguous split), [`slice_heads`] builds the restricted symbols.
//!
//! For a head range `start..end`, the sliced symbols have `end - start` heads, the same block
//! sizes and requests, and
//!
//! * S_c'(b, qb, h') = S_c(b, qb, start + h'),
//! * S_s'(b, qb, h', kb) = S_s(b, qb, start + h', kb).
//!
//! Because S_c is head-minor (`qb * H + h`) and S_s rows are `(qb * H + h) * nk + kb`, the
//! sliced bits of one query block are a contiguous run of the original; the result is
//! re-packed per request exactly like [`PackedSymbols::from_masks`] does (padding bits 0).

use alloc::vec::Vec;
use core::ops::Range;

use crate::error::SymbolError;
use crate::geometry::SymbolGeometry;
use crate::index::{caching_index, read_bit, skip_index};
use crate::packed::PackedSymbols;
use crate::view::SymbolsView;

/// The heads of rank `rank` when `total_heads` heads are split into `ranks` equal contiguous
/// ranges: `rank * H/P .. (rank + 1) * H/P`.
///
/// # Errors
/// [`SymbolError::ZeroHeads`] if `total_heads == 0`, [`SymbolError::UnevenHeadSplit`] if
/// `ranks == 0` or `total_heads % ranks != 0`, [`SymbolError::RankOutOfRange`] if
/// `rank >= ranks`.
pub fn rank_heads(total_heads: u32, ranks: u32, rank: u32) -> Result<Range<u32>, SymbolError> {
    if total_heads == 0 {
        return Err(SymbolError::ZeroHeads);
    }
    if ranks == 0 || !total_heads.is_multiple_of(ranks) {
        return Err(SymbolError::UnevenHeadSplit { heads: total_heads, ranks });
    }
    if rank >= ranks {
        return Err(SymbolError::RankOutOfRange { rank, ranks });
    }
    let per_rank = total_heads / ranks;
    // No overflow: rank < ranks, so (rank + 1) * per_rank <= total_heads.
    Ok(rank * per_rank..(rank + 1) * per_rank)
}

/// The symbols of the head subset `heads` of `symbols` (see the [module docs](self)).
///
/// The result is packed with zero padding bits, so slicing the full range `0..H` of symbols
/// whose padding bits are zero (everything built by [`PackedSymbols`]) reproduces the
/// buffers byte for byte.
///
/// # Errors
/// [`SymbolError::HeadRange`] if `heads` is empty or `heads.end` exceeds the head count.
pub fn slice_heads(symbols: &SymbolsView<'_>, heads: Range<u32>) -> Result<PackedSymbols, SymbolError> {
    let geometry = symbols.geometry();
    let total = geometry.heads();
    if heads.start >= heads.end || heads.end > total {
        return Err(SymbolError::HeadRange { start: heads.start, end: heads.end, heads: total });
    }
    let local = heads.end - heads.start;
    let sliced = SymbolGeometry::new(local, geometry.block_q(), geometry.block_kv(), geometry.requests())?;
    let requests = geometry.num_requests();
    let caching_len: usize = (0..requests).map(|b| sliced.caching_bits(b) as usize).sum();
    let skip_len: usize = (0..requests).map(|b| sliced.skip_bits(b) as usize).sum();
    let mut caching = Vec::with_capacity(caching_len);
    let mut skip = Vec::with_capacity(skip_len);
    for b in 0..requests {
        // Segments exist for every b < B, and every index below lies inside its segment
        // (validated by `SymbolsView::new`); a missing bit would read as 0.
        let caching_segment = symbols.caching_segment(b).unwrap_or(&[]);
        let skip_segment = symbols.skip_segment(b).unwrap_or(&[]);
        let nk = geometry.num_kv_blocks(b);
        for qb in 0..geometry.num_q_blocks(b) {
            for h in heads.clone() {
                caching.push(read_bit(caching_segment, caching_index(qb, h, total)).unwrap_or(false));
                let row = skip_index(qb, h, 0, total, nk);
                skip.extend((0..nk).map(|kb| read_bit(skip_segment, row + kb).unwrap_or(false)));
            }
        }
    }
    PackedSymbols::from_masks(&sliced, &caching, &skip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::RequestShape;

    #[test]
    fn rank_split() {
        assert_eq!(rank_heads(24, 4, 0), Ok(0..6));
        assert_eq!(rank_heads(24, 4, 3), Ok(18..24));
        assert_eq!(rank_heads(24, 1, 0), Ok(0..24));
        assert_eq!(rank_heads(24, 5, 0), Err(SymbolError::UnevenHeadSplit { heads: 24, ranks: 5 }));
        assert_eq!(rank_heads(24, 0, 0), Err(SymbolError::UnevenHeadSplit { heads: 24, ranks: 0 }));
        assert_eq!(rank_heads(24, 4, 4), Err(SymbolError::RankOutOfRange { rank: 4, ranks: 4 }));
        assert_eq!(rank_heads(0, 1, 0), Err(SymbolError::ZeroHeads));
        assert_eq!(rank_heads(u32::MAX, u32::MAX, u32::MAX - 1), Ok(u32::MAX - 1..u32::MAX));
    }

    #[test]
    fn slice_small() {
        let requests = [RequestShape::new(3, 5)];
        let g = SymbolGeometry::new(3, 2, 2, &requests).unwrap();
        let p = PackedSymbols::from_fn(&g, |_, qb, h| (qb + h) % 2 == 0, |_, qb, h, kb| (qb * 7 + h * 3 + kb) % 3 == 0);
        let s = slice_heads(&p.view(), 1..3).unwrap();
        assert_eq!(s.heads(), 2);
        let (v, sv) = (p.view(), s.view());
        for qb in 0..2 {
            for h in 0..2 {
                assert_eq!(sv.compute(0, qb, h), v.compute(0, qb, h + 1));
                for kb in 0..3 {
                    assert_eq!(sv.attend(0, qb, h, kb), v.attend(0, qb, h + 1, kb));
                }
            }
        }
        assert_eq!(slice_heads(&v, 2..2), Err(SymbolError::HeadRange { start: 2, end: 2, heads: 3 }));
        assert_eq!(slice_heads(&v, 1..4), Err(SymbolError::HeadRange { start: 1, end: 4, heads: 3 }));
    }
}
