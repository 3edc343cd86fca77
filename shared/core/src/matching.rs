//! Which services a push or a new image tag redeploys, and why the others do not.
//!
//! Pure decisions over services already fetched from the store by repository or image: the
//! store's index narrows the candidates, these functions apply SPEC's rules to each.

use serde::Serialize;

use crate::branch::branch_matches;
use crate::image::ImageName;
use crate::model::{Service, ServiceKind};
use crate::push::{ChangedFiles, Push};
use crate::restrictions::rules_allow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::tag_policy::{CompiledTagPolicy, TagPolicy};

/// Why a service that follows the pushed branch (or uses the image) was not deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SkipReason {
    /// The service has auto-deploy off.
    AutoDeployDisabled,
    /// No changed file passed the service's deployment restrictions.
    PathRestrictions,
    /// The head commit asked not to deploy (`[skip deploy]` / `[deploy skip]`).
    SkipMarker,
    /// This very push (same before and after) already queued a deployment for the service.
    AlreadyQueued,
    /// The service's tag policy does not accept the new tag.
    TagPolicy,
    /// The service already runs the announced tag.
    SameTag,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::AutoDeployDisabled => "AUTO_DEPLOY_DISABLED",
            SkipReason::PathRestrictions => "PATH_RESTRICTIONS",
            SkipReason::SkipMarker => "SKIP_MARKER",
            SkipReason::AlreadyQueued => "ALREADY_QUEUED",
            SkipReason::TagPolicy => "TAG_POLICY",
            SkipReason::SameTag => "SAME_TAG",
        }
    }
}

/// The mark a push leaves on each service it queued for: `before..after`. A second push with
/// the same mark is a duplicate; any other (a rollback included) is new.
pub fn push_mark(push: &Push) -> String {
    format!("{}..{}", push.before, push.after)
}

/// The replay rule: whether the push `mark` (`before..after`), which the service queued before
/// (`queued_before`: it holds the mark), is a replay to refuse, the service's last push being
/// `last_push`. It is, but as a re-apply after a rollback: its `before` is the service's
/// current commit (the last push's `after`), and it is not the last push itself, which moves
/// nothing even when `before` = `after`.
pub fn is_replay(mark: &str, before: &str, last_push: Option<&str>, queued_before: bool) -> bool {
    let is_last = last_push == Some(mark);
    let current_commit = last_push.and_then(|m| m.split_once("..")).map(|(_, after)| after);
    queued_before && (is_last || current_commit != Some(before))
}

/// `None` when `service` does not follow `push`'s branch (it is not listed at all); else
/// `Ok(())` to deploy or the reason to skip. The caller has matched the repository.
pub fn decide_push(service: &Service, push: &Push) -> Option<Result<(), SkipReason>> {
    let repo = service.spec.git_repository.as_ref()?;
    if !matches!(service.spec.kind, ServiceKind::Application | ServiceKind::Job) {
        return None;
    }
    // A stored branch always validated; one that no longer parses follows nothing.
    if !branch_matches(&repo.branch, &push.branch) {
        return None;
    }
    if !service.spec.auto_deploy {
        return Some(Err(SkipReason::AutoDeployDisabled));
    }
    if push.has_skip_marker() {
        return Some(Err(SkipReason::SkipMarker));
    }
    if let ChangedFiles::Known(files) = &push.files
        && !service.spec.deployment_restrictions.is_empty()
    {
        let allowed = rules_allow(&service.spec.deployment_restrictions, files.iter());
        if !allowed {
            return Some(Err(SkipReason::PathRestrictions));
        }
    }
    Some(Ok(()))
}

/// Which kind of service an image-tag announcement redeploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTarget {
    /// `/container/deploy`.
    Container,
    /// `/job/deploy`.
    Job,
    /// A registry's own announcement (registry webhooks, ECR events): it names an image, not a
    /// kind, so every container and every job that uses the image.
    Registry,
}

/// `None` when `service` is not of the endpoint's kind or does not use `image`; else `Ok(())`
/// to deploy `tag` or the reason to skip.
pub fn decide_image(
    service: &Service,
    target: ImageTarget,
    image: &ImageName,
    tag: &str,
) -> Option<Result<(), SkipReason>> {
    let kind_fits = matches!(
        (target, service.spec.kind),
        (ImageTarget::Container | ImageTarget::Registry, ServiceKind::Container)
            | (ImageTarget::Job | ImageTarget::Registry, ServiceKind::Job)
    );
    if !kind_fits {
        return None;
    }
    let current = service.spec.image.as_ref()?;
    let (registry, path) = service.image_key()?;
    if !image.matches(&registry, &path) {
        return None;
    }
    if !service.spec.auto_deploy {
        return Some(Err(SkipReason::AutoDeployDisabled));
    }
    if current.tag == tag {
        return Some(Err(SkipReason::SameTag));
    }
    if let Some(policy) = &service.spec.tag_policy {
        let accepted = compiled(policy).is_some_and(|p| p.accepts(Some(&current.tag), tag));
        if !accepted {
            return Some(Err(SkipReason::TagPolicy));
        }
    }
    Some(Ok(()))
}

/// Why `service`'s tag policy refuses `tag`, as a phrase that follows the tag
/// (`is outside the SEMVER range >=1.2.0 <2`); `None` when it has no policy or the policy
/// takes the tag. For the answer of an announcement [`decide_image`] skipped `TAG_POLICY`.
pub fn tag_policy_refusal(service: &Service, tag: &str) -> Option<String> {
    let policy = service.spec.tag_policy.as_ref()?;
    let current = service.spec.image.as_ref().map(|image| image.tag.as_str());
    let refusal = match compiled(policy) {
        Some(compiled) => Some(compiled.refusal(current, tag)?),
        None => None,
    };
    Some(policy.refusal_phrase(refusal, current))
}

/// Compiled policies kept at most; the cache starts afresh when full.
pub const CACHED_TAG_POLICIES: usize = 4096;

type PolicyCache = HashMap<(&'static str, String), Option<Arc<CompiledTagPolicy>>>;

/// `policy`, compiled once and reused by every notification that reaches a service with it
/// (compiling a pattern costs far more than matching a tag). `None` for a policy that does not
/// compile (it accepts nothing; writes refuse such policies).
pub fn compiled(policy: &TagPolicy) -> Option<Arc<CompiledTagPolicy>> {
    static CACHE: OnceLock<Mutex<PolicyCache>> = OnceLock::new();
    let key = match policy {
        TagPolicy::Semver { range } => ("SEMVER", range.clone()),
        TagPolicy::Glob { pattern } => ("GLOB", pattern.clone()),
        TagPolicy::Regex { pattern } => ("REGEX", pattern.clone()),
    };
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let lock = || cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = lock().get(&key) {
        return found.clone();
    }
    // Compiled outside the lock: other notifications are not held up by this one.
    let compiled = policy.compile().ok().map(Arc::new);
    let mut cache = lock();
    if cache.len() >= CACHED_TAG_POLICIES {
        cache.clear();
    }
    cache.insert(key, compiled.clone());
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::parse_image_name;
    use crate::model::parse_service_document;
    use serde_json::{Value, json};

    fn service(doc: Value) -> Service {
        let spec = parse_service_document("acme", "svc", &doc).unwrap();
        Service {
            id: "svc".into(),
            organization_id: "acme".into(),
            spec,
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn app(branch: &str, auto: bool, rules: Value) -> Service {
        service(
            json!({"environment_id": "prod", "kind": "APPLICATION", "auto_deploy": auto,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": branch},
            "deployment_restrictions": rules}),
        )
    }

    fn push(branch: &str, files: Option<&[&str]>, message: &str) -> Push {
        Push {
            repository_urls: vec!["https://github.com/acme/shop".into()],
            branch: branch.into(),
            before: "a".repeat(40),
            after: "b".repeat(40),
            files: match files {
                Some(f) => ChangedFiles::Known(f.iter().collect()),
                None => ChangedFiles::Unknown,
            },
            head_commit_message: Some(message.into()),
            pusher: None,
        }
    }

    #[test]
    fn push_decisions() {
        let api_only = json!([{"mode": "MATCH", "type": "PATH", "value": "services/api/"}]);
        let no_docs = json!([{"mode": "EXCLUDE", "type": "PATH", "value": "docs"}]);
        let cases = [
            (
                app("main", true, json!([])),
                push("main", Some(&["x"]), "m"),
                Some(Ok(())),
            ),
            (app("main", true, json!([])), push("dev", Some(&["x"]), "m"), None),
            (app("Main", true, json!([])), push("main", Some(&["x"]), "m"), None),
            (
                app("release/*", true, json!([])),
                push("release/1.2", None, "m"),
                Some(Ok(())),
            ),
            (app("release/*", true, json!([])), push("release/1/2", None, "m"), None),
            (
                app("main", false, json!([])),
                push("main", None, "[skip deploy]"),
                Some(Err(SkipReason::AutoDeployDisabled)),
            ),
            (
                app("main", true, json!([])),
                push("main", None, "fix [Skip Deploy]"),
                Some(Err(SkipReason::SkipMarker)),
            ),
            (
                app("main", true, json!([])),
                push("main", None, "x [deploy skip]"),
                Some(Err(SkipReason::SkipMarker)),
            ),
            (
                app("main", true, api_only.clone()),
                push("main", Some(&["services/web/a.rs"]), "m"),
                Some(Err(SkipReason::PathRestrictions)),
            ),
            (
                app("main", true, api_only.clone()),
                push("main", Some(&["services/web/a.rs", "services/api/b.rs"]), "m"),
                Some(Ok(())),
            ),
            // Unknown files: restrictions cannot apply, the service deploys.
            (app("main", true, api_only), push("main", None, "m"), Some(Ok(()))),
            (
                app("main", true, no_docs.clone()),
                push("main", Some(&["docs/a.md", "docs/b.md"]), "m"),
                Some(Err(SkipReason::PathRestrictions)),
            ),
            (
                app("main", true, no_docs),
                push("main", Some(&["docs/a.md", "src/x.rs"]), "m"),
                Some(Ok(())),
            ),
        ];
        for (i, (svc, mut p, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide_push(&svc, &p), want, "case {i}");
            // Files are listed as the payload lists them: in any order, repeated.
            if let ChangedFiles::Known(files) = &p.files {
                let listed: Vec<&str> = files.iter().collect();
                let reordered = listed.iter().rev().chain(&listed).chain(&listed).collect();
                p.files = ChangedFiles::Known(reordered);
                assert_eq!(decide_push(&svc, &p), want, "case {i}, reordered and repeated");
            }
        }
    }

    #[test]
    fn skip_marker_reads_as_a_lowercased_search() {
        for message in [
            "",
            "[",
            "[skip deploy",
            "[[skip deploy]]",
            "x [SKIP DEPLOY] y",
            "[Deploy Skip]",
            "[deploy  skip]",
            "é[skip deploy]é",
            "[SKİP DEPLOY]",
            "[skip\tdeploy]",
            "fix [skip ci] [deploy skip]",
        ] {
            let lowered = message.to_ascii_lowercase();
            let expected = lowered.contains("[skip deploy]") || lowered.contains("[deploy skip]");
            let mut p = push("main", None, message);
            assert_eq!(p.has_skip_marker(), expected, "{message:?}");
            p.head_commit_message = None;
            assert!(!p.has_skip_marker());
        }
    }

    #[test]
    fn containers_do_not_follow_pushes() {
        let c = service(json!({"environment_id": "p", "kind": "CONTAINER", "auto_deploy": true,
                               "image": {"image_name": "acme/api", "tag": "1"}}));
        assert_eq!(decide_push(&c, &push("main", None, "m")), None);
    }

    #[test]
    fn push_marks_tell_rollbacks_from_duplicates() {
        let p = push("main", None, "m");
        let mut rollback = p.clone();
        std::mem::swap(&mut rollback.before, &mut rollback.after);
        assert_eq!(push_mark(&p), push_mark(&p.clone()));
        assert_ne!(push_mark(&p), push_mark(&rollback));
    }

    #[test]
    fn the_replay_rule() {
        let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
        let (ab, bc, cb) = (format!("{a}..{b}"), format!("{b}..{c}"), format!("{c}..{b}"));
        // A push never queued is no replay.
        assert!(!is_replay(&ab, &a, Some(&bc), false));
        // The last push again, and an earlier one after it, are.
        assert!(is_replay(&bc, &b, Some(&bc), true));
        assert!(is_replay(&ab, &a, Some(&bc), true));
        // Re-applying b..c after a rollback to b (the current commit is b) is not.
        assert!(!is_replay(&bc, &b, Some(&cb), true));
        // A push that moves nothing, the last one again, is.
        let bb = format!("{b}..{b}");
        assert!(is_replay(&bb, &b, Some(&bb), true));
    }

    fn container(kind: &str, registry: &str, name: &str, tag: &str, auto: bool, policy: Value) -> Service {
        service(json!({"environment_id": "p", "kind": kind, "auto_deploy": auto,
                       "image": {"registry": registry, "image_name": name, "tag": tag},
                       "tag_policy": policy}))
    }

    #[test]
    fn image_decisions() {
        use ImageTarget::{Container, Job, Registry};
        use SkipReason::{AutoDeployDisabled, SameTag, TagPolicy};
        let api = |kind, auto, policy| container(kind, "ghcr.io", "acme/api", "1.3.0", auto, policy);
        let main = |policy| container("CONTAINER", "ghcr.io", "acme/api", "main-aaaaaaa", true, policy);
        let api_container = api("CONTAINER", true, Value::Null);
        let api_job = api("JOB", true, Value::Null);
        let off_container = api("CONTAINER", false, Value::Null);
        let off_job = api("JOB", false, Value::Null);
        let semver = api("CONTAINER", true, json!({"type": "SEMVER", "range": ">=1.2.0 <2"}));
        let regex = main(json!({"type": "REGEX", "pattern": "^main-[0-9a-f]{7}$"}));
        let glob = main(json!({"type": "GLOB", "pattern": "release-*"}));
        let nginx = container("CONTAINER", "docker.io", "nginx", "1.25", true, Value::Null);
        let library_nginx = container(
            "CONTAINER",
            "index.docker.io",
            "library/nginx",
            "1.25",
            true,
            Value::Null,
        );
        let deploy = Some(Ok(()));
        let skip = |reason| Some(Err(reason));
        #[rustfmt::skip]
        let cases = [
            ("short name", &api_container, Container, "acme/api", "1.4.0", deploy),
            ("full name", &api_container, Container, "ghcr.io/acme/api", "1.4.0", deploy),
            ("other registry", &api_container, Container, "docker.io/acme/api", "1.4.0", None),
            ("container on the job endpoint", &api_container, Job, "acme/api", "1.4.0", None),
            ("job", &api_job, Job, "acme/api", "1.4.0", deploy),
            ("job on the container endpoint", &api_job, Container, "acme/api", "1.4.0", None),
            // A registry's announcement: containers and jobs alike, on the same rules.
            ("registry, container", &api_container, Registry, "ghcr.io/acme/api", "1.4.0", deploy),
            ("registry, job", &api_job, Registry, "ghcr.io/acme/api", "1.4.0", deploy),
            ("registry, auto-deploy off", &off_job, Registry, "ghcr.io/acme/api", "1.4.0", skip(AutoDeployDisabled)),
            ("registry, other registry", &api_job, Registry, "docker.io/acme/api", "1.4.0", None),
            ("Docker Hub, short name", &nginx, Container, "nginx", "1.26", deploy),
            ("Docker Hub, other spelling", &library_nginx, Container, "docker.io/nginx", "1.26", deploy),
            ("auto-deploy off", &off_container, Container, "acme/api", "1.4.0", skip(AutoDeployDisabled)),
            ("same tag", &api_container, Container, "acme/api", "1.3.0", skip(SameTag)),
            ("semver, in range", &semver, Container, "acme/api", "v1.4.0", deploy),
            ("semver, below", &semver, Container, "acme/api", "1.2.5", skip(TagPolicy)),
            ("semver, above", &semver, Container, "acme/api", "2.0.0", skip(TagPolicy)),
            ("regex", &regex, Container, "acme/api", "main-bbbbbbb", deploy),
            ("glob", &glob, Container, "acme/api", "main-bbbbbbb", skip(TagPolicy)),
        ];
        for (i, (case, svc, target, image, tag, want)) in cases.into_iter().enumerate() {
            let image = parse_image_name(image).unwrap();
            assert_eq!(decide_image(svc, target, &image, tag), want, "case {i}: {case}");
        }
    }

    #[test]
    fn a_policy_is_compiled_once() {
        let policy = TagPolicy::Regex {
            pattern: "^cache-test-[0-9]+$".to_owned(),
        };
        let first = compiled(&policy).unwrap();
        let again = compiled(&policy.clone()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second lookup compiled again");
        assert!(again.accepts(None, "cache-test-12"));
        let broken = TagPolicy::Regex {
            pattern: "(".to_owned(),
        };
        assert!(compiled(&broken).is_none());
    }
}
