//! Seeded random test data: bf16/f16-representable values and random symbols.
//!
//! All helpers take an explicit RNG; use [`seeded_rng`] for reproducible runs.

use flashomni::Element;
use flashomni_symbols::{PackedSymbols, RequestShape, SymbolGeometry};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Deterministic RNG for tests: `StdRng::seed_from_u64(seed)`.
#[must_use]
pub fn seeded_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Distribution of random tensor values (before rounding to bf16/f16).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform on `(-a, a)`.
    Uniform(f32),
    /// Normal with mean 0 and the given standard deviation.
    Normal(f32),
}

impl Default for Init {
    /// `Uniform(1.0)`.
    fn default() -> Self {
        Self::Uniform(1.0)
    }
}

/// One standard-normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>(); // (0, 1]
    let u2: f64 = rng.r#gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn draw(rng: &mut impl Rng, init: Init) -> f32 {
    match init {
        Init::Uniform(a) => rng.gen_range(-1.0f32..1.0) * a,
        Init::Normal(s) => standard_normal(rng) * s,
    }
}

/// Draws `len` values from `init`, rounds them with `round`, and guarantees the
/// result is not all zeros (a zero tensor would hide many bugs): if every value
/// rounded to 0, element 0 becomes `round(1.0)`.
fn random_vec<T: Copy>(
    rng: &mut impl Rng,
    len: usize,
    init: Init,
    round: impl Fn(f32) -> T,
    widen: impl Fn(T) -> f32,
) -> (Vec<T>, Vec<f32>) {
    let mut half: Vec<T> = (0..len).map(|_| round(draw(rng, init))).collect();
    if len > 0 && half.iter().all(|&x| widen(x) == 0.0) {
        half[0] = round(1.0);
    }
    let wide = half.iter().map(|&x| widen(x)).collect();
    (half, wide)
}

/// A value exactly representable in `T`, drawn uniformly from (−scale, scale).
pub fn random_element<T: Element>(rng: &mut impl Rng, scale: f32) -> T {
    T::from_f32(rng.gen_range(-scale..scale))
}

/// `len` values from [`random_element`], each with its exact `f32` widening (the input of the
/// float64 references).
pub fn random_elements<T: Element>(rng: &mut impl Rng, len: usize, scale: f32) -> (Vec<T>, Vec<f32>) {
    (0..len)
        .map(|_| {
            let value = random_element::<T>(rng, scale);
            (value, value.to_f32())
        })
        .unzip()
}

/// `len` bf16 values uniform on (-1, 1), and the same values widened to f32.
/// Never all zeros when `len > 0`.
pub fn random_bf16_vec(rng: &mut impl Rng, len: usize) -> (Vec<bf16>, Vec<f32>) {
    random_bf16_vec_with(rng, len, Init::default())
}

/// `len` bf16 values drawn from `init`, and the same values widened to f32.
/// Never all zeros when `len > 0`.
pub fn random_bf16_vec_with(rng: &mut impl Rng, len: usize, init: Init) -> (Vec<bf16>, Vec<f32>) {
    random_vec(rng, len, init, bf16::from_f32, bf16::to_f32)
}

/// `len` f16 values uniform on (-1, 1), and the same values widened to f32.
/// Never all zeros when `len > 0`.
pub fn random_f16_vec(rng: &mut impl Rng, len: usize) -> (Vec<f16>, Vec<f32>) {
    random_f16_vec_with(rng, len, Init::default())
}

/// `len` f16 values drawn from `init`, and the same values widened to f32.
/// Never all zeros when `len > 0`.
pub fn random_f16_vec_with(rng: &mut impl Rng, len: usize, init: Init) -> (Vec<f16>, Vec<f32>) {
    random_vec(rng, len, init, f16::from_f32, f16::to_f32)
}

/// Rounds f32 values to bf16 and back (what a bf16 kernel would see/produce).
#[must_use]
pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

/// Rounds f32 values to f16 and back.
#[must_use]
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// Random logical masks for `geom`, as [`PackedSymbols::from_masks`] expects
/// them: S_c bits are 0 (cached) with probability `cache_ratio`, S_s bits are 1
/// (kept) with probability `kv_density`. Returns `(caching, skip)`.
///
/// # Panics
/// If a probability is outside `[0, 1]`.
pub fn random_masks(
    rng: &mut impl Rng,
    geom: &SymbolGeometry<'_>,
    kv_density: f64,
    cache_ratio: f64,
) -> (Vec<bool>, Vec<bool>) {
    assert!((0.0..=1.0).contains(&kv_density), "kv_density {kv_density} not in [0, 1]");
    assert!((0.0..=1.0).contains(&cache_ratio), "cache_ratio {cache_ratio} not in [0, 1]");
    let n = geom.num_requests();
    let c_len: usize = (0..n).map(|b| geom.caching_bits(b) as usize).sum();
    let s_len: usize = (0..n).map(|b| geom.skip_bits(b) as usize).sum();
    let caching = (0..c_len).map(|_| !rng.gen_bool(cache_ratio)).collect();
    let skip = (0..s_len).map(|_| rng.gen_bool(kv_density)).collect();
    (caching, skip)
}

/// Random packed symbols for `geom` (see [`random_masks`] for the probabilities).
///
/// # Panics
/// If a probability is outside `[0, 1]`.
pub fn random_symbols(
    rng: &mut impl Rng,
    geom: &SymbolGeometry<'_>,
    kv_density: f64,
    cache_ratio: f64,
) -> PackedSymbols {
    let (caching, skip) = random_masks(rng, geom, kv_density, cache_ratio);
    PackedSymbols::from_masks(geom, &caching, &skip).expect("masks have the geometry's lengths")
}

/// `batch` random requests with `q_len`, `kv_len` uniform in `0..=max_len`.
pub fn random_requests(rng: &mut impl Rng, batch: usize, max_len: u32) -> Vec<RequestShape> {
    (0..batch).map(|_| RequestShape::new(rng.gen_range(0..=max_len), rng.gen_range(0..=max_len))).collect()
}
