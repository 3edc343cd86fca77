//! SPEC "A replay cannot roll a service back" and "Bounded tenants", attacked through the HTTP
//! API on both stores: a captured signed push resent under a new delivery id or none after
//! the branch moved on queues nothing (while a real re-apply after a rollback still does); an
//! old registry notification resent queues nothing; one delivery naming a branch 2,000 times
//! queues one deployment per service, and one naming more than 100 branches is refused; an
//! organization cannot hold more services than its limits, in all or on one key.

use autodeploy_api::store::TenantLimits;
use autodeploy_tests::{
    ADMIN, Api, GITHUB_REPO, Reply, WEBHOOK_SECRET, fixture_json, hmac_hex, on_both_stores, outcome,
};
use autodeploy_tests::{by_service, provider_headers};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::exact_bodies::assert_names_only;

on_both_stores! {
    a_replayed_push_cannot_roll_a_service_back, a_re_apply_after_a_rollback_still_deploys,
    an_old_registry_notification_replayed_queues_nothing, one_delivery_queues_at_most_one_deployment_per_service,
    tenants_are_bounded, a_tag_policy_that_is_costly_to_compile_is_refused, a_recreated_service_refuses_its_predecessors_replays,
}

const BITBUCKET_REPO: &str = "git@bitbucket.org:team_name/repo_name.git";
const BITBUCKET_BRANCH: &str = "name-of-branch";

fn sha(n: u32) -> String {
    format!("{n:040x}")
}

/// The real GitHub push fixture moving `master` from `before` to `after`.
fn github_push(before: &str, after: &str, forced: bool) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    body["before"] = json!(before);
    body["after"] = json!(after);
    body["forced"] = json!(forced);
    serde_json::to_vec(&body).unwrap()
}

/// A signed push to `acme`'s `provider` webhook, with `delivery` as its delivery id or with
/// no delivery id header at all.
async fn push(api: &Api, provider: &str, body: &[u8], delivery: Option<&str>) -> Reply {
    push_to(
        api,
        &format!("/organization/acme/webhooks/{provider}"),
        provider,
        body,
        delivery,
    )
    .await
}

/// [`push`] as a dry run, which must tell what the real delivery would do.
async fn dry_push(api: &Api, provider: &str, body: &[u8], delivery: Option<&str>) -> Reply {
    let path = format!("/organization/acme/webhooks/{provider}?dry_run=true");
    push_to(api, &path, provider, body, delivery).await
}

async fn push_to(api: &Api, path: &str, provider: &str, body: &[u8], delivery: Option<&str>) -> Reply {
    let mut headers = provider_headers(provider, body, delivery.unwrap_or("unused"));
    if delivery.is_none() {
        headers.retain(|(name, _)| !matches!(name.as_str(), "x-github-delivery" | "x-request-uuid"));
    }
    api.deliver(path, &headers, body.to_vec()).await
}

/// The commits queued for the organization's services, oldest first, as the queue hands
/// them out.
async fn queued_commits(api: &Api) -> Vec<(String, String)> {
    api.queued_messages()
        .await
        .iter()
        .map(|m| {
            (
                m["service_id"].as_str().unwrap().to_owned(),
                m["git_commit_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn skipped_already_queued(r: &Reply, services: &[&str]) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let expected: Vec<(String, String)> = services
        .iter()
        .map(|s| ((*s).to_owned(), "ALREADY_QUEUED".to_owned()))
        .collect();
    assert_eq!(outcome(r), (vec![], expected), "{}", r.body);
}

async fn a_replayed_push_cannot_roll_a_service_back(api: Api) {
    api.set_secret("acme", "github").await;
    api.set_secret("acme", "bitbucket").await;
    api.app("acme", "gh", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    api.app("acme", "bb", "BITBUCKET", BITBUCKET_REPO, BITBUCKET_BRANCH, json!({}))
        .await;
    let (a, b, c) = (sha(0xa), sha(0xb), sha(0xc));

    // GitHub: A→B, then B→C.
    let a_to_b = github_push(&a, &b, false);
    let r = push(&api, "github", &a_to_b, Some("gh-1")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = push(&api, "github", &github_push(&b, &c, false), Some("gh-2")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // The captured A→B, resent under a new delivery id, and with none: skipped, every time,
    // as a dry run says beforehand.
    for delivery in [Some("gh-replay-1"), None, Some("gh-replay-2"), None] {
        let r = dry_push(&api, "github", &a_to_b, delivery).await;
        skipped_already_queued(&r, &["gh"]);
        let r = push(&api, "github", &a_to_b, delivery).await;
        skipped_already_queued(&r, &["gh"]);
    }
    // So is B→C, the last push, resent.
    let r = push(&api, "github", &github_push(&b, &c, false), Some("gh-replay-3")).await;
    skipped_already_queued(&r, &["gh"]);

    // Bitbucket (no push timestamp; its delivery id header left out): the same.
    let bitbucket = |before: &str, after: &str| {
        let mut body = fixture_json("bitbucket-cloud/gp-repo-push.json");
        let change = &mut body["push"]["changes"][0];
        change["old"]["target"]["hash"] = json!(before);
        change["new"]["target"]["hash"] = json!(after);
        serde_json::to_vec(&body).unwrap()
    };
    let r = push(&api, "bitbucket", &bitbucket(&a, &b), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = push(&api, "bitbucket", &bitbucket(&b, &c), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    for delivery in [None, Some("{bb-replay}")] {
        let r = push(&api, "bitbucket", &bitbucket(&a, &b), delivery).await;
        skipped_already_queued(&r, &["bb"]);
    }

    // Exactly one deployment of each commit per service: the replays queued nothing, and
    // both services stay on C.
    let s = |service: &str, commit: &str| (service.to_owned(), commit.to_owned());
    let mut queued = queued_commits(&api).await;
    queued.sort();
    assert_eq!(queued, vec![s("bb", &b), s("bb", &c), s("gh", &b), s("gh", &c)]);
    assert_eq!(api.deployments("acme").await.len(), 4);
}

/// A service deleted and created again under its id still refuses, as replays, the pushes
/// its predecessor queued: deleting and re-creating a service (as infrastructure-as-code
/// does) does not open it to rollbacks by a captured push.
async fn a_recreated_service_refuses_its_predecessors_replays(api: Api) {
    api.set_secret("acme", "github").await;
    api.app("acme", "gh", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let (a, b, c, d) = (sha(0xa), sha(0xb), sha(0xc), sha(0xd));
    let a_to_b = github_push(&a, &b, false);
    for (body, delivery) in [(&a_to_b, "re-1"), (&github_push(&b, &c, false), "re-2")] {
        let r = push(&api, "github", body, Some(delivery)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let r = api
        .call(Method::DELETE, "/organization/acme/services/gh", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    api.app("acme", "gh", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let r = push(&api, "github", &github_push(&c, &d, false), Some("re-3")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = push(&api, "github", &a_to_b, Some("re-replay")).await;
    skipped_already_queued(&r, &["gh"]);
    let newest = &api.deployments("acme").await[0];
    assert_eq!(newest["git_commit_id"], json!(d), "{newest}");
}

async fn a_re_apply_after_a_rollback_still_deploys(api: Api) {
    api.set_secret("acme", "github").await;
    api.app("acme", "gh", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let (a, b) = (sha(0xa), sha(0xb));
    // A→B, B→A forced (a rollback), A→B again (the fix re-applied): each queues, with or
    // without a delivery id, as a dry run says beforehand.
    for (before, after, forced, delivery) in [
        (&a, &b, false, Some("r-1")),
        (&b, &a, true, None),
        (&a, &b, false, None),
        (&b, &a, true, Some("r-4")),
    ] {
        let dry = dry_push(&api, "github", &github_push(before, after, forced), None).await;
        assert_eq!(
            outcome(&dry).0,
            vec![("gh".to_owned(), "DRY_RUN".to_owned())],
            "{}",
            dry.body
        );
        let r = push(&api, "github", &github_push(before, after, forced), delivery).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{before}..{after}: {}", r.body);
        assert_eq!(outcome(&r).0, vec![("gh".to_owned(), "QUEUED".to_owned())]);
    }
    // B→A, the last push, resent: a replay; A→B once more would re-apply (its `before` is the
    // current commit), as a dry run says.
    let r = dry_push(&api, "github", &github_push(&b, &a, true), Some("r-5")).await;
    skipped_already_queued(&r, &["gh"]);
    let r = push(&api, "github", &github_push(&b, &a, true), Some("r-5")).await;
    skipped_already_queued(&r, &["gh"]);
    let r = dry_push(&api, "github", &github_push(&a, &b, false), Some("r-6")).await;
    assert_eq!(
        outcome(&r).0,
        vec![("gh".to_owned(), "DRY_RUN".to_owned())],
        "{}",
        r.body
    );
    let commits: Vec<String> = queued_commits(&api).await.into_iter().map(|(_, c)| c).collect();
    assert_eq!(commits, vec![b.clone(), a.clone(), b, a]);
}

/// A signed GitHub Packages delivery announcing ghcr.io/codertocat/hello-world:`tag`.
fn package(tag: &str) -> Vec<u8> {
    let mut body = fixture_json("registry/github-registry_package-published.docker.json");
    let version = &mut body["registry_package"]["package_version"];
    version["container_metadata"]["tag"]["name"] = json!(tag);
    version["package_url"] = json!(format!("ghcr.io/Codertocat/hello-world:{tag}"));
    serde_json::to_vec(&body).unwrap()
}

async fn deliver_package(api: &Api, body: &[u8], delivery: &str, secret: &str) -> Reply {
    let headers = vec![
        ("x-github-event".to_owned(), "registry_package".to_owned()),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            format!("sha256={}", hmac_hex(secret, body)),
        ),
    ];
    api.deliver("/organization/acme/registry-webhooks/github", &headers, body.to_vec())
        .await
}

/// The Docker Hub fixture (docker.io acme/api) announcing `tag`.
fn dockerhub(tag: &str) -> Vec<u8> {
    let mut body = fixture_json("registry/dockerhub-push.json");
    body["push_data"]["tag"] = json!(tag);
    serde_json::to_vec(&body).unwrap()
}

async fn deliver_dockerhub(api: &Api, body: &[u8], secret: &str) -> Reply {
    let path = format!("/organization/acme/registry-webhooks/dockerhub/{secret}");
    api.deliver(&path, &[], body.to_vec()).await
}

async fn image_tag(api: &Api, id: &str) -> Value {
    let path = format!("/organization/acme/services/{id}");
    api.call(Method::GET, &path, Some(ADMIN), None).await.body["image"]["tag"].clone()
}

fn duplicate(r: &Reply) {
    assert_eq!(
        (r.status, &r.body["ignored"]),
        (StatusCode::OK, &json!("DUPLICATE_DELIVERY")),
        "{}",
        r.body
    );
    assert!(r.body["queued"].as_array().unwrap().is_empty(), "{}", r.body);
}

async fn an_old_registry_notification_replayed_queues_nothing(api: Api) {
    api.set_secret("acme", "github").await;
    api.set_secret("acme", "dockerhub").await;
    for (id, registry, name, tag) in [
        ("ghcr", "ghcr.io", "codertocat/hello-world", "1.3.0"),
        ("hub", "docker.io", "acme/api", "v2.4.0"),
    ] {
        let body = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
                          "image": {"registry": registry, "image_name": name, "tag": tag}});
        assert_eq!(api.put_service("acme", id, body).await.status, StatusCode::CREATED);
    }

    // GitHub Packages: 1.4.0, then 1.5.0; the 1.4.0 event resent under a new delivery id is a
    // duplicate, and the service stays on 1.5.0.
    let old = package("1.4.0");
    let r = deliver_package(&api, &old, "p-1", WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = deliver_package(&api, &package("1.5.0"), "p-2", WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    for delivery in ["p-replay-1", "p-1", "p-replay-2"] {
        duplicate(&deliver_package(&api, &old, delivery, WEBHOOK_SECRET).await);
    }
    assert_eq!(image_tag(&api, "ghcr").await, "1.5.0");
    // A refused delivery and a dry run remember nothing: the same body, verified, deploys.
    let new = package("1.6.0");
    let r = deliver_package(&api, &new, "p-3", "not-the-secret-0123456789").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let headers = vec![
        ("x-github-event".to_owned(), "registry_package".to_owned()),
        ("x-github-delivery".to_owned(), "p-4".to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &new)),
        ),
    ];
    let r = api
        .deliver(
            "/organization/acme/registry-webhooks/github?dry_run=true",
            &headers,
            new.clone(),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["dry_run"]),
        (StatusCode::OK, &json!(true)),
        "{}",
        r.body
    );
    let r = deliver_package(&api, &new, "p-5", WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // Docker Hub: v2.4.1, then v2.4.2; v2.4.1 resent is a duplicate.
    let old = dockerhub("v2.4.1");
    let r = deliver_dockerhub(&api, &old, WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = deliver_dockerhub(&api, &dockerhub("v2.4.2"), WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    duplicate(&deliver_dockerhub(&api, &old, WEBHOOK_SECRET).await);
    assert_eq!(image_tag(&api, "hub").await, "v2.4.2");
    // Refused under a wrong secret, then sent right: it deploys.
    let new = dockerhub("v2.4.3");
    let r = deliver_dockerhub(&api, &new, "wrong-secret-0123456789").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = deliver_dockerhub(&api, &new, WEBHOOK_SECRET).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    let tags = by_service(&api.queued_messages().await, "image_tag");
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let mut tags_sorted = tags.clone();
    tags_sorted.sort();
    assert_eq!(
        tags_sorted,
        vec![
            s("ghcr", "1.4.0"),
            s("ghcr", "1.5.0"),
            s("ghcr", "1.6.0"),
            s("hub", "v2.4.1"),
            s("hub", "v2.4.2"),
            s("hub", "v2.4.3"),
        ],
        "{tags:?}"
    );
}

/// The Bitbucket fixture with `changes`: `(branch, before, after)` each.
fn bitbucket_delivery(changes: &[(String, String, String)]) -> Vec<u8> {
    let mut body = fixture_json("bitbucket-cloud/gp-repo-push.json");
    let template = body["push"]["changes"][0].clone();
    body["push"]["changes"] = changes
        .iter()
        .map(|(branch, before, after)| {
            let mut change = template.clone();
            change["old"]["name"] = json!(branch);
            change["new"]["name"] = json!(branch);
            change["old"]["target"]["hash"] = json!(before);
            change["new"]["target"]["hash"] = json!(after);
            change
        })
        .collect();
    serde_json::to_vec(&body).unwrap()
}

async fn one_delivery_queues_at_most_one_deployment_per_service(api: Api) {
    api.set_secret("acme", "bitbucket").await;
    for id in ["one", "two"] {
        api.app("acme", id, "BITBUCKET", BITBUCKET_REPO, BITBUCKET_BRANCH, json!({}))
            .await;
    }
    api.app("acme", "b42", "BITBUCKET", BITBUCKET_REPO, "b42", json!({}))
        .await;

    // 2,000 changes of one branch in one delivery, without a delivery id: one deployment per
    // service, of the last change.
    let changes: Vec<(String, String, String)> = (1..=2_000)
        .map(|i| (BITBUCKET_BRANCH.to_owned(), sha(i), sha(i + 1)))
        .collect();
    let body = bitbucket_delivery(&changes);
    let r = push(&api, "bitbucket", &body, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let queued = r.body["queued"].as_array().unwrap();
    assert_eq!(queued.len(), 2, "{}", r.body);
    assert!(
        queued.iter().all(|q| q["commit_sha"] == json!(sha(2_001))),
        "{}",
        r.body
    );
    // The same delivery again is a replay: nothing more.
    let r = push(&api, "bitbucket", &body, None).await;
    skipped_already_queued(&r, &["one", "two"]);

    // More than 100 branches: refused, nothing queued, nothing remembered.
    let branches = |n: u32| -> Vec<(String, String, String)> {
        (0..n)
            .map(|i| (format!("b{i}"), sha(10_000 + i), sha(20_000 + i)))
            .collect()
    };
    let too_many = bitbucket_delivery(&branches(101));
    let r = push(&api, "bitbucket", &too_many, Some("{many}")).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("100"),
        "{}",
        r.body
    );
    // 2,000 changes over 2,000 branches: refused too.
    let spread: Vec<(String, String, String)> = (0..2_000)
        .map(|i| (format!("b{i}"), sha(30_000 + i), sha(40_000 + i)))
        .collect();
    let r = push(&api, "bitbucket", &bitbucket_delivery(&spread), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // 100 branches are fine, under the refused delivery's id: b42's service deploys once.
    let r = push(&api, "bitbucket", &bitbucket_delivery(&branches(100)), Some("{many}")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r).0, vec![("b42".to_owned(), "QUEUED".to_owned())]);

    let mut commits = queued_commits(&api).await;
    commits.sort();
    let s = |a: &str, b: String| (a.to_owned(), b);
    assert_eq!(
        commits,
        vec![s("b42", sha(20_042)), s("one", sha(2_001)), s("two", sha(2_001))]
    );
}

/// PUT `org`'s application `id` following `url` at `main`.
async fn put_app(api: &Api, org: &str, id: &str, url: &str) -> Reply {
    let body = json!({"environment_id": "production", "kind": "APPLICATION",
                      "git_repository": {"provider": "GITHUB", "url": url, "branch": "main"}});
    api.put_service(org, id, body).await
}

fn container_of(registry: &str, name: &str) -> Value {
    json!({"environment_id": "production", "kind": "CONTAINER",
           "image": {"registry": registry, "image_name": name, "tag": "1.0.0"}})
}

/// A refusal for a limit: `service` named, the message saying which.
fn over_the_limit(r: &Reply, says: &str, context: &str) {
    assert_names_only(r, "service", context);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{context}: {message}");
}

async fn tenants_are_bounded(api: Api) {
    let api = api.reconfigured(|state| {
        state.with_limits(TenantLimits {
            services: 5,
            services_per_key: 2,
        })
    });
    // Two services on one repository key, however their URLs are written; a third is refused.
    for (id, url) in [
        ("a1", "https://github.com/acme/shop.git"),
        ("a2", "git@github.com:acme/shop.git"),
    ] {
        let r = put_app(&api, "acme", id, url).await;
        assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
    }
    let r = put_app(&api, "acme", "a3", "https://GitHub.com/Acme/Shop").await;
    over_the_limit(&r, "github.com/acme/shop", "a third on the repository");
    // Replacing one of them is no new service.
    let r = put_app(&api, "acme", "a1", "https://github.com/acme/shop").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The same on one image key.
    for (id, registry) in [("i1", "ghcr.io"), ("i2", "GHCR.io")] {
        let r = api.put_service("acme", id, container_of(registry, "acme/api")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
    }
    let r = api.put_service("acme", "i3", container_of("ghcr.io", "acme/api")).await;
    // (Counted on the image's path, which a bare image name announced reaches on any registry.)
    over_the_limit(&r, "acme/api", "a third on the image");

    // Five services in all; a sixth is refused, whatever it follows.
    let r = put_app(&api, "acme", "o5", "https://github.com/acme/other").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = put_app(&api, "acme", "o6", "https://github.com/acme/third").await;
    over_the_limit(&r, "AUTODEPLOY_MAX_SERVICES", "a sixth service");
    // A merge patch onto a full key is refused as well, and changes nothing.
    let before = api.get_service("acme", "o5").await;
    let patch = json!({"git_repository": {"url": "https://github.com/acme/shop"}});
    let o5 = "/organization/acme/services/o5";
    let r = api.call(Method::PATCH, o5, Some(ADMIN), Some(patch)).await;
    over_the_limit(&r, "github.com/acme/shop", "a patch onto the full key");
    assert_eq!(api.get_service("acme", "o5").await.etag(), before.etag());

    // Another organization has limits of its own.
    let r = put_app(&api, "other", "a3", "https://github.com/acme/shop").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Deleting frees a place, on the key and in the organization.
    let a2 = "/organization/acme/services/a2";
    assert_eq!(
        api.call(Method::DELETE, a2, Some(ADMIN), None).await.status,
        StatusCode::NO_CONTENT
    );
    let r = put_app(&api, "acme", "a3", "https://github.com/acme/shop").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut ids: Vec<String> = api.admin_get("/organization/acme/services").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a3", "i1", "i2", "o5"]);

    // As many deploy targets as services: a sixth is refused, naming `target`; replacing one
    // is no new one; another organization has its own.
    let target = |i: u32| json!({"type": "WEBHOOK", "url": format!("https://8.8.8.8/hook-{i}")});
    let put_target = |org: &'static str, i: u32| {
        let path = format!("/organization/{org}/targets/t{i}");
        let api = &api;
        async move { api.call(Method::PUT, &path, Some(ADMIN), Some(target(i))).await }
    };
    for i in 1..=5 {
        let r = put_target("acme", i).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = put_target("acme", 6).await;
    r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(r.error_fields(), ["target"], "{}", r.body);
    assert!(r.body.to_string().contains("AUTODEPLOY_MAX_SERVICES"), "{}", r.body);
    assert_eq!(
        api.admin_get("/organization/acme/targets/t6").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(put_target("acme", 5).await.status, StatusCode::OK);
    assert_eq!(put_target("other", 6).await.status, StatusCode::CREATED);
}

/// One tenant must not stall everyone: a pattern whose compiled form is large (short as it
/// is), deeply nested or long is refused when written, naming it; a pattern that spells out
/// the whole tag is not, and decides as it says.
async fn a_tag_policy_that_is_costly_to_compile_is_refused(api: Api) {
    let with = |pattern: &str| {
        json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
               "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": "v1"},
               "tag_policy": {"type": "REGEX", "pattern": pattern}})
    };
    let nested = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    let long = format!("^{}$", "a".repeat(600));
    for pattern in ["(a{1,100}){1,100}", "(?:[a-z0-9]{1000}){10}", &nested, &long] {
        let r = api.put_service("acme", "api", with(pattern)).await;
        assert_names_only(&r, "tag_policy.pattern", pattern);
    }
    let r = api.admin_get("/organization/acme/services/api").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = api.put_service("acme", "api", with(r"^[\w.-]{1,128}$")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let deploy = |tag: &str| {
        api.call(
            Method::POST,
            "/organization/acme/container/deploy",
            Some(ADMIN),
            Some(json!({"image_name": "ghcr.io/acme/api", "tag": tag})),
        )
    };
    let r = deploy(&"x".repeat(128)).await;
    assert_eq!(
        outcome(&r).0,
        vec![("api".to_owned(), "QUEUED".to_owned())],
        "{}",
        r.body
    );
}

/// The default limit on one key, 1,000, as SPEC states it (SQLite: the limits' code is the
/// stores' own, proven on both above with small limits; a thousand services on moto would
/// only be slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_on_one_repository_is_the_default_limit() {
    let api = Api::new();
    let ids: Vec<String> = (0..1_000).map(|i| format!("s{i:04}")).collect();
    for chunk in ids.chunks(50) {
        let puts = chunk
            .iter()
            .map(|id| put_app(&api, "acme", id, "https://github.com/acme/shop"));
        for r in futures::future::join_all(puts).await {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
    }
    let r = put_app(&api, "acme", "one-more", "git@github.com:acme/shop.git").await;
    over_the_limit(&r, "1000 services", "the 1,001st on the repository");
    let r = put_app(&api, "acme", "one-more", "https://github.com/acme/other").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}
