//! GitLab: `X-Gitlab-Event` is `Push Hook` or `Tag Push Hook` for project hooks; instance-wide
//! system hooks all say `System Hook` and name the event in the body (`object_kind` or
//! `event_name`).

use http::HeaderMap;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    Commit, Delivery, IgnoredReason, PayloadError, PushDetails, RefUpdate, Text, changed_files, check_json,
    collect_urls, event_header, from_json, message_of, push_event, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::Gitlab;

push_event! {
    user_username: Option<Text<'a>>,
    user_name: Option<Text<'a>>,
    project: Option<Project<'a>>,
    repository: Option<Repository<'a>>,
    commits: Option<Vec<Commit<'a>>>,
    total_commits_count: Option<u64>,
    // GitHub's (and Gitea's and Gogs', which copy it), which GitLab never sends: their pushes
    // have the fields a GitLab one is read by.
    head_commit: Option<IgnoredAny>,
    pusher: Option<IgnoredAny>,
    sender: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Project<'a> {
    #[serde(borrow, default)]
    git_http_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    git_ssh_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    web_url: Option<Text<'a>>,
    // Deprecated duplicates GitLab still sends; older instances may send only these.
    #[serde(borrow, default)]
    http_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    ssh_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    homepage: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct Repository<'a> {
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    homepage: Option<Text<'a>>,
    #[serde(borrow, default)]
    git_http_url: Option<Text<'a>>,
    #[serde(borrow, default)]
    git_ssh_url: Option<Text<'a>>,
}

/// Just enough of a system hook to tell its event before reading it as a push: other system
/// events may use the push's field names with other shapes.
#[derive(Debug, Deserialize)]
struct SystemEvent<'a> {
    #[serde(borrow, default)]
    object_kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    event_name: Option<Text<'a>>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let event = event_header(headers, super::event_headers(PROVIDER))?;
    let json = super::utf8(body)?;
    match event.as_ref() {
        "Push Hook" => parse_push(json),
        "Tag Push Hook" => ignore(json, IgnoredReason::TagPush),
        "System Hook" => {
            let system: SystemEvent<'_> = from_json(PROVIDER, json)?;
            match text(&system.object_kind).or(text(&system.event_name)) {
                Some("push") => parse_push(json),
                Some("tag_push") => Ok(Delivery::Ignored(IgnoredReason::TagPush)),
                _ => Ok(Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
            }
        }
        _ => ignore(json, IgnoredReason::UnsupportedEvent),
    }
}

fn ignore(json: &str, reason: IgnoredReason) -> Result<Delivery, PayloadError> {
    check_json(PROVIDER, json).map(|()| Delivery::Ignored(reason))
}

fn parse_push(json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(PROVIDER, json)?;
    if event.head_commit.is_some() || event.pusher.is_some() || event.sender.is_some() {
        return Err(wrong_shape(
            PROVIDER,
            "it has `head_commit`, `pusher` or `sender`, as a GitHub, Gitea or Gogs push has: their webhooks go to …/webhooks/github, gitea or gogs",
        ));
    }
    let (project, repository) = (event.project.as_ref(), event.repository.as_ref());
    let source = if project.is_none() && repository.is_none() {
        Err("project")
    } else {
        Ok(())
    };
    let update = RefUpdate::new(&event.git_ref, &event.before, &event.after);
    update.delivery(PROVIDER, source, |(), after| {
        let commits = event.commits.unwrap_or_default();
        let head_commit_message = message_of(&commits, after);
        // GitLab lists at most 20 commits by default; `total_commits_count` says how many there
        // were (GitLab always sends it: without it, the list cannot be known to be whole).
        let complete = event
            .total_commits_count
            .is_some_and(|total| total <= commits.len() as u64);
        PushDetails {
            repository_urls: collect_urls([
                project.and_then(|p| text(&p.git_http_url)),
                project.and_then(|p| text(&p.git_ssh_url)),
                project.and_then(|p| text(&p.web_url)),
                project.and_then(|p| text(&p.http_url)),
                project.and_then(|p| text(&p.ssh_url)),
                project.and_then(|p| text(&p.url)),
                project.and_then(|p| text(&p.homepage)),
                repository.and_then(|r| text(&r.git_http_url)),
                repository.and_then(|r| text(&r.git_ssh_url)),
                repository.and_then(|r| text(&r.url)),
                repository.and_then(|r| text(&r.homepage)),
            ]),
            files: changed_files(commits, complete),
            head_commit_message,
            pusher: text(&event.user_username).or(text(&event.user_name)).map(str::to_owned),
        }
    })
}
