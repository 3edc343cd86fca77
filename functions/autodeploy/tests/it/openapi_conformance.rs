//! The OpenAPI document against the real server: `tests/openapi_conformance.py` (run by the
//! test virtualenv's python, which has `requests`, `jsonschema`, `referencing` and PyYAML)
//! drives every operation of `infra/openapi.yaml` through the `autodeploy` binary, its success
//! and error cases, and checks each answer (status, body schema, headers, content type, error
//! code) against what the document says of that operation.

use std::process::Command;

/// The test virtualenv's python (`scripts/test` exports `AUTODEPLOY_TEST_VENV`); `None`
/// outside the suite's runner.
fn python() -> Option<String> {
    let venv = std::env::var("AUTODEPLOY_TEST_VENV").ok()?;
    Some(format!("{venv}/bin/python"))
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let Some(python) = python() else {
        eprintln!("AUTODEPLOY_TEST_VENV is not set: run through ./scripts/test");
        return;
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(&python)
        .arg(format!("{root}/tests/openapi_conformance.py"))
        .arg(env!("CARGO_BIN_EXE_autodeploy"))
        .arg(root)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        out.status.success(),
        "the server's answers differ from infra/openapi.yaml ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
