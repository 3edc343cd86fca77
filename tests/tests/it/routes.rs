//! One list of routes, everywhere: `autodeploy_api::web::ROUTES` is what the routers serve,
//! what `infra/template.yaml` routes to each Lambda function, and what `infra/openapi.yaml`
//! documents. A route added to a router, the template or the document alone fails here: the
//! routers are asked, by requests, which routes they serve.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use autodeploy_api::admin::StaticAdminToken;
use autodeploy_api::sqlite::SqliteStore;
use autodeploy_api::store::InStoreQueue;
use autodeploy_api::web::{AppState, OPENAPI_YAML, ROUTES, full_router, image_router, push_router, settings_router};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use tower::ServiceExt;

/// The Lambda functions, by the name ROUTES and the template's `CodeUri` use.
const FUNCTIONS: [&str; 3] = ["settings", "push-webhook", "image-tag"];
/// Routes only the standalone server serves.
const STANDALONE: &str = "standalone";
/// Served by every router, whatever its function.
const EVERYWHERE: &str = "/health";

type Route = (String, String);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn routes_of(function: &str) -> BTreeSet<Route> {
    ROUTES
        .iter()
        .filter(|(_, _, f)| *f == function)
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

fn all_routes() -> BTreeSet<Route> {
    ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

struct Routers {
    full: Router,
    by_function: BTreeMap<&'static str, Router>,
    _dir: tempfile::TempDir,
}

fn routers() -> Routers {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("routes.db")).unwrap();
    let state = AppState::new(
        Arc::new(store),
        Arc::new(InStoreQueue),
        Arc::new(StaticAdminToken::new("admin-token-for-route-tests-0123")),
    );
    Routers {
        full: full_router(state.clone()),
        by_function: BTreeMap::from([
            ("settings", settings_router(state.clone())),
            ("push-webhook", push_router(state.clone())),
            ("image-tag", image_router(state)),
        ]),
        _dir: dir,
    }
}

/// The path with every `{param}` replaced by a value the handlers accept as an identifier.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{org}" => "acme",
            "{service_id}" => "api",
            "{provider}" => "github",
            "{token_id}" => "tok1",
            "{target_id}" => "hook",
            "{deployment_id}" | "{delivery_id}" => "0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e",
            "{secret}" => "a-dockerhub-secret-0123456789",
            other => {
                assert!(
                    !other.contains('{'),
                    "a path parameter this test does not know: {other}"
                );
                other
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Status and JSON body (or `Null`) of `method path`, sent without credentials or body.
async fn send(router: &Router, method: &str, path: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// What a router answers for a path it has no route for.
async fn fallback(router: &Router) -> (StatusCode, Value) {
    let answer = send(router, "GET", "/no/such/route/at/all").await;
    assert_eq!(answer.0, StatusCode::NOT_FOUND);
    assert_eq!(answer.1["error"]["code"], "NOT_FOUND");
    answer
}

/// Whether `router` has a route for `method path`: it answers neither its "no such route"
/// 404 nor 405.
async fn serves(router: &Router, method: &str, path: &str) -> bool {
    let unknown = fallback(router).await;
    let (status, body) = send(router, method, &concrete(path)).await;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED", "{method} {path}: {body}");
        return false;
    }
    !(status == unknown.0 && body == unknown.1)
}

#[test]
fn the_table_is_well_formed() {
    let mut seen = BTreeSet::new();
    for (method, path, function) in ROUTES {
        assert!(
            ["GET", "PUT", "PATCH", "POST", "DELETE"].contains(method),
            "{method} {path}"
        );
        assert!(path.starts_with('/'), "{path}");
        assert!(
            FUNCTIONS.contains(function) || *function == STANDALONE,
            "{method} {path}: unknown function {function}"
        );
        assert!(seen.insert((method, path)), "{method} {path} listed twice");
    }
    assert!(seen.contains(&(&"GET", &EVERYWHERE)), "the table lists {EVERYWHERE}");
}

#[tokio::test]
async fn the_standalone_server_serves_every_route() {
    let routers = routers();
    for (method, path, _) in ROUTES {
        assert!(
            serves(&routers.full, method, path).await,
            "full_router does not serve {method} {path}"
        );
    }
}

#[tokio::test]
async fn each_function_serves_exactly_its_routes() {
    let routers = routers();
    for (name, router) in &routers.by_function {
        for (method, path, function) in ROUTES {
            let expected = function == name || *path == EVERYWHERE;
            assert_eq!(
                serves(router, method, path).await,
                expected,
                "the {name} router {} {method} {path}",
                if expected { "does not serve" } else { "serves" }
            );
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_api_error_shape() {
    let routers = routers();
    for router in routers.by_function.values().chain([&routers.full]) {
        let (status, body) = fallback(router).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"]["details"].is_array());
    }
    let (status, body) = send(&routers.full, "DELETE", "/organization/acme/deployments").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
    // An unknown git provider is a 404 whatever the method, a known one's route a 405 but for
    // POST: on the standalone server and on AWS, where the settings function gets the GETs.
    for router in [&routers.full, &routers.by_function["settings"]] {
        let (status, body) = send(router, "GET", "/organization/acme/webhooks/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Unknown git provider; use one of github, "),
            "{body}"
        );
        let (status, body) = send(router, "GET", "/organization/acme/webhooks/gitlab").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    }
    // A trailing slash, a copy-paste mistake, is named.
    for path in ["/organization/acme/services/", "/organization/acme/webhooks/github/"] {
        let (status, body) = send(&routers.full, "POST", path).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body["error"]["message"], "No such route: paths do not end with `/`; remove the trailing slash.",
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_standalone_server_serves_its_openapi_document() {
    let routers = routers();
    let request = Request::builder().uri("/openapi.yaml").body(Body::empty()).unwrap();
    let response = routers.full.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let on_disk = std::fs::read_to_string(root().join("infra/openapi.yaml")).unwrap();
    assert_eq!(body, on_disk.as_bytes());
    assert_eq!(OPENAPI_YAML, on_disk);
}

fn yaml(relative: &str) -> Yaml {
    let path = root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The value of a `!Ref` in the template, if `value` is one.
fn ref_target(value: &Yaml) -> Option<&str> {
    match value {
        Yaml::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
        _ => None,
    }
}

#[test]
fn the_template_routes_exactly_the_table_to_each_function() {
    let template = yaml("infra/template.yaml");
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut routed: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut defaults: Vec<String> = Vec::new();
    let mut code_dirs: BTreeSet<String> = BTreeSet::new();
    for (id, resource) in resources {
        let id = id.as_str().unwrap();
        let events = resource["Properties"]["Events"].as_mapping();
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let code_uri = resource["Properties"]["CodeUri"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: CodeUri"));
        let function = code_uri.rsplit('/').next().unwrap().to_owned();
        // The template builds the workspace's crate of that name.
        let manifest = root().join("infra").join(code_uri).join("Cargo.toml");
        let manifest_text =
            std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{id}: {}: {e}", manifest.display()));
        assert!(
            manifest_text.contains(&format!("name = \"{function}\"")),
            "{id}: {} is not the package {function}",
            manifest.display()
        );
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        code_dirs.insert(function.clone());
        for (name, event) in events.into_iter().flatten() {
            if event["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            let props = &event["Properties"];
            assert_eq!(ref_target(&props["ApiId"]), Some("HttpApi"), "{id}.{name:?}: ApiId");
            assert_eq!(props["PayloadFormatVersion"], "2.0", "{id}.{name:?}");
            match (props["Method"].as_str(), props["Path"].as_str()) {
                (Some(method), Some(path)) => {
                    let new = routed.insert((method.to_ascii_uppercase(), path.to_owned(), function.clone()));
                    assert!(new, "{method} {path} routed twice");
                }
                (None, None) => defaults.push(function.clone()),
                other => panic!("{id}.{name:?}: a Method without a Path or the reverse: {other:?}"),
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .filter(|(_, _, f)| *f != STANDALONE)
        .map(|(m, p, f)| ((*m).to_owned(), (*p).to_owned(), (*f).to_owned()))
        .collect();
    let missing: Vec<_> = expected.difference(&routed).collect();
    let extra: Vec<_> = routed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "template routes differ from ROUTES: missing {missing:?}, not in ROUTES {extra:?}"
    );
    // Every other request reaches settings, which answers it in the API's error shape.
    assert_eq!(defaults, vec!["settings".to_owned()], "one $default route, to settings");
    for function in FUNCTIONS {
        assert!(code_dirs.contains(function), "the template has no {function} function");
    }
}

#[test]
fn the_openapi_document_describes_exactly_the_table() {
    let document = yaml("infra/openapi.yaml");
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_mapping().expect("paths") {
        let path = path.as_str().unwrap();
        for (key, _) in item.as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&key) {
                documented.insert((key.to_ascii_uppercase(), path.to_owned()));
            }
        }
    }
    let expected = all_routes();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "openapi.yaml differs from ROUTES: undocumented {missing:?}, not in ROUTES {extra:?}"
    );
}

/// Whether `path` (a route of the table) is one of the paths `template` matches: the same
/// segments, a `{param}` of `template` matching any one.
fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || t.starts_with('{'))
}

/// Methods a route could be declared with (HEAD is left out: axum answers it wherever GET is
/// served).
const METHODS: [&str; 7] = ["GET", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE"];

/// Every method on every path of the table, to every router: each serves exactly the routes
/// the table gives it, so a route added to a router alone, or another method on one of its
/// paths (or a route for any method), fails here.
#[tokio::test]
async fn no_router_serves_a_route_the_table_does_not_give_it() {
    let routers = routers();
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, path, _)| *path).collect();
    let mut cases: Vec<(&str, &Router, BTreeSet<Route>)> = vec![(STANDALONE, &routers.full, all_routes())];
    for (name, router) in &routers.by_function {
        let mut expected = routes_of(name);
        expected.insert(("GET".to_owned(), EVERYWHERE.to_owned()));
        cases.push((name, router, expected));
    }
    for (name, router, expected) in cases {
        let mut served = BTreeSet::new();
        for path in &paths {
            for method in METHODS {
                if serves(router, method, path).await {
                    served.insert((method.to_owned(), (*path).to_owned()));
                }
            }
        }
        // A literal path another route's parameter also matches (`GET …/deployments/lease` is
        // `GET …/deployments/{deployment_id}` to a router without the consumer routes) is that
        // route, served as the table says.
        let extra: Vec<_> = served
            .difference(&expected)
            .filter(|(method, path)| {
                !expected
                    .iter()
                    .any(|(m, template)| m == method && template_matches(template, path))
            })
            .collect();
        let missing: Vec<_> = expected.difference(&served).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "the {name} router: serves {extra:?} not in ROUTES, does not serve {missing:?}"
        );
    }
}

/// The settings function is API Gateway's `$default` route: what no other route takes reaches
/// it, and it answers as the standalone server does — another function's path with a method
/// that function does not take is a 405; a route of the standalone server alone a 404 (the
/// pull consumers' routes among them, though `GET …/deployments/{deployment_id}` shares their
/// prefix).
#[tokio::test]
async fn the_default_route_answers_as_the_standalone_server() {
    let routers = routers();
    let settings = &routers.by_function["settings"];
    for (method, path, function) in ROUTES {
        let path = concrete(path);
        let (status, body) = match *function {
            "settings" => continue,
            STANDALONE => send(settings, method, &path).await,
            _ => {
                let other = if *method == "GET" { "DELETE" } else { "GET" };
                let answer = send(settings, other, &path).await;
                assert_eq!(
                    answer.0,
                    send(&routers.full, other, &path).await.0,
                    "{other} {path}: {}",
                    answer.1
                );
                answer
            }
        };
        let expected = if *function == STANDALONE {
            (StatusCode::NOT_FOUND, "NOT_FOUND")
        } else {
            (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        };
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap_or_default()),
            expected,
            "{path}: {body}"
        );
    }
}
