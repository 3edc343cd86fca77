//! Gitea (and its fork Forgejo) and Gogs, from which Gitea descends: the same push payload,
//! under `X-Gitea-Event` / `X-Forgejo-Event` or `X-Gogs-Event`.

use http::HeaderMap;

use super::{
    Commit, Delivery, IgnoredReason, PayloadError, PushDetails, RefUpdate, changed_files, check_json, collect_urls,
    deleted_ref, event_header, from_json, message_of, push_event, text,
};
use crate::provider::GitProvider;

/// How many commits Gitea and Gogs list in a push at most by default (their `[ui]`
/// `FEED_MAX_COMMIT_NUM`, which also caps webhooks).
const FEED_MAX_COMMITS: usize = 5;

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
}

push_event! {
    with head_commit, repository, pusher;
    commits: Option<Vec<Commit<'a>>>,
    total_commits: Option<u64>,
}

pub(super) fn parse(flavor: Flavor, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let provider = flavor.provider();
    let event = event_header(headers, super::event_headers(provider))?;
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
    let head = event.head_commit.as_ref();
    let update = RefUpdate {
        head_id: head.and_then(|head| text(&head.id)),
        ..RefUpdate::new(&event.git_ref, &event.before, &event.after)
    };
    let source = event.repository.as_ref().ok_or("repository");
    update.delivery(provider, source, |repository, after| {
        let commits = event.commits.unwrap_or_default();
        // Gogs has no `head_commit`: the head is the pushed commit among `commits`.
        let head_commit_message = head
            .and_then(|head| head.message.as_deref())
            .map(str::to_owned)
            .or_else(|| message_of(&commits, after));
        // Both send only the latest few commits; Gitea's `total_commits` says how many there
        // were. Gogs never says: a list as long as their default cap may have been cut.
        let complete = match event.total_commits {
            Some(total) => total <= commits.len() as u64,
            None => commits.len() < FEED_MAX_COMMITS,
        };
        PushDetails {
            repository_urls: collect_urls([
                text(&repository.clone_url),
                text(&repository.ssh_url),
                text(&repository.html_url),
            ]),
            files: changed_files(commits, complete),
            head_commit_message,
            pusher: event
                .pusher
                .as_ref()
                .and_then(|user| text(&user.login).or(text(&user.username)))
                .map(str::to_owned),
        }
    })
}
