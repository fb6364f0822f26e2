//! GPU tests of GEMM-Q and GEMM-O against the float64 CPU references.
//!
//! Every case draws its shape, inputs and S_c symbols from a seed, poisons the outputs
//! (all-ones bytes, a NaN), runs the kernels and checks:
//! - GEMM-Q: elements of computed (query block, head) pairs match the reference, and every
//!   element of a cached pair still holds the poison (never written);
//! - GEMM-O: cache mode matches its reference, active mode matches its reference given the
//!   cache the GPU produced, and cache followed by active equals the dense projection within
//!   bf16 tolerance; every element is written.
//!
//! Shapes cover rows that are not a multiple of the 128-row tile, reductions that are not a
//! multiple of the 64-deep k-tile, head dims 64 and 128 (a 128-column tile then spans two
//! heads), and unaligned token offsets for GEMM-Q (a row tile then spans two query blocks).
//! Every case draws the CTA size too (64 rows, 128 rows, or the launcher's choice), and the
//! fixed-shape cases run both sizes.

use anyhow::{Context, Result, bail, ensure};
use flashomni::{DeviceArray, DeviceSymbols, Element, Engine, Error, GemmOArgs, GemmOMode, GemmQArgs, GemmRows};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry, SymbolsView};
use flashomni_tests::compare::{Comparison, Tolerance};
use flashomni_tests::gpu::{engine_or_skip, engines_or_skip, for_each_engine, is_poison, poisoned};
use flashomni_tests::random::{random_elements, random_symbols, seeded_rng};
use flashomni_tests::reference::{GemmShape, HeadSparsity, gemm_o_active, gemm_o_cache, gemm_q};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::Rng;

/// A cache ratio: none (dense), everything cached, nothing cached, or in between.
fn draw_cache_ratio(rng: &mut impl Rng) -> Option<f64> {
    match rng.gen_range(0..6) {
        0 => None,
        1 => Some(1.0),
        2 => Some(0.0),
        _ => Some(rng.gen_range(0.1..0.9)),
    }
}

/// A CTA size: the launcher's choice, or one forced.
fn draw_rows(rng: &mut impl Rng) -> Option<GemmRows> {
    match rng.gen_range(0..3) {
        0 => None,
        1 => Some(GemmRows::Rows64),
        _ => Some(GemmRows::Rows128),
    }
}

/// What a GEMM-Q and a GEMM-O case share: the head split, where the rows lie in the
/// request, the request's S_c and whether a bias is added.
#[derive(Debug, Clone)]
struct HeadLayout {
    heads: u32,
    head_dim: u32,
    token_offset: u32,
    block_q: u32,
    /// Extra query tokens of the request past the GEMM's rows.
    q_extra: u32,
    cache_ratio: Option<f64>,
    with_bias: bool,
}

impl HeadLayout {
    /// Draws `1..=max_heads` heads of 64 or 128, a token offset from `token_offset` and a
    /// query block size from `block_qs`, then the rest.
    fn draw<R: Rng>(
        rng: &mut R,
        max_heads: u32,
        token_offset: impl FnOnce(&mut R) -> u32,
        block_qs: &[u32],
    ) -> HeadLayout {
        HeadLayout {
            heads: rng.gen_range(1..=max_heads),
            head_dim: if rng.gen_bool(0.5) { 64 } else { 128 },
            token_offset: token_offset(rng),
            block_q: block_qs[rng.gen_range(0..block_qs.len())],
            q_extra: rng.gen_range(0..=40),
            cache_ratio: draw_cache_ratio(rng),
            with_bias: rng.gen_bool(0.6),
        }
    }

    /// Length of the axis split into heads (`n` of GEMM-Q, `k` of GEMM-O).
    fn width(&self) -> u32 {
        self.heads * self.head_dim
    }

    /// Random S_c for one request covering `m` GEMM rows (S_s all ones), or `None` (dense);
    /// on the host and uploaded.
    fn symbols(&self, rng: &mut impl Rng, m: u32) -> Result<(Option<PackedSymbols>, Option<DeviceSymbols>)> {
        let Some(ratio) = self.cache_ratio else { return Ok((None, None)) };
        let requests = [RequestShape::new(self.token_offset + m + self.q_extra, 128)];
        let geometry = SymbolGeometry::new(self.heads, self.block_q, 128, &requests)?;
        let symbols = random_symbols(rng, &geometry, 1.0, ratio);
        let device = DeviceSymbols::upload(&symbols.view())?;
        Ok((Some(symbols), Some(device)))
    }

    /// The references' view of `symbols` for these rows.
    fn sparsity<'a>(&self, symbols: Option<&'a SymbolsView<'a>>) -> Option<HeadSparsity<'a>> {
        symbols.map(|symbols| HeadSparsity { symbols, request: 0, token_offset: self.token_offset })
    }
}

/// One randomly drawn GEMM-Q problem.
#[derive(Debug, Clone)]
struct QCase {
    seed: u64,
    m: u32,
    k: u32,
    layout: HeadLayout,
    rows: Option<GemmRows>,
}

impl QCase {
    fn draw(seed: u64) -> QCase {
        let mut rng = seeded_rng(seed);
        QCase {
            seed,
            m: rng.gen_range(1..=300),
            k: 8 * rng.gen_range(1..=72),
            layout: HeadLayout::draw(
                &mut rng,
                5,
                |rng| if rng.gen_bool(0.3) { 128 * rng.gen_range(0..4) } else { rng.gen_range(0..=300) },
                &[64, 100, 128, 128, 256],
            ),
            rows: draw_rows(&mut rng),
        }
    }

    fn n(&self) -> u32 {
        self.layout.width()
    }
}

/// Runs a GEMM-Q case on the GPU and checks it; returns the raw output.
fn run_q<T: Element>(engine: &Engine, case: &QCase) -> Result<Vec<T>> {
    let mut rng = seeded_rng(case.seed ^ 0x9e37_79b9);
    let (m, n, k) = (case.m as usize, case.n() as usize, case.k as usize);
    let (x, x32) = random_elements::<T>(&mut rng, m * k, 1.0);
    let (w, w32) = random_elements::<T>(&mut rng, n * k, 1.0);
    let (bias, bias32) = random_elements::<T>(&mut rng, n, 1.0);
    let (symbols, device_symbols) = case.layout.symbols(&mut rng, case.m)?;

    let x_dev = DeviceArray::from_host(&x)?;
    let w_dev = DeviceArray::from_host(&w)?;
    let bias_dev = DeviceArray::from_host(&bias)?;
    let mut out = poisoned::<T>(m * n)?;
    let args = GemmQArgs {
        x: x_dev.view(),
        w: w_dev.view(),
        bias: case.layout.with_bias.then(|| bias_dev.view()),
        out: out.view_mut(),
        token_offset: case.layout.token_offset,
        heads: case.layout.heads,
        symbols: device_symbols.as_ref(),
        tile_rows: case.rows,
    };
    engine.gemm_q(args, case.m, case.n(), case.k, engine.stream())?;
    engine.synchronize()?;
    let got = out.to_host()?;

    let view = symbols.as_ref().map(PackedSymbols::view);
    let sparsity = case.layout.sparsity(view.as_ref());
    let shape = GemmShape { m, n, k, heads: case.layout.heads };
    let want = gemm_q(&x32, &w32, case.layout.with_bias.then_some(bias32.as_slice()), shape, sparsity.as_ref());
    let tolerance = Tolerance::for_element(T::NAME);
    let mut comparison = Comparison::default();
    for (i, &value) in got.iter().enumerate() {
        let (row, col) = (i / n, i % n);
        if want.written[i] {
            comparison.element(f64::from(value.to_f32()), want.out[i], tolerance, || format!("row {row} col {col}"));
        } else if !is_poison(value) {
            comparison.fail(|| format!("row {row} col {col} belongs to a cached pair but was written"));
        }
    }
    comparison.finish(tolerance).with_context(|| format!("GEMM-Q {} {case:?}", T::NAME))?;
    Ok(got)
}

/// One randomly drawn GEMM-O problem.
#[derive(Debug, Clone)]
struct OCase {
    seed: u64,
    m: u32,
    n: u32,
    layout: HeadLayout,
    rows: Option<GemmRows>,
}

impl OCase {
    /// Token offsets and query blocks are multiples of 128 when 128-row CTAs are forced,
    /// otherwise of 64 or 128 (the launcher must then pick 64 rows where 128 cannot work).
    fn draw(seed: u64) -> OCase {
        let mut rng = seeded_rng(seed);
        let rows = draw_rows(&mut rng);
        let unit = if rows == Some(GemmRows::Rows128) || rng.gen_bool(0.5) { 128 } else { 64 };
        let block_qs: &[u32] = if unit == 128 { &[128, 256] } else { &[64, 128, 192, 256] };
        OCase {
            seed,
            m: rng.gen_range(1..=300),
            n: 8 * rng.gen_range(1..=48),
            layout: HeadLayout::draw(&mut rng, 6, |rng| unit * rng.gen_range(0..4), block_qs),
            rows,
        }
    }

    fn k(&self) -> u32 {
        self.layout.width()
    }
}

/// Runs a GEMM-O case (cache mode, then active mode on the produced cache) and checks it.
fn run_o<T: Element>(engine: &Engine, case: &OCase) -> Result<()> {
    let mut rng = seeded_rng(case.seed ^ 0x85eb_ca6b);
    let (m, n, k) = (case.m as usize, case.n as usize, case.k() as usize);
    // Half-width inputs keep |C| small enough that rounding C to 16 bits stays within the
    // bf16 tolerance of the dense result, even where C and the active part cancel.
    let (a, a32) = random_elements::<T>(&mut rng, m * k, 0.5);
    let (w, w32) = random_elements::<T>(&mut rng, n * k, 0.5);
    let (bias, bias32) = random_elements::<T>(&mut rng, n, 1.0);
    let (symbols, device_symbols) = case.layout.symbols(&mut rng, case.m)?;

    let a_dev = DeviceArray::from_host(&a)?;
    let w_dev = DeviceArray::from_host(&w)?;
    let bias_dev = DeviceArray::from_host(&bias)?;
    let mut cache = poisoned::<T>(m * n)?;
    let mut out = poisoned::<T>(m * n)?;
    let args = GemmOArgs {
        a: a_dev.view(),
        w: w_dev.view(),
        bias_or_cache: case.layout.with_bias.then(|| bias_dev.view()),
        out: cache.view_mut(),
        mode: GemmOMode::Cache,
        token_offset: case.layout.token_offset,
        heads: case.layout.heads,
        symbols: device_symbols.as_ref(),
        tile_rows: case.rows,
    };
    engine.gemm_o(args, case.m, case.n, case.k(), engine.stream())?;
    let args = GemmOArgs {
        a: a_dev.view(),
        w: w_dev.view(),
        bias_or_cache: Some(cache.view()),
        out: out.view_mut(),
        mode: GemmOMode::Active,
        token_offset: case.layout.token_offset,
        heads: case.layout.heads,
        symbols: device_symbols.as_ref(),
        tile_rows: case.rows,
    };
    engine.gemm_o(args, case.m, case.n, case.k(), engine.stream())?;
    engine.synchronize()?;
    let got_cache = cache.to_host()?;
    let got = out.to_host()?;

    let view = symbols.as_ref().map(PackedSymbols::view);
    let sparsity = case.layout.sparsity(view.as_ref());
    let shape = GemmShape { m, n, k, heads: case.layout.heads };
    let bias_ref = case.layout.with_bias.then_some(bias32.as_slice());
    let cache32: Vec<f32> = got_cache.iter().map(|x| x.to_f32()).collect();
    let want_cache = gemm_o_cache(&a32, &w32, bias_ref, shape, sparsity.as_ref());
    let want_active = gemm_o_active(&a32, &w32, Some(&cache32), shape, sparsity.as_ref());
    let want_dense = gemm_q(&a32, &w32, bias_ref, GemmShape { m, n, k, heads: 1 }, None).out;

    let tolerance = Tolerance::for_element(T::NAME);
    for (what, got, want, tolerance) in [
        ("cache", &got_cache, &want_cache, tolerance),
        ("active", &got, &want_active, tolerance),
        ("cache+active vs dense", &got, &want_dense, Tolerance::BF16),
    ] {
        let mut comparison = Comparison::default();
        for (i, (value, &want)) in got.iter().zip(want).enumerate() {
            comparison
                .element(f64::from(value.to_f32()), want, tolerance, || format!("{what} row {} col {}", i / n, i % n));
        }
        comparison.finish(tolerance).with_context(|| format!("GEMM-O {what}, {} {case:?}", T::NAME))?;
    }
    Ok(())
}

fn run_q_both_types(engine: &Engine, case: &QCase) -> Result<()> {
    run_q::<bf16>(engine, case)?;
    run_q::<f16>(engine, case)?;
    Ok(())
}

fn run_o_both_types(engine: &Engine, case: &OCase) -> Result<()> {
    run_o::<bf16>(engine, case)?;
    run_o::<f16>(engine, case)?;
    Ok(())
}

#[test]
fn gemm_q_matches_reference_on_fixed_seeds() -> Result<()> {
    for_each_engine("gemm_q_matches_reference_on_fixed_seeds", |engine| {
        for seed in 0..16 {
            run_q_both_types(engine, &QCase::draw(seed))?;
        }
        Ok(())
    })
}

#[test]
fn gemm_o_matches_reference_on_fixed_seeds() -> Result<()> {
    for_each_engine("gemm_o_matches_reference_on_fixed_seeds", |engine| {
        for seed in 0..16 {
            run_o_both_types(engine, &OCase::draw(seed))?;
        }
        Ok(())
    })
}

#[test]
fn gemm_q_matches_reference_on_fresh_seeds() {
    for engine in engines_or_skip("gemm_q_matches_reference_on_fresh_seeds") {
        proptest!(ProptestConfig::with_cases(16), |(seed in any::<u64>())| {
            run_q_both_types(&engine, &QCase::draw(seed)).map_err(|err| TestCaseError::fail(format!("{} module: {err:#}", engine.arch().target())))?;
        });
    }
}

#[test]
fn gemm_o_matches_reference_on_fresh_seeds() {
    for engine in engines_or_skip("gemm_o_matches_reference_on_fresh_seeds") {
        proptest!(ProptestConfig::with_cases(16), |(seed in any::<u64>())| {
            run_o_both_types(&engine, &OCase::draw(seed)).map_err(|err| TestCaseError::fail(format!("{} module: {err:#}", engine.arch().target())))?;
        });
    }
}

#[test]
fn gemm_q_mixed_tiles_write_only_computed_pairs() -> Result<()> {
    for_each_engine("gemm_q_mixed_tiles_write_only_computed_pairs", |engine| {
        // head_dim 64: every 128-column tile spans two heads; token_offset 64: every 128-row tile
        // spans two query blocks, so many tiles have both computed and cached pairs.
        for (seed, ratio) in [(1, Some(0.5)), (2, Some(0.75)), (3, Some(0.25))] {
            let layout = HeadLayout {
                heads: 6,
                head_dim: 64,
                token_offset: 64,
                block_q: 128,
                q_extra: 0,
                cache_ratio: ratio,
                with_bias: true,
            };
            for rows in GemmRows::ALL {
                let case = QCase { seed, m: 333, k: 200, layout: layout.clone(), rows: Some(rows) };
                run_q_both_types(engine, &case)?;
            }
        }
        Ok(())
    })
}

#[test]
fn gemm_larger_shapes() -> Result<()> {
    for_each_engine("gemm_larger_shapes", |engine| {
        let layout = HeadLayout {
            heads: 2,
            head_dim: 128,
            token_offset: 512,
            block_q: 128,
            q_extra: 7,
            cache_ratio: Some(0.5),
            with_bias: true,
        };
        for rows in GemmRows::ALL {
            let q = QCase { seed: 41, m: 515, k: 1016, layout: layout.clone(), rows: Some(rows) };
            run_q::<bf16>(engine, &q)?;
        }
        let layout = HeadLayout {
            heads: 4,
            head_dim: 128,
            token_offset: 512,
            block_q: 128,
            q_extra: 0,
            cache_ratio: Some(0.6),
            with_bias: true,
        };
        for rows in GemmRows::ALL {
            let o = OCase { seed: 42, m: 520, n: 392, layout: layout.clone(), rows: Some(rows) };
            run_o::<bf16>(engine, &o)?;
        }
        // 64-row CTAs also take token offsets and query blocks that are multiples of 64 only.
        let layout = HeadLayout {
            heads: 3,
            head_dim: 128,
            token_offset: 192,
            block_q: 192,
            q_extra: 5,
            cache_ratio: Some(0.5),
            with_bias: true,
        };
        for rows in [None, Some(GemmRows::Rows64)] {
            let o = OCase { seed: 43, m: 450, n: 264, layout: layout.clone(), rows };
            run_o::<bf16>(engine, &o)?;
        }
        Ok(())
    })
}

#[test]
fn gemm_runs_are_bitwise_equal() -> Result<()> {
    for_each_engine("gemm_runs_are_bitwise_equal", |engine| {
        for seed in [5, 6, 7] {
            let case = QCase::draw(seed);
            let first = run_q::<bf16>(engine, &case)?;
            let second = run_q::<bf16>(engine, &case)?;
            ensure!(first.iter().zip(&second).all(|(a, b)| a.to_bits() == b.to_bits()), "seed {seed}: runs differ");
        }
        Ok(())
    })
}

/// GEMM-Q arguments over one scratch input buffer.
fn q_args<'a>(
    input: &'a DeviceArray<bf16>,
    out: &'a mut DeviceArray<bf16>,
    heads: u32,
    token_offset: u32,
    symbols: Option<&'a DeviceSymbols>,
) -> GemmQArgs<'a, bf16> {
    GemmQArgs {
        x: input.view(),
        w: input.view(),
        bias: None,
        out: out.view_mut(),
        token_offset,
        heads,
        symbols,
        tile_rows: None,
    }
}

/// Active-mode GEMM-O arguments over one scratch input buffer.
fn o_args<'a>(
    input: &'a DeviceArray<bf16>,
    out: &'a mut DeviceArray<bf16>,
    heads: u32,
    token_offset: u32,
    symbols: Option<&'a DeviceSymbols>,
) -> GemmOArgs<'a, bf16> {
    GemmOArgs {
        a: input.view(),
        w: input.view(),
        bias_or_cache: None,
        out: out.view_mut(),
        mode: GemmOMode::Active,
        token_offset,
        heads,
        symbols,
        tile_rows: None,
    }
}

#[test]
fn gemm_bad_inputs_are_rejected_with_clear_errors() -> Result<()> {
    let Some(engine) = engine_or_skip("gemm_bad_inputs_are_rejected_with_clear_errors") else { return Ok(()) };
    let stream = engine.stream();
    let big = DeviceArray::<bf16>::uninitialized(1 << 16)?;
    let mut out = DeviceArray::<bf16>::uninitialized(1 << 16)?;

    match engine.gemm_q(q_args(&big, &mut out, 2, 0, None), 16, 128, 12, stream) {
        Err(Error::Misaligned { .. }) => {}
        other => bail!("k = 12 must be rejected as misaligned, got {other:?}"),
    }
    match engine.gemm_q(q_args(&big, &mut out, 3, 0, None), 16, 128, 64, stream) {
        Err(Error::InvalidShape(_)) => {}
        other => bail!("n = 128 with 3 heads must be rejected, got {other:?}"),
    }
    match engine.gemm_q(q_args(&big, &mut out, 1, 0, None), 600, 128, 128, stream) {
        Err(Error::BufferTooSmall { buffer: "x", .. }) => {}
        other => bail!("a short x must be rejected, got {other:?}"),
    }

    let requests = [RequestShape::new(200, 128)];
    let geometry = SymbolGeometry::new(2, 128, 128, &requests)?;
    let symbols = DeviceSymbols::upload(&PackedSymbols::dense(&geometry).view())?;
    match engine.gemm_q(q_args(&big, &mut out, 2, 100, Some(&symbols)), 101, 128, 64, stream) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("q_len"), "{message}"),
        other => bail!("rows past the symbols' request must be rejected, got {other:?}"),
    }
    match engine.gemm_q(q_args(&big, &mut out, 4, 0, Some(&symbols)), 16, 256, 64, stream) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("heads"), "{message}"),
        other => bail!("symbols for another head count must be rejected, got {other:?}"),
    }

    match engine.gemm_o(o_args(&big, &mut out, 2, 0, None), 16, 64, 192, stream) {
        Err(Error::Unsupported(_)) => {}
        other => bail!("head_dim 96 must be unsupported for GEMM-O, got {other:?}"),
    }
    match engine.gemm_o(o_args(&big, &mut out, 2, 32, Some(&symbols)), 16, 64, 256, stream) {
        Err(Error::Unsupported(message)) => ensure!(message.contains("token_offset"), "{message}"),
        other => bail!("a token_offset that no CTA size divides must be unsupported for GEMM-O, got {other:?}"),
    }
    let args = GemmOArgs { tile_rows: Some(GemmRows::Rows128), ..o_args(&big, &mut out, 2, 64, Some(&symbols)) };
    match engine.gemm_o(args, 16, 64, 256, stream) {
        Err(Error::Unsupported(message)) => ensure!(message.contains("128-row"), "{message}"),
        other => bail!("forced 128-row CTAs must need a 128-aligned token_offset, got {other:?}"),
    }
    match engine.gemm_o(o_args(&big, &mut out, 2, 0, None), 16, 60, 256, stream) {
        Err(Error::Misaligned { .. }) => {}
        other => bail!("n = 60 must be rejected as misaligned, got {other:?}"),
    }
    let short_cache = DeviceArray::<bf16>::uninitialized(16 * 64 - 1)?;
    let args = GemmOArgs { bias_or_cache: Some(short_cache.view()), ..o_args(&big, &mut out, 2, 0, None) };
    match engine.gemm_o(args, 16, 64, 256, stream) {
        Err(Error::BufferTooSmall { buffer: "bias_or_cache", .. }) => {}
        other => bail!("a short C must be rejected, got {other:?}"),
    }
    Ok(())
}
