//! Pull consumers: leasing deployments with a long poll that wakes on new work, without
//! polling the database in a loop or holding a connection while it waits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::{LeaseRequest, Leased, PullQueue, StoreError};
use crate::util::until_unix_second;

/// Lease up to `request.max` deployments of `org`, waiting up to `wait` for work to arrive
/// when none is there. Wakes on the store's notifications (a deployment recorded, released or
/// acknowledged) and when a lease runs out or a retry falls due; answers what it has once the
/// time is up or the server shuts down, possibly nothing.
///
/// A long poll waits only while [`WaitingPolls`] has room for it; past its bounds it answers
/// at once with what there is, as one without `wait_seconds` does. After each wait it asks
/// `still_allowed` first (its caller's token may have been revoked meanwhile), and answers
/// nothing once it is not.
pub async fn lease<E, F>(
    pull: &dyn PullQueue,
    waiting: &WaitingPolls,
    draining: &Draining,
    org: &str,
    request: LeaseRequest,
    wait: Duration,
    still_allowed: impl Fn() -> F,
) -> Result<Vec<Leased>, E>
where
    F: Future<Output = Result<bool, E>>,
    E: From<StoreError>,
{
    let deadline = Instant::now() + wait;
    let notifier = pull.notifier(org);
    let mut slot: Option<WaitingSlot<'_>> = None;
    loop {
        // Registered before looking, so that work recorded in between still wakes us.
        let notified = notifier.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if slot.is_some() && !still_allowed().await? {
            return Ok(Vec::new());
        }
        let outlook = pull.outlook(org).await?;
        if outlook.available {
            let leased = pull.lease(org, request).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
        }
        let now = Instant::now();
        if now >= deadline || draining.has_begun() {
            return Ok(Vec::new());
        }
        if slot.is_none() {
            slot = waiting.enter(org);
            if slot.is_none() {
                return Ok(Vec::new());
            }
        }
        let until = match outlook.next_due_unix {
            Some(due) => deadline.min(now + until_unix_second(due, SystemTime::now())),
            None => deadline,
        };
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(until) => {}
            () = draining.begun() => {}
        }
    }
}

/// The long polls waiting at once, bounded per organization and over the server: a waiting
/// poll holds a connection and is woken by every deployment its organization records, so
/// waiting consumers without a bound could take every connection of the server (no webhook
/// could arrive) and slow their organization's writes down.
pub struct WaitingPolls {
    per_organization: usize,
    total: usize,
    waiting: Mutex<(usize, HashMap<String, usize>)>,
}

/// Long polls one organization may have waiting at once, by default.
pub const WAITING_POLLS_PER_ORGANIZATION: usize = 64;

impl WaitingPolls {
    pub fn new(per_organization: usize, total: usize) -> Self {
        Self {
            per_organization,
            total,
            waiting: Mutex::default(),
        }
    }

    /// A place for one more waiting poll of `org`, held until dropped; `None` at a bound.
    fn enter(&self, org: &str) -> Option<WaitingSlot<'_>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_org) = &mut *waiting;
        let of_org = per_org.get(org).copied().unwrap_or(0);
        if *total >= self.total || of_org >= self.per_organization {
            return None;
        }
        *total += 1;
        per_org.insert(org.to_owned(), of_org + 1);
        Some(WaitingSlot {
            polls: self,
            org: org.to_owned(),
        })
    }
}

impl Default for WaitingPolls {
    /// Bounded per organization only.
    fn default() -> Self {
        Self::new(WAITING_POLLS_PER_ORGANIZATION, usize::MAX)
    }
}

/// One waiting poll's place in [`WaitingPolls`].
struct WaitingSlot<'a> {
    polls: &'a WaitingPolls,
    org: String,
}

impl Drop for WaitingSlot<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .polls
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_org) = &mut *waiting;
        *total = total.saturating_sub(1);
        if let Some(count) = per_org.get_mut(&self.org) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_org.remove(&self.org);
            }
        }
    }
}

/// Set when the server begins to shut down: long polls then answer what they have at once
/// instead of holding the shutdown for up to their `wait_seconds` (longer than the 10 s a
/// container runtime grants a stopping container before killing it).
#[derive(Default)]
pub struct Draining {
    begun: AtomicBool,
    wake: Notify,
}

impl Draining {
    /// Shutting down from now on; wakes every long poll.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn has_begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// Resolves once shutting down has begun.
    pub async fn begun(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.has_begun() {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_polls_are_bounded_per_organization_and_in_all() {
        let polls = WaitingPolls::new(2, 3);
        let a1 = polls.enter("a").expect("a's first");
        let _a2 = polls.enter("a").expect("a's second");
        assert!(polls.enter("a").is_none(), "a's third: a's bound");
        let _b1 = polls.enter("b").expect("b's first");
        assert!(polls.enter("c").is_none(), "the server's bound");
        drop(a1);
        let _c1 = polls.enter("c").expect("room again once one ends");
        assert!(polls.enter("a").is_none());
    }
}
