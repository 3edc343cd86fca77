use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../../tests/fixtures/webhooks/", $path)).as_slice()
    };
}

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn parse(provider: GitProvider, pairs: &[(&str, &str)], body: &[u8]) -> Delivery {
    parse_delivery(provider, &headers(pairs), body).unwrap()
}

fn pushes(delivery: Delivery) -> Vec<Push> {
    match delivery {
        Delivery::Pushes(pushes) => pushes,
        other => panic!("expected pushes, got {other:?}"),
    }
}

fn one_push(provider: GitProvider, pairs: &[(&str, &str)], body: &[u8]) -> Push {
    let mut all = pushes(parse(provider, pairs, body));
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn ignored(provider: GitProvider, pairs: &[(&str, &str)], body: &[u8]) -> IgnoredReason {
    match parse(provider, pairs, body) {
        Delivery::Ignored(reason) => reason,
        other => panic!("expected an ignored delivery, got {other:?}"),
    }
}

fn files(paths: &[&str]) -> ChangedFiles {
    ChangedFiles::Known(paths.iter().collect())
}

fn urls(list: &[&str]) -> Vec<String> {
    list.iter().map(|u| u.to_string()).collect()
}

/// A fixture as a JSON value, to derive variants of it.
fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

const ZEROS: &str = "0000000000000000000000000000000000000000";

// ---------------------------------------------------------------------------------------------
// GitHub

const GH_PUSH: &[(&str, &str)] = &[("X-GitHub-Event", "push")];

#[test]
fn github_push() {
    let push = one_push(GitProvider::Github, GH_PUSH, fixture!("github/gp-push.json"));
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "https://github.com/binkkatal/sample_app.git",
                "git@github.com:binkkatal/sample_app.git",
                "git://github.com/binkkatal/sample_app.git",
                "https://github.com/binkkatal/sample_app",
            ]),
            branch: "master".into(),
            before: "737d38c599c1b2991664dfc6155d6bf516fcce36".into(),
            after: "fd489864e7642b48eaad6e3f155c10e46810ec72".into(),
            files: files(&[".razorops.yaml", "app/controllers/application_controller.rb"]),
            head_commit_message: Some("test a push event".into()),
            pusher: Some("binkkatal".into()),
        }
    );
    assert!(!push.has_skip_marker());
}

#[test]
fn github_new_branch_pushes() {
    for body in [
        fixture!("github/ok-push-with-new-branch.payload.json"),
        fixture!("github/ok-push-with-no-username-committer.payload.json"),
    ] {
        let push = one_push(GitProvider::Github, GH_PUSH, body);
        assert_eq!(push.branch, "master");
        assert_eq!(push.before, ZEROS);
        assert_eq!(push.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert_eq!(push.files, files(&["README.md"]));
        assert_eq!(push.head_commit_message.as_deref(), Some("Initial commit"));
        assert_eq!(push.pusher.as_deref(), Some("Codertocat"));
        assert_eq!(
            push.repository_urls,
            urls(&[
                "https://github.com/Codertocat/Hello-World.git",
                "git@github.com:Codertocat/Hello-World.git",
                "git://github.com/Codertocat/Hello-World.git",
                "https://github.com/Codertocat/Hello-World",
            ])
        );
    }
}

#[test]
fn github_tag_deletions_are_tag_pushes() {
    for body in [
        fixture!("github/ok-push-payload.json"),
        fixture!("github/ok-push-1.payload.json"),
        fixture!("github/ok-push-with-organization.payload.json"),
    ] {
        assert_eq!(ignored(GitProvider::Github, GH_PUSH, body), IgnoredReason::TagPush);
    }
}

#[test]
fn github_pings() {
    for body in [fixture!("github/gp-ping.json"), fixture!("github/ok-ping-payload.json")] {
        let reason = ignored(GitProvider::Github, &[("X-GitHub-Event", "ping")], body);
        assert_eq!(reason, IgnoredReason::Ping);
    }
}

#[test]
fn github_create_and_delete_events() {
    let create = [("X-GitHub-Event", "create")];
    assert_eq!(
        ignored(GitProvider::Github, &create, fixture!("github/gp-create.json")),
        IgnoredReason::UnsupportedEvent
    );
    // Both fixtures delete a tag.
    let delete = [("X-GitHub-Event", "delete")];
    for body in [
        fixture!("github/gp-delete.json"),
        fixture!("github/ok-delete-payload.json"),
    ] {
        assert_eq!(ignored(GitProvider::Github, &delete, body), IgnoredReason::TagPush);
    }
    let mut branch = value(fixture!("github/gp-delete.json"));
    branch["ref_type"] = json!("branch");
    branch["ref"] = json!("feature/x");
    assert_eq!(
        ignored(GitProvider::Github, &delete, &bytes(&branch)),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn github_other_events_are_unsupported() {
    let reason = ignored(
        GitProvider::Github,
        &[("X-GitHub-Event", "issues")],
        fixture!("github/gp-push.json"),
    );
    assert_eq!(reason, IgnoredReason::UnsupportedEvent);
}

#[test]
fn github_branch_deletion() {
    let mut body = value(fixture!("github/gp-push.json"));
    body["deleted"] = json!(true);
    assert_eq!(
        ignored(GitProvider::Github, GH_PUSH, &bytes(&body)),
        IgnoredReason::BranchDeleted
    );
    let mut body = value(fixture!("github/gp-push.json"));
    body["after"] = json!(ZEROS);
    body.as_object_mut().unwrap().remove("deleted");
    assert_eq!(
        ignored(GitProvider::Github, GH_PUSH, &bytes(&body)),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn github_non_branch_ref_is_unsupported() {
    let mut body = value(fixture!("github/gp-push.json"));
    body["ref"] = json!("refs/pull/1/head");
    assert_eq!(
        ignored(GitProvider::Github, GH_PUSH, &bytes(&body)),
        IgnoredReason::UnsupportedEvent
    );
}

#[test]
fn github_new_branch_without_commits_deploys_its_head_with_unknown_files() {
    let mut body = value(fixture!("github/ok-push-with-new-branch.payload.json"));
    body["commits"] = json!([]);
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(push.files, ChangedFiles::Unknown);

    // Without `after`, the head commit names the commit to deploy.
    body.as_object_mut().unwrap().remove("after");
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
}

#[test]
fn github_empty_commit_has_unknown_files() {
    let mut body = value(fixture!("github/gp-push.json"));
    for list in ["added", "modified", "removed"] {
        body["commits"][0][list] = json!([]);
    }
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.files, ChangedFiles::Unknown);
}

#[test]
fn changed_paths_are_kept_as_listed_and_compared_as_a_set() {
    let listed: ChangedPaths = ["b/c.rs", "a", "b/c.rs"].into_iter().collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), ["b/c.rs", "a", "b/c.rs"]);
    assert_eq!(listed.distinct(), BTreeSet::from(["a", "b/c.rs"]));
    assert_eq!(listed, ["a", "b/c.rs"].into_iter().collect());
    assert_ne!(listed, ["a"].into_iter().collect());
    assert!(listed.contains("a") && listed.contains("b/c.rs") && !listed.contains("b"));
    assert_eq!(format!("{listed:?}"), r#"{"a", "b/c.rs"}"#);
    assert!(ChangedPaths::default().is_empty() && !listed.is_empty());
}

#[test]
fn github_commit_cap_makes_files_unknown() {
    let commits = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("{i:040x}"), "message": "m", "added": [format!("f{i}")], "modified": [], "removed": []}))
            .collect()
    };
    let mut body = value(fixture!("github/gp-push.json"));
    body["commits"] = json!(commits(GITHUB_COMMIT_CAP));
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.files, ChangedFiles::Unknown);

    body["commits"] = json!(commits(GITHUB_COMMIT_CAP - 1));
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    match push.files {
        ChangedFiles::Known(set) => assert_eq!(set.distinct().len(), GITHUB_COMMIT_CAP - 1),
        ChangedFiles::Unknown => panic!("2047 commits are all the commits"),
    }
}

#[test]
fn github_files_union_over_commits() {
    let mut body = value(fixture!("github/gp-push.json"));
    body["commits"] = json!([
        {"id": "a", "added": ["a.txt", "b/c.rs"], "modified": [], "removed": ["old"]},
        {"id": "b", "added": [], "modified": ["a.txt", "README.md"], "removed": []},
    ]);
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.files, files(&["README.md", "a.txt", "b/c.rs", "old"]));
}

#[test]
fn github_api_url_is_not_a_repository_url() {
    let mut body = value(fixture!("github/gp-push.json"));
    body["repository"]["url"] = json!("https://api.github.com/repos/binkkatal/sample_app");
    body["repository"]["html_url"] = json!(null);
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(
        push.repository_urls,
        urls(&[
            "https://github.com/binkkatal/sample_app.git",
            "git@github.com:binkkatal/sample_app.git",
            "git://github.com/binkkatal/sample_app.git",
        ])
    );
    body["repository"]["url"] = json!("https://ghe.example.com/api/v3/repos/a/b");
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.repository_urls.len(), 3);
}

#[test]
fn github_pusher_falls_back_to_sender() {
    let mut body = value(fixture!("github/gp-push.json"));
    body.as_object_mut().unwrap().remove("pusher");
    body["sender"]["login"] = json!("octo");
    let push = one_push(GitProvider::Github, GH_PUSH, &bytes(&body));
    assert_eq!(push.pusher.as_deref(), Some("octo"));
}

fn form_body(json: &[u8]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(json).unwrap())
        .finish()
        .into_bytes()
}

#[test]
fn github_form_encoded_body() {
    let json_body = fixture!("github/gp-push.json");
    let form = form_body(json_body);
    let signature = format!("sha256={}", hmac_hex(SECRET, &form));
    let pairs = [
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    // The signature covers the form as sent.
    assert_eq!(
        verify_signature(GitProvider::Github, &headers(&pairs), &form, SECRET),
        Ok(())
    );
    assert_eq!(
        parse(GitProvider::Github, &pairs, &form),
        parse(GitProvider::Github, GH_PUSH, json_body)
    );
    // Without the content type (a proxy dropped it), the form is still recognized.
    assert_eq!(
        parse(GitProvider::Github, GH_PUSH, &form),
        parse(GitProvider::Github, GH_PUSH, json_body)
    );
    // JSON labelled as a form (curl's `--data-binary` without a content type, a proxy) is
    // read as the JSON it is.
    assert_eq!(
        parse(GitProvider::Github, &pairs, json_body),
        parse(GitProvider::Github, GH_PUSH, json_body)
    );
    // A form without `payload`.
    let err = parse_delivery(GitProvider::Github, &headers(&pairs), b"something=else&more=1").unwrap_err();
    assert_eq!(err, PayloadError::MissingFormPayload);
    // The ping arrives form-encoded too.
    let ping = form_body(fixture!("github/gp-ping.json"));
    let pairs = [
        ("X-GitHub-Event", "ping"),
        ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
    ];
    assert_eq!(ignored(GitProvider::Github, &pairs, &ping), IgnoredReason::Ping);
}

// ---------------------------------------------------------------------------------------------
// GitLab

const GL_PUSH: &[(&str, &str)] = &[("X-Gitlab-Event", "Push Hook")];

#[test]
fn gitlab_push_with_truncated_commits() {
    let push = one_push(GitProvider::Gitlab, GL_PUSH, fixture!("gitlab/gp-push-event.json"));
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "http://example.com/mike/diaspora.git",
                "git@example.com:mike/diaspora.git",
                "http://example.com/mike/diaspora",
            ]),
            branch: "master".into(),
            before: "95790bf891e76fee5e1747ab589903a6a1f80f22".into(),
            after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
            // 4 commits pushed, 2 sent.
            files: ChangedFiles::Unknown,
            head_commit_message: Some("fixed readme".into()),
            pusher: Some("John Smith".into()),
        }
    );
}

#[test]
fn gitlab_push_with_every_commit() {
    let mut body = value(fixture!("gitlab/gp-push-event.json"));
    body["total_commits_count"] = json!(2);
    body["user_username"] = json!("jsmith");
    let push = one_push(GitProvider::Gitlab, GL_PUSH, &bytes(&body));
    assert_eq!(push.files, files(&["CHANGELOG", "app/controller/application.rb"]));
    assert_eq!(push.pusher.as_deref(), Some("jsmith"));
    // Without the count, the list cannot be known to be whole.
    body.as_object_mut().unwrap().remove("total_commits_count");
    let push = one_push(GitProvider::Gitlab, GL_PUSH, &bytes(&body));
    assert_eq!(push.files, ChangedFiles::Unknown);
}

#[test]
fn gitlab_system_hook_push() {
    let system = [("X-Gitlab-Event", "System Hook")];
    let push = one_push(
        GitProvider::Gitlab,
        &system,
        fixture!("gitlab/gp-system-push-event.json"),
    );
    assert_eq!(push.branch, "master");
    assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    // System hooks list commits without their files.
    assert_eq!(push.files, ChangedFiles::Unknown);
    assert_eq!(push.repository_urls.len(), 3);

    assert_eq!(
        ignored(GitProvider::Gitlab, &system, fixture!("gitlab/gp-tag-event.json")),
        IgnoredReason::TagPush
    );
    let other = br#"{"event_name": "project_create", "ref": 3}"#;
    assert_eq!(
        ignored(GitProvider::Gitlab, &system, other),
        IgnoredReason::UnsupportedEvent
    );
}

#[test]
fn gitlab_tag_push() {
    let tag = fixture!("gitlab/gp-tag-event.json");
    assert_eq!(
        ignored(GitProvider::Gitlab, &[("X-Gitlab-Event", "Tag Push Hook")], tag),
        IgnoredReason::TagPush
    );
    // Told by the ref even under the wrong header.
    assert_eq!(ignored(GitProvider::Gitlab, GL_PUSH, tag), IgnoredReason::TagPush);
}

#[test]
fn gitlab_branch_deletion_and_other_events() {
    let mut body = value(fixture!("gitlab/gp-push-event.json"));
    body["after"] = json!(ZEROS);
    assert_eq!(
        ignored(GitProvider::Gitlab, GL_PUSH, &bytes(&body)),
        IgnoredReason::BranchDeleted
    );
    assert_eq!(
        ignored(
            GitProvider::Gitlab,
            &[("X-Gitlab-Event", "Merge Request Hook")],
            fixture!("gitlab/gp-push-event.json")
        ),
        IgnoredReason::UnsupportedEvent
    );
}

// ---------------------------------------------------------------------------------------------
// Bitbucket Cloud

const BB_PUSH: &[(&str, &str)] = &[("X-Event-Key", "repo:push")];

#[test]
fn bitbucket_push() {
    let push = one_push(
        GitProvider::Bitbucket,
        BB_PUSH,
        fixture!("bitbucket-cloud/gp-repo-push.json"),
    );
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "https://api.bitbucket.org/bitbucket/bitbucket",
                "https://bitbucket.org/team_name/repo_name",
            ]),
            branch: "name-of-branch".into(),
            before: "1e65c05c1d5171631d92438a13901ca7dae9618c".into(),
            after: "709d658dc5b6d6afcd46049c2f332ee3f515a67d".into(),
            files: ChangedFiles::Unknown,
            head_commit_message: Some("new commit message\n".into()),
            pusher: Some("emmap1".into()),
        }
    );
}

#[test]
fn bitbucket_multi_branch_push() {
    let base = value(fixture!("bitbucket-cloud/gp-repo-push.json"));
    let update = base["push"]["changes"][0].clone();
    let mut created = update.clone();
    created["old"] = Value::Null;
    created["new"]["name"] = json!("feature/new");
    let mut tag = update.clone();
    tag["new"]["type"] = json!("tag");
    let mut deleted = update.clone();
    deleted["new"] = Value::Null;
    deleted["old"]["name"] = json!("old-branch");
    let mut tag_deleted = deleted.clone();
    tag_deleted["old"]["type"] = json!("annotated_tag");

    let with_changes = |changes: Vec<&Value>| {
        let mut body = base.clone();
        body["push"]["changes"] = json!(changes);
        bytes(&body)
    };

    let all = pushes(parse(
        GitProvider::Bitbucket,
        BB_PUSH,
        &with_changes(vec![&tag, &update, &deleted, &created]),
    ));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].branch, "name-of-branch");
    assert_eq!(all[1].branch, "feature/new");
    assert_eq!(all[1].before, ZEROS);
    assert_eq!(all[1].after, "709d658dc5b6d6afcd46049c2f332ee3f515a67d");

    let only = |changes| ignored(GitProvider::Bitbucket, BB_PUSH, &with_changes(changes));
    assert_eq!(only(vec![&tag, &deleted]), IgnoredReason::TagPush);
    assert_eq!(only(vec![&deleted, &tag]), IgnoredReason::BranchDeleted);
    assert_eq!(only(vec![&tag_deleted]), IgnoredReason::TagPush);
    assert_eq!(only(vec![]), IgnoredReason::UnsupportedEvent);
}

/// A Bitbucket Cloud change of `branch` from `before` to `after` (`None`: deleted).
fn bitbucket_change(branch: &str, before: &str, after: Option<&str>) -> Value {
    let side = |hash: &str| json!({"type": "branch", "name": branch, "target": {"hash": hash, "message": hash}});
    json!({"old": side(before), "new": after.map(side)})
}

fn bitbucket_body(changes: Vec<Value>) -> Vec<u8> {
    let mut body = value(fixture!("bitbucket-cloud/gp-repo-push.json"));
    body["push"]["changes"] = json!(changes);
    bytes(&body)
}

#[test]
fn one_push_per_branch_the_last_change_wins() {
    let sha = |c: char| c.to_string().repeat(40);
    let (a, b, c, d) = (sha('a'), sha('b'), sha('c'), sha('d'));
    // main three times, develop once between: two pushes, main where it was first named.
    let body = bitbucket_body(vec![
        bitbucket_change("main", &a, Some(&b)),
        bitbucket_change("develop", &a, Some(&d)),
        bitbucket_change("main", &b, Some(&c)),
        bitbucket_change("main", &c, Some(&d)),
    ]);
    let all = pushes(parse(GitProvider::Bitbucket, BB_PUSH, &body));
    let summary: Vec<_> = all
        .iter()
        .map(|p| (p.branch.as_str(), p.before.as_str(), p.after.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![("main", c.as_str(), d.as_str()), ("develop", a.as_str(), d.as_str())]
    );
    assert_eq!(all[0].head_commit_message.as_deref(), Some(d.as_str()));

    // A deletion after an update drops the branch; an update after a deletion brings it back.
    let body = bitbucket_body(vec![
        bitbucket_change("main", &a, Some(&b)),
        bitbucket_change("main", &b, None),
    ]);
    assert_eq!(
        ignored(GitProvider::Bitbucket, BB_PUSH, &body),
        IgnoredReason::BranchDeleted
    );
    let body = bitbucket_body(vec![
        bitbucket_change("main", &a, None),
        bitbucket_change("main", &a, Some(&c)),
    ]);
    assert_eq!(one_push(GitProvider::Bitbucket, BB_PUSH, &body).after, c);

    // Thousands of changes of one branch are one push.
    let many = (0..2000)
        .map(|i| bitbucket_change("main", &a, Some(&format!("{i:040}"))))
        .collect();
    let push = one_push(GitProvider::Bitbucket, BB_PUSH, &bitbucket_body(many));
    assert_eq!(push.after, format!("{:040}", 1999));
}

#[test]
fn the_same_rule_holds_for_every_multi_branch_provider() {
    let sha = |c: char| c.to_string().repeat(40);
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    let mut azure = value(fixture!("azure-devops/gp-git.push.json"));
    azure["resource"]["refUpdates"] = json!([
        {"name": "refs/heads/main", "oldObjectId": a, "newObjectId": b},
        {"name": "refs/heads/main", "oldObjectId": b, "newObjectId": c},
    ]);
    let push = one_push(GitProvider::AzureDevops, &[], &bytes(&azure));
    assert_eq!((push.before.as_str(), push.after.as_str()), (b.as_str(), c.as_str()));

    let mut server = value(fixture!("bitbucket-server/gp-repo-refs-changed.json"));
    let change = |from: &str, to: &str, kind: &str| {
        json!({"ref": {"id": "refs/heads/main", "type": "BRANCH"}, "refId": "refs/heads/main",
               "fromHash": from, "toHash": to, "type": kind})
    };
    server["changes"] = json!([change(&a, &b, "UPDATE"), change(&b, &c, "UPDATE")]);
    let push = one_push(GitProvider::BitbucketServer, BBS_PUSH, &bytes(&server));
    assert_eq!((push.before.as_str(), push.after.as_str()), (b.as_str(), c.as_str()));
    server["changes"] = json!([change(&a, &b, "UPDATE"), change(&b, ZEROS, "DELETE")]);
    assert_eq!(
        ignored(GitProvider::BitbucketServer, BBS_PUSH, &bytes(&server)),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn a_delivery_naming_too_many_branches_is_refused() {
    let sha = "a".repeat(40);
    let changes = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| bitbucket_change(&format!("b{i}"), &sha, Some(&sha)))
            .collect()
    };
    let all = pushes(parse(
        GitProvider::Bitbucket,
        BB_PUSH,
        &bitbucket_body(changes(MAX_BRANCHES_PER_DELIVERY)),
    ));
    assert_eq!(all.len(), MAX_BRANCHES_PER_DELIVERY);
    // Naming a branch again does not count twice.
    let mut again = changes(MAX_BRANCHES_PER_DELIVERY);
    again.extend(changes(MAX_BRANCHES_PER_DELIVERY));
    assert!(parse_delivery(GitProvider::Bitbucket, &headers(BB_PUSH), &bitbucket_body(again)).is_ok());

    let err = parse_delivery(
        GitProvider::Bitbucket,
        &headers(BB_PUSH),
        &bitbucket_body(changes(MAX_BRANCHES_PER_DELIVERY + 1)),
    )
    .unwrap_err();
    assert_eq!(err, PayloadError::TooManyBranches { max: 100 });
    assert_eq!(
        err.to_string(),
        "the delivery names more than 100 branches; at most 100 are read from one delivery"
    );
    // Deleted branches are named too.
    let mut body = value(fixture!("azure-devops/gp-git.push.json"));
    let updates: Vec<Value> = (0..=MAX_BRANCHES_PER_DELIVERY)
        .map(|i| json!({"name": format!("refs/heads/b{i}"), "oldObjectId": sha, "newObjectId": ZEROS}))
        .collect();
    body["resource"]["refUpdates"] = json!(updates);
    assert!(matches!(
        parse_delivery(GitProvider::AzureDevops, &HeaderMap::new(), &bytes(&body)),
        Err(PayloadError::TooManyBranches { .. })
    ));
}

#[test]
fn bitbucket_other_events() {
    let body = fixture!("bitbucket-cloud/gp-repo-push.json");
    let ping = [("X-Event-Key", "diagnostics:ping")];
    assert_eq!(ignored(GitProvider::Bitbucket, &ping, body), IgnoredReason::Ping);
    let pr = [("X-Event-Key", "pullrequest:created")];
    assert_eq!(
        ignored(GitProvider::Bitbucket, &pr, body),
        IgnoredReason::UnsupportedEvent
    );
}

#[test]
fn bitbucket_repository_without_links() {
    let mut body = value(fixture!("bitbucket-cloud/gp-repo-push.json"));
    body["repository"].as_object_mut().unwrap().remove("links");
    let push = one_push(GitProvider::Bitbucket, BB_PUSH, &bytes(&body));
    assert_eq!(
        push.repository_urls,
        urls(&["https://bitbucket.org/team_name/repo_name"])
    );
}

// ---------------------------------------------------------------------------------------------
// Bitbucket Server

const BBS_PUSH: &[(&str, &str)] = &[("X-Event-Key", "repo:refs_changed")];

#[test]
fn bitbucket_server_fixture_deletes_a_branch() {
    let body = fixture!("bitbucket-server/gp-repo-refs-changed.json");
    assert_eq!(
        ignored(GitProvider::BitbucketServer, BBS_PUSH, body),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn bitbucket_server_push() {
    let mut body = value(fixture!("bitbucket-server/gp-repo-refs-changed.json"));
    let deleted = body["changes"][0].clone();
    let mut updated = deleted.clone();
    updated["type"] = json!("UPDATE");
    updated["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
    let mut tag = updated.clone();
    tag["ref"]["type"] = json!("TAG");
    tag["ref"]["id"] = json!("refs/tags/v1");
    tag["refId"] = json!("refs/tags/v1");
    body["changes"] = json!([deleted, tag, updated]);
    let push = one_push(GitProvider::BitbucketServer, BBS_PUSH, &bytes(&body));
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "ssh://git@server.bitbucket.local:7999/~gopher/webhook-test.git",
                "https://server.bitbucket.local/scm/~gopher/webhook-test.git",
                "https://server.bitbucket.local/users/gopher/repos/webhook-test",
                "https://server.bitbucket.local/scm/~gopher/webhook-test",
            ]),
            branch: "feature/wip".into(),
            before: "32a0b8a740c2963c6f56bd8baf3dc05683d299e0".into(),
            after: "a00945762949b7787ecabc388c0e20b1b85f0364".into(),
            files: ChangedFiles::Unknown,
            head_commit_message: None,
            pusher: Some("gopher".into()),
        }
    );
    body["changes"] = json!([tag]);
    assert_eq!(
        ignored(GitProvider::BitbucketServer, BBS_PUSH, &bytes(&body)),
        IgnoredReason::TagPush
    );
}

#[test]
fn bitbucket_server_web_link_forms() {
    assert_eq!(
        bitbucket_server::web_link_forms("https://bb.example.com/context/projects/PROJ/repos/my-repo/browse"),
        urls(&[
            "https://bb.example.com/context/projects/PROJ/repos/my-repo",
            "https://bb.example.com/context/scm/proj/my-repo",
        ])
    );
    assert_eq!(
        bitbucket_server::web_link_forms("https://bb.example.com/somewhere/else"),
        urls(&["https://bb.example.com/somewhere/else"])
    );
}

#[test]
fn bitbucket_server_ping() {
    assert_eq!(
        ignored(
            GitProvider::BitbucketServer,
            &[("X-Event-Key", "diagnostics:ping")],
            br#"{"test": true}"#
        ),
        IgnoredReason::Ping
    );
}

// ---------------------------------------------------------------------------------------------
// Gitea, Forgejo, Gogs

#[test]
fn gitea_push() {
    let push = one_push(
        GitProvider::Gitea,
        &[("X-Gitea-Event", "push")],
        fixture!("gitea/gp-push-event.json"),
    );
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "http://localhost:3000/example/example.git",
                "git@localhost:example/example.git",
                "http://localhost:3000/example/example",
            ]),
            branch: "master".into(),
            before: ZEROS.into(),
            after: "67b56589a45103f891bdee7c0546e5d40bc02001".into(),
            files: files(&["example"]),
            head_commit_message: Some("example\n".into()),
            pusher: Some("example".into()),
        }
    );
    // Forgejo names its headers after itself.
    let forgejo = one_push(
        GitProvider::Gitea,
        &[("X-Forgejo-Event", "push")],
        fixture!("gitea/gp-push-event.json"),
    );
    assert_eq!(forgejo, push);
}

#[test]
fn gitea_truncated_commits() {
    let mut body = value(fixture!("gitea/gp-push-event.json"));
    body["total_commits"] = json!(12);
    let push = one_push(GitProvider::Gitea, &[("X-Gitea-Event", "push")], &bytes(&body));
    assert_eq!(push.files, ChangedFiles::Unknown);
    body["total_commits"] = json!(1);
    let push = one_push(GitProvider::Gitea, &[("X-Gitea-Event", "push")], &bytes(&body));
    assert_eq!(push.files, files(&["example"]));
}

/// Without `total_commits` (Gogs never sends it), a list as long as the default cap of five
/// may have been cut: its files are not known to be all.
#[test]
fn gitea_and_gogs_lists_at_their_cap_without_a_total() {
    let mut body = value(fixture!("gitea/gp-push-event.json"));
    body.as_object_mut().unwrap().remove("total_commits");
    let commit = body["commits"][0].clone();
    for (count, known) in [(1, true), (4, true), (5, false), (6, false)] {
        let commits: Vec<Value> = (0..count)
            .map(|i| {
                let mut c = commit.clone();
                c["added"] = json!([format!("f{i}")]);
                c
            })
            .collect();
        body["commits"] = json!(commits);
        for (provider, header) in [
            (GitProvider::Gitea, "X-Gitea-Event"),
            (GitProvider::Gogs, "X-Gogs-Event"),
        ] {
            let push = one_push(provider, &[(header, "push")], &bytes(&body));
            assert_eq!(
                push.files.is_known(),
                known,
                "{provider:?} {count} commits: {:?}",
                push.files
            );
        }
    }
    // A total that says the list is whole is believed, at the cap too.
    body["total_commits"] = json!(6);
    let push = one_push(GitProvider::Gitea, &[("X-Gitea-Event", "push")], &bytes(&body));
    assert!(push.files.is_known());
}

#[test]
fn gitea_delete_and_create() {
    let body = fixture!("gitea/gp-delete-event.json");
    assert_eq!(
        ignored(GitProvider::Gitea, &[("X-Gitea-Event", "delete")], body),
        IgnoredReason::BranchDeleted
    );
    assert_eq!(
        ignored(GitProvider::Gitea, &[("X-Forgejo-Event", "delete")], body),
        IgnoredReason::BranchDeleted
    );
    assert_eq!(
        ignored(GitProvider::Gitea, &[("X-Gitea-Event", "create")], body),
        IgnoredReason::UnsupportedEvent
    );
    let mut tag = value(body);
    tag["ref_type"] = json!("tag");
    assert_eq!(
        ignored(GitProvider::Gitea, &[("X-Gitea-Event", "delete")], &bytes(&tag)),
        IgnoredReason::TagPush
    );
    // A push that deletes the branch.
    let mut push = value(fixture!("gitea/gp-push-event.json"));
    push["after"] = json!(ZEROS);
    assert_eq!(
        ignored(GitProvider::Gitea, &[("X-Gitea-Event", "push")], &bytes(&push)),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn gogs_push() {
    let push = one_push(
        GitProvider::Gogs,
        &[("X-Gogs-Event", "push")],
        fixture!("gogs/gp-push-event.json"),
    );
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "http://localhost:3000/unknwon/webhooks.git",
                "ssh://unknwon@localhost:2222/unknwon/webhooks.git",
                "http://localhost:3000/unknwon/webhooks",
            ]),
            branch: "develop".into(),
            before: "28e1879d029cb852e4844d9c718537df08844e03".into(),
            after: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
            // This Gogs version lists no files.
            files: ChangedFiles::Unknown,
            head_commit_message: Some("Add new feature".into()),
            pusher: Some("unknwon".into()),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Azure DevOps

#[test]
fn azure_push() {
    let push = one_push(GitProvider::AzureDevops, &[], fixture!("azure-devops/gp-git.push.json"));
    assert_eq!(
        push,
        Push {
            repository_urls: urls(&[
                "https://dev.azure.com/fabrikam-fiber-inc/DefaultCollection/_git/Fabrikam-Fiber-Git"
            ]),
            branch: "main".into(),
            before: "aad331d8d3b131fa9ae03cf5e53965b51942618a".into(),
            after: "33b55f7cb7e7e245323987634f960cf4a6e6bc74".into(),
            files: ChangedFiles::Unknown,
            head_commit_message: Some("Fixed bug in web.config file".into()),
            pusher: Some("Windows Live ID\\fabrikamfiber4@hotmail.com".into()),
        }
    );
}

#[test]
fn azure_multi_branch_push() {
    let mut body = value(fixture!("azure-devops/gp-git.push.json"));
    body["resource"]["refUpdates"] = json!([
        {"name": "refs/tags/v2", "oldObjectId": ZEROS, "newObjectId": "1111111111111111111111111111111111111111"},
        {"name": "refs/heads/main", "oldObjectId": "aad331d8d3b131fa9ae03cf5e53965b51942618a", "newObjectId": "33b55f7cb7e7e245323987634f960cf4a6e6bc74"},
        {"name": "refs/heads/old", "oldObjectId": "aad331d8d3b131fa9ae03cf5e53965b51942618a", "newObjectId": ZEROS},
        {"name": "refs/heads/release/1", "oldObjectId": ZEROS, "newObjectId": "2222222222222222222222222222222222222222"},
    ]);
    body["resource"]["repository"]["sshUrl"] =
        json!("git@ssh.dev.azure.com:v3/fabrikam-fiber-inc/DefaultCollection/Fabrikam-Fiber-Git");
    let all = pushes(parse(GitProvider::AzureDevops, &[], &bytes(&body)));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].branch, "main");
    assert_eq!(
        all[0].head_commit_message.as_deref(),
        Some("Fixed bug in web.config file")
    );
    assert_eq!(all[1].branch, "release/1");
    assert_eq!(all[1].before, ZEROS);
    assert_eq!(all[1].head_commit_message, None);
    assert_eq!(all[1].repository_urls.len(), 2);

    body["resource"]["refUpdates"] = json!([
        {"name": "refs/heads/old", "oldObjectId": "aad331d8d3b131fa9ae03cf5e53965b51942618a", "newObjectId": ZEROS},
        {"name": "refs/tags/v2", "oldObjectId": ZEROS, "newObjectId": "1111111111111111111111111111111111111111"},
    ]);
    assert_eq!(
        ignored(GitProvider::AzureDevops, &[], &bytes(&body)),
        IgnoredReason::BranchDeleted
    );
}

#[test]
fn azure_other_events() {
    let mut body = value(fixture!("azure-devops/gp-git.push.json"));
    body["eventType"] = json!("git.pullrequest.created");
    body["resource"] = json!({"commits": "not the push's shape"});
    assert_eq!(
        ignored(GitProvider::AzureDevops, &[], &bytes(&body)),
        IgnoredReason::UnsupportedEvent
    );
    body.as_object_mut().unwrap().remove("eventType");
    assert!(matches!(
        parse_delivery(GitProvider::AzureDevops, &HeaderMap::new(), &bytes(&body)),
        Err(PayloadError::WrongShape { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Events and malformed bodies

#[test]
fn missing_event_header_is_a_payload_error() {
    let cases = [
        (GitProvider::Github, "X-GitHub-Event"),
        (GitProvider::Gitlab, "X-Gitlab-Event"),
        (GitProvider::Bitbucket, "X-Event-Key"),
        (GitProvider::BitbucketServer, "X-Event-Key"),
        (GitProvider::Gitea, "X-Gitea-Event"),
        (GitProvider::Gogs, "X-Gogs-Event"),
    ];
    for (provider, header) in cases {
        let err = parse_delivery(provider, &HeaderMap::new(), b"{}").unwrap_err();
        assert_eq!(err, PayloadError::MissingEventHeader(header));
        assert!(err.to_string().contains(header));
    }
}

fn push_headers(provider: GitProvider) -> HeaderMap {
    headers(match provider {
        GitProvider::Github => GH_PUSH,
        GitProvider::Gitlab => GL_PUSH,
        GitProvider::Bitbucket => BB_PUSH,
        GitProvider::BitbucketServer => BBS_PUSH,
        GitProvider::Gitea => &[("X-Gitea-Event", "push")],
        GitProvider::Gogs => &[("X-Gogs-Event", "push")],
        GitProvider::AzureDevops => &[],
    })
}

#[test]
fn bodies_are_utf8_as_std_tells() {
    // Overlong forms, surrogates, past U+10FFFF, truncated and stray continuation bytes, at
    // every offset of a block the SIMD check reads at once.
    let samples: [&[u8]; 10] = [
        "é€😀".as_bytes(),
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf0\x9f\x98",
        b"\x80",
        b"\xc3",
        b"\xff",
        b"\xef\xbf\xbf",
    ];
    for sample in samples {
        for offset in 0..70 {
            let mut body = vec![b'a'; offset];
            body.extend_from_slice(sample);
            body.extend_from_slice(b"zz");
            assert_eq!(utf8(&body).ok(), std::str::from_utf8(&body).ok(), "{body:?}");
        }
    }
}

#[test]
fn malformed_bodies() {
    for provider in GitProvider::ALL {
        let h = push_headers(provider);
        let err = parse_delivery(provider, &h, b"not json").unwrap_err();
        assert!(matches!(err, PayloadError::NotJson(_)), "{provider:?} {err:?}");
        assert_eq!(
            parse_delivery(provider, &h, b"{\"ref\": \"\xff\xfe\"}"),
            Err(PayloadError::NotUtf8)
        );
        let err = parse_delivery(provider, &h, b"[1, 2]").unwrap_err();
        assert!(matches!(err, PayloadError::WrongShape { .. }), "{provider:?} {err:?}");
        let err = parse_delivery(provider, &h, b"").unwrap_err();
        assert!(matches!(err, PayloadError::NotJson(_)), "{provider:?} {err:?}");
        // Deep nesting stops at serde_json's recursion limit instead of overflowing the stack.
        let deep = format!("{{\"ref\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_delivery(provider, &h, deep.as_bytes()).is_err());
        let deep_array = "[".repeat(100_000);
        assert!(parse_delivery(provider, &h, deep_array.as_bytes()).is_err());
        let deep_ignored = format!(
            "{{\"eventType\": \"git.push\", \"zzz\": {}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_delivery(provider, &h, deep_ignored.as_bytes()).is_err());
    }
}

#[test]
fn missing_essentials() {
    let cases: [(GitProvider, &[u8], &str); 6] = [
        (GitProvider::Github, fixture!("github/gp-push.json"), "ref"),
        (GitProvider::Github, fixture!("github/gp-push.json"), "repository"),
        (GitProvider::Gitlab, fixture!("gitlab/gp-push-event.json"), "ref"),
        (GitProvider::Gitlab, fixture!("gitlab/gp-push-event.json"), "after"),
        (GitProvider::Gitea, fixture!("gitea/gp-push-event.json"), "ref"),
        (GitProvider::Gogs, fixture!("gogs/gp-push-event.json"), "repository"),
    ];
    for (provider, body, field) in cases {
        let mut body = value(body);
        body.as_object_mut().unwrap().remove(field);
        let err = parse_delivery(provider, &push_headers(provider), &bytes(&body)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not a {} push payload: missing `{field}`", provider_name(provider))
        );
    }
    let mut body = value(fixture!("gitlab/gp-push-event.json"));
    body["ref"] = json!(42);
    let err = parse_delivery(GitProvider::Gitlab, &headers(GL_PUSH), &bytes(&body)).unwrap_err();
    assert!(matches!(err, PayloadError::WrongShape { .. }), "{err:?}");
    let err = parse_delivery(GitProvider::Bitbucket, &headers(BB_PUSH), b"{}").unwrap_err();
    assert!(matches!(err, PayloadError::WrongShape { .. }), "{err:?}");
    let err = parse_delivery(GitProvider::BitbucketServer, &headers(BBS_PUSH), b"{}").unwrap_err();
    assert!(matches!(err, PayloadError::WrongShape { .. }), "{err:?}");
}

/// A push must name its repository by a URL that names one: without, nothing could match it.
#[test]
fn a_push_without_a_repository_url_is_not_a_push() {
    let cases: [(GitProvider, &[u8], &[&str]); 7] = [
        (GitProvider::Github, fixture!("github/gp-push.json"), &["/repository"]),
        (
            GitProvider::Gitlab,
            fixture!("gitlab/gp-push-event.json"),
            &["/repository", "/project"],
        ),
        (
            GitProvider::Bitbucket,
            fixture!("bitbucket-cloud/gp-repo-push.json"),
            &["/repository"],
        ),
        (
            GitProvider::BitbucketServer,
            fixture!("bitbucket-server/gp-repo-refs-changed.json"),
            &["/repository"],
        ),
        (
            GitProvider::Gitea,
            fixture!("gitea/gp-push-event.json"),
            &["/repository"],
        ),
        (GitProvider::Gogs, fixture!("gogs/gp-push-event.json"), &["/repository"]),
        (
            GitProvider::AzureDevops,
            fixture!("azure-devops/gp-git.push.json"),
            &["/resource/repository"],
        ),
    ];
    for (provider, fixture, repositories) in cases {
        // Every string of the repository objects replaced by one that is no URL.
        let mut body = value(fixture);
        if provider == GitProvider::BitbucketServer {
            // The fixture deletes its branch: make it an update.
            body["changes"][0]["type"] = json!("UPDATE");
            body["changes"][0]["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
        }
        let delivery = parse_delivery(provider, &push_headers(provider), &bytes(&body));
        assert!(matches!(delivery, Ok(Delivery::Pushes(_))), "{provider:?} {delivery:?}");
        for pointer in repositories {
            no_urls(body.pointer_mut(pointer).unwrap());
        }
        let err = parse_delivery(provider, &push_headers(provider), &bytes(&body)).unwrap_err();
        assert!(matches!(err, PayloadError::WrongShape { .. }), "{provider:?} {err:?}");
    }
    let mut body = value(fixture!("github/gp-push.json"));
    body["repository"] = json!({});
    let err = parse_delivery(GitProvider::Github, &headers(GH_PUSH), &bytes(&body)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a GitHub push payload: no URL of its repository names a repository"
    );
}

/// The commit to deploy is a git object name: anything else (a newline, a branch name) is not
/// a push, and would be handed to the engine as the commit.
#[test]
fn a_push_whose_commit_ids_are_not_commit_ids_is_not_a_push() {
    let sha256 = "a".repeat(64);
    for (field, id, accepted) in [
        ("after", "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ", false),
        ("after", "6113728f27ae82c7b1a177c8d03f9e96e0adf246\n", false),
        ("after", "main", false),
        ("after", "6113728F27AE82C7B1A177C8D03F9E96E0ADF246", true),
        ("after", sha256.as_str(), true),
        ("before", "not-a-commit", false),
        ("before", "", true),
    ] {
        let mut body = value(fixture!("github/gp-push.json"));
        body[field] = json!(id);
        let parsed = parse_delivery(GitProvider::Github, &headers(GH_PUSH), &bytes(&body));
        match parsed {
            Ok(Delivery::Pushes(_)) => assert!(accepted, "{field} {id:?}"),
            Err(err) => {
                assert!(!accepted, "{field} {id:?}: {err}");
                assert_eq!(
                    err.to_string(),
                    "not a GitHub push payload: a commit id of the push is not one (40 or 64 hexadecimal digits)"
                );
            }
            other => panic!("{field} {id:?}: {other:?}"),
        }
    }
}

fn no_urls(value: &mut Value) {
    match value {
        Value::String(text) => *text = "not a url".to_owned(),
        Value::Array(items) => items.iter_mut().for_each(no_urls),
        Value::Object(fields) => fields.values_mut().for_each(no_urls),
        _ => {}
    }
}

#[test]
fn error_details_are_bounded() {
    let long = "x".repeat(10_000);
    let body = format!("{{\"ref\": \"refs/heads/main\", \"total_commits_count\": \"{long}\"}}");
    let err = parse_delivery(GitProvider::Gitlab, &headers(GL_PUSH), body.as_bytes()).unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
}

#[test]
fn escaped_strings_are_read() {
    let mut body = value(fixture!("github/gp-push.json"));
    body["head_commit"]["message"] = json!("fix \"quotes\" [Skip Deploy]\n\u{e9}");
    let text = String::from_utf8(bytes(&body))
        .unwrap()
        .replace("refs/heads/master", "refs\\/heads\\/ma\\u0073ter");
    let push = one_push(GitProvider::Github, GH_PUSH, text.as_bytes());
    assert_eq!(push.branch, "master");
    assert_eq!(
        push.head_commit_message.as_deref(),
        Some("fix \"quotes\" [Skip Deploy]\n\u{e9}")
    );
    assert!(push.has_skip_marker());
}

#[test]
fn skip_markers() {
    let push = |message: Option<&str>| Push {
        repository_urls: vec![],
        branch: "main".into(),
        before: String::new(),
        after: "abc".into(),
        files: ChangedFiles::Unknown,
        head_commit_message: message.map(str::to_owned),
        pusher: None,
    };
    for message in ["docs [skip deploy]", "[DEPLOY SKIP] typo", "x\n\n[Skip Deploy]"] {
        assert!(push(Some(message)).has_skip_marker(), "{message}");
    }
    for message in ["[skip ci]", "skip deploy", "[skip  deploy]", "[deploy]"] {
        assert!(!push(Some(message)).has_skip_marker(), "{message}");
    }
    assert!(!push(None).has_skip_marker());
}

#[test]
fn ignored_reasons_serialize_in_screaming_snake_case() {
    assert_eq!(
        serde_json::to_string(&IgnoredReason::BranchDeleted).unwrap(),
        "\"BRANCH_DELETED\""
    );
    assert_eq!(
        serde_json::to_string(&IgnoredReason::UnsupportedEvent).unwrap(),
        "\"UNSUPPORTED_EVENT\""
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery ids

#[test]
fn delivery_ids() {
    let body = b"{}";
    let cases: [(GitProvider, &str); 7] = [
        (GitProvider::Github, "X-GitHub-Delivery"),
        (GitProvider::Gitlab, "X-Gitlab-Event-UUID"),
        (GitProvider::Gitlab, "X-Gitlab-Webhook-UUID"),
        (GitProvider::Bitbucket, "X-Request-UUID"),
        (GitProvider::BitbucketServer, "X-Request-Id"),
        (GitProvider::Gitea, "X-Gitea-Delivery"),
        (GitProvider::Gogs, "X-Gogs-Delivery"),
    ];
    for (provider, header) in cases {
        let h = headers(&[(header, "72d3162e-cc78-11e3-81ab-4c9367dc0958")]);
        assert_eq!(
            delivery_id(provider, &h, body).unwrap().as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "{header}"
        );
        assert_eq!(delivery_id(provider, &HeaderMap::new(), body), Ok(None));
    }
    let h = headers(&[("X-Forgejo-Delivery", "f-1")]);
    assert_eq!(
        delivery_id(GitProvider::Gitea, &h, body).unwrap().as_deref(),
        Some("f-1")
    );
    // GitLab's event id wins over the hook's.
    let h = headers(&[("X-Gitlab-Webhook-UUID", "hook"), ("X-Gitlab-Event-UUID", "event")]);
    assert_eq!(
        delivery_id(GitProvider::Gitlab, &h, body).unwrap().as_deref(),
        Some("event")
    );
    // Another provider's header is not this one's id.
    let h = headers(&[("X-GitHub-Delivery", "gh")]);
    assert_eq!(delivery_id(GitProvider::Gitlab, &h, body), Ok(None));
}

#[test]
fn a_delivery_id_header_given_twice_is_named() {
    let mut h = headers(&[("X-Gitlab-Webhook-UUID", "hook"), ("X-Gitlab-Event-UUID", "event")]);
    assert_eq!(repeated_delivery_id_header(GitProvider::Gitlab, &h), None);
    h.append("x-gitlab-webhook-uuid", http::HeaderValue::from_static("again"));
    assert_eq!(
        repeated_delivery_id_header(GitProvider::Gitlab, &h),
        Some("X-Gitlab-Webhook-UUID")
    );
    // Only the provider's own headers count.
    assert_eq!(repeated_delivery_id_header(GitProvider::Github, &h), None);
    assert_eq!(repeated_delivery_id_header(GitProvider::AzureDevops, &h), None);
    // Two ids in one field, as a proxy or API Gateway joins repeated fields, are two ids.
    for joined in ["d-1,d-2", "d-1, d-1", ","] {
        let h = headers(&[("X-GitHub-Delivery", joined)]);
        assert_eq!(
            repeated_delivery_id_header(GitProvider::Github, &h),
            Some("X-GitHub-Delivery"),
            "{joined}"
        );
    }
}

#[test]
fn delivery_id_limits() {
    // A value that is no id is named, not taken for no id: each redelivery would then pass.
    let long = "a".repeat(MAX_DELIVERY_ID + 1);
    let h = headers(&[("X-GitHub-Delivery", long.as_str())]);
    assert_eq!(delivery_id(GitProvider::Github, &h, b""), Err("X-GitHub-Delivery"));
    let exact = "a".repeat(MAX_DELIVERY_ID);
    let h = headers(&[("X-GitHub-Delivery", exact.as_str())]);
    assert_eq!(
        delivery_id(GitProvider::Github, &h, b"").unwrap().as_deref(),
        Some(exact.as_str())
    );
    let mut h = HeaderMap::new();
    h.insert("x-github-delivery", HeaderValue::from_bytes(b"id\xe9").unwrap());
    assert_eq!(delivery_id(GitProvider::Github, &h, b""), Err("X-GitHub-Delivery"));
    let h = headers(&[("X-GitHub-Delivery", "a\tb")]);
    assert_eq!(delivery_id(GitProvider::Github, &h, b""), Err("X-GitHub-Delivery"));
    // Either of GitLab's two headers.
    let h = headers(&[
        ("X-Gitlab-Event-UUID", "event"),
        ("X-Gitlab-Webhook-UUID", long.as_str()),
    ]);
    assert_eq!(delivery_id(GitProvider::Gitlab, &h, b""), Err("X-Gitlab-Webhook-UUID"));
    // An empty one is none.
    let h = headers(&[("X-GitHub-Delivery", "")]);
    assert_eq!(delivery_id(GitProvider::Github, &h, b""), Ok(None));
    let h = headers(&[("X-Gitlab-Event-UUID", " "), ("X-Gitlab-Webhook-UUID", "hook")]);
    assert_eq!(
        delivery_id(GitProvider::Gitlab, &h, b"").unwrap().as_deref(),
        Some("hook")
    );
}

#[test]
fn azure_delivery_id_comes_from_the_body() {
    let body = fixture!("azure-devops/gp-git.push.json");
    assert_eq!(
        delivery_id(GitProvider::AzureDevops, &HeaderMap::new(), body)
            .unwrap()
            .as_deref(),
        Some("03c164c2-8912-4d5e-8009-3707d5f83734")
    );
    for body in [&b"not json"[..], b"{}", b"{\"id\": 5}", b"{\"id\": \"\"}"] {
        assert_eq!(delivery_id(GitProvider::AzureDevops, &HeaderMap::new(), body), Ok(None));
    }
    let body = b"{\"id\": \"\\u0001\"}";
    assert_eq!(
        delivery_id(GitProvider::AzureDevops, &HeaderMap::new(), body),
        Err("id")
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures

const BODY: &[u8] = br#"{"ref":"refs/heads/main"}"#;

/// The error never repeats the secret nor what was received.
fn assert_discreet(err: &SignatureError, received: &str) {
    let message = err.to_string();
    assert!(!message.contains("Secret to Everybody"), "{message}");
    if !received.is_empty() {
        assert!(!message.contains(received), "{message}");
    }
}

fn verify(provider: GitProvider, pairs: &[(&str, &str)]) -> Result<(), SignatureError> {
    verify_signature(provider, &headers(pairs), BODY, SECRET)
}

#[test]
fn hmac_providers() {
    let sig = hmac_hex(SECRET, BODY);
    let wrong = hmac_hex(b"another secret", BODY);
    let prefixed = format!("sha256={sig}");
    let prefixed_upper = format!("SHA256={}", sig.to_uppercase());
    let prefixed_wrong = format!("sha256={wrong}");
    let cases: [(GitProvider, &str, bool); 7] = [
        (GitProvider::Github, "X-Hub-Signature-256", true),
        (GitProvider::Bitbucket, "X-Hub-Signature", true),
        (GitProvider::BitbucketServer, "X-Hub-Signature", true),
        (GitProvider::Gitea, "X-Gitea-Signature", false),
        (GitProvider::Gitea, "X-Forgejo-Signature", false),
        (GitProvider::Gitea, "X-Hub-Signature-256", true),
        (GitProvider::Gogs, "X-Gogs-Signature", false),
    ];
    for (provider, header, with_prefix) in cases {
        let (good, upper, bad) = if with_prefix {
            (prefixed.clone(), prefixed_upper.clone(), prefixed_wrong.clone())
        } else {
            (sig.clone(), sig.to_uppercase(), wrong.clone())
        };
        assert_eq!(verify(provider, &[(header, &good)]), Ok(()), "{header}");
        assert_eq!(verify(provider, &[(header, &upper)]), Ok(()), "{header}");

        let err = verify(provider, &[(header, &bad)]).unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch(_)), "{err:?}");
        assert_discreet(&err, &wrong);

        // The right signature of another body.
        let other = verify_signature(provider, &headers(&[(header, &good)]), b"{}", SECRET);
        assert!(matches!(other, Err(SignatureError::Mismatch(_))));

        let err = verify(provider, &[]).unwrap_err();
        assert!(matches!(err, SignatureError::MissingHeader(_)), "{err:?}");

        let not_hex = if with_prefix { "sha256=zz" } else { "zz" };
        let err = verify(provider, &[(header, not_hex)]).unwrap_err();
        assert_eq!(err, SignatureError::NotHex(header_display(header)));
        let short = &good[..good.len() - 2];
        let err = verify(provider, &[(header, short)]).unwrap_err();
        assert!(matches!(err, SignatureError::NotHex(_)), "{err:?}");

        if with_prefix {
            let sha1 = format!("sha1={sig}");
            let err = verify(provider, &[(header, &sha1)]).unwrap_err();
            assert!(matches!(err, SignatureError::WrongPrefix { .. }), "{err:?}");
            assert_discreet(&err, &sig);
            let err = verify(provider, &[(header, &sig)]).unwrap_err();
            assert!(matches!(err, SignatureError::WrongPrefix { .. }), "{err:?}");
        }

        let err = verify_signature(provider, &headers(&[(header, &good)]), BODY, b"").unwrap_err();
        assert_eq!(err, SignatureError::NoSecret(provider));
    }
}

fn header_display(header: &str) -> &'static str {
    [
        "X-Hub-Signature-256",
        "X-Hub-Signature",
        "X-Gitea-Signature",
        "X-Forgejo-Signature",
        "X-Gogs-Signature",
    ]
    .into_iter()
    .find(|known| *known == header)
    .unwrap()
}

#[test]
fn github_refuses_sha1_only() {
    let sha1 = "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6";
    let err = verify(GitProvider::Github, &[("X-Hub-Signature", sha1)]).unwrap_err();
    assert_eq!(err, SignatureError::Sha1Only);
    assert_discreet(&err, sha1);
    // Both headers: the SHA-256 one decides.
    let good = format!("sha256={}", hmac_hex(SECRET, BODY));
    assert_eq!(
        verify(
            GitProvider::Github,
            &[("X-Hub-Signature", sha1), ("X-Hub-Signature-256", &good)]
        ),
        Ok(())
    );
}

#[test]
fn gitlab_token() {
    let secret = "It's a Secret to Everybody";
    assert_eq!(verify(GitProvider::Gitlab, &[("X-Gitlab-Token", secret)]), Ok(()));
    for token in ["It's a secret to everybody", "It's a Secret", ""] {
        let err = verify(GitProvider::Gitlab, &[("X-Gitlab-Token", token)]).unwrap_err();
        assert_eq!(err, SignatureError::TokenMismatch("X-Gitlab-Token"));
        assert_discreet(&err, token);
    }
    assert_eq!(
        verify(GitProvider::Gitlab, &[]),
        Err(SignatureError::MissingHeader("X-Gitlab-Token"))
    );
}

#[test]
fn secrets_match_compares_whole_secrets() {
    assert!(secrets_match(
        b"It's a Secret to Everybody",
        b"It's a Secret to Everybody"
    ));
    for other in [
        &b"It's a Secret"[..],
        b"It's a Secret to Everybody!",
        b"",
        b"it's a secret to everybody",
    ] {
        assert!(!secrets_match(other, b"It's a Secret to Everybody"), "{other:?}");
    }
}

fn basic(credentials: &[u8]) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

#[test]
fn azure_basic_auth() {
    let ok = |value: &str| verify(GitProvider::AzureDevops, &[("Authorization", value)]);
    assert_eq!(ok(&basic(b"azure:It's a Secret to Everybody")), Ok(()));
    assert_eq!(ok(&basic(b":It's a Secret to Everybody")), Ok(()));
    // Any user name; the password may hold colons.
    let with_colon = verify_signature(
        GitProvider::AzureDevops,
        &headers(&[("Authorization", &basic(b"anyone:pa:ss"))]),
        BODY,
        b"pa:ss",
    );
    assert_eq!(with_colon, Ok(()));
    let lower_scheme = basic(b"u:It's a Secret to Everybody").replace("Basic", "basic");
    assert_eq!(ok(&lower_scheme), Ok(()));

    let wrong = basic(b"azure:guess");
    let err = ok(&wrong).unwrap_err();
    assert_eq!(err, SignatureError::PasswordMismatch);
    assert_discreet(&err, "guess");
    assert_eq!(
        ok(&basic(b"It's a Secret to Everybody")),
        Err(SignatureError::MalformedBasicAuth)
    );
    assert_eq!(ok("Basic !!!not-base64!!!"), Err(SignatureError::MalformedBasicAuth));
    assert_eq!(
        ok("Bearer It's a Secret to Everybody"),
        Err(SignatureError::NotBasicAuth)
    );
    assert_eq!(ok("Basic"), Err(SignatureError::NotBasicAuth));
    assert_eq!(
        verify(GitProvider::AzureDevops, &[]),
        Err(SignatureError::MissingHeader("Authorization"))
    );
}

#[test]
fn signature_headers_of_other_providers_do_not_count() {
    let sig = hmac_hex(SECRET, BODY);
    let err = verify(GitProvider::Gogs, &[("X-Gitea-Signature", &sig)]).unwrap_err();
    assert_eq!(err, SignatureError::MissingHeader("X-Gogs-Signature"));
    let prefixed = format!("sha256={sig}");
    let err = verify(GitProvider::Github, &[("X-Hub-Signature", &prefixed)]).unwrap_err();
    assert_eq!(err, SignatureError::Sha1Only);
}

#[test]
fn signed_fixtures_verify_and_parse() {
    // The whole path a delivery takes: verify the exact bytes, then parse them.
    let body = fixture!("github/gp-push.json");
    let signature = format!("sha256={}", hmac_hex(SECRET, body));
    let h = headers(&[
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "d-1"),
        ("X-Hub-Signature-256", &signature),
        ("Content-Type", "application/json"),
    ]);
    assert_eq!(verify_signature(GitProvider::Github, &h, body, SECRET), Ok(()));
    assert_eq!(
        delivery_id(GitProvider::Github, &h, body).unwrap().as_deref(),
        Some("d-1")
    );
    assert!(matches!(
        parse_delivery(GitProvider::Github, &h, body),
        Ok(Delivery::Pushes(_))
    ));
}

/// The payload structs read every field as optional and borrow their texts from the body,
/// copying only those that hold escapes.
#[test]
fn payload_texts_borrow_from_the_body() {
    let borrowed = |text: &Text<'_>| matches!(text.0, Cow::Borrowed(_));
    let json = r#"{"id": "a1", "message": "fix\nit", "added": ["src/a.rs", "caf\u00e9"]}"#;
    let commit: Commit<'_> = serde_json::from_str(json).unwrap();
    assert!(commit.id.as_ref().is_some_and(borrowed));
    assert!(
        !commit.message.as_ref().is_some_and(borrowed),
        "an escaped text is a copy"
    );
    let added = commit.added.unwrap();
    assert!(borrowed(&added[0]) && !borrowed(&added[1]));
    assert!(commit.modified.is_none() && commit.removed.is_none());
    let event: RefTypeEvent<'_> = serde_json::from_str(r#"{"ref_type": "branch"}"#).unwrap();
    assert!(event.ref_type.as_ref().is_some_and(borrowed));
}

#[test]
fn the_provider_a_delivery_comes_from_is_told_by_its_event_header() {
    let of = |pairs: &[(&str, &str)]| provider_of(&headers(pairs));
    assert_eq!(of(&[("X-GitHub-Event", "push")]), Some(GitProvider::Github));
    assert_eq!(of(&[("X-Gitlab-Event", "Push Hook")]), Some(GitProvider::Gitlab));
    // Gitea, Forgejo and Gogs also send GitHub's header.
    let gitea = [
        ("X-GitHub-Event", "push"),
        ("X-Gogs-Event", "push"),
        ("X-Gitea-Event", "push"),
    ];
    assert_eq!(of(&gitea), Some(GitProvider::Gitea));
    let forgejo = [("X-GitHub-Event", "push"), ("X-Forgejo-Event", "push")];
    assert_eq!(of(&forgejo), Some(GitProvider::Gitea));
    assert_eq!(
        of(&[("X-GitHub-Event", "push"), ("X-Gogs-Event", "push")]),
        Some(GitProvider::Gogs)
    );
    assert_eq!(of(&[("X-Event-Key", "repo:push")]), Some(GitProvider::Bitbucket));
    assert_eq!(
        of(&[("X-Event-Key", "repo:refs_changed")]),
        Some(GitProvider::BitbucketServer)
    );
    assert_eq!(
        of(&[("X-Event-Key", "diagnostics:ping")]),
        Some(GitProvider::BitbucketServer)
    );
    assert_eq!(of(&[("Authorization", "Basic eDp5")]), None);
}

#[test]
fn payload_errors_speak_json() {
    let wrong = |provider: GitProvider, pairs: &[(&str, &str)], body: &str| {
        parse_delivery(provider, &headers(pairs), body.as_bytes())
            .unwrap_err()
            .to_string()
    };
    let github = [("X-GitHub-Event", "push")];
    assert_eq!(
        wrong(GitProvider::Github, &github, "null"),
        "not a GitHub push payload: invalid type: null, expected an object at line 1 column 4"
    );
    assert_eq!(
        wrong(GitProvider::Github, &github, r#"{"commits": {}}"#),
        "not a GitHub push payload: invalid type: object, expected an array at line 1 column 12"
    );
    assert_eq!(
        wrong(GitProvider::Github, &github, r#"{"commits": [1]}"#),
        "not a GitHub push payload: invalid type: integer, expected an object at line 1 column 14"
    );
    let azure = wrong(GitProvider::AzureDevops, &[], "[]");
    assert_eq!(
        azure,
        "not an Azure DevOps push payload: invalid type: array, expected an object"
    );
    for body in ["[1]", " [] ", r#"[{"ref": "refs/heads/main"}]"#] {
        assert_eq!(
            wrong(GitProvider::Github, &github, body),
            "not a GitHub push payload: invalid type: array, expected an object",
            "{body}"
        );
    }
}

/// A push of GitLab's shape is not GitHub's, nor the other way round, though each has the
/// fields the other is read by (`ref`, `before`, `after`, `repository`, `commits`): sent to the
/// wrong route, with that route's headers, it is refused rather than read as a push.
#[test]
fn another_providers_push_is_not_a_push() {
    let cases = [
        (
            GitProvider::Github,
            ("X-GitHub-Event", "push"),
            &[
                fixture!("gitlab/gp-push-event.json"),
                fixture!("gitlab/gp-system-push-event.json"),
            ][..],
            "webhooks/gitlab",
        ),
        (
            GitProvider::Gitlab,
            ("X-Gitlab-Event", "Push Hook"),
            &[
                fixture!("github/gp-push.json"),
                fixture!("gitea/gp-push-event.json"),
                fixture!("gogs/gp-push-event.json"),
            ][..],
            "webhooks/github",
        ),
    ];
    for (route, event, bodies, hint) in cases {
        for body in bodies {
            let err = parse_delivery(route, &headers(&[event]), body).unwrap_err();
            assert!(
                matches!(&err, PayloadError::WrongShape { .. }) && err.to_string().contains(hint),
                "{route:?}: {err}"
            );
        }
    }
}

/// The body's text is never repeated in an error (the deliveries history keeps the errors),
/// nor does text in it read as serde's words.
#[test]
fn a_payload_error_leaves_the_values_it_quotes_out() {
    let github = headers(&[("X-GitHub-Event", "push")]);
    let body = r#"{"commits": "expected struct Commit, \"a map\" or invalid type: map"}"#;
    let err = parse_delivery(GitProvider::Github, &github, body.as_bytes())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "not a GitHub push payload: invalid type: string, expected an array at line 1 column 68"
    );
}

/// A push of each provider, as a JSON value whose branch is `main` wherever it is named.
fn branch_push_of_every_provider() -> Vec<(GitProvider, Value)> {
    let mut server = value(fixture!("bitbucket-server/gp-repo-refs-changed.json"));
    server["changes"][0]["type"] = json!("UPDATE");
    server["changes"][0]["toHash"] = json!("a00945762949b7787ecabc388c0e20b1b85f0364");
    [
        (GitProvider::Github, value(fixture!("github/gp-push.json"))),
        (GitProvider::Gitlab, value(fixture!("gitlab/gp-push-event.json"))),
        (
            GitProvider::Bitbucket,
            value(fixture!("bitbucket-cloud/gp-repo-push.json")),
        ),
        (GitProvider::BitbucketServer, server),
        (GitProvider::Gitea, value(fixture!("gitea/gp-push-event.json"))),
        (GitProvider::Gogs, value(fixture!("gogs/gp-push-event.json"))),
        (
            GitProvider::AzureDevops,
            value(fixture!("azure-devops/gp-git.push.json")),
        ),
    ]
    .into_iter()
    .map(|(provider, body)| {
        let branch = one_push(provider, &push_with(provider), &bytes(&body)).branch;
        (provider, renamed_branch(&body, &branch, "main"))
    })
    .collect()
}

fn push_with(provider: GitProvider) -> Vec<(&'static str, &'static str)> {
    match provider {
        GitProvider::Github => GH_PUSH.to_vec(),
        GitProvider::Gitlab => GL_PUSH.to_vec(),
        GitProvider::Bitbucket => BB_PUSH.to_vec(),
        GitProvider::BitbucketServer => BBS_PUSH.to_vec(),
        GitProvider::Gitea => vec![("X-Gitea-Event", "push")],
        GitProvider::Gogs => vec![("X-Gogs-Event", "push")],
        GitProvider::AzureDevops => vec![],
    }
}

/// `body` with every string that names branch `from` (alone or as `refs/heads/…`) naming `to`.
fn renamed_branch(body: &Value, from: &str, to: &str) -> Value {
    match body {
        Value::String(text) if text == from => json!(to),
        Value::String(text) if text.strip_prefix("refs/heads/") == Some(from) => json!(format!("refs/heads/{to}")),
        Value::Array(items) => items.iter().map(|item| renamed_branch(item, from, to)).collect(),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| (name.clone(), renamed_branch(field, from, to)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A pushed branch is stored, logged, answered and handed to engines: one git would not
/// create (control characters, `..`, a 12 MiB name, a bidirectional override) is no push, for
/// every provider, and the error names the rule without repeating the name.
#[test]
fn a_push_of_a_branch_git_would_not_create_is_not_a_push() {
    let long = "y".repeat(12 * 1024 * 1024);
    let longest = "y".repeat(crate::branch::MAX_BRANCH_LEN);
    let cases = branch_push_of_every_provider();
    assert_eq!(cases.len(), GitProvider::ALL.len());
    for (provider, body) in &cases {
        let pairs = push_with(*provider);
        for bad in [
            "ma\0in",
            "a\nb",
            "\u{202e}evil",
            "a b",
            "a..b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a@{0}",
            "x.lock",
            "a/",
            "a//b",
            ".a",
            "-a",
            "a\u{200b}",
            "a\u{7f}",
            "fragment-7f3a\u{202e}",
            "fragment 7f3a",
            &long,
        ] {
            let text = bytes(&renamed_branch(body, "main", bad));
            let err = parse_delivery(*provider, &headers(&pairs), &text).expect_err(&format!("{provider:?} {bad:?}"));
            let message = err.to_string();
            assert!(
                message.starts_with(&format!(
                    "not {} push payload: the name of a pushed branch is not one git gives a branch: it must ",
                    with_article(provider_name(*provider))
                )),
                "{provider:?} {bad:?}: {message}"
            );
            // Short names may be words of the rule (`a b`, `-a`); longer ones are never quoted.
            assert!(bad.len() < 4 || !message.contains(bad), "{message}");
            assert!(message.len() < 300, "{message}");
        }
        for good in ["main", "release/1.2", "feature/été", &longest] {
            let push = one_push(*provider, &pairs, &bytes(&renamed_branch(body, "main", good)));
            assert_eq!(push.branch, good, "{provider:?}");
        }
    }
}

/// A credential header given twice is refused, whichever comes first, for every provider: a
/// delivery must not carry a good signature and a bad one and have either checked.
#[test]
fn a_repeated_credential_header_is_refused() {
    let good = hmac_hex(SECRET, BODY);
    let bad = hmac_hex(b"another secret", BODY);
    let secret = std::str::from_utf8(SECRET).unwrap();
    let basic = |password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("user:{password}"))
        )
    };
    let cases: Vec<(GitProvider, &str, String, String)> = vec![
        (
            GitProvider::Github,
            "X-Hub-Signature-256",
            format!("sha256={good}"),
            format!("sha256={bad}"),
        ),
        (
            GitProvider::Gitlab,
            "X-Gitlab-Token",
            secret.to_owned(),
            "wrong".to_owned(),
        ),
        (
            GitProvider::Bitbucket,
            "X-Hub-Signature",
            format!("sha256={good}"),
            format!("sha256={bad}"),
        ),
        (
            GitProvider::BitbucketServer,
            "X-Hub-Signature",
            format!("sha256={good}"),
            format!("sha256={bad}"),
        ),
        (GitProvider::Gitea, "X-Gitea-Signature", good.clone(), bad.clone()),
        (GitProvider::Gitea, "X-Forgejo-Signature", good.clone(), bad.clone()),
        (
            GitProvider::Gitea,
            "X-Hub-Signature-256",
            format!("sha256={good}"),
            format!("sha256={bad}"),
        ),
        (GitProvider::Gogs, "X-Gogs-Signature", good.clone(), bad.clone()),
        (GitProvider::AzureDevops, "Authorization", basic(secret), basic("wrong")),
    ];
    for (provider, header, good, bad) in &cases {
        assert_eq!(verify(*provider, &[(header, good)]), Ok(()), "{header}");
        for pair in [[good, bad], [bad, good], [good, good]] {
            let err = verify(*provider, &[(header, pair[0]), (header, pair[1])]).unwrap_err();
            assert!(
                matches!(err, SignatureError::RepeatedHeader(name) if name == *header),
                "{header}: {err:?}"
            );
            assert_discreet(&err, bad);
        }
    }
    // Gitea's headers are each checked for repeats, the one it verifies or not.
    let sig = hmac_hex(SECRET, BODY);
    let err = verify(
        GitProvider::Gitea,
        &[
            ("X-Gitea-Signature", &sig),
            ("X-Forgejo-Signature", &sig),
            ("X-Forgejo-Signature", &sig),
        ],
    )
    .unwrap_err();
    assert_eq!(err, SignatureError::RepeatedHeader("X-Forgejo-Signature"));
}

/// An event header given twice names no one event: the delivery is refused, for every
/// provider that names its event in a header.
#[test]
fn a_repeated_event_header_is_refused() {
    for (provider, body) in branch_push_of_every_provider() {
        let pairs = push_with(provider);
        let Some(&(name, value)) = pairs.first() else {
            continue;
        };
        for other in [value, "issues"] {
            let mut twice = pairs.clone();
            twice.push((name, other));
            let err = parse_delivery(provider, &headers(&twice), &bytes(&body)).unwrap_err();
            assert_eq!(
                err,
                PayloadError::RepeatedEventHeader(event_headers(provider)[0]),
                "{provider:?}"
            );
            // The same two values joined in one field, as a proxy may join repeated fields.
            let joined_value = format!("{value}, {other}");
            let joined: Vec<(&str, &str)> = pairs
                .iter()
                .map(|&(n, v)| (n, if n == name { joined_value.as_str() } else { v }))
                .collect();
            let err = parse_delivery(provider, &headers(&joined), &bytes(&body)).unwrap_err();
            assert_eq!(
                err,
                PayloadError::RepeatedEventHeader(event_headers(provider)[0]),
                "{provider:?}: {joined_value}"
            );
        }
    }
}
