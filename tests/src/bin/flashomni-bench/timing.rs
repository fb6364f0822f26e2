//! CUDA-event timing: warm-up, then the median of many timed runs.

use anyhow::Result;
use cust::event::{Event, EventFlags};
use cust::stream::Stream;

/// Median milliseconds of `iters` timed calls of `launch` on `stream`, after `warmup`
/// untimed calls. Each call is bracketed by its own pair of events.
pub fn median_ms(stream: &Stream, warmup: usize, iters: usize, mut launch: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        launch()?;
    }
    stream.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
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
