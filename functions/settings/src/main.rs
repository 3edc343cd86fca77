//! The `settings` Lambda function: services, webhook secrets, tokens and the deployment log,
//! on DynamoDB, behind API Gateway (HTTP API, payload format 2.0).
//!
//! It sends no deployments, so it has no queue: it neither needs `AUTODEPLOY_QUEUE_URL` nor
//! holds any SQS permission. The one deployment its routes record, a redeploy, stays `PENDING`
//! until the relay sends it.

use autodeploy_api::aws;
use autodeploy_api::aws::lambda_events::check_runtime_environment;
use autodeploy_api::web::settings_router;

// Single-threaded: an instance serves one invocation at a time, so worker threads would only
// cost init time and hand-offs (README "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // Run by hand, not by Lambda, once after an upgrade from the first release.
    if std::env::args().nth(1).as_deref() == Some("upgrade-table") {
        let upgraded = aws::upgrade_table_from_env().await?;
        println!(
            "moved {} webhook secrets and {} tokens to their partitions ({} left for newer ones), wrote {} service counts",
            upgraded.secrets, upgraded.tokens, upgraded.kept_newer, upgraded.counts
        );
        return Ok(());
    }
    aws::init_tracing();
    let state = aws::app_state_without_queue_from_env().await?;
    check_runtime_environment()?;
    lambda_http::run(settings_router(state)).await
}
