//! Notifications: mail and webhooks when a run starts or ends (`[[notify]]`), and the operators'
//! messages, sent off the run's path.
//!
//! The [`Notifier`] hears of runs as a [`RunObserver`] and only puts what is to be sent on a bounded
//! queue; when the queue is full the notification is dropped, logged and audited, and the run never
//! waits. A worker task reads the run's last lines of output (on the blocking pool) and hands each
//! delivery to a task of its own, at most [`IN_FLIGHT`] at once: three tries, each given
//! [`TRY_TIMEOUT`], waiting [`BACKOFF`] on the [`Clock`](crate::clock::Clock) between them. Every outcome
//! goes to the server log and the audit log. At shutdown what is queued gets [`SHUTDOWN_GRACE`] to go.

pub mod mail;
pub mod payload;
pub mod webhook;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::SharedClock;
use crate::config::{Config, Mailbox, NotifyRule, WebhookTarget};
use crate::model::audit::{AuditEntry, AuditEvent, Delivery};
use crate::model::run::RunRecord;
use crate::runs::observer::RunObserver;
use crate::runs::runner::{Owner, log_name};
use crate::store::AuditSink;
use mail::{MailError, Mailer};
use payload::{Payload, output_tail};
use webhook::{WebhookClient, host_of};

/// Notifications waiting to be sent; one more is dropped.
pub const QUEUE: usize = 256;
/// Deliveries going at once.
pub const IN_FLIGHT: usize = 16;
/// Tries of one delivery.
pub const TRIES: u32 = 3;
/// How long one try may take (real time: it is about the network).
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// The waits after the first and the second failed try, on the clock.
pub const BACKOFF: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(60)];
/// How long shutdown waits for what is queued or being sent.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Drops waiting for their audit line; more are only logged.
const DROP_REPORTS: usize = 64;

/// Hears of every delivery's outcome: the channel (`email` or `webhook`) and the result (`delivered`,
/// `failed` or `dropped`); for the metrics. Called on the sender's path: it must return at once.
pub type DeliveryHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Why the notifier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyStartError {
    #[error("mail cannot be set up: {0}")]
    Mail(#[from] MailError),
    #[error("the webhook client cannot be set up: {0}")]
    Webhook(#[from] reqwest::Error),
}

/// Why an operator's message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotQueued {
    #[error("mail is not set up ([mail] has no host)")]
    NoMail,
    #[error("the notification queue is full")]
    Full,
}

/// Where one notification goes.
#[derive(Debug, Clone)]
enum Channel {
    Email(Mailbox),
    Webhook(WebhookTarget),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Self::Email(_) => "email",
            Self::Webhook(_) => "webhook",
        }
    }

    /// The recipient as logs name it: the address, or the webhook's host.
    fn to(&self) -> String {
        match self {
            Self::Email(mailbox) => mailbox.email.to_string(),
            Self::Webhook(target) => host_of(target),
        }
    }
}

/// One recipient of a run's notification, and how many lines of output it gets.
#[derive(Debug, Clone)]
struct Recipient {
    channel: Channel,
    output_lines: usize,
}

/// What the queue holds.
#[derive(Debug)]
enum Job {
    Run {
        payload: Payload,
        log: PathBuf,
        recipients: Vec<Recipient>,
    },
    Operator {
        to: Mailbox,
        subject: String,
        body: String,
    },
}

impl Job {
    /// Each delivery's channel and recipient, and the run it is about.
    fn deliveries(&self) -> Vec<Dropped> {
        match self {
            Self::Run {
                payload, recipients, ..
            } => recipients
                .iter()
                .map(|r| Dropped {
                    reason: "",
                    channel: r.channel.name(),
                    to: r.channel.to(),
                    run: Some((payload.action.clone(), payload.run_id)),
                })
                .collect(),
            Self::Operator { to, .. } => vec![Dropped {
                reason: "",
                channel: "email",
                to: to.email.to_string(),
                run: None,
            }],
        }
    }
}

/// A notification dropped before it was tried, waiting for its audit line.
#[derive(Debug)]
struct Dropped {
    reason: &'static str,
    channel: &'static str,
    to: String,
    run: Option<(String, u64)>,
}

/// What the worker and the delivery tasks share.
struct Sender {
    mailer: Option<Mailer>,
    webhooks: Option<WebhookClient>,
    clock: SharedClock,
    audit: Arc<dyn AuditSink>,
    hook: Option<DeliveryHook>,
}

/// Tells of runs by mail and webhook, and mails operators; see the module's notes.
pub struct Notifier {
    rules: Vec<NotifyRule>,
    /// Each action's log directory, in the configuration's order.
    log_dirs: Vec<PathBuf>,
    public_url: Option<String>,
    mail: bool,
    queue: mpsc::Sender<Job>,
    drops: mpsc::Sender<Dropped>,
    hook: Option<DeliveryHook>,
    stop: watch::Sender<bool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The queue's receiving ends when no worker was started (no runtime, or nothing to send).
    _parked: Option<(mpsc::Receiver<Job>, mpsc::Receiver<Dropped>)>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("rules", &self.rules.len())
            .field("mail", &self.mail)
            .finish()
    }
}

impl Notifier {
    /// Builds the notifier of `config` and starts its worker (when there is anything to send and a
    /// runtime to run it on). `hook` hears of every outcome.
    pub fn start(
        config: &Config,
        clock: SharedClock,
        audit: Arc<dyn AuditSink>,
        hook: Option<DeliveryHook>,
    ) -> Result<Self, NotifyStartError> {
        let mailer = config.mail.as_ref().map(Mailer::new).transpose()?;
        // Only built when a webhook is configured: its TLS roots cost memory.
        let webhooks = if config.notify.iter().any(|rule| rule.webhook.is_some()) {
            Some(WebhookClient::new(TRY_TIMEOUT)?)
        } else {
            None
        };
        let (queue, jobs) = mpsc::channel(QUEUE);
        let (drops, dropped) = mpsc::channel(DROP_REPORTS);
        let (stop, stopping) = watch::channel(false);
        let mail = mailer.is_some();
        let sender = Arc::new(Sender {
            mailer,
            webhooks,
            clock,
            audit,
            hook: hook.clone(),
        });
        let (worker, parked) = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if mail || !config.notify.is_empty() => {
                (Some(runtime.spawn(work(sender, jobs, dropped, stopping))), None)
            }
            // Nothing takes jobs off the queue: it fills as it would with a stuck worker.
            _ => (None, Some((jobs, dropped))),
        };
        Ok(Self {
            rules: config.notify.clone(),
            log_dirs: config
                .actions
                .iter()
                .map(|action| action.script.log_dir.clone())
                .collect(),
            public_url: config.server.public_url.as_ref().map(|url| url.origin.clone()),
            mail,
            queue,
            drops,
            hook,
            stop,
            worker: Mutex::new(worker),
            _parked: parked,
        })
    }

    /// Queues a message to an operator (backup codes running low, a locked account). Returns at once.
    pub fn operator_mail(
        &self,
        to: Mailbox,
        subject: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<(), NotQueued> {
        if !self.mail {
            return Err(NotQueued::NoMail);
        }
        let job = Job::Operator {
            to,
            subject: subject.into(),
            body: body.into(),
        };
        if self.enqueue(job) {
            Ok(())
        } else {
            Err(NotQueued::Full)
        }
    }

    /// Gives what is queued or being sent [`SHUTDOWN_GRACE`] to go, then gives up on the rest.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let worker = self.worker.lock().take();
        let Some(mut worker) = worker else { return };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut worker).await.is_err() {
            worker.abort();
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "gave up on the notifications still being sent at shutdown"
            );
        }
    }

    /// Queues the notifications of `record` reaching its status, if any entry wants them.
    fn notify(&self, owner: &Owner, record: &RunRecord) {
        let recipients: Vec<Recipient> = self
            .rules
            .iter()
            .filter(|rule| rule.matches(owner.id.as_str(), record.status))
            .flat_map(|rule| {
                let mails = rule.email.iter().cloned().map(Channel::Email);
                let hooks = rule.webhook.iter().cloned().map(Channel::Webhook);
                mails.chain(hooks).map(|channel| Recipient {
                    channel,
                    output_lines: rule.output_lines,
                })
            })
            .collect();
        if recipients.is_empty() {
            return;
        }
        let id = record.id.unwrap_or_default();
        let log_dir = self.log_dirs.get(owner.index).cloned().unwrap_or_default();
        let log = log_dir.join(record.log.clone().unwrap_or_else(|| log_name(id)));
        let payload = Payload::new(owner, record, self.public_url.as_deref());
        self.enqueue(Job::Run {
            payload,
            log,
            recipients,
        });
    }

    /// Puts `job` on the queue; when it is full (or closed), drops it with a log line, and an audit line
    /// written by the worker. Never waits.
    fn enqueue(&self, job: Job) -> bool {
        let (job, reason) = match self.queue.try_send(job) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Full(job)) => (job, "the queue is full"),
            Err(mpsc::error::TrySendError::Closed(job)) => (job, "authrun is shutting down"),
        };
        for dropped in job.deliveries() {
            let Dropped { channel, to, run, .. } = &dropped;
            tracing::warn!(channel, %to, run = run.as_ref().map(|(_, id)| *id), reason, "notification dropped");
            if let Some(hook) = &self.hook {
                hook(channel, Delivery::Dropped.as_str());
            }
            // Past DROP_REPORTS waiting, a drop is only in the server log.
            let _ = self.drops.try_send(Dropped { reason, ..dropped });
        }
        false
    }
}

impl RunObserver for Notifier {
    fn started(&self, owner: &Owner, record: &RunRecord) {
        self.notify(owner, record);
    }

    fn finished(&self, owner: &Owner, record: &RunRecord) {
        self.notify(owner, record);
    }
}

/// The worker: takes jobs off the queue and starts their deliveries, writes the drops' audit lines;
/// once stopped, sends what is still queued and waits for the deliveries going.
async fn work(
    sender: Arc<Sender>,
    mut jobs: mpsc::Receiver<Job>,
    mut dropped: mpsc::Receiver<Dropped>,
    mut stopping: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopping.changed() => break,
            job = jobs.recv() => match job {
                Some(job) => dispatch(&sender, job, &permits, &mut tasks).await,
                None => break,
            },
            Some(report) = dropped.recv() => audit_drop(&sender, report).await,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    jobs.close();
    while let Some(job) = jobs.recv().await {
        dispatch(&sender, job, &permits, &mut tasks).await;
    }
    dropped.close();
    while let Some(report) = dropped.recv().await {
        audit_drop(&sender, report).await;
    }
    while tasks.join_next().await.is_some() {}
}

/// Starts the deliveries of `job`, each when a slot is free.
async fn dispatch(sender: &Arc<Sender>, job: Job, permits: &Arc<Semaphore>, tasks: &mut JoinSet<()>) {
    let deliveries: Vec<(Channel, Message)> = match job {
        Job::Run {
            mut payload,
            log,
            recipients,
        } => {
            let lines = recipients.iter().map(|r| r.output_lines).max().unwrap_or(0);
            let read = tokio::task::spawn_blocking(move || output_tail(&log, lines)).await;
            payload.output = match read {
                Ok(Ok(lines)) => lines,
                Ok(Err(error)) => {
                    tracing::warn!(run = payload.run_id, %error, "the run's output cannot be read for its notification");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            recipients
                .into_iter()
                .map(|recipient| {
                    let payload = payload.with_last_lines(recipient.output_lines);
                    (recipient.channel, Message::Run(payload))
                })
                .collect()
        }
        Job::Operator { to, subject, body } => vec![(Channel::Email(to), Message::Text { subject, body })],
    };
    for (channel, message) in deliveries {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
            return;
        };
        let sender = Arc::clone(sender);
        tasks.spawn(async move {
            deliver(&sender, &channel, &message).await;
            drop(permit);
        });
    }
}

/// What is sent: a run's payload, or an operator's message.
#[derive(Debug)]
enum Message {
    Run(Payload),
    Text { subject: String, body: String },
}

impl Message {
    fn run(&self) -> Option<(&str, u64)> {
        match self {
            Self::Run(payload) => Some((payload.action.as_str(), payload.run_id)),
            Self::Text { .. } => None,
        }
    }
}

/// Sends `message` through `channel`: up to [`TRIES`] tries, then the outcome logged and audited.
async fn deliver(sender: &Sender, channel: &Channel, message: &Message) {
    let to = channel.to();
    let run = message.run();
    let mut tries = 0;
    let error = loop {
        tries += 1;
        let result = tokio::time::timeout(TRY_TIMEOUT, sender.try_once(channel, message))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", TRY_TIMEOUT.as_secs())));
        match result {
            Ok(answer) => {
                tracing::info!(channel = channel.name(), %to, run = run.map(|(_, id)| id), tries, %answer, "notification delivered");
                break None;
            }
            Err(error) if tries >= TRIES => break Some(error),
            Err(error) => {
                tracing::warn!(channel = channel.name(), %to, run = run.map(|(_, id)| id), tries, %error, "notification try failed; trying again");
                let wait = BACKOFF[(tries as usize - 1).min(BACKOFF.len() - 1)];
                sender.clock.sleep(wait).await;
            }
        }
    };
    let result = if error.is_some() {
        tracing::warn!(channel = channel.name(), %to, run = run.map(|(_, id)| id), tries, error = error.as_deref().unwrap_or_default(), "notification failed; giving up");
        Delivery::Failed
    } else {
        Delivery::Delivered
    };
    if let Some(hook) = &sender.hook {
        hook(channel.name(), result.as_str());
    }
    let entry = AuditEntry {
        time: sender.clock.now(),
        event: AuditEvent::Notification {
            channel: channel.name(),
            to: &to,
            action: run.map(|(action, _)| action),
            run_id: run.map(|(_, id)| id),
            result,
            tries,
            error: error.as_deref(),
        },
    };
    if let Err(error) = sender.audit.record(&entry).await {
        tracing::error!(%error, "a notification's audit line cannot be written");
    }
}

impl Sender {
    /// One try; `Ok` holds the server's answer, for the log.
    async fn try_once(&self, channel: &Channel, message: &Message) -> Result<String, String> {
        match channel {
            Channel::Email(to) => {
                let mailer = self.mailer.as_ref().ok_or("mail is not set up")?;
                let (subject, body) = match message {
                    Message::Run(payload) => (payload.subject(), payload.text()),
                    Message::Text { subject, body } => (subject.clone(), body.clone()),
                };
                let answer = mailer
                    .send(to, &subject, &body)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(answer.to_string())
            }
            Channel::Webhook(target) => {
                let body = match message {
                    Message::Run(payload) => serde_json::to_vec(payload).map_err(|e| e.to_string())?,
                    Message::Text { subject, body } => {
                        serde_json::to_vec(&serde_json::json!({ "subject": subject, "text": body }))
                            .map_err(|e| e.to_string())?
                    }
                };
                let webhooks = self.webhooks.as_ref().ok_or("no webhook is configured")?;
                let status = webhooks.post(target, &body).await.map_err(|e| e.to_string())?;
                Ok(status.to_string())
            }
        }
    }
}

/// The audit line of a notification dropped before it was tried.
async fn audit_drop(sender: &Sender, report: Dropped) {
    let entry = AuditEntry {
        time: sender.clock.now(),
        event: AuditEvent::Notification {
            channel: report.channel,
            to: &report.to,
            action: report.run.as_ref().map(|(action, _)| action.as_str()),
            run_id: report.run.as_ref().map(|(_, id)| *id),
            result: Delivery::Dropped,
            tries: 0,
            error: Some(report.reason),
        },
    };
    if let Err(error) = sender.audit.record(&entry).await {
        tracing::error!(%error, "a notification's audit line cannot be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::file::audit::AuditLog;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_full_queue_drops_at_once_and_tells_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("deploy.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("authrun.toml");
        std::fs::write(
            &file,
            "[script]\npath = \"deploy.sh\"\n[mail]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"a@example.com\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), &[]).unwrap();
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.log"), None).unwrap());
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        let hook: DeliveryHook = Arc::new(move |channel, result| {
            assert_eq!((channel, result), ("email", "dropped"));
            counter.fetch_add(1, Ordering::Relaxed);
        });
        // Without a runtime no worker drains the queue, so it fills.
        let notifier = Notifier::start(&config, Arc::new(SystemClock), audit, Some(hook)).unwrap();
        let to: Mailbox = "ops@example.com".parse().unwrap();
        for _ in 0..QUEUE {
            notifier
                .operator_mail(to.clone(), "Backup codes", "2 left")
                .unwrap();
        }
        assert_eq!(
            notifier.operator_mail(to.clone(), "Backup codes", "2 left"),
            Err(NotQueued::Full)
        );
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }
}
