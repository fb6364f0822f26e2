//! The sparse projections around attention: GEMM-Q and GEMM-O.
//!
//! Both compute `out = addend + A·Wᵀ` on tensor cores, with `A` `[m, k]` and `W` `[n, k]`
//! row-major (`W` as a Linear layer stores it), f32 accumulation and 16-bit storage:
//! - [`Engine::gemm_q`] (the Q projection) skips the output elements of cached (query block,
//!   head) pairs: they are neither computed nor written, so they keep what the buffer holds.
//! - [`Engine::gemm_o`] (the output projection) splits the reduction axis by head and sums
//!   either the cached heads plus the bias ([`GemmOMode::Cache`], producing the cache `C`) or
//!   the computed heads plus `C` ([`GemmOMode::Active`]). Cache followed by active mode over
//!   the same symbols is the dense projection.
//!
//! Row `r` of `A` and of the output is token `token_offset + r` of the attention sequence of
//! the symbols' request `request` (a field of the arguments; 0 for a single request), in query
//! block `(token_offset + r) / block_q`. A batch of requests takes one call per request, on
//! that request's rows, all with the same uploaded symbols:
//!
//! ```no_run
//! use flashomni::{DeviceArray, DeviceSymbols, Engine, GemmQArgs};
//! use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
//! use half::bf16;
//!
//! # fn main() -> Result<(), flashomni::Error> {
//! let engine = Engine::new(0)?;
//! // Two requests of 512 text tokens (first in attention) and 4096 image tokens; the Q
//! // projection of the image rows, `[2, 4096, 3072]` in and out.
//! let (batch, heads, head_dim, text, image) = (2, 24, 128, 512, 4096);
//! let hidden = heads * head_dim;
//! let requests = vec![RequestShape::new(text + image, text + image); batch];
//! let geometry = SymbolGeometry::new(heads, 128, 128, &requests)?;
//! // Text blocks and half of the image (query block, head) pairs computed, the rest cached.
//! let caching = |b: usize, qb: u32, head: u32| qb < 4 || (qb + head + b as u32) % 2 == 0;
//! let symbols = DeviceSymbols::upload(&PackedSymbols::from_fn(&geometry, caching, |_, _, _, _| true).view())?;
//!
//! let per_request = (image * hidden) as usize;
//! let x = DeviceArray::from_host(&vec![bf16::from_f32(0.1); batch * per_request])?;
//! let w = DeviceArray::from_host(&vec![bf16::from_f32(0.01); (hidden * hidden) as usize])?;
//! let mut q = DeviceArray::<bf16>::uninitialized(batch * per_request)?;
//! let mut q_all = q.view_mut();
//! for request in 0..batch {
//!     let rows = request * per_request..(request + 1) * per_request;
//!     let (x_rows, q_rows) = (x.view().slice(rows.clone()), q_all.slice_mut(rows));
//!     let args = GemmQArgs {
//!         token_offset: text,
//!         symbols: Some(&symbols),
//!         request: request as u32,
//!         ..GemmQArgs::new(x_rows.expect("inside x"), w.view(), q_rows.expect("inside q"), heads)
//!     };
//!     engine.gemm_q(args, image, hidden, hidden, engine.stream())?;
//! }
//! engine.synchronize()?;
//! # Ok(())
//! # }
//! ```
//!
//! Each GEMM has two kernels, CTAs of 128 or of 64 output rows ([`GemmRows`]). The 64-row one
//! holds half the accumulators, so more CTAs share a multiprocessor; it pays off when the
//! launch has too few CTAs to fill the GPU. Unless the call sets `tile_rows`, the launcher
//! picks one from the multiprocessor count, the kernel module and the work: for GEMM-Q the
//! working tiles of either size, counted exactly from the request's S_c when it builds the
//! tile lists ([`gemm_q_rows`]); for GEMM-O the shape ([`gemm_o_rows`]), and for its
//! persistent kernel the fraction of the request's (query block, head) pairs that S_c
//! computes, counted when the symbols are uploaded ([`gemm_o_persistent`]).
//!
//! L2 cache policy: `A`, `C` and the output pass through L2 as the first lines to be evicted.
//! With the `sm_90a` module, `W`'s lines enter L2 as the last to be evicted and keep that
//! priority after the call, until other accesses re-mark them or L2 has nothing else to evict:
//! up to `n · k` elements (19 MB for a 3072 × 3072 bf16 weight) stay ranked above the normal
//! lines of the kernels that follow. Attention launched right after measured the same
//! (docs/perf-journal.md, run 131).

mod args;
mod check;
mod launch;
mod o;
mod plan;
mod q;
mod split;

pub use args::{GemmOArgs, GemmOMode, GemmQArgs};
pub use plan::{GemmQTiles, gemm_o_persistent, gemm_o_rows, gemm_q_clustered, gemm_q_rows};
pub use split::{GemmSplit, GemmWorkspace, gemm_q_split};
