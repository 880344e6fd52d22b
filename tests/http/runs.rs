//! Running the script and keeping a history that never loses a run: how the script is started and
//! stopped, where its output goes, and how history.json is written, read back and recovered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::Value;
use time::macros::datetime;

use crate::common::process_ended;
use crate::helpers::{
    BLOCKING_SCRIPT, START, TestApp, assert_gone, let_script_finish, pid_written, run_one_after_another,
    start_run, tcp_client,
};

/// The entry of run `id` in a history list (the file on disk or the status answer's `history`).
fn entry(list: &Value, id: u64) -> Value {
    list.as_array()
        .expect("a history list")
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("run {id} is not in {list:#}"))
        .clone()
}

/// The ids in a history list, oldest first.
fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("a history list")
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect()
}

/// The ids in the in-memory history, oldest first.
fn ids_in_memory(app: &TestApp) -> Vec<u64> {
    app.state
        .runner
        .history()
        .snapshot()
        .iter()
        .filter_map(|r| r.id)
        .collect()
}

/// Removes a directory when dropped (for a temp dir whose own cleanup was disabled).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Overwrites the history file with `bytes` and restarts on it: start-up must fail with an error that
/// names the file and the line, and leave the file as it was.
fn assert_start_up_refuses_history(bytes: &[u8]) {
    let mut app = TestApp::builder().build();
    // A failed start drops the temp dir; keep it so the file can be inspected afterwards.
    app.dir.disable_cleanup(true);
    let dir = app.dir.path().to_path_buf();
    let _cleanup = RemoveOnDrop(dir.clone());
    let history = app.path("history.json");
    std::fs::write(&history, bytes).expect("write history");
    let error = match app.restart() {
        Ok(_) => panic!("authrun started on an unusable history file"),
        Err(error) => error,
    };
    assert!(error.contains(&history.display().to_string()), "{error}");
    assert!(error.contains("line"), "{error}");
    let after = std::fs::read(&history).expect("the history file is still there");
    assert_eq!(after, bytes, "the refused file was changed");
}

#[tokio::test]
async fn the_exit_code_decides_success_or_failure() {
    for (exit, status) in [(0, "Deploy succeeded"), (3, "Deploy failed")] {
        let app = TestApp::builder()
            .script(&format!("#!/bin/sh\necho working\nexit {exit}\n"))
            .build();
        let id = start_run(&app, &app.code_now()).await;
        let record = app.wait_for_run(id).await;
        assert_eq!(record.id, Some(id));
        assert_eq!(record.status.as_str(), status, "exit {exit}");
        assert_eq!(record.exit_code, Some(exit));
        assert!(record.finished.is_some(), "{record:?}");
        assert!(record.duration_ms.is_some(), "{record:?}");

        let on_disk = entry(&app.history_on_disk(), id);
        assert_eq!(on_disk["status"], status, "{on_disk}");
        assert_eq!(on_disk["exit_code"], exit, "{on_disk}");
        assert!(on_disk["finished"].is_string(), "{on_disk}");
        assert!(on_disk["duration_ms"].is_u64(), "{on_disk}");
    }
}

#[tokio::test]
async fn the_entry_is_on_disk_as_soon_as_the_run_starts() {
    let app = TestApp::builder().script(BLOCKING_SCRIPT).build();
    let id = start_run(&app, &app.code_now()).await;

    let on_disk = app.history_on_disk();
    assert_eq!(ids(&on_disk), [id], "{on_disk:#}");
    let started = entry(&on_disk, id);
    assert_eq!(started["status"], "Deploying", "{started}");
    assert_eq!(started["time"], "2026-11-25T12:00:10Z", "{started}");

    app.advance(5);
    let_script_finish(&app);
    let record = app.wait_for_run(id).await;
    assert_eq!(record.status.as_str(), "Deploy succeeded");
    assert_eq!(record.duration_ms, Some(5_000));

    let on_disk = app.history_on_disk();
    assert_eq!(ids(&on_disk), [id], "still one entry: {on_disk:#}");
    let finished = entry(&on_disk, id);
    assert_eq!(finished["status"], "Deploy succeeded", "{finished}");
    assert_eq!(finished["finished"], "2026-11-25T12:00:15Z", "{finished}");
    assert_eq!(finished["duration_ms"], 5_000, "{finished}");
}

#[tokio::test]
async fn the_scripts_output_goes_to_a_log_file_per_run() {
    let app = TestApp::builder()
        .script("#!/bin/sh\necho to-stdout\necho to-stderr >&2\n")
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let record = app.wait_for_run(id).await;

    let name = format!("{id}.log");
    assert_eq!(record.log.as_deref(), Some(name.as_str()));
    assert_eq!(entry(&app.history_on_disk(), id)["log"], name.as_str());
    let log = app.path(".authrun").join("runs").join(&name);
    let text =
        std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{} cannot be read: {e}", log.display()));
    // Each line keeps the stream it came from: `o ` for stdout, `e ` for stderr.
    assert!(text.lines().any(|l| l == "o to-stdout"), "{text}");
    assert!(text.lines().any(|l| l == "e to-stderr"), "{text}");
}

#[tokio::test]
async fn the_script_runs_directly_with_its_args_dir_and_a_clean_environment() {
    let work = tempfile::tempdir().expect("working dir");
    let app = TestApp::builder()
        .script(
            "#!/bin/sh\n\
             printf '%s\\n' \"$0\" > argv0.txt\n\
             printf '%s\\n' \"$@\" > args.txt\n\
             if read line; then echo \"got:$line\" > stdin.txt; else echo EOF > stdin.txt; fi\n\
             env > env.txt\n",
        )
        .script_key(r#"args = ["first arg", "--second", "$HOME"]"#)
        .script_key(&format!("working_dir = \"{}\"", work.path().display()))
        .build();
    set_leaking_variable();

    let id = start_run(&app, &app.code_now()).await;
    let record = app.wait_for_run(id).await;
    assert_eq!(record.status.as_str(), "Deploy succeeded");

    let read = |name: &str| {
        std::fs::read_to_string(work.path().join(name))
            .unwrap_or_else(|e| panic!("{name} is not in the working dir: {e}"))
    };
    assert_eq!(
        read("argv0.txt").trim_end(),
        app.path("deploy.sh").display().to_string()
    );
    assert_eq!(
        read("args.txt").lines().collect::<Vec<_>>(),
        ["first arg", "--second", "$HOME"]
    );
    assert_eq!(read("stdin.txt").trim_end(), "EOF");
    assert!(!app.path("env.txt").exists(), "the script ran in the config dir");

    let env = read("env.txt");
    let authrun_vars: Vec<&str> = env.lines().filter(|l| l.starts_with("AUTHRUN_")).collect();
    assert_eq!(authrun_vars, [format!("AUTHRUN_RUN_ID={id}")], "{env}");
}

/// Puts an `AUTHRUN_*` variable into authrun's own environment, one the script must not see.
#[allow(unsafe_code)]
fn set_leaking_variable() {
    // SAFETY: edition 2024 makes `set_var` unsafe because C code in another thread could read the
    // environment at the same time. Nothing in this test binary reads it outside Rust's own lock, and
    // every test sets the same value.
    unsafe { std::env::set_var("AUTHRUN_TEST_LEAK", "1") };
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let app = TestApp::builder()
        .script(
            "#!/bin/sh\n\
             sh -c 'trap \"\" TERM; echo $$ > child.pid; exec sleep 60' &\n\
             while [ ! -s child.pid ]; do sleep 0.01; done\n\
             echo $$ > script.pid\n\
             sleep 60\n",
        )
        .script_key("timeout_seconds = 600")
        .script_key("kill_grace_seconds = 60")
        .build();
    let id = start_run(&app, &app.code_now()).await;
    let script = pid_written(&app, "script.pid").await;
    let pid = pid_written(&app, "child.pid").await;

    // The timeout: SIGTERM to the group ends the script; the child ignores it for the grace period.
    app.advance(600);
    assert_gone(script, "the script").await;
    assert!(
        !process_ended(pid),
        "the child was killed before the grace period was over"
    );
    app.advance(60);
    let record = app.wait_for_run(id).await;

    assert_eq!(record.status.as_str(), "Timed out");
    assert!(record.finished.is_some(), "{record:?}");
    assert_eq!(entry(&app.history_on_disk(), id)["status"], "Timed out");
    assert_gone(pid, "the child that ignores SIGTERM").await;
}

#[tokio::test]
async fn a_command_the_script_left_running_in_its_group_ends_with_the_run() {
    let app = TestApp::builder()
        .script("#!/bin/sh\nsleep 301 &\necho $! > child.pid\necho done\n")
        .build();
    let id = start_run(&app, &app.code_now()).await;
    assert_eq!(app.wait_for_run(id).await.status.as_str(), "Deploy succeeded");
    let pid: i32 = std::fs::read_to_string(app.path("child.pid"))
        .expect("the script wrote the pid")
        .trim()
        .parse()
        .expect("a pid");
    // Stopped before the end of the run is recorded.
    let left = !process_ended(pid);
    if left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    assert!(!left, "`sleep 301 &` (pid {pid}) outlived the run");
}

#[tokio::test]
async fn a_run_left_deploying_by_a_crash_is_recovered_as_interrupted() {
    let crashed_at = datetime!(2026-11-25 11:59:00 UTC);
    let step = crashed_at.unix_timestamp() / 30;
    let app = TestApp::builder()
        .history(&format!(
            r#"[{{"time": "2026-11-25T11:59:00Z", "status": "Deploying", "id": 4, "totp_step": {step}}}]"#
        ))
        .build();

    assert_eq!(app.record(4).expect("run 4").status.as_str(), "Interrupted");
    let status = app.status().await;
    assert_eq!(entry(&status["history"], 4)["status"], "Interrupted");
    assert_ne!(status["state"], "running", "{status}");
    assert_eq!(entry(&app.history_on_disk(), 4)["status"], "Interrupted");

    // The cooldown counts from the interrupted run's start: 11:59:00 + 180 s = 12:02:00.
    let early = app.post_verify(&app.code_now()).await;
    assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS, "{}", early.text());
    app.advance((datetime!(2026-11-25 12:02:00 UTC) - START).whole_seconds());
    let id = start_run(&app, &app.code_now()).await;
    assert_eq!(id, 5);
    assert_eq!(app.wait_for_run(id).await.status.as_str(), "Deploy succeeded");
    assert_eq!(ids(&app.history_on_disk()), [4, 5]);
}

#[tokio::test]
async fn the_original_history_file_is_read_and_kept() {
    let app = TestApp::builder()
        .history(r#"[{"time": "2024-05-01T12:00:00.123456", "status": "Deploy succeeded"}]"#)
        .build();

    let status = app.status().await;
    let old = &status["history"][0];
    assert_eq!(old["time"], "2024-05-01T12:00:00.123456Z", "{status}");
    assert_eq!(old["status"], "Deploy succeeded", "{status}");

    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    let on_disk = app.history_on_disk();
    let list = on_disk.as_array().expect("a list");
    assert_eq!(list.len(), 2, "{on_disk:#}");
    assert_eq!(list[0]["time"], "2024-05-01T12:00:00.123456Z", "{on_disk:#}");
    assert_eq!(list[0]["status"], "Deploy succeeded", "{on_disk:#}");
    assert!(list[0].get("id").is_none(), "{on_disk:#}");
    assert_eq!(list[1]["id"], id, "{on_disk:#}");
}

#[tokio::test]
async fn a_corrupt_history_file_stops_start_up_and_is_left_untouched() {
    let garbage = b"[\n  {\"time\": \"2024-05-01T12:00:00\", \"status\": \"Deploy succeeded\"},\n  {oops\n";
    assert_start_up_refuses_history(garbage);
}

#[tokio::test]
async fn a_history_entry_with_an_unknown_status_stops_start_up() {
    let unknown = br#"[{"time": "2024-05-01T12:00:00", "status": "Deploy exploded"}]"#;
    assert_start_up_refuses_history(unknown);
}

#[tokio::test]
async fn history_writes_are_atomic() {
    let app = TestApp::builder().cooldown(0).history("[]").build();
    let path = app.path("history.json");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let path = path.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&path).expect("history.json is always there");
                if let Err(error) = serde_json::from_slice::<Value>(&bytes) {
                    panic!(
                        "a partial history file was read ({error}): {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                reads += 1;
            }
            reads
        })
    };

    const RUNS: usize = 15;
    run_one_after_another(&app, RUNS).await;
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("every read parsed as JSON");
    assert!(reads > 0);
    assert_eq!(ids(&app.history_on_disk()).len(), RUNS);

    let leftovers: Vec<String> = std::fs::read_dir(app.dir.path())
        .expect("read dir")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn retention_keeps_the_newest_runs() {
    let app = TestApp::builder()
        .cooldown(0)
        .config("[history]\nretention = 3")
        .build();
    let started = run_one_after_another(&app, 5).await;
    let newest = &started[2..];
    assert_eq!(ids_in_memory(&app), newest);
    assert_eq!(ids(&app.history_on_disk()), newest);
    assert_eq!(ids(&app.status().await["history"]), newest);
}

#[tokio::test]
async fn the_status_is_answered_from_memory() {
    let app = TestApp::builder().build();
    let id = start_run(&app, &app.code_now()).await;
    app.wait_for_run(id).await;
    std::fs::remove_file(app.path("history.json")).expect("remove history.json");

    let status = app.status().await;
    assert_eq!(
        entry(&status["history"], id)["status"],
        "Deploy succeeded",
        "{status}"
    );
}

#[tokio::test]
async fn a_graceful_shutdown_records_the_running_run_as_interrupted() {
    let app = TestApp::builder().script("#!/bin/sh\nsleep 30\n").build();
    let server = app.serve_tcp().await;
    let id = {
        let response = tcp_client()
            .post(server.url("/verify"))
            .form(&[("code", app.code_now())])
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        body["run_id"].as_u64().expect("run_id")
    };
    assert_eq!(app.status().await["state"], "running");

    server.shutdown().await;

    let record = app.record(id).expect("the run is recorded");
    assert_eq!(record.status.as_str(), "Interrupted");
    assert!(record.finished.is_some(), "{record:?}");
    let on_disk = entry(&app.history_on_disk(), id);
    assert_eq!(on_disk["status"], "Interrupted", "{on_disk}");
    assert!(on_disk["finished"].is_string(), "{on_disk}");
}

#[tokio::test]
async fn a_shutdown_that_finds_a_run_admitted_but_never_started_does_not_wait_for_it() {
    // The gate holds a run admitted whose audit line, say, could not be written: it is given up.
    let app = TestApp::builder().build();
    let runner = std::sync::Arc::clone(&app.state.runner);
    let admission = runner.admit(app.clock_now(), |_| Ok(1)).await.expect("admitted");
    let shutdown = tokio::spawn({
        let runner = std::sync::Arc::clone(&runner);
        async move { runner.shutdown().await }
    });
    tokio::task::yield_now().await;
    runner.abandon(admission);
    tokio::time::timeout(std::time::Duration::from_secs(10), shutdown)
        .await
        .expect("the shutdown returned")
        .expect("the shutdown task");
    assert_eq!(app.script_runs(), 0);
}

#[tokio::test]
async fn a_script_that_cannot_start_is_recorded_as_failed_and_frees_the_gate() {
    let app = TestApp::builder()
        .script("#!/nonexistent/interp\necho never\n")
        .build();
    let response = app.post_verify(&app.code_now()).await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");

    let status = app.status().await;
    assert_ne!(status["state"], "running", "{status}");
    let run = &status["history"][0];
    assert_eq!(run["status"], "Deploy failed", "{status}");
    assert!(run["error"].is_string(), "{status}");
    let on_disk = &app.history_on_disk()[0];
    assert_eq!(on_disk["status"], "Deploy failed", "{on_disk}");
    assert!(on_disk["error"].is_string(), "{on_disk}");
}
