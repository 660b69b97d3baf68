//! The `hotchan` binary: parses the command line and hands over to the library.

use clap::Parser;
use hotchan::app::{shutdown_signal, Application};
use hotchan::config::{Cli, Command, LogFormat};
use hotchan::{demo, postgres};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HOTCHAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate(db) => {
            init_tracing(db.log_format);
            postgres::ensure_database(&db).await?;
            let applied = postgres::migrate(&db).await?;
            tracing::info!(applied, "migrations are up to date");
            Ok(())
        }
        Command::Bench(settings) => {
            init_tracing(settings.serve.db.log_format);
            hotchan::bench::run(*settings).await
        }
        Command::SeedDemo(db) => {
            init_tracing(db.log_format);
            postgres::ensure_database(&db).await?;
            postgres::migrate(&db).await?;
            let pool = postgres::Db::connect(&db).await?;
            demo::seed(&pool).await?;
            Ok(())
        }
    }
}
