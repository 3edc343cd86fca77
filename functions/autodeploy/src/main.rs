//! `autodeploy serve`: the whole HTTP API on one machine, on an embedded SQLite database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::sqlite::SqliteStore;
use autodeploy_api::store::InStoreQueue;
use autodeploy_api::web::{AppState, full_router};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "autodeploy",
    version,
    about = "Redeploys services on git pushes and new image tags."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on an embedded SQLite database.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AUTODEPLOY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// SQLite database file (created if missing).
    #[arg(long, env = "AUTODEPLOY_DATABASE", default_value = "./autodeploy.db")]
    database: PathBuf,
    /// The operator's admin token (required; may do everything in every organization).
    #[arg(long = "admin-token", env = "AUTODEPLOY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve(args) = cli.command;
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("autodeploy: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let admin_token = args
        .admin_token
        .filter(|t| !t.trim().is_empty())
        .ok_or("set AUTODEPLOY_ADMIN_TOKEN (or --admin-token): the API needs an admin token")?;
    if admin_token.len() < 16 {
        return Err("the admin token must be at least 16 characters long".to_owned());
    }
    let store = SqliteStore::open(&args.database)
        .map_err(|e| format!("cannot open the database {}: {e}", args.database.display()))?
        .with_echo(true);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let state = AppState::new(
            Arc::new(store),
            Arc::new(InStoreQueue),
            Arc::new(StaticAdminToken::new(&admin_token)),
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, database = %args.database.display(), "autodeploy serving");
        axum::serve(listener, full_router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| format!("the server stopped: {e}"))
    })
}

/// Finish in-flight requests on SIGTERM or Ctrl-C, then exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
