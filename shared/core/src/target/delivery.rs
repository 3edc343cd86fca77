//! What an attempt's result means, and when to try again.
//!
//! - 2xx: delivered.
//! - 408, 425, 429, 5xx, a timeout or a connection error: retried with exponential backoff and
//!   full jitter (about 5 s, 30 s, 2 min, 10 min, 30 min, then hourly), a `Retry-After`
//!   honoured up to an hour, until the attempts or the age run out, then failed.
//! - Any 3xx (redirects are not followed, as Standard Webhooks says) and every other 4xx:
//!   failed at once, the error naming the status.
//! - Two engines' own answers, read as they document them: a `GITHUB_ACTIONS` target's rate
//!   limit (GitHub answers it 403 as well as 429) waits as GitHub asks, its `Retry-After`, else
//!   (with `x-ratelimit-remaining: 0`) its `x-ratelimit-reset`, else [`RATE_LIMIT_MIN_WAIT`]; a `QOVERY` target's 409 ("operation
//!   in progress": the service is being deployed) is retried.
//! - Not sent at all (an address refused at send time, a request that cannot be built):
//!   failed at once.
//!
//! Everything here is a pure function of what the sender observed, the clock and the
//! randomness it is given.

use std::time::{Duration, SystemTime};

use super::TargetType;

/// How long one attempt may take, from connecting to the response's headers.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// The backoff ceilings after the 1st, 2nd, … failed attempt; hourly after the last.
pub const BACKOFF_STEPS: [Duration; 5] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(30 * 60),
];
pub const BACKOFF_AFTER_STEPS: Duration = Duration::from_secs(60 * 60);
/// No retry comes sooner than this, whatever the jitter draws.
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The least wait after a GitHub rate limit that names no time ("wait for at least one
/// minute", GitHub's documentation says).
pub const RATE_LIMIT_MIN_WAIT: Duration = Duration::from_secs(60);
/// Longest excerpt of a target's own error message kept in `last_error` (characters).
pub const MAX_MESSAGE_EXCERPT: usize = 200;

/// When the dispatcher gives up on a deployment (`AUTODEPLOY_MAX_ATTEMPTS`,
/// `AUTODEPLOY_MAX_DELIVERY_AGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A duration as the operator writes one (`AUTODEPLOY_MAX_DELIVERY_AGE`): `90`, `90s`, `30m`,
/// `24h` or `2d`.
pub fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => raw.split_at(at),
        None => (raw, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 3600, 90m or 24h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit must be s, m, h or d")),
    };
    match number.checked_mul(seconds) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{raw:?} must be a positive duration")),
    }
}

/// What one attempt observed, as the sender saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The target answered. `retry_after` is the raw header, `message` an excerpt of the
    /// target's own error message (see [`response_message`]).
    Response {
        status: u16,
        retry_after: Option<String>,
        message: Option<String>,
        /// Set when the answer's `x-ratelimit-remaining` is 0 (GitHub's rate limit used up):
        /// its raw `x-ratelimit-reset` (Unix seconds), empty when it gave none.
        rate_limit_reset: Option<String>,
    },
    /// No answer within the attempt's time limit.
    TimedOut(Duration),
    /// The connection could not be made or broke (a short sentence saying how).
    ConnectionFailed(String),
    /// Nothing was sent: the address was refused or the request could not be made (a short
    /// sentence saying why).
    NotSent(String),
}

/// The kind of result of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    Failed,
}

/// An attempt's result: the verdict, the status when the target answered, its `Retry-After`
/// (capped at [`MAX_RETRY_AFTER`]) and, unless delivered, a short sentence for `last_error`
/// that never holds a token or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub error: Option<String>,
}

/// What a status means for the deployment.
pub fn status_verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 425 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Failed,
    }
}

/// Classify an attempt at a target of type `engine`. `now` reads a `Retry-After` given as an
/// HTTP date, and a rate limit's reset time.
pub fn classify(engine: TargetType, observation: Observation, now: SystemTime) -> AttemptOutcome {
    match observation {
        Observation::Response {
            status,
            retry_after,
            message,
            rate_limit_reset,
        } => {
            let retry_after = retry_after.as_deref().and_then(|value| parse_retry_after(value, now));
            let (verdict, retry_after) = match engine {
                TargetType::GithubActions if matches!(status, 403 | 429) => {
                    let reset_in = rate_limit_reset.as_deref().and_then(|reset| until_reset(reset, now));
                    let names_it = message
                        .as_deref()
                        .is_some_and(|m| m.to_ascii_lowercase().contains("rate limit"));
                    if status == 429 || retry_after.is_some() || rate_limit_reset.is_some() || names_it {
                        let wait = retry_after.or(reset_in).unwrap_or(RATE_LIMIT_MIN_WAIT);
                        (Verdict::Retry, Some(wait))
                    } else {
                        (Verdict::Failed, retry_after)
                    }
                }
                TargetType::Qovery if status == 409 => (Verdict::Retry, retry_after),
                _ => (status_verdict(status), retry_after),
            };
            let retry_after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
            let error = (verdict != Verdict::Delivered).then(|| {
                let mut error = format!("the target answered {}", status_text(status));
                if (300..400).contains(&status) {
                    error.push_str(": redirects are not followed");
                } else if let Some(message) = message {
                    error.push_str(": ");
                    error.push_str(&message);
                }
                error
            });
            AttemptOutcome {
                verdict,
                status: Some(status),
                retry_after,
                error,
            }
        }
        Observation::TimedOut(after) => AttemptOutcome {
            verdict: Verdict::Retry,
            status: None,
            retry_after: None,
            error: Some(format!("the target did not answer within {}", human(after))),
        },
        Observation::ConnectionFailed(why) => AttemptOutcome {
            verdict: Verdict::Retry,
            status: None,
            retry_after: None,
            error: Some(why),
        },
        Observation::NotSent(why) => AttemptOutcome {
            verdict: Verdict::Failed,
            status: None,
            retry_after: None,
            error: Some(why),
        },
    }
}

/// `503 Service Unavailable`, or the bare number for a status without a standard reason.
fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// How long until a rate limit's reset (`x-ratelimit-reset`, Unix seconds), counting the
/// second it names in full; `None` when it is not a number.
fn until_reset(reset: &str, now: SystemTime) -> Option<Duration> {
    let secs = reset.trim().parse().ok()?;
    // A time past what the clock holds is "a very long time", as a huge `Retry-After` is.
    let wait = match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(reset) => reset.duration_since(now).unwrap_or(Duration::ZERO),
        None => Duration::MAX,
    };
    Some(wait.saturating_add(Duration::from_secs(1)))
}

/// A `Retry-After` value: delta-seconds, or an HTTP date (how long from `now`; a date in the
/// past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The backoff ceiling after `failed` failed attempts (1 for the first failure).
pub fn backoff_ceiling(failed: u32) -> Duration {
    let index = failed.saturating_sub(1) as usize;
    BACKOFF_STEPS.get(index).copied().unwrap_or(BACKOFF_AFTER_STEPS)
}

/// How long to wait after `failed` failed attempts: full jitter (`jitter` drawn uniformly from
/// `[0, 1)`, scaling the backoff ceiling), at least [`MIN_RETRY_DELAY`], and never sooner than
/// the target's `Retry-After` (capped at [`MAX_RETRY_AFTER`]).
pub fn retry_delay(failed: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let jittered = backoff_ceiling(failed).mul_f64(jitter).max(MIN_RETRY_DELAY);
    match retry_after {
        Some(wait) => jittered.max(wait.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// What the dispatcher does after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// `DELIVERED`.
    Delivered,
    /// `QUEUED` again, the next attempt after this delay; `error` is the `last_error`.
    RetryIn { delay: Duration, error: String },
    /// `FAILED`, with this `last_error`.
    Failed(String),
}

/// Decide what follows an attempt: `attempts` counts every attempt made so far, this one
/// included; `age` is how long ago the deployment was recorded; `jitter` is uniform in
/// `[0, 1)`. A retry due past the policy's age is made at that age instead, the last one;
/// none is made when the age is reached, or when the target's `Retry-After` passes it.
pub fn next_step(
    outcome: &AttemptOutcome,
    attempts: u32,
    age: Duration,
    policy: &RetryPolicy,
    jitter: f64,
) -> NextStep {
    let error = || outcome.error.clone().unwrap_or_else(|| "the attempt failed".to_owned());
    match outcome.verdict {
        Verdict::Delivered => NextStep::Delivered,
        Verdict::Failed => NextStep::Failed(error()),
        Verdict::Retry if attempts >= policy.max_attempts => NextStep::Failed(format!(
            "gave up after {}; the last one: {}",
            counted(attempts),
            error()
        )),
        Verdict::Retry => {
            let left = policy.max_age.saturating_sub(age);
            let delay = retry_delay(attempts, outcome.retry_after, jitter).min(left);
            let earliest = outcome.retry_after.unwrap_or_default().max(MIN_RETRY_DELAY);
            if delay < earliest {
                NextStep::Failed(format!(
                    "gave up after {} in {}, retries being limited to {}; the last one: {}",
                    counted(attempts),
                    human(age),
                    human(policy.max_age),
                    error()
                ))
            } else {
                NextStep::RetryIn { delay, error: error() }
            }
        }
    }
}

/// `1 attempt`, `7 attempts`.
fn counted(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{attempts} attempts")
    }
}

/// `15 s`, `10 min`, `24 h`: the largest unit that divides the duration.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// An excerpt of a target's own error message, for `last_error`: the `message` (else `error`,
/// else `error.message`) string of a JSON object body, as GitHub, Qovery and this product
/// answer, on one line, at most [`MAX_MESSAGE_EXCERPT`] characters, without any of `secrets`
/// (the token or signature sent, should a target echo it): see [`redact`]. `None` for any other
/// body.
pub fn response_message(body: &[u8], secrets: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let text = ["message", "error"]
        .iter()
        .find_map(|key| object.get(*key).and_then(|v| v.as_str()))
        .or_else(|| object.get("error")?.get("message")?.as_str())?;
    // Found in the text as sent, so that no control character or white space inside a secret
    // hides it.
    let text = redact(text, secrets);
    // On one line: control characters dropped, white space runs made one space.
    let text: String = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    // Cut, the excerpt ends in `…`, within its characters.
    Some(match text.char_indices().nth(MAX_MESSAGE_EXCERPT) {
        Some(_) => {
            let cut = text
                .char_indices()
                .nth(MAX_MESSAGE_EXCERPT - 1)
                .map_or(text.len(), |(at, _)| at);
            format!("{}…", &text[..cut])
        }
        None => text,
    })
}

/// The fewest characters of a secret an excerpt may show in a row: a longer run of one, such
/// as a token cut short by the target echoing it, is redacted as the whole would be.
pub const SECRET_PIECE: usize = 12;

/// `text` with every piece of one of `secrets` replaced by `[redacted]`: any [`SECRET_PIECE`]
/// visible characters in a row of a secret (or a shorter secret whole), as sent, percent-encoded
/// (each `%XX` of an ASCII character is read as that character, however many are escaped),
/// base64-encoded (standard or URL-safe) or in hex, the ways a target may echo what it was sent.
/// Matching ignores ASCII case (the case of a token, key or signature is the only thing a
/// target echoing it is likely to change) and the characters that do not show in a message on
/// one line: control characters, white space and zero-width ones, in `text` and in the secrets
/// alike (the `Authorization` value has a space). Overlapping and adjacent pieces are redacted
/// as one, from the first visible character to the last.
fn redact(text: &str, secrets: &[&str]) -> String {
    let mut pieces: std::collections::HashSet<Vec<char>> = std::collections::HashSet::new();
    for form in secrets.iter().filter(|s| !s.is_empty()).flat_map(|s| encodings(s)) {
        let chars: Vec<char> = visible_chars(&form).into_iter().map(|(c, _, _)| c).collect();
        let width = chars.len().min(SECRET_PIECE);
        if width > 0 {
            pieces.extend(chars.windows(width).map(<[char]>::to_vec));
        }
    }
    let widths: std::collections::BTreeSet<usize> = pieces.iter().map(Vec::len).collect();
    let visible = visible_chars(text);
    let chars: Vec<char> = visible.iter().map(|(c, _, _)| *c).collect();
    let mut covered = vec![false; visible.len()];
    for width in widths {
        for (at, window) in chars.windows(width).enumerate() {
            if pieces.contains(window) {
                covered[at..at + width].fill(true);
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < visible.len() {
        if !covered[i] {
            i += 1;
            continue;
        }
        let run = covered[i..].iter().take_while(|c| **c).count();
        let (start, end) = (visible[i].1, visible[i + run - 1].2);
        out.push_str(text.get(copied..start).unwrap_or_default());
        out.push_str("[redacted]");
        copied = end;
        i += run;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// A secret as sent, and as a target may echo it encoded: base64 (standard, and URL-safe
/// without padding) of it from each of its first three bytes, so that a part of it encoded
/// from any byte is found too, and hex. A webhook secret's key (the bytes it signs with, which
/// its base64 part decodes to) in the same encodings: a receiver may echo the key it loaded.
/// Percent-encoding is read in the text itself ([`visible_chars`]).
fn encodings(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut forms = vec![secret.to_owned()];
    let key = super::signature::secret_key(secret);
    for bytes in std::iter::once(secret.as_bytes()).chain(key.as_deref()) {
        forms.push(hex::encode(bytes));
        for from in 0..bytes.len().min(3) {
            forms.push(STANDARD.encode(&bytes[from..]));
            forms.push(URL_SAFE_NO_PAD.encode(&bytes[from..]));
        }
    }
    forms
}

/// The characters of `text` a reader sees, ASCII letters folded to lower case, each with its
/// byte range in `text`: hidden ones ([`hidden`]) left out, and a percent-escaped ASCII
/// character (`%41`, `%6a`) read as the character it stands for.
fn visible_chars(text: &str) -> Vec<(char, usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while let Some(c) = text.get(at..).and_then(|rest| rest.chars().next()) {
        let escaped = match bytes.get(at..at + 3) {
            Some([b'%', hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                std::str::from_utf8(&bytes[at + 1..at + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .filter(u8::is_ascii)
            }
            _ => None,
        };
        let (c, len) = escaped.map_or((c, c.len_utf8()), |byte| (char::from(byte), 3));
        if !hidden(c) {
            out.push((c.to_ascii_lowercase(), at, at + len));
        }
        at += len;
    }
    out
}

/// A character a message on one line does not show: control, white space, a Unicode format
/// character (zero-width ones, bidirectional marks, the soft hyphen, tags), or one that shows
/// as nothing (the combining grapheme joiner, Hangul fillers, variation selectors).
fn hidden(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || crate::branch::is_format_char(c)
        || matches!(
            c,
            '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{180B}'..='\u{180D}' | '\u{FE00}'..='\u{FE0F}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_whatever_their_case() {
        let body = |message: &str| serde_json::json!({ "message": message }).to_string().into_bytes();
        let said = |message: &str, secrets: &[&str]| response_message(&body(message), secrets);
        assert_eq!(
            said("bad QOV_Token_1 or qov_token_1, not QOV_TOKEN_1!", &["qov_token_1"]).as_deref(),
            Some("bad [redacted] or [redacted], not [redacted]!")
        );
        // A whole header before its token; a control character inside does not hide it.
        assert_eq!(
            said("TOKEN QOV_T\u{1}OKEN_1 é", &["qov_token_1", "Token qov_token_1"]).as_deref(),
            Some("[redacted] é")
        );
        assert_eq!(said("x\u{7}y", &["xy"]).as_deref(), Some("[redacted]"));
        // Other text, even around multi-byte characters, is kept.
        assert_eq!(said("ça va", &["zz"]).as_deref(), Some("ça va"));
        assert_eq!(redact("éABCé abc", &["aBc"]), "é[redacted]é [redacted]");
    }

    #[test]
    fn white_space_or_an_invisible_character_inside_a_secret_does_not_hide_it() {
        let body = |message: &str| serde_json::json!({ "message": message }).to_string().into_bytes();
        let secrets = ["QovTokAbc123", "Token QovTokAbc123"];
        for hidden in [
            "\n", "\r", "\t", "\u{b}", "\u{c}", "\u{85}", "\u{2028}", "\u{200b}", "\u{feff}", " ",
        ] {
            let message = format!("M:Qov{hidden}TokAbc123 S:Token Qo{hidden}vTokAbc123 end");
            assert_eq!(
                response_message(&body(&message), &secrets).as_deref(),
                Some("M:[redacted] S:[redacted] end"),
                "{hidden:?}"
            );
        }
        // The Authorization value with other white space between its scheme and its token.
        let said = response_message(&body("got TOKEN\t\tqovtokabc123!"), &secrets);
        assert_eq!(said.as_deref(), Some("got [redacted]!"));
        // Text around is kept, on one line.
        let said = response_message(&body("line one\nline  two"), &secrets);
        assert_eq!(said.as_deref(), Some("line one line two"));
    }

    /// A target may echo what it was sent cut short, or encoded: any twelve characters of a
    /// secret in a row are redacted, as sent, in base64 and percent-encoded.
    #[test]
    fn a_secret_echoed_in_part_or_encoded_is_redacted() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let body = |message: &str| serde_json::json!({ "message": message }).to_string().into_bytes();
        let token = "qov_Zx8+Kp/2mW9=rT4vLq7nB3";
        let secrets = [token, "Token qov_Zx8+Kp/2mW9=rT4vLq7nB3"];
        let said = |message: &str| response_message(&body(message), &secrets).unwrap();
        for echoed in [
            token[..SECRET_PIECE].to_owned(),
            token[5..].to_owned(),
            token[3..3 + SECRET_PIECE].to_ascii_uppercase(),
            STANDARD.encode(token),
            URL_SAFE_NO_PAD.encode(token),
            STANDARD.encode(format!("Token {token}")),
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string(),
            token.bytes().map(|b| format!("%{b:02X}")).collect::<String>(),
            hex::encode_upper(token),
            STANDARD.encode(&token[1..]),
            URL_SAFE_NO_PAD.encode(&token[2..20]),
            token.chars().map(|c| format!("{c}\u{ad}")).collect::<String>(),
            token.chars().map(|c| format!("{c}\u{200e}\u{34f}")).collect::<String>(),
            token.chars().map(|c| format!("{c}\u{e0020}")).collect::<String>(),
            token.bytes().map(|b| format!("%{b:02x}")).collect::<String>()[..60].to_owned(),
            format!("{}%2B{}", &token[..7], &token[8..]),
            format!("{}…", &token[..20]),
        ] {
            let message = said(&format!("invalid token '{echoed}' given"));
            assert!(message.starts_with("invalid token '[redacted]"), "{echoed}: {message}");
            assert!(message.ends_with("' given"), "{echoed}: {message}");
            for piece in token.as_bytes().windows(SECRET_PIECE) {
                let piece = std::str::from_utf8(piece).unwrap().to_ascii_lowercase();
                assert!(!message.to_ascii_lowercase().contains(&piece), "{echoed}: {message}");
            }
        }
        // A webhook secret's key, which its receiver loads from it, echoed in any encoding.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let key = crate::target::signature::secret_key(secret).unwrap();
        for echoed in [
            hex::encode(&key),
            hex::encode_upper(&key[5..]),
            STANDARD.encode(&key[1..]),
            URL_SAFE_NO_PAD.encode(&key[2..]),
            secret["whsec_".len()..].to_owned(),
        ] {
            let message = response_message(&body(&format!("loaded key {echoed} ok")), &[secret]).unwrap();
            assert_eq!(message, "loaded key [redacted] ok", "{echoed}");
        }
        // Fewer characters in a row than a piece, as GitHub shows a token's first few, are kept;
        // so is text that only shares short runs with a secret.
        assert_eq!(said("key qov_Zx8+Kp… is expired"), "key qov_Zx8+Kp… is expired");
        assert_eq!(said("the tokens do not match"), "the tokens do not match");
    }

    const MIN: Duration = Duration::from_secs(60);

    fn answered(status: u16) -> AttemptOutcome {
        classify(
            TargetType::Webhook,
            Observation::Response {
                status,
                retry_after: None,
                message: None,
                rate_limit_reset: None,
            },
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn statuses() {
        for status in [200, 201, 202, 204, 299] {
            let outcome = answered(status);
            assert_eq!(outcome.verdict, Verdict::Delivered, "{status}");
            assert_eq!(outcome.error, None);
        }
        for status in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(answered(status).verdict, Verdict::Retry, "{status}");
        }
        for status in [
            100, 300, 301, 302, 304, 307, 308, 400, 401, 403, 404, 409, 410, 422, 451,
        ] {
            assert_eq!(answered(status).verdict, Verdict::Failed, "{status}");
        }
        assert_eq!(answered(410).error.unwrap(), "the target answered 410 Gone");
        assert_eq!(
            answered(503).error.unwrap(),
            "the target answered 503 Service Unavailable"
        );
        assert_eq!(
            answered(302).error.unwrap(),
            "the target answered 302 Found: redirects are not followed"
        );
        assert_eq!(answered(599).error.unwrap(), "the target answered 599");
        assert_eq!(answered(404).status, Some(404));
    }

    #[test]
    fn the_targets_message_is_kept() {
        let outcome = classify(
            TargetType::Webhook,
            Observation::Response {
                status: 422,
                retry_after: None,
                message: Some("Unexpected inputs provided".to_owned()),
                rate_limit_reset: None,
            },
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            outcome.error.unwrap(),
            "the target answered 422 Unprocessable Entity: Unexpected inputs provided"
        );
    }

    #[test]
    fn timeouts_and_connection_errors_retry_refusals_fail() {
        let now = SystemTime::UNIX_EPOCH;
        let timeout = classify(TargetType::Webhook, Observation::TimedOut(ATTEMPT_TIMEOUT), now);
        assert_eq!(timeout.verdict, Verdict::Retry);
        assert_eq!(timeout.error.unwrap(), "the target did not answer within 15 s");
        let refused = classify(
            TargetType::Webhook,
            Observation::ConnectionFailed("could not connect: connection refused".into()),
            now,
        );
        assert_eq!(refused.verdict, Verdict::Retry);
        assert_eq!(refused.status, None);
        let not_sent = classify(
            TargetType::Webhook,
            Observation::NotSent("the host name resolves to a private address".into()),
            now,
        );
        assert_eq!(not_sent.verdict, Verdict::Failed);
        assert_eq!(not_sent.error.unwrap(), "the host name resolves to a private address");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now),
            Some(Duration::from_secs(60))
        );
        // The obsolete forms HTTP still requires a recipient to read.
        assert_eq!(
            parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Tue Nov 14 22:14:20 2023", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-5", "1.5", "soon", "Tue, 14 Nov 2023"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_is_capped_at_an_hour() {
        let outcome = classify(
            TargetType::Webhook,
            Observation::Response {
                status: 429,
                retry_after: Some("86400".to_owned()),
                message: None,
                rate_limit_reset: None,
            },
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(outcome.verdict, Verdict::Retry);
        assert_eq!(outcome.retry_after, Some(MAX_RETRY_AFTER));
    }

    /// GitHub answers its rate limits 403 as well as 429, and says how long to wait in one of
    /// three ways; any other 403 of GitHub's, and a 403 of another engine, fail at once.
    #[test]
    fn a_github_rate_limit_waits_as_github_asks() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let github = |status: u16, retry_after: Option<&str>, message: Option<&str>, reset: Option<&str>| {
            classify(
                TargetType::GithubActions,
                Observation::Response {
                    status,
                    retry_after: retry_after.map(str::to_owned),
                    message: message.map(str::to_owned),
                    rate_limit_reset: reset.map(str::to_owned),
                },
                now,
            )
        };
        let waits = |outcome: AttemptOutcome| (outcome.verdict, outcome.retry_after);
        let primary = Some("API rate limit exceeded for installation ID 1.");
        // The primary limit used up: until its reset, counted in full.
        assert_eq!(
            waits(github(403, None, primary, Some("1700000600"))),
            (Verdict::Retry, Some(Duration::from_secs(601)))
        );
        assert_eq!(
            waits(github(429, None, None, Some("1700000030"))),
            (Verdict::Retry, Some(Duration::from_secs(31)))
        );
        // A secondary limit: its `Retry-After` first, else a minute.
        assert_eq!(
            waits(github(403, Some("120"), None, Some("1700000600"))),
            (Verdict::Retry, Some(Duration::from_secs(120)))
        );
        let secondary = Some("You have exceeded a secondary rate limit. Please wait a few minutes.");
        assert_eq!(
            waits(github(403, None, secondary, None)),
            (Verdict::Retry, Some(RATE_LIMIT_MIN_WAIT))
        );
        assert_eq!(
            waits(github(429, None, None, None)),
            (Verdict::Retry, Some(RATE_LIMIT_MIN_WAIT))
        );
        // Never past an hour, however far the reset.
        for far in ["1800000000", "18446744073709551615"] {
            assert_eq!(
                waits(github(403, None, None, Some(far))),
                (Verdict::Retry, Some(MAX_RETRY_AFTER))
            );
        }
        // Used up, with no reset given: a minute.
        assert_eq!(
            waits(github(403, None, None, Some(""))),
            (Verdict::Retry, Some(RATE_LIMIT_MIN_WAIT))
        );
        // A reset already past: the second it names, then a retry.
        assert_eq!(
            waits(github(403, None, None, Some("1600000000"))),
            (Verdict::Retry, Some(Duration::from_secs(1)))
        );
        // A token without the permission is no rate limit.
        let refused = github(403, None, Some("Resource not accessible by integration"), None);
        assert_eq!(refused.verdict, Verdict::Failed);
        assert_eq!(
            refused.error.as_deref(),
            Some("the target answered 403 Forbidden: Resource not accessible by integration")
        );
        // Other engines' 403s fail at once, as SPEC says, whatever they say.
        for engine in [TargetType::Webhook, TargetType::Qovery] {
            let answer = Observation::Response {
                status: 403,
                retry_after: Some("60".to_owned()),
                message: primary.map(str::to_owned),
                rate_limit_reset: Some("1700000600".to_owned()),
            };
            assert_eq!(classify(engine, answer, now).verdict, Verdict::Failed, "{engine:?}");
        }
    }

    /// Qovery answers 409 while the service is being deployed: the newer commit or tag waits
    /// for that deployment instead of failing. Elsewhere a 409 fails.
    #[test]
    fn a_qovery_deployment_in_progress_is_waited_for() {
        let conflict = |engine| {
            let answer = Observation::Response {
                status: 409,
                retry_after: None,
                message: Some("Operation is in progress".to_owned()),
                rate_limit_reset: None,
            };
            classify(engine, answer, SystemTime::UNIX_EPOCH)
        };
        let qovery = conflict(TargetType::Qovery);
        assert_eq!(qovery.verdict, Verdict::Retry);
        assert_eq!(
            qovery.error.as_deref(),
            Some("the target answered 409 Conflict: Operation is in progress")
        );
        for engine in [TargetType::Webhook, TargetType::GithubActions] {
            assert_eq!(conflict(engine).verdict, Verdict::Failed, "{engine:?}");
        }
    }

    #[test]
    fn backoff_grows_then_stays_hourly() {
        let ceilings: Vec<u64> = (1..=8).map(|n| backoff_ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, vec![5, 30, 120, 600, 1800, 3600, 3600, 3600]);
        assert_eq!(backoff_ceiling(0).as_secs(), 5);
        assert_eq!(backoff_ceiling(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn full_jitter_spans_the_ceiling() {
        assert_eq!(retry_delay(2, None, 0.0), MIN_RETRY_DELAY);
        assert_eq!(retry_delay(2, None, 0.5), Duration::from_secs(15));
        assert_eq!(retry_delay(3, None, 0.999), Duration::from_secs(120).mul_f64(0.999));
        assert_eq!(retry_delay(4, None, 0.25), Duration::from_secs(150));
        // Out-of-range draws are clamped, never a panic.
        assert_eq!(retry_delay(1, None, 7.0), Duration::from_secs(5));
        assert_eq!(retry_delay(1, None, f64::NAN), MIN_RETRY_DELAY);
        assert_eq!(retry_delay(1, None, -1.0), MIN_RETRY_DELAY);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let wait = Some(Duration::from_secs(90));
        assert_eq!(retry_delay(1, wait, 0.5), Duration::from_secs(90));
        // A jittered delay above it stands.
        assert_eq!(retry_delay(5, wait, 0.5), Duration::from_secs(900));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(7200)), 0.1), MAX_RETRY_AFTER);
    }

    fn retry(error: &str) -> AttemptOutcome {
        AttemptOutcome {
            verdict: Verdict::Retry,
            status: Some(503),
            retry_after: None,
            error: Some(error.to_owned()),
        }
    }

    #[test]
    fn retries_until_the_attempts_run_out() {
        let policy = RetryPolicy::default();
        let outcome = retry("the target answered 503 Service Unavailable");
        assert_eq!(
            next_step(&outcome, 1, Duration::ZERO, &policy, 0.5),
            NextStep::RetryIn {
                delay: Duration::from_millis(2500),
                error: "the target answered 503 Service Unavailable".to_owned()
            }
        );
        assert!(matches!(
            next_step(&outcome, 9, 60 * MIN, &policy, 0.5),
            NextStep::RetryIn { .. }
        ));
        assert_eq!(
            next_step(&outcome, 10, 60 * MIN, &policy, 0.5),
            NextStep::Failed(
                "gave up after 10 attempts; the last one: the target answered 503 Service Unavailable".to_owned()
            )
        );
        let few = RetryPolicy {
            max_attempts: 2,
            ..policy
        };
        assert!(matches!(
            next_step(&outcome, 2, Duration::ZERO, &few, 0.5),
            NextStep::Failed(_)
        ));
    }

    #[test]
    fn retries_until_the_age_runs_out() {
        let policy = RetryPolicy::default();
        let outcome = retry("the target did not answer within 15 s");
        let error = "the target did not answer within 15 s".to_owned();
        // 23 h in, a wait of half an hour (jitter 0.5 of the hourly step) still fits.
        assert_eq!(
            next_step(&outcome, 7, 23 * 60 * MIN, &policy, 0.5),
            NextStep::RetryIn {
                delay: 30 * MIN,
                error: error.clone()
            }
        );
        // 23 h 45 min in, it would pass 24 h: the last retry comes at 24 h.
        assert_eq!(
            next_step(&outcome, 7, 23 * 60 * MIN + 45 * MIN, &policy, 0.5),
            NextStep::RetryIn {
                delay: 15 * MIN,
                error: error.clone()
            }
        );
        // At 24 h, none.
        assert_eq!(
            next_step(&outcome, 8, 24 * 60 * MIN, &policy, 0.5),
            NextStep::Failed(format!(
                "gave up after 8 attempts in 24 h, retries being limited to 24 h; the last one: {error}"
            ))
        );
        // Nor when the target asks to wait past the limit.
        let later = AttemptOutcome {
            retry_after: Some(20 * MIN),
            ..outcome.clone()
        };
        assert_eq!(
            next_step(&later, 1, 23 * 60 * MIN + 45 * MIN, &policy, 0.5),
            NextStep::Failed(format!(
                "gave up after 1 attempt in 1425 min, retries being limited to 24 h; the last one: {error}"
            ))
        );
    }

    #[test]
    fn delivered_and_failed_are_final() {
        let policy = RetryPolicy::default();
        assert_eq!(
            next_step(&answered(204), 3, Duration::ZERO, &policy, 0.5),
            NextStep::Delivered
        );
        assert_eq!(
            next_step(&answered(410), 1, Duration::ZERO, &policy, 0.5),
            NextStep::Failed("the target answered 410 Gone".to_owned())
        );
    }

    #[test]
    fn messages_from_targets() {
        let github =
            br#"{"message":"Unexpected inputs provided: [\"x\"]","documentation_url":"https://docs.github.com/rest"}"#;
        assert_eq!(
            response_message(github, &[]).unwrap(),
            "Unexpected inputs provided: [\"x\"]"
        );
        assert_eq!(
            response_message(br#"{"error":"  invalid\n commit "}"#, &[]).unwrap(),
            "invalid commit"
        );
        assert_eq!(
            response_message(br#"{"error":{"code":"CONFLICT","message":"nested message"}}"#, &[]).unwrap(),
            "nested message"
        );
        // An echoed token is removed.
        let echoed = br#"{"message":"bad credentials: ghp_0123456789abcdef"}"#;
        assert_eq!(
            response_message(echoed, &["ghp_0123456789abcdef"]).unwrap(),
            "bad credentials: [redacted]"
        );
        let long = format!(r#"{{"message":"{}"}}"#, "é".repeat(500));
        let cut = response_message(long.as_bytes(), &[]).unwrap();
        assert_eq!(cut.chars().count(), MAX_MESSAGE_EXCERPT);
        assert!(cut.ends_with('…'));
        let whole = "é".repeat(MAX_MESSAGE_EXCERPT);
        let kept = response_message(format!(r#"{{"message":"{whole}"}}"#).as_bytes(), &[]).unwrap();
        assert_eq!(kept, whole);
        for other in [
            &b"<html>502 Bad Gateway</html>"[..],
            b"[]",
            br#"{"message": 5}"#,
            br#"{"message":""}"#,
            b"",
        ] {
            assert_eq!(response_message(other, &[]), None);
        }
    }

    #[test]
    fn operator_durations() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        for refused in ["", "0", "1w", "h", "-1"] {
            assert!(parse_age(refused).is_err(), "{refused}");
        }
    }
}
