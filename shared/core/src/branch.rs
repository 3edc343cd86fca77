//! Branch names and the branch a service follows.
//!
//! SPEC: branches match exactly (case-sensitive, as git); a value containing `*` is a glob
//! (an extension, e.g. `release/*`).

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// Git refuses ref names longer than this on most file systems; we refuse them up front.
pub const MAX_BRANCH_LEN: usize = 255;

/// Validate a branch name as `git check-ref-format --branch` does for `refs/heads/<name>`:
/// no `..`, no ASCII control character, space, `~ ^ : ? [ \`, no leading `-`, no component
/// starting with `.` or ending in `.lock`, no `@{`, not `@` nor `HEAD`, no leading or
/// trailing `/`, no `//`, no trailing `.`, at most 255 bytes.
///
/// A `*` is allowed: it makes the value a glob (see [`BranchPattern`]). Returns a sentence
/// for a person on error.
pub fn validate_branch(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("A branch name cannot be empty.".into());
    }
    if name.len() > MAX_BRANCH_LEN {
        return Err(format!("A branch name can be at most {MAX_BRANCH_LEN} bytes long."));
    }
    if name == "@" {
        return Err("A branch name cannot be `@`.".into());
    }
    // `git branch HEAD` is refused: `HEAD` would shadow the symbolic ref.
    if name == "HEAD" {
        return Err("`HEAD` is not a valid branch name.".into());
    }
    if name.starts_with('-') {
        return Err("A branch name cannot start with `-`.".into());
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
        return Err(format!("A branch name cannot contain {problem}."));
    }
    if name.contains("..") {
        return Err("A branch name cannot contain `..`.".into());
    }
    if name.contains("@{") {
        return Err("A branch name cannot contain `@{`.".into());
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("A branch name cannot start or end with `/` or contain `//`.".into());
    }
    if name.ends_with('.') {
        return Err("A branch name cannot end with `.`.".into());
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("No part of a branch name between slashes can start with `.`.".into());
        }
        if component.ends_with(".lock") {
            return Err("No part of a branch name between slashes can end with `.lock`.".into());
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
#[derive(Debug, Clone)]
pub struct BranchPattern {
    value: String,
    glob: Option<GlobMatcher>,
}

impl BranchPattern {
    /// Validate `value` (see [`validate_branch`]) and compile it once.
    pub fn new(value: &str) -> Result<Self, String> {
        validate_branch(value)?;
        if !value.contains('*') {
            return Ok(Self {
                value: value.to_owned(),
                glob: None,
            });
        }
        // Only `*` is glob syntax: escape everything between the stars.
        let mut pattern = String::with_capacity(value.len() + 8);
        for (i, piece) in value.split('*').enumerate() {
            if i > 0 {
                pattern.push('*');
            }
            pattern.push_str(&globset::escape(piece));
        }
        let glob = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("The branch pattern is not a valid glob: {}.", e.kind()))?;
        Ok(Self {
            value: value.to_owned(),
            glob: Some(glob.compile_matcher()),
        })
    }

    /// Whether a pushed branch (without `refs/heads/`) is followed.
    pub fn matches(&self, branch: &str) -> bool {
        match &self.glob {
            Some(glob) => glob.is_match(branch),
            None => self.value == branch,
        }
    }

    /// True when the value holds `*`.
    pub fn is_glob(&self) -> bool {
        self.glob.is_some()
    }

    /// The value as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.value
    }
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
mod tests {
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
            assert!(err.ends_with('.'), "{name:?}: {err}");
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
