//! The runs: a paged list, a page per run with its output, the whole log, a live stream of the output,
//! and cancelling.
//!
//! The list and each run's summary are public, as the status endpoint is; output and cancelling need a
//! verified session or the API token (see `access`).
//!
//! Log files are read on the blocking pool (`spawn_blocking`), never on a worker thread: a log can be
//! large and a slow disk would stall every request on that worker. `?wait=` waits on the clock.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tower_sessions::Session;

use crate::error::AppError;
use crate::model::run::RunRecord;
use crate::model::time::later;
use crate::runs::output::{self, Line};
use crate::web::access::{self, Grant};
use crate::web::action;
use crate::web::ansi;
use crate::web::form::CancelForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::negotiate::{wants_html, wants_json};
use crate::web::query::Query;
use crate::web::routes::assets::asset_version;
use crate::web::routes::remote_output;
use crate::web::routes::run::{VerifyQuery, wait_limit, wait_outcome, wait_until_ended};
use crate::web::run_events::{end_event, line_event};
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{ActionLabel, FlashView, OutputLineView, RunView, TimeView, format_duration};

/// Runs per page of the list.
const PAGE_SIZE: usize = 50;
/// Lines of output a run page shows; the whole log is a link away.
const PAGE_LINES: usize = 500;
/// Bytes read from the end of the log for the run page.
const PAGE_TAIL_BYTES: u64 = 256 * 1024;
/// Events queued for one live viewer before it counts as stalled and is dropped.
const VIEWER_QUEUE: usize = 256;

#[derive(Template, WebTemplate)]
#[template(path = "runs.html")]
pub struct RunsPage {
    runs: Vec<RunView>,
    page: usize,
    /// The pages before and after, as links (with `action=` when the list is one action's).
    newer: Option<String>,
    older: Option<String>,
    /// The action whose runs are listed; `None`: every action's.
    action: Option<ActionLabel>,
    /// Several actions are configured: each run says which it ran.
    several: bool,
    asset_version: &'static str,
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<usize>,
    /// Only this action's runs.
    action: Option<String>,
}

/// `GET /runs`: newest first, [`PAGE_SIZE`] a page; `?action=<id>`: that action's runs only.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<RunsPage, AppError> {
    let only = query
        .action
        .as_deref()
        .map(|id| action::selected(&state, Some(id)))
        .transpose()?;
    let owner = only.map(|index| state.runner.action(index).owner().clone());
    let history = state.runner.history().snapshot();
    let page = query.page.unwrap_or(1).max(1);
    let skip = (page - 1).saturating_mul(PAGE_SIZE);
    let mut listed = history
        .iter()
        .rev()
        .filter(|record| owner.as_ref().is_none_or(|owner| owner.owns(record)))
        .skip(skip);
    let runs = listed
        .by_ref()
        .take(PAGE_SIZE)
        .map(|record| RunView::new(record).with_action(record, &state.config))
        .collect();
    let more = listed.next().is_some();
    let link = |page: usize| match &owner {
        Some(owner) => format!("/runs?action={}&page={page}", owner.id),
        None => format!("/runs?page={page}"),
    };
    Ok(RunsPage {
        runs,
        page,
        newer: (page > 1).then(|| link(page - 1)),
        older: more.then(|| link(page + 1)),
        action: owner.map(|owner| ActionLabel {
            name: owner.name,
            link: Some(format!("/actions/{}", owner.id)),
        }),
        several: state.config.actions.len() > 1,
        asset_version: asset_version(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
pub struct RunPage {
    number: u64,
    run: RunView,
    running: bool,
    /// How long the run has been going ("12 s"), while it goes; the script counts on from
    /// `elapsed_ms`.
    elapsed: String,
    elapsed_ms: u64,
    flash: Option<FlashView>,
    csrf: String,
    /// `None` when the viewer may not see output.
    output: Option<Vec<OutputLineView>>,
    /// Lines before the ones shown.
    hidden_lines: u64,
    last_line: u64,
    verified_until: Option<TimeView>,
    can_cancel: bool,
    asset_version: &'static str,
}

/// `GET /runs/{id}`: the run's page, or its record as JSON (`Accept: application/json`), optionally
/// after waiting for it to end.
pub async fn show(
    State(state): State<AppState>,
    RunId(id): RunId,
    Query(query): Query<VerifyQuery>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // `?wait=` counts from here.
    let asked = state.clock.now();
    let record = find(&state, id)?;
    if wants_json(&headers) {
        let Some(wait) = query.wait() else {
            return Ok(Json(record).into_response());
        };
        let deadline = later(asked, wait_limit(&state, wait));
        let ended = wait_until_ended(&state, id, deadline).await;
        // The record's fields as before, with the status, `success` and message of `/verify?wait=`.
        let record = find(&state, id)?;
        let (status, success, message) = wait_outcome(id, Some(&record), ended);
        let mut body = serde_json::to_value(&record).unwrap_or_default();
        body["message"] = message.into();
        body["success"] = success.into();
        return Ok((status, Json(body)).into_response());
    }
    let session = BrowserSession(session);
    let grant = access::may_read(&state, &session, &headers).await.ok();
    let (output, total) = match grant {
        Some(_) => {
            let (lines, total) = tail(state.runner.log_path(id)).await;
            (
                Some(lines.iter().map(OutputLineView::new).collect::<Vec<_>>()),
                total,
            )
        }
        None => (None, 0),
    };
    let shown = output.as_ref().map_or(0, Vec::len) as u64;
    let running = state.runner.live_output(id).is_some_and(|live| !live.has_ended());
    let (csrf, csrf_cookie) = csrf::for_page(&headers, state.config.server.cookies_secure());
    let mut flash = session.take_flash().await;
    if let Some(flash) = flash
        .as_mut()
        .filter(|flash| !running && flash.message == cancelling(id))
    {
        // The cancel took effect before the page came back: say so rather than "Cancelling".
        flash.message = format!("Run #{id} has ended: {}.", record.status);
    }
    let elapsed = (state.clock.now() - record.time).whole_milliseconds().max(0);
    let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
    let page = RunPage {
        number: id,
        run: RunView::new(&record).with_action(&record, &state.config),
        running,
        elapsed: format_duration(elapsed),
        elapsed_ms: elapsed,
        flash: flash.as_ref().map(FlashView::new),
        csrf,
        output,
        hidden_lines: total.saturating_sub(shown),
        last_line: total,
        verified_until: match grant {
            Some(Grant::Session { until }) => Some(TimeView::clock(until)),
            _ => None,
        },
        can_cancel: running && matches!(grant, Some(Grant::Session { .. })),
        asset_version: asset_version(),
    };
    Ok(with_cookie(page, csrf_cookie))
}

/// The end of a log for the run page (see [`output::tail`]), read on the blocking pool; nothing when it
/// cannot be read.
async fn tail(path: PathBuf) -> (Vec<Line>, u64) {
    tokio::task::spawn_blocking(move || output::tail(&path, PAGE_LINES, PAGE_TAIL_BYTES))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// `keep` keeps the script's escape sequences (colours, carriage returns) as it wrote them;
    /// anything else (the default, `strip`) removes them and applies the carriage returns.
    ansi: Option<String>,
}

/// `GET /runs/{id}/log`: the whole output as plain text.
pub async fn log(
    State(state): State<AppState>,
    RunId(id): RunId,
    Query(query): Query<LogQuery>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    find(&state, id)?;
    access::may_read(&state, &BrowserSession(session), &headers).await?;
    let keep = query.ansi.as_deref() == Some("keep");
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CONTENT_DISPOSITION, "inline"),
    ];
    if let Some(store) = remote_output::is_remote(&state, id) {
        return Ok((headers, remote_output::log(store, id, keep)).into_response());
    }
    let path = state.runner.log_path(id);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(output::READ_CHUNK);
        let mut stripper = ansi::Stripper::default();
        let result = output::read_raw_lines(&path, |raw| {
            let text = output::untagged(raw);
            if keep {
                chunk.extend_from_slice(text);
            } else {
                stripper.strip_into(text, &mut chunk);
            }
            chunk.push(b'\n');
            if chunk.len() >= output::READ_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(output::READ_CHUNK));
                return sender.blocking_send(Ok(Bytes::from(full))).is_ok();
            }
            true
        });
        let tail = match result {
            Ok(()) => Ok(Bytes::from(chunk)),
            Err(error) => Err(error),
        };
        let _ = sender.blocking_send(tail);
    });
    Ok((headers, Body::from_stream(ReceiverStream::new(receiver))).into_response())
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// The last line the client has; `Last-Event-ID` takes precedence.
    after: Option<u64>,
}

/// `GET /runs/{id}/events`: Server-Sent Events. `line` events (id = line number, data = JSON with the
/// stream and the text) for what was written so far and then live, then one `end` event with the final
/// record. A reconnecting client sends `Last-Event-ID` and gets only what it missed.
pub async fn events(
    State(state): State<AppState>,
    RunId(id): RunId,
    Query(query): Query<EventsQuery>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    find(&state, id)?;
    access::may_read(&state, &BrowserSession(session), &headers).await?;
    let last_event = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let after = last_event.or(query.after).unwrap_or(0);
    let (sender, receiver) = mpsc::channel(VIEWER_QUEUE);
    match remote_output::is_remote(&state, id) {
        Some(store) => tokio::spawn(remote_output::feed(state, store, id, after, sender)),
        None => tokio::spawn(feed_viewer(state, id, after, sender)),
    };
    let stream = ReceiverStream::new(receiver);
    // Keeps idle connections open through proxies: about the socket, not a rule, so on real time.
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

type EventSender = mpsc::Sender<Result<Event, Infallible>>;

/// Sends a viewer what the log holds after line `after`, then the live lines, then the end.
async fn feed_viewer(state: AppState, id: u64, after: u64, sender: EventSender) {
    let live = state.runner.live_output(id);
    let subscription = live.as_ref().map(|live| live.subscribe());
    let written = live.as_ref().map(|live| live.lines_written());
    let Some(mut last) = replay(&state, id, after, written, &sender).await else {
        return;
    };
    if let Some((mut lines, mut ended)) = subscription {
        loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Ok(line) if line.number > last => {
                        last = line.number;
                        if sender.try_send(Ok(line_event(&line))).is_err() {
                            return; // Stalled or gone: drop this viewer, never the run.
                        }
                    }
                    Ok(_) => {}
                    // Fell behind: the client reconnects with Last-Event-ID and reads the rest from the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ended.wait_for(|ended| *ended) => break,
            }
        }
        // Lines written before the end that are still queued.
        let Some(_) = replay(&state, id, last, live.map(|live| live.lines_written()), &sender).await else {
            return;
        };
    }
    if let Some(event) = end_event(&state, id) {
        let _ = sender.send(Ok(event)).await;
    }
}

/// Sends lines `after + 1 ..= upto` from the log file; returns the last line sent (or `after`), or
/// `None` when the viewer went away.
async fn replay(
    state: &AppState,
    id: u64,
    after: u64,
    upto: Option<u64>,
    sender: &EventSender,
) -> Option<u64> {
    let path = state.runner.log_path(id);
    let sender = sender.clone();
    tokio::task::spawn_blocking(move || {
        let mut last = after;
        let mut gone = false;
        let read = output::read_lines(&path, after, upto, |line| {
            last = line.number;
            gone = sender.blocking_send(Ok(line_event(&line))).is_err();
            !gone
        });
        if let Err(error) = read {
            tracing::warn!(run = id, %error, "the run's log could not be read");
        }
        (!gone).then_some(last)
    })
    .await
    .ok()
    .flatten()
}

/// `POST /runs/{id}/cancel`
pub async fn cancel(
    State(state): State<AppState>,
    RunId(id): RunId,
    session: Session,
    request: Request,
) -> Result<Response, AppError> {
    find(&state, id)?;
    let client = client_ip(&request, &state.config.server.trusted_proxies);
    let headers = request.headers().clone();
    let form = CancelForm::from_request(request, &state).await?;
    let html = wants_html(&headers);
    let session = BrowserSession(session);
    let grant = access::may_cancel(&state, &session, &headers).await?;
    if let Grant::Session { .. } = grant
        && csrf::is_cross_site(
            &headers,
            state.config.server.public_url.as_ref(),
            form.csrf.as_deref(),
        )
    {
        return Err(AppError::Forbidden);
    }
    // The record is public (the status endpoint, the run page): it says how the canceller proved itself,
    // and the log says from where.
    let by = match grant {
        Grant::Token => "API token",
        Grant::Session { .. } | Grant::Public => "a verified session",
    };
    state
        .runner
        .cancel(id, by.to_string())
        .map_err(|_| AppError::NotRunning)?;
    tracing::info!(run = id, by, %client, "cancel requested");
    let message = cancelling(id);
    if html {
        session
            .set_flash(Flash {
                kind: FlashKind::Success,
                message,
            })
            .await;
        return Ok(Redirect::to(&format!("/runs/{id}")).into_response());
    }
    let body = serde_json::json!({ "message": message, "success": true, "run_id": id });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The message a cancel leaves for the run's page while the run is being stopped.
fn cancelling(id: u64) -> String {
    format!("Cancelling run #{id}.")
}

/// The `{id}` of a run's path; anything that is not a run number is a 404, as an unknown run is.
pub struct RunId(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::NotFound)?;
        text.parse().map(Self).map_err(|_| AppError::NotFound)
    }
}

fn find(state: &AppState, id: u64) -> Result<RunRecord, AppError> {
    state.runner.history().record(id).ok_or(AppError::NotFound)
}
