//! The launch choices the GEMM launchers make when the call leaves them open: the CTA size,
//! thread-block clusters for GEMM-Q and the persistent kernel for GEMM-O. Each rule is a pure
//! function of the work, the kernel module and the multiprocessor count, measured on the H200
//! (the runs cited are in docs/perf-journal.md).

use flashomni_kernels::abi::{GEMM_O_WIDE_CONSUMERS, GEMM_O_WIDE_ROWS, GEMM_TILE_N, GemmRows};

use super::split::{GemmSplit, gemm_q_split, resident_ctas, split_over_slots};
use crate::module::Arch;

/// Columns of a wide GEMM-O CTA tile.
const GEMM_O_WIDE_COLUMNS: u32 = GEMM_O_WIDE_CONSUMERS * GEMM_TILE_N;

/// `GEMM_O_WIDE_ROWS × GEMM_O_WIDE_COLUMNS` tiles covering an `m × n` output.
pub(super) fn wide_tiles(m: u32, n: u32) -> u64 {
    u64::from(m.div_ceil(GEMM_O_WIDE_ROWS)) * u64::from(n.div_ceil(GEMM_O_WIDE_COLUMNS))
}

/// GEMM-Q: whether 128-row CTAs should run a launch whose working 128-row tiles fill `waves`
/// waves (2 CTAs per multiprocessor), on the module `arch`, where `split` says that a split-K
/// workspace would cut the partly filled last wave ([`gemm_q_split`]) and `small_fit` that
/// the working 64-row tiles fit in one wave of 64-row CTAs (3 per multiprocessor).
fn gemm_q_prefers_large_ctas(arch: Arch, waves: f64, split: bool, small_fit: bool) -> bool {
    match arch {
        // `mma.sync` (run 9 of docs/perf-journal.md): 64-row CTAs won at 1.2 and 2.4 waves
        // (r = 0.9) and lost at 3.0 and 3.3; a split last wave keeps 128-row CTAs (runs 31–32).
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
pub(super) fn gemm_q_auto_split(
    arch: Arch,
    tiles: u32,
    k: u32,
    rows: GemmRows,
    multiprocessors: u32,
) -> Option<GemmSplit> {
    match (arch, rows) {
        (Arch::Sm90a, GemmRows::Rows64) => {
            (tiles < multiprocessors).then(|| split_over_slots(tiles, k, multiprocessors)).flatten()
        }
        _ => gemm_q_split(tiles, k, rows, multiprocessors),
    }
}

/// GEMM-Q on `sm_90a`: from this many waves of 128-row CTAs (2 per multiprocessor) on, a
/// launch runs in clusters. On the H200 (runs 92–93 of docs/perf-journal.md) clusters of two
/// took 5–6% off dense launches of M = 16896 and 33792 and 1–4% off r = 0.5–0.75 launches of
/// 3 waves and more, tied on dense M = 4608 (3.3 waves), and lost 1–5% on launches of 1.2–2.4
/// waves.
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

/// CTA slots of one wave of 128-row CTAs on `multiprocessors` multiprocessors.
fn large_cta_wave(multiprocessors: u32) -> u64 {
    u64::from(resident_ctas(GemmRows::Rows128)) * u64::from(multiprocessors)
}

/// CTA slots of one wave of 64-row CTAs on `multiprocessors` multiprocessors.
pub(super) fn small_cta_wave(multiprocessors: u32) -> u64 {
    u64::from(resident_ctas(GemmRows::Rows64)) * u64::from(multiprocessors)
}

/// Tiles of `tile_rows` rows that cover an `m × n` output.
pub(super) fn output_tiles(m: u32, n: u32, tile_rows: u32) -> u64 {
    u64::from(m.div_ceil(tile_rows)) * u64::from(n.div_ceil(GEMM_TILE_N))
}

/// The working tiles of a GEMM-Q launch at each CTA size: the tiles that hold a computed
/// (query block, head) pair of the request's S_c, or every tile without symbols.
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
/// With `split_k = Some(k)` (the call has a [`GemmWorkspace`](crate::GemmWorkspace) and a
/// reduction of length `k`), 128-row CTAs are kept wherever their partly filled last wave
/// would be split ([`gemm_q_split`]), on `Sm90a` only where the 64-row tiles do not fit in one
/// wave: that measured faster than 64-row CTAs (docs/perf-journal.md, runs 31–32, 37 and 141).
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
    let few_tiles = (output_tiles(m, n, GemmRows::Rows128.rows()) as f64) < GEMM_O_MIN_WAVES_FOR_LARGE_CTAS * wave;
    if !large_allowed || few_tiles { GemmRows::Rows64 } else { GemmRows::Rows128 }
}

/// Whether a GEMM-Q launch of `items` work items (CTAs) of `rows`-row CTAs without a forced
/// choice runs in clusters of [`GEMM_Q_CLUSTER`](crate::GEMM_Q_CLUSTER): on the Hopper module,
/// with 128-row CTAs, from `GEMM_Q_MIN_WAVES_FOR_CLUSTERS` (3) waves on.
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

#[cfg(test)]
mod tests {
    use super::*;

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
