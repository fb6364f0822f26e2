//! What the two GEMM launchers share at launch time: the per-tile launch shape, the tensor
//! maps the `sm_90a` module copies through, and the launch itself.

use cust::stream::Stream;
use flashomni_kernels::abi::{self, GEMM_THREADS, GEMM_TILE_N, GemmParams, GemmRows, GemmTensorMaps, TensorMap};

use crate::engine::Engine;
use crate::error::Result;
use crate::launch::{LaunchShape, launch};
use crate::module::Arch;
use crate::tensor_map;

/// The launch shape of a per-tile GEMM entry of `rows`-row CTAs over `grid`, in clusters of
/// `cluster` CTAs along x (1: none).
pub(super) fn per_tile_shape(grid: (u32, u32, u32), rows: GemmRows, cluster: u32) -> LaunchShape {
    LaunchShape { grid, threads: GEMM_THREADS, shared_bytes: abi::gemm_shared_bytes(rows), cluster }
}

impl Engine {
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
    pub(super) unsafe fn launch_gemm(
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
