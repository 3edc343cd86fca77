//! No secret in any output (docs/proofs.md): the real binary at `RUST_LOG=trace` goes through
//! settings, deploy targets of every type (their secrets and tokens), signed pushes, image
//! deploys, a Docker Hub registry webhook (whose URL carries the secret), the dispatcher's
//! deliveries (one target echoing its token in a refusal), the deliveries history and bad
//! requests (wrong tokens, wrong secrets, a too-short secret, malformed bodies); then its
//! stderr (logs, with one line per delivery and one audit line per settings change) and stdout
//! (queued messages) hold none of the admin token, the organization tokens, the webhook
//! secrets, the targets' secrets and tokens, the signatures sent or received, nor the wrong
//! ones the bad requests tried.

use serde_json::{Value, json};

use crate::harness::{Launch, http};
use crate::receiver::{Answer, Receiver, ca_file};

const ADMIN: &str = "logs-admin-token-5f0c1d2e3a4b";
const GITHUB_SECRET: &str = "logs-github-secret-7a8b9c0d";
const GITLAB_SECRET: &str = "logs-gitlab-secret-1e2f3a4b";
const AZURE_SECRET: &str = "logs-azure-secret-5c6d7e8f9a";
const DOCKERHUB_SECRET: &str = "logsdockerhubsecret0b1c2d3e";
const QOVERY_TOKEN: &str = "logs-qovery-token-4f5a6b7c8d";
const ACTIONS_TOKEN: &str = "github_pat_logs9e0f1a2b3c4d";
/// The credentials the run sets.
const SECRETS: &[&str] = &[
    ADMIN,
    GITHUB_SECRET,
    GITLAB_SECRET,
    AZURE_SECRET,
    DOCKERHUB_SECRET,
    QOVERY_TOKEN,
    ACTIONS_TOKEN,
];
/// Wrong credentials the bad requests try: not logged either.
const WRONG: &[&str] = &[
    "logs-wrong-token-aaaaaaaaaaaa",
    "logs-wrong-github-secret-bbbb",
    "logs-wrong-gitlab-secret-cccc",
    "logswrongdockerhubsecretdddd",
    "logs-short",
    "logs-wrong-azure-eeeeeeeeeeee",
    "logs-wrong-qovery-token-ffff",
];

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/webhooks/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const GITHUB_REPO: &str = "https://github.com/binkkatal/sample_app.git";
const AZURE_REPO: &str = "https://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/_git/Fabrikam-Fiber-Git";

/// An auto-deployed application following `url` at `master`.
fn application(provider: &str, url: &str) -> Value {
    json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
           "git_repository": {"provider": provider, "url": url, "branch": "master"}})
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn base64(input: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_full_run_at_trace_level_logs_no_secret() {
    let mut server = Launch::new(ADMIN)
        .env("RUST_LOG", Some("trace"))
        .env("SSL_CERT_FILE", Some(&ca_file()))
        .args(["--print-deployments", "--targets-allow-private"])
        .start();
    let port = server.port;

    let admin = format!("Token {ADMIN}");
    let json = ("Content-Type", "application/json");
    // A read, and a write with a JSON body, with `auth` as the Authorization header.
    let get = |auth: &str, path: &str| http(port, "GET", path, &[("Authorization", auth)], b"");
    let write = |auth: &str, method: &str, path: &str, body: &str| {
        http(port, method, path, &[("Authorization", auth), json], body.as_bytes())
    };
    let expect = |(status, body): (u16, String), want: u16, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        for secret in SECRETS.iter().chain(WRONG) {
            assert!(!body.contains(secret), "{what}: the answer echoes a secret: {body}");
        }
        body
    };

    // Settings: services, secrets, tokens.
    let services = [
        ("web", application("GITHUB", GITHUB_REPO)),
        (
            "diaspora",
            application("GITLAB", "http://example.com/mike/diaspora.git"),
        ),
        ("azure", application("AZURE_DEVOPS", AZURE_REPO)),
        (
            "api",
            json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
                   "image": {"registry": "docker.io", "image_name": "acme/api", "tag": "v2.4.0"}}),
        ),
    ];
    for (id, body) in services {
        let path = format!("/organization/acme/services/{id}");
        expect(write(&admin, "PUT", &path, &body.to_string()), 201, id);
    }
    for (provider, secret) in [
        ("github", GITHUB_SECRET),
        ("gitlab", GITLAB_SECRET),
        ("azure-devops", AZURE_SECRET),
        ("dockerhub", DOCKERHUB_SECRET),
    ] {
        let path = format!("/organization/acme/webhook-secrets/{provider}");
        let body = json!({ "secret": secret }).to_string();
        expect(write(&admin, "PUT", &path, &body), 204, provider);
        expect(get(&admin, &path), 200, provider);
    }
    let (mut tokens, mut token_ids) = (Vec::new(), Vec::new());
    for scopes in [r#"["manage"]"#, r#"["deploy"]"#] {
        let body = format!(r#"{{"name": "ci", "scopes": {scopes}}}"#);
        let (status, reply) = write(&admin, "POST", "/organization/acme/tokens", &body);
        assert_eq!(status, 201, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        tokens.push(reply["token"].as_str().unwrap().to_owned());
        token_ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    let (manage, deploy) = (format!("Bearer {}", tokens[0]), format!("Token {}", tokens[1]));

    // Deploy targets, written with the manage token: their secrets and tokens are write-only.
    // One engine accepts; Qovery refuses, echoing the token it was sent.
    let engine = Receiver::start(|_| Answer::status(204));
    let qovery = Receiver::start(|_| {
        Answer::Reply(
            422,
            vec![("Content-Type", "application/json".into())],
            format!(r#"{{"message": "refused Token {QOVERY_TOKEN}"}}"#),
        )
    });
    let target_secret = format!("whsec_{}", base64("logs-target-secret-0123456789abc"));
    let targets = [
        (
            "hook",
            format!(r#"{{"type": "WEBHOOK", "url": "{}"}}"#, engine.url("/deploy")),
        ),
        (
            "signed",
            format!(
                r#"{{"type": "WEBHOOK", "url": "{}", "secret": "{target_secret}"}}"#,
                engine.url("/signed")
            ),
        ),
        (
            "qovery",
            format!(
                r#"{{"type": "QOVERY", "token": "{QOVERY_TOKEN}", "api_url": "{}"}}"#,
                qovery.url("")
            ),
        ),
        (
            "actions",
            format!(
                r#"{{"type": "GITHUB_ACTIONS", "token": "{ACTIONS_TOKEN}", "repository": "acme/deploy",
                   "workflow": "deploy.yml", "ref": "main", "api_url": "{}"}}"#,
                engine.url("")
            ),
        ),
    ];
    let mut generated = String::new();
    for (id, body) in &targets {
        let path = format!("/organization/acme/targets/{id}");
        let (status, reply) = write(&manage, "PUT", &path, body);
        assert_eq!(status, 201, "{id}: {reply}");
        if *id == "hook" {
            // Generated, and shown this once.
            let reply: Value = serde_json::from_str(&reply).unwrap();
            generated = reply["secret"].as_str().unwrap().to_owned();
        } else {
            assert!(!reply.contains(&target_secret), "{reply}");
            expect((status, reply), 201, id);
        }
        let shown = expect(get(&manage, &path), 200, id);
        assert!(
            !shown.contains(&generated) && !shown.contains(&target_secret),
            "{shown}"
        );
    }
    let listed = expect(get(&manage, "/organization/acme/targets"), 200, "targets");
    assert!(
        !listed.contains(&generated) && !listed.contains(&target_secret),
        "{listed}"
    );
    let refused = format!(r#"{{"type": "QOVERY", "token": "{}", "api_url": "ftp://x"}}"#, WRONG[6]);
    let put_refused = write(&manage, "PUT", "/organization/acme/targets/bad", &refused);
    expect(put_refused, 400, "a refused target");
    // Services delivered to them: the GitHub push below queues one for each.
    for (id, target, external_id) in [
        ("hooked", "hook", Value::Null),
        ("signed", "signed", Value::Null),
        ("qov", "qovery", json!("0b1c2d3e-0a0b-4c0d-8e0f-a1a2a3a4a5a6")),
        ("act", "actions", Value::Null),
    ] {
        let mut body = application("GITHUB", GITHUB_REPO);
        body["deploy_target"] = json!({"target_id": target, "external_id": external_id});
        let path = format!("/organization/acme/services/{id}");
        expect(write(&manage, "PUT", &path, &body.to_string()), 201, id);
    }
    expect(get(&manage, "/organization/acme/services"), 200, "list");
    let patch = write(
        &manage,
        "PATCH",
        "/organization/acme/services/web",
        r#"{"name": "Web"}"#,
    );
    expect(patch, 200, "patch");
    expect(get(&admin, "/organization/acme/tokens"), 200, "tokens");

    // Pushes, signed or carrying the secret.
    let github = fixture("github/gp-push.json");
    let signature = format!("sha256={}", hmac_hex(GITHUB_SECRET, &github));
    let github_headers = |sig: &str, delivery: &'static str| {
        vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", sig.to_owned()),
        ]
    };
    let as_refs = |h: &[(&'static str, String)]| h.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let send = |path: &str, headers: Vec<(&str, String)>, body: &[u8]| {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(port, "POST", path, &refs, body)
    };
    let hook = "/organization/acme/webhooks/github";
    expect(
        send(hook, as_refs(&github_headers(&signature, "d-1")), &github),
        202,
        "github push",
    );
    let wrong_sig = format!("sha256={}", hmac_hex(WRONG[1], &github));
    expect(
        send(hook, as_refs(&github_headers(&wrong_sig, "d-2")), &github),
        401,
        "bad signature",
    );
    let gitlab = fixture("gitlab/gp-push-event.json");
    let gitlab_headers = |token: &str, delivery: &str| {
        vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-Gitlab-Event", "Push Hook".to_owned()),
            ("X-Gitlab-Event-UUID", delivery.to_owned()),
            ("X-Gitlab-Token", token.to_owned()),
        ]
    };
    expect(
        send(
            "/organization/acme/webhooks/gitlab",
            gitlab_headers(GITLAB_SECRET, "g-1"),
            &gitlab,
        ),
        202,
        "gitlab push",
    );
    expect(
        send(
            "/organization/acme/webhooks/gitlab",
            gitlab_headers(WRONG[2], "g-2"),
            &gitlab,
        ),
        401,
        "gitlab wrong token",
    );
    let azure = fixture("azure-devops/gp-git.push.json");
    let basic = |password: &str| {
        vec![
            ("Content-Type", "application/json".to_owned()),
            (
                "Authorization",
                format!("Basic {}", base64(&format!("azure:{password}"))),
            ),
        ]
    };
    let (status, body) = send("/organization/acme/webhooks/azure-devops", basic(AZURE_SECRET), &azure);
    assert!(status == 202 || status == 200, "azure push: {status} {body}");
    expect(
        send("/organization/acme/webhooks/azure-devops", basic(WRONG[5]), &azure),
        401,
        "azure wrong password",
    );

    // Image tags: the API with a deploy token, and Docker Hub's webhook with the secret in
    // its URL (and a wrong one).
    expect(
        send(
            "/organization/acme/container/deploy",
            vec![
                ("Authorization", deploy.clone()),
                ("Content-Type", "application/json".to_owned()),
            ],
            br#"{"image_name": "acme/api", "tag": "v2.4.1-rc"}"#,
        ),
        202,
        "image deploy",
    );
    let dockerhub = fixture("registry/dockerhub-push.json");
    let json_only = || vec![("Content-Type", "application/json".to_owned())];
    expect(
        send(
            &format!("/organization/acme/registry-webhooks/dockerhub/{DOCKERHUB_SECRET}"),
            json_only(),
            &dockerhub,
        ),
        202,
        "docker hub",
    );
    expect(
        send(
            &format!("/organization/acme/registry-webhooks/dockerhub/{}", WRONG[3]),
            json_only(),
            &dockerhub,
        ),
        401,
        "docker hub wrong secret",
    );

    // Bad requests: unknown and foreign tokens, a short secret, malformed bodies.
    let wrong_token = format!("Token {}", WRONG[0]);
    expect(get(&wrong_token, "/organization/acme/services"), 401, "wrong token");
    expect(
        get(&manage, "/organization/globex/services"),
        403,
        "another organization",
    );
    expect(get(&manage, "/organization/acme/tokens"), 403, "tokens need the admin");
    let github_secret = "/organization/acme/webhook-secrets/github";
    for (body, what) in [
        (format!(r#"{{"secret": "{}"}}"#, WRONG[4]), "short secret"),
        (
            format!(r#"{{"secret": "{GITHUB_SECRET}", "extra": 1"#),
            "malformed secret body",
        ),
        (
            format!(r#"{{"secret": "{GITHUB_SECRET}", "value": "{GITHUB_SECRET}"}}"#),
            "unknown field beside the secret",
        ),
    ] {
        expect(write(&admin, "PUT", github_secret, &body), 400, what);
    }
    let mut credentials = application(
        "GITHUB",
        "https://user:logs-wrong-token-aaaaaaaaaaaa@github.com/a/b.git",
    );
    credentials["git_repository"]["branch"] = json!("main");
    let put_credentials = write(
        &admin,
        "PUT",
        "/organization/acme/services/creds",
        &credentials.to_string(),
    );
    expect(put_credentials, 400, "credentials in a URL");
    expect(
        send(hook, as_refs(&github_headers(&signature, "d-3")), b"{not json"),
        401,
        "garbage",
    );
    expect(get(&admin, "/organization/acme/deployments"), 200, "deployments");

    // The dispatcher's work: three delivered, Qovery's refusal recorded without its token.
    let deployments = server.wait_for_deployments(ADMIN, |listed| {
        let status = |service: &str| {
            listed
                .iter()
                .find(|d| d["service_id"] == service)
                .map(|d| d["status"].as_str().unwrap_or(""))
        };
        ["hooked", "signed", "act"]
            .iter()
            .all(|s| status(s) == Some("DELIVERED"))
            && status("qov") == Some("FAILED")
    });
    let refused = deployments.iter().find(|d| d["service_id"] == "qov").unwrap();
    assert_eq!(
        refused["last_error"],
        "the target answered 422 Unprocessable Entity: refused [redacted]"
    );
    let sent = engine.requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(qovery.requests().len(), 1);

    // The deliveries history, listed and one by one, filtered.
    let history = expect(
        get(&manage, "/organization/acme/deliveries?limit=100"),
        200,
        "deliveries",
    );
    let history: Value = serde_json::from_str(&history).unwrap();
    let history = history["items"].as_array().unwrap();
    assert_eq!(history.len(), 10, "{history:#?}");
    for delivery in history {
        let path = format!("/organization/acme/deliveries/{}", delivery["id"].as_str().unwrap());
        expect(get(&manage, &path), 200, "delivery");
    }
    let rejected = get(
        &manage,
        "/organization/acme/deliveries?outcome=REJECTED&source=dockerhub",
    );
    expect(rejected, 200, "rejected deliveries");

    // Stop, then read everything the process wrote.
    assert!(server.terminate().success());
    let (stdout, stderr) = (server.stdout(), server.stderr());
    assert!(stdout.lines().count() >= 4, "queued messages: {stdout}");
    assert!(stderr.lines().count() >= 5, "RUST_LOG=trace logged little: {stderr}");
    let mut secrets: Vec<String> = SECRETS.iter().chain(WRONG).map(|s| (*s).to_owned()).collect();
    secrets.extend(tokens.iter().cloned());
    secrets.push(base64(&format!("azure:{AZURE_SECRET}")));
    // The targets' secrets (without their prefix), the signatures received and sent.
    secrets.extend([&generated, &target_secret].map(|s| s.trim_start_matches("whsec_").to_owned()));
    secrets.extend([&signature, &wrong_sig].map(|s| s.trim_start_matches("sha256=").to_owned()));
    for request in &sent {
        let signature = request.header("webhook-signature");
        if !signature.is_empty() {
            secrets.push(signature.trim_start_matches("v1,").to_owned());
        }
    }
    assert_eq!(secrets.len(), 23, "{secrets:?}");
    for secret in &secrets {
        assert!(!stdout.contains(secret.as_str()), "stdout holds {secret}");
        for line in stderr.lines() {
            assert!(!line.contains(secret.as_str()), "the log holds {secret}: {line}");
        }
    }

    // One line per delivery, refused ones included; one audit line per settings change, naming
    // the token by id and name.
    let delivery_lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" delivery org=")).collect();
    assert_eq!(delivery_lines.len(), 10, "{stderr}");
    // Each says what its delivery has, and leaves out what it has not (no empty fields).
    for line in &delivery_lines {
        assert!(
            !line.contains("=\"\"") && !line.contains("= "),
            "an empty field: {line}"
        );
    }
    let has = |source: &str, fields: &[&str], without: &[&str]| {
        delivery_lines.iter().any(|line| {
            line.contains(&format!("source=\"{source}\""))
                && line.contains("outcome=\"QUEUED\"")
                && fields.iter().all(|field| line.contains(&format!(" {field}=")))
                && !without.iter().any(|field| line.contains(&format!(" {field}=")))
        })
    };
    assert!(
        has(
            "github",
            &["repository", "branch", "commit_sha", "deployment_ids"],
            &["image", "tag"]
        ),
        "{delivery_lines:#?}"
    );
    assert!(
        has(
            "container-api",
            &["image", "tag", "deployment_ids"],
            &["repository", "branch", "commit_sha"]
        ),
        "{delivery_lines:#?}"
    );
    let audit: Vec<&str> = stderr.lines().filter(|l| l.contains("settings changed")).collect();
    // 8 services, a PATCH, 4 secrets, 2 tokens, 4 targets.
    assert_eq!(audit.len(), 19, "{audit:#?}");
    let by_manage = format!("token_id=\"{}\" token_name=\"ci\"", token_ids[0]);
    for (route, resource, version) in [
        ("PUT /organization/{org}/targets/{target_id}", "deploy target qovery", 1),
        ("PATCH /organization/{org}/services/{service_id}", "service web", 2),
    ] {
        let wants = [
            by_manage.clone(),
            format!("route={route}"),
            format!("resource=\"{resource}\""),
            format!("version={version}"),
        ];
        assert!(
            audit.iter().any(|l| wants.iter().all(|want| l.contains(want.as_str()))),
            "no audit line by the manage token for {route}: {audit:#?}"
        );
    }
    eprintln!(
        "{} log lines and {} queued messages, none holding any of {} secrets",
        stderr.lines().count(),
        stdout.lines().count(),
        secrets.len()
    );
}
