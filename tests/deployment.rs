//! The deployment files agree with the binary: the Compose file is valid for the real
//! Compose binary, and every command, environment variable and port it gives a Starling
//! container is one `starling` accepts and the balancer and Prometheus point at.

use std::process::Command;

use serde_json::Value;

use crate::support::{python, repository_file};

fn help(command: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args([command, "--help"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn compose_file_is_valid_and_agrees_with_the_binary() {
    let output = Command::new(python::compose_binary())
        .args(["-f"])
        .arg(repository_file("docker-compose.yml"))
        .args(["config", "--format", "json"])
        .output()
        .expect("run docker-compose");
    assert!(
        output.status.success(),
        "compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let compose: Value = serde_json::from_slice(&output.stdout).expect("compose JSON");
    let services = compose["services"].as_object().expect("services");
    let nginx = std::fs::read_to_string(repository_file("deploy/nginx/nginx.conf")).unwrap();
    let prometheus =
        std::fs::read_to_string(repository_file("deploy/prometheus/prometheus.yml")).unwrap();
    let mut relays = 0;
    for (name, service) in services {
        if service["image"] != "starling:local" {
            continue;
        }
        let command = service["command"][0].as_str().expect("a starling command");
        assert!(
            ["serve", "migrate"].contains(&command),
            "{name}: unknown command {command}"
        );
        let help = help(command);
        for (key, value) in service["environment"].as_object().expect("environment") {
            assert!(
                help.contains(&format!("env: {key}")),
                "{name}: starling {command} does not read {key}"
            );
            if key == "STARLING_BIND" {
                let bind: std::net::SocketAddr =
                    value.as_str().unwrap().parse().expect("a socket address");
                assert_eq!(
                    bind.port(),
                    7777,
                    "{name} listens where the balancer and Prometheus look"
                );
            }
        }
        if command == "serve" {
            relays += 1;
            assert!(
                nginx.contains(&format!("server {name}:7777;")),
                "nginx does not balance to {name}"
            );
            assert!(
                prometheus.contains(&format!("\"{name}:7777\"")),
                "Prometheus does not scrape {name}"
            );
        }
    }
    assert_eq!(relays, 3, "three relay nodes");
    static_addresses_are_outside_the_dynamic_range(&compose);
}

/// Whether `ip` is in `cidr` (`a.b.c.d/n`).
fn ipv4_in(ip: std::net::Ipv4Addr, cidr: &str) -> bool {
    let (network, bits) = cidr.split_once('/').expect("a CIDR");
    let network: std::net::Ipv4Addr = network.parse().expect("a network address");
    let bits: u32 = bits.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// Every fixed address a service takes is in its network's subnet and outside the range
/// Docker hands out to other containers, which could otherwise take it first.
fn static_addresses_are_outside_the_dynamic_range(compose: &Value) {
    let mut checked = 0;
    for (name, service) in compose["services"].as_object().expect("services") {
        let Some(networks) = service["networks"].as_object() else {
            continue;
        };
        for (network, settings) in networks {
            let Some(address) = settings["ipv4_address"].as_str() else {
                continue;
            };
            let ip: std::net::Ipv4Addr = address.parse().expect("an IPv4 address");
            let pools = compose["networks"][network]["ipam"]["config"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: network {network} has no fixed subnet"));
            let pool = pools
                .iter()
                .find(|pool| pool["subnet"].as_str().is_some_and(|s| ipv4_in(ip, s)))
                .unwrap_or_else(|| panic!("{name}: {address} is in no subnet of {network}"));
            let range = pool["ip_range"].as_str().unwrap_or_else(|| {
                panic!("{name}: {network} has no ip_range, so {address} is in its dynamic pool")
            });
            assert!(
                !ipv4_in(ip, range),
                "{name}: {address} is inside {network}'s dynamic range {range}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the balancer has a fixed address");
}

#[test]
fn the_image_runs_a_command_the_binary_has() {
    let dockerfile = std::fs::read_to_string(repository_file("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/starling\"]"));
    assert!(dockerfile.contains("CMD [\"serve\"]"));
    assert!(dockerfile.contains("EXPOSE 7777"));
    let help = help("serve");
    for key in ["STARLING_BIND", "STARLING_DATA_DIR"] {
        assert!(
            dockerfile.contains(key) && help.contains(&format!("env: {key}")),
            "{key}"
        );
    }
}

#[test]
fn plain_yaml_passes_yamllint() {
    let targets = [
        repository_file("docker-compose.yml"),
        repository_file("deploy"),
        repository_file("helm/starling/Chart.yaml"),
        repository_file("helm/starling/values.yaml"),
        repository_file("helm/starling/ci/production-values.yaml"),
    ];
    let output = python::command()
        .args(["-m", "yamllint", "--strict", "-c"])
        .arg(repository_file(".yamllint.yml"))
        .args(&targets)
        .output()
        .expect("run yamllint");
    assert!(
        output.status.success(),
        "yamllint:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[tokio::test]
async fn helm_chart_renders_validates_and_agrees_with_the_binary() {
    for (shipped, source) in [
        ("files/alerts.yml", "deploy/prometheus/alerts.yml"),
        ("files/starling.json", "deploy/grafana/starling.json"),
    ] {
        let chart_copy =
            std::fs::read(repository_file(&format!("helm/starling/{shipped}"))).unwrap();
        assert_eq!(
            chart_copy,
            std::fs::read(repository_file(source)).unwrap(),
            "helm/starling/{shipped} differs from {source}"
        );
    }
    let out = crate::support::TempDir::new("helm");
    let output = python::command()
        .arg(repository_file("helm/starling/ci/check_chart.py"))
        .arg(repository_file("helm/starling"))
        .arg(out.path())
        .output()
        .expect("run the chart check");
    assert!(
        output.status.success(),
        "chart check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let containers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the check's JSON");
    assert!(containers.len() >= 6, "{containers:?}");
    let metrics = format!("127.0.0.1:{}", crate::support::postgres::free_port());
    let relay = crate::support::Relay::start(&["--metrics-bind", &metrics]);
    for container in &containers {
        let command = container["args"][0].as_str().expect("a starling command");
        assert!(
            ["serve", "migrate"].contains(&command),
            "unknown command {command}"
        );
        let help = help(command);
        for key in container["env"].as_array().unwrap() {
            let key = key.as_str().unwrap();
            assert!(
                help.contains(&format!("env: {key}")),
                "starling {command} does not read {key}"
            );
        }
        // The chart's ports are those it binds; each probe is asked of the relay's listener
        // on the same side (the relay's own port, or the metrics port).
        let port_of = |setting: &str| {
            container["binds"][setting].as_str().map(|bind| {
                bind.parse::<std::net::SocketAddr>()
                    .unwrap_or_else(|_| panic!("{setting}={bind} is not an address"))
                    .port()
            })
        };
        let (relay_port, metrics_port) =
            (port_of("STARLING_BIND"), port_of("STARLING_METRICS_BIND"));
        for port in container["ports"].as_array().unwrap() {
            let port = port.as_u64().map(|p| p as u16);
            assert!(
                port.is_some() && (port == relay_port || port == metrics_port),
                "container port {port:?} is neither STARLING_BIND's nor STARLING_METRICS_BIND's"
            );
        }
        for probe in container["probes"].as_array().unwrap() {
            let path = probe["path"].as_str().unwrap();
            let port = probe["port"].as_u64().map(|p| p as u16);
            let addr = if port.is_some() && port == metrics_port {
                &metrics
            } else {
                assert_eq!(port, relay_port, "probe {path} on an unknown port");
                &relay.addr
            };
            let status = crate::support::http::request(addr, "GET", path, &[])
                .await
                .status;
            assert_eq!(status, 200, "probe path {path} on {addr}");
        }
        if command == "serve" {
            starts_with_the_charts_settings(container).await;
        }
    }
}

/// The relay starts with the settings the chart gives it (so no combination of them is one
/// it refuses), but for its addresses and data directory, which are this test's, and the
/// files for TLS to Redis, which come with the Secret's REDIS_URL.
async fn starts_with_the_charts_settings(container: &Value) {
    const OURS: [&str; 6] = [
        "STARLING_BIND",
        "STARLING_METRICS_BIND",
        "STARLING_DATA_DIR",
        "STARLING_REDIS_CA_FILE",
        "STARLING_REDIS_CERT_FILE",
        "STARLING_REDIS_KEY_FILE",
    ];
    let settings = container["settings"]
        .as_object()
        .expect("the chart's settings");
    let env: Vec<(&str, &str)> = settings
        .iter()
        .filter(|(key, _)| !OURS.contains(&key.as_str()))
        .map(|(key, value)| (key.as_str(), value.as_str().expect("a string setting")))
        .collect();
    let metrics = format!("127.0.0.1:{}", crate::support::postgres::free_port());
    let relay = crate::support::Relay::start_in(
        crate::support::TempDir::new("chart-settings"),
        &["--metrics-bind", &metrics],
        &env,
    );
    let ready = crate::support::http::request(&metrics, "GET", "/readyz", &[]).await;
    assert_eq!(
        ready.status, 200,
        "{} values: {}",
        container["values"], ready.body
    );
    drop(relay);
}
