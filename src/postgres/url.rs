//! Postgres URLs as hotchan reads them: what tokio-postgres parses, plus `sslmode` and
//! `sslrootcert` (and `PGSSLMODE`, `PGSSLROOTCERT`) as libpq reads them.

use std::fmt;

/// A parsed Postgres URL. Its `Debug` form hides the password.
#[derive(Clone)]
pub struct DatabaseUrl(pub tokio_postgres::Config, pub PostgresTls);

/// The URL's `sslmode` and `sslrootcert` (or `PGSSLMODE` and `PGSSLROOTCERT`), which
/// tokio-postgres does not read in full: see [`crate::tls`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTls {
    pub mode: crate::tls::SslMode,
    pub root_cert: Option<crate::tls::Roots>,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("hosts", &self.0.get_hosts())
            .field("ports", &self.0.get_ports())
            .field("user", &self.0.get_user())
            .field("dbname", &self.0.get_dbname())
            .field("tls", &self.1)
            .finish_non_exhaustive()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query; the rest is left for
/// tokio-postgres. Values are percent-decoded only for `%2F` and `%20`, which is what a
/// path needs in practice.
fn take_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None, None);
    };
    let (mut mode, mut root) = (None, None);
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = Some(v.to_owned());
                false
            }
            Some(("sslrootcert", v)) => {
                root = Some(
                    v.replace("%2F", "/")
                        .replace("%2f", "/")
                        .replace("%20", " "),
                );
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, mode, root)
}

/// Parses `--database-url`; the error says what is wrong with it.
pub fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    let (rest, mode, root) = take_tls_params(s);
    let mode = mode.or_else(|| std::env::var("PGSSLMODE").ok());
    let root = root.or_else(|| std::env::var("PGSSLROOTCERT").ok());
    let tls = PostgresTls {
        mode: mode.as_deref().map_or(Ok(Default::default()), str::parse)?,
        root_cert: root.map(|r| match r.as_str() {
            "system" => crate::tls::Roots::System,
            path => crate::tls::Roots::File(path.into()),
        }),
    };
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("not a Postgres URL: {e}"))?;
    config.ssl_mode(match tls.mode {
        crate::tls::SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        crate::tls::SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if config.get_user().is_none() {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "postgres".into());
        config.user(user);
    }
    if config.get_dbname().is_none() {
        config.dbname("hotchan");
    }
    Ok(DatabaseUrl(config, tls))
}
