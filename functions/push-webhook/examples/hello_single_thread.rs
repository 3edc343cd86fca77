//! The hello-world baseline of `scripts/coldstart` (`examples/hello.rs`) on the single-threaded
//! runtime the functions use, to show how much of their init time the runtime's flavor saves
//! and how much is their own. Not deployed.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Ok::<_, Error>(Response::new(Body::from("hello")))
    }))
    .await
}
