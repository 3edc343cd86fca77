//! Pull consumers: leasing deployments with a long poll that wakes on new work, without
//! polling the database in a loop or holding a connection while it waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::{LeaseRequest, Leased, PullQueue, StoreResult};
use crate::util::until_unix_second;

/// Lease up to `request.max` deployments of `org`, waiting up to `wait` for work to arrive
/// when none is there. Wakes on the store's notifications (a deployment recorded, released or
/// acknowledged) and when a lease runs out or a retry falls due; answers what it has once the
/// time is up or the server shuts down, possibly nothing.
pub async fn lease(
    pull: &dyn PullQueue,
    draining: &Draining,
    org: &str,
    request: LeaseRequest,
    wait: Duration,
) -> StoreResult<Vec<Leased>> {
    let deadline = Instant::now() + wait;
    let notifier = pull.notifier();
    loop {
        // Registered before looking, so that work recorded in between still wakes us.
        let notified = notifier.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
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
