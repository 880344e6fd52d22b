//! Runs: the gate that admits exactly one, the script's processes, and its output.

pub mod gate;
pub mod output;
pub mod process;
pub mod runner;
