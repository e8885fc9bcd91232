//! How PostgreSQL runs the store's SQL for each common filter shape.
//!
//! Sample values (a prolific author, referenced ids and keys, a topic) are read from the
//! database itself, so the shapes hit real data. Each shape's SQL is exactly what the store
//! sends, compiled by `starling::store::postgres::sql`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use starling::{
    nostr::Filter,
    store::postgres::{session::session_settings, sql},
};
use tokio_postgres::{Client, NoTls};

/// Options of `explain`.
#[derive(clap::Args, serde::Serialize)]
pub struct Args {
    /// The database to examine.
    #[arg(long, env = "DATABASE_URL")]
    #[serde(skip)]
    pub database_url: String,
    /// Timed runs of each shape after the EXPLAIN.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
}

async fn one_text(client: &Client, sql: &str) -> anyhow::Result<String> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// Runs every shape and prints its plan and timings as Markdown.
pub async fn run(args: &Args) -> anyhow::Result<Value> {
    let config: tokio_postgres::Config = args.database_url.parse()?;
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&session_settings(Duration::from_secs(60)))
        .await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    client.batch_execute("ANALYZE").await?;
    let author = one_text(
        &client,
        "SELECT encode(pubkey, 'hex') FROM events GROUP BY pubkey ORDER BY count(*) DESC LIMIT 1",
    )
    .await?;
    let authors: Vec<String> = client
        .query("SELECT encode(pubkey, 'hex') FROM events GROUP BY pubkey ORDER BY count(*) DESC LIMIT 20", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ids: Vec<String> = client
        .query(
            "SELECT encode(id, 'hex') FROM events TABLESAMPLE SYSTEM (1) LIMIT 50",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let e_tag = one_text(&client, "SELECT value FROM event_tags WHERE name = 'e' GROUP BY value ORDER BY count(*) DESC LIMIT 1").await?;
    let p_tag = one_text(
        &client,
        "SELECT value FROM event_tags WHERE name = 'p' AND length(value) = 64 GROUP BY value ORDER BY count(*) DESC LIMIT 1",
    )
    .await?;
    let (newest, d_tag): (i64, String) = {
        let row = client
            .query_one("SELECT created_at, d_tag FROM events WHERE kind = 30023 ORDER BY created_at DESC LIMIT 1", &[])
            .await?;
        (row.get(0), row.get(1))
    };
    let article_author = one_text(
        &client,
        "SELECT encode(pubkey, 'hex') FROM events WHERE kind = 30023 ORDER BY created_at DESC LIMIT 1",
    )
    .await?;
    let shapes = [
        ("ids, a batch of 50", json!({"ids": ids, "limit": 50})),
        (
            "authors + kinds, limit 50",
            json!({"authors": [author], "kinds": [1], "limit": 50}),
        ),
        (
            "20 authors (a home feed), limit 100",
            json!({"authors": authors, "kinds": [1, 30023], "limit": 100}),
        ),
        ("kinds, limit 100", json!({"kinds": [1], "limit": 100})),
        (
            "#e (reactions to a note), limit 50",
            json!({"#e": [e_tag], "kinds": [7], "limit": 50}),
        ),
        (
            "#p (mentions of a key), limit 50",
            json!({"#p": [p_tag], "limit": 50}),
        ),
        (
            "#t (a topic), limit 50",
            json!({"#t": ["rust"], "limit": 50}),
        ),
        (
            "a time window, limit 100",
            json!({"since": newest - 3600, "until": newest, "limit": 100}),
        ),
        (
            "an address (kind + author + #d)",
            json!({"kinds": [30023], "authors": [article_author], "#d": [d_tag], "limit": 1}),
        ),
        (
            "search (two words, few matches), limit 50",
            json!({"search": "author 42", "limit": 50}),
        ),
        (
            "search (a word in most events), limit 50",
            json!({"search": "starling", "limit": 50}),
        ),
    ];
    println!("Events in the table: {count}\n");
    let now = starling::policy::now();
    let mut results = Vec::new();
    for (name, filter) in shapes {
        let filter =
            Filter::parse(&filter.to_string()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let (text, q) = sql::select(&filter, None, filter.limit.unwrap_or(500) as usize, now);
        // As the store runs them: searches with plans for their values, the rest generic.
        let plans = if filter.search.is_some() {
            "force_custom_plan"
        } else {
            "force_generic_plan"
        };
        client
            .batch_execute(&format!("SET plan_cache_mode = {plans}"))
            .await?;
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {text}"), &q.refs())
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let statement = client.prepare(&text).await?;
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            rows = client.query(&statement, &q.refs()).await?.len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        let seq_scan = plan.iter().any(|l| l.contains("Seq Scan on events"));
        println!("### {name}\n");
        println!(
            "{rows} rows; p50 {:.2} ms, p99 {:.2} ms over {} runs; sequential scan of events: {}\n",
            at(0.5),
            at(0.99),
            args.runs,
            if seq_scan { "YES" } else { "no" }
        );
        println!("```\n{}\n```\n", plan.join("\n"));
        results.push(json!({
            "shape": name,
            "rows": rows,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "sequential_scan": seq_scan,
            "plan": plan,
        }));
    }
    crate::report::of("explain", args, json!({"events": count, "shapes": results}))
}
