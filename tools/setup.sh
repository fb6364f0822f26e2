#!/usr/bin/env bash
# setup.sh: installs what building and checking flashomni needs on a fresh Debian/Ubuntu machine.
#
# - the pinned Rust toolchain (rust-toolchain.toml) with its components, through rustup;
# - ptxas 13.0 from PyPI (nvidia-cuda-nvcc), for `cargo xtask ptx`, into .tools/ptxas;
# - a libcuda to link against where no CUDA driver is installed, into .tools/cuda/lib64
#   (Debian's non-free libcuda1; at run time without a GPU, cuInit then fails cleanly).
# Idempotent: what is already there is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "setup: rust toolchain"
rustup toolchain install --no-self-update 2>&1 | tail -n 2 || rustup show active-toolchain

if [[ ! -x .tools/ptxas/nvidia/cu13/bin/ptxas ]]; then
  echo "setup: ptxas (nvidia-cuda-nvcc==13.0.88)"
  mkdir -p .tools/ptxas
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    nvidia-cuda-nvcc==13.0.88 -d .tools/ptxas
  (cd .tools/ptxas && python3 -m zipfile -e nvidia_cuda_nvcc-*.whl . && chmod +x nvidia/cu13/bin/ptxas)
fi

if [[ ! -e .tools/cuda/lib64/libcuda.so && ! -e /usr/local/cuda/lib64/libcuda.so ]]; then
  echo "setup: libcuda to link against (Debian non-free libcuda1)"
  sources=/etc/apt/sources.list.d/flashomni-nonfree.sources
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  if [[ ! -e "$sources" ]]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$codename" > "$sources"
  fi
  apt-get update -qq -o Dir::Etc::sourcelist="$sources" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
  scratch="$(mktemp -d)"
  (cd "$scratch" && apt-get download -qq libcuda1 2>/dev/null && dpkg -x libcuda1_*.deb extracted)
  library="$(find "$scratch/extracted" -name 'libcuda.so.*.*' | head -n 1)"
  [[ -n "$library" ]] || { echo "setup: libcuda1 package had no libcuda.so" >&2; exit 1; }
  mkdir -p .tools/cuda/lib64
  cp "$library" .tools/cuda/lib64/libcuda.so
  cp "$library" .tools/cuda/lib64/libcuda.so.1
  rm -rf "$scratch"
fi
echo "setup: done"
