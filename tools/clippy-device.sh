#!/usr/bin/env bash
# clippy-device.sh: lints the device code of flashomni-kernels as the GPU sees it
# (target nvptx64-nvidia-cuda), which a host `cargo clippy` never compiles. Both modules are
# linted: sm_80 (portable) and sm_90a (the Hopper-only code behind `target_feature = "sm_90a"`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
for cpu in sm_80 sm_90a; do
  CARGO_ENCODED_RUSTFLAGS="$(printf -- '-Ctarget-cpu=%s\x1f-Zmir-enable-passes=-JumpThreading' "$cpu")" \
    cargo clippy --release --package flashomni-kernels --lib --target nvptx64-nvidia-cuda -Zbuild-std=core \
    --target-dir "target/nvptx-clippy/$cpu" -- -D warnings
done
