//! Float64 CPU references of the sparse kernels.
//!
//! * [`attention()`]: block-sparse attention driven by S_c and S_s.
//! * [`gemm_q()`]: GEMM-Q, `Y = X·Wᵀ + b` with tiles of cached (q block, head) pairs skipped.
//! * [`gemm_o_cache()`] / [`gemm_o_active()`]: GEMM-O's two modes (reduction split by head).
//! * [`ulysses::all_to_all_reference()`]: the sequence-parallel (Ulysses) all-to-all.
//!
//! The GEMM references take the S_c symbol through [`HeadSparsity`].

pub mod attention;
pub mod gemm_o;
pub mod gemm_q;
pub mod ulysses;

pub use attention::{AttentionRef, AttentionShape, attention};
pub use gemm_o::{gemm_o_active, gemm_o_cache};
pub use gemm_q::{GemmQRef, gemm_q};

use flashomni_symbols::SymbolsView;

/// Shape of a single-request GEMM `[M, K] x [N, K]ᵀ -> [M, N]` whose `N` (GEMM-Q)
/// or `K` (GEMM-O) axis is split into `heads` equal per-head slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of the activation / output.
    pub m: usize,
    /// Output columns (rows of the weight).
    pub n: usize,
    /// Reduction length (columns of activation and weight).
    pub k: usize,
    /// Number of heads the head axis is split into.
    pub heads: u32,
}

/// Which (row, head) pairs a GEMM reference computes: S_c of one request.
///
/// Row `r` of the GEMM belongs to query block
/// `qb(r) = (token_offset + r) / block_q`, with `block_q` taken from the
/// symbols' geometry. `token_offset` is the attention-sequence position of GEMM
/// row 0 (FlashOmni's `num_text_tokens`, e.g. 512 for FLUX image rows).
///
/// Only one request (batch 1) is modelled; run the reference once per request
/// for batched kernels. The reference applies S_c per row, and so must the
/// kernels: GEMM-Q writes each (row, 8-column chunk) by its own pair's bit, and
/// GEMM-O requires row tiles that lie in one query block.
#[derive(Clone, Copy, Debug)]
pub struct HeadSparsity<'a> {
    /// The packed symbols (only S_c is used).
    pub symbols: &'a SymbolsView<'a>,
    /// Request index inside `symbols`.
    pub request: usize,
    /// Token position of GEMM row 0 in the request's query sequence.
    pub token_offset: u32,
}

impl HeadSparsity<'_> {
    /// S_c for GEMM row `row` and head `head` (`true` = computed).
    ///
    /// # Panics
    /// If the row's query block, the head or the request is out of the symbols' range.
    #[must_use]
    pub fn compute(&self, row: usize, head: u32) -> bool {
        let bq = self.symbols.geometry().block_q();
        let token = u64::from(self.token_offset) + row as u64;
        let qb = u32::try_from(token / u64::from(bq)).expect("query block index overflows u32");
        match self.symbols.try_compute(self.request, qb, head) {
            Ok(c) => c,
            Err(e) => panic!("GEMM row {row}, head {head}: {e}"),
        }
    }
}

/// `S_c` lookup for an optional sparsity (None = dense: every pair computed).
pub(crate) fn computes(sparsity: Option<&HeadSparsity<'_>>, row: usize, head: u32) -> bool {
    sparsity.is_none_or(|s| s.compute(row, head))
}

/// `Σ_{j in range} a[j]·b[j]` in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

/// Asserts a slice length with a readable message.
pub(crate) fn check_len(name: &str, got: usize, expected: usize) {
    assert_eq!(got, expected, "{name}: expected {expected} elements, got {got}");
}
