//! Block-sparse attention: configuration, the per-shape plan, and the launch.
//!
//! ```text
//! AttentionConfig ──► AttentionPlan::new (host: validate indptrs, build the CTA work list,
//!                     upload once per shape)
//! DeviceSymbols ────► Engine::attention (validate buffers and symbols against the plan;
//!                     launch the symbols' computed (request, q tile, head) items, or every item
//!                     of the plan when dense, as 64- or 128-row CTAs)
//! ```

use flashomni_kernels::abi::{
    self, ATTENTION_THREADS, ATTENTION_TILE_KV, ATTENTION_TILE_Q, AttentionParams, AttentionRows,
};
use flashomni_symbols::{DEFAULT_BLOCK, RequestShape};

use crate::device_symbols::DeviceSymbols;
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{LaunchShape, launch};
use crate::memory::{DeviceArray, DeviceView, DeviceViewMut};
use crate::schedule;
use crate::validate::{check_aligned, check_len};

/// How keys and values are laid out in memory. Queries and outputs are always token-major.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvLayout {
    /// `[total_kv, heads, head_dim]` (FlashInfer's "NHD").
    #[default]
    TokenMajor,
    /// `[heads, total_kv, head_dim]` (FlashInfer's "HND").
    HeadMajor,
}

/// Static description of an attention problem (everything but the sequence lengths).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Query heads = key/value heads (the sparse mode is multi-head attention).
    pub heads: u32,
    /// Head dimension: 64 or 128.
    pub head_dim: u32,
    /// Query symbol block in tokens (a multiple of 128, the attention CTA's query rows;
    /// FlashOmni uses 128).
    pub block_q: u32,
    /// Key/value symbol block in tokens (multiple of 64; FlashOmni uses 128).
    pub block_kv: u32,
    /// Key/value memory layout.
    pub kv_layout: KvLayout,
    /// Softmax scale; `None` means `1/sqrt(head_dim)`.
    pub sm_scale: Option<f32>,
    /// CTA size; `None` lets each launch choose (64-row CTAs for launches too short to fill
    /// the GPU with 128-row ones).
    pub cta_rows: Option<AttentionRows>,
}

impl AttentionConfig {
    /// `heads` × `head_dim` attention with 128-token symbol blocks, token-major K/V, the
    /// default scale and the CTA size chosen per launch.
    pub fn new(heads: u32, head_dim: u32) -> Self {
        Self {
            heads,
            head_dim,
            block_q: DEFAULT_BLOCK,
            block_kv: DEFAULT_BLOCK,
            kv_layout: KvLayout::TokenMajor,
            sm_scale: None,
            cta_rows: None,
        }
    }

    /// The same configuration with another key/value layout.
    pub fn with_kv_layout(mut self, kv_layout: KvLayout) -> Self {
        self.kv_layout = kv_layout;
        self
    }

    /// The same configuration with explicit symbol block sizes.
    pub fn with_blocks(mut self, block_q: u32, block_kv: u32) -> Self {
        self.block_q = block_q;
        self.block_kv = block_kv;
        self
    }

    /// The same configuration with an explicit softmax scale.
    pub fn with_sm_scale(mut self, sm_scale: f32) -> Self {
        self.sm_scale = Some(sm_scale);
        self
    }

    /// The same configuration with a fixed CTA size.
    pub fn with_cta_rows(mut self, rows: AttentionRows) -> Self {
        self.cta_rows = Some(rows);
        self
    }

    /// The softmax scale in effect.
    pub fn scale(&self) -> f32 {
        self.sm_scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }

    fn validate(&self) -> Result<()> {
        if self.heads == 0 {
            return Err(Error::InvalidShape("heads must be at least 1".into()));
        }
        if !matches!(self.head_dim, 64 | 128) {
            return Err(Error::Unsupported(format!("head_dim {} (supported: 64, 128)", self.head_dim)));
        }
        for (name, block, tile) in
            [("block_q", self.block_q, ATTENTION_TILE_Q), ("block_kv", self.block_kv, ATTENTION_TILE_KV)]
        {
            if block == 0 || !block.is_multiple_of(tile) {
                return Err(Error::Unsupported(format!("{name} = {block} (must be a positive multiple of {tile})")));
            }
        }
        let scale = self.scale();
        if !scale.is_finite() || scale <= 0.0 {
            return Err(Error::InvalidShape(format!("sm_scale {scale} must be positive and finite")));
        }
        Ok(())
    }
}

/// A ragged batch's attention plan: validated sequence offsets and the CTA work list, in
/// device memory. Build it once per shape and reuse it for every step.
pub struct AttentionPlan {
    config: AttentionConfig,
    requests: Vec<RequestShape>,
    total_q: u32,
    total_kv: u32,
    qo_indptr: DeviceArray<u32>,
    kv_indptr: DeviceArray<u32>,
    work: DeviceArray<u32>,
    work_items: u32,
}

/// Checks a token-offset indptr and returns the per-request lengths.
fn lengths(name: &str, indptr: &[u32]) -> Result<Vec<u32>> {
    if indptr.first() != Some(&0) {
        return Err(Error::InvalidShape(format!("{name} must start with 0 and have batch + 1 entries")));
    }
    indptr
        .windows(2)
        .enumerate()
        .map(|(b, pair)| {
            pair[1].checked_sub(pair[0]).ok_or_else(|| {
                Error::InvalidShape(format!("{name} decreases at request {b}: {} then {}", pair[0], pair[1]))
            })
        })
        .collect()
}

impl AttentionPlan {
    /// Validates the configuration and the token offsets (`qo_indptr`, `kv_indptr`: `batch + 1`
    /// non-decreasing offsets starting at 0) and uploads the plan. Must be called with the
    /// engine's context current (true after [`Engine::new`] on this thread, or after
    /// [`Engine::make_current`]).
    pub fn new(engine: &Engine, config: AttentionConfig, qo_indptr: &[u32], kv_indptr: &[u32]) -> Result<Self> {
        config.validate()?;
        engine.make_current()?;
        let q_lens = lengths("qo_indptr", qo_indptr)?;
        let kv_lens = lengths("kv_indptr", kv_indptr)?;
        if q_lens.len() != kv_lens.len() {
            return Err(Error::InvalidShape(format!(
                "qo_indptr describes {} requests but kv_indptr {}",
                q_lens.len(),
                kv_lens.len()
            )));
        }
        let total_q = *qo_indptr.last().expect("checked non-empty");
        let total_kv = *kv_indptr.last().expect("checked non-empty");
        let elements = |tokens: u32| tokens as u64 * config.heads as u64 * config.head_dim as u64;
        if elements(total_q.max(total_kv)) > u32::MAX as u64 {
            return Err(Error::InvalidShape("tokens × heads × head_dim must fit in 32 bits".into()));
        }
        let requests: Vec<RequestShape> =
            q_lens.iter().zip(&kv_lens).map(|(&q, &kv)| RequestShape::new(q, kv)).collect();
        let work = schedule::dense_work(&requests, config.heads);
        Ok(Self {
            config,
            requests,
            total_q,
            total_kv,
            qo_indptr: DeviceArray::from_host(qo_indptr)?,
            kv_indptr: DeviceArray::from_host(kv_indptr)?,
            work_items: (work.len() / 3) as u32,
            work: DeviceArray::from_host(&work)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// Every request's (query length, key length).
    pub fn requests(&self) -> &[RequestShape] {
        &self.requests
    }

    /// Total query tokens.
    pub fn total_q(&self) -> u32 {
        self.total_q
    }

    /// Total key/value tokens.
    pub fn total_kv(&self) -> u32 {
        self.total_kv
    }

    /// Elements of q and out: `total_q · heads · head_dim`.
    pub fn q_elements(&self) -> usize {
        self.total_q as usize * self.config.heads as usize * self.config.head_dim as usize
    }

    /// Elements of k and v: `total_kv · heads · head_dim`.
    pub fn kv_elements(&self) -> usize {
        self.total_kv as usize * self.config.heads as usize * self.config.head_dim as usize
    }

    fn check_symbols(&self, symbols: &DeviceSymbols) -> Result<()> {
        let c = &self.config;
        if symbols.heads != c.heads || symbols.block_q != c.block_q || symbols.block_kv != c.block_kv {
            return Err(Error::InvalidShape(format!(
                "symbols are for heads={} block_q={} block_kv={}, the plan has heads={} block_q={} block_kv={}",
                symbols.heads, symbols.block_q, symbols.block_kv, c.heads, c.block_q, c.block_kv
            )));
        }
        if symbols.requests != self.requests {
            return Err(Error::InvalidShape("symbols were built for other sequence lengths than the plan's".into()));
        }
        Ok(())
    }
}

/// The tensors of one attention call. Element counts are checked against the plan.
pub struct AttentionArgs<'a, T> {
    /// Queries `[total_q, heads, head_dim]`.
    pub q: DeviceView<'a, T>,
    /// Keys, in the plan's [`KvLayout`].
    pub k: DeviceView<'a, T>,
    /// Values, in the plan's [`KvLayout`].
    pub v: DeviceView<'a, T>,
    /// Output `[total_q, heads, head_dim]`. Rows of cached (S_c = 0) blocks are not written.
    pub out: DeviceViewMut<'a, T>,
    /// Optional base-2 log-sum-exp `[total_q, heads]` of the scaled logits (−∞ for a row whose
    /// every KV block is dropped). Rows of cached blocks are not written.
    pub lse: Option<DeviceViewMut<'a, f32>>,
    /// Sparse symbols; `None` runs dense attention.
    pub symbols: Option<&'a DeviceSymbols>,
}

impl Engine {
    /// Runs block-sparse attention on `stream`, asynchronously.
    ///
    /// For each request, query block `qb` and head `h` with S_c = 1, every query row attends to
    /// the keys of the KV blocks with S_s = 1 (softmax over the kept keys only); rows of blocks
    /// with S_c = 0 keep the output buffer's contents.
    pub fn attention<T: Element>(
        &self,
        plan: &AttentionPlan,
        args: AttentionArgs<'_, T>,
        stream: &cust::stream::Stream,
    ) -> Result<()> {
        plan.work.check_context(self, "plan")?;
        let c = plan.config;
        // With symbols, only their computed blocks are launched (see `schedule`).
        let (work, work_items) = match args.symbols {
            None => (plan.work.view().address(), plan.work_items),
            Some(symbols) => {
                symbols.check_context(self)?;
                plan.check_symbols(symbols)?;
                let (work, items) = symbols.attention_work.as_ref().ok_or_else(|| {
                    Error::Unsupported(format!("symbols with block_q {} cannot drive attention", symbols.block_q))
                })?;
                (work.view().address(), *items)
            }
        };
        let rows = c.cta_rows.unwrap_or_else(|| schedule::choose_rows(work_items, self.multiprocessors()));
        let entry = abi::attention_entry(T::KIND, c.head_dim, rows)
            .ok_or_else(|| Error::Unsupported(format!("{} attention with head_dim {}", T::NAME, c.head_dim)))?;
        check_len("q", args.q.len(), plan.q_elements() as u64)?;
        check_len("k", args.k.len(), plan.kv_elements() as u64)?;
        check_len("v", args.v.len(), plan.kv_elements() as u64)?;
        check_len("out", args.out.len(), plan.q_elements() as u64)?;
        if let Some(lse) = &args.lse {
            check_len("lse", lse.len(), u64::from(plan.total_q) * u64::from(c.heads))?;
            check_aligned("lse", lse.address(), 4)?;
        }
        for (name, address) in
            [("q", args.q.address()), ("k", args.k.address()), ("v", args.v.address()), ("out", args.out.address())]
        {
            check_aligned(name, address, 16)?;
        }
        let (hd, heads) = (c.head_dim, c.heads);
        let (kv_stride_token, kv_stride_head) = match c.kv_layout {
            KvLayout::TokenMajor => (heads * hd, hd),
            KvLayout::HeadMajor => (hd, plan.total_kv * hd),
        };
        let symbol_addresses = |pick: fn(&DeviceSymbols) -> u64| args.symbols.map_or(0, pick);
        let params = AttentionParams {
            q: args.q.address(),
            k: args.k.address(),
            v: args.v.address(),
            o: args.out.address(),
            lse: args.lse.as_ref().map_or(0, |lse| lse.address()),
            qo_indptr: plan.qo_indptr.view().address(),
            kv_indptr: plan.kv_indptr.view().address(),
            work,
            caching: symbol_addresses(|s| s.caching.view().address()),
            caching_indptr: symbol_addresses(|s| s.caching_indptr.view().address()),
            skip: symbol_addresses(|s| s.skip.view().address()),
            skip_indptr: symbol_addresses(|s| s.skip_indptr.view().address()),
            q_stride_token: heads * hd,
            q_stride_head: hd,
            k_stride_token: kv_stride_token,
            k_stride_head: kv_stride_head,
            v_stride_token: kv_stride_token,
            v_stride_head: kv_stride_head,
            o_stride_token: heads * hd,
            o_stride_head: hd,
            heads,
            block_q: c.block_q,
            block_kv: c.block_kv,
            scale_log2: c.scale() * core::f32::consts::LOG2_E,
        };
        self.make_current()?;
        let shape = LaunchShape {
            grid: (work_items * rows.ctas_per_item(), 1, 1),
            threads: ATTENTION_THREADS,
            shared_bytes: abi::attention_shared_bytes(hd, rows),
            cluster: 1,
        };
        // SAFETY: the entry takes one `AttentionParams`; every buffer was checked against the
        // plan above, the plan's arrays live as long as `plan`, and the views borrow their
        // memory for the duration of this call (the caller keeps it alive until the stream
        // has run the launch, as with any asynchronous CUDA call).
        unsafe { launch(self.function(entry)?, shape, stream.as_inner(), &params) }
    }
}
