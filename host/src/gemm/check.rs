//! The checks both GEMMs make before a launch: shapes, buffer sizes and alignment, the head
//! split and the symbols' coverage of the rows.

use flashomni_kernels::abi::{GEMM_TILE_N, GemmRows};

use crate::device_symbols::DeviceSymbols;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::validate::{check_aligned, check_len};

/// Most CTAs a grid may have along y (GEMM-O's row tiles).
const MAX_GRID_Y: u32 = 65_535;

/// Longest axis a GEMM may have: the `sm_90a` kernels' tensor-memory copies take signed
/// 32-bit coordinates.
const MAX_COORDINATE: u32 = i32::MAX as u32;

/// A buffer argument as the checks see it.
pub(super) struct Buffer {
    pub(super) name: &'static str,
    pub(super) address: u64,
    pub(super) len: usize,
}

/// Checks what both GEMMs need, whatever their CTA size: a reduction of whole 16-byte chunks
/// (`k ≥ 8`), rows of whole 16-byte chunks, axes of at most 2³¹ − 1 elements; `a` (`[m, k]`),
/// `w` (`[n, k]`) and `out` (`[m, n]`) large enough and 16-byte aligned.
pub(super) fn check_common(a: Buffer, w: Buffer, out: Buffer, m: u32, n: u32, k: u32) -> Result<()> {
    if k == 0 {
        return Err(Error::InvalidShape("k = 0: the reduction must have at least 8 elements".into()));
    }
    if !k.is_multiple_of(8) {
        return Err(Error::Misaligned {
            buffer: a.name,
            detail: format!("k = {k}: rows must be whole 16-byte chunks, so k must be a multiple of 8"),
        });
    }
    if !n.is_multiple_of(8) {
        return Err(Error::Misaligned {
            buffer: out.name,
            detail: format!("n = {n}: rows must be whole 16-byte chunks, so n must be a multiple of 8"),
        });
    }
    for (axis, len) in [("m", m), ("n", n), ("k", k)] {
        if len > MAX_COORDINATE {
            return Err(Error::InvalidShape(format!(
                "{axis} = {len}: tensor-memory copies address at most {MAX_COORDINATE} elements along an axis"
            )));
        }
    }
    let (m, n, k) = (u64::from(m), u64::from(n), u64::from(k));
    for (buffer, elements) in [(&a, m * k), (&w, n * k), (&out, m * n)] {
        check_len(buffer.name, buffer.len, elements)?;
        check_aligned(buffer.name, buffer.address, 16)?;
    }
    Ok(())
}

/// The grid of a launch with one CTA per `rows × GEMM_TILE_N` tile of an `m × n` output
/// (column tiles along x, row tiles along y), when it fits.
pub(super) fn tile_grid(m: u32, n: u32, rows: GemmRows) -> Result<(u32, u32, u32)> {
    let grid = (n.div_ceil(GEMM_TILE_N), m.div_ceil(rows.rows()), 1);
    if grid.1 > MAX_GRID_Y {
        return Err(Error::InvalidShape(format!(
            "m = {m} needs more than {MAX_GRID_Y} row tiles of {} rows",
            rows.rows()
        )));
    }
    Ok(grid)
}

/// Splits the axis `axis` of length `len` into `heads` equal heads; returns `head_dim`.
pub(super) fn split_heads(axis: &str, len: u32, heads: u32) -> Result<u32> {
    if heads == 0 || len == 0 || !len.is_multiple_of(heads) {
        return Err(Error::InvalidShape(format!(
            "{axis} = {len} must be heads × head_dim with heads = {heads} ≥ 1 and head_dim ≥ 1"
        )));
    }
    Ok(len / heads)
}

/// Checks the symbols against the engine, the head count and the rows: uploaded in `engine`'s
/// context, and request `request` covering tokens `token_offset .. token_offset + m`. Returns
/// the device address of that request's S_c segment, which the kernels read.
pub(super) fn check_symbols(
    engine: &Engine,
    symbols: &DeviceSymbols,
    heads: u32,
    (request, token_offset): (u32, u32),
    m: u32,
) -> Result<u64> {
    symbols.check_context(engine)?;
    if symbols.heads != heads {
        return Err(Error::InvalidShape(format!("symbols are for {} heads, the GEMM has {heads}", symbols.heads)));
    }
    let Some(shape) = symbols.requests.get(request as usize) else {
        return Err(Error::InvalidShape(format!(
            "the GEMM reads request {request} of symbols that describe {} requests",
            symbols.requests.len()
        )));
    };
    let end = u64::from(token_offset) + u64::from(m);
    if u64::from(shape.q_len) < end {
        return Err(Error::InvalidShape(format!(
            "rows cover tokens {token_offset}..{end} but the symbols' request {request} has q_len {}",
            shape.q_len
        )));
    }
    Ok(symbols.caching_segment(request)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_reduction_is_rejected() {
        let buffer = |name| Buffer { name, address: 0, len: 1 << 20 };
        let err = check_common(buffer("x"), buffer("w"), buffer("out"), 128, 128, 0).unwrap_err();
        assert!(matches!(err, Error::InvalidShape(ref text) if text.contains("k = 0")), "{err}");
        check_common(buffer("x"), buffer("w"), buffer("out"), 0, 128, 64).unwrap();
        assert_eq!(tile_grid(0, 128, GemmRows::Rows128).unwrap(), (1, 0, 1), "no rows: an empty grid");
    }

    #[test]
    fn row_tiles_past_the_grid_limit_are_rejected() {
        assert_eq!(tile_grid(65_535 * 64, 8, GemmRows::Rows64).unwrap(), (1, 65_535, 1));
        let err = tile_grid(65_535 * 64 + 1, 8, GemmRows::Rows64).unwrap_err();
        assert!(matches!(err, Error::InvalidShape(ref text) if text.contains("row tiles")), "{err}");
        assert_eq!(tile_grid(65_535 * 128, 8, GemmRows::Rows128).unwrap().1, 65_535);
    }
}
