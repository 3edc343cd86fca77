//! Everything with I/O that the binaries share: the storage and queue ports with their SQLite
//! and DynamoDB/SQS adapters, and the HTTP router.

pub mod admin;
pub mod metrics;
pub mod pipeline;
pub mod store;
pub mod util;
pub mod web;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "dispatch")]
pub mod dispatch;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// How long a delivery id is remembered (SPEC "Once only": 3 days).
pub const DELIVERY_RETENTION_SECS: i64 = 3 * 24 * 60 * 60;
