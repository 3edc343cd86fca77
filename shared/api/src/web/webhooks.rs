//! `POST /organization/{org}/webhooks/{provider}`: git push webhooks, verified, then handed
//! to the push use case.

use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::{
    Delivery, IgnoredReason, MAX_DELIVERY_ID, PayloadError, check_headers, delivery_id, event_headers, parse_delivery,
    provider_name, provider_of, push_events, repeated_delivery_id_header, with_article,
};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::read_body;
use super::observe::DeliveryRequest;
use crate::deploy::Ignored;
use crate::deploy::history::DeliverySummary;
use crate::deploy::push::{PushDelivery, PushReport, deploy_pushes, seen_before};
use crate::metrics::Tally;

/// GitHub's own cap on webhook payloads; other providers send less.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// Bodies from which the signature is checked and the payload read on tokio's blocking pool
/// instead of the request's thread: from this size the two take a tenth of a millisecond or
/// more (tens of milliseconds for GitHub's largest), which every request sharing the thread
/// would wait for (the standalone server runs one request thread per core but one).
pub const BLOCKING_POOL_FROM: usize = 64 * 1024;

/// Run `work` on tokio's blocking pool (see [`BLOCKING_POOL_FROM`]).
async fn on_blocking_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::internal("The delivery could not be read: its check stopped unexpectedly."))
}

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/organization/{org}/webhooks/{provider}",
        post(push_webhook).fallback(other_method),
    )
}

/// Another method than `POST`: a 405 on a provider's route, and the 404 of an unknown provider
/// on any other path, whatever the method.
pub async fn other_method(uri: http::Uri) -> ApiError {
    let provider = uri.path().rsplit('/').next().unwrap_or_default();
    match GitProvider::from_slug(provider) {
        Some(_) => ApiError::method_not_allowed(),
        None => unknown_provider(),
    }
}

fn unknown_provider() -> ApiError {
    let known: Vec<_> = GitProvider::ALL.iter().map(|p| p.slug()).collect();
    ApiError::not_found(format!("Unknown git provider; use one of {}.", known.join(", ")))
}

/// The organization's secret for `provider` and the delivery's headers, checked before the
/// body is read: an organization without a secret refuses every delivery (fail closed), and a
/// delivery without its signature, with a malformed one or with a wrong token is refused,
/// without buffering what it sent. Then the body, bounded, verified with the secret as the
/// provider signs it.
pub async fn verified_body(
    state: &AppState,
    org: &str,
    provider: GitProvider,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<Bytes> {
    // Where a refused delivery belongs, worked out only for one that is refused.
    let elsewhere = || elsewhere(org, provider, headers);
    let secret = state.store.get_secret(org, provider.slug()).await?.ok_or_else(|| {
        ApiError::unauthorized(format!(
            "Refused: no {provider} secret is configured for organization {org} (its webhook secret, set with PUT /organization/{org}/webhook-secrets/{provider}).{}",
            elsewhere(),
            provider = provider.slug(),
        ))
    })?;
    let refused = |e| ApiError::unauthorized(format!("The delivery could not be verified: {e}.{}", elsewhere()));
    let credential = check_headers(provider, headers, secret.secret.as_bytes()).map_err(refused)?;
    let bytes = read_body(headers, body, limit).await?;
    let verified = if bytes.len() < BLOCKING_POOL_FROM {
        credential.verify_body(&bytes, secret.secret.as_bytes())
    } else {
        let body = bytes.clone();
        on_blocking_pool(move || credential.verify_body(&body, secret.secret.as_bytes())).await?
    };
    verified.map_err(refused)?;
    Ok(bytes)
}

/// A sentence for a delivery that carries another provider's event header than the one of
/// its route: where to send it instead. Empty otherwise.
fn elsewhere(org: &str, provider: GitProvider, headers: &HeaderMap) -> String {
    match provider_of(headers) {
        Some(sender) if sender != provider => format!(
            " This delivery carries {}'s headers: its webhook URL should end in /organization/{org}/webhooks/{}.",
            provider_name(sender),
            sender.slug()
        ),
        _ => String::new(),
    }
}

async fn push_webhook(request: DeliveryRequest, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let DeliveryRequest { state, org, .. } = &request;
    let provider = GitProvider::from_slug(request.path.raw("provider")).ok_or_else(unknown_provider)?;
    let dry_run = request.query.dry_run()?;
    let bytes = verified_body(state, org, provider, &headers, body, WEBHOOK_BODY_LIMIT).await?;
    let delivery = checked_delivery_id(provider, &headers, &bytes)?;
    if seen_before(&state.deployer, org, provider, delivery.as_deref(), dry_run).await? {
        return Ok(render(
            PushReport::new(provider, delivery, dry_run).ignored(Ignored::DuplicateDelivery),
        ));
    }
    let read = if bytes.len() < BLOCKING_POOL_FROM {
        parse_delivery(provider, &headers, &bytes)
    } else {
        let (body, headers) = (bytes.clone(), headers.clone());
        on_blocking_pool(move || parse_delivery(provider, &headers, &body)).await?
    };
    let pushes = match read {
        Ok(Delivery::Pushes(pushes)) => pushes,
        Ok(Delivery::Ignored(reason)) => {
            let mut report = PushReport::new(provider, delivery, dry_run).ignored(reason.into());
            if reason == IgnoredReason::UnsupportedEvent {
                report.reached.message = Some(unsupported_event(org, provider, &headers));
            }
            return Ok(render(report));
        }
        Err(PayloadError::RepeatedEventHeader(header)) => {
            return Err(ApiError::invalid_field(header, "is given more than once"));
        }
        // A header, not the body: the body may well be a push.
        Err(PayloadError::MissingEventHeader(header)) => {
            return Err(ApiError::invalid_field(
                header,
                "is missing, so the kind of event cannot be told (the provider sends it with every delivery)",
            ));
        }
        Err(err @ PayloadError::TooManyBranches { .. }) => {
            return Err(ApiError::malformed(capitalized(&err.to_string())));
        }
        Err(err) => {
            // Azure DevOps authenticates any body, so another provider's push can pass.
            let why = match err {
                PayloadError::WrongShape { provider, detail } => {
                    format!(" (for {} push): {detail}", with_article(provider))
                }
                other => format!(": {other}"),
            };
            return Err(ApiError::malformed(format!(
                "The body is not a push payload{why}.{}",
                elsewhere(org, provider, &headers)
            )));
        }
    };
    let report = deploy_pushes(
        &state.deployer,
        PushDelivery {
            org,
            provider,
            delivery_id: delivery,
            pushes,
            dry_run,
            history: request.history(),
        },
    )
    .await?;
    Ok(render(report))
}

/// The delivery's id, or a 400 naming its header when it is given twice or is no id (a
/// redelivery could not be known by it).
pub(super) fn checked_delivery_id(
    provider: GitProvider,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Option<String>> {
    if let Some(header) = repeated_delivery_id_header(provider, headers) {
        return Err(ApiError::invalid_field(header, "is given more than once"));
    }
    delivery_id(provider, headers, body).map_err(|field| {
        ApiError::invalid_field(
            field,
            format!(
                "must be an id of at most {MAX_DELIVERY_ID} printable ASCII characters, by which a redelivery is known"
            ),
        )
    })
}

/// Why a delivery answered `UNSUPPORTED_EVENT` deploys nothing: it is another kind of event,
/// one for another provider's route (which it says), or a push that updates no branch. The
/// sentence names the event header and the value it expects, never the value received:
/// headers are never stored, and the answer's message is stored in the deliveries history.
fn unsupported_event(org: &str, provider: GitProvider, headers: &HeaderMap) -> String {
    let hint = elsewhere(org, provider, headers);
    let name = provider_name(provider);
    if !hint.is_empty() {
        return format!("Not {} push event.{hint}", with_article(name));
    }
    let expected = push_events(provider);
    let event = event_headers(provider)
        .iter()
        .find_map(|header| Some((*header, headers.get(*header)?)));
    match event {
        Some((_, value))
            if expected
                .iter()
                .any(|push| value.as_bytes().trim_ascii() == push.as_bytes()) =>
        {
            "A push that updates no branch (its ref is neither a branch nor a tag): nothing to deploy.".to_owned()
        }
        Some((header, _)) => format!(
            "Not a push event ({header} is not `{}`): only pushes deploy; the webhook should send push events.",
            expected.first().copied().unwrap_or("push")
        ),
        // Azure DevOps names its event in the body: `git.push`, updating a branch, deploys.
        None => format!(
            "Not {} push to a branch: only `git.push` events (Code pushed) that update a branch deploy.",
            with_article(name)
        ),
    }
}

/// `message` as a sentence.
fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>())
        .unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// 202 when something was queued, else 200; the response carries its [`Tally`] for the
/// metrics layer.
fn render(report: PushReport) -> Response {
    let status = if report.queued_any() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let tally = Tally {
        delivery_id: report.delivery_id.clone(),
        ..report.reached.tally()
    };
    let summary = DeliverySummary::from(&report);
    let mut response = (status, Json(report)).into_response();
    response.extensions_mut().insert(tally);
    response.extensions_mut().insert(summary);
    response
}
