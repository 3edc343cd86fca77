//! The `settings` binary as Lambda runs it: API Gateway requests from the Lambda Runtime API
//! (a stand-in), state on moto, and no queue: its routes send no deployments.

use autodeploy_tests::aws_fixture;
use autodeploy_tests::fake_lambda::{
    FakeLambdaRuntime, FunctionProcess, http_api_event, response_body, start_up_failure,
};
use autodeploy_tests::functions::{function_env, function_exe};
use serde_json::json;
use std::path::PathBuf;

/// The function's executable.
fn exe() -> PathBuf {
    function_exe("settings")
}
const ADMIN: &str = "settings-admin-token-0123456789";

#[tokio::test]
async fn without_its_table_it_stops_naming_the_variable() {
    let logs = start_up_failure(exe(), &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)]).await;
    assert!(logs.contains("AUTODEPLOY_TABLE"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_settings_api_with_no_queue_configured() {
    let fx = aws_fixture().await;
    let runtime = FakeLambdaRuntime::start().await;
    // No AUTODEPLOY_QUEUE_URL.
    let vars = function_env(&fx, &runtime, &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN)]);
    let function = FunctionProcess::spawn(exe(), &vars);
    let auth = format!("Token {ADMIN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];

    let service = json!({
        "environment_id": "production", "kind": "APPLICATION", "auto_deploy": true,
        "git_repository": {"provider": "GITHUB", "url": "https://github.com/acme/api.git", "branch": "main"},
    });
    let body = serde_json::to_vec(&service).unwrap();
    let put = http_api_event("PUT", "/organization/acme/services/api", &headers, Some(&body), false);
    let created = runtime.invoke(put).await.response();
    assert_eq!(created["statusCode"], 201, "{created}\n{}", function.logs());

    let get = http_api_event("GET", "/organization/acme/services/api", &headers, None, false);
    let read = runtime.invoke(get).await.response();
    assert_eq!(read["statusCode"], 200, "{read}");
    assert_eq!(response_body(&read)["git_repository"]["branch"], "main", "{read}");

    let log = http_api_event("GET", "/organization/acme/deployments", &headers, None, false);
    let listed = runtime.invoke(log).await.response();
    assert_eq!(listed["statusCode"], 200, "{listed}");
    assert!(runtime.init_errors().is_empty(), "{:?}", runtime.init_errors());
}

/// SPEC "Bounded tenants" on AWS: the function takes `AUTODEPLOY_MAX_SERVICES`, and refuses a
/// service past it as the standalone server does; a value that is no limit stops it at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_an_organization_to_autodeploy_max_services() {
    let logs = start_up_failure(
        exe(),
        &[
            ("AUTODEPLOY_ADMIN_TOKEN", ADMIN),
            ("AUTODEPLOY_TABLE", "unused"),
            ("AUTODEPLOY_MAX_SERVICES", "0"),
        ],
    )
    .await;
    assert!(logs.contains("AUTODEPLOY_MAX_SERVICES"), "{logs}");

    let fx = aws_fixture().await;
    let runtime = FakeLambdaRuntime::start().await;
    let vars = function_env(
        &fx,
        &runtime,
        &[("AUTODEPLOY_ADMIN_TOKEN", ADMIN), ("AUTODEPLOY_MAX_SERVICES", "2")],
    );
    let function = FunctionProcess::spawn(exe(), &vars);
    let auth = format!("Token {ADMIN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let put = |id: &str, repository: &str| {
        let service = json!({
            "environment_id": "production", "kind": "APPLICATION",
            "git_repository": {"provider": "GITHUB", "url": format!("https://github.com/acme/{repository}"), "branch": "main"},
        });
        let body = serde_json::to_vec(&service).unwrap();
        http_api_event(
            "PUT",
            &format!("/organization/acme/services/{id}"),
            &headers,
            Some(&body),
            false,
        )
    };
    for id in ["one", "two"] {
        let created = runtime.invoke(put(id, id)).await.response();
        assert_eq!(created["statusCode"], 201, "{created}\n{}", function.logs());
    }
    let refused = runtime.invoke(put("three", "three")).await.response();
    assert_eq!(refused["statusCode"], 400, "{refused}");
    let body = response_body(&refused);
    assert_eq!(body["error"]["details"][0]["field"], "service", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AUTODEPLOY_MAX_SERVICES"),
        "{body}"
    );
    // Replacing one of the two is no new service.
    let replaced = runtime.invoke(put("two", "other")).await.response();
    assert_eq!(replaced["statusCode"], 200, "{replaced}");
}

/// Run by hand after an upgrade from the first release (infra/README.md), `settings
/// upgrade-table` moves the table named by `AUTODEPLOY_TABLE` to this release's layout and says
/// what it did.
#[tokio::test]
async fn upgrade_table_moves_a_first_release_table() {
    let fx = aws_fixture().await;
    let api = autodeploy_tests::Api::on(
        std::sync::Arc::new(fx.store.clone()),
        std::sync::Arc::new(fx.queue.clone()),
    );
    api.set_secret("acme", "github").await;
    crate::aws_upgrade::move_raw(&fx.dynamo, &fx.table, ("SECRET#acme", "SECRET#github"), "ORG#acme").await;
    let mut command = std::process::Command::new(exe());
    command
        .arg("upgrade-table")
        .env_clear()
        .envs(autodeploy_tests::fake_lambda::moto_env(&autodeploy_tests::moto_url()))
        .env("AUTODEPLOY_TABLE", &fx.table);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("moved 1 webhook secrets and 0 tokens"), "{said}");
    let store: &dyn autodeploy_api::store::Store = &fx.store;
    assert!(store.get_secret("acme", "github").await.unwrap().is_some());
}
