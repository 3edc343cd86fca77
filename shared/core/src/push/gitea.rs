//! Gitea (and its fork Forgejo) and Gogs, from which Gitea descends: the same push payload,
//! under `X-Gitea-Event` / `X-Forgejo-Event` or `X-Gogs-Event`.

use http::HeaderMap;
use serde::Deserialize;

use super::{
    Commit, Delivery, IgnoredReason, PayloadError, Push, RefKind, Text, changed_files, check_json, classify_ref,
    collect_urls, deleted_ref, event_header, from_json, is_zero_sha, message_of, text, wrong_shape,
};
use crate::provider::GitProvider;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    Gitea,
    Gogs,
}

impl Flavor {
    fn provider(self) -> GitProvider {
        match self {
            Flavor::Gitea => GitProvider::Gitea,
            Flavor::Gogs => GitProvider::Gogs,
        }
    }

    fn event_headers(self) -> &'static [&'static str] {
        match self {
            Flavor::Gitea => &["X-Gitea-Event", "X-Forgejo-Event"],
            Flavor::Gogs => &["X-Gogs-Event"],
        }
    }
}

#[derive(Debug, Deserialize)]
struct PushEvent<'a> {
    #[serde(rename = "ref", borrow, default)]
    git_ref: Option<Text<'a>>,
    #[serde(borrow, default)]
    before: Option<Text<'a>>,
    #[serde(borrow, default)]
    after: Option<Text<'a>>,
    #[serde(borrow, default)]
    commits: Option<Vec<Commit<'a>>>,
    #[serde(default)]
    total_commits: Option<u64>,
    #[serde(borrow, default)]
    head_commit: Option<Commit<'a>>,
    #[serde(borrow, default)]
    repository: Option<Repository<'a>>,
    #[serde(borrow, default)]
    pusher: Option<User<'a>>,
}

#[derive(Debug, Deserialize)]
struct Repository<'a> {
    #[serde(borrow, default)]
    clone_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    ssh_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    html_url: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct User<'a> {
    #[serde(borrow, default)]
    login: Option<Text<'a>>,
    #[serde(borrow, default)]
    username: Option<Text<'a>>,
}

pub(super) fn parse(flavor: Flavor, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let provider = flavor.provider();
    let event = event_header(headers, flavor.event_headers())?;
    let json = super::utf8(body)?;
    match event.as_ref() {
        "push" => parse_push(provider, json),
        "delete" => deleted_ref(provider, json),
        // `create` (a new branch or tag) comes with a push when it has commits to deploy.
        _ => check_json(provider, json).map(|()| Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
    }
}

fn parse_push(provider: GitProvider, json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(provider, json)?;
    let git_ref = text(&event.git_ref).ok_or_else(|| wrong_shape(provider, "missing `ref`"))?;
    let repository = event
        .repository
        .as_ref()
        .ok_or_else(|| wrong_shape(provider, "missing `repository`"))?;
    let branch = match classify_ref(git_ref) {
        RefKind::Branch(branch) => branch,
        RefKind::Tag => return Ok(Delivery::Ignored(IgnoredReason::TagPush)),
        RefKind::Other => return Ok(Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
    };
    let after = text(&event.after);
    if after.is_some_and(is_zero_sha) {
        return Ok(Delivery::Ignored(IgnoredReason::BranchDeleted));
    }
    let head = event.head_commit.as_ref();
    let after = after
        .or_else(|| head.and_then(|head| text(&head.id)))
        .ok_or_else(|| wrong_shape(provider, "missing `after`"))?;
    let repository_urls = collect_urls([
        text(&repository.clone_url),
        text(&repository.ssh_url),
        text(&repository.html_url),
    ]);
    let pusher = event
        .pusher
        .as_ref()
        .and_then(|user| text(&user.login).or(text(&user.username)))
        .map(str::to_owned);
    let commits = event.commits.unwrap_or_default();
    // Gogs has no `head_commit`: the head is the pushed commit among `commits`.
    let head_commit_message = head
        .and_then(|head| head.message.as_deref())
        .map(str::to_owned)
        .or_else(|| message_of(&commits, after));
    // Both send only the latest few commits (Gitea: 5 by default); `total_commits` says how
    // many there were.
    let complete = event.total_commits.is_none_or(|total| total <= commits.len() as u64);
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
