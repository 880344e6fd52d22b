//! `authrun mail test`, the mail and notification settings as check-config shows them, and a served
//! failing run told of by mail, with a webhook that never answers at shutdown.

use nix::sys::signal::Signal;

use crate::common::{SmtpServer, Then, WebhookReceiver, free_port};
use crate::support::{DEPLOY_SCRIPT, SECRET, Workspace, authrun, run, serve_configured, start_run, wait_for};

/// A workspace whose config sends mail to a relay on 127.0.0.1 at `port`; `extra` is appended.
fn with_mail(port: u16, extra: &str) -> Workspace {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", "#!/bin/sh\necho 'about to fail'\nexit 4\n");
    workspace.write(
        "authrun.toml",
        &format!(
            "[script]\npath = \"deploy.sh\"\ncooldown_seconds = 0\n\n[totp]\nsecret = \"{SECRET}\"\n\n\
             [mail]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\
             from = \"authrun <authrun@example.com>\"\n{extra}"
        ),
    );
    workspace
}

#[test]
fn mail_test_sends_through_the_server_and_prints_its_answer() {
    let smtp = SmtpServer::start();
    let workspace = with_mail(smtp.port, "");
    let finished = run(authrun(workspace.path())
        .arg("--config")
        .arg(workspace.config())
        .args(["mail", "test", "ops@example.com"]));
    assert_eq!(finished.code(), 0, "{finished:#?}");
    assert!(
        finished.stdout.contains(&format!(
            "127.0.0.1:{} took the message for ops@example.com: 250 ",
            smtp.port
        )),
        "{finished:#?}"
    );
    let messages = smtp.wait_for_messages(1);
    assert!(
        messages[0].contains("Subject: [authrun] Test message"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("To: ops@example.com"), "{}", messages[0]);
}

#[test]
fn mail_test_says_why_nothing_was_sent() {
    let closed = with_mail(free_port(), "");
    let finished = run(authrun(closed.path()).arg("--config").arg(closed.config()).args([
        "mail",
        "test",
        "ops@example.com",
    ]));
    assert_eq!(finished.code(), 1, "{finished:#?}");
    assert!(
        finished.stderr.contains("the test message was not sent"),
        "{finished:#?}"
    );
    assert!(finished.stderr.contains("Connection refused"), "{finished:#?}");
    assert!(finished.stderr.contains("fix: "), "{finished:#?}");

    let finished = run(authrun(closed.path()).arg("--config").arg(closed.config()).args([
        "mail",
        "test",
        "not an address",
    ]));
    assert_eq!(finished.code(), 1, "{finished:#?}");
    assert!(finished.stderr.contains("is not a mail address"), "{finished:#?}");

    let without = Workspace::configured(DEPLOY_SCRIPT, "");
    let finished = run(authrun(without.path())
        .arg("--config")
        .arg(without.config())
        .args(["mail", "test", "ops@example.com"]));
    assert_eq!(finished.code(), 2, "{finished:#?}");
    assert!(finished.stderr.contains("mail is not set up"), "{finished:#?}");
    assert!(
        finished.stderr.contains("fix: add a [mail] section"),
        "{finished:#?}"
    );
}

#[test]
fn check_config_shows_mail_without_its_password_and_refuses_plain_text_to_a_remote_host() {
    let workspace = with_mail(2525, "username = \"me\"\n");
    let finished = run(authrun(workspace.path())
        .env("AUTHRUN_MAIL_PASSWORD", "hunter2-do-not-print")
        .arg("--config")
        .arg(workspace.config())
        .arg("check-config"));
    assert_eq!(finished.code(), 0, "{finished:#?}");
    assert!(finished.stdout.contains("127.0.0.1:2525"), "{finished:#?}");
    assert!(finished.stdout.contains("password set"), "{finished:#?}");
    assert!(!format!("{finished:?}").contains("hunter2"), "{finished:#?}");

    let remote = with_mail(25, "");
    let text = remote
        .read("authrun.toml")
        .replace("127.0.0.1", "smtp.example.com");
    remote.write("authrun.toml", &text);
    let finished = run(authrun(remote.path())
        .arg("--config")
        .arg(remote.config())
        .arg("check-config"));
    assert_eq!(finished.code(), 2, "{finished:#?}");
    assert!(finished.stderr.contains("`mail.security`"), "{finished:#?}");
    assert!(finished.stderr.contains("authrun.toml:"), "{finished:#?}");
    assert!(
        finished.stderr.contains("fix: use security = \"starttls\""),
        "{finished:#?}"
    );
}

#[test]
fn a_served_failing_run_is_mailed_and_shutdown_gives_a_hanging_webhook_only_a_grace() {
    let smtp = SmtpServer::start();
    let hook = WebhookReceiver::start(&[], Then::Hang);
    let workspace = with_mail(
        smtp.port,
        &format!(
            "\n[[notify]]\nemail = [\"ops@example.com\"]\nwebhook = \"{}\"\n",
            hook.url
        ),
    );
    let mut server = serve_configured(&workspace, &[]);
    let id = start_run(&server, SECRET);
    let messages = smtp.wait_for_messages(1);
    assert!(
        messages[0].contains(&format!("Subject: [authrun] Deploy failed: deploy run #{id}")),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("Exit code:  4"), "{}", messages[0]);
    assert!(messages[0].contains("    about to fail\n"), "{}", messages[0]);
    wait_for("the webhook to be held open", || {
        (hook.pending() == 1).then_some(())
    });

    server.signal(Signal::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "{}", server.stderr());
    let log = server.stderr();
    assert!(
        log.contains("gave up on the notifications still being sent at shutdown"),
        "{log}"
    );
    assert!(
        !log.contains("t0ps3cret"),
        "the webhook's token is never logged:\n{log}"
    );
    let audit: Vec<_> = workspace
        .audit_lines()
        .into_iter()
        .filter(|line| line["event"] == "notification")
        .collect();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["channel"], "email");
    assert_eq!(audit[0]["result"], "delivered");
}
