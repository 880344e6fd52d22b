//! `authrun operator ...` as an admin types it on the server: the real binary on a real operators file,
//! with and without a running server.

use serde_json::Value;

use crate::support::{Workspace, authrun, link_path, operator, run, serve_configured};

const OPERATORS: &str = "\n[auth]\nmode = \"operators\"\n";

fn workspace() -> Workspace {
    let workspace = Workspace::configured("#!/bin/sh\necho deployed\n", "cooldown_seconds = 0");
    let config = workspace.read("authrun.toml");
    workspace.write("authrun.toml", &format!("{config}{OPERATORS}"));
    workspace
}

fn list(workspace: &Workspace) -> Vec<Value> {
    let listed = operator(workspace, &["list", "--json"]);
    assert_eq!(listed.code(), 0, "{listed:?}");
    serde_json::from_str::<Value>(&listed.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn operators_are_added_listed_refused_and_removed_from_the_command_line() {
    let workspace = workspace();
    let added = operator(
        &workspace,
        &["add", "alice", "--role", "admin", "--email", "alice@example.com"],
    );
    assert_eq!(added.code(), 0, "{added:?}");
    assert!(added.stdout.contains("/enroll/"), "{}", added.stdout);
    let rows = list(&workspace);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "alice");
    assert_eq!(rows[0]["role"], "admin");
    assert_eq!(rows[0]["email"], "alice@example.com");
    assert_eq!(rows[0]["enrolled"], false);
    // The token is printed, never stored.
    let token = link_path(&added.stdout).rsplit('/').next().unwrap().to_string();
    assert!(!workspace.read(".authrun/operators.json").contains(&token));

    let again = operator(&workspace, &["add", "alice"]);
    assert_eq!(again.code(), 1);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    let bad = operator(&workspace, &["add", "Alice Smith"]);
    assert_eq!(bad.code(), 1);
    assert!(bad.stderr.contains("not an operator name"), "{}", bad.stderr);
    let last = operator(&workspace, &["remove", "alice"]);
    assert_eq!(last.code(), 1);
    assert!(last.stderr.contains("last admin"), "{}", last.stderr);
    let unknown = operator(&workspace, &["unlock", "bob"]);
    assert_eq!(unknown.code(), 1);
    assert!(unknown.stderr.contains("no operator bob"), "{}", unknown.stderr);

    assert_eq!(operator(&workspace, &["add", "bob"]).code(), 0);
    assert_eq!(operator(&workspace, &["remove", "bob"]).code(), 0);
    let names: Vec<Value> = list(&workspace).iter().map(|row| row["name"].clone()).collect();
    assert_eq!(names, ["alice"]);
    // Every change is in the audit log.
    let changes: Vec<String> = workspace
        .audit_lines()
        .iter()
        .filter(|line| line["event"] == "operator")
        .map(|line| {
            format!(
                "{} {}",
                line["user"].as_str().unwrap(),
                line["change"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(changes, ["alice added", "bob added", "bob removed"]);
}

#[test]
fn a_corrupt_operators_file_is_refused_and_left_as_it_is() {
    let workspace = workspace();
    workspace.write(".authrun/operators.json", "{\"operators\": {");
    let added = operator(&workspace, &["add", "alice"]);
    assert_eq!(added.code(), 1);
    assert!(added.stderr.contains("operators file"), "{}", added.stderr);
    assert!(added.stderr.contains("line 1"), "{}", added.stderr);
    assert_eq!(workspace.read(".authrun/operators.json"), "{\"operators\": {");
    let served = crate::support::serve_refused(&workspace);
    assert_ne!(served.code(), 0);
    assert!(served.stderr.contains("operators file"), "{}", served.stderr);
    assert_eq!(workspace.read(".authrun/operators.json"), "{\"operators\": {");
}

#[test]
fn a_reset_on_the_command_line_reaches_a_running_server_at_once() {
    let workspace = workspace();
    let added = operator(&workspace, &["add", "alice", "--role", "admin"]);
    let server = serve_configured(&workspace, &[]);
    let first = link_path(&added.stdout);
    let page = server.get(&first);
    assert_eq!(page.status, 200, "{page:?}");
    let reset = operator(&workspace, &["reset", "alice"]);
    assert_eq!(reset.code(), 0, "{reset:?}");
    let second = link_path(&reset.stdout);
    assert_ne!(first, second);
    assert_eq!(server.get(&first).status, 404, "the old link is dead");
    assert_eq!(server.get(&second).status, 200);
    let check = run(authrun(workspace.path())
        .arg("check-config")
        .arg("--config")
        .arg(workspace.config()));
    assert_eq!(check.code(), 0, "{check:?}");
    assert!(
        check.stdout.contains("auth         operators"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("not accepted in operators mode"),
        "{}",
        check.stdout
    );
}
