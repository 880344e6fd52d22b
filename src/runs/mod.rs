//! Runs: the gate that admits exactly one, the script's processes and what they leave behind, and its
//! output.

pub mod gate;
pub mod leftovers;
pub mod output;
pub mod process;
pub mod runner;
