//! CUDA-event timing: a pause, a warm-up, then the median of many timed runs.
//!
//! The pause is there because of the GPU's power management. Under sustained load the H200's
//! software power cap lowers the SM clock after about 80 ms, and dense GEMMs then run 19%
//! slower, the sparse ones 12–13% (docs/perf-journal.md, run 103). Without a pause, a case that follows
//! heavy ones is timed at capped clocks while the first case of a size is timed at full clock,
//! which skews every ratio between them. After half a second idle the clock is back up, so each
//! case starts from the state that the anchor script (a few tens of milliseconds of work per
//! GEMM size) is timed in.

use std::time::Duration;

use anyhow::Result;
use cust::event::{Event, EventFlags};
use cust::stream::Stream;

/// How each case is timed.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Idle time before the case's first call.
    pub pause: Duration,
    /// Untimed calls before the timed ones.
    pub warmup: usize,
    /// Timed calls; the median is reported.
    pub iters: usize,
}

/// Median milliseconds of `timing.iters` timed calls of `launch` on `stream`, after the pause
/// and `timing.warmup` untimed calls. Each call is bracketed by its own pair of events.
pub fn median_ms(stream: &Stream, timing: &Timing, mut launch: impl FnMut() -> Result<()>) -> Result<f64> {
    stream.synchronize()?;
    std::thread::sleep(timing.pause);
    for _ in 0..timing.warmup {
        launch()?;
    }
    stream.synchronize()?;
    let mut times = Vec::with_capacity(timing.iters);
    for _ in 0..timing.iters {
        let start = Event::new(EventFlags::DEFAULT)?;
        let end = Event::new(EventFlags::DEFAULT)?;
        start.record(stream)?;
        launch()?;
        end.record(stream)?;
        end.synchronize()?;
        times.push(f64::from(end.elapsed_time_f32(&start)?));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
