//! Update → dispatch with FlashOmni's symbols, on FLUX.1 shapes (512 text + 4096 image tokens,
//! 24 heads of 128), through the public API.
//!
//! 1. Update step: dense attention fills the output (the "cache").
//! 2. Dispatch step: half of the image query blocks reuse the cache (S_c = 0) and every computed
//!    block attends to a quarter of the KV blocks plus the text and its own block (S_s); only
//!    the computed blocks are recomputed, in place.
//!
//! Run on a machine with a CUDA GPU: `cargo run --release -p flashomni --example update_dispatch`.

use std::time::Instant;

use flashomni::{AttentionArgs, AttentionConfig, AttentionPlan, DeviceArray, DeviceSymbols, Engine};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use half::bf16;

const HEADS: u32 = 24;
const HEAD_DIM: u32 = 128;
const TEXT_TOKENS: u32 = 512;
const TOKENS: u32 = TEXT_TOKENS + 4096;
const BLOCK: u32 = 128;

/// Deterministic pseudo-random values in (−2, 2) (a 64-bit LCG; no dependency needed).
fn random_values(len: usize, seed: u64) -> Vec<bf16> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            bf16::from_f32(((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(0)?;
    println!("device: {} ({:?} module)", engine.device_name()?, engine.arch());
    let plan = AttentionPlan::new(&engine, AttentionConfig::new(HEADS, HEAD_DIM), &[0, TOKENS], &[0, TOKENS])?;
    let n = plan.q_elements();
    let (q, k, v) = (
        DeviceArray::from_host(&random_values(n, 1))?,
        DeviceArray::from_host(&random_values(n, 2))?,
        DeviceArray::from_host(&random_values(n, 3))?,
    );
    let mut out = DeviceArray::<bf16>::uninitialized(n)?;

    // Update step: dense attention; its output is the cache the dispatch step reuses.
    let start = Instant::now();
    let dense = AttentionArgs { q: q.view(), k: k.view(), v: v.view(), out: out.view_mut(), lse: None, symbols: None };
    engine.attention(&plan, dense, engine.stream())?;
    engine.synchronize()?;
    println!("update step (dense):    {:.3} ms", start.elapsed().as_secs_f64() * 1e3);
    let cache = out.to_host()?;

    // Dispatch step symbols: text blocks always computed; odd image blocks cached.
    let text_blocks = TEXT_TOKENS / BLOCK;
    let requests = [RequestShape::new(TOKENS, TOKENS)];
    let geometry = SymbolGeometry::new(HEADS, BLOCK, BLOCK, &requests)?;
    let symbols = PackedSymbols::from_fn(
        &geometry,
        |_, qb, _| qb < text_blocks || qb % 2 == 0,
        |_, qb, h, kb| kb < text_blocks || kb == qb || (kb + qb + h) % 4 == 0,
    );
    let stats = symbols.view().stats();
    println!(
        "dispatch symbols: cache ratio {:.2}, kept KV blocks of computed rows {:.2}",
        stats.caching_ratio(),
        stats.kv_density_computed()
    );
    let device_symbols = DeviceSymbols::upload(&symbols.view())?;
    let start = Instant::now();
    let sparse = AttentionArgs {
        q: q.view(),
        k: k.view(),
        v: v.view(),
        out: out.view_mut(),
        lse: None,
        symbols: Some(&device_symbols),
    };
    engine.attention(&plan, sparse, engine.stream())?;
    engine.synchronize()?;
    println!("dispatch step (sparse): {:.3} ms", start.elapsed().as_secs_f64() * 1e3);

    // Cached blocks kept the update step's values exactly; computed ones were recomputed.
    let dispatched = out.to_host()?;
    let row = (HEADS * HEAD_DIM) as usize;
    let (mut kept, mut recomputed) = (0usize, 0usize);
    for token in 0..TOKENS as usize {
        let qb = token as u32 / BLOCK;
        for h in 0..HEADS as usize {
            let range = token * row + h * HEAD_DIM as usize..token * row + (h + 1) * HEAD_DIM as usize;
            let same = dispatched[range.clone()].iter().zip(&cache[range]).all(|(a, b)| a.to_bits() == b.to_bits());
            if symbols.view().compute(0, qb, h as u32) {
                recomputed += usize::from(!same);
            } else if same {
                kept += 1;
            } else {
                return Err(format!("cached row token {token} head {h} changed").into());
            }
        }
    }
    println!("rows kept from the cache: {kept}; computed rows that changed (fewer keys): {recomputed}");
    Ok(())
}
