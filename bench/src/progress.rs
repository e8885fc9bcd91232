//! One progress line on standard error, rewritten in place about once a second while a
//! mode runs, when standard error is a terminal (and nothing otherwise).

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// A counter shown as `label: count/total (rate/s)` until it is dropped.
pub struct Progress {
    count: Arc<AtomicU64>,
    shower: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl Progress {
    /// Starts showing `label` and a counter from zero, out of `total` when it is known.
    pub fn start(label: impl Into<String>, total: Option<u64>) -> Self {
        Self::watch(label, total, Arc::new(AtomicU64::new(0)))
    }

    /// Starts showing `label` and a counter that tasks already count on.
    pub fn watch(label: impl Into<String>, total: Option<u64>, count: Arc<AtomicU64>) -> Self {
        let shower = std::io::stderr().is_terminal().then(|| {
            let (stop, stopped) = mpsc::channel();
            let (label, count) = (label.into(), Arc::clone(&count));
            let thread = thread::spawn(move || show(&label, total, &count, &stopped));
            (stop, thread)
        });
        Self { count, shower }
    }

    /// The counter, for tasks that count on their own.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.count)
    }

    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.shower.take() {
            drop(stop);
            // A panic of the line's thread has already been reported on stderr.
            thread.join().ok();
        }
    }
}

/// Rewrites the line every second until `stopped` disconnects, then clears it.
fn show(label: &str, total: Option<u64>, count: &AtomicU64, stopped: &mpsc::Receiver<()>) {
    let total = total.map(|t| format!("/{t}")).unwrap_or_default();
    let (mut last, mut at) = (0, Instant::now());
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(1)) {
        let (now, n) = (Instant::now(), count.load(Ordering::Relaxed));
        let rate = n.saturating_sub(last) as f64 / now.duration_since(at).as_secs_f64();
        (last, at) = (n, now);
        // `\x1b[K` clears what a longer previous line left behind.
        eprint!("\r{label}: {n}{total} ({rate:.0}/s)\x1b[K");
    }
    eprint!("\r\x1b[K");
}
