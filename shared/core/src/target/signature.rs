//! Standard Webhooks v1 signatures for `WEBHOOK` targets.
//!
//! A delivery carries `webhook-id` (the deployment id, the same on every attempt),
//! `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature: v1,<sig>` where
//! `sig` is the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the bytes the
//! secret's base64 part decodes to. Any Standard Webhooks library verifies it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";
/// How many key bytes a secret may hold.
pub const SECRET_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// How many random bytes a generated secret holds.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// How far a timestamp may be from the verifier's clock (the libraries' default).
pub const DEFAULT_TOLERANCE_SECS: u64 = 5 * 60;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

type HmacSha256 = Hmac<Sha256>;

/// The key a secret stands for: the bytes its base64 part decodes to, when it is
/// `whsec_` + base64 (standard alphabet, padded or not) of 24 to 64 bytes. Any padding is
/// read, as the reference libraries read it, so that a secret stored before writes were held
/// to [`is_well_formed_secret`] still signs.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    let unpadded = encoded.trim_end_matches('=');
    let key = base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded).ok()?;
    SECRET_KEY_BYTES.contains(&key.len()).then_some(key)
}

/// Whether a secret is written as the documented pattern says: [`secret_key`] reads it, and
/// it is standard base64 with its canonical padding. The Go, Rust and C# Standard Webhooks
/// libraries decode a secret strictly, so a receiver using one of them could not load a
/// secret written without its padding (or with extra `=`), and would refuse every delivery.
pub fn is_well_formed_secret(secret: &str) -> bool {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .is_some_and(|key| SECRET_KEY_BYTES.contains(&key.len()))
}

/// Why a secret is refused, as a field message (never repeating the secret).
pub const SECRET_RULE: &str =
    "must be whsec_ followed by the standard base64 encoding, padded, of 24 to 64 random bytes";

/// A new secret made of `random`, which should be [`GENERATED_SECRET_BYTES`] bytes from a
/// cryptographically secure generator (at most 64 bytes are used).
pub fn webhook_secret_from(random: &[u8]) -> String {
    let key = &random[..random.len().min(*SECRET_KEY_BYTES.end())];
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value for one delivery: `v1,<base64 HMAC-SHA256>`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(mac(key, id, timestamp, body).finalize().into_bytes())
    )
}

fn mac(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the secret is not a Standard Webhooks secret")]
    BadSecret,
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from the current time")]
    StaleTimestamp,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// Verify a delivery as a receiver does: `signatures` is the `webhook-signature` header (one or
/// more space-separated `version,signature` pairs; a match on any `v1` one is enough), and the
/// timestamp must be within `tolerance_secs` of `now` (Unix seconds). Comparison is in
/// constant time.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let key = secret_key(secret).ok_or(VerifyError::BadSecret)?;
    let ts: u64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if ts.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::StaleTimestamp);
    }
    let matches = signatures
        .split(' ')
        .filter_map(|pair| pair.strip_prefix("v1,"))
        .filter_map(|sig| STANDARD.decode(sig).ok())
        .any(|sig| mac(&key, id, ts, body).verify_slice(&sig).is_ok());
    if matches { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference test vectors.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: u64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_reference_example() {
        let key = secret_key(SPEC_SECRET).unwrap();
        assert_eq!(sign(&key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_and_refuses() {
        let now = SPEC_TIMESTAMP + 10;
        let ts = SPEC_TIMESTAMP.to_string();
        let check = |sigs: &str, body: &[u8], now: u64| verify(SPEC_SECRET, SPEC_ID, &ts, sigs, body, now, 300);
        assert_eq!(check(SPEC_SIGNATURE, SPEC_BODY, now), Ok(()));
        // Several signatures (a key rotation): any v1 match counts, others are skipped.
        let several = format!("v2,abc v1,AAAA {SPEC_SIGNATURE}");
        assert_eq!(check(&several, SPEC_BODY, now), Ok(()));
        assert_eq!(
            check(SPEC_SIGNATURE, br#"{"test": 2432232315}"#, now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(check("v1,not base64!", SPEC_BODY, now), Err(VerifyError::NoMatch));
        assert_eq!(check("", SPEC_BODY, now), Err(VerifyError::NoMatch));
        assert_eq!(
            check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP + 301),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            check(SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP - 301),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            verify(SPEC_SECRET, SPEC_ID, "12x", SPEC_SIGNATURE, SPEC_BODY, now, 300),
            Err(VerifyError::BadTimestamp)
        );
        // Another id or another secret is another signature.
        assert_eq!(
            verify(SPEC_SECRET, "msg_other", &ts, SPEC_SIGNATURE, SPEC_BODY, now, 300),
            Err(VerifyError::NoMatch)
        );
        let other = webhook_secret_from(&[7; 32]);
        assert_eq!(
            verify(&other, SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_BODY, now, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify("not-a-secret", SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_BODY, now, 300),
            Err(VerifyError::BadSecret)
        );
    }

    #[test]
    fn secrets_are_whsec_and_24_to_64_bytes() {
        let generated = webhook_secret_from(&[0xab; GENERATED_SECRET_BYTES]);
        assert!(generated.starts_with("whsec_"));
        assert_eq!(secret_key(&generated).unwrap(), vec![0xab; 32]);
        // At most 64 bytes of randomness are used.
        assert_eq!(secret_key(&webhook_secret_from(&[1; 100])).unwrap().len(), 64);

        for n in [24, 33, 64] {
            let s = webhook_secret_from(&vec![9; n]);
            assert_eq!(secret_key(&s).map(|k| k.len()), Some(n), "{s}");
            // Without padding too.
            assert_eq!(secret_key(s.trim_end_matches('=')).map(|k| k.len()), Some(n));
        }
        let encode = |n: usize| format!("whsec_{}", STANDARD.encode(vec![1u8; n]));
        for bad in [
            encode(23),
            encode(65),
            STANDARD.encode([1u8; 32]),
            "whsec_".to_owned(),
            "whsec_not*base64*at*all*not*base64*at*all*".to_owned(),
            format!("WHSEC_{}", STANDARD.encode([1u8; 32])),
        ] {
            assert_eq!(secret_key(&bad), None, "{bad}");
            assert!(!is_well_formed_secret(&bad), "{bad}");
        }
        // Padding that is not the canonical one, or none where it is needed: refused when
        // written, read when stored.
        for odd in [
            format!("whsec_{}====", STANDARD.encode([1u8; 24])),
            format!("whsec_{}=", STANDARD.encode([1u8; 33]).trim_end_matches('=')),
            format!("whsec_{}", STANDARD.encode([1u8; 32]).trim_end_matches('=')),
            format!("whsec_{}", STANDARD.encode([1u8; 64]).trim_end_matches('=')),
        ] {
            assert!(!is_well_formed_secret(&odd), "{odd}");
            assert!(secret_key(&odd).is_some(), "{odd}");
        }
        for n in [24, 33, 64] {
            let s = webhook_secret_from(&vec![9; n]);
            assert!(is_well_formed_secret(&s), "{s}");
        }
    }
}
