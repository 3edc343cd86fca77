//! Shared pieces of the fuzz targets: the git-provider delivery harness and small helpers.
//!
//! Push targets read their input as
//!
//! ```text
//! byte 0   event selector: picks one of the provider's event names, no event header at all,
//!          or an odd spelling (see `ODD_EVENTS`)
//! byte 1   flags:
//!            bits 0-1  signature: 0 correct, 1 arbitrary bytes, 2 missing, 3 a variant the
//!                      provider must accept (or, for GitHub, SHA-1 only, which it must refuse)
//!            bit  2    send a delivery-id header
//!            bit  3    use the alternate header names (X-Forgejo-*, X-Gitlab-Webhook-UUID) and,
//!                      for GitHub, a form-encoded content type
//!            bits 4-7  n: the delivery id and the arbitrary signature are the body's first n*16 bytes
//! rest     the body
//! ```
//!
//! `fuzz/make-seeds.sh` writes the provider fixtures in this format.

use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::{ChangedFiles, Delivery, MAX_DELIVERY_ID, delivery_id, parse_delivery, verify_signature};
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// The organization secret every push target signs with.
pub const SECRET: &[u8] = b"fuzz-secret";

/// Event header values no provider sends, tried besides the real ones.
const ODD_EVENTS: &[&[u8]] = &[
    b"",
    b"  push  ",
    b"PUSH",
    b"push\xff",
    b"\xc3\xa9v\xc3\xa9nement",
    b"Push Hook\t",
];

/// What the harness needs to know about a provider.
pub struct ProviderSpec {
    pub provider: GitProvider,
    /// The event header, then its alternate name (may repeat the first).
    pub event_headers: [&'static str; 2],
    /// The events the provider sends, in the order the seed script numbers them.
    pub events: &'static [&'static str],
    /// The delivery-id header, then its alternate name (may repeat the first).
    pub delivery_headers: [&'static str; 2],
}

pub const GITHUB: ProviderSpec = ProviderSpec {
    provider: GitProvider::Github,
    event_headers: ["x-github-event", "x-github-event"],
    events: &["push", "ping", "delete", "create"],
    delivery_headers: ["x-github-delivery", "x-github-delivery"],
};

pub const GITLAB: ProviderSpec = ProviderSpec {
    provider: GitProvider::Gitlab,
    event_headers: ["x-gitlab-event", "x-gitlab-event"],
    events: &["Push Hook", "Tag Push Hook", "System Hook", "Merge Request Hook"],
    delivery_headers: ["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
};

pub const BITBUCKET: ProviderSpec = ProviderSpec {
    provider: GitProvider::Bitbucket,
    event_headers: ["x-event-key", "x-event-key"],
    events: &["repo:push", "diagnostics:ping", "pullrequest:created"],
    delivery_headers: ["x-request-uuid", "x-request-uuid"],
};

pub const BITBUCKET_SERVER: ProviderSpec = ProviderSpec {
    provider: GitProvider::BitbucketServer,
    event_headers: ["x-event-key", "x-event-key"],
    events: &["repo:refs_changed", "diagnostics:ping", "pr:opened"],
    delivery_headers: ["x-request-id", "x-request-id"],
};

pub const GITEA: ProviderSpec = ProviderSpec {
    provider: GitProvider::Gitea,
    event_headers: ["x-gitea-event", "x-forgejo-event"],
    events: &["push", "delete", "create"],
    delivery_headers: ["x-gitea-delivery", "x-forgejo-delivery"],
};

pub const GOGS: ProviderSpec = ProviderSpec {
    provider: GitProvider::Gogs,
    event_headers: ["x-gogs-event", "x-gogs-event"],
    events: &["push", "delete", "create"],
    delivery_headers: ["x-gogs-delivery", "x-gogs-delivery"],
};

/// Azure DevOps has no event header (the body's `eventType` says it) and no delivery header.
pub const AZURE_DEVOPS: ProviderSpec = ProviderSpec {
    provider: GitProvider::AzureDevops,
    event_headers: ["x-azure-unused", "x-azure-unused"],
    events: &[],
    delivery_headers: ["x-azure-unused", "x-azure-unused"],
};

fn insert(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("HMAC takes any key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How the delivery was signed, and so what `verify_signature` must say.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signed {
    /// Correctly, in a form the provider accepts.
    Correctly,
    /// With arbitrary bytes: accepting them would be a forgery.
    Arbitrarily,
    /// Not at all.
    Unsigned,
    /// GitHub's SHA-1 header only, which is refused.
    Sha1Only,
}

/// Run one delivery through `verify_signature`, `delivery_id` and `parse_delivery` and check
/// what the module documents about their results.
pub fn run_push(spec: &ProviderSpec, data: &[u8]) {
    let [selector, flags, body @ ..] = data else {
        return;
    };
    let (selector, flags) = (*selector as usize, *flags);
    let alternate = usize::from(flags & 0x08 != 0);
    let prefix = &body[..body.len().min(usize::from(flags >> 4) * 16)];
    let mut headers = HeaderMap::new();

    let choices = spec.events.len() + 1 + ODD_EVENTS.len();
    match selector % choices {
        i if i < spec.events.len() => insert(&mut headers, spec.event_headers[alternate], spec.events[i].as_bytes()),
        i if i == spec.events.len() => {}
        i => insert(
            &mut headers,
            spec.event_headers[alternate],
            ODD_EVENTS[i - spec.events.len() - 1],
        ),
    }
    if flags & 0x04 != 0 {
        insert(&mut headers, spec.delivery_headers[alternate], prefix);
    }
    if spec.provider == GitProvider::Github && alternate == 1 {
        insert(
            &mut headers,
            "content-type",
            b"application/x-www-form-urlencoded; charset=utf-8",
        );
    }

    let mac = hmac_hex(body);
    let signed = sign(spec.provider, &mut headers, flags & 0x03, alternate, &mac, prefix);
    let verdict = verify_signature(spec.provider, &headers, body, SECRET);
    match signed {
        Signed::Correctly => assert_eq!(verdict, Ok(()), "a correctly signed delivery was refused"),
        Signed::Unsigned => assert!(verdict.is_err(), "an unsigned delivery was accepted"),
        Signed::Sha1Only => assert!(verdict.is_err(), "a SHA-1-only delivery was accepted"),
        Signed::Arbitrarily => {
            if verdict.is_ok() {
                let sent = String::from_utf8_lossy(prefix).to_ascii_lowercase();
                let forged = match spec.provider {
                    GitProvider::Gitlab => prefix != SECRET,
                    // A password check: any Basic header holding the secret passes.
                    GitProvider::AzureDevops => false,
                    _ => !sent.contains(&mac),
                };
                assert!(!forged, "a delivery signed with arbitrary bytes was accepted");
            }
        }
    }
    if let Err(err) = &verdict {
        let _ = err.to_string();
    }
    assert!(
        verify_signature(spec.provider, &headers, body, b"").is_err(),
        "an empty secret must refuse"
    );

    if let Ok(Some(id)) = delivery_id(spec.provider, &headers, body) {
        assert!(
            !id.is_empty() && id.len() <= MAX_DELIVERY_ID,
            "delivery id length {}",
            id.len()
        );
        assert!(
            id.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "delivery id not printable: {id:?}"
        );
        assert_eq!(id, id.trim(), "delivery id not trimmed");
    }

    match parse_delivery(spec.provider, &headers, body) {
        Ok(Delivery::Pushes(pushes)) => {
            assert!(
                std::str::from_utf8(body).is_ok(),
                "a push was read from a body that is not UTF-8"
            );
            assert!(!pushes.is_empty(), "Pushes(vec![]) instead of Ignored");
            for push in &pushes {
                assert!(!push.branch.is_empty(), "empty branch");
                assert!(!push.after.is_empty(), "empty `after`");
                for (i, url) in push.repository_urls.iter().enumerate() {
                    assert!(!url.is_empty(), "empty repository URL");
                    assert!(
                        !push.repository_urls[..i].contains(url),
                        "duplicate repository URL {url:?}"
                    );
                }
                if let ChangedFiles::Known(files) = &push.files {
                    assert!(!files.is_empty(), "Known(empty) instead of Unknown");
                    assert!(!files.contains(""), "empty changed file");
                }
                let _ = push.has_skip_marker();
            }
        }
        Ok(Delivery::Ignored(reason)) => {
            let _ = reason.as_str();
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
}

fn sign(
    provider: GitProvider,
    headers: &mut HeaderMap,
    mode: u8,
    alternate: usize,
    mac: &str,
    prefix: &[u8],
) -> Signed {
    let basic = |user: &str, password: &[u8]| {
        let mut credentials = user.as_bytes().to_vec();
        credentials.push(b':');
        credentials.extend_from_slice(password);
        base64::engine::general_purpose::STANDARD.encode(credentials)
    };
    // The header that carries the signature, and its value when signed correctly.
    let (name, correct): (&'static str, String) = match provider {
        GitProvider::Github => ("x-hub-signature-256", format!("sha256={mac}")),
        GitProvider::Gitlab => ("x-gitlab-token", String::from_utf8_lossy(SECRET).into_owned()),
        GitProvider::Bitbucket | GitProvider::BitbucketServer => ("x-hub-signature", format!("sha256={mac}")),
        GitProvider::Gitea => ("x-gitea-signature", mac.to_owned()),
        GitProvider::Gogs => ("x-gogs-signature", mac.to_owned()),
        GitProvider::AzureDevops => ("authorization", format!("Basic {}", basic("azure", SECRET))),
    };
    match mode {
        0 => {
            insert(headers, name, correct.as_bytes());
            Signed::Correctly
        }
        1 => {
            insert(headers, name, prefix);
            // `insert` skips a value HTTP refuses (a control byte): then nothing was sent.
            if headers.contains_key(name) {
                Signed::Arbitrarily
            } else {
                Signed::Unsigned
            }
        }
        2 => Signed::Unsigned,
        _ => match provider {
            GitProvider::Github => {
                insert(
                    headers,
                    "x-hub-signature",
                    b"sha1=0123456789abcdef0123456789abcdef01234567",
                );
                Signed::Sha1Only
            }
            GitProvider::Gitea => {
                if alternate == 1 {
                    insert(headers, "x-forgejo-signature", mac.to_ascii_uppercase().as_bytes());
                } else {
                    insert(headers, "x-hub-signature-256", format!("SHA256={mac}").as_bytes());
                }
                Signed::Correctly
            }
            GitProvider::Bitbucket | GitProvider::BitbucketServer => {
                insert(
                    headers,
                    name,
                    format!("  Sha256={} ", mac.to_ascii_uppercase()).as_bytes(),
                );
                Signed::Correctly
            }
            GitProvider::Gogs => {
                insert(headers, name, format!(" {} ", mac.to_ascii_uppercase()).as_bytes());
                Signed::Correctly
            }
            GitProvider::Gitlab => {
                insert(headers, "x-gitlab-token", SECRET);
                Signed::Correctly
            }
            GitProvider::AzureDevops => {
                let value = format!("  basic   {} ", basic("", SECRET));
                insert(headers, name, value.as_bytes());
                Signed::Correctly
            }
        },
    }
}

/// Split `data` at the first `n - 1` bytes equal to `sep`, into exactly `n` parts (the last
/// ones empty when there are too few separators).
pub fn split_fields<const N: usize>(data: &[u8], sep: u8) -> [&[u8]; N] {
    let mut out = [&data[data.len()..]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == sep) {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
                break;
            }
        }
    }
    if let Some(last) = out.last_mut()
        && !rest.is_empty()
    {
        *last = rest;
    }
    out
}
