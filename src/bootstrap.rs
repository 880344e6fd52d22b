//! The composition root: opens the stores named by the configuration and builds the services and the
//! application state from them. Nothing else in authrun decides which store implementation is used.

use std::sync::Arc;

use crate::auth::attempt::Gatekeeper;
use crate::auth::operators::Directory;
use crate::auth::refusals::Refusals;
use crate::auth::regulation::Guard;
use crate::auth::totp::Verifier;
use crate::clock::SharedClock;
use crate::config::{Config, SecretKey, StoreSettings};
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyStartError};
use crate::runs::observer::{Observers, RunObserver};
use crate::runs::runners::Runners;
use crate::runs::shipper::OutputShipper;
use crate::store::file::atomic;
use crate::store::file::audit::AuditLog;
use crate::store::file::history::FileHistory;
use crate::store::file::operators::FileOperators;
use crate::store::file::regulation::FileRegulation;
use crate::store::file::sessions::FileSessions;
use crate::store::postgres::{self, Database, PgAudit};
use crate::store::run_output::RunOutputStore;
use crate::store::session_table::SessionTable;
use crate::store::{
    AuditError, AuditSink, OperatorStore, RegulationStore, RunStore, SessionKeeper, StoreError,
};
use crate::web::cache::Caches;
use crate::web::state::{AppState, AppStateInner};

/// Why the application cannot start on its files.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The history or the regulation state.
    #[error(transparent)]
    State(#[from] StoreError),
    #[error("{0}\n  fix: check that its directory exists and is writable by authrun")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Notify(#[from] NotifyStartError),
    #[error("state directory {path}: cannot be created: {source}\n  fix: check the path of `state_dir`")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The stores the state is kept in.
struct Stores {
    history: Arc<dyn RunStore>,
    regulation: Arc<dyn RegulationStore>,
    /// Opened only in operators mode.
    operators: Option<Arc<dyn OperatorStore>>,
    sessions: Arc<dyn SessionKeeper>,
    /// The browser sessions shared by instances; none: in memory.
    session_table: Option<Arc<dyn SessionTable>>,
    /// Where runs' output is shared with other instances; none: in the log files only.
    run_output: Option<Arc<dyn RunOutputStore>>,
    /// Where audit lines are copied for every instance's statistics; none: the file only.
    audit_copy: Option<Database>,
}

/// Opens the state named by `[store]`: [`open`] for the files; for a database, migrates it, reads it
/// and listens for the changes other instances make.
pub async fn start(config: Config, secret: &SecretKey, clock: SharedClock) -> Result<AppState, StartError> {
    let StoreSettings::Postgres {
        url,
        pool_size,
        lease,
    } = &config.store
    else {
        return open(config, secret, clock);
    };
    create_state_dir(&config)?;
    let database = Database::new(url, *pool_size)?;
    let first = config.first_action().id.to_string();
    let opened = postgres::Stores::open(
        &database,
        config.history_retention,
        &first,
        !config.auth.operators(),
        *lease,
    )
    .await?;
    postgres::listen(&database, opened.clone());
    let leased = Arc::clone(&opened.runs);
    let stores = Stores {
        history: opened.runs,
        regulation: opened.regulation,
        operators: Some(opened.operators as Arc<dyn OperatorStore>).filter(|_| config.auth.operators()),
        sessions: opened.sessions,
        session_table: Some(opened.session_table as Arc<dyn SessionTable>),
        run_output: Some(opened.output as Arc<dyn RunOutputStore>),
        audit_copy: Some(database),
    };
    let state = assemble(config, secret, Arc::clone(&clock), stores)?;
    let runner = Arc::clone(&state.runner);
    let fence: postgres::Fence = Arc::new(move |id| {
        // A run that ended meanwhile needs no stopping.
        let _ = runner.interrupt(id, postgres::FENCED);
    });
    postgres::keep_leases(leased, clock, fence);
    Ok(state)
}

/// Opens the state directory, the history (recovering runs a crash left "Deploying"), the regulation
/// state and the audit log, and restores every action's gate from the history.
pub fn open(config: Config, secret: &SecretKey, clock: SharedClock) -> Result<AppState, StartError> {
    create_state_dir(&config)?;
    let history = FileHistory::open(&config.history_file, config.history_retention)?
        .with_first_action(config.first_action().id.as_str());
    let operators = if config.auth.operators() {
        Some(Arc::new(FileOperators::open(&config.operators_file)?) as Arc<dyn OperatorStore>)
    } else {
        None
    };
    let stores = Stores {
        history: Arc::new(history),
        regulation: Arc::new(FileRegulation::open(&config.regulation_file)?),
        operators,
        sessions: Arc::new(FileSessions::open(&config.state_dir.join("sessions.json"))?),
        session_table: None,
        run_output: None,
        audit_copy: None,
    };
    assemble(config, secret, clock, stores)
}

fn create_state_dir(config: &Config) -> Result<(), StartError> {
    atomic::create_private_dir(&config.state_dir).map_err(|source| StartError::StateDir {
        path: config.state_dir.clone(),
        source,
    })
}

/// Builds the services and the application state on `stores`; the audit log is written to its file
/// (and copied to the database with one).
fn assemble(
    config: Config,
    secret: &SecretKey,
    clock: SharedClock,
    stores: Stores,
) -> Result<AppState, StartError> {
    let Stores {
        history,
        regulation,
        operators,
        sessions,
        session_table,
        run_output,
        audit_copy,
    } = stores;
    let file = AuditLog::open(&config.audit_file, Some(config.audit_rotation))?;
    let audit: Arc<dyn AuditSink> = match audit_copy {
        Some(database) => Arc::new(PgAudit::start(
            file,
            database,
            config.audit_rotation.database_lines(),
        )),
        None => Arc::new(file),
    };
    let metrics = Arc::new(Metrics::new());
    let counted = Arc::clone(&metrics);
    let notifier = Arc::new(Notifier::start(
        &config,
        Arc::clone(&clock),
        Arc::clone(&audit),
        Some(Arc::new(move |kind: &str, result: &str| {
            counted.notification(kind, result)
        })),
    )?);
    let mut observers = vec![
        Arc::clone(&metrics) as Arc<dyn RunObserver>,
        Arc::clone(&notifier) as Arc<dyn RunObserver>,
    ];
    if let Some(store) = &run_output {
        let log_dirs = config
            .actions
            .iter()
            .map(|action| action.script.log_dir.clone())
            .collect();
        let shipper = OutputShipper::new(Arc::clone(store), log_dirs, config.history_retention);
        observers.push(Arc::new(shipper));
    }
    let observers: Observers = observers.into();
    let runner = Arc::new(Runners::new(
        &config.actions,
        config.max_parallel,
        Arc::clone(&clock),
        history,
        observers,
    ));
    let caches = Caches::new(config.actions.len());
    let operators = if let Some(store) = operators {
        let directory = Directory::new(
            store,
            config.totp.clone(),
            config.auth.clone(),
            &config.regulation,
        );
        let mailer = Arc::clone(&notifier);
        let mail = move |to: &str, subject: &str, body: String| match to.parse() {
            Ok(to) => mailer.operator_mail(to, subject, body).is_ok(),
            Err(_) => {
                tracing::warn!("an operator's email address cannot be parsed; nothing was sent");
                false
            }
        };
        Some(Arc::new(directory.with_mail(Arc::new(mail))))
    } else {
        None
    };
    let gatekeeper = Gatekeeper {
        clock: Arc::clone(&clock),
        verifier: Verifier::new(secret.bytes().to_vec(), config.totp.clone()),
        guard: Guard::new(regulation, config.regulation.clone()),
        audit,
        runner: Arc::clone(&runner),
        refusals: Refusals::default(),
        operators,
        allow: config.actions.iter().map(|action| action.allow.clone()).collect(),
        metrics: Arc::clone(&metrics),
    };
    Ok(AppState::new(AppStateInner {
        config: Arc::new(config),
        clock,
        runner,
        gatekeeper: Arc::new(gatekeeper),
        caches,
        sessions,
        session_table,
        run_output,
        metrics,
        notifier,
    }))
}
