//! `starling sync` with a running relay: it finds and moves what each side lacks (NIP-77),
//! finds nothing the second time, checks what it fetches (the plugin sees `Sync`), and pages
//! through a relay that does not reconcile when told to.

use std::process::Command;

use serde_json::json;

use crate::support::{Client, Relay, TempDir, keys, now};

/// Runs `starling` with `args` on the store in `data`; (success, stderr).
fn starling(args: &[&str], data: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run starling");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn notes(author: u8, count: u64, content: &str) -> Vec<starling::nostr::Event> {
    (0..count)
        .map(|n| keys(author).sign(now() - 1000 + n, 1, vec![], &format!("{content} {n}")))
        .collect()
}

/// A local store holding `events`, made with `starling import`.
fn local_store(dir: &TempDir, events: &[&starling::nostr::Event]) -> std::path::PathBuf {
    let file = dir.path().join("local.jsonl");
    let lines: String = events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(&file, lines).unwrap();
    let data = dir.path().join("local");
    let (ok, err) = starling(&["import", file.to_str().unwrap()], &data);
    assert!(ok, "{err}");
    data
}

async fn remote_with(events: &[starling::nostr::Event], args: &[&str]) -> (Relay, Client) {
    let relay = Relay::start(args);
    let mut client = Client::connect(&relay.url()).await;
    for event in events {
        client.publish_ok(event).await;
    }
    (relay, client)
}

#[tokio::test]
async fn sync_moves_what_each_side_lacks_and_then_finds_nothing() {
    let theirs = notes(1, 30, "remote");
    let ours = notes(2, 5, "local");
    let (relay, mut client) = remote_with(&theirs, &[]).await;
    let dir = TempDir::new("sync");
    let mut held: Vec<&starling::nostr::Event> = theirs.iter().take(10).collect();
    held.extend(ours.iter());
    let data = local_store(&dir, &held);

    let (ok, err) = starling(&["sync", &relay.url()], &data);
    assert!(ok, "{err}");
    assert!(
        err.contains("by negentropy: 5 here and not there, 20 there and not here; fetched 20: stored 20, already stored 0, refused 0; sent 5: accepted 5, refused 0"),
        "{err}"
    );
    assert_eq!(client.count("all", &[json!({"kinds": [1]})]).await, 35);
    let (ok, err) = starling(&["sync", &relay.url()], &data);
    assert!(ok, "{err}");
    assert!(
        err.contains("0 here and not there, 0 there and not here"),
        "{err}"
    );

    let (ok, err) = starling(
        &[
            "export",
            "--output",
            dir.path().join("all.jsonl").to_str().unwrap(),
        ],
        &data,
    );
    assert!(ok, "{err}");
    let exported = std::fs::read_to_string(dir.path().join("all.jsonl")).unwrap();
    assert_eq!(
        exported.lines().count(),
        35,
        "the local store has every event"
    );
}

#[tokio::test]
async fn fetched_events_go_through_the_rules_and_the_plugin_as_sync() {
    let mut theirs = notes(1, 3, "fine");
    theirs.extend(notes(3, 2, "spam"));
    let (relay, _client) = remote_with(&theirs, &[]).await;
    let dir = TempDir::new("sync-plugin");
    let plugin = crate::plugins::plugin(
        &dir,
        "spam.py",
        "def decide(request):\n    if 'spam' in request['event']['content']:\n        return ('reject', 'blocked: spam from ' + request['sourceType'])\n    return ('accept', '')",
    );
    let data = local_store(&dir, &[]);
    let (ok, err) = starling(
        &[
            "sync",
            &relay.url(),
            "--direction",
            "down",
            "--write-policy-plugin",
            &plugin,
        ],
        &data,
    );
    assert!(ok, "{err}");
    assert!(err.contains("blocked: spam from Sync"), "{err}");
    assert!(
        err.contains("fetched 5: stored 3, already stored 0, refused 2"),
        "{err}"
    );
}

#[tokio::test]
async fn a_relay_without_negentropy_is_reported_or_paged_through() {
    let theirs = notes(1, 1200, "paged");
    let (relay, _client) = remote_with(&theirs, &["--max-negentropy-sessions", "0"]).await;
    let dir = TempDir::new("sync-fallback");
    let data = local_store(&dir, &[]);
    let (ok, err) = starling(&["sync", &relay.url()], &data);
    assert!(
        !ok && err.contains("does not reconcile") && err.contains("--fallback req"),
        "{err}"
    );
    let (ok, err) = starling(
        &[
            "sync",
            &relay.url(),
            "--fallback",
            "req",
            "--direction",
            "down",
        ],
        &data,
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("by req") && err.contains("stored 1200"),
        "{err}"
    );
}
