//! From the configuration as written ([`Schema`]) to the one authrun runs with ([`Config`]): every value
//! checked, durations made `Duration`s, relative paths resolved against the config file's directory.
//!
//! An error names the key, where its value came from (the file with line and column, the environment
//! variable, or the built-in default), the problem and the fix. Values that could be a secret typed into
//! the wrong key are never quoted.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::schema::{self, Schema};
use super::sources::Sources;
use super::{
    AccessConfig, ActionConfig, ActionId, Allowed, AuthMode, AuthSettings, Config, ConfigError, MailSecurity,
    MailSettings, Mailbox, MetricsConfig, NotifyRule, PublicUrl, RegulationSettings, Rotation, ScriptConfig,
    SecretSource, ServerConfig, StoreSettings, TotpSettings, WebhookTarget,
};
use crate::model::operator::{OperatorName, Role};
use crate::model::run::RunStatus;
use crate::model::secret::parse_secret;

/// The words of `[[notify]] on`, and the statuses they stand for.
const NOTIFY_ON: [(&str, RunStatus); 6] = [
    ("started", RunStatus::Deploying),
    ("succeeded", RunStatus::Succeeded),
    ("failed", RunStatus::Failed),
    ("timed_out", RunStatus::TimedOut),
    ("interrupted", RunStatus::Interrupted),
    ("cancelled", RunStatus::Cancelled),
];

/// Durations past ten years make no sense and would overflow time arithmetic.
const TEN_YEARS: u64 = 10 * 365 * 24 * 60 * 60;

/// Checks `raw` and builds the configuration. `file` is the config file, if any.
pub fn validate(raw: Schema, sources: &Sources, file: Option<&Path>) -> Result<Config, ConfigError> {
    let base = file.and_then(Path::parent).unwrap_or(Path::new(""));
    // Absolute, so that a bare `deploy.sh` is never looked up in PATH and a later `cd` changes nothing.
    let base = std::path::absolute(if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    })
    .unwrap_or_else(|_| base.to_path_buf());
    let action_ids = raw.actions.iter().map(|action| action.id.clone()).collect();
    let check = Check {
        sources,
        base,
        action_ids,
        secret_files: std::cell::RefCell::default(),
    };
    check.config(raw, file)
}

/// Checks values and builds errors that point at their origin.
struct Check<'a> {
    sources: &'a Sources,
    base: PathBuf,
    /// The ids written in `[[actions]]`, valid or not, to name an action in its errors.
    action_ids: Vec<String>,
    /// The files secrets were read from, and their keys: their permissions are checked at start.
    secret_files: std::cell::RefCell<Vec<(String, PathBuf)>>,
}

impl Check<'_> {
    fn config(&self, raw: Schema, file: Option<&Path>) -> Result<Config, ConfigError> {
        let bind = self.bind(&raw.bind)?;
        let state_dir = self.resolve(&raw.state_dir);
        let actions = self.actions(raw.action, raw.script, raw.actions, &state_dir)?;
        let max_parallel = self.at_least_one(
            "runs.max_parallel",
            raw.runs.max_parallel,
            "0 would refuse every run",
            "set how many runs of different actions may go at once, at least 1 (default 4)",
        )?;
        let history_retention = self.at_least_one(
            "history.retention",
            raw.history.retention,
            "0 would keep no runs at all",
            "set how many runs to keep, at least 1 (default 1000)",
        )?;
        let status_entries = self.at_least_one(
            "history.status_entries",
            raw.history.status_entries,
            "0 would answer an empty history",
            "set how many runs /get_deploy_status returns, at least 1 (default 100)",
        )?;
        let (totp, secret) = self.totp(raw.totp, &state_dir, file)?;
        let server = self.server(raw.server)?;
        let mail_configured = raw.mail.host.is_some();
        let auth = self.auth(raw.auth, mail_configured)?;
        let regulation = self.regulation(raw.regulation)?;
        let access = self.access(raw.access, &actions)?;
        let mail = self.mail(raw.mail)?;
        let store = self.store(raw.store)?;
        let notify = raw
            .notify
            .into_iter()
            .enumerate()
            .map(|(index, entry)| self.notify(index, entry, &actions, mail.is_some()))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            file: file.map(Path::to_path_buf),
            bind,
            actions,
            max_parallel,
            history_file: self.resolve(&raw.history.file),
            history_retention,
            status_entries,
            totp,
            secret,
            server,
            auth,
            regulation,
            audit_file: raw
                .audit
                .file
                .as_ref()
                .map_or_else(|| state_dir.join("audit.log"), |file| self.resolve(file)),
            audit_rotation: self.rotation(&raw.audit)?,
            regulation_file: state_dir.join("regulation.json"),
            operators_file: state_dir.join("operators.json"),
            access,
            metrics: MetricsConfig {
                enabled: raw.metrics.enabled,
                allow: self.networks("metrics.allow", &raw.metrics.allow)?,
            },
            state_dir,
            mail,
            notify,
            store,
            secret_files: self.secret_files.take(),
        })
    }

    /// `[store]`: the files, or a database named by `url` or `url_file` (one from the environment
    /// replaces the other from the file). The URL is checked here, never quoted: it may hold a password.
    fn store(&self, raw: schema::Store) -> Result<StoreSettings, ConfigError> {
        let pool_size = self.at_least_one(
            "store.pool_size",
            raw.pool_size,
            "0 connections would answer no request",
            "set how many connections to the database authrun may keep, at least 1 (default 8)",
        )?;
        let lease_seconds = self.at_least_one(
            "store.lease_seconds",
            raw.lease_seconds,
            "a lease of 0 seconds would run out at once and interrupt every run",
            "set how long a run's lease lasts, in seconds, at least 1 (default 30)",
        )?;
        match raw.kind.as_str() {
            "files" => {
                for (key, set) in [
                    ("store.url", raw.url.is_some()),
                    ("store.url_file", raw.url_file.is_some()),
                ] {
                    if set {
                        return Err(self.error(
                            key,
                            "a database is named, but kind is \"files\", so it would not be used",
                            "set kind = \"postgres\" to keep the state in the database, or remove it",
                        ));
                    }
                }
                Ok(StoreSettings::Files)
            }
            "postgres" => {
                let url = self.secret_text(
                    ("store.url", raw.url),
                    ("store.url_file", raw.url_file),
                    "the database URL",
                )?;
                let Some(url) = url else {
                    return Err(self.error(
                        "store.url",
                        "kind is \"postgres\" but no database is named",
                        "set url_file (or AUTHRUN_STORE_URL) to postgres://USER:PASSWORD@HOST:PORT/DBNAME",
                    ));
                };
                if let Err(error) = url.parse::<tokio_postgres::Config>() {
                    let key = if self.sources.is_default("store.url") {
                        "store.url_file"
                    } else {
                        "store.url"
                    };
                    return Err(self.error(
                        key,
                        format!("the database URL cannot be read ({error})"),
                        "write it as postgres://USER:PASSWORD@HOST:PORT/DBNAME",
                    ));
                }
                Ok(StoreSettings::Postgres {
                    url,
                    pool_size,
                    lease: std::time::Duration::from_secs(lease_seconds),
                })
            }
            _ => Err(self.error(
                "store.kind",
                "is neither \"files\" nor \"postgres\"",
                "set kind = \"files\" (one instance) or \"postgres\" (several, on one database)",
            )),
        }
    }

    /// Notes that the secret of `key` is read from `path`.
    fn secret_file(&self, key: &str, path: &Path) {
        self.secret_files
            .borrow_mut()
            .push((shown_key(key), path.to_path_buf()));
    }

    /// A secret given inline or in a file (`inline` and `file` name their keys); one from the environment
    /// replaces the other from the file. `what` names it in errors; its text never appears in them.
    fn secret_text(
        &self,
        (inline_key, inline): (&str, Option<String>),
        (file_key, file): (&str, Option<PathBuf>),
        what: &str,
    ) -> Result<Option<String>, ConfigError> {
        let from_env = |key| self.sources.is_from_environment(key);
        let (inline, file) = match (inline, file) {
            (Some(inline), Some(file)) => match (from_env(inline_key), from_env(file_key)) {
                (true, false) => (Some(inline), None),
                (false, true) => (None, Some(file)),
                _ => {
                    let (inline_name, file_name) = (last_part(inline_key), last_part(file_key));
                    return Err(self.error(
                        inline_key,
                        format!("both `{inline_name}` and `{file_name}` are set"),
                        "keep one of them",
                    ));
                }
            },
            other => other,
        };
        if let Some(file) = file {
            let path = self.resolve(&file);
            self.secret_file(file_key, &path);
            let text = std::fs::read_to_string(&path).map_err(|error| {
                self.error(
                    file_key,
                    format!("{} cannot be read: {error}", shown_path(&path)),
                    format!("point it at a file holding {what}, readable by authrun only"),
                )
            })?;
            let text = text.trim().to_string();
            if text.is_empty() {
                return Err(self.error(
                    file_key,
                    format!("{} is empty", shown_path(&path)),
                    format!("write {what} into it"),
                ));
            }
            return Ok(Some(text));
        }
        Ok(inline.filter(|text| !text.trim().is_empty()))
    }

    /// An error about `key`. A key of an `[[actions]]` table (`actions.1.path`) is shown as `actions[2].path`
    /// (tables counted from 1, as a reader counts them), and the problem names the action.
    fn error(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        let mut problem = problem.into();
        if let Some((list, index, field)) = list_entry(key) {
            match self.action_ids.get(index).filter(|id| !id.is_empty()) {
                Some(id) if list == "actions" && field != "id" => {
                    problem = format!("action `{id}`: {problem}");
                }
                _ => {}
            }
        }
        ConfigError {
            origin: self.sources.origin(key),
            key: shown_key(key),
            problem,
            fix: fix.into(),
        }
    }

    /// The actions: `[[actions]]`, or the one of `[action]` and `[script]` (id `deploy`). A list from
    /// the environment replaces the file's actions of either form; the two forms cannot be mixed.
    fn actions(
        &self,
        action: schema::Action,
        script: schema::Script,
        list: Vec<schema::ActionEntry>,
        state_dir: &Path,
    ) -> Result<Vec<ActionConfig>, ConfigError> {
        if list.is_empty() {
            return Ok(vec![ActionConfig {
                id: ActionId::default_id(),
                name: action.name,
                description: action.description,
                confirm: None,
                allow: self.allow("action.allow", &action.allow)?,
                script: self.script("script", script, state_dir)?,
            }]);
        }
        let list_from_environment = self.sources.is_from_environment("actions");
        let single = ["action", "script"]
            .iter()
            .flat_map(|section| self.sources.set_in(section))
            // The environment's list replaces what the file says, in either form.
            .find(|(_, from_environment)| *from_environment || !list_from_environment);
        if let Some((key, _)) = single {
            return Err(self.error(
                &key,
                format!(
                    "[action] and [script] configure one action, and [[actions]] ({}) several: \
                     authrun takes one form or the other",
                    self.sources.origin("actions")
                ),
                "move this key into an [[actions]] table (id = \"deploy\" keeps what the one action \
                 was), or remove [[actions]]",
            ));
        }
        let mut actions: Vec<ActionConfig> = Vec::with_capacity(list.len());
        for (index, entry) in list.into_iter().enumerate() {
            let at = format!("actions.{index}");
            let id = ActionId::parse(&entry.id).ok_or_else(|| {
                let problem = if entry.id.is_empty() {
                    "this action has no id".to_string()
                } else {
                    format!("{} is not an action id", quoted(&entry.id))
                };
                self.error(
                    &format!("{at}.id"),
                    problem,
                    "give each [[actions]] table an id of 1 to 32 of a-z, 0-9 and -, e.g. id = \"deploy\"",
                )
            })?;
            if let Some(first) = actions.iter().position(|other| other.id == id) {
                return Err(self.error(
                    &format!("{at}.id"),
                    format!("`{id}` is also the id of action {}", first + 1),
                    "give each action its own id",
                ));
            }
            let script = self.script(&at, entry.script(), state_dir)?;
            let allow = self.allow(&format!("{at}.allow"), &entry.allow)?;
            actions.push(ActionConfig {
                allow,
                name: entry.name.unwrap_or_else(|| id.to_string()),
                description: entry.description,
                confirm: entry.confirm.filter(|text| !text.trim().is_empty()),
                id,
                script,
            });
        }
        Ok(actions)
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    /// A number of seconds, at most ten years.
    fn seconds(&self, key: &str, value: u64) -> Result<Duration, ConfigError> {
        self.at_most_ten_years(key, value).map(Duration::from_secs)
    }

    fn at_most_ten_years(&self, key: &str, value: u64) -> Result<u64, ConfigError> {
        if value > TEN_YEARS {
            return Err(self.error(
                key,
                format!("{value} is more than ten years"),
                format!("use at most {TEN_YEARS}"),
            ));
        }
        Ok(value)
    }

    /// A count or length where 0 makes no sense; `problem` says what 0 would do.
    fn at_least_one<T: Copy + PartialEq + Default>(
        &self,
        key: &str,
        value: T,
        problem: &str,
        fix: &str,
    ) -> Result<T, ConfigError> {
        if value == T::default() {
            return Err(self.error(key, problem, fix));
        }
        Ok(value)
    }

    fn bind(&self, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.error(
                "bind",
                format!("{} is not an address and port", quoted(text)),
                "write it as IP:PORT, e.g. \"127.0.0.1:5000\" (\"0.0.0.0:5000\" listens on every interface)",
            )
        })
    }

    /// The keys of `[script]`, or of an `[[actions]]` table: `at` is `script` or `actions.<index>`.
    fn script(&self, at: &str, raw: schema::Script, state_dir: &Path) -> Result<ScriptConfig, ConfigError> {
        let key = |name: &str| format!("{at}.{name}");
        let path = self.executable(&key("path"), &raw.path)?;
        let working_dir = raw
            .working_dir
            .map_or_else(|| self.base.clone(), |dir| self.resolve(&dir));
        if !working_dir.is_dir() {
            return Err(self.error(
                &key("working_dir"),
                format!("{} is not a directory", shown_path(&working_dir)),
                "name an existing directory, or remove the key to use the config file's directory",
            ));
        }
        let timeout = self.seconds(&key("timeout_seconds"), raw.timeout_seconds)?;
        let timeout = self.at_least_one(
            &key("timeout_seconds"),
            timeout,
            "a run cannot be given 0 seconds",
            "set a positive number of seconds (default 1800)",
        )?;
        Ok(ScriptConfig {
            path,
            args: raw.args,
            working_dir,
            log_dir: raw
                .log_dir
                .map_or_else(|| state_dir.join("runs"), |dir| self.resolve(&dir)),
            cooldown: self.seconds(&key("cooldown_seconds"), raw.cooldown_seconds)?,
            timeout,
            kill_grace: self.seconds(&key("kill_grace_seconds"), raw.kill_grace_seconds)?,
            keep_logs: raw.keep_logs.max(1),
            leave_running: raw.leave_running,
        })
    }

    /// An existing executable file.
    fn executable(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        let path = self.resolve(path);
        let shown = shown_path(&path);
        let metadata = std::fs::metadata(&path).map_err(|error| {
            self.error(
                key,
                format!("{shown} cannot be used: {error}"),
                "point it at the script to run (relative paths start at the config file's directory)",
            )
        })?;
        if !metadata.is_file() {
            return Err(self.error(
                key,
                format!("{shown} is not a file"),
                "point it at the script itself",
            ));
        }
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(self.error(
                key,
                format!("{shown} is not executable"),
                format!("run `chmod +x {shown}` and give it a #! line"),
            ));
        }
        Ok(path)
    }

    fn server(&self, raw: schema::Server) -> Result<ServerConfig, ConfigError> {
        let zero = "0 would refuse every request";
        let positive = "set a positive number";
        Ok(ServerConfig {
            public_url: raw.public_url.map(|url| self.public_url(&url)).transpose()?,
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .map(|entry| self.proxy(entry))
                .collect::<Result<_, _>>()?,
            max_connections: self.at_least_one(
                "server.max_connections",
                raw.max_connections,
                zero,
                positive,
            )?,
            max_connections_per_client: self.at_least_one(
                "server.max_connections_per_client",
                raw.max_connections_per_client,
                zero,
                positive,
            )?,
            header_read_timeout: self.at_least_one(
                "server.header_read_timeout_seconds",
                self.seconds(
                    "server.header_read_timeout_seconds",
                    raw.header_read_timeout_seconds,
                )?,
                zero,
                positive,
            )?,
            request_timeout: self.at_least_one(
                "server.request_timeout_seconds",
                self.seconds("server.request_timeout_seconds", raw.request_timeout_seconds)?,
                zero,
                positive,
            )?,
        })
    }

    fn public_url(&self, url: &str) -> Result<PublicUrl, ConfigError> {
        let bad = || {
            self.error(
                "server.public_url",
                format!("{} is not an http:// or https:// URL", quoted(url)),
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
                    format!("{} is not an IP address or CIDR network", quoted(entry)),
                    "list addresses like \"127.0.0.1\" or networks like \"10.0.0.0/8\"",
                )
            })
    }

    /// A list of addresses or CIDR networks, as `key` holds them.
    fn networks(&self, key: &str, entries: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        entries.iter().map(|entry| self.network(key, entry)).collect()
    }

    fn exempt_network(&self, entry: &str) -> Result<IpNet, ConfigError> {
        let key = "regulation.exempt_networks";
        let network = self.network(key, entry)?;
        if network.prefix_len() == 0 {
            return Err(self.error(
                key,
                format!("{} is every address: nobody would ever be paused", quoted(entry)),
                "list only the networks your team deploys from, e.g. the office VPN \"10.8.0.0/16\"",
            ));
        }
        Ok(network)
    }

    fn rotation(&self, raw: &schema::Audit) -> Result<Rotation, ConfigError> {
        if raw.max_bytes < 4096 {
            return Err(self.error(
                "audit.max_bytes",
                format!("{} bytes would rotate every few lines", raw.max_bytes),
                "set at least 4096 (default 10485760, 10 MiB)",
            ));
        }
        if !(1..=1000).contains(&raw.keep_files) {
            return Err(self.error(
                "audit.keep_files",
                format!("{} rotated files cannot be kept", raw.keep_files),
                "keep between 1 and 1000 rotated files (default 5)",
            ));
        }
        Ok(Rotation {
            max_bytes: raw.max_bytes,
            keep_files: raw.keep_files,
        })
    }

    fn access(&self, raw: schema::Access, actions: &[ActionConfig]) -> Result<AccessConfig, ConfigError> {
        let hash = Some(raw.api_token_sha256).filter(|hash| !hash.is_empty());
        if let Some(hash) = &hash
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(self.error(
                "access.api_token_sha256",
                "this is not a SHA-256 in hex (64 characters 0-9a-f)",
                "run `authrun token` and copy the hash it prints; never put the token itself here",
            ));
        }
        let verified_minutes = self.at_most_ten_years("access.verified_minutes", raw.verified_minutes)?;
        // By default a request may wait as long as a run can last, stop included.
        let longest_run = actions
            .iter()
            .map(|action| action.script.timeout + action.script.kill_grace * 2)
            .max()
            .unwrap_or_default();
        Ok(AccessConfig {
            verified_for: Duration::from_secs(verified_minutes * 60),
            public_output: raw.public_output,
            api_token_sha256: hash.map(|hash| hash.to_ascii_lowercase()),
            max_wait: match raw.max_wait_seconds {
                Some(seconds) => self.seconds("access.max_wait_seconds", seconds)?,
                None => longest_run,
            },
        })
    }

    fn auth(&self, raw: schema::Auth, mail_configured: bool) -> Result<AuthSettings, ConfigError> {
        let mode = match raw.mode.as_str() {
            "shared" => AuthMode::Shared,
            "operators" => AuthMode::Operators,
            other => {
                return Err(self.error(
                    "auth.mode",
                    format!("{} is not a mode", quoted(other)),
                    "use \"shared\" (one TOTP secret) or \"operators\" (one per person)",
                ));
            }
        };
        let hours = self.at_least_one(
            "auth.enrollment_hours",
            raw.enrollment_hours,
            "0 hours would make every enrollment link expire at once",
            "set how many hours a link stays valid, at least 1 (default 24)",
        )?;
        let hours = self.at_most_ten_years("auth.enrollment_hours", hours.saturating_mul(3600))?;
        if raw.email_codes && (mode != AuthMode::Operators || !mail_configured) {
            return Err(self.error(
                "auth.email_codes",
                "codes by mail need operators (their addresses) and a mail server",
                "set [auth] mode = \"operators\" and [mail] host (see the README, \"Mail\"), or email_codes = false",
            ));
        }
        let email_code_seconds = self.at_least_one(
            "auth.email_code_seconds",
            raw.email_code_seconds,
            "0 seconds would make every emailed code expire before it arrives",
            "set how many seconds a code by mail stays valid (default 300)",
        )?;
        Ok(AuthSettings {
            mode,
            enrollment: Duration::from_secs(hours),
            passwords: raw.passwords,
            email_codes: raw.email_codes,
            email_code: self.seconds("auth.email_code_seconds", email_code_seconds)?,
        })
    }

    /// An action's `allow`: operator names and `role:admin` / `role:operator`.
    fn allow(&self, key: &str, entries: &[String]) -> Result<Vec<Allowed>, ConfigError> {
        entries
            .iter()
            .map(|entry| {
                let allowed = match entry.strip_prefix("role:") {
                    Some(role) => Role::parse(role).map(Allowed::Role),
                    None => OperatorName::parse(entry).map(Allowed::Operator),
                };
                allowed.ok_or_else(|| {
                    self.error(
                        key,
                        format!("{} is neither an operator name nor a role", quoted(entry)),
                        "list operator names ([a-z0-9._-], up to 32) or \"role:admin\" / \"role:operator\"",
                    )
                })
            })
            .collect()
    }

    fn regulation(&self, raw: schema::Regulation) -> Result<RegulationSettings, ConfigError> {
        let seconds = |key: &str, value: u64| {
            let value = self.seconds(key, value)?;
            self.at_least_one(
                key,
                value,
                "0 seconds would switch the protection off",
                "set a positive number of seconds",
            )
        };
        let failures = |key: &str, value: usize| {
            self.at_least_one(
                key,
                value,
                "0 failures would block every request",
                "set at least 1",
            )
        };
        let settings = RegulationSettings {
            client_max_failures: failures("regulation.client_max_failures", raw.client_max_failures)?,
            client_window: seconds("regulation.client_window_seconds", raw.client_window_seconds)?,
            client_ban: seconds("regulation.client_ban_seconds", raw.client_ban_seconds)?,
            global_max_failures: failures("regulation.global_max_failures", raw.global_max_failures)?,
            global_window: seconds("regulation.global_window_seconds", raw.global_window_seconds)?,
            global_pause: seconds("regulation.global_pause_seconds", raw.global_pause_seconds)?,
            global_pause_max: seconds(
                "regulation.global_pause_max_seconds",
                raw.global_pause_max_seconds,
            )?,
            exempt_networks: raw
                .exempt_networks
                .iter()
                .map(|entry| self.exempt_network(entry))
                .collect::<Result<_, _>>()?,
            user_max_failures: self.at_least_one(
                "regulation.user_max_failures",
                raw.user_max_failures,
                "0 failures would lock every operator",
                "set at least 1 (default 3)",
            )?,
            user_lock: seconds("regulation.user_lock_seconds", raw.user_lock_seconds)?,
        };
        if settings.global_pause_max < settings.global_pause {
            // Blame the key that was set: the default longest pause is not what the user wrote.
            return Err(
                if self.sources.is_default("regulation.global_pause_max_seconds") {
                    self.error(
                    "regulation.global_pause_seconds",
                    format!(
                        "the first pause is longer than the longest, global_pause_max_seconds ({} by default)",
                        raw.global_pause_max_seconds
                    ),
                    "shorten it, or raise global_pause_max_seconds",
                )
                } else {
                    self.error(
                        "regulation.global_pause_max_seconds",
                        "the longest pause is shorter than the first",
                        "set it to at least global_pause_seconds",
                    )
                },
            );
        }
        Ok(settings)
    }

    fn totp(
        &self,
        raw: schema::Totp,
        state_dir: &Path,
        config_file: Option<&Path>,
    ) -> Result<(TotpSettings, SecretSource), ConfigError> {
        let digits = raw.digits;
        if !(6..=8).contains(&digits) {
            return Err(self.error(
                "totp.digits",
                format!("{digits} digits are not supported"),
                "use 6 (default), 7 or 8",
            ));
        }
        let period = raw.period_seconds;
        if !(1..=300).contains(&period) {
            return Err(self.error(
                "totp.period_seconds",
                format!("{period} seconds is out of range"),
                "use 30 (what authenticator apps expect), at most 300",
            ));
        }
        let skew = raw.skew_steps;
        if skew > 2 {
            return Err(self.error(
                "totp.skew_steps",
                format!("{skew} steps would accept too many codes"),
                "use 0, 1 (default) or 2",
            ));
        }
        let settings = TotpSettings {
            digits,
            period,
            skew,
            issuer: self.label("totp.issuer", raw.issuer)?,
            account: self.label("totp.account", raw.account)?,
        };
        let secret = self.secret(raw.secret, raw.secret_file, state_dir, config_file)?;
        Ok((settings, secret))
    }

    fn label(&self, key: &str, value: String) -> Result<String, ConfigError> {
        if value.trim().is_empty() || value.contains(':') {
            return Err(self.error(
                key,
                format!("{} cannot label a TOTP account", quoted(&value)),
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
            (Some(text), None) => {
                // The config file holds the secret only when it was written there.
                let holder = config_file.filter(|_| self.sources.is_from_file("totp.secret"));
                (text, "totp.secret", holder.map(Path::to_path_buf))
            }
            (None, Some(file)) => {
                let path = self.resolve(&file);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    self.error(
                        "totp.secret_file",
                        format!("{} cannot be read: {error}", shown_path(&path)),
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

impl Check<'_> {
    /// `[mail]`: `None` without a host; any other key set without one is an error.
    fn mail(&self, raw: schema::Mail) -> Result<Option<MailSettings>, ConfigError> {
        let Some(host) = raw.host.filter(|host| !host.trim().is_empty()) else {
            // security and timeout_seconds have defaults, which the example writes out.
            let set = [
                ("mail.port", raw.port.is_some()),
                ("mail.username", raw.username.is_some()),
                ("mail.password", raw.password.is_some()),
                ("mail.password_file", raw.password_file.is_some()),
                ("mail.from", raw.from.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                return Err(self.error(
                    key,
                    "[mail] has no host, so authrun would send no mail",
                    "set host to your SMTP server (\"127.0.0.1\" for a local relay), or remove [mail]",
                ));
            }
            return Ok(None);
        };
        let host = host.trim().to_string();
        let security = match raw.security.as_str() {
            "starttls" => MailSecurity::StartTls,
            "tls" => MailSecurity::Tls,
            "none" => MailSecurity::None,
            other => {
                return Err(self.error(
                    "mail.security",
                    format!("{} is not a kind of security", quoted(other)),
                    "write \"starttls\" (port 587), \"tls\" (port 465) or \"none\" (a relay on 127.0.0.1)",
                ));
            }
        };
        let local = matches!(
            host.trim_start_matches('[').trim_end_matches(']'),
            "127.0.0.1" | "::1" | "localhost"
        );
        if security == MailSecurity::None && !local {
            return Err(self.error(
                "mail.security",
                format!(
                    "\"none\" would send mail and password to {} unencrypted; it is only for a relay on this \
                     machine (127.0.0.1, ::1 or localhost)",
                    quoted(&host)
                ),
                "use security = \"starttls\" (port 587) or \"tls\" (port 465), or a relay on 127.0.0.1",
            ));
        }
        let password = self.mail_password(raw.password, raw.password_file)?;
        let credentials = match (raw.username.filter(|user| !user.is_empty()), password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.error(
                    "mail.username",
                    "a user name is set, but no password",
                    "set password_file (or AUTHRUN_MAIL_PASSWORD), or remove username",
                ));
            }
            (None, Some(_)) => {
                let key = if self.sources.is_default("mail.password") {
                    "mail.password_file"
                } else {
                    "mail.password"
                };
                return Err(self.error(
                    key,
                    "a password is set, but no user name",
                    "set username to the account the password belongs to",
                ));
            }
        };
        let from = raw.from.unwrap_or_default();
        if from.trim().is_empty() {
            return Err(self.error(
                "mail.from",
                "mail needs a sender",
                "set from, e.g. \"authrun <authrun@example.com>\"",
            ));
        }
        let from = self.mailbox("mail.from", &from)?;
        let timeout = self.seconds("mail.timeout_seconds", raw.timeout_seconds)?;
        let timeout = self.at_least_one(
            "mail.timeout_seconds",
            timeout,
            "0 seconds would give up on every message",
            "set a positive number of seconds (default 10)",
        )?;
        Ok(Some(MailSettings {
            port: raw.port.unwrap_or(security.default_port()),
            host,
            security,
            credentials,
            from,
            timeout,
        }))
    }

    /// The password, from `password` or `password_file`; one from the environment replaces the other
    /// from the file.
    fn mail_password(
        &self,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<String>, ConfigError> {
        let from_env = |key| self.sources.is_from_environment(key);
        let (inline, file) = match (inline, file) {
            (Some(inline), Some(file)) => match (from_env("mail.password"), from_env("mail.password_file")) {
                (true, false) => (Some(inline), None),
                (false, true) => (None, Some(file)),
                _ => {
                    return Err(self.error(
                        "mail.password",
                        "both `password` and `password_file` are set",
                        "keep one of them",
                    ));
                }
            },
            other => other,
        };
        if let Some(file) = file {
            let path = self.resolve(&file);
            self.secret_file("mail.password_file", &path);
            let text = std::fs::read_to_string(&path).map_err(|error| {
                self.error(
                    "mail.password_file",
                    format!("{} cannot be read: {error}", shown_path(&path)),
                    "point it at a file holding the SMTP password, readable by authrun only",
                )
            })?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(self.error(
                    "mail.password_file",
                    format!("{} is empty", shown_path(&path)),
                    "write the SMTP password into it",
                ));
            }
            return Ok(Some(password));
        }
        Ok(inline.filter(|password| !password.is_empty()))
    }

    /// An address mail is sent from or to. Never quoted in the error: it is the user's own text.
    fn mailbox(&self, key: &str, text: &str) -> Result<Mailbox, ConfigError> {
        text.trim().parse::<Mailbox>().map_err(|error| {
            self.error(
                key,
                format!("{} is not a mail address: {error}", quoted(text)),
                "write an address like \"ops@example.com\" or \"Ops <ops@example.com>\"",
            )
        })
    }

    /// One `[[notify]]` table, the `index`th (from 0). `mail`: whether `[mail]` is set up.
    fn notify(
        &self,
        index: usize,
        raw: schema::NotifyEntry,
        actions: &[ActionConfig],
        mail: bool,
    ) -> Result<NotifyRule, ConfigError> {
        let key = |field: &str| format!("notify.{index}.{field}");
        let words = NOTIFY_ON.map(|(word, _)| word).join(", ");
        let mut on = Vec::new();
        for word in &raw.on {
            let status = NOTIFY_ON
                .iter()
                .find(|(known, _)| known == word)
                .map(|(_, status)| *status)
                .ok_or_else(|| {
                    self.error(
                        &key("on"),
                        format!("{} is not a run's start or end", quoted(word)),
                        format!("list some of: {words}"),
                    )
                })?;
            on.push(status);
        }
        if on.is_empty() {
            return Err(self.error(
                &key("on"),
                "an empty list would never notify",
                format!("list some of: {words} (default failed, timed_out, interrupted)"),
            ));
        }
        let mut ids = Vec::new();
        for id in &raw.actions {
            let known = actions
                .iter()
                .find(|action| action.id.as_str() == id)
                .ok_or_else(|| {
                    let configured: Vec<&str> = actions.iter().map(|action| action.id.as_str()).collect();
                    self.error(
                        &key("actions"),
                        format!("there is no action {}", quoted(id)),
                        format!(
                            "list ids of configured actions ({}), or remove the key for all",
                            configured.join(", ")
                        ),
                    )
                })?;
            ids.push(known.id.clone());
        }
        let email = raw
            .email
            .iter()
            .map(|address| self.mailbox(&key("email"), address))
            .collect::<Result<Vec<_>, _>>()?;
        if !email.is_empty() && !mail {
            return Err(self.error(
                &key("email"),
                "mail is not set up, so these addresses cannot be mailed",
                "add a [mail] section with host and from (see `authrun example-config`), or remove email",
            ));
        }
        let webhook = raw
            .webhook
            .map(|url| self.webhook(&key("webhook"), &url))
            .transpose()?;
        let secret = match raw.webhook_secret_file {
            Some(_) if webhook.is_none() => {
                return Err(self.error(
                    &key("webhook_secret_file"),
                    "a webhook key is set, but no webhook",
                    "set webhook to the URL to post to, or remove webhook_secret_file",
                ));
            }
            Some(file) => Some(self.webhook_secret(&key("webhook_secret_file"), &file)?),
            None => None,
        };
        if email.is_empty() && webhook.is_none() {
            return Err(self.error(
                &key("email"),
                "this entry has neither email nor webhook, so it would tell nobody",
                "add email = [\"ops@example.com\"] or webhook = \"https://...\", or remove the entry",
            ));
        }
        if raw.output_lines > 1000 {
            return Err(self.error(
                &key("output_lines"),
                format!("{} lines are too many for a notification", raw.output_lines),
                "send at most 1000 lines (default 20, 0 for none)",
            ));
        }
        Ok(NotifyRule {
            on,
            actions: (!ids.is_empty()).then_some(ids),
            email,
            webhook: webhook.map(|url| WebhookTarget { url, secret }),
            output_lines: raw.output_lines,
        })
    }

    fn webhook(&self, key: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
        let url = reqwest::Url::parse(text.trim()).ok().filter(|url| {
            ["http", "https"].contains(&url.scheme()) && url.host_str().is_some_and(|host| !host.is_empty())
        });
        // Not quoted: a webhook's URL often holds its token.
        url.ok_or_else(|| {
            self.error(
                key,
                "the value is not an http:// or https:// URL",
                "write the URL to post to, e.g. \"https://chat.example.com/hook\"",
            )
        })
    }

    /// The key of a webhook's signature, read at start.
    fn webhook_secret(&self, key: &str, file: &Path) -> Result<Vec<u8>, ConfigError> {
        let path = self.resolve(file);
        self.secret_file(key, &path);
        let text = std::fs::read(&path).map_err(|error| {
            self.error(
                key,
                format!("{} cannot be read: {error}", shown_path(&path)),
                "point it at a file holding the key shared with the receiver, readable by authrun",
            )
        })?;
        let secret = text.trim_ascii().to_vec();
        if secret.is_empty() {
            return Err(self.error(
                key,
                format!("{} is empty", shown_path(&path)),
                "write the key shared with the receiver into it (e.g. `openssl rand -hex 32`)",
            ));
        }
        Ok(secret)
    }
}

/// `key` as errors show it: `notify[1].webhook` for `notify.0.webhook`.
fn shown_key(key: &str) -> String {
    match list_entry(key) {
        Some((list, index, field)) => format!("{list}[{}].{field}", index + 1),
        None => key.to_string(),
    }
}

/// `notify.0.webhook` as (`notify`, 0, `webhook`): a key of an entry of `[[actions]]` or `[[notify]]`,
/// which errors show as `notify[1].webhook`.
fn list_entry(key: &str) -> Option<(&str, usize, &str)> {
    let (list, rest) = key
        .split_once('.')
        .filter(|(list, _)| ["actions", "notify"].contains(list))?;
    let (index, field) = rest.split_once('.')?;
    Some((list, index.parse().ok()?, field))
}

/// A value quoted in an error, unless it could be a TOTP secret typed into the wrong key.
fn quoted(value: &str) -> String {
    if parse_secret(value).is_ok() {
        "the value (not shown: it looks like a TOTP secret)".into()
    } else {
        format!("`{value}`")
    }
}

/// A path shown in an error, unless part of it could be a TOTP secret (`secret_file = "JBSW..."`).
/// `store.url` -> `url`.
fn last_part(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

fn shown_path(path: &Path) -> String {
    let secret_like = path
        .iter()
        .any(|part| part.to_str().is_some_and(|part| parse_secret(part).is_ok()));
    if secret_like {
        "the path (not shown: it looks like a TOTP secret)".into()
    } else {
        path.display().to_string()
    }
}
