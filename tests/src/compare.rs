//! Comparison of kernel outputs with float64 references, with tolerances fit for 16-bit
//! storage.

use core::fmt;

/// Tolerances for one comparison: element `i` passes when
/// `|got − want| ≤ atol + rtol·|want|`, and the whole tensor when
/// `‖got − want‖₂ / ‖want‖₂ ≤ max_relative_l2`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Absolute term.
    pub atol: f64,
    /// Relative term.
    pub rtol: f64,
    /// Bound on the relative L2 error of the whole tensor.
    pub max_relative_l2: f64,
}

impl Tolerance {
    /// For bf16 outputs (8 significant bits) of f32-accumulated kernels.
    pub const BF16: Tolerance = Tolerance { atol: 1.5e-2, rtol: 2e-2, max_relative_l2: 1e-2 };
    /// For f16 outputs (11 significant bits) of f32-accumulated kernels.
    pub const F16: Tolerance = Tolerance { atol: 4e-3, rtol: 5e-3, max_relative_l2: 3e-3 };

    /// For f16 outputs of the GEMMs (GEMM-Q, GEMM-O): f32 accumulation and a single rounding
    /// to f16, whose relative error is at most the unit roundoff 2⁻¹¹ ≈ 4.9e-4 (GEMM-O's
    /// cache-then-active sequence rounds twice, but each launch is compared with a reference
    /// built on the cache it was given, and the comparison with the dense projection widens
    /// `atol` by the cache's rounding, see [`unit_roundoff`]). [`Tolerance::F16`] is loose
    /// enough to pass a result that went through bf16 precision; this one is not:
    /// - `rtol` 1.5e-3: three roundings' worth (a kernel rounding twice, say the bias add in
    ///   f16, still passes), below the bf16 unit roundoff 2⁻⁸ ≈ 3.9e-3.
    /// - `max_relative_l2` 8e-4: one f16 rounding gives ≈ 2.1e-4, one bf16 rounding ≈ 1.7e-3.
    /// - `atol` 5e-4: where `|want|` < `atol / rtol` ≈ 0.33 it bounds the f16 rounding there
    ///   (≤ 1.2e-4) plus the f32 accumulation error (≤ 1.5e-4 at K = 3072 even for a plain
    ///   sequential sum of the test inputs, whose outputs reach |y| ≈ 90).
    ///
    /// A CPU simulation of a correct kernel (f16 inputs uniform on (−1, 1), or (−0.5, 0.5) for
    /// GEMM-O, f32 sums, optionally split in 3–8 parts, one rounding; 300 × 256 outputs) over
    /// K = 8 to 3072 put its worst element at 0.28–0.32 of the bound and its L2 at
    /// 1.6e-4–2.1e-4 (at most 0.26 of the limit); the same results rounded to bf16 failed on
    /// 11–41% of the elements with L2 1.25e-3–1.67e-3 (1.6–2.1 times the limit). Cache then
    /// active mode against the dense projection, with `atol` widened by 2⁻¹¹·|C|, put its worst
    /// element at 0.27–0.76 of the bound up to K = 3072 (4.4 times over without the widening).
    pub const F16_GEMM: Tolerance = Tolerance { atol: 5e-4, rtol: 1.5e-3, max_relative_l2: 8e-4 };

    /// The tolerance for an element type by name (`"bf16"` or `"f16"`).
    pub fn for_element(name: &str) -> Tolerance {
        if name == "f16" { Tolerance::F16 } else { Tolerance::BF16 }
    }

    /// The tolerance for GEMM outputs of an element type by name: [`Tolerance::F16_GEMM`] for
    /// `"f16"`, [`Tolerance::BF16`] otherwise.
    pub fn for_gemm(name: &str) -> Tolerance {
        if name == "f16" { Tolerance::F16_GEMM } else { Tolerance::BF16 }
    }
}

/// The unit roundoff of a 16-bit element type by name (`"bf16"` or `"f16"`): the largest
/// relative error of rounding a value to it, 2⁻⁸ for bf16 (8 significant bits) and 2⁻¹¹ for f16
/// (11). A value that passed through an extra rounding may differ from the exact one by this
/// much of its magnitude.
pub fn unit_roundoff(name: &str) -> f64 {
    if name == "f16" { 2f64.powi(-11) } else { 2f64.powi(-8) }
}

/// Accumulates element comparisons and reports the first failures.
#[derive(Default)]
pub struct Comparison {
    squared_error: f64,
    squared_reference: f64,
    compared: usize,
    failures: Vec<String>,
    failure_count: usize,
}

impl Comparison {
    /// Compares one element; `label` describes where it is (only formatted on failure).
    pub fn element(&mut self, got: f64, want: f64, tolerance: Tolerance, label: impl FnOnce() -> String) {
        self.compared += 1;
        let error = got - want;
        self.squared_error += error * error;
        self.squared_reference += want * want;
        let within = error.abs() <= tolerance.atol + tolerance.rtol * want.abs();
        if !within {
            // NaN lands here too: a NaN comparison is false.
            self.fail(|| format!("{}: got {got}, want {want}", label()));
        }
    }

    /// Records a failure that is not a numeric comparison.
    pub fn fail(&mut self, message: impl FnOnce() -> String) {
        self.failure_count += 1;
        if self.failures.len() < 8 {
            self.failures.push(message());
        }
    }

    /// Number of elements compared.
    pub fn compared(&self) -> usize {
        self.compared
    }

    /// `‖got − want‖₂ / ‖want‖₂` over the compared elements (0 when the reference is all 0
    /// and so is the error).
    pub fn relative_l2(&self) -> f64 {
        if self.squared_reference == 0.0 {
            self.squared_error.sqrt()
        } else {
            (self.squared_error / self.squared_reference).sqrt()
        }
    }

    /// `Ok` when every element passed and the relative L2 error is within bounds.
    pub fn finish(self, tolerance: Tolerance) -> Result<(), ComparisonError> {
        let relative_l2 = self.relative_l2();
        if self.failure_count == 0 && relative_l2 <= tolerance.max_relative_l2 {
            Ok(())
        } else {
            Err(ComparisonError {
                relative_l2,
                failure_count: self.failure_count,
                compared: self.compared,
                failures: self.failures,
            })
        }
    }
}

/// Why a comparison failed.
#[derive(Debug)]
pub struct ComparisonError {
    /// Relative L2 error over all compared elements.
    pub relative_l2: f64,
    /// Number of failed elements.
    pub failure_count: usize,
    /// Number of compared elements.
    pub compared: usize,
    /// The first few failures.
    pub failures: Vec<String>,
}

impl fmt::Display for ComparisonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} elements failed, relative L2 error {:.3e}",
            self.failure_count, self.compared, self.relative_l2
        )?;
        for failure in &self.failures {
            writeln!(f, "  {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ComparisonError {}
