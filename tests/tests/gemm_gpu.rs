//! GPU tests of GEMM-Q and GEMM-O against the float64 CPU references.
//!
//! Every case draws its shape, inputs and S_c symbols from a seed, runs the kernels into
//! poisoned outputs (all-ones bytes, a NaN) that lie between poisoned guard regions, and
//! checks:
//! - GEMM-Q: elements of computed (query block, head) pairs match the reference, and every
//!   element of a cached pair still holds the poison (never written);
//! - GEMM-O: cache mode matches its reference, active mode matches its reference given the
//!   cache the GPU produced (or none: active mode alone, without `C`), and cache followed by
//!   active equals the dense projection up to the rounding of the cache; every element is
//!   written;
//! - both: no guard element was written (a tile partly outside the output stores nothing
//!   outside it).
//!
//! f16 results are held to [`Tolerance::F16_GEMM`] (one f16 rounding), bf16 results to
//! [`Tolerance::BF16`]. A case's inputs and references are computed once per element type and
//! shared by the launches that differ only in CTA size, split or kernel.
//!
//! Half the random cases' symbols hold one or two more requests, before or after the one the
//! rows belong to, so its S_c segment starts past theirs. Shapes cover rows that are not a
//! multiple of the 128-row tile, reductions that are not a multiple of the 64-deep k-tile (and
//! shorter than one), K = 3072, dense and sparse symbols, every head-dim class each GEMM
//! accepts (GEMM-Q: multiples of 8 from 8 to 256, so a 128-column tile may span up to 16 heads
//! or cut a head in two; GEMM-O: multiples of 64 up to 256), and unaligned token offsets for
//! GEMM-Q (a row tile then spans two query blocks). Every random case draws the CTA size too
//! (64 rows, 128 rows, or the launcher's choice); the fixed-shape cases run both sizes, in
//! bf16 and f16. The error tests check that bad arguments are rejected, before anything is
//! launched, with the error variant that names the problem.

use std::cell::RefCell;

use anyhow::{Context, Result, bail, ensure};
use flashomni::{
    Arch, DeviceArray, DeviceSymbols, DeviceView, DeviceViewMut, Element, Engine, Error, GemmOArgs, GemmOMode,
    GemmQArgs, GemmRows, GemmSplit, GemmWorkspace,
};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry, SymbolsView};
use flashomni_tests::compare::{Comparison, Tolerance, unit_roundoff};
use flashomni_tests::gpu::{
    GuardedOutput, engine_or_skip, engines_or_skip, for_each_engine, is_poison, subview, subview_mut,
    twice_bitwise_equal, with_object_of_other_context,
};
use flashomni_tests::random::{random_elements, random_symbols, seeded_rng};
use flashomni_tests::reference::{GemmQRef, GemmShape, HeadSparsity, gemm_o_active, gemm_o_cache, gemm_q};
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

/// What a GEMM-Q and a GEMM-O case share: the head split, which request of the symbols the
/// rows belong to and where they lie in it, the symbols' S_c and whether a bias is added.
#[derive(Debug, Clone)]
struct HeadLayout {
    heads: u32,
    head_dim: u32,
    /// The request of the symbols whose query tokens the rows are.
    request: u32,
    /// Query lengths of the symbols' other requests, in order (the GEMM's request is
    /// inserted at `request`), so its S_c segment starts past theirs.
    other_q_lens: Vec<u32>,
    token_offset: u32,
    block_q: u32,
    /// Extra query tokens of the request past the GEMM's rows.
    q_extra: u32,
    cache_ratio: Option<f64>,
    with_bias: bool,
}

impl HeadLayout {
    /// Draws `1..=max_heads` heads of a size from `head_dims`, a token offset from
    /// `token_offset` and a query block size from `block_qs`, then the rest. Half the layouts
    /// have one request; the others have one or two more, of 0–400 query tokens, before or
    /// after the GEMM's.
    fn draw<R: Rng>(
        rng: &mut R,
        (max_heads, head_dims): (u32, &[u32]),
        token_offset: impl FnOnce(&mut R) -> u32,
        block_qs: &[u32],
    ) -> HeadLayout {
        let others = if rng.gen_bool(0.5) { 0 } else { rng.gen_range(1..=2) };
        HeadLayout {
            heads: rng.gen_range(1..=max_heads),
            head_dim: head_dims[rng.gen_range(0..head_dims.len())],
            request: rng.gen_range(0..=others),
            other_q_lens: (0..others).map(|_| rng.gen_range(0..=400)).collect(),
            token_offset: token_offset(rng),
            block_q: block_qs[rng.gen_range(0..block_qs.len())],
            q_extra: rng.gen_range(0..=40),
            cache_ratio: draw_cache_ratio(rng),
            with_bias: rng.gen_bool(0.6),
        }
    }

    /// A fixed layout with a bias, 128-token query blocks and no tokens past the rows.
    fn with_bias(heads: u32, head_dim: u32, token_offset: u32, cache_ratio: Option<f64>) -> HeadLayout {
        HeadLayout {
            heads,
            head_dim,
            request: 0,
            other_q_lens: Vec::new(),
            token_offset,
            block_q: 128,
            q_extra: 0,
            cache_ratio,
            with_bias: true,
        }
    }

    /// Length of the axis split into heads (`n` of GEMM-Q, `k` of GEMM-O).
    fn width(&self) -> u32 {
        self.heads * self.head_dim
    }

    /// Random S_c for the requests, the GEMM's covering its `m` rows (S_s all ones), or `None`
    /// (dense); on the host and uploaded.
    fn symbols(&self, rng: &mut impl Rng, m: u32) -> Result<(Option<PackedSymbols>, Option<DeviceSymbols>)> {
        let Some(ratio) = self.cache_ratio else { return Ok((None, None)) };
        let mut q_lens = self.other_q_lens.clone();
        q_lens.insert(self.request as usize, self.token_offset + m + self.q_extra);
        let requests: Vec<_> = q_lens.into_iter().map(|q_len| RequestShape::new(q_len, 128)).collect();
        let geometry = SymbolGeometry::new(self.heads, self.block_q, 128, &requests)?;
        let symbols = random_symbols(rng, &geometry, 1.0, ratio);
        let device = DeviceSymbols::upload(&symbols.view())?;
        Ok((Some(symbols), Some(device)))
    }

    /// The references' view of `symbols` for these rows.
    fn sparsity<'a>(&self, symbols: Option<&'a SymbolsView<'a>>) -> Option<HeadSparsity<'a>> {
        symbols.map(|symbols| HeadSparsity { symbols, request: self.request as usize, token_offset: self.token_offset })
    }
}

/// A problem's inputs in `T`, drawn from a seed: the activations (`[m, k]`: GEMM-Q's `x`,
/// GEMM-O's `a`) and weights (`[n, k]`) with entries in (−scale, scale), a bias of `n` entries
/// in (−1, 1) when the layout adds one, and the layout's symbols; as f32 for the references
/// and uploaded.
struct Operands<T: Element> {
    shape: GemmShape,
    a32: Vec<f32>,
    w32: Vec<f32>,
    bias32: Option<Vec<f32>>,
    symbols: Option<PackedSymbols>,
    a: DeviceArray<T>,
    w: DeviceArray<T>,
    bias: Option<DeviceArray<T>>,
    device_symbols: Option<DeviceSymbols>,
}

impl<T: Element> Operands<T> {
    /// Draws the operands of an `m × n × k` problem over `layout` from `seed`.
    fn draw(layout: &HeadLayout, seed: u64, (m, n, k): (u32, u32, u32), scale: f32) -> Result<Self> {
        let mut rng = seeded_rng(seed);
        let (a, a32) = random_elements::<T>(&mut rng, m as usize * k as usize, scale);
        let (w, w32) = random_elements::<T>(&mut rng, n as usize * k as usize, scale);
        let (bias, bias32) = random_elements::<T>(&mut rng, n as usize, 1.0);
        let (symbols, device_symbols) = layout.symbols(&mut rng, m)?;
        Ok(Self {
            shape: GemmShape { m: m as usize, n: n as usize, k: k as usize, heads: layout.heads },
            a: DeviceArray::from_host(&a)?,
            w: DeviceArray::from_host(&w)?,
            bias: layout.with_bias.then(|| DeviceArray::from_host(&bias)).transpose()?,
            bias32: layout.with_bias.then_some(bias32),
            a32,
            w32,
            symbols,
            device_symbols,
        })
    }

    /// Evaluates a float64 reference (`gemm_q`, `gemm_o_cache`, …) on these operands: the
    /// activations, the weights, the bias (if any), the shape and the symbols' sparsity.
    fn reference<R>(
        &self,
        layout: &HeadLayout,
        reference: impl FnOnce(&[f32], &[f32], Option<&[f32]>, GemmShape, Option<&HeadSparsity<'_>>) -> R,
    ) -> R {
        let view = self.symbols.as_ref().map(PackedSymbols::view);
        let sparsity = layout.sparsity(view.as_ref());
        reference(&self.a32, &self.w32, self.bias32.as_deref(), self.shape, sparsity.as_ref())
    }
}

/// One GEMM-Q problem: its shape, head layout and the seed of its inputs.
#[derive(Debug, Clone)]
struct QCase {
    seed: u64,
    m: u32,
    k: u32,
    layout: HeadLayout,
}

/// How one launch of a GEMM-Q problem runs.
#[derive(Debug, Clone, Copy)]
struct QLaunch {
    rows: Option<GemmRows>,
    split: SplitChoice,
    /// Thread-block clusters forced on or off; forcing them on is kept only on the `sm_90a`
    /// module (elsewhere it is an error, checked in the bad-input test).
    clustered: Option<bool>,
}

impl QLaunch {
    /// Every CTA size forced, with each of `splits`, with and without clusters.
    fn each_rows(splits: &[SplitChoice]) -> Vec<QLaunch> {
        GemmRows::ALL
            .into_iter()
            .flat_map(|rows| splits.iter().map(move |&split| (rows, split)))
            .flat_map(|(rows, split)| {
                [false, true].map(|clustered| QLaunch { rows: Some(rows), split, clustered: Some(clustered) })
            })
            .collect()
    }
}

/// A cluster choice: the launcher's, or forced off or on.
fn draw_clustered(rng: &mut impl Rng) -> Option<bool> {
    [None, Some(false), Some(true)][rng.gen_range(0..3)]
}

impl QCase {
    /// A random problem and launch.
    fn draw(seed: u64) -> (QCase, QLaunch) {
        let mut rng = seeded_rng(seed);
        let case = QCase {
            seed,
            m: rng.gen_range(1..=300),
            k: 8 * rng.gen_range(1..=72),
            layout: HeadLayout::draw(
                &mut rng,
                (5, &[8, 24, 64, 64, 96, 128, 128, 256]),
                |rng| if rng.gen_bool(0.3) { 128 * rng.gen_range(0..4) } else { rng.gen_range(0..=300) },
                &[64, 100, 128, 128, 256],
            ),
        };
        let launch =
            QLaunch { rows: draw_rows(&mut rng), split: draw_split(&mut rng), clustered: draw_clustered(&mut rng) };
        (case, launch)
    }

    fn n(&self) -> u32 {
        self.layout.width()
    }
}

impl GemmCase for QCase {
    type Launch = QLaunch;
    type Problem<'c, T: Element> = QProblem<'c, T>;

    /// Draws the inputs (entries in (−1, 1)) and symbols in `T`, uploads them and computes
    /// the reference.
    fn prepare<T: Element>(&self) -> Result<QProblem<'_, T>> {
        let operands = Operands::<T>::draw(&self.layout, self.seed ^ 0x9e37_79b9, (self.m, self.n(), self.k), 1.0)?;
        let want = operands.reference(&self.layout, gemm_q);
        Ok(QProblem { case: self, operands, want })
    }
}

/// A GEMM-Q problem's inputs on the device and its reference, for any number of launches.
struct QProblem<'c, T: Element> {
    case: &'c QCase,
    operands: Operands<T>,
    want: GemmQRef,
}

impl<T: Element> Launchable<QLaunch> for QProblem<'_, T> {
    fn launch(&self, engine: &Engine, launch: QLaunch, workspace: &mut GemmWorkspace) -> Result<()> {
        self.run(engine, launch, workspace).map(drop)
    }
}

impl<T: Element> QProblem<'_, T> {
    /// Runs one launch into a guarded, poisoned output (splitting with `workspace` if the
    /// launch says so) and checks it; returns the raw output.
    fn run(&self, engine: &Engine, launch: QLaunch, workspace: &mut GemmWorkspace) -> Result<Vec<T>> {
        let case = self.case;
        let n = case.n() as usize;
        let mut out = GuardedOutput::<T>::new(case.m as usize * n, n)?;
        let operands = &self.operands;
        let args = GemmQArgs {
            x: operands.a.view(),
            w: operands.w.view(),
            bias: operands.bias.as_ref().map(DeviceArray::view),
            out: out.view_mut(),
            token_offset: case.layout.token_offset,
            heads: case.layout.heads,
            symbols: operands.device_symbols.as_ref(),
            request: case.layout.request,
            tile_rows: launch.rows,
            workspace: match launch.split {
                SplitChoice::Off => None,
                SplitChoice::Auto | SplitChoice::Forced(_) => Some(workspace),
            },
            split: match launch.split {
                SplitChoice::Forced(split) => Some(split),
                SplitChoice::Off | SplitChoice::Auto => None,
            },
            clustered: launch.clustered.filter(|&on| !on || engine.arch() == Arch::Sm90a),
        };
        let context = || format!("GEMM-Q {} {case:?} {launch:?}", T::NAME);
        engine.gemm_q(args, case.m, case.n(), case.k, engine.stream()).with_context(context)?;
        engine.synchronize()?;
        let got = out.to_host().with_context(context)?;
        check_gemm_q_output(&got, &self.want, n).with_context(context)?;
        Ok(got)
    }
}

/// Checks a GEMM-Q output of `n` columns against the leading rows of `want`: the elements of
/// computed pairs within [`Tolerance::for_gemm`], the others still poisoned.
fn check_gemm_q_output<T: Element>(got: &[T], want: &GemmQRef, n: usize) -> Result<()> {
    let tolerance = Tolerance::for_gemm(T::NAME);
    let mut comparison = Comparison::default();
    for (i, &value) in got.iter().enumerate() {
        let (row, col) = (i / n, i % n);
        if want.written[i] {
            comparison.element(f64::from(value.to_f32()), want.out[i], tolerance, || format!("row {row} col {col}"));
        } else if !is_poison(value) {
            comparison.fail(|| format!("row {row} col {col} belongs to a cached pair but was written"));
        }
    }
    Ok(comparison.finish(tolerance)?)
}

/// Checks a GEMM-O output of `n` columns (`what` names it in the report): element `i` against
/// `want(i)` within [`Tolerance::for_gemm`], its absolute part widened by `slack(i)`.
fn check_gemm_o_output<T: Element>(
    what: &str,
    got: &[T],
    n: usize,
    want: &dyn Fn(usize) -> f64,
    slack: &dyn Fn(usize) -> f64,
) -> Result<()> {
    let tolerance = Tolerance::for_gemm(T::NAME);
    let mut comparison = Comparison::default();
    for (i, value) in got.iter().enumerate() {
        let element_tolerance = Tolerance { atol: tolerance.atol + slack(i), ..tolerance };
        comparison.element(f64::from(value.to_f32()), want(i), element_tolerance, || {
            format!("{what} row {} col {}", i / n, i % n)
        });
    }
    Ok(comparison.finish(tolerance)?)
}

/// One GEMM-O problem: its shape, head layout and the seed of its inputs.
#[derive(Debug, Clone)]
struct OCase {
    seed: u64,
    m: u32,
    n: u32,
    layout: HeadLayout,
}

/// How one launch sequence of a GEMM-O problem runs.
#[derive(Debug, Clone, Copy)]
struct OLaunch {
    rows: Option<GemmRows>,
    /// Forces the persistent kernel on the `sm_90a` module (with `rows` = 128); elsewhere, and
    /// when false, the launches get no workspace and run the per-tile kernels.
    persistent: bool,
    /// `true`: cache mode, then active mode on the produced cache. `false`: active mode alone,
    /// with `bias_or_cache: None`.
    cache_first: bool,
}

impl OLaunch {
    /// Cache then active mode with CTAs of `rows`, on the per-tile kernels.
    fn per_tile(rows: Option<GemmRows>) -> OLaunch {
        OLaunch { rows, persistent: false, cache_first: true }
    }
}

impl OCase {
    /// A random problem and launch sequence. Token offsets and query blocks are multiples of
    /// 128 when 128-row CTAs are forced, otherwise of 64 or 128 (the launcher must then pick 64
    /// rows where 128 cannot work); half the cases with forced 128-row CTAs force the persistent
    /// kernel, and one in five runs active mode without a cache.
    fn draw(seed: u64) -> (OCase, OLaunch) {
        let mut rng = seeded_rng(seed);
        let rows = draw_rows(&mut rng);
        let unit = if rows == Some(GemmRows::Rows128) || rng.gen_bool(0.5) { 128 } else { 64 };
        let block_qs: &[u32] = if unit == 128 { &[128, 256] } else { &[64, 128, 192, 256] };
        let case = OCase {
            seed,
            m: rng.gen_range(1..=300),
            n: 8 * rng.gen_range(1..=48),
            layout: HeadLayout::draw(
                &mut rng,
                (6, &[64, 128, 128, 192, 256]),
                |rng| unit * rng.gen_range(0..4),
                block_qs,
            ),
        };
        let persistent = rows == Some(GemmRows::Rows128) && rng.gen_bool(0.5);
        (case, OLaunch { rows, persistent, cache_first: rng.gen_bool(0.8) })
    }

    fn k(&self) -> u32 {
        self.layout.width()
    }
}

impl GemmCase for OCase {
    type Launch = OLaunch;
    type Problem<'c, T: Element> = OProblem<'c, T>;

    /// Draws the inputs and symbols in `T`, uploads them and computes the references.
    /// Half-width inputs (entries in (−0.5, 0.5)) keep |C| small, and with it what rounding C
    /// to 16 bits adds to the error of cache followed by active mode against the dense
    /// projection.
    fn prepare<T: Element>(&self) -> Result<OProblem<'_, T>> {
        let operands = Operands::<T>::draw(&self.layout, self.seed ^ 0x85eb_ca6b, (self.m, self.n, self.k()), 0.5)?;
        let want_cache = operands.reference(&self.layout, gemm_o_cache);
        let active_sum =
            operands.reference(&self.layout, |a, w, _, shape, sparsity| gemm_o_active(a, w, None, shape, sparsity));
        Ok(OProblem { case: self, operands, want_cache, active_sum })
    }
}

/// A GEMM-O problem's inputs on the device and its references, for any number of launches.
struct OProblem<'c, T: Element> {
    case: &'c OCase,
    operands: Operands<T>,
    /// Cache mode: the bias plus the cached heads.
    want_cache: Vec<f64>,
    /// Active mode without `C`: the computed heads. Added to `want_cache` it is the dense
    /// projection (the references split the heads exactly: reference_gemm.rs tests it).
    active_sum: Vec<f64>,
}

impl<T: Element> Launchable<OLaunch> for OProblem<'_, T> {
    fn launch(&self, engine: &Engine, launch: OLaunch, workspace: &mut GemmWorkspace) -> Result<()> {
        self.run(engine, launch, workspace).map(drop)
    }
}

impl<T: Element> OProblem<'_, T> {
    /// The arguments of one launch in `mode`; a workspace forces the persistent kernel.
    fn args<'a>(
        &'a self,
        launch: OLaunch,
        mode: GemmOMode,
        bias_or_cache: Option<DeviceView<'a, T>>,
        out: DeviceViewMut<'a, T>,
        workspace: Option<&'a mut GemmWorkspace>,
    ) -> GemmOArgs<'a, T> {
        GemmOArgs {
            a: self.operands.a.view(),
            w: self.operands.w.view(),
            bias_or_cache,
            out,
            mode,
            token_offset: self.case.layout.token_offset,
            heads: self.case.layout.heads,
            symbols: self.operands.device_symbols.as_ref(),
            request: self.case.layout.request,
            tile_rows: launch.rows,
            persistent: workspace.is_some().then_some(true),
            workspace,
        }
    }

    /// Runs one launch sequence into guarded, poisoned outputs and checks it: cache mode
    /// against its reference, active mode against its reference given the cache the GPU
    /// produced (or none), and cache followed by active mode against the dense projection,
    /// allowing for the rounding of the cache to `T`. Returns the raw active-mode output.
    fn run(&self, engine: &Engine, launch: OLaunch, workspace: &mut GemmWorkspace) -> Result<Vec<T>> {
        let case = self.case;
        let (m, n, k) = (case.m, case.n, case.k());
        let len = m as usize * n as usize;
        let context = |what: &str| format!("GEMM-O {what}, {} {case:?} {launch:?}", T::NAME);
        // Both launches share the workspace: the second finds the tile counters the first used
        // zeroed again, or leaves poisoned tiles.
        let persistent = launch.persistent && engine.arch() == Arch::Sm90a;
        let mut workspace = persistent.then_some(workspace);
        let cache = if launch.cache_first {
            let mut cache = GuardedOutput::<T>::new(len, n as usize)?;
            let bias = self.operands.bias.as_ref().map(DeviceArray::view);
            let args = self.args(launch, GemmOMode::Cache, bias, cache.view_mut(), workspace.as_deref_mut());
            engine.gemm_o(args, m, n, k, engine.stream()).with_context(|| context("cache mode"))?;
            Some(cache)
        } else {
            None
        };
        let mut out = GuardedOutput::<T>::new(len, n as usize)?;
        let c = cache.as_ref().map(GuardedOutput::view);
        let args = self.args(launch, GemmOMode::Active, c, out.view_mut(), workspace);
        engine.gemm_o(args, m, n, k, engine.stream()).with_context(|| context("active mode"))?;
        engine.synchronize()?;
        let got = out.to_host().with_context(|| context("active"))?;

        let compare = |what: &str, got: &[T], want: &dyn Fn(usize) -> f64, slack: &dyn Fn(usize) -> f64| {
            check_gemm_o_output(what, got, n as usize, want, slack).with_context(|| context(what))
        };
        let Some(cache) = cache else {
            compare("active without C", &got, &|i| self.active_sum[i], &|_| 0.0)?;
            return Ok(got);
        };
        let got_cache = cache.to_host().with_context(|| context("cache"))?;
        let c = |i: usize| f64::from(got_cache[i].to_f32());
        let roundoff = unit_roundoff(T::NAME);
        compare("cache", &got_cache, &|i| self.want_cache[i], &|_| 0.0)?;
        compare("active", &got, &|i| c(i) + self.active_sum[i], &|_| 0.0)?;
        let dense = |i: usize| self.want_cache[i] + self.active_sum[i];
        compare("cache+active vs dense", &got, &dense, &|i| roundoff * c(i).abs())?;
        Ok(got)
    }
}

/// A GEMM problem, prepared (inputs drawn, uploaded, references computed) once per element
/// type and then launched any number of ways.
trait GemmCase {
    /// How one launch (or launch sequence) of the problem runs.
    type Launch: Copy;
    /// The prepared problem in `T`.
    type Problem<'c, T: Element>: Launchable<Self::Launch>
    where
        Self: 'c;

    /// Draws the inputs and symbols in `T`, uploads them and computes the references.
    fn prepare<T: Element>(&self) -> Result<Self::Problem<'_, T>>;
}

/// A prepared problem that runs and checks one launch of kind `L`.
trait Launchable<L> {
    /// Runs `launch` into guarded, poisoned outputs and checks the results.
    fn launch(&self, engine: &Engine, launch: L, workspace: &mut GemmWorkspace) -> Result<()>;
}

/// Prepares `case` in `T` and runs each of `launches` (sharing `workspace`).
fn run_launches<T: Element, C: GemmCase>(
    engine: &Engine,
    case: &C,
    launches: &[C::Launch],
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    let problem = case.prepare::<T>()?;
    launches.iter().try_for_each(|&launch| problem.launch(engine, launch, workspace))
}

/// [`run_launches`] in bf16, then in f16.
fn run_both_types<C: GemmCase>(
    engine: &Engine,
    case: &C,
    launches: &[C::Launch],
    workspace: &mut GemmWorkspace,
) -> Result<()> {
    run_launches::<bf16, C>(engine, case, launches, workspace)?;
    run_launches::<f16, C>(engine, case, launches, workspace)
}

/// Runs each case with each of its launches, in both element types, on every engine. The
/// launches on one engine share a workspace: every launch must leave its counters at zero.
fn check_cases<C: GemmCase>(test: &str, runs: &[(C, Vec<C::Launch>)]) -> Result<()> {
    for_each_engine(test, |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
        runs.iter().try_for_each(|(case, launches)| run_both_types(engine, case, launches, &mut workspace))
    })
}

/// Each of `cases` with all of `launches`, for [`check_cases`].
fn with_launches<C: GemmCase>(cases: impl IntoIterator<Item = C>, launches: &[C::Launch]) -> Vec<(C, Vec<C::Launch>)> {
    cases.into_iter().map(|case| (case, launches.to_vec())).collect()
}

/// Runs the cases `draw` makes from seeds 0 to 15, in both element types, on every engine.
fn check_fixed_seeds<C: GemmCase>(test: &str, draw: fn(u64) -> (C, C::Launch)) -> Result<()> {
    let runs: Vec<_> = (0..16).map(draw).map(|(case, launch)| (case, vec![launch])).collect();
    check_cases(test, &runs)
}

/// Runs the cases `draw` makes from 16 fresh seeds (proptest), in both element types, on
/// every engine.
fn check_fresh_seeds<C: GemmCase>(test: &str, draw: fn(u64) -> (C, C::Launch)) {
    for engine in engines_or_skip(test) {
        // proptest's body is a `Fn`: the shared workspace is lent out per case.
        let workspace = RefCell::new(GemmWorkspace::new(&engine).expect("allocating a GEMM workspace"));
        proptest!(ProptestConfig::with_cases(16), |(seed in any::<u64>())| {
            let (case, launch) = draw(seed);
            run_both_types(&engine, &case, &[launch], &mut workspace.borrow_mut())
                .map_err(|err| TestCaseError::fail(format!("{} module: {err:#}", engine.arch().target())))?;
        });
    }
}

#[test]
fn gemm_q_matches_reference_on_fixed_seeds() -> Result<()> {
    check_fixed_seeds("gemm_q_matches_reference_on_fixed_seeds", QCase::draw)
}

#[test]
fn gemm_o_matches_reference_on_fixed_seeds() -> Result<()> {
    check_fixed_seeds("gemm_o_matches_reference_on_fixed_seeds", OCase::draw)
}

#[test]
fn gemm_q_matches_reference_on_fresh_seeds() {
    check_fresh_seeds("gemm_q_matches_reference_on_fresh_seeds", QCase::draw);
}

#[test]
fn gemm_o_matches_reference_on_fresh_seeds() {
    check_fresh_seeds("gemm_o_matches_reference_on_fresh_seeds", OCase::draw);
}

#[test]
fn gemm_q_mixed_tiles_write_only_computed_pairs() -> Result<()> {
    // head_dim 64: every 128-column tile spans two heads; token_offset 64: every 128-row tile
    // spans two query blocks, so many tiles have both computed and cached pairs.
    let split = SplitChoice::Forced(GemmSplit { whole_tiles: 2, parts: 3 });
    let launches = QLaunch::each_rows(&[SplitChoice::Off, split]);
    let cases = [(1, Some(0.5)), (2, Some(0.75)), (3, Some(0.25))].map(|(seed, ratio)| QCase {
        seed,
        m: 333,
        k: 200,
        layout: HeadLayout::with_bias(6, 64, 64, ratio),
    });
    check_cases("gemm_q_mixed_tiles_write_only_computed_pairs", &with_launches(cases, &launches))
}

#[test]
fn gemm_q_split_reductions_match_reference() -> Result<()> {
    // 3 × 3 tiles of 128 rows (5 × 3 of 64); k = 200 is 4 k-tiles, so 5 or more parts leave
    // parts without a k-tile, and k = 1016 ends in a partial k-tile. Every launch on an engine
    // shares one workspace, so each split launch must leave its counters at zero.
    let splits: Vec<SplitChoice> =
        (1..=8).map(|parts| SplitChoice::Forced(GemmSplit { whole_tiles: parts % 3, parts })).collect();
    let launches = QLaunch::each_rows(&splits);
    let cases = [(11, 200, None), (12, 1016, Some(0.5)), (13, 1016, None)].map(|(seed, k, ratio)| QCase {
        seed,
        m: 300,
        k,
        layout: HeadLayout::with_bias(3, 128, 64, ratio),
    });
    check_cases("gemm_q_split_reductions_match_reference", &with_launches(cases, &launches))
}

/// Dense GEMM-Q (no symbols) and reductions shorter than one 64-deep k-tile (K = 8, 24, 56),
/// with and without a split that leaves parts without a k-tile.
#[test]
fn gemm_q_dense_and_short_reductions_match_reference() -> Result<()> {
    let split = SplitChoice::Forced(GemmSplit { whole_tiles: 1, parts: 3 });
    let launches = QLaunch::each_rows(&[SplitChoice::Off, SplitChoice::Auto, split]);
    let cases = [(21, 8, None), (22, 24, Some(0.5)), (23, 56, None), (24, 320, None)].map(|(seed, k, ratio)| QCase {
        seed,
        m: 200,
        k,
        layout: HeadLayout::with_bias(3, 64, 64, ratio),
    });
    check_cases("gemm_q_dense_and_short_reductions_match_reference", &with_launches(cases, &launches))
}

/// The model's reduction length, K = 3072: GEMM-Q over 300 rows (a partial last tile) and two
/// heads of 128; GEMM-O over 24 heads of 128, on every kernel and without a cache.
#[test]
fn gemm_long_reductions_match_reference() -> Result<()> {
    for_each_engine("gemm_long_reductions_match_reference", |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
        let split = SplitChoice::Forced(GemmSplit { whole_tiles: 1, parts: 4 });
        let launches = QLaunch::each_rows(&[SplitChoice::Off, SplitChoice::Auto, split]);
        let q = QCase { seed: 31, m: 300, k: 3072, layout: HeadLayout::with_bias(2, 128, 64, Some(0.5)) };
        run_both_types(engine, &q, &launches, &mut workspace)?;

        let layout = HeadLayout { q_extra: 5, ..HeadLayout::with_bias(24, 128, 128, Some(0.5)) };
        let o = OCase { seed: 32, m: 300, n: 200, layout };
        let launches = [
            OLaunch::per_tile(None),
            OLaunch::per_tile(Some(GemmRows::Rows64)),
            OLaunch::per_tile(Some(GemmRows::Rows128)),
            OLaunch { persistent: true, ..OLaunch::per_tile(Some(GemmRows::Rows128)) },
            OLaunch { cache_first: false, ..OLaunch::per_tile(None) },
        ];
        run_both_types(engine, &o, &launches, &mut workspace)
    })
}

#[test]
fn gemm_larger_shapes() -> Result<()> {
    for_each_engine("gemm_larger_shapes", |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
        let layout = HeadLayout { q_extra: 7, ..HeadLayout::with_bias(2, 128, 512, Some(0.5)) };
        let split = SplitChoice::Forced(GemmSplit { whole_tiles: 3, parts: 2 });
        let launches = QLaunch::each_rows(&[SplitChoice::Off, SplitChoice::Auto, split]);
        let q = QCase { seed: 41, m: 515, k: 1016, layout };
        run_both_types(engine, &q, &launches, &mut workspace)?;

        let layout = HeadLayout::with_bias(4, 128, 512, Some(0.6));
        let o = OCase { seed: 42, m: 520, n: 392, layout };
        let launches = [
            OLaunch::per_tile(Some(GemmRows::Rows64)),
            OLaunch::per_tile(Some(GemmRows::Rows128)),
            OLaunch { cache_first: false, ..OLaunch::per_tile(Some(GemmRows::Rows128)) },
        ];
        run_both_types(engine, &o, &launches, &mut workspace)?;
        // 64-row CTAs also take token offsets and query blocks that are multiples of 64 only.
        let layout = HeadLayout { block_q: 192, q_extra: 5, ..HeadLayout::with_bias(3, 128, 192, Some(0.5)) };
        let o = OCase { seed: 43, m: 450, n: 264, layout };
        let launches = [OLaunch::per_tile(None), OLaunch::per_tile(Some(GemmRows::Rows64))];
        run_both_types(engine, &o, &launches, &mut workspace)
    })
}

/// The persistent GEMM-O (`sm_90a`) runs one CTA per multiprocessor over 128 × 256 tiles:
/// 14 × 11 = 154 tiles make some CTAs claim two, and the last column of tiles has one
/// consumer's columns partly and the other's wholly outside the output (the guards after the
/// output catch a store there).
#[test]
fn gemm_o_ctas_walking_several_tiles() -> Result<()> {
    let layout = HeadLayout { q_extra: 3, ..HeadLayout::with_bias(2, 128, 256, Some(0.5)) };
    let o = OCase { seed: 44, m: 1700, n: 2568, layout };
    let persistent = OLaunch { persistent: true, ..OLaunch::per_tile(Some(GemmRows::Rows128)) };
    let launches = [persistent, OLaunch { cache_first: false, ..persistent }];
    check_cases("gemm_o_ctas_walking_several_tiles", &with_launches([o], &launches))
}

/// Both GEMMs twice on the same inputs in `T`: split GEMM-Q tiles (whose last part to arrive
/// differs from run to run) and the persistent GEMM-O (whose CTAs claim tiles in a different
/// order each run) included.
fn gemm_runs_in_type_are_bitwise_equal<T: Element>(engine: &Engine, workspace: &mut GemmWorkspace) -> Result<()> {
    for seed in [5, 6, 7] {
        let (drawn, launch) = QCase::draw(seed);
        let split = QLaunch { split: SplitChoice::Forced(GemmSplit { whole_tiles: 0, parts: 3 }), ..launch };
        for (case, launch) in [(drawn.clone(), launch), (QCase { k: 8 * 100, ..drawn }, split)] {
            let problem = case.prepare::<T>()?;
            twice_bitwise_equal(&format!("GEMM-Q seed {seed}, {:?}", launch.split), || {
                problem.run(engine, launch, workspace)
            })?;
        }
        let (case, _) = OCase::draw(seed);
        let problem = case.prepare::<T>()?;
        let persistent = OLaunch { persistent: true, ..OLaunch::per_tile(Some(GemmRows::Rows128)) };
        let launches = [OLaunch::per_tile(None), persistent, OLaunch { cache_first: false, ..persistent }];
        for launch in launches {
            let layout = &case.layout;
            let fits = launch.rows.is_none()
                || (layout.token_offset.is_multiple_of(128) && layout.block_q.is_multiple_of(128));
            if fits {
                twice_bitwise_equal(&format!("GEMM-O seed {seed}, {launch:?}"), || {
                    problem.run(engine, launch, workspace)
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn gemm_runs_are_bitwise_equal() -> Result<()> {
    for_each_engine("gemm_runs_are_bitwise_equal", |engine| {
        let mut workspace = GemmWorkspace::new(engine)?;
        gemm_runs_in_type_are_bitwise_equal::<bf16>(engine, &mut workspace)?;
        gemm_runs_in_type_are_bitwise_equal::<f16>(engine, &mut workspace)
    })
}

/// Two threads share one engine and one set of symbols and launch GEMM-Q over 20 row counts
/// each (40 launch shapes, so the symbols' cache of 16 tile lists is emptied again and again
/// while the other thread launches), each on its own stream. Every output must match the
/// reference of its rows: a launch that read a freed tile list would not.
#[test]
fn gemm_q_threads_sharing_symbols_match_reference() -> Result<()> {
    const NAME: &str = "gemm_q_threads_sharing_symbols_match_reference";
    let Some(engine) = engine_or_skip(NAME) else { return Ok(()) };
    let (m_max, k) = (200, 256);
    let layout = HeadLayout::with_bias(2, 128, 64, Some(0.5));
    let n = layout.width() as usize;
    let operands = Operands::<bf16>::draw(&layout, 51, (m_max, layout.width(), k), 1.0)?;
    let want = operands.reference(&layout, gemm_q);
    let run_thread = |first_m: u32| -> Result<()> {
        engine.make_current()?;
        let stream = cust::stream::Stream::new(cust::stream::StreamFlags::NON_BLOCKING, None)?;
        for m in (first_m..m_max).step_by(2).take(20) {
            let mut out = GuardedOutput::<bf16>::new(m as usize * n, n)?;
            let args = GemmQArgs {
                bias: operands.bias.as_ref().map(DeviceArray::view),
                token_offset: layout.token_offset,
                symbols: operands.device_symbols.as_ref(),
                ..GemmQArgs::new(operands.a.view(), operands.w.view(), out.view_mut(), layout.heads)
            };
            engine.gemm_q(args, m, layout.width(), k, &stream)?;
            stream.synchronize()?;
            check_gemm_q_output(&out.to_host()?, &want, n).with_context(|| format!("m = {m}"))?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let threads = [scope.spawn(|| run_thread(120)), scope.spawn(|| run_thread(121))];
        threads.into_iter().try_for_each(|thread| thread.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
    })
}

/// A batch of three requests of one length under one upload of their symbols, with the
/// activations and outputs of all three in one tensor each: a GEMM-Q and a GEMM-O call (active
/// mode, no `C`) per request on its rows (views narrowed by `slice` / `slice_mut`), all of one
/// shape, each checked against the reference of its own request's bits. GEMM-Q's tile lists,
/// cached per symbols, must tell the requests apart, and a call must not write another
/// request's rows (GEMM-Q's cached elements stay poisoned).
#[test]
fn gemm_batch_calls_read_their_own_requests_bits() -> Result<()> {
    const NAME: &str = "gemm_batch_calls_read_their_own_requests_bits";
    let Some(engine) = engine_or_skip(NAME) else { return Ok(()) };
    let stream = engine.stream();
    let (batch, heads, head_dim) = (3, 3, 128);
    let (m, k_q, n_o, width) = (512, 256, 128, heads * head_dim);
    let (rows, mu) = (m as usize, m as usize * batch);
    // Elements of request `request`'s rows in a `[batch · m, columns]` tensor.
    let rows_of =
        |request: usize, columns: u32| request * rows * columns as usize..(request + 1) * rows * columns as usize;
    let mut rng = seeded_rng(61);
    let requests = vec![RequestShape::new(m, 128); batch];
    let geometry = SymbolGeometry::new(heads, 128, 128, &requests)?;
    let symbols = random_symbols(&mut rng, &geometry, 1.0, 0.5);
    let view = symbols.view();
    let segments: Vec<_> = (0..batch).map(|request| view.caching_segment(request)).collect();
    ensure!(
        segments[0] != segments[1] && segments[1] != segments[2] && segments[0] != segments[2],
        "the requests' S_c bits must differ for the test to tell them apart"
    );
    let device_symbols = DeviceSymbols::upload(&view)?;
    let (x, x32) = random_elements::<bf16>(&mut rng, mu * k_q as usize, 1.0);
    let (w_q, w_q32) = random_elements::<bf16>(&mut rng, (width * k_q) as usize, 1.0);
    let (a, a32) = random_elements::<bf16>(&mut rng, mu * width as usize, 0.5);
    let (w_o, w_o32) = random_elements::<bf16>(&mut rng, (n_o * width) as usize, 0.5);
    let [x, w_q, a, w_o] = [x, w_q, a, w_o].map(|values| DeviceArray::from_host(&values));
    let (x, w_q, a, w_o) = (x?, w_q?, a?, w_o?);
    let mut q_out = GuardedOutput::<bf16>::new(mu * width as usize, width as usize)?;
    let mut o_out = GuardedOutput::<bf16>::new(mu * n_o as usize, n_o as usize)?;
    {
        let (mut q_all, mut o_all) = (q_out.view_mut(), o_out.view_mut());
        let symbols = Some(&device_symbols);
        for request in 0..batch {
            let context = || format!("{NAME}: request {request}");
            let (x_rows, out) = (x.view().slice(rows_of(request, k_q)), q_all.slice_mut(rows_of(request, width)));
            let (x_rows, out) = (x_rows.context("x")?, out.context("q")?);
            let args = GemmQArgs { w: w_q.view(), request: request as u32, ..q_args(x_rows, out, heads, 0, symbols) };
            engine.gemm_q(args, m, width, k_q, stream).with_context(context)?;
            let (a_rows, out) = (a.view().slice(rows_of(request, width)), o_all.slice_mut(rows_of(request, n_o)));
            let (a_rows, out) = (a_rows.context("a")?, out.context("o")?);
            let args = GemmOArgs { w: w_o.view(), request: request as u32, ..o_args(a_rows, out, heads, 0, symbols) };
            engine.gemm_o(args, m, n_o, width, stream).with_context(context)?;
        }
    }
    engine.synchronize()?;
    let (q_got, o_got) = (q_out.to_host()?, o_out.to_host()?);
    for request in 0..batch {
        let context = || format!("{NAME}: request {request}");
        let sparsity = HeadSparsity { symbols: &view, request, token_offset: 0 };
        let shape = GemmShape { m: rows, n: width as usize, k: k_q as usize, heads };
        let want = gemm_q(&x32[rows_of(request, k_q)], &w_q32, None, shape, Some(&sparsity));
        check_gemm_q_output(&q_got[rows_of(request, width)], &want, width as usize).with_context(context)?;

        let shape = GemmShape { m: rows, n: n_o as usize, k: width as usize, heads };
        let want = gemm_o_active(&a32[rows_of(request, width)], &w_o32, None, shape, Some(&sparsity));
        check_gemm_o_output("GEMM-O", &o_got[rows_of(request, n_o)], n_o as usize, &|i| want[i], &|_| 0.0)
            .with_context(context)?;
    }
    Ok(())
}

/// GEMM-Q arguments over one scratch input.
fn q_args<'a, T: Element>(
    input: DeviceView<'a, T>,
    out: DeviceViewMut<'a, T>,
    heads: u32,
    token_offset: u32,
    symbols: Option<&'a DeviceSymbols>,
) -> GemmQArgs<'a, T> {
    GemmQArgs { token_offset, symbols, ..GemmQArgs::new(input, input, out, heads) }
}

/// Active-mode GEMM-O arguments over one scratch input.
fn o_args<'a, T: Element>(
    input: DeviceView<'a, T>,
    out: DeviceViewMut<'a, T>,
    heads: u32,
    token_offset: u32,
    symbols: Option<&'a DeviceSymbols>,
) -> GemmOArgs<'a, T> {
    GemmOArgs { token_offset, symbols, ..GemmOArgs::new(input, input, out, GemmOMode::Active, heads) }
}

/// Fails unless `result` is an error that `expected` accepts; `what` names the case.
fn expect_error<T>(result: flashomni::Result<T>, what: &str, expected: impl FnOnce(&Error) -> bool) -> Result<()> {
    match result {
        Err(err) if expected(&err) => Ok(()),
        Err(err) => bail!("{what} must be rejected otherwise, got {err:?}"),
        Ok(_) => bail!("{what} must be rejected, got Ok"),
    }
}

/// Dense symbols for one request of 200 query tokens over two heads, in 128-token blocks.
fn two_head_symbols() -> Result<DeviceSymbols> {
    let requests = [RequestShape::new(200, 128)];
    let geometry = SymbolGeometry::new(2, 128, 128, &requests)?;
    Ok(DeviceSymbols::upload(&PackedSymbols::dense(&geometry).view())?)
}

#[test]
fn gemm_bad_inputs_are_rejected_with_clear_errors() -> Result<()> {
    let Some(engine) = engine_or_skip("gemm_bad_inputs_are_rejected_with_clear_errors") else { return Ok(()) };
    let stream = engine.stream();
    let big = DeviceArray::<bf16>::uninitialized(1 << 16)?;
    let mut out = DeviceArray::<bf16>::uninitialized(1 << 16)?;

    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 2, 0, None), 16, 128, 12, stream);
    expect_error(result, "GEMM-Q with k = 12", |err| matches!(err, Error::Misaligned { .. }))?;
    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 3, 0, None), 16, 128, 64, stream);
    expect_error(result, "GEMM-Q with n = 128 over 3 heads", |err| matches!(err, Error::InvalidShape(_)))?;
    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 1, 0, None), 600, 128, 128, stream);
    expect_error(result, "GEMM-Q with a short x", |err| matches!(err, Error::BufferTooSmall { buffer: "x", .. }))?;

    let symbols = two_head_symbols()?;
    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 2, 100, Some(&symbols)), 101, 128, 64, stream);
    expect_error(
        result,
        "GEMM-Q rows past the symbols' request",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("q_len")),
    )?;
    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 4, 0, Some(&symbols)), 16, 256, 64, stream);
    expect_error(
        result,
        "GEMM-Q with symbols for another head count",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("heads")),
    )?;
    // The symbols describe one request: request 1 does not exist.
    let past_the_requests = |err: &Error| matches!(err, Error::InvalidShape(message) if message.contains("request 1"));
    let args = GemmQArgs { request: 1, ..q_args(big.view(), out.view_mut(), 2, 0, Some(&symbols)) };
    expect_error(engine.gemm_q(args, 16, 256, 64, stream), "GEMM-Q reading request 1 of 1", past_the_requests)?;
    let args = GemmOArgs { request: 1, ..o_args(big.view(), out.view_mut(), 2, 0, Some(&symbols)) };
    expect_error(engine.gemm_o(args, 16, 64, 256, stream), "GEMM-O reading request 1 of 1", past_the_requests)?;
    with_object_of_other_context(&engine, two_head_symbols, |foreign| {
        let wrong_context = |err: &Error| matches!(err, Error::WrongContext { object: "symbols" });
        let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 2, 0, Some(foreign)), 16, 256, 64, stream);
        expect_error(result, "GEMM-Q with symbols of another context", wrong_context)?;
        let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 2, 0, Some(foreign)), 16, 64, 256, stream);
        expect_error(result, "GEMM-O with symbols of another context", wrong_context)
    })?;

    let split = Some(GemmSplit { whole_tiles: 0, parts: 2 });
    let args = GemmQArgs { split, ..q_args(big.view(), out.view_mut(), 1, 0, None) };
    expect_error(
        engine.gemm_q(args, 16, 128, 128, stream),
        "a forced split without a workspace",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("workspace")),
    )?;
    let mut workspace = GemmWorkspace::new(&engine)?;
    for parts in [0, 9] {
        let split = Some(GemmSplit { whole_tiles: 0, parts });
        let args =
            GemmQArgs { split, workspace: Some(&mut workspace), ..q_args(big.view(), out.view_mut(), 1, 0, None) };
        expect_error(
            engine.gemm_q(args, 16, 128, 128, stream),
            &format!("a split into {parts} parts"),
            |err| matches!(err, Error::Unsupported(message) if message.contains("parts")),
        )?;
    }
    // 512 × 8192 output: 256 tiles of 128 rows, cut in 8: more parts than the workspace holds.
    let wide = DeviceArray::<bf16>::uninitialized(8192 * 64)?;
    let mut wide_out = DeviceArray::<bf16>::uninitialized(512 * 8192)?;
    let args = GemmQArgs {
        w: wide.view(),
        tile_rows: Some(GemmRows::Rows128),
        split: Some(GemmSplit { whole_tiles: 0, parts: 8 }),
        workspace: Some(&mut workspace),
        ..q_args(big.view(), wide_out.view_mut(), 1, 0, None)
    };
    expect_error(
        engine.gemm_q(args, 512, 8192, 64, stream),
        "a split larger than the workspace",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("workspace holds")),
    )?;
    let portable = Engine::with_arch(0, Arch::Sm80)?;
    let args = GemmQArgs { clustered: Some(true), ..q_args(big.view(), out.view_mut(), 1, 0, None) };
    expect_error(
        portable.gemm_q(args, 16, 128, 128, portable.stream()),
        "thread-block clusters with the portable module",
        |err| matches!(err, Error::Unsupported(message) if message.contains("clusters")),
    )?;

    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 2, 0, None), 16, 64, 192, stream);
    expect_error(result, "GEMM-O with head_dim 96", |err| matches!(err, Error::Unsupported(_)))?;
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 257, 0, None), 16, 64, 257 * 64, stream);
    expect_error(
        result,
        "GEMM-O with 257 heads",
        |err| matches!(err, Error::Unsupported(message) if message.contains("257 heads")),
    )?;
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 2, 32, Some(&symbols)), 16, 64, 256, stream);
    expect_error(
        result,
        "GEMM-O with a token_offset that no CTA size divides",
        |err| matches!(err, Error::Unsupported(message) if message.contains("token_offset")),
    )?;
    let args =
        GemmOArgs { tile_rows: Some(GemmRows::Rows128), ..o_args(big.view(), out.view_mut(), 2, 64, Some(&symbols)) };
    expect_error(
        engine.gemm_o(args, 16, 64, 256, stream),
        "forced 128-row CTAs at token_offset 64",
        |err| matches!(err, Error::Unsupported(message) if message.contains("128-row")),
    )?;
    let args = GemmOArgs { persistent: Some(true), ..o_args(big.view(), out.view_mut(), 2, 0, None) };
    expect_error(
        engine.gemm_o(args, 16, 64, 256, stream),
        "a forced persistent GEMM-O without a workspace",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("workspace")),
    )?;
    let args = GemmOArgs {
        persistent: Some(true),
        workspace: Some(&mut workspace),
        tile_rows: Some(GemmRows::Rows64),
        ..o_args(big.view(), out.view_mut(), 2, 0, None)
    };
    expect_error(
        engine.gemm_o(args, 16, 64, 256, stream),
        "a forced persistent GEMM-O with 64-row CTAs",
        |err| matches!(err, Error::Unsupported(message) if message.contains("persistent")),
    )?;
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 2, 0, None), 16, 60, 256, stream);
    expect_error(result, "GEMM-O with n = 60", |err| matches!(err, Error::Misaligned { .. }))?;

    // Symbols for 2 heads, request 0 of 200 query tokens.
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 4, 0, Some(&symbols)), 16, 64, 256, stream);
    expect_error(
        result,
        "GEMM-O with symbols for another head count",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("heads")),
    )?;
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 2, 128, Some(&symbols)), 100, 64, 256, stream);
    expect_error(
        result,
        "GEMM-O rows past the symbols' request (tokens 128..228 of 200)",
        |err| matches!(err, Error::InvalidShape(message) if message.contains("q_len")),
    )?;
    Ok(())
}

/// What is wrong with one buffer argument.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The view starts one element (2 bytes) into its array: off the 16-byte (4-byte for a
    /// bias) alignment the launcher requires.
    Misaligned,
    /// The view is one element shorter than the shape needs.
    Short,
}

impl Fault {
    /// Whether `err` reports this fault for `buffer`.
    fn reported_by(self, err: &Error, buffer: &str) -> bool {
        match (self, err) {
            (Fault::Misaligned, Error::Misaligned { buffer: named, .. })
            | (Fault::Short, Error::BufferTooSmall { buffer: named, .. }) => *named == buffer,
            _ => false,
        }
    }
}

/// Misaligned and short buffers for both GEMMs in `T`, each of which must be rejected with
/// the error naming it: GEMM-Q 16 × 128 × 64 over one head, GEMM-O 16 × 64 × 256 over two
/// heads of 128 (both modes).
fn check_buffer_errors<T: Element>(engine: &Engine) -> Result<()> {
    const LEN: usize = 1 << 16;
    let stream = engine.stream();
    let big = DeviceArray::<T>::uninitialized(LEN)?;
    let mut out = DeviceArray::<T>::uninitialized(LEN)?;
    let (good, shifted) = (big.view(), subview(&big, 1, LEN - 1));
    let short = |len: usize| subview(&big, 0, len - 1);
    let whole = (0, LEN);

    let (m, n, k) = (16, 128, 64);
    // (buffer, fault, x, w, bias, output elements (start, len))
    let q_cases = [
        ("x", Fault::Misaligned, shifted, good, None, whole),
        ("w", Fault::Misaligned, good, shifted, None, whole),
        ("out", Fault::Misaligned, good, good, None, (1, LEN - 1)),
        ("bias", Fault::Misaligned, good, good, Some(shifted), whole),
        ("w", Fault::Short, good, short(128 * 64), None, whole),
        ("out", Fault::Short, good, good, None, (0, 16 * 128 - 1)),
        ("bias", Fault::Short, good, good, Some(short(128)), whole),
    ];
    for (buffer, fault, x, w, bias, (start, len)) in q_cases {
        let args = GemmQArgs { x, w, bias, ..q_args(good, subview_mut(&mut out, start, len), 1, 0, None) };
        let what = format!("{} GEMM-Q with a {fault:?} {buffer}", T::NAME);
        expect_error(engine.gemm_q(args, m, n, k, stream), &what, |err| fault.reported_by(err, buffer))?;
    }

    let (m, n, k) = (16, 64, 256);
    // (buffer, fault, mode, a, w, bias_or_cache, output elements (start, len))
    let o_cases = [
        ("a", Fault::Misaligned, GemmOMode::Active, shifted, good, None, whole),
        ("w", Fault::Misaligned, GemmOMode::Active, good, shifted, None, whole),
        ("out", Fault::Misaligned, GemmOMode::Active, good, good, None, (1, LEN - 1)),
        ("bias_or_cache", Fault::Misaligned, GemmOMode::Active, good, good, Some(shifted), whole),
        ("bias_or_cache", Fault::Misaligned, GemmOMode::Cache, good, good, Some(shifted), whole),
        ("a", Fault::Short, GemmOMode::Active, short(16 * 256), good, None, whole),
        ("w", Fault::Short, GemmOMode::Cache, good, short(64 * 256), None, whole),
        ("out", Fault::Short, GemmOMode::Cache, good, good, None, (0, 16 * 64 - 1)),
        ("bias_or_cache", Fault::Short, GemmOMode::Active, good, good, Some(short(16 * 64)), whole),
        ("bias_or_cache", Fault::Short, GemmOMode::Cache, good, good, Some(short(64)), whole),
    ];
    for (buffer, fault, mode, a, w, bias_or_cache, (start, len)) in o_cases {
        let out = subview_mut(&mut out, start, len);
        let args = GemmOArgs { a, w, bias_or_cache, mode, ..o_args(good, out, 2, 0, None) };
        let what = format!("{} GEMM-O in {mode:?} mode with a {fault:?} {buffer}", T::NAME);
        expect_error(engine.gemm_o(args, m, n, k, stream), &what, |err| fault.reported_by(err, buffer))?;
    }
    Ok(())
}

#[test]
fn gemm_misaligned_and_short_buffers_are_rejected() -> Result<()> {
    let Some(engine) = engine_or_skip("gemm_misaligned_and_short_buffers_are_rejected") else { return Ok(()) };
    check_buffer_errors::<bf16>(&engine)?;
    check_buffer_errors::<f16>(&engine)
}

/// An empty reduction (k = 0) is an invalid shape for both GEMMs, not a launch that writes the
/// bias alone.
#[test]
fn gemm_empty_reductions_are_rejected() -> Result<()> {
    let Some(engine) = engine_or_skip("gemm_empty_reductions_are_rejected") else { return Ok(()) };
    let stream = engine.stream();
    let big = DeviceArray::<bf16>::uninitialized(1 << 16)?;
    let mut out = DeviceArray::<bf16>::uninitialized(1 << 16)?;
    let result = engine.gemm_q(q_args(big.view(), out.view_mut(), 1, 0, None), 16, 128, 0, stream);
    expect_error(result, "GEMM-Q with k = 0", |err| matches!(err, Error::InvalidShape(_)))?;
    let result = engine.gemm_o(o_args(big.view(), out.view_mut(), 1, 0, None), 16, 64, 0, stream);
    expect_error(result, "GEMM-O with k = 0", |err| matches!(err, Error::InvalidShape(_)))
}

/// GEMM-Q and GEMM-O over m = 0 rows in `T` (empty `x`/`a`, `C` and output), dense and with
/// symbols; GEMM-Q with a split-K workspace, GEMM-O in both modes on the per-tile kernels and,
/// on `sm_90a`, the persistent one: each call returns `Ok` and writes nothing (the guards
/// around the empty output stay poisoned).
fn check_zero_rows<T: Element>(engine: &Engine) -> Result<()> {
    let stream = engine.stream();
    let (n, k) = (128, 256);
    let empty = DeviceArray::<T>::uninitialized(0)?;
    let weight = DeviceArray::<T>::uninitialized(n * k)?;
    let bias = DeviceArray::<T>::uninitialized(n)?;
    let symbols = two_head_symbols()?;
    let mut workspace = GemmWorkspace::new(engine)?;
    let context = |what: &str| format!("{} {what} with m = 0", T::NAME);
    for symbols in [None, Some(&symbols)] {
        let mut out = GuardedOutput::<T>::new(0, n)?;
        let args = GemmQArgs {
            w: weight.view(),
            bias: Some(bias.view()),
            workspace: Some(&mut workspace),
            clustered: Some(engine.arch() == Arch::Sm90a),
            ..q_args(empty.view(), out.view_mut(), 2, 0, symbols)
        };
        engine.gemm_q(args, 0, n as u32, k as u32, stream).with_context(|| context("GEMM-Q"))?;
        let kernels: &[bool] = if engine.arch() == Arch::Sm90a { &[false, true] } else { &[false] };
        let modes = [(GemmOMode::Cache, bias.view()), (GemmOMode::Active, empty.view())];
        for &persistent in kernels {
            for (mode, addend) in modes {
                let args = GemmOArgs {
                    w: weight.view(),
                    bias_or_cache: Some(addend),
                    mode,
                    workspace: persistent.then_some(&mut workspace),
                    persistent: Some(persistent),
                    ..o_args(empty.view(), out.view_mut(), 2, 0, symbols)
                };
                let what = format!("GEMM-O in {mode:?} mode (persistent: {persistent})");
                engine.gemm_o(args, 0, n as u32, k as u32, stream).with_context(|| context(&what))?;
            }
        }
        engine.synchronize()?;
        let got = out.to_host().with_context(|| context("the GEMMs"))?;
        ensure!(got.is_empty(), "an output of m = 0 rows has no elements");
    }
    Ok(())
}

/// m = 0 is a successful no-op for both GEMMs on every kernel module (no empty grid reaches the
/// driver).
#[test]
fn gemm_with_zero_rows_writes_nothing() -> Result<()> {
    for_each_engine("gemm_with_zero_rows_writes_nothing", |engine| {
        check_zero_rows::<bf16>(engine)?;
        check_zero_rows::<f16>(engine)
    })
}

/// An array whose byte count overflows `usize` is an invalid shape, not an arithmetic panic.
#[test]
fn oversized_device_arrays_are_rejected() -> Result<()> {
    // The allocation fails before reaching the driver; an engine makes a context current anyway.
    let Some(_engine) = engine_or_skip("oversized_device_arrays_are_rejected") else { return Ok(()) };
    let result = DeviceArray::<bf16>::uninitialized(usize::MAX / 2 + 1);
    expect_error(result, "an array of 2^63 bf16 elements", |err| matches!(err, Error::InvalidShape(_)))
}
