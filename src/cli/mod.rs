//! The command line: `serve` (the default), `qr`, `secret`, `check-config`, `example-config`, `token`,
//! `unlock`, `mail test`, `operator ...` (in `operators`), `store migrate` and `history export` (in
//! `store`).

mod database;
mod operators;
mod store;

use std::future::Future;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::auth::qr;
use crate::auth::token;
use crate::auth::totp::Verifier;
use crate::bootstrap;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigError, SecretSource, StoreSettings};
use crate::model::audit::{AuditEntry, AuditEvent};
use crate::model::client::ClientKey;
use crate::model::secret::generate_secret;
use crate::notify;
use crate::notify::mail::Mailer;
use crate::runs::leftovers;
use crate::store::file::regulation;
use crate::store::file::secret::{persist, resolve_secret};
use crate::web::server;

/// Exit code for a configuration or usage problem.
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "authrun",
    version,
    about = "Run one pre-configured script from a browser or curl, after a TOTP code",
    long_about = "Run one pre-configured script (a deploy, usually) from a browser or curl, but only after \
                  a valid code from an authenticator app.\n\n\
                  Quick start: `authrun` serves the example deploy on http://127.0.0.1:5000/ with a \
                  secret it generates on first start; scan the QR code it prints. Write a config with \
                  `authrun example-config > authrun.toml` and pass it with --config.",
    after_help = "Every config key can also be set from the environment as AUTHRUN_<SECTION>_<KEY> \
                  (top-level keys as AUTHRUN_BIND, AUTHRUN_STATE_DIR); the secret as AUTHRUN_SECRET. \
                  Logs go to stderr; set RUST_LOG to change their level."
)]
pub struct Cli {
    /// The TOML config file; without one, the built-in defaults are used.
    #[arg(long, short, global = true, env = "AUTHRUN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the page and the API (the default command).
    Serve {
        /// Listen on this address instead of the configured one, e.g. 0.0.0.0:5000.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Start even when the file holding the secret can be read by others (for development only).
        #[arg(long)]
        insecure_permissions: bool,
    },
    /// Print the otpauth:// URI and its QR code for the authenticator app.
    Qr {
        /// Also write the QR code as a PNG image to FILE.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
    /// Print a new random secret (160 bits, base32) for the config or AUTHRUN_SECRET.
    Secret,
    /// Check the configuration: exit 0 when it is valid, 2 with the problem when not.
    CheckConfig,
    /// Print the example configuration, every key documented.
    ExampleConfig,
    /// Print a new API token for reading output and cancelling, and the hash to configure for it.
    Token,
    /// Lift bans on clients that entered too many wrong codes, or (--all) every ban and the global pause.
    #[command(group = clap::ArgGroup::new("who").required(true))]
    Unlock {
        /// The client's IP address, as the audit log names it.
        #[arg(long, value_name = "ADDR", group = "who")]
        client: Option<IpAddr>,
        /// Every ban and the pause of code checking.
        #[arg(long, group = "who")]
        all: bool,
    },
    /// Manage operators (`[auth] mode = "operators"`): add, list, reset, remove, unlock.
    Operator {
        #[command(subcommand)]
        command: operators::OperatorCommand,
    },
    /// Mail through the SMTP server of [mail].
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Move the state into the database of [store] (several instances).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// The history of runs.
    History {
        #[command(subcommand)]
        command: store::HistoryCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send a test message to ADDRESS and print the server's answer: exit 0 when it took the message.
    Test {
        /// Where the message goes, e.g. ops@example.com.
        address: String,
    },
}

/// Runs the command and returns the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let config_file = cli.config.as_deref();
    let default = Command::Serve {
        bind: None,
        insecure_permissions: false,
    };
    match cli.command.unwrap_or(default) {
        Command::Serve {
            bind,
            insecure_permissions,
        } => serve(config_file, bind, insecure_permissions).await,
        Command::Unlock { client, all: _ } => unlock(config_file, client),
        Command::Operator { command } => match load(config_file, None) {
            Ok(config) => operators::run(&config, command),
            Err(error) => fail(error, EXIT_CONFIG),
        },
        Command::Mail {
            command: MailCommand::Test { address },
        } => mail_test(config_file, &address).await,
        Command::Store { command } => match load(config_file, None) {
            Ok(config) => store::run(&config, command).await,
            Err(error) => fail(error, EXIT_CONFIG),
        },
        Command::History { command } => match load(config_file, None) {
            Ok(config) => store::export(&config, command).await,
            Err(error) => fail(error, EXIT_CONFIG),
        },
        Command::Qr { png } => show_qr(config_file, png.as_deref()),
        Command::Secret => {
            println!("{}", generate_secret());
            ExitCode::SUCCESS
        }
        Command::CheckConfig => check_config(config_file),
        Command::Token => {
            let token = token::generate_token();
            println!("token:  {token}");
            println!("sha256: {}", token::sha256_hex(&token));
            println!(
                "\nPut the sha256 in the config as [access] api_token_sha256; give the token to the client,"
            );
            println!(
                "which sends it as `Authorization: Bearer TOKEN`. authrun never stores the token itself."
            );
            ExitCode::SUCCESS
        }
        Command::ExampleConfig => {
            print!("{}", config::EXAMPLE);
            ExitCode::SUCCESS
        }
    }
}

fn fail(error: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("authrun: {error}");
    ExitCode::from(code)
}

fn load(file: Option<&Path>, bind: Option<String>) -> Result<Config, ConfigError> {
    let mut config = Config::from_env(file)?;
    if let Some(bind) = bind {
        config.bind = bind.parse().map_err(|_| ConfigError {
            origin: "command line".into(),
            key: "--bind".into(),
            problem: format!("`{bind}` is not an address and port"),
            fix: "write it as IP:PORT, e.g. 127.0.0.1:5000".into(),
        })?;
    }
    Ok(config)
}

async fn serve(file: Option<&Path>, bind: Option<String>, insecure_permissions: bool) -> ExitCode {
    let config = match load(file, bind) {
        Ok(config) => config,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    if !insecure_permissions && let Err(error) = config.check_secret_permissions() {
        return fail(error, EXIT_CONFIG);
    }
    let secret = match resolve_secret(&config.secret) {
        Ok(secret) => secret,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    let verifier = Verifier::new(secret.key.bytes().to_vec(), config.totp.clone());
    let bind = config.bind;
    let state = match bootstrap::start(config, &secret.key, Arc::new(SystemClock)).await {
        Ok(state) => state,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    if let Err(error) = persist(&secret) {
        return fail(error, EXIT_CONFIG);
    }
    if let Some(path) = &secret.new_file {
        announce_new_secret(path, &verifier, file);
    }
    // Orphans of scripts become authrun's children, so a run's leftovers can be stopped when it ends.
    if let Err(error) = leftovers::become_subreaper() {
        tracing::warn!(%error, "cannot adopt what scripts leave running; processes outside their group survive runs");
    }
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(error) => {
            let hint = "choose a free address with --bind or `bind` in the config";
            return fail(format!("cannot listen on {bind}: {error}\n  fix: {hint}"), 1);
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => return fail(format!("cannot listen for SIGTERM: {error}"), 1),
    };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}/"),
        Err(_) => format!("http://{bind}/"),
    };
    println!("authrun is serving {url}");
    tracing::info!(%url, "listening");
    // Under systemd (`Type=notify`) the unit is ready once the listener is bound; elsewhere a no-op.
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(%error, "systemd could not be told that authrun is ready");
    }
    let served = server::serve(listener, state.clone(), shutdown).await;
    state.gatekeeper.flush().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(format!("the server stopped: {error}"), 1),
    }
}

/// Prints the QR code of a secret generated on this start, where only the operator can see it.
/// `config_file` is named in the hint, so the command shown finds the same secret.
fn announce_new_secret(path: &Path, verifier: &Verifier, config_file: Option<&Path>) {
    println!(
        "A new TOTP secret was generated and stored in {}.",
        path.display()
    );
    if std::io::stdout().is_terminal() {
        println!("Scan this QR code with your authenticator app:\n");
        let art = verifier
            .provisioning_uri()
            .map_err(|error| error.to_string())
            .and_then(|uri| qr::terminal(&uri).map_err(|error| error.to_string()));
        match art {
            Ok(art) => println!("{art}"),
            Err(error) => eprintln!("authrun: {error}"),
        }
    } else {
        // Output that is not a terminal usually ends in a log file: keep the secret out of it.
        let command = match config_file {
            Some(file) => format!("authrun qr --config {}", shell_word(&file.display().to_string())),
            None => "authrun qr".to_string(),
        };
        println!("Run `{command}` in a terminal to show its QR code.");
    }
}

/// `word` as a shell would need it typed: quoted when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Listens for SIGINT and SIGTERM from now on; the future resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

fn unlock(file: Option<&Path>, client: Option<IpAddr>) -> ExitCode {
    let config = match load(file, None) {
        Ok(config) => config,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    let key = client.map(ClientKey::of);
    let lifted = match &config.store {
        StoreSettings::Postgres { url, .. } => database::edit(url, "regulation", |state| {
            Ok(regulation::lift(state, key.as_ref()))
        }),
        StoreSettings::Files => regulation::unlock(&config.regulation_file, key.as_ref()),
    };
    let lifted = match lifted {
        Ok(lifted) => lifted,
        Err(error) => return fail(error, 1),
    };
    let entry = AuditEntry {
        time: SystemClock.now(),
        event: AuditEvent::Unlocked { client: key.as_ref() },
    };
    if let Err(error) = database::audit(&config, &entry) {
        return fail(error, 1);
    }
    match (key, lifted) {
        (Some(key), 0) => println!("{key} was not banned."),
        (Some(key), _) => println!("The ban on {key} is lifted."),
        (None, 0) => println!("Nothing was banned or paused."),
        (None, 1) => println!("Lifted 1 ban or pause."),
        (None, n) => println!("Lifted {n} bans and pauses."),
    }
    ExitCode::SUCCESS
}

fn show_qr(file: Option<&Path>, png: Option<&Path>) -> ExitCode {
    let config = match load(file, None) {
        Ok(config) => config,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    let secret = match resolve_secret(&config.secret).and_then(|secret| persist(&secret).map(|()| secret)) {
        Ok(secret) => secret,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    if let Some(path) = &secret.new_file {
        println!(
            "A new TOTP secret was generated and stored in {}.",
            path.display()
        );
    }
    let verifier = Verifier::new(secret.key.bytes().to_vec(), config.totp.clone());
    let uri = match verifier.provisioning_uri() {
        Ok(uri) => uri,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    println!("{uri}\n");
    match qr::terminal(&uri) {
        Ok(art) => println!("{art}"),
        Err(error) => return fail(error, 1),
    }
    if let Some(path) = png {
        if let Err(error) = qr::write_png(&uri, path) {
            return fail(error, 1);
        }
        println!("QR code written to {}", path.display());
    }
    ExitCode::SUCCESS
}

/// `authrun mail test ADDRESS`: one message through the configured server, and its answer.
async fn mail_test(file: Option<&Path>, address: &str) -> ExitCode {
    let config = match load(file, None) {
        Ok(config) => config,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    let Some(settings) = &config.mail else {
        let hint = "add a [mail] section with host and from (`authrun example-config` shows every key)";
        return fail(
            format!("mail is not set up: [mail] has no host\n  fix: {hint}"),
            EXIT_CONFIG,
        );
    };
    let mailer = match Mailer::new(settings) {
        Ok(mailer) => mailer,
        Err(error) => return fail(error, 1),
    };
    let body = format!(
        "This is a test message from authrun (`authrun mail test`).\n\nMail works: notifications and \
         operators' messages will reach this address through {}.\n",
        mailer.server()
    );
    match mailer.send_to(address, "[authrun] Test message", &body).await {
        Ok(answer) => {
            println!("{} took the message for {address}: {answer}", mailer.server());
            ExitCode::SUCCESS
        }
        Err(error) => fail(
            format!(
                "the test message was not sent: {error}\n  fix: check [mail] host, port, security and the login"
            ),
            1,
        ),
    }
}

fn check_config(file: Option<&Path>) -> ExitCode {
    let config = match load(file, None) {
        Ok(config) => config,
        Err(error) => return fail(error, EXIT_CONFIG),
    };
    if let Err(error) = config.check_secret_permissions() {
        return fail(error, EXIT_CONFIG);
    }
    let origin = file.map_or_else(|| "built-in defaults".to_string(), |f| f.display().to_string());
    println!("{origin}: valid");
    println!("  listens on   {}", config.bind);
    for action in &config.actions {
        println!(
            "  action       {} ({}): runs {}, cooldown {} s",
            action.id,
            action.name,
            action.script.path.display(),
            action.script.cooldown.as_secs()
        );
    }
    match &config.store {
        StoreSettings::Files => {
            println!("  history      {}", config.history_file.display());
            println!("  store        files in {}", config.state_dir.display());
        }
        // The URL may hold a password: never printed.
        StoreSettings::Postgres { pool_size, lease, .. } => {
            println!(
                "  store        postgres, url set, pool of {pool_size} connections, leases of {} s",
                lease.as_secs()
            );
            // A script stopped for a lost lease must be gone before the lease ends.
            for action in config
                .actions
                .iter()
                .filter(|action| action.script.kill_grace * 3 > *lease)
            {
                println!(
                    "  note         action {}: kill_grace_seconds = {} is more than a third of [store] \
                     lease_seconds = {}: a script stopped because its instance lost the database may \
                     outlive its lease; raise lease_seconds or lower kill_grace_seconds",
                    action.id,
                    action.script.kill_grace.as_secs(),
                    lease.as_secs()
                );
            }
        }
    }
    match &config.mail {
        Some(mail) => println!(
            "  mail         {}:{} ({:?}), from {}, password {}",
            mail.host,
            mail.port,
            mail.security,
            mail.from,
            if mail.credentials.is_some() {
                "set"
            } else {
                "not set"
            }
        ),
        None => println!("  mail         not set up"),
    }
    for (index, rule) in config.notify.iter().enumerate() {
        let mut to: Vec<String> = rule.email.iter().map(|m| m.email.to_string()).collect();
        if let Some(hook) = &rule.webhook {
            to.push(format!("webhook {}", notify::webhook::host_of(hook)));
        }
        println!("  notify[{}]    {}", index + 1, to.join(", "));
    }
    if config.auth.operators() {
        println!(
            "  auth         operators, kept in {} (passwords {})",
            config.operators_file.display(),
            if config.auth.passwords { "on" } else { "off" }
        );
        if let SecretSource::Configured { .. } = &config.secret {
            println!(
                "  note         [totp] secret is configured but not accepted in operators mode: each operator \
                 uses their own; remove it, or set [auth] mode = \"shared\""
            );
        }
        return ExitCode::SUCCESS;
    }
    match &config.secret {
        SecretSource::Configured { .. } => println!("  secret       configured"),
        SecretSource::Generated(path) => {
            println!("  secret       generated on first start in {}", path.display())
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
