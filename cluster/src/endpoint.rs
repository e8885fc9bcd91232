//! Where the cluster's Redis is: one server (`redis://`, or `rediss://` for TLS), or the
//! master that Redis Sentinel names (`redis+sentinel://` or `rediss+sentinel://`), asked
//! again on every connection so that connections follow a failover.
//!
//! A Sentinel URL lists the sentinels and names the master, with the master's credentials
//! and the sentinels' own (see [`crate::sentinel_url`]). With `rediss+sentinel://` both the
//! sentinels and the master are reached over TLS.

use std::sync::Arc;

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, RedisResult, TlsCertificates,
    TlsMode,
    aio::{MultiplexedConnection, PubSub},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::Mutex;

use crate::{
    InvalidUrl,
    sentinel_url::{Credentials, sentinel_parts},
};

/// Longest wait for Redis to connect or answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// How to reach the cluster's Redis: its URL and, for TLS, the PEM contents of a CA to
/// trust instead of the system's roots and of a client certificate and key to present.
#[derive(Debug, Clone, Default)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, `redis+sentinel://` or `rediss+sentinel://`.
    pub url: String,
    /// Trusted roots (PEM), for TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and key (PEM), for TLS with client authentication.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Makes clients for the cluster's Redis (and knows whether it is reached over TLS); cheap
/// to clone.
#[derive(Clone)]
pub struct RedisEndpoint {
    target: Arc<Target>,
    tls: bool,
}

enum Target {
    Direct(Client),
    Sentinel(Mutex<SentinelClient>),
}

impl RedisEndpoint {
    /// Reads `settings`; no connection is made yet.
    pub fn new(settings: &RedisSettings) -> Result<Self, InvalidUrl> {
        let invalid = |e: redis::RedisError| InvalidUrl(e.to_string());
        let certificates = || TlsCertificates {
            client_tls: settings
                .client_identity
                .as_ref()
                .map(|(cert, key)| ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: settings.ca_pem.clone(),
        };
        let custom_tls = settings.ca_pem.is_some() || settings.client_identity.is_some();
        let url = settings.url.as_str();
        let target = match sentinel_parts(url)? {
            None if custom_tls => {
                if !url.starts_with("rediss://") {
                    return Err(InvalidUrl(
                        "a CA or client certificate for Redis needs a rediss:// URL".into(),
                    ));
                }
                Target::Direct(Client::build_with_tls(url, certificates()).map_err(invalid)?)
            }
            None => Target::Direct(Client::open(url).map_err(invalid)?),
            Some(parts) => {
                let addrs = parts.hosts.iter().map(|(host, port)| {
                    if parts.tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut builder =
                    SentinelClientBuilder::new(addrs, &parts.master, SentinelServerType::Master)
                        .map_err(invalid)?;
                if parts.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if custom_tls {
                        builder = builder
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                } else if custom_tls {
                    return Err(InvalidUrl(
                        "a CA or client certificate for Redis needs a rediss+sentinel:// URL"
                            .into(),
                    ));
                }
                let Credentials { username, password } = parts.master_auth;
                if let Some(username) = username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_redis_password(password);
                }
                let Credentials { username, password } = parts.sentinel_auth;
                if let Some(username) = username {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if let Some(db) = parts.db {
                    builder = builder.set_client_to_redis_db(db);
                }
                Target::Sentinel(Mutex::new(builder.build().map_err(invalid)?))
            }
        };
        let tls = url.starts_with("rediss");
        Ok(Self {
            target: Arc::new(target),
            tls,
        })
    }

    /// A client for the server to use now: the one server, or the master the sentinels name
    /// at this moment.
    pub async fn client(&self) -> RedisResult<Client> {
        match &*self.target {
            Target::Direct(client) => Ok(client.clone()),
            Target::Sentinel(client) => client.lock().await.async_get_client().await,
        }
    }

    /// A connection to the server to use now, made within [`TIMEOUT`] (and the sentinels
    /// asked within as long again); its commands time out after [`TIMEOUT`] too.
    pub async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connecting = async {
            self.client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        tokio::time::timeout(TIMEOUT * 2, connecting)
            .await
            .map_err(|_| timed_out())?
    }

    /// A dedicated pub/sub connection to the server to use now, within twice [`TIMEOUT`].
    pub async fn pubsub(&self) -> RedisResult<PubSub> {
        let connecting = async { self.client().await?.get_async_pubsub().await };
        tokio::time::timeout(TIMEOUT * 2, connecting)
            .await
            .map_err(|_| timed_out())?
    }

    /// Connects once and sends `PING`, for start-up: a setting the server does not accept
    /// (TLS to a plain server or plain to a TLS one, an unknown CA, a wrong name or
    /// password, a master Sentinel does not know) is an error now; a server that refuses
    /// connections or does not answer in time is not, since the bus connects whenever it is
    /// back. Behind Sentinel, the error names both places credentials go (the redis crate
    /// checks the master it is told of before it hands out a client, so a refusal of either
    /// comes back alike).
    pub async fn probe(&self) -> Result<(), Unusable> {
        let pinged = async {
            let mut connection = self.connect().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        let what = match &*self.target {
            Target::Direct(_) => "connecting to Redis",
            Target::Sentinel(_) => {
                "asking the sentinels for the master and connecting to it (the sentinels' \
                 sentinel_username and sentinel_password, the master's user and password \
                 before @, the master's name, TLS)"
            }
        };
        match pinged.await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.judge(e, what)),
        }
    }

    /// What the start-up error `e` of step `what` means.
    fn judge(&self, e: redis::RedisError, what: &str) -> Unusable {
        if e.is_connection_refusal()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        {
            return Unusable::Unreachable(format!("{what}: {e}"));
        }
        if e.is_io_error() && !self.tls {
            return Unusable::Refused(format!(
                "{what}: {e} (a server that speaks TLS needs a rediss:// URL)"
            ));
        }
        Unusable::Refused(format!("{what}: {e}"))
    }
}

/// Why Redis could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// Down or not answering for now.
    #[error("Redis is not reachable: {0}")]
    Unreachable(String),
    /// Reached, but the connection failed: a setting to fix.
    #[error("Redis refused the connection: {0}")]
    Refused(String),
}
