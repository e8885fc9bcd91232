//! PostgreSQL for tests. `DATABASE_URL`, when set, names a server to use; otherwise the
//! suite starts a throwaway `postgres` on a free port in a temp directory, once per test
//! process, and stops it when the process ends. Every test gets its own database.
//!
//! Where the server binaries are missing, they are installed with apt-get when running as
//! root; otherwise the suite fails naming the package to install.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use super::{DEADLINE, TempDir};

/// A PostgreSQL server tests can create databases on.
pub struct PgServer {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    throwaway: Option<Throwaway>,
}

/// On a TLS server ([`PgServer::throwaway_tls`]), the user who may log in only with a
/// client certificate signed by the test CA and issued to `starling` (`client.crt`).
pub const CLIENT_CERT_USER: &str = "starling_cert";

/// A server this suite started and owns.
struct Throwaway {
    bin: PathBuf,
    data: TempDir,
    process: Option<Child>,
    /// Serves TLS only (over TCP; the admin connects over the Unix socket).
    tls: bool,
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    /// `postgres://…/name`.
    pub url: String,
    name: String,
    server: &'static PgServer,
}

impl TestDatabase {
    /// Runs SQL statements on this database.
    pub fn execute(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_string());
        on_own_runtime(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        })
        .expect("execute SQL")
    }

    /// Runs a `count(*)` query with one bytea parameter.
    pub fn query_count(&self, sql: &str, param: Vec<u8>) -> i64 {
        let (url, sql) = (self.url.clone(), sql.to_string());
        on_own_runtime(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
                .query_one(&sql, &[&param])
                .await
                .map(|row| row.get::<_, i64>(0))
        })
        .expect("count query")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = self.server.admin(&sql);
    }
}

/// The server shared by every test of this process.
pub fn shared() -> &'static PgServer {
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => PgServer::external(&url),
        _ => PgServer::throwaway(),
    })
}

/// A fresh database on the shared server, with Starling's schema applied.
pub fn database() -> TestDatabase {
    shared().create_database()
}

impl PgServer {
    fn external(url: &str) -> Self {
        let config: tokio_postgres::Config =
            url.parse().expect("DATABASE_URL must be a postgres:// URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_string(),
        };
        PgServer {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_string(),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            throwaway: None,
        }
    }

    /// Starts a private throwaway server (not shared), for tests that stop and start it.
    pub fn throwaway() -> Self {
        Self::throwaway_with(None)
    }

    /// Starts a private throwaway server that accepts TCP connections over TLS only, with
    /// the certificate and key `server.crt` and `server.key` of `certificates`.
    pub fn throwaway_tls(certificates: &Path) -> Self {
        Self::throwaway_with(Some(certificates))
    }

    fn throwaway_with(certificates: Option<&Path>) -> Self {
        remove_stale_data_dirs();
        let bin = server_binaries();
        let data = TempDir::new("postgres");
        let owner = Owner::for_server();
        owner.give(data.path());
        let pgdata = data.path().join("pgdata");
        let initdb = Command::new(bin.join("initdb"))
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--username=starling",
                "-D",
            ])
            .arg(&pgdata)
            .uid(owner.uid)
            .gid(owner.gid)
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        if let Some(certificates) = certificates {
            for file in ["server.crt", "server.key", "ca.crt"] {
                let copy = data.path().join(file);
                std::fs::copy(certificates.join(file), &copy).expect("copy the certificate");
                owner.give(&copy);
                std::fs::set_permissions(
                    &copy,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod the certificate");
            }
            // CLIENT_CERT_USER logs in with a certificate only, the one issued to
            // `starling` (the CN of `client.crt`); everyone else needs TLS, no certificate.
            std::fs::write(
                pgdata.join("pg_hba.conf"),
                format!(
                    "local all all trust\n\
                     hostssl all {CLIENT_CERT_USER} 127.0.0.1/32 cert map=certificates\n\
                     hostssl all all 127.0.0.1/32 trust\n"
                ),
            )
            .expect("write pg_hba.conf");
            std::fs::write(
                pgdata.join("pg_ident.conf"),
                format!("certificates starling {CLIENT_CERT_USER}\n"),
            )
            .expect("write pg_ident.conf");
        }
        let mut server = PgServer {
            host: "127.0.0.1".into(),
            port: free_port(),
            user: "starling".into(),
            password: None,
            throwaway: Some(Throwaway {
                bin,
                data,
                process: None,
                tls: certificates.is_some(),
            }),
        };
        server.start();
        if certificates.is_some() {
            server
                .admin(&format!("CREATE ROLE {CLIENT_CERT_USER} LOGIN SUPERUSER"))
                .expect("create the client-certificate user");
        }
        server
    }

    /// Starts (or restarts) the throwaway server on its port and waits until it accepts
    /// connections.
    pub fn start(&mut self) {
        let port = self.port;
        let host = self.host.clone();
        let throwaway = self
            .throwaway
            .as_mut()
            .expect("only a throwaway server can be started");
        let owner = Owner::for_server();
        let mut command = Command::new(throwaway.bin.join("postgres"));
        command
            .arg("-D")
            .arg(throwaway.data.path().join("pgdata"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(throwaway.data.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
            ])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=500"])
            // A small lock table (10 × 500 connections), as a busy server's is for its
            // load: writers that took a lock per event would run it out.
            .args(["-c", "max_locks_per_transaction=10"]);
        if throwaway.tls {
            let data = throwaway.data.path();
            command
                .args(["-c", "ssl=on", "-c"])
                .arg(format!(
                    "ssl_cert_file={}",
                    data.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    data.join("server.key").display()
                ))
                .arg("-c")
                .arg(format!("ssl_ca_file={}", data.join("ca.crt").display()));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .uid(owner.uid)
            .gid(owner.gid);
        throwaway.process = Some(spawn_tied_to_this_process(command));
        let started = Instant::now();
        while std::net::TcpStream::connect((host.as_str(), port)).is_err()
            || self.admin("SELECT 1").is_err()
        {
            assert!(
                started.elapsed() < DEADLINE,
                "the throwaway PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the throwaway server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        let throwaway = self
            .throwaway
            .as_mut()
            .expect("only a throwaway server can be stopped");
        if let Some(mut child) = throwaway.process.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// A connection URL for database `name`.
    pub fn url(&self, name: &str) -> String {
        let auth = match &self.password {
            Some(password) => format!("{}:{password}", self.user),
            None => self.user.clone(),
        };
        format!("postgres://{auth}@{}:{}/{name}", self.host, self.port)
    }

    /// Creates an empty database with Starling's schema, copied from a template made once.
    pub fn create_database(&'static self) -> TestDatabase {
        static TEMPLATE: Mutex<Option<String>> = Mutex::new(None);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let template = {
            let mut template = TEMPLATE.lock().unwrap_or_else(|p| p.into_inner());
            template
                .get_or_insert_with(|| {
                    let name = format!("starling_template_{}", std::process::id());
                    self.admin(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .expect("drop template");
                    self.admin(&format!("CREATE DATABASE \"{name}\""))
                        .expect("create template");
                    self.migrate(&name);
                    name
                })
                .clone()
        };
        let name = format!(
            "starling_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.admin(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .expect("create test database");
        TestDatabase {
            url: self.url(&name),
            name,
            server: self,
        }
    }

    /// Creates a database without Starling's schema.
    pub fn create_empty_database(&'static self) -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "starling_empty_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.admin(&format!("CREATE DATABASE \"{name}\" TEMPLATE template0"))
            .expect("create empty database");
        TestDatabase {
            url: self.url(&name),
            name,
            server: self,
        }
    }

    fn migrate(&self, name: &str) {
        let url = self.url(name);
        on_own_runtime(async move {
            let (mut client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            starling::store::postgres::migrate::run(&mut client)
                .await
                .map(|_| ())
        })
        .expect("migrate the template database");
    }

    /// The directory of a throwaway server's Unix socket.
    pub fn socket_dir(&self) -> Option<&Path> {
        self.throwaway.as_ref().map(|t| t.data.path())
    }

    /// Runs one statement on the server's `postgres` database.
    pub fn admin(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        let url = match &self.throwaway {
            Some(t) if t.tls => format!(
                "host={} port={} user={} dbname=postgres",
                t.data.path().display(),
                self.port,
                self.user
            ),
            _ => self.url("postgres"),
        };
        let sql = sql.to_string();
        on_own_runtime(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.throwaway.is_some() {
            self.stop();
        }
    }
}

/// Runs a future to completion on a new runtime in a new thread, so that it works from
/// inside and outside async tests alike.
fn on_own_runtime<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
    .join()
    .expect("helper thread")
}

/// The user a throwaway server runs as: `initdb` refuses to run as root.
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    fn for_server() -> Self {
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid != 0 {
            return Owner { uid, gid };
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        ["postgres", "nobody"]
            .iter()
            .find_map(|user| {
                let fields: Vec<&str> = passwd
                    .lines()
                    .find(|l| l.starts_with(&format!("{user}:")))?
                    .split(':')
                    .collect();
                Some(Owner {
                    uid: fields.get(2)?.parse().ok()?,
                    gid: fields.get(3)?.parse().ok()?,
                })
            })
            .expect("a postgres or nobody user to run PostgreSQL as")
    }

    fn give(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .expect("chown the data directory");
    }
}

/// The directory with `initdb` and `postgres`, installing the Debian package if needed.
fn server_binaries() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = find_binaries() {
            return bin;
        }
        super::install_debian_package("postgresql");
        find_binaries().expect(
            "PostgreSQL server binaries not found: install the Debian package `postgresql` \
             (apt-get install postgresql) or set DATABASE_URL to a server to use",
        )
    })
    .clone()
}

fn find_binaries() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    candidates.sort();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        candidates.insert(
            0,
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()),
        );
    }
    candidates
        .into_iter()
        .rev()
        .find(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Data directories of throwaway servers whose test process died without cleaning up.
fn remove_stale_data_dirs() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("starling-test-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let alive = pid
            .parse::<i32>()
            .is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Spawns a process that the kernel stops (SIGQUIT: PostgreSQL's immediate shutdown) when
/// this test process exits, however it exits. The spawning thread lives as long as the
/// process, because the kernel ties the signal to the thread that forked.
pub fn spawn_tied_to_this_process(mut command: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, queue) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut command, reply) in queue {
                let _ = reply.send(command.spawn());
            }
            std::thread::park();
        });
        Mutex::new(requests)
    });
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .expect("spawner thread");
    result
        .recv()
        .expect("spawner reply")
        .expect("spawn postgres")
}

use std::os::unix::process::CommandExt;
