//! The deliveries history ("why didn't it deploy?") through the HTTP API, on both stores:
//! every outcome and every source recorded as SPEC shows it, the filters and pages, one
//! delivery by id, the webhook secret's last delivery, never a secret, signature or body; and
//! the flood bound (refused deliveries recorded at most 60 a minute, accepted ones always).

use std::collections::BTreeMap;

use autodeploy_tests::{
    ADMIN, Api, GITHUB_REPO, PUSHES, Reply, WEBHOOK_SECRET, fixture, fixture_json, github_signature, on_both_stores,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};

on_both_stores! {
    git_pushes_are_recorded_with_every_outcome, every_git_provider_is_recorded,
    image_tags_and_registry_webhooks_are_recorded, filters_pages_and_one_delivery,
    a_flood_of_bad_signatures_leaves_the_history_usable, refusals_of_names_nobody_set_up_share_one_budget,
    a_replay_is_recorded_in_the_answers_order, image_tags_racing_service_writes_are_recorded_as_answered,
    a_refused_deliverys_id_is_kept_only_as_an_id,
}

/// Anyone can send a refused delivery, with any delivery id: the history keeps that id only
/// when it reads as one, never a sentence someone wrote into the organization's history.
async fn a_refused_deliverys_id_is_kept_only_as_an_id(api: Api) {
    api.set_secret("acme", "github").await;
    let body = github_push(|_| {});
    let spoof = "spoof: please rotate your secret at https://evil.example/";
    let uuid = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    for delivery in [spoof, uuid] {
        let r = github(
            &api,
            "",
            "push",
            delivery,
            Some("not-the-secret-0123456789"),
            body.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let listed = all(&api, "acme", "").await;
    let ids: Vec<&Value> = listed.iter().map(|d| &d["delivery_id"]).collect();
    assert_eq!(ids, [&json!(uuid), &Value::Null], "newest first: {listed:?}");
    assert!(listed.iter().all(|d| d["outcome"] == "REJECTED"));
}

/// Every refusal is recorded (SPEC), a name nobody set up included, but such names share one
/// budget: 60 a minute for all of them together, or inventing organization names would grow
/// the store without bound. An organization set up keeps its own.
async fn refusals_of_names_nobody_set_up_share_one_budget(api: Api) {
    let body = github_push(|_| {});
    let headers = vec![
        ("x-github-event".to_owned(), "push".to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            github_signature("some-secret-0123456789", &body),
        ),
    ];
    let first = api
        .deliver("/organization/ghost/webhooks/github", &headers, body.clone())
        .await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED, "{}", first.body);
    let listed = all(&api, "ghost", "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["outcome"], "REJECTED");
    assert_eq!(listed[0]["reason"], first.body["error"]["message"]);
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no github secret is configured"),
        "{listed:?}"
    );

    // 130 more names, sent within two minutes at most: those recorded in any one minute are
    // at most the budget (with a budget of their own, every one of the 131 would be).
    for i in 0..130 {
        let path = format!("/organization/ghost-{i}/webhooks/github");
        let r = api.deliver(&path, &headers, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let mut by_minute: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for org in std::iter::once("ghost".to_owned()).chain((0..130).map(|i| format!("ghost-{i}"))) {
        for record in all(&api, &org, "").await {
            let minute = record["received_at"].as_str().unwrap()[..16].to_owned();
            *by_minute.entry(minute).or_default() += 1;
        }
    }
    assert!(by_minute.values().all(|&n| n <= 60), "{by_minute:?}");
    assert!(by_minute.values().sum::<usize>() <= 120, "{by_minute:?}");
    // acme, set up, is not held to the invented names' budget.
    api.app("acme", "svc", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let r = api.deliver(HOOK, &headers, body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let listed = all(&api, "acme", "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["outcome"], "REJECTED");
}

const HOOK: &str = "/organization/acme/webhooks/github";
/// The fields of a delivery, every one always present (SPEC).
const FIELDS: [&str; 15] = [
    "branch",
    "commit_sha",
    "delivery_id",
    "dry_run",
    "http_status",
    "id",
    "image",
    "outcome",
    "queued",
    "reason",
    "received_at",
    "repository",
    "skipped",
    "source",
    "tag",
];

/// A page of `org`'s deliveries (`query` e.g. `?outcome=REJECTED`): its items and cursor.
async fn page(api: &Api, org: &str, query: &str) -> (Vec<Value>, Option<String>) {
    let r = api.admin_get(&format!("/organization/{org}/deliveries{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().unwrap().clone();
    for item in &items {
        well_formed(item);
    }
    (items, r.body["next_cursor"].as_str().map(str::to_owned))
}

/// Every delivery of `org` matching `filter` (`source=…&outcome=…` or ""), newest first,
/// through every page.
async fn all(api: &Api, org: &str, filter: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=100&{filter}&cursor={c}"),
            None => format!("?limit=100&{filter}"),
        };
        let (items, next) = page(api, org, &query).await;
        out.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// SPEC's fields, nothing else; an id of 32 lowercase hex; no secret of the tests anywhere.
fn well_formed(delivery: &Value) {
    let mut fields: Vec<&str> = delivery.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, FIELDS, "{delivery}");
    let id = delivery["id"].as_str().unwrap();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let text = delivery.to_string();
    for secret in [WEBHOOK_SECRET, ADMIN, "wrong-secret-0123456789", "sha256="] {
        assert!(!text.contains(secret), "{secret} in {delivery}");
    }
}

/// `(source, outcome, http_status)` of each delivery.
fn summary(deliveries: &[Value]) -> Vec<(String, String, u64)> {
    deliveries
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
                d["http_status"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `(delivery_id, http_status, outcome)` of each delivery, as a log of answers reads.
fn answers(deliveries: &[Value]) -> Vec<(&str, u64, &str)> {
    deliveries.iter().map(answer).collect()
}

fn answer(d: &Value) -> (&str, u64, &str) {
    let id = d["delivery_id"].as_str().unwrap_or("");
    (id, d["http_status"].as_u64().unwrap(), d["outcome"].as_str().unwrap())
}

fn triple(source: &str, outcome: &str, status: u16) -> (String, String, u64) {
    (source.to_owned(), outcome.to_owned(), u64::from(status))
}

/// The GitHub push fixture (master of binkkatal/sample_app), edited.
fn github_push(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    edit(&mut body);
    serde_json::to_vec(&body).unwrap()
}

/// A GitHub delivery of `body` as event `event`, signed with `secret` (none: unsigned).
async fn github(api: &Api, query: &str, event: &str, delivery: &str, secret: Option<&str>, body: Vec<u8>) -> Reply {
    let mut headers = vec![
        ("x-github-event".to_owned(), event.to_owned()),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
    ];
    if let Some(secret) = secret {
        headers.push(("x-hub-signature-256".to_owned(), github_signature(secret, &body)));
    }
    api.deliver(&format!("{HOOK}{query}"), &headers, body).await
}

async fn secret_status(api: &Api, provider: &str) -> Value {
    let r = api
        .admin_get(&format!("/organization/acme/webhook-secrets/{provider}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn git_pushes_are_recorded_with_every_outcome(api: Api) {
    let push = github_push(|_| {});
    // Refused: no secret yet (for an organization with a service: one nobody set up records
    // nothing), then a wrong signature, none, a body that is no push.
    api.app("acme", "svc", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let r = github(&api, "", "push", "d-nosecret", Some(WEBHOOK_SECRET), push.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Before any secret, the status says so, and no delivery of this provider yet...
    assert_eq!(secret_status(&api, "gitlab").await["last_delivery_at"], Value::Null);
    api.set_secret("acme", "github").await;
    api.app(
        "acme",
        "off",
        "GITHUB",
        GITHUB_REPO,
        "master",
        json!({"auto_deploy": false}),
    )
    .await;
    let bad_reply = github(&api, "", "push", "d-bad", Some("wrong-secret-0123456789"), push.clone()).await;
    assert_eq!(bad_reply.status, StatusCode::UNAUTHORIZED);
    let unsigned_reply = github(&api, "", "push", "d-unsigned", None, push.clone()).await;
    assert_eq!(unsigned_reply.status, StatusCode::UNAUTHORIZED);
    let not_push_reply = github(&api, "", "push", "d-notpush", Some(WEBHOOK_SECRET), b"[1, 2]".to_vec()).await;
    assert_eq!(not_push_reply.status, StatusCode::BAD_REQUEST);
    // Queued (one service skipped), then the same delivery again.
    let queued = github(&api, "", "push", "d-queued", Some(WEBHOOK_SECRET), push.clone()).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    let again = github(&api, "", "push", "d-queued", Some(WEBHOOK_SECRET), push.clone()).await;
    assert_eq!(again.body["ignored"], "DUPLICATE_DELIVERY", "{}", again.body);
    // A dry run of a new commit; a branch nobody follows; a tag push; a ping.
    let next = github_push(|b| {
        b["before"] = b["after"].clone();
        b["after"] = json!("1111111111111111111111111111111111111111");
    });
    let dry = github(&api, "?dry_run=true", "push", "d-dry", Some(WEBHOOK_SECRET), next).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    let other = github_push(|b| b["ref"] = json!("refs/heads/feature/x"));
    let nothing_reply = github(&api, "", "push", "d-nothing", Some(WEBHOOK_SECRET), other).await;
    assert_eq!(nothing_reply.status, StatusCode::OK, "{}", nothing_reply.body);
    let tag = github_push(|b| b["ref"] = json!("refs/tags/v1.0.0"));
    github(&api, "", "push", "d-tag", Some(WEBHOOK_SECRET), tag).await;
    github(
        &api,
        "",
        "ping",
        "d-ping",
        Some(WEBHOOK_SECRET),
        fixture("github/gp-ping.json"),
    )
    .await;

    let listed = all(&api, "acme", "").await;
    assert!(listed.iter().all(|d| d["source"] == "github"), "{listed:#?}");
    assert_eq!(
        answers(&listed),
        [
            ("d-ping", 200, "IGNORED"),
            ("d-tag", 200, "IGNORED"),
            ("d-nothing", 200, "NOTHING_TO_DEPLOY"),
            ("d-dry", 200, "NOTHING_TO_DEPLOY"),
            ("d-queued", 200, "DUPLICATE"),
            ("d-queued", 202, "QUEUED"),
            ("d-notpush", 400, "REJECTED"),
            ("d-unsigned", 401, "REJECTED"),
            ("d-bad", 401, "REJECTED"),
            ("d-nosecret", 401, "REJECTED"),
        ]
    );
    let [
        ping,
        tag,
        nothing,
        dry,
        duplicate,
        queued_record,
        not_push,
        unsigned,
        bad,
        no_secret,
    ] = &listed[..]
    else {
        unreachable!()
    };
    // Refused: the reason the sender was given, nothing of what it sent.
    for (record, answer) in [
        (not_push, &not_push_reply.body),
        (unsigned, &unsigned_reply.body),
        (bad, &bad_reply.body),
    ] {
        assert_eq!(record["reason"], answer["error"]["message"], "{record}");
        assert_eq!(record["repository"], Value::Null);
        assert_eq!((&record["queued"], &record["skipped"]), (&json!([]), &json!([])));
    }
    // Each in the words SPEC gives for it.
    for (record, words) in [
        (no_secret, "no github secret is configured"),
        (bad, "signature does not match"),
        (unsigned, "X-Hub-Signature-256 header missing"),
        (not_push, "body is not a push payload"),
    ] {
        assert!(record["reason"].as_str().unwrap().contains(words), "{words}: {record}");
    }

    // Queued: what, where, which deployment, which service skipped and why.
    let deployment_id = &queued.body["queued"][0]["deployment_id"];
    assert_eq!(queued_record["queued"], json!([deployment_id]));
    assert_eq!(
        queued_record["skipped"],
        json!([{"service_id": "off", "reason": "AUTO_DEPLOY_DISABLED"}])
    );
    assert_eq!(queued_record["repository"], "github.com/binkkatal/sample_app");
    assert_eq!(queued_record["branch"], "master");
    assert_eq!(queued_record["commit_sha"], "fd489864e7642b48eaad6e3f155c10e46810ec72");
    assert_eq!(queued_record["reason"], "1 deployment queued.");
    assert_eq!(queued_record["dry_run"], false);
    assert_eq!(
        (&queued_record["image"], &queued_record["tag"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(duplicate["queued"], json!([]));
    // The dry run is recorded as such, saying what it would have done.
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["queued"], json!([]));
    assert_eq!(dry["reason"], "Dry run: 1 deployment would be queued; nothing was.");
    assert_eq!(dry["commit_sha"], "1111111111111111111111111111111111111111");
    // Nothing to deploy, explained as the answer explained it.
    assert_eq!(nothing["reason"], nothing_reply.body["message"]);
    assert!(
        nothing["reason"]
            .as_str()
            .unwrap()
            .starts_with("No service of organization acme follows"),
        "{nothing}"
    );
    assert_eq!(nothing["branch"], "feature/x");
    for ignored in [ping, tag] {
        assert!(!ignored["reason"].as_str().unwrap().is_empty(), "{ignored}");
    }

    // The secret's status: its last delivery, at a glance.
    let status = secret_status(&api, "github").await;
    assert_eq!(status["last_delivery_at"], ping["received_at"]);
    assert_eq!(status["last_outcome"], "IGNORED");
    assert_eq!(secret_status(&api, "gitlab").await["last_outcome"], Value::Null);

    // A dry run that would deploy nothing says it was a dry run too.
    let replayed = github(&api, "?dry_run=true", "push", "d-dry-again", Some(WEBHOOK_SECRET), push).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    let newest = all(&api, "acme", "").await.remove(0);
    assert_eq!(newest["dry_run"], true, "{newest}");
    let reason = newest["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Dry run: ") && reason.contains("ALREADY_QUEUED"),
        "{reason}"
    );
}

/// Each push in an organization of its own.
async fn every_git_provider_is_recorded(api: Api) {
    for (i, (provider, path)) in PUSHES.iter().copied().enumerate() {
        let org = format!("org-{i}");
        let org = org.as_str();
        api.set_secret(org, provider).await;
        let mut body = fixture_json(path);
        if provider == "bitbucket-server" {
            // The fixture deletes its branch; make it an update.
            body["changes"][0]["type"] = json!("UPDATE");
            body["changes"][0]["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
        }
        let body = serde_json::to_vec(&body).unwrap();
        let r = api.push(org, provider, &body, &format!("d-{provider}")).await;
        assert_eq!(r.status, StatusCode::OK, "{provider}: {}", r.body);
        let (items, _) = page(&api, org, &format!("?source={provider}")).await;
        let [record] = &items[..] else {
            panic!("{provider}: {items:?}")
        };
        assert_eq!(record["http_status"], 200, "{provider}");
        // As the answer said: what was pushed where, and why nothing deployed.
        for field in ["repository", "branch", "commit_sha"] {
            assert_eq!(record[field], r.body[field], "{provider}: {field}");
        }
        assert!(record["repository"].is_string(), "{provider}: {record}");
        if let Some(ignored) = r.body["ignored"].as_str() {
            assert_eq!(record["outcome"], "IGNORED", "{provider}: {ignored}");
        } else {
            assert_eq!(record["outcome"], "NOTHING_TO_DEPLOY", "{provider}");
            assert_eq!(record["reason"], r.body["message"], "{provider}");
        }
        let status = api
            .call(
                Method::GET,
                &format!("/organization/{org}/webhook-secrets/{provider}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status.body["last_delivery_at"], record["received_at"]);
        // That one only.
        assert_eq!(all(&api, org, "").await.len(), 1);
    }
}

async fn image_service(api: &Api, id: &str, kind: &str, registry: Option<&str>, tag: &str) {
    let r = api
        .put_service(
            "acme",
            id,
            json!({"environment_id": "production", "kind": kind, "auto_deploy": true,
                "image": {"registry": registry, "image_name": "acme/api", "tag": tag}}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
}

async fn image_tags_and_registry_webhooks_are_recorded(api: Api) {
    image_service(&api, "web", "CONTAINER", Some("ghcr.io"), "1.3.0").await;
    image_service(&api, "migrate", "JOB", Some("ghcr.io"), "1.3.0").await;
    image_service(&api, "hub", "CONTAINER", Some("docker.io"), "v2.4.0").await;
    let deploy = |kind: &'static str, token: Option<&'static str>, body: Value| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/organization/acme/{kind}/deploy"),
                token,
                Some(body),
            )
            .await
        }
    };
    let tag = json!({"image_name": "ghcr.io/acme/api", "tag": "1.4.0"});
    assert_eq!(
        deploy("container", Some(ADMIN), tag.clone()).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        deploy("job", Some(ADMIN), tag.clone()).await.status,
        StatusCode::ACCEPTED
    );
    let bad_tag = json!({"image_name": "acme/api", "tag": "-no"});
    assert_eq!(
        deploy("container", Some(ADMIN), bad_tag).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(deploy("job", None, tag).await.status, StatusCode::UNAUTHORIZED);
    let dry_run = "/organization/acme/container/deploy?dry_run=true";
    let next_tag = json!({"image_name": "ghcr.io/acme/api", "tag": "1.5.0"});
    let dry = api.call(Method::POST, dry_run, Some(ADMIN), Some(next_tag)).await;
    assert_eq!(dry.status, StatusCode::OK);

    // Docker Hub, its secret in the URL: never recorded, the right one nor a wrong one.
    api.set_secret("acme", "dockerhub").await;
    let hub = |secret: &str| format!("/organization/acme/registry-webhooks/dockerhub/{secret}");
    let r = api
        .deliver(&hub(WEBHOOK_SECRET), &[], fixture("registry/dockerhub-push.json"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = api
        .deliver(
            &hub("wrong-secret-0123456789"),
            &[],
            fixture("registry/dockerhub-push.json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // GitHub Packages: an untagged version (ignored), a wrong signature.
    api.set_secret("acme", "github").await;
    let package = fixture("registry/github-package-published.docker.json");
    for (secret, delivery) in [(WEBHOOK_SECRET, "p-good"), ("wrong-secret-0123456789", "p-bad")] {
        let headers = vec![
            ("x-github-event".to_owned(), "package".to_owned()),
            ("x-github-delivery".to_owned(), delivery.to_owned()),
            ("x-hub-signature-256".to_owned(), github_signature(secret, &package)),
        ];
        api.deliver("/organization/acme/registry-webhooks/github", &headers, package.clone())
            .await;
    }

    let listed = all(&api, "acme", "").await;
    assert_eq!(
        summary(&listed),
        vec![
            triple("github-packages", "REJECTED", 401),
            triple("github-packages", "IGNORED", 200),
            triple("dockerhub", "REJECTED", 401),
            triple("dockerhub", "QUEUED", 202),
            triple("container-api", "NOTHING_TO_DEPLOY", 200),
            triple("job-api", "REJECTED", 401),
            triple("container-api", "REJECTED", 400),
            triple("job-api", "QUEUED", 202),
            triple("container-api", "QUEUED", 202),
        ]
    );
    let [packages_bad, packages, hub_bad, hub, dry_record, _, _, job, container] = &listed[..] else {
        unreachable!()
    };
    for (record, service) in [(container, "web"), (job, "migrate")] {
        assert_eq!(
            (&record["image"], &record["tag"]),
            (&json!("ghcr.io/acme/api"), &json!("1.4.0"))
        );
        assert_eq!(record["queued"].as_array().unwrap().len(), 1, "{record}");
        assert_eq!(record["skipped"], json!([]), "{service}");
        assert_eq!((&record["repository"], &record["branch"]), (&Value::Null, &Value::Null));
    }
    assert_eq!(dry_record["dry_run"], true);
    assert_eq!(dry_record["tag"], "1.5.0");
    assert_eq!(
        (&hub["image"], &hub["tag"]),
        (&json!("docker.io/acme/api"), &json!("v2.4.1"))
    );
    assert_eq!(hub["queued"].as_array().unwrap().len(), 1);
    for record in [hub_bad, packages_bad] {
        assert!(!record["reason"].as_str().unwrap().is_empty(), "{record}");
    }
    assert!(packages["reason"].as_str().unwrap().contains("untagged"), "{packages}");
    // Which image was not deployed: the package's, with no tag.
    assert_eq!(
        (&packages["image"], &packages["tag"]),
        (&json!("ghcr.io/codertocat/hello-world"), &Value::Null),
        "{packages}"
    );
    assert_eq!(packages["delivery_id"], "p-good");
    assert_eq!(packages_bad["delivery_id"], "p-bad");
    // Filters by source: GitHub Packages apart from git pushes.
    assert_eq!(all(&api, "acme", "source=github").await, Vec::<Value>::new());
    assert_eq!(all(&api, "acme", "source=github-packages").await.len(), 2);
    assert_eq!(all(&api, "acme", "source=dockerhub").await.len(), 2);
    let status = secret_status(&api, "dockerhub").await;
    assert_eq!(
        (&status["last_delivery_at"], &status["last_outcome"]),
        (&hub_bad["received_at"], &json!("REJECTED"))
    );
}

async fn filters_pages_and_one_delivery(api: Api) {
    api.set_secret("acme", "github").await;
    api.set_secret("acme", "gitlab").await;
    let gitlab = fixture("gitlab/gp-push-event.json");
    for i in 0..3 {
        api.push("acme", "github", &github_push(|_| {}), &format!("gh-{i}"))
            .await;
        api.push("acme", "gitlab", &gitlab, &format!("gl-{i}")).await;
        github(&api, "", "push", &format!("bad-{i}"), None, github_push(|_| {})).await;
    }
    let everything = all(&api, "acme", "").await;
    assert_eq!(everything.len(), 9);

    // Pages of 2 walk the same list, newest first, each delivery once.
    let mut walked = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (items, next) = page(&api, "acme", &query).await;
        assert!(items.len() <= 2);
        walked.extend(items);
        match next {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, everything);
    let ids: Vec<&str> = everything.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    // Filters, alone and together; an empty one is none.
    let count = |filter: &'static str| {
        let api = &api;
        async move { all(api, "acme", filter).await }
    };
    assert_eq!(count("source=gitlab").await.len(), 3);
    assert_eq!(count("outcome=REJECTED").await.len(), 3);
    assert_eq!(count("source=github&outcome=REJECTED").await.len(), 3);
    assert_eq!(count("source=gitlab&outcome=REJECTED").await.len(), 0);
    assert_eq!(count("source=github&outcome=NOTHING_TO_DEPLOY").await.len(), 3);
    assert_eq!(count("source=github&outcome=DUPLICATE").await.len(), 0);
    assert_eq!(count("source=&outcome=").await, everything);
    let rejected = count("outcome=REJECTED").await;
    assert!(rejected.iter().all(|d| d["outcome"] == "REJECTED"));
    // A filtered page of one still finds the older matches behind newer others.
    let (items, next) = page(&api, "acme", "?limit=1&source=gitlab&outcome=NOTHING_TO_DEPLOY").await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(next.is_some());
    for query in ["?source=nope", "?outcome=queued", "?outcome=OK", "?limit=0"] {
        let r = api.admin_get(&format!("/organization/acme/deliveries{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
    }

    // One by id, as listed; another organization's, or no id, is not found.
    for delivery in &everything {
        let path = format!("/organization/acme/deliveries/{}", delivery["id"].as_str().unwrap());
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body, delivery);
    }
    let id = everything[0]["id"].as_str().unwrap();
    for path in [
        format!("/organization/other/deliveries/{id}"),
        format!("/organization/acme/deliveries/{}", id.to_uppercase()),
        "/organization/acme/deliveries/gh-0".to_owned(),
        format!("/organization/acme/deliveries/{}", "0".repeat(32)),
    ] {
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // The manage scope reads them; deploy does not, nor no token.
    let deploy = api.token("acme", &["deploy"]).await;
    let manage = api.token("acme", &["manage"]).await;
    let list = "/organization/acme/deliveries";
    assert_eq!(
        api.call(Method::GET, list, Some(&manage), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::GET, list, Some(&deploy), None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(Method::GET, list, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_flood_of_bad_signatures_leaves_the_history_usable(api: Api) {
    api.set_secret("acme", "github").await;
    api.app("acme", "svc", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let queued = api.push("acme", "github", &github_push(|_| {}), "good-1").await;
    assert_eq!(queued.status, StatusCode::ACCEPTED);
    let nothing = github_push(|b| b["ref"] = json!("refs/heads/feature/x"));
    assert_eq!(
        api.push("acme", "github", &nothing, "good-2").await.status,
        StatusCode::OK
    );
    for i in 0..1000 {
        let r = github(
            &api,
            "",
            "push",
            &format!("flood-{i}"),
            Some("wrong-secret-0123456789"),
            github_push(|_| {}),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // An accepted delivery after the flood is recorded all the same.
    let after = github_push(|b| {
        b["before"] = b["after"].clone();
        b["after"] = json!("2222222222222222222222222222222222222222");
    });
    assert_eq!(
        api.push("acme", "github", &after, "good-3").await.status,
        StatusCode::ACCEPTED
    );

    let listed = all(&api, "acme", "").await;
    let rejected: Vec<&Value> = listed.iter().filter(|d| d["outcome"] == "REJECTED").collect();
    // At most 60 in any minute (the flood may straddle two).
    let mut per_minute: BTreeMap<String, usize> = BTreeMap::new();
    for d in &rejected {
        *per_minute
            .entry(d["received_at"].as_str().unwrap()[..16].to_owned())
            .or_default() += 1;
    }
    assert!(!rejected.is_empty());
    assert!(per_minute.values().all(|&n| n <= 60), "{per_minute:?}");
    let good: Vec<&str> = listed
        .iter()
        .filter(|d| d["outcome"] != "REJECTED")
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(good, ["good-3", "good-2", "good-1"]);
    let (first, _) = page(&api, "acme", "?outcome=QUEUED&limit=10").await;
    assert_eq!(first.len(), 2);
}

/// A push whose deployment the store fails to write: answered 503 and recorded `ERROR`, alone,
/// with the reason answered; once `heal` repairs the store, the redelivery queues.
async fn a_failed_write_is_an_error(api: &Api, heal: impl FnOnce()) {
    let r = api.push("acme", "github", &github_push(|_| {}), "d-error").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let listed = all(api, "acme", "").await;
    assert_eq!(summary(&listed), [triple("github", "ERROR", 503)]);
    let record = &listed[0];
    assert_eq!(record["delivery_id"], "d-error");
    assert_eq!(record["queued"], json!([]));
    assert_eq!(record["reason"], r.body["error"]["message"]);
    assert!(!record["reason"].as_str().unwrap().contains("injected"), "{record}");
    heal();
    let r = api.push("acme", "github", &github_push(|_| {}), "d-error").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        summary(&all(api, "acme", "").await),
        [triple("github", "QUEUED", 202), triple("github", "ERROR", 503)]
    );
}

/// On SQLite, a second connection makes the deployment's insert fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_recorded_as_an_error() {
    let api = Api::new();
    api.set_secret("acme", "github").await;
    api.app("acme", "svc", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let conn = rusqlite::Connection::open(api.sqlite_path().unwrap()).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER fail_deployments BEFORE INSERT ON deployments
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    a_failed_write_is_an_error(&api, || {
        conn.execute_batch("DROP TRIGGER fail_deployments;").unwrap();
    })
    .await;
}

/// On DynamoDB, moto behind a fault proxy refuses every `TransactWriteItems`; the delivery is
/// still recorded, by its own write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_recorded_as_an_error_on_dynamodb() {
    use autodeploy_tests::fault_proxy::{Fault, FaultyAws, action};

    let aws = FaultyAws::new().await;
    let api = Api::on(aws.store.clone(), aws.queue.clone());
    api.set_secret("acme", "github").await;
    api.app("acme", "svc", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    aws.store_proxy
        .set(Fault::unavailable().only(action::TRANSACT_WRITE_ITEMS));
    a_failed_write_is_an_error(&api, || {
        assert!(aws.store_proxy.failed(action::TRANSACT_WRITE_ITEMS) > 0);
        aws.store_proxy.pass_through();
    })
    .await;
}

/// `(service_id, reason)` of each skipped entry, of an answer or a history record alike.
fn skipped_of(entries: &Value) -> Vec<(String, String)> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service_id"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A replayed push skips the services that queued it `ALREADY_QUEUED`, among the others the
/// plan skipped: the history lists them in the order the answer does, not those last.
async fn a_replay_is_recorded_in_the_answers_order(api: Api) {
    api.set_secret("acme", "github").await;
    api.app("acme", "a-web", "GITHUB", GITHUB_REPO, "master", json!({}))
        .await;
    let off = json!({"auto_deploy": false});
    api.app("acme", "b-off", "GITHUB", GITHUB_REPO, "master", off).await;
    api.app("acme", "c-api", "GITHUB", GITHUB_REPO, "master", json!({}))
        .await;
    let push = github_push(|_| {});
    let first = github(&api, "", "push", "d-first", Some(WEBHOOK_SECRET), push.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let replay = github(&api, "", "push", "d-replay", Some(WEBHOOK_SECRET), push).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    let expected: Vec<(String, String)> = [
        ("a-web", "ALREADY_QUEUED"),
        ("b-off", "AUTO_DEPLOY_DISABLED"),
        ("c-api", "ALREADY_QUEUED"),
    ]
    .iter()
    .map(|(id, reason)| ((*id).to_owned(), (*reason).to_owned()))
    .collect();
    assert_eq!(skipped_of(&replay.body["skipped"]), expected, "{}", replay.body);
    let listed = all(&api, "acme", "").await;
    let record = listed.iter().find(|d| d["delivery_id"] == "d-replay").unwrap();
    assert_eq!(skipped_of(&record["skipped"]), expected, "{record}");
    assert_eq!(record["outcome"], "NOTHING_TO_DEPLOY", "{record}");
}

/// An image announced while its service is being written: when the write finds the service
/// changed since it was read, the announcement decides again, and the history still says what
/// the answer said (the deployment queued on the second try, not `ALREADY_QUEUED`).
async fn image_tags_racing_service_writes_are_recorded_as_answered(api: Api) {
    const ROUNDS: usize = 12;
    image_service(&api, "web", "CONTAINER", Some("ghcr.io"), "1.0.0").await;
    image_service(&api, "zz-old", "CONTAINER", Some("ghcr.io"), "1.0.0").await;
    let mut answers = BTreeMap::new();
    for i in 0..ROUNDS {
        let tag = format!("2.0.{i}");
        let announce = json!({"image_name": "ghcr.io/acme/api", "tag": tag});
        let rename = json!({"name": format!("web {i}")});
        let (announced, renamed) = tokio::join!(
            api.call(
                Method::POST,
                "/organization/acme/container/deploy",
                Some(ADMIN),
                Some(announce)
            ),
            api.call(
                Method::PATCH,
                "/organization/acme/services/web",
                Some(ADMIN),
                Some(rename)
            ),
        );
        assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
        assert_eq!(announced.status, StatusCode::ACCEPTED, "{}", announced.body);
        answers.insert(tag, announced.body);
    }
    for record in all(&api, "acme", "source=container-api").await {
        let answer = &answers[record["tag"].as_str().unwrap()];
        let queued: Vec<&Value> = answer["queued"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| &q["deployment_id"])
            .collect();
        assert_eq!(record["queued"], json!(queued), "{record} against {answer}");
        assert_eq!(
            skipped_of(&record["skipped"]),
            skipped_of(&answer["skipped"]),
            "{record}"
        );
        assert_eq!(
            (&record["outcome"], &record["http_status"]),
            (&json!("QUEUED"), &json!(202)),
            "{record}"
        );
    }
}
