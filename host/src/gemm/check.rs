//! The checks both GEMMs make before a launch: shapes, buffer sizes and alignment, the head
//! split and the symbols' coverage of the rows.

use flashomni_kernels::abi::{GEMM_TILE_N, GemmRows};

use crate::device_symbols::DeviceSymbols;
use crate::error::{Error, Result};
use crate::validate::{check_aligned, check_len};

/// Most CTAs a grid may have along y (row tiles).
const MAX_GRID_Y: u32 = 65_535;

/// A buffer argument as the checks see it.
pub(super) struct Buffer {
    pub(super) name: &'static str,
    pub(super) address: u64,
    pub(super) len: usize,
}

/// Checks what both GEMMs need: a reduction of whole 16-byte chunks (`k ≥ 8`), rows of whole
/// 16-byte chunks; `a` (`[m, k]`), `w` (`[n, k]`) and `out` (`[m, n]`) large enough and
/// 16-byte aligned; a grid of `rows`-row tiles that fits. Returns the grid.
pub(super) fn check_common(
    a: Buffer,
    w: Buffer,
    out: Buffer,
    m: u32,
    n: u32,
    k: u32,
    rows: GemmRows,
) -> Result<(u32, u32, u32)> {
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
    let (m, n, k) = (u64::from(m), u64::from(n), u64::from(k));
    for (buffer, elements) in [(&a, m * k), (&w, n * k), (&out, m * n)] {
        check_len(buffer.name, buffer.len, elements)?;
        check_aligned(buffer.name, buffer.address, 16)?;
    }
    let grid = (n.div_ceil(u64::from(GEMM_TILE_N)) as u32, m.div_ceil(u64::from(rows.rows())) as u32, 1);
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

/// Checks the symbols against the head count and the rows: request 0 must cover tokens
/// `token_offset .. token_offset + m`.
pub(super) fn check_symbols(symbols: &DeviceSymbols, heads: u32, token_offset: u32, m: u32) -> Result<()> {
    if symbols.heads != heads {
        return Err(Error::InvalidShape(format!("symbols are for {} heads, the GEMM has {heads}", symbols.heads)));
    }
    let Some(request) = symbols.requests.first() else {
        return Err(Error::InvalidShape("the symbols describe no request".into()));
    };
    let end = u64::from(token_offset) + u64::from(m);
    if u64::from(request.q_len) < end {
        return Err(Error::InvalidShape(format!(
            "rows cover tokens {token_offset}..{end} but the symbols' request 0 has q_len {}",
            request.q_len
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_reduction_is_rejected() {
        let buffer = |name| Buffer { name, address: 0, len: 1 << 20 };
        let err = check_common(buffer("x"), buffer("w"), buffer("out"), 128, 128, 0, GemmRows::Rows128).unwrap_err();
        assert!(matches!(err, Error::InvalidShape(ref text) if text.contains("k = 0")), "{err}");
        let grid = check_common(buffer("x"), buffer("w"), buffer("out"), 0, 128, 64, GemmRows::Rows128);
        assert_eq!(grid.unwrap(), (1, 0, 1), "no rows: an empty grid, which launches nothing");
    }
}
