//! Builds the GPU kernels (`kernels-gpu/`) into PTX modules and places them in `OUT_DIR`,
//! where `src/module.rs` embeds them.
//!
//! Each target architecture is one release build of `flashomni-kernels` for
//! `nvptx64-nvidia-cuda` with `-Zbuild-std=core`, linked by `tools/nvptx-link.sh`. The builds
//! share a target directory beside the workspace's, so they are incremental. Set
//! `FLASHOMNI_PTX_DIR` to a folder holding prebuilt `flashomni_sm80.ptx` and
//! `flashomni_sm90a.ptx` to skip the kernel build.
//!
//! The device build always runs on the toolchain pinned in the workspace's
//! `rust-toolchain.toml` (it needs nightly's `-Zbuild-std`), whatever toolchain builds the host
//! code: a crate on stable Rust can depend on `flashomni`. So the build calls `cargo` through
//! rustup's proxy with `RUSTUP_TOOLCHAIN` set to the pinned channel, and drops the variables by
//! which the outer toolchain would otherwise reach it (`RUSTC`, `RUSTDOC`). Where PATH has no
//! `cargo` (a toolchain used without rustup), the outer cargo and rustc build the kernels.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (file stem, `-C target-cpu`, extra target features) of every module we embed.
const MODULES: &[(&str, &str, &str)] = &[("sm80", "sm_80", "+ptx75"), ("sm90a", "sm_90a", "+ptx80")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-env-changed=FLASHOMNI_PTX_DIR");
    if let Some(prebuilt) = env::var_os("FLASHOMNI_PTX_DIR") {
        for (stem, _, _) in MODULES {
            let source = Path::new(&prebuilt).join(format!("flashomni_{stem}.ptx"));
            println!("cargo::rerun-if-changed={}", source.display());
            if let Err(err) = fs::copy(&source, out_dir.join(format!("flashomni_{stem}.ptx"))) {
                panic!("FLASHOMNI_PTX_DIR: cannot copy {}: {err}", source.display());
            }
        }
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir.parent().expect("host/ lives in the workspace root");
    if !workspace.join("kernels-gpu/Cargo.toml").is_file() {
        // A packaged or vendored copy of host/ alone: the kernel sources are not beside it.
        panic!(
            "flashomni builds its GPU kernels from kernels-gpu/ beside host/, which {} lacks: \
             depend on flashomni through its git repository or a path into a checkout, or set \
             FLASHOMNI_PTX_DIR to a folder of prebuilt flashomni_sm80.ptx and flashomni_sm90a.ptx",
            workspace.display()
        );
    }
    for watched in [
        "kernels-gpu/src",
        "kernels-gpu/Cargo.toml",
        "symbols/src",
        "symbols/Cargo.toml",
        "tools/nvptx-link.sh",
        "rust-toolchain.toml",
    ] {
        println!("cargo::rerun-if-changed={}", workspace.join(watched).display());
    }
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("nvptx-kernels");
    let pinned = pinned_channel(&workspace.join("rust-toolchain.toml"));
    for (stem, cpu, features) in MODULES {
        let ptx = build_module(workspace, pinned.as_deref(), &target_dir.join(stem), cpu, features);
        fs::copy(&ptx, out_dir.join(format!("flashomni_{stem}.ptx")))
            .unwrap_or_else(|err| panic!("cannot copy {}: {err}", ptx.display()));
    }
}

/// Which toolchain the device build runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Toolchain {
    /// The one `rust-toolchain.toml` pins, run by rustup's proxy.
    Pinned,
    /// The outer build's own cargo and rustc, where no rustup proxy is on PATH.
    Outer,
}

/// Runs one kernel build on the `pinned` channel of the workspace's toolchain file (if it
/// could be read) and returns the path of the PTX it wrote.
fn build_module(workspace: &Path, pinned: Option<&str>, target_dir: &Path, cpu: &str, features: &str) -> PathBuf {
    let linker = workspace.join("tools/nvptx-link.sh");
    let rustflags = [
        format!("-Ctarget-cpu={cpu}"),
        format!("-Ctarget-feature={features}"),
        format!("-Clinker={}", linker.display()),
        // Aligned barriers must not be duplicated into divergent paths (rust-lang/rust#137086).
        "-Zmir-enable-passes=-JumpThreading".to_owned(),
        // Fully unroll the fragment loops so accumulator arrays stay in registers.
        "-Cllvm-args=-unroll-threshold=2000".to_owned(),
    ]
    .join("\x1f");
    let device_build = |cargo: &OsStr, toolchain: Toolchain| {
        let mut command = Command::new(cargo);
        command
            .current_dir(workspace)
            .args(["build", "--release", "--package", "flashomni-kernels", "--lib"])
            .args(["--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core"])
            .arg("--target-dir")
            .arg(target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", &rustflags)
            .env("NVPTX_TMP", target_dir.join("link-tmp"));
        if toolchain == Toolchain::Pinned {
            for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC"] {
                command.env_remove(var);
            }
            // Named outright, so that no `rustup override` of a parent directory wins over
            // the toolchain file.
            if let Some(channel) = pinned {
                command.env("RUSTUP_TOOLCHAIN", channel);
            }
        }
        // The outer cargo's wrappers and flags are for host code, not for the device build.
        for var in [
            "RUSTC_LINKER",
            "RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CLIPPY_ARGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            command.env_remove(var);
        }
        command.status()
    };
    // `cargo` from PATH is rustup's proxy, which runs the channel `RUSTUP_TOOLCHAIN` names (or,
    // if the toolchain file could not be read, the one the file picks for the workspace). The
    // outer `CARGO` names the outer toolchain's own binary: the fallback where PATH has no cargo.
    let status = match device_build(OsStr::new("cargo"), Toolchain::Pinned) {
        Err(err) if err.kind() == ErrorKind::NotFound => match env::var_os("CARGO") {
            Some(outer) => device_build(&outer, Toolchain::Outer),
            None => Err(err),
        },
        result => result,
    };
    let status = status.unwrap_or_else(|err| panic!("cannot run cargo for the kernels: {err}"));
    if !status.success() {
        let channel = pinned.unwrap_or("<its channel>");
        panic!(
            "building the GPU kernels for {cpu} failed ({status}); see the output above. The kernels \
             build on the toolchain pinned in {}: install it with `rustup toolchain install \
             {channel} --component rust-src,llvm-tools`, or set FLASHOMNI_PTX_DIR to a folder of \
             prebuilt PTX",
            workspace.join("rust-toolchain.toml").display()
        );
    }
    target_dir.join("nvptx64-nvidia-cuda/release/flashomni_kernels.ptx")
}

/// The `channel` the toolchain file pins, if it can be read.
fn pinned_channel(toolchain_file: &Path) -> Option<String> {
    let text = fs::read_to_string(toolchain_file).ok()?;
    let line = text.lines().find(|line| line.trim_start().starts_with("channel"))?;
    Some(line.split('"').nth(1)?.to_owned())
}
