//! Shared proptest strategies for the symbol tests.

use flashomni_symbols::{RequestShape, SymbolGeometry, blocks};
use proptest::prelude::*;

/// A random geometry plus random logical masks of exactly the right lengths.
#[derive(Clone, Debug)]
pub struct Case {
    pub heads: u32,
    pub block_q: u32,
    pub block_kv: u32,
    pub requests: Vec<RequestShape>,
    pub caching: Vec<bool>,
    pub skip: Vec<bool>,
}

impl Case {
    pub fn geometry(&self) -> SymbolGeometry<'_> {
        SymbolGeometry::new(self.heads, self.block_q, self.block_kv, &self.requests).unwrap()
    }
}

/// Logical lengths computed directly from the definitions (independent of the crate's geometry).
pub fn logical_lengths(heads: u32, bq: u32, bk: u32, reqs: &[RequestShape]) -> (usize, usize) {
    let mut c = 0;
    let mut s = 0;
    for r in reqs {
        let nq = r.q_len.div_ceil(bq) as usize;
        let nk = r.kv_len.div_ceil(bk) as usize;
        c += nq * heads as usize;
        s += nq * heads as usize * nk;
    }
    debug_assert_eq!(blocks(1, 1), 1);
    (c, s)
}

pub fn case(max_requests: usize) -> impl Strategy<Value = Case> {
    (1u32..=4, 2u32..=64, 2u32..=64, prop::collection::vec((0u32..=130, 0u32..=130), 0..=max_requests))
        .prop_flat_map(|(heads, bq, bk, lens)| {
            let requests: Vec<RequestShape> = lens.into_iter().map(|(q, k)| RequestShape::new(q, k)).collect();
            let (c, s) = logical_lengths(heads, bq, bk, &requests);
            (
                Just((heads, bq, bk, requests)),
                prop::collection::vec(any::<bool>(), c),
                prop::collection::vec(any::<bool>(), s),
            )
        })
        .prop_map(|((heads, block_q, block_kv, requests), caching, skip)| Case {
            heads,
            block_q,
            block_kv,
            requests,
            caching,
            skip,
        })
}
