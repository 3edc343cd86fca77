//! The integration tests, one binary (each test binary links the AWS SDK, so one is much
//! cheaper to build than one per file): one module per area, on the harness of this crate's
//! library (`autodeploy_tests`).

mod amendments;
mod aws_cost;
mod aws_dispatcher;
mod aws_iam;
mod aws_images;
mod aws_push;
mod aws_stack;
mod aws_upgrade;
mod deliveries;
mod exact_bodies;
mod hostile_input;
mod https_client;
mod image_tags;
mod lambda_binaries;
mod lambda_functions;
mod lifecycle;
mod push_webhooks;
mod races;
mod replays_and_caps;
mod routes;
mod settings_api;
mod sqlite_faults;
mod store_contract;
mod targets_api;
mod tenant_isolation;
