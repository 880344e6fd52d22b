//! Runs: the gate that admits exactly one run of an action, the scripts' processes and what they leave
//! behind, their output, and a runner per action.

pub mod gate;
pub mod leftovers;
pub mod observer;
pub mod output;
pub mod owner;
pub mod process;
pub mod runner;
pub mod runners;
pub mod shipper;
