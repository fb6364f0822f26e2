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
//!
//! Each GEMM has two kernels, CTAs of 128 or of 64 output rows ([`GemmRows`]). The 64-row one
//! holds half the accumulators, so more CTAs share a multiprocessor; it pays off when the
//! launch has too few CTAs to fill the GPU. Unless the call sets `tile_rows`, the launcher
//! picks one from the multiprocessor count, the kernel module and the work: for GEMM-Q the
//! working tiles of either size, counted exactly from request 0's S_c when it builds the
//! tile lists ([`gemm_q_rows`]); for GEMM-O the shape ([`gemm_o_rows`]), and for its
//! persistent kernel the computed fraction of (128-row tile, head) pairs that uploading the
//! symbols counted for attention ([`gemm_o_persistent`]).
//!
//! L2 cache policy: `A`, `C` and the output pass through L2 as the first lines to be evicted.
//! With the `sm_90a` module, `W`'s lines enter L2 as the last to be evicted and keep that
//! priority after the call, until other accesses re-mark them or L2 has nothing else to evict:
//! up to `n · k` elements (19 MB for a 3072 × 3072 bf16 weight) stay ranked above the normal
//! lines of the kernels that follow. Attention launched right after measured the same
//! (docs/PERF.md, run 131).

use cust::stream::Stream;
use flashomni_kernels::abi::{
    self, ATTENTION_TILE_Q, GEMM_MAX_HEADS, GEMM_MAX_SPLITS, GEMM_O_MODE_ACTIVE, GEMM_O_MODE_CACHE,
    GEMM_O_WIDE_CONSUMERS, GEMM_O_WIDE_ROWS, GEMM_O_WIDE_THREADS, GEMM_Q_CLUSTER, GEMM_THREADS, GEMM_TILE_K,
    GEMM_TILE_N, GemmParams, GemmRows, GemmTensorMaps, TensorMap,
};
use flashomni_symbols::read_bit;

use crate::device_symbols::{DeviceSymbols, GemmTileShape};
use crate::element::Element;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gemm_split::{GemmSplit, GemmWorkspace, gemm_q_split, resident_ctas, split_over_slots};
use crate::launch::{LaunchShape, launch};
use crate::memory::{DeviceView, DeviceViewMut};
use crate::module::Arch;
use crate::tensor_map;
use crate::validate::{check_aligned, check_len};

/// Most CTAs a grid may have along y (row tiles).
const MAX_GRID_Y: u32 = 65_535;
/// Most CTAs a grid may have along x (GEMM-Q's work items).
const MAX_GRID_X: u64 = (1 << 31) - 1;
/// Columns of a wide GEMM-O CTA tile.
const GEMM_O_WIDE_COLUMNS: u32 = GEMM_O_WIDE_CONSUMERS * GEMM_TILE_N;

/// `GEMM_O_WIDE_ROWS × GEMM_O_WIDE_COLUMNS` tiles covering an `m × n` output.
fn wide_tiles(m: u32, n: u32) -> u64 {
    u64::from(m.div_ceil(GEMM_O_WIDE_ROWS)) * u64::from(n.div_ceil(GEMM_O_WIDE_COLUMNS))
}

/// The launch shape of a per-tile GEMM entry of `rows`-row CTAs over `grid`, in clusters of
/// `cluster` CTAs along x (1: none).
fn per_tile_shape(grid: (u32, u32, u32), rows: GemmRows, cluster: u32) -> LaunchShape {
    LaunchShape { grid, threads: GEMM_THREADS, shared_bytes: abi::gemm_shared_bytes(rows), cluster }
}

/// GEMM-Q: whether 128-row CTAs should run a launch whose working 128-row tiles fill `waves`
/// waves (2 CTAs per multiprocessor), on the module `arch`, where `split` says that a split-K
/// workspace would cut the partly filled last wave ([`gemm_q_split`]) and `small_fit` that
/// the working 64-row tiles fit in one wave of 64-row CTAs (3 per multiprocessor).
fn gemm_q_prefers_large_ctas(arch: Arch, waves: f64, split: bool, small_fit: bool) -> bool {
    match arch {
        // `mma.sync` (run 9 of docs/PERF.md): 64-row CTAs won at 1.2 and 2.4 waves (r = 0.9)
        // and lost at 3.0 and 3.3; a split last wave keeps 128-row CTAs (runs 31–32).
        Arch::Sm80 => waves >= 3.0 || split,
        // `wgmma`: a 64-row CTA issues half-size m64 products and loses much more per tile.
        // Run 22: 64-row CTAs won at 1.2 waves without split-K (0.085 vs 0.103 ms) and lost
        // at 1.6, 2.4 and 3.0. Run 37: they lose a full single wave (M = 1408 dense: 0.069
        // against 0.047 ms) and a split 1.2 waves (0.090 against 0.073 ms). Run 141: they win
        // wherever all of them run at once (0.5–0.75 waves of 128-row CTAs: 0.033 against
        // 0.039 ms at M = 2816, r = 0.75) and lose by half as soon as a few wait for a second
        // wave (M = 4608, r = 0.75: 0.060 against 0.040 ms). `small_fit` holds up to half a
        // wave, since a 128-row tile is two 64-row ones.
        Arch::Sm90a => !small_fit && (waves <= 1.0 || waves >= 1.5 || split),
    }
}
/// The split GEMM-Q takes with a workspace and no forced split. [`gemm_q_split`], except for
/// 64-row CTAs on `sm_90a`, which split only a launch that fits in one CTA per SM, into at
/// most one CTA per SM. With tensor-memory copies two or three split 64-row CTAs per SM lost
/// to the unsplit launch (run 40: M = 4608, r = 0.9, 172 tiles: 0.036 against 0.030 ms;
/// M = 1690, r = 0.75: 0.036 against 0.029 ms) while one per SM won (M = 460, r = 0.9: 0.017
/// against 0.022 ms).
fn gemm_q_auto_split(arch: Arch, tiles: u32, k: u32, rows: GemmRows, multiprocessors: u32) -> Option<GemmSplit> {
    match (arch, rows) {
        (Arch::Sm90a, GemmRows::Rows64) => {
            (tiles < multiprocessors).then(|| split_over_slots(tiles, k, multiprocessors)).flatten()
        }
        _ => gemm_q_split(tiles, k, rows, multiprocessors),
    }
}

/// GEMM-Q on `sm_90a`: from this many waves of 128-row CTAs (2 per multiprocessor) on, a
/// launch runs in clusters. On the H200 (runs 92–93 of docs/PERF.md) clusters of two took 5–6%
/// off dense launches of M = 16896 and 33792 and 1–4% off r = 0.5–0.75 launches of 3 waves and
/// more, tied on dense M = 4608 (3.3 waves), and lost 1–5% on launches of 1.2–2.4 waves.
const GEMM_Q_MIN_WAVES_FOR_CLUSTERS: u64 = 3;

/// GEMM-O: below this many waves of 128-row tiles (every tile is written), 64-row CTAs are
/// used. With many tiles 64-row CTAs lost at every measured sparsity (r = 0.5–0.9: each
/// re-reads the selected heads' weights for half as many rows), so sparsity does not enter.
const GEMM_O_MIN_WAVES_FOR_LARGE_CTAS: f64 = 2.0;

/// GEMM-O on `sm_90a`: from this many wide tiles' worth of summed heads per multiprocessor on,
/// the persistent kernel runs the launch. On the H200 (runs 53–55) it was 3–15% faster there
/// (dense, and r = 0.5–0.75 at M = 33792) and tied or lost up to 8% on smaller launches
/// (r = 0.9, or M = 4608).
const GEMM_O_MIN_WIDE_TILES_PER_SM: f64 = 5.0;

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
    /// CTA size; `None` lets the launcher choose (see [`gemm_q_rows`]).
    pub tile_rows: Option<GemmRows>,
    /// Split-K workspace: with one, the launcher may cut the reduction of the tiles in the
    /// launch's partly filled last wave into parts (see [`gemm_q_split`]); `None` never
    /// splits. Written by the launch, like `out`.
    pub workspace: Option<&'a mut GemmWorkspace>,
    /// Forces the split (needs `workspace`); `None` lets the launcher choose.
    pub split: Option<GemmSplit>,
    /// Launches the CTAs in thread-block clusters of [`GEMM_Q_CLUSTER`] neighbouring work
    /// items (`Some(true)`, the `sm_90a` module only) or not (`Some(false)`); `None` lets the
    /// launcher choose (see [`gemm_q_clustered`]).
    pub clustered: Option<bool>,
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
    /// Attention-sequence position of row 0 of `A`; with symbols, a multiple of the CTA rows
    /// (64 or 128, see `tile_rows`).
    pub token_offset: u32,
    /// Heads the reduction axis is split into (at most 256; `k / heads` a multiple of 64).
    pub heads: u32,
    /// Sparse symbols (only S_c of request 0 is read; `block_q` must be a multiple of the CTA
    /// rows); `None` treats every head as computed.
    pub symbols: Option<&'a DeviceSymbols>,
    /// CTA size; `None` lets the launcher choose (see [`gemm_o_rows`]). With symbols, 128-row
    /// CTAs need `token_offset` and `block_q` to be multiples of 128, 64-row ones of 64.
    pub tile_rows: Option<GemmRows>,
    /// Workspace for the persistent kernel's tile counters: with one, the launcher may run
    /// the launch on the persistent kernel (see [`gemm_o_persistent`]); `None` never does.
    /// Written by the launch, like `out`.
    pub workspace: Option<&'a mut GemmWorkspace>,
    /// `Some(true)` forces the persistent `sm_90a` kernel (needs `workspace`, the Hopper
    /// module and 128-row CTAs, which it implies when `tile_rows` is `None`), `Some(false)`
    /// the per-tile kernels; `None` lets the launcher choose.
    pub persistent: Option<bool>,
}

/// Estimated fraction of (query block, head) pairs the symbols compute (S_c = 1), from the
/// attention work list counted at upload (computed 128-row tiles × heads over all requests);
/// `None` when the symbols have no work list (`block_q` not a multiple of 128) or no tile.
fn computed_fraction(symbols: &DeviceSymbols) -> Option<f64> {
    let (_, items) = symbols.attention_work.as_ref()?;
    let tiles: u64 = symbols.requests.iter().map(|request| u64::from(request.q_len.div_ceil(ATTENTION_TILE_Q))).sum();
    let pairs = tiles * u64::from(symbols.heads);
    (pairs > 0).then(|| f64::from(*items) / pairs as f64)
}

/// CTA slots of one wave of 128-row CTAs on `multiprocessors` multiprocessors.
fn large_cta_wave(multiprocessors: u32) -> u64 {
    u64::from(resident_ctas(GemmRows::Rows128)) * u64::from(multiprocessors)
}

/// CTA slots of one wave of 64-row CTAs on `multiprocessors` multiprocessors.
fn small_cta_wave(multiprocessors: u32) -> u64 {
    u64::from(resident_ctas(GemmRows::Rows64)) * u64::from(multiprocessors)
}

/// Tiles of `rows`-row CTAs that cover an `m × n` output.
fn output_tiles(m: u32, n: u32, rows: GemmRows) -> u64 {
    u64::from(m.div_ceil(rows.rows())) * u64::from(n.div_ceil(GEMM_TILE_N))
}

/// The working tiles of a GEMM-Q launch at each CTA size: the tiles that hold a computed
/// (query block, head) pair of request 0's S_c, or every tile without symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmQTiles {
    /// Working tiles of 128 rows.
    pub large: u64,
    /// Working tiles of 64 rows: between `large` and twice `large`. The rule only asks
    /// whether they fit in one wave of 64-row CTAs, so a caller that knows they do not (more
    /// than a wave of them among the 128-row tiles alone) may pass `large` here.
    pub small: u64,
}

/// The GEMM-Q heuristic for kernel module `arch`, from the launch's `working` tiles:
/// - `Sm80` takes 64-row CTAs below 3 waves of 128-row CTAs (2 per multiprocessor);
/// - `Sm90a` takes them when every working 64-row tile runs in one wave of 64-row CTAs (3 per
///   multiprocessor), and between 1 and 1.5 waves of 128-row CTAs.
///
/// With `split_k = Some(k)` (the call has a [`GemmWorkspace`] and a reduction of length `k`),
/// 128-row CTAs are kept wherever their partly filled last wave would be split
/// ([`gemm_q_split`]), on `Sm90a` only where the 64-row tiles do not fit in one wave: that
/// measured faster than 64-row CTAs (docs/PERF.md, runs 31–32, 37 and 141).
pub fn gemm_q_rows(arch: Arch, working: GemmQTiles, multiprocessors: u32, split_k: Option<u32>) -> GemmRows {
    let waves = working.large as f64 / large_cta_wave(multiprocessors) as f64;
    let split = split_k.is_some_and(|k| {
        let tiles = u32::try_from(working.large).unwrap_or(u32::MAX);
        gemm_q_split(tiles, k, GemmRows::Rows128, multiprocessors).is_some()
    });
    if gemm_q_prefers_large_ctas(arch, waves, split, working.small <= small_cta_wave(multiprocessors)) {
        GemmRows::Rows128
    } else {
        GemmRows::Rows64
    }
}

/// The GEMM-O heuristic: 64-row CTAs when 128-row ones cannot be used (`large_allowed` false:
/// with symbols, `token_offset` or `block_q` is not a multiple of 128) or when fewer than
/// `GEMM_O_MIN_WAVES_FOR_LARGE_CTAS` (2) waves of 128-row CTAs cover the output; else 128-row
/// CTAs.
pub fn gemm_o_rows(m: u32, n: u32, large_allowed: bool, multiprocessors: u32) -> GemmRows {
    let wave = large_cta_wave(multiprocessors) as f64;
    let few_tiles = (output_tiles(m, n, GemmRows::Rows128) as f64) < GEMM_O_MIN_WAVES_FOR_LARGE_CTAS * wave;
    if !large_allowed || few_tiles { GemmRows::Rows64 } else { GemmRows::Rows128 }
}

/// Whether a GEMM-Q launch of `items` work items (CTAs) of `rows`-row CTAs without a forced
/// choice runs in clusters of [`GEMM_Q_CLUSTER`]: on the Hopper module, with 128-row CTAs,
/// from `GEMM_Q_MIN_WAVES_FOR_CLUSTERS` (3) waves on.
pub fn gemm_q_clustered(arch: Arch, rows: GemmRows, items: u64, multiprocessors: u32) -> bool {
    arch == Arch::Sm90a
        && rows == GemmRows::Rows128
        && items >= GEMM_Q_MIN_WAVES_FOR_CLUSTERS * large_cta_wave(multiprocessors)
}

/// Whether a GEMM-O launch without a forced kernel runs on the persistent `sm_90a` kernel: on
/// the Hopper module, with 128-row CTAs, when the `m × n` output holds at least
/// `GEMM_O_MIN_WIDE_TILES_PER_SM` (5) `128 × 256` tiles per multiprocessor after scaling by
/// `summed`, the estimated fraction of (query block, head) pairs whose heads the launch sums.
/// Smaller launches keep the per-tile kernels, whose hardware-scheduled CTAs start faster.
pub fn gemm_o_persistent(arch: Arch, rows: GemmRows, m: u32, n: u32, summed: f64, multiprocessors: u32) -> bool {
    arch == Arch::Sm90a
        && rows == GemmRows::Rows128
        && wide_tiles(m, n) as f64 * summed.clamp(0.0, 1.0) >= GEMM_O_MIN_WIDE_TILES_PER_SM * f64::from(multiprocessors)
}

/// GEMM-Q's tile list for `shape`: (column tile, row tile) pairs, row-major, of the tiles with
/// at least one computed (query block, head) pair in request 0's S_c `segment` (the same test
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

/// A buffer argument as the checks see it.
struct Buffer {
    name: &'static str,
    address: u64,
    len: usize,
}

/// Checks what both GEMMs need: a reduction of whole 16-byte chunks (`k ≥ 8`), rows of whole
/// 16-byte chunks; `a` (`[m, k]`), `w` (`[n, k]`) and `out` (`[m, n]`) large enough and
/// 16-byte aligned; a grid of `rows`-row tiles that fits. Returns the grid.
fn check_common(a: Buffer, w: Buffer, out: Buffer, m: u32, n: u32, k: u32, rows: GemmRows) -> Result<(u32, u32, u32)> {
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
    /// symbols, `heads` matching them and request 0's `q_len ≥ token_offset + m`; forced
    /// clusters (`clustered: Some(true)`) only with the `sm_90a` module and a CUDA 12 driver.
    pub fn gemm_q<T: Element>(&self, args: GemmQArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        // The tile list below is allocated in the current context: make it this engine's.
        self.make_current()?;
        let head_dim = split_heads("n", n, args.heads)?;
        if !head_dim.is_multiple_of(8) {
            return Err(Error::Unsupported(format!("GEMM-Q head_dim {head_dim} (must be a multiple of 8)")));
        }
        if let Some(symbols) = args.symbols {
            check_symbols(symbols, args.heads, args.token_offset, m)?;
        }
        // The work items of `rows`-row CTAs (device address and count). With symbols, the
        // tiles holding a computed pair: cached tiles cost no CTA at all. Without, every
        // tile, row-major, with no list.
        let work_items = |rows: GemmRows| -> Result<(u64, u64)> {
            match args.symbols {
                Some(symbols) => {
                    let shape =
                        GemmTileShape { token_offset: args.token_offset, m, n, head_dim, tile_rows: rows.rows() };
                    let (tiles, count) = symbols
                        .gemm_q_tiles(shape, |segment| active_tiles(segment, shape, args.heads, symbols.block_q))?;
                    Ok((tiles, u64::from(count)))
                }
                None => Ok((0, output_tiles(m, n, rows))),
            }
        };
        let rows = match args.tile_rows {
            Some(rows) => rows,
            None => {
                let large = work_items(GemmRows::Rows128)?.1;
                // Every working 128-row tile holds a working 64-row half, so 128-row tiles
                // that alone overflow a wave of 64-row CTAs settle the rule's one question
                // about the 64-row ones: their list is neither built nor uploaded then.
                let small = if large > small_cta_wave(self.multiprocessors()) {
                    large
                } else {
                    work_items(GemmRows::Rows64)?.1
                };
                let working = GemmQTiles { large, small };
                gemm_q_rows(self.arch(), working, self.multiprocessors(), args.workspace.is_some().then_some(k))
            }
        };
        check_common(
            Buffer { name: "x", address: args.x.address(), len: args.x.len() },
            Buffer { name: "w", address: args.w.address(), len: args.w.len() },
            Buffer { name: "out", address: args.out.address(), len: args.out.len() },
            m,
            n,
            k,
            rows,
        )?;
        if let Some(bias) = &args.bias {
            check_len("bias", bias.len(), u64::from(n))?;
            check_aligned("bias", bias.address(), 4)?;
        }
        let (tiles, count) = work_items(rows)?;
        let count =
            u32::try_from(count).map_err(|_| Error::InvalidShape(format!("GEMM-Q with {count} tiles of {rows:?}")))?;
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
            caching: args.symbols.map_or(0, |symbols| symbols.caching.view().address()),
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
        // SAFETY: the entry takes one `GemmParams`; every buffer was checked above against
        // the shape, and the views borrow their memory for this call (the caller keeps it
        // alive until the stream has run the launch, as with any asynchronous CUDA call).
        unsafe { self.launch_gemm(abi::gemm_q_entry(T::KIND, rows), rows, shape, params, stream) }
    }

    /// GEMM-O, asynchronously on `stream`: with `D = k / heads` and `qb` the query block of
    /// the row, `out = addend + Σ_h A[:, hD..(h+1)D]·W[:, hD..(h+1)D]ᵀ` over the heads with
    /// S_c(qb, h) = 0 ([`GemmOMode::Cache`], addend = bias vector) or S_c(qb, h) = 1
    /// ([`GemmOMode::Active`], addend = `C`). Every output element is written.
    ///
    /// Requirements: `k = heads · D` with `D` a multiple of 64 and `1 ≤ heads ≤ 256`, `n` a
    /// multiple of 8, 16-byte aligned `a`, `w`, `out` and `C`, a 4-byte aligned bias; with
    /// symbols, `heads` matching them, request 0's `q_len ≥ token_offset + m`, and
    /// `token_offset` and `block_q` multiples of the CTA rows (so a row tile lies in one
    /// block): 64 always works, 128 is needed only to force [`GemmRows::Rows128`].
    pub fn gemm_o<T: Element>(&self, args: GemmOArgs<'_, T>, m: u32, n: u32, k: u32, stream: &Stream) -> Result<()> {
        self.make_current()?;
        let head_dim = split_heads("k", k, args.heads)?;
        if args.heads > GEMM_MAX_HEADS {
            return Err(Error::Unsupported(format!("GEMM-O with {} heads (at most {GEMM_MAX_HEADS})", args.heads)));
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
                let computed = args.symbols.map_or(Some(1.0), computed_fraction).unwrap_or(1.0);
                let summed = match args.mode {
                    GemmOMode::Active => computed,
                    GemmOMode::Cache => 1.0 - computed,
                };
                gemm_o_persistent(self.arch(), rows, m, n, summed, self.multiprocessors())
            }
        };
        let grid = check_common(
            Buffer { name: "a", address: args.a.address(), len: args.a.len() },
            Buffer { name: "w", address: args.w.address(), len: args.w.len() },
            Buffer { name: "out", address: args.out.address(), len: args.out.len() },
            m,
            n,
            k,
            rows,
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
                let tile = rows.rows();
                if !args.token_offset.is_multiple_of(tile) || !symbols.block_q.is_multiple_of(tile) {
                    return Err(Error::Unsupported(format!(
                        "GEMM-O with token_offset {} and block_q {}: both must be multiples of the {tile}-row \
                         tile so that a row tile lies in one query block",
                        args.token_offset, symbols.block_q
                    )));
                }
                symbols.block_q
            }
            None => 0,
        };
        let params = GemmParams {
            // Encoded from the fields below by `launch_gemm`.
            maps: GemmTensorMaps::default(),
            a: args.a.address(),
            w: args.w.address(),
            bias,
            c,
            out: args.out.address(),
            caching: args.symbols.map_or(0, |symbols| symbols.caching.view().address()),
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

    /// The tensor maps of the launch `params` describes, for the module that copies through
    /// them (`sm_90a`): `A` (`[m, k]`) in boxes of the CTA's `rows`, `W` (`[n, k]`) in boxes of
    /// [`GEMM_TILE_N`] rows, `C` (when the launch has one) and the output (`[m, n]`) in
    /// 64-column boxes of the CTA's rows. Blank maps for the portable module, which ignores
    /// them. The buffers were checked by `check_common`.
    fn tensor_maps(&self, params: &GemmParams, rows: GemmRows) -> Result<GemmTensorMaps> {
        if self.arch() == Arch::Sm80 {
            return Ok(GemmTensorMaps::default());
        }
        let (m, n, k) = (params.m, params.n, params.k);
        let c =
            if params.c == 0 { TensorMap::default() } else { tensor_map::swizzled_boxes(params.c, m, n, rows.rows())? };
        Ok(GemmTensorMaps {
            a: tensor_map::swizzled_boxes(params.a, m, k, rows.rows())?,
            w: tensor_map::swizzled_boxes(params.w, n, k, GEMM_TILE_N)?,
            c,
            out: tensor_map::swizzled_boxes(params.out, m, n, rows.rows())?,
        })
    }

    /// Launches the GEMM entry `entry`, whose copies move `rows`-row boxes, with `shape` and
    /// `params` completed by the launch's tensor maps.
    ///
    /// # Safety
    /// `params` must have been validated for `entry` and describe memory that stays valid
    /// until the launch completes on `stream`; the engine's context must be current (the
    /// launchers make it so first).
    unsafe fn launch_gemm(
        &self,
        entry: &str,
        rows: GemmRows,
        shape: LaunchShape,
        mut params: GemmParams,
        stream: &Stream,
    ) -> Result<()> {
        if shape.grid.0 == 0 || shape.grid.1 == 0 {
            // An empty output (m or n = 0) or no working tile: nothing to launch, and the
            // driver would reject a tensor map with a zero dimension.
            return Ok(());
        }
        params.maps = self.tensor_maps(&params, rows)?;
        // SAFETY: forwarded from the caller; the entry takes one `GemmParams`.
        unsafe { launch(self.function(entry)?, shape, stream.as_inner(), &params) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_list_holds_exactly_the_tiles_with_a_computed_pair() {
        // 2 heads of 128 columns, 128-token query blocks, rows start at token 64: row tile 0
        // (tokens 64..192) spans query blocks 0 and 1, row tile 1 (192..300) blocks 1 and 2.
        let shape = GemmTileShape { token_offset: 64, m: 236, n: 256, head_dim: 128, tile_rows: 128 };
        // Bits qb·2 + h: only (qb 0, head 1) and (qb 2, head 0) are computed.
        let segment = [0b0001_0010u8];
        let tiles = active_tiles(&segment, shape, 2, 128);
        assert_eq!(tiles, vec![1, 0, 0, 1], "(column 1, row 0) and (column 0, row 1)");
        assert!(active_tiles(&[0u8], shape, 2, 128).is_empty());
        assert_eq!(active_tiles(&[0xFFu8], shape, 2, 128).len(), 2 * 4);
    }

    /// Working tiles whose 128-row ones each hold two working 64-row halves (symbols in
    /// 128-row query blocks, or none).
    fn whole(large: u64) -> GemmQTiles {
        GemmQTiles { large, small: 2 * large }
    }

    #[test]
    fn gemm_q_uses_small_ctas_for_few_working_tiles() {
        // K = N = 3072, 24 heads of 128, 132 SMs: 6336 tiles at M = 33792 (24 waves).
        for arch in Arch::ALL {
            assert_eq!(gemm_q_rows(arch, whole(6336), 132, None), GemmRows::Rows128);
            assert_eq!(gemm_q_rows(arch, whole(1584), 132, None), GemmRows::Rows128, "r = 0.75");
            // 317 working tiles at M = 16896, r = 0.9: 1.2 waves.
            assert_eq!(gemm_q_rows(arch, whole(317), 132, None), GemmRows::Rows64);
            // A small dense launch (96 tiles at M = 512) fills the GPU better with small CTAs.
            assert_eq!(gemm_q_rows(arch, whole(96), 132, None), GemmRows::Rows64);
            // 4608 rows dense: 864 tiles, 3.3 waves: 128-row CTAs (64-row ones measured slower).
            assert_eq!(gemm_q_rows(arch, whole(864), 132, None), GemmRows::Rows128);
        }
        // Between half a wave and 3 waves the modules differ: 634 working tiles (2.4 waves)
        // at M = 33792, r = 0.9; 432 (1.6 waves) at M = 4608, r = 0.5; exactly one wave at
        // M = 1408 dense.
        for large in [634, 432, 264] {
            assert_eq!(gemm_q_rows(Arch::Sm80, whole(large), 132, None), GemmRows::Rows64);
            assert_eq!(gemm_q_rows(Arch::Sm90a, whole(large), 132, None), GemmRows::Rows128);
        }
        // On sm_90a, 64-row CTAs whenever all of them run at once (3 per SM, 396 slots): 175
        // working tiles (M = 3584, r = 0.74) are 350 of them. At M = 4608, r = 0.75, 216
        // working tiles are 432: a few would wait for a second wave.
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(175), 132, Some(3072)), GemmRows::Rows64);
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(198), 132, Some(3072)), GemmRows::Rows64);
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(199), 132, Some(3072)), GemmRows::Rows128);
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(216), 132, Some(3072)), GemmRows::Rows128);
        assert_eq!(gemm_q_rows(Arch::Sm80, whole(175), 132, Some(3072)), GemmRows::Rows64);
        assert_eq!(gemm_q_rows(Arch::Sm80, whole(216), 132, Some(3072)), GemmRows::Rows64);
        // What counts is the 64-row tiles: with 64-token query blocks, 250 working 128-row
        // tiles may hold only 390 working halves.
        let halves = GemmQTiles { large: 250, small: 390 };
        assert_eq!(gemm_q_rows(Arch::Sm90a, halves, 132, Some(3072)), GemmRows::Rows64);
        assert_eq!(gemm_q_rows(Arch::Sm90a, GemmQTiles { small: 397, ..halves }, 132, None), GemmRows::Rows128);
        // With a split-K workspace, 128-row CTAs whose last wave splits: 317 working tiles at
        // M = 16896, r = 0.9 (264 + 53, cut in 4). Too short a reduction splits nothing.
        for arch in Arch::ALL {
            assert_eq!(gemm_q_rows(arch, whole(317), 132, Some(3072)), GemmRows::Rows128);
            assert_eq!(gemm_q_rows(arch, whole(317), 132, Some(64)), GemmRows::Rows64, "k too short");
        }
        // 86 working tiles at M = 4608, r = 0.9 (a third of a wave): split on sm_80; 64-row
        // CTAs on sm_90a.
        assert_eq!(gemm_q_rows(Arch::Sm80, whole(86), 132, Some(3072)), GemmRows::Rows128);
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(86), 132, Some(3072)), GemmRows::Rows64);
    }

    #[test]
    fn small_ctas_on_hopper_split_only_into_one_cta_per_sm() {
        // 172 64-row tiles (M = 4608, r = 0.9): the portable rule cuts them in 2 (344 CTAs);
        // on sm_90a they run whole.
        assert_eq!(gemm_q_auto_split(Arch::Sm80, 172, 3072, GemmRows::Rows64, 132).map(|s| s.parts), Some(2));
        assert_eq!(gemm_q_auto_split(Arch::Sm90a, 172, 3072, GemmRows::Rows64, 132), None);
        assert_eq!(gemm_q_auto_split(Arch::Sm90a, 68, 3072, GemmRows::Rows64, 132), None, "one part of 68 per SM");
        // 20 tiles: 6 parts of 8 k-tiles, 120 CTAs, under one per SM.
        assert_eq!(
            gemm_q_auto_split(Arch::Sm90a, 20, 3072, GemmRows::Rows64, 132),
            Some(GemmSplit { whole_tiles: 0, parts: 6 })
        );
        // 128-row CTAs keep the wave rule on both modules.
        for arch in Arch::ALL {
            assert_eq!(gemm_q_auto_split(arch, 86, 3072, GemmRows::Rows128, 132).map(|s| s.parts), Some(3));
        }
    }

    #[test]
    fn gemm_o_uses_small_ctas_for_few_heads_or_tiles() {
        assert_eq!(gemm_o_rows(33_792, 3072, true, 132), GemmRows::Rows128);
        assert_eq!(gemm_o_rows(33_792, 3072, false, 132), GemmRows::Rows64);
        assert_eq!(gemm_o_rows(256, 3072, true, 132), GemmRows::Rows64);
    }

    #[test]
    fn heuristics_take_any_multiprocessor_count() {
        // The slot counts (CTAs per SM × SMs) once overflowed u32 here.
        assert_eq!(gemm_o_rows(33_792, 3072, true, u32::MAX), GemmRows::Rows64);
        // 6336 tiles are a sliver of a wave: the split rule keeps 128-row CTAs on sm_80, while
        // sm_90a takes 64-row ones below half a wave.
        assert_eq!(gemm_q_rows(Arch::Sm80, whole(6336), u32::MAX, Some(3072)), GemmRows::Rows128);
        assert_eq!(gemm_q_rows(Arch::Sm90a, whole(6336), u32::MAX, Some(3072)), GemmRows::Rows64);
        assert_eq!(gemm_q_split(86, 3072, GemmRows::Rows128, u32::MAX).map(|s| s.parts), Some(6));
    }

    #[test]
    fn an_empty_reduction_is_rejected() {
        let buffer = |name| Buffer { name, address: 0, len: 1 << 20 };
        let err = check_common(buffer("x"), buffer("w"), buffer("out"), 128, 128, 0, GemmRows::Rows128).unwrap_err();
        assert!(matches!(err, Error::InvalidShape(ref text) if text.contains("k = 0")), "{err}");
        let grid = check_common(buffer("x"), buffer("w"), buffer("out"), 0, 128, 64, GemmRows::Rows128);
        assert_eq!(grid.unwrap(), (1, 0, 1), "no rows: an empty grid, which launches nothing");
    }

    #[test]
    fn gemm_o_runs_persistent_only_with_enough_summed_work_on_hopper() {
        // K = N = 3072 on 132 SMs: 12 wide tiles per 128 rows; 660 wide tiles' worth is needed.
        let persistent = |arch, rows, m, summed| gemm_o_persistent(arch, rows, m, 3072, summed, 132);
        assert!(persistent(Arch::Sm90a, GemmRows::Rows128, 33_792, 1.0), "dense, 3168 wide tiles");
        assert!(persistent(Arch::Sm90a, GemmRows::Rows128, 33_792, 0.25), "r = 0.75: 792");
        assert!(persistent(Arch::Sm90a, GemmRows::Rows128, 16_896, 0.5), "r = 0.5: 792");
        assert!(!persistent(Arch::Sm90a, GemmRows::Rows128, 33_792, 0.1), "r = 0.9: 317");
        assert!(!persistent(Arch::Sm90a, GemmRows::Rows128, 16_896, 0.25), "r = 0.75: 396");
        assert!(!persistent(Arch::Sm90a, GemmRows::Rows128, 4608, 1.0), "dense: 432");
        assert!(!persistent(Arch::Sm80, GemmRows::Rows128, 33_792, 1.0), "no persistent kernel on sm_80");
        assert!(!persistent(Arch::Sm90a, GemmRows::Rows64, 33_792, 1.0), "64-row CTAs are per-tile only");
    }

    #[test]
    fn gemm_q_runs_in_clusters_from_three_waves_on_hopper() {
        // 132 SMs, 2 CTAs each: 792 work items make three waves.
        let clustered = |arch, rows, items| gemm_q_clustered(arch, rows, items, 132);
        assert!(clustered(Arch::Sm90a, GemmRows::Rows128, 6336), "dense M = 33792");
        assert!(clustered(Arch::Sm90a, GemmRows::Rows128, 864), "dense M = 4608");
        assert!(clustered(Arch::Sm90a, GemmRows::Rows128, 792), "exactly three waves");
        assert!(!clustered(Arch::Sm90a, GemmRows::Rows128, 791), "just under three waves");
        assert!(!clustered(Arch::Sm90a, GemmRows::Rows128, 634), "r = 0.9 at M = 33792");
        assert!(!clustered(Arch::Sm80, GemmRows::Rows128, 6336), "no clusters with the portable module");
        assert!(!clustered(Arch::Sm90a, GemmRows::Rows64, 6336), "64-row CTAs are not clustered");
        assert!(clustered(Arch::Sm90a, GemmRows::Rows128, u64::MAX), "no overflow");
        assert!(!gemm_q_clustered(Arch::Sm90a, GemmRows::Rows128, 0, u32::MAX), "no overflow");
    }
}
