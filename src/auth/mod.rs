//! Who may start a run: codes, the brute-force regulation, and the attempt that ties them to the gate.

pub mod attempt;
pub mod hashing;
pub mod operators;
pub mod qr;
pub mod refusals;
pub mod regulation;
pub mod token;
pub mod totp;
