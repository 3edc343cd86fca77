//! The cold-start baseline of `scripts/coldstart`: the smallest `lambda_http` function (a
//! Tokio runtime and `lambda_http::run` answering "hello"), built with the same `lambda_http`
//! and Tokio features and the same release profile as the real functions, so that what a real
//! function's init costs on top of it is its own configuration (SDK clients, router).
//! Not deployed: `cargo lambda build` and `scripts/package` build the binaries only.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Ok::<_, Error>(Response::new(Body::from("hello")))
    }))
    .await
}
