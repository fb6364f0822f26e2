//! Reading what the host hands a kernel: `u32` arrays, packed symbol bits, and divisors the host
//! validated as nonzero. Shared by every kernel family.

use core::num::NonZeroU32;

/// A divisor the host guarantees to be nonzero, as a type whose division cannot panic.
#[inline(always)]
pub fn nonzero(divisor: u32) -> NonZeroU32 {
    NonZeroU32::new(divisor).unwrap_or(NonZeroU32::MIN)
}

/// Reads element `index` of a `u32` array at device address `address`.
///
/// # Safety
/// The array must hold at least `index + 1` readable elements.
#[inline(always)]
pub unsafe fn read_u32(address: u64, index: usize) -> u32 {
    // SAFETY: guaranteed by the caller.
    unsafe { *(address as *const u32).add(index) }
}

/// Reads bit `index` of a packed LSB-first symbol segment.
///
/// # Safety
/// `segment` must hold at least `index / 8 + 1` readable bytes.
#[inline(always)]
pub unsafe fn symbol_bit(segment: *const u8, index: u32) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { (*segment.add((index / 8) as usize) >> (index % 8)) & 1 != 0 }
}
