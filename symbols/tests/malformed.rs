//! Property tests: every kind of corruption of a valid packed set is rejected with
//! the matching error variant.

mod common;

use common::case;
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolError, SymbolGeometry, SymbolKind, SymbolsView};
use proptest::prelude::*;
use proptest::sample::Index;

#[derive(Clone, Debug)]
enum Corruption {
    /// Append (`true`) or remove (`false`) an indptr entry.
    IndptrLen(bool),
    /// Set `indptr[0]` to a positive value.
    NonzeroFirst(u32),
    /// Make `indptr[r + 1] < indptr[r]` at a request whose start offset is positive.
    Decreasing(Index),
    /// Move an interior indptr entry forward by 1 (the previous segment grows).
    ShiftInterior(Index),
    /// Drop bytes from the end of the buffer.
    Truncate(usize),
    /// Append trailing bytes.
    Extend(usize),
    /// Validate against a geometry where one request has more KV tokens.
    LongerKv(Index),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        any::<bool>().prop_map(Corruption::IndptrLen),
        (1u32..1000).prop_map(Corruption::NonzeroFirst),
        any::<Index>().prop_map(Corruption::Decreasing),
        any::<Index>().prop_map(Corruption::ShiftInterior),
        (1usize..=4).prop_map(Corruption::Truncate),
        (1usize..=4).prop_map(Corruption::Extend),
        any::<Index>().prop_map(Corruption::LongerKv),
    ]
}

proptest! {
    #[test]
    fn corrupted_sets_are_rejected(c in case(4), which in any::<bool>(), bad in corruption()) {
        let g = c.geometry();
        let p = PackedSymbols::from_masks(&g, &c.caching, &c.skip).unwrap();
        let symbol = if which { SymbolKind::Skip } else { SymbolKind::Caching };
        let (mut buf, mut ip) = match symbol {
            SymbolKind::Caching => (p.caching().to_vec(), p.caching_indptr().to_vec()),
            SymbolKind::Skip => (p.skip().to_vec(), p.skip_indptr().to_vec()),
        };
        let n = c.requests.len();
        let mut reqs = c.requests.clone();
        let expected = match bad {
            Corruption::IndptrLen(grow) => {
                if grow {
                    ip.push(*ip.last().unwrap());
                } else {
                    ip.pop();
                }
                SymbolError::IndptrLength { symbol, expected: n + 1, got: ip.len() }
            }
            Corruption::NonzeroFirst(v) => {
                ip[0] = v;
                SymbolError::IndptrStart { symbol, got: v }
            }
            Corruption::Decreasing(i) => {
                let cands: Vec<usize> = (0..n).filter(|&r| ip[r] > 0).collect();
                prop_assume!(!cands.is_empty());
                let r = cands[i.index(cands.len())];
                let start = ip[r];
                ip[r + 1] = start - 1;
                SymbolError::IndptrDecreasing { symbol, request: r, start, end: start - 1 }
            }
            Corruption::ShiftInterior(i) => {
                // Candidates: interior entries k (1 <= k < n) with room to move forward.
                let cands: Vec<usize> = (1..n).filter(|&k| ip[k] < ip[k + 1]).collect();
                prop_assume!(!cands.is_empty());
                let k = cands[i.index(cands.len())];
                ip[k] += 1;
                let bits = g.bits(symbol, k - 1);
                SymbolError::SegmentSize {
                    symbol,
                    request: k - 1,
                    bits,
                    expected: bits.div_ceil(8),
                    got: bits.div_ceil(8) + 1,
                }
            }
            Corruption::Truncate(d) => {
                prop_assume!(buf.len() >= d);
                buf.truncate(buf.len() - d);
                SymbolError::BufferLength { symbol, expected: buf.len() + d, got: buf.len() }
            }
            Corruption::Extend(d) => {
                buf.extend(std::iter::repeat_n(0u8, d));
                SymbolError::BufferLength { symbol, expected: buf.len() - d, got: buf.len() }
            }
            Corruption::LongerKv(i) => {
                prop_assume!(n > 0);
                let r = i.index(n);
                let nq = reqs[r].q_len.div_ceil(c.block_q);
                prop_assume!(nq > 0);
                // Enough extra KV blocks to need at least one more packed byte.
                let nk = reqs[r].kv_len.div_ceil(c.block_kv);
                let new_nk = nk + 8;
                reqs[r] = RequestShape::new(reqs[r].q_len, new_nk * c.block_kv);
                let bits = nq * c.heads * new_nk;
                let old = (nq * c.heads * nk).div_ceil(8);
                // The corrupted geometry only changes S_s; S_c stays valid.
                SymbolError::SegmentSize {
                    symbol: SymbolKind::Skip,
                    request: r,
                    bits,
                    expected: bits.div_ceil(8),
                    got: old,
                }
            }
        };
        let geom = SymbolGeometry::new(c.heads, c.block_q, c.block_kv, &reqs).unwrap();
        let got = match symbol {
            SymbolKind::Caching => SymbolsView::new(geom, &buf, &ip, p.skip(), p.skip_indptr()),
            SymbolKind::Skip => SymbolsView::new(geom, p.caching(), p.caching_indptr(), &buf, &ip),
        };
        prop_assert_eq!(got.map(|_| ()), Err(expected));
    }
}
