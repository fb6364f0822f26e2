//! Multi-GPU execution: sequence-parallel (DeepSpeed-Ulysses style) sparse attention.
//!
//! * [`nccl`]: NCCL loaded at run time (no build-time dependency), communicators and a
//!   grouped all-to-all.
//! * [`ulysses`]: the sequence-parallel attention itself, [`UlyssesAttention`], and the
//!   strided-copy layout of its all-to-alls, [`UlyssesLayout`].
//!
//! Per-rank head subsets of the sparse symbols come from
//! [`flashomni_symbols::slice_heads`] and [`flashomni_symbols::rank_heads`].

pub mod nccl;
pub mod ulysses;

pub use nccl::{AllToAll, Communicator, Nccl, UniqueId};
pub use ulysses::{StridedCopy, UlyssesArgs, UlyssesAttention, UlyssesLayout};
