//! Attention work lists: which (request, 128-row q tile, head) items a launch runs, in which
//! order, and with which CTA size.
//!
//! Items are ordered heaviest first (longest-processing-time first): the GPU's block scheduler
//! hands CTAs out in order, so the long ones start early and the short ones fill the tail.
//! Costs are compared in coarse buckets (quarter octaves), and within a bucket items stay
//! head-major: CTAs running at the same time then share one head's keys and values in L2
//! (all heads of a 33K-token sequence are 400 MB of K/V; one head is 17 MB).
//! With symbols, only computed (S_c = 1) items are listed at all, so cached blocks cost
//! nothing, not even a CTA that exits.

use flashomni_kernels::abi::{ATTENTION_TILE_Q, AttentionRows};
use flashomni_symbols::{RequestShape, SymbolsView, blocks};

/// CTAs of either attention variant that fit on one multiprocessor at once (registers and
/// shared memory allow two of 128 threads).
const CTAS_PER_MULTIPROCESSOR: u32 = 2;
/// Below this many waves of 128-row CTAs, 64-row CTAs are used: twice the CTAs make a short
/// launch's last wave less empty.
const MIN_WAVES_FOR_LARGE_CTAS: u32 = 2;

/// A cost's bucket: four per octave, so costs within ~19% of each other usually share one.
fn cost_bucket(cost: u64) -> u32 {
    if cost == 0 { 0 } else { ((cost as f64).log2() * 4.0) as u32 + 1 }
}

/// (cost, request, q tile, head) items flattened into `u32` triples: heaviest bucket first,
/// then head-major.
fn flatten(mut items: Vec<(u64, u32, u32, u32)>) -> Vec<u32> {
    items.sort_by_key(|&(cost, request, tile, head)| (core::cmp::Reverse(cost_bucket(cost)), head, request, tile));
    items.into_iter().flat_map(|(_, request, tile, head)| [request, tile, head]).collect()
}

/// Rows of q tile `tile` of a request with `q_len` queries.
fn tile_rows(q_len: u32, tile: u32) -> u64 {
    (q_len - tile * ATTENTION_TILE_Q).min(ATTENTION_TILE_Q) as u64
}

/// Every item of a dense launch, longest key sequences first.
pub(crate) fn dense_work(requests: &[RequestShape], heads: u32) -> Vec<u32> {
    let mut items = Vec::new();
    for (request, shape) in requests.iter().enumerate() {
        for tile in 0..blocks(shape.q_len, ATTENTION_TILE_Q) {
            let cost = tile_rows(shape.q_len, tile) * shape.kv_len as u64;
            items.extend((0..heads).map(|head| (cost, request as u32, tile, head)));
        }
    }
    flatten(items)
}

/// Most query (token, head) pairs an attention launch can have: `AttentionPlan::new` keeps
/// tokens × heads × head_dim within 32 bits, and head_dim is at least 64.
const MAX_QUERY_TOKEN_HEADS: u64 = u32::MAX as u64 / 64;

/// The computed items of `symbols`, most kept keys first; `None` when such symbols cannot
/// drive attention: the query block size is not a multiple of the work-item rows, or the
/// requests hold more query (token, head) pairs than any attention plan accepts (their list
/// could be gigabytes).
pub(crate) fn sparse_work(symbols: &SymbolsView<'_>) -> Option<Vec<u32>> {
    let geometry = symbols.geometry();
    let query_tokens: u64 = geometry.requests().iter().map(|request| u64::from(request.q_len)).sum();
    if !geometry.block_q().is_multiple_of(ATTENTION_TILE_Q)
        || query_tokens * u64::from(geometry.heads()) > MAX_QUERY_TOKEN_HEADS
    {
        return None;
    }
    let block_kv = geometry.block_kv();
    let mut items = Vec::new();
    for (request, shape) in geometry.requests().iter().enumerate() {
        let kv_blocks = geometry.num_kv_blocks(request);
        let block_tokens = |kb: u32| (shape.kv_len - kb * block_kv).min(block_kv) as u64;
        for tile in 0..blocks(shape.q_len, ATTENTION_TILE_Q) {
            let q_block = tile * ATTENTION_TILE_Q / geometry.block_q();
            for head in 0..geometry.heads() {
                if !symbols.compute(request, q_block, head) {
                    continue;
                }
                let kept: u64 =
                    (0..kv_blocks).filter(|&kb| symbols.attend(request, q_block, head, kb)).map(block_tokens).sum();
                items.push((tile_rows(shape.q_len, tile) * kept, request as u32, tile, head));
            }
        }
    }
    Some(flatten(items))
}

/// The CTA size for a launch of `items` work items on `multiprocessors` SMs.
pub(crate) fn choose_rows(items: u32, multiprocessors: u32) -> AttentionRows {
    if items < MIN_WAVES_FOR_LARGE_CTAS * CTAS_PER_MULTIPROCESSOR * multiprocessors {
        AttentionRows::Rows64
    } else {
        AttentionRows::Rows128
    }
}

#[cfg(test)]
mod tests {
    use flashomni_symbols::{PackedSymbols, SymbolGeometry};

    use super::*;

    fn triples(work: &[u32]) -> Vec<[u32; 3]> {
        work.chunks(3).map(|c| [c[0], c[1], c[2]]).collect()
    }

    #[test]
    fn dense_work_covers_every_tile_and_head_longest_first() {
        let requests = [RequestShape::new(256, 10), RequestShape::new(100, 500), RequestShape::new(0, 7)];
        let items = triples(&dense_work(&requests, 3));
        // request 0: 2 tiles, request 1: 1 tile, request 2: none; 3 heads each.
        assert_eq!(items.len(), 9);
        assert!(items[..3].iter().all(|item| item[0] == 1), "the 500-key request comes first: {items:?}");
        // Equal costs stay head-major: request 0's two tiles of head 0 are adjacent.
        let position = |item: [u32; 3]| items.iter().position(|&i| i == item).unwrap();
        assert_eq!(position([0, 1, 0]), position([0, 0, 0]) + 1);
        for head in 0..3 {
            for (request, tile) in [(0, 0), (0, 1), (1, 0)] {
                assert!(items.contains(&[request, tile, head]));
            }
        }
    }

    #[test]
    fn sparse_work_lists_exactly_the_computed_blocks() {
        let requests = [RequestShape::new(300, 300)];
        let geometry = SymbolGeometry::new(2, 128, 128, &requests).unwrap();
        let symbols = PackedSymbols::from_fn(&geometry, |_, qb, h| (qb + h) % 2 == 0, |_, _, h, kb| h == 0 || kb == 0);
        let items = triples(&sparse_work(&symbols.view()).unwrap());
        let mut expected: Vec<[u32; 3]> = Vec::new();
        for tile in 0..3 {
            for head in 0..2 {
                if (tile + head) % 2 == 0 {
                    expected.push([0, tile, head]);
                }
            }
        }
        let mut sorted = items.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected);
        // Head 0 keeps all 3 KV blocks, head 1 only one: head 0's full tiles come first.
        assert_eq!(items[0][2], 0);
    }

    #[test]
    fn sparse_work_needs_whole_work_items_per_query_block() {
        let requests = [RequestShape::new(300, 300)];
        let geometry = SymbolGeometry::new(2, 64, 128, &requests).unwrap();
        assert!(sparse_work(&PackedSymbols::dense(&geometry).view()).is_none());
    }

    #[test]
    fn sparse_work_is_not_built_for_more_query_tokens_than_attention_takes() {
        // Three bytes of S_c over 2^31 query tokens: a work list would hold 2^24 × 24 items.
        let requests = [RequestShape::new(1 << 31, 0)];
        let geometry = SymbolGeometry::new(24, 1 << 31, 128, &requests).unwrap();
        assert!(sparse_work(&PackedSymbols::dense(&geometry).view()).is_none());
    }

    #[test]
    fn short_launches_use_small_ctas() {
        assert_eq!(choose_rows(100, 132), AttentionRows::Rows64);
        assert_eq!(choose_rows(3168, 132), AttentionRows::Rows128);
    }
}
