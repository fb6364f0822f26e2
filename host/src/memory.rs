//! Device memory: an owned typed array, and borrowed views that kernels read and write.
//!
//! Kernels take [`DeviceView`] (read) and [`DeviceViewMut`] (write) arguments. They borrow a
//! [`DeviceArray`] or, through `from_raw_parts`, memory owned by another CUDA stack that shares
//! the device's primary context (cudarc, candle, a framework allocator). `slice`,
//! `slice_mut` and `into_slice` narrow a view to a range of its elements, as one request's rows
//! of a batch.

use core::marker::PhantomData;
use core::mem::size_of;
use core::ops::{Bound, RangeBounds};

use cust::memory::{CopyDestination, DeviceBuffer};

use crate::element::Plain;
use crate::engine::Engine;
use crate::error::{CudaContext, Result};

/// Views a plain slice as bytes.
fn as_bytes<T: Plain>(values: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have no padding and every byte is initialised; u8 has alignment 1.
    unsafe { core::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

/// Views a plain slice as mutable bytes.
fn as_bytes_mut<T: Plain>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; in addition any byte pattern is a valid `Plain` value.
    unsafe { core::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), size_of_val(values)) }
}

/// Waits until the legacy default stream, where the driver's synchronous copies and memsets
/// run, has finished: a synchronous host-to-device copy may return before its last bytes
/// landed, and a memset does not wait at all, while launches on non-blocking streams are not
/// ordered after either.
fn finish_default_stream(context: &'static str) -> Result<()> {
    // SAFETY: synchronizing the legacy default stream (the null handle) has no preconditions.
    let status = unsafe { cust::sys::cuStreamSynchronize(core::ptr::null_mut()) };
    crate::launch::check(status, context)
}

/// An owned array of `T` in device memory (allocated in the current context).
pub struct DeviceArray<T: Plain> {
    bytes: DeviceBuffer<u8>,
    len: usize,
    /// The context the array was allocated in (a `CUcontext` handle as a number).
    context: usize,
    _element: PhantomData<T>,
}

impl<T: Plain> DeviceArray<T> {
    /// Allocates `len` elements with unspecified contents. Fails with
    /// [`Error::InvalidShape`](crate::Error::InvalidShape) when `len` elements do not fit in
    /// the address space.
    pub fn uninitialized(len: usize) -> Result<Self> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| {
            crate::Error::InvalidShape(format!("{len} elements of {} bytes overflow usize", size_of::<T>()))
        })?;
        // The driver rejects zero-sized allocations; keep one byte so views stay valid.
        let bytes = bytes.max(1);
        // SAFETY: `Plain` values accept any bit pattern, so uninitialised memory is no hazard
        // beyond unspecified contents, which this constructor documents.
        let buffer = unsafe { DeviceBuffer::uninitialized(bytes) }.during("allocating device memory")?;
        let mut context = core::ptr::null_mut();
        // SAFETY: the driver writes the calling thread's current context handle (the one the
        // allocation above was made in) into `context`.
        let status = unsafe { cust::sys::cuCtxGetCurrent(&mut context) };
        crate::launch::check(status, "reading the current context")?;
        let context = context as usize;
        Ok(Self { bytes: buffer, len, context, _element: PhantomData })
    }

    /// Allocates and uploads `values`.
    pub fn from_host(values: &[T]) -> Result<Self> {
        let mut array = Self::uninitialized(values.len())?;
        array.upload(values)?;
        Ok(array)
    }

    /// Overwrites the array with `values` (same length).
    ///
    /// The copy has landed when this returns, so later launches on any stream read the new
    /// values. It runs on the legacy default stream, which is **not** ordered with
    /// non-blocking streams such as [`Engine::stream`](crate::Engine::stream): synchronize the
    /// streams of launches that may still read the array before overwriting it.
    pub fn upload(&mut self, values: &[T]) -> Result<()> {
        if values.len() != self.len {
            return Err(crate::Error::InvalidShape(format!(
                "upload of {} elements into a device array of {}",
                values.len(),
                self.len
            )));
        }
        if self.len > 0 {
            self.bytes.index(..size_of_val(values)).copy_from(as_bytes(values)).during("copying to the device")?;
            finish_default_stream("finishing a copy to the device")?;
        }
        Ok(())
    }

    /// Downloads the whole array.
    ///
    /// Like [`Self::upload`], the copy runs on the legacy default stream: synchronize the
    /// stream of the launch that wrote the array first (for example
    /// [`Engine::synchronize`](crate::Engine::synchronize)), or the copy may read unfinished
    /// results.
    pub fn to_host(&self) -> Result<Vec<T>> {
        let mut values = vec![T::default(); self.len];
        if self.len > 0 {
            let byte_len = size_of_val(values.as_slice());
            self.bytes.index(..byte_len).copy_to(as_bytes_mut(&mut values)).during("copying from the device")?;
        }
        Ok(values)
    }

    /// Sets every byte to `byte` (for example to poison an output before a launch); the bytes
    /// are set when this returns. As for [`Self::upload`], synchronize other streams' launches
    /// that use the array first.
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        let address = self.bytes.as_device_ptr().as_raw();
        // SAFETY: the range lies inside this allocation.
        let status = unsafe { cust::sys::cuMemsetD8_v2(address, byte, self.len * size_of::<T>()) };
        crate::launch::check(status, "filling device memory")?;
        finish_default_stream("finishing a fill of device memory")
    }

    /// Fails with [`Error::WrongContext`](crate::Error::WrongContext) naming `object` unless
    /// the array was allocated in `engine`'s context.
    pub(crate) fn check_context(&self, engine: &Engine, object: &'static str) -> Result<()> {
        if self.context == engine.raw_context() { Ok(()) } else { Err(crate::Error::WrongContext { object }) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A read view of the whole array.
    pub fn view(&self) -> DeviceView<'_, T> {
        DeviceView { address: self.bytes.as_device_ptr().as_raw(), len: self.len, _borrow: PhantomData }
    }

    /// A write view of the whole array.
    pub fn view_mut(&mut self) -> DeviceViewMut<'_, T> {
        DeviceViewMut { address: self.bytes.as_device_ptr().as_raw(), len: self.len, _borrow: PhantomData }
    }
}

/// The device address and length of elements `range` of a view of `len` elements at `address`,
/// or `None` when the range does not lie inside it (as `<[T]>::get` decides for a slice).
fn sub_range<T>(address: u64, len: usize, range: impl RangeBounds<usize>) -> Option<(u64, usize)> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => end.checked_add(1)?,
        Bound::Excluded(&end) => end,
        Bound::Unbounded => len,
    };
    (start <= end && end <= len).then(|| (address + (start * size_of::<T>()) as u64, end - start))
}

/// The accessors every view type has: `address`, `len` and `is_empty` over its `address`
/// and `len` fields.
macro_rules! view_accessors {
    () => {
        /// Device address of the first element.
        pub fn address(&self) -> u64 {
            self.address
        }

        /// Number of elements.
        pub fn len(&self) -> usize {
            self.len
        }

        /// Whether the view has no elements.
        pub fn is_empty(&self) -> bool {
            self.len == 0
        }
    };
}

/// A borrowed, read-only range of `T` in device memory.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a, T> {
    address: u64,
    len: usize,
    _borrow: PhantomData<&'a [T]>,
}

impl<'a, T: Plain> DeviceView<'a, T> {
    /// Views `len` elements at device address `address`.
    ///
    /// # Safety
    /// The range must be device memory of the current context holding `len` initialised
    /// elements, aligned for `T`, and must stay valid and unwritten by others while the view
    /// and any launch using it are alive.
    pub unsafe fn from_raw_parts(address: u64, len: usize) -> Self {
        Self { address, len, _borrow: PhantomData }
    }

    /// The elements `range` of this view (say, one request's rows of a batched tensor), or
    /// `None` when the range does not lie inside it.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Option<DeviceView<'a, T>> {
        let (address, len) = sub_range::<T>(self.address, self.len, range)?;
        Some(DeviceView { address, len, _borrow: PhantomData })
    }

    view_accessors!();
}

/// A borrowed, writable range of `T` in device memory.
#[derive(Debug)]
pub struct DeviceViewMut<'a, T> {
    address: u64,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<'a, T: Plain> DeviceViewMut<'a, T> {
    /// Views `len` writable elements at device address `address`.
    ///
    /// # Safety
    /// As for [`DeviceView::from_raw_parts`], and no other view may alias the range while this
    /// one or a launch writing through it is alive.
    pub unsafe fn from_raw_parts(address: u64, len: usize) -> Self {
        Self { address, len, _borrow: PhantomData }
    }

    /// The elements `range` of this view, writable while the returned view (which borrows
    /// this one) lives, or `None` when the range does not lie inside it.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<DeviceViewMut<'_, T>> {
        let (address, len) = sub_range::<T>(self.address, self.len, range)?;
        Some(DeviceViewMut { address, len, _borrow: PhantomData })
    }

    /// This view narrowed to the elements `range`, for the rest of its borrow, or `None`
    /// when the range does not lie inside it.
    pub fn into_slice(self, range: impl RangeBounds<usize>) -> Option<DeviceViewMut<'a, T>> {
        let (address, len) = sub_range::<T>(self.address, self.len, range)?;
        Some(DeviceViewMut { address, len, _borrow: PhantomData })
    }

    view_accessors!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_lie_inside_their_view() {
        // SAFETY: no launch or copy uses these views; only their addresses are computed.
        let view = unsafe { DeviceView::<u16>::from_raw_parts(0x1000, 10) };
        let part = view.slice(2..5).expect("inside");
        assert_eq!((part.address(), part.len()), (0x1004, 3));
        let tail = view.slice(4..).expect("inside");
        assert_eq!((tail.address(), tail.len()), (0x1008, 6));
        assert_eq!(view.slice(..=9).map(|whole| whole.len()), Some(10));
        assert_eq!(view.slice(10..).map(|empty| (empty.address(), empty.len())), Some((0x1014, 0)));
        let (start, end) = (6, 5);
        assert!(view.slice(..11).is_none() && view.slice(start..end).is_none() && view.slice(..=usize::MAX).is_none());
        // SAFETY: as above.
        let mut out = unsafe { DeviceViewMut::<f32>::from_raw_parts(0x2000, 8) };
        let part = out.slice_mut(1..3).expect("inside");
        assert_eq!((part.address(), part.len()), (0x2004, 2));
        assert!(out.slice_mut(7..9).is_none());
        let tail = out.into_slice(6..).expect("inside");
        assert_eq!((tail.address(), tail.len()), (0x2018, 2));
    }

    #[test]
    fn an_array_too_large_for_the_address_space_is_an_error() {
        // Fails on the size arithmetic, before the driver is asked (no GPU needed).
        let err = DeviceArray::<u16>::uninitialized(usize::MAX / 2 + 1).err().expect("the byte count overflows");
        assert!(matches!(err, crate::Error::InvalidShape(_)), "{err}");
    }
}
