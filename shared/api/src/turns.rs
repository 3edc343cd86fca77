//! Writes that read, decide and write one record take turns in this process: two PATCHes of
//! one service, or two tags of one image, would otherwise both read the same state and one
//! would lose the store's condition and start over, again and again under a burst. Taking
//! turns makes them land one after the other. Across processes (Lambda instances) the store's
//! conditions still decide, and a write that loses retries after a random pause
//! ([`retry_pause`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

/// How long a write waits for its turn before it gives up (a 503 saying the record is busy).
pub const TURN_WAIT: Duration = Duration::from_secs(10);

/// One lock per record being written, made when a write asks for it and dropped when no write
/// holds or waits for it.
#[derive(Default)]
pub struct WriteTurns {
    locks: Mutex<HashMap<String, Arc<TurnLock<()>>>>,
}

/// A write's turn: the record is its own until this is dropped.
pub struct Turn<'a> {
    turns: &'a WriteTurns,
    key: String,
    lock: Option<Arc<TurnLock<()>>>,
    held: Option<OwnedMutexGuard<()>>,
}

/// The turn did not come within [`TURN_WAIT`].
#[derive(Debug)]
pub struct Busy;

impl WriteTurns {
    /// Wait for the turn to write the record `key` names.
    pub async fn take(&self, key: String) -> Result<Turn<'_>, Busy> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        // Made before waiting, so that a write cancelled while it waits still cleans up.
        let mut turn = Turn {
            turns: self,
            key,
            lock: Some(Arc::clone(&lock)),
            held: None,
        };
        turn.held = Some(
            tokio::time::timeout(TURN_WAIT, lock.lock_owned())
                .await
                .map_err(|_| Busy)?,
        );
        Ok(turn)
    }

    /// Records with a lock right now (held or waited for).
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held.take();
        self.lock.take();
        let mut locks = self.turns.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map's own reference left: no write holds or waits for this record. Counted
        // under the map's lock, which every new waiter takes to clone its reference.
        if locks.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.key);
        }
    }
}

/// A random pause before retry `attempt` (from 1) of a write that lost its store condition to
/// another process: up to 10 ms doubled each attempt, at most 320 ms, so that racing writers
/// spread out instead of colliding again.
pub fn retry_pause(attempt: usize) -> Duration {
    let ceiling_ms = 10u64 << attempt.clamp(1, 6).saturating_sub(1);
    Duration::from_millis(rand::rng().random_range(1..=ceiling_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_is_written_by_one_at_a_time_and_forgotten_after() {
        let turns = Arc::new(WriteTurns::default());
        let first = turns.take("service/acme/api".to_owned()).await.unwrap();
        // Another record is not held up.
        drop(turns.take("service/acme/web".to_owned()).await.unwrap());
        let waiting = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move { turns.take("service/acme/api".to_owned()).await.map(|_| ()).is_ok() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert!(waiting.await.unwrap());
        assert!(turns.is_empty());
    }

    #[tokio::test]
    async fn a_write_cancelled_while_waiting_leaves_nothing_behind() {
        let turns = WriteTurns::default();
        let first = turns.take("k".to_owned()).await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(5), turns.take("k".to_owned())).await;
        assert!(cancelled.is_err());
        assert_eq!(turns.len(), 1);
        drop(first);
        assert!(turns.is_empty());
    }

    #[test]
    fn pauses_grow_and_stay_bounded() {
        for attempt in 1..20 {
            let pause = retry_pause(attempt);
            assert!(pause >= Duration::from_millis(1));
            assert!(
                pause <= Duration::from_millis(10 << (attempt.min(6) - 1)),
                "{attempt}: {pause:?}"
            );
        }
    }
}
