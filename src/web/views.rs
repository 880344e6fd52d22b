//! How state and runs read on the page: words, exact times and durations a person understands.
//!
//! The page is rendered on the server with these texts, so it says everything without JavaScript. Times
//! are written in UTC inside `<time datetime>` elements; the script in `static/` shows them in the
//! browser's own time zone (keeping UTC in the `title`), counts down and refreshes them.

use time::OffsetDateTime;
use time::macros::format_description;

use crate::auth::regulation::Blocked;
use crate::config::Config;
use crate::error::{AppError, minutes};
use crate::model::run::{RunRecord, RunStatus};
use crate::model::time::format_time;
use crate::runs::gate::State;
use crate::runs::output::{Line, Stream};
use crate::web::ansi::{self, Segment};
use crate::web::session::{Flash, FlashKind};

/// The version shown in every page's footer.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A time as the page writes it: UTC text the script turns into local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeView {
    /// RFC 3339 in UTC, to the second, for `datetime`.
    pub iso: String,
    /// "2026-11-25 19:43:36 UTC", or "19:43:36 UTC" for a time of day.
    pub text: String,
    /// `time` for a time of day, `datetime` for a date and time: how the script shows it.
    pub format: &'static str,
}

impl TimeView {
    /// A time of day ("19:43:36 UTC"): for what happens today, in the state and messages.
    pub fn clock(time: OffsetDateTime) -> Self {
        Self {
            iso: iso_to_second(time),
            text: clock_time(time),
            format: "time",
        }
    }

    /// A date and time ("2026-11-25 19:43:36 UTC"): for runs.
    pub fn date(time: OffsetDateTime) -> Self {
        Self {
            iso: iso_to_second(time),
            text: date_time(time),
            format: "datetime",
        }
    }
}

/// The current state, as the page shows it.
#[derive(Debug, Clone)]
pub struct StateView {
    /// `idle`, `running`, `cooling_down`, `banned` or `paused`, for styling and scripts.
    pub kind: &'static str,
    /// A word or two: "Ready", "Running", "Cooling down", "Blocked", "Paused".
    pub label: &'static str,
    /// The sentence after it, up to its time.
    pub detail: String,
    /// The time the sentence ends with: when the state began (running) or ends (the others).
    pub time: Option<TimeView>,
    /// "(in 3 min)": how long until the state ends, counted down by the script.
    pub countdown: String,
    /// The running run's page.
    pub link: Option<String>,
}

impl StateView {
    /// The state a client sees at `now`: its block, if it has one, comes first, as the server would
    /// answer with it before anything else.
    pub fn new(state: State, blocked: Option<Blocked>, now: OffsetDateTime) -> Self {
        match (blocked, state) {
            (Some(Blocked::Banned { until }), _) => Self {
                kind: "banned",
                label: "Blocked",
                detail: "Too many wrong codes from your address: you can try again at".into(),
                countdown: countdown(until, now),
                time: Some(TimeView::clock(until)),
                link: None,
            },
            (Some(Blocked::Paused { until }), _) => Self {
                kind: "paused",
                label: "Paused",
                detail: "Too many wrong codes: code checking is paused for everyone until".into(),
                countdown: countdown(until, now),
                time: Some(TimeView::clock(until)),
                link: None,
            },
            (None, State::Idle) => Self {
                kind: state.as_str(),
                label: "Ready",
                detail: "Enter a code to start a run.".into(),
                time: None,
                countdown: String::new(),
                link: None,
            },
            (None, State::Running { id, since }) => Self {
                kind: state.as_str(),
                label: "Running",
                detail: format!("Run #{id} has been going since"),
                time: Some(TimeView::clock(since)),
                countdown: String::new(),
                link: Some(format!("/runs/{id}")),
            },
            (None, State::CoolingDown { until }) => Self {
                kind: state.as_str(),
                label: "Cooling down",
                detail: "The next run is allowed at".into(),
                countdown: countdown(until, now),
                time: Some(TimeView::clock(until)),
                link: None,
            },
        }
    }

    /// Whether the form is of no use now (the server would refuse it); the page says why beside the
    /// button, and the script disables it.
    pub fn blocks_form(&self) -> bool {
        self.kind != "idle"
    }
}

/// "(in 3 min)", "(in 20 s)": what is left until `until`, never "just now" for a time still to come.
fn countdown(until: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (until - now).whole_seconds().max(0).unsigned_abs();
    format!("(in {})", short_span(seconds))
}

/// "20 s", "3 min", "2 h 5 min": a wait, rounded up to the unit shown.
pub fn short_span(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{} s", seconds.max(1)),
        60..5400 => format!("{} min", seconds.div_ceil(60)),
        _ => {
            let minutes = seconds.div_ceil(60);
            format!("{} h {} min", minutes / 60, minutes % 60)
        }
    }
}

/// A flash message ready for the page: the text, with its time (if it names one) where it belongs.
#[derive(Debug, Clone)]
pub struct FlashView {
    pub kind: &'static str,
    pub before: String,
    pub time: Option<TimeView>,
    pub after: String,
}

/// Marks the place of a time in a flash message: `{at:RFC3339}`. Only [`refusal_flash`] writes it.
const TIME_MARK: &str = "{at:";

impl FlashView {
    pub fn new(flash: &Flash) -> Self {
        let kind = flash.kind.as_str();
        let marked = flash.message.split_once(TIME_MARK).and_then(|(before, rest)| {
            let (iso, after) = rest.split_once('}')?;
            let time = crate::model::time::parse_lenient(iso)?;
            Some((before.to_string(), TimeView::clock(time), after.to_string()))
        });
        match marked {
            Some((before, time, after)) => Self {
                kind,
                before,
                time: Some(time),
                after,
            },
            None => Self {
                kind,
                before: flash.message.clone(),
                time: None,
                after: String::new(),
            },
        }
    }

    /// The message as text, with its time in UTC.
    pub fn text(&self) -> String {
        let time = self.time.as_ref().map_or("", |time| time.text.as_str());
        format!("{}{time}{}", self.before, self.after)
    }
}

/// A refusal of a browser's code, in words for a person: which state, until when (in local time, by the
/// page's script), and after a wrong code how many tries are left before a ban.
pub fn refusal_flash(error: &AppError, tries_left: Option<usize>) -> Flash {
    let at = |time: OffsetDateTime| format!("{TIME_MARK}{}}}", iso_to_second(time));
    let wait = |seconds: &u64| short_span(*seconds);
    let message = match error {
        AppError::Running { since } => format!(
            "Not started: a run has been going since {}. A new one can start when it has ended and \
             the cooldown is over.",
            at(*since)
        ),
        AppError::CoolingDown { until, retry_after } => format!(
            "Cooling down: the next run is allowed at {} (in {}).",
            at(*until),
            wait(retry_after)
        ),
        AppError::Banned { until, retry_after } => format!(
            "Too many wrong codes from your address: you can try again at {} (in {}).",
            at(*until),
            minutes(*retry_after)
        ),
        AppError::Paused { until, retry_after } => format!(
            "Too many wrong codes: code checking is paused for everyone until {} (in {}).",
            at(*until),
            minutes(*retry_after)
        ),
        AppError::WrongCode | AppError::ReplayedCode => {
            let mut message = if *error == AppError::WrongCode {
                "That code is wrong or was already used. Each code works once: enter the code your app \
                 shows now, and check that your phone's clock is right."
                    .to_string()
            } else {
                "That code was already used: each code works once. Enter the next code your app shows."
                    .to_string()
            };
            match tries_left {
                None => {}
                Some(0) => message.push_str(" That was the last try: your address is blocked for a while."),
                Some(1) => message.push_str(" 1 more wrong code blocks your address for a while."),
                Some(n) => {
                    message.push_str(&format!(" {n} more wrong codes block your address for a while."))
                }
            }
            message
        }
        other => other.to_string(),
    };
    Flash {
        kind: FlashKind::Error,
        message,
    }
}

/// One run in a list of runs, or the run page's summary.
#[derive(Debug, Clone)]
pub struct RunView {
    /// "#12", or "-" for entries written by the original, which had no ids.
    pub id: String,
    pub status: &'static str,
    pub kind: &'static str,
    pub started: TimeView,
    pub duration: String,
    /// The run's page, for runs with an id.
    pub link: Option<String>,
    pub finished: Option<TimeView>,
    /// "0", "1", or how it ended without one: "none (ended by signal 15, SIGTERM)".
    pub exit_code: String,
    /// Who cancelled it, and why it failed to start or was stopped.
    pub note: String,
    /// Whether it is still going.
    pub running: bool,
    /// The action it ran, where the page says so (see [`RunView::with_action`]).
    pub action: Option<ActionLabel>,
    /// The operator who started it.
    pub by: Option<String>,
}

/// Who the page is for, in operators mode: the form asks for a name (and password) unless the session
/// is signed in.
#[derive(Debug, Clone, Default)]
pub struct WhoView {
    pub operators: bool,
    pub passwords: bool,
    pub signed_in: Option<String>,
    pub admin: bool,
    /// The form offers "Email me a code".
    pub email_codes: bool,
}

/// An action as a run's page and the list of runs name it.
#[derive(Debug, Clone)]
pub struct ActionLabel {
    pub name: String,
    /// The action's page, when there are several; none for an action no longer configured.
    pub link: Option<String>,
}

impl ActionLabel {
    /// The action `record` belongs to (entries without one belong to the first action).
    pub fn of(record: &RunRecord, config: &Config) -> Self {
        let first = config.first_action();
        let id = record.action.as_deref().unwrap_or(first.id.as_str());
        match config.action_index(id).map(|index| config.action(index)) {
            // With one action its page is `/`, linked from every page already.
            Some(action) => Self {
                name: action.name.clone(),
                link: (config.actions.len() > 1).then(|| format!("/actions/{id}")),
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
        let signal = record.signal.map(signal_text);
        let error = record
            .error
            .as_ref()
            .filter(|error| signal.is_none() || !error.starts_with("ended by signal"));
        let note = [
            record
                .cancelled_by
                .as_ref()
                .map(|by| format!("Cancelled by {by}.")),
            error.cloned(),
        ];
        Self {
            id: record.id.map_or_else(|| "-".into(), |id| format!("#{id}")),
            status: record.status.as_str(),
            kind: record.status.kind(),
            started: TimeView::date(record.time),
            duration: record.duration_ms.map(format_duration).unwrap_or_default(),
            link: record.id.map(|id| format!("/runs/{id}")),
            finished: record.finished.map(TimeView::date),
            exit_code: match (record.exit_code, signal) {
                (Some(code), _) => code.to_string(),
                (None, Some(signal)) => format!("none (ended by {signal})"),
                (None, None) => String::new(),
            },
            note: note.into_iter().flatten().collect::<Vec<_>>().join(" "),
            running: record.status == RunStatus::Deploying,
            action: None,
            by: record.by.name().map(str::to_string),
        }
    }

    /// The view naming the run's action.
    pub fn with_action(mut self, record: &RunRecord, config: &Config) -> Self {
        self.action = Some(ActionLabel::of(record, config));
        self
    }
}

/// "signal 15, SIGTERM"
pub fn signal_text(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(name) => format!("signal {signal}, {}", name.as_str()),
        Err(_) => format!("signal {signal}"),
    }
}

/// One line of output, as the run page shows it: colours and bold as classes, stderr marked.
#[derive(Debug, Clone)]
pub struct OutputLineView {
    pub number: u64,
    pub stderr: bool,
    pub segments: Vec<Segment>,
}

impl OutputLineView {
    pub fn new(line: &Line) -> Self {
        Self {
            number: line.number,
            stderr: line.stream == Stream::Stderr,
            segments: ansi::render(&line.text),
        }
    }
}

/// RFC 3339 in UTC, to the second.
fn iso_to_second(time: OffsetDateTime) -> String {
    format_time(time.replace_nanosecond(0).unwrap_or(time))
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
    use time::macros::datetime;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(850), "850 ms");
        assert_eq!(format_duration(12_400), "12 s");
        assert_eq!(format_duration(72_000), "1 min 12 s");
        assert_eq!(format_duration(7_500_000), "2 h 5 min");
    }

    #[test]
    fn a_refusal_names_its_state_and_time_without_nanoseconds() {
        let until = datetime!(2026-12-01 21:35:01.462067285 UTC);
        let error = AppError::CoolingDown {
            until,
            retry_after: 174,
        };
        let flash = FlashView::new(&refusal_flash(&error, None));
        assert_eq!(
            flash.text(),
            "Cooling down: the next run is allowed at 21:35:01 UTC (in 3 min)."
        );
        assert_eq!(
            flash.time.map(|time| time.iso).as_deref(),
            Some("2026-12-01T21:35:01Z")
        );
        assert!(!error.to_string().contains(".462"), "{error}");
    }

    #[test]
    fn a_countdown_never_says_just_now_before_the_time() {
        let now = datetime!(2026-12-01 21:35:00 UTC);
        assert_eq!(
            countdown(now + time::Duration::milliseconds(300), now),
            "(in 1 s)"
        );
        assert_eq!(countdown(now + time::Duration::seconds(174), now), "(in 3 min)");
    }
}
