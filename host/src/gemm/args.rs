//! The arguments of the two GEMM launches: tensors, head layout, symbols and the launch
//! choices a caller may force.

use flashomni_kernels::abi::GemmRows;

use super::split::{GemmSplit, GemmWorkspace};
use crate::device_symbols::DeviceSymbols;
use crate::memory::{DeviceView, DeviceViewMut};

/// The tensors and head layout of one GEMM-Q call (`Y = X·Wᵀ + b`, `n = heads · head_dim`).
pub struct GemmQArgs<'a, T> {
    /// Activations `X`, `[m, k]` row-major.
    pub x: DeviceView<'a, T>,
    /// Weight `W`, `[n, k]` row-major.
    pub w: DeviceView<'a, T>,
    /// Optional bias `[n]`.
    pub bias: Option<DeviceView<'a, T>>,
    /// Output `Y`, `[m, n]` row-major. Elements of cached (query block, head) pairs are not
    /// written.
    pub out: DeviceViewMut<'a, T>,
    /// Attention-sequence position of row 0 of `X` (FlashOmni's `num_text_tokens`).
    pub token_offset: u32,
    /// Heads the output columns are split into: column `c` belongs to head `c / (n / heads)`.
    pub heads: u32,
    /// Sparse symbols (only the S_c bits of request `request` are read); `None` computes every
    /// element.
    pub symbols: Option<&'a DeviceSymbols>,
    /// The request of `symbols` whose query tokens the rows are (0 for a single request): row
    /// `r` is its token `token_offset + r`. A batch of requests takes one call per request,
    /// each on that request's rows ([`DeviceView::slice`], [`DeviceViewMut::slice_mut`]).
    /// Ignored without symbols.
    pub request: u32,
    /// CTA size; `None` lets the launcher choose (see [`gemm_q_rows`](crate::gemm_q_rows)).
    pub tile_rows: Option<GemmRows>,
    /// Split-K workspace: with one, the launcher may cut the reduction of the tiles in the
    /// launch's partly filled last wave into parts (see [`gemm_q_split`](crate::gemm_q_split));
    /// `None` never splits. Written by the launch, like `out`.
    pub workspace: Option<&'a mut GemmWorkspace>,
    /// Forces the split (needs `workspace`); `None` lets the launcher choose.
    pub split: Option<GemmSplit>,
    /// Launches the CTAs in thread-block clusters of [`GEMM_Q_CLUSTER`](crate::GEMM_Q_CLUSTER)
    /// neighbouring work items (`Some(true)`, the `sm_90a` module only) or not (`Some(false)`);
    /// `None` lets the launcher choose (see [`gemm_q_clustered`](crate::gemm_q_clustered)).
    pub clustered: Option<bool>,
}

impl<'a, T> GemmQArgs<'a, T> {
    /// The dense projection `out = x·wᵀ` over `heads` heads, with every other field at its
    /// default: no bias, token offset 0, no symbols (request 0), and the launcher's choices
    /// without a workspace. Set the rest with struct-update syntax:
    /// `GemmQArgs { symbols: Some(&symbols), ..GemmQArgs::new(x, w, out, heads) }`.
    pub fn new(x: DeviceView<'a, T>, w: DeviceView<'a, T>, out: DeviceViewMut<'a, T>, heads: u32) -> Self {
        GemmQArgs {
            x,
            w,
            bias: None,
            out,
            token_offset: 0,
            heads,
            symbols: None,
            request: 0,
            tile_rows: None,
            workspace: None,
            split: None,
            clustered: None,
        }
    }
}

/// Which heads' reduction slices GEMM-O sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmOMode {
    /// `C = b + Σ_{h : S_c(qb, h) = 0} A_h·W_hᵀ`: the contribution of the cached heads, plus the
    /// bias vector. Without symbols no head is cached and `C = b`.
    Cache,
    /// `Y = C + Σ_{h : S_c(qb, h) = 1} A_h·W_hᵀ`: the computed heads, plus the cache matrix.
    /// Without symbols every head is summed (the dense projection).
    Active,
}

/// The tensors and head layout of one GEMM-O call (`k = heads · head_dim`).
pub struct GemmOArgs<'a, T> {
    /// Attention output `A`, `[m, k]` row-major, heads concatenated along a row.
    pub a: DeviceView<'a, T>,
    /// Weight `W`, `[n, k]` row-major.
    pub w: DeviceView<'a, T>,
    /// [`GemmOMode::Cache`]: optional bias vector `[n]`; [`GemmOMode::Active`]: optional cache
    /// matrix `C`, `[m, n]` row-major. `None` adds nothing.
    pub bias_or_cache: Option<DeviceView<'a, T>>,
    /// Output, `[m, n]` row-major; every element is written.
    pub out: DeviceViewMut<'a, T>,
    /// Which heads to sum.
    pub mode: GemmOMode,
    /// Attention-sequence position of row 0 of `A`; with symbols, a multiple of the CTA rows
    /// (64 or 128, see `tile_rows`).
    pub token_offset: u32,
    /// Heads the reduction axis is split into (at most 256; `k / heads` a multiple of 64).
    pub heads: u32,
    /// Sparse symbols (only the S_c bits of request `request` are read; `block_q` must be a
    /// multiple of the CTA rows); `None` treats every head as computed.
    pub symbols: Option<&'a DeviceSymbols>,
    /// The request of `symbols` whose query tokens the rows are (0 for a single request): row
    /// `r` is its token `token_offset + r`. A batch of requests takes one call per request,
    /// each on that request's rows ([`DeviceView::slice`], [`DeviceViewMut::slice_mut`]).
    /// Ignored without symbols.
    pub request: u32,
    /// CTA size; `None` lets the launcher choose (see [`gemm_o_rows`](crate::gemm_o_rows)). With
    /// symbols, 128-row CTAs need `token_offset` and `block_q` to be multiples of 128, 64-row
    /// ones of 64.
    pub tile_rows: Option<GemmRows>,
    /// Workspace for the persistent kernel's tile counters: with one, the launcher may run
    /// the launch on the persistent kernel (see [`gemm_o_persistent`](crate::gemm_o_persistent));
    /// `None` never does. Written by the launch, like `out`.
    pub workspace: Option<&'a mut GemmWorkspace>,
    /// `Some(true)` forces the persistent `sm_90a` kernel (needs `workspace`, the Hopper
    /// module and 128-row CTAs, which it implies when `tile_rows` is `None`), `Some(false)`
    /// the per-tile kernels; `None` lets the launcher choose.
    pub persistent: Option<bool>,
}

impl<'a, T> GemmOArgs<'a, T> {
    /// The projection of `a` in `mode` over `heads` heads, with every other field at its
    /// default: no bias or cache, token offset 0, no symbols (request 0: in active mode every
    /// head is summed, in cache mode none), and the launcher's choices without a workspace.
    /// Set the rest with struct-update syntax:
    /// `GemmOArgs { symbols: Some(&symbols), ..GemmOArgs::new(a, w, out, mode, heads) }`.
    pub fn new(
        a: DeviceView<'a, T>,
        w: DeviceView<'a, T>,
        out: DeviceViewMut<'a, T>,
        mode: GemmOMode,
        heads: u32,
    ) -> Self {
        GemmOArgs {
            a,
            w,
            bias_or_cache: None,
            out,
            mode,
            token_offset: 0,
            heads,
            symbols: None,
            request: 0,
            tile_rows: None,
            workspace: None,
            persistent: None,
        }
    }
}
