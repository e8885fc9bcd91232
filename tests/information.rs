//! NIP-11, the human page, health checks, and where settings come from.

use serde_json::Value;

use crate::support::{
    Relay, TempDir,
    http::{nip11_document, request},
};

#[tokio::test]
async fn serves_the_nip11_document_with_real_limits_and_cors() {
    let pubkey = "ab".repeat(32);
    let relay = Relay::start(&[
        "--name",
        "Test Relay",
        "--pubkey",
        &pubkey,
        "--contact",
        "mailto:ops@example.com",
        "--max-limit",
        "321",
        "--max-subscriptions",
        "7",
        "--min-pow-difficulty",
        "3",
    ]);
    let response = request(
        &relay.addr,
        "GET",
        "/",
        &[("Accept", "application/nostr+json")],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/nostr+json")
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(response.header("access-control-allow-headers").is_some());
    assert!(
        response
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("GET"))
    );
    let doc: Value = serde_json::from_str(&response.body).expect("JSON document");
    assert_eq!(doc["name"], "Test Relay");
    assert_eq!(doc["pubkey"], pubkey);
    assert_eq!(doc["contact"], "mailto:ops@example.com");
    assert!(
        doc["software"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://"))
    );
    assert!(doc["version"].is_string());
    assert_eq!(
        doc["supported_nips"],
        serde_json::json!([1, 9, 11, 13, 40, 42, 45, 50, 62, 70, 77, 86])
    );
    let limits = &doc["limitation"];
    assert_eq!(limits["max_limit"], 321);
    assert_eq!(limits["max_subscriptions"], 7);
    assert_eq!(limits["min_pow_difficulty"], 3);
    assert_eq!(limits["max_message_length"], 512 * 1024);
    assert_eq!(limits["max_subid_length"], 64);
    assert_eq!(limits["restricted_writes"], true);
    assert_eq!(limits["auth_required"], false);
}

#[tokio::test]
async fn answers_cors_preflight() {
    let relay = Relay::start(&[]);
    let response = request(
        &relay.addr,
        "OPTIONS",
        "/",
        &[
            ("Origin", "https://client.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "accept"),
        ],
    )
    .await;
    assert!(
        response.status == 204 || response.status == 200,
        "status {}",
        response.status
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(
        response
            .header("access-control-allow-headers")
            .is_some_and(|h| h.to_lowercase().contains("accept"))
    );
}

#[tokio::test]
async fn browsers_get_a_page_and_probes_get_health() {
    let relay = Relay::start(&["--name", "<Relay & Co>"]);
    let page = request(&relay.addr, "GET", "/", &[("Accept", "text/html")]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.body.contains("&lt;Relay &amp; Co&gt;"));
    let health = request(&relay.addr, "GET", "/healthz", &[]).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn flags_override_environment_which_overrides_the_config_file() {
    let dir = TempDir::new("config");
    let file = dir.path().join("starling.toml");
    std::fs::write(&file, "name = \"from file\"\nmax_limit = 111\nmax_filters = 3\ndescription = \"file description\"\n")
        .unwrap();
    let relay = Relay::start_in(
        dir,
        &["--config", file.to_str().unwrap(), "--max-limit", "222"],
        &[("STARLING_NAME", "from env"), ("STARLING_MAX_FILTERS", "4")],
    );
    let doc = nip11_document(&relay.addr).await;
    assert_eq!(doc["name"], "from env");
    assert_eq!(doc["description"], "file description");
    assert_eq!(doc["limitation"]["max_limit"], 222);
    assert_eq!(doc["limitation"]["max_filters"], 4);
}

#[tokio::test]
async fn limits_nip11_has_no_field_for_are_reported_under_starling() {
    let relay = Relay::start(&[
        "--max-event-bytes",
        "5000",
        "--max-tag-value-bytes",
        "77",
        "--query-ms-per-minute-per-connection",
        "1234",
        "--max-ping-burst",
        "3",
        "--strike-penalty-pace-ms",
        "400",
    ]);
    let doc = nip11_document(&relay.addr).await;
    let limits = &doc["starling"]["limits"];
    assert_eq!(limits["max_event_bytes"], 5000, "{doc}");
    assert_eq!(limits["max_tag_value_bytes"], 77);
    assert_eq!(limits["query_ms_per_minute_per_connection"], 1234);
    assert_eq!(limits["max_connections_per_ip"], 100, "on by default");
    assert_eq!(
        limits["max_connections_per_minute_per_ip"], 600,
        "on by default"
    );
    assert_eq!(limits["max_connections_burst_per_ip"], 100);
    assert_eq!(limits["max_strikes_per_connection"], 50);
    assert_eq!(limits["max_strikes_per_ip"], 200);
    assert_eq!(limits["strike_penalty_seconds"], 120);
    assert_eq!(limits["strike_penalty_pace_ms"], 400);
    assert_eq!(limits["max_ping_burst"], 3);
    assert_eq!(limits["max_pings_per_minute_per_connection"], 60);
}

#[test]
fn settings_of_strikes_and_pings_that_make_no_sense_stop_the_relay() {
    for (args, named) in [
        (
            &["--strike-penalty-pace-ms", "0"][..],
            "strike_penalty_pace_ms",
        ),
        (
            &[
                "--strike-penalty-pace-ms",
                "5000",
                "--idle-timeout-seconds",
                "5",
            ][..],
            "shorter than idle_timeout_seconds",
        ),
        (&["--max-ping-burst", "0"][..], "max_ping_burst"),
    ] {
        let refused = Relay::refused_at_start(args);
        assert!(refused.contains(named), "{args:?}: {refused}");
    }
}

#[tokio::test]
async fn help_explains_options_and_bad_settings_stop_the_relay() {
    let binary = env!("CARGO_BIN_EXE_starling");
    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for option in [
        "--bind",
        "--data-dir",
        "--config",
        "STARLING_MAX_MESSAGE_BYTES",
        "serve",
    ] {
        assert!(help.contains(option), "--help does not mention {option}");
    }
    let dir = TempDir::new("bad-config");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "no_such_setting = 1\n").unwrap();
    let out = std::process::Command::new(binary)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_setting"));
}

#[tokio::test]
async fn the_serve_subcommand_runs_the_relay() {
    let relay = Relay::start_in(TempDir::new("serve"), &["serve", "--name", "served"], &[]);
    let doc = nip11_document(&relay.addr).await;
    assert_eq!(doc["name"], "served");
}

#[test]
fn the_readme_documents_every_option() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let readme = std::fs::read_to_string(crate::support::repository_file("README.md")).unwrap();
    let mut documented = 0;
    for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '=') {
        let is_option =
            word.starts_with("--") && word.len() > 2 && word != "--help" && word != "--version";
        if is_option || word.starts_with("STARLING_") {
            assert!(
                readme.contains(&format!("`{word}`")),
                "README.md does not document {word}"
            );
            documented += 1;
        }
    }
    assert!(documented > 40, "found only {documented} options in --help");
}

#[tokio::test]
async fn metrics_cover_the_node_and_carry_its_id() {
    use serde_json::json;

    use crate::support::{Client, note};

    let relay = Relay::start(&["--node-id", "metrics-node"]);
    let mut client = Client::connect(&relay.url()).await;
    client.req("live", &[json!({"kinds": [1]})]).await;
    let mut writer = Client::connect(&relay.url()).await;
    writer.publish_ok(&note(1, "counted")).await;
    let mut bad = note(1, "bad");
    bad.sig[0] ^= 1;
    writer.publish(&bad).await;
    client.live_event("live").await;
    let response = request(&relay.addr, "GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    let metrics = response.body;
    for name in [
        "starling_connections_opened_total",
        "starling_connections_open",
        "starling_subscriptions_open",
        "starling_messages_received_total",
        "starling_messages_sent_total",
        "starling_events_accepted_total",
        "starling_events_refused_total",
        "starling_store_operation_duration_seconds_bucket",
        "starling_store_write_batch_size_bucket",
        "starling_bus_published_total",
        "starling_deliveries_total",
        "starling_bus_connected",
        "starling_bus_reconnects_total",
        "starling_cluster_nodes",
        "starling_process_cpu_time_seconds_total",
        "starling_process_memory_resident_bytes",
    ] {
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect();
        assert!(!series.is_empty(), "no series for {name}:\n{metrics}");
        assert!(
            series.iter().all(|l| l.contains("node=\"metrics-node\"")),
            "{name} lacks the node label"
        );
    }
    assert!(
        metrics.contains(
            "starling_events_accepted_total{kind_class=\"regular\",node=\"metrics-node\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"invalid\""), "{metrics}");
}

#[tokio::test]
async fn postgresql_nodes_report_their_pool_and_json_cache() {
    use serde_json::json;

    use crate::support::{
        Client, note,
        relay::{BACKEND, Backend},
    };

    BACKEND
        .scope(Backend::Postgres, async {
            let relay = Relay::start(&[]);
            let mut client = Client::connect(&relay.url()).await;
            let event = note(1, "cached once written");
            client.publish_ok(&event).await;
            let stored = client.req("q", &[json!({"ids": [event.id_hex()]})]).await;
            assert_eq!(stored.len(), 1);
            let metrics = request(&relay.addr, "GET", "/metrics", &[]).await.body;
            let value = |prefix: &str| -> f64 {
                metrics
                    .lines()
                    .find(|l| l.starts_with(prefix))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {prefix}:\n{metrics}"))
            };
            assert!(value("starling_store_json_cache_lookups_total{result=\"hit\"") >= 1.0);
            assert!(value("starling_store_json_cache_size_bytes{") >= event.to_json().len() as f64);
            assert!(
                metrics.contains("starling_store_pool_connections{"),
                "{metrics}"
            );
        })
        .await;
}

#[tokio::test]
async fn json_logs_have_one_line_per_closed_connection() {
    use serde_json::json;

    use crate::support::{Client, eventually};

    let relay = Relay::start_in(
        TempDir::new("json-logs"),
        &["--log-format", "json"],
        &[("RUST_LOG", "info")],
    );
    let mut client = Client::connect(&relay.url()).await;
    client.req("one", &[json!({"limit": 1})]).await;
    drop(client);
    let log = relay.storage.dir.path().join("relay.log");
    let line: Value = eventually("the connection's closing line", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("every line is JSON"))
                .collect();
            lines
                .into_iter()
                .find(|l| l["fields"]["message"] == "connection closed")
        }
    })
    .await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["received"], 1);
    // The AUTH challenge and the EOSE.
    assert_eq!(line["fields"]["sent"], 2);
    assert_eq!(line["fields"]["reason"], "client went away");
    assert!(line["fields"]["seconds"].is_number());
}

#[tokio::test]
async fn metrics_can_move_to_a_port_of_their_own() {
    let port = crate::support::postgres::free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let relay = Relay::start(&["--metrics-bind", &metrics_addr]);
    assert_eq!(
        request(&relay.addr, "GET", "/metrics", &[]).await.status,
        404
    );
    let response = crate::support::eventually("the metrics port to answer", || async {
        let connected = tokio::net::TcpStream::connect(&metrics_addr).await.is_ok();
        if connected {
            Some(request(&metrics_addr, "GET", "/metrics", &[]).await)
        } else {
            None
        }
    })
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response.body.contains("starling_connections_open{"),
        "{}",
        response.body
    );
}
