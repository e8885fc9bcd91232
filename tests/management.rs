//! The NIP-86 management API end to end: NIP-98 authorization, every kind of change taking
//! effect on the next message, the audit log, the rules surviving a restart and reaching
//! every node of a cluster, and `starling admin` from a shell.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use starling::nostr::{Keys, hex};

use crate::{
    cluster::Cluster,
    support::{
        Client, DEADLINE, Relay, TempDir,
        http::{metric, nip11_document, request_with_body},
        keys, note, now,
        postgres::database,
        redis, tags,
    },
};

const ADMIN: u8 = 90;

fn admin_args() -> Vec<String> {
    vec!["--admin-pubkeys".into(), hex::encode(&keys(ADMIN).pubkey())]
}

fn as_str(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A NIP-98 `Authorization` header value for `body` to the relay at `addr`.
fn authorization(signer: &Keys, addr: &str, body: &str, created_at: u64) -> String {
    let digest = hex::encode(&<[u8; 32]>::from(Sha256::digest(body.as_bytes())));
    let event = signer.sign(
        created_at,
        27235,
        tags(&[
            &["u", &format!("http://{addr}/")],
            &["method", "POST"],
            &["payload", &digest],
        ]),
        "",
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(event.to_json());
    format!("Nostr {encoded}")
}

/// Posts `body` with `authorization`; the status and the JSON answer.
async fn post(addr: &str, authorization: Option<&str>, body: &str) -> (u16, Value) {
    let mut headers = vec![("Content-Type", "application/nostr+json+rpc")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    let response = request_with_body(addr, "POST", "/", &headers, body).await;
    let answer = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, answer)
}

/// Calls `method` as the admin on the relay at `addr`.
async fn call(addr: &str, method: &str, params: Value) -> (u16, Value) {
    let body = json!({ "method": method, "params": params }).to_string();
    let auth = authorization(&keys(ADMIN), addr, &body, now());
    post(addr, Some(&auth), &body).await
}

/// Calls `method` and expects `{"result": true}`.
async fn change(addr: &str, method: &str, params: Value) {
    let (status, answer) = call(addr, method, params).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!(true)),
        "{method}: {answer}"
    );
}

/// Calls a list method; its result.
async fn list(addr: &str, method: &str) -> Value {
    let (status, answer) = call(addr, method, json!([])).await;
    assert_eq!(status, 200, "{method}: {answer}");
    answer["result"].clone()
}

/// Publishes a new event (the `n`th) every 100 ms until one is refused, for up to the
/// test deadline; the refusal's message.
async fn until_refused(
    client: &mut Client,
    event: impl Fn(u32) -> starling::nostr::Event,
) -> String {
    let started = std::time::Instant::now();
    for n in 0.. {
        let (accepted, message) = client.publish(&event(n)).await;
        if !accepted {
            return message;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for a refusal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    unreachable!("the loop returns or fails")
}

on_every_store! {
    async fn calls_need_a_fresh_nip98_authorization_by_an_admin() {
        let relay = Relay::start(&as_str(&admin_args()));
        let addr = relay.addr.as_str();
        let body = json!({"method": "supportedmethods", "params": []}).to_string();

        let (status, answer) = post(addr, Some(&authorization(&keys(ADMIN), addr, &body, now())), &body).await;
        assert_eq!(status, 200, "{answer}");
        let methods = answer["result"].as_array().expect("a list of methods").clone();
        for method in ["banpubkey", "allowkind", "blockip", "listeventsneedingmoderation", "changerelayicon", "assignrole"] {
            assert!(methods.contains(&json!(method)), "{method} is supported: {methods:?}");
        }

        let refusals = [
            ("no authorization", None),
            ("a non-admin", Some(authorization(&keys(1), addr, &body, now()))),
            ("an old event", Some(authorization(&keys(ADMIN), addr, &body, now() - 120))),
            ("another body", Some(authorization(&keys(ADMIN), addr, "{}", now()))),
            ("another relay", Some(authorization(&keys(ADMIN), "127.0.0.1:1", &body, now()))),
            ("not base64", Some("Nostr !!!".to_string())),
        ];
        for (what, header) in refusals {
            let (status, answer) = post(addr, header.as_deref(), &body).await;
            assert_eq!(status, 401, "{what}: {answer}");
            assert!(answer["error"].is_string(), "{what} says why: {answer}");
        }
        let read = authorization(&keys(ADMIN), addr, &body, now());
        assert_eq!(post(addr, Some(&read), &body).await.0, 200);
        assert_eq!(post(addr, Some(&read), &body).await.0, 200, "a read may be repeated");
        let ban = json!({"method": "banpubkey", "params": [hex::encode(&keys(3).pubkey())]}).to_string();
        let once = authorization(&keys(ADMIN), addr, &ban, now());
        assert_eq!(post(addr, Some(&once), &ban).await.0, 200);
        let (status, answer) = post(addr, Some(&once), &ban).await;
        assert_eq!(status, 401, "a replayed change: {answer}");

        let (status, answer) = call(addr, "frobnicate", json!([])).await;
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().contains("unknown method"), "{answer}");
        let (status, answer) = call(addr, "banpubkey", json!(["not hex"])).await;
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().contains("pubkey"), "{answer}");
        assert_eq!(metric(addr, "starling_management_calls_total", &[("outcome", "unauthorized")]).await, 7.0);
        assert_eq!(metric(addr, "starling_management_calls_total", &[("method", "banpubkey"), ("outcome", "invalid")]).await, 1.0);

        let doc = nip11_document(addr).await;
        assert!(doc["supported_nips"].as_array().unwrap().contains(&json!(86)));
    }

    async fn bans_and_blocks_apply_to_the_next_event_and_remove_what_they_ban() {
        let relay = Relay::start(&as_str(&admin_args()));
        let addr = relay.addr.as_str();
        let mut client = Client::connect(&relay.url()).await;
        let spam = note(2, "spam");
        client.publish_ok(&spam).await;
        let spammer = hex::encode(&keys(2).pubkey());

        change(addr, "banpubkey", json!([spammer, "spam"])).await;
        let (ok, message) = client.publish(&note(2, "more spam")).await;
        assert!(!ok && message.starts_with("blocked: "), "{message}");
        let left = client.req("spam", &[json!({"authors": [spammer]})]).await;
        assert!(left.is_empty(), "a banned pubkey's events are removed: {left:?}");
        assert_eq!(
            list(addr, "listbannedpubkeys").await,
            json!([{"pubkey": spammer, "reason": "spam"}])
        );
        change(addr, "unbanpubkey", json!([spammer])).await;
        client.publish_ok(&note(2, "forgiven")).await;

        let reported = note(3, "reported");
        client.publish_ok(&reported).await;
        let report = keys(4).sign(now(), 1984, tags(&[&["e", &reported.id_hex(), "spam"], &["p", &hex::encode(&keys(3).pubkey())]]), "buy now");
        client.publish_ok(&report).await;
        assert_eq!(
            list(addr, "listeventsneedingmoderation").await,
            json!([{"id": reported.id_hex(), "reason": "spam: buy now"}])
        );
        change(addr, "banevent", json!([reported.id_hex(), "spam"])).await;
        assert!(client.req("gone", &[json!({"ids": [reported.id_hex()]})]).await.is_empty());
        let (ok, message) = client.publish(&reported).await;
        assert!(!ok && message.starts_with("blocked: "), "a banned event stays out: {message}");
        assert_eq!(list(addr, "listeventsneedingmoderation").await, json!([]));
        assert_eq!(list(addr, "listbannedevents").await, json!([{"id": reported.id_hex(), "reason": "spam"}]));

        change(addr, "disallowkind", json!([7])).await;
        let (ok, message) = client.publish(&keys(5).sign(now(), 7, vec![], "+")).await;
        assert!(!ok && message.starts_with("blocked: "), "{message}");
        change(addr, "allowkind", json!([1])).await;
        assert_eq!(list(addr, "listallowedkinds").await, json!([1]));
        let (ok, message) = client.publish(&keys(5).sign(now(), 30023, tags(&[&["d", "a"]]), "long")).await;
        assert!(!ok && message.starts_with("blocked: "), "with an allow list, only its kinds: {message}");
        client.publish_ok(&note(5, "kind 1 is allowed")).await;

        change(addr, "blockip", json!(["127.0.0.0/8", "tests"])).await;
        let (ok, message) = client.publish(&note(6, "from loopback")).await;
        assert!(!ok && message.starts_with("blocked: "), "{message}");
        assert_eq!(list(addr, "listblockedips").await, json!([{"ip": "127.0.0.0/8", "reason": "tests"}]));
        change(addr, "unblockip", json!(["127.0.0.0/8"])).await;
        client.publish_ok(&note(6, "unblocked")).await;

        let audit = list(addr, "listauditlog").await;
        let methods: Vec<&str> = audit.as_array().unwrap().iter().map(|r| r["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["unblockip", "blockip", "allowkind", "disallowkind", "banevent", "unbanpubkey", "banpubkey"]);
        assert_eq!(audit[6]["pubkey"], hex::encode(&keys(ADMIN).pubkey()));
        assert_eq!(audit[6]["params"], json!([spammer, "spam"]));
        assert!(audit[6]["at"].as_u64().unwrap() >= now() - 60);
    }

    async fn allow_lists_relay_information_and_roles_change_live_and_survive_a_restart() {
        let args = admin_args();
        let relay = Relay::start(&as_str(&args));
        let addr = relay.addr.clone();
        let member = hex::encode(&keys(1).pubkey());
        change(&addr, "allowpubkey", json!([member, "paid"])).await;
        let mut client = Client::connect(&relay.url()).await;
        client.publish_ok(&note(1, "a paying member")).await;
        let (ok, message) = client.publish(&note(2, "not a member")).await;
        assert!(!ok && message.starts_with("restricted: "), "{message}");
        let doc = nip11_document(&addr).await;
        assert_eq!(doc["limitation"]["restricted_writes"], true);

        change(&addr, "changerelayname", json!(["Renamed"])).await;
        change(&addr, "changerelaydescription", json!(["A new description"])).await;
        change(&addr, "changerelayicon", json!(["https://example.com/icon.png"])).await;
        let doc = nip11_document(&addr).await;
        assert_eq!((doc["name"].as_str(), doc["description"].as_str(), doc["icon"].as_str()),
            (Some("Renamed"), Some("A new description"), Some("https://example.com/icon.png")));

        change(&addr, "createrole", json!(["mod", "Moderator", "keeps order", "#ff0000", 1])).await;
        change(&addr, "assignrole", json!([member, "mod"])).await;
        let (status, answer) = call(&addr, "assignrole", json!([member, "nobody"])).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(list(&addr, "listroles").await[0]["members"], json!([member]));

        drop(client);
        let storage = relay.kill();
        let relay = Relay::start_on(storage, &as_str(&args), &[]);
        let doc = nip11_document(&relay.addr).await;
        assert_eq!(doc["name"], "Renamed", "settings are stored");
        let mut client = Client::connect(&relay.url()).await;
        let (ok, message) = client.publish(&note(2, "still not a member")).await;
        assert!(!ok && message.starts_with("restricted: "), "rules are stored: {message}");
        assert_eq!(list(&relay.addr, "listallowedpubkeys").await, json!([{"pubkey": member, "reason": "paid"}]));
        assert_eq!(list(&relay.addr, "listroles").await[0]["label"], "Moderator");
    }
}

#[tokio::test]
async fn a_ban_through_one_node_is_applied_by_every_node_at_once() {
    let args = admin_args();
    let cluster = Cluster::start_with(3, redis::shared().url(), &as_str(&args)).await;
    let mut c = cluster.client(2).await;
    c.publish_ok(&note(2, "before the ban")).await;
    let spammer = hex::encode(&keys(2).pubkey());
    change(&cluster.nodes[0].addr, "banpubkey", json!([spammer])).await;
    // Over the bus: well before the nodes' periodic reload (every 5 s by default), but not
    // instantly, so the test waits for it.
    let message = until_refused(&mut c, |n| note(2, &format!("after the ban {n}"))).await;
    assert!(message.starts_with("blocked: "), "{message}");
    // Each node removes what it accepted before it applied the ban.
    let mut b = cluster.client(1).await;
    let filter = [json!({"authors": [spammer]})];
    let started = std::time::Instant::now();
    while !b.req("s", &filter).await.is_empty() {
        assert!(
            started.elapsed() < DEADLINE,
            "the banned pubkey's events are still served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_that_misses_the_announcement_reloads_the_rules_from_the_store() {
    // Two nodes on one database and no Redis: no bus between them, only the store.
    let database = database();
    let mut args = admin_args();
    args.extend(["--policy-reload-seconds".to_string(), "1".to_string()]);
    let env = [("DATABASE_URL", database.url.as_str())];
    let a = Relay::start_in(TempDir::new("a"), &as_str(&args), &env);
    let b = Relay::start_in(TempDir::new("b"), &as_str(&args), &env);
    change(&a.addr, "disallowkind", json!([1])).await;
    let mut client = Client::connect(&b.url()).await;
    let message = until_refused(&mut client, |n| note(3, &format!("note {n}"))).await;
    assert!(message.starts_with("blocked: "), "{message}");
}

#[tokio::test]
async fn starling_admin_bans_from_a_shell_and_says_what_went_wrong() {
    let relay = Relay::start(&as_str(&admin_args()));
    let dir = TempDir::new("admin-key");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, hex::encode(&[ADMIN; 32])).unwrap();
    let spammer = hex::encode(&keys(2).pubkey());
    let admin = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
            .arg("admin")
            .args(["--relay", &relay.url(), "--key-file"])
            .arg(&key_file)
            .args(args)
            .env_remove("STARLING_ADMIN_KEY")
            .output()
            .expect("run starling admin");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = admin(&["banpubkey", &spammer, "spam"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "done");
    let (ok, out, _) = admin(&["listbannedpubkeys"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("pubkey={spammer}  reason=spam"));
    let mut client = Client::connect(&relay.url()).await;
    let (accepted, message) = client.publish(&note(2, "banned from a shell")).await;
    assert!(!accepted && message.starts_with("blocked: "), "{message}");

    let (ok, _, err) = admin(&["allowkind", "not-a-number"]);
    assert!(
        !ok && err.contains("kind") && err.contains("HTTP 400"),
        "{err}"
    );
    std::fs::write(&key_file, hex::encode(&[1u8; 32])).unwrap();
    let (ok, _, err) = admin(&["listbannedpubkeys"]);
    assert!(
        !ok && err.contains("may not manage") && err.contains("HTTP 401"),
        "{err}"
    );
}

#[tokio::test]
async fn import_applies_the_stored_rules() {
    let relay = Relay::start(&as_str(&admin_args()));
    change(
        &relay.addr,
        "banpubkey",
        json!([hex::encode(&keys(2).pubkey())]),
    )
    .await;
    let storage = relay.kill();
    let input = storage.dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n",
            note(1, "fine").to_json(),
            note(2, "banned").to_json()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("import")
        .arg(&input)
        .arg("--data-dir")
        .arg(storage.dir.path().join("store"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run starling import");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("imported 1 events; 0 already stored; 1 refused"),
        "{err}"
    );
    assert!(
        err.contains("blocked: this pubkey may not publish here"),
        "{err}"
    );
}

/// How a test client sends a body.
#[derive(Clone, Copy, Debug)]
enum Upload {
    /// Its length declared, the whole body written before anything is read.
    Whole,
    /// Its length declared, read from while written (as curl does).
    Reading,
    /// In chunks of undeclared total length, read from while written.
    Chunked,
}

/// Posts a management call with a body of `size` bytes, sent as `upload` says; what the
/// relay answered, or the error that ended the read.
async fn post_oversized(addr: &str, size: usize, upload: Upload) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    let length = match upload {
        Upload::Chunked => "Transfer-Encoding: chunked".to_string(),
        _ => format!("Content-Length: {size}"),
    };
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/nostr+json+rpc\r\n{length}\r\n\r\n"
    );
    let writing = async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 16 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            if let Upload::Chunked = upload {
                writer.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            writer.write_all(&chunk[..n]).await?;
            if let Upload::Chunked = upload {
                writer.write_all(b"\r\n").await?;
            }
            sent += n;
        }
        if let Upload::Chunked = upload {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    };
    let mut response = Vec::new();
    let read = match upload {
        Upload::Whole => {
            // A write the relay no longer takes (it closed) ends the upload; its answer is
            // still there to read.
            let _writer = writing.await;
            tokio::time::timeout(DEADLINE, reader.read_to_end(&mut response)).await
        }
        Upload::Reading | Upload::Chunked => {
            let writing = tokio::spawn(writing);
            let read = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut response)).await;
            writing.abort();
            read
        }
    };
    read.expect("the relay answered in time")?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn an_oversized_management_call_gets_an_answer_the_client_can_read() {
    let relay = Relay::start(&as_str(&admin_args()));
    let uploads = [
        (100 << 10, Upload::Whole),
        (16 << 20, Upload::Whole),
        (16 << 20, Upload::Reading),
        (1 << 20, Upload::Chunked),
    ];
    for (size, upload) in uploads {
        let answer = post_oversized(&relay.addr, size, upload).await;
        let answer = answer.unwrap_or_else(|error| panic!("{size} bytes, {upload:?}: {error}"));
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        assert!(head.starts_with("HTTP/1.1 413"), "{upload:?}: {answer:?}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).expect("a JSON answer");
        assert!(
            body["error"].as_str().unwrap().contains("65536 bytes"),
            "{body}"
        );
    }
    let counted = metric(
        &relay.addr,
        "starling_management_calls_total",
        &[("outcome", "too-large")],
    )
    .await;
    assert_eq!(counted, uploads.len() as f64);
    // The relay still answers calls of the right size.
    let (status, _) = call(&relay.addr, "supportedmethods", json!([])).await;
    assert_eq!(status, 200);
}
