//! GEMM benchmark cases: M ∈ sizes, K = N = 3072 (H = 24 heads of D = 128), bf16, cache ratios
//! 0, 0.5, 0.75, 0.9 for GEMM-Q and for GEMM-O in active mode (the dispatch-step path).
//!
//! Each M also times a device-to-device copy of the `[M, N]` cache matrix into the output
//! (`op` = `copy`): the bytes GEMM-O's active mode must read and write at the least, moved by
//! the driver's copy engine path, so its time is the measured floor of that mode.

use anyhow::{Result, ensure};
use cust::stream::Stream;
use flashomni::{DeviceArray, DeviceSymbols, Engine, GemmOArgs, GemmOMode, GemmQArgs, GemmWorkspace};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::gpu::random_device_array;
use flashomni_tests::random::{random_symbols, seeded_rng};
use half::bf16;

use crate::Options;
use crate::report::Row;
use crate::timing::median_ms;

const HEADS: u32 = 24;
const HEAD_DIM: u32 = 128;
const WIDTH: u32 = HEADS * HEAD_DIM;
/// Fractions of S_c bits that are 0.
const CACHE_RATIOS: [f64; 4] = [0.0, 0.5, 0.75, 0.9];

/// Fraction of (query block, head) pairs of request 0 with S_c = 1, weighted by the rows of
/// each block that lie in `0..m`.
fn computed_fraction(symbols: &PackedSymbols, m: u32) -> f64 {
    let view = symbols.view();
    let block = view.geometry().block_q();
    let mut computed = 0f64;
    for qb in 0..view.geometry().num_q_blocks(0) {
        let rows = (m - qb * block).min(block) as f64;
        computed += rows * (0..HEADS).filter(|&h| view.compute(0, qb, h)).count() as f64;
    }
    computed / (m as f64 * HEADS as f64)
}

/// Copies `source` into `destination` (same length) on `stream`, asynchronously.
fn copy_on_stream(source: &DeviceArray<bf16>, destination: &mut DeviceArray<bf16>, stream: &Stream) -> Result<()> {
    ensure!(source.len() == destination.len(), "copy between arrays of different lengths");
    let bytes = source.len() * size_of::<bf16>();
    // SAFETY: both arrays are live device allocations of `bytes` bytes owned by the caller, and
    // the caller synchronizes the stream before either is freed or read on the host.
    let status = unsafe {
        cust::sys::cuMemcpyDtoDAsync_v2(
            destination.view_mut().address(),
            source.view().address(),
            bytes,
            stream.as_inner(),
        )
    };
    ensure!(status == cust::sys::CUresult::CUDA_SUCCESS, "cuMemcpyDtoDAsync failed: {status:?}");
    Ok(())
}

/// A result row of the GEMM shapes (H = 24 heads of D = 128, every KV block kept) at `m` rows.
fn gemm_row(op: &'static str, m: u32, cache_ratio: f64, ms: f64, tflops: f64) -> Row {
    Row { op, n: m, heads: HEADS, dim: HEAD_DIM, kv_density: 1.0, cache_ratio, requested_density: 1.0, ms, tflops }
}

/// Runs every GEMM case and returns one row per case.
pub fn run(engine: &Engine, options: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut rng = seeded_rng(0x6e33);
    let stream = engine.stream();
    let mut workspace = GemmWorkspace::new(engine)?;
    for &m in &options.sizes {
        let elements = m as usize * WIDTH as usize;
        let x = random_device_array::<bf16>(&mut rng, elements, 1.0)?;
        let w = random_device_array::<bf16>(&mut rng, (WIDTH * WIDTH) as usize, 1.0)?;
        let bias = random_device_array::<bf16>(&mut rng, WIDTH as usize, 1.0)?;
        let cache = random_device_array::<bf16>(&mut rng, elements, 1.0)?;
        let mut out = DeviceArray::<bf16>::uninitialized(elements)?;
        let copy_ms = median_ms(stream, &options.timing, || copy_on_stream(&cache, &mut out, stream))?;
        rows.push(gemm_row("copy", m, 0.0, copy_ms, 0.0));
        eprintln!("bench: gemm m={m}: copy of the cache matrix {copy_ms:.3} ms");
        let requests = [RequestShape::new(m, m)];
        let geometry = SymbolGeometry::new(HEADS, 128, 128, &requests)?;
        for ratio in CACHE_RATIOS {
            let symbols = random_symbols(&mut rng, &geometry, 1.0, ratio);
            let device_symbols = DeviceSymbols::upload(&symbols.view())?;
            let selected = (ratio > 0.0).then_some(&device_symbols);
            let fraction = if ratio > 0.0 { computed_fraction(&symbols, m) } else { 1.0 };
            let flops = 2.0 * m as f64 * WIDTH as f64 * WIDTH as f64 * fraction;
            let measured = symbols.view().stats().caching_ratio();
            let q_ms = median_ms(stream, &options.timing, || {
                let args = GemmQArgs {
                    bias: Some(bias.view()),
                    symbols: selected,
                    tile_rows: options.gemm_rows,
                    workspace: (!options.no_split_k).then_some(&mut workspace),
                    clustered: options.q_clusters,
                    ..GemmQArgs::new(x.view(), w.view(), out.view_mut(), HEADS)
                };
                Ok(engine.gemm_q(args, m, WIDTH, WIDTH, stream)?)
            })?;
            let o_ms = median_ms(stream, &options.timing, || {
                let args = GemmOArgs {
                    bias_or_cache: Some(cache.view()),
                    symbols: selected,
                    tile_rows: options.gemm_rows,
                    workspace: Some(&mut workspace),
                    persistent: options.persistent_o,
                    ..GemmOArgs::new(x.view(), w.view(), out.view_mut(), GemmOMode::Active, HEADS)
                };
                Ok(engine.gemm_o(args, m, WIDTH, WIDTH, stream)?)
            })?;
            let cache_ratio = if ratio > 0.0 { measured } else { 0.0 };
            for (op, ms) in [("gemm_q", q_ms), ("gemm_o", o_ms)] {
                rows.push(gemm_row(op, m, cache_ratio, ms, flops / ms / 1e9));
            }
            eprintln!("bench: gemm m={m} cache={ratio}: gemm_q {q_ms:.3} ms, gemm_o {o_ms:.3} ms");
        }
    }
    Ok(rows)
}
