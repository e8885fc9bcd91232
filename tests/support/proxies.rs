//! Real proxies in front of a test relay: nginx (HTTP, as `deploy/nginx/nginx.conf` sets it
//! up) and HAProxy (TCP, sending the PROXY protocol). Each runs in the foreground in a
//! directory of its own and stops with its handle. Where a binary is missing, it is
//! installed with apt-get when running as root; otherwise the test fails naming the package.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    DEADLINE, TempDir, debian_binary,
    postgres::{free_port, spawn_tied_to_this_process},
    repository_file,
};

/// A proxy process and the address clients connect to.
pub struct Proxy {
    process: Child,
    /// `127.0.0.1:port` of each of its front ends, in the order they were asked for.
    pub addrs: Vec<String>,
    _dir: TempDir,
}

impl Proxy {
    /// nginx with the `location /` of the shipped `deploy/nginx/nginx.conf`, balancing to the
    /// relay at `upstream`.
    pub fn nginx(upstream: &str) -> Self {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let shipped = std::fs::read_to_string(repository_file("deploy/nginx/nginx.conf"))
            .expect("read deploy/nginx/nginx.conf");
        let upstream_block = {
            let start = shipped
                .find("    upstream relays {")
                .expect("upstream block");
            let end = start + shipped[start..].find("}\n").expect("end of upstream") + 2;
            shipped[start..end].to_string()
        };
        let config = shipped
            .replace(
                &upstream_block,
                &format!("    upstream relays {{\n        server {upstream};\n    }}\n"),
            )
            .replace("listen 7777;", &format!("listen 127.0.0.1:{port};"))
            .replace("http {\n", "http {\n    access_log off;\n");
        assert!(config.contains(&format!("server {upstream};")), "{config}");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write nginx.conf");
        let mut command = Command::new(debian_binary("nginx", "nginx"));
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args([
                "-e",
                "stderr",
                "-g",
                "daemon off; pid nginx.pid; error_log stderr;",
            ]);
        Self::start(command, dir, vec![format!("127.0.0.1:{port}")])
    }

    /// HAProxy in TCP mode with two front ends before the relay at `backend`: the first sends
    /// PROXY protocol version 1, the second version 2. It connects to the relay from
    /// 127.0.0.1.
    pub fn haproxy(backend: &str) -> Self {
        let dir = TempDir::new("haproxy");
        let (v1, v2) = (free_port(), free_port());
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend relay_v1\n\
             frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend relay_v2\n\
             backend relay_v1\n  server relay {backend} send-proxy source 127.0.0.1\n\
             backend relay_v2\n  server relay {backend} send-proxy-v2 source 127.0.0.1\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let mut command = Command::new(debian_binary("haproxy", "haproxy"));
        command.arg("-db").arg("-f").arg(&path);
        let addrs = vec![format!("127.0.0.1:{v1}"), format!("127.0.0.1:{v2}")];
        Self::start(command, dir, addrs)
    }

    /// HAProxy in TCP mode balancing round-robin over `backends`, each checked every 200 ms
    /// with `GET /readyz` (a draining or stopped relay gets no new connections), a
    /// connection refused by one sent to another (`option redispatch`), as in production.
    pub fn haproxy_balancing(backends: &[String]) -> Self {
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(n, addr)| format!("  server node{n} {addr} check inter 200ms fall 1 rise 2\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n\
             \x20 retries 3\n  option redispatch\n\
             frontend relays\n  bind 127.0.0.1:{port}\n  default_backend relays\n\
             backend relays\n  balance roundrobin\n  option httpchk GET /readyz\n\
             http-check expect status 200\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let mut command = Command::new(debian_binary("haproxy", "haproxy"));
        command.arg("-db").arg("-f").arg(&path);
        Self::start(command, dir, vec![format!("127.0.0.1:{port}")])
    }

    fn start(mut command: Command, dir: TempDir, addrs: Vec<String>) -> Self {
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("proxy log");
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = spawn_tied_to_this_process(command);
        let started = Instant::now();
        while !addrs
            .iter()
            .all(|a| std::net::TcpStream::connect(a).is_ok())
        {
            if let Ok(Some(status)) = process.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
                panic!("the proxy exited ({status}):\n{log}");
            }
            assert!(started.elapsed() < DEADLINE, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            process,
            addrs,
            _dir: dir,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
