//! The deploy targets API on both stores: secrets and tokens written, kept, rotated, never
//! shown again (the store, read directly, says what is kept); a generated `whsec_` secret shown
//! once; private hosts refused; services naming targets; a named target not deleted.

use autodeploy_core::target::Target;
use autodeploy_tests::{ADMIN, Api, Reply, on_both_stores};
use http::{Method, StatusCode};
use serde_json::{Value, json};

on_both_stores!(targets_are_write_only, services_name_existing_targets);

const GIVEN: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwdGVzdHRlc3Q=";

async fn put(api: &Api, id: &str, body: Value) -> Reply {
    api.call(
        Method::PUT,
        &format!("/organization/acme/targets/{id}"),
        Some(ADMIN),
        Some(body),
    )
    .await
}

/// The secret or token the store keeps for target `id`.
async fn kept(api: &Api, id: &str) -> String {
    let stored = api
        .store
        .get_target("acme", id)
        .await
        .unwrap()
        .expect("a stored target");
    match stored.spec {
        Target::Webhook { secret, .. } => secret.expose().to_owned(),
        Target::Qovery { token, .. } | Target::GithubActions { token, .. } => token.expose().to_owned(),
    }
}

fn fields(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

async fn targets_are_write_only(api: Api) {
    let hook = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
    let created = put(&api, "hook", hook.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        fields(&created.body),
        [
            "created_at",
            "id",
            "organization_id",
            "secret",
            "secret_set",
            "type",
            "updated_at",
            "url",
            "version"
        ]
    );
    let generated = created.body["secret"].as_str().unwrap().to_owned();
    assert!(
        generated.starts_with("whsec_") && generated.len() == 6 + 44,
        "{generated}"
    );
    assert_eq!(kept(&api, "hook").await, generated);
    assert_eq!(created.body["version"], 1);
    assert!(!created.etag().is_empty());

    // Never shown again: a GET, the list, a PUT that keeps it.
    let shown = api
        .call(Method::GET, "/organization/acme/targets/hook", Some(ADMIN), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let again = put(&api, "hook", hook.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    // Nothing changed: the same version.
    assert_eq!(again.body["version"], 1);
    assert_eq!(kept(&api, "hook").await, generated, "a PUT without secret keeps it");
    // A secret sent rotates it, and is not echoed.
    let rotated = put(
        &api,
        "hook",
        json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook", "secret": GIVEN}),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(kept(&api, "hook").await, GIVEN);

    // Tokens: kept by a PUT of the same type without one; another type needs its own.
    let qovery = json!({"type": "QOVERY", "token": "qov_first_token"});
    assert_eq!(put(&api, "engine", qovery).await.status, StatusCode::CREATED);
    let same = put(&api, "engine", json!({"type": "QOVERY"})).await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    assert_eq!(same.body["api_url"], "https://api.qovery.com");
    assert_eq!(kept(&api, "engine").await, "qov_first_token");
    let actions =
        json!({"type": "GITHUB_ACTIONS", "repository": "acme/deploy", "workflow": "deploy.yml", "ref": "main"});
    let other_type = put(&api, "engine", actions.clone()).await;
    assert_eq!(other_type.status, StatusCode::BAD_REQUEST, "{}", other_type.body);
    assert_eq!(other_type.error_fields(), ["token"]);
    let mut with_token = actions;
    with_token["token"] = json!("github_pat_11SECOND");
    let switched = put(&api, "engine", with_token).await;
    assert_eq!(switched.status, StatusCode::OK, "{}", switched.body);
    assert_eq!(kept(&api, "engine").await, "github_pat_11SECOND");

    // What the API shows: whether one is set, never which.
    let list = api
        .call(Method::GET, "/organization/acme/targets", Some(ADMIN), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let mut answers = vec![shown.body, again.body, rotated.body, same.body, switched.body];
    answers.extend(list.body["items"].as_array().unwrap().iter().cloned());
    assert_eq!(answers.len(), 7);
    for answer in &answers {
        assert!(
            answer.get("secret").is_none() && answer.get("token").is_none(),
            "{answer}"
        );
        let set = if answer["type"] == "WEBHOOK" {
            &answer["secret_set"]
        } else {
            &answer["token_set"]
        };
        assert_eq!(set, &json!(true), "{answer}");
        let text = answer.to_string();
        for secret in [&generated[6..], &GIVEN[6..], "qov_first_token", "github_pat_11SECOND"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    // Private hosts and plain http are refused when written.
    for url in [
        "https://localhost/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest",
        "https://10.0.0.8/hook",
        "https://deploy.internal/hook",
        "http://deploy.example.com/hook",
    ] {
        let r = put(&api, "private", json!({"type": "WEBHOOK", "url": url})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.body);
        assert_eq!(r.error_fields(), ["url"], "{url}");
    }
    assert!(api.store.get_target("acme", "private").await.unwrap().is_none());

    // Conditional writes; the manage scope; another organization sees nothing.
    let r = api
        .call_with(
            Method::PUT,
            "/organization/acme/targets/hook",
            Some(ADMIN),
            Some(hook),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let deploy = api.token("acme", &["deploy"]).await;
    let r = api
        .call(Method::GET, "/organization/acme/targets", Some(&deploy), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api
        .call(Method::GET, "/organization/other/targets/hook", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn services_name_existing_targets(api: Api) {
    let service = |target: &str, external_id: Value| {
        json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"},
            "deploy_target": {"target_id": target, "external_id": external_id}})
    };
    // A target that does not exist is a 400.
    let r = api.put_service("acme", "api", service("engine", Value::Null)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        r.error_fields().iter().any(|f| f.starts_with("deploy_target")),
        "{}",
        r.body
    );
    let r = put(&api, "engine", json!({"type": "QOVERY", "token": "qov_token"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Qovery needs the Qovery service id.
    let r = api.put_service("acme", "api", service("engine", Value::Null)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = api
        .put_service("acme", "api", service("engine", json!("0b1c2d3e")))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["deploy_target"],
        json!({"target_id": "engine", "external_id": "0b1c2d3e"})
    );

    // Not deleted while a service names it; deleted once none does. The refusal names the
    // first five, in id order, and says when there are others.
    let path = "/organization/acme/targets/engine";
    let r = api.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("(api)"),
        "{}",
        r.body
    );
    let others: Vec<String> = (1..=6).map(|i| format!("api-{i}")).collect();
    for id in &others {
        let r = api.put_service("acme", id, service("engine", json!("0b1c2d3e"))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let r = api.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        r.body["error"]["message"],
        "Services still deploy to this target (api, api-1, api-2, api-3, api-4, and others): point their deploy_target elsewhere first."
    );
    for id in others.iter().map(String::as_str).chain(["api"]) {
        let r = api
            .call(
                Method::DELETE,
                &format!("/organization/acme/services/{id}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let r = api.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
