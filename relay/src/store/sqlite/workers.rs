//! Threads that each own a SQLite connection and run jobs from one shared queue, so that
//! blocking SQLite calls never run on the relay's I/O threads.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::{Cancel, StoreError};

/// SQLite virtual-machine steps between two calls of the progress handler.
///
/// At each call a long read also yields its core (`sched_yield`, a few microseconds of work
/// apart): on a machine with few cores, a thread that has just woken for a client's lookup,
/// or an I/O thread with an answer to write, runs at once instead of waiting for the kernel
/// to end the reader's time slice. Cheap reads end before the first call. Under the
/// `req-close` attack this cut the good client's REQ p99 by a third (bench/RESULTS.md).
const STEPS_PER_CHECK: std::ffi::c_int = 1000;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Threads that each own a connection and run jobs from one shared queue.
pub struct Workers {
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts one thread per connection, named `name-N`.
    pub fn spawn(name: &str, connections: Vec<Connection>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for (n, mut conn) in connections.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut conn),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on one of the threads and waits for its result without blocking.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, result) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move |conn: &mut Connection| {
            let _ = reply.send(work(conn).map_err(store_error));
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        }
    }
}

impl Workers {
    /// Runs `work` like [`Workers::run`], stopping it when `cancel` is raised or when it has
    /// run for `limit` (it is not started at all when cancelled while queued).
    pub fn run_cancellable<T: Send + 'static>(
        &self,
        cancel: &Cancel,
        limit: Duration,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let cancel = cancel.clone();
        let (reply, result) = oneshot::channel();
        let sent = self.jobs.send(Box::new(move |conn: &mut Connection| {
            if cancel.is_cancelled() {
                let _ = reply.send(Err(StoreError::Cancelled));
                return;
            }
            let deadline = Instant::now() + limit;
            let watched = cancel.clone();
            let watch = conn.progress_handler(
                STEPS_PER_CHECK,
                Some(move || {
                    thread::yield_now();
                    watched.is_cancelled() || Instant::now() >= deadline
                }),
            );
            if let Err(error) = watch {
                let _ = reply.send(Err(store_error(error)));
                return;
            }
            let outcome = work(conn);
            // Removing the handler cannot fail in a way that matters: the next job installs
            // its own.
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            let outcome = outcome.map_err(|error| match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::OperationInterrupted) if cancel.is_cancelled() => {
                    StoreError::Cancelled
                }
                Some(rusqlite::ErrorCode::OperationInterrupted) => StoreError::TimedOut,
                _ => store_error(error),
            });
            let _ = reply.send(outcome);
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        }
    }
}

/// A SQLite error as a store error: what SQLite refuses for the data it was given (a broken
/// constraint, a value too big) is [`StoreError::Refused`]; anything else means the store is
/// not working.
pub fn store_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig) => {
            StoreError::Refused(error.to_string())
        }
        _ => StoreError::Database(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A statement that never ends by itself.
    const ENDLESS: &str =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";

    fn workers() -> Workers {
        let conn = Connection::open_in_memory().expect("an in-memory database");
        Workers::spawn("test-reader", vec![conn]).expect("a worker thread")
    }

    #[tokio::test]
    async fn a_running_statement_stops_when_cancelled() {
        let workers = workers();
        let cancel = Cancel::default();
        let started = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&started);
        let endless = workers.run_cancellable(&cancel, Duration::from_secs(3600), move |conn| {
            running.store(true, Ordering::Release);
            conn.query_row(ENDLESS, [], |r| r.get::<_, i64>(0))
        });
        let endless = tokio::spawn(endless);
        while !started.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
        assert!(matches!(endless.await.unwrap(), Err(StoreError::Cancelled)));
        // The worker is free again.
        let one = workers.run(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
        assert_eq!(one.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_statement_past_its_time_limit_stops() {
        let workers = workers();
        let endless =
            workers.run_cancellable(&Cancel::default(), Duration::from_millis(10), |conn| {
                conn.query_row(ENDLESS, [], |r| r.get::<_, i64>(0))
            });
        assert!(matches!(endless.await, Err(StoreError::TimedOut)));
    }
}
