//! Sequence-parallel sparse attention in the style of DeepSpeed-Ulysses.
//!
//! `P` ranks (one GPU each) hold equal token shards of the queries, keys, values and output,
//! token-major `[T/P, H, D]`: rank `r` holds global tokens `r·T/P .. (r+1)·T/P` of the
//! concatenated (ragged) batch. Attention needs all tokens of a head, so:
//!
//! ```text
//!  rank r: q/k/v shard [T/P, H, D]            (token shard, all heads)
//!    │ pack: P strided 2D copies (cuMemcpy2DAsync), one per peer j:
//!    │   rows = T/P tokens, row = heads j·H/P..(j+1)·H/P = (H/P)·D elements,
//!    │   source pitch H·D  →  send buffer [P][T/P, H/P, D] (chunk j contiguous)
//!    ▼
//!  all-to-all #1 (one NCCL group: ncclSend chunk j → rank j, ncclRecv chunk j ← rank j)
//!    ▼
//!  [T, H/P, D]: chunk j = tokens of rank j for heads r·H/P..(r+1)·H/P, in token order
//!    │ block-sparse attention on H/P heads (plan with heads = H/P over the global
//!    │ indptrs; symbols = slice_heads(global symbols, rank_heads(H, P, r)))
//!    ▼
//!  local output [T, H/P, D]: chunk j = the rows of rank j's tokens (contiguous)
//!    │ all-to-all #2: chunk j → rank j, receive chunk j ← rank j
//!    ▼
//!  staging [P][T/P, H/P, D]: chunk j = my tokens, heads of rank j
//!    │ unpack: P strided 2D copies, destination pitch H·D
//!    ▼
//!  out shard [T/P, H, D]
//! ```
//!
//! Cached blocks (S_c = 0) keep the output buffer's contents in single-GPU attention. To keep
//! that meaning, when the global S_c has any 0 bit (a decision every rank takes identically
//! from the same global symbols), the current contents of the output shards travel through
//! all-to-all #1 too (packed like q), so the local output starts as the global output's head
//! slice; the kernel then overwrites only computed rows, and all-to-all #2 returns every row.
//!
//! The strided copies of both directions are described by [`UlyssesLayout`] (the `layout`
//! module), which is pure and tested on the CPU against a reference all-to-all.
//!
//! Limits of this first version: token-major K/V only ([`KvLayout::TokenMajor`]), no
//! log-sum-exp output, `T` and `T_kv` divisible by `P`, `H` divisible by `P`.

use core::ops::Range;

use cust::stream::Stream;
use flashomni_symbols::{PackedSymbols, SymbolsView, rank_heads, read_bit, slice_heads};

use super::layout::{UlyssesLayout, copy_all};
use super::nccl::{AllToAll, Communicator};
use crate::attention::{AttentionArgs, AttentionConfig, AttentionPlan, KvLayout};
use crate::device_symbols::DeviceSymbols;
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::memory::{DeviceArray, DeviceView, DeviceViewMut};
use crate::validate::check_len;

/// Whether any S_c bit of `symbols` is 0 (some block keeps the output buffer's contents).
fn any_cached(symbols: &SymbolsView<'_>) -> bool {
    let geometry = symbols.geometry();
    (0..geometry.num_requests()).any(|b| {
        let segment = symbols.caching_segment(b).unwrap_or(&[]);
        (0..geometry.caching_bits(b)).any(|i| read_bit(segment, i) == Some(false))
    })
}

/// The shards of one [`UlyssesAttention::run`] call, each token-major `[T/P, H, D]` (keys and
/// values `[T_kv/P, H, D]`).
pub struct UlyssesArgs<'a, T> {
    /// This rank's query shard.
    pub q: DeviceView<'a, T>,
    /// This rank's key shard.
    pub k: DeviceView<'a, T>,
    /// This rank's value shard.
    pub v: DeviceView<'a, T>,
    /// This rank's output shard. Rows of cached (S_c = 0) blocks keep their contents.
    pub out: DeviceViewMut<'a, T>,
    /// The **global** symbols (all `H` heads, the plan's requests), identical on every rank;
    /// `None` runs dense attention.
    pub symbols: Option<SymbolsView<'a>>,
}

/// One rank of sequence-parallel sparse attention (see the [module docs](self)).
///
/// Owns the communicator, the attention plan for its heads and the exchange buffers (about
/// 4 q-shards + 3 kv-shards of device memory). Successive runs must use the same stream, or
/// synchronise in between: the buffers are reused.
pub struct UlyssesAttention<T: Element> {
    comm: Communicator,
    plan: AttentionPlan,
    total_heads: u32,
    heads: Range<u32>,
    q_layout: UlyssesLayout,
    kv_layout: UlyssesLayout,
    send_q: DeviceArray<T>,
    send_k: DeviceArray<T>,
    send_v: DeviceArray<T>,
    /// Packs the output shard for all-to-all #1, receives all-to-all #2.
    staging: DeviceArray<T>,
    q_local: DeviceArray<T>,
    k_local: DeviceArray<T>,
    v_local: DeviceArray<T>,
    out_local: DeviceArray<T>,
    symbols: Option<DeviceSymbols>,
    /// The host copy of what `symbols` holds, to skip identical re-uploads.
    uploaded: Option<PackedSymbols>,
    /// The global S_c and S_s bytes `uploaded` was sliced from: equal bytes (under the checked
    /// geometry) mean equal symbols, so a dispatch step with unchanged symbols skips slicing.
    source: Option<(Vec<u8>, Vec<u8>)>,
}

impl<T: Element> UlyssesAttention<T> {
    /// Builds rank `comm.rank()` of `comm.ranks()`: `config` describes the **global** problem
    /// (all `H` heads), `qo_indptr` / `kv_indptr` the global ragged batch (as for
    /// [`AttentionPlan::new`]). The rank computes heads [`rank_heads`]`(H, P, rank)` on every
    /// token.
    ///
    /// On error `comm` is dropped, which destroys the communicator.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for head-major K/V; [`Error::InvalidShape`] when `H`, `T` or
    /// `T_kv` is not divisible by `P`, or `engine` and `comm` are on different devices; the
    /// errors of [`AttentionPlan::new`]; [`Error::Cuda`] when allocation fails.
    pub fn new(
        engine: &Engine,
        comm: Communicator,
        config: AttentionConfig,
        qo_indptr: &[u32],
        kv_indptr: &[u32],
    ) -> Result<Self> {
        if config.kv_layout != KvLayout::TokenMajor {
            return Err(Error::Unsupported("sequence-parallel attention needs token-major keys and values".into()));
        }
        if engine.device() != comm.device() {
            return Err(Error::InvalidShape("the engine and the communicator are on different devices".into()));
        }
        let ranks = comm.ranks();
        let heads = rank_heads(config.heads, ranks, comm.rank())
            .map_err(|err| Error::InvalidShape(format!("{} heads over {ranks} ranks: {err}", config.heads)))?;
        let local = AttentionConfig { heads: heads.end - heads.start, ..config };
        let plan = AttentionPlan::new(engine, local, qo_indptr, kv_indptr)?;
        let (total_q, total_kv) = (plan.total_q(), plan.total_kv());
        if !total_q.is_multiple_of(ranks) || !total_kv.is_multiple_of(ranks) {
            return Err(Error::InvalidShape(format!(
                "{total_q} query and {total_kv} key tokens cannot be split into {ranks} equal shards"
            )));
        }
        let q_layout = UlyssesLayout::new(ranks, config.heads, config.head_dim, total_q / ranks)?;
        let kv_layout = UlyssesLayout::new(ranks, config.heads, config.head_dim, total_kv / ranks)?;
        let (q_len, kv_len) = (q_layout.shard_elements(), kv_layout.shard_elements());
        Ok(Self {
            comm,
            plan,
            total_heads: config.heads,
            heads,
            q_layout,
            kv_layout,
            send_q: DeviceArray::uninitialized(q_len)?,
            send_k: DeviceArray::uninitialized(kv_len)?,
            send_v: DeviceArray::uninitialized(kv_len)?,
            staging: DeviceArray::uninitialized(q_len)?,
            q_local: DeviceArray::uninitialized(q_layout.local_elements())?,
            k_local: DeviceArray::uninitialized(kv_layout.local_elements())?,
            v_local: DeviceArray::uninitialized(kv_layout.local_elements())?,
            out_local: DeviceArray::uninitialized(q_layout.local_elements())?,
            symbols: None,
            uploaded: None,
            source: None,
        })
    }

    /// The attention plan of this rank's heads (over all tokens).
    pub fn plan(&self) -> &AttentionPlan {
        &self.plan
    }

    /// The global heads this rank computes.
    pub fn local_heads(&self) -> Range<u32> {
        self.heads.clone()
    }

    /// The communicator.
    pub fn communicator(&self) -> &Communicator {
        &self.comm
    }

    /// Frees the buffers and returns the communicator (to build another plan with it).
    /// Wait for the stream first if a run may still be in flight.
    pub fn into_communicator(self) -> Communicator {
        self.comm
    }

    /// Layout of the query / output exchanges.
    pub fn q_layout(&self) -> &UlyssesLayout {
        &self.q_layout
    }

    /// Layout of the key / value exchanges.
    pub fn kv_layout(&self) -> &UlyssesLayout {
        &self.kv_layout
    }

    /// Elements of a query or output shard `[T/P, H, D]`.
    pub fn q_shard_elements(&self) -> usize {
        self.q_layout.shard_elements()
    }

    /// Elements of a key or value shard `[T_kv/P, H, D]`.
    pub fn kv_shard_elements(&self) -> usize {
        self.kv_layout.shard_elements()
    }

    /// Slices the global symbols to this rank's heads and uploads them unless the device
    /// already holds exactly these bits.
    fn prepare_symbols(&mut self, symbols: &SymbolsView<'_>) -> Result<()> {
        let geometry = symbols.geometry();
        let config = self.plan.config();
        if geometry.heads() != self.total_heads
            || geometry.block_q() != config.block_q
            || geometry.block_kv() != config.block_kv
            || geometry.requests() != self.plan.requests()
        {
            return Err(Error::InvalidShape(format!(
                "symbols are for heads={} block_q={} block_kv={} and their own sequence lengths; \
                 the sequence-parallel plan has heads={} block_q={} block_kv={}",
                geometry.heads(),
                geometry.block_q(),
                geometry.block_kv(),
                self.total_heads,
                config.block_q,
                config.block_kv
            )));
        }
        if self.source.as_ref().is_some_and(|(caching, skip)| caching == symbols.caching() && skip == symbols.skip()) {
            return Ok(());
        }
        let local = slice_heads(symbols, self.heads.clone())?;
        if self.uploaded.as_ref() != Some(&local) {
            // Forget what was uploaded first: if the upload fails part-way, the device may hold
            // a mix of old and new state, and no later call may take it for either.
            self.source = None;
            self.uploaded = None;
            match &mut self.symbols {
                // `update` waits for earlier runs that may still read the old bits.
                Some(device) => device.update(&local.view())?,
                None => self.symbols = Some(DeviceSymbols::upload(&local.view())?),
            }
            self.uploaded = Some(local);
        }
        self.source = Some((symbols.caching().to_vec(), symbols.skip().to_vec()));
        Ok(())
    }

    /// Runs this rank's part of sequence-parallel attention on `stream`, asynchronously: every
    /// rank must call it (a collective), with shards of the same shapes and the same global
    /// symbols. Nothing checks that across ranks: ranks that disagree exchange mismatched
    /// transfers, which corrupts the output or blocks. On return the work is enqueued; the
    /// result is in `args.out` once `stream` has run it.
    ///
    /// # Errors
    /// Shape and symbol errors ([`Error::BufferTooSmall`], [`Error::InvalidShape`],
    /// [`Error::Symbols`]) are reported before anything is enqueued (but after a possible
    /// symbol upload). A driver or NCCL error part-way leaves the output shard unspecified,
    /// and the other ranks may then block in their transfers.
    pub fn run(&mut self, engine: &Engine, args: UlyssesArgs<'_, T>, stream: &Stream) -> Result<()> {
        if engine.device() != self.comm.device() {
            return Err(Error::InvalidShape("the engine is not on the communicator's device".into()));
        }
        let (q_len, kv_len) = (self.q_layout.shard_elements(), self.kv_layout.shard_elements());
        for (buffer, actual, required) in [
            ("q", args.q.len(), q_len),
            ("k", args.k.len(), kv_len),
            ("v", args.v.len(), kv_len),
            ("out", args.out.len(), q_len),
        ] {
            check_len(buffer, actual, required as u64)?;
        }
        engine.make_current()?;
        let forward_out = match &args.symbols {
            Some(symbols) => {
                self.prepare_symbols(symbols)?;
                any_cached(symbols)
            }
            None => false,
        };

        // 1. Pack each shard's per-peer head slices into contiguous chunks.
        let (q_pack, kv_pack) = (self.q_layout.pack_copies(), self.kv_layout.pack_copies());
        let mut packs = vec![
            (&q_pack, args.q.address(), self.send_q.view().address()),
            (&kv_pack, args.k.address(), self.send_k.view().address()),
            (&kv_pack, args.v.address(), self.send_v.view().address()),
        ];
        if forward_out {
            packs.push((&q_pack, args.out.address(), self.staging.view().address()));
        }
        for (copies, src, dst) in packs {
            // SAFETY: sources are shards checked above to hold `[T/P, H, D]`, destinations our
            // own shard-sized buffers; the pack copies stay inside both (see `pack_copies`).
            unsafe { copy_all::<T>(copies, src, dst, stream) }?;
        }

        // 2. All-to-all #1: token shards → head slices of the whole sequence.
        let (q_chunk, kv_chunk) = (self.q_layout.chunk_elements(), self.kv_layout.chunk_elements());
        let mut exchanges = vec![
            AllToAll { send: self.send_q.view(), recv: self.q_local.view_mut(), chunk: q_chunk },
            AllToAll { send: self.send_k.view(), recv: self.k_local.view_mut(), chunk: kv_chunk },
            AllToAll { send: self.send_v.view(), recv: self.v_local.view_mut(), chunk: kv_chunk },
        ];
        if forward_out {
            exchanges.push(AllToAll { send: self.staging.view(), recv: self.out_local.view_mut(), chunk: q_chunk });
        }
        self.comm.all_to_all(&exchanges, stream)?;
        drop(exchanges);

        // 3. Attention on this rank's heads over every token.
        let attention = AttentionArgs {
            q: self.q_local.view(),
            k: self.k_local.view(),
            v: self.v_local.view(),
            out: self.out_local.view_mut(),
            lse: None,
            symbols: if args.symbols.is_some() { self.symbols.as_ref() } else { None },
        };
        engine.attention(&self.plan, attention, stream)?;

        // 4. All-to-all #2: each peer's token rows back to it.
        let back = [AllToAll { send: self.out_local.view(), recv: self.staging.view_mut(), chunk: q_chunk }];
        self.comm.all_to_all(&back, stream)?;

        // 5. Unpack the per-peer head slices into the output shard.
        engine.make_current()?;
        let unpack = self.q_layout.unpack_copies();
        // SAFETY: the staging buffer holds `P` chunks `[T/P, H/P, D]`; the output shard was
        // checked to hold `[T/P, H, D]`; the unpack copies stay inside both.
        unsafe { copy_all::<T>(&unpack, self.staging.view().address(), args.out.address(), stream) }
    }
}
