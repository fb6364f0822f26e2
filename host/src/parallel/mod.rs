//! Multi-GPU execution: sequence-parallel (DeepSpeed-Ulysses style) sparse attention.
//!
//! * [`nccl`]: NCCL loaded at run time (no build-time dependency), communicators and a
//!   grouped all-to-all.
//! * [`layout`]: the strided-copy layout of the Ulysses all-to-alls, [`UlyssesLayout`].
//! * [`ulysses`]: the sequence-parallel attention itself, [`UlyssesAttention`].
//!
//! Per-rank head subsets of the sparse symbols come from
//! [`flashomni_symbols::slice_heads`] and [`flashomni_symbols::rank_heads`].

pub mod layout;
pub mod nccl;
pub mod ulysses;

pub use layout::{StridedCopy, UlyssesLayout};
pub use nccl::{AllToAll, Communicator, Nccl, UniqueId};
pub use ulysses::{UlyssesArgs, UlyssesAttention};
