//! The buttons: an action's page with the code form, the page of every action's card, and `POST /verify`
//! (or `POST /actions/{id}/run`), which starts a run.
//!
//! With one action, `/` is its page, as it always was; with several, `/` shows a card per action and each
//! has its page at `/actions/{id}`. `POST /verify` starts the first action (or the one `action=<id>`
//! names), `POST /actions/{id}/run` the one in its path; both answer API clients with the original's JSON
//! (and real status codes), and browsers (`Accept: text/html`) with a 303 redirect and a flash message (to
//! the run it started, or back to the page it was posted from), so a reload never posts the code again. Only a browser that enters a valid code gets a verified
//! session, under a new id; a cross-site post gets no session at all.
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
use crate::model::run::{RunRecord, RunStatus};
use crate::model::time::later;
use crate::web::action::{self, ActionPath};
use crate::web::form::VerifyForm;
use crate::web::middleware::client_ip::client_ip;
use crate::web::middleware::csrf::{self, with_cookie};
use crate::web::middleware::edge::LoggedByHandler;
use crate::web::negotiate::wants_html;
use crate::web::query::Query;
use crate::web::routes::assets::asset_version;
use crate::web::session::{BrowserSession, Flash, FlashKind};
use crate::web::state::AppState;
use crate::web::views::{FlashView, RunView, StateView, WhoView, refusal_flash};

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
    /// The form field's `pattern`: `digits` digits, spaces allowed as the server ignores them.
    code_pattern: String,
    flash: Option<FlashView>,
    csrf: String,
    state: StateView,
    /// The recent runs, rendered once per change of the history (see [`RunsTable`]).
    runs_table: Arc<str>,
    /// Where the form posts, and where the script polls the state.
    urls: ActionUrls,
    /// Several actions: the page links back to all of them.
    several: bool,
    /// Operators mode: who signs.
    who: WhoView,
    /// The code field's longest input and its title.
    code_max: usize,
    code_title: String,
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
    code_pattern: String,
    flash: Option<FlashView>,
    csrf: String,
    /// Whether any action is running or cooling down: the page then refreshes itself without script.
    busy: bool,
    who: WhoView,
    code_max: usize,
    code_title: String,
    asset_version: &'static str,
}

/// Which page a browser is shown: `/`, or an action's own.
#[derive(Debug, Clone, Copy)]
enum Page {
    Home,
    Action(usize),
}

impl Page {
    fn url(self, state: &AppState) -> String {
        match self {
            Self::Home => "/".into(),
            Self::Action(action) => format!("/actions/{}", state.config.action(action).id),
        }
    }
}

/// `GET /`: the only action's page; with several, a card for each, in the configuration's order.
pub async fn index(State(state): State<AppState>, session: Session, request: Request) -> Response {
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let session = BrowserSession(session);
    let flash = session.take_flash().await;
    let who = who(&state, &session).await;
    page(&state, Page::Home, request.headers(), &client, flash, who)
}

/// `GET /actions/{id}`: the action's page.
pub async fn show_action(
    State(state): State<AppState>,
    ActionPath(action): ActionPath,
    session: Session,
    request: Request,
) -> Response {
    let client = ClientKey::of(client_ip(&request, &state.config.server.trusted_proxies));
    let session = BrowserSession(session);
    let flash = session.take_flash().await;
    let who = who(&state, &session).await;
    page(
        &state,
        Page::Action(action),
        request.headers(),
        &client,
        flash,
        who,
    )
}

/// Who the page is for (operators mode): the signed-in operator, if any.
async fn who(state: &AppState, session: &BrowserSession) -> WhoView {
    if state.gatekeeper.operators.is_none() {
        return WhoView::default();
    }
    let signed_in = crate::web::access::operator_of(state, session).await.ok();
    WhoView {
        operators: true,
        passwords: state.config.auth.passwords,
        admin: signed_in
            .as_ref()
            .is_some_and(|(_, role)| *role == crate::model::operator::Role::Admin),
        signed_in: signed_in.map(|(name, _)| name.to_string()),
        email_codes: state.config.auth.email_codes,
    }
}

/// The page as `client` sees it (its block, if it has one), showing `flash` if there is one.
fn page(
    state: &AppState,
    page: Page,
    headers: &HeaderMap,
    client: &ClientKey,
    flash: Option<Flash>,
    who: WhoView,
) -> Response {
    let seen = Seen {
        headers,
        client,
        flash: flash.as_ref().map(FlashView::new),
        who,
    };
    match page {
        Page::Home if state.config.actions.len() == 1 => action_page(state, 0, true, seen),
        Page::Home => cards_page(state, seen),
        Page::Action(action) => action_page(state, action, false, seen),
    }
}

/// What a page shows of who asks: its block, its CSRF token, a flash.
struct Seen<'a> {
    headers: &'a HeaderMap,
    client: &'a ClientKey,
    flash: Option<FlashView>,
    who: WhoView,
}

/// An action's page: its state, the code form and its recent runs. `classic`: the only action, at `/`.
fn action_page(state: &AppState, action: usize, classic: bool, seen: Seen<'_>) -> Response {
    let config = state.config.action(action);
    let (csrf, csrf_cookie) = csrf::for_page(seen.headers, state.config.server.cookies_secure());
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
    let now = state.clock.now();
    let blocked = state.gatekeeper.guard.blocked(seen.client, now);
    let several = state.config.actions.len() > 1;
    let page = IndexPage {
        action_name: config.name.clone(),
        description: config.description.clone(),
        confirm: config.confirm.clone(),
        digits: state.config.totp.digits,
        code_pattern: code_pattern(state),
        flash: seen.flash,
        csrf,
        state: StateView::new(state.runner.state(action, now), blocked, now),
        runs_table,
        urls: ActionUrls::new(config, classic, several),
        several,
        code_max: code_max(state),
        code_title: code_title(state),
        who: seen.who,
        asset_version: asset_version(),
    };
    with_cookie(page, csrf_cookie)
}

/// The page of several actions: a card for each, with its state, its newest run and its code form.
fn cards_page(state: &AppState, seen: Seen<'_>) -> Response {
    let (csrf, csrf_cookie) = csrf::for_page(seen.headers, state.config.server.cookies_secure());
    let now = state.clock.now();
    let blocked = state.gatekeeper.guard.blocked(seen.client, now);
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
                state: StateView::new(state.runner.state(index, now), blocked, now),
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
        code_pattern: code_pattern(state),
        flash: seen.flash,
        csrf,
        code_max: code_max(state),
        code_title: code_title(state),
        who: seen.who,
        asset_version: asset_version(),
    };
    with_cookie(page, csrf_cookie)
}

/// The code field's `pattern`: `digits` digits, spaces allowed as the server ignores them; in operators
/// mode a backup code (`k7dq-m3xz-9tpw`) too.
fn code_pattern(state: &AppState) -> String {
    let digits = format!(" *([0-9] *){{{}}}", state.config.totp.digits);
    if state.config.auth.operators() {
        format!("{digits}|[0-9A-Za-z \\-]{{12,16}}")
    } else {
        digits
    }
}

/// The code field's longest input.
fn code_max(state: &AppState) -> usize {
    let digits = usize::from(state.config.totp.digits) * 2;
    if state.config.auth.operators() {
        digits.max(16)
    } else {
        digits
    }
}

/// What the code field asks for.
fn code_title(state: &AppState) -> String {
    let digits = state.config.totp.digits;
    if state.config.auth.operators() {
        format!("{digits} digits, or a backup code")
    } else {
        format!("{digits} digits")
    }
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
/// then the answer for an API client or a browser.
async fn run(
    state: AppState,
    action: Option<usize>,
    query: VerifyQuery,
    session: Session,
    request: Request,
) -> Response {
    // `?wait=` counts from here, before the run can start.
    let at = state.clock.now();
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
    let (user, password, signed_in) = credentials(&state, &session, form.as_ref().ok()).await;
    let request = attempt::Request {
        purpose: attempt::Purpose::Run(action),
        client: client.clone(),
        code: form.map(|form| form.code),
        user,
        password,
        signed_in,
        cross_site,
    };
    let outcome = state.gatekeeper.attempt(request).await;
    // Refusals the gatekeeper counts it also logs, a line a minute per client.
    let counted = outcome.as_ref().is_err_and(attempt::is_counted_refusal);
    match &outcome {
        Err(_) if counted => {}
        Err(error) => tracing::info!(outcome = error.code(), "verification refused"),
        Ok(_) => {}
    }
    let asked = Asked {
        headers: &headers,
        client: &client,
        query: &query,
        at,
        html,
        back,
    };
    let mut response = respond(&state, &session, &asked, outcome).await;
    if counted {
        response.extensions_mut().insert(LoggedByHandler);
    }
    response
}

/// The operator and password of an attempt: the form's `user`, or the operator the session is signed
/// in as (whose page asks only for a code: the sign-in took the password).
pub async fn credentials(
    state: &AppState,
    session: &BrowserSession,
    form: Option<&VerifyForm>,
) -> (Option<String>, Option<String>, bool) {
    let named = form
        .and_then(|form| form.user.clone())
        .filter(|user| !user.is_empty());
    let password = form.and_then(|form| form.password.clone());
    match named {
        Some(user) => (Some(user), password, false),
        None => match crate::web::access::operator_of(state, session).await {
            Ok((user, _)) => (Some(user.to_string()), password, true),
            Err(_) => (None, password, false),
        },
    }
}

/// What the answer to an attempt needs of its request.
struct Asked<'a> {
    headers: &'a HeaderMap,
    /// Who tried: its block and its tries left are shown after a refusal.
    client: &'a ClientKey,
    query: &'a VerifyQuery,
    /// When the request came: `?wait=` counts from here, before the run can start.
    at: OffsetDateTime,
    /// A browser's form post rather than an API client's.
    html: bool,
    /// The page the form was posted from, where a refusal goes back to.
    back: Page,
}

/// The answer to an attempt: JSON for API clients (which read output with the API token and get no
/// session), a redirect with a flash for browsers, whose session is verified under a new id by a valid
/// code. A cross-site post gets no session at all.
async fn respond(
    state: &AppState,
    session: &BrowserSession,
    asked: &Asked<'_>,
    outcome: Result<Started, AppError>,
) -> Response {
    if !asked.html {
        return match outcome {
            Ok(started) => match asked.query.wait() {
                Some(wait) => wait_for_end(state, started, later(asked.at, wait_limit(state, wait))).await,
                None => Json(started).into_response(),
            },
            Err(error) => error.into_response(),
        };
    }
    // After a valid code the browser follows the run it started; a refusal goes back to the form.
    let (flash, to) = match outcome {
        Ok(started) => {
            let operator = started.proven.user.as_ref().map(|name| name.as_str());
            session
                .sign_in(
                    later(state.clock.now(), state.config.access.verified_for),
                    operator,
                )
                .await;
            let flash = Flash {
                kind: FlashKind::Success,
                message: started.message,
            };
            (flash, started.run_url)
        }
        // A cross-site post is free to send (not a failure), so it gets no session: that would be a
        // cookie to plant in another browser, and memory to fill. The page is shown with the refusal.
        Err(error @ AppError::Forbidden) => {
            let flash = refusal_flash(&error, None);
            return (
                error.status(),
                page(
                    state,
                    asked.back,
                    asked.headers,
                    asked.client,
                    Some(flash),
                    who(state, session).await,
                ),
            )
                .into_response();
        }
        Err(error) => {
            let tries_left = matches!(error, AppError::WrongCode | AppError::ReplayedCode).then(|| {
                // A failure that started a ban forgets the client's count: none is left.
                let (guard, now) = (&state.gatekeeper.guard, state.clock.now());
                match guard.blocked(asked.client, now) {
                    Some(_) => 0,
                    None => guard.failures_left(asked.client, now),
                }
            });
            (refusal_flash(&error, tries_left), asked.back.url(state))
        }
    };
    session.set_flash(flash).await;
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
    /// `None`: do not wait; `Some(None)`: until the run ends; `Some(Some(limit))`: at most `limit`.
    pub fn wait(&self) -> Option<Option<Duration>> {
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
pub fn wait_limit(state: &AppState, wait: Option<Duration>) -> Duration {
    let max_wait = state.config.access.max_wait;
    wait.unwrap_or(max_wait).min(max_wait)
}

/// Holds the answer until the run ends (or the clock reaches `deadline`): 200 when it succeeded, 424
/// when it ended otherwise, 202 while it is still going. `curl --fail` thus fails unless the deploy
/// succeeded.
async fn wait_for_end(state: &AppState, started: Started, deadline: OffsetDateTime) -> Response {
    let id = started.run_id;
    let ended = wait_until_ended(state, id, deadline).await;
    let record = state.runner.history().record(id);
    let (status, success, message) = wait_outcome(id, record.as_ref(), ended);
    let mut body = serde_json::to_value(&started).unwrap_or_default();
    body["message"] = message.into();
    body["success"] = success.into();
    body["run"] = serde_json::to_value(&record).unwrap_or_default();
    (status, Json(body)).into_response()
}

/// Waits until run `id` ends or the clock reaches `deadline`; whether it ended.
pub async fn wait_until_ended(state: &AppState, id: u64, deadline: OffsetDateTime) -> bool {
    tokio::select! {
        () = state.runner.wait_finished(id) => true,
        () = state.clock.sleep_until(deadline) => false,
    }
}

/// How a wait for run `id` ends, for `/verify?wait=` and `/runs/ID?wait=` alike: 200 when the run
/// succeeded, 424 when it ended otherwise, 202 while it is still going; with `success` and the message.
pub fn wait_outcome(id: u64, record: Option<&RunRecord>, ended: bool) -> (StatusCode, bool, String) {
    match record {
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
            format!("Run #{id} is still going; follow it at /runs/{id}."),
        ),
    }
}
