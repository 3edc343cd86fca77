//! Bitbucket Cloud: `X-Event-Key: repo:push`; one delivery lists every ref the push updated in
//! `push.changes[]`, without file lists.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Delivery, IgnoredReason, PayloadError, Text, Update, ZERO_SHA, check_json, collect_urls, event_header, from_json,
    multi_branch, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::Bitbucket;

#[derive(Debug, Deserialize)]
struct PushEvent<'a> {
    #[serde(borrow, default)]
    actor: Option<Actor<'a>>,
    #[serde(borrow, default)]
    repository: Option<Repository<'a>>,
    #[serde(borrow, default)]
    push: Option<Changes<'a>>,
}

#[derive(Debug, Deserialize)]
struct Actor<'a> {
    #[serde(borrow, default)]
    nickname: Option<Text<'a>>,
    #[serde(borrow, default)]
    display_name: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Repository<'a> {
    #[serde(borrow, default)]
    full_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    links: Option<Links<'a>>,
}

#[derive(Debug, Deserialize)]
struct Links<'a> {
    #[serde(borrow, default)]
    html: Option<Link<'a>>,
}

#[derive(Debug, Deserialize)]
struct Link<'a> {
    #[serde(borrow, default)]
    href: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Changes<'a> {
    #[serde(borrow, default)]
    changes: Option<Vec<Change<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Change<'a> {
    /// Null when the ref was deleted.
    #[serde(borrow, default)]
    new: Option<Ref<'a>>,
    /// Null when the ref was created.
    #[serde(borrow, default)]
    old: Option<Ref<'a>>,
}

#[derive(Debug, Deserialize)]
struct Ref<'a> {
    /// `branch`, `tag`, `annotated_tag` (and `named_branch`/`bookmark` in Mercurial days).
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    target: Option<Target<'a>>,
}

#[derive(Debug, Deserialize)]
struct Target<'a> {
    #[serde(borrow, default)]
    hash: Option<Text<'a>>,
    #[serde(borrow, default)]
    message: Option<Text<'a>>,
}

impl Ref<'_> {
    fn is_tag(&self) -> bool {
        matches!(text(&self.kind), Some("tag" | "annotated_tag"))
    }

    fn hash(&self) -> Option<&str> {
        self.target.as_ref().and_then(|target| text(&target.hash))
    }
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let event = event_header(headers, super::event_headers(PROVIDER))?;
    let json = super::utf8(body)?;
    let ignored = |reason| check_json(PROVIDER, json).map(|()| Delivery::Ignored(reason));
    match event.as_ref() {
        "repo:push" => parse_push(json),
        "diagnostics:ping" => ignored(IgnoredReason::Ping),
        _ => ignored(IgnoredReason::UnsupportedEvent),
    }
}

fn parse_push(json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(PROVIDER, json)?;
    let repository = event
        .repository
        .as_ref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `repository`"))?;
    let changes = event
        .push
        .and_then(|push| push.changes)
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `push.changes`"))?;
    // Bitbucket Cloud is always bitbucket.org: `full_name` names the repository even when the
    // `html` link is missing or points elsewhere (api.bitbucket.org in Atlassian's own sample).
    let canonical = text(&repository.full_name).map(|name| format!("https://bitbucket.org/{name}"));
    let repository_urls = collect_urls([
        repository
            .links
            .as_ref()
            .and_then(|links| links.html.as_ref())
            .and_then(|html| text(&html.href)),
        canonical.as_deref(),
    ]);
    let pusher = event
        .actor
        .as_ref()
        .and_then(|actor| text(&actor.nickname).or(text(&actor.display_name)))
        .map(str::to_owned);

    multi_branch(&changes, repository_urls, pusher, branch_update)
}

fn branch_update<'c>(change: &'c Change<'_>) -> Result<Update<'c>, PayloadError> {
    let Some(new) = &change.new else {
        return Ok(match change.old.as_ref() {
            Some(old) if old.is_tag() => Update::Ignored(IgnoredReason::TagPush),
            Some(old) => match (text(&old.kind), text(&old.name)) {
                (Some("branch"), Some(branch)) => Update::Deleted(branch),
                _ => Update::Ignored(IgnoredReason::BranchDeleted),
            },
            None => Update::Ignored(IgnoredReason::BranchDeleted),
        });
    };
    if new.is_tag() {
        return Ok(Update::Ignored(IgnoredReason::TagPush));
    }
    let (Some("branch"), Some(branch)) = (text(&new.kind), text(&new.name)) else {
        return Ok(Update::Ignored(IgnoredReason::UnsupportedEvent));
    };
    let after = new
        .hash()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `push.changes[].new.target.hash`"))?;
    Ok(Update::Branch {
        branch,
        before: change.old.as_ref().and_then(Ref::hash).unwrap_or(ZERO_SHA),
        after,
        message: new.target.as_ref().and_then(|target| target.message.as_deref()),
    })
}
