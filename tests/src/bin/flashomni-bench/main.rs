//! `flashomni-bench`: times FlashOmni kernels and the anchors in one GPU session.
//!
//! `flashomni-bench --help` prints the options ([`USAGE`]). Each measurement is the median of `--iters` CUDA-event timings after a `--pause-ms` idle
//! pause (see `timing`) and `--warmup` untimed runs, on random inputs. The anchors (PyTorch
//! SDPA, FlexAttention, cuBLAS) run from `anchors.py` in the same session; the table reports
//! our time against them and every row is appended to the JSON Lines file. `parallel`
//! (opt-in; needs NCCL) times the sequence-parallel path against plain attention.

mod anchors;
mod attention;
mod gemm;
mod parallel;
mod report;
mod timing;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use flashomni::parallel::nccl::disable_nvls;
use flashomni::{Arch, Engine};
use timing::Timing;

/// Parsed command line.
pub struct Options {
    ops: Vec<String>,
    anchors: Option<String>,
    sizes: Vec<u32>,
    out: String,
    commit: String,
    /// Pause, warm-up and timed calls of every case (`--pause-ms`, `--warmup`, `--iters`).
    timing: Timing,
    /// Forces the GEMM CTA size (`--gemm-rows 64|128`); `None`: the library's heuristic.
    gemm_rows: Option<flashomni::GemmRows>,
    /// Forces the kernel module (`--module sm80|sm90a`); `None`: the device's own.
    module: Option<Arch>,
    /// GEMM-Q without a split-K workspace (`--no-split-k`), as before split-K existed.
    no_split_k: bool,
    /// Forces GEMM-O's persistent kernel on or off (`--persistent-o on|off`); `None`: the
    /// launcher chooses.
    persistent_o: Option<bool>,
    /// Forces GEMM-Q's thread-block clusters on or off (`--q-clusters on|off`); `None`: the
    /// launcher chooses.
    q_clusters: Option<bool>,
}

/// What `--help` prints (and an unknown argument's error ends with).
const USAGE: &str = "\
usage: flashomni-bench [attention] [gemm] [parallel] [--anchors anchors.py] [--n 4608,16896]
                       [--out FILE] [--commit SHA] [--iters 20] [--warmup 5] [--pause-ms 500]
                       [--gemm-rows 64|128] [--module sm80|sm90a] [--no-split-k]
                       [--persistent-o on|off] [--q-clusters on|off]
Times the named parts (default: attention gemm) on GPU 0, runs the anchors script in the same
session when --anchors is given, prints a table and appends JSON Lines to --out.";

/// The value of an `on|off` flag.
fn on_off(flag: &str, value: &str) -> Result<bool> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => bail!("{flag} takes on or off, not {other}"),
    }
}

/// The command line's options, or `None` after printing the usage for `--help`.
fn parse_options() -> Result<Option<Options>> {
    let mut options = Options {
        ops: Vec::new(),
        anchors: None,
        sizes: vec![4608, 16896, 33792],
        out: "bench/results/bench.jsonl".into(),
        commit: option_env!("FLASHOMNI_GIT_COMMIT").unwrap_or("unknown").into(),
        timing: Timing { pause: Duration::from_millis(500), warmup: 5, iters: 20 },
        gemm_rows: None,
        module: None,
        no_split_k: false,
        persistent_o: None,
        q_clusters: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--anchors" => options.anchors = Some(value()?),
            "--n" => options.sizes = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--out" => options.out = value()?,
            "--commit" => options.commit = value()?,
            "--iters" => options.timing.iters = value()?.parse()?,
            "--warmup" => options.timing.warmup = value()?.parse()?,
            "--pause-ms" => options.timing.pause = Duration::from_millis(value()?.parse()?),
            "--gemm-rows" => {
                options.gemm_rows = Some(match value()?.as_str() {
                    "64" => flashomni::GemmRows::Rows64,
                    "128" => flashomni::GemmRows::Rows128,
                    other => bail!("--gemm-rows takes 64 or 128, not {other}"),
                })
            }
            "--module" => {
                options.module = Some(match value()?.as_str() {
                    "sm80" => Arch::Sm80,
                    "sm90a" => Arch::Sm90a,
                    other => bail!("--module takes sm80 or sm90a, not {other}"),
                })
            }
            "--no-split-k" => options.no_split_k = true,
            "--persistent-o" => options.persistent_o = Some(on_off(&arg, &value()?)?),
            "--q-clusters" => options.q_clusters = Some(on_off(&arg, &value()?)?),
            "attention" | "gemm" | "parallel" => options.ops.push(arg),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if options.ops.is_empty() {
        options.ops = vec!["attention".into(), "gemm".into()];
    }
    Ok(Some(options))
}

fn main() -> Result<()> {
    // SAFETY: nothing else runs yet (no thread started, no CUDA call made), so nothing can
    // read the environment while it changes. NCCL (`parallel`) must not use NVLink multicast;
    // `Nccl::load` relies on the variable being set by now.
    unsafe { disable_nvls() };
    let Some(options) = parse_options()? else { return Ok(()) };
    let engine = match options.module {
        Some(arch) => Engine::with_arch(0, arch),
        None => Engine::new(0),
    }
    .context("the benchmark needs a GPU")?;
    let gpu = engine.device_name()?;
    eprintln!("bench: {gpu}, module {:?}, {} SMs", engine.arch(), engine.multiprocessors());
    let mut rows = Vec::new();
    if options.ops.iter().any(|op| op == "attention") {
        rows.extend(attention::run(&engine, &options)?);
    }
    if options.ops.iter().any(|op| op == "gemm") {
        rows.extend(gemm::run(&engine, &options)?);
    }
    let parallel_rows =
        if options.ops.iter().any(|op| op == "parallel") { parallel::run(&engine, &options)? } else { Vec::new() };
    let anchor_rows = match &options.anchors {
        Some(script) => anchors::run(script, &options)?,
        None => {
            eprintln!("bench: no --anchors script given; ratios are omitted");
            Vec::new()
        }
    };
    report::print_table(&rows, &anchor_rows);
    report::print_parallel(&parallel_rows);
    report::append_jsonl(&options.out, &rows, &anchor_rows, &gpu, engine.arch().target(), &options.commit)?;
    report::append_parallel_jsonl(&options.out, &parallel_rows, &gpu, &options.commit)?;
    Ok(())
}
