//! What a connection does with NIP-42 `AUTH`: the checks of the event, then its signature
//! in the verifier's turn; the pubkey counts as authenticated once `OK true` is sent.

use std::sync::Arc;

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use opentelemetry::KeyValue;

use super::Connection;
use crate::{
    nostr::{Event, message::relay},
    policy::{self, Strike},
};

impl Connection {
    /// NIP-42: checks an `AUTH` event against this connection's challenge and the relay's
    /// URLs, then its signature in the verifier's turn; the pubkey counts as authenticated
    /// once `OK true` is sent.
    pub(super) fn on_auth(&mut self, event: Event, ctx: &mut Context<Self>) {
        let id = event.id_hex();
        let urls = policy::auth::relay_urls(self.node.config(), self.peer.host.as_deref());
        let challenge = crate::nostr::hex::encode(&self.challenge);
        let checked = policy::auth::check_auth(&event, &challenge, &urls, policy::now());
        if let Err(reason) = checked {
            self.count_auth("invalid");
            self.send(relay::ok(&id, false, &reason.to_string()));
            return self.strike(Strike::Invalid, ctx);
        }
        let known = self.authed.contains(&event.pubkey);
        let most = self.node.config().max_auth_pubkeys_per_connection;
        if !known && self.authed.len() >= most {
            self.count_auth("restricted");
            let why = format!("restricted: at most {most} pubkeys per connection");
            self.send(relay::ok(&id, false, &why));
            return self.strike(Strike::Refused, ctx);
        }
        let permit = self.gate.enter();
        let node = Arc::clone(&self.node);
        let source = self.peer.admission.source;
        let verified = async move { node.verify(source, event).await };
        ctx.spawn(verified.into_actor(self).map(move |verified, conn, ctx| {
            drop(permit);
            match verified {
                Ok(verified) => {
                    let pubkey = verified.event.pubkey;
                    if !conn.authed.contains(&pubkey) {
                        conn.authed.push(pubkey);
                    }
                    conn.count_auth("accepted");
                    conn.send(relay::ok(&id, true, ""));
                }
                Err(error) => {
                    conn.count_auth("forged");
                    let reason = crate::nostr::Reason::from(error);
                    conn.send(relay::ok(&id, false, &reason.to_string()));
                    conn.strike(Strike::Forged, ctx);
                }
            }
        }));
    }

    fn count_auth(&self, outcome: &'static str) {
        let label = KeyValue::new("outcome", outcome);
        self.node.metrics().auth.add(1, &[label]);
    }
}
