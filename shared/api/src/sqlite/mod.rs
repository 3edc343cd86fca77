//! The embedded store of the standalone server: one SQLite database (WAL, every answer given
//! once its write is fsynced)
//! holding services, secrets, tokens and the deployment log, which is the queue itself.
//!
//! Writes go to one writer thread that commits every write waiting at that moment in one
//! transaction (group commit); a syncer thread fsyncs the write-ahead log once for all the
//! batches committed meanwhile, and only then are their requests answered.
//! Reads run on the calling thread through a small pool of read connections: they are index
//! lookups on a local file, cheaper than a hop to another thread, and WAL lets them run beside
//! the writer.
//! Another thread copies the write-ahead log back into the database file (checkpoints), so
//! that the writer never stops for it.

/// The SQL expression of the form a push mark (`before..after`) is stored in: when it holds one
/// `..`, within its first 255 characters, between lowercase hexadecimal digits, as bytes (the
/// position of `..` in one byte, then the digits' bytes), about half the length of the text,
/// which the marks' unique index (a random page per push) holds in fewer, fuller pages; any
/// other mark as it is. Both forms are one-to-one, and a text never equals bytes in SQLite.
/// The upgrade that rewrote the marks already stored uses it; the statements bind the same form
/// computed in Rust ([`stored_mark`]).
macro_rules! stored_mark {
    ($mark:literal) => {
        concat!(
            "CASE WHEN ",
            $mark,
            " GLOB '*[A-F]*' OR length(",
            $mark,
            ") - length(replace(",
            $mark,
            ", '..', '')) <> 2 OR instr(",
            $mark,
            ", '..') > 255 THEN ",
            $mark,
            " ELSE coalesce(unhex(printf('%02x', instr(",
            $mark,
            ", '..')) || replace(",
            $mark,
            ", '..', '')), ",
            $mark,
            ") END"
        )
    };
}

/// A push mark in the form [`stored_mark!`] gives it, computed here rather than in SQL: the
/// writer binds it to every statement on push marks, so that the thread every write goes through
/// does not evaluate the expression (a pattern match, two replaces, a formatted number) for
/// each service a push reaches. The upgrade that stored the marks of an older database uses the
/// SQL; the two agree on every mark (tested).
pub(crate) fn stored_mark(mark: &str) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    let as_text = || Value::Text(mark.to_owned());
    // Any other character than ASCII makes `unhex` fail, and `instr` count characters.
    if !mark.is_ascii() || mark.bytes().any(|b| (b'A'..=b'F').contains(&b)) || mark.matches("..").count() != 1 {
        return as_text();
    }
    let Some(at) = mark.find("..").map(|i| i + 1).filter(|&at| at <= 255) else {
        return as_text();
    };
    let digits = mark.replacen("..", "", 1);
    match hex::decode(&digits) {
        Ok(ids) => Value::Blob([&[at as u8][..], &ids].concat()),
        Err(_) => as_text(),
    }
}

mod checkpointer;
mod credentials;
mod deliveries;
mod deployments;
mod history;
mod known;
mod lifecycle;
mod schema;
mod sealing;
mod services;
mod targets;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use autodeploy_core::deployment::DeploymentRequest;
use autodeploy_core::sealed::SecretKey;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

use crate::store::{Page, PageRequest, SecretRecord, Store, StoreError, StoreResult, StoredService};
use checkpointer::{Checkpointer, WRITER_AUTOCHECKPOINT};
use known::Known;
pub use lifecycle::{
    DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS, DISPATCH_SHARE_OF_ONE_ORGANIZATION, WAITING_KEPT_PER_SERVICE,
};
pub use sealing::KEY_DOES_NOT_OPEN;
pub use targets::DISPATCH_LEASE_SECS;
pub use writer::OnDurabilityLost;
use writer::{Durability, Writer};

/// When the next lease runs out.
const NEXT_LEASE_EXPIRY: &str = "SELECT min(lease_expires_unix) FROM deployments WHERE status = 'IN_PROGRESS'";
/// Read connections kept open between reads (more are opened while many threads read).
const IDLE_READERS: usize = 8;
/// The writer's page cache, in KiB as `PRAGMA cache_size` takes it when negative (SQLite's
/// default is 2 MiB). Large enough to keep the pages it appends to; no larger, because SQLite
/// walks the whole cache at the end of every transaction in which a B-tree split renumbered
/// pages (it parks a page at a high number meanwhile), which is most of the writer's.
const WRITER_CACHE_KIB: i64 = -8_192;
/// Prepared statements each connection keeps (rusqlite keeps 16 unless told).
const STATEMENT_CACHE: usize = 64;
/// Deployment lines waiting to be printed before new ones are dropped (a stdout nobody reads).
const PRINT_BACKLOG: usize = 4096;

/// The thread printing deployments, and the backlog it reads.
struct Printer {
    lines: std::sync::mpsc::SyncSender<String>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    _checkpointer: Checkpointer,
    readers: Mutex<Vec<Connection>>,
    /// Wake an organization's pull consumers whenever work may have become available to them
    /// (a deployment recorded, released, due).
    work: PullWakers,
    /// Woken whenever the dispatcher may have work: as `work`, but for recorded deployments
    /// only those of services with a deploy target (most, on a busy server, are not).
    dispatch_work: Arc<Notify>,
    printer: Mutex<Option<Printer>>,
    /// Webhook secrets read lately, opened, by organization and provider.
    secrets: Mutex<Known<Option<SecretRecord>>>,
    /// The services of repositories pushed to lately, by organization and repository key.
    services: Mutex<Known<Arc<[StoredService]>>>,
    /// The refusal budgets spent this minute: later refusals in it are left out of the history
    /// without a write.
    spent_budgets: crate::store::SpentBudgets,
    /// Offers of a deployment before it fails (SPEC: 10, `AUTODEPLOY_MAX_ATTEMPTS`).
    max_attempts: u32,
    /// Seals the secrets and tokens the database keeps (webhook secrets, targets' credentials).
    secret_key: Option<SecretKey>,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Offers of a deployment before it fails.
    pub max_attempts: u32,
    /// The key sealing the secrets at rest; `None` keeps them as they are (tests).
    pub secret_key: Option<SecretKey>,
    /// Told when the log could not be synced after writes committed: from then on the store
    /// takes no writes, and those writes are never answered. `None`: only logged.
    pub on_durability_lost: Option<OnDurabilityLost>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            secret_key: None,
            on_durability_lost: None,
        }
    }
}

/// Offers of a deployment before it fails, unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Finished deployments one write of [`SqliteStore::maintain`] prunes at most.
const PRUNE_CHUNK: usize = 2_000;

/// One chunk of the finished deployments older than `?1`, found through
/// `deployments_finished` (whose condition this repeats, so that the index applies).
const PRUNE_FINISHED: &str = "DELETE FROM deployments WHERE seq IN (SELECT seq FROM deployments
    WHERE (status = 'DELIVERED' OR status = 'FAILED' OR status = 'SUPERSEDED') AND updated_unix < ?1 LIMIT ?2)";

/// What [`SqliteStore::maintain`] removed or released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub leases_expired: usize,
    pub deployments_pruned: usize,
}

impl SqliteStore {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Open with `options`. With a secret key, secrets stored in the clear (by an earlier
    /// version) are sealed, and a key that does not open the sealed ones is refused: the
    /// server must not start and then fail every delivery.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        Self::open_on_disk(path, options).map_err(|err| match err {
            // SQLite names a disk too full for the log or its index "disk I/O error".
            StoreError::Unavailable(why) => match space_left(path) {
                Ok(left) if left < MIN_DISK_SPACE_LEFT => StoreError::Unavailable(format!(
                    "{why} (the database's disk has {left} bytes left, under the {MIN_DISK_SPACE_LEFT} its writes need)"
                )),
                _ => StoreError::Unavailable(why),
            },
            other => other,
        })
    }

    fn open_on_disk(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(unavailable)?;
        // SQLite opens a file it may not write read-only, without a word: every write would
        // then fail while reads and the health check's read succeed.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(unavailable)? {
            return Err(StoreError::Incompatible(
                "it can be read but not written (the file's permissions, or a read-only file system): the server writes to it"
                    .to_owned(),
            ));
        }
        // WAL lets readers run beside the writer; FULL syncs every commit (the migrations and
        // the sealing below) until the writer's syncer takes durability over (`durability`), so
        // that an acknowledged write survives a crash of the process or the machine.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
        // The writer rolls a failed request back to its savepoint: the journal that allows it
        // stays in memory instead of a temporary file created for every batch.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(unavailable)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT)
            .map_err(unavailable)?;
        // The writer keeps the pages it writes again and again (the last pages of the indexes
        // it appends to) in memory rather than reading them back from the file.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(unavailable)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
        keep_statements(&conn)?;
        schema::migrate(&mut conn)?;
        sealing::check_and_seal(&mut conn, options.secret_key.as_ref())?;
        let durability = durability(&conn, path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Writer::start(conn, durability, options.on_durability_lost.clone())?,
                _checkpointer: Checkpointer::start(path)?,
                readers: Mutex::new(Vec::new()),
                work: PullWakers::default(),
                dispatch_work: Arc::new(Notify::new()),
                printer: Mutex::new(None),
                secrets: Mutex::new(Known::new(credentials::KNOWN_SECRETS, |_| 1)),
                services: Mutex::new(Known::new(services::KNOWN_SERVICES, |services| services.len())),
                spent_budgets: crate::store::SpentBudgets::default(),
                max_attempts: options.max_attempts.max(1),
                secret_key: options.secret_key,
            }),
        })
    }

    /// When the next lease runs out (Unix seconds), if any is held: through the index of
    /// leases.
    pub fn next_lease_expiry(&self) -> StoreResult<Option<i64>> {
        self.read(|conn| conn.query_row(NEXT_LEASE_EXPIRY, [], |r| r.get(0)).map_err(unavailable))
    }

    /// Periodic upkeep: leases that ran out are released (or fail), finished deployments
    /// older than `retention_secs` are pruned, and expired delivery ids and push marks are
    /// removed. Wakes waiting consumers when work came free.
    pub async fn maintain(&self, retention_secs: i64) -> StoreResult<Maintenance> {
        let max_attempts = self.inner.max_attempts;
        let now = crate::util::now_unix();
        let leases_expired = self
            .write(move |conn| {
                let leases_expired = lifecycle::expire(conn, None, now, max_attempts)?;
                deliveries::purge(conn, now)?;
                history::purge(conn, now)?;
                Ok(leases_expired)
            })
            .await?;
        if leases_expired > 0 {
            self.work_changed_everywhere();
        }
        // In chunks, each its own write: a large backlog (after a long stop, or a shorter
        // retention) never holds every other write back for long.
        let mut deployments_pruned = 0;
        loop {
            let pruned = self
                .write(move |conn| {
                    conn.execute(
                        PRUNE_FINISHED,
                        rusqlite::params![now - retention_secs, PRUNE_CHUNK as i64],
                    )
                    .map_err(unavailable)
                })
                .await?;
            deployments_pruned += pruned;
            if pruned < PRUNE_CHUNK {
                break;
            }
        }
        Ok(Maintenance {
            leases_expired,
            deployments_pruned,
        })
    }

    /// Print every deployment recorded from now on as one JSON line on stdout (a debugging
    /// aid). Lines go through a bounded backlog to a thread of their own: a slow, full or
    /// closed stdout drops lines, never delays or fails a request.
    pub fn print_deployments(&self) {
        let (lines, backlog) = std::sync::mpsc::sync_channel::<String>(PRINT_BACKLOG);
        let started = std::thread::Builder::new()
            .name("deployment-printer".to_owned())
            .spawn(move || {
                use std::io::Write;
                for line in backlog {
                    // Write errors (a closed pipe) are ignored: printing is never an answer.
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                }
            });
        match started {
            Ok(thread) => *lock(&self.inner.printer) = Some(Printer { lines, thread }),
            Err(e) => tracing::warn!(error = %e, "deployments will not be printed: no thread for it"),
        }
    }

    /// Stop printing, giving the lines still in the backlog up to `timeout` to be written (a
    /// stdout nobody reads may never take them).
    pub fn finish_printing(&self, timeout: Duration) {
        let Some(Printer { lines, thread }) = lock(&self.inner.printer).take() else {
            return;
        };
        drop(lines);
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }

    /// Notified whenever work may have become available to `org`'s pull consumers.
    pub fn work_notifier(&self, org: &str) -> Arc<Notify> {
        self.inner.work.of(org)
    }

    /// Notified whenever work may have become available to the dispatcher.
    pub fn dispatch_notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.dispatch_work)
    }

    /// Wake `org`'s consumers and the dispatcher: work may have come free or fallen due.
    fn work_changed(&self, org: &str) {
        self.inner.work.wake(org);
        self.inner.dispatch_work.notify_waiters();
    }

    /// Wake every organization's consumers and the dispatcher.
    fn work_changed_everywhere(&self) {
        self.inner.work.wake_all();
        self.inner.dispatch_work.notify_waiters();
    }

    /// What a request's committed deployments set in motion; `to_dispatch` when one of them
    /// is for a service with a deploy target.
    fn recorded(&self, requests: &[&DeploymentRequest], to_dispatch: bool) {
        if requests.is_empty() {
            return;
        }
        let mut woken: Option<&str> = None;
        for request in requests {
            let org = request.organization_id.as_str();
            if woken != Some(org) {
                self.inner.work.wake(org);
                woken = Some(org);
            }
        }
        if to_dispatch {
            self.inner.dispatch_work.notify_waiters();
        }
        if let Some(printer) = lock(&self.inner.printer).as_ref() {
            for request in requests {
                if let Ok(line) = serde_json::to_string(request) {
                    let _ = printer.lines.try_send(line);
                }
            }
        }
    }

    /// Run `read` on a read connection, on this thread.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = match lock(&self.inner.readers).pop() {
            Some(conn) => conn,
            None => open_reader(&self.inner.path)?,
        };
        let result = read(&conn);
        let mut idle = lock(&self.inner.readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Run `write` in the writer's next group commit.
    async fn write<T, F>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.inner.writer.write(write).await
    }
}

/// How the writer makes its commits durable: with the write-ahead log in place, its commits
/// stop fsyncing (`synchronous=NORMAL` keeps the log consistent) and the writer's syncer
/// fsyncs the log before any of them is answered, so that the disk's time overlaps the next
/// batch's work. Anything else (no log file to sync) keeps an fsync at every commit.
fn durability(conn: &Connection, path: &Path) -> StoreResult<Durability> {
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(unavailable)?;
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    let log = PathBuf::from(log);
    if !mode.eq_ignore_ascii_case("wal") || !log.is_file() {
        return Ok(Durability::AtCommit);
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(unavailable)?;
    Ok(Durability::SyncedLog(log))
}

/// The wakers of each organization's waiting pull consumers: work recorded for one
/// organization wakes its own long polls only, not every waiting poll of the server (each of
/// which would then look at the database).
#[derive(Default)]
struct PullWakers {
    by_org: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Wakers kept before those no poll holds any more are let go.
const PULL_WAKERS_KEPT: usize = 256;

impl PullWakers {
    fn of(&self, org: &str) -> Arc<Notify> {
        let mut by_org = lock(&self.by_org);
        if let Some(notify) = by_org.get(org) {
            return Arc::clone(notify);
        }
        if by_org.len() >= PULL_WAKERS_KEPT {
            by_org.retain(|_, notify| Arc::strong_count(notify) > 1);
        }
        let notify = Arc::new(Notify::new());
        by_org.insert(org.to_owned(), Arc::clone(&notify));
        notify
    }

    fn wake(&self, org: &str) {
        if let Some(notify) = lock(&self.by_org).get(org) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for notify in lock(&self.by_org).values() {
            notify.notify_waiters();
        }
    }
}

/// A poisoned lock only means a thread panicked while holding it; the data (a pool, a
/// channel) is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(unavailable)?;
    conn.pragma_update(None, "query_only", true).map_err(unavailable)?;
    keep_statements(&conn)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(unavailable)?;
    Ok(conn)
}

/// Statements are prepared once per connection and kept (`prepare_cached`), with plans that
/// do not depend on the values bound (SQLite's query planner stability guarantee). Without
/// it, SQLite compares bound values with the conditions of partial indexes while planning,
/// and then prepares such a statement again each time it is taken from the cache.
fn keep_statements(conn: &Connection) -> StoreResult<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(unavailable)?;
    Ok(())
}

/// Run one statement through the connection's cache of prepared statements: the writer and
/// the readers run the same few on every delivery, and preparing one costs more than running it.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(unavailable)
}

pub(crate) fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("database error: {e}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Every row of a query, converted.
fn collect<T, R>(
    rows: rusqlite::MappedRows<'_, impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>>,
    convert: impl Fn(R) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        out.push(convert(row.map_err(unavailable)?)?);
    }
    Ok(out)
}

/// Cut a `limit + 1` result down to a page.
fn page<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let last_key = if more { items.last().map(key) } else { None };
    Page { items, last_key }
}

/// The row of `org` with id `id` that `select` (`SELECT … FROM table`) reads: `row` reads it,
/// `item` makes it an item.
fn row_by_id<R, T>(
    conn: &Connection,
    select: &str,
    (org, id): (&str, &str),
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    item: impl FnOnce(R) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        &format!("{select} WHERE org = ?1 AND id = ?2"),
        rusqlite::params![org, id],
        row,
    )
    .optional()
    .map_err(unavailable)?
    .map(item)
    .transpose()
}

/// A page of `org`'s rows that `select` (`SELECT … FROM table`) reads, in id order: `row`
/// reads a row, `item` makes it an item, `key` gives an item's id.
fn page_by_id<R, T>(
    conn: &Connection,
    select: &str,
    (org, request): (&str, PageRequest<'_>),
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    item: impl Fn(R) -> StoreResult<T>,
    key: impl Fn(&T) -> String,
) -> StoreResult<Page<T>> {
    let mut stmt = conn
        .prepare_cached(&format!("{select} WHERE org = ?1 AND id > ?2 ORDER BY id LIMIT ?3"))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(
            rusqlite::params![org, request.after.unwrap_or(""), (request.limit + 1) as i64],
            row,
        )
        .map_err(unavailable)?;
    Ok(page(collect(rows, item)?, request.limit, key))
}

/// The least space left on the database's disk for the health check to pass: a group commit
/// appends up to a few hundred KiB to the log.
const MIN_DISK_SPACE_LEFT: u64 = 1 << 20;

/// Bytes an unprivileged process may still write on the file system of `path` (of its
/// directory, before the file is created).
fn space_left(path: &Path) -> rustix::io::Result<u64> {
    let on = if path.exists() {
        path
    } else {
        path.parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    rustix::fs::statvfs(on).map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // A full disk often still takes the one-row write below (it fits in space the log
        // holds already) while every request's write fails: the space left is read first.
        let left = space_left(&self.inner.path)
            .map_err(|e| StoreError::Unavailable(format!("cannot read the space left on the database's disk: {e}")))?;
        if left < MIN_DISK_SPACE_LEFT {
            return Err(StoreError::Unavailable(format!(
                "the database's disk has {left} bytes left, under the {MIN_DISK_SPACE_LEFT} its writes need"
            )));
        }
        // Both paths: a read, and a write that reaches the log and its sync (an empty
        // transaction writes nothing, and succeeds on a full disk or a read-only file).
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(unavailable)
        })?;
        self.write(|conn| {
            execute(
                conn,
                "INSERT INTO health_checks (id, checks) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET checks = checks + 1",
                [],
            )
            .map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::plans::{migrated, query_plan};
    use super::*;

    /// A database SQLite can only read (its file's permissions, a read-only file system; here
    /// a read-only open) is refused when opened, not served with every write failing.
    #[test]
    fn a_database_that_cannot_be_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autodeploy.db");
        drop(SqliteStore::open(&path).unwrap());
        let read_only = PathBuf::from(format!("file:{}?mode=ro", path.display()));
        match SqliteStore::open(&read_only) {
            Err(StoreError::Incompatible(reason)) => assert!(reason.contains("not written"), "{reason}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("a read-only database was taken"),
        }
    }

    /// The health check writes: each check changes the database, so that it fails where
    /// writes fail (an empty transaction writes nothing and would not).
    #[tokio::test]
    async fn the_health_check_writes_to_the_database() {
        let (dir, store) = super::plans::temp_store();
        store.ping().await.unwrap();
        store.ping().await.unwrap();
        let checks: i64 = Connection::open(dir.path().join("db"))
            .unwrap()
            .query_row("SELECT checks FROM health_checks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(checks, 2);
    }

    /// Pruning reads the finished deployments through their index, not the whole log.
    #[test]
    fn finished_deployments_are_pruned_through_their_index() {
        let conn = migrated();
        let plan = query_plan(&conn, PRUNE_FINISHED, rusqlite::params![10, 100]);
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH") && step.contains("INDEX deployments_finished (updated_unix<?)")),
            "{plan:#?}"
        );
    }

    /// The next lease to run out is read from the index of leases, whatever the log's size.
    #[test]
    fn the_next_lease_expiry_is_read_from_its_index() {
        let conn = migrated();
        let plan = query_plan(&conn, NEXT_LEASE_EXPIRY, []);
        assert!(
            matches!(plan.as_slice(), [step] if step.starts_with("SEARCH") && step.contains("INDEX deployments_leases")),
            "{plan:#?}"
        );
    }
}

/// What the plan tests of the store's statements share, and a store on a file of its own.
#[cfg(test)]
mod plans {
    use rusqlite::{Connection, Params};

    /// A store on a new database file in a temporary directory (removed when dropped).
    pub(super) fn temp_store() -> (tempfile::TempDir, super::SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::SqliteStore::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    /// An in-memory database with this build's schema, its statements planned as the store's.
    pub(super) fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::keep_statements(&conn).unwrap();
        super::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// The steps of SQLite's plan for `sql` bound to `params`.
    pub(super) fn query_plan(conn: &Connection, sql: &str, params: impl Params) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(params, |r| r.get(3))
            .unwrap()
            .map(|step| step.unwrap())
            .collect()
    }
}
