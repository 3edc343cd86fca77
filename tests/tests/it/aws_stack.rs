//! The AWS stack the AWS-only suites (faults, cost) drive: the router on DynamoDB and SQS on
//! moto, each behind a fault proxy of its own. Here rather than in the library so that each
//! suite can add its own methods.

use autodeploy_tests::fault_proxy::{Count, Fault, FaultyAws, SDK_ATTEMPTS, action};
use autodeploy_tests::{Api, Reply};
use http::StatusCode;

/// The SDK's attempts at one call, as a count of requests.
pub const ATTEMPTS: usize = SDK_ATTEMPTS as usize;

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

    /// From now on the store refuses every record transaction (each of the SDK's attempts),
    /// counting only what follows: setting services up wrote through the proxy too.
    pub fn refuse_record_transactions(&self) {
        self.aws.store_proxy.reset_counts();
        self.aws
            .store_proxy
            .set(Fault::unavailable().only(action::TRANSACT_WRITE_ITEMS));
    }

    /// From now on the store takes the first record transaction to reach it and refuses the
    /// next (each of the SDK's attempts), then works again; counting only what follows.
    pub fn refuse_the_second_record_transaction(&self) {
        self.aws.store_proxy.reset_counts();
        self.aws.store_proxy.set(
            Fault::unavailable()
                .only(action::TRANSACT_WRITE_ITEMS)
                .after(1)
                .times(ATTEMPTS),
        );
    }

    /// `transactions` record transactions were each refused at every one of the SDK's attempts.
    pub fn assert_record_transactions_refused(&self, transactions: usize) {
        let requests = transactions * ATTEMPTS;
        assert_eq!(
            self.aws.store_proxy.count(action::TRANSACT_WRITE_ITEMS),
            Count {
                requests,
                failed: requests
            }
        );
    }

    /// What [`AwsStack::refuse_the_second_record_transaction`] leads to: two record
    /// transactions (one written, one refused at each attempt), and one marking the written
    /// batch.
    pub fn assert_one_of_two_record_transactions_refused(&self) {
        assert_eq!(
            self.aws.store_proxy.count(action::TRANSACT_WRITE_ITEMS),
            Count {
                requests: 1 + ATTEMPTS + 1,
                failed: ATTEMPTS
            }
        );
    }
}

/// A 503 `UNAVAILABLE`: what a request gets when the store refused its writes.
pub fn assert_unavailable(r: &Reply) {
    assert_eq!(
        (r.status, r.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        "{}",
        r.body
    );
}
