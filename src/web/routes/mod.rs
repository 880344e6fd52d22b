//! The HTTP routes, one file per flow.

pub mod assets;
pub mod metrics;
pub mod run;
pub mod runs;
pub mod status;
