//! Sentinel URLs: `redis+sentinel://[user:password@]host1:26379,host2:26379/master[/db]`
//! `[?sentinel_username=…&sentinel_password=…]`, or `rediss+sentinel://` for TLS to the
//! sentinels and the master. The credentials before `@` are the master's (and its
//! replicas'); those in the query are the sentinels' own (their `requirepass`, or an ACL
//! user). Every credential is percent-decoded, so any byte can be written.

use percent_encoding::percent_decode_str;

use crate::InvalidUrl;

/// The parts of a Sentinel URL.
#[derive(Debug, PartialEq, Eq)]
pub struct SentinelParts {
    /// `rediss+sentinel://`: TLS to the sentinels and the master.
    pub tls: bool,
    /// The sentinels, host and port.
    pub hosts: Vec<(String, u16)>,
    /// The master's name in Sentinel.
    pub master: String,
    /// How to log in to the master.
    pub master_auth: Credentials,
    /// How to log in to the sentinels.
    pub sentinel_auth: Credentials,
    /// The database number on the master.
    pub db: Option<i64>,
}

/// A user name and a password, each optional (a password alone is the `default` user's).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user.
    pub username: Option<String>,
    /// The password.
    pub password: Option<String>,
}

/// The parts of `url` when it is a Sentinel URL; `None` for a plain Redis URL.
pub fn sentinel_parts(url: &str) -> Result<Option<SentinelParts>, InvalidUrl> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
        (true, rest)
    } else {
        return Ok(None);
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| invalid("no master name"))?;
    let (master_auth, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => {
            let (username, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            let master_auth = Credentials {
                username: decoded(username, "user name")?,
                password: decoded(password, "password")?,
            };
            (master_auth, hosts)
        }
        None => (Credentials::default(), authority),
    };
    let hosts = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
            let port = port.parse::<u16>().map_err(|_| invalid("a bad port"))?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() {
                return Err(invalid("an empty host"));
            }
            Ok((name.to_string(), port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut path = path.trim_end_matches('/').split('/');
    let master = path
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("no master name"))?;
    let db = match path.next() {
        Some(db) => Some(
            db.parse::<i64>()
                .map_err(|_| invalid("a bad database number"))?,
        ),
        None => None,
    };
    let mut sentinel_auth = Credentials::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sentinel_username" => sentinel_auth.username = decoded(value, "sentinel_username")?,
            "sentinel_password" => sentinel_auth.password = decoded(value, "sentinel_password")?,
            other => {
                return Err(invalid(&format!(
                    "an unknown parameter `{other}` (sentinel_username and sentinel_password are known)"
                )));
            }
        }
    }
    Ok(Some(SentinelParts {
        tls,
        hosts,
        master: master.to_string(),
        master_auth,
        sentinel_auth,
        db,
    }))
}

fn invalid(why: &str) -> InvalidUrl {
    InvalidUrl(format!(
        "{why} in the Sentinel URL (redis+sentinel://[user:password@]host:port,host:port/master\
         [?sentinel_username=…&sentinel_password=…])"
    ))
}

/// `text` percent-decoded; `None` when empty.
fn decoded(text: &str, what: &str) -> Result<Option<String>, InvalidUrl> {
    let text = percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| invalid(&format!("a {what} that is not UTF-8 once percent-decoded")))?;
    Ok(Some(text.into_owned()).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_sentinels_master_and_credentials() {
        let parts = sentinel_parts("redis+sentinel://:secret@s1:26379,s2:26380/relay/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            parts,
            SentinelParts {
                tls: false,
                hosts: vec![("s1".into(), 26379), ("s2".into(), 26380)],
                master: "relay".into(),
                master_auth: Credentials {
                    username: None,
                    password: Some("secret".into()),
                },
                sentinel_auth: Credentials::default(),
                db: Some(2),
            }
        );
        let parts = sentinel_parts("rediss+sentinel://s1/mymaster")
            .unwrap()
            .unwrap();
        assert!(parts.tls);
        assert_eq!(parts.hosts, vec![("s1".into(), 26379)]);
        assert_eq!(parts.master_auth, Credentials::default());
        assert_eq!(sentinel_parts("redis://localhost:6379/").unwrap(), None);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let parts = sentinel_parts(
            "redis+sentinel://relay%40x:p%3Ass%2Fw@s1/m?sentinel_username=watch&sentinel_password=a%26b%3Dc",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            parts.master_auth,
            Credentials {
                username: Some("relay@x".into()),
                password: Some("p:ss/w".into()),
            }
        );
        assert_eq!(
            parts.sentinel_auth,
            Credentials {
                username: Some("watch".into()),
                password: Some("a&b=c".into()),
            }
        );
        assert_eq!(parts.master, "m");
    }

    #[test]
    fn bad_sentinel_urls_are_refused() {
        for url in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:port/m",
            "redis+sentinel://:1/m",
            "redis+sentinel://s1/m/x",
            "redis+sentinel://s1/m?password=x",
            "redis+sentinel://:%ff@s1/m",
        ] {
            assert!(sentinel_parts(url).is_err(), "{url}");
        }
    }
}
