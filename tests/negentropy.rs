//! NIP-77 negentropy reconciliation against an independent client implementation (the
//! negentropy of nostr-tools, in JavaScript): what each side has and lacks comes out right,
//! on both stores; the limits answer `NEG-ERR` with NIP-01 prefixes; private events stay
//! private.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::{Client, Relay, keys, nostr_tools::JsNegentropy, note, now, tags};

/// Reconciles `filter` with the relay as a client holding `items`: the ids the client has
/// and the relay lacks, and those the relay has and the client lacks; or the relay's
/// `NEG-ERR` reason.
async fn reconcile(
    client: &mut Client,
    sub: &str,
    filter: Value,
    items: &[(u64, String)],
) -> Result<(HashSet<String>, HashSet<String>), Value> {
    let (mut js, first) = JsNegentropy::start(items);
    client.send(json!(["NEG-OPEN", sub, filter, first])).await;
    let (mut have, mut need) = (HashSet::new(), HashSet::new());
    loop {
        let msg = client.recv().await;
        match msg[0].as_str() {
            Some("NEG-ERR") if msg[1] == sub => return Err(msg),
            Some("NEG-MSG") if msg[1] == sub => {
                let step = js.reconcile(msg[2].as_str().expect("a hex message"));
                have.extend(step.have);
                need.extend(step.need);
                match step.next {
                    Some(next) => client.send(json!(["NEG-MSG", sub, next])).await,
                    None => {
                        client.send(json!(["NEG-CLOSE", sub])).await;
                        return Ok((have, need));
                    }
                }
            }
            _ => {}
        }
    }
}

fn item(event: &starling::nostr::Event) -> (u64, String) {
    (event.created_at, event.id_hex())
}

on_every_store! {
    async fn a_reconciliation_finds_what_each_side_lacks() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let mut stored = Vec::new();
        for n in 0..300 {
            let event = keys(1 + (n % 3) as u8).sign(now() - 1000 + n, 1, vec![], &format!("note {n}"));
            client.publish_ok(&event).await;
            stored.push(event);
        }
        // The client has every third event the relay has, and 40 the relay lacks.
        let mut items: Vec<(u64, String)> = stored.iter().step_by(3).map(item).collect();
        let extra: Vec<_> = (0..40).map(|n| keys(9).sign(now() - 500 + n, 1, vec![], "only here")).collect();
        items.extend(extra.iter().map(item));

        let (have, need) = reconcile(&mut client, "sync", json!({"kinds": [1]}), &items).await.unwrap();
        let expected_need: HashSet<String> = stored
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 3 != 0)
            .map(|(_, e)| e.id_hex())
            .collect();
        assert_eq!(need, expected_need, "the relay's events the client lacks");
        let expected_have: HashSet<String> = extra.iter().map(|e| e.id_hex()).collect();
        assert_eq!(have, expected_have, "the client's events the relay lacks");

        // The filter bounds what is reconciled: one author only.
        let author = starling::nostr::hex::encode(&keys(1).pubkey());
        let (_, need) = reconcile(&mut client, "one", json!({"authors": [author]}), &[]).await.unwrap();
        assert_eq!(need.len(), 100);
        // And in sync, nothing on either side.
        let all: Vec<_> = stored.iter().map(item).collect();
        let (have, need) = reconcile(&mut client, "same", json!({"kinds": [1]}), &all).await.unwrap();
        assert!(have.is_empty() && need.is_empty());
    }
}

#[tokio::test]
async fn limits_and_mistakes_get_neg_err_with_a_prefix() {
    let relay = Relay::start(&[
        "--max-negentropy-records",
        "5",
        "--max-negentropy-sessions",
        "1",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    for n in 0..6 {
        client.publish_ok(&note(1, &format!("note {n}"))).await;
    }
    let refused = reconcile(&mut client, "big", json!({"kinds": [1]}), &[])
        .await
        .unwrap_err();
    assert!(
        refused[2].as_str().unwrap().starts_with("blocked: "),
        "{refused}"
    );
    assert_eq!(refused[3], 5, "the limit is told: {refused}");
    let (_, need) = reconcile(&mut client, "small", json!({"kinds": [1], "limit": 5}), &[])
        .await
        .unwrap();
    assert_eq!(need.len(), 5, "a limit keeps the newest, as in a REQ");

    // One session at a time: the second is refused while the first is open.
    let (_, first) = JsNegentropy::start(&[]);
    client
        .send(json!(["NEG-OPEN", "a", {"kinds": [1], "limit": 1}, first]))
        .await;
    let opened = client.recv().await;
    assert_eq!(opened[0], "NEG-MSG", "{opened}");
    client
        .send(json!(["NEG-OPEN", "b", {"kinds": [1], "limit": 1}, first]))
        .await;
    let second = client.recv().await;
    assert_eq!(
        (second[0].as_str(), second[1].as_str()),
        (Some("NEG-ERR"), Some("b"))
    );
    assert!(
        second[2].as_str().unwrap().starts_with("blocked: "),
        "{second}"
    );
    client.send(json!(["NEG-CLOSE", "a"])).await;
    client.send(json!(["NEG-MSG", "a", first])).await;
    let closed = client.recv().await;
    assert!(
        closed[2].as_str().unwrap().starts_with("closed: "),
        "{closed}"
    );
    client
        .send(json!(["NEG-OPEN", "c", {"kinds": [1]}, "not hex"]))
        .await;
    let invalid = client.recv().await;
    assert_eq!(
        (invalid[0].as_str(), invalid[1].as_str()),
        (Some("NEG-ERR"), Some("c"))
    );
    assert!(
        invalid[2].as_str().unwrap().starts_with("invalid: "),
        "{invalid}"
    );
    client
        .send(json!(["NEG-OPEN", "d", {"kinds": [1]}, "62"]))
        .await;
    let version = client.recv().await;
    assert!(
        version[0] == "NEG-MSG" && version[2] == "61" || version[0] == "NEG-ERR",
        "another protocol version gets the one supported, or an error: {version}"
    );
    let doc = crate::support::http::nip11_document(&relay.addr).await;
    assert!(
        doc["supported_nips"]
            .as_array()
            .unwrap()
            .contains(&json!(77))
    );
    assert_eq!(doc["starling"]["limits"]["max_negentropy_records"], 5);
}

#[tokio::test]
async fn a_gift_wrap_id_is_reconciled_only_with_its_recipient() {
    let relay = Relay::start(&[]);
    let mut client = Client::connect(&relay.url()).await;
    let recipient = keys(2);
    let wrap = keys(7).sign(
        now(),
        1059,
        tags(&[&["p", &starling::nostr::hex::encode(&recipient.pubkey())]]),
        "sealed",
    );
    client.publish_ok(&wrap).await;
    let public = note(3, "public");
    client.publish_ok(&public).await;

    let (_, need) = reconcile(&mut client, "all", json!({}), &[]).await.unwrap();
    assert_eq!(
        need,
        HashSet::from([public.id_hex()]),
        "the wrap is left out"
    );
    let refused = reconcile(&mut client, "wraps", json!({"kinds": [1059]}), &[])
        .await
        .unwrap_err();
    assert!(
        refused[2].as_str().unwrap().starts_with("auth-required: "),
        "{refused}"
    );
}

on_every_store! {
    async fn count_answers_carry_the_hll_nostr_tools_computes() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let target = note(1, "popular");
        client.publish_ok(&target).await;
        let mut reactors = Vec::new();
        for n in 0..60u8 {
            let reactor = keys(100 + n);
            let reaction = reactor.sign(now(), 7, tags(&[&["e", &target.id_hex()]]), "+");
            client.publish_ok(&reaction).await;
            reactors.push(starling::nostr::hex::encode(&reactor.pubkey()));
        }
        // A second reaction by the same author counts twice but is one pubkey in the HLL.
        let again = keys(100).sign(now() + 1, 7, tags(&[&["e", &target.id_hex()]]), "🤙");
        client.publish_ok(&again).await;
        client.publish_ok(&keys(5).sign(now(), 1, tags(&[&["e", &target.id_hex()]]), "a reply")).await;

        let filter = json!({"#e": [target.id_hex()], "kinds": [7]});
        client.send(json!(["COUNT", "reactions", filter])).await;
        let answer = client.recv().await;
        assert_eq!(answer[2]["count"], 61, "{answer}");
        let expected = crate::support::nostr_tools::hll(&filter, &reactors);
        assert_eq!(answer[2]["hll"], expected.as_str(), "the registers nostr-tools computes");

        let followers = json!({"#p": [starling::nostr::hex::encode(&keys(1).pubkey())], "kinds": [3]});
        client.send(json!(["COUNT", "followers", followers])).await;
        let answer = client.recv().await;
        assert_eq!(answer[2]["count"], 0);
        assert_eq!(answer[2]["hll"], "00".repeat(256), "no followers: every register 0");

        client.send(json!(["COUNT", "plain", {"kinds": [7]}])).await;
        let answer = client.recv().await;
        assert_eq!(answer[2]["count"], 61);
        assert!(answer[2].get("hll").is_none(), "no tag, no offset, no hll: {answer}");
    }
}

#[tokio::test]
async fn every_negentropy_message_counts_as_a_request() {
    let relay = Relay::start(&["--max-reqs-per-minute-per-connection", "2"]);
    let mut client = Client::connect(&relay.url()).await;
    let (_, first) = JsNegentropy::start(&[]);
    client
        .send(json!(["NEG-OPEN", "n", {"kinds": [1]}, first]))
        .await;
    assert_eq!(client.recv().await[0], "NEG-MSG");
    client.send(json!(["NEG-MSG", "n", first])).await;
    assert_eq!(client.recv().await[0], "NEG-MSG", "the second request");
    client.send(json!(["NEG-MSG", "n", first])).await;
    let refused = client.recv().await;
    assert_eq!(refused[0], "NEG-ERR", "{refused}");
    assert!(
        refused[2].as_str().unwrap().starts_with("rate-limited: "),
        "{refused}"
    );
}
