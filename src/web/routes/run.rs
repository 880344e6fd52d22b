//! The buttons: an action's page with the code form, the page of every action's card, and `POST /verify`
//! (or `POST /actions/{id}/run`), which starts a run.
//!
//! With one action, `/` is its page, as it always was; with several, `/` shows a card per action and each
//! has its page at `/actions/{id}`. `POST /verify` starts the first action (or the one `action=<id>`
//! names), `POST /actions/{id}/run` the one in its path; both answer API clients with the original's JSON
//! (and real status codes), and browsers (`Accept: text/html`) with a 303 redirect back to the page and a
//! flash message, so a reload never posts the code again.

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tower_sessions::Session;

use crate::auth::attempt::{self, Started};
use crate::config::ActionConfig;
use crate::model::client::ClientKey;
use crate::model::run::RunStatus;
use crate::model::time::later;
use crate::web::action::{self, ActionPath};
use crate::web::form::VerifyForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::negotiate::wants_html;
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

/// Where an action's page posts its code, polls its state, and lists its runs. The first action at `/`,
/// when it is the only one, keeps the original's URLs.
pub struct ActionUrls {
    pub run: String,
    pub status: String,
    pub runs: String,
    pub page: String,
}

impl ActionUrls {
    fn new(action: &ActionConfig, classic: bool, several: bool) -> Self {
        let id = &action.id;
        Self {
            run: if classic {
                "/verify".into()
            } else {
                format!("/actions/{id}/run")
            },
            status: if classic {
                "/get_deploy_status".into()
            } else {
                format!("/actions/{id}/status")
            },
            runs: if several {
                format!("/runs?action={id}")
            } else {
                "/runs".into()
            },
            page: if classic {
                "/".into()
            } else {
                format!("/actions/{id}")
            },
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

/// `GET /`: the only action's page; with several, a card for each, in the configuration's order.
pub async fn index(State(state): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    if state.config.actions.len() == 1 {
        return action_page(&state, 0, true, session, &headers).await;
    }
    let session = BrowserSession(session);
    let flash = session.take_flash().await;
    let (csrf, csrf_cookie) = csrf::for_page(&headers, state.config.server.cookies_secure());
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

/// `GET /actions/{id}`: the action's page.
pub async fn show_action(
    State(state): State<AppState>,
    ActionPath(action): ActionPath,
    session: Session,
    headers: HeaderMap,
) -> Response {
    action_page(&state, action, false, session, &headers).await
}

/// An action's page: its state, the code form and its recent runs. `classic`: the only action, at `/`.
async fn action_page(
    state: &AppState,
    action: usize,
    classic: bool,
    session: Session,
    headers: &HeaderMap,
) -> Response {
    let config = state.config.action(action);
    let session = BrowserSession(session);
    let flash = session.take_flash().await;
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

/// Where a run is asked for: which action, and the page a browser goes back to.
struct Target {
    /// The action's place in the configuration; `None`: the form's `action` field (or the query's)
    /// names it, or the first action.
    action: Option<usize>,
    back: String,
}

/// `POST /verify`: starts the first action, or the one `action=<id>` names (form field or query).
pub async fn verify(
    State(state): State<AppState>,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    let target = Target {
        action: None,
        back: "/".into(),
    };
    run(state, target, query, session, request).await
}

/// `POST /actions/{id}/run`: `POST /verify`'s contract, for the action in the path.
pub async fn run_action(
    State(state): State<AppState>,
    ActionPath(action): ActionPath,
    Query(query): Query<VerifyQuery>,
    session: Session,
    request: Request,
) -> Response {
    let target = Target {
        action: Some(action),
        back: format!("/actions/{}", state.runner.action(action).owner().id),
    };
    run(state, target, query, session, request).await
}

async fn run(
    state: AppState,
    target: Target,
    query: VerifyQuery,
    session: Session,
    request: Request,
) -> Response {
    let html = wants_html(request.headers());
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let headers = request.headers().clone();
    let session = BrowserSession(session);
    let form = VerifyForm::from_request(request, &state).await;
    let form_token = form.as_ref().ok().and_then(|form| form.csrf.as_deref());
    let cross_site = csrf::is_cross_site(&headers, state.config.server.public_url.as_ref(), form_token);
    let named = form
        .as_ref()
        .ok()
        .and_then(|form| form.action.clone())
        .or_else(|| query.action.clone());
    let action = match target.action {
        Some(action) => action,
        None => match action::selected(&state, named.as_deref()) {
            Ok(action) => action,
            Err(error) => return error.into_response(),
        },
    };
    let request = attempt::Request {
        action,
        client,
        code: form.map(|form| form.code),
        cross_site,
    };
    let outcome = state.gatekeeper.attempt(request).await;
    match &outcome {
        Ok(_) => {
            session
                .set_verified(later(state.clock.now(), state.config.access.verified_for))
                .await
        }
        Err(error) => tracing::info!(outcome = error.code(), "verification refused"),
    }
    match (outcome, html) {
        (Ok(started), false) => match query.wait() {
            Some(wait) => wait_for_end(&state, started, wait).await,
            None => Json(started).into_response(),
        },
        (Err(error), false) => error.into_response(),
        (outcome, true) => {
            let flash = match outcome {
                Ok(started) => Flash {
                    kind: FlashKind::Success,
                    message: started.message,
                },
                Err(error) => Flash {
                    kind: FlashKind::Error,
                    message: error.to_string(),
                },
            };
            session.set_flash(flash).await;
            Redirect::to(&target.back).into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    /// The action `POST /verify` starts, when it is not the first (the form's field wins).
    action: Option<String>,
    /// `true` waits until the run ends; a number waits at most that many seconds.
    wait: Option<String>,
}

impl VerifyQuery {
    fn wait(&self) -> Option<Option<Duration>> {
        match self.wait.as_deref()? {
            "true" | "yes" => Some(None),
            "false" | "0" | "no" | "" => None,
            seconds => seconds
                .parse()
                .ok()
                .map(|seconds| Some(Duration::from_secs(seconds))),
        }
    }
}

/// Holds the answer until the run ends (or `wait` elapses): 200 when it succeeded, 424 when it ended
/// otherwise, 202 while it is still going. `curl --fail` thus fails unless the deploy succeeded.
async fn wait_for_end(state: &AppState, started: Started, wait: Option<Duration>) -> Response {
    let limit = wait
        .unwrap_or(state.config.access.max_wait)
        .min(state.config.access.max_wait);
    let id = started.run_id;
    let ended = tokio::time::timeout(limit, state.runner.wait_finished(id))
        .await
        .is_ok();
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
