//! NIP-01 kind ranges end to end: replaceable, addressable and ephemeral events.

use serde_json::json;
use starling::nostr::{Event, hex};

use crate::support::{Client, Relay, keys, now, tags};

fn by(author: u8, kind: u16, created_at: u64, d: Option<&str>, content: &str) -> Event {
    let tags = d.map(|d| tags(&[&["d", d]])).unwrap_or_default();
    keys(author).sign(created_at, kind, tags, content)
}

on_every_store! {
    async fn replaceable_keeps_only_the_newest_and_refuses_older() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now() - 100;
        for kind in [0, 3, 10_002] {
            let v1 = by(1, kind, t, None, "v1");
            let v2 = by(1, kind, t + 10, None, "v2");
            client.publish_ok(&v1).await;
            client.publish_ok(&v2).await;
            let (accepted, message) = client.publish(&by(1, kind, t + 5, None, "stale")).await;
            assert!(!accepted, "kind {kind}: an older version was accepted");
            assert!(message.starts_with("duplicate:"), "{message}");
            let filter = json!({"kinds": [kind], "authors": [hex::encode(&keys(1).pubkey())]});
            let found = client.req(&format!("k{kind}"), &[filter]).await;
            assert_eq!(Client::ids(&found), vec![v2.id_hex()], "kind {kind}");
        }
    }

    async fn replaceable_tie_keeps_the_lowest_id_whatever_the_arrival_order() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now() - 50;
        let a = by(1, 0, t, None, "a");
        let b = by(1, 0, t, None, "b");
        let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };

        client.publish_ok(&high).await;
        client.publish_ok(&low).await;
        let (accepted, _) = client.publish(&high).await;
        assert!(!accepted, "the higher id replaced the lower one");
        let found = client.req("q", &[json!({"kinds": [0]})]).await;
        assert_eq!(Client::ids(&found), vec![low.id_hex()]);

        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        client.publish_ok(&low).await;
        let (accepted, _) = client.publish(&high).await;
        assert!(!accepted);
        let found = client.req("q", &[json!({"kinds": [0]})]).await;
        assert_eq!(Client::ids(&found), vec![low.id_hex()]);
    }

    async fn replaceable_versions_are_per_author_and_kind() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now() - 10;
        for event in [
            by(1, 0, t, None, "a0"),
            by(2, 0, t, None, "b0"),
            by(1, 3, t, None, "a3"),
        ] {
            client.publish_ok(&event).await;
        }
        assert_eq!(client.count("c", &[json!({"kinds": [0, 3]})]).await, 3);
    }

    async fn addressable_is_replaced_per_d_tag() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now() - 100;
        let first_a = by(1, 30_023, t, Some("a"), "article a v1");
        let first_b = by(1, 30_023, t, Some("b"), "article b v1");
        let second_a = by(1, 30_023, t + 1, Some("a"), "article a v2");
        let no_d = by(1, 30_023, t, None, "no d tag");
        let empty_d = by(1, 30_023, t + 1, Some(""), "empty d tag");
        for e in [&first_a, &first_b, &second_a, &no_d, &empty_d] {
            client.publish_ok(e).await;
        }
        let (accepted, message) = client
            .publish(&by(1, 30_023, t - 1, Some("a"), "older a"))
            .await;
        assert!(!accepted && message.starts_with("duplicate:"), "{message}");
        let found = client.req("q", &[json!({"kinds": [30_023]})]).await;
        let mut ids = Client::ids(&found);
        ids.sort();
        let mut expected = vec![second_a.id_hex(), first_b.id_hex(), empty_d.id_hex()];
        expected.sort();
        assert_eq!(
            ids, expected,
            "a missing d tag and an empty one are the same address"
        );
        let by_d = client
            .req("d", &[json!({"kinds": [30_023], "#d": ["a"]})])
            .await;
        assert_eq!(Client::ids(&by_d), vec![second_a.id_hex()]);
    }

    async fn ephemeral_events_are_delivered_live_and_never_stored() {
        let relay = Relay::start(&[]);
        let mut listener = Client::connect(&relay.url()).await;
        let mut sender = Client::connect(&relay.url()).await;
        listener.req("live", &[json!({"kinds": [20_001]})]).await;
        let ephemeral = keys(2).sign(now(), 20_001, vec![], "typing…");
        sender.publish_ok(&ephemeral).await;
        assert_eq!(listener.live_event("live").await["id"], ephemeral.id_hex());
        assert!(
            sender
                .req("stored", &[json!({"kinds": [20_001]})])
                .await
                .is_empty()
        );
        assert_eq!(sender.count("c", &[json!({"kinds": [20_001]})]).await, 0);
    }
}
