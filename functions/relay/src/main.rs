//! The `relay` Lambda function, invoked every minute by an EventBridge schedule: sends the
//! deployments left `PENDING` because the SQS queue did not answer when they were recorded
//! (SPEC "Nothing recorded is lost"), and logs how many it found and sent. It takes no token.

use autodeploy_api::aws;
use autodeploy_api::aws::lambda_events::{check_runtime_environment, relay};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

// Single-threaded: an instance serves one invocation at a time, so worker threads would only
// cost init time and hand-offs (README "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::init_tracing();
    let backend = aws::from_env().await?;
    check_runtime_environment()?;
    let backend = &backend;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        relay(backend.store.as_ref(), backend.queue.as_ref()).await
    }))
    .await
}
