//! The README's examples, run against the real server: the pull consumer
//! (`examples/consumer.py`) and the deploy endpoint of a WEBHOOK target, which verifies
//! signatures with the reference `standardwebhooks` library (`examples/receiver.py`).

use serde_json::Value;
use std::process::{Command, Stdio};

use crate::harness::{Server, free_port};

const ADMIN: &str = "examples-admin-token-0123456789";
const SECRET: &str = "examples-webhook-secret-0123";

/// The test virtualenv's python (`scripts/test` exports `AUTODEPLOY_TEST_VENV`), which has
/// `standardwebhooks`; `None` outside the suite's runner.
fn python() -> Option<String> {
    let venv = std::env::var("AUTODEPLOY_TEST_VENV").ok()?;
    Some(format!("{venv}/bin/python"))
}

fn example(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn admin_call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.call(ADMIN, method, path, body)
}

/// A service `api` following `github.com/acme/shop` on main (with `extra` fields), and the
/// GitHub secret.
fn set_up(server: &Server, extra: Value) {
    let mut service = serde_json::json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"}});
    if let (Some(service), Some(extra)) = (service.as_object_mut(), extra.as_object()) {
        service.extend(extra.clone());
    }
    let (status, answer) = admin_call(server, "PUT", "/organization/acme/services/api", Some(service));
    assert_eq!(status, 201, "{answer}");
    server.set_webhook_secret(ADMIN, "github", SECRET);
}

/// A signed GitHub push of commit `after` to main; its answer's status.
fn push(server: &Server, before: &str, after: &str) -> u16 {
    let (status, answer) = server.github_push(SECRET, before, after);
    assert!(status == 202 || status == 200, "{status} {answer}");
    status
}

fn deployments(server: &Server) -> Vec<Value> {
    server.deployments(ADMIN)
}

#[test]
fn the_consumer_leases_deploys_acknowledges_and_reports() {
    let Some(python) = python() else {
        eprintln!("AUTODEPLOY_TEST_VENV is not set: run through ./scripts/test");
        return;
    };
    let server = Server::start(ADMIN, &[]);
    set_up(&server, serde_json::json!({}));
    let (status, token) = admin_call(
        &server,
        "POST",
        "/organization/acme/tokens",
        Some(serde_json::json!({"name": "engine", "scopes": ["consume"]})),
    );
    assert_eq!(status, 201, "{token}");
    let c = |n: u8| format!("{n}").repeat(40);
    assert_eq!(push(&server, &c(0), &c(1)), 202);
    let applied = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(&python)
        .arg(example("consumer.py"))
        .args(["--until-idle", "--", "sh", "-c"])
        .arg(format!("cat >> {}", applied.path().display()))
        .env("AUTODEPLOY_URL", format!("http://127.0.0.1:{}", server.port))
        .env("AUTODEPLOY_ORG", "acme")
        .env("AUTODEPLOY_TOKEN", token["token"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The deploy command got the deployment on stdin...
    let given: Value = serde_json::from_str(&std::fs::read_to_string(applied.path()).unwrap()).unwrap();
    assert_eq!(given["git_commit_id"], c(1).as_str());
    // ...and the product knows how it went.
    let listed = deployments(&server);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "DELIVERED");
    assert_eq!(listed[0]["result"]["status"], "SUCCEEDED");
    assert_eq!(listed[0]["attempts"], 1);
}

#[test]
fn the_receiver_verifies_what_the_dispatcher_signs() {
    let Some(python) = python() else {
        eprintln!("AUTODEPLOY_TEST_VENV is not set: run through ./scripts/test");
        return;
    };
    let server = Server::start(ADMIN, &["--targets-allow-private"]);
    let receiver_port = free_port();
    let (status, target) = admin_call(
        &server,
        "PUT",
        "/organization/acme/targets/engine",
        Some(serde_json::json!({"type": "WEBHOOK", "url": format!("http://127.0.0.1:{receiver_port}/deploy")})),
    );
    assert_eq!(status, 201, "{target}");
    let secret = target["secret"]
        .as_str()
        .expect("a generated secret, shown once")
        .to_owned();
    let mut receiver = Command::new(&python)
        .arg(example("receiver.py"))
        .env("WEBHOOK_SECRET", &secret)
        .env("PORT", receiver_port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    set_up(
        &server,
        serde_json::json!({"deploy_target": {"target_id": "engine", "external_id": null}}),
    );
    let c = |n: u8| format!("{n}").repeat(40);
    assert_eq!(push(&server, &c(0), &c(1)), 202);
    // Delivered once the receiver (started meanwhile) answers; the dispatcher retries until.
    server.wait_for_deployments(ADMIN, |listed| {
        listed.first().is_some_and(|d| d["status"] == "DELIVERED")
    });
    let _ = receiver.kill();
    let _ = receiver.wait();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut receiver.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(printed.contains(&format!("deploy api {}", c(1))), "{printed}");
}
