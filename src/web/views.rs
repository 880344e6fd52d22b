//! How state and runs read on the page: words, exact times and durations a person understands.
//!
//! The page is rendered on the server with these texts, so it says everything without JavaScript; the
//! script in `static/` only refreshes them and turns exact times into "3 minutes ago".

use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::Config;
use crate::model::run::RunRecord;
use crate::model::time::format_time;
use crate::runs::gate::State;
use crate::runs::output::{self, Line, Stream};

/// The current state, as the page shows it.
#[derive(Debug, Clone)]
pub struct StateView {
    /// `idle`, `running` or `cooling_down`, for styling and scripts.
    pub kind: &'static str,
    /// A word or two: "Ready", "Running", "Cooling down".
    pub label: &'static str,
    /// The sentence after it, with exact times.
    pub detail: String,
    /// When the state ends (cooldown) or began (running), ISO-8601, empty when idle.
    pub time_iso: String,
    /// The running run's page.
    pub link: Option<String>,
}

impl StateView {
    pub fn new(state: State) -> Self {
        match state {
            State::Idle => Self {
                kind: state.as_str(),
                label: "Ready",
                detail: "Enter a code to start a run.".into(),
                time_iso: String::new(),
                link: None,
            },
            State::Running { id, since } => Self {
                kind: state.as_str(),
                label: "Running",
                detail: format!("Run #{id} has been going since {}.", clock_time(since)),
                time_iso: format_time(since),
                link: Some(format!("/runs/{id}")),
            },
            State::CoolingDown { until } => Self {
                kind: state.as_str(),
                label: "Cooling down",
                detail: format!("The next run is allowed at {}.", clock_time(until)),
                time_iso: format_time(until),
                link: None,
            },
        }
    }
}

/// One run in the list of recent runs.
#[derive(Debug, Clone)]
pub struct RunView {
    /// "#12", or "-" for entries written by the original, which had no ids.
    pub id: String,
    pub status: &'static str,
    pub kind: &'static str,
    pub started_iso: String,
    pub started_text: String,
    pub duration: String,
    /// The run's page, for runs with an id.
    pub link: Option<String>,
    pub finished_text: String,
    pub exit_code: String,
    /// Who cancelled it, or why it failed to start or was stopped.
    pub note: String,
    /// The action it ran, where the page says so (see [`RunView::with_action`]).
    pub action: Option<ActionLabel>,
}

/// An action as a run's page and the list of runs name it.
#[derive(Debug, Clone)]
pub struct ActionLabel {
    pub name: String,
    /// The action's page; none for an action no longer configured.
    pub link: Option<String>,
}

impl ActionLabel {
    /// The action `record` belongs to (entries without one belong to the first action).
    pub fn of(record: &RunRecord, config: &Config) -> Self {
        let first = config.first_action();
        let id = record.action.as_deref().unwrap_or(first.id.as_str());
        match config.action_index(id).map(|index| config.action(index)) {
            Some(action) => Self {
                name: action.name.clone(),
                link: Some(if config.actions.len() == 1 {
                    "/".to_string()
                } else {
                    format!("/actions/{id}")
                }),
            },
            None => Self {
                name: id.to_string(),
                link: None,
            },
        }
    }
}

impl RunView {
    pub fn new(record: &RunRecord) -> Self {
        Self {
            id: record.id.map_or_else(|| "-".into(), |id| format!("#{id}")),
            status: record.status.as_str(),
            kind: record.status.kind(),
            started_iso: format_time(record.time),
            started_text: date_time(record.time),
            duration: record.duration_ms.map(format_duration).unwrap_or_default(),
            link: record.id.map(|id| format!("/runs/{id}")),
            finished_text: record.finished.map(date_time).unwrap_or_default(),
            exit_code: record.exit_code.map(|code| code.to_string()).unwrap_or_default(),
            note: match (&record.cancelled_by, &record.error) {
                (Some(by), _) => format!("Cancelled by {by}."),
                (None, Some(error)) => error.clone(),
                (None, None) => String::new(),
            },
            action: None,
        }
    }

    /// The view naming the run's action.
    pub fn with_action(mut self, record: &RunRecord, config: &Config) -> Self {
        self.action = Some(ActionLabel::of(record, config));
        self
    }
}

/// One line of output, as the run page shows it: colours stripped, stderr marked.
#[derive(Debug, Clone)]
pub struct OutputLineView {
    pub number: u64,
    pub stderr: bool,
    pub text: String,
}

impl OutputLineView {
    pub fn new(line: &Line) -> Self {
        Self {
            number: line.number,
            stderr: line.stream == Stream::Stderr,
            text: output::strip_ansi(&line.text),
        }
    }
}

/// "19:43:36 UTC"
pub fn clock_time(time: OffsetDateTime) -> String {
    let format = format_description!("[hour]:[minute]:[second] UTC");
    time.format(&format).unwrap_or_else(|_| format_time(time))
}

/// "2026-11-25 19:43:36 UTC"
pub fn date_time(time: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time.format(&format).unwrap_or_else(|_| format_time(time))
}

/// "850 ms", "12 s", "1 min 12 s", "2 h 5 min".
pub fn format_duration(millis: u64) -> String {
    let seconds = millis / 1000;
    match seconds {
        0 => format!("{millis} ms"),
        1..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(850), "850 ms");
        assert_eq!(format_duration(12_400), "12 s");
        assert_eq!(format_duration(72_000), "1 min 12 s");
        assert_eq!(format_duration(7_500_000), "2 h 5 min");
    }
}
