//! What a notification says about a run: the same fields as JSON for webhooks and as text for mail.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::model::run::RunRecord;
use crate::model::time::format_time;
use crate::runs::output;
use crate::runs::runner::Owner;

/// The most of a log read for its last lines, so a run that printed gigabytes costs no more to tell of.
const TAIL_BYTES: u64 = 64 * 1024;
/// A line of output longer than this is cut (in characters).
const LINE_CHARS: usize = 500;

/// One run's start or end, as webhooks receive it (JSON) and mail shows it (text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    /// The action's id.
    pub action: String,
    pub action_name: String,
    pub run_id: u64,
    /// The history's text, "Deploy failed".
    pub status: &'static str,
    /// The short word, "failed" (`RunStatus::kind`).
    pub kind: &'static str,
    pub exit_code: Option<i32>,
    /// Who started the run, when the history knows.
    pub by: Option<String>,
    pub started: String,
    pub finished: Option<String>,
    pub duration_ms: Option<u64>,
    /// The run's page, when `[server] public_url` is set.
    pub url: Option<String>,
    /// The last lines of output, escape sequences removed.
    pub output: Vec<String>,
}

impl Payload {
    /// The payload of `record`, a run of `owner`, without its output. `public_url` is the origin users
    /// open (`https://deploy.example.com`).
    pub fn new(owner: &Owner, record: &RunRecord, public_url: Option<&str>) -> Self {
        let run_id = record.id.unwrap_or_default();
        Self {
            action: owner.id.to_string(),
            action_name: owner.name.clone(),
            run_id,
            status: record.status.as_str(),
            kind: record.status.kind(),
            exit_code: record.exit_code,
            by: record.by.name().map(str::to_string),
            started: format_time(record.time),
            finished: record.finished.map(format_time),
            duration_ms: record.duration_ms,
            url: public_url.map(|origin| format!("{}/runs/{run_id}", origin.trim_end_matches('/'))),
            output: Vec::new(),
        }
    }

    /// The mail's subject: "[authrun] Deploy failed: deploy run #12".
    pub fn subject(&self) -> String {
        format!("[authrun] {}: {} run #{}", self.status, self.action, self.run_id)
    }

    /// The mail's text: the fields one a line, then the output.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let none = "-".to_string();
        let _ = writeln!(
            text,
            "{} (run #{} of {})\n",
            self.status, self.run_id, self.action_name
        );
        let _ = writeln!(text, "Action:     {} ({})", self.action_name, self.action);
        let _ = writeln!(text, "Run:        #{}", self.run_id);
        let _ = writeln!(text, "Status:     {} ({})", self.status, self.kind);
        let exit = self
            .exit_code
            .map_or_else(|| none.clone(), |code| code.to_string());
        let _ = writeln!(text, "Exit code:  {exit}");
        let _ = writeln!(text, "By:         {}", self.by.as_ref().unwrap_or(&none));
        let _ = writeln!(text, "Started:    {}", self.started);
        let _ = writeln!(text, "Finished:   {}", self.finished.as_ref().unwrap_or(&none));
        let duration = self
            .duration_ms
            .map_or_else(|| none.clone(), |ms| format!("{}.{:03} s", ms / 1000, ms % 1000));
        let _ = writeln!(text, "Duration:   {duration}");
        let _ = writeln!(text, "Page:       {}", self.url.as_ref().unwrap_or(&none));
        if !self.output.is_empty() {
            let _ = writeln!(text, "\nLast {} lines of output:\n", self.output.len());
            for line in &self.output {
                let _ = writeln!(text, "    {line}");
            }
        }
        text
    }

    /// This payload with only the last `lines` of its output.
    pub fn with_last_lines(&self, lines: usize) -> Self {
        let mut payload = self.clone();
        let keep = payload.output.len().saturating_sub(lines);
        payload.output.drain(..keep);
        payload
    }
}

/// The last `lines` lines of the log at `path`, as plain text: escape sequences removed, a line
/// overwritten with carriage returns shown as it ended. Reads at most 64 KiB; blocks (call it on the
/// blocking pool).
pub fn output_tail(path: &Path, lines: usize) -> std::io::Result<Vec<String>> {
    if lines == 0 {
        return Ok(Vec::new());
    }
    let (tail, _) = output::tail(path, lines, TAIL_BYTES)?;
    Ok(tail
        .into_iter()
        .map(|line| {
            let last = line
                .text
                .trim_end_matches('\r')
                .rsplit('\r')
                .next()
                .unwrap_or_default();
            strip_ansi_escapes::strip_str(last)
                .chars()
                .take(LINE_CHARS)
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::action::ActionId;
    use crate::model::run::RunStatus;
    use time::macros::datetime;

    fn owner() -> Owner {
        Owner {
            index: 0,
            id: ActionId::default_id(),
            name: "Deploy production".into(),
            first: ActionId::default_id(),
        }
    }

    #[test]
    fn a_failed_run_reads_the_same_as_json_and_as_text() {
        let mut record = RunRecord::started(12, datetime!(2026-11-25 12:00:00 UTC), 1);
        record.finish(RunStatus::Failed, datetime!(2026-11-25 12:00:03.5 UTC), Some(2));
        let mut payload = Payload::new(&owner(), &record, Some("https://deploy.example.com/"));
        payload.output = vec!["one".into(), "two".into()];
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["action"], "deploy");
        assert_eq!(json["status"], "Deploy failed");
        assert_eq!(json["kind"], "failed");
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["by"], serde_json::Value::Null);
        assert_eq!(json["duration_ms"], 3500);
        assert_eq!(json["url"], "https://deploy.example.com/runs/12");
        assert_eq!(payload.subject(), "[authrun] Deploy failed: deploy run #12");
        let text = payload.text();
        assert!(text.contains("Exit code:  2\n"), "{text}");
        assert!(text.contains("Duration:   3.500 s\n"), "{text}");
        assert!(
            text.contains("Last 2 lines of output:\n\n    one\n    two\n"),
            "{text}"
        );
        assert_eq!(payload.with_last_lines(1).output, ["two"]);
        assert!(payload.with_last_lines(0).text().contains("Page:"));
    }

    #[test]
    fn the_tail_of_a_log_is_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, "o first\no \x1b[31mred\x1b[0m\ne 10%\r50%\r100%\n").unwrap();
        assert_eq!(output_tail(&path, 2).unwrap(), ["red", "100%"]);
        assert!(output_tail(&path, 0).unwrap().is_empty());
        assert!(output_tail(&dir.path().join("none.log"), 5).unwrap().is_empty());
    }
}
