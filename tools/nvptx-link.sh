#!/usr/bin/env bash
# nvptx-link.sh: the "linker" rustc calls for the nvptx64-nvidia-cuda cdylib.
#
# rustc's own `llvm-bitcode-linker` component is not available from our toolchain mirror, so this
# script plays its role: the rlibs and object files rustc hands us hold LLVM bitcode; we link them
# into one module with `llvm-link`, mark its warp-collective inline asm convergent (below),
# internalize everything except the exported kernel entries, optimize with `opt`, and lower to
# PTX with `llc`. The result is one self-contained PTX module.
#
# Knobs (environment): NVPTX_TMP (scratch root), NVPTX_KEEP=1 (keep scratch), NVPTX_LLC_FLAGS.
set -euo pipefail

rustc_bin="${RUSTC:-rustc}"
host_triple="$("$rustc_bin" -vV | sed -n 's/^host: //p')"
llvm_bin="${LLVM_BIN:-$("$rustc_bin" --print sysroot)/lib/rustlib/$host_triple/bin}"

exports=()
inputs=()
out=""
cpu="sm_80"
features=""
opt_level="-O3"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --export-symbol) exports+=("$2"); shift 2 ;;
    -o) out="$2"; shift 2 ;;
    --target-cpu) cpu="$2"; shift 2 ;;
    --target-feature=*) features="${1#--target-feature=}"; shift ;;
    --target-feature) features="$2"; shift 2 ;;
    --target | -L) shift 2 ;;
    -O0 | -O1 | -O2 | -O3) opt_level="$1"; shift ;;
    -Os | -Oz) opt_level="-O2"; shift ;;
    --debug) shift ;;
    -*) echo "nvptx-link: ignoring flag $1" >&2; shift ;;
    *) inputs+=("$1"); shift ;;
  esac
done
[[ -n "$out" ]] || { echo "nvptx-link: no output path (-o) given" >&2; exit 2; }

scratch_root="${NVPTX_TMP:-${TMPDIR:-/tmp}}"
mkdir -p "$scratch_root"
scratch="$(mktemp -d -p "$scratch_root" nvptx-link.XXXXXX)"
if [[ "${NVPTX_KEEP:-0}" == 1 ]]; then
  echo "nvptx-link: keeping $scratch" >&2
else
  trap 'rm -rf "$scratch"' EXIT
fi

is_bitcode() { [[ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" == "4243c0de" ]]; }

bitcode=()
archive=0
for input in "${inputs[@]}"; do
  case "$input" in
    *.rlib | *.a)
      dir="$scratch/archive$archive"
      archive=$((archive + 1))
      mkdir -p "$dir"
      (cd "$dir" && "$llvm_bin/llvm-ar" x "$input")
      for member in "$dir"/*; do
        if is_bitcode "$member"; then bitcode+=("$member"); fi
      done
      ;;
    *) bitcode+=("$input") ;;
  esac
done

"$llvm_bin/llvm-link" "${bitcode[@]}" -o "$scratch/linked.bc"

# Inline asm that every thread of a warp (or CTA) must execute together is convergent, as clang
# makes all inline asm when it compiles CUDA. rustc marks no `asm!` so, and without the attribute
# LLVM may duplicate such a call into divergent paths, sink it into a branch or speculate it out
# of one (docs/perf-journal.md, runs 153-155: a jump-threaded `bar.sync` hung a kernel). PTX names these
# instructions itself: `.sync` (`bar.sync`, `shfl.sync`, `vote.sync`, `mma.sync`, `ldmatrix.sync`,
# `wgmma.*.sync`, `setmaxnreg.*.sync`) or `.aligned`; `bar.arrive` and `bar.red` are aligned
# too. Per-thread asm (copies, `mbarrier`s, loads and stores, conversions) stays unmarked, so
# LLVM may still unroll the one-lane copy loops that hold it (marking everything cost the
# persistent GEMM-O 3%, run 159). One call per line; its function attributes close the line,
# before the metadata attachments. A call left unmarked stops the build.
"$llvm_bin/llvm-dis" "$scratch/linked.bc" -o "$scratch/linked.ll"
collective_asm=' call .* asm (sideeffect )?"([^"]*\.(sync|aligned)[^a-z0-9_]|([^"]*[^"a-z.])?bar\.)'
sed -E "/$collective_asm/s/^(.*)\) (#[0-9]+)((, ![a-z.]+ ![0-9]+)*)\$/\1) convergent \2\3/" \
  "$scratch/linked.ll" > "$scratch/convergent.ll"
collective="$(grep -cE "$collective_asm" "$scratch/convergent.ll" || true)"
marked="$(grep -cE "$collective_asm.*\\) convergent #[0-9]+" "$scratch/convergent.ll" || true)"
if [[ "$collective" == 0 || "$collective" != "$marked" ]]; then
  # Every module holds tensor-core asm, so finding none means the pattern no longer matches.
  echo "nvptx-link: marked $marked of $collective warp-collective inline-asm calls convergent" >&2
  exit 1
fi

public_api="$(IFS=,; echo "${exports[*]}")"
"$llvm_bin/opt" "$scratch/convergent.ll" -o "$scratch/optimized.bc" \
  --internalize-public-api-list="$public_api" \
  -passes="internalize,globaldce,default<${opt_level#-}>" \
  -mtriple=nvptx64-nvidia-cuda -mcpu="$cpu" -mattr="$features"
# shellcheck disable=SC2086 # NVPTX_LLC_FLAGS is a list of flags.
"$llvm_bin/llc" "$scratch/optimized.bc" -o "$out" \
  -mtriple=nvptx64-nvidia-cuda -mcpu="$cpu" -mattr="$features" "$opt_level" ${NVPTX_LLC_FLAGS:-}

# The GEMM entries carry CUDA tensor maps in their parameter, which must be 64-byte aligned;
# rustc's NVPTX calling convention caps a parameter's alignment at 16, so declare it here (the
# maps sit at 64-byte multiples inside the struct; tests/tests/ptx_abi.rs checks the result).
sed -i -E 's/^([[:space:]]*\.param \.align )[0-9]+( \.b8 flashomni_gemm_[A-Za-z0-9_]+_param_0\[)/\164\2/' "$out"

# A module that still needs symbols from elsewhere cannot be loaded by the driver.
if grep -nE '^\.extern[[:space:]]+\.(func|global|const)' "$out" >&2; then
  echo "nvptx-link: unresolved external symbols in $out" >&2
  exit 1
fi

# The wide GEMM-O entries run 384 threads (two consumer warpgroups and a producer warpgroup that
# hands its registers to them with setmaxnreg): declare the block size so that ptxas starts
# from 168 registers per thread.
sed -i -E 's/^\)([[:space:]]*\/\/ @flashomni_gemm_o_[a-z0-9]+_wide)$/) .maxntid 384, 1, 1\1/' "$out"
