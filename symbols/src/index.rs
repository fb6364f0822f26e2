//! Index and bit formulas shared by host code and GPU kernels.
//!
//! Everything here is `no_std`, allocation-free, `#[inline]` and `const fn`.
//! Arithmetic wraps instead of panicking: callers are expected to have validated
//! the geometry (see [`crate::SymbolGeometry::new`], which rejects shapes whose
//! bit counts do not fit in `u32`), so wrapping never happens for valid inputs.

/// Default query / KV block size in tokens (FlashOmni uses 128 everywhere).
pub const DEFAULT_BLOCK: u32 = 128;

/// Number of blocks of `block` tokens needed to cover `len` tokens: `ceil(len / block)`.
///
/// `block` must be positive; for `block == 0` this returns `0` instead of panicking.
#[inline]
#[must_use]
pub const fn blocks(len: u32, block: u32) -> u32 {
    if block == 0 { 0 } else { len.div_ceil(block) }
}

/// Logical S_c index of (query block `qb`, head `h`): `qb * heads + h`.
#[inline]
#[must_use]
pub const fn caching_index(qb: u32, h: u32, heads: u32) -> u32 {
    qb.wrapping_mul(heads).wrapping_add(h)
}

/// Logical S_s index of (query block `qb`, head `h`, KV block `kb`):
/// `(qb * heads + h) * nk + kb`, where `nk` is the request's KV block count.
#[inline]
#[must_use]
pub const fn skip_index(qb: u32, h: u32, kb: u32, heads: u32, nk: u32) -> u32 {
    caching_index(qb, h, heads).wrapping_mul(nk).wrapping_add(kb)
}

/// Bytes needed to hold `bits` packed bits: `ceil(bits / 8)`.
#[inline]
#[must_use]
pub const fn packed_len(bits: u32) -> u32 {
    bits.div_ceil(8)
}

/// Byte (within a segment) that holds logical bit `index`: `index / 8`.
#[inline]
#[must_use]
pub const fn byte_of(index: u32) -> u32 {
    index / 8
}

/// Value of logical bit `index` given the byte [`byte_of`]`(index)` that holds it
/// (LSB-first: bit `index % 8` of `byte`).
#[inline]
#[must_use]
pub const fn bit_in_byte(byte: u8, index: u32) -> bool {
    (byte >> (index % 8)) & 1 != 0
}

/// Reads logical bit `index` of one packed (LSB-first) segment.
///
/// Returns `None` if the byte holding the bit lies outside `segment`. Padding bits
/// of the last byte are readable; callers that know the logical length must
/// range-check `index` themselves.
#[inline]
#[must_use]
pub const fn read_bit(segment: &[u8], index: u32) -> Option<bool> {
    let byte = byte_of(index) as usize;
    if byte < segment.len() { Some(bit_in_byte(segment[byte], index)) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas() {
        assert_eq!(blocks(200, 128), 2);
        assert_eq!(blocks(256, 128), 2);
        assert_eq!(blocks(257, 128), 3);
        assert_eq!(blocks(0, 128), 0);
        assert_eq!(blocks(5, 0), 0);
        assert_eq!(blocks(u32::MAX, 1), u32::MAX);
        assert_eq!(caching_index(3, 1, 24), 73);
        assert_eq!(skip_index(3, 1, 2, 24, 36), 73 * 36 + 2);
        assert_eq!(packed_len(0), 0);
        assert_eq!(packed_len(1), 1);
        assert_eq!(packed_len(8), 1);
        assert_eq!(packed_len(9), 2);
        assert_eq!(packed_len(u32::MAX), 1 << 29);
    }

    #[test]
    fn read_bits_lsb_first() {
        let seg = [0b0000_0101u8, 0x80];
        let got: [Option<bool>; 17] = core::array::from_fn(|i| read_bit(&seg, i as u32));
        assert_eq!(got[0], Some(true));
        assert_eq!(got[1], Some(false));
        assert_eq!(got[2], Some(true));
        assert_eq!(got[7], Some(false));
        assert_eq!(got[14], Some(false));
        assert_eq!(got[15], Some(true));
        assert_eq!(got[16], None);
        assert_eq!(read_bit(&[], 0), None);
        assert_eq!(read_bit(&seg, u32::MAX), None);
    }
}
