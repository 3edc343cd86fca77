//! GitHub Packages: the `package` and `registry_package` webhooks of a container package.

use serde::Deserialize;

use super::{ImageSourceKind, RegistryEvent, RegistryEventError, from_body, pushed, wrong_shape};

const GITHUB_PROVIDER: &str = "GitHub";

/// GitHub `package` and `registry_package` webhooks (`event` is the `X-GitHub-Event` header,
/// `body` the JSON: [`crate::push::github_payload`] unwraps a form-encoded delivery).
///
/// Only action `published` of a container package announces an image, on the host of the
/// version's `package_url` (`ghcr.io`). The path is that URL's path, lower-cased as ghcr.io
/// requires (GitHub sends owners as written, `Codertocat`); without a URL it is
/// `{owner}/{name}`. The tag is `container_metadata.tag.name`, else the URL's tag, else a
/// `version` that is not a digest. A version with none of them (pushed by digest only) is
/// ignored, as are pings, other events and actions, and non-container packages.
pub fn parse_github_package(event: &str, body: &[u8]) -> Result<RegistryEvent, RegistryEventError> {
    #[derive(Deserialize)]
    struct Delivery {
        action: String,
        package: Option<Package>,
        registry_package: Option<Package>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: Option<String>,
        ecosystem: Option<String>,
        package_type: Option<String>,
        owner: Option<Owner>,
        package_version: Option<PackageVersion>,
        registry: Option<Registry>,
    }
    #[derive(Deserialize)]
    struct Owner {
        login: String,
    }
    #[derive(Deserialize)]
    struct Registry {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    #[derive(Deserialize)]
    struct PackageVersion {
        version: Option<String>,
        container_metadata: Option<ContainerMetadata>,
        package_url: Option<String>,
    }
    #[derive(Deserialize)]
    struct ContainerMetadata {
        tag: Option<ContainerTag>,
    }
    #[derive(Deserialize)]
    struct ContainerTag {
        name: Option<String>,
    }

    let key = match event.trim() {
        "package" => "package",
        "registry_package" => "registry_package",
        "ping" => {
            return Ok(RegistryEvent::ignored("A ping: GitHub is checking the webhook."));
        }
        _ => {
            return Ok(RegistryEvent::ignored("Not a package event, so it announces no image."));
        }
    };
    let delivery: Delivery = from_body(GITHUB_PROVIDER, body)?;
    if delivery.action != "published" {
        return Ok(RegistryEvent::ignored(
            "Only a published package version announces a new image.",
        ));
    }
    let package = match key {
        "package" => delivery.package,
        _ => delivery.registry_package,
    }
    .ok_or_else(|| wrong_shape(GITHUB_PROVIDER, format!("missing field `{key}`")))?;

    // The first of these GitHub gives decides: they disagree in published events (an npm
    // package's says `"ecosystem": "docker"`, a container's `"package_type": "npm"`), and the
    // registry's type is the one that names where the version went.
    let kind = [
        package.registry.as_ref().and_then(|r| r.kind.as_deref()),
        package.package_type.as_deref(),
        package.ecosystem.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|kind| !kind.is_empty());
    let is_container = kind.is_some_and(|v| v.eq_ignore_ascii_case("container") || v.eq_ignore_ascii_case("docker"));
    if !is_container {
        return Ok(RegistryEvent::ignored(
            "Not a container package, so it announces no image.",
        ));
    }

    let version = package
        .package_version
        .ok_or_else(|| wrong_shape(GITHUB_PROVIDER, format!("missing field `{key}.package_version`")))?;
    let from_url = version.package_url.as_deref().and_then(split_package_url);

    let metadata_tag = version.container_metadata.and_then(|m| m.tag).and_then(|t| t.name);
    let tag = [
        metadata_tag,
        from_url.as_ref().map(|u| u.tag.to_owned()),
        version.version.filter(|v| !v.contains(':')),
    ]
    .into_iter()
    .flatten()
    .find(|t| !t.is_empty());
    let image = match from_url {
        Some(url) => Ok((url.host, url.path.to_ascii_lowercase())),
        None => match (package.owner, package.name) {
            (Some(owner), Some(name)) => Ok(("ghcr.io", format!("{}/{}", owner.login, name).to_ascii_lowercase())),
            _ => Err(wrong_shape(
                GITHUB_PROVIDER,
                format!(
                    "`{key}.package_version.package_url` or `{key}.owner.login` and `{key}.name` are needed to name the image"
                ),
            )),
        },
    };
    let Some(tag) = tag else {
        let reason = "The package version is untagged (a digest only), so there is no tag to deploy.";
        return Ok(match image {
            Ok((registry, path)) => RegistryEvent::ignored_image(reason, registry, &path, None),
            Err(_) => RegistryEvent::ignored(reason),
        });
    };
    let (registry, path) = image?;
    pushed(GITHUB_PROVIDER, ImageSourceKind::GithubPackages, registry, &path, tag)
}

/// The parts of a GitHub `package_url` (`ghcr.io/Owner/name:tag`; the tag may be empty).
struct PackageUrl<'a> {
    host: &'a str,
    path: &'a str,
    tag: &'a str,
}

fn split_package_url(url: &str) -> Option<PackageUrl<'_>> {
    let url = url.strip_prefix("https://").unwrap_or(url);
    let url = url.split_once('@').map_or(url, |(name, _digest)| name);
    let (host, rest) = url.split_once('/')?;
    let (path, tag) = match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, tag),
        _ => (rest, ""),
    };
    (!host.is_empty() && !path.is_empty()).then_some(PackageUrl { host, path, tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_util::{edit, ignored_image, is_ignored, push};
    use crate::registry::{ImageSourceKind, RegistryEventError};
    use serde_json::json;

    const GITHUB_PACKAGE: &[u8] =
        include_bytes!("../../../../tests/fixtures/webhooks/registry/github-package-published.docker.json");
    const GITHUB_REGISTRY_PACKAGE: &[u8] =
        include_bytes!("../../../../tests/fixtures/webhooks/registry/github-registry_package-published.docker.json");
    const GITHUB_NPM_PACKAGE: &[u8] =
        include_bytes!("../../../../tests/fixtures/webhooks/registry/github-package-published.npm.json");

    #[test]
    fn github_fixtures_are_untagged_so_ignored() {
        // Both published examples carry a digest only (`container_metadata.tag.name` is "").
        assert!(is_ignored(parse_github_package("package", GITHUB_PACKAGE)));
        assert!(is_ignored(parse_github_package(
            "registry_package",
            GITHUB_REGISTRY_PACKAGE
        )));
        // Naming the image that was not deployed, for the deliveries history.
        let hello_world = Some(("ghcr.io".to_owned(), "codertocat/hello-world".to_owned(), None));
        assert_eq!(
            ignored_image(parse_github_package("package", GITHUB_PACKAGE)),
            hello_world
        );
        // Without a `package_url`, the owner and the package's name.
        let nameless = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]
                .as_object_mut()
                .unwrap()
                .remove("package_url");
        });
        assert_eq!(
            ignored_image(parse_github_package("package", &nameless)),
            Some(("ghcr.io".to_owned(), "codertocat/hello-world-npm".to_owned(), None))
        );
        // With neither, none: still ignored, not refused.
        let anonymous = edit(&nameless, |v| {
            v["package"].as_object_mut().unwrap().remove("owner");
        });
        assert_eq!(ignored_image(parse_github_package("package", &anonymous)), None);
        // A ping names none.
        assert_eq!(ignored_image(parse_github_package("ping", b"{}")), None);
    }

    #[test]
    fn github_tagged_versions() {
        let tagged = |body: &[u8], key: &str| {
            let key = key.to_owned();
            edit(body, move |v| {
                let version = &mut v[key.as_str()]["package_version"];
                version["container_metadata"]["tag"]["name"] = json!("1.4.0");
                version["package_url"] = json!("ghcr.io/Codertocat/hello-world:1.4.0");
            })
        };
        let want = push(
            "ghcr.io",
            "codertocat/hello-world",
            "1.4.0",
            ImageSourceKind::GithubPackages,
        );
        assert_eq!(
            parse_github_package("package", &tagged(GITHUB_PACKAGE, "package")),
            Ok(want.clone())
        );
        assert_eq!(
            parse_github_package("registry_package", &tagged(GITHUB_REGISTRY_PACKAGE, "registry_package")),
            Ok(want.clone())
        );

        // Tag only in the package URL.
        let body = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["package_url"] = json!("ghcr.io/Codertocat/hello-world:1.4.0");
        });
        assert_eq!(parse_github_package("package", &body), Ok(want.clone()));

        // No package URL: `{owner}/{name}`, lower-cased.
        let body = edit(GITHUB_PACKAGE, |v| {
            let version = &mut v["package"]["package_version"];
            version["container_metadata"]["tag"]["name"] = json!("latest");
            version.as_object_mut().unwrap().remove("package_url");
        });
        assert_eq!(
            parse_github_package("package", &body),
            Ok(push(
                "ghcr.io",
                "codertocat/hello-world-npm",
                "latest",
                ImageSourceKind::GithubPackages
            ))
        );

        // A non-digest `version` is a tag when nothing else names one.
        let body = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["version"] = json!("2.0.0")
        });
        assert_eq!(
            parse_github_package("package", &body),
            Ok(push(
                "ghcr.io",
                "codertocat/hello-world",
                "2.0.0",
                ImageSourceKind::GithubPackages
            ))
        );
    }

    #[test]
    fn a_form_encoded_delivery_is_unwrapped_as_git_pushes_are() {
        let json = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["container_metadata"]["tag"]["name"] = json!("1.4.0");
        });
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json).unwrap())
            .finish();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let payload = crate::push::github_payload(&headers, form.as_bytes()).unwrap();
        assert_eq!(
            parse_github_package("package", payload.as_bytes()),
            parse_github_package("package", &json)
        );
        assert!(matches!(
            parse_github_package("package", payload.as_bytes()),
            Ok(RegistryEvent::Pushed(_))
        ));
    }

    #[test]
    fn github_ignores_what_announces_no_image() {
        assert!(is_ignored(parse_github_package(
            "ping",
            b"{\"zen\": \"Keep it simple.\"}"
        )));
        assert!(is_ignored(parse_github_package("push", b"not even json")));
        let updated = edit(GITHUB_PACKAGE, |v| v["action"] = json!("updated"));
        assert!(is_ignored(parse_github_package("package", &updated)));
        let npm = edit(GITHUB_PACKAGE, |v| {
            let package = &mut v["package"];
            package["ecosystem"] = json!("npm");
            package["registry"]["type"] = json!("npm");
            package["package_version"]["container_metadata"]["tag"]["name"] = json!("1.0.0");
        });
        assert!(is_ignored(parse_github_package("package", &npm)));
        // As published: an npm package whose `ecosystem` says `docker`.
        assert!(is_ignored(parse_github_package("package", GITHUB_NPM_PACKAGE)));
        let maven = edit(GITHUB_NPM_PACKAGE, |v| {
            v["package"]["package_type"] = json!("maven");
            v["package"]["registry"]["type"] = json!("maven");
        });
        assert!(is_ignored(parse_github_package("package", &maven)));
        // Without a registry, the package type decides; without either, the ecosystem.
        let typed = |package_type: &str, ecosystem: &str| {
            let (package_type, ecosystem) = (package_type.to_owned(), ecosystem.to_owned());
            edit(GITHUB_NPM_PACKAGE, move |v| {
                let package = v["package"].as_object_mut().unwrap();
                package.remove("registry");
                if package_type.is_empty() {
                    package.remove("package_type");
                } else {
                    package["package_type"] = json!(package_type);
                }
                package["ecosystem"] = json!(ecosystem);
            })
        };
        assert!(is_ignored(parse_github_package("package", &typed("npm", "docker"))));
        assert!(matches!(
            parse_github_package("package", &typed("CONTAINER", "npm")),
            Ok(RegistryEvent::Pushed(_))
        ));
        assert!(matches!(
            parse_github_package("package", &typed("", "CONTAINER")),
            Ok(RegistryEvent::Pushed(_))
        ));
        assert!(is_ignored(parse_github_package("package", &typed("", "npm"))));
    }

    #[test]
    fn github_malformed() {
        use RegistryEventError::*;
        assert!(matches!(parse_github_package("package", b"{"), Err(NotJson(_))));
        assert!(matches!(parse_github_package("package", b"{}"), Err(WrongShape { .. })));
        // The event header and the body disagree.
        let err = parse_github_package("package", GITHUB_REGISTRY_PACKAGE).unwrap_err();
        assert!(err.to_string().contains("`package`"), "{err}");
        let no_version = edit(GITHUB_PACKAGE, |v| {
            v["package"].as_object_mut().unwrap().remove("package_version");
        });
        assert!(matches!(
            parse_github_package("package", &no_version),
            Err(WrongShape { .. })
        ));
        let bad_tag = edit(GITHUB_PACKAGE, |v| {
            v["package"]["package_version"]["container_metadata"]["tag"]["name"] = json!("bad tag");
        });
        assert!(matches!(
            parse_github_package("package", &bad_tag),
            Err(InvalidTag { .. })
        ));
        let bad_action = edit(GITHUB_PACKAGE, |v| v["action"] = json!(1));
        assert!(matches!(
            parse_github_package("package", &bad_action),
            Err(WrongShape { .. })
        ));
        let no_name = edit(GITHUB_PACKAGE, |v| {
            let package = v["package"].as_object_mut().unwrap();
            package.remove("name");
            let version = package["package_version"].as_object_mut().unwrap();
            version.remove("package_url");
            version["container_metadata"]["tag"]["name"] = json!("1.0.0");
        });
        assert!(matches!(
            parse_github_package("package", &no_name),
            Err(WrongShape { .. })
        ));
    }

    #[test]
    fn package_urls() {
        let split = |s| split_package_url(s).map(|u| (u.host, u.path, u.tag));
        assert_eq!(split("ghcr.io/Owner/name:1.0"), Some(("ghcr.io", "Owner/name", "1.0")));
        assert_eq!(split("ghcr.io/owner/name:"), Some(("ghcr.io", "owner/name", "")));
        assert_eq!(split("ghcr.io/owner/name"), Some(("ghcr.io", "owner/name", "")));
        assert_eq!(split("https://ghcr.io/o/a/b@sha256:ab"), Some(("ghcr.io", "o/a/b", "")));
        assert_eq!(split("ghcr.io"), None);
        assert_eq!(split("ghcr.io/:1"), None);
    }
}
