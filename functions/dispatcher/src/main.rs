//! The `dispatcher` Lambda function: fed by the deployment queue (SQS FIFO, event source
//! mapping with `ReportBatchItemFailures`), delivers each deployment to its service's deploy
//! target and forwards those of services without one to the pull queue
//! (`autodeploy_api::aws::dispatcher`).

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use autodeploy_api::aws;
use autodeploy_api::aws::dispatcher::SqsDispatcher;
use autodeploy_api::aws::lambda_events::check_runtime_environment;
use autodeploy_api::metrics::emit_dispatch;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};

// Single-threaded: an instance serves one invocation at a time; a batch's message groups are
// handled concurrently on this one thread (README "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    aws::init_tracing();
    let dispatcher = SqsDispatcher::from_env().await?;
    check_runtime_environment()?;
    let dispatcher = &dispatcher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        let (response, tally) = dispatcher.handle(event.payload, Some(deadline)).await;
        emit_dispatch(&tally, Some(&event.context.request_id));
        Ok::<SqsBatchResponse, Infallible>(response)
    }))
    .await
}
