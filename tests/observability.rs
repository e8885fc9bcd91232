//! The Grafana dashboard and the alert rules, proven against a real Prometheus scraping two
//! real nodes: every expression of the dashboard must return series, and every alert rule
//! must be valid and evaluate.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{
    cluster::Cluster,
    support::{
        TempDir, eventually, install_debian_package, keys, note, now,
        postgres::{free_port, spawn_tied_to_this_process},
        redis, repository_file,
    },
};

/// `prometheus` and `promtool`, installing the Debian package if needed.
fn prometheus_binaries() -> (PathBuf, PathBuf) {
    let find = || {
        let prometheus = PathBuf::from("/usr/bin/prometheus");
        let promtool = PathBuf::from("/usr/bin/promtool");
        (prometheus.exists() && promtool.exists()).then_some((prometheus, promtool))
    };
    if let Some(found) = find() {
        return found;
    }
    install_debian_package("prometheus");
    find().expect("prometheus not found: install the Debian package `prometheus` (apt-get install prometheus)")
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns the API's JSON answer.
async fn query(prometheus: &str, expr: &str) -> Value {
    let path = format!("/api/v1/query?query={}", percent_encode(expr));
    let response = crate::support::http::request(prometheus, "GET", &path, &[]).await;
    serde_json::from_str(&response.body)
        .unwrap_or_else(|_| panic!("Prometheus answered {}: {}", response.status, response.body))
}

/// Every PromQL expression of the dashboard, with Grafana's variables filled in.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repository_file("deploy/grafana/starling.json")).unwrap(),
    )
    .expect("dashboard JSON");
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$node", ".*");
            found.push((
                panel["title"].as_str().unwrap_or_default().to_string(),
                expr,
            ));
        }
    }
    found
}

#[tokio::test]
async fn the_dashboard_and_alerts_query_real_series() {
    let (prometheus, promtool) = prometheus_binaries();
    let alerts = repository_file("deploy/prometheus/alerts.yml");
    let checked = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&alerts)
        .output()
        .expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&checked.stdout)
    );

    let cluster = Cluster::start(2, redis::shared().url()).await;
    let work = TempDir::new("prometheus");
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.addr))
        .collect();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\n\
             scrape_configs:\n  - job_name: starling\n    static_configs:\n      - targets: [{}]\n",
            alerts.display(),
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut command = Command::new(&prometheus);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = spawn_tied_to_this_process(command);

    // A short, bounded load that touches every part: publishing, live delivery across
    // nodes, stored queries, counts, refusals.
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    b.req("live", &[json!({"kinds": [1]})]).await;
    for n in 0..20 {
        a.publish_ok(&note(1, &format!("load {n}"))).await;
        b.live_event("live").await;
    }
    let mut forged = keys(2).sign(now(), 1, vec![], "forged");
    forged.sig[0] ^= 1;
    a.publish(&forged).await;
    b.req("stored", &[json!({"kinds": [1], "limit": 5})]).await;
    b.count("count", &[json!({"kinds": [1]})]).await;
    for node in 0..2 {
        let mut passing = cluster.client(node).await;
        passing.req("once", &[json!({"limit": 1})]).await;
    }

    // Until it has opened its storage, Prometheus refuses connections or answers its API
    // with "Service Unavailable"; /-/ready says when it serves.
    eventually("Prometheus to be ready", || async {
        tokio::net::TcpStream::connect(&address).await.ok()?;
        let ready = crate::support::http::request(&address, "GET", "/-/ready", &[]).await;
        (ready.status == 200).then_some(())
    })
    .await;
    eventually("Prometheus to scrape both nodes twice", || async {
        let up = query(&address, "count_over_time(up{job=\"starling\"}[1m])").await;
        let series = up["data"]["result"].as_array().cloned().unwrap_or_default();
        (series.len() == 2
            && series.iter().all(|s| {
                s["value"][1]
                    .as_str()
                    .is_some_and(|v| v.parse::<f64>().unwrap_or(0.0) >= 3.0)
            }))
        .then_some(())
    })
    .await;

    let mut empty = Vec::new();
    for (panel, expr) in dashboard_expressions() {
        let answer = query(&address, &expr).await;
        assert_eq!(answer["status"], "success", "{panel}: {expr}: {answer}");
        if answer["data"]["result"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions without series:\n{}",
        empty.join("\n")
    );
    let misspelt = query(&address, "starling_conections_open").await;
    assert_eq!(
        misspelt["data"]["result"],
        json!([]),
        "a misspelt metric would not be caught"
    );

    let rules: Value = query_rules(&address).await;
    let groups = rules["data"]["groups"].as_array().expect("rule groups");
    let evaluated: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(evaluated.len(), 7, "{rules}");
    for rule in evaluated {
        assert_eq!(
            rule["health"], "ok",
            "alert {} does not evaluate: {rule}",
            rule["name"]
        );
        let answer = query(&address, rule["query"].as_str().expect("query")).await;
        assert_eq!(answer["status"], "success", "{answer}");
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// The alert rules as Prometheus loaded them, once each has been evaluated.
async fn query_rules(address: &str) -> Value {
    eventually("every rule to be evaluated", || async {
        let response = crate::support::http::request(address, "GET", "/api/v1/rules", &[]).await;
        let rules: Value = serde_json::from_str(&response.body).ok()?;
        let all_evaluated = rules["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        all_evaluated.then_some(rules)
    })
    .await
}
