//! A run's output kept where every instance sharing the store can read it: the instance running the
//! run appends it in batches, the others show it live and afterwards.

use std::fmt;

use super::StoreError;

/// A batch of a run's output, as the log file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBatch {
    /// The number of its first line (lines count from 1).
    pub first_line: u64,
    /// Complete lines: a stream tag, a space, the text and a newline each.
    pub raw: Vec<u8>,
    /// The run's output ends with this batch.
    pub last: bool,
}

#[async_trait::async_trait]
pub trait RunOutputStore: Send + Sync + fmt::Debug {
    /// Adds `batch` to run `run`'s output.
    async fn append(&self, run: u64, batch: &OutputBatch) -> Result<(), StoreError>;

    /// The batches of run `run` holding lines after `after`, oldest first; at most `limit`.
    async fn read(&self, run: u64, after: u64, limit: u32) -> Result<Vec<OutputBatch>, StoreError>;

    /// Forgets the output of every run before `run`.
    async fn prune(&self, run: u64) -> Result<(), StoreError>;
}
