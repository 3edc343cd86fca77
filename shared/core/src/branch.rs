//! Branch names and the branch a service follows.
//!
//! SPEC: branches match exactly (case-sensitive, as git); a value containing `*` is a glob
//! (an extension, e.g. `release/*`).

use std::fmt;

/// Git refuses ref names longer than this on most file systems; we refuse them up front.
pub const MAX_BRANCH_LEN: usize = 255;

/// The branch a value names: `refs/heads/main` is the branch `main` (the full ref name a
/// push payload carries, pasted into a setting), anything else is the branch itself. A service
/// stores the branch alone, which is what pushes are matched on. Every leading `refs/heads/`
/// goes, so that reading a stored branch again gives it back.
pub fn branch_name(mut value: &str) -> &str {
    while let Some(rest) = value.strip_prefix("refs/heads/") {
        value = rest;
    }
    value
}

/// Validate the branch a service follows, as [`branch_name`] reads it: a valid branch name,
/// and nothing no push ever names, so that it would never deploy: a full ref name of another
/// kind (`refs/tags/v1`, `refs/pull/1/head`), which git allows as a branch name, or a Unicode
/// control or format character, which a pushed branch may not carry
/// ([`validate_pushed_branch`]).
pub fn validate_followed_branch(name: &str) -> Result<(), String> {
    match name.strip_prefix("refs/") {
        Some(rest) if rest.starts_with("tags/") => Err(
            "must name a branch: `refs/tags/…` names tags, whose pushes do not deploy (give a branch, e.g. `main`)"
                .into(),
        ),
        Some(_) => Err("must name a branch alone (e.g. `main`), not another kind of ref (`refs/…`)".into()),
        None => {
            validate_branch(name)?;
            without_invisible_characters(name)
        }
    }
}

/// Validate a branch name as `git check-ref-format --branch` does for `refs/heads/<name>`:
/// no `..`, no ASCII control character, space, `~ ^ : ? [ \`, no leading `-`, no component
/// starting with `.` or ending in `.lock`, no `@{`, not `@` nor `HEAD`, no leading or
/// trailing `/`, no `//`, no trailing `.`, at most 255 bytes.
///
/// A `*` is allowed: it makes the value a glob (see [`BranchPattern`]). On error, returns a
/// phrase about the branch field (`must not contain `..``).
pub fn validate_branch(name: &str) -> Result<(), String> {
    // Matching validates the stored branch of every service a push reaches: one pass over
    // the bytes settles the usual, valid name; the checks below name the problem otherwise.
    if is_plainly_valid(name) {
        return Ok(());
    }
    explain_invalid_branch(name)
}

/// Validate the branch a push names (its ref without `refs/heads/`): a name git creates for a
/// branch ([`validate_branch`], at most [`MAX_BRANCH_LEN`] bytes), which has no `*` (no glob:
/// git refuses it in a ref name), and no Unicode control character nor format character
/// (category Cf: bidirectional overrides such as U+202E, zero-width spaces and joiners), which
/// git allows but which serve to make a branch look like another. A service following such a
/// branch is never reached by a push.
///
/// On error, returns a phrase about the branch (`must not contain `..``), which never repeats
/// the name.
pub fn validate_pushed_branch(name: &str) -> Result<(), String> {
    validate_branch(name)?;
    if name.contains('*') {
        return Err("must not contain `*`".into());
    }
    without_invisible_characters(name)
}

/// No Unicode control character nor format character: see [`validate_pushed_branch`].
fn without_invisible_characters(name: &str) -> Result<(), String> {
    if name.chars().any(|c| c.is_control() || is_format_char(c)) {
        return Err(
            "must not contain a control character or an invisible formatting character (such as a bidirectional override)"
                .into(),
        );
    }
    Ok(())
}

/// Unicode's format characters (general category Cf, Unicode 15.1): invisible, they change how
/// the text around them is shown.
pub(crate) fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Exactly `explain_invalid_branch(name).is_ok()`, in one pass and without allocating.
fn is_plainly_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_BRANCH_LEN || name == "@" || name == "HEAD" {
        return false;
    }
    let mut previous = b'/';
    for (i, &b) in bytes.iter().enumerate() {
        let bad = match b {
            b' ' | b'~' | b'^' | b':' | b'?' | b'[' | b'\\' => true,
            b if b.is_ascii_control() => true,
            b'.' => previous == b'.' || previous == b'/',
            b'{' => previous == b'@',
            b'/' => previous == b'/' || bytes[..i].ends_with(b".lock"),
            b'-' => i == 0,
            _ => false,
        };
        if bad {
            return false;
        }
        previous = b;
    }
    !matches!(previous, b'/' | b'.') && !bytes.ends_with(b".lock")
}

/// The first rule `name` breaks, as a sentence, or `Ok` when it breaks none.
fn explain_invalid_branch(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_BRANCH_LEN {
        return Err(format!("must be at most {MAX_BRANCH_LEN} bytes long"));
    }
    if name == "@" {
        return Err("must not be `@`".into());
    }
    // `git branch HEAD` is refused: `HEAD` would shadow the symbolic ref.
    if name == "HEAD" {
        return Err("must not be `HEAD`, which is not a valid branch name".into());
    }
    if name.starts_with('-') {
        return Err("must not start with `-`".into());
    }
    for c in name.chars() {
        let problem = match c {
            ' ' => "a space",
            '~' => "`~`",
            '^' => "`^`",
            ':' => "`:`",
            '?' => "`?`",
            '[' => "`[`",
            '\\' => "`\\`",
            c if c.is_ascii_control() => "a control character",
            _ => continue,
        };
        return Err(format!("must not contain {problem}"));
    }
    if name.contains("..") {
        return Err("must not contain `..`".into());
    }
    if name.contains("@{") {
        return Err("must not contain `@{`".into());
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("must not start or end with `/` nor contain `//`".into());
    }
    if name.ends_with('.') {
        return Err("must not end with `.`".into());
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("must not have a part between slashes that starts with `.`".into());
        }
        if component.ends_with(".lock") {
            return Err("must not have a part between slashes that ends with `.lock`".into());
        }
    }
    Ok(())
}

/// A service's followed branch: exact (case-sensitive, as git) unless it contains `*`, then a
/// glob.
///
/// Glob rules, chosen so that the hierarchy git users build with `/` is respected:
/// - `*` matches within one `/`-separated part: `release/*` matches `release/1.2` but not
///   `release/1/2` nor `release`;
/// - `**` as a whole part crosses `/`: `release/**` matches `release/1/2`, `**/hotfix`
///   matches `hotfix` and `team/a/hotfix`; elsewhere (`v**`) it is the same as `*`;
/// - every other character is literal (`{`, `}`, `,` and `!` are legal in branch names and are
///   not glob syntax here).
///
/// These are globset's semantics for the value with everything but `*` escaped,
/// `literal_separator` on (the tests check the two agree on every short pattern and branch),
/// matched by hand: nothing is compiled, so matching a stored branch on every push is cheap.
#[derive(Debug, Clone)]
pub struct BranchPattern {
    value: String,
    glob: bool,
}

impl BranchPattern {
    /// Validate `value` (see [`validate_branch`]).
    pub fn new(value: &str) -> Result<Self, String> {
        validate_branch(value)?;
        Ok(Self {
            value: value.to_owned(),
            glob: value.contains('*'),
        })
    }

    /// Whether a pushed branch (without `refs/heads/`) is followed.
    pub fn matches(&self, branch: &str) -> bool {
        if self.glob {
            glob_matches(&self.value, branch)
        } else {
            self.value == branch
        }
    }

    /// True when the value holds `*`.
    pub fn is_glob(&self) -> bool {
        self.glob
    }

    /// The value as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// `BranchPattern::new(pattern).is_ok_and(|p| p.matches(branch))`, without allocating: what
/// matching runs for every service a push reaches.
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    if pattern.contains('*') {
        validate_branch(pattern).is_ok() && glob_matches(pattern, branch)
    } else {
        // Most services a push reaches follow another branch: compare before validating.
        pattern == branch && validate_branch(pattern).is_ok()
    }
}

/// Whether `pattern`, which does not match `branch`, would if its `*` crossed `/` (as
/// `git branch --list` reads it): `*` alone, or `release/*` against `release/1.0/fix`. Worth a
/// hint, since a branch pattern's `*` stays within one part and `**` crosses them.
pub fn would_match_across_parts(pattern: &str, branch: &str) -> bool {
    pattern.contains('*') && branch.contains('/') && segment_matches(pattern.as_bytes(), branch.as_bytes())
}

/// One `/`-separated part of a glob pattern, `**` runs folded into one gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part<'p> {
    /// A part that is not exactly `**`: literal bytes and `*` (any bytes but `/`).
    Segment(&'p [u8]),
    /// One or more consecutive `**` parts.
    Gap,
}

/// The parts of a valid branch pattern (no empty part), consecutive `**` parts folded.
fn parts(pattern: &str) -> impl Iterator<Item = Part<'_>> {
    let mut previous_gap = false;
    pattern.split('/').filter_map(move |part| {
        if part == "**" {
            let fold = previous_gap;
            previous_gap = true;
            (!fold).then_some(Part::Gap)
        } else {
            previous_gap = false;
            Some(Part::Segment(part.as_bytes()))
        }
    })
}

/// Match `branch` against a valid pattern holding `*`, as globset's regex for it does
/// (bytes, `literal_separator`):
///
/// - a leading gap (`**/…`) skips any number of the branch's leading parts (`(?:/?|.*/)`);
/// - a gap between two segments (`…/**/…`) skips any number of parts in between
///   (`(?:/|/.*/)`);
/// - a trailing gap (`…/**`) needs at least one more part, of any content (`/.*`);
/// - a pattern of gaps only (`**`) matches everything (`.*`);
/// - two adjacent segments match two adjacent parts.
///
/// The segments between gaps form blocks of consecutive parts; each block is placed at the
/// leftmost place it fits after the previous one, which finds a match whenever there is one,
/// in time linear in the branch's parts times the pattern's.
fn glob_matches(pattern: &str, branch: &str) -> bool {
    // Parts of the branch as byte slices (a pushed branch may hold empty parts); both lists
    // stay on the stack unless long.
    on_stack(parts(pattern), Part::Gap, |pattern| {
        on_stack(branch.split('/').map(str::as_bytes), &[][..], |text| {
            parts_match(pattern, text)
        })
    })
}

fn parts_match(pattern: &[Part<'_>], text: &[&[u8]]) -> bool {
    let (leading_gap, mut rest) = match pattern {
        [Part::Gap, rest @ ..] => (true, rest),
        _ => (false, pattern),
    };
    if rest.is_empty() {
        return true;
    }
    let mut position = 0;
    let mut first = true;
    loop {
        // The next block of segments, and whether a gap follows it (gaps are folded, so a
        // segment follows a gap).
        let len = rest.iter().take_while(|p| matches!(p, Part::Segment(_))).count();
        let (block, after) = rest.split_at(len);
        let gap_after = !after.is_empty();
        rest = after.get(1..).unwrap_or_default();
        let last = rest.is_empty();
        let anchored = first && !leading_gap;
        first = false;
        let fits = |start: usize| {
            block
                .iter()
                .zip(&text[start..start + len])
                .all(|(p, t)| matches!(p, Part::Segment(segment) if segment_matches(segment, t)))
        };
        if last && !gap_after {
            // The block ends the branch.
            let Some(start) = text.len().checked_sub(len) else {
                return false;
            };
            return start >= position && (!anchored || start == position) && fits(start);
        }
        // A trailing gap needs one more part after the last block.
        let reserve = usize::from(last);
        let Some(latest) = text.len().checked_sub(len + reserve) else {
            return false;
        };
        let latest = if anchored { latest.min(position) } else { latest };
        match (position..=latest).find(|&start| fits(start)) {
            Some(start) if last => return start + len < text.len(),
            Some(start) => position = start + len,
            None => return false,
        }
    }
}

/// `f` on the items, held in a buffer on the stack when there are at most 16 of them.
fn on_stack<T: Copy, R>(mut items: impl Iterator<Item = T>, filler: T, f: impl FnOnce(&[T]) -> R) -> R {
    const INLINE: usize = 16;
    let mut buffer = [filler; INLINE];
    for (len, slot) in buffer.iter_mut().enumerate() {
        match items.next() {
            Some(item) => *slot = item,
            None => return f(&buffer[..len]),
        }
    }
    let mut all = buffer.to_vec();
    all.extend(items);
    f(&all)
}

/// One part of a branch against one segment of a pattern, where `*` matches any bytes (a
/// part holds no `/`). Greedy with a single backtrack point: O(len(pattern) × len(text)).
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl PartialEq for BranchPattern {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for BranchPattern {}

impl fmt::Display for BranchPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        let long = "a".repeat(255);
        let valid = [
            "main",
            "master",
            "develop",
            "feature/login",
            "feature/JIRA-123_fix",
            "release/1.2.3",
            "a/b/c/d",
            "v1.0",
            "fix-@-sign",
            "user@host",
            "weird{braces},and!bang",
            "héllo/wörld",
            "refs/heads/main",
            "x.lockfile",
            "a.b",
            "release/*",
            "release/**",
            "*",
            "feature-*",
            "Main",
            long.as_str(),
        ];
        for name in valid {
            assert_eq!(validate_branch(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn invalid_names() {
        let too_long = "a".repeat(256);
        let invalid = [
            "",
            too_long.as_str(),
            "@",
            "HEAD",
            "-main",
            "feature..x",
            "..",
            "a@{b",
            "my branch",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "tilde~1",
            "caret^",
            "colon:x",
            "question?",
            "bracket[",
            "back\\slash",
            "/main",
            "main/",
            "a//b",
            "main.",
            ".hidden",
            "feature/.hidden",
            "main.lock",
            "feature/x.lock/y",
        ];
        for name in invalid {
            let err = validate_branch(name).expect_err(name);
            assert!(err.starts_with("must ") && !err.ends_with('.'), "{name:?}: {err}");
        }
    }

    #[test]
    fn one_pass_check_agrees_with_the_rules() {
        // Every string over bytes that the rules single out, up to 6 long, and then some.
        let mut names = strings(&['a', '.', '/', '@', '{', '-'], 6);
        names.extend(strings(&['l', 'o', 'c', 'k', '.', '/', 'x'], 5));
        for extra in [
            "main.lock",
            "a.lock/b",
            "a/b.lock",
            "a.lockb/c",
            "x.lock.lock",
            ".lock",
            "a/.lock",
            "HEAD",
            "HEADS",
            "@",
            "@@",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a[",
            "a\\b",
            "tab\tx",
            "del\u{7f}",
            "é/ü.lock",
            "é.",
            "-x",
            "x-",
            "a*b",
        ] {
            names.push(extra.to_owned());
        }
        names.push("a".repeat(255));
        names.push("a".repeat(256));
        for name in &names {
            assert_eq!(is_plainly_valid(name), explain_invalid_branch(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn pattern_rejects_invalid_names() {
        assert!(BranchPattern::new("my branch").is_err());
        assert!(BranchPattern::new("release/[0-9]*").is_err());
        assert!(BranchPattern::new("").is_err());
    }

    #[test]
    fn matching() {
        // (pattern, branch, matches)
        let cases = [
            ("main", "main", true),
            ("main", "Main", false),
            ("main", "main2", false),
            ("main", "feature/main", false),
            ("feature/login", "feature/login", true),
            ("release/*", "release/1.2", true),
            ("release/*", "release/", true),
            ("release/*", "release/1/2", false),
            ("release/*", "release", false),
            ("release/*", "Release/1.2", false),
            ("release/**", "release/1/2", true),
            ("release/**", "release/1.2", true),
            ("release/**", "release", false),
            ("**/hotfix", "hotfix", true),
            ("**/hotfix", "team/a/hotfix", true),
            ("**/hotfix", "team/hotfix2", false),
            ("feature-*", "feature-login", true),
            ("feature-*", "feature-", true),
            ("feature-*", "feature/x", false),
            ("*", "main", true),
            ("*", "feature/x", false),
            ("**", "feature/x", true),
            ("v**", "v1", true),
            ("v**", "v1/2", false),
            ("*-stable", "2.0-stable", true),
            ("a{b,c}*", "a{b,c}x", true),
            ("a{b,c}*", "abx", false),
            ("wow!*", "wow!x", true),
        ];
        for (pattern, branch, expected) in cases {
            let compiled = BranchPattern::new(pattern).expect(pattern);
            assert_eq!(compiled.matches(branch), expected, "{pattern:?} vs {branch:?}");
        }
    }

    /// The matcher this module replaced: globset with everything but `*` escaped. The hand
    /// matcher must agree with it everywhere.
    fn globset_matcher(pattern: &str) -> globset::GlobMatcher {
        let mut escaped = String::new();
        for (i, piece) in pattern.split('*').enumerate() {
            if i > 0 {
                escaped.push('*');
            }
            escaped.push_str(&globset::escape(piece));
        }
        globset::GlobBuilder::new(&escaped)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .expect("a valid branch pattern compiles")
            .compile_matcher()
    }

    /// Every string of `alphabet` up to `max_len` bytes.
    pub(crate) fn strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    const PATTERN_ALPHABET: [char; 3] = ['a', '/', '*'];
    const PATTERN_LEN: usize = 7;
    const BRANCH_ALPHABET: [char; 3] = ['a', 'b', '/'];
    const BRANCH_LEN: usize = 5;

    #[test]
    fn hand_matcher_agrees_with_globset() {
        // Every valid glob pattern over `a`, `/`, `*` up to 7 bytes (all the ways `*`, `**`
        // and `***` can sit among parts), plus a few with other bytes, against every branch
        // over `a`, `b`, `/` up to 5 bytes (including empty parts and leading or trailing `/`).
        // Widen the constants to check more (patterns over `a`, `b`, `/`, `*` up to 8 bytes
        // against branches up to 7 agree too: run it with `--release`).
        let mut patterns: Vec<String> = strings(&PATTERN_ALPHABET, PATTERN_LEN)
            .into_iter()
            .filter(|p| p.contains('*') && validate_branch(p).is_ok())
            .collect();
        patterns.extend(["é*/**", "a{b,c}*/**/z", "**/x.y*", "*]!*", "a*b*a*b", "**/a/**/b/**"].map(String::from));
        // Past the 16 parts kept on the stack.
        let long = "a/".repeat(17);
        patterns.extend([
            format!("{long}*"),
            format!("**/{long}b"),
            format!("{long}**/b"),
            format!("*/{long}**"),
        ]);
        let mut branches = strings(&BRANCH_ALPHABET, BRANCH_LEN);
        branches.extend([
            format!("{long}b"),
            format!("{long}a"),
            format!("{long}{long}b"),
            format!("b/{long}b"),
        ]);
        branches.extend(["é/z", "a{b,c}/q/z", "t/x.yz", "x]!y", "abab", "a/b", "q/a/b/c/r"].map(String::from));
        assert!(patterns.len() > 300, "{}", patterns.len());
        for pattern in &patterns {
            let compiled = BranchPattern::new(pattern).expect("valid");
            let reference = globset_matcher(pattern);
            for branch in &branches {
                let expected = reference.is_match(branch);
                assert_eq!(compiled.matches(branch), expected, "{pattern:?} vs {branch:?}");
                assert_eq!(branch_matches(pattern, branch), expected, "{pattern:?} vs {branch:?}");
            }
        }
    }

    #[test]
    fn branch_matches_is_new_then_matches() {
        for (pattern, branch) in [
            ("main", "main"),
            ("main", "dev"),
            ("release/*", "release/1"),
            ("bad..x", "bad..x"),
        ] {
            assert_eq!(
                branch_matches(pattern, branch),
                BranchPattern::new(pattern).is_ok_and(|p| p.matches(branch)),
                "{pattern:?} vs {branch:?}"
            );
        }
        assert!(!branch_matches("bad..x", "bad..x"));
    }

    #[test]
    fn a_star_that_would_match_across_parts_is_told_apart() {
        for (pattern, branch) in [
            ("*", "feature/x"),
            ("release/*", "release/1.0/fix"),
            ("feat*", "feature/x"),
        ] {
            assert!(!branch_matches(pattern, branch), "{pattern:?} vs {branch:?}");
            assert!(would_match_across_parts(pattern, branch), "{pattern:?} vs {branch:?}");
        }
        for (pattern, branch) in [
            ("release/*", "hotfix/1.0"),
            ("main", "main/x"),
            ("*", "main"),
            ("x/*", "y/x/z"),
        ] {
            assert!(!would_match_across_parts(pattern, branch), "{pattern:?} vs {branch:?}");
        }
    }

    #[test]
    fn long_globs_stay_linear() {
        let pattern = format!("{}b", "*a".repeat(100));
        let branch = "a".repeat(5000);
        assert!(!branch_matches(&pattern, &branch));
        let deep = format!("**/{}/**/x", "*/".repeat(50).trim_end_matches('/'));
        assert!(!branch_matches(&deep, &"a/".repeat(2000)));
    }

    #[test]
    fn pushed_branches_are_names_git_gives_branches() {
        let long = "y".repeat(MAX_BRANCH_LEN + 1);
        for bad in [
            "",
            "ma\0in",
            "a\nb",
            "a b",
            "a\tb",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "release/*",
            "a[b",
            "a\\b",
            "a..b",
            "a@{1}",
            "x.lock",
            "a/",
            "/a",
            "a//b",
            ".a",
            "a/.b",
            "a.",
            "-a",
            "@",
            "HEAD",
            "\u{202e}evil",
            "a\u{200b}b",
            "a\u{feff}",
            "a\u{2066}b",
            "a\u{85}b",
            "a\u{7f}",
            &long,
        ] {
            let err = validate_pushed_branch(bad).expect_err(bad);
            // The phrase names the rule, never the name.
            assert!(bad.len() < 4 || bad == "HEAD" || !err.contains(bad), "{err}");
            assert!(err.len() < 200, "{err}");
        }
        for good in [
            "main",
            "release/1.2",
            "feature/été",
            "用户/分支",
            "a-b_c.d",
            "a@b",
            "x.lockx",
            &"y".repeat(MAX_BRANCH_LEN),
        ] {
            assert_eq!(validate_pushed_branch(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn full_ref_names_name_their_branch() {
        assert_eq!(branch_name("refs/heads/main"), "main");
        assert_eq!(branch_name("refs/heads/release/*"), "release/*");
        assert_eq!(branch_name("main"), "main");
        assert_eq!(branch_name("heads/main"), "heads/main");
        assert_eq!(branch_name("refs/tags/v1"), "refs/tags/v1");
        assert_eq!(branch_name("refs/heads/refs/heads/x"), "x");
        assert!(validate_branch(branch_name("refs/heads/")).is_err());
        // A service follows branches: other refs are never a pushed branch.
        for other in [
            "refs/tags/v1",
            "refs/tags/*",
            "refs/pull/1/head",
            "refs/heads/refs/notes/x",
        ] {
            assert!(validate_followed_branch(branch_name(other)).is_err(), "{other}");
        }
        for branch in ["refs/heads/main", "refsx/main", "release/*", "café/ünïcode"] {
            assert!(validate_followed_branch(branch_name(branch)).is_ok(), "{branch}");
        }
        // Nor does a push ever name a branch with an invisible character.
        for invisible in [
            "ma\u{202e}in",
            "a\u{200b}b",
            "a\u{85}b",
            "a\u{ad}b",
            "feature/\u{feff}x",
        ] {
            let refused = validate_followed_branch(invisible).unwrap_err();
            assert!(
                refused.contains("invisible formatting character"),
                "{invisible:?}: {refused}"
            );
            assert!(validate_pushed_branch(invisible).is_err(), "{invisible:?}");
        }
    }

    #[test]
    fn glob_flag_and_display() {
        let exact = BranchPattern::new("main").expect("valid");
        assert!(!exact.is_glob());
        assert_eq!(exact.to_string(), "main");
        let glob = BranchPattern::new("release/*").expect("valid");
        assert!(glob.is_glob());
        assert_eq!(glob.as_str(), "release/*");
        assert_eq!(glob, BranchPattern::new("release/*").expect("valid"));
    }
}
