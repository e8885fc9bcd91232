//! A real PgBouncer in front of a test database, in the pool mode a test asks for. Where
//! `pgbouncer` is missing, it is installed with apt-get when running as root; otherwise the
//! test fails naming the package.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    DEADLINE, TempDir,
    postgres::{free_port, spawn_tied_to_this_process},
};

/// A PgBouncer process.
pub struct PgBouncer {
    process: Child,
    /// The URL of the test database through PgBouncer.
    pub url: String,
    _dir: TempDir,
}

impl PgBouncer {
    /// PgBouncer with `pool_mode` (`session`, `transaction`) in front of the database at
    /// `database_url` (trust authentication).
    pub fn start(database_url: &str, pool_mode: &str) -> Self {
        let target: tokio_postgres::Config = database_url.parse().expect("database URL");
        let host = match target.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = target.get_ports().first().copied().unwrap_or(5432);
        let user = target.get_user().unwrap_or("postgres").to_string();
        let database = target.get_dbname().unwrap_or("postgres").to_string();
        let dir = TempDir::new("pgbouncer");
        let listen = free_port();
        let users = dir.path().join("users.txt");
        std::fs::write(&users, format!("\"{user}\" \"\"\n")).expect("write users.txt");
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={host} port={port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n\
                 auth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
                 unix_socket_dir =\n",
                users.display()
            ),
        )
        .expect("write pgbouncer.ini");
        let mut command = Command::new(super::debian_binary("pgbouncer", "pgbouncer"));
        if unsafe { libc::getuid() } == 0 {
            // PgBouncer does not run as root.
            command.args(["-u", "nobody"]);
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("a+rwX")
                .arg(dir.path())
                .status();
        }
        command
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = spawn_tied_to_this_process(command);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            if let Ok(Some(status)) = process.try_wait() {
                panic!("pgbouncer exited: {status}");
            }
            assert!(started.elapsed() < DEADLINE, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            process,
            url: format!("postgres://{user}@127.0.0.1:{listen}/{database}"),
            _dir: dir,
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
