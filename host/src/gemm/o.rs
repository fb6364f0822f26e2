//! GEMM-O's launcher: the CTA size, the choice between the per-tile kernels and the
//! persistent one, the addend (bias or cache matrix), then one launch.

use cust::stream::Stream;
use flashomni_kernels::abi::{
    self, GEMM_MAX_HEADS, GEMM_O_MODE_ACTIVE, GEMM_O_MODE_CACHE, GEMM_O_WIDE_THREADS, GEMM_TILE_K, GemmParams,
    GemmRows, GemmTensorMaps,
};

use super::args::{GemmOArgs, GemmOMode};
use super::check::{Buffer, check_common, check_symbols, split_heads, tile_grid};
use super::launch::per_tile_shape;
use super::plan::{gemm_o_persistent, gemm_o_rows, wide_tiles};
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::LaunchShape;
use crate::module::Arch;
use crate::validate::{check_aligned, check_len};

impl Engine {
    /// GEMM-O, asynchronously on `stream`: with `D = k / heads` and `qb` the query block of
    /// the row, `out = addend + Σ_h A[:, hD..(h+1)D]·W[:, hD..(h+1)D]ᵀ` over the heads with
    /// S_c(qb, h) = 0 ([`GemmOMode::Cache`], addend = bias vector) or S_c(qb, h) = 1
    /// ([`GemmOMode::Active`], addend = `C`). Every output element is written.
    ///
    /// Requirements: `k = heads · D` with `D` a multiple of 64 and `1 ≤ heads ≤ 256`, `n` a
    /// multiple of 8, 16-byte aligned `a`, `w`, `out` and `C`, a 4-byte aligned bias; with
    /// symbols, `heads` matching them, request `args.request` of at least `token_offset + m`
    /// query tokens, and `token_offset` and `block_q` multiples of the CTA rows (so a row tile
    /// lies in one block): 64 always works, 128 is needed only to force [`GemmRows::Rows128`].
    pub fn gemm_o<T: Element>(&self, args: GemmOArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        self.make_current()?;
        let head_dim = split_heads("k", k, args.heads)?;
        if args.heads > GEMM_MAX_HEADS {
            return Err(Error::Unsupported(format!("GEMM-O with {} heads (at most {GEMM_MAX_HEADS})", args.heads)));
        }
        if let Some(workspace) = &args.workspace {
            workspace.check_context(self)?;
        }
        if !head_dim.is_multiple_of(GEMM_TILE_K) {
            return Err(Error::Unsupported(format!(
                "GEMM-O head_dim {head_dim} (must be a multiple of {GEMM_TILE_K})"
            )));
        }
        let rows = args.tile_rows.unwrap_or_else(|| {
            if args.persistent == Some(true) {
                // The persistent kernel has 128-row CTAs only.
                return GemmRows::Rows128;
            }
            let large_allowed = args.symbols.is_none_or(|symbols| {
                let large = GemmRows::Rows128.rows();
                args.token_offset.is_multiple_of(large) && symbols.block_q.is_multiple_of(large)
            });
            gemm_o_rows(m, n, large_allowed, self.multiprocessors())
        });
        let persistent = match (args.persistent, args.workspace.is_some()) {
            (Some(true), false) => {
                return Err(Error::InvalidShape("the persistent GEMM-O needs a workspace".into()));
            }
            (Some(true), true) if self.arch() != Arch::Sm90a || rows != GemmRows::Rows128 => {
                return Err(Error::Unsupported(format!(
                    "the persistent GEMM-O on the {:?} module with {rows:?} CTAs (it needs Sm90a and Rows128)",
                    self.arch()
                )));
            }
            (Some(forced), _) => forced,
            (None, false) => false,
            (None, true) => {
                let computed = args.symbols.and_then(|symbols| symbols.computed_fraction(args.request)).unwrap_or(1.0);
                let summed = match args.mode {
                    GemmOMode::Active => computed,
                    GemmOMode::Cache => 1.0 - computed,
                };
                gemm_o_persistent(self.arch(), rows, m, n, summed, self.multiprocessors())
            }
        };
        check_common(
            Buffer { name: "a", address: args.a.address(), len: args.a.len() },
            Buffer { name: "w", address: args.w.address(), len: args.w.len() },
            Buffer { name: "out", address: args.out.address(), len: args.out.len() },
            m,
            n,
            k,
        )?;
        let grid = tile_grid(m, n, rows)?;
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
        let (caching, block_q) = match args.symbols {
            Some(symbols) => {
                let caching = check_symbols(self, symbols, args.heads, (args.request, args.token_offset), m)?;
                let tile = rows.rows();
                if !args.token_offset.is_multiple_of(tile) || !symbols.block_q.is_multiple_of(tile) {
                    return Err(Error::Unsupported(format!(
                        "GEMM-O with token_offset {} and block_q {}: both must be multiples of the {tile}-row \
                         tile so that a row tile lies in one query block",
                        args.token_offset, symbols.block_q
                    )));
                }
                (caching, symbols.block_q)
            }
            None => (0, 0),
        };
        let params = GemmParams {
            // Encoded from the fields below by `launch_gemm`.
            maps: GemmTensorMaps::default(),
            a: args.a.address(),
            w: args.w.address(),
            bias,
            c,
            out: args.out.address(),
            caching,
            tiles: 0,
            partials: 0,
            arrivals: match args.workspace {
                Some(workspace) if persistent => workspace.tile_counters(),
                _ => 0,
            },
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
            split_first: 0,
            splits: 0,
            items: 0,
        };
        let (entry, shape) = if persistent {
            let ctas = wide_tiles(m, n).min(u64::from(self.multiprocessors())) as u32;
            let shape = LaunchShape {
                grid: (ctas, 1, 1),
                threads: GEMM_O_WIDE_THREADS,
                shared_bytes: abi::gemm_o_wide_shared_bytes(),
                cluster: 1,
            };
            (abi::gemm_o_wide_entry(T::KIND), shape)
        } else {
            (abi::gemm_o_entry(T::KIND, rows), per_tile_shape(grid, rows, 1))
        };
        // SAFETY: as in `gemm_q`: one `GemmParams`, every buffer checked against the shape.
        unsafe { self.launch_gemm(entry, rows, shape, params, stream) }
    }
}
