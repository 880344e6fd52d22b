//! The things authrun talks about, with no behaviour beyond their own invariants: actions' ids, runs and
//! their statuses, clients, secrets, the regulation state and audit outcomes, and how times are written.
//!
//! Every other part of authrun depends on these; they depend on nothing of authrun's.

pub mod action;
pub mod audit;
pub mod client;
pub mod operator;
pub mod regulation;
pub mod run;
pub mod secret;
pub mod time;
