//! Checkpoints beside the writer: a thread with a connection of its own copies what the
//! write-ahead log holds back into the database file, so that the writer does not stop
//! answering requests to do it (and to fsync the database file) every thousand pages.
//!
//! Durability does not depend on it: every commit is fsynced in the log before it is answered.
//! The writer keeps a far larger automatic checkpoint as a safety net, should this thread fall
//! behind.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::unavailable;
use crate::store::{StoreError, StoreResult};

/// How often the log is copied back: a page written many times in between (the last page of
/// an index, of the deployment log) is copied once.
const INTERVAL: Duration = Duration::from_secs(1);

/// Pages the log may hold before the writer checkpoints itself (SQLite's default is 1,000):
/// 128 MiB of 4 KiB pages. Under load the log outgrew half of it between two of the
/// checkpointer's passes, and each checkpoint the writer made held every write back.
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 32_768;

/// Stops the thread when dropped (with the store).
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpointer".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    // PASSIVE: what can be copied without waiting for the writer or a reader.
                    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %err, "checkpoint deferred");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the database checkpointer: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
