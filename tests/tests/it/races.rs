//! Races, on both backends (SQLite in-process; DynamoDB + SQS FIFO on moto): concurrent
//! distinct pushes lose nothing and duplicate nothing, and a PATCH racing a push is never
//! lost, never turns into an error, and the push's outcome agrees with what was recorded;
//! writes to one service, one deploy target or one image at once all land, none a 503; a
//! deploy target is never deleted while a service names it. (README "Proof: faults, races,
//! durability, load".)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use autodeploy_tests::{ADMIN, Api, GITHUB_REPO, fixture_json, on_both_stores, outcome};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const PUSHES: usize = 20;
const SERVICES: usize = 3;

/// The real GitHub push fixture, moved to commit `after`.
fn push_to(after: &str) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    body["after"] = json!(after);
    body["head_commit"]["id"] = json!(after);
    body["commits"][0]["id"] = json!(after);
    serde_json::to_vec(&body).unwrap()
}

/// A 40-hex commit id, distinct per `(round, i)`.
fn commit(round: usize, i: usize) -> String {
    format!("{round:08x}{i:08x}{:024x}", 0xabcdefu64)
}

/// The API with `acme`'s GitHub webhook secret set, shared by concurrent tasks.
async fn with_github_secret(api: Api) -> Arc<Api> {
    api.set_secret("acme", "github").await;
    Arc::new(api)
}

on_both_stores! {
    worker_threads = 4;
    distinct_concurrent_pushes_each_deploy_every_service, a_patch_racing_a_push_is_never_lost,
    writes_to_one_service_at_once_all_land, tags_of_one_image_at_once_all_deploy,
    a_target_is_never_deleted_while_a_service_names_it,
}

/// Every deployment of `org`, all pages, newest first.
async fn all_deployments(api: &Api, org: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/organization/{org}/deployments?limit=7{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        items.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

/// N distinct pushes at once to one repository followed by three services: exactly one
/// deployment per (push, service), each reply listing its three, and the log holding exactly
/// the deployment ids the replies handed out.
async fn distinct_concurrent_pushes_each_deploy_every_service(api: Api) {
    let api = with_github_secret(api).await;
    let services: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}")).collect();
    for id in &services {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    let tasks: Vec<_> = (0..PUSHES)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let after = commit(1, i);
                let r = api
                    .push("acme", "github", &push_to(&after), &format!("delivery-{i}"))
                    .await;
                (after, r)
            })
        })
        .collect();
    let mut handed_out = BTreeSet::new();
    // What each reply said of its deployment: QUEUED, or PENDING when the queue was too slow
    // to take it within its budget (SPEC: the relay sends it later) — a loaded machine's moto.
    let mut answered = std::collections::BTreeMap::new();
    for task in tasks {
        let (after, r) = task.await.unwrap();
        assert_eq!(r.status, StatusCode::ACCEPTED, "{after}: {}", r.body);
        let (queued, skipped) = outcome(&r);
        let reached: Vec<&String> = queued.iter().map(|(service, _)| service).collect();
        assert_eq!(reached, services.iter().collect::<Vec<_>>(), "{after}");
        assert!(
            queued
                .iter()
                .all(|(_, status)| status == "QUEUED" || status == "PENDING"),
            "{after}: {queued:?}"
        );
        assert!(skipped.is_empty(), "{after}: {}", r.body);
        for q in r.body["queued"].as_array().unwrap() {
            assert_eq!(q["commit_sha"], after.as_str());
            let id = q["deployment_id"].as_str().unwrap().to_owned();
            answered.insert(id.clone(), q["status"].clone());
            assert!(handed_out.insert(id));
        }
    }
    assert_eq!(handed_out.len(), PUSHES * SERVICES);

    let log = all_deployments(&api, "acme", "").await;
    assert_eq!(log.len(), PUSHES * SERVICES, "no loss, no duplicate");
    let logged: BTreeSet<String> = log
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged, handed_out);
    // One per (push, service).
    let pairs: BTreeSet<(String, String)> = log
        .iter()
        .map(|d| {
            (
                d["git_commit_id"].as_str().unwrap().to_owned(),
                d["service_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(pairs.len(), PUSHES * SERVICES);
    for d in &log {
        assert_eq!(d["status"], answered[d["deployment_id"].as_str().unwrap()], "{d}");
    }
    // Per service too, through the filtered listing.
    for id in &services {
        assert_eq!(
            all_deployments(&api, "acme", &format!("&service_id={id}")).await.len(),
            PUSHES
        );
    }
}

/// `PATCH {"auto_deploy": false}` racing a push, `ROUNDS` times on fresh services: the
/// PATCH always succeeds and is never lost (final document: auto_deploy false, version bumped
/// exactly once, everything else unchanged); the push is a 202 QUEUED (it read the service
/// before the PATCH) or a 200 AUTO_DEPLOY_DISABLED, never an error; exactly as many
/// deployments exist as the push said it queued.
async fn a_patch_racing_a_push_is_never_lost(api: Api) {
    // Each backend's `step` for the sweep below.
    let (backend, step) = if api.sqlite.is_some() {
        ("SQLite", Duration::from_micros(300))
    } else {
        ("DynamoDB", Duration::from_millis(4))
    };
    let api = with_github_secret(api).await;
    const ROUNDS: usize = 16;
    let mut queued_rounds = 0;
    for round in 0..ROUNDS {
        let id = format!("race-{round:02}");
        let created = api.app("acme", &id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
        let before = created.body.clone();
        let version = before["version"].as_u64().expect("a version");
        // Services of earlier rounds are switched off, so each round's push concerns `id`.
        let path = format!("/organization/acme/services/{id}");
        // Alternate which request starts first; on odd rounds the PATCH also starts a little
        // later each time (`step` more per round), sweeping across the push's reads and
        // writes, so that both orders happen on either backend.
        let delay = if round % 2 == 1 {
            step * (round as u32 / 2)
        } else {
            Duration::ZERO
        };
        let start_patch = {
            let api = Arc::clone(&api);
            let path = path.clone();
            move || {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    api.call(Method::PATCH, &path, Some(ADMIN), Some(json!({"auto_deploy": false})))
                        .await
                })
            }
        };
        let start_push = {
            let api = Arc::clone(&api);
            move || {
                tokio::spawn(async move {
                    api.push(
                        "acme",
                        "github",
                        &push_to(&commit(2, round)),
                        &format!("race-delivery-{round}"),
                    )
                    .await
                })
            }
        };
        let (patch, push) = if round % 2 == 1 {
            let push = start_push();
            (start_patch(), push)
        } else {
            let patch = start_patch();
            (patch, start_push())
        };
        let (patch, push) = (patch.await.unwrap(), push.await.unwrap());
        assert_eq!(patch.status, StatusCode::OK, "round {round}: {}", patch.body);

        let after = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(after.status, StatusCode::OK);
        assert_eq!(after.body["auto_deploy"], false, "round {round}: the PATCH was lost");
        assert_eq!(
            after.body["version"].as_u64(),
            Some(version + 1),
            "round {round}: {}",
            after.body
        );
        let strip = |v: &Value| {
            let mut v = v.clone();
            for k in ["auto_deploy", "version", "updated_at"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(strip(&after.body), strip(&before), "round {round}");

        let deployments = all_deployments(&api, "acme", &format!("&service_id={id}")).await;
        let (queued, skipped) = outcome(&push);
        match push.status {
            StatusCode::ACCEPTED => {
                queued_rounds += 1;
                assert_eq!(queued, vec![(id.clone(), "QUEUED".to_owned())], "round {round}");
                assert_eq!(deployments.len(), 1, "round {round}");
                assert_eq!(deployments[0]["deployment_id"], push.body["queued"][0]["deployment_id"]);
            }
            StatusCode::OK => {
                assert!(queued.is_empty(), "round {round}: {}", push.body);
                assert!(
                    skipped.contains(&(id.clone(), "AUTO_DEPLOY_DISABLED".to_owned())),
                    "round {round}: {}",
                    push.body
                );
                assert_eq!(deployments.len(), 0, "round {round}");
            }
            other => panic!("round {round}: the push answered {other}: {}", push.body),
        }
        // Every earlier round's service is now off: a later push queues nothing for them.
        for s in push.body["skipped"].as_array().unwrap() {
            assert_eq!(s["reason"], "AUTO_DEPLOY_DISABLED", "{}", push.body);
        }
    }
    eprintln!("{backend} PATCH/push race: {queued_rounds} of {ROUNDS} pushes read the service before the PATCH");
}

/// Writes racing for one service (and one deploy target) without an ETag, as a parallel
/// GitOps run sends them: each is applied once, on the state the previous left, and none is
/// refused. `version` counts them.
async fn writes_to_one_service_at_once_all_land(api: Api) {
    const WRITES: usize = 24;
    let api = Arc::new(api);
    let created = api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let path = "/organization/acme/services/api";
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                // PATCHes and whole PUTs, interleaved.
                if i % 3 == 0 {
                    let body = json!({"environment_id": "production", "kind": "APPLICATION", "name": format!("put-{i}"),
                        "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "master"}});
                    api.call(Method::PUT, path, Some(ADMIN), Some(body)).await
                } else {
                    api.call(
                        Method::PATCH,
                        path,
                        Some(ADMIN),
                        Some(json!({"name": format!("patch-{i}")})),
                    )
                    .await
                }
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(versions.insert(r.body["version"].as_u64().unwrap()), "{}", r.body);
    }
    assert_eq!(versions, (2..=WRITES as u64 + 1).collect::<BTreeSet<_>>());
    let last = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(last.body["version"].as_u64(), Some(WRITES as u64 + 1), "{}", last.body);

    // A deploy target PUT again and again at once: each one a 200 (or the one 201). Each moves
    // the target to another url, so each gives the secret (a kept one never follows a new url).
    let target = "/organization/acme/targets/hooks";
    let tasks: Vec<_> = (0..WRITES / 2)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let body = json!({"type": "WEBHOOK", "url": format!("https://deploy.example.com/hook/{i}"),
                    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwdGVzdHRlc3Q="});
                api.call(Method::PUT, target, Some(ADMIN), Some(body)).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert!(r.status.is_success(), "{}: {}", r.status, r.body);
        statuses.push(r.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1);
    let last = api.call(Method::GET, target, Some(ADMIN), None).await;
    assert_eq!(last.body["version"].as_u64(), Some(WRITES as u64 / 2), "{}", last.body);
}

/// A service PUT naming a deploy target and the target's DELETE, at once: one of the two
/// sees the other — the service is written and the delete is a 409, or the target is deleted
/// and the PUT is a 400 naming it — never both done, leaving a service naming no target.
async fn a_target_is_never_deleted_while_a_service_names_it(api: Api) {
    const ROUNDS: usize = 12;
    let api = Arc::new(api);
    let (mut named, mut deleted) = (0, 0);
    for round in 0..ROUNDS {
        let target = format!("/organization/acme/targets/engine-{round}");
        let body = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
        let r = api.call(Method::PUT, &target, Some(ADMIN), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let service = json!({"environment_id": "production", "kind": "CONTAINER",
            "image": {"registry": "ghcr.io", "image_name": format!("acme/api-{round}"), "tag": "1"},
            "deploy_target": {"target_id": format!("engine-{round}")}});
        let id = format!("api-{round}");
        let (put, delete) = tokio::join!(
            api.put_service("acme", &id, service),
            api.call(Method::DELETE, &target, Some(ADMIN), None)
        );
        match (put.status, delete.status) {
            (StatusCode::CREATED, StatusCode::CONFLICT) => named += 1,
            (StatusCode::BAD_REQUEST, StatusCode::NO_CONTENT) => {
                assert_eq!(put.error_fields(), vec!["deploy_target.target_id"], "{}", put.body);
                deleted += 1;
            }
            other => panic!("round {round}: {other:?}: {} / {}", put.body, delete.body),
        }
        // What is stored agrees: a service that names the target, and the target; or neither.
        let path = format!("/organization/acme/services/{id}");
        let stored = api.call(Method::GET, &path, Some(ADMIN), None).await.status;
        let kept = api.call(Method::GET, &target, Some(ADMIN), None).await.status;
        assert_eq!(stored == StatusCode::OK, kept == StatusCode::OK, "round {round}");
    }
    println!("{named} PUTs first, {deleted} DELETEs first");
}

/// Distinct tags of one image announced at once, as CI announcing several tags of one build
/// (or a registry's webhook per tag) does: every tag is a deployment of the service, none a
/// 503, and the service's version counts each.
async fn tags_of_one_image_at_once_all_deploy(api: Api) {
    const TAGS: usize = 16;
    let api = Arc::new(api);
    let body = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
        "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": "1.0.0"}});
    let created = api.put_service("acme", "api", body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let tasks: Vec<_> = (0..TAGS)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let body = json!({"image_name": "ghcr.io/acme/api", "tag": format!("2.0.{i}")});
                api.call(
                    Method::POST,
                    "/organization/acme/container/deploy",
                    Some(ADMIN),
                    Some(body),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["queued"].as_array().map(Vec::len), Some(1), "{}", r.body);
    }
    let log = all_deployments(&api, "acme", "&service_id=api").await;
    assert_eq!(log.len(), TAGS);
    let service = api.get_service("acme", "api").await;
    assert_eq!(
        service.body["version"].as_u64(),
        Some(TAGS as u64 + 1),
        "{}",
        service.body
    );
}

/// Copies of one delivery id arriving at once, each carrying another push (a sender reusing
/// its ids): the standalone server processes one copy, and the others answer
/// `DUPLICATE_DELIVERY` with nothing of theirs written, though each read the id as new. (On
/// AWS the id is remembered after the deployments it goes with; SPEC.md says so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_one_delivery_id_at_once_are_processed_once() {
    const ROUNDS: usize = 3;
    let api = with_github_secret(Api::new()).await;
    let services: Vec<String> = (0..SERVICES).map(|i| format!("svc-{i}")).collect();
    for id in &services {
        api.app("acme", id, "GITHUB", GITHUB_REPO, "master", json!({})).await;
    }
    for round in 0..ROUNDS {
        let delivery = format!("one-id-{round}");
        let replies = api
            .at_once(PUSHES, |api, i| {
                let (push, delivery) = (push_to(&commit(10 + round, i)), delivery.clone());
                async move { api.push("acme", "github", &push, &delivery).await }
            })
            .await;
        let mut processed = 0;
        for r in replies {
            if r.status == StatusCode::ACCEPTED {
                processed += 1;
                let (queued, skipped) = outcome(&r);
                assert_eq!(queued.len(), SERVICES, "{}", r.body);
                assert!(skipped.is_empty(), "{}", r.body);
            } else {
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                assert_eq!(r.body["ignored"], "DUPLICATE_DELIVERY", "{}", r.body);
                assert_eq!(r.body["delivery_id"], delivery.as_str(), "{}", r.body);
            }
        }
        assert_eq!(processed, 1, "round {round}");
    }
    assert_eq!(all_deployments(&api, "acme", "").await.len(), ROUNDS * SERVICES);
    // The history says the same of every copy.
    let outcomes = api.delivery_outcomes("acme").await;
    assert_eq!(outcomes.len(), ROUNDS * PUSHES);
    assert_eq!(outcomes.iter().filter(|o| *o == "QUEUED").count(), ROUNDS);
    let duplicates = outcomes.iter().filter(|o| *o == "DUPLICATE").count();
    assert_eq!(duplicates, ROUNDS * (PUSHES - 1));
}
