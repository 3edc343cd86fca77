//! Registry notifications (Docker Hub, GitHub Packages, Amazon ECR via EventBridge) turned into
//! the `(registry, path, tag)` an image-tag deployment needs: one file per registry, as `push`
//! has one per git provider.
//!
//! A notification that is well formed but announces nothing deployable (a ping, a deletion, an
//! untagged push) is [`RegistryEvent::Ignored`] with a reason, and the image it names when it
//! names one, answered 200; a body that is not the registry's shape is a
//! [`RegistryEventError`], answered 400 `MALFORMED_BODY`.

mod dockerhub;
mod ecr;
mod github_packages;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::{ImageError, normalize_registry, parse_path, validate_tag};

pub use dockerhub::parse_dockerhub;
pub use ecr::parse_ecr_event;
pub use github_packages::parse_github_package;

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
    /// Nothing to deploy; `reason` says why. `image` is the image the notification names (an
    /// untagged push's, a failed one's), so that the deliveries history tells which image was
    /// not deployed; `None` when it names none, or none that is valid.
    Ignored {
        reason: &'static str,
        image: Option<NamedImage>,
    },
}

/// The image an ignored notification names, normalized as a deployed one would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedImage {
    pub registry: String,
    pub path: String,
    /// The tag, when the notification carries a valid one.
    pub tag: Option<String>,
}

impl RegistryEvent {
    /// Ignored, naming no image.
    pub(super) fn ignored(reason: &'static str) -> Self {
        Self::Ignored { reason, image: None }
    }

    /// Ignored, naming `host/path` (and `tag`) when they are a valid image name (and tag): what
    /// is not valid is left out rather than refused, as the notification is ignored anyway.
    pub(super) fn ignored_image(reason: &'static str, host: &str, path: &str, tag: Option<&str>) -> Self {
        let image = normalize_registry(host).ok().and_then(|registry| {
            let path = parse_path(&registry, path).ok()?;
            let tag = tag.filter(|tag| validate_tag(tag).is_ok()).map(str::to_owned);
            Some(NamedImage { registry, path, tag })
        });
        Self::Ignored { reason, image }
    }
}

/// A notification body that is not what the registry sends (→ 400 `MALFORMED_BODY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryEventError {
    #[error("The body is not JSON: {0}.")]
    NotJson(String),
    #[error("The body is not a notification as {provider} sends it: {reason}.")]
    WrongShape { provider: &'static str, reason: String },
    #[error("The notification from {provider} names an invalid image: it {source}.")]
    InvalidImage { provider: &'static str, source: ImageError },
    #[error("The notification from {provider} carries an invalid tag: it {source}.")]
    InvalidTag { provider: &'static str, source: ImageError },
}

/// Validate and normalize what a notification names, into a push.
pub(super) fn pushed(
    provider: &'static str,
    source: ImageSourceKind,
    host: &str,
    path: &str,
    tag: String,
) -> Result<RegistryEvent, RegistryEventError> {
    validate_tag(&tag).map_err(|source| RegistryEventError::InvalidTag { provider, source })?;
    let invalid_image = |source| RegistryEventError::InvalidImage {
        provider,
        source: quoting_nothing(source),
    };
    let registry = normalize_registry(host).map_err(invalid_image)?;
    let path = parse_path(&registry, path).map_err(invalid_image)?;
    Ok(RegistryEvent::Pushed(ImagePushed {
        registry,
        path,
        tag,
        source,
    }))
}

/// `err` without the name it suggests writing instead (`write `acme/api``), which is the
/// notification's own text lower-cased: an error about a body never repeats its text, so the
/// deliveries history keeps no part of it. Nor the advice to a CI job's author: a registry
/// wrote the name.
fn quoting_nothing(err: ImageError) -> ImageError {
    match err {
        ImageError::UpperCasePath { .. } => ImageError::UpperCasePath {
            suggestion: String::new(),
            advice: "",
        },
        other => other,
    }
}

pub(super) fn wrong_shape(provider: &'static str, reason: String) -> RegistryEventError {
    RegistryEventError::WrongShape { provider, reason }
}

/// Parse a body in two steps, so "not JSON" and "not this registry's shape" read differently.
pub(super) fn from_body<T: DeserializeOwned>(provider: &'static str, body: &[u8]) -> Result<T, RegistryEventError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| RegistryEventError::NotJson(err.to_string()))?;
    if !value.is_object() {
        let kind = match value {
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            _ => "null",
        };
        return Err(wrong_shape(
            provider,
            format!("invalid type: {kind}, expected an object"),
        ));
    }
    from_value(provider, &value)
}

/// Deserialize, naming the offending field's path in the error.
pub(super) fn from_value<T: DeserializeOwned>(provider: &'static str, value: &Value) -> Result<T, RegistryEventError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let inner = crate::error::in_json_terms(&inner.to_string());
        let reason = if path == "." { inner } else { format!("{path}: {inner}") };
        wrong_shape(provider, reason)
    })
}

#[cfg(test)]
mod test_util {
    use super::*;

    pub(crate) fn push(registry: &str, path: &str, tag: &str, source: ImageSourceKind) -> RegistryEvent {
        RegistryEvent::Pushed(ImagePushed {
            registry: registry.to_owned(),
            path: path.to_owned(),
            tag: tag.to_owned(),
            source,
        })
    }

    pub(crate) fn edit(body: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(body).unwrap();
        f(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    pub(crate) fn is_ignored(event: Result<RegistryEvent, RegistryEventError>) -> bool {
        matches!(event, Ok(RegistryEvent::Ignored { reason, .. }) if reason.ends_with('.'))
    }

    /// The image an ignored notification names: `(registry, path, tag)`.
    pub(crate) fn ignored_image(
        event: Result<RegistryEvent, RegistryEventError>,
    ) -> Option<(String, String, Option<String>)> {
        match event {
            Ok(RegistryEvent::Ignored { image, .. }) => image.map(|i| (i.registry, i.path, i.tag)),
            other => panic!("not ignored: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn errors_are_sentences() {
        let errors = [
            parse_dockerhub(b"nope").unwrap_err(),
            parse_dockerhub(b"{}").unwrap_err(),
            parse_ecr_event(&json!({})).unwrap_err(),
            parse_dockerhub(br#"{"push_data": {"tag": "-x"}, "repository": {"repo_name": "a/b"}}"#).unwrap_err(),
            parse_dockerhub(br#"{"push_data": {"tag": "1"}, "repository": {"repo_name": "A/b"}}"#).unwrap_err(),
        ];
        for err in errors {
            let text = err.to_string();
            assert!(text.starts_with("The ") && text.ends_with('.'), "{text}");
        }
    }
}
