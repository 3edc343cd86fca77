//! Delivery metrics as CloudWatch Embedded Metric Format (EMF) lines: one JSON object per
//! delivery (a push webhook, an image-tag call or a registry webhook), printed on its own line
//! to stdout, where CloudWatch Logs turns it into metrics without any API call; and one per
//! `dispatcher` invocation ([`render_dispatch`], metrics [`DISPATCH_METRIC_NAMES`]).
//!
//! [`render`] is pure and is what the tests check. The delivery routes' layer
//! ([`crate::web::observe`]) reads the [`Tally`] the handler attached to its response (or the
//! error status) and prints the EMF line when `AUTODEPLOY_METRICS=emf` (the template sets it
//! on the Lambda functions; the standalone server prints none).
//!
//! Metrics (namespace [`NAMESPACE`], one dimension `Stack`, unit `Count`, all in every line):
//! `Queued` deployments recorded (sent or pending), `Pending` those the queue did not take yet,
//! `Skipped` services skipped, `Ignored` deliveries that announce nothing to deploy,
//! `Duplicate` deliveries already processed, `Rejected` deliveries answered 4xx, `Failed`
//! deliveries answered 5xx. The organization, the source, the delivery id and the request ids
//! are properties of the line (searchable in Logs Insights), not dimensions, so they cost no
//! metric. No secret is ever part of a line: the route is the template
//! (`…/dockerhub/{secret}`), never the path.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::Request;
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "autodeploy";
/// `emf` turns the lines on.
pub const METRICS_ENV: &str = "AUTODEPLOY_METRICS";
/// The value of the `Stack` dimension (the template sets the stack name).
pub const STACK_ENV: &str = "AUTODEPLOY_STACK";
/// The dimension's value when [`STACK_ENV`] is unset.
pub const DEFAULT_STACK: &str = "autodeploy";

/// The metrics of a line, in the order they are declared.
pub const METRIC_NAMES: [&str; 7] = [
    "Queued",
    "Pending",
    "Skipped",
    "Ignored",
    "Duplicate",
    "Rejected",
    "Failed",
];

/// The `ignored` reason of a delivery id seen before.
pub const DUPLICATE_DELIVERY: &str = "DUPLICATE_DELIVERY";

/// Which router a delivery reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /organization/{org}/webhooks/{provider}`.
    Push,
    /// The image-tag endpoints and the registry webhooks.
    Image,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Push => "push",
            Endpoint::Image => "image",
        }
    }
}

/// What a handler did with a delivery, attached to its response as an extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Deployments recorded: sent (`QUEUED`) or waiting for the relay (`PENDING`).
    pub queued: u32,
    /// Of those, the ones the queue did not take yet.
    pub pending: u32,
    pub skipped: u32,
    /// Why nothing was looked at (`PING`, `TAG_PUSH`, [`DUPLICATE_DELIVERY`], …).
    pub ignored: Option<&'static str>,
    pub delivery_id: Option<String>,
    /// Who announced it: a git provider's slug or an image source (`DOCKER_HUB`, …).
    pub source: Option<String>,
    /// A dry run records nothing, and is not counted.
    pub dry_run: bool,
}

impl Tally {
    /// The tally of a response's `queued` statuses and `skipped` count.
    pub fn of<'a>(statuses: impl IntoIterator<Item = &'a str>, skipped: usize) -> Self {
        let mut tally = Tally {
            skipped: saturate(skipped),
            ..Tally::default()
        };
        for status in statuses {
            tally.queued = tally.queued.saturating_add(1);
            if status == "PENDING" {
                tally.pending = tally.pending.saturating_add(1);
            }
        }
        tally
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One delivery, as its EMF line reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLine<'a> {
    pub endpoint: Endpoint,
    /// The organization of the path, when it is a valid id.
    pub organization: Option<&'a str>,
    pub source: Option<&'a str>,
    /// The route template that matched (never the path).
    pub route: &'a str,
    pub status: u16,
    pub tally: &'a Tally,
    /// The Lambda invocation's request id.
    pub request_id: Option<&'a str>,
    /// API Gateway's request id (the access log's `requestId`).
    pub api_request_id: Option<&'a str>,
}

impl DeliveryLine<'_> {
    /// The value of each of [`METRIC_NAMES`], in that order.
    pub fn values(&self) -> [u32; 7] {
        let t = self.tally;
        let duplicate = t.ignored == Some(DUPLICATE_DELIVERY);
        let ignored = t.ignored.is_some() && !duplicate;
        [
            t.queued,
            t.pending,
            t.skipped,
            u32::from(ignored),
            u32::from(duplicate),
            u32::from((400..500).contains(&self.status)),
            u32::from(self.status >= 500),
        ]
    }
}

/// The EMF line of `line` (without the newline): one JSON object with the metric directive
/// under `_aws`, the dimension, every metric as a number and the properties as strings.
pub fn render(stack: &str, line: &DeliveryLine<'_>, timestamp_ms: i64) -> String {
    let mut root = emf_object(stack, &METRIC_NAMES, &line.values(), timestamp_ms);
    let mut property = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            root.insert(name.to_owned(), json!(value));
        }
    };
    property("endpoint", Some(line.endpoint.as_str()));
    property("organization", line.organization);
    property("source", line.source);
    property("route", Some(line.route));
    property("delivery_id", line.tally.delivery_id.as_deref());
    property("ignored", line.tally.ignored);
    property("request_id", line.request_id);
    property("api_request_id", line.api_request_id);
    root.insert("status".to_owned(), json!(line.status));
    Value::Object(root).to_string()
}

/// An EMF object: the directive under `_aws` declaring `names` (unit `Count`, dimension
/// `Stack`), the dimension, and each metric's value.
fn emf_object(stack: &str, names: &[&str], values: &[u32], timestamp_ms: i64) -> Map<String, Value> {
    let metrics: Vec<Value> = names
        .iter()
        .map(|name| json!({"Name": name, "Unit": "Count"}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stack"]],
                "Metrics": metrics,
            }],
        }),
    );
    root.insert("Stack".to_owned(), json!(stack));
    for (name, value) in names.iter().zip(values) {
        root.insert((*name).to_owned(), json!(value));
    }
    root
}

/// The metrics of a `dispatcher` invocation's line, in the order they are declared: what
/// became of the deployments of its batch. Named apart from the delivery lines' metrics, which
/// share the namespace and dimension.
pub const DISPATCH_METRIC_NAMES: [&str; 6] = [
    "DeploymentsDelivered",
    "DeploymentsRetried",
    "DeploymentsFailed",
    "DeploymentsSuperseded",
    "DeploymentsForwarded",
    "DispatchErrors",
];

/// What one `dispatcher` invocation did with its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchTally {
    /// Accepted by their target: `DELIVERED`.
    pub delivered: u32,
    /// Failed an attempt that will be retried (`QUEUED` with `next_attempt_at`).
    pub retried: u32,
    /// Refused for good, or out of attempts: `FAILED`.
    pub failed: u32,
    /// Not delivered, a newer deployment of the service being taken instead: `SUPERSEDED`.
    pub superseded: u32,
    /// Of services without a target, forwarded to the pull queue.
    pub forwarded: u32,
    /// Messages left on the queue because they could not be handled (the store did not
    /// answer, a body that is not a deployment request): tried again, then dead-lettered.
    pub errors: u32,
}

impl DispatchTally {
    pub fn values(&self) -> [u32; 6] {
        [
            self.delivered,
            self.retried,
            self.failed,
            self.superseded,
            self.forwarded,
            self.errors,
        ]
    }
}

/// The EMF line of a `dispatcher` invocation (without the newline).
pub fn render_dispatch(stack: &str, tally: &DispatchTally, request_id: Option<&str>, timestamp_ms: i64) -> String {
    let mut root = emf_object(stack, &DISPATCH_METRIC_NAMES, &tally.values(), timestamp_ms);
    root.insert("function".to_owned(), json!("dispatcher"));
    if let Some(id) = request_id {
        root.insert("request_id".to_owned(), json!(id));
    }
    Value::Object(root).to_string()
}

/// Print a `dispatcher` invocation's line on stdout, when EMF lines are on.
pub fn emit_dispatch(tally: &DispatchTally, request_id: Option<&str>) {
    let Some(stack) = emf_stack() else { return };
    print_line(&render_dispatch(stack, tally, request_id, now_millis()));
}

/// `Some(stack)` when EMF lines are on (`AUTODEPLOY_METRICS=emf`), read once.
fn emf_stack() -> Option<&'static str> {
    static STACK: OnceLock<Option<String>> = OnceLock::new();
    STACK
        .get_or_init(|| {
            let value = std::env::var(METRICS_ENV).unwrap_or_default();
            let on = value.trim().eq_ignore_ascii_case("emf");
            if !on && !value.trim().is_empty() {
                tracing::warn!("{METRICS_ENV} is neither empty nor \"emf\": no metrics are printed");
            }
            on.then(|| {
                std::env::var(STACK_ENV)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| DEFAULT_STACK.to_owned())
            })
        })
        .as_deref()
}

/// Print the line on stdout, when EMF lines are on.
pub fn emit(line: &DeliveryLine<'_>) {
    let Some(stack) = emf_stack() else { return };
    print_line(&render(stack, line, now_millis()));
}

fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// One write of the whole line: CloudWatch reads each line as one log event.
fn print_line(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// The source an image route serves, for the requests it refuses.
pub fn image_source(route: &str) -> Option<&'static str> {
    if route.ends_with("/container/deploy") || route.ends_with("/job/deploy") {
        Some("API")
    } else if route.contains("/registry-webhooks/dockerhub") {
        Some("DOCKER_HUB")
    } else if route.ends_with("/registry-webhooks/github") {
        Some("GITHUB_PACKAGES")
    } else {
        None
    }
}

/// The Lambda request id and API Gateway's request id, which `lambda_http` attaches to the
/// request; none outside Lambda.
#[cfg(feature = "aws")]
pub fn request_ids(request: &Request) -> (Option<String>, Option<String>) {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let lambda = request.lambda_context_ref().map(|c| c.request_id.clone());
    let api = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    };
    (lambda, api)
}

#[cfg(not(feature = "aws"))]
pub fn request_ids(_: &Request) -> (Option<String>, Option<String>) {
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(tally: &'a Tally, status: u16) -> DeliveryLine<'a> {
        DeliveryLine {
            endpoint: Endpoint::Push,
            organization: Some("acme"),
            source: Some("github"),
            route: "/organization/{org}/webhooks/{provider}",
            status,
            tally,
            request_id: Some("req-1"),
            api_request_id: None,
        }
    }

    #[test]
    fn tally_counts_pending_within_queued() {
        let t = Tally::of(["QUEUED", "PENDING", "QUEUED"], 4);
        assert_eq!((t.queued, t.pending, t.skipped), (3, 1, 4));
    }

    #[test]
    fn outcomes_map_to_one_metric_each() {
        let duplicate = Tally {
            ignored: Some(DUPLICATE_DELIVERY),
            ..Tally::default()
        };
        assert_eq!(line(&duplicate, 200).values(), [0, 0, 0, 0, 1, 0, 0]);
        let ping = Tally {
            ignored: Some("PING"),
            ..Tally::default()
        };
        assert_eq!(line(&ping, 200).values(), [0, 0, 0, 1, 0, 0, 0]);
        let none = Tally::default();
        assert_eq!(line(&none, 401).values(), [0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(line(&none, 503).values(), [0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn renders_an_emf_object() {
        let tally = Tally {
            delivery_id: Some("d-1".to_owned()),
            ..Tally::of(["QUEUED"], 1)
        };
        let text = render("prod", &line(&tally, 202), 1_700_000_000_123);
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123_i64);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(v["Stack"], "prod");
        assert_eq!(v["Queued"], 1);
        assert_eq!(v["Skipped"], 1);
        assert_eq!(v["delivery_id"], "d-1");
        assert_eq!(v["organization"], "acme");
        assert_eq!(v["status"], 202);
        assert!(v.get("api_request_id").is_none());
    }

    /// The rules CloudWatch applies to an EMF object: a directive under `_aws` with an integer
    /// millisecond timestamp, every dimension a top-level string, every metric a top-level
    /// number, at most 30 dimensions and 100 metrics per directive.
    #[test]
    fn follows_the_emf_specification() {
        let tally = Tally {
            ignored: Some("PING"),
            delivery_id: Some("d\"1\n".to_owned()),
            ..Tally::of(["PENDING"], 0)
        };
        let text = render("stack-1", &line(&tally, 200), 1);
        assert_eq!(text.lines().count(), 1, "one log event: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let root = v.as_object().unwrap();
        let aws = root["_aws"].as_object().unwrap();
        assert!(aws["Timestamp"].is_i64());
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let directive = &directives[0];
        assert!(directive["Namespace"].as_str().is_some_and(|n| !n.is_empty()));
        let dimension_sets = directive["Dimensions"].as_array().unwrap();
        for set in dimension_sets {
            let set = set.as_array().unwrap();
            assert!(set.len() <= 30);
            for name in set {
                assert!(root[name.as_str().unwrap()].is_string(), "dimension {name}");
            }
        }
        let metrics = directive["Metrics"].as_array().unwrap();
        assert!(metrics.len() <= 100);
        let names: Vec<&str> = metrics.iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(names, METRIC_NAMES);
        for metric in metrics {
            assert_eq!(metric["Unit"], "Count");
            assert!(root[metric["Name"].as_str().unwrap()].is_u64(), "{metric}");
        }
        assert_eq!(
            (v["Queued"].as_u64(), v["Pending"].as_u64(), v["Ignored"].as_u64()),
            (Some(1), Some(1), Some(1))
        );
        // Properties are strings (or the status), never shadowing a metric or a dimension.
        for (key, value) in root {
            if key == "_aws" || names.contains(&key.as_str()) || key == "Stack" || key == "status" {
                continue;
            }
            assert!(value.is_string(), "{key}: {value}");
            assert!(key.chars().next().is_some_and(|c| c.is_ascii_lowercase()), "{key}");
        }
        assert_eq!(v["delivery_id"], "d\"1\n");
    }

    #[test]
    fn a_dispatch_line_is_an_emf_object_of_its_own_metrics() {
        let tally = DispatchTally {
            delivered: 3,
            retried: 1,
            superseded: 2,
            ..DispatchTally::default()
        };
        let text = render_dispatch("prod", &tally, Some("req-9"), 1_700_000_000_000);
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Stack"]]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, DISPATCH_METRIC_NAMES);
        assert!(
            names.iter().all(|name| !METRIC_NAMES.contains(name)),
            "shared names would add up"
        );
        assert_eq!(v["Stack"], "prod");
        assert_eq!(
            (
                v["DeploymentsDelivered"].as_u64(),
                v["DeploymentsRetried"].as_u64(),
                v["DeploymentsFailed"].as_u64(),
                v["DeploymentsSuperseded"].as_u64(),
                v["DeploymentsForwarded"].as_u64(),
                v["DispatchErrors"].as_u64()
            ),
            (Some(3), Some(1), Some(0), Some(2), Some(0), Some(0))
        );
        assert_eq!(v["request_id"], "req-9");
        assert_eq!(v["function"], "dispatcher");
    }

    #[test]
    fn image_routes_name_their_source() {
        assert_eq!(image_source("/organization/{org}/container/deploy"), Some("API"));
        assert_eq!(image_source("/organization/{org}/job/deploy"), Some("API"));
        assert_eq!(
            image_source("/organization/{org}/registry-webhooks/dockerhub/{secret}"),
            Some("DOCKER_HUB")
        );
        assert_eq!(
            image_source("/organization/{org}/registry-webhooks/github"),
            Some("GITHUB_PACKAGES")
        );
    }
}
