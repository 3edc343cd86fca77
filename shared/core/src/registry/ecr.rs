//! Amazon ECR, through EventBridge's "ECR Image Action" events.

use serde::Deserialize;
use serde_json::Value;

use super::{ImageSourceKind, RegistryEvent, RegistryEventError, from_value, pushed, wrong_shape};

const ECR_PROVIDER: &str = "Amazon ECR (EventBridge)";

/// Amazon EventBridge "ECR Image Action" event (as a rule or a queue delivers it): a successful
/// `PUSH` with an `image-tag` announces `{account}.dkr.ecr.{region}.amazonaws.com/{repository}`
/// (`.amazonaws.com.cn` in China regions). Other sources, actions (`DELETE`), failed results and
/// pushes by digest alone are ignored.
pub fn parse_ecr_event(event: &Value) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Envelope {
        source: String,
        #[serde(rename = "detail-type")]
        detail_type: String,
    }
    #[derive(Deserialize)]
    struct ImageAction {
        account: String,
        region: String,
        detail: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "action-type")]
        action_type: String,
        result: String,
        #[serde(rename = "repository-name")]
        repository_name: Option<String>,
        #[serde(rename = "image-tag")]
        image_tag: Option<String>,
    }

    let envelope: Envelope = from_value(ECR_PROVIDER, event)?;
    if envelope.source != "aws.ecr" || envelope.detail_type != "ECR Image Action" {
        return Ok(RegistryEvent::ignored(
            "Not an ECR image action event, so it announces no image.",
        ));
    }
    let action: ImageAction = from_value(ECR_PROVIDER, event)?;
    let detail = action.detail;
    let host = registry_host(&action.account, &action.region);
    let tag = detail.image_tag.filter(|t| !t.is_empty());
    // An image action that deploys nothing still names its image, for the history.
    let ignored = |reason| match (&host, &detail.repository_name) {
        (Ok(host), Some(repository)) => RegistryEvent::ignored_image(reason, host, repository, tag.as_deref()),
        _ => RegistryEvent::ignored(reason),
    };
    if detail.action_type != "PUSH" {
        return Ok(ignored("Only an image push announces a new image."));
    }
    if detail.result != "SUCCESS" {
        return Ok(ignored("The push did not succeed, so there is nothing to deploy."));
    }
    let Some(tag) = tag.clone() else {
        return Ok(ignored(
            "The push carries no tag (a digest only), so there is no tag to deploy.",
        ));
    };
    let repository = detail
        .repository_name
        .ok_or_else(|| wrong_shape(ECR_PROVIDER, "missing field `detail.repository-name`".to_owned()))?;
    let host = host.map_err(|reason| wrong_shape(ECR_PROVIDER, reason.to_owned()))?;
    pushed(ECR_PROVIDER, ImageSourceKind::Ecr, &host, &repository, tag)
}

/// The registry of an event's `account` and `region`: `{account}.dkr.ecr.{region}.amazonaws.com`
/// (`.amazonaws.com.cn` in China regions), or why they name none.
fn registry_host(account: &str, region: &str) -> Result<String, &'static str> {
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err("`account` is not a 12-digit AWS account id");
    }
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err("`region` is not an AWS region name");
    }
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(format!("{account}.dkr.ecr.{region}.{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_util::{ignored_image, is_ignored, push};
    use crate::registry::{ImageSourceKind, RegistryEventError};
    use serde_json::{Value, json};

    fn ecr_event() -> Value {
        // Shape from the Amazon ECR user guide ("Events and EventBridge").
        json!({
            "version": "0",
            "id": "13cde686-328b-6117-af20-0e5566167482",
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": "123456789012",
            "time": "2019-11-16T01:54:34Z",
            "region": "us-east-2",
            "resources": [],
            "detail": {
                "result": "SUCCESS",
                "repository-name": "my-repository-name",
                "image-digest": "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
                "action-type": "PUSH",
                "image-tag": "latest"
            }
        })
    }

    #[test]
    fn ecr_push() {
        assert_eq!(
            parse_ecr_event(&ecr_event()),
            Ok(push(
                "123456789012.dkr.ecr.us-east-2.amazonaws.com",
                "my-repository-name",
                "latest",
                ImageSourceKind::Ecr
            ))
        );
        let mut event = ecr_event();
        event["region"] = json!("cn-north-1");
        event["detail"]["repository-name"] = json!("my.team/api");
        event["detail"]["image-tag"] = json!("v1.2.3");
        assert_eq!(
            parse_ecr_event(&event),
            Ok(push(
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "my.team/api",
                "v1.2.3",
                ImageSourceKind::Ecr
            ))
        );
    }

    #[test]
    fn ecr_ignores_what_announces_no_image() {
        let cases: [(&str, Value); 6] = [
            ("/detail/action-type", json!("DELETE")),
            ("/detail/result", json!("FAILURE")),
            ("/detail/image-tag", json!("")),
            ("/detail/image-tag", json!(null)),
            ("/source", json!("aws.s3")),
            ("/detail-type", json!("ECR Image Scan")),
        ];
        for (pointer, value) in cases {
            let mut event = ecr_event();
            *event.pointer_mut(pointer).unwrap() = value;
            assert!(is_ignored(parse_ecr_event(&event)), "{pointer}");
        }
        let mut event = ecr_event();
        event["detail"].as_object_mut().unwrap().remove("image-tag");
        assert!(is_ignored(parse_ecr_event(&event)));
    }

    #[test]
    fn an_ignored_image_action_names_its_image() {
        let host = "123456789012.dkr.ecr.us-east-2.amazonaws.com";
        let named =
            |tag: Option<&str>| Some((host.to_owned(), "my-repository-name".to_owned(), tag.map(str::to_owned)));
        let cases: [(&str, Value, _); 4] = [
            ("/detail/action-type", json!("DELETE"), named(Some("latest"))),
            ("/detail/result", json!("FAILURE"), named(Some("latest"))),
            ("/detail/image-tag", json!(null), named(None)),
            // Not an image action: nothing is named.
            ("/detail-type", json!("ECR Image Scan"), None),
        ];
        for (pointer, value, image) in cases {
            let mut event = ecr_event();
            *event.pointer_mut(pointer).unwrap() = value;
            assert_eq!(ignored_image(parse_ecr_event(&event)), image, "{pointer}");
        }
        // What is no valid name is left out: the event is ignored anyway.
        let mut event = ecr_event();
        event["detail"]["result"] = json!("FAILURE");
        event["account"] = json!("12345");
        assert_eq!(ignored_image(parse_ecr_event(&event)), None);
        event["account"] = json!("123456789012");
        event["detail"]["image-tag"] = json!("-bad");
        assert_eq!(ignored_image(parse_ecr_event(&event)), named(None));
    }

    #[test]
    fn ecr_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_ecr_event(&json!("text")), Err(WrongShape { .. })));
        assert!(matches!(parse_ecr_event(&json!({})), Err(WrongShape { .. })));
        let bad: [(&str, Value); 5] = [
            ("/account", json!("12345")),
            ("/account", json!(123456789012_u64)),
            ("/region", json!("US East")),
            ("/detail", json!("nope")),
            ("/detail/action-type", json!(null)),
        ];
        for (pointer, value) in bad {
            let mut event = ecr_event();
            *event.pointer_mut(pointer).unwrap() = value;
            assert!(matches!(parse_ecr_event(&event), Err(WrongShape { .. })), "{pointer}");
        }
        let mut event = ecr_event();
        event["detail"].as_object_mut().unwrap().remove("repository-name");
        assert!(matches!(parse_ecr_event(&event), Err(WrongShape { .. })));
        let mut event = ecr_event();
        event["detail"]["image-tag"] = json!("-bad");
        assert!(matches!(parse_ecr_event(&event), Err(InvalidTag { .. })));
        let mut event = ecr_event();
        event["detail"]["repository-name"] = json!("Bad/Name");
        assert!(matches!(parse_ecr_event(&event), Err(InvalidImage { .. })));
    }
}
