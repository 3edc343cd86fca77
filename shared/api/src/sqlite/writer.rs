//! The one writer of the database: a thread that owns the write connection and commits the
//! writes of every request waiting at that moment in one transaction, with one fsync (group
//! commit), then answers each. A request's write runs in a savepoint of its own, so a write
//! that fails (or a guard that does not hold) is undone alone and its batch-mates commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::execute;
use crate::store::{StoreError, StoreResult};

/// Writes committed together at most: bounds how long the first of a batch waits for the
/// others to run.
const MAX_BATCH: usize = 512;

/// One request's write, run inside the batch's transaction.
trait Job: Send {
    /// Run the write; `false` when it failed and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answer the caller: its own result, or the reason the batch did not commit.
    fn finish(self: Box<Self>, batch_failure: Option<&StoreError>);
}

struct WriteJob<F, T> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        // A bug in one write must not take the writer (and every later write) down with it.
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
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

/// The handle requests send their writes through. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Start the writer thread on `conn`; it stops when every handle is dropped.
    pub(super) fn start(conn: Connection) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(&conn, &queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the database writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Run `work` in the next group commit; answers once its batch is durable.
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            work: Some(work),
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

fn run(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let failure = commit(conn, &mut batch).err();
        for job in batch {
            job.finish(failure.as_ref());
        }
    }
}

/// One transaction over the batch, each job in a savepoint; one fsync at `COMMIT`.
fn commit(conn: &Connection, batch: &mut [Box<dyn Job>]) -> StoreResult<()> {
    execute(conn, "BEGIN IMMEDIATE", [])?;
    let result = (|| {
        for job in batch.iter_mut() {
            execute(conn, "SAVEPOINT job", [])?;
            if !job.run(conn) {
                execute(conn, "ROLLBACK TO job", [])?;
            }
            execute(conn, "RELEASE job", [])?;
        }
        execute(conn, "COMMIT", []).map(|_| ())
    })();
    if result.is_err() {
        // Nothing of the batch was committed; the connection is ready for the next one.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}
