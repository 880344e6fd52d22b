//! Notifications as the people told of runs meet them: a real SMTP server (aiosmtpd) takes the mail, a
//! real HTTP receiver the webhooks; the retries' backoff is waited on the manual clock the test moves.

use authrun::clock::Clock;

use crate::common::{SmtpServer, Then, WebhookReceiver, expected_signature};
use crate::helpers::{TestApp, audit_lines, eventually, start_action, start_run};

/// Prints two lines and fails (exit 3, the second line on stderr) when `fail` exists in its directory.
const PASS_OR_FAIL: &str = "#!/bin/sh\necho \"\\033[32mstep one\\033[0m\"\n\
    if [ -f fail ]; then echo 'it broke' >&2; exit 3; fi\necho fine\n";
const FAILING: &str = "#!/bin/sh\necho 'it broke'\nexit 1\n";

/// A key file outside the app's directory (the app's is made when it is built).
fn key_file(key: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("hook.key");
    std::fs::write(&path, format!("{key}\n")).expect("write the key");
    let path = path.display().to_string();
    (dir, path)
}

/// The audit log's notification lines.
fn notification_lines(app: &TestApp) -> Vec<serde_json::Value> {
    audit_lines(app)
        .into_iter()
        .filter(|line| line["event"] == "notification")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_mailed_and_posted_signed_and_a_succeeded_one_is_not() {
    let smtp = SmtpServer::start();
    let hook = WebhookReceiver::start(&[], Then::Answer(200));
    let (_keys, key) = key_file("shared-key");
    let app = TestApp::builder()
        .script(PASS_OR_FAIL)
        .cooldown(0)
        .config(&format!(
            "[server]\npublic_url = \"https://deploy.example.com\"\n\
             [mail]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"authrun <authrun@example.com>\"\n\
             [[notify]]\nemail = [\"ops@example.com\"]\nwebhook = \"{}\"\nwebhook_secret_file = \"{key}\"\n",
            smtp.port, hook.url
        ))
        .build();

    // Succeeded: the default `on` (failed, timed_out, interrupted) says nothing of it.
    let succeeded = start_run(&app, &app.code_now()).await;
    app.wait_for_run(succeeded).await;
    app.advance(30);
    std::fs::write(app.path("fail"), "").unwrap();
    let failed = start_run(&app, &app.code_now()).await;
    let record = app.wait_for_run(failed).await;
    assert_eq!(record.exit_code, Some(3));

    eventually("the webhook arrives", || !hook.received().is_empty()).await;
    eventually("the mail arrives", || !smtp.messages().is_empty()).await;
    eventually("both are audited", || notification_lines(&app).len() >= 2).await;

    let received = hook.received();
    assert_eq!(received.len(), 1, "only the failed run is told of");
    let post = &received[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/hook?token=t0ps3cret");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert!(post.header("user-agent").unwrap().starts_with("authrun/"));
    assert_eq!(
        post.header("x-authrun-signature"),
        Some(expected_signature(b"shared-key", &post.body).as_str()),
        "the signature verifies with the shared key"
    );
    let json = post.json();
    assert_eq!(json["action"], "deploy");
    assert_eq!(json["action_name"], "Deploy");
    assert_eq!(json["run_id"], failed);
    assert_eq!(json["status"], "Deploy failed");
    assert_eq!(json["kind"], "failed");
    assert_eq!(json["exit_code"], 3);
    assert_eq!(json["by"], serde_json::Value::Null);
    assert_eq!(json["url"], format!("https://deploy.example.com/runs/{failed}"));
    assert!(json["started"].as_str().unwrap().ends_with('Z'));
    assert!(json["finished"].is_string());
    assert!(json["duration_ms"].is_u64());
    // stdout and stderr are read apart, so their lines' order between them is not fixed.
    let mut output: Vec<&str> = json["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    output.sort_unstable();
    assert_eq!(
        output,
        ["it broke", "step one"],
        "the last lines, escape sequences removed"
    );

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let mail = &messages[0];
    assert!(
        mail.contains(&format!("Subject: [authrun] Deploy failed: deploy run #{failed}")),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("From: authrun <authrun@example.com>"), "{mail}");
    assert!(mail.contains("Exit code:  3"), "{mail}");
    assert!(
        mail.contains(&format!("Page:       https://deploy.example.com/runs/{failed}")),
        "{mail}"
    );
    assert!(mail.contains("Last 2 lines of output:"), "{mail}");
    assert!(
        mail.contains("    step one\n") && mail.contains("    it broke\n"),
        "{mail}"
    );

    let lines = notification_lines(&app);
    let channel = |name: &str| lines.iter().find(|line| line["channel"] == name).unwrap().clone();
    let (mail_line, hook_line) = (channel("email"), channel("webhook"));
    assert_eq!(mail_line["to"], "ops@example.com");
    assert_eq!(mail_line["result"], "delivered");
    assert_eq!(hook_line["result"], "delivered");
    assert_eq!(hook_line["run_id"], failed);
    assert_eq!(hook_line["tries"], 1);
    let host = hook.url.trim_start_matches("http://").split('/').next().unwrap();
    assert_eq!(
        hook_line["to"], host,
        "only the host, never the path and its token"
    );
    let audit = std::fs::read_to_string(app.path(".authrun/audit.log")).unwrap();
    assert!(
        !audit.contains("t0ps3cret") && !audit.contains("shared-key"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_actions_and_statuses_are_told_of() {
    let hook = WebhookReceiver::start(&[], Then::Answer(204));
    let app = TestApp::builder()
        .action("build", FAILING, "cooldown_seconds = 0")
        .action("release", FAILING, "cooldown_seconds = 0")
        .config(&format!(
            "[[notify]]\nactions = [\"release\"]\non = [\"failed\", \"started\"]\nwebhook = \"{}\"\noutput_lines = 0\n",
            hook.url
        ))
        .build();
    let build = start_action(&app, "build", &app.code_now()).await;
    app.wait_for_run(build).await;
    app.advance(30);
    let release = start_action(&app, "release", &app.code_now()).await;
    app.wait_for_run(release).await;
    eventually("the release's start and end are posted", || {
        hook.received().len() >= 2
    })
    .await;
    let kinds: Vec<(String, u64)> = hook
        .received()
        .iter()
        .map(|post| {
            let json = post.json();
            assert_eq!(json["action"], "release");
            assert_eq!(json["output"], serde_json::json!([]), "output_lines = 0");
            (
                json["kind"].as_str().unwrap().to_string(),
                json["run_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(kinds.contains(&("running".into(), release)), "{kinds:?}");
    assert!(kinds.contains(&("failed".into(), release)), "{kinds:?}");
    assert_eq!(kinds.len(), 2, "nothing of `build`: {kinds:?}");
}

/// Moves the clock a backoff's worth at a time until the receiver got `count` requests: the worker
/// waits on the clock between tries, and a move made before it began to wait does not count.
async fn advance_until_received(app: &TestApp, hook: &WebhookReceiver, count: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while hook.received().len() < count {
        assert!(tokio::time::Instant::now() < deadline, "try {count} never came");
        app.advance(61);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_tried_three_times_then_delivered_or_given_up() {
    for (statuses, then, result) in [
        (&[500, 500][..], Then::Answer(200), "delivered"),
        (&[][..], Then::Answer(500), "failed"),
    ] {
        let hook = WebhookReceiver::start(statuses, then);
        let app = TestApp::builder()
            .script(FAILING)
            .config(&format!("[[notify]]\nwebhook = \"{}\"\n", hook.url))
            .build();
        let started = app.clock.now();
        let run = start_run(&app, &app.code_now()).await;
        app.wait_for_run(run).await;
        eventually("the first try", || hook.received().len() == 1).await;
        advance_until_received(&app, &hook, 2).await;
        advance_until_received(&app, &hook, 3).await;
        eventually("the outcome is audited", || !notification_lines(&app).is_empty()).await;
        let line = &notification_lines(&app)[0];
        assert_eq!(line["result"], result, "{line}");
        assert_eq!(line["tries"], 3, "{line}");
        assert_eq!(line["channel"], "webhook");
        assert_eq!(hook.received().len(), 3, "no fourth try");
        assert!(
            app.clock.now() - started >= time::Duration::seconds(70),
            "the backoff waited on the clock"
        );
        if result == "failed" {
            assert_eq!(line["error"], "answered 500", "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_does_not_hold_up_the_next_run() {
    let hook = WebhookReceiver::start(&[], Then::Hang);
    let app = TestApp::builder()
        .script(PASS_OR_FAIL)
        .cooldown(0)
        .config(&format!("[[notify]]\nwebhook = \"{}\"\n", hook.url))
        .build();
    std::fs::write(app.path("fail"), "").unwrap();
    let first = start_run(&app, &app.code_now()).await;
    app.wait_for_run(first).await;
    eventually("the first run's webhook is being held", || hook.pending() == 1).await;

    app.advance(30);
    std::fs::remove_file(app.path("fail")).unwrap();
    let second = start_run(&app, &app.code_now()).await;
    let record = app.wait_for_run(second).await;
    assert_eq!(record.exit_code, Some(0));
    assert_eq!(
        hook.pending(),
        1,
        "the second run started and ended while the first run's webhook was still unanswered"
    );
    assert_eq!(hook.received().len(), 1);
}
