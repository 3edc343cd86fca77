//! No secret in any output (docs/proofs.md): the real binary at `RUST_LOG=trace` goes through
//! settings, signed pushes, image deploys, a Docker Hub registry webhook (whose URL carries the
//! secret) and bad requests (wrong tokens, wrong secrets, a too-short secret, malformed
//! bodies); then its stderr (logs) and stdout (queued messages) hold none of the admin token,
//! the organization tokens, the webhook secrets, nor the wrong ones the bad requests tried.

use crate::harness::{Launch, http};

const ADMIN: &str = "logs-admin-token-5f0c1d2e3a4b";
const GITHUB_SECRET: &str = "logs-github-secret-7a8b9c0d";
const GITLAB_SECRET: &str = "logs-gitlab-secret-1e2f3a4b";
const AZURE_SECRET: &str = "logs-azure-secret-5c6d7e8f9a";
const DOCKERHUB_SECRET: &str = "logsdockerhubsecret0b1c2d3e";
/// Wrong credentials the bad requests try: not logged either.
const WRONG: &[&str] = &[
    "logs-wrong-token-aaaaaaaaaaaa",
    "logs-wrong-github-secret-bbbb",
    "logs-wrong-gitlab-secret-cccc",
    "logswrongdockerhubsecretdddd",
    "logs-short",
    "logs-wrong-azure-eeeeeeeeeeee",
];

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/webhooks/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
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
        .args(["--print-deployments"])
        .start();
    let port = server.port;

    let admin = format!("Token {ADMIN}");
    let json = ("Content-Type", "application/json");
    let expect = |(status, body): (u16, String), want: u16, what: &str| {
        assert_eq!(status, want, "{what}: {body}");
        for secret in [ADMIN, GITHUB_SECRET, GITLAB_SECRET, AZURE_SECRET, DOCKERHUB_SECRET]
            .iter()
            .chain(WRONG)
        {
            assert!(!body.contains(secret), "{what}: the answer echoes a secret: {body}");
        }
        body
    };

    // Settings: services, secrets, tokens.
    let services = [
        (
            "web",
            r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
               "git_repository": {"provider": "GITHUB", "url": "https://github.com/binkkatal/sample_app.git", "branch": "master"}}"#,
        ),
        (
            "diaspora",
            r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
               "git_repository": {"provider": "GITLAB", "url": "http://example.com/mike/diaspora.git", "branch": "master"}}"#,
        ),
        (
            "azure",
            r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
               "git_repository": {"provider": "AZURE_DEVOPS", "url": "https://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/_git/Fabrikam-Fiber-Git", "branch": "master"}}"#,
        ),
        (
            "api",
            r#"{"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
               "image": {"registry": "docker.io", "image_name": "acme/api", "tag": "v2.4.0"}}"#,
        ),
    ];
    for (id, body) in services {
        let path = format!("/organization/acme/services/{id}");
        expect(
            http(port, "PUT", &path, &[("Authorization", &admin), json], body.as_bytes()),
            201,
            id,
        );
    }
    for (provider, secret) in [
        ("github", GITHUB_SECRET),
        ("gitlab", GITLAB_SECRET),
        ("azure-devops", AZURE_SECRET),
        ("dockerhub", DOCKERHUB_SECRET),
    ] {
        let path = format!("/organization/acme/webhook-secrets/{provider}");
        let body = format!(r#"{{"secret": "{secret}"}}"#);
        expect(
            http(port, "PUT", &path, &[("Authorization", &admin), json], body.as_bytes()),
            204,
            provider,
        );
        expect(
            http(port, "GET", &path, &[("Authorization", &admin)], b""),
            200,
            provider,
        );
    }
    let mut tokens = Vec::new();
    for scopes in [r#"["manage"]"#, r#"["deploy"]"#] {
        let body = format!(r#"{{"name": "ci", "scopes": {scopes}}}"#);
        let (status, reply) = http(
            port,
            "POST",
            "/organization/acme/tokens",
            &[("Authorization", &admin), json],
            body.as_bytes(),
        );
        assert_eq!(status, 201, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        tokens.push(reply["token"].as_str().unwrap().to_owned());
    }
    let (manage, deploy) = (format!("Bearer {}", tokens[0]), format!("Token {}", tokens[1]));
    expect(
        http(
            port,
            "GET",
            "/organization/acme/services",
            &[("Authorization", &manage)],
            b"",
        ),
        200,
        "list",
    );
    expect(
        http(
            port,
            "PATCH",
            "/organization/acme/services/web",
            &[("Authorization", &manage), json],
            br#"{"name": "Web"}"#,
        ),
        200,
        "patch",
    );
    expect(
        http(
            port,
            "GET",
            "/organization/acme/tokens",
            &[("Authorization", &admin)],
            b"",
        ),
        200,
        "tokens",
    );

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
    expect(
        http(
            port,
            "GET",
            "/organization/acme/services",
            &[("Authorization", &wrong_token)],
            b"",
        ),
        401,
        "wrong token",
    );
    expect(
        http(
            port,
            "GET",
            "/organization/globex/services",
            &[("Authorization", &manage)],
            b"",
        ),
        403,
        "another organization",
    );
    expect(
        http(
            port,
            "GET",
            "/organization/acme/tokens",
            &[("Authorization", &manage)],
            b"",
        ),
        403,
        "tokens need the admin",
    );
    let short = format!(r#"{{"secret": "{}"}}"#, WRONG[4]);
    expect(
        http(
            port,
            "PUT",
            "/organization/acme/webhook-secrets/github",
            &[("Authorization", &admin), json],
            short.as_bytes(),
        ),
        400,
        "short secret",
    );
    let malformed = format!(r#"{{"secret": "{GITHUB_SECRET}", "extra": 1"#);
    expect(
        http(
            port,
            "PUT",
            "/organization/acme/webhook-secrets/github",
            &[("Authorization", &admin), json],
            malformed.as_bytes(),
        ),
        400,
        "malformed secret body",
    );
    let unknown = format!(r#"{{"secret": "{GITHUB_SECRET}", "value": "{GITHUB_SECRET}"}}"#);
    expect(
        http(
            port,
            "PUT",
            "/organization/acme/webhook-secrets/github",
            &[("Authorization", &admin), json],
            unknown.as_bytes(),
        ),
        400,
        "unknown field beside the secret",
    );
    let credentials = r#"{"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITHUB", "url": "https://user:logs-wrong-token-aaaaaaaaaaaa@github.com/a/b.git", "branch": "main"}}"#;
    expect(
        http(
            port,
            "PUT",
            "/organization/acme/services/creds",
            &[("Authorization", &admin), json],
            credentials.as_bytes(),
        ),
        400,
        "credentials in a URL",
    );
    expect(
        send(hook, as_refs(&github_headers(&signature, "d-3")), b"{not json"),
        401,
        "garbage",
    );
    expect(
        http(
            port,
            "GET",
            "/organization/acme/deployments",
            &[("Authorization", &admin)],
            b"",
        ),
        200,
        "deployments",
    );

    // Stop, then read everything the process wrote.
    assert!(server.terminate().success());
    let (stdout, stderr) = (server.stdout(), server.stderr());
    assert!(stdout.lines().count() >= 4, "queued messages: {stdout}");
    assert!(stderr.lines().count() >= 5, "RUST_LOG=trace logged little: {stderr}");
    let mut secrets: Vec<String> = [ADMIN, GITHUB_SECRET, GITLAB_SECRET, AZURE_SECRET, DOCKERHUB_SECRET]
        .iter()
        .chain(WRONG)
        .map(|s| (*s).to_owned())
        .collect();
    secrets.extend(tokens.iter().cloned());
    secrets.push(base64(&format!("azure:{AZURE_SECRET}")));
    for secret in &secrets {
        assert!(!stdout.contains(secret.as_str()), "stdout holds {secret}");
        for line in stderr.lines() {
            assert!(!line.contains(secret.as_str()), "the log holds {secret}: {line}");
        }
    }
    eprintln!(
        "{} log lines and {} queued messages, none holding any of {} secrets",
        stderr.lines().count(),
        stdout.lines().count(),
        secrets.len()
    );
}
