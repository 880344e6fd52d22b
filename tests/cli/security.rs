//! The operator's side of the security layer: `serve` refuses a secret others can read (unless told
//! `--insecure-permissions`), `unlock` lifts bans in a running server, and bans survive a real restart.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{Finished, SECRET, Server, Workspace, authrun, code_now, now_unix, run};

const SCRIPT: &str = "#!/bin/sh\necho deployed\n";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn serve_configured(workspace: &Workspace, extra: &[&str]) -> Server {
    Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .arg("--config")
            .arg(workspace.config()),
    )
}

/// `authrun serve` run to its end (it is expected to refuse to start).
fn serve_refused(workspace: &Workspace) -> Finished {
    run(authrun(workspace.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(workspace.config()))
}

/// `authrun unlock ARGS --config FILE`.
fn unlock(workspace: &Workspace, args: &[&str]) -> Finished {
    run(authrun(workspace.path())
        .arg("unlock")
        .args(args)
        .arg("--config")
        .arg(workspace.config()))
}

/// A code that is none of those the server may accept around now (two steps either side, so a step
/// boundary between computing and checking it changes nothing).
fn wrong_code() -> String {
    let bytes = authrun::model::secret::decode_secret(SECRET).expect("a base32 secret");
    let verifier = authrun::auth::totp::Verifier::new(
        bytes,
        authrun::config::TotpSettings {
            digits: 6,
            period: 30,
            skew: 1,
            issuer: "authrun".into(),
            account: "deploy".into(),
        },
    );
    let now = now_unix();
    let near: Vec<String> = (0..5)
        .map(|step| verifier.code_at(now + step * 30 - 60))
        .collect();
    (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|candidate| !near.contains(candidate))
        .expect("a code outside the window")
}

fn post_code(server: &Server, code: &str) -> (u16, Value) {
    let reply = server.post_form("/verify", &format!("code={code}"));
    let status = reply.status;
    (status, reply.json())
}

/// Five wrong codes from this test (the server sees 127.0.0.1), then a check that it is banned.
fn get_banned(server: &Server) {
    for attempt in 1..=5 {
        let (status, body) = post_code(server, &wrong_code());
        assert_eq!(status, 401, "wrong code #{attempt}: {body}\n{}", server.stderr());
    }
    assert_banned(server);
}

fn assert_banned(server: &Server) {
    let (status, body) = post_code(server, &code_now(SECRET));
    assert_eq!(status, 429, "{body}\n{}", server.stderr());
    assert_eq!(body["error"], "banned", "{body}");
}

/// A wrong code is checked again: 401, not 429.
fn assert_checked(server: &Server) {
    let (status, body) = post_code(server, &wrong_code());
    assert_eq!(status, 401, "{body}\n{}", server.stderr());
    assert_eq!(body["error"], "wrong_code", "{body}");
}

fn audit_lines(workspace: &Workspace) -> Vec<Value> {
    workspace
        .read(".authrun/audit.log")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect()
}

fn assert_names_the_problem(out: &Finished, file: &Path) {
    assert_eq!(out.code(), 2, "{out:#?}");
    let shown = file.display().to_string();
    assert!(out.stderr.contains(&shown), "no `{shown}`: {out:#?}");
    assert!(out.stderr.contains("totp.secret"), "no key: {out:#?}");
    assert!(
        out.stderr.contains(&format!("chmod 600 {shown}")),
        "no fix: {out:#?}"
    );
    assert!(!out.stderr.contains(SECRET), "the secret was printed: {out:#?}");
}

#[test]
fn serve_refuses_a_config_with_the_secret_that_others_can_read() {
    let workspace = Workspace::configured(SCRIPT, "");
    chmod(&workspace.config(), 0o644);
    let out = serve_refused(&workspace);
    assert_names_the_problem(&out, &workspace.config());
    assert!(out.stdout.is_empty(), "{out:#?}");

    let mut server = serve_configured(&workspace, &["--insecure-permissions"]);
    assert_eq!(server.get("/healthz").status, 200);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn serve_refuses_a_secret_file_that_others_can_read() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", SCRIPT);
    workspace.write(
        "authrun.toml",
        "[script]\npath = \"deploy.sh\"\n\n[totp]\nsecret_file = \"secret.txt\"\n",
    );
    let secret = workspace.write("secret.txt", &format!("{SECRET}\n"));
    chmod(&secret, 0o644);
    let out = serve_refused(&workspace);
    assert_names_the_problem(&out, &secret);

    let mut server = serve_configured(&workspace, &["--insecure-permissions"]);
    assert_eq!(server.get("/healthz").status, 200);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn a_readable_config_without_the_secret_in_it_is_fine() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", SCRIPT);
    let config = workspace.write(
        "authrun.toml",
        "[script]\npath = \"deploy.sh\"\n\n[totp]\nsecret_file = \"secret.txt\"\n",
    );
    chmod(&config, 0o644);
    workspace.write("secret.txt", SECRET);
    let server = serve_configured(&workspace, &[]);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn unlock_lifts_one_clients_ban_in_a_running_server() {
    let workspace = Workspace::configured(SCRIPT, "");
    let server = serve_configured(&workspace, &[]);
    get_banned(&server);

    let other = unlock(&workspace, &["--client", "192.0.2.1"]);
    assert_eq!(other.code(), 0, "{other:#?}");
    assert!(other.stdout.contains("192.0.2.1 was not banned"), "{other:#?}");
    assert_banned(&server);

    let out = unlock(&workspace, &["--client", "127.0.0.1"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("The ban on 127.0.0.1 is lifted"), "{out:#?}");
    assert_checked(&server);

    let lines = audit_lines(&workspace);
    let unlocked: Vec<&Value> = lines
        .iter()
        .filter(|line| line["event"] == "unlocked")
        .map(|line| &line["client"])
        .collect();
    assert_eq!(unlocked, ["192.0.2.1", "127.0.0.1"], "{lines:#?}");
}

#[test]
fn unlock_all_lifts_every_ban_in_a_running_server() {
    let workspace = Workspace::configured(SCRIPT, "");
    let server = serve_configured(&workspace, &[]);
    get_banned(&server);

    let out = unlock(&workspace, &["--all"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "Lifted 1 ban or pause.", "{out:#?}");
    assert_checked(&server);
    let lines = audit_lines(&workspace);
    assert!(
        lines
            .iter()
            .any(|line| line["event"] == "unlocked" && line["client"] == "all"),
        "{lines:#?}"
    );
}

#[test]
fn unlock_needs_exactly_one_of_client_and_all() {
    let workspace = Workspace::configured(SCRIPT, "");
    for (args, named) in [
        (&[][..], "--client"),
        (&["--client", "127.0.0.1", "--all"][..], "--all"),
        (&["--client", "not-an-address"][..], "not-an-address"),
    ] {
        let out = unlock(&workspace, args);
        assert_eq!(out.code(), 2, "{args:?}: {out:#?}");
        assert!(out.stderr.starts_with("error:"), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(named), "{args:?}: {out:#?}");
    }
    assert!(
        !workspace.join(".authrun/regulation.json").exists(),
        "a refused unlock wrote the state"
    );
}

#[test]
fn a_ban_survives_a_real_restart_and_unlock_works_while_stopped() {
    let workspace = Workspace::configured(SCRIPT, "");
    let mut server = serve_configured(&workspace, &[]);
    get_banned(&server);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.stderr());

    let mut restarted = serve_configured(&workspace, &[]);
    assert_banned(&restarted);
    restarted.signal(Signal::SIGTERM);
    assert!(restarted.wait_exit().success(), "{}", restarted.stderr());

    let out = unlock(&workspace, &["--client", "127.0.0.1"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let third = serve_configured(&workspace, &[]);
    assert_checked(&third);
    let (status, body) = post_code(&third, &code_now(SECRET));
    assert_eq!(status, 200, "{body}\n{}", third.stderr());
}
