//! Everything with I/O that the binaries share: the storage and queue ports with their SQLite
//! and DynamoDB/SQS adapters, and the HTTP router.

pub mod admin;
pub mod deploy;
pub mod metrics;
pub mod pipeline;
pub mod store;
pub mod turns;
pub mod util;
pub mod web;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "dispatch")]
pub mod dispatch;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use deploy::push::DELIVERY_RETENTION_SECS;
