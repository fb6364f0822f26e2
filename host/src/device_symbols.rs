//! Sparse symbols uploaded to the device, ready for the kernels.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use flashomni_symbols::{RequestShape, SymbolsView, read_bit};

use crate::error::{CudaContext, Result};
use crate::memory::DeviceArray;
use crate::schedule;

/// Packed S_c and S_s with their byte-offset indptrs, in device memory.
///
/// Built from a validated [`SymbolsView`], so the kernels can trust every segment length.
/// Uploading also derives the attention work list (only the computed blocks, heaviest first),
/// which costs one pass over the bits on the host (a few milliseconds at 33K tokens).
/// The geometry it was built for is kept, and each launch checks it against its own shape.
pub struct DeviceSymbols {
    pub(crate) caching: DeviceArray<u8>,
    pub(crate) caching_indptr: DeviceArray<u32>,
    pub(crate) skip: DeviceArray<u8>,
    pub(crate) skip_indptr: DeviceArray<u32>,
    pub(crate) heads: u32,
    pub(crate) block_q: u32,
    pub(crate) block_kv: u32,
    pub(crate) requests: Vec<RequestShape>,
    /// The attention work list of the computed blocks, heaviest first, and its item count;
    /// `None` when the symbols cannot drive attention (`block_q` not a multiple of the
    /// attention work-item rows, or more query tokens × heads than any attention plan takes).
    pub(crate) attention_work: Option<(DeviceArray<u32>, u32)>,
    /// The packed S_c bytes on the host (the GEMMs build their tile lists from them).
    pub(crate) caching_host: Vec<u8>,
    /// The S_c byte-offset indptr on the host (one entry per request, plus one).
    pub(crate) caching_indptr_host: Vec<u32>,
    /// The fraction of each request's (query block, head) pairs that S_c computes (`None` for
    /// a request without pairs): the GEMM-O launcher's estimate of its work.
    pub(crate) computed_fractions: Vec<Option<f64>>,
    /// GEMM-Q tile lists already built for these bits, by launch shape (at most
    /// [`MAX_TILE_LISTS`]). Entries stay until [`DeviceSymbols::update`] or until the cache is
    /// full; both first wait for every launch that may read them. Launches are enqueued under
    /// this lock (`with_gemm_q_tiles`), so none can still be on its way to the queue then.
    pub(crate) gemm_q_tiles: Mutex<HashMap<GemmTileShape, (DeviceArray<u32>, u32)>>,
}

/// GEMM-Q tile lists kept per [`DeviceSymbols`]: a caller whose launch shapes change every
/// step (say, a growing `m`) would otherwise hold device memory for every shape it ever
/// launched. A full cache is emptied (after a context-wide wait) before the next list is built.
const MAX_TILE_LISTS: usize = 16;

/// The launch shape a GEMM-Q tile list depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmTileShape {
    /// Request whose S_c bits the launch reads.
    pub request: u32,
    /// Attention-sequence position of row 0.
    pub token_offset: u32,
    /// Rows.
    pub m: u32,
    /// Columns.
    pub n: u32,
    /// Columns per head.
    pub head_dim: u32,
    /// Rows per tile.
    pub tile_rows: u32,
}

/// The fraction of each request's (query block, head) pairs whose S_c bit is 1 in `view`
/// (`None` for a request without pairs).
fn computed_fractions(view: &SymbolsView<'_>) -> Vec<Option<f64>> {
    let geometry = view.geometry();
    (0..geometry.requests().len())
        .map(|request| {
            let pairs = geometry.caching_bits(request);
            let segment = view.caching_segment(request).unwrap_or(&[]);
            let computed = (0..pairs).filter(|&index| read_bit(segment, index) == Some(true)).count();
            (pairs > 0).then(|| computed as f64 / f64::from(pairs))
        })
        .collect()
}

/// Uploads the attention work list of `view` (see `schedule::sparse_work`).
fn upload_attention_work(view: &SymbolsView<'_>) -> Result<Option<(DeviceArray<u32>, u32)>> {
    schedule::sparse_work(view)
        .map(|work| {
            // At most u32::MAX / 64 (token, head) pairs, so the count fits.
            let items = (work.len() / 3) as u32;
            // A launch needs at least one element to point at, even with no item.
            let array =
                if work.is_empty() { DeviceArray::from_host(&[0u32; 3])? } else { DeviceArray::from_host(&work)? };
            Ok((array, items))
        })
        .transpose()
}

impl DeviceSymbols {
    /// Uploads the buffers of a validated view.
    pub fn upload(view: &SymbolsView<'_>) -> Result<Self> {
        let geometry = view.geometry();
        Ok(Self {
            caching: DeviceArray::from_host(view.caching())?,
            caching_indptr: DeviceArray::from_host(view.caching_indptr())?,
            skip: DeviceArray::from_host(view.skip())?,
            skip_indptr: DeviceArray::from_host(view.skip_indptr())?,
            heads: geometry.heads(),
            block_q: geometry.block_q(),
            block_kv: geometry.block_kv(),
            requests: geometry.requests().to_vec(),
            attention_work: upload_attention_work(view)?,
            computed_fractions: computed_fractions(view),
            caching_host: view.caching().to_vec(),
            caching_indptr_host: view.caching_indptr().to_vec(),
            gemm_q_tiles: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the symbol bits with those of `view`, which must have the same geometry
    /// (the update-step path: new bits, same bit buffers).
    ///
    /// Launches already enqueued may still read the old bits and work list, on any stream, so
    /// this first waits for all work of the current context (`cuCtxSynchronize`). Symbol
    /// updates happen once per update step, where that wait costs little.
    ///
    /// # Errors
    /// A geometry mismatch is reported before anything changes. A driver error part-way (out
    /// of memory for the new work list is checked before the bits are overwritten) may leave
    /// the bits partly replaced: update again before launching with these symbols.
    pub fn update(&mut self, view: &SymbolsView<'_>) -> Result<()> {
        let geometry = view.geometry();
        if geometry.heads() != self.heads
            || geometry.block_q() != self.block_q
            || geometry.block_kv() != self.block_kv
            || geometry.requests() != self.requests.as_slice()
        {
            return Err(crate::Error::InvalidShape(
                "symbol update has a different geometry than the uploaded symbols".into(),
            ));
        }
        cust::context::CurrentContext::synchronize().during("waiting for launches that read the old symbols")?;
        let attention_work = upload_attention_work(view)?;
        self.caching.upload(view.caching())?;
        self.skip.upload(view.skip())?;
        self.attention_work = attention_work;
        // Same geometry, so the same indptr.
        self.caching_host = view.caching().to_vec();
        self.computed_fractions = computed_fractions(view);
        self.gemm_q_tiles.get_mut().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }

    /// Runs `use_list` with the device address and length of the GEMM-Q tile list for
    /// `shape`, built by `build` from the S_c segment of `shape.request` the first time this
    /// shape is launched. Must be called with the symbols' context current (the list is
    /// allocated there, and a full cache is emptied after waiting for that context's launches).
    ///
    /// The lists stay locked while `use_list` runs, so a launch that reads the list must be
    /// enqueued inside it: then every launch holding a list's address is enqueued before any
    /// other caller can free that list, and the wait before an eviction covers it.
    pub(crate) fn with_gemm_q_tiles<R>(
        &self,
        shape: GemmTileShape,
        build: impl FnOnce(&[u8]) -> Vec<u32>,
        use_list: impl FnOnce(u64, u32) -> Result<R>,
    ) -> Result<R> {
        let mut lists = self.gemm_q_tiles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((tiles, count)) = lists.get(&shape) {
            return use_list(tiles.view().address(), *count);
        }
        if lists.len() >= MAX_TILE_LISTS {
            cust::context::CurrentContext::synchronize().during("waiting for launches that read old tile lists")?;
            lists.clear();
        }
        let (_, segment) = self.caching_segment(shape.request)?;
        let tiles = build(segment);
        let count = u32::try_from(tiles.len() / 2)
            .map_err(|_| crate::Error::InvalidShape(format!("a GEMM-Q tile list of {} tiles", tiles.len() / 2)))?;
        // A launch needs an address even for an empty list.
        let array = DeviceArray::from_host(if tiles.is_empty() { &[0u32; 2] } else { &tiles })?;
        let address = array.view().address();
        lists.insert(shape, (array, count));
        use_list(address, count)
    }

    /// The fraction of request `request`'s (query block, head) pairs that S_c computes;
    /// `None` for a request without pairs, or past the last request.
    pub(crate) fn computed_fraction(&self, request: u32) -> Option<f64> {
        self.computed_fractions.get(request as usize).copied().flatten()
    }

    /// Request `request`'s packed S_c segment: its device address (for the kernels) and its
    /// bytes on the host.
    ///
    /// # Errors
    /// [`Error::InvalidShape`](crate::Error::InvalidShape) when the symbols have no request
    /// `request`.
    pub(crate) fn caching_segment(&self, request: u32) -> Result<(u64, &[u8])> {
        let index = request as usize;
        let bounds = self.caching_indptr_host.get(index).zip(self.caching_indptr_host.get(index + 1));
        let segment = bounds.and_then(|(&start, &end)| {
            let bytes = self.caching_host.get(start as usize..end as usize)?;
            Some((self.caching.view().address() + u64::from(start), bytes))
        });
        segment.ok_or_else(|| {
            crate::Error::InvalidShape(format!(
                "request {request} of symbols that describe {} requests",
                self.requests.len()
            ))
        })
    }

    /// Fails with [`Error::WrongContext`](crate::Error::WrongContext) unless the symbols were
    /// uploaded in `engine`'s context.
    pub(crate) fn check_context(&self, engine: &crate::Engine) -> Result<()> {
        self.caching.check_context(engine, "symbols")
    }

    /// Heads the symbols were built for.
    pub fn heads(&self) -> u32 {
        self.heads
    }

    /// Query block size in tokens.
    pub fn block_q(&self) -> u32 {
        self.block_q
    }

    /// Key/value block size in tokens.
    pub fn block_kv(&self) -> u32 {
        self.block_kv
    }

    /// The (query length, key length) of every request.
    pub fn requests(&self) -> &[RequestShape] {
        &self.requests
    }
}
