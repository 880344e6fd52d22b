//! Running authrun as a systemd service: the unit in `contrib/` is hardened (systemd's own rating), and
//! `authrun serve` tells systemd it is ready once its listener is bound.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::support::{Server, Workspace, authrun, repo_file};

/// The exposure systemd rates the unit at, at most (0 is the best, 10 the worst).
const MAX_EXPOSURE: f64 = 3.0;

#[test]
fn the_service_unit_is_rated_hardened_by_systemd() {
    let unit = repo_file("contrib/authrun.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (Debian's systemd package)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze printed no rating:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "the unit's exposure is {exposure}, above {MAX_EXPOSURE}:\n{text}"
    );
}

#[test]
fn serve_tells_systemd_it_is_ready_once_listening() {
    let workspace = Workspace::with_example_script();
    let socket_path = workspace.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("socket timeout");
    let server = Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &socket_path),
    );
    let mut message = [0u8; 256];
    let length = socket
        .recv(&mut message)
        .unwrap_or_else(|error| panic!("no readiness from authrun: {error}\n{}", server.stderr()));
    let message = String::from_utf8_lossy(&message[..length]).into_owned();
    assert!(message.lines().any(|line| line == "READY=1"), "{message:?}");
    assert_eq!(server.get("/healthz").status, 200, "ready means serving");
}
