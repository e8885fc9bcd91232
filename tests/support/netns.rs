//! Network namespaces for partition tests: a namespace of its own for a relay, joined to
//! this machine by veth pairs, one per path (clients, Redis, PostgreSQL), so that a test
//! can cut one path silently (`ip link set … down`: packets vanish, no connection is
//! closed, as when a NAT or a balancer drops a flow) and heal it.
//!
//! On this machine's side of each link a forwarder (a thread of its own, so that it runs
//! while the test blocks) relays connections to the service on loopback. Namespaces need
//! root and `ip` (iproute2, installed when missing); [`Namespace::create`] says why it
//! cannot when it cannot (not root, or a sandbox that forbids namespaces), and the tests
//! print that and skip.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Links made so far by this process (each gets its own /30).
static LINKS: AtomicU32 = AtomicU32::new(0);
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// One veth pair: `host_ip` on this machine's side, `ns_ip` in the namespace.
pub struct Link {
    host_dev: String,
    /// The address of this machine's side.
    pub host_ip: Ipv4Addr,
    /// The address of the namespace's side.
    pub ns_ip: Ipv4Addr,
}

/// A network namespace and its links; removed on drop.
pub struct Namespace {
    /// Its name, for `ip netns exec`.
    pub name: String,
    links: Vec<Link>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespace {
    /// A namespace with `links` veth pairs to this machine, or why none can be made here.
    pub fn create(links: usize) -> Result<Self, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        if Command::new("ip").arg("-V").output().is_err() {
            super::install_debian_package("iproute2");
        }
        let pid = std::process::id();
        let name = format!("st{pid}n{}", NAMESPACES.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let mut namespace = Namespace {
            name,
            links: Vec::new(),
        };
        ip(&["-n", &namespace.name, "link", "set", "lo", "up"])?;
        for _ in 0..links {
            let n = LINKS.fetch_add(1, Ordering::Relaxed);
            // 10.(100 + pid % 100).(n / 64).(n % 64 * 4) /30: .1 here, .2 there.
            let (b, c, d) = (100 + (pid % 100) as u8, (n / 64) as u8, (n % 64 * 4) as u8);
            let host_ip = Ipv4Addr::new(10, b, c, d + 1);
            let ns_ip = Ipv4Addr::new(10, b, c, d + 2);
            let host_dev = format!("st{pid}h{n}");
            let ns_dev = format!("st{pid}i{n}");
            ip(&[
                "link", "add", &host_dev, "type", "veth", "peer", "name", &ns_dev,
            ])?;
            namespace.links.push(Link {
                host_dev: host_dev.clone(),
                host_ip,
                ns_ip,
            });
            ip(&["link", "set", &ns_dev, "netns", &namespace.name])?;
            ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_dev])?;
            ip(&["link", "set", &host_dev, "up"])?;
            let n = &namespace.name;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_dev,
            ])?;
            ip(&["-n", n, "link", "set", &ns_dev, "up"])?;
        }
        Ok(namespace)
    }

    /// Link `i`.
    pub fn link(&self, i: usize) -> &Link {
        &self.links[i]
    }

    /// Cuts link `i` silently: packets are dropped, connections stay open.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.links[i].host_dev, "down"]).expect("cut a link");
    }

    /// Brings link `i` back.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.links[i].host_dev, "up"]).expect("heal a link");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Removing the namespace removes its ends of the pairs, and so the pairs.
        let _ = ip(&["netns", "del", &self.name]);
        for link in &self.links {
            let _ = ip(&["link", "del", &link.host_dev]);
        }
    }
}

/// Relays every connection made to `listen` (an address on this machine's side of a link)
/// to `target`, on a thread of its own, for as long as the test process runs. Returns the
/// address it listens on.
pub fn forward(listen: Ipv4Addr, target: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind((listen, 0)).expect("bind a forwarder");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("forwarder address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("forwarder runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    });
    addr
}
