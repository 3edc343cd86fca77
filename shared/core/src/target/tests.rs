use serde_json::{Value, json};

use super::signature::{GENERATED_SECRET_BYTES, secret_key};
use super::*;
use crate::body::{DocumentError, read_document};

const RANDOM: [u8; GENERATED_SECRET_BYTES] = [42; GENERATED_SECRET_BYTES];
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";

fn context(previous: Option<&TargetSpec>) -> ResolveContext<'_> {
    ResolveContext {
        organization_id: "acme",
        target_id: "prod",
        allow_private: false,
        previous,
        random: &RANDOM,
    }
}

fn read(body: Value) -> Result<TargetDocument, Vec<(String, String)>> {
    read_document::<TargetDocument>(&body).map_err(|e| match e {
        DocumentError::Invalid(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
        DocumentError::NotAnObject(m) => vec![(String::new(), m)],
    })
}

fn resolve(body: Value, previous: Option<&TargetSpec>) -> Result<ResolvedTarget, Vec<(String, String)>> {
    let document = read(body)?;
    document
        .resolve(&context(previous))
        .map_err(|errors| errors.into_iter().map(|e| (e.field, e.message)).collect())
}

fn fields_of(errors: Vec<(String, String)>) -> Vec<String> {
    let mut fields: Vec<String> = errors.into_iter().map(|(f, _)| f).collect();
    fields.sort();
    fields
}

#[test]
fn a_webhook_with_a_secret() {
    let resolved = resolve(
        json!({"type": "WEBHOOK", "url": "https://Deploy.example.com/hooks", "secret": SECRET}),
        None,
    )
    .unwrap();
    assert_eq!(
        resolved.spec,
        Target::Webhook {
            url: "https://deploy.example.com/hooks".to_owned(),
            secret: Secret::new(SECRET),
        }
    );
    assert!(!resolved.generated_secret);
    // The answer does not repeat a secret the caller sent.
    assert_eq!(
        serde_json::to_value(resolved.view()).unwrap(),
        json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hooks", "secret_set": true})
    );
}

#[test]
fn a_webhook_without_a_secret_gets_one_shown_once() {
    let resolved = resolve(json!({"type": "WEBHOOK", "url": "https://deploy.example.com/"}), None).unwrap();
    assert!(resolved.generated_secret);
    let Target::Webhook { secret, .. } = &resolved.spec else {
        panic!("{:?}", resolved.spec)
    };
    assert_eq!(secret_key(secret.expose()).unwrap(), RANDOM.to_vec());
    let answer = serde_json::to_value(resolved.view()).unwrap();
    assert_eq!(answer["secret"], secret.expose());
    assert_eq!(answer["secret_set"], true);
    // GET never shows it.
    let shown = serde_json::to_value(resolved.spec.view()).unwrap();
    assert_eq!(
        shown,
        json!({"type": "WEBHOOK", "url": "https://deploy.example.com/", "secret_set": true})
    );
}

#[test]
fn replacing_a_webhook_keeps_or_rotates_its_secret() {
    let previous = Target::Webhook {
        url: "https://old.example.com/".to_owned(),
        secret: Secret::new(SECRET),
    };
    let kept = resolve(
        json!({"type": "WEBHOOK", "url": "https://old.example.com/", "secret_set": true}),
        Some(&previous),
    )
    .unwrap();
    assert!(!kept.generated_secret);
    assert_eq!(kept.spec, previous);
    let rotated_secret = signature::webhook_secret_from(&[1; 40]);
    let rotated = resolve(
        json!({"type": "WEBHOOK", "url": "https://new.example.com/", "secret": rotated_secret}),
        Some(&previous),
    )
    .unwrap();
    assert_eq!(
        rotated.spec,
        Target::Webhook {
            url: "https://new.example.com/".to_owned(),
            secret: Secret::new(rotated_secret),
        }
    );
    // A target of another type had no secret to keep: one is generated.
    let qovery = Target::Qovery {
        token: Secret::new("qov_1"),
        api_url: DEFAULT_QOVERY_API_URL.to_owned(),
    };
    let replaced = resolve(
        json!({"type": "WEBHOOK", "url": "https://new.example.com/"}),
        Some(&qovery),
    )
    .unwrap();
    assert!(replaced.generated_secret);
}

#[test]
fn qovery_defaults_and_keeps_its_token() {
    let resolved = resolve(json!({"type": "QOVERY", "token": "qov_abc.DEF-123"}), None).unwrap();
    assert_eq!(
        resolved.spec,
        Target::Qovery {
            token: Secret::new("qov_abc.DEF-123"),
            api_url: "https://api.qovery.com".to_owned(),
        }
    );
    assert_eq!(
        serde_json::to_value(resolved.view()).unwrap(),
        json!({"type": "QOVERY", "api_url": "https://api.qovery.com", "token_set": true})
    );
    // Without a token: required on create, kept on replace (a GET → PUT round trip).
    assert_eq!(
        resolve(json!({"type": "QOVERY"}), None).unwrap_err(),
        vec![("token".to_owned(), "is required".to_owned())]
    );
    let round_trip = json!({"id": "prod", "organization_id": "acme", "type": "QOVERY",
        "api_url": "https://api.qovery.com", "token_set": true,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    assert_eq!(resolve(round_trip, Some(&resolved.spec)).unwrap().spec, resolved.spec);
    // A GitHub token is not a Qovery token.
    let github = Target::GithubActions {
        token: Secret::new("github_pat_1"),
        repository: "acme/deploy".to_owned(),
        workflow: "deploy.yml".to_owned(),
        git_ref: "main".to_owned(),
        api_url: DEFAULT_GITHUB_API_URL.to_owned(),
    };
    assert_eq!(
        fields_of(resolve(json!({"type": "QOVERY"}), Some(&github)).unwrap_err()),
        vec!["token"]
    );
}

#[test]
fn github_actions() {
    let resolved = resolve(
        json!({"type": "GITHUB_ACTIONS", "token": "github_pat_11AAA", "repository": "acme/deploy",
               "workflow": "deploy.yml", "ref": "main", "api_url": "https://ghe.example.com/api/v3/"}),
        None,
    )
    .unwrap();
    assert_eq!(
        resolved.spec,
        Target::GithubActions {
            token: Secret::new("github_pat_11AAA"),
            repository: "acme/deploy".to_owned(),
            workflow: "deploy.yml".to_owned(),
            git_ref: "main".to_owned(),
            api_url: "https://ghe.example.com/api/v3".to_owned(),
        }
    );
    assert_eq!(
        serde_json::to_value(resolved.view()).unwrap(),
        json!({"type": "GITHUB_ACTIONS", "repository": "acme/deploy", "workflow": "deploy.yml",
               "ref": "main", "api_url": "https://ghe.example.com/api/v3", "token_set": true})
    );
    let numeric = resolve(
        json!({"type": "GITHUB_ACTIONS", "token": "t", "repository": "a-b/c.d_e",
               "workflow": "161335", "ref": "refs/tags/v1.2"}),
        None,
    )
    .unwrap();
    assert!(matches!(numeric.spec, Target::GithubActions { ref api_url, .. } if api_url == DEFAULT_GITHUB_API_URL));
}

#[test]
fn bad_github_fields_are_each_named() {
    let errors = resolve(
        json!({"type": "GITHUB_ACTIONS", "token": "has space", "repository": "https://github.com/acme/deploy",
               "workflow": "deploy", "ref": "main..x", "api_url": "https://api.github.com/?x=1"}),
        None,
    )
    .unwrap_err();
    assert_eq!(
        fields_of(errors),
        vec!["api_url", "ref", "repository", "token", "workflow"]
    );
    let cases: [(Check, &[(&str, bool)]); 3] = [
        (
            check_repository,
            &[
                ("acme/shop", true),
                ("a/.github", true),
                ("acme", false),
                ("acme/shop/x", false),
                ("-acme/shop", false),
                ("acme/..", false),
                ("acme/", false),
                ("/shop", false),
                ("ac me/shop", false),
            ],
        ),
        (
            check_workflow,
            &[
                ("deploy.yml", true),
                ("Deploy Prod.yaml", true),
                ("1", true),
                (".yml", false),
                ("deploy", false),
                ("ci/deploy.yml", false),
                ("12345678901234567890", false),
                ("-1", false),
            ],
        ),
        (
            check_ref,
            &[
                ("main", true),
                ("release/1.x", true),
                ("v1.2.3", true),
                ("refs/heads/main", true),
                ("", false),
                ("a b", false),
                ("release/*", false),
                ("x..y", false),
                ("x.lock", false),
            ],
        ),
    ];
    for (check, values) in cases {
        for (value, ok) in values {
            assert_eq!(check(value).is_ok(), *ok, "{value}");
        }
    }
}

#[test]
fn urls_follow_the_operators_policy() {
    let errors = resolve(json!({"type": "WEBHOOK", "url": "http://deploy.example.com/"}), None).unwrap_err();
    assert_eq!(errors[0].0, "url");
    assert!(errors[0].1.starts_with("must use https"), "{}", errors[0].1);
    assert!(
        errors[0].1.contains("AUTODEPLOY_TARGETS_ALLOW_PRIVATE=true"),
        "{}",
        errors[0].1
    );
    for url in [
        "https://localhost:8443/",
        "https://169.254.169.254/latest",
        "https://[::1]/",
        "https://10.0.0.8/",
    ] {
        let errors = resolve(json!({"type": "WEBHOOK", "url": url}), None).unwrap_err();
        assert_eq!(errors.len(), 1, "{url}");
        assert!(
            errors[0].1.starts_with("must not point to a loopback, private"),
            "{url}"
        );
    }
    let errors = resolve(
        json!({"type": "QOVERY", "token": "t", "api_url": "https://127.0.0.1"}),
        None,
    )
    .unwrap_err();
    assert_eq!(fields_of(errors), vec!["api_url"]);

    // Allowed by the operator.
    let document = read(json!({"type": "WEBHOOK", "url": "http://127.0.0.1:9000/hook"})).unwrap();
    let allowed = ResolveContext {
        allow_private: true,
        ..context(None)
    };
    let resolved = document.resolve(&allowed).unwrap();
    assert!(matches!(resolved.spec, Target::Webhook { ref url, .. } if url == "http://127.0.0.1:9000/hook"));
    // Never credentials or another scheme, allowed or not.
    let errors = read(json!({"type": "WEBHOOK", "url": "https://u:p@deploy.example.com/"})).unwrap_err();
    assert_eq!(fields_of(errors), vec!["url"]);
    let errors = read(json!({"type": "QOVERY", "token": "t", "api_url": "ftp://api.qovery.com"})).unwrap_err();
    assert_eq!(fields_of(errors), vec!["api_url"]);
}

#[test]
fn foreign_fields_are_named() {
    // A field of another type is foreign here.
    let errors =
        read(json!({"type": "WEBHOOK", "url": "https://x.example.com/", "token": "t", "ref": "main"})).unwrap_err();
    assert_eq!(fields_of(errors), vec!["ref", "token"]);
    let errors = read(json!({"type": "QOVERY", "token": "t", "secret_set": true, "extra": {"a": 1}})).unwrap_err();
    assert_eq!(fields_of(errors), vec!["extra", "secret_set"]);
    // A bad type is named alone, not followed by every other field.
    let errors = read(json!({"type": "JENKINS", "url": "https://x.example.com/", "nonsense": 1})).unwrap_err();
    assert_eq!(fields_of(errors.clone()), vec!["nonsense", "type"]);
    assert!(
        errors
            .iter()
            .any(|(f, m)| f == "type" && m == "must be one of WEBHOOK, QOVERY, GITHUB_ACTIONS"),
        "{errors:?}"
    );
    assert_eq!(
        fields_of(read(json!({"url": "https://x.example.com/"})).unwrap_err()),
        vec!["type"]
    );
    assert!(matches!(
        read_document::<TargetDocument>(&json!("WEBHOOK")),
        Err(DocumentError::NotAnObject(m)) if m.contains("\"type\"")
    ));
}

#[test]
fn the_path_wins() {
    let errors = resolve(
        json!({"id": "other", "organization_id": "evil", "type": "WEBHOOK", "url": "https://x.example.com/"}),
        None,
    )
    .unwrap_err();
    assert_eq!(fields_of(errors), vec!["id", "organization_id"]);
    assert!(
        resolve(
            json!({"id": "prod", "organization_id": "acme", "type": "WEBHOOK", "url": "https://x.example.com/"}),
            None
        )
        .is_ok()
    );
}

#[test]
fn secrets_and_tokens_are_checked_and_never_repeated() {
    let bad_secret = "whsec_c2hvcnQ="; // 5 bytes
    let errors = read(json!({"type": "WEBHOOK", "url": "https://x.example.com/", "secret": bad_secret})).unwrap_err();
    assert_eq!(errors, vec![("secret".to_owned(), signature::SECRET_RULE.to_owned())]);
    let long = "t".repeat(MAX_TOKEN + 1);
    for token in [json!(""), json!(long), json!("Bearer abc"), json!("tök"), json!(12345)] {
        let errors = read(json!({"type": "QOVERY", "token": token.clone()})).unwrap_err();
        assert_eq!(fields_of(errors.clone()), vec!["token"], "{token}");
        let message = &errors[0].1;
        assert!(!message.contains("abc") && !message.contains("12345"), "{message}");
        assert!(
            message.starts_with(char::is_lowercase) && !message.ends_with('.'),
            "{message}"
        );
    }
    // A secret sent where a string belongs in another type of field is not repeated either.
    let errors =
        read(json!({"type": "WEBHOOK", "url": "https://x.example.com/", "secret": {"v": SECRET}})).unwrap_err();
    assert!(!errors[0].1.contains("MfKQ9r8"), "{errors:?}");
}

#[test]
fn debug_never_shows_a_secret() {
    let spec = Target::Webhook {
        url: "https://x.example.com/".to_owned(),
        secret: Secret::new(SECRET),
    };
    let resolved = ResolvedTarget {
        spec: spec.clone(),
        generated_secret: true,
    };
    for shown in [
        format!("{spec:?}"),
        format!("{resolved:?}"),
        format!("{:?}", resolved.view()),
        format!(
            "{:?}",
            read(json!({"type": "QOVERY", "token": "qov_SECRETVALUE"})).unwrap()
        ),
    ] {
        assert!(!shown.contains("MfKQ9r8") && !shown.contains("SECRETVALUE"), "{shown}");
    }
}

#[test]
fn stored_targets_round_trip() {
    let spec = Target::GithubActions {
        token: Secret::new("github_pat_1"),
        repository: "acme/deploy".to_owned(),
        workflow: "deploy.yml".to_owned(),
        git_ref: "main".to_owned(),
        api_url: DEFAULT_GITHUB_API_URL.to_owned(),
    };
    let stored = serde_json::to_value(&spec).unwrap();
    assert_eq!(stored["type"], "GITHUB_ACTIONS");
    assert_eq!(stored["ref"], "main");
    assert_eq!(stored["token"], "github_pat_1");
    assert_eq!(serde_json::from_value::<TargetSpec>(stored).unwrap(), spec);
}

#[test]
fn external_ids() {
    assert!(check_external_id("7c5e8a9b-1b2c-4d3e-8f90-a1b2c3d4e5f6").is_ok());
    assert!(check_external_id("any text, even / and spaces").is_ok());
    assert!(check_external_id("").is_err());
    assert!(check_external_id(&"x".repeat(MAX_EXTERNAL_ID + 1)).is_err());
    assert!(check_external_id("a\nb").is_err());
    assert!(TargetType::Qovery.requires_external_id());
    assert!(!TargetType::Webhook.requires_external_id());
    assert!(!TargetType::GithubActions.requires_external_id());
}

/// A kept token never follows the target to a new address: a PUT that changes where the
/// requests go (any part of the URL the token is sent to) must give it again. A webhook's
/// secret, never sent, is kept.
#[test]
fn a_kept_token_never_follows_a_new_address() {
    let refused = |body: Value, previous: &TargetSpec| resolve(body, Some(previous)).unwrap_err();
    let qovery = Target::Qovery {
        token: Secret::new("qov_kept"),
        api_url: "https://qovery.example.com".to_owned(),
    };
    for api_url in [
        "https://evil.example.com",
        "https://qovery.example.com:8443",
        "https://qovery.example.com/other",
    ] {
        assert_eq!(
            refused(json!({"type": "QOVERY", "api_url": api_url}), &qovery),
            vec![(
                "token".to_owned(),
                "is required when api_url changes: a kept token never follows the target to a new address (send it again, or a new one)"
                    .to_owned()
            )],
            "{api_url}"
        );
    }
    // Left out, the api_url is the default: a new address too.
    assert_eq!(fields_of(refused(json!({"type": "QOVERY"}), &qovery)), vec!["token"]);
    // The same address, written differently (stored normalized): kept.
    let same = resolve(
        json!({"type": "QOVERY", "api_url": "https://QOVERY.example.com:443/"}),
        Some(&qovery),
    )
    .unwrap();
    assert_eq!(same.spec, qovery);
    // Given again, or a new one: moved.
    let moved = resolve(
        json!({"type": "QOVERY", "api_url": "https://evil.example.com", "token": "qov_new"}),
        Some(&qovery),
    )
    .unwrap();
    assert_eq!(
        moved.spec,
        Target::Qovery {
            token: Secret::new("qov_new"),
            api_url: "https://evil.example.com".to_owned(),
        }
    );

    let github = Target::GithubActions {
        token: Secret::new("github_pat_kept"),
        repository: "acme/deploy".to_owned(),
        workflow: "deploy.yml".to_owned(),
        git_ref: "main".to_owned(),
        api_url: DEFAULT_GITHUB_API_URL.to_owned(),
    };
    let actions = |field: &str, value: &str| {
        let mut body = json!({"type": "GITHUB_ACTIONS", "repository": "acme/deploy", "workflow": "deploy.yml",
            "ref": "main", "api_url": DEFAULT_GITHUB_API_URL});
        body[field] = json!(value);
        body
    };
    for (field, value) in [
        ("api_url", "https://ghe.example.com/api/v3"),
        ("repository", "mallory/deploy"),
        ("workflow", "other.yml"),
    ] {
        let errors = refused(actions(field, value), &github);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "token");
        assert!(
            errors[0].1.starts_with(&format!("is required when {field} changes")),
            "{errors:?}"
        );
    }
    // The ref is in the body, not the address: the token is kept.
    let new_ref = resolve(actions("ref", "release"), Some(&github)).unwrap();
    assert!(
        matches!(new_ref.spec, Target::GithubActions { ref token, ref git_ref, .. }
        if token.expose() == "github_pat_kept" && git_ref == "release")
    );

    // A webhook's secret is never sent, only what it signs: a PUT without it keeps it, at a
    // new url too (SPEC: "a PUT that replaces a WEBHOOK target without secret keeps its
    // secret"); one given rotates it.
    let webhook = Target::Webhook {
        url: "https://deploy.example.com/hook".to_owned(),
        secret: Secret::new(SECRET),
    };
    for url in [
        "https://deploy.example.com/hook",
        "https://new.example.com/hook",
        "https://deploy.example.com/hook?to=other",
    ] {
        let kept = resolve(json!({"type": "WEBHOOK", "url": url}), Some(&webhook)).unwrap();
        assert!(!kept.generated_secret, "{url}");
        assert_eq!(
            kept.spec,
            Target::Webhook {
                url: url.to_owned(),
                secret: Secret::new(SECRET)
            },
            "{url}"
        );
    }
    let rotated = resolve(
        json!({"type": "WEBHOOK", "url": "https://new.example.com/hook", "secret": OTHER_SECRET}),
        Some(&webhook),
    )
    .unwrap();
    assert!(!rotated.generated_secret);
    assert!(matches!(rotated.spec, Target::Webhook { ref secret, .. } if secret.expose() == OTHER_SECRET));
    // Other problems are named beside a token's.
    assert_eq!(
        fields_of(refused(json!({"id": "other", "type": "QOVERY"}), &qovery)),
        vec!["id", "token"]
    );
}

#[test]
fn a_qovery_target_takes_one_id_as_external_id() {
    let qovery = |id: Option<&str>| TargetType::Qovery.accepts_external_id(id);
    for id in [
        QOVERY_ID_EXAMPLE,
        "0F8B8C1E-4D2A-4B7F-9A6E-3C2D1B0A9F8E",
        "app-1",
        "api_prod.2",
    ] {
        assert!(qovery(Some(id)), "{id}");
    }
    for id in [
        "<the Qovery service id>",
        "my service",
        "acme/api",
        "id?x",
        "",
        ".",
        "..",
    ] {
        assert!(!qovery(Some(id)), "{id}");
    }
    assert!(!qovery(None));
    for kind in [TargetType::Webhook, TargetType::GithubActions] {
        for id in [None, Some("<anything at all>"), Some("a/b")] {
            assert!(kind.accepts_external_id(id), "{kind:?} {id:?}");
        }
    }
}
