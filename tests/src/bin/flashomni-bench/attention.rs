//! Attention benchmark cases: B = 1, H = 24, D = 128, bf16; dense, random S_s densities,
//! and S_c cache ratios at full KV.

use anyhow::Result;
use cust::stream::Stream;
use flashomni::{AttentionConfig, AttentionPlan, DeviceArray, DeviceSymbols, Engine};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::gpu::attention_args;
use flashomni_tests::gpu::random_device_array;
use flashomni_tests::random::{random_symbols, seeded_rng};
use half::bf16;
use rand::Rng;

use crate::Options;
use crate::report::Row;
use crate::timing::median_ms;

/// Heads of every attention case (FLUX-like).
pub const HEADS: u32 = 24;
/// Head dimension of every attention case.
pub const HEAD_DIM: u32 = 128;
/// KV densities measured at cache ratio 0.
pub const DENSITIES: [f64; 4] = [1.0, 0.5, 0.25, 0.1];
/// Cache ratios measured at KV density 1.
const CACHE_RATIOS: [f64; 2] = [0.5, 0.9];

/// FLOPs the kept work needs: 4·D per (query row, kept key) of every computed block.
fn kept_flops(symbols: &PackedSymbols, tokens: u32) -> f64 {
    let view = symbols.view();
    let geometry = view.geometry();
    let (nq, nk) = (geometry.num_q_blocks(0), geometry.num_kv_blocks(0));
    let block = geometry.block_q();
    let mut pairs = 0f64;
    for qb in 0..nq {
        let rows = (tokens - qb * block).min(block) as f64;
        for h in 0..HEADS {
            if !view.compute(0, qb, h) {
                continue;
            }
            for kb in 0..nk {
                if view.attend(0, qb, h, kb) {
                    pairs += rows * (tokens - kb * block).min(block) as f64;
                }
            }
        }
    }
    4.0 * HEAD_DIM as f64 * pairs
}

/// One `n`-token self-attention request: its plan, random bf16 Q, K, V in (−2, 2) and an
/// output buffer.
pub struct SelfAttention {
    pub plan: AttentionPlan,
    pub q: DeviceArray<bf16>,
    pub k: DeviceArray<bf16>,
    pub v: DeviceArray<bf16>,
    pub out: DeviceArray<bf16>,
}

impl SelfAttention {
    /// Draws the inputs of an `n`-token request from `rng`.
    pub fn new(engine: &Engine, rng: &mut impl Rng, n: u32) -> Result<Self> {
        let plan = AttentionPlan::new(engine, AttentionConfig::new(HEADS, HEAD_DIM), &[0, n], &[0, n])?;
        let len = plan.q_elements();
        let mut random = || random_device_array::<bf16>(rng, len, 2.0);
        let (q, k, v) = (random()?, random()?, random()?);
        let out = DeviceArray::<bf16>::uninitialized(len)?;
        Ok(Self { plan, q, k, v, out })
    }

    /// Launches attention over the whole request on `stream`, with `symbols` if given.
    pub fn launch(&mut self, engine: &Engine, symbols: Option<&DeviceSymbols>, stream: &Stream) -> Result<()> {
        let args = attention_args(&self.q, &self.k, &self.v, &mut self.out, symbols);
        Ok(engine.attention(&self.plan, args, stream)?)
    }
}

/// Runs every attention case and returns one row per case.
pub fn run(engine: &Engine, options: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut rng = seeded_rng(0xbe4c);
    for &n in &options.sizes {
        let mut inputs = SelfAttention::new(engine, &mut rng, n)?;
        let requests = [RequestShape::new(n, n)];
        let geometry = SymbolGeometry::new(HEADS, 128, 128, &requests)?;
        let cases = DENSITIES.iter().map(|&d| (d, 0.0)).chain(CACHE_RATIOS.iter().map(|&c| (1.0, c)));
        for (density, cache_ratio) in cases {
            let symbols = if density == 1.0 && cache_ratio == 0.0 {
                PackedSymbols::dense(&geometry)
            } else {
                random_symbols(&mut rng, &geometry, density, cache_ratio)
            };
            let stats = symbols.view().stats();
            let device_symbols = DeviceSymbols::upload(&symbols.view())?;
            let dense = density == 1.0 && cache_ratio == 0.0;
            let ms = median_ms(engine.stream(), &options.timing, || {
                inputs.launch(engine, (!dense).then_some(&device_symbols), engine.stream())
            })?;
            let flops = kept_flops(&symbols, n);
            rows.push(Row {
                op: "attention",
                n,
                heads: HEADS,
                dim: HEAD_DIM,
                kv_density: stats.kv_density(),
                cache_ratio: stats.caching_ratio(),
                requested_density: density,
                ms,
                tflops: flops / ms / 1e9,
            });
            eprintln!("bench: attention n={n} density={density} cache={cache_ratio}: {ms:.3} ms");
        }
    }
    Ok(rows)
}
