//! The PTX modules built from `kernels-gpu/` and embedded at compile time (see `build.rs`).

/// A compiled flavour of the kernel module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Portable module for sm_80 and newer (`mma.sync`, `cp.async`); the driver compiles it
    /// for the device at load time.
    Sm80,
    /// Hopper module (sm_90a features enabled); loaded on compute capability 9.0 only.
    Sm90a,
}

impl Arch {
    /// Every embedded module.
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90a];

    /// The module to load on a device of compute capability `major.minor`, if any.
    pub fn for_compute_capability(major: i32, minor: i32) -> Option<Arch> {
        match (major, minor) {
            (9, 0) => Some(Arch::Sm90a),
            (major, _) if major >= 8 => Some(Arch::Sm80),
            _ => None,
        }
    }

    /// Whether this module runs on a device of compute capability `major.minor`: the portable
    /// module on every 8.x and newer device (including Hopper, for comparisons), the Hopper
    /// module on 9.0 only.
    pub fn runs_on(self, major: i32, minor: i32) -> bool {
        match self {
            Arch::Sm80 => major >= 8,
            Arch::Sm90a => (major, minor) == (9, 0),
        }
    }

    /// The target name ptxas knows the module by (`sm_80`, `sm_90a`).
    pub fn target(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }

    /// The module's PTX text.
    pub fn ptx(self) -> &'static str {
        match self {
            Arch::Sm80 => include_str!(concat!(env!("OUT_DIR"), "/flashomni_sm80.ptx")),
            Arch::Sm90a => include_str!(concat!(env!("OUT_DIR"), "/flashomni_sm90a.ptx")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Arch;

    #[test]
    fn each_module_runs_where_documented() {
        for (major, minor) in [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)] {
            assert_eq!(Arch::Sm80.runs_on(major, minor), major >= 8, "sm80 on {major}.{minor}");
            assert_eq!(Arch::Sm90a.runs_on(major, minor), (major, minor) == (9, 0), "sm90a on {major}.{minor}");
            // The default choice always runs where it is chosen, and exists from sm_80 on.
            match Arch::for_compute_capability(major, minor) {
                Some(arch) => assert!(arch.runs_on(major, minor), "{arch:?} chosen for {major}.{minor}"),
                None => assert!(major < 8, "no module chosen for {major}.{minor}"),
            }
        }
        assert_eq!(Arch::for_compute_capability(9, 0), Some(Arch::Sm90a));
    }
}
