//! GPU tests of sequence-parallel (Ulysses) attention through NCCL, plus CPU tests of the
//! NCCL loader's error paths.
//!
//! Skip rules:
//! * No GPU: skipped (a failure under `FLASHOMNI_REQUIRE_GPU=1`), as every GPU test.
//! * NCCL is looked for in `FLASHOMNI_NCCL_LIB` (a file or a folder) when set, else as
//!   `libnccl.so.2` on the loader path, else in the `nvidia-nccl-cu*` wheel of `python3`
//!   (`site-packages/nvidia/nccl/lib`). If none loads the test is skipped with a message (a
//!   failure under `FLASHOMNI_REQUIRE_GPU=1`: a GPU run must exercise NCCL too).
//! * Every test that loads NCCL (the loader tests too) needs `NCCL_NVLS_ENABLE` set
//!   beforehand (`cargo xtask test` and `run-tests.sh` set it to 0): loading sets it
//!   otherwise, and changing the environment would race with the other test threads. Skipped
//!   with a message without it (a failure under `FLASHOMNI_REQUIRE_GPU=1`).
//! * The multi-rank test needs at least 2 GPUs (one thread and one engine per rank) and is
//!   skipped with a message on fewer; `FLASHOMNI_REQUIRE_GPUS=2` (or more) makes that a
//!   failure, for runs on multi-GPU machines.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use cust::device::Device;
use flashomni::parallel::nccl::{LIBRARY_ENV, NVLS_ENV};
use flashomni::parallel::{Communicator, Nccl, UlyssesArgs, UlyssesAttention, UniqueId};
use flashomni::{AttentionConfig, AttentionPlan, DeviceArray, Element, Engine, Error, KvLayout};
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use flashomni_tests::compare::{Comparison, Tolerance};
use flashomni_tests::gpu::{
    attention_args, bit_pattern, engine_or_skip, is_poison, join_ranks, poisoned, report_skip, skip_unless_required,
};
use flashomni_tests::random::{random_elements, random_symbols, seeded_rng};
use flashomni_tests::reference::attention::{AttentionShape, computed_rows};
use flashomni_tests::reference::ulysses::split_tokens;
use half::{bf16, f16};

/// The `lib` folder of the `nvidia.nccl` Python package, if `python3` has one.
fn python_nccl_dir() -> Option<PathBuf> {
    let script = "import os, nvidia.nccl as m; print(os.path.join(list(m.__path__)[0], 'lib'))";
    let output = Command::new("python3").args(["-c", script]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// Whether `NCCL_NVLS_ENABLE` is set, so that loading NCCL writes no environment (which would
/// race with the other test threads); otherwise `false` after printing why `test` is skipped
/// (a failure under `FLASHOMNI_REQUIRE_GPU=1`). `cargo xtask test` and the bundle's
/// `run-tests.sh` set it.
fn nvls_preset_or_skip(test: &str) -> bool {
    if std::env::var_os(NVLS_ENV).is_some() {
        return true;
    }
    skip_unless_required(test, &format!("{NVLS_ENV} is not set; set it (to 0) before running the tests"));
    false
}

/// Opens NCCL at `path` (see [`Nccl::load_from`]) once [`nvls_preset_or_skip`] passed.
fn load_from(path: impl AsRef<std::ffi::OsStr>) -> flashomni::Result<Arc<Nccl>> {
    // SAFETY: NCCL_NVLS_ENABLE is set (the callers checked), so loading changes no environment;
    // the tests pass NCCL's paths or libraries that are harmless to load (libc, a missing file).
    unsafe { Nccl::load_from(path) }
}

/// The variable that makes a multi-rank test on too few GPUs a failure: the GPU count the run
/// must have.
const REQUIRE_GPUS: &str = "FLASHOMNI_REQUIRE_GPUS";

/// NCCL, or `None` after printing why `test` is skipped (see the module docs for the rule).
fn nccl_or_skip(test: &str) -> Option<Arc<Nccl>> {
    if !nvls_preset_or_skip(test) {
        return None;
    }
    let explicit = std::env::var_os(LIBRARY_ENV).is_some_and(|value| !value.is_empty());
    // SAFETY: as in `load_from`; FLASHOMNI_NCCL_LIB or the loader's search path names NCCL.
    let err = match unsafe { Nccl::load() } {
        Ok(nccl) => return Some(nccl),
        Err(err) => err,
    };
    if explicit {
        skip_unless_required(test, &format!("{LIBRARY_ENV} is set but NCCL does not load: {err}"));
        return None;
    }
    if let Some(dir) = python_nccl_dir() {
        match load_from(&dir) {
            Ok(nccl) => {
                eprintln!("{test}: using NCCL from {}", nccl.path());
                return Some(nccl);
            }
            Err(err) => eprintln!("{test}: the python3 NCCL wheel does not load: {err}"),
        }
    }
    skip_unless_required(
        test,
        &format!(
            "NCCL not found ({err}); set {LIBRARY_ENV} to libnccl.so.2 or its folder \
             (pip wheel nvidia-nccl-cu13: site-packages/nvidia/nccl/lib)"
        ),
    );
    None
}

/// One attention problem: global shape and a list of symbol settings run one after another
/// through the same plan (`None` = dense).
struct Case {
    seed: u64,
    requests: Vec<RequestShape>,
    heads: u32,
    head_dim: u32,
    /// `(kv_density, cache_ratio)` per step.
    steps: Vec<Option<(f64, f64)>>,
}

/// Host tensors and per-step symbols of a case.
struct Data<T> {
    shape: AttentionShape,
    config: AttentionConfig,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    symbols: Vec<Option<PackedSymbols>>,
}

impl<T: Element> Data<T> {
    fn draw(case: &Case) -> Result<Self> {
        let mut rng = seeded_rng(case.seed);
        let shape = AttentionShape::from_requests(case.heads, case.head_dim, 128, 128, &case.requests);
        let row = (case.heads * case.head_dim) as usize;
        let q = random_elements::<T>(&mut rng, shape.total_q() * row, 2.0).0;
        let k = random_elements::<T>(&mut rng, shape.total_kv() * row, 2.0).0;
        let v = random_elements::<T>(&mut rng, shape.total_kv() * row, 2.0).0;
        let geometry = SymbolGeometry::new(case.heads, 128, 128, &case.requests)?;
        let symbols = case
            .steps
            .iter()
            .map(|step| step.map(|(density, cache)| random_symbols(&mut rng, &geometry, density, cache)))
            .collect();
        Ok(Self { config: AttentionConfig::new(case.heads, case.head_dim), shape, q, k, v, symbols })
    }

    /// Which `[token, head]` rows step `step` computes (from its symbols, not from a kernel).
    fn computed(&self, step: usize) -> Vec<bool> {
        let view = self.symbols[step].as_ref().map(PackedSymbols::view);
        computed_rows(&self.shape, view.as_ref())
    }

    /// Single-GPU attention of every step, each into a fresh poisoned output, after checking
    /// that it wrote exactly the computed rows (so that matching it shows the same of a
    /// sharded run).
    fn single_gpu(&self, engine: &Engine) -> Result<Vec<Vec<T>>> {
        let plan = AttentionPlan::new(engine, self.config, &self.shape.qo_indptr, &self.shape.kv_indptr)?;
        let (q, k, v) =
            (DeviceArray::from_host(&self.q)?, DeviceArray::from_host(&self.k)?, DeviceArray::from_host(&self.v)?);
        let mut outputs = Vec::new();
        for symbols in &self.symbols {
            let device = symbols.as_ref().map(|s| flashomni::DeviceSymbols::upload(&s.view())).transpose()?;
            let mut out = poisoned::<T>(self.q.len())?;
            let args = attention_args(&q, &k, &v, &mut out, device.as_ref());
            engine.attention(&plan, args, engine.stream())?;
            engine.synchronize()?;
            let out = out.to_host()?;
            let computed = self.computed(outputs.len());
            for (row, values) in out.chunks(self.config.head_dim as usize).enumerate() {
                let written = values.iter().filter(|&&x| !is_poison(x)).count();
                let want = if computed[row] { values.len() } else { 0 };
                ensure!(written == want, "single-GPU row {row}: {written} of {} elements written", values.len());
            }
            outputs.push(out);
        }
        Ok(outputs)
    }
}

/// Runs every step of `data` through `UlyssesAttention` on one rank whose shards are
/// `q`, `k`, `v`; returns the output shard of each step.
fn run_rank<T: Element>(
    engine: &Engine,
    comm: Communicator,
    data: &Data<T>,
    (q, k, v): (&[T], &[T], &[T]),
) -> Result<(Vec<Vec<T>>, Communicator)> {
    let mut ulysses =
        UlyssesAttention::<T>::new(engine, comm, data.config, &data.shape.qo_indptr, &data.shape.kv_indptr)?;
    ensure!(ulysses.q_shard_elements() == q.len() && ulysses.kv_shard_elements() == k.len(), "shard sizes");
    let (q, k, v) = (DeviceArray::from_host(q)?, DeviceArray::from_host(k)?, DeviceArray::from_host(v)?);
    let mut outputs = Vec::new();
    for symbols in &data.symbols {
        let mut out = poisoned::<T>(ulysses.q_shard_elements())?;
        let args = UlyssesArgs {
            q: q.view(),
            k: k.view(),
            v: v.view(),
            out: out.view_mut(),
            symbols: symbols.as_ref().map(PackedSymbols::view),
        };
        ulysses.run(engine, args, engine.stream())?;
        engine.synchronize()?;
        outputs.push(out.to_host()?);
    }
    Ok((outputs, ulysses.into_communicator()))
}

fn single_rank_case<T: Element>(engine: &Engine, comm: Communicator, case: &Case) -> Result<Communicator> {
    let data = Data::<T>::draw(case)?;
    let want = data.single_gpu(engine)?;
    let (got, comm) = run_rank(engine, comm, &data, (&data.q, &data.k, &data.v))?;
    for (step, (got, want)) in got.iter().zip(&want).enumerate() {
        let differing = got.iter().zip(want).filter(|(a, b)| bit_pattern(**a) != bit_pattern(**b)).count();
        ensure!(
            differing == 0,
            "{} seed {} step {step}: {differing} of {} elements differ from single-GPU attention",
            T::NAME,
            case.seed,
            got.len()
        );
    }
    Ok(comm)
}

fn single_rank_cases() -> Vec<Case> {
    vec![
        Case { seed: 1, requests: vec![RequestShape::new(300, 300)], heads: 2, head_dim: 128, steps: vec![None] },
        Case {
            seed: 2,
            requests: vec![RequestShape::new(256, 384), RequestShape::new(130, 70)],
            heads: 3,
            head_dim: 64,
            // New bits, the same bits again (no re-upload), dense, new bits.
            steps: vec![Some((0.5, 0.3)), Some((0.7, 0.5)), Some((0.7, 0.5)), None, Some((0.3, 0.0))],
        },
        Case {
            seed: 3,
            requests: vec![RequestShape::new(0, 64), RequestShape::new(129, 0), RequestShape::new(257, 300)],
            heads: 2,
            head_dim: 64,
            steps: vec![Some((0.6, 0.2)), Some((0.0, 0.0))],
        },
        Case {
            seed: 4,
            requests: vec![RequestShape::new(1000, 1000)],
            heads: 4,
            head_dim: 128,
            steps: vec![Some((0.5, 0.4))],
        },
    ]
}

/// With one rank, sequence-parallel attention (pack, NCCL self send/receive, attention,
/// NCCL back, unpack) must reproduce plain single-GPU attention bit for bit, cached rows
/// (which keep the poisoned output's contents) included.
#[test]
fn single_rank_matches_plain_attention_bitwise() -> Result<()> {
    const NAME: &str = "single_rank_matches_plain_attention_bitwise";
    let Some(engine) = engine_or_skip(NAME) else { return Ok(()) };
    let Some(nccl) = nccl_or_skip(NAME) else { return Ok(()) };
    let id = nccl.unique_id()?;
    let mut comm = Communicator::init_rank(&nccl, &engine, &id, 1, 0)?;
    ensure!(comm.ranks() == 1 && comm.rank() == 0, "communicator shape");
    for case in single_rank_cases() {
        comm = single_rank_case::<bf16>(&engine, comm, &case)?;
        comm = single_rank_case::<f16>(&engine, comm, &case)?;
    }
    Ok(())
}

#[test]
fn single_rank_rejects_bad_inputs() -> Result<()> {
    const NAME: &str = "single_rank_rejects_bad_inputs";
    let Some(engine) = engine_or_skip(NAME) else { return Ok(()) };
    let Some(nccl) = nccl_or_skip(NAME) else { return Ok(()) };
    let id = nccl.unique_id()?;
    match Communicator::init_rank(&nccl, &engine, &id, 1, 1) {
        Err(Error::InvalidShape(_)) => {}
        Err(other) => bail!("rank 1 of 1 must be an invalid shape, got {other:?}"),
        Ok(_) => bail!("rank 1 of 1 must be rejected"),
    }
    let comm = Communicator::init_rank(&nccl, &engine, &id, 1, 0)?;
    let head_major = AttentionConfig::new(2, 64).with_kv_layout(KvLayout::HeadMajor);
    match UlyssesAttention::<bf16>::new(&engine, comm, head_major, &[0, 128], &[0, 128]) {
        Err(Error::Unsupported(_)) => {}
        Err(other) => bail!("head-major K/V must be unsupported, got {other:?}"),
        Ok(_) => bail!("head-major K/V must be rejected"),
    }

    let id = nccl.unique_id()?;
    let comm = Communicator::init_rank(&nccl, &engine, &id, 1, 0)?;
    let mut ulysses = UlyssesAttention::<bf16>::new(&engine, comm, AttentionConfig::new(2, 64), &[0, 200], &[0, 300])?;
    ensure!(ulysses.local_heads() == (0..2), "one rank computes every head");
    let small = DeviceArray::<bf16>::uninitialized(ulysses.q_shard_elements() - 1)?;
    let q = DeviceArray::<bf16>::uninitialized(ulysses.q_shard_elements())?;
    let kv = DeviceArray::<bf16>::uninitialized(ulysses.kv_shard_elements())?;
    let mut out = DeviceArray::<bf16>::uninitialized(ulysses.q_shard_elements())?;
    let args = UlyssesArgs { q: small.view(), k: kv.view(), v: kv.view(), out: out.view_mut(), symbols: None };
    match ulysses.run(&engine, args, engine.stream()) {
        Err(Error::BufferTooSmall { buffer: "q", .. }) => {}
        other => bail!("a short q shard must be rejected, got {other:?}"),
    }
    let requests = [RequestShape::new(200, 300)];
    let wrong_heads = PackedSymbols::dense(&SymbolGeometry::new(3, 128, 128, &requests)?);
    let args =
        UlyssesArgs { q: q.view(), k: kv.view(), v: kv.view(), out: out.view_mut(), symbols: Some(wrong_heads.view()) };
    match ulysses.run(&engine, args, engine.stream()) {
        Err(Error::InvalidShape(message)) => ensure!(message.contains("heads=3"), "{message}"),
        other => bail!("symbols for 3 heads must be rejected, got {other:?}"),
    }
    Ok(())
}

/// `P ≥ 2` ranks, one GPU and one thread each, against single-GPU attention on device 0:
/// computed rows within bf16 tolerance, cached rows still poisoned.
#[test]
fn ranks_match_single_gpu() -> Result<()> {
    const NAME: &str = "ranks_match_single_gpu";
    let Some(engine) = engine_or_skip(NAME) else { return Ok(()) };
    let devices = Device::num_devices().context("counting devices")?;
    let required: u32 = match std::env::var(REQUIRE_GPUS) {
        Ok(value) => value.parse().with_context(|| format!("{REQUIRE_GPUS}={value} is not a GPU count"))?,
        Err(_) => 0,
    };
    if devices < 2 {
        let why = format!("needs at least 2 GPUs, found {devices}");
        ensure!(required < 2, "{NAME}: {REQUIRE_GPUS}={required} but it {why}");
        report_skip(NAME, &why);
        return Ok(());
    }
    ensure!(devices >= required, "{REQUIRE_GPUS}={required} but {devices} GPUs are present");
    let Some(nccl) = nccl_or_skip(NAME) else { return Ok(()) };
    let ranks = devices.min(8);
    let p = ranks;
    let cases = [
        // Self-attention, ragged batch whose request boundaries do not align with the shards.
        Case {
            seed: 21,
            requests: vec![RequestShape::new(p * 100, p * 100), RequestShape::new(p * 60, p * 60)],
            heads: 2 * p,
            head_dim: 128,
            steps: vec![Some((0.5, 0.3)), Some((0.8, 0.0)), None],
        },
        // Cross-attention lengths (T_kv ≠ T).
        Case {
            seed: 22,
            requests: vec![RequestShape::new(p * 128, p * 70), RequestShape::new(p * 33, p * 50)],
            heads: p,
            head_dim: 64,
            steps: vec![Some((0.6, 0.4))],
        },
    ];
    for case in &cases {
        let data = Data::<bf16>::draw(case)?;
        let want = data.single_gpu(&engine)?;
        let id = nccl.unique_id()?;
        let q_shards = split_tokens(&data.q, p as usize);
        let k_shards = split_tokens(&data.k, p as usize);
        let v_shards = split_tokens(&data.v, p as usize);
        let per_rank: Vec<Vec<Vec<bf16>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..ranks)
                .map(|rank| {
                    let (nccl, data, id) = (&nccl, &data, &id);
                    let shards =
                        (&q_shards[rank as usize][..], &k_shards[rank as usize][..], &v_shards[rank as usize][..]);
                    scope.spawn(move || -> Result<Vec<Vec<bf16>>> {
                        let engine = Engine::new(rank)?;
                        let comm = Communicator::init_rank(nccl, &engine, id, ranks, rank)?;
                        let (outputs, _comm) = run_rank(&engine, comm, data, shards)?;
                        Ok(outputs)
                    })
                })
                .collect();
            join_ranks(handles)
        })?;
        for (step, want) in want.iter().enumerate() {
            let got: Vec<bf16> = per_rank.iter().flat_map(|outputs| outputs[step].iter().copied()).collect();
            ensure!(got.len() == want.len(), "gathered {} elements, want {}", got.len(), want.len());
            let computed = data.computed(step);
            let mut comparison = Comparison::default();
            let mut identical = 0usize;
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                identical += usize::from(bit_pattern(g) == bit_pattern(w));
                if !computed[i / case.head_dim as usize] {
                    if !is_poison(g) {
                        comparison.fail(|| format!("element {i}: cached row was written"));
                    }
                } else {
                    comparison.element(f64::from(g.to_f32()), f64::from(w.to_f32()), Tolerance::BF16, || {
                        format!("element {i}")
                    });
                }
            }
            eprintln!(
                "{NAME}: {p} ranks, seed {} step {step}: {identical}/{} elements bitwise equal",
                case.seed,
                got.len()
            );
            comparison.finish(Tolerance::BF16).with_context(|| format!("seed {} step {step}", case.seed))?;
        }
    }
    Ok(())
}

#[test]
fn missing_library_is_reported() {
    if !nvls_preset_or_skip("missing_library_is_reported") {
        return;
    }
    let path = std::env::temp_dir().join("flashomni-no-such-dir/libnccl.so.2");
    match load_from(&path) {
        Err(Error::NcclUnavailable(message)) => {
            assert!(message.contains("flashomni-no-such-dir"), "{message}");
        }
        Err(other) => panic!("expected NcclUnavailable, got {other:?}"),
        Ok(_) => panic!("a missing file must not load"),
    }
    // A folder is searched for libnccl.so.2.
    let dir = std::env::temp_dir();
    match load_from(&dir) {
        Err(Error::NcclUnavailable(message)) => assert!(message.contains("libnccl.so.2"), "{message}"),
        Err(other) => panic!("expected NcclUnavailable, got {other:?}"),
        Ok(_) => eprintln!("note: {} holds a libnccl.so.2", dir.display()),
    }
}

#[test]
fn library_without_nccl_is_reported() {
    if !nvls_preset_or_skip("library_without_nccl_is_reported") {
        return;
    }
    match load_from("libc.so.6") {
        Err(Error::NcclUnavailable(message)) => assert!(message.contains("ncclGetUniqueId"), "{message}"),
        Err(other) => panic!("expected NcclUnavailable, got {other:?}"),
        Ok(_) => panic!("libc is not NCCL"),
    }
}

/// Needs NCCL but no GPU: the library loads, every bound symbol resolves, and
/// `ncclGetUniqueId` (the first call through the binding) produces distinct ids.
#[test]
fn nccl_loads_and_creates_unique_ids() {
    const NAME: &str = "nccl_loads_and_creates_unique_ids";
    let Some(nccl) = nccl_or_skip(NAME) else { return };
    let a = nccl.unique_id().unwrap_or_else(|err| panic!("{NAME}: {err}"));
    let b = nccl.unique_id().unwrap_or_else(|err| panic!("{NAME}: {err}"));
    assert_ne!(a, b, "two unique ids must differ");
    assert_eq!(UniqueId::from_bytes(*a.as_bytes()), a);
}
