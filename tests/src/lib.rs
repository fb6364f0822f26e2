//! Correctness-test support for FlashOmni: float64 CPU references of the three
//! sparse kernels (attention, GEMM-Q, GEMM-O) and seeded random data/symbol
//! generators.
//!
//! The references follow the semantics of spec §4.5–4.7 (attention), §5.2
//! (GEMM-Q) and §6.2 (GEMM-O). Inputs are `f32` slices holding values that the
//! caller already rounded from bf16/f16; all accumulation is in `f64`.

pub mod compare;
pub mod gpu;
pub mod random;
pub mod reference;
