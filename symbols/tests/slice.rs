//! Property tests of head slicing (`slice_heads`) and the rank split (`rank_heads`).

mod common;

use common::{Case, case, logical_lengths};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolError, SymbolsView, rank_heads, slice_heads};
use proptest::prelude::*;

/// A case whose head count is `ranks * heads_per_rank`, plus the rank count.
fn split_case() -> impl Strategy<Value = (Case, u32)> {
    (1u32..=4, 1u32..=3, 2u32..=64, 2u32..=64, prop::collection::vec((0u32..=130, 0u32..=130), 0..=3))
        .prop_flat_map(|(ranks, per_rank, bq, bk, lens)| {
            let heads = ranks * per_rank;
            let requests: Vec<RequestShape> = lens.into_iter().map(|(q, k)| RequestShape::new(q, k)).collect();
            let (c, s) = logical_lengths(heads, bq, bk, &requests);
            (
                Just((ranks, heads, bq, bk, requests)),
                prop::collection::vec(any::<bool>(), c),
                prop::collection::vec(any::<bool>(), s),
            )
        })
        .prop_map(|((ranks, heads, block_q, block_kv, requests), caching, skip)| {
            (Case { heads, block_q, block_kv, requests, caching, skip }, ranks)
        })
}

fn packed(c: &Case) -> PackedSymbols {
    PackedSymbols::from_masks(&c.geometry(), &c.caching, &c.skip).unwrap()
}

/// Checks every bit of `slice` against `original` at head offset `start`.
fn check_slice(original: &SymbolsView<'_>, slice: &SymbolsView<'_>, start: u32) -> Result<(), TestCaseError> {
    let (g, sg) = (original.geometry(), slice.geometry());
    prop_assert_eq!(sg.block_q(), g.block_q());
    prop_assert_eq!(sg.block_kv(), g.block_kv());
    prop_assert_eq!(sg.requests(), g.requests());
    for b in 0..g.num_requests() {
        for qb in 0..g.num_q_blocks(b) {
            for h in 0..sg.heads() {
                prop_assert_eq!(slice.compute(b, qb, h), original.compute(b, qb, start + h));
                for kb in 0..g.num_kv_blocks(b) {
                    prop_assert_eq!(slice.attend(b, qb, h, kb), original.attend(b, qb, start + h, kb));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn slice_reads_the_offset_head(c in case(4), a in 0u32..4, len in 1u32..=4) {
        let p = packed(&c);
        let start = a % c.heads;
        let end = (start + len).min(c.heads);
        let s = slice_heads(&p.view(), start..end).unwrap();
        prop_assert_eq!(s.heads(), end - start);
        check_slice(&p.view(), &s.view(), start)?;
    }

    #[test]
    fn rank_slices_concatenate_to_the_original((c, ranks) in split_case()) {
        let p = packed(&c);
        let v = p.view();
        let per_rank = c.heads / ranks;
        let slices: Vec<PackedSymbols> = (0..ranks)
            .map(|rank| {
                let range = rank_heads(c.heads, ranks, rank).unwrap();
                assert_eq!(range, rank * per_rank..(rank + 1) * per_rank);
                slice_heads(&v, range).unwrap()
            })
            .collect();
        // Every bit through the views.
        let g = v.geometry();
        for b in 0..g.num_requests() {
            for qb in 0..g.num_q_blocks(b) {
                for h in 0..c.heads {
                    let (owner, local) = ((h / per_rank) as usize, h % per_rank);
                    let sv = slices[owner].view();
                    prop_assert_eq!(sv.compute(b, qb, local), v.compute(b, qb, h));
                    for kb in 0..g.num_kv_blocks(b) {
                        prop_assert_eq!(sv.attend(b, qb, local, kb), v.attend(b, qb, h, kb));
                    }
                }
            }
        }
        // The logical masks: per (request, query block), the ranks' rows in rank order are
        // exactly the original rows.
        let (mut caching, mut skip) = (Vec::new(), Vec::new());
        for b in 0..g.num_requests() {
            let nk = g.num_kv_blocks(b);
            for qb in 0..g.num_q_blocks(b) {
                for s in &slices {
                    let sv = s.view();
                    for h in 0..per_rank {
                        caching.push(sv.compute(b, qb, h));
                        skip.extend((0..nk).map(|kb| sv.attend(b, qb, h, kb)));
                    }
                }
            }
        }
        prop_assert_eq!(&caching, &c.caching);
        prop_assert_eq!(&skip, &c.skip);
    }

    #[test]
    fn one_rank_is_the_identity(c in case(4)) {
        let p = packed(&c);
        let range = rank_heads(c.heads, 1, 0).unwrap();
        prop_assert_eq!(range.clone(), 0..c.heads);
        let s = slice_heads(&p.view(), range).unwrap();
        prop_assert_eq!(s.caching(), p.caching());
        prop_assert_eq!(s.caching_indptr(), p.caching_indptr());
        prop_assert_eq!(s.skip(), p.skip());
        prop_assert_eq!(s.skip_indptr(), p.skip_indptr());
        prop_assert_eq!(&s, &p);
    }

    #[test]
    fn invalid_ranges_are_rejected(c in case(2), start in 0u32..8, end in 0u32..8) {
        let p = packed(&c);
        let result = slice_heads(&p.view(), start..end);
        if start < end && end <= c.heads {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result, Err(SymbolError::HeadRange { start, end, heads: c.heads }));
        }
    }

    #[test]
    fn invalid_splits_are_rejected(heads in 1u32..64, ranks in 0u32..10, rank in 0u32..12) {
        let result = rank_heads(heads, ranks, rank);
        if ranks == 0 || heads % ranks != 0 {
            prop_assert_eq!(result, Err(SymbolError::UnevenHeadSplit { heads, ranks }));
        } else if rank >= ranks {
            prop_assert_eq!(result, Err(SymbolError::RankOutOfRange { rank, ranks }));
        } else {
            let range = result.unwrap();
            prop_assert_eq!(range.end - range.start, heads / ranks);
            prop_assert_eq!(range.start, rank * (heads / ranks));
        }
    }
}

#[test]
fn zero_heads_and_messages() {
    assert_eq!(rank_heads(0, 1, 0), Err(SymbolError::ZeroHeads));
    let uneven = SymbolError::UnevenHeadSplit { heads: 24, ranks: 5 }.to_string();
    assert!(uneven.contains("24 heads") && uneven.contains("5 ranks"), "{uneven}");
    let rank = SymbolError::RankOutOfRange { rank: 4, ranks: 4 }.to_string();
    assert!(rank.contains("rank 4"), "{rank}");
    let range = SymbolError::HeadRange { start: 2, end: 9, heads: 8 }.to_string();
    assert!(range.contains("2..9") && range.contains("8 heads"), "{range}");
}
