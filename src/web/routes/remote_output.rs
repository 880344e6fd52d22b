//! The output of a run another instance runs (`[store] kind = "postgres"`): read from the batches that
//! instance shares ([`RunOutputStore`]), live and afterwards, in the shapes `/runs/{id}/events` and
//! `/runs/{id}/log` give a run of this instance.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::sse::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::model::run::RunStatus;
use crate::runs::output::{self, parse_line};
use crate::runs::shipper::BATCH_INTERVAL;
use crate::store::run_output::{OutputBatch, RunOutputStore};
use crate::web::ansi;
use crate::web::run_events::{end_event, line_event};
use crate::web::state::AppState;

/// Batches read at once.
const READ_BATCHES: u32 = 64;
/// Reads that found nothing new after the run ended, before the output is taken as complete without
/// its last batch (the instance running it died before sending it).
const ENDED_IDLE_READS: u32 = 20;

/// Whether run `id`'s output is elsewhere: this instance neither runs it nor has its log.
pub fn is_remote(state: &AppState, id: u64) -> Option<Arc<dyn RunOutputStore>> {
    let store = state.run_output.as_ref()?;
    let local = state.runner.live_output(id).is_some() || state.runner.log_path(id).exists();
    (!local).then(|| Arc::clone(store))
}

/// Each line of `batch` after line `after`, with its number.
fn lines_after(batch: &OutputBatch, after: u64) -> impl Iterator<Item = (u64, &[u8])> {
    batch
        .raw
        .split_inclusive(|byte| *byte == b'\n')
        .enumerate()
        .map(move |(n, raw)| (batch.first_line + n as u64, raw))
        .filter(move |(number, _)| *number > after)
}

/// Sends a viewer the lines after `after` as they are shared, every [`BATCH_INTERVAL`], then the end.
pub async fn feed(
    state: AppState,
    store: Arc<dyn RunOutputStore>,
    id: u64,
    mut last: u64,
    sender: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut idle = 0;
    loop {
        // Looked at before reading: output sent before the run ended is in this read.
        let ended = state
            .runner
            .history()
            .record(id)
            .is_none_or(|record| record.status != RunStatus::Deploying);
        let batches = store.read(id, last, READ_BATCHES).await.unwrap_or_else(|error| {
            tracing::warn!(run = id, %error, "a run's shared output could not be read");
            Vec::new()
        });
        let before = last;
        let mut complete = false;
        for batch in &batches {
            for (number, raw) in lines_after(batch, last) {
                last = number;
                if sender
                    .send(Ok(line_event(&parse_line(number, raw))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            complete |= batch.last;
        }
        if complete {
            break;
        }
        idle = if ended && last == before { idle + 1 } else { 0 };
        if idle >= ENDED_IDLE_READS || sender.is_closed() {
            break;
        }
        if batches.len() < READ_BATCHES as usize {
            tokio::time::sleep(BATCH_INTERVAL).await;
        }
    }
    if let Some(event) = end_event(&state, id) {
        let _ = sender.send(Ok(event)).await;
    }
}

/// The whole log as shared so far, as plain text (escape sequences kept when `keep`).
pub fn log(store: Arc<dyn RunOutputStore>, id: u64, keep: bool) -> Body {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut last = 0;
        let mut stripper = ansi::Stripper::default();
        loop {
            let batches = match store.read(id, last, READ_BATCHES).await {
                Ok(batches) => batches,
                Err(error) => {
                    let _ = sender.send(Err(std::io::Error::other(error.to_string()))).await;
                    return;
                }
            };
            let mut chunk = Vec::new();
            for batch in &batches {
                for (number, raw) in lines_after(batch, last) {
                    last = number;
                    let text = output::untagged(raw.strip_suffix(b"\n").unwrap_or(raw));
                    if keep {
                        chunk.extend_from_slice(text);
                    } else {
                        stripper.strip_into(text, &mut chunk);
                    }
                    chunk.push(b'\n');
                }
            }
            if !chunk.is_empty() && sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if batches.len() < READ_BATCHES as usize {
                return;
            }
        }
    });
    Body::from_stream(ReceiverStream::new(receiver))
}
