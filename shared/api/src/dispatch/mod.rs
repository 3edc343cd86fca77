//! Delivering deployments to deploy targets (SPEC "Deploy targets and the dispatcher").
//!
//! The pure parts (the target model, the request of each target type, what an attempt's
//! result means and when to retry) are `autodeploy_core::target`; [`send`] makes the attempts.

pub mod send;
