//! The AWS stack the AWS-only suites (faults, cost) drive: the router on DynamoDB and SQS on
//! moto, each behind a fault proxy of its own. Here rather than in the library so that each
//! suite can add its own methods.

use autodeploy_tests::Api;
use autodeploy_tests::fault_proxy::FaultyAws;

/// The router on the AWS adapters of a [`FaultyAws`]: DynamoDB and SQS on moto, each behind a
/// fault proxy of its own. Each AWS test file adds its own methods.
pub struct AwsStack {
    pub aws: FaultyAws,
    pub api: Api,
}

impl AwsStack {
    pub async fn new() -> Self {
        let aws = FaultyAws::new().await;
        let api = Api::on(aws.store.clone(), aws.queue.clone());
        Self { aws, api }
    }

    /// As [`AwsStack::new`], with the organization `acme`'s GitHub webhook secret set.
    pub async fn with_github_secret() -> Self {
        let stack = Self::new().await;
        stack.api.set_secret("acme", "github").await;
        stack
    }

    /// `(service_id, status)` of every deployment recorded, sorted.
    pub async fn log(&self) -> Vec<(String, String)> {
        self.api.statuses("acme").await
    }
}
