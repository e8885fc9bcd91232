//! Threads that each own a SQLite connection and run jobs from one shared queue, so that
//! blocking SQLite calls never run on the relay's I/O threads.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

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
            let _ = reply.send(work(conn).map_err(|e| StoreError::Database(e.to_string())));
        }));
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        }
    }
}
