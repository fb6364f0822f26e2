//! The 16-bit element types the tensor-core kernels are instantiated for.
//!
//! Each type supplies its `mma.sync` flavour and its f32 → packed-pair conversion; everything
//! else in the kernels is shared.

use core::arch::asm;

/// A 16-bit storage type with f32 accumulation on the tensor cores.
pub trait MmaElement {
    /// `acc += a · b` for one m16n8k16 tile: `a` is the row-major A fragment, `b0`/`b1` the
    /// column-major B fragment, `acc` the f32 C/D fragment.
    fn mma(acc: &mut [f32; 4], a: &[u32; 4], b0: u32, b1: u32);
    /// Rounds two f32 values to this type and packs them, `lo` in the low half.
    fn pack(lo: f32, hi: f32) -> u32;
    /// Widens a packed pair to f32 exactly: `[low half, high half]`.
    fn unpack(packed: u32) -> [f32; 2];
}

/// bfloat16.
pub struct Bf16;
/// IEEE binary16.
pub struct F16;

macro_rules! mma_element {
    ($ty:ident, $mma:literal, $cvt:literal, $unpack:path) => {
        impl MmaElement for $ty {
            #[inline(always)]
            fn mma(acc: &mut [f32; 4], a: &[u32; 4], b0: u32, b1: u32) {
                // SAFETY: register-only tensor-core arithmetic; all lanes of the warp call it.
                unsafe {
                    asm!(
                        $mma,
                        inout(reg32) acc[0], inout(reg32) acc[1],
                        inout(reg32) acc[2], inout(reg32) acc[3],
                        in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3],
                        in(reg32) b0, in(reg32) b1,
                        options(pure, nomem, nostack)
                    )
                };
            }

            #[inline(always)]
            fn pack(lo: f32, hi: f32) -> u32 {
                let r: u32;
                // SAFETY: register-only conversion.
                unsafe {
                    asm!($cvt, out(reg32) r, in(reg32) hi, in(reg32) lo,
                         options(pure, nomem, nostack))
                };
                r
            }

            #[inline(always)]
            fn unpack(packed: u32) -> [f32; 2] {
                $unpack(packed)
            }
        }
    };
}

/// Widens a bf16 pair: a bf16 is the high half of the f32 with the same value.
#[inline(always)]
fn unpack_bf16(packed: u32) -> [f32; 2] {
    [f32::from_bits(packed << 16), f32::from_bits(packed & 0xffff_0000)]
}

/// Widens an f16 pair with `cvt.f32.f16`.
#[inline(always)]
fn unpack_f16(packed: u32) -> [f32; 2] {
    let (lo, hi): (f32, f32);
    // SAFETY: register-only conversions.
    unsafe {
        asm!(
            "{{ .reg .b16 l, h; mov.b32 {{l, h}}, {2}; cvt.f32.f16 {0}, l; cvt.f32.f16 {1}, h; }}",
            out(reg32) lo, out(reg32) hi, in(reg32) packed, options(pure, nomem, nostack)
        )
    };
    [lo, hi]
}

mma_element!(
    Bf16,
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
    "cvt.rn.bf16x2.f32 {0}, {1}, {2};",
    unpack_bf16
);
mma_element!(
    F16,
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
    "cvt.rn.f16x2.f32 {0}, {1}, {2};",
    unpack_f16
);
