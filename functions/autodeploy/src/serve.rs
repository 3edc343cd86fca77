//! HTTP/1.1 on the bound listeners: read timeouts, a cap on open connections, and a graceful
//! shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use crate::protocol_errors::ProtocolErrors;

/// At most one line per this long for each warning a flood can repeat.
const WARN_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
pub struct Settings {
    /// A client gets this long to send a request's headers (also the idle time allowed on a
    /// kept-alive connection before its next request); the connection is closed after it.
    pub header_timeout: Duration,
    /// A client gets this long to send a request's whole body, once its headers are read; a
    /// slower body is refused (400) and its connection closed.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// The most a connection buffers of a request's head (hyper's default is about 400 KiB): a
/// request target of up to 64 KiB (longer is a 414) and headers besides; a longer head is a
/// 431. Connections still sending their heads are as many as `max_connections`, and each
/// holds what it sent.
const MAX_HEAD_BUFFER: usize = 96 * 1024;

/// Serve `router` on `listeners` until `shutdown`; then stop accepting, let every connection
/// finish the request it is answering, drop the others (idle, or their request still
/// arriving), and return.
///
/// At most `settings.max_connections` are open at once. At the cap, each new connection
/// closes the oldest idle one (a connection between requests, or still sending its headers),
/// as nginx reuses its idle connections: clients holding sockets open without a request
/// cannot lock others out. When none is idle, it drops the oldest one still sending its
/// request's body (nothing of that request was done: a body is read before anything is
/// written), so that stalled bodies cannot lock others out either for as long as the body
/// timeout. When every connection is answering, the new one waits for the first to finish its
/// request (the others stay queued by the kernel).
pub async fn serve_http(
    listeners: Vec<TcpListener>,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let connections = Arc::new(Connections::new(settings.max_connections));
    let mut accept_failed = Throttle::new(WARN_EVERY);
    let mut at_the_cap = Throttle::new(WARN_EVERY);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = accept_any(&listeners) => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    if let Some(suppressed) = accept_failed.ready(Instant::now()) {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    // Out of descriptors: free one, and wait a little rather than spin.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        connections.close_oldest();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let slot = match connections.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(suppressed) = at_the_cap.ready(Instant::now()) {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        suppressed,
                        "at the connection limit: closing the oldest idle connections for new ones"
                    );
                }
                connections.close_oldest();
                tokio::select! {
                    slot = connections.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = shutdown.as_mut() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, state) = connections.open();
        let service = {
            let (router, state) = (router.clone(), state.clone());
            let body_timeout = settings.body_timeout;
            hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let busy = Busy::new(state.clone());
                let receiving = Receiving::new(state.clone());
                let request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout, receiving)));
                let response = router.clone().oneshot(request);
                let state = state.clone();
                async move {
                    let mut response = response.await;
                    // Answered before its body was read (a refusal, a body too large): the
                    // connection cannot be kept, as hyper would close it without saying so.
                    if let Ok(response) = &mut response
                        && !state.body_read.load(Ordering::Acquire)
                    {
                        response
                            .headers_mut()
                            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    }
                    drop(busy);
                    response
                }
            })
        };
        // hyper's own answers to requests it cannot read, in SPEC's error shape.
        let stream = ProtocolErrors::new(stream);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut connection = Box::pin(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection closed with an error");
                        }
                        break;
                    }
                    () = state.close.notified(), if !closing => {
                        // Closes it now if idle, else after the response in flight.
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    // Dropped: idle, or its request still arriving.
                    () = state.drop_now.notified() => break,
                }
            }
            // Its socket closed before its slot is given back: a slot stands for a descriptor.
            drop(connection);
            connections.forget(id);
            drop(slot);
        });
    }
    drop(listeners);
    connections.close_all();
    // Every slot back: every connection has ended.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let _ = connections.slots.acquire_many(all).await;
}

/// The next connection on any of `listeners`.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<TcpStream> {
    std::future::poll_fn(|cx| {
        for listener in listeners {
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                return Poll::Ready(accepted.map(|(stream, _)| stream));
            }
        }
        Poll::Pending
    })
    .await
}

/// The open connections, oldest first, and the slots they hold.
struct Connections {
    slots: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<ConnectionState>>>,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct ConnectionState {
    /// A request is being answered.
    busy: AtomicBool,
    /// That request's body is still arriving.
    receiving: AtomicBool,
    /// That request's body was read to its end (or it had none).
    body_read: AtomicBool,
    /// Asks the connection to close once idle.
    close: Notify,
    /// Drops the connection at once.
    drop_now: Notify,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            open: Mutex::default(),
            next_id: Default::default(),
        }
    }

    fn open(&self) -> (u64, Arc<ConnectionState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::default());
        self.lock().insert(id, state.clone());
        (id, state)
    }

    fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Drop the oldest idle connection (between requests, or still sending its headers), or
    /// else the oldest one still receiving its request's body; when every one is answering,
    /// ask the oldest to close after its response.
    fn close_oldest(&self) {
        let mut open = self.lock();
        let idle = |state: &ConnectionState| !state.busy.load(Ordering::Acquire);
        let receiving = |state: &ConnectionState| state.receiving.load(Ordering::Acquire);
        let dropped = open
            .iter()
            .find(|(_, state)| idle(state))
            .or_else(|| open.iter().find(|(_, state)| receiving(state)))
            .map(|(id, _)| *id);
        if let Some(state) = dropped.and_then(|id| open.remove(&id)) {
            state.drop_now.notify_one();
            return;
        }
        let oldest = open.keys().next().copied();
        if let Some(state) = oldest.and_then(|id| open.remove(&id)) {
            state.close.notify_one();
        }
    }

    /// At shutdown: drop at once the connections with nothing to finish (between requests,
    /// still sending headers or a body: nothing of that request was done), as at the cap;
    /// close the others after their response. A request still arriving would otherwise hold
    /// the exit for up to its header or body timeout.
    fn close_all(&self) {
        for (_, state) in std::mem::take(&mut *self.lock()) {
            if !state.busy.load(Ordering::Acquire) || state.receiving.load(Ordering::Acquire) {
                state.drop_now.notify_one();
            } else {
                state.close.notify_one();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnectionState>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks a connection busy while one of its requests is answered.
struct Busy(Arc<ConnectionState>);

impl Busy {
    fn new(state: Arc<ConnectionState>) -> Self {
        state.busy.store(true, Ordering::Release);
        Self(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Marks a connection as receiving its request's body until the body ended (or failed, or
/// was left unread when the answer went).
struct Receiving(Arc<ConnectionState>);

impl Receiving {
    fn new(state: Arc<ConnectionState>) -> Self {
        state.receiving.store(true, Ordering::Release);
        state.body_read.store(false, Ordering::Release);
        Self(state)
    }

    fn done(&self) {
        self.0.receiving.store(false, Ordering::Release);
    }

    /// The body was read to its end.
    fn read_whole(&self) {
        self.0.body_read.store(true, Ordering::Release);
        self.done();
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.done();
    }
}

/// A warning repeated by a flood, logged at most once per `every` with the count of the
/// ones left out since.
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(left out since the last one)` when the warning is to be logged at `now`.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A request body that fails once `deadline` has passed since the request's headers were
/// read, however it trickles in.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    receiving: Receiving,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, receiving: Receiving) -> Self {
        if inner.is_end_stream() {
            receiving.read_whole();
        }
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            receiving,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            match &frame {
                None => self.receiving.read_whole(),
                Some(Ok(_)) if self.inner.is_end_stream() => self.receiving.read_whole(),
                Some(Ok(_)) => {}
                Some(Err(_)) => self.receiving.done(),
            }
            return Poll::Ready(frame.map(|f| f.map_err(axum::Error::new)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                "it did not all arrive within {} s of the request's headers (--body-timeout)",
                self.timeout.as_secs()
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_period_with_the_count_left_out() {
        let mut throttle = Throttle::new(Duration::from_secs(5));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(throttle.ready(at(0)), Some(0));
        // Every 50 ms for 5 s: all left out.
        for ms in (50..5000).step_by(50) {
            assert_eq!(throttle.ready(at(ms)), None, "{ms}");
        }
        assert_eq!(throttle.ready(at(5000)), Some(99));
        assert_eq!(throttle.ready(at(5001)), None);
        assert_eq!(throttle.ready(at(60_000)), Some(1));
    }

    #[test]
    fn the_oldest_idle_connection_is_closed_first() {
        let connections = Connections::new(4);
        let opened: Vec<_> = (0..4).map(|_| connections.open()).collect();
        let busy = Busy::new(opened[0].1.clone());
        connections.close_oldest();
        // The oldest is busy: the next one, idle, is dropped, and only it.
        let remaining: Vec<u64> = connections.lock().keys().copied().collect();
        assert_eq!(remaining, [opened[0].0, opened[2].0, opened[3].0]);
        // None idle: the oldest still receiving its body is dropped before any answering one.
        let _answering = Busy::new(opened[2].1.clone());
        let _stalled = (Busy::new(opened[3].1.clone()), Receiving::new(opened[3].1.clone()));
        connections.close_oldest();
        let remaining: Vec<u64> = connections.lock().keys().copied().collect();
        assert_eq!(remaining, [opened[0].0, opened[2].0]);
        // Every one answering: the oldest closes after its response.
        connections.close_oldest();
        let remaining: Vec<u64> = connections.lock().keys().copied().collect();
        assert_eq!(remaining, [opened[2].0]);
        drop(busy);
        connections.close_all();
        assert!(connections.lock().is_empty());
    }
}
