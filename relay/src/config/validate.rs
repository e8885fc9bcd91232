//! The checks a configuration must pass before the relay starts; each refusal names the
//! setting.

use anyhow::{Context, bail};

use super::Config;
use crate::nostr::hex;

impl Config {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(pubkey) = &self.pubkey
            && hex::decode::<32>(pubkey).is_none()
        {
            bail!("pubkey must be 64 lowercase hex characters");
        }
        for (name, keys) in [
            ("allowed_pubkeys", &self.allowed_pubkeys),
            ("banned_pubkeys", &self.banned_pubkeys),
            ("admin_pubkeys", &self.admin_pubkeys),
        ] {
            if let Some(bad) = keys.iter().find(|k| hex::decode::<32>(k).is_none()) {
                bail!("{name}: `{bad}` is not a pubkey (64 lowercase hex)");
            }
        }
        for url in &self.public_url {
            crate::nostr::RelayUrl::parse(url).context("public_url")?;
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            bail!(
                "proxy_protocol needs trusted_proxies: the address ranges of the balancers that send the PROXY header"
            );
        }
        if self.proxy_header.is_some() && self.trusted_proxies.is_empty() {
            bail!(
                "proxy_header needs trusted_proxies: the header is read only from the proxies listed there, so without them it does nothing"
            );
        }
        if self.redis_cert_file.is_some() != self.redis_key_file.is_some() {
            bail!("redis_cert_file and redis_key_file go together");
        }
        if self.redis_url.is_none() {
            for (name, set) in [
                ("redis_ca_file", self.redis_ca_file.is_some()),
                ("redis_cert_file", self.redis_cert_file.is_some()),
                ("redis_key_file", self.redis_key_file.is_some()),
            ] {
                if set {
                    bail!(
                        "{name} needs redis_url: it is used only for TLS to the cluster's Redis, and no Redis is set"
                    );
                }
            }
        }
        if self.strike_penalty_pace_ms == 0 {
            bail!(
                "strike_penalty_pace_ms must be at least 1 (to slow no address, set max_strikes_per_ip to 0)"
            );
        }
        if self.strike_penalty_pace_ms >= self.idle_timeout_seconds.saturating_mul(1000) {
            bail!(
                "strike_penalty_pace_ms must be shorter than idle_timeout_seconds: a slowed connection would be closed before it could read the relay's pings"
            );
        }
        if self.max_message_bytes < 1024 {
            bail!("max_message_bytes must be at least 1024");
        }
        for (name, value) in [
            ("max_subscriptions", self.max_subscriptions),
            ("max_filters", self.max_filters),
            (
                "max_pending_per_connection",
                self.max_pending_per_connection,
            ),
            ("write_batch_size", self.write_batch_size),
            ("max_connections", self.max_connections),
            ("max_ping_burst", self.max_ping_burst as usize),
            (
                "max_queries_per_connection",
                self.max_queries_per_connection,
            ),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        Ok(())
    }
}
