//! Planning a delivery: which services each push of it deploys, which it skips and why, and
//! the sentence that explains a delivery that reaches no service at all.
//!
//! Pure: the services come from the store's index (every service of the organization that
//! follows one of the pushed repositories), already fetched.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use crate::branch::would_match_across_parts;
use crate::matching::{SkipReason, decide_push};
use crate::model::Service;
use crate::push::{ChangedFiles, Push};
use crate::repo_url::{MAX_REPOSITORY_URL_LEN, normalize_repository_url};

/// A stored service as the planner sees it.
pub trait ServiceView {
    fn service(&self) -> &Service;
}

impl ServiceView for Service {
    fn service(&self) -> &Service {
        self
    }
}

/// The repository keys a push can match: every URL it carries, normalized, in the payload's
/// order, each once.
pub fn repository_keys(push: &Push) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in push.repository_urls.iter().filter_map(|u| repository_key(u)) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Whether a URL of the push names a repository: one that names none cannot be matched.
pub(crate) fn names_a_repository(push: &Push) -> bool {
    push.repository_urls
        .iter()
        .any(|url| with_key(url, |key| key.is_some()))
}

/// URLs each thread keeps normalized (see [`repository_key`]).
const NORMALIZED_URLS: usize = 256;

thread_local! {
    /// Hashed with foldhash (see `restrictions::CompiledCache`).
    static NORMALIZED: RefCell<HashMap<Box<str>, Option<String>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// The key of one URL a push carries, `None` when it names no repository. Remembered by each
/// thread (at most [`NORMALIZED_URLS`], then forgotten all at once): a push carries the same
/// repository under several URLs, and the deliveries of a repository keep coming.
fn repository_key(url: &str) -> Option<String> {
    with_key(url, |key| key.cloned())
}

/// `read` of the key of `url` (see [`repository_key`]), without copying it.
fn with_key<R>(url: &str, read: impl FnOnce(Option<&String>) -> R) -> R {
    if url.len() > MAX_REPOSITORY_URL_LEN {
        return read(None);
    }
    NORMALIZED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(key) = cache.get(url) {
            return read(key.as_ref());
        }
        let key = normalize_repository_url(url).ok();
        if cache.len() >= NORMALIZED_URLS {
            cache.clear();
        }
        let read = read(key.as_ref());
        cache.insert(url.into(), key);
        read
    })
}

/// The repository keys of a delivery: each push's (see [`repository_keys`]), normalized once
/// for both the store's lookups and the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKeys {
    per_push: Vec<Vec<String>>,
}

impl DeliveryKeys {
    /// Every key of the delivery, each once, in order: what to look services up by.
    pub fn distinct(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for key in self.per_push.iter().flatten() {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
        keys
    }

    /// The keys of the push at `index` of the delivery (none past its end).
    pub fn of(&self, index: usize) -> &[String] {
        self.per_push.get(index).map_or(&[], Vec::as_slice)
    }
}

/// The repository keys of a delivery's pushes.
pub fn delivery_keys(pushes: &[Push]) -> DeliveryKeys {
    let mut per_push: Vec<Vec<String>> = Vec::with_capacity(pushes.len());
    for (index, push) in pushes.iter().enumerate() {
        // The pushes of a multi-branch delivery carry the same URLs: normalized once.
        let keys = match index.checked_sub(1) {
            Some(previous) if pushes[previous].repository_urls == push.repository_urls => per_push[previous].clone(),
            _ => repository_keys(push),
        };
        per_push.push(keys);
    }
    DeliveryKeys { per_push }
}

/// What one service does with one push of the delivery.
#[derive(Debug)]
pub struct Decision<'a, S> {
    /// Index of the push in the delivery.
    pub push: usize,
    pub stored: &'a S,
    pub verdict: Result<(), SkipReason>,
}

/// The plan of a whole delivery.
#[derive(Debug)]
pub struct PushPlan<'a, S> {
    /// In the pushes' order, then the services' (id) order.
    pub decisions: Vec<Decision<'a, S>>,
    /// For each push, the repository it is reported under.
    pub repositories: Vec<String>,
    /// Branch patterns of services that follow a pushed repository but none of its pushed
    /// branches, for [`PushPlan::nothing_to_deploy`].
    pub other_branches: BTreeSet<String>,
    /// How many such services.
    pub on_other_branches: usize,
}

/// An upper bound on what [`plan_push`] compares for a delivery: the bytes of each push's
/// changed paths (and one per path) against each restriction of each service it reaches, and
/// the decision of each service for each push. It grows with the services and their rules
/// that an organization sets up and the paths a push lists, so a caller serving other
/// requests on the same thread asks it first.
pub fn planning_work<S: ServiceView, B: AsRef<[S]>>(pushes: &[Push], by_key: &HashMap<String, B>) -> usize {
    let (services, rules) =
        by_key
            .values()
            .flat_map(|services| services.as_ref())
            .fold((0usize, 0usize), |(services, rules), stored| {
                let restrictions = stored.service().spec.deployment_restrictions.len();
                (services + 1, rules.saturating_add(restrictions))
            });
    pushes
        .iter()
        .map(|push| match &push.files {
            ChangedFiles::Known(paths) => {
                let compared = paths.total_bytes().saturating_add(paths.len());
                compared.saturating_mul(rules).saturating_add(services)
            }
            ChangedFiles::Unknown => services,
        })
        .fold(0, usize::saturating_add)
}

/// Decide every service that follows a repository of the delivery, for each of its pushes;
/// `keys` are the delivery's ([`delivery_keys`]), `by_key` the services found under each.
/// A service deploys at most once per delivery: when several pushes of one delivery would
/// deploy it (a glob branch that several pushed branches match), the last one does.
pub fn plan_push<'a, S: ServiceView, B: AsRef<[S]>>(
    pushes: &[Push],
    keys: &DeliveryKeys,
    by_key: &'a HashMap<String, B>,
) -> PushPlan<'a, S> {
    let mut decisions: Vec<Decision<'a, S>> = Vec::new();
    let mut repositories = Vec::with_capacity(pushes.len());
    // Services that follow a pushed repository on another branch: (id, branch), with repeats.
    let mut elsewhere: Vec<(&str, &str)> = Vec::new();
    for (index, push) in pushes.iter().enumerate() {
        let keys = keys.of(index);
        let buckets: Vec<(&String, &'a [S])> = keys
            .iter()
            .filter_map(|key| by_key.get(key).map(|bucket| (key, bucket.as_ref())))
            .collect();
        repositories.push(display_repository(keys, &buckets));
        decisions.reserve(buckets.iter().map(|(_, bucket)| bucket.len()).sum());
        // A bucket holds a service once; one reached through two keys is decided once.
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let several_buckets = buckets.len() > 1;
        for stored in buckets.into_iter().flat_map(|(_, bucket)| bucket) {
            let service = stored.service();
            if several_buckets && !seen.insert(service.id.as_str()) {
                continue;
            }
            match decide_push(service, push) {
                None => {
                    if let Some(repo) = &service.spec.git_repository {
                        elsewhere.push((service.id.as_str(), repo.branch.as_str()));
                    }
                }
                Some(verdict) => {
                    if verdict.is_ok() && index > 0 {
                        // The last push of the delivery that deploys the service wins.
                        decisions.retain(|d| !(d.verdict.is_ok() && d.stored.service().id == service.id));
                    }
                    decisions.push(Decision {
                        push: index,
                        stored,
                        verdict,
                    });
                }
            }
        }
    }
    // Every service some push reached has a decision: the others follow other branches.
    let (other_branches, on_other_branches) = if elsewhere.is_empty() {
        (BTreeSet::new(), 0)
    } else {
        elsewhere.sort_unstable();
        elsewhere.dedup_by_key(|(id, _)| *id);
        // With one push, a service is either decided or elsewhere, never both.
        if pushes.len() > 1 {
            let mut reached: Vec<&str> = decisions.iter().map(|d| d.stored.service().id.as_str()).collect();
            reached.sort_unstable();
            elsewhere.retain(|(id, _)| reached.binary_search(id).is_err());
        }
        let branches = elsewhere.iter().map(|(_, branch)| (*branch).to_owned()).collect();
        (branches, elsewhere.len())
    };
    PushPlan {
        decisions,
        repositories,
        other_branches,
        on_other_branches,
    }
}

/// The repository a push is reported under: the first key that services follow, else the
/// first the payload names; `buckets` are the services found under its keys, in their order.
fn display_repository<S>(keys: &[String], buckets: &[(&String, &[S])]) -> String {
    buckets
        .iter()
        .find(|(_, bucket)| !bucket.is_empty())
        .map(|(key, _)| *key)
        .or(keys.first())
        .cloned()
        .unwrap_or_default()
}

/// Branch names listed in a sentence before the rest are only counted.
const LISTED_BRANCHES: usize = 5;

impl<S> PushPlan<'_, S> {
    /// Why a delivery that queues and skips nothing reached no service: SPEC "Nothing to
    /// deploy is explained". `None` when it decided something.
    pub fn nothing_to_deploy(&self, org: &str, pushes: &[Push]) -> Option<String> {
        if !self.decisions.is_empty() || pushes.is_empty() {
            return None;
        }
        let repository = self.repositories.first().cloned().unwrap_or_default();
        let branches: BTreeSet<&str> = pushes.iter().map(|p| p.branch.as_str()).collect();
        let branches: Vec<&str> = branches.into_iter().collect();
        if self.on_other_branches == 0 {
            return Some(format!(
                "No service of organization {org} follows {repository}. Create one whose git_repository.url is this repository (its repository_key must read {repository})."
            ));
        }
        let listed: Vec<&str> = self
            .other_branches
            .iter()
            .take(LISTED_BRANCHES)
            .map(String::as_str)
            .collect();
        let more = self.other_branches.len().saturating_sub(LISTED_BRANCHES);
        let others = if more > 0 {
            format!("{} and {more} more", listed.join(", "))
        } else {
            listed.join(", ")
        };
        // Worded as SPEC's example: "…; 2 follow it on other branches (develop, release/*)."
        let verb = if self.on_other_branches == 1 {
            "follows"
        } else {
            "follow"
        };
        let branch_word = if branches.len() == 1 { "branch" } else { "branches" };
        // A `*` read as crossing `/` is the likeliest slip: say so, naming one such pattern.
        let hint = self
            .other_branches
            .iter()
            .find_map(|pattern| {
                let branch = branches.iter().find(|b| would_match_across_parts(pattern, b))?;
                Some(format!(
                    " In a branch pattern `*` stays within one `/`-separated part: `{pattern}` does not match {branch}; `**` crosses parts."
                ))
            })
            .unwrap_or_default();
        Some(format!(
            "No service of organization {org} follows {repository} on {branch_word} {}; {} {verb} it on other branches ({others}).{hint}",
            branches.join(", "),
            self.on_other_branches
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_service_document;
    use crate::push::ChangedFiles;
    use serde_json::json;

    fn app(id: &str, branch: &str) -> Service {
        let doc = json!({"environment_id": "prod", "kind": "APPLICATION", "auto_deploy": true,
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": branch}});
        Service {
            id: id.into(),
            organization_id: "acme".into(),
            spec: parse_service_document("acme", id, &doc).unwrap(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn push(branch: &str, after: &str) -> Push {
        Push {
            repository_urls: vec![
                "https://github.com/acme/shop.git".into(),
                "git@github.com:acme/shop.git".into(),
            ],
            branch: branch.into(),
            before: "a".repeat(40),
            after: after.into(),
            files: ChangedFiles::Unknown,
            head_commit_message: None,
            pusher: None,
        }
    }

    fn index(services: Vec<Service>) -> HashMap<String, Vec<Service>> {
        HashMap::from([("github.com/acme/shop".to_owned(), services)])
    }

    /// Each changed path's bytes and one per path, against each restriction of each service
    /// reached, and one decision per service and push.
    #[test]
    fn planning_work_counts_paths_against_restrictions() {
        let restricted = |id: &str, rules: usize| {
            let mut service = app(id, "main");
            service.spec.deployment_restrictions = (0..rules)
                .map(|i| crate::restrictions::DeploymentRestriction {
                    mode: crate::restrictions::RestrictionMode::Match,
                    kind: crate::restrictions::RestrictionType::Path,
                    value: format!("dir{i}"),
                })
                .collect();
            service
        };
        let by_key = index(vec![restricted("a", 3), restricted("b", 2), app("c", "main")]);
        let mut paths = crate::push::ChangedPaths::default();
        for path in ["src/main.rs", "README.md", "src/main.rs"] {
            paths.push(path);
        }
        let known = Push {
            files: ChangedFiles::Known(paths),
            ..push("main", "b")
        };
        // (11 + 9 + 11 bytes + 3 paths) × 5 rules + 3 services.
        assert_eq!(planning_work(std::slice::from_ref(&known), &by_key), 34 * 5 + 3);
        // Unknown files: the decisions alone; two pushes, twice.
        assert_eq!(planning_work(&[push("main", "b"), known], &by_key), 3 + 34 * 5 + 3);
        assert_eq!(
            planning_work::<Service, Vec<Service>>(&[push("main", "b")], &HashMap::new()),
            0
        );
    }

    #[test]
    fn keys_are_normalized_once() {
        assert_eq!(repository_keys(&push("main", "b")), vec!["github.com/acme/shop"]);
        assert_eq!(
            delivery_keys(&[push("main", "b"), push("dev", "c")]).distinct(),
            vec!["github.com/acme/shop"]
        );
    }

    #[test]
    fn remembered_keys_are_the_keys() {
        for round in 0..2 {
            for i in 0..NORMALIZED_URLS + 10 {
                let url = format!("git@github.com:Acme/Repo-{i}.git");
                assert_eq!(
                    repository_key(&url),
                    Some(format!("github.com/acme/repo-{i}")),
                    "round {round}"
                );
            }
            assert_eq!(repository_key("https://github.com/a b"), None);
            assert_eq!(repository_key(&"x".repeat(MAX_REPOSITORY_URL_LEN + 1)), None);
        }
    }

    #[test]
    fn a_service_deploys_once_per_delivery_the_last_push_winning() {
        let by_key = index(vec![app("api", "release/*"), app("web", "main")]);
        let pushes = [push("release/1", "b1"), push("main", "m"), push("release/2", "b2")];
        let plan = plan_push(&pushes, &delivery_keys(&pushes), &by_key);
        let deploys: Vec<(usize, &str)> = plan
            .decisions
            .iter()
            .filter(|d| d.verdict.is_ok())
            .map(|d| (d.push, d.stored.id.as_str()))
            .collect();
        assert_eq!(deploys, vec![(1, "web"), (2, "api")]);
        assert_eq!(plan.repositories, vec!["github.com/acme/shop"; 3]);
    }

    #[test]
    fn services_on_other_branches_are_those_no_push_reached() {
        let by_key = index(vec![
            app("api", "dev"),
            app("web", "release/*"),
            app("x", "release/*"),
            app("y", "develop"),
        ]);
        let pushes = [push("main", "m"), push("dev", "d"), push("develop", "e")];
        let plan = plan_push(&pushes, &delivery_keys(&pushes), &by_key);
        assert_eq!(plan.decisions.len(), 2);
        assert_eq!(plan.on_other_branches, 2);
        assert_eq!(plan.other_branches, BTreeSet::from(["release/*".to_owned()]));
    }

    #[test]
    fn a_service_under_two_keys_is_decided_once() {
        let mut by_key = index(vec![app("api", "main"), app("web", "main")]);
        by_key.insert("github.com/acme/shop-mirror".to_owned(), vec![app("api", "main")]);
        let mut mirrored = push("main", "m");
        mirrored
            .repository_urls
            .push("https://github.com/acme/shop-mirror".into());
        let plan = plan_push(
            std::slice::from_ref(&mirrored),
            &delivery_keys(std::slice::from_ref(&mirrored)),
            &by_key,
        );
        let mut ids: Vec<&str> = plan.decisions.iter().map(|d| d.stored.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["api", "web"]);
    }

    #[test]
    fn nothing_to_deploy_says_why() {
        let by_key = index(vec![
            app("api", "develop"),
            app("web", "release/*"),
            app("x", "develop"),
        ]);
        let pushes = [push("main", "b")];
        let plan = plan_push(&pushes, &delivery_keys(&pushes), &by_key);
        assert_eq!(
            plan.nothing_to_deploy("acme", &pushes).as_deref(),
            Some(
                "No service of organization acme follows github.com/acme/shop on branch main; 3 follow it on other branches (develop, release/*)."
            )
        );
        let empty: HashMap<String, Vec<Service>> = HashMap::new();
        let plan = plan_push(&pushes, &delivery_keys(&pushes), &empty);
        let message = plan.nothing_to_deploy("acme", &pushes).unwrap();
        assert!(
            message.starts_with("No service of organization acme follows github.com/acme/shop."),
            "{message}"
        );
        let by_key = index(vec![app("api", "main")]);
        assert_eq!(
            plan_push(&pushes, &delivery_keys(&pushes), &by_key).nothing_to_deploy("acme", &pushes),
            None
        );
    }

    #[test]
    fn nothing_to_deploy_explains_a_star_that_does_not_cross_slashes() {
        let by_key = index(vec![app("api", "*"), app("web", "main")]);
        let pushes = [push("feature/x", "b")];
        assert_eq!(
            plan_push(&pushes, &delivery_keys(&pushes), &by_key)
                .nothing_to_deploy("acme", &pushes)
                .as_deref(),
            Some(
                "No service of organization acme follows github.com/acme/shop on branch feature/x; 2 follow it on other branches (*, main). In a branch pattern `*` stays within one `/`-separated part: `*` does not match feature/x; `**` crosses parts."
            )
        );
    }
}
