//! NIP-09 deletion requests and NIP-62 requests to vanish, end to end.

use serde_json::json;

use crate::support::{Client, Relay, keys, note, now, tags};

on_every_store! {
    async fn an_author_deletes_by_e_tag_and_the_request_is_kept() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let doomed = note(1, "delete me");
        let kept = note(1, "keep me");
        client.publish_ok(&doomed).await;
        client.publish_ok(&kept).await;
        let request = keys(1).sign(
            now(),
            5,
            tags(&[&["e", &doomed.id_hex()], &["k", "1"]]),
            "oops",
        );
        client.publish_ok(&request).await;

        let notes = client.req("notes", &[json!({"kinds": [1]})]).await;
        assert_eq!(Client::ids(&notes), vec![kept.id_hex()]);
        let requests = client.req("requests", &[json!({"kinds": [5]})]).await;
        assert_eq!(Client::ids(&requests), vec![request.id_hex()]);

        let (accepted, message) = client.publish(&doomed).await;
        assert!(!accepted, "a deleted event was accepted again");
        assert!(message.starts_with("blocked:"), "{message}");
    }

    async fn a_deletion_by_someone_else_has_no_effect() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let target = note(1, "mine");
        client.publish_ok(&target).await;
        client
            .publish_ok(&keys(2).sign(now(), 5, tags(&[&["e", &target.id_hex()]]), ""))
            .await;
        let found = client.req("q", &[json!({"ids": [target.id_hex()]})]).await;
        assert_eq!(found.len(), 1);
    }

    async fn a_deletion_that_arrives_first_blocks_the_event() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let late = note(1, "arrives after its deletion");
        client
            .publish_ok(&keys(1).sign(now(), 5, tags(&[&["e", &late.id_hex()]]), ""))
            .await;
        let (accepted, _) = client.publish(&late).await;
        assert!(!accepted);
        let same_id_other_author_is_impossible_but_other_events_pass = note(1, "unrelated");
        client
            .publish_ok(&same_id_other_author_is_impossible_but_other_events_pass)
            .await;
    }

    async fn an_a_tag_deletes_versions_up_to_the_request_time() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let t = now() - 100;
        let author = starling::nostr::hex::encode(&keys(1).pubkey());
        let article = keys(1).sign(t, 30_023, tags(&[&["d", "post"]]), "v1");
        let other = keys(1).sign(t, 30_023, tags(&[&["d", "other"]]), "other");
        client.publish_ok(&article).await;
        client.publish_ok(&other).await;
        let address = format!("30023:{author}:post");
        client
            .publish_ok(&keys(1).sign(t + 10, 5, tags(&[&["a", &address]]), ""))
            .await;

        let found = client.req("q", &[json!({"kinds": [30_023]})]).await;
        assert_eq!(Client::ids(&found), vec![other.id_hex()]);
        let (accepted, _) = client
            .publish(&keys(1).sign(t + 5, 30_023, tags(&[&["d", "post"]]), "v0.5"))
            .await;
        assert!(!accepted, "a version older than the deletion was accepted");
        let newer = keys(1).sign(t + 20, 30_023, tags(&[&["d", "post"]]), "v2");
        client.publish_ok(&newer).await;
        let found = client
            .req("q2", &[json!({"kinds": [30_023], "#d": ["post"]})])
            .await;
        assert_eq!(Client::ids(&found), vec![newer.id_hex()]);
    }

    async fn deleting_a_deletion_request_has_no_effect() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let target = note(1, "gone");
        client.publish_ok(&target).await;
        let request = keys(1).sign(now(), 5, tags(&[&["e", &target.id_hex()]]), "");
        client.publish_ok(&request).await;
        client
            .publish_ok(&keys(1).sign(now(), 5, tags(&[&["e", &request.id_hex()]]), ""))
            .await;
        let found = client.req("q", &[json!({"kinds": [5]})]).await;
        assert_eq!(found.len(), 2);
        assert!(
            client
                .req("t", &[json!({"ids": [target.id_hex()]})])
                .await
                .is_empty()
        );
    }
}

/// NIP-62: a request to vanish naming this relay removes its author's events on every node
/// of the cluster (they share the store), and they are refused afterwards; one naming
/// another relay is refused.
#[tokio::test]
async fn a_request_to_vanish_is_applied_on_every_node() {
    let cluster = crate::cluster::Cluster::start(2, crate::support::redis::shared().url()).await;
    let mut on_a = cluster.client(0).await;
    let mut on_b = cluster.client(1).await;
    let old = keys(7).sign(now() - 60, 1, vec![], "before");
    on_a.publish_ok(&old).await;
    let author = starling::nostr::hex::encode(&keys(7).pubkey());
    assert_eq!(
        on_b.req("mine", &[json!({"authors": [author]})])
            .await
            .len(),
        1
    );

    let elsewhere = keys(7).sign(
        now(),
        62,
        vec![vec!["relay".into(), "wss://elsewhere.example.com".into()]],
        "",
    );
    let (ok, message) = on_a.publish(&elsewhere).await;
    assert!(!ok && message.starts_with("invalid: "), "{message}");

    let here = cluster.nodes[0].url();
    let request = keys(7).sign(
        now(),
        62,
        vec![vec!["relay".into(), here]],
        "please forget me",
    );
    on_a.publish_ok(&request).await;
    let left = on_b.req("after", &[json!({"authors": [author]})]).await;
    assert_eq!(
        Client::ids(&left),
        vec![request.id_hex()],
        "only the request is kept"
    );
    let (ok, message) = on_b.publish(&old).await;
    assert!(!ok && message.starts_with("blocked: "), "{message}");
}
