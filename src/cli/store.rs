//! `authrun store migrate --from files` (one instance's files into the database of `[store]`) and
//! `authrun history export` (the history in the history file's shape, from whichever store is
//! configured): the way from one instance to several, and back.

use std::io::Write;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::config::{Config, StoreSettings};
use crate::store::file::history::{self, HistoryFile};
use crate::store::file::{audit, operators, regulation};
use crate::store::postgres::Database;
use crate::store::postgres::transfer::{self, FromFiles, Imported};

use super::fail;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Import the state of the files (the history, the used code step, the regulation state, the
    /// operators, the audit log) into the database of [store]. Running it again imports nothing twice.
    Migrate {
        /// Where the state comes from.
        #[arg(long, value_enum)]
        from: Source,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Source {
    /// The files in state_dir (history.json, regulation state, operators.json) and the audit log.
    Files,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Print the history as the history file holds it (a JSON array, oldest first), from the files or
    /// the database, whichever [store] names.
    Export,
}

pub async fn run(config: &Config, command: StoreCommand) -> ExitCode {
    let StoreCommand::Migrate { from: Source::Files } = command;
    let StoreSettings::Postgres { url, .. } = &config.store else {
        return fail(
            "`store migrate` imports into the database, but [store] kind is \"files\"\n  fix: set [store] kind = \"postgres\" and url (or AUTHRUN_STORE_KIND and AUTHRUN_STORE_URL)",
            super::EXIT_CONFIG,
        );
    };
    let files = match read_files(config) {
        Ok(files) => files,
        Err(error) => return fail(error, 1),
    };
    let imported = async {
        let database = Database::new(url, 1)?;
        transfer::import(&database, config.first_action().id.as_str(), files).await
    }
    .await;
    match imported {
        Ok(imported) => {
            println!("{}", summary(&imported));
            ExitCode::SUCCESS
        }
        Err(error) => fail(error, 1),
    }
}

fn read_files(config: &Config) -> Result<FromFiles, crate::store::StoreError> {
    let operators = if config.operators_file.exists() {
        Some(operators::read(&config.operators_file)?)
    } else {
        None
    };
    Ok(FromFiles {
        audit_keep: config.audit_rotation.database_lines(),
        history: HistoryFile::read(&config.history_file)?,
        regulation: regulation::read(&config.regulation_file)?,
        operators,
        audit: audit::read_all(&config.audit_file).map_err(|error| {
            crate::store::StoreError::Refused(format!(
                "the audit log {} cannot be read: {error}",
                config.audit_file.display()
            ))
        })?,
    })
}

/// What was imported, in a sentence or two.
fn summary(imported: &Imported) -> String {
    let runs = match (imported.runs, imported.present) {
        (1, 0) => "Imported 1 run".to_string(),
        (n, 0) => format!("Imported {n} runs"),
        (n, present) => format!("Imported {n} runs ({present} were already in the database)"),
    };
    let document = |name: &str, imported: bool| {
        if imported {
            format!("the {name}")
        } else {
            format!("not the {name} (the database holds its own)")
        }
    };
    let mut parts = vec![runs, document("regulation state", imported.regulation)];
    if let Some(operators) = imported.operators {
        parts.push(document("operators", operators));
    }
    let lines = |n: u64| {
        if n == 1 {
            "1 audit line".to_string()
        } else {
            format!("{n} audit lines")
        }
    };
    let mut audit = match imported.audit_present {
        0 => lines(imported.audit),
        1 => format!("{} (1 was already in the database)", lines(imported.audit)),
        present => format!(
            "{} ({present} were already in the database)",
            lines(imported.audit)
        ),
    };
    if imported.audit_unreadable > 0 {
        audit.push_str(&format!(
            "; {} of the audit log not JSON with a time, left out",
            lines(imported.audit_unreadable).replace(" audit", "")
        ));
    }
    parts.push(audit);
    format!("{}.", parts.join(", "))
}

pub async fn export(config: &Config, HistoryCommand::Export: HistoryCommand) -> ExitCode {
    let records = match &config.store {
        StoreSettings::Files => HistoryFile::read(&config.history_file).map(|file| file.records),
        StoreSettings::Postgres { url, .. } => match Database::new(url, 1) {
            Ok(database) => transfer::history(&database).await,
            Err(error) => Err(error),
        },
    };
    match records {
        Ok(records) => {
            let mut out = std::io::stdout().lock();
            match out
                .write_all(&history::to_json(&records))
                .and_then(|()| out.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(format!("the history could not be printed: {error}"), 1),
            }
        }
        Err(error) => fail(error, 1),
    }
}
