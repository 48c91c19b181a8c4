//! Health, readiness, metrics, the kind registry and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::{AppState, Problem};
use crate::ledger::kind::KINDS;

/// One registered kind.
#[derive(Serialize, ToSchema)]
pub struct KindView {
    name: &'static str,
    class: &'static str,
    api_appendable: bool,
    /// Who may write it: callers, source events, rules, delivery, Trailmark only.
    written_by: &'static str,
    reason_required: bool,
    description: &'static str,
}

/// The kinds the ledger accepts.
#[utoipa::path(get, path = "/v1/kinds", responses((status = 200, body = Vec<KindView>)))]
pub async fn kinds() -> Json<Vec<KindView>> {
    Json(
        KINDS
            .iter()
            .map(|k| KindView {
                name: k.name,
                class: k.class.as_str(),
                api_appendable: k.api_appendable(),
                written_by: k.writers.as_str(),
                reason_required: k.class.requires_reason(),
                description: k.description,
            })
            .collect(),
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and the sequencer accepts writes.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: database not answering");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the database is not answering",
        )
    })?;
    if state.sequencer.is_halted() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the ledger failed an integrity check and accepts no writes; run `trailmark verify`",
        ));
    }
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format"), (status = 401, description = "missing or invalid credential"), (status = 403, description = "the credential lacks metrics:read")), security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .queue_depth
        .set(i64::try_from(state.sequencer.queue_depth()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The OpenAPI 3.1 document.
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi().to_json().unwrap_or_default(),
    )
}

/// Any unknown path.
pub async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!(
        "{} is not a Trailmark endpoint; GET /openapi.json lists them",
        uri.path()
    ))
}
