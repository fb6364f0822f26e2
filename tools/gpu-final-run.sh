#!/usr/bin/env bash
# gpu-final-run.sh: the whole GPU check in one call of a GPU machine without cargo, run from
# gpu-bundle/ (`cargo xtask gpu-bundle` writes it; copy this script beside it): every test with
# FLASHOMNI_REQUIRE_GPU=1, compute-sanitizer on representative tests, shared-memory bank
# conflicts of the kernels (ncu), and the full benchmark with the anchors. Logs go to $OUT.
set -uo pipefail
out="${OUT:-.}"
if [[ -z "${FLASHOMNI_NCCL_LIB:-}" ]]; then
  FLASHOMNI_NCCL_LIB="$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)/lib"
  export FLASHOMNI_NCCL_LIB
fi
echo "=== tests"
timeout 240 ./run-tests.sh > "$out/tests.log" 2>&1
grep -E "FAILED|panicked|^SKIPPED" "$out/tests.log" | head -8
tail -1 "$out/tests.log"
echo "=== compute-sanitizer"
for case in "attention_gpu rows_with_every" "attention_gpu full_sizes" "gemm_gpu gemm_q_mixed" "gemm_gpu gemm_q_split" \
            "gemm_gpu gemm_o_ctas_walking" "gemm_gpu gemm_larger" "gemm_gpu gemm_batch_calls" \
            "parallel_gpu single_rank_matches"; do
  set -- $case
  for tool in memcheck racecheck synccheck; do
    extra=(); [[ $tool == memcheck ]] && extra=(--report-api-errors no)
    printf '%-14s %-36s ' "$tool" "$1 $2"
    timeout 150 compute-sanitizer --tool "$tool" "${extra[@]}" "./tests/$1" "$2" 2>&1 | grep -E "ERROR SUMMARY|RACECHECK SUMMARY" | tr -d '\n'
    echo
  done
done
echo "=== shared-memory bank conflicts (ncu, one launch each)"
metrics=l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,smsp__inst_executed_op_ldsm.sum
for kernel in attention gemm_q gemm_o; do
  op=attention; [[ $kernel == gemm* ]] && op=gemm
  timeout 120 ncu --clock-control none --metrics "$metrics" -k "regex:flashomni_$kernel" -c 1 \
    ./flashomni-bench "$op" --n 4608 --iters 1 --warmup 0 --out /dev/null 2>&1 | grep -E "flashomni_|bank|wavefronts|ldsm"
done
echo "=== bench"
timeout 420 ./run-bench.sh attention gemm parallel --out "$out/bench.jsonl" --iters 20 2>&1 | grep -v "^bench:"
