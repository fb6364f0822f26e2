"""Measurement tool, not product code: do the CTAs of one thread-block cluster run on SMs of
one L2 partition?

Usage on the GPU machine (PyTorch, the driver's libcuda.so.1, sm_90):
    python3 tools/probe_clusters.py
Measures the SM-to-partition map twice with tools/probe_l2_partitions.py (after SM 0 read a
set of lines, the SMs of its partition load them fast), then launches kernels declared with
`.reqnctapercluster N` (N = 2, 4, 8; one and two CTAs per SM, forced by dynamic shared
memory) that record each CTA's `%smid`, and counts the clusters whose SMs lie in both
partitions. docs/perf-journal.md, run 89: none on the H200, which is why GEMM-Q's clusters keep the
two tiles of a row block of X on one side of the L2.
"""
import collections, os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_l2_partitions as probe

CLUSTER_SIZES = (2, 4, 8)
# Each CTA's thread 0 stores %smid at out[ctaid] and spins a while, so that the CTAs of a
# launch are resident together and the hardware has to place every cluster at once.
CLUSTER_PTX = ".version 8.0\n.target sm_90a\n.address_size 64\n" + "".join(r"""
.visible .entry cluster%d(.param .u64 out) .explicitcluster .reqnctapercluster %d, 1, 1
{
  .reg .u32 %%r<4>; .reg .u64 %%rd<5>; .reg .pred %%p<2>;
  mov.u32 %%r1, %%tid.x; setp.ne.u32 %%p1, %%r1, 0; @%%p1 bra DONE;
  mov.u32 %%r2, %%smid; mov.u32 %%r3, %%ctaid.x; ld.param.u64 %%rd1, [out];
  mul.wide.u32 %%rd2, %%r3, 4; add.u64 %%rd3, %%rd1, %%rd2; st.global.u32 [%%rd3], %%r2;
  mov.u64 %%rd4, 0;
SPIN:
  add.u64 %%rd4, %%rd4, 1; setp.lt.u64 %%p1, %%rd4, 200000; @%%p1 bra SPIN;
DONE:
  ret;
}
""" % (n, n) for n in CLUSTER_SIZES)

MAX_DYNAMIC_SHARED_SIZE_BYTES = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

def main():
    maps = [probe.partition_of(probe.after_touch_by(0, 7)) for _ in range(2)]
    part = maps[0]
    print("map stable across two probes:", maps[0] == maps[1], "group sizes", dict(collections.Counter(part)))
    print("partition per smid:", "".join(map(str, part)))
    probe.load_functions(CLUSTER_PTX, [f"cluster{n}" for n in CLUSTER_SIZES])
    for n in CLUSTER_SIZES:
        name = f"cluster{n}"
        for ctas_per_sm, smem in ((1, 150 << 10), (2, 100 << 10)):
            probe.check(probe.cu.cuFuncSetAttribute(probe.fns[name], MAX_DYNAMIC_SHARED_SIZE_BYTES, smem), "attribute")
            grid = probe.SMS * ctas_per_sm // n * n
            smids = torch.full((grid,), -1, dtype=torch.int32, device="cuda")
            probe.launch(name, grid, 128, [("u64", smids.data_ptr())], smem)
            smids = smids.cpu().tolist()
            clusters = [smids[i:i + n] for i in range(0, grid, n)]
            mixed = sum(1 for cluster in clusters if len({part[sm] for sm in cluster}) > 1)
            print(f"cluster {n}, {ctas_per_sm} CTA/SM ({grid} CTAs): clusters spanning both partitions "
                  f"{mixed}/{len(clusters)}, SMs used {len(set(smids))}")

if __name__ == "__main__":
    main()
