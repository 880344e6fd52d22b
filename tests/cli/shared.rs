//! What several instances on one PostgreSQL share live: the browser sessions. Real `authrun serve`
//! processes on a real database (`common::postgres`), and the session table driven directly with a
//! manual clock for its bounds.

use std::sync::Arc;

use authrun::clock::ManualClock;
use authrun::store::postgres::{Database, PgSessions, migrate};
use authrun::web::session::{Budgets, SharedStore};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};

use crate::attack::{
    addresses, assert_only, audit_lines, audited, connect_from, count, read_answer, runtime,
    serve_with_64_threads, verify_request,
};
use crate::common::postgres::Postgres;
use crate::instances::{history, instance};
use crate::support::{
    DEPLOY_SCRIPT, SECRET, Server, Workspace, authrun, code_at, link_path, now_unix, operator, run,
    serve_configured, start_run, wait_for, wrong_code,
};

const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

/// A browser: it keeps cookies (for 127.0.0.1 whatever the port, as for one name behind a load
/// balancer) and follows no redirect by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_verified_through_one_instance_reads_a_run_log_on_the_other() {
    let postgres = Postgres::start();
    let keys = "cooldown_seconds = 0";
    let (a, b) = (
        instance(&postgres, "#!/bin/sh\necho deployed\n", keys),
        instance(&postgres, "#!/bin/sh\necho deployed\n", keys),
    );
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    // A run on B, started by an API client; its log is on B.
    let run = start_run(&server_b, SECRET);
    wait_for("the run on B to end", || {
        (history(&server_b).first()?["status"] == "Deploy succeeded").then_some(())
    });
    let browser = browser();
    let log = format!("/runs/{run}/log");
    let unverified = browser.get(url(&server_b, &log)).send().await.expect("B answers");
    assert_eq!(unverified.status(), 401, "the log is not public");

    // The browser enters a code through A.
    let code = code_at(SECRET, now_unix() + 30);
    let posted = browser
        .post(url(&server_a, "/verify"))
        .header("accept", HTML)
        .form(&[("code", code)])
        .send()
        .await
        .expect("A answers");
    assert_eq!(posted.status(), 303, "{}", server_a.stderr());

    // B answers the same browser as verified.
    let read = browser.get(url(&server_b, &log)).send().await.expect("B answers");
    assert_eq!(read.status(), 200, "{}", server_b.stderr());
    assert_eq!(read.text().await.expect("the log"), "deployed\n");
    assert_eq!(
        postgres.psql("authrun", "SELECT count(*) FROM sessions WHERE verified"),
        "1"
    );
}

const START: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

/// A session's record; `verified` as a code makes it (the key the product's sessions use).
fn record(verified: bool) -> Record {
    let mut record = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: OffsetDateTime::UNIX_EPOCH,
    };
    record.data.insert(
        "authrun.flash".into(),
        serde_json::json!({"kind": "error", "message": "x"}),
    );
    if verified {
        record.data.insert(
            "authrun.verified_until".into(),
            serde_json::json!(START.unix_timestamp() + 3600),
        );
    }
    record
}

#[tokio::test]
async fn the_shared_session_table_keeps_each_kind_within_its_budget_and_expires_by_the_clock() {
    let postgres = Postgres::start();
    let database = Database::new(&postgres.url(), 4).expect("a pool");
    migrate(&database).await.expect("migrated");
    let clock = Arc::new(ManualClock::new(START));
    let budgets = Budgets {
        anonymous: 5,
        verified: 2,
    };
    let table = Arc::new(PgSessions::new(database));
    let store = SharedStore::new(clock.clone(), Duration::hours(1), budgets, table.clone());
    let mut operator = record(true);
    store.create(&mut operator).await.expect("kept");
    // A flood of anonymous sessions, each newer than the operator's: it pushes out only its own kind.
    let mut anonymous = Vec::new();
    for _ in 0..40 {
        clock.advance(Duration::seconds(1));
        let mut session = record(false);
        store.create(&mut session).await.expect("kept");
        anonymous.push(session.id);
    }
    assert!(store.load(&operator.id).await.expect("read").is_some());
    let count = |verified: bool| {
        postgres.psql(
            "authrun",
            &format!("SELECT count(*) FROM sessions WHERE verified = {verified}"),
        )
    };
    assert_eq!((count(false), count(true)), ("5".into(), "1".into()));
    assert!(store.load(&anonymous[0]).await.expect("read").is_none());
    assert!(store.load(&anonymous[39]).await.expect("read").is_some());

    // Three verified sessions in a budget of two: the one closest to expiring goes.
    for _ in 0..2 {
        clock.advance(Duration::seconds(1));
        store.create(&mut record(true)).await.expect("kept");
    }
    assert_eq!(count(true), "2");
    assert!(store.load(&operator.id).await.expect("read").is_none());

    // Expiry is by the product's clock, an hour after the last save.
    let newest = anonymous[39];
    clock.advance(Duration::minutes(59));
    assert!(store.load(&newest).await.expect("read").is_some());
    clock.advance(Duration::minutes(1));
    assert!(store.load(&newest).await.expect("read").is_none());
}

/// Opens one connection per source, to the instances in turn, sends every byte of a wrong code's
/// request but the last on each, then the last bytes one right after the other, so both instances get
/// them all at once. Returns the answers.
fn burst_across(servers: &[Server; 2], sources: &[Ipv4Addr], code: &str) -> Vec<(u16, serde_json::Value)> {
    let runtime = runtime();
    let requests = servers.each_ref().map(|server| verify_request(server, code, ""));
    let mut streams: Vec<(TcpStream, &[u8])> = sources
        .iter()
        .enumerate()
        .map(|(n, source)| {
            let request = &requests[n % 2];
            let (head, last) = request.split_at(request.len() - 1);
            let mut stream = connect_from(&runtime, *source, servers[n % 2].addr);
            stream.write_all(head).expect("send all but the last byte");
            (stream, last)
        })
        .collect();
    for (stream, last) in &mut streams {
        stream.write_all(last).expect("send the last byte");
    }
    streams
        .iter_mut()
        .map(|(stream, _)| read_answer(stream))
        .collect()
}

/// The wrong codes both instances' audit logs say they checked.
fn checked(workspaces: &[&Workspace; 2]) -> u64 {
    workspaces
        .iter()
        .map(|workspace| audited(&audit_lines(workspace), "wrong"))
        .sum()
}

#[test]
fn a_burst_of_wrong_codes_split_across_two_instances_gets_no_more_checked_than_the_limits_allow() {
    let postgres = Postgres::start();
    let (a, b) = (
        instance(&postgres, DEPLOY_SCRIPT, ""),
        instance(&postgres, DEPLOY_SCRIPT, ""),
    );
    let servers = [serve_with_64_threads(&a), serve_with_64_threads(&b)];
    let wrong = wrong_code();

    // 30 connections from one address, 15 to each instance: the client limit is 5, for both together.
    let one_client = vec![Ipv4Addr::new(127, 0, 0, 2); 30];
    let answers = burst_across(&servers, &one_client, &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 5, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "banned")]);

    // Then 500 addresses at once, 250 to each: 5 more reach the limit of 10 from anywhere.
    let answers = burst_across(&servers, &addresses(1, 500), &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 5, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "paused")]);
    assert_eq!(checked(&[&a, &b]), 10);

    // `authrun unlock --all`, run beside A, lifts the pause in the database: both instances check 10
    // more, never more.
    let unlocked = run(authrun(a.path())
        .args(["unlock", "--all", "--config"])
        .arg(a.config()));
    assert_eq!(unlocked.code(), 0, "{unlocked:#?}");
    assert!(unlocked.stdout.contains("Lifted"), "{}", unlocked.stdout);
    let answers = burst_across(&servers, &addresses(3, 500), &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 10, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "paused")]);
    assert_eq!(checked(&[&a, &b]), 20);
    assert!(
        !a.join(".authrun/regulation.json").exists(),
        "the state is in the database, not in a file"
    );
}

/// A workspace of an instance on `postgres` in operators mode, with `extra` configuration.
fn operators_instance(postgres: &Postgres, extra: &str) -> Workspace {
    let workspace = instance(postgres, DEPLOY_SCRIPT, "cooldown_seconds = 0");
    let config = workspace.read("authrun.toml");
    workspace.write(
        "authrun.toml",
        &format!("{config}\n[auth]\nmode = \"operators\"\n{extra}"),
    );
    workspace
}

/// `authrun operator add alice` beside `added_on`, then the enrollment through `server` once it heard
/// of her: returns her phone and the enrollment link's path.
fn enroll_alice(added_on: &Workspace, server: &Server) -> (totp_rs::Totp, String) {
    let (phone, path, _) = enroll_alice_with_codes(added_on, server);
    (phone, path)
}

/// [`enroll_alice`], with her backup codes.
fn enroll_alice_with_codes(added_on: &Workspace, server: &Server) -> (totp_rs::Totp, String, Vec<String>) {
    enroll_with(added_on, server, &["alice", "--role", "admin"])
}

/// `authrun operator add ARGS` beside `added_on`, then the enrollment through `server`.
fn enroll_with(added_on: &Workspace, server: &Server, args: &[&str]) -> (totp_rs::Totp, String, Vec<String>) {
    let added = operator(added_on, &[&["add"], args].concat());
    assert_eq!(added.code(), 0, "{added:#?}");
    assert!(
        !added_on.join(".authrun/operators.json").exists(),
        "the operators are in the database, not in a file"
    );
    let path = link_path(&added.stdout);
    let page = wait_for("the instance to know the operator", || {
        let page = server.get(&path);
        (page.status == 200).then_some(page)
    });
    let uri = page.json()["otpauth_uri"]
        .as_str()
        .expect("the otpauth URI")
        .to_string();
    let phone = totp_rs::Totp::from_url_unchecked(&uri).expect("a TOTP URI");
    let done = server.post_form(&path, &format!("code={}", phone.generate(now_unix())));
    assert_eq!(done.status, 200, "{done:?}\n{}", server.stderr());
    let codes = done.json()["backup_codes"]
        .as_array()
        .expect("the backup codes")
        .iter()
        .filter_map(|code| code.as_str().map(str::to_string))
        .collect();
    (phone, path, codes)
}

#[test]
fn a_code_by_mail_asked_on_one_instance_works_once_on_either() {
    let smtp = crate::common::SmtpServer::start();
    let postgres = Postgres::start();
    let mail = format!(
        "email_codes = true\n[mail]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"authrun@example.com\"\n",
        smtp.port
    );
    let (a, b) = (
        operators_instance(&postgres, &mail),
        operators_instance(&postgres, &mail),
    );
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    let (_, path, _) = enroll_with(&a, &server_b, &["carol", "--email", "carol@example.com"]);
    wait_for("A to hear of the enrollment", || {
        (server_a.get(&path).status == 404).then_some(())
    });
    let asked = server_a.post_form("/email-code", "user=carol");
    assert_eq!(asked.status, 202, "{asked:?}");
    let message = smtp.wait_for_messages(1).remove(0);
    let code: String = message
        .split("Your authrun code: ")
        .nth(1)
        .expect("a code in the mail")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    // Asked through A, used through B, refused afterwards on A.
    let ran = server_b.post_form("/verify", &format!("user=carol&code={code}"));
    assert_eq!(ran.status, 200, "{ran:?}");
    assert_eq!(ran.json()["by"], "carol");
    wait_for("the run to end", || {
        (history(&server_a).last()?["status"] == "Deploy succeeded").then_some(())
    });
    let again = server_a.post_form("/login", &format!("user=carol&code={code}"));
    assert_eq!(again.status, 401, "{again:?}");
}

#[test]
fn an_operators_code_and_backup_code_are_spent_once_across_two_instances() {
    let postgres = Postgres::start();
    let (a, b) = (
        operators_instance(&postgres, ""),
        operators_instance(&postgres, ""),
    );
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    let (phone, path, codes) = enroll_alice_with_codes(&a, &server_b);
    wait_for("A to hear of the enrollment", || {
        (server_a.get(&path).status == 404).then_some(())
    });
    // Her TOTP code: used on A (a sign-in), refused on B.
    let totp = phone.generate(now_unix() + 30);
    let signed_in = server_a.post_form("/login", &format!("user=alice&code={totp}"));
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    let replayed = server_b.post_form("/login", &format!("user=alice&code={totp}"));
    assert_eq!(replayed.status, 401, "{replayed:?}");
    assert_eq!(replayed.json()["error"], "replayed_code");
    // A backup code: used on A, refused on B.
    let ran = server_a.post_form("/verify", &format!("user=alice&code={}", codes[0]));
    assert_eq!(ran.status, 200, "{ran:?}");
    let again = server_b.post_form("/verify", &format!("user=alice&code={}", codes[0]));
    assert_eq!(again.status, 401, "{again:?}");

    // One code signed in with 20 times at once, 10 on each instance: it works once.
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let tries: Vec<_> = (0..20)
            .map(|n| {
                let server = if n % 2 == 0 { &server_a } else { &server_b };
                let body = format!("user=alice&code={}", codes[1]);
                scope.spawn(move || server.post_form("/login", &body).status)
            })
            .collect();
        tries
            .into_iter()
            .map(|try_| try_.join().expect("a sign-in"))
            .collect()
    });
    assert_eq!(
        answers.iter().filter(|status| **status == 200).count(),
        1,
        "{answers:?}"
    );
    // The others were refused as a spent code (401), and then, failures counting, locked (429).
    assert!(
        answers.iter().all(|status| [200, 401, 429].contains(status)),
        "{answers:?}"
    );
    let listed = operator(&b, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(rows[0]["backup_codes_left"], 8, "{rows}");
}

#[test]
fn an_operator_added_on_the_command_line_enrolls_through_one_instance_and_runs_through_the_other() {
    let postgres = Postgres::start();
    let (a, b) = (
        operators_instance(&postgres, ""),
        operators_instance(&postgres, ""),
    );
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    let (phone, path) = enroll_alice(&a, &server_b);

    // A run through A, once A heard of the enrollment (its link is dead there too).
    wait_for("A to hear of the enrollment", || {
        (server_a.get(&path).status == 404).then_some(())
    });
    let code = phone.generate(now_unix() + 30);
    let ran = server_a.post_form("/verify", &format!("user=alice&code={code}"));
    assert_eq!(ran.status, 200, "{ran:?}\n{}", server_a.stderr());
    wait_for("the run to show on B", || {
        (history(&server_b).first()?["status"] == "Deploy succeeded").then_some(())
    });

    // The command line sees the same operators, from either instance's configuration.
    let listed = operator(&b, &["list", "--json"]);
    assert_eq!(listed.code(), 0, "{listed:#?}");
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(rows[0]["name"], "alice");
    assert_eq!(rows[0]["enrolled"], true, "{rows}");
    // The rules hold on the database as on the file.
    let refused = operator(&b, &["remove", "alice"]);
    assert_eq!(refused.code(), 1, "{refused:#?}");
    assert!(refused.stderr.contains("last admin"), "{}", refused.stderr);
    assert_eq!(operator(&b, &["add", "bob", "--role", "admin"]).code(), 0);
    let removed = operator(&b, &["remove", "alice"]);
    assert_eq!(removed.code(), 0, "{removed:#?}");
    let listed = operator(&a, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["name"], "bob");
    // The command line's changes are in the database's audit log, beside the instance's line.
    assert_eq!(
        postgres.psql(
            "authrun",
            "SELECT string_agg((line->>'user') || ' ' || (line->>'change'), ', ' ORDER BY time) FROM audit \
             WHERE line->>'event' = 'operator' AND line->>'by' IS NULL"
        ),
        "alice added, alice enrolled, bob added, alice removed"
    );
}

#[test]
fn wrong_codes_for_one_operator_split_across_two_instances_lock_her_after_the_limit() {
    let postgres = Postgres::start();
    // Every address of this machine is exempt from the global pause, and each attempt comes from an
    // address of its own: only the operator's lock (3 failures) stops the burst.
    let token = "t0ken-for-the-admin-api";
    let extra = format!(
        "\n[regulation]\nexempt_networks = [\"127.0.0.0/8\"]\n[access]\napi_token_sha256 = \"{}\"\n",
        authrun::auth::token::sha256_hex(token)
    );
    let (a, b) = (
        operators_instance(&postgres, &extra),
        operators_instance(&postgres, &extra),
    );
    let servers = [serve_with_64_threads(&a), serve_with_64_threads(&b)];
    let (phone, path) = enroll_alice(&a, &servers[1]);
    wait_for("A to hear of the enrollment", || {
        (servers[0].get(&path).status == 404).then_some(())
    });
    let near: Vec<String> = (0..5)
        .map(|step| phone.generate(now_unix() + step * 30 - 60).to_string())
        .collect();
    let wrong = format!("{}&user=alice", crate::common::code_not_in(&near));
    let answers = burst_across(&servers, &addresses(1, 30), &wrong);
    assert_eq!(count(&answers, 401, "wrong_code"), 3, "{answers:?}");
    assert_only(&answers, &[(401, "wrong_code"), (429, "locked")]);
    assert_eq!(checked(&[&a, &b]), 3);
    let listed = operator(&b, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert!(rows[0]["locked_until"].is_string(), "{rows}");

    // Either instance's statistics count both instances' attempts, as their two audit files do, and
    // the one lockout.
    let lines = [audit_lines(&a), audit_lines(&b)].concat();
    for server in &servers {
        let stats = server.get_with_token("/api/admin/stats", token);
        assert_eq!(stats.status, 200, "{stats:?}");
        let stats = stats.json();
        for outcome in ["wrong", "locked"] {
            assert_eq!(
                stats["attempts_24h"][outcome].as_u64().unwrap_or(0),
                audited(&lines, outcome),
                "{outcome}: {stats}"
            );
        }
        assert_eq!(stats["attempts_24h"]["wrong"], 3, "{stats}");
        assert_eq!(stats["lockouts_24h"], 1, "{stats}");
    }
}

/// Reads the event stream `response` until its text so far holds `wanted`; fails after 20 s.
async fn read_until(response: &mut reqwest::Response, seen: &mut String, wanted: &str) {
    let reading = async {
        while !seen.contains(wanted) {
            match response.chunk().await.expect("the stream goes on") {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                None => panic!("the stream ended before {wanted:?}:\n{seen}"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), reading)
        .await
        .unwrap_or_else(|_| panic!("no {wanted:?} within 20 s:\n{seen}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_one_instance_sees_the_live_output_of_a_run_the_other_runs_and_its_log_after() {
    let postgres = Postgres::start();
    let script = "#!/bin/sh\necho first\nwhile [ ! -f go ]; do sleep 0.1; done\necho second >&2\n";
    let public = |workspace: Workspace| {
        let config = workspace.read("authrun.toml");
        workspace.write(
            "authrun.toml",
            &format!("{config}\n[access]\npublic_output = true\n\n[history]\nretention = 1\n"),
        );
        workspace
    };
    let a = public(instance(&postgres, script, "cooldown_seconds = 0"));
    let b = public(instance(&postgres, script, "cooldown_seconds = 0"));
    let (server_a, server_b) = (serve_configured(&a, &[]), serve_configured(&b, &[]));
    let run = start_run(&server_a, SECRET);
    wait_for("B to know the run", || {
        (history(&server_b).first()?["status"] == "Deploying").then_some(())
    });

    // Live, on B: the first line while the script still waits, the second once it goes on, the end.
    let mut events = browser()
        .get(url(&server_b, &format!("/runs/{run}/events")))
        .send()
        .await
        .expect("B answers");
    assert_eq!(events.status(), 200);
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "\"text\":\"first\"").await;
    assert!(!seen.contains("second"), "{seen}");
    a.write("go", "");
    read_until(&mut events, &mut seen, "event: end").await;
    assert!(
        seen.contains("\"stream\":\"stderr\",\"text\":\"second\""),
        "{seen}"
    );
    assert!(seen.contains("Deploy succeeded"), "{seen}");

    // Afterwards, the whole log, from B.
    let log = server_b.get(&format!("/runs/{run}/log"));
    assert_eq!((log.status, log.body.as_str()), (200, "first\nsecond\n"));
    let log_file = format!(".authrun/runs/{run}.log");
    assert!(a.join(&log_file).exists(), "A keeps the run's log");
    assert!(
        !b.join(&log_file).exists(),
        "B has no log file of its own for A's run"
    );

    // The history keeps one run: once the next run's output is complete, the first one's is forgotten.
    let (status, answer) = crate::support::post_code(&server_a, &code_at(SECRET, now_unix() + 30));
    assert_eq!(status, 200, "{answer}");
    let next = answer["run_id"].as_u64().expect("a run id");
    wait_for("the first run's output to be forgotten", || {
        let kept = postgres.psql(
            "authrun",
            "SELECT string_agg(DISTINCT run_id::text, ',') FROM run_output",
        );
        (kept == next.to_string()).then_some(())
    });
}

#[test]
fn without_its_database_sign_in_codes_and_enrollment_answer_503_and_work_once_it_is_back() {
    let postgres = Postgres::start();
    let token = "t0ken-for-the-admin-api";
    let a = operators_instance(
        &postgres,
        &format!(
            "[access]\napi_token_sha256 = \"{}\"\n",
            authrun::auth::token::sha256_hex(token)
        ),
    );
    let server = serve_configured(&a, &[]);
    let (alice, _) = enroll_alice(&a, &server);
    // Bob's enrollment is pending: his page (and so his secret) is read before the database goes.
    let added = operator(&a, &["add", "bob"]);
    assert_eq!(added.code(), 0, "{added:#?}");
    let bob_path = link_path(&added.stdout);
    let page = wait_for("the instance to know bob", || {
        let page = server.get(&bob_path);
        (page.status == 200).then_some(page)
    });
    let bob = totp_rs::Totp::from_url_unchecked(page.json()["otpauth_uri"].as_str().expect("a URI"))
        .expect("a TOTP URI");

    postgres.stop();
    // The next step's code: enrollment used this one.
    let alice_code = alice.generate(now_unix() + 30).to_string();
    let bob_code = bob.generate(now_unix()).to_string();
    let unavailable = |reply: &crate::support::Reply, what: &str| {
        assert_eq!(
            (reply.status, reply.json()["error"].as_str()),
            (503, Some("store_unavailable")),
            "{what}: {reply:?}\n{}",
            server.stderr()
        );
    };
    let signing_in = server.post_form("/login", &format!("user=alice&code={alice_code}"));
    unavailable(&signing_in, "sign-in");
    let running = server.post_form("/verify", &format!("user=alice&code={alice_code}"));
    unavailable(&running, "a run");
    let enrolling = server.post_form(&bob_path, &format!("code={bob_code}"));
    unavailable(&enrolling, "enrollment");
    // What is read from memory is still answered.
    assert_eq!(server.get("/get_deploy_status").status, 200);
    assert_eq!(server.get(&bob_path).status, 200);
    let listed = server.get_with_token("/api/admin/operators", token);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json().as_array().map(Vec::len), Some(2));
    // The statistics are counted in the database.
    let stats = server.get_with_token("/api/admin/stats", token);
    unavailable(&stats, "the statistics");

    // Back: nothing was used up by the refused attempts, and no restart is needed.
    postgres.start_server();
    let signed_in = server.post_form("/login", &format!("user=alice&code={alice_code}"));
    assert_eq!(signed_in.status, 200, "{signed_in:?}\n{}", server.stderr());
    assert_eq!(signed_in.json()["user"], "alice");
    let enrolled = server.post_form(&bob_path, &format!("code={bob_code}"));
    assert_eq!(enrolled.status, 200, "{enrolled:?}\n{}", server.stderr());
    assert_eq!(enrolled.json()["backup_codes"].as_array().map(Vec::len), Some(10));
    // The refused attempts' audit lines waited for the database and are counted.
    let audited_unavailable = audited(&audit_lines(&a), "unavailable");
    assert_eq!(audited_unavailable, 2, "the sign-in and the run, in the file");
    wait_for("the statistics to count the refusals", || {
        let stats = server.get_with_token("/api/admin/stats", token);
        (stats.status == 200 && stats.json()["attempts_24h"]["unavailable"] == audited_unavailable)
            .then_some(())
    });
}
