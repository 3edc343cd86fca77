//! Docker Hub's push webhook.

use serde::Deserialize;

use super::{ImageSourceKind, RegistryEvent, RegistryEventError, from_body, pushed};
use crate::image::DOCKER_HUB;

const DOCKER_HUB_PROVIDER: &str = "Docker Hub";

/// Docker Hub push webhook: the tag is `push_data.tag`, the repository `repository.repo_name`
/// (`acme/api`, or `nginx` for an official image, stored as `library/nginx`), on `docker.io`.
pub fn parse_dockerhub(body: &[u8]) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Push {
        push_data: PushData,
        repository: Repository,
    }
    #[derive(Deserialize)]
    struct PushData {
        #[serde(default)]
        tag: Option<String>,
    }
    #[derive(Deserialize)]
    struct Repository {
        repo_name: String,
    }

    let push: Push = from_body(DOCKER_HUB_PROVIDER, body)?;
    let Some(tag) = push.push_data.tag.filter(|t| !t.is_empty()) else {
        return Ok(RegistryEvent::ignored_image(
            "The push carries no tag, so there is no tag to deploy.",
            DOCKER_HUB,
            &push.repository.repo_name,
            None,
        ));
    };
    pushed(
        DOCKER_HUB_PROVIDER,
        ImageSourceKind::DockerHub,
        DOCKER_HUB,
        &push.repository.repo_name,
        tag,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_util::{edit, ignored_image, is_ignored, push};
    use crate::registry::{ImageSourceKind, RegistryEventError};
    use serde_json::json;

    const DOCKERHUB_PUSH: &[u8] = include_bytes!("../../../../tests/fixtures/webhooks/registry/dockerhub-push.json");

    #[test]
    fn dockerhub_fixture() {
        assert_eq!(
            parse_dockerhub(DOCKERHUB_PUSH),
            Ok(push("docker.io", "acme/api", "v2.4.1", ImageSourceKind::DockerHub))
        );
    }

    #[test]
    fn dockerhub_official_image_gets_library() {
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!("nginx"));
        assert_eq!(
            parse_dockerhub(&body),
            Ok(push("docker.io", "library/nginx", "v2.4.1", ImageSourceKind::DockerHub))
        );
    }

    #[test]
    fn dockerhub_without_tag_is_ignored() {
        for tag in [json!(""), json!(null)] {
            let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = tag);
            assert!(is_ignored(parse_dockerhub(&body)));
            // Which image was not deployed, for the deliveries history.
            assert_eq!(
                ignored_image(parse_dockerhub(&body)),
                Some(("docker.io".to_owned(), "acme/api".to_owned(), None))
            );
        }
        // A name that is no image name is left out, not refused: nothing is deployed anyway.
        let body = edit(DOCKERHUB_PUSH, |v| {
            v["push_data"]["tag"] = json!(null);
            v["repository"]["repo_name"] = json!("Acme/API");
        });
        assert_eq!(ignored_image(parse_dockerhub(&body)), None);
    }

    #[test]
    fn dockerhub_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_dockerhub(b"not json"), Err(NotJson(_))));
        assert!(matches!(parse_dockerhub(b"\xff\xfe"), Err(NotJson(_))));
        for (body, detail) in [
            (&b"[]"[..], "invalid type: array, expected an object"),
            (b"[1]", "invalid type: array, expected an object"),
            (b"\"x\"", "invalid type: string, expected an object"),
        ] {
            assert_eq!(
                parse_dockerhub(body).unwrap_err().to_string(),
                format!("The body is not a notification as Docker Hub sends it: {detail}.")
            );
        }
        assert!(matches!(parse_dockerhub(b"{}"), Err(WrongShape { .. })));
        // In JSON's words, not Rust's.
        let body = edit(DOCKERHUB_PUSH, |v| v["push_data"] = json!(true));
        assert_eq!(
            parse_dockerhub(&body).unwrap_err().to_string(),
            "The body is not a notification as Docker Hub sends it: push_data: invalid type: boolean, expected an object."
        );
        let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = json!(5));
        let err = parse_dockerhub(&body).unwrap_err();
        assert!(err.to_string().contains("push_data.tag"), "{err}");
        let body = edit(DOCKERHUB_PUSH, |v| v["push_data"]["tag"] = json!("-bad"));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidTag { .. })));
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!("Acme/API"));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidImage { .. })));
        // An error about the body names the rule, never the body's text (lower-cased or not).
        for name in ["Secret-Fragment/xxx", "a/Xxx-Fragment", "UPPERX"] {
            let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!(name));
            let err = parse_dockerhub(&body).unwrap_err().to_string();
            assert!(err.contains("must be lower-case"), "{err}");
            assert!(!err.to_lowercase().contains(&name.to_lowercase()), "{err}");
            // Docker Hub wrote the name: no advice for a CI job's author.
            assert!(!err.contains("GitHub Actions"), "{err}");
        }
        let body = edit(DOCKERHUB_PUSH, |v| v["repository"]["repo_name"] = json!(""));
        assert!(matches!(parse_dockerhub(&body), Err(InvalidImage { .. })));
    }
}
