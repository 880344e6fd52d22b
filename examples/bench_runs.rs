//! The run-path benchmarks, in-process so that a manual clock can supply a fresh TOTP step for each of
//! many runs (the system clock would allow one run per 30 s). Everything else is the real thing: the
//! server on 127.0.0.1, real HTTP, real processes.
//!
//! `bench_runs STAMP_BINARY RUNS OUTPUT_MB` prints one JSON object:
//! - `spawn_latency_ms`: from writing a valid `POST /verify` on an open connection to the first
//!   instruction of the script (the `stamp` example, which writes the wall-clock time), per run;
//! - `output_run_ms`: a script printing OUTPUT_MB megabytes, run by authrun (from the request until its
//!   final status is recorded), five times; and the same script run directly with its output going to
//!   /dev/null (`output_direct_ms`), to a file (`output_to_file_ms`), and through `cat` into a file
//!   (`output_through_cat_to_file_ms`); and the same number of bytes written to a file by `dd` in 1 MB
//!   blocks, without any script (`output_store_floor_ms`): the least that keeping the output can cost.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use authrun::auth::totp::Verifier;
use authrun::bootstrap;
use authrun::clock::{Clock, ManualClock};
use authrun::config::{Config, SecretSource};
use authrun::web::state::AppState;

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let stamp = args
        .next()
        .ok_or("usage: bench_runs STAMP_BINARY RUNS OUTPUT_MB")?;
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let megabytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);

    let dir = tempfile::tempdir()?;
    let stamps = dir.path().join("stamps.txt");
    let spawn_app = App::start(dir.path(), "spawn", &stamp, &[stamps.display().to_string()]).await?;
    let mut latencies = Vec::new();
    for _ in 0..runs {
        let sent = spawn_app.run_once().await?;
        let stamped = last_stamp(&stamps)?;
        latencies.push((stamped.saturating_sub(sent)) as f64 / 1e6);
    }

    let printer = dir.path().join("print.sh");
    let line = "x".repeat(99);
    std::fs::write(
        &printer,
        format!("#!/bin/sh\nyes '{line}' | head -c {}\n", megabytes * 1_000_000),
    )?;
    std::fs::set_permissions(&printer, std::fs::Permissions::from_mode(0o755))?;
    let output_app = App::start(dir.path(), "output", &printer.display().to_string(), &[]).await?;
    let mut through_authrun = Vec::new();
    let mut direct = Vec::new();
    let mut to_file = Vec::new();
    let mut through_cat = Vec::new();
    let mut store_floor = Vec::new();
    let file = dir.path().join("direct.log");
    for _ in 0..5 {
        let start = Instant::now();
        output_app.run_once().await?;
        through_authrun.push(start.elapsed().as_secs_f64() * 1e3);
        direct.push(timed(
            std::process::Command::new(&printer).stdout(std::process::Stdio::null()),
        )?);
        to_file.push(timed(
            std::process::Command::new(&printer).stdout(std::fs::File::create(&file)?),
        )?);
        let piped = format!("{} | cat > {}", printer.display(), file.display());
        through_cat.push(timed(std::process::Command::new("sh").args(["-c", &piped]))?);
        // The least that keeping the output costs: the same bytes written to a file in 1 MB blocks.
        store_floor.push(timed(std::process::Command::new("dd").args([
            "if=/dev/zero".to_owned(),
            format!("of={}", file.display()),
            "bs=1000000".to_owned(),
            format!("count={megabytes}"),
            "status=none".to_owned(),
        ]))?);
    }
    let report = serde_json::json!({
        "spawn_latency_ms": latencies,
        "output_megabytes": megabytes,
        "output_run_ms": through_authrun,
        "output_direct_ms": direct,
        "output_to_file_ms": to_file,
        "output_through_cat_to_file_ms": through_cat,
        "output_store_floor_ms": store_floor,
    });
    println!("{report}");
    Ok(())
}

/// An authrun on its own directory and port, with a manual clock.
struct App {
    state: AppState,
    clock: Arc<ManualClock>,
    verifier: Verifier,
    addr: std::net::SocketAddr,
}

impl App {
    async fn start(
        root: &Path,
        name: &str,
        script: &str,
        args: &[String],
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("authrun.toml");
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        std::fs::write(
            &config_path,
            format!(
                "[script]\npath = {script:?}\nargs = [{}]\ncooldown_seconds = 0\n\n[totp]\nsecret = \"{SECRET}\"\n",
                args.join(", ")
            ),
        )?;
        let config = Config::load(Some(&config_path), &[])?;
        let SecretSource::Configured { key, .. } = config.secret.clone() else {
            return Err("no secret".into());
        };
        let verifier = Verifier::new(key.bytes().to_vec(), config.totp.clone());
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let state = bootstrap::open(config, &key, clock.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let served = state.clone();
        tokio::spawn(
            async move { authrun::web::server::serve(listener, served, std::future::pending()).await },
        );
        Ok(Self {
            state,
            clock,
            verifier,
            addr,
        })
    }

    /// Starts a run with a fresh code and waits for its end; returns when the request was sent (ns).
    async fn run_once(&self) -> Result<u128, Box<dyn std::error::Error>> {
        self.clock.advance(time::Duration::seconds(30));
        let code = self.verifier.code_at(self.clock.now().unix_timestamp() as u64);
        let request = format!(
            "POST /verify HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 11\r\nConnection: close\r\n\r\ncode={code}",
            self.addr
        );
        let addr = self.addr;
        let (sent, answer) = tokio::task::spawn_blocking(move || -> std::io::Result<(u128, String)> {
            let mut stream = std::net::TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            let sent = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            stream.write_all(request.as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok((sent, answer))
        })
        .await??;
        let id: u64 = answer
            .split("\"run_id\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("no run started: {answer}"))?;
        tokio::time::timeout(Duration::from_secs(120), self.state.runner.wait_finished(id)).await?;
        Ok(sent)
    }
}

/// Runs `command` to its end; milliseconds it took.
fn timed(command: &mut std::process::Command) -> std::io::Result<f64> {
    let start = Instant::now();
    command.status()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn last_stamp(path: &Path) -> Result<u128, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let last = text.lines().last().ok_or("the script wrote no stamp")?;
    Ok(last.trim().parse()?)
}
