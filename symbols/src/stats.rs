//! Density statistics of a symbol set.

/// Block counts of a symbol set, and the ratios derived from them.
///
/// Ratios over an empty set are defined (never NaN): nothing is cached
/// ([`Self::caching_ratio`] = 0) and everything is kept ([`Self::kv_density`] =
/// [`Self::kv_density_computed`] = 1), i.e. an empty set reads like a dense one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DensityStats {
    /// Number of S_c bits, i.e. (request, query block, head) rows.
    pub rows: u64,
    /// Rows with S_c = 1 (computed).
    pub computed_rows: u64,
    /// Number of S_s bits, i.e. (request, query block, head, KV block) triples.
    pub kv_blocks: u64,
    /// S_s bits equal to 1 (kept KV blocks), over all rows.
    pub kept_kv_blocks: u64,
    /// S_s bits belonging to computed rows.
    pub computed_kv_blocks: u64,
    /// S_s bits equal to 1 in computed rows.
    pub kept_computed_kv_blocks: u64,
}

impl DensityStats {
    /// Rows with S_c = 0 (cached).
    #[must_use]
    pub const fn cached_rows(&self) -> u64 {
        self.rows.saturating_sub(self.computed_rows)
    }

    /// Fraction of S_c bits that are 0 (cached rows); 0 when there are no rows.
    #[must_use]
    pub fn caching_ratio(&self) -> f64 {
        ratio(self.cached_rows(), self.rows, 0.0)
    }

    /// Fraction of S_s bits that are 1, over all rows; 1 when there are none.
    #[must_use]
    pub fn kv_density(&self) -> f64 {
        ratio(self.kept_kv_blocks, self.kv_blocks, 1.0)
    }

    /// Fraction of S_s bits that are 1, over computed rows only (the work the
    /// attention kernel actually does relative to dense); 1 when there are none.
    #[must_use]
    pub fn kv_density_computed(&self) -> f64 {
        ratio(self.kept_computed_kv_blocks, self.computed_kv_blocks, 1.0)
    }

    /// Fraction of the dense attention work (all `(row, KV block)` pairs) that is
    /// executed: kept KV blocks of computed rows over all S_s bits; 1 when empty.
    #[must_use]
    pub fn attention_work(&self) -> f64 {
        ratio(self.kept_computed_kv_blocks, self.kv_blocks, 1.0)
    }
}

#[allow(clippy::cast_precision_loss)] // counts are far below 2^53
fn ratio(num: u64, den: u64, empty: f64) -> f64 {
    if den == 0 { empty } else { num as f64 / den as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_counts_do_not_underflow() {
        // The fields are public, so a caller can build counts no symbol set has.
        let stats = DensityStats { rows: 0, computed_rows: 1, ..DensityStats::default() };
        assert_eq!(stats.cached_rows(), 0);
        assert_eq!(stats.caching_ratio(), 0.0);
    }
}
