//! Repository URLs: the normalized key pushes are matched on, and the write-time check of the
//! URL a service follows.
//!
//! Two entry points, for two jobs:
//! - [`parse_repository_url`](crate::repo_url::parse_repository_url) /
//!   [`normalize_repository_url`](crate::repo_url::normalize_repository_url) read any URL a
//!   provider sends in a push payload into its key. They run on every webhook for every URL in
//!   the payload, so this is a hand-written parser (no regex) that allocates a few small strings
//!   at most, and it accepts whatever has a key.
//! - [`check_repository_url`](crate::repo_url::check_repository_url) judges the URL a user
//!   writes in a service, once, at write time. It is stricter: besides what normalization
//!   refuses, it refuses a URL that carries a password or an access token, one that names a
//!   page of a repository rather than the repository (`…/tree/main`, `…/-/blob/…`, `…?path=…`), and a bare `owner/repo` with no host,
//!   each with a message saying what to write instead. A user name alone is no secret (Bitbucket's
//!   clone URLs carry one): it is dropped from the URL that is stored.
//!
//! SPEC ("Matching a push"): repository URLs compare in a normalized form `host/path`, so that
//! the clone, ssh and web URLs a provider sends all meet the URL a user typed in the settings.
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

use crate::provider::GitProvider;

/// Inputs longer than this are refused outright (SPEC: an over-long string is a 400).
pub const MAX_REPOSITORY_URL_LEN: usize = 2048;

/// Why a repository URL was refused. Each message is a phrase about the URL field
/// (`git_repository.url: must not be empty.` once rendered). None repeats a part of the URL
/// that may be secret: user info and query strings never appear, only a well-formed scheme
/// name, a known page marker (`/tree/…`) and, when there is one, the URL to write instead,
/// built from the host and path alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} bytes long")]
    TooLong { max: usize },
    #[error("must not contain a space or other whitespace")]
    Whitespace,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must start with a valid scheme such as `https://`")]
    InvalidScheme,
    /// `scheme` is set only when it looks like an ordinary scheme name (letters only), so a
    /// token pasted in front of `://` is never repeated.
    #[error("{}", unsupported_scheme_message(.scheme.as_deref()))]
    UnsupportedScheme { scheme: Option<String> },
    #[error("has no host")]
    MissingHost,
    #[error("has a host that is not a valid host name")]
    InvalidHost,
    #[error("has a port that is not a number between 1 and 65535")]
    InvalidPort,
    #[error("has no repository path after the host")]
    MissingPath,
    #[error("must not contain a `..` segment")]
    DotDotSegment,
    #[error("must not contain a backslash")]
    Backslash,
    /// Mostly a password with an unencoded `/` or `:` in it, or user info without a scheme
    /// (`user:pass@host/path`); refused so that no part of it ends up in the normalized form.
    #[error("has an `@` in an unexpected place; user info can only come right before the host")]
    MisplacedAt,
    #[error("must not contain a query string or a fragment")]
    QueryOrFragment,
    #[error("has a path that does not decode to valid UTF-8 text")]
    InvalidEncoding,
    /// Write time only ([`check_repository_url`]): a password or an access token in the URL.
    /// `use_instead` is the URL without them.
    #[error("{}", credentials_message(*.kind, .use_instead))]
    Credentials { kind: Credential, use_instead: String },
    /// Write time only: a page of a repository (`…/tree/main`), or a bare `owner/repo`.
    #[error("{}", page_message(.page, .use_instead))]
    NotARepository { page: Page, use_instead: String },
    /// Write time only: a whole `git clone …` command, copied from a provider's clone dialog.
    #[error("is a `git clone` command: write only its URL, `{use_instead}`")]
    CloneCommand { use_instead: String },
    /// Write time only: an Azure DevOps name with a space, which a URL writes `%20`.
    #[error("must not contain a space: a URL writes the space in a name as `%20`, `{use_instead}`")]
    SpaceInName { use_instead: String },
    /// Write time only: `ssh://host:path`, scp's colon after an `ssh://` scheme.
    #[error(
        "mixes `ssh://` with the `host:path` form, so the path is read as a port: write `{use_instead}`, or `ssh://` with a `/` after the host"
    )]
    ScpPathInSshUrl { use_instead: String },
}

/// A secret found in a repository URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `user:password@`, in any scheme.
    Password,
    /// An http(s) user name that is an access token (`ghp_…@`, a long random string).
    Token,
    /// A query string with a parameter named as a credential (`?access_token=…`,
    /// `?private_token=…`); the name, one of [`CREDENTIAL_PARAMETER_WORDS`], is shown, never
    /// the value.
    QueryToken { parameter: &'static str },
}

/// Words a query parameter naming a credential holds (`access_token`, `password`, `api_key`).
const CREDENTIAL_PARAMETER_WORDS: [&str; 5] = ["token", "pass", "secret", "key", "sig"];

/// The word of [`CREDENTIAL_PARAMETER_WORDS`] that the first parameter of `query` named as a
/// credential holds (names read percent-decoded, in any letter case).
fn credential_parameter(query: &str) -> Option<&'static str> {
    query.split(['&', ';']).find_map(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        let name = percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
        CREDENTIAL_PARAMETER_WORDS.into_iter().find(|word| name.contains(word))
    })
}

/// What a URL that is not a repository's names instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// A page under the repository; the marker is a known path segment (`tree`, `-`, `src`),
    /// `None` for another extra segment.
    Path(Option<&'static str>),
    /// A query string or a fragment (Azure DevOps' `?path=…&version=…`).
    Query,
    /// A bare `owner/repo`, without a host.
    NoHost,
    /// An owner's page (`https://github.com/acme`) on a host where a repository is
    /// `owner/repo` at least; `use_instead` ends in `/<repository>`.
    Owner,
    /// A project's page (Azure DevOps' project or its settings, a Bitbucket Server project);
    /// `use_instead` is the project's URL then this, ending in `/<repository>`.
    Project(&'static str),
    /// A GitLab group's page (`/groups/acme/platform`); `use_instead` is the group's path then
    /// `/<project>`.
    Group,
}

fn unsupported_scheme_message(scheme: Option<&str>) -> String {
    match scheme {
        Some(s) => format!("uses the scheme `{s}`, which is not supported; use https, http, ssh or git"),
        None => "uses a scheme that is not supported; use https, http, ssh or git".into(),
    }
}

fn credentials_message(kind: Credential, use_instead: &str) -> String {
    let what = match kind {
        Credential::Password => "must not carry a password: remove it".to_owned(),
        Credential::Token => {
            "must not carry an access token: remove what comes before `@`, which looks like one".to_owned()
        }
        Credential::QueryToken { parameter } => format!(
            "must not carry an access token: remove the query string, where a parameter named with `{parameter}` looks like one"
        ),
    };
    format!("{what} (webhooks need no credentials) and write `{use_instead}`")
}

fn page_message(page: &Page, use_instead: &str) -> String {
    match page {
        Page::Path(Some(marker @ ("tree" | "branch"))) => format!(
            "names a page (`/{marker}/…`) rather than the repository: write `{use_instead}`, and the branch in `branch`"
        ),
        Page::Path(Some(marker)) => {
            format!("names a page (`/{marker}/…`) rather than the repository: write `{use_instead}`")
        }
        Page::Path(None) => format!("names a page rather than the repository: write `{use_instead}`"),
        Page::Query => format!(
            "has a query string or a fragment, which names a page rather than the repository: write `{use_instead}`"
        ),
        Page::NoHost => format!("has no host: write the repository's full URL, such as `{use_instead}`"),
        Page::Owner => format!("names an owner rather than a repository: write `{use_instead}`"),
        Page::Group => format!("names a group rather than a project: write `{use_instead}`"),
        Page::Project(_) => format!(
            "names a project or an organization rather than a repository: write `{use_instead}` (the repository's clone URL)"
        ),
    }
}

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// The `host/path` comparison form.
    pub normalized: String,
    /// True when the URL carries something secret: a password in any URL, or an http(s) user
    /// name that is an access token (a token is often passed as the user name). A user name
    /// alone is no secret (`https://emmap1@bitbucket.org/…`, `git@host:…`).
    /// SPEC: such a URL is refused at write time ([`check_repository_url`]).
    pub has_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Ssh,
    Git,
    /// scp-like `[user@]host:path`.
    Scp,
    /// A bare `host/path`.
    Bare,
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
    // The path's special bytes, in one pass (ASCII bytes never occur inside a longer UTF-8
    // character).
    let (mut at, mut query, mut backslash, mut percent) = (false, false, false, false);
    for b in parts.path.bytes() {
        match b {
            b'@' => at = true,
            b'?' | b'#' => query = true,
            b'\\' => backslash = true,
            b'%' => percent = true,
            _ => {}
        }
    }
    if at {
        return Err(RepoUrlError::MisplacedAt);
    }
    if query {
        return Err(RepoUrlError::QueryOrFragment);
    }
    if backslash {
        return Err(RepoUrlError::Backslash);
    }
    if let Some(port) = parts.port {
        check_port(port)?;
    }
    let host = normalize_host(parts.host)?;

    // Decode first, then lower-case, then split: `%2F` becomes a separator and `%2E%2E`
    // is caught as `..`, exactly as the provider would see the path.
    let decoded = if percent {
        percent_decode_str(parts.path)
            .decode_utf8()
            .map_err(|_| RepoUrlError::InvalidEncoding)?
    } else {
        // Nothing to decode (the usual case): the path as it is, already UTF-8.
        Cow::Borrowed(parts.path)
    };
    // The URL has no control character (checked above): only a decoded path can.
    if let Cow::Owned(decoded) = &decoded
        && decoded.chars().any(char::is_control)
    {
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

    let (host, segments, tilde) = match azure_devops(&host, &segments) {
        Some([org, project, repo]) => ("dev.azure.com", vec![org, project, repo], false),
        None => {
            let host = canonical_host(&host);
            let (segments, tilde) = bitbucket_server(host, segments);
            (host, segments, tilde)
        }
    };
    let has_credentials = parts.credential().is_some();

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
    /// As written (`HTTPS`); empty without one.
    scheme_text: &'a str,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

impl Parts<'_> {
    /// The secret the URL carries, if any: a password, or an http(s) user name that is a token.
    fn credential(&self) -> Option<Credential> {
        if self.password.is_some_and(|p| !p.is_empty()) {
            return Some(Credential::Password);
        }
        // `user%3Apass@`: a password behind an encoded colon.
        let decoded_user = self.user.map(|user| percent_decode_str(user).decode_utf8_lossy());
        if decoded_user
            .as_deref()
            .and_then(|user| user.split_once(':'))
            .is_some_and(|(_, password)| !password.is_empty())
        {
            return Some(Credential::Password);
        }
        match (self.scheme, self.user) {
            (Scheme::Http, Some(user)) if is_token(user) => Some(Credential::Token),
            _ => None,
        }
    }

    /// The path's segments as written, without empty and `.` ones.
    fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !matches!(*s, "" | ".")).collect()
    }

    /// The URL of the first `count` path segments, as written, with no user info but an ssh or
    /// scp user name (which is part of the address), no query and no fragment.
    fn repository_url(&self, count: usize) -> String {
        let segments = self.segments();
        self.url_of(&segments[..count.min(segments.len())])
    }

    /// The URL of `segments` on this URL's host, as [`Parts::repository_url`] writes it.
    fn url_of(&self, segments: &[&str]) -> String {
        let path = segments.join("/");
        let user = match (self.scheme, self.user) {
            (Scheme::Ssh | Scheme::Git | Scheme::Scp, Some(user)) if !user.is_empty() => format!("{user}@"),
            _ => String::new(),
        };
        let host = match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_owned(),
        };
        match self.scheme {
            Scheme::Scp => format!("{user}{host}:{path}"),
            Scheme::Bare => format!("https://{host}/{path}"),
            Scheme::Http | Scheme::Ssh | Scheme::Git => {
                format!("{}://{user}{host}/{path}", self.scheme_text.to_ascii_lowercase())
            }
        }
    }
}

/// Whether an http(s) user name is an access token rather than the name of a person or an
/// organization: a known token prefix (GitHub, GitLab, Bitbucket, Atlassian), a name longer
/// than any provider allows for user names (GitHub's 39 characters is the longest), or a long
/// run of hexadecimal digits (Gitea, Gogs and older GitHub tokens).
fn is_token(user: &str) -> bool {
    const PREFIXES: [&str; 17] = [
        // AWS access key ids (CodeCommit).
        "AKIA",
        "ASIA",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "gloas-",
        "gldt-",
        "glrt-",
        "glcbt-",
        "glptt-",
        "glft-",
        "ATBB",
        "BBDC-",
    ];
    let user = percent_decode_str(user).decode_utf8_lossy();
    let length = user.chars().count();
    PREFIXES.iter().any(|prefix| user.starts_with(prefix))
        || user.starts_with("ATATT")
        || length > 39
        || (length >= 32 && user.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The URL a service follows, as [`check_repository_url`] accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRepositoryUrl {
    /// The URL to store: as written, trimmed, without the user name of an http(s) URL.
    pub url: String,
    /// The normalized key pushes are matched on (`github.com/acme/shop`).
    pub key: String,
}

/// Check the repository URL of a service following `provider`, at write time (see the module's
/// documentation): what [`parse_repository_url`] refuses, plus credentials, pages of a
/// repository and a bare `owner/repo`, each refused with the URL to write instead when one can
/// be told.
pub fn check_repository_url(url: &str, provider: GitProvider) -> Result<ServiceRepositoryUrl, RepoUrlError> {
    let key = match parse_repository_url(url) {
        Ok(parsed) => parsed.normalized,
        Err(RepoUrlError::QueryOrFragment) => {
            // Judge what comes before the query: the URL to write instead when it is fine.
            let url = url.trim();
            let path = split_url(url)?.path;
            let cut = url.len() - path.len() + path.find(['?', '#']).unwrap_or(path.len());
            let repository = check_repository_url(&url[..cut], provider)?;
            let query = &url[cut..];
            let query = query.strip_prefix('?').map(|q| q.split('#').next().unwrap_or_default());
            if let Some(parameter) = query.and_then(credential_parameter) {
                return Err(RepoUrlError::Credentials {
                    kind: Credential::QueryToken { parameter },
                    use_instead: repository.url,
                });
            }
            return Err(RepoUrlError::NotARepository {
                page: Page::Query,
                use_instead: repository.url,
            });
        }
        Err(RepoUrlError::Whitespace) => return Err(whitespace_advice(url, provider)),
        Err(RepoUrlError::InvalidPort) => return Err(port_advice(url, provider)),
        Err(err) => return Err(err),
    };
    let url = url.trim();
    let parts = split_url(url)?;
    let segments = parts.segments();
    if let Some(kind) = parts.credential() {
        // Without the credentials, the URL may still name a page: then the repository's URL.
        let without = parts.repository_url(segments.len());
        let use_instead = match check_repository_url(&without, provider) {
            Err(RepoUrlError::NotARepository { use_instead, .. }) => use_instead,
            _ => without,
        };
        return Err(RepoUrlError::Credentials { kind, use_instead });
    }
    if parts.scheme == Scheme::Bare && !parts.host.contains('.') && !parts.host.eq_ignore_ascii_case("localhost") {
        return Err(RepoUrlError::NotARepository {
            page: Page::NoHost,
            use_instead: full_url(provider, parts.host, &segments),
        });
    }
    let host = canonical_host(&key[..key.find('/').unwrap_or(key.len())]);
    if let Some((count, page)) = page_of(host, provider, &segments) {
        let use_instead = match page {
            Page::Project(rest) => format!("{}{rest}", parts.repository_url(count)),
            // The group's own path, after `groups/`, without a `.git` pasted after it.
            Page::Group => {
                let mut group = segments.get(1..count).unwrap_or_default().to_vec();
                if let Some(last) = group.last_mut() {
                    *last = strip_git_suffixes(last);
                }
                format!("{}/<project>", parts.url_of(&group))
            }
            _ => parts.repository_url(count),
        };
        return Err(RepoUrlError::NotARepository { page, use_instead });
    }
    // On these hosts a repository is `owner/repo` at least (GitLab: `group/[sub/…]project`).
    let key_path = key.find('/').map_or("", |slash| &key[slash + 1..]);
    if matches!(host, "github.com" | "gitlab.com" | "bitbucket.org") && !key_path.contains('/') {
        return Err(RepoUrlError::NotARepository {
            page: Page::Owner,
            use_instead: format!("{}/<repository>", parts.repository_url(1)),
        });
    }
    let url = match (parts.scheme, parts.user) {
        (Scheme::Http, Some(_)) => {
            let host = match parts.port {
                Some(port) => format!("{}:{port}", parts.host),
                None => parts.host.to_owned(),
            };
            format!("{}://{host}{}", parts.scheme_text, parts.path)
        }
        _ => url.to_owned(),
    };
    Ok(ServiceRepositoryUrl { url, key })
}

/// Why a URL with white space in it is refused, with what to write when it can be told: the
/// URL of a pasted `git clone` command, or an Azure DevOps name's space as `%20`. The advice
/// is given only when the URL to write passes the checks itself.
fn whitespace_advice(url: &str, provider: GitProvider) -> RepoUrlError {
    let url = url.trim();
    let words: Vec<&str> = url.split_whitespace().collect();
    if let ["git", "clone", rest @ ..] = words.as_slice()
        && let Some(last) = rest.last()
    {
        // Options (`--branch main`) may come between; the URL is the last word, unless a
        // directory follows it.
        let candidate = rest
            .iter()
            .rev()
            .find(|word| word.contains("://") || word.contains(':'))
            .unwrap_or(last);
        return match check_repository_url(candidate, provider) {
            Ok(checked) => RepoUrlError::CloneCommand {
                use_instead: checked.url,
            },
            Err(err) => err,
        };
    }
    if provider == GitProvider::AzureDevops && !url.chars().any(|c| c.is_whitespace() && c != ' ') {
        let escaped = url.replace(' ', "%20");
        if check_repository_url(&escaped, provider).is_ok() {
            return RepoUrlError::SpaceInName { use_instead: escaped };
        }
    }
    RepoUrlError::Whitespace
}

/// Why a URL's port is refused: `ssh://git@host:owner/repo.git` mixes two forms, and the
/// scp-like one is then what to write.
fn port_advice(url: &str, provider: GitProvider) -> RepoUrlError {
    let url = url.trim();
    let scp = url
        .strip_prefix("ssh://")
        .filter(|rest| {
            let authority = rest.split('/').next().unwrap_or(rest);
            authority
                .rsplit_once(':')
                .is_some_and(|(_, port)| !port.is_empty() && !port.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|scp| check_repository_url(scp, provider).is_ok());
    match scp {
        Some(scp) => RepoUrlError::ScpPathInSshUrl {
            use_instead: scp.to_owned(),
        },
        None => RepoUrlError::InvalidPort,
    }
}

/// The full URL of a bare `owner/repo` (`first` then `rest`) on the provider's public host, or
/// on a placeholder host for self-hosted providers; trimmed to the repository when the path
/// goes on into a page.
fn full_url(provider: GitProvider, first: &str, rest: &[&str]) -> String {
    let mut path = std::iter::once(first).chain(rest.iter().copied()).collect::<Vec<_>>();
    // A token pasted alone is no path to repeat.
    if path.iter().any(|segment| is_token(segment)) {
        path = vec!["owner", "repo"];
    }
    let candidate = match (provider, path.as_slice()) {
        (GitProvider::Github, _) => format!("https://github.com/{}", path.join("/")),
        (GitProvider::Gitlab, _) => format!("https://gitlab.com/{}", path.join("/")),
        (GitProvider::Bitbucket, _) => format!("https://bitbucket.org/{}", path.join("/")),
        (GitProvider::AzureDevops, [org, project, repo]) => {
            format!("https://dev.azure.com/{org}/{project}/_git/{repo}")
        }
        (GitProvider::AzureDevops, _) => format!("https://dev.azure.com/{}", path.join("/")),
        _ => format!("https://git.example.com/{}", path.join("/")),
    };
    match check_repository_url(&candidate, provider) {
        Err(RepoUrlError::NotARepository { use_instead, .. }) => use_instead,
        _ => candidate,
    }
}

/// Path segments that name a page of a repository, not the repository: the segment itself
/// and how the page is shown in messages.
const PAGE_SEGMENTS: [&str; 22] = [
    "-",
    "tree",
    "blob",
    "commit",
    "commits",
    "pull",
    "pulls",
    "pull-requests",
    "pullrequest",
    "pullrequests",
    "issues",
    "src",
    "branch",
    "branches",
    "tags",
    "releases",
    "actions",
    "wiki",
    "compare",
    "blame",
    "raw",
    "settings",
];

fn page_segment(segment: &str) -> Option<&'static str> {
    PAGE_SEGMENTS
        .iter()
        .copied()
        .find(|page| page.eq_ignore_ascii_case(segment))
}

/// When `segments` (as written) name a page of a repository on `host` (canonical), how many
/// leading segments name the repository, and the page.
fn page_of(host: &str, provider: GitProvider, segments: &[&str]) -> Option<(usize, Page)> {
    let is = |i: usize, name: &str| segments.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name));
    // GitLab: `groups/…` is a group's page (`groups` is a name GitLab reserves).
    if provider == GitProvider::Gitlab && segments.len() > 1 && is(0, "groups") {
        let end = segments.iter().position(|s| *s == "-").unwrap_or(segments.len());
        if end > 1 {
            return Some((end, Page::Group));
        }
    }
    // GitLab: `group/[sub/…]project/-/tree/main`; a project is at least `group/project`.
    if let Some(i) = (2..segments.len()).find(|&i| is(i, "-")) {
        return Some((i, Page::Path(Some("-"))));
    }
    // Azure DevOps: `[org/]project/_git/repo` then nothing but a clone variant.
    let azure = host == "dev.azure.com" || host.ends_with(".visualstudio.com");
    if azure && let Some(i) = segments.iter().position(|s| s.eq_ignore_ascii_case("_git")) {
        let end = if is(i + 1, "_optimized") || is(i + 1, "_full") {
            i + 3
        } else {
            i + 2
        };
        return (segments.len() > end).then(|| (end, Page::Path(segments.get(end).and_then(|s| page_segment(s)))));
    }
    // Without `_git`, an Azure DevOps web URL names a project's page: the project itself
    // (`org/project` on dev.azure.com) or one of its `_settings`, `_build`, … pages.
    if azure && !segments.first().is_some_and(|s| s.eq_ignore_ascii_case("v3")) {
        if let Some(i) = segments.iter().position(|s| s.starts_with('_')) {
            return Some((i, Page::Project("/_git/<repository>")));
        }
        // dev.azure.com/org[/project]; org.visualstudio.com/[DefaultCollection/]project.
        let visualstudio_project = match segments {
            [collection, _] => collection.eq_ignore_ascii_case("defaultcollection"),
            [_] => true,
            _ => false,
        };
        match segments.len() {
            2 if host == "dev.azure.com" => return Some((2, Page::Project("/_git/<repository>"))),
            1 if host == "dev.azure.com" => return Some((1, Page::Project("/<project>/_git/<repository>"))),
            n if host != "dev.azure.com" && visualstudio_project => {
                return Some((n, Page::Project("/_git/<repository>")));
            }
            _ => {}
        }
    }
    // Bitbucket Server: `[context/]projects/KEY/repos/repo[/browse]`; anything further is a
    // page of the repository, and `projects/KEY` alone the project's.
    if provider == GitProvider::BitbucketServer
        && let Some(i) = segments.iter().position(|s| s.eq_ignore_ascii_case("projects"))
    {
        let len = segments.len();
        if len == i + 2 {
            return Some((len, Page::Project("/repos/<repository>")));
        }
        let browse_only = len == i + 5 && is(i + 4, "browse");
        if is(i + 2, "repos") && len > i + 4 && !browse_only {
            return Some((i + 4, Page::Path(segments.get(i + 4).and_then(|s| page_segment(s)))));
        }
    }
    // GitLab reserves these names: no group or project is called so, and before `/-/` its
    // pages came right after the project (`group/project/tree/main`).
    if provider == GitProvider::Gitlab
        && let Some(i) =
            (2..segments.len()).find(|&i| ["tree", "blob", "commits", "blame", "raw"].iter().any(|w| is(i, w)))
    {
        return Some((i, Page::Path(page_segment(segments[i]))));
    }
    // GitHub and Bitbucket Cloud repositories are exactly `owner/repo`.
    if matches!(host, "github.com" | "bitbucket.org") && segments.len() > 2 {
        return Some((2, Page::Path(page_segment(segments[2]))));
    }
    // So are GitHub Enterprise Server's; but a host of a GitHub service may be another forge's
    // (a GitLab subgroup, Bitbucket Server's `scm/…`), whose longer paths are repositories: only
    // a page's own word after `owner/repo` marks a page there.
    if provider == GitProvider::Github
        && !azure
        && let Some(page) = segments.get(2).and_then(|s| page_segment(s))
    {
        return Some((2, Page::Path(Some(page))));
    }
    // Gitea, Forgejo and Gogs: `owner/repo/src/branch/main`.
    let gitea =
        matches!(provider, GitProvider::Gitea | GitProvider::Gogs) || matches!(host, "codeberg.org" | "gitea.com");
    if gitea && let Some(i) = (2..segments.len()).find(|&i| is(i, "src")) {
        return Some((i, Page::Path(Some("src"))));
    }
    // Their repositories are `owner/repo`: a page's word right after, with more path after it
    // (`settings/hooks`, `commit/<id>`), marks a page. Served under a sub-path, the third
    // segment is the repository's own name, which may be such a word (`gitea/acme/settings`).
    if gitea
        && segments.len() > 3
        && let Some(page) = page_segment(segments[2])
    {
        return Some((2, Page::Path(Some(page))));
    }
    None
}

/// Split into scheme, user info, host, port and path without interpreting them.
fn split_url(url: &str) -> Result<Parts<'_>, RepoUrlError> {
    // `url.find("://")`, without setting up a substring searcher for three bytes.
    let scheme_end = url
        .as_bytes()
        .windows(3)
        .position(|w| w == b"://")
        .filter(|&i| !url.as_bytes()[..i].iter().any(|&b| matches!(b, b'/' | b'@')));
    if let Some(i) = scheme_end {
        let scheme = parse_scheme(&url[..i])?;
        let rest = &url[i + 3..];
        // Byte by byte: a `char` pattern set decodes every character.
        let authority_end = rest
            .bytes()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
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
            scheme_text: &url[..i],
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
                scheme: Scheme::Scp,
                scheme_text: "",
                user,
                password: None,
                host,
                port: None,
                path,
            })
        }
        (_, Some(s)) if url[..s].contains('@') => Err(RepoUrlError::MisplacedAt),
        (_, Some(s)) => Ok(Parts {
            scheme: Scheme::Bare,
            scheme_text: "",
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
            [org, rest @ ..] => azure_git_tail(without_collection(rest)).map(|(p, r)| [*org, p, r]),
            _ => None,
        },
        _ => {
            let org = host.strip_suffix(".visualstudio.com")?;
            if org.contains('.') {
                return None;
            }
            azure_git_tail(without_collection(segments)).map(|(p, r)| [org, p, r])
        }
    }
}

/// The path after the organization without `DefaultCollection`, the collection that legacy
/// `org.visualstudio.com` URLs name and that Azure DevOps' own webhook payloads still carry on
/// `dev.azure.com` (`dev.azure.com/org/DefaultCollection/_git/repo`): the organization is the
/// collection.
fn without_collection<'a, 'b>(segments: &'b [&'a str]) -> &'b [&'a str] {
    match segments {
        ["defaultcollection", rest @ ..] => rest,
        rest => rest,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, normalized, has_credentials)
    #[rustfmt::skip]
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
        ("ssh://git@ssh.github.com:443/acme/shop.git", "github.com/acme/shop", false),
        ("git+ssh://git@github.com/acme/shop.git", "github.com/acme/shop", false),
        ("git://github.com/acme/shop.git", "github.com/acme/shop", false),
        ("https://www.github.com/acme/shop", "github.com/acme/shop", false),
        ("https://ghp_abc123@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://user%3Ahunter2@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://AKIAIOSFODNN7EXAMPLE@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://x-access-token:ghs_abc@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://user:@github.com/acme/shop.git", "github.com/acme/shop", false),
        ("https://0123456789abcdef0123456789abcdef@github.com/acme/shop.git", "github.com/acme/shop", true),
        ("https://glpat-abcdefghij@gitlab.com/acme/shop.git", "gitlab.com/acme/shop", true),
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
        ("https://gitlab.com/group/sub/deeper/repo.git", "gitlab.com/group/sub/deeper/repo", false),
        ("git@gitlab.com:group/sub/repo.git", "gitlab.com/group/sub/repo", false),
        ("ssh://git@gitlab.example.com:2222/group/sub/repo.git", "gitlab.example.com/group/sub/repo", false),
        ("https://oauth2:glpat-xyz@gitlab.example.com/group/sub/repo.git", "gitlab.example.com/group/sub/repo", true),
        ("ssh://git@altssh.gitlab.com:443/group/repo.git", "gitlab.com/group/repo", false),
        ("ssh://deploy:s3cret@gitlab.example.com/group/repo.git", "gitlab.example.com/group/repo", true),
        // Bitbucket Cloud
        ("https://bitbucket.org/team/repo.git", "bitbucket.org/team/repo", false),
        // A user name alone is no secret.
        ("https://jdoe@bitbucket.org/team/repo.git", "bitbucket.org/team/repo", false),
        ("git@bitbucket.org:team/repo.git", "bitbucket.org/team/repo", false),
        // `scm` is an ordinary name on SaaS hosts.
        ("https://bitbucket.org/scm/team/repo", "bitbucket.org/scm/team/repo", false),
        // Gitea / Forgejo / Gogs
        ("https://gitea.example.com/owner/repo.git", "gitea.example.com/owner/repo", false),
        ("ssh://git@gitea.example.com:2222/owner/repo.git", "gitea.example.com/owner/repo", false),
        ("http://localhost:3000/owner/repo.git", "localhost/owner/repo", false),
        ("https://codeberg.org/forgejo/forgejo.git", "codeberg.org/forgejo/forgejo", false),
        ("http://10.0.0.5:3000/owner/repo", "10.0.0.5/owner/repo", false),
        // Bitbucket Server / Data Center
        ("https://bitbucket.example.com/scm/proj/repo.git", "bitbucket.example.com/proj/repo", false),
        ("https://bitbucket.example.com/bitbucket/scm/proj/repo.git", "bitbucket.example.com/proj/repo", false),
        ("ssh://git@bitbucket.example.com:7999/proj/repo.git", "bitbucket.example.com/proj/repo", false),
        ("ssh://git@bitbucket.example.com:7999/PROJ/repo.git", "bitbucket.example.com/proj/repo", false),
        ("https://admin@bitbucket.example.com/scm/PROJ/repo.git", "bitbucket.example.com/proj/repo", false),
        ("https://bitbucket.example.com/projects/PROJ/repos/repo/browse", "bitbucket.example.com/proj/repo", false),
        ("https://bitbucket.example.com/projects/PROJ/repos/repo", "bitbucket.example.com/proj/repo", false),
        ("https://bitbucket.example.com/projects/PROJ/repos/repo.git/browse", "bitbucket.example.com/proj/repo", false),
        ("https://bitbucket.example.com/users/jdoe/repos/repo.git/browse", "bitbucket.example.com/~jdoe/repo", false),
        ("https://bitbucket.example.com/scm/~jdoe/repo.git", "bitbucket.example.com/~jdoe/repo", false),
        ("ssh://git@bitbucket.example.com:7999/~jdoe/repo.git", "bitbucket.example.com/~jdoe/repo", false),
        // Azure DevOps
        ("https://dev.azure.com/org/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://org@dev.azure.com/org/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://Org@dev.azure.com/org/Project/_git/Repo", "dev.azure.com/org/project/repo", false),
        ("https://other@dev.azure.com/org/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://org:pat123@dev.azure.com/org/project/_git/repo", "dev.azure.com/org/project/repo", true),
        ("git@ssh.dev.azure.com:v3/org/project/repo", "dev.azure.com/org/project/repo", false),
        ("ssh.dev.azure.com:v3/org/project/repo", "dev.azure.com/org/project/repo", false),
        ("ssh://git@ssh.dev.azure.com/v3/org/project/repo", "dev.azure.com/org/project/repo", false),
        ("https://org.visualstudio.com/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://org.visualstudio.com/DefaultCollection/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://org.visualstudio.com/project/_git/_optimized/repo", "dev.azure.com/org/project/repo", false),
        ("org@vs-ssh.visualstudio.com:v3/org/project/repo", "dev.azure.com/org/project/repo", false),
        ("https://dev.azure.com/org/My%20Project/_git/My%20Repo", "dev.azure.com/org/my project/my repo", false),
        ("https://dev.azure.com/org/_git/shop", "dev.azure.com/org/shop/shop", false),
        // As Azure DevOps' push payloads name a project's default repository.
        ("https://dev.azure.com/org/DefaultCollection/_git/shop", "dev.azure.com/org/shop/shop", false),
        ("https://dev.azure.com/org/DefaultCollection/project/_git/repo", "dev.azure.com/org/project/repo", false),
        ("https://org.visualstudio.com/DefaultCollection/_git/shop", "dev.azure.com/org/shop/shop", false),
        ("dev.azure.com/org/project/repo", "dev.azure.com/org/project/repo", false),
        // Bitbucket Server's `scm` marker means nothing on Azure DevOps' hosts.
        ("ssh.dev.azure.com:v3/scm/project/repo", "dev.azure.com/scm/project/repo", false),
        ("https://org.visualstudio.com/team/scm/_git/repo", "org.visualstudio.com/team/scm/_git/repo", false),
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

    /// `input` normalizes to `normalized`, which normalizes to itself.
    fn normalizes_once(input: &str, normalized: &str) {
        assert_eq!(normalize_repository_url(input).as_deref(), Ok(normalized), "{input:?}");
        assert_eq!(
            normalize_repository_url(normalized).as_deref(),
            Ok(normalized),
            "{normalized:?}"
        );
    }

    /// Found by the `repo_url` fuzz target: removing `.git` turned `...git` into a `..` segment
    /// (and `..git` into `.`), which a second normalization refuses (or drops).
    #[test]
    fn git_suffix_never_leaves_a_dot_segment() {
        for (input, normalized) in [
            ("s:\u{FFFD}/...git//", "s/\u{FFFD}/...git"),
            ("https://h.example/a/..git", "h.example/a/..git"),
        ] {
            normalizes_once(input, normalized);
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
            normalizes_once(input, normalized);
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
    fn error_messages_are_phrases() {
        let err = parse_repository_url("ftp://h.example/r").expect_err("ftp refused");
        assert_eq!(
            err.to_string(),
            "uses the scheme `ftp`, which is not supported; use https, http, ssh or git"
        );
        let long = "a".repeat(2049);
        for input in [
            "",
            "a b",
            "https://github.com/a/b?x",
            &long,
            "https://github.com/a/../b",
            "1x://h/a",
        ] {
            let message = parse_repository_url(input).unwrap_err().to_string();
            assert!(message.starts_with(|c: char| c.is_ascii_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    fn check(url: &str) -> Result<ServiceRepositoryUrl, RepoUrlError> {
        check_repository_url(url, provider_of(url))
    }

    /// The provider a test URL is for, from its host.
    fn provider_of(url: &str) -> GitProvider {
        if url.contains("gitlab") {
            GitProvider::Gitlab
        } else if url.contains("bitbucket.org") {
            GitProvider::Bitbucket
        } else if url.contains("bitbucket") {
            GitProvider::BitbucketServer
        } else if url.contains("azure") || url.contains("visualstudio") {
            GitProvider::AzureDevops
        } else if url.contains("gitea") || url.contains("codeberg") || url.contains("localhost") {
            GitProvider::Gitea
        } else {
            GitProvider::Github
        }
    }

    #[test]
    fn every_accepted_form_without_a_secret_is_accepted_at_write_time() {
        for (input, normalized, creds) in ACCEPTED {
            match check(input) {
                Ok(checked) => {
                    assert!(!creds, "{input:?} carries credentials yet was accepted");
                    assert_eq!(checked.key, *normalized, "{input:?}");
                    // What is stored reads the same, and is stable.
                    assert_eq!(normalize_repository_url(&checked.url).as_deref(), Ok(*normalized));
                    assert_eq!(check(&checked.url).as_ref(), Ok(&checked), "{input:?}");
                }
                Err(RepoUrlError::Credentials { .. }) => assert!(creds, "{input:?}"),
                // `scm/…` on bitbucket.org: Bitbucket Cloud repositories are `owner/repo`.
                Err(RepoUrlError::NotARepository { .. }) if *input == "https://bitbucket.org/scm/team/repo" => {}
                Err(err) => panic!("{input:?} refused at write time: {err}"),
            }
        }
    }

    #[test]
    fn a_user_name_alone_is_dropped() {
        let checked = check("https://emmap1@bitbucket.org/team/repo.git").unwrap();
        assert_eq!(checked.url, "https://bitbucket.org/team/repo.git");
        assert_eq!(checked.key, "bitbucket.org/team/repo");
        let checked = check(" https://Org@dev.azure.com:443/Org/Project/_git/Repo\n").unwrap();
        assert_eq!(checked.url, "https://dev.azure.com:443/Org/Project/_git/Repo");
        let checked = check("https://user:@github.com/acme/shop").unwrap();
        assert_eq!(checked.url, "https://github.com/acme/shop");
        // An ssh user is part of the address: kept.
        let checked = check("ssh://git@gitlab.example.com:2222/group/sub/repo.git").unwrap();
        assert_eq!(checked.url, "ssh://git@gitlab.example.com:2222/group/sub/repo.git");
        assert_eq!(
            check("git@github.com:acme/shop.git").unwrap().url,
            "git@github.com:acme/shop.git"
        );
    }

    #[test]
    fn passwords_and_tokens_are_refused_with_what_to_write() {
        let cases = [
            (
                "https://user:hunter2secret@github.com/acme/shop.git",
                Credential::Password,
                "https://github.com/acme/shop.git",
            ),
            (
                "https://x-access-token:hunter2secret@github.com/acme/shop",
                Credential::Password,
                "https://github.com/acme/shop",
            ),
            (
                "https://oauth2:hunter2secret@gitlab.example.com:8443/g/sub/r.git",
                Credential::Password,
                "https://gitlab.example.com:8443/g/sub/r.git",
            ),
            (
                "ssh://deploy:hunter2secret@gitlab.example.com/group/repo.git",
                Credential::Password,
                "ssh://deploy@gitlab.example.com/group/repo.git",
            ),
            (
                "https://ghp_hunter2secret@github.com/acme/shop.git",
                Credential::Token,
                "https://github.com/acme/shop.git",
            ),
            (
                "https://github_pat_hunter2secret@github.com/acme/shop",
                Credential::Token,
                "https://github.com/acme/shop",
            ),
            (
                "https://glpat-hunter2secret@gitlab.com/g/r",
                Credential::Token,
                "https://gitlab.com/g/r",
            ),
            (
                "https://hunter2secretabcdefabcdef0123456789abcdef@gitea.example.com/o/r",
                Credential::Token,
                "https://gitea.example.com/o/r",
            ),
            (
                "https://hunter2secret4567890123456789012345678901234567890123@dev.azure.com/org/p/_git/r",
                Credential::Token,
                "https://dev.azure.com/org/p/_git/r",
            ),
            // With a query too: the credentials are named first, and the query is not repeated.
            (
                "https://u:hunter2secret@github.com/acme/shop?token=hunter2secret",
                Credential::Password,
                "https://github.com/acme/shop",
            ),
            // A page's URL with credentials: the URL to write is the repository's, which is
            // accepted, not the page's, which would be refused next.
            (
                "https://u:hunter2secret@github.com/acme/shop/tree/main/src",
                Credential::Password,
                "https://github.com/acme/shop",
            ),
            (
                "https://glpat-hunter2secret@gitlab.com/g/r/-/blob/main/README.md",
                Credential::Token,
                "https://gitlab.com/g/r",
            ),
            // A token in the query string, under any name that says so.
            (
                "https://github.com/acme/shop.git?access_token=ghp_hunter2secret",
                Credential::QueryToken { parameter: "token" },
                "https://github.com/acme/shop.git",
            ),
            (
                "https://gitlab.com/g/r.git?ref=main&PRIVATE%5FTOKEN=hunter2secret#x",
                Credential::QueryToken { parameter: "token" },
                "https://gitlab.com/g/r.git",
            ),
            (
                "https://gitea.example.com/o/r?password=hunter2secret",
                Credential::QueryToken { parameter: "pass" },
                "https://gitea.example.com/o/r",
            ),
        ];
        for (input, kind, instead) in cases {
            assert!(check(instead).is_ok(), "{instead} is refused too");
            let err = check(input).expect_err(input);
            assert_eq!(
                err,
                RepoUrlError::Credentials {
                    kind,
                    use_instead: instead.to_owned()
                },
                "{input}"
            );
            let message = err.to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(
                message.contains(&format!("`{instead}`")) && message.contains("remove"),
                "{message}"
            );
        }
    }

    /// A service that says `GITHUB` for a repository of another forge is judged by the URL:
    /// longer paths are repositories there (SPEC's own examples), not pages.
    #[test]
    fn a_github_service_on_another_forge_keeps_every_segment() {
        for (url, key) in [
            ("https://gitlab.com/group/sub/repo.git", "gitlab.com/group/sub/repo"),
            (
                "ssh://git@host.example.com:2222/group/sub/repo.git",
                "host.example.com/group/sub/repo",
            ),
            ("https://ghe.example.com/org/team/repo", "ghe.example.com/org/team/repo"),
        ] {
            let checked = check_repository_url(url, GitProvider::Github).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(checked.key, key, "{url}");
        }
        // github.com itself has no deeper repositories, and a page's word still marks a page.
        assert!(check_repository_url("https://github.com/acme/shop/anything", GitProvider::Github).is_err());
        assert!(check_repository_url("https://ghe.example.com/acme/shop/blob/main/x", GitProvider::Github).is_err());
    }

    #[test]
    fn pages_are_refused_with_the_repository_url() {
        let cases = [
            (
                "https://github.com/acme/shop/tree/main",
                "https://github.com/acme/shop",
                Some("tree"),
            ),
            (
                "https://github.com/Acme/Shop/blob/main/src/lib.rs",
                "https://github.com/Acme/Shop",
                Some("blob"),
            ),
            (
                "https://github.com/acme/shop/commit/0a1b2c",
                "https://github.com/acme/shop",
                Some("commit"),
            ),
            (
                "https://github.com/acme/shop/pull/12",
                "https://github.com/acme/shop",
                Some("pull"),
            ),
            (
                "https://github.com/acme/shop/anything",
                "https://github.com/acme/shop",
                None,
            ),
            (
                "https://ghe.example.com/acme/shop/tree/main",
                "https://ghe.example.com/acme/shop",
                Some("tree"),
            ),
            (
                "https://gitlab.com/g/sub/r/-/tree/main",
                "https://gitlab.com/g/sub/r",
                Some("-"),
            ),
            (
                "https://gitlab.example.com/g/r/-/blob/main/README.md",
                "https://gitlab.example.com/g/r",
                Some("-"),
            ),
            (
                "https://bitbucket.org/team/repo/src/main/",
                "https://bitbucket.org/team/repo",
                Some("src"),
            ),
            (
                "https://bitbucket.org/team/repo/branch/feature",
                "https://bitbucket.org/team/repo",
                Some("branch"),
            ),
            (
                "https://dev.azure.com/org/project/_git/repo/commit/abc",
                "https://dev.azure.com/org/project/_git/repo",
                Some("commit"),
            ),
            (
                "https://gitea.example.com/owner/repo/src/branch/main",
                "https://gitea.example.com/owner/repo",
                Some("src"),
            ),
            (
                "https://codeberg.org/forgejo/forgejo/src/branch/forgejo",
                "https://codeberg.org/forgejo/forgejo",
                Some("src"),
            ),
            // Where a user wires the webhook, on hosts of their own.
            (
                "http://localhost:3000/example/example/settings/hooks",
                "http://localhost:3000/example/example",
                Some("settings"),
            ),
            (
                "https://gitea.example.com/owner/repo/commit/67b5",
                "https://gitea.example.com/owner/repo",
                Some("commit"),
            ),
            (
                "https://codeberg.org/owner/repo/issues/12",
                "https://codeberg.org/owner/repo",
                Some("issues"),
            ),
            (
                "https://ghe.example.com/acme/shop/settings/hooks",
                "https://ghe.example.com/acme/shop",
                Some("settings"),
            ),
            (
                "https://bitbucket.example.com/projects/PROJ/repos/repo/commits",
                "https://bitbucket.example.com/projects/PROJ/repos/repo",
                Some("commits"),
            ),
            (
                "https://bitbucket.example.com/projects/PROJ/repos/repo/browse/src/main.rs",
                "https://bitbucket.example.com/projects/PROJ/repos/repo",
                None,
            ),
            (
                "https://gitlab.example.com/mike/diaspora/tree/master",
                "https://gitlab.example.com/mike/diaspora",
                Some("tree"),
            ),
        ];
        for (input, instead, marker) in cases {
            let err = check(input).expect_err(input);
            assert_eq!(
                err,
                RepoUrlError::NotARepository {
                    page: Page::Path(marker),
                    use_instead: instead.to_owned()
                },
                "{input}"
            );
            assert!(err.to_string().contains(&format!("write `{instead}`")), "{err}");
            assert!(check(instead).is_ok(), "{instead}");
        }
        let message = check("https://github.com/acme/shop/tree/main").unwrap_err().to_string();
        assert_eq!(
            message,
            "names a page (`/tree/…`) rather than the repository: write `https://github.com/acme/shop`, and the branch in `branch`"
        );
        // GitLab subgroups, and other hosts' deeper paths, are repositories.
        for ok in [
            "https://gitlab.com/group/sub/deeper/repo.git",
            "https://gitlab.example.com/a/tree/b",
            "https://bitbucket.example.com/scm/proj/repo.git",
            "https://bitbucket.example.com/projects/PROJ/repos/repo/browse",
            "https://gitea.example.com/sub/path/owner/repo",
            "https://gitea.example.com/owner/settings",
            // Gitea under a sub-path, with repositories named like pages.
            "https://example.com/gitea/acme/settings",
            "https://example.com/gitea/acme/issues",
            "https://gitlab.example.com/group/tree",
            "https://gitlab.example.com/group/settings/repo",
            "https://bitbucket.example.com/ctx/projects/PROJ/repos/repo",
            "git@ssh.dev.azure.com:v3/org/project/repo",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        // A group's or a project's page: a project or repository in it is what to write.
        const GROUP: &str = "names a group";
        const PROJECT: &str = "names a project";
        for (input, instead, says) in [
            (
                "https://gitlab.com/groups/acme/platform",
                "https://gitlab.com/acme/platform/<project>",
                GROUP,
            ),
            (
                "https://gitlab.example.com/groups/acme/-/settings",
                "https://gitlab.example.com/acme/<project>",
                GROUP,
            ),
            (
                "https://gitlab.example.com/groups/acme/platform.git",
                "https://gitlab.example.com/acme/platform/<project>",
                GROUP,
            ),
            (
                "https://dev.azure.com/org/Project",
                "https://dev.azure.com/org/Project/_git/<repository>",
                PROJECT,
            ),
            (
                "https://dev.azure.com/org/Project/_settings/repositories",
                "https://dev.azure.com/org/Project/_git/<repository>",
                PROJECT,
            ),
            (
                "https://dev.azure.com/org/Project/_settings/repositories?repo=278d5cd2",
                "https://dev.azure.com/org/Project/_git/<repository>",
                PROJECT,
            ),
            (
                "https://org.visualstudio.com/Project/_build",
                "https://org.visualstudio.com/Project/_git/<repository>",
                PROJECT,
            ),
            (
                "https://bitbucket.example.com/projects/PROJ",
                "https://bitbucket.example.com/projects/PROJ/repos/<repository>",
                PROJECT,
            ),
            (
                "https://dev.azure.com/org",
                "https://dev.azure.com/org/<project>/_git/<repository>",
                PROJECT,
            ),
            (
                "https://org.visualstudio.com/Project",
                "https://org.visualstudio.com/Project/_git/<repository>",
                PROJECT,
            ),
            (
                "https://org.visualstudio.com/DefaultCollection/Project",
                "https://org.visualstudio.com/DefaultCollection/Project/_git/<repository>",
                PROJECT,
            ),
        ] {
            let err = check(input).expect_err(input);
            let page_fits = |page: &Page| match says {
                GROUP => *page == Page::Group,
                _ => matches!(page, Page::Project(_)),
            };
            assert!(
                matches!(&err, RepoUrlError::NotARepository { page, use_instead } if page_fits(page) && use_instead == instead),
                "{input}: {err:?}"
            );
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn pasted_mistakes_say_what_to_write() {
        let cases = [
            (
                "git clone https://emmap1@bitbucket.org/team_name/repo_name.git",
                // The https user name is dropped, as when the URL alone is written.
                RepoUrlError::CloneCommand {
                    use_instead: "https://bitbucket.org/team_name/repo_name.git".to_owned(),
                },
            ),
            (
                "git clone --branch main git@github.com:acme/shop.git shop-dir\n",
                RepoUrlError::CloneCommand {
                    use_instead: "git@github.com:acme/shop.git".to_owned(),
                },
            ),
            (
                "https://dev.azure.com/fabrikam/Fabrikam Fiber/_git/Fabrikam-Fiber-Git",
                RepoUrlError::SpaceInName {
                    use_instead: "https://dev.azure.com/fabrikam/Fabrikam%20Fiber/_git/Fabrikam-Fiber-Git".to_owned(),
                },
            ),
            (
                "ssh://git@github.com:binkkatal/sample_app.git",
                RepoUrlError::ScpPathInSshUrl {
                    use_instead: "git@github.com:binkkatal/sample_app.git".to_owned(),
                },
            ),
            // No advice to give: the usual refusals.
            ("https://github.com/acme/my shop", RepoUrlError::Whitespace),
            ("ssh://git@github.com:99999/acme/shop.git", RepoUrlError::InvalidPort),
            ("git clone", RepoUrlError::Whitespace),
        ];
        for (input, want) in cases {
            assert_eq!(check(input), Err(want), "{input}");
        }
        // The command's URL is checked as any other: its credentials are refused, not echoed.
        let err = check("git clone https://user:hunter2@github.com/acme/shop.git").unwrap_err();
        assert!(matches!(err, RepoUrlError::Credentials { .. }), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Pushes' URLs are read as before.
        assert_eq!(
            parse_repository_url("ssh://git@github.com:acme/shop.git"),
            Err(RepoUrlError::InvalidPort)
        );
    }

    #[test]
    fn queries_name_pages() {
        let cases = [
            (
                "https://dev.azure.com/org/project/_git/repo?path=/src/app.cs&version=GBmain",
                "https://dev.azure.com/org/project/_git/repo",
            ),
            (
                "https://dev.azure.com/org/project/_git/repo?version=GBmain",
                "https://dev.azure.com/org/project/_git/repo",
            ),
            ("https://github.com/acme/shop#readme", "https://github.com/acme/shop"),
            (
                "https://github.com/acme/shop/tree/main?tab=readme",
                "https://github.com/acme/shop",
            ),
        ];
        for (input, instead) in cases {
            let err = check(input).expect_err(input);
            assert!(
                matches!(&err, RepoUrlError::NotARepository { use_instead, .. } if use_instead == instead),
                "{input}: {err:?}"
            );
        }
        assert_eq!(
            check("https://github.com/?private_token=hunter2"),
            Err(RepoUrlError::MissingPath)
        );
        let message = check("https://gitlab.com/g/r?private_token=hunter2secret")
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains("hunter2") && !message.contains("private_token"),
            "{message}"
        );
    }

    #[test]
    fn a_bare_owner_and_repository_needs_a_host() {
        let cases = [
            ("acme/shop", GitProvider::Github, "https://github.com/acme/shop"),
            ("Acme/Shop.git", GitProvider::Github, "https://github.com/Acme/Shop.git"),
            (
                "acme/shop/tree/main",
                GitProvider::Github,
                "https://github.com/acme/shop",
            ),
            (
                "group/sub/repo",
                GitProvider::Gitlab,
                "https://gitlab.com/group/sub/repo",
            ),
            ("team/repo", GitProvider::Bitbucket, "https://bitbucket.org/team/repo"),
            (
                "org/project/repo",
                GitProvider::AzureDevops,
                "https://dev.azure.com/org/project/_git/repo",
            ),
            ("owner/repo", GitProvider::Gitea, "https://git.example.com/owner/repo"),
        ];
        for (input, provider, instead) in cases {
            assert_eq!(
                check_repository_url(input, provider),
                Err(RepoUrlError::NotARepository {
                    page: Page::NoHost,
                    use_instead: instead.to_owned()
                }),
                "{input}"
            );
        }
        // An owner alone is no repository where repositories are `owner/repo`.
        for (input, instead) in [
            ("https://github.com/acme", "https://github.com/acme/<repository>"),
            ("https://gitlab.com/group/", "https://gitlab.com/group/<repository>"),
            ("git@bitbucket.org:team", "git@bitbucket.org:team/<repository>"),
        ] {
            let err = check_repository_url(input, GitProvider::Github).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("names an owner rather than a repository: write `{instead}`"),
                "{input}"
            );
        }
        assert!(check_repository_url("https://git.example.com/repo", GitProvider::Gitea).is_ok());
        // A host, even without a scheme, is enough; so is scp's `host:path`.
        for ok in ["github.com/acme/shop", "localhost/owner/repo", "gitea:owner/repo"] {
            assert!(check_repository_url(ok, GitProvider::Gitea).is_ok(), "{ok}");
        }
        // Payloads keep normalizing as before.
        assert_eq!(normalize_repository_url("acme/shop").as_deref(), Ok("acme/shop"));
        assert_eq!(
            normalize_repository_url("https://github.com/acme/shop/tree/main").as_deref(),
            Ok("github.com/acme/shop/tree/main")
        );
    }

    #[test]
    fn write_time_errors_never_echo_credentials() {
        for input in [
            "https://user:hunter2secret@git_hub.com/acme/shop",
            "https://ghp_hunter2secret@github.com/acme/shop/tree/main",
            "https://u:hunter2secret@github.com/acme/shop/tree/main",
            "ghp_hunter2secret/shop",
            "https://github.com/acme/shop?hunter2secret",
            "https://github.com/acme/shop#hunter2secret",
        ] {
            let err = check(input).expect_err(input);
            assert!(!err.to_string().contains("hunter2"), "{input}: {err}");
        }
    }
}
