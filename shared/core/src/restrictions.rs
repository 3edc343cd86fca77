//! Deployment restrictions (Qovery semantics): which changed files make a service deploy.
//!
//! SPEC: a service deploys when (there is no MATCH rule, or some changed file is covered by a
//! MATCH rule) and (some changed file is not covered by any EXCLUDE rule).
//!
//! Coverage:
//! - a plain value covers the path equal to it and everything below it, in whole segments:
//!   `services/api` and `services/api/` cover `services/api` and `services/api/main.rs`, not
//!   `services/apix/x`;
//! - a value holding `*`, `?` or `[` is a glob (an extension) in which `*` and `?` stay within
//!   one segment and `**` as a whole segment crosses segments. A glob covers a file when it
//!   matches the file's path or the path of any directory above it, so `services/*` covers
//!   `services/api/main.rs` the way the plain `services/api` would.
//!
//! Paths are case-sensitive, as in git. A leading `./`, `.` segments, doubled and trailing
//! slashes in a value are ignored (`./services//api/` is `services/api`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Values longer than this are refused (SPEC: an over-long string is a 400).
pub const MAX_RESTRICTION_VALUE_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestrictionMode {
    Match,
    Exclude,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestrictionType {
    Path,
}

/// `{"mode": "MATCH" | "EXCLUDE", "type": "PATH", "value": "services/api/"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRestriction {
    pub mode: RestrictionMode,
    #[serde(rename = "type")]
    pub kind: RestrictionType,
    pub value: String,
}

/// A value is a glob when it holds one of these (SPEC).
fn is_glob(value: &str) -> bool {
    value.contains(['*', '?', '['])
}

enum Compiled {
    Plain(String),
    Glob(Glob),
}

/// Check a value and compile it; shared by write-time validation and [`Restrictions::compile`]
/// so that whatever was accepted at write time always compiles at push time.
fn compile_value(value: &str) -> Result<Compiled, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_RESTRICTION_VALUE_LEN {
        return Err(format!("must be at most {MAX_RESTRICTION_VALUE_LEN} bytes long"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if value.starts_with('/') {
        return Err("must not start with `/`: it is relative to the repository root".into());
    }
    let mut normalized = String::with_capacity(value.len());
    for segment in value.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err("must not contain a `..` segment".into()),
            s => {
                if !normalized.is_empty() {
                    normalized.push('/');
                }
                normalized.push_str(s);
            }
        }
    }
    if normalized.is_empty() {
        return Err("must name a file or directory in the repository".into());
    }
    if !is_glob(&normalized) {
        return Ok(Compiled::Plain(normalized));
    }
    build_glob(&normalized)
        .map(Compiled::Glob)
        .map_err(|e| format!("is not a valid glob: {}", e.kind()))
}

/// A restriction's glob: `*` and `?` stay within a segment, `**` crosses segments, `\`
/// escapes.
fn build_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// Validation at write time: non-empty, at most 1024 bytes, relative (no leading `/`), no `..`
/// segment, no NUL or other control character, a value naming something (not just `.` or
/// `./`), and a glob (a value holding `*`, `?` or `[`) must compile.
pub fn validate_restriction_value(value: &str) -> Result<(), String> {
    compile_value(value).map(|_| ())
}

/// The glob values of one service's restrictions together hold at most this many bytes...
pub const MAX_GLOB_BYTES_PER_SERVICE: usize = 2048;
/// ...and at most this many wildcards (`*`, `?`, `[`; `**` counts two).
pub const MAX_GLOB_WILDCARDS_PER_SERVICE: usize = 64;

/// Write-time bound on what a service's globs cost each push that reaches it: each thread
/// compiles them, and every changed file is matched against each. Plain values cost a
/// comparison and have no such bound beyond their count and length.
pub fn check_glob_budget(rules: &[DeploymentRestriction]) -> Result<(), String> {
    let globs = rules
        .iter()
        .map(|rule| rule.value.as_str())
        .filter(|value| is_glob(value));
    let (bytes, wildcards) = globs.fold((0, 0), |(bytes, wildcards), value| {
        let count = value.bytes().filter(|b| matches!(b, b'*' | b'?' | b'[')).count();
        (bytes + value.len(), wildcards + count)
    });
    if bytes > MAX_GLOB_BYTES_PER_SERVICE {
        return Err(format!(
            "holds {bytes} bytes of globs: a service's globs may hold {MAX_GLOB_BYTES_PER_SERVICE} at most (plain paths do not count)"
        ));
    }
    if wildcards > MAX_GLOB_WILDCARDS_PER_SERVICE {
        return Err(format!(
            "holds {wildcards} wildcards (`*`, `?`, `[`): a service's globs may hold {MAX_GLOB_WILDCARDS_PER_SERVICE} at most"
        ));
    }
    Ok(())
}

/// The rules of one mode.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    /// Normalized plain values, without trailing `/`.
    plain: Vec<String>,
    /// Each glob `g` with `g/**`: a file is covered when `g` matches its path or the path of a
    /// directory above it, which `g/**` matches in the same pass over the file's path.
    globs: GlobSet,
}

impl RuleSet {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.globs.is_empty()
    }

    fn covers(&self, path: &str) -> bool {
        let plain = self.plain.iter().any(|p| {
            path.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if plain {
            return true;
        }
        !self.globs.is_empty() && self.globs.is_match(path)
    }
}

/// `Restrictions::compile(rules).is_ok_and(|r| r.allows(changed_files))`: whether a push that
/// changed `changed_files` deploys under `rules` (rules that do not compile deploy nothing), as
/// matching asks it for every service a push reaches. Rule lists holding a glob are compiled
/// once per thread ([`Restrictions::compile_cached`]); lists of plain values, the usual kind,
/// are checked and applied in place, without compiling or allocating.
pub fn rules_allow<'a>(rules: &[DeploymentRestriction], changed_files: impl IntoIterator<Item = &'a str>) -> bool {
    if rules.iter().any(|rule| is_glob(&rule.value)) {
        return Restrictions::compile_cached(rules).is_ok_and(|compiled| compiled.allows(changed_files));
    }
    if !rules.iter().all(|rule| is_valid_plain(&rule.value)) {
        return false;
    }
    if rules.is_empty() {
        return true;
    }
    let covered = |mode: RestrictionMode, file: &str| {
        rules
            .iter()
            .any(|rule| rule.mode == mode && plain_covers(&rule.value, file))
    };
    // As `Restrictions::allows`.
    let mut matched = !rules.iter().any(|rule| rule.mode == RestrictionMode::Match);
    let mut kept = false;
    for file in changed_files {
        let file = file.trim_start_matches('/');
        if file.is_empty() {
            continue;
        }
        if !matched && covered(RestrictionMode::Match, file) {
            matched = true;
        }
        if !kept && !covered(RestrictionMode::Exclude, file) {
            kept = true;
        }
        if matched && kept {
            return true;
        }
    }
    false
}

/// `compile_value(value).is_ok()` for a value that is not a glob, without building its
/// normalized form: one pass over its segments, as it runs for every service a push reaches.
fn is_valid_plain(value: &str) -> bool {
    if value.is_empty() || value.len() > MAX_RESTRICTION_VALUE_LEN || value.starts_with('/') {
        return false;
    }
    // `char::is_control` also counts controls outside ASCII (U+0080 to U+009F).
    if !value.is_ascii() && value.chars().any(char::is_control) {
        return false;
    }
    let mut names_something = false;
    for segment in value.as_bytes().split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return false,
            _ if segment.iter().any(u8::is_ascii_control) => return false,
            _ => names_something = true,
        }
    }
    names_something
}

/// Whether the plain, valid `value` covers `path`, as [`RuleSet::covers`] does with its
/// normalized form: `path` is that form or lies below it. The form's segments are matched one
/// by one, so it is never built.
fn plain_covers(value: &str, path: &str) -> bool {
    // A value that starts with neither `/` nor `.` starts with its first segment, which the
    // path must start with: most paths of a long push fail here, on one byte.
    if let Some(&first) = value.as_bytes().first()
        && !matches!(first, b'/' | b'.')
        && path.as_bytes().first() != Some(&first)
    {
        return false;
    }
    let mut rest = path;
    for (i, segment) in value.split('/').filter(|s| !matches!(*s, "" | ".")).enumerate() {
        if i > 0 {
            let Some(after) = rest.strip_prefix('/') else {
                return false;
            };
            rest = after;
        }
        let Some(after) = rest.strip_prefix(segment) else {
            return false;
        };
        rest = after;
    }
    rest.is_empty() || rest.starts_with('/')
}

/// How many rule lists holding a glob each thread keeps compiled (see
/// [`Restrictions::compile_cached`]).
pub const CACHED_RULE_LISTS: usize = 256;

/// Rule lists with globs, compiled, by the rules (see [`Restrictions::compile_cached`]). Hashed
/// with foldhash, several times faster than SipHash on keys this short, its seed random; the
/// cache is bounded, so colliding keys cost at most a scan of it.
type CompiledCache = HashMap<Vec<DeploymentRestriction>, Result<Rc<Restrictions>, String>, foldhash::fast::RandomState>;

thread_local! {
    static COMPILED: RefCell<CompiledCache> = RefCell::new(HashMap::default());
}

/// A service's restrictions, compiled once per service and reused for every push.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    matching: RuleSet,
    excluding: RuleSet,
}

impl Restrictions {
    /// Compile the rules; an error names the first bad rule by its index
    /// (`deployment_restrictions[1].value: …`).
    pub fn compile(rules: &[DeploymentRestriction]) -> Result<Self, String> {
        let mut out = Self::default();
        let mut match_globs = GlobSetBuilder::new();
        let mut exclude_globs = GlobSetBuilder::new();
        for (i, rule) in rules.iter().enumerate() {
            let compiled =
                compile_value(&rule.value).map_err(|e| format!("deployment_restrictions[{i}].value: {e}"))?;
            let (set, globs) = match rule.mode {
                RestrictionMode::Match => (&mut out.matching, &mut match_globs),
                RestrictionMode::Exclude => (&mut out.excluding, &mut exclude_globs),
            };
            match compiled {
                Compiled::Plain(p) => set.plain.push(p),
                Compiled::Glob(glob) => {
                    // A glob whose last part is `**` matches whatever lies below what it matches.
                    let last_part = glob.glob().rsplit('/').next();
                    if last_part != Some("**") {
                        let below = build_glob(&format!("{}/**", glob.glob())).map_err(|e| {
                            format!("deployment_restrictions[{i}].value: is not a valid glob: {}", e.kind())
                        })?;
                        globs.add(below);
                    }
                    globs.add(glob);
                }
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| format!("deployment_restrictions: the globs could not be compiled: {}", e.kind()))
        };
        out.matching.globs = build(match_globs)?;
        out.excluding.globs = build(exclude_globs)?;
        Ok(out)
    }

    /// [`Restrictions::compile`], remembered by the calling thread for rule lists holding a
    /// glob: a service's rules are read from the store on every push that reaches it, and
    /// compiling a glob costs tens of microseconds, far more than matching. Rule lists of plain
    /// values compile in well under a microsecond and are not kept. The same rules always compile
    /// the same way, so the answer is the one `compile` gives.
    ///
    /// Each thread keeps at most [`CACHED_RULE_LISTS`] lists and starts afresh when full.
    pub fn compile_cached(rules: &[DeploymentRestriction]) -> Result<Rc<Self>, String> {
        if !rules.iter().any(|rule| is_glob(&rule.value)) {
            return Self::compile(rules).map(Rc::new);
        }
        COMPILED.with(|cache| {
            if let Some(compiled) = cache.borrow().get(rules) {
                return compiled.clone();
            }
            let compiled = Self::compile(rules).map(Rc::new);
            let mut cache = cache.borrow_mut();
            if cache.len() >= CACHED_RULE_LISTS {
                cache.clear();
            }
            cache.insert(rules.to_vec(), compiled.clone());
            compiled
        })
    }

    /// Whether a push that changed `changed_files` (paths relative to the repository root)
    /// deploys: (no MATCH rule, or some file covered by a MATCH rule) and (some file not
    /// covered by any EXCLUDE rule).
    ///
    /// With no rules at all, always true. With rules and no changed file, false: the formula
    /// needs some file, and a push whose files are unknown (or that changed none) is the
    /// caller's to handle before calling — SPEC: restrictions are then not applied. A leading
    /// `/` on a file is ignored; empty entries are skipped.
    pub fn allows<'a>(&self, changed_files: impl IntoIterator<Item = &'a str>) -> bool {
        if self.is_empty() {
            return true;
        }
        let mut matched = self.matching.is_empty();
        let mut kept = false;
        for file in changed_files {
            let file = file.trim_start_matches('/');
            if file.is_empty() {
                continue;
            }
            if !matched && self.matching.covers(file) {
                matched = true;
            }
            if !kept && !self.excluding.covers(file) {
                kept = true;
            }
            if matched && kept {
                return true;
            }
        }
        false
    }

    /// True when there is no rule, so every push deploys.
    pub fn is_empty(&self) -> bool {
        self.matching.is_empty() && self.excluding.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::branch::tests::strings;

    /// A glob covers a file by matching its path or a directory above it: checked here by
    /// matching every such path alone, as it was once done, against each glob and its
    /// `…/**` in one pass (globs over `a b / * ?`, `**`, classes and escapes; paths over
    /// `a b /` with doubled and trailing slashes).
    #[test]
    fn a_glob_and_its_directories_below_cover_as_each_directory_matched_alone() {
        let mut values = strings(&['a', 'b', '/', '*', '?'], 4);
        values.extend(
            [
                "**/a", "a/**", "**", "a/**/b", "[ab]/*", "a\\*", "*/[!a]", "**/*b", "a*/**/?",
            ]
            .map(String::from),
        );
        let paths = strings(&['a', 'b', '/'], 5);
        let mut globs = 0;
        let mut covered = 0;
        for value in &values {
            let Ok(Compiled::Glob(glob)) = compile_value(value) else {
                continue;
            };
            globs += 1;
            let alone = glob.compile_matcher();
            let rules = [DeploymentRestriction {
                mode: RestrictionMode::Match,
                kind: RestrictionType::Path,
                value: value.clone(),
            }];
            let compiled = Restrictions::compile(&rules).unwrap();
            // `allows` hands `covers` no path that starts with `/`, nor an empty one.
            for path in paths.iter().filter(|p| !p.is_empty() && !p.starts_with('/')) {
                let expected = alone.is_match(path.as_str())
                    || path
                        .match_indices('/')
                        .any(|(i, _)| i > 0 && alone.is_match(&path[..i]));
                assert_eq!(compiled.matching.covers(path), expected, "{value:?} {path:?}");
                covered += usize::from(expected);
            }
        }
        assert!(globs > 300 && covered > 10_000, "{globs} globs, {covered} covered");
    }

    fn rule(mode: RestrictionMode, value: &str) -> DeploymentRestriction {
        DeploymentRestriction {
            mode,
            kind: RestrictionType::Path,
            value: value.into(),
        }
    }

    fn m(value: &str) -> DeploymentRestriction {
        rule(RestrictionMode::Match, value)
    }

    fn x(value: &str) -> DeploymentRestriction {
        rule(RestrictionMode::Exclude, value)
    }

    #[test]
    fn allows_table() {
        // (rules, changed files, deploys)
        let cases: Vec<(Vec<DeploymentRestriction>, Vec<&str>, bool)> = vec![
            // No rules: always.
            (vec![], vec!["anything.txt"], true),
            (vec![], vec![], true),
            // Rules and no files: never (the caller handles unknown files).
            (vec![m("services/api")], vec![], false),
            (vec![x("docs")], vec![], false),
            // MATCH, plain, segment boundaries.
            (vec![m("services/api")], vec!["services/api/main.rs"], true),
            (vec![m("services/api/")], vec!["services/api/main.rs"], true),
            (vec![m("services/api")], vec!["services/api"], true),
            (vec![m("services/api/")], vec!["services/api"], true),
            (vec![m("services/api")], vec!["services/apix/x"], false),
            (vec![m("services/api")], vec!["services/api.rs"], false),
            (vec![m("services/api")], vec!["services"], false),
            (vec![m("services/api")], vec!["other/services/api/x"], false),
            (vec![m("services/api")], vec!["Services/API/main.rs"], false),
            (vec![m("./services//api/")], vec!["services/api/main.rs"], true),
            (vec![m("services/api")], vec!["/services/api/main.rs"], true),
            (vec![m("services/api")], vec!["README.md", "services/api/x"], true),
            (vec![m("services/api"), m("lib")], vec!["lib/util.rs"], true),
            (vec![m("Dockerfile")], vec!["Dockerfile"], true),
            (vec![m("Dockerfile")], vec!["Dockerfile.dev"], false),
            // EXCLUDE: every changed file excluded → no deploy; one not excluded → deploy.
            (vec![x("docs")], vec!["docs/a.md", "docs/b/c.md"], false),
            (vec![x("docs")], vec!["docs/a.md", "src/main.rs"], true),
            (vec![x("docs")], vec!["docsite/index.html"], true),
            (vec![x("docs"), x("README.md")], vec!["docs/a.md", "README.md"], false),
            (
                vec![x("docs"), x("README.md")],
                vec!["docs/a.md", "README.md", "x"],
                true,
            ),
            // MATCH + EXCLUDE together: both halves must hold, possibly on different files.
            (
                vec![m("services/api"), x("services/api/docs")],
                vec!["services/api/main.rs"],
                true,
            ),
            (
                vec![m("services/api"), x("services/api/docs")],
                vec!["services/api/docs/a.md"],
                false,
            ),
            (
                vec![m("services/api"), x("services/api/docs")],
                vec!["services/api/docs/a.md", "web/x.js"],
                true,
            ),
            (
                vec![m("services/api"), x("**/*.md")],
                vec!["services/api/README.md"],
                false,
            ),
            (
                vec![m("services/api"), x("**/*.md")],
                vec!["services/api/README.md", "services/api/a.rs"],
                true,
            ),
            (vec![m("services/api"), x("**/*.md")], vec!["web/a.js"], false),
            (vec![m("services/api"), x("services")], vec!["services/api/a.rs"], false),
            // Globs: `*` within a segment, covering parent directories.
            (vec![m("services/*")], vec!["services/api/main.rs"], true),
            (vec![m("services/*")], vec!["services/readme.md"], true),
            (vec![m("services/*")], vec!["services"], false),
            (vec![m("services/*/src")], vec!["services/api/src/main.rs"], true),
            (vec![m("services/*/src")], vec!["services/api/v2/src/main.rs"], false),
            (vec![m("*.rs")], vec!["main.rs"], true),
            (vec![m("*.rs")], vec!["src/main.rs"], false),
            (vec![m("src/?.rs")], vec!["src/a.rs"], true),
            (vec![m("src/?.rs")], vec!["src/ab.rs"], false),
            (vec![m("src/[ab].rs")], vec!["src/b.rs"], true),
            (vec![m("src/[ab].rs")], vec!["src/c.rs"], false),
            (vec![m("services/api*")], vec!["services/apix/x"], true),
            // `**` crosses segments.
            (vec![m("**/*.rs")], vec!["src/deep/er/main.rs"], true),
            (vec![m("**/*.rs")], vec!["main.rs"], true),
            (vec![m("**/*.rs")], vec!["main.go"], false),
            (vec![m("services/**/Dockerfile")], vec!["services/a/b/Dockerfile"], true),
            (vec![m("services/**/Dockerfile")], vec!["services/Dockerfile"], true),
            (vec![m("services/**")], vec!["services/a/b"], true),
            (vec![x("**/*.md"), x("docs/**")], vec!["docs/x.png", "a/b.md"], false),
            (vec![x("**/*.md"), x("docs/**")], vec!["docs/x.png", "a/b.rs"], true),
            // Plain values with glob-looking but inert characters.
            (vec![m("a{b,c}")], vec!["a{b,c}/x"], true),
        ];
        for (rules, files, expected) in cases {
            let compiled = Restrictions::compile(&rules).expect("valid rules");
            assert_eq!(
                compiled.allows(files.iter().copied()),
                expected,
                "rules {rules:?} files {files:?}"
            );
        }
    }

    fn compiled_allows(rules: &[DeploymentRestriction], files: &[&str]) -> bool {
        Restrictions::compile(rules).is_ok_and(|r| r.allows(files.iter().copied()))
    }

    #[test]
    fn rules_allow_answers_as_compile_then_allows() {
        // Plain values and paths over `a`, `b`, `/`, `.` (empty, `.` and `..` segments, leading
        // and doubled slashes), single rules against single files up to 4 bytes, pairs of rules
        // against pairs of files up to 2 bytes; then globs, which take the compiled path.
        let long = "a".repeat(MAX_RESTRICTION_VALUE_LEN + 1);
        let mut values = strings(&['a', 'b', '/', '.'], 4);
        values.extend(["a\u{1}", "a\u{85}b", long.as_str(), "a{b,c}", "x]y"].map(String::from));
        let files = strings(&['a', 'b', '/', '.'], 4);
        for value in &values {
            for rule in [m(value), x(value)] {
                let rules = std::slice::from_ref(&rule);
                assert_eq!(rules_allow(rules, []), compiled_allows(rules, &[]), "{rules:?}");
                for file in &files {
                    let expected = compiled_allows(rules, &[file]);
                    assert_eq!(rules_allow(rules, [file.as_str()]), expected, "{rules:?} {file:?}");
                }
            }
        }
        let short = strings(&['a', 'b', '/', '.'], 2);
        let pairs: Vec<[&str; 2]> = short
            .iter()
            .flat_map(|f| short.iter().map(move |g| [f.as_str(), g.as_str()]))
            .collect();
        for first in &short {
            for second in &short {
                for rules in [
                    [m(first), m(second)],
                    [m(first), x(second)],
                    [x(first), m(second)],
                    [x(first), x(second)],
                ] {
                    for files in &pairs {
                        let expected = compiled_allows(&rules, files);
                        assert_eq!(
                            rules_allow(&rules, files.iter().copied()),
                            expected,
                            "{rules:?} {files:?}"
                        );
                    }
                }
            }
        }
        for rules in [
            vec![m("services/*")],
            vec![x("**/*.md"), m("src")],
            vec![m("src/[ab.rs")],
        ] {
            for files in [&["services/api/x"][..], &["docs/a.md", "src/b.rs"], &["src/a.rs"]] {
                assert_eq!(
                    rules_allow(&rules, files.iter().copied()),
                    compiled_allows(&rules, files),
                    "{rules:?} {files:?}"
                );
            }
        }
    }

    #[test]
    fn plain_values_are_checked_as_compiled() {
        let mut values = strings(&['a', '/', '.', '\u{1}'], 4);
        values.extend(
            [
                "a\u{7f}", "\u{85}", "a/\u{9f}", "\u{a0}", "é/..", "./é", "a\tb", "é\u{1}",
            ]
            .map(String::from),
        );
        values.extend([
            "a".repeat(MAX_RESTRICTION_VALUE_LEN),
            "a".repeat(MAX_RESTRICTION_VALUE_LEN + 1),
        ]);
        for value in values.iter().filter(|value| !is_glob(value)) {
            assert_eq!(is_valid_plain(value), compile_value(value).is_ok(), "{value:?}");
        }
    }

    #[test]
    fn cached_compilation_answers_as_compile() {
        let lists = [
            vec![m("services/api"), x("**/*.md")],
            vec![m("services/*")],
            vec![x("docs")],
            vec![m("src/[ab.rs")],
            vec![],
        ];
        let files = [
            "services/api/README.md",
            "services/api/main.rs",
            "docs/a.md",
            "src/a.rs",
        ];
        for round in 0..2 {
            for rules in &lists {
                let cached = Restrictions::compile_cached(rules);
                let fresh = Restrictions::compile(rules);
                assert_eq!(cached.as_ref().err(), fresh.as_ref().err(), "round {round}: {rules:?}");
                if let (Ok(cached), Ok(fresh)) = (cached, fresh) {
                    for file in files {
                        assert_eq!(cached.allows([file]), fresh.allows([file]), "{rules:?} {file}");
                    }
                }
            }
        }
        // A full cache starts afresh and keeps answering.
        for i in 0..CACHED_RULE_LISTS + 10 {
            let rules = [m(&format!("dir{i}/*"))];
            let compiled = Restrictions::compile_cached(&rules).expect("valid");
            assert!(compiled.allows([format!("dir{i}/x").as_str()]));
            assert!(!compiled.allows(["other/x"]));
        }
        COMPILED.with(|cache| assert!(cache.borrow().len() <= CACHED_RULE_LISTS));
    }

    #[test]
    fn empty_restrictions() {
        let none = Restrictions::compile(&[]).expect("no rules");
        assert!(none.is_empty());
        assert!(none.allows([]));
        let some = Restrictions::compile(&[x("docs")]).expect("valid");
        assert!(!some.is_empty());
    }

    #[test]
    fn value_validation() {
        let long = "a".repeat(1025);
        let max = "a".repeat(1024);
        for ok in [
            "services/api",
            "services/api/",
            "./services/api",
            "Dockerfile",
            "**/*.md",
            "src/[ab].rs",
            "src/?.rs",
            "a{b,c}",
            "dir with space/file",
            "...",
            max.as_str(),
        ] {
            assert_eq!(validate_restriction_value(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            long.as_str(),
            "/services/api",
            "/",
            "services/../secrets",
            "..",
            "../x",
            "a/..",
            "nul\0byte",
            "new\nline",
            ".",
            "./",
            "src/[ab.rs",
            "src/*{a,b",
        ] {
            let err = validate_restriction_value(bad).expect_err(bad);
            assert!(
                err.starts_with(|c: char| c.is_ascii_lowercase()) && !err.ends_with('.'),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn compile_names_the_bad_rule() {
        let err = Restrictions::compile(&[m("ok"), x("/abs")]).expect_err("leading slash");
        assert!(err.starts_with("deployment_restrictions[1].value: "), "{err}");
    }

    #[test]
    fn json_shape() {
        let json = r#"{"mode":"MATCH","type":"PATH","value":"services/api/"}"#;
        let parsed: DeploymentRestriction = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(parsed, m("services/api/"));
        assert_eq!(serde_json::to_string(&parsed).expect("serializes"), json);
        let exclude: DeploymentRestriction =
            serde_json::from_str(r#"{"mode":"EXCLUDE","type":"PATH","value":"docs"}"#).expect("valid JSON");
        assert_eq!(exclude.mode, RestrictionMode::Exclude);
        for bad in [
            r#"{"mode":"MATCH","type":"PATH","value":"x","extra":1}"#,
            r#"{"mode":"match","type":"PATH","value":"x"}"#,
            r#"{"mode":"MATCH","type":"FILE","value":"x"}"#,
            r#"{"mode":"MATCH","value":"x"}"#,
        ] {
            assert!(serde_json::from_str::<DeploymentRestriction>(bad).is_err(), "{bad}");
        }
    }
}
