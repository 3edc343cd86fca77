//! What the standalone binary's tests share: the binary, a free port, a plain-socket HTTP/1.1
//! client (these tests talk to the real process, as a provider or a hostile client would),
//! and waiting for the server to listen.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_autodeploy");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

/// Read until the server closes: `Some((status, raw))`, or `None` when it closed (or reset)
/// without an answer.
pub fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e} (a timeout means the server never closed)"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text))
}

/// As [`try_http`], for a server that must answer.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    try_http(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A JSON request as `token` (`Authorization: Token …`): the status and the answer parsed
/// (`null` when it is not JSON).
pub fn json_call(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = format!("Token {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, answer) = http(
        port,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (status, serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null))
}

/// `autodeploy serve` to be started: on a free port of 127.0.0.1, a fresh database in a
/// temporary directory, the admin token in the environment, nothing else of the caller's
/// `AUTODEPLOY_*` variables, stdout and stderr into files.
pub struct Launch {
    port: u16,
    dir: tempfile::TempDir,
    database: PathBuf,
    listen: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    shell: Option<String>,
}

impl Launch {
    pub fn new(admin: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        Launch {
            port,
            database: dir.path().join("autodeploy.db"),
            listen: format!("127.0.0.1:{port}"),
            dir,
            args: Vec::new(),
            // The level the tests read logs at, whatever the caller's RUST_LOG.
            env: vec![
                ("AUTODEPLOY_ADMIN_TOKEN".into(), admin.into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            shell: None,
        }
    }

    /// The port the server is waited for on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set (or, with `None`, unset) an environment variable of the server.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Self {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.into(), value.into()));
        }
        self
    }

    pub fn database(mut self, path: &Path) -> Self {
        self.database = path.to_owned();
        self
    }

    /// `--listen` (still waited for on 127.0.0.1 at [`Launch::port`]).
    pub fn listen(mut self, listen: &str) -> Self {
        self.listen = listen.to_owned();
        self
    }

    /// Run `commands` in `sh` before the server replaces it (`ulimit -n 256`).
    pub fn shell(mut self, commands: &str) -> Self {
        self.shell = Some(commands.to_owned());
        self
    }

    fn command(&self) -> Command {
        let mut command = match &self.shell {
            Some(commands) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("{commands}; exec \"$0\" \"$@\""), BIN]);
                sh
            }
            None => Command::new(BIN),
        };
        command
            .args(["serve", "--listen", &self.listen, "--database"])
            .arg(&self.database)
            .args(&self.args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTODEPLOY_") {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Run to its end (a start that must fail): its output.
    pub fn run(self) -> std::process::Output {
        self.command().output().unwrap()
    }

    /// Started and answering. A free port may be taken by another test's server between
    /// [`free_port`] and the start: the server then stops, and is started again on another
    /// one (unless the test chose its `--listen`).
    pub fn start(mut self) -> Server {
        let (stdout, stderr) = (self.dir.path().join("stdout"), self.dir.path().join("stderr"));
        for attempt in 1.. {
            let mut child = self
                .command()
                .stdout(File::create(&stdout).unwrap())
                .stderr(File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            // Answering, and this process: another server on the port answers too. (The port
            // is taken before the database is opened, so a connection alone does not say the
            // server is ready.)
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let output = std::fs::read_to_string(&stderr).unwrap_or_default();
                    let chosen_here = self.listen == format!("127.0.0.1:{}", self.port);
                    if chosen_here && attempt < 5 && output.contains("another process listens on that port") {
                        break;
                    }
                    panic!("the server exited ({status}): {output}");
                }
                if matches!(try_http(self.port, "GET", "/health", &[], b""), Ok((200, _)))
                    && listens_on(child.id(), self.port)
                {
                    return Server {
                        child,
                        port: self.port,
                        database: self.database,
                        stdout,
                        stderr,
                        _dir: self.dir,
                    };
                }
                assert!(Instant::now() < deadline, "the server did not start answering");
                std::thread::sleep(Duration::from_millis(20));
            }
            self.port = free_port();
            self.listen = format!("127.0.0.1:{}", self.port);
        }
        unreachable!("each attempt returns, panics, or moves to another port")
    }
}

/// Whether process `pid` holds a listening TCP socket on `port` (any address), as Linux's
/// `/proc` tells.
fn listens_on(pid: u32, port: u16) -> bool {
    // `local_address:port` in hex, state `0A` (LISTEN), then the socket's inode.
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    (u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3)? == &"0A")
                        .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| inodes.iter().any(|inode| target.as_os_str() == inode.as_str()))
}

/// A running `autodeploy serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub database: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// [`Launch::new`] with `args`, started.
    pub fn start(admin: &str, args: &[&str]) -> Self {
        Launch::new(admin).args(args).start()
    }

    /// What it wrote on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap()
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    /// The lines it logged that contain `needle`, once there are at least `count` (or after
    /// 10 s, however many there are): a thread of its own writes the log lines, after what
    /// they report was recorded and may already be seen through the API.
    pub fn logged(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .stderr()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Set organization `acme`'s webhook secret for `provider`, as the admin `admin`.
    pub fn set_webhook_secret(&self, admin: &str, provider: &str, secret: &str) {
        let body = serde_json::json!({ "secret": secret }).to_string();
        let (status, answer) = http(
            self.port,
            "PUT",
            &format!("/organization/acme/webhook-secrets/{provider}"),
            &[
                ("Authorization", &format!("Token {admin}")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(status, 204, "{answer}");
    }

    /// A JSON call with `Authorization: Token {token}`: the status, and the answer as JSON
    /// (null when it is not).
    pub fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        json_call(self.port, token, method, path, body)
    }

    /// A GitHub push of commit `after` (from `before`) to main of `github.com/acme/shop`, to
    /// organization `acme`, signed with `secret`: the status and the answer.
    pub fn github_push(&self, secret: &str, before: &str, after: &str) -> (u16, Value) {
        let body = serde_json::json!({"ref": "refs/heads/main", "before": before, "after": after,
            "repository": {"clone_url": "https://github.com/acme/shop.git"}, "commits": []})
        .to_string();
        let signature = {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(body.as_bytes());
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        };
        let (status, answer) = http(
            self.port,
            "POST",
            "/organization/acme/webhooks/github",
            &[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &signature),
            ],
            body.as_bytes(),
        );
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    /// Organization `acme`'s deployments, newest first.
    pub fn deployments(&self, admin: &str) -> Vec<Value> {
        let (status, answer) = self.call(admin, "GET", "/organization/acme/deployments?limit=100", None);
        assert_eq!(status, 200, "{answer}");
        answer["items"].as_array().cloned().unwrap_or_default()
    }

    /// Organization `acme`'s deployments once `done` holds of them (within 60 s).
    pub fn wait_for_deployments(&self, admin: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.deployments(admin);
            if done(&listed) {
                return listed;
            }
            assert!(Instant::now() < deadline, "still: {listed:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and its exit status (within 20 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Send `SIG{name}` and wait for the exit.
    pub fn signal(&mut self, name: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIG{name}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listening socket is told as its own process's, and only as that one's.
#[test]
fn a_listening_socket_is_told_as_its_process_s() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(listens_on(std::process::id(), port));
    let mut other = Command::new("sleep").arg("5").spawn().unwrap();
    assert!(!listens_on(other.id(), port));
    drop(listener);
    assert!(!listens_on(std::process::id(), port));
    let _ = other.kill();
    let _ = other.wait();
}
