//! The launch ABI shared by the host crate and the device entries.
//!
//! Every kernel takes exactly one parameter: a `#[repr(C)]` struct passed by value. rustc lowers
//! it to `.param .align A .b8 <entry>_param_0[size]`; the host passes a pointer to an identical
//! struct to `cuLaunchKernel`. Device pointers are carried as `u64` so that the struct has the
//! same layout and meaning on both sides. [`KERNELS`] lists every entry with its parameter size;
//! a host test checks it against the PTX the build produced.

/// Query rows of one attention work item; symbol query blocks are multiples of it. A work item
/// is computed by one CTA of 128 rows or by two CTAs of 64 rows ([`AttentionRows`]).
pub const ATTENTION_TILE_Q: u32 = 128;
/// Keys and values per attention main-loop iteration.
pub const ATTENTION_TILE_KV: u32 = 64;
/// Threads per attention CTA.
pub const ATTENTION_THREADS: u32 = 128;

/// Element types the kernels are instantiated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// bfloat16 storage, f32 accumulation.
    Bf16,
    /// IEEE half storage, f32 accumulation.
    F16,
}

/// How many query rows one attention CTA computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionRows {
    /// 64 rows (4 warps × 16 rows): twice the CTAs, for launches with few work items.
    Rows64,
    /// 128 rows (4 warps × 32 rows): each K/V fragment feeds two m-tiles; the default.
    Rows128,
}

impl AttentionRows {
    /// Query rows per CTA.
    pub const fn rows(self) -> u32 {
        match self {
            AttentionRows::Rows64 => 64,
            AttentionRows::Rows128 => 128,
        }
    }

    /// CTAs per work item.
    pub const fn ctas_per_item(self) -> u32 {
        ATTENTION_TILE_Q / self.rows()
    }
}

/// Parameters of one block-sparse attention launch.
///
/// `work` lists items of three `u32`: (request, q tile, head), where q tile `t` covers rows
/// `[t · ATTENTION_TILE_Q, (t + 1) · ATTENTION_TILE_Q)` of the request. The grid is
/// `(items · ctas_per_item, 1, 1)`; CTA `c` computes part `c % ctas_per_item` of item
/// `c / ctas_per_item`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionParams {
    /// Queries, `[total_q, heads, head_dim]` addressed through the q strides.
    pub q: u64,
    /// Keys, addressed through the k strides (token-major or head-major).
    pub k: u64,
    /// Values, addressed through the v strides.
    pub v: u64,
    /// Output, same element type as `q`, addressed through the o strides.
    pub o: u64,
    /// Optional f32 `[total_q, heads]` base-2 log-sum-exp output; 0 for none.
    pub lse: u64,
    /// `u32[batch + 1]` query token offsets.
    pub qo_indptr: u64,
    /// `u32[batch + 1]` key/value token offsets.
    pub kv_indptr: u64,
    /// `u32[3 * work_items]` (request, q tile, head) triples.
    pub work: u64,
    /// Packed S_c bytes; 0 means "compute every block" (dense mode).
    pub caching: u64,
    /// `u32[batch + 1]` byte offsets of each request's S_c segment.
    pub caching_indptr: u64,
    /// Packed S_s bytes; 0 means "attend to every KV block".
    pub skip: u64,
    /// `u32[batch + 1]` byte offsets of each request's S_s segment.
    pub skip_indptr: u64,
    /// Element stride between consecutive query tokens.
    pub q_stride_token: u32,
    /// Element stride between consecutive query heads.
    pub q_stride_head: u32,
    /// Element stride between consecutive key tokens.
    pub k_stride_token: u32,
    /// Element stride between consecutive key heads.
    pub k_stride_head: u32,
    /// Element stride between consecutive value tokens.
    pub v_stride_token: u32,
    /// Element stride between consecutive value heads.
    pub v_stride_head: u32,
    /// Element stride between consecutive output tokens.
    pub o_stride_token: u32,
    /// Element stride between consecutive output heads.
    pub o_stride_head: u32,
    /// Number of heads (query and key/value heads are equal).
    pub heads: u32,
    /// Query symbol block size in tokens (a multiple of [`ATTENTION_TILE_Q`]).
    pub block_q: u32,
    /// Key/value symbol block size in tokens (a multiple of [`ATTENTION_TILE_KV`]).
    pub block_kv: u32,
    /// `sm_scale * log2(e)`: logits are scaled into the base-2 domain once.
    pub scale_log2: f32,
}

/// One kernel entry of the PTX module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelAbi {
    /// The `.entry` name in the PTX.
    pub name: &'static str,
    /// Size in bytes of the single by-value parameter.
    pub param_size: usize,
    /// Alignment the PTX must declare for that parameter.
    pub param_align: usize,
}

/// The attention entry for an element type, head dimension and CTA size, if one is built.
pub const fn attention_entry(element: ElementKind, head_dim: u32, rows: AttentionRows) -> Option<&'static str> {
    use AttentionRows::{Rows64, Rows128};
    match (element, head_dim, rows) {
        (ElementKind::Bf16, 64, Rows64) => Some("flashomni_attention_bf16_d64_r64"),
        (ElementKind::Bf16, 64, Rows128) => Some("flashomni_attention_bf16_d64_r128"),
        (ElementKind::Bf16, 128, Rows64) => Some("flashomni_attention_bf16_d128_r64"),
        (ElementKind::Bf16, 128, Rows128) => Some("flashomni_attention_bf16_d128_r128"),
        (ElementKind::F16, 64, Rows64) => Some("flashomni_attention_f16_d64_r64"),
        (ElementKind::F16, 64, Rows128) => Some("flashomni_attention_f16_d64_r128"),
        (ElementKind::F16, 128, Rows64) => Some("flashomni_attention_f16_d128_r64"),
        (ElementKind::F16, 128, Rows128) => Some("flashomni_attention_f16_d128_r128"),
        _ => None,
    }
}

/// Dynamic shared memory an attention CTA needs: one Q tile plus two stages of K and V tiles,
/// 16-bit elements. Computed in `u32`: meaningful for the supported head dims (64, 128);
/// head dims past ~2²⁴ overflow.
pub const fn attention_shared_bytes(head_dim: u32, rows: AttentionRows) -> u32 {
    let row_bytes = head_dim * 2;
    rows.rows() * row_bytes + 2 * 2 * ATTENTION_TILE_KV * row_bytes
}

/// Output columns one GEMM CTA computes.
pub const GEMM_TILE_N: u32 = 128;
/// Reduction depth of one pipeline stage (8 chunks of 16 bytes per tile row).
pub const GEMM_TILE_K: u32 = 64;
/// Warps of a GEMM CTA along M.
pub const GEMM_WARPS_M: u32 = 2;
/// Warps of a GEMM CTA along N.
pub const GEMM_WARPS_N: u32 = 2;
/// Threads per GEMM CTA.
pub const GEMM_THREADS: u32 = 32 * GEMM_WARPS_M * GEMM_WARPS_N;

/// How many output rows one GEMM CTA computes; each size is its own kernel entry.
///
/// Both use [`GEMM_THREADS`] threads as 2 × 2 warps, [`GEMM_TILE_N`] columns and 3 pipeline
/// stages; they differ in rows (so in accumulators per thread and stage size), which sets the
/// registers and shared memory per CTA, so how many CTAs share a multiprocessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmRows {
    /// 64 rows, 3 pipeline stages (~73 KiB of shared memory): 3 resident CTAs per H100/H200
    /// multiprocessor against 2 of [`GemmRows::Rows128`], for launches with few tiles or few
    /// k-tiles per tile.
    Rows64,
    /// 128 rows, 3 pipeline stages (~97 KiB): the most math per byte loaded; the default.
    Rows128,
}

impl GemmRows {
    /// Both sizes.
    pub const ALL: [GemmRows; 2] = [GemmRows::Rows64, GemmRows::Rows128];

    /// Output rows per CTA.
    pub const fn rows(self) -> u32 {
        match self {
            GemmRows::Rows64 => 64,
            GemmRows::Rows128 => 128,
        }
    }

    /// `cp.async` pipeline stages of the main loop.
    pub const fn stages(self) -> u32 {
        match self {
            GemmRows::Rows64 => 3,
            GemmRows::Rows128 => 3,
        }
    }
}
/// Consumer warpgroups of the warp-specialized `sm_90a` GEMM-O ("wide" CTAs): each computes
/// a [`GEMM_O_WIDE_ROWS`] × [`GEMM_TILE_N`] tile, side by side, so the CTA's output tile is
/// `GEMM_O_WIDE_ROWS × GEMM_O_WIDE_CONSUMERS · GEMM_TILE_N` and every A k-tile it loads feeds
/// all of them.
pub const GEMM_O_WIDE_CONSUMERS: u32 = 2;
/// Output rows of a wide GEMM-O CTA (symbols: `token_offset` and `block_q` multiples of it).
pub const GEMM_O_WIDE_ROWS: u32 = 128;
/// Threads of a wide GEMM-O CTA: the consumer warpgroups, then a producer warpgroup (one warp
/// of it issues every copy; the warpgroup exists to hand its registers to the consumers).
pub const GEMM_O_WIDE_THREADS: u32 = (GEMM_O_WIDE_CONSUMERS + 1) * GEMM_THREADS;
/// Pipeline stages of a wide GEMM-O CTA.
pub const GEMM_O_WIDE_STAGES: u32 = 4;

/// Bytes of one wide GEMM-O stage: the A k-tile and one W k-tile per consumer.
pub const fn gemm_o_wide_stage_bytes() -> u32 {
    (GEMM_O_WIDE_ROWS + GEMM_O_WIDE_CONSUMERS * GEMM_TILE_N) * GEMM_TILE_K * 2
}

/// `u32` counters a wide GEMM-O launch claims tiles from ([`GemmParams::arrivals`]): the
/// next unclaimed tile, then the CTAs that claimed past the last one. Both are zero at launch;
/// the last CTA to finish zeroes them again.
pub const GEMM_O_TILE_COUNTERS: usize = 2;
/// Slots of a wide GEMM-O CTA's tile queue: tile numbers its producer warp announced and its
/// consumers have not all read yet.
pub const GEMM_O_WIDE_TILE_SLOTS: u32 = 2;

/// Dynamic shared memory of a wide GEMM-O CTA: the stages (which also stage the `C` and
/// output tiles), their `mbarrier`s (a full and an empty one per stage), the tile queue's
/// `mbarrier`s (announced and taken, per slot) and its tile numbers.
pub const fn gemm_o_wide_shared_bytes() -> u32 {
    GEMM_O_WIDE_STAGES * gemm_o_wide_stage_bytes()
        + 2 * (GEMM_O_WIDE_STAGES + GEMM_O_WIDE_TILE_SLOTS) * 8
        + 8 * GEMM_O_WIDE_TILE_SLOTS
}

/// The wide GEMM-O entry for an element type (built in the `sm_90a` module only).
pub const fn gemm_o_wide_entry(element: ElementKind) -> &'static str {
    match element {
        ElementKind::Bf16 => "flashomni_gemm_o_bf16_wide",
        ElementKind::F16 => "flashomni_gemm_o_f16_wide",
    }
}

/// Most heads GEMM-O supports (the size of its per-CTA head list in shared memory).
pub const GEMM_MAX_HEADS: u32 = 256;
/// [`GemmParams::mode`] of GEMM-O cache mode: sum the heads with S_c = 0, plus the bias.
pub const GEMM_O_MODE_CACHE: u32 = 0;
/// [`GemmParams::mode`] of GEMM-O active mode: sum the heads with S_c = 1, plus C.
pub const GEMM_O_MODE_ACTIVE: u32 = 1;

/// A CUDA tensor map (`CUtensorMap`): the opaque 128-byte descriptor, encoded on the host by
/// the driver, that a tensor-memory copy (`cp.async.bulk.tensor`) reads to move a box of a
/// matrix into shared memory. Kernel parameters are one of the places it may live.
///
/// The hardware wants it 64-byte aligned, but rustc's NVPTX calling convention accepts no
/// parameter alignment above 16, so the type is 16-byte aligned, [`GemmParams`] places its
/// maps at multiples of [`TENSOR_MAP_ALIGN`] bytes, and the PTX link step
/// (`tools/nvptx-link.sh`) declares the GEMM entries' parameter `.align 64`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TensorMap {
    /// The driver's encoding.
    pub words: [u64; 16],
}

/// Alignment a [`TensorMap`] needs in memory, and the declared alignment of the parameter of
/// every GEMM entry.
pub const TENSOR_MAP_ALIGN: usize = 64;

/// The tensor maps of one GEMM launch, every one at a multiple of [`TENSOR_MAP_ALIGN`] bytes
/// of [`GemmParams`] (each is 128 bytes and the struct starts the parameter).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmTensorMaps {
    /// `A` as a 2-D tensor (`k` × `m`, row stride `2k` bytes) copied in boxes of
    /// [`GEMM_TILE_K`] × the entry's rows with the 128-byte swizzle.
    pub a: TensorMap,
    /// `W` as a 2-D tensor (`k` × `n`) copied in [`GEMM_TILE_K`] × [`GEMM_TILE_N`] boxes with
    /// the 128-byte swizzle.
    pub w: TensorMap,
    /// GEMM-O with `C`: `C` as a 2-D tensor (`n` × `m`) copied in boxes of 64 columns × the
    /// entry's rows with the 128-byte swizzle; blank otherwise.
    pub c: TensorMap,
    /// The output as a 2-D tensor (`n` × `m`) stored in boxes of 64 columns × the entry's rows
    /// with the 128-byte swizzle.
    pub out: TensorMap,
}

/// Parameters of one GEMM-Q or GEMM-O launch: `out = addend + A·Wᵀ` over a selection of the
/// reduction or output axis.
///
/// Every launch has [`GEMM_THREADS`] threads and [`gemm_shared_bytes`] bytes of dynamic
/// shared memory, where `rows` is the entry's [`GemmRows::rows`]. All matrices are dense
/// row-major with 16-byte aligned rows (`k` and `n` multiples of 8).
/// - **GEMM-Q** (`head_dim = n / heads`): output element `(r, c)` is computed and written only
///   when S_c(qb(r), c / head_dim) = 1, where `qb(r) = (token_offset + r) / block_q`. The grid
///   is one-dimensional over *work items*: item `t` is output tile `t` (of the tile list, or
///   row-major over the `ceil(m / rows) × ceil(n / GEMM_TILE_N)` tiles without one). With
///   `splits > 1`, tiles from `split_first` on are split along the reduction axis: CTA
///   `split_first + u · splits + s` computes part `s` of tile `split_first + u` (see
///   [`gemm_split_k_tiles`]), so there are `split_first + (tiles − split_first) · splits`
///   items. On `sm_90a` the host may launch the grid in clusters of [`GEMM_Q_CLUSTER`] CTAs
///   and round it up to a whole cluster: CTAs from `items` on exit at once.
/// - **GEMM-O** (`head_dim = k / heads`): the grid is `(ceil(n / GEMM_TILE_N), ceil(m / rows), 1)`;
///   reduction slice `[h·head_dim, (h+1)·head_dim)` is summed when S_c(qb, h) = 0 (cache
///   mode) or 1 (active mode); every element is written. GEMM-O never splits (`splits` 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmParams {
    /// `sm_90a` module: the launch's tensor maps, encoded by the host launcher from the
    /// addresses and sizes below; unused (zero) by the portable module.
    pub maps: GemmTensorMaps,
    /// Activations `A`, `[m, k]`.
    pub a: u64,
    /// Weights `W`, `[n, k]` (a Linear layer's weight).
    pub w: u64,
    /// Optional bias vector `[n]` added to every row; 0 for none.
    pub bias: u64,
    /// Optional matrix `[m, n]` added to the product (GEMM-O's cache `C`); 0 for none.
    pub c: u64,
    /// Output `[m, n]`, same element type as the inputs.
    pub out: u64,
    /// Packed S_c segment of the request whose query tokens the rows are; 0 means every
    /// (query block, head) is computed.
    pub caching: u64,
    /// GEMM-Q only: `u32[2 · tiles]` (column tile, row tile) pairs listing the tiles with a
    /// computed pair (built from the symbols on the host), one per work item; 0: item `t` is
    /// column tile `t % ceil(n / GEMM_TILE_N)`, row tile `t / ceil(n / GEMM_TILE_N)`.
    pub tiles: u64,
    /// GEMM-Q with `splits > 1`: f32 partial sums, [`gemm_partial_bytes`] per split CTA, CTA
    /// `split_first + j` writing slot `j`.
    pub partials: u64,
    /// GEMM-Q with `splits > 1`: one `u32` arrival counter per split tile, zero before the
    /// launch; the last part of a tile to arrive sums the partials, writes the tile and resets
    /// its counter to zero. The wide GEMM-O: its [`GEMM_O_TILE_COUNTERS`] tile counters.
    pub arrivals: u64,
    /// Rows of `A` and of the output.
    pub m: u32,
    /// Columns of the output (rows of `W`).
    pub n: u32,
    /// Reduction length.
    pub k: u32,
    /// Heads the head axis (GEMM-Q: `n`, GEMM-O: `k`) is split into.
    pub heads: u32,
    /// Elements per head along the head axis.
    pub head_dim: u32,
    /// Attention-sequence position of row 0 (FlashOmni's `num_text_tokens`).
    pub token_offset: u32,
    /// Query symbol block size in tokens.
    pub block_q: u32,
    /// GEMM-O: [`GEMM_O_MODE_CACHE`] or [`GEMM_O_MODE_ACTIVE`]; ignored by GEMM-Q.
    pub mode: u32,
    /// GEMM-Q: the first work item whose tile is split (meaningful when `splits > 1`).
    pub split_first: u32,
    /// GEMM-Q: parts each tile from `split_first` on is split into (0 or 1: none), at most
    /// [`GEMM_MAX_SPLITS`] and at most the k-tiles of the reduction.
    pub splits: u32,
    /// GEMM-Q: the launch's work items; CTAs past them (a grid rounded up to whole clusters)
    /// do nothing. Ignored by GEMM-O.
    pub items: u32,
}

/// CTAs per thread-block cluster of a clustered GEMM-Q launch on `sm_90a`. A cluster runs on
/// one GPC, and on the H200 no cluster spans both sides of the L2 (docs/perf-journal.md, run 89), so
/// the two neighbouring tiles of a cluster (mostly one row block of `X`) run on one side of it.
/// Such launches moved 4–5% fewer L2 bytes (run 95); the mechanism was not isolated.
pub const GEMM_Q_CLUSTER: u32 = 2;

/// Most parts one GEMM-Q tile's reduction is split into.
pub const GEMM_MAX_SPLITS: u32 = 8;

/// The k-tiles (`GEMM_TILE_K` deep) that part `part` of `splits` covers in a reduction of
/// `k_tiles`: `[part · k_tiles / splits, (part + 1) · k_tiles / splits)`, so the parts tile
/// the reduction in order and differ in length by at most one. Computed in `u32`, so
/// `(part + 1) · k_tiles` must fit: the launchers keep `part < GEMM_MAX_SPLITS` and
/// `k < 2³¹`, so it stays below 2²⁸.
pub const fn gemm_split_k_tiles(k_tiles: u32, splits: u32, part: u32) -> (u32, u32) {
    let splits = if splits == 0 { 1 } else { splits };
    (part * k_tiles / splits, (part + 1) * k_tiles / splits)
}

/// Bytes of one split CTA's f32 partial tile (`rows × GEMM_TILE_N` f32).
pub const fn gemm_partial_bytes(rows: GemmRows) -> u64 {
    rows.rows() as u64 * GEMM_TILE_N as u64 * 4
}

/// The GEMM-Q entry for an element type and CTA size.
pub const fn gemm_q_entry(element: ElementKind, rows: GemmRows) -> &'static str {
    match (element, rows) {
        (ElementKind::Bf16, GemmRows::Rows64) => "flashomni_gemm_q_bf16_m64",
        (ElementKind::Bf16, GemmRows::Rows128) => "flashomni_gemm_q_bf16",
        (ElementKind::F16, GemmRows::Rows64) => "flashomni_gemm_q_f16_m64",
        (ElementKind::F16, GemmRows::Rows128) => "flashomni_gemm_q_f16",
    }
}

/// The GEMM-O entry for an element type and CTA size.
pub const fn gemm_o_entry(element: ElementKind, rows: GemmRows) -> &'static str {
    match (element, rows) {
        (ElementKind::Bf16, GemmRows::Rows64) => "flashomni_gemm_o_bf16_m64",
        (ElementKind::Bf16, GemmRows::Rows128) => "flashomni_gemm_o_bf16",
        (ElementKind::F16, GemmRows::Rows64) => "flashomni_gemm_o_f16_m64",
        (ElementKind::F16, GemmRows::Rows128) => "flashomni_gemm_o_f16",
    }
}

/// Bytes of one GEMM pipeline stage: an A tile and a W tile of 16-bit elements.
pub const fn gemm_stage_bytes(rows: GemmRows) -> u32 {
    (rows.rows() + GEMM_TILE_N) * GEMM_TILE_K * 2
}

/// Bytes of the GEMM's stage barriers: one 8-byte `mbarrier` per pipeline stage, on which the
/// `sm_90a` module's tensor-memory copies signal that a stage landed.
pub const fn gemm_barrier_bytes(rows: GemmRows) -> u32 {
    rows.stages() * 8
}

/// Dynamic shared memory a GEMM CTA needs: the pipeline stages (reused by the epilogue to
/// stage the output tile), GEMM-O's head list, and the stage barriers.
pub const fn gemm_shared_bytes(rows: GemmRows) -> u32 {
    rows.stages() * gemm_stage_bytes(rows) + GEMM_MAX_HEADS * 4 + gemm_barrier_bytes(rows)
}

const ATTENTION_PARAMS: usize = core::mem::size_of::<AttentionParams>();
const GEMM_PARAMS: usize = core::mem::size_of::<GemmParams>();

const _: () = assert!(
    core::mem::offset_of!(GemmParams, maps).is_multiple_of(TENSOR_MAP_ALIGN)
        && core::mem::size_of::<TensorMap>().is_multiple_of(TENSOR_MAP_ALIGN),
    "tensor maps sit at 64-byte multiples of the (64-byte aligned) GEMM parameter"
);

/// Every entry each PTX module must contain, with its parameter size.
pub const KERNELS: &[KernelAbi] = &[
    KernelAbi { name: "flashomni_attention_bf16_d64_r64", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_bf16_d64_r128", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_bf16_d128_r64", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_bf16_d128_r128", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_f16_d64_r64", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_f16_d64_r128", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_f16_d128_r64", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi { name: "flashomni_attention_f16_d128_r128", param_size: ATTENTION_PARAMS, param_align: 8 },
    KernelAbi {
        name: gemm_q_entry(ElementKind::Bf16, GemmRows::Rows64),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_q_entry(ElementKind::Bf16, GemmRows::Rows128),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_q_entry(ElementKind::F16, GemmRows::Rows64),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_q_entry(ElementKind::F16, GemmRows::Rows128),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_o_entry(ElementKind::Bf16, GemmRows::Rows64),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_o_entry(ElementKind::Bf16, GemmRows::Rows128),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_o_entry(ElementKind::F16, GemmRows::Rows64),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
    KernelAbi {
        name: gemm_o_entry(ElementKind::F16, GemmRows::Rows128),
        param_size: GEMM_PARAMS,
        param_align: TENSOR_MAP_ALIGN,
    },
];

/// Entries that only the `sm_90a` module contains, with their parameter sizes.
pub const HOPPER_KERNELS: &[KernelAbi] = &[
    KernelAbi { name: gemm_o_wide_entry(ElementKind::Bf16), param_size: GEMM_PARAMS, param_align: TENSOR_MAP_ALIGN },
    KernelAbi { name: gemm_o_wide_entry(ElementKind::F16), param_size: GEMM_PARAMS, param_align: TENSOR_MAP_ALIGN },
];
