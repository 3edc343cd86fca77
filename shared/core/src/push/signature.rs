//! Delivery verification with the organization's secret for the provider.
//!
//! Every comparison with the secret or a MAC made from it is constant-time (`verify_slice`,
//! [`secrets_match`]), and no error carries the secret or the received signature.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::provider::GitProvider;

/// Why a delivery is refused (answered 401 `UNAUTHORIZED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "no webhook secret is configured for {}, so its deliveries are refused",
        .0.slug()
    )]
    NoSecret(GitProvider),
    #[error("the `{0}` header is missing: the webhook must be configured with the organization's secret")]
    MissingHeader(&'static str),
    #[error(
        "the delivery is signed with SHA-1 only (`X-Hub-Signature`); SHA-1 is refused, a SHA-256 signature (`X-Hub-Signature-256`) is required"
    )]
    Sha1Only,
    #[error("the `{header}` header must start with `{expected}`")]
    WrongPrefix {
        header: &'static str,
        expected: &'static str,
    },
    #[error("the `{0}` header is not an HMAC-SHA256 in hexadecimal (64 hex digits)")]
    NotHex(&'static str),
    #[error("the signature in `{0}` does not match the body signed with the organization's secret")]
    Mismatch(&'static str),
    #[error("the `{0}` header does not match the organization's secret")]
    TokenMismatch(&'static str),
    #[error("the `Authorization` header must use HTTP Basic authentication")]
    NotBasicAuth,
    #[error("the `Authorization` header's Basic credentials are not base64-encoded `user:password`")]
    MalformedBasicAuth,
    #[error("the password in the `Authorization` header does not match the organization's secret")]
    PasswordMismatch,
}

/// Verify the delivery with the organization's `secret` for `provider`:
///
/// - github: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body; a delivery
///   signed only with SHA-1 (`X-Hub-Signature`) is refused.
/// - gitlab: `X-Gitlab-Token` equal to the secret.
/// - bitbucket (Cloud) and bitbucket-server: `X-Hub-Signature: sha256=<hex>`.
/// - gitea: `X-Gitea-Signature: <hex>`, or `X-Forgejo-Signature`, or
///   `X-Hub-Signature-256: sha256=<hex>` (the first present is the one checked).
/// - gogs: `X-Gogs-Signature: <hex>`.
/// - azure-devops: HTTP Basic auth whose password is the secret; any user name.
///
/// Hex is case-insensitive. An empty secret refuses everything: the product fails closed.
pub fn verify_signature(
    provider: GitProvider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret(provider));
    }
    match provider {
        GitProvider::Github => match headers.get("x-hub-signature-256") {
            Some(value) => verify_hmac("X-Hub-Signature-256", Some("sha256="), value.as_bytes(), body, secret),
            None if headers.contains_key("x-hub-signature") => Err(SignatureError::Sha1Only),
            None => Err(SignatureError::MissingHeader("X-Hub-Signature-256")),
        },
        GitProvider::Gitlab => {
            let token = header(headers, "X-Gitlab-Token")?;
            if secrets_match(token, secret) {
                Ok(())
            } else {
                Err(SignatureError::TokenMismatch("X-Gitlab-Token"))
            }
        }
        GitProvider::Bitbucket | GitProvider::BitbucketServer => {
            let value = header(headers, "X-Hub-Signature")?;
            verify_hmac("X-Hub-Signature", Some("sha256="), value, body, secret)
        }
        GitProvider::Gitea => {
            if let Some(value) = headers.get("x-gitea-signature") {
                verify_hmac("X-Gitea-Signature", None, value.as_bytes(), body, secret)
            } else if let Some(value) = headers.get("x-forgejo-signature") {
                verify_hmac("X-Forgejo-Signature", None, value.as_bytes(), body, secret)
            } else if let Some(value) = headers.get("x-hub-signature-256") {
                let value = value.as_bytes();
                verify_hmac("X-Hub-Signature-256", Some("sha256="), value, body, secret)
            } else {
                Err(SignatureError::MissingHeader("X-Gitea-Signature"))
            }
        }
        GitProvider::Gogs => {
            let value = header(headers, "X-Gogs-Signature")?;
            verify_hmac("X-Gogs-Signature", None, value, body, secret)
        }
        GitProvider::AzureDevops => verify_basic_password(headers, secret),
    }
}

/// Whether a presented secret (a token header, a password, a secret in a URL) is the stored
/// one. Both are hashed first and the SHA-256 digests compared in constant time, so the time
/// taken tells neither where they differ nor whether their lengths do.
pub fn secrets_match(presented: &[u8], stored: &[u8]) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented).into();
    let stored: [u8; 32] = Sha256::digest(stored).into();
    bool::from(presented.ct_eq(&stored))
}

/// A header's raw bytes (names are looked up case-insensitively).
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h [u8], SignatureError> {
    headers
        .get(name)
        .map(|value| value.as_bytes())
        .ok_or(SignatureError::MissingHeader(name))
}

/// Check `value` (`<prefix><hex>`, prefix case-insensitive) against the HMAC-SHA256 of `body`.
fn verify_hmac(
    display: &'static str,
    prefix: Option<&'static str>,
    value: &[u8],
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    let mut hex_digits = value.trim_ascii();
    if let Some(prefix) = prefix {
        let head = hex_digits.get(..prefix.len());
        if !head.is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes())) {
            return Err(SignatureError::WrongPrefix {
                header: display,
                expected: prefix,
            });
        }
        hex_digits = &hex_digits[prefix.len()..];
    }
    let mut received = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut received).map_err(|_| SignatureError::NotHex(display))?;
    // HMAC takes keys of any length, so this cannot fail; refuse rather than assume.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch(display))?;
    mac.update(body);
    mac.verify_slice(&received)
        .map_err(|_| SignatureError::Mismatch(display))
}

/// Azure DevOps service hooks authenticate with Basic auth: the password is the secret.
fn verify_basic_password(headers: &HeaderMap, secret: &[u8]) -> Result<(), SignatureError> {
    let value = header(headers, "Authorization")?.trim_ascii();
    let (scheme, credentials) = value
        .iter()
        .position(|b| *b == b' ')
        .map(|space| (&value[..space], value[space + 1..].trim_ascii()))
        .ok_or(SignatureError::NotBasicAuth)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(SignatureError::NotBasicAuth);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| SignatureError::MalformedBasicAuth)?;
    // RFC 7617: the user id cannot hold a colon, the password can.
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(SignatureError::MalformedBasicAuth)?;
    if secrets_match(&decoded[colon + 1..], secret) {
        Ok(())
    } else {
        Err(SignatureError::PasswordMismatch)
    }
}
