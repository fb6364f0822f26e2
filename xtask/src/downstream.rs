//! `cargo xtask downstream`: builds and runs a minimal crate that depends on `flashomni` by path,
//! on a toolchain other than the workspace's pinned nightly (stable unless
//! `FLASHOMNI_DOWNSTREAM_TOOLCHAIN` names another), the way a Rust ML stack would use it.
//!
//! This checks what the workspace's own builds cannot: that the host crate compiles on that
//! toolchain, and that its build script still builds the kernels on the pinned nightly rather
//! than on the caller's toolchain. The program creates an `Engine` and reports either the
//! device or why there is none, so it also runs on a machine without a GPU.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo::{with_driver_library, workspace_root};

/// The downstream crate's manifest; `{host}` is replaced by the path of `host/`.
const MANIFEST: &str = r#"[package]
name = "flashomni-downstream-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
flashomni = { path = "{host}" }

# Standalone: not a member of the flashomni workspace it sits in.
[workspace]
"#;

/// The downstream program: an engine on device 0, or the typed error saying why not.
const MAIN: &str = r#"fn main() {
    match flashomni::Engine::new(0) {
        Ok(engine) => println!("downstream: engine on {:?}", engine.arch()),
        Err(err) => println!("downstream: no engine here ({err})"),
    }
}
"#;

/// Writes the downstream crate under `target/downstream-check/`, then builds and runs it.
pub fn check() -> Result<()> {
    let toolchain = std::env::var("FLASHOMNI_DOWNSTREAM_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let root = workspace_root();
    let crate_dir = root.join("target/downstream-check");
    write_crate(&crate_dir, &root.join("host"))?;

    // rustup's proxy with an explicit toolchain: the crate sits inside the workspace, whose
    // toolchain file would otherwise pick the pinned nightly.
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(&crate_dir)
        .args(["run", "--quiet"])
        .env("RUSTUP_TOOLCHAIN", &toolchain)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    with_driver_library(&mut cargo);
    println!("downstream: building a crate that depends on flashomni with the {toolchain} toolchain");
    let status = cargo.status().context("running cargo for the downstream crate")?;
    if !status.success() {
        bail!("the downstream crate failed to build or run on the {toolchain} toolchain ({status})");
    }
    Ok(())
}

/// Writes the manifest and `src/main.rs` of the downstream crate into `dir`.
fn write_crate(dir: &Path, host: &Path) -> Result<()> {
    let host = host.to_str().context("the workspace path is not UTF-8")?;
    fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("Cargo.toml"), MANIFEST.replace("{host}", host)).context("writing the manifest")?;
    fs::write(dir.join("src/main.rs"), MAIN).context("writing src/main.rs")?;
    Ok(())
}
