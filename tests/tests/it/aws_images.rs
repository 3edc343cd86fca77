//! Image-tag auto-deploy on the AWS stack under failures: the real router on DynamoDB and SQS
//! FIFO (moto, through the real AWS SDK), with real failures injected by the fault proxies of
//! `autodeploy_tests::fault_proxy::FaultyAws`. What holds without failures (the new tag written
//! as the service's desired state with the deployment record, once under concurrency) runs on
//! both stores in `image_tags.rs`; this proves that the tag is never half-written when the
//! store fails, and that the relay sends what the queue refused.
//!
//! The faulted clients make `SDK_ATTEMPTS` (3) attempts per call with millisecond backoff.

use crate::aws_stack::{ATTEMPTS, AwsStack as Stack, assert_unavailable};
use autodeploy_api::aws::IMAGE_RECORDS_PER_TRANSACTION;
use autodeploy_api::pipeline::RelayReport;
use autodeploy_tests::fault_proxy::{Count, Fault, action};
use autodeploy_tests::{ADMIN, Reply, deployment_ids, message_ids, outcome};
use http::{Method, StatusCode};
use serde_json::{Value, json};

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
        self.api.get_service("acme", id).await
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
    v.sort();
    v
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
/// queues each exactly once. The two services are one record transaction, which the SDK tries
/// `SDK_ATTEMPTS` times; an unavailable store is not retried further. Then, with one service
/// more than a record transaction holds, a store that takes one record transaction and
/// refuses the other: 503, the batch taken is at the new tag and sent, the other untouched;
/// the retry completes the rest and finds the first batch at the new tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_store_refuses_is_a_503_and_changes_nothing() {
    let stack = Stack::new().await;
    stack.container("api", None, "acme/api", "1.0.0").await;
    stack.container("web", None, "acme/api", "1.0.0").await;
    let before = [stack.service("api").await, stack.service("web").await];
    stack.refuse_record_transactions();

    let r = stack.deploy("container", "acme/api", "1.1.0").await;
    assert_unavailable(&r);
    stack.assert_record_transactions_refused(2usize.div_ceil(IMAGE_RECORDS_PER_TRANSACTION));
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

    // One service more than a record transaction holds: two record transactions, the first
    // to reach the store taken, the other refused (each of the SDK's attempts).
    let mut services = vec!["api".to_owned(), "web".to_owned()];
    for i in 0..IMAGE_RECORDS_PER_TRANSACTION - 1 {
        let id = format!("c-{i:02}");
        stack.container(&id, None, "acme/api", "1.1.0").await;
        services.push(id);
    }
    services.sort();
    stack.refuse_the_second_record_transaction();
    let r = stack.deploy("container", "acme/api", "1.2.0").await;
    assert_unavailable(&r);
    stack.assert_one_of_two_record_transactions_refused();
    let mut taken: Vec<String> = Vec::new();
    for id in &services {
        let tag = stack.service(id).await.body["image"]["tag"]
            .as_str()
            .unwrap()
            .to_owned();
        match tag.as_str() {
            "1.2.0" => taken.push(id.clone()),
            "1.1.0" => {}
            other => panic!("{id}: tag {other}"),
        }
    }
    // A whole batch: either the full one or the single service.
    assert!(
        taken.len() == IMAGE_RECORDS_PER_TRANSACTION || taken.len() == 1,
        "{taken:?}"
    );
    let first = stack.aws.drain().await;
    let mut sent: Vec<String> = first
        .iter()
        .map(|m| m.body["service_id"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, taken);
    let others: Vec<String> = services.iter().filter(|s| !taken.contains(s)).cloned().collect();

    stack.aws.store_proxy.pass_through();
    let r = stack.deploy("container", "acme/api", "1.2.0").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let each = |ids: &[String], value: &str| -> Vec<(String, String)> {
        ids.iter().map(|id| (id.clone(), value.to_owned())).collect()
    };
    assert_eq!(outcome(&r), (each(&others, "QUEUED"), each(&taken, "SAME_TAG")));
    assert_eq!(message_ids(&stack.aws.drain().await), deployment_ids(&r));
    // Two for the first notification, one per service for the second.
    assert_eq!(stack.log().await.len(), 2 + services.len());
    assert_eq!(stack.aws.relay().await, RelayReport { pending: 0, sent: 0 });
}
