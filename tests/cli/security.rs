//! The operator's side of the security layer: `serve` refuses a secret others can read (unless told
//! `--insecure-permissions`), `unlock` lifts bans in a running server, and bans survive a real restart.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    DEPLOY_SCRIPT, Finished, SECRET, Server, Workspace, authrun, code_now, post_code, run, serve_configured,
    serve_refused, wait_for, wrong_code,
};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `authrun unlock ARGS --config FILE`.
fn unlock(workspace: &Workspace, args: &[&str]) -> Finished {
    run(authrun(workspace.path())
        .arg("unlock")
        .args(args)
        .arg("--config")
        .arg(workspace.config()))
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

/// Told `--insecure-permissions`, `serve` starts on the same files after all, and stops on SIGTERM.
fn assert_serves_when_told_insecure(workspace: &Workspace) {
    let mut server = serve_configured(workspace, &["--insecure-permissions"]);
    assert_eq!(server.get("/healthz").status, 200);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn serve_refuses_a_config_with_the_secret_that_others_can_read() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    chmod(&workspace.config(), 0o644);
    let out = serve_refused(&workspace);
    assert_names_the_problem(&out, &workspace.config());
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert_serves_when_told_insecure(&workspace);
}

#[test]
fn serve_refuses_a_secret_file_that_others_can_read() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
    workspace.write(
        "authrun.toml",
        "[script]\npath = \"deploy.sh\"\n\n[totp]\nsecret_file = \"secret.txt\"\n",
    );
    let secret = workspace.write("secret.txt", &format!("{SECRET}\n"));
    chmod(&secret, 0o644);
    let out = serve_refused(&workspace);
    assert_names_the_problem(&out, &secret);
    assert_serves_when_told_insecure(&workspace);
}

#[test]
fn a_readable_config_without_the_secret_in_it_is_fine() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
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
fn serve_refuses_a_mail_password_or_webhook_key_file_that_others_can_read() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.read("authrun.toml");
    workspace.write(
        "authrun.toml",
        &format!(
            "{config}\n[mail]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nusername = \"authrun\"\n\
             password_file = \"smtp.password\"\nfrom = \"authrun@example.com\"\n\n[[notify]]\non = [\"failed\"]\n\
             webhook = \"http://127.0.0.1:9/hook\"\nwebhook_secret_file = \"hook.key\"\n"
        ),
    );
    let password = workspace.write("smtp.password", "correct-horse-battery\n");
    let key = workspace.write("hook.key", "5f0c1e9a7d3b4c2e8f6a\n");
    for (file, name) in [
        (&key, "notify[1].webhook_secret_file"),
        (&password, "mail.password_file"),
    ] {
        chmod(file, 0o640);
        let out = serve_refused(&workspace);
        assert_eq!(out.code(), 2, "{out:#?}");
        let shown = file.display().to_string();
        assert!(out.stderr.contains(name), "no key: {out:#?}");
        assert!(
            out.stderr.contains(&format!("chmod 600 {shown}")),
            "no fix: {out:#?}"
        );
        assert!(
            !out.stderr.contains("correct-horse") && !out.stderr.contains("5f0c1e9a"),
            "a secret was printed: {out:#?}"
        );
        chmod(file, 0o600);
    }
    let server = serve_configured(&workspace, &[]);
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn unlock_lifts_one_clients_ban_in_a_running_server() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
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

    let lines = workspace.audit_lines();
    let unlocked: Vec<&Value> = lines
        .iter()
        .filter(|line| line["event"] == "unlocked")
        .map(|line| &line["client"])
        .collect();
    assert_eq!(unlocked, ["192.0.2.1", "127.0.0.1"], "{lines:#?}");
}

#[test]
fn unlock_all_lifts_every_ban_in_a_running_server() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let server = serve_configured(&workspace, &[]);
    get_banned(&server);

    let out = unlock(&workspace, &["--all"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "Lifted 1 ban or pause.", "{out:#?}");
    assert_checked(&server);
    let lines = workspace.audit_lines();
    assert!(
        lines
            .iter()
            .any(|line| line["event"] == "unlocked" && line["client"] == "all"),
        "{lines:#?}"
    );
}

#[test]
fn unlock_needs_exactly_one_of_client_and_all() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
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
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
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

/// The operator's story from issue 10: the token's hash set in the environment, not in the file, lets an
/// API client read a run's output.
#[test]
fn an_api_token_hash_from_the_environment_lets_the_client_read_output() {
    let token = authrun::auth::token::generate_token();
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let server = Server::start(
        authrun(workspace.path())
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(workspace.config())
            .env(
                "AUTHRUN_ACCESS_API_TOKEN_SHA256",
                authrun::auth::token::sha256_hex(&token),
            ),
    );
    let started = server.post_form("/verify", &format!("code={}", code_now(SECRET)));
    assert_eq!(started.status, 200, "{started:?}\n{}", server.stderr());
    let log = format!("/runs/{}/log", started.json()["run_id"]);

    assert_eq!(server.get(&log).status, 401, "without the token");
    assert_eq!(server.get_with_token(&log, "not-the-token").status, 401);
    let output = wait_for("the run's output", || {
        let reply = server.get_with_token(&log, &token);
        assert_eq!(reply.status, 200, "{reply:?}\n{}", server.stderr());
        reply.body.contains("deployed").then_some(reply.body)
    });
    assert!(!server.stderr().contains(&token), "the token was logged");
    assert!(output.contains("deployed"), "{output}");
}
