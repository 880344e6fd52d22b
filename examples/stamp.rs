//! A deploy script for the spawn-latency benchmark: its first instruction appends the wall-clock time in
//! nanoseconds to the file named by its first argument.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::args().nth(1).unwrap_or_else(|| "stamp.txt".into());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{now}")
}
