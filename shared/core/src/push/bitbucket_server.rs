//! Bitbucket Server / Data Center: `X-Event-Key: repo:refs_changed`; one delivery lists every
//! ref the push updated in `changes[]`, without commits or file lists.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Delivery, IgnoredReason, PayloadError, RefKind, Text, Update, check_json, classify_ref, collect_urls, event_header,
    from_json, is_zero_sha, multi_branch, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::BitbucketServer;

#[derive(Debug, Deserialize)]
struct RefsChanged<'a> {
    #[serde(borrow, default)]
    actor: Option<Actor<'a>>,
    #[serde(borrow, default)]
    repository: Option<Repository<'a>>,
    #[serde(borrow, default)]
    changes: Option<Vec<Change<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Actor<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Repository<'a> {
    #[serde(borrow, default)]
    links: Option<Links<'a>>,
}

#[derive(Debug, Deserialize)]
struct Links<'a> {
    #[serde(borrow, default)]
    clone: Option<Vec<Link<'a>>>,
    #[serde(rename = "self", borrow, default)]
    web: Option<Vec<Link<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Link<'a> {
    #[serde(borrow, default)]
    href: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<ChangedRef<'a>>,
    #[serde(borrow, default)]
    ref_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    from_hash: Option<Text<'a>>,
    #[serde(borrow, default)]
    to_hash: Option<Text<'a>>,
    /// `ADD`, `UPDATE` or `DELETE`.
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct ChangedRef<'a> {
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    /// `BRANCH` or `TAG`.
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let event = event_header(headers, super::event_headers(PROVIDER))?;
    let json = super::utf8(body)?;
    let ignored = |reason| check_json(PROVIDER, json).map(|()| Delivery::Ignored(reason));
    match event.as_ref() {
        "repo:refs_changed" => parse_refs_changed(json),
        "diagnostics:ping" => ignored(IgnoredReason::Ping),
        _ => ignored(IgnoredReason::UnsupportedEvent),
    }
}

fn parse_refs_changed(json: &str) -> Result<Delivery, PayloadError> {
    let event: RefsChanged<'_> = from_json(PROVIDER, json)?;
    let repository = event
        .repository
        .as_ref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `repository`"))?;
    let changes = event
        .changes
        .as_ref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `changes`"))?;
    let links = repository.links.as_ref();
    let clone_urls = links
        .and_then(|links| links.clone.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|link| text(&link.href));
    let web_urls: Vec<String> = links
        .and_then(|links| links.web.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|link| text(&link.href))
        .flat_map(web_link_forms)
        .collect();
    let repository_urls = collect_urls(clone_urls.chain(web_urls.iter().map(|url| Some(url.as_str()))));
    let pusher = event
        .actor
        .as_ref()
        .and_then(|actor| text(&actor.name))
        .map(str::to_owned);

    multi_branch(changes, repository_urls, pusher, branch_update)
}

fn branch_update<'c>(change: &'c Change<'_>) -> Result<Update<'c>, PayloadError> {
    let changed_ref = change.git_ref.as_ref();
    let ref_id = text(&change.ref_id)
        .or_else(|| changed_ref.and_then(|r| text(&r.id)))
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `changes[].refId`"))?;
    let tag = changed_ref.is_some_and(|r| text(&r.kind) == Some("TAG"));
    let branch = match classify_ref(ref_id) {
        RefKind::Tag => return Ok(Update::Ignored(IgnoredReason::TagPush)),
        _ if tag => return Ok(Update::Ignored(IgnoredReason::TagPush)),
        RefKind::Branch(branch) => branch,
        RefKind::Other => return Ok(Update::Ignored(IgnoredReason::UnsupportedEvent)),
    };
    let after = text(&change.to_hash).unwrap_or_default();
    if text(&change.kind) == Some("DELETE") || is_zero_sha(after) {
        return Ok(Update::Deleted(branch));
    }
    if after.is_empty() {
        return Err(wrong_shape(PROVIDER, "missing `changes[].toHash`"));
    }
    Ok(Update::Branch {
        branch,
        before: text(&change.from_hash).unwrap_or_default(),
        after,
        // Bitbucket Server sends no commit, so no message.
        message: None,
    })
}

/// The repository's web link as sent (`…/projects/P/repos/r/browse`, or `…/users/u/repos/r/browse`
/// for a personal repository), without `/browse`, and in the `…/scm/p/r` form of its HTTP clone
/// URL, so that a service registered with either matches.
pub(super) fn web_link_forms(href: &str) -> Vec<String> {
    let page = href.trim_end_matches('/');
    let page = page.strip_suffix("/browse").unwrap_or(page);
    let mut forms = vec![page.to_owned()];
    let segments: Vec<&str> = page.rsplitn(5, '/').collect();
    // Reversed: [repo, "repos", key, "projects" | "users", prefix].
    if let [repo, "repos", key, kind, prefix] = segments.as_slice() {
        let owner = match *kind {
            "projects" => Some(key.to_ascii_lowercase()),
            "users" => Some(format!("~{}", key.to_ascii_lowercase())),
            _ => None,
        };
        if let Some(owner) = owner {
            forms.push(format!("{prefix}/scm/{owner}/{repo}"));
        }
    }
    forms
}
