//! One log line per settings change (services, webhook secrets, tokens, deploy targets): who
//! made it (the admin token, or an organization token's id and name — never the token), on
//! which route, to which resource, and the version the resource now has.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, MatchedPath};
use http::request::Parts;

use super::auth::Caller;

/// The route a request matched, as `METHOD /organization/{org}/…` (the template, so that no
/// value of the path is logged).
pub struct Route(String);

impl<S: Send + Sync> FromRequestParts<S> for Route {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let template = parts.extensions.get::<MatchedPath>().map_or("", MatchedPath::as_str);
        Ok(Route(format!("{} {template}", parts.method)))
    }
}

/// Log the change `caller` made through `route` to `resource` of `org` (`version`: what the
/// resource is at now, when it has versions and still exists).
pub fn audit(caller: &Caller, route: &Route, org: &str, resource: &str, version: Option<u64>) {
    let (token_id, token_name) = match caller {
        Caller::Admin => ("admin", "admin"),
        Caller::Organization {
            token_id, token_name, ..
        } => (token_id.as_str(), token_name.as_str()),
    };
    tracing::info!(
        org,
        token_id,
        token_name,
        route = %route.0,
        resource,
        version,
        "settings changed"
    );
}
