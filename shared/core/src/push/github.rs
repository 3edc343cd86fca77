//! GitHub: `X-GitHub-Event` names the event; the body is JSON or, when the hook's content
//! type is `application/x-www-form-urlencoded`, a form whose `payload` field holds the JSON.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Delivery, FileUnion, GITHUB_COMMIT_CAP, IgnoredReason, PayloadError, PushDetails, RefUpdate, Text, Unkept, User,
    check_json, collect_urls, deleted_ref, event_header, from_json, push_event, text, wrong_shape,
};
use crate::provider::GitProvider;

const PROVIDER: GitProvider = GitProvider::Github;

push_event! {
    with head_commit, repository, pusher;
    deleted: Option<bool>,
    commits: Option<Commits>,
    sender: Option<User<'a>>,
    // GitLab's (project hooks', system hooks'), which GitHub never sends: a GitLab push has
    // every field a GitHub one is read by.
    object_kind: Option<IgnoredAny>,
    event_name: Option<IgnoredAny>,
}

/// `commits`, read with the errors a `Vec` of [`super::Commit`] gives, but folded into the
/// union of the commits' files as they come instead of kept: a push lists up to 2,048 commits,
/// and only their count and files matter. The paths go straight into the union, and the
/// commits' ids and messages (only `head_commit`'s are used) are checked to be strings but not
/// copied.
#[derive(Debug, Default)]
struct Commits {
    count: usize,
    files: FileUnion,
}

impl<'de> Deserialize<'de> for Commits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommitsVisitor;
        impl<'de> Visitor<'de> for CommitsVisitor {
            type Value = Commits;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                // What a `Vec` expects.
                formatter.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commits, A::Error> {
                let mut commits = Commits::default();
                while seq.next_element_seed(CommitSeed(&mut commits.files))?.is_some() {
                    commits.count += 1;
                }
                Ok(commits)
            }
        }
        deserializer.deserialize_seq(CommitsVisitor)
    }
}

/// One entry of `commits`, read as the derived `Deserialize` of [`super::Commit`] reads it
/// (same fields, order, defaults and errors: `expected struct Commit`, `duplicate field`),
/// adding its paths to the union.
struct CommitSeed<'u>(&'u mut FileUnion);

/// The fields of [`super::Commit`], identified as its derived `Deserialize` does.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum CommitField {
    Id,
    Message,
    Added,
    Modified,
    Removed,
    #[serde(other)]
    Other,
}

const COMMIT_FIELDS: &[&str] = &["id", "message", "added", "modified", "removed"];

impl<'de> DeserializeSeed<'de> for CommitSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_struct("Commit", COMMIT_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for CommitSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("struct Commit")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Positional fields, each defaulted when missing.
        seq.next_element::<Option<Unkept>>()?;
        seq.next_element::<Option<Unkept>>()?;
        let mut listed = false;
        for _ in 0..3 {
            listed |= seq.next_element_seed(Paths(self.0))?.unwrap_or(false);
        }
        self.0.listless |= !listed;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Which fields were seen (a second one is an error, as in derived code), and whether
        // any list was given.
        let mut seen = [false; 5];
        let mut listed = false;
        while let Some(field) = map.next_key::<CommitField>()? {
            let index = match field {
                CommitField::Id => 0,
                CommitField::Message => 1,
                CommitField::Added => 2,
                CommitField::Modified => 3,
                CommitField::Removed => 4,
                CommitField::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if seen[index] {
                return Err(de::Error::duplicate_field(COMMIT_FIELDS[index]));
            }
            seen[index] = true;
            if index < 2 {
                map.next_value::<Option<Unkept>>()?;
            } else {
                listed |= map.next_value_seed(Paths(self.0))?;
            }
        }
        self.0.listless |= !listed;
        Ok(())
    }
}

/// An `Option<Vec<Text>>` file list of a commit, its non-empty paths added to the union;
/// `true` when the list is there (not `null`).
struct Paths<'u>(&'u mut FileUnion);

impl<'de> DeserializeSeed<'de> for Paths<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Paths<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("option")
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        struct List<'u>(&'u mut FileUnion);
        impl<'de> Visitor<'de> for List<'_> {
            type Value = ();
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while let Some(path) = seq.next_element::<Text<'de>>()? {
                    self.0.push(&path);
                }
                Ok(())
            }
        }
        deserializer.deserialize_seq(List(self.0)).map(|()| true)
    }
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, PayloadError> {
    let event = event_header(headers, super::event_headers(PROVIDER))?;
    let json = github_payload(headers, body)?;
    match event.as_ref() {
        "push" => parse_push(&json),
        "ping" => check_json(PROVIDER, &json).map(|()| Delivery::Ignored(IgnoredReason::Ping)),
        // A deleted branch also comes as a push with `deleted: true`; this says the same.
        "delete" => deleted_ref(PROVIDER, &json),
        // A created branch also comes as a push, which is the one that deploys.
        _ => check_json(PROVIDER, &json).map(|()| Delivery::Ignored(IgnoredReason::UnsupportedEvent)),
    }
}

/// The JSON text of a GitHub delivery, unwrapping the form encoding a GitHub webhook can be
/// configured to use (`application/x-www-form-urlencoded`, the JSON in the `payload` field).
/// Every GitHub webhook the product receives goes through it: git pushes and GitHub Packages
/// events alike. The signature covers the body as sent, so verify before unwrapping.
pub fn github_payload<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<Cow<'b, str>, PayloadError> {
    let text = super::utf8(body)?;
    let form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    // The body says which it is, whatever the header claims: a proxy may drop the content type,
    // and a hand-made redelivery (curl's `--data-binary`) labels JSON as a form. A form never
    // starts with `{`, nor JSON with `payload=`.
    let object = text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{');
    if object || (!form && !text.starts_with("payload=")) {
        return Ok(Cow::Borrowed(text));
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, payload)| payload)
        .ok_or(PayloadError::MissingFormPayload)
}

fn parse_push(json: &str) -> Result<Delivery, PayloadError> {
    let event: PushEvent<'_> = from_json(PROVIDER, json)?;
    if event.object_kind.is_some() || event.event_name.is_some() {
        return Err(wrong_shape(
            PROVIDER,
            "it has `object_kind` or `event_name`, as a GitLab push has: GitLab's webhooks go to …/webhooks/gitlab",
        ));
    }
    let head = event.head_commit.as_ref();
    let update = RefUpdate {
        deleted: event.deleted == Some(true),
        head_id: head.and_then(|head| text(&head.id)),
        ..RefUpdate::new(&event.git_ref, &event.before, &event.after)
    };
    let source = event.repository.as_ref().ok_or("repository");
    update.delivery(PROVIDER, source, |repository, _| {
        // In push events `url` is the web page; in other events it is the API's, which no
        // service follows.
        let api_url = text(&repository.url).filter(|url| is_api_url(url));
        let commits = event.commits.unwrap_or_default();
        // GitHub lists at most 2,048 commits: reaching the cap means some may be missing.
        let complete = commits.count < GITHUB_COMMIT_CAP;
        PushDetails {
            repository_urls: collect_urls([
                text(&repository.clone_url),
                text(&repository.ssh_url),
                text(&repository.git_url),
                text(&repository.html_url),
                text(&repository.url).filter(|_| api_url.is_none()),
            ]),
            files: commits.files.finish(complete),
            head_commit_message: head.and_then(|head| head.message.as_deref()).map(str::to_owned),
            pusher: event
                .pusher
                .as_ref()
                .and_then(|pusher| text(&pusher.name))
                .or_else(|| event.sender.as_ref().and_then(|sender| text(&sender.login)))
                .map(str::to_owned),
        }
    })
}

/// `https://api.github.com/repos/...` or GitHub Enterprise's `https://host/api/v3/repos/...`.
fn is_api_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    host.eq_ignore_ascii_case("api.github.com") || path.starts_with("api/")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::push::{ChangedFiles, HeadCommit, changed_files};

    /// How `commits` was read before it was folded: kept whole, as the other providers do.
    #[derive(Debug, Deserialize)]
    struct KeptCommits<'a> {
        #[serde(borrow, default)]
        commits: Option<Vec<super::super::Commit<'a>>>,
    }

    #[derive(Debug, Deserialize)]
    struct FoldedCommits {
        #[serde(default)]
        commits: Option<Commits>,
    }

    /// How `head_commit` was read before: a whole commit.
    #[derive(Debug, Deserialize)]
    struct KeptHead<'a> {
        #[serde(borrow, default)]
        head_commit: Option<super::super::Commit<'a>>,
    }

    #[derive(Debug, Deserialize)]
    struct CheckedHead<'a> {
        #[serde(borrow, default)]
        head_commit: Option<HeadCommit<'a>>,
    }

    type IdAndMessage = Option<(Option<String>, Option<String>)>;

    fn kept_head(json: &str) -> Result<IdAndMessage, PayloadError> {
        let event: KeptHead<'_> = from_json(PROVIDER, json)?;
        Ok(event.head_commit.map(|c| {
            (
                c.id.as_deref().map(str::to_owned),
                c.message.as_deref().map(str::to_owned),
            )
        }))
    }

    fn checked_head(json: &str) -> Result<IdAndMessage, PayloadError> {
        let event: CheckedHead<'_> = from_json(PROVIDER, json)?;
        Ok(event.head_commit.map(|c| {
            (
                c.id.as_deref().map(str::to_owned),
                c.message.as_deref().map(str::to_owned),
            )
        }))
    }

    fn kept(json: &str) -> Result<ChangedFiles, PayloadError> {
        let event: KeptCommits<'_> = from_json(PROVIDER, json)?;
        let commits = event.commits.unwrap_or_default();
        let complete = commits.len() < GITHUB_COMMIT_CAP;
        Ok(changed_files(commits, complete))
    }

    fn folded(json: &str) -> Result<ChangedFiles, PayloadError> {
        let event: FoldedCommits = from_json(PROVIDER, json)?;
        let commits = event.commits.unwrap_or_default();
        Ok(commits.files.finish(commits.count < GITHUB_COMMIT_CAP))
    }

    #[test]
    fn folded_commits_read_as_kept_ones() {
        let commit = |extra: Value| {
            let mut c = json!({"id": "a1", "message": "m\n\"quoted\"", "tree_id": "t", "author": {"name": "x"},
                               "added": ["a", "b"], "modified": ["c"], "removed": []});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        let many: Vec<Value> = (0..GITHUB_COMMIT_CAP)
            .map(|i| json!({"added": [format!("f{i}")]}))
            .collect();
        let bodies: Vec<String> = [
            json!({}),
            json!({"commits": null}),
            json!({"commits": []}),
            json!({"commits": [commit(json!({}))]}),
            json!({"commits": [commit(json!({})), commit(json!({"added": ["b", "z", ""], "modified": null}))]}),
            json!({"commits": [commit(json!({})), {"id": "x"}]}),
            json!({"commits": [{"added": ["a\\u00e9\n"], "removed": ["a\\u00e9\n"]}]}),
            json!({"commits": [{"added": []}]}),
            json!({"commits": [{"id": null, "message": null, "added": ["x"]}]}),
            json!({"commits": [["id", "message", ["x"], null, ["y"]]]}),
            json!({"commits": [["id", "message", ["x"]]]}),
            json!({"commits": [["id", 5, ["x"], null, ["y"]]]}),
            json!({"commits": many[..GITHUB_COMMIT_CAP - 1]}),
            json!({"commits": many}),
            json!({"commits": 5}),
            json!({"commits": "x"}),
            json!({"commits": {}}),
            json!({"commits": [1]}),
            json!({"commits": [null]}),
            json!({"commits": [[]]}),
            json!({"commits": [commit(json!({"id": 5}))]}),
            json!({"commits": [commit(json!({"message": 5}))]}),
            json!({"commits": [commit(json!({"message": ["m"]}))]}),
            json!({"commits": [commit(json!({"message": {"m": 1}}))]}),
            json!({"commits": [commit(json!({"added": "x"}))]}),
            json!({"commits": [commit(json!({"added": [1]}))]}),
            json!({"commits": [commit(json!({"removed": [null]}))]}),
            json!({"commits": [commit(json!({"modified": {}}))]}),
        ]
        .iter()
        .map(Value::to_string)
        .chain([
            // What a `Value` cannot hold: duplicate keys, bad escapes, truncation.
            r#"{"commits": [{"added": ["a"], "added": ["b"]}]}"#.to_owned(),
            r#"{"commits": [{"id": "a", "id": "b"}]}"#.to_owned(),
            r#"{"commits": [{"message": "a", "message": "b"}]}"#.to_owned(),
            r#"{"commits": [{"added": null, "added": ["x"]}]}"#.to_owned(),
            r#"{"commits": [{"zzz": 1, "removed": ["a", "", "b"], "zzz": 2}, {"modified": ["b"]}]}"#.to_owned(),
            r#"{"commits": [["i", null, null, null, null]]}"#.to_owned(),
            r#"{"commits": [["i", "m", ["a"], ["b"], ["c"], "extra"]]}"#.to_owned(),
            r#"{"commits": [["i", "m", ["a"], ["b"], ["c"]], {"id": "x", "added": ["d"]}]}"#.to_owned(),
            r#"{"commits": [{"message": "bad \x escape"}]}"#.to_owned(),
            r#"{"commits": [{"message": "bad \ud800 surrogate"}]}"#.to_owned(),
            r#"{"commits": [{"added": ["a"]}"#.to_owned(),
            r#"{"commits": [{"added": ["a"]},]}"#.to_owned(),
            r#"{"commits": [{"message": "a"} {"added": []}]}"#.to_owned(),
        ])
        .collect();
        let (mut heads, mut head_errors) = (0, 0);
        for body in &bodies {
            // The same values as `head_commit`: `{"commits": [c, …]}` → `{"head_commit": c}`.
            let Some(inner) = body
                .split_once('[')
                .and_then(|(_, rest)| rest.rsplit_once(']'))
                .map(|(inner, _)| inner)
            else {
                continue;
            };
            let head = format!(r#"{{"head_commit": {inner}}}"#);
            let result = checked_head(&head);
            assert_eq!(result, kept_head(&head), "{head}");
            heads += usize::from(matches!(result, Ok(Some(_))));
            head_errors += usize::from(result.is_err());
        }
        assert!(heads >= 8 && head_errors >= 15, "{heads} {head_errors}");

        let (mut known, mut errors) = (0, 0);
        for body in &bodies {
            let result = folded(body);
            assert_eq!(result, kept(body), "{body}");
            known += usize::from(matches!(result, Ok(ChangedFiles::Known(_))));
            errors += usize::from(result.is_err());
        }
        // Both sides of the comparison are exercised.
        assert_eq!((known, errors), (9, 24), "{bodies:#?}");
    }
}
