//! The service model: what a team registers and what the server keeps about it.
//!
//! How a request body becomes a [`ServiceSpec`] (field by field, every rule checked before
//! anything is stored) is in `document`.

mod document;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::image::parse_service_image;
use crate::provider::GitProvider;
use crate::repo_url::parse_repository_url;
use crate::restrictions::DeploymentRestriction;
use crate::tag_policy::TagPolicy;

pub use document::parse_service_document;

/// Longest accepted name, external id and similar free-text values.
pub const MAX_TEXT: usize = 255;
pub const MAX_URL: usize = 2048;
pub const MAX_PATH: usize = 1024;
pub const MAX_RESTRICTIONS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceKind {
    /// Built from a git repository.
    Application,
    /// Runs a container image.
    Container,
    /// Either source.
    Job,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Application => "APPLICATION",
            ServiceKind::Container => "CONTAINER",
            ServiceKind::Job => "JOB",
        }
    }
}

/// The repository a service follows. Shown with its read-only `repository_key`, the key
/// pushes are matched on; a body may send it back, it is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GitRepository {
    pub provider: GitProvider,
    /// As written, without the user name of an http(s) URL.
    pub url: String,
    /// The branch alone (`main`, never `refs/heads/main`), or a glob (`release/*`).
    pub branch: String,
    #[serde(default = "default_root_path")]
    pub root_path: String,
}

fn default_root_path() -> String {
    "/".to_owned()
}

impl GitRepository {
    /// The normalized repository (`github.com/acme/shop`) a push must name to reach it.
    pub fn repository_key(&self) -> Option<String> {
        parse_repository_url(&self.url).ok().map(|url| url.normalized)
    }
}

impl Serialize for GitRepository {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            provider: GitProvider,
            url: &'a str,
            branch: &'a str,
            root_path: &'a str,
            repository_key: Option<String>,
        }
        Shown {
            provider: self.provider,
            url: &self.url,
            branch: &self.branch,
            root_path: &self.root_path,
            repository_key: self.repository_key(),
        }
        .serialize(serializer)
    }
}

/// The image a service runs. Shown with its read-only `key` (`registry/path`, normalized),
/// which image notifications are matched on; a body may send it back, it is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageSource {
    #[serde(default = "default_registry")]
    pub registry: String,
    pub image_name: String,
    pub tag: String,
}

fn default_registry() -> String {
    "docker.io".to_owned()
}

impl ImageSource {
    /// The normalized registry host and repository path (`docker.io`, `library/nginx`).
    pub fn key(&self) -> Option<(String, String)> {
        parse_service_image(&self.registry, &self.image_name).ok()
    }
}

impl Serialize for ImageSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            registry: &'a str,
            image_name: &'a str,
            tag: &'a str,
            key: Option<String>,
        }
        Shown {
            registry: &self.registry,
            image_name: &self.image_name,
            tag: &self.tag,
            key: self.key().map(|(registry, path)| format!("{registry}/{path}")),
        }
        .serialize(serializer)
    }
}

/// Where a service's deployments are delivered: one of the organization's targets, and the
/// id the target knows the service by (a Qovery service id). Whether the target exists is
/// for whoever stores the service to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub target_id: String,
    pub external_id: Option<String>,
}

impl DeployTarget {
    /// Whether a target of type `kind` can deliver this service's deployments: a `QOVERY`
    /// target needs the `external_id` (the service's id there, a UUID).
    pub fn fits(&self, kind: crate::target::TargetType) -> bool {
        kind.accepts_external_id(self.external_id.as_deref())
    }

    /// Whether every type of target can deliver this service's deployments, so that whoever
    /// stores it need not read the type of the one it names.
    pub fn fits_every_type(&self) -> bool {
        crate::target::TARGET_TYPES.into_iter().all(|kind| self.fits(kind))
    }
}

/// The part of a service its owner writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub environment_id: String,
    pub name: String,
    pub kind: ServiceKind,
    pub auto_deploy: bool,
    pub git_repository: Option<GitRepository>,
    pub deployment_restrictions: Vec<DeploymentRestriction>,
    pub image: Option<ImageSource>,
    pub tag_policy: Option<TagPolicy>,
    /// `None`: pull consumers (or the queue) take the deployments.
    #[serde(default)]
    pub deploy_target: Option<DeployTarget>,
}

/// A stored service: the spec plus what the server keeps about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ServiceDocument")]
pub struct Service {
    pub id: String,
    pub organization_id: String,
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A service's document as [`Service`] writes it, read in one pass: services are read on
/// every delivery, and `#[serde(flatten)]` reads by first buffering every field of the
/// document.
#[derive(Deserialize)]
struct ServiceDocument {
    id: String,
    organization_id: String,
    environment_id: String,
    name: String,
    kind: ServiceKind,
    auto_deploy: bool,
    git_repository: Option<GitRepository>,
    deployment_restrictions: Vec<DeploymentRestriction>,
    image: Option<ImageSource>,
    tag_policy: Option<TagPolicy>,
    #[serde(default)]
    deploy_target: Option<DeployTarget>,
    version: u64,
    created_at: String,
    updated_at: String,
}

impl From<ServiceDocument> for Service {
    fn from(doc: ServiceDocument) -> Self {
        Service {
            id: doc.id,
            organization_id: doc.organization_id,
            spec: ServiceSpec {
                environment_id: doc.environment_id,
                name: doc.name,
                kind: doc.kind,
                auto_deploy: doc.auto_deploy,
                git_repository: doc.git_repository,
                deployment_restrictions: doc.deployment_restrictions,
                image: doc.image,
                tag_policy: doc.tag_policy,
                deploy_target: doc.deploy_target,
            },
            version: doc.version,
            created_at: doc.created_at,
            updated_at: doc.updated_at,
        }
    }
}

impl Service {
    /// The normalized repository (`host/path`) a push must carry to reach this service.
    pub fn repository_key(&self) -> Option<String> {
        self.spec.git_repository.as_ref()?.repository_key()
    }

    /// The normalized registry host and image path this service runs.
    pub fn image_key(&self) -> Option<(String, String)> {
        self.spec.image.as_ref()?.key()
    }
}

/// Why a body could not become a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Not a JSON object at all.
    Malformed(String),
    /// An object with bad fields, each named.
    Invalid(Vec<crate::error::FieldError>),
}

/// Apply an RFC 7396 JSON merge patch to a service's public document.
pub fn merge_patch(current: &Service, patch: &Value) -> Result<Value, SpecError> {
    if !patch.is_object() {
        return Err(SpecError::Malformed(
            "A merge patch must be a JSON object naming the fields to change.".to_owned(),
        ));
    }
    let mut doc = serde_json::to_value(current)
        .map_err(|e| SpecError::Malformed(format!("The stored service could not be read: {e}")))?;
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}
