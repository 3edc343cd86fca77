//! Unauthenticated large bodies cannot grow the server's memory: 24 clients each sending
//! 24 MiB to the webhooks of organizations that have no secret are each refused 401, and the
//! server's peak resident memory stays within 128 MiB of what it was idle. Also: the bytes of
//! request bodies held at once are bounded by `--max-body-buffer`.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Launch, Server, http, read_response};

const ADMIN: &str = "memory-admin-token-0123456789";
const CLIENTS: usize = 24;
const BODY: usize = 24 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// `VmHWM` (peak resident) and `VmRSS` of the server, in bytes.
fn memory(server: &Server) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// POST `len` bytes of JSON-looking filler (whole MiBs) to `path` while reading the answer:
/// the server may answer, and close, before the body is all sent. The status and the answer.
fn post_large(port: u16, path: &str, headers: &str, len: usize) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let mut reader = stream.try_clone().unwrap();
    let answer = std::thread::spawn(move || read_response(&mut reader));
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..len / chunk.len() {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    answer
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("{path}: closed without an answer"))
}

#[test]
fn unauthenticated_large_bodies_leave_memory_flat() {
    let server = Launch::new(ADMIN).env("RUST_LOG", Some("warn")).start();
    let port = server.port;
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    let (idle, _) = memory(&server);

    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    let mut answers = Vec::new();
    for (route, event) in [("webhooks/github", "push"), ("registry-webhooks/github", "package")] {
        let headers = format!("X-GitHub-Event: {event}\r\nX-GitHub-Delivery: d-1\r\n{signature}");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (path, headers) = (format!("/organization/nosecret{i}/{route}"), headers.clone());
                std::thread::spawn(move || post_large(port, &path, &headers, BODY).0)
            })
            .collect();
        let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        answers.push((route, statuses));
    }
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    let (peak, now) = memory(&server);
    eprintln!(
        "idle {} MiB, peak {} MiB, now {} MiB; answers {answers:?}",
        idle / MIB,
        peak / MIB,
        now / MIB
    );
    for (route, statuses) in answers {
        assert!(statuses.iter().all(|s| *s == 401), "{route}: {statuses:?}");
    }
    assert!(peak <= idle + 128 * MIB, "peak {} MiB above idle", (peak - idle) / MIB);
}

#[test]
fn a_body_larger_than_the_body_buffer_is_refused_413() {
    for launch in [
        Launch::new(ADMIN).args(["--max-body-buffer", "2MiB"]),
        Launch::new(ADMIN).env("AUTODEPLOY_MAX_BODY_BUFFER", Some("2MiB")),
    ] {
        let server = launch.start();
        server.set_webhook_secret(ADMIN, "github", "memory-webhook-secret-0123");
        // Under the route's own limit (25 MiB), over the server's buffer.
        let hook = "/organization/acme/webhooks/github";
        let (status, answer) = post_large(server.port, hook, "X-GitHub-Event: push\r\n", 3 * 1024 * 1024);
        assert_eq!(status, 413, "{answer}");
        assert!(
            answer.contains(&format!("limit of {} bytes", 2 * 1024 * 1024)),
            "{answer}"
        );
    }
}

/// Badly signed deliveries to an organization that has a secret: each body is read, checked
/// and refused 401, the first few recorded in the history. A flood of them must leave the
/// server's memory where it was once warmed up, and the good delivery before it listed.
#[test]
fn a_flood_of_bad_signatures_leaves_memory_flat() {
    const WARM_UP: usize = 300;
    const FLOOD: usize = 3_000;
    const FLOOD_BODY: usize = 64 * 1024;
    let server = Launch::new(ADMIN).env("RUST_LOG", Some("warn")).start();
    let secret = "memory-webhook-secret-0123";
    server.set_webhook_secret(ADMIN, "github", secret);
    let (status, answer) = server.github_push(secret, &"1".repeat(40), &"2".repeat(40));
    assert!(matches!(status, 200 | 202), "{status} {answer}");

    let hook = "/organization/acme/webhooks/github";
    let body = format!(
        "{{\"ref\": \"refs/heads/main\", \"pad\": \"{}\"}}",
        "x".repeat(FLOOD_BODY)
    );
    let bad = |i: usize| {
        let delivery = format!("flood-{i}");
        let headers = [
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery.as_str()),
            (
                "X-Hub-Signature-256",
                "sha256=00000000000000000000000000000000000000000000000000000000000000ff",
            ),
        ];
        let (status, answer) = http(server.port, "POST", hook, &headers, body.as_bytes());
        assert_eq!(status, 401, "delivery {i}: {answer}");
    };
    (0..WARM_UP).for_each(bad);
    let (_, warm) = memory(&server);
    (WARM_UP..WARM_UP + FLOOD).for_each(bad);
    let (_, after) = memory(&server);
    eprintln!(
        "resident after {WARM_UP} bad deliveries {} MiB, after {FLOOD} more of {} KiB each {} MiB",
        warm / MIB,
        FLOOD_BODY / 1024,
        after / MIB
    );
    // Keeping what the flood sent (3,000 × 64 KiB) would add 188 MiB.
    assert!(
        after <= warm + 16 * MIB,
        "resident memory grew by {} MiB during the flood",
        (after - warm) / MIB
    );

    let (status, listed) = server.call(ADMIN, "GET", "/organization/acme/deliveries?limit=100", None);
    assert_eq!(status, 200, "{listed}");
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    let outcomes: Vec<&str> = items.iter().filter_map(|d| d["outcome"].as_str()).collect();
    let rejected = outcomes.iter().filter(|o| **o == "REJECTED").count();
    // The budget is per received minute: the flood may span two or three of them.
    assert!(rejected <= 3 * 60, "{rejected} rejected deliveries recorded");
    let (status, good) = server.call(
        ADMIN,
        "GET",
        "/organization/acme/deliveries?outcome=NOTHING_TO_DEPLOY",
        None,
    );
    assert_eq!(status, 200, "{good}");
    assert_eq!(good["items"].as_array().map(Vec::len), Some(1), "{good}");
}
