//! What an event from outside the relay's sockets (`starling import`, `starling sync`)
//! must pass before it is stored: what a client's event passes (shape, id, signature,
//! limits, expiration, a request to vanish naming this relay), the operator's rules
//! (configured and stored), and the write-policy plugin, told where the event came from.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    config::Config,
    nostr::{Event, KindClass, Prefix, Reason, VerifiedEvent},
    plugin::{Decision, SourceType, WritePolicy},
    policy::{self, rules::Rules},
    store::EventStore,
};

/// The checks, ready to apply.
pub struct Intake {
    config: Config,
    rules: Rules,
    plugin: Option<Arc<WritePolicy>>,
}

impl Intake {
    /// The checks `config` sets, with the rules `store` keeps, and the plugin running.
    pub async fn new(config: &Config, store: &dyn EventStore) -> anyhow::Result<Self> {
        let stored = store
            .load_policy()
            .await
            .context("reading the stored rules")?;
        let plugin = match &config.write_policy_plugin {
            Some(command) => {
                let view = tokio::sync::watch::channel(starling_cluster::ClusterView {
                    nodes: 1,
                    ..Default::default()
                })
                .1;
                let metrics = Arc::new(crate::metrics::Metrics::new("transfer", view)?);
                let timeout = Duration::from_millis(config.write_policy_timeout_ms.max(1));
                Some(WritePolicy::start(
                    command.clone(),
                    timeout,
                    config.write_policy_on_error,
                    metrics,
                ))
            }
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            rules: Rules::new(config, &stored),
            plugin,
        })
    }

    /// Checks the event `text` that came from `source` (`info`: the file or relay).
    pub async fn judge(
        &self,
        text: &str,
        source: SourceType,
        info: &str,
    ) -> Result<VerifiedEvent, Reason> {
        let event = Event::parse(text)?;
        if event.class() == KindClass::Ephemeral {
            return Err(Reason::invalid("ephemeral events are not stored"));
        }
        let config = &self.config;
        policy::check_event(config, &event, text.len(), policy::now())?;
        policy::auth::check_vanish(&event, || policy::auth::public_urls(config))?;
        self.rules.check_event(&event)?;
        let verified = VerifiedEvent::verify(event)?;
        let Some(plugin) = &self.plugin else {
            return Ok(verified);
        };
        match plugin.judge(&verified, source, info, None).await {
            Decision::Accept => Ok(verified),
            Decision::Reject(reason) => Err(reason),
            Decision::ShadowReject => Err(Reason::new(
                Prefix::Blocked,
                "shadow-rejected by the write policy",
            )),
        }
    }
}
