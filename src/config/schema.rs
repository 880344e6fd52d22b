//! The configuration as written: one struct per section of `config.example.toml`, one field per key, each
//! with its default. Unknown keys are refused, so a typo is an error and not a silently ignored line.
//!
//! These types only describe the shape; `validate` checks the values and turns them into [`super::Config`].
//! The environment can set every field listed here (`AUTHRUN_<SECTION>_<KEY>`) without further code, and
//! the tests in `super` check that `config.example.toml` lists every key with the default written here.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file. Top-level keys first, then one field per `[section]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schema {
    /// Address and port to listen on.
    pub bind: String,
    /// authrun's own state: the generated secret, run logs, the audit log, the bans.
    pub state_dir: PathBuf,
    pub server: Server,
    pub auth: Auth,
    pub regulation: Regulation,
    pub access: Access,
    pub audit: Audit,
    pub action: Action,
    pub script: Script,
    /// `[[actions]]`: several actions, instead of the one of `[action]` and `[script]`.
    pub actions: Vec<ActionEntry>,
    pub runs: Runs,
    pub history: History,
    pub totp: Totp,
    pub metrics: Metrics,
    pub mail: Mail,
    pub store: Store,
    /// `[[notify]]`: who hears of runs' starts and ends, by mail or webhook.
    pub notify: Vec<NotifyEntry>,
}

impl Default for Schema {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:5000".into(),
            state_dir: ".authrun".into(),
            server: Server::default(),
            auth: Auth::default(),
            regulation: Regulation::default(),
            access: Access::default(),
            audit: Audit::default(),
            action: Action::default(),
            script: Script::default(),
            actions: Vec::new(),
            runs: Runs::default(),
            history: History::default(),
            totp: Totp::default(),
            metrics: Metrics::default(),
            mail: Mail::default(),
            store: Store::default(),
            notify: Vec::new(),
        }
    }
}

/// `[server]`: how authrun faces the network.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The address users open behind a reverse proxy; unset: the request's Host.
    pub public_url: Option<String>,
    /// Proxies (addresses or CIDR networks) whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<String>,
    /// Connections served at once; one more is answered 503.
    pub max_connections: usize,
    /// Connections one client address (IPv4, or IPv6 /64) may hold at once; trusted proxies are exempt.
    pub max_connections_per_client: usize,
    /// Seconds a client gets to send a request's headers.
    pub header_read_timeout_seconds: u64,
    /// Seconds a page may take before it is answered 408.
    pub request_timeout_seconds: u64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            public_url: None,
            trusted_proxies: Vec::new(),
            max_connections: 512,
            max_connections_per_client: 32,
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 30,
        }
    }
}

/// `[auth]`: who proves themselves, and how.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// `shared`: one TOTP secret opens the button; `operators`: each person has their own.
    pub mode: String,
    /// Hours an enrollment link stays valid.
    pub enrollment_hours: u64,
    /// Operators also give a password (argon2id-hashed) beside their code.
    pub passwords: bool,
    /// Operators with an email address may ask for a one-time code by mail (needs `[mail]`).
    pub email_codes: bool,
    /// Seconds an emailed code stays valid.
    pub email_code_seconds: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            mode: "shared".into(),
            enrollment_hours: 24,
            passwords: false,
            email_codes: false,
            email_code_seconds: 300,
        }
    }
}

/// `[regulation]`: the brute-force limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Regulation {
    /// Failures from one client within `client_window_seconds` that ban it.
    pub client_max_failures: usize,
    /// The window in which one client's failures are counted.
    pub client_window_seconds: u64,
    /// How long a client's ban lasts.
    pub client_ban_seconds: u64,
    /// Failures from anywhere within `global_window_seconds` that pause checking for everyone.
    pub global_max_failures: usize,
    /// The window in which everyone's failures are counted.
    pub global_window_seconds: u64,
    /// How long the first pause lasts; each further one lasts twice as long.
    pub global_pause_seconds: u64,
    /// The longest a pause may grow to.
    pub global_pause_max_seconds: u64,
    /// Networks (addresses or CIDRs) never paused and not counted towards the pause.
    pub exempt_networks: Vec<String>,
    /// Failures of one operator (any client) that lock that operator.
    pub user_max_failures: u32,
    /// How long an operator's lock lasts.
    pub user_lock_seconds: u64,
}

impl Default for Regulation {
    fn default() -> Self {
        Self {
            client_max_failures: 5,
            client_window_seconds: 10 * 60,
            client_ban_seconds: 15 * 60,
            global_max_failures: 10,
            global_window_seconds: 60 * 60,
            global_pause_seconds: 60 * 60,
            global_pause_max_seconds: 48 * 60 * 60,
            exempt_networks: Vec::new(),
            user_max_failures: 3,
            user_lock_seconds: 15 * 60,
        }
    }
}

/// `[access]`: who may see output and cancel runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// Minutes a browser session stays verified after a valid code.
    pub verified_minutes: u64,
    /// Shows every run's output to everyone.
    pub public_output: bool,
    /// The SHA-256 (hex) of the API token; empty: no token works.
    pub api_token_sha256: String,
    /// The longest a request may wait for a run's end; unset: the run's timeout plus twice the grace.
    pub max_wait_seconds: Option<u64>,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            verified_minutes: 15,
            public_output: false,
            api_token_sha256: String::new(),
            max_wait_seconds: None,
        }
    }
}

/// `[audit]`: the audit log.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// The audit log; unset: `<state_dir>/audit.log`.
    pub file: Option<PathBuf>,
    /// The size in bytes past which the log is rotated.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep_files: usize,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            file: None,
            max_bytes: 10 * 1024 * 1024,
            keep_files: 5,
        }
    }
}

/// `[action]`: what the page calls the button.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Action {
    /// The page's heading.
    pub name: String,
    /// One line under the heading; empty shows nothing.
    pub description: String,
    /// Operators mode: who may run it, by name or `role:<role>`; empty: every operator.
    pub allow: Vec<String>,
}

impl Default for Action {
    fn default() -> Self {
        Self {
            name: "Deploy".into(),
            description: String::new(),
            allow: Vec::new(),
        }
    }
}

/// `[script]`: what runs, where, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Script {
    /// The script, executed directly (no shell); it must be executable.
    pub path: PathBuf,
    /// Arguments passed to the script.
    pub args: Vec<String>,
    /// Directory the script runs in; unset: the config file's directory.
    pub working_dir: Option<PathBuf>,
    /// Directory for the per-run output logs; unset: `<state_dir>/runs`.
    pub log_dir: Option<PathBuf>,
    /// Seconds from the start of a run until the next may start.
    pub cooldown_seconds: u64,
    /// Seconds a run may take before its process group is stopped.
    pub timeout_seconds: u64,
    /// Seconds between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace_seconds: u64,
    /// How many runs' output logs are kept.
    pub keep_logs: usize,
    /// Leave processes the script started in the background running when its run ends.
    pub leave_running: bool,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            path: "scripts/example-deploy.sh".into(),
            args: Vec::new(),
            working_dir: None,
            log_dir: None,
            cooldown_seconds: 180,
            timeout_seconds: 30 * 60,
            kill_grace_seconds: 10,
            keep_logs: 100,
            leave_running: false,
        }
    }
}

/// One `[[actions]]` table: an id, and the keys of `[action]` and `[script]` with their defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionEntry {
    /// Names the action in URLs and in the history: 1 to 32 of a-z, 0-9 and -.
    pub id: String,
    /// The button's heading; unset: the id.
    pub name: Option<String>,
    /// One line under the heading; empty shows nothing.
    pub description: String,
    /// A warning shown beside the button; the form then asks to confirm before it posts.
    pub confirm: Option<String>,
    /// Operators mode: who may run it, by name or `role:<role>`; empty: every operator.
    pub allow: Vec<String>,
    pub path: PathBuf,
    pub args: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub cooldown_seconds: u64,
    pub timeout_seconds: u64,
    pub kill_grace_seconds: u64,
    pub keep_logs: usize,
    pub leave_running: bool,
}

impl Default for ActionEntry {
    /// `[action]`'s and `[script]`'s defaults: one place for both forms.
    fn default() -> Self {
        let (action, script) = (Action::default(), Script::default());
        Self {
            id: String::new(),
            name: None,
            description: action.description,
            confirm: None,
            allow: action.allow,
            path: script.path,
            args: script.args,
            working_dir: script.working_dir,
            log_dir: script.log_dir,
            cooldown_seconds: script.cooldown_seconds,
            timeout_seconds: script.timeout_seconds,
            kill_grace_seconds: script.kill_grace_seconds,
            keep_logs: script.keep_logs,
            leave_running: script.leave_running,
        }
    }
}

impl ActionEntry {
    /// The entry's `[script]` keys, which are checked as `[script]`'s are.
    pub fn script(&self) -> Script {
        Script {
            path: self.path.clone(),
            args: self.args.clone(),
            working_dir: self.working_dir.clone(),
            log_dir: self.log_dir.clone(),
            cooldown_seconds: self.cooldown_seconds,
            timeout_seconds: self.timeout_seconds,
            kill_grace_seconds: self.kill_grace_seconds,
            keep_logs: self.keep_logs,
            leave_running: self.leave_running,
        }
    }
}

/// `[runs]`: what the runs of all actions share.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runs {
    /// Runs of different actions going at once; one more is refused 409 `busy`.
    pub max_parallel: usize,
}

impl Default for Runs {
    fn default() -> Self {
        Self { max_parallel: 4 }
    }
}

/// `[history]`: the record of runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// The history file, compatible with the original's history.json.
    pub file: PathBuf,
    /// How many runs the history keeps.
    pub retention: usize,
    /// How many of the newest runs GET /get_deploy_status returns.
    pub status_entries: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            file: "history.json".into(),
            retention: 1000,
            status_entries: 100,
        }
    }
}

/// `[totp]`: the secret and the code parameters shared with the authenticator app.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Totp {
    /// The base32 secret; at most one of `secret` and `secret_file`, neither: generated.
    pub secret: Option<String>,
    /// A file holding the base32 secret.
    pub secret_file: Option<PathBuf>,
    /// Digits in a code: 6, 7 or 8.
    pub digits: u8,
    /// Seconds a code lasts.
    pub period_seconds: u64,
    /// Steps before and after the current one whose codes are accepted too.
    pub skew_steps: u8,
    /// The issuer shown in the authenticator app.
    pub issuer: String,
    /// The account label shown in the authenticator app.
    pub account: String,
}

impl Default for Totp {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            digits: 6,
            period_seconds: 30,
            skew_steps: 1,
            issuer: "authrun".into(),
            account: "deploy".into(),
        }
    }
}

impl fmt::Debug for Totp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Totp")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("digits", &self.digits)
            .field("period_seconds", &self.period_seconds)
            .field("skew_steps", &self.skew_steps)
            .field("issuer", &self.issuer)
            .field("account", &self.account)
            .finish()
    }
}

/// `[metrics]`: `GET /metrics` for Prometheus.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Answers `GET /metrics`; false: 404 to everyone.
    pub enabled: bool,
    /// Addresses or CIDR networks that may read the metrics without the API token.
    pub allow: Vec<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: true,
            allow: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

/// `[mail]`: the SMTP server notifications and `authrun mail test` send through.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// The SMTP server's host name; unset: authrun sends no mail.
    pub host: Option<String>,
    /// The server's port; unset: 587 with starttls, 465 with tls, 25 with none.
    pub port: Option<u16>,
    /// "starttls", "tls" (TLS from the first byte) or "none" (only to a relay on this machine).
    pub security: String,
    /// The account to log in with; unset: no login.
    pub username: Option<String>,
    /// The account's password; at most one of `password` and `password_file`.
    pub password: Option<String>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// The sender, `authrun@example.com` or `authrun <authrun@example.com>`.
    pub from: Option<String>,
    /// Seconds one conversation with the server may take.
    pub timeout_seconds: u64,
}

impl Default for Mail {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            security: "starttls".into(),
            username: None,
            password: None,
            password_file: None,
            from: None,
            timeout_seconds: 10,
        }
    }
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("from", &self.from)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// `[store]`: where the state lives: files in `state_dir`, or a PostgreSQL database several instances
/// share.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// "files" (the state directory) or "postgres".
    pub kind: String,
    /// The database, `postgres://user:password@host:port/dbname`; at most one of `url` and `url_file`.
    pub url: Option<String>,
    /// A file holding the URL (it may hold a password).
    pub url_file: Option<PathBuf>,
    /// Connections to the database this instance keeps at most.
    pub pool_size: usize,
    /// How long a run's lease lasts: the instance running it renews it every few seconds; once it has
    /// run out (the instance crashed or lost the database), any instance marks the run "Interrupted".
    pub lease_seconds: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            kind: "files".into(),
            url: None,
            url_file: None,
            pool_size: 8,
            lease_seconds: 30,
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("lease_seconds", &self.lease_seconds)
            .finish()
    }
}

/// One `[[notify]]` table: which runs, and where to tell of them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyEntry {
    /// started, succeeded, failed, timed_out, interrupted, cancelled.
    pub on: Vec<String>,
    /// The ids of the actions whose runs are told of; empty: every action's.
    pub actions: Vec<String>,
    /// Addresses mailed (needs `[mail]`).
    pub email: Vec<String>,
    /// An http(s) URL that gets a JSON POST.
    pub webhook: Option<String>,
    /// A file holding the key the webhook's body is signed with (HMAC-SHA256).
    pub webhook_secret_file: Option<PathBuf>,
    /// The last lines of output sent along; 0: none.
    pub output_lines: usize,
}

impl Default for NotifyEntry {
    fn default() -> Self {
        Self {
            on: ["failed", "timed_out", "interrupted"].map(String::from).to_vec(),
            actions: Vec::new(),
            email: Vec::new(),
            webhook: None,
            webhook_secret_file: None,
            output_lines: 20,
        }
    }
}
