//! Ships the output of the runs this instance runs to a store other instances read
//! ([`RunOutputStore`]), so a viewer on any instance sees it live and afterwards.
//!
//! It follows each run's log file (the file stays the record on this instance) and appends what the
//! file gained, in complete lines, every [`BATCH_INTERVAL`], at most [`MAX_BATCH`] bytes a batch; the
//! run's last batch is marked as such once the run has ended. A batch that cannot be written is tried
//! again at the next interval; the script never waits for the store. When a run's output is complete,
//! the output of runs the history no longer holds is forgotten.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::model::run::RunRecord;
use crate::runs::observer::RunObserver;
use crate::runs::owner::Owner;
use crate::runs::runner::log_name;
use crate::store::run_output::{OutputBatch, RunOutputStore};

/// How often a running run's new output is sent: what a viewer on another instance lags behind.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(250);
/// The most bytes sent in one batch (a run printing faster is sent in several each interval).
const MAX_BATCH: usize = 1024 * 1024;

/// Follows the log of every run this instance starts.
#[derive(Debug)]
pub struct OutputShipper {
    store: Arc<dyn RunOutputStore>,
    /// Each action's log directory, by the action's place in the configuration.
    log_dirs: Vec<PathBuf>,
    /// The runs the history keeps (`[history] retention`): the output of older ones is dropped.
    retention: u64,
    /// The runs being followed, and the flag that tells each one's follower its run ended.
    running: Mutex<HashMap<u64, watch::Sender<bool>>>,
}

impl OutputShipper {
    pub fn new(store: Arc<dyn RunOutputStore>, log_dirs: Vec<PathBuf>, retention: usize) -> Self {
        Self {
            store,
            log_dirs,
            retention: u64::try_from(retention).unwrap_or(u64::MAX),
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl RunObserver for OutputShipper {
    fn started(&self, owner: &Owner, record: &RunRecord) {
        let (Some(id), Some(dir)) = (record.id, self.log_dirs.get(owner.index)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (ended, heard) = watch::channel(false);
        self.running.lock().insert(id, ended);
        let store = Arc::clone(&self.store);
        let path = dir.join(log_name(id));
        // Ids only grow, one per run: with this run, the history holds at most the `retention` ids
        // up to this one.
        let forget_before = (id + 1).saturating_sub(self.retention);
        runtime.spawn(async move {
            follow(Arc::clone(&store), id, path, heard).await;
            if let Err(error) = store.prune(forget_before).await {
                tracing::warn!(%error, "the output of old runs could not be forgotten");
            }
        });
    }

    fn finished(&self, _owner: &Owner, record: &RunRecord) {
        if let Some(ended) = record.id.and_then(|id| self.running.lock().remove(&id)) {
            ended.send_replace(true);
        }
    }
}

/// Sends run `id`'s log as it grows, until the run has ended and everything was sent.
async fn follow(store: Arc<dyn RunOutputStore>, id: u64, path: PathBuf, mut ended: watch::Receiver<bool>) {
    let mut offset = 0u64;
    let mut next_line = 1u64;
    // The flag's sender is gone without a word: the shipper itself went; end as if the run had.
    let mut unheard = false;
    loop {
        // Read after looking at the flag: what the run wrote before it ended is in this read.
        let over = unheard || *ended.borrow_and_update();
        let chunk = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_lines_from(&path, offset))
                .await
                .unwrap_or_else(|_| Ok(Vec::new()))
        };
        let raw = match chunk {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(run = id, %error, "the run's log could not be read to share it");
                Vec::new()
            }
        };
        let full = raw.len() >= MAX_BATCH;
        let last = over && !full;
        let mut more = false;
        if !raw.is_empty() || last {
            let lines = memchr::memchr_iter(b'\n', &raw).count() as u64;
            let batch = OutputBatch {
                first_line: next_line,
                raw,
                last,
            };
            match store.append(id, &batch).await {
                Ok(()) => {
                    offset += batch.raw.len() as u64;
                    next_line += lines;
                    if last {
                        return;
                    }
                    more = full;
                }
                Err(error) => {
                    tracing::warn!(run = id, %error, "the run's output could not be shared; trying again")
                }
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(BATCH_INTERVAL) => {}
            changed = ended.changed(), if !over => unheard = changed.is_err(),
        }
    }
}

/// The complete lines of `path` from byte `offset` on, at most [`MAX_BATCH`] bytes (a longer single
/// line cannot be: the log splits lines at 4 KiB).
fn read_lines_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut raw = Vec::new();
    file.take(MAX_BATCH as u64).read_to_end(&mut raw)?;
    let complete = memchr::memrchr(b'\n', &raw).map_or(0, |end| end + 1);
    raw.truncate(complete);
    Ok(raw)
}
