//! How the layers of settings become one [`Config`]: the TOML file fills in what neither a
//! flag nor the environment set, then the result is checked; and the values other settings
//! are derived into.

use std::{path::Path, sync::OnceLock};

use anyhow::Context;
use clap::{ArgMatches, parser::ValueSource};

use super::Config;
use crate::proxy::ProxyHeader;

impl Config {
    /// The configuration from defaults, environment and flags (`matches`), with any key of
    /// the TOML file at `file` filling in what neither flag nor environment set.
    pub fn resolve(
        parsed: Config,
        matches: &ArgMatches,
        file: Option<&Path>,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            None => parsed,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let from_file: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?;
                let mut merged = toml::Table::try_from(&parsed).context("encoding settings")?;
                for (key, value) in from_file {
                    let explicit = matches!(
                        matches
                            .try_get_raw(&key)
                            .ok()
                            .and_then(|_| matches.value_source(&key)),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    );
                    if !explicit {
                        merged.insert(key, value);
                    }
                }
                merged
                    .try_into()
                    .with_context(|| format!("in config file {}", path.display()))?
            }
        };
        config.validate()?;
        if config.workers == Some(0) {
            config.workers = None;
        }
        config.default_limit = config.default_limit.min(config.max_limit);
        Ok(config)
    }

    /// The header trusted proxies write the client's address in: the one set, or
    /// `X-Forwarded-For`.
    pub fn proxy_header(&self) -> ProxyHeader {
        self.proxy_header.unwrap_or(ProxyHeader::XForwardedFor)
    }

    /// Store queries the node runs at once.
    pub fn concurrent_queries(&self) -> usize {
        match self.max_concurrent_queries {
            0 => cores(),
            n => n,
        }
    }

    /// Store queries one connection runs at once: `max_queries_per_connection`, but never
    /// more than half of the node's places (at least one), so that one connection's
    /// statements cannot hold every place while others wait.
    pub fn queries_per_connection(&self) -> usize {
        let half = (self.concurrent_queries() / 2).max(1);
        self.max_queries_per_connection.min(half)
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| cores().max(2))
    }
}

/// The cores this process may use, read once: the standard library reads the cgroup's
/// files for it each time, and every connection's start asks (its share of the query
/// places), which under a connection flood cost 9% of the relay's CPU.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_never_holds_half_of_the_nodes_query_places() {
        let queries = |options: &[&str]| Config::from_args(options).queries_per_connection();
        assert_eq!(queries(&["--max-concurrent-queries", "2"]), 1);
        assert_eq!(queries(&["--max-concurrent-queries", "1"]), 1);
        assert_eq!(queries(&["--max-concurrent-queries", "8"]), 2);
        let flag = [
            "--max-concurrent-queries",
            "8",
            "--max-queries-per-connection",
            "6",
        ];
        assert_eq!(queries(&flag), 4);
    }
}
