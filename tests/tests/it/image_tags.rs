//! Image-tag auto-deploy end to end through the real router: the CI endpoints, Docker
//! normalization, tag policies, the new tag recorded as the service's desired state, once-only
//! under concurrency, and the Docker Hub and GitHub Packages registry webhooks. Every case that
//! records or queues a deployment runs on both stores (SQLite, whose queue is a table, and
//! DynamoDB and SQS FIFO on moto, the messages read off the queue); request validation,
//! authentication and signature checks, which stop before the store, on SQLite.

use std::sync::Arc;

use autodeploy_tests::{ADMIN, Api, Reply, WEBHOOK_SECRET, deployment_ids, fixture, fixture_json, hmac_hex, outcome};
use autodeploy_tests::{assert_logged_as_sent, on_both_stores, sent_deployment_ids};
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

fn s(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = s(v);
    v.sort();
    v
}

/// Create an auto-deployed service of `kind` running `registry`/`name`:`tag` in `acme`.
async fn image_service(api: &Api, id: &str, kind: &str, registry: Option<&str>, name: &str, tag: &str, extra: Value) {
    let mut image = json!({"image_name": name, "tag": tag});
    if let Some(registry) = registry {
        image["registry"] = json!(registry);
    }
    let mut body = json!({"environment_id": "production", "kind": kind, "auto_deploy": true, "image": image});
    json_patch::merge(&mut body, &extra);
    let r = api.put_service("acme", id, body).await;
    assert!(r.status.is_success(), "{id}: {}", r.body);
}

async fn container(api: &Api, id: &str, registry: Option<&str>, name: &str, tag: &str) {
    image_service(api, id, "CONTAINER", registry, name, tag, json!({})).await;
}

/// `POST /organization/acme/{kind}/deploy` as the admin.
async fn deploy(api: &Api, kind: &str, image: &str, tag: &str) -> Reply {
    let path = format!("/organization/acme/{kind}/deploy");
    api.call(
        Method::POST,
        &path,
        Some(ADMIN),
        Some(json!({"image_name": image, "tag": tag})),
    )
    .await
}

async fn dry(api: &Api, kind: &str, image: &str, tag: &str) -> Reply {
    let path = format!("/organization/acme/{kind}/deploy?dry_run=true");
    let r = api
        .call(
            Method::POST,
            &path,
            Some(ADMIN),
            Some(json!({"image_name": image, "tag": tag})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["dry_run"], true);
    r
}

/// Ids of the `queued` entries, sorted.
fn queued_ids(r: &Reply) -> Vec<String> {
    outcome(r).0.into_iter().map(|(id, _)| id).collect()
}

async fn each_endpoint_deploys_its_own_kind(api: Api) {
    container(&api, "web", Some("ghcr.io"), "acme/api", "1.3.0").await;
    image_service(&api, "migrate", "JOB", Some("ghcr.io"), "acme/api", "1.3.0", json!({})).await;
    let app = json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
                     "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/api", "branch": "main"}});
    assert_eq!(api.put_service("acme", "app", app).await.status, StatusCode::CREATED);

    let r = deploy(&api, "container", "acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r), (pairs(&[("web", "QUEUED")]), vec![]));
    assert_eq!(r.body["source"], "API");
    assert_eq!(r.body["registry"], Value::Null);
    assert_eq!(r.body["image_name"], "acme/api");
    assert_eq!(r.body["tag"], "1.4.0");
    assert_eq!(r.body["ignored"], Value::Null);
    assert_eq!(r.body["dry_run"], false);
    let entry = &r.body["queued"][0];
    assert_eq!(entry["tag"], "1.4.0");
    assert_eq!(entry["previous_tag"], "1.3.0");
    assert_eq!(entry["deployment_id"].as_str().unwrap().len(), 32);

    // The job still runs 1.3.0: the job endpoint deploys it, and only it.
    let r = deploy(&api, "job", "acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r), (pairs(&[("migrate", "QUEUED")]), vec![]));
    let log = api.deployments("acme").await;
    assert_eq!(log.len(), 2);
    let kinds: Vec<_> = log.iter().map(|d| d["service_kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"CONTAINER") && kinds.contains(&"JOB"), "{kinds:?}");

    // Nothing uses this image: 200, nothing listed.
    let r = deploy(&api, "container", "acme/other", "1.0").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(outcome(&r), (vec![], vec![]));
    // Another organization's services are never touched.
    let r = api
        .call(
            Method::POST,
            "/organization/other/container/deploy",
            Some(ADMIN),
            Some(json!({"image_name": "acme/api", "tag": "9.9.9"})),
        )
        .await;
    assert_eq!((r.status, outcome(&r)), (StatusCode::OK, (vec![], vec![])));
}

on_both_stores! {
    each_endpoint_deploys_its_own_kind, image_names_normalize_as_docker_does,
    same_tag_and_disabled_services_are_skipped, tag_policies_decide, queueing_records_the_new_tag_as_desired_state,
    twenty_concurrent_identical_notifications_queue_once, the_queue_message_is_the_specs,
    dry_run_answers_without_recording, dockerhub_webhook_queues_with_the_secret_url,
    github_package_webhook_queues_tagged_versions,
}

async fn image_names_normalize_as_docker_does(api: Api) {
    container(&api, "hub-nginx", Some("index.docker.io"), "nginx", "1.25").await;
    container(&api, "ghcr-nginx", Some("ghcr.io"), "nginx", "1.25").await;
    container(&api, "hub-acme", None, "acme/api", "1.0").await;
    // A registry written in capitals is found by its folded name.
    container(&api, "quay-acme", Some("Quay.IO"), "acme/api", "1.0").await;
    container(&api, "local", Some("localhost:5000"), "acme/api", "1.0").await;

    let cases: [(&str, &[&str]); 14] = [
        // No host: that path on any registry, or library/<name> on Docker Hub.
        ("nginx", &["ghcr-nginx", "hub-nginx"]),
        ("library/nginx", &["hub-nginx"]),
        ("acme/api", &["hub-acme", "local", "quay-acme"]),
        // A host: only that registry, its aliases folded, letter case too.
        ("docker.io/nginx", &["hub-nginx"]),
        ("docker.io/library/nginx", &["hub-nginx"]),
        ("index.docker.io/nginx", &["hub-nginx"]),
        ("registry-1.docker.io/library/nginx", &["hub-nginx"]),
        ("Docker.IO/nginx", &["hub-nginx"]),
        ("ghcr.io/nginx", &["ghcr-nginx"]),
        ("docker.io/acme/api", &["hub-acme"]),
        ("quay.io/acme/api", &["quay-acme"]),
        ("localhost:5000/acme/api", &["local"]),
        ("ghcr.io/acme/api", &[]),
        ("acme/api/sub", &[]),
    ];
    for (name, want) in cases {
        let r = dry(&api, "container", name, "2.0").await;
        assert_eq!(queued_ids(&r), want.to_vec(), "{name}: {}", r.body);
    }

    // The response and the trigger name the image normalized.
    let r = dry(&api, "container", "index.docker.io/nginx", "2.0").await;
    assert_eq!(
        (r.body["registry"].as_str(), r.body["image_name"].as_str()),
        (Some("docker.io"), Some("library/nginx"))
    );
    let r = deploy(&api, "container", "nginx", "1.26").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // The deployment log holds the very requests queued (`the_queue_message_is_the_specs`).
    let mut triggers: Vec<(String, String)> = api
        .deployments("acme")
        .await
        .iter()
        .map(|m| {
            let t = &m["trigger"];
            (
                t["registry"].as_str().unwrap().to_owned(),
                t["image_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    triggers.sort();
    assert_eq!(triggers, pairs(&[("docker.io", "library/nginx"), ("ghcr.io", "nginx")]));
}

async fn same_tag_and_disabled_services_are_skipped(api: Api) {
    container(&api, "current", None, "acme/api", "1.4.0").await;
    container(&api, "older", None, "acme/api", "1.3.0").await;
    image_service(
        &api,
        "off",
        "CONTAINER",
        None,
        "acme/api",
        "1.3.0",
        json!({"auto_deploy": false}),
    )
    .await;
    let r = deploy(&api, "container", "acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        outcome(&r),
        (
            pairs(&[("older", "QUEUED")]),
            pairs(&[("current", "SAME_TAG"), ("off", "AUTO_DEPLOY_DISABLED")])
        )
    );
    // A disabled service keeps its tag: nothing was recorded for it.
    assert_eq!(api.get_service("acme", "off").await.body["image"]["tag"], "1.3.0");
    assert_eq!(api.deployments("acme").await.len(), 1);
}

async fn tag_policies_decide(api: Api) {
    let policy = |p: Value| json!({"tag_policy": p});
    image_service(
        &api,
        "semver",
        "CONTAINER",
        None,
        "acme/api",
        "1.3.0",
        policy(json!({"type": "SEMVER", "range": ">=1.2.0 <2"})),
    )
    .await;
    image_service(
        &api,
        "vsemver",
        "CONTAINER",
        None,
        "acme/api",
        "v1.3.0",
        policy(json!({"type": "SEMVER", "range": ">=1.2.0 <2"})),
    )
    .await;
    image_service(
        &api,
        "glob",
        "CONTAINER",
        None,
        "acme/api",
        "release-1",
        policy(json!({"type": "GLOB", "pattern": "release-*"})),
    )
    .await;
    image_service(
        &api,
        "regex",
        "CONTAINER",
        None,
        "acme/api",
        "main-aaaaaaa",
        policy(json!({"type": "REGEX", "pattern": "^main-[0-9a-f]{7}$"})),
    )
    .await;
    image_service(&api, "any", "CONTAINER", None, "acme/api", "1.3.0", json!({})).await;

    let all = ["any", "glob", "regex", "semver", "vsemver"];
    let cases: [(&str, &[&str]); 9] = [
        ("1.4.0", &["any", "semver", "vsemver"]),
        ("v1.5.0", &["any", "semver", "vsemver"]),
        ("1.9.9", &["any", "semver", "vsemver"]),
        // Outside the range.
        ("2.0.0", &["any"]),
        ("1.1.0", &["any"]),
        // In range but lower than the current tag: never a downgrade.
        ("1.2.5", &["any"]),
        ("latest", &["any"]),
        ("release-2", &["any", "glob"]),
        ("main-bbbbbbb", &["any", "regex"]),
    ];
    for (tag, want) in cases {
        let r = dry(&api, "container", "acme/api", tag).await;
        assert_eq!(queued_ids(&r), want.to_vec(), "{tag}: {}", r.body);
        let (_, skipped) = outcome(&r);
        let expected: Vec<(String, String)> = all
            .iter()
            .filter(|id| !want.contains(id))
            .map(|id| ((*id).to_owned(), "TAG_POLICY".to_owned()))
            .collect();
        assert_eq!(skipped, expected, "{tag}");
    }
    // A REGEX that must match the whole tag does not match a longer one.
    let r = dry(&api, "container", "acme/api", "main-bbbbbbbb").await;
    assert!(!queued_ids(&r).contains(&"regex".to_owned()));

    // For real: the new tag is written where it was taken, and is the current tag the next
    // notification is compared with (no downgrade below it).
    let r = deploy(&api, "container", "acme/api", "1.5.0").await;
    assert_eq!(queued_ids(&r), vec!["any", "semver", "vsemver"], "{}", r.body);
    let mut tags = Vec::new();
    for id in all {
        let svc = api.get_service("acme", id).await;
        tags.push((id, svc.body["image"]["tag"].as_str().unwrap().to_owned()));
    }
    let expected = [
        ("any", "1.5.0"),
        ("glob", "release-1"),
        ("regex", "main-aaaaaaa"),
        ("semver", "1.5.0"),
        ("vsemver", "1.5.0"),
    ];
    assert_eq!(tags, expected.map(|(id, tag)| (id, tag.to_owned())));
    let r = dry(&api, "container", "acme/api", "1.4.5").await;
    assert_eq!(queued_ids(&r), vec!["any"], "{}", r.body);

    // An announcement every service skips says, for each tag policy that refused the tag, why;
    // and the deliveries history gives the same reason.
    let r = deploy(&api, "container", "acme/api", "1.5.0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["message"],
        "5 services reached, none deployed: SAME_TAG, TAG_POLICY. Service glob: 1.5.0 does not match the GLOB \
         pattern release-*. Service regex: 1.5.0 does not match the REGEX pattern ^main-[0-9a-f]{7}$.",
        "{}",
        r.body
    );
    let latest = api.admin_get("/organization/acme/deliveries?limit=1").await;
    assert_eq!(latest.body["items"][0]["reason"], r.body["message"], "{}", latest.body);
    let off = api
        .call(
            Method::PATCH,
            "/organization/acme/services/any",
            Some(ADMIN),
            Some(json!({"auto_deploy": false})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let r = deploy(&api, "container", "acme/api", "1.4.0").await;
    assert_eq!(
        r.body["message"],
        "5 services reached, none deployed: AUTO_DEPLOY_DISABLED, TAG_POLICY. Service glob: 1.4.0 does not match \
         the GLOB pattern release-*. Service regex: 1.4.0 does not match the REGEX pattern ^main-[0-9a-f]{7}$. \
         Service semver: 1.4.0 is not above the current tag 1.5.0 (a SEMVER policy never moves down). Service \
         vsemver: 1.4.0 is not above the current tag 1.5.0 (a SEMVER policy never moves down).",
        "{}",
        r.body
    );
    let r = dry(&api, "container", "acme/api", "2.0.0").await;
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(" Service semver: 2.0.0 is outside the SEMVER range >=1.2.0 <2."),
        "{}",
        r.body
    );
    // An answer that queues says nothing of the services refused beside; the deliveries
    // history, after the count, says why each was refused.
    let r = deploy(&api, "container", "acme/api", "release-2").await;
    assert_eq!(queued_ids(&r), vec!["glob"], "{}", r.body);
    assert_eq!(r.body["message"], Value::Null, "{}", r.body);
    let latest = api.admin_get("/organization/acme/deliveries?limit=1").await;
    assert_eq!(
        latest.body["items"][0]["reason"],
        "1 deployment queued. Service regex: release-2 does not match the REGEX pattern ^main-[0-9a-f]{7}$. \
         Service semver: release-2 is not a version, and the SEMVER policy (>=1.2.0 <2) takes versions only. \
         Service vsemver: release-2 is not a version, and the SEMVER policy (>=1.2.0 <2) takes versions only.",
        "{}",
        latest.body
    );
}

async fn queueing_records_the_new_tag_as_desired_state(api: Api) {
    container(&api, "api", Some("ghcr.io"), "acme/api", "1.3.0").await;
    let policy = json!({"tag_policy": {"type": "SEMVER", "range": ">=1"}});
    image_service(
        &api,
        "semver",
        "CONTAINER",
        Some("ghcr.io"),
        "acme/api",
        "1.3.0",
        policy,
    )
    .await;
    image_service(&api, "migrate", "JOB", Some("ghcr.io"), "acme/api", "1.3.0", json!({})).await;
    let before = api.get_service("acme", "api").await;
    assert_eq!(before.body["version"], 1);

    let queued = deploy(&api, "container", "ghcr.io/acme/api", "1.4.0").await;
    assert_eq!(
        (queued.status, queued_ids(&queued)),
        (StatusCode::ACCEPTED, vec!["api".to_owned(), "semver".to_owned()])
    );
    assert_eq!(
        outcome(&queued),
        (pairs(&[("api", "QUEUED"), ("semver", "QUEUED")]), vec![])
    );
    let after = api.get_service("acme", "api").await;
    assert_eq!(after.body["image"]["tag"], "1.4.0");
    assert_eq!(after.body["image"]["registry"], "ghcr.io");
    assert_eq!(after.body["image"]["image_name"], "acme/api");
    assert_eq!(after.body["version"], 2);
    assert_ne!(after.etag(), before.etag());
    assert_ne!(after.body["updated_at"], Value::Null);
    assert_eq!(after.body["created_at"], before.body["created_at"]);
    // The old ETag no longer names the service.
    let r = api
        .call_with(
            Method::PATCH,
            "/organization/acme/services/api",
            Some(ADMIN),
            Some(json!({"name": "x"})),
            &[("if-match", &before.etag())],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // The job runs the same image but is not a container.
    assert_eq!(api.get_service("acme", "migrate").await.body["image"]["tag"], "1.3.0");

    // The messages are SPEC's, and the log holds the very requests sent.
    let messages = api.queued_messages().await;
    assert_eq!(sent_deployment_ids(&messages), deployment_ids(&queued));
    let log = api.deployments("acme").await;
    for m in &messages {
        assert_eq!(m["git_commit_id"], Value::Null);
        assert_eq!(m["image_tag"], "1.4.0");
        assert_eq!(m["service_kind"], "CONTAINER");
        assert_eq!(
            m["trigger"],
            json!({"type": "IMAGE_TAG", "source": "API", "registry": "ghcr.io", "image_name": "acme/api",
                   "previous_tag": "1.3.0", "tag": "1.4.0"})
        );
    }
    assert_logged_as_sent(&log, &messages);

    // The same notification again queues nothing.
    let r = deploy(&api, "container", "acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        outcome(&r),
        (vec![], pairs(&[("api", "SAME_TAG"), ("semver", "SAME_TAG")]))
    );

    // Moving back to the earlier tag is a rollback: it queues, unless SEMVER forbids it.
    let r = deploy(&api, "container", "acme/api", "1.3.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        outcome(&r),
        (pairs(&[("api", "QUEUED")]), pairs(&[("semver", "TAG_POLICY")]))
    );
    assert_eq!(r.body["queued"][0]["previous_tag"], "1.4.0");
    assert_eq!(r.body["queued"][0]["tag"], "1.3.0");
    let svc = api.get_service("acme", "api").await;
    assert_eq!(
        (svc.body["image"]["tag"].as_str(), svc.body["version"].as_u64()),
        (Some("1.3.0"), Some(3))
    );
    assert_eq!(api.get_service("acme", "semver").await.body["image"]["tag"], "1.4.0");
    // And a later return to a tag deployed before queues again.
    let r = deploy(&api, "container", "acme/api", "1.4.0").await;
    assert_eq!(outcome(&r).0, pairs(&[("api", "QUEUED")]));
    let svc = api.get_service("acme", "api").await;
    assert_eq!(
        (svc.body["image"]["tag"].as_str(), svc.body["version"].as_u64()),
        (Some("1.4.0"), Some(4))
    );
    assert_eq!(api.get_service("acme", "semver").await.body["image"]["tag"], "1.4.0");
    assert_eq!(api.deployments("acme").await.len(), 4);
    // Sent in order, after the first two.
    let tags: Vec<Value> = api.queued_messages().await[2..]
        .iter()
        .map(|m| m["image_tag"].clone())
        .collect();
    assert_eq!(tags, vec![json!("1.3.0"), json!("1.4.0")]);

    // A settings write in between is not undone by the deploy write (and vice versa).
    let r = api
        .call(
            Method::PATCH,
            "/organization/acme/services/api",
            Some(ADMIN),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        deploy(&api, "container", "acme/api", "1.5.0").await.status,
        StatusCode::ACCEPTED
    );
    let svc = api.get_service("acme", "api").await;
    assert_eq!(
        (svc.body["name"].as_str(), svc.body["image"]["tag"].as_str()),
        (Some("Renamed"), Some("1.5.0"))
    );
}

async fn twenty_concurrent_identical_notifications_queue_once(api: Api) {
    let api = Arc::new(api);
    container(&api, "api", None, "acme/api", "1.0.0").await;
    container(&api, "web", None, "acme/api", "1.0.0").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            deploy(&api, "container", "acme/api", "1.1.0").await
        }));
    }
    let (mut queued, mut same) = (Vec::new(), 0);
    for task in tasks {
        let r = task.await.unwrap();
        assert!(
            r.status == StatusCode::ACCEPTED || r.status == StatusCode::OK,
            "{}",
            r.body
        );
        let (q, skipped) = outcome(&r);
        assert!(q.iter().all(|(_, status)| status == "QUEUED"), "{q:?}");
        queued.extend(q.into_iter().map(|(id, _)| id));
        assert!(skipped.iter().all(|(_, reason)| reason == "SAME_TAG"), "{skipped:?}");
        same += skipped.len();
    }
    queued.sort();
    assert_eq!(queued, vec!["api", "web"]);
    assert_eq!(same, 2 * 19);
    let log = api.deployments("acme").await;
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|d| d["status"] == "QUEUED"), "{log:?}");
    assert_eq!(api.queued_messages().await.len(), 2);
    for id in ["api", "web"] {
        let svc = api.get_service("acme", id).await;
        assert_eq!(
            (svc.body["image"]["tag"].as_str(), svc.body["version"].as_u64()),
            (Some("1.1.0"), Some(2))
        );
    }
}

async fn the_queue_message_is_the_specs(api: Api) {
    image_service(
        &api,
        "migrate",
        "JOB",
        Some("GHCR.io"),
        "ghcr.io/acme/api",
        "1.0.0",
        json!({}),
    )
    .await;
    let r = deploy(&api, "job", "acme/api", "1.1.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let messages = api.queued_messages().await;
    assert_eq!(messages.len(), 1);
    let msg = &messages[0];
    assert_eq!(msg["schema"], "autodeploy.deployment-request.v1");
    assert_eq!(msg["deployment_id"], r.body["queued"][0]["deployment_id"]);
    assert_eq!(msg["organization_id"], "acme");
    assert_eq!(msg["environment_id"], "production");
    assert_eq!(msg["service_id"], "migrate");
    assert_eq!(msg["service_kind"], "JOB");
    assert_eq!(msg["git_commit_id"], Value::Null);
    assert_eq!(msg["image_tag"], "1.1.0");
    assert_eq!(
        msg["trigger"],
        json!({"type": "IMAGE_TAG", "source": "API", "registry": "ghcr.io", "image_name": "acme/api",
               "previous_tag": "1.0.0", "tag": "1.1.0"})
    );
    assert!(msg["requested_at"].as_str().unwrap().ends_with('Z'));
    let id = msg["deployment_id"].as_str().unwrap();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let log = api.deployments("acme").await;
    assert_eq!(
        (log[0]["status"].as_str(), log[0]["deployment_id"].as_str()),
        (Some("QUEUED"), Some(id))
    );
    assert_eq!(r.body["queued"][0]["status"], "QUEUED");
}

#[tokio::test]
async fn every_bad_request_is_a_400() {
    let api = Api::new();
    container(&api, "api", None, "acme/api", "1.0.0").await;
    let path = "/organization/acme/container/deploy";
    let call = |body: Value| api.call(Method::POST, path, Some(ADMIN), Some(body));

    let fields = |r: &Reply| (r.status, r.error_code().to_owned(), r.error_fields());
    let invalid = |f: &[&str]| {
        (
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED".to_owned(),
            f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(fields(&call(json!({"tag": "1.0"})).await), invalid(&["image_name"]));
    assert_eq!(
        fields(&call(json!({"image_name": "acme/api"})).await),
        invalid(&["tag"])
    );
    assert_eq!(fields(&call(json!({})).await), invalid(&["image_name", "tag"]));
    assert_eq!(
        fields(&call(json!({"image_name": 5, "tag": true})).await),
        invalid(&["image_name", "tag"])
    );
    assert_eq!(
        fields(&call(json!({"image_name": null, "tag": ["1"]})).await),
        invalid(&["image_name", "tag"])
    );
    let r = call(json!({"image_name": "acme/api", "tag": "1.1", "environment_id": "x", "Tag": "y"})).await;
    assert_eq!(fields(&r), invalid(&["Tag", "environment_id"]));

    for image in [
        "",
        "Acme/API",
        "acme/api:1.0",
        "acme/api@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "https://ghcr.io/acme/api",
        "acme//api",
        "/acme/api",
        "acme/api/",
        "-acme/api",
        "acme/a..pi",
        "ghcr.io:99999/acme/api",
        &"a".repeat(256),
    ] {
        let r = call(json!({"image_name": image, "tag": "1.0"})).await;
        assert_eq!(fields(&r), invalid(&["image_name"]), "{image}: {}", r.body);
    }
    for tag in [
        "",
        "-bad",
        ".bad",
        "a b",
        "a/b",
        "a:b",
        "ümlaut",
        "1.0+build",
        &"x".repeat(129),
    ] {
        let r = call(json!({"image_name": "acme/api", "tag": tag})).await;
        assert_eq!(fields(&r), invalid(&["tag"]), "{tag}: {}", r.body);
    }
    // Docker's grammar at its edges is accepted.
    for tag in ["_x", "A.b-C_1", "1", &"x".repeat(128)] {
        let r = call(json!({"image_name": "acme/api", "tag": tag})).await;
        assert!(r.status.is_success(), "{tag}: {}", r.body);
    }

    let raw = |body: Vec<u8>, content_type: Option<&str>, extra: &[(&str, &str)]| {
        let mut req = Request::post(path).header("authorization", format!("Token {ADMIN}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        api.raw(req.body(Body::from(body)).unwrap())
    };
    for body in [
        b"not json".to_vec(),
        b"{".to_vec(),
        vec![0xff, 0xfe],
        Vec::new(),
        b"[]".to_vec(),
        b"\"acme/api\"".to_vec(),
    ] {
        let r = raw(body.clone(), Some("application/json"), &[]).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
            "{body:?}"
        );
    }
    let good = br#"{"image_name": "acme/api", "tag": "2.0"}"#.to_vec();
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let r = raw(good.clone(), ct, &[]).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
            "{ct:?}"
        );
    }
    let r = raw(good.clone(), Some("application/json; charset=utf-8"), &[]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    let mut huge = br#"{"image_name": "acme/api", "tag": "3.0", "pad": ""#.to_vec();
    huge.resize(256 * 1024 + 1, b' ');
    let r = raw(huge, Some("application/json"), &[]).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );
    let r = raw(good, Some("application/json"), &[("content-length", "999999999")]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is read (and then judged on its fields).
    let mut padded = br#"{"image_name": "acme/api", "tag": "3.0", "pad": ""#.to_vec();
    padded.resize(256 * 1024 - 2, b'x');
    padded.extend_from_slice(b"\"}");
    let r = raw(padded, Some("application/json"), &[]).await;
    assert_eq!(r.error_fields(), vec!["pad"], "{}", r.body);

    let r = api
        .call(
            Method::POST,
            "/organization/bad%20org/container/deploy",
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.error_fields(), vec!["organization_id"]);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // Nothing of all this was recorded, except the well-formed requests.
    assert_eq!(api.deployments("acme").await.len(), 5);
}

#[tokio::test]
async fn tokens_need_the_deploy_scope_of_their_organization() {
    let api = Api::new();
    container(&api, "api", None, "acme/api", "1.0.0").await;
    let deploy_only = api.token("acme", &["deploy"]).await;
    let manage_only = api.token("acme", &["manage"]).await;
    let other_org = api.token("other", &["deploy", "manage"]).await;
    let path = "/organization/acme/container/deploy";
    let body = || Some(json!({"image_name": "acme/api", "tag": "1.1.0"}));

    let with_auth = |value: String| {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", value)
            .body(Body::from(body().unwrap().to_string()))
            .unwrap();
        api.raw(req)
    };
    let r = api.call(Method::POST, path, None, body()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    for value in [
        "Bearer adt_0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
        "Bearer ".to_owned(),
        format!("Basic {deploy_only}"),
        deploy_only.clone(),
    ] {
        let r = with_auth(value.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{value}");
        assert!(!String::from_utf8_lossy(&r.raw).contains(&deploy_only));
    }
    // Authentication comes before the body is judged.
    let r = api.call(Method::POST, path, None, Some(json!({"nope": 1}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = api.call(Method::POST, path, Some(&other_org), body()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let r = api.call(Method::POST, path, Some(&manage_only), body()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert!(api.deployments("acme").await.is_empty());

    // `deploy` alone is enough, as `Token` (Qovery's scheme) or `Bearer`.
    let r = with_auth(format!("Token {deploy_only}")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .call(
            Method::POST,
            "/organization/acme/job/deploy",
            Some(&deploy_only),
            body(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // ...but not for the settings API.
    let r = api
        .call(Method::GET, "/organization/acme/services", Some(&deploy_only), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

async fn dry_run_answers_without_recording(api: Api) {
    container(&api, "api", None, "acme/api", "1.0.0").await;
    container(&api, "current", None, "acme/api", "1.1.0").await;
    let before = api.get_service("acme", "api").await;
    for query in ["dry_run=true", "dry_run=1", "dry_run=TRUE"] {
        let r = api
            .call(
                Method::POST,
                &format!("/organization/acme/container/deploy?{query}"),
                Some(ADMIN),
                Some(json!({"image_name": "acme/api", "tag": "1.1.0"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["dry_run"], true);
        assert_eq!(
            outcome(&r),
            (pairs(&[("api", "DRY_RUN")]), pairs(&[("current", "SAME_TAG")]))
        );
        assert_eq!(r.body["queued"][0]["deployment_id"], Value::Null);
        assert_eq!(r.body["queued"][0]["previous_tag"], "1.0.0");
    }
    assert!(api.deployments("acme").await.is_empty());
    assert!(api.queued_messages().await.is_empty());
    let after = api.get_service("acme", "api").await;
    assert_eq!(
        (after.etag(), &after.body["image"]["tag"]),
        (before.etag(), &json!("1.0.0"))
    );
    // The real request then queues.
    let r = deploy(&api, "container", "acme/api", "1.1.0").await;
    assert_eq!(outcome(&r).0, pairs(&[("api", "QUEUED")]));
}

// ---- Registry webhooks -------------------------------------------------------------------

const DOCKERHUB: &str = "registry/dockerhub-push.json";
const GITHUB_PACKAGE: &str = "registry/github-package-published.docker.json";
const GITHUB_REGISTRY_PACKAGE: &str = "registry/github-registry_package-published.docker.json";
const GITHUB_NPM_PACKAGE: &str = "registry/github-package-published.npm.json";

fn dockerhub_path(secret: &str) -> String {
    format!("/organization/acme/registry-webhooks/dockerhub/{secret}")
}

async fn dockerhub_webhook_queues_with_the_secret_url(api: Api) {
    api.set_secret("acme", "dockerhub").await;
    // The fixture announces docker.io acme/api:v2.4.1.
    container(&api, "hub", Some("index.docker.io"), "acme/api", "v2.4.0").await;
    container(&api, "ghcr", Some("ghcr.io"), "acme/api", "v2.4.0").await;
    image_service(&api, "hub-job", "JOB", None, "acme/api", "v2.4.0", json!({})).await;
    image_service(
        &api,
        "hub-off",
        "CONTAINER",
        None,
        "acme/api",
        "v2.4.0",
        json!({"auto_deploy": false}),
    )
    .await;

    let r = api
        .deliver(&dockerhub_path(WEBHOOK_SECRET), &[], fixture(DOCKERHUB))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // A registry names an image, not a kind: the job on it is redeployed with the container.
    assert_eq!(
        outcome(&r),
        (
            pairs(&[("hub", "QUEUED"), ("hub-job", "QUEUED")]),
            pairs(&[("hub-off", "AUTO_DEPLOY_DISABLED")])
        )
    );
    assert_eq!(r.body["source"], "DOCKER_HUB");
    assert_eq!(r.body["registry"], "docker.io");
    assert_eq!(r.body["image_name"], "acme/api");
    assert_eq!(r.body["tag"], "v2.4.1");
    let messages = api.queued_messages().await;
    let mut kinds: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["service_id"].as_str().unwrap(), m["service_kind"].as_str().unwrap()))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec![("hub", "CONTAINER"), ("hub-job", "JOB")]);
    for message in &messages {
        assert_eq!(
            message["trigger"],
            json!({"type": "IMAGE_TAG", "source": "DOCKER_HUB", "registry": "docker.io", "image_name": "acme/api",
                   "previous_tag": "v2.4.0", "tag": "v2.4.1"})
        );
    }
    assert_eq!(api.get_service("acme", "hub").await.body["image"]["tag"], "v2.4.1");
    assert_eq!(api.get_service("acme", "hub-job").await.body["image"]["tag"], "v2.4.1");
    assert!(!String::from_utf8_lossy(&r.raw).contains(WEBHOOK_SECRET));

    // Docker Hub retries: the same body again is a duplicate and queues nothing.
    let r = api
        .deliver(&dockerhub_path(WEBHOOK_SECRET), &[], fixture(DOCKERHUB))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ignored"], "DUPLICATE_DELIVERY", "{}", r.body);
    assert_eq!(api.queued_messages().await.len(), messages.len());
    // The answer and the history say which image's notification came again.
    assert_eq!(
        (&r.body["registry"], &r.body["image_name"], &r.body["tag"]),
        (&json!("docker.io"), &json!("acme/api"), &json!("v2.4.1"))
    );
    let newest = &api.admin_get("/organization/acme/deliveries?limit=1").await.body["items"][0];
    assert_eq!(
        (&newest["outcome"], &newest["image"], &newest["tag"]),
        (&json!("DUPLICATE"), &json!("docker.io/acme/api"), &json!("v2.4.1")),
        "{newest}"
    );
    // Another body announcing the same tag: each service already has it.
    let r = api
        .deliver(
            &dockerhub_path(WEBHOOK_SECRET),
            &[],
            serde_json::to_vec(&fixture_json(DOCKERHUB)).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        outcome(&r).1,
        pairs(&[
            ("hub", "SAME_TAG"),
            ("hub-job", "SAME_TAG"),
            ("hub-off", "AUTO_DEPLOY_DISABLED")
        ])
    );

    // An official image (one segment) is library/<name>.
    container(&api, "nginx", None, "nginx", "1.25").await;
    let mut body = fixture_json(DOCKERHUB);
    body["repository"]["repo_name"] = json!("nginx");
    body["push_data"]["tag"] = json!("1.26");
    let r = api
        .deliver(&dockerhub_path(WEBHOOK_SECRET), &[], serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(outcome(&r).0, pairs(&[("nginx", "QUEUED")]));
    assert_eq!(r.body["image_name"], "library/nginx");

    // Dry run.
    let mut body = fixture_json(DOCKERHUB);
    body["push_data"]["tag"] = json!("v2.5.0");
    let path = format!("{}?dry_run=true", dockerhub_path(WEBHOOK_SECRET));
    let r = api.deliver(&path, &[], serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(
        (r.status, outcome(&r).0),
        (StatusCode::OK, pairs(&[("hub", "DRY_RUN"), ("hub-job", "DRY_RUN")]))
    );
    assert_eq!(api.deployments("acme").await.len(), 3);
}

#[tokio::test]
async fn dockerhub_webhook_refuses_a_wrong_or_missing_secret() {
    let api = Api::new();
    container(&api, "hub", None, "acme/api", "v2.4.0").await;
    // No secret configured: refused, whatever the URL says.
    let r = api
        .deliver(&dockerhub_path(WEBHOOK_SECRET), &[], fixture(DOCKERHUB))
        .await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert!(!String::from_utf8_lossy(&r.raw).contains(WEBHOOK_SECRET));
    api.set_secret("acme", "dockerhub").await;

    let wrong = [
        "wrong-secret-but-long-enough".to_owned(),
        WEBHOOK_SECRET[..WEBHOOK_SECRET.len() - 1].to_owned(),
        format!("{WEBHOOK_SECRET}x"),
        WEBHOOK_SECRET.to_uppercase(),
        "x".to_owned(),
    ];
    for secret in &wrong {
        let r = api.deliver(&dockerhub_path(secret), &[], fixture(DOCKERHUB)).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{secret}"
        );
        let text = String::from_utf8_lossy(&r.raw);
        assert!(!text.contains(WEBHOOK_SECRET), "{text}");
        assert!(secret.len() < 8 || !text.contains(secret.as_str()), "{text}");
    }
    // Without the secret segment: 401 saying where it goes.
    let r = api
        .deliver(
            "/organization/acme/registry-webhooks/dockerhub",
            &[],
            fixture(DOCKERHUB),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Another organization's secret does not open this one's webhook.
    let r = api
        .deliver(
            &format!("/organization/other/registry-webhooks/dockerhub/{WEBHOOK_SECRET}"),
            &[],
            fixture(DOCKERHUB),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The git provider secret of the same value is another slot.
    assert!(api.deployments("acme").await.is_empty());

    // With the right secret: untagged pushes are ignored, bodies that are not Docker Hub's are 400.
    let mut untagged = fixture_json(DOCKERHUB);
    untagged["push_data"]["tag"] = json!("");
    let r = api
        .deliver(
            &dockerhub_path(WEBHOOK_SECRET),
            &[],
            serde_json::to_vec(&untagged).unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str()),
        (StatusCode::OK, Some("UNSUPPORTED_EVENT"))
    );
    assert!(r.body["message"].as_str().unwrap().ends_with('.'));
    assert_eq!(r.body["queued"], json!([]));
    // Naming the image that was not deployed.
    assert_eq!(
        (&r.body["registry"], &r.body["image_name"], &r.body["tag"]),
        (&json!("docker.io"), &json!("acme/api"), &Value::Null),
        "{}",
        r.body
    );
    for body in [b"not json".to_vec(), b"{}".to_vec(), b"[]".to_vec(), Vec::new()] {
        let r = api.deliver(&dockerhub_path(WEBHOOK_SECRET), &[], body.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
            "{body:?}"
        );
    }
    let mut bad_tag = fixture_json(DOCKERHUB);
    bad_tag["push_data"]["tag"] = json!("-bad");
    let r = api
        .deliver(
            &dockerhub_path(WEBHOOK_SECRET),
            &[],
            serde_json::to_vec(&bad_tag).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = api
        .deliver(&dockerhub_path(WEBHOOK_SECRET), &[], vec![b' '; 1024 * 1024 + 1])
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(api.deployments("acme").await.is_empty());
}

/// A GitHub package delivery of `body`, signed with the test secret.
fn github_headers(event: &str, body: &[u8]) -> Vec<(String, String)> {
    let sig = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, body));
    s(&[
        ("x-github-event", event),
        ("x-github-delivery", "d-1"),
        ("x-hub-signature-256", &sig),
    ])
}

/// A real package fixture, edited to announce tag `tag` of ghcr.io/codertocat/hello-world.
fn tagged(path: &str, key: &str, tag: &str) -> Vec<u8> {
    let mut body = fixture_json(path);
    let version = &mut body[key]["package_version"];
    version["container_metadata"]["tag"]["name"] = json!(tag);
    version["package_url"] = json!(format!("ghcr.io/Codertocat/hello-world:{tag}"));
    serde_json::to_vec(&body).unwrap()
}

const GITHUB_PATH: &str = "/organization/acme/registry-webhooks/github";

/// Copies of one registry webhook at once (GitHub sending a body twice): the standalone server
/// processes one copy, and the others answer `DUPLICATE_DELIVERY`, though each read the body
/// as new, whether they then found the tag to deploy or found it recorded already.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_one_package_webhook_at_once_are_processed_once() {
    let api = Arc::new(Api::new());
    api.set_secret("acme", "github").await;
    container(&api, "ghcr", Some("ghcr.io"), "codertocat/hello-world", "1.3.0").await;
    for (round, tag) in ["1.4.0", "1.5.0", "1.6.0"].into_iter().enumerate() {
        let body = tagged(GITHUB_REGISTRY_PACKAGE, "registry_package", tag);
        let replies = api
            .at_once(15, |api, _| {
                let body = body.clone();
                async move {
                    api.deliver(GITHUB_PATH, &github_headers("registry_package", &body), body)
                        .await
                }
            })
            .await;
        let mut processed = 0;
        for r in replies {
            if r.status == StatusCode::ACCEPTED {
                processed += 1;
                assert_eq!(outcome(&r).0, pairs(&[("ghcr", "QUEUED")]), "{}", r.body);
            } else {
                assert_eq!(
                    (r.status, &r.body["ignored"]),
                    (StatusCode::OK, &json!("DUPLICATE_DELIVERY")),
                    "{}",
                    r.body
                );
            }
        }
        assert_eq!(processed, 1, "{tag}");
        assert_eq!(api.deployments("acme").await.len(), round + 1);
    }
}

async fn github_package_webhook_queues_tagged_versions(api: Api) {
    api.set_secret("acme", "github").await;
    container(&api, "ghcr", Some("ghcr.io"), "codertocat/hello-world", "1.3.0").await;
    container(&api, "hub", None, "codertocat/hello-world", "1.3.0").await;

    // The published examples are untagged (a digest only): nothing to deploy.
    for (path, event) in [
        (GITHUB_PACKAGE, "package"),
        (GITHUB_REGISTRY_PACKAGE, "registry_package"),
    ] {
        let body = fixture(path);
        let r = api.deliver(GITHUB_PATH, &github_headers(event, &body), body).await;
        assert_eq!(
            (r.status, r.body["ignored"].as_str()),
            (StatusCode::OK, Some("UNSUPPORTED_EVENT")),
            "{}",
            r.body
        );
        assert!(r.body["message"].as_str().unwrap().contains("untagged"), "{}", r.body);
    }

    let body = tagged(GITHUB_PACKAGE, "package", "1.4.0");
    let r = api.deliver(GITHUB_PATH, &github_headers("package", &body), body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // Only the registry that sent it matches.
    assert_eq!(outcome(&r), (pairs(&[("ghcr", "QUEUED")]), vec![]));
    assert_eq!(r.body["source"], "GITHUB_PACKAGES");
    assert_eq!(
        (r.body["registry"].as_str(), r.body["image_name"].as_str()),
        (Some("ghcr.io"), Some("codertocat/hello-world"))
    );
    let msgs = api.queued_messages().await;
    assert_eq!(
        msgs[0]["trigger"],
        json!({"type": "IMAGE_TAG", "source": "GITHUB_PACKAGES", "registry": "ghcr.io",
               "image_name": "codertocat/hello-world", "previous_tag": "1.3.0", "tag": "1.4.0"})
    );

    let body = tagged(GITHUB_REGISTRY_PACKAGE, "registry_package", "1.5.0");
    let r = api
        .deliver(GITHUB_PATH, &github_headers("registry_package", &body), body.clone())
        .await;
    assert_eq!(outcome(&r).0, pairs(&[("ghcr", "QUEUED")]));
    // A redelivery of the same body is a duplicate, whatever its delivery id.
    let r = api
        .deliver(GITHUB_PATH, &github_headers("registry_package", &body), body.clone())
        .await;
    assert_eq!(
        (r.status, &r.body["ignored"]),
        (StatusCode::OK, &json!("DUPLICATE_DELIVERY"))
    );
    // Another body announcing the same tag: the service already has it.
    let other = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    let r = api
        .deliver(GITHUB_PATH, &github_headers("registry_package", &other), other)
        .await;
    assert_eq!(
        (r.status, outcome(&r).1),
        (StatusCode::OK, pairs(&[("ghcr", "SAME_TAG")]))
    );

    // GitHub's form encoding, signed as sent.
    let json = tagged(GITHUB_PACKAGE, "package", "1.6.0");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish()
        .into_bytes();
    let mut headers = github_headers("package", &form);
    headers.push((
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned(),
    ));
    let req = headers.iter().fold(Request::post(GITHUB_PATH), |req, (k, v)| {
        req.header(k.as_str(), v.as_str())
    });
    let r = api.raw(req.body(Body::from(form)).unwrap()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // Pings and other events are answered, not deployed.
    let ping = br#"{"zen": "Keep it simple.", "hook_id": 1}"#.to_vec();
    let r = api.deliver(GITHUB_PATH, &github_headers("ping", &ping), ping).await;
    assert_eq!((r.status, r.body["ignored"].as_str()), (StatusCode::OK, Some("PING")));
    let push = fixture("github/gp-push.json");
    let r = api.deliver(GITHUB_PATH, &github_headers("push", &push), push).await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str()),
        (StatusCode::OK, Some("UNSUPPORTED_EVENT"))
    );
    let mut updated = fixture_json(GITHUB_PACKAGE);
    updated["action"] = json!("updated");
    let updated = serde_json::to_vec(&updated).unwrap();
    let r = api
        .deliver(GITHUB_PATH, &github_headers("package", &updated), updated)
        .await;
    assert_eq!(r.body["ignored"], "UNSUPPORTED_EVENT");
    // An npm package of the same name, as GitHub publishes the event (`"ecosystem": "docker"`
    // in it), is no image.
    container(
        &api,
        "npm-named",
        Some("ghcr.io"),
        "codertocat/hello-world-npm",
        "0.9.0",
    )
    .await;
    let npm = fixture(GITHUB_NPM_PACKAGE);
    let r = api.deliver(GITHUB_PATH, &github_headers("package", &npm), npm).await;
    assert_eq!(
        (r.status, r.body["ignored"].as_str()),
        (StatusCode::OK, Some("UNSUPPORTED_EVENT")),
        "{}",
        r.body
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("Not a container package"),
        "{}",
        r.body
    );
    assert_eq!(api.get_service("acme", "npm-named").await.body["image"]["tag"], "0.9.0");
    assert_eq!(api.deployments("acme").await.len(), 3);

    // Not the package shape, or no event header: 400.
    for (event, body) in [("package", b"{}".to_vec()), ("package", b"not json".to_vec())] {
        let r = api
            .deliver(GITHUB_PATH, &github_headers(event, &body), body.clone())
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
            "{body:?}"
        );
    }
    let body = tagged(GITHUB_PACKAGE, "package", "1.7.0");
    let headers: Vec<_> = github_headers("package", &body)
        .into_iter()
        .filter(|(k, _)| k != "x-github-event")
        .collect();
    let r = api.deliver(GITHUB_PATH, &headers, body).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
        "{}",
        r.body
    );
    assert_eq!(r.body["error"]["details"][0]["field"], "X-GitHub-Event", "{}", r.body);
    // A delivery id that is no id is refused as on the push route, not dropped.
    let body = tagged(GITHUB_PACKAGE, "package", "1.7.0");
    for id in ["x".repeat(201), "d-\u{e9}".to_owned()] {
        let headers: Vec<_> = github_headers("package", &body)
            .into_iter()
            .map(|(k, v)| {
                if k == "x-github-delivery" {
                    (k, id.clone())
                } else {
                    (k, v)
                }
            })
            .collect();
        let r = api.deliver(GITHUB_PATH, &headers, body.clone()).await;
        assert_eq!(
            (r.status, r.error_code(), &r.body["error"]["details"][0]["field"]),
            (
                StatusCode::BAD_REQUEST,
                "VALIDATION_FAILED",
                &json!("X-GitHub-Delivery")
            ),
            "{}",
            r.body
        );
    }
    assert_eq!(api.deployments("acme").await.len(), 3);
}

#[tokio::test]
async fn github_package_webhook_verifies_signatures() {
    let api = Api::new();
    container(&api, "ghcr", Some("ghcr.io"), "codertocat/hello-world", "1.3.0").await;
    let body = tagged(GITHUB_PACKAGE, "package", "1.4.0");
    // No secret configured: refused.
    let r = api
        .deliver(GITHUB_PATH, &github_headers("package", &body), body.clone())
        .await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    api.set_secret("acme", "github").await;

    let good = hmac_hex(WEBHOOK_SECRET, &body);
    let bad = hmac_hex("another-secret-entirely", &body);
    let cases = [
        s(&[("x-github-event", "package")]),
        s(&[
            ("x-github-event", "package"),
            ("x-hub-signature-256", &format!("sha256={bad}")),
        ]),
        s(&[("x-github-event", "package"), ("x-hub-signature-256", &good)]),
        s(&[
            ("x-github-event", "package"),
            ("x-hub-signature", "sha1=0123456789abcdef0123456789abcdef01234567"),
        ]),
        // A ping is verified too.
        s(&[("x-github-event", "ping")]),
    ];
    for headers in cases {
        let r = api.deliver(GITHUB_PATH, &headers, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        let text = String::from_utf8_lossy(&r.raw);
        assert!(!text.contains(WEBHOOK_SECRET) && !text.contains(&good));
    }
    // A signature over other bytes does not verify these.
    let mut tampered = body.clone();
    tampered.push(b' ');
    let r = api
        .deliver(GITHUB_PATH, &github_headers("package", &body), tampered)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The dockerhub secret is another slot: it does not open the GitHub webhook.
    let other = Api::new();
    other.set_secret("acme", "dockerhub").await;
    let r = other
        .deliver(GITHUB_PATH, &github_headers("package", &body), body.clone())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(api.deployments("acme").await.is_empty());

    let r = api.deliver(GITHUB_PATH, &github_headers("package", &body), body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}
