//! Small helpers every handler uses: time, fresh identifiers, digests; and how a switch of
//! the configuration is read.

use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A switch's value from its environment variable (or the server's flag): `true` or `false`,
/// also `1` / `0`, `yes` / `no` (`y` / `n`), `on` / `off`, in any letter case; `None` for any
/// other value. The server and the Lambda functions read their switches alike.
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Now, as RFC 3339 UTC with second precision (`2026-11-26T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Unix seconds as RFC 3339 UTC.
pub fn unix_rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Unix seconds of an RFC 3339 time; `None` when it is not one.
pub fn rfc3339_unix(time: &str) -> Option<i64> {
    OffsetDateTime::parse(time, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Whether a service created at `created_at` came after a deployment requested at
/// `requested_at`: then it is another service of the same id, the one the deployment was for
/// having been deleted. Both are whole seconds: within the same second it cannot be told, and
/// it is taken as not after, so a deployment of the new service is never taken for the old
/// one's.
pub fn created_after(created_at: &str, requested_at: &str) -> bool {
    match (rfc3339_unix(created_at), rfc3339_unix(requested_at)) {
        (Some(created), Some(requested)) => created > requested,
        _ => false,
    }
}

pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// How long until the whole second `due` (Unix time) begins, from `now`: zero once it has.
/// A wait for something due at a second ends when that second begins, not up to a second
/// later, as counting the whole seconds left from the current one would.
pub fn until_unix_second(due: i64, now: std::time::SystemTime) -> std::time::Duration {
    let Ok(due) = u64::try_from(due) else {
        return std::time::Duration::ZERO;
    };
    // A second past what the clock holds is never reached.
    std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(due))
        .map_or(std::time::Duration::MAX, |due| {
            due.duration_since(now).unwrap_or_default()
        })
}

/// A time-ordered id (UUIDv7 as 32 lowercase hex): sorting deployment ids sorts them by
/// time, which is what "newest first" lists and the relay's "oldest first" rely on.
pub fn new_deployment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The smallest deployment id [`new_deployment_id`] could have made `ago` before now: every id
/// made earlier sorts below it (a UUIDv7 starts with its millisecond timestamp).
pub fn deployment_ids_before(ago: std::time::Duration) -> String {
    let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let at_ms = now_ms
        .saturating_sub(i128::try_from(ago.as_millis()).unwrap_or(i128::MAX))
        .max(0);
    // The 48-bit timestamp, then the smallest rest.
    format!("{:012x}{}", at_ms & 0xffff_ffff_ffff, "0".repeat(20))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn switches_read_every_spelling_of_true_and_false() {
        for (value, on) in [(" TRUE ", true), ("1", true), ("Yes", true), ("y", true), ("on", true)] {
            assert_eq!(parse_switch(value), Some(on), "{value}");
        }
        for (value, on) in [
            ("false", false),
            ("0", false),
            ("NO", false),
            ("n", false),
            ("Off", false),
        ] {
            assert_eq!(parse_switch(value), Some(on), "{value}");
        }
        for value in ["", "2", "maybe", "enabled", "tru"] {
            assert_eq!(parse_switch(value), None, "{value}");
        }
    }

    #[test]
    fn deployment_ids_sort_around_the_bound_of_their_time() {
        let made_before = new_deployment_id();
        // Past the millisecond `made_before` was made in.
        std::thread::sleep(Duration::from_millis(2));
        let bound = deployment_ids_before(Duration::ZERO);
        let made_after = new_deployment_id();
        assert_eq!(bound.len(), 32);
        assert!(made_before < bound, "{made_before} < {bound}");
        assert!(bound <= made_after, "{bound} <= {made_after}");
        // An hour ago is below both.
        let hour_ago = deployment_ids_before(Duration::from_secs(3600));
        assert!(hour_ago < made_before, "{hour_ago} < {made_before}");
        assert!(deployment_ids_before(Duration::MAX) <= hour_ago);
    }

    /// Late in a second, a wait for the next whole second is what is left of this one.
    #[test]
    fn a_wait_for_a_second_ends_when_it_begins() {
        let at =
            |secs: u64, millis: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        assert_eq!(until_unix_second(101, at(100, 900)), Duration::from_millis(100));
        assert_eq!(until_unix_second(102, at(100, 500)), Duration::from_millis(1500));
        assert_eq!(until_unix_second(100, at(100, 500)), Duration::ZERO);
        assert_eq!(until_unix_second(-5, at(100, 0)), Duration::ZERO);
        // Never a panic, however far.
        assert!(until_unix_second(i64::MAX, at(100, 0)) > Duration::from_secs(1 << 40));
    }
}
