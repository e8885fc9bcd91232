//! One `Config` for the whole relay, read from defaults, a TOML file (`--config`),
//! `STARLING_*` environment variables and command-line flags, each overriding the one before.
//!
//! Every setting is declared once, on [`Config`]: its doc comment is the `--help` text, its
//! field name is the TOML key, `--kebab-case` the flag and `STARLING_UPPER_CASE` the variable.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

mod choices;
mod resolve;
mod validate;

pub use choices::{LogFormat, MembersOnly, OnError};

use crate::proxy::{Cidr, ProxyHeader};

/// Every setting of a relay node.
#[derive(clap::Args, Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on for WebSocket and HTTP.
    #[arg(long, env = "STARLING_BIND", default_value = "127.0.0.1:7777")]
    pub bind: SocketAddr,

    /// Serve `/metrics` on this address and port instead of the relay's own.
    #[arg(long, env = "STARLING_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Directory of the embedded store.
    #[arg(long, env = "STARLING_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (postgres://user:password@host:port/db); selects the PostgreSQL store.
    /// Without it the relay runs on the embedded store in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "STARLING_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Seconds to wait for a PostgreSQL connection, new or from the pool.
    #[arg(
        long,
        env = "STARLING_DATABASE_CONNECT_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub database_connect_timeout_seconds: u64,

    /// Longest a store statement may run, in milliseconds (PostgreSQL; and SQLite queries,
    /// which are interrupted past it).
    #[arg(
        long,
        env = "STARLING_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub database_statement_timeout_ms: u64,

    /// Megabytes of event JSON the PostgreSQL store keeps in memory for queries (0: none).
    #[arg(long, env = "STARLING_DATABASE_JSON_CACHE_MB", default_value_t = 256)]
    pub database_json_cache_mb: usize,

    /// Prepared statements each pooled PostgreSQL connection keeps; past it, its cache is
    /// emptied, so that filters of many shapes do not grow it (and the server's memory)
    /// without end.
    #[arg(long, env = "STARLING_DATABASE_STATEMENT_CACHE", default_value_t = 256)]
    pub database_statement_cache: usize,

    /// Do not apply pending PostgreSQL migrations at start-up (run `starling migrate`).
    #[arg(long, env = "STARLING_SKIP_MIGRATIONS")]
    #[serde(default)]
    pub skip_migrations: bool,

    /// Redis URL; joins this node to a cluster over Redis pub/sub: redis://host:port,
    /// rediss://host:port (TLS), or redis+sentinel://host:port,host:port/master (the master
    /// Redis Sentinel names, followed through failovers; rediss+sentinel:// for TLS; the
    /// master's user:password@ before the hosts, the sentinels' own as ?sentinel_username=
    /// and &sentinel_password=, percent-encoded).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates to trust for TLS to Redis (default: the system's).
    #[arg(long, env = "STARLING_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM file of the client certificate to present to Redis over TLS; give
    /// --redis-key-file with it.
    #[arg(long, env = "STARLING_REDIS_CERT_FILE", requires = "redis_key_file")]
    pub redis_cert_file: Option<PathBuf>,

    /// PEM file of the private key of --redis-cert-file.
    #[arg(long, env = "STARLING_REDIS_KEY_FILE", requires = "redis_cert_file")]
    pub redis_key_file: Option<PathBuf>,

    /// Name of the cluster on Redis: its nodes share `{cluster}:events` and `{cluster}:nodes`,
    /// so several clusters can use one Redis.
    #[arg(long, env = "STARLING_CLUSTER", default_value = "starling")]
    pub cluster: String,

    /// Address ranges (CIDRs, comma-separated) of the proxies and load balancers in front of
    /// the relay. From these peers only, the client's address is read from the header
    /// --proxy-header names, and from the PROXY protocol when --proxy-protocol is on; what
    /// other peers send is ignored.
    #[arg(long, env = "STARLING_TRUSTED_PROXIES", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,

    /// The header trusted proxies write the client's address in (default:
    /// x-forwarded-for); it is read only from --trusted-proxies and needs them.
    #[arg(long, env = "STARLING_PROXY_HEADER")]
    pub proxy_header: Option<ProxyHeader>,

    /// Connections from --trusted-proxies start with a PROXY protocol header (v1 or v2, as
    /// HAProxy's `send-proxy` and AWS NLB send it), which names the client.
    #[arg(long, env = "STARLING_PROXY_PROTOCOL")]
    #[serde(default)]
    pub proxy_protocol: bool,

    /// This node's name in the cluster (default: the host name and the port it listens on).
    #[arg(long, env = "STARLING_NODE_ID")]
    pub node_id: Option<String>,

    /// Log format on standard error: `text` or `json` (one object a line).
    #[arg(long, env = "STARLING_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (`info`, `debug`, `starling=debug,warn`); RUST_LOG overrides it.
    #[arg(long, env = "STARLING_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Worker threads serving connections (default: one per CPU core).
    #[arg(long, env = "STARLING_WORKERS")]
    pub workers: Option<usize>,

    /// Relay name in the NIP-11 document.
    #[arg(long, env = "STARLING_NAME", default_value = "Starling")]
    pub name: String,

    /// Relay description in the NIP-11 document.
    #[arg(
        long,
        env = "STARLING_DESCRIPTION",
        default_value = "A Starling Nostr relay"
    )]
    pub description: String,

    /// The relay's public URLs (wss://relay.example.com, comma-separated), which NIP-42
    /// AUTH events must name; without any, the URL a client reached (its Host header).
    #[arg(long, env = "STARLING_PUBLIC_URL", value_delimiter = ',')]
    #[serde(default)]
    pub public_url: Vec<String>,

    /// Pubkeys one connection may authenticate as (NIP-42).
    #[arg(
        long,
        env = "STARLING_MAX_AUTH_PUBKEYS_PER_CONNECTION",
        default_value_t = 16
    )]
    pub max_auth_pubkeys_per_connection: usize,

    /// Most events a NIP-77 reconciliation may cover (more: `NEG-ERR "blocked: …"`).
    #[arg(
        long,
        env = "STARLING_MAX_NEGENTROPY_RECORDS",
        default_value_t = 100_000
    )]
    pub max_negentropy_records: usize,

    /// NIP-77 reconciliations one connection may hold open at once.
    #[arg(long, env = "STARLING_MAX_NEGENTROPY_SESSIONS", default_value_t = 2)]
    pub max_negentropy_sessions: usize,

    /// Kinds served only to a connection authenticated (NIP-42) as their author or as a
    /// pubkey their `p` tags name (comma-separated): direct messages and gift wraps.
    #[arg(
        long,
        env = "STARLING_PRIVATE_KINDS",
        value_delimiter = ',',
        default_values_t = [4u16, 1059]
    )]
    pub private_kinds: Vec<u16>,

    /// Pubkeys (hex, comma-separated) allowed to publish; when any are listed, only they may
    /// (a paid or invite-only relay), and they are its members.
    #[arg(long, env = "STARLING_ALLOWED_PUBKEYS", value_delimiter = ',')]
    #[serde(default)]
    pub allowed_pubkeys: Vec<String>,

    /// Pubkeys (hex, comma-separated) that may not publish.
    #[arg(long, env = "STARLING_BANNED_PUBKEYS", value_delimiter = ',')]
    #[serde(default)]
    pub banned_pubkeys: Vec<String>,

    /// Kinds (comma-separated) accepted; when any are listed, only they are.
    #[arg(long, env = "STARLING_ALLOWED_KINDS", value_delimiter = ',')]
    #[serde(default)]
    pub allowed_kinds: Vec<u16>,

    /// Kinds (comma-separated) refused.
    #[arg(long, env = "STARLING_BANNED_KINDS", value_delimiter = ',')]
    #[serde(default)]
    pub banned_kinds: Vec<u16>,

    /// Client address ranges (CIDRs, comma-separated) that may not publish.
    #[arg(long, env = "STARLING_BLOCKED_IPS", value_delimiter = ',')]
    #[serde(default)]
    pub blocked_ips: Vec<Cidr>,

    /// A private relay: `write`, `read` or `both` need a connection authenticated (NIP-42)
    /// as a member (an allowed pubkey; without an allow list, anyone authenticated).
    #[arg(long, env = "STARLING_MEMBERS_ONLY", default_value = "off")]
    pub members_only: MembersOnly,

    /// Say in NIP-11 that writing here is paid for (`payment_required`).
    #[arg(long, env = "STARLING_PAYMENT_REQUIRED")]
    #[serde(default)]
    pub payment_required: bool,

    /// Pubkeys (hex, comma-separated) that may call the NIP-86 management API.
    #[arg(long, env = "STARLING_ADMIN_PUBKEYS", value_delimiter = ',')]
    #[serde(default)]
    pub admin_pubkeys: Vec<String>,

    /// Seconds the bus may hear nothing (not even heartbeats) before its link counts as dead.
    #[arg(long, env = "STARLING_BUS_TIMEOUT_SECONDS", default_value_t = 5)]
    pub bus_timeout_seconds: u64,

    /// Seconds between checks of the stored rules' version (changes also arrive over the bus).
    #[arg(long, env = "STARLING_POLICY_RELOAD_SECONDS", default_value_t = 5)]
    pub policy_reload_seconds: u64,

    /// Administrator's public key (64 lowercase hex) in the NIP-11 document.
    #[arg(long, env = "STARLING_PUBKEY")]
    pub pubkey: Option<String>,

    /// Administrative contact URI (mailto: or https:) in the NIP-11 document.
    #[arg(long, env = "STARLING_CONTACT")]
    pub contact: Option<String>,

    /// Largest WebSocket message accepted, in bytes; larger frames close the connection.
    #[arg(long, env = "STARLING_MAX_MESSAGE_BYTES", default_value_t = 512 * 1024)]
    pub max_message_bytes: usize,

    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it; `false`: never.
    #[arg(long, env = "STARLING_WEBSOCKET_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub websocket_compression: bool,

    /// Text messages shorter than this many bytes are sent uncompressed.
    #[arg(long, env = "STARLING_COMPRESSION_MIN_BYTES", default_value_t = 256)]
    pub compression_min_bytes: usize,

    /// Open subscriptions allowed per connection.
    #[arg(long, env = "STARLING_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Filters allowed in one REQ or COUNT.
    #[arg(long, env = "STARLING_MAX_FILTERS", default_value_t = 16)]
    pub max_filters: usize,

    /// Largest `limit` honoured per filter; larger ones are clamped to it.
    #[arg(long, env = "STARLING_MAX_LIMIT", default_value_t = 5000)]
    pub max_limit: u64,

    /// Events returned per filter when a REQ gives no `limit` (at most max_limit).
    #[arg(long, env = "STARLING_DEFAULT_LIMIT", default_value_t = 500)]
    pub default_limit: u64,

    /// Tags allowed per event.
    #[arg(long, env = "STARLING_MAX_EVENT_TAGS", default_value_t = 2000)]
    pub max_event_tags: usize,

    /// Characters (Unicode scalar values) allowed in an event's content.
    #[arg(long, env = "STARLING_MAX_CONTENT_LENGTH", default_value_t = 102_400)]
    pub max_content_length: usize,

    /// How far in the future an event's created_at may be, in seconds.
    #[arg(long, env = "STARLING_CREATED_AT_UPPER_LIMIT", default_value_t = 900)]
    pub created_at_upper_limit: u64,

    /// Minimum NIP-13 proof-of-work difficulty (leading zero bits of the id); 0 disables it.
    #[arg(long, env = "STARLING_MIN_POW_DIFFICULTY", default_value_t = 0)]
    pub min_pow_difficulty: u32,

    /// Open connections allowed per client IP address, across the cluster (0: no limit).
    #[arg(long, env = "STARLING_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: u64,

    /// Events accepted per minute per client IP address, across the cluster (0: no limit).
    #[arg(
        long,
        env = "STARLING_MAX_EVENTS_PER_MINUTE_PER_IP",
        default_value_t = 6000
    )]
    pub max_events_per_minute_per_ip: u64,

    /// Events accepted per minute per author, across the cluster (0: no limit).
    #[arg(
        long,
        env = "STARLING_MAX_EVENTS_PER_MINUTE_PER_PUBKEY",
        default_value_t = 6000
    )]
    pub max_events_per_minute_per_pubkey: u64,

    /// REQs and COUNTs per minute per connection, on average (0: no limit).
    #[arg(
        long,
        env = "STARLING_MAX_REQS_PER_MINUTE_PER_CONNECTION",
        default_value_t = 6000
    )]
    pub max_reqs_per_minute_per_connection: u64,

    /// REQs and COUNTs a connection may send at once (a client opening its views) before
    /// `--max-reqs-per-minute-per-connection` paces it.
    #[arg(
        long,
        env = "STARLING_MAX_REQS_BURST_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_reqs_burst_per_connection: u32,

    /// REQs and COUNTs per minute, on average, of one client address over all its
    /// connections on this node, so that a new connection brings no fresh burst (0: no
    /// limit).
    #[arg(
        long,
        env = "STARLING_MAX_REQS_PER_MINUTE_PER_IP",
        default_value_t = 30_000
    )]
    pub max_reqs_per_minute_per_ip: u64,

    /// REQs and COUNTs the connections of one client address may send at once on this node
    /// before `--max-reqs-per-minute-per-ip` paces them.
    #[arg(long, env = "STARLING_MAX_REQS_BURST_PER_IP", default_value_t = 500)]
    pub max_reqs_burst_per_ip: u32,

    /// New WebSocket connections per minute, on average, from one client address on this
    /// node (0: no limit); past it, upgrades get HTTP 429.
    #[arg(
        long,
        env = "STARLING_MAX_CONNECTIONS_PER_MINUTE_PER_IP",
        default_value_t = 600
    )]
    pub max_connections_per_minute_per_ip: u64,

    /// New WebSocket connections one client address may open at once on this node before
    /// `--max-connections-per-minute-per-ip` paces them.
    #[arg(
        long,
        env = "STARLING_MAX_CONNECTIONS_BURST_PER_IP",
        default_value_t = 100
    )]
    pub max_connections_burst_per_ip: u32,

    /// Open WebSocket connections this node holds; past it, upgrades get HTTP 503.
    #[arg(long, env = "STARLING_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Open subscriptions this node holds, over all its connections.
    #[arg(
        long,
        env = "STARLING_MAX_NODE_SUBSCRIPTIONS",
        default_value_t = 200_000
    )]
    pub max_node_subscriptions: usize,

    /// Bytes of filters the open subscriptions of one connection may hold in the live index.
    #[arg(
        long,
        env = "STARLING_MAX_FILTER_BYTES_PER_CONNECTION",
        default_value_t = 256 * 1024
    )]
    pub max_filter_bytes_per_connection: usize,

    /// Largest event, in bytes of JSON as the client sent it.
    #[arg(long, env = "STARLING_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,

    /// Longest string in an event's tags (name or value), in bytes.
    #[arg(long, env = "STARLING_MAX_TAG_VALUE_BYTES", default_value_t = 1024)]
    pub max_tag_value_bytes: usize,

    /// Store queries one connection may have running at once, and never more than half of
    /// the node's (its subscriptions and counts take turns beyond it).
    #[arg(long, env = "STARLING_MAX_QUERIES_PER_CONNECTION", default_value_t = 2)]
    pub max_queries_per_connection: usize,

    /// Store queries this node runs at once, over all connections, served to addresses and
    /// connections in turn (0: one per CPU core).
    #[arg(long, env = "STARLING_MAX_CONCURRENT_QUERIES", default_value_t = 0)]
    pub max_concurrent_queries: usize,

    /// Milliseconds of store time one connection's queries may take a minute (ten seconds'
    /// worth at once); past it they wait, and a request that would wait long gets
    /// `CLOSED "rate-limited: …"` (0: no limit).
    #[arg(
        long,
        env = "STARLING_QUERY_MS_PER_MINUTE_PER_CONNECTION",
        default_value_t = 3_000
    )]
    pub query_ms_per_minute_per_connection: u64,

    /// Milliseconds of store time the queries of one client address may take a minute, over
    /// all its connections on this node (0: no limit).
    #[arg(
        long,
        env = "STARLING_QUERY_MS_PER_MINUTE_PER_IP",
        default_value_t = 20_000
    )]
    pub query_ms_per_minute_per_ip: u64,

    /// Strikes (malformed messages, forged signatures, events and requests the rules refuse,
    /// rate-limit refusals, ping floods) a connection may collect in a minute before it is
    /// closed (0: no limit).
    #[arg(
        long,
        env = "STARLING_MAX_STRIKES_PER_CONNECTION",
        default_value_t = 50
    )]
    pub max_strikes_per_connection: u32,

    /// Strikes the connections of one client address may collect in a minute before the
    /// address is slowed (0: no limit).
    #[arg(long, env = "STARLING_MAX_STRIKES_PER_IP", default_value_t = 200)]
    pub max_strikes_per_ip: u32,

    /// Seconds an address past its strikes stays slowed: its new connections, and those
    /// with strikes, read one message every --strike-penalty-pace-ms.
    #[arg(long, env = "STARLING_STRIKE_PENALTY_SECONDS", default_value_t = 120)]
    pub strike_penalty_seconds: u64,

    /// Milliseconds between two messages a slowed connection reads (shorter than the idle
    /// timeout, or its pongs could not come in time).
    #[arg(long, env = "STARLING_STRIKE_PENALTY_PACE_MS", default_value_t = 250)]
    pub strike_penalty_pace_ms: u64,

    /// Bytes queued for one client before it counts as not reading and is disconnected.
    #[arg(long, env = "STARLING_MAX_OUTBOUND_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// Requests (events, queries, counts) one connection may have in progress at once;
    /// past this the relay stops reading from that connection until some finish.
    #[arg(
        long,
        env = "STARLING_MAX_PENDING_PER_CONNECTION",
        default_value_t = 32
    )]
    pub max_pending_per_connection: usize,

    /// Most events written to the store in one transaction.
    #[arg(long, env = "STARLING_WRITE_BATCH_SIZE", default_value_t = 500)]
    pub write_batch_size: usize,

    /// Seconds a stopping node (SIGTERM) keeps serving while /readyz says it is draining,
    /// before it closes its connections (code 1001), finishes its writes and exits.
    #[arg(long, env = "STARLING_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,

    /// Seconds between pings the relay sends to each client.
    #[arg(long, env = "STARLING_PING_INTERVAL_SECONDS", default_value_t = 30)]
    pub ping_interval_seconds: u64,

    /// Seconds a client may leave the relay's pings unanswered before it is disconnected
    /// (it is not reading; its own messages and pings do not count).
    #[arg(long, env = "STARLING_IDLE_TIMEOUT_SECONDS", default_value_t = 90)]
    pub idle_timeout_seconds: u64,

    /// Pings a client may send a minute on one connection, past its burst; each one beyond
    /// is a strike (0: no limit).
    #[arg(
        long,
        env = "STARLING_MAX_PINGS_PER_MINUTE_PER_CONNECTION",
        default_value_t = 60
    )]
    pub max_pings_per_minute_per_connection: u32,

    /// Pings a client may send at once on one connection before their rate counts.
    #[arg(long, env = "STARLING_MAX_PING_BURST", default_value_t = 10)]
    pub max_ping_burst: u32,

    /// A write-policy plugin (strfry's protocol: one JSON line in, one out, per new event),
    /// run with `sh -c`; it judges every event that passed the relay's own checks.
    #[arg(long, env = "STARLING_WRITE_POLICY_PLUGIN")]
    pub write_policy_plugin: Option<String>,

    /// Milliseconds the write-policy plugin may take to answer.
    #[arg(long, env = "STARLING_WRITE_POLICY_TIMEOUT_MS", default_value_t = 5000)]
    pub write_policy_timeout_ms: u64,

    /// What happens to an event the plugin did not judge (it is slow, down or answered
    /// something else): `accept`, or `reject` with `error:`.
    #[arg(long, env = "STARLING_WRITE_POLICY_ON_ERROR", default_value = "reject")]
    pub write_policy_on_error: OnError,

    /// Seconds between sweeps that delete expired (NIP-40) events.
    #[arg(long, env = "STARLING_EXPIRATION_SWEEP_SECONDS", default_value_t = 60)]
    pub expiration_sweep_seconds: u64,
}

#[cfg(test)]
impl Config {
    /// The configuration these command-line options give, for unit tests.
    pub fn from_args(options: &[&str]) -> Self {
        use clap::Parser;

        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            config: Config,
        }
        Args::parse_from(std::iter::once("starling").chain(options.iter().copied())).config
    }
}
