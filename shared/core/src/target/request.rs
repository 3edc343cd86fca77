//! The HTTP request an attempt sends to a target (SPEC "Deploy targets and the dispatcher").
//!
//! - `WEBHOOK`: `POST url`, the deployment request JSON as body, signed per Standard Webhooks
//!   (`webhook-id` = deployment id, `webhook-timestamp` = this attempt, `webhook-signature`).
//! - `QOVERY`: `POST {api_url}/{application|container|job}/{external_id}/deploy` with
//!   `{"git_commit_id"}` or `{"image_tag"}`, `Authorization: Token …`.
//! - `GITHUB_ACTIONS`: `POST {api_url}/repos/{repository}/actions/workflows/{workflow}/dispatches`
//!   with `{"ref", "inputs": {…}}` (every input a string), `Authorization: Bearer …`.
//!
//! Credentials and signatures go in headers marked sensitive, so that no `Debug` of the
//! request shows them and the sender removes them from what a target answers.

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::signature::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, secret_key, sign};
use super::{Secret, Target, TargetSpec};
use crate::deployment::DeploymentRequest;
use crate::model::ServiceKind;

/// Every request says who sends it (GitHub refuses requests without a `User-Agent`).
pub const USER_AGENT_VALUE: &str = concat!("autodeploy/", env!("CARGO_PKG_VERSION"));
pub const GITHUB_ACCEPT: &str = "application/vnd.github+json";
pub const GITHUB_API_VERSION_HEADER: &str = "x-github-api-version";
pub const GITHUB_API_VERSION: &str = "2022-11-28";

/// Characters left as they are in a path segment: RFC 3986 unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Build the request of one attempt to deliver `deployment` to `target`; `external_id` is the
/// service's `deploy_target.external_id`, `now` the attempt's Unix time in seconds. An error
/// is a sentence for `last_error` (the attempt is not made: the deployment fails).
pub fn build_request(
    target: &TargetSpec,
    deployment: &DeploymentRequest,
    external_id: Option<&str>,
    now: u64,
) -> Result<Request<Vec<u8>>, String> {
    match target {
        Target::Webhook { url, secret } => webhook(url, secret, deployment, now),
        Target::Qovery { token, api_url } => qovery(token, api_url, deployment, external_id),
        Target::GithubActions {
            token,
            repository,
            workflow,
            git_ref,
            api_url,
        } => {
            let path = format!(
                "/repos/{}/actions/workflows/{}/dispatches",
                repository.split('/').map(segment).collect::<Vec<_>>().join("/"),
                segment(workflow)
            );
            let body = encode(&github_dispatch(git_ref, deployment, external_id))?;
            let request = post(&api(api_url, &path))?
                .header(AUTHORIZATION, credential("Bearer", token)?)
                .header(ACCEPT, GITHUB_ACCEPT)
                .header(GITHUB_API_VERSION_HEADER, GITHUB_API_VERSION);
            finish(request, body)
        }
    }
}

fn webhook(url: &str, secret: &Secret, deployment: &DeploymentRequest, now: u64) -> Result<Request<Vec<u8>>, String> {
    let key = secret_key(secret.expose())
        .ok_or("the target's secret is not a Standard Webhooks secret: set a new one on the target")?;
    let body = encode(deployment)?;
    let signature = sign(&key, &deployment.deployment_id, now, &body);
    let request = post(url)?
        .header(HEADER_ID, header(&deployment.deployment_id)?)
        .header(HEADER_TIMESTAMP, now)
        .header(HEADER_SIGNATURE, sensitive(header(&signature)?));
    finish(request, body)
}

fn qovery(
    token: &Secret,
    api_url: &str,
    deployment: &DeploymentRequest,
    external_id: Option<&str>,
) -> Result<Request<Vec<u8>>, String> {
    let external_id =
        external_id.ok_or("a QOVERY target needs the service's deploy_target.external_id (its Qovery service id)")?;
    // A path segment the URL would read as the directory itself or its parent: the token would
    // go to another path of the API than the deploy endpoint.
    if matches!(external_id, "." | "..") {
        return Err(
            "the service's deploy_target.external_id must not be . or .. (it is a path segment of Qovery's API)"
                .to_owned(),
        );
    }
    let (kind, body) = match deployment.service_kind {
        ServiceKind::Application => ("application", json!({"git_commit_id": commit(deployment)?})),
        ServiceKind::Container => ("container", json!({"image_tag": tag(deployment)?})),
        ServiceKind::Job => match (&deployment.image_tag, &deployment.git_commit_id) {
            (Some(tag), _) => ("job", json!({"image_tag": tag})),
            (None, Some(commit)) => ("job", json!({"git_commit_id": commit})),
            (None, None) => return Err("the deployment names neither an image tag nor a commit".to_owned()),
        },
    };
    let path = format!("/{kind}/{}/deploy", segment(external_id));
    let request = post(&api(api_url, &path))?.header(AUTHORIZATION, credential("Token", token)?);
    finish(request, encode(&body)?)
}

fn commit(deployment: &DeploymentRequest) -> Result<&str, String> {
    deployment
        .git_commit_id
        .as_deref()
        .ok_or_else(|| "the deployment of an APPLICATION names no commit".to_owned())
}

fn tag(deployment: &DeploymentRequest) -> Result<&str, String> {
    deployment
        .image_tag
        .as_deref()
        .ok_or_else(|| "the deployment of a CONTAINER names no image tag".to_owned())
}

/// The `workflow_dispatch` body: `ref` and the deployment as string inputs.
fn github_dispatch(git_ref: &str, deployment: &DeploymentRequest, external_id: Option<&str>) -> Value {
    let mut inputs = Map::new();
    let mut input = |name: &str, value: &str| {
        inputs.insert(name.to_owned(), Value::String(value.to_owned()));
    };
    input("deployment_id", &deployment.deployment_id);
    input("service_id", &deployment.service_id);
    input("environment_id", &deployment.environment_id);
    if let Some(commit) = &deployment.git_commit_id {
        input("git_commit_id", commit);
    }
    if let Some(tag) = &deployment.image_tag {
        input("image_tag", tag);
    }
    if let Some(external_id) = external_id {
        input("external_id", external_id);
    }
    json!({"ref": git_ref, "inputs": inputs})
}

/// An API base (stored without a trailing `/`) joined with an absolute path.
fn api(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|_| "the request body could not be encoded".to_owned())
}

/// A JSON `POST` to `url`.
fn post(url: &str) -> Result<http::request::Builder, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| "the target URL is not a valid URL".to_owned())?;
    Ok(Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONTENT_TYPE, "application/json"))
}

/// `{scheme} {token}`, marked sensitive.
fn credential(scheme: &str, token: &Secret) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::try_from(format!("{scheme} {}", token.expose()))
        .map_err(|_| "the target's token cannot be sent in a header: set a new one on the target".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// `value` marked sensitive: a credential, or what proves one (a signature).
fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

fn header(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::try_from(value).map_err(|_| "a header of the request could not be encoded".to_owned())
}

fn finish(builder: http::request::Builder, body: Vec<u8>) -> Result<Request<Vec<u8>>, String> {
    builder
        .body(body)
        .map_err(|_| "the request could not be built".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{SCHEMA, Trigger};
    use crate::provider::GitProvider;
    use crate::registry::ImageSourceKind;
    use crate::target::signature::verify;

    const COMMIT: &str = "9049f1265b7d61be4a8904a9a27120d2064dab3b";
    const DEPLOYMENT_ID: &str = "0f8b8c1e4d2a4b7f9a6e3c2d1b0a9f8e";

    fn push_deployment(kind: ServiceKind) -> DeploymentRequest {
        DeploymentRequest {
            schema: SCHEMA.to_owned(),
            deployment_id: DEPLOYMENT_ID.to_owned(),
            organization_id: "acme".to_owned(),
            environment_id: "production".to_owned(),
            service_id: "api".to_owned(),
            service_kind: kind,
            git_commit_id: Some(COMMIT.to_owned()),
            image_tag: None,
            trigger: Trigger::GitPush {
                provider: GitProvider::Github,
                repository: "github.com/acme/shop".to_owned(),
                branch: "main".to_owned(),
                before: "0".repeat(40),
                commit_sha: COMMIT.to_owned(),
                delivery_id: Some("d-1".to_owned()),
                pusher: Some("octocat".to_owned()),
            },
            requested_at: "2026-11-26T12:00:00Z".to_owned(),
        }
    }

    fn image_deployment(kind: ServiceKind) -> DeploymentRequest {
        DeploymentRequest {
            git_commit_id: None,
            image_tag: Some("1.1.0".to_owned()),
            trigger: Trigger::ImageTag {
                source: ImageSourceKind::Api,
                registry: "ghcr.io".to_owned(),
                image_name: "acme/api".to_owned(),
                previous_tag: Some("1.0.0".to_owned()),
                tag: "1.1.0".to_owned(),
            },
            ..push_deployment(kind)
        }
    }

    fn headers(request: &Request<Vec<u8>>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        out.sort();
        out
    }

    fn body(request: &Request<Vec<u8>>) -> Value {
        serde_json::from_slice(request.body()).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        out.sort();
        out
    }

    #[test]
    fn webhook_posts_the_signed_deployment_request() {
        let secret = crate::target::signature::webhook_secret_from(&[5; 32]);
        let target = Target::Webhook {
            url: "https://deploy.example.com/hooks?env=prod".to_owned(),
            secret: Secret::new(secret.clone()),
        };
        let deployment = push_deployment(ServiceKind::Application);
        let request = build_request(&target, &deployment, None, 1_800_000_000).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().to_string(), "https://deploy.example.com/hooks?env=prod");
        // The body is the queue message itself.
        let sent: DeploymentRequest = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(sent, deployment);
        assert_eq!(body(&request)["schema"], "autodeploy.deployment-request.v1");
        let h = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(h("webhook-id"), DEPLOYMENT_ID);
        assert_eq!(h("webhook-timestamp"), "1800000000");
        assert_eq!(h("content-type"), "application/json");
        assert!(h("user-agent").starts_with("autodeploy/"));
        assert!(h("webhook-signature").starts_with("v1,"));
        assert!(request.headers()["webhook-signature"].is_sensitive());
        assert_eq!(
            verify(
                &secret,
                &h("webhook-id"),
                &h("webhook-timestamp"),
                &h("webhook-signature"),
                request.body(),
                1_800_000_000,
                300
            ),
            Ok(())
        );
        assert_eq!(request.headers().len(), 5);
        // Another attempt: the same id, its own timestamp and signature.
        let again = build_request(&target, &deployment, None, 1_800_000_060).unwrap();
        assert_eq!(again.headers()["webhook-id"], DEPLOYMENT_ID);
        assert_eq!(again.headers()["webhook-timestamp"], "1800000060");
        assert_ne!(
            again.headers()["webhook-signature"],
            request.headers()["webhook-signature"]
        );
    }

    fn qovery_target() -> TargetSpec {
        Target::Qovery {
            token: Secret::new("qov_token_123"),
            api_url: "https://api.qovery.com".to_owned(),
        }
    }

    #[test]
    fn qovery_calls_the_deploy_endpoint_of_the_kind() {
        let external = Some("7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6");
        let cases = [
            (
                push_deployment(ServiceKind::Application),
                "application",
                json!({"git_commit_id": COMMIT}),
            ),
            (
                image_deployment(ServiceKind::Container),
                "container",
                json!({"image_tag": "1.1.0"}),
            ),
            (image_deployment(ServiceKind::Job), "job", json!({"image_tag": "1.1.0"})),
            (
                push_deployment(ServiceKind::Job),
                "job",
                json!({"git_commit_id": COMMIT}),
            ),
        ];
        for (deployment, kind, expected) in cases {
            let request = build_request(&qovery_target(), &deployment, external, 0).unwrap();
            assert_eq!(request.method(), Method::POST);
            assert_eq!(
                request.uri().to_string(),
                format!("https://api.qovery.com/{kind}/7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6/deploy")
            );
            assert_eq!(body(&request), expected);
            assert_eq!(
                headers(&request),
                pairs(&[
                    ("authorization", "Token qov_token_123"),
                    ("content-type", "application/json"),
                    ("user-agent", USER_AGENT_VALUE),
                ])
            );
            assert!(request.headers()["authorization"].is_sensitive());
            assert!(!format!("{request:?}").contains("qov_token_123"));
        }
    }

    #[test]
    fn qovery_needs_an_external_id_and_a_source() {
        let deployment = push_deployment(ServiceKind::Application);
        let error = build_request(&qovery_target(), &deployment, None, 0).unwrap_err();
        assert!(error.contains("external_id"), "{error}");
        for dots in [".", ".."] {
            let error = build_request(&qovery_target(), &deployment, Some(dots), 0).unwrap_err();
            assert!(error.contains("must not be . or .."), "{error}");
        }
        let error = build_request(
            &qovery_target(),
            &image_deployment(ServiceKind::Application),
            Some("x"),
            0,
        )
        .unwrap_err();
        assert_eq!(error, "the deployment of an APPLICATION names no commit");
        let error =
            build_request(&qovery_target(), &push_deployment(ServiceKind::Container), Some("x"), 0).unwrap_err();
        assert_eq!(error, "the deployment of a CONTAINER names no image tag");
        // An id that is not a plain segment is encoded, never a path of its own.
        let request = build_request(&qovery_target(), &deployment, Some("a/../b c"), 0).unwrap();
        assert_eq!(request.uri().path(), "/application/a%2F..%2Fb%20c/deploy");
    }

    fn github_target(api_url: &str) -> TargetSpec {
        Target::GithubActions {
            token: Secret::new("github_pat_11ABC"),
            repository: "acme/deploy".to_owned(),
            workflow: "deploy.yml".to_owned(),
            git_ref: "main".to_owned(),
            api_url: api_url.to_owned(),
        }
    }

    #[test]
    fn github_actions_dispatches_the_workflow_with_string_inputs() {
        let target = github_target("https://api.github.com");
        let request = build_request(&target, &push_deployment(ServiceKind::Application), Some("api-prod"), 0).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "https://api.github.com/repos/acme/deploy/actions/workflows/deploy.yml/dispatches"
        );
        assert_eq!(
            body(&request),
            json!({"ref": "main", "inputs": {
                "deployment_id": DEPLOYMENT_ID, "service_id": "api", "environment_id": "production",
                "git_commit_id": COMMIT, "external_id": "api-prod"}})
        );
        assert_eq!(
            headers(&request),
            pairs(&[
                ("accept", "application/vnd.github+json"),
                ("authorization", "Bearer github_pat_11ABC"),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT_VALUE),
                ("x-github-api-version", "2022-11-28"),
            ])
        );
        assert!(request.headers()["authorization"].is_sensitive());

        // An image deployment, no external id, a GitHub Enterprise Server API base.
        let target = github_target("https://ghe.example.com/api/v3");
        let request = build_request(&target, &image_deployment(ServiceKind::Container), None, 0).unwrap();
        assert_eq!(
            request.uri().to_string(),
            "https://ghe.example.com/api/v3/repos/acme/deploy/actions/workflows/deploy.yml/dispatches"
        );
        let inputs = body(&request)["inputs"].clone();
        assert_eq!(
            inputs,
            json!({"deployment_id": DEPLOYMENT_ID, "service_id": "api", "environment_id": "production",
                   "image_tag": "1.1.0"})
        );
        assert!(inputs.as_object().unwrap().values().all(Value::is_string));
    }
}
