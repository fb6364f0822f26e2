//! GEMM-Q reference (spec §5.2): `Y = X·Wᵀ + b`, cached (q block, head) tiles skipped.

use super::{GemmShape, HeadSparsity, check_len, computes, dot};

/// Output of [`gemm_q()`].
#[derive(Clone, Debug, PartialEq)]
pub struct GemmQRef {
    /// `[M, N]` projection; entries with `written == false` are 0 here (the
    /// kernel must leave them untouched).
    pub out: Vec<f64>,
    /// `[M, N]`: `false` where `S_c(qb(row), col / head_dim) = 0`.
    pub written: Vec<bool>,
}

/// GEMM-Q in f64: `out[r, c] = bias[c] + Σ_k x[r, k]·w[c, k]` for every `(r, c)`
/// with `S_c(qb(r), c / head_dim) = 1`, `head_dim = N / heads`.
///
/// `x` is `[M, K]`, `w` is `[N, K]` (PyTorch `Linear.weight` layout), `bias` is
/// `[N]`. `sparsity == None` computes every tile (dense / `is_full`).
///
/// # Panics
/// If slice lengths disagree with `shape`, `N` is not a multiple of `heads`, or a
/// row's query block is outside the symbols (see [`HeadSparsity::compute`]).
#[must_use]
pub fn gemm_q(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    shape: GemmShape,
    sparsity: Option<&HeadSparsity<'_>>,
) -> GemmQRef {
    let GemmShape { m, n, k, heads } = shape;
    check_len("x", x.len(), m * k);
    check_len("w", w.len(), n * k);
    if let Some(b) = bias {
        check_len("bias", b.len(), n);
    }
    assert!(heads > 0 && n % heads as usize == 0, "N = {n} is not a multiple of heads = {heads}");
    let head_dim = n / heads as usize;
    let mut res = GemmQRef { out: vec![0.0; m * n], written: vec![false; m * n] };
    for r in 0..m {
        for c in 0..n {
            let h = u32::try_from(c / head_dim).expect("head index fits u32");
            if !computes(sparsity, r, h) {
                continue;
            }
            let b = bias.map_or(0.0, |b| f64::from(b[c]));
            res.out[r * n + c] = b + dot(&x[r * k..(r + 1) * k], &w[c * k..(c + 1) * k]);
            res.written[r * n + c] = true;
        }
    }
    res
}
