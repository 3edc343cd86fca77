//! The `push-webhook` Lambda function: git provider push webhooks
//! (`POST /organization/{org}/webhooks/{provider}`), on DynamoDB and SQS, behind API Gateway
//! (HTTP API, payload format 2.0).
//!
//! Deliveries are verified with the organization's webhook secrets, never with tokens, so this
//! function has no admin token and never reads the admin token secret.

use autodeploy_api::aws;
use autodeploy_api::aws::lambda_events::check_runtime_environment;
use autodeploy_api::web::push_router;

// Single-threaded: an instance serves one invocation at a time, so worker threads would only
// cost init time and hand-offs (README "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    aws::init_tracing();
    let state = aws::app_state_without_admin_from_env().await?;
    check_runtime_environment()?;
    lambda_http::run(push_router(state)).await
}
