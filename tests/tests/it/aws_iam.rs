//! Each function's AWS calls, weighed against the policy of its role in `infra/template.yaml`
//! as IAM weighs them. moto checks no permission, so a call a role does not allow passes every
//! other test and fails only on AWS. Here the API runs on DynamoDB and SQS (moto) behind
//! recording proxies, and the calls of each request are checked against the role of the
//! function that serves its route: the action (a transaction's items each as its own action),
//! the table or the index, the queue, and the conditions the template uses
//! (`dynamodb:LeadingKeys`, `dynamodb:Select`).

use std::sync::Arc;

use autodeploy_api::store::NoQueue;
use autodeploy_tests::fault_proxy::{Fault, FaultProxy, FaultyAws, action};
use autodeploy_tests::{ADMIN, Api, GITHUB_REPO, Reply, WEBHOOK_SECRET, fixture_json, provider_headers};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

/// One `Allow` statement of a role's policy, as far as this check reads it.
#[derive(Debug)]
struct Statement {
    actions: Vec<String>,
    /// `Table`, `Table/index/gsi1`, `DeploymentsQueue`, …: logical ids, as the template names
    /// them.
    resources: Vec<String>,
    /// `ForAllValues:StringLike` `dynamodb:LeadingKeys`.
    leading_keys: Option<Vec<String>>,
    /// `StringEquals` `dynamodb:Select`.
    select: Option<String>,
}

/// One action a request asks IAM for.
#[derive(Debug)]
struct Call {
    action: String,
    resource: String,
    leading_keys: Vec<String>,
    select: Option<String>,
}

fn strings(value: Option<&Yaml>) -> Vec<String> {
    match value {
        Some(Yaml::Sequence(items)) => items.iter().flat_map(|item| strings(Some(item))).collect(),
        Some(Yaml::String(s)) => vec![s.clone()],
        Some(Yaml::Tagged(tagged)) => {
            let target = tagged.value.as_str().unwrap_or_default();
            vec![if tagged.tag == "GetAtt" {
                target.trim_end_matches(".Arn").to_owned()
            } else if tagged.tag == "Sub" {
                target.replace("${Table.Arn}", "Table")
            } else {
                target.to_owned()
            }]
        }
        _ => Vec::new(),
    }
}

/// The `Allow` statements of role `role`'s inline policies.
fn role_statements(role: &str) -> Vec<Statement> {
    let template = autodeploy_tests::template();
    let policies = template
        .get("Resources")
        .and_then(|r| r.get(role))
        .and_then(|r| r.get("Properties"))
        .and_then(|p| p.get("Policies"))
        .and_then(Yaml::as_sequence)
        .unwrap_or_else(|| panic!("the template has no policies for {role}"));
    let mut statements = Vec::new();
    for policy in policies {
        let listed = policy
            .get("PolicyDocument")
            .and_then(|d| d.get("Statement"))
            .and_then(Yaml::as_sequence)
            .unwrap_or_else(|| panic!("{role}: a policy without statements"));
        for statement in listed {
            assert_eq!(statement.get("Effect").and_then(Yaml::as_str), Some("Allow"), "{role}");
            let condition = statement.get("Condition");
            let leading_keys = condition
                .and_then(|c| c.get("ForAllValues:StringLike"))
                .and_then(|c| c.get("dynamodb:LeadingKeys"))
                .map(|keys| strings(Some(keys)));
            let select = condition
                .and_then(|c| c.get("StringEquals"))
                .and_then(|c| c.get("dynamodb:Select"))
                .and_then(Yaml::as_str)
                .map(str::to_owned);
            statements.push(Statement {
                actions: strings(statement.get("Action")),
                resources: strings(statement.get("Resource")),
                leading_keys,
                select,
            });
        }
    }
    statements
}

/// IAM's `StringLike`, with the only wildcard the template uses: a trailing `*`.
fn like(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

fn allowed(statements: &[Statement], call: &Call) -> bool {
    statements.iter().any(|s| {
        s.actions.contains(&call.action)
            && s.resources.contains(&call.resource)
            // `ForAllValues`: every leading key of the request matches one of the patterns.
            && s.leading_keys.as_ref().is_none_or(|patterns| {
                call.leading_keys.iter().all(|key| patterns.iter().any(|p| like(p, key)))
            })
            && s.select.as_ref().is_none_or(|select| call.select.as_deref() == Some(select))
    })
}

/// The partition key value of an item or key (`{"pk": {"S": "ORG#acme"}, …}`).
fn pk(item: &Value) -> Vec<String> {
    item.get("pk")
        .and_then(|pk| pk["S"].as_str())
        .map(str::to_owned)
        .into_iter()
        .collect()
}

/// The partition a table query reads: the value its key condition gives `pk`.
fn queried_partition(body: &Value) -> Vec<String> {
    let names = body["ExpressionAttributeNames"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let Some(label) = names
        .iter()
        .find(|(_, name)| name.as_str() == Some("pk"))
        .map(|(label, _)| label.clone())
    else {
        return Vec::new();
    };
    let condition = body["KeyConditionExpression"].as_str().unwrap_or_default();
    let value = condition
        .split(" AND ")
        .find_map(|part| part.trim().strip_prefix(&format!("{label} = ")))
        .unwrap_or_default();
    body["ExpressionAttributeValues"][value.trim()]["S"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect()
}

/// What IAM authorizes for one recorded request: a transaction's items each as their own
/// action; a batch call of SQS as its single action; `queue` names a queue URL's logical id.
fn calls(target: &str, body: &[u8], queue: &dyn Fn(&str) -> String) -> Vec<Call> {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some((service, operation)) = target.split_once('.') else {
        return Vec::new();
    };
    let table = |action: &str, leading_keys: Vec<String>| Call {
        action: format!("dynamodb:{action}"),
        resource: "Table".to_owned(),
        leading_keys,
        select: None,
    };
    if service == "AmazonSQS" {
        return vec![Call {
            action: format!("sqs:{}", operation.trim_end_matches("Batch")),
            resource: queue(body["QueueUrl"].as_str().unwrap_or_default()),
            leading_keys: Vec::new(),
            select: None,
        }];
    }
    match operation {
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|item| {
                [
                    ("Put", "PutItem", "Item"),
                    ("Update", "UpdateItem", "Key"),
                    ("Delete", "DeleteItem", "Key"),
                    ("ConditionCheck", "ConditionCheckItem", "Key"),
                ]
                .into_iter()
                .filter_map(|(kind, action, key)| item.get(kind).map(|write| table(action, pk(&write[key]))))
                .collect::<Vec<_>>()
            })
            .collect(),
        "Query" => match body["IndexName"].as_str() {
            Some(index) => vec![Call {
                action: "dynamodb:Query".to_owned(),
                resource: format!("Table/index/{index}"),
                leading_keys: Vec::new(),
                select: body["Select"].as_str().map(str::to_owned),
            }],
            None => vec![Call {
                select: body["Select"].as_str().map(str::to_owned),
                ..table("Query", queried_partition(&body))
            }],
        },
        "PutItem" => vec![table(operation, pk(&body["Item"]))],
        _ => vec![table(operation, pk(&body["Key"]))],
    }
}

/// The requests the proxies recorded since the last look, checked against `role`; the
/// refusals, each saying what was asked and for what.
struct Recorder<'a> {
    aws: &'a FaultyAws,
    refused: Vec<String>,
}

impl Recorder<'_> {
    fn start(aws: &FaultyAws) -> Recorder<'_> {
        aws.store_proxy.record();
        aws.queue_proxy.record();
        Recorder {
            aws,
            refused: Vec::new(),
        }
    }

    /// Check what `what` called against `role`; the number of DynamoDB and SQS calls checked.
    fn check(&mut self, role: &str, what: &str) -> usize {
        let statements = role_statements(role);
        let queues = &self.aws.fixture.queues;
        let queue = |url: &str| {
            if url == queues.deployments.url {
                "DeploymentsQueue".to_owned()
            } else if url == queues.pull.url {
                "PullQueue".to_owned()
            } else {
                format!("a queue at {url}")
            }
        };
        let mut checked = 0;
        for proxy in [&self.aws.store_proxy, &self.aws.queue_proxy] {
            for (target, body) in FaultProxy::recorded(proxy) {
                for call in calls(&target, &body, &queue) {
                    checked += 1;
                    if !allowed(&statements, &call) {
                        self.refused.push(format!("{what}: {role} may not {call:?}"));
                    }
                }
            }
        }
        checked
    }
}

fn github_push(before: &str, after: &str) -> Vec<u8> {
    let mut body = fixture_json("github/gp-push.json");
    body["before"] = json!(before);
    body["after"] = json!(after);
    serde_json::to_vec(&body).unwrap()
}

fn sha(n: u32) -> String {
    format!("{n:040x}")
}

fn ok(r: &Reply, what: &str) {
    assert!(r.status.is_success(), "{what}: {} {}", r.status, r.body);
}

/// The checker itself refuses what a role does not allow: a webhook function reading an
/// organization's items, or counting without `Select: COUNT`.
#[test]
fn the_check_refuses_what_a_role_does_not_allow() {
    let push = role_statements("PushWebhookRole");
    let call = |action: &str, resource: &str, key: &str, select: Option<&str>| Call {
        action: format!("dynamodb:{action}"),
        resource: resource.to_owned(),
        leading_keys: vec![key.to_owned()],
        select: select.map(str::to_owned),
    };
    assert!(allowed(&push, &call("GetItem", "Table", "SECRET#acme", None)));
    assert!(!allowed(&push, &call("GetItem", "Table", "ORG#acme", None)));
    assert!(allowed(&push, &call("Query", "Table", "ORG#acme", Some("COUNT"))));
    assert!(!allowed(&push, &call("Query", "Table", "ORG#acme", None)));
    assert!(!allowed(&push, &call("Query", "Table/index/gsi3", "", None)));
    assert!(!allowed(&push, &call("DeleteItem", "Table", "ORG#acme", None)));
}

#[tokio::test]
async fn every_call_of_each_function_is_one_its_role_allows() {
    let aws = FaultyAws::patient().await;
    let api = Api::on(aws.store.clone(), aws.queue.clone());
    api.set_secret("acme", "github").await;
    api.set_secret("acme", "dockerhub").await;
    api.app("acme", "web", "GITHUB", GITHUB_REPO, "master", json!({})).await;
    let container = json!({"environment_id": "production", "kind": "CONTAINER", "auto_deploy": true,
        "image": {"registry": "docker.io", "image_name": "acme/api", "tag": "1.0.0"}});
    ok(&api.put_service("acme", "api", container).await, "a container service");
    let deploy_token = api.token("acme", &["deploy"]).await;
    let consume_token = api.token("acme", &["consume"]).await;
    let mut recorder = Recorder::start(&aws);

    // push-webhook: a push, the same delivery again, a replay under a new id, a dry run of
    // it, a push no service follows, a ping, a refused delivery of a known organization and
    // of an unknown one, the health check.
    let (a, b, c) = (sha(0xa), sha(0xb), sha(0xc));
    let deliveries: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("a push", github_push(&a, &b), "d-1", ""),
        ("the same delivery", github_push(&a, &b), "d-1", ""),
        ("the next push", github_push(&b, &c), "d-2", ""),
        ("a replay", github_push(&a, &b), "d-3", ""),
        ("a dry run of a replay", github_push(&a, &b), "d-4", "?dry_run=true"),
    ];
    for (what, body, delivery, query) in &deliveries {
        let headers = provider_headers("github", body, delivery);
        let r = api
            .deliver(
                &format!("/organization/acme/webhooks/github{query}"),
                &headers,
                body.clone(),
            )
            .await;
        ok(&r, what);
        assert!(recorder.check("PushWebhookRole", what) > 0, "{what}: no call recorded");
    }
    let mut ping = provider_headers("github", b"{}", "d-5");
    ping[0].1 = "ping".to_owned();
    ok(
        &api.deliver("/organization/acme/webhooks/github", &ping, b"{}".to_vec())
            .await,
        "a ping",
    );
    recorder.check("PushWebhookRole", "a ping");
    for (what, org) in [
        ("a refused delivery", "acme"),
        ("a refused delivery of nobody", "nobody"),
    ] {
        let mut headers = provider_headers("github", b"{}", "d-6");
        headers.retain(|(name, _)| name != "x-hub-signature-256");
        let r = api
            .deliver(
                &format!("/organization/{org}/webhooks/github"),
                &headers,
                b"{}".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        assert!(recorder.check("PushWebhookRole", what) > 0, "{what}: no call recorded");
    }
    // API Gateway routes `/health` to settings alone.
    ok(&api.call(Method::GET, "/health", None, None).await, "the health check");
    assert!(recorder.check("SettingsRole", "the health check") > 0);

    // image-tag: CI's call, its dry run, the same tag again, Docker Hub's webhook, a refused
    // token.
    for (what, query, tag) in [
        ("an image tag", "", "1.1.0"),
        ("its dry run", "?dry_run=true", "1.2.0"),
        ("the same tag", "", "1.1.0"),
    ] {
        let body = json!({"image_name": "acme/api", "tag": tag});
        let path = format!("/organization/acme/container/deploy{query}");
        ok(
            &api.call(Method::POST, &path, Some(&deploy_token), Some(body)).await,
            what,
        );
        assert!(recorder.check("ImageTagRole", what) > 0, "{what}: no call recorded");
    }
    let mut hub = fixture_json("registry/dockerhub-push.json");
    hub["push_data"]["tag"] = json!("1.3.0");
    let path = format!("/organization/acme/registry-webhooks/dockerhub/{WEBHOOK_SECRET}");
    ok(
        &api.deliver(&path, &[], serde_json::to_vec(&hub).unwrap()).await,
        "Docker Hub",
    );
    recorder.check("ImageTagRole", "Docker Hub");
    let body = json!({"image_name": "acme/api", "tag": "2.0.0"});
    let r = api
        .call(
            Method::POST,
            "/organization/acme/container/deploy",
            Some("adt_wrong"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    recorder.check("ImageTagRole", "a refused token");

    // The relay: a push while SQS is down leaves its deployment PENDING; the relay sends it.
    aws.queue_proxy
        .set(Fault::unavailable().only(action::SEND_MESSAGE_BATCH));
    let pending = github_push(&c, &sha(0xd));
    let r = api
        .deliver(
            "/organization/acme/webhooks/github",
            &provider_headers("github", &pending, "d-7"),
            pending.clone(),
        )
        .await;
    ok(&r, "a push while SQS is down");
    recorder.check("PushWebhookRole", "a push while SQS is down");
    aws.queue_proxy.pass_through();
    assert_eq!(aws.relay().await.sent, 1);
    assert!(recorder.check("RelayRole", "the relay") > 0);

    // settings: each kind of resource, the lists, an engine's report, a redeploy.
    let deployment = api.deployments("acme").await[0]["deployment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    recorder.check("SettingsRole", "listing deployments");
    let one = format!("/organization/acme/deployments/{deployment}");
    let report = format!("{one}/result");
    let redeploy = format!("{one}/redeploy");
    let target = json!({"type": "WEBHOOK", "url": "https://deploy.example.com/hook"});
    for (what, method, path, body) in [
        ("a target", Method::PUT, "/organization/acme/targets/hook", Some(target)),
        ("the targets", Method::GET, "/organization/acme/targets", None),
        ("a service", Method::GET, "/organization/acme/services/web", None),
        ("the services", Method::GET, "/organization/acme/services", None),
        (
            "a secret's state",
            Method::GET,
            "/organization/acme/webhook-secrets/github",
            None,
        ),
        ("the deliveries", Method::GET, "/organization/acme/deliveries", None),
        ("the tokens", Method::GET, "/organization/acme/tokens", None),
        (
            "a service's deployments",
            Method::GET,
            "/organization/acme/deployments?service_id=web",
            None,
        ),
        ("a deployment", Method::GET, one.as_str(), None),
        (
            "a report",
            Method::POST,
            report.as_str(),
            Some(json!({"status": "SUCCEEDED"})),
        ),
        (
            "a service deleted",
            Method::DELETE,
            "/organization/acme/services/api",
            None,
        ),
        (
            "a target deleted",
            Method::DELETE,
            "/organization/acme/targets/hook",
            None,
        ),
    ] {
        let token = if what == "a report" {
            consume_token.as_str()
        } else {
            ADMIN
        };
        ok(&api.call(method, path, Some(token), body).await, what);
        assert!(recorder.check("SettingsRole", what) > 0, "{what}: no call recorded");
    }
    api.set_secret_to("acme", "gitlab", "a-gitlab-token-long-enough-to-be-one")
        .await;
    assert!(recorder.check("SettingsRole", "a secret set") > 0);

    // The reported deployment made again, through the settings function as it is deployed,
    // without a queue: recorded PENDING, then sent by the relay.
    let settings = Api::on(aws.store.clone(), Arc::new(NoQueue));
    let r = settings.call(Method::POST, &redeploy, Some(ADMIN), None).await;
    ok(&r, "a redeploy");
    assert_eq!(r.body["status"], "PENDING", "{}", r.body);
    assert!(recorder.check("SettingsRole", "a redeploy") > 0);
    assert_eq!(aws.relay().await.sent, 1);
    assert!(recorder.check("RelayRole", "the relay of a redeploy") > 0);

    assert!(recorder.refused.is_empty(), "{:#?}", recorder.refused);
}

/// The dispatcher function's calls, through a batch with a delivery, a retry (a 503), a
/// failure (a 410) and a deployment forwarded to the pull queue, then the retry delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_dispatcher_is_one_its_role_allows() {
    use crate::aws_dispatcher::{dispatcher_on, next_batch, put_service, record, send, service_on_receiver};
    let aws = FaultyAws::patient().await;
    let fx = &aws.fixture;
    let store: &dyn autodeploy_api::store::Store = aws.store.as_ref();
    let _busy = service_on_receiver(store, "api", &[503, 202]).await;
    let _gone = service_on_receiver(store, "old", &[410]).await;
    let _fine = service_on_receiver(store, "web", &[202]).await;
    put_service(store, "cli", None).await;
    let mut requests = Vec::new();
    for service in ["api", "old", "web", "cli"] {
        requests.push(record(store, service, "a..b").await);
    }
    send(fx, &requests.iter().collect::<Vec<_>>()).await;
    let dispatcher = dispatcher_on(fx, aws.store.clone(), aws.queue_proxy.sqs_client().await);
    let mut recorder = Recorder::start(&aws);
    for round in ["a batch", "the retry"] {
        let (event, _) = next_batch(fx).await;
        let (_, tally) = dispatcher.handle(event, None).await;
        assert!(recorder.check("DispatcherRole", round) > 0, "{round}: {tally:?}");
        if round == "a batch" {
            assert_eq!(
                (tally.delivered, tally.retried, tally.failed, tally.forwarded),
                (1, 1, 1, 1)
            );
        } else {
            assert_eq!(tally.delivered, 1, "{tally:?}");
        }
    }
    assert!(recorder.refused.is_empty(), "{:#?}", recorder.refused);
}
