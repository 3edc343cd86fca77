//! Small helpers every handler uses: time, fresh identifiers, digests.

use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as RFC 3339 UTC with second precision (`2026-11-26T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A time-ordered id (UUIDv7 as 32 lowercase hex): sorting deployment ids sorts them by
/// time, which is what "newest first" lists and the relay's "oldest first" rely on.
pub fn new_deployment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A fresh entity tag: random, so one is never reused for another state of the same id,
/// even across delete and re-create.
pub fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new API token (`adt_` + 64 hex characters of randomness) and its id.
pub fn new_token() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (id, format!("adt_{}", hex::encode(secret)))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
