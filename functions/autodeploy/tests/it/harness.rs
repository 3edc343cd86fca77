//! What the standalone binary's tests share: the binary, a free port, a plain-socket HTTP/1.1
//! client (these tests talk to the real process, as a provider or a hostile client would),
//! and waiting for the server to listen.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_autodeploy");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait until the server listens on `port` (20 s at most).
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a plain socket; `(status, body)` or the I/O error.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// As [`try_http`], for a server that must answer.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    try_http(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `autodeploy serve` on a fresh database in a temporary directory and a free port, with the
/// admin token `admin` and `extra_args`; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Started and listening. `piped`: stdout and stderr are kept for the test to read (else
    /// discarded).
    pub fn start(admin: &str, extra_args: &[&str], piped: bool) -> Self {
        use std::process::{Command, Stdio};

        let output = || if piped { Stdio::piped() } else { Stdio::null() };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra_args)
            .arg("--database")
            .arg(dir.path().join("autodeploy.db"))
            .env("AUTODEPLOY_ADMIN_TOKEN", admin)
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap();
        wait_listening(port);
        Server { child, port, _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
