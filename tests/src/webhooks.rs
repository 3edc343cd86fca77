//! Webhook deliveries as the providers send them: the real payloads of `tests/fixtures/`, and
//! their signatures.

use serde_json::Value;

/// Hex HMAC-SHA256 of `body` with `secret`, as the providers sign.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `sha256=<hex HMAC-SHA256 of body>`, as GitHub signs a delivery.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture_bytes(path: &str) -> Vec<u8> {
    let full = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// A real fixture from `tests/fixtures/webhooks/`.
pub fn fixture(path: &str) -> Vec<u8> {
    fixture_bytes(&format!("webhooks/{path}"))
}

pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

/// (provider, fixture) — a real push of every provider (GitHub's twice), each a branch push
/// except Bitbucket Server's, which deletes its branch.
pub const PUSHES: &[(&str, &str)] = &[
    ("github", "github/gp-push.json"),
    ("github", "github/ok-push-with-new-branch.payload.json"),
    ("gitlab", "gitlab/gp-push-event.json"),
    ("bitbucket", "bitbucket-cloud/gp-repo-push.json"),
    ("bitbucket-server", "bitbucket-server/gp-repo-refs-changed.json"),
    ("gitea", "gitea/gp-push-event.json"),
    ("gogs", "gogs/gp-push-event.json"),
    ("azure-devops", "azure-devops/gp-git.push.json"),
];

/// Every git provider, as its webhook path names it: those of [`PUSHES`].
pub fn git_providers() -> Vec<&'static str> {
    let mut providers: Vec<&str> = PUSHES.iter().map(|(provider, _)| *provider).collect();
    providers.dedup();
    providers
}

pub const WEBHOOK_SECRET: &str = "webhook-secret-for-tests-0123";

/// The repository of the GitHub push fixtures (`github/gp-push.json`: its `master`), as a
/// service follows it.
pub const GITHUB_REPO: &str = "https://github.com/binkkatal/sample_app.git";

/// The headers a provider sends with a push: event, delivery id and signature over `body`.
pub fn provider_headers(provider: &str, body: &[u8], delivery: &str) -> Vec<(String, String)> {
    let sig = hmac_hex(WEBHOOK_SECRET, body);
    let h = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    match provider {
        "github" => h(&[
            ("x-github-event", "push".into()),
            ("x-github-delivery", delivery.into()),
            ("x-hub-signature-256", format!("sha256={sig}")),
        ]),
        "gitlab" => h(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-event-uuid", delivery.into()),
            ("x-gitlab-token", WEBHOOK_SECRET.into()),
        ]),
        "bitbucket" => h(&[
            ("x-event-key", "repo:push".into()),
            ("x-request-uuid", delivery.into()),
            ("x-hub-signature", format!("sha256={sig}")),
        ]),
        "bitbucket-server" => h(&[
            ("x-event-key", "repo:refs_changed".into()),
            ("x-request-id", delivery.into()),
            ("x-hub-signature", format!("sha256={sig}")),
        ]),
        "gitea" => h(&[
            ("x-gitea-event", "push".into()),
            ("x-gitea-delivery", delivery.into()),
            ("x-gitea-signature", sig),
        ]),
        "gogs" => h(&[
            ("x-gogs-event", "push".into()),
            ("x-gogs-delivery", delivery.into()),
            ("x-gogs-signature", sig),
        ]),
        "azure-devops" => {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("azure:{WEBHOOK_SECRET}"));
            h(&[("authorization", format!("Basic {basic}"))])
        }
        other => panic!("no headers for {other}"),
    }
}
