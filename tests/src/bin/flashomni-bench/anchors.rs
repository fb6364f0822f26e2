//! Runs `anchors.py` (PyTorch on the same GPU) and parses its JSON lines.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::Options;
use crate::attention::DENSITIES;

/// One anchor measurement.
#[derive(Clone, Debug)]
pub struct AnchorRow {
    /// Anchor name (`sdpa-cudnn`, `sdpa-flash2`, `flex-blocksparse`, `cublas`, ...).
    pub anchor: String,
    /// `attention` or `gemm`.
    pub op: String,
    /// Tokens (attention) or M (GEMM).
    pub n: u32,
    /// Kept fraction of KV blocks (attention; 1 for dense anchors).
    pub density: f64,
    /// Median milliseconds.
    pub ms: f64,
    /// TFLOP/s as the anchor script counts them (kept work only).
    pub tflops: f64,
}

/// Runs the anchor script for the ops in `options` and returns its measurements.
pub fn run(script: &str, options: &Options) -> Result<Vec<AnchorRow>> {
    let mut command = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    command.arg(script).arg("--n").args(options.sizes.iter().map(u32::to_string));
    command.arg("--densities").args(DENSITIES.iter().map(f64::to_string));
    let mut skip = vec!["copy"];
    for op in ["attention", "gemm"] {
        if !options.ops.iter().any(|o| o == op) {
            skip.push(op);
        }
    }
    command.arg("--skip").args(&skip);
    eprintln!("bench: running anchors: {command:?}");
    let output = command.output().with_context(|| format!("running {script}"))?;
    if !output.status.success() {
        bail!("{script} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(error) = value["error"].as_str() {
            eprintln!("bench: anchor {} failed: {error}", value["anchor"]);
            continue;
        }
        let (Some(anchor), Some(ms)) = (value["anchor"].as_str(), value["ms"].as_f64()) else { continue };
        rows.push(AnchorRow {
            anchor: anchor.to_owned(),
            op: value["op"].as_str().unwrap_or("").to_owned(),
            // GEMM anchors name the row count `m` (their `n` is the output width).
            n: value["m"].as_u64().or_else(|| value["n"].as_u64()).unwrap_or(0) as u32,
            density: value["density"].as_f64().unwrap_or(1.0),
            ms,
            tflops: value["tflops"].as_f64().unwrap_or(0.0),
        });
    }
    Ok(rows)
}
