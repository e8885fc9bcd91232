//! NIP-42 authentication and NIP-70 protected events, with real clients: a connection gets
//! a challenge, may authenticate as several pubkeys, and only an event's authenticated
//! author may publish it when it is protected.

use serde_json::{Value, json};
use starling::nostr::{Event, Keys};

use crate::support::{Client, Relay, keys, now};

fn auth_event(keys: &Keys, challenge: &str, relay_url: &str, created_at: u64) -> Event {
    let tags = vec![
        vec!["relay".to_string(), relay_url.to_string()],
        vec!["challenge".to_string(), challenge.to_string()],
    ];
    keys.sign(created_at, 22242, tags, "")
}

/// Sends `["AUTH", event]` and returns the relay's `OK` verdict.
async fn authenticate(client: &mut Client, event: &Event) -> (bool, String) {
    let json: Value = serde_json::from_str(&event.to_json()).expect("event JSON");
    client.send(json!(["AUTH", json])).await;
    client.ok_for(&event.id_hex()).await
}

fn protected_note(n: u8, content: &str) -> Event {
    keys(n).sign(now(), 1, vec![vec!["-".to_string()]], content)
}

#[tokio::test]
async fn a_client_authenticates_as_several_pubkeys_and_publishes_their_protected_events() {
    let relay = Relay::start(&[]);
    let mut client = Client::connect(&relay.url()).await;
    let challenge = client.challenge().await;
    assert_eq!(challenge.len(), 32, "a fresh random challenge: {challenge}");
    for n in [1, 2] {
        let event = auth_event(&keys(n), &challenge, &relay.url(), now());
        assert_eq!(
            authenticate(&mut client, &event).await,
            (true, String::new())
        );
    }
    client
        .publish_ok(&protected_note(2, "by an authenticated author"))
        .await;
    let (ok, message) = client.publish(&protected_note(3, "by someone else")).await;
    assert!(!ok && message.starts_with("restricted: "), "{message}");

    let mut other = Client::connect(&relay.url()).await;
    assert_ne!(
        other.challenge().await,
        challenge,
        "each connection has its own"
    );
    let (ok, message) = other
        .publish(&protected_note(1, "not authenticated here"))
        .await;
    assert!(!ok && message.starts_with("auth-required: "), "{message}");
    let open = crate::support::note(1, "unprotected");
    other.publish_ok(&open).await;
}

#[tokio::test]
async fn auth_events_that_do_not_prove_this_connection_are_refused() {
    let relay = Relay::start(&[]);
    let mut client = Client::connect(&relay.url()).await;
    let challenge = client.challenge().await;
    let mut elsewhere = Client::connect(&relay.url()).await;
    let their_challenge = elsewhere.challenge().await;
    let mut forged = auth_event(&keys(1), &challenge, &relay.url(), now());
    forged.content = "changed after signing".into();
    for event in [
        auth_event(&keys(1), &challenge, "wss://elsewhere.example.com/", now()),
        auth_event(&keys(1), &challenge, &relay.url(), now() - 601),
        auth_event(&keys(1), &their_challenge, &relay.url(), now()),
        forged,
    ] {
        let (ok, message) = authenticate(&mut client, &event).await;
        assert!(!ok && message.starts_with("invalid: "), "{message}");
    }
    let (ok, message) = client
        .publish(&protected_note(1, "still not authenticated"))
        .await;
    assert!(!ok && message.starts_with("auth-required: "), "{message}");
    // Authentication events are never published.
    let (ok, message) = client
        .publish(&auth_event(&keys(1), &challenge, &relay.url(), now()))
        .await;
    assert!(!ok && message.starts_with("invalid: "), "{message}");
}

#[tokio::test]
async fn auth_events_name_one_of_the_public_urls() {
    let relay = Relay::start(&[
        "--public-url",
        "wss://relay.example.com,wss://nostr.example.org/",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    let challenge = client.challenge().await;
    let reached = auth_event(&keys(1), &challenge, &relay.url(), now());
    let (ok, message) = authenticate(&mut client, &reached).await;
    assert!(!ok && message.starts_with("invalid: "), "{message}");
    for url in ["wss://relay.example.com/", "WSS://nostr.example.org:443"] {
        let public = auth_event(&keys(1), &challenge, url, now());
        assert_eq!(
            authenticate(&mut client, &public).await,
            (true, String::new())
        );
    }
    let refused = Relay::refused_at_start(&["--public-url", "https://relay.example.com"]);
    assert!(refused.contains("public_url"), "{refused}");
}
