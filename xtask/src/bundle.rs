//! `cargo xtask gpu-bundle`: everything a GPU machine without cargo needs, in one folder.
//!
//! ```text
//! gpu-bundle/
//!   tests/<test binaries>   release builds of every workspace test harness (not the binaries
//!                           and examples `cargo test` also builds)
//!   flashomni-bench         the benchmark runner
//!   examples/<examples>     release builds of the host crate's examples
//!   anchors.py              the anchor script (from ../shared/anchors)
//!   run-tests.sh            runs every test binary with FLASHOMNI_REQUIRE_GPU=1
//!   run-bench.sh            runs the benchmark (arguments are passed on)
//! ```

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cargo;

const RUN_TESTS: &str = r#"#!/usr/bin/env bash
# Runs every test binary of the bundle on this machine's GPU; a skipped GPU test fails.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export FLASHOMNI_REQUIRE_GPU=1
# NCCL must not use NVLink multicast; the tests need the variable set before they start.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
passed=0; failed=0; failed_binaries=()
for test in "$here"/tests/*; do
  name="$(basename "$test")"
  echo "=== $name"
  output="$("$test" "$@" 2>&1)"; status=$?
  echo "$output" | grep -E '^(test |SKIPPED|---- |thread |test result)|panicked|Error' | grep -v ' \.\.\. ok$'
  counts="$(echo "$output" | grep -E '^test result' | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/')"
  while read -r p f; do passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); done <<< "$counts"
  if [[ $status -ne 0 ]]; then failed_binaries+=("$name"); fi
done
echo "binaries failed: ${failed_binaries[*]:-none}"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 && ${#failed_binaries[@]} -eq 0 ]]
"#;

const RUN_BENCH: &str = r#"#!/usr/bin/env bash
# Runs the benchmark on this machine's GPU; the anchors run in the same process tree.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/flashomni-bench" --anchors "$here/anchors.py" "$@"
"#;

/// Builds the release binaries and writes the bundle; returns its path.
pub fn write_bundle() -> Result<PathBuf> {
    let root = cargo::workspace_root();
    let bundle = root.join("gpu-bundle");
    if bundle.exists() {
        fs::remove_dir_all(&bundle).context("clearing gpu-bundle/")?;
    }
    fs::create_dir_all(bundle.join("tests"))?;

    let tests = cargo::test_executables(&["test", "--workspace", "--release", "--no-run"])?;
    if tests.is_empty() {
        bail!("cargo built no test executables");
    }
    for (name, path) in &tests {
        fs::copy(path, bundle.join("tests").join(name)).with_context(|| format!("copying {}", path.display()))?;
    }
    // The bench records the commit it measured; the GPU machine has no git to ask.
    let bench = cargo::executables_with_env(
        &["build", "--release", "--package", "flashomni-tests", "--bin", "flashomni-bench"],
        &[("FLASHOMNI_GIT_COMMIT", &cargo::git_commit())],
    )?;
    let Some((_, bench)) = bench.first() else { bail!("the bench binary was not built") };
    fs::copy(bench, bundle.join("flashomni-bench"))?;
    fs::create_dir_all(bundle.join("examples"))?;
    for (name, path) in cargo::executables(&["build", "--release", "--package", "flashomni", "--examples"])? {
        fs::copy(&path, bundle.join("examples").join(name)).with_context(|| format!("copying {}", path.display()))?;
    }
    let anchors = root.join("../shared/anchors/anchors.py");
    fs::copy(&anchors, bundle.join("anchors.py")).with_context(|| format!("copying {}", anchors.display()))?;
    for (name, text) in [("run-tests.sh", RUN_TESTS), ("run-bench.sh", RUN_BENCH)] {
        let path = bundle.join(name);
        fs::write(&path, text)?;
        set_executable(&path)?;
    }
    println!("gpu-bundle: {} test binaries and the bench runner in {}", tests.len(), bundle.display());
    Ok(bundle)
}

fn set_executable(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", path.display()))
}
