//! Helpers every test binary needs: tests/http, tests/cli and tests/browser each include this file by
//! path (`#[path = "../common/mod.rs"] mod common;`), so each helper is written once. What is here knows
//! nothing of how a binary drives authrun: scripts on disk, the audit log's lines, processes, codes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

/// Writes an executable script at `path`.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The lines of a JSON-lines file (the audit log), each parsed; a line that is not JSON fails the test.
pub fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{} cannot be read: {error}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"))
        })
        .collect()
}

/// The scheduling state letter of a process (`R`, `S`, `Z`, ...), or `None` when it no longer exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the command may contain spaces and parentheses, so start after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether process `pid` has ended: it is gone, or only its zombie is left for its parent to reap.
pub fn process_ended(pid: i32) -> bool {
    matches!(process_state(pid), None | Some('Z' | 'X'))
}

/// A six-digit code that is none of `accepted` (the codes the server takes around now), counting up from
/// `accepted[0]`.
pub fn code_not_in(accepted: &[String]) -> String {
    let first: u32 = accepted
        .first()
        .and_then(|code| code.parse().ok())
        .expect("a numeric code to start from");
    (1..)
        .map(|delta| format!("{:06}", (first + delta) % 1_000_000))
        .find(|candidate| !accepted.contains(candidate))
        .expect("a code outside the window")
}
