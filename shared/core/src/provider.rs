//! The git providers whose push webhooks the product accepts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GitProvider {
    Github,
    Gitlab,
    Bitbucket,
    BitbucketServer,
    Gitea,
    Gogs,
    AzureDevops,
}

impl GitProvider {
    pub const ALL: [GitProvider; 7] = [
        GitProvider::Github,
        GitProvider::Gitlab,
        GitProvider::Bitbucket,
        GitProvider::BitbucketServer,
        GitProvider::Gitea,
        GitProvider::Gogs,
        GitProvider::AzureDevops,
    ];

    /// The provider's segment in webhook URLs: `/organization/{org}/webhooks/{slug}`.
    pub fn slug(self) -> &'static str {
        match self {
            GitProvider::Github => "github",
            GitProvider::Gitlab => "gitlab",
            GitProvider::Bitbucket => "bitbucket",
            GitProvider::BitbucketServer => "bitbucket-server",
            GitProvider::Gitea => "gitea",
            GitProvider::Gogs => "gogs",
            GitProvider::AzureDevops => "azure-devops",
        }
    }

    /// The enum value as it appears in JSON (`GITHUB`, `BITBUCKET_SERVER`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            GitProvider::Github => "GITHUB",
            GitProvider::Gitlab => "GITLAB",
            GitProvider::Bitbucket => "BITBUCKET",
            GitProvider::BitbucketServer => "BITBUCKET_SERVER",
            GitProvider::Gitea => "GITEA",
            GitProvider::Gogs => "GOGS",
            GitProvider::AzureDevops => "AZURE_DEVOPS",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.slug() == slug)
    }
}

/// Whom a webhook secret belongs to: a git provider, or a registry that calls us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretProvider {
    Git(GitProvider),
    Dockerhub,
}

impl SecretProvider {
    pub fn slug(self) -> &'static str {
        match self {
            SecretProvider::Git(p) => p.slug(),
            SecretProvider::Dockerhub => "dockerhub",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        if slug == "dockerhub" {
            return Some(SecretProvider::Dockerhub);
        }
        GitProvider::from_slug(slug).map(SecretProvider::Git)
    }

    /// Every accepted slug, for error messages.
    pub fn all_slugs() -> Vec<&'static str> {
        let mut slugs: Vec<_> = GitProvider::ALL.iter().map(|p| p.slug()).collect();
        slugs.push("dockerhub");
        slugs
    }

    /// Check a webhook secret before it is stored for this provider: at least
    /// [`MIN_SECRET_CHARS`] characters, at most [`MAX_SECRET_BYTES`] bytes, no control
    /// character; and for `dockerhub`, whose secret travels in the webhook URL, only characters
    /// a URL carries as they are (`A-Z a-z 0-9 . _ ~ -`).
    ///
    /// The error is a phrase about the `secret` field (`must be at least 16 characters long;
    /// …`); it never repeats the secret nor any character of it.
    pub fn validate_secret(self, secret: &str) -> Result<(), String> {
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(format!(
                "must be at least {MIN_SECRET_CHARS} characters long; {GENERATE_SECRET}"
            ));
        }
        if secret.len() > MAX_SECRET_BYTES {
            return Err(format!("must be at most {MAX_SECRET_BYTES} bytes long"));
        }
        if secret.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        if secret.trim().is_empty() {
            return Err(format!("must not be only spaces; {GENERATE_SECRET}"));
        }
        let url_safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
        if self == SecretProvider::Dockerhub && !secret.bytes().all(url_safe) {
            return Err(format!(
                "must hold only letters, digits and `.` `_` `~` `-`, since Docker Hub sends it in the webhook URL; {GENERATE_SECRET}"
            ));
        }
        Ok(())
    }
}

/// Fewest characters in a webhook secret.
pub const MIN_SECRET_CHARS: usize = 16;

/// Most bytes in a webhook secret.
pub const MAX_SECRET_BYTES: usize = 1024;

/// How to make a good secret, for the messages that refuse one.
const GENERATE_SECRET: &str = "generate one with `openssl rand -hex 32`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip() {
        for p in GitProvider::ALL {
            assert_eq!(GitProvider::from_slug(p.slug()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(SecretProvider::from_slug("dockerhub"), Some(SecretProvider::Dockerhub));
        assert_eq!(SecretProvider::from_slug("GitHub"), None);
    }

    #[test]
    fn webhook_secrets() {
        let github = SecretProvider::Git(GitProvider::Github);
        let dockerhub = SecretProvider::Dockerhub;
        let hex = "0123456789abcdef".repeat(4);
        for provider in [github, dockerhub] {
            assert_eq!(provider.validate_secret(&hex), Ok(()));
            assert_eq!(provider.validate_secret("A-z0.9_~-a-z0.9_"), Ok(()));
        }
        // Characters, not bytes, count towards the minimum; bytes towards the maximum.
        assert_eq!(github.validate_secret(&"é".repeat(16)), Ok(()));
        assert_eq!(github.validate_secret("with spaces, / and + = ?"), Ok(()));
        let refused = |provider: SecretProvider, secret: &str, needle: &str| {
            let err = provider.validate_secret(secret).unwrap_err();
            assert!(err.contains(needle), "{secret:?}: {err}");
            assert!(
                err.starts_with(|c: char| c.is_ascii_lowercase()) && !err.ends_with('.'),
                "{err}"
            );
            if secret.len() >= 4 {
                assert!(!err.contains(secret), "{err}");
            }
        };
        refused(github, "short", "at least 16 characters");
        refused(github, &"é".repeat(15), "openssl rand -hex 32");
        refused(github, &"a".repeat(1025), "at most 1024 bytes");
        refused(github, &"é".repeat(513), "at most 1024 bytes");
        refused(github, "sixteen chars\nand more", "control characters");
        refused(github, &" ".repeat(20), "only spaces");
        for bad in [
            "sixteen chars and spaces",
            "s3cret/with/slashes",
            "percent%20encoded!",
            "question?mark=yes&no",
            "plus+plus+plus+plus",
            "ünïcödé-sëcrët-1234",
        ] {
            assert_eq!(github.validate_secret(bad), Ok(()), "{bad}");
            refused(dockerhub, bad, "openssl rand -hex 32");
            refused(dockerhub, bad, "Docker Hub sends it in the webhook URL");
        }
    }
}
