//! The command line: the subcommands of the `hotchan` binary and their settings. Only
//! `main.rs` reads it; the library takes the settings types of [`crate::config`] and
//! [`crate::bench`].

use clap::{Parser, Subcommand};

use crate::config::{DatabaseSettings, FeedCleanupSettings, MigrateSettings, Settings};

/// `hotchan`: a Redis-fronted hot-channel cache for chat backends.
#[derive(Debug, Parser)]
#[command(name = "hotchan", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the HTTP API.
    Serve(Box<Settings>),
    /// Create the database when it is missing and apply pending migrations, then exit;
    /// with --partition-messages, also convert `messages` into hash partitions.
    Migrate(MigrateSettings),
    /// Load the small demo dataset when the database holds no channel yet, then exit.
    SeedDemo(DatabaseSettings),
    /// Drop the feed partitions whose events are all past the retention, make the next
    /// ones, then exit (`hotchan serve` does this periodically).
    FeedCleanup(FeedCleanupSettings),
    /// Benchmark --cache off, redis and full side by side, and study hit rates.
    Bench(Box<crate::bench::BenchSettings>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_the_setting() {
        let err = Cli::try_parse_from(["hotchan", "serve", "--pg-pool-size", "0"]).unwrap_err();
        assert!(err.to_string().contains("--pg-pool-size"), "{err}");
        let err = Cli::try_parse_from(["hotchan", "serve", "--cache", "sometimes"]).unwrap_err();
        assert!(err.to_string().contains("--cache"), "{err}");
        let err = Cli::try_parse_from(["hotchan", "serve", "--listen", "x"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
    }
}
