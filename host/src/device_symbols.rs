//! Sparse symbols uploaded to the device, ready for the kernels.

use flashomni_symbols::{RequestShape, SymbolsView};

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
    /// `None` when `block_q` is not a multiple of the attention work-item rows.
    pub(crate) attention_work: Option<(DeviceArray<u32>, u32)>,
}

/// Uploads the attention work list of `view` (see `schedule::sparse_work`).
fn upload_attention_work(view: &SymbolsView<'_>) -> Result<Option<(DeviceArray<u32>, u32)>> {
    schedule::sparse_work(view)
        .map(|work| {
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
        })
    }

    /// Replaces the symbol bits with those of `view`, which must have the same geometry
    /// (the update-step path: new bits, same bit buffers).
    ///
    /// Launches already enqueued may still read the old bits and work list, on any stream, so
    /// this first waits for all work of the current context (`cuCtxSynchronize`). Symbol
    /// updates happen once per update step, where that wait costs little.
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
        self.caching.upload(view.caching())?;
        self.skip.upload(view.skip())?;
        self.attention_work = upload_attention_work(view)?;
        Ok(())
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
