//! The standalone server's dispatcher end to end: the real binary delivers the deployments of
//! services with a deploy target to HTTPS receivers on 127.0.0.1 (certificates of the test CA,
//! trusted through `SSL_CERT_FILE`), and the deployments list says how each one went.

use std::time::{Duration, SystemTime};

use autodeploy_core::target::signature::{DEFAULT_TOLERANCE_SECS, verify};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::harness::{Launch, Server};
use crate::receiver::{Answer, Captured, Gate, Receiver, ca_file};

const ADMIN: &str = "dispatcher-admin-token-0123456789";
const GITHUB_SECRET: &str = "dispatcher-github-secret-0123";

/// The server, trusting the test CA, private targets allowed (the receivers are on 127.0.0.1).
fn launch() -> Launch {
    Launch::new(ADMIN)
        .args(["--targets-allow-private"])
        .env("SSL_CERT_FILE", Some(&ca_file()))
}

fn commit(n: u8) -> String {
    format!("{n}").repeat(40)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn put_target(server: &Server, id: &str, body: Value) -> Value {
    let (status, answer) = server.call(ADMIN, "PUT", &format!("/organization/acme/targets/{id}"), Some(body));
    assert!(status == 201 || status == 200, "{status} {answer}");
    answer
}

fn put_service(server: &Server, id: &str, body: Value) {
    let (status, answer) = server.call(ADMIN, "PUT", &format!("/organization/acme/services/{id}"), Some(body));
    assert!(status == 201 || status == 200, "{status} {answer}");
}

/// Service `id`: an APPLICATION following main of `github.com/acme/shop`, delivered to
/// `target`; and the GitHub secret pushes are signed with.
fn app(server: &Server, id: &str, target: &str, external_id: Option<&str>) {
    put_service(
        server,
        id,
        json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"},
            "deploy_target": {"target_id": target, "external_id": external_id}}),
    );
    server.set_webhook_secret(ADMIN, "github", GITHUB_SECRET);
}

/// A receiver that holds its first request until the gate opens, and accepts the others.
fn held_first() -> (Receiver, Gate) {
    let gate = Gate::default();
    let held = gate.clone();
    let receiver = Receiver::start(move |n| match n {
        0 => Answer::StatusAfter(200, held.clone()),
        _ => Answer::status(200),
    });
    (receiver, gate)
}

/// Target `engine`, a WEBHOOK to `receiver`, and service `api` delivered to it.
fn webhook_engine(server: &Server, receiver: &Receiver) {
    put_target(server, "engine", json!({"type": "WEBHOOK", "url": receiver.url("/")}));
    app(server, "api", "engine", None);
}

/// A push of `after`: the id of the one deployment it queued.
fn push(server: &Server, before: &str, after: &str) -> String {
    let (status, answer) = server.github_push(GITHUB_SECRET, before, after);
    assert_eq!(status, 202, "{answer}");
    let [queued] = answer["queued"].as_array().unwrap().as_slice() else {
        panic!("one deployment expected: {answer}")
    };
    queued["deployment_id"].as_str().unwrap().to_owned()
}

fn find<'a>(listed: &'a [Value], deployment_id: &str) -> Option<&'a Value> {
    listed.iter().find(|d| d["deployment_id"] == deployment_id)
}

/// Whether deployment `id` of `listed` has `status`.
fn has_status(listed: &[Value], id: &str, status: &str) -> bool {
    find(listed, id).is_some_and(|d| d["status"] == status)
}

/// The deployment once it has `status` (within 60 s).
fn wait_status(server: &Server, id: &str, status: &str) -> Value {
    let listed = server.wait_for_deployments(ADMIN, |listed| has_status(listed, id, status));
    find(&listed, id).unwrap().clone()
}

fn unix_of(rfc3339: &Value) -> i64 {
    OffsetDateTime::parse(rfc3339.as_str().unwrap(), &Rfc3339)
        .unwrap()
        .unix_timestamp()
}

/// The request's Standard Webhooks signature, as the product's own verifier checks it.
fn verified(secret: &str, got: &Captured) -> bool {
    verify(
        secret,
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
        &got.body,
        unix_now(),
        DEFAULT_TOLERANCE_SECS,
    )
    .is_ok()
}

/// The reference library's verdict on `got` (Python `standardwebhooks` of the test
/// virtualenv, through `tests/verify_webhook.py`): the `deployment_id` of the payload it
/// verified, and whether a body changed by one byte is refused. `None` without the virtualenv (outside the suite's runner).
fn reference_verdict(secret: &str, got: &Captured) -> Option<(String, bool)> {
    let venv = std::env::var("AUTODEPLOY_TEST_VENV").ok()?;
    let dir = tempfile::tempdir().unwrap();
    let (body, headers) = (dir.path().join("body"), dir.path().join("headers.json"));
    std::fs::write(&body, &got.body).unwrap();
    let header_map: serde_json::Map<String, Value> = got
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    std::fs::write(&headers, serde_json::to_vec(&header_map).unwrap()).unwrap();
    let output = std::process::Command::new(format!("{venv}/bin/python"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/verify_webhook.py"))
        .arg(secret)
        .arg(&body)
        .arg(&headers)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    Some((lines[0].to_owned(), lines[1] == "changed body refused"))
}

/// Whether `sent` is the deployment `listed` as the queue carries it: every field of it as
/// listed (the list adds the lifecycle's fields).
fn is_sent_as_listed(sent: &Value, listed: &Value) -> bool {
    let sent = sent.as_object().unwrap();
    sent.contains_key("schema") && sent.iter().all(|(k, v)| &listed[k] == v)
}

#[test]
fn a_webhook_target_gets_each_deployment_signed_over_https() {
    let receiver = Receiver::start(|_| Answer::status(204));
    let server = launch().start();
    let target = json!({"type": "WEBHOOK", "url": receiver.url("/deploy?env=prod")});
    let created = put_target(&server, "engine", target.clone());
    // Generated, shown once: whsec_ and the base64 of 32 random bytes.
    let secret = created["secret"].as_str().expect("the generated secret").to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 44, "{secret}");
    assert_eq!(created["secret_set"], true);
    // Never again: not in a GET, the list, nor a PUT that keeps it.
    let (_, shown) = server.call(ADMIN, "GET", "/organization/acme/targets/engine", None);
    let (_, list) = server.call(ADMIN, "GET", "/organization/acme/targets", None);
    let kept = put_target(&server, "engine", target);
    for answer in [&shown, &list["items"][0], &kept] {
        assert_eq!(answer["secret_set"], true, "{answer}");
        assert_eq!(answer["id"], "engine", "{answer}");
        assert!(answer.get("secret").is_none(), "{answer}");
        assert!(!answer.to_string().contains(&secret[6..]), "{answer}");
    }

    app(&server, "api", "engine", None);
    let id = push(&server, &commit(0), &commit(1));
    let delivered = wait_status(&server, &id, "DELIVERED");
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["last_error"], Value::Null);
    assert_eq!(delivered["next_attempt_at"], Value::Null);

    let [got] = receiver.requests().try_into().unwrap();
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/deploy?env=prod"));
    assert_eq!(got.header("content-type"), "application/json");
    assert!(got.header("user-agent").starts_with("autodeploy/"), "{got:?}");
    assert_eq!(got.header("webhook-id"), id);
    let timestamp: u64 = got.header("webhook-timestamp").parse().unwrap();
    assert!(timestamp.abs_diff(unix_now()) < DEFAULT_TOLERANCE_SECS);
    // The body is the queue message itself.
    assert!(is_sent_as_listed(&got.json(), &delivered), "{:?}", got.json());
    assert_eq!(got.json()["git_commit_id"], commit(1));
    // Verified by the product's verifier, and not with another secret...
    assert!(verified(&secret, &got));
    assert!(!verified("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &got));
    // ...and by the reference library.
    match reference_verdict(&secret, &got) {
        Some(verdict) => assert_eq!(verdict, (id, true)),
        None => eprintln!("AUTODEPLOY_TEST_VENV is not set: the reference check is run by ./scripts/test"),
    }
}

#[test]
fn qovery_and_github_actions_get_their_own_calls() {
    let receiver = Receiver::start(|_| Answer::status(202));
    let server = launch().start();
    let qovery = put_target(
        &server,
        "qovery",
        json!({"type": "QOVERY", "token": "qov_t0ken_dispatch", "api_url": receiver.url("/")}),
    );
    let actions = put_target(
        &server,
        "actions",
        json!({"type": "GITHUB_ACTIONS", "token": "github_pat_11DISPATCH", "repository": "acme/deploy",
            "workflow": "deploy.yml", "ref": "main", "api_url": receiver.url("/api/v3")}),
    );
    for answer in [&qovery, &actions] {
        assert_eq!(answer["token_set"], true, "{answer}");
        assert!(answer.get("token").is_none(), "{answer}");
    }
    assert_eq!(qovery["api_url"], receiver.url(""));
    let image = |kind: &str, target: &str, external_id: Option<&str>| {
        json!({"environment_id": "production", "kind": kind, "auto_deploy": true,
            "image": {"image_name": "acme/api", "tag": "1.3.0"},
            "deploy_target": {"target_id": target, "external_id": external_id}})
    };
    app(&server, "api", "qovery", Some("0b1c2d3e-0a0b-4c0d-8e0f-a1a2a3a4a5a6"));
    app(&server, "web", "actions", Some("web-prod"));
    put_service(
        &server,
        "worker",
        image("CONTAINER", "qovery", Some("0b1c2d3e-0c0d-4e0f-9a0b-c1c2c3c4c5c6")),
    );
    put_service(&server, "migrate", image("JOB", "actions", None));

    let (status, pushed) = server.github_push(GITHUB_SECRET, &commit(0), &commit(1));
    assert_eq!(status, 202, "{pushed}");
    for kind in ["container", "job"] {
        let (status, answer) = server.call(
            ADMIN,
            "POST",
            &format!("/organization/acme/{kind}/deploy"),
            Some(json!({"image_name": "acme/api", "tag": "1.4.0"})),
        );
        assert_eq!(status, 202, "{answer}");
    }
    let listed = server.wait_for_deployments(ADMIN, |listed| {
        listed.len() == 4 && listed.iter().all(|d| d["status"] == "DELIVERED")
    });
    let id_of = |service: &str| {
        listed.iter().find(|d| d["service_id"] == service).unwrap()["deployment_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let got = receiver.requests();
    assert_eq!(got.len(), 4, "{got:?}");
    let at = |path: &str| {
        got.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request to {path}: {got:?}"))
    };
    for (path, body) in [
        (
            "/application/0b1c2d3e-0a0b-4c0d-8e0f-a1a2a3a4a5a6/deploy",
            json!({"git_commit_id": commit(1)}),
        ),
        (
            "/container/0b1c2d3e-0c0d-4e0f-9a0b-c1c2c3c4c5c6/deploy",
            json!({"image_tag": "1.4.0"}),
        ),
    ] {
        let request = at(path);
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("authorization"), "Token qov_t0ken_dispatch");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("autodeploy/"));
        assert_eq!(request.json(), body);
    }
    let dispatches: Vec<&Captured> = got
        .iter()
        .filter(|r| r.path == "/api/v3/repos/acme/deploy/actions/workflows/deploy.yml/dispatches")
        .collect();
    assert_eq!(dispatches.len(), 2, "{got:?}");
    for request in &dispatches {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("authorization"), "Bearer github_pat_11DISPATCH");
        assert_eq!(request.header("accept"), "application/vnd.github+json");
        assert_eq!(request.header("x-github-api-version"), "2022-11-28");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("autodeploy/"));
    }
    let mut bodies: Vec<Value> = dispatches.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["inputs"]["service_id"].to_string());
    assert_eq!(
        bodies,
        vec![
            json!({"ref": "main", "inputs": {"deployment_id": id_of("migrate"), "service_id": "migrate",
                "environment_id": "production", "image_tag": "1.4.0"}}),
            json!({"ref": "main", "inputs": {"deployment_id": id_of("web"), "service_id": "web",
                "environment_id": "production", "git_commit_id": commit(1), "external_id": "web-prod"}}),
        ]
    );
}

#[test]
fn answers_to_retry_are_retried_with_one_webhook_id_after_their_retry_after() {
    // 503 (wait 2 s), 429 (wait 3 s), then accepted.
    let receiver = Receiver::start(|n| match n {
        0 => Answer::Reply(
            503,
            vec![("Retry-After", "2".into()), ("Content-Type", "application/json".into())],
            r#"{"message": "deploys are paused"}"#.into(),
        ),
        1 => Answer::Reply(429, vec![("Retry-After", "3".into())], String::new()),
        _ => Answer::status(200),
    });
    let server = launch().start();
    let secret = put_target(&server, "engine", json!({"type": "WEBHOOK", "url": receiver.url("/")}))["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app(&server, "api", "engine", None);
    let id = push(&server, &commit(0), &commit(1));

    // After the 503, it waits for its retry, saying why.
    receiver.wait_for(1);
    let waiting = server.wait_for_deployments(ADMIN, |listed| {
        find(listed, &id).is_some_and(|d| d["status"] == "QUEUED" && d["attempts"] == 1)
    });
    let waiting = find(&waiting, &id).unwrap();
    assert_eq!(
        waiting["last_error"],
        "the target answered 503 Service Unavailable: deploys are paused"
    );
    let first: i64 = receiver.requests()[0].header("webhook-timestamp").parse().unwrap();
    assert!(unix_of(&waiting["next_attempt_at"]) >= first + 2, "{waiting}");

    let delivered = wait_status(&server, &id, "DELIVERED");
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(delivered["last_error"], Value::Null);
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    // One webhook-id on every attempt, each attempt signed anew.
    for request in &got {
        assert_eq!(request.header("webhook-id"), id);
        assert!(verified(&secret, request));
        assert_eq!(request.body, got[0].body);
    }
    // Never sooner than the target asked.
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(2),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_secs(3),
        "{:?}",
        got[2].at - got[1].at
    );
}

#[test]
fn a_410_fails_at_once_and_a_redirect_is_not_followed() {
    let gone = Receiver::start(|_| {
        Answer::Reply(
            410,
            vec![("Content-Type", "application/json".into())],
            r#"{"error": "this hook was removed"}"#.into(),
        )
    });
    let moved = Receiver::start(|_| Answer::Reply(302, vec![("Location", "/elsewhere".into())], String::new()));
    let server = launch().start();
    put_target(&server, "gone", json!({"type": "WEBHOOK", "url": gone.url("/hook")}));
    put_target(&server, "moved", json!({"type": "WEBHOOK", "url": moved.url("/hook")}));
    app(&server, "api", "gone", None);
    app(&server, "web", "moved", None);
    let (status, answer) = server.github_push(GITHUB_SECRET, &commit(0), &commit(1));
    assert_eq!(status, 202, "{answer}");
    let listed = server.wait_for_deployments(ADMIN, |listed| {
        listed.len() == 2 && listed.iter().all(|d| d["status"] == "FAILED")
    });
    let of = |service: &str| listed.iter().find(|d| d["service_id"] == service).unwrap();
    assert_eq!(of("api")["attempts"], 1);
    assert_eq!(
        of("api")["last_error"],
        "the target answered 410 Gone: this hook was removed"
    );
    assert_eq!(of("web")["attempts"], 1);
    assert_eq!(
        of("web")["last_error"],
        "the target answered 302 Found: redirects are not followed"
    );
    for receiver in [&gone, &moved] {
        let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, vec!["/hook"]);
    }
    // A deployment that failed for good is logged as a warning.
    let attempts = server.logged("deployment attempt", 2);
    assert!(
        attempts
            .iter()
            .all(|line| line.contains("WARN") && line.contains("outcome=\"failed\"")),
        "{attempts:#?}"
    );
}

/// A deployment that failed for good against a broken target is made again once the target
/// is fixed, and the dispatcher delivers the new one.
#[test]
fn a_failed_deployment_made_again_is_delivered_once_the_target_is_fixed() {
    let hook = Receiver::start(|n| match n {
        0 => Answer::Reply(410, Vec::new(), String::new()),
        _ => Answer::Reply(202, Vec::new(), String::new()),
    });
    let server = launch().start();
    put_target(&server, "hook", json!({"type": "WEBHOOK", "url": hook.url("/hook")}));
    app(&server, "api", "hook", None);
    let (status, answer) = server.github_push(GITHUB_SECRET, &commit(0), &commit(1));
    assert_eq!(status, 202, "{answer}");
    let failed = server.wait_for_deployments(ADMIN, |listed| listed.len() == 1 && listed[0]["status"] == "FAILED");
    let failed_id = failed[0]["deployment_id"].as_str().unwrap().to_owned();

    let (status, again) = server.call(
        ADMIN,
        "POST",
        &format!("/organization/acme/deployments/{failed_id}/redeploy"),
        None,
    );
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["git_commit_id"], commit(1));
    let listed = server.wait_for_deployments(ADMIN, |listed| {
        listed.len() == 2 && listed.iter().any(|d| d["status"] == "DELIVERED")
    });
    let delivered = listed.iter().find(|d| d["status"] == "DELIVERED").unwrap();
    assert_eq!(delivered["deployment_id"], again["deployment_id"]);
    assert_eq!(delivered["attempts"], 1);
    let sent: Vec<Value> = hook
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["deployment_id"], again["deployment_id"]);
    assert_eq!(sent[1]["git_commit_id"], sent[0]["git_commit_id"]);
}

#[test]
fn a_target_that_never_answers_times_out_and_is_retried() {
    let (receiver, _never) = held_first();
    let server = launch().start();
    webhook_engine(&server, &receiver);
    let id = push(&server, &commit(0), &commit(1));
    let delivered = wait_status(&server, &id, "DELIVERED");
    assert_eq!(delivered["attempts"], 2);
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.header("webhook-id") == id));
    let attempts = server.logged("deployment attempt", 2);
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert!(
        attempts[0].contains("INFO")
            && attempts[0].contains("outcome=\"retry\"")
            && attempts[0].contains("next_attempt_unix=")
            && attempts[0].contains("the target did not answer within 15 s"),
        "{attempts:#?}"
    );
    assert!(attempts[1].contains("outcome=\"delivered\""), "{attempts:#?}");
}

/// An attempt whose service is deleted, or moved to pull consumers, while it is under way is
/// logged as what was recorded: cancelled (a warning), or released to the consumers; not as
/// the retry the target's 503 asked for.
#[test]
fn an_attempt_is_logged_as_recorded_when_its_service_changed_meanwhile() {
    let gate = Gate::default();
    let held = gate.clone();
    let receiver = Receiver::start(move |_| Answer::StatusAfter(503, held.clone()));
    let server = launch().start();
    put_target(&server, "engine", json!({"type": "WEBHOOK", "url": receiver.url("/")}));
    app(&server, "api", "engine", None);
    app(&server, "web", "engine", None);
    let (status, answer) = server.github_push(GITHUB_SECRET, &commit(0), &commit(1));
    assert_eq!(status, 202, "{answer}");
    receiver.wait_for(2);
    let (status, answer) = server.call(ADMIN, "DELETE", "/organization/acme/services/api", None);
    assert_eq!(status, 204, "{answer}");
    put_service(
        &server,
        "web",
        json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"}}),
    );
    gate.open();
    let attempts = server.logged("deployment attempt", 2);
    let of = |service: &str| {
        attempts
            .iter()
            .find(|line| line.contains(&format!("service_id={service} ")))
            .unwrap_or_else(|| panic!("{service}: {attempts:#?}"))
    };
    let api = of("api");
    assert!(
        api.contains("WARN") && api.contains("outcome=\"failed\"") && api.contains("its service was deleted"),
        "{api}"
    );
    let web = of("web");
    assert!(
        web.contains("INFO") && web.contains("outcome=\"released\"") && !web.contains("next_attempt_unix=1"),
        "{web}"
    );
}

#[test]
fn a_delivery_cut_by_sigkill_is_made_after_the_restart() {
    let (receiver, _never) = held_first();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let mut server = launch().database(&database).start();
    webhook_engine(&server, &receiver);
    let id = push(&server, &commit(0), &commit(1));
    receiver.wait_for(1);
    assert!(has_status(&server.deployments(ADMIN), &id, "IN_PROGRESS"));
    server.kill();

    // Restarted without the dispatcher first: the cut delivery waits `QUEUED` again, not
    // `IN_PROGRESS` under a lease nobody holds.
    let mut server = launch().args(["--no-dispatch"]).database(&database).start();
    let waiting = find(&server.deployments(ADMIN), &id).unwrap().clone();
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("QUEUED"), &json!(1)),
        "{waiting}"
    );
    server.terminate();

    let server = launch().database(&database).start();
    let delivered = wait_status(&server, &id, "DELIVERED");
    assert_eq!(delivered["attempts"], 2);
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == id && r.body == got[0].body)
    );
}

#[test]
fn pushes_during_a_delivery_wait_and_only_the_newest_is_delivered() {
    let (receiver, gate) = held_first();
    let server = launch().start();
    webhook_engine(&server, &receiver);
    let first = push(&server, &commit(0), &commit(1));
    receiver.wait_for(1);
    let middle = push(&server, &commit(1), &commit(2));
    let newest = push(&server, &commit(2), &commit(3));
    let listed = server.deployments(ADMIN);
    assert!(has_status(&listed, &first, "IN_PROGRESS"), "{listed:#?}");
    assert!(has_status(&listed, &middle, "QUEUED"), "{listed:#?}");
    assert!(has_status(&listed, &newest, "QUEUED"), "{listed:#?}");

    gate.open();
    let listed = server.wait_for_deployments(ADMIN, |listed| {
        has_status(listed, &first, "DELIVERED") && has_status(listed, &newest, "DELIVERED")
    });
    assert!(has_status(&listed, &middle, "SUPERSEDED"), "{listed:#?}");
    assert_eq!(find(&listed, &middle).unwrap()["attempts"], 0);
    let sent: Vec<(String, Value)> = receiver
        .requests()
        .iter()
        .map(|r| (r.header("webhook-id").to_owned(), r.json()["git_commit_id"].clone()))
        .collect();
    assert_eq!(sent, vec![(first, json!(commit(1))), (newest, json!(commit(3)))]);
}

#[test]
fn private_targets_are_refused_when_written_and_when_sent() {
    let receiver = Receiver::start(|_| Answer::status(200));
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let strict = || {
        Launch::new(ADMIN)
            .env("SSL_CERT_FILE", Some(&ca_file()))
            .database(&database)
    };

    // Written: a name that resolves to 127.0.0.1, the address itself, plain http.
    let mut server = strict().start();
    for (body, field) in [
        (json!({"type": "WEBHOOK", "url": receiver.url("/")}), "url"),
        (
            json!({"type": "WEBHOOK", "url": format!("https://127.0.0.1:{}/", receiver.port)}),
            "url",
        ),
        (json!({"type": "WEBHOOK", "url": "http://deploy.example.com/"}), "url"),
        (
            json!({"type": "QOVERY", "token": "qov_x", "api_url": receiver.url("")}),
            "api_url",
        ),
    ] {
        let (status, answer) = server.call(ADMIN, "PUT", "/organization/acme/targets/engine", Some(body));
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "VALIDATION_FAILED", "{answer}");
        assert_eq!(answer["error"]["details"][0]["field"], field, "{answer}");
    }
    let (_, list) = server.call(ADMIN, "GET", "/organization/acme/targets", None);
    assert_eq!(list["items"], json!([]));
    server.terminate();

    // Written while the operator allowed it, then sent once they no longer do: refused at
    // send time, nothing sent.
    let mut server = launch().database(&database).start();
    webhook_engine(&server, &receiver);
    server.terminate();
    let server = strict().start();
    let id = push(&server, &commit(0), &commit(1));
    let failed = wait_status(&server, &id, "FAILED");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(
        failed["last_error"],
        "the target's host name resolves to an address that is not public, and private targets are not allowed"
    );
    assert!(receiver.requests().is_empty());
}

#[test]
fn a_deployment_waiting_when_its_service_gets_a_target_is_delivered_at_once() {
    let receiver = Receiver::start(|_| Answer::status(200));
    let server = launch().start();
    put_target(&server, "engine", json!({"type": "WEBHOOK", "url": receiver.url("/")}));
    put_service(
        &server,
        "api",
        json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"}}),
    );
    server.set_webhook_secret(ADMIN, "github", GITHUB_SECRET);
    let id = push(&server, &commit(0), &commit(1));
    // Once the dispatcher has gone back to sleep with nothing to deliver, the service gets a
    // target: the change wakes it, well before its idle wake-up a minute later.
    std::thread::sleep(Duration::from_secs(1));
    app(&server, "api", "engine", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !has_status(&server.deployments(ADMIN), &id, "DELIVERED") {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered 20 s after its service got a target"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn without_the_dispatcher_deployments_wait_queued() {
    let receiver = Receiver::start(|_| Answer::status(200));
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let mut server = launch().args(["--no-dispatch"]).database(&database).start();
    webhook_engine(&server, &receiver);
    let id = push(&server, &commit(0), &commit(1));
    // A pull consumer is not offered it either: it is the target's.
    let (status, leased) = server.call(ADMIN, "POST", "/organization/acme/deployments/lease", Some(json!({})));
    assert_eq!(status, 200, "{leased}");
    assert_eq!(leased["items"], json!([]));
    std::thread::sleep(Duration::from_secs(2));
    let waiting = find(&server.deployments(ADMIN), &id).unwrap().clone();
    assert_eq!(
        (&waiting["status"], &waiting["attempts"]),
        (&json!("QUEUED"), &json!(0))
    );
    assert!(receiver.requests().is_empty());
    server.terminate();

    // The dispatcher, once run, delivers it.
    let server = launch().database(&database).start();
    wait_status(&server, &id, "DELIVERED");
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn a_retry_waits_out_its_time_across_a_restart() {
    let receiver = Receiver::start(|n| match n {
        0 => Answer::Reply(503, vec![("Retry-After", "8".into())], String::new()),
        _ => Answer::status(200),
    });
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("autodeploy.db");
    let mut server = launch().database(&database).start();
    webhook_engine(&server, &receiver);
    let id = push(&server, &commit(0), &commit(1));
    let waiting = server.wait_for_deployments(ADMIN, |listed| {
        find(listed, &id).is_some_and(|d| d["status"] == "QUEUED" && d["attempts"] == 1)
    });
    let next_attempt_at = find(&waiting, &id).unwrap()["next_attempt_at"].clone();
    assert!(next_attempt_at.is_string(), "{waiting:#?}");
    assert!(server.terminate().success());

    // The schedule is in the database: the restarted server keeps it, and then delivers.
    let server = launch().database(&database).start();
    let listed = server.deployments(ADMIN);
    let still = find(&listed, &id).unwrap();
    assert_eq!(still["next_attempt_at"], next_attempt_at, "{still}");
    let delivered = wait_status(&server, &id, "DELIVERED");
    assert_eq!(delivered["attempts"], 2);
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(8),
        "{:?}",
        got[1].at - got[0].at
    );
}
