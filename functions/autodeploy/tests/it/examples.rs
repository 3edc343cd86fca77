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

/// The first `sh` code block after `heading` in `markdown`.
fn sh_block<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let section = &markdown[markdown.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let start = section.find("```sh\n").unwrap() + "```sh\n".len();
    let end = start + section[start..].find("```").unwrap();
    &section[start..end]
}

/// The README's walkthrough and API tour, their lines run as written (bash, curl, openssl,
/// awk) against the real server started with the README's admin token: what a newcomer
/// copies first. Then the push again, which the README says is `ALREADY_QUEUED`.
#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(format!("{}/../../README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let run = sh_block(&readme, "## Two commands")
        .lines()
        .find(|l| l.contains("cargo run"))
        .expect("the README runs the server");
    let admin = run
        .strip_prefix("AUTODEPLOY_ADMIN_TOKEN=")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the README's run command sets no admin token: {run}"));
    let server = Server::start(admin, &[]);

    let walkthrough = sh_block(&readme, "## Walkthrough");
    let lines: Vec<&str> = walkthrough.lines().collect();
    let push_at = lines
        .iter()
        .position(|l| l.starts_with("curl ") && l.contains(" -X POST $AD/organization/acme/webhooks/github "))
        .expect("the walkthrough sends a push");
    let push_len = lines[push_at..].iter().position(|l| !l.ends_with('\\')).unwrap() + 1;
    let push_again = lines[push_at..push_at + push_len].join("\n");
    let script = format!(
        "set -eu\n{walkthrough}\necho\necho '--- again'\n{push_again}\necho\necho '--- tour'\n{}",
        sh_block(&readme, "## API tour")
    )
    .replace("http://127.0.0.1:8080", &format!("http://127.0.0.1:{}", server.port));
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("\"error\""), "{stdout}");

    let (first, again) = stdout.split_once("--- again").unwrap();
    assert!(first.contains(r#""queued":[{"service_id":"api""#), "{first}");
    // The statuses the README gives: 202, then 200.
    assert!(first.contains("}\n202\n"), "{first}");
    assert!(again.contains("ALREADY_QUEUED"), "{again}");
    assert!(again.contains("}\n200\n"), "{again}");
    let listed = server.deployments(admin);
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The tour ends by deleting the service, which cancels its deployment still waiting.
    assert_eq!(
        (
            &listed[0]["service_id"],
            &listed[0]["status"],
            &listed[0]["git_commit_id"],
            &listed[0]["last_error"]
        ),
        (
            &Value::from("api"),
            &Value::from("FAILED"),
            &Value::from("9049f1265b7d61be4a8904a9a27120d2064dab3b"),
            &Value::from("cancelled: its service was deleted before it was delivered")
        )
    );
    let (status, deliveries) = server.call(admin, "GET", "/organization/acme/deliveries", None);
    assert_eq!(status, 200);
    let outcomes: Vec<&Value> = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        [&Value::from("NOTHING_TO_DEPLOY"), &Value::from("QUEUED")],
        "{deliveries}"
    );
}
