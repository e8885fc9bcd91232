//! TLS to the data services: a real PostgreSQL that accepts TLS connections only, and a
//! real `redis-server` on a TLS port, with certificates made by the test.

use crate::{
    cluster::Cluster,
    support::{
        Client, Relay, note,
        postgres::{CLIENT_CERT_USER, PgServer},
        redis::RedisServer,
        tls::Certificates,
    },
};

/// What `starling` says when it refuses to start with `--database-url url`, with and
/// without `--skip-migrations` (the start-up check is the same either way).
fn refused_with_and_without_migrations(url: &str) -> [String; 2] {
    [
        Relay::refused_at_start(&["--database-url", url]),
        Relay::refused_at_start(&["--database-url", url, "--skip-migrations"]),
    ]
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
    let certificate_only = by_name.replace("://starling@", &format!("://{CLIENT_CERT_USER}@"));
    for url in [
        format!("{by_ip}?sslmode=require"),
        format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        format!("{by_name}?sslmode=verify-full&sslrootcert={ca}{client_cert}"),
        format!("{certificate_only}?sslmode=verify-full&sslrootcert={ca}{client_cert}"),
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
    for plain in refused_with_and_without_migrations(&format!("{by_ip}?sslmode=disable")) {
        assert!(plain.contains("no encryption"), "{plain}");
        assert!(plain.contains("sslmode=disable"), "{plain}");
    }
    // The server asks for a client certificate, and checks the one it gets.
    let no_certificate = format!("{certificate_only}?sslmode=verify-full&sslrootcert={ca}");
    for refused in refused_with_and_without_migrations(&no_certificate) {
        assert!(refused.contains("DATABASE_URL"), "{refused}");
        assert!(
            refused.contains("requires a valid client certificate"),
            "{refused}"
        );
    }
    let skipping = Relay::refused_at_start(&[
        "--database-url",
        &format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"),
        "--skip-migrations",
    ]);
    assert!(skipping.contains("not valid for name"), "{skipping}");
    let bad_mode = Relay::refused_at_start(&["--database-url", &format!("{by_ip}?sslmode=always")]);
    assert!(bad_mode.contains("sslmode=always"), "{bad_mode}");
}

/// libpq's rule: `sslmode` does not apply to a Unix socket, which is plain. The server here
/// takes TLS only over TCP and plain connections on its socket; a `DATABASE_URL` naming the
/// socket works with the default `sslmode` and with `require`.
#[tokio::test]
async fn postgres_over_a_unix_socket_is_plain_whatever_sslmode_says() {
    let certificates = Certificates::new();
    let server: &'static PgServer =
        Box::leak(Box::new(PgServer::throwaway_tls(certificates.dir())));
    let database = server.create_empty_database();
    let socket = server
        .socket_dir()
        .expect("a throwaway server has a socket")
        .display()
        .to_string()
        .replace('/', "%2F");
    let over_tcp = database.url.split('@').nth(1).expect("a URL with a user");
    let (host_port, name) = over_tcp.split_once('/').expect("a URL with a database");
    let port = host_port.rsplit(':').next().expect("a URL with a port");
    let user = database.url["postgres://".len()..]
        .split('@')
        .next()
        .expect("a URL with a user");
    let by_socket = format!("postgres://{user}@{socket}:{port}/{name}");
    for url in [by_socket.clone(), format!("{by_socket}?sslmode=require")] {
        let relay = Relay::start(&["--database-url", &url]);
        round_trip(&relay).await;
    }
}

/// A plain server: asking it for TLS, for a user it does not have or a database it does
/// not have stops the start, naming the setting, with or without `--skip-migrations`.
#[test]
fn postgres_settings_the_server_refuses_stop_the_start() {
    let server = PgServer::throwaway();
    server
        .admin("CREATE DATABASE starling")
        .expect("create database");
    let url = server.url("starling");
    for refused in refused_with_and_without_migrations(&format!("{url}?sslmode=require")) {
        assert!(refused.contains("sslmode=require"), "{refused}");
        assert!(refused.contains("does not support TLS"), "{refused}");
    }
    let stranger = url.replace("://starling@", "://stranger@");
    for refused in refused_with_and_without_migrations(&stranger) {
        assert!(refused.contains("DATABASE_URL"), "{refused}");
        assert!(refused.contains("refused the login"), "{refused}");
    }
    for refused in refused_with_and_without_migrations(&server.url("nowhere")) {
        assert!(refused.contains("DATABASE_URL"), "{refused}");
        assert!(refused.contains("does not exist"), "{refused}");
    }
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

/// The files for TLS to Redis do nothing without a Redis: refused, naming the setting.
#[test]
fn redis_tls_files_without_redis_are_refused() {
    let certificates = Certificates::new();
    let (ca, cert, key) = (
        certificates.file("ca.crt"),
        certificates.file("client.crt"),
        certificates.file("client.key"),
    );
    let ca_alone = Relay::refused_at_start(&["--redis-ca-file", &ca]);
    assert!(
        ca_alone.contains("redis_ca_file needs redis_url"),
        "{ca_alone}"
    );
    let identity_alone =
        Relay::refused_at_start(&["--redis-cert-file", &cert, "--redis-key-file", &key]);
    assert!(
        identity_alone.contains("redis_cert_file needs redis_url"),
        "{identity_alone}"
    );
}
