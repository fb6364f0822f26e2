//! FlashOmni GPU kernels, written in Rust and compiled to PTX by rustc's own NVPTX backend.
//!
//! The crate builds twice:
//! - for `nvptx64-nvidia-cuda` it is a `cdylib` whose "link" step (`tools/nvptx-link.sh`) writes
//!   one self-contained PTX module holding every kernel entry in [`abi::KERNELS`];
//! - for the host it is an ordinary library exposing only [`abi`]: the `#[repr(C)]` parameter
//!   structs and entry names, so that host launches and device entries cannot drift apart.
//!
//! Device code lives under `device/` and is compiled only for the GPU target.
#![cfg_attr(target_arch = "nvptx64", no_std)]
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, asm_experimental_arch, stdarch_nvptx, core_float_math))]

pub mod abi;

#[cfg(target_arch = "nvptx64")]
mod device;
