//! Configuration: built-in defaults, a TOML file (optional), then `AUTHRUN_*` environment variables, each
//! overriding the one before; then validation.
//!
//! `schema` mirrors `config.example.toml` key by key (unknown keys are refused); `sources` layers the
//! defaults, the file and the environment and remembers where each value came from; `validate` checks
//! every value and resolves relative paths against the config file's directory (or the working directory
//! when there is no file), producing the [`Config`] the rest of authrun uses. Every error names where the
//! value came from (file, line and column; environment variable; or built-in default), the key, and the fix.
//!
//! Adding a key: a field with a `///` line and its default in `schema.rs`, the key with its documentation
//! in `config.example.toml`, the typed field in the settings struct here, and the line that checks and
//! builds it in `validate.rs`. The environment variable comes with the field; the tests below fail when
//! the example and the schema disagree, or when a key's variable does not reach the `Config`.

mod schema;
mod sources;
mod validate;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::model::action::ActionId;
pub use crate::model::audit::Rotation;
use crate::model::operator::{OperatorName, Role};
use crate::model::run::RunStatus;
pub use crate::model::secret::SecretKey;
pub use lettre::message::Mailbox;
use sources::Sources;

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
    /// The actions in the order configured; never empty. The first is the one of `POST /verify` and
    /// `GET /get_deploy_status` without `action=`.
    pub actions: Vec<ActionConfig>,
    /// Runs of different actions going at once.
    pub max_parallel: usize,
    pub history_file: PathBuf,
    pub history_retention: usize,
    pub status_entries: usize,
    pub totp: TotpSettings,
    pub secret: SecretSource,
    pub server: ServerConfig,
    pub auth: AuthSettings,
    pub regulation: RegulationSettings,
    pub audit_file: PathBuf,
    /// When the audit log is rotated, and how many old files are kept.
    pub audit_rotation: Rotation,
    /// Where bans and pauses are kept across restarts.
    pub regulation_file: PathBuf,
    /// Where the operators are kept (`[auth] mode = "operators"`).
    pub operators_file: PathBuf,
    pub access: AccessConfig,
    pub metrics: MetricsConfig,
    /// The SMTP server, when `[mail]` names one.
    pub mail: Option<MailSettings>,
    /// The `[[notify]]` entries, in the order written.
    pub notify: Vec<NotifyRule>,
    /// Where the state lives (`[store]`).
    pub store: StoreSettings,
    /// The files other secrets were read from (`mail.password_file`, `store.url_file`,
    /// `notify[N].webhook_secret_file`), with their keys.
    pub secret_files: Vec<(String, PathBuf)>,
}

/// Where the state lives, from `[store]`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// JSON files in the state directory: one instance.
    Files,
    /// A PostgreSQL database that several instances share.
    Postgres {
        /// The connection URL or key=value string; it may hold a password.
        url: String,
        /// Connections kept at most.
        pool_size: usize,
        /// How long a run's lease lasts before another instance may mark the run "Interrupted".
        lease: std::time::Duration,
    },
}

impl StoreSettings {
    pub fn postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }
}

impl std::fmt::Debug for StoreSettings {
    /// The URL shows only as "set": it may hold a password. Its length tells two URLs apart in tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files => f.write_str("Files"),
            Self::Postgres {
                url,
                pool_size,
                lease,
            } => f
                .debug_struct("Postgres")
                .field("url", &format_args!("set ({} characters)", url.len()))
                .field("pool_size", pool_size)
                .field("lease", lease)
                .finish(),
        }
    }
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
    /// Failures of one operator, from anywhere, that lock the operator for `user_lock`.
    pub user_max_failures: u32,
    pub user_lock: Duration,
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
            user_max_failures: 3,
            user_lock: Duration::from_secs(15 * 60),
        }
    }
}

/// Who proves themselves, and how (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// One TOTP secret opens the button (the original's way).
    Shared,
    /// Each operator has their own secret, backup codes and lock.
    Operators,
}

/// The `[auth]` section.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// How long an enrollment link stays valid.
    pub enrollment: Duration,
    /// Operators give a password beside their code.
    pub passwords: bool,
    /// Operators may ask for a code by mail (`POST /email-code`).
    pub email_codes: bool,
    /// How long an emailed code stays valid.
    pub email_code: Duration,
}

impl AuthSettings {
    pub fn operators(&self) -> bool {
        self.mode == AuthMode::Operators
    }
}

/// Who may run an action, in operators mode: one entry of `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Operator(OperatorName),
    Role(Role),
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

/// Who may read `GET /metrics`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Whether the route answers at all.
    pub enabled: bool,
    /// Clients that may read it without the API token (the token is accepted from anywhere).
    pub allow: Vec<IpNet>,
}

/// How the HTTP server faces the network.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The URL users reach authrun at, when it differs from `bind` (behind a proxy).
    pub public_url: Option<PublicUrl>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    /// Connections one client may hold at once (`trusted_proxies` are exempt).
    pub max_connections_per_client: usize,
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

/// One action: what the page calls it and the script it runs.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    pub id: ActionId,
    /// The heading and the button's label.
    pub name: String,
    /// One line under the heading; may be empty.
    pub description: String,
    /// A warning shown beside the button, which the form asks to confirm.
    pub confirm: Option<String>,
    /// Operators mode: who may run it; empty: every operator.
    pub allow: Vec<Allowed>,
    pub script: ScriptConfig,
}

impl ActionConfig {
    /// Whether `name` with `role` may run this action.
    pub fn allows(&self, name: &OperatorName, role: Role) -> bool {
        allows(&self.allow, name, role)
    }
}

/// Whether `allow` (an action's list; empty: everyone) lets `name` with `role` run the action.
pub fn allows(allow: &[Allowed], name: &OperatorName, role: Role) -> bool {
    allow.is_empty()
        || allow.iter().any(|allowed| match allowed {
            Allowed::Operator(allowed) => allowed == name,
            Allowed::Role(allowed) => *allowed == role,
        })
}

impl Config {
    /// The action `id`'s place in [`Config::actions`].
    pub fn action_index(&self, id: &str) -> Option<usize> {
        self.actions.iter().position(|action| action.id.as_str() == id)
    }

    /// The first action: `/verify`'s and `/get_deploy_status`'s without `action=`.
    pub fn first_action(&self) -> &ActionConfig {
        // Validation refuses a configuration without actions.
        &self.actions[0]
    }

    /// The action at `index` in the configuration (the first if there is no such).
    pub fn action(&self, index: usize) -> &ActionConfig {
        self.actions.get(index).unwrap_or_else(|| self.first_action())
    }
}

/// How an action's script is run.
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
    /// Processes the script left behind keep running when its run ends (they are stopped otherwise).
    pub leave_running: bool,
}

/// How a connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailSecurity {
    /// Plain first, then STARTTLS, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a relay on this machine.
    None,
}

impl MailSecurity {
    /// The port the security is usually served on.
    pub fn default_port(self) -> u16 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// The SMTP server and the sender, from `[mail]`.
#[derive(Clone)]
pub struct MailSettings {
    pub host: String,
    pub port: u16,
    pub security: MailSecurity,
    /// The login (user name and password), when the server wants one.
    pub credentials: Option<(String, String)>,
    pub from: Mailbox,
    /// How long one conversation with the server may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for MailSettings {
    /// Everything but the password, which shows as "set".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "set"))
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One `[[notify]]` entry: which runs, and who hears of them.
#[derive(Debug, Clone)]
pub struct NotifyRule {
    /// The statuses told of (`Deploying` is the start).
    pub on: Vec<RunStatus>,
    /// The actions whose runs are told of; `None`: every action's.
    pub actions: Option<Vec<ActionId>>,
    pub email: Vec<Mailbox>,
    pub webhook: Option<WebhookTarget>,
    /// The last lines of output sent along.
    pub output_lines: usize,
}

impl NotifyRule {
    /// Whether the run of `action` that reached `status` is told of.
    pub fn matches(&self, action: &str, status: RunStatus) -> bool {
        self.on.contains(&status)
            && self
                .actions
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id.as_str() == action))
    }
}

/// Where a webhook is posted, and the key its body is signed with.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: reqwest::Url,
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookTarget {
    /// The host, not the full URL (its path or query may hold a token), and never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("host", &self.url.host_str())
            .field("port", &self.url.port_or_known_default())
            .field("secret", &self.secret.as_ref().map(|_| "set"))
            .finish()
    }
}

impl Config {
    /// Reads `file` (or only the defaults) with overrides from the `AUTHRUN_*` variables among `env`
    /// (name, value), and validates the result.
    pub fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let sources = Sources::read(file, env)?;
        let raw = sources.extract()?;
        validate::validate(raw, &sources, file)
    }

    /// Loads with the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .filter(|(name, _)| name.starts_with("AUTHRUN_"))
            .collect();
        let env: Vec<(&str, &str)> = vars
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        Self::load(file, &env)
    }
}

impl Config {
    /// Refuses a secret kept in a file that group or others can read. `authrun serve
    /// --insecure-permissions` skips this check, for development.
    pub fn check_secret_permissions(&self) -> Result<(), ConfigError> {
        let totp = match &self.secret {
            SecretSource::Configured { file: Some(file), .. } if Some(file) == self.file.as_ref() => {
                Some((file, "totp.secret", "the TOTP secret"))
            }
            SecretSource::Configured { file: Some(file), .. } => {
                Some((file, "totp.secret_file", "the TOTP secret"))
            }
            SecretSource::Generated(file) if file.exists() => {
                Some((file, "totp (generated secret)", "the TOTP secret"))
            }
            _ => None,
        };
        let others = self
            .secret_files
            .iter()
            .map(|(key, file)| (file, key.as_str(), "a secret"));
        for (file, key, what) in totp.into_iter().chain(others) {
            let mode = std::fs::metadata(file)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                return Err(ConfigError {
                    origin: file.display().to_string(),
                    key: key.into(),
                    problem: format!(
                        "the file holding {what} can be read by others (mode {:o})",
                        mode & 0o777
                    ),
                    fix: format!(
                        "run `chmod 600 {}`, or pass --insecure-permissions for development",
                        file.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use figment::value::{Dict, Value};

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    /// A directory holding `authrun.toml` with `text`, and an executable `deploy.sh` beside it.
    fn workspace(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        executable(&dir.path().join("deploy.sh"));
        let path = dir.path().join("authrun.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let (_dir, path) = workspace(text);
        Config::load(Some(&path), env)
    }

    #[test]
    fn the_store_is_files_unless_a_database_is_named_and_its_url_is_never_shown() {
        let script = "[script]\npath = \"deploy.sh\"\n";
        assert_eq!(load_text(script, &[]).unwrap().store, StoreSettings::Files);
        let url = "postgres://authrun:hunter2-db@127.0.0.1:5432/authrun";
        let env = [("AUTHRUN_STORE_KIND", "postgres"), ("AUTHRUN_STORE_URL", url)];
        let config = load_text(script, &env).unwrap();
        assert_eq!(
            config.store,
            StoreSettings::Postgres {
                url: url.into(),
                pool_size: 8,
                lease: std::time::Duration::from_secs(30),
            }
        );
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
        for (text, env, key, fix) in [
            ("[store]\nkind = \"postgres\"\n", vec![], "store.url", "url_file"),
            (
                "[store]\nkind = \"mysql\"\n",
                vec![],
                "store.kind",
                "\"postgres\"",
            ),
            (
                "[store]\nurl = \"postgres://db/authrun\"\n",
                vec![],
                "store.url",
                "kind = \"postgres\"",
            ),
            (
                "[store]\nkind = \"postgres\"\npool_size = 0\n",
                vec![("AUTHRUN_STORE_URL", url)],
                "store.pool_size",
                "at least 1",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"nope\"\n",
                vec![],
                "store.url_file",
                "readable",
            ),
            (
                "[store]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h:notaport/db\"\n",
                vec![],
                "store.url",
                "postgres://USER",
            ),
        ] {
            let error = load_text(&format!("{script}{text}"), &env).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
            assert!(error.to_string().contains(fix), "{text}: {error}");
            assert!(!error.to_string().contains("hunter2"), "{text}: {error}");
        }
    }

    #[test]
    fn audit_rotation_and_exempt_networks_are_read_and_checked() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &[]).unwrap();
        assert_eq!(config.audit_rotation, Rotation::default());
        assert!(config.regulation.exempt_networks.is_empty());
        let text = "[script]\npath = \"deploy.sh\"\n[audit]\nmax_bytes = 65536\nkeep_files = 2\n\
                    [regulation]\nexempt_networks = [\"10.8.0.0/16\", \"192.0.2.7\"]\n";
        let config = load_text(text, &[]).unwrap();
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
        assert_eq!(exempt, ["10.8.0.0/16", "192.0.2.7/32"]);
        for (extra, key) in [
            ("[audit]\nmax_bytes = 100\n", "audit.max_bytes"),
            ("[audit]\nkeep_files = 0\n", "audit.keep_files"),
            (
                "[regulation]\nexempt_networks = [\"0.0.0.0/0\"]\n",
                "regulation.exempt_networks",
            ),
            (
                "[regulation]\nexempt_networks = [\"office\"]\n",
                "regulation.exempt_networks",
            ),
        ] {
            let error = load_text(&format!("[script]\npath = \"deploy.sh\"\n{extra}"), &[]).unwrap_err();
            assert_eq!(error.key, key, "{error}");
        }
    }

    const MAIL: &str = "[mail]\nhost = \"smtp.example.com\"\nfrom = \"authrun@example.com\"\n";

    #[test]
    fn mail_is_read_with_its_defaults_and_never_shows_its_password() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &[]).unwrap();
        assert!(config.mail.is_none());
        let text = format!("[script]\npath = \"deploy.sh\"\n{MAIL}username = \"me\"\n");
        let env = [("AUTHRUN_MAIL_PASSWORD", "hunter2-password")];
        let config = load_text(&text, &env).unwrap();
        let mail = config.mail.as_ref().unwrap();
        assert_eq!((mail.port, mail.security), (587, MailSecurity::StartTls));
        assert_eq!(mail.credentials, Some(("me".into(), "hunter2-password".into())));
        assert_eq!(mail.from.email.to_string(), "authrun@example.com");
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");

        let (dir, path) = workspace("");
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let text = format!(
            "[script]\npath = \"deploy.sh\"\n{MAIL}security = \"tls\"\nusername = \"me\"\npassword_file = \"pw\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), &[]).unwrap();
        let mail = config.mail.unwrap();
        assert_eq!(mail.port, 465);
        assert_eq!(mail.credentials.unwrap().1, "from-file");
    }

    #[test]
    fn mail_mistakes_name_the_key_and_the_fix() {
        let base = "[script]\npath = \"deploy.sh\"\n";
        for (extra, key, fix) in [
            (
                "[mail]\nhost = \"smtp.example.com\"\nsecurity = \"none\"\nfrom = \"a@example.com\"\n",
                "mail.security",
                "starttls",
            ),
            ("[mail]\nfrom = \"a@example.com\"\n", "mail.from", "set host"),
            ("[mail]\nhost = \"smtp.example.com\"\n", "mail.from", "set from"),
            (
                "[mail]\nhost = \"smtp.example.com\"\nfrom = \"not an address\"\n",
                "mail.from",
                "ops@example.com",
            ),
            (
                "[mail]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\npassword_file = \"nope\"\n",
                "mail.password_file",
                "SMTP password",
            ),
            (
                "[mail]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nsecurity = \"ssl\"\n",
                "mail.security",
                "starttls",
            ),
        ] {
            let error = load_text(&format!("{base}{extra}"), &[]).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.fix.contains(fix), "{error}");
            assert!(error.origin.contains("authrun.toml"), "{error}");
        }
        for local in ["127.0.0.1", "::1", "localhost"] {
            let text =
                format!("{base}[mail]\nhost = \"{local}\"\nsecurity = \"none\"\nfrom = \"a@example.com\"\n");
            let config = load_text(&text, &[]).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(config.mail.unwrap().port, 25);
        }
    }

    #[test]
    fn notify_entries_are_read_and_their_mistakes_named() {
        let (dir, path) = workspace("");
        std::fs::write(dir.path().join("hook.key"), "s3cret\n").unwrap();
        let entry = "[[notify]]\nwebhook = \"https://chat.example.com/hook?token=abc\"\n\
                     webhook_secret_file = \"hook.key\"\n";
        std::fs::write(&path, format!("{TWO_ACTIONS}\n{entry}")).unwrap();
        let config = Config::load(Some(&path), &[]).unwrap_or_else(|error| panic!("{error}"));
        let rule = &config.notify[0];
        assert_eq!(
            rule.on,
            [RunStatus::Failed, RunStatus::TimedOut, RunStatus::Interrupted]
        );
        assert!(rule.matches("restart-cache", RunStatus::Failed));
        assert!(!rule.matches("deploy", RunStatus::Succeeded));
        assert_eq!(rule.output_lines, 20);
        let webhook = rule.webhook.as_ref().unwrap();
        assert_eq!(webhook.secret.as_deref(), Some(&b"s3cret"[..]));
        assert!(!format!("{config:?}").contains("token=abc"), "{config:?}");

        for (bad, key, fix) in [
            (
                "actions = [\"nope\"]\n",
                "notify[1].actions",
                "deploy, restart-cache",
            ),
            ("on = [\"exploded\"]\n", "notify[1].on", "timed_out"),
            ("email = [\"ops@example.com\"]\n", "notify[1].email", "[mail]"),
            (
                "webhook_secret_file = \"missing.key\"\n",
                "notify[1].webhook_secret_file",
                "key shared",
            ),
        ] {
            let text =
                format!("{TWO_ACTIONS}\n[[notify]]\nwebhook = \"https://chat.example.com/hook\"\n{bad}");
            std::fs::write(&path, text).unwrap();
            let error = Config::load(Some(&path), &[]).unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.fix.contains(fix), "{error}");
            assert!(error.origin.contains("authrun.toml"), "{error}");
        }
        let text = format!("{TWO_ACTIONS}\n[[notify]]\non = [\"failed\"]\n");
        std::fs::write(&path, text).unwrap();
        let error = Config::load(Some(&path), &[]).unwrap_err();
        assert!(error.problem.contains("neither email nor webhook"), "{error}");
        let text = format!("{TWO_ACTIONS}\n[[notify]]\nwebhook = \"ftp://example.com/\"\n");
        std::fs::write(&path, text).unwrap();
        let error = Config::load(Some(&path), &[]).unwrap_err();
        assert_eq!(error.key, "notify[1].webhook", "{error}");
    }

    #[test]
    fn the_metrics_allow_list_is_read_and_checked() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &[]).unwrap();
        let allow: Vec<String> = config.metrics.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["127.0.0.1/32", "::1/128"]);
        assert!(config.metrics.enabled);
        let env = [("AUTHRUN_METRICS_ALLOW", "10.0.0.0/8, 192.0.2.7")];
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap();
        let allow: Vec<String> = config.metrics.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["10.0.0.0/8", "192.0.2.7/32"]);

        let text = "[script]\npath = \"deploy.sh\"\n[metrics]\nallow = [\"10.0.0.0/33\"]\n";
        let error = load_text(text, &[]).unwrap_err();
        assert_eq!(error.key, "metrics.allow");
        assert!(error.origin.ends_with("authrun.toml:4:1"), "{error}");
        assert!(error.problem.contains("`10.0.0.0/33`"), "{error}");
        assert!(error.fix.contains("10.0.0.0/8"), "{error}");
        let env = [("AUTHRUN_METRICS_ALLOW", "prometheus.internal")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_METRICS_ALLOW");
        assert_eq!(error.key, "metrics.allow");
    }

    #[test]
    fn the_embedded_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(Some(&path), &[]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:5000");
        assert_eq!(config.first_action().script.cooldown, Duration::from_secs(180));
        assert_eq!(config.first_action().script.timeout, Duration::from_secs(1800));
        assert_eq!(config.totp.digits, 6);
    }

    #[test]
    fn defaults_match_the_original() {
        let config = load_text("[script]\npath = \"deploy.sh\"\n", &[]).unwrap();
        assert_eq!(config.first_action().script.cooldown, Duration::from_secs(180));
        assert_eq!(config.history_retention, 1000);
        assert!(config.history_file.ends_with("history.json"));
        assert!(matches!(config.secret, SecretSource::Generated(_)));
    }

    #[test]
    fn unknown_keys_are_named_with_their_position() {
        let error = load_text("[script]\npath = \"deploy.sh\"\ncooldown = 5\n", &[]).unwrap_err();
        assert_eq!(error.key, "cooldown");
        assert!(error.origin.ends_with("authrun.toml:3:1"), "{error}");
        assert!(error.problem.contains("[script]"), "{error}");
        assert!(error.to_string().contains("example-config"), "{error}");
    }

    #[test]
    fn syntax_errors_are_named_with_their_position() {
        let error = load_text("[script]\npath = \"deploy.sh\"\ncooldown_seconds = = 5\n", &[]).unwrap_err();
        assert!(error.origin.ends_with("authrun.toml:3:20"), "{error}");
    }

    #[test]
    fn short_secrets_are_refused_without_being_shown() {
        let error = load_text(
            "[script]\npath = \"deploy.sh\"\n[totp]\nsecret = \"JBSWY3DPEHPK3PXP\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(error.key, "totp.secret");
        assert!(error.origin.ends_with("authrun.toml:4:1"), "{error}");
        assert!(error.problem.contains("80 bits"), "{error}");
        assert!(!error.to_string().contains("JBSWY3DPEHPK3PXP"), "{error}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("AUTHRUN_SECRET", SECRET),
            ("AUTHRUN_SCRIPT_COOLDOWN_SECONDS", "5"),
            ("AUTHRUN_BIND", "127.0.0.1:8080"),
            ("AUTHRUN_ACCESS_PUBLIC_OUTPUT", "true"),
        ];
        let config = load_text(
            "bind = \"0.0.0.0:1\"\n[script]\npath = \"deploy.sh\"\ncooldown_seconds = 60\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.first_action().script.cooldown, Duration::from_secs(5));
        assert!(config.access.public_output);
        // A secret from the environment is not kept in the config file, whatever its permissions.
        assert!(matches!(
            config.secret,
            SecretSource::Configured { file: None, .. }
        ));
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = [("AUTHRUN_SCRIPT_TIMEOUT_SECONDS", "soon")];
        let error = load_text("[script]\npath = \"deploy.sh\"\ntimeout_seconds = 60\n", &env).unwrap_err();
        assert_eq!(
            error.origin,
            "environment variable AUTHRUN_SCRIPT_TIMEOUT_SECONDS"
        );
        assert_eq!(error.key, "script.timeout_seconds");
        assert!(error.fix.contains("AUTHRUN_SCRIPT_TIMEOUT_SECONDS"), "{error}");
        assert!(!error.to_string().contains("soon"), "{error}");

        let env = [("AUTHRUN_SERVER_MAX_CONNECTIONS", "0")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(
            error.origin,
            "environment variable AUTHRUN_SERVER_MAX_CONNECTIONS"
        );
        assert_eq!(error.problem, "0 would refuse every request");
    }

    #[test]
    fn a_bad_value_in_the_file_names_its_line() {
        let text = "[script]\npath = \"deploy.sh\"\ncooldown_seconds = \"soon\"\n";
        let error = load_text(text, &[]).unwrap_err();
        assert!(error.origin.ends_with("authrun.toml:3:1"), "{error}");
        assert_eq!(error.key, "script.cooldown_seconds");
        assert!(error.fix.contains("cooldown_seconds = 180"), "{error}");

        let text = "[script]\npath = \"deploy.sh\"\n\n[regulation]\nclient_ban_seconds = 0\n";
        let error = load_text(text, &[]).unwrap_err();
        assert!(error.origin.ends_with("authrun.toml:5:1"), "{error}");
        assert_eq!(error.key, "regulation.client_ban_seconds");
    }

    #[test]
    fn a_script_path_from_the_environment_is_blamed_on_the_variable() {
        let env = [("AUTHRUN_SCRIPT_PATH", "nope.sh")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_SCRIPT_PATH");
        assert_eq!(error.key, "script.path");
        assert!(error.problem.contains("nope.sh"), "{error}");
    }

    #[test]
    fn a_failing_default_is_blamed_on_the_default() {
        // No `[script] path`, and no scripts/example-deploy.sh beside the file.
        let error = load_text("bind = \"127.0.0.1:5000\"\n", &[]).unwrap_err();
        assert_eq!(error.key, "script.path");
        assert!(
            error.origin.starts_with("built-in default (not set in "),
            "{error}"
        );
        assert!(error.origin.contains("authrun.toml"), "{error}");
    }

    #[test]
    fn the_longest_pause_is_blamed_on_the_key_that_was_set() {
        let text = "[script]\npath = \"deploy.sh\"\n[regulation]\nglobal_pause_seconds = 200000\n";
        let error = load_text(text, &[]).unwrap_err();
        assert_eq!(error.key, "regulation.global_pause_seconds");
        assert!(error.origin.ends_with("authrun.toml:4:1"), "{error}");
        let env = [("AUTHRUN_REGULATION_GLOBAL_PAUSE_MAX_SECONDS", "60")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.key, "regulation.global_pause_max_seconds");
        assert_eq!(
            error.origin,
            "environment variable AUTHRUN_REGULATION_GLOBAL_PAUSE_MAX_SECONDS"
        );
    }

    #[test]
    fn a_secret_put_in_the_wrong_key_is_never_shown() {
        let text = format!("[script]\npath = \"deploy.sh\"\n[totp]\nperiod_seconds = \"{SECRET}\"\n");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(error.key, "totp.period_seconds");
        assert!(error.origin.ends_with("authrun.toml:4:1"), "{error}");
        assert!(!error.to_string().contains(SECRET), "{error}");

        let at = |key: &str| {
            let env = [(key, SECRET)];
            let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
            assert_eq!(error.origin, format!("environment variable {key}"));
            assert!(!error.to_string().contains(SECRET), "{key}: {error}");
        };
        for key in [
            "AUTHRUN_TOTP_PERIOD_SECONDS",
            "AUTHRUN_TOTP_DIGITS",
            "AUTHRUN_ACCESS_PUBLIC_OUTPUT",
            "AUTHRUN_BIND",
            "AUTHRUN_SERVER_PUBLIC_URL",
            "AUTHRUN_SERVER_TRUSTED_PROXIES",
            "AUTHRUN_TOTP_SECRET_FILE",
            "AUTHRUN_SCRIPT_PATH",
            "AUTHRUN_ACCESS_API_TOKEN_SHA256",
        ] {
            at(key);
        }
    }

    #[test]
    fn an_unknown_key_in_a_known_section_is_refused() {
        let env = [("AUTHRUN_SCRIPT_FOO", "1")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_SCRIPT_FOO");
        assert!(error.problem.contains("[script]"), "{error}");
        // Not configuration: the CLI's, the scripts', and anything outside the known sections.
        let env = [
            ("AUTHRUN_CONFIG", "elsewhere.toml"),
            ("AUTHRUN_RUN_ID", "7"),
            ("AUTHRUN_FUZZ_CASES", "10"),
            ("AUTHRUN_SCRIPT_FOO", ""),
        ];
        load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap();
    }

    #[test]
    fn lists_come_as_toml_or_separated_by_commas() {
        let env = [
            ("AUTHRUN_SCRIPT_ARGS", r#"["--env", "prod, eu"]"#),
            ("AUTHRUN_SERVER_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16"),
        ];
        let config = load_text("[script]\npath = \"deploy.sh\"\nargs = [\"x\"]\n", &env).unwrap();
        assert_eq!(config.first_action().script.args, ["--env", "prod, eu"]);
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.1/32", "192.168.0.0/16"]);

        let env = [("AUTHRUN_SCRIPT_ARGS", r#"["--env", "#)];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_SCRIPT_ARGS");
        let env = [("AUTHRUN_SCRIPT_ARGS", "[1, 2]")];
        let error = load_text("[script]\npath = \"deploy.sh\"\n", &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_SCRIPT_ARGS");
        assert_eq!(error.key, "script.args");
    }

    #[test]
    fn an_empty_variable_is_unset() {
        let env = [("AUTHRUN_SCRIPT_COOLDOWN_SECONDS", ""), ("AUTHRUN_BIND", "  ")];
        let config = load_text("[script]\npath = \"deploy.sh\"\ncooldown_seconds = 60\n", &env).unwrap();
        assert_eq!(config.first_action().script.cooldown, Duration::from_secs(60));
        assert_eq!(config.bind.to_string(), "127.0.0.1:5000");
    }

    #[test]
    fn a_secret_from_the_environment_replaces_the_file_and_the_other_way_round() {
        let (dir, path) = workspace("");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).unwrap();
        let file =
            |text: &str| std::fs::write(&path, format!("[script]\npath = \"deploy.sh\"\n[totp]\n{text}\n"));

        file("secret_file = \"secret\"").unwrap();
        let config = Config::load(Some(&path), &[("AUTHRUN_TOTP_SECRET", SECRET)]).unwrap();
        assert!(matches!(
            config.secret,
            SecretSource::Configured { file: None, .. }
        ));

        file(&format!("secret = \"{SECRET}\"")).unwrap();
        let secret_file = secret_file.display().to_string();
        let config = Config::load(Some(&path), &[("AUTHRUN_TOTP_SECRET_FILE", &secret_file)]).unwrap();
        assert!(
            matches!(&config.secret, SecretSource::Configured { file: Some(f), .. } if f.ends_with("secret")),
            "{:?}",
            config.secret
        );

        // The long name wins over the short one; both at once with a file is a conflict of the variables.
        let env = [("AUTHRUN_SECRET", "too short"), ("AUTHRUN_TOTP_SECRET", SECRET)];
        Config::load(Some(&path), &env).unwrap();
        let env = [
            ("AUTHRUN_TOTP_SECRET", SECRET),
            ("AUTHRUN_TOTP_SECRET_FILE", &secret_file),
        ];
        let error = Config::load(Some(&path), &env).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_TOTP_SECRET");
    }

    #[test]
    fn scripts_must_exist_and_be_executable() {
        let missing = load_text("[script]\npath = \"nope.sh\"\n", &[]).unwrap_err();
        assert_eq!(missing.key, "script.path");
        assert!(missing.origin.ends_with("authrun.toml:2:1"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plain.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let text = format!("[script]\npath = \"{}\"\n", script.display());
        let error = load_text(&text, &[]).unwrap_err();
        assert!(error.fix.contains("chmod +x"), "{error}");
    }

    const TWO_ACTIONS: &str = "[[actions]]\nid = \"deploy\"\nname = \"Deploy production\"\npath = \"deploy.sh\"\n\
        confirm = \"This restarts production.\"\n\n[[actions]]\nid = \"restart-cache\"\npath = \"deploy.sh\"\n\
        cooldown_seconds = 30\n";

    #[test]
    fn actions_are_read_in_order_with_the_defaults_of_the_one_action() {
        let config = load_text(TWO_ACTIONS, &[]).unwrap();
        let ids: Vec<&str> = config.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["deploy", "restart-cache"]);
        let (deploy, cache) = (&config.actions[0], &config.actions[1]);
        assert_eq!(deploy.name, "Deploy production");
        assert_eq!(deploy.confirm.as_deref(), Some("This restarts production."));
        assert_eq!(deploy.script.cooldown, Duration::from_secs(180));
        assert_eq!(
            cache.name, "restart-cache",
            "an action without a name is called by its id"
        );
        assert_eq!(cache.confirm, None);
        assert_eq!(cache.script.cooldown, Duration::from_secs(30));
        assert_eq!(cache.script.timeout, Duration::from_secs(1800));
        assert_eq!(config.max_parallel, 4);
        assert_eq!(config.first_action().id.as_str(), "deploy");

        let one = load_text("[script]\npath = \"deploy.sh\"\n", &[]).unwrap();
        assert_eq!(one.actions.len(), 1);
        assert_eq!(one.first_action().id.as_str(), "deploy");
        assert_eq!(one.first_action().name, "Deploy");
    }

    #[test]
    fn the_two_forms_cannot_be_mixed() {
        let text = format!("[script]\npath = \"deploy.sh\"\n\n{TWO_ACTIONS}");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(error.key, "script.path");
        assert!(error.origin.ends_with("authrun.toml:2:1"), "{error}");
        assert!(
            error.problem.contains("[[actions]] (") && error.problem.contains("authrun.toml:4:"),
            "{error}"
        );
        assert!(error.problem.contains("[script]"), "{error}");

        // A variable of the one action with the file's several is mixing too.
        let env = [("AUTHRUN_SCRIPT_COOLDOWN_SECONDS", "5")];
        let error = load_text(TWO_ACTIONS, &env).unwrap_err();
        assert_eq!(
            error.origin,
            "environment variable AUTHRUN_SCRIPT_COOLDOWN_SECONDS"
        );
        assert!(error.problem.contains("[[actions]]"), "{error}");
    }

    #[test]
    fn actions_from_the_environment_replace_the_files() {
        let (dir, path) = workspace("[action]\nname = \"Old\"\n[script]\npath = \"deploy.sh\"\n");
        let script = dir.path().join("deploy.sh").display().to_string();
        let list = format!(
            r#"[{{id = "a", path = "{script}"}}, {{id = "b", path = "{script}", cooldown_seconds = 7}}]"#
        );
        let config = Config::load(Some(&path), &[("AUTHRUN_ACTIONS", &list)]).unwrap();
        let ids: Vec<&str> = config.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(config.actions[1].script.cooldown, Duration::from_secs(7));

        let list = format!(r#"[{{id = "a", path = "{script}"}}, {{id = "b", path = "nope.sh"}}]"#);
        let error = Config::load(Some(&path), &[("AUTHRUN_ACTIONS", &list)]).unwrap_err();
        assert_eq!(error.origin, "environment variable AUTHRUN_ACTIONS");
        assert_eq!(error.key, "actions[2].path");
    }

    #[test]
    fn each_action_is_checked_and_named_in_its_error() {
        let missing = TWO_ACTIONS.replacen(
            "path = \"deploy.sh\"\n\ncooldown",
            "path = \"nope.sh\"\ncooldown",
            1,
        );
        let missing = missing.replace(
            "id = \"restart-cache\"\npath = \"deploy.sh\"",
            "id = \"restart-cache\"\npath = \"nope.sh\"",
        );
        let error = load_text(&missing, &[]).unwrap_err();
        assert_eq!(error.key, "actions[2].path");
        assert!(error.problem.starts_with("action `restart-cache`: "), "{error}");
        assert!(error.problem.contains("nope.sh"), "{error}");
        assert!(error.origin.ends_with("authrun.toml:9:1"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.sh");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let text = TWO_ACTIONS.replace(
            "id = \"restart-cache\"\npath = \"deploy.sh\"",
            &format!("id = \"restart-cache\"\npath = \"{}\"", plain.display()),
        );
        let error = load_text(&text, &[]).unwrap_err();
        assert!(error.problem.starts_with("action `restart-cache`: "), "{error}");
        assert!(error.fix.contains("chmod +x"), "{error}");

        let duplicate = TWO_ACTIONS.replace("restart-cache", "deploy");
        let error = load_text(&duplicate, &[]).unwrap_err();
        assert_eq!(error.key, "actions[2].id");
        assert!(
            error.problem.contains("`deploy` is also the id of action 1"),
            "{error}"
        );
        assert!(error.origin.ends_with("authrun.toml:8:1"), "{error}");

        for (bad, problem) in [("Restart Cache", "is not an action id"), ("", "has no id")] {
            let text = TWO_ACTIONS.replace("restart-cache", bad);
            let error = load_text(&text, &[]).unwrap_err();
            assert_eq!(error.key, "actions[2].id");
            assert!(error.problem.contains(problem), "{error}");
        }
        let text = TWO_ACTIONS.replace("id = \"restart-cache\"\n", "");
        let error = load_text(&text, &[]).unwrap_err();
        assert_eq!(error.key, "actions[2].id");

        let error = load_text(
            &TWO_ACTIONS.replace("cooldown_seconds = 30", "cooldown_seconds = \"soon\""),
            &[],
        )
        .unwrap_err();
        assert!(error.origin.ends_with("authrun.toml:10:1"), "{error}");
        let error = load_text(
            &TWO_ACTIONS.replace("cooldown_seconds = 30", "cooldown = 30"),
            &[],
        )
        .unwrap_err();
        assert_eq!(error.key, "cooldown");
        assert!(error.origin.ends_with("authrun.toml:10:1"), "{error}");

        let error = load_text("[script]\npath = \"deploy.sh\"\n[runs]\nmax_parallel = 0\n", &[]).unwrap_err();
        assert_eq!(error.key, "runs.max_parallel");
    }

    #[test]
    fn the_examples_two_actions_are_valid_in_place_of_the_one() {
        // As a user does it: remove [action] and [script], uncomment the [[actions]] tables.
        let mut text = String::new();
        let (mut single, mut list) = (false, false);
        for line in EXAMPLE.lines() {
            if line.starts_with('[') {
                single = line == "[action]" || line == "[script]";
                list = false;
            }
            list |= line == "# [[actions]]";
            if single {
                continue;
            }
            let line = if list {
                line.trim_start_matches('#').trim_start()
            } else {
                line
            };
            text.push_str(line);
            text.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        for name in ["deploy.sh", "restart-cache.sh"] {
            executable(&dir.path().join("scripts").join(name));
        }
        let path = dir.path().join("authrun.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), &[]).unwrap_or_else(|error| panic!("{error}"));
        let names: Vec<&str> = config.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Deploy production", "Restart the cache"]);
        assert_eq!(config.actions[1].script.cooldown, Duration::from_secs(30));
    }

    /// Every `section.key` of `config.example.toml` (top-level keys without a section), including the
    /// ones commented out (`# public_url = ...`), in the order written. A list of tables (`# [[actions]]`)
    /// is one key, the list, set whole; the keys of its tables are the list's own.
    fn example_keys() -> Vec<String> {
        let mut section = String::new();
        let mut in_list = false;
        let mut keys = Vec::new();
        for line in EXAMPLE.lines().map(str::trim) {
            let uncommented = line.strip_prefix("# ").unwrap_or(line);
            if let Some(name) = uncommented
                .strip_prefix("[[")
                .and_then(|line| line.strip_suffix("]]"))
            {
                if !keys.contains(&name.to_string()) {
                    keys.push(name.to_string());
                }
                in_list = true;
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|line| line.strip_suffix(']')) {
                section = format!("{name}.");
                in_list = false;
                continue;
            }
            if in_list {
                continue;
            }
            let assignment = uncommented;
            if let Some((key, _)) = assignment.split_once(" = ")
                && !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                keys.push(format!("{section}{key}"));
            }
        }
        keys
    }

    /// Every key of the schema, from its defaults.
    fn schema_keys() -> Vec<String> {
        fn walk(prefix: &str, dict: &Dict, keys: &mut Vec<String>) {
            for (key, value) in dict {
                match value {
                    Value::Dict(_, inner) => walk(&format!("{prefix}{key}."), inner, keys),
                    _ => keys.push(format!("{prefix}{key}")),
                }
            }
        }
        let shape = Value::serialize(schema::Schema::default()).unwrap();
        let mut keys = Vec::new();
        walk("", shape.as_dict().unwrap(), &mut keys);
        keys
    }

    #[test]
    fn the_example_lists_every_key_with_its_default() {
        let mut example = example_keys();
        example.sort();
        let mut schema = schema_keys();
        schema.sort();
        assert_eq!(
            example, schema,
            "config.example.toml and schema.rs list different keys"
        );
        // The value written for a key (not commented out) is its default.
        let written: schema::Schema = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(written, schema::Schema::default());
    }

    /// What the variable for `key` is set to: valid, and different from the example's value.
    fn distinctive(key: &str, dir: &Path) -> String {
        let at = |name: &str| dir.join(name).display().to_string();
        let default = Value::serialize(schema::Schema::default())
            .unwrap()
            .find(key)
            .unwrap();
        match (key, default) {
            ("bind", _) => "127.0.0.1:5999".into(),
            ("state_dir", _) => at("state"),
            ("server.public_url", _) => "https://deploy.example.com".into(),
            ("server.trusted_proxies", _) => r#"["10.0.0.0/8"]"#.into(),
            ("regulation.exempt_networks", _) => r#"["10.8.0.0/16"]"#.into(),
            ("auth.mode", _) => "operators".into(),
            ("action.allow", _) => r#"["alice", "role:admin"]"#.into(),
            ("metrics.allow", _) => r#"["10.9.0.0/16"]"#.into(),
            ("access.api_token_sha256", _) => "ab".repeat(32),
            ("access.max_wait_seconds", _) => "60".into(),
            ("audit.file", _) => at("audit.jsonl"),
            ("action.name" | "action.description" | "totp.issuer" | "totp.account", _) => "Acme".into(),
            ("script.path", _) => {
                executable(&dir.join("other.sh"));
                at("other.sh")
            }
            ("script.args", _) => r#"["--env", "prod"]"#.into(),
            ("script.working_dir", _) => {
                std::fs::create_dir_all(dir.join("work")).unwrap();
                at("work")
            }
            ("script.log_dir", _) => at("logs"),
            ("actions", _) => {
                executable(&dir.join("other.sh"));
                format!(r#"[{{id = "other", path = "{}"}}]"#, at("other.sh"))
            }
            ("history.file", _) => at("runs.json"),
            ("mail.host", _) => "smtp.example.com".into(),
            ("mail.port", _) => "2525".into(),
            ("mail.security", _) => "tls".into(),
            ("mail.username", _) => "authrun@example.com".into(),
            ("mail.password", _) => "hunter2".into(),
            ("mail.password_file", _) => {
                std::fs::write(dir.join("mail-password"), "hunter2\n").unwrap();
                at("mail-password")
            }
            ("mail.from", _) => "authrun <authrun@example.com>".into(),
            ("store.kind", _) => "postgres".into(),
            ("store.url", _) => "postgres://authrun:hunter2@127.0.0.1:5433/authrun".into(),
            ("store.url_file", _) => {
                std::fs::write(
                    dir.join("database-url"),
                    "postgres://authrun@db.example.com/authrun\n",
                )
                .unwrap();
                at("database-url")
            }
            ("notify", _) => r#"[{on = ["failed"], webhook = "https://chat.example.com/hook"}]"#.into(),
            ("totp.secret", _) => SECRET.into(),
            ("totp.secret_file", _) => {
                std::fs::write(dir.join("secret"), SECRET).unwrap();
                at("secret")
            }
            (_, Value::Num(_, n)) => (n.to_u128().unwrap() + 1).to_string(),
            (_, Value::Bool(_, b)) => (!b).to_string(),
            (key, _) => panic!("no distinctive value for `{key}`: add one to distinctive()"),
        }
    }

    /// The variables `key` needs beside its own to make a valid configuration: a key of `[mail]` needs
    /// the host and the sender, a password the user name.
    fn companions(key: &str) -> Vec<(&'static str, &'static str)> {
        let mut with = Vec::new();
        if key.starts_with("mail.") && key != "mail.host" {
            with.push(("AUTHRUN_MAIL_HOST", "smtp.example.com"));
        }
        if key.starts_with("mail.") && key != "mail.from" {
            with.push(("AUTHRUN_MAIL_FROM", "authrun@example.com"));
        }
        if key.starts_with("mail.password") {
            with.push(("AUTHRUN_MAIL_USERNAME", "authrun"));
        }
        if key == "mail.username" {
            with.push(("AUTHRUN_MAIL_PASSWORD", "hunter2"));
        }
        if key.starts_with("store.") && key != "store.kind" {
            with.push(("AUTHRUN_STORE_KIND", "postgres"));
        }
        if key == "store.kind" || key == "store.pool_size" || key == "store.lease_seconds" {
            with.push(("AUTHRUN_STORE_URL", "postgres://authrun@127.0.0.1/authrun"));
        }
        if key == "auth.email_codes" {
            with.push(("AUTHRUN_AUTH_MODE", "operators"));
            with.push(("AUTHRUN_MAIL_HOST", "smtp.example.com"));
            with.push(("AUTHRUN_MAIL_FROM", "authrun@example.com"));
        }
        with
    }

    /// What a test can tell apart: the `Debug` (which hides the secret) and the secret itself.
    fn fingerprint(config: &Config) -> String {
        let secret = match &config.secret {
            SecretSource::Configured { key, .. } => hex::encode(key.bytes()),
            SecretSource::Generated(_) => String::new(),
        };
        format!("{config:?} {secret}")
    }

    #[test]
    fn every_key_of_the_example_is_read_from_its_environment_variable() {
        let keys = example_keys();
        for commented_out in [
            "server.public_url",
            "access.max_wait_seconds",
            "audit.file",
            "script.working_dir",
            "script.log_dir",
            "totp.secret",
            "totp.secret_file",
        ] {
            assert!(keys.iter().any(|key| key == commented_out), "{commented_out}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        executable(&dir.path().join("scripts/example-deploy.sh"));
        let path = dir.path().join("authrun.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let plain = fingerprint(&Config::load(Some(&path), &[]).unwrap());
        for key in &keys {
            let name = format!("AUTHRUN_{}", key.replace('.', "_").to_ascii_uppercase());
            let value = distinctive(key, dir.path());
            let mut env = companions(key);
            // What the companions alone give (when they are valid alone) is what the key must change.
            let before = Config::load(Some(&path), &env).map_or_else(|_| plain.clone(), |c| fingerprint(&c));
            env.push((&name, &value));
            let config =
                Config::load(Some(&path), &env).unwrap_or_else(|error| panic!("{name}={value}: {error}"));
            assert_ne!(fingerprint(&config), before, "{name}={value} changed nothing");
        }
    }
}
