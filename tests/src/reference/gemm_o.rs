//! GEMM-O reference (spec §6.2): the reduction axis `K = H·D` is split by head;
//! cache mode sums the cached heads, active mode adds the computed heads.

use super::{GemmShape, HeadSparsity, check_len, computes, dot};

/// `base[r, c] + Σ_{h : S_c(qb(r), h) == want} A_h[r]·W_h[c]` for all `(r, c)`.
fn gemm_o_heads(
    a: &[f32],
    w: &[f32],
    base: impl Fn(usize, usize) -> f64,
    shape: GemmShape,
    sparsity: Option<&HeadSparsity<'_>>,
    want: bool,
) -> Vec<f64> {
    let GemmShape { m, n, k, heads } = shape;
    check_len("a", a.len(), m * k);
    check_len("w", w.len(), n * k);
    assert!(heads > 0 && k % heads as usize == 0, "K = {k} is not a multiple of heads = {heads}");
    let d = k / heads as usize;
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        let selected: Vec<usize> =
            (0..heads).filter(|&h| computes(sparsity, r, h) == want).map(|h| h as usize).collect();
        for c in 0..n {
            let mut acc = base(r, c);
            for &h in &selected {
                let (ar, wr) = (&a[r * k + h * d..r * k + (h + 1) * d], &w[c * k + h * d..c * k + (h + 1) * d]);
                acc += dot(ar, wr);
            }
            out[r * n + c] = acc;
        }
    }
    out
}

/// GEMM-O cache mode in f64: `C = b + Σ_{h : S_c(qb, h) = 0} A_h·W_hᵀ`.
///
/// `a` is `[M, K]` with `K = H·D` (heads concatenated), `w` is `[N, K]`, `bias`
/// is `[N]`; `A_h = a[:, h·D..(h+1)·D]`, `W_h = w[:, h·D..(h+1)·D]`, `D = K / H`.
/// `sparsity == None` treats every head as computed, so `C = b`. Returns `[M, N]`.
///
/// # Panics
/// If slice lengths disagree with `shape`, `K` is not a multiple of `heads`, or a
/// row's query block is outside the symbols.
#[must_use]
pub fn gemm_o_cache(
    a: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    shape: GemmShape,
    sparsity: Option<&HeadSparsity<'_>>,
) -> Vec<f64> {
    if let Some(b) = bias {
        check_len("bias", b.len(), shape.n);
    }
    let base = |_r: usize, c: usize| bias.map_or(0.0, |b| f64::from(b[c]));
    gemm_o_heads(a, w, base, shape, sparsity, false)
}

/// GEMM-O active (dispatch) mode in f64: `Y = C + Σ_{h : S_c(qb, h) = 1} A_h·W_hᵀ`.
///
/// `c` is the `[M, N]` cache from [`gemm_o_cache`] (rounded to the kernel's
/// dtype by the caller) or `None` for zero. Other arguments as in
/// [`gemm_o_cache`]; `sparsity == None` sums every head (dense projection).
/// Returns `[M, N]`.
///
/// # Panics
/// As [`gemm_o_cache`], or if `c` is not `[M, N]`.
#[must_use]
pub fn gemm_o_active(
    a: &[f32],
    w: &[f32],
    c: Option<&[f32]>,
    shape: GemmShape,
    sparsity: Option<&HeadSparsity<'_>>,
) -> Vec<f64> {
    if let Some(c) = c {
        check_len("c", c.len(), shape.m * shape.n);
    }
    let base = |r: usize, col: usize| c.map_or(0.0, |c| f64::from(c[r * shape.n + col]));
    gemm_o_heads(a, w, base, shape, sparsity, true)
}
