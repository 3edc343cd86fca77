//! Registry notifications (Docker Hub, GitHub Packages, Amazon ECR via EventBridge) turned into
//! the `(registry, path, tag)` an image-tag deployment needs.
//!
//! A notification that is well formed but announces nothing deployable (a ping, a deletion, an
//! untagged push) is [`RegistryEvent::Ignored`] with a reason, answered 200; a body that is not
//! the registry's shape is a [`RegistryEventError`], answered 400 `MALFORMED_BODY`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::{DOCKER_HUB, ImageError, normalize_registry, parse_path, validate_tag};

/// A new tag of an image, as a registry announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePushed {
    /// Normalized registry host (`docker.io`, `ghcr.io`, `{account}.dkr.ecr.{region}.amazonaws.com`).
    pub registry: String,
    /// Normalized repository path (`library/nginx`, `acme/api`).
    pub path: String,
    pub tag: String,
    pub source: ImageSourceKind,
}

/// Who announced a tag; recorded in the deployment trigger (`"source": "DOCKER_HUB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageSourceKind {
    /// The deploy endpoint, called by CI.
    Api,
    DockerHub,
    GithubPackages,
    Ecr,
}

/// What a registry notification means for deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    Pushed(ImagePushed),
    /// Nothing to deploy; the sentence says why.
    Ignored(&'static str),
}

/// A notification body that is not what the registry sends (→ 400 `MALFORMED_BODY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryEventError {
    #[error("The body is not JSON: {0}.")]
    NotJson(String),
    #[error("The body is not a notification as {provider} sends it: {reason}.")]
    WrongShape { provider: &'static str, reason: String },
    #[error("The notification from {provider} names an invalid image. {source}")]
    InvalidImage { provider: &'static str, source: ImageError },
    #[error("The notification from {provider} carries an invalid tag. {source}")]
    InvalidTag { provider: &'static str, source: ImageError },
}

const DOCKER_HUB_PROVIDER: &str = "Docker Hub";
const GITHUB_PROVIDER: &str = "GitHub";
const ECR_PROVIDER: &str = "Amazon ECR (EventBridge)";

/// Docker Hub push webhook: the tag is `push_data.tag`, the repository `repository.repo_name`
/// (`acme/api`, or `nginx` for an official image, stored as `library/nginx`), on `docker.io`.
pub fn parse_dockerhub(body: &[u8]) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Push {
        push_data: PushData,
        repository: Repository,
    }
    #[derive(Deserialize)]
    struct PushData {
        #[serde(default)]
        tag: Option<String>,
    }
    #[derive(Deserialize)]
    struct Repository {
        repo_name: String,
    }

    let push: Push = from_body(DOCKER_HUB_PROVIDER, body)?;
    let Some(tag) = push.push_data.tag.filter(|t| !t.is_empty()) else {
        return Ok(RegistryEvent::Ignored(
            "The push carries no tag, so there is no tag to deploy.",
        ));
    };
    pushed(
        DOCKER_HUB_PROVIDER,
        ImageSourceKind::DockerHub,
        DOCKER_HUB,
        &push.repository.repo_name,
        tag,
    )
}

/// GitHub `package` and `registry_package` webhooks (`event` is the `X-GitHub-Event` header).
///
/// Only action `published` of a container package announces an image, on the host of the
/// version's `package_url` (`ghcr.io`). The path is that URL's path, lower-cased as ghcr.io
/// requires (GitHub sends owners as written, `Codertocat`); without a URL it is
/// `{owner}/{name}`. The tag is `container_metadata.tag.name`, else the URL's tag, else a
/// `version` that is not a digest. A version with none of them (pushed by digest only) is
/// ignored, as are pings, other events and actions, and non-container packages.
pub fn parse_github_package(event: &str, body: &[u8]) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Delivery {
        action: String,
        package: Option<Package>,
        registry_package: Option<Package>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: Option<String>,
        ecosystem: Option<String>,
        package_type: Option<String>,
        owner: Option<Owner>,
        package_version: Option<PackageVersion>,
        registry: Option<Registry>,
    }
    #[derive(Deserialize)]
    struct Owner {
        login: String,
    }
    #[derive(Deserialize)]
    struct Registry {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    #[derive(Deserialize)]
    struct PackageVersion {
        version: Option<String>,
        container_metadata: Option<ContainerMetadata>,
        package_url: Option<String>,
    }
    #[derive(Deserialize)]
    struct ContainerMetadata {
        tag: Option<ContainerTag>,
    }
    #[derive(Deserialize)]
    struct ContainerTag {
        name: Option<String>,
    }

    let key = match event.trim() {
        "package" => "package",
        "registry_package" => "registry_package",
        "ping" => {
            return Ok(RegistryEvent::Ignored("A ping: GitHub is checking the webhook."));
        }
        _ => {
            return Ok(RegistryEvent::Ignored("Not a package event, so it announces no image."));
        }
    };
    let delivery: Delivery = from_body(GITHUB_PROVIDER, body)?;
    if delivery.action != "published" {
        return Ok(RegistryEvent::Ignored(
            "Only a published package version announces a new image.",
        ));
    }
    let package = match key {
        "package" => delivery.package,
        _ => delivery.registry_package,
    }
    .ok_or_else(|| wrong_shape(GITHUB_PROVIDER, format!("missing field `{key}`")))?;

    let is_container = |value: Option<&str>| {
        value.is_some_and(|v| v.eq_ignore_ascii_case("container") || v.eq_ignore_ascii_case("docker"))
    };
    if !(is_container(package.package_type.as_deref())
        || is_container(package.ecosystem.as_deref())
        || is_container(package.registry.as_ref().and_then(|r| r.kind.as_deref())))
    {
        return Ok(RegistryEvent::Ignored(
            "Not a container package, so it announces no image.",
        ));
    }

    let version = package
        .package_version
        .ok_or_else(|| wrong_shape(GITHUB_PROVIDER, format!("missing field `{key}.package_version`")))?;
    let from_url = version.package_url.as_deref().and_then(split_package_url);

    let metadata_tag = version.container_metadata.and_then(|m| m.tag).and_then(|t| t.name);
    let tag = [
        metadata_tag,
        from_url.as_ref().map(|u| u.tag.to_owned()),
        version.version.filter(|v| !v.contains(':')),
    ]
    .into_iter()
    .flatten()
    .find(|t| !t.is_empty());
    let Some(tag) = tag else {
        return Ok(RegistryEvent::Ignored(
            "The package version is untagged (a digest only), so there is no tag to deploy.",
        ));
    };

    let (registry, path) = match from_url {
        Some(url) => (url.host, url.path.to_ascii_lowercase()),
        None => match (package.owner, package.name) {
            (Some(owner), Some(name)) => ("ghcr.io", format!("{}/{}", owner.login, name).to_ascii_lowercase()),
            _ => {
                return Err(wrong_shape(
                    GITHUB_PROVIDER,
                    format!(
                        "`{key}.package_version.package_url` or `{key}.owner.login` and `{key}.name` are needed to name the image"
                    ),
                ));
            }
        },
    };
    pushed(GITHUB_PROVIDER, ImageSourceKind::GithubPackages, registry, &path, tag)
}

/// Amazon EventBridge "ECR Image Action" event (as a rule or a queue delivers it): a successful
/// `PUSH` with an `image-tag` announces `{account}.dkr.ecr.{region}.amazonaws.com/{repository}`
/// (`.amazonaws.com.cn` in China regions). Other sources, actions (`DELETE`), failed results and
/// pushes by digest alone are ignored.
pub fn parse_ecr_event(event: &Value) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Envelope {
        source: String,
        #[serde(rename = "detail-type")]
        detail_type: String,
    }
    #[derive(Deserialize)]
    struct ImageAction {
        account: String,
        region: String,
        detail: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "action-type")]
        action_type: String,
        result: String,
        #[serde(rename = "repository-name")]
        repository_name: Option<String>,
        #[serde(rename = "image-tag")]
        image_tag: Option<String>,
    }

    let envelope: Envelope = from_value(ECR_PROVIDER, event)?;
    if envelope.source != "aws.ecr" || envelope.detail_type != "ECR Image Action" {
        return Ok(RegistryEvent::Ignored(
            "Not an ECR image action event, so it announces no image.",
        ));
    }
    let action: ImageAction = from_value(ECR_PROVIDER, event)?;
    let detail = action.detail;
    if detail.action_type != "PUSH" {
        return Ok(RegistryEvent::Ignored("Only an image push announces a new image."));
    }
    if detail.result != "SUCCESS" {
        return Ok(RegistryEvent::Ignored(
            "The push did not succeed, so there is nothing to deploy.",
        ));
    }
    let Some(tag) = detail.image_tag.filter(|t| !t.is_empty()) else {
        return Ok(RegistryEvent::Ignored(
            "The push carries no tag (a digest only), so there is no tag to deploy.",
        ));
    };
    let repository = detail
        .repository_name
        .ok_or_else(|| wrong_shape(ECR_PROVIDER, "missing field `detail.repository-name`".to_owned()))?;
    let account = action.account;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong_shape(
            ECR_PROVIDER,
            "`account` is not a 12-digit AWS account id".to_owned(),
        ));
    }
    let region = action.region;
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(wrong_shape(
            ECR_PROVIDER,
            "`region` is not an AWS region name".to_owned(),
        ));
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let host = format!("{account}.dkr.ecr.{region}.{domain}");
    pushed(ECR_PROVIDER, ImageSourceKind::Ecr, &host, &repository, tag)
}

/// Validate and normalize what a notification names, into a push.
fn pushed(
    provider: &'static str,
    source: ImageSourceKind,
    host: &str,
    path: &str,
    tag: String,
) -> Result<RegistryEvent, RegistryEventError> {
    validate_tag(&tag).map_err(|source| RegistryEventError::InvalidTag { provider, source })?;
    let invalid_image = |source| RegistryEventError::InvalidImage { provider, source };
    let registry = normalize_registry(host).map_err(invalid_image)?;
    let path = parse_path(&registry, path).map_err(invalid_image)?;
    Ok(RegistryEvent::Pushed(ImagePushed {
        registry,
        path,
        tag,
        source,
    }))
}

/// The parts of a GitHub `package_url` (`ghcr.io/Owner/name:tag`; the tag may be empty).
struct PackageUrl<'a> {
    host: &'a str,
    path: &'a str,
    tag: &'a str,
}

fn split_package_url(url: &str) -> Option<PackageUrl<'_>> {
    let url = url.strip_prefix("https://").unwrap_or(url);
    let url = url.split_once('@').map_or(url, |(name, _digest)| name);
    let (host, rest) = url.split_once('/')?;
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (rest, ""),
    };
    (!host.is_empty() && !path.is_empty()).then_some(PackageUrl { host, path, tag })
}

fn wrong_shape(provider: &'static str, reason: String) -> RegistryEventError {
    RegistryEventError::WrongShape { provider, reason }
}

/// Parse a body in two steps, so "not JSON" and "not this registry's shape" read differently.
fn from_body<T: DeserializeOwned>(provider: &'static str, body: &[u8]) -> Result<T, RegistryEventError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| RegistryEventError::NotJson(err.to_string()))?;
    from_value(provider, &value)
}

/// Deserialize, naming the offending field's path in the error.
fn from_value<T: DeserializeOwned>(provider: &'static str, value: &Value) -> Result<T, RegistryEventError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let reason = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        wrong_shape(provider, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DOCKERHUB_PUSH: &[u8] = include_bytes!("../../../tests/fixtures/webhooks/registry/dockerhub-push.json");
    const GITHUB_PACKAGE: &[u8] =
        include_bytes!("../../../tests/fixtures/webhooks/registry/github-package-published.docker.json");
    const GITHUB_REGISTRY_PACKAGE: &[u8] =
        include_bytes!("../../../tests/fixtures/webhooks/registry/github-registry_package-published.docker.json");

    fn push(registry: &str, path: &str, tag: &str, source: ImageSourceKind) -> RegistryEvent {
        RegistryEvent::Pushed(ImagePushed {
            registry: registry.to_owned(),
            path: path.to_owned(),
            tag: tag.to_owned(),
            source,
        })
    }

    fn edit(body: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(body).unwrap();
        f(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    fn is_ignored(event: Result<RegistryEvent, RegistryEventError>) -> bool {
        matches!(event, Ok(RegistryEvent::Ignored(reason)) if reason.ends_with('.'))
    }

    #[test]
    fn source_kinds_serialize_as_the_spec_names_them() {
        let names = [
            (ImageSourceKind::Api, "API"),
            (ImageSourceKind::DockerHub, "DOCKER_HUB"),
            (ImageSourceKind::GithubPackages, "GITHUB_PACKAGES"),
            (ImageSourceKind::Ecr, "ECR"),
        ];
        for (kind, name) in names {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
        }
    }

    #[test]
    fn dockerhub_fixture() {
        assert_eq!(
            parse_dockerhub(DOCKERHUB_PUSH),
            Ok(push("docker.io", "acme/api", "v2.4.1", ImageSourceKind::DockerHub))
        );
    }

    #[test]
    fn dockerhub_official_image_gets_library() {
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!("nginx"));
        assert_eq!(
            parse_dockerhub(&body),
            Ok(push("docker.io", "library/nginx", "v2.4.1", ImageSourceKind::DockerHub))
        );
    }

    #[test]
    fn dockerhub_without_tag_is_ignored() {
        for tag in [json!(""), json!(null)] {
            let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = tag);
            assert!(is_ignored(parse_dockerhub(&body)));
        }
    }

    #[test]
    fn dockerhub_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_dockerhub(b"not json"), Err(NotJson(_))));
        assert!(matches!(parse_dockerhub(b"\xff\xfe"), Err(NotJson(_))));
        assert!(matches!(parse_dockerhub(b"[]"), Err(WrongShape { .. })));
        assert!(matches!(parse_dockerhub(b"{}"), Err(WrongShape { .. })));
        let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = json!(5));
        let err = parse_dockerhub(&body).unwrap_err();
        assert!(err.to_string().contains("push_data.tag"), "{err}");
        let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = json!("-bad"));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidTag { .. })));
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!("Acme/API"));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidImage { .. })));
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!(""));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidImage { .. })));
    }

    #[test]
    fn github_fixtures_are_untagged_so_ignored() {
        // Both published examples carry a digest only (`container_metadata.tag.name` is "").
        assert!(is_ignored(parse_github_package("package", GITHUB_PACKAGE)));
        assert!(is_ignored(parse_github_package(
            "registry_package",
            GITHUB_REGISTRY_PACKAGE
        )));
    }

    #[test]
    fn github_tagged_versions() {
        let tagged = |body: &[u8], key: &str| {
            let key = key.to_owned();
            edit(body, move |v| {
                let version = &mut v[key.as_str()]["package_version"];
                version["container_metadata"]["tag"]["name"] = json!("1.4.0");
                version["package_url"] = json!("ghcr.io/Codertocat/hello-world:1.4.0");
            })
        };
        let want = push(
            "ghcr.io",
            "codertocat/hello-world",
            "1.4.0",
            ImageSourceKind::GithubPackages,
        );
        assert_eq!(
            parse_github_package("package", &tagged(GITHUB_PACKAGE, "package")),
            Ok(want.clone())
        );
        assert_eq!(
            parse_github_package("registry_package", &tagged(GITHUB_REGISTRY_PACKAGE, "registry_package")),
            Ok(want.clone())
        );

        // Tag only in the package URL.
        let body = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["package_url"] = json!("ghcr.io/Codertocat/hello-world:1.4.0");
        });
        assert_eq!(parse_github_package("package", &body), Ok(want.clone()));

        // No package URL: `{owner}/{name}`, lower-cased.
        let body = edit(GITHUB_PACKAGE, |v| {
            let version = &mut v["package"]["package_version"];
            version["container_metadata"]["tag"]["name"] = json!("latest");
            version.as_object_mut().unwrap().remove("package_url");
        });
        assert_eq!(
            parse_github_package("package", &body),
            Ok(push(
                "ghcr.io",
                "codertocat/hello-world-npm",
                "latest",
                ImageSourceKind::GithubPackages
            ))
        );

        // A non-digest `version` is a tag when nothing else names one.
        let body = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["version"] = json!("2.0.0")
        });
        assert_eq!(
            parse_github_package("package", &body),
            Ok(push(
                "ghcr.io",
                "codertocat/hello-world",
                "2.0.0",
                ImageSourceKind::GithubPackages
            ))
        );
    }

    #[test]
    fn github_ignores_what_announces_no_image() {
        assert!(is_ignored(parse_github_package(
            "ping",
            b"{\"zen\": \"Keep it simple.\"}"
        )));
        assert!(is_ignored(parse_github_package("push", b"not even json")));
        let updated = edit(GITHUB_PACKAGE, |v| v["action"] = json!("updated"));
        assert!(is_ignored(parse_github_package("package", &updated)));
        let npm = edit(GITHUB_PACKAGE, |v| {
            let package = &mut v["package"];
            package["ecosystem"] = json!("npm");
            package["registry"]["type"] = json!("npm");
            package["package_version"]["container_metadata"]["tag"]["name"] = json!("1.0.0");
        });
        assert!(is_ignored(parse_github_package("package", &npm)));
    }

    #[test]
    fn github_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_github_package("package", b"{"), Err(NotJson(_))));
        assert!(matches!(parse_github_package("package", b"{}"), Err(WrongShape { .. })));
        // The event header and the body disagree.
        let err = parse_github_package("package", GITHUB_REGISTRY_PACKAGE).unwrap_err();
        assert!(err.to_string().contains("`package`"), "{err}");
        let no_version = edit(GITHUB_PACKAGE, |v| {
            v["package"].as_object_mut().unwrap().remove("package_version");
        });
        assert!(matches!(
            parse_github_package("package", &no_version),
            Err(WrongShape { .. })
        ));
        let bad_tag = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["container_metadata"]["tag"]["name"] = json!("bad tag");
        });
        assert!(matches!(
            parse_github_package("package", &bad_tag),
            Err(InvalidTag { .. })
        ));
        let bad_action = edit(GITHUB_PACKAGE, |v| v["action"] = json!(1));
        assert!(matches!(
            parse_github_package("package", &bad_action),
            Err(WrongShape { .. })
        ));
        let no_name = edit(GITHUB_PACKAGE, |v| {
            let package = v["package"].as_object_mut().unwrap();
            package.remove("name");
            let version = package["package_version"].as_object_mut().unwrap();
            version.remove("package_url");
            version["container_metadata"]["tag"]["name"] = json!("1.0.0");
        });
        assert!(matches!(
            parse_github_package("package", &no_name),
            Err(WrongShape { .. })
        ));
    }

    #[test]
    fn package_urls() {
        let split = |s| split_package_url(s).map(|u| (u.host, u.path, u.tag));
        assert_eq!(split("ghcr.io/Owner/name:1.0"), Some(("ghcr.io", "Owner/name", "1.0")));
        assert_eq!(split("ghcr.io/owner/name:"), Some(("ghcr.io", "owner/name", "")));
        assert_eq!(split("ghcr.io/owner/name"), Some(("ghcr.io", "owner/name", "")));
        assert_eq!(split("https://ghcr.io/o/a/b@sha256:ab"), Some(("ghcr.io", "o/a/b", "")));
        assert_eq!(split("ghcr.io"), None);
        assert_eq!(split("ghcr.io/:1"), None);
    }

    fn ecr_event() -> Value {
        // Shape from the Amazon ECR user guide ("Events and EventBridge").
        json!({
            "version": "0",
            "id": "13cde686-328b-6117-af20-0e5566167482",
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": "123456789012",
            "time": "2019-11-16T01:54:34Z",
            "region": "us-east-2",
            "resources": [],
            "detail": {
                "result": "SUCCESS",
                "repository-name": "my-repository-name",
                "image-digest": "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
                "action-type": "PUSH",
                "image-tag": "latest"
            }
        })
    }

    #[test]
    fn ecr_push() {
        assert_eq!(
            parse_ecr_event(&ecr_event()),
            Ok(push(
                "123456789012.dkr.ecr.us-east-2.amazonaws.com",
                "my-repository-name",
                "latest",
                ImageSourceKind::Ecr
            ))
        );
        let mut event = ecr_event();
        event["region"] = json!("cn-north-1");
        event["detail"]["repository-name"] = json!("my.team/api");
        event["detail"]["image-tag"] = json!("v1.2.3");
        assert_eq!(
            parse_ecr_event(&event),
            Ok(push(
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "my.team/api",
                "v1.2.3",
                ImageSourceKind::Ecr
            ))
        );
    }

    #[test]
    fn ecr_ignores_what_announces_no_image() {
        let cases: [(&str, Value); 6] = [
            ("/detail/action-type", json!("DELETE")),
            ("/detail/result", json!("FAILURE")),
            ("/detail/image-tag", json!("")),
            ("/detail/image-tag", json!(null)),
            ("/source", json!("aws.s3")),
            ("/detail-type", json!("ECR Image Scan")),
        ];
        for (pointer, value) in cases {
            let mut event = ecr_event();
            *event.pointer_mut(pointer).unwrap() = value;
            assert!(is_ignored(parse_ecr_event(&event)), "{pointer}");
        }
        let mut event = ecr_event();
        event["detail"].as_object_mut().unwrap().remove("image-tag");
        assert!(is_ignored(parse_ecr_event(&event)));
    }

    #[test]
    fn ecr_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_ecr_event(&json!("text")), Err(WrongShape { .. })));
        assert!(matches!(parse_ecr_event(&json!({})), Err(WrongShape { .. })));
        let bad: [(&str, Value); 5] = [
            ("/account", json!("12345")),
            ("/account", json!(123456789012_u64)),
            ("/region", json!("US East")),
            ("/detail", json!("nope")),
            ("/detail/action-type", json!(null)),
        ];
        for (pointer, value) in bad {
            let mut event = ecr_event();
            *event.pointer_mut(pointer).unwrap() = value;
            assert!(matches!(parse_ecr_event(&event), Err(WrongShape { .. })), "{pointer}");
        }
        let mut event = ecr_event();
        event["detail"].as_object_mut().unwrap().remove("repository-name");
        assert!(matches!(parse_ecr_event(&event), Err(WrongShape { .. })));
        let mut event = ecr_event();
        event["detail"]["image-tag"] = json!("-bad");
        assert!(matches!(parse_ecr_event(&event), Err(InvalidTag { .. })));
        let mut event = ecr_event();
        event["detail"]["repository-name"] = json!("Bad/Name");
        assert!(matches!(parse_ecr_event(&event), Err(InvalidImage { .. })));
    }

    #[test]
    fn errors_are_sentences() {
        let errors = [
            parse_dockerhub(b"nope").unwrap_err(),
            parse_dockerhub(b"{}").unwrap_err(),
            parse_ecr_event(&json!({})).unwrap_err(),
        ];
        for err in errors {
            let text = err.to_string();
            assert!(text.starts_with("The ") && text.ends_with('.'), "{text}");
        }
    }
}
