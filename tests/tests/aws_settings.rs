//! The settings API end to end on DynamoDB (moto, through the real AWS SDK): the service
//! lifecycle, ETags and `If-Match` as conditional writes, 20 concurrent PATCHes with one ETag,
//! list pages, tokens and authentication, webhook secrets, and health with the store down
//! (through a fault proxy). The same API runs on SQLite in `settings_api.rs`; the validation
//! rules, which do not touch the store, are tested there only.

mod common;

use std::sync::Arc;

use autodeploy_tests::aws_fixture;
use autodeploy_tests::fault_proxy::{Fault, FaultyAws};
use axum::body::Body;
use common::{ADMIN, Api, WEBHOOK_SECRET};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

/// The router on a fresh table and queue.
async fn aws_api() -> Api {
    let aws = aws_fixture().await;
    Api::on(Arc::new(aws.store), Arc::new(aws.queue))
}

fn app_body() -> Value {
    json!({
        "environment_id": "production", "name": "API", "kind": "APPLICATION",
        "auto_deploy": true,
        "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop.git",
                           "branch": "main", "root_path": "/"},
        "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "services/api/"}],
        "image": null,
        "tag_policy": null
    })
}

const API_PATH: &str = "/organization/acme/services/api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store() {
    let aws = FaultyAws::new().await;
    let api = Api::on(aws.store.clone(), aws.queue.clone());
    let r = api.call(Method::GET, "/health", None, None).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"status": "ok"})));
    aws.store_proxy.set(Fault::unavailable());
    let r = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    // A settings read with the store down is a 503 too, never a 404 or a 500.
    let r = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    aws.store_proxy.pass_through();
    let r = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle() {
    let api = aws_api().await;
    let r = api.put_service("acme", "api", app_body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first_etag = r.etag();
    assert_eq!(r.body["id"], "api");
    assert_eq!(r.body["organization_id"], "acme");
    assert_eq!(r.body["version"], 1);
    assert!(r.body["created_at"].is_string() && r.body["updated_at"].is_string());

    let got = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.etag(), first_etag);
    assert_eq!(got.body, r.body);

    // GET → edit → PUT round trip.
    let mut edited = got.body.clone();
    edited["name"] = json!("API v2");
    let r = api.put_service("acme", "api", edited).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["version"].as_u64(), r.body["name"].as_str()),
        (Some(2), Some("API v2"))
    );
    assert_eq!(r.body["created_at"], got.body["created_at"]);
    assert_ne!(r.etag(), first_etag);
    let mut etags = vec![first_etag.clone(), r.etag()];

    // A merge patch, both media types.
    let req = Request::patch(API_PATH)
        .header("authorization", format!("Token {ADMIN}"))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"auto_deploy": false, "deployment_restrictions": null}"#))
        .unwrap();
    let r = api.raw(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["auto_deploy"], false);
    assert_eq!(r.body["deployment_restrictions"], json!([]));
    assert_eq!(r.body["version"], 3);
    etags.push(r.etag());
    let r = api
        .call(
            Method::PATCH,
            API_PATH,
            Some(ADMIN),
            Some(json!({"git_repository": {"branch": "release/*"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["git_repository"]["branch"], "release/*");
    assert_eq!(r.body["git_repository"]["url"], "https://github.com/acme/shop.git");
    etags.push(r.etag());
    // What the API answered is what the store holds.
    let got = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!((got.etag(), &got.body), (r.etag(), &r.body));

    // A patch that breaks a rule changes nothing.
    let r = api
        .call(Method::PATCH, API_PATH, Some(ADMIN), Some(json!({"kind": "CONTAINER"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let again = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!((again.etag(), &again.body), (got.etag(), &got.body));

    let r = api.call(Method::DELETE, API_PATH, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    for method in [Method::GET, Method::DELETE] {
        let r = api.call(method, API_PATH, Some(ADMIN), None).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    }
    let r = api
        .call(Method::PATCH, API_PATH, Some(ADMIN), Some(json!({"auto_deploy": true})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An ETag of the deleted service does not match anything now.
    let r = api
        .call_with(
            Method::PUT,
            API_PATH,
            Some(ADMIN),
            Some(app_body()),
            &[("if-match", etags.last().unwrap())],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    // Re-created, deleted and re-created again: the version starts over, the ETag never
    // repeats one this id had.
    for _ in 0..2 {
        let r = api.put_service("acme", "api", app_body()).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body["version"], 1);
        assert!(!etags.contains(&r.etag()), "{} reused", r.etag());
        etags.push(r.etag());
        let r = api.call(Method::DELETE, API_PATH, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_gives_optimistic_concurrency() {
    let api = aws_api().await;
    let etag = api.put_service("acme", "api", app_body()).await.etag();
    let patch = Some(json!({"auto_deploy": false}));

    let r = api
        .call_with(
            Method::PATCH,
            API_PATH,
            Some(ADMIN),
            patch.clone(),
            &[("if-match", etag.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = r.etag();

    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let body = match method {
            Method::PUT => Some(app_body()),
            Method::PATCH => patch.clone(),
            _ => None,
        };
        let r = api
            .call_with(
                method.clone(),
                API_PATH,
                Some(ADMIN),
                body,
                &[("if-match", etag.as_str())],
            )
            .await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            "{method}"
        );
    }
    // The stale writes changed nothing.
    let got = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!((got.etag(), got.body["version"].as_u64()), (fresh.clone(), Some(2)));

    // `*` needs the service to exist.
    let r = api
        .call_with(
            Method::PUT,
            "/organization/acme/services/new",
            Some(ADMIN),
            Some(app_body()),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = api
        .call_with(
            Method::PUT,
            API_PATH,
            Some(ADMIN),
            Some(app_body()),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .call_with(
            Method::DELETE,
            API_PATH,
            Some(ADMIN),
            None,
            &[("if-match", fresh.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "the PUT changed the ETag");
    let current = api.call(Method::GET, API_PATH, Some(ADMIN), None).await.etag();
    let r = api
        .call_with(
            Method::DELETE,
            API_PATH,
            Some(ADMIN),
            None,
            &[("if-match", current.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

/// SPEC's optimistic concurrency under a real race: twenty PATCHes with the same `If-Match`
/// at once, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_patches_with_one_etag_one_wins() {
    let api = Arc::new(aws_api().await);
    let etag = api.put_service("acme", "api", app_body()).await.etag();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = Arc::clone(&api);
        let etag = etag.clone();
        tasks.push(tokio::spawn(async move {
            let r = api
                .call_with(
                    Method::PATCH,
                    API_PATH,
                    Some(ADMIN),
                    Some(json!({"name": format!("name {i}")})),
                    &[("if-match", etag.as_str())],
                )
                .await;
            (r.status, r.body)
        }));
    }
    let mut winners = Vec::new();
    let mut stale = 0;
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::OK, body) => winners.push(body),
            (StatusCode::PRECONDITION_FAILED, _) => stale += 1,
            (other, body) => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((winners.len(), stale), (1, 19));
    let r = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["name"], winners[0]["name"]);
}

/// Without `If-Match`, concurrent patches of different fields all apply: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_without_if_match_lose_nothing() {
    let api = Arc::new(aws_api().await);
    api.put_service("acme", "api", app_body()).await;
    let patches = [
        json!({"name": "Renamed"}),
        json!({"auto_deploy": false}),
        json!({"environment_id": "staging"}),
        json!({"git_repository": {"branch": "develop"}}),
    ];
    let mut tasks = Vec::new();
    for patch in patches {
        let api = Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            api.call(Method::PATCH, API_PATH, Some(ADMIN), Some(patch)).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let r = api.call(Method::GET, API_PATH, Some(ADMIN), None).await;
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["auto_deploy"], false);
    assert_eq!(r.body["environment_id"], "staging");
    assert_eq!(r.body["git_repository"]["branch"], "develop");
    assert_eq!(r.body["version"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_in_id_order() {
    let api = aws_api().await;
    for id in ["c", "a", "e", "b", "d"] {
        assert_eq!(
            api.put_service("acme", id, app_body()).await.status,
            StatusCode::CREATED
        );
    }
    api.put_service("other", "zz", app_body()).await;
    // Other records of the organization share its partition; they are never listed.
    api.token("acme", &["deploy"]).await;
    api.set_secret("acme", "github").await;

    for limit in [1, 2, 3, 5] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/organization/acme/services?limit={limit}&cursor={c}"),
                None => format!("/organization/acme/services?limit={limit}"),
            };
            let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let items = r.body["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            seen.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
            pages += 1;
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, vec!["a", "b", "c", "d", "e"], "limit {limit}");
        assert_eq!(pages, 5usize.div_ceil(limit), "limit {limit}");
    }
    let r = api
        .call(Method::GET, "/organization/acme/services", Some(ADMIN), None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["next_cursor"], Value::Null);

    // A cursor is bound to its organization and its list.
    let r = api
        .call(Method::GET, "/organization/acme/services?limit=1", Some(ADMIN), None)
        .await;
    let c = r.body["next_cursor"].as_str().unwrap().to_owned();
    for path in [
        format!("/organization/other/services?cursor={c}"),
        format!("/organization/acme/tokens?cursor={c}"),
        format!("/organization/acme/deployments?cursor={c}"),
        "/organization/acme/services?cursor=garbage".to_owned(),
    ] {
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.error_fields(), vec!["cursor"], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_scopes() {
    let api = aws_api().await;
    api.put_service("acme", "api", app_body()).await;

    let r = api.call(Method::GET, API_PATH, None, None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    for header in ["Basic abc", "Token", "Bearer ", "Token wrong-token"] {
        let req = Request::get(API_PATH)
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(api.raw(req).await.status, StatusCode::UNAUTHORIZED, "{header}");
    }
    for scheme in ["Token", "Bearer"] {
        let req = Request::get(API_PATH)
            .header("authorization", format!("{scheme} {ADMIN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(api.raw(req).await.status, StatusCode::OK, "{scheme}");
    }

    let manage = api.token("acme", &["manage"]).await;
    let deploy = api.token("acme", &["deploy"]).await;
    let other = api.token("other", &["manage", "deploy"]).await;
    assert_eq!(
        api.call(Method::GET, API_PATH, Some(&manage), None).await.status,
        StatusCode::OK
    );
    let r = api.call(Method::GET, API_PATH, Some(&deploy), None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert_eq!(
        api.call(Method::GET, API_PATH, Some(&other), None).await.status,
        StatusCode::FORBIDDEN
    );
    // The deploy scope opens the image-tag endpoints of its organization only.
    let deploy_body = Some(json!({"image_name": "acme/api", "tag": "1.0.0"}));
    let r = api
        .call(
            Method::POST,
            "/organization/acme/container/deploy",
            Some(&deploy),
            deploy_body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api
        .call(
            Method::POST,
            "/organization/acme/container/deploy",
            Some(&manage),
            deploy_body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Tokens are the admin's alone.
    for (method, p) in [
        (Method::GET, "/organization/acme/tokens"),
        (Method::POST, "/organization/acme/tokens"),
        (Method::DELETE, "/organization/acme/tokens/abc"),
    ] {
        let body = (method == Method::POST).then(|| json!({"name": "x"}));
        let r = api.call(method, p, Some(&manage), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_listed_in_pages_and_revocable() {
    let api = aws_api().await;
    let r = api
        .call(
            Method::POST,
            "/organization/acme/tokens",
            Some(ADMIN),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["scopes"], json!(["deploy", "manage"]));
    let token = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        api.token("acme", &["deploy"]).await;
    }
    api.token("other", &["deploy"]).await;

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/organization/acme/tokens?limit=2&cursor={c}"),
            None => "/organization/acme/tokens?limit=2".to_owned(),
        };
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(!String::from_utf8_lossy(&r.raw).contains(&token[4..]));
        for item in r.body["items"].as_array().unwrap() {
            assert!(item.get("token").is_none(), "{item}");
            listed.push(item["id"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&id));
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "tokens come in id order");

    let services = "/organization/acme/services";
    assert_eq!(
        api.call(Method::GET, services, Some(&token), None).await.status,
        StatusCode::OK
    );
    let revoke = format!("/organization/acme/tokens/{id}");
    assert_eq!(
        api.call(Method::DELETE, &revoke, Some(ADMIN), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &revoke, Some(ADMIN), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, services, Some(&token), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Another organization cannot revoke it under its own path.
    let r = api
        .call(Method::GET, "/organization/other/tokens", Some(ADMIN), None)
        .await;
    let other_id = r.body["items"][0]["id"].as_str().unwrap().to_owned();
    let r = api
        .call(
            Method::DELETE,
            &format!("/organization/acme/tokens/{other_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_are_stored_and_never_echoed() {
    let api = aws_api().await;
    let path = "/organization/acme/webhook-secrets/github";
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!((r.status, &r.body["configured"]), (StatusCode::OK, &json!(false)));

    let secret = WEBHOOK_SECRET;
    let r = api
        .call(Method::PUT, path, Some(ADMIN), Some(json!({"secret": secret})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.body["configured"], true);
    assert!(r.body["set_at"].is_string());
    assert!(!String::from_utf8_lossy(&r.raw).contains(secret));
    // Secrets are per organization and per provider.
    for other in [
        "/organization/other/webhook-secrets/github",
        "/organization/acme/webhook-secrets/gitlab",
    ] {
        let r = api.call(Method::GET, other, Some(ADMIN), None).await;
        assert_eq!(r.body["configured"], false, "{other}");
    }
    // The stored secret is the one deliveries are verified with.
    let body = common::fixture("github/gp-push.json");
    let r = api.push("acme", "github", &body, "d-1").await;
    assert_eq!(r.status, StatusCode::OK, "no services, but verified: {}", r.body);
    let r = api.push("other", "github", &body, "d-1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    assert_eq!(
        api.call(Method::DELETE, path, Some(ADMIN), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, path, Some(ADMIN), None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = api.push("acme", "github", &body, "d-2").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "fails closed once removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_list_starts_empty() {
    let api = aws_api().await;
    let r = api
        .call(Method::GET, "/organization/acme/deployments", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"items": [], "next_cursor": null}));
    let r = api
        .call(
            Method::GET,
            "/organization/acme/deployments?service_id=api&limit=5",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.body, json!({"items": [], "next_cursor": null}));
}
