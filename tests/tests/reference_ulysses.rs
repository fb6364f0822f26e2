//! CPU tests of the Ulysses all-to-all: the reference against itself (forward then backward
//! is the identity, forward is a head slice of the gathered sequence) and the device plan
//! ([`UlyssesLayout`]'s strided copies around a modelled NCCL exchange) against the reference.

use flashomni::Error;
use flashomni::parallel::UlyssesLayout;
use flashomni_tests::reference::ulysses::{
    Direction, all_to_all_reference, apply_copies, exchange, head_slice, split_tokens,
};
use proptest::prelude::*;

/// `(ranks, heads, tokens_per_rank, dim)` with `heads` a multiple of `ranks`.
fn shape() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (1usize..=4, 1usize..=3, 0usize..=5, 1usize..=4).prop_map(|(p, hp, ts, d)| (p, p * hp, ts, d))
}

/// Shards whose every element is distinct, so any misplaced element is visible.
fn shards(ranks: usize, heads: usize, tokens_per_rank: usize, dim: usize) -> Vec<Vec<u32>> {
    let len = tokens_per_rank * heads * dim;
    (0..ranks).map(|r| (0..len).map(|i| (r * len + i) as u32).collect()).collect()
}

fn layout(ranks: usize, heads: usize, tokens_per_rank: usize, dim: usize) -> UlyssesLayout {
    UlyssesLayout::new(ranks as u32, heads as u32, dim as u32, tokens_per_rank as u32).unwrap()
}

proptest! {
    #[test]
    fn forward_then_backward_is_the_identity((p, h, ts, d) in shape()) {
        let input = shards(p, h, ts, d);
        let heads = all_to_all_reference(&input, ts, h, d, Direction::TokensToHeads);
        let back = all_to_all_reference(&heads, ts, h, d, Direction::HeadsToTokens);
        prop_assert_eq!(back, input);
    }

    #[test]
    fn backward_then_forward_is_the_identity((p, h, ts, d) in shape()) {
        let input = shards(p, h, ts, d);
        let tokens = all_to_all_reference(&input, ts, h, d, Direction::HeadsToTokens);
        let again = all_to_all_reference(&tokens, ts, h, d, Direction::TokensToHeads);
        prop_assert_eq!(again, input);
    }

    #[test]
    fn forward_is_a_head_slice_of_the_whole_sequence((p, h, ts, d) in shape()) {
        let input = shards(p, h, ts, d);
        let full: Vec<u32> = input.concat();
        let out = all_to_all_reference(&input, ts, h, d, Direction::TokensToHeads);
        let hp = h / p;
        for (r, local) in out.iter().enumerate() {
            prop_assert_eq!(local, &head_slice(&full, h, d, r * hp..(r + 1) * hp));
        }
        prop_assert_eq!(split_tokens(&full, p), input);
    }

    #[test]
    fn device_plan_matches_the_reference((p, h, ts, d) in shape()) {
        let l = layout(p, h, ts, d);
        prop_assert_eq!(l.shard_elements(), ts * h * d);
        prop_assert_eq!(l.local_elements(), l.shard_elements());
        prop_assert_eq!(l.chunk_elements() * p, l.shard_elements());
        let input = shards(p, h, ts, d);

        // Forward: pack (strided copies) → exchange.
        let sends: Vec<Vec<u32>> = input
            .iter()
            .map(|shard| {
                let mut send = vec![u32::MAX; l.shard_elements()];
                apply_copies(&l.pack_copies(), shard, &mut send);
                send
            })
            .collect();
        let locals = exchange(&sends, l.chunk_elements());
        prop_assert_eq!(&locals, &all_to_all_reference(&input, ts, h, d, Direction::TokensToHeads));

        // Backward: exchange → unpack (strided copies).
        let staged = exchange(&locals, l.chunk_elements());
        let outs: Vec<Vec<u32>> = staged
            .iter()
            .map(|staging| {
                let mut out = vec![u32::MAX; l.shard_elements()];
                apply_copies(&l.unpack_copies(), staging, &mut out);
                out
            })
            .collect();
        prop_assert_eq!(&outs, &all_to_all_reference(&locals, ts, h, d, Direction::HeadsToTokens));
        prop_assert_eq!(outs, input);
    }
}

#[test]
fn hand_worked_two_ranks() {
    // P = 2, H = 2, D = 1, 2 tokens per rank. Element = 10·global token + head.
    let input = vec![vec![0, 1, 10, 11], vec![20, 21, 30, 31]];
    let out = all_to_all_reference(&input, 2, 2, 1, Direction::TokensToHeads);
    assert_eq!(out, vec![vec![0, 10, 20, 30], vec![1, 11, 21, 31]]);
    assert_eq!(all_to_all_reference(&out, 2, 2, 1, Direction::HeadsToTokens), input);
}

#[test]
fn one_rank_is_the_identity() {
    let input = shards(1, 3, 4, 2);
    assert_eq!(all_to_all_reference(&input, 4, 3, 2, Direction::TokensToHeads), input);
    let l = layout(1, 3, 4, 2);
    let mut send = vec![0; l.shard_elements()];
    apply_copies(&l.pack_copies(), &input[0], &mut send);
    assert_eq!(send, input[0]);
}

#[test]
fn invalid_layouts_are_rejected() {
    for (ranks, heads, dim) in [(0, 4, 8), (3, 4, 8), (2, 0, 8), (2, 4, 0)] {
        match UlyssesLayout::new(ranks, heads, dim, 16) {
            Err(Error::InvalidShape(message)) => assert!(!message.is_empty()),
            other => panic!("ranks {ranks}, heads {heads}, dim {dim}: expected InvalidShape, got {other:?}"),
        }
    }
    assert!(matches!(UlyssesLayout::new(2, u32::MAX - 1, u32::MAX, u32::MAX), Err(Error::InvalidShape(_))));
}
