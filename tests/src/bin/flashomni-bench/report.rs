//! The printed table (our time against the anchors) and the JSON Lines record.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::anchors::AnchorRow;
use crate::parallel::ParallelRow;

/// One of our measurements.
#[derive(Clone, Debug)]
pub struct Row {
    /// `attention`, `gemm_q`, `gemm_o`, or `copy` (the cache-matrix copy that floors GEMM-O).
    pub op: &'static str,
    /// Tokens (attention) or M (GEMMs).
    pub n: u32,
    /// Heads.
    pub heads: u32,
    /// Head dimension.
    pub dim: u32,
    /// Measured fraction of kept KV blocks.
    pub kv_density: f64,
    /// Measured fraction of S_c bits that are 0.
    pub cache_ratio: f64,
    /// The KV density the case asked for (matches the anchors' requested densities).
    pub requested_density: f64,
    /// Median milliseconds.
    pub ms: f64,
    /// TFLOP/s of the kept work.
    pub tflops: f64,
}

fn anchor<'a>(anchors: &'a [AnchorRow], name: &str, op: &str, n: u32) -> impl Iterator<Item = &'a AnchorRow> {
    let (name, op) = (name.to_owned(), op.to_owned());
    anchors.iter().filter(move |a| a.anchor == name && a.op == op && a.n == n)
}

/// The flex-blocksparse anchor closest to `density` at `n`.
fn flex_at(anchors: &[AnchorRow], n: u32, density: f64) -> Option<&AnchorRow> {
    anchor(anchors, "flex-blocksparse", "attention", n)
        .min_by(|a, b| (a.density - density).abs().total_cmp(&(b.density - density).abs()))
}

/// Ratios of one row against the anchors: (name, value) pairs, value > 1 means we are faster.
fn ratios(row: &Row, rows: &[Row], anchors: &[AnchorRow]) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    if row.op == "gemm_o"
        && let Some(copy) = rows.iter().find(|r| r.op == "copy" && r.n == row.n)
    {
        out.push(("time_vs_copy", row.ms / copy.ms));
    }
    if row.op == "gemm_q" || row.op == "gemm_o" {
        if let Some(cublas) = anchor(anchors, "cublas", "gemm", row.n).next() {
            out.push(("speedup_vs_cublas", cublas.ms / row.ms));
        }
        if let Some(dense) = rows.iter().find(|r| r.op == row.op && r.n == row.n && r.cache_ratio == 0.0) {
            out.push(("speedup_vs_own_dense", dense.ms / row.ms));
        }
    }
    if row.op == "attention" {
        for name in ["sdpa-flash2", "sdpa-cudnn"] {
            if let Some(a) = anchor(anchors, name, "attention", row.n).next() {
                out.push((
                    if name == "sdpa-flash2" { "speedup_vs_sdpa_flash2" } else { "speedup_vs_sdpa_cudnn" },
                    a.ms / row.ms,
                ));
            }
        }
        if let Some(flex) = flex_at(anchors, row.n, row.requested_density).filter(|_| row.cache_ratio == 0.0) {
            out.push(("tflops_vs_flex_blocksparse", row.tflops / flex.tflops));
        }
        let dense =
            rows.iter().find(|r| r.op == "attention" && r.n == row.n && r.kv_density == 1.0 && r.cache_ratio == 0.0);
        if let Some(dense) = dense {
            out.push(("speedup_vs_own_dense", dense.ms / row.ms));
        }
    }
    out
}

/// Prints our rows with their ratios, then the anchors.
pub fn print_table(rows: &[Row], anchors: &[AnchorRow]) {
    println!();
    println!(
        "{:<10} {:>6} {:>8} {:>6} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "op", "n", "kv_dens", "cache", "ms", "TFLOP/s", "xflash2", "xcudnn", "xflex", "xdense"
    );
    for row in rows.iter().filter(|row| row.op == "attention") {
        let r = ratios(row, rows, anchors);
        let get = |key: &str| r.iter().find(|(k, _)| *k == key).map_or("-".to_owned(), |(_, v)| format!("{v:.2}"));
        println!(
            "{:<10} {:>6} {:>8.3} {:>6.2} {:>9.3} {:>8.1} {:>9} {:>9} {:>9} {:>9}",
            row.op,
            row.n,
            row.kv_density,
            row.cache_ratio,
            row.ms,
            row.tflops,
            get("speedup_vs_sdpa_flash2"),
            get("speedup_vs_sdpa_cudnn"),
            get("tflops_vs_flex_blocksparse"),
            get("speedup_vs_own_dense"),
        );
    }
    if rows.iter().any(|row| row.op != "attention") {
        println!(
            "\n{:<10} {:>6} {:>6} {:>9} {:>8} {:>9} {:>9} {:>9}",
            "op", "m", "cache", "ms", "TFLOP/s", "xcublas", "xdense", "/copy"
        );
    }
    for row in rows.iter().filter(|row| row.op != "attention") {
        let r = ratios(row, rows, anchors);
        let get = |key: &str| r.iter().find(|(k, _)| *k == key).map_or("-".to_owned(), |(_, v)| format!("{v:.2}"));
        println!(
            "{:<10} {:>6} {:>6.2} {:>9.3} {:>8.1} {:>9} {:>9} {:>9}",
            row.op,
            row.n,
            row.cache_ratio,
            row.ms,
            row.tflops,
            get("speedup_vs_cublas"),
            get("speedup_vs_own_dense"),
            get("time_vs_copy")
        );
    }
    if !anchors.is_empty() {
        println!("\nanchors (same GPU session):");
        for a in anchors {
            println!("{:<18} {:<10} {:>6} {:>8.3} {:>9.3} {:>8.1}", a.anchor, a.op, a.n, a.density, a.ms, a.tflops);
        }
    }
    println!(
        "\nx<anchor>: anchor time / our time (>1: we are faster); xflex: our effective TFLOP/s / flex's at the same density; \
         /copy: our time / the time to copy the [m, n] cache matrix (GEMM-O's memory floor)"
    );
}

/// Appends every row (ours with ratios and the kernel `module` that ran, then the anchors) to
/// the JSON Lines file at `path`.
pub fn append_jsonl(
    path: &str,
    rows: &[Row],
    anchors: &[AnchorRow],
    gpu: &str,
    module: &str,
    commit: &str,
) -> Result<()> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file =
        OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {path}"))?;
    for row in rows {
        let mut record = json!({
            "op": row.op, "impl": "flashomni", "gpu": gpu, "dtype": "bf16", "n": row.n,
            "heads": row.heads, "dim": row.dim, "kv_density": row.kv_density,
            "cache_ratio": row.cache_ratio, "ms": row.ms, "tflops": row.tflops, "module": module,
            "commit": commit,
        });
        for (key, value) in ratios(row, rows, anchors) {
            record[key] = json!(value);
        }
        writeln!(file, "{record}")?;
    }
    let mut written = rows.len();
    for a in anchors {
        // A dense cuBLAS product is the anchor of both sparse projections: one record per op.
        let ops: &[&str] = if a.op == "gemm" { &["gemm_q", "gemm_o"] } else { &[a.op.as_str()] };
        for op in ops {
            let record = json!({
                "op": op, "impl": a.anchor, "gpu": gpu, "dtype": "bf16", "n": a.n, "heads": 24, "dim": 128,
                "kv_density": a.density, "cache_ratio": 0.0, "ms": a.ms, "tflops": a.tflops, "commit": commit,
            });
            writeln!(file, "{record}")?;
            written += 1;
        }
    }
    eprintln!("bench: appended {written} rows to {path}");
    Ok(())
}

/// Prints the sequence-parallel comparison, if any.
pub fn print_parallel(rows: &[ParallelRow]) {
    if rows.is_empty() {
        return;
    }
    println!(
        "\n{:<22} {:>6} {:>8} {:>6} {:>10} {:>10} {:>8} {:>10}",
        "op", "n", "kv_dens", "ranks", "plain ms", "SP ms", "speedup", "efficiency"
    );
    for r in rows {
        let speedup = r.plain_ms / r.parallel_ms;
        println!(
            "{:<22} {:>6} {:>8.3} {:>6} {:>10.3} {:>10.3} {:>8.3} {:>10.3}",
            "attention (ulysses)",
            r.n,
            r.kv_density,
            r.ranks,
            r.plain_ms,
            r.parallel_ms,
            speedup,
            speedup / f64::from(r.ranks)
        );
    }
}

/// Appends the sequence-parallel rows (`impl` = `flashomni-ulysses`, with `ranks` and the
/// plain one-GPU time of the same inputs) to the JSON Lines file at `path`.
pub fn append_parallel_jsonl(path: &str, rows: &[ParallelRow], gpu: &str, commit: &str) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut file =
        OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {path}"))?;
    for r in rows {
        let flops = 4.0 * 24.0 * 128.0 * f64::from(r.n) * f64::from(r.n) * r.kv_density;
        let record = json!({
            "op": "attention", "impl": "flashomni-ulysses", "ranks": r.ranks, "gpu": gpu, "dtype": "bf16",
            "n": r.n, "heads": 24, "dim": 128, "kv_density": r.kv_density, "cache_ratio": 0.0,
            "ms": r.parallel_ms, "tflops": flops / r.parallel_ms / 1e9, "plain_ms": r.plain_ms,
            "scaling_efficiency": r.plain_ms / r.parallel_ms / f64::from(r.ranks), "commit": commit,
        });
        writeln!(file, "{record}")?;
    }
    Ok(())
}
