//! The Lambda functions' logic on a real moto endpoint through the real SDK: the
//! `push-webhook` router fed API Gateway v2 events through `lambda_http`'s own conversion, the
//! `image-tag` dispatch between API Gateway requests and EventBridge ECR events, and the
//! relay sending what was recorded while SQS did not answer.

use std::sync::Arc;

use autodeploy_api::admin::NoAdminToken;
use autodeploy_api::aws::lambda_events::{EventError, ImageTagHandler, relay};
use autodeploy_api::aws::{SecretsManagerAdminToken, SqsQueue};
use autodeploy_api::store::{DeploymentQueue, Store};
use autodeploy_api::web::{AppState, push_router};
use autodeploy_tests::fake_lambda::{ECR_REGISTRY, ecr_event, http_api_event, response_body};
use autodeploy_tests::receive_all;
use autodeploy_tests::{ADMIN, Api, WEBHOOK_SECRET, fixture_json, hmac_hex};
use autodeploy_tests::{AwsFixture, aws_fixture, moto_url, set_secret, unique_name};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The settings API over the fixture's table and queue, to configure what the functions read.
fn settings(fx: &AwsFixture) -> Api {
    Api::on(Arc::new(fx.store.clone()), Arc::new(fx.queue.clone()))
}

fn stores(fx: &AwsFixture) -> (Arc<dyn Store>, Arc<dyn DeploymentQueue>) {
    (Arc::new(fx.store.clone()), Arc::new(fx.queue.clone()))
}

/// A queue URL on moto that names no queue: every send fails.
fn missing_queue(fx: &AwsFixture) -> SqsQueue {
    SqsQueue::new(
        fx.sqs.clone(),
        format!("{}/123456789012/{}.fifo", moto_url(), unique_name("missing")),
    )
}

/// Feed an API Gateway v2 event through `lambda_http::request::from_str` to `router`.
async fn via_lambda_http(router: axum::Router, event: &Value) -> (StatusCode, Value) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (status, body)
}

/// A signed GitHub push delivery of `body` as API Gateway hands it over.
fn github_event(org: &str, body: &[u8], delivery: &str, signature: &str, base64: bool) -> Value {
    http_api_event(
        "POST",
        &format!("/organization/{org}/webhooks/github"),
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", signature),
        ],
        Some(body),
        base64,
    )
}

async fn invoke(handler: &ImageTagHandler, event: Value) -> Result<Value, EventError> {
    handler.handle(LambdaEvent::new(event, Context::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_webhook_events_queue_on_sqs() {
    let fx = aws_fixture().await;
    let api = settings(&fx);
    api.set_secret("acme", "github").await;
    let push = fixture_json("github/gp-push.json");
    let url = push["repository"]["clone_url"].as_str().unwrap().to_owned();
    api.app("acme", "api", "GITHUB", &url, "master", json!({})).await;

    let (store, queue) = stores(&fx);
    // The function's state: no admin token at all.
    let router = push_router(AppState::new(store, queue, Arc::new(NoAdminToken)));

    // A text body, then a base64-encoded one (another commit, so that it queues too).
    let mut second = push.clone();
    second["before"] = push["after"].clone();
    second["after"] = json!("0123456789abcdef0123456789abcdef01234567");
    let mut queued: Vec<(String, String)> = Vec::new();
    for (i, (body, base64)) in [(&push, false), (&second, true)].into_iter().enumerate() {
        let body = serde_json::to_vec(body).unwrap();
        let signature = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
        let event = github_event("acme", &body, &format!("delivery-{i}"), &signature, base64);
        let (status, reply) = via_lambda_http(router.clone(), &event).await;
        assert_eq!(status, StatusCode::ACCEPTED, "base64={base64}: {reply}");
        assert_eq!(reply["queued"][0]["service_id"], "api", "{reply}");
        assert_eq!(reply["queued"][0]["status"], "QUEUED", "{reply}");
        queued.push((
            reply["queued"][0]["deployment_id"].as_str().unwrap().to_owned(),
            reply["commit_sha"].as_str().unwrap().to_owned(),
        ));
    }

    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (message, (deployment_id, commit)) in messages.iter().zip(&queued) {
        assert_eq!(message.group, "acme/api");
        assert_eq!(&message.dedup, deployment_id);
        assert_eq!(message.body["deployment_id"], deployment_id.as_str());
        assert_eq!(message.body["git_commit_id"], commit.as_str());
        assert_eq!(message.body["trigger"]["type"], "GIT_PUSH");
    }

    // A bad signature is refused, and nothing more is queued.
    let body = serde_json::to_vec(&push).unwrap();
    let forged = format!("sha256={}", hmac_hex("not-the-secret-at-all", &body));
    let (status, reply) = via_lambda_http(router.clone(), &github_event("acme", &body, "d-x", &forged, false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_eq!(reply["error"]["code"], "UNAUTHORIZED");

    // API Gateway hands a function repeated header fields joined with commas: two delivery ids
    // in one field are refused as two fields are on the standalone server.
    let signature = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body));
    let mut joined = github_event("acme", &body, "d-1", &signature, false);
    joined["headers"]["x-github-delivery"] = json!("d-1,d-2");
    let (status, reply) = via_lambda_http(router.clone(), &joined).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"]["details"][0]["field"], "X-GitHub-Delivery", "{reply}");

    // The settings API is not this function's.
    let list = http_api_event(
        "GET",
        "/organization/acme/services",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
        false,
    );
    let (status, reply) = via_lambda_http(router.clone(), &list).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    let put_secret = http_api_event(
        "PUT",
        "/organization/acme/webhook-secrets/github",
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("content-type", "application/json"),
        ],
        Some(br#"{"secret": "another-secret-0123456789"}"#),
        false,
    );
    let (status, _) = via_lambda_http(router.clone(), &put_secret).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.is_empty());
}

/// The admin token from Secrets Manager on moto: fetched on first use, not before.
async fn admin_from_secret(fx: &AwsFixture, token: &str) -> Arc<SecretsManagerAdminToken> {
    let name = unique_name("admin-token");
    let admin = Arc::new(SecretsManagerAdminToken::new(&fx.config, &name));
    // Built before the secret exists: building reads nothing.
    set_secret(&fx.config, &name, token).await;
    admin
}

/// CI calls with an organization token do not depend on Secrets Manager, which holds only the
/// admin token: with the admin token's secret missing, a `deploy` token still deploys; only a
/// token that is no organization's needs the admin token to be told apart (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_tokens_work_without_the_admin_token() {
    let fx = aws_fixture().await;
    let api = settings(&fx);
    container(&api, "acme", "web", "docker.io", "acme/web", "1.0.0").await;
    let ci = api.token("acme", &["deploy"]).await;
    // A secret that does not exist: every read of the admin token fails.
    let admin = Arc::new(SecretsManagerAdminToken::new(
        &fx.config,
        unique_name("missing-admin-token"),
    ));
    let (store, queue) = stores(&fx);
    let handler = ImageTagHandler::new(AppState::new(store, queue, admin), Some("acme"));
    let deploy = |token: &str, tag: &str| {
        http_api_event(
            "POST",
            "/organization/acme/container/deploy",
            &[
                ("authorization", &format!("Token {token}")),
                ("content-type", "application/json"),
            ],
            Some(format!(r#"{{"image_name": "acme/web", "tag": "{tag}"}}"#).as_bytes()),
            false,
        )
    };
    let response = invoke(&handler, deploy(&ci, "1.1.0")).await.expect("an HTTP answer");
    assert_eq!(response["statusCode"], 202, "{response}");
    for stranger in [
        format!("adt_{}", "0".repeat(64)),
        "not-an-organization-token".to_owned(),
    ] {
        let response = invoke(&handler, deploy(&stranger, "1.2.0"))
            .await
            .expect("an HTTP answer");
        assert_eq!(response["statusCode"], 503, "{stranger}: {response}");
        assert_eq!(response_body(&response)["error"]["code"], "UNAVAILABLE");
    }
}

async fn container(api: &Api, org: &str, id: &str, registry: &str, image: &str, tag: &str) {
    let r = api
        .put_service(
            org,
            id,
            json!({
                "environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
                "image": {"registry": registry, "image_name": image, "tag": tag},
            }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tag_serves_http_api_requests() {
    let fx = aws_fixture().await;
    let api = settings(&fx);
    container(&api, "acme", "web", "docker.io", "acme/web", "1.0.0").await;
    let admin_token = "admin-token-in-secrets-manager-0123";
    let admin = admin_from_secret(&fx, admin_token).await;
    let (store, queue) = stores(&fx);
    let handler = ImageTagHandler::new(AppState::new(store, queue, admin), Some("acme"));

    let deploy = |token: &str, base64: bool| {
        http_api_event(
            "POST",
            "/organization/acme/container/deploy",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            Some(br#"{"image_name": "acme/web", "tag": "1.1.0"}"#),
            base64,
        )
    };
    let response = invoke(&handler, deploy("wrong-token", false))
        .await
        .expect("an HTTP answer");
    assert_eq!(response["statusCode"], 401, "{response}");
    assert_eq!(response_body(&response)["error"]["code"], "UNAUTHORIZED");

    let response = invoke(&handler, deploy(admin_token, true))
        .await
        .expect("an HTTP answer");
    assert_eq!(response["statusCode"], 202, "{response}");
    let body = response_body(&response);
    assert_eq!(body["queued"][0]["service_id"], "web", "{body}");
    assert_eq!(body["queued"][0]["status"], "QUEUED", "{body}");
    let deployment_id = body["queued"][0]["deployment_id"].as_str().unwrap().to_owned();

    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/web");
    assert_eq!(messages[0].dedup, deployment_id);
    assert_eq!(messages[0].body["image_tag"], "1.1.0");
    assert_eq!(messages[0].body["trigger"]["source"], "API");

    // Errors keep the API's shape and status; routes of other functions are 404.
    let bad = http_api_event(
        "POST",
        "/organization/acme/container/deploy",
        &[
            ("authorization", &format!("Bearer {admin_token}")),
            ("content-type", "application/json"),
        ],
        Some(b"{not json"),
        false,
    );
    let response = invoke(&handler, bad).await.expect("an HTTP answer");
    assert_eq!(response["statusCode"], 400, "{response}");
    assert_eq!(response_body(&response)["error"]["code"], "MALFORMED_BODY");
    let push = http_api_event("POST", "/organization/acme/webhooks/github", &[], Some(b"{}"), false);
    let response = invoke(&handler, push).await.expect("an HTTP answer");
    assert_eq!(response["statusCode"], 404, "{response}");

    // A Docker Hub webhook with a wrong secret in its path: 401, and the secret is not echoed.
    api.set_secret("acme", "dockerhub").await;
    let hook = http_api_event(
        "POST",
        "/organization/acme/registry-webhooks/dockerhub/guessed-secret-0123456789",
        &[("content-type", "application/json")],
        Some(b"{}"),
        false,
    );
    let response = invoke(&handler, hook).await.expect("an HTTP answer");
    assert_eq!(response["statusCode"], 401, "{response}");
    assert!(!response.to_string().contains("guessed-secret"), "{response}");

    // Payload format 1.0 is refused clearly.
    let mut v1 = deploy(admin_token, false);
    v1["version"] = json!("1.0");
    let err = invoke(&handler, v1).await.expect_err("payload format 1.0");
    assert!(matches!(err, EventError::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("2.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tag_deploys_ecr_pushes() {
    let fx = aws_fixture().await;
    let api = settings(&fx);
    container(&api, "acme", "api", ECR_REGISTRY, "team/api", "1.3.0").await;
    // Same path on another registry, and another organization on the same registry: untouched.
    container(&api, "acme", "hub", "docker.io", "team/api", "1.3.0").await;
    container(&api, "other", "api", ECR_REGISTRY, "team/api", "1.3.0").await;
    let (store, queue) = stores(&fx);
    let handler = ImageTagHandler::new(AppState::new(store, queue, Arc::new(NoAdminToken)), Some("acme"));
    assert_eq!(handler.ecr_organization(), Some("acme"));

    let outcome = invoke(&handler, ecr_event("PUSH", "team/api", "1.4.0"))
        .await
        .expect("the push deploys");
    assert_eq!(outcome["status"], 202, "{outcome}");
    assert_eq!(outcome["source"], "ECR", "{outcome}");
    assert_eq!(outcome["registry"], ECR_REGISTRY, "{outcome}");
    assert_eq!(outcome["queued"].as_array().unwrap().len(), 1, "{outcome}");
    assert_eq!(outcome["queued"][0]["service_id"], "api", "{outcome}");
    assert_eq!(outcome["queued"][0]["previous_tag"], "1.3.0", "{outcome}");
    let deployment_id = outcome["queued"][0]["deployment_id"].as_str().unwrap().to_owned();

    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/api");
    assert_eq!(messages[0].dedup, deployment_id);
    let trigger = &messages[0].body["trigger"];
    assert_eq!(trigger["type"], "IMAGE_TAG");
    assert_eq!(trigger["source"], "ECR");
    assert_eq!(trigger["registry"], ECR_REGISTRY);
    assert_eq!(trigger["image_name"], "team/api");
    assert_eq!(trigger["tag"], "1.4.0");

    // The same event again (EventBridge delivers at least once): nothing more.
    let again = invoke(&handler, ecr_event("PUSH", "team/api", "1.4.0")).await.unwrap();
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(again["skipped"][0]["reason"], "SAME_TAG", "{again}");

    // A deletion, a push by digest only, another EventBridge event: ignored, answered OK.
    let deleted = invoke(&handler, ecr_event("DELETE", "team/api", "1.4.0"))
        .await
        .unwrap();
    assert_eq!(deleted["status"], 200, "{deleted}");
    assert_eq!(deleted["ignored"], "UNSUPPORTED_EVENT", "{deleted}");
    // Naming what was not deployed, as the deliveries history does.
    assert_eq!(
        (&deleted["registry"], &deleted["image_name"], &deleted["tag"]),
        (&json!(ECR_REGISTRY), &json!("team/api"), &json!("1.4.0")),
        "{deleted}"
    );
    let mut untagged = ecr_event("PUSH", "team/api", "x");
    untagged["detail"].as_object_mut().unwrap().remove("image-tag");
    let untagged = invoke(&handler, untagged).await.unwrap();
    assert_eq!(untagged["ignored"], "UNSUPPORTED_EVENT", "{untagged}");
    let mut scheduled = ecr_event("PUSH", "team/api", "1.5.0");
    scheduled["source"] = json!("aws.events");
    scheduled["detail-type"] = json!("Scheduled Event");
    let scheduled = invoke(&handler, scheduled).await.unwrap();
    assert_eq!(scheduled["ignored"], "UNSUPPORTED_EVENT", "{scheduled}");
    assert!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.is_empty());

    // An ECR event that is not what EventBridge sends, and an event of no known shape.
    let mut broken = ecr_event("PUSH", "team/api", "1.5.0");
    broken["account"] = json!("not-an-account");
    let err = invoke(&handler, broken).await.expect_err("a malformed ECR event");
    assert!(matches!(err, EventError::MalformedEvent(_)), "{err:?}");
    let err = invoke(&handler, json!({"Records": [{"eventSource": "aws:sqs"}]}))
        .await
        .expect_err("an unknown event");
    assert!(matches!(err, EventError::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("EventBridge"), "{err}");
    let err = invoke(&handler, json!("hello")).await.expect_err("not an object");
    assert!(matches!(err, EventError::Unsupported(_)), "{err:?}");

    // The other organization and the Docker Hub container kept their tags.
    let other = api
        .call(Method::GET, "/organization/other/services/api", Some(ADMIN), None)
        .await;
    assert_eq!(other.body["image"]["tag"], "1.3.0");
    let hub = api
        .call(Method::GET, "/organization/acme/services/hub", Some(ADMIN), None)
        .await;
    assert_eq!(hub.body["image"]["tag"], "1.3.0");

    // The organization's deliveries history holds each event the function answered.
    let history = api
        .call(
            Method::GET,
            "/organization/acme/deliveries?source=ecr",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let summary: Vec<(String, u64, String)> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["outcome"].as_str().unwrap().to_owned(),
                d["http_status"].as_u64().unwrap(),
                d["tag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let row = |outcome: &str, status: u64, tag: &str| (outcome.to_owned(), status, tag.to_owned());
    assert_eq!(
        summary,
        vec![
            row("REJECTED", 400, ""),
            row("IGNORED", 200, ""),
            row("IGNORED", 200, ""),
            // The deletion names the tag it deleted.
            row("IGNORED", 200, "1.4.0"),
            row("NOTHING_TO_DEPLOY", 200, "1.4.0"),
            row("QUEUED", 202, "1.4.0"),
        ]
    );
    // The push by digest alone names its image, with no tag; the scheduled event names none.
    let image = |i: usize| history.body["items"][i]["image"].clone();
    assert_eq!(
        (image(1), image(2), image(3)),
        (
            Value::Null,
            json!(format!("{ECR_REGISTRY}/team/api")),
            json!(format!("{ECR_REGISTRY}/team/api"))
        )
    );
    let queued = &history.body["items"][5];
    assert_eq!(queued["queued"], json!([deployment_id]));
    assert_eq!(queued["image"], format!("{ECR_REGISTRY}/team/api"));
    assert_eq!(
        history.body["items"][4]["skipped"],
        json!([{"service_id": "api", "reason": "SAME_TAG"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_events_need_an_organization() {
    let fx = aws_fixture().await;
    let api = settings(&fx);
    container(&api, "acme", "api", ECR_REGISTRY, "team/api", "1.3.0").await;
    for configured in [None, Some(""), Some("not an id!")] {
        let (store, queue) = stores(&fx);
        let handler = ImageTagHandler::new(AppState::new(store, queue, Arc::new(NoAdminToken)), configured);
        assert_eq!(handler.ecr_organization(), None);
        let err = invoke(&handler, ecr_event("PUSH", "team/api", "1.4.0"))
            .await
            .expect_err("no organization for ECR events");
        assert!(matches!(err, EventError::EcrNotConfigured(_)), "{err:?}");
        assert!(err.to_string().contains("AUTODEPLOY_ECR_ORGANIZATION"), "{err}");

        // HTTP requests are served all the same.
        let health = invoke(&handler, http_api_event("GET", "/health", &[], None, false))
            .await
            .expect("an HTTP answer");
        assert_eq!(health["statusCode"], 200, "{health}");
    }
    assert!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.is_empty());
    let service = api
        .call(Method::GET, "/organization/acme/services/api", Some(ADMIN), None)
        .await;
    assert_eq!(service.body["image"]["tag"], "1.3.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sends_what_was_recorded_while_sqs_was_down() {
    let fx = aws_fixture().await;
    let down = missing_queue(&fx);
    // The API while the queue does not answer.
    let api = Api::on(Arc::new(fx.store.clone()), Arc::new(down.clone()));
    api.set_secret("acme", "github").await;
    let push = fixture_json("github/gp-push.json");
    let url = push["repository"]["clone_url"].as_str().unwrap().to_owned();
    api.app("acme", "api", "GITHUB", &url, "master", json!({})).await;
    let body = serde_json::to_vec(&push).unwrap();
    let reply = api.push("acme", "github", &body, "delivery-while-down").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["queued"][0]["status"], "PENDING", "{}", reply.body);
    let deployment_id = reply.body["queued"][0]["deployment_id"].as_str().unwrap().to_owned();
    let log = api.deployments("acme").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "PENDING");

    // A relay run while the queue is still down sends nothing and fails nothing.
    let report = relay(&fx.store, &down).await.expect("the store answers");
    assert_eq!((report.pending, report.sent), (1, 0));
    assert_eq!(api.deployments("acme").await[0]["status"], "PENDING");

    // The queue answers again: the next run sends it, once.
    let report = relay(&fx.store, &fx.queue).await.expect("the store answers");
    assert_eq!((report.pending, report.sent), (1, 1));
    let log = api.deployments("acme").await;
    assert_eq!(log[0]["status"], "QUEUED");
    assert_eq!(log[0]["deployment_id"], deployment_id.as_str());
    let messages = receive_all(&fx.sqs, &fx.queues.deployments.url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].group, "acme/api");
    assert_eq!(messages[0].dedup, deployment_id);
    assert_eq!(messages[0].body["deployment_id"], deployment_id.as_str());

    // And the run after sends nothing.
    let report = relay(&fx.store, &fx.queue).await.expect("the store answers");
    assert_eq!((report.pending, report.sent), (0, 0));
    assert!(receive_all(&fx.sqs, &fx.queues.deployments.url).await.is_empty());
    // The report is what the function logs and returns.
    assert_eq!(serde_json::to_value(report).unwrap(), json!({"pending": 0, "sent": 0}));
}
