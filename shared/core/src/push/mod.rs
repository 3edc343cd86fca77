//! Git provider push webhooks: verify a delivery, find its id, and turn its payload into the
//! branch pushes the matcher works on.
//!
//! Everything here is pure and runs on every delivery, so payloads are parsed once, straight
//! into small typed structs that name only the fields we use (strings borrowed from the body
//! when they carry no escapes); the rest of the payload is skipped, never built into a tree.

mod azure;
mod bitbucket;
mod bitbucket_server;
mod gitea;
mod github;
mod gitlab;
mod signature;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Deref;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::provider::GitProvider;

pub use github::github_payload;
pub use signature::{Credential, SignatureError, check_headers, secrets_match, verify_signature};

/// Longest delivery id the product keeps, for every provider and every store: ids are stored,
/// logged and echoed, so a hostile header must not bloat them. A longer header is no delivery
/// id at all ([`delivery_id`] returns `None`), so no store ever sees one longer than this.
pub const MAX_DELIVERY_ID: usize = 200;

/// GitHub lists at most this many commits in a push payload; a push that reaches it may have
/// more, so its file list cannot be trusted to be complete.
pub const GITHUB_COMMIT_CAP: usize = 2048;

/// Why a body cannot be read as the provider's payload (answered 400 `MALFORMED_BODY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the `{0}` header is missing, so the kind of event cannot be told")]
    MissingEventHeader(&'static str),
    #[error("the `{0}` header is given more than once, so the kind of event cannot be told")]
    RepeatedEventHeader(&'static str),
    #[error("the form-encoded body has no `payload` field")]
    MissingFormPayload,
    #[error("not {} push payload: {detail}", with_article(.provider))]
    WrongShape { provider: &'static str, detail: String },
    #[error("the delivery names more than {max} branches; at most {max} are read from one delivery")]
    TooManyBranches { max: usize },
}

/// What a verified delivery asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One entry per updated branch (several for Bitbucket, Bitbucket Server, Azure DevOps).
    Pushes(Vec<Push>),
    /// Nothing to deploy; answered 200 with `ignored` set.
    Ignored(IgnoredReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IgnoredReason {
    TagPush,
    BranchDeleted,
    Ping,
    UnsupportedEvent,
}

impl IgnoredReason {
    /// The value as it appears in responses (`TAG_PUSH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredReason::TagPush => "TAG_PUSH",
            IgnoredReason::BranchDeleted => "BRANCH_DELETED",
            IgnoredReason::Ping => "PING",
            IgnoredReason::UnsupportedEvent => "UNSUPPORTED_EVENT",
        }
    }
}

/// One branch update, whatever the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Every repository URL the payload carries (clone/https, ssh, git, web/html), raw, as sent,
    /// deduplicated, non-empty strings only. Matching normalizes them.
    pub repository_urls: Vec<String>,
    /// Without `refs/heads/`.
    pub branch: String,
    /// May be all zeros (new branch) or empty when the provider does not say.
    pub before: String,
    /// The commit to deploy (the branch's new head).
    pub after: String,
    pub files: ChangedFiles,
    pub head_commit_message: Option<String>,
    /// User name / login of who pushed.
    pub pusher: Option<String>,
}

/// The files a push changed, when the payload can tell all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedFiles {
    Known(ChangedPaths),
    /// Restrictions cannot be applied: the service deploys.
    Unknown,
}

impl ChangedFiles {
    pub fn is_known(&self) -> bool {
        matches!(self, ChangedFiles::Known(_))
    }
}

/// The paths a push's commits list as added, modified or removed, in the payload's order and
/// as often as the commits list them.
///
/// All matching asks of them is whether any passes a service's restrictions, which neither
/// order nor repeats change; so they are not sorted or deduplicated, and they share one buffer
/// instead of one allocation each (a long push lists thousands). Compared and shown as the set
/// they make.
#[derive(Clone, Default)]
pub struct ChangedPaths {
    text: String,
    /// Where each path ends in `text`.
    ends: Vec<usize>,
}

impl ChangedPaths {
    pub fn push(&mut self, path: &str) {
        self.text.push_str(path);
        self.ends.push(self.text.len());
    }

    /// The paths as listed, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let path = &self.text[start..end];
            start = end;
            path
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// How many paths, repeats included.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The bytes of all the paths together.
    pub fn total_bytes(&self) -> usize {
        self.text.len()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.iter().any(|listed| listed == path)
    }

    /// The distinct paths, sorted.
    pub fn distinct(&self) -> BTreeSet<&str> {
        self.iter().collect()
    }
}

impl PartialEq for ChangedPaths {
    fn eq(&self, other: &Self) -> bool {
        self.distinct() == other.distinct()
    }
}

impl Eq for ChangedPaths {}

impl std::fmt::Debug for ChangedPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.distinct()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for ChangedPaths {
    fn from_iter<I: IntoIterator<Item = S>>(paths: I) -> Self {
        let mut all = ChangedPaths::default();
        paths.into_iter().for_each(|path| all.push(path.as_ref()));
        all
    }
}

impl Push {
    /// True when the head-commit message contains `[skip deploy]` or `[deploy skip]`
    /// (case-insensitive): the author asked for this push not to deploy.
    pub fn has_skip_marker(&self) -> bool {
        // Runs for every service a push reaches: compared in place, no lower-cased copy.
        self.head_commit_message.as_deref().is_some_and(|message| {
            let message = message.as_bytes();
            message.iter().enumerate().any(|(i, &b)| {
                b == b'['
                    && ["[skip deploy]", "[deploy skip]"].iter().any(|marker| {
                        message
                            .get(i..i + marker.len())
                            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(marker.as_bytes()))
                    })
            })
        })
    }
}

/// The provider's delivery id, used to process a delivery once only.
///
/// Headers: `X-GitHub-Delivery`, `X-Gitlab-Event-UUID` (else `X-Gitlab-Webhook-UUID`),
/// `X-Request-UUID` (Bitbucket Cloud), `X-Request-Id` (Bitbucket Server), `X-Gitea-Delivery`
/// (or `X-Forgejo-Delivery`), `X-Gogs-Delivery`. Azure DevOps sends none, so its body's top-level
/// `id` (the event's id, kept across retries) stands in. An empty one is none.
///
/// `Err` names the header (or `id`) whose value is no id: longer than [`MAX_DELIVERY_ID`], or
/// with other than printable ASCII. Such a delivery is refused rather than processed without
/// its id, which would let each of its redeliveries through.
pub fn delivery_id(provider: GitProvider, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, &'static str> {
    if provider == GitProvider::AzureDevops {
        return azure::event_id(body).map_or(Ok(None), |id| usable_delivery_id(&id).ok_or("id"));
    }
    let mut found = None;
    for (name, shown) in delivery_id_headers(provider) {
        if let Some(value) = headers.get(*name) {
            let id = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(usable_delivery_id)
                .ok_or(*shown)?;
            found = found.or(id);
        }
    }
    Ok(found)
}

/// The headers that carry the provider's delivery id, in the order they are read (none for
/// Azure DevOps): each as looked up (lower case, which a lookup need not fold) and as named.
fn delivery_id_headers(provider: GitProvider) -> &'static [(&'static str, &'static str)] {
    match provider {
        GitProvider::Github => &[("x-github-delivery", "X-GitHub-Delivery")],
        GitProvider::Gitlab => &[
            ("x-gitlab-event-uuid", "X-Gitlab-Event-UUID"),
            ("x-gitlab-webhook-uuid", "X-Gitlab-Webhook-UUID"),
        ],
        GitProvider::Bitbucket => &[("x-request-uuid", "X-Request-UUID")],
        GitProvider::BitbucketServer => &[("x-request-id", "X-Request-Id")],
        GitProvider::Gitea => &[
            ("x-gitea-delivery", "X-Gitea-Delivery"),
            ("x-forgejo-delivery", "X-Forgejo-Delivery"),
        ],
        GitProvider::Gogs => &[("x-gogs-delivery", "X-Gogs-Delivery")],
        GitProvider::AzureDevops => &[],
    }
}

/// A delivery-id header given more than once, if any: a delivery carries one id, and which
/// of two decides whether it was processed before cannot be told.
pub fn repeated_delivery_id_header(provider: GitProvider, headers: &HeaderMap) -> Option<&'static str> {
    delivery_id_headers(provider)
        .iter()
        .find(|(name, _)| given_more_than_once(headers, name))
        .map(|(_, shown)| *shown)
}

/// Whether header `name` is given more than once: as two fields, or as one listing several
/// values, as HTTP lets a proxy join repeated fields (API Gateway's HTTP APIs hand them to a
/// function so). For the event and delivery-id headers only, whose values no provider writes
/// with a comma.
fn given_more_than_once(headers: &HeaderMap, name: &str) -> bool {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => true,
        (Some(only), None) => only.as_bytes().contains(&b','),
        _ => false,
    }
}

/// `Some(None)` for an empty value, `Some(Some(id))` for an id, `None` for a value that is no
/// id.
fn usable_delivery_id(id: &str) -> Option<Option<String>> {
    let id = id.trim();
    let printable = id.bytes().all(|b| (0x20..=0x7e).contains(&b));
    match id {
        "" => Some(None),
        id if id.len() <= MAX_DELIVERY_ID && printable => Some(Some(id.to_owned())),
        _ => None,
    }
}

/// Parse a verified delivery into zero or more branch pushes, or the reason it is ignored.
///
/// The event comes from the provider's event header (Azure DevOps: the body's `eventType`);
/// a missing header is a malformed delivery, an unknown event is ignored.
pub fn parse_delivery(provider: GitProvider, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let delivery = match provider {
        GitProvider::Github => github::parse(headers, body),
        GitProvider::Gitlab => gitlab::parse(headers, body),
        GitProvider::Bitbucket => bitbucket::parse(headers, body),
        GitProvider::BitbucketServer => bitbucket_server::parse(headers, body),
        GitProvider::Gitea => gitea::parse(gitea::Flavor::Gitea, headers, body),
        GitProvider::Gogs => gitea::parse(gitea::Flavor::Gogs, headers, body),
        GitProvider::AzureDevops => azure::parse(body),
    }?;
    if let Delivery::Pushes(pushes) = &delivery {
        if !pushes.iter().all(crate::plan::names_a_repository) {
            return Err(wrong_shape(provider, "no URL of its repository names a repository"));
        }
        // The branch is stored, logged, answered and sent to engines: it must be one git
        // would create, and the error never repeats it (the history keeps no part of a body).
        if let Some(problem) = pushes
            .iter()
            .find_map(|push| crate::branch::validate_pushed_branch(&push.branch).err())
        {
            return Err(wrong_shape(
                provider,
                format!("the name of a pushed branch is not one git gives a branch: it {problem}"),
            ));
        }
        let commit_ids =
            |push: &Push| is_commit_id(&push.after) && (push.before.is_empty() || is_commit_id(&push.before));
        if !pushes.iter().all(commit_ids) {
            return Err(wrong_shape(
                provider,
                "a commit id of the push is not one (40 or 64 hexadecimal digits)",
            ));
        }
    }
    Ok(delivery)
}

/// A git object name: SHA-1 (40 hexadecimal digits) or SHA-256 (64).
fn is_commit_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The headers a provider names a delivery's event in, the first present being read; none
/// for Azure DevOps, whose event is in the body.
pub fn event_headers(provider: GitProvider) -> &'static [&'static str] {
    match provider {
        GitProvider::Github => &["X-GitHub-Event"],
        GitProvider::Gitlab => &["X-Gitlab-Event"],
        GitProvider::Bitbucket | GitProvider::BitbucketServer => &["X-Event-Key"],
        GitProvider::Gitea => &["X-Gitea-Event", "X-Forgejo-Event"],
        GitProvider::Gogs => &["X-Gogs-Event"],
        GitProvider::AzureDevops => &[],
    }
}

/// The values of a provider's event header that announce a push (GitLab's `System Hook` names
/// its event in the body, so it is not one of them).
pub fn push_events(provider: GitProvider) -> &'static [&'static str] {
    match provider {
        GitProvider::Github | GitProvider::Gitea | GitProvider::Gogs => &["push"],
        GitProvider::Gitlab => &["Push Hook"],
        GitProvider::Bitbucket => &["repo:push"],
        GitProvider::BitbucketServer => &["repo:refs_changed"],
        GitProvider::AzureDevops => &[],
    }
}

/// The provider whose event header a delivery carries, if one does: for a delivery sent to
/// another provider's route, to say where it belongs. Gitea, Forgejo and Gogs also send
/// GitHub's header, so their own are looked at first; Bitbucket Cloud and Server share theirs
/// and are told apart by the event; Azure DevOps sends none.
pub fn provider_of(headers: &HeaderMap) -> Option<GitProvider> {
    let has = |name: &str| headers.contains_key(name);
    if has("x-gitea-event") || has("x-forgejo-event") {
        return Some(GitProvider::Gitea);
    }
    if has("x-gogs-event") {
        return Some(GitProvider::Gogs);
    }
    if has("x-github-event") {
        return Some(GitProvider::Github);
    }
    if has("x-gitlab-event") {
        return Some(GitProvider::Gitlab);
    }
    let key = headers.get("x-event-key")?.to_str().ok()?;
    Some(
        if key.starts_with("repo:refs_changed") || key.starts_with("pr:") || key == "diagnostics:ping" {
            GitProvider::BitbucketServer
        } else {
            GitProvider::Bitbucket
        },
    )
}

/// How people call the provider, for error messages.
pub fn provider_name(provider: GitProvider) -> &'static str {
    match provider {
        GitProvider::Github => "GitHub",
        GitProvider::Gitlab => "GitLab",
        GitProvider::Bitbucket => "Bitbucket Cloud",
        GitProvider::BitbucketServer => "Bitbucket Server",
        GitProvider::Gitea => "Gitea",
        GitProvider::Gogs => "Gogs",
        GitProvider::AzureDevops => "Azure DevOps",
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the provider parsers.

/// A JSON string, borrowed from the body unless it holds escapes.
///
/// A newtype because serde only borrows a `Cow` that is a field of its own, not one inside an
/// `Option` or a `Vec`. A struct holding texts borrows them once it bounds `'de: 'a`: field by
/// field with `#[serde(borrow, default)]`, or for all its fields, every one optional, with
/// `#[serde(default, bound(deserialize = "'de: 'a"))]`, as the shared payload structs below do.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The non-empty text of an optional field.
fn text<'t>(field: &'t Option<Text<'_>>) -> Option<&'t str> {
    field.as_deref().filter(|s| !s.is_empty())
}

/// A commit as GitHub, GitLab, Gitea and Gogs list it (they agree on these names). `L` reads
/// each file list: kept by default, only checked where the payload lists the files elsewhere.
#[derive(Debug, Default, Deserialize)]
#[serde(default, bound(deserialize = "'de: 'a, L: Deserialize<'de> + Default"))]
struct Commit<'a, L = Vec<Text<'a>>> {
    id: Option<Text<'a>>,
    message: Option<Text<'a>>,
    added: Option<L>,
    modified: Option<L>,
    removed: Option<L>,
}

/// The union of `added`, `modified` and `removed` over `commits`; `Unknown` when `complete` is
/// false (the provider sent fewer commits than were pushed), when a commit carries no file lists
/// at all, or when the union is empty (nothing to restrict on, so the service deploys).
fn changed_files(commits: Vec<Commit<'_>>, complete: bool) -> ChangedFiles {
    let mut union = FileUnion::default();
    for commit in commits {
        union.add(commit.added, commit.modified, commit.removed);
    }
    union.finish(complete)
}

/// The paths of commits' `added`, `modified` and `removed` lists, gathered commit by commit
/// (see [`changed_files`]).
#[derive(Debug, Default)]
struct FileUnion {
    /// Copied from the body as they are read, in payload order, with repeats.
    paths: ChangedPaths,
    /// Some commit carried no file list at all.
    listless: bool,
}

impl FileUnion {
    fn add(&mut self, added: Option<Vec<Text<'_>>>, modified: Option<Vec<Text<'_>>>, removed: Option<Vec<Text<'_>>>) {
        if added.is_none() && modified.is_none() && removed.is_none() {
            self.listless = true;
        }
        for list in [added, modified, removed].into_iter().flatten() {
            list.iter().for_each(|path| self.push(path));
        }
    }

    /// One path of a commit's list; empty ones name no file.
    fn push(&mut self, path: &str) {
        if !path.is_empty() {
            self.paths.push(path);
        }
    }

    /// The changed files; `complete` as for [`changed_files`].
    fn finish(self, complete: bool) -> ChangedFiles {
        if !complete || self.listless || self.paths.is_empty() {
            return ChangedFiles::Unknown;
        }
        ChangedFiles::Known(self.paths)
    }
}

/// A JSON string that must be there (or `null`, as an `Option`) but whose text is not needed:
/// deserializing it checks its type, with the same errors as a [`Text`], without keeping a copy
/// of a string that holds escapes.
#[derive(Debug)]
struct Unkept;

impl<'de> Deserialize<'de> for Unkept {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Unkept;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                // What a `Cow<str>`, and so a `Text`, expects.
                formatter.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Unkept, E> {
                Ok(Unkept)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A [`Commit`] whose file lists are checked (same errors) but not kept: a payload's
/// `head_commit`, whose files its `commits` already list.
type HeadCommit<'a> = Commit<'a, UnkeptList>;

/// A `Vec<Text>` checked (same errors) but not kept.
#[derive(Debug, Default)]
struct UnkeptList;

impl<'de> Deserialize<'de> for UnkeptList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UnkeptList;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UnkeptList, A::Error> {
                while seq.next_element::<Unkept>()?.is_some() {}
                Ok(UnkeptList)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// A repository's URLs as GitHub names them, which Gitea and Gogs copy (without `git_url` and
/// `url`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, bound(deserialize = "'de: 'a"))]
struct Repository<'a> {
    clone_url: Option<Text<'a>>,
    ssh_url: Option<Text<'a>>,
    git_url: Option<Text<'a>>,
    html_url: Option<Text<'a>>,
    url: Option<Text<'a>>,
}

/// Who pushed, as GitHub names them (`pusher.name`, `sender.login`) and Gitea and Gogs
/// (`pusher.login`, `pusher.username`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, bound(deserialize = "'de: 'a"))]
struct User<'a> {
    name: Option<Text<'a>>,
    login: Option<Text<'a>>,
    username: Option<Text<'a>>,
}

/// The message of the commit `sha` among `commits`, for providers without a `head_commit`.
fn message_of(commits: &[Commit<'_>], sha: &str) -> Option<String> {
    commits
        .iter()
        .find(|commit| commit.id.as_deref() == Some(sha))
        .and_then(|commit| commit.message.as_deref())
        .map(str::to_owned)
}

/// Declares `PushEvent`, the payload of a push to one branch as GitHub, GitLab, Gitea and Gogs
/// send it: `ref`, `before` and `after`, which they name and read alike (see [`RefUpdate`]),
/// then the provider's own fields, given to the macro. Gitea and Gogs copy GitHub's payload, so
/// both parsers begin their fields with `with head_commit, repository, pusher;`, which adds
/// the three they share.
/// Declared in each parser rather than shared as a struct under `#[serde(flatten)]`, which
/// would buffer the payload instead of borrowing from it. Every field may be missing, and the
/// bound lets every text borrow from the body, so the fields need no attributes of their own.
macro_rules! push_event {
    (with head_commit, repository, pusher; $($fields:tt)*) => {
        push_event! {
            head_commit: Option<$crate::push::HeadCommit<'a>>,
            repository: Option<$crate::push::Repository<'a>>,
            pusher: Option<$crate::push::User<'a>>,
            $($fields)*
        }
    };
    ($($fields:tt)*) => {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default, bound(deserialize = "'de: 'a"))]
        struct PushEvent<'a> {
            #[serde(rename = "ref")]
            git_ref: Option<$crate::push::Text<'a>>,
            before: Option<$crate::push::Text<'a>>,
            after: Option<$crate::push::Text<'a>>,
            $($fields)*
        }
    };
}
use push_event;

/// What a push to one branch (GitHub, GitLab, Gitea, Gogs) says of the ref it updates.
struct RefUpdate<'e> {
    git_ref: Option<&'e str>,
    before: Option<&'e str>,
    after: Option<&'e str>,
    /// GitHub's `deleted: true`, which says what an `after` of zeros says.
    deleted: bool,
    /// The head commit's id, which stands for a missing `after`: a branch pushed with no new
    /// commit still names its head.
    head_id: Option<&'e str>,
}

/// What a push carries besides its branch and commits, read by each provider its own way.
struct PushDetails {
    repository_urls: Vec<String>,
    files: ChangedFiles,
    head_commit_message: Option<String>,
    pusher: Option<String>,
}

impl<'e> RefUpdate<'e> {
    /// The fields [`push_event`] declares; not deleted, no head commit.
    fn new(git_ref: &'e Option<Text<'_>>, before: &'e Option<Text<'_>>, after: &'e Option<Text<'_>>) -> Self {
        RefUpdate {
            git_ref: text(git_ref),
            before: text(before),
            after: text(after),
            deleted: false,
            head_id: None,
        }
    }

    /// The delivery of this push, checked in one order for every provider: the `ref` and then
    /// the repository the push is for (`source`, else the name of its missing field) must be
    /// there; a tag (deleted ones too) or another ref is ignored, and so is a deleted branch;
    /// then the commit to deploy must be known. `details` reads the rest, given the source and
    /// that commit.
    // Inlined into each parser: measured, the small push's parse is otherwise 1% slower.
    #[inline]
    fn delivery<S>(
        self,
        provider: GitProvider,
        source: Result<S, &'static str>,
        details: impl FnOnce(S, &'e str) -> PushDetails,
    ) -> Result<Delivery, PayloadError> {
        let git_ref = self.git_ref.ok_or_else(|| wrong_shape(provider, "missing `ref`"))?;
        let source = source.map_err(|field| wrong_shape(provider, format!("missing `{field}`")))?;
        let branch = match classify_ref(git_ref) {
            RefKind::Branch(branch) => branch,
            RefKind::Tag => return Ok(Delivery::Ignored(IgnoredReason::TagPush)),
            RefKind::Other => return Ok(Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
        };
        if self.deleted || self.after.is_some_and(is_zero_sha) {
            return Ok(Delivery::Ignored(IgnoredReason::BranchDeleted));
        }
        let after = self
            .after
            .or(self.head_id)
            .ok_or_else(|| wrong_shape(provider, "missing `after`"))?;
        let PushDetails {
            repository_urls,
            files,
            head_commit_message,
            pusher,
        } = details(source, after);
        Ok(Delivery::Pushes(vec![Push {
            repository_urls,
            branch: branch.to_owned(),
            before: self.before.unwrap_or_default().to_owned(),
            after: after.to_owned(),
            files,
            head_commit_message,
            pusher,
        }]))
    }
}

/// What a git ref names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind<'r> {
    Branch(&'r str),
    Tag,
    Other,
}

fn classify_ref(git_ref: &str) -> RefKind<'_> {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        if branch.is_empty() {
            RefKind::Other
        } else {
            RefKind::Branch(branch)
        }
    } else if git_ref.starts_with("refs/tags/") {
        RefKind::Tag
    } else {
        RefKind::Other
    }
}

/// A sha of zeros stands for "no commit": the ref was created (before) or deleted (after).
fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// What git writes for "no commit", used as `before` when a provider signals a new branch
/// with a null instead (Bitbucket Cloud), so every provider reads the same.
const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Deduplicated, non-empty URLs in the order given.
fn collect_urls<'u>(urls: impl IntoIterator<Item = Option<&'u str>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls.into_iter().flatten() {
        if !url.is_empty() && !out.iter().any(|seen| seen == url) {
            out.push(url.to_owned());
        }
    }
    out
}

/// What one ref update of a multi-branch delivery asks for.
enum Update<'c> {
    Branch {
        branch: &'c str,
        before: &'c str,
        after: &'c str,
        message: Option<&'c str>,
    },
    /// The branch was deleted: an earlier update of it in the same delivery no longer counts.
    Deleted(&'c str),
    Ignored(IgnoredReason),
}

/// Most distinct branches one delivery may name. Each branch can queue a deployment of every
/// service following it, so a crafted delivery listing thousands must not fan out.
pub const MAX_BRANCHES_PER_DELIVERY: usize = 100;

/// The pushes of a delivery that lists several ref updates (Bitbucket Cloud, Bitbucket Server,
/// Azure DevOps), each read by `update`; `repository_urls` and `pusher` are the delivery's.
///
/// One push per branch: when a branch is named several times, its last change wins (a
/// deletion drops it), at the place of its first mention. More than
/// [`MAX_BRANCHES_PER_DELIVERY`] distinct branches is an error. With no push at all, the
/// delivery is ignored for the reason of its first change.
fn multi_branch<'c, C: 'c>(
    changes: impl IntoIterator<Item = &'c C>,
    repository_urls: Vec<String>,
    pusher: Option<String>,
    mut update: impl FnMut(&'c C) -> Result<Update<'c>, PayloadError>,
) -> Result<Delivery, PayloadError> {
    // In order of first mention: the branch and its last change, `None` once deleted.
    let mut branches: Vec<(&'c str, Option<Push>)> = Vec::new();
    let mut first_reason = None;
    for change in changes {
        let (branch, push) = match update(change)? {
            Update::Branch {
                branch,
                before,
                after,
                message,
            } => {
                let push = Push {
                    repository_urls: repository_urls.clone(),
                    branch: branch.to_owned(),
                    before: before.to_owned(),
                    after: after.to_owned(),
                    files: ChangedFiles::Unknown,
                    head_commit_message: message.map(str::to_owned),
                    pusher: pusher.clone(),
                };
                (branch, Some(push))
            }
            Update::Deleted(branch) => {
                first_reason.get_or_insert(IgnoredReason::BranchDeleted);
                (branch, None)
            }
            Update::Ignored(reason) => {
                first_reason.get_or_insert(reason);
                continue;
            }
        };
        if let Some((_, last)) = branches.iter_mut().find(|(seen, _)| *seen == branch) {
            *last = push;
        } else if branches.len() == MAX_BRANCHES_PER_DELIVERY {
            return Err(PayloadError::TooManyBranches {
                max: MAX_BRANCHES_PER_DELIVERY,
            });
        } else {
            branches.push((branch, push));
        }
    }
    let pushes: Vec<Push> = branches.into_iter().filter_map(|(_, push)| push).collect();
    Ok(if pushes.is_empty() {
        // No change at all is not a push we can act on; ignoring it spares the provider retries.
        Delivery::Ignored(first_reason.unwrap_or(IgnoredReason::UnsupportedEvent))
    } else {
        Delivery::Pushes(pushes)
    })
}

/// The body as text: payloads are JSON, which is UTF-8. Every delivery's whole body is checked,
/// so with SIMD (the same answer as `std::str::from_utf8`, faster).
fn utf8(body: &[u8]) -> Result<&str, PayloadError> {
    simdutf8::basic::from_utf8(body).map_err(|_| PayloadError::NotUtf8)
}

/// `a GitHub`, `an Azure DevOps`.
pub fn with_article(name: &str) -> String {
    let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// Parse `json` into `T`, telling bad JSON (`NotJson`) from JSON of the wrong shape.
///
/// serde_json's recursion limit stays on, so deeply nested bodies fail instead of overflowing
/// the stack.
fn from_json<'a, T: Deserialize<'a>>(provider: GitProvider, json: &'a str) -> Result<T, PayloadError> {
    // serde's derived structs read a JSON array too, field by field, and then say that its
    // first item is not `ref`: every payload is an object.
    if json.trim_start().starts_with('[') {
        return Err(wrong_shape(provider, "invalid type: array, expected an object"));
    }
    serde_json::from_str(json).map_err(|err| {
        let detail = truncate(crate::error::in_json_terms(&err.to_string()));
        match err.classify() {
            serde_json::error::Category::Data => PayloadError::WrongShape {
                provider: provider_name(provider),
                detail,
            },
            _ => PayloadError::NotJson(detail),
        }
    })
}

/// Check that `json` is JSON at all, for events we ignore without reading.
fn check_json(provider: GitProvider, json: &str) -> Result<(), PayloadError> {
    from_json::<serde::de::IgnoredAny>(provider, json).map(|_| ())
}

fn wrong_shape(provider: GitProvider, detail: impl Into<String>) -> PayloadError {
    PayloadError::WrongShape {
        provider: provider_name(provider),
        detail: detail.into(),
    }
}

/// Error details stay short, whatever the payload.
fn truncate(mut detail: String) -> String {
    const MAX: usize = 200;
    if detail.len() > MAX {
        let mut end = MAX;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    detail
}

/// The event header's value, or a malformed-delivery error naming the header missing or
/// given more than once (of which none could be told to be the one meant).
fn event_header<'h>(headers: &'h HeaderMap, names: &[&'static str]) -> Result<Cow<'h, str>, PayloadError> {
    let name =
        names
            .iter()
            .copied()
            .find(|name| headers.contains_key(*name))
            .ok_or(PayloadError::MissingEventHeader(
                names.first().copied().unwrap_or_default(),
            ))?;
    if given_more_than_once(headers, name) {
        return Err(PayloadError::RepeatedEventHeader(name));
    }
    let value = headers.get(name).ok_or(PayloadError::MissingEventHeader(name))?;
    Ok(match String::from_utf8_lossy(value.as_bytes()) {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    })
}

/// For `delete` events (GitHub, Gitea, Gogs): a deleted branch or tag, by `ref_type`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, bound(deserialize = "'de: 'a"))]
struct RefTypeEvent<'a> {
    ref_type: Option<Text<'a>>,
}

fn deleted_ref(provider: GitProvider, json: &str) -> Result<Delivery, PayloadError> {
    let event: RefTypeEvent<'_> = from_json(provider, json)?;
    Ok(Delivery::Ignored(match text(&event.ref_type) {
        Some("branch") => IgnoredReason::BranchDeleted,
        Some("tag") => IgnoredReason::TagPush,
        _ => IgnoredReason::UnsupportedEvent,
    }))
}
