//! `cargo xtask bench`: build the benchmark runner in release and run it on this machine's
//! GPU, with the anchors from `../shared/anchors/anchors.py`, writing `bench/results/`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo;

/// Builds and runs `flashomni-bench`; `args` are its operations and options.
pub fn run(args: &[String]) -> Result<()> {
    let root = cargo::workspace_root();
    let commit = cargo::git_commit();
    let built =
        cargo::executables(&["build", "--release", "--package", "flashomni-tests", "--bin", "flashomni-bench"])?;
    let Some((_, binary)) = built.first() else { bail!("the bench binary was not built") };
    let anchors = root.join("../shared/anchors/anchors.py");
    let date = Command::new("date").arg("+%Y-%m-%d").output().context("running date")?;
    let out = root.join(format!("bench/results/{}.jsonl", String::from_utf8_lossy(&date.stdout).trim()));
    let status = Command::new(binary)
        .args(args)
        .arg("--anchors")
        .arg(&anchors)
        .arg("--commit")
        .arg(&commit)
        .arg("--out")
        .arg(&out)
        .current_dir(&root)
        .status()
        .context("running flashomni-bench")?;
    if !status.success() {
        bail!("flashomni-bench failed ({status})");
    }
    Ok(())
}
