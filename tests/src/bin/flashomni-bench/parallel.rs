//! Sequence-parallel (Ulysses) attention on the GPUs of this machine: N = 33792 and 67584,
//! H = 24, D = 128, bf16, KV densities 1.0 and 0.25, timed against plain one-GPU attention.
//!
//! One thread per visible GPU (at most 8) runs one rank; the step time is the slowest rank's
//! median. Speedup = plain one-GPU time / sequence-parallel time, efficiency = speedup / P. With
//! one GPU this measures the P = 1 path's overhead (pack, NCCL all-to-all to itself, attention,
//! all-to-all back, unpack).

use std::sync::Arc;

use anyhow::{Context, Result};
use cust::device::Device;
use flashomni::parallel::nccl::{Communicator, Nccl, UniqueId};
use flashomni::parallel::ulysses::{UlyssesArgs, UlyssesAttention};
use flashomni::{AttentionConfig, DeviceArray, DeviceSymbols, Engine};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::gpu::{join_ranks, random_device_array};
use flashomni_tests::random::{random_symbols, seeded_rng};
use half::bf16;

use crate::Options;
use crate::attention::{HEAD_DIM, HEADS, SelfAttention};
use crate::timing::median_ms;

const SIZES: [u32; 2] = [33792, 67584];
const DENSITIES: [f64; 2] = [1.0, 0.25];

/// One comparison: plain attention on one GPU and the sequence-parallel path on `ranks` GPUs.
pub struct ParallelRow {
    /// Tokens.
    pub n: u32,
    /// Measured fraction of kept KV blocks.
    pub kv_density: f64,
    /// Ranks (GPUs) of the sequence-parallel run.
    pub ranks: u32,
    /// Plain one-GPU attention, median ms.
    pub plain_ms: f64,
    /// Sequence-parallel attention: the slowest rank's median ms.
    pub parallel_ms: f64,
}

/// Median ms of one rank's sequence-parallel steps on its own GPU (random shards: timing only).
fn time_rank(
    nccl: &Arc<Nccl>,
    id: &UniqueId,
    (ranks, rank): (u32, u32),
    n: u32,
    symbols: Option<&PackedSymbols>,
    options: &Options,
) -> Result<f64> {
    let engine = Engine::new(rank)?;
    let comm = Communicator::init_rank(nccl, &engine, id, ranks, rank)?;
    let config = AttentionConfig::new(HEADS, HEAD_DIM);
    let mut ulysses = UlyssesAttention::<bf16>::new(&engine, comm, config, &[0, n], &[0, n])?;
    let mut rng = seeded_rng(0x5e9 + u64::from(rank));
    let shard = ulysses.q_shard_elements();
    let mut random = || random_device_array::<bf16>(&mut rng, shard, 2.0);
    let (q, k, v) = (random()?, random()?, random()?);
    let mut out = DeviceArray::<bf16>::uninitialized(shard)?;
    let stream = engine.stream();
    median_ms(stream, &options.timing, || {
        let args = UlyssesArgs {
            q: q.view(),
            k: k.view(),
            v: v.view(),
            out: out.view_mut(),
            symbols: symbols.map(|s| s.view()),
        };
        Ok(ulysses.run(&engine, args, stream)?)
    })
}

/// Runs every case: plain attention on device 0, then one thread per GPU (all visible
/// devices, at most 8) running the sequence-parallel path together.
pub fn run(engine: &Engine, options: &Options) -> Result<Vec<ParallelRow>> {
    // SAFETY: `main` set NCCL_NVLS_ENABLE before anything else ran, so loading changes no
    // environment; FLASHOMNI_NCCL_LIB (or the loader's search path) names NCCL, as the
    // benchmark's documentation asks.
    let nccl = unsafe { Nccl::load() }.context("the parallel benchmark needs NCCL (set FLASHOMNI_NCCL_LIB)")?;
    let ranks = Device::num_devices().context("counting devices")?.clamp(1, 8);
    let mut rng = seeded_rng(0x5e9);
    let mut rows = Vec::new();
    let stream = engine.stream();
    for n in SIZES {
        let mut inputs = SelfAttention::new(engine, &mut rng, n)?;
        let requests = [RequestShape::new(n, n)];
        let geometry = SymbolGeometry::new(HEADS, 128, 128, &requests)?;
        for density in DENSITIES {
            let symbols = if density == 1.0 {
                PackedSymbols::dense(&geometry)
            } else {
                random_symbols(&mut rng, &geometry, density, 0.0)
            };
            let device_symbols = DeviceSymbols::upload(&symbols.view())?;
            let sparse = (density < 1.0).then_some(&symbols);
            let plain_ms =
                median_ms(stream, &options.timing, || inputs.launch(engine, sparse.map(|_| &device_symbols), stream))?;
            let id = nccl.unique_id()?;
            let per_rank: Vec<f64> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..ranks)
                    .map(|rank| {
                        let (nccl, id) = (&nccl, &id);
                        scope.spawn(move || time_rank(nccl, id, (ranks, rank), n, sparse, options))
                    })
                    .collect();
                join_ranks(handles)
            })?;
            let parallel_ms = per_rank.iter().copied().fold(0.0, f64::max);
            eprintln!("bench: ulysses n={n} density={density}: plain {plain_ms:.3} ms, P={ranks} {parallel_ms:.3} ms");
            rows.push(ParallelRow { n, kv_density: symbols.view().stats().kv_density(), ranks, plain_ms, parallel_ms });
        }
    }
    Ok(rows)
}
