//! The ABI contract between the kernel crate and the host, checked on the embedded PTX
//! without a GPU: every entry the host launches exists in every module, takes exactly one
//! parameter of the size and alignment of the host's struct, and the module needs nothing from
//! outside.

use flashomni::Arch;
use flashomni::abi::{AttentionParams, HOPPER_KERNELS, KERNELS, KernelAbi};

/// The parameter list of entry `name` in `ptx`: `(alignment, size)` of each `.param`.
fn entry_params(ptx: &str, name: &str) -> Option<Vec<(usize, usize)>> {
    let header = format!(".entry {name}(");
    let start = ptx.find(&header)? + header.len();
    let end = start + ptx[start..].find(')')?;
    let params = ptx[start..end]
        .split(',')
        .map(str::trim)
        .filter(|param| !param.is_empty())
        .map(|param| {
            // `.param .align 8 .b8 NAME_param_0[144]`
            let words: Vec<&str> = param.split_whitespace().collect();
            let align = words.iter().position(|w| *w == ".align").map_or(0, |i| words[i + 1].parse().unwrap_or(0));
            let size =
                param.rsplit_once('[').and_then(|(_, rest)| rest.trim_end_matches(']').parse().ok()).unwrap_or(0);
            (align, size)
        })
        .collect();
    Some(params)
}

/// The entries module `arch` must contain.
fn entries(arch: Arch) -> Vec<&'static KernelAbi> {
    let hopper: &[KernelAbi] = if arch == Arch::Sm90a { HOPPER_KERNELS } else { &[] };
    KERNELS.iter().chain(hopper).collect()
}

#[test]
fn every_entry_has_one_parameter_of_the_host_struct_size() {
    for arch in Arch::ALL {
        let ptx = arch.ptx();
        for kernel in entries(arch) {
            let params = entry_params(ptx, kernel.name)
                .unwrap_or_else(|| panic!("{arch:?}: entry {} missing from the PTX", kernel.name));
            assert_eq!(params.len(), 1, "{arch:?} {}: one by-value struct parameter expected", kernel.name);
            let (align, size) = params[0];
            assert_eq!(size, kernel.param_size, "{arch:?} {}: parameter size", kernel.name);
            assert!(
                align >= kernel.param_align,
                "{arch:?} {}: parameter alignment {align} below {}",
                kernel.name,
                kernel.param_align
            );
        }
    }
}

#[test]
fn modules_are_self_contained_and_target_their_arch() {
    for arch in Arch::ALL {
        let ptx = arch.ptx();
        let target = ptx.lines().find(|line| line.starts_with(".target")).expect(".target line");
        assert_eq!(target.trim(), format!(".target {}", arch.target()), "{arch:?}");
        for line in ptx.lines().filter(|line| line.starts_with(".extern")) {
            assert!(line.contains(".shared"), "{arch:?}: unresolved external `{line}`");
        }
    }
}

#[test]
fn no_entry_is_missing_from_the_list() {
    for arch in Arch::ALL {
        let count = arch.ptx().lines().filter(|line| line.contains(".entry")).count();
        assert_eq!(count, entries(arch).len(), "{arch:?}: the PTX has entries the host does not know about");
    }
}

#[test]
fn attention_params_layout_is_stable() {
    // 12 device pointers, 11 u32 fields and one f32, no padding.
    assert_eq!(size_of::<AttentionParams>(), 12 * 8 + 12 * 4);
    assert_eq!(align_of::<AttentionParams>(), 8);
}
