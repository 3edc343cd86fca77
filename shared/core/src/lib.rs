//! Pure auto-deploy logic: the service model and its validation, repository URL and image
//! normalization, provider payload parsing, signature checks and matching.
//!
//! Nothing in this crate performs I/O, so everything here is cheap to unit-test, fuzz and
//! benchmark. Storage, queues and HTTP live in `autodeploy-api`.

pub mod body;
pub mod branch;
pub mod delivery;
pub mod deployment;
pub mod error;
pub mod ids;
pub mod image;
pub mod matching;
pub mod model;
pub mod plan;
pub mod provider;
pub mod push;
pub mod redeploy;
pub mod registry;
/// The registry module under its earlier name, for callers not yet moved to [`registry`].
pub mod repo_url;
pub mod restrictions;
pub mod sealed;
pub mod tag_policy;
pub mod target;
