//! The deliveries history: every request that reached an organization's webhook,
//! registry-webhook or image-tag route, with what became of it and why (SPEC "Deliveries —
//! why didn't it deploy?"). Never a body, a header, a secret, a signature or a token.

use serde::{Deserialize, Serialize};

use crate::provider::GitProvider;

/// Who sent a delivery: a git provider's push webhook, or an image-tag route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliverySource {
    Git(GitProvider),
    ContainerApi,
    JobApi,
    Dockerhub,
    GithubPackages,
    Ecr,
}

impl DeliverySource {
    /// The sources that are not a git provider.
    const ROUTES: [DeliverySource; 5] = [
        DeliverySource::ContainerApi,
        DeliverySource::JobApi,
        DeliverySource::Dockerhub,
        DeliverySource::GithubPackages,
        DeliverySource::Ecr,
    ];

    /// Every source: each git provider, then the image-tag routes.
    pub const ALL: [DeliverySource; GitProvider::ALL.len() + Self::ROUTES.len()] = {
        let git = GitProvider::ALL;
        let mut all = [DeliverySource::Ecr; GitProvider::ALL.len() + Self::ROUTES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < git.len() {
                DeliverySource::Git(git[i])
            } else {
                Self::ROUTES[i - git.len()]
            };
            i += 1;
        }
        all
    };

    /// A git provider's source is named as its webhook route is (`github`, `bitbucket-server`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverySource::Git(provider) => provider.slug(),
            DeliverySource::ContainerApi => "container-api",
            DeliverySource::JobApi => "job-api",
            DeliverySource::Dockerhub => "dockerhub",
            DeliverySource::GithubPackages => "github-packages",
            DeliverySource::Ecr => "ecr",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == s)
    }
}

impl From<GitProvider> for DeliverySource {
    fn from(provider: GitProvider) -> Self {
        DeliverySource::Git(provider)
    }
}

impl Serialize for DeliverySource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeliverySource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown delivery source {name}")))
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryOutcome {
    /// At least one deployment was queued.
    Queued,
    /// Verified and read, and no service took it (each skip says why).
    NothingToDeploy,
    /// Nothing to look at: a ping, a tag push, a deleted branch, another event.
    Ignored,
    /// Processed before (the same delivery id, or the same registry notification).
    Duplicate,
    /// Refused: unauthenticated, unverifiable or malformed (a 4xx).
    Rejected,
    /// The product failed to process it (a 5xx); a retry may succeed.
    Error,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 6] = [
        DeliveryOutcome::Queued,
        DeliveryOutcome::NothingToDeploy,
        DeliveryOutcome::Ignored,
        DeliveryOutcome::Duplicate,
        DeliveryOutcome::Rejected,
        DeliveryOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Queued => "QUEUED",
            DeliveryOutcome::NothingToDeploy => "NOTHING_TO_DEPLOY",
            DeliveryOutcome::Ignored => "IGNORED",
            DeliveryOutcome::Duplicate => "DUPLICATE",
            DeliveryOutcome::Rejected => "REJECTED",
            DeliveryOutcome::Error => "ERROR",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == s)
    }
}

/// A service a delivery reached and did not deploy, and why (`AUTO_DEPLOY_DISABLED`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedService {
    pub service_id: String,
    pub reason: String,
}

/// One delivery, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Time-ordered: the history lists newest first by id.
    pub id: String,
    #[serde(skip)]
    pub organization_id: String,
    pub received_at: String,
    pub source: DeliverySource,
    /// The provider's delivery id, when it sent one.
    pub delivery_id: Option<String>,
    pub http_status: u16,
    pub outcome: DeliveryOutcome,
    /// Why it was rejected or ignored, or why nothing deployed; what was queued otherwise.
    pub reason: String,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub image: Option<String>,
    pub tag: Option<String>,
    /// The deployment ids queued.
    pub queued: Vec<String>,
    pub skipped: Vec<SkippedService>,
    pub dry_run: bool,
}

/// Rejected deliveries recorded per organization per minute at most; the rest are only
/// counted in logs and metrics, so unauthenticated traffic cannot flush the history.
pub const REJECTED_PER_MINUTE: u32 = 60;

/// Rejected deliveries the standalone server's history keeps per organization, the newest:
/// the rest of its [`DELIVERY_HISTORY_PER_ORGANIZATION`] is left to accepted deliveries, which
/// refusals, however long they go on, cannot push out.
pub const REJECTED_KEPT: u32 = 100;

/// The budget that the refusals of every organization with nothing set up (a name in a
/// webhook URL nobody configured) share: [`REJECTED_PER_MINUTE`] a minute for all of them
/// together. No organization is named so.
pub const UNCONFIGURED_BUDGET: &str = "*";

/// Refusals of organizations with nothing set up the standalone server keeps, the newest, all
/// of them together: inventing organization names cannot grow the history past it.
pub const UNCONFIGURED_REJECTED_KEPT: u32 = 1_000;

/// How long a refusal of an organization with nothing set up stays in the history on AWS
/// (where the table's TTL bounds it): a day, so that invented names hold at most a day of the
/// shared budget.
pub const UNCONFIGURED_REJECTED_RETENTION_SECS: i64 = 24 * 60 * 60;

/// How long a delivery stays in the history (SPEC: 30 days).
pub const DELIVERY_HISTORY_RETENTION_SECS: i64 = 30 * 24 * 60 * 60;

/// The newest deliveries the standalone server keeps per organization.
pub const DELIVERY_HISTORY_PER_ORGANIZATION: u32 = 1_000;

/// A delivery's record before its deployments are recorded: completed, in the same write, by
/// what the write did for each candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryDraft {
    pub record: DeliveryRecord,
    /// For each candidate, in order, how many of the record's skipped entries come before it
    /// in the answer: where its `ALREADY_QUEUED` entry goes, so that the history lists the
    /// skipped services in the order the answer does. A candidate without a slot goes last.
    pub slots: Vec<usize>,
    /// Why services the delivery reached were not deployed, where the skip reasons alone do
    /// not say (a tag policy's refusal): added to the reason the write gives the record.
    pub skip_details: String,
}

/// What a write did for one candidate deployment, for [`HistoryDraft::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateFate<'a> {
    /// Recorded under this deployment id.
    Recorded(&'a str),
    /// Its guard did not hold: the service already queued it.
    AlreadyQueued { service_id: &'a str },
}

impl HistoryDraft {
    /// The record as it ends: every recorded deployment in `queued`, every candidate whose
    /// guard failed skipped `ALREADY_QUEUED`; `QUEUED` (202) when anything was recorded, else
    /// `NOTHING_TO_DEPLOY` (200) with the reason the draft carries.
    pub fn complete<'a>(&self, fates: impl IntoIterator<Item = CandidateFate<'a>>) -> DeliveryRecord {
        let mut record = self.record.clone();
        let mut candidates = 0;
        let mut inserted = 0;
        for (at, fate) in fates.into_iter().enumerate() {
            candidates += 1;
            match fate {
                CandidateFate::Recorded(id) => record.queued.push(id.to_owned()),
                CandidateFate::AlreadyQueued { service_id } => {
                    let entry = SkippedService {
                        service_id: service_id.to_owned(),
                        reason: "ALREADY_QUEUED".to_owned(),
                    };
                    // The earlier candidates' entries come before this one's as well.
                    let slot = self.slots.get(at).map(|slot| slot + inserted);
                    match slot.filter(|&slot| slot <= record.skipped.len()) {
                        Some(slot) => record.skipped.insert(slot, entry),
                        None => record.skipped.push(entry),
                    }
                    inserted += 1;
                }
            }
        }
        if record.queued.is_empty() {
            record.outcome = DeliveryOutcome::NothingToDeploy;
            record.http_status = 200;
            // Candidates that all turned out queued already: the draft's reason (written
            // before the write knew) does not say so.
            if record.reason.is_empty() || candidates > 0 {
                record.reason = nothing_deployed(&record.skipped) + &self.skip_details;
            }
        } else {
            record.outcome = DeliveryOutcome::Queued;
            record.http_status = 202;
            record.reason = format!(
                "{} deployment{} queued.{}",
                record.queued.len(),
                if record.queued.len() == 1 { "" } else { "s" },
                self.skip_details
            );
        }
        record
    }
}

/// Whether a provider's delivery id reads as an id (letters, digits and `-_.:{}`, as UUIDs,
/// GitLab's and Bitbucket's ids are written), not as a sentence: what the history keeps of a
/// refused delivery's id, which anyone can send.
pub fn reads_as_an_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:{}".contains(&b))
}

/// Why a delivery that reached services deployed none, from their skip reasons.
pub fn nothing_deployed(skipped: &[SkippedService]) -> String {
    if skipped.is_empty() {
        return "No service takes this delivery.".to_owned();
    }
    let mut reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    format!(
        "{} service{} reached, none deployed: {}.",
        skipped.len(),
        if skipped.len() == 1 { "" } else { "s" },
        reasons.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> HistoryDraft {
        HistoryDraft {
            record: DeliveryRecord {
                id: "1".into(),
                organization_id: "acme".into(),
                received_at: "t".into(),
                source: DeliverySource::Git(GitProvider::Github),
                delivery_id: None,
                http_status: 0,
                outcome: DeliveryOutcome::Queued,
                reason: String::new(),
                repository: Some("github.com/acme/shop".into()),
                branch: Some("main".into()),
                commit_sha: None,
                image: None,
                tag: None,
                queued: Vec::new(),
                skipped: vec![SkippedService {
                    service_id: "off".into(),
                    reason: "AUTO_DEPLOY_DISABLED".into(),
                }],
                dry_run: false,
            },
            slots: Vec::new(),
            skip_details: String::new(),
        }
    }

    #[test]
    fn ids_read_as_ids() {
        for id in ["72d3162e-cc78-11e3-81ab-4c9367dc0958", "{b1c2}", "12345", "d-1.2:3_x"] {
            assert!(reads_as_an_id(id), "{id}");
        }
        for id in [
            "",
            "spoof: please rotate your secret at https://evil.example/",
            "a b",
            "<b>",
        ] {
            assert!(!reads_as_an_id(id), "{id}");
        }
    }

    #[test]
    fn a_record_keeps_the_details_of_its_skips() {
        let draft = HistoryDraft {
            skip_details: " Service web: 1.0.0 is outside the SEMVER range >=2.".into(),
            ..draft()
        };
        let done = draft.complete([CandidateFate::Recorded("d1")]);
        assert_eq!(
            done.reason,
            "1 deployment queued. Service web: 1.0.0 is outside the SEMVER range >=2."
        );
        let none = draft.complete([CandidateFate::AlreadyQueued { service_id: "api" }]);
        assert_eq!(
            none.reason,
            "2 services reached, none deployed: ALREADY_QUEUED, AUTO_DEPLOY_DISABLED. Service web: 1.0.0 is outside the SEMVER range >=2."
        );
    }

    #[test]
    fn a_draft_completes_with_what_the_write_did() {
        let done = draft().complete([
            CandidateFate::Recorded("d1"),
            CandidateFate::AlreadyQueued { service_id: "web" },
        ]);
        assert_eq!((done.outcome, done.http_status), (DeliveryOutcome::Queued, 202));
        assert_eq!(done.queued, vec!["d1"]);
        assert_eq!(done.skipped.len(), 2);
        let none = draft().complete([CandidateFate::AlreadyQueued { service_id: "web" }]);
        assert_eq!(
            (none.outcome, none.http_status),
            (DeliveryOutcome::NothingToDeploy, 200)
        );
        assert_eq!(
            none.reason,
            "2 services reached, none deployed: ALREADY_QUEUED, AUTO_DEPLOY_DISABLED."
        );
        // The draft was written before the write knew: its reason gives way to the fates'.
        let mut early = draft();
        early.record.skipped.clear();
        early.record.reason = nothing_deployed(&[]);
        let replayed = early.complete([CandidateFate::AlreadyQueued { service_id: "api" }]);
        assert_eq!(replayed.reason, "1 service reached, none deployed: ALREADY_QUEUED.");
        let nobody = early.complete([]);
        assert_eq!(nobody.reason, "No service takes this delivery.");
    }

    /// Skipped services are listed in the answer's order: each candidate whose guard failed
    /// at its slot among the services the plan skipped, not after them.
    #[test]
    fn already_queued_entries_take_their_slots() {
        let mut draft = draft();
        draft.record.skipped.push(SkippedService {
            service_id: "zed".into(),
            reason: "BRANCH_MISMATCH".into(),
        });
        // Answer's order: api (candidate), off, web (candidate), worker (candidate), zed.
        draft.slots = vec![0, 1, 1];
        let done = draft.complete([
            CandidateFate::AlreadyQueued { service_id: "api" },
            CandidateFate::Recorded("d-web"),
            CandidateFate::AlreadyQueued { service_id: "worker" },
        ]);
        let order: Vec<&str> = done.skipped.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(order, ["api", "off", "worker", "zed"]);
        assert_eq!(done.queued, ["d-web"]);
        // Without slots (or past them), an entry goes last.
        draft.slots = vec![9];
        let done = draft.complete([CandidateFate::AlreadyQueued { service_id: "api" }]);
        let order: Vec<&str> = done.skipped.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(order, ["off", "zed", "api"]);
    }

    #[test]
    fn names_round_trip() {
        for source in DeliverySource::ALL {
            assert_eq!(DeliverySource::parse(source.as_str()), Some(source));
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
        }
        for outcome in DeliveryOutcome::ALL {
            assert_eq!(DeliveryOutcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
    }
}
