//! The `hotchan` binary: parses the command line and hands over to the library.

use clap::Parser;
use hotchan::app::{shutdown_signal, Application};
use hotchan::cli::{Cli, Command};
use hotchan::config::LogFormat;
use hotchan::{demo, postgres};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HOTCHAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr (stdout is for what a command prints: `bench` reports, JSON).
    // Colour only for a terminal: a log piped to a file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => {
            init_tracing(settings.db.log_format);
            let app = Application::build(*settings).await?;
            let stop = shutdown_signal();
            app.run_until(stop).await
        }
        Command::Migrate(mut m) => {
            init_tracing(m.db.log_format);
            postgres::ensure_database(&m.db.pg()).await?;
            if m.partition_messages.is_some() {
                // The conversion below lays the table out, with the count asked for.
                m.db.message_partitions = 0;
            }
            let applied = postgres::migrate(&m.db.pg()).await?;
            tracing::info!(applied, "migrations are up to date");
            if let Some(partitions) = m.partition_messages {
                hotchan::app::convert_messages(&m.db, partitions).await?;
            }
            Ok(())
        }
        Command::Bench(settings) => {
            init_tracing(settings.serve.db.log_format);
            hotchan::bench::run(*settings).await
        }
        Command::FeedCleanup(c) => {
            init_tracing(c.db.log_format);
            let retention = c.feeds.retention().map_err(anyhow::Error::msg)?;
            postgres::ensure_database(&c.db.pg()).await?;
            postgres::migrate(&c.db.pg()).await?;
            let pool = postgres::Db::connect(&c.db.pg()).await?;
            let upkeep = pool.feed_upkeep(retention, true).await?;
            tracing::info!(
                dropped = upkeep.dropped.len(),
                created = upkeep.created.len(),
                "feed cleanup done"
            );
            Ok(())
        }
        Command::SeedDemo(db) => {
            init_tracing(db.log_format);
            postgres::ensure_database(&db.pg()).await?;
            postgres::migrate(&db.pg()).await?;
            // Demo data goes into a database with no channel yet: nothing of it can be
            // cached, so its writes record no outbox rows (else the first `serve` would
            // replay them as writes cut short).
            let pool = postgres::Db::connect(&db.pg()).await?.with_outbox(false);
            demo::seed(&pool).await?;
            Ok(())
        }
    }
}
