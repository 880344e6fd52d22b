//! The HTTP routes, one file per flow.

pub mod assets;
pub mod run;
pub mod status;
