//! The sparse projections around attention: GEMM-Q and GEMM-O.
//!
//! Both compute `out = addend + A·Wᵀ` on tensor cores, with `A` `[m, k]` and `W` `[n, k]`
//! row-major (`W` as a Linear layer stores it), f32 accumulation and 16-bit storage:
//! - [`Engine::gemm_q`] (the Q projection) skips the output elements of cached (query block,
//!   head) pairs: they are neither computed nor written, so they keep what the buffer holds.
//! - [`Engine::gemm_o`] (the output projection) splits the reduction axis by head and sums
//!   either the cached heads plus the bias ([`GemmOMode::Cache`], producing the cache `C`) or
//!   the computed heads plus `C` ([`GemmOMode::Active`]). Cache followed by active mode over
//!   the same symbols is the dense projection.
//!
//! Row `r` of `A` and of the output is token `token_offset + r` of the attention sequence of
//! the symbols' request 0, in query block `(token_offset + r) / block_q`.

use cust::stream::Stream;
use flashomni_kernels::abi::{
    self, GEMM_MAX_HEADS, GEMM_O_MODE_ACTIVE, GEMM_O_MODE_CACHE, GEMM_THREADS, GEMM_TILE_K, GEMM_TILE_M, GEMM_TILE_N,
    GemmParams,
};

use crate::device_symbols::DeviceSymbols;
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{LaunchShape, launch};
use crate::memory::{DeviceView, DeviceViewMut};

/// Most CTAs a grid may have along y (row tiles).
const MAX_GRID_Y: u32 = 65_535;

/// The tensors and head layout of one GEMM-Q call (`Y = X·Wᵀ + b`, `n = heads · head_dim`).
pub struct GemmQArgs<'a, T> {
    /// Activations `X`, `[m, k]` row-major.
    pub x: DeviceView<'a, T>,
    /// Weight `W`, `[n, k]` row-major.
    pub w: DeviceView<'a, T>,
    /// Optional bias `[n]`.
    pub bias: Option<DeviceView<'a, T>>,
    /// Output `Y`, `[m, n]` row-major. Elements of cached (query block, head) pairs are not
    /// written.
    pub out: DeviceViewMut<'a, T>,
    /// Attention-sequence position of row 0 of `X` (FlashOmni's `num_text_tokens`).
    pub token_offset: u32,
    /// Heads the output columns are split into: column `c` belongs to head `c / (n / heads)`.
    pub heads: u32,
    /// Sparse symbols (only S_c of request 0 is read); `None` computes every element.
    pub symbols: Option<&'a DeviceSymbols>,
}

/// Which heads' reduction slices GEMM-O sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmOMode {
    /// `C = b + Σ_{h : S_c(qb, h) = 0} A_h·W_hᵀ`: the contribution of the cached heads, plus the
    /// bias vector. Without symbols no head is cached and `C = b`.
    Cache,
    /// `Y = C + Σ_{h : S_c(qb, h) = 1} A_h·W_hᵀ`: the computed heads, plus the cache matrix.
    /// Without symbols every head is summed (the dense projection).
    Active,
}

/// The tensors and head layout of one GEMM-O call (`k = heads · head_dim`).
pub struct GemmOArgs<'a, T> {
    /// Attention output `A`, `[m, k]` row-major, heads concatenated along a row.
    pub a: DeviceView<'a, T>,
    /// Weight `W`, `[n, k]` row-major.
    pub w: DeviceView<'a, T>,
    /// [`GemmOMode::Cache`]: optional bias vector `[n]`; [`GemmOMode::Active`]: optional cache
    /// matrix `C`, `[m, n]` row-major. `None` adds nothing.
    pub bias_or_cache: Option<DeviceView<'a, T>>,
    /// Output, `[m, n]` row-major; every element is written.
    pub out: DeviceViewMut<'a, T>,
    /// Which heads to sum.
    pub mode: GemmOMode,
    /// Attention-sequence position of row 0 of `A`; with symbols, a multiple of 128.
    pub token_offset: u32,
    /// Heads the reduction axis is split into (at most 256; `k / heads` a multiple of 64).
    pub heads: u32,
    /// Sparse symbols (only S_c of request 0 is read; `block_q` must be a multiple of 128);
    /// `None` treats every head as computed.
    pub symbols: Option<&'a DeviceSymbols>,
}

/// Fails unless a buffer holds `required` elements.
fn check_len(buffer: &'static str, actual: usize, required: u64) -> Result<()> {
    match usize::try_from(required) {
        Ok(required) if actual >= required => Ok(()),
        Ok(required) => Err(Error::BufferTooSmall { buffer, required, actual }),
        Err(_) => Err(Error::InvalidShape(format!("`{buffer}` would need {required} elements"))),
    }
}

/// Fails unless a device address is a multiple of `align` bytes.
fn check_aligned(buffer: &'static str, address: u64, align: u64) -> Result<()> {
    if !address.is_multiple_of(align) {
        return Err(Error::Misaligned {
            buffer,
            detail: format!("address {address:#x} is not a multiple of {align} bytes"),
        });
    }
    Ok(())
}

/// A buffer argument as the checks see it.
struct Buffer {
    name: &'static str,
    address: u64,
    len: usize,
}

/// Checks what both GEMMs need: rows of whole 16-byte chunks; `a` (`[m, k]`), `w` (`[n, k]`)
/// and `out` (`[m, n]`) large enough and 16-byte aligned; a grid that fits. Returns the grid.
fn check_common(a: Buffer, w: Buffer, out: Buffer, m: u32, n: u32, k: u32) -> Result<(u32, u32, u32)> {
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
    let grid = (n.div_ceil(u64::from(GEMM_TILE_N)) as u32, m.div_ceil(u64::from(GEMM_TILE_M)) as u32, 1);
    if grid.1 > MAX_GRID_Y {
        return Err(Error::InvalidShape(format!("m = {m} needs more than {MAX_GRID_Y} row tiles")));
    }
    Ok(grid)
}

/// Splits the axis `axis` of length `len` into `heads` equal heads; returns `head_dim`.
fn split_heads(axis: &str, len: u32, heads: u32) -> Result<u32> {
    if heads == 0 || len == 0 || !len.is_multiple_of(heads) {
        return Err(Error::InvalidShape(format!(
            "{axis} = {len} must be heads × head_dim with heads = {heads} ≥ 1 and head_dim ≥ 1"
        )));
    }
    Ok(len / heads)
}

/// Checks the symbols against the head count and the rows: request 0 must cover tokens
/// `token_offset .. token_offset + m`.
fn check_symbols(symbols: &DeviceSymbols, heads: u32, token_offset: u32, m: u32) -> Result<()> {
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

impl Engine {
    /// GEMM-Q, asynchronously on `stream`: `out[r, c] = bias[c] + Σ_k x[r, k]·w[c, k]` for
    /// every element whose (query block, head) pair is computed (S_c = 1), where
    /// `qb = (token_offset + r) / block_q` and `head = c / (n / heads)`. Other elements are
    /// not written.
    ///
    /// Requirements: `n = heads · head_dim` with `head_dim` a multiple of 8, `k` a multiple of
    /// 8, 16-byte aligned `x`, `w` and `out`, a 4-byte aligned bias of `n` elements; with
    /// symbols, `heads` matching them and request 0's `q_len ≥ token_offset + m`.
    pub fn gemm_q<T: Element>(&self, args: GemmQArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        let head_dim = split_heads("n", n, args.heads)?;
        if !head_dim.is_multiple_of(8) {
            return Err(Error::Unsupported(format!("GEMM-Q head_dim {head_dim} (must be a multiple of 8)")));
        }
        let grid = check_common(
            Buffer { name: "x", address: args.x.address(), len: args.x.len() },
            Buffer { name: "w", address: args.w.address(), len: args.w.len() },
            Buffer { name: "out", address: args.out.address(), len: args.out.len() },
            m,
            n,
            k,
        )?;
        if let Some(bias) = &args.bias {
            check_len("bias", bias.len(), u64::from(n))?;
            check_aligned("bias", bias.address(), 4)?;
        }
        let block_q = match args.symbols {
            Some(symbols) => {
                check_symbols(symbols, args.heads, args.token_offset, m)?;
                symbols.block_q
            }
            None => 0,
        };
        let params = GemmParams {
            a: args.x.address(),
            w: args.w.address(),
            bias: args.bias.as_ref().map_or(0, DeviceView::address),
            c: 0,
            out: args.out.address(),
            caching: args.symbols.map_or(0, |symbols| symbols.caching.view().address()),
            m,
            n,
            k,
            heads: args.heads,
            head_dim,
            token_offset: args.token_offset,
            block_q,
            mode: 0,
        };
        // SAFETY: the entry takes one `GemmParams`; every buffer was checked above against
        // the shape, and the views borrow their memory for this call (the caller keeps it
        // alive until the stream has run the launch, as with any asynchronous CUDA call).
        unsafe { self.launch_gemm(abi::gemm_q_entry(T::KIND), grid, &params, stream) }
    }

    /// GEMM-O, asynchronously on `stream`: with `D = k / heads` and `qb` the query block of
    /// the row, `out = addend + Σ_h A[:, hD..(h+1)D]·W[:, hD..(h+1)D]ᵀ` over the heads with
    /// S_c(qb, h) = 0 ([`GemmOMode::Cache`], addend = bias vector) or S_c(qb, h) = 1
    /// ([`GemmOMode::Active`], addend = `C`). Every output element is written.
    ///
    /// Requirements: `k = heads · D` with `D` a multiple of 64 and `1 ≤ heads ≤ 256`, `n` a
    /// multiple of 8, 16-byte aligned `a`, `w`, `out` and `C`, a 4-byte aligned bias; with
    /// symbols, `heads` matching them, request 0's `q_len ≥ token_offset + m`, and
    /// `token_offset` and `block_q` multiples of 128 (so a 128-row tile lies in one block).
    pub fn gemm_o<T: Element>(&self, args: GemmOArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        let head_dim = split_heads("k", k, args.heads)?;
        if args.heads > GEMM_MAX_HEADS {
            return Err(Error::Unsupported(format!("GEMM-O with {} heads (at most {GEMM_MAX_HEADS})", args.heads)));
        }
        if !head_dim.is_multiple_of(GEMM_TILE_K) {
            return Err(Error::Unsupported(format!(
                "GEMM-O head_dim {head_dim} (must be a multiple of {GEMM_TILE_K})"
            )));
        }
        let grid = check_common(
            Buffer { name: "a", address: args.a.address(), len: args.a.len() },
            Buffer { name: "w", address: args.w.address(), len: args.w.len() },
            Buffer { name: "out", address: args.out.address(), len: args.out.len() },
            m,
            n,
            k,
        )?;
        let (bias, c) = match (&args.bias_or_cache, args.mode) {
            (None, _) => (0, 0),
            (Some(bias), GemmOMode::Cache) => {
                check_len("bias_or_cache", bias.len(), u64::from(n))?;
                check_aligned("bias_or_cache", bias.address(), 4)?;
                (bias.address(), 0)
            }
            (Some(cache), GemmOMode::Active) => {
                check_len("bias_or_cache", cache.len(), u64::from(m) * u64::from(n))?;
                check_aligned("bias_or_cache", cache.address(), 16)?;
                (0, cache.address())
            }
        };
        let block_q = match args.symbols {
            Some(symbols) => {
                check_symbols(symbols, args.heads, args.token_offset, m)?;
                if !args.token_offset.is_multiple_of(GEMM_TILE_M) || !symbols.block_q.is_multiple_of(GEMM_TILE_M) {
                    return Err(Error::Unsupported(format!(
                        "GEMM-O with token_offset {} and block_q {}: both must be multiples of {GEMM_TILE_M} so \
                         that a row tile lies in one query block",
                        args.token_offset, symbols.block_q
                    )));
                }
                symbols.block_q
            }
            None => 0,
        };
        let params = GemmParams {
            a: args.a.address(),
            w: args.w.address(),
            bias,
            c,
            out: args.out.address(),
            caching: args.symbols.map_or(0, |symbols| symbols.caching.view().address()),
            m,
            n,
            k,
            heads: args.heads,
            head_dim,
            token_offset: args.token_offset,
            block_q,
            mode: match args.mode {
                GemmOMode::Cache => GEMM_O_MODE_CACHE,
                GemmOMode::Active => GEMM_O_MODE_ACTIVE,
            },
        };
        // SAFETY: as in `gemm_q`: one `GemmParams`, every buffer checked against the shape.
        unsafe { self.launch_gemm(abi::gemm_o_entry(T::KIND), grid, &params, stream) }
    }

    /// Launches a GEMM entry over `grid`.
    ///
    /// # Safety
    /// `params` must have been validated for `entry` and describe memory that stays valid
    /// until the launch completes on `stream`.
    unsafe fn launch_gemm(
        &self,
        entry: &str,
        grid: (u32, u32, u32),
        params: &GemmParams,
        stream: &Stream,
    ) -> Result<()> {
        self.make_current()?;
        let shape = LaunchShape { grid, threads: GEMM_THREADS, shared_bytes: abi::gemm_shared_bytes() };
        // SAFETY: forwarded from the caller; the entry takes one `GemmParams`.
        unsafe { launch(self.function(entry)?, shape, stream.as_inner(), params) }
    }
}
