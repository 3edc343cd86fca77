//! The one writer of the database: a thread that owns the write connection and commits the
//! writes of every request waiting at that moment in one transaction (group commit). A write
//! that fails is undone alone and its batch-mates commit: the batch runs first as it is, and
//! should a write fail, it is rolled back and run again with each write in a savepoint of its
//! own but the failed one (whose failure stands). Writes almost never fail, and a savepoint
//! copies every page a write touches, so the common batch pays for none.
//!
//! Durability is a second thread's job: the writer commits without waiting for the disk and
//! hands the batch to the syncer, which fsyncs the write-ahead log once for every batch
//! committed since its last fsync and only then answers their requests. Nothing is answered
//! before it is on disk, and the writer runs the next batch while the disk works.
//!
//! Should the log fail to sync after batches committed, their writes are in the database but
//! not known to be on disk: neither "done" nor "nothing was changed" would be true. Their
//! requests are never answered, later writes are refused before they run, and the store's
//! owner is told ([`OnDurabilityLost`]); the standalone server stops there, and its restart
//! recovers whatever the disk holds (a redelivery then finds the delivery or does it anew).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::execute;
use crate::store::{StoreError, StoreResult};

/// Writes committed together at most: bounds how long the first of a batch waits for the
/// others to run.
const MAX_BATCH: usize = 512;

/// One request's write, run inside the batch's transaction.
trait Job: Send {
    /// Run the write (again, when its batch is run again); `false` when it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller: its own result, or the reason the batch did not commit.
    fn finish(self: Box<Self>, batch_failure: Option<&StoreError>);
}

struct WriteJob<F, T> {
    work: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: Fn(&Connection) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // A bug in one write must not take the writer (and every later write) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| (self.work)(conn))).unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "a database write failed unexpectedly".to_owned(),
            ))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, batch_failure: Option<&StoreError>) {
        let result = match (batch_failure, self.result) {
            (Some(err), _) => Err(err.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the write did not run".to_owned())),
        };
        // The caller may have gone (its client hung up): the write stands all the same.
        let _ = self.reply.send(result);
    }
}

/// Told, once, why the store lost its durability (see the module's documentation).
#[derive(Clone)]
pub struct OnDurabilityLost(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for OnDurabilityLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDurabilityLost")
    }
}

/// The handle requests send their writes through. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

/// Where a committed batch is made durable before it is answered.
pub(super) enum Durability {
    /// The connection fsyncs the log at each commit itself (`synchronous=FULL`).
    AtCommit,
    /// The connection commits without fsyncing (`synchronous=NORMAL`, whose log stays
    /// consistent but not durable); the syncer fsyncs this log file before answering.
    SyncedLog(PathBuf),
}

type Batch = Vec<Box<dyn Job>>;

impl Writer {
    /// Start the writer thread on `conn` (and the syncer, for [`Durability::SyncedLog`]); they
    /// stop when every handle is dropped.
    pub(super) fn start(
        conn: Connection,
        durability: Durability,
        on_lost: Option<OnDurabilityLost>,
    ) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let lost = Lost {
            flag: Arc::new(AtomicBool::new(false)),
            tell: on_lost,
        };
        let committed = match durability {
            Durability::AtCommit => None,
            Durability::SyncedLog(log) => {
                let (committed, batches) = mpsc::channel::<Batch>();
                let lost = lost.clone();
                spawn("sqlite-syncer", move || sync_and_answer(&log, &batches, &lost))?;
                Some(committed)
            }
        };
        spawn("sqlite-writer", move || run(&conn, &queue, committed.as_ref(), &lost))?;
        Ok(Self { jobs })
    }

    /// Run `work` in the next group commit; answers once its batch is durable.
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            work,
            result: None,
            reply,
        };
        self.jobs
            .send(Box::new(job))
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".to_owned()))?
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> StoreResult<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable(format!("cannot start the database's {name} thread: {e}")))
}

/// Whether durability was lost, and whom to tell.
#[derive(Clone)]
struct Lost {
    flag: Arc<AtomicBool>,
    tell: Option<OnDurabilityLost>,
}

impl Lost {
    /// Keep `committed` unanswered for good (its requests' replies are never sent nor
    /// dropped), refuse every later write, and tell why, once.
    fn committed_but_not_durable(&self, committed: Vec<Batch>, reason: &str) {
        std::mem::forget(committed);
        if !self.flag.swap(true, Ordering::AcqRel) {
            tracing::error!(reason, "the database lost its durability: no more writes are taken");
            if let Some(OnDurabilityLost(tell)) = &self.tell {
                tell(reason);
            }
        }
    }
}

fn run(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>, syncer: Option<&mpsc::Sender<Batch>>, lost: &Lost) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if lost.flag.load(Ordering::Acquire) {
            // Not run: "nothing was changed" is true of these.
            let refused = StoreError::Unavailable("the database's log could not be synced to disk".to_owned());
            answer(batch, Some(&refused));
            continue;
        }
        match (commit(conn, &mut batch), syncer) {
            (Ok(()), Some(syncer)) => {
                if let Err(mpsc::SendError(batch)) = syncer.send(batch) {
                    lost.committed_but_not_durable(vec![batch], "the database's syncer has stopped");
                }
            }
            (Ok(()), None) => answer(batch, None),
            (Err(failure), _) => answer(batch, Some(&failure)),
        }
    }
}

fn answer(batch: Batch, failure: Option<&StoreError>) {
    for job in batch {
        job.finish(failure);
    }
}

/// Fsync the log once for every batch committed since the last fsync, then answer them.
fn sync_and_answer(log: &std::path::Path, batches: &mpsc::Receiver<Batch>, lost: &Lost) {
    while let Ok(first) = batches.recv() {
        let mut committed = vec![first];
        committed.extend(batches.try_iter());
        // The log's file is the same while the store has it open; opened for each fsync all
        // the same, so that nothing rests on a descriptor kept across a change of it (a log
        // removed under the server is a failure, not a sync of a file nobody will read).
        match std::fs::File::open(log).and_then(|file| file.sync_data()) {
            Ok(()) => {
                for batch in committed {
                    answer(batch, None);
                }
            }
            Err(e) => {
                let reason = format!("the database's log {} could not be synced to disk: {e}", log.display());
                lost.committed_but_not_durable(committed, &reason);
                // Batches the writer committed before it saw the loss are not answered either.
                for batch in batches.iter() {
                    std::mem::forget(batch);
                }
                return;
            }
        }
    }
}

/// One transaction over the batch: run as it is, or, once a write failed, again with every
/// other write in a savepoint.
fn commit(conn: &Connection, batch: &mut [Box<dyn Job>]) -> StoreResult<()> {
    execute(conn, "BEGIN IMMEDIATE", [])?;
    let result = (|| {
        if let Some(failed) = batch.iter_mut().position(|job| !job.run(conn)) {
            // A failed statement may have ended the transaction itself (SQLite does on some
            // errors): the rollback's own error then says nothing.
            let _ = conn.execute_batch("ROLLBACK");
            execute(conn, "BEGIN IMMEDIATE", [])?;
            for (i, job) in batch.iter_mut().enumerate() {
                if i == failed {
                    continue;
                }
                execute(conn, "SAVEPOINT job", [])?;
                if !job.run(conn) {
                    execute(conn, "ROLLBACK TO job", [])?;
                }
                execute(conn, "RELEASE job", [])?;
            }
        }
        execute(conn, "COMMIT", []).map(|_| ())
    })();
    if result.is_err() {
        // Nothing of the batch was committed; the connection is ready for the next one.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(
        durability: impl FnOnce(&std::path::Path) -> Durability,
        on_lost: Option<OnDurabilityLost>,
    ) -> (Writer, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("autodeploy-writer-{}", crate::util::new_deployment_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conn = Connection::open(dir.join("db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        (Writer::start(conn, durability(&dir), on_lost).unwrap(), dir)
    }

    fn insert(v: i64) -> impl Fn(&Connection) -> StoreResult<usize> + Send + 'static {
        move |conn: &Connection| execute(conn, "INSERT INTO t VALUES (?1)", [v])
    }

    /// A write is answered once the syncer synced the log.
    #[tokio::test]
    async fn an_answer_waits_for_the_log_to_be_synced() {
        let (synced, dir) = writer(|dir| Durability::SyncedLog(dir.join("db-wal")), None);
        assert_eq!(synced.write(insert(1)).await.unwrap(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// When the log cannot be synced, the write that committed is never answered (neither
    /// "done" nor "nothing was changed" would be true), the owner is told, and a later write
    /// is refused before it runs.
    #[tokio::test]
    async fn a_log_that_cannot_be_synced_answers_nothing_and_takes_no_more_writes() {
        let (told, reason) = std::sync::mpsc::channel::<String>();
        let told = std::sync::Mutex::new(told);
        let on_lost = OnDurabilityLost(Arc::new(move |reason: &str| {
            let _ = told.lock().unwrap().send(reason.to_owned());
        }));
        let (unsynced, dir) = writer(|dir| Durability::SyncedLog(dir.join("no-such-log")), Some(on_lost));
        let mut committed = Box::pin(unsynced.write(insert(1)));
        // The first poll hands the write over.
        assert!(futures::poll!(committed.as_mut()).is_pending());
        let reason = tokio::task::spawn_blocking(move || reason.recv().unwrap())
            .await
            .unwrap();
        assert!(reason.contains("could not be synced"), "{reason}");
        // Told after the write was set aside for good: it stays unanswered.
        assert!(futures::poll!(committed.as_mut()).is_pending());

        match unsynced.write(insert(2)).await {
            Err(StoreError::Unavailable(reason)) => assert!(reason.contains("synced"), "{reason}"),
            other => panic!("a write after the loss: {other:?}"),
        }
        let reader = Connection::open(dir.join("db")).unwrap();
        let values: String = reader
            .query_row("SELECT group_concat(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(values, "1", "the refused write did not run");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn job<T: Send + 'static>(
        work: impl Fn(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> (Box<dyn Job>, oneshot::Receiver<StoreResult<T>>) {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            work,
            result: None,
            reply,
        };
        (Box::new(job), answer)
    }

    /// In one batch, a failed write is undone alone (what it wrote before failing included)
    /// and the writes before and after it commit, each answered with its own result.
    #[test]
    fn a_failed_write_is_undone_alone() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let (first, first_answer) = job(insert(1));
        let (failing, failing_answer) = job(|conn: &Connection| {
            execute(conn, "INSERT INTO t VALUES (2)", [])?;
            Err::<usize, _>(StoreError::PreconditionFailed)
        });
        let (last, last_answer) = job(insert(3));
        let mut batch = vec![first, failing, last];
        commit(&conn, &mut batch).unwrap();
        answer(batch, None);

        let values: String = conn
            .query_row("SELECT group_concat(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(values, "1,3");
        assert_eq!(first_answer.blocking_recv().unwrap().unwrap(), 1);
        assert!(matches!(
            failing_answer.blocking_recv().unwrap(),
            Err(StoreError::PreconditionFailed)
        ));
        assert_eq!(last_answer.blocking_recv().unwrap().unwrap(), 1);
    }
}
