//! Every list of the API: `limit` and `cursor` read one way, and one page answered one way,
//! `{"items": [...], "next_cursor": ...}` with a cursor bound to the list it came from.

use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::QueryParams;
use crate::store::{ListQuery, Page, PageRequest};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// `{"items": [...], "next_cursor": ...}`: every list.
#[derive(Serialize)]
pub struct ListBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: Serialize> IntoResponse for ListBody<T> {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// A request for one page of the list `scope` of organization `org`: `limit` (default 50,
/// 1..=100) and the position a `cursor` points after.
#[derive(Debug)]
pub struct ListParams {
    pub limit: usize,
    pub after: Option<String>,
    org: String,
    scope: String,
}

/// A cursor is bound to the organization and the query it came from, so one cannot be
/// replayed against another list.
#[derive(Serialize, Deserialize)]
struct Cursor {
    o: String,
    q: String,
    a: String,
}

impl ListParams {
    /// `scope` names the list and its filters (e.g. `deployments?service_id=api`); `filters`
    /// are the parameters the list takes beside `limit` and `cursor` (any other is a 400).
    pub fn parse(query: &QueryParams, org: &str, scope: &str, filters: &[&str]) -> ApiResult<Self> {
        let taken: Vec<&str> = ["limit", "cursor"].iter().chain(filters).copied().collect();
        query.only(&taken)?;
        let mut errors = Vec::new();
        let limit = match query.get("limit")? {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = match query.get("cursor")?.filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => match decode_cursor(raw) {
                Some(c) if c.o == org && c.q == scope => Some(c.a),
                Some(_) => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "cursor",
                        "belongs to another organization or list",
                    ));
                    None
                }
                None => {
                    errors.push(autodeploy_core::error::FieldError::new(
                        "cursor",
                        "is not a cursor this API returned",
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(Self {
                limit,
                after,
                org: org.to_owned(),
                scope: scope.to_owned(),
            })
        } else {
            Err(ApiError::validation(errors))
        }
    }

    /// The page asked for: after the cursor's key, if one was given.
    pub fn page(&self) -> PageRequest<'_> {
        PageRequest::new(self.after.as_deref(), self.limit)
    }

    /// The page asked for of the items `filter` shows.
    pub fn query<F>(&self, filter: F) -> ListQuery<'_, F> {
        ListQuery {
            filter,
            page: self.page(),
        }
    }

    /// The page as the API answers it: its items, each as `show` renders it, and a cursor to
    /// the next page of the same list when more may follow.
    pub fn answer<T, U: Serialize>(&self, page: Page<T>, show: impl FnMut(T) -> U) -> Response {
        ListBody {
            next_cursor: page.last_key.map(|k| encode_cursor(&self.org, &self.scope, &k)),
            items: page.items.into_iter().map(show).collect(),
        }
        .into_response()
    }
}

fn decode_cursor(raw: &str) -> Option<Cursor> {
    if raw.len() > 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    // A cursor this API returned follows an item, whose key is never empty (DynamoDB would
    // refuse an empty one as a query's start key).
    serde_json::from_slice::<Cursor>(&bytes)
        .ok()
        .filter(|cursor| !cursor.a.is_empty())
}

pub fn encode_cursor(org: &str, scope: &str, after: &str) -> String {
    let cursor = Cursor {
        o: org.to_owned(),
        q: scope.to_owned(),
        a: after.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bound_to_org_and_query() {
        let c = encode_cursor("acme", "services", "api");
        let q = QueryParams::parse(Some(&format!("cursor={c}")));
        assert_eq!(
            ListParams::parse(&q, "acme", "services", &[]).unwrap().after.as_deref(),
            Some("api")
        );
        assert_eq!(ListParams::parse(&q, "other", "services", &[]).unwrap_err().status, 400);
        assert_eq!(ListParams::parse(&q, "acme", "tokens", &[]).unwrap_err().status, 400);
        let q = QueryParams::parse(Some("cursor=!!"));
        assert_eq!(ListParams::parse(&q, "acme", "services", &[]).unwrap_err().status, 400);
        // Made up, after an empty key: no page of this API ends there.
        let q = QueryParams::parse(Some(&format!("cursor={}", encode_cursor("acme", "services", ""))));
        assert_eq!(ListParams::parse(&q, "acme", "services", &[]).unwrap_err().status, 400);
    }

    #[test]
    fn limits() {
        for (raw, ok) in [
            ("1", true),
            ("100", true),
            ("0", false),
            ("101", false),
            ("x", false),
            ("-1", false),
        ] {
            let q = QueryParams::parse(Some(&format!("limit={raw}")));
            assert_eq!(ListParams::parse(&q, "a", "s", &[]).is_ok(), ok, "{raw}");
        }
    }
}
