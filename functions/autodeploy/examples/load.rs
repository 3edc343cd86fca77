//! Load generator and ceiling server for `scripts/load` (docs/performance.md). Loopback only,
//! bounded in count and time.
//!
//! `load run` sends `--requests` signed GitHub pushes, each a distinct commit (so each really
//! queues a deployment), over `--concurrency` kept-alive HTTP/1.1 connections to
//! `127.0.0.1:--port`, and prints one JSON line: throughput, latency percentiles, statuses
//! and errors.
//!
//! `load ceiling` serves the least a durable webhook endpoint must do, with the same stack as
//! the product (axum on tokio, rusqlite, one connection behind a mutex on the blocking pool):
//! check the HMAC-SHA256 signature in constant time, then make one SQLite insert, committed
//! (WAL, `synchronous=FULL`, as the product), before answering 202.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};

const FIXTURE: &str = include_str!("../../../tests/fixtures/webhooks/github/gp-push.json");
/// No request may take longer; the whole run is bounded by it too.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn usage() -> ! {
    eprintln!(
        "usage:\n  load run --port P --secret S [--requests 1000] [--concurrency 50] [--path /organization/acme/webhooks/github] [--label name]\n  load ceiling --port P --secret S --database FILE"
    );
    std::process::exit(2)
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn required(&self, flag: &str) -> &str {
        self.get(flag).unwrap_or_else(|| usage())
    }
    fn number(&self, flag: &str, default: usize) -> usize {
        self.get(flag)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| usage()))
    }
}

fn main() {
    let args = Args(std::env::args().skip(1).collect());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match args.0.first().map(String::as_str) {
        Some("run") => runtime.block_on(run(&args)),
        Some("ceiling") => runtime.block_on(ceiling(&args)),
        _ => usage(),
    }
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The real GitHub push fixture moved to a commit of its own.
fn push_body(template: &serde_json::Value, nonce: u64, i: usize) -> Vec<u8> {
    let mut body = template.clone();
    let after = format!("{nonce:016x}{i:024x}");
    body["after"] = after.clone().into();
    body["head_commit"]["id"] = after.into();
    serde_json::to_vec(&body).unwrap()
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    statuses: std::collections::BTreeMap<u16, usize>,
    errors: Vec<String>,
}

async fn run(args: &Args) {
    let port: u16 = args.required("--port").parse().unwrap_or_else(|_| usage());
    let secret = args.required("--secret").to_owned();
    let requests = args.number("--requests", 1000);
    let concurrency = args.number("--concurrency", 50).max(1);
    let path = args
        .get("--path")
        .unwrap_or("/organization/acme/webhooks/github")
        .to_owned();
    let label = args.get("--label").unwrap_or("load").to_owned();
    let template: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Bodies and signatures are made before the clock starts.
    let work: Arc<Vec<(Bytes, String, String)>> = Arc::new(
        (0..requests)
            .map(|i| {
                let body = push_body(&template, nonce, i);
                let sig = sign(secret.as_bytes(), &body);
                (Bytes::from(body), sig, format!("load-{nonce:x}-{i}"))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (work, next, tally, path) = (work.clone(), next.clone(), tally.clone(), path.clone());
            tokio::spawn(async move {
                let mut sender = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= work.len() || started.elapsed() > RUN_TIMEOUT {
                        return;
                    }
                    let (body, sig, delivery) = &work[i];
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        send(&mut sender, port, &path, body.clone(), sig, delivery),
                    )
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                    let elapsed = t0.elapsed();
                    let mut tally = tally.lock().unwrap();
                    match result {
                        Ok(status) => {
                            tally.latencies.push(elapsed);
                            *tally.statuses.entry(status).or_default() += 1;
                        }
                        Err(e) => {
                            sender = None;
                            tally.errors.push(e);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let wall = started.elapsed();
    let tally = tally.lock().unwrap();
    let mut latencies = tally.latencies.clone();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1].as_secs_f64() * 1000.0
    };
    let answered: usize = tally.statuses.values().sum();
    let non_2xx: usize = tally
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let report = serde_json::json!({
        "label": label,
        "requests": requests,
        "concurrency": concurrency,
        "answered": answered,
        "statuses": tally.statuses.iter().map(|(s, n)| (s.to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
        "errors": tally.errors.len() + non_2xx,
        "io_errors": tally.errors.iter().take(5).collect::<Vec<_>>(),
        "seconds": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "throughput_rps": (answered as f64 / wall.as_secs_f64() * 10.0).round() / 10.0,
        "p50_ms": (pct(50.0) * 100.0).round() / 100.0,
        "p99_ms": (pct(99.0) * 100.0).round() / 100.0,
        "max_ms": (pct(100.0) * 100.0).round() / 100.0,
    });
    println!("{report}");
}

/// One request on the worker's kept-alive connection (opened on first use or after an
/// error); the status, or why there was none.
async fn send(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    port: u16,
    path: &str,
    body: Bytes,
    sig: &str,
    delivery: &str,
) -> Result<u16, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (s, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        *sender = Some(s);
    }
    let s = sender.as_mut().unwrap();
    s.ready().await.map_err(|e| format!("connection: {e}"))?;
    let request = hyper::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(Full::new(body))
        .unwrap();
    let response = s.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

struct Ceiling {
    secret: Vec<u8>,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

async fn ceiling(args: &Args) {
    let port: u16 = args.required("--port").parse().unwrap_or_else(|_| usage());
    let secret = args.required("--secret").as_bytes().to_vec();
    let database = PathBuf::from(args.required("--database"));
    let conn = rusqlite::Connection::open(&database).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS pushes (seq INTEGER PRIMARY KEY, delivery TEXT NOT NULL, body BLOB NOT NULL)",
    )
    .unwrap();
    let state = Arc::new(Ceiling {
        secret,
        conn: Arc::new(Mutex::new(conn)),
    });
    let app = Router::new()
        .route("/organization/{org}/webhooks/github", post(ceiling_hook))
        .with_state(state);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
        })
        .await
        .unwrap();
}

async fn ceiling_hook(State(state): State<Arc<Ceiling>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok());
    let Some(signature) = signature else {
        return StatusCode::UNAUTHORIZED;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&state.secret).unwrap();
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let conn = Arc::clone(&state.conn);
    let inserted = tokio::task::spawn_blocking(move || {
        let conn = conn.lock().unwrap();
        conn.execute(
            "INSERT INTO pushes (delivery, body) VALUES (?1, ?2)",
            rusqlite::params![delivery, body.as_ref()],
        )
    })
    .await;
    match inserted {
        Ok(Ok(_)) => StatusCode::ACCEPTED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
