//! The random data and symbol generators.

use flashomni_symbols::{RequestShape, SymbolGeometry};
use flashomni_tests::random::{
    Init, random_bf16_vec, random_bf16_vec_with, random_f16_vec, random_requests, random_symbols, round_bf16,
    round_f16, seeded_rng,
};

#[test]
fn bf16_values_are_representable_and_in_range() {
    let mut rng = seeded_rng(1);
    let (h, f) = random_bf16_vec(&mut rng, 4096);
    assert_eq!(h.len(), 4096);
    assert!(h.iter().zip(&f).all(|(h, f)| h.to_f32() == *f));
    assert_eq!(round_bf16(&f), f);
    assert!(f.iter().all(|x| (-1.0..=1.0).contains(x)));
    assert!(f.iter().any(|&x| x < -0.5) && f.iter().any(|&x| x > 0.5));
    // A generic f32 is generally not bf16-representable: rounding must change it.
    assert_ne!(round_bf16(&[0.1]), [0.1]);
}

#[test]
fn f16_values_are_representable() {
    let mut rng = seeded_rng(2);
    let (h, f) = random_f16_vec(&mut rng, 1000);
    assert!(h.iter().zip(&f).all(|(h, f)| h.to_f32() == *f));
    assert_eq!(round_f16(&f), f);
}

#[test]
fn never_all_zero() {
    for seed in 0..200 {
        let mut rng = seeded_rng(seed);
        // A tiny scale makes every value underflow to 0 in f16.
        let (_, f) = flashomni_tests::random::random_f16_vec_with(&mut rng, 3, Init::Uniform(1e-12));
        assert!(f.iter().any(|&x| x != 0.0), "seed {seed}: {f:?}");
    }
    assert!(random_bf16_vec(&mut seeded_rng(0), 0).1.is_empty());
}

#[test]
fn normal_init_has_unit_variance() {
    let (_, f) = random_bf16_vec_with(&mut seeded_rng(3), 20_000, Init::Normal(2.0));
    let n = f.len() as f64;
    let mean = f.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = f.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.05, "mean {mean}");
    assert!((var - 4.0).abs() < 0.2, "var {var}");
}

#[test]
fn seeding_is_deterministic() {
    assert_eq!(random_bf16_vec(&mut seeded_rng(9), 64), random_bf16_vec(&mut seeded_rng(9), 64));
    assert_ne!(random_bf16_vec(&mut seeded_rng(9), 64).1, random_bf16_vec(&mut seeded_rng(10), 64).1);
    let r = random_requests(&mut seeded_rng(4), 5, 7);
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|r| r.q_len <= 7 && r.kv_len <= 7));
}

#[test]
fn random_symbols_hit_requested_densities() {
    let reqs = [RequestShape::new(4096, 4096), RequestShape::new(1000, 3000)];
    let g = SymbolGeometry::new(8, 64, 64, &reqs).unwrap();
    let s = random_symbols(&mut seeded_rng(5), &g, 0.3, 0.6).view().stats();
    assert!((s.kv_density() - 0.3).abs() < 0.01, "kv density {}", s.kv_density());
    assert!((s.caching_ratio() - 0.6).abs() < 0.03, "caching ratio {}", s.caching_ratio());
    let all = random_symbols(&mut seeded_rng(6), &g, 1.0, 0.0).view().stats();
    assert_eq!((all.kept_kv_blocks, all.computed_rows), (all.kv_blocks, all.rows));
    let none = random_symbols(&mut seeded_rng(6), &g, 0.0, 1.0).view().stats();
    assert_eq!((none.kept_kv_blocks, none.computed_rows), (0, 0));
}

#[test]
#[should_panic(expected = "not in [0, 1]")]
fn random_symbols_reject_bad_probability() {
    let reqs = [RequestShape::new(1, 1)];
    let g = SymbolGeometry::new(1, 1, 1, &reqs).unwrap();
    let _ = random_symbols(&mut seeded_rng(0), &g, 1.5, 0.0);
}
