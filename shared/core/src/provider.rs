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
}

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
}
