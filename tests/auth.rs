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

/// Connects to `relay_url` and authenticates as each of `who`.
async fn connect_as(relay_url: &str, who: &[u8]) -> Client {
    let mut client = Client::connect(relay_url).await;
    let challenge = client.challenge().await;
    for n in who {
        let event = auth_event(&keys(*n), &challenge, relay_url, now());
        assert_eq!(
            authenticate(&mut client, &event).await,
            (true, String::new())
        );
    }
    client
}

fn p_tag(n: u8) -> Vec<String> {
    vec![
        "p".to_string(),
        starling::nostr::hex::encode(&keys(n).pubkey()),
    ]
}

/// A gift wrap (kind 1059) for `recipient`, from a throwaway key as NIP-59 has it.
fn gift_wrap(recipient: u8, content: &str) -> Event {
    keys(90).sign(now(), 1059, vec![p_tag(recipient)], content)
}

fn ids(events: &[Value]) -> Vec<String> {
    let mut ids = Client::ids(events);
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

on_every_store! {
    async fn stored_private_events_are_served_to_their_author_and_recipients_only() {
        let relay = Relay::start(&[]);
        let url = relay.url();
        let (alice, bob, carol) = (1, 2, 3);
        let wrap = gift_wrap(alice, "for alice");
        let dm = keys(bob).sign(now(), 4, vec![p_tag(alice)], "bob to alice");
        let public = keys(bob).sign(now(), 1, vec![p_tag(alice)], "hello alice, in public");
        let mut publisher = Client::connect(&url).await;
        for event in [&wrap, &dm, &public] {
            publisher.publish_ok(event).await;
        }
        let private = json!({"kinds": [4, 1059]});
        let about_alice = json!({"#p": [starling::nostr::hex::encode(&keys(alice).pubkey())]});

        let mut anonymous = Client::connect(&url).await;
        anonymous.send_req("dms", std::slice::from_ref(&private)).await;
        anonymous.expect_closed("dms", "auth-required: ").await;
        let seen = anonymous.req("about", std::slice::from_ref(&about_alice)).await;
        assert_eq!(ids(&seen), vec![public.id_hex()], "private events left out");

        let mut as_carol = connect_as(&url, &[carol]).await;
        assert!(as_carol.req("dms", std::slice::from_ref(&private)).await.is_empty());
        let seen = as_carol.req("about", std::slice::from_ref(&about_alice)).await;
        assert_eq!(ids(&seen), vec![public.id_hex()]);

        let mut as_alice = connect_as(&url, &[alice]).await;
        let seen = as_alice.req("dms", std::slice::from_ref(&private)).await;
        assert_eq!(ids(&seen), sorted(vec![wrap.id_hex(), dm.id_hex()]));

        let mut as_bob = connect_as(&url, &[bob]).await;
        let seen = as_bob.req("dms", std::slice::from_ref(&private)).await;
        assert_eq!(ids(&seen), vec![dm.id_hex()], "bob wrote the DM, not the wrap");

        // Counts leave private kinds out, for everyone, and refuse to count them by name.
        assert_eq!(anonymous.count("n", std::slice::from_ref(&about_alice)).await, 1);
        assert_eq!(as_alice.count("n", std::slice::from_ref(&about_alice)).await, 1);
        let mut msg = vec![json!("COUNT"), json!("dms")];
        msg.push(private.clone());
        as_alice.send(Value::Array(msg)).await;
        as_alice.expect_closed("dms", "restricted: ").await;
    }
}

#[tokio::test]
async fn live_gift_wraps_reach_only_their_recipient_on_every_node() {
    let cluster = crate::cluster::Cluster::start(2, crate::support::redis::shared().url()).await;
    let (alice, carol) = (1, 3);
    let on_b = cluster.nodes[1].url();
    let about_alice = json!({"#p": [starling::nostr::hex::encode(&keys(alice).pubkey())]});
    let mut alice_on_b = connect_as(&on_b, &[alice]).await;
    alice_on_b.req("wraps", &[json!({"kinds": [1059]})]).await;
    let mut carol_on_b = connect_as(&on_b, &[carol]).await;
    carol_on_b
        .req("about", std::slice::from_ref(&about_alice))
        .await;
    let mut anonymous_on_b = Client::connect(&on_b).await;
    anonymous_on_b.req("about", &[about_alice]).await;

    let mut publisher = cluster.client(0).await;
    let wrap = gift_wrap(alice, "for alice, live");
    publisher.publish_ok(&wrap).await;
    let witness = keys(2).sign(now(), 1, vec![p_tag(alice)], "after the wrap");
    publisher.publish_ok(&witness).await;

    assert_eq!(alice_on_b.live_event("wraps").await["id"], wrap.id_hex());
    for other in [&mut carol_on_b, &mut anonymous_on_b] {
        assert_eq!(
            other.live_event("about").await["id"],
            witness.id_hex(),
            "the gift wrap went to someone it was not for"
        );
    }
}

#[tokio::test]
async fn a_private_community_relay_serves_its_members_only() {
    let member = starling::nostr::hex::encode(&keys(1).pubkey());
    let relay = Relay::start(&["--members-only", "both", "--allowed-pubkeys", &member]);
    let url = relay.url();
    let mut anonymous = Client::connect(&url).await;
    anonymous.send_req("feed", &[json!({"kinds": [1]})]).await;
    anonymous.expect_closed("feed", "auth-required: ").await;
    let (ok, message) = anonymous.publish(&crate::support::note(1, "not yet")).await;
    assert!(!ok && message.starts_with("auth-required: "), "{message}");

    let mut outsider = connect_as(&url, &[2]).await;
    outsider.send_req("feed", &[json!({"kinds": [1]})]).await;
    outsider.expect_closed("feed", "restricted: ").await;

    let mut insider = connect_as(&url, &[1]).await;
    let post = crate::support::note(1, "for members");
    insider.publish_ok(&post).await;
    let feed = insider.req("feed", &[json!({"kinds": [1]})]).await;
    assert_eq!(Client::ids(&feed), vec![post.id_hex()]);

    let counted = crate::support::http::metric(
        &relay.addr,
        "starling_requests_refused_total",
        &[("reason", "auth-required")],
    )
    .await;
    assert_eq!(counted, 1.0, "the anonymous REQ is counted");
    let doc = crate::support::http::nip11_document(&relay.addr).await;
    assert_eq!(doc["limitation"]["auth_required"], true);
    assert_eq!(doc["limitation"]["restricted_writes"], true);
}

#[tokio::test]
async fn a_paid_relay_takes_events_from_its_allowed_pubkeys_only() {
    let paid = starling::nostr::hex::encode(&keys(1).pubkey());
    let banned = starling::nostr::hex::encode(&keys(3).pubkey());
    let relay = Relay::start(&[
        "--allowed-pubkeys",
        &paid,
        "--banned-pubkeys",
        &banned,
        "--payment-required",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    client
        .publish_ok(&crate::support::note(1, "a paying user"))
        .await;
    let (ok, message) = client.publish(&crate::support::note(2, "not paid")).await;
    assert!(!ok && message.starts_with("restricted: "), "{message}");
    let (ok, message) = client.publish(&crate::support::note(3, "banned")).await;
    assert!(!ok && message.starts_with("blocked: "), "{message}");
    assert!(
        client.req("all", &[json!({"kinds": [1]})]).await.len() == 1,
        "anyone may read"
    );
    let doc = crate::support::http::nip11_document(&relay.addr).await;
    assert_eq!(doc["limitation"]["payment_required"], true);
    assert_eq!(doc["limitation"]["restricted_writes"], true);
    assert_eq!(doc["limitation"]["auth_required"], false);
    let refused = Relay::refused_at_start(&["--banned-pubkeys", "not-hex"]);
    assert!(refused.contains("banned_pubkeys"), "{refused}");
}

#[tokio::test]
async fn a_connection_authenticates_as_at_most_the_configured_pubkeys() {
    let relay = Relay::start(&["--max-auth-pubkeys-per-connection", "1"]);
    let mut client = Client::connect(&relay.url()).await;
    let challenge = client.challenge().await;
    let first = auth_event(&keys(1), &challenge, &relay.url(), now());
    assert_eq!(
        authenticate(&mut client, &first).await,
        (true, String::new())
    );
    let second = auth_event(&keys(2), &challenge, &relay.url(), now());
    let (ok, message) = authenticate(&mut client, &second).await;
    assert!(!ok && message.starts_with("restricted: "), "{message}");
    let doc = crate::support::http::nip11_document(&relay.addr).await;
    assert_eq!(
        doc["starling"]["limits"]["max_auth_pubkeys_per_connection"],
        1
    );
    assert_eq!(doc["starling"]["limits"]["private_kinds"], json!([4, 1059]));
}
