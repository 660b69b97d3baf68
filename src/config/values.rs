//! The value types of settings and their parsers: each refuses a bad value with a
//! message that says what it takes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

/// Where the listener binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("a Unix socket address needs a path: unix:/path/to.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("'{s}' is neither HOST:PORT nor unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// A value that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the token must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

/// `--redis-wait-replicas`: a number, or `None` for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReplicas(pub Option<u32>);

pub(super) fn parse_wait_replicas(s: &str) -> Result<WaitReplicas, String> {
    if s == "auto" {
        return Ok(WaitReplicas(None));
    }
    match s.parse::<u32>() {
        Ok(n) if n <= 16 => Ok(WaitReplicas(Some(n))),
        _ => Err("a number of replicas from 0 to 16, or auto".into()),
    }
}

/// A span of time as the feed settings write it: a whole number of days, hours, minutes
/// or seconds (`90d`, `12h`, `30m`, `45s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a duration such as 90d, 12h, 30m or 45s");
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "d" => n.checked_mul(86_400),
            "h" => n.checked_mul(3_600),
            "m" => n.checked_mul(60),
            "s" => Some(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        if seconds == 0 || seconds > 100 * 365 * 86_400 {
            return Err(format!("'{s}' must be from 1s to 100 years"));
        }
        Ok(Span(Duration::from_secs(seconds)))
    }
}

pub(super) fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 64 characters of [A-Za-z0-9_.-]".into())
    }
}

/// A percentage from 0 to 100 (fractions allowed: `0.1`).
pub(super) fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a percentage from 0 to 100")),
    }
}
