//! Azure DevOps service hooks: no event header, the body's `eventType` says `git.push`; one
//! delivery lists every ref the push updated in `resource.refUpdates[]`, without file lists.

use serde::Deserialize;

use super::{
    Delivery, IgnoredReason, PayloadError, RefKind, Text, Update, classify_ref, collect_urls, from_json, is_zero_sha,
    multi_branch, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::AzureDevops;

/// The envelope every service hook shares. Read before the resource, whose shape depends on
/// the event.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    event_type: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct PushEvent<'a> {
    #[serde(borrow, default)]
    resource: Option<Resource<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource<'a> {
    #[serde(borrow, default)]
    commits: Option<Vec<Commit<'a>>>,
    #[serde(borrow, default)]
    ref_updates: Option<Vec<RefUpdate<'a>>>,
    #[serde(borrow, default)]
    repository: Option<Repository<'a>>,
    #[serde(borrow, default)]
    pushed_by: Option<Identity<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Commit<'a> {
    #[serde(borrow, default)]
    commit_id: Option<Text<'a>>,
    /// The commit message (possibly cut short: `commentTruncated`).
    #[serde(borrow, default)]
    comment: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefUpdate<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    old_object_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    new_object_id: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Repository<'a> {
    #[serde(borrow, default)]
    remote_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    ssh_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    web_url: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    #[serde(borrow, default)]
    unique_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    display_name: Option<Text<'a>>,
}

/// The event's `id`, Azure DevOps' only delivery id (it keeps it across retries).
pub(super) fn event_id(body: &[u8]) -> Option<String> {
    let json = std::str::from_utf8(body).ok()?;
    let envelope: Envelope<'_> = serde_json::from_str(json).ok()?;
    envelope.id.map(|id| id.0.into_owned())
}

pub(super) fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
    let json = super::utf8(body)?;
    let envelope: Envelope<'_> = from_json(PROVIDER, json)?;
    match text(&envelope.event_type) {
        Some("git.push") => parse_push(json),
        Some(_) => Ok(Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
        None => Err(wrong_shape(PROVIDER, "missing `eventType`")),
    }
}

fn parse_push(json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(PROVIDER, json)?;
    let resource = event
        .resource
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `resource`"))?;
    let repository = resource
        .repository
        .as_ref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `resource.repository`"))?;
    let ref_updates = resource
        .ref_updates
        .as_deref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `resource.refUpdates`"))?;
    // `url` is the REST API's: no service follows it.
    let repository_urls = collect_urls([
        text(&repository.remote_url),
        text(&repository.ssh_url),
        text(&repository.web_url),
    ]);
    let pusher = resource
        .pushed_by
        .as_ref()
        .and_then(|who| text(&who.unique_name).or(text(&who.display_name)))
        .map(str::to_owned);
    let commits = resource.commits.as_deref().unwrap_or_default();

    multi_branch(ref_updates, repository_urls, pusher, |ref_update| {
        branch_update(ref_update, commits)
    })
}

fn branch_update<'c>(ref_update: &'c RefUpdate<'_>, commits: &'c [Commit<'_>]) -> Result<Update<'c>, PayloadError> {
    let name = text(&ref_update.name).ok_or_else(|| wrong_shape(PROVIDER, "missing `resource.refUpdates[].name`"))?;
    let branch = match classify_ref(name) {
        RefKind::Branch(branch) => branch,
        RefKind::Tag => return Ok(Update::Ignored(IgnoredReason::TagPush)),
        RefKind::Other => return Ok(Update::Ignored(IgnoredReason::UnsupportedEvent)),
    };
    let after = text(&ref_update.new_object_id)
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `resource.refUpdates[].newObjectId`"))?;
    if is_zero_sha(after) {
        return Ok(Update::Deleted(branch));
    }
    // `commits` covers the whole push: the head of this branch is the one with its new id.
    let message = commits
        .iter()
        .find(|commit| text(&commit.commit_id).is_some_and(|id| id.eq_ignore_ascii_case(after)))
        .and_then(|commit| commit.comment.as_deref());
    Ok(Update::Branch {
        branch,
        before: text(&ref_update.old_object_id).unwrap_or_default(),
        after,
        message,
    })
}
