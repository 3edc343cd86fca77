//! The standalone server's dispatcher: a task beside the HTTP server that takes the work of
//! services with a deploy target from the SQLite store (latest wins, one deployment in flight
//! per service) and attempts it, several services at a time. Its schedule — what is due when —
//! is in the database, so a restart, or a SIGKILL mid-delivery, loses nothing.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Dispatcher;
use crate::sqlite::SqliteStore;
use crate::util::until_unix_second;

/// Deployments in delivery at once (each to a different service). An attempt is an HTTP
/// request waited on, a few kilobytes: many fit, so that targets that do not answer (each
/// holding its place up to the 15 s timeout) rarely hold other services back.
pub const CONCURRENCY: usize = 128;
// The take leaves the other organizations some attempts at all times.
const _: () = assert!(crate::sqlite::DISPATCH_SHARE_OF_ONE_ORGANIZATION < CONCURRENCY);
const _: () = assert!(crate::sqlite::DISPATCH_PLACES_KEPT_FOR_IDLE_ORGANIZATIONS < CONCURRENCY / 2);
/// The longest the loop sleeps without a reason to wake: a safety net, not a poll.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Give back what the dispatcher was delivering when the process last stopped: `QUEUED` again
/// (for the dispatcher, or for pull consumers should the service have lost its target), never
/// left `IN_PROGRESS` — also when this run has no dispatcher (`--no-dispatch`).
pub async fn release_interrupted(store: &SqliteStore) {
    match store.release_dispatch_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            released = n,
            "deliveries interrupted by the last stop are waiting again"
        ),
        Err(err) => tracing::warn!(error = %err, "interrupted deliveries could not be released; their leases expire"),
    }
}

/// Run until `shutdown` resolves; attempts in flight then finish (bounded by their timeout).
pub async fn run(dispatcher: Dispatcher, store: SqliteStore, shutdown: impl Future<Output = ()>) {
    release_interrupted(&store).await;
    let notifier = store.dispatch_notifier();
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // The first pass takes whatever waits.
    let mut woke_by_timer = true;
    loop {
        let notified = notifier.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let outlook = store.dispatch_outlook();
        // A take is a write in the writer's next batch: it takes when the outlook (a read)
        // shows work, or when it woke on its timer, at which a lease that ran out may have
        // freed some (the take releases it). Recorded deployments wake it only when one is
        // for a service with a deploy target.
        let may_have_work = woke_by_timer || outlook.as_ref().map_or(true, |o| o.available);
        woke_by_timer = false;
        let free = CONCURRENCY.saturating_sub(in_flight.len());
        if free > 0 && may_have_work {
            match store.take_for_dispatch(free).await {
                Ok(taken) if !taken.is_empty() => {
                    for leased in taken {
                        let dispatcher = dispatcher.clone();
                        in_flight.spawn(async move {
                            if let Err(err) = dispatcher.attempt(&leased.record).await {
                                // The lease expires and the deployment is tried again.
                                tracing::warn!(error = %err, deployment_id = %leased.record.request.deployment_id, "an attempt could not be recorded");
                            }
                        });
                    }
                    // More may wait than there were free slots.
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "the dispatcher could not take work; it tries again shortly"),
            }
        }
        // Nothing more to take now: sleep until the next retry falls due, an attempt ends
        // or a deployment is recorded.
        let wake = match outlook {
            Ok(outlook) => outlook
                .next_due_unix
                .map(|due| Instant::now() + until_unix_second(due, SystemTime::now()).min(IDLE_WAKE))
                .unwrap_or_else(|| Instant::now() + IDLE_WAKE),
            Err(_) => Instant::now() + Duration::from_secs(1),
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut notified => {}
            () = tokio::time::sleep_until(wake) => woke_by_timer = true,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}
