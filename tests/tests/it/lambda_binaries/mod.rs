//! The Lambda functions' executables as Lambda runs them: configuration from the environment,
//! events from a stand-in of the Lambda Runtime API, state on moto. The executables are the
//! workspace's own (`autodeploy_tests::functions`).

mod dispatcher;
mod image_tag;
mod push_webhook;
mod relay;
mod settings;
