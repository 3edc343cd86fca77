//! Git push webhooks end to end through the real router: every provider's real payload,
//! verification, matching, restrictions, once-only. Parsing and verification run on the
//! standalone stack (SQLite, whose queue is a table); the cases whose outcome goes through
//! the store run on both stores (SQLite, and DynamoDB and SQS on moto).

use std::sync::Arc;

use autodeploy_api::web::webhooks::BLOCKING_POOL_FROM;
use autodeploy_core::repo_url::normalize_repository_url;
use autodeploy_tests::{
    Api, GITHUB_REPO, WEBHOOK_SECRET, deployment_ids, fixture, fixture_json, git_providers, hmac_hex, outcome,
    provider_headers,
};
use autodeploy_tests::{assert_logged_as_sent, on_both_stores, sent_deployment_ids};
use http::StatusCode;
use serde_json::{Value, json};

fn s(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// A GitHub push of the real fixture, edited by `edit`.
fn github_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    edit(&mut body);
    serde_json::to_vec(&body).unwrap()
}

async fn github_api() -> Api {
    with_github_secret(Api::new()).await
}

async fn with_github_secret(api: Api) -> Api {
    api.set_secret("acme", "github").await;
    api
}

on_both_stores! {
    every_provider_fixture_queues_a_deployment, a_push_is_recorded_as_the_message_it_queues, once_only_and_rollbacks,
    twenty_concurrent_identical_deliveries_queue_once_per_service, restrictions_skip_markers_and_disabled_services,
    dry_run_answers_without_recording, multi_branch_deliveries_are_one_push_per_branch,
    deployments_can_be_listed_per_service,
}

/// The repository URL a fixture's service follows (any of the payload's URLs would do).
fn repo_of(body: &Value, pointer: &str) -> String {
    body.pointer(pointer).and_then(Value::as_str).unwrap().to_owned()
}

/// Each case in an organization of its own, on one API.
async fn every_provider_fixture_queues_a_deployment(api: Api) {
    // (provider, fixture, repository URL pointer, branch, commit, edit to make it a branch push)
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, &str, &str, &str, &str, Edit)> = vec![
        (
            "github",
            "github/gp-push.json",
            "/repository/clone_url",
            "master",
            "",
            |_| {},
        ),
        (
            "github",
            "github/ok-push-with-new-branch.payload.json",
            "/repository/ssh_url",
            "master",
            "",
            |_| {},
        ),
        (
            "gitlab",
            "gitlab/gp-push-event.json",
            "/project/git_ssh_url",
            "master",
            "",
            |_| {},
        ),
        (
            "bitbucket",
            "bitbucket-cloud/gp-repo-push.json",
            "/repository/full_name",
            "name-of-branch",
            "",
            |_| {},
        ),
        (
            "bitbucket-server",
            "bitbucket-server/gp-repo-refs-changed.json",
            "/repository/links/clone/0/href",
            "feature/wip",
            "",
            |b| {
                // The fixture deletes its branch; make it an update.
                b["changes"][0]["type"] = json!("UPDATE");
                b["changes"][0]["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
            },
        ),
        (
            "gitea",
            "gitea/gp-push-event.json",
            "/repository/clone_url",
            "master",
            "",
            |_| {},
        ),
        (
            "gogs",
            "gogs/gp-push-event.json",
            "/repository/ssh_url",
            "develop",
            "",
            |_| {},
        ),
        (
            "azure-devops",
            "azure-devops/gp-git.push.json",
            "/resource/repository/remoteUrl",
            "main",
            "",
            |_| {},
        ),
    ];
    for (i, (provider, path, url_pointer, branch, _, edit)) in cases.into_iter().enumerate() {
        let org = format!("org-{i}");
        let org = org.as_str();
        api.set_secret(org, provider).await;
        let mut body = fixture_json(path);
        edit(&mut body);
        let mut url = repo_of(&body, url_pointer);
        if provider == "bitbucket" {
            url = format!("https://bitbucket.org/{url}.git");
        }
        assert!(normalize_repository_url(&url).is_ok(), "{url}");
        api.app(
            org,
            "svc",
            &provider.to_uppercase().replace('-', "_"),
            &url,
            branch,
            json!({}),
        )
        .await;
        api.app(org, "other-branch", "GITHUB", &url, "no-such-branch", json!({}))
            .await;
        let bytes = serde_json::to_vec(&body).unwrap();
        let r = api.push(org, provider, &bytes, "delivery-1").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{provider}: {}", r.body);
        assert_eq!(
            outcome(&r).0,
            vec![("svc".to_owned(), "QUEUED".to_owned())],
            "{provider}"
        );
        assert_eq!(
            r.body["skipped"],
            json!([]),
            "services on other branches are not listed"
        );
        assert_eq!(r.body["branch"], branch);
        assert_eq!(
            r.body["repository"].as_str(),
            Some(normalize_repository_url(&url).unwrap().as_str())
        );
        assert!(r.body["ignored"].is_null());

        // The queue holds SPEC's message, one for this organization.
        let messages: Vec<Value> = api
            .queued_messages()
            .await
            .into_iter()
            .filter(|m| m["organization_id"] == org)
            .collect();
        assert_eq!(messages.len(), 1, "{provider}: {messages:?}");
        let msg = &messages[0];
        assert_eq!(msg["schema"], "autodeploy.deployment-request.v1");
        assert_eq!(msg["deployment_id"], r.body["queued"][0]["deployment_id"]);
        assert_eq!(msg["environment_id"], "production");
        assert_eq!(msg["service_id"], "svc");
        assert_eq!(msg["service_kind"], "APPLICATION");
        assert_eq!(msg["git_commit_id"], r.body["commit_sha"]);
        assert_eq!(msg["image_tag"], Value::Null);
        assert_eq!(msg["trigger"]["type"], "GIT_PUSH");
        assert_eq!(msg["trigger"]["branch"], branch);
        assert_eq!(msg["trigger"]["commit_sha"], r.body["commit_sha"]);
        assert_eq!(msg["trigger"]["provider"], provider.to_uppercase().replace('-', "_"));
        let id = msg["deployment_id"].as_str().unwrap();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(msg["requested_at"].as_str().unwrap().ends_with('Z'));

        // And the deployment log shows it, QUEUED.
        let log = api.deployments(org).await;
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["status"], "QUEUED");
        assert_eq!(log[0]["deployment_id"], msg["deployment_id"]);
    }
}

/// The queue holds SPEC's message for each service following the pushed branch, and the log
/// the very request that was sent, plus its status.
async fn a_push_is_recorded_as_the_message_it_queues(api: Api) {
    let api = with_github_secret(api).await;
    for id in ["svc-00", "svc-01"] {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    let push = fixture("github/gp-push.json");
    let payload = fixture_json("github/gp-push.json");

    let r = api.push("acme", "github", &push, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let queued = s(&[("svc-00", "QUEUED"), ("svc-01", "QUEUED")]);
    assert_eq!(outcome(&r).0, queued);
    assert_eq!(api.statuses("acme").await, queued);
    let log = api.deployments("acme").await;

    let messages = api.queued_messages().await;
    assert_eq!(sent_deployment_ids(&messages), deployment_ids(&r));
    for body in &messages {
        assert_eq!(body["schema"], "autodeploy.deployment-request.v1");
        assert_eq!(body["organization_id"], "acme");
        assert_eq!(body["environment_id"], "production");
        assert_eq!(body["service_kind"], "APPLICATION");
        assert_eq!(body["git_commit_id"], payload["after"]);
        assert_eq!(body["image_tag"], Value::Null);
        assert_eq!(
            body["trigger"],
            json!({"type": "GIT_PUSH", "provider": "GITHUB",
                   "repository": "github.com/binkkatal/sample_app", "branch": "master",
                   "before": payload["before"], "commit_sha": payload["after"],
                   "delivery_id": "delivery-1", "pusher": body["trigger"]["pusher"]})
        );
    }
    assert_logged_as_sent(&log, &messages);
}

#[tokio::test]
async fn verification_fails_closed() {
    let api = Api::new();
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let body = fixture("github/gp-push.json");
    // No secret configured: refused, whatever the signature.
    let r = api.push("acme", "github", &body, "d1").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    api.set_secret("acme", "github").await;

    let path = "/organization/acme/webhooks/github";
    let good = hmac_hex(WEBHOOK_SECRET, &body);
    let bad = hmac_hex("another-secret-entirely", &body);
    let sha1_only = s(&[
        ("x-github-event", "push"),
        ("x-hub-signature", "sha1=0123456789abcdef0123456789abcdef01234567"),
    ]);
    let cases: Vec<Vec<(String, String)>> = vec![
        s(&[("x-github-event", "push")]),
        s(&[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &format!("sha256={bad}")),
        ]),
        s(&[("x-github-event", "push"), ("x-hub-signature-256", &good)]),
        s(&[("x-github-event", "push"), ("x-hub-signature-256", "sha256=zz")]),
        sha1_only,
    ];
    for headers in cases {
        let r = api.deliver(path, &headers, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(!String::from_utf8_lossy(&r.raw).contains(WEBHOOK_SECRET));
        assert!(!String::from_utf8_lossy(&r.raw).contains(&good));
    }
    // A signature over other bytes does not verify these.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let headers = s(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &format!("sha256={good}")),
    ]);
    assert_eq!(
        api.deliver(path, &headers, tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Another organization's secret does not open this one's webhook.
    api.set_secret("other", "github").await;
    let r = api.push("other", "github", &body, "d2").await;
    assert_eq!(r.status, StatusCode::OK, "org other has no services: {}", r.body);
    assert_eq!(api.deployments("acme").await.len(), 0);
    // Each other provider's verification with a wrong secret.
    for provider in git_providers().into_iter().filter(|p| *p != "github") {
        api.set_secret("acme", provider).await;
        let mut headers = provider_headers(provider, &body, "d3");
        for (name, value) in headers.iter_mut() {
            if matches!(
                name.as_str(),
                "x-gitlab-token" | "x-hub-signature" | "x-gitea-signature" | "x-gogs-signature" | "authorization"
            ) {
                *value = value
                    .replace(&hmac_hex(WEBHOOK_SECRET, &body), &bad)
                    .replace(WEBHOOK_SECRET, "wrong-secret-0000000");
                if name == "authorization" {
                    *value = "Basic YXp1cmU6d3Jvbmc=".to_owned();
                }
            }
        }
        let r = api
            .deliver(
                &format!("/organization/acme/webhooks/{provider}"),
                &headers,
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{provider}: {}", r.body);
    }
}

#[tokio::test]
async fn ignored_events_answer_200_and_queue_nothing() {
    let api = github_api().await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let path = "/organization/acme/webhooks/github";
    let deliver = |event: &'static str, body: Vec<u8>| {
        let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
        let headers = s(&[("x-github-event", event), ("x-hub-signature-256", &sig)]);
        let api = &api;
        async move { api.deliver(path, &headers, body).await }
    };
    // SPEC: an answer that queues and skips nothing carries `message`, a sentence saying why.
    let says = |r: &autodeploy_tests::Reply, words: &str| {
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(words) && message.ends_with('.'), "{}", r.body);
    };
    let r = deliver("ping", fixture("github/gp-ping.json")).await;
    assert_eq!((r.status, r.body["ignored"].as_str()), (StatusCode::OK, Some("PING")));
    says(&r, "ping");
    let tag = github_push(|b| b["ref"] = json!("refs/tags/v1.0.0"));
    let r = deliver("push", tag).await;
    assert_eq!(r.body["ignored"], "TAG_PUSH");
    says(&r, "only branch pushes deploy");
    // A tag's deletion (GitHub's `delete` event) is not called a push.
    let r = deliver("delete", fixture("github/gp-delete.json")).await;
    assert_eq!(r.body["ignored"], "TAG_PUSH", "{}", r.body);
    says(&r, "A tag was pushed or deleted");
    let deleted = github_push(|b| {
        b["deleted"] = json!(true);
        b["after"] = json!("0000000000000000000000000000000000000000");
    });
    let r = deliver("push", deleted).await;
    assert_eq!(r.body["ignored"], "BRANCH_DELETED");
    says(&r, "branch deletion");
    let r = deliver("issues", b"{}".to_vec()).await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str()),
        (StatusCode::OK, Some("UNSUPPORTED_EVENT"))
    );
    assert_eq!(
        r.body["message"],
        "Not a push event (X-GitHub-Event is not `push`): only pushes deploy; the webhook should send push events."
    );
    // A push of a ref that is no branch is a push all the same: the message says so.
    let notes = github_push(|b| b["ref"] = json!("refs/notes/commits"));
    let r = deliver("push", notes).await;
    assert_eq!(r.body["ignored"], "UNSUPPORTED_EVENT");
    assert_eq!(
        r.body["message"],
        "A push that updates no branch (its ref is neither a branch nor a tag): nothing to deploy."
    );
    // A Bitbucket Cloud push on the Bitbucket Server route is an event that route does not
    // read: the message says where the webhook should point.
    let bitbucket = Api::new();
    bitbucket.set_secret("acme", "bitbucket-server").await;
    let body = fixture("bitbucket-cloud/gp-repo-push.json");
    let headers = provider_headers("bitbucket", &body, "b1");
    let r = bitbucket
        .deliver("/organization/acme/webhooks/bitbucket-server", &headers, body)
        .await;
    assert_eq!(r.body["ignored"], "UNSUPPORTED_EVENT", "{}", r.body);
    assert_eq!(
        r.body["message"],
        "Not a Bitbucket Server push event. This delivery carries Bitbucket \
         Cloud's headers: its webhook URL should end in /organization/acme/webhooks/bitbucket."
    );
    let gitlab = Api::new();
    gitlab.set_secret("acme", "gitlab").await;
    let body = fixture("gitlab/gp-tag-event.json");
    let mut headers = provider_headers("gitlab", &body, "t1");
    headers[0].1 = "Tag Push Hook".to_owned();
    let r = gitlab
        .deliver("/organization/acme/webhooks/gitlab", &headers, body)
        .await;
    assert_eq!(r.body["ignored"], "TAG_PUSH");
    assert_eq!(api.deployments("acme").await.len(), 0);
}

/// A push large enough to be checked and read off the request's thread is answered as a
/// small one: queued where its files match, refused with a signature that does not match,
/// refused when it is not a push.
#[tokio::test]
async fn a_large_push_is_answered_as_a_small_one() {
    let api = github_api().await;
    let path = "/organization/acme/webhooks/github";
    let only = |value: &str| json!({"deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": value}]});
    api.app("acme", "web", "GITHUB", GITHUB_REPO, "master", only("services/web/"))
        .await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", only("services/api/"))
        .await;
    // 600 commits, the last of which alone changes the web service.
    let body = github_push(|b| {
        let first = b["commits"][0].clone();
        let commits: Vec<Value> = (0..600)
            .map(|i| {
                let mut commit = first.clone();
                commit["id"] = json!(format!("{i:040x}"));
                commit["message"] = json!(format!("change {i}\n\nwith a body"));
                let file = if i == 599 {
                    "services/web/late.rs".to_owned()
                } else {
                    format!("docs/{i}.md")
                };
                commit["modified"] = json!([file]);
                commit
            })
            .collect();
        b["commits"] = json!(commits);
    });
    assert!(body.len() > BLOCKING_POOL_FROM, "{}", body.len());
    let r = api.push("acme", "github", &body, "large-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let (queued, skipped) = outcome(&r);
    assert_eq!(queued, [("web".to_owned(), "QUEUED".to_owned())]);
    assert_eq!(skipped, [("api".to_owned(), "PATH_RESTRICTIONS".to_owned())]);

    // `body`, with the signature of `signed`.
    let deliver = |body: Vec<u8>, signed: &[u8], id: &str| {
        let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, signed));
        let headers = s(&[
            ("x-github-event", "push"),
            ("x-github-delivery", id),
            ("x-hub-signature-256", &sig),
        ]);
        let api = &api;
        async move { api.deliver(path, &headers, body).await }
    };
    // Signed as another body: refused, and nothing more is queued.
    let r = deliver(body.clone(), &body[1..], "large-2").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    // Signed, but no push.
    let numbers = serde_json::to_vec(&(0..100_000).collect::<Vec<u32>>()).unwrap();
    assert!(numbers.len() > BLOCKING_POOL_FROM);
    let r = deliver(numbers.clone(), &numbers, "large-3").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "MALFORMED_BODY"));
    assert_eq!(api.deployments("acme").await.len(), 1);
}

#[tokio::test]
async fn malformed_and_oversized_deliveries() {
    let api = github_api().await;
    let path = "/organization/acme/webhooks/github";
    for body in [
        b"not json".to_vec(),
        vec![0xff, 0xfe],
        b"[]".to_vec(),
        br#"{"ref": 5}"#.to_vec(),
        Vec::new(),
    ] {
        let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
        let headers = s(&[("x-github-event", "push"), ("x-hub-signature-256", &sig)]);
        let r = api.deliver(path, &headers, body.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
            "{body:?}"
        );
    }
    // A delivery without its event header is not a push.
    let body = fixture("github/gp-push.json");
    let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
    let r = api.deliver(path, &s(&[("x-hub-signature-256", &sig)]), body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A signature of the right form, checked once the body is read: the body is too large.
    let signed = format!("sha256={}", "0".repeat(64));
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    let headers = s(&[("x-github-event", "push"), ("x-hub-signature-256", &signed)]);
    let r = api.deliver(path, &headers, huge.clone()).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    let r = api
        .deliver(
            path,
            &s(&[
                ("x-github-event", "push"),
                ("x-hub-signature-256", &signed),
                ("content-length", "999999999"),
            ]),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a signature, or with one that is no signature, the delivery is refused before
    // its body is read: 401, whatever the body.
    for headers in [
        s(&[("x-github-event", "push")]),
        s(&[("x-github-event", "push"), ("content-length", "999999999")]),
        s(&[("x-github-event", "push"), ("x-hub-signature-256", "sha256=zz")]),
        s(&[("x-github-event", "push"), ("x-hub-signature", "sha1=00")]),
    ] {
        let r = api.deliver(path, &headers, huge.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{headers:?}: {}",
            r.body
        );
    }

    let r = api
        .deliver("/organization/acme/webhooks/svn", &s(&[]), b"{}".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .deliver("/organization/bad%20org/webhooks/github", &s(&[]), b"{}".to_vec())
        .await;
    assert_eq!(r.error_fields(), vec!["organization_id"]);
}

/// SPEC: refusals of unauthenticated requests never depend on reading their body first. For
/// every provider, a delivery whose credential headers are missing, or carry a wrong token or
/// password, is refused 401 with a body far over the limit, which is never read.
#[tokio::test]
async fn deliveries_without_credentials_are_refused_before_their_body_is_read() {
    let api = Api::new();
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    for provider in git_providers() {
        api.set_secret("acme", provider).await;
        let path = format!("/organization/acme/webhooks/{provider}");
        let mut cases = vec![s(&[])];
        match provider {
            "gitlab" => cases.push(s(&[("x-gitlab-token", "not-the-secret")])),
            "azure-devops" => cases.push(s(&[("authorization", "Basic dXNlcjpub3QtdGhlLXNlY3JldA==")])),
            _ => {}
        }
        for headers in cases {
            let r = api.deliver(&path, &headers, huge.clone()).await;
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
                "{provider} {headers:?}: {}",
                r.body
            );
        }
    }
}

/// A delivery sent to another provider's route is refused, and the refusal says where its
/// webhook should point: whether or not that route's provider has a secret.
#[tokio::test]
async fn a_delivery_on_another_providers_route_says_where_it_belongs() {
    let api = github_api().await;
    let body = fixture("github/gp-push.json");
    let headers = provider_headers("github", &body, "d-1");
    let hint =
        "This delivery carries GitHub's headers: its webhook URL should end in /organization/acme/webhooks/github.";
    let r = api
        .deliver("/organization/acme/webhooks/gitlab", &headers, body.clone())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(
        r.body["error"]["message"],
        format!(
            "Refused: no gitlab secret is configured for organization acme (its webhook secret, set with PUT \
             /organization/acme/webhook-secrets/gitlab). {hint}"
        )
    );
    api.set_secret("acme", "gitlab").await;
    let r = api
        .deliver("/organization/acme/webhooks/gitlab", &headers, body.clone())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The delivery could not be verified: X-Gitlab-Token header missing"),
        "{message}"
    );
    assert!(message.ends_with(hint), "{message}");
    // On its own route, it is delivered; a GitLab delivery on GitLab's route gets no hint.
    let r = api.deliver("/organization/acme/webhooks/github", &headers, body).await;
    assert!(r.status.is_success(), "{}", r.body);
    let gitlab = fixture("gitlab/gp-push-event.json");
    let mut headers = provider_headers("gitlab", &gitlab, "d-2");
    headers.retain(|(name, _)| name != "x-gitlab-token");
    let r = api
        .deliver("/organization/acme/webhooks/gitlab", &headers, gitlab)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(
        !r.body["error"]["message"].as_str().unwrap().contains("carries"),
        "{}",
        r.body
    );
    // Azure DevOps authenticates by password, whatever the body: a Gitea push with the Azure
    // route's credentials passes them and is refused as a body, with the same hint.
    api.set_secret("acme", "azure-devops").await;
    let gitea = fixture("gitea/gp-push-event.json");
    let mut headers = provider_headers("gitea", &gitea, "d-3");
    headers.extend(provider_headers("azure-devops", &gitea, "d-3"));
    let r = api
        .deliver("/organization/acme/webhooks/azure-devops", &headers, gitea)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("The body is not a push payload (for "), "{message}");
    assert!(
        message.ends_with(
            "This delivery carries Gitea's headers: its webhook URL should end in /organization/acme/webhooks/gitea."
        ),
        "{message}"
    );
}

/// Azure DevOps' push payload names a project's default repository as
/// `dev.azure.com/org/DefaultCollection/_git/repo`; a service set up with the clone URLs Azure
/// DevOps shows (https with the organization as user name, ssh) follows it all the same.
#[tokio::test]
async fn azure_devops_pushes_match_the_clone_urls_azure_shows() {
    let api = Api::new();
    api.set_secret("acme", "azure-devops").await;
    for (id, url) in [
        (
            "https",
            "https://fabrikam-fiber-inc@dev.azure.com/fabrikam-fiber-inc/Fabrikam-Fiber-Git/_git/Fabrikam-Fiber-Git",
        ),
        (
            "ssh",
            "git@ssh.dev.azure.com:v3/fabrikam-fiber-inc/Fabrikam-Fiber-Git/Fabrikam-Fiber-Git",
        ),
        (
            "legacy",
            "https://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/Fabrikam-Fiber-Git/_git/Fabrikam-Fiber-Git",
        ),
    ] {
        let r = api.app("acme", id, "AZURE_DEVOPS", url, "main", json!({})).await;
        assert_eq!(
            r.body["git_repository"]["repository_key"],
            "dev.azure.com/fabrikam-fiber-inc/fabrikam-fiber-git/fabrikam-fiber-git"
        );
    }
    let body = fixture("azure-devops/gp-git.push.json");
    let r = api.push("acme", "azure-devops", &body, "delivery-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let queued = ["https", "legacy", "ssh"].map(|id| (id.to_owned(), "QUEUED".to_owned()));
    assert_eq!(outcome(&r).0, queued);
}

#[tokio::test]
async fn github_form_encoded_bodies_are_accepted() {
    let api = github_api().await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let json = fixture("github/gp-push.json");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let body = form.into_bytes();
    let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
    let req = http::Request::post("/organization/acme/webhooks/github")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", sig)
        .body(axum::body::Body::from(body))
        .unwrap();
    let r = api.raw(req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

async fn once_only_and_rollbacks(api: Api) {
    let api = with_github_secret(api).await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let push = fixture("github/gp-push.json");
    let r = api.push("acme", "github", &push, "delivery-a").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["delivery_id"], "delivery-a");

    // The same delivery again: not processed.
    let r = api.push("acme", "github", &push, "delivery-a").await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str()),
        (StatusCode::OK, Some("DUPLICATE_DELIVERY"))
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("processed before")),
        "{}",
        r.body
    );
    // As a dry run, which records nothing, it is known as well.
    let r = api.dry_run_push("acme", "github", &push, "delivery-a").await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str(), r.body["dry_run"].as_bool()),
        (StatusCode::OK, Some("DUPLICATE_DELIVERY"), Some(true)),
        "{}",
        r.body
    );
    assert_eq!(api.deployments("acme").await.len(), 1);
    // The same push from a second hook (another delivery id): already queued.
    let r = api.push("acme", "github", &push, "delivery-b").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(outcome(&r).1, vec![("api".to_owned(), "ALREADY_QUEUED".to_owned())]);

    // A force-push back to the earlier commit is a rollback: it queues.
    let value: Value = serde_json::from_slice(&push).unwrap();
    let (before, after) = (value["before"].clone(), value["after"].clone());
    let rollback = github_push(|b| {
        b["before"] = after.clone();
        b["after"] = before.clone();
        b["forced"] = json!(true);
    });
    let r = api.push("acme", "github", &rollback, "delivery-c").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["commit_sha"], before);
    // And a later return to the commit deployed before queues again.
    let r = api.push("acme", "github", &push, "delivery-d").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let log = api.deployments("acme").await;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d["status"] == "QUEUED"), "{log:?}");
    // In order, in the service's message group.
    let commits: Vec<Value> = api
        .queued_messages()
        .await
        .into_iter()
        .map(|m| m["git_commit_id"].clone())
        .collect();
    assert_eq!(commits, vec![after.clone(), before, after]);
}

async fn twenty_concurrent_identical_deliveries_queue_once_per_service(api: Api) {
    let api = Arc::new(with_github_secret(api).await);
    for id in ["api", "web", "worker"] {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    let push = fixture("github/gp-push.json");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = Arc::clone(&api);
        let push = push.clone();
        // Half are retries of one delivery, half come from hooks configured twice.
        let delivery = if i % 2 == 0 {
            "same".to_owned()
        } else {
            format!("hook-{i}")
        };
        tasks.push(tokio::spawn(async move {
            api.push("acme", "github", &push, &delivery).await
        }));
    }
    let mut queued = Vec::new();
    let (mut already, mut duplicate) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == StatusCode::ACCEPTED || r.status == StatusCode::OK,
            "{}",
            r.body
        );
        if r.body["ignored"] == "DUPLICATE_DELIVERY" {
            duplicate += 1;
            continue;
        }
        let (q, skipped) = outcome(&r);
        assert!(q.iter().all(|(_, status)| status == "QUEUED"), "{q:?}");
        assert!(
            skipped.iter().all(|(_, reason)| reason == "ALREADY_QUEUED"),
            "{skipped:?}"
        );
        assert_eq!(q.len() + skipped.len(), 3, "{}", r.body);
        already += skipped.len();
        queued.extend(q.into_iter().map(|(id, _)| id));
    }
    queued.sort();
    assert_eq!(queued, ["api", "web", "worker"]);
    // Every other answer says why it queued nothing.
    assert_eq!(already + 3 * duplicate, 3 * 20 - 3);
    let log = api.deployments("acme").await;
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|d| d["status"] == "QUEUED"), "{log:?}");
    assert_eq!(api.queued_messages().await.len(), 3);
}

async fn restrictions_skip_markers_and_disabled_services(api: Api) {
    let api = with_github_secret(api).await;
    // gp-push.json changes README.md (modified) in its commits.
    let body: Value = fixture_json("github/gp-push.json");
    let mut files: Vec<String> = Vec::new();
    for c in body["commits"].as_array().unwrap() {
        for k in ["added", "modified", "removed"] {
            files.extend(c[k].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()));
        }
    }
    assert!(!files.is_empty());
    let first = files[0].clone();
    let rule =
        |mode: &str, value: &str| json!({"deployment_restrictions": [{"mode": mode, "type": "PATH", "value": value}]});
    api.app(
        "acme",
        "matches",
        "GITHUB",
        GITHUB_REPO,
        "master",
        rule("MATCH", &first),
    )
    .await;
    api.app(
        "acme",
        "elsewhere",
        "GITHUB",
        GITHUB_REPO,
        "master",
        rule("MATCH", "services/none/"),
    )
    .await;
    api.app(
        "acme",
        "excluded",
        "GITHUB",
        GITHUB_REPO,
        "master",
        rule("EXCLUDE", "**"),
    )
    .await;
    api.app(
        "acme",
        "disabled",
        "GITHUB",
        GITHUB_REPO,
        "master",
        json!({"auto_deploy": false}),
    )
    .await;
    api.app("acme", "globbed", "GITHUB", GITHUB_REPO, "mas*", json!({}))
        .await;
    api.app(
        "acme",
        "other-repo",
        "GITHUB",
        "https://github.com/acme/other",
        "master",
        json!({}),
    )
    .await;
    let job = json!({"environment_id": "production", "kind": "JOB", "auto_deploy": true,
                     "git_repository": {"provider": "GITHUB", "url": "git@github.com:BinkKatal/sample_app.git", "branch": "master"}});
    assert_eq!(api.put_service("acme", "job", job).await.status, StatusCode::CREATED);

    let r = api.push("acme", "github", &fixture("github/gp-push.json"), "d1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["files"], "KNOWN");
    let (queued, skipped) = outcome(&r);
    let ids = |v: &[(String, String)]| v.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&queued), vec!["globbed", "job", "matches"]);
    assert_eq!(
        skipped,
        vec![
            ("disabled".to_owned(), "AUTO_DEPLOY_DISABLED".to_owned()),
            ("elsewhere".to_owned(), "PATH_RESTRICTIONS".to_owned()),
            ("excluded".to_owned(), "PATH_RESTRICTIONS".to_owned()),
        ]
    );

    let marked = github_push(|b| {
        b["after"] = json!("1111111111111111111111111111111111111111");
        b["head_commit"]["message"] = json!("docs only [skip deploy]");
    });
    let r = api.push("acme", "github", &marked, "d2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["queued"].as_array().unwrap().is_empty());
    assert!(
        outcome(&r)
            .1
            .iter()
            .any(|(id, reason)| id == "matches" && reason == "SKIP_MARKER")
    );

    // A new branch with no commits: files UNKNOWN, restrictions not applied.
    let empty = github_push(|b| {
        b["after"] = json!("2222222222222222222222222222222222222222");
        b["before"] = json!("0000000000000000000000000000000000000000");
        b["created"] = json!(true);
        b["commits"] = json!([]);
    });
    let r = api.push("acme", "github", &empty, "d3").await;
    assert_eq!(r.body["files"], "UNKNOWN", "{}", r.body);
    let queued = ids(&outcome(&r).0);
    assert!(queued.contains(&"elsewhere".to_owned()) && queued.contains(&"excluded".to_owned()));
}

async fn dry_run_answers_without_recording(api: Api) {
    let api = with_github_secret(api).await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let push = fixture("github/gp-push.json");
    let r = api.dry_run_push("acme", "github", &push, "dry-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(outcome(&r).0, vec![("api".to_owned(), "DRY_RUN".to_owned())]);
    assert!(api.deployments("acme").await.is_empty());
    // Not remembered either: the real delivery with the same id still runs.
    let r = api.push("acme", "github", &push, "dry-1").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let headers = provider_headers("github", &push, "dry-2");
    let r = api
        .deliver("/organization/acme/webhooks/github?dry_run=1", &headers, push)
        .await;
    assert_eq!(outcome(&r).1, vec![("api".to_owned(), "ALREADY_QUEUED".to_owned())]);
}

async fn multi_branch_deliveries_are_one_push_per_branch(api: Api) {
    api.set_secret("acme", "bitbucket").await;
    let body = fixture("bitbucket-cloud/gp-repo-push.json");
    let mut value: Value = serde_json::from_slice(&body).unwrap();
    let mut second = value["push"]["changes"][0].clone();
    second["new"]["name"] = json!("feature/new");
    second["new"]["target"]["hash"] = json!("709d658dc5b6d6afcd46049c2f332ee3f515a67d");
    value["push"]["changes"].as_array_mut().unwrap().push(second);
    let url = "git@bitbucket.org:team_name/repo_name.git";
    api.app("acme", "main-svc", "BITBUCKET", url, "name-of-branch", json!({}))
        .await;
    api.app("acme", "feature-svc", "BITBUCKET", url, "feature/*", json!({}))
        .await;
    api.app(
        "acme",
        "feature-off",
        "BITBUCKET",
        url,
        "feature/*",
        json!({"auto_deploy": false}),
    )
    .await;
    let bytes = serde_json::to_vec(&value).unwrap();
    let r = api.push("acme", "bitbucket", &bytes, "{bb-1}").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let branches: Vec<(&str, &str)> = r.body["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["service_id"].as_str().unwrap(), q["branch"].as_str().unwrap()))
        .collect();
    assert_eq!(branches.len(), 2);
    assert!(branches.contains(&("main-svc", "name-of-branch")));
    assert!(branches.contains(&("feature-svc", "feature/new")));
    assert_eq!(r.body["files"], "UNKNOWN");
    // Each entry names its branch and commit: the top-level commit is the first push's.
    let feature_commit = "709d658dc5b6d6afcd46049c2f332ee3f515a67d";
    let off = json!({"service_id": "feature-off", "reason": "AUTO_DEPLOY_DISABLED",
        "branch": "feature/new", "commit_sha": feature_commit});
    assert_eq!(r.body["skipped"], json!([off]), "{}", r.body);

    // Sent again (a new delivery id): the same skipped entries, in the same order, as a dry
    // run of it tells.
    let dry = api
        .deliver(
            "/organization/acme/webhooks/bitbucket?dry_run=true",
            &provider_headers("bitbucket", &bytes, "{bb-2}"),
            bytes.clone(),
        )
        .await;
    let again = api.push("acme", "bitbucket", &bytes, "{bb-3}").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let main_commit = r.body["commit_sha"].as_str().unwrap();
    let already = |id: &str, branch: &str, commit: &str| json!({"service_id": id, "reason": "ALREADY_QUEUED", "branch": branch, "commit_sha": commit});
    let expected = json!([
        already("main-svc", "name-of-branch", main_commit),
        off,
        already("feature-svc", "feature/new", feature_commit),
    ]);
    assert_eq!(again.body["skipped"], expected, "{}", again.body);
    assert_eq!(dry.body["skipped"], expected, "{}", dry.body);
}

async fn deployments_can_be_listed_per_service(api: Api) {
    let api = with_github_secret(api).await;
    for id in ["a", "b"] {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    for i in 0..3 {
        let body = github_push(|b| b["after"] = json!(format!("{}", i + 1).repeat(40)));
        assert_eq!(
            api.push("acme", "github", &body, &format!("d{i}")).await.status,
            StatusCode::ACCEPTED
        );
    }
    let all = api.deployments("acme").await;
    assert_eq!(all.len(), 6);
    let r = api
        .admin_get("/organization/acme/deployments?service_id=a&limit=2")
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["service_id"] == "a"));
    // Newest first.
    assert_eq!(items[0]["git_commit_id"], "3".repeat(40));
    let cursor = r.body["next_cursor"].as_str().unwrap();
    let r = api
        .admin_get(&format!(
            "/organization/acme/deployments?service_id=a&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["items"][0]["git_commit_id"], "1".repeat(40));
    assert_eq!(r.body["next_cursor"], Value::Null);
    // A cursor of one service's list is refused for another's.
    let r = api
        .admin_get(&format!("/organization/acme/deployments?service_id=b&cursor={cursor}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// A body of the wrong shape is refused without repeating its text: neither the answer nor
/// the deliveries history keeps any part of a body.
#[tokio::test]
async fn a_refused_body_is_not_repeated_in_the_answer_nor_the_history() {
    let api = github_api().await;
    let fragment = "body-fragment-7f3a9c";
    let body = github_push(|b| b["commits"] = json!(fragment));
    let r = api.push("acme", "github", &body, "d-1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.body["error"]["message"].as_str().unwrap(),
        format!(
            "The body is not a push payload (for a GitHub push): invalid type: string, expected an array at line 1 \
             column {}.",
            std::str::from_utf8(&body).unwrap().find(fragment).unwrap() + fragment.len() + 1
        )
    );
    let history = history_of(&api).await;
    assert_eq!(history["items"][0]["outcome"], "REJECTED", "{history}");
    assert!(!history.to_string().contains(fragment), "{history}");
}

/// A branch push of every provider, its branch renamed to `branch` wherever the body names it
/// (alone or as `refs/heads/…`).
fn branch_push_of(provider: &str, branch: &str) -> Vec<u8> {
    fn renamed(body: &Value, from: &str, to: &str) -> Value {
        match body {
            Value::String(text) if text == from => json!(to),
            Value::String(text) if text.strip_prefix("refs/heads/") == Some(from) => json!(format!("refs/heads/{to}")),
            Value::Array(items) => items.iter().map(|item| renamed(item, from, to)).collect(),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, field)| (name.clone(), renamed(field, from, to)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let (fixture_path, fixture_branch) = match provider {
        "github" => ("github/gp-push.json", "master"),
        "gitlab" => ("gitlab/gp-push-event.json", "master"),
        "bitbucket" => ("bitbucket-cloud/gp-repo-push.json", "name-of-branch"),
        "bitbucket-server" => ("bitbucket-server/gp-repo-refs-changed.json", "feature/wip"),
        "gitea" => ("gitea/gp-push-event.json", "master"),
        "gogs" => ("gogs/gp-push-event.json", "develop"),
        "azure-devops" => ("azure-devops/gp-git.push.json", "main"),
        other => panic!("{other}"),
    };
    let mut body = fixture_json(fixture_path);
    if provider == "bitbucket-server" {
        body["changes"][0]["type"] = json!("UPDATE");
        body["changes"][0]["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
    }
    serde_json::to_vec(&renamed(&body, fixture_branch, branch)).unwrap()
}

async fn history_of(api: &Api) -> Value {
    let history = api
        .call(
            http::Method::GET,
            "/organization/acme/deliveries",
            Some(autodeploy_tests::ADMIN),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    history.body
}

on_both_stores! { a_pushed_branch_git_would_not_create_is_refused_without_being_repeated }

/// A pushed branch is stored, logged, answered and sent to engines: for every provider, one
/// git would not create (a NUL, a newline, a bidirectional override, 8 MiB of it) is a 400
/// that names the rule, and neither the answer nor the history repeats the name.
async fn a_pushed_branch_git_would_not_create_is_refused_without_being_repeated(api: Api) {
    let long = format!("fragment-{}", "y".repeat(8 * 1024 * 1024));
    for provider in git_providers() {
        api.set_secret("acme", provider).await;
        for (i, bad) in [
            "ma\0in-fragment",
            "a\nb-fragment",
            "\u{202e}fragment-evil",
            "fragment..x",
            "fragment.lock",
            long.as_str(),
        ]
        .into_iter()
        .enumerate()
        {
            let body = branch_push_of(provider, bad);
            let r = api.push("acme", provider, &body, &format!("{provider}-{i}")).await;
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
                "{provider} {i}: {}",
                r.body
            );
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("the name of a pushed branch is not one git gives a branch: it must"),
                "{message}"
            );
            assert!(!message.contains("fragment") && message.len() < 400, "{message}");
        }
        // A valid branch of the same body is a push.
        let r = api
            .push(
                "acme",
                provider,
                &branch_push_of(provider, "release/été"),
                &format!("{provider}-ok"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{provider}: {}", r.body);
        assert_eq!(r.body["branch"], "release/été", "{provider}: {}", r.body);
    }
    let history = history_of(&api).await;
    let text = history.to_string();
    assert!(
        !text.contains("fragment") && text.len() < 200_000,
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["outcome"] == "REJECTED")
    );
}

/// SPEC: an answer that queues and skips nothing carries `message`, saying why; for every
/// provider and every reason a delivery is ignored. The message never repeats the event header
/// received (headers are never stored).
#[tokio::test]
async fn every_ignored_answer_says_why() {
    let api = Api::new();
    let mut answers: Vec<(String, autodeploy_tests::Reply)> = Vec::new();
    for provider in git_providers() {
        api.set_secret("acme", provider).await;
        let path = format!("/organization/acme/webhooks/{provider}");
        let body = branch_push_of(provider, "main");
        // Another event than a push (Azure DevOps names its event in the body).
        if provider == "azure-devops" {
            for event in ["git.pullrequest.created", "GIT.PUSH", "zz-other-event"] {
                let body = serde_json::to_vec(&json!({"eventType": event})).unwrap();
                let headers = provider_headers(provider, &body, "x");
                answers.push((format!("{provider} {event}"), api.deliver(&path, &headers, body).await));
            }
        } else {
            let mut headers = provider_headers(provider, &body, &format!("{provider}-other"));
            headers[0].1 = "zz-other-event".to_owned();
            answers.push((
                format!("{provider} other"),
                api.deliver(&path, &headers, body.clone()).await,
            ));
        }
        // A tag push and a push of a ref that is no branch.
        if provider != "bitbucket" && provider != "bitbucket-server" {
            for (i, git_ref) in ["refs/tags/v1", "refs/notes/commits"].into_iter().enumerate() {
                let text = String::from_utf8(body.clone())
                    .unwrap()
                    .replace("\"refs/heads/main\"", &format!("\"{git_ref}\""));
                let r = api
                    .push("acme", provider, text.as_bytes(), &format!("{provider}-ref-{i}"))
                    .await;
                answers.push((format!("{provider} {git_ref}"), r));
            }
        }
        // A redelivery.
        let first = api.push("acme", provider, &body, &format!("{provider}-again")).await;
        assert!(first.status.is_success(), "{provider}: {}", first.body);
        let r = api.push("acme", provider, &body, &format!("{provider}-again")).await;
        answers.push((format!("{provider} duplicate"), r));
        // A deletion.
        if provider == "bitbucket-server" {
            let deleted = fixture("bitbucket-server/gp-repo-refs-changed.json");
            answers.push((
                format!("{provider} deleted"),
                api.push("acme", provider, &deleted, "bbs-del").await,
            ));
        }
    }
    // GitHub: a ping, and an event header that is not UTF-8.
    let ping = fixture("github/gp-ping.json");
    let mut headers = provider_headers("github", &ping, "ping");
    headers[0].1 = "ping".to_owned();
    answers.push((
        "github ping".to_owned(),
        api.deliver("/organization/acme/webhooks/github", &headers, ping).await,
    ));
    let body = branch_push_of("github", "main");
    let mut req = http::Request::post("/organization/acme/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", http::HeaderValue::from_bytes(b"p\xffush").unwrap());
    for (name, value) in provider_headers("github", &body, "not-utf8").into_iter().skip(1) {
        req = req.header(name, value);
    }
    let r = api.raw(req.body(axum::body::Body::from(body)).unwrap()).await;
    answers.push(("github non-UTF-8 event".to_owned(), r));

    let mut reasons = std::collections::BTreeSet::new();
    for (case, r) in &answers {
        assert_eq!(r.status, StatusCode::OK, "{case}: {}", r.body);
        let reason = r.body["ignored"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: {}", r.body));
        reasons.insert(reason.to_owned());
        let message = r.body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: {}", r.body));
        assert!(message.len() > 10 && message.ends_with('.'), "{case}: {message}");
        assert!(
            !message.contains("zz-other") && !message.contains('\u{fffd}'),
            "{case}: {message}"
        );
    }
    let expected = [
        "BRANCH_DELETED",
        "DUPLICATE_DELIVERY",
        "PING",
        "TAG_PUSH",
        "UNSUPPORTED_EVENT",
    ];
    assert_eq!(
        reasons,
        expected.iter().map(|r| (*r).to_owned()).collect(),
        "{reasons:?}"
    );
    assert!(!history_of(&api).await.to_string().contains("zz-other"));
}

/// A credential header given twice is refused (401) for every provider, whichever of the two
/// is right; an event or delivery-id header given twice is a 400 naming it.
#[tokio::test]
async fn repeated_credential_and_event_headers_are_refused() {
    let api = Api::new();
    for provider in git_providers() {
        api.set_secret("acme", provider).await;
        let path = format!("/organization/acme/webhooks/{provider}");
        let body = branch_push_of(provider, "main");
        let headers = provider_headers(provider, &body, &format!("{provider}-twice"));
        let credential = match provider {
            "gitlab" => "x-gitlab-token",
            "azure-devops" => "authorization",
            "gitea" => "x-gitea-signature",
            "gogs" => "x-gogs-signature",
            "github" => "x-hub-signature-256",
            _ => "x-hub-signature",
        };
        let good = headers
            .iter()
            .find(|(name, _)| name == credential)
            .unwrap_or_else(|| panic!("{provider}: {headers:?}"))
            .1
            .clone();
        let bad = good.replace(['a', 'b', 'c', 'd', 'e', 'f'], "0");
        let others: Vec<(String, String)> = headers.iter().filter(|(name, _)| name != credential).cloned().collect();
        for pair in [[&good, &bad], [&bad, &good], [&good, &good]] {
            let mut twice = others.clone();
            twice.extend(pair.iter().map(|value| (credential.to_owned(), (*value).clone())));
            let r = api.deliver(&path, &twice, body.clone()).await;
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
                "{provider}: {}",
                r.body
            );
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("is given more than once"), "{message}");
            assert!(!message.contains(&good) && !message.contains(&bad), "{message}");
        }
        if provider != "azure-devops" {
            // A missing event header is named as such, not blamed on the body.
            let r = api.deliver(&path, &headers[1..], body.clone()).await;
            r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
            assert!(
                r.error_fields()[0].eq_ignore_ascii_case(&headers[0].0),
                "{provider}: {}",
                r.body
            );
            let mut twice = headers.clone();
            twice.push((headers[0].0.clone(), "issues".to_owned()));
            let r = api.deliver(&path, &twice, body.clone()).await;
            r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("is given more than once")
            );
            // So is a delivery-id header: which id decides whether it was seen cannot be told.
            let (name, id) = headers[1].clone();
            assert!(
                name.contains("delivery") || name.contains("uuid") || name.contains("request-id"),
                "{name}"
            );
            let mut twice = headers.clone();
            twice.push((name.clone(), format!("{id}-again")));
            let r = api.deliver(&path, &twice, body.clone()).await;
            r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
            assert_eq!(r.error_fields().len(), 1, "{}", r.body);
            assert!(r.error_fields()[0].eq_ignore_ascii_case(&name), "{}", r.body);
            assert!(!r.body.to_string().contains(&id), "{}", r.body);
            // Joined in one field, as a proxy or API Gateway joins repeated fields, they are
            // still two: the event header and the delivery-id header alike.
            for (index, value) in [
                (0, format!("{}, issues", headers[0].1)),
                (1, format!("{id},{id}-again")),
            ] {
                let mut joined = headers.clone();
                joined[index].1 = value;
                let r = api.deliver(&path, &joined, body.clone()).await;
                r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
                assert!(
                    r.error_fields()[0].eq_ignore_ascii_case(&headers[index].0),
                    "{}",
                    r.body
                );
                assert!(!r.body.to_string().contains(&id), "{}", r.body);
            }
            // A delivery id that is no id (too long, not printable ASCII) is named, not taken
            // for none, which would let every redelivery of it through.
            for value in ["x".repeat(201), format!("{id}\tnext")] {
                let mut odd = headers.clone();
                odd[1].1 = value;
                let r = api.deliver(&path, &odd, body.clone()).await;
                r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
                assert!(r.error_fields()[0].eq_ignore_ascii_case(&name), "{}", r.body);
                assert!(
                    r.body["error"]["message"].as_str().unwrap().contains("at most 200"),
                    "{}",
                    r.body
                );
            }
        }
    }
    assert_eq!(api.deployments("acme").await.len(), 0);
}

/// A body sent with a content coding is not decoded: 415, saying to send it unencoded, on a
/// webhook, a registry webhook and a settings route alike.
#[tokio::test]
async fn an_encoded_body_is_refused_with_415() {
    let api = github_api().await;
    let body = fixture("github/gp-push.json");
    for encoding in ["gzip", "br", "deflate, identity"] {
        let mut headers = provider_headers("github", &body, encoding);
        headers.push(("content-encoding".to_owned(), encoding.to_owned()));
        let r = api
            .deliver("/organization/acme/webhooks/github", &headers, body.clone())
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
            "{encoding}: {}",
            r.body
        );
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("unencoded"),
            "{}",
            r.body
        );
    }
    let mut headers = provider_headers("github", &body, "identity");
    headers.push(("content-encoding".to_owned(), "identity".to_owned()));
    let r = api.deliver("/organization/acme/webhooks/github", &headers, body).await;
    assert!(r.status.is_success(), "{}", r.body);

    let service = json!({"environment_id": "production", "kind": "APPLICATION",
                         "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "main"}});
    let r = api
        .call_with(
            http::Method::PUT,
            "/organization/acme/services/api",
            Some(autodeploy_tests::ADMIN),
            Some(service),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);

    api.set_secret("acme", "dockerhub").await;
    let r = api
        .deliver(
            &format!("/organization/acme/registry-webhooks/dockerhub/{WEBHOOK_SECRET}"),
            &s(&[("content-encoding", "gzip")]),
            fixture("registry/dockerhub-push.json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);
}

/// A Docker Hub notification naming an image with capitals is a 400 that does not repeat the
/// name, lower-cased or not, in the answer nor the history.
#[tokio::test]
async fn a_refused_registry_body_is_not_repeated() {
    let api = Api::new();
    api.set_secret("acme", "dockerhub").await;
    let mut body = fixture_json("registry/dockerhub-push.json");
    body["repository"]["repo_name"] = json!("Fragment-7f3a/xxx");
    let r = api
        .deliver(
            &format!("/organization/acme/registry-webhooks/dockerhub/{WEBHOOK_SECRET}"),
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("must be lower-case"), "{message}");
    assert!(!message.to_lowercase().contains("fragment-7f3a"), "{message}");
    let history = history_of(&api).await;
    assert_eq!(history["items"][0]["outcome"], "REJECTED", "{history}");
    assert!(
        !history.to_string().to_lowercase().contains("fragment-7f3a"),
        "{history}"
    );
}

/// A delivery long to plan (many paths against long restriction lists) is planned without
/// holding the other requests of its thread, on the server's multi-threaded runtime, and
/// decides as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_long_to_plan_decides_as_any() {
    use autodeploy_api::deploy::push::PLANNING_IN_PLACE_UP_TO;
    let api = github_api().await;
    let files: Vec<String> = (0..2000).map(|i| format!("src/module/file{i}.rs")).collect();
    let rules = |last: &str| {
        let mut values: Vec<String> = (0..99).map(|i| format!("nowhere/{i}")).collect();
        values.push(last.to_owned());
        json!({"deployment_restrictions": values.iter()
            .map(|value| json!({"mode": "MATCH", "type": "PATH", "value": value}))
            .collect::<Vec<_>>()})
    };
    // The last path listed is the one `touched` follows: every path is compared first.
    api.app("acme", "touched", "GITHUB", GITHUB_REPO, "master", rules(&files[1999]))
        .await;
    api.app(
        "acme",
        "untouched",
        "GITHUB",
        GITHUB_REPO,
        "master",
        rules("nowhere/else"),
    )
    .await;
    let listed: usize = files.iter().map(|f| f.len() + 1).sum();
    assert!(listed * 200 > PLANNING_IN_PLACE_UP_TO, "{listed}");
    let body = github_push(|b| {
        b["commits"][0]["added"] = json!(files);
        b["commits"][0]["modified"] = json!([]);
        b["commits"][0]["removed"] = json!([]);
    });
    assert!(body.len() < BLOCKING_POOL_FROM, "read in place: {}", body.len());
    let r = api.push("acme", "github", &body, "long-to-plan").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        outcome(&r),
        (s(&[("touched", "QUEUED")]), s(&[("untouched", "PATH_RESTRICTIONS")]))
    );
}
