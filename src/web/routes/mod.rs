//! The HTTP routes, one file per flow.

pub mod admin;
pub mod assets;
pub mod operators;
pub mod metrics;
pub mod run;
pub mod runs;
pub mod status;
