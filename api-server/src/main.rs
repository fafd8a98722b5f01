//! `api-server`: parse the command line, start logging, dispatch.

use anyhow::Context;
use api_server::config::LogFormat;
use api_server::{Application, Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.settings.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(&cli.settings)
                .await
                .context("failed to start the server")?;
            app.run_until(api_server::startup::shutdown_signal())
                .await
                .context("server failed")?;
        }
        Command::Migrate => {
            api_server::startup::migrate(&cli.settings)
                .await
                .context("failed to migrate the database")?;
            println!("migrations applied");
        }
        Command::Import { file, dry_run } => {
            api_server::import::run(&cli.settings, &file, dry_run).await?;
        }
    }
    Ok(())
}
