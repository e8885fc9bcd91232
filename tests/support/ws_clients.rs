//! Real WebSocket clients with permessage-deflate, each running one scenario against a
//! relay: Python's `websockets` (from PyPI), Node.js's `ws` (from npm) and headless Chromium
//! (Debian's `chromium`, driven over the DevTools protocol). Each publishes an event,
//! queries it back by id and answers a JSON object: the extensions the relay agreed to
//! (`extensions`), the `OK` (`ok`) and the event as received (`event`).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{DEADLINE, python};

const PYTHON: &str = r#"
import json, sys
from websockets.sync.client import connect
url, event = sys.argv[1], json.loads(sys.argv[2])
out = {"ok": None, "event": None}
with connect(url, open_timeout=10, max_size=None) as ws:
    out["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
    ws.send(json.dumps(["EVENT", event]))
    while out["ok"] is None:
        message = json.loads(ws.recv(timeout=10))
        if message[0] == "OK":
            out["ok"] = message
    ws.send(json.dumps(["REQ", "s", {"ids": [event["id"]]}]))
    while True:
        message = json.loads(ws.recv(timeout=10))
        if message[0] == "EVENT":
            out["event"] = message[2]
        if message[0] == "EOSE":
            break
print(json.dumps(out))
"#;

/// The scenario in JavaScript, for Node's `ws` and the browser's `WebSocket` alike: a
/// function of the URL and the event resolving to the answer, as JSON text.
const SCENARIO: &str = r#"
(url, event) => new Promise((resolve) => {
  const out = { ok: null, event: null };
  const ws = new WebSocket(url);
  ws.onopen = () => {
    out.extensions = ws.extensions;
    ws.send(JSON.stringify(["EVENT", event]));
  };
  ws.onmessage = (m) => {
    const message = JSON.parse(m.data);
    if (message[0] === "OK") {
      out.ok = message;
      ws.send(JSON.stringify(["REQ", "s", { ids: [event.id] }]));
    } else if (message[0] === "EVENT") {
      out.event = message[2];
    } else if (message[0] === "EOSE") {
      ws.close(1000);
      resolve(JSON.stringify(out));
    }
  };
  ws.onclose = (e) => { out.closed = e.code; resolve(JSON.stringify(out)); };
  ws.onerror = () => { out.error = true; };
})
"#;

/// The `ws` release the Node test uses.
const WS_VERSION: &str = "8.18.3";

/// Python's `websockets` runs the scenario.
pub fn python(url: &str, event: &Value) -> Value {
    let output = python::command()
        .args(["-c", PYTHON, url, &event.to_string()])
        .output()
        .expect("run python");
    answer("python websockets", output)
}

/// Node.js's `ws` runs the scenario.
pub fn node(url: &str, event: &Value) -> Value {
    let dir = ws_installed();
    let script = format!(
        "const WebSocket = require('ws');\nconst [url, event] = process.argv.slice(-2);\n({SCENARIO})(url, JSON.parse(event)).then(console.log);\n"
    );
    let output = Command::new("node")
        .args(["-e", &script, "--", url, &event.to_string()])
        .current_dir(&dir)
        .output()
        .expect("run node");
    answer("node ws", output)
}

fn answer(client: &str, output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{client}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{client}: {e}: {text}"))
}

/// Where `ws` is installed, installing it with npm the first time.
fn ws_installed() -> PathBuf {
    super::npm::package("ws", WS_VERSION, "package.json")
}

/// Headless Chromium runs the scenario in a blank page, evaluated over the DevTools
/// protocol.
pub async fn chromium(url: &str, event: &Value) -> Value {
    let binary = super::debian_binary("chromium", "chromium");
    let profile = super::TempDir::new("chromium");
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().expect("stderr");
    let (found, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.strip_prefix("DevTools listening on ") {
                let _ = found.send(at.to_string());
            }
        }
    });
    let browser = listening
        .recv_timeout(DEADLINE)
        .expect("chromium's DevTools address");
    let (mut devtools, _) = tokio_tungstenite::connect_async(browser.as_str())
        .await
        .expect("connect to DevTools");
    let mut call = async |id: u64, method: &str, params: Value, session: Option<&str>| {
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        devtools
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(message)) = devtools.next().await {
                let Ok(text) = message.to_text() else {
                    continue;
                };
                let reply: Value = serde_json::from_str(text).expect("DevTools JSON");
                if reply["id"] == id {
                    return reply;
                }
            }
            panic!("DevTools closed");
        })
        .await
        .unwrap_or_else(|_| panic!("chromium answered {method} in time"))
    };
    let target = call(
        1,
        "Target.createTarget",
        json!({"url": "about:blank"}),
        None,
    )
    .await;
    let target = target["result"]["targetId"].clone();
    let attached = call(
        2,
        "Target.attachToTarget",
        json!({"targetId": target, "flatten": true}),
        None,
    )
    .await;
    let session = attached["result"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("chromium: {attached}"))
        .to_string();
    let expression = format!("({SCENARIO})({}, {})", json!(url), event);
    let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
    let result = call(3, "Runtime.evaluate", params, Some(&session)).await;
    let _ = child.kill();
    let _ = child.wait();
    let value = result["result"]["result"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("chromium: {result}"));
    serde_json::from_str(value).expect("the scenario's JSON")
}
