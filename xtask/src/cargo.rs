//! Running cargo and locating the workspace.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask/ lives in the workspace root").to_path_buf()
}

/// A cargo command run from the workspace root with the caller's cargo.
///
/// Its programs find a CUDA driver library ([`with_driver_library`]). `NCCL_NVLS_ENABLE` is
/// set to 0 unless the caller set it: NCCL must not use NVLink multicast, and the test
/// binaries need it set before they start (see `tests/tests/parallel_gpu.rs`).
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root()).args(args);
    if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
        command.env("NCCL_NVLS_ENABLE", "0");
    }
    with_driver_library(&mut command);
    command
}

/// Where the system has no CUDA driver library, puts the link-time stub from `tools/setup.sh`
/// on `command`'s library path, so programs that link `libcuda.so.1` start and report "no
/// GPU" cleanly instead of failing to load. A real driver is never shadowed.
pub fn with_driver_library(command: &mut Command) {
    let stub = workspace_root().join(".tools/cuda/lib64");
    if !system_has_libcuda() && stub.exists() {
        let mut path = std::ffi::OsString::from(&stub);
        if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH") {
            path.push(":");
            path.push(existing);
        }
        command.env("LD_LIBRARY_PATH", path);
    }
}

/// Whether the dynamic loader already finds a CUDA driver library.
fn system_has_libcuda() -> bool {
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("libcuda.so.1"))
}

/// Runs a cargo command, streaming its output, and fails if it fails.
pub fn run(args: &[&str]) -> Result<()> {
    let status = command(args).status().with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a cargo command with `--message-format=json` and returns the executables of the
/// artifacts it built, as (target name, path).
pub fn executables(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    executables_with_env(args, &[])
}

/// [`executables`] with extra environment variables for the build.
pub fn executables_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Vec<(String, PathBuf)>> {
    Ok(executables_in(&json_messages(args, env)?, Artifacts::All))
}

/// Runs a cargo command (`cargo test … --no-run`) and returns its test harnesses only, as
/// (target name, path). `cargo test` also builds the binaries and examples the tests may
/// run; those are left out, so a bench binary named like its own unit-test harness never
/// takes the harness's place.
pub fn test_executables(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    Ok(executables_in(&json_messages(args, &[])?, Artifacts::TestHarnesses))
}

/// Which built artifacts [`executables_in`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Artifacts {
    /// Every executable.
    All,
    /// Executables built with the test profile (`cargo test` harnesses).
    TestHarnesses,
}

/// The JSON messages (stdout) of a cargo command run with `--message-format=json` and `env`.
fn json_messages(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let mut full: Vec<&str> = args.to_vec();
    full.push("--message-format=json");
    let mut cargo = command(&full);
    cargo.envs(env.iter().copied());
    let output = cargo.output().with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("cargo {} failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The (target name, path) of every executable artifact in cargo's JSON `messages` that
/// `which` keeps.
fn executables_in(messages: &str, which: Artifacts) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if which == Artifacts::TestHarnesses && message["profile"]["test"] != true {
            continue;
        }
        if let Some(path) = message["executable"].as_str() {
            let name = message["target"]["name"].as_str().unwrap_or("unnamed").to_owned();
            found.push((name, PathBuf::from(path)));
        }
    }
    found
}

/// The checked-out commit (12 hex digits), with `-dirty` when the work tree has uncommitted
/// changes; `unknown` outside a git checkout.
pub fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else { return "unknown".into() };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|status| !status.is_empty());
    if dirty { format!("{commit}-dirty") } else { commit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_harnesses_leave_out_same_named_binaries() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"bench"},"profile":{"test":true},"executable":"/t/deps/bench-1"}
{"reason":"compiler-artifact","target":{"name":"bench"},"profile":{"test":false},"executable":"/t/bench"}
{"reason":"compiler-artifact","target":{"name":"example"},"profile":{"test":false},"executable":"/t/examples/example"}
{"reason":"compiler-artifact","target":{"name":"lib"},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}"#;
        let harnesses = executables_in(messages, Artifacts::TestHarnesses);
        assert_eq!(harnesses, vec![("bench".to_owned(), PathBuf::from("/t/deps/bench-1"))]);
        assert_eq!(executables_in(messages, Artifacts::All).len(), 3);
    }
}
