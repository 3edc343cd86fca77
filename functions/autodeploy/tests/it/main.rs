//! The standalone `autodeploy` binary's integration tests, as one test binary: each module
//! starts the real process and talks to it over sockets, through the shared [`harness`].

mod cli;
mod connections;
mod dispatcher;
mod durability;
mod examples;
mod files;
mod harness;
mod hostile_http;
mod leases;
mod memory;
mod openapi_conformance;
mod receiver;
mod secrets_in_logs;
