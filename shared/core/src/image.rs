//! Docker-style image references: parsing, validation and normalization.
//!
//! Services store their image as a normalized `(registry, path)` pair so that every way of
//! writing the same image (`nginx`, `docker.io/library/nginx`, `index.docker.io/nginx`) lands on
//! one key. The grammar follows Docker's reference grammar (`distribution/reference`), with two
//! deliberate differences: an upper-case path is an error rather than being read as a registry
//! host, and tags or digests are refused in an image name, because the deploy endpoint takes the
//! tag as its own field.

use std::fmt;

/// The canonical host of Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";

/// Docker's cap on a repository name (`NameTotalLengthMax`).
pub const MAX_NAME_LEN: usize = 255;

/// Docker's cap on a tag.
pub const MAX_TAG_LEN: usize = 128;

/// Hosts that are all Docker Hub, as Docker itself treats them.
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Why an image name, registry host or tag was refused. Each message is a phrase about the
/// field that holds the value (`image_name: must be lower-case, as Docker requires…`), and none
/// repeats what was sent, which may hold a credential (`user:pa55word@ghcr.io`), except a
/// lower-cased name to write instead and registry hosts that are valid host names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("must not be empty")]
    EmptyName,
    #[error("is {len} characters long; at most {max} are allowed")]
    NameTooLong { len: usize, max: usize },
    #[error("must not start with a URL scheme: write `ghcr.io/acme/api`, not `https://ghcr.io/acme/api`")]
    Scheme,
    #[error(
        "must not carry a tag (`:…`): send the repository alone as `image_name` and the tag in its own `tag` field"
    )]
    TagInName { tag: String },
    #[error(
        "must not carry a digest (`@…`): send the repository alone as `image_name` and a tag in its own `tag` field"
    )]
    DigestInName,
    #[error(
        "must not carry user info or a password (`user:password@`): registry credentials are never needed here, remove them"
    )]
    UserInfo,
    #[error("has an empty path segment (a leading, trailing or doubled `/`)")]
    EmptyPathSegment,
    #[error("must be lower-case, as Docker requires{suggestion}{advice}")]
    UpperCasePath { suggestion: String, advice: &'static str },
    #[error(
        "has a path segment that is not valid: a segment is lower-case letters and digits, optionally joined by `.`, `_`, `__` or dashes, and starts and ends with a letter or digit"
    )]
    InvalidPathSegment,
    #[error("must not be empty")]
    EmptyRegistry,
    #[error("must be a registry host name with an optional port: write `ghcr.io`, without a scheme or a path")]
    RegistryNotHost,
    #[error(
        "has an invalid registry host: expected a host name or bracketed IPv6 address, with an optional `:port` (1-65535)"
    )]
    InvalidRegistry,
    #[error(
        "starts with the registry host `{in_name}`, which differs from the service's registry `{registry}`: put the host in `registry` and only the repository path in `image_name`"
    )]
    RegistryMismatch { in_name: String, registry: String },
    #[error(
        "starts with the registry host `{in_name}`, but `registry` is not given, so it is Docker Hub's `docker.io`: give `\"registry\": \"{in_name}\"` and only the repository path in `image_name`"
    )]
    RegistryNotGiven { in_name: String },
    #[error("names the registry host `{host}` and no repository path after it, e.g. `{host}/acme/api`")]
    HostOnly { host: String },
    #[error("must not be empty")]
    EmptyTag,
    #[error("is {len} characters long; at most {max} are allowed", max = MAX_TAG_LEN)]
    TagTooLong { len: usize },
    #[error(
        "is not a valid tag: a tag starts with a letter, digit or `_` and holds only letters, digits, `_`, `.` and `-`"
    )]
    InvalidTag,
}

/// For names a CI job or a person writes (not a registry's notification).
const CI_LOWER_CASE_ADVICE: &str = "; a name made from one with capitals must be lower-cased first (in GitHub Actions, \
     `${{ github.repository }}` keeps the owner's capitals: lower-case it, e.g. with `tr '[:upper:]' '[:lower:]'`)";

/// A parsed `image_name` as sent to the deploy endpoint: an optional registry host plus a
/// repository path.
///
/// With a host, `registry` is normalized and `path` is the normalized path on it. Without one,
/// `path` is kept as written, because the SPEC matches a bare name against every registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub registry: Option<String>,
    pub path: String,
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.registry {
            Some(registry) => write!(f, "{registry}/{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

impl ImageName {
    /// The normalized paths to look services up by, since the store indexes them by path
    /// alone: `api` → `["api", "library/api"]` (the second for Docker Hub official images),
    /// `acme/api` → `["acme/api"]`. Candidates still go through [`ImageName::matches`].
    pub fn lookup_paths(&self) -> Vec<String> {
        if self.registry.is_none() && !self.path.contains('/') {
            vec![self.path.clone(), format!("library/{}", self.path)]
        } else {
            vec![self.path.clone()]
        }
    }

    /// Whether a service's image (registry and path both already normalized) is this image.
    ///
    /// Per the SPEC: without a registry host, a service matches when its path equals the name
    /// on any registry, or is `library/<name>` on Docker Hub; with a host, only that registry
    /// and path match.
    pub fn matches(&self, service_registry: &str, service_path: &str) -> bool {
        match &self.registry {
            Some(registry) => service_registry == registry && service_path == self.path,
            None => {
                service_path == self.path
                    || (service_registry == DOCKER_HUB
                        && !self.path.contains('/')
                        && service_path.strip_prefix("library/") == Some(self.path.as_str()))
            }
        }
    }
}

/// Parse the `image_name` of a deploy request (`nginx`, `acme/api`, `ghcr.io/acme/api`,
/// `localhost:5000/api`). A tag or digest in it is an error, since the tag travels separately.
pub fn parse_image_name(s: &str) -> Result<ImageName, ImageError> {
    let (host, rest) = split_reference(s)?;
    match host {
        Some(host) => {
            let registry = normalize_registry(host)?;
            let path = normalize_path(&registry, rest);
            Ok(ImageName {
                registry: Some(registry),
                path,
            })
        }
        None => Ok(ImageName {
            registry: None,
            path: rest.to_owned(),
        }),
    }
}

/// Parse a service's image source (`{"registry": "ghcr.io", "image_name": "acme/api"}`) into
/// the normalized `(registry, path)` it is stored and matched under.
///
/// `image_name` is a path on `registry`. For convenience it may also start with that same
/// registry's host (`ghcr.io/acme/api`); a different host is an error rather than a silent
/// guess. Docker's rule decides what a host is (a first segment holding `.` or `:`, or
/// `localhost`), so a path whose first segment holds a dot is written with its host in front.
pub fn parse_service_image(registry: &str, image_name: &str) -> Result<(String, String), ImageError> {
    let registry = normalize_registry(registry)?;
    let (host, rest) = split_reference(image_name)?;
    if let Some(host) = host {
        let in_name = normalize_registry(host)?;
        if in_name != registry {
            return Err(ImageError::RegistryMismatch { in_name, registry });
        }
    }
    let path = normalize_path(&registry, rest);
    Ok((registry, path))
}

/// [`parse_service_image`] for a service whose `registry` may be left out (Docker Hub's):
/// a host in `image_name` then says that `registry` was not given, rather than that it differs.
pub fn parse_service_image_or_default(
    registry: Option<&str>,
    image_name: &str,
) -> Result<(String, String), ImageError> {
    parse_service_image(registry.unwrap_or(DOCKER_HUB), image_name).map_err(|err| match (err, registry) {
        (ImageError::RegistryMismatch { in_name, .. }, None) => ImageError::RegistryNotGiven { in_name },
        (err, _) => err,
    })
}

/// Normalize a registry host: lower-case, Docker Hub's aliases (`index.docker.io`,
/// `registry-1.docker.io`, `registry.hub.docker.com`) folded into `docker.io`, port kept.
pub fn normalize_registry(host: &str) -> Result<String, ImageError> {
    if host.is_empty() {
        return Err(ImageError::EmptyRegistry);
    }
    if host.contains('@') {
        return Err(ImageError::UserInfo);
    }
    if host.contains("://") || host.contains('/') {
        return Err(ImageError::RegistryNotHost);
    }
    let invalid = || ImageError::InvalidRegistry;
    if host.len() > MAX_NAME_LEN || !host.is_ascii() {
        return Err(invalid());
    }
    let lower = host.to_ascii_lowercase();
    let (name, port) = split_port(&lower).ok_or_else(invalid)?;
    if let Some(port) = port
        && !is_valid_port(port)
    {
        return Err(invalid());
    }
    let name_ok = match name.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').is_some_and(is_ipv6ish),
        None => is_valid_domain(name),
    };
    if !name_ok {
        return Err(invalid());
    }
    if port.is_none() && DOCKER_HUB_ALIASES.contains(&name) {
        return Ok(DOCKER_HUB.to_owned());
    }
    Ok(lower)
}

/// Validate a repository path that is known to hold no registry host (a registry's own
/// notification names its host separately) and normalize it for `registry` (already
/// normalized). Unlike [`parse_service_image`], a dotted first segment (`my.team/api`, legal on
/// ECR) is read as a path segment, not as a host.
pub fn parse_path(registry: &str, path: &str) -> Result<String, ImageError> {
    validate_path(path, None)?;
    Ok(normalize_path(registry, path))
}

/// The normalized path stored for a service: on Docker Hub a one-segment name is an official
/// image and gets `library/`, as Docker does. Expects a validated path and a normalized host.
pub fn normalize_path(registry: &str, path: &str) -> String {
    if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    }
}

/// Check Docker's tag grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ImageError> {
    let Some(first) = tag.bytes().next() else {
        return Err(ImageError::EmptyTag);
    };
    if tag.len() > MAX_TAG_LEN {
        return Err(ImageError::TagTooLong { len: tag.len() });
    }
    let ok = (first.is_ascii_alphanumeric() || first == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(ImageError::InvalidTag) }
}

/// Split a reference into its optional registry host (not yet validated) and its validated
/// repository path, refusing schemes, tags and digests.
fn split_reference(s: &str) -> Result<(Option<&str>, &str), ImageError> {
    if s.is_empty() {
        return Err(ImageError::EmptyName);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(ImageError::NameTooLong {
            len: s.len(),
            max: MAX_NAME_LEN,
        });
    }
    if s.contains("://") {
        return Err(ImageError::Scheme);
    }
    if let Some(at) = s.find('@') {
        // An `@` before the first `/` and followed by a path ends user info
        // (`user:pass@ghcr.io/acme/api`); otherwise it starts a digest (`nginx@sha256:…`).
        return Err(if !s[..at].contains('/') && s[at..].contains('/') {
            ImageError::UserInfo
        } else {
            ImageError::DigestInName
        });
    }
    let (host, rest) = match s.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (Some(first), rest),
        _ => (None, s),
    };
    let last = rest.rsplit('/').next().unwrap_or(rest);
    if let Some((_, tag)) = last.split_once(':') {
        return Err(ImageError::TagInName {
            tag: truncate(tag, MAX_TAG_LEN),
        });
    }
    if let Some(host) = host.filter(|_| rest.is_empty())
        && normalize_registry(host).is_ok()
    {
        return Err(ImageError::HostOnly {
            host: host.to_ascii_lowercase(),
        });
    }
    validate_path(rest, host)?;
    Ok((host, rest))
}

/// Docker's rule for whether the first segment of a multi-segment name is a registry host.
fn looks_like_host(segment: &str) -> bool {
    segment.contains(['.', ':']) || segment == "localhost"
}

/// Check a repository path: `/`-separated segments of Docker's path-component grammar
/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`. `host` is the registry the name was written with,
/// kept in the name a refusal suggests (without it, the name would match any registry).
fn validate_path(path: &str, host: Option<&str>) -> Result<(), ImageError> {
    if path.is_empty() {
        return Err(ImageError::EmptyName);
    }
    if path.len() > MAX_NAME_LEN {
        return Err(ImageError::NameTooLong {
            len: path.len(),
            max: MAX_NAME_LEN,
        });
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        let lower = path.to_ascii_lowercase();
        let suggestion = if lower.split('/').all(is_valid_path_segment) {
            match host {
                Some(host) => format!(": write `{}/{lower}`", host.to_ascii_lowercase()),
                None => format!(": write `{lower}`"),
            }
        } else {
            String::new()
        };
        return Err(ImageError::UpperCasePath {
            suggestion,
            advice: CI_LOWER_CASE_ADVICE,
        });
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(ImageError::EmptyPathSegment);
        }
        if !is_valid_path_segment(segment) {
            return Err(ImageError::InvalidPathSegment);
        }
    }
    Ok(())
}

/// One path segment: runs of `[a-z0-9]` joined by exactly `.`, `_`, `__` or one or more `-`.
fn is_valid_path_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if alnum(first) && alnum(last) => {}
        _ => return false,
    }
    let mut separator: &[u8] = &[];
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if alnum(b) {
            if !separator.is_empty() {
                let ok = matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&c| c == b'-');
                if !ok {
                    return false;
                }
                separator = &[];
            }
            start = i + 1;
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator = &bytes[start..=i];
        } else {
            return false;
        }
    }
    true
}

/// Split `host[:port]` or `[v6]:port`; `None` when the brackets are unbalanced.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, after) = host.split_at(end + 1);
        return match after {
            "" => Some((name, None)),
            _ => after.strip_prefix(':').map(|port| (name, Some(port))),
        };
    }
    Some(match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
}

fn is_valid_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
}

/// Dot-separated labels of `[a-z0-9-]`, not starting or ending with `-`, at most 63 bytes
/// each and 253 in all (input is already lower-cased).
fn is_valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A loose IPv6 literal check (hex digits, `:` and an optional embedded IPv4 dotted tail);
/// enough to tell an address from garbage without pulling in a parser.
fn is_ipv6ish(inner: &str) -> bool {
    inner.contains(':') && inner.len() <= 45 && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// Cut what an error message echoes, so a pasted blob does not come back whole.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(registry: Option<&str>, path: &str) -> ImageName {
        ImageName {
            registry: registry.map(str::to_owned),
            path: path.to_owned(),
        }
    }

    #[test]
    fn parses_image_names() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("nginx", None, "nginx"),
            ("library/nginx", None, "library/nginx"),
            ("acme/api", None, "acme/api"),
            ("acme/team/api", None, "acme/team/api"),
            ("my-app_2", None, "my-app_2"),
            ("a__b/c.d/e--f", None, "a__b/c.d/e--f"),
            ("docker.io/nginx", Some("docker.io"), "library/nginx"),
            ("docker.io/library/nginx", Some("docker.io"), "library/nginx"),
            ("index.docker.io/nginx", Some("docker.io"), "library/nginx"),
            ("registry-1.docker.io/acme/api", Some("docker.io"), "acme/api"),
            ("registry.hub.docker.com/acme/api", Some("docker.io"), "acme/api"),
            ("DOCKER.IO/acme/api", Some("docker.io"), "acme/api"),
            ("ghcr.io/acme/api", Some("ghcr.io"), "acme/api"),
            ("GHCR.io/acme/api", Some("ghcr.io"), "acme/api"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api",
                Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
                "team/api",
            ),
            (
                "registry.example.com:5000/api",
                Some("registry.example.com:5000"),
                "api",
            ),
            ("localhost:5000/api", Some("localhost:5000"), "api"),
            ("localhost/api", Some("localhost"), "api"),
            ("[::1]:5000/api", Some("[::1]:5000"), "api"),
            ("docker.io:443/nginx", Some("docker.io:443"), "nginx"),
            ("gcr.io/project/img", Some("gcr.io"), "project/img"),
        ];
        for &(input, registry, path) in cases {
            assert_eq!(parse_image_name(input), Ok(name(registry, path)), "{input}");
        }
    }

    type Check = fn(&ImageError) -> bool;

    #[test]
    fn refuses_bad_image_names() {
        use ImageError::*;
        let long = "a".repeat(256);
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| *e == EmptyName),
            (&long, |e| matches!(e, NameTooLong { len: 256, .. })),
            ("acme/api:1.0", |e| matches!(e, TagInName { tag } if tag == "1.0")),
            ("nginx:latest", |e| matches!(e, TagInName { .. })),
            ("localhost:5000/api:2", |e| matches!(e, TagInName { tag } if tag == "2")),
            ("localhost:5000", |e| matches!(e, TagInName { .. })),
            ("acme/api@sha256:abcd", |e| *e == DigestInName),
            ("acme/api:1@sha256:abcd", |e| *e == DigestInName),
            ("https://ghcr.io/acme/api", |e| *e == Scheme),
            (
                "Acme/API",
                |e| matches!(e, UpperCasePath { suggestion, .. } if suggestion.contains("acme/api")),
            ),
            (
                "ghcr.io/Acme/api",
                |e| matches!(e, UpperCasePath { suggestion, .. } if suggestion == ": write `ghcr.io/acme/api`"),
            ),
            ("acme//api", |e| *e == EmptyPathSegment),
            ("acme/api/", |e| *e == EmptyPathSegment),
            ("/acme/api", |e| *e == EmptyPathSegment),
            ("ghcr.io/", |e| matches!(e, HostOnly { host } if host == "ghcr.io")),
            ("GHCR.io/", |e| matches!(e, HostOnly { host } if host == "ghcr.io")),
            ("", |e| *e == EmptyName),
            ("..", |e| matches!(e, InvalidPathSegment)),
            ("acme/../api", |e| matches!(e, InvalidPathSegment)),
            ("acme/-api", |e| matches!(e, InvalidPathSegment)),
            ("acme/api-", |e| matches!(e, InvalidPathSegment)),
            ("acme/a..b", |e| matches!(e, InvalidPathSegment)),
            ("acme/a___b", |e| matches!(e, InvalidPathSegment)),
            ("acme/a._b", |e| matches!(e, InvalidPathSegment)),
            ("acme/a b", |e| matches!(e, InvalidPathSegment)),
            ("acme/api\n", |e| matches!(e, InvalidPathSegment)),
            ("acme/ápi", |e| matches!(e, InvalidPathSegment)),
            ("user:pa55word@ghcr.io/acme/api", |e| *e == UserInfo),
            ("token@ghcr.io/acme/api", |e| *e == UserInfo),
            ("nginx@sha256:abcd", |e| *e == DigestInName),
            ("bad_host.com/api", |e| matches!(e, InvalidRegistry)),
            ("host.com:0/api", |e| matches!(e, InvalidRegistry)),
            ("host.com:99999/api", |e| matches!(e, InvalidRegistry)),
            ("host.com:/api", |e| matches!(e, InvalidRegistry)),
            ("-host.com/api", |e| matches!(e, InvalidRegistry)),
            ("host..com/api", |e| matches!(e, InvalidRegistry)),
            ("[zz]:5000/api", |e| matches!(e, InvalidRegistry)),
        ];
        for (input, check) in cases {
            let err = parse_image_name(input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
            let message = err.to_string();
            assert!(message.starts_with(|c: char| c.is_ascii_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    #[test]
    fn messages_guide_the_user() {
        let err = parse_image_name("acme/api:1.0").unwrap_err().to_string();
        assert!(err.contains("`tag`"), "{err}");
        let err = parse_image_name("Acme/Api").unwrap_err().to_string();
        assert!(err.contains("lower-case") && err.contains("`acme/api`"), "{err}");
        let err = parse_image_name("acme/A..b").unwrap_err().to_string();
        assert!(!err.contains("write"), "no suggestion for a still-invalid path: {err}");
        // What `ghcr.io/${{ github.repository }}` gives for an owner with capitals.
        let err = parse_image_name("ghcr.io/Acme-Corp/Shop").unwrap_err().to_string();
        assert!(err.contains("write `ghcr.io/acme-corp/shop`"), "{err}");
        assert!(
            err.contains("${{ github.repository }}") && err.contains("lower-case it"),
            "{err}"
        );
    }

    #[test]
    fn errors_never_repeat_what_may_be_a_credential() {
        let secret = "pa55wordSecret";
        let names = [
            format!("user:{secret}@ghcr.io/acme/api"),
            format!("{secret}@ghcr.io/acme/api"),
            format!("ghcr.io/acme/{secret}!"),
            format!("ghcr.io:{secret}/acme/api"),
            format!("acme/{secret}@sha256:0"),
        ];
        for name in &names {
            let err = parse_image_name(name).unwrap_err();
            assert!(!err.to_string().contains(secret), "{name}: {err}");
            assert!(!format!("{err:?}").contains(secret), "{name}: {err:?}");
        }
        let registries = [
            format!("user:{secret}@ghcr.io"),
            format!("{secret}@ghcr.io"),
            format!("ghcr.io:{secret}"),
            format!("https://user:{secret}@ghcr.io"),
            format!("{secret} host"),
        ];
        for registry in &registries {
            let err = normalize_registry(registry).unwrap_err();
            assert!(!err.to_string().contains(secret), "{registry}: {err}");
            assert!(!format!("{err:?}").contains(secret), "{registry}: {err:?}");
            let err = parse_service_image(registry, "acme/api").unwrap_err();
            assert!(!err.to_string().contains(secret), "{registry}: {err}");
        }
        assert_eq!(normalize_registry(&registries[0]), Err(ImageError::UserInfo));
    }

    #[test]
    fn normalizes_registries() {
        let cases = [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("Registry.Hub.Docker.com", "docker.io"),
            ("ghcr.io", "ghcr.io"),
            ("Quay.IO", "quay.io"),
            ("localhost:5000", "localhost:5000"),
            ("registry.example.com:443", "registry.example.com:443"),
            ("[2001:db8::1]:5000", "[2001:db8::1]:5000"),
            ("10.0.0.1:5000", "10.0.0.1:5000"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_registry(input).as_deref(), Ok(want), "{input}");
        }
        for bad in [
            "",
            "https://ghcr.io",
            "ghcr.io/acme",
            "bad host!",
            "ghcr.io:",
            "ghcr.io:abc",
            "ghcr.io:65536",
            "ghcr.io.",
            "[::1",
            "[::1]x",
            "hôst.com",
        ] {
            assert!(normalize_registry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_plain_paths() {
        let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        assert_eq!(parse_path(ecr, "my.team/api").as_deref(), Ok("my.team/api"));
        assert_eq!(parse_path("docker.io", "nginx").as_deref(), Ok("library/nginx"));
        assert!(matches!(
            parse_path("ghcr.io", "acme/api:1"),
            Err(ImageError::InvalidPathSegment)
        ));
        assert!(matches!(
            parse_path("ghcr.io", "Acme/api"),
            Err(ImageError::UpperCasePath { .. })
        ));
        assert_eq!(parse_path("ghcr.io", ""), Err(ImageError::EmptyName));
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("docker.io", "nginx"), "library/nginx");
        assert_eq!(normalize_path("docker.io", "acme/api"), "acme/api");
        assert_eq!(normalize_path("ghcr.io", "api"), "api");
    }

    #[test]
    fn validates_tags() {
        let max = "a".repeat(128);
        for good in ["1.0.0", "v1.2.3", "latest", "_x", "main-abc1234", "1.0.0-rc.1", &max] {
            assert_eq!(validate_tag(good), Ok(()), "{good}");
        }
        let too_long = "a".repeat(129);
        assert_eq!(validate_tag(""), Err(ImageError::EmptyTag));
        assert_eq!(validate_tag(&too_long), Err(ImageError::TagTooLong { len: 129 }));
        for bad in ["-x", ".x", "1.0+build", "a/b", "a:b", "a b", "é"] {
            assert_eq!(validate_tag(bad), Err(ImageError::InvalidTag), "{bad}");
        }
    }

    #[test]
    fn parses_service_images() {
        let cases = [
            ("docker.io", "nginx", "docker.io", "library/nginx"),
            ("docker.io", "library/nginx", "docker.io", "library/nginx"),
            ("index.docker.io", "acme/api", "docker.io", "acme/api"),
            ("docker.io", "docker.io/nginx", "docker.io", "library/nginx"),
            ("ghcr.io", "acme/api", "ghcr.io", "acme/api"),
            ("GHCR.IO", "ghcr.io/acme/api", "ghcr.io", "acme/api"),
            ("localhost:5000", "api", "localhost:5000", "api"),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "team/api",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "team/api",
            ),
        ];
        for (registry, image, want_registry, want_path) in cases {
            assert_eq!(
                parse_service_image(registry, image),
                Ok((want_registry.to_owned(), want_path.to_owned())),
                "{registry} {image}"
            );
        }
        assert!(matches!(
            parse_service_image("docker.io", "ghcr.io/acme/api"),
            Err(ImageError::RegistryMismatch { .. })
        ));
        // Left out, `registry` is Docker Hub's: the message says it was not given.
        let not_given = parse_service_image_or_default(None, "ghcr.io/acme/api").unwrap_err();
        assert_eq!(
            not_given,
            ImageError::RegistryNotGiven {
                in_name: "ghcr.io".to_owned()
            }
        );
        assert!(
            not_given.to_string().contains(r#"give `"registry": "ghcr.io"`"#),
            "{not_given}"
        );
        assert!(matches!(
            parse_service_image_or_default(Some("docker.io"), "ghcr.io/acme/api"),
            Err(ImageError::RegistryMismatch { .. })
        ));
        assert_eq!(
            parse_service_image_or_default(None, "acme/api"),
            Ok(("docker.io".to_owned(), "acme/api".to_owned()))
        );
        assert_eq!(parse_service_image("bad host", "a/b"), Err(ImageError::InvalidRegistry));
        assert!(matches!(
            parse_service_image("ghcr.io", "acme/api:1"),
            Err(ImageError::TagInName { .. })
        ));
        assert_eq!(parse_service_image("ghcr.io", ""), Err(ImageError::EmptyName));
        assert!(matches!(
            parse_service_image("ghcr.io", "Acme/api"),
            Err(ImageError::UpperCasePath { .. })
        ));
    }

    #[test]
    fn lookup_paths_cover_official_images() {
        let lookup = |s: &str| parse_image_name(s).map(|n| n.lookup_paths());
        assert_eq!(lookup("api"), Ok(vec!["api".into(), "library/api".into()]));
        assert_eq!(lookup("acme/api"), Ok(vec!["acme/api".into()]));
        assert_eq!(lookup("docker.io/nginx"), Ok(vec!["library/nginx".into()]));
        assert_eq!(lookup("ghcr.io/acme/api"), Ok(vec!["acme/api".into()]));
    }

    #[test]
    fn matching_follows_the_spec() {
        // (image_name, service registry, service path, matches)
        let cases = [
            ("nginx", "docker.io", "library/nginx", true),
            ("nginx", "registry.example.com", "nginx", true),
            ("nginx", "ghcr.io", "library/nginx", false),
            ("library/nginx", "docker.io", "library/nginx", true),
            ("acme/api", "docker.io", "acme/api", true),
            ("acme/api", "ghcr.io", "acme/api", true),
            ("acme/api", "ghcr.io", "acme/api2", false),
            ("acme/api", "docker.io", "library/acme/api", false),
            ("ghcr.io/acme/api", "ghcr.io", "acme/api", true),
            ("ghcr.io/acme/api", "docker.io", "acme/api", false),
            ("index.docker.io/nginx", "docker.io", "library/nginx", true),
            ("docker.io/nginx", "registry.example.com", "nginx", false),
            ("localhost:5000/api", "localhost:5000", "api", true),
            ("localhost:5000/api", "localhost", "api", false),
        ];
        for (image, registry, path, want) in cases {
            let parsed = parse_image_name(image).expect(image);
            assert_eq!(parsed.matches(registry, path), want, "{image} vs {registry}/{path}");
        }
    }

    #[test]
    fn displays_the_reference() {
        assert_eq!(name(None, "acme/api").to_string(), "acme/api");
        assert_eq!(name(Some("ghcr.io"), "acme/api").to_string(), "ghcr.io/acme/api");
    }
}
