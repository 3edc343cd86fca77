//! Secrets at rest: a value sealed with AES-256-GCM under the operator's key.
//!
//! A sealed value is text, so it fits wherever the plain secret was stored:
//! `v1:` followed by the standard base64 of `nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! The nonce is drawn at random for every seal (the system's generator), so sealing the same
//! secret twice gives two different values. The version prefix lets a later format (another
//! cipher, associated data) be read beside this one.
//!
//! Errors never carry the key, the plaintext nor the sealed value.

use aes_gcm::aead::{Aead, Generate, Key, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use thiserror::Error;

/// The prefix of the current format.
const V1: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// What goes wrong with a key or a sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error(
        "a secret key must be 32 bytes, written in base64 (44 characters) or hex (64 characters); `openssl rand -base64 32` makes one"
    )]
    InvalidKey,
    #[error("the value is not a sealed secret (it does not start with `v1:`)")]
    NotSealed,
    #[error("the sealed secret is damaged (not base64, or too short to hold a nonce and a tag)")]
    Malformed,
    #[error("the sealed secret cannot be opened with this key: it was sealed with another key, or it was altered")]
    WrongKey,
    #[error("the system's random number generator failed: {0}")]
    Random(String),
    #[error("the secret is too long to seal")]
    TooLong,
}

/// The operator's 256-bit key. Never printed: its `Debug` shows no key material.
#[derive(Clone)]
pub struct SecretKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*bytes)),
        }
    }

    /// The key from its text: 64 hex digits, or base64 (standard or URL-safe, padded or not)
    /// of exactly 32 bytes. Surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        let bytes: [u8; 32] = decoded.and_then(|d| d.try_into().ok()).ok_or(SealError::InvalidKey)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new random key, as text [`SecretKey::parse`] reads (standard base64).
    pub fn generate_encoded() -> Result<String, SealError> {
        let key = Key::<Aes256Gcm>::try_generate().map_err(|e| SealError::Random(e.to_string()))?;
        Ok(STANDARD.encode(key))
    }

    /// Seal `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &str) -> Result<String, SealError> {
        let nonce: [u8; NONCE_LEN] = Generate::try_generate().map_err(|e| SealError::Random(e.to_string()))?;
        self.seal_with_nonce(plaintext, &nonce)
    }

    fn seal_with_nonce(&self, plaintext: &str, nonce: &[u8; NONCE_LEN]) -> Result<String, SealError> {
        let ciphertext = self
            .cipher
            .encrypt(&Nonce::from(*nonce), plaintext.as_bytes())
            .map_err(|_| SealError::TooLong)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{V1}{}", STANDARD.encode(sealed)))
    }

    /// The plaintext of a value [`SecretKey::seal`] made with this key.
    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let encoded = sealed.strip_prefix(V1).ok_or(SealError::NotSealed)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let plaintext = self
            .cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| SealError::WrongKey)?;
        // Only this module seals, and it seals `&str`: authentic bytes are UTF-8.
        String::from_utf8(plaintext).map_err(|_| SealError::Malformed)
    }

    /// Whether `value` is in a sealed format (it may still fail to open).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(V1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key 00 01 … 1f.
    fn key() -> SecretKey {
        SecretKey::from_bytes(&std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn the_format_is_what_a_reference_implementation_produces() {
        // Python `cryptography`'s AESGCM, key 00..1f, nonce 64..6f, no associated data:
        //   "v1:" + b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, None))
        let reference = "v1:ZGVmZ2hpamtsbW5vP3OtAxq2lSJQofCLtQEP0DGnZXjuGJY/+6ME18IHh2aOQnOXBNA=";
        let nonce: [u8; 12] = std::array::from_fn(|i| 100 + i as u8);
        assert_eq!(
            key().seal_with_nonce("whsec_ünïcode-secret", &nonce).unwrap(),
            reference
        );
        assert_eq!(key().open(reference).unwrap(), "whsec_ünïcode-secret");
    }

    #[test]
    fn sealing_round_trips_with_a_fresh_nonce_each_time() {
        let key = key();
        for plaintext in ["", "s", "a-webhook-secret-0123456789", &"x".repeat(10_000)] {
            let (a, b) = (key.seal(plaintext).unwrap(), key.seal(plaintext).unwrap());
            assert_ne!(a, b, "the same nonce twice");
            assert!(SecretKey::is_sealed(&a));
            if plaintext.len() > 8 {
                assert!(!a.contains(plaintext), "{a}");
            }
            assert_eq!(key.open(&a).unwrap(), plaintext);
            assert_eq!(key.open(&b).unwrap(), plaintext);
        }
    }

    #[test]
    fn another_key_or_an_altered_value_is_refused() {
        let sealed = key().seal("a-webhook-secret-0123456789").unwrap();
        let other = SecretKey::from_bytes(&[7; 32]);
        assert_eq!(other.open(&sealed), Err(SealError::WrongKey));
        // Every single-bit change of the nonce, ciphertext or tag is detected.
        let bytes = STANDARD.decode(&sealed[3..]).unwrap();
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 1;
            let altered = format!("v1:{}", STANDARD.encode(altered));
            assert_eq!(key().open(&altered), Err(SealError::WrongKey), "byte {i}");
        }
        let short = format!("v1:{}", STANDARD.encode([0u8; 27]));
        assert_eq!(key().open(&short), Err(SealError::Malformed));
        assert_eq!(key().open("v1:not base64!"), Err(SealError::Malformed));
        assert_eq!(key().open("a-plain-secret"), Err(SealError::NotSealed));
        assert_eq!(key().open("v2:AAAA"), Err(SealError::NotSealed));
    }

    #[test]
    fn keys_are_read_from_base64_or_hex_and_never_printed() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let sealed = key().seal("s3cret-value").unwrap();
        for text in [
            hex.to_owned(),
            hex.to_uppercase(),
            b64.to_owned(),
            b64.trim_end_matches('=').to_owned(),
            format!("  {b64}\n"),
        ] {
            let parsed = SecretKey::parse(&text).unwrap();
            assert_eq!(parsed.open(&sealed).unwrap(), "s3cret-value", "{text}");
            let printed = format!("{parsed:?}");
            assert!(!printed.contains(b64) && !printed.contains(hex), "{printed}");
        }
        // 31 and 33 bytes, not an encoding at all, empty.
        for text in [
            &hex[2..],
            &format!("{hex}00"),
            "AAEC",
            "correct horse battery staple",
            "",
        ] {
            let err = SecretKey::parse(text).unwrap_err();
            assert_eq!(err, SealError::InvalidKey);
            assert!(text.is_empty() || !err.to_string().contains(text));
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_parse() {
        let (a, b) = (
            SecretKey::generate_encoded().unwrap(),
            SecretKey::generate_encoded().unwrap(),
        );
        assert_ne!(a, b);
        let sealed = SecretKey::parse(&a).unwrap().seal("x").unwrap();
        assert_eq!(SecretKey::parse(&a).unwrap().open(&sealed).unwrap(), "x");
        assert_eq!(SecretKey::parse(&b).unwrap().open(&sealed), Err(SealError::WrongKey));
    }
}
