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
        "no {} secret is configured (the organization's webhook secret is empty), so its deliveries are refused",
        .0.slug()
    )]
    NoSecret(GitProvider),
    #[error("{0} header missing: the webhook must be configured with the organization's secret")]
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
    #[error("the `{0}` signature does not match the body signed with the organization's secret")]
    Mismatch(&'static str),
    #[error("the `{0}` header does not match the organization's secret")]
    TokenMismatch(&'static str),
    #[error("the `{0}` header is given more than once: a delivery carries one, so which to check cannot be told")]
    RepeatedHeader(&'static str),
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
/// [`check_headers`] then [`Credential::verify_body`], for a caller that reads the body in
/// between.
pub fn verify_signature(
    provider: GitProvider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    check_headers(provider, headers, secret)?.verify_body(body, secret)
}

/// What a delivery's headers present, checked as far as it can be without the body. Not
/// `Debug`: nothing prints a received signature.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token or password that matched the secret: the delivery is authenticated.
    Matched,
    /// A well-formed HMAC-SHA256 of the body, from header `header`, still to be checked.
    Hmac { header: &'static str, signature: [u8; 32] },
}

impl Credential {
    /// Check the body against the signature, if it is one.
    pub fn verify_body(&self, body: &[u8], secret: &[u8]) -> Result<(), SignatureError> {
        let Credential::Hmac { header, signature } = self else {
            return Ok(());
        };
        // HMAC takes keys of any length, so this cannot fail; refuse rather than assume.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch(header))?;
        mac.update(body);
        mac.verify_slice(signature)
            .map_err(|_| SignatureError::Mismatch(header))
    }
}

/// Everything [`verify_signature`] checks that does not need the body: the secret is set, the
/// provider's header is there and well-formed, and a token or password matches. A delivery
/// refused here is refused before its body is read.
pub fn check_headers(provider: GitProvider, headers: &HeaderMap, secret: &[u8]) -> Result<Credential, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret(provider));
    }
    match provider {
        GitProvider::Github => match single(headers, "X-Hub-Signature-256")? {
            Some(value) => hmac_header("X-Hub-Signature-256", Some("sha256="), value),
            None if headers.contains_key("x-hub-signature") => Err(SignatureError::Sha1Only),
            None => Err(SignatureError::MissingHeader("X-Hub-Signature-256")),
        },
        GitProvider::Gitlab => {
            let token = header(headers, "X-Gitlab-Token")?;
            if secrets_match(token, secret) {
                Ok(Credential::Matched)
            } else {
                Err(SignatureError::TokenMismatch("X-Gitlab-Token"))
            }
        }
        GitProvider::Bitbucket | GitProvider::BitbucketServer => {
            hmac_header("X-Hub-Signature", Some("sha256="), header(headers, "X-Hub-Signature")?)
        }
        GitProvider::Gitea => {
            // Each of the headers Gitea may sign with is checked for repeats, used or not.
            let gitea = single(headers, "X-Gitea-Signature")?;
            let forgejo = single(headers, "X-Forgejo-Signature")?;
            let github = single(headers, "X-Hub-Signature-256")?;
            if let Some(value) = gitea {
                hmac_header("X-Gitea-Signature", None, value)
            } else if let Some(value) = forgejo {
                hmac_header("X-Forgejo-Signature", None, value)
            } else if let Some(value) = github {
                hmac_header("X-Hub-Signature-256", Some("sha256="), value)
            } else {
                Err(SignatureError::MissingHeader("X-Gitea-Signature"))
            }
        }
        GitProvider::Gogs => hmac_header("X-Gogs-Signature", None, header(headers, "X-Gogs-Signature")?),
        GitProvider::AzureDevops => verify_basic_password(headers, secret).map(|()| Credential::Matched),
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

/// A header's raw bytes (names are looked up case-insensitively); refused when missing or
/// given more than once.
fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h [u8], SignatureError> {
    single(headers, name)?.ok_or(SignatureError::MissingHeader(name))
}

/// The raw bytes of a credential header, if present: given twice, a delivery could carry a
/// good signature and a bad one and have either checked, so it is refused.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h [u8]>, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(SignatureError::RepeatedHeader(name));
    }
    Ok(first.map(|value| value.as_bytes()))
}

/// The signature in `value` (`<prefix><hex>`, prefix case-insensitive), to check against the
/// HMAC-SHA256 of the body.
fn hmac_header(
    display: &'static str,
    prefix: Option<&'static str>,
    value: &[u8],
) -> Result<Credential, SignatureError> {
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
    let mut signature = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut signature).map_err(|_| SignatureError::NotHex(display))?;
    Ok(Credential::Hmac {
        header: display,
        signature,
    })
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
