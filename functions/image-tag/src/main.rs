//! The `image-tag` Lambda function. It serves two kinds of invocation:
//!
//! - API Gateway (HTTP API, payload format 2.0): `POST /organization/{org}/container/deploy`,
//!   `…/job/deploy` and the registry webhooks (Docker Hub, GitHub Packages);
//! - EventBridge "ECR Image Action" events: a tag pushed to an ECR repository deploys the
//!   containers and jobs using that image in the organization named by `AUTODEPLOY_ECR_ORGANIZATION`
//!   (without it, ECR events are refused and HTTP requests still served).

use autodeploy_api::aws;
use autodeploy_api::aws::lambda_events::{ImageTagHandler, check_runtime_environment};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

// Single-threaded: an instance serves one invocation at a time, so worker threads would only
// cost init time and hand-offs (README "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::init_tracing();
    let handler = ImageTagHandler::from_env(aws::app_state_from_env().await?);
    check_runtime_environment()?;
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| handler.handle(event))).await
}
