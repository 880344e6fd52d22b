//! authrun's command line, driven through the real `authrun` binary as a user would run it: each test in
//! its own temp dir as the working directory, with none of the parent's `AUTHRUN_*` or `RUST_LOG`
//! variables, reading what it prints, the files it writes, and its HTTP answers over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack;
mod audit;
mod commands;
mod security;
mod serve;
mod support;
