//! Block-sparse attention reference (spec §4.5–4.7).

use flashomni_symbols::{RequestShape, SymbolsView};

use super::{check_len, dot};

/// Ragged batch layout of an attention call.
///
/// `q`/`out` are `[total_q, heads, head_dim]`, `k`/`v` are `[total_kv, heads,
/// head_dim]` (token-major, contiguous); request `b` owns query tokens
/// `qo_indptr[b]..qo_indptr[b + 1]` and key tokens `kv_indptr[b]..kv_indptr[b + 1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Number of heads (query heads = KV heads).
    pub heads: u32,
    /// Head dimension `D`.
    pub head_dim: u32,
    /// Query block size of the symbols (tokens).
    pub block_q: u32,
    /// KV block size of the symbols (tokens).
    pub block_kv: u32,
    /// Query token offsets, length `B + 1`, starting at 0, non-decreasing.
    pub qo_indptr: Vec<u32>,
    /// Key/value token offsets, length `B + 1`, starting at 0, non-decreasing.
    pub kv_indptr: Vec<u32>,
}

impl AttentionShape {
    /// Builds the indptrs from per-request lengths.
    #[must_use]
    pub fn from_requests(heads: u32, head_dim: u32, block_q: u32, block_kv: u32, requests: &[RequestShape]) -> Self {
        let prefix = |f: fn(&RequestShape) -> u32| {
            std::iter::once(0)
                .chain(requests.iter().scan(0u32, |acc, r| {
                    *acc += f(r);
                    Some(*acc)
                }))
                .collect()
        };
        Self { heads, head_dim, block_q, block_kv, qo_indptr: prefix(|r| r.q_len), kv_indptr: prefix(|r| r.kv_len) }
    }

    /// Number of requests `B`.
    #[must_use]
    pub fn num_requests(&self) -> usize {
        self.qo_indptr.len().saturating_sub(1)
    }

    /// Per-request lengths (for building a `SymbolGeometry`).
    ///
    /// # Panics
    /// If the indptrs are malformed (see [`Self::validate`]).
    #[must_use]
    pub fn requests(&self) -> Vec<RequestShape> {
        self.validate();
        (0..self.num_requests())
            .map(|b| RequestShape {
                q_len: self.qo_indptr[b + 1] - self.qo_indptr[b],
                kv_len: self.kv_indptr[b + 1] - self.kv_indptr[b],
            })
            .collect()
    }

    /// Total query tokens (`qo_indptr[B]`).
    #[must_use]
    pub fn total_q(&self) -> usize {
        self.qo_indptr.last().map_or(0, |&x| x as usize)
    }

    /// Total key/value tokens (`kv_indptr[B]`).
    #[must_use]
    pub fn total_kv(&self) -> usize {
        self.kv_indptr.last().map_or(0, |&x| x as usize)
    }

    /// Checks the indptrs and sizes.
    ///
    /// # Panics
    /// If an indptr is empty, does not start at 0 or decreases, the two indptrs
    /// differ in length, or a size is zero.
    pub fn validate(&self) {
        assert!(self.heads > 0 && self.head_dim > 0, "heads and head_dim must be positive");
        assert!(self.block_q > 0 && self.block_kv > 0, "block sizes must be positive");
        for (name, ip) in [("qo_indptr", &self.qo_indptr), ("kv_indptr", &self.kv_indptr)] {
            assert!(ip.first() == Some(&0), "{name} must start with 0: {ip:?}");
            assert!(ip.windows(2).all(|w| w[0] <= w[1]), "{name} must be non-decreasing: {ip:?}");
        }
        assert_eq!(self.qo_indptr.len(), self.kv_indptr.len(), "qo_indptr and kv_indptr must have the same length");
    }
}

/// Output of [`attention()`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionRef {
    /// `[total_q, heads, head_dim]` attention output. Rows with `computed == false`
    /// are 0 here (the kernel must leave them untouched); computed rows without
    /// any kept key are 0.
    pub out: Vec<f64>,
    /// `[total_q, heads]` base-2 log-sum-exp of the scaled logits over the kept
    /// keys, `log2(Σ_j exp(sm_scale·q·k_j))` (FlashInfer convention); `-inf` when
    /// no key is kept or the row is not computed.
    pub lse: Vec<f64>,
    /// `[total_q, heads]`: `false` for rows whose (q block, head) has S_c = 0.
    pub computed: Vec<bool>,
}

/// Block-sparse attention in f64.
///
/// For request `b`, local query row `i` and head `h` with `S_c(b, i / Bq, h) = 1`:
/// `out[i, h] = Σ_j softmax_j(sm_scale · q_i·k_j) · v_j` over the keys `j` with
/// `S_s(b, i / Bq, h, j / Bk) = 1`, normalised over those keys only. `symbols ==
/// None` means dense (all ones). The softmax is evaluated with max subtraction.
///
/// # Panics
/// If slice lengths do not match `shape`, the shape is malformed (see
/// [`AttentionShape::validate`]), or `symbols`' geometry disagrees with `shape`
/// (heads, block sizes, request lengths).
#[must_use]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    symbols: Option<&SymbolsView<'_>>,
    sm_scale: f64,
) -> AttentionRef {
    let requests = shape.requests();
    let (h_n, d) = (shape.heads as usize, shape.head_dim as usize);
    let (total_q, total_kv) = (shape.total_q(), shape.total_kv());
    check_len("q", q.len(), total_q * h_n * d);
    check_len("k", k.len(), total_kv * h_n * d);
    check_len("v", v.len(), total_kv * h_n * d);
    if let Some(s) = symbols {
        let g = s.geometry();
        assert_eq!(
            (g.heads(), g.block_q(), g.block_kv()),
            (shape.heads, shape.block_q, shape.block_kv),
            "symbols (heads, block_q, block_kv) disagree with the attention shape"
        );
        assert_eq!(g.requests(), &requests[..], "symbols request lengths disagree with the indptrs");
    }

    let mut res = AttentionRef {
        out: vec![0.0; total_q * h_n * d],
        lse: vec![f64::NEG_INFINITY; total_q * h_n],
        computed: computed_rows(shape, symbols),
    };
    let mut logits = Vec::new();
    for (b, r) in requests.iter().enumerate() {
        let (q0, k0) = (shape.qo_indptr[b] as usize, shape.kv_indptr[b] as usize);
        for i in 0..r.q_len {
            let qb = i / shape.block_q;
            let tok = q0 + i as usize;
            for h in 0..shape.heads {
                let row = tok * h_n + h as usize;
                if !res.computed[row] {
                    continue;
                }
                let qv = &q[row * d..(row + 1) * d];
                logits.clear();
                for j in 0..r.kv_len {
                    if symbols.is_none_or(|s| s.attend(b, qb, h, j / shape.block_kv)) {
                        let kr = ((k0 + j as usize) * h_n + h as usize) * d;
                        logits.push((kr, sm_scale * dot(qv, &k[kr..kr + d])));
                    }
                }
                let Some(m) = logits.iter().map(|&(_, s)| s).reduce(f64::max) else {
                    continue; // no key kept: zeros, lse = -inf
                };
                let o = &mut res.out[row * d..(row + 1) * d];
                let mut sum = 0.0;
                for &(kr, s) in &logits {
                    let p = (s - m).exp();
                    sum += p;
                    for (o, &x) in o.iter_mut().zip(&v[kr..kr + d]) {
                        *o += p * f64::from(x);
                    }
                }
                o.iter_mut().for_each(|x| *x /= sum);
                res.lse[row] = sum.log2() + m * std::f64::consts::LOG2_E;
            }
        }
    }
    res
}

/// `[total_q, heads]`: whether each (token, head) row is computed, that is, its (q block, head)
/// has S_c = 1 (every row when `symbols` is `None`). The rows [`attention()`] computes and the
/// kernels must write; the others must stay untouched.
///
/// # Panics
/// If `symbols` does not cover the requests of `shape`.
#[must_use]
pub fn computed_rows(shape: &AttentionShape, symbols: Option<&SymbolsView<'_>>) -> Vec<bool> {
    let heads = shape.heads;
    let mut computed = Vec::with_capacity(shape.total_q() * heads as usize);
    for (b, request) in shape.requests().iter().enumerate() {
        for i in 0..request.q_len {
            computed.extend((0..heads).map(|h| symbols.is_none_or(|s| s.compute(b, i / shape.block_q, h))));
        }
    }
    computed
}
