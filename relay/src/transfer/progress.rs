//! A progress line on standard error for long transfers, shown only on a terminal.

use std::{
    io::{self, IsTerminal},
    time::{Duration, Instant},
};

/// A progress line on standard error, shown only when it is a terminal.
pub struct Progress {
    label: &'static str,
    total_bytes: Option<u64>,
    shown: Option<Instant>,
    started: Instant,
}

impl Progress {
    /// A line for events `label`ed so, of `total_bytes` if known.
    pub fn new(label: &'static str, total_bytes: Option<u64>) -> Self {
        let shown = io::stderr()
            .is_terminal()
            .then(|| Instant::now() - Duration::from_secs(1));
        Self {
            label,
            total_bytes,
            shown,
            started: Instant::now(),
        }
    }

    /// Shows `events` done (and `bytes` of the total), at most five times a second.
    pub fn update(&mut self, events: u64, bytes: Option<u64>) {
        let Some(shown) = self.shown else { return };
        if shown.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.shown = Some(Instant::now());
        let rate = events as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let percent = match (bytes, self.total_bytes) {
            (Some(done), Some(total)) if total > 0 => format!(" {:>3}%", done * 100 / total),
            _ => String::new(),
        };
        eprint!("\r{}{percent} {events} events ({rate:.0}/s)   ", self.label);
    }

    /// Shows the last count and the time taken.
    pub fn finish(&self, events: u64) {
        if self.shown.is_some() {
            eprintln!(
                "\r{} {events} events in {:.1}s                ",
                self.label,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
