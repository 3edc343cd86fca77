//! The `autodeploy` binary as an operator meets it: flags, start-up failures, serving, the
//! JSON line per queued deployment on stdout, and graceful shutdown on SIGTERM.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

use crate::harness::{BIN, Launch, Server, free_port, http};

const ADMIN: &str = "cli-test-admin-token-0123456789";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("AUTODEPLOY_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_missing_or_short_admin_token_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let out = run(&["serve", "--database", db.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUTODEPLOY_ADMIN_TOKEN"));
    let out = run(
        &["serve", "--database", db.to_str().unwrap()],
        &[("AUTODEPLOY_ADMIN_TOKEN", "short")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    // The token is never printed back.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("short\n"));
    // A token no Authorization header could carry would start a server no admin call reaches.
    let long = "x".repeat(513);
    for token in [
        "cli-test-admin-token-\u{e9}t\u{e9}",
        "cli-test-admin\ttoken-0123",
        "cli-test-admin-token\u{7}x",
        &long,
    ] {
        let out = run(
            &["serve", "--database", db.to_str().unwrap()],
            &[("AUTODEPLOY_ADMIN_TOKEN", token)],
        );
        assert!(!out.status.success(), "{token:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("must be printable ASCII") && stderr.contains("at most 512"),
            "{stderr}"
        );
        assert!(!stderr.contains(token), "{stderr}");
    }
    assert!(!db.exists(), "refused before any file is made");
}

/// A log filter that does not parse is said to be ignored, not silently.
#[test]
fn a_log_filter_that_does_not_parse_is_warned_about() {
    let server = Launch::new(ADMIN).env("RUST_LOG", Some("garbage[")).start();
    let warned = server.logged("RUST_LOG is not a log filter: logging at info", 1);
    assert_eq!(warned.len(), 1, "{}", server.stderr());
}

/// A hang-up (a closed terminal, a log rotation's signal) shuts the server down as SIGTERM
/// does, rather than ending it at once.
#[test]
fn sighup_shuts_down_gracefully() {
    let mut server = Server::start(ADMIN, &[]);
    assert_eq!(http(server.port, "GET", "/health", &[], b"").0, 200);
    let status = server.signal("HUP");
    assert!(status.success(), "{status:?}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("shutting down") && stderr.contains("SIGHUP"),
        "{stderr}"
    );
}

/// One database file under two names (a hard link) would have two logs, one per name, and
/// the lock beside one name would not see the other: a start on it is refused.
#[test]
fn a_database_with_two_names_stops_start_up() {
    let mut first = Server::start(ADMIN, &[]);
    assert!(first.terminate().success());
    let other = first.database.with_file_name("other-name.db");
    std::fs::hard_link(&first.database, &other).unwrap();
    let out = Launch::new(ADMIN).database(&first.database).run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the database {} has 2 names (hard links)",
            first.database.display()
        )),
        "{stderr}"
    );
    std::fs::remove_file(&other).unwrap();
    let again = Launch::new(ADMIN).database(&first.database).start();
    assert_eq!(again.call(ADMIN, "GET", "/organization/acme/services", None).0, 200);
}

#[test]
fn bad_flags_are_refused_with_usage() {
    let out = run(
        &["serve", "--listen", "not-an-address"],
        &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = run(&["serve", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[test]
fn an_unwritable_database_path_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    // A path below a regular file cannot be created, even by root.
    let file = dir.path().join("file");
    std::fs::write(&file, "this is not a database\n".repeat(200)).unwrap();
    let db = file.join("autodeploy.db");
    // The port is taken before files are touched: a free one.
    let listen = format!("127.0.0.1:{}", free_port());
    let out = run(
        &["serve", "--listen", &listen, "--database", db.to_str().unwrap()],
        &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    // A file that is not a database (on a port of its own, in case it were accepted).
    let listen = format!("127.0.0.1:{}", free_port());
    let out = run(
        &["serve", "--listen", &listen, "--database", file.to_str().unwrap()],
        &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the database"));
    // The key made for it is not left behind.
    assert!(!dir.path().join("file.key").exists());
}

/// A `--database` that names a directory, another program's SQLite file or a database of a
/// newer schema stops the start with what is wrong, and leaves the file as it was (no
/// permissions changed, no lock file beside a directory, no migration's SQL in the message).
#[test]
fn a_database_that_is_not_ours_stops_start_up_and_is_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let start = |db: &std::path::Path| {
        let listen = format!("127.0.0.1:{}", free_port());
        let out = run(
            &["serve", "--listen", &listen, "--database", db.to_str().unwrap()],
            &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)],
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let directory = dir.path().join("data");
    std::fs::create_dir(&directory).unwrap();
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = start(&directory);
    assert!(
        stderr.contains("it is a directory") && stderr.contains("data/autodeploy.db"),
        "{stderr}"
    );
    assert_eq!(mode(&directory), 0o755);
    assert!(!dir.path().join("data.lock").exists());

    let foreign = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE deployments (id TEXT); INSERT INTO deployments VALUES ('x');")
        .unwrap();
    drop(conn);
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = start(&foreign);
    assert!(stderr.contains("not an autodeploy database"), "{stderr}");
    assert!(!stderr.contains("CREATE"), "{stderr}");
    assert_eq!(mode(&foreign), 0o644, "a file that is not ours keeps its permissions");

    let newer = dir.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 1000)
        .unwrap();
    let stderr = start(&newer);
    assert!(
        stderr.contains("schema version 1000") && stderr.contains("newer autodeploy"),
        "{stderr}"
    );
    assert!(!stderr.contains("unreadable"), "{stderr}");
}

#[test]
fn serves_prints_queued_deployments_and_stops_on_sigterm() {
    let mut server = Server::start(ADMIN, &["--print-deployments"]);
    let port = server.port;
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    let json = ("Content-Type", "application/json");
    set_up_gitea(port);

    let push = r#"{"ref": "refs/heads/main", "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222", "total_commits": 1,
        "commits": [{"id": "2222222222222222222222222222222222222222", "message": "change", "added": ["a"], "removed": [], "modified": []}],
        "repository": {"clone_url": "https://git.example.com/acme/shop.git"}, "pusher": {"login": "dev"}}"#;
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"cli-test-webhook-secret").unwrap();
        mac.update(push.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let (status, body) = http(
        port,
        "POST",
        "/organization/acme/webhooks/gitea",
        &[
            json,
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "d-1"),
            ("X-Gitea-Signature", &signature),
        ],
        push.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let deployment_id = reply["queued"][0]["deployment_id"].as_str().unwrap().to_owned();

    // SIGTERM: the server finishes and exits cleanly.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(server.stderr().contains("shutting down"), "{}", server.stderr());

    // Exactly one JSON line on stdout (asked for with --print-deployments): the queued request.
    let stdout = server.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let message: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(message["deployment_id"], deployment_id.as_str());
    assert_eq!(message["schema"], "autodeploy.deployment-request.v1");
    assert_eq!(message["git_commit_id"], "2222222222222222222222222222222222222222");
    // Logs went to stderr, and never carried the tokens or secrets.
    let stderr = server.stderr();
    assert!(
        !stderr.contains(ADMIN) && !stderr.contains("cli-test-webhook-secret"),
        "{stderr}"
    );
}

#[test]
fn listen_takes_host_names_and_a_bare_port() {
    // A host name: the addresses it names, here loopback only.
    let launch = Launch::new(ADMIN);
    let port = launch.port();
    let server = launch.listen(&format!("localhost:{port}")).start();
    assert_eq!(http(server.port, "GET", "/health", &[], b"").0, 200);
    assert!(
        TcpStream::connect(("127.0.0.2", port)).is_err(),
        "localhost listens beyond 127.0.0.1"
    );
    drop(server);

    // `:PORT`: every interface, IPv4 (another loopback address shows it) and IPv6 where the
    // machine has it.
    let launch = Launch::new(ADMIN);
    let port = launch.port();
    let server = launch.listen(&format!(":{port}")).start();
    for host in ["127.0.0.1", "127.0.0.2"] {
        let mut stream = TcpStream::connect((host, port)).unwrap();
        use std::io::{Read, Write};
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    if TcpListener::bind("[::1]:0").is_ok() {
        assert!(TcpStream::connect(("::1", port)).is_ok(), "no IPv6 on :{port}");
    }
    drop(server);

    // Refused forms say what works, before anything else happens.
    for (listen, says) in [
        ("8080", "a port alone is written :8080"),
        ("::1:8080", "in brackets"),
        ("local host:8080", "not an IP address nor a host name"),
    ] {
        let out = run(&["serve", "--listen", listen], &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)]);
        assert_eq!(out.status.code(), Some(2), "{listen}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--listen") && stderr.contains(says),
            "{listen}: {stderr}"
        );
        assert!(stderr.contains(":8080 or 0.0.0.0:8080 (every interface)"), "{stderr}");
    }
}

#[test]
fn a_start_that_cannot_listen_leaves_no_file_behind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Launch::new(ADMIN)
        .database(&dir.path().join("autodeploy.db"))
        .listen(&taken.to_string())
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {taken}"))
            && stderr.contains("another process listens on that port"),
        "{stderr}"
    );
    let name = "no-such-host.invalid:8080";
    let out = Launch::new(ADMIN)
        .database(&dir.path().join("autodeploy.db"))
        .listen(name)
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot resolve the host name of --listen {name}")),
        "{stderr}"
    );
    // Neither created the database, its journal nor its key.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// One server per database: a second one on the same file stops at start-up, saying why, and
/// the first goes on serving; once the first has stopped, the database can be served again.
#[test]
fn a_second_server_on_the_same_database_stops_at_start_up() {
    let mut first = Server::start(ADMIN, &[]);
    let out = Launch::new(ADMIN).database(&first.database).run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the database {} is in use by another autodeploy server",
            first.database.display()
        )),
        "{stderr}"
    );
    assert_eq!(first.call(ADMIN, "GET", "/organization/acme/services", None).0, 200);
    assert!(first.terminate().success());
    let again = Launch::new(ADMIN).database(&first.database).start();
    assert_eq!(again.call(ADMIN, "GET", "/organization/acme/services", None).0, 200);
}

#[test]
fn the_admin_token_comes_from_the_environment_or_a_file_never_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("autodeploy.db");
    // On the command line: refused, without repeating it, before any file is made.
    let out = Launch::new(ADMIN)
        .database(&db)
        .env("AUTODEPLOY_ADMIN_TOKEN", None)
        .args(["--admin-token", ADMIN])
        .run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--admin-token is refused")
            && stderr.contains("AUTODEPLOY_ADMIN_TOKEN")
            && stderr.contains("--admin-token-file"),
        "{stderr}"
    );
    assert!(!stderr.contains(ADMIN), "{stderr}");
    assert!(!db.exists());
    // The help shows the file, not the refused flag.
    let help = run(&["serve", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--admin-token-file") && !help.contains("--admin-token <"),
        "{help}"
    );

    // From the environment, white space around it (a secret file's newline) is not part of it.
    let padded = Launch::new(ADMIN)
        .env("AUTODEPLOY_ADMIN_TOKEN", Some(&format!(" {ADMIN}\n")))
        .start();
    let good = format!("Token {ADMIN}");
    let services = "/organization/acme/services";
    assert_eq!(
        http(padded.port, "GET", services, &[("Authorization", &good)], b"").0,
        200
    );
    drop(padded);

    // From a file, by flag or variable; white space around it is not part of it.
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("  {ADMIN}\n")).unwrap();
    let by_flag = Launch::new(ADMIN)
        .env("AUTODEPLOY_ADMIN_TOKEN", None)
        .args([std::ffi::OsStr::new("--admin-token-file"), file.as_os_str()]);
    let by_variable = Launch::new(ADMIN)
        .env("AUTODEPLOY_ADMIN_TOKEN", None)
        .env("AUTODEPLOY_ADMIN_TOKEN_FILE", file.to_str());
    for (i, launch) in [by_flag, by_variable].into_iter().enumerate() {
        // Readable by others (the first time) is warned about, not refused: an orchestrator's
        // secret mounts often are.
        let mode = if i == 0 { 0o644 } else { 0o600 };
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let server = launch.start();
        let warned = server.logged("readable by other users", usize::from(i == 0));
        assert_eq!(warned.len(), usize::from(i == 0), "{warned:?}");
        let services = "/organization/acme/services";
        let good = format!("Token {ADMIN}");
        assert_eq!(
            http(server.port, "GET", services, &[("Authorization", &good)], b"").0,
            200
        );
        let wrong = format!("Token {ADMIN}x");
        assert_eq!(
            http(server.port, "GET", services, &[("Authorization", &wrong)], b"").0,
            401
        );
    }

    // Both at once, or a file that cannot be read: refused.
    let out = Launch::new(ADMIN)
        .env("AUTODEPLOY_ADMIN_TOKEN_FILE", file.to_str())
        .run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep one"));
    let missing = dir.path().join("missing");
    let out = Launch::new(ADMIN)
        .env("AUTODEPLOY_ADMIN_TOKEN", None)
        .env("AUTODEPLOY_ADMIN_TOKEN_FILE", missing.to_str())
        .run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the admin token file"));
}

/// The request threads: one per core but one unless told, said in the start's log line; a
/// number out of range stops the start with a usage error.
#[test]
fn request_threads_are_set_and_logged() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let default = cores.saturating_sub(1).max(1);
    for (args, threads) in [(&[][..], default), (&["--request-threads", "3"][..], 3)] {
        let mut server = Server::start(ADMIN, args);
        server.call(ADMIN, "GET", "/health", None);
        assert!(server.terminate().success());
        let logged = server.stderr();
        let said = format!("request_threads={threads}");
        assert!(logged.split_whitespace().any(|word| word == said), "{logged}");
    }
    for value in ["0", "1025", "many"] {
        let out = run(
            &["serve", "--request-threads", value],
            &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)],
        );
        assert_eq!(out.status.code(), Some(2), "{value}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--request-threads"),
            "{value}"
        );
    }
}

#[test]
fn logs_are_coloured_on_a_terminal_only() {
    // Into a file: plain text.
    let mut server = Server::start(ADMIN, &[]);
    assert!(server.terminate().success());
    let logged = server.stderr();
    assert!(logged.contains("autodeploy serving"), "{logged}");
    assert!(!logged.contains('\x1b'), "{logged:?}");

    // On a terminal (a pseudo-terminal the test reads): coloured.
    let (terminal, reader) = pseudo_terminal();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--database"])
        .arg(dir.path().join("autodeploy.db"))
        .env("AUTODEPLOY_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(terminal)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut reader = std::io::BufReader::new(reader);
    while !String::from_utf8_lossy(&seen).contains("autodeploy serving") {
        let mut line = Vec::new();
        let n = std::io::BufRead::read_until(&mut reader, b'\n', &mut line).unwrap();
        assert!(n > 0, "the terminal closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains(&0x1b), "{:?}", String::from_utf8_lossy(&seen));
}

/// A pseudo-terminal: its terminal side (for a child's stderr) and the side that reads what
/// is written there.
fn pseudo_terminal() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;

    // SAFETY: plain calls on a descriptor this function owns; each result is checked.
    unsafe {
        let controller = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(controller >= 0);
        assert_eq!(libc::grantpt(controller), 0);
        assert_eq!(libc::unlockpt(controller), 0);
        let name = libc::ptsname(controller);
        assert!(!name.is_null());
        let terminal = libc::open(name, libc::O_RDWR | libc::O_NOCTTY);
        assert!(terminal >= 0);
        (
            std::fs::File::from_raw_fd(terminal),
            std::fs::File::from_raw_fd(controller),
        )
    }
}

/// A service following `git.example.com/acme/shop` on main, and the organization's Gitea
/// secret.
fn set_up_gitea(port: u16) {
    let auth = format!("Token {ADMIN}");
    let service = r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITEA", "url": "https://git.example.com/acme/shop.git", "branch": "main"}}"#;
    let json = ("Content-Type", "application/json");
    let (status, body) = http(
        port,
        "PUT",
        "/organization/acme/services/api",
        &[("Authorization", &auth), json],
        service.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        port,
        "PUT",
        "/organization/acme/webhook-secrets/gitea",
        &[("Authorization", &auth), json],
        br#"{"secret": "cli-test-webhook-secret"}"#,
    );
    assert_eq!(status, 204, "{body}");
}

/// A signed Gitea push of commit `n` (`n`-filled hex, after commit `n - 1`), with or without a
/// delivery id; `(status, body)`.
fn gitea_push(port: u16, n: u8, delivery: Option<&str>) -> (u16, String) {
    let commit = |d: u8| format!("{d:x}").repeat(40);
    let push = format!(
        r#"{{"ref": "refs/heads/main", "before": "{}", "after": "{}", "total_commits": 1,
        "commits": [{{"id": "{}", "message": "change", "added": ["a"], "removed": [], "modified": []}}],
        "repository": {{"clone_url": "https://git.example.com/acme/shop.git"}}, "pusher": {{"login": "dev"}}}}"#,
        commit(n - 1),
        commit(n),
        commit(n)
    );
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"cli-test-webhook-secret").unwrap();
        mac.update(push.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", signature.as_str()),
    ];
    if let Some(id) = delivery {
        headers.push(("X-Gitea-Delivery", id));
    }
    http(
        port,
        "POST",
        "/organization/acme/webhooks/gitea",
        &headers,
        push.as_bytes(),
    )
}

/// Printing is opt-in: without `--print-deployments` stdout stays empty.
#[test]
fn deployments_are_not_printed_unless_asked() {
    let mut server = Server::start(ADMIN, &[]);
    set_up_gitea(server.port);
    assert_eq!(gitea_push(server.port, 2, Some("d-1")).0, 202);
    assert!(server.terminate().success());
    assert_eq!(server.stdout(), "");
}

/// A switch's variable takes `1`/`0` (and `yes`/`no`, `on`/`off`) as well as `true`/`false`.
#[test]
fn switches_take_one_and_zero_from_the_environment() {
    for (value, printed) in [("1", true), ("0", false), ("yes", true), ("off", false)] {
        let mut server = Launch::new(ADMIN)
            .env("AUTODEPLOY_PRINT_DEPLOYMENTS", Some(value))
            .start();
        set_up_gitea(server.port);
        assert_eq!(gitea_push(server.port, 2, Some("d-1")).0, 202);
        assert!(server.terminate().success());
        assert_eq!(
            server.stdout().contains("deployment_id"),
            printed,
            "{value}: {}",
            server.stdout()
        );
    }
}

/// Each settings change logs one audit line: the token (id and name, never the token), the
/// route, the resource and its new version; a token's own line names the token created.
#[test]
fn settings_changes_are_audited() {
    let mut server = Server::start(ADMIN, &[]);
    set_up_gitea(server.port);
    let admin = format!("Token {ADMIN}");
    let json = ("Content-Type", "application/json");
    let (status, body) = http(
        server.port,
        "POST",
        "/organization/acme/tokens",
        &[("Authorization", &admin), json],
        br#"{"name": "ci settings", "scopes": ["manage"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (token_id, token) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
    let (status, body) = http(
        server.port,
        "DELETE",
        "/organization/acme/services/api",
        &[("Authorization", &format!("Token {token}"))],
        b"",
    );
    assert_eq!(status, 204, "{body}");
    assert!(server.terminate().success());
    let stderr = server.stderr();
    let audit: Vec<&str> = stderr.lines().filter(|l| l.contains("settings changed")).collect();
    assert_eq!(audit.len(), 4, "{stderr}");
    let expect = [
        (
            "PUT /organization/{org}/services/{service_id}",
            "service api",
            "version=1",
            "admin",
        ),
        (
            "PUT /organization/{org}/webhook-secrets/{provider}",
            "webhook secret gitea",
            "",
            "admin",
        ),
        ("POST /organization/{org}/tokens", "token ", "", "admin"),
        (
            "DELETE /organization/{org}/services/{service_id}",
            "service api",
            "",
            token_id,
        ),
    ];
    for (line, (route, resource, version, who)) in audit.iter().zip(expect) {
        for part in [route, resource, version, who, "org=\"acme\""] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }
        assert!(!line.contains(token) && !line.contains(ADMIN), "{line}");
    }
    assert!(audit[3].contains("ci settings"), "{}", audit[3]);
}

/// `autodeploy serve --print-deployments | head -n 1`: once stdout is closed, printing fails,
/// and that must change no answer: every push is acknowledged once, nothing is lost or
/// queued twice, and the server stays healthy.
#[test]
fn a_closed_stdout_changes_no_answer() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--print-deployments", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database")
        .arg(dir.path().join("autodeploy.db"))
        .env("AUTODEPLOY_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away, as `head -n 1` does after its line.
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while crate::harness::try_http(port, "GET", "/health", &[], b"")
        .map(|(s, _)| s)
        .ok()
        != Some(200)
    {
        assert!(std::time::Instant::now() < deadline, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    set_up_gitea(port);
    for n in 2..=4u8 {
        let (status, body) = gitea_push(port, n, Some(&format!("d-{n}")));
        assert_eq!(status, 202, "push {n}: {body}");
    }
    // A redelivery without its id (a proxy that drops the header) queues nothing more.
    let (status, body) = gitea_push(port, 4, None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ALREADY_QUEUED"), "{body}");
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    let auth = format!("Token {ADMIN}");
    let (status, body) = http(
        port,
        "GET",
        "/organization/acme/deployments",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{body}");
    // A later push still queues.
    assert_eq!(gitea_push(port, 5, Some("d-5")).0, 202);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(dir);
}

/// SPEC "Bounded tenants": `AUTODEPLOY_MAX_SERVICES` (or `--max-services`) bounds the services
/// of each organization; past it a PUT is a 400 naming `service`, replacing one is not.
#[test]
fn an_organization_holds_at_most_max_services() {
    for launch in [
        Launch::new(ADMIN).env("AUTODEPLOY_MAX_SERVICES", Some("2")),
        Launch::new(ADMIN).args(["--max-services", "2"]),
    ] {
        let server = launch.start();
        let put = |org: &str, id: &str| {
            let body = serde_json::json!({"environment_id": "production", "kind": "APPLICATION",
                "git_repository": {"provider": "GITHUB", "url": format!("https://github.com/acme/{id}"), "branch": "main"}});
            server.call(ADMIN, "PUT", &format!("/organization/{org}/services/{id}"), Some(body))
        };
        assert_eq!(put("acme", "one").0, 201);
        assert_eq!(put("acme", "two").0, 201);
        let (status, body) = put("acme", "three");
        assert_eq!(status, 400, "{body}");
        let error = &body["error"];
        assert_eq!(error["details"][0]["field"], "service", "{body}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("AUTODEPLOY_MAX_SERVICES"), "{body}");
        assert_eq!(put("acme", "two").0, 200);
        assert_eq!(put("other", "three").0, 201);
    }
    let out = run(&["serve", "--max-services", "0"], &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)]);
    assert_eq!(out.status.code(), Some(2));
}
