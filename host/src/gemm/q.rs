//! GEMM-Q's launcher: the tile list of the working (query block, head) tiles, the CTA size,
//! the split-K plan and the clusters, then one launch.

use cust::stream::Stream;
use flashomni_kernels::abi::{
    self, GEMM_MAX_SPLITS, GEMM_Q_CLUSTER, GEMM_TILE_N, GemmParams, GemmRows, GemmTensorMaps,
};
use flashomni_symbols::read_bit;

use super::args::GemmQArgs;
use super::check::{Buffer, check_common, check_symbols, split_heads};
use super::launch::per_tile_shape;
use super::plan::{GemmQTiles, gemm_q_auto_split, gemm_q_clustered, gemm_q_rows, output_tiles, small_cta_wave};
use crate::device_symbols::{DeviceSymbols, GemmTileShape};
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::memory::DeviceView;
use crate::module::Arch;
use crate::validate::{check_aligned, check_len};

/// Most CTAs a grid may have along x (GEMM-Q's work items).
const MAX_GRID_X: u64 = (1 << 31) - 1;

/// GEMM-Q's tile list for `shape`: (column tile, row tile) pairs, row-major, of the tiles with
/// at least one computed (query block, head) pair in the request's S_c `segment` (the same test
/// the kernel makes before loading anything).
fn active_tiles(segment: &[u8], shape: GemmTileShape, heads: u32, block_q: u32) -> Vec<u32> {
    let computed = |index: u32| read_bit(segment, index) == Some(true);
    let mut tiles = Vec::new();
    for row_tile in 0..shape.m.div_ceil(shape.tile_rows) {
        let m0 = row_tile * shape.tile_rows;
        let first = shape.token_offset + m0;
        let last = first + (shape.m - m0).min(shape.tile_rows) - 1;
        for column_tile in 0..shape.n.div_ceil(GEMM_TILE_N) {
            let n0 = column_tile * GEMM_TILE_N;
            let (head_first, head_last) =
                (n0 / shape.head_dim, (n0 + (shape.n - n0).min(GEMM_TILE_N) - 1) / shape.head_dim);
            let active = (first / block_q..=last / block_q)
                .any(|qb| (head_first..=head_last).any(|head| computed(qb * heads + head)));
            if active {
                tiles.extend([column_tile, row_tile]);
            }
        }
    }
    tiles
}

impl Engine {
    /// GEMM-Q, asynchronously on `stream`: `out[r, c] = bias[c] + Σ_k x[r, k]·w[c, k]` for
    /// every element whose (query block, head) pair is computed (S_c = 1), where
    /// `qb = (token_offset + r) / block_q` and `head = c / (n / heads)`. Other elements are
    /// not written.
    ///
    /// Requirements: `n = heads · head_dim` with `head_dim` a multiple of 8, `k` a multiple of
    /// 8, 16-byte aligned `x`, `w` and `out`, a 4-byte aligned bias of `n` elements; with
    /// symbols, `heads` matching them and request `args.request` of at least
    /// `token_offset + m` query tokens; forced clusters (`clustered: Some(true)`) only with the
    /// `sm_90a` module and a CUDA 12 driver.
    pub fn gemm_q<T: Element>(&self, args: GemmQArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        // The tile list below is allocated in the current context: make it this engine's.
        self.make_current()?;
        let head_dim = split_heads("n", n, args.heads)?;
        if !head_dim.is_multiple_of(8) {
            return Err(Error::Unsupported(format!("GEMM-Q head_dim {head_dim} (must be a multiple of 8)")));
        }
        let caching = match args.symbols {
            Some(symbols) => check_symbols(self, symbols, args.heads, (args.request, args.token_offset), m)?,
            None => 0,
        };
        if let Some(workspace) = &args.workspace {
            workspace.check_context(self)?;
        }
        // Checks that do not depend on the CTA size come first: no tile list is built for a
        // call that fails.
        check_common(
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
        let tile_shape = |rows: GemmRows| GemmTileShape {
            request: args.request,
            token_offset: args.token_offset,
            m,
            n,
            head_dim,
            tile_rows: rows.rows(),
        };
        let count_items = |rows| with_work_items(args.symbols, args.heads, tile_shape(rows), |_, count| Ok(count));
        let rows = match args.tile_rows {
            Some(rows) => rows,
            None => {
                let large = count_items(GemmRows::Rows128)?;
                // Every working 128-row tile holds a working 64-row half, so 128-row tiles
                // that alone overflow a wave of 64-row CTAs settle the rule's one question
                // about the 64-row ones: their list is neither built nor uploaded then.
                let small =
                    if large > small_cta_wave(self.multiprocessors()) { large } else { count_items(GemmRows::Rows64)? };
                let working = GemmQTiles { large, small };
                gemm_q_rows(self.arch(), working, self.multiprocessors(), args.workspace.is_some().then_some(k))
            }
        };
        // The launch is enqueued while the symbols' tile lists are locked (see
        // `DeviceSymbols::with_gemm_q_tiles`).
        let (symbols, heads, shape) = (args.symbols, args.heads, tile_shape(rows));
        with_work_items(symbols, heads, shape, |tiles, count| {
            let count = u32::try_from(count)
                .map_err(|_| Error::InvalidShape(format!("GEMM-Q with {count} tiles of {rows:?}")))?;
            self.launch_gemm_q(args, (m, n, k), head_dim, rows, (caching, tiles, count), stream)
        })
    }

    /// Plans the split and the clusters of a GEMM-Q launch of `rows`-row CTAs over the work
    /// items `(tiles, count)` (a tile list's device address, 0 for none, and its length),
    /// and launches it with `caching`, the device address of the request's S_c segment (0
    /// without symbols). `args` and the shape were checked by `gemm_q`.
    fn launch_gemm_q<T: Element>(
        &self,
        args: GemmQArgs<'_, T>,
        (m, n, k): (u32, u32, u32),
        head_dim: u32,
        rows: GemmRows,
        (caching, tiles, count): (u64, u64, u32),
        stream: &Stream,
    ) -> Result<()> {
        let block_q = args.symbols.map_or(0, |symbols| symbols.block_q);
        let split = match (args.split, &args.workspace) {
            (Some(_), None) => {
                return Err(Error::InvalidShape("a forced GEMM-Q split needs a workspace".into()));
            }
            (Some(split), Some(_)) => Some(split),
            (None, Some(_)) => gemm_q_auto_split(self.arch(), count, k, rows, self.multiprocessors()),
            (None, None) => None,
        };
        if let Some(split) = split
            && (split.parts == 0 || split.parts > GEMM_MAX_SPLITS)
        {
            return Err(Error::Unsupported(format!(
                "a GEMM-Q split into {} parts (1 to {GEMM_MAX_SPLITS})",
                split.parts
            )));
        }
        let (split_first, splits, partials, arrivals, items) = match (split, args.workspace) {
            (Some(split), Some(workspace)) if split.parts > 1 && split.whole_tiles < count => {
                let (whole, parts) = (split.whole_tiles, split.parts);
                let (partials, arrivals) = workspace.reserve(rows, count - whole, parts)?;
                (whole, parts, partials, arrivals, u64::from(whole) + u64::from(count - whole) * u64::from(parts))
            }
            _ => (0, 0, 0, 0, u64::from(count)),
        };
        let clustered = match args.clustered {
            Some(true) if self.arch() != Arch::Sm90a => {
                return Err(Error::Unsupported(format!(
                    "GEMM-Q thread-block clusters with the {} module (sm_90a only)",
                    self.arch().target()
                )));
            }
            Some(clustered) => clustered,
            None => gemm_q_clustered(self.arch(), rows, items, self.multiprocessors()),
        };
        let cluster = if clustered { GEMM_Q_CLUSTER } else { 1 };
        let ctas = items.next_multiple_of(u64::from(cluster));
        if ctas > MAX_GRID_X {
            return Err(Error::InvalidShape(format!("GEMM-Q with {items} work items (at most {MAX_GRID_X})")));
        }
        let grid = (ctas as u32, 1, 1);
        let params = GemmParams {
            // Encoded from the fields below by `launch_gemm`.
            maps: GemmTensorMaps::default(),
            a: args.x.address(),
            w: args.w.address(),
            bias: args.bias.as_ref().map_or(0, DeviceView::address),
            c: 0,
            out: args.out.address(),
            caching,
            tiles,
            m,
            n,
            k,
            heads: args.heads,
            head_dim,
            token_offset: args.token_offset,
            block_q,
            mode: 0,
            partials,
            arrivals,
            split_first,
            splits,
            items: items as u32,
        };
        let shape = per_tile_shape(grid, rows, cluster);
        // SAFETY: the entry takes one `GemmParams`; every buffer was checked by `gemm_q`
        // against the shape, the tile list stays allocated until the launch is enqueued (the
        // caller holds the symbols' lists), and the views borrow their memory for this call
        // (the caller keeps it alive until the stream has run the launch, as with any
        // asynchronous CUDA call).
        unsafe { self.launch_gemm(abi::gemm_q_entry(T::KIND, rows), rows, shape, params, stream) }
    }
}

/// Runs `body` with the work items of a GEMM-Q launch of `shape.tile_rows`-row CTAs: the device
/// address of the tile list (0: none) and the item count. With symbols, the tiles holding a
/// computed pair (cached tiles cost no CTA at all), and `body` runs while the symbols' tile
/// lists are locked; without, every tile, row-major, with no list.
fn with_work_items<R>(
    symbols: Option<&DeviceSymbols>,
    heads: u32,
    shape: GemmTileShape,
    body: impl FnOnce(u64, u64) -> Result<R>,
) -> Result<R> {
    match symbols {
        Some(symbols) => symbols.with_gemm_q_tiles(
            shape,
            |segment| active_tiles(segment, shape, heads, symbols.block_q),
            |tiles, count| body(tiles, u64::from(count)),
        ),
        None => body(0, output_tiles(shape.m, shape.n, shape.tile_rows)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_list_holds_exactly_the_tiles_with_a_computed_pair() {
        // 2 heads of 128 columns, 128-token query blocks, rows start at token 64: row tile 0
        // (tokens 64..192) spans query blocks 0 and 1, row tile 1 (192..300) blocks 1 and 2.
        let shape = GemmTileShape { request: 0, token_offset: 64, m: 236, n: 256, head_dim: 128, tile_rows: 128 };
        // Bits qb·2 + h: only (qb 0, head 1) and (qb 2, head 0) are computed.
        let segment = [0b0001_0010u8];
        let tiles = active_tiles(&segment, shape, 2, 128);
        assert_eq!(tiles, vec![1, 0, 0, 1], "(column 1, row 0) and (column 0, row 1)");
        assert!(active_tiles(&[0u8], shape, 2, 128).is_empty());
        assert_eq!(active_tiles(&[0xFFu8], shape, 2, 128).len(), 2 * 4);
    }
}
