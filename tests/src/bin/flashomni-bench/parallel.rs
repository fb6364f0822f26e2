//! Sequence-parallel (Ulysses) attention on the GPUs of this machine: N = 33792 and 67584,
//! H = 24, D = 128, bf16, KV densities 1.0 and 0.25, timed against plain one-GPU attention.
//!
//! With one GPU this is the P = 1 path (pack, NCCL all-to-all to itself, attention, all-to-all
//! back, unpack): its overhead over plain attention. Scaling from 1 to P GPUs needs a machine
//! with several GPUs and one process or thread per rank; this runner does not drive that.

use anyhow::{Context, Result};
use flashomni::parallel::nccl::{Communicator, Nccl};
use flashomni::parallel::ulysses::{UlyssesArgs, UlyssesAttention};
use flashomni::{AttentionArgs, AttentionConfig, AttentionPlan, DeviceArray, DeviceSymbols, Engine};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::random::{random_symbols, seeded_rng};
use half::bf16;
use rand::Rng;

use crate::Options;
use crate::timing::median_ms;

const HEADS: u32 = 24;
const HEAD_DIM: u32 = 128;
const SIZES: [u32; 2] = [33792, 67584];
const DENSITIES: [f64; 2] = [1.0, 0.25];

/// One comparison: plain attention and the sequence-parallel path on the same inputs.
pub struct ParallelRow {
    /// Tokens.
    pub n: u32,
    /// Measured fraction of kept KV blocks.
    pub kv_density: f64,
    /// Ranks of the sequence-parallel run.
    pub ranks: u32,
    /// Plain one-GPU attention, median ms.
    pub plain_ms: f64,
    /// Sequence-parallel attention, median ms.
    pub parallel_ms: f64,
}

/// Runs every case on device 0 with a one-rank communicator.
pub fn run(engine: &Engine, options: &Options) -> Result<Vec<ParallelRow>> {
    let nccl = Nccl::load().context("the parallel benchmark needs NCCL (set FLASHOMNI_NCCL_LIB)")?;
    let mut rng = seeded_rng(0x5e9);
    let mut rows = Vec::new();
    let stream = engine.stream();
    for n in SIZES {
        let config = AttentionConfig::new(HEADS, HEAD_DIM);
        let plan = AttentionPlan::new(engine, config, &[0, n], &[0, n])?;
        let id = nccl.unique_id()?;
        let comm = Communicator::init_rank(&nccl, engine, &id, 1, 0)?;
        let mut ulysses = UlyssesAttention::<bf16>::new(engine, comm, config, &[0, n], &[0, n])?;
        let len = plan.q_elements();
        let mut random = || -> Result<DeviceArray<bf16>> {
            let values: Vec<bf16> = (0..len).map(|_| bf16::from_f32(rng.gen_range(-2.0f32..2.0))).collect();
            Ok(DeviceArray::from_host(&values)?)
        };
        let (q, k, v) = (random()?, random()?, random()?);
        let mut out = DeviceArray::<bf16>::uninitialized(len)?;
        let requests = [RequestShape::new(n, n)];
        let geometry = SymbolGeometry::new(HEADS, 128, 128, &requests)?;
        for density in DENSITIES {
            let symbols = if density == 1.0 {
                PackedSymbols::dense(&geometry)
            } else {
                random_symbols(&mut rng, &geometry, density, 0.0)
            };
            let device_symbols = DeviceSymbols::upload(&symbols.view())?;
            let sparse = density < 1.0;
            let plain_ms = median_ms(stream, options.warmup, options.iters, || {
                let args = AttentionArgs {
                    q: q.view(),
                    k: k.view(),
                    v: v.view(),
                    out: out.view_mut(),
                    lse: None,
                    symbols: sparse.then_some(&device_symbols),
                };
                Ok(engine.attention(&plan, args, stream)?)
            })?;
            let parallel_ms = median_ms(stream, options.warmup, options.iters, || {
                let args = UlyssesArgs {
                    q: q.view(),
                    k: k.view(),
                    v: v.view(),
                    out: out.view_mut(),
                    symbols: sparse.then(|| symbols.view()),
                };
                Ok(ulysses.run(engine, args, stream)?)
            })?;
            eprintln!("bench: ulysses n={n} density={density}: plain {plain_ms:.3} ms, P=1 {parallel_ms:.3} ms");
            rows.push(ParallelRow {
                n,
                kv_density: symbols.view().stats().kv_density(),
                ranks: 1,
                plain_ms,
                parallel_ms,
            });
        }
    }
    Ok(rows)
}
