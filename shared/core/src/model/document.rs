//! A service document (a PUT body, or a merge-patched one) read into a [`ServiceSpec`].
//!
//! Every object is read field by field with [`Fields`], so a body is exact at every depth: a
//! field that does not belong to its object is named at its full path (`tag_policy.range`),
//! and a body is never stored with a part dropped. Each field's rules are checked as it is
//! read, so one 400 names every bad field. What the server computes or keeps (`id`,
//! `version`, `git_repository.repository_key`, `image.key`, …) may be sent back, as a GET
//! gives it, and is ignored.

use serde::Deserialize;
use serde_json::Value;

use super::{
    DeployTarget, GitRepository, ImageSource, MAX_PATH, MAX_RESTRICTIONS, MAX_TEXT, MAX_URL, ServiceKind, ServiceSpec,
    SpecError,
};
use crate::body::{Document, DocumentError, Fields, read_document};
use crate::branch::{branch_name, validate_followed_branch};
use crate::error::FieldError;
use crate::ids::{ID_RULE, is_valid_id};
use crate::image::{DOCKER_HUB, normalize_registry, parse_service_image_or_default, validate_tag};
use crate::provider::GitProvider;
use crate::repo_url::{check_repository_url, parse_repository_url};
use crate::restrictions::{
    DeploymentRestriction, RestrictionMode, RestrictionType, check_glob_budget, validate_restriction_value,
};
use crate::tag_policy::TagPolicy;

/// What the server sets; a body may carry them back (a GET's document), and they are ignored
/// (`id` and `organization_id` only when they agree with the path).
const SERVER_FIELDS: [&str; 5] = ["id", "organization_id", "version", "created_at", "updated_at"];

/// Turn a PUT body (or a merge-patched document) into a validated spec for service `id` of
/// organization `org`.
pub fn parse_service_document(org: &str, id: &str, doc: &Value) -> Result<ServiceSpec, SpecError> {
    let read = read_document::<Body>(doc);
    let mut errors = match &read {
        Ok(_) => Vec::new(),
        Err(DocumentError::NotAnObject(message)) => return Err(SpecError::Malformed(message.clone())),
        Err(DocumentError::Invalid(errors)) => errors.clone(),
    };
    for (field, expected, message) in [
        ("id", id, "must equal the service id in the path, or be left out"),
        (
            "organization_id",
            org,
            "must equal the organization in the path, or be left out",
        ),
    ] {
        // `null` is as if left out, as for every optional field.
        if doc
            .get(field)
            .is_some_and(|value| !value.is_null() && value.as_str() != Some(expected))
        {
            errors.push(FieldError::new(field, message));
        }
    }
    match read {
        Ok(body) if errors.is_empty() => Ok(body.into_spec(id)),
        _ => Err(SpecError::Invalid(errors)),
    }
}

/// A service document as read, before the defaults that depend on the path.
struct Body {
    environment_id: String,
    name: Option<String>,
    kind: ServiceKind,
    auto_deploy: bool,
    git_repository: Option<GitRepository>,
    deployment_restrictions: Vec<DeploymentRestriction>,
    image: Option<ImageSource>,
    tag_policy: Option<TagPolicy>,
    deploy_target: Option<DeployTarget>,
}

impl Body {
    fn into_spec(self, id: &str) -> ServiceSpec {
        ServiceSpec {
            environment_id: self.environment_id,
            name: self.name.unwrap_or_else(|| id.to_owned()),
            kind: self.kind,
            auto_deploy: self.auto_deploy,
            git_repository: self.git_repository,
            deployment_restrictions: self.deployment_restrictions,
            image: self.image,
            tag_policy: self.tag_policy,
            deploy_target: self.deploy_target,
        }
    }
}

impl Document for Body {
    const SHAPE: &'static str = "{\"environment_id\": \"…\", \"kind\": \"APPLICATION\", …}";

    fn read(f: &mut Fields<'_>) -> Option<Self> {
        let environment_id: Option<String> = f.required("environment_id");
        if environment_id.as_deref().is_some_and(|e| !is_valid_id(e)) {
            f.error("environment_id", ID_RULE);
        }
        let name: Option<String> = f.optional("name");
        if let Some(name) = &name {
            check_text(f, "name", name);
        }
        let kind: Option<ServiceKind> = f.required("kind");
        let auto_deploy: Option<bool> = f.optional("auto_deploy");
        // Which sources are given decides what the kind allows; a source with a bad field
        // still counts as given (its own error names the field).
        let given = Sources {
            git: f.is_given("git_repository"),
            image: f.is_given("image"),
            tag_policy: f.is_given("tag_policy"),
            restrictions: f
                .value("deployment_restrictions")
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())),
        };
        let git_repository = f.object("git_repository", read_git_repository);
        let deployment_restrictions = f.objects("deployment_restrictions", MAX_RESTRICTIONS, read_restriction);
        if let Ok(Some(rules)) = &deployment_restrictions
            && let Err(message) = check_glob_budget(rules)
        {
            f.error("deployment_restrictions", message);
        }
        let image = f.object("image", read_image);
        let tag_policy = f.object("tag_policy", read_tag_policy);
        let deploy_target = f.object("deploy_target", read_deploy_target);
        for field in SERVER_FIELDS {
            f.ignore(field);
        }
        if let Some(kind) = kind {
            check_sources(f, kind, &given);
        }
        if f.has_errors() {
            return None;
        }
        Some(Body {
            environment_id: environment_id?,
            name,
            kind: kind?,
            auto_deploy: auto_deploy.unwrap_or(false),
            git_repository: git_repository.ok()?,
            deployment_restrictions: deployment_restrictions.ok()?.unwrap_or_default(),
            image: image.ok()?,
            tag_policy: tag_policy.ok()?,
            deploy_target: deploy_target.ok()?,
        })
    }
}

/// Free text: given, at most [`MAX_TEXT`] bytes, no control character.
fn check_text(f: &mut Fields<'_>, field: &str, value: &str) {
    if value.trim().is_empty() {
        f.error(field, "must not be empty");
    } else if value.len() > MAX_TEXT {
        f.error(field, format!("must be at most {MAX_TEXT} bytes long"));
    } else if value.chars().any(char::is_control) {
        f.error(field, "must not contain control characters");
    }
}

/// Which optional parts a document gives.
struct Sources {
    git: bool,
    image: bool,
    tag_policy: bool,
    restrictions: bool,
}

fn check_sources(f: &mut Fields<'_>, kind: ServiceKind, given: &Sources) {
    let Sources { git, image, .. } = *given;
    match kind {
        ServiceKind::Application => {
            if !git {
                f.error("git_repository", "is required for an APPLICATION");
            }
            if image {
                f.error("image", "must be null for an APPLICATION (its source is git)");
            }
        }
        ServiceKind::Container => {
            if !image {
                f.error("image", "is required for a CONTAINER");
            }
            if git {
                f.error(
                    "git_repository",
                    "must be null for a CONTAINER (its source is an image)",
                );
            }
        }
        ServiceKind::Job => {
            if git == image {
                f.error(
                    if git { "image" } else { "git_repository" },
                    "a JOB needs exactly one source: git_repository or image",
                );
            }
        }
    }
    if given.tag_policy && !image {
        f.error("tag_policy", "applies only to a service with an image source");
    }
    if given.restrictions && !git {
        f.error(
            "deployment_restrictions",
            "apply only to a service with a git_repository",
        );
    }
}

fn read_git_repository(f: &mut Fields<'_>) -> Option<GitRepository> {
    let provider: Option<GitProvider> = f.required("provider");
    let url: Option<String> = f.required("url");
    let branch: Option<String> = f.required("branch");
    let root_path: Option<String> = f.optional("root_path");
    // Computed from `url`; shown, never read.
    f.ignore("repository_key");

    let url = url.and_then(|url| check_url(f, provider, &url));
    let branch = branch.map(|branch| branch_name(&branch).to_owned());
    if let Some(Err(message)) = branch.as_deref().map(validate_followed_branch) {
        f.error("branch", message);
    }
    let root_path = root_path.unwrap_or_else(|| "/".to_owned());
    if !root_path.starts_with('/') {
        f.error("root_path", "must start with /");
    } else if root_path.len() > MAX_PATH {
        f.error("root_path", format!("must be at most {MAX_PATH} bytes long"));
    } else if root_path.split('/').any(|s| s == "..") || root_path.chars().any(char::is_control) {
        f.error("root_path", "must not contain .. segments or control characters");
    }
    if f.has_errors() {
        return None;
    }
    Some(GitRepository {
        provider: provider?,
        url: url?,
        branch: branch?,
        root_path,
    })
}

/// The URL to store, or `None` with its problem reported. Without a valid provider only what
/// any repository URL must be is checked; the provider's own rules wait for a valid one.
fn check_url(f: &mut Fields<'_>, provider: Option<GitProvider>, url: &str) -> Option<String> {
    if url.len() > MAX_URL {
        f.error("url", format!("must be at most {MAX_URL} bytes long"));
        return None;
    }
    let checked = match provider {
        Some(provider) => check_repository_url(url, provider).map(|checked| checked.url),
        None => parse_repository_url(url).map(|_| url.to_owned()),
    };
    checked.map_err(|err| f.error("url", err.to_string())).ok()
}

fn read_restriction(f: &mut Fields<'_>) -> Option<DeploymentRestriction> {
    let mode: Option<RestrictionMode> = f.required("mode");
    let kind: Option<RestrictionType> = f.required("type");
    let value: Option<String> = f.required("value");
    if let Some(Err(message)) = value.as_deref().map(validate_restriction_value) {
        f.error("value", message);
    }
    Some(DeploymentRestriction {
        mode: mode?,
        kind: kind?,
        value: value?,
    })
}

fn read_image(f: &mut Fields<'_>) -> Option<ImageSource> {
    let registry: Option<String> = f.optional("registry");
    let image_name: Option<String> = f.required("image_name");
    let tag: Option<String> = f.required("tag");
    // Computed from `registry` and `image_name`; shown, never read.
    f.ignore("key");

    if let Some(Err(err)) = registry.as_deref().map(normalize_registry) {
        f.error("registry", err.to_string());
    } else if let Some(Err(err)) = image_name
        .as_deref()
        .map(|name| parse_service_image_or_default(registry.as_deref(), name))
    {
        f.error("image_name", err.to_string());
    }
    let registry = registry.unwrap_or_else(|| DOCKER_HUB.to_owned());
    if let Some(Err(err)) = tag.as_deref().map(validate_tag) {
        f.error("tag", err.to_string());
    }
    if f.has_errors() {
        return None;
    }
    Some(ImageSource {
        registry,
        image_name: image_name?,
        tag: tag?,
    })
}

/// `type` of a tag policy, read on its own: it decides which other field belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum PolicyType {
    Semver,
    Glob,
    Regex,
}

/// A SEMVER policy reads `type` and `range`, GLOB and REGEX `type` and `pattern`. The other
/// one of the two may be `null` (a client that always sends both); given, it is refused: a
/// merge patch from a GLOB policy to `{"type": "SEMVER", "range": …}` keeps the old `pattern`,
/// and storing the policy without it would silently drop a part of the body.
fn read_tag_policy(f: &mut Fields<'_>) -> Option<TagPolicy> {
    let kind: Option<PolicyType> = f.required("type");
    let (own, other, name) = match kind {
        Some(PolicyType::Semver) => ("range", "pattern", "SEMVER"),
        Some(PolicyType::Glob) => ("pattern", "range", "GLOB"),
        Some(PolicyType::Regex) => ("pattern", "range", "REGEX"),
        None => {
            // Without a valid type, neither field can be judged.
            f.ignore("range");
            f.ignore("pattern");
            return None;
        }
    };
    let value: Option<String> = f.required(own);
    if f.value(other).is_some_and(|v| !v.is_null()) {
        f.error(
            other,
            format!(
                "does not belong to a {name} tag policy, which reads `{own}`: remove it (in a merge patch, set it to null)"
            ),
        );
    }
    let value = value?;
    let policy = match kind? {
        PolicyType::Semver => TagPolicy::Semver { range: value },
        PolicyType::Glob => TagPolicy::Glob { pattern: value },
        PolicyType::Regex => TagPolicy::Regex { pattern: value },
    };
    if let Err(message) = policy.compile() {
        f.error(own, message);
        return None;
    }
    Some(policy)
}

fn read_deploy_target(f: &mut Fields<'_>) -> Option<DeployTarget> {
    let target_id: Option<String> = f.required("target_id");
    let external_id: Option<String> = f.optional("external_id");
    if target_id.as_deref().is_some_and(|id| !is_valid_id(id)) {
        f.error("target_id", ID_RULE);
    }
    if let Some(external_id) = &external_id {
        if external_id.is_empty() {
            f.error("external_id", "must not be empty: send the id the target knows the service by (a QOVERY target needs its Qovery id), or null");
        } else if external_id.chars().count() > MAX_TEXT {
            f.error("external_id", format!("must be at most {MAX_TEXT} characters long"));
        } else if external_id.chars().any(char::is_control) {
            f.error("external_id", "must not contain control characters");
        } else if matches!(external_id.as_str(), "." | "..") {
            // Qovery's API puts it in a path, where these read as a directory.
            f.error("external_id", "must not be `.` or `..`, which are no id");
        }
    }
    if f.has_errors() {
        return None;
    }
    Some(DeployTarget {
        target_id: target_id?,
        external_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Service, merge_patch};
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
        // `null` is as if left out; another type is not the path's id.
        for field in ["id", "organization_id", "version", "created_at", "updated_at"] {
            doc[field] = Value::Null;
        }
        assert!(parse_service_document("acme", "api", &doc).is_ok());
        doc["id"] = json!(5);
        assert_eq!(
            fields(parse_service_document("acme", "api", &doc).unwrap_err()),
            vec!["id"]
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

    /// A service's globs are bounded together, in bytes and in wildcards; plain paths are not.
    #[test]
    fn a_services_globs_have_a_budget() {
        let with = |values: Vec<String>| {
            let mut doc = app();
            doc["deployment_restrictions"] = values
                .into_iter()
                .map(|value| json!({"mode": "EXCLUDE", "type": "PATH", "value": value}))
                .collect();
            parse_service_document("acme", "api", &doc)
        };
        let glob = |len: usize| format!("{}/*", "a".repeat(len - 2));
        // 2,048 bytes of globs, and as many of plain paths besides: accepted.
        let mut at_limit: Vec<String> = (0..4).map(|_| glob(512)).collect();
        at_limit.extend((0..4).map(|_| "p".repeat(1000)));
        assert!(with(at_limit.clone()).is_ok());
        at_limit[0] = glob(513);
        let err = with(at_limit).unwrap_err();
        let SpecError::Invalid(errors) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "deployment_restrictions");
        assert!(
            errors[0].message.contains("2049 bytes of globs"),
            "{}",
            errors[0].message
        );
        // 64 wildcards: accepted; 65 (`**` counts two): refused.
        let stars = |n: usize| (0..n).map(|i| format!("d{i}/*")).collect::<Vec<_>>();
        assert!(with(stars(64)).is_ok());
        let mut over = stars(63);
        over.push("**/x".to_owned());
        assert_eq!(fields(with(over).unwrap_err()), ["deployment_restrictions"]);
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

    fn service(spec: ServiceSpec) -> Service {
        Service {
            id: "api".into(),
            organization_id: "acme".into(),
            spec,
            version: 3,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-02T00:00:00Z".into(),
        }
    }

    /// Valid documents of every kind, together using every object and field a body may hold.
    fn every_kind() -> Vec<Value> {
        vec![
            app(),
            json!({"environment_id": "prod", "name": "Worker", "kind": "JOB", "auto_deploy": false,
                   "git_repository": {"provider": "GITLAB", "url": "git@gitlab.com:group/sub/repo.git",
                                      "branch": "release/*", "root_path": "/jobs"},
                   "deploy_target": {"target_id": "qovery-prod", "external_id": "0f8b8c1e-4d2a"}}),
            json!({"environment_id": "prod", "kind": "APPLICATION",
                   "git_repository": {"provider": "AZURE_DEVOPS", "url": "https://dev.azure.com/org/project/_git/repo",
                                      "branch": "main"},
                   "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "src/*"},
                                               {"mode": "EXCLUDE", "type": "PATH", "value": "docs"}],
                   "deploy_target": {"target_id": "hook", "external_id": null}}),
            json!({"environment_id": "prod", "kind": "CONTAINER", "auto_deploy": true,
                   "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": "1.2.0"},
                   "tag_policy": {"type": "SEMVER", "range": ">=1.2.0 <2"}}),
            json!({"environment_id": "prod", "kind": "CONTAINER",
                   "image": {"image_name": "nginx", "tag": "release-1"},
                   "tag_policy": {"type": "GLOB", "pattern": "release-*"}}),
            json!({"environment_id": "prod", "kind": "JOB",
                   "image": {"registry": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "image_name": "team/api", "tag": "main-abc1234"},
                   "tag_policy": {"type": "REGEX", "pattern": "^main-[0-9a-f]{7}$"},
                   "deploy_target": null}),
        ]
    }

    #[test]
    fn a_valid_service_of_every_kind_round_trips() {
        for doc in every_kind() {
            let spec = parse_service_document("acme", "api", &doc).unwrap_or_else(|e| panic!("{doc}: {e:?}"));
            let stored = service(spec.clone());
            // GET → PUT: the document as shown, server fields and read-only keys included.
            let shown = serde_json::to_value(&stored).unwrap();
            let again = parse_service_document("acme", "api", &shown).unwrap_or_else(|e| panic!("{shown}: {e:?}"));
            assert_eq!(again, spec, "{shown}");
            assert_eq!(serde_json::to_value(service(again)).unwrap(), shown);
            // What a store writes and reads back is the same service.
            let text = serde_json::to_string(&stored).unwrap();
            assert_eq!(serde_json::from_str::<Service>(&text).unwrap(), stored);
            // A merge patch that changes nothing changes nothing.
            let patched = merge_patch(&stored, &json!({})).unwrap();
            assert_eq!(parse_service_document("acme", "api", &patched).unwrap(), spec);
        }
    }

    #[test]
    fn read_only_keys_are_shown_and_ignored() {
        let spec = parse_service_document("acme", "api", &every_kind()[1]).unwrap();
        let shown = serde_json::to_value(service(spec.clone())).unwrap();
        assert_eq!(
            shown["git_repository"]["repository_key"],
            json!("gitlab.com/group/sub/repo")
        );
        let spec = parse_service_document("acme", "api", &every_kind()[4]).unwrap();
        let mut shown = serde_json::to_value(service(spec.clone())).unwrap();
        assert_eq!(shown["image"]["key"], json!("docker.io/library/nginx"));
        // Sent back with another value, or none, it changes nothing: it is computed.
        shown["image"]["key"] = json!("ghcr.io/someone/else");
        assert_eq!(parse_service_document("acme", "api", &shown).unwrap(), spec);
        shown["image"]["key"] = Value::Null;
        assert_eq!(parse_service_document("acme", "api", &shown).unwrap(), spec);
    }

    /// Every object of a service body, each with a foreign field added: exactly its path is
    /// named.
    #[test]
    fn a_foreign_field_is_named_at_every_depth() {
        let docs = every_kind();
        let cases: Vec<(Value, &str, &str)> = vec![
            (docs[0].clone(), "", "zz_foreign"),
            (docs[0].clone(), "/git_repository", "git_repository.zz_foreign"),
            (
                docs[2].clone(),
                "/deployment_restrictions/1",
                "deployment_restrictions[1].zz_foreign",
            ),
            (
                docs[0].clone(),
                "/deployment_restrictions/0",
                "deployment_restrictions[0].zz_foreign",
            ),
            (docs[3].clone(), "/image", "image.zz_foreign"),
            (docs[3].clone(), "/tag_policy", "tag_policy.zz_foreign"),
            (docs[4].clone(), "/tag_policy", "tag_policy.zz_foreign"),
            (docs[5].clone(), "/tag_policy", "tag_policy.zz_foreign"),
            (docs[1].clone(), "/deploy_target", "deploy_target.zz_foreign"),
            (docs[2].clone(), "/deploy_target", "deploy_target.zz_foreign"),
        ];
        for (mut doc, pointer, path) in cases {
            doc.pointer_mut(pointer)
                .and_then(Value::as_object_mut)
                .unwrap_or_else(|| panic!("no object at {pointer}"))
                .insert("zz_foreign".into(), json!("x"));
            let err = parse_service_document("acme", "api", &doc).unwrap_err();
            assert_eq!(fields(err.clone()), vec![path], "{doc}");
            let SpecError::Invalid(errors) = err else {
                unreachable!()
            };
            assert_eq!(errors[0].message, "is not a known field here");
        }
    }

    #[test]
    fn a_tag_policy_reads_only_its_own_fields() {
        let container = |policy: Value| {
            json!({"environment_id": "p", "kind": "CONTAINER",
                   "image": {"image_name": "acme/api", "tag": "1.0.0"}, "tag_policy": policy})
        };
        let refused = [
            (
                json!({"type": "GLOB", "pattern": "release-*", "range": "x"}),
                "tag_policy.range",
            ),
            (
                json!({"type": "REGEX", "pattern": "^v", "range": ">=1"}),
                "tag_policy.range",
            ),
            (
                json!({"type": "SEMVER", "range": "*", "pattern": "x"}),
                "tag_policy.pattern",
            ),
            (json!({"type": "SEMVER", "pattern": "x"}), "tag_policy.range"),
            (json!({"type": "GLOB", "range": "*"}), "tag_policy.pattern"),
        ];
        for (policy, path) in refused {
            let err = parse_service_document("acme", "api", &container(policy.clone())).unwrap_err();
            assert!(fields(err).contains(&path.to_owned()), "{policy}");
        }
        // The other field as null is no part of the body.
        for policy in [
            json!({"type": "GLOB", "pattern": "release-*", "range": null}),
            json!({"type": "SEMVER", "range": "*", "pattern": null}),
        ] {
            let spec = parse_service_document("acme", "api", &container(policy.clone())).unwrap();
            assert!(spec.tag_policy.is_some(), "{policy}");
        }

        // A merge patch from GLOB to SEMVER keeps `pattern` (RFC 7396): refused, never stored
        // without its policy; setting `pattern` to null is the way.
        let glob = parse_service_document(
            "acme",
            "api",
            &container(json!({"type": "GLOB", "pattern": "release-*"})),
        )
        .unwrap();
        let current = service(glob);
        let doc = merge_patch(
            &current,
            &json!({"tag_policy": {"type": "SEMVER", "range": ">=1.2.0 <2"}}),
        )
        .unwrap();
        let SpecError::Invalid(errors) = parse_service_document("acme", "api", &doc).unwrap_err() else {
            panic!("malformed")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "tag_policy.pattern");
        assert!(errors[0].message.contains("set it to null"), "{}", errors[0].message);
        let doc = merge_patch(
            &current,
            &json!({"tag_policy": {"type": "SEMVER", "range": ">=1.2.0 <2", "pattern": null}}),
        )
        .unwrap();
        assert_eq!(
            parse_service_document("acme", "api", &doc).unwrap().tag_policy,
            Some(TagPolicy::Semver {
                range: ">=1.2.0 <2".into()
            })
        );
    }

    #[test]
    fn a_bad_type_is_the_only_thing_said_of_a_tag_policy() {
        let doc = json!({"environment_id": "p", "kind": "CONTAINER",
                         "image": {"image_name": "acme/api", "tag": "1"},
                         "tag_policy": {"type": "LATEST", "range": "*", "pattern": "*"}});
        assert_eq!(
            fields(parse_service_document("acme", "api", &doc).unwrap_err()),
            vec!["tag_policy.type"]
        );
    }

    #[test]
    fn repository_urls_and_branches_are_stored_as_they_match() {
        let mut doc = app();
        doc["git_repository"]["url"] = json!("https://emmap1@bitbucket.org/team/repo.git");
        doc["git_repository"]["provider"] = json!("BITBUCKET");
        doc["git_repository"]["branch"] = json!("refs/heads/main");
        let repo = parse_service_document("acme", "api", &doc)
            .unwrap()
            .git_repository
            .unwrap();
        assert_eq!(repo.url, "https://bitbucket.org/team/repo.git");
        assert_eq!(repo.branch, "main");
        assert_eq!(repo.repository_key().as_deref(), Some("bitbucket.org/team/repo"));
        // A tag's ref would never deploy: refused, the field named.
        doc["git_repository"]["branch"] = json!("refs/tags/v1");
        assert_eq!(
            fields(parse_service_document("acme", "api", &doc).unwrap_err()),
            vec!["git_repository.branch"]
        );
        doc["git_repository"]["branch"] = json!("main");

        for (url, needle) in [
            (
                "https://github.com/acme/shop/tree/main",
                "write `https://github.com/acme/shop`",
            ),
            (
                "acme/shop",
                "write the repository's full URL, such as `https://github.com/acme/shop`",
            ),
            ("https://user:hunter2@github.com/acme/shop", "must not carry a password"),
        ] {
            let mut doc = app();
            doc["git_repository"]["url"] = json!(url);
            let SpecError::Invalid(errors) = parse_service_document("acme", "api", &doc).unwrap_err() else {
                panic!("malformed")
            };
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "git_repository.url");
            assert!(errors[0].message.contains(needle), "{}", errors[0].message);
            assert!(!errors[0].message.contains("hunter2"));
        }
        // Without a valid provider the URL is still checked, the provider's own rules are not.
        let mut doc = app();
        doc["git_repository"]["provider"] = json!("SVN");
        doc["git_repository"]["url"] = json!("ftp://h/a/b");
        let mut got = fields(parse_service_document("acme", "api", &doc).unwrap_err());
        got.sort();
        assert_eq!(got, vec!["git_repository.provider", "git_repository.url"]);
    }

    #[test]
    fn deploy_targets() {
        let with = |target: Value| {
            let mut doc = app();
            doc["deploy_target"] = target;
            doc
        };
        let spec = parse_service_document("acme", "api", &with(json!({"target_id": "prod"}))).unwrap();
        assert_eq!(
            spec.deploy_target,
            Some(DeployTarget {
                target_id: "prod".into(),
                external_id: None
            })
        );
        let spec = parse_service_document("acme", "api", &with(Value::Null)).unwrap();
        assert_eq!(spec.deploy_target, None);
        let long = "é".repeat(MAX_TEXT);
        assert!(parse_service_document("acme", "api", &with(json!({"target_id": "t", "external_id": long}))).is_ok());
        let cases = [
            (json!({}), "deploy_target.target_id"),
            (json!({"target_id": "-bad"}), "deploy_target.target_id"),
            (json!({"target_id": 5}), "deploy_target.target_id"),
            (
                json!({"target_id": "t", "external_id": ""}),
                "deploy_target.external_id",
            ),
            (
                json!({"target_id": "t", "external_id": "x".repeat(MAX_TEXT + 1)}),
                "deploy_target.external_id",
            ),
            (
                json!({"target_id": "t", "external_id": "a\nb"}),
                "deploy_target.external_id",
            ),
            (
                json!({"target_id": "t", "external_id": ".."}),
                "deploy_target.external_id",
            ),
            (
                json!({"target_id": "t", "external_id": "."}),
                "deploy_target.external_id",
            ),
            (json!({"target_id": "t", "external_id": 7}), "deploy_target.external_id"),
            (json!("prod"), "deploy_target"),
        ];
        for (target, path) in cases {
            assert_eq!(
                fields(parse_service_document("acme", "api", &with(target.clone())).unwrap_err()),
                vec![path],
                "{target}"
            );
        }
    }

    /// The API renders `field: message.`: every message is a phrase, lower-case, without a
    /// period of its own, and repeats no value.
    #[test]
    fn every_message_is_a_phrase() {
        let bad = [
            json!({"environment_id": "bad id", "name": "", "kind": "APPLICATION", "auto_deploy": "yes", "extra": 1,
                   "git_repository": {"provider": "GITHUB", "url": "https://user:hunter2@github.com/a/b",
                                      "branch": "bad..branch", "root_path": "no-slash", "x": 1},
                   "deployment_restrictions": [{"mode": "MATCH", "type": "PATH", "value": "/abs"},
                                               {"mode": "NOPE", "type": "PATH", "value": "a"}],
                   "image": {"image_name": "a/b", "tag": "1"}, "deploy_target": {"target_id": "t", "external_id": ""}}),
            json!({"environment_id": 5, "kind": "LAMBDA", "deployment_restrictions": "x", "name": "a\u{7}b"}),
            json!({"environment_id": "p", "kind": "CONTAINER",
                   "image": {"registry": "user:hunter2@ghcr.io", "image_name": "Acme/API", "tag": "-bad"},
                   "tag_policy": {"type": "SEMVER", "range": "not a range", "pattern": "x"}}),
            json!({"environment_id": "p", "kind": "JOB",
                   "image": {"registry": "ghcr.io", "image_name": "Acme/API:1", "tag": "x".repeat(200)},
                   "tag_policy": {"type": "REGEX", "pattern": "("}}),
            json!({"environment_id": "p", "kind": "JOB"}),
            json!({"environment_id": "p", "kind": "APPLICATION", "id": "other", "organization_id": "evil",
                   "git_repository": {"provider": "GITHUB", "url": "acme/shop", "branch": "refs/heads/"},
                   "tag_policy": {"type": "GLOB", "pattern": "["}}),
        ];
        let mut seen = 0;
        for doc in bad {
            let SpecError::Invalid(errors) = parse_service_document("acme", "api", &doc).unwrap_err() else {
                panic!("malformed")
            };
            for error in errors {
                let message = &error.message;
                assert!(
                    message.starts_with(|c: char| c.is_ascii_lowercase()),
                    "{}: {message}",
                    error.field
                );
                assert!(!message.ends_with('.'), "{}: {message}", error.field);
                assert!(!message.contains("hunter2"), "{}: {message}", error.field);
                seen += 1;
            }
        }
        assert!(seen >= 25, "{seen}");
    }
}
