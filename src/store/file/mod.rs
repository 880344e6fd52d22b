//! The embedded store: state kept in files beside the configuration, written atomically.

pub mod atomic;
pub mod audit;
pub mod history;
pub mod operators;
pub mod regulation;
pub mod secret;
pub mod sessions;
pub mod shared;
