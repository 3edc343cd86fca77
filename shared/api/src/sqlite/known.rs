//! What the store keeps in memory of what it read (webhook secrets, the services of a
//! repository), by organization then key. Right while this process is the database's only
//! writer, as the store assumes throughout: a write forgets what it changes once it committed
//! and before it is answered ([`SqliteStore::write_then_forget`]), and `generation` counts those
//! changes, so that a read that began before one does not keep what it read.

use std::collections::HashMap;

use rusqlite::Connection;

use super::SqliteStore;
use crate::store::{StoreError, StoreResult};

pub(super) struct Known<V> {
    generation: u64,
    /// By organization, then key: looked up without copying either.
    entries: HashMap<String, HashMap<String, V>>,
    /// What is kept weighs this much, over all entries.
    weight: usize,
    /// The most it may weigh: past it, everything is forgotten at once.
    bound: usize,
    weigh: fn(&V) -> usize,
}

impl<V> Known<V> {
    pub(super) fn new(bound: usize, weigh: fn(&V) -> usize) -> Self {
        Self {
            generation: 0,
            entries: HashMap::new(),
            weight: 0,
            bound,
            weigh,
        }
    }

    /// Where a read begins: what it reads is kept only if nothing changed since.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn get(&self, org: &str, key: &str) -> Option<&V> {
        self.entries.get(org)?.get(key)
    }

    /// Keep `value`, read from `generation` on, unless something changed since (the read may
    /// predate the change) or it alone weighs more than the bound.
    pub(super) fn keep(&mut self, generation: u64, org: &str, key: &str, value: V) {
        let weight = (self.weigh)(&value);
        if generation != self.generation || weight > self.bound {
            return;
        }
        if self.weight + weight > self.bound {
            self.entries.clear();
            self.weight = 0;
        }
        self.weight += weight;
        let of_org = self.entries.entry(org.to_owned()).or_default();
        if let Some(replaced) = of_org.insert(key.to_owned(), value) {
            self.weight -= (self.weigh)(&replaced);
        }
    }

    /// After what `org` keeps under `key` (under every key, with `None`) was written, or may
    /// have been.
    pub(super) fn forget(&mut self, org: &str, key: Option<&str>) {
        self.generation += 1;
        let weigh = self.weigh;
        let Some(of_org) = self.entries.get_mut(org) else {
            return;
        };
        match key {
            Some(key) => {
                if let Some(forgotten) = of_org.remove(key) {
                    self.weight -= weigh(&forgotten);
                }
            }
            None => {
                self.weight -= of_org.values().map(weigh).sum::<usize>();
                of_org.clear();
            }
        }
        if of_org.is_empty() {
            self.entries.remove(org);
        }
    }
}

impl SqliteStore {
    /// Run `write`, then `forget` what it changed of what is kept in memory, even when the
    /// write failed (it may have committed all the same); in a task of its own, so that a
    /// caller that goes away (its client hung up) cannot leave the old kept while the write
    /// commits.
    pub(super) async fn write_then_forget<T, F>(
        &self,
        write: F,
        forget: impl FnOnce(&SqliteStore) + Send + 'static,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let written = store.write(write).await;
            forget(&store);
            written
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("the write did not finish".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is kept stays within its bound, counted by weight; a change forgets what it
    /// names, and a read that began before it keeps nothing.
    #[test]
    fn what_is_kept_is_bounded_and_forgotten_when_changed() {
        let mut known: Known<Vec<u8>> = Known::new(10, Vec::len);
        let read = known.generation();
        known.keep(read, "acme", "shop", vec![0; 2]);
        known.keep(read, "acme", "shop", vec![0; 3]);
        known.keep(read, "acme", "site", vec![0; 1]);
        known.keep(read, "globex", "site", vec![0; 1]);
        assert_eq!(known.weight, 5);
        assert_eq!(known.get("acme", "shop").map(Vec::len), Some(3));

        // One key of an organization, then all of its keys.
        known.forget("acme", Some("site"));
        assert!(known.get("acme", "site").is_none());
        assert!(known.get("acme", "shop").is_some());
        known.forget("acme", None);
        assert!(known.get("acme", "shop").is_none());
        assert!(known.get("globex", "site").is_some());
        assert_eq!(known.weight, 1);

        // A read that began before a change keeps nothing.
        known.keep(read, "acme", "shop", vec![0; 1]);
        assert!(known.get("acme", "shop").is_none());

        // Past the bound, everything is forgotten before the new entry is kept; an entry
        // heavier than the bound is not kept at all.
        let read = known.generation();
        known.keep(read, "acme", "big", vec![0; 10]);
        assert!(known.get("globex", "site").is_none());
        assert_eq!(known.weight, 10);
        known.keep(read, "acme", "huge", vec![0; 11]);
        assert!(known.get("acme", "huge").is_none());
        assert_eq!(known.weight, 10);
    }
}
