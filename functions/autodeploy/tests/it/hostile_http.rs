//! Hostile HTTP clients against the real standalone binary (docs/proofs.md): oversized headers
//! are refused or the connection closed, never a crash; requests whose HTTP cannot be read are
//! answered in SPEC's error shape; slow headers and slow bodies are timed out
//! (`--header-timeout`, `--body-timeout`) while other clients are served; the server still
//! answers `/health` after each.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, read_response};

const ADMIN: &str = "hostile-admin-token-0123456789";
/// The timeouts the server under test runs with (seconds).
const HEADER_TIMEOUT: u64 = 1;
const BODY_TIMEOUT: u64 = 2;

/// The server under test: this file's timeouts.
fn server() -> Server {
    let (header, body) = (HEADER_TIMEOUT.to_string(), BODY_TIMEOUT.to_string());
    Server::start(ADMIN, &["--header-timeout", &header, "--body-timeout", &body])
}

impl Server {
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream
    }

    /// `GET /health` on a fresh connection answers 200, promptly, and the process lives.
    fn assert_healthy(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "the server exited");
        let started = Instant::now();
        let mut stream = self.connect();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (status, _) = read_response(&mut stream).expect("an answer to /health");
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}

/// Write what we can; the server may close (or reset) the connection on us halfway.
fn write_lossy(stream: &mut TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
    }
}

/// A refused request: a 4xx (431 or 400) in SPEC's error shape, or the connection closed —
/// never a 5xx.
fn assert_refused(answer: Option<(u16, String)>, what: &str) {
    eprintln!(
        "{what}: {}",
        answer.as_ref().map_or("closed".to_owned(), |(s, _)| s.to_string())
    );
    if let Some((status, raw)) = answer {
        assert!(
            (400..500).contains(&status),
            "{what}: {status}: {}",
            &raw[..raw.len().min(300)]
        );
        let [(_, error)] = &responses(&raw)[..] else {
            panic!("{what}: not one answer: {raw}")
        };
        assert!(error["error"]["code"].is_string(), "{what}: {raw}");
    }
}

/// The answers in `raw` (one after the other on a connection), each its head (lower-cased) and
/// its body read as JSON; each must say its body is JSON, and say its length exactly.
fn responses(raw: &str) -> Vec<(String, Value)> {
    let mut answers = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (head, after) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head: {rest}"));
        let head = head.to_ascii_lowercase();
        assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
        let (body, after) = after.split_at(content_length(&head));
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        answers.push((head, body));
        rest = after;
    }
    answers
}

#[test]
fn oversized_headers_are_refused_and_the_server_lives() {
    let mut server = server();
    let mib = "a".repeat(1 << 20);
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "one 1 MiB header",
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {mib}\r\n\r\n"),
        ),
        (
            "a 1 MiB request target",
            format!("GET /health?{mib} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
        (
            "1,000 headers",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        ),
        (
            "a 1 MiB Authorization header on an API route",
            format!("GET /organization/acme/services HTTP/1.1\r\nHost: x\r\nAuthorization: Token {mib}\r\n\r\n"),
        ),
        (
            "a 1 MiB signature header on a webhook",
            format!(
                "POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
                 X-Hub-Signature-256: sha256={mib}\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            "a header line without an end",
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {mib}"),
        ),
    ];
    for (what, request) in cases {
        let mut stream = server.connect();
        write_lossy(&mut stream, request.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        assert_refused(read_response(&mut stream), what);
        server.assert_healthy();
    }
    // A 64 KiB header is ordinary (large cookies): still served.
    let mut stream = server.connect();
    let big = "b".repeat(64 * 1024);
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut stream).map(|r| r.0), Some(200));
    // 128 KiB is past what a connection buffers of a head: refused, on a connection left open.
    let mut stream = server.connect();
    let big = "c".repeat(128 * 1024);
    write_lossy(
        &mut stream,
        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    let answer = read_response(&mut stream);
    assert_eq!(answer.as_ref().map(|r| r.0), Some(431), "{answer:?}");
    server.assert_healthy();
}

/// What hyper refuses before any route, as it cannot read the request's HTTP, is answered in
/// SPEC's error shape (not the empty body hyper writes by itself), and the connection closed.
#[test]
fn unreadable_requests_are_answered_in_the_error_shape() {
    let mut server = server();
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long = "a".repeat(70 * 1024);
    let cases = [
        (
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            format!("GET /health?{long} HTTP/1.1\r\nHost: x\r\n\r\n"),
            414,
            "URI_TOO_LONG",
        ),
        (
            "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_owned(),
            400,
            "MALFORMED_REQUEST",
        ),
        (
            "G(T /health HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "MALFORMED_REQUEST",
        ),
        (
            "GET /health HTTP/9.7\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "MALFORMED_REQUEST",
        ),
    ];
    for (request, status, code) in cases {
        let what = &request[..request.len().min(40)];
        let mut stream = server.connect();
        write_lossy(&mut stream, request.as_bytes());
        let answer = read_response(&mut stream);
        let (got, raw) = answer.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert_eq!(got, status, "{what}: {raw}");
        let [(head, error)] = &responses(&raw)[..] else {
            panic!("{what}: not one answer: {raw}")
        };
        // read_response read to the end: the server closed the connection, and says so.
        assert!(head.contains("\r\nconnection: close"), "{what}: {head}");
        assert_eq!(error["error"]["code"], code, "{what}: {error}");
        assert_eq!(error["error"]["details"], serde_json::json!([]), "{what}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.ends_with('.') && !message.contains("health"),
            "{what}: {message}"
        );
        server.assert_healthy();
    }
}

/// The server's own answers on a kept-alive connection are not touched: one request after
/// the other, and pipelined before a request hyper cannot read.
#[test]
fn answers_on_a_kept_alive_connection_are_unchanged() {
    let server = server();
    let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let missing = "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n";
    let last = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let ok = r#"{"status":"ok"}"#;
    let not_found = r#"{"error":{"code":"NOT_FOUND","message":"No such route. The API reference lists the paths served: GET /openapi.yaml on the standalone server, infra/openapi.yaml in the source.","details":[]}}"#;
    let expected = [("200 OK", "", ok), ("404 Not Found", "", not_found), ("200 OK", "connection: close\r\n", ok)]
        .map(|(status, connection, body)| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}date: DATE\r\n\r\n{body}",
                body.len()
            )
        });
    let mut stream = server.connect();
    for (request, expected) in [health, missing, last].into_iter().zip(&expected) {
        stream.write_all(request.as_bytes()).unwrap();
        assert_eq!(without_dates(&read_answer(&mut stream)), *expected);
    }
    assert!(read_response(&mut stream).is_none(), "more after the last answer");

    // Pipelined before a request line hyper cannot read: the same answers, then the refusal.
    let mut stream = server.connect();
    stream
        .write_all(format!("{health}{missing}G(T / HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(without_dates(&read_answer(&mut stream)), expected[0]);
    assert_eq!(without_dates(&read_answer(&mut stream)), expected[1]);
    let (status, raw) = read_response(&mut stream).unwrap();
    assert_eq!(status, 400, "{raw}");
    let [(_, error)] = &responses(&raw)[..] else {
        panic!("not one answer: {raw}")
    };
    assert_eq!(error["error"]["code"], "MALFORMED_REQUEST", "{raw}");
}

/// An answer given before the request's body was read says that the connection closes, and
/// it does: the body's rest cannot be told from a next request. One given after the body was
/// read keeps the connection.
#[test]
fn an_answer_before_the_body_is_read_closes_the_connection_and_says_so() {
    let server = server();
    let put = |auth: &str, body: &[u8]| {
        let head = format!(
            "PUT /organization/acme/services/api HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        [head.as_bytes(), body].concat()
    };
    for (what, body) in [("small", vec![b' '; 10]), ("large", vec![b' '; 300_000])] {
        // No token: refused before its body is read.
        let mut stream = server.connect();
        write_lossy(&mut stream, &put("", &body));
        let (status, raw) = read_response(&mut stream).expect("an answer");
        assert_eq!(status, 401, "{what}: {raw}");
        let head = raw.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close"), "{what}: {raw}");
    }
    // Read, then refused (not JSON): the connection stays for the next request.
    let mut stream = server.connect();
    let auth = format!("Authorization: Token {ADMIN}\r\n");
    stream.write_all(&put(&auth, b"{not json")).unwrap();
    let answer = read_answer(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).map(|(status, _)| status), Some(200));
}

/// One answer on a kept-alive connection: its head, then as many bytes as it says.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut byte = [0u8];
    while !answer.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        answer.push(byte[0]);
    }
    let head = String::from_utf8(answer).unwrap();
    let mut body = vec![0u8; content_length(&head)];
    stream.read_exact(&mut body).unwrap();
    head + std::str::from_utf8(&body).unwrap()
}

/// The `content-length` of an answer's head.
fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"))
}

/// `raw` with each `date` header's value replaced by `DATE`.
fn without_dates(raw: &str) -> String {
    raw.split("\r\n")
        .map(|line| if line.starts_with("date: ") { "date: DATE" } else { line })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn slow_headers_are_timed_out_while_others_are_served() {
    let mut server = server();
    // Half a request line, then silence; and a connection that never sends a byte.
    let mut stalled = server.connect();
    stalled
        .write_all(b"POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = server.connect();
    let started = Instant::now();
    server.assert_healthy();
    assert_refused(read_response(&mut stalled), "stalled headers");
    assert_refused(read_response(&mut silent), "no request at all");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(HEADER_TIMEOUT * 1000 - 100)
            && waited < Duration::from_secs(HEADER_TIMEOUT + 3),
        "closed after {waited:?}"
    );
    // A trickle of header bytes does not buy more time than the header timeout.
    let mut trickle = server.connect();
    let started = Instant::now();
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 0123456789012345678901234567890123456789\r\n\r\n";
    for byte in request {
        if trickle.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(HEADER_TIMEOUT + 3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_refused(read_response(&mut trickle), "trickled headers");
    assert!(started.elapsed() < Duration::from_secs(HEADER_TIMEOUT + 4));
    server.assert_healthy();
}

/// A shutdown does not wait for requests still arriving (nothing of them was done): with both
/// timeouts at an hour, a connection stalled in its headers and one stalled in its body are
/// dropped at SIGTERM, and the server exits at once (the harness gives it 20 s).
#[test]
fn a_shutdown_drops_requests_still_arriving() {
    let mut server = Server::start(ADMIN, &["--header-timeout", "3600", "--body-timeout", "3600"]);
    server.set_webhook_secret(ADMIN, "github", "a-webhook-secret-for-slow-bodies");
    let mut in_headers = server.connect();
    in_headers
        .write_all(b"POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut in_body = server.connect();
    let head = format!(
        "POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 1000\r\n\r\n{{\"ref\": ",
        "0".repeat(64)
    );
    in_body.write_all(head.as_bytes()).unwrap();
    server.assert_healthy();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Both were closed without an answer: nothing was done for them.
    for mut stream in [in_headers, in_body] {
        assert_eq!(read_response(&mut stream), None);
    }
}

#[test]
fn slow_bodies_are_timed_out_while_others_are_served() {
    let mut server = server();
    // With a secret configured and a signature of the right form the server must read the
    // body to verify it (without either it refuses before reading anything).
    server.set_webhook_secret(ADMIN, "github", "a-webhook-secret-for-slow-bodies");
    let head = format!(
        "POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 1000\r\n\r\n",
        "0".repeat(64)
    );
    // Stalled: headers, ten bytes of a 1,000-byte body, then nothing.
    let mut stalled = server.connect();
    stalled.write_all(format!("{head}{{\"ref\": \"r").as_bytes()).unwrap();
    let started = Instant::now();
    // Trickling: a byte every 100 ms never completes the body in time either.
    let mut trickle = server.connect();
    trickle.write_all(head.as_bytes()).unwrap();
    let trickler = std::thread::spawn(move || {
        for _ in 0..1000 {
            if trickle.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            if Instant::now() > started + Duration::from_secs(BODY_TIMEOUT + 5) {
                break;
            }
        }
        trickle
    });
    // Others are served meanwhile.
    for _ in 0..5 {
        server.assert_healthy();
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = read_response(&mut stalled);
    let waited = started.elapsed();
    assert_refused(answer.clone(), "stalled body");
    if let Some((status, raw)) = &answer {
        assert_eq!(*status, 400, "{raw}");
        assert!(raw.contains("MALFORMED_BODY"), "{raw}");
        assert!(
            raw.contains(&format!(
                "could not be read completely: it did not all arrive within {BODY_TIMEOUT} s of the request's headers (--body-timeout)."
            )),
            "the answer names the timeout: {raw}"
        );
    }
    assert!(
        waited >= Duration::from_millis(BODY_TIMEOUT * 1000 - 100) && waited < Duration::from_secs(BODY_TIMEOUT + 3),
        "answered after {waited:?}"
    );
    let mut trickle = trickler.join().unwrap();
    assert_refused(read_response(&mut trickle), "trickled body");
    assert!(started.elapsed() < Duration::from_secs(BODY_TIMEOUT + 6));
    // Without a signature the delivery is refused from its headers: 401, the stalled body
    // never waited for (it would be a 400 at the body timeout).
    let mut unsigned = server.connect();
    let head = "POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                X-GitHub-Event: push\r\nContent-Length: 1000\r\n\r\n{\"ref\": \"r";
    unsigned.write_all(head.as_bytes()).unwrap();
    let answer = read_response(&mut unsigned);
    assert_eq!(answer.as_ref().map(|(status, _)| *status), Some(401), "{answer:?}");
    server.assert_healthy();
}

/// At the connection cap, connections whose request bodies stalled are dropped for new ones
/// (nothing of their requests was done), so a flood of them cannot lock others out for as
/// long as the body timeout.
#[test]
fn stalled_bodies_at_the_connection_cap_do_not_lock_others_out() {
    const CAP: usize = 16;
    let cap = CAP.to_string();
    let mut server = Server::start(
        ADMIN,
        &[
            "--max-connections",
            &cap,
            "--header-timeout",
            "600",
            "--body-timeout",
            "600",
        ],
    );
    server.set_webhook_secret(ADMIN, "github", "a-webhook-secret-for-stalled-bodies");
    let head = format!(
        "POST /organization/acme/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: 1000\r\n\r\n{{",
        "0".repeat(64)
    );
    let stalled: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    // Each new connection takes the place of a stalled one, at once rather than after the
    // body timeout.
    for _ in 0..3 {
        server.assert_healthy();
    }
    // The place was made before the new connection was served: a stalled one is closed by
    // now, unanswered (which one depends on whose headers the server had read).
    let closed = stalled
        .iter()
        .filter(|&stream| {
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let mut stream: &TcpStream = stream;
            match stream.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => panic!("a stalled request was answered"),
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(closed >= 1, "no stalled connection was closed");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let mut server = server();
    let mut stream = server.connect();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the server closes the connection after the header timeout.
    let started = Instant::now();
    assert!(read_response(&mut stream).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(HEADER_TIMEOUT + 3),
        "{:?}",
        started.elapsed()
    );
    server.assert_healthy();
}
