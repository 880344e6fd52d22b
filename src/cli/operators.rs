//! `authrun operator ...`: the operators, from the server's own machine. The first admin is made here.
//!
//! The commands edit `operators.json` under its lock and tell a running server to read it again, so
//! they work whether or not the server runs; with `[store] kind = "postgres"` they change the operators
//! in the database instead, and every instance hears of it. Each change is written to the audit log.

use std::process::ExitCode;

use clap::Subcommand;

use crate::auth::operators::{self, AdminError, OperatorRow, enrollment_link};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthMode, Config, StoreSettings};
use crate::model::audit::{AuditEntry, AuditEvent};
use crate::model::operator::{Operators, Role};
use crate::store::StoreError;
use crate::store::file::operators as file;

use super::{database, fail};

/// The operators' document in the database.
const DOCUMENT: &str = "operators";

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator and print their enrollment link.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "operator"], default_value = "operator")]
        role: String,
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
    },
    /// List the operators.
    List {
        /// As JSON, the shape of GET /api/admin/operators.
        #[arg(long)]
        json: bool,
    },
    /// Print a new enrollment link; the old secret, backup codes and password stop working at once.
    Reset { name: String },
    /// Remove an operator.
    Remove { name: String },
    /// Lift an operator's lock.
    Unlock { name: String },
}

/// Runs an operator command against `config`'s operators file.
pub fn run(config: &Config, command: OperatorCommand) -> ExitCode {
    if config.auth.mode != AuthMode::Operators {
        eprintln!(
            "authrun: note: [auth] mode is \"shared\": operators are kept, but only used once mode = \"operators\"."
        );
    }
    let now = SystemClock.now();
    let valid_for = config.auth.enrollment;
    let base = match &config.server.public_url {
        Some(url) => url.origin.clone(),
        None => format!("http://{}", config.bind),
    };
    let changed = match command {
        OperatorCommand::List { json } => return list(config, json),
        OperatorCommand::Add { name, role, email } => {
            let role = Role::parse(&role).unwrap_or_default();
            edit(config, |list| {
                operators::add(list, &name, role, email.clone(), now, valid_for).map_err(to_store)
            })
            .map(|token| (name, "added", Some(token)))
        }
        OperatorCommand::Reset { name } => edit(config, |list| {
            operators::reset(list, &name, now, valid_for).map_err(to_store)
        })
        .map(|token| (name, "reset", Some(token))),
        OperatorCommand::Remove { name } => {
            edit(config, |list| operators::remove(list, &name).map_err(to_store))
                .map(|()| (name, "removed", None))
        }
        OperatorCommand::Unlock { name } => {
            edit(config, |list| operators::unlock(list, &name).map_err(to_store))
                .map(|()| (name, "unlocked", None))
        }
    };
    let (name, change, token) = match changed {
        Ok(changed) => changed,
        Err(error) => return fail(error, 1),
    };
    let entry = AuditEntry {
        time: now,
        event: AuditEvent::Operator {
            name: &name,
            change,
            by: None,
            until: None,
        },
    };
    if let Err(error) = database::audit(config, &entry) {
        return fail(error, 1);
    }
    match token {
        Some(token) => {
            println!(
                "{name}: {change}. Enrollment link (valid {} h, works once):",
                valid_for.as_secs() / 3600
            );
            println!("{}", enrollment_link(&base, &token));
        }
        None => println!("{name}: {change}."),
    }
    ExitCode::SUCCESS
}

/// Changes the operators where `[store]` keeps them: their file, or the database.
fn edit<R: Send>(
    config: &Config,
    mut change: impl FnMut(&mut Operators) -> Result<R, StoreError> + Send,
) -> Result<R, StoreError> {
    match &config.store {
        StoreSettings::Postgres { url, .. } => database::edit(url, DOCUMENT, change),
        StoreSettings::Files => file::edit(&config.operators_file, |list| change(list)),
    }
}

/// An admin change's refusal, as the store's error type carries it out of the file's lock.
fn to_store(error: AdminError) -> crate::store::StoreError {
    match error {
        AdminError::Store(error) => error,
        other => crate::store::StoreError::Refused(other.to_string()),
    }
}

fn list(config: &Config, json: bool) -> ExitCode {
    let read = match &config.store {
        StoreSettings::Postgres { url, .. } => database::read::<Operators>(url, DOCUMENT),
        StoreSettings::Files => file::read(&config.operators_file),
    };
    let list = match read {
        Ok(list) => list,
        Err(error) => return fail(error, 1),
    };
    let now = SystemClock.now();
    let rows: Vec<OperatorRow> = list
        .operators
        .iter()
        .map(|(name, operator)| OperatorRow::new(name, operator, now))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        println!("No operators yet: `authrun operator add NAME --role admin` makes the first.");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<32}  {:<8}  {:<8}  {:>6}  {:<20}  locked until",
        "name", "role", "enrolled", "codes", "last run"
    );
    for row in rows {
        println!(
            "{:<32}  {:<8}  {:<8}  {:>6}  {:<20}  {}",
            row.name,
            row.role,
            if row.enrolled { "yes" } else { "pending" },
            row.backup_codes_left,
            row.last_run.as_deref().unwrap_or("never"),
            row.locked_until.as_deref().unwrap_or("-"),
        );
    }
    ExitCode::SUCCESS
}
