//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ptx`: assemble every embedded PTX module with ptxas (sm_80, sm_90a) and fail on any
//!   stack frame, spill, local memory or serialized `wgmma` in a kernel;
//! - `test`: the full test suite, what CI runs between clippy and `downstream`;
//! - `gpu-bundle`: release test and bench binaries plus run scripts in `gpu-bundle/`, for a
//!   GPU machine that has no cargo;
//! - `bench [attention] [gemm] [parallel] [options]`: build and run the benchmark on this
//!   machine's GPU (options as `flashomni-bench` takes them);
//! - `downstream`: build and run a crate that depends on `flashomni` on another toolchain
//!   (stable by default), as a user's crate would, with the README's dependency example in it.

mod bench;
mod bundle;
mod cargo;
mod downstream;
mod ptx;

use anyhow::{Result, bail};

const USAGE: &str =
    "usage: cargo xtask <ptx | test | gpu-bundle | downstream | bench [attention] [gemm] [parallel] [bench options]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else { bail!("{USAGE}") };
    match command.as_str() {
        "ptx" => ptx::check_modules(),
        "test" => test(),
        "gpu-bundle" => bundle::write_bundle().map(|_| ()),
        "bench" => bench::run(rest),
        "downstream" => downstream::check(),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// The test suite: every workspace test (GPU tests skip visibly without a GPU), then the
/// kernel resource check.
fn test() -> Result<()> {
    cargo::run(&["test", "--workspace", "--all-targets"])?;
    cargo::run(&["test", "--workspace", "--doc"])?;
    ptx::check_modules()
}
