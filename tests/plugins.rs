//! Write-policy plugins with real plugin scripts (Python, written by the tests), in
//! strfry's protocol: a whitelist, one that leaves some events unanswered, one that
//! crashes, one that prints garbage, and one replaced while the relay runs.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::support::{Client, DEADLINE, Relay, TempDir, keys, now};

/// Writes an executable Python plugin whose `decide(request)` returns the answer's
/// `(action, msg)`, or `None` to answer nothing.
pub(crate) fn plugin(dir: &TempDir, name: &str, decide: &str) -> String {
    let has_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        crate::support::install_debian_package("python3");
    }
    let path = dir.path().join(name);
    let script = format!(
        "#!/usr/bin/env python3\nimport json, sys\n{decide}\n\
         for line in sys.stdin:\n    request = json.loads(line)\n    verdict = decide(request)\n\
         \x20   if verdict is not None:\n\
         \x20       print(json.dumps({{\"id\": request[\"event\"][\"id\"], \"action\": verdict[0], \"msg\": verdict[1]}}), flush=True)\n"
    );
    std::fs::write(&path, script).expect("write the plugin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn note(n: u8, content: &str) -> starling::nostr::Event {
    keys(n).sign(now(), 1, vec![], content)
}

/// Publishes new notes until one is accepted, failing the test after the deadline.
async fn accepted_eventually(client: &mut Client, prefix: &str, what: &str) {
    let started = std::time::Instant::now();
    for attempt in 0.. {
        if client
            .publish(&note(1, &format!("{prefix} {attempt}")))
            .await
            .0
        {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn stored(client: &mut Client, event: &starling::nostr::Event) -> bool {
    !client
        .req("check", &[json!({"ids": [event.id_hex()]})])
        .await
        .is_empty()
}

#[tokio::test]
async fn a_whitelist_plugin_decides_and_sees_where_events_come_from() {
    let dir = TempDir::new("plugins");
    let allowed = starling::nostr::hex::encode(&keys(1).pubkey());
    let command = plugin(
        &dir,
        "whitelist.py",
        &format!(
            "def decide(r):\n    e = r['event']\n\
             \x20   if e['content'] == 'whoami':\n        return ('reject', 'blocked: %s %s %s %s' % (r['type'], r['sourceType'], r['sourceInfo'], r.get('authed')))\n\
             \x20   if e['content'] == 'shadow':\n        return ('shadowReject', '')\n\
             \x20   if e['pubkey'] != '{allowed}':\n        return ('reject', 'not on the list')\n\
             \x20   return ('accept', '')\n"
        ),
    );
    let relay = Relay::start(&["--write-policy-plugin", &command]);
    let mut client = Client::connect(&relay.url()).await;
    let good = note(1, "on the list");
    client.publish_ok(&good).await;
    assert!(stored(&mut client, &good).await);
    let (ok, message) = client.publish(&note(2, "not on it")).await;
    assert!(!ok, "{message}");
    assert_eq!(message, "blocked: not on the list");
    let shadow = note(1, "shadow");
    client.publish_ok(&shadow).await;
    assert!(
        !stored(&mut client, &shadow).await,
        "a shadow-rejected event was stored"
    );
    let (_, message) = client.publish(&note(1, "whoami")).await;
    assert_eq!(message, "blocked: new IP4 127.0.0.1 None");
}

#[tokio::test]
async fn unanswered_events_follow_on_error_and_others_are_still_answered() {
    let dir = TempDir::new("plugins");
    let command = plugin(
        &dir,
        "silent.py",
        "def decide(r):\n    return None if r['event']['content'] == 'ignored' else ('accept', '')\n",
    );
    for (on_error, expect_ok) in [("reject", false), ("accept", true)] {
        let relay = Relay::start(&[
            "--write-policy-plugin",
            &command,
            "--write-policy-timeout-ms",
            "1000",
            "--write-policy-on-error",
            on_error,
        ]);
        let mut client = Client::connect(&relay.url()).await;
        // Once one event is accepted, the plugin is running and answers at once (starting
        // Python on a busy machine may take longer than the timeout).
        accepted_eventually(&mut client, "warm-up", "the plugin to start").await;
        let ignored = note(1, "ignored");
        let answered = note(1, "answered");
        // Both in flight at once; the plugin answers only the second.
        client
            .send(json!([
                "EVENT",
                serde_json::from_str::<serde_json::Value>(&ignored.to_json()).unwrap()
            ]))
            .await;
        client
            .send(json!([
                "EVENT",
                serde_json::from_str::<serde_json::Value>(&answered.to_json()).unwrap()
            ]))
            .await;
        // The answers come in either order (the plugin may take longer to start than the
        // timeout): read both.
        let mut verdicts = std::collections::HashMap::new();
        while verdicts.len() < 2 {
            let message = client.recv().await;
            if message[0] == "OK" {
                let id = message[1].as_str().unwrap_or_default().to_string();
                let verdict = (
                    message[2] == true,
                    message[3].as_str().unwrap_or_default().to_string(),
                );
                verdicts.insert(id, verdict);
            }
        }
        assert!(
            verdicts[&answered.id_hex()].0,
            "the answered event: {verdicts:?}"
        );
        let (ok, message) = verdicts[&ignored.id_hex()].clone();
        assert_eq!(ok, expect_ok, "{on_error}: {message}");
        if !ok {
            assert!(message.starts_with("error: "), "{message}");
        }
    }
}

#[tokio::test]
async fn a_plugin_that_crashes_is_started_again_and_garbage_is_ignored() {
    let dir = TempDir::new("plugins");
    let command = plugin(
        &dir,
        "crashy.py",
        "def decide(r):\n    c = r['event']['content']\n    if c == 'crash':\n        sys.exit(1)\n\
         \x20   if c == 'noise':\n        print('this is not JSON', flush=True)\n        return None\n\
         \x20   print('{\"id\": \"not this one\", \"action\": \"reject\"}', flush=True)\n    return ('accept', '')\n",
    );
    let relay = Relay::start(&[
        "--write-policy-plugin",
        &command,
        "--write-policy-timeout-ms",
        "1000",
    ]);
    let mut client = Client::connect(&relay.url()).await;
    accepted_eventually(&mut client, "before", "the plugin to start").await;
    let (ok, message) = client.publish(&note(1, "crash")).await;
    assert!(!ok && message.starts_with("error: "), "{message}");
    let (ok, message) = client.publish(&note(1, "noise")).await;
    assert!(!ok && message.starts_with("error: "), "{message}");
    accepted_eventually(
        &mut client,
        "after",
        "the restarted plugin to accept events",
    )
    .await;
}

#[tokio::test]
async fn a_changed_plugin_file_is_loaded() {
    let dir = TempDir::new("plugins");
    let command = plugin(
        &dir,
        "policy.py",
        "def decide(r):\n    return ('reject', 'closed for now')\n",
    );
    let relay = Relay::start(&["--write-policy-plugin", &command]);
    let mut client = Client::connect(&relay.url()).await;
    let (ok, _) = client.publish(&note(1, "first")).await;
    assert!(!ok);
    plugin(
        &dir,
        "policy.py",
        "def decide(r):\n    return ('accept', '')\n",
    );
    accepted_eventually(&mut client, "again", "the new plugin to accept events").await;
}

#[test]
fn imported_events_go_through_the_plugin_as_imports() {
    let dir = TempDir::new("plugins");
    let allowed = starling::nostr::hex::encode(&keys(1).pubkey());
    let command = plugin(
        &dir,
        "imports.py",
        &format!(
            "def decide(r):\n    if r['event']['pubkey'] == '{allowed}':\n        return ('accept', '')\n\
             \x20   return ('reject', 'blocked: %s %s' % (r['sourceType'], r['sourceInfo']))\n"
        ),
    );
    let input = dir.path().join("events.jsonl");
    let lines = [note(1, "kept").to_json(), note(2, "refused").to_json()].join("\n");
    std::fs::write(&input, lines).expect("write the events");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("import")
        .arg(&input)
        .args(["--write-policy-plugin", &command, "--data-dir"])
        .arg(dir.path().join("store"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run starling import");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 1 events; 0 already stored; 1 refused"),
        "{stderr}"
    );
    let told = format!("blocked: Import {}", input.display());
    assert!(stderr.contains(&told), "{stderr}");
}
