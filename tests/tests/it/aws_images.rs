//! Image-tag auto-deploy end to end on the AWS stack: the real router on DynamoDB and SQS FIFO
//! (moto, through the real AWS SDK), with real failures injected by the fault proxies of
//! `autodeploy_tests::fault_proxy::FaultyAws`. The matching rules run in `image_tags.rs` (Docker
//! normalization and tag policies on both stores); this proves the backend's semantics: the new tag is written as the
//! service's desired state in the same conditional write as the deployment record, once
//! under concurrency, and never half-written when the store fails.
//!
//! The faulted clients make `SDK_ATTEMPTS` (3) attempts per call with millisecond backoff.

use std::sync::Arc;

use crate::aws_stack::AwsStack as Stack;
use autodeploy_api::pipeline::RelayReport;
use autodeploy_tests::fault_proxy::{Count, Fault, SDK_ATTEMPTS, action};
use autodeploy_tests::{ADMIN, Reply, deployment_ids, message_ids, outcome};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const ATTEMPTS: usize = SDK_ATTEMPTS as usize;

impl Stack {
    /// An auto-deployed service of `kind` running `registry`/`name`:`tag` in `acme`.
    async fn image_service(&self, id: &str, kind: &str, registry: Option<&str>, name: &str, tag: &str, extra: Value) {
        let mut image = json!({"image_name": name, "tag": tag});
        if let Some(registry) = registry {
            image["registry"] = json!(registry);
        }
        let mut body = json!({"environment_id": "production", "kind": kind, "auto_deploy": true, "image": image});
        json_patch::merge(&mut body, &extra);
        let r = self.api.put_service("acme", id, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
    }

    async fn container(&self, id: &str, registry: Option<&str>, name: &str, tag: &str) {
        self.image_service(id, "CONTAINER", registry, name, tag, json!({}))
            .await;
    }

    /// `POST /organization/acme/{kind}/deploy` as the admin.
    async fn deploy(&self, kind: &str, image: &str, tag: &str) -> Reply {
        self.api
            .call(
                Method::POST,
                &format!("/organization/acme/{kind}/deploy"),
                Some(ADMIN),
                Some(json!({"image_name": image, "tag": tag})),
            )
            .await
    }

    async fn service(&self, id: &str) -> Reply {
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/organization/acme/services/{id}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tag_is_queued_and_recorded_as_desired_state() {
    let stack = Stack::new().await;
    stack.container("api", Some("ghcr.io"), "acme/api", "1.3.0").await;
    stack
        .image_service(
            "semver",
            "CONTAINER",
            Some("ghcr.io"),
            "acme/api",
            "1.3.0",
            json!({"tag_policy": {"type": "SEMVER", "range": ">=1"}}),
        )
        .await;
    stack
        .image_service("migrate", "JOB", Some("ghcr.io"), "acme/api", "1.3.0", json!({}))
        .await;
    let before = stack.service("api").await;

    let r = stack.deploy("container", "ghcr.io/acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r), (pairs(&[("api", "QUEUED"), ("semver", "QUEUED")]), vec![]));
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 1);

    // The new tag is the service's current tag: a new version and ETag, the rest as it was.
    let after = stack.service("api").await;
    assert_eq!(after.body["image"]["tag"], "1.4.0");
    assert_eq!(after.body["version"], 2);
    assert_ne!(after.etag(), before.etag());
    assert_eq!(after.body["created_at"], before.body["created_at"]);
    let r2 = stack
        .api
        .call_with(
            Method::PATCH,
            "/organization/acme/services/api",
            Some(ADMIN),
            Some(json!({"name": "x"})),
            &[("if-match", &before.etag())],
        )
        .await;
    assert_eq!(r2.status, StatusCode::PRECONDITION_FAILED);
    // The job runs the same image but is not a container.
    assert_eq!(stack.service("migrate").await.body["image"]["tag"], "1.3.0");

    // The messages are SPEC's, and the log holds the very requests sent.
    let messages = stack.aws.drain().await;
    assert_eq!(message_ids(&messages), deployment_ids(&r));
    let log = stack.api.deployments("acme").await;
    for m in &messages {
        assert_eq!(m.body["git_commit_id"], Value::Null);
        assert_eq!(m.body["image_tag"], "1.4.0");
        assert_eq!(m.body["service_kind"], "CONTAINER");
        assert_eq!(
            m.body["trigger"],
            json!({"type": "IMAGE_TAG", "source": "API", "registry": "ghcr.io", "image_name": "acme/api",
                   "previous_tag": "1.3.0", "tag": "1.4.0"})
        );
        let mut logged = log
            .iter()
            .find(|d| d["deployment_id"] == m.body["deployment_id"])
            .expect("the message's deployment is in the log")
            .clone();
        assert_eq!(logged["status"], "QUEUED");
        logged.as_object_mut().unwrap().remove("status");
        assert_eq!(logged, m.body);
    }

    // The same notification again queues nothing.
    let r = stack.deploy("container", "acme/api", "1.4.0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        outcome(&r),
        (vec![], pairs(&[("api", "SAME_TAG"), ("semver", "SAME_TAG")]))
    );
    // A rollback queues, unless SEMVER forbids it; a return to a tag deployed before too.
    let r = stack.deploy("container", "acme/api", "1.3.0").await;
    assert_eq!(
        outcome(&r),
        (pairs(&[("api", "QUEUED")]), pairs(&[("semver", "TAG_POLICY")]))
    );
    assert_eq!(r.body["queued"][0]["previous_tag"], "1.4.0");
    let r = stack.deploy("container", "acme/api", "1.4.0").await;
    assert_eq!(outcome(&r).0, pairs(&[("api", "QUEUED")]));
    let svc = stack.service("api").await;
    assert_eq!(
        (svc.body["image"]["tag"].as_str(), svc.body["version"].as_u64()),
        (Some("1.4.0"), Some(4))
    );
    assert_eq!(stack.service("semver").await.body["image"]["tag"], "1.4.0");
    assert_eq!(stack.log().await.len(), 4);
    let tags: Vec<Value> = stack
        .aws
        .drain()
        .await
        .into_iter()
        .map(|m| m.body["image_tag"].clone())
        .collect();
    assert_eq!(tags, vec![json!("1.3.0"), json!("1.4.0")]);

    // A settings write in between is kept by the deploy write, and the deploy's tag by
    // later settings writes.
    let r = stack
        .api
        .call(
            Method::PATCH,
            "/organization/acme/services/api",
            Some(ADMIN),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        stack.deploy("container", "acme/api", "1.5.0").await.status,
        StatusCode::ACCEPTED
    );
    let svc = stack.service("api").await;
    assert_eq!(
        (svc.body["name"].as_str(), svc.body["image"]["tag"].as_str()),
        (Some("Renamed"), Some("1.5.0"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_identical_notifications_queue_once() {
    let stack = Arc::new(Stack::new().await);
    stack.container("api", None, "acme/api", "1.0.0").await;
    stack.container("web", None, "acme/api", "1.0.0").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let stack = Arc::clone(&stack);
        tasks.push(tokio::spawn(async move {
            stack.deploy("container", "acme/api", "1.1.0").await
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
        assert!(skipped.iter().all(|(_, reason)| reason == "SAME_TAG"), "{skipped:?}");
        same += skipped.len();
        queued.extend(q.into_iter().map(|(id, _)| id));
    }
    queued.sort();
    assert_eq!(queued, vec!["api", "web"]);
    assert_eq!(same, 2 * 19);
    assert_eq!(stack.log().await, pairs(&[("api", "QUEUED"), ("web", "QUEUED")]));
    let messages = stack.aws.drain().await;
    assert_eq!(messages.len(), 2);
    message_ids(&messages);
    for id in ["api", "web"] {
        let svc = stack.service(id).await;
        assert_eq!(
            (svc.body["image"]["tag"].as_str(), svc.body["version"].as_u64()),
            (Some("1.1.0"), Some(2))
        );
    }
}

/// The queue down: 202 with the deployments PENDING and the new tag already the services'
/// (a repeat is SAME_TAG, not a second deployment); the relay sends each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_down_leaves_the_new_tag_pending_for_the_relay() {
    let stack = Stack::new().await;
    stack.container("api", None, "acme/api", "1.0.0").await;
    stack.container("web", None, "acme/api", "1.0.0").await;
    stack.aws.queue_proxy.set(Fault::unavailable());

    let r = stack.deploy("container", "acme/api", "1.1.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r).0, pairs(&[("api", "PENDING"), ("web", "PENDING")]));
    assert_eq!(
        stack.aws.queue_proxy.count(action::SEND_MESSAGE_BATCH),
        Count {
            requests: ATTEMPTS,
            failed: ATTEMPTS
        }
    );
    assert_eq!(stack.log().await, pairs(&[("api", "PENDING"), ("web", "PENDING")]));
    assert_eq!(stack.service("api").await.body["image"]["tag"], "1.1.0");
    let r2 = stack.deploy("container", "acme/api", "1.1.0").await;
    assert_eq!(
        (r2.status, outcome(&r2)),
        (
            StatusCode::OK,
            (vec![], pairs(&[("api", "SAME_TAG"), ("web", "SAME_TAG")]))
        )
    );
    assert!(stack.aws.drain().await.is_empty());

    stack.aws.queue_proxy.pass_through();
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 2, sent: 2 });
    assert_eq!(message_ids(&stack.aws.drain().await), deployment_ids(&r));
    assert_eq!(stack.log().await, pairs(&[("api", "QUEUED"), ("web", "QUEUED")]));
    assert_eq!(stack.aws.relay().await, RelayReport::default());
    assert!(stack.aws.drain().await.is_empty());
}

/// The store refuses the record write: 503, and the services keep their tag, version and
/// ETag, with no deployment and no message; once the store is back the same notification
/// queues each exactly once. Then a store that takes one record and fails the other: the
/// retry completes the rest and finds the first at the new tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_a_503_and_changes_nothing() {
    let stack = Stack::new().await;
    stack.container("api", None, "acme/api", "1.0.0").await;
    stack.container("web", None, "acme/api", "1.0.0").await;
    let before = [stack.service("api").await, stack.service("web").await];
    stack
        .aws
        .store_proxy
        .set(Fault::unavailable().only(action::TRANSACT_WRITE_ITEMS));

    let r = stack.deploy("container", "acme/api", "1.1.0").await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        "{}",
        r.body
    );
    assert_eq!(
        stack.aws.store_proxy.count(action::TRANSACT_WRITE_ITEMS),
        Count {
            requests: 2 * ATTEMPTS,
            failed: 2 * ATTEMPTS
        }
    );
    for old in &before {
        let id = old.body["id"].as_str().unwrap();
        let now = stack.service(id).await;
        assert_eq!(now.etag(), old.etag(), "{id}");
        assert_eq!(now.body, old.body, "{id}");
    }
    assert!(stack.log().await.is_empty());
    assert!(stack.aws.drain().await.is_empty());
    assert_eq!(stack.aws.queue_proxy.requests(action::SEND_MESSAGE_BATCH), 0);

    stack.aws.store_proxy.pass_through();
    let r = stack.deploy("container", "acme/api", "1.1.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r), (pairs(&[("api", "QUEUED"), ("web", "QUEUED")]), vec![]));
    assert_eq!(message_ids(&stack.aws.drain().await), deployment_ids(&r));

    // One record taken, the other refused.
    stack
        .aws
        .store_proxy
        .set(Fault::unavailable().only(action::TRANSACT_WRITE_ITEMS).after(1));
    let r = stack.deploy("container", "acme/api", "1.2.0").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let mut tags: Vec<String> = Vec::new();
    for id in ["api", "web"] {
        tags.push(
            stack.service(id).await.body["image"]["tag"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    tags.sort();
    assert_eq!(tags, vec!["1.1.0", "1.2.0"]);
    let first = stack.aws.drain().await;
    assert_eq!(first.len(), 1);
    let taken = first[0].body["service_id"].as_str().unwrap().to_owned();
    let other = if taken == "api" { "web" } else { "api" };

    stack.aws.store_proxy.pass_through();
    let r = stack.deploy("container", "acme/api", "1.2.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        outcome(&r),
        (pairs(&[(other, "QUEUED")]), pairs(&[(taken.as_str(), "SAME_TAG")]))
    );
    assert_eq!(message_ids(&stack.aws.drain().await), deployment_ids(&r));
    assert_eq!(stack.log().await.len(), 4);
}
