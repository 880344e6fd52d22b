//! A real PostgreSQL for the tests of `[store] kind = "postgres"`: Debian's binaries (installed by
//! `scripts/test.sh`), a cluster `initdb`-ed into a temp dir and started with `pg_ctl` on a free port of
//! 127.0.0.1, stopped (`pg_ctl stop -m fast`) when the guard is dropped. No system service is used. A test
//! that cannot start it fails, saying why: it is never skipped.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// A running PostgreSQL cluster of one test.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Commands run as this user (`postgres` when the tests run as root: initdb refuses root).
    run_as: Option<&'static str>,
}

impl Postgres {
    /// initdb, then start on a free port, with a database `authrun`.
    pub fn start() -> Self {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("authrun-pg")
            .tempdir()
            .expect("create a temp dir for PostgreSQL");
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let run_as = root.then_some("postgres");
        if root {
            ok(
                Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()),
                "chown the cluster's dir",
            );
        }
        let mut postgres = Self {
            dir,
            bin,
            port: listening_port(),
            run_as,
        };
        postgres.tool(
            "initdb",
            &[
                "-D",
                &postgres.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // A port another cluster of a test running alongside took meanwhile: another port.
        let mut tries = 1;
        while let Err(failure) = postgres.try_start_server() {
            assert!(tries < 5, "PostgreSQL does not start: {failure}");
            postgres.port = listening_port();
            tries += 1;
        }
        postgres.psql("postgres", "CREATE DATABASE authrun");
        postgres
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits until it takes connections.
    pub fn start_server(&self) {
        if let Err(failure) = self.try_start_server() {
            panic!("PostgreSQL does not start again: {failure}");
        }
    }

    fn try_start_server(&self) -> Result<String, String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let started = self.try_tool(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"],
        );
        started.map_err(|failure| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{failure}\nserver log:\n{log}")
        })
    }

    /// Stops the server (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.tool("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// The URL of database `authrun`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/authrun", self.port)
    }

    /// Runs `sql` in database `db` with psql; returns its unaligned output, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        self.tool(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-Atq",
                "-c",
                sql,
            ],
        )
        .trim()
        .to_string()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs PostgreSQL's `name` with `args`, as the cluster's owner; fails the test when it fails.
    fn tool(&self, name: &str, args: &[&str]) -> String {
        self.try_tool(name, args)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Runs PostgreSQL's `name` with `args`, as the cluster's owner: its stdout, or what it said.
    fn try_tool(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let program = self.bin.join(name);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(args).current_dir(self.dir.path());
        run(&mut command, name)
    }
}

/// A free port below the range the kernel hands out for outgoing connections and for `bind(0)`
/// (32768 and up), so that no client connection of a test running alongside can take it before the
/// cluster listens on it.
fn listening_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let _ = command.args(["-D", &data, "-m", "fast", "-w", "stop"]).output();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding initdb.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): these tests need it; \
             run scripts/test.sh, which installs Debian's `postgresql` package"
        ),
    }
}

/// Runs `command`; its stdout, or the test fails with what it printed.
fn ok(command: &mut Command, what: &str) -> String {
    run(command, what).unwrap_or_else(|failure| panic!("{failure}"))
}

/// Runs `command`; its stdout, or what it printed.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what} cannot be started: {error}"));
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A TCP relay in front of a database, on a port of its own, that the test can cut: one instance's
/// connections to the database then fail while another's still work (a network partition).
pub struct Relay {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every connection relayed, to shut them down when cut.
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (its own, free) to `postgres`.
    pub fn to(postgres: &Postgres) -> Self {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("the relay's address").port();
        let relay = Self {
            port,
            cut: Default::default(),
            streams: Default::default(),
        };
        let (cut, streams, target) = (
            std::sync::Arc::clone(&relay.cut),
            std::sync::Arc::clone(&relay.streams),
            format!("127.0.0.1:{}", postgres.port),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut.load(Ordering::SeqCst) {
                    // Cut off: the connection is closed at once.
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                if let Ok(mut kept) = streams.lock() {
                    kept.extend([client, server]);
                }
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        relay
    }

    /// `url` of the database, through the relay.
    pub fn url(&self, postgres: &Postgres) -> String {
        postgres
            .url()
            .replace(&format!(":{}/", postgres.port), &format!(":{}/", self.port))
    }

    /// Closes every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut kept) = self.streams.lock() {
            for stream in kept.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
