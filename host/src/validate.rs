//! Argument checks shared by every launcher: buffer sizes and device-address alignment, each
//! failing with the typed error that names the argument.

use crate::error::{Error, Result};

/// Fails unless a buffer holds `required` elements.
pub(crate) fn check_len(buffer: &'static str, actual: usize, required: u64) -> Result<()> {
    match usize::try_from(required) {
        Ok(required) if actual >= required => Ok(()),
        Ok(required) => Err(Error::BufferTooSmall { buffer, required, actual }),
        Err(_) => Err(Error::InvalidShape(format!("`{buffer}` would need {required} elements"))),
    }
}

/// Fails unless a device address is a multiple of `align` bytes.
pub(crate) fn check_aligned(buffer: &'static str, address: u64, align: u64) -> Result<()> {
    if !address.is_multiple_of(align) {
        return Err(Error::Misaligned {
            buffer,
            detail: format!("address {address:#x} is not a multiple of {align} bytes"),
        });
    }
    Ok(())
}
