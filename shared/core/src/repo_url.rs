//! Repository URL normalization.
//!
//! SPEC ("Matching a push"): repository URLs compare in a normalized form `host/path`, so that
//! the clone, ssh and web URLs a provider sends all meet the URL a user typed in the settings.
//! This runs on every webhook for every URL in the payload, so it is a hand-written parser
//! (no regex) that allocates a few small strings at most.
//!
//! Normalization:
//! - scheme, user info and port dropped: `https://u@host:8443/a/b.git` → `host/a/b`;
//! - `.git` suffix, trailing and doubled slashes and `.` segments dropped;
//! - percent-encoding decoded (`%20` → space, `%2F` → `/`), then everything lower-cased;
//! - scp-like `git@host:owner/repo.git` and a bare `host/owner/repo` are accepted;
//! - GitLab subgroups keep every segment;
//! - Azure DevOps: every clone form (`ssh.dev.azure.com:v3/…`, `dev.azure.com/…/_git/…`,
//!   legacy `org.visualstudio.com/…`) becomes `dev.azure.com/org/project/repo`;
//! - Bitbucket Server: `…/scm/proj/repo.git` (with any context path before `scm`) and
//!   `ssh://…:7999/proj/repo.git` become `host/proj/repo`; its web form
//!   `…/projects/PROJ/repos/repo[/browse]` does too (`…/users/u/repos/r` → `host/~u/r`);
//! - a few SaaS host aliases fold into the canonical host (`ssh.github.com` → `github.com`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Inputs longer than this are refused outright (SPEC: an over-long string is a 400).
pub const MAX_REPOSITORY_URL_LEN: usize = 2048;

/// Why a repository URL was refused. The messages name the rule that was broken and never
/// repeat any part of the URL (it may carry a token), except a well-formed scheme name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    #[error("The repository URL is empty.")]
    Empty,
    #[error("The repository URL is longer than {max} bytes.")]
    TooLong { max: usize },
    #[error("The repository URL contains a space or another whitespace character.")]
    Whitespace,
    #[error("The repository URL contains a control character.")]
    ControlCharacter,
    #[error("The repository URL does not start with a valid scheme.")]
    InvalidScheme,
    /// `scheme` is set only when it looks like an ordinary scheme name (letters only), so a
    /// token pasted in front of `://` is never repeated.
    #[error("{}", unsupported_scheme_message(.scheme.as_deref()))]
    UnsupportedScheme { scheme: Option<String> },
    #[error("The repository URL has no host.")]
    MissingHost,
    #[error("The repository URL host is not a valid host name.")]
    InvalidHost,
    #[error("The repository URL port is not a number between 1 and 65535.")]
    InvalidPort,
    #[error("The repository URL has no repository path after the host.")]
    MissingPath,
    #[error("The repository URL path cannot contain a `..` segment.")]
    DotDotSegment,
    #[error("The repository URL path cannot contain a backslash.")]
    Backslash,
    /// Mostly a password with an unencoded `/` or `:` in it, or user info without a scheme
    /// (`user:pass@host/path`); refused so that no part of it ends up in the normalized form.
    #[error(
        "The repository URL has an `@` in an unexpected place; user info can only come right \
         before the host."
    )]
    MisplacedAt,
    #[error("The repository URL cannot contain a query string or a fragment.")]
    QueryOrFragment,
    #[error("The repository URL path does not decode to valid UTF-8 text.")]
    InvalidEncoding,
}

fn unsupported_scheme_message(scheme: Option<&str>) -> String {
    match scheme {
        Some(s) => {
            format!("The repository URL scheme `{s}` is not supported; use https, http, ssh or git.")
        }
        None => "The repository URL scheme is not supported; use https, http, ssh or git.".into(),
    }
}

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// The `host/path` comparison form.
    pub normalized: String,
    /// True when the URL carries something secret: any user info in an http(s) URL (a token
    /// is often passed as the user name), or a password in any URL. Two exceptions carry no
    /// secret: an ssh / scp user name (`git@`), and Azure DevOps' standard clone URL
    /// `https://org@dev.azure.com/org/…` whose user is the organization itself.
    /// SPEC: such a URL is refused at write time.
    pub has_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Ssh,
    Git,
    /// scp-like `[user@]host:path` or a bare `host/path`.
    ScpOrBare,
}

/// Parse https/http/ssh:///git:// URLs and scp-like `git@host:owner/repo.git`.
///
/// Surrounding whitespace is trimmed (a pasted URL often ends in a newline); whitespace
/// inside is refused.
pub fn parse_repository_url(url: &str) -> Result<RepoUrl, RepoUrlError> {
    if url.len() > MAX_REPOSITORY_URL_LEN {
        return Err(RepoUrlError::TooLong {
            max: MAX_REPOSITORY_URL_LEN,
        });
    }
    let url = url.trim();
    if url.is_empty() {
        return Err(RepoUrlError::Empty);
    }
    if url.is_ascii() {
        // The usual case, byte by byte: what `char::is_whitespace` and `char::is_control`
        // say of ASCII.
        for b in url.bytes() {
            if matches!(b, b' ' | b'\t'..=b'\r') {
                return Err(RepoUrlError::Whitespace);
            }
            if b.is_ascii_control() {
                return Err(RepoUrlError::ControlCharacter);
            }
        }
    } else {
        for c in url.chars() {
            if c.is_whitespace() {
                return Err(RepoUrlError::Whitespace);
            }
            if c.is_control() {
                return Err(RepoUrlError::ControlCharacter);
            }
        }
    }

    let parts = split_url(url)?;
    if parts.path.contains('@') {
        return Err(RepoUrlError::MisplacedAt);
    }
    if parts.path.contains(['?', '#']) {
        return Err(RepoUrlError::QueryOrFragment);
    }
    if parts.path.contains('\\') {
        return Err(RepoUrlError::Backslash);
    }
    if let Some(port) = parts.port {
        check_port(port)?;
    }
    let host = normalize_host(parts.host)?;

    // Decode first, then lower-case, then split: `%2F` becomes a separator and `%2E%2E`
    // is caught as `..`, exactly as the provider would see the path.
    let decoded = if parts.path.contains('%') {
        percent_decode_str(parts.path)
            .decode_utf8()
            .map_err(|_| RepoUrlError::InvalidEncoding)?
    } else {
        // Nothing to decode (the usual case): the path as it is, already UTF-8.
        Cow::Borrowed(parts.path)
    };
    if decoded.chars().any(char::is_control) {
        return Err(RepoUrlError::ControlCharacter);
    }
    // Most paths are lower-case ASCII already: no copy then.
    let lowered = if decoded.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
        Cow::Owned(decoded.to_lowercase())
    } else {
        decoded
    };
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    for segment in lowered.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(RepoUrlError::DotDotSegment),
            s => segments.push(s),
        }
    }
    // Every `.git` suffix goes, so that normalizing is idempotent.
    if let Some(last) = segments.last_mut() {
        *last = strip_git_suffixes(last);
    }
    if segments.is_empty() {
        return Err(RepoUrlError::MissingPath);
    }

    let user = parts.user.filter(|u| !u.is_empty());
    let has_password = parts.password.is_some_and(|p| !p.is_empty());

    let (host, segments, tilde, azure_org) = match azure_devops(&host, &segments) {
        Some([org, project, repo]) => ("dev.azure.com", vec![org, project, repo], false, Some(org)),
        None => {
            let host = canonical_host(&host);
            let (segments, tilde) = bitbucket_server(host, segments);
            (host, segments, tilde, None)
        }
    };

    let has_credentials = match parts.scheme {
        Scheme::Http => {
            has_password
                || user.is_some_and(|u| match azure_org {
                    Some(org) => !decoded_eq_ignore_case(u, org),
                    None => true,
                })
        }
        Scheme::Ssh | Scheme::Git | Scheme::ScpOrBare => has_password,
    };

    let mut normalized = String::with_capacity(host.len() + 1 + segments.iter().map(|s| s.len() + 1).sum::<usize>());
    normalized.push_str(host);
    for (i, segment) in segments.iter().enumerate() {
        normalized.push('/');
        if i == 0 && tilde {
            normalized.push('~');
        }
        normalized.push_str(segment);
    }
    Ok(RepoUrl {
        normalized,
        has_credentials,
    })
}

/// Shorthand: the normalized `host/path` form.
pub fn normalize_repository_url(url: &str) -> Result<String, RepoUrlError> {
    parse_repository_url(url).map(|u| u.normalized)
}

struct Parts<'a> {
    scheme: Scheme,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

/// Split into scheme, user info, host, port and path without interpreting them.
fn split_url(url: &str) -> Result<Parts<'_>, RepoUrlError> {
    // `url.find("://")`, without setting up a substring searcher for three bytes.
    let scheme_end = url
        .as_bytes()
        .windows(3)
        .position(|w| w == b"://")
        .filter(|&i| !url[..i].contains(['/', '@']));
    if let Some(i) = scheme_end {
        let scheme = parse_scheme(&url[..i])?;
        let rest = &url[i + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u), Some(p)),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        if hostport.starts_with('[') {
            // IPv6 literals are not host names; no git provider is reached that way.
            return Err(RepoUrlError::InvalidHost);
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        return Ok(Parts {
            scheme,
            user,
            password,
            host,
            port,
            path,
        });
    }

    // No scheme. Like git: a colon before the first slash makes it scp-like.
    let first_slash = url.find('/');
    let colon = url.find(':');
    match (colon, first_slash) {
        (Some(c), slash) if slash.is_none_or(|s| c < s) => {
            let (left, path) = (&url[..c], &url[c + 1..]);
            let (user, host) = match left.rfind('@') {
                Some(at) => (Some(&left[..at]), &left[at + 1..]),
                None => (None, left),
            };
            Ok(Parts {
                scheme: Scheme::ScpOrBare,
                user,
                password: None,
                host,
                port: None,
                path,
            })
        }
        (_, Some(s)) if url[..s].contains('@') => Err(RepoUrlError::MisplacedAt),
        (_, Some(s)) => Ok(Parts {
            scheme: Scheme::ScpOrBare,
            user: None,
            password: None,
            host: &url[..s],
            port: None,
            path: &url[s..],
        }),
        (_, None) => {
            // A host alone (`github.com`): valid host, but no repository.
            normalize_host(url)?;
            Err(RepoUrlError::MissingPath)
        }
    }
}

fn parse_scheme(raw: &str) -> Result<Scheme, RepoUrlError> {
    let valid = raw.len() <= 32
        && raw.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid {
        return Err(RepoUrlError::InvalidScheme);
    }
    // Lower-cased on the stack: this runs for every URL of every push.
    let mut buffer = [0u8; 32];
    let lower = &mut buffer[..raw.len()];
    lower.copy_from_slice(raw.as_bytes());
    lower.make_ascii_lowercase();
    match &*lower {
        b"https" | b"http" => Ok(Scheme::Http),
        // git accepts both spellings of ssh-with-git.
        b"ssh" | b"git+ssh" | b"ssh+git" => Ok(Scheme::Ssh),
        b"git" => Ok(Scheme::Git),
        _ => {
            let nameable = lower.len() <= 12 && lower.iter().all(u8::is_ascii_lowercase);
            Err(RepoUrlError::UnsupportedScheme {
                scheme: nameable.then(|| raw.to_ascii_lowercase()),
            })
        }
    }
}

fn check_port(port: &str) -> Result<(), RepoUrlError> {
    // An empty port (`host:/path`) is allowed by RFC 3986 and means the default.
    if port.is_empty() {
        return Ok(());
    }
    if port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
    {
        Ok(())
    } else {
        Err(RepoUrlError::InvalidPort)
    }
}

/// RFC 1123 host name (letters, digits, hyphens; labels 1–63 bytes; 253 bytes in all), one
/// trailing dot allowed, returned lower-cased (borrowed when it already is).
fn normalize_host(host: &str) -> Result<Cow<'_, str>, RepoUrlError> {
    if host.is_empty() {
        return Err(RepoUrlError::MissingHost);
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        Err(RepoUrlError::InvalidHost)
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

/// Hosts that are another name for a SaaS provider's canonical host.
fn canonical_host(host: &str) -> &str {
    match host {
        "www.github.com" | "ssh.github.com" => "github.com",
        "www.gitlab.com" | "altssh.gitlab.com" => "gitlab.com",
        "www.bitbucket.org" | "altssh.bitbucket.org" => "bitbucket.org",
        _ => host,
    }
}

/// Azure DevOps `[org, project, repo]` from any of its clone / web forms, or `None` when the
/// URL is not an Azure DevOps repository URL.
fn azure_devops<'a>(host: &'a str, segments: &[&'a str]) -> Option<[&'a str; 3]> {
    match host {
        // ssh: `git@ssh.dev.azure.com:v3/org/project/repo`, legacy
        // `org@vs-ssh.visualstudio.com:v3/org/project/repo`.
        "ssh.dev.azure.com" | "vs-ssh.visualstudio.com" => match segments {
            // Azure DevOps refuses project names starting with `_`; in the normalized
            // `dev.azure.com/org/project/repo` these two would read as path markers.
            ["v3", org, project, repo] if !matches!(*project, "_git" | "_ssh") => Some([*org, *project, *repo]),
            _ => None,
        },
        "dev.azure.com" => match segments {
            [org, rest @ ..] => azure_git_tail(rest).map(|(p, r)| [*org, p, r]),
            _ => None,
        },
        _ => {
            let org = host.strip_suffix(".visualstudio.com")?;
            if org.contains('.') {
                return None;
            }
            let rest = match segments {
                ["defaultcollection", rest @ ..] => rest,
                rest => rest,
            };
            azure_git_tail(rest).map(|(p, r)| [org, p, r])
        }
    }
}

/// `project/_git/repo` → (project, repo); `_git/repo` names the project's default repository,
/// which carries the project's name. `_optimized` / `_full` are legacy clone variants, `_ssh`
/// the legacy ssh path marker.
fn azure_git_tail<'a>(segments: &[&'a str]) -> Option<(&'a str, &'a str)> {
    match segments {
        ["_git" | "_ssh", rest @ ..] => azure_repo(rest).map(|r| (r, r)),
        [project, "_git" | "_ssh", rest @ ..] => azure_repo(rest).map(|r| (*project, r)),
        _ => None,
    }
}

fn azure_repo<'a>(rest: &[&'a str]) -> Option<&'a str> {
    match rest {
        ["_optimized" | "_full", repo] | [repo] => Some(*repo),
        _ => None,
    }
}

/// Hosts where `scm` / `projects` are ordinary names, never Bitbucket Server markers. Azure
/// DevOps' hosts are among them: its normalized `dev.azure.com/org/project/repo` would otherwise
/// be read again as a Bitbucket Server path (an organization named `scm`).
fn is_saas_host(host: &str) -> bool {
    matches!(
        host,
        "github.com"
            | "gitlab.com"
            | "bitbucket.org"
            | "codeberg.org"
            | "gitea.com"
            | "dev.azure.com"
            | "ssh.dev.azure.com"
            | "vs-ssh.visualstudio.com"
    ) || host.ends_with(".visualstudio.com")
}

/// Bitbucket Server serves http clones under `[context/]scm/proj/repo` and ssh clones at
/// `proj/repo`; its web pages live at `[context/]projects/PROJ/repos/repo[/browse]` and, for
/// personal repositories, `users/u/repos/repo` (cloned as `~u/repo`). Returns the segments and
/// whether the first one needs a `~` in front.
fn bitbucket_server<'a>(host: &str, segments: Vec<&'a str>) -> (Vec<&'a str>, bool) {
    if is_saas_host(host) {
        return (segments, false);
    }
    let n = segments.len();
    if n >= 3 && segments[n - 3] == "scm" {
        return (segments[n - 2..].to_vec(), false);
    }
    match segments.as_slice() {
        // In the `browse` form the repository is not the last segment, so its `.git` is still on.
        [.., "projects", owner, "repos", repo, "browse"] | [.., "projects", owner, "repos", repo] => {
            (vec![*owner, strip_git_suffixes(repo)], false)
        }
        [.., "users", owner, "repos", repo, "browse"] | [.., "users", owner, "repos", repo] => {
            (vec![*owner, strip_git_suffixes(repo)], true)
        }
        _ => (segments, false),
    }
}

/// `name` without its `.git` suffixes (`shop.git.git` → `shop`), stopping before one whose removal
/// would leave an empty, `.` or `..` name: `.git` and `..git` stay as they are, since a second
/// normalization would drop or refuse such a segment.
fn strip_git_suffixes(mut name: &str) -> &str {
    while let Some(stem) = name.strip_suffix(".git")
        && !matches!(stem, "" | "." | "..")
    {
        name = stem;
    }
    name
}

/// Compare a raw (possibly percent-encoded, any case) user name with a normalized segment.
fn decoded_eq_ignore_case(raw: &str, normalized: &str) -> bool {
    match percent_decode_str(raw).decode_utf8() {
        Ok(user) => user.to_lowercase() == normalized,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, normalized, has_credentials)
    const ACCEPTED: &[(&str, &str, bool)] = &[
        // GitHub
        ("https://github.com/acme/shop.git", "github.com/acme/shop", false),
        ("https://github.com/acme/shop", "github.com/acme/shop", false),
        ("https://github.com/acme/shop/", "github.com/acme/shop", false),
        ("https://github.com/acme/shop.git/", "github.com/acme/shop", false),
        ("https://GitHub.com/Acme/Shop.GIT", "github.com/acme/shop", false),
        ("http://github.com/acme/shop", "github.com/acme/shop", false),
        ("git@github.com:acme/shop.git", "github.com/acme/shop", false),
        ("git@github.com:/acme/shop.git", "github.com/acme/shop", false),
        ("ssh://git@github.com/acme/shop.git", "github.com/acme/shop", false),
        (
            "ssh://git@ssh.github.com:443/acme/shop.git",
            "github.com/acme/shop",
            false,
        ),
        ("git+ssh://git@github.com/acme/shop.git", "github.com/acme/shop", false),
        ("git://github.com/acme/shop.git", "github.com/acme/shop", false),
        ("https://www.github.com/acme/shop", "github.com/acme/shop", false),
        (
            "https://ghp_abc123@github.com/acme/shop.git",
            "github.com/acme/shop",
            true,
        ),
        (
            "https://x-access-token:ghs_abc@github.com/acme/shop.git",
            "github.com/acme/shop",
            true,
        ),
        ("https://user:@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://@github.com/acme/shop.git", "github.com/acme/shop", false),
        ("https://github.com:443/acme/shop.git", "github.com/acme/shop", false),
        ("https://github.com:/acme/shop.git", "github.com/acme/shop", false),
        ("https://github.com//acme//shop.git", "github.com/acme/shop", false),
        ("https://github.com/acme/./shop", "github.com/acme/shop", false),
        ("https://github.com./acme/shop", "github.com/acme/shop", false),
        ("  https://github.com/acme/shop.git\n", "github.com/acme/shop", false),
        ("github.com/acme/shop", "github.com/acme/shop", false),
        ("GitHub.com/Acme/Shop/", "github.com/acme/shop", false),
        // A name that merely ends in `git` keeps it; only `.git` suffixes go.
        ("https://github.com/acme/legit", "github.com/acme/legit", false),
        ("https://github.com/acme/shop.git.git", "github.com/acme/shop", false),
        ("https://github.com/acme/.git", "github.com/acme/.git", false),
        // Nor does a `.git` whose removal would leave a `.` or `..` segment.
        ("https://github.com/acme/..git", "github.com/acme/..git", false),
        ("https://github.com/acme/...git.git", "github.com/acme/...git", false),
        // Percent-encoding
        ("https://github.com/acme/my%2Dshop", "github.com/acme/my-shop", false),
        ("https://gitlab.com/acme%2Fshop", "gitlab.com/acme/shop", false),
        ("https://gitlab.com/ACME/%53hop.git", "gitlab.com/acme/shop", false),
        // GitLab, subgroups
        (
            "https://gitlab.com/group/sub/deeper/repo.git",
            "gitlab.com/group/sub/deeper/repo",
            false,
        ),
        ("git@gitlab.com:group/sub/repo.git", "gitlab.com/group/sub/repo", false),
        (
            "ssh://git@gitlab.example.com:2222/group/sub/repo.git",
            "gitlab.example.com/group/sub/repo",
            false,
        ),
        (
            "https://oauth2:glpat-xyz@gitlab.example.com/group/sub/repo.git",
            "gitlab.example.com/group/sub/repo",
            true,
        ),
        (
            "ssh://git@altssh.gitlab.com:443/group/repo.git",
            "gitlab.com/group/repo",
            false,
        ),
        (
            "ssh://deploy:s3cret@gitlab.example.com/group/repo.git",
            "gitlab.example.com/group/repo",
            true,
        ),
        // Bitbucket Cloud
        ("https://bitbucket.org/team/repo.git", "bitbucket.org/team/repo", false),
        (
            "https://jdoe@bitbucket.org/team/repo.git",
            "bitbucket.org/team/repo",
            true,
        ),
        ("git@bitbucket.org:team/repo.git", "bitbucket.org/team/repo", false),
        // `scm` is an ordinary name on SaaS hosts.
        (
            "https://bitbucket.org/scm/team/repo",
            "bitbucket.org/scm/team/repo",
            false,
        ),
        // Gitea / Forgejo / Gogs
        (
            "https://gitea.example.com/owner/repo.git",
            "gitea.example.com/owner/repo",
            false,
        ),
        (
            "ssh://git@gitea.example.com:2222/owner/repo.git",
            "gitea.example.com/owner/repo",
            false,
        ),
        ("http://localhost:3000/owner/repo.git", "localhost/owner/repo", false),
        (
            "https://codeberg.org/forgejo/forgejo.git",
            "codeberg.org/forgejo/forgejo",
            false,
        ),
        ("http://10.0.0.5:3000/owner/repo", "10.0.0.5/owner/repo", false),
        // Bitbucket Server / Data Center
        (
            "https://bitbucket.example.com/scm/proj/repo.git",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "https://bitbucket.example.com/bitbucket/scm/proj/repo.git",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "ssh://git@bitbucket.example.com:7999/proj/repo.git",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "ssh://git@bitbucket.example.com:7999/PROJ/repo.git",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "https://admin@bitbucket.example.com/scm/PROJ/repo.git",
            "bitbucket.example.com/proj/repo",
            true,
        ),
        (
            "https://bitbucket.example.com/projects/PROJ/repos/repo/browse",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "https://bitbucket.example.com/projects/PROJ/repos/repo",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "https://bitbucket.example.com/projects/PROJ/repos/repo.git/browse",
            "bitbucket.example.com/proj/repo",
            false,
        ),
        (
            "https://bitbucket.example.com/users/jdoe/repos/repo.git/browse",
            "bitbucket.example.com/~jdoe/repo",
            false,
        ),
        (
            "https://bitbucket.example.com/scm/~jdoe/repo.git",
            "bitbucket.example.com/~jdoe/repo",
            false,
        ),
        (
            "ssh://git@bitbucket.example.com:7999/~jdoe/repo.git",
            "bitbucket.example.com/~jdoe/repo",
            false,
        ),
        // Azure DevOps
        (
            "https://dev.azure.com/org/project/_git/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://org@dev.azure.com/org/project/_git/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://Org@dev.azure.com/org/Project/_git/Repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://other@dev.azure.com/org/project/_git/repo",
            "dev.azure.com/org/project/repo",
            true,
        ),
        (
            "https://org:pat123@dev.azure.com/org/project/_git/repo",
            "dev.azure.com/org/project/repo",
            true,
        ),
        (
            "git@ssh.dev.azure.com:v3/org/project/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "ssh.dev.azure.com:v3/org/project/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "ssh://git@ssh.dev.azure.com/v3/org/project/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://org.visualstudio.com/project/_git/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://org.visualstudio.com/DefaultCollection/project/_git/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://org.visualstudio.com/project/_git/_optimized/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "org@vs-ssh.visualstudio.com:v3/org/project/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        (
            "https://dev.azure.com/org/My%20Project/_git/My%20Repo",
            "dev.azure.com/org/my project/my repo",
            false,
        ),
        (
            "https://dev.azure.com/org/_git/shop",
            "dev.azure.com/org/shop/shop",
            false,
        ),
        (
            "dev.azure.com/org/project/repo",
            "dev.azure.com/org/project/repo",
            false,
        ),
        // Bitbucket Server's `scm` marker means nothing on Azure DevOps' hosts.
        (
            "ssh.dev.azure.com:v3/scm/project/repo",
            "dev.azure.com/scm/project/repo",
            false,
        ),
        (
            "https://org.visualstudio.com/team/scm/_git/repo",
            "org.visualstudio.com/team/scm/_git/repo",
            false,
        ),
    ];

    #[test]
    fn accepted_forms_normalize() {
        assert!(ACCEPTED.len() >= 35);
        for (input, normalized, creds) in ACCEPTED {
            let parsed = parse_repository_url(input).unwrap_or_else(|e| panic!("{input:?} was refused: {e}"));
            assert_eq!(parsed.normalized, *normalized, "normalized form of {input:?}");
            assert_eq!(parsed.has_credentials, *creds, "has_credentials of {input:?}");
        }
    }

    #[test]
    fn spec_examples_are_the_same_repository() {
        let same = |a: &str, b: &str| {
            assert_eq!(
                normalize_repository_url(a).ok(),
                normalize_repository_url(b).ok(),
                "{a} vs {b}"
            );
        };
        same("git@host.example:owner/repo.git", "https://host.example/owner/repo");
        same(
            "ssh://git@host.example:2222/group/sub/repo.git",
            "https://host.example/group/sub/repo",
        );
        same(
            "ssh.dev.azure.com:v3/org/project/repo",
            "https://dev.azure.com/org/project/_git/repo",
        );
        same(
            "https://bb.example/scm/proj/repo.git",
            "ssh://git@bb.example:7999/proj/repo.git",
        );
    }

    #[test]
    fn normalizing_twice_is_stable() {
        // Decoded spaces (Azure DevOps project names) cannot be re-parsed; all else is stable.
        for (input, normalized, _) in ACCEPTED.iter().filter(|c| !c.1.contains(' ')) {
            assert_eq!(
                normalize_repository_url(normalized).as_deref(),
                Ok(*normalized),
                "re-normalizing the form of {input:?}"
            );
        }
    }

    /// Found by the `repo_url` fuzz target: removing `.git` turned `...git` into a `..` segment
    /// (and `..git` into `.`), which a second normalization refuses (or drops).
    #[test]
    fn git_suffix_never_leaves_a_dot_segment() {
        for (input, normalized) in [
            ("s:\u{FFFD}/...git//", "s/\u{FFFD}/...git"),
            ("https://h.example/a/..git", "h.example/a/..git"),
        ] {
            assert_eq!(normalize_repository_url(input).as_deref(), Ok(normalized), "{input:?}");
            assert_eq!(
                normalize_repository_url(normalized).as_deref(),
                Ok(normalized),
                "{normalized:?}"
            );
        }
    }

    /// Found by the `repo_url` fuzz target (and the `_git` project by reviewing that finding):
    /// normalized Azure DevOps forms that a second pass read otherwise, as a Bitbucket Server
    /// `scm/…` path or as the `_git/repo` default-repository form.
    #[test]
    fn azure_devops_forms_normalize_once() {
        for (input, normalized) in [
            ("ssh.dev.azure.com:v3/scm/t/s", "dev.azure.com/scm/t/s"),
            (
                "git@ssh.dev.azure.com:v3/org/_git/repo",
                "ssh.dev.azure.com/v3/org/_git/repo",
            ),
            (
                "https://org.visualstudio.com/x/scm/_git/r",
                "org.visualstudio.com/x/scm/_git/r",
            ),
        ] {
            assert_eq!(normalize_repository_url(input).as_deref(), Ok(normalized), "{input:?}");
            assert_eq!(
                normalize_repository_url(normalized).as_deref(),
                Ok(normalized),
                "{normalized:?}"
            );
        }
    }

    #[test]
    fn rejections() {
        use RepoUrlError::*;
        let long = format!("https://github.com/{}", "a".repeat(2048));
        let cases: &[(&str, RepoUrlError)] = &[
            ("", Empty),
            ("   ", Empty),
            (&long, TooLong { max: 2048 }),
            ("https://github.com/acme/my shop", Whitespace),
            ("https://github.com/acme/\tshop", Whitespace),
            ("https://github.com/acme/\u{7f}shop", ControlCharacter),
            ("https://github.com/acme/%00shop", ControlCharacter),
            (
                "file:///srv/git/repo.git",
                UnsupportedScheme {
                    scheme: Some("file".into()),
                },
            ),
            (
                "ftp://host.example/repo.git",
                UnsupportedScheme {
                    scheme: Some("ftp".into()),
                },
            ),
            (
                "FTP://host.example/repo.git",
                UnsupportedScheme {
                    scheme: Some("ftp".into()),
                },
            ),
            ("1http://host.example/repo.git", InvalidScheme),
            ("svn2://host.example/repo.git", UnsupportedScheme { scheme: None }),
            ("://host.example/repo.git", InvalidScheme),
            ("https://github.com", MissingPath),
            ("https://github.com/", MissingPath),
            ("https://github.com/.", MissingPath),
            ("github.com", MissingPath),
            ("git@github.com:", MissingPath),
            ("https:///acme/shop", MissingHost),
            ("git@:acme/shop", MissingHost),
            ("/acme/shop", MissingHost),
            ("https://github.com/acme/../shop", DotDotSegment),
            ("https://github.com/acme/%2E%2E/shop", DotDotSegment),
            ("git@github.com:../shop", DotDotSegment),
            ("https://git_hub.com/acme/shop", InvalidHost),
            ("https://-github.com/acme/shop", InvalidHost),
            ("https://github..com/acme/shop", InvalidHost),
            ("https://[::1]/acme/shop", InvalidHost),
            ("https://gith%75b.com/acme/shop", InvalidHost),
            ("token@github.com/acme/shop", MisplacedAt),
            ("user:pass@github.com/acme/shop", MisplacedAt),
            ("user:pass@github.com:acme/shop", MisplacedAt),
            ("https://user:123/pass@github.com/acme/shop", MisplacedAt),
            ("https://github.com/acme/sh@p", MisplacedAt),
            ("https://github.com:99999/acme/shop", InvalidPort),
            ("https://github.com:0/acme/shop", InvalidPort),
            ("https://github.com:ssh/acme/shop", InvalidPort),
            ("https://github.com/acme/shop?ref=main", QueryOrFragment),
            ("https://github.com/acme/shop#readme", QueryOrFragment),
            ("https://github.com/acme\\shop", Backslash),
            ("https://github.com/acme/%FF", InvalidEncoding),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_repository_url(input).err().as_ref(), Some(expected), "{input:?}");
        }
        assert_eq!(parse_repository_url(&"a".repeat(2049)), Err(TooLong { max: 2048 }));
    }

    #[test]
    fn errors_never_echo_credentials() {
        let inputs = [
            "https://user:hunter2secret@git_hub.com/acme/shop",
            "https://user:hunter2secret@github.com:99/x y",
            "https://user:hunter2secret@github.com",
            "https://user:hunter2secret@github.com/a/../b",
            "https://hunter2secret@github.com:port/a",
            "https://user:hunter2secret#@github.com/a",
            "hunter2secret://github.com/a",
            "user:hunter2secret@github.com/acme/shop",
            "user:hunter2secret@github.com:acme/shop",
            "https://user:123/hunter2secret@github.com/acme/shop",
        ];
        for input in inputs {
            let err = parse_repository_url(input).expect_err(input);
            let message = err.to_string();
            assert!(!message.contains("hunter2secret"), "{input}: {message}");
            assert!(!format!("{err:?}").contains("hunter2secret"), "{input}");
        }
    }

    #[test]
    fn ascii_checks_read_as_char_checks() {
        for b in 0..=0x7fu8 {
            let c = char::from(b);
            let url = format!("https://github.com/acme/a{c}b");
            let expected = if c.is_whitespace() {
                Err(RepoUrlError::Whitespace)
            } else if c.is_control() {
                Err(RepoUrlError::ControlCharacter)
            } else {
                Ok(())
            };
            let got = parse_repository_url(&url).map(|_| ());
            match expected {
                Err(e) => assert_eq!(got, Err(e), "{b:#x}"),
                Ok(()) => assert!(
                    !matches!(got, Err(RepoUrlError::Whitespace | RepoUrlError::ControlCharacter)),
                    "{b:#x}"
                ),
            }
        }
    }

    #[test]
    fn error_messages_are_sentences() {
        let err = parse_repository_url("ftp://h.example/r").expect_err("ftp refused");
        assert_eq!(
            err.to_string(),
            "The repository URL scheme `ftp` is not supported; use https, http, ssh or git."
        );
    }
}
