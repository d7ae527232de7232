//! Progress of a run: a bar with counts, bytes and rate when standard error is a terminal, one
//! log line per artifact otherwise.
//!
//! Log lines go through [`LogWriter`], which hides the bar while a line is written so the two
//! never mix on the terminal.

use std::{
    io::{self, IsTerminal as _, Write as _},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

const BAR_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} artifacts  {msg}";
const BAR_TICK: Duration = Duration::from_millis(200);

/// Counts and bytes of finished artifacts, shown on the bar.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// When the transfers started, for the rates.
    started: Mutex<Instant>,
    total_bytes: AtomicU64,
    finished_artifacts: AtomicU64,
    finished_bytes: AtomicU64,
    problems: AtomicU64,
}

impl Progress {
    /// Shows a bar when standard error is a terminal, and log lines otherwise.
    pub fn for_stderr() -> Self {
        let bar = io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(BAR_TEMPLATE)
                    .expect("the progress bar template must be valid"),
            );
            bar.set_message("scanning the source store");
            bar.enable_steady_tick(BAR_TICK);
            bar
        });
        Self {
            bar,
            started: Mutex::new(Instant::now()),
            total_bytes: AtomicU64::new(0),
            finished_artifacts: AtomicU64::new(0),
            finished_bytes: AtomicU64::new(0),
            problems: AtomicU64::new(0),
        }
    }

    /// Returns whether a bar is shown. Callers then log each successful artifact at debug level
    /// instead of info, because the bar already counts it.
    pub fn shows_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Returns the writer for log lines, which hides the bar while a line is written.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            bar: self.bar.clone(),
        }
    }

    /// Sets the number of artifacts and their total size once the scan is done.
    pub fn start(&self, artifacts: u64, bytes: u64) {
        *self
            .started
            .lock()
            .expect("the progress lock is never poisoned") = Instant::now();
        self.total_bytes.store(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(artifacts);
            bar.set_message(self.message());
        }
    }

    /// Counts one finished artifact of `bytes` bytes. `problem` is true for a conflict, a
    /// difference or a failure.
    pub fn finish_artifact(&self, bytes: u64, problem: bool) {
        self.finished_artifacts.fetch_add(1, Ordering::Relaxed);
        self.finished_bytes.fetch_add(bytes, Ordering::Relaxed);
        if problem {
            self.problems.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(self.message());
        }
    }

    /// Shows a step other than the artifacts, such as the creation of resources.
    pub fn set_step(&self, step: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_message(step);
        }
    }

    /// Removes the bar, so the summary that follows starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn message(&self) -> String {
        let artifacts = self.finished_artifacts.load(Ordering::Relaxed);
        let finished = self.finished_bytes.load(Ordering::Relaxed);
        let total = self.total_bytes.load(Ordering::Relaxed);
        let started = *self
            .started
            .lock()
            .expect("the progress lock is never poisoned");
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        let byte_rate = (finished as f64 / seconds) as u64;
        let mut message = format!(
            "{} of {}, {}/s, {:.1} artifacts/s",
            BinaryBytes(finished),
            BinaryBytes(total),
            BinaryBytes(byte_rate),
            artifacts as f64 / seconds
        );
        let problems = self.problems.load(Ordering::Relaxed);
        if problems > 0 {
            message.push_str(&format!(", {problems} problems"));
        }
        message
    }
}

/// A [`MakeWriter`] for log lines that hides the progress bar while each line is written.
#[derive(Clone)]
pub struct LogWriter {
    bar: Option<ProgressBar>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            bar: self.bar.clone(),
            buffer: Vec::new(),
        }
    }
}

/// Collects one log event and writes it to standard error when dropped, which the tracing
/// formatter does after each event.
pub struct LineWriter {
    bar: Option<ProgressBar>,
    buffer: Vec<u8>,
}

impl io::Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        // A log line that cannot be written has nowhere else to go, so the error is dropped.
        let write = || {
            let _ = io::stderr().lock().write_all(&self.buffer);
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}
