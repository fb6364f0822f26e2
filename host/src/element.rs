//! Plain-data element types that can live in device memory, and the 16-bit storage types
//! the kernels compute with.

use flashomni_kernels::abi::ElementKind;

mod sealed {
    pub trait Sealed {}
}

/// A plain-old-data type: any bit pattern is a valid value, no padding, no pointers. Device
/// buffers of these types can be copied to and from the host byte for byte.
pub trait Plain: Copy + Default + Send + Sync + 'static + sealed::Sealed {}

macro_rules! plain {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl Plain for $ty {}
    )*};
}
plain!(u8, u16, u32, i32, f32, half::bf16, half::f16);

/// A 16-bit floating-point storage type the tensor-core kernels are built for.
pub trait Element: Plain {
    /// Which kernel instantiation serves this type.
    const KIND: ElementKind;
    /// A short name for messages and benchmark records.
    const NAME: &'static str;
    /// Rounds an `f32` to this type.
    fn from_f32(value: f32) -> Self;
    /// Widens to `f32` exactly.
    fn to_f32(self) -> f32;
}

impl Element for half::bf16 {
    const KIND: ElementKind = ElementKind::Bf16;
    const NAME: &'static str = "bf16";
    fn from_f32(value: f32) -> Self {
        half::bf16::from_f32(value)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

impl Element for half::f16 {
    const KIND: ElementKind = ElementKind::F16;
    const NAME: &'static str = "f16";
    fn from_f32(value: f32) -> Self {
        half::f16::from_f32(value)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}
