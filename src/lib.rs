//! authrun: a small self-hosted web app that runs one pre-configured script (a deploy, usually) from a
//! browser or curl, but only after a valid TOTP code from an authenticator app.
//!
//! A request flows through [`edge`] (security headers, log line) and [`app`] (router, middleware) to
//! [`routes`]; `POST /verify` parses the code ([`totp`]), passes the one-run-at-a-time gate of [`runner`],
//! which starts the script and records the run in [`history`]. Time comes from a [`clock::Clock`], so every rule about time is testable without sleeping.
//! [`config`] reads and validates the TOML file; [`cli`] is the command line.

pub mod access;
pub mod app;
pub mod attempt;
pub mod audit;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod csrf;
pub mod edge;
pub mod error;
pub mod fsio;
pub mod guard;
pub mod history;
pub mod origin;
pub mod output;
pub mod qr;
pub mod routes;
pub mod runner;
pub mod server;
pub mod session;
pub mod setup;
pub mod totp;
pub mod view;
