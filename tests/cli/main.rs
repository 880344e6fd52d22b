//! authrun's command line, driven through the real `authrun` binary as a user would run it: each test in
//! its own temp dir as the working directory, with none of the parent's `AUTHRUN_*` or `RUST_LOG`
//! variables, reading what it prints, the files it writes, and its HTTP answers over TCP.
//!
//! `commands` covers what prints and exits, `mail` mail and notifications, `serve` the server's life (start, deploy, shutdown, crash),
//! `security` the operator's side of the security layer, `service` running under systemd,
//! `password_flood` sign-ins with passwords flooding the server while its status keeps answering,
//! `instances` and `shared` several instances on one PostgreSQL; the helpers
//! are in `support`, and in `common` what the HTTP and browser tests need too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

mod attack;
mod attacks;
mod audit;
mod commands;
mod failover;
mod instances;
mod mail;
mod operators;
mod password_flood;
mod processes;
mod security;
mod serve;
mod service;
mod shared;
mod store_commands;
mod support;
