//! `cargo xtask ptx`: assemble the kernel modules with ptxas and check their resources.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo;

/// (module file stem written by host/build.rs, ptxas target).
const MODULES: &[(&str, &str)] = &[("sm80", "sm_80"), ("sm90a", "sm_90a")];

/// Finds ptxas: `$PTXAS`, then `.tools/ptxas` (tools/setup.sh), then `PATH`.
pub fn ptxas() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PTXAS") {
        return Ok(PathBuf::from(path));
    }
    let local = cargo::workspace_root().join(".tools/ptxas/nvidia/cu13/bin/ptxas");
    if local.exists() {
        return Ok(local);
    }
    let on_path = Command::new("ptxas").arg("--version").output();
    if on_path.is_ok_and(|output| output.status.success()) {
        return Ok(PathBuf::from("ptxas"));
    }
    bail!("ptxas not found: run `bash tools/setup.sh`, or set PTXAS")
}

/// Resource usage of one kernel as ptxas reports it.
#[derive(Debug, Default)]
struct Resources {
    name: String,
    registers: u32,
    stack_bytes: u32,
    spill_bytes: u32,
    shared_bytes: u32,
    /// ptxas serialized the kernel's `wgmma`s (advisory C7515: non-`wgmma` instructions define
    /// accumulators inside the pipeline), which costs ~10% in the GEMMs (docs/perf-journal.md, run 114).
    serialized_wgmma: bool,
}

/// The advisory ptxas prints for a function whose `wgmma`s it serialized.
const WGMMA_SERIALIZED: &str = "wgmma.mma_async instructions are serialized";

/// Parses `ptxas -v` output into one record per entry.
fn parse_report(report: &str) -> Vec<Resources> {
    let mut kernels: Vec<Resources> = Vec::new();
    let mut serialized = Vec::new();
    let number_before = |line: &str, unit: &str| -> u32 {
        line.find(unit)
            .and_then(|end| line[..end].split_whitespace().last())
            .and_then(|word| word.parse().ok())
            .unwrap_or(0)
    };
    for line in report.lines() {
        if line.contains(WGMMA_SERIALIZED) {
            let function = line.split("in the function '").nth(1).and_then(|rest| rest.split('\'').next());
            serialized.extend(function.map(str::to_owned));
        } else if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_owned();
            kernels.push(Resources { name, ..Resources::default() });
        } else if let Some(kernel) = kernels.last_mut() {
            if line.contains("bytes stack frame") {
                kernel.stack_bytes = number_before(line, "bytes stack frame");
                kernel.spill_bytes =
                    number_before(line, "bytes spill stores") + number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                kernel.registers = number_before(line, "registers");
                kernel.shared_bytes = number_before(line, "bytes smem");
            }
        }
    }
    for kernel in &mut kernels {
        kernel.serialized_wgmma = serialized.contains(&kernel.name);
    }
    kernels
}

/// Entries of a PTX module that declare local memory (`.local`, e.g. an array LLVM could not
/// keep in registers). ptxas may still promote such an array to registers, but the driver's
/// JIT compiler need not (run 30 in docs/perf-journal.md: a local accumulator array the CUDA 13 driver
/// kept in local memory made split GEMM-Q launches 3× slower), so none is allowed.
fn entries_with_local_memory(ptx: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut current: Option<&str> = None;
    for line in ptx.lines() {
        if let Some(rest) = line.split(".entry ").nth(1) {
            current = rest.split('(').next().map(str::trim);
        } else if line.trim_start().starts_with(".local")
            && let Some(name) = current.take()
        {
            entries.push(name.to_owned());
        }
    }
    entries
}

/// Builds the host crate (which builds the PTX), assembles each module and fails on any
/// kernel with a stack frame or spills, whose `wgmma`s ptxas serialized, or whose PTX declares
/// local memory.
pub fn check_modules() -> Result<()> {
    cargo::run(&["build", "--release", "--package", "flashomni"])?;
    let ptxas = ptxas()?;
    let kernels_dir = cargo::workspace_root().join("target/nvptx-kernels");
    let mut failures = Vec::new();
    println!("{:<34} {:>7} {:>5} {:>6} {:>6}", "kernel", "target", "regs", "stack", "spill");
    for (stem, target) in MODULES {
        let module = kernels_dir.join(stem).join("nvptx64-nvidia-cuda/release/flashomni_kernels.ptx");
        let ptx = std::fs::read_to_string(&module).with_context(|| format!("reading {}", module.display()))?;
        for entry in entries_with_local_memory(&ptx) {
            failures.push(format!("{entry} ({target}: local memory in the PTX)"));
        }
        for kernel in assemble(&ptxas, &module, target)? {
            println!(
                "{:<34} {:>7} {:>5} {:>6} {:>6}",
                kernel.name, target, kernel.registers, kernel.stack_bytes, kernel.spill_bytes
            );
            if kernel.stack_bytes > 0 || kernel.spill_bytes > 0 {
                failures.push(format!("{} ({target})", kernel.name));
            }
            if kernel.serialized_wgmma {
                failures.push(format!("{} ({target}: ptxas serialized its wgmma instructions)", kernel.name));
            }
        }
    }
    if !failures.is_empty() {
        bail!("kernels with a stack frame, spills, local memory or serialized wgmma: {}", failures.join(", "));
    }
    println!(
        "ptx: every kernel assembles with no stack frame, no spills and no serialized wgmma, and no PTX uses local \
         memory"
    );
    Ok(())
}

/// Runs `ptxas -v` on one module.
fn assemble(ptxas: &Path, module: &Path, target: &str) -> Result<Vec<Resources>> {
    let output = Command::new(ptxas)
        .args(["-v", "-arch", target, "-o", "/dev/null"])
        .arg(module)
        .output()
        .with_context(|| format!("running {}", ptxas.display()))?;
    let report = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("ptxas rejected {} for {target}:\n{report}", module.display());
    }
    let kernels = parse_report(&report);
    if kernels.is_empty() {
        bail!("ptxas reported no kernels for {}", module.display());
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing_finds_resources_and_serialized_wgmma() {
        let report = "\
ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma \
instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in the function \
'gemm_b'
ptxas info    : Compiling entry function 'gemm_a' for 'sm_90a'
ptxas info    : Function properties for gemm_a
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 198 registers, used 1 barriers, 1024 bytes smem
ptxas info    : Compiling entry function 'gemm_b' for 'sm_90a'
ptxas info    : Function properties for gemm_b
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers
";
        let kernels = parse_report(report);
        assert_eq!(kernels.len(), 2);
        let (a, b) = (&kernels[0], &kernels[1]);
        assert_eq!(
            (a.name.as_str(), a.registers, a.stack_bytes, a.spill_bytes, a.shared_bytes),
            ("gemm_a", 198, 0, 0, 1024)
        );
        assert!(!a.serialized_wgmma);
        assert_eq!((b.name.as_str(), b.registers, b.stack_bytes, b.spill_bytes), ("gemm_b", 255, 16, 12));
        assert!(b.serialized_wgmma);
    }
}
