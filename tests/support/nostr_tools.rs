//! Independent implementations to test the relay against, from nostr-tools (JavaScript):
//! its NIP-77 negentropy (a port of the reference implementation, not the Rust crate the
//! relay uses), driven through a small Node.js script that keeps one reconciliation and
//! answers one JSON line per request, and its NIP-45 HyperLogLog.
//!
//! nostr-tools is installed with npm once per machine (into the system's temp directory);
//! Node.js and npm are installed from Debian's packages when missing (as root).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::{Value, json};

/// The nostr-tools release the tests use.
const VERSION: &str = "2.25.2";

const SCRIPT: &str = r#"
import { createInterface } from 'node:readline';
import { Negentropy, NegentropyStorageVector } from './node_modules/nostr-tools/lib/esm/nip77.js';
let neg = null;
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const request = JSON.parse(line);
  if (request.op === 'init') {
    const storage = new NegentropyStorageVector();
    for (const [timestamp, id] of request.items) storage.insert(timestamp, id);
    storage.seal();
    neg = new Negentropy(storage, 60000);
    console.log(JSON.stringify({ msg: neg.initiate() }));
  } else {
    const have = [], need = [];
    const next = neg.reconcile(request.msg, id => have.push(id), id => need.push(id));
    console.log(JSON.stringify({ next, have, need }));
  }
}
"#;

const HLL_SCRIPT: &str = r#"
import { computeOffset, getFilterFirstTagValue, feedPubkey, newHll, hllEncode } from './node_modules/nostr-tools/lib/esm/nip45.js';
const request = JSON.parse(process.argv[2]);
const offset = computeOffset(getFilterFirstTagValue(request.filter));
let hll = newHll();
for (const pubkey of request.pubkeys) hll = feedPubkey(hll, pubkey, offset);
console.log(hllEncode(hll));
"#;

/// The NIP-45 HLL (hex) nostr-tools computes for `filter` over `pubkeys` (hex).
pub fn hll(filter: &Value, pubkeys: &[String]) -> String {
    let dir = installed();
    let output = Command::new("node")
        .arg("hll.mjs")
        .arg(json!({"filter": filter, "pubkeys": pubkeys}).to_string())
        .current_dir(&dir)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_string()
}

/// Where nostr-tools is installed, installing it (and Node.js) the first time.
fn installed() -> PathBuf {
    let dir = super::npm::package("nostr-tools", VERSION, "lib/esm/nip77.js");
    // Written once per test process, by renaming a whole file into
    // place: tests run at once, and node reading a script another test was rewriting
    // (truncated, then filled) ran an empty module and printed nothing.
    static WRITTEN: std::sync::Once = std::sync::Once::new();
    WRITTEN.call_once(|| {
        for (name, text) in [("reconcile.mjs", SCRIPT), ("hll.mjs", HLL_SCRIPT)] {
            let partial = dir.join(format!("{name}.{}", std::process::id()));
            std::fs::write(&partial, text).expect("write the script");
            std::fs::rename(&partial, dir.join(name)).expect("put the script in place");
        }
    });
    dir
}

/// The client side of one reconciliation, in nostr-tools.
pub struct JsNegentropy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What one step of the client's reconciliation gave.
pub struct Step {
    /// The next message for the relay (hex), or `None`: reconciled.
    pub next: Option<String>,
    /// Ids the client has and the relay lacks, found in this step.
    pub have: Vec<String>,
    /// Ids the relay has and the client lacks, found in this step.
    pub need: Vec<String>,
}

impl JsNegentropy {
    /// A client holding `items` (`created_at`, hex id); returns it with its first message.
    pub fn start(items: &[(u64, String)]) -> (Self, String) {
        let dir = installed();
        let mut child = Command::new("node")
            .arg("reconcile.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut client = Self {
            child,
            stdin,
            stdout,
        };
        let answer = client.ask(json!({"op": "init", "items": items}));
        let first = answer["msg"].as_str().expect("a first message").to_string();
        (client, first)
    }

    /// Reads the relay's message `hex`.
    pub fn reconcile(&mut self, hex: &str) -> Step {
        let answer = self.ask(json!({"op": "reconcile", "msg": hex}));
        let ids = |key: &str| -> Vec<String> {
            answer[key]
                .as_array()
                .expect("a list of ids")
                .iter()
                .map(|id| id.as_str().expect("an id").to_string())
                .collect()
        };
        Step {
            next: answer["next"].as_str().map(str::to_string),
            have: ids("have"),
            need: ids("need"),
        }
    }

    fn ask(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to node");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from node");
        serde_json::from_str(&line).unwrap_or_else(|_| {
            // Node ended or wrote something else: what it said on stderr tells why.
            let _ = self.child.kill();
            let mut said = String::new();
            if let Some(mut stderr) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            panic!("node answered {line:?} to {request}; its stderr: {said}")
        })
    }
}

impl Drop for JsNegentropy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
