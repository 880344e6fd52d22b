//! The buttons: an action's page with the code form, the page of every action's card, and `POST /verify`
//! (or `POST /actions/{id}/run`), which starts a run.
//!
//! With one action, `/` is its page, as it always was; with several, `/` shows a card per action and each
//! has its page at `/actions/{id}`. `POST /verify` starts the first action (or the one `action=<id>`
//! names), `POST /actions/{id}/run` the one in its path; both answer API clients with the original's JSON
//! (and real status codes), and browsers (`Accept: text/html`) with a 303 redirect back to the page and a
//! flash message, so a reload never posts the code again. Only a browser that enters a valid code gets a verified session, under a new id; a
//! cross-site post gets no session at all.
//! `POST /verify?wait=` holds the answer until the run ends, at most until the clock reaches the limit.
//! What it calls does its file work on the blocking pool (the stores, the run's log).

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use tower_sessions::Session;

use crate::auth::attempt::{self, Started};
use crate::config::ActionConfig;
use crate::error::AppError;
use crate::model::client::ClientKey;
use crate::model::run::RunStatus;
use crate::model::time::later;
use crate::web::action::{self, ActionPath};
use crate::web::form::VerifyForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::negotiate::wants_html;
use crate::web::query::Query;
use crate::web::routes::assets::asset_version;
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{RunView, StateView};

/// How many runs the page lists.
const PAGE_RUNS: usize = 20;

/// The table of recent runs on the page.
#[derive(Template)]
#[template(path = "runs_table.html")]
pub struct RunsTable {
    pub runs: Vec<RunView>,
    /// The runs are of several actions: each says which.
    pub several: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct IndexPage {
    action_name: String,
    description: String,
    /// The warning the form asks to confirm, if the action has one.
    confirm: Option<String>,
    digits: u8,
    flash: Option<Flash>,
    csrf: String,
    state: StateView,
    /// The recent runs, rendered once per change of the history (see [`RunsTable`]).
    runs_table: Arc<str>,
    /// Where the form posts, and where the script polls the state.
    urls: ActionUrls,
    /// Several actions: the page links back to all of them.
    several: bool,
    asset_version: &'static str,
}

/// Where an action's page posts its code, polls its state, and lists its runs. The only action, at `/`,
/// keeps the original's URLs.
pub struct ActionUrls {
    pub run: String,
    pub status: String,
    pub runs: String,
    pub page: String,
}

impl ActionUrls {
    fn new(action: &ActionConfig, classic: bool, several: bool) -> Self {
        let id = &action.id;
        let (run, status, page) = if classic {
            ("/verify".into(), "/get_deploy_status".into(), "/".into())
        } else {
            (
                format!("/actions/{id}/run"),
                format!("/actions/{id}/status"),
                format!("/actions/{id}"),
            )
        };
        Self {
            run,
            status,
            runs: if several {
                format!("/runs?action={id}")
            } else {
                "/runs".into()
            },
            page,
        }
    }
}

/// One action's card on the page of several.
pub struct Card {
    name: String,
    description: String,
    confirm: Option<String>,
    state: StateView,
    last_run: Option<RunView>,
    urls: ActionUrls,
    /// Makes the card's form fields' ids unique on the page.
    id: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "actions.html")]
pub struct ActionsPage {
    cards: Vec<Card>,
    digits: u8,
    flash: Option<Flash>,
    csrf: String,
    /// Whether any action is running or cooling down: the page then refreshes itself without script.
    busy: bool,
    asset_version: &'static str,
}

/// Which page a browser is shown: `/`, or an action's own.
#[derive(Debug, Clone, Copy)]
enum Page {
    Home,
    Action(usize),
}

/// `GET /`: the only action's page; with several, a card for each, in the configuration's order.
pub async fn index(State(state): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    let flash = BrowserSession(session).take_flash().await;
    page(&state, Page::Home, &headers, flash)
}

/// `GET /actions/{id}`: the action's page.
pub async fn show_action(
    State(state): State<AppState>,
    ActionPath(action): ActionPath,
    session: Session,
    headers: HeaderMap,
) -> Response {
    let flash = BrowserSession(session).take_flash().await;
    page(&state, Page::Action(action), &headers, flash)
}

/// The page, showing `flash` if there is one.
fn page(state: &AppState, page: Page, headers: &HeaderMap, flash: Option<Flash>) -> Response {
    match page {
        Page::Home if state.config.actions.len() == 1 => action_page(state, 0, true, headers, flash),
        Page::Home => cards_page(state, headers, flash),
        Page::Action(action) => action_page(state, action, false, headers, flash),
    }
}

/// An action's page: its state, the code form and its recent runs. `classic`: the only action, at `/`.
fn action_page(
    state: &AppState,
    action: usize,
    classic: bool,
    headers: &HeaderMap,
    flash: Option<Flash>,
) -> Response {
    let config = state.config.action(action);
    let (csrf, csrf_cookie) = csrf::for_page(headers, state.config.server.cookies_secure());
    let history = state.runner.history();
    let version = history.version();
    let runs_table = state.caches.action(action).runs_table.get_or_make(version, || {
        let owner = state.runner.action(action).owner();
        let runs = history
            .snapshot()
            .iter()
            .rev()
            .filter(|record| owner.owns(record))
            .take(PAGE_RUNS)
            .map(RunView::new)
            .collect();
        RunsTable { runs, several: false }
            .render()
            .unwrap_or_default()
            .into()
    });
    let several = state.config.actions.len() > 1;
    let page = IndexPage {
        action_name: config.name.clone(),
        description: config.description.clone(),
        confirm: config.confirm.clone(),
        digits: state.config.totp.digits,
        flash,
        csrf,
        state: StateView::new(state.runner.state(action, state.clock.now())),
        runs_table,
        urls: ActionUrls::new(config, classic, several),
        several,
        asset_version: asset_version(),
    };
    with_cookie(page, csrf_cookie)
}

/// The page of several actions: a card for each, with its state, its newest run and its code form.
fn cards_page(state: &AppState, headers: &HeaderMap, flash: Option<Flash>) -> Response {
    let (csrf, csrf_cookie) = csrf::for_page(headers, state.config.server.cookies_secure());
    let now = state.clock.now();
    let history = state.runner.history().snapshot();
    let cards: Vec<Card> = state
        .config
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            let owner = state.runner.action(index).owner();
            Card {
                name: action.name.clone(),
                description: action.description.clone(),
                confirm: action.confirm.clone(),
                state: StateView::new(state.runner.state(index, now)),
                last_run: history
                    .iter()
                    .rev()
                    .find(|record| owner.owns(record))
                    .map(RunView::new),
                urls: ActionUrls::new(action, false, true),
                id: action.id.to_string(),
            }
        })
        .collect();
    let page = ActionsPage {
        busy: cards.iter().any(|card| card.state.kind != "idle"),
        cards,
        digits: state.config.totp.digits,
        flash,
        csrf,
        asset_version: asset_version(),
    };
    with_cookie(page, csrf_cookie)
}

/// `POST /verify`: starts the first action, or the one `action=<id>` names (form field or query).
pub async fn verify(
    State(state): State<AppState>,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    run(state, None, query, session, request).await
}

/// `POST /actions/{id}/run`: `POST /verify`'s contract, for the action in the path.
pub async fn run_action(
    State(state): State<AppState>,
    ActionPath(action): ActionPath,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    run(state, Some(action), query, session, request).await
}

/// Starts a run of `action` (`None`: the one the form or the query names, or the first): the attempt,
/// then the answer for an API client or a browser, which goes back to the page it posted from.
async fn run(
    state: AppState,
    action: Option<usize>,
    query: VerifyQuery,
    session: Session,
    request: Request,
) -> Response {
    // `?wait=` counts from here, before the run can start.
    let asked = state.clock.now();
    let html = wants_html(request.headers());
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let headers = request.headers().clone();
    let session = BrowserSession(session);
    let form = VerifyForm::from_request(request, &state).await;
    let form_token = form.as_ref().ok().and_then(|form| form.csrf.as_deref());
    let cross_site = csrf::is_cross_site(&headers, state.config.server.public_url.as_ref(), form_token);
    let (action, back) = match action {
        Some(action) => (action, Page::Action(action)),
        None => {
            let named = form
                .as_ref()
                .ok()
                .and_then(|form| form.action.clone())
                .or_else(|| query.action.clone());
            match action::selected(&state, named.as_deref()) {
                Ok(action) => (action, Page::Home),
                Err(error) => return error.into_response(),
            }
        }
    };
    let request = attempt::Request {
        action,
        client,
        code: form.map(|form| form.code),
        cross_site,
    };
    let outcome = state.gatekeeper.attempt(request).await;
    if let Err(error) = &outcome {
        tracing::info!(outcome = error.code(), "verification refused");
    }
    if !html {
        // API clients read output with the API token: they get no session.
        return match outcome {
            Ok(started) => match query.wait() {
                Some(wait) => wait_for_end(&state, started, later(asked, wait_limit(&state, wait))).await,
                None => Json(started).into_response(),
            },
            Err(error) => error.into_response(),
        };
    }
    let flash = match outcome {
        Ok(started) => {
            session
                .set_verified(later(state.clock.now(), state.config.access.verified_for))
                .await;
            Flash {
                kind: FlashKind::Success,
                message: started.message,
            }
        }
        // A cross-site post is free to send (not a failure), so it gets no session: that would be a
        // cookie to plant in another browser, and memory to fill. The page is shown with the refusal.
        Err(error @ AppError::Forbidden) => {
            let flash = Flash {
                kind: FlashKind::Error,
                message: error.to_string(),
            };
            return (error.status(), page(&state, back, &headers, Some(flash))).into_response();
        }
        Err(error) => Flash {
            kind: FlashKind::Error,
            message: error.to_string(),
        },
    };
    session.set_flash(flash).await;
    let to = match back {
        Page::Home => "/".to_string(),
        Page::Action(action) => format!("/actions/{}", state.config.action(action).id),
    };
    Redirect::to(&to).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    /// The action `POST /verify` starts, when it is not the first (the form's field wins).
    action: Option<String>,
    /// `true` waits until the run ends; a number waits at most that many seconds; anything else is a
    /// bad query rather than no wait, so a typo does not turn `curl --fail` into a false success.
    #[serde(default, deserialize_with = "wait")]
    wait: Option<Option<Duration>>,
}

impl VerifyQuery {
    fn wait(&self) -> Option<Option<Duration>> {
        self.wait
    }
}

/// `wait`: `Some(None)` until the end, `Some(Some(limit))`, or `None` for no wait.
fn wait<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<Duration>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "true" | "yes" => Ok(Some(None)),
        "false" | "0" | "no" | "" => Ok(None),
        seconds => seconds
            .parse()
            .map(|seconds| Some(Some(Duration::from_secs(seconds))))
            .map_err(|_| serde::de::Error::custom("expected true, false or a number of seconds")),
    }
}

/// How long `?wait=` holds the answer: what the client asked, at most `max_wait`.
fn wait_limit(state: &AppState, wait: Option<Duration>) -> Duration {
    let max_wait = state.config.access.max_wait;
    wait.unwrap_or(max_wait).min(max_wait)
}

/// Holds the answer until the run ends (or the clock reaches `deadline`): 200 when it succeeded, 424
/// when it ended otherwise, 202 while it is still going. `curl --fail` thus fails unless the deploy
/// succeeded.
async fn wait_for_end(state: &AppState, started: Started, deadline: OffsetDateTime) -> Response {
    let id = started.run_id;
    let ended = tokio::select! {
        () = state.runner.wait_finished(id) => true,
        () = state.clock.sleep_until(deadline) => false,
    };
    let record = state.runner.history().record(id);
    let (status, success, message) = match &record {
        Some(record) if ended && record.status == RunStatus::Succeeded => {
            (StatusCode::OK, true, format!("Run #{id}: {}.", record.status))
        }
        Some(record) if ended => (
            StatusCode::FAILED_DEPENDENCY,
            false,
            format!("Run #{id}: {}.", record.status),
        ),
        _ => (
            StatusCode::ACCEPTED,
            false,
            format!("Run #{id} is still going; follow it at {}.", started.run_url),
        ),
    };
    let mut body = serde_json::to_value(&started).unwrap_or_default();
    body["message"] = message.into();
    body["success"] = success.into();
    body["run"] = serde_json::to_value(&record).unwrap_or_default();
    (status, Json(body)).into_response()
}
