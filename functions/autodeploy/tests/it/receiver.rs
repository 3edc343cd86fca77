//! A deploy target's endpoint for the dispatcher's tests: an HTTPS server on 127.0.0.1 whose
//! certificate (for `localhost` and `127.0.0.1`) comes from the test CA of
//! `tests/fixtures/tls`, which the server under test trusts through `SSL_CERT_FILE`. It
//! records every request (method, path, headers, body, when) before it answers, and answers
//! the n-th one (from 0) as the test says: a status, or after a gate opens, or never.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The test CA's certificate, for the server's `SSL_CERT_FILE`.
pub fn ca_file() -> String {
    tls_fixture("ca.pem")
}

fn tls_fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Captured {
    /// The value of header `name` (lower-case), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A gate a held answer waits for.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
    }
}

/// How the receiver answers one request.
pub enum Answer {
    /// This status, with these headers and this body.
    Reply(u16, Vec<(&'static str, String)>, String),
    /// This status once the gate is open (a gate never opened: no answer at all).
    StatusAfter(u16, Gate),
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer::Reply(status, Vec::new(), String::new())
    }
}

type Respond = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl Receiver {
    /// Listening, answering the n-th request with `respond(n)`.
    pub fn start(respond: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let respond: Respond = Arc::new(respond);
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, recorded, respond) = (Arc::clone(&config), Arc::clone(&recorded), Arc::clone(&respond));
                std::thread::spawn(move || serve_connection(stream, config, &recorded, &respond));
            }
        });
        Receiver { port, requests }
    }

    /// `https://localhost:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests once there are at least `n` (within 60 s).
    pub fn wait_for(&self, n: usize) -> Vec<Captured> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} requests expected, got {}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Requests of one connection, kept alive as the client likes, until it closes.
fn serve_connection(stream: TcpStream, config: Arc<ServerConfig>, recorded: &Mutex<Vec<Captured>>, respond: &Respond) {
    let Ok(connection) = ServerConnection::new(config) else {
        return;
    };
    let mut stream = BufReader::new(StreamOwned::new(connection, stream));
    while let Some(captured) = read_request(&mut stream) {
        let n = {
            let mut recorded = recorded.lock().unwrap();
            recorded.push(captured);
            recorded.len() - 1
        };
        let (status, headers, body) = match respond(n) {
            Answer::Reply(status, headers, body) => (status, headers, body),
            Answer::StatusAfter(status, gate) => {
                gate.wait();
                (status, Vec::new(), String::new())
            }
        };
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut answer = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            answer.push_str(&format!("{name}: {value}\r\n"));
        }
        answer.push_str("\r\n");
        answer.push_str(&body);
        let stream = stream.get_mut();
        if stream
            .write_all(answer.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The next request on the connection; `None` once it is closed.
fn read_request(stream: &mut impl BufRead) -> Option<Captured> {
    let mut line = String::new();
    if stream.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some(Captured {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}
