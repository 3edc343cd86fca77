//! The `autodeploy` binary as an operator meets it: flags, start-up failures, serving, the
//! JSON line per queued deployment on stdout, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{BIN, Server, free_port, http};

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
    let out = run(
        &["serve", "--database", db.to_str().unwrap()],
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
}

#[test]
fn serves_prints_queued_deployments_and_stops_on_sigterm() {
    let mut server = Server::start(ADMIN, &[], true);
    let port = server.port;
    assert_eq!(http(port, "GET", "/health", &[], b"").0, 200);
    let auth = format!("Token {ADMIN}");
    let json = ("Content-Type", "application/json");
    let service = r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITEA", "url": "https://git.example.com/acme/shop.git", "branch": "main"}}"#;
    let (status, body) = http(
        port,
        "PUT",
        "/organization/acme/services/api",
        &[("Authorization", &auth), json],
        service.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let secret = r#"{"secret": "cli-test-webhook-secret"}"#;
    let (status, _) = http(
        port,
        "PUT",
        "/organization/acme/webhook-secrets/gitea",
        &[("Authorization", &auth), json],
        secret.as_bytes(),
    );
    assert_eq!(status, 204);

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
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    // Exactly one JSON line on stdout: the queued request.
    let stdout = server.child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout).lines().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let message: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(message["deployment_id"], deployment_id.as_str());
    assert_eq!(message["schema"], "autodeploy.deployment-request.v1");
    assert_eq!(message["git_commit_id"], "2222222222222222222222222222222222222222");
    // Logs went to stderr, and never carried the tokens or secrets.
    let mut stderr = String::new();
    server.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(
        !stderr.contains(ADMIN) && !stderr.contains("cli-test-webhook-secret"),
        "{stderr}"
    );
}
