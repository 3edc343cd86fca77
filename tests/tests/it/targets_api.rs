//! The deploy targets API on both stores: secrets and tokens written, kept, rotated, never
//! shown again (the store, read directly, says what is kept); a generated `whsec_` secret shown
//! once; private hosts refused; services naming targets; a named target not deleted.

use autodeploy_api::dispatch::send::{Sender, SenderConfig};
use autodeploy_api::dispatch::{Delivery, Dispatcher};
use autodeploy_api::store::AttemptStart;
use autodeploy_core::target::Target;
use autodeploy_core::target::delivery::RetryPolicy;
use autodeploy_tests::{ADMIN, Api, Reply, on_both_stores};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::aws_dispatcher::{Receiver, record};
use crate::https_client::test_ca_roots;

on_both_stores!(
    targets_are_write_only,
    services_name_existing_targets,
    a_kept_token_never_follows_a_new_address,
    an_echoed_credential_stays_out_of_last_error,
    a_target_delete_honours_if_match,
    a_type_change_keeps_naming_services_deliverable,
);

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

/// `DELETE` of target `id` with the request headers `headers`.
async fn delete(api: &Api, id: &str, headers: &[(&str, &str)]) -> Reply {
    let path = format!("/organization/acme/targets/{id}");
    api.call_with(Method::DELETE, &path, Some(ADMIN), None, headers).await
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

/// The API allowing private targets (the receivers are on 127.0.0.1), and its dispatcher,
/// trusting the receivers' test CA.
fn with_dispatcher(api: Api) -> (Api, Dispatcher) {
    let api = api.reconfigured(|state| state.allowing_private_targets(true));
    let dispatcher = Dispatcher {
        store: api.store.clone(),
        sender: Sender::trusting(SenderConfig::new(true), test_ca_roots()).unwrap(),
        policy: RetryPolicy::default(),
    };
    (api, dispatcher)
}

/// Service `id` of `acme`, delivered to target `target` (as `external_id` there).
async fn service_on(api: &Api, id: &str, target: &str) {
    let body = json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITHUB", "url": format!("https://github.com/acme/{id}"), "branch": "main"},
        "deploy_target": {"target_id": target, "external_id": "0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d"}});
    let r = api.put_service("acme", id, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// One attempt at a new deployment of service `id` (pushed `mark`), as the dispatcher makes
/// it; its id.
async fn deploy_once(api: &Api, dispatcher: &Dispatcher, id: &str, mark: &str) -> (String, Delivery) {
    let request = record(&*api.store, id, mark).await;
    let AttemptStart::Started(taken) = api.store.begin_attempt("acme", &request.deployment_id).await.unwrap() else {
        panic!("deployment {} not taken", request.deployment_id)
    };
    let delivery = dispatcher.attempt(&taken).await.unwrap();
    (request.deployment_id, delivery)
}

/// A `manage` token cannot move a target to its own address and have the kept token sent
/// there: a PUT that changes where the requests go must give the token again; nothing is sent
/// to the new address. A webhook's secret, never sent, is kept.
async fn a_kept_token_never_follows_a_new_address(api: Api) {
    let (api, dispatcher) = with_dispatcher(api);
    let (engine, elsewhere) = (Receiver::start(&[202]).await, Receiver::start(&[202]).await);
    let manage = api.token("acme", &["manage"]).await;
    let put_as = |id: &'static str, body: Value| {
        let (api, manage) = (&api, manage.clone());
        async move {
            api.call(
                Method::PUT,
                &format!("/organization/acme/targets/{id}"),
                Some(&manage),
                Some(body),
            )
            .await
        }
    };
    let qovery = json!({"type": "QOVERY", "token": "qov_kept_token", "api_url": engine.url});
    let r = put_as("engine", qovery).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    service_on(&api, "api", "engine").await;

    // Another host, another port, another path: each refused, naming the token.
    let other_host = engine.url.replace("localhost", "127.0.0.1");
    for api_url in [
        elsewhere.url.as_str(),
        other_host.as_str(),
        &format!("{}/v2", engine.url),
    ] {
        let r = put_as("engine", json!({"type": "QOVERY", "api_url": api_url})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{api_url}: {}", r.body);
        assert_eq!(r.error_code(), "VALIDATION_FAILED");
        assert_eq!(r.error_fields(), ["token"], "{}", r.body);
        assert!(
            r.body.to_string().contains("is required when api_url changes"),
            "{}",
            r.body
        );
    }
    // The same address keeps it (a GET → PUT round trip).
    let r = put_as("engine", json!({"type": "QOVERY", "api_url": engine.url})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(kept(&api, "engine").await, "qov_kept_token");

    // The dispatcher still sends the token where it went, and nothing elsewhere.
    let (_, delivery) = deploy_once(&api, &dispatcher, "api", "a..b").await;
    assert_eq!(delivery, Delivery::Delivered);
    let got = engine.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].authorization, "Token qov_kept_token");
    assert!(elsewhere.received().is_empty());

    // GitHub Actions: the api_url, the repository and the workflow make the address.
    let actions = json!({"type": "GITHUB_ACTIONS", "token": "github_pat_11KEPT", "repository": "acme/deploy",
        "workflow": "deploy.yml", "ref": "main", "api_url": engine.url});
    let r = put_as("actions", actions.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (field, value) in [
        ("api_url", elsewhere.url.as_str()),
        ("repository", "mallory/deploy"),
        ("workflow", "exfiltrate.yml"),
    ] {
        let mut moved = actions.clone();
        moved.as_object_mut().unwrap().remove("token");
        moved[field] = json!(value);
        let r = put_as("actions", moved).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{field}: {}", r.body);
        assert_eq!(r.error_fields(), ["token"], "{}", r.body);
    }
    let mut new_ref = actions.clone();
    new_ref.as_object_mut().unwrap().remove("token");
    new_ref["ref"] = json!("release");
    assert_eq!(put_as("actions", new_ref).await.status, StatusCode::OK);
    assert_eq!(kept(&api, "actions").await, "github_pat_11KEPT");

    // A webhook's secret is never sent, only what it signs: replaced without it, at a new url
    // too, the target keeps it (the contract's rule), and the answer shows no secret.
    let r = put_as("hook", json!({"type": "WEBHOOK", "url": engine.url, "secret": GIVEN})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = put_as("hook", json!({"type": "WEBHOOK", "url": elsewhere.url})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["secret_set"], true, "{}", r.body);
    assert!(r.body.get("secret").is_none(), "{}", r.body);
    assert_eq!(kept(&api, "hook").await, GIVEN);

    // Refusals changed nothing; a new token moves the target, and only it goes there.
    let stored = api.store.get_target("acme", "engine").await.unwrap().unwrap();
    assert!(matches!(&stored.spec, Target::Qovery { api_url, .. } if *api_url == engine.url));
    let moved = json!({"type": "QOVERY", "token": "qov_new_token", "api_url": elsewhere.url});
    assert_eq!(put_as("engine", moved).await.status, StatusCode::OK);
    let (_, delivery) = deploy_once(&api, &dispatcher, "api", "b..c").await;
    assert_eq!(delivery, Delivery::Delivered);
    assert_eq!(engine.received().len(), 1);
    let got = elsewhere.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].authorization, "Token qov_new_token");
}

/// A target that answers a refusal repeating the token or signature it got, in any case,
/// gets none of it into the deployment's `last_error`.
async fn an_echoed_credential_stays_out_of_last_error(api: Api) {
    let (api, dispatcher) = with_dispatcher(api);
    let (engine, hook) = (Receiver::echoing(&[400]).await, Receiver::echoing(&[400]).await);
    let r = put(
        &api,
        "engine",
        json!({"type": "QOVERY", "token": "qov_Echoed.Token", "api_url": engine.url}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = put(
        &api,
        "hook",
        json!({"type": "WEBHOOK", "url": hook.url, "secret": GIVEN}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    service_on(&api, "api", "engine").await;
    service_on(&api, "web", "hook").await;
    for (service, receiver) in [("api", &engine), ("web", &hook)] {
        let (id, delivery) = deploy_once(&api, &dispatcher, service, "a..b").await;
        assert_eq!(delivery, Delivery::Failed);
        let r = api.admin_get(&format!("/organization/acme/deployments/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let error = r.body["last_error"].as_str().unwrap().to_owned();
        assert!(
            error.starts_with("the target answered 400 Bad Request: answer 0 [redacted]"),
            "{error}"
        );
        let [got] = &receiver.received()[..] else {
            panic!("{service}: {} requests", receiver.received().len())
        };
        let lowered = error.to_lowercase();
        for sent in [
            got.authorization.as_str(),
            got.authorization.trim_start_matches("Token "),
            got.signature.as_str(),
            got.signature.trim_start_matches("v1,"),
            GIVEN,
            &GIVEN[6..],
        ] {
            assert!(
                sent.is_empty() || !lowered.contains(&sent.to_lowercase()),
                "{sent:?} in {error}"
            );
        }
    }
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
    // With other fields refused, the missing token is named with them, not after.
    let mut bad_ref = actions.clone();
    bad_ref["ref"] = json!("..");
    bad_ref["repository"] = json!("x");
    let both = put(&api, "engine", bad_ref.clone()).await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.body);
    assert_eq!(both.error_fields(), ["ref", "repository", "token"], "{}", both.body);
    bad_ref["token"] = json!("github_pat_11SECOND");
    assert_eq!(put(&api, "engine", bad_ref).await.error_fields(), ["ref", "repository"]);
    // A QOVERY target kept its token: a body of that type refused for another field does not
    // ask for it.
    let bad_url = put(&api, "engine", json!({"type": "QOVERY", "api_url": "ftp://x"})).await;
    assert_eq!(bad_url.error_fields(), ["api_url"], "{}", bad_url.body);
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
    // Qovery needs the Qovery service id: one id, not a placeholder left in.
    let r = api.put_service("acme", "api", service("engine", Value::Null)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    for not_an_id in ["<the Qovery service id>", "my service", "acme/api", "id?x"] {
        let r = api
            .put_service("acme", "api", service("engine", json!(not_an_id)))
            .await;
        assert_eq!(
            (r.status, r.error_fields()),
            (StatusCode::BAD_REQUEST, vec!["deploy_target.external_id".to_owned()]),
            "{not_an_id}: {}",
            r.body
        );
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("Qovery console"),
            "{}",
            r.body
        );
    }
    let r = api
        .put_service(
            "acme",
            "api",
            service("engine", json!("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        r.body["deploy_target"],
        json!({"target_id": "engine", "external_id": "0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d"})
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
        let r = api
            .put_service(
                "acme",
                id,
                service("engine", json!("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")),
            )
            .await;
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

/// A `WEBHOOK` target, its secret generated.
fn webhook() -> Value {
    json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"})
}

/// A target's `DELETE` evaluates `If-Match` (and `If-None-Match`) as a service's does, in the
/// same write as the deletion: a stale ETag deletes nothing.
async fn a_target_delete_honours_if_match(api: Api) {
    let created = put(&api, "w", webhook()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let etag = created.etag();
    let path = "/organization/acme/targets/w";

    // A stale ETag, and If-None-Match: *: 412, and the target is still there.
    for header in [("if-match", "\"abc\""), ("if-none-match", "*")] {
        let r = delete(&api, "w", &[header]).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{header:?}: {}", r.body);
        assert_eq!(r.error_code(), "PRECONDITION_FAILED", "{}", r.body);
        let r = api.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::OK, "{header:?}: {}", r.body);
        assert_eq!(r.etag(), etag);
    }
    // The ETag the target has: deleted.
    let r = delete(&api, "w", &[("if-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A missing target under a condition: 412, as for a service; without one, 404.
    for header in [("if-match", etag.as_str()), ("if-match", "*")] {
        let r = delete(&api, "w", &[header]).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{header:?}: {}", r.body);
        let r = api
            .call_with(
                Method::DELETE,
                "/organization/acme/services/w",
                Some(ADMIN),
                None,
                &[header],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "service, {header:?}: {}",
            r.body
        );
    }
    assert_eq!(delete(&api, "w", &[]).await.status, StatusCode::NOT_FOUND);

    // If-Match: * deletes any existing one.
    assert_eq!(put(&api, "w", webhook()).await.status, StatusCode::CREATED);
    let r = delete(&api, "w", &[("if-match", "*")]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // A target a service names: still a conflict, whatever the condition.
    let created = put(&api, "w", webhook()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    service_on(&api, "api", "w").await;
    let r = delete(&api, "w", &[("if-match", &created.etag())]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// A target's `PUT` that would leave a service naming it in a combination a service's `PUT`
/// refuses (a `QOVERY` target, a service with no `external_id`) is a 409 naming the services,
/// and changes nothing.
async fn a_type_change_keeps_naming_services_deliverable(api: Api) {
    let service = |external_id: Value| {
        json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": "main"},
            "deploy_target": {"target_id": "w", "external_id": external_id}})
    };
    let created = put(&api, "w", webhook()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let ids: Vec<String> = (1..=7).map(|i| format!("svc-{i}")).collect();
    for id in &ids {
        let r = api.put_service("acme", id, service(Value::Null)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // One that gives an id is not in the way; one whose id is a placeholder is.
    let r = api
        .put_service("acme", "has-id", service(json!("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = api.put_service("acme", "svc-8", service(json!("<hook name>"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let qovery = json!({"type": "QOVERY", "token": "qov_token"});
    let r = put(&api, "w", qovery.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.error_code(), "CONFLICT", "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(svc-1, svc-2, svc-3, svc-4, svc-5, and 3 others)")
            && message.contains("external_id")
            && message.contains("QOVERY")
            && !message.contains("has-id"),
        "{message}"
    );
    // Unchanged.
    let path = "/organization/acme/targets/w";
    let r = api.call(Method::GET, path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["type"], "WEBHOOK");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.etag(), created.etag());

    // Once every service names its id there, the same PUT is taken.
    for id in &ids[1..] {
        let r = api
            .put_service("acme", id, service(json!("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = put(&api, "w", qovery.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("(svc-1, svc-8)"),
        "{}",
        r.body
    );
    for id in ["svc-1", "svc-8"] {
        let r = api
            .put_service("acme", id, service(json!("0b1c2d3e-5f60-4a7b-8c9d-0e1f2a3b4c5d")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = put(&api, "w", qovery).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["type"], "QOVERY");
    assert_eq!(r.body["version"], 2);
    // Back to a webhook: no external_id is needed, none is in the way.
    let r = put(&api, "w", webhook()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
