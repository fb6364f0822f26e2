//! # flashomni
//!
//! FlashOmni's unified sparse attention engine for diffusion transformers, in pure Rust.
//!
//! Two kinds of per-block flags, the *sparse symbols* of [`flashomni_symbols`], drive the
//! kernels:
//! - **S_c** (caching), one bit per (query block, head): 1 computes the block, 0 reuses what
//!   the output buffer already holds (a cached or forecast value);
//! - **S_s** (skipping), one bit per (query block, head, KV block): 1 attends to the KV block,
//!   0 drops it from the softmax without loading it.
//!
//! The GPU kernels are Rust too (`flashomni-kernels`), compiled to PTX by rustc's NVPTX
//! backend at build time and embedded in this crate.
//!
//! ```no_run
//! use flashomni::{AttentionArgs, AttentionConfig, AttentionPlan, DeviceArray, DeviceSymbols, Engine};
//! use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
//! use half::bf16;
//!
//! # fn main() -> Result<(), flashomni::Error> {
//! let engine = Engine::new(0)?;
//! let (heads, head_dim, tokens) = (24, 128, 4608);
//! let plan = AttentionPlan::new(&engine, AttentionConfig::new(heads, head_dim), &[0, tokens], &[0, tokens])?;
//!
//! // Keep every other KV block of every computed query block; compute all query blocks.
//! let requests = [RequestShape::new(tokens, tokens)];
//! let geometry = SymbolGeometry::new(heads, 128, 128, &requests)?;
//! let symbols = PackedSymbols::from_fn(&geometry, |_, _, _| true, |_, _, _, kb| kb % 2 == 0);
//! let symbols = DeviceSymbols::upload(&symbols.view())?;
//!
//! let n = plan.q_elements();
//! let q = DeviceArray::from_host(&vec![bf16::from_f32(0.1); n])?;
//! let k = DeviceArray::from_host(&vec![bf16::from_f32(0.2); n])?;
//! let v = DeviceArray::from_host(&vec![bf16::from_f32(0.3); n])?;
//! let mut out = DeviceArray::<bf16>::uninitialized(n)?;
//! let args = AttentionArgs { q: q.view(), k: k.view(), v: v.view(), out: out.view_mut(), lse: None, symbols: Some(&symbols) };
//! engine.attention(&plan, args, engine.stream())?;
//! engine.synchronize()?;
//! let result = out.to_host()?;
//! # let _ = result;
//! # Ok(())
//! # }
//! ```

mod attention;
mod device_symbols;
mod element;
mod engine;
mod error;
mod gemm;
mod launch;
mod memory;
mod module;
pub mod parallel;
mod schedule;
mod tensor_map;
mod validate;

pub use attention::{AttentionArgs, AttentionConfig, AttentionPlan, KvLayout};
pub use device_symbols::DeviceSymbols;
pub use element::{Element, Plain};
pub use engine::Engine;
pub use error::{Error, Result};
pub use flashomni_kernels::abi;
pub use flashomni_kernels::abi::{AttentionRows, GEMM_Q_CLUSTER, GemmRows};
pub use gemm::{
    GemmOArgs, GemmOMode, GemmQArgs, GemmQTiles, GemmSplit, GemmWorkspace, gemm_o_persistent, gemm_o_rows,
    gemm_q_clustered, gemm_q_rows, gemm_q_split,
};
pub use memory::{DeviceArray, DeviceView, DeviceViewMut};
pub use module::Arch;
