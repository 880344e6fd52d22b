//! authrun's HTTP behaviour, driven in-process through the router and over real TCP on 127.0.0.1, with real
//! scripts in temp dirs and a manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Each test module uses its own subset of the helpers.
#[allow(dead_code)]
mod helpers;

mod browser_flow;
mod fuzz;
mod gate;
mod hardening;
mod live;
mod pages;
mod regulation;
mod runs;
mod smoke;
mod verify;
