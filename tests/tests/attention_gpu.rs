//! GPU tests of the block-sparse attention kernel against the float64 CPU reference.
//!
//! Every case draws fresh random inputs and symbols from a seed, poisons the outputs (the
//! attention output between poisoned guard regions), runs the kernel, and checks that computed
//! rows match the reference, that rows of cached blocks still hold the poison, that rows with
//! every KV block dropped are exactly zero, and that nothing was written outside the output.
//! Random cases draw symbol blocks of 128 or 256 query tokens and 64 to 256 key tokens. The
//! reference's softmax scale is the test's own (`1/sqrt(head_dim)`, or a drawn explicit
//! scale), not the configuration's. Seeds come from a fixed list (regressions) and from
//! proptest (fresh each run). The kernel tests run once per kernel module the GPU runs: on
//! Hopper both the portable `sm_80` module (the one Ampere GPUs load) and the `sm_90a` one.

use anyhow::{Context, Result, bail, ensure};
use flashomni::{
    AttentionArgs, AttentionConfig, AttentionPlan, AttentionRows, DeviceArray, DeviceSymbols, Element, Engine, Error,
    KvLayout,
};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::compare::{Comparison, Tolerance};
use flashomni_tests::gpu::{
    GuardedOutput, attention_args, engine_or_skip, engines_or_skip, for_each_engine, is_poison, twice_bitwise_equal,
    with_object_of_other_context,
};
use flashomni_tests::random::seeded_rng;
use flashomni_tests::random::{random_elements, random_symbols};
use flashomni_tests::reference::attention::{AttentionShape, attention};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::Rng;

/// One randomly drawn attention problem.
#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    requests: Vec<RequestShape>,
    heads: u32,
    head_dim: u32,
    kv_layout: KvLayout,
    /// `None`: dense; `Some((kv_density, cache_ratio))`: random symbols.
    sparsity: Option<(f64, f64)>,
    with_lse: bool,
    /// CTA size (both kernel variants must agree with the reference); `None`: chosen per launch.
    rows: Option<AttentionRows>,
    /// An explicit softmax scale; `None`: the default, `1/sqrt(head_dim)`.
    sm_scale: Option<f32>,
    /// Symbol block sizes in tokens: (query, key/value).
    blocks: (u32, u32),
}

impl Case {
    fn draw(seed: u64) -> Case {
        let mut rng = seeded_rng(seed);
        let batch = rng.gen_range(1..=3);
        let requests = (0..batch).map(|_| RequestShape::new(rng.gen_range(0..=520), rng.gen_range(0..=520))).collect();
        let sparsity = match rng.gen_range(0..4) {
            0 => None,
            1 => Some((1.0, rng.gen_range(0.0..0.9))),
            _ => Some((rng.gen_range(0.0..1.0), rng.gen_range(0.0..0.6))),
        };
        Case {
            seed,
            requests,
            heads: rng.gen_range(1..=3),
            head_dim: if rng.gen_bool(0.5) { 64 } else { 128 },
            kv_layout: if rng.gen_bool(0.5) { KvLayout::TokenMajor } else { KvLayout::HeadMajor },
            sparsity,
            with_lse: rng.gen_bool(0.5),
            rows: [None, Some(AttentionRows::Rows64), Some(AttentionRows::Rows128)][rng.gen_range(0..3)],
            sm_scale: rng.gen_bool(0.25).then(|| rng.gen_range(0.03..0.2)),
            blocks: if rng.gen_bool(0.5) {
                (128, 128)
            } else {
                ([128, 256][rng.gen_range(0..2)], [64, 128, 192, 256][rng.gen_range(0..4)])
            },
        }
    }

    /// The softmax scale the reference uses, computed here rather than taken from the
    /// configuration under test.
    fn scale(&self) -> f64 {
        self.sm_scale.map_or(1.0 / f64::from(self.head_dim).sqrt(), f64::from)
    }
}

/// `[tokens, heads, dim]` → `[heads, tokens, dim]`.
fn to_head_major<T: Copy>(values: &[T], tokens: usize, heads: usize, dim: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for h in 0..heads {
        for t in 0..tokens {
            out.extend_from_slice(&values[(t * heads + h) * dim..][..dim]);
        }
    }
    out
}

/// Runs `case` on the GPU and checks it; returns the raw output for determinism checks.
fn run_case<T: Element>(engine: &Engine, case: &Case) -> Result<Vec<T>> {
    let mut rng = seeded_rng(case.seed ^ 0x5eed);
    let (block_q, block_kv) = case.blocks;
    let shape = AttentionShape::from_requests(case.heads, case.head_dim, block_q, block_kv, &case.requests);
    let mut config =
        AttentionConfig::new(case.heads, case.head_dim).with_kv_layout(case.kv_layout).with_blocks(block_q, block_kv);
    config.cta_rows = case.rows;
    config.sm_scale = case.sm_scale;
    let plan = AttentionPlan::new(engine, config, &shape.qo_indptr, &shape.kv_indptr)?;
    let (hd, heads) = (case.head_dim as usize, case.heads as usize);
    let (total_q, total_kv) = (shape.total_q(), shape.total_kv());

    let (q, q32) = random_elements::<T>(&mut rng, total_q * heads * hd, 2.0);
    let (k, k32) = random_elements::<T>(&mut rng, total_kv * heads * hd, 2.0);
    let (v, v32) = random_elements::<T>(&mut rng, total_kv * heads * hd, 2.0);
    let (k_dev, v_dev) = match case.kv_layout {
        KvLayout::TokenMajor => (k, v),
        KvLayout::HeadMajor => (to_head_major(&k, total_kv, heads, hd), to_head_major(&v, total_kv, heads, hd)),
    };
    let geometry = SymbolGeometry::new(case.heads, block_q, block_kv, &case.requests)?;
    let symbols: Option<PackedSymbols> =
        case.sparsity.map(|(density, cache_ratio)| random_symbols(&mut rng, &geometry, density, cache_ratio));
    let device_symbols = symbols.as_ref().map(|s| DeviceSymbols::upload(&s.view())).transpose()?;

    let q_dev = DeviceArray::from_host(&q)?;
    let k_dev = DeviceArray::from_host(&k_dev)?;
    let v_dev = DeviceArray::from_host(&v_dev)?;
    let mut out = GuardedOutput::<T>::new(total_q * heads * hd, heads * hd)?;
    let mut lse = DeviceArray::<f32>::uninitialized(total_q * heads)?;
    lse.fill_bytes(0xFF)?;
    let args = AttentionArgs {
        q: q_dev.view(),
        k: k_dev.view(),
        v: v_dev.view(),
        out: out.view_mut(),
        lse: case.with_lse.then(|| lse.view_mut()),
        symbols: device_symbols.as_ref(),
    };
    engine.attention(&plan, args, engine.stream())?;
    engine.synchronize()?;
    let got = out.to_host().with_context(|| format!("output of {case:?}"))?;
    let got_lse = lse.to_host()?;

    let view = symbols.as_ref().map(|s| s.view());
    let want = attention(&q32, &k32, &v32, &shape, view.as_ref(), case.scale());
    let tolerance = Tolerance::for_element(T::NAME);
    let mut comparison = Comparison::default();
    let mut lse_comparison = Comparison::default();
    let lse_tolerance = Tolerance { atol: 2e-3, rtol: 1e-3, max_relative_l2: 1e-3 };
    for row in 0..total_q * heads {
        let (token, head) = (row / heads, row % heads);
        let values = &got[row * hd..][..hd];
        if !want.computed[row] {
            if !values.iter().all(|&x| is_poison(x)) {
                comparison.fail(|| format!("cached row token {token} head {head} was written"));
            }
            if case.with_lse && got_lse[row].to_bits() != u32::MAX {
                comparison.fail(|| format!("cached row token {token} head {head}: lse written"));
            }
            continue;
        }
        if want.lse[row] == f64::NEG_INFINITY && !values.iter().all(|&x| x.to_f32() == 0.0) {
            comparison.fail(|| format!("token {token} head {head} keeps no key but is not exactly zero"));
        }
        for (d, &x) in values.iter().enumerate() {
            comparison.element(f64::from(x.to_f32()), want.out[row * hd + d], tolerance, || {
                format!("token {token} head {head} dim {d}")
            });
        }
        if case.with_lse {
            let (got, want) = (f64::from(got_lse[row]), want.lse[row]);
            if want == f64::NEG_INFINITY {
                if got != f64::NEG_INFINITY {
                    lse_comparison.fail(|| format!("lse token {token} head {head}: got {got}, want -inf"));
                }
            } else {
                lse_comparison.element(got, want, lse_tolerance, || format!("lse token {token} head {head}"));
            }
        }
    }
    comparison.finish(tolerance).with_context(|| format!("output of {case:?}"))?;
    lse_comparison.finish(lse_tolerance).with_context(|| format!("lse of {case:?}"))?;
    Ok(got)
}

fn run_both_types(engine: &Engine, case: &Case) -> Result<()> {
    run_case::<bf16>(engine, case)?;
    run_case::<f16>(engine, case)?;
    Ok(())
}

#[test]
fn matches_reference_on_fixed_seeds() -> Result<()> {
    for_each_engine("matches_reference_on_fixed_seeds", |engine| {
        for seed in 0..24 {
            run_both_types(engine, &Case::draw(seed))?;
        }
        Ok(())
    })
}

#[test]
fn matches_reference_on_fresh_seeds() {
    for engine in engines_or_skip("matches_reference_on_fresh_seeds") {
        let module = engine.arch().target();
        proptest!(ProptestConfig::with_cases(24), |(seed in any::<u64>())| {
            let case = Case::draw(seed);
            run_both_types(&engine, &case)
                .map_err(|err| TestCaseError::fail(format!("with the {module} kernel module: {err:#}")))?;
        });
    }
}

#[test]
fn full_sizes_with_masked_tails() -> Result<()> {
    for_each_engine("full_sizes_with_masked_tails", |engine| {
        for (seed, q_len, kv_len) in [(101, 1000, 1000), (102, 1537, 700), (103, 129, 2049)] {
            let case = Case {
                seed,
                requests: vec![RequestShape::new(q_len, kv_len)],
                heads: 2,
                head_dim: 128,
                kv_layout: KvLayout::TokenMajor,
                sparsity: Some((0.5, 0.3)),
                with_lse: true,
                rows: Some(if seed % 2 == 0 { AttentionRows::Rows64 } else { AttentionRows::Rows128 }),
                sm_scale: (seed == 102).then_some(0.1),
                blocks: (128, 128),
            };
            run_case::<bf16>(engine, &case)?;
        }
        Ok(())
    })
}

#[test]
fn rows_with_every_kv_block_dropped_are_zero() -> Result<()> {
    for_each_engine("rows_with_every_kv_block_dropped_are_zero", |engine| {
        let case = Case {
            seed: 7,
            requests: vec![RequestShape::new(300, 400), RequestShape::new(64, 0)],
            heads: 2,
            head_dim: 64,
            kv_layout: KvLayout::TokenMajor,
            sparsity: Some((0.0, 0.0)),
            with_lse: true,
            rows: Some(AttentionRows::Rows128),
            sm_scale: None,
            blocks: (128, 128),
        };
        let out = run_case::<bf16>(engine, &case)?;
        ensure!(out.iter().all(|x| x.to_f32() == 0.0), "every row must be exactly zero");
        Ok(())
    })
}

#[test]
fn two_runs_are_bitwise_equal() -> Result<()> {
    for_each_engine("two_runs_are_bitwise_equal", |engine| {
        for seed in [11, 12, 13] {
            let case = Case::draw(seed);
            twice_bitwise_equal(&format!("seed {seed}"), || run_case::<bf16>(engine, &case))?;
            twice_bitwise_equal(&format!("seed {seed}"), || run_case::<f16>(engine, &case))?;
        }
        Ok(())
    })
}

#[test]
fn bad_inputs_are_rejected_with_clear_errors() -> Result<()> {
    let Some(engine) = engine_or_skip("bad_inputs_are_rejected_with_clear_errors") else { return Ok(()) };
    let unsupported = AttentionPlan::new(&engine, AttentionConfig::new(2, 96), &[0, 10], &[0, 10]);
    ensure!(matches!(unsupported, Err(Error::Unsupported(_))), "head_dim 96 must be unsupported");
    let decreasing = AttentionPlan::new(&engine, AttentionConfig::new(2, 64), &[0, 10, 5], &[0, 10, 20]);
    ensure!(matches!(decreasing, Err(Error::InvalidShape(_))), "decreasing indptr must be rejected");
    let odd_block = AttentionPlan::new(&engine, AttentionConfig::new(2, 64).with_blocks(100, 128), &[0, 10], &[0, 10]);
    ensure!(matches!(odd_block, Err(Error::Unsupported(_))), "block_q 100 must be unsupported");

    let plan = AttentionPlan::new(&engine, AttentionConfig::new(2, 64), &[0, 200], &[0, 300])?;
    let small = DeviceArray::<bf16>::uninitialized(plan.q_elements() - 1)?;
    let big = DeviceArray::<bf16>::uninitialized(plan.kv_elements())?;
    let mut out = DeviceArray::<bf16>::uninitialized(plan.q_elements())?;
    let args =
        AttentionArgs { q: small.view(), k: big.view(), v: big.view(), out: out.view_mut(), lse: None, symbols: None };
    match engine.attention(&plan, args, engine.stream()) {
        Err(Error::BufferTooSmall { buffer: "q", .. }) => {}
        other => bail!("a short q must be rejected, got {other:?}"),
    }
    let requests = [RequestShape::new(200, 299)];
    let geometry = SymbolGeometry::new(2, 128, 128, &requests)?;
    let wrong = DeviceSymbols::upload(&PackedSymbols::dense(&geometry).view())?;
    let q = DeviceArray::<bf16>::uninitialized(plan.q_elements())?;
    let args = attention_args(&q, &big, &big, &mut out, Some(&wrong));
    match engine.attention(&plan, args, engine.stream()) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("sequence lengths"), "{message}"),
        other => bail!("symbols of another shape must be rejected, got {other:?}"),
    }
    let plan_requests = [RequestShape::new(200, 300)];
    let fitting = SymbolGeometry::new(2, 128, 128, &plan_requests)?;
    let upload = || Ok(DeviceSymbols::upload(&PackedSymbols::dense(&fitting).view())?);
    with_object_of_other_context(&engine, upload, |foreign| {
        let args = attention_args(&q, &big, &big, &mut out, Some(foreign));
        match engine.attention(&plan, args, engine.stream()) {
            Err(Error::WrongContext { object: "symbols" }) => Ok(()),
            other => bail!("symbols of another context must be rejected, got {other:?}"),
        }
    })
}
