//! GEMM-Q and GEMM-O references against plain matrix products.

use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::random::{random_bf16_vec, random_masks, seeded_rng};
use flashomni_tests::reference::{GemmShape, HeadSparsity, gemm_o_active, gemm_o_cache, gemm_q};
use proptest::prelude::*;
use rand::Rng;

/// Plain `bias + x·wᵀ` in f64, optionally restricted to the reduction columns `cols`.
fn matmul(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for r in 0..m {
        for c in 0..n {
            let mut acc = bias.map_or(0.0, |b| f64::from(b[c]));
            for t in 0..k {
                acc += f64::from(x[r * k + t]) * f64::from(w[c * k + t]);
            }
            y[r * n + c] = acc;
        }
    }
    y
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

/// Random single-request GEMM problem with S_c masks.
struct Problem {
    shape: GemmShape,
    token_offset: u32,
    block_q: u32,
    requests: [RequestShape; 1],
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// `per_head_on_n`: the head axis is N (GEMM-Q) rather than K (GEMM-O).
fn problem(seed: u64, per_head_on_n: bool) -> Problem {
    let mut rng = seeded_rng(seed);
    let heads = rng.gen_range(1..=4u32);
    let d = rng.gen_range(1..=6usize);
    let m = rng.gen_range(1..=24usize);
    let other = rng.gen_range(1..=12usize);
    let (n, k) = if per_head_on_n { (heads as usize * d, other) } else { (other, heads as usize * d) };
    let token_offset = rng.gen_range(0..=20u32);
    let block_q = rng.gen_range(1..=8u32);
    let q_len = token_offset + m as u32 + rng.gen_range(0..=5u32);
    let x = random_bf16_vec(&mut rng, m * k).1;
    let w = random_bf16_vec(&mut rng, n * k).1;
    let bias = random_bf16_vec(&mut rng, n).1;
    Problem {
        shape: GemmShape { m, n, k, heads },
        token_offset,
        block_q,
        requests: [RequestShape::new(q_len, 1)],
        x,
        w,
        bias,
    }
}

impl Problem {
    fn geometry(&self) -> SymbolGeometry<'_> {
        SymbolGeometry::new(self.shape.heads, self.block_q, 128, &self.requests).unwrap()
    }
}

#[test]
fn gemm_q_hand_computed() {
    // x = [[1, 2]], w = [[3, 4], [5, 6]], bias = [0.5, -1]; two heads of width 1.
    let shape = GemmShape { m: 1, n: 2, k: 2, heads: 2 };
    let r = gemm_q(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], Some(&[0.5, -1.0]), shape, None);
    assert_eq!(r.out, [11.5, 16.0]);
    assert_eq!(r.written, [true, true]);
    // Cache head 1 of query block 0.
    let reqs = [RequestShape::new(1, 1)];
    let g = SymbolGeometry::new(2, 128, 128, &reqs).unwrap();
    let sym = PackedSymbols::from_masks(&g, &[true, false], &[true, true]).unwrap();
    let view = sym.view();
    let sp = HeadSparsity { symbols: &view, request: 0, token_offset: 0 };
    let r = gemm_q(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], Some(&[0.5, -1.0]), shape, Some(&sp));
    assert_eq!(r.out, [11.5, 0.0]);
    assert_eq!(r.written, [true, false]);
}

#[test]
fn gemm_o_hand_computed() {
    // a = [[1, 2]] (two heads of width 1), w = [[3, 4]], bias = [1]; head 0 cached.
    let shape = GemmShape { m: 1, n: 1, k: 2, heads: 2 };
    let reqs = [RequestShape::new(1, 1)];
    let g = SymbolGeometry::new(2, 128, 128, &reqs).unwrap();
    let sym = PackedSymbols::from_masks(&g, &[false, true], &[true, true]).unwrap();
    let view = sym.view();
    let sp = HeadSparsity { symbols: &view, request: 0, token_offset: 0 };
    let c = gemm_o_cache(&[1.0, 2.0], &[3.0, 4.0], Some(&[1.0]), shape, Some(&sp));
    assert_eq!(c, [4.0]); // 1 + 1·3
    let y = gemm_o_active(&[1.0, 2.0], &[3.0, 4.0], Some(&[4.0]), shape, Some(&sp));
    assert_eq!(y, [12.0]); // 4 + 2·4
}

#[test]
#[should_panic(expected = "not a multiple of heads")]
fn gemm_q_rejects_uneven_heads() {
    let _ = gemm_q(&[0.0; 3], &[0.0; 9], None, GemmShape { m: 1, n: 3, k: 3, heads: 2 }, None);
}

#[test]
#[should_panic(expected = "query block 1 out of range")]
fn gemm_rows_outside_symbols_panic() {
    let reqs = [RequestShape::new(4, 4)];
    let g = SymbolGeometry::new(1, 4, 4, &reqs).unwrap();
    let sym = PackedSymbols::dense(&g);
    let view = sym.view();
    let sp = HeadSparsity { symbols: &view, request: 0, token_offset: 2 };
    // Rows 2..5 of the request: row 2 of the GEMM is token 4 -> query block 1 (only 1 exists).
    let _ = gemm_q(&[0.0; 3], &[0.0; 1], None, GemmShape { m: 3, n: 1, k: 1, heads: 1 }, Some(&sp));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemm_q_dense_is_plain_matmul(seed in any::<u64>()) {
        let p = problem(seed, true);
        let GemmShape { m, n, k, .. } = p.shape;
        let want = matmul(&p.x, &p.w, Some(&p.bias), m, n, k);
        let none = gemm_q(&p.x, &p.w, Some(&p.bias), p.shape, None);
        close(&none.out, &want, 1e-12);
        prop_assert!(none.written.iter().all(|&w| w));
        let dense = PackedSymbols::dense(&p.geometry());
        let view = dense.view();
        let sp = HeadSparsity { symbols: &view, request: 0, token_offset: p.token_offset };
        prop_assert_eq!(gemm_q(&p.x, &p.w, Some(&p.bias), p.shape, Some(&sp)), none);
        let no_bias = gemm_q(&p.x, &p.w, None, p.shape, None);
        close(&no_bias.out, &matmul(&p.x, &p.w, None, m, n, k), 1e-12);
    }

    #[test]
    fn gemm_q_skips_cached_tiles(seed in any::<u64>(), cache_ratio in 0.0f64..=1.0) {
        let p = problem(seed, true);
        let GemmShape { m, n, k, heads } = p.shape;
        let g = p.geometry();
        let mut rng = seeded_rng(!seed);
        let (caching, skip) = random_masks(&mut rng, &g, 1.0, cache_ratio);
        let sym = PackedSymbols::from_masks(&g, &caching, &skip).unwrap();
        let view = sym.view();
        let sp = HeadSparsity { symbols: &view, request: 0, token_offset: p.token_offset };
        let got = gemm_q(&p.x, &p.w, Some(&p.bias), p.shape, Some(&sp));
        let plain = matmul(&p.x, &p.w, Some(&p.bias), m, n, k);
        let hd = n / heads as usize;
        for r in 0..m {
            let qb = (p.token_offset as usize + r) / p.block_q as usize;
            for c in 0..n {
                let on = caching[qb * heads as usize + c / hd];
                prop_assert_eq!(got.written[r * n + c], on, "row {} col {}", r, c);
                let want = if on { plain[r * n + c] } else { 0.0 };
                prop_assert!((got.out[r * n + c] - want).abs() <= 1e-12);
            }
        }
    }

    #[test]
    fn gemm_o_cache_plus_active_is_dense(seed in any::<u64>(), cache_ratio in 0.0f64..=1.0) {
        let p = problem(seed, false);
        let GemmShape { m, n, k, .. } = p.shape;
        let g = p.geometry();
        let mut rng = seeded_rng(seed.rotate_left(17));
        let (caching, skip) = random_masks(&mut rng, &g, 1.0, cache_ratio);
        let sym = PackedSymbols::from_masks(&g, &caching, &skip).unwrap();
        let view = sym.view();
        let sp = HeadSparsity { symbols: &view, request: 0, token_offset: p.token_offset };
        let dense = matmul(&p.x, &p.w, Some(&p.bias), m, n, k);

        let cache = gemm_o_cache(&p.x, &p.w, Some(&p.bias), p.shape, Some(&sp));
        // Exact split in f64: cache + active(C = 0) = dense.
        let active0 = gemm_o_active(&p.x, &p.w, None, p.shape, Some(&sp));
        let sum: Vec<f64> = cache.iter().zip(&active0).map(|(a, b)| a + b).collect();
        close(&sum, &dense, 1e-12);
        // As the kernels chain it: C stored in f32, then passed to active mode.
        let c32: Vec<f32> = cache.iter().map(|&x| x as f32).collect();
        close(&gemm_o_active(&p.x, &p.w, Some(&c32), p.shape, Some(&sp)), &dense, 1e-6);
        // Extremes: no sparsity -> C = bias, Y = dense.
        let bias_only: Vec<f64> = (0..m * n).map(|i| f64::from(p.bias[i % n])).collect();
        prop_assert_eq!(gemm_o_cache(&p.x, &p.w, Some(&p.bias), p.shape, None), bias_only);
        close(&gemm_o_active(&p.x, &p.w, Some(&vec![0.0; m * n]), p.shape, None), &matmul(&p.x, &p.w, None, m, n, k), 1e-12);
    }

    #[test]
    fn gemm_o_cache_sums_exactly_the_cached_heads(seed in any::<u64>()) {
        let p = problem(seed, false);
        let GemmShape { m, n, k, heads } = p.shape;
        let g = p.geometry();
        let mut rng = seeded_rng(seed ^ 0xabc);
        let (caching, skip) = random_masks(&mut rng, &g, 1.0, 0.5);
        let sym = PackedSymbols::from_masks(&g, &caching, &skip).unwrap();
        let view = sym.view();
        let sp = HeadSparsity { symbols: &view, request: 0, token_offset: p.token_offset };
        let cache = gemm_o_cache(&p.x, &p.w, None, p.shape, Some(&sp));
        // Independent path: zero out the computed heads' columns of x, then plain matmul.
        let d = k / heads as usize;
        let mut xc = p.x.clone();
        for r in 0..m {
            let qb = (p.token_offset as usize + r) / p.block_q as usize;
            for t in 0..k {
                if caching[qb * heads as usize + t / d] {
                    xc[r * k + t] = 0.0;
                }
            }
        }
        close(&cache, &matmul(&xc, &p.w, None, m, n, k), 1e-12);
    }
}
