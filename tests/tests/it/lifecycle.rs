//! The deployment lifecycle and the pull consumers (SPEC "Deployment lifecycle", "Consuming
//! deployments (pull)"), through the HTTP API of the standalone server on SQLite: lease, ack,
//! nack, extend, expiry, latest wins, the long poll, bad input; exactly-once offering under
//! concurrency; retention and a large log. Engines' reports (`…/result`) run on both stores.
//!
//! Deployments are queued the way CI queues them: `POST …/container/deploy` of a new tag for a
//! container service. Where a case needs time to pass (a lease running out, a deployment older
//! than the retention), it moves the stored timestamps back through a connection of its own,
//! then lets the product's own path (the next lease, the maintenance pass) act on them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodeploy_api::store::{AttemptEnd, AttemptStart};
use autodeploy_tests::{ADMIN, Api, Reply, on_both_stores};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::store_contract::{app, create, push, push_request};

// ---------------------------------------------------------------------------------------------
// Helpers

/// An auto-deployed container service `id` of `org` running `{org}/{id}:0`.
async fn service(api: &Api, org: &str, id: &str) {
    let body = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
        "image": {"image_name": format!("{org}/{id}"), "tag": "0"}});
    let r = api.put_service(org, id, body).await;
    assert!(r.status.is_success(), "{id}: {}", r.body);
}

/// Queue tag `tag` of service `id`: its deployment id.
async fn deploy(api: &Api, org: &str, id: &str, tag: &str) -> String {
    let r = api
        .call(
            Method::POST,
            &format!("/organization/{org}/container/deploy"),
            Some(ADMIN),
            Some(json!({"image_name": format!("{org}/{id}"), "tag": tag})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["queued"].as_array().map(Vec::len), Some(1), "{}", r.body);
    r.body["queued"][0]["deployment_id"].as_str().unwrap().to_owned()
}

/// A token of `org` with the `consume` scope only.
async fn consumer(api: &Api, org: &str) -> String {
    api.token(org, &["consume"]).await
}

/// acme's services `ids` (as [`service`] makes them), and a consumer token of acme.
async fn consumer_of(api: &Api, ids: &[&str]) -> String {
    for id in ids {
        service(api, "acme", id).await;
    }
    consumer(api, "acme").await
}

/// The standalone server's API on a fresh SQLite database, with acme's services `ids` and a
/// consumer token of acme.
async fn standalone(ids: &[&str]) -> (Arc<Api>, String) {
    let api = Arc::new(Api::new());
    let token = consumer_of(&api, ids).await;
    (api, token)
}

/// Queue tag `tag` of acme's `service`: the next lease offers it alone, and the deployment
/// `older` is then `status` (superseded by it, or left as it was).
async fn newer_is_offered(api: &Api, token: &str, service: &str, tag: &str, older: &str, status: &str) {
    let newer = deploy(api, "acme", service, tag).await;
    lease_only(api, token, json!({"max": 10}), &newer).await;
    assert_eq!(status_of(api, older).await, status, "{older}");
}

/// `POST /organization/{org}/deployments/{path}` with `body`: a lease (`lease`), or an action
/// on one deployment (`{id}/{action}`).
async fn post(api: &Api, token: &str, org: &str, path: &str, body: Value) -> Reply {
    let path = format!("/organization/{org}/deployments/{path}");
    api.call(Method::POST, &path, Some(token), Some(body)).await
}

async fn lease_reply(api: &Api, token: &str, org: &str, body: Value) -> Reply {
    post(api, token, org, "lease", body).await
}

/// The items of a successful lease of `acme`.
async fn lease(api: &Api, token: &str, body: Value) -> Vec<Value> {
    let r = lease_reply(api, token, "acme", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// A long poll of `acme` waiting up to `wait_seconds`, running on its own.
fn waiting_lease(api: &Arc<Api>, token: &str, wait_seconds: u64) -> tokio::task::JoinHandle<Vec<Value>> {
    let (api, token) = (Arc::clone(api), token.to_owned());
    tokio::spawn(async move { lease(&api, &token, json!({"wait_seconds": wait_seconds})).await })
}

/// Long polls of `acme` with `body` until one offers something, within `patience`.
async fn lease_within(api: &Api, token: &str, body: Value, patience: Duration, what: &str) -> Vec<Value> {
    let deadline = Instant::now() + patience;
    loop {
        let items = lease(api, token, body.clone()).await;
        if !items.is_empty() {
            return items;
        }
        assert!(Instant::now() < deadline, "{what}");
    }
}

/// The one item of a lease of `acme` that must offer exactly one deployment.
async fn lease_one(api: &Api, token: &str, body: Value) -> Value {
    let items = lease(api, token, body).await;
    assert_eq!(items.len(), 1, "{items:?}");
    items.into_iter().next().unwrap()
}

/// The one item of a lease of `acme` that must offer exactly deployment `id`.
async fn lease_only(api: &Api, token: &str, body: Value, id: &str) -> Value {
    let item = lease_one(api, token, body).await;
    assert_eq!(item["deployment_id"], id, "{item}");
    item
}

/// The one item of `items`, which must be deployment `id`'s.
fn only<'a>(items: &'a [Value], id: &str) -> &'a Value {
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["deployment_id"], id, "{items:?}");
    &items[0]
}

/// What a long poll of `acme` (waiting up to 20 s) is offered when `meanwhile` runs once the
/// poll is waiting; and what `meanwhile` gave.
async fn waited<T>(api: &Arc<Api>, token: &str, meanwhile: impl Future<Output = T>) -> (Vec<Value>, T) {
    let waiting = waiting_lease(api, token, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = meanwhile.await;
    (waiting.await.unwrap(), done)
}

/// `POST /organization/{org}/deployments/{id}/{action}` with `body`.
async fn act(api: &Api, token: &str, org: &str, id: &str, action: &str, body: Value) -> Reply {
    post(api, token, org, &format!("{id}/{action}"), body).await
}

/// `action` on the lease of `item` (of `acme`), with `extra` fields beside its `lease_id`.
async fn on_lease(api: &Api, token: &str, item: &Value, action: &str, extra: Value) -> Reply {
    let id = item["deployment_id"].as_str().unwrap();
    let mut body = json!({"lease_id": item["lease_id"]});
    json_patch::merge(&mut body, &extra);
    act(api, token, "acme", id, action, body).await
}

async fn ack(api: &Api, token: &str, item: &Value) -> Reply {
    on_lease(api, token, item, "ack", json!({})).await
}

/// Release the lease of `item` with `extra` fields (`retry_after_seconds`): a 204.
async fn nack(api: &Api, token: &str, item: &Value, extra: Value) {
    let r = on_lease(api, token, item, "nack", extra).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

/// Extend the lease of `item` with `extra` fields (`lease_seconds`): the answer, a 200.
async fn extend(api: &Api, token: &str, item: &Value, extra: Value) -> Value {
    let r = on_lease(api, token, item, "extend", extra).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// The lease of `item` is not its deployment's live lease: an ack, a nack and an extend
/// with it are each a 409 (and change nothing).
async fn assert_not_live(api: &Api, token: &str, item: &Value) {
    for action in ["extend", "nack", "ack"] {
        let r = on_lease(api, token, item, action, json!({})).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
    }
}

async fn get_reply(api: &Api, token: &str, org: &str, id: &str) -> Reply {
    api.call(
        Method::GET,
        &format!("/organization/{org}/deployments/{id}"),
        Some(token),
        None,
    )
    .await
}

/// `GET /organization/acme/deployments/{id}` as the admin.
async fn get(api: &Api, id: &str) -> Value {
    let r = get_reply(api, ADMIN, "acme", id).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

async fn status_of(api: &Api, id: &str) -> String {
    get(api, id).await["status"].as_str().unwrap().to_owned()
}

/// The deployment ids of `acme`'s log filtered by `query` (newest first, one page).
async fn listed(api: &Api, query: &str) -> Vec<String> {
    let r = api
        .admin_get(&format!("/organization/acme/deployments?limit=100&{query}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A 400 `VALIDATION_FAILED` naming exactly `fields`.
fn assert_invalid(r: &Reply, fields: &[&str]) {
    r.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(r.error_fields(), fields, "{}", r.body);
}

/// A second connection to the API's database, to move time for a case.
fn database(api: &Api) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(api.sqlite_path().expect("an API on SQLite")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// `time`, a whole second as the API writes times, is at least `secs` seconds after `since`.
fn assert_at_least_after(since: std::time::SystemTime, time: &Value, secs: u64) {
    let unix = time.as_str().and_then(autodeploy_api::util::rfc3339_unix);
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix.and_then(|u| u64::try_from(u).ok()).unwrap());
    let after = at.duration_since(since).unwrap_or_default();
    assert!(
        after >= Duration::from_secs(secs),
        "{time} is {after:?} after the request"
    );
}

/// Make the live lease of deployment `id` run out (as if its time had passed).
fn run_out(api: &Api, id: &str) {
    let changed = database(api)
        .execute(
            "UPDATE deployments SET lease_expires_unix = lease_expires_unix - 100000
             WHERE id = ?1 AND status = 'IN_PROGRESS'",
            [id],
        )
        .unwrap();
    assert_eq!(changed, 1, "deployment {id} holds no lease");
}

// ---------------------------------------------------------------------------------------------
// Lease, ack, nack, extend

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_deployment_is_delivered_by_its_ack() {
    let (api, token) = standalone(&["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;

    let queued = get(&api, &id).await;
    assert_eq!(queued["status"], "QUEUED");
    assert_eq!(queued["attempts"], 0);
    for absent in ["last_error", "next_attempt_at", "result"] {
        assert!(queued[absent].is_null(), "{absent}: {queued}");
    }
    assert!(queued["updated_at"].is_string(), "{queued}");

    // An empty body takes every default: one item, leased for 300 s, no waiting.
    let r = api
        .call(Method::POST, "/organization/acme/deployments/lease", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["deployment_id"], id.as_str());
    assert_eq!(item["service_id"], "api");
    assert_eq!(item["image_tag"], "1.0");
    assert_eq!(item["status"], "IN_PROGRESS");
    assert_eq!(item["attempt"], 1);
    assert_eq!(item["attempts"], 1);
    let lease_id = item["lease_id"].as_str().unwrap();
    assert!(!lease_id.is_empty() && lease_id.len() <= 64, "{item}");
    let expires = item["lease_expires_at"].as_str().unwrap();
    assert!(expires > item["updated_at"].as_str().unwrap(), "{item}");

    let leased = get(&api, &id).await;
    assert_eq!(leased["status"], "IN_PROGRESS");
    assert_eq!(leased["attempts"], 1);
    // Taken: nothing else to offer.
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    assert_eq!(listed(&api, "status=IN_PROGRESS").await, [id.as_str()]);

    let r = ack(&api, &token, item).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(r.raw.is_empty());
    let delivered = get(&api, &id).await;
    assert_eq!(delivered["status"], "DELIVERED");
    assert_eq!(delivered["attempts"], 1);
    assert!(delivered["last_error"].is_null(), "{delivered}");
    assert!(delivered["updated_at"].as_str().unwrap() >= leased["updated_at"].as_str().unwrap());

    // The lease ended with the ack: a second ack is a conflict, and nothing is offered again.
    assert_not_live(&api, &token, item).await;
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    assert_eq!(status_of(&api, &id).await, "DELIVERED");
    assert_eq!(listed(&api, "status=DELIVERED").await, [id.as_str()]);
    assert!(listed(&api, "status=QUEUED").await.is_empty());
    assert!(listed(&api, "status=IN_PROGRESS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_queues_the_deployment_again_for_its_next_attempt() {
    let (api, token) = standalone(&["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;

    let first = lease_only(&api, &token, json!({}), &id).await;
    nack(&api, &token, &first, json!({})).await;
    let nacked = get(&api, &id).await;
    assert_eq!(nacked["status"], "QUEUED");
    assert_eq!(nacked["attempts"], 1);
    assert!(nacked["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{nacked}");
    assert!(nacked["next_attempt_at"].is_null(), "{nacked}");
    // The released lease is gone.
    assert_not_live(&api, &token, &first).await;

    // Offered again at once, as its next attempt, under a new lease.
    let second = lease_only(&api, &token, json!({}), &id).await;
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["attempts"], 2);
    assert_ne!(second["lease_id"], first["lease_id"]);

    // A nack with a delay: waiting, not offered before its time.
    let asked = std::time::SystemTime::now();
    nack(&api, &token, &second, json!({"retry_after_seconds": 3600})).await;
    let waiting = get(&api, &id).await;
    assert_eq!(waiting["status"], "QUEUED");
    assert_at_least_after(asked, &waiting["next_attempt_at"], 3600);
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());

    // A newer deployment of the service supersedes it.
    let newer = deploy(&api, "acme", "api", "2.0").await;
    let third = lease_only(&api, &token, json!({"max": 10}), &newer).await;
    assert_eq!(third["attempt"], 1);
    let superseded = get(&api, &id).await;
    assert_eq!(superseded["status"], "SUPERSEDED");
    assert_eq!(superseded["attempts"], 2);
    assert!(superseded["next_attempt_at"].is_null(), "{superseded}");
    // It still says why it was waiting again, as a deployment superseded by the dispatcher does.
    assert_eq!(superseded["last_error"], waiting["last_error"], "{superseded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_runs_out_unless_extended() {
    let (api, token) = standalone(&["kept", "lost"]).await;
    let kept = deploy(&api, "acme", "kept", "1").await;
    let lost = deploy(&api, "acme", "lost", "1").await;
    let asked = std::time::SystemTime::now();
    let items = lease(&api, &token, json!({"max": 2, "lease_seconds": 10})).await;
    assert_eq!(items.len(), 2, "{items:?}");
    // A lease lasts at least what was asked, though kept in whole seconds.
    for item in &items {
        assert_at_least_after(asked, &item["lease_expires_at"], 10);
    }
    // Services come in the order of their oldest waiting deployment.
    assert_eq!(items[0]["deployment_id"], kept.as_str());
    assert_eq!(items[1]["deployment_id"], lost.as_str());
    let (kept_item, lost_item) = (&items[0], &items[1]);

    // Extending: without lease_seconds by 300 s; with it, to that many seconds from now.
    let extended = extend(&api, &token, kept_item, json!({})).await;
    assert_eq!(extended["deployment_id"], kept.as_str());
    assert_eq!(extended["lease_id"], kept_item["lease_id"]);
    let by_default = extended["lease_expires_at"].as_str().unwrap().to_owned();
    assert!(by_default.as_str() > kept_item["lease_expires_at"].as_str().unwrap());
    let extended = extend(&api, &token, kept_item, json!({"lease_seconds": 43200})).await;
    assert!(
        extended["lease_expires_at"].as_str().unwrap() > by_default.as_str(),
        "{extended}"
    );
    let fields: BTreeSet<&str> = extended.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["deployment_id", "lease_expires_at", "lease_id"])
    );

    // The other lease runs out for real: a long poll waits for it and gets the deployment
    // again, as its next attempt; the extended one is not offered.
    let again = lease_within(
        &api,
        &token,
        json!({"max": 10, "wait_seconds": 20}),
        Duration::from_secs(90),
        "the lease never ran out",
    )
    .await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["deployment_id"], lost.as_str());
    assert_eq!(again[0]["attempt"], 2);
    assert_ne!(again[0]["lease_id"], lost_item["lease_id"]);
    // The expired lease is no longer the deployment's.
    assert_not_live(&api, &token, lost_item).await;
    // The extended one is still held, by its first lease.
    assert_eq!(status_of(&api, &kept).await, "IN_PROGRESS");
    assert_eq!(ack(&api, &token, kept_item).await.status, StatusCode::NO_CONTENT);
    assert_eq!(ack(&api, &token, &again[0]).await.status, StatusCode::NO_CONTENT);
    let kept = get(&api, &kept).await;
    assert_eq!(
        (kept["status"].as_str(), kept["attempts"].as_u64()),
        (Some("DELIVERED"), Some(1))
    );
    let lost = get(&api, &lost).await;
    assert_eq!(
        (lost["status"].as_str(), lost["attempts"].as_u64()),
        (Some("DELIVERED"), Some(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_offers_without_an_ack_fail_the_deployment() {
    let (api, token) = standalone(&["expiring", "nacked"]).await;
    let expiring = deploy(&api, "acme", "expiring", "1").await;
    let nacked = deploy(&api, "acme", "nacked", "1").await;

    for attempt in 1..=10u64 {
        let items = lease(&api, &token, json!({"max": 10})).await;
        let ids: BTreeMap<&str, &Value> = items
            .iter()
            .map(|i| (i["deployment_id"].as_str().unwrap(), i))
            .collect();
        assert_eq!(ids.len(), 2, "offer {attempt}: {items:?}");
        for item in &items {
            assert_eq!(item["attempt"], attempt, "{item}");
        }
        // One lease runs out; the other is released by its consumer.
        run_out(&api, &expiring);
        if attempt == 1 {
            // Run out, even before anything released it: no longer the deployment's lease.
            assert_not_live(&api, &token, ids[expiring.as_str()]).await;
        }
        nack(&api, &token, ids[nacked.as_str()], json!({})).await;
    }
    // The next lease releases the lease that ran out: the tenth offer, so FAILED.
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    for id in [&expiring, &nacked] {
        let failed = get(&api, id).await;
        assert_eq!(failed["status"], "FAILED", "{failed}");
        assert_eq!(failed["attempts"], 10, "{failed}");
        // The same sentence whichever way the last offer ended: offers are what was counted.
        assert_eq!(
            failed["last_error"], "offered 10 times without being acknowledged",
            "{failed}"
        );
        assert!(failed["next_attempt_at"].is_null(), "{failed}");
    }
    let mut failed = listed(&api, "status=FAILED").await;
    failed.sort();
    let mut want = vec![expiring.clone(), nacked.clone()];
    want.sort();
    assert_eq!(failed, want);

    // Final: a newer deployment of the service is offered, the failed one stays failed.
    newer_is_offered(&api, &token, "expiring", "2", &expiring, "FAILED").await;
}

/// Latest wins, whatever comes back: a deployment released (a nack, or a lease that ran out)
/// after a newer one of its service was reported done is never offered again, which would
/// roll the service back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_released_after_a_newer_one_finished_is_superseded() {
    let (api, token) = standalone(&["api", "web"]).await;
    let older = deploy(&api, "acme", "api", "1").await;
    let item = lease_only(&api, &token, json!({}), &older).await;
    let newer = deploy(&api, "acme", "api", "2").await;
    let r = act(&api, &token, "acme", &newer, "result", json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Superseded by the nack itself: never listed as waiting, whether or not a consumer
    // asks for work again.
    nack(&api, &token, &item, json!({})).await;
    assert_eq!(status_of(&api, &older).await, "SUPERSEDED");
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    assert_eq!(status_of(&api, &newer).await, "DELIVERED");
    // A deployment newer than both is offered as usual.
    newer_is_offered(&api, &token, "api", "3", &newer, "DELIVERED").await;

    // The same when the lease runs out: superseded by the upkeep that releases it.
    let older = deploy(&api, "acme", "web", "1").await;
    lease_only(&api, &token, json!({}), &older).await;
    let newer = deploy(&api, "acme", "web", "2").await;
    let r = act(&api, &token, "acme", &newer, "result", json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    run_out(&api, &older);
    let done = api.sqlite.as_ref().unwrap().maintain(30 * DAY).await.unwrap();
    assert_eq!(done.leases_expired, 1);
    assert_eq!(status_of(&api, &older).await, "SUPERSEDED");
    let d = get(&api, &older).await;
    assert_eq!(
        d["last_error"], "the lease expired before the deployment was acknowledged",
        "{d}"
    );
}

/// A deployment released while a newer one of its service only waits is not superseded by
/// the release: it waits again, and the next take offers the newer one (latest wins there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_released_before_a_newer_one_is_taken_waits_again() {
    let (api, token) = standalone(&["api"]).await;
    let older = deploy(&api, "acme", "api", "1").await;
    let item = lease_only(&api, &token, json!({}), &older).await;
    let newer = deploy(&api, "acme", "api", "2").await;
    nack(&api, &token, &item, json!({})).await;
    assert_eq!(status_of(&api, &older).await, "QUEUED");
    lease_only(&api, &token, json!({"max": 10}), &newer).await;
    assert_eq!(status_of(&api, &older).await, "SUPERSEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_on_a_leased_deployment_ends_its_attempt() {
    let (api, token) = standalone(&["api"]).await;
    let first = deploy(&api, "acme", "api", "1").await;
    let item = lease_only(&api, &token, json!({}), &first).await;
    let second = deploy(&api, "acme", "api", "2").await;

    // A consumer waits for work; the report frees the service, and its newer work is offered.
    let report = act(&api, &token, "acme", &first, "result", json!({"status": "SUCCEEDED"}));
    let (items, r) = waited(&api, &token, report).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "DELIVERED");
    assert_eq!(r.body["attempts"], 1);
    only(&items, &second);

    // The report finished the deployment: the consumer's ack that follows is answered as
    // done (twice too), while a nack or an extend, which would keep it going, are refused
    // saying why. Nothing changes.
    let before = get(&api, &first).await;
    for _ in 0..2 {
        assert_eq!(ack(&api, &token, &item).await.status, StatusCode::NO_CONTENT);
    }
    for action in ["nack", "extend"] {
        let r = on_lease(&api, &token, &item, action, json!({})).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("DELIVERED") && message.contains("reported"),
            "{message}"
        );
        // Its lease is live: the refusal does not say it ran out.
        assert!(!message.contains("ran out"), "{message}");
    }
    let d = get(&api, &first).await;
    assert_eq!(d, before);
    assert_eq!(d["status"], "DELIVERED");
    assert_eq!(d["result"]["status"], "SUCCEEDED");
    // Once the lease would have run out, its ack is refused as any expired lease's.
    let changed = database(&api)
        .execute(
            "UPDATE deployments SET lease_expires_unix = lease_expires_unix - 100000 WHERE id = ?1",
            [&first],
        )
        .unwrap();
    assert_eq!(changed, 1);
    assert_not_live(&api, &token, &item).await;
    // An acknowledged deployment takes a report too, and stays delivered.
    assert_eq!(ack(&api, &token, &items[0]).await.status, StatusCode::NO_CONTENT);
    let crashed = json!({"status": "FAILED", "message": "crashed"});
    let r = act(&api, &token, "acme", &second, "result", crashed).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "DELIVERED");
    assert_eq!(r.body["result"]["message"], "crashed");
}

/// Deploy target `engine` of `acme`, a webhook.
async fn put_engine_target(api: &Api) {
    let engine = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
    let r = api
        .call(
            Method::PUT,
            "/organization/acme/targets/engine",
            Some(ADMIN),
            Some(engine),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_deploy_target_is_not_offered_to_consumers() {
    let (api, token) = standalone(&[]).await;
    put_engine_target(&api).await;
    service(&api, "acme", "pushed").await;
    let mut pushed = api.get_service("acme", "pushed").await.body;
    pushed["deploy_target"] = json!({"target_id": "engine"});
    let r = api.put_service("acme", "pushed", pushed).await;
    assert!(r.status.is_success(), "{}", r.body);
    service(&api, "acme", "pulled").await;
    let pushed = deploy(&api, "acme", "pushed", "1").await;
    let pulled = deploy(&api, "acme", "pulled", "1").await;

    let items = lease(&api, &token, json!({"max": 10, "wait_seconds": 1})).await;
    let offered: Vec<&str> = items.iter().map(|i| i["deployment_id"].as_str().unwrap()).collect();
    assert_eq!(offered, [pulled.as_str()]);
    // Without a dispatcher running, it waits for one.
    assert_eq!(status_of(&api, &pushed).await, "QUEUED");
    assert!(
        lease(&api, &token, json!({"max": 10, "wait_seconds": 1}))
            .await
            .is_empty()
    );
}

/// Deleting a service cancels its waiting work (`FAILED`, saying why): never offered to a
/// consumer, nor, for a service that had a target, left to them. Work in progress is left to
/// its consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_service_cancels_its_waiting_deployments() {
    let (api, token) = standalone(&["api", "web"]).await;
    let taken = deploy(&api, "acme", "web", "1").await;
    let item = lease_only(&api, &token, json!({}), &taken).await;
    let waiting = deploy(&api, "acme", "api", "1").await;
    for id in ["api", "web"] {
        let path = format!("/organization/acme/services/{id}");
        let r = api.call(Method::DELETE, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    let d = get(&api, &waiting).await;
    assert_eq!(
        (d["status"].as_str(), d["last_error"].as_str()),
        (
            Some("FAILED"),
            Some("cancelled: its service was deleted before it was delivered")
        ),
        "{d}"
    );
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    assert_eq!(status_of(&api, &taken).await, "IN_PROGRESS");
    assert_eq!(ack(&api, &token, &item).await.status, StatusCode::NO_CONTENT);
    assert_eq!(status_of(&api, &taken).await, "DELIVERED");
}

/// A retry's wait is a wait for one destination: a service given a deploy target, or relieved
/// of one, offers its waiting work to the new destination at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_takes_a_waiting_retry_at_once() {
    let (api, token) = standalone(&["api"]).await;
    put_engine_target(&api).await;
    let id = deploy(&api, "acme", "api", "1").await;
    let item = lease_only(&api, &token, json!({}), &id).await;
    nack(&api, &token, &item, json!({"retry_after_seconds": 3600})).await;
    assert!(get(&api, &id).await["next_attempt_at"].is_string());
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());

    let path = "/organization/acme/services/api";
    for target in [json!({"target_id": "engine"}), Value::Null] {
        let patch = json!({"deploy_target": target});
        let r = api.call(Method::PATCH, path, Some(ADMIN), Some(patch)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let d = get(&api, &id).await;
        assert_eq!(
            (d["status"].as_str(), &d["next_attempt_at"]),
            (Some("QUEUED"), &Value::Null),
            "{d}"
        );
    }
    // Back with pull consumers, it is offered now, not in an hour.
    let item = lease_only(&api, &token, json!({"max": 10}), &id).await;
    // A write that keeps the destination keeps the wait.
    nack(&api, &token, &item, json!({"retry_after_seconds": 3600})).await;
    let r = api
        .call(Method::PATCH, path, Some(ADMIN), Some(json!({"name": "API"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(get(&api, &id).await["next_attempt_at"].is_string());
}

// ---------------------------------------------------------------------------------------------
// Latest wins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_waiting_deployment_of_a_service_wins() {
    let (api, token) = standalone(&["a", "b", "c"]).await;
    let a1 = deploy(&api, "acme", "a", "1").await;
    let b1 = deploy(&api, "acme", "b", "1").await;
    let a2 = deploy(&api, "acme", "a", "2").await;

    // One item per service: a's newest (a is first, by its oldest waiting deployment), and b.
    let items = lease(&api, &token, json!({"max": 10})).await;
    let offered: Vec<&str> = items.iter().map(|i| i["deployment_id"].as_str().unwrap()).collect();
    assert_eq!(offered, [a2.as_str(), b1.as_str()]);
    // The older one of a was superseded in the same write, never offered.
    let a1_now = get(&api, &a1).await;
    assert_eq!(a1_now["status"], "SUPERSEDED");
    assert_eq!(a1_now["attempts"], 0);

    // a is in progress: a newer deployment of a waits; another service is not held back.
    let a3 = deploy(&api, "acme", "a", "3").await;
    let c1 = deploy(&api, "acme", "c", "1").await;
    lease_only(&api, &token, json!({"max": 10}), &c1).await;
    assert!(lease(&api, &token, json!({"max": 10})).await.is_empty());
    assert_eq!(status_of(&api, &a3).await, "QUEUED");
    // In progress is never superseded.
    assert_eq!(status_of(&api, &a2).await, "IN_PROGRESS");
    let in_progress = listed(&api, "status=IN_PROGRESS").await;
    assert_eq!(in_progress.len(), 3, "{in_progress:?}");

    // Once a's deployment is acknowledged, its newer one is offered.
    assert_eq!(ack(&api, &token, &items[0]).await.status, StatusCode::NO_CONTENT);
    let item = lease_only(&api, &token, json!({"max": 10}), &a3).await;
    assert_eq!(status_of(&api, &a2).await, "DELIVERED");

    // A nacked deployment still goes ahead of nothing newer; a newer one supersedes it.
    nack(&api, &token, &item, json!({})).await;
    newer_is_offered(&api, &token, "a", "4", &a3, "SUPERSEDED").await;
}

// ---------------------------------------------------------------------------------------------
// Long poll

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_with_the_work_queued_while_it_waits() {
    let (api, token) = standalone(&["api"]).await;

    // No work: a short wait answers, with nothing.
    assert!(lease(&api, &token, json!({"wait_seconds": 1})).await.is_empty());
    assert!(lease(&api, &token, json!({"wait_seconds": 0})).await.is_empty());

    let (items, id) = waited(&api, &token, deploy(&api, "acme", "api", "1.0")).await;
    assert_eq!(only(&items, &id)["attempt"], 1);

    // Another organization's work does not answer acme's long poll.
    service(&api, "beta", "api").await;
    let waiting = waiting_lease(&api, &token, 2);
    deploy(&api, "beta", "api", "1.0").await;
    assert!(waiting.await.unwrap().is_empty());

    // A nacked deployment's retry falling due answers a waiting consumer.
    nack(&api, &token, &items[0], json!({"retry_after_seconds": 2})).await;
    let items = lease_within(
        &api,
        &token,
        json!({"wait_seconds": 20}),
        Duration::from_secs(60),
        "the retry never fell due",
    )
    .await;
    assert_eq!(only(&items, &id)["attempt"], 2);
    assert!(get(&api, &id).await["next_attempt_at"].is_null());

    // An ack makes the service's next deployment available to a waiting consumer.
    let newer = deploy(&api, "acme", "api", "2.0").await;
    let (offered, acked) = waited(&api, &token, ack(&api, &token, &items[0])).await;
    assert_eq!(acked.status, StatusCode::NO_CONTENT);
    only(&offered, &newer);
}

/// A service's waiting deployments past its newest 100 (and up to 15 more) are superseded as
/// newer ones are recorded, which the next take would have done: a take never supersedes a
/// pile in its write. Each service's, when services are recorded together in a fixed order
/// (as a push's are). The newest is the one taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_waiting_pile_stays_bounded() {
    use autodeploy_api::sqlite::WAITING_KEPT_PER_SERVICE as KEPT;
    let (api, token) = standalone(&["api", "web"]).await;
    let mut newest = Vec::new();
    for i in 0..300 {
        newest = vec![
            deploy(&api, "acme", "api", &format!("1.0.{i}")).await,
            deploy(&api, "acme", "web", &format!("1.0.{i}")).await,
        ];
    }
    let count = |service: &str, status: &str| -> i64 {
        database(&api)
            .query_row(
                "SELECT count(*) FROM deployments WHERE service_id = ?1 AND status = ?2",
                [service, status],
                |r| r.get(0),
            )
            .unwrap()
    };
    for service in ["api", "web"] {
        let waiting = count(service, "QUEUED");
        assert!((KEPT..=KEPT + 15).contains(&waiting), "{service}: {waiting} waiting");
        assert_eq!(count(service, "SUPERSEDED"), 300 - waiting, "{service}");
    }
    let mut taken: Vec<String> = lease(&api, &token, json!({"max": 2}))
        .await
        .iter()
        .map(|item| item["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    taken.sort();
    newest.sort();
    assert_eq!(taken, newest);
    for service in ["api", "web"] {
        assert_eq!(count(service, "SUPERSEDED"), 299, "{service}");
    }
}

/// A consumer's token revoked while its long poll waits: the poll hands it nothing after
/// (it answers empty), and the work waits for a consumer whose token is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_its_long_poll_waits_is_handed_nothing() {
    let api = Arc::new(Api::new());
    service(&api, "acme", "api").await;
    let (token, token_id) = api.token_and_id("acme", &["consume"]).await;
    let (items, (revoked, id)) = waited(&api, &token, async {
        let path = format!("/organization/acme/tokens/{token_id}");
        let revoked = api.call(Method::DELETE, &path, Some(ADMIN), None).await;
        (revoked.status, deploy(&api, "acme", "api", "1.0").await)
    })
    .await;
    assert_eq!(revoked, StatusCode::NO_CONTENT);
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(status_of(&api, &id).await, "QUEUED");
    let valid = consumer(&api, "acme").await;
    assert_eq!(lease_one(&api, &valid, json!({})).await["deployment_id"], id);
}

/// An organization has at most 64 long polls waiting at once (each holds a connection, and is
/// woken by every deployment recorded): of 70 asking to wait 20 s, 6 answer at once, with
/// what there is (nothing), while 64 wait; the work queued then goes to one of those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_waiting_long_polls_are_bounded() {
    let (api, token) = standalone(&["api"]).await;
    let mut polls: Vec<_> = (0..70).map(|_| waiting_lease(&api, &token, 20)).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while polls.iter().filter(|p| p.is_finished()).count() < 6 {
        assert!(
            Instant::now() < deadline,
            "the polls over the bound did not answer at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (answered, waiting): (Vec<_>, Vec<_>) = polls.drain(..).partition(|p| p.is_finished());
    assert_eq!((answered.len(), waiting.len()), (6, 64));
    for poll in answered {
        assert!(poll.await.unwrap().is_empty());
    }
    let id = deploy(&api, "acme", "api", "1.0").await;
    let mut offered = Vec::new();
    for poll in waiting {
        offered.extend(poll.await.unwrap());
    }
    only(&offered, &id);
}

// ---------------------------------------------------------------------------------------------
// Bad input, scopes, organizations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_are_refused_naming_the_field() {
    let (api, token) = standalone(&["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;

    for (body, field) in [
        (json!({"max": 11}), "max"),
        (json!({"max": 0}), "max"),
        (json!({"max": "1"}), "max"),
        (json!({"max": 1.5}), "max"),
        (json!({"lease_seconds": 9}), "lease_seconds"),
        (json!({"lease_seconds": 43201}), "lease_seconds"),
        (json!({"wait_seconds": 21}), "wait_seconds"),
        (json!({"wait_seconds": -1}), "wait_seconds"),
        (json!({"lease_id": "x"}), "lease_id"),
        (json!({"max": 1, "maximum": 2}), "maximum"),
    ] {
        let r = lease_reply(&api, &token, "acme", body.clone()).await;
        assert_invalid(&r, &[field]);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {}",
            r.body
        );
    }
    let r = lease_reply(&api, &token, "acme", json!({"max": 11, "wait_seconds": 21})).await;
    assert_invalid(&r, &["max", "wait_seconds"]);
    // A whole number too large for 64 bits is out of the range, which the message gives.
    for huge in [
        "99999999999999999999999",
        "18446744073709551617",
        "9223372036854775808",
        "-9223372036854775809",
        "1e30",
        "1e2",
    ] {
        let req = http::Request::post("/organization/acme/deployments/lease")
            .header("authorization", format!("Token {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(format!(r#"{{"max": {huge}}}"#)))
            .unwrap();
        let r = api.raw(req).await;
        assert_invalid(&r, &["max"]);
        assert_eq!(
            r.body["error"]["message"], "max: must be a whole number from 1 to 10.",
            "{huge}"
        );
    }
    // A parameter put in the query instead of the body is refused, not ignored (a long poll
    // that would not wait): every consumer route takes no query parameter.
    for action in [
        "lease",
        &format!("{id}/ack"),
        &format!("{id}/nack"),
        &format!("{id}/extend"),
        &format!("{id}/result"),
    ] {
        let path = format!("/organization/acme/deployments/{action}?wait_seconds=20");
        let r = api.call(Method::POST, &path, Some(&token), Some(json!({}))).await;
        assert_invalid(&r, &["wait_seconds"]);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("wait_seconds"),
            "{action}: {}",
            r.body
        );
    }
    // The limits themselves are accepted (and nothing was leased by the refusals), a whole
    // number written as a decimal too.
    let limits = json!({"max": 10.0, "lease_seconds": 43200, "wait_seconds": 0});
    let item = lease_only(&api, &token, limits, &id).await;
    assert_eq!(item["attempt"], 1);
    let lease_id = item["lease_id"].as_str().unwrap().to_owned();

    // Acknowledging: the lease id is checked, then whether it is the live one.
    for (action, body, field) in [
        ("ack", json!({}), "lease_id"),
        ("ack", json!({"lease_id": ""}), "lease_id"),
        ("ack", json!({"lease_id": "l".repeat(65)}), "lease_id"),
        ("ack", json!({"lease_id": "\u{e9}t\u{e9}"}), "lease_id"),
        ("nack", json!({"lease_id": "abc\u{0}"}), "lease_id"),
        ("extend", json!({"lease_id": "a b"}), "lease_id"),
        ("ack", json!({"lease_id": lease_id, "extra": true}), "extra"),
        (
            "nack",
            json!({"lease_id": lease_id, "retry_after_seconds": 3601}),
            "retry_after_seconds",
        ),
        (
            "nack",
            json!({"lease_id": lease_id, "retry_after_seconds": -1}),
            "retry_after_seconds",
        ),
        (
            "extend",
            json!({"lease_id": lease_id, "lease_seconds": 9}),
            "lease_seconds",
        ),
        (
            "extend",
            json!({"lease_id": lease_id, "lease_seconds": 43201}),
            "lease_seconds",
        ),
    ] {
        let r = act(&api, &token, "acme", &id, action, body.clone()).await;
        assert_invalid(&r, &[field]);
    }
    for action in ["ack", "nack", "extend"] {
        let r = act(&api, &token, "acme", &id, action, json!({"lease_id": "never-issued"})).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        let r = act(&api, &token, "acme", &id, action, json!({"lease_id": "0".repeat(32)})).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        // Unknown deployments, and ids that cannot be one, are 404s.
        let unknown = "0123456789abcdef0123456789abcdef";
        let r = act(&api, &token, "acme", unknown, action, json!({"lease_id": lease_id})).await;
        r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
        let r = act(&api, &token, "acme", "NOT-AN-ID", action, json!({"lease_id": lease_id})).await;
        r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    // None of it touched the lease.
    assert_eq!(status_of(&api, &id).await, "IN_PROGRESS");
    assert_eq!(ack(&api, &token, &item).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_need_the_consume_scope_in_their_organization() {
    let api = Api::new();
    service(&api, "acme", "api").await;
    service(&api, "beta", "api").await;
    let id = deploy(&api, "acme", "api", "1.0").await;
    let acme_consume = consumer(&api, "acme").await;
    let beta_consume = consumer(&api, "beta").await;
    let manage_deploy = api.token("acme", &["deploy", "manage"]).await;
    let manage = api.token("acme", &["manage"]).await;
    let deploy_only = api.token("acme", &["deploy"]).await;
    let lease_id = "0".repeat(32);

    for token in [&manage_deploy, &beta_consume] {
        let r = lease_reply(&api, token, "acme", json!({})).await;
        r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
        for action in ["ack", "nack", "extend"] {
            let r = act(&api, token, "acme", &id, action, json!({"lease_id": lease_id})).await;
            r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
        }
        let r = act(&api, token, "acme", &id, "result", json!({"status": "SUCCEEDED"})).await;
        r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let r = api
        .call(
            Method::POST,
            "/organization/acme/deployments/lease",
            None,
            Some(json!({})),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = lease_reply(&api, "adt_not-a-token", "acme", json!({})).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // Nothing was leased by the refusals.
    assert_eq!(status_of(&api, &id).await, "QUEUED");

    // Reading one deployment takes manage or consume; the list, manage.
    for token in [&manage, &acme_consume, &manage_deploy] {
        let r = get_reply(&api, token, "acme", &id).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["deployment_id"], id.as_str());
    }
    for token in [&deploy_only, &beta_consume] {
        get_reply(&api, token, "acme", &id)
            .await
            .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    // The refusal names both scopes that would do.
    let r = get_reply(&api, &deploy_only, "acme", &id).await;
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("manage, consume"), "{}", r.body);
    let r = api
        .call(Method::GET, "/organization/acme/deployments", Some(&acme_consume), None)
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");

    // Another organization's deployment does not exist for beta, even for its own consumer.
    let beta_id = deploy(&api, "beta", "api", "1.0").await;
    let r = lease_reply(&api, &beta_consume, "beta", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let beta_item = r.body["items"][0].clone();
    assert_eq!(beta_item["deployment_id"], beta_id.as_str());
    let beta_id = beta_id.as_str();
    for action in ["ack", "nack", "extend"] {
        let r = on_lease(&api, &acme_consume, &beta_item, action, json!({})).await;
        r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let succeeded = json!({"status": "SUCCEEDED"});
    let r = act(&api, &acme_consume, "acme", beta_id, "result", succeeded).await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get_reply(&api, &acme_consume, "acme", beta_id)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    get_reply(&api, ADMIN, "acme", beta_id)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // acme's consumer never saw beta's work, and beta's lease is untouched.
    only(&lease(&api, &acme_consume, json!({"max": 10})).await, &id);
    let lease_id = json!({"lease_id": beta_item["lease_id"]});
    let r = act(&api, &beta_consume, "beta", beta_id, "ack", lease_id).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_by_status() {
    let (api, token) = standalone(&["a", "b"]).await;
    let a1 = deploy(&api, "acme", "a", "1").await;
    let a2 = deploy(&api, "acme", "a", "2").await;
    let b1 = deploy(&api, "acme", "b", "1").await;
    lease_only(&api, &token, json!({}), &a2).await;

    assert_eq!(listed(&api, "status=QUEUED").await, [b1.as_str()]);
    assert_eq!(listed(&api, "status=IN_PROGRESS").await, [a2.as_str()]);
    assert_eq!(listed(&api, "status=SUPERSEDED").await, [a1.as_str()]);
    assert!(listed(&api, "status=FAILED").await.is_empty());
    assert!(listed(&api, "status=PENDING").await.is_empty());
    // An empty value is no filter; with a service, both apply.
    assert_eq!(listed(&api, "status=").await, [b1.clone(), a2.clone(), a1.clone()]);
    assert_eq!(listed(&api, "service_id=a&status=SUPERSEDED").await, [a1.as_str()]);
    assert!(listed(&api, "service_id=b&status=SUPERSEDED").await.is_empty());
    // Each listed deployment shows its status.
    for d in api.deployments("acme").await {
        let id = d["deployment_id"].as_str().unwrap();
        assert_eq!(d, get(&api, id).await);
    }

    for bad in ["BOGUS", "queued", "SUCCEEDED"] {
        let r = api
            .admin_get(&format!("/organization/acme/deployments?status={bad}"))
            .await;
        assert_invalid(&r, &["status"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Exactly once under concurrency

const SERVICES: usize = 50;
const PER_SERVICE: usize = 4;
const CONSUMERS: usize = 20;

/// What the consumers saw, checked as they go.
#[derive(Default)]
struct Seen {
    /// Services with a deployment leased and not yet acknowledged or released.
    held: HashSet<String>,
    /// Every offer: (deployment id, lease id, attempt).
    offers: Vec<(String, String, u64)>,
    /// Two offers of one service at once, found while leasing.
    overlaps: Vec<String>,
}

impl Seen {
    /// What the consumers saw, once they are done: never two offers of one service at once.
    fn when_done(seen: &Mutex<Seen>) -> Seen {
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert!(
            seen.overlaps.is_empty(),
            "two deployments of one service at once: {:?}",
            seen.overlaps
        );
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_consumers_take_each_deployment_once_newest_first() {
    let (api, token) = standalone(&[]).await;
    // 200 waiting deployments of 50 services, each service's in tag order.
    let mut recorded: HashMap<String, Vec<String>> = HashMap::new();
    let mut service_of: HashMap<String, String> = HashMap::new();
    for s in 0..SERVICES {
        service(&api, "acme", &format!("s{s:02}")).await;
    }
    for round in 1..=PER_SERVICE {
        for s in 0..SERVICES {
            let name = format!("s{s:02}");
            let id = deploy(&api, "acme", &name, &round.to_string()).await;
            service_of.insert(id.clone(), name.clone());
            recorded.entry(name).or_default().push(id);
        }
    }

    // 20 consumers at once, leasing up to 3 each time: each releases the first offer of
    // every fifth service and acknowledges the rest, until nothing is left.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let start = Arc::new(tokio::sync::Barrier::new(CONSUMERS));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (api, token, seen, start, service_of) = (
                Arc::clone(&api),
                token.clone(),
                Arc::clone(&seen),
                Arc::clone(&start),
                service_of.clone(),
            );
            tokio::spawn(async move {
                start.wait().await;
                let mut idle = 0;
                while idle < 3 {
                    let items = lease(&api, &token, json!({"max": 3, "lease_seconds": 600})).await;
                    if items.is_empty() {
                        idle += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    idle = 0;
                    {
                        let mut seen = seen.lock().unwrap();
                        for item in &items {
                            let id = item["deployment_id"].as_str().unwrap().to_owned();
                            let service = service_of[&id].clone();
                            assert_eq!(item["service_id"], service.as_str());
                            if !seen.held.insert(service.clone()) {
                                seen.overlaps.push(service);
                            }
                            let lease_id = item["lease_id"].as_str().unwrap().to_owned();
                            seen.offers.push((id, lease_id, item["attempt"].as_u64().unwrap()));
                        }
                    }
                    for item in &items {
                        let id = item["deployment_id"].as_str().unwrap();
                        let service = &service_of[id];
                        let release = item["attempt"] == 1 && service[1..].parse::<usize>().unwrap() % 5 == 0;
                        // Let go of the service before the ack or nack that frees it.
                        seen.lock().unwrap().held.remove(service);
                        let action = if release { "nack" } else { "ack" };
                        let r = act(&api, &token, "acme", id, action, json!({"lease_id": item["lease_id"]})).await;
                        assert_eq!(r.status, StatusCode::NO_CONTENT, "{action} {id}: {}", r.body);
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.await.unwrap();
    }

    let seen = Seen::when_done(&seen);
    let lease_ids: HashSet<&String> = seen.offers.iter().map(|(_, l, _)| l).collect();
    assert_eq!(lease_ids.len(), seen.offers.len(), "a lease id handed out twice");
    let mut offers_of: HashMap<&str, Vec<u64>> = HashMap::new();
    for (id, _, attempt) in &seen.offers {
        offers_of.entry(id).or_default().push(*attempt);
    }
    for (name, ids) in &recorded {
        let newest = ids.last().unwrap();
        let released = name[1..].parse::<usize>().unwrap() % 5 == 0;
        // Only the newest was ever offered: once, or twice when released the first time.
        let want: Vec<u64> = if released { vec![1, 2] } else { vec![1] };
        assert_eq!(offers_of.get(newest.as_str()), Some(&want), "{name}");
        let d = get(&api, newest).await;
        assert_eq!(d["status"], "DELIVERED", "{d}");
        assert_eq!(d["attempts"], want.len(), "{d}");
        for older in &ids[..ids.len() - 1] {
            assert!(
                !offers_of.contains_key(older.as_str()),
                "{name}: an older deployment was offered"
            );
            let d = get(&api, older).await;
            assert_eq!(d["status"], "SUPERSEDED", "{d}");
            assert_eq!(d["attempts"], 0, "{d}");
        }
    }
    assert_eq!(offers_of.len(), SERVICES);
    assert_eq!(seen.offers.len(), SERVICES + SERVICES / 5);
    eprintln!(
        "{} offers to {CONSUMERS} consumers, {} deployments superseded",
        seen.offers.len(),
        SERVICES * (PER_SERVICE - 1)
    );
}

/// Consumers racing new deployments: while 10 consumers lease and acknowledge, 10 rounds of
/// deployments of 10 services are queued. A service's offers never go back to an older
/// deployment than one already offered, never overlap, and every deployment ends delivered
/// (offered) or superseded (never offered), the last of each service delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_racing_new_deployments_never_take_an_older_one() {
    const RACING_SERVICES: usize = 10;
    const SERVICE_NAMES: [&str; RACING_SERVICES] = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"];
    const ROUNDS: usize = 10;
    let (api, token) = standalone(&SERVICE_NAMES).await;
    // Each deployment's service and round, filled in by the producer before it is leasable.
    let order: Arc<Mutex<HashMap<String, (String, usize)>>> = Arc::default();
    let producing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Per service, the rounds offered, in the order they were offered.
    let offered_rounds: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let consumers: Vec<_> = (0..10)
        .map(|_| {
            let (api, token, seen, order, offered_rounds, producing) = (
                Arc::clone(&api),
                token.clone(),
                Arc::clone(&seen),
                Arc::clone(&order),
                Arc::clone(&offered_rounds),
                Arc::clone(&producing),
            );
            tokio::spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    let items = lease(&api, &token, json!({"max": 2, "wait_seconds": 1})).await;
                    if items.is_empty() {
                        if !producing.load(std::sync::atomic::Ordering::SeqCst) {
                            idle += 1;
                        }
                        continue;
                    }
                    let mut taken = Vec::new();
                    for item in &items {
                        let id = item["deployment_id"].as_str().unwrap().to_owned();
                        let (service, round) = loop {
                            // The producer notes a deployment right after its answer.
                            if let Some(known) = order.lock().unwrap().get(&id).cloned() {
                                break known;
                            }
                            tokio::task::yield_now().await;
                        };
                        {
                            let mut seen = seen.lock().unwrap();
                            if !seen.held.insert(service.clone()) {
                                seen.overlaps.push(service.clone());
                            }
                            let lease_id = item["lease_id"].as_str().unwrap().to_owned();
                            seen.offers.push((id, lease_id, item["attempt"].as_u64().unwrap()));
                        }
                        let mut rounds = offered_rounds.lock().unwrap();
                        rounds.entry(service.clone()).or_default().push(round);
                        taken.push((item, service));
                    }
                    // Deploying takes a while: newer work of the services piles up meanwhile.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    for (item, service) in taken {
                        // Let go of the service before the ack that frees it.
                        seen.lock().unwrap().held.remove(&service);
                        let r = ack(&api, &token, item).await;
                        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<(String, String, usize)> = Vec::new();
    for round in 0..ROUNDS {
        // A round's deployments at once, one per service.
        let tag = format!("{}", round + 1);
        let ids =
            futures::future::join_all((0..RACING_SERVICES).map(|s| deploy(&api, "acme", SERVICE_NAMES[s], &tag))).await;
        for (s, id) in ids.into_iter().enumerate() {
            let service_id = SERVICE_NAMES[s].to_owned();
            order.lock().unwrap().insert(id.clone(), (service_id.clone(), round));
            all.push((id, service_id, round));
        }
    }
    producing.store(false, std::sync::atomic::Ordering::SeqCst);
    for c in consumers {
        c.await.unwrap();
    }

    let seen = Seen::when_done(&seen);
    let offered: HashSet<&str> = seen.offers.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(offered.len(), seen.offers.len(), "a deployment offered twice");
    assert!(seen.offers.iter().all(|(_, _, attempt)| *attempt == 1));
    let offered_rounds = std::mem::take(&mut *offered_rounds.lock().unwrap());
    for (service, rounds) in &offered_rounds {
        assert!(
            rounds.windows(2).all(|w| w[0] < w[1]),
            "{service} went back: {rounds:?}"
        );
        assert_eq!(
            rounds.last(),
            Some(&(ROUNDS - 1)),
            "{service}: its last deployment was not taken"
        );
    }
    assert_eq!(offered_rounds.len(), RACING_SERVICES);
    for (id, service, round) in &all {
        let d = get(&api, id).await;
        let want = if offered.contains(id.as_str()) {
            "DELIVERED"
        } else {
            "SUPERSEDED"
        };
        assert_eq!(d["status"], want, "{service} round {round}: {d}");
    }
    // The race was run: some deployments were queued while an older one of their service was
    // in progress, and were overtaken before they were taken.
    assert!(
        offered.len() < all.len(),
        "nothing was superseded: the consumers never lagged"
    );
    eprintln!(
        "{} of {} deployments offered while they were queued, the rest superseded",
        offered.len(),
        all.len()
    );
}

/// Several consumers waiting at once share new work: each deployment goes to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_consumers_share_new_work_once() {
    let (api, token) = standalone(&[]).await;
    for s in 0..10 {
        service(&api, "acme", &format!("w{s}")).await;
    }
    let waiters: Vec<_> = (0..10).map(|_| waiting_lease(&api, &token, 20)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut queued = BTreeSet::new();
    for s in 0..10 {
        queued.insert(deploy(&api, "acme", &format!("w{s}"), "1").await);
    }
    let mut taken = Vec::new();
    for w in waiters {
        let items = w.await.unwrap();
        assert!(items.len() <= 1, "{items:?}");
        taken.extend(items.iter().map(|i| i["deployment_id"].as_str().unwrap().to_owned()));
    }
    let distinct: BTreeSet<String> = taken.iter().cloned().collect();
    assert_eq!(distinct.len(), taken.len(), "a deployment went to two consumers");
    assert!(distinct.is_subset(&queued));
    // What no waiter took (its wait ran out first) is still there, for the next lease.
    let rest = lease(&api, &token, json!({"max": 10})).await;
    let rest: BTreeSet<String> = rest
        .iter()
        .map(|i| i["deployment_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(rest.is_disjoint(&distinct));
    assert_eq!(distinct.union(&rest).cloned().collect::<BTreeSet<_>>(), queued);
}

// ---------------------------------------------------------------------------------------------
// Retention, and a large log

const DAY: i64 = 24 * 60 * 60;

/// Move deployment `id`'s last change `days` back.
fn age(api: &Api, id: &str, days: i64) {
    let changed = database(api)
        .execute(
            "UPDATE deployments SET updated_unix = updated_unix - ?2 WHERE id = ?1",
            rusqlite::params![id, days * DAY],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deployments_past_the_retention_are_pruned() {
    let services = ["delivered", "recent", "superseded", "failed", "queued", "leased"];
    let (api, token) = standalone(&services).await;
    let delivered = deploy(&api, "acme", "delivered", "1").await;
    let recent = deploy(&api, "acme", "recent", "1").await;
    let superseded = deploy(&api, "acme", "superseded", "1").await;
    let superseding = deploy(&api, "acme", "superseded", "2").await;
    let failed = deploy(&api, "acme", "failed", "1").await;
    for item in lease(&api, &token, json!({"max": 10})).await {
        let id = item["deployment_id"].as_str().unwrap();
        if id == failed {
            run_out(&api, id);
        } else {
            assert_eq!(ack(&api, &token, &item).await.status, StatusCode::NO_CONTENT);
        }
    }
    for _ in 2..=10 {
        lease_one(&api, &token, json!({})).await;
        run_out(&api, &failed);
    }
    assert!(lease(&api, &token, json!({})).await.is_empty());
    let leased = deploy(&api, "acme", "leased", "1").await;
    lease_only(&api, &token, json!({"max": 10}), &leased).await;
    let queued = deploy(&api, "acme", "queued", "1").await;
    let want = [
        (&delivered, "DELIVERED"),
        (&recent, "DELIVERED"),
        (&superseded, "SUPERSEDED"),
        (&superseding, "DELIVERED"),
        (&failed, "FAILED"),
        (&queued, "QUEUED"),
        (&leased, "IN_PROGRESS"),
    ];
    for (id, status) in want {
        assert_eq!(status_of(&api, id).await, status, "{id}");
    }

    // Everything 31 days old but `recent` (29 days) and `superseding` (now).
    for id in [&delivered, &superseded, &failed, &queued, &leased] {
        age(&api, id, 31);
    }
    age(&api, &recent, 29);
    let store = api.sqlite.as_ref().unwrap();
    let done = store.maintain(30 * DAY).await.unwrap();
    assert_eq!(done.deployments_pruned, 3, "{done:?}");
    for id in [&delivered, &superseded, &failed] {
        let r = get_reply(&api, ADMIN, "acme", id).await;
        r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    for (id, status) in [
        (&recent, "DELIVERED"),
        (&superseding, "DELIVERED"),
        (&queued, "QUEUED"),
        (&leased, "IN_PROGRESS"),
    ] {
        assert_eq!(status_of(&api, id).await, status, "{id}");
    }
    let mut left = listed(&api, "").await;
    left.sort();
    let mut want = vec![recent.clone(), superseding.clone(), queued.clone(), leased.clone()];
    want.sort();
    assert_eq!(left, want);
    // A second pass finds nothing more.
    assert_eq!(store.maintain(30 * DAY).await.unwrap().deployments_pruned, 0);
}

/// `GET …/deployments?{query}` as the admin: the reply and how long it took.
async fn timed_list(api: &Api, query: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = api.admin_get(&format!("/organization/acme/deployments?{query}")).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (r.body, took)
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment_id"].as_str().unwrap().to_owned())
        .collect()
}

const STORED: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_over_100000_deployments_pages_correctly() {
    let api = Api::new();
    service(&api, "acme", "api").await;
    let real = deploy(&api, "acme", "api", "1.0").await;

    // 100,000 more, older than the real one, copied from it in one transaction: ids
    // `00…0000000` to `00…00_1869f` (hex), service `s{n % 50}`, every fourth of each status.
    let started = Instant::now();
    {
        let mut conn = database(&api);
        let tx = conn.transaction().unwrap();
        let inserted = tx
            .execute(
                "WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x + 1 < ?2)
                 INSERT INTO deployments (org, id, service_id, status, data, attempts, updated_at, updated_unix)
                 SELECT d.org, printf('%032x', n.x), 's' || (n.x % 50),
                        CASE n.x % 4 WHEN 0 THEN 'DELIVERED' WHEN 1 THEN 'FAILED'
                                     WHEN 2 THEN 'SUPERSEDED' ELSE 'QUEUED' END,
                        json_set(d.data, '$.deployment_id', printf('%032x', n.x),
                                 '$.service_id', 's' || (n.x % 50)),
                        1, d.updated_at, d.updated_unix
                 FROM n, deployments d WHERE d.id = ?1",
                rusqlite::params![real, STORED],
            )
            .unwrap();
        assert_eq!(inserted as i64, STORED);
        tx.commit().unwrap();
    }
    let inserting = started.elapsed();
    let hex = |n: i64| format!("{n:032x}");

    // The first page: the real deployment, then the newest of the others, in order.
    let (first, first_took) = timed_list(&api, "limit=100").await;
    let ids = ids_of(&first);
    assert_eq!(ids.len(), 100);
    assert_eq!(ids[0], real);
    let want: Vec<String> = (STORED - 99..STORED).rev().map(hex).collect();
    assert_eq!(ids[1..], want[..]);
    assert_eq!(first["items"][1]["service_id"], format!("s{}", (STORED - 1) % 50));

    // Following the cursor 5 pages on: contiguous, no repeat, no gap.
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut next = STORED - 100;
    let mut page_took = Vec::new();
    for _ in 0..5 {
        let (page, took) = timed_list(&api, &format!("limit=100&cursor={cursor}")).await;
        page_took.push(took);
        let want: Vec<String> = (next - 99..=next).rev().map(hex).collect();
        assert_eq!(ids_of(&page), want);
        next -= 100;
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
    }

    // Filtered: one status, one service and a status, the last page of a filter.
    let (failed, failed_took) = timed_list(&api, "limit=50&status=FAILED").await;
    let want: Vec<String> = (0..STORED).rev().filter(|n| n % 4 == 1).take(50).map(hex).collect();
    assert_eq!(ids_of(&failed), want);
    assert!(
        failed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "FAILED")
    );
    let (one, one_took) = timed_list(&api, "limit=20&service_id=s7&status=QUEUED").await;
    let want: Vec<String> = (0..STORED)
        .rev()
        .filter(|n| n % 50 == 7 && n % 4 == 3)
        .take(20)
        .map(hex)
        .collect();
    assert_eq!(ids_of(&one), want);
    let (last, last_took) = timed_list(&api, "limit=100&status=IN_PROGRESS").await;
    assert!(ids_of(&last).is_empty());
    assert!(last["next_cursor"].is_null());

    // The maintenance pass over them: the finished ones, aged past the retention, pruned.
    database(&api)
        .execute(
            "UPDATE deployments SET updated_unix = updated_unix - 40 * 86400 WHERE id <> ?1",
            [&real],
        )
        .unwrap();
    // Deployments keep coming while it runs: each is answered, the pass holding no write back for
    // long (their latencies are printed, not asserted).
    let pruned = std::sync::atomic::AtomicBool::new(false);
    let ((done, pruning), (during, latencies)) = tokio::join!(
        async {
            let started = Instant::now();
            let done = api.sqlite.as_ref().unwrap().maintain(30 * DAY).await.unwrap();
            pruned.store(true, std::sync::atomic::Ordering::SeqCst);
            (done, started.elapsed())
        },
        async {
            let (mut ids, mut latencies) = (Vec::new(), Vec::new());
            while !pruned.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                ids.push(deploy(&api, "acme", "api", &format!("2.{}", ids.len())).await);
                latencies.push(started.elapsed());
            }
            (ids, latencies)
        }
    );
    assert_eq!(done.deployments_pruned as i64, STORED / 4 * 3);
    let (after, after_took) = timed_list(&api, "limit=100").await;
    let want: Vec<String> = during
        .iter()
        .rev()
        .cloned()
        .chain(std::iter::once(real.clone()))
        .chain((0..STORED).rev().filter(|n| n % 4 == 3).map(hex))
        .take(100)
        .collect();
    assert_eq!(ids_of(&after), want);
    let slowest = latencies.iter().max().copied().unwrap_or_default();

    eprintln!(
        "100,000 deployments: inserted in {inserting:?}; first page {first_took:?}, next pages {page_took:?}, \
         status filter {failed_took:?}, service + status {one_took:?}, empty filter {last_took:?}; \
         maintenance pruned 75,000 in {pruning:?}, while {} deployments were queued (slowest {slowest:?}); \
         first page after {after_took:?}",
        during.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Engines report back: on both stores

on_both_stores! {
    a_result_delivers_a_queued_deployment, a_result_ends_an_attempt_in_progress,
    a_result_supersedes_the_older_waiting_deployments, a_result_is_refused_on_other_statuses, bad_results_are_refused,
}

async fn result(api: &Api, token: &str, id: &str, body: Value) -> Reply {
    act(api, token, "acme", id, "result", body).await
}

async fn a_result_delivers_a_queued_deployment(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;
    assert_eq!(status_of(&api, &id).await, "QUEUED");

    let report = json!({"status": "SUCCEEDED", "message": "Rolled out to 3 replicas.\nAll healthy.",
        "url": "https://deploys.example.com/acme/api/42"});
    let r = result(&api, &token, &id, report.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["deployment_id"], id.as_str());
    assert_eq!(r.body["status"], "DELIVERED");
    let reported = &r.body["result"];
    for field in ["status", "message", "url"] {
        assert_eq!(reported[field], report[field], "{field}");
    }
    let reported_at = reported["reported_at"].as_str().unwrap().to_owned();
    assert!(reported_at.ends_with('Z'), "{reported_at}");
    // The answer is the deployment as it now stands: what GET and the list show.
    let shown = get(&api, &id).await;
    assert_eq!(shown, r.body);
    assert_eq!(api.deployments("acme").await, vec![shown.clone()]);

    // The same report again changes nothing; another one is a conflict.
    let r = result(&api, &token, &id, report.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, shown);
    for other in [
        json!({"status": "FAILED", "message": "Rolled out to 3 replicas.\nAll healthy.", "url": report["url"]}),
        json!({"status": "SUCCEEDED", "message": "Another message.", "url": report["url"]}),
        json!({"status": "SUCCEEDED", "message": report["message"]}),
    ] {
        let r = result(&api, &token, &id, other).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
    }
    assert_eq!(get(&api, &id).await, shown);
    // Delivered is final: the dispatcher cannot start it again.
    match api.store.begin_attempt("acme", &id).await.unwrap() {
        AttemptStart::NotWaiting(status) => assert_eq!(status.as_str(), "DELIVERED"),
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&api, &id).await, shown);

    // The admin may report too; message and url may be left out.
    let second = deploy(&api, "acme", "api", "2.0").await;
    let r = result(&api, ADMIN, &second, json!({"status": "FAILED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "DELIVERED");
    assert_eq!(r.body["result"]["status"], "FAILED");
    assert_eq!(r.body["result"]["message"], "");
    assert!(r.body["result"]["url"].is_null(), "{}", r.body);
    let again = result(&api, &token, &second, json!({"status": "FAILED", "message": ""})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

async fn a_result_ends_an_attempt_in_progress(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;
    let started = api.store.begin_attempt("acme", &id).await.unwrap();
    assert!(matches!(started, AttemptStart::Started(_)), "{started:?}");
    assert_eq!(status_of(&api, &id).await, "IN_PROGRESS");

    let pull_failed = json!({"status": "FAILED", "message": "Image pull failed."});
    let r = result(&api, &token, &id, pull_failed).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "DELIVERED");
    assert_eq!(r.body["attempts"], 1);
    assert_eq!(r.body["result"]["status"], "FAILED");
    assert_eq!(r.body["result"]["message"], "Image pull failed.");
    assert_eq!(get(&api, &id).await, r.body);
    // Transitions only go forward: the attempt's end does not take the deployment back.
    for end in [
        AttemptEnd::Retry {
            error: "the target answered 503".to_owned(),
            next_attempt_unix: 0,
        },
        AttemptEnd::Failed {
            error: "the target answered 400".to_owned(),
        },
    ] {
        let _ = api.store.end_attempt("acme", &id, &end).await;
        let now = get(&api, &id).await;
        assert_eq!(now["status"], "DELIVERED", "{now}");
        assert_eq!(now["result"], r.body["result"]);
    }
}

/// Latest wins: once an engine reports on a service's deployment, the older ones still waiting
/// are superseded, never taken after it (which would roll the service back).
async fn a_result_supersedes_the_older_waiting_deployments(api: Api) {
    let token = consumer_of(&api, &["api", "other"]).await;
    let older = deploy(&api, "acme", "api", "1.0").await;
    let other = deploy(&api, "acme", "other", "1.0").await;
    let reported = deploy(&api, "acme", "api", "2.0").await;
    let newer = deploy(&api, "acme", "api", "3.0").await;

    let r = result(&api, &token, &reported, json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d = get(&api, &older).await;
    assert_eq!(d["status"], "SUPERSEDED", "{d}");
    assert_eq!(d["attempts"], 0, "{d}");
    // Newer work of the service, and other services' work, still wait.
    assert_eq!(status_of(&api, &newer).await, "QUEUED");
    assert_eq!(status_of(&api, &other).await, "QUEUED");
    assert_eq!(
        api.store.begin_attempt("acme", &older).await.unwrap(),
        AttemptStart::NotWaiting(autodeploy_core::deployment::DeploymentStatus::Superseded)
    );
    if api.sqlite.is_some() {
        let items = lease(&api, &token, json!({"max": 10})).await;
        let mut offered: Vec<&str> = items.iter().map(|i| i["deployment_id"].as_str().unwrap()).collect();
        offered.sort_unstable();
        let mut want = vec![newer.as_str(), other.as_str()];
        want.sort_unstable();
        assert_eq!(offered, want);
    }
}

/// A deployment of `acme`'s `api` brought to `status` through the stores' own transitions
/// (the dispatcher's), its id.
async fn deployment_in(api: &Api, status: &str) -> String {
    let id = deploy(api, "acme", "api", &format!("{status}-1")).await;
    match status {
        "SUPERSEDED" => {
            deploy(api, "acme", "api", &format!("{status}-2")).await;
            let start = api.store.begin_attempt("acme", &id).await.unwrap();
            assert_eq!(start, AttemptStart::Superseded);
        }
        "FAILED" => {
            let start = api.store.begin_attempt("acme", &id).await.unwrap();
            assert!(matches!(start, AttemptStart::Started(_)), "{start:?}");
            let end = AttemptEnd::Failed {
                error: "the target answered 400".to_owned(),
            };
            api.store.end_attempt("acme", &id, &end).await.unwrap();
        }
        other => panic!("{other}"),
    }
    id
}

async fn a_result_is_refused_on_other_statuses(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let report = json!({"status": "SUCCEEDED", "message": "Done."});
    for status in ["SUPERSEDED", "FAILED"] {
        let id = deployment_in(&api, status).await;
        let before = get(&api, &id).await;
        assert_eq!(before["status"], status);
        let r = result(&api, &token, &id, report.clone()).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(status),
            "{}",
            r.body
        );
        assert_eq!(get(&api, &id).await, before, "a refused report changed the deployment");
        // Final: the dispatcher does not start it again.
        let _ = api.store.begin_attempt("acme", &id).await;
        assert_eq!(get(&api, &id).await, before, "a final deployment was started again");
    }

    // PENDING (recorded, not yet on the queue), where a store records that way.
    create(&*api.store, &app("acme", "pending", "acme/pending")).await;
    let request = push_request("acme", "pending");
    api.store.record_deployment(&request, &push("a..b")).await.unwrap();
    let before = get(&api, &request.deployment_id).await;
    let r = result(&api, &token, &request.deployment_id, report.clone()).await;
    if before["status"] == "PENDING" {
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        assert_eq!(get(&api, &request.deployment_id).await, before);
    } else {
        assert_eq!(before["status"], "QUEUED");
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    // Unknown deployments are 404s.
    let r = result(&api, &token, "0123456789abcdef0123456789abcdef", report.clone()).await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = result(&api, &token, "not-a-deployment", report).await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
}

async fn bad_results_are_refused(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let id = deploy(&api, "acme", "api", "1.0").await;
    for (body, field) in [
        (json!({}), "status"),
        (json!({"status": "DONE"}), "status"),
        (json!({"status": "succeeded"}), "status"),
        (json!({"status": "SUCCEEDED", "message": "m".repeat(1001)}), "message"),
        (json!({"status": "SUCCEEDED", "message": "a\u{7}bell"}), "message"),
        (json!({"status": "SUCCEEDED", "message": "a lone\rreturn"}), "message"),
        (
            json!({"status": "SUCCEEDED", "url": "https://user:pw@ci.example.com/run/1"}),
            "url",
        ),
        (
            json!({"status": "SUCCEEDED", "url": "https://token@ci.example.com/run/1"}),
            "url",
        ),
        (json!({"status": "SUCCEEDED", "message": 3}), "message"),
        (json!({"status": "SUCCEEDED", "url": "ftp://example.com/x"}), "url"),
        (json!({"status": "SUCCEEDED", "url": "example.com"}), "url"),
        (
            json!({"status": "SUCCEEDED", "url": format!("https://example.com/{}", "a".repeat(2049))}),
            "url",
        ),
        (
            json!({"status": "SUCCEEDED", "reported_at": "2026-01-01T00:00:00Z"}),
            "reported_at",
        ),
    ] {
        let r = result(&api, &token, &id, body.clone()).await;
        assert_invalid(&r, &[field]);
    }
    // Nothing was recorded; the limits themselves are accepted.
    assert_eq!(status_of(&api, &id).await, "QUEUED");
    // Newlines either way and tabs, each counted as characters.
    let message = format!("{}\r\n{}\t\n", "m".repeat(994), "m".repeat(2));
    let url = format!(
        "https://example.com/{}",
        "a".repeat(2048 - "https://example.com/".len())
    );
    let at_the_limits = json!({"status": "SUCCEEDED", "message": message, "url": url});
    let r = result(&api, &token, &id, at_the_limits).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["result"]["url"], url.as_str());
    // A token without `consume`, or of another organization: 403.
    let manage = api.token("acme", &["deploy", "manage"]).await;
    let r = result(&api, &manage, &id, json!({"status": "SUCCEEDED"})).await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
    let beta = consumer(&api, "beta").await;
    let r = result(&api, &beta, &id, json!({"status": "SUCCEEDED"})).await;
    r.assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
}

/// On AWS the pull interface is SQS: the lease routes answer 404 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_routes_are_the_standalone_servers() {
    let api = Api::on_moto().await;
    let token = consumer(&api, "acme").await;
    let r = lease_reply(&api, &token, "acme", json!({})).await;
    r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    let id = "0123456789abcdef0123456789abcdef";
    for action in ["ack", "nack", "extend"] {
        let r = act(&api, &token, "acme", id, action, json!({"lease_id": "x"})).await;
        r.assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

/// The `expires_at` (TTL) of deployment `id` in the fixture's table.
async fn expires_at(aws: &autodeploy_tests::AwsFixture, id: &str) -> i64 {
    use aws_sdk_dynamodb::types::AttributeValue;
    let item = aws
        .dynamo
        .get_item()
        .table_name(&aws.table)
        .key("pk", AttributeValue::S("ORG#acme".to_owned()))
        .key("sk", AttributeValue::S(format!("DEPLOYMENT#{id}")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item for deployment {id}"));
    match item.get("expires_at") {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("deployment {id}: expires_at is {other:?}"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// DynamoDB prunes with its TTL: a finished deployment (superseded, failed, delivered,
/// reported on) expires 30 days after it finished; a waiting one is kept longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_finished_deployments_expire_after_the_retention() {
    use autodeploy_core::deployment::{DeploymentResult, ResultStatus};
    let aws = autodeploy_tests::aws_fixture().await;
    let store: &dyn autodeploy_api::store::Store = &aws.store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let mut marks = 0;
    let mut record = || {
        marks += 1;
        let request = push_request("acme", "api");
        let mark = format!("{}..{}", marks, marks + 1);
        async move {
            store.record_deployment(&request, &push(&mark)).await.unwrap();
            let id = request.deployment_id;
            store.mark_queued("acme", std::slice::from_ref(&id)).await.unwrap();
            id
        }
    };
    let before = unix_now();
    let (oldest, older, newest) = (record().await, record().await, record().await);
    // The oldest is superseded when the dispatcher comes to it; starting the newest
    // supersedes the other; the newest fails.
    assert_eq!(
        store.begin_attempt("acme", &oldest).await.unwrap(),
        AttemptStart::Superseded
    );
    let start = store.begin_attempt("acme", &newest).await.unwrap();
    assert!(matches!(start, AttemptStart::Started(_)), "{start:?}");
    let failed = AttemptEnd::Failed {
        error: "the target answered 400".to_owned(),
    };
    store.end_attempt("acme", &newest, &failed).await.unwrap();
    // One delivered by its target, one reported on by an engine, one still waiting.
    let delivered = record().await;
    let start = store.begin_attempt("acme", &delivered).await.unwrap();
    assert!(matches!(start, AttemptStart::Started(_)), "{start:?}");
    store
        .end_attempt("acme", &delivered, &AttemptEnd::Delivered)
        .await
        .unwrap();
    let reported = record().await;
    let report = DeploymentResult {
        status: ResultStatus::Succeeded,
        message: String::new(),
        url: None,
        reported_at: autodeploy_api::util::now_rfc3339(),
    };
    store.report_result("acme", &reported, &report).await.unwrap().unwrap();
    let waiting = record().await;
    let after = unix_now();

    for (id, status) in [
        (&oldest, "SUPERSEDED"),
        (&older, "SUPERSEDED"),
        (&newest, "FAILED"),
        (&delivered, "DELIVERED"),
        (&reported, "DELIVERED"),
    ] {
        let record = store.get_deployment("acme", id).await.unwrap().unwrap();
        assert_eq!(record.status.as_str(), status);
        let expires = expires_at(&aws, id).await;
        assert!(
            (before + 30 * DAY..=after + 30 * DAY).contains(&expires),
            "{status} {id} expires at {expires}, not 30 days after it finished ({before}..{after})"
        );
    }
    assert_eq!(
        store
            .get_deployment("acme", &waiting)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str(),
        "QUEUED"
    );
    assert!(
        expires_at(&aws, &waiting).await > after + 30 * DAY,
        "a waiting deployment expires as finished"
    );
}

on_both_stores! {
    a_failed_deployment_is_made_again_as_a_new_one, only_a_services_newest_finished_deployment_is_made_again,
    a_deployment_is_made_again_only_while_its_service_runs_it,
}

async fn redeploy(api: &Api, token: &str, id: &str) -> Reply {
    api.call(
        Method::POST,
        &format!("/organization/acme/deployments/{id}/redeploy"),
        Some(token),
        None,
    )
    .await
}

/// A deployment that failed for good (its target was down) is made again once the target is
/// fixed: a new deployment of the same tag, waiting where the service's deployments go.
async fn a_failed_deployment_is_made_again_as_a_new_one(api: Api) {
    service(&api, "acme", "api").await;
    let id = deploy(&api, "acme", "api", "1.0").await;
    assert!(matches!(
        api.store.begin_attempt("acme", &id).await.unwrap(),
        AttemptStart::Started(_)
    ));
    let failed = AttemptEnd::Failed {
        error: "the target answered 400".to_owned(),
    };
    api.store.end_attempt("acme", &id, &failed).await.unwrap();
    let before = get(&api, &id).await;
    assert_eq!(before["status"], "FAILED", "{before}");

    // Scope: manage. A consumer may not.
    let consumer = consumer(&api, "acme").await;
    redeploy(&api, &consumer, &id)
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");

    let r = redeploy(&api, ADMIN, &id).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let again = r.body["deployment_id"].as_str().unwrap().to_owned();
    assert_ne!(again, id);
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/organization/acme/deployments/{again}").as_str())
    );
    // The same request, made again: same tag, trigger and service; new id and time.
    for field in [
        "service_id",
        "service_kind",
        "environment_id",
        "image_tag",
        "git_commit_id",
        "trigger",
    ] {
        assert_eq!(r.body[field], before[field], "{field}");
    }
    assert_eq!(r.body["image_tag"], "1.0");
    assert_eq!(r.body["attempts"], 0);
    assert!(r.body["last_error"].is_null(), "{}", r.body);
    // As GET shows it, waiting (PENDING until sent, on AWS), and offered to its consumers.
    let shown = get(&api, &again).await;
    assert_eq!(shown["deployment_id"], again.as_str());
    assert!(
        ["QUEUED", "PENDING"].contains(&shown["status"].as_str().unwrap()),
        "{shown}"
    );
    assert_eq!(status_of(&api, &id).await, "FAILED");

    // Made again already: the failed one is no longer the newest.
    redeploy(&api, ADMIN, &id)
        .await
        .assert_error(StatusCode::CONFLICT, "CONFLICT");
    // Unknown, or no deployment id at all: 404.
    redeploy(&api, ADMIN, &"0".repeat(32))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    redeploy(&api, ADMIN, "nope")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    // No query parameter: not even a dry run, which would be ignored.
    let path = format!("/organization/acme/deployments/{again}/redeploy?dry_run=true");
    let r = api.call(Method::POST, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

/// Only a finished deployment, and only its service's newest: one still waiting is under way,
/// and an older one would roll the service back behind the tag that came after it.
async fn only_a_services_newest_finished_deployment_is_made_again(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let first = deploy(&api, "acme", "api", "1.0").await;
    let r = redeploy(&api, ADMIN, &first).await;
    r.assert_error(StatusCode::CONFLICT, "CONFLICT");
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("QUEUED"),
        "{}",
        r.body
    );

    // Delivered (an engine reported it): made again.
    let r = result(&api, &token, &first, json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = redeploy(&api, ADMIN, &first).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let again = r.body["deployment_id"].as_str().unwrap().to_owned();
    let r = result(&api, &token, &again, json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A newer tag since: the first one is not made again, the newest is named instead.
    let newer = deploy(&api, "acme", "api", "2.0").await;
    let r = redeploy(&api, ADMIN, &again).await;
    r.assert_error(StatusCode::CONFLICT, "CONFLICT");
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&newer),
        "{}",
        r.body
    );
    assert_eq!(listed(&api, "service_id=api").await.len(), 3);

    // Its service deleted: nothing to deploy it to.
    let r = result(&api, &token, &newer, json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api
        .call(Method::DELETE, "/organization/acme/services/api", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = redeploy(&api, ADMIN, &newer).await;
    r.assert_error(StatusCode::CONFLICT, "CONFLICT");
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("deleted"),
        "{}",
        r.body
    );
}

/// Made again only while the service still runs what the deployment deployed (its settings
/// are the desired state), and sorted right after it, so that a deployment recorded after it
/// stays the newest; a body, which might ask for something else, is refused.
async fn a_deployment_is_made_again_only_while_its_service_runs_it(api: Api) {
    let token = consumer_of(&api, &["api"]).await;
    let x = deploy(&api, "acme", "api", "1.0").await;
    let r = result(&api, &token, &x, json!({"status": "SUCCEEDED"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let path = format!("/organization/acme/deployments/{x}/redeploy");

    // A body is refused, whatever it asks for; a large one as settings bodies are.
    let r = api
        .call(Method::POST, &path, Some(ADMIN), Some(json!({"image_tag": "2.0"})))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "MALFORMED_BODY");
    let large = http::Request::post(path.as_str())
        .header("authorization", format!("Token {ADMIN}"))
        .body(axum::body::Body::from(vec![b' '; 300 * 1024]))
        .unwrap();
    api.raw(large)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");

    // Its tag set to another one since (the desired state), or another environment: refused.
    for (patch, says) in [
        (json!({"image": {"tag": "1.5"}}), "its image's tag is now 1.5, not 1.0"),
        (
            json!({"environment_id": "staging"}),
            "it is now a CONTAINER in staging, and the deployment was for a CONTAINER in production",
        ),
    ] {
        let service = "/organization/acme/services/api";
        let before = api.call(Method::GET, service, Some(ADMIN), None).await.body;
        let r = api.call(Method::PATCH, service, Some(ADMIN), Some(patch)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = redeploy(&api, ADMIN, &x).await;
        r.assert_error(StatusCode::CONFLICT, "CONFLICT");
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(says),
            "{}",
            r.body
        );
        // Back as it was: made again.
        let restore = json!({"image": before["image"], "environment_id": before["environment_id"]});
        let r = api.call(Method::PATCH, service, Some(ADMIN), Some(restore)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = redeploy(&api, ADMIN, &x).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let again = r.body["deployment_id"].as_str().unwrap().to_owned();
    // Right after the one it repeats, below anything recorded after that one.
    let number = |id: &str| u128::from_str_radix(id, 16).unwrap();
    assert_eq!(number(&again), number(&x) + 1);
    let newer = deploy(&api, "acme", "api", "2.0").await;
    assert_eq!(listed(&api, "service_id=api").await, vec![newer, again, x]);
}
