//! NIP-40 expiration end to end.

use serde_json::json;

use crate::support::{Client, Relay, eventually, keys, now, tags};

on_every_store! {
    async fn refuses_events_that_already_expired() {
        let relay = Relay::start(&[]);
        let mut client = Client::connect(&relay.url()).await;
        let expired = keys(1).sign(
            now() - 10,
            1,
            tags(&[&["expiration", &(now() - 1).to_string()]]),
            "late",
        );
        let (accepted, message) = client.publish(&expired).await;
        assert!(!accepted);
        assert!(message.starts_with("invalid:"), "{message}");
    }

    async fn stops_serving_expired_events_and_purges_them() {
        let relay = Relay::start(&["--expiration-sweep-seconds", "1"]);
        let mut client = Client::connect(&relay.url()).await;
        let expires_at = now() + 2;
        let short = keys(1).sign(
            now(),
            1,
            tags(&[&["expiration", &expires_at.to_string()]]),
            "short-lived",
        );
        let long = keys(1).sign(
            now(),
            1,
            tags(&[&["expiration", &(now() + 3600).to_string()]]),
            "long-lived",
        );
        client.publish_ok(&short).await;
        client.publish_ok(&long).await;
        let found = client.req("before", &[json!({"kinds": [1]})]).await;
        assert_eq!(found.len(), 2);

        let url = relay.url();
        eventually("the expired event to disappear from queries", || {
            let url = url.clone();
            async move {
                let mut client = Client::connect(&url).await;
                let found = client.req("after", &[json!({"kinds": [1]})]).await;
                (found.len() == 1).then_some(found)
            }
        })
        .await;
        assert!(now() >= expires_at, "an unexpired event was hidden");

        let storage = &relay.storage;
        eventually("the sweeper to delete the expired row", || async {
            (storage.rows_with_id(&short.id) == 0).then_some(())
        })
        .await;
        assert_eq!(client.count("c", &[json!({})]).await, 1);
    }
}
