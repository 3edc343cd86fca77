//! A stack upgraded from the first release: its table, in the first release's layout (webhook
//! secrets and tokens in the organization's partition, no service counts), moved by
//! `DynamoStore::upgrade_first_release_layout` (what `settings upgrade-table` runs), then used
//! through the API on DynamoDB (moto): deliveries verified with the old secret, the old token
//! listed and revoked, the services counted against the organization's limit.

use std::sync::Arc;

use autodeploy_api::store::TenantLimits;
use autodeploy_tests::{ADMIN, Api, GITHUB_REPO, aws_fixture, fixture, provider_headers};
use aws_sdk_dynamodb::types::AttributeValue;
use http::{Method, StatusCode};
use serde_json::json;

/// Move the item at (`pk`, `sk`) to partition `to`, as the first release kept it.
pub(crate) async fn move_raw(client: &aws_sdk_dynamodb::Client, table: &str, (pk, sk): (&str, &str), to: &str) {
    let key = [("pk", pk), ("sk", sk)].map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())));
    let item = client
        .get_item()
        .table_name(table)
        .set_key(Some(key.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no item at {pk} {sk}"));
    let mut moved = item.clone();
    moved.insert("pk".to_owned(), AttributeValue::S(to.to_owned()));
    client
        .put_item()
        .table_name(table)
        .set_item(Some(moved))
        .send()
        .await
        .unwrap();
    delete_raw(client, table, pk, sk).await;
}

async fn delete_raw(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str, sk: &str) {
    let key = [("pk", pk), ("sk", sk)].map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())));
    client
        .delete_item()
        .table_name(table)
        .set_key(Some(key.into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_first_release_table_is_moved_to_this_releases_layout() {
    let fx = aws_fixture().await;
    let limits = TenantLimits {
        services: 2,
        ..TenantLimits::default()
    };
    let api =
        Api::on(Arc::new(fx.store.clone()), Arc::new(fx.queue.clone())).reconfigured(|state| state.with_limits(limits));
    api.set_secret("acme", "github").await;
    api.app("acme", "web", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    api.app("acme", "api", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let (token, token_id) = api.token_and_id("acme", &["manage"]).await;

    // The first release's layout: the secret and the token in the organization's partition,
    // no service counts.
    let (client, table) = (&fx.dynamo, fx.table.as_str());
    move_raw(client, table, ("SECRET#acme", "SECRET#github"), "ORG#acme").await;
    move_raw(client, table, ("TOKEN#acme", &format!("TOKEN#{token_id}")), "ORG#acme").await;
    let repository_counters: Vec<String> = fx
        .dynamo
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter_map(|item| item.get("pk")?.as_s().ok().cloned())
        .filter(|pk| pk.starts_with("COUNT#"))
        .collect();
    assert_eq!(repository_counters.len(), 2, "{repository_counters:?}");
    for counter in &repository_counters {
        delete_raw(client, table, counter, "SERVICES").await;
    }
    // As an upgraded stack is before the upgrade: no secret found, no token listed.
    let push = fixture("github/gp-push.json");
    let refused = api.push("acme", "github", &push, "before").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);

    let upgraded = fx.store.upgrade_first_release_layout().await.unwrap();
    assert_eq!((upgraded.secrets, upgraded.tokens, upgraded.kept_newer), (1, 1, 0));
    assert_eq!(upgraded.counts, 2, "the organization's and its repository's");

    let accepted = api.push("acme", "github", &push, "after").await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let listed = api
        .call(Method::GET, "/organization/acme/tokens", Some(ADMIN), None)
        .await;
    assert_eq!(listed.body["items"][0]["id"], token_id.as_str(), "{}", listed.body);
    // At the limit of 2 services, counted from those there are.
    let third = json!({"environment_id": "production", "kind": "APPLICATION",
        "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "main"}});
    let r = api.put_service("acme", "third", third).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // The old token is revoked for good.
    let path = format!("/organization/acme/tokens/{token_id}");
    assert_eq!(
        api.call(Method::DELETE, &path, Some(ADMIN), None).await.status,
        StatusCode::NO_CONTENT
    );
    let r = api
        .call(Method::GET, "/organization/acme/services", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // Again: nothing left to move, the same counts.
    let again = fx.store.upgrade_first_release_layout().await.unwrap();
    assert_eq!((again.secrets, again.tokens, again.counts), (0, 0, 2));
    let r = api
        .put_service(
            "acme",
            "third",
            json!({"environment_id": "production", "kind": "APPLICATION",
        "git_repository": {"provider": "GITHUB", "url": GITHUB_REPO, "branch": "main"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "still at the limit: {}", r.body);
    let headers = provider_headers("github", &push, "again");
    let r = api
        .deliver("/organization/acme/webhooks/github", &headers, push.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "the same push again: {}", r.body);
}
