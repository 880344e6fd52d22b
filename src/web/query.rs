//! The query string, read into a typed struct. axum's own `Query` answers a bad one in plain text; this
//! one refuses it as every other bad request is refused: JSON, 400, `bad_query`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// The query string as `T`; a query that does not fit `T` (`?page=abc`, bytes that are not UTF-8) is
/// [`AppError::BadQuery`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                AppError::BadQuery {
                    detail: detail.to_string(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Page {
        page: Option<usize>,
    }

    async fn read(uri: &str) -> Result<Option<usize>, AppError> {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        let Query(page) = Query::<Page>::from_request_parts(&mut parts, &()).await?;
        Ok(page.page)
    }

    #[tokio::test]
    async fn a_query_that_does_not_fit_is_a_bad_query_naming_the_parameter() {
        assert_eq!(read("/runs").await, Ok(None));
        assert_eq!(read("/runs?page=2&other=x").await, Ok(Some(2)));
        let Err(AppError::BadQuery { detail }) = read("/runs?page=abc").await else {
            panic!("page=abc was read");
        };
        assert!(detail.starts_with("page: "), "{detail}");
    }
}
