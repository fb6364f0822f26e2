//! Hopper (`sm_90a`) warpgroup tensor-core primitives: `wgmma.mma_async` on shared-memory
//! operands described by matrix descriptors, and the fences and waits around it.
//!
//! Operand layout: both operands are K-major tiles in the [`super::tile::Tile`] layout with
//! 8 chunks (128 bytes) per row, which is exactly the hardware's 128-byte swizzle: chunk `c`
//! of row `r` at chunk `c ^ (r % 8)`, in 1024-byte atoms of 8 rows. A descriptor names the
//! start of a 64- (A) or 128-row (B) slab; the `k16` steps inside a 64-element row advance the
//! start address by 32 bytes, and the hardware applies the swizzle to the absolute address,
//! so tiles must be 1024-byte aligned (`dyn_smem` is).
//!
//! Only compiled for `sm_90a` (the instructions do not exist elsewhere).

use core::arch::asm;

use super::element::{Bf16, F16, MmaElement};

/// The accumulators of one `m64n128` warpgroup product as a thread holds them, in the
/// `mma.sync` C-fragment order `[n64 half][n8 tile][fragment]`: thread `t` holds rows
/// `16·(t/32) + (t%32)/4` (fragments 0, 1) and 8 below (2, 3), columns
/// `64·half + 8·tile + 2·(t%4)` (+1).
pub type WarpgroupAccumulators = [[[f32; 4]; 8]; 2];

/// Bytes between consecutive 8-row core-matrix groups of a 128-byte-swizzled K-major tile.
const SWIZZLE_ATOM_BYTES: u64 = 1024;
/// Descriptor layout-type value of the 128-byte swizzle (bits 62–63).
const SWIZZLE_128B: u64 = 1;

/// The matrix descriptor of the 128-byte-swizzled K-major slab whose row 0 starts at shared
/// address `address` (1024-byte aligned; see [`advance`] for the `k16` steps).
#[inline(always)]
pub const fn descriptor(address: u32) -> u64 {
    // Start address >> 4 (bits 0–13); leading byte offset (unused by swizzled K-major
    // operands, 1 by convention; bits 16–29); stride byte offset >> 4 (bits 32–45); swizzle.
    ((address as u64 & 0x3_ffff) >> 4) | (1 << 16) | ((SWIZZLE_ATOM_BYTES >> 4) << 32) | (SWIZZLE_128B << 62)
}

/// The descriptor of the slab `bytes` (a multiple of 16) further on: only the start address
/// field moves, and it cannot carry into the next field while the address stays in shared
/// memory. `32·k` bytes is the `k`-th `k16` step along a row; whole 1024-byte atoms move
/// down the rows.
#[inline(always)]
pub const fn advance(descriptor: u64, bytes: u32) -> u64 {
    descriptor + (bytes as u64 >> 4)
}

/// The operand placeholders of a [`WarpgroupAccumulators`] set in [`asm_on_accumulators`]:
/// `{0}` … `{63}`, comma-separated.
macro_rules! accumulator_registers {
    () => {
        "{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}, {16}, {17}, {18}, {19}, {20}, {21}, {22}, {23}, {24}, {25}, {26}, {27}, {28}, {29}, {30}, {31}, {32}, {33}, {34}, {35}, {36}, {37}, {38}, {39}, {40}, {41}, {42}, {43}, {44}, {45}, {46}, {47}, {48}, {49}, {50}, {51}, {52}, {53}, {54}, {55}, {56}, {57}, {58}, {59}, {60}, {61}, {62}, {63}"
    };
}

/// `asm!($template, <the 64 accumulators of $d as inout operands 0–63>, $rest…)`: one list of
/// the accumulator operands for every instruction that reads or writes a whole set.
macro_rules! asm_on_accumulators {
    ($d:ident, $template:expr, $($rest:tt)*) => {
        asm!(
            $template,
            inout(reg32) $d[0][0][0], inout(reg32) $d[0][0][1], inout(reg32) $d[0][0][2], inout(reg32) $d[0][0][3],
            inout(reg32) $d[0][1][0], inout(reg32) $d[0][1][1], inout(reg32) $d[0][1][2], inout(reg32) $d[0][1][3],
            inout(reg32) $d[0][2][0], inout(reg32) $d[0][2][1], inout(reg32) $d[0][2][2], inout(reg32) $d[0][2][3],
            inout(reg32) $d[0][3][0], inout(reg32) $d[0][3][1], inout(reg32) $d[0][3][2], inout(reg32) $d[0][3][3],
            inout(reg32) $d[0][4][0], inout(reg32) $d[0][4][1], inout(reg32) $d[0][4][2], inout(reg32) $d[0][4][3],
            inout(reg32) $d[0][5][0], inout(reg32) $d[0][5][1], inout(reg32) $d[0][5][2], inout(reg32) $d[0][5][3],
            inout(reg32) $d[0][6][0], inout(reg32) $d[0][6][1], inout(reg32) $d[0][6][2], inout(reg32) $d[0][6][3],
            inout(reg32) $d[0][7][0], inout(reg32) $d[0][7][1], inout(reg32) $d[0][7][2], inout(reg32) $d[0][7][3],
            inout(reg32) $d[1][0][0], inout(reg32) $d[1][0][1], inout(reg32) $d[1][0][2], inout(reg32) $d[1][0][3],
            inout(reg32) $d[1][1][0], inout(reg32) $d[1][1][1], inout(reg32) $d[1][1][2], inout(reg32) $d[1][1][3],
            inout(reg32) $d[1][2][0], inout(reg32) $d[1][2][1], inout(reg32) $d[1][2][2], inout(reg32) $d[1][2][3],
            inout(reg32) $d[1][3][0], inout(reg32) $d[1][3][1], inout(reg32) $d[1][3][2], inout(reg32) $d[1][3][3],
            inout(reg32) $d[1][4][0], inout(reg32) $d[1][4][1], inout(reg32) $d[1][4][2], inout(reg32) $d[1][4][3],
            inout(reg32) $d[1][5][0], inout(reg32) $d[1][5][1], inout(reg32) $d[1][5][2], inout(reg32) $d[1][5][3],
            inout(reg32) $d[1][6][0], inout(reg32) $d[1][6][1], inout(reg32) $d[1][6][2], inout(reg32) $d[1][6][3],
            inout(reg32) $d[1][7][0], inout(reg32) $d[1][7][1], inout(reg32) $d[1][7][2], inout(reg32) $d[1][7][3],
            $($rest)*
        )
    };
}

/// Makes this thread's completed generic-proxy writes to shared memory (`st.shared`, landed
/// `cp.async` copies) visible to the async proxy that `wgmma` reads through. A barrier must
/// follow before another warp's `wgmma` reads the data.
#[inline(always)]
pub fn fence_proxy_async() {
    // SAFETY: a fence only orders memory.
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) };
}

/// `wgmma.fence`: orders the warpgroup's earlier accesses to the accumulators and shared
/// memory before the `wgmma.mma_async` instructions that follow.
#[inline(always)]
pub fn fence() {
    // SAFETY: a fence only orders accesses; all threads of the warpgroup execute it.
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack)) };
}

/// Closes the group of `wgmma.mma_async` instructions issued since the last commit.
#[inline(always)]
pub fn commit() {
    // SAFETY: committing has no other effect; all threads of the warpgroup execute it.
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack)) };
}

/// Waits until every committed `wgmma` group of the warpgroup has completed. Follow it with
/// [`pin`] on every accumulator set the groups wrote.
#[inline(always)]
pub fn wait_all() {
    // SAFETY: waiting has no other effect; all threads of the warpgroup execute it.
    unsafe { asm!("wgmma.wait_group.sync.aligned 0;", options(nostack)) };
}

/// Waits until at most one committed `wgmma` group of the warpgroup is still running: every
/// group but the newest has completed. No [`pin`] follows it, as the newest group still writes
/// the accumulators.
#[inline(always)]
pub fn wait_all_but_newest() {
    // SAFETY: waiting has no other effect; all threads of the warpgroup execute it.
    unsafe { asm!("wgmma.wait_group.sync.aligned 1;", options(nostack)) };
}

/// Tells the compiler that `d` is (re)defined here, after a [`wait_all`]: without it, a read
/// or register copy of accumulators that an in-flight `wgmma` writes could be scheduled above
/// the wait.
#[inline(always)]
pub fn pin(d: &mut WarpgroupAccumulators) {
    // SAFETY: the template is a PTX comment; it only redefines `d` for the compiler.
    unsafe { asm_on_accumulators!(d, concat!("// pinned: ", accumulator_registers!()), options(nostack)) };
}

/// A 16-bit type the warpgroup tensor cores multiply with f32 accumulation.
pub trait WgmmaElement: MmaElement {
    /// Issues (does not wait for) `d += A · Bᵀ` for one `m64n128k16` step: `a` describes the
    /// 64 × 16 A slab, `b` the 128 × 16 B slab (both K-major, 128-byte swizzled).
    ///
    /// # Safety
    /// Every thread of the warpgroup must call it together, after [`fence`]; the slabs must
    /// stay unchanged until a wait covers the group (the [`wait_all_but_newest`] after a later
    /// group's [`commit`], or [`wait_all`]), and `d` must be touched by nothing but further
    /// `wgmma` steps until [`wait_all`] and [`pin`].
    unsafe fn wgmma_m64n128k16(d: &mut WarpgroupAccumulators, a: u64, b: u64);
}

macro_rules! wgmma_element {
    ($ty:ident, $types:literal) => {
        impl WgmmaElement for $ty {
            #[inline(always)]
            unsafe fn wgmma_m64n128k16(d: &mut WarpgroupAccumulators, a: u64, b: u64) {
                // SAFETY: guaranteed by the caller.
                unsafe {
                    asm_on_accumulators!(
                        d,
                        concat!(
                            "{{ .reg .pred p; setp.ne.b32 p, {66}, 0; ",
                            "wgmma.mma_async.sync.aligned.m64n128k16.f32.",
                            $types,
                            " {{",
                            accumulator_registers!(),
                            "}}, {64}, {65}, p, 1, 1, 0, 0; }}"
                        ),
                        in(reg64) a, in(reg64) b, in(reg32) 1u32,
                        options(nostack)
                    )
                };
            }
        }
    };
}

wgmma_element!(Bf16, "bf16.bf16");
wgmma_element!(F16, "f16.f16");
