//! GitHub: `X-GitHub-Event` names the event; the body is JSON or, when the hook's content
//! type is `application/x-www-form-urlencoded`, a form whose `payload` field holds the JSON.

use std::borrow::Cow;

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Commit, Delivery, GITHUB_COMMIT_CAP, IgnoredReason, PayloadError, Push, RefKind, Text, changed_files, check_json,
    classify_ref, collect_urls, deleted_ref, event_header, from_json, is_zero_sha, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::Github;

#[derive(Debug, Deserialize)]
struct PushEvent<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Text<'a>>,
    #[serde(borrow, default)]
    before: Option<Text<'a>>,
    #[serde(borrow, default)]
    after: Option<Text<'a>>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(borrow, default)]
    commits: Option<Vec<Commit<'a>>>,
    #[serde(borrow, default)]
    head_commit: Option<Commit<'a>>,
    #[serde(borrow, default)]
    repository: Option<Repository<'a>>,
    #[serde(borrow, default)]
    pusher: Option<Pusher<'a>>,
    #[serde(borrow, default)]
    sender: Option<Sender<'a>>,
}

#[derive(Debug, Deserialize)]
struct Repository<'a> {
    #[serde(borrow, default)]
    clone_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    ssh_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    git_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    html_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Pusher<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Sender<'a> {
    #[serde(borrow, default)]
    login: Option<Text<'a>>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let event = event_header(headers, &["X-GitHub-Event"])?;
    let json = json_body(headers, body)?;
    match event.as_ref() {
        "push" => parse_push(&json),
        "ping" => check_json(PROVIDER, &json).map(|()| Delivery::Ignored(IgnoredReason::Ping)),
        // A deleted branch also comes as a push with `deleted: true`; this says the same.
        "delete" => deleted_ref(PROVIDER, &json),
        // A created branch also comes as a push, which is the one that deploys.
        _ => check_json(PROVIDER, &json).map(|()| Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
    }
}

/// The JSON text of the delivery, unwrapping the form encoding GitHub can be configured to use.
fn json_body<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<Cow<'b, str>, PayloadError> {
    let text = super::utf8(body)?;
    let form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    // Sniffing covers a proxy that dropped the content type; JSON never starts with `payload=`.
    if !form && !text.starts_with("payload=") {
        return Ok(Cow::Borrowed(text));
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, payload)| payload)
        .ok_or(PayloadError::MissingFormPayload)
}

fn parse_push(json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(PROVIDER, json)?;
    let git_ref = text(&event.git_ref).ok_or_else(|| wrong_shape(PROVIDER, "missing `ref`"))?;
    let repository = event
        .repository
        .as_ref()
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `repository`"))?;
    let branch = match classify_ref(git_ref) {
        RefKind::Branch(branch) => branch,
        // Tag deletions too: they are about a tag, not a branch.
        RefKind::Tag => return Ok(Delivery::Ignored(IgnoredReason::TagPush)),
        RefKind::Other => return Ok(Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
    };
    let after = text(&event.after);
    if event.deleted == Some(true) || after.is_some_and(is_zero_sha) {
        return Ok(Delivery::Ignored(IgnoredReason::BranchDeleted));
    }
    let head = event.head_commit.as_ref();
    // A branch pushed with no new commit still names its head: deploy that.
    let after = after
        .or_else(|| head.and_then(|head| text(&head.id)))
        .ok_or_else(|| wrong_shape(PROVIDER, "missing `after`"))?;
    // In push events `url` is the web page; in other events it is the API's, which no
    // service follows.
    let api_url = text(&repository.url).filter(|url| is_api_url(url));
    let repository_urls = collect_urls([
        text(&repository.clone_url),
        text(&repository.ssh_url),
        text(&repository.git_url),
        text(&repository.html_url),
        text(&repository.url).filter(|_| api_url.is_none()),
    ]);
    let pusher = event
        .pusher
        .as_ref()
        .and_then(|pusher| text(&pusher.name))
        .or_else(|| event.sender.as_ref().and_then(|sender| text(&sender.login)))
        .map(str::to_owned);
    let head_commit_message = head.and_then(|head| head.message.as_deref()).map(str::to_owned);
    let commits = event.commits.unwrap_or_default();
    // GitHub lists at most 2,048 commits: reaching the cap means some may be missing.
    let complete = commits.len() < GITHUB_COMMIT_CAP;
    Ok(Delivery::Pushes(vec![Push {
        repository_urls,
        branch: branch.to_owned(),
        before: event.before.as_deref().unwrap_or_default().to_owned(),
        after: after.to_owned(),
        files: changed_files(commits, complete),
        head_commit_message,
        pusher,
    }]))
}

/// `https://api.github.com/repos/...` or GitHub Enterprise's `https://host/api/v3/repos/...`.
fn is_api_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    host.eq_ignore_ascii_case("api.github.com") || path.starts_with("api/")
}
