//! Property tests: packing random masks and reading every bit back; stats vs direct counts.

mod common;

use common::{Case, case};
use flashomni_symbols::{BlockState, PackedSymbols, SymbolsView, unpack_segment};
use proptest::prelude::*;

/// Per-request offsets into the concatenated logical masks, with (nq, nk).
fn offsets(c: &Case) -> Vec<(usize, usize, u32, u32)> {
    let mut out = Vec::new();
    let (mut co, mut so) = (0, 0);
    for r in &c.requests {
        let nq = r.q_len.div_ceil(c.block_q);
        let nk = r.kv_len.div_ceil(c.block_kv);
        out.push((co, so, nq, nk));
        co += (nq * c.heads) as usize;
        so += (nq * c.heads * nk) as usize;
    }
    out
}

proptest! {
    #[test]
    fn pack_then_read_every_bit(c in case(4)) {
        let g = c.geometry();
        let p = PackedSymbols::from_masks(&g, &c.caching, &c.skip).unwrap();
        // Raw buffers pass validation on their own.
        let v = SymbolsView::new(g, p.caching(), p.caching_indptr(), p.skip(), p.skip_indptr()).unwrap();
        let h_n = c.heads;
        for (b, &(co, so, nq, nk)) in offsets(&c).iter().enumerate() {
            // Segment sizes and zero padding.
            let cseg = v.caching_segment(b).unwrap();
            let sseg = v.skip_segment(b).unwrap();
            let (cbits, sbits) = ((nq * h_n) as usize, (nq * h_n * nk) as usize);
            prop_assert_eq!(cseg.len(), cbits.div_ceil(8));
            prop_assert_eq!(sseg.len(), sbits.div_ceil(8));
            if cbits % 8 != 0 {
                prop_assert_eq!(cseg[cbits / 8] >> (cbits % 8), 0);
            }
            if sbits % 8 != 0 {
                prop_assert_eq!(sseg[sbits / 8] >> (sbits % 8), 0);
            }
            prop_assert_eq!(unpack_segment(cseg, cbits as u32), &c.caching[co..co + cbits]);
            prop_assert_eq!(unpack_segment(sseg, sbits as u32), &c.skip[so..so + sbits]);
            for qb in 0..nq {
                for h in 0..h_n {
                    let row = (qb * h_n + h) as usize;
                    prop_assert_eq!(v.compute(b, qb, h), c.caching[co + row]);
                    let mut kept = 0;
                    for kb in 0..nk {
                        let want = c.skip[so + row * nk as usize + kb as usize];
                        prop_assert_eq!(v.attend(b, qb, h, kb), want);
                        kept += u32::from(want);
                    }
                    let st = v.state(b, qb, h);
                    prop_assert_eq!(st.contains(BlockState::COMPUTE), c.caching[co + row]);
                    prop_assert_eq!(st.contains(BlockState::ATTENDS_ANY), kept > 0);
                    prop_assert_eq!(st.contains(BlockState::ATTENDS_ALL), kept == nk);
                }
            }
            prop_assert!(v.try_compute(b, nq, 0).is_err());
            prop_assert!(v.try_attend(b, 0, 0, nk).is_err());
        }
        // The closure constructor yields identical bytes.
        let offs = offsets(&c);
        let q = PackedSymbols::from_fn(
            &g,
            |b, qb, h| c.caching[offs[b].0 + (qb * c.heads + h) as usize],
            |b, qb, h, kb| {
                let nk = offs[b].3;
                c.skip[offs[b].1 + ((qb * c.heads + h) * nk + kb) as usize]
            },
        );
        prop_assert_eq!(&p, &q);
    }

    #[test]
    fn stats_match_direct_count(c in case(4)) {
        let g = c.geometry();
        let p = PackedSymbols::from_masks(&g, &c.caching, &c.skip).unwrap();
        let s = p.view().stats();
        let (mut rows, mut comp, mut kvb, mut kept, mut ckvb, mut ckept) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for &(co, so, nq, nk) in &offsets(&c) {
            for row in 0..(nq * c.heads) as usize {
                let on = c.caching[co + row];
                let k = c.skip[so + row * nk as usize..so + (row + 1) * nk as usize]
                    .iter()
                    .filter(|x| **x)
                    .count() as u64;
                rows += 1;
                kvb += u64::from(nk);
                kept += k;
                if on {
                    comp += 1;
                    ckvb += u64::from(nk);
                    ckept += k;
                }
            }
        }
        prop_assert_eq!((s.rows, s.computed_rows, s.kv_blocks), (rows, comp, kvb));
        prop_assert_eq!((s.kept_kv_blocks, s.computed_kv_blocks, s.kept_computed_kv_blocks), (kept, ckvb, ckept));
        let r = |n: u64, d: u64, e: f64| if d == 0 { e } else { n as f64 / d as f64 };
        prop_assert_eq!(s.caching_ratio(), r(rows - comp, rows, 0.0));
        prop_assert_eq!(s.kv_density(), r(kept, kvb, 1.0));
        prop_assert_eq!(s.kv_density_computed(), r(ckept, ckvb, 1.0));
        prop_assert!(s.caching_ratio().is_finite() && s.kv_density().is_finite());
    }

    #[test]
    fn dense_is_all_ones(c in case(3)) {
        let g = c.geometry();
        let d = PackedSymbols::dense(&g);
        let all_c = vec![true; c.caching.len()];
        let all_s = vec![true; c.skip.len()];
        prop_assert_eq!(&d, &PackedSymbols::from_masks(&g, &all_c, &all_s).unwrap());
        let s = d.view().stats();
        prop_assert_eq!(s.computed_rows, s.rows);
        prop_assert_eq!(s.kept_kv_blocks, s.kv_blocks);
    }
}
