//! Bounds on what the server holds for all requests at once: the requests in flight, and the
//! request-body bytes buffered in memory. A route's own limit bounds one body; these bound the
//! sum, so that many large bodies sent together cannot exhaust the server's memory.
//!
//! Body bytes are counted as the handler reads them, frame by frame, against one budget shared
//! by every request, and given back once the request is answered: a request refused before its
//! body is read costs nothing. A request the budget cannot take now is answered 503
//! `UNAVAILABLE` with `Retry-After`; one larger than the whole budget, 413 `PAYLOAD_TOO_LARGE`.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderValue, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// Seconds a client is told to wait when the server is full.
const RETRY_AFTER_SECONDS: &str = "5";

/// The two budgets, shared by every request of the router they are applied to.
#[derive(Clone)]
pub struct BufferLimits {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_body_buffer: usize,
}

impl BufferLimits {
    /// At most `max_requests` requests in flight, and `max_body_buffer` bytes of request
    /// bodies read and not yet answered, across all requests (each at least 1).
    pub fn new(max_requests: usize, max_body_buffer: usize) -> Self {
        let max_body_buffer = max_body_buffer.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            requests: Arc::new(Semaphore::new(max_requests.clamp(1, Semaphore::MAX_PERMITS))),
            bytes: Arc::new(Semaphore::new(max_body_buffer)),
            max_body_buffer,
        }
    }

    /// `router` with every request (fallbacks included) going through these limits.
    pub fn apply(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), limit))
    }
}

async fn limit(State(limits): State<BufferLimits>, request: Request, next: Next) -> Response {
    let Ok(_in_flight) = limits.requests.clone().try_acquire_owned() else {
        return busy("The server is handling as many requests as it takes at once");
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_buffer as u64) {
        return ApiError::payload_too_large(limits.max_body_buffer).into_response();
    }
    let account = Arc::new(Account {
        bytes: limits.bytes.clone(),
        max: limits.max_body_buffer,
        read: AtomicUsize::new(0),
        held: Mutex::new(None),
        refused: AtomicU8::new(ACCEPTED),
    });
    let metered = account.clone();
    let request = request.map(|body| {
        // Each data frame is charged as the handler reads it.
        Body::from_stream(body.into_data_stream().map(move |frame| {
            let frame = frame?;
            metered.take(frame.len()).map_err(axum::Error::new)?;
            Ok::<_, axum::Error>(frame)
        }))
    });
    let response = next.run(request).await;
    // Answered: the handler holds no more of its body.
    drop(account.held.lock().unwrap_or_else(PoisonError::into_inner).take());
    // The handler saw its body fail and answered as it does for a broken body: say why instead.
    match account.refused.load(Ordering::Acquire) {
        BUSY => busy("The server is receiving as many request bodies as it holds at once"),
        TOO_LARGE => ApiError::payload_too_large(limits.max_body_buffer).into_response(),
        _ => response,
    }
}

/// 503 `UNAVAILABLE` with `Retry-After`.
fn busy(why: &str) -> Response {
    let mut response =
        ApiError::unavailable(format!("{why}; nothing was changed. Retry in a few seconds.")).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}

const ACCEPTED: u8 = 0;
const BUSY: u8 = 1;
const TOO_LARGE: u8 = 2;

/// One request's share of the byte budget.
struct Account {
    bytes: Arc<Semaphore>,
    max: usize,
    /// Bytes of this body read so far.
    read: AtomicUsize,
    /// The budget taken for them, given back when the request is answered (or dropped).
    held: Mutex<Option<OwnedSemaphorePermit>>,
    refused: AtomicU8,
}

impl Account {
    /// Take `len` more bytes from the budget, or say why not.
    fn take(&self, len: usize) -> Result<(), &'static str> {
        let total = self.read.fetch_add(len, Ordering::AcqRel).saturating_add(len);
        let taken = u32::try_from(len)
            .ok()
            .filter(|_| total <= self.max)
            .ok_or(TOO_LARGE)
            .and_then(|len| self.bytes.clone().try_acquire_many_owned(len).map_err(|_| BUSY));
        match taken {
            Ok(permit) => {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                match held.as_mut() {
                    Some(held) => held.merge(permit),
                    None => *held = Some(permit),
                }
                Ok(())
            }
            Err(refusal) => {
                self.refused.store(refusal, Ordering::Release);
                Err(if refusal == BUSY {
                    "the server holds as many request bodies as it can"
                } else {
                    "the body is larger than the server can hold"
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use axum::body::Bytes;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    use super::*;

    /// A router whose `/read` reads its whole body and answers its length, `/refuse` answers
    /// 401 without reading it, and `/wait` waits for a permit of `gate`; each call of `/read`
    /// or `/refuse` is counted in `calls`. (One fallback handler: the route table's check
    /// reads the routes declared in this folder.)
    fn app(limits: &BufferLimits, gate: Arc<Semaphore>, calls: Arc<AtomicUsize>) -> Router {
        let handler = move |uri: http::Uri, body: Body| async move {
            match uri.path() {
                "/read" => {
                    calls.fetch_add(1, Ordering::SeqCst);
                    match axum::body::to_bytes(body, usize::MAX).await {
                        Ok(bytes) => (http::StatusCode::OK, bytes.len().to_string()).into_response(),
                        Err(_) => ApiError::malformed("The body could not be read completely.").into_response(),
                    }
                }
                "/refuse" => {
                    calls.fetch_add(1, Ordering::SeqCst);
                    ApiError::unauthorized("No secret.").into_response()
                }
                _ => {
                    let _ = gate.acquire().await;
                    "released".into_response()
                }
            }
        };
        limits.apply(Router::new().fallback(handler))
    }

    fn post_to(path: &str, body: Body, length: Option<usize>) -> Request {
        let mut request = http::Request::post(path);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        request.body(body).unwrap()
    }

    fn full(path: &str, len: usize) -> Request {
        post_to(path, Body::from(vec![b'x'; len]), Some(len))
    }

    /// A body whose frames the test sends one by one.
    fn streamed() -> (mpsc::UnboundedSender<Bytes>, Body) {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (Ok::<_, Infallible>(frame), rx))
        });
        (tx, Body::from_stream(stream))
    }

    async fn answer(router: &Router, request: Request) -> (u16, Option<String>, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, retry, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Until the budget has `available` bytes left (the spawned handler got that far).
    async fn until_available(semaphore: &Semaphore, available: usize) {
        while semaphore.available_permits() != available {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn bodies_beyond_the_shared_budget_are_503_until_it_is_given_back() {
        let limits = BufferLimits::new(10, 1000);
        let router = app(&limits, Arc::new(Semaphore::new(0)), Arc::default());
        // A holds 600 bytes of its body, still arriving.
        let (tx, body) = streamed();
        tx.send(Bytes::from(vec![b'a'; 600])).unwrap();
        let first = tokio::spawn({
            let router = router.clone();
            async move { answer(&router, post_to("/read", body, None)).await }
        });
        until_available(&limits.bytes, 400).await;

        // B needs 600 more: refused for now, in SPEC's shape, with Retry-After.
        let (status, retry, body) = answer(&router, full("/read", 600)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry.as_deref(), Some(RETRY_AFTER_SECONDS));
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "UNAVAILABLE");
        assert!(error["error"]["message"].as_str().unwrap().contains("Retry"), "{body}");
        assert_eq!(limits.bytes.available_permits(), 400, "B's share was not given back");
        // A body the handler never reads is not counted: a refusal is answered as it is.
        assert_eq!(answer(&router, full("/refuse", 600)).await.0, 401);

        // A completes; its bytes come back, and B's retry goes through.
        tx.send(Bytes::from(vec![b'a'; 100])).unwrap();
        drop(tx);
        assert_eq!(first.await.unwrap(), (200, None, "700".to_owned()));
        assert_eq!(limits.bytes.available_permits(), 1000);
        assert_eq!(answer(&router, full("/read", 600)).await, (200, None, "600".to_owned()));
        assert_eq!(limits.bytes.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_whole_budget_is_413() {
        let limits = BufferLimits::new(10, 1000);
        let calls = Arc::new(AtomicUsize::new(0));
        let router = app(&limits, Arc::new(Semaphore::new(0)), calls.clone());
        // Declared: refused before the handler runs.
        let (status, retry, body) = answer(&router, full("/read", 1001)).await;
        assert_eq!((status, retry), (413, None), "{body}");
        assert!(body.contains("PAYLOAD_TOO_LARGE"), "{body}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // Streamed without a length: refused once it grows past the budget.
        let (tx, body) = streamed();
        for _ in 0..3 {
            tx.send(Bytes::from(vec![b'a'; 400])).unwrap();
        }
        drop(tx);
        let (status, _, body) = answer(&router, post_to("/read", body, None)).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(limits.bytes.available_permits(), 1000);
        // Exactly the budget fits.
        assert_eq!(answer(&router, full("/read", 1000)).await.0, 200);
    }

    #[tokio::test]
    async fn requests_in_flight_are_capped() {
        let limits = BufferLimits::new(2, 1000);
        let gate = Arc::new(Semaphore::new(0));
        let router = app(&limits, gate.clone(), Arc::default());
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let router = router.clone();
                tokio::spawn(async move { answer(&router, full("/wait", 0)).await })
            })
            .collect();
        while limits.requests.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        let (status, retry, body) = answer(&router, full("/read", 10)).await;
        assert_eq!((status, retry.as_deref()), (503, Some(RETRY_AFTER_SECONDS)), "{body}");
        gate.add_permits(2);
        for w in waiting {
            assert_eq!(w.await.unwrap().0, 200);
        }
        assert_eq!(answer(&router, full("/read", 10)).await.0, 200);
    }
}
