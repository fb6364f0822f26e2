//! CUDA tensor maps for the `sm_90a` GEMM's tensor-memory copies.
//!
//! A map describes one row-major matrix of 16-bit elements as a 2-D tensor (the contiguous
//! axis first) and the box one copy moves: 64 elements (128 bytes) of a row by the CTA's rows,
//! in shared memory in the 128-byte swizzle that the kernels' tiles and `wgmma` use. Loads read
//! everything outside the matrix as zero; stores drop it. The driver encodes it
//! (`cuTensorMapEncodeTiled`, CUDA 12 and newer); cust 0.3.2 does not bind that function, so
//! it is looked up in the loaded driver library once, through `libloading`.

use core::ffi::c_void;
use std::sync::OnceLock;

use cust::sys::CUresult;
use flashomni_kernels::abi::{GEMM_TILE_K, TensorMap};
use libloading::Library;

use crate::error::{Error, Result};
use crate::launch::check;

/// `cuTensorMapEncodeTiled`.
type EncodeTiled = unsafe extern "C" fn(
    map: *mut TensorMap,
    data_type: u32,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dims: *const u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    out_of_bounds_fill: u32,
) -> CUresult;

/// The driver library (the one cust links, already loaded).
const DRIVER_LIBRARY: &str = "libcuda.so.1";
/// `CU_TENSOR_MAP_DATA_TYPE_UINT16`: any 16-bit element (copies move bits; zero fill is 0).
const DATA_TYPE_16_BIT: u32 = 1;
/// `CU_TENSOR_MAP_INTERLEAVE_NONE`.
const INTERLEAVE_NONE: u32 = 0;
/// `CU_TENSOR_MAP_SWIZZLE_128B`.
const SWIZZLE_128_BYTES: u32 = 3;
/// `CU_TENSOR_MAP_L2_PROMOTION_L2_256B`.
const L2_PROMOTION_256_BYTES: u32 = 3;
/// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`: out-of-bounds elements read as zero.
const OUT_OF_BOUNDS_ZERO: u32 = 0;

/// The resolved `cuTensorMapEncodeTiled`, or why it is unavailable.
fn encode_tiled() -> Result<EncodeTiled> {
    static ENCODE: OnceLock<std::result::Result<EncodeTiled, String>> = OnceLock::new();
    ENCODE
        .get_or_init(|| {
            // SAFETY: loading the CUDA driver runs no initialisers beyond the ones cust's own
            // link against it already ran.
            let library = unsafe { Library::new(DRIVER_LIBRARY) }.map_err(|err| format!("{DRIVER_LIBRARY}: {err}"))?;
            // SAFETY: the symbol, when present, has the CUDA 12 signature of `EncodeTiled`.
            let encode = unsafe { library.get::<EncodeTiled>(b"cuTensorMapEncodeTiled\0") }
                .map(|symbol| *symbol)
                .map_err(|err| format!("cuTensorMapEncodeTiled (needs a CUDA 12 driver): {err}"))?;
            // The function pointer must outlive every call: keep the library loaded.
            std::mem::forget(library);
            Ok(encode)
        })
        .clone()
        .map_err(|reason| Error::Unsupported(format!("tensor-memory copies: {reason}")))
}

/// Elements of a box along the contiguous axis: one 128-byte swizzled row (a GEMM k-tile row,
/// or one panel of the staged output tile).
const BOX_COLUMNS: u32 = GEMM_TILE_K;

/// The map of the row-major `[rows, columns]` matrix of 16-bit elements at device address
/// `address`, copied in boxes of 64 columns × `box_rows` rows.
///
/// The caller has checked what the copies need: `address` 16-byte aligned, `columns` a
/// multiple of 8 (16-byte rows), `rows` and `columns` at least 1, `box_rows` at most 256.
pub(crate) fn swizzled_boxes(address: u64, rows: u32, columns: u32, box_rows: u32) -> Result<TensorMap> {
    let encode = encode_tiled()?;
    let dims = [u64::from(columns), u64::from(rows)];
    let strides = [u64::from(columns) * 2];
    let box_dims = [BOX_COLUMNS, box_rows];
    let element_strides = [1u32, 1];
    let mut map = TensorMap::default();
    // SAFETY: every array has the length the rank (2) asks for; the driver only writes `map`
    // and reads the device address as a number.
    let status = unsafe {
        encode(
            &mut map,
            DATA_TYPE_16_BIT,
            2,
            address as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            box_dims.as_ptr(),
            element_strides.as_ptr(),
            INTERLEAVE_NONE,
            SWIZZLE_128_BYTES,
            L2_PROMOTION_256_BYTES,
            OUT_OF_BOUNDS_ZERO,
        )
    };
    check(status, "encoding a tensor map")?;
    Ok(map)
}
