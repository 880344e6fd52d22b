//! authrun's HTTP behaviour, driven in-process through the router and over real TCP on 127.0.0.1, with real
//! scripts in temp dirs and a manual clock.
//!
//! One file per flow, named for what a user does or meets (the code it mostly drives in brackets):
//! - `smoke`: the shortest story, a valid code runs the script.
//! - `actions`: several actions, each with its gate and cooldown, sharing codes, ids, the history and
//!   `max_parallel`; their routes and pages (`runs::gate`, `runs::runners`, `web::action`).
//! - `verify`: `POST /verify` and the status answer as an API client meets them (`web::routes::run`,
//!   `web::routes::status`, `auth::totp`).
//! - `browser_flow`: the page and its form with JavaScript off (`web::routes::run`, `web::session`).
//! - `gate`: one run at a time, the cooldown, a code used once (`runs::gate`).
//! - `regulation`: bans, pauses, forwarded addresses, the audit log (`auth::regulation`, `auth::attempt`).
//! - `runs`: running the script and keeping its history (`runs::runner`, `runs::process`,
//!   `store::file::history`).
//! - `live`: a run's output, live and afterwards, who may read it, cancelling, `?wait`, the run pages
//!   (`web::routes::runs`, `web::access`, `runs::output`).
//! - `metrics`: `GET /metrics` read by a Prometheus parser after attempts, runs, bans and pauses, and who
//!   may scrape it (`metrics`, `web::routes::metrics`).
//! - `pages`: what a browser is shown besides the flow: refusals as pages, icons, a block before any code,
//!   times in words (`web::error_page`, `web::views`).
//! - `hardening`: cross-site posts, security headers, slow and excess connections, body limits
//!   (`web::middleware`, `web::server`).
//! - `sessions`: session fixation, the session store under a flood, expiry by the product's clock
//!   (`web::session`).
//! - `exposure`: what public answers must not reveal, bad query strings, the Host check
//!   (`web::middleware::host`, `web::query`).
//! - `faults`: a full disk while a run starts and ends (`runs::runner`, `store::file`).
//! - `fuzz`: properties over arbitrary requests and files, from a fixed seed unless told otherwise.
//!
//! The helpers: `helpers` (the `TestApp`, one helper per route, the assertions several files make),
//! `html` (reading the pages), and `common` (what the cli and browser tests need too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Each test module uses its own subset of the helpers.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
mod helpers;
mod html;

mod actions;
mod browser_flow;
mod connections;
mod exposure;
mod faults;
mod fuzz;
mod gate;
mod hardening;
mod live;
mod metrics;
mod operators;
mod pages;
mod regulation;
mod runs;
mod sessions;
mod smoke;
mod verify;
