//! New image tags from CI: `POST /organization/{org}/container/deploy` and `…/job/deploy`,
//! Qovery's paths and body, so an existing CI step works by changing the host.

use autodeploy_core::body::{Document, Fields};
use autodeploy_core::image::{ImageName, parse_image_name, validate_tag};
use autodeploy_core::matching::ImageTarget;
use autodeploy_core::registry::ImageSourceKind;
use axum::Json;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;

use super::AppState;
use super::auth::Deploy;
use super::error::ApiResult;
use super::extract::Valid;
use super::observe::DeliveryRequest;
use crate::deploy::history::DeliverySummary;
use crate::deploy::image::{ImageAnnouncement, ImageReport, deploy_image, source_name};
use crate::metrics::Tally;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/organization/{org}/container/deploy", post(deploy_container))
        .route("/organization/{org}/job/deploy", post(deploy_job))
}

/// `{"image_name": "acme/api", "tag": "1.4.0"}`; every bad field is named at once.
pub struct DeployBody {
    pub image: ImageName,
    pub tag: String,
}

impl Document for DeployBody {
    const SHAPE: &'static str = "{\"image_name\": \"…\", \"tag\": \"…\"}";

    fn read(fields: &mut Fields<'_>) -> Option<Self> {
        let image = fields.required::<String>("image_name").and_then(|name| {
            parse_image_name(&name)
                .map_err(|err| fields.error("image_name", err.to_string()))
                .ok()
        });
        let tag = fields.required::<String>("tag").and_then(|tag| {
            validate_tag(&tag)
                .map(|()| tag)
                .map_err(|err| fields.error("tag", err.to_string()))
                .ok()
        });
        Some(Self {
            image: image?,
            tag: tag?,
        })
    }
}

/// What every CI endpoint extracts, in this order: the caller's access before the body.
type CiRequest = (Deploy, DeliveryRequest, Valid<DeployBody>);

async fn deploy_container(request: CiRequest) -> ApiResult<Response> {
    ci_deploy(request, ImageTarget::Container).await
}

async fn deploy_job(request: CiRequest) -> ApiResult<Response> {
    ci_deploy(request, ImageTarget::Job).await
}

async fn ci_deploy((_, request, Valid(body)): CiRequest, target: ImageTarget) -> ApiResult<Response> {
    request.query.only(&["dry_run"])?;
    let report = deploy_image(
        &request.state.deployer,
        ImageAnnouncement {
            org: &request.org,
            target,
            image: &body.image,
            tag: &body.tag,
            source: ImageSourceKind::Api,
            dry_run: request.query.dry_run()?,
            remember: None,
            history: request.history(),
        },
    )
    .await?;
    Ok(render(report))
}

/// 202 when something was queued, else 200; the response carries its [`Tally`] for the
/// metrics layer.
pub fn render(report: ImageReport) -> Response {
    let status = if report.queued_any() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let tally = tally(&report);
    let summary = DeliverySummary::from(&report);
    let mut response = (status, Json(report)).into_response();
    response.extensions_mut().insert(tally);
    response.extensions_mut().insert(summary);
    response
}

/// What an image report counts, for its metrics line.
pub fn tally(report: &ImageReport) -> Tally {
    Tally {
        source: Some(source_name(report.source).to_owned()),
        ..report.reached.tally()
    }
}
