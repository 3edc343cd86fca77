//! The Lambda functions' executables, for the tests that start them as Lambda does.
//!
//! A package's integration tests get its own executables from Cargo (`CARGO_BIN_EXE_<name>`),
//! but the functions are five packages and their tests one binary, in this crate. So the
//! first test that needs a function asks Cargo for the workspace's executables, once per test
//! run, and takes their paths from Cargo's own report. It selects what `cargo test
//! --workspace` selects (every package, with its dev-dependencies through `--examples`), so
//! that Cargo resolves the same features and reuses everything that build compiled: under
//! `cargo test --workspace` only the functions' executables are linked here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fake_lambda::{FakeLambdaRuntime, env_vars, moto_env};
use crate::{AwsFixture, moto_url};

/// The workspace's Lambda function packages, each building one executable of its name.
pub const FUNCTIONS: [&str; 5] = ["dispatcher", "image-tag", "push-webhook", "relay", "settings"];

/// The executable of Lambda function `name` (one of [`FUNCTIONS`]), built as this test
/// binary was (same target directory and profile).
pub fn function_exe(name: &str) -> PathBuf {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(build_functions)
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not one of the Lambda functions {FUNCTIONS:?}"))
}

fn build_functions() -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "--workspace", "--bins", "--examples"])
        .arg("--message-format=json-render-diagnostics");
    // This test binary is `<target dir>/<profile dir>/deps/<name>`.
    let exe = std::env::current_exe().expect("the test binary's path");
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        if let Some(target_dir) = profile_dir.parent() {
            command.arg("--target-dir").arg(target_dir);
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
    }
    let output = command.output().expect("running cargo build");
    assert!(
        output.status.success(),
        "cargo build of the Lambda functions failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut built = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if let Some(path) = message["executable"].as_str()
            && message["reason"] == "compiler-artifact"
            && is_bin
            && FUNCTIONS.contains(&name)
        {
            built.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    for name in FUNCTIONS {
        assert!(built.contains_key(name), "cargo built no executable {name}");
    }
    built
}

/// A function's environment: the SDK on moto, the Lambda Runtime API of `runtime`, the table of
/// `fx`, and `vars`.
pub fn function_env(fx: &AwsFixture, runtime: &FakeLambdaRuntime, vars: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = moto_env(&moto_url());
    env.extend(runtime.env());
    env.extend(env_vars(&[("AUTODEPLOY_TABLE", &fx.table)]));
    env.extend(env_vars(vars));
    env
}
