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

use std::cell::RefCell;

use anyhow::{Context, Result, bail, ensure};
use flashomni::{
    Arch, DeviceArray, DeviceSymbols, Element, Engine, Error, GemmOArgs, GemmOMode, GemmQArgs, GemmRows, GemmSplit,
    GemmWorkspace,
};
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

/// How a GEMM-Q case splits its reduction.
#[derive(Debug, Clone, Copy)]
enum SplitChoice {
    /// No workspace: never split.
    Off,
    /// A workspace, and the launcher's plan (few test tiles rarely split).
    Auto,
    /// A workspace and a forced split.
    Forced(GemmSplit),
}

/// A split choice; forced splits take 0–3 whole tiles and 1–8 parts (more parts than k-tiles
/// leaves some parts empty).
fn draw_split(rng: &mut impl Rng) -> SplitChoice {
    match rng.gen_range(0..4) {
        0 => SplitChoice::Off,
        1 => SplitChoice::Auto,
        _ => SplitChoice::Forced(GemmSplit { whole_tiles: rng.gen_range(0..4), parts: rng.gen_range(1..=8) }),
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

    /// A fixed layout with a bias, 128-token query blocks and no tokens past the rows.
    fn with_bias(heads: u32, head_dim: u32, token_offset: u32, cache_ratio: Option<f64>) -> HeadLayout {
        HeadLayout { heads, head_dim, token_offset, block_q: 128, q_extra: 0, cache_ratio, with_bias: true }
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
    split: SplitChoice,
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
            split: draw_split(&mut rng),
        }
    }

    fn n(&self) -> u32 {
        self.layout.width()
    }
}

/// Runs a GEMM-Q case on the GPU (splitting with `workspace` if the case says so) and checks
/// it; returns the raw output.
fn run_q<T: Element>(engine: &Engine, case: &QCase, workspace: &mut GemmWorkspace) -> Result<Vec<T>> {
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
        workspace: match case.split {
            SplitChoice::Off => None,
            SplitChoice::Auto | SplitChoice::Forced(_) => Some(workspace),
        },
        split: match case.split {
            SplitChoice::Forced(split) => Some(split),
            SplitChoice::Off | SplitChoice::Auto => None,
        },
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
    /// Forces the persistent kernel on the `sm_90a` module (with `rows` = 128); elsewhere, and
    /// when false, the launch gets no workspace and runs the per-tile kernels.
    persistent: bool,
}

impl OCase {
    /// Token offsets and query blocks are multiples of 128 when 128-row CTAs are forced,
    /// otherwise of 64 or 128 (the launcher must then pick 64 rows where 128 cannot work);
    /// half the cases with forced 128-row CTAs force the persistent kernel.
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
            persistent: rows == Some(GemmRows::Rows128) && rng.gen_bool(0.5),
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
    // Both launches share one workspace: the second finds the tile counters the first used
    // zeroed again, or leaves poisoned tiles.
    let persistent = case.persistent && engine.arch() == Arch::Sm90a;
    let mut workspace = persistent.then(|| GemmWorkspace::new(engine)).transpose()?;
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
        workspace: workspace.as_mut(),
        persistent: persistent.then_some(true),
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
        workspace: workspace.as_mut(),
        persistent: persistent.then_some(true),
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

fn run_q_both_types(engine: &Engine, case: &QCase, workspace: &mut GemmWorkspace) -> Result<()> {
    run_q::<bf16>(engine, case, workspace)?;
    run_q::<f16>(engine, case, workspace)?;
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
        let mut workspace = GemmWorkspace::new(engine)?;
        for seed in 0..16 {
            run_q_both_types(engine, &QCase::draw(seed), &mut workspace)?;
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
        // proptest's body is a `Fn`: the shared workspace is lent out per case.
        let workspace = RefCell::new(GemmWorkspace::new(&engine).expect("allocating a GEMM workspace"));
        proptest!(ProptestConfig::with_cases(16), |(seed in any::<u64>())| {
            run_q_both_types(&engine, &QCase::draw(seed), &mut workspace.borrow_mut()).map_err(|err| TestCaseError::fail(format!("{} module: {err:#}", engine.arch().target())))?;
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
        let mut workspace = GemmWorkspace::new(engine)?;
        // head_dim 64: every 128-column tile spans two heads; token_offset 64: every 128-row tile
        // spans two query blocks, so many tiles have both computed and cached pairs.
        for (seed, ratio) in [(1, Some(0.5)), (2, Some(0.75)), (3, Some(0.25))] {
            let layout = HeadLayout::with_bias(6, 64, 64, ratio);
            for rows in GemmRows::ALL {
                let split = SplitChoice::Forced(GemmSplit { whole_tiles: 2, parts: 3 });
                for split in [SplitChoice::Off, split] {
                    let case = QCase { seed, m: 333, k: 200, layout: layout.clone(), rows: Some(rows), split };
                    run_q_both_types(engine, &case, &mut workspace)?;
                }
            }
        }
        Ok(())
    })
}

#[test]
fn gemm_q_split_reductions_match_reference() -> Result<()> {
    for_each_engine("gemm_q_split_reductions_match_reference", |engine| {
        // One workspace for every launch: each split launch must leave its counters at zero.
        let mut workspace = GemmWorkspace::new(engine)?;
        // 3 × 3 tiles of 128 rows (5 × 3 of 64); k = 200 is 4 k-tiles, so 5 or more parts
        // leave parts without a k-tile, and k = 1016 ends in a partial k-tile.
        for (seed, k, ratio) in [(11, 200, None), (12, 1016, Some(0.5)), (13, 1016, None)] {
            let layout = HeadLayout::with_bias(3, 128, 64, ratio);
            for rows in GemmRows::ALL {
                for parts in 1..=8 {
                    let split = SplitChoice::Forced(GemmSplit { whole_tiles: parts % 3, parts });
                    let case = QCase { seed, m: 300, k, layout: layout.clone(), rows: Some(rows), split };
                    run_q::<bf16>(engine, &case, &mut workspace)?;
                }
            }
        }
        Ok(())
    })
}

#[test]
fn gemm_larger_shapes() -> Result<()> {
    for_each_engine("gemm_larger_shapes", |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
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
            let split = SplitChoice::Forced(GemmSplit { whole_tiles: 3, parts: 2 });
            for split in [SplitChoice::Off, SplitChoice::Auto, split] {
                let q = QCase { seed: 41, m: 515, k: 1016, layout: layout.clone(), rows: Some(rows), split };
                run_q::<bf16>(engine, &q, &mut workspace)?;
            }
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
            let o = OCase { seed: 42, m: 520, n: 392, layout: layout.clone(), rows: Some(rows), persistent: false };
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
            let o = OCase { seed: 43, m: 450, n: 264, layout: layout.clone(), rows, persistent: false };
            run_o::<bf16>(engine, &o)?;
        }
        Ok(())
    })
}

/// The persistent GEMM-O (`sm_90a`) runs one CTA per multiprocessor over 128 × 256 tiles:
/// 14 × 11 = 154 tiles make some CTAs claim two, and the last column of tiles has one
/// consumer's columns partly and the other's wholly outside the output.
#[test]
fn gemm_o_ctas_walking_several_tiles() -> Result<()> {
    for_each_engine("gemm_o_ctas_walking_several_tiles", |engine| {
        let layout = HeadLayout {
            heads: 2,
            head_dim: 128,
            token_offset: 256,
            block_q: 128,
            q_extra: 3,
            cache_ratio: Some(0.5),
            with_bias: true,
        };
        let o = OCase { seed: 44, m: 1700, n: 2568, layout, rows: Some(GemmRows::Rows128), persistent: true };
        run_o::<bf16>(engine, &o)
    })
}

#[test]
fn gemm_runs_are_bitwise_equal() -> Result<()> {
    for_each_engine("gemm_runs_are_bitwise_equal", |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
        for seed in [5, 6, 7] {
            // The drawn case, and the same case with every tile split: the last part to
            // arrive differs from run to run, the sum must not.
            let split = SplitChoice::Forced(GemmSplit { whole_tiles: 0, parts: 3 });
            for case in [QCase::draw(seed), QCase { k: 8 * 100, split, ..QCase::draw(seed) }] {
                let first = run_q::<bf16>(engine, &case, &mut workspace)?;
                let second = run_q::<bf16>(engine, &case, &mut workspace)?;
                let equal = first.iter().zip(&second).all(|(a, b)| a.to_bits() == b.to_bits());
                ensure!(equal, "seed {seed}, {:?}: runs differ", case.split);
            }
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
        workspace: None,
        split: None,
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
        workspace: None,
        persistent: None,
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

    let split = Some(GemmSplit { whole_tiles: 0, parts: 2 });
    match engine.gemm_q(GemmQArgs { split, ..q_args(&big, &mut out, 1, 0, None) }, 16, 128, 128, stream) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("workspace"), "{message}"),
        other => bail!("a forced split without a workspace must be rejected, got {other:?}"),
    }
    let mut workspace = GemmWorkspace::new(&engine)?;
    for parts in [0, 9] {
        let split = Some(GemmSplit { whole_tiles: 0, parts });
        let args = GemmQArgs { split, workspace: Some(&mut workspace), ..q_args(&big, &mut out, 1, 0, None) };
        match engine.gemm_q(args, 16, 128, 128, stream) {
            Err(Error::Unsupported(message)) => ensure!(message.contains("parts"), "{message}"),
            other => bail!("a split into {parts} parts must be unsupported, got {other:?}"),
        }
    }
    // 512 × 8192 output: 256 tiles of 128 rows, cut in 8: more parts than the workspace holds.
    let wide = DeviceArray::<bf16>::uninitialized(8192 * 64)?;
    let mut wide_out = DeviceArray::<bf16>::uninitialized(512 * 8192)?;
    let args = GemmQArgs {
        x: big.view(),
        w: wide.view(),
        tile_rows: Some(GemmRows::Rows128),
        split: Some(GemmSplit { whole_tiles: 0, parts: 8 }),
        workspace: Some(&mut workspace),
        ..q_args(&big, &mut wide_out, 1, 0, None)
    };
    match engine.gemm_q(args, 512, 8192, 64, stream) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("workspace holds"), "{message}"),
        other => bail!("a split larger than the workspace must be rejected, got {other:?}"),
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
    let args = GemmOArgs { persistent: Some(true), ..o_args(&big, &mut out, 2, 0, None) };
    match engine.gemm_o(args, 16, 64, 256, stream) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("workspace"), "{message}"),
        other => bail!("a forced persistent GEMM-O without a workspace must be rejected, got {other:?}"),
    }
    let mut workspace = GemmWorkspace::new(&engine)?;
    let args = GemmOArgs {
        persistent: Some(true),
        workspace: Some(&mut workspace),
        tile_rows: Some(GemmRows::Rows64),
        ..o_args(&big, &mut out, 2, 0, None)
    };
    match engine.gemm_o(args, 16, 64, 256, stream) {
        Err(Error::Unsupported(message)) => ensure!(message.contains("persistent"), "{message}"),
        other => bail!("a forced persistent GEMM-O with 64-row CTAs must be unsupported, got {other:?}"),
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
