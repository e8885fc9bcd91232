//! NIP-11: the relay information document, and a small page for people in browsers.

use serde_json::{Value, json};

use crate::node::Node;

/// The NIPs this relay implements on either store, each covered by the end-to-end tests.
pub const SUPPORTED_NIPS: &[u16] = &[1, 9, 11, 13, 40, 42, 45, 50, 62, 70, 77, 86];

/// The NIP-11 document, with the limits actually configured, and under `starling` this
/// node's name and the number of nodes in its cluster.
pub fn document(node: &Node) -> Value {
    let config = node.config();
    let rules = node.rules();
    let mut doc = json!({
        "name": rules.setting("name").unwrap_or(&config.name),
        "description": rules.setting("description").unwrap_or(&config.description),
        "software": env!("CARGO_PKG_REPOSITORY"),
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": SUPPORTED_NIPS,
        "limitation": {
            "max_message_length": config.max_message_bytes,
            "max_subscriptions": config.max_subscriptions,
            "max_filters": config.max_filters,
            "max_limit": config.max_limit,
            "default_limit": config.default_limit,
            "max_subid_length": crate::nostr::message::MAX_SUBSCRIPTION_ID_CHARS,
            "max_event_tags": config.max_event_tags,
            "max_content_length": config.max_content_length,
            "min_pow_difficulty": config.min_pow_difficulty,
            "created_at_upper_limit": config.created_at_upper_limit,
            "auth_required": rules.requires_auth(),
            "payment_required": config.payment_required,
            "restricted_writes": config.min_pow_difficulty > 0
                || config.write_policy_plugin.is_some()
                || rules.restricts_writes(),
        },
    });
    // Limits NIP-11 has no field for.
    let limits = json!({
        "max_event_bytes": config.max_event_bytes,
        "websocket_compression": config.websocket_compression,
        "compression_min_bytes": config.compression_min_bytes,
        "max_tag_value_bytes": config.max_tag_value_bytes,
        "max_connections_per_ip": config.max_connections_per_ip,
        "max_connections_per_minute_per_ip": config.max_connections_per_minute_per_ip,
        "max_connections_burst_per_ip": config.max_connections_burst_per_ip,
        "max_events_per_minute_per_ip": config.max_events_per_minute_per_ip,
        "max_events_per_minute_per_pubkey": config.max_events_per_minute_per_pubkey,
        "max_reqs_per_minute_per_connection": config.max_reqs_per_minute_per_connection,
        "max_reqs_burst_per_connection": config.max_reqs_burst_per_connection,
        "max_reqs_per_minute_per_ip": config.max_reqs_per_minute_per_ip,
        "max_reqs_burst_per_ip": config.max_reqs_burst_per_ip,
        "max_filter_bytes_per_connection": config.max_filter_bytes_per_connection,
        "max_queries_per_connection": config.queries_per_connection(),
        "query_ms_per_minute_per_connection": config.query_ms_per_minute_per_connection,
        "query_ms_per_minute_per_ip": config.query_ms_per_minute_per_ip,
        "max_strikes_per_connection": config.max_strikes_per_connection,
        "max_strikes_per_ip": config.max_strikes_per_ip,
        "strike_penalty_seconds": config.strike_penalty_seconds,
        "strike_penalty_pace_ms": config.strike_penalty_pace_ms,
        "max_pings_per_minute_per_connection": config.max_pings_per_minute_per_connection,
        "max_ping_burst": config.max_ping_burst,
        "max_auth_pubkeys_per_connection": config.max_auth_pubkeys_per_connection,
        "max_negentropy_records": config.max_negentropy_records,
        "max_negentropy_sessions": config.max_negentropy_sessions,
        "private_kinds": config.private_kinds,
        "write_policy_timeout_ms": config.write_policy_plugin.as_ref().map(|_| config.write_policy_timeout_ms),
    });
    doc["starling"] = json!({
        "node": &**node.id(),
        "nodes": node.cluster().nodes,
        "limits": limits,
    });
    if let Some(icon) = rules.setting("icon") {
        doc["icon"] = json!(icon);
    }
    if let Some(pubkey) = &config.pubkey {
        doc["pubkey"] = json!(pubkey);
    }
    if let Some(contact) = &config.contact {
        doc["contact"] = json!(contact);
    }
    doc
}

/// A short HTML page for a browser that asked for the relay's address.
pub fn page(node: &Node) -> String {
    let (config, rules) = (node.config(), node.rules());
    let nips = SUPPORTED_NIPS
        .iter()
        .map(|n| format!("{n:02}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title></head><body>\
         <h1>{name}</h1><p>{description}</p>\
         <p>This is a Nostr relay. Connect a Nostr client to this address with <code>ws://</code> or \
         <code>wss://</code>.</p><p>Supported NIPs: {nips}.</p>\
         <p>Powered by Starling {version}.</p></body></html>\n",
        name = escape(rules.setting("name").unwrap_or(&config.name)),
        description = escape(rules.setting("description").unwrap_or(&config.description)),
        version = env!("CARGO_PKG_VERSION"),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
