//! `cargo xtask downstream`: builds and runs a minimal crate that depends on `flashomni` by path,
//! on a toolchain other than the workspace's pinned nightly (stable unless
//! `FLASHOMNI_DOWNSTREAM_TOOLCHAIN` names another), the way a Rust ML stack would use it.
//!
//! This checks what the workspace's own builds cannot: that the host crate compiles on that
//! toolchain, that its build script still builds the kernels on the pinned nightly rather than
//! on the caller's toolchain, and that the README's dependency example compiles (a second
//! binary, built, not run: it needs a GPU). The program that runs creates an `Engine` and
//! reports either the device or why there is none, so it also runs without a GPU.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cargo::{with_driver_library, workspace_root};

/// The downstream crate's manifest; `{root}` is replaced by the workspace path. Its
/// dependencies are the ones the README's dependency section lists.
const MANIFEST: &str = r#"[package]
name = "flashomni-downstream-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
flashomni = { path = "{root}/host" }
flashomni-symbols = { path = "{root}/symbols" }
half = "2"

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

/// The heading of the README section whose first Rust code block is the dependency example.
const README_SECTION: &str = "## Using it as a dependency";

/// Writes the downstream crate under `target/downstream-check/`, builds both of its binaries,
/// and runs the engine check.
pub fn check() -> Result<()> {
    let toolchain = std::env::var("FLASHOMNI_DOWNSTREAM_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let root = workspace_root();
    let crate_dir = root.join("target/downstream-check");
    let readme = fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    write_crate(&crate_dir, &root, &readme_example(&readme)?)?;

    println!("downstream: building a crate that depends on flashomni with the {toolchain} toolchain");
    cargo_on(&toolchain, &crate_dir, &["build", "--quiet", "--bins"])?;
    cargo_on(&toolchain, &crate_dir, &["run", "--quiet", "--bin", "flashomni-downstream-check"])
}

/// Runs cargo in `dir` on `toolchain` through rustup's proxy. The toolchain is explicit: the
/// crate sits inside the workspace, whose toolchain file would otherwise pick the pinned
/// nightly.
fn cargo_on(toolchain: &str, dir: &Path, args: &[&str]) -> Result<()> {
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(dir)
        .args(args)
        .env("RUSTUP_TOOLCHAIN", toolchain)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    with_driver_library(&mut cargo);
    let status =
        cargo.status().with_context(|| format!("running cargo {} for the downstream crate", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} of the downstream crate failed on the {toolchain} toolchain ({status})", args.join(" "));
    }
    Ok(())
}

/// The first Rust code block after the README's dependency heading.
fn readme_example(readme: &str) -> Result<String> {
    let section = readme.split_once(README_SECTION).with_context(|| format!("README.md has no `{README_SECTION}`"))?.1;
    let (_, block) = section
        .split_once("```rust")
        .with_context(|| format!("README.md has no Rust code block under `{README_SECTION}`"))?;
    let (_, body) = block.split_once('\n').context("the README's Rust code block has no body")?;
    let (code, _) = body.split_once("```").context("the README's Rust code block is not closed")?;
    Ok(code.to_owned())
}

/// Writes the manifest, `src/main.rs` and the README example (`src/bin/readme_example.rs`)
/// of the downstream crate into `dir`.
fn write_crate(dir: &Path, root: &Path, example: &str) -> Result<()> {
    let root = root.to_str().context("the workspace path is not UTF-8")?;
    fs::create_dir_all(dir.join("src/bin")).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("Cargo.toml"), MANIFEST.replace("{root}", root)).context("writing the manifest")?;
    fs::write(dir.join("src/main.rs"), MAIN).context("writing src/main.rs")?;
    fs::write(dir.join("src/bin/readme_example.rs"), example).context("writing the README example")?;
    Ok(())
}
