//! Which action a request is about: `{id}` in `/actions/{id}/...`, or `action=<id>` in the query (or the
//! form) of the routes that existed before there were several actions, which without it mean the first.
//!
//! An id that names no configured action is a 404, as an unknown run is.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::AppError;
use crate::web::state::AppState;

/// The action named by the path's `{id}`: its place in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionPath(pub usize);

impl FromRequestParts<AppState> for ActionPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::NotFound)?;
        state.config.action_index(&id).map(Self).ok_or(AppError::NotFound)
    }
}

/// The action `id` names, or the first without one.
pub fn selected(state: &AppState, id: Option<&str>) -> Result<usize, AppError> {
    match id {
        None => Ok(0),
        Some(id) => state.config.action_index(id).ok_or(AppError::NotFound),
    }
}

/// The value of `action=` in a query string, read without allocating when there is none.
pub fn in_query(query: Option<&str>) -> Option<String> {
    let query = query.filter(|query| query.contains("action="))?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == "action")
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_is_read_from_the_query() {
        assert_eq!(in_query(None), None);
        assert_eq!(in_query(Some("page=2")), None);
        assert_eq!(
            in_query(Some("action=restart-cache")).as_deref(),
            Some("restart-cache")
        );
        assert_eq!(in_query(Some("page=2&action=a%2Db")).as_deref(), Some("a-b"));
        assert_eq!(in_query(Some("reaction=x")), None);
    }
}
