//! Many idle connections against a server with few file descriptors: the server caps its
//! connections below its descriptor limit, closes idle ones for new ones at the cap, raises
//! its soft limit to the hard one, and does not flood its log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Launch, Server};

const ADMIN: &str = "connections-admin-token-0123456789";

/// `(soft, hard)` "Max open files" of a process.
fn open_files_limit(server: &Server) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn six_hundred_idle_sockets_do_not_lock_out_a_health_check() {
    // 256 descriptors, soft and hard; an idle connection would be kept for a minute.
    let server = Launch::new(ADMIN)
        .shell("ulimit -n 256")
        .args(["--header-timeout", "60"])
        .start();
    assert_eq!(open_files_limit(&server), ("256".to_owned(), "256".to_owned()));
    let idle: Vec<TcpStream> = (0..600)
        .map(|i| TcpStream::connect(("127.0.0.1", server.port)).unwrap_or_else(|e| panic!("socket {i}: {e}")))
        .collect();

    // Behind the 600 in the kernel's queue, a health check is still answered (the server
    // would otherwise hold the first ones for the whole minute).
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("no answer to /health: {e}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The idle ones the server closed to make room: at least those ahead of the check
    // beyond its cap.
    let closed = idle
        .iter()
        .filter(|s| {
            let mut stream: &TcpStream = s;
            stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            match stream.read(&mut [0u8; 1]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(closed >= 600 - 256, "{closed} closed");
    drop(idle);

    // A few lines, not one per refused connection.
    let logged = server.stderr();
    assert!(!logged.contains("accept failed"), "{logged}");
    assert!(logged.lines().count() <= 8, "{logged}");
    // Once per 5 s: once, or twice on a slow machine.
    let at_the_cap = logged.matches("at the connection limit").count();
    assert!((1..=2).contains(&at_the_cap), "{logged}");
    assert!(logged.contains("fewer connections than --max-connections"), "{logged}");
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let server = Launch::new(ADMIN).shell("ulimit -Sn 256").start();
    let (soft, hard) = open_files_limit(&server);
    assert_ne!(hard, "256", "the hard limit must be above 256 for this test");
    assert_eq!(soft, hard);
}
