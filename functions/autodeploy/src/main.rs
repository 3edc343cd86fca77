//! `autodeploy serve`: the whole HTTP API on one machine, on an embedded SQLite database.

mod host;
mod listen;
mod protocol_errors;
mod secret_key;
mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::dispatch::send::{Sender, SenderConfig};
use autodeploy_api::dispatch::{Dispatcher, standalone};
use autodeploy_api::sqlite::{OnDurabilityLost, SqliteOptions, SqliteStore};
use autodeploy_api::store::{InStoreQueue, TenantLimits};
use autodeploy_api::web::auth::MAX_PRESENTED_TOKEN;
use autodeploy_api::web::limits::BufferLimits;
use autodeploy_api::web::{AppState, full_router};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use autodeploy_core::target::delivery::{RetryPolicy, parse_age};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use listen::Listen;
use secret_key::load_or_create_secret_key;

const ADMIN_TOKEN_ENV: &str = "AUTODEPLOY_ADMIN_TOKEN";
const MIB: usize = 1024 * 1024;

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
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
}

const SERVE_HELP: &str = "\
The admin token (16 to 512 printable ASCII characters; may do everything in every
organization) is read from AUTODEPLOY_ADMIN_TOKEN or from the file --admin-token-file names,
never from the command line, where every user of the machine could read it.

The secrets stored in the database are sealed with AUTODEPLOY_SECRET_KEY (32 bytes in base64 or
hex: `openssl rand -base64 32`) or, when it is not set, with the key in the file beside the
database (<database>.key), created on first start. Back it up with the database.

One server serves a database: it holds a lock on the file beside it (<database>.lock) while it
runs, and a second one started on the same database stops at once, saying so; so does a start on
a database file that has a second name (a hard link).

SIGTERM, SIGINT and SIGHUP stop it gracefully: the requests being answered are finished (long
polls answered at once), those still arriving (headers or body) are dropped unanswered, nothing
of them done (their senders retry), and deliveries to deploy targets in flight end (at most their
15 s timeout); then it exits 0.

Switches (--no-dispatch, --targets-allow-private, --print-deployments) take true or false from
their variable, and also 1/0, yes/no, on/off.

Files the server creates are readable by their owner only.";

#[derive(clap::Args)]
struct ServeArgs {
    // clap prints this text as written: `[IPV6]` is not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Address to listen on: HOST:PORT, [IPV6]:PORT, or :PORT for every interface.
    /// 127.0.0.1 is this machine only, where git providers cannot reach it; serve TLS from a
    /// reverse proxy in front.
    #[arg(long, env = "AUTODEPLOY_LISTEN", default_value = "127.0.0.1:8080", value_parser = listen::parse)]
    listen: Listen,
    /// SQLite database file (created if missing).
    #[arg(long, env = "AUTODEPLOY_DATABASE", default_value = "./autodeploy.db")]
    database: PathBuf,
    /// File holding the admin token (surrounding white space is ignored). Or set
    /// AUTODEPLOY_ADMIN_TOKEN.
    #[arg(long = "admin-token-file", env = "AUTODEPLOY_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Refused: a token on the command line shows in `ps`.
    #[arg(long = "admin-token", hide = true)]
    admin_token_argument: Option<String>,
    /// Seconds a client has to send a request's headers (also the idle time allowed on a
    /// kept-alive connection before its next request); the connection is closed after it
    /// (1–3600).
    #[arg(long = "header-timeout", env = "AUTODEPLOY_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a client has to send a request's whole body, counted once its headers are
    /// read; a slower body is refused (400) and its connection closed (1–3600).
    #[arg(long = "body-timeout", env = "AUTODEPLOY_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Connections open at once, up to 1,000,000 (lowered to fit the open-files limit). At the
    /// limit, a new connection closes the oldest idle one, or else the oldest still sending its
    /// request.
    #[arg(long = "max-connections", env = "AUTODEPLOY_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Threads that serve requests (1-1024). Every write goes through the database's one
    /// writer thread besides; by default, one thread per core but one, at least one.
    #[arg(long = "request-threads", env = "AUTODEPLOY_REQUEST_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    request_threads: Option<u16>,
    /// Request-body bytes held in memory at once, across all requests (e.g. 128MiB, 1GiB; at
    /// least 1MiB). A request past it is answered 503 with Retry-After; a body larger than all
    /// of it, 413.
    #[arg(long = "max-body-buffer", env = "AUTODEPLOY_MAX_BODY_BUFFER", default_value = "128MiB", value_parser = parse_size)]
    max_body_buffer: usize,
    /// Services one organization may hold (at most 1,000 of them per repository or image), and
    /// deploy targets.
    #[arg(long = "max-services", env = "AUTODEPLOY_MAX_SERVICES", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_services: u32,
    /// Times a deployment is offered to consumers (or tried on its target) before it fails
    /// (1–1000).
    #[arg(long = "max-attempts", env = "AUTODEPLOY_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// How long the dispatcher keeps retrying a deployment before it fails: seconds, or with
    /// a unit (90s, 30m, 24h, 2d).
    #[arg(long = "max-delivery-age", env = "AUTODEPLOY_MAX_DELIVERY_AGE", default_value = "24h", value_parser = parse_age)]
    max_delivery_age: Duration,
    /// Days a finished deployment (DELIVERED, FAILED, SUPERSEDED) stays in the log (1–3650).
    #[arg(long = "retention-days", env = "AUTODEPLOY_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    retention_days: u32,
    /// Do not run the dispatcher: deployments of services with a deploy target wait, QUEUED.
    #[arg(long = "no-dispatch", env = "AUTODEPLOY_NO_DISPATCH", action = clap::ArgAction::SetTrue, value_parser = switch)]
    no_dispatch: bool,
    /// Allow deploy targets on loopback, private and link-local addresses, and plain http (for
    /// on-premises engines and tests).
    #[arg(long = "targets-allow-private", env = "AUTODEPLOY_TARGETS_ALLOW_PRIVATE", action = clap::ArgAction::SetTrue, value_parser = switch)]
    targets_allow_private: bool,
    /// Print every deployment recorded as one JSON line on stdout (a debugging aid: lines are
    /// dropped, never waited for, when stdout is slow, full or closed).
    #[arg(long = "print-deployments", env = "AUTODEPLOY_PRINT_DEPLOYMENTS", action = clap::ArgAction::SetTrue, value_parser = switch)]
    print_deployments: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour only for a person at a terminal: never in a file, a pipe or a journal.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Every delivery logs a line: a request thread hands it over and goes on, and one thread
    // writes the lines in order, as many in one write as have waited (flushed whenever none
    // wait). Never dropped: a stderr that blocks slows the requests, as a direct write would.
    let (log_writer, log_flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("autodeploy-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // A filter that does not parse logs at info, and says so once logging is set up.
    let (filter, bad_filter) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(e)),
        },
        _ => (EnvFilter::new("info"), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_writer)
        .with_ansi(ansi)
        .init();
    if let Some(error) = bad_filter {
        tracing::warn!(%error, "RUST_LOG is not a log filter: logging at info");
    }
    let Command::Serve(args) = cli.command;
    let result = serve(args);
    // The lines still waiting are written before the process ends.
    drop(log_flush);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("autodeploy: {message}");
            ExitCode::FAILURE
        }
    }
}

/// In this order, so that a start that fails leaves nothing behind: read the settings, take
/// the port, then touch files.
fn serve(args: ServeArgs) -> Result<(), String> {
    let admin_token = admin_token(&args)?;
    host::owner_only_umask();
    let open_files = host::raise_open_files_limit();
    let max_connections = host::connection_cap(args.max_connections as usize, open_files);
    if max_connections < args.max_connections as usize {
        tracing::warn!(
            open_files_limit = open_files,
            max_connections,
            "fewer connections than --max-connections asks, to stay within the open-files limit (ulimit -n)"
        );
    }
    let request_threads = args.request_threads.map_or_else(
        || host::request_threads(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
        usize::from,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(request_threads)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let _runtime = runtime.enter();
    // Before listening: once a client can connect, SIGTERM is a graceful shutdown.
    let shutdown = shutdown_signal()?;
    let listeners = args.listen.bind()?;

    let database = &args.database;
    let cannot_open = |e: &dyn std::fmt::Display| format!("cannot open the database {}: {e}", database.display());
    let directory = database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !directory.is_dir() {
        let what = if directory.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(cannot_open(&format!("{} {what}", directory.display())));
    }
    if database.is_dir() {
        return Err(cannot_open(&format!(
            "it is a directory; --database names the database's file, such as {}",
            database.join("autodeploy.db").display()
        )));
    }
    // One server per database: a second one would release the first one's deliveries in
    // flight on start and serve its consumers without waking them.
    let _lock = DatabaseLock::take(database)?;
    let key_file = secret_key::key_file(database);
    let key_existed = key_file.exists();
    let options = SqliteOptions {
        max_attempts: args.max_attempts,
        secret_key: Some(load_or_create_secret_key(database)?),
        on_durability_lost: Some(OnDurabilityLost(Arc::new(stop_on_lost_durability))),
    };
    let store = match SqliteStore::open_with(database, options) {
        Ok(store) => store,
        Err(e) => {
            // A key made now cannot open what an earlier one sealed: the likeliest cause is a
            // database restored or copied without its key file.
            let made_now = !key_existed && key_file.exists();
            let hint = if made_now && e.to_string().contains(autodeploy_api::sqlite::KEY_DOES_NOT_OPEN) {
                format!(
                    " (there was no key file {}, so a new key was made: restore the key file the database was used with beside it, or give its key in AUTODEPLOY_SECRET_KEY)",
                    key_file.display()
                )
            } else {
                String::new()
            };
            // Nothing was sealed with a key made for a database that did not open.
            if made_now {
                let _ = std::fs::remove_file(&key_file);
            }
            return Err(cannot_open(&format!("{e}{hint}")));
        }
    };
    // Said once the database it seals opened: a refused start removes the key it made.
    if !key_existed && key_file.exists() {
        tracing::info!(
            key_file = %key_file.display(),
            "created the key that seals the secrets in the database: back it up with the database, which cannot be read without it"
        );
    }
    // Once it opened: a file that is not a database is left as it was.
    let files = [
        database.clone(),
        suffixed(database, "-wal"),
        suffixed(database, "-shm"),
        key_file.clone(),
    ];
    for path in host::make_owner_only(files.iter().map(PathBuf::as_path))? {
        tracing::info!(file = %path.display(), "made readable by its owner only");
    }

    if args.print_deployments {
        store.print_deployments();
    }
    let printing = store.clone();
    let served = runtime.block_on(async move {
        let listeners = listeners
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addresses: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        tracing::info!(
            listen = %addresses.join(", "),
            database = %database.display(),
            max_connections,
            max_body_buffer = args.max_body_buffer,
            request_threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "autodeploy serving"
        );
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
        .allowing_private_targets(args.targets_allow_private)
        // Half the connections at most wait in long polls: the rest stay for webhooks and
        // everything else.
        .with_waiting_polls((args.max_connections / 2).max(1) as usize);
        let draining = Arc::clone(&state.draining);
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let dispatching = if args.no_dispatch {
            standalone::release_interrupted(&store).await;
            None
        } else {
            let sender = Sender::new(SenderConfig {
                system_roots: system_roots_requested(),
                ..SenderConfig::new(args.targets_allow_private)
            })
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
        // HTTP/1.1 answers one request at a time per connection: the connection cap is the
        // cap on requests in flight.
        let router = BufferLimits::new(max_connections, args.max_body_buffer).apply(full_router(state));
        let settings = serve::Settings {
            header_timeout: Duration::from_secs(args.header_timeout),
            body_timeout: Duration::from_secs(args.body_timeout),
            max_connections,
        };
        // Long polls answer at once when shutting down begins, not after their wait.
        let shutdown = async move {
            shutdown.await;
            draining.begin();
        };
        serve::serve_http(listeners, router, settings, shutdown).await;
        let _ = stopping.send(true);
        if let Some(dispatching) = dispatching {
            let _ = dispatching.await;
        }
        Ok(())
    });
    printing.finish_printing(Duration::from_secs(1));
    served
}

/// The database's log could not be synced after writes committed: they can be answered
/// neither as done nor as not done. The process stops without answering them, as a crash
/// would; its restart recovers what the disk holds, and the clients' retries find their
/// writes made or make them.
fn stop_on_lost_durability(reason: &str) {
    eprintln!("autodeploy: {reason}; stopping without answering the writes not known to be on disk");
    std::process::exit(1);
}

/// Whether the dispatcher trusts the system's certificate store (`SSL_CERT_FILE` or
/// `SSL_CERT_DIR` set, as an OpenSSL-style client reads them: an engine behind a private CA)
/// rather than the Mozilla roots compiled in, as the Lambda functions' client does.
fn system_roots_requested() -> bool {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.to_string_lossy().trim().is_empty()))
}

/// How often old records are pruned, and the longest wait between two looks at leases.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// The shortest wait between two rounds of upkeep.
const MAINTENANCE_PAUSE: Duration = Duration::from_millis(100);

/// The store's upkeep, for as long as the server runs: every few seconds, and as soon as a
/// lease runs out, so that its deployment shows `QUEUED` again at once rather than up to a
/// round later. A lease lasts at least 10 s, longer than a round: none runs out unseen. After a
/// round that failed, the next comes a round later, not at the lease it could not release.
async fn maintain(store: SqliteStore, retention_secs: i64) {
    let mut failed = false;
    loop {
        let next_expiry = store.next_lease_expiry().ok().flatten().filter(|_| !failed);
        tokio::time::sleep(until_upkeep(next_expiry, std::time::SystemTime::now())).await;
        let round = store.maintain(retention_secs).await;
        failed = round.is_err();
        match round {
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

/// A switch's value, from its flag or its environment variable: clap's own error for any
/// other value says only that it is "not a boolean".
fn switch(value: &str) -> Result<bool, String> {
    autodeploy_api::util::parse_switch(value).ok_or_else(|| {
        "must be true or false (or 1 / 0, yes / no, on / off), given to the flag or in its AUTODEPLOY_ variable"
            .to_owned()
    })
}

/// How long to wait, at `now`, for the next round of upkeep: until the next lease runs out
/// (`next_expiry`, in Unix seconds: it has run out once that second has begun), at most
/// [`MAINTENANCE_EVERY`], at least [`MAINTENANCE_PAUSE`].
fn until_upkeep(next_expiry: Option<i64>, now: std::time::SystemTime) -> Duration {
    let until_expiry = next_expiry.map(|secs| {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        at.duration_since(now).unwrap_or(Duration::ZERO)
    });
    until_expiry
        .map_or(MAINTENANCE_EVERY, |wait| wait.min(MAINTENANCE_EVERY))
        .max(MAINTENANCE_PAUSE)
}

/// The admin token, from the environment or a file: never from the command line.
fn admin_token(args: &ServeArgs) -> Result<String, String> {
    const WHERE: &str = "set AUTODEPLOY_ADMIN_TOKEN, or --admin-token-file (AUTODEPLOY_ADMIN_TOKEN_FILE) naming a file only you can read";
    if args.admin_token_argument.is_some() {
        return Err(format!(
            "--admin-token is refused: every user of this machine can read a command line (ps); {WHERE}"
        ));
    }
    let from_environment = std::env::var(ADMIN_TOKEN_ENV).ok().filter(|t| !t.trim().is_empty());
    // Surrounding white space (a secret file's last newline) is dropped from either source,
    // as a client's Authorization header drops it.
    let token = match (from_environment, &args.admin_token_file) {
        (Some(_), Some(_)) => {
            return Err("both AUTODEPLOY_ADMIN_TOKEN and --admin-token-file are set: keep one".to_owned());
        }
        (Some(token), None) => token.trim().to_owned(),
        (None, Some(file)) => {
            warn_if_others_can_read(file);
            std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the admin token file {}: {e}", file.display()))?
                .trim()
                .to_owned()
        }
        (None, None) => return Err(format!("the API needs an admin token: {WHERE}")),
    };
    if token.len() < 16 {
        return Err("the admin token must be at least 16 characters long".to_owned());
    }
    // What an Authorization header can carry and the API reads: a token outside these bounds
    // would start a server no admin call could ever reach.
    if token.len() > MAX_PRESENTED_TOKEN || !token.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(format!(
            "the admin token must be printable ASCII (letters, digits, punctuation, spaces) of at most {MAX_PRESENTED_TOKEN} characters: it is sent in an Authorization header"
        ));
    }
    Ok(token)
}

/// A warning when the admin token's file is readable by others than its owner (a secret
/// mounted by an orchestrator often is; refusing it would refuse those).
fn warn_if_others_can_read(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %file.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the admin token file is readable by other users of this machine: chmod 600 it"
        );
    }
}

/// The lock a server holds on its database for as long as it runs: an exclusive lock on the
/// file beside it (`<database>.lock`, beside the file a symbolic link names), released by the
/// system when the process ends, however. The file stays: removing it would let a server that
/// opened it just before lock a file no other server sees.
struct DatabaseLock {
    _file: std::fs::File,
}

impl DatabaseLock {
    fn take(database: &Path) -> Result<Self, String> {
        let real = std::fs::canonicalize(database).unwrap_or_else(|_| database.to_owned());
        // SQLite names the database's log and shared memory after the path it was opened by:
        // two servers on one file under two names would each keep a log of their own, lose
        // each other's writes and corrupt the file; and this lock, beside one name, would not
        // see the other.
        let names = std::fs::metadata(&real).map_or(1, |meta| std::os::unix::fs::MetadataExt::nlink(&meta));
        if names > 1 {
            return Err(format!(
                "the database {} has {names} names (hard links): SQLite keeps its log beside the name it is opened by, so two servers on two names would corrupt it; keep one name (remove the other links) and start again",
                database.display(),
            ));
        }
        let path = suffixed(&real, ".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                format!(
                    "cannot open the database {}: cannot create its lock file {}: {e}",
                    database.display(),
                    path.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "the database {} is in use by another autodeploy server (it holds {}): stop that one first, or give this one another --database",
                database.display(),
                path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!(
                "cannot open the database {}: cannot lock {}: {e}",
                database.display(),
                path.display()
            )),
        }
    }
}

/// `path` with `suffix` added to its file name (`db` → `db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A size in bytes: a number, optionally followed by KiB, MiB or GiB (K, M, G, KB, MB and GB
/// mean the same); at least 1 MiB.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return Err("use a number of bytes, optionally followed by KiB, MiB or GiB (e.g. 128MiB)".to_owned()),
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or("use a number of bytes, optionally followed by KiB, MiB or GiB (e.g. 128MiB)")?;
    if bytes < MIB {
        return Err("must be at least 1MiB".to_owned());
    }
    Ok(bytes)
}

/// Resolves on SIGTERM, Ctrl-C (SIGINT) or SIGHUP (a closed terminal, or a log rotation's
/// signal, which would otherwise end the process at once), caught from now on: the server
/// then finishes its requests in flight and exits.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{SignalKind, signal};

    let catch = |kind| signal(kind).map_err(|e| format!("cannot catch SIGTERM, SIGINT and SIGHUP: {e}"));
    let (mut terminate, mut interrupt, mut hangup) = (
        catch(SignalKind::terminate())?,
        catch(SignalKind::interrupt())?,
        catch(SignalKind::hangup())?,
    );
    Ok(async move {
        let signal = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            _ = hangup.recv() => "SIGHUP",
        };
        tracing::info!(signal, "shutting down");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB"), Ok(128 * MIB));
        assert_eq!(parse_size("1 GiB"), Ok(1024 * MIB));
        assert_eq!(parse_size("64m"), Ok(64 * MIB));
        assert_eq!(parse_size("2048K"), Ok(2 * MIB));
        assert_eq!(parse_size("1048576"), Ok(MIB));
        for refused in ["", "MiB", "12 parsecs", "-1MiB", "1.5GiB", "99999999999999999999GiB"] {
            assert!(parse_size(refused).unwrap_err().contains("e.g. 128MiB"), "{refused}");
        }
        assert_eq!(parse_size("1000"), Err("must be at least 1MiB".to_owned()));
    }

    #[test]
    fn switches() {
        for (value, on) in [
            ("true", true),
            ("1", true),
            ("Yes", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("OFF", false),
        ] {
            assert_eq!(switch(value), Ok(on), "{value}");
        }
        for refused in ["maybe", "", "2", "enabled"] {
            assert!(switch(refused).unwrap_err().contains("true or false"), "{refused}");
        }
        // On the command line a switch takes no value; the variable's value goes through it.
        let serve = |args: &[&str]| Cli::try_parse_from(["autodeploy", "serve"].iter().chain(args));
        assert!(serve(&["--no-dispatch"]).is_ok());
    }

    #[test]
    fn upkeep_comes_when_the_next_lease_runs_out() {
        let at = |secs: u64, millis: u64| std::time::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        // The lease runs out when its second begins.
        assert_eq!(until_upkeep(Some(1_000), at(998, 250)), Duration::from_millis(1_750));
        assert_eq!(until_upkeep(Some(1_000), at(999, 950)), MAINTENANCE_PAUSE);
        // Already run out (a round that failed): no busy loop.
        assert_eq!(until_upkeep(Some(1_000), at(1_200, 0)), MAINTENANCE_PAUSE);
        // Far away, or no lease: the usual round.
        assert_eq!(until_upkeep(Some(90_000), at(1_000, 0)), MAINTENANCE_EVERY);
        assert_eq!(until_upkeep(None, at(1_000, 0)), MAINTENANCE_EVERY);
        assert_eq!(until_upkeep(Some(-5), at(1_000, 0)), MAINTENANCE_PAUSE);
    }
}
