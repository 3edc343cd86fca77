//! SPEC "Amendments" through the HTTP API, on both stores: every boolean query parameter is
//! strict (a typo never deploys for real); settings that could never match a push are fixed
//! (`refs/heads/main`, a Bitbucket clone URL's user name) or refused with the URL to use (a
//! password or token, a page of the repository, a bare `owner/repo`), and the key a service
//! is matched on is shown; an answer that queues and skips nothing says why; conditional
//! writes (`If-None-Match: *` creates only, `If-Match: *` requires existence).

use autodeploy_tests::{
    ADMIN, Api, GITHUB_REPO, Reply, WEBHOOK_SECRET, fixture, fixture_json, on_both_stores, outcome,
};
use autodeploy_tests::{assert_error_form, hmac_hex, provider_headers};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::exact_bodies::assert_names_only;

/// The boolean query parameters the API reference declares, `(method, path, name)`: those
/// whose schema is a boolean or whose description says they are one (a strict boolean is a
/// string of four values there), `$ref`s resolved.
fn boolean_query_parameters() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/openapi.yaml")).unwrap();
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let resolve = |value: &serde_yaml_ng::Value| match value.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => reference
            .trim_start_matches("#/")
            .split('/')
            .fold(&document, |node, key| &node[key])
            .clone(),
        None => value.clone(),
    };
    let mut found = Vec::new();
    for (path, operations) in document["paths"].as_mapping().unwrap() {
        for (method, operation) in operations.as_mapping().unwrap() {
            for parameter in operation["parameters"].as_sequence().into_iter().flatten() {
                let parameter = resolve(parameter);
                let boolean = parameter["schema"]["type"] == "boolean"
                    || parameter["description"]
                        .as_str()
                        .is_some_and(|d| d.to_lowercase().contains("boolean"));
                if parameter["in"] == "query" && boolean {
                    found.push((
                        method.as_str().unwrap().to_uppercase(),
                        path.as_str().unwrap().to_owned(),
                        parameter["name"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    found.sort();
    found
}

/// The routes below are every route with a boolean query parameter.
#[test]
fn the_strict_boolean_routes_are_every_boolean_parameter_of_the_api() {
    let expected: Vec<(String, String, String)> = [
        "/organization/{org}/container/deploy",
        "/organization/{org}/job/deploy",
        "/organization/{org}/registry-webhooks/dockerhub/{secret}",
        "/organization/{org}/registry-webhooks/github",
        "/organization/{org}/webhooks/{provider}",
    ]
    .iter()
    .map(|path| ("POST".to_owned(), (*path).to_owned(), "dry_run".to_owned()))
    .collect();
    assert_eq!(boolean_query_parameters(), expected);
}

on_both_stores! {
    every_boolean_query_parameter_is_strict, a_bitbucket_clone_url_and_a_full_ref_are_stored_so_that_pushes_match,
    urls_that_could_never_match_are_refused_with_the_url_to_use, nothing_to_deploy_is_explained,
    if_none_match_creates_only_and_if_match_requires_existence, misspelt_query_parameters_are_refused,
}

/// On a route whose parameters change what it does, a parameter it does not take is a 400
/// naming it (`?dryrun=true` must not deploy for real, `?sevice_id=` not list everything);
/// webhook routes take what a provider or a proxy adds, but for a misspelt `dry_run`.
async fn misspelt_query_parameters_are_refused(api: Api) {
    api.set_secret("acme", "github").await;
    api.app("acme", "app", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    image_service(&api, "ci", "CONTAINER", "ghcr.io", "acme/ci", "1.0.0").await;
    for (name, path) in [
        ("container", "/organization/acme/container/deploy"),
        ("job", "/organization/acme/job/deploy"),
    ] {
        let route = DryRunRoute {
            name,
            path: path.to_owned(),
            headers: Vec::new(),
            body: json!({"image_name": "ghcr.io/acme/ci", "tag": "2.0.0"})
                .to_string()
                .into_bytes(),
        };
        for query in ["dryrun=true", "dry-run=true", "dry_run=true&verbose=1"] {
            let r = route.send(&api, query).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name} ?{query}: {}", r.body);
            assert_error_form(&r, query);
            let field = r.body["error"]["details"][0]["field"].as_str().unwrap();
            assert!(
                query.contains(field) && field != "dry_run",
                "{name} ?{query}: {}",
                r.body
            );
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("takes only dry_run"),
                "{}",
                r.body
            );
        }
    }
    assert!(api.deployments("acme").await.is_empty());
    for (path, takes) in [
        ("/organization/acme/deployments?sevice_id=app", "service_id"),
        ("/organization/acme/deliveries?outcom=QUEUED", "outcome"),
        ("/organization/acme/services?lmit=5", "limit, cursor"),
        ("/organization/acme/targets?page=2", "limit, cursor"),
        ("/organization/acme/tokens?limit=5&x=1", "limit, cursor"),
    ] {
        let r = api.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_error_form(&r, path);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(takes),
            "{path}: {}",
            r.body
        );
    }
    // The lists' own parameters still work; a webhook takes a parameter of its provider's.
    let r = api
        .call(
            Method::GET,
            "/organization/acme/deployments?service_id=app&status=QUEUED&limit=5",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let push = fixture("github/gp-push.json");
    // But not a misspelt dry run, which would deploy for real.
    for query in [
        "dryrun=true",
        "dry-run=1",
        "dryRun=true&source=github-hook",
        "DRY_RUN=true",
    ] {
        let r = api
            .deliver(
                &format!("/organization/acme/webhooks/github?{query}"),
                &provider_headers("github", &push, "delivery-1"),
                push.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "?{query}: {}", r.body);
        assert_error_form(&r, query);
        let field = r.body["error"]["details"][0]["field"].as_str().unwrap();
        assert!(query.contains(field) && field != "dry_run", "?{query}: {}", r.body);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("write dry_run"),
            "{}",
            r.body
        );
    }
    assert!(api.deployments("acme").await.is_empty());
    let r = api
        .deliver(
            "/organization/acme/webhooks/github?source=github-hook",
            &provider_headers("github", &push, "delivery-2"),
            push,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // Settings routes take no query parameter: `?dry_run=true` on a write must not write.
    let service = json!({"environment_id": "production", "kind": "APPLICATION",
        "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "main"}});
    let target = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
    for (method, path, body) in [
        (
            Method::PUT,
            "/organization/acme/services/new?dry_run=true",
            Some(service.clone()),
        ),
        (
            Method::PATCH,
            "/organization/acme/services/app?dry_run=1",
            Some(json!({"auto_deploy": false})),
        ),
        (Method::DELETE, "/organization/acme/services/app?dry_run=true", None),
        (Method::GET, "/organization/acme/services/app?fields=id", None),
        (
            Method::PUT,
            "/organization/acme/webhook-secrets/github?dryrun=1",
            Some(json!({"secret": "s".repeat(40)})),
        ),
        (
            Method::DELETE,
            "/organization/acme/webhook-secrets/github?dry_run=true",
            None,
        ),
        (Method::GET, "/organization/acme/webhook-secrets/github?verbose=1", None),
        (
            Method::POST,
            "/organization/acme/tokens?dry_run=true",
            Some(json!({"name": "ci"})),
        ),
        (
            Method::DELETE,
            "/organization/acme/tokens/0123456789abcdef?dry_run=true",
            None,
        ),
        (
            Method::PUT,
            "/organization/acme/targets/hook?dry_run=true",
            Some(target),
        ),
        (Method::DELETE, "/organization/acme/targets/hook?dry_run=true", None),
        (Method::GET, "/organization/acme/deployments/0123456789abcdef?x=1", None),
        (Method::GET, "/organization/acme/deliveries/delivery-2?x=1", None),
    ] {
        let r = api.call(method.clone(), path, Some(ADMIN), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", r.body);
        assert_error_form(&r, path);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("takes no query parameter"),
            "{method} {path}: {}",
            r.body
        );
    }
    // A parameter without a name is named as such.
    let r = api
        .call(Method::GET, "/organization/acme/services/app?=1", Some(ADMIN), None)
        .await;
    assert_eq!(r.error_fields(), ["(a parameter without a name)"], "{}", r.body);
    // One that is no plain word is not repeated: the history would carry it as a sentence.
    let sentence = "/organization/acme/services/app?Your%20secret%20was%20rotated%3A%20see%20evil.example=1";
    let r = api.call(Method::GET, sentence, Some(ADMIN), None).await;
    assert_eq!(
        r.error_fields(),
        ["(a parameter whose name is not a plain word)"],
        "{}",
        r.body
    );
    assert!(!r.body.to_string().contains("evil"), "{}", r.body);
    let created = api
        .call(Method::GET, "/organization/acme/services/new", Some(ADMIN), None)
        .await;
    assert_eq!(created.status, StatusCode::NOT_FOUND, "{}", created.body);
    let app = api.get_service("acme", "app").await;
    assert_eq!(app.status, StatusCode::OK, "{}", app.body);
    assert_eq!(app.body["auto_deploy"], json!(true), "{}", app.body);
    let secret = api
        .call(
            Method::GET,
            "/organization/acme/webhook-secrets/github",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(secret.body["configured"], json!(true), "{}", secret.body);
    let tokens = api
        .call(Method::GET, "/organization/acme/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(tokens.body["items"], json!([]), "{}", tokens.body);
}

/// A GitHub Packages delivery of ghcr.io/codertocat/hello-world:`tag`, signed, under
/// delivery id `delivery`.
fn github_package(tag: &str, delivery: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let mut body = fixture_json("registry/github-registry_package-published.docker.json");
    let version = &mut body["registry_package"]["package_version"];
    version["container_metadata"]["tag"]["name"] = json!(tag);
    version["package_url"] = json!(format!("ghcr.io/Codertocat/hello-world:{tag}"));
    let body = serde_json::to_vec(&body).unwrap();
    let headers = vec![
        ("x-github-event".to_owned(), "registry_package".to_owned()),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &body)),
        ),
    ];
    (headers, body)
}

async fn image_service(api: &Api, id: &str, kind: &str, registry: &str, name: &str, tag: &str) {
    let body = json!({"environment_id": "production", "kind": kind, "auto_deploy": true,
                      "image": {"registry": registry, "image_name": name, "tag": tag}});
    let r = api.put_service("acme", id, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{id}: {}", r.body);
}

/// One route taking `dry_run`, and how to send one delivery to it with a query string.
struct DryRunRoute {
    name: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl DryRunRoute {
    async fn send(&self, api: &Api, query: &str) -> Reply {
        let mut headers = self.headers.clone();
        if self.name == "container" || self.name == "job" {
            headers.push(("authorization".to_owned(), format!("Bearer {ADMIN}")));
        }
        api.deliver(&format!("{}?{query}", self.path), &headers, self.body.clone())
            .await
    }
}

async fn every_boolean_query_parameter_is_strict(api: Api) {
    for provider in ["github", "dockerhub"] {
        api.set_secret("acme", provider).await;
    }
    api.app("acme", "app", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    // The Docker Hub fixture announces docker.io acme/api:v2.4.1.
    image_service(&api, "hub", "CONTAINER", "docker.io", "acme/api", "v2.4.0").await;
    image_service(&api, "ghcr", "CONTAINER", "ghcr.io", "codertocat/hello-world", "1.3.0").await;
    image_service(&api, "ci", "CONTAINER", "ghcr.io", "acme/ci", "1.0.0").await;
    image_service(&api, "ci-job", "JOB", "ghcr.io", "acme/ci-job", "1.0.0").await;

    let push = fixture("github/gp-push.json");
    let (package_headers, package) = github_package("1.4.0", "package-1");
    let routes = [
        DryRunRoute {
            name: "git",
            path: "/organization/acme/webhooks/github".to_owned(),
            headers: provider_headers("github", &push, "delivery-1"),
            body: push,
        },
        DryRunRoute {
            name: "container",
            path: "/organization/acme/container/deploy".to_owned(),
            headers: Vec::new(),
            body: json!({"image_name": "ghcr.io/acme/ci", "tag": "2.0.0"})
                .to_string()
                .into_bytes(),
        },
        DryRunRoute {
            name: "job",
            path: "/organization/acme/job/deploy".to_owned(),
            headers: Vec::new(),
            body: json!({"image_name": "ghcr.io/acme/ci-job", "tag": "2.0.0"})
                .to_string()
                .into_bytes(),
        },
        DryRunRoute {
            name: "dockerhub",
            path: format!("/organization/acme/registry-webhooks/dockerhub/{WEBHOOK_SECRET}"),
            headers: Vec::new(),
            body: fixture("registry/dockerhub-push.json"),
        },
        DryRunRoute {
            name: "github-packages",
            path: "/organization/acme/registry-webhooks/github".to_owned(),
            headers: package_headers,
            body: package,
        },
    ];

    // Anything but true/false/1/0, or the parameter twice: a 400 naming it, nothing queued.
    let refused_queries = [
        "dry_run=yes",
        "dry_run=maybe",
        "dry_run=",
        "dry_run",
        "dry_run=on",
        "dry_run=2",
        "dry_run=truee",
        "dry_run=%20true",
        "dry_run=true&dry_run=true",
        "dry_run=0&dry_run=1",
        "dry_run=false&dry_run=false",
    ];
    for route in &routes {
        for query in refused_queries {
            let r = route.send(&api, query).await;
            assert_names_only(&r, "dry_run", &format!("{} ?{query}", route.name));
        }
    }
    assert!(api.deployments("acme").await.is_empty());
    assert!(api.queued_messages().await.is_empty());

    // true and 1 in any case: a dry run, answered 200, nothing recorded.
    for route in &routes {
        for query in [
            "dry_run=true",
            "dry_run=TRUE",
            "dry_run=True",
            "dry_run=tRuE",
            "dry_run=1",
        ] {
            let r = route.send(&api, query).await;
            assert_eq!(r.status, StatusCode::OK, "{} ?{query}: {}", route.name, r.body);
            assert_eq!(r.body["dry_run"], true, "{} ?{query}", route.name);
            assert!(r.body["ignored"].is_null(), "{} ?{query}: {}", route.name, r.body);
            assert_eq!(outcome(&r).0.len(), 1, "{} ?{query}: {}", route.name, r.body);
        }
    }
    assert!(api.deployments("acme").await.is_empty());
    assert!(api.queued_messages().await.is_empty());

    // false and 0 in any case: for real. Neither the refusals nor the dry runs were
    // remembered: the very same delivery (same body, same delivery id) now deploys.
    for route in &routes {
        let r = route.send(&api, "dry_run=FALSE").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}: {}", route.name, r.body);
        assert_eq!(r.body["dry_run"], false);
        for query in ["dry_run=false", "dry_run=False", "dry_run=0"] {
            let r = route.send(&api, query).await;
            assert_eq!(r.status, StatusCode::OK, "{} ?{query}: {}", route.name, r.body);
            assert_eq!(r.body["dry_run"], false, "{} ?{query}", route.name);
        }
    }
    // The history shows each route's refusals (400, naming the parameter), dry runs (recorded
    // with `dry_run: true`, nothing to deploy) and real deliveries.
    let mut history: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/organization/acme/deliveries?limit=100&cursor={cursor}");
        let r = api.call(Method::GET, &path, Some(ADMIN), None).await;
        history.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    for source in ["github", "container-api", "job-api", "dockerhub", "github-packages"] {
        let of = |outcome: &str, dry_run: bool| {
            history
                .iter()
                .filter(|d| d["source"] == source && d["outcome"] == outcome && d["dry_run"] == dry_run)
                .count()
        };
        assert_eq!(of("NOTHING_TO_DEPLOY", true), 5, "{source}: {history:?}");
        assert_eq!(of("QUEUED", false), 1, "{source}: {history:?}");
        let refused: Vec<&Value> = history
            .iter()
            .filter(|d| d["source"] == source && d["outcome"] == "REJECTED")
            .collect();
        assert_eq!(refused.len(), refused_queries.len(), "{source}: {history:?}");
        for d in refused {
            assert_eq!(d["http_status"], 400, "{d}");
            assert!(d["reason"].as_str().unwrap().contains("dry_run"), "{d}");
        }
    }

    let mut deployed: Vec<String> = api
        .queued_messages()
        .await
        .iter()
        .map(|m| m["service_id"].as_str().unwrap().to_owned())
        .collect();
    deployed.sort();
    assert_eq!(deployed, ["app", "ci", "ci-job", "ghcr", "hub"]);
}

async fn get_service(api: &Api, id: &str) -> Reply {
    let path = format!("/organization/acme/services/{id}");
    api.call(Method::GET, &path, Some(ADMIN), None).await
}

async fn a_bitbucket_clone_url_and_a_full_ref_are_stored_so_that_pushes_match(api: Api) {
    api.set_secret("acme", "bitbucket").await;
    api.set_secret("acme", "github").await;
    // Bitbucket's copy-paste clone URL, and a branch written as a full ref.
    let body = json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
                      "git_repository": {"provider": "BITBUCKET",
                                         "url": "https://emmap1@bitbucket.org/team_name/repo_name.git",
                                         "branch": "refs/heads/name-of-branch"}});
    let r = api.put_service("acme", "bb", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let shown = get_service(&api, "bb").await.body;
    let git = &shown["git_repository"];
    assert_eq!(git["url"], "https://bitbucket.org/team_name/repo_name.git", "{shown}");
    assert_eq!(git["branch"], "name-of-branch", "{shown}");
    assert_eq!(git["repository_key"], "bitbucket.org/team_name/repo_name", "{shown}");
    // A merge patch giving a full ref is stored short as well.
    let r = api
        .call(
            Method::PATCH,
            "/organization/acme/services/bb",
            Some(ADMIN),
            Some(json!({"git_repository": {"branch": "refs/heads/name-of-branch"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["git_repository"]["branch"], "name-of-branch");

    // So the provider's real push matches it.
    let push = fixture("bitbucket-cloud/gp-repo-push.json");
    let r = api.push("acme", "bitbucket", &push, "{bb-1}").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(outcome(&r).0, vec![("bb".to_owned(), "QUEUED".to_owned())]);

    // The same for a GitHub service following refs/heads/master.
    api.app("acme", "gh", "GITHUB", GITHUB_REPO, "refs/heads/master", json!({}))
        .await;
    let shown = get_service(&api, "gh").await.body;
    assert_eq!(shown["git_repository"]["branch"], "master");
    assert_eq!(
        shown["git_repository"]["repository_key"],
        "github.com/binkkatal/sample_app"
    );
    let r = api
        .push("acme", "github", &fixture("github/gp-push.json"), "gh-1")
        .await;
    assert_eq!(
        outcome(&r).0,
        vec![("gh".to_owned(), "QUEUED".to_owned())],
        "{}",
        r.body
    );
    let mut queued: Vec<String> = api
        .queued_messages()
        .await
        .iter()
        .map(|m| m["service_id"].as_str().unwrap().to_owned())
        .collect();
    queued.sort();
    assert_eq!(queued, ["bb", "gh"]);
}

async fn urls_that_could_never_match_are_refused_with_the_url_to_use(api: Api) {
    // (provider, URL sent, what the message must say, the URL it must give)
    let cases = [
        (
            "BITBUCKET",
            "https://emmap1:hunter2pass@bitbucket.org/team/repo.git",
            "password",
            "https://bitbucket.org/team/repo.git",
        ),
        (
            "BITBUCKET",
            "https://x-token-auth:hunter2token@bitbucket.org/team/repo.git",
            "password",
            "https://bitbucket.org/team/repo.git",
        ),
        (
            "GITHUB",
            "https://ghp_hunter2AbCdEfGhIjKlMnOpQrStUvWxYz0123@github.com/acme/shop.git",
            "token",
            "https://github.com/acme/shop.git",
        ),
        (
            "GITLAB",
            "https://oauth2:glpat-hunter2secret@gitlab.com/acme/shop.git",
            "password",
            "https://gitlab.com/acme/shop.git",
        ),
        (
            "GITHUB",
            "https://github.com/acme/shop/tree/main",
            "branch",
            "https://github.com/acme/shop",
        ),
        (
            "GITHUB",
            "https://github.com/acme/shop/blob/main/README.md",
            "page",
            "https://github.com/acme/shop",
        ),
        (
            "GITHUB",
            "https://github.com/acme/shop/commit/9049f1265b7d61be4a8904a9a27120d2064dab3b",
            "page",
            "https://github.com/acme/shop",
        ),
        (
            "GITHUB",
            "https://github.com/acme/shop/pull/7",
            "page",
            "https://github.com/acme/shop",
        ),
        (
            "GITLAB",
            "https://gitlab.com/acme/sub/shop/-/tree/main",
            "page",
            "https://gitlab.com/acme/sub/shop",
        ),
        (
            "GITLAB",
            "https://gitlab.com/acme/sub/shop/-/blob/main/README.md",
            "page",
            "https://gitlab.com/acme/sub/shop",
        ),
        (
            "BITBUCKET",
            "https://bitbucket.org/team/repo/src/main/README.md",
            "page",
            "https://bitbucket.org/team/repo",
        ),
        (
            "BITBUCKET",
            "https://bitbucket.org/team/repo/branch/feature",
            "branch",
            "https://bitbucket.org/team/repo",
        ),
        (
            "AZURE_DEVOPS",
            "https://dev.azure.com/acme/shop/_git/api?path=/src/main.rs",
            "page",
            "https://dev.azure.com/acme/shop/_git/api",
        ),
        (
            "AZURE_DEVOPS",
            "https://dev.azure.com/acme/shop/_git/api?version=GBmain",
            "page",
            "https://dev.azure.com/acme/shop/_git/api",
        ),
        ("GITHUB", "acme/shop", "host", "https://github.com/acme/shop"),
        ("GITLAB", "acme/sub/shop", "host", "https://gitlab.com/acme/sub/shop"),
        ("BITBUCKET", "team/repo", "host", "https://bitbucket.org/team/repo"),
    ];
    for (provider, url, says, use_instead) in cases {
        let body = json!({"environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
                          "git_repository": {"provider": provider, "url": url, "branch": "main"}});
        let r = api.put_service("acme", "api", body).await;
        assert_names_only(&r, "git_repository.url", url);
        let message = r.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{url}: {message}");
        assert!(message.contains(&format!("`{use_instead}`")), "{url}: {message}");
        // The URL to use is accepted as it is written.
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(!raw.contains("hunter2"), "{url}: a credential is echoed: {raw}");
        let fixed = json!({"environment_id": "production", "kind": "APPLICATION",
                           "git_repository": {"provider": provider, "url": use_instead, "branch": "main"}});
        let r = api.put_service("acme", "fixed", fixed).await;
        assert!(r.status.is_success(), "{use_instead}: {}", r.body);
    }
    // Nothing refused was stored.
    assert_eq!(get_service(&api, "api").await.status, StatusCode::NOT_FOUND);

    // A registry given with credentials is refused without repeating them either.
    let body = json!({"environment_id": "production", "kind": "CONTAINER",
                      "image": {"registry": "user:pa55word@ghcr.io", "image_name": "acme/api", "tag": "1"}});
    let r = api.put_service("acme", "api", body).await;
    assert_names_only(&r, "image.registry", "registry with credentials");
    assert!(!String::from_utf8_lossy(&r.raw).contains("pa55word"), "{}", r.body);
    // An image name with capitals (GitHub's `${{ github.repository }}`) says how to fix it.
    let r = container_deploy(&api, "ghcr.io/Acme/Shop", "1.0.0").await;
    assert_names_only(&r, "image_name", "capitals");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("lower"), "{message}");
    // A Docker Hub secret travels in a URL: only URL-safe characters.
    let r = api
        .call(
            Method::PUT,
            "/organization/acme/webhook-secrets/dockerhub",
            Some(ADMIN),
            Some(json!({"secret": "not/url+safe=0123456789"})),
        )
        .await;
    assert_names_only(&r, "secret", "dockerhub secret");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openssl rand -hex 32"),
        "{}",
        r.body
    );
    let r = api
        .call(
            Method::GET,
            "/organization/acme/webhook-secrets/dockerhub",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.body["configured"], false, "{}", r.body);
}

/// `POST /organization/acme/container/deploy` as the admin.
async fn container_deploy(api: &Api, image_name: &str, tag: &str) -> Reply {
    let body = json!({"image_name": image_name, "tag": tag});
    let path = "/organization/acme/container/deploy";
    api.call(Method::POST, path, Some(ADMIN), Some(body)).await
}

fn message_of(r: &Reply) -> String {
    r.body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {}", r.body))
        .to_owned()
}

async fn nothing_to_deploy_is_explained(api: Api) {
    api.set_secret("acme", "github").await;
    let push = fixture("github/gp-push.json");

    // No service at all follows the repository.
    let r = api.push("acme", "github", &push, "none-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(outcome(&r), (vec![], vec![]));
    let message = message_of(&r);
    assert!(
        message.contains("acme") && message.contains("github.com/binkkatal/sample_app"),
        "{message}"
    );

    // Services follow it on other branches: the message names them.
    api.app("acme", "dev", "GITHUB", GITHUB_REPO, "develop", json!({}))
        .await;
    api.app("acme", "rel", "GITHUB", GITHUB_REPO, "release/*", json!({}))
        .await;
    let r = api.push("acme", "github", &push, "none-2").await;
    assert_eq!(outcome(&r), (vec![], vec![]), "{}", r.body);
    // In SPEC's words.
    assert_eq!(
        message_of(&r),
        "No service of organization acme follows github.com/binkkatal/sample_app on branch master; 2 follow it on \
         other branches (develop, release/*)."
    );

    // No service runs the image announced.
    let r = container_deploy(&api, "ghcr.io/acme/api", "1.0.0").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(outcome(&r), (vec![], vec![]));
    assert_eq!(message_of(&r), "No service of organization acme runs ghcr.io/acme/api.");
    // Nor of that kind: a JOB runs it, the CONTAINER endpoint was called.
    image_service(&api, "job", "JOB", "ghcr.io", "acme/api", "0.9.0").await;
    let r = container_deploy(&api, "ghcr.io/acme/api", "1.0.0").await;
    assert_eq!(outcome(&r), (vec![], vec![]), "{}", r.body);
    assert_eq!(
        message_of(&r),
        "No CONTAINER service of organization acme runs ghcr.io/acme/api; 1 service(s) of the other kind do: \
         announce it on /job/deploy."
    );
    // A registry webhook that finds nothing says so too.
    api.set_secret("acme", "dockerhub").await;
    let r = api
        .deliver(
            &format!("/organization/acme/registry-webhooks/dockerhub/{WEBHOOK_SECRET}"),
            &[],
            fixture("registry/dockerhub-push.json"),
        )
        .await;
    assert_eq!(outcome(&r), (vec![], vec![]), "{}", r.body);
    assert!(message_of(&r).contains("acme/api"), "{}", r.body);
    assert!(api.deployments("acme").await.is_empty());
}

async fn conditional(api: &Api, method: Method, path: &str, header: (&str, &str), body: Option<Value>) -> Reply {
    api.call_with(method, path, Some(ADMIN), body, &[header]).await
}

async fn if_none_match_creates_only_and_if_match_requires_existence(api: Api) {
    let service = json!({"environment_id": "production", "kind": "APPLICATION",
                         "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "main"}});
    let mut staging = service.clone();
    staging["environment_id"] = json!("staging");
    let target = json!({"type": "QOVERY", "token": "qov-token-0123456789"});
    let rotated = json!({"type": "QOVERY", "token": "qov-token-rotated-0123"});
    for (path, body, changed) in [
        ("/organization/acme/services/api", service, staging),
        ("/organization/acme/targets/qovery", target, rotated),
    ] {
        // If-Match: * on nothing: 412, nothing created.
        let r = conditional(&api, Method::PUT, path, ("if-match", "*"), Some(body.clone())).await;
        assert_eq!(
            (r.status, r.error_code()),
            (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            "{path}: {}",
            r.body
        );
        // The message names the condition that failed.
        let says = |r: &autodeploy_tests::Reply, words: &str| {
            let message = r.body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(words), "{path}: {}", r.body);
        };
        says(&r, "does not exist, and If-Match: *");
        let r = api.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        // If-None-Match: * creates.
        let r = conditional(&api, Method::PUT, path, ("if-none-match", "*"), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.body);
        let created = api.call(Method::GET, path, Some(ADMIN), None).await;
        // …only: a second one is a 412 that changes nothing.
        let r = conditional(&api, Method::PUT, path, ("if-none-match", "*"), Some(changed)).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{path}: {}", r.body);
        says(&r, "already exists, and If-None-Match: *");
        let after = api.call(Method::GET, path, Some(ADMIN), None).await;
        assert_eq!((after.etag(), &after.body), (created.etag(), &created.body), "{path}");
        // If-Match: * on what exists replaces it.
        let r = conditional(&api, Method::PUT, path, ("if-match", "*"), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        // Both at once, or another value, is a 400 naming the header.
        let r = api
            .call_with(
                Method::PUT,
                path,
                Some(ADMIN),
                Some(body.clone()),
                &[("if-match", "*"), ("if-none-match", "*")],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_error_form(&r, path);
        let r = conditional(&api, Method::PUT, path, ("if-none-match", "\"abc\""), Some(body)).await;
        assert_names_only(&r, "If-None-Match", path);
    }
    // If-Match: * requires that the service exists, whatever the method: a PATCH of nothing
    // is a 412 under it; a DELETE with If-None-Match: * a 412, with If-Match: * a 204 while the
    // service exists, then a 412 (without a condition, both are 404s).
    let patch = Some(json!({"auto_deploy": true}));
    let (ghost, api_path) = ("/organization/acme/services/ghost", "/organization/acme/services/api");
    for (method, path, header, body, status) in [
        (
            Method::PATCH,
            ghost,
            ("if-match", "*"),
            patch.clone(),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            Method::PATCH,
            ghost,
            ("if-none-match", "*"),
            patch,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            api_path,
            ("if-none-match", "*"),
            None,
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            Method::DELETE,
            api_path,
            ("if-match", "*"),
            None,
            StatusCode::NO_CONTENT,
        ),
        (
            Method::DELETE,
            api_path,
            ("if-match", "*"),
            None,
            StatusCode::PRECONDITION_FAILED,
        ),
    ] {
        let r = conditional(&api, method.clone(), path, header, body).await;
        assert_eq!(r.status, status, "{method} {path} {header:?}: {}", r.body);
    }
    // The 412 of a DELETE under If-None-Match: * says why, for a missing service too (never
    // "already exists").
    let r = conditional(&api, Method::DELETE, ghost, ("if-none-match", "*"), None).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("a DELETE removes one that does"), "{message}");
    assert!(!message.contains("already exists"), "{message}");
}
