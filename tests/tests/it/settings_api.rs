//! The settings API end to end, in-process through the real router: every route, every
//! validation rule, authentication and malformed input. Cases that touch the store run on both
//! stores (SQLite, and DynamoDB on moto); validation and parsing, which do not, on SQLite.

use std::sync::Arc;

use autodeploy_api::admin::NoAdminToken;
use autodeploy_api::store::InStoreQueue;
use autodeploy_api::web::AppState;
use autodeploy_tests::fault_proxy::{Fault, FaultyAws};
use autodeploy_tests::{ADMIN, Api, Reply, fixture_bytes, git_providers, on_both_stores};
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

on_both_stores! {
    service_lifecycle, if_match_gives_optimistic_concurrency, twenty_concurrent_patches_with_one_etag_one_wins,
    concurrent_patches_without_if_match_lose_nothing, list_pages_in_id_order, authentication_and_scopes,
    tokens_are_shown_once_and_revocable, webhook_secrets_are_never_echoed, deployments_list_starts_empty,
    a_write_that_changes_nothing_keeps_the_version_and_etag,
}

/// A caller without access is refused (403) before its body is read: a malformed or invalid
/// body tells it nothing, on every route that takes one.
#[tokio::test]
async fn access_is_checked_before_the_body() {
    let api = Api::new();
    let id = "0123456789abcdef0123456789abcdef";
    let routes: Vec<(Method, String, Vec<&str>)> = vec![
        (Method::PUT, "services/api".into(), vec!["deploy", "consume"]),
        (Method::PATCH, "services/api".into(), vec!["deploy", "consume"]),
        (Method::PUT, "targets/engine".into(), vec!["deploy", "consume"]),
        (Method::PUT, "webhook-secrets/github".into(), vec!["deploy", "consume"]),
        (Method::POST, "tokens".into(), vec!["manage", "deploy", "consume"]),
        (Method::POST, "container/deploy".into(), vec!["manage", "consume"]),
        (Method::POST, "job/deploy".into(), vec!["manage", "consume"]),
        (Method::POST, "deployments/lease".into(), vec!["manage", "deploy"]),
        (Method::POST, format!("deployments/{id}/ack"), vec!["manage", "deploy"]),
        (Method::POST, format!("deployments/{id}/nack"), vec!["manage", "deploy"]),
        (
            Method::POST,
            format!("deployments/{id}/extend"),
            vec!["manage", "deploy"],
        ),
        (
            Method::POST,
            format!("deployments/{id}/result"),
            vec!["manage", "deploy"],
        ),
    ];
    let other_org = api.token("other", &["manage", "deploy", "consume"]).await;
    let mut checked = 0;
    for (method, route, scopes) in &routes {
        let mut tokens = vec![other_org.clone()];
        for scope in scopes {
            tokens.push(api.token("acme", &[scope]).await);
        }
        let path = format!("/organization/acme/{route}");
        for token in &tokens {
            for body in ["{", "[]", r#"{"bogus": 1, "max": "many"}"#] {
                let content_type = if *method == Method::PATCH {
                    "application/merge-patch+json"
                } else {
                    "application/json"
                };
                let req = Request::builder()
                    .method(method.clone())
                    .uri(&path)
                    .header("authorization", format!("Token {token}"))
                    .header("content-type", content_type)
                    .body(Body::from(body))
                    .unwrap();
                let r = api.raw(req).await;
                assert_eq!(
                    (r.status, r.error_code()),
                    (StatusCode::FORBIDDEN, "FORBIDDEN"),
                    "{method} {path} {body}: {}",
                    r.body
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * (routes.iter().map(|(_, _, s)| s.len() + 1).sum::<usize>()));
}

/// A valid service document of `tests/fixtures/services/` (`application`, `container`).
fn service_document(name: &str) -> Value {
    let path = format!("services/{name}.json");
    serde_json::from_slice(&fixture_bytes(&path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An auto-deployed APPLICATION following a GitHub repository, under a path restriction.
fn app_body() -> Value {
    service_document("application")
}

/// An auto-deployed CONTAINER on `ghcr.io` under a SEMVER tag policy.
fn container_body() -> Value {
    service_document("container")
}

/// A 400 for a body with `autodeploy`, suggesting the field meant.
fn assert_suggests_auto_deploy(r: &Reply) {
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("autodeploy: is not a known field here; perhaps `auto_deploy`.")
        ),
        "{}",
        r.body
    );
}

/// `body` merged with the JSON merge patch `patch`.
fn patched(mut body: Value, patch: &Value) -> Value {
    json_patch::merge(&mut body, patch);
    body
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let api = Api::new();
    let r = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let api = Api::new();
    let r = api.call(Method::GET, "/nope", Some(ADMIN), None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let r = api
        .call(Method::POST, "/organization/acme/services", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn service_lifecycle(api: Api) {
    let path = "/organization/acme/services/api";
    let r = api.put_service("acme", "api", app_body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let first_etag = r.etag();
    assert_eq!(r.body["id"], "api");
    assert_eq!(r.body["organization_id"], "acme");
    assert_eq!(r.body["version"], 1);
    assert!(r.body["created_at"].is_string() && r.body["updated_at"].is_string());

    let got = api.get_service("acme", "api").await;
    assert_eq!(got.etag(), first_etag);
    assert_eq!(got.body, r.body);

    // GET → edit → PUT round trip: server fields are accepted when they agree.
    let mut edited = got.body.clone();
    edited["name"] = json!("API v2");
    let r = api.put_service("acme", "api", edited).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["name"], "API v2");
    assert_eq!(r.body["created_at"], got.body["created_at"]);
    assert_ne!(r.etag(), first_etag);

    // PATCH with a merge patch, both media types.
    let r = api.call_with(Method::PATCH, path, Some(ADMIN), None, &[]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let req = Request::patch(path)
        .header("authorization", format!("Token {ADMIN}"))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"auto_deploy": false, "deployment_restrictions": null}"#))
        .unwrap();
    let r = api.raw(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["auto_deploy"], false);
    assert_eq!(r.body["deployment_restrictions"], json!([]));
    assert_eq!(r.body["version"], 3);
    // A misspelt field of a PATCH meets the stored document, which has the one meant.
    let r = api
        .call(Method::PATCH, path, Some(ADMIN), Some(json!({"autodeploy": true})))
        .await;
    assert_suggests_auto_deploy(&r);
    let patch = json!({"git_repository": {"branch": "release/*"}});
    let r = api.call(Method::PATCH, path, Some(ADMIN), Some(patch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["git_repository"]["branch"], "release/*");
    assert_eq!(r.body["git_repository"]["url"], "https://github.com/acme/shop.git");

    // A patch that breaks a rule is refused and changes nothing.
    let r = api
        .call(Method::PATCH, path, Some(ADMIN), Some(json!({"kind": "CONTAINER"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), vec!["git_repository", "image"]);
    let r = api.call(Method::PATCH, path, Some(ADMIN), Some(json!([1]))).await;
    assert_eq!(r.error_code(), "MALFORMED_BODY");

    let r = api.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.raw.is_empty());
    for method in [Method::GET, Method::DELETE] {
        let r = api.call(method, path, Some(ADMIN), None).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    }
    let r = api
        .call(Method::PATCH, path, Some(ADMIN), Some(json!({"auto_deploy": true})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Re-created: version starts again, but the ETag is new.
    let r = api.put_service("acme", "api", app_body()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["version"], 1);
    assert_ne!(r.etag(), first_etag);
}

async fn if_match_gives_optimistic_concurrency(api: Api) {
    let etag = api.put_service("acme", "api", app_body()).await.etag();
    let path = "/organization/acme/services/api";
    // A write of the service with `If-Match: if_match`: a PATCH turning auto-deploy off, a PUT
    // of the whole document, or a DELETE.
    let write = async |method: Method, path: &str, if_match: &str| {
        let body = match method {
            Method::PUT => Some(app_body()),
            Method::PATCH => Some(json!({"auto_deploy": false})),
            _ => None,
        };
        api.call_with(method, path, Some(ADMIN), body, &[("if-match", if_match)])
            .await
    };

    let r = write(Method::PATCH, path, &etag).await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = r.etag();

    for method in [Method::PATCH, Method::PUT, Method::DELETE] {
        let r = write(method.clone(), path, &etag).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            "{method}"
        );
    }
    let r = write(Method::PUT, path, "not-quoted").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), vec!["If-Match"]);
    // Two If-Match lines are a 400 whichever comes first: `*` must not let a stale ETag pass.
    for lines in [["*", etag.as_str()], [etag.as_str(), "*"]] {
        let patch = Some(json!({"auto_deploy": false}));
        let headers = [("if-match", lines[0]), ("if-match", lines[1])];
        let r = api.call_with(Method::PATCH, path, Some(ADMIN), patch, &headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{lines:?}: {}", r.body);
        assert_eq!(r.error_fields(), vec!["If-Match"]);
    }
    assert_eq!(api.get_service("acme", "api").await.etag(), fresh, "nothing written");
    // If-Match on a service that does not exist.
    let r = write(Method::PUT, "/organization/acme/services/new", "*").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = write(Method::PUT, path, "*").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = write(Method::DELETE, path, &fresh).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "the PUT changed the ETag");
    let current = api.get_service("acme", "api").await.etag();
    let r = write(Method::DELETE, path, &current).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

/// Applying the same state again (an infrastructure-as-code tool's second run) changes
/// nothing: the version and ETag stay, so a client holding the ETag can still write with it.
async fn a_write_that_changes_nothing_keeps_the_version_and_etag(api: Api) {
    let created = api.put_service("acme", "api", app_body()).await;
    let path = "/organization/acme/services/api";
    for (method, body) in [
        (Method::PUT, app_body()),
        (Method::PATCH, json!({})),
        (Method::PATCH, json!({"auto_deploy": created.body["auto_deploy"]})),
    ] {
        let r = api.call(method.clone(), path, Some(ADMIN), Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.body);
        assert_eq!((r.etag(), &r.body), (created.etag(), &created.body), "{method}");
    }
    // A change is one: the next version, a new ETag, written over the one held.
    let r = api
        .call_with(
            Method::PATCH,
            path,
            Some(ADMIN),
            Some(json!({"name": "Renamed"})),
            &[("if-match", &created.etag())],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_ne!(r.etag(), created.etag());
    // The same for a deploy target.
    let target = "/organization/acme/targets/engine";
    let body = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
    let first = api.call(Method::PUT, target, Some(ADMIN), Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = api.call(Method::PUT, target, Some(ADMIN), Some(body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(
        (again.etag(), &again.body["version"]),
        (first.etag(), &first.body["version"])
    );
    assert!(
        again.body.get("secret").is_none(),
        "the kept secret is not shown: {}",
        again.body
    );
}

async fn twenty_concurrent_patches_with_one_etag_one_wins(api: Api) {
    let api = Arc::new(api);
    let etag = api.put_service("acme", "api", app_body()).await.etag();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let api = Arc::clone(&api);
        let etag = etag.clone();
        tasks.push(tokio::spawn(async move {
            api.call_with(
                Method::PATCH,
                "/organization/acme/services/api",
                Some(ADMIN),
                Some(json!({"name": format!("name {i}")})),
                &[("if-match", etag.as_str())],
            )
            .await
            .status
        }));
    }
    let mut ok = 0;
    let mut stale = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PRECONDITION_FAILED => stale += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, stale), (1, 19));
    assert_eq!(api.get_service("acme", "api").await.body["version"], 2);
}

async fn list_pages_in_id_order(api: Api) {
    for id in ["c", "a", "e", "b", "d"] {
        assert_eq!(
            api.put_service("acme", id, app_body()).await.status,
            StatusCode::CREATED
        );
    }
    api.put_service("other", "zz", app_body()).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/organization/acme/services?limit=2&cursor={c}"),
            None => "/organization/acme/services?limit=2".to_owned(),
        };
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let items = r.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["a", "b", "c", "d", "e"]);

    let r = api.admin_get("/organization/acme/services").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["next_cursor"], Value::Null);

    // A cursor is bound to its organization and its list.
    let r = api.admin_get("/organization/acme/services?limit=1").await;
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
    for limit in ["0", "101", "abc", "-3"] {
        let r = api
            .admin_get(&format!("/organization/acme/services?limit={limit}"))
            .await;
        assert_eq!(r.error_fields(), vec!["limit"], "{limit}");
    }
    let r = api.admin_get("/organization/acme/services?limit=100").await;
    assert_eq!(r.status, StatusCode::OK);
    // A parameter given twice is a 400 naming it: which value was meant would be a guess.
    for (path, field) in [
        ("/organization/acme/services?limit=1&limit=2", "limit"),
        (&*format!("/organization/acme/services?cursor={c}&cursor={c}"), "cursor"),
        ("/organization/acme/deployments?service_id=a&service_id=b", "service_id"),
        ("/organization/acme/deployments?status=QUEUED&status=FAILED", "status"),
        ("/organization/acme/deliveries?outcome=QUEUED&outcome=QUEUED", "outcome"),
    ] {
        let r = api.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_eq!(r.error_fields(), vec![field], "{path}");
    }
}

async fn authentication_and_scopes(api: Api) {
    api.put_service("acme", "api", app_body()).await;
    let path = "/organization/acme/services/api";

    // Each 401 names the schemes the API takes (RFC 9110's WWW-Authenticate).
    let challenge = |r: &Reply| {
        r.headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let expected = Some(r#"Bearer realm="autodeploy", Token realm="autodeploy""#.to_owned());
    let r = api.call(Method::GET, path, None, None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert_eq!(challenge(&r), expected);
    for header in ["Basic abc", "Token", "Bearer ", "nonsense", "Token wrong-token"] {
        let req = Request::get(path)
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let r = api.raw(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(challenge(&r), expected, "{header}");
    }
    // A webhook is signed, not authorized by a token: its 401 names no scheme.
    let r = api
        .deliver("/organization/acme/webhooks/github", &[], b"{}".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(challenge(&r), None);
    // Both schemes, any case.
    for scheme in ["Token", "Bearer", "token", "BEARER"] {
        let req = Request::get(path)
            .header("authorization", format!("{scheme} {ADMIN}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(api.raw(req).await.status, StatusCode::OK, "{scheme}");
    }
    // Two Authorization headers are ambiguous, whichever comes first.
    for (first, second) in [(ADMIN, "wrong-token"), ("wrong-token", ADMIN)] {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {first}"))
            .header("authorization", format!("Bearer {second}"))
            .body(Body::empty())
            .unwrap();
        let r = api.raw(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(
            r.body["error"]["message"],
            "Send one Authorization header: this request has several."
        );
    }

    let manage = api.token("acme", &["manage"]).await;
    let deploy = api.token("acme", &["deploy"]).await;
    let other = api.token("other", &["manage", "deploy"]).await;
    assert_eq!(
        api.call(Method::GET, path, Some(&manage), None).await.status,
        StatusCode::OK
    );
    let r = api.call(Method::GET, path, Some(&deploy), None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert_eq!(
        api.call(Method::GET, path, Some(&other), None).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api
        .call(
            Method::PUT,
            "/organization/acme/services/x",
            Some(&other),
            Some(app_body()),
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
    // Auth comes before everything else: no token, no hint about the path.
    let r = api
        .call(Method::GET, "/organization/bad%20org/services", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Where no admin token exists (push-webhook's state), no token is the admin's, and the
    // organizations' tokens work as before.
    let without_admin = Api::on_state(
        Arc::clone(&api.store),
        AppState::new(Arc::clone(&api.store), Arc::new(InStoreQueue), Arc::new(NoAdminToken)),
    );
    let r = without_admin.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    assert_eq!(
        without_admin.call(Method::GET, path, Some(&manage), None).await.status,
        StatusCode::OK
    );
}

async fn tokens_are_shown_once_and_revocable(api: Api) {
    let tokens = "/organization/acme/tokens";
    let r = api
        .call(Method::POST, tokens, Some(ADMIN), Some(json!({"name": "ci"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["scopes"], json!(["deploy", "manage"]));
    let token = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("adt_"));

    let list = api.admin_get(tokens).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["id"], json!(id));
    assert!(list.body["items"][0].get("token").is_none());
    assert!(!String::from_utf8_lossy(&list.raw).contains(&token[4..]));
    let other = api.admin_get("/organization/other/tokens").await;
    assert_eq!(other.body["items"], json!([]));

    // Revoked: the token no longer opens anything, and a second revocation finds nothing.
    let services = "/organization/acme/services";
    let revoke = format!("/organization/acme/tokens/{id}");
    assert_eq!(
        api.call(Method::GET, services, Some(&token), None).await.status,
        StatusCode::OK
    );
    let r = api.call(Method::DELETE, &revoke, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::DELETE, &revoke, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.call(Method::GET, services, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    for (body, fields) in [
        (json!({}), vec!["name"]),
        (json!({"name": ""}), vec!["name"]),
        (json!({"name": 5}), vec!["name"]),
        (json!({"name": "x", "scopes": []}), vec!["scopes"]),
        (json!({"name": "x", "scopes": "deploy"}), vec!["scopes"]),
        (json!({"name": "x", "scopes": ["deploy", "root"]}), vec!["scopes[1]"]),
        (json!({"name": "x", "extra": true}), vec!["extra"]),
    ] {
        let r = api.call(Method::POST, tokens, Some(ADMIN), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.error_fields(), fields, "{body}");
    }
}

async fn webhook_secrets_are_never_echoed(api: Api) {
    let path = "/organization/acme/webhook-secrets/github";
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["configured"], false);
    assert_eq!(r.body["set_at"], Value::Null);

    let secret = "s3cr3t-value-that-is-long-enough";
    let r = api
        .call(Method::PUT, path, Some(ADMIN), Some(json!({"secret": secret})))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.body["configured"], true);
    assert!(r.body["set_at"].is_string());
    assert!(!String::from_utf8_lossy(&r.raw).contains(secret));

    for (body, field) in [
        (json!({"secret": "short"}), "secret"),
        (json!({"secret": 12345678901234567_u64}), "secret"),
        (json!({}), "secret"),
        (json!({"secret": secret, "other": 1}), "other"),
        (json!({"secret": "x".repeat(2000)}), "secret"),
    ] {
        let r = api.call(Method::PUT, path, Some(ADMIN), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.error_fields(), vec![field]);
        assert!(!String::from_utf8_lossy(&r.raw).contains("short"));
    }
    // Every provider takes a secret, the registry that calls us too; an unknown one is refused.
    let put_secret = async |provider: &str| {
        let path = format!("/organization/acme/webhook-secrets/{provider}");
        api.call(Method::PUT, &path, Some(ADMIN), Some(json!({ "secret": secret })))
            .await
    };
    assert_eq!(put_secret("svn").await.error_fields(), vec!["provider"]);
    for provider in git_providers().into_iter().chain(["dockerhub"]) {
        assert_eq!(put_secret(provider).await.status, StatusCode::NO_CONTENT, "{provider}");
    }

    assert_eq!(
        api.call(Method::DELETE, path, Some(ADMIN), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, path, Some(ADMIN), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, path, Some(ADMIN), None).await.body["configured"],
        false
    );
}

async fn deployments_list_starts_empty(api: Api) {
    let r = api.admin_get("/organization/acme/deployments").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"items": [], "next_cursor": null}));
    let r = api
        .admin_get("/organization/acme/deployments?service_id=api&limit=5")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.admin_get("/organization/acme/deployments?service_id=-bad").await;
    assert_eq!(r.error_fields(), vec!["service_id"]);
}

#[tokio::test]
async fn path_identifiers_are_checked() {
    let api = Api::new();
    let long = "a".repeat(64);
    for (path, field) in [
        ("/organization/-acme/services/api".to_owned(), "organization_id"),
        ("/organization/acme/services/a%20b".to_owned(), "service_id"),
        (format!("/organization/acme/services/{long}"), "service_id"),
        ("/organization/acme/services/%FF".to_owned(), "path"),
    ] {
        let r = api.call(Method::PUT, &path, Some(ADMIN), Some(app_body())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.error_fields(), vec![field], "{path}");
    }
    let mut body = app_body();
    body["id"] = json!("other");
    let r = api.put_service("acme", "api", body).await;
    assert_eq!(r.error_fields(), vec!["id"]);
}

/// `tests/fixtures/services/invalid.json`.
#[derive(Deserialize)]
struct InvalidDocuments {
    cases: Vec<Invalid>,
}

/// A case of `tests/fixtures/services/invalid.json`.
#[derive(Deserialize)]
struct Invalid {
    case: String,
    /// The valid document patched: `application` or `container`.
    base: String,
    patch: Value,
    fields: Vec<String>,
}

impl Invalid {
    fn new(case: &str, base: &str, patch: Value, field: &str) -> Self {
        let (case, base, fields) = (case.to_owned(), base.to_owned(), vec![field.to_owned()]);
        Self {
            case,
            base,
            patch,
            fields,
        }
    }
}

/// Each rule of SPEC's service validation, with the fields it must name: the cases of
/// `tests/fixtures/services/invalid.json`, and two too long to write there. Every case is
/// tried, and every one that fails is named.
#[tokio::test]
async fn every_validation_rule_names_its_field() {
    let api = Api::new();
    let fixture: InvalidDocuments = serde_json::from_slice(&fixture_bytes("services/invalid.json")).unwrap();
    let mut cases = fixture.cases;
    let name = json!({"name": "x".repeat(300)});
    cases.push(Invalid::new("a name of 300 characters", "application", name, "name"));
    let tag = json!({"image": {"tag": "x".repeat(129)}});
    cases.push(Invalid::new("a tag of 129 characters", "container", tag, "image.tag"));
    assert_eq!(cases.len(), 40);
    let mut failed = Vec::new();
    for invalid in &cases {
        let (case, fields) = (&invalid.case, &invalid.fields);
        let body = patched(service_document(&invalid.base), &invalid.patch);
        let r = api.put_service("acme", "svc", body).await;
        let refused = (r.status, r.error_code(), r.error_fields());
        if refused != (StatusCode::BAD_REQUEST, "VALIDATION_FAILED", fields.clone()) {
            failed.push(format!("{case}: {} got {refused:?}, not {fields:?}", invalid.patch));
        }
        // A refused URL's credentials never come back.
        assert!(!String::from_utf8_lossy(&r.raw).contains("hunter2"), "{case}");
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );

    // All of these at once: every bad field is named.
    let body = json!({"environment_id": "bad id", "kind": "APPLICATION", "name": "", "auto_deploy": 1,
                      "git_repository": {"provider": "GITHUB", "url": "x", "branch": "a..b"}, "zzz": 0});
    let r = api.put_service("acme", "api", body).await;
    assert_eq!(
        r.error_fields(),
        vec![
            "auto_deploy",
            "environment_id",
            "git_repository.branch",
            "git_repository.url",
            "name",
            "zzz"
        ]
    );

    // A misspelt field says which one was meant, in its detail and in the message.
    let misspelt = patched(app_body(), &json!({"auto_deploy": null, "autodeploy": true}));
    let r = api.put_service("acme", "api", misspelt).await;
    assert_suggests_auto_deploy(&r);

    // The valid forms are accepted: a container, a job on git, a job on an image.
    assert_eq!(
        api.put_service("acme", "c", container_body()).await.status,
        StatusCode::CREATED
    );
    let job_git = patched(app_body(), &json!({"kind": "JOB"}));
    assert_eq!(api.put_service("acme", "j1", job_git).await.status, StatusCode::CREATED);
    let job_image = patched(
        container_body(),
        &json!({"kind": "JOB", "tag_policy": {"type": "REGEX", "pattern": "^main-[0-9a-f]{7}$", "range": null}}),
    );
    let r = api.put_service("acme", "j2", job_image).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api.get_service("acme", "c").await;
    assert_eq!(r.body["image"]["registry"], "ghcr.io");
}

#[tokio::test]
async fn malformed_input_is_a_clear_400_never_a_500() {
    let api = Api::new();
    let path = "/organization/acme/services/api";
    let send = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut req = Request::put(path).header("authorization", format!("Token {ADMIN}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.body(Body::from(body)).unwrap()
    };
    let json_ct = Some("application/json");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(Vec<u8>, Option<&'static str>, StatusCode, &str)> = vec![
        (
            vec![0xff, 0xfe, 0x00],
            json_ct,
            StatusCode::BAD_REQUEST,
            "MALFORMED_BODY",
        ),
        (
            b"{\"name\": \"\xff\"}".to_vec(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "MALFORMED_BODY",
        ),
        (b"not json".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (b"{\"a\": ".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (b"".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (b"null".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (b"[]".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (b"\"text\"".to_vec(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (deep.into_bytes(), json_ct, StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
        (
            format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024)).into_bytes(),
            json_ct,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            app_body().to_string().into_bytes(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            app_body().to_string().into_bytes(),
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            app_body().to_string().into_bytes(),
            Some("application/merge-patch+json"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            json!({"environment_id": [], "kind": {}, "git_repository": 7, "deployment_restrictions": {"a": 1},
                   "image": "x", "tag_policy": [], "auto_deploy": null})
            .to_string()
            .into_bytes(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
    ];
    for (body, ct, status, code) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let r = api.raw(send(body, ct)).await;
        assert_eq!((r.status, r.error_code()), (status, code), "{preview}");
    }
    // application/json with a charset parameter is fine.
    let r = api
        .raw(send(
            app_body().to_string().into_bytes(),
            Some("application/json; charset=utf-8"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A Content-Length above the limit is refused before reading.
    let req = Request::put(path)
        .header("authorization", format!("Token {ADMIN}"))
        .header("content-type", "application/json")
        .header("content-length", "999999999")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(api.raw(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// Without `If-Match`, concurrent patches of different fields all apply: none is lost.
async fn concurrent_patches_without_if_match_lose_nothing(api: Api) {
    let api = Arc::new(api);
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
            api.call(
                Method::PATCH,
                "/organization/acme/services/api",
                Some(ADMIN),
                Some(patch),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let r = api.get_service("acme", "api").await;
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["auto_deploy"], false);
    assert_eq!(r.body["environment_id"], "staging");
    assert_eq!(r.body["git_repository"]["branch"], "develop");
    assert_eq!(r.body["version"], 5);
}

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
    let r = api.admin_get("/organization/acme/services/api").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    aws.store_proxy.pass_through();
    let r = api.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
}
