//! TLS to the data services: a real PostgreSQL that accepts TLS connections only, and a
//! real `redis-server` on a TLS port, with certificates made by the test.

use std::process::{Command, Stdio};

use crate::{
    cluster::Cluster,
    support::{
        Client, DEADLINE, Relay, note, postgres::PgServer, redis::RedisServer, tls::Certificates,
    },
};

/// Runs `starling` with `args` and expects it to refuse to start; returns what it said.
fn refused_at_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(args)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start starling");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for starling") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("starling {args:?} started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("starling's output");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!status.success(), "starling {args:?} exited well: {stderr}");
    stderr
}

/// Publishes a note through `relay` and reads it back.
async fn round_trip(relay: &Relay) {
    let mut client = Client::connect(&relay.url()).await;
    let event = note(1, "over TLS");
    client.publish_ok(&event).await;
    let stored = client
        .req("tls", &[serde_json::json!({"ids": [event.id_hex()]})])
        .await;
    assert_eq!(stored.len(), 1, "the note was not read back");
}

#[tokio::test]
async fn postgres_over_tls_checks_what_sslmode_says() {
    let certificates = Certificates::new();
    let server: &'static PgServer =
        Box::leak(Box::new(PgServer::throwaway_tls(certificates.dir())));
    let ca = certificates.file("ca.crt");
    let database = server.create_empty_database();
    let by_ip = database.url.clone();
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    let client_cert = format!(
        "&sslcert={}&sslkey={}",
        certificates.file("client.crt"),
        certificates.file("client.key")
    );
    for url in [
        format!("{by_ip}?sslmode=require"),
        format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        format!("{by_name}?sslmode=verify-full&sslrootcert={ca}{client_cert}"),
    ] {
        let relay = Relay::start(&["--database-url", &url]);
        round_trip(&relay).await;
    }

    let wrong_name = refused_at_start(&[
        "--database-url",
        &format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
    ]);
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    let unknown_ca =
        refused_at_start(&["--database-url", &format!("{by_name}?sslmode=verify-full")]);
    assert!(unknown_ca.contains("certificate"), "{unknown_ca}");
    let plain = refused_at_start(&["--database-url", &format!("{by_ip}?sslmode=disable")]);
    assert!(plain.contains("no encryption"), "{plain}");
    let skipping = refused_at_start(&[
        "--database-url",
        &format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
        "--skip-migrations",
    ]);
    assert!(skipping.contains("not valid for name"), "{skipping}");
    let bad_mode = refused_at_start(&["--database-url", &format!("{by_ip}?sslmode=always")]);
    assert!(bad_mode.contains("sslmode=always"), "{bad_mode}");
}

#[tokio::test]
async fn the_cluster_bus_runs_over_tls_to_redis() {
    let certificates = Certificates::new();
    let redis = RedisServer::throwaway_tls(certificates.dir());
    let (ca, cert, key) = (
        certificates.file("ca.crt"),
        certificates.file("client.crt"),
        certificates.file("client.key"),
    );
    let cluster = Cluster::start_with(
        2,
        redis.url(),
        &[
            "--redis-ca-file",
            &ca,
            "--redis-cert-file",
            &cert,
            "--redis-key-file",
            &key,
        ],
    )
    .await;
    let mut subscriber = cluster.client(1).await;
    subscriber
        .req("live", &[serde_json::json!({"kinds": [1]})])
        .await;
    let mut publisher = cluster.client(0).await;
    let event = note(1, "over TLS to Redis");
    publisher.publish_ok(&event).await;
    assert_eq!(subscriber.live_event("live").await["id"], event.id_hex());

    let port = redis.port();
    let plain = refused_at_start(&["--redis-url", &format!("redis://127.0.0.1:{port}/")]);
    assert!(plain.contains("redis_url"), "{plain}");
    let wrong_name = refused_at_start(&[
        "--redis-url",
        &format!("rediss://127.0.0.1:{port}/"),
        "--redis-ca-file",
        &ca,
        "--redis-cert-file",
        &cert,
        "--redis-key-file",
        &key,
    ]);
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    let unknown_ca = refused_at_start(&[
        "--redis-url",
        redis.url(),
        "--redis-cert-file",
        &cert,
        "--redis-key-file",
        &key,
    ]);
    assert!(unknown_ca.contains("certificate"), "{unknown_ca}");
    let no_client_cert = refused_at_start(&["--redis-url", redis.url(), "--redis-ca-file", &ca]);
    assert!(no_client_cert.contains("redis_url"), "{no_client_cert}");
}
