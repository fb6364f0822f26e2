//! GPU test harness: an engine when a GPU is present, a visible skip when not.
//!
//! `FLASHOMNI_REQUIRE_GPU=1` turns a skip into a failure, so a run on a GPU machine cannot
//! pass by silently testing nothing.

use anyhow::ensure;
use flashomni::{Arch, AttentionArgs, DeviceArray, DeviceSymbols, DeviceView, DeviceViewMut, Element, Engine, Plain};
use rand::Rng;

use crate::random::random_element;

/// The variable that makes a missing GPU a test failure.
pub const REQUIRE_GPU: &str = "FLASHOMNI_REQUIRE_GPU";

/// Whether `FLASHOMNI_REQUIRE_GPU` asks for a GPU.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// An engine on device 0, or `None` after printing why the calling test is skipped: there is
/// no device, or none our kernels run on.
///
/// # Panics
/// When no engine can be created and `FLASHOMNI_REQUIRE_GPU` is set, and whenever creating it
/// fails for another reason (a module that does not load, a driver error): that is a defect,
/// not a missing GPU.
pub fn engine_or_skip(test: &str) -> Option<Engine> {
    match Engine::new(0) {
        Ok(engine) => Some(engine),
        Err(err) if gpu_required() => panic!("{test}: {REQUIRE_GPU} is set but no GPU is usable: {err}"),
        Err(err @ (flashomni::Error::NoDevice(_) | flashomni::Error::UnsupportedDevice { .. })) => {
            report_skip(test, &format!("no GPU ({err}); set {REQUIRE_GPU}=1 to make this a failure"));
            None
        }
        Err(err) => panic!("{test}: the engine failed to start: {err}"),
    }
}

/// One engine per kernel module the GPU runs ([`Arch::runs_on`]: on Hopper both the portable
/// and the Hopper module, so that both are tested), or an empty list after printing why the
/// calling test is skipped.
///
/// # Panics
/// When no engine can be created and `FLASHOMNI_REQUIRE_GPU` is set, or when a module the
/// device should run fails to load.
pub fn engines_or_skip(test: &str) -> Vec<Engine> {
    let Some(default) = engine_or_skip(test) else { return Vec::new() };
    let mut engines = Vec::new();
    for arch in Arch::ALL {
        if arch != default.arch() {
            match Engine::with_arch(0, arch) {
                Ok(engine) => engines.push(engine),
                Err(flashomni::Error::Unsupported(_)) => {}
                Err(err) => panic!("{test}: the {} module failed to load: {err}", arch.target()),
            }
        }
    }
    engines.push(default);
    engines
}

/// Runs `body` once per engine of [`engines_or_skip`] (not at all without a GPU); an error
/// names the kernel module it came from.
pub fn for_each_engine(test: &str, mut body: impl FnMut(&Engine) -> anyhow::Result<()>) -> anyhow::Result<()> {
    use anyhow::Context;
    for engine in engines_or_skip(test) {
        body(&engine).with_context(|| format!("with the {} kernel module", engine.arch().target()))?;
    }
    Ok(())
}

/// Joins one scoped thread per rank, in rank order: their results, or the first rank's error
/// (or panic), naming the rank.
pub fn join_ranks<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>) -> anyhow::Result<Vec<T>> {
    use anyhow::Context;
    handles
        .into_iter()
        .enumerate()
        .map(|(rank, handle)| match handle.join() {
            Ok(result) => result.with_context(|| format!("rank {rank}")),
            Err(_) => Err(anyhow::anyhow!("rank {rank} panicked")),
        })
        .collect()
}

/// Prints `SKIPPED <test>: <why>` where the user sees it: through the process's stderr
/// handle, which the test harness does not capture (it captures `eprintln!` of passing tests).
pub fn report_skip(test: &str, why: &str) {
    use std::io::Write;
    // A failed write to stderr leaves nothing better to report it on.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Prints why `test` is skipped, as [`report_skip`] does.
///
/// # Panics
/// Under `FLASHOMNI_REQUIRE_GPU=1`, where a skip is a failure.
pub fn skip_unless_required(test: &str, why: &str) {
    if gpu_required() {
        panic!("{test}: {REQUIRE_GPU} is set but {why}");
    }
    report_skip(test, why);
}

/// The bits of a 16-bit element, through its f32 widening (exact and injective, so equal
/// patterns mean equal elements).
pub fn bit_pattern<T: Element>(value: T) -> u32 {
    value.to_f32().to_bits()
}

/// Runs `run` twice and checks that both outputs are bitwise equal; `what` names the run in
/// the error.
pub fn twice_bitwise_equal<T: Element>(
    what: &str,
    mut run: impl FnMut() -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<()> {
    let (first, second) = (run()?, run()?);
    let bits = |values: &[T]| values.iter().copied().map(bit_pattern).collect::<Vec<_>>();
    ensure!(bits(&first) == bits(&second), "{} {what}: runs differ", T::NAME);
    Ok(())
}

/// The bit pattern written into outputs before a launch: all ones, a NaN in bf16, f16 and
/// f32, so an element the kernel should have written but did not cannot pass a comparison.
pub const POISON_BYTE: u8 = 0xFF;

/// Allocates an output array of `len` elements filled with the poison pattern.
pub fn poisoned<T: Element>(len: usize) -> flashomni::Result<DeviceArray<T>> {
    let mut array = DeviceArray::uninitialized(len)?;
    array.fill_bytes(POISON_BYTE)?;
    Ok(array)
}

/// A read view of `len` elements of `array` from element `start` (a view that does not begin at
/// the allocation: a misaligned one, or an output between guards).
///
/// # Panics
/// When the range does not lie inside `array`.
pub fn subview<T: Plain>(array: &DeviceArray<T>, start: usize, len: usize) -> DeviceView<'_, T> {
    let range = start..start.checked_add(len).expect("the range's end overflows");
    array.view().slice(range).unwrap_or_else(|| outside(start, len, array.len()))
}

/// A write view of `len` elements of `array` from element `start` (see [`subview`]).
///
/// # Panics
/// When the range does not lie inside `array`.
pub fn subview_mut<T: Plain>(array: &mut DeviceArray<T>, start: usize, len: usize) -> DeviceViewMut<'_, T> {
    let range = start..start.checked_add(len).expect("the range's end overflows");
    let array_len = array.len();
    array.view_mut().into_slice(range).unwrap_or_else(|| outside(start, len, array_len))
}

/// The panic of a sub-view outside its array.
fn outside(start: usize, len: usize, array_len: usize) -> ! {
    panic!("elements {start}..{start}+{len} do not lie inside an array of {array_len}")
}

/// Rows of guard elements on each side of a [`GuardedOutput`]: two 128-row tiles' worth, more
/// than a tile that runs past the output's last (or before its first) row can reach.
const GUARD_ROWS: usize = 256;

/// Columns a guard row is rounded up to: the widest output tile (GEMM-O's persistent kernel
/// stores 128 × 256 tiles), so that a tile partly outside the columns is covered too.
const GUARD_COLUMNS: usize = 256;

/// A poisoned output with poisoned guard regions before and after it: kernels get a view of
/// exactly the output, and [`GuardedOutput::to_host`] fails if a launch wrote past either end
/// (rows of a last partial tile at or after `m`, columns of a tile partly outside `n`).
pub struct GuardedOutput<T: Element> {
    array: DeviceArray<T>,
    /// Guard elements on each side.
    guard: usize,
    len: usize,
}

impl<T: Element> GuardedOutput<T> {
    /// An output of `len` poisoned elements in rows of `row_len`, between guards of
    /// `GUARD_ROWS` (256) rows of `row_len` rounded up to 256 elements each (a multiple of
    /// 64 Ki elements, so the output keeps the alignment of the allocation).
    pub fn new(len: usize, row_len: usize) -> flashomni::Result<Self> {
        let guard = GUARD_ROWS * row_len.max(1).next_multiple_of(GUARD_COLUMNS);
        Ok(Self { array: poisoned(guard + len + guard)?, guard, len })
    }

    /// A read view of exactly the output (for example a GEMM-O cache read by the next launch).
    pub fn view(&self) -> DeviceView<'_, T> {
        subview(&self.array, self.guard, self.len)
    }

    /// A write view of exactly the output.
    pub fn view_mut(&mut self) -> DeviceViewMut<'_, T> {
        subview_mut(&mut self.array, self.guard, self.len)
    }

    /// Downloads the output (after the launches writing it have completed), failing if any
    /// guard element no longer holds the poison.
    pub fn to_host(&self) -> anyhow::Result<Vec<T>> {
        let mut before = self.array.to_host()?;
        let after = before.split_off(self.guard + self.len);
        let output = before.split_off(self.guard);
        // Distances from the output: 1 is the element just before its start or after its end.
        let written_before = before.iter().rev().position(|&value| !is_poison(value)).map(|i| i + 1);
        let written_after = after.iter().position(|&value| !is_poison(value)).map(|i| i + 1);
        for (side, nearest, guard) in [("before", written_before, &before), ("after", written_after, &after)] {
            ensure!(
                nearest.is_none(),
                "{} of the {} guard elements {side} the output (of {} elements) were written, the nearest \
                 {} elements {side} it (1: adjacent)",
                guard.iter().filter(|&&value| !is_poison(value)).count(),
                guard.len(),
                self.len,
                nearest.unwrap_or_default(),
            );
        }
        Ok(output)
    }
}

/// `len` values from [`random_element`] uploaded to a new device array (no host `f32` copy:
/// benchmark inputs are large).
pub fn random_device_array<T: Element>(
    rng: &mut impl Rng,
    len: usize,
    scale: f32,
) -> flashomni::Result<DeviceArray<T>> {
    let values: Vec<T> = (0..len).map(|_| random_element(rng, scale)).collect();
    DeviceArray::from_host(&values)
}

/// Whether a downloaded 16-bit element still holds the poison pattern.
pub fn is_poison<T: Element>(value: T) -> bool {
    let bits: [u8; 2] = to_bytes(value);
    bits == [POISON_BYTE; 2]
}

fn to_bytes<T: Element>(value: T) -> [u8; 2] {
    assert_eq!(size_of::<T>(), 2, "elements are 16-bit");
    let mut bytes = [0u8; 2];
    // SAFETY: `T` is a 2-byte plain-data element (checked above); copying its bytes is sound.
    unsafe { core::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), bytes.as_mut_ptr(), 2) };
    bytes
}

/// Attention arguments over whole device arrays `q`, `k`, `v` and `out`, without LSE output.
pub fn attention_args<'a, T: Element>(
    q: &'a DeviceArray<T>,
    k: &'a DeviceArray<T>,
    v: &'a DeviceArray<T>,
    out: &'a mut DeviceArray<T>,
    symbols: Option<&'a DeviceSymbols>,
) -> AttentionArgs<'a, T> {
    AttentionArgs { q: q.view(), k: k.view(), v: v.view(), out: out.view_mut(), lse: None, symbols }
}

/// Makes an object with `make` in a second CUDA context on `engine`'s device (a context of its
/// own, not the engine's primary one), hands it to `check`, and frees it in that context.
/// For tests that objects of another context are rejected.
pub fn with_object_of_other_context<R>(
    engine: &Engine,
    make: impl FnOnce() -> anyhow::Result<R>,
    check: impl FnOnce(&R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use cust::context::legacy::{Context, ContextFlags, CurrentContext};
    let other = Context::create_and_push(ContextFlags::SCHED_AUTO, engine.device())?;
    let result = make().and_then(|object| {
        let checked = check(&object);
        // The engine made its own context current: free the object where it was allocated.
        CurrentContext::set_current(&other)?;
        drop(object);
        checked
    });
    drop(other);
    engine.make_current()?;
    result
}
