//! The HTTP routes, one file per flow.

pub mod admin;
pub mod assets;
pub mod metrics;
pub mod operators;
pub mod remote_output;
pub mod run;
pub mod runs;
pub mod status;
