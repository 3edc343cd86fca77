//! The standalone `autodeploy` binary's integration tests, as one test binary: each module
//! starts the real process and talks to it over sockets, through the shared [`harness`].

mod cli;
mod durability;
mod harness;
mod hostile_http;
mod secrets_in_logs;
