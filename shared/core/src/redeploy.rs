//! The rules of making a finished deployment again (a redeploy), without I/O: which
//! deployments may be, and the id the new one takes.

use crate::branch::branch_matches;
use crate::deployment::{DeploymentRequest, DeploymentStatus, Trigger};
use crate::model::{Service, ServiceKind};

/// How `service` moved away from what `request` deployed, when it did: its kind or
/// environment, its image's tag (the desired state: the tag set since, or announced), or its
/// repository, branch or current commit.
pub fn moved_away(service: &Service, request: &DeploymentRequest, current_commit: Option<&str>) -> Option<String> {
    let spec = &service.spec;
    if spec.kind != request.service_kind || spec.environment_id != request.environment_id {
        return Some(format!(
            "it is now {} in {}, and the deployment was for {} in {}",
            with_article(spec.kind),
            spec.environment_id,
            with_article(request.service_kind),
            request.environment_id
        ));
    }
    match &request.trigger {
        Trigger::ImageTag { tag, .. } => match &spec.image {
            Some(image) if image.tag == *tag => None,
            Some(image) => Some(format!("its image's tag is now {}, not {tag}", image.tag)),
            None => Some("it runs no image now".to_owned()),
        },
        Trigger::GitPush {
            repository,
            branch,
            commit_sha,
            ..
        } => {
            if service.repository_key().as_deref() != Some(repository.as_str()) {
                Some(format!("it no longer follows {repository}"))
            } else if !spec
                .git_repository
                .as_ref()
                .is_some_and(|git| branch_matches(&git.branch, branch))
            {
                Some(format!("it no longer follows branch {branch}"))
            } else if current_commit != Some(commit_sha.as_str()) {
                Some(format!(
                    "its current commit is {}, not {commit_sha}",
                    current_commit.unwrap_or("unknown")
                ))
            } else {
                None
            }
        }
    }
}

/// `a CONTAINER`, `an APPLICATION`.
fn with_article(kind: ServiceKind) -> String {
    let article = if kind == ServiceKind::Application { "an" } else { "a" };
    format!("{article} {}", kind.as_str())
}

/// The deployment id right after `id` (as a 128-bit number), when `id` is one.
pub fn id_after(id: &str) -> Option<String> {
    let next = u128::from_str_radix(id, 16).ok()?.checked_add(1)?;
    Some(format!("{next:032x}"))
}

/// Why a deployment in `status` cannot be made again, when it cannot.
pub fn not_finished(status: DeploymentStatus) -> Option<&'static str> {
    match status {
        DeploymentStatus::Delivered | DeploymentStatus::Failed => None,
        DeploymentStatus::Superseded => Some("a newer deployment of its service replaced it"),
        DeploymentStatus::Pending | DeploymentStatus::Queued | DeploymentStatus::InProgress => {
            Some("it is still under way")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::SCHEMA;
    use crate::model::parse_service_document;
    use crate::provider::GitProvider;
    use crate::registry::ImageSourceKind;
    use serde_json::{Value, json};

    fn service(doc: Value) -> Service {
        Service {
            id: "api".into(),
            organization_id: "acme".into(),
            spec: parse_service_document("acme", "api", &doc).unwrap(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn app(branch: &str) -> Service {
        service(json!({"environment_id": "production", "kind": "APPLICATION",
            "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/shop", "branch": branch}}))
    }

    fn container(tag: &str) -> Service {
        service(json!({"environment_id": "production", "kind": "CONTAINER",
            "image": {"registry": "ghcr.io", "image_name": "acme/api", "tag": tag}}))
    }

    fn request(kind: ServiceKind, trigger: Trigger) -> DeploymentRequest {
        let (git_commit_id, image_tag) = match &trigger {
            Trigger::GitPush { commit_sha, .. } => (Some(commit_sha.clone()), None),
            Trigger::ImageTag { tag, .. } => (None, Some(tag.clone())),
        };
        DeploymentRequest {
            schema: SCHEMA.to_owned(),
            deployment_id: "01a251c4d71e7412b1c5e2c76f23d160".to_owned(),
            organization_id: "acme".to_owned(),
            environment_id: "production".to_owned(),
            service_id: "api".to_owned(),
            service_kind: kind,
            git_commit_id,
            image_tag,
            trigger,
            requested_at: "2026-12-07T12:00:00Z".to_owned(),
        }
    }

    fn pushed(branch: &str, commit: &str) -> DeploymentRequest {
        request(
            ServiceKind::Application,
            Trigger::GitPush {
                provider: GitProvider::Github,
                repository: "github.com/acme/shop".to_owned(),
                branch: branch.to_owned(),
                before: "0".repeat(40),
                commit_sha: commit.to_owned(),
                delivery_id: None,
                pusher: None,
            },
        )
    }

    fn tagged(tag: &str) -> DeploymentRequest {
        request(
            ServiceKind::Container,
            Trigger::ImageTag {
                source: ImageSourceKind::Api,
                registry: "ghcr.io".to_owned(),
                image_name: "acme/api".to_owned(),
                previous_tag: None,
                tag: tag.to_owned(),
            },
        )
    }

    #[test]
    fn a_deployment_is_made_again_only_of_what_the_service_runs() {
        let commit = "9049f1265b7d61be4a8904a9a27120d2064dab3b";
        assert_eq!(moved_away(&app("main"), &pushed("main", commit), Some(commit)), None);
        assert_eq!(
            moved_away(&app("release/*"), &pushed("release/1", commit), Some(commit)),
            None
        );
        assert_eq!(moved_away(&container("1.0"), &tagged("1.0"), None), None);
        let refusals = [
            moved_away(&app("main"), &pushed("develop", commit), Some(commit)),
            moved_away(&app("main"), &pushed("main", commit), Some("a".repeat(40).as_str())),
            moved_away(&app("main"), &pushed("main", commit), None),
            moved_away(&container("1.5"), &tagged("1.0"), None),
            moved_away(&container("1.0"), &pushed("main", commit), Some(commit)),
        ];
        let says = [
            "it no longer follows branch develop",
            "its current commit is aaaa",
            "its current commit is unknown",
            "its image's tag is now 1.5, not 1.0",
            "it is now a CONTAINER in production, and the deployment was for an APPLICATION in production",
        ];
        for (refusal, says) in refusals.into_iter().zip(says) {
            assert!(refusal.as_deref().is_some_and(|r| r.starts_with(says)), "{refusal:?}");
        }
        let mut elsewhere = app("main");
        if let Some(git) = elsewhere.spec.git_repository.as_mut() {
            git.url = "https://github.com/acme/other".to_owned();
        }
        assert_eq!(
            moved_away(&elsewhere, &pushed("main", commit), Some(commit)).as_deref(),
            Some("it no longer follows github.com/acme/shop")
        );
    }

    #[test]
    fn the_id_made_again_sorts_right_after_the_one_it_repeats() {
        let id = "01a251c4d71e7412b1c5e2c76f23d160";
        assert_eq!(id_after(id).as_deref(), Some("01a251c4d71e7412b1c5e2c76f23d161"));
        assert_eq!(
            id_after("01a251c4d71e7412b1c5e2c76f23d1ff").as_deref(),
            Some("01a251c4d71e7412b1c5e2c76f23d200")
        );
        assert_eq!(id_after(&"f".repeat(32)), None);
        assert_eq!(id_after("not hex"), None);
    }

    #[test]
    fn only_a_finished_deployment_is_made_again() {
        for status in [DeploymentStatus::Delivered, DeploymentStatus::Failed] {
            assert_eq!(not_finished(status), None);
        }
        for status in [
            DeploymentStatus::Pending,
            DeploymentStatus::Queued,
            DeploymentStatus::InProgress,
            DeploymentStatus::Superseded,
        ] {
            assert!(not_finished(status).is_some(), "{status:?}");
        }
    }
}
