//! Update → dispatch with FlashOmni's symbols on one FLUX.1 attention layer (512 text + 4096
//! image tokens, 24 heads of 128, hidden size 3072), through the public API: the Q projection
//! (GEMM-Q), attention, and the output projection (GEMM-O).
//!
//! 1. Update step, dense: `Q = X·W_qᵀ + b_q`, attention, and the output projection split in two
//!    by the dispatch symbols: GEMM-O cache mode keeps `C = b_o + Σ_{cached heads} A_h·W_hᵀ`,
//!    active mode adds the computed heads. Together they equal the dense projection, which the
//!    example checks against the unsplit one.
//! 2. Dispatch step: half of the image (query block, head) pairs reuse the cache (S_c = 0) and
//!    every computed pair attends to a quarter of the KV blocks plus the text and its own block
//!    (S_s). GEMM-Q
//!    computes only the Q tiles attention will read, attention recomputes only the computed
//!    blocks (in place), and GEMM-O adds only the computed heads to `C`. The example checks
//!    that every cached attention row kept the update step's values bit for bit.
//!
//! Run on a machine with a CUDA GPU: `cargo run --release -p flashomni --example update_dispatch`.

use std::time::Instant;

use flashomni::{
    AttentionArgs, AttentionConfig, AttentionPlan, DeviceArray, DeviceSymbols, DeviceView, Engine, GemmOArgs,
    GemmOMode, GemmQArgs, GemmWorkspace,
};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use half::bf16;

const HEADS: u32 = 24;
const HEAD_DIM: u32 = 128;
const HIDDEN: u32 = HEADS * HEAD_DIM;
const TEXT_TOKENS: u32 = 512;
const TOKENS: u32 = TEXT_TOKENS + 4096;
const BLOCK: u32 = 128;

/// Deterministic pseudo-random values in (−scale, scale) (a 64-bit LCG; no dependency needed).
fn random_values(len: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            bf16::from_f32(((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        })
        .collect()
}

/// Runs `step` on the engine's stream, waits for it and prints its wall time (launch, host-side
/// work such as building a tile list on first use, and the wait included: not a benchmark).
fn timed(engine: &Engine, what: &str, step: impl FnOnce() -> flashomni::Result<()>) -> flashomni::Result<()> {
    let start = Instant::now();
    step()?;
    engine.synchronize()?;
    println!("{what:<34} {:8.3} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

/// Attention of `[q, k, v]` into `out` (only the computed blocks of `symbols`, in place).
fn attend(
    engine: &Engine,
    plan: &AttentionPlan,
    [q, k, v]: [&DeviceArray<bf16>; 3],
    out: &mut DeviceArray<bf16>,
    symbols: Option<&DeviceSymbols>,
) -> flashomni::Result<()> {
    let args = AttentionArgs { q: q.view(), k: k.view(), v: v.view(), out: out.view_mut(), lse: None, symbols };
    engine.attention(plan, args, engine.stream())
}

/// The output projection `out = mode's addend + Σ_{mode's heads} A_h·W_hᵀ`, with `heads` the
/// mode and the symbols that select its heads (`None`: every head is computed).
fn project_out(
    engine: &Engine,
    (a, w): (&DeviceArray<bf16>, &DeviceArray<bf16>),
    addend: DeviceView<'_, bf16>,
    out: &mut DeviceArray<bf16>,
    (mode, symbols): (GemmOMode, Option<&DeviceSymbols>),
    workspace: &mut GemmWorkspace,
) -> flashomni::Result<()> {
    let args = GemmOArgs {
        bias_or_cache: Some(addend),
        symbols,
        workspace: Some(workspace),
        ..GemmOArgs::new(a.view(), w.view(), out.view_mut(), mode, HEADS)
    };
    engine.gemm_o(args, TOKENS, HIDDEN, HIDDEN, engine.stream())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(0)?;
    println!("device: {} ({:?} module)", engine.device_name()?, engine.arch());
    let plan = AttentionPlan::new(&engine, AttentionConfig::new(HEADS, HEAD_DIM), &[0, TOKENS], &[0, TOKENS])?;
    let n = plan.q_elements();
    let weights = (HIDDEN * HIDDEN) as usize;
    let x = DeviceArray::from_host(&random_values(n, 1, 1.0))?;
    let (w_q, b_q) =
        (DeviceArray::from_host(&random_values(weights, 2, 0.03))?, random_values(HIDDEN as usize, 3, 0.1));
    let (w_o, b_o) =
        (DeviceArray::from_host(&random_values(weights, 4, 0.03))?, random_values(HIDDEN as usize, 5, 0.1));
    let (b_q, b_o) = (DeviceArray::from_host(&b_q)?, DeviceArray::from_host(&b_o)?);
    let (k, v) =
        (DeviceArray::from_host(&random_values(n, 6, 2.0))?, DeviceArray::from_host(&random_values(n, 7, 2.0))?);
    let mut q = DeviceArray::<bf16>::uninitialized(n)?;
    let mut attention = DeviceArray::<bf16>::uninitialized(n)?;
    let (mut cache, mut y, mut y_dense) = (
        DeviceArray::<bf16>::uninitialized(n)?,
        DeviceArray::<bf16>::uninitialized(n)?,
        DeviceArray::<bf16>::uninitialized(n)?,
    );
    let mut workspace = GemmWorkspace::new(&engine)?;

    // The dispatch steps' symbols: text blocks always computed; half of the image (query
    // block, head) pairs cached, alternating with the head so that every row block of C mixes
    // cached and computed heads.
    let text_blocks = TEXT_TOKENS / BLOCK;
    let requests = [RequestShape::new(TOKENS, TOKENS)];
    let geometry = SymbolGeometry::new(HEADS, BLOCK, BLOCK, &requests)?;
    let symbols = PackedSymbols::from_fn(
        &geometry,
        |_, qb, h| qb < text_blocks || (qb + h) % 2 == 0,
        |_, qb, h, kb| kb < text_blocks || kb == qb || (kb + qb + h) % 4 == 0,
    );
    let stats = symbols.view().stats();
    println!(
        "dispatch symbols: cache ratio {:.2}, kept KV blocks of computed rows {:.2}",
        stats.caching_ratio(),
        stats.kv_density_computed()
    );
    let device_symbols = DeviceSymbols::upload(&symbols.view())?;
    // The heads each GEMM-O mode sums, selected by the symbols.
    let (cached_heads, computed_heads) =
        ((GemmOMode::Cache, Some(&device_symbols)), (GemmOMode::Active, Some(&device_symbols)));

    // Update step: everything dense; GEMM-O split into the cache and the computed heads.
    let project_q = |q: &mut DeviceArray<bf16>, symbols: Option<&DeviceSymbols>, workspace: &mut GemmWorkspace| {
        let args = GemmQArgs {
            bias: Some(b_q.view()),
            symbols,
            workspace: Some(workspace),
            ..GemmQArgs::new(x.view(), w_q.view(), q.view_mut(), HEADS)
        };
        engine.gemm_q(args, TOKENS, HIDDEN, HIDDEN, engine.stream())
    };
    timed(&engine, "update: GEMM-Q (dense)", || project_q(&mut q, None, &mut workspace))?;
    timed(&engine, "update: attention (dense)", || attend(&engine, &plan, [&q, &k, &v], &mut attention, None))?;
    timed(&engine, "update: GEMM-O cache mode", || {
        project_out(&engine, (&attention, &w_o), b_o.view(), &mut cache, cached_heads, &mut workspace)
    })?;
    timed(&engine, "update: GEMM-O active mode", || {
        project_out(&engine, (&attention, &w_o), cache.view(), &mut y, computed_heads, &mut workspace)
    })?;

    // Cache + active equals the dense projection (the same GEMM without symbols: C = b_o).
    let mut bias_only = DeviceArray::<bf16>::uninitialized(n)?;
    project_out(&engine, (&attention, &w_o), b_o.view(), &mut bias_only, (GemmOMode::Cache, None), &mut workspace)?;
    project_out(
        &engine,
        (&attention, &w_o),
        bias_only.view(),
        &mut y_dense,
        (GemmOMode::Active, None),
        &mut workspace,
    )?;
    engine.synchronize()?;
    let (split, dense) = (y.to_host()?, y_dense.to_host()?);
    let scale = dense.iter().map(|v| v.to_f32().abs()).fold(0f32, f32::max);
    let worst = split.iter().zip(&dense).map(|(a, b)| (a.to_f32() - b.to_f32()).abs()).fold(0f32, f32::max);
    println!("update: cache + active vs dense projection: max |diff| {worst:.4} (max |y| {scale:.2})");
    if worst > 0.02 * scale.max(1.0) {
        return Err(format!("cache + active differs from the dense projection by {worst}").into());
    }
    let update_attention = attention.to_host()?;

    // Dispatch step: only the computed blocks, heads and tiles are recomputed.
    timed(&engine, "dispatch: GEMM-Q (computed tiles)", || project_q(&mut q, Some(&device_symbols), &mut workspace))?;
    timed(&engine, "dispatch: attention (sparse)", || {
        attend(&engine, &plan, [&q, &k, &v], &mut attention, Some(&device_symbols))
    })?;
    timed(&engine, "dispatch: GEMM-O active mode", || {
        project_out(&engine, (&attention, &w_o), cache.view(), &mut y, computed_heads, &mut workspace)
    })?;

    // Cached attention rows kept the update step's values exactly; computed ones were recomputed.
    let dispatched = attention.to_host()?;
    let row = HIDDEN as usize;
    let (mut kept, mut recomputed) = (0usize, 0usize);
    for token in 0..TOKENS as usize {
        let qb = token as u32 / BLOCK;
        for h in 0..HEADS as usize {
            let range = token * row + h * HEAD_DIM as usize..token * row + (h + 1) * HEAD_DIM as usize;
            let same =
                dispatched[range.clone()].iter().zip(&update_attention[range]).all(|(a, b)| a.to_bits() == b.to_bits());
            if symbols.view().compute(0, qb, h as u32) {
                recomputed += usize::from(!same);
            } else if same {
                kept += 1;
            } else {
                return Err(format!("cached row token {token} head {h} changed").into());
            }
        }
    }
    println!("attention rows kept from the cache: {kept}; computed rows that changed (fewer keys): {recomputed}");
    Ok(())
}
