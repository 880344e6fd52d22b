//! Configuration: a TOML file (optional), environment overrides, then validation.
//!
//! The file is parsed into [`RawConfig`], a plain mirror of `config.example.toml` that rejects unknown keys;
//! `AUTHRUN_*` environment variables override it key by key; [`Config::load`] then checks every value and
//! resolves relative paths against the config file's directory (or the working directory when there is no
//! file). Every error names where the value came from, the key, and the fix.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use ipnet::IpNet;

pub use crate::model::audit::Rotation;
pub use crate::model::secret::SecretKey;
use crate::model::secret::parse_secret;

/// The example configuration, with every key documented; `authrun example-config` prints it.
pub const EXAMPLE: &str = include_str!("../../config.example.toml");

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: `{key}`: {problem}\n  fix: {fix}")]
pub struct ConfigError {
    /// The file (with line and column when known), the environment variable, or the built-in defaults.
    pub origin: String,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

/// The configuration file as written, before validation. Field docs live in `config.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub bind: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub action: RawAction,
    pub script: RawScript,
    pub history: RawHistory,
    pub totp: RawTotp,
    pub server: RawServer,
    pub regulation: RawRegulation,
    pub audit: RawAudit,
    pub access: RawAccess,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccess {
    pub verified_minutes: Option<u64>,
    pub public_output: Option<bool>,
    pub api_token_sha256: Option<String>,
    pub max_wait_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub public_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_seconds: Option<u64>,
    pub request_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRegulation {
    pub client_max_failures: Option<usize>,
    pub client_window_seconds: Option<u64>,
    pub client_ban_seconds: Option<u64>,
    pub global_max_failures: Option<usize>,
    pub global_window_seconds: Option<u64>,
    pub global_pause_seconds: Option<u64>,
    pub global_pause_max_seconds: Option<u64>,
    pub exempt_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub file: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub keep_files: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAction {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScript {
    pub path: Option<PathBuf>,
    pub args: Option<Vec<String>>,
    pub working_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub cooldown_seconds: Option<u64>,
    pub timeout_seconds: Option<u64>,
    pub kill_grace_seconds: Option<u64>,
    pub keep_logs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistory {
    pub file: Option<PathBuf>,
    pub retention: Option<usize>,
    pub status_entries: Option<usize>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTotp {
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub digits: Option<u8>,
    pub period_seconds: Option<u64>,
    pub skew_steps: Option<u8>,
    pub issuer: Option<String>,
    pub account: Option<String>,
}

impl fmt::Debug for RawTotp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTotp")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

/// Where the secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// From the config file, `secret_file` or `AUTHRUN_SECRET`; `file` is the file holding it, if any.
    Configured { key: SecretKey, file: Option<PathBuf> },
    /// None configured: `serve` and `qr` use (and create on first use) this file in the state directory.
    Generated(PathBuf),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    pub bind: SocketAddr,
    pub state_dir: PathBuf,
    pub action_name: String,
    pub action_description: String,
    pub script: ScriptConfig,
    pub history_file: PathBuf,
    pub history_retention: usize,
    pub status_entries: usize,
    pub totp: TotpSettings,
    pub secret: SecretSource,
    pub server: ServerConfig,
    pub regulation: RegulationSettings,
    pub audit_file: PathBuf,
    /// When the audit log is rotated, and how many old files are kept.
    pub audit_rotation: Rotation,
    /// Where bans and pauses are kept across restarts.
    pub regulation_file: PathBuf,
    pub access: AccessConfig,
}

/// The brute-force limits, from the `[regulation]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegulationSettings {
    pub client_max_failures: usize,
    pub client_window: Duration,
    pub client_ban: Duration,
    pub global_max_failures: usize,
    pub global_window: Duration,
    pub global_pause: Duration,
    pub global_pause_max: Duration,
    /// Clients in these networks (the office, its VPN) are never paused and do not count towards the
    /// pause; their own failures still ban them.
    pub exempt_networks: Vec<IpNet>,
}

impl Default for RegulationSettings {
    fn default() -> Self {
        Self {
            client_max_failures: 5,
            client_window: Duration::from_secs(10 * 60),
            client_ban: Duration::from_secs(15 * 60),
            global_max_failures: 10,
            global_window: Duration::from_secs(60 * 60),
            global_pause: Duration::from_secs(60 * 60),
            global_pause_max: Duration::from_secs(48 * 60 * 60),
            exempt_networks: Vec::new(),
        }
    }
}

/// The TOTP parameters shared with the authenticator app.
#[derive(Debug, Clone)]
pub struct TotpSettings {
    pub digits: u8,
    pub period: u64,
    pub skew: u8,
    pub issuer: String,
    pub account: String,
}

/// Who may see output and cancel runs.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// How long a session stays verified after a valid code.
    pub verified_for: Duration,
    /// Output readable by everyone.
    pub public_output: bool,
    /// The SHA-256 (hex) of the API token; no token is accepted without it.
    pub api_token_sha256: Option<String>,
    /// The longest a request may wait for a run to end (`?wait=`).
    pub max_wait: Duration,
}

/// How the HTTP server faces the network.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The URL users reach authrun at, when it differs from `bind` (behind a proxy).
    pub public_url: Option<PublicUrl>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
}

impl ServerConfig {
    /// Cookies get `Secure` when users reach authrun over https.
    pub fn cookies_secure(&self) -> bool {
        self.public_url.as_ref().is_some_and(|url| url.https)
    }
}

/// The scheme and authority (`https://deploy.example.com`) of the public URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub origin: String,
    pub https: bool,
}

/// How the one script is run.
#[derive(Debug, Clone)]
pub struct ScriptConfig {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    pub log_dir: PathBuf,
    pub cooldown: Duration,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// How many runs' logs are kept.
    pub keep_logs: usize,
}

impl Config {
    /// Reads `file` (or only the defaults) with overrides from `env`, and validates the result.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let (mut raw, origin, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
                    origin: path.display().to_string(),
                    key: "(file)".into(),
                    problem: format!("cannot be read: {error}"),
                    fix: "check the path given with --config or AUTHRUN_CONFIG".into(),
                })?;
                let raw = parse_toml(&text, path)?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (raw, path.display().to_string(), base)
            }
            None => (
                RawConfig::default(),
                "built-in defaults".to_string(),
                PathBuf::new(),
            ),
        };
        apply_env(&mut raw, env)?;
        // Absolute, so that a bare `deploy.sh` is never looked up in PATH and a later `cd` changes nothing.
        let base = std::path::absolute(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &base
        })
        .unwrap_or(base);
        Validator { origin, base }.validate(raw, file)
    }

    /// Loads with the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, &|name| std::env::var(name).ok())
    }
}

/// Parses TOML text, reporting the line and column of an error.
pub fn parse_toml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError {
            origin: format!("{}:{line}:{column}", path.display()),
            key: key_of(error.message()),
            problem: error.message().trim().to_string(),
            fix: "correct or remove this key; `authrun example-config` prints every valid key".into(),
        }
    })
}

/// serde names the offending key in its messages ("unknown field `x`", "missing field `y`").
fn key_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "(syntax)".into())
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Applies `AUTHRUN_<SECTION>_<KEY>` variables, plus the short `AUTHRUN_SECRET`.
fn apply_env(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let text = |name: &str| env(name).filter(|value| !value.is_empty());
    let path = |name: &str| text(name).map(PathBuf::from);
    let number = |name: &str| -> Result<Option<u64>, ConfigError> {
        text(name)
            .map(|value| {
                value.trim().parse().map_err(|_| ConfigError {
                    origin: format!("environment variable {name}"),
                    key: name.into(),
                    problem: format!("`{value}` is not a whole number"),
                    fix: format!("set {name} to a whole number of the unit its key names, or unset it"),
                })
            })
            .transpose()
    };
    set(&mut raw.bind, text("AUTHRUN_BIND"));
    set(&mut raw.state_dir, path("AUTHRUN_STATE_DIR"));
    set(&mut raw.action.name, text("AUTHRUN_ACTION_NAME"));
    set(&mut raw.action.description, text("AUTHRUN_ACTION_DESCRIPTION"));
    set(&mut raw.script.path, path("AUTHRUN_SCRIPT_PATH"));
    set(&mut raw.script.working_dir, path("AUTHRUN_SCRIPT_WORKING_DIR"));
    set(&mut raw.script.log_dir, path("AUTHRUN_SCRIPT_LOG_DIR"));
    set(
        &mut raw.script.cooldown_seconds,
        number("AUTHRUN_SCRIPT_COOLDOWN_SECONDS")?,
    );
    set(
        &mut raw.script.timeout_seconds,
        number("AUTHRUN_SCRIPT_TIMEOUT_SECONDS")?,
    );
    set(
        &mut raw.script.kill_grace_seconds,
        number("AUTHRUN_SCRIPT_KILL_GRACE_SECONDS")?,
    );
    set(&mut raw.history.file, path("AUTHRUN_HISTORY_FILE"));
    let usize_of = |n: Option<u64>| n.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    set(
        &mut raw.history.retention,
        usize_of(number("AUTHRUN_HISTORY_RETENTION")?),
    );
    set(
        &mut raw.history.status_entries,
        usize_of(number("AUTHRUN_HISTORY_STATUS_ENTRIES")?),
    );
    set(
        &mut raw.audit.keep_files,
        usize_of(number("AUTHRUN_AUDIT_KEEP_FILES")?),
    );
    let secret = text("AUTHRUN_TOTP_SECRET").or_else(|| text("AUTHRUN_SECRET"));
    if secret.is_some() {
        // A secret from the environment replaces whatever the file names.
        raw.totp.secret_file = None;
        raw.totp.secret = secret;
    } else if let Some(file) = path("AUTHRUN_TOTP_SECRET_FILE") {
        raw.totp.secret = None;
        raw.totp.secret_file = Some(file);
    }
    set(&mut raw.server.public_url, text("AUTHRUN_SERVER_PUBLIC_URL"));
    let list = |name: &str| {
        text(name).map(|list| {
            list.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
    };
    set(
        &mut raw.server.trusted_proxies,
        list("AUTHRUN_SERVER_TRUSTED_PROXIES"),
    );
    set(
        &mut raw.regulation.exempt_networks,
        list("AUTHRUN_REGULATION_EXEMPT_NETWORKS"),
    );
    set(&mut raw.audit.file, path("AUTHRUN_AUDIT_FILE"));
    set(&mut raw.audit.max_bytes, number("AUTHRUN_AUDIT_MAX_BYTES")?);
    let small = |n: Option<u64>| n.map(|n| u8::try_from(n).unwrap_or(u8::MAX));
    set(&mut raw.totp.digits, small(number("AUTHRUN_TOTP_DIGITS")?));
    set(
        &mut raw.totp.period_seconds,
        number("AUTHRUN_TOTP_PERIOD_SECONDS")?,
    );
    set(
        &mut raw.totp.skew_steps,
        small(number("AUTHRUN_TOTP_SKEW_STEPS")?),
    );
    set(&mut raw.totp.issuer, text("AUTHRUN_TOTP_ISSUER"));
    set(&mut raw.totp.account, text("AUTHRUN_TOTP_ACCOUNT"));
    Ok(())
}

/// Overrides `slot` when the environment gave a value.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// Checks values and builds errors that point at their origin.
struct Validator {
    origin: String,
    base: PathBuf,
}

impl Validator {
    fn error(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    fn validate(&self, raw: RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
        let bind = self.bind(raw.bind.as_deref().unwrap_or("127.0.0.1:5000"))?;
        let state_dir = self.resolve(raw.state_dir.as_deref().unwrap_or(Path::new(".authrun")));
        let script = self.script(raw.script, &state_dir)?;
        let (history_file, history_retention, status_entries) = self.history(raw.history)?;
        let (totp, secret) = self.totp(raw.totp, &state_dir, file)?;
        let server = self.server(raw.server)?;
        let regulation = self.regulation(raw.regulation)?;
        let access = self.access(raw.access, &script)?;
        let audit_rotation = self.rotation(&raw.audit)?;
        let audit_file = raw
            .audit
            .file
            .map_or_else(|| state_dir.join("audit.log"), |file| self.resolve(&file));
        Ok(Config {
            server,
            regulation,
            audit_file,
            audit_rotation,
            regulation_file: state_dir.join("regulation.json"),
            access,
            file: file.map(Path::to_path_buf),
            bind,
            state_dir,
            action_name: raw.action.name.unwrap_or_else(|| "Deploy".into()),
            action_description: raw.action.description.unwrap_or_default(),
            script,
            history_file,
            history_retention,
            status_entries,
            totp,
            secret,
        })
    }

    /// Durations past ten years make no sense and would overflow time arithmetic.
    fn at_most_ten_years(&self, key: &str, value: u64) -> Result<u64, ConfigError> {
        const TEN_YEARS: u64 = 10 * 365 * 24 * 60 * 60;
        if value > TEN_YEARS {
            return Err(self.error(
                key,
                format!("{value} is more than ten years"),
                format!("use at most {TEN_YEARS}"),
            ));
        }
        Ok(value)
    }

    fn bind(&self, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.error(
                "bind",
                format!("`{text}` is not an address and port"),
                "write it as IP:PORT, e.g. \"127.0.0.1:5000\" (\"0.0.0.0:5000\" listens on every interface)",
            )
        })
    }

    fn script(&self, raw: RawScript, state_dir: &Path) -> Result<ScriptConfig, ConfigError> {
        let path = self.resolve(
            raw.path
                .as_deref()
                .unwrap_or(Path::new("scripts/example-deploy.sh")),
        );
        self.check_executable(&path)?;
        let working_dir = raw
            .working_dir
            .map_or_else(|| self.base.clone(), |dir| self.resolve(&dir));
        if !working_dir.as_os_str().is_empty() && !working_dir.is_dir() {
            return Err(self.error(
                "script.working_dir",
                format!("{} is not a directory", working_dir.display()),
                "name an existing directory, or remove the key to use the config file's directory",
            ));
        }
        let timeout =
            self.at_most_ten_years("script.timeout_seconds", raw.timeout_seconds.unwrap_or(30 * 60))?;
        if timeout == 0 {
            return Err(self.error(
                "script.timeout_seconds",
                "a run cannot be given 0 seconds",
                "set a positive number of seconds (default 1800)",
            ));
        }
        let cooldown =
            self.at_most_ten_years("script.cooldown_seconds", raw.cooldown_seconds.unwrap_or(180))?;
        let kill_grace =
            self.at_most_ten_years("script.kill_grace_seconds", raw.kill_grace_seconds.unwrap_or(10))?;
        Ok(ScriptConfig {
            path,
            args: raw.args.unwrap_or_default(),
            working_dir,
            log_dir: raw
                .log_dir
                .map_or_else(|| state_dir.join("runs"), |dir| self.resolve(&dir)),
            cooldown: Duration::from_secs(cooldown),
            timeout: Duration::from_secs(timeout),
            kill_grace: Duration::from_secs(kill_grace),
            keep_logs: raw.keep_logs.unwrap_or(100).max(1),
        })
    }

    fn check_executable(&self, path: &Path) -> Result<(), ConfigError> {
        let shown = path.display();
        let metadata = std::fs::metadata(path).map_err(|error| {
            self.error(
                "script.path",
                format!("{shown} cannot be used: {error}"),
                "point it at the script to run (relative paths start at the config file's directory)",
            )
        })?;
        if !metadata.is_file() {
            return Err(self.error(
                "script.path",
                format!("{shown} is not a file"),
                "point it at the script itself",
            ));
        }
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(self.error(
                "script.path",
                format!("{shown} is not executable"),
                format!("run `chmod +x {shown}` and give it a #! line"),
            ));
        }
        Ok(())
    }

    fn history(&self, raw: RawHistory) -> Result<(PathBuf, usize, usize), ConfigError> {
        let file = self.resolve(raw.file.as_deref().unwrap_or(Path::new("history.json")));
        let retention = raw.retention.unwrap_or(1000);
        if retention == 0 {
            return Err(self.error(
                "history.retention",
                "0 would keep no runs at all",
                "set how many runs to keep, at least 1 (default 1000)",
            ));
        }
        let entries = raw.status_entries.unwrap_or(100);
        if entries == 0 {
            return Err(self.error(
                "history.status_entries",
                "0 would answer an empty history",
                "set how many runs /get_deploy_status returns, at least 1 (default 100)",
            ));
        }
        Ok((file, retention, entries))
    }

    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let public_url = raw.public_url.map(|url| self.public_url(&url)).transpose()?;
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|entry| self.proxy(entry))
            .collect::<Result<_, _>>()?;
        let max_connections = raw.max_connections.unwrap_or(512);
        let header_read_timeout = self.at_most_ten_years(
            "server.header_read_timeout_seconds",
            raw.header_read_timeout_seconds.unwrap_or(10),
        )?;
        let request_timeout = self.at_most_ten_years(
            "server.request_timeout_seconds",
            raw.request_timeout_seconds.unwrap_or(30),
        )?;
        for (key, value) in [
            ("server.max_connections", max_connections as u64),
            ("server.header_read_timeout_seconds", header_read_timeout),
            ("server.request_timeout_seconds", request_timeout),
        ] {
            if value == 0 {
                return Err(self.error(key, "0 would refuse every request", "set a positive number"));
            }
        }
        Ok(ServerConfig {
            public_url,
            trusted_proxies,
            max_connections,
            header_read_timeout: Duration::from_secs(header_read_timeout),
            request_timeout: Duration::from_secs(request_timeout),
        })
    }

    fn public_url(&self, url: &str) -> Result<PublicUrl, ConfigError> {
        let bad = || {
            self.error(
                "server.public_url",
                format!("`{url}` is not an http:// or https:// URL"),
                "write the address users open, e.g. \"https://deploy.example.com\"",
            )
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        // Browsers leave the scheme's default port out of `Origin`.
        let authority = authority.to_ascii_lowercase();
        let default_port = if https { ":443" } else { ":80" };
        let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
        Ok(PublicUrl {
            origin: format!("{}://{authority}", if https { "https" } else { "http" }),
            https,
        })
    }

    fn proxy(&self, entry: &str) -> Result<IpNet, ConfigError> {
        self.network("server.trusted_proxies", entry)
    }

    /// An address or CIDR network, as `key` lists them.
    fn network(&self, key: &str, entry: &str) -> Result<IpNet, ConfigError> {
        entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                self.error(
                    key,
                    format!("`{entry}` is not an IP address or CIDR network"),
                    "list addresses like \"127.0.0.1\" or networks like \"10.0.0.0/8\"",
                )
            })
    }

    fn exempt_network(&self, entry: &str) -> Result<IpNet, ConfigError> {
        let key = "regulation.exempt_networks";
        let network = self.network(key, entry)?;
        if network.prefix_len() == 0 {
            return Err(self.error(
                key,
                format!("`{entry}` is every address: nobody would ever be paused"),
                "list only the networks your team deploys from, e.g. the office VPN \"10.8.0.0/16\"",
            ));
        }
        Ok(network)
    }

    fn rotation(&self, raw: &RawAudit) -> Result<Rotation, ConfigError> {
        let defaults = Rotation::default();
        let max_bytes = raw.max_bytes.unwrap_or(defaults.max_bytes);
        if max_bytes < 4096 {
            return Err(self.error(
                "audit.max_bytes",
                format!("{max_bytes} bytes would rotate every few lines"),
                "set at least 4096 (default 10485760, 10 MiB)",
            ));
        }
        let keep_files = raw.keep_files.unwrap_or(defaults.keep_files);
        if !(1..=1000).contains(&keep_files) {
            return Err(self.error(
                "audit.keep_files",
                format!("{keep_files} rotated files cannot be kept"),
                "keep between 1 and 1000 rotated files (default 5)",
            ));
        }
        Ok(Rotation {
            max_bytes,
            keep_files,
        })
    }

    fn access(&self, raw: RawAccess, script: &ScriptConfig) -> Result<AccessConfig, ConfigError> {
        let hash = raw.api_token_sha256.filter(|hash| !hash.is_empty());
        if let Some(hash) = &hash
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(self.error(
                "access.api_token_sha256",
                "this is not a SHA-256 in hex (64 characters 0-9a-f)",
                "run `authrun token` and copy the hash it prints; never put the token itself here",
            ));
        }
        let verified_minutes =
            self.at_most_ten_years("access.verified_minutes", raw.verified_minutes.unwrap_or(15))?;
        let max_wait = raw
            .max_wait_seconds
            .map(|seconds| self.at_most_ten_years("access.max_wait_seconds", seconds))
            .transpose()?;
        // By default a request may wait as long as a run can last, stop included.
        let longest_run = script.timeout + script.kill_grace * 2;
        Ok(AccessConfig {
            verified_for: Duration::from_secs(verified_minutes * 60),
            public_output: raw.public_output.unwrap_or(false),
            api_token_sha256: hash.map(|hash| hash.to_ascii_lowercase()),
            max_wait: max_wait.map_or(longest_run, Duration::from_secs),
        })
    }

    fn regulation(&self, raw: RawRegulation) -> Result<RegulationSettings, ConfigError> {
        let defaults = RegulationSettings::default();
        let exempt_networks = raw
            .exempt_networks
            .unwrap_or_default()
            .iter()
            .map(|entry| self.exempt_network(entry))
            .collect::<Result<_, _>>()?;
        let seconds = |key: &str, value: Option<u64>, default: Duration| match value {
            Some(0) => Err(self.error(
                key,
                "0 seconds would switch the protection off",
                "set a positive number of seconds",
            )),
            Some(value) => self.at_most_ten_years(key, value).map(Duration::from_secs),
            None => Ok(default),
        };
        let count = |key: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(self.error(key, "0 failures would block every request", "set at least 1")),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        let settings = RegulationSettings {
            client_max_failures: count(
                "regulation.client_max_failures",
                raw.client_max_failures,
                defaults.client_max_failures,
            )?,
            client_window: seconds(
                "regulation.client_window_seconds",
                raw.client_window_seconds,
                defaults.client_window,
            )?,
            client_ban: seconds(
                "regulation.client_ban_seconds",
                raw.client_ban_seconds,
                defaults.client_ban,
            )?,
            global_max_failures: count(
                "regulation.global_max_failures",
                raw.global_max_failures,
                defaults.global_max_failures,
            )?,
            global_window: seconds(
                "regulation.global_window_seconds",
                raw.global_window_seconds,
                defaults.global_window,
            )?,
            global_pause: seconds(
                "regulation.global_pause_seconds",
                raw.global_pause_seconds,
                defaults.global_pause,
            )?,
            global_pause_max: seconds(
                "regulation.global_pause_max_seconds",
                raw.global_pause_max_seconds,
                defaults.global_pause_max,
            )?,
            exempt_networks,
        };
        if settings.global_pause_max < settings.global_pause {
            return Err(self.error(
                "regulation.global_pause_max_seconds",
                "the longest pause is shorter than the first",
                "set it to at least global_pause_seconds",
            ));
        }
        Ok(settings)
    }

    fn totp(
        &self,
        raw: RawTotp,
        state_dir: &Path,
        config_file: Option<&Path>,
    ) -> Result<(TotpSettings, SecretSource), ConfigError> {
        let digits = raw.digits.unwrap_or(6);
        if !(6..=8).contains(&digits) {
            return Err(self.error(
                "totp.digits",
                format!("{digits} digits are not supported"),
                "use 6 (default), 7 or 8",
            ));
        }
        let period = raw.period_seconds.unwrap_or(30);
        if !(1..=300).contains(&period) {
            return Err(self.error(
                "totp.period_seconds",
                format!("{period} seconds is out of range"),
                "use 30 (what authenticator apps expect), at most 300",
            ));
        }
        let skew = raw.skew_steps.unwrap_or(1);
        if skew > 2 {
            return Err(self.error(
                "totp.skew_steps",
                format!("{skew} steps would accept too many codes"),
                "use 0, 1 (default) or 2",
            ));
        }
        let issuer = self.label("totp.issuer", raw.issuer.unwrap_or_else(|| "authrun".into()))?;
        let account = self.label("totp.account", raw.account.unwrap_or_else(|| "deploy".into()))?;
        let secret = self.secret(raw.secret, raw.secret_file, state_dir, config_file)?;
        let settings = TotpSettings {
            digits,
            period,
            skew,
            issuer,
            account,
        };
        Ok((settings, secret))
    }

    fn label(&self, key: &str, value: String) -> Result<String, ConfigError> {
        if value.trim().is_empty() || value.contains(':') {
            return Err(self.error(
                key,
                format!("`{value}` cannot label a TOTP account"),
                "use a non-empty name without `:`",
            ));
        }
        Ok(value)
    }

    fn secret(
        &self,
        inline: Option<String>,
        file: Option<PathBuf>,
        state_dir: &Path,
        config_file: Option<&Path>,
    ) -> Result<SecretSource, ConfigError> {
        let (text, key, holder) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "totp.secret",
                    "both `secret` and `secret_file` are set",
                    "keep one of them",
                ));
            }
            (Some(text), None) => (text, "totp.secret", self.inline_secret_holder(config_file)),
            (None, Some(file)) => {
                let path = self.resolve(&file);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    self.error(
                        "totp.secret_file",
                        format!("{} cannot be read: {error}", path.display()),
                        "point it at a file holding the base32 secret (`authrun secret > FILE`)",
                    )
                })?;
                (text, "totp.secret_file", Some(path))
            }
            (None, None) => return Ok(SecretSource::Generated(state_dir.join("secret"))),
        };
        parse_secret(&text)
            .map(|key| SecretSource::Configured { key, file: holder })
            .map_err(|problem| {
                self.error(
                    key,
                    problem,
                    "generate one with `authrun secret` (160 bits, base32) and scan the new QR code",
                )
            })
    }
}

impl Validator {
    /// The config file, when the inline secret was written in it (not given by the environment).
    fn inline_secret_holder(&self, config_file: Option<&Path>) -> Option<PathBuf> {
        let from_file = config_file
            .and_then(|file| std::fs::read_to_string(file).ok())
            .and_then(|text| {
                toml::from_str::<RawConfig>(&text)
                    .ok()
                    .and_then(|raw| raw.totp.secret)
            });
        from_file.and(config_file.map(Path::to_path_buf))
    }
}

impl Config {
    /// Refuses a secret kept in a file that group or others can read. `authrun serve
    /// --insecure-permissions` skips this check, for development.
    pub fn check_secret_permissions(&self) -> Result<(), ConfigError> {
        let (file, key) = match &self.secret {
            SecretSource::Configured { file: Some(file), .. } if Some(file) == self.file.as_ref() => {
                (file, "totp.secret")
            }
            SecretSource::Configured { file: Some(file), .. } => (file, "totp.secret_file"),
            SecretSource::Generated(file) if file.exists() => (file, "totp (generated secret)"),
            _ => return Ok(()),
        };
        let mode = std::fs::metadata(file)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(ConfigError {
                origin: file.display().to_string(),
                key: key.into(),
                problem: format!(
                    "the file holding the secret can be read by others (mode {:o})",
                    mode & 0o777
                ),
                fix: format!(
                    "run `chmod 600 {}`, or pass --insecure-permissions for development",
                    file.display()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("deploy.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("authrun.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env)
    }

    #[test]
    fn the_embedded_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(Some(&path), &no_env).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:5000");
        assert_eq!(config.script.cooldown, Duration::from_secs(180));
        assert_eq!(config.script.timeout, Duration::from_secs(1800));
        assert_eq!(config.totp.digits, 6);
    }

    #[test]
    fn defaults_match_the_original() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &no_env).unwrap();
        assert_eq!(config.script.cooldown, Duration::from_secs(180));
        assert_eq!(config.history_retention, 1000);
        assert!(config.history_file.ends_with("history.json"));
        assert!(matches!(config.secret, SecretSource::Generated(_)));
    }

    #[test]
    fn unknown_keys_are_named_with_their_position() {
        let error = load_text("[script]\npath = \"deploy.sh\"\ncooldown = 5\n", &no_env).unwrap_err();
        assert_eq!(error.key, "cooldown");
        assert!(error.origin.ends_with("authrun.toml:3:1"), "{error}");
        assert!(error.to_string().contains("example-config"), "{error}");
    }

    #[test]
    fn short_secrets_are_refused_without_being_shown() {
        let error = load_text(
            "[script]\npath = \"deploy.sh\"\n[totp]\nsecret = \"JBSWY3DPEHPK3PXP\"\n",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(error.key, "totp.secret");
        assert!(error.problem.contains("80 bits"), "{error}");
        assert!(!error.to_string().contains("JBSWY3DPEHPK3PXP"), "{error}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = |name: &str| match name {
            "AUTHRUN_SECRET" => Some(SECRET.to_string()),
            "AUTHRUN_SCRIPT_COOLDOWN_SECONDS" => Some("5".to_string()),
            "AUTHRUN_BIND" => Some("127.0.0.1:8080".to_string()),
            _ => None,
        };
        let config = load_text("bind = \"0.0.0.0:1\"\n[script]\npath = \"deploy.sh\"\n", &env).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.script.cooldown, Duration::from_secs(5));
        assert!(matches!(config.secret, SecretSource::Configured { .. }));
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = |name: &str| (name == "AUTHRUN_SCRIPT_TIMEOUT_SECONDS").then(|| "soon".to_string());
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(
            error.origin,
            "environment variable AUTHRUN_SCRIPT_TIMEOUT_SECONDS"
        );
    }

    #[test]
    fn audit_rotation_and_exempt_networks_are_read_checked_and_overridable() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &no_env).unwrap();
        assert_eq!(config.audit_rotation.max_bytes, 10 * 1024 * 1024);
        assert_eq!(config.audit_rotation.keep_files, 5);
        assert!(config.regulation.exempt_networks.is_empty());

        let text = "[script]\npath = \"deploy.sh\"\n[audit]\nmax_bytes = 65536\nkeep_files = 2\n\
                    [regulation]\nexempt_networks = [\"10.8.0.0/16\", \"192.0.2.7\", \"2001:db8::/48\"]\n";
        let config = load_text(text, &no_env).unwrap();
        assert_eq!(
            config.audit_rotation,
            Rotation {
                max_bytes: 65536,
                keep_files: 2
            }
        );
        let exempt: Vec<String> = config
            .regulation
            .exempt_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(exempt, ["10.8.0.0/16", "192.0.2.7/32", "2001:db8::/48"]);

        let env = |name: &str| match name {
            "AUTHRUN_AUDIT_MAX_BYTES" => Some("8192".to_string()),
            "AUTHRUN_AUDIT_KEEP_FILES" => Some("9".to_string()),
            "AUTHRUN_REGULATION_EXEMPT_NETWORKS" => Some("10.9.0.0/16, fd00::/8".to_string()),
            _ => None,
        };
        let config = load_text(text, &env).unwrap();
        assert_eq!(config.audit_rotation.max_bytes, 8192);
        assert_eq!(config.audit_rotation.keep_files, 9);
        assert_eq!(config.regulation.exempt_networks.len(), 2);

        for (text, key, fix) in [
            ("[audit]\nmax_bytes = 100", "audit.max_bytes", "4096"),
            (
                "[audit]\nkeep_files = 0",
                "audit.keep_files",
                "between 1 and 1000",
            ),
            (
                "[regulation]\nexempt_networks = [\"office\"]",
                "regulation.exempt_networks",
                "10.0.0.0/8",
            ),
            (
                "[regulation]\nexempt_networks = [\"0.0.0.0/0\"]",
                "regulation.exempt_networks",
                "VPN",
            ),
        ] {
            let error = load_text(&format!("[script]\npath = \"deploy.sh\"\n{text}\n"), &no_env).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
            assert!(error.fix.contains(fix), "{text}: {error}");
        }
    }

    #[test]
    fn scripts_must_exist_and_be_executable() {
        let missing = load_text("[script]\npath = \"nope.sh\"\n", &no_env).unwrap_err();
        assert_eq!(missing.key, "script.path");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plain.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let text = format!("[script]\npath = \"{}\"\n", script.display());
        let error = load_text(&text, &no_env).unwrap_err();
        assert!(error.fix.contains("chmod +x"), "{error}");
    }
}
