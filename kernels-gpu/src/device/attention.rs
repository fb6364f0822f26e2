//! Block-sparse attention obeying FlashOmni's symbols, on `mma.sync` tensor cores.
//!
//! One CTA (4 warps) computes 64 or 128 query rows of one request and one head; each warp owns
//! `MT` m16 tiles (16 or 32 rows) and keeps their O accumulators in registers. Work items are
//! (request, 128-row q tile, head) triples chosen by the host (dense, or only computed blocks).
//! - S_c = 0 for the CTA's query block: the CTA returns before any load or store.
//! - The key/value loop walks 64-token tiles of kept KV blocks only: a dropped block is never
//!   loaded nor multiplied. The next kept tile is fetched with `cp.async` into the other of two
//!   shared-memory stages while the current one is being used.
//! - Softmax is online in f32, in the base-2 domain (`scale_log2` folds `sm_scale · log2 e`).
//! - O is normalised, rounded, staged through the warp's own Q rows in shared memory and
//!   written with 16-byte stores. Rows with no kept key get 0 (LSE −∞).

use core::num::NonZeroU32;

use seq_macro::seq;

use flashomni_symbols::{blocks, caching_index, skip_index};

use super::element::{Bf16, F16, MmaElement};
use super::params::{nonzero, read_u32, symbol_bit};
use super::ptx::{
    block_index_x, cp_async_commit, cp_async_wait, exp2, ld_shared_v4, ldmatrix_x4, ldmatrix_x4_trans, log2,
    shared_base, shfl_xor, st_global_v4, st_shared_b32, sync_threads, sync_warp, thread_index,
};
use super::tile::Tile;
use crate::abi::{ATTENTION_THREADS, ATTENTION_TILE_KV, ATTENTION_TILE_Q, AttentionParams};

/// Bytes per element of every instantiated type.
const ELEMENT_BYTES: u64 = 2;
/// Keys per 8-wide n-tile of the S accumulator.
const KEYS_PER_NTILE: u32 = 8;
/// Warps per CTA.
const WARPS: u32 = ATTENTION_THREADS / 32;

/// The S_s row of one (query block, head): which 64-token KV tiles to visit.
struct KvWalk {
    /// Start of the request's S_s segment, or null in dense mode.
    segment: *const u8,
    /// Logical index of KV block 0 of this row.
    row_base: u32,
    block_kv: NonZeroU32,
    tiles: u32,
}

impl KvWalk {
    /// First kept tile at or after `tile`; `self.tiles` when there is none. Whole dropped
    /// blocks are skipped at once, so a dropped block costs one bit test.
    #[inline(always)]
    fn next_kept(&self, mut tile: u32) -> u32 {
        if self.segment.is_null() {
            return tile.min(self.tiles);
        }
        while tile < self.tiles {
            let block = tile * ATTENTION_TILE_KV / self.block_kv;
            // SAFETY: the host validated the segment length against nq·H·nk bits.
            if unsafe { symbol_bit(self.segment, self.row_base + block) } {
                return tile;
            }
            tile = (block + 1) * self.block_kv.get() / ATTENTION_TILE_KV;
        }
        self.tiles
    }
}

/// Running softmax statistics of the two rows (g and g+8) a lane holds, base-2 domain.
struct RowStats {
    max: [f32; 2],
    /// This lane's partial sum; the quad's sum is formed once in the epilogue.
    sum: [f32; 2],
}

/// Computes one CTA of a block-sparse attention launch.
///
/// `DT` = head_dim / 8 (n-tiles of the O accumulator), `DK` = head_dim / 16 (k-steps of Q·Kᵀ),
/// `MT` = m16 tiles per warp (1 or 2: 64- or 128-row CTAs). The m-tile loops are unrolled by
/// `seq!` for up to two m-tiles, each guarded by `M < MT`. `SN` = 8-key n-tiles per softmax
/// sub-tile (4 or 8: 32 or 64 keys), `SP = SN / 2` (k-steps of P·V per sub-tile).
///
/// # Safety
/// `params` must describe buffers validated by the host launcher (sizes, strides, 16-byte
/// alignment, symbol segment lengths), and the launch must use `ATTENTION_THREADS` threads and
/// `attention_shared_bytes(head_dim)` bytes of dynamic shared memory.
#[inline(always)]
unsafe fn attention<
    E: MmaElement,
    const DT: usize,
    const DK: usize,
    const MT: usize,
    const SN: usize,
    const SP: usize,
>(
    params: &AttentionParams,
) {
    const { assert!(SN == 2 * SP && (SN as u32 * KEYS_PER_NTILE).is_power_of_two()) };
    let sub_kv = SN as u32 * KEYS_PER_NTILE;
    let p = params;
    let tid = thread_index();
    let lane = tid % 32;
    let warp = tid / 32;
    let cta_rows = 16 * WARPS * MT as u32;
    let parts = ATTENTION_TILE_Q / cta_rows;
    let (work, part) = ((block_index_x() / parts) as usize, block_index_x() % parts);
    // SAFETY: the host sized the work list for this grid: item `work` exists.
    let (request, tile_q, head) =
        unsafe { (read_u32(p.work, 3 * work), read_u32(p.work, 3 * work + 1), read_u32(p.work, 3 * work + 2)) };
    let r = request as usize;
    // SAFETY: `request` < batch and both indptrs hold batch + 1 entries.
    let (q_start, q_end, kv_start, kv_end) = unsafe {
        (read_u32(p.qo_indptr, r), read_u32(p.qo_indptr, r + 1), read_u32(p.kv_indptr, r), read_u32(p.kv_indptr, r + 1))
    };
    let (q_len, kv_len) = (q_end - q_start, kv_end - kv_start);
    let row0 = tile_q * ATTENTION_TILE_Q + part * cta_rows;
    if row0 >= q_len {
        return; // the second half of a request's last, partial q tile
    }
    let q_block = row0 / nonzero(p.block_q);

    if p.caching != 0 {
        // SAFETY: the symbol indptrs hold batch + 1 entries and each segment was validated
        // against this request's nq·H bits.
        let computed = unsafe {
            let segment = (p.caching + read_u32(p.caching_indptr, r) as u64) as *const u8;
            symbol_bit(segment, caching_index(q_block, head, p.heads))
        };
        if !computed {
            return; // cached: this block keeps whatever the output buffer holds
        }
    }
    let walk = KvWalk {
        segment: if p.skip == 0 {
            core::ptr::null()
        } else {
            // SAFETY: the S_s indptr holds batch + 1 entries.
            (p.skip + unsafe { read_u32(p.skip_indptr, r) } as u64) as *const u8
        },
        row_base: skip_index(q_block, head, 0, p.heads, blocks(kv_len, p.block_kv)),
        block_kv: nonzero(p.block_kv),
        tiles: blocks(kv_len, ATTENTION_TILE_KV),
    };

    // Shared memory: the Q tile, then two K stages, then two V stages.
    let chunks = DT as u32;
    let q_tile = Tile::at(shared_base(), cta_rows, chunks);
    let stage_bytes = Tile::at(0, ATTENTION_TILE_KV, chunks).bytes();
    let k_tile = |stage: u32| Tile::at(q_tile.end() + stage * stage_bytes, ATTENTION_TILE_KV, chunks);
    let v_tile = |stage: u32| Tile::at(q_tile.end() + (2 + stage) * stage_bytes, ATTENTION_TILE_KV, chunks);

    // Global addresses as integers: forming them needs no `unsafe`, only the copies do.
    let q_rows = (q_start + row0) as u64;
    let q_global =
        (p.q + (q_rows * p.q_stride_token as u64 + head as u64 * p.q_stride_head as u64) * ELEMENT_BYTES) as *const u8;
    let k_head = p.k + head as u64 * p.k_stride_head as u64 * ELEMENT_BYTES;
    let v_head = p.v + head as u64 * p.v_stride_head as u64 * ELEMENT_BYTES;
    let k_row_bytes = p.k_stride_token as u64 * ELEMENT_BYTES;
    let v_row_bytes = p.v_stride_token as u64 * ELEMENT_BYTES;
    // Issues the copies of KV tile `tile` into stage `stage`.
    let load_kv = |tile: u32, stage: u32| {
        let first = (kv_start + tile * ATTENTION_TILE_KV) as u64;
        let valid = kv_len - tile * ATTENTION_TILE_KV;
        // SAFETY: rows below `valid` are tokens of this request; the rest are zero-filled.
        unsafe {
            k_tile(stage).load_async::<ATTENTION_THREADS>(
                (k_head + first * k_row_bytes) as *const u8,
                k_row_bytes,
                valid,
            );
            v_tile(stage).load_async::<ATTENTION_THREADS>(
                (v_head + first * v_row_bytes) as *const u8,
                v_row_bytes,
                valid,
            );
        }
    };

    // SAFETY: rows below `q_len - row0` are this request's queries; the rest are zero-filled.
    unsafe { q_tile.load_async::<ATTENTION_THREADS>(q_global, p.q_stride_token as u64 * ELEMENT_BYTES, q_len - row0) };
    let mut tile = walk.next_kept(0);
    if tile < walk.tiles {
        load_kv(tile, 0);
    }
    cp_async_commit();
    cp_async_wait::<0>();
    sync_threads();

    // Each warp owns `MT` m16 tiles of query rows: every K and V fragment it loads feeds
    // all of them, which halves shared-memory reads per MMA against one m-tile per warp.
    // Q stays in shared memory and is re-read per k-step, to leave registers to O and S.
    let warp_row = warp * 16 * MT as u32;
    let row_bytes = q_tile.row_bytes();
    let q_base = q_tile.a_fragment_base(warp_row, lane);
    let mut o = [[[0f32; 4]; DT]; MT];
    let mut stats = [const { RowStats { max: [f32::NEG_INFINITY; 2], sum: [0.0; 2] } }; MT];
    let mut stage = 0;
    while tile < walk.tiles {
        let next = walk.next_kept(tile + 1);
        if next < walk.tiles {
            load_kv(next, stage ^ 1);
        }
        cp_async_commit();

        let k_base = k_tile(stage).b_fragment_base(0, lane);
        let v_base = v_tile(stage).b_fragment_trans_base(0, lane);
        // The tile is consumed in sub-tiles of `sub_kv` keys, each a full online-softmax step:
        // only one sub-tile of logits is live at a time, which keeps O in registers.
        for sub in 0..ATTENTION_TILE_KV / sub_kv {
            let first_key = sub * sub_kv;
            if tile * ATTENTION_TILE_KV + first_key >= kv_len {
                break; // the rest of the last tile is past the sequence
            }
            let mut s = [[[0f32; 4]; SN]; MT];
            for k in 0..DK as u32 {
                let mut a = [[0u32; 4]; MT];
                for (m, a) in a.iter_mut().enumerate() {
                    let address = Tile::at_chunk(q_base, 2 * k) + 16 * m as u32 * row_bytes;
                    // SAFETY: the address lies in the Q tile, complete and visible since the
                    // first barrier.
                    *a = unsafe { ldmatrix_x4(address) };
                }
                for pair in 0..SP as u32 {
                    let address = Tile::at_chunk(k_base, 2 * k) + (first_key + 16 * pair) * row_bytes;
                    // SAFETY: the address lies in the current K stage, complete and visible.
                    let b = unsafe { ldmatrix_x4(address) };
                    for (s, a) in s.iter_mut().zip(&a) {
                        E::mma(&mut s[2 * pair as usize], a, b[0], b[1]);
                        E::mma(&mut s[2 * pair as usize + 1], a, b[2], b[3]);
                    }
                }
            }
            let mut p_frag = [[[0u32; 4]; SP]; MT];
            let key0 = tile * ATTENTION_TILE_KV + first_key;
            seq!(M in 0..2 {
                if M < MT {
                    let probabilities =
                        softmax_update::<DT, SN, SP>(&mut s[M], &mut o[M], &mut stats[M], p.scale_log2, key0, kv_len, lane);
                    for (packed, a) in p_frag[M].iter_mut().zip(&probabilities) {
                        *packed = [E::pack(a[0], a[1]), E::pack(a[2], a[3]), E::pack(a[4], a[5]), E::pack(a[6], a[7])];
                    }
                }
            });
            for k in 0..SP {
                for pair in 0..DT as u32 / 2 {
                    let address = Tile::at_chunk(v_base, 2 * pair) + (first_key + 16 * k as u32) * row_bytes;
                    // SAFETY: the address lies in the current V stage, complete and visible.
                    let b = unsafe { ldmatrix_x4_trans(address) };
                    for (o, frag) in o.iter_mut().zip(&p_frag) {
                        E::mma(&mut o[2 * pair as usize], &frag[k], b[0], b[1]);
                        E::mma(&mut o[2 * pair as usize + 1], &frag[k], b[2], b[3]);
                    }
                }
            }
        }

        cp_async_wait::<0>();
        sync_threads(); // the next stage is complete, and nobody reads this one any more
        tile = next;
        stage ^= 1;
    }

    // Re-read the epilogue's scalars rather than keeping them live through the main loop,
    // where every register goes to O and S.
    // SAFETY: the same reads as at the start of the kernel.
    let (head, q_start, q_len) = unsafe {
        let request = read_u32(p.work, 3 * work) as usize;
        let q_start = read_u32(p.qo_indptr, request);
        (read_u32(p.work, 3 * work + 2), q_start, read_u32(p.qo_indptr, request + 1) - q_start)
    };
    let m_tile_row = |m: u32| warp_row + 16 * m;
    seq!(M in 0..2 {
        if M < MT {
            // SAFETY: the launch matches the layout the host validated.
            unsafe { write_output::<E, DT>(p, &q_tile, &o[M], &stats[M], q_start, q_len, row0, head, lane, m_tile_row(M)) };
        }
    });
}

/// Folds one sub-tile of logits `s` (keys `key0..key0 + 8·SN`) into the running statistics
/// and O accumulator, and returns the probabilities as this lane's A fragments for P·V:
/// `[k-step][a0..a7]` in fragment order.
// `seq!` expands `ROW` to the literals 0 and 1, so `2 * ROW` reads as `2 * 0` to clippy.
#[allow(clippy::erasing_op, clippy::identity_op)]
#[inline(always)]
fn softmax_update<const DT: usize, const SN: usize, const SP: usize>(
    s: &mut [[f32; 4]; SN],
    o: &mut [[f32; 4]; DT],
    stats: &mut RowStats,
    scale_log2: f32,
    key0: u32,
    kv_len: u32,
    lane: u32,
) -> [[f32; 8]; SP] {
    // Logits stay unscaled until the exponent: the scale is positive, so the maximum of the
    // raw logits scales to the maximum of the scaled ones, and `s·scale − max` is one FFMA.
    if key0 + SN as u32 * KEYS_PER_NTILE > kv_len {
        let first_col = key0 + (lane % 4) * 2;
        for (n, acc) in s.iter_mut().enumerate() {
            for (i, x) in acc.iter_mut().enumerate() {
                if first_col + n as u32 * 8 + (i as u32 % 2) >= kv_len {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
    seq!(ROW in 0..2 {
        let mut tile_max = f32::NEG_INFINITY;
        for acc in s.iter() {
            tile_max = tile_max.max(acc[2 * ROW]).max(acc[2 * ROW + 1]);
        }
        tile_max = tile_max.max(shfl_xor(tile_max, 1));
        tile_max = tile_max.max(shfl_xor(tile_max, 2));
        // The first sub-tile of a kept tile holds a valid key, so from then on `new_max` is
        // finite (a later, fully masked sub-tile rescales by 1 and adds zeros).
        let new_max = stats.max[ROW].max(tile_max * scale_log2);
        let rescale = exp2(stats.max[ROW] - new_max);
        stats.max[ROW] = new_max;
        let mut tile_sum = 0.0;
        for acc in s.iter_mut() {
            acc[2 * ROW] = exp2(core::f32::math::mul_add(acc[2 * ROW], scale_log2, -new_max));
            acc[2 * ROW + 1] = exp2(core::f32::math::mul_add(acc[2 * ROW + 1], scale_log2, -new_max));
            tile_sum += acc[2 * ROW] + acc[2 * ROW + 1];
        }
        stats.sum[ROW] = core::f32::math::mul_add(stats.sum[ROW], rescale, tile_sum);
        for acc in o.iter_mut() {
            acc[2 * ROW] *= rescale;
            acc[2 * ROW + 1] *= rescale;
        }
    });
    let mut frags = [[0f32; 8]; SP];
    for (k, frag) in frags.iter_mut().enumerate() {
        let (lo, hi) = (&s[2 * k], &s[2 * k + 1]);
        *frag = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
    }
    frags
}

/// Normalises O, stages it through this warp's rows of the Q tile and stores it with 16-byte
/// writes; writes the base-2 LSE when requested.
///
/// # Safety
/// `p` must describe a validated launch; `q_tile` must be this CTA's Q tile.
// `seq!` expands `ROW` to the literals 0 and 1, so `8 * ROW` reads as `8 * 0` to clippy.
#[allow(clippy::too_many_arguments, clippy::erasing_op, clippy::identity_op)]
#[inline(always)]
unsafe fn write_output<E: MmaElement, const DT: usize>(
    p: &AttentionParams,
    q_tile: &Tile,
    o: &[[f32; 4]; DT],
    stats: &RowStats,
    q_start: u32,
    q_len: u32,
    row0: u32,
    head: u32,
    lane: u32,
    warp_row: u32,
) {
    let mut inverse = [0f32; 2];
    seq!(ROW in 0..2 {
        let mut sum = stats.sum[ROW];
        sum += shfl_xor(sum, 1);
        sum += shfl_xor(sum, 2);
        inverse[ROW] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        let local = warp_row + lane / 4 + 8 * ROW;
        if p.lse != 0 && lane.is_multiple_of(4) && row0 + local < q_len {
            let lse = if sum > 0.0 { stats.max[ROW] + log2(sum) } else { f32::NEG_INFINITY };
            let index = (q_start + row0 + local) as usize * p.heads as usize + head as usize;
            // SAFETY: the host sized the LSE buffer as [total_q, heads].
            unsafe { *(p.lse as *mut f32).add(index) = lse };
        }
    });
    // These 16 rows of the Q tile belong to this warp alone, and its last read of them came
    // before the main loop's final barrier: they are free to stage O.
    for (n, acc) in o.iter().enumerate() {
        for row in 0..2 {
            let packed = E::pack(acc[2 * row] * inverse[row], acc[2 * row + 1] * inverse[row]);
            let address = q_tile.chunk_address(warp_row + lane / 4 + 8 * row as u32, n as u32) + (lane % 4) * 4;
            // SAFETY: the address lies in this warp's rows of the Q tile.
            unsafe { st_shared_b32(address, packed) };
        }
    }
    sync_warp();
    let row_bytes = p.o_stride_token as u64 * ELEMENT_BYTES;
    let head_offset = head as u64 * p.o_stride_head as u64 * ELEMENT_BYTES;
    let mut i = 0;
    while i < 16 * DT as u32 / 32 {
        let linear = lane + 32 * i;
        let (row, chunk) = (warp_row + linear / DT as u32, linear % DT as u32);
        if row0 + row < q_len {
            // SAFETY: the row was staged above; the destination is row `row` of this request
            // and head inside the output buffer the host validated.
            unsafe {
                let value = ld_shared_v4(q_tile.chunk_address(row, chunk));
                let token = (q_start + row0 + row) as u64;
                let dst = (p.o as *mut u8).add((token * row_bytes + head_offset + chunk as u64 * 16) as usize);
                st_global_v4(dst, value);
            }
        }
        i += 1;
    }
}

macro_rules! attention_entry {
    ($name:ident, $element:ty, $dt:literal, $dk:literal, $mt:literal, $sn:literal, $sp:literal) => {
        /// Kernel entry: see [`attention`].
        ///
        /// # Safety
        /// Launched only by the host crate with a validated [`AttentionParams`].
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(params: AttentionParams) {
            // SAFETY: forwarded from the entry's contract.
            unsafe { attention::<$element, $dt, $dk, $mt, $sn, $sp>(&params) }
        }
    };
}

// 64-key softmax sub-tiles (one Q fragment load per tile) wherever O and S fit in registers
// without spills; head_dim 128 with 128-row CTAs (two m-tiles of 64 O columns) takes 32-key
// sub-tiles.
attention_entry!(flashomni_attention_bf16_d64_r64, Bf16, 8, 4, 1, 8, 4);
attention_entry!(flashomni_attention_bf16_d64_r128, Bf16, 8, 4, 2, 8, 4);
attention_entry!(flashomni_attention_bf16_d128_r64, Bf16, 16, 8, 1, 8, 4);
attention_entry!(flashomni_attention_bf16_d128_r128, Bf16, 16, 8, 2, 4, 2);
attention_entry!(flashomni_attention_f16_d64_r64, F16, 8, 4, 1, 8, 4);
attention_entry!(flashomni_attention_f16_d64_r128, F16, 8, 4, 2, 8, 4);
attention_entry!(flashomni_attention_f16_d128_r64, F16, 16, 8, 1, 8, 4);
attention_entry!(flashomni_attention_f16_d128_r128, F16, 16, 8, 2, 4, 2);
