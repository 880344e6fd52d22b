//! authrun: a small self-hosted web app that runs pre-configured scripts (deploys, usually) from a
//! browser or curl, but only after a valid TOTP code from an authenticator app.
//!
//! The folders depend one way: [`web`] (server, middleware, routes, views) calls the domain services
//! [`auth`] (codes, regulation, the attempt) and [`runs`] (gate, processes, output), which keep their state
//! in [`store`]s; all of them speak the [`model`] and read the time from a [`clock::Clock`]. [`metrics`]
//! counts what the services do, for Prometheus. [`config`]
//! reads and validates the configuration into the model's terms; [`bootstrap`] opens the stores and builds
//! the services; [`notify`] tells of runs by mail and webhook; [`cli`] is the command line.

pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod runs;
pub mod store;
pub mod web;
