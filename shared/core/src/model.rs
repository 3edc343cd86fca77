//! The service model: what a team registers, how a request body becomes one, and the checks
//! that run before anything is stored.
//!
//! Bodies are validated in three passes so that one 400 names every bad field: unknown keys
//! (walked over the raw JSON), types (each field deserialized on its own), then rules that
//! span fields (a source for the kind, parsable URLs, globs, ranges).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::branch::validate_branch;
use crate::error::FieldError;
use crate::ids::{ID_RULE, is_valid_id};
use crate::image::{normalize_registry, parse_service_image, validate_tag};
use crate::provider::GitProvider;
use crate::repo_url::parse_repository_url;
use crate::restrictions::{DeploymentRestriction, validate_restriction_value};
use crate::tag_policy::TagPolicy;

/// Longest accepted name, URL and similar free-text values (bytes).
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepository {
    pub provider: GitProvider,
    pub url: String,
    pub branch: String,
    #[serde(default = "default_root_path")]
    pub root_path: String,
}

fn default_root_path() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    #[serde(default = "default_registry")]
    pub registry: String,
    pub image_name: String,
    pub tag: String,
}

fn default_registry() -> String {
    "docker.io".to_owned()
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
}

/// A stored service: the spec plus what the server keeps about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub organization_id: String,
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

impl Service {
    /// The normalized repository (`host/path`) a push must carry to reach this service.
    pub fn repository_key(&self) -> Option<String> {
        let repo = self.spec.git_repository.as_ref()?;
        parse_repository_url(&repo.url).ok().map(|u| u.normalized)
    }

    /// The normalized registry host and image path this service runs.
    pub fn image_key(&self) -> Option<(String, String)> {
        let image = self.spec.image.as_ref()?;
        parse_service_image(&image.registry, &image.image_name).ok()
    }
}

/// Why a body could not become a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Not a JSON object at all.
    Malformed(String),
    /// An object with bad fields, each named.
    Invalid(Vec<FieldError>),
}

const SERVER_FIELDS: [&str; 5] = ["id", "organization_id", "version", "created_at", "updated_at"];
const TOP_FIELDS: [&str; 8] = [
    "environment_id",
    "name",
    "kind",
    "auto_deploy",
    "git_repository",
    "deployment_restrictions",
    "image",
    "tag_policy",
];
const GIT_FIELDS: [&str; 4] = ["provider", "url", "branch", "root_path"];
const IMAGE_FIELDS: [&str; 3] = ["registry", "image_name", "tag"];
const RESTRICTION_FIELDS: [&str; 3] = ["mode", "type", "value"];
const TAG_POLICY_FIELDS: [&str; 3] = ["type", "range", "pattern"];

/// Turn a PUT body (or a merge-patched document) into a validated spec for service `id` of
/// organization `org`.
pub fn parse_service_document(org: &str, id: &str, doc: &Value) -> Result<ServiceSpec, SpecError> {
    let Some(obj) = doc.as_object() else {
        return Err(SpecError::Malformed(
            "The body must be a JSON object describing a service.".to_owned(),
        ));
    };
    let mut errors = Vec::new();

    for (key, value) in obj {
        if TOP_FIELDS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "id" if value.as_str() != Some(id) => errors.push(FieldError::new(
                "id",
                "must equal the service id in the path, or be left out",
            )),
            "organization_id" if value.as_str() != Some(org) => errors.push(FieldError::new(
                "organization_id",
                "must equal the organization in the path, or be left out",
            )),
            k if SERVER_FIELDS.contains(&k) => {}
            other => errors.push(FieldError::new(other, "is not a known field")),
        }
    }
    check_nested_keys(obj, "git_repository", &GIT_FIELDS, &mut errors);
    check_nested_keys(obj, "image", &IMAGE_FIELDS, &mut errors);
    check_nested_keys(obj, "tag_policy", &TAG_POLICY_FIELDS, &mut errors);
    if let Some(Value::Array(items)) = obj.get("deployment_restrictions") {
        for (i, item) in items.iter().enumerate() {
            if let Some(map) = item.as_object() {
                unknown_keys(
                    map,
                    &format!("deployment_restrictions[{i}]"),
                    &RESTRICTION_FIELDS,
                    &mut errors,
                );
            }
        }
    }

    let environment_id: Option<String> = required(obj, "environment_id", &mut errors);
    let name: Option<String> = optional(obj, "name", &mut errors).flatten();
    let kind: Option<ServiceKind> = required(obj, "kind", &mut errors);
    let auto_deploy: Option<bool> = optional(obj, "auto_deploy", &mut errors);
    let git_repository: Option<Option<GitRepository>> = optional(obj, "git_repository", &mut errors);
    let deployment_restrictions: Option<Option<Vec<DeploymentRestriction>>> =
        optional(obj, "deployment_restrictions", &mut errors);
    let image: Option<Option<ImageSource>> = optional(obj, "image", &mut errors);
    let tag_policy: Option<Option<TagPolicy>> = optional(obj, "tag_policy", &mut errors);

    let spec = ServiceSpec {
        environment_id: environment_id.unwrap_or_default(),
        name: name.unwrap_or_else(|| id.to_owned()),
        kind: kind.unwrap_or(ServiceKind::Application),
        auto_deploy: auto_deploy.unwrap_or(false),
        git_repository: git_repository.flatten(),
        deployment_restrictions: deployment_restrictions.flatten().unwrap_or_default(),
        image: image.flatten(),
        tag_policy: tag_policy.flatten(),
    };
    // Rules that need well-typed values only run on fields that parsed; a type error was
    // already reported for the others.
    let typed_ok = |field: &str| !errors.iter().any(|e| e.field.starts_with(field));
    let mut rule_errors = Vec::new();
    if typed_ok("environment_id") && obj.contains_key("environment_id") && !is_valid_id(&spec.environment_id) {
        rule_errors.push(FieldError::new("environment_id", ID_RULE));
    }
    if typed_ok("name") {
        check_text("name", &spec.name, MAX_TEXT, &mut rule_errors);
    }
    if let Some(kind) = kind {
        // Presence comes from the document, so a source with a type error still counts as
        // given (its own error names it).
        let present = |f: &str| obj.get(f).is_some_and(|v| !v.is_null());
        let restrictions = obj
            .get("deployment_restrictions")
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()));
        let sources = Sources {
            git: present("git_repository"),
            image: present("image"),
            tag_policy: present("tag_policy"),
            restrictions,
        };
        check_sources(kind, sources, &mut rule_errors);
    }
    if typed_ok("git_repository")
        && let Some(repo) = &spec.git_repository
    {
        check_git_repository(repo, &mut rule_errors);
    }
    if typed_ok("deployment_restrictions") {
        check_restrictions(&spec.deployment_restrictions, &mut rule_errors);
    }
    if typed_ok("image")
        && let Some(image) = &spec.image
    {
        check_image(image, &mut rule_errors);
    }
    if typed_ok("tag_policy")
        && let Some(policy) = &spec.tag_policy
    {
        check_tag_policy(policy, &mut rule_errors);
    }
    errors.extend(rule_errors);
    // The key walk and a type check can both flag one field: name each field once.
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.field.clone()));
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(SpecError::Invalid(errors))
    }
}

fn check_nested_keys(obj: &Map<String, Value>, field: &str, known: &[&str], errors: &mut Vec<FieldError>) {
    if let Some(Value::Object(map)) = obj.get(field) {
        unknown_keys(map, field, known, errors);
    }
}

fn unknown_keys(map: &Map<String, Value>, prefix: &str, known: &[&str], errors: &mut Vec<FieldError>) {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(FieldError::new(format!("{prefix}.{key}"), "is not a known field"));
        }
    }
}

/// Deserialize one field; a type error is recorded with the field's full path.
fn field<T: DeserializeOwned>(value: &Value, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(err) => {
            // Unknown keys were already named, each at its own path, by the key walk.
            if err.inner().to_string().starts_with("unknown field") {
                return None;
            }
            let inner = err.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                name.to_owned()
            } else if inner.starts_with('[') {
                format!("{name}{inner}")
            } else {
                format!("{name}.{inner}")
            };
            errors.push(FieldError::new(path, type_message(&err.into_inner())));
            None
        }
    }
}

/// serde's messages are precise but quote input; keep them short and free of values.
fn type_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
    if text.len() > 200 {
        "has the wrong type".to_owned()
    } else {
        text
    }
}

fn required<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(v) => field(v, name, errors),
    }
}

/// `Some(value)` when present and well-typed (`null` reads as the type's own null).
fn optional<T: DeserializeOwned>(obj: &Map<String, Value>, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    obj.get(name).and_then(|v| field(v, name, errors))
}

fn check_text(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if value.len() > max {
        errors.push(FieldError::new(field, format!("must be at most {max} bytes long")));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must not contain control characters"));
    }
}

/// Which optional parts a document gives.
struct Sources {
    git: bool,
    image: bool,
    tag_policy: bool,
    restrictions: bool,
}

fn check_sources(kind: ServiceKind, given: Sources, errors: &mut Vec<FieldError>) {
    let Sources { git, image, .. } = given;
    match kind {
        ServiceKind::Application => {
            if !git {
                errors.push(FieldError::new("git_repository", "is required for an APPLICATION"));
            }
            if image {
                errors.push(FieldError::new(
                    "image",
                    "must be null for an APPLICATION (its source is git)",
                ));
            }
        }
        ServiceKind::Container => {
            if !image {
                errors.push(FieldError::new("image", "is required for a CONTAINER"));
            }
            if git {
                errors.push(FieldError::new(
                    "git_repository",
                    "must be null for a CONTAINER (its source is an image)",
                ));
            }
        }
        ServiceKind::Job => {
            if git == image {
                errors.push(FieldError::new(
                    if git { "image" } else { "git_repository" },
                    "a JOB needs exactly one source: git_repository or image",
                ));
            }
        }
    }
    if given.tag_policy && !image {
        errors.push(FieldError::new(
            "tag_policy",
            "applies only to a service with an image source",
        ));
    }
    if given.restrictions && !git {
        errors.push(FieldError::new(
            "deployment_restrictions",
            "apply only to a service with a git_repository",
        ));
    }
}

fn check_git_repository(repo: &GitRepository, errors: &mut Vec<FieldError>) {
    if repo.url.len() > MAX_URL {
        errors.push(FieldError::new(
            "git_repository.url",
            format!("must be at most {MAX_URL} bytes long"),
        ));
    } else {
        match parse_repository_url(&repo.url) {
            Ok(url) if url.has_credentials => errors.push(FieldError::new(
                "git_repository.url",
                "must not carry credentials; webhooks need none, and a URL is not a place for a secret",
            )),
            Ok(_) => {}
            Err(err) => errors.push(FieldError::new("git_repository.url", err.to_string())),
        }
    }
    if let Err(message) = validate_branch(&repo.branch) {
        errors.push(FieldError::new("git_repository.branch", message));
    }
    let root = &repo.root_path;
    if !root.starts_with('/') {
        errors.push(FieldError::new("git_repository.root_path", "must start with /"));
    } else if root.len() > MAX_PATH {
        errors.push(FieldError::new(
            "git_repository.root_path",
            format!("must be at most {MAX_PATH} bytes long"),
        ));
    } else if root.split('/').any(|s| s == "..") || root.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "git_repository.root_path",
            "must not contain .. segments or control characters",
        ));
    }
}

fn check_restrictions(rules: &[DeploymentRestriction], errors: &mut Vec<FieldError>) {
    if rules.len() > MAX_RESTRICTIONS {
        errors.push(FieldError::new(
            "deployment_restrictions",
            format!("must hold at most {MAX_RESTRICTIONS} rules"),
        ));
        return;
    }
    for (i, rule) in rules.iter().enumerate() {
        if let Err(message) = validate_restriction_value(&rule.value) {
            errors.push(FieldError::new(format!("deployment_restrictions[{i}].value"), message));
        }
    }
}

fn check_image(image: &ImageSource, errors: &mut Vec<FieldError>) {
    if let Err(err) = normalize_registry(&image.registry) {
        errors.push(FieldError::new("image.registry", err.to_string()));
    } else if let Err(err) = parse_service_image(&image.registry, &image.image_name) {
        errors.push(FieldError::new("image.image_name", err.to_string()));
    }
    if let Err(err) = validate_tag(&image.tag) {
        errors.push(FieldError::new("image.tag", err.to_string()));
    }
}

fn check_tag_policy(policy: &TagPolicy, errors: &mut Vec<FieldError>) {
    if let Err(message) = policy.compile() {
        let field = match policy {
            TagPolicy::Semver { .. } => "tag_policy.range",
            TagPolicy::Glob { .. } | TagPolicy::Regex { .. } => "tag_policy.pattern",
        };
        errors.push(FieldError::new(field, message));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> Value {
        json!({
            "environment_id": "production", "name": "API", "kind": "APPLICATION",
            "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop.git",
                               "branch": "main", "root_path": "/"},
            "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "services/api/"}],
            "image": null, "tag_policy": null
        })
    }

    fn fields(err: SpecError) -> Vec<String> {
        match err {
            SpecError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            SpecError::Malformed(m) => panic!("malformed: {m}"),
        }
    }

    #[test]
    fn parses_spec_example() {
        let spec = parse_service_document("acme", "api", &app()).unwrap();
        assert_eq!(spec.kind, ServiceKind::Application);
        assert!(spec.auto_deploy);
        assert_eq!(spec.git_repository.unwrap().branch, "main");
    }

    #[test]
    fn defaults() {
        let doc = json!({"environment_id": "prod", "kind": "CONTAINER",
                         "image": {"image_name": "acme/api", "tag": "1.0.0"}});
        let spec = parse_service_document("acme", "api", &doc).unwrap();
        assert_eq!(spec.name, "api");
        assert!(!spec.auto_deploy);
        assert_eq!(spec.image.unwrap().registry, "docker.io");
        assert!(spec.deployment_restrictions.is_empty());
    }

    #[test]
    fn server_fields_accepted_when_they_agree() {
        let mut doc = app();
        doc["id"] = json!("api");
        doc["organization_id"] = json!("acme");
        doc["version"] = json!(3);
        doc["created_at"] = json!("2026-01-01T00:00:00Z");
        assert!(parse_service_document("acme", "api", &doc).is_ok());
        doc["id"] = json!("other");
        doc["organization_id"] = json!("evil");
        assert_eq!(
            fields(parse_service_document("acme", "api", &doc).unwrap_err()),
            vec!["id", "organization_id"]
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let doc = json!({
            "environment_id": "bad id", "name": "", "kind": "APPLICATION", "auto_deploy": "yes",
            "extra": 1,
            "git_repository": {"provider": "GITHUB", "url": "https://user:pw@github.com/a/b",
                               "branch": "bad..branch", "root_path": "no-slash", "x": 1},
            "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "/abs"},
                                        {"mode": "NOPE", "type": "PATH", "value": "a"}],
        });
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        for want in [
            "auto_deploy",
            "environment_id",
            "extra",
            "git_repository.x",
            "name",
            "deployment_restrictions[1].mode",
        ] {
            assert!(got.iter().any(|f| f == want), "{want} missing from {got:?}");
        }
    }

    #[test]
    fn rules_on_valid_types() {
        let doc = json!({
            "environment_id": "prod", "kind": "APPLICATION",
            "git_repository": {"provider": "GITHUB", "url": "https://user:pw@github.com/a/b",
                               "branch": "bad..branch", "root_path": "no-slash"},
            "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "/abs"}],
        });
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        assert_eq!(
            got,
            vec![
                "deployment_restrictions[0].value",
                "git_repository.branch",
                "git_repository.root_path",
                "git_repository.url",
            ]
        );
    }

    #[test]
    fn sources_must_fit_the_kind() {
        let cases = [
            (json!({"environment_id": "p", "kind": "APPLICATION"}), "git_repository"),
            (json!({"environment_id": "p", "kind": "CONTAINER"}), "image"),
            (json!({"environment_id": "p", "kind": "JOB"}), "git_repository"),
            (
                json!({"environment_id": "p", "kind": "CONTAINER",
                       "image": {"image_name": "a/b", "tag": "1"},
                       "git_repository": {"provider": "GITHUB", "url": "https://github.com/a/b", "branch": "main"}}),
                "git_repository",
            ),
            (
                json!({"environment_id": "p", "kind": "APPLICATION",
                       "git_repository": {"provider": "GITHUB", "url": "https://github.com/a/b", "branch": "main"},
                       "tag_policy": {"type": "GLOB", "pattern": "v*"}}),
                "tag_policy",
            ),
        ];
        for (doc, field) in cases {
            let got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
            assert_eq!(got, vec![field], "{doc}");
        }
    }

    #[test]
    fn image_and_policy_rules() {
        let doc = json!({"environment_id": "p", "kind": "CONTAINER",
                         "image": {"registry": "bad host!", "image_name": "a/b", "tag": "-bad"},
                         "tag_policy": {"type": "SEMVER", "range": "not a range"}});
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        assert_eq!(got, vec!["image.registry", "image.tag", "tag_policy.range"]);
        let doc = json!({"environment_id": "p", "kind": "JOB",
                         "image": {"image_name": "a/b", "tag": "1"},
                         "tag_policy": {"type": "REGEX", "pattern": "("}});
        assert_eq!(
            fields(parse_service_document("acme", "api", &doc).unwrap_err()),
            vec!["tag_policy.pattern"]
        );
    }

    #[test]
    fn wrong_shapes() {
        assert!(matches!(
            parse_service_document("acme", "api", &json!([1])),
            Err(SpecError::Malformed(_))
        ));
        let doc = json!({"environment_id": 5, "kind": "LAMBDA", "deployment_restrictions": "x"});
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        assert_eq!(got, vec!["deployment_restrictions", "environment_id", "kind"]);
    }

    #[test]
    fn long_strings_refused() {
        let mut doc = app();
        doc["name"] = json!("x".repeat(MAX_TEXT + 1));
        doc["git_repository"]["url"] = json!(format!("https://github.com/{}", "a".repeat(MAX_URL)));
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        assert_eq!(got, vec!["git_repository.url", "name"]);
    }

    #[test]
    fn merge_patch_round_trip() {
        let spec = parse_service_document("acme", "api", &app()).unwrap();
        let service = Service {
            id: "api".into(),
            organization_id: "acme".into(),
            spec,
            version: 1,
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        let doc = merge_patch(
            &service,
            &json!({"auto_deploy": false, "deployment_restrictions": null}),
        )
        .unwrap();
        let patched = parse_service_document("acme", "api", &doc).unwrap();
        assert!(!patched.auto_deploy);
        assert!(patched.deployment_restrictions.is_empty());
        assert_eq!(service.repository_key().as_deref(), Some("github.com/acme/shop"));
        assert!(matches!(
            merge_patch(&service, &json!([])),
            Err(SpecError::Malformed(_))
        ));
    }
}
