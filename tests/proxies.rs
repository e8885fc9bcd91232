//! Client addresses behind proxies: per-address limits count the client a trusted proxy
//! names, through a real nginx (X-Forwarded-For, the shipped config) and a real HAProxy
//! (PROXY protocol v1 and v2), and a client that forges the headers gains nothing.

use tokio_tungstenite::tungstenite::Error as WsError;

use crate::support::{Client, Relay, eventually, http, postgres::free_port, proxies::Proxy};

/// Whether connecting was refused with HTTP 429 (too many connections from the address).
fn refused_for_its_address(result: Result<Client, WsError>) -> bool {
    match result {
        Err(WsError::Http(response)) => response.status() == 429,
        Err(other) => panic!("connection failed otherwise: {other}"),
        Ok(_) => false,
    }
}

async fn connect(addr: &str, source: &str, headers: &[(&str, &str)]) -> Result<Client, WsError> {
    Client::connect_from(&format!("ws://{addr}/"), addr, source, headers).await
}

#[tokio::test]
async fn forged_forwarding_headers_from_a_direct_client_gain_nothing() {
    let relay = Relay::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "10.0.0.0/8",
    ]);
    let forged = [
        ("x-forwarded-for", "203.0.113.1"),
        ("x-real-ip", "203.0.113.1"),
    ];
    let _first = connect(&relay.addr, "127.0.0.2", &forged)
        .await
        .expect("the first connection");
    for header in [
        ("x-forwarded-for", "203.0.113.2"),
        ("x-real-ip", "203.0.113.3"),
        ("forwarded", "for=203.0.113.4"),
    ] {
        let again = connect(&relay.addr, "127.0.0.2", &[header]).await;
        assert!(refused_for_its_address(again), "{header:?} was believed");
    }
    let other = connect(&relay.addr, "127.0.0.3", &[]).await;
    assert!(other.is_ok(), "another address is counted apart");
}

#[tokio::test]
async fn clients_behind_nginx_get_their_own_limits() {
    let relay = Relay::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let nginx = Proxy::nginx(&relay.addr);
    let front = &nginx.addrs[0];
    let _a = connect(front, "127.0.0.2", &[]).await.expect("client A");
    let _b = connect(front, "127.0.0.3", &[])
        .await
        .expect("client B, another address");
    assert!(
        refused_for_its_address(connect(front, "127.0.0.2", &[]).await),
        "client A's second connection"
    );
    // A forged entry on the left of the chain is not the right-most untrusted hop.
    let forged = [("x-forwarded-for", "198.51.100.7")];
    assert!(
        refused_for_its_address(connect(front, "127.0.0.2", &forged).await),
        "client A forging X-Forwarded-For through nginx"
    );
}

#[tokio::test]
async fn without_trust_every_client_behind_nginx_is_the_proxy() {
    let relay = Relay::start(&["--max-connections-per-ip", "1"]);
    let nginx = Proxy::nginx(&relay.addr);
    let front = &nginx.addrs[0];
    let _a = connect(front, "127.0.0.2", &[]).await.expect("client A");
    assert!(
        refused_for_its_address(connect(front, "127.0.0.3", &[]).await),
        "client B shares the proxy's address when the proxy is not trusted"
    );
}

#[tokio::test]
async fn clients_behind_haproxy_are_named_by_the_proxy_protocol() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let relay = Relay::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--proxy-protocol",
        "--metrics-bind",
        &metrics,
    ]);
    let haproxy = Proxy::haproxy(&relay.addr);
    for (version, front) in haproxy.addrs.iter().enumerate() {
        let (a, b) = (
            format!("127.0.0.{}", 10 + 2 * version),
            format!("127.0.0.{}", 11 + 2 * version),
        );
        let first = connect(front, &a, &[]).await;
        let mut first = first.unwrap_or_else(|e| panic!("v{}: client A: {e}", version + 1));
        let _b = connect(front, &b, &[])
            .await
            .unwrap_or_else(|e| panic!("v{}: client B: {e}", version + 1));
        assert!(
            refused_for_its_address(connect(front, &a, &[]).await),
            "v{}: client A's second connection",
            version + 1
        );
        let note = crate::support::note(1, "through HAProxy");
        first.publish_ok(&note).await;
    }
    // Untrusted peers speak plain HTTP: a direct client is served as itself.
    let direct = connect(&relay.addr, "127.0.0.20", &[]).await;
    assert!(direct.is_ok(), "a direct client from an untrusted address");
    // A trusted peer that sends no header is closed before HTTP, and counted.
    let response = tokio::net::TcpStream::connect(&relay.addr).await;
    let mut stream = response.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(crate::support::DEADLINE, stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(reply.is_empty(), "served without a PROXY header: {reply:?}");
    // The socket closes as the header is judged; the count follows on the relay's side.
    eventually("the refused connection to be counted", || async {
        let refused = http::metric(
            &metrics,
            "starling_proxy_refused_total",
            &[("reason", "missing")],
        )
        .await;
        (refused == 1.0).then_some(())
    })
    .await;
    // Probes (a kubelet's, a scraper's) that send no PROXY header use the metrics port.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = http::request(&metrics, "GET", path, &[]).await;
        assert_eq!(response.status, 200, "{path} on the metrics port");
    }
}

#[test]
fn bad_proxy_settings_are_refused_by_name() {
    let range = Relay::refused_at_start(&["--trusted-proxies", "10.0.0.0/33"]);
    assert!(range.contains("--trusted-proxies"), "{range}");
    let alone = Relay::refused_at_start(&["--proxy-protocol"]);
    assert!(alone.contains("trusted_proxies"), "{alone}");
    let header = Relay::refused_at_start(&["--proxy-header", "x-client"]);
    assert!(header.contains("--proxy-header"), "{header}");
    let header_alone = Relay::refused_at_start(&["--proxy-header", "x-real-ip"]);
    assert!(
        header_alone.contains("proxy_header needs trusted_proxies"),
        "{header_alone}"
    );
}
