//! CPU model of the DeepSpeed-Ulysses all-to-all of sequence-parallel attention.
//!
//! `P` ranks each hold a token shard `[T/P, H, D]` (token-major). The forward exchange
//! ([`Direction::TokensToHeads`]) gives rank `r` every token of heads
//! `r·H/P .. (r+1)·H/P`, `[T, H/P, D]`; the backward exchange
//! ([`Direction::HeadsToTokens`]) is its inverse. [`all_to_all_reference`] computes either
//! directly from the index definitions; [`apply_copies`] and [`exchange`] model the
//! device-side implementation (strided pack/unpack copies of
//! [`flashomni::parallel::UlyssesLayout`] around NCCL's grouped send/receive) so the two can
//! be compared on the CPU.

use flashomni::parallel::StridedCopy;

/// Which way an all-to-all goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Token shards `[T/P, H, D]` → head slices of the whole sequence `[T, H/P, D]`.
    TokensToHeads,
    /// Head slices `[T, H/P, D]` → token shards `[T/P, H, D]`.
    HeadsToTokens,
}

/// The all-to-all of `shards` (one per rank) in `direction`, from the index definitions:
/// with `Hp = heads / P` and `Ts = tokens_per_rank`,
/// `heads_slice[r][(j·Ts + t)·Hp + h'] = token_shard[j][t·H + r·Hp + h']` (each a row of
/// `dim` elements).
///
/// # Panics
/// If there are no shards, `heads` is not a multiple of the rank count, or a shard does not
/// hold `Ts·H·dim` elements.
#[must_use]
pub fn all_to_all_reference<T: Copy>(
    shards: &[Vec<T>],
    tokens_per_rank: usize,
    heads: usize,
    dim: usize,
    direction: Direction,
) -> Vec<Vec<T>> {
    let ranks = shards.len();
    assert!(ranks > 0, "at least one rank");
    assert!(heads.is_multiple_of(ranks), "{heads} heads over {ranks} ranks");
    let local_heads = heads / ranks;
    let len = tokens_per_rank * heads * dim;
    for (rank, shard) in shards.iter().enumerate() {
        assert_eq!(shard.len(), len, "rank {rank}: expected {len} elements, got {}", shard.len());
    }
    let Some(&fill) = shards[0].first() else { return vec![Vec::new(); ranks] };
    let mut out = vec![vec![fill; len]; ranks];
    for r in 0..ranks {
        for j in 0..ranks {
            for t in 0..tokens_per_rank {
                for h in 0..local_heads {
                    let token_row = (t * heads + r * local_heads + h) * dim;
                    let head_row = ((j * tokens_per_rank + t) * local_heads + h) * dim;
                    match direction {
                        Direction::TokensToHeads => {
                            out[r][head_row..][..dim].copy_from_slice(&shards[j][token_row..][..dim]);
                        }
                        Direction::HeadsToTokens => {
                            out[j][token_row..][..dim].copy_from_slice(&shards[r][head_row..][..dim]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Applies strided copies on the host: for each copy and row,
/// `dst[dst_offset + row·dst_pitch ..][..width] = src[src_offset + row·src_pitch ..][..width]`.
///
/// # Panics
/// If a copy reaches outside `src` or `dst`.
pub fn apply_copies<T: Copy>(copies: &[StridedCopy], src: &[T], dst: &mut [T]) {
    for c in copies {
        for row in 0..c.rows {
            let from = c.src_offset + row * c.src_pitch;
            let to = c.dst_offset + row * c.dst_pitch;
            dst[to..to + c.width].copy_from_slice(&src[from..from + c.width]);
        }
    }
}

/// NCCL's grouped send/receive all-to-all: every buffer holds `P` chunks of `chunk`
/// elements; rank `r` receives chunk `r` of rank `j`'s buffer into its chunk `j`.
///
/// # Panics
/// If a buffer holds fewer than `P·chunk` elements.
#[must_use]
pub fn exchange<T: Copy>(sends: &[Vec<T>], chunk: usize) -> Vec<Vec<T>> {
    let ranks = sends.len();
    (0..ranks)
        .map(|r| (0..ranks).flat_map(|j| sends[j][r * chunk..(r + 1) * chunk].iter().copied()).collect())
        .collect()
}

/// Splits a token-major tensor `[T, H, D]` into `ranks` equal token shards.
///
/// # Panics
/// If `ranks` is 0 or the length is not a multiple of `ranks`.
#[must_use]
pub fn split_tokens<T: Copy>(full: &[T], ranks: usize) -> Vec<Vec<T>> {
    assert!(ranks > 0 && full.len().is_multiple_of(ranks), "{} elements over {ranks} ranks", full.len());
    let len = full.len() / ranks;
    (0..ranks).map(|r| full[r * len..(r + 1) * len].to_vec()).collect()
}

/// Heads `heads` of a token-major tensor `[tokens, total_heads, dim]`, as `[tokens, |heads|,
/// dim]`.
#[must_use]
pub fn head_slice<T: Copy>(full: &[T], total_heads: usize, dim: usize, heads: core::ops::Range<usize>) -> Vec<T> {
    full.chunks(total_heads * dim).flat_map(|token| token[heads.start * dim..heads.end * dim].iter().copied()).collect()
}
