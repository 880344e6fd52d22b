//! The web face of authrun: the HTTP server and its limits, the middleware every request passes, the
//! routes (one file per flow), the pages' views, sessions and the application state handlers share.
//!
//! `server` accepts connections and drives hyper; `router` builds the routes from `routes` and
//! `middleware`; handlers take what they need from `state` and speak to the domain (`auth`, `runs`).

pub mod access;
pub mod action;
pub mod ansi;
pub mod cache;
pub mod error_page;
pub mod form;
pub mod middleware;
pub mod negotiate;
pub mod query;
pub mod router;
pub mod routes;
pub mod run_events;
pub mod server;
pub mod session;
pub mod state;
pub mod views;
