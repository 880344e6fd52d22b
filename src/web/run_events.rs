//! The events of a run's `/runs/{id}/events` stream, built alike whether the run's output is read here
//! or from another instance's shared batches.

use axum::response::sse::Event;

use crate::runs::output::Line;
use crate::web::ansi;
use crate::web::state::AppState;

/// A line for a live viewer: `text` as plain text, `segments` with the styles the run page shows.
pub fn line_event(line: &Line) -> Event {
    let segments = ansi::render(&line.text);
    let text: String = segments.iter().map(|segment| segment.text.as_str()).collect();
    let data = serde_json::json!({ "stream": line.stream, "text": text, "segments": segments });
    Event::default()
        .event("line")
        .id(line.number.to_string())
        .data(data.to_string())
}

/// The `end` event: the run's final record.
pub fn end_event(state: &AppState, id: u64) -> Option<Event> {
    let record = state.runner.history().record(id)?;
    let data = serde_json::to_string(&record).unwrap_or_default();
    Some(Event::default().event("end").data(data))
}
