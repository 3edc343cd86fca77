//! Tenant isolation ("Prove it" issue, item 5; README "Proof: faults, races, durability,
//! load"): organization A's tokens and webhook secrets can neither read, change nor trigger
//! anything of organization B, over every route; and A's own pushes, image tags and registry
//! webhooks never trigger B's services, though both follow the same repository and image.
//! B's whole state is compared before and after, and B's own credentials still work. On
//! SQLite and on DynamoDB + SQS FIFO (moto).

use autodeploy_tests::{ADMIN, Api, WEBHOOK_SECRET, fixture, hmac_hex, on_both_stores, provider_headers};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const A: &str = "acme";
const B: &str = "globex";
const B_SECRET: &str = "globex-webhook-secret-0123456789";
const A_DOCKERHUB: &str = "acmedockerhubsecret0123456789";
const B_DOCKERHUB: &str = "globexdockerhubsecret012345678";
const REPO: &str = "https://github.com/binkkatal/sample_app.git";

struct Org {
    manage: String,
    deploy: String,
    manage_id: String,
}

/// The same services in both organizations: one following the repository, a container and a
/// job on the same GHCR image, a container on Docker Hub.
async fn setup(api: &Api, org: &str, github_secret: &str, dockerhub_secret: &str) -> Org {
    api.app(org, "web", "GITHUB", REPO, "master", json!({})).await;
    for (id, kind, registry, image, tag) in [
        ("api", "CONTAINER", "ghcr.io", "shared/api", "1.0.0"),
        ("job", "JOB", "ghcr.io", "shared/api", "1.0.0"),
        ("hub", "CONTAINER", "docker.io", "acme/api", "v2.4.0"),
    ] {
        let r = api
            .put_service(
                org,
                id,
                json!({"environment_id": "production", "kind": kind, "auto_deploy": true,
                       "image": {"registry": registry, "image_name": image, "tag": tag}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    api.set_secret_to(org, "github", github_secret).await;
    api.set_secret_to(org, "gitlab", github_secret).await;
    api.set_secret_to(org, "dockerhub", dockerhub_secret).await;
    let (manage, manage_id) = api.token_and_id(org, &["manage"]).await;
    let (deploy, _) = api.token_and_id(org, &["deploy"]).await;
    Org {
        manage,
        deploy,
        manage_id,
    }
}

/// Everything of `org` an admin can read.
async fn snapshot(api: &Api, org: &str) -> Value {
    let get = |path: String| async move {
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body
    };
    let mut services = Vec::new();
    for id in ["web", "api", "job", "hub"] {
        let r = api.get_service(org, id).await;
        services.push(json!({"doc": r.body, "etag": r.etag()}));
    }
    // A refused delivery to an organization's URL is the organization's to see (its deliveries
    // history, its secret's last delivery): those are compared apart, by `accepted_deliveries`.
    let secret = |provider: &'static str| async move {
        let mut body = get(format!("/organization/{org}/webhook-secrets/{provider}")).await;
        let fields = body.as_object_mut().unwrap();
        fields.remove("last_delivery_at");
        fields.remove("last_outcome");
        body
    };
    json!({
        "services": services,
        "list": get(format!("/organization/{org}/services?limit=100")).await,
        "github": secret("github").await,
        "gitlab": secret("gitlab").await,
        "dockerhub": secret("dockerhub").await,
        "tokens": get(format!("/organization/{org}/tokens?limit=100")).await,
        "deployments": get(format!("/organization/{org}/deployments?limit=100")).await,
    })
}

fn github_headers(secret: &str, event: &str, body: &[u8], delivery: &str) -> Vec<(String, String)> {
    vec![
        ("x-github-event".to_owned(), event.to_owned()),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            format!("sha256={}", hmac_hex(secret, body)),
        ),
    ]
}

on_both_stores!(one_organizations_credentials_reach_nothing_of_another);

async fn one_organizations_credentials_reach_nothing_of_another(api: Api) {
    let a = setup(&api, A, WEBHOOK_SECRET, A_DOCKERHUB).await;
    let b = setup(&api, B, B_SECRET, B_DOCKERHUB).await;
    let before = snapshot(&api, B).await;

    // A's tokens on each of B's token-authenticated routes: 403, whatever the scope.
    let service = json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
                         "git_repository": {"provider": "GITHUB", "url": REPO, "branch": "evil"}});
    let image = json!({"image_name": "ghcr.io/shared/api", "tag": "6.6.6"});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/organization/{B}/services"), None),
        (Method::GET, format!("/organization/{B}/services/web"), None),
        (
            Method::PUT,
            format!("/organization/{B}/services/web"),
            Some(service.clone()),
        ),
        (
            Method::PUT,
            format!("/organization/{B}/services/new"),
            Some(service.clone()),
        ),
        (
            Method::PATCH,
            format!("/organization/{B}/services/web"),
            Some(json!({"auto_deploy": false})),
        ),
        (Method::DELETE, format!("/organization/{B}/services/web"), None),
        (Method::GET, format!("/organization/{B}/webhook-secrets/github"), None),
        (
            Method::PUT,
            format!("/organization/{B}/webhook-secrets/github"),
            Some(json!({"secret": "attacker-chosen-secret-0123"})),
        ),
        (
            Method::DELETE,
            format!("/organization/{B}/webhook-secrets/github"),
            None,
        ),
        (Method::GET, format!("/organization/{B}/tokens"), None),
        (
            Method::POST,
            format!("/organization/{B}/tokens"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/organization/{B}/tokens/{}", b.manage_id),
            None,
        ),
        (Method::GET, format!("/organization/{B}/deployments"), None),
        (
            Method::POST,
            format!("/organization/{B}/container/deploy"),
            Some(image.clone()),
        ),
        (
            Method::POST,
            format!("/organization/{B}/job/deploy"),
            Some(image.clone()),
        ),
    ];
    let mut checked = 0;
    for token in [&a.manage, &a.deploy] {
        for (method, path, body) in &routes {
            let r = api.call(method.clone(), path, Some(token), body.clone()).await;
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::FORBIDDEN, "FORBIDDEN"),
                "{method} {path}: {}",
                r.body
            );
            checked += 1;
        }
    }
    // B's token id through A's path, even with the admin token: no such token in A.
    let r = api
        .call(
            Method::DELETE,
            &format!("/organization/{A}/tokens/{}", b.manage_id),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A's list cursor in B's list: refused.
    let r = api
        .call(
            Method::GET,
            &format!("/organization/{A}/services?limit=1"),
            Some(ADMIN),
            None,
        )
        .await;
    let cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = api
        .call(
            Method::GET,
            &format!("/organization/{B}/services?cursor={cursor}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // A's webhook secrets on B's webhooks: 401, nothing triggered.
    let push = fixture("github/gp-push.json");
    let r = api
        .deliver(
            &format!("/organization/{B}/webhooks/github"),
            &github_headers(WEBHOOK_SECRET, "push", &push, "x-1"),
            push.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let gitlab = fixture("gitlab/gp-push-event.json");
    let r = api
        .deliver(
            &format!("/organization/{B}/webhooks/gitlab"),
            &provider_headers("gitlab", &gitlab, "x-2"),
            gitlab.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let hub = fixture("registry/dockerhub-push.json");
    let r = api
        .deliver(
            &format!("/organization/{B}/registry-webhooks/dockerhub/{A_DOCKERHUB}"),
            &[],
            hub.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let package = fixture("registry/github-package-published.docker.json");
    let r = api
        .deliver(
            &format!("/organization/{B}/registry-webhooks/github"),
            &github_headers(WEBHOOK_SECRET, "package", &package, "x-3"),
            package.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    checked += 4;

    // A's own, valid triggers deploy A's services only.
    let r = api
        .deliver(
            &format!("/organization/{A}/webhooks/github"),
            &github_headers(WEBHOOK_SECRET, "push", &push, "a-1"),
            push.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .call_with(
            Method::POST,
            &format!("/organization/{A}/container/deploy"),
            Some(&a.deploy),
            Some(json!({"image_name": "ghcr.io/shared/api", "tag": "2.0.0"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .call(
            Method::POST,
            &format!("/organization/{A}/job/deploy"),
            Some(&a.deploy),
            Some(json!({"image_name": "shared/api", "tag": "2.0.0"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .deliver(
            &format!("/organization/{A}/registry-webhooks/dockerhub/{A_DOCKERHUB}"),
            &[],
            hub.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let a_log = api.deployments(A).await;
    assert_eq!(a_log.len(), 4, "{a_log:?}");
    assert!(a_log.iter().all(|d| d["organization_id"] == A));

    // B is exactly as it was, and B's own credentials still work.
    assert_eq!(snapshot(&api, B).await, before, "B changed");
    let outcomes = api.delivery_outcomes(B).await;
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|o| o == "REJECTED"),
        "B's deliveries: only A's refused attempts: {outcomes:?}"
    );
    let r = api
        .call(
            Method::GET,
            &format!("/organization/{B}/services"),
            Some(&b.manage),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .deliver(
            &format!("/organization/{B}/webhooks/github"),
            &github_headers(B_SECRET, "push", &push, "b-1"),
            push,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let b_log = api.deployments(B).await;
    assert_eq!(b_log.len(), 1);
    assert_eq!(b_log[0]["organization_id"], B);
    assert_eq!(b_log[0]["service_id"], "web");
    eprintln!("{checked} foreign attempts refused; B unchanged");
}
