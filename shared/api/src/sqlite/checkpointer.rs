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

/// Passes with nothing new in the log, all of it copied back, before the log file is emptied:
/// under load the log grows to up to [`WRITER_AUTOCHECKPOINT`] pages and SQLite keeps the
/// file at that size (it reuses it); once the server is idle that space is given back to the
/// disk. Never under load, when the file would only be grown again.
const IDLE_PASSES_BEFORE_TRUNCATE: u32 = 10;

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
                let mut idle = Idle::default();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    // PASSIVE: what can be copied without waiting for the writer or a reader.
                    match checkpoint(&conn, "PASSIVE") {
                        Ok(pass) if idle.after(pass) => {
                            // TRUNCATE waits for no one (no busy handler here): a writer or a
                            // reader arriving meanwhile makes it a no-op, tried again later.
                            if let Err(err) = checkpoint(&conn, "TRUNCATE") {
                                tracing::debug!(error = %err, "log not emptied");
                            }
                        }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "checkpoint deferred"),
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the database checkpointer: {e}")))?;
        Ok(Self { _stop: stop })
    }
}

/// What a checkpoint pass found: whether it was blocked, the frames in the log, and how many
/// of them are copied back (`PRAGMA wal_checkpoint`'s three columns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pass {
    busy: bool,
    log_frames: i64,
    copied_frames: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Pass> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Pass {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            copied_frames: r.get(2)?,
        })
    })
}

/// Counts the passes that found the log unchanged and copied back whole.
#[derive(Default)]
struct Idle {
    last: Option<Pass>,
    passes: u32,
}

impl Idle {
    /// Whether the log should be emptied after `pass`: the last
    /// [`IDLE_PASSES_BEFORE_TRUNCATE`] passes found the same log, all copied back.
    fn after(&mut self, pass: Pass) -> bool {
        let settled = !pass.busy && pass.log_frames > 0 && pass.copied_frames == pass.log_frames;
        self.passes = if settled && self.last == Some(pass) {
            self.passes + 1
        } else {
            0
        };
        self.last = Some(pass);
        if self.passes >= IDLE_PASSES_BEFORE_TRUNCATE {
            self.passes = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a burst of writes, the log file the burst grew is emptied once the store is idle.
    #[tokio::test]
    async fn an_idle_store_gives_the_log_s_space_back() {
        let (dir, store) = crate::sqlite::plans::temp_store();
        let log = dir.path().join("db-wal");
        store
            .write(|conn| {
                conn.execute_batch("CREATE TABLE burst (data BLOB)")
                    .map_err(unavailable)?;
                for _ in 0..64 {
                    conn.execute("INSERT INTO burst VALUES (zeroblob(65536))", [])
                        .map_err(unavailable)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let grown = std::fs::metadata(&log).unwrap().len();
        assert!(grown > 4 << 20, "{grown}");
        // A generous deadline: the passes are a second apart; a busy machine delays them.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::fs::metadata(&log).unwrap().len() > 0 {
            assert!(std::time::Instant::now() < deadline, "the log was never emptied");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The data is all there, in the database file.
        let rows = store
            .write(|conn| {
                conn.query_row("SELECT count(*) FROM burst", [], |r| r.get::<_, i64>(0))
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(rows, 64);
    }

    #[test]
    fn the_log_is_emptied_only_after_idle_passes() {
        let settled = |frames| Pass {
            busy: false,
            log_frames: frames,
            copied_frames: frames,
        };
        let mut idle = Idle::default();
        // The first sight of a log starts the count; each unchanged pass adds one.
        let emptied: Vec<bool> = (0..=IDLE_PASSES_BEFORE_TRUNCATE)
            .map(|_| idle.after(settled(500)))
            .collect();
        assert_eq!(emptied.iter().filter(|e| **e).count(), 1);
        assert!(*emptied.last().unwrap());
        // A log that keeps growing (load), one not all copied back, a blocked pass, or an
        // empty one never is.
        let mut idle = Idle::default();
        for frames in 1..100 {
            assert!(!idle.after(settled(frames)));
        }
        for pass in [
            Pass {
                copied_frames: 10,
                ..settled(500)
            },
            Pass {
                busy: true,
                ..settled(500)
            },
            settled(0),
        ] {
            let mut idle = Idle::default();
            for _ in 0..100 {
                assert!(!idle.after(pass), "{pass:?}");
            }
        }
    }
}
