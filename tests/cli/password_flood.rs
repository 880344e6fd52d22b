//! A flood of password sign-ins against the real binary over TCP: with `[auth] passwords = true` every
//! sign-in costs an argon2id hash (19 MiB, t = 2), at most two at once, so 50 wrong passwords sent
//! together from 50 addresses queue for seconds. Meanwhile `/get_deploy_status`, which hashes
//! nothing, must keep answering: it is asked while sign-ins are still outstanding, and it answers.
//!
//! The figures (how long the 50 take, the status's latency before and during the flood) are printed
//! for the record (`cargo test --test cli password_flood -- --nocapture`); speed is asserted nowhere.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::attack::{connect_from, runtime};
use crate::support::{
    DEPLOY_SCRIPT, Server, WAIT, Workspace, authrun, link_path, read_reply, run, serve_configured,
};

const FLOOD: usize = 50;
const PASSWORD: &str = "correct horse battery staple";

/// Operators with passwords; one operator's failures never lock them here (the flood is of one name),
/// and this machine's addresses are exempt from the global pause, so every sign-in is judged in full.
const CONFIG: &str = "\n[auth]\nmode = \"operators\"\npasswords = true\n\n\
     [regulation]\nuser_max_failures = 1000\nexempt_networks = [\"127.0.0.0/8\"]\n";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `authrun operator add alice`, then the enrollment over HTTP as a phone's owner does it: the URI read,
/// a code from it, the password. Returns the backup codes.
fn enroll_alice(workspace: &Workspace, server: &Server) -> Vec<String> {
    let added = run(authrun(workspace.path())
        .args(["operator", "add", "alice", "--config"])
        .arg(workspace.config()));
    assert_eq!(added.code(), 0, "{added:#?}");
    let path = link_path(&added.stdout);
    let page = server.get(&path).json();
    let uri = page["otpauth_uri"].as_str().expect("the otpauth URI");
    let phone = totp_rs::Totp::from_url_unchecked(uri).expect("a TOTP URI");
    let code = phone.generate(now_unix()).to_string();
    let form = format!("code={code}&password={}", PASSWORD.replace(' ', "+"));
    let done = server.post_form(&path, &form);
    assert_eq!(done.status, 200, "{done:?}\n{}", server.stderr());
    done.json()["backup_codes"]
        .as_array()
        .expect("the backup codes")
        .iter()
        .map(|code| code.as_str().unwrap_or_default().to_string())
        .collect()
}

/// `POST /login` as alice with a wrong password (and a code that does not matter: the password is
/// hashed whatever the code).
fn wrong_sign_in(server: &Server, n: usize) -> Vec<u8> {
    let body = format!("user=alice&code=000000&password=wrong-password-number-{n}");
    format!(
        "POST /login HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .into_bytes()
}

/// One `GET /get_deploy_status`: its status and how long it took.
fn status(server: &Server) -> (u16, Duration) {
    let started = Instant::now();
    let reply = server.get("/get_deploy_status");
    (reply.status, started.elapsed())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The median and the largest of `samples`, in ms.
fn summary(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
    let max = samples.last().copied().unwrap_or_default();
    (millis(median), millis(max))
}

#[test]
fn fifty_wrong_passwords_at_once_do_not_stop_the_status_from_answering() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.read("authrun.toml") + CONFIG;
    workspace.write("authrun.toml", &config);
    let server = serve_configured(&workspace, &[]);
    let backup_codes = enroll_alice(&workspace, &server);

    let mut idle: Vec<Duration> = (0..20).map(|_| status(&server).1).collect();

    // 50 connections from 127.0.2.1 on, each a wrong password, written all at once.
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let flood_start = Instant::now();
    let senders: Vec<_> = (0..FLOOD)
        .map(|n| {
            let source = Ipv4Addr::new(127, 0, 2, u8::try_from(n + 1).expect("few"));
            let request = wrong_sign_in(&server, n);
            let addr = server.addr;
            let (sent, answered) = (Arc::clone(&sent), Arc::clone(&answered));
            std::thread::spawn(move || {
                let mut stream = connect_from(&runtime(), source, addr);
                stream.write_all(&request).expect("send the sign-in");
                sent.fetch_add(1, Ordering::SeqCst);
                let reply = read_reply(&mut stream);
                answered.fetch_add(1, Ordering::SeqCst);
                let body: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
                (reply.status, body, flood_start.elapsed())
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while sent.load(Ordering::SeqCst) < FLOOD {
        assert!(Instant::now() < deadline, "the sign-ins were not all sent");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The status, asked again and again while sign-ins are outstanding.
    let mut during = Vec::new();
    let mut pending_when_answered = Vec::new();
    loop {
        if answered.load(Ordering::SeqCst) == FLOOD {
            break;
        }
        let (code, took) = status(&server);
        let pending = FLOOD - answered.load(Ordering::SeqCst);
        assert_eq!(
            code,
            200,
            "the status did not answer during the flood\n{}",
            server.stderr()
        );
        if pending > 0 {
            during.push(took);
            pending_when_answered.push(pending);
        }
        assert!(Instant::now() < deadline + WAIT, "the flood never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<(u16, Value, Duration)> = senders
        .into_iter()
        .map(|sender| sender.join().expect("a sign-in"))
        .collect();
    let flood_took = answers.iter().map(|(_, _, at)| *at).max().unwrap_or_default();

    assert!(
        !during.is_empty(),
        "the status was never asked while sign-ins were outstanding"
    );
    for (code, body, _) in &answers {
        assert_eq!(
            (*code, body["error"].as_str()),
            (401, Some("wrong_code")),
            "a wrong password: {body}"
        );
    }
    // The flood locked nobody out: alice signs in with her password and a backup code.
    let right = server.post_form(
        "/login",
        &format!(
            "user=alice&code={}&password={}",
            backup_codes[0],
            PASSWORD.replace(' ', "+")
        ),
    );
    assert_eq!(right.status, 200, "{right:?}");
    // The server's log holds no password, wrong or right, and no code.
    let log = server.stderr();
    for secret in [PASSWORD, "wrong-password-number-7", backup_codes[0].as_str()] {
        assert!(!log.contains(secret), "the server log holds {secret:?}");
    }

    let (idle_median, idle_max) = summary(&mut idle);
    let (during_median, during_max) = summary(&mut during);
    println!(
        "{FLOOD} wrong-password sign-ins took {:.0} ms in all ({:.1} ms each); /get_deploy_status: \
         idle median {idle_median:.1} ms, max {idle_max:.1} ms; during the flood ({} probes, {} to {} \
         sign-ins outstanding) median {during_median:.1} ms, max {during_max:.1} ms",
        millis(flood_took),
        millis(flood_took) / FLOOD as f64,
        during.len(),
        pending_when_answered.iter().min().unwrap_or(&0),
        pending_when_answered.iter().max().unwrap_or(&0),
    );
}
