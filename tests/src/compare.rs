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

    /// The tolerance for an element type by name (`"bf16"` or `"f16"`).
    pub fn for_element(name: &str) -> Tolerance {
        if name == "f16" { Tolerance::F16 } else { Tolerance::BF16 }
    }
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
