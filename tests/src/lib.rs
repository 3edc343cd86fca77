//! Test harness shared by the integration tests: a fresh SQLite store on a temporary file, and
//! a fresh DynamoDB table and SQS queues on the moto server that `./scripts/test` starts,
//! created from the very definitions in `infra/template.yaml` and reached through the real
//! AWS SDK.
//!
//! AWS tests never skip themselves: without `AUTODEPLOY_TEST_MOTO_URL` they fail, saying how
//! to run them.

pub mod api;
pub mod fake_lambda;
pub mod fault_proxy;
pub mod functions;
pub mod latency_stub;
pub mod webhooks;

pub use api::{
    ADMIN, Api, Entries, OnStore, Reply, TestStore, assert_error_form, assert_logged_as_sent, by_service,
    deployment_ids, message_ids, outcome, sent_deployment_ids,
};
pub use webhooks::{
    GITHUB_REPO, PUSHES, WEBHOOK_SECRET, fixture, fixture_bytes, fixture_json, git_providers, github_signature,
    hmac_hex, provider_headers,
};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use autodeploy_api::aws::{DynamoStore, SqsQueue};
use autodeploy_api::sqlite::SqliteStore;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml_ng::Value;

/// Where the moto server listens; set by `./scripts/test`.
pub const MOTO_URL_ENV: &str = "AUTODEPLOY_TEST_MOTO_URL";

/// The moto server's URL. Panics when it is not set: an AWS test must fail, not pass
/// silently, when it cannot run.
pub fn moto_url() -> String {
    match std::env::var(MOTO_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("{MOTO_URL_ENV} is not set: run ./scripts/test"),
    }
}

/// An SDK configuration for `endpoint`: static test credentials and region `us-east-1`, so
/// nothing from the developer's own AWS setup is used.
pub async fn aws_sdk_config(endpoint: &str) -> SdkConfig {
    // The functions' own HTTPS client, so that every AWS test goes through it.
    let http_client = autodeploy_api::aws::https_client().unwrap();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "autodeploy-tests"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A name no other test uses: `{prefix}-{32 hex}`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Stores `value` as the Secrets Manager secret `name` on the moto of `config`: creates the
/// secret the first time, puts a new current version of it after.
pub async fn set_secret(config: &SdkConfig, name: &str, value: &str) {
    use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;

    let client = aws_sdk_secretsmanager::Client::new(config);
    let created = client.create_secret().name(name).secret_string(value).send().await;
    let exists = |e: &CreateSecretError| e.is_resource_exists_exception();
    match created {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(exists) => {
            let new_version = client.put_secret_value().secret_id(name).secret_string(value);
            new_version.send().await.expect("put_secret_value");
        }
        Err(e) => panic!("create_secret {name}: {e:?}"),
    }
}

/// `infra/template.yaml` of this workspace.
pub fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("infra")
        .join("template.yaml")
}

/// The parsed template.
pub fn template() -> Value {
    let path = template_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The `Properties` of resource `logical_id`, with `!Ref` / `!GetAtt` resolved through
/// `refs` (logical id or parameter → value) and `attributes` (`Resource.Attribute` → value).
/// Parameters resolve to their defaults.
pub fn resource_properties(
    template: &Value,
    logical_id: &str,
    refs: &HashMap<String, String>,
    attributes: &HashMap<String, String>,
) -> Result<Value, String> {
    let resource = template
        .get("Resources")
        .and_then(|r| r.get(logical_id))
        .ok_or_else(|| format!("the template has no resource {logical_id}"))?;
    let mut refs = refs.clone();
    if let Some(Value::Mapping(parameters)) = template.get("Parameters") {
        for (name, parameter) in parameters {
            if let (Some(name), Some(default)) = (name.as_str(), parameter.get("Default").and_then(scalar)) {
                refs.entry(name.to_owned()).or_insert(default);
            }
        }
    }
    let scope = Scope {
        template,
        refs: &refs,
        attributes,
    };
    resolve(resource.get("Properties").unwrap_or(&Value::Null), &scope)
}

/// What the intrinsic functions of a resource's properties resolve against.
struct Scope<'a> {
    template: &'a Value,
    refs: &'a HashMap<String, String>,
    attributes: &'a HashMap<String, String>,
}

impl Scope<'_> {
    /// The template's condition `name`, on the parameters' defaults.
    fn condition(&self, name: &str) -> Result<bool, String> {
        let condition = self
            .template
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| format!("the template has no condition {name}"))?;
        self.truth(condition)
    }

    /// `!Equals`, `!Not` or `!Condition`.
    fn truth(&self, value: &Value) -> Result<bool, String> {
        let Value::Tagged(tagged) = value else {
            return Err(format!("not a condition: {value:?}"));
        };
        let args = tagged.value.as_sequence().map_or(&[][..], Vec::as_slice);
        match (tagged.tag.to_string().trim_start_matches('!'), args) {
            ("Equals", [a, b]) => Ok(scalar(&resolve(a, self)?) == scalar(&resolve(b, self)?)),
            ("Not", [inner]) => Ok(!self.truth(inner)?),
            ("Condition", _) => self.condition(tagged.value.as_str().unwrap_or_default()),
            (other, _) => Err(format!("unsupported condition function {other}")),
        }
    }
}

/// Replace the intrinsic functions the template uses (`!Ref`, `!GetAtt`, and `!If` on its
/// conditions); an unknown one, or a reference to a resource not created yet, is an error
/// naming it.
fn resolve(value: &Value, scope: &Scope<'_>) -> Result<Value, String> {
    let (refs, attributes) = (scope.refs, scope.attributes);
    match value {
        Value::Tagged(tagged) if tagged.tag == "If" => match tagged.value.as_sequence().map(Vec::as_slice) {
            Some([Value::String(condition), then, otherwise]) => {
                resolve(if scope.condition(condition)? { then } else { otherwise }, scope)
            }
            _ => Err(format!("unsupported arguments to If: {:?}", tagged.value)),
        },
        Value::Tagged(tagged) => {
            let target = match &tagged.value {
                Value::String(s) => s.clone(),
                Value::Sequence(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."),
                other => return Err(format!("unsupported argument to {}: {other:?}", tagged.tag)),
            };
            let found = if tagged.tag == "Ref" {
                refs.get(&target)
            } else if tagged.tag == "GetAtt" {
                attributes.get(&target)
            } else {
                return Err(format!("unsupported intrinsic function {}", tagged.tag));
            };
            found
                .map(|v| Value::String(v.clone()))
                .ok_or_else(|| format!("unresolved {} {target}", tagged.tag))
        }
        Value::Mapping(map) => {
            let mut out = serde_yaml_ng::Mapping::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve(v, scope)?);
            }
            Ok(Value::Mapping(out))
        }
        Value::Sequence(items) => items
            .iter()
            .map(|v| resolve(v, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Sequence),
        other => Ok(other.clone()),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("template: `{key}` missing or not a string in {value:?}"))
}

fn seq_field<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

fn key_schema(value: &Value) -> Vec<KeySchemaElement> {
    seq_field(value, "KeySchema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(str_field(k, "AttributeName"))
                .key_type(KeyType::from(str_field(k, "KeyType")))
                .build()
                .expect("key schema element")
        })
        .collect()
}

/// Create table `name` as the template's `Table` declares it: attributes, keys, global
/// secondary indexes, billing mode and TTL. (Backups, encryption and deletion protection do
/// not change what the store sees and are left out.)
pub async fn create_table_from_template(client: &aws_sdk_dynamodb::Client, name: &str) {
    // The encryption key is another resource of the stack: not created here, so not referred to.
    let mut template = template();
    if let Some(Value::Mapping(props)) = template
        .get_mut("Resources")
        .and_then(|r| r.get_mut("Table"))
        .and_then(|t| t.get_mut("Properties"))
    {
        props.remove("SSESpecification");
    }
    let props = resource_properties(&template, "Table", &HashMap::new(), &HashMap::new())
        .unwrap_or_else(|e| panic!("template: {e}"));
    let attributes = seq_field(&props, "AttributeDefinitions")
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(str_field(a, "AttributeName"))
                .attribute_type(ScalarAttributeType::from(str_field(a, "AttributeType")))
                .build()
                .expect("attribute definition")
        })
        .collect();
    let indexes: Vec<GlobalSecondaryIndex> = seq_field(&props, "GlobalSecondaryIndexes")
        .iter()
        .map(|i| {
            let projection = i.get("Projection").expect("template: an index without Projection");
            let non_key: Option<Vec<String>> = projection
                .get("NonKeyAttributes")
                .and_then(Value::as_sequence)
                .map(|attrs| attrs.iter().filter_map(Value::as_str).map(str::to_owned).collect());
            GlobalSecondaryIndex::builder()
                .index_name(str_field(i, "IndexName"))
                .set_key_schema(Some(key_schema(i)))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(str_field(projection, "ProjectionType")))
                        .set_non_key_attributes(non_key)
                        .build(),
                )
                .build()
                .expect("global secondary index")
        })
        .collect();
    client
        .create_table()
        .table_name(name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(&props)))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .billing_mode(BillingMode::from(
            props
                .get("BillingMode")
                .and_then(Value::as_str)
                .unwrap_or("PROVISIONED"),
        ))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "creating table {name}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        });

    if let Some(ttl) = props.get("TimeToLiveSpecification") {
        let enabled = ttl.get("Enabled").and_then(scalar).is_some_and(|v| v == "true");
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(str_field(ttl, "AttributeName"))
                    .enabled(enabled)
                    .build()
                    .expect("ttl specification"),
            )
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "enabling TTL on {name}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            });
    }
}

/// A queue the harness created.
#[derive(Debug, Clone)]
pub struct CreatedQueue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// The template's queues, created under unique names.
#[derive(Debug, Clone)]
pub struct TestQueues {
    /// `DeploymentsQueue`.
    pub deployments: CreatedQueue,
    /// `DeploymentsDeadLetterQueue`.
    pub dead_letter: CreatedQueue,
    /// `PullQueue`: what the dispatcher forwards, for outside engines.
    pub pull: CreatedQueue,
    /// `PullDeadLetterQueue`.
    pub pull_dead_letter: CreatedQueue,
}

/// Create every `AWS::SQS::Queue` of the template, named `{prefix}-{LogicalId}` (`.fifo` for
/// FIFO queues), with the template's properties as queue attributes. A queue whose
/// properties refer to another (the redrive policy's `!GetAtt …Arn`) is created after it.
pub async fn create_queues_from_template(sqs: &aws_sdk_sqs::Client, prefix: &str) -> TestQueues {
    let template = template();
    let mut waiting: Vec<String> = template
        .get("Resources")
        .and_then(Value::as_mapping)
        .expect("template: no Resources")
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::SQS::Queue"))
        .filter_map(|(id, _)| id.as_str().map(str::to_owned))
        .collect();
    let mut created: BTreeMap<String, CreatedQueue> = BTreeMap::new();
    let mut refs = HashMap::new();
    let mut attributes = HashMap::new();
    while !waiting.is_empty() {
        let before = waiting.len();
        let mut last_error = String::new();
        let mut still_waiting = Vec::new();
        for logical_id in waiting {
            match resource_properties(&template, &logical_id, &refs, &attributes) {
                Ok(props) => {
                    let queue = create_queue(sqs, prefix, &logical_id, &props).await;
                    refs.insert(logical_id.clone(), queue.url.clone());
                    attributes.insert(format!("{logical_id}.Arn"), queue.arn.clone());
                    attributes.insert(format!("{logical_id}.QueueName"), queue.name.clone());
                    attributes.insert(format!("{logical_id}.QueueUrl"), queue.url.clone());
                    created.insert(logical_id, queue);
                }
                Err(e) => {
                    last_error = e;
                    still_waiting.push(logical_id);
                }
            }
        }
        assert!(still_waiting.len() < before, "template queues: {last_error}");
        waiting = still_waiting;
    }
    let mut take = |id: &str| {
        created
            .remove(id)
            .unwrap_or_else(|| panic!("the template has no queue {id}"))
    };
    TestQueues {
        deployments: take("DeploymentsQueue"),
        dead_letter: take("DeploymentsDeadLetterQueue"),
        pull: take("PullQueue"),
        pull_dead_letter: take("PullDeadLetterQueue"),
    }
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, prefix: &str, logical_id: &str, props: &Value) -> CreatedQueue {
    let mut attrs: HashMap<QueueAttributeName, String> = HashMap::new();
    let mut fifo = false;
    for (key, value) in props.as_mapping().into_iter().flatten() {
        let Some(key) = key.as_str() else { continue };
        if matches!(key, "QueueName" | "Tags") {
            continue;
        }
        let value = match value {
            // Structured attributes (RedrivePolicy, RedriveAllowPolicy) are JSON strings in SQS.
            Value::Mapping(_) | Value::Sequence(_) => serde_json::to_string(value).expect("JSON attribute"),
            other => scalar(other).unwrap_or_else(|| panic!("template: {logical_id}.{key} is not a scalar")),
        };
        if key == "FifoQueue" {
            fifo = value == "true";
        }
        attrs.insert(QueueAttributeName::from(key), value);
    }
    let name = format!("{prefix}-{logical_id}{}", if fifo { ".fifo" } else { "" });
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating queue {name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))
        .queue_url
        .expect("a queue URL");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("reading queue {name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("a queue ARN");
    CreatedQueue { name, url, arn }
}

/// A fresh table and queues on moto, with the store and queue adapters over them.
pub struct AwsFixture {
    pub config: SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub table: String,
    pub queues: TestQueues,
    pub store: DynamoStore,
    pub queue: SqsQueue,
}

pub async fn aws_fixture() -> AwsFixture {
    let config = aws_sdk_config(&moto_url()).await;
    let dynamo = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let table = unique_name("autodeploy");
    create_table_from_template(&dynamo, &table).await;
    let queues = create_queues_from_template(&sqs, &unique_name("autodeploy")).await;
    AwsFixture {
        store: DynamoStore::new(dynamo.clone(), &table),
        queue: SqsQueue::new(sqs.clone(), &queues.deployments.url),
        config,
        dynamo,
        sqs,
        table,
        queues,
    }
}

/// A message taken off the deployments queue.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub group: String,
    pub dedup: String,
    pub body: serde_json::Value,
}

/// Every message on the FIFO queue at `url`, received (straight from moto) and deleted, in the
/// order SQS hands them out: a FIFO group's next message once the previous one is deleted.
/// moto deduplicates only against messages still on the queue, so a test of deduplication
/// receives at its end.
pub async fn receive_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<ReceivedMessage> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;

    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive_message: {}", aws_sdk_sqs::error::DisplayErrorContext(e)));
        if received.messages().is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in received.messages() {
            let attrs = m.attributes().expect("system attributes");
            out.push(ReceivedMessage {
                group: attrs[&MessageSystemAttributeName::MessageGroupId].clone(),
                dedup: attrs[&MessageSystemAttributeName::MessageDeduplicationId].clone(),
                body: serde_json::from_str(m.body().expect("a body")).expect("a JSON body"),
            });
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().expect("a receipt handle"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete_message: {}", aws_sdk_sqs::error::DisplayErrorContext(e)));
        }
    }
    out
}

/// A fresh SQLite store on a file in a temporary directory, removed when dropped.
pub struct SqliteFixture {
    pub store: SqliteStore,
    pub dir: tempfile::TempDir,
}

pub fn sqlite_fixture() -> SqliteFixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("autodeploy.db")).expect("opening the SQLite store");
    SqliteFixture { store, dir }
}
