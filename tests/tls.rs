//! TLS to the data services: a real PostgreSQL that accepts TLS connections only, and a
//! real `redis-server` on a TLS port, with certificates made by the test.

use crate::{
    cluster::Cluster,
    support::{Client, Relay, note, postgres::PgServer, redis::RedisServer, tls::Certificates},
};

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

    let wrong_name = Relay::refused_at_start(&[
        "--database-url",
        &format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
    ]);
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    let unknown_ca =
        Relay::refused_at_start(&["--database-url", &format!("{by_name}?sslmode=verify-full")]);
    assert!(unknown_ca.contains("certificate"), "{unknown_ca}");
    let plain = Relay::refused_at_start(&["--database-url", &format!("{by_ip}?sslmode=disable")]);
    assert!(plain.contains("no encryption"), "{plain}");
    let skipping = Relay::refused_at_start(&[
        "--database-url",
        &format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
        "--skip-migrations",
    ]);
    assert!(skipping.contains("not valid for name"), "{skipping}");
    let bad_mode = Relay::refused_at_start(&["--database-url", &format!("{by_ip}?sslmode=always")]);
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
    let plain = Relay::refused_at_start(&["--redis-url", &format!("redis://127.0.0.1:{port}/")]);
    assert!(plain.contains("redis_url"), "{plain}");
    let wrong_name = Relay::refused_at_start(&[
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
    let unknown_ca = Relay::refused_at_start(&[
        "--redis-url",
        redis.url(),
        "--redis-cert-file",
        &cert,
        "--redis-key-file",
        &key,
    ]);
    assert!(unknown_ca.contains("certificate"), "{unknown_ca}");
    let no_client_cert =
        Relay::refused_at_start(&["--redis-url", redis.url(), "--redis-ca-file", &ca]);
    assert!(no_client_cert.contains("redis_url"), "{no_client_cert}");
}
