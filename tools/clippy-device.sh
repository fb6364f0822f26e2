#!/usr/bin/env bash
# clippy-device.sh: lints the device code of flashomni-kernels as the GPU sees it
# (target nvptx64-nvidia-cuda), which a host `cargo clippy` never compiles.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
CARGO_ENCODED_RUSTFLAGS="$(printf -- '-Ctarget-cpu=sm_80\x1f-Zmir-enable-passes=-JumpThreading')" \
  cargo clippy --release --package flashomni-kernels --lib --target nvptx64-nvidia-cuda -Zbuild-std=core \
  --target-dir target/nvptx-clippy -- -D warnings
