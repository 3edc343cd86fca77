//! Tag policies: which new image tags a service follows (after Keel and Flux image policies).
//!
//! A policy is written with the service and compiled once when it is validated, so a bad range
//! or a hostile pattern is refused at write time (a 400) and never costs anything when an image
//! notification arrives.

use globset::{GlobBuilder, GlobMatcher};
use regex::bytes::{Regex, RegexBuilder};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// Longest range or pattern accepted, in characters: enough for any real policy, short enough
/// that compiling one is cheap.
pub const MAX_POLICY_LEN: usize = 512;

/// Cap on a compiled regex (bytes of its program, the regex crate's `size_limit`; the crate's
/// default is 10 MiB). A tag is at most 128 ASCII characters, and tag patterns compiled on
/// bytes without Unicode (see `compile_regex`) stay well below this even when they spell out
/// the whole tag (`^[\w.-]{1,128}$`); the cap keeps one tenant's pattern from taking much
/// memory or compile time.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Cap on the lazy DFA's cache of one compiled regex (the crate's `dfa_size_limit`, default
/// 2 MiB): matching a tag of at most 128 bytes never needs more, and a service's compiled
/// policy may be kept for as long as the service does not change.
const REGEX_DFA_SIZE_LIMIT: usize = 256 * 1024;

/// Deepest nesting of groups and repetitions in a REGEX pattern (the crate's default is 250).
const REGEX_NEST_LIMIT: u32 = 32;

/// A service's tag policy, as written in its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum TagPolicy {
    /// Follow semver tags within `range`, never moving to a lower version.
    Semver { range: String },
    /// Follow tags that match a glob (`release-*`) as a whole.
    Glob { pattern: String },
    /// Follow tags the regular expression matches (anchors are the writer's choice).
    Regex { pattern: String },
}

/// A [`TagPolicy`] with its range or pattern compiled, built once by [`TagPolicy::compile`]
/// and reused for every notification: it is `Send + Sync` and cheap to clone (a compiled regex
/// is shared, not copied), so a cache of compiled policies can hand it to any thread.
#[derive(Debug, Clone)]
pub struct CompiledTagPolicy {
    inner: Compiled,
}

#[derive(Debug, Clone)]
enum Compiled {
    Semver(VersionReq),
    Glob(GlobMatcher),
    Regex(Regex),
}

impl TagPolicy {
    /// The field of the policy that [`TagPolicy::compile`] judges (`range` or `pattern`), for
    /// naming it in a validation error (`tag_policy.range`).
    pub fn field_name(&self) -> &'static str {
        match self {
            TagPolicy::Semver { .. } => "range",
            TagPolicy::Glob { .. } | TagPolicy::Regex { .. } => "pattern",
        }
    }

    /// Compile the policy. The error says what is wrong with the range or pattern, as a
    /// phrase about the field that [`TagPolicy::field_name`] names (`must not be empty`).
    ///
    /// Compiling is bounded: a range or pattern is at most [`MAX_POLICY_LEN`] characters, and
    /// a regex at most [`REGEX_SIZE_LIMIT`] bytes of program, `REGEX_NEST_LIMIT` levels deep.
    ///
    /// A SEMVER range is read as the `semver` crate reads it (`>=1.2.0, <2`); comparators
    /// separated only by spaces, as the SPEC writes them (`>=1.2.0 <2`), are accepted too.
    pub fn compile(&self) -> Result<CompiledTagPolicy, String> {
        let inner = match self {
            TagPolicy::Semver { range } => Compiled::Semver(compile_range(range)?),
            TagPolicy::Glob { pattern } => Compiled::Glob(compile_glob(pattern)?),
            TagPolicy::Regex { pattern } => Compiled::Regex(compile_regex(pattern)?),
        };
        Ok(CompiledTagPolicy { inner })
    }
}

impl CompiledTagPolicy {
    /// Whether a service whose current tag is `current` (if any) may move to `new`.
    ///
    /// Whether `new` equals `current` is the caller's concern (`SAME_TAG`); GLOB and REGEX
    /// look at `new` alone.
    ///
    /// SEMVER:
    /// - `new` must read as semver, with an optional `v`/`V` prefix (`v1.2.3` is `1.2.3`); a
    ///   tag of one or two numbers reads as that version with zeros (`1.27` is `1.27.0`, `22`
    ///   is `22.0.0`), as Keel and Flux read the moving tags of official images; `latest` or
    ///   `1.27-alpine` is not accepted.
    /// - `new` must satisfy the range. Pre-releases follow the `semver` crate's rule (that of
    ///   Cargo and npm): `1.3.0-rc.1` satisfies a range only if one of its comparators names a
    ///   pre-release of the same `1.3.0` (`>=1.3.0-rc.0`), so `>=1.2.0` never pulls in release
    ///   candidates.
    /// - When `current` reads as semver, `new` must be strictly greater: never a downgrade,
    ///   and not the same version under another spelling (`1.2.3` → `v1.2.3`). Build metadata
    ///   cannot occur, since Docker tags have no `+`. A current tag that is not semver
    ///   (`latest`) leaves only the range to decide.
    pub fn accepts(&self, current: Option<&str>, new: &str) -> bool {
        self.refusal(current, new).is_none()
    }

    /// Why the policy refuses `new` ([`CompiledTagPolicy::accepts`]), or `None` when it
    /// accepts it.
    pub fn refusal(&self, current: Option<&str>, new: &str) -> Option<TagRefusal> {
        match &self.inner {
            Compiled::Semver(req) => {
                let Some(new) = parse_version(new) else {
                    return Some(TagRefusal::NotAVersion);
                };
                if !req.matches(&new) {
                    // The pre-release rule explains the refusal only when no comparator names a
                    // pre-release of that version: with one (`>=1.4.0-0 <1.4.0-rc.3`), another
                    // comparator is what refuses it.
                    let named = req.comparators.iter().any(|c| {
                        !c.pre.is_empty()
                            && c.major == new.major
                            && c.minor == Some(new.minor)
                            && c.patch == Some(new.patch)
                    });
                    if !new.pre.is_empty() && !named {
                        return Some(TagRefusal::PreReleaseNotTaken {
                            release: (new.major, new.minor, new.patch),
                        });
                    }
                    return Some(TagRefusal::NotTaken);
                }
                match current.and_then(parse_version) {
                    Some(current) if new <= current => Some(TagRefusal::NotNewer),
                    _ => None,
                }
            }
            Compiled::Glob(matcher) => (!matcher.is_match(new)).then_some(TagRefusal::NotTaken),
            Compiled::Regex(regex) => (!regex.is_match(new.as_bytes())).then_some(TagRefusal::NotTaken),
        }
    }
}

/// Why a tag policy refuses a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRefusal {
    /// The range does not take the version, or the pattern does not match the tag.
    NotTaken,
    /// SEMVER: the tag does not read as a version.
    NotAVersion,
    /// SEMVER: the version is not above the current tag's.
    NotNewer,
    /// SEMVER: a pre-release of `release` (major, minor, patch) that the range does not take:
    /// pre-releases match only a comparator naming one of the same version.
    PreReleaseNotTaken { release: (u64, u64, u64) },
}

impl TagPolicy {
    /// Why this policy refuses tag `new` for a service at `current`, as a phrase that follows
    /// the tag (`2.0.0 is outside the SEMVER range >=1.2.0 <2`); `refusal` is `None` for a
    /// policy that no longer compiles.
    pub fn refusal_phrase(&self, refusal: Option<TagRefusal>, current: Option<&str>) -> String {
        let Some(refusal) = refusal else {
            return "cannot be judged: the tag policy no longer compiles".to_owned();
        };
        match self {
            TagPolicy::Semver { range } => match refusal {
                TagRefusal::NotTaken => format!("is outside the SEMVER range {range}"),
                TagRefusal::NotAVersion => {
                    format!("is not a version, and the SEMVER policy ({range}) takes versions only")
                }
                TagRefusal::NotNewer => format!(
                    "is not above the current tag {} (a SEMVER policy never moves down)",
                    current.unwrap_or_default()
                ),
                TagRefusal::PreReleaseNotTaken {
                    release: (major, minor, patch),
                } => format!(
                    "is a pre-release, outside the SEMVER range {range}: as Cargo and npm read ranges, a pre-release \
                     is taken only by a range that has a comparator naming a pre-release of the same \
                     {major}.{minor}.{patch} (such as >={major}.{minor}.{patch}-0)"
                ),
            },
            TagPolicy::Glob { pattern } => format!("does not match the GLOB pattern {pattern}"),
            TagPolicy::Regex { pattern } => format!("does not match the REGEX pattern {pattern}"),
        }
    }
}

/// Read a tag as a semver version, allowing the common `v` prefix, and one or two numbers
/// (`1.27`, `22`) as that version with zeros — a major of at most three digits, so that a
/// commit id or a date that is all digits (`4821937`, `20250101`) is not read as a version far
/// above every release, which no later release could pass.
fn parse_version(tag: &str) -> Option<Version> {
    let bare = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    if let Ok(version) = Version::parse(bare) {
        return Some(version);
    }
    let numbers: Vec<&str> = bare.split('.').collect();
    // Numbers as semver writes them: digits, no leading zero.
    let number =
        |n: &&str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n.len() == 1 || !n.starts_with('0'));
    if numbers.len() > 2 || !numbers.iter().all(number) || numbers[0].len() > 3 {
        return None;
    }
    let padded = numbers
        .iter()
        .copied()
        .chain(["0", "0"])
        .take(3)
        .collect::<Vec<_>>()
        .join(".");
    Version::parse(&padded).ok()
}

/// `value` must be given and short; `what` says what to write instead of nothing.
fn check_length(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("must not be empty; {what}"));
    }
    let len = value.chars().count();
    if len > MAX_POLICY_LEN {
        return Err(format!(
            "is {len} characters long; at most {MAX_POLICY_LEN} are allowed"
        ));
    }
    Ok(())
}

fn compile_range(range: &str) -> Result<VersionReq, String> {
    check_length("write `*` to accept any version", range)?;
    if range.contains("||") {
        return Err("cannot hold alternatives (`||`); write one semver range such as `>=1.2.0 <2`".to_owned());
    }
    VersionReq::parse(&comma_separated(range))
        .map_err(|err| format!("is not a valid semver range ({err}); write comparators such as `>=1.2.0 <2`"))
}

/// Insert the commas the `semver` crate needs between comparators separated only by
/// whitespace (`>=1.2.0 <2` → `>=1.2.0, <2`), keeping an operator written apart from its
/// version (`>= 1.2.0`) with it. A version without an operator or wildcard means that version,
/// as in Keel and Flux (`1.2.3` → `=1.2.3`, `1.2` → `=1.2`, any 1.2.x), where the `semver`
/// crate would read a caret range and follow every later 1.x. Existing commas, and empty
/// comparators between them, are left for the parser to judge.
fn comma_separated(range: &str) -> String {
    let exact = |token: String| {
        let bare = token.starts_with(|c: char| c.is_ascii_digit()) && !token.contains(['*', 'x', 'X']);
        if bare { format!("={token}") } else { token }
    };
    let is_operator = |token: &str| token.chars().all(|c| matches!(c, '<' | '>' | '=' | '~' | '^'));
    range
        .split(',')
        .map(|piece| {
            let mut comparators: Vec<String> = Vec::new();
            let mut operator: Option<&str> = None;
            for token in piece.split_whitespace() {
                if is_operator(token) && operator.is_none() {
                    operator = Some(token);
                } else {
                    let token = without_v(token);
                    comparators.push(match operator.take() {
                        Some(operator) => format!("{operator}{token}"),
                        None => exact(token.into_owned()),
                    });
                }
            }
            comparators.extend(operator.map(str::to_owned));
            comparators.join(", ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A comparator without the `v` its version may be written with, as tags are (`>=v1.2` →
/// `>=1.2`).
fn without_v(token: &str) -> std::borrow::Cow<'_, str> {
    let operator = token.len() - token.trim_start_matches(['<', '>', '=', '~', '^']).len();
    let (before, version) = token.split_at(operator);
    match version.strip_prefix(['v', 'V']) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => format!("{before}{rest}").into(),
        _ => token.into(),
    }
}

fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    check_length("write `*` to follow every tag", pattern)?;
    GlobBuilder::new(pattern)
        .build()
        .map(|glob| glob.compile_matcher())
        // The error's own text quotes the pattern; its kind says what is wrong.
        .map_err(|err| format!("is not a valid glob pattern: {}", err.kind()))
}

/// Compile a REGEX pattern, bounded in size so a short hostile pattern is refused.
///
/// Tags are ASCII (Docker's grammar), and on ASCII text Unicode-aware classes (`\w`, `\d`,
/// `(?i)`, `.`, `[^-]`) match exactly what their ASCII forms match, at a small fraction of the
/// compiled size. So the pattern is compiled for bytes with Unicode off, where every class is
/// its ASCII form; only a pattern that needs Unicode (`\p{L}`) is compiled again with it on,
/// under the same limits.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    check_length("write `.*` to follow every tag", pattern)?;
    let build = |unicode: bool| {
        RegexBuilder::new(pattern)
            .unicode(unicode)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
    };
    build(false)
        .or_else(|err| match err {
            regex::Error::CompiledTooBig(_) => Err(err),
            _ => build(true),
        })
        .map_err(|err| match err {
            regex::Error::CompiledTooBig(_) => {
                "is too complex: its compiled form exceeds the size limit; simplify it".to_owned()
            }
            other => {
                let text = other.to_string();
                // The syntax error is a multi-line drawing; its last `error:` line says what
                // is wrong in words.
                let reason = text
                    .lines()
                    .rev()
                    .find_map(|line| line.trim().strip_prefix("error: "))
                    .unwrap_or(text.trim());
                format!("is not a valid regular expression: {reason}")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn semver(range: &str) -> CompiledTagPolicy {
        TagPolicy::Semver {
            range: range.to_owned(),
        }
        .compile()
        .unwrap()
    }

    fn glob(pattern: &str) -> CompiledTagPolicy {
        TagPolicy::Glob {
            pattern: pattern.to_owned(),
        }
        .compile()
        .unwrap()
    }

    fn regex(pattern: &str) -> CompiledTagPolicy {
        TagPolicy::Regex {
            pattern: pattern.to_owned(),
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn serde_shape() {
        let policy: TagPolicy = serde_json::from_value(json!({"type": "SEMVER", "range": ">=1.2.0 <2"})).unwrap();
        assert_eq!(
            policy,
            TagPolicy::Semver {
                range: ">=1.2.0 <2".into()
            }
        );
        let policy = TagPolicy::Glob {
            pattern: "release-*".into(),
        };
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({"type": "GLOB", "pattern": "release-*"})
        );
        let policy: TagPolicy = serde_json::from_value(json!({"type": "REGEX", "pattern": "^x$"})).unwrap();
        assert_eq!(policy.field_name(), "pattern");
        for bad in [
            json!({"type": "SEMVER", "range": "*", "extra": 1}),
            json!({"type": "SEMVER", "pattern": "*"}),
            json!({"type": "semver", "range": "*"}),
            json!({"type": "LATEST"}),
            json!({"range": "*"}),
        ] {
            assert!(serde_json::from_value::<TagPolicy>(bad.clone()).is_err(), "{bad}");
        }
    }

    /// A refused tag is told apart by why it is refused, in a phrase naming the policy.
    #[test]
    fn refusals_say_why() {
        let range = TagPolicy::Semver {
            range: ">=1.2.0 <2".into(),
        };
        let compiled = range.compile().unwrap();
        let cases = [
            ("latest", Some(TagRefusal::NotAVersion)),
            ("2.0.0", Some(TagRefusal::NotTaken)),
            ("1.1.0", Some(TagRefusal::NotTaken)),
            ("1.2.5", Some(TagRefusal::NotNewer)),
            ("1.3.0", Some(TagRefusal::NotNewer)),
            ("v1.4.0", None),
            (
                "1.4.0-rc.1",
                Some(TagRefusal::PreReleaseNotTaken { release: (1, 4, 0) }),
            ),
        ];
        for (tag, refusal) in cases {
            assert_eq!(compiled.refusal(Some("1.3.0"), tag), refusal, "{tag}");
            assert_eq!(compiled.accepts(Some("1.3.0"), tag), refusal.is_none(), "{tag}");
        }
        // A range that names a pre-release of the version refuses others by its bounds.
        let bounded = TagPolicy::Semver {
            range: ">=1.4.0-0 <1.4.0-rc.3".into(),
        }
        .compile()
        .unwrap();
        assert_eq!(bounded.refusal(None, "1.4.0-rc.5"), Some(TagRefusal::NotTaken));
        assert_eq!(bounded.refusal(None, "1.4.0-rc.2"), None);
        assert_eq!(
            bounded.refusal(None, "1.5.0-rc.1"),
            Some(TagRefusal::PreReleaseNotTaken { release: (1, 5, 0) })
        );
        let phrase = |policy: &TagPolicy, refusal| policy.refusal_phrase(refusal, Some("1.3.0"));
        assert_eq!(
            phrase(&range, Some(TagRefusal::NotTaken)),
            "is outside the SEMVER range >=1.2.0 <2"
        );
        assert_eq!(
            phrase(&range, Some(TagRefusal::NotNewer)),
            "is not above the current tag 1.3.0 (a SEMVER policy never moves down)"
        );
        assert_eq!(
            phrase(&range, Some(TagRefusal::NotAVersion)),
            "is not a version, and the SEMVER policy (>=1.2.0 <2) takes versions only"
        );
        assert_eq!(
            phrase(&range, None),
            "cannot be judged: the tag policy no longer compiles"
        );
        assert_eq!(
            phrase(&range, Some(TagRefusal::PreReleaseNotTaken { release: (1, 4, 0) })),
            "is a pre-release, outside the SEMVER range >=1.2.0 <2: as Cargo and npm read ranges, a pre-release \
             is taken only by a range that has a comparator naming a pre-release of the same 1.4.0 (such as \
             >=1.4.0-0)"
        );
        // As the phrase says: that comparator takes it.
        let with_pre = TagPolicy::Semver {
            range: ">=1.4.0-0".into(),
        };
        assert!(with_pre.compile().unwrap().accepts(Some("1.3.0"), "1.4.0-rc.1"));
        // A pattern takes a tag or does not: one refusal, its phrase naming the pattern.
        let patterns = [
            (
                TagPolicy::Glob {
                    pattern: "release-*".into(),
                },
                "release-2",
                "does not match the GLOB pattern release-*",
            ),
            (
                TagPolicy::Regex {
                    pattern: "^main-[0-9a-f]{7}$".into(),
                },
                "main-abcdef0",
                "does not match the REGEX pattern ^main-[0-9a-f]{7}$",
            ),
        ];
        for (pattern, taken, said) in patterns {
            let compiled = pattern.compile().unwrap();
            assert_eq!(compiled.refusal(None, "main-1"), Some(TagRefusal::NotTaken), "{said}");
            assert_eq!(compiled.refusal(None, taken), None, "{said}");
            assert_eq!(phrase(&pattern, Some(TagRefusal::NotTaken)), said);
        }
    }

    #[test]
    fn semver_ranges() {
        // (range, current, new, accepted)
        let cases = [
            (">=1.2.0 <2", None, "1.2.0", true),
            (">=1.2.0 <2", None, "1.9.9", true),
            (">=1.2.0 <2", None, "2.0.0", false),
            (">=1.2.0 <2", None, "1.1.9", false),
            (">=1.2.0, <2", None, "1.5.0", true),
            (">= 1.2.0 < 2", None, "1.5.0", true),
            (">= 1.2.0 < 2", None, "2.1.0", false),
            ("  >=1.2.0   <2  ", None, "1.5.0", true),
            ("^1.2", None, "1.4.0", true),
            ("^1.2", None, "2.0.0", false),
            ("~1.2", None, "1.2.7", true),
            ("~1.2", None, "1.3.0", false),
            ("1.x", None, "1.8.0", true),
            ("*", None, "0.0.1", true),
            ("=1.2.3", None, "1.2.3", true),
            // A bare version means that version (Keel, Flux), not a caret range.
            ("1.2.3", None, "1.2.3", true),
            ("1.2.3", None, "1.2.4", false),
            ("1.2.3", None, "1.5.0", false),
            ("1.2", None, "1.2.9", true),
            ("1.2", None, "1.9.0", false),
            (">=1.0.0 1.2", None, "1.2.5", true),
            // v prefix on either side
            ("*", None, "v1.2.3", true),
            ("*", None, "V1.2.3", true),
            ("*", Some("v1.2.3"), "1.2.4", true),
            ("*", Some("1.2.3"), "v1.2.3", false),
            ("v1.2.3", None, "1.2.3", true),
            (">=v1.2.0 <V2", None, "v1.5.0", true),
            (">= v1.2.0", None, "1.1.0", false),
            // One or two numbers, as official images tag (Keel, Flux)
            ("*", None, "1.2", true),
            ("1.x", None, "22", false),
            (">=22", None, "22", true),
            ("1.x", Some("1.25"), "1.26", true),
            ("1.x", Some("1.26"), "1.25", false),
            ("*", Some("1.26.0"), "1.26", false),
            ("*", Some("1.26"), "1.26.1", true),
            ("*", Some("v22"), "23", true),
            // …but not a commit id or a date made of digits, which would wedge the service
            ("*", Some("1.4.2"), "4821937", false),
            ("*", None, "20250101", false),
            ("*", None, "2025.1", false),
            ("*", Some("1.4.2"), "1.5", true),
            // not semver
            ("*", None, "latest", false),
            ("*", None, "1.27-alpine", false),
            ("*", None, "01.2", false),
            ("*", None, "1.", false),
            ("*", None, "1.2.3.4", false),
            ("*", None, "01.2.3", false),
            ("*", None, "vv1.2.3", false),
            ("*", None, "main-abc1234", false),
        ];
        for (range, current, new, want) in cases {
            assert_eq!(semver(range).accepts(current, new), want, "{range} {current:?} → {new}");
        }
    }

    #[test]
    fn semver_never_downgrades() {
        let policy = semver(">=1.0.0 <3");
        assert!(policy.accepts(Some("1.5.0"), "1.6.0"));
        assert!(!policy.accepts(Some("1.5.0"), "1.4.9"));
        assert!(!policy.accepts(Some("1.5.0"), "1.5.0"));
        assert!(!policy.accepts(Some("v2.0.0"), "v1.9.0"));
        // A current tag that is not semver leaves only the range to decide.
        assert!(policy.accepts(Some("latest"), "1.0.0"));
        assert!(!policy.accepts(Some("latest"), "3.0.0"));
        // The range still applies when the version goes up.
        assert!(!policy.accepts(Some("2.9.0"), "3.0.0"));
    }

    #[test]
    fn semver_pre_releases() {
        let plain = semver(">=1.2.0");
        assert!(!plain.accepts(None, "1.3.0-rc.1"));
        assert!(plain.accepts(None, "1.3.0"));
        let opted_in = semver(">=1.3.0-rc.0");
        assert!(opted_in.accepts(None, "1.3.0-rc.1"));
        assert!(
            !opted_in.accepts(None, "1.4.0-rc.1"),
            "other versions' pre-releases stay out"
        );
        assert!(opted_in.accepts(None, "1.4.0"));
        // rc.2 is above rc.1; the release is above its candidates.
        assert!(opted_in.accepts(Some("1.3.0-rc.1"), "1.3.0-rc.2"));
        assert!(!opted_in.accepts(Some("1.3.0-rc.2"), "1.3.0-rc.1"));
        assert!(opted_in.accepts(Some("1.3.0-rc.2"), "1.3.0"));
        assert!(!opted_in.accepts(Some("1.3.0"), "1.3.0-rc.2"));
    }

    #[test]
    fn globs() {
        let policy = glob("release-*");
        assert!(policy.accepts(None, "release-1"));
        assert!(policy.accepts(Some("release-9"), "release-1"), "no ordering for globs");
        assert!(!policy.accepts(None, "pre-release-1"), "the whole tag must match");
        assert!(!policy.accepts(None, "Release-1"), "case-sensitive");
        assert!(glob("v1.?.*").accepts(None, "v1.2.3"));
        assert!(glob("{main,develop}-*").accepts(None, "develop-abc"));
        assert!(glob("[0-9]*").accepts(None, "1abc"));
        assert!(!glob("[0-9]*").accepts(None, "abc"));
    }

    #[test]
    fn regexes() {
        let policy = regex("^main-[0-9a-f]{7}$");
        assert!(policy.accepts(None, "main-abc1234"));
        assert!(!policy.accepts(None, "main-abc12345"));
        assert!(!policy.accepts(None, "dev-abc1234"));
        // Unanchored patterns search, as the writer chose.
        assert!(regex("rc").accepts(None, "1.0.0-rc.1"));
        assert!(regex(r"^\w+-\d+$").accepts(None, "build-42"));
        // Realistic Unicode-class patterns stay under the size limit.
        let semverish = regex(r"^v?\d+\.\d+\.\d+(?:-[\w.]+)?$");
        assert!(semverish.accepts(None, "v1.2.3-rc.1"));
        assert!(regex(r"^[\w.-]{1,128}$").accepts(None, "anything_1.0"));
        assert!(regex(r"(?i)^RELEASE-\d+$").accepts(None, "release-12"));
        // Patterns that need Unicode mode in a `&str` regex still compile.
        assert!(regex("^main-.*$").accepts(None, "main-abc"));
        assert!(regex("^[^-]+$").accepts(None, "abc"));
        assert!(!regex("^[^-]+$").accepts(None, "a-c"));
    }

    #[test]
    fn invalid_policies_are_refused_with_a_sentence() {
        let range = |r: &str| TagPolicy::Semver { range: r.to_owned() };
        let glob = |p: &str| TagPolicy::Glob { pattern: p.to_owned() };
        let regex = |p: &str| TagPolicy::Regex { pattern: p.to_owned() };
        let long = "a".repeat(MAX_POLICY_LEN + 1);
        let bad = [
            (range(""), "must not be empty; write `*`"),
            (range("   "), "must not be empty"),
            (range("not a range"), "is not a valid semver range"),
            (range(">=1.2.0 || <0.5"), "`||`"),
            (range(">=1.2.0, , <2"), "is not a valid semver range"),
            (range(">="), "is not a valid semver range"),
            (range("1.2.3.4"), "is not a valid semver range"),
            (range(&long), "at most 512"),
            (glob(""), "must not be empty"),
            (glob("release-["), "is not a valid glob pattern"),
            (glob("{a,b"), "is not a valid glob pattern"),
            (glob(&long), "at most 512"),
            (regex(""), "must not be empty"),
            (regex("("), "unclosed group"),
            (regex("[^a"), "unclosed character class"),
            (regex("a{2,1}"), "is not a valid regular expression"),
            (regex(&long), "at most 512"),
            // Hostile: tiny to write, huge to compile.
            (regex("((a{100}){100}){100}"), "too complex"),
            (regex("(a{1000}){1000}"), "too complex"),
            (regex("(.{1000}){1000}"), "too complex"),
            (regex(r"\w{1000}"), "too complex"),
            (regex(r"(\p{L}{100}){10}"), "too complex"),
            (regex(&format!("{}a{}", "(".repeat(40), ")".repeat(40))), "nest"),
        ];
        for (policy, needle) in bad {
            let err = policy.compile().expect_err(&format!("{policy:?}"));
            assert!(err.contains(needle), "{policy:?}: {err}");
            // A phrase about the field, rendered `tag_policy.pattern: …` by the API.
            assert!(err.starts_with(|c: char| c.is_ascii_lowercase()), "{err}");
            assert!(!err.ends_with('.'), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn patterns_that_spell_out_a_whole_tag_fit_the_limits() {
        // Every tag Docker accepts, written a few ways, and Unicode classes where asked for.
        for pattern in [
            r"^[\w.-]{1,128}$",
            r"^\w{1,128}$",
            r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
            r".{128}",
            r"[^x]{1,128}",
            r"^(?:[a-z0-9]+[._-]?){1,64}$",
            r"(?i)^(release|hotfix)-\d{1,6}(\.\d{1,6}){0,3}$",
            r"^\p{L}+$",
        ] {
            assert!(
                TagPolicy::Regex {
                    pattern: pattern.to_owned()
                }
                .compile()
                .is_ok(),
                "{pattern}"
            );
        }
        let long_tag = "a".repeat(128);
        assert!(regex(r"^[\w.-]{1,128}$").accepts(None, &long_tag));
        assert!(regex(r".{128}").accepts(None, &long_tag));
        assert!(!regex(r"^\p{L}+$").accepts(None, "v1"));
        assert!(regex(r"^\p{L}+$").accepts(None, "latest"));
    }

    #[test]
    fn a_compiled_policy_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
        let policy = regex("^main-[0-9a-f]{7}$");
        shareable(&policy);
        let copy = policy.clone();
        let answer = std::thread::spawn(move || copy.accepts(None, "main-abc1234"))
            .join()
            .unwrap();
        assert!(answer);
    }

    #[test]
    fn commas_are_inserted_between_comparators() {
        assert_eq!(comma_separated(">=1.2.0 <2"), ">=1.2.0, <2");
        assert_eq!(comma_separated(">= 1.2.0 < 2"), ">=1.2.0, <2");
        assert_eq!(comma_separated(">=1.2.0, <2"), ">=1.2.0, <2");
        assert_eq!(comma_separated("^1.2"), "^1.2");
        assert_eq!(comma_separated("1.2.3"), "=1.2.3");
        assert_eq!(comma_separated("1.x"), "1.x");
    }
}
