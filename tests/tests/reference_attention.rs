//! The attention reference against independent naive formulas.

use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::random::{Init, random_bf16_vec, random_bf16_vec_with, random_masks, random_requests, seeded_rng};
use flashomni_tests::reference::{AttentionRef, AttentionShape, attention};
use proptest::prelude::*;
use rand::Rng;

/// Random problem: shape, q/k/v (bf16-representable) and logical masks.
struct Problem {
    shape: AttentionShape,
    requests: Vec<RequestShape>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn problem(seed: u64) -> Problem {
    let mut rng = seeded_rng(seed);
    let heads = rng.gen_range(1..=3);
    let head_dim = rng.gen_range(1..=8);
    let (bq, bk) = (rng.gen_range(1..=16), rng.gen_range(1..=16));
    let batch = rng.gen_range(1..=3);
    let requests = random_requests(&mut rng, batch, 40);
    let shape = AttentionShape::from_requests(heads, head_dim, bq, bk, &requests);
    let per_tok = (heads * head_dim) as usize;
    let q = random_bf16_vec_with(&mut rng, shape.total_q() * per_tok, Init::Normal(1.0)).1;
    let k = random_bf16_vec_with(&mut rng, shape.total_kv() * per_tok, Init::Normal(1.0)).1;
    let v = random_bf16_vec(&mut rng, shape.total_kv() * per_tok).1;
    Problem { shape, requests, q, k, v }
}

/// Naive attention with an explicit token-level mask `mask(b, i, h, j)`: logits
/// of masked keys are -inf, softmax without max subtraction. Rows with no kept
/// key come back as `None`.
#[allow(clippy::type_complexity)]
fn naive(p: &Problem, scale: f64, mask: impl Fn(usize, u32, u32, u32) -> bool) -> Vec<Option<(Vec<f64>, f64)>> {
    let (h_n, d) = (p.shape.heads as usize, p.shape.head_dim as usize);
    let mut rows = vec![None; p.shape.total_q() * h_n];
    for (b, r) in p.requests.iter().enumerate() {
        let (q0, k0) = (p.shape.qo_indptr[b] as usize, p.shape.kv_indptr[b] as usize);
        for i in 0..r.q_len {
            for h in 0..h_n {
                let qi = ((q0 + i as usize) * h_n + h) * d;
                let logits: Vec<f64> = (0..r.kv_len)
                    .map(|j| {
                        if !mask(b, i, h as u32, j) {
                            return f64::NEG_INFINITY;
                        }
                        let kj = ((k0 + j as usize) * h_n + h) * d;
                        scale * (0..d).map(|t| f64::from(p.q[qi + t]) * f64::from(p.k[kj + t])).sum::<f64>()
                    })
                    .collect();
                let w: Vec<f64> = logits.iter().map(|s| s.exp()).collect();
                let z: f64 = w.iter().sum();
                if z == 0.0 {
                    continue;
                }
                let out = (0..d)
                    .map(|t| {
                        (0..r.kv_len as usize).map(|j| w[j] * f64::from(p.v[((k0 + j) * h_n + h) * d + t])).sum::<f64>()
                            / z
                    })
                    .collect();
                rows[(q0 + i as usize) * h_n + h] = Some((out, z.log2()));
            }
        }
    }
    rows
}

fn assert_matches(got: &AttentionRef, want: &[Option<(Vec<f64>, f64)>], d: usize, tol: f64) {
    for (row, w) in want.iter().enumerate() {
        let o = &got.out[row * d..(row + 1) * d];
        assert!(o.iter().all(|x| x.is_finite()), "row {row}: non-finite output {o:?}");
        match w {
            Some((out, lse)) => {
                for (a, b) in o.iter().zip(out) {
                    assert!((a - b).abs() <= tol, "row {row}: out {a} vs {b}");
                }
                assert!((got.lse[row] - lse).abs() <= tol, "row {row}: lse {} vs {lse}", got.lse[row]);
            }
            None => {
                assert!(o.iter().all(|&x| x == 0.0), "row {row}: expected zeros, got {o:?}");
                assert_eq!(got.lse[row], f64::NEG_INFINITY, "row {row}: lse");
            }
        }
    }
}

#[test]
fn hand_computed_two_keys() {
    // q = [1, 0]; k0 = [1, 0], k1 = [0, 1]; v0 = [1, 2], v1 = [3, 4]; scale 1:
    // weights e and 1 -> out = (e·v0 + v1) / (e + 1), lse = log2(e + 1).
    let shape = AttentionShape::from_requests(1, 2, 128, 128, &[RequestShape::new(1, 2)]);
    let r = attention(&[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0], &[1.0, 2.0, 3.0, 4.0], &shape, None, 1.0);
    let e = std::f64::consts::E;
    let want = [(e + 3.0) / (e + 1.0), (2.0 * e + 4.0) / (e + 1.0)];
    assert!((r.out[0] - want[0]).abs() < 1e-15 && (r.out[1] - want[1]).abs() < 1e-15, "{:?}", r.out);
    assert!((r.lse[0] - (e + 1.0).log2()).abs() < 1e-15);
    assert_eq!(r.computed, [true]);
}

#[test]
fn large_logits_stay_finite() {
    // Logits around ±1000 would overflow a softmax without max subtraction.
    let shape = AttentionShape::from_requests(1, 1, 4, 4, &[RequestShape::new(1, 3)]);
    let r = attention(&[1.0], &[1.0, -1.0, 0.5], &[7.0, 8.0, 9.0], &shape, None, 1000.0);
    assert!((r.out[0] - 7.0).abs() < 1e-12, "{:?}", r.out);
    assert!((r.lse[0] - 1000.0 * std::f64::consts::LOG2_E).abs() < 1e-9);
}

#[test]
fn kv_block_boundaries_follow_block_kv() {
    // kv_len 5, Bk = 2: blocks {0,1}, {2,3}, {4}. Keep only block 1 -> only keys 2, 3 matter.
    let reqs = [RequestShape::new(1, 5)];
    let g = SymbolGeometry::new(1, 4, 2, &reqs).unwrap();
    let sym = PackedSymbols::from_masks(&g, &[true], &[false, true, false]).unwrap();
    let shape = AttentionShape::from_requests(1, 1, 4, 2, &reqs);
    let v = [100.0, 100.0, 1.0, 3.0, 100.0];
    let r = attention(&[0.0], &[0.0; 5], &v, &shape, Some(&sym.view()), 1.0);
    assert!((r.out[0] - 2.0).abs() < 1e-15, "{:?}", r.out);
    assert!((r.lse[0] - 1.0).abs() < 1e-15); // log2(e^0 + e^0)
}

#[test]
fn all_dropped_rows_are_zero_not_nan() {
    let p = problem(7);
    let reqs = &p.requests;
    let g = SymbolGeometry::new(p.shape.heads, p.shape.block_q, p.shape.block_kv, reqs).unwrap();
    let mut rng = seeded_rng(8);
    let (caching, skip) = random_masks(&mut rng, &g, 0.0, 0.0);
    assert!(caching.iter().all(|&c| c) && skip.iter().all(|&s| !s));
    let sym = PackedSymbols::from_masks(&g, &caching, &skip).unwrap();
    let r = attention(&p.q, &p.k, &p.v, &p.shape, Some(&sym.view()), 0.5);
    assert!(r.computed.iter().all(|&c| c));
    assert!(r.out.iter().all(|&x| x == 0.0));
    assert!(r.lse.iter().all(|&x| x == f64::NEG_INFINITY));
}

#[test]
fn fully_cached_rows_are_flagged() {
    let p = problem(11);
    let g = SymbolGeometry::new(p.shape.heads, p.shape.block_q, p.shape.block_kv, &p.requests).unwrap();
    let sym = PackedSymbols::from_fn(&g, |_, _, _| false, |_, _, _, _| true);
    let r = attention(&p.q, &p.k, &p.v, &p.shape, Some(&sym.view()), 0.5);
    assert!(!r.computed.is_empty());
    assert!(r.computed.iter().all(|&c| !c));
    assert!(r.out.iter().all(|&x| x == 0.0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dense_matches_naive_softmax(seed in any::<u64>()) {
        let p = problem(seed);
        let scale = 1.0 / f64::from(p.shape.head_dim).sqrt();
        let want = naive(&p, scale, |_, _, _, _| true);
        let d = p.shape.head_dim as usize;
        let none = attention(&p.q, &p.k, &p.v, &p.shape, None, scale);
        assert_matches(&none, &want, d, 1e-12);
        prop_assert!(none.computed.iter().all(|&c| c));
        let g = SymbolGeometry::new(p.shape.heads, p.shape.block_q, p.shape.block_kv, &p.requests).unwrap();
        let dense = PackedSymbols::dense(&g);
        let with = attention(&p.q, &p.k, &p.v, &p.shape, Some(&dense.view()), scale);
        prop_assert_eq!(&with, &none);
    }

    #[test]
    fn sparse_matches_expanded_token_mask(seed in any::<u64>(), kv_density in 0.0f64..=1.0, cache_ratio in 0.0f64..=1.0) {
        let p = problem(seed);
        let (h_n, d) = (p.shape.heads, p.shape.head_dim as usize);
        let (bq, bk) = (p.shape.block_q, p.shape.block_kv);
        let g = SymbolGeometry::new(h_n, bq, bk, &p.requests).unwrap();
        let mut rng = seeded_rng(seed ^ 0x5eed);
        let (caching, skip) = random_masks(&mut rng, &g, kv_density, cache_ratio);
        let sym = PackedSymbols::from_masks(&g, &caching, &skip).unwrap();

        // Offsets of each request's logical masks, computed from the definitions.
        let mut offs = Vec::new();
        let (mut co, mut so) = (0usize, 0usize);
        for r in &p.requests {
            let (nq, nk) = (r.q_len.div_ceil(bq), r.kv_len.div_ceil(bk));
            offs.push((co, so, nk));
            co += (nq * h_n) as usize;
            so += (nq * h_n * nk) as usize;
        }
        let cmask = |b: usize, i: u32, h: u32| caching[offs[b].0 + ((i / bq) * h_n + h) as usize];
        let smask = |b: usize, i: u32, h: u32, j: u32| {
            let (_, so, nk) = offs[b];
            skip[so + (((i / bq) * h_n + h) * nk + j / bk) as usize]
        };
        let scale = 0.3;
        let want = naive(&p, scale, |b, i, h, j| cmask(b, i, h) && smask(b, i, h, j));
        let got = attention(&p.q, &p.k, &p.v, &p.shape, Some(&sym.view()), scale);

        let mut want_computed = Vec::new();
        for (b, r) in p.requests.iter().enumerate() {
            for i in 0..r.q_len {
                for h in 0..h_n {
                    want_computed.push(cmask(b, i, h));
                }
            }
        }
        prop_assert_eq!(&got.computed, &want_computed);
        // Non-computed rows: the naive masked softmax has no kept key -> zeros / -inf.
        assert_matches(&got, &want, d, 1e-12);
    }
}
