//! Deploy targets: where the dispatcher delivers a service's deployments.
//!
//! An organization defines named targets (`PUT /organization/{org}/targets/{target_id}`) of
//! three types: `WEBHOOK` (a POST signed per Standard Webhooks), `QOVERY` (Qovery's deploy
//! calls) and `GITHUB_ACTIONS` (a `workflow_dispatch`). This module holds the model and its
//! validation; [`request`] turns a deployment into the HTTP request for a target,
//! [`delivery`] says what an attempt's result means, [`address`] which hosts a target may
//! name and [`signature`] signs and verifies webhooks.
//!
//! A body is read in two steps: [`TargetDocument`] (the body alone, field by field) and
//! [`TargetDocument::resolve`] (what depends on the request's context: the path, whether the
//! operator allows private targets, and the target it replaces, whose secret or token a PUT
//! without one keeps as long as the target's requests still go where they went).
//!
//! Secrets and tokens are write-only: they are [`Secret`]s, whose `Debug` hides them; a
//! target is shown as a [`TargetView`], which says only whether one is set.

pub mod address;
pub mod delivery;
pub mod fifo;
pub mod request;
pub mod signature;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::body::{Document, Fields};
use crate::branch::{MAX_BRANCH_LEN, validate_branch};
use crate::error::FieldError;
use address::{UrlProblem, check_target_url};
use signature::{SECRET_RULE, is_well_formed_secret, webhook_secret_from};

/// Longest accepted token (bytes).
pub const MAX_TOKEN: usize = 4096;
/// Longest accepted `external_id` (bytes).
pub const MAX_EXTERNAL_ID: usize = 255;
pub const DEFAULT_QOVERY_API_URL: &str = "https://api.qovery.com";
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// A target's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetType {
    Webhook,
    Qovery,
    GithubActions,
}

impl TargetType {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Webhook => "WEBHOOK",
            TargetType::Qovery => "QOVERY",
            TargetType::GithubActions => "GITHUB_ACTIONS",
        }
    }

    /// Whether a service naming a target of this type must give its `external_id` (the
    /// Qovery service id).
    pub fn requires_external_id(self) -> bool {
        self == TargetType::Qovery
    }

    /// Whether a service naming a target of this type may give `external_id`: a `QOVERY`
    /// target needs one, a path segment of Qovery's API, so it is an id of letters, digits,
    /// `-`, `_` and `.` (Qovery's are UUIDs): a pasted placeholder (`<the Qovery service id>`)
    /// or a sentence is refused when written rather than by Qovery at the first attempt.
    /// Other types take any.
    pub fn accepts_external_id(self, external_id: Option<&str>) -> bool {
        match self {
            TargetType::Qovery => external_id.is_some_and(is_plain_id),
            TargetType::Webhook | TargetType::GithubActions => true,
        }
    }
}

/// What a Qovery id looks like, for the messages that ask for one.
pub const QOVERY_ID_EXAMPLE: &str = "0f8b8c1e-4d2a-4b7f-9a6e-3c2d1b0a9f8e";

/// Every type of target.
pub const TARGET_TYPES: [TargetType; 3] = [TargetType::Webhook, TargetType::Qovery, TargetType::GithubActions];

/// Letters, digits, `-`, `_` and `.`, and not `.` or `..`: an id that is one path segment as
/// written.
fn is_plain_id(text: &str) -> bool {
    !text.is_empty()
        && !matches!(text, "." | "..")
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A secret or token: stored and sent, never shown. `Debug` prints no part of it; only
/// `Serialize` (for storage) and [`Secret::expose`] reveal it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A target of one of the three types; `C` is how it holds its secret or token: a [`Secret`]
/// in a stored target ([`TargetSpec`]), an `Option<Secret>` in a PUT body ([`TargetFields`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Target<C> {
    Webhook {
        url: String,
        secret: C,
    },
    Qovery {
        token: C,
        api_url: String,
    },
    GithubActions {
        token: C,
        repository: String,
        workflow: String,
        #[serde(rename = "ref")]
        git_ref: String,
        api_url: String,
    },
}

/// A stored target, secrets included: what the store keeps (sealed at rest) and what the
/// dispatcher sends with. Never shown as is: [`TargetSpec::view`].
pub type TargetSpec = Target<Secret>;

/// The fields of a PUT body, checked on their own; a secret or token may be left out.
pub type TargetFields = Target<Option<Secret>>;

impl<C> Target<C> {
    pub fn target_type(&self) -> TargetType {
        match self {
            Target::Webhook { .. } => TargetType::Webhook,
            Target::Qovery { .. } => TargetType::Qovery,
            Target::GithubActions { .. } => TargetType::GithubActions,
        }
    }

    /// The secret or token.
    fn credential(&self) -> &C {
        match self {
            Target::Webhook { secret, .. } => secret,
            Target::Qovery { token, .. } | Target::GithubActions { token, .. } => token,
        }
    }

    /// The name of the secret or token field.
    fn credential_field(&self) -> &'static str {
        match self {
            Target::Webhook { .. } => "secret",
            Target::Qovery { .. } | Target::GithubActions { .. } => "token",
        }
    }

    /// The first field that makes `self` send its token somewhere `other` does not: the URL
    /// the token goes with (an `api_url`; a GitHub workflow's `repository` and `workflow`,
    /// which make the path), compared whole as stored (normalized), or the `type`. `None`
    /// when the token goes where it went, and for a webhook, whose secret is never sent: it
    /// signs, and whoever may move a target may have anything signed already (a `manage`
    /// token sets the webhook secrets that make deployments).
    fn moved_from<D>(&self, other: &Target<D>) -> Option<&'static str> {
        match (self, other) {
            (Target::Webhook { .. }, Target::Webhook { .. }) => None,
            (Target::Qovery { api_url, .. }, Target::Qovery { api_url: was, .. }) => {
                (api_url != was).then_some("api_url")
            }
            (
                Target::GithubActions {
                    repository,
                    workflow,
                    api_url,
                    ..
                },
                Target::GithubActions {
                    repository: was_repository,
                    workflow: was_workflow,
                    api_url: was_api_url,
                    ..
                },
            ) => [
                ("api_url", api_url, was_api_url),
                ("repository", repository, was_repository),
                ("workflow", workflow, was_workflow),
            ]
            .into_iter()
            .find_map(|(name, now, was)| (now != was).then_some(name)),
            _ => Some("type"),
        }
    }
}

impl TargetSpec {
    /// What no message about this target may show: its token, or its webhook secret whole
    /// and as the key it encodes (the part after `whsec_`), should a target echo either.
    pub fn secrets(&self) -> Vec<&str> {
        let credential = self.credential().expose();
        let mut secrets = vec![credential];
        if let Target::Webhook { .. } = self
            && let Some(key) = credential.strip_prefix(signature::SECRET_PREFIX)
        {
            secrets.push(key);
        }
        secrets
    }

    /// The target as `GET` shows it: `secret_set` / `token_set`, never the values.
    pub fn view(&self) -> TargetView {
        match self {
            Target::Webhook { url, .. } => TargetView::Webhook {
                url: url.clone(),
                secret_set: true,
                secret: None,
            },
            Target::Qovery { api_url, .. } => TargetView::Qovery {
                api_url: api_url.clone(),
                token_set: true,
            },
            Target::GithubActions {
                repository,
                workflow,
                git_ref,
                api_url,
                ..
            } => TargetView::GithubActions {
                repository: repository.clone(),
                workflow: workflow.clone(),
                git_ref: git_ref.clone(),
                api_url: api_url.clone(),
                token_set: true,
            },
        }
    }
}

/// A target as the API shows it (SPEC: `"secret_set": true`, `"token_set": true`). The
/// server's own fields (`id`, `organization_id`, timestamps) go beside it (`#[serde(flatten)]`).
/// `secret` is there only in the answer to the PUT that generated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetView {
    Webhook {
        url: String,
        secret_set: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<Secret>,
    },
    Qovery {
        api_url: String,
        token_set: bool,
    },
    GithubActions {
        repository: String,
        workflow: String,
        #[serde(rename = "ref")]
        git_ref: String,
        api_url: String,
        token_set: bool,
    },
}

/// A target PUT body, read field by field. Secrets and tokens are optional here: a PUT that
/// replaces a target without one keeps the old one, unless it moves the target to a new
/// address ([`TargetDocument::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDocument {
    /// `id` and `organization_id` as sent back in a GET → PUT round trip; they must agree
    /// with the path.
    pub id: Option<String>,
    pub organization_id: Option<String>,
    pub fields: TargetFields,
}

/// Every field a body of some type may hold, so that a bad `type` is not followed by a
/// "not a known field" for each of the others.
const TYPED_FIELDS: [&str; 9] = [
    "url",
    "secret",
    "secret_set",
    "token",
    "token_set",
    "api_url",
    "repository",
    "workflow",
    "ref",
];

impl Document for TargetDocument {
    const SHAPE: &'static str = r#"{"type": "WEBHOOK", "url": "https://…"}"#;

    fn read(f: &mut Fields<'_>) -> Option<Self> {
        let id = f.optional::<String>("id");
        let organization_id = f.optional::<String>("organization_id");
        // The server's fields of a GET answer, sent back in a round trip.
        for name in ["created_at", "updated_at", "version"] {
            f.ignore(name);
        }
        let Some(kind) = f.required::<TargetType>("type") else {
            for name in TYPED_FIELDS {
                f.ignore(name);
            }
            return None;
        };
        let fields = match kind {
            TargetType::Webhook => {
                f.ignore("secret_set");
                let url = read_url(f, "url", true);
                let secret = read_secret(f);
                Target::Webhook { url: url?, secret }
            }
            TargetType::Qovery => {
                f.ignore("token_set");
                let token = read_token(f);
                let api_url = read_url(f, "api_url", false).or_else(|| default_url(f, DEFAULT_QOVERY_API_URL));
                Target::Qovery {
                    token,
                    api_url: api_url?,
                }
            }
            TargetType::GithubActions => {
                f.ignore("token_set");
                let token = read_token(f);
                let repository = read_checked(f, "repository", check_repository);
                let workflow = read_checked(f, "workflow", check_workflow);
                let git_ref = read_checked(f, "ref", check_ref);
                let api_url = read_url(f, "api_url", false).or_else(|| default_url(f, DEFAULT_GITHUB_API_URL));
                Target::GithubActions {
                    token,
                    repository: repository?,
                    workflow: workflow?,
                    git_ref: git_ref?,
                    api_url: api_url?,
                }
            }
        };
        if f.has_errors() {
            return None;
        }
        Some(TargetDocument {
            id,
            organization_id,
            fields,
        })
    }
}

/// A URL field: required for a webhook's `url`, defaulted for an `api_url`. Checked here for
/// everything but the operator's policy (http and private hosts, checked by `resolve`).
/// Stored normalized, an API base without its trailing `/`.
fn read_url(f: &mut Fields<'_>, name: &str, required: bool) -> Option<String> {
    let raw: String = if required { f.required(name)? } else { f.optional(name)? };
    match check_target_url(&raw, true) {
        Err(problem) => {
            f.error(name, problem.to_string());
            None
        }
        Ok(url) if required => Some(url.to_string()),
        Ok(url) if url.query().is_some() => {
            f.error(name, "must not contain a query");
            None
        }
        Ok(url) => Some(url.as_str().trim_end_matches('/').to_owned()),
    }
}

/// The default of an absent `api_url`, unless the field was given (and so has an error).
fn default_url(f: &Fields<'_>, default: &str) -> Option<String> {
    (!f.has_error("api_url")).then(|| default.to_owned())
}

fn read_secret(f: &mut Fields<'_>) -> Option<Secret> {
    let secret: String = f.optional("secret")?;
    if !is_well_formed_secret(&secret) {
        f.error("secret", SECRET_RULE);
        return None;
    }
    Some(Secret(secret))
}

fn read_token(f: &mut Fields<'_>) -> Option<Secret> {
    let token: String = f.optional("token")?;
    let problem = if token.is_empty() {
        Some("must not be empty".to_owned())
    } else if token.len() > MAX_TOKEN {
        Some(format!("must be at most {MAX_TOKEN} characters long"))
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be printable ASCII without spaces (the token alone, without Token or Bearer)".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => {
            f.error("token", problem);
            None
        }
        None => Some(Secret(token)),
    }
}

/// A rule for a string field: the field message when the value breaks it.
type Check = fn(&str) -> Result<(), &'static str>;

/// A required string field checked by `check`.
fn read_checked(f: &mut Fields<'_>, name: &str, check: Check) -> Option<String> {
    let value: String = f.required(name)?;
    match check(&value) {
        Ok(()) => Some(value),
        Err(problem) => {
            f.error(name, problem);
            None
        }
    }
}

/// `owner/repo` as GitHub allows them: an owner of 1–39 letters, digits and hyphens (not
/// leading), a repository of 1–100 letters, digits, `.`, `_` and `-` (not `.` or `..`).
fn check_repository(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "must be owner/repo, e.g. acme/shop";
    let (owner, repo) = value.split_once('/').ok_or(RULE)?;
    let owner_ok = (1..=39).contains(&owner.len())
        && !owner.starts_with('-')
        && owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let repo_ok = (1..=100).contains(&repo.len())
        && repo != "."
        && repo != ".."
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if owner_ok && repo_ok { Ok(()) } else { Err(RULE) }
}

/// A workflow's file name (`deploy.yml`, as in `.github/workflows/`) or its numeric id.
fn check_workflow(value: &str) -> Result<(), &'static str> {
    let numeric = (1..=19).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
    let file = value.len() <= 255
        && (value.ends_with(".yml") || value.ends_with(".yaml"))
        && value.len() > ".yml".len()
        && !value.contains('/')
        && !value.chars().any(char::is_control);
    if numeric || file {
        Ok(())
    } else {
        Err("must be the workflow's file name (e.g. deploy.yml) or its numeric id")
    }
}

/// A branch or tag name (or a full `refs/…` name), as git allows them.
fn check_ref(value: &str) -> Result<(), &'static str> {
    if value.len() <= MAX_BRANCH_LEN && !value.contains('*') && validate_branch(value).is_ok() {
        Ok(())
    } else {
        Err("must be a branch or tag name, e.g. main")
    }
}

/// An `external_id` as a service's `deploy_target` names it: 1–255 bytes, no control
/// characters (it goes into a request path, percent-encoded, or a workflow input).
pub fn check_external_id(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > MAX_EXTERNAL_ID || value.chars().any(char::is_control) {
        Err("must be 1 to 255 characters without control characters")
    } else {
        Ok(())
    }
}

/// What [`TargetDocument::resolve`] needs from the request.
#[derive(Debug, Clone, Copy)]
pub struct ResolveContext<'a> {
    pub organization_id: &'a str,
    pub target_id: &'a str,
    /// `AUTODEPLOY_TARGETS_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// The target this PUT replaces, if any.
    pub previous: Option<&'a TargetSpec>,
    /// Fresh random bytes for a generated secret ([`signature::GENERATED_SECRET_BYTES`] from a
    /// cryptographically secure generator); used only when one is generated.
    pub random: &'a [u8],
}

/// A target ready to store, and whether its secret was generated (then shown once, in the
/// PUT's answer: [`ResolvedTarget::view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub spec: TargetSpec,
    pub generated_secret: bool,
}

impl ResolvedTarget {
    /// The PUT's answer: the target as GET shows it, plus a generated secret.
    pub fn view(&self) -> TargetView {
        match (self.spec.view(), &self.spec) {
            (TargetView::Webhook { url, secret_set, .. }, Target::Webhook { secret, .. }) if self.generated_secret => {
                TargetView::Webhook {
                    url,
                    secret_set,
                    secret: Some(secret.clone()),
                }
            }
            (view, _) => view,
        }
    }
}

impl TargetDocument {
    /// Finish the document in its context: `id` and `organization_id` must agree with the
    /// path, URLs must satisfy the operator's policy (https, public hosts), and a missing
    /// secret or token is the replaced target's (same type; a token also the same address:
    /// see [`Target::moved_from`]) or, for a new webhook (or one of another type before), a
    /// new secret. A missing token is refused when the target moves: a kept token never
    /// follows it to a new address. Every problem is named at once.
    pub fn resolve(self, ctx: &ResolveContext<'_>) -> Result<ResolvedTarget, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.id.as_deref().is_some_and(|id| id != ctx.target_id) {
            errors.push(FieldError::new(
                "id",
                "must equal the target id in the path, or be left out",
            ));
        }
        if self
            .organization_id
            .as_deref()
            .is_some_and(|org| org != ctx.organization_id)
        {
            errors.push(FieldError::new(
                "organization_id",
                "must equal the organization in the path, or be left out",
            ));
        }
        let mut check_policy = |name: &str, url: &str| {
            if let Err(problem) = check_target_url(url, ctx.allow_private) {
                errors.push(FieldError::new(name, policy_message(problem)));
            }
        };
        match &self.fields {
            Target::Webhook { url, .. } => check_policy("url", url),
            Target::Qovery { api_url, .. } | Target::GithubActions { api_url, .. } => check_policy("api_url", api_url),
        }
        // A kept token never follows the target to a new address: a PUT that moves it (same
        // type) without giving the token again is refused, naming the field.
        let field = self.fields.credential_field();
        let (kept, moved) = match ctx.previous {
            Some(previous) if previous.target_type() == self.fields.target_type() => {
                match self.fields.moved_from(previous) {
                    None => (Some(previous.credential().clone()), None),
                    Some(moved) => (None, Some(moved)),
                }
            }
            _ => (None, None),
        };
        if let (Some(moved), None) = (moved, self.fields.credential()) {
            errors.push(FieldError::new(
                field,
                format!(
                    "is required when {moved} changes: a kept {field} never follows the target to a new address (send it again, or a new one)"
                ),
            ));
        }
        let mut generated_secret = false;
        let token = |given: Option<Secret>, errors: &mut Vec<FieldError>| {
            let token = given.or_else(|| kept.clone());
            if token.is_none() && moved.is_none() {
                errors.push(FieldError::new("token", "is required"));
            }
            token
        };
        let spec = match self.fields {
            Target::Webhook { url, secret } => match (secret.or_else(|| kept.clone()), moved) {
                (Some(secret), _) => Some(Target::Webhook { url, secret }),
                // Refused above.
                (None, Some(_)) => None,
                (None, None) => {
                    generated_secret = true;
                    Some(Target::Webhook {
                        url,
                        secret: Secret(webhook_secret_from(ctx.random)),
                    })
                }
            },
            Target::Qovery { token: given, api_url } => {
                token(given, &mut errors).map(|token| Target::Qovery { token, api_url })
            }
            Target::GithubActions {
                token: given,
                repository,
                workflow,
                git_ref,
                api_url,
            } => token(given, &mut errors).map(|token| Target::GithubActions {
                token,
                repository,
                workflow,
                git_ref,
                api_url,
            }),
        };
        match spec {
            Some(spec) if errors.is_empty() => Ok(ResolvedTarget { spec, generated_secret }),
            _ => Err(errors),
        }
    }
}

/// The `token` a refused body also lacks, so that the refusal names every bad field at once:
/// [`TargetDocument::resolve`], which names it otherwise, runs only on a body whose fields are
/// right. Only the plain case is told: a `QOVERY` or `GITHUB_ACTIONS` body without a token, for
/// a target with none of its type to keep (`previous`, the target it would replace).
pub fn missing_token(body: &serde_json::Value, previous: Option<&TargetSpec>) -> Option<FieldError> {
    let kind = [TargetType::Qovery, TargetType::GithubActions]
        .into_iter()
        .find(|kind| body.get("type").and_then(serde_json::Value::as_str) == Some(kind.as_str()))?;
    let given = body.get("token").is_some_and(|token| !token.is_null());
    let kept = previous.is_some_and(|previous| previous.target_type() == kind);
    (!given && !kept).then(|| FieldError::new("token", "is required"))
}

/// The message for a URL the operator's policy refuses, saying how it can be allowed.
fn policy_message(problem: UrlProblem) -> String {
    match problem {
        UrlProblem::NotHttps | UrlProblem::NotPublic => {
            format!("{problem} (the operator allows private targets with AUTODEPLOY_TARGETS_ALLOW_PRIVATE=true)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
