"""Measurement tool, not product code: which SMs share an L2 partition on this GPU.

Usage on the GPU machine (needs PyTorch and the driver's libcuda.so.1; hand-written PTX for
sm_90a, loaded through the driver API):  python3 tools/probe_l2_partitions.py OUT_DIR
Writes OUT_DIR/probe.json (mean cycles per load, per SM, for each launch below) and
OUT_DIR/shared.pt, and prints the map. docs/perf-journal.md (runs 84, 86, 87): two partitions of 66 SMs on
the H200, with a map that differs between machine starts, so probe it on the machine you use.

Launch 1 (touch): the CTAs on SM `src` read every line of R regions (one per SM).
Launch 2 (measure): one CTA per SM chases its own region (pointer chase, ld.global.cg) and
records the average latency per load. L2 partitions keep copies of the lines their SMs read,
so SMs in src's partition load the lines fast and the others pay the far latency.
Launch 3 (shared): every SM chases region 0 (warm) and records per-line latency, to
correlate near/far patterns across SMs.
"""
import ctypes, sys, json
import torch

PTX = r"""
.version 8.0
.target sm_90a
.address_size 64

.visible .entry touch(.param .u64 buf, .param .u32 nlines, .param .u32 src, .param .u64 sink)
{
  .reg .u32 %r<8>; .reg .u64 %rd<8>; .reg .pred %p<3>;
  mov.u32 %r1, %smid; ld.param.u32 %r2, [src]; setp.ne.u32 %p1, %r1, %r2; @%p1 bra DONE;
  mov.u32 %r3, %tid.x; ld.param.u32 %r4, [nlines]; ld.param.u64 %rd1, [buf];
  mov.u64 %rd5, 0;
LOOP:
  setp.ge.u32 %p2, %r3, %r4; @%p2 bra END;
  mul.wide.u32 %rd2, %r3, 128; add.u64 %rd3, %rd1, %rd2;
  ld.global.cg.u64 %rd4, [%rd3]; add.u64 %rd5, %rd5, %rd4;
  add.u32 %r3, %r3, 32; bra LOOP;
END:
  setp.eq.u64 %p2, %rd5, 12345; ld.param.u64 %rd6, [sink]; @%p2 st.global.u64 [%rd6], %rd5;
DONE:
  ret;
}

// One CTA per SM (claimed by CAS on flags[smid]) chases `count` lines starting at
// buf + region*region_bytes (region = smid if per_sm else 0). It stores the clock after
// issuing each load: the next load waits for this one's data, so successive differences
// are per-load latencies. The last address is stored too, or ptxas drops the dead chase.
.visible .entry measure(.param .u64 buf, .param .u64 flags, .param .u64 out, .param .u32 count,
                        .param .u64 region_bytes, .param .u32 per_sm)
{
  .reg .u32 %r<12>; .reg .u64 %rd<20>; .reg .pred %p<4>;
  mov.u32 %r1, %smid; mov.u32 %r2, %tid.x; setp.ne.u32 %p1, %r2, 0; @%p1 bra DONE;
  ld.param.u64 %rd1, [flags]; mul.wide.u32 %rd2, %r1, 4; add.u64 %rd3, %rd1, %rd2;
  atom.global.cas.b32 %r3, [%rd3], 0, 1; setp.ne.u32 %p2, %r3, 0; @%p2 bra DONE;
  ld.param.u64 %rd4, [buf]; ld.param.u64 %rd5, [region_bytes]; ld.param.u32 %r4, [per_sm];
  cvt.u64.u32 %rd6, %r1; setp.eq.u32 %p3, %r4, 0; @%p3 mov.u64 %rd6, 0;
  mul.lo.u64 %rd7, %rd6, %rd5; add.u64 %rd8, %rd4, %rd7;      // p = region start
  ld.param.u64 %rd9, [out]; ld.param.u32 %r5, [count];
  mul.wide.u32 %rd10, %r1, 8; mul.lo.u64 %rd10, %rd10, 4096; add.u64 %rd11, %rd9, %rd10; // out row smid (4096 u64)
  mov.u32 %r6, 0;
LOOP:
  setp.ge.u32 %p2, %r6, %r5; @%p2 bra FIN;
  ld.global.cg.u64 %rd8, [%rd8];
  mov.u64 %rd14, %clock64;
  mul.wide.u32 %rd16, %r6, 8; add.u64 %rd17, %rd11, %rd16; st.global.u64 [%rd17], %rd14;
  add.u32 %r6, %r6, 1; bra LOOP;
FIN:
  st.global.u64 [%rd11+32760], %rd8;   // row slot 4095
DONE:
  ret;
}
"""

cu = ctypes.CDLL("libcuda.so.1")
def check(r, what):
    if r != 0: raise RuntimeError(f"{what}: CUDA error {r}")
torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
ctx = ctypes.c_void_p(); check(cu.cuCtxGetCurrent(ctypes.byref(ctx)), "ctx")
if not ctx.value:
    dev = ctypes.c_int(); check(cu.cuDeviceGet(ctypes.byref(dev), 0), "dev")
    check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "retain"); check(cu.cuCtxSetCurrent(ctx), "set")
fns = {}
def load_functions(ptx, names):
    """Loads a PTX module and adds its entries `names` to `fns`."""
    mod = ctypes.c_void_p()
    check(cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(ptx.encode())), "load")
    for name in names:
        f = ctypes.c_void_p(); check(cu.cuModuleGetFunction(ctypes.byref(f), mod, name.encode()), name); fns[name] = f
load_functions(PTX, ["touch", "measure"])

def launch(name, grid, block, args, smem=0):
    holders = [(ctypes.c_uint64 if kind == "u64" else ctypes.c_uint32)(v) for kind, v in args]
    ptrs = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.byref(h), ctypes.c_void_p) for h in holders])
    check(cu.cuLaunchKernel(fns[name], grid, 1, 1, block, 1, 1, smem, None, ptrs, None), "launch " + name)
    check(cu.cuCtxSynchronize(), "sync " + name)

SMS = torch.cuda.get_device_properties(0).multi_processor_count
LINES = 512                      # lines per region (64 KiB)
REGION = LINES * 128
NREG = 160
def make_buffer(seed):
    g = torch.Generator().manual_seed(seed)
    buf = torch.zeros(NREG * LINES * 16, dtype=torch.int64, device="cuda")
    base = buf.data_ptr()
    nxt = torch.empty(NREG * LINES, dtype=torch.int64)
    for r in range(NREG):
        perm = torch.randperm(LINES, generator=g)
        order = r * LINES + perm
        nxt[order] = base + torch.roll(order, -1) * 128
    buf.view(NREG * LINES, 16)[:, 0] = nxt.cuda()
    return buf, base

out = torch.zeros(SMS * 4096, dtype=torch.int64, device="cuda")
flags = torch.zeros(SMS, dtype=torch.int32, device="cuda")
sink = torch.zeros(1, dtype=torch.int64, device="cuda")

def measure(base, per_sm):
    """Cycles of each load of every SM's chase: `[SMS, LINES - 1]`."""
    flags.zero_(); out.zero_()
    launch("measure", SMS * 8, 32, [("u64", base), ("u64", flags.data_ptr()), ("u64", out.data_ptr()),
                                    ("u32", LINES), ("u64", REGION), ("u32", per_sm)])
    return out.view(SMS, 4096)[:, :LINES].double().cpu().diff(dim=1)

def flush_l2():
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda"); flush.fill_(1); torch.cuda.synchronize(); del flush

def after_touch_by(src, seed):
    """Mean cycles per load of every SM's chase after SM `src` read every region."""
    buf, base = make_buffer(seed)
    flush_l2()
    launch("touch", SMS * 8, 32, [("u64", base), ("u32", NREG * LINES), ("u32", src), ("u64", sink.data_ptr())])
    return measure(base, 1).mean(1).tolist()

def partition_of(after):
    """0 for the SMs that load fast after the touch (the toucher's partition), 1 for the others."""
    after = torch.tensor(after)
    split = (after.min() + after.max()) / 2
    return [1 if x > split else 0 for x in after.tolist()]

def main():
    results = {}
    for src in [0, 1, 2, 7]:
        results[f"after_touch_by_{src}"] = after_touch_by(src, src)
    # Second touch by the same SM (baseline of a line in the SM's own partition copy).
    buf, base = make_buffer(99)
    for rep in range(2):
        results[f"own_region_pass{rep}"] = measure(base, 1).mean(1).tolist()
    # Every SM chases region 0 (warm), per-line latency in chase order.
    shared = torch.stack([measure(base, 0) for _ in range(3)]).median(0).values
    results["shared_region_mean"] = shared.mean(1).tolist()
    torch.save(shared, sys.argv[1] + "/shared.pt")
    json.dump(results, open(sys.argv[1] + "/probe.json", "w"))
    for k, v in results.items():
        t = torch.tensor(v)
        print(k, "min %.0f med %.0f max %.0f" % (t.min(), t.median(), t.max()))
        print("  ", " ".join("%d" % x for x in t.tolist()))
    # The map: after SM 0 read the lines, its partition's SMs load them fast (1 = the other one).
    print("partition per smid:", "".join(map(str, partition_of(results["after_touch_by_0"]))))
    # Cluster SMs by their per-line latency pattern on the shared region.
    shared = shared.float()
    print("per-line latency quantiles (all SMs):", [round(float(x)) for x in torch.quantile(shared.flatten(), torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))])
    z = (shared - shared.mean(1, keepdim=True)) / (shared.std(1, keepdim=True) + 1e-6)
    c = z @ z.T / z.shape[1]
    u, s, vh = torch.linalg.svd(c)
    print("shared-region correlation: top singular values", [round(x, 2) for x in s[:4].tolist()])
    print("component 2 sign per smid:", "".join("+" if x > 0 else "-" for x in u[:, 1].tolist()))
    print("mean corr", c.mean().item())

if __name__ == "__main__":
    main()
