//! NIP-01 and NIP-45 over a real connection: publish, query, subscribe, close, count.

use serde_json::json;

use crate::support::{Client, Relay, keys, note, now, tags};

on_every_store! {
    async fn publishes_and_queries_back_the_canonical_event() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let event = keys(1).sign(
            now(),
            1,
            tags(&[&["t", "hello"]]),
            "hello \"world\"\n🚀\u{2028}",
        );
        assert_eq!(client.publish(&event).await, (true, String::new()));
        let found = client.req("q", &[json!({"ids": [event.id_hex()]})]).await;
        assert_eq!(found.len(), 1);
        let expected: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(found[0], expected);
    }

    async fn duplicates_are_acknowledged_with_the_duplicate_prefix() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let event = note(1, "once");
        client.publish_ok(&event).await;
        let (accepted, message) = client.publish(&event).await;
        assert!(accepted);
        assert!(message.starts_with("duplicate:"), "{message}");
        assert_eq!(
            client
                .req("q", &[json!({"authors": [hex(&event.pubkey)]})])
                .await
                .len(),
            1
        );
    }

    async fn refuses_bad_ids_and_signatures() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let mut tampered = note(1, "original");
        tampered.content = "changed".into();
        let (accepted, message) = client.publish(&tampered).await;
        assert!(!accepted);
        assert!(message.starts_with("invalid:"), "{message}");

        let mut forged = note(1, "forged");
        forged.sig[0] ^= 0x55;
        let (accepted, message) = client.publish(&forged).await;
        assert!(!accepted);
        assert!(message.starts_with("invalid:"), "{message}");
        assert!(client.req("q", &[json!({})]).await.is_empty());
    }

    async fn orders_newest_first_with_ties_by_lowest_id_and_honours_limit() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let base = now() - 1000;
        let mut events = Vec::new();
        for (n, created_at) in [base, base + 5, base + 5, base + 5, base + 9]
            .into_iter()
            .enumerate()
        {
            let event = keys(1).sign(created_at, 1, vec![], &format!("event {n}"));
            client.publish_ok(&event).await;
            events.push(event);
        }
        let mut expected = events.clone();
        expected.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let expected: Vec<String> = expected.iter().map(|e| e.id_hex()).collect();

        let all = client.req("all", &[json!({"kinds": [1]})]).await;
        assert_eq!(Client::ids(&all), expected);
        let limited = client
            .req("some", &[json!({"kinds": [1], "limit": 3})])
            .await;
        assert_eq!(Client::ids(&limited), expected[..3]);
        let none = client
            .req("none", &[json!({"kinds": [1], "limit": 0})])
            .await;
        assert!(none.is_empty());
        let window = client
            .req("window", &[json!({"since": base + 5, "until": base + 5})])
            .await;
        assert_eq!(window.len(), 3);
    }

    async fn clamps_limit_to_the_configured_maximum() {
        let relay = Relay::start(&["--max-limit", "2", "--default-limit", "1"]);
        let mut client = Client::connect(&relay.url()).await;
        for n in 0..4 {
            client.publish_ok(&note(1, &format!("note {n}"))).await;
        }
        assert_eq!(client.req("big", &[json!({"limit": 100})]).await.len(), 2);
        assert_eq!(client.req("default", &[json!({})]).await.len(), 1);
    }

    async fn ors_several_filters_without_duplicates() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let a = keys(1).sign(now() - 2, 1, tags(&[&["t", "x"]]), "a");
        let b = keys(2).sign(now() - 1, 7, vec![], "b");
        let c = keys(3).sign(now(), 1, vec![], "c");
        for e in [&a, &b, &c] {
            client.publish_ok(e).await;
        }
        let found = client
            .req(
                "or",
                &[
                    json!({"#t": ["x"]}),
                    json!({"kinds": [7]}),
                    json!({"authors": [hex(&a.pubkey)]}),
                ],
            )
            .await;
        assert_eq!(Client::ids(&found), vec![b.id_hex(), a.id_hex()]);
    }

    async fn delivers_live_events_after_eose_to_matching_subscriptions_only() {
        let relay = Relay::start(&[]);
        let mut reader = Client::connect(&relay.url()).await;
        let mut writer = Client::connect(&relay.url()).await;
        assert!(
            reader
                .req("notes", &[json!({"kinds": [1], "#t": ["live"]})])
                .await
                .is_empty()
        );
        assert!(
            reader
                .req("reactions", &[json!({"kinds": [7]})])
                .await
                .is_empty()
        );

        let unrelated = keys(2).sign(now(), 1, tags(&[&["t", "other"]]), "not for you");
        let wanted = keys(2).sign(now(), 1, tags(&[&["t", "live"]]), "for you");
        writer.publish_ok(&unrelated).await;
        writer.publish_ok(&wanted).await;
        let reaction = keys(2).sign(now(), 7, vec![], "+");
        writer.publish_ok(&reaction).await;

        let first = reader.recv().await;
        assert_eq!(
            first,
            json!([
                "EVENT",
                "notes",
                serde_json::from_str::<serde_json::Value>(&wanted.to_json()).unwrap()
            ])
        );
        let second = reader.recv().await;
        assert_eq!(second[1], "reactions");
        assert_eq!(second[2]["id"], reaction.id_hex());
    }

    async fn a_req_with_an_existing_id_replaces_the_subscription() {
        let relay = Relay::start(&[]);
        let mut reader = Client::connect(&relay.url()).await;
        let mut writer = Client::connect(&relay.url()).await;
        reader.req("sub", &[json!({"kinds": [1]})]).await;
        reader.req("sub", &[json!({"kinds": [7]})]).await;
        reader.req("witness", &[json!({"kinds": [9]})]).await;

        writer
            .publish_ok(&keys(2).sign(now(), 1, vec![], "old filter"))
            .await;
        let reaction = keys(2).sign(now(), 7, vec![], "+");
        writer.publish_ok(&reaction).await;
        let marker = keys(2).sign(now(), 9, vec![], "marker");
        writer.publish_ok(&marker).await;

        let msg = reader.recv().await;
        assert_eq!(
            (msg[1].as_str(), msg[2]["id"].as_str()),
            (Some("sub"), Some(reaction.id_hex().as_str()))
        );
        let msg = reader.recv().await;
        assert_eq!(
            msg[1], "witness",
            "the replaced filter delivered something: {msg}"
        );
    }

    async fn close_ends_a_subscription() {
        let relay = Relay::start(&[]);
        let mut reader = Client::connect(&relay.url()).await;
        let mut writer = Client::connect(&relay.url()).await;
        reader.req("closing", &[json!({"kinds": [1]})]).await;
        reader.req("witness", &[json!({"kinds": [9]})]).await;
        reader.send(json!(["CLOSE", "closing"])).await;
        // A REQ answered after the CLOSE proves the relay has processed it.
        reader
            .req("sync", &[json!({"ids": ["00".repeat(32)]})])
            .await;

        writer.publish_ok(&note(2, "after close")).await;
        writer
            .publish_ok(&keys(2).sign(now(), 9, vec![], "marker"))
            .await;
        let msg = reader.recv().await;
        assert_eq!(msg[1], "witness", "a closed subscription delivered: {msg}");
    }

    async fn counts_stored_events_across_filters() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now();
        for n in 0..3 {
            client
                .publish_ok(&keys(1).sign(t - n, 1, vec![], "one"))
                .await;
        }
        client
            .publish_ok(&keys(2).sign(now(), 7, vec![], "+"))
            .await;
        assert_eq!(client.count("c1", &[json!({"kinds": [1]})]).await, 3);
        assert_eq!(
            client
                .count(
                    "c2",
                    &[
                        json!({"kinds": [1]}),
                        json!({"authors": [hex(&keys(1).pubkey())]})
                    ]
                )
                .await,
            3
        );
        assert_eq!(client.count("c3", &[json!({"kinds": [1, 7]})]).await, 4);
        assert_eq!(
            client
                .count("c4", &[json!({"kinds": [1], "limit": 1})])
                .await,
            3
        );
        assert_eq!(client.count("c5", &[json!({"authors": []})]).await, 0);
    }

    async fn searches_content_by_relevance_and_live() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let once = keys(1).sign(now() - 2, 1, vec![], "a note about rust");
        let twice = keys(1).sign(now() - 1, 1, vec![], "rust, rust and more Rust");
        let other = keys(1).sign(now(), 1, vec![], "nothing to see");
        for event in [&once, &twice, &other] {
            client.publish_ok(event).await;
        }
        let found = client.req("s", &[json!({"search": "RUST"})]).await;
        assert_eq!(Client::ids(&found), vec![twice.id_hex(), once.id_hex()], "most relevant first");
        let limited = client.req("one", &[json!({"search": "rust note", "limit": 5})]).await;
        assert_eq!(Client::ids(&limited), vec![once.id_hex()]);
        assert_eq!(client.count("c", &[json!({"search": "rust"})]).await, 2);

        client.req("live", &[json!({"search": "starling"})]).await;
        let mut writer = Client::connect(&relay.url()).await;
        writer.publish_ok(&keys(2).sign(now(), 1, vec![], "no match")).await;
        let matching = keys(2).sign(now(), 1, vec![], "Starling search works live");
        writer.publish_ok(&matching).await;
        assert_eq!(client.live_event("live").await["id"], matching.id_hex());
    }

    async fn accepted_events_survive_a_restart() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let event = note(1, "durable");
        client.publish_ok(&event).await;
        let storage = relay.kill();
        let relay = Relay::start_on(storage, &[], &[]);
        let mut client = Client::connect(&relay.url()).await;
        let found = client.req("q", &[json!({"ids": [event.id_hex()]})]).await;
        assert_eq!(Client::ids(&found), vec![event.id_hex()]);
    }

    async fn pipelined_events_are_all_answered() {
        let relay = Relay::start(&["--max-pending-per-connection", "4"]);
        let mut client = Client::connect(&relay.url()).await;
        let events: Vec<_> = (0..200)
            .map(|n| note(1, &format!("pipelined {n}")))
            .collect();
        for event in &events {
            let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
            client.send(json!(["EVENT", json])).await;
        }
        let mut acknowledged = std::collections::HashSet::new();
        while acknowledged.len() < events.len() {
            let msg = client.recv().await;
            assert_eq!(msg[0], "OK", "{msg}");
            assert_eq!(msg[2], true, "{msg}");
            acknowledged.insert(msg[1].as_str().unwrap().to_string());
        }
        assert_eq!(client.count("all", &[json!({})]).await, 200);
    }
}

fn hex(bytes: &[u8]) -> String {
    starling::nostr::hex::encode(bytes)
}
