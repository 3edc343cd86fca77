//! Where the `push-webhook` function's init time goes (`scripts/coldstart --steps`): its own
//! start-up, stopped after step `AUTODEPLOY_INIT_STEP` and then serving like the hello-world
//! baseline on the same single-threaded runtime (`examples/hello_single_thread.rs`). Each
//! step's init minus the one before is what that step costs; step 0 is the hello-world handler
//! in this binary, so step 0 minus that hello-world is what the binary's size alone costs. Not
//! deployed (an example, like `hello`).
//!
//! Steps: 0 nothing; 1 the JSON log subscriber; 2 the SDK configuration; 3 the DynamoDB
//! client; 4 the SQS client; 5 (or unset) everything `main.rs` does, then its router.

use autodeploy_api::aws;
use autodeploy_api::aws::lambda_events::check_runtime_environment;
use autodeploy_api::web::push_router;
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let step: u8 = std::env::var("AUTODEPLOY_INIT_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if step >= 5 {
        // What `main.rs` runs, word for word.
        aws::init_tracing();
        let state = aws::app_state_without_admin_from_env().await?;
        check_runtime_environment()?;
        return lambda_http::run(push_router(state)).await;
    }
    if step >= 1 {
        aws::init_tracing();
    }
    // Built and kept, so that nothing is optimized away.
    let mut built: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    if step >= 2 {
        let config = aws::load_config().await?;
        if step >= 3 {
            built.push(Box::new(aws_sdk_dynamodb::Client::new(&config)));
        }
        if step >= 4 {
            built.push(Box::new(aws_sdk_sqs::Client::new(&config)));
        }
        built.push(Box::new(config));
    }
    lambda_http::run(service_fn(move |_: Request| {
        let _still_here = built.len();
        async { Ok::<_, Error>(Response::new(Body::from("hello"))) }
    }))
    .await
}
