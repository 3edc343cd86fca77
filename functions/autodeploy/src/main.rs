//! `autodeploy serve`: the whole HTTP API on one machine, on an embedded SQLite database.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::dispatch::send::{Sender, SenderConfig};
use autodeploy_api::dispatch::{Dispatcher, standalone};
use autodeploy_api::sqlite::SqliteStore;
use autodeploy_api::store::{InStoreQueue, TenantLimits};
use autodeploy_api::web::{AppState, full_router};
use autodeploy_core::target::delivery::RetryPolicy;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use clap::{Parser, Subcommand};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;
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
    /// Services one organization may hold (at most 1,000 of them per repository or image).
    #[arg(long = "max-services", env = "AUTODEPLOY_MAX_SERVICES", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_services: u32,
    /// Times a deployment is offered to consumers (or tried on its target) before it fails.
    #[arg(long = "max-attempts", env = "AUTODEPLOY_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// Days a finished deployment (DELIVERED, FAILED, SUPERSEDED) stays in the log.
    #[arg(long = "retention-days", env = "AUTODEPLOY_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    retention_days: u32,
    /// Do not run the dispatcher: deployments of services with a deploy target wait, QUEUED.
    #[arg(long = "no-dispatch", env = "AUTODEPLOY_NO_DISPATCH")]
    no_dispatch: bool,
    /// Allow deploy targets on loopback, private and link-local addresses, and plain http (for
    /// on-premises engines and tests).
    #[arg(long = "targets-allow-private", env = "AUTODEPLOY_TARGETS_ALLOW_PRIVATE")]
    targets_allow_private: bool,
    /// How long the dispatcher keeps retrying a deployment before it fails: seconds, or with
    /// a unit (90s, 30m, 24h, 2d).
    #[arg(long = "max-delivery-age", env = "AUTODEPLOY_MAX_DELIVERY_AGE", default_value = "24h", value_parser = parse_age)]
    max_delivery_age: Duration,
    /// Print every deployment recorded as one JSON line on stdout (a debugging aid: lines are
    /// dropped, never waited for, when stdout is slow, full or closed).
    #[arg(long = "print-deployments", env = "AUTODEPLOY_PRINT_DEPLOYMENTS")]
    print_deployments: bool,
    /// Seconds a client has to send a request's headers (also the idle time allowed on a
    /// kept-alive connection before its next request); the connection is closed after it.
    #[arg(long = "header-timeout", env = "AUTODEPLOY_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a client has to send a request's whole body, counted once its headers are
    /// read; a slower body is refused (400) and its connection closed.
    #[arg(long = "body-timeout", env = "AUTODEPLOY_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
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
    let store = SqliteStore::open_with(&args.database, args.max_attempts)
        .map_err(|e| format!("cannot open the database {}: {e}", args.database.display()))?;
    if args.print_deployments {
        store.print_deployments();
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let printing = store.clone();
    let served = runtime.block_on(async move {
        let retention_secs = i64::from(args.retention_days) * 24 * 60 * 60;
        tokio::spawn(maintain(store.clone(), retention_secs));
        let state = AppState::new(
            Arc::new(store.clone()),
            Arc::new(InStoreQueue),
            Arc::new(StaticAdminToken::new(&admin_token)),
        )
        .with_pull(Arc::new(store.clone()))
        .with_limits(TenantLimits {
            services: args.max_services,
            ..TenantLimits::default()
        })
        .allowing_private_targets(args.targets_allow_private);
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let dispatching = if args.no_dispatch {
            None
        } else {
            let sender = Sender::new(SenderConfig::new(args.targets_allow_private))
                .map_err(|e| format!("cannot start the dispatcher: {e}"))?;
            let dispatcher = Dispatcher {
                store: state.store.clone(),
                sender,
                policy: RetryPolicy {
                    max_attempts: args.max_attempts,
                    max_age: args.max_delivery_age,
                },
            };
            let mut stop = stop.clone();
            Some(tokio::spawn(standalone::run(dispatcher, store, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })))
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, database = %args.database.display(), "autodeploy serving");
        let timeouts = Timeouts {
            header: Duration::from_secs(args.header_timeout),
            body: Duration::from_secs(args.body_timeout),
        };
        serve_http(listener, full_router(state), timeouts, shutdown_signal()).await;
        let _ = stopping.send(true);
        if let Some(dispatching) = dispatching {
            let _ = dispatching.await;
        }
        Ok(())
    });
    printing.finish_printing(Duration::from_secs(1));
    served
}

#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    body: Duration,
}

/// HTTP/1.1 with read timeouts, which `axum::serve` does not have: a client gets
/// `timeouts.header` to send its headers (hyper closes the connection after it) and
/// `timeouts.body` to send its body (the handler then answers 400 and the connection is
/// closed). On `shutdown`, stop accepting, let every connection finish its request in flight
/// (bounded by those timeouts), close idle ones, and return.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let request = request.map(|body| Body::new(DeadlineBody::new(body, timeouts.body)));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A request body that fails once `deadline` has passed since the request's headers were
/// read, however it trickles in.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(axum::Error::new)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new("the request body was not received in time")))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `90`, `90s`, `30m`, `24h` or `2d`.
fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 3600, 90m or 24h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    match number.checked_mul(seconds) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{raw:?} must be a positive duration")),
    }
}

/// How often leases that ran out are released and old records pruned.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// The store's periodic upkeep, for as long as the server runs.
async fn maintain(store: SqliteStore, retention_secs: i64) {
    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.maintain(retention_secs).await {
            Ok(done) if done.leases_expired > 0 || done.deployments_pruned > 0 => tracing::info!(
                leases_expired = done.leases_expired,
                deployments_pruned = done.deployments_pruned,
                "maintenance"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "maintenance failed; it runs again shortly"),
        }
    }
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
