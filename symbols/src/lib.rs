//! Packed FlashOmni sparse symbols.
//!
//! FlashOmni steers its kernels with two bit-packed symbols per request:
//!
//! * **S_c** (caching symbol): one bit per (query block, head); `1` = compute now,
//!   `0` = cached (the attention CTA exits early, GEMM-Q skips the tile, GEMM-O
//!   moves the head's contribution into the cache bias).
//! * **S_s** (skip symbol): one bit per (query block, head, KV block); `1` = the KV
//!   block takes part in the softmax, `0` = it is dropped.
//!
//! Logical layout for request `b` (`nq = ceil(q_len / Bq)`, `nk = ceil(kv_len / Bk)`):
//! S_c index `qb * H + h` ([`caching_index`]), S_s index `(qb * H + h) * nk + kb`
//! ([`skip_index`]). Each request's segment is packed independently, LSB-first
//! (element `k` -> byte `k / 8`, bit `k % 8`), into `ceil(len / 8)` bytes; a `u32`
//! byte indptr of length `B + 1` holds the segment offsets.
//!
//! The index/bit formulas in [`index`] are `no_std`, allocation-free, `const fn`
//! and free of panicking paths, so GPU kernels (built with
//! `default-features = false`) use exactly the same formulas as the host.
//! [`SymbolGeometry`], [`SymbolsView`] (validated borrowed view) and
//! [`DensityStats`] are also `no_std`; `PackedSymbols` (owned buffers) needs the
//! `alloc` feature.

#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod error;
pub mod geometry;
pub mod index;
#[cfg(feature = "alloc")]
pub mod packed;
#[cfg(feature = "alloc")]
pub mod slice;
pub mod state;
pub mod stats;
pub mod view;

pub use error::{SymbolError, SymbolKind};
pub use geometry::{RequestShape, SymbolGeometry};
pub use index::{DEFAULT_BLOCK, bit_in_byte, blocks, byte_of, caching_index, packed_len, read_bit, skip_index};
#[cfg(feature = "alloc")]
pub use packed::{PackedSymbols, pack_segment, unpack_segment};
#[cfg(feature = "alloc")]
pub use slice::{rank_heads, slice_heads};
pub use state::BlockState;
pub use stats::DensityStats;
pub use view::SymbolsView;
