//! `GET /v1/reports/{name}` (docs/REPORTS.md §2, §5): a report type
//! generates a signed, recorded report; a report ID returns its record.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::{AppState, Caller, Principal, Problem};
use crate::report::{Format, ReportError, ReportType, Requester, Scope};
use crate::store::EntryFilter;

/// Parameters of a report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Lineage, or an audit trail of one subject.
    pub subject: Option<String>,
    /// Start of the period (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// End of the period (exclusive).
    pub to: Option<String>,
    /// Compliance: one job function (repeat the report per function, or leave out for all).
    pub job_function: Option<String>,
    /// Audit trail: include administrative and security entries.
    #[serde(default)]
    pub include_admin: bool,
    /// `pdf` (default), `jsonl` or `csv`; or use `Accept`.
    pub format: Option<String>,
}

impl From<ReportError> for Problem {
    fn from(e: ReportError) -> Problem {
        match e {
            ReportError::Input(m) => Problem::bad_query(m),
            ReportError::NotFound(m) => Problem::not_found(m),
            ReportError::NoSigner(m) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-report-signer",
                "Reports cannot be signed here",
                m,
            ),
            ReportError::Store(e) => e.into(),
            other => Problem::internal(&other),
        }
    }
}

fn format_of(q: &ReportQuery, headers: &HeaderMap) -> Result<Format, Problem> {
    if let Some(f) = &q.format {
        return Format::parse(f).ok_or_else(|| {
            Problem::bad_query(format!("`format` is `{f}`; use pdf, jsonl or csv"))
        });
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else if accept.contains("jsonl") {
        Format::Jsonl
    } else {
        Format::Pdf
    })
}

/// Generates a report (`lineage`, `compliance`, `audit-trail`), signs and
/// records it, and returns the file; or, for a report ID `R-…`, returns the
/// `report.generated` entry that records it.
#[utoipa::path(get, path = "/v1/reports/{name}", params(("name" = String, Path, description = "lineage, compliance, audit-trail, or a report ID R-…"), ReportQuery),
    responses((status = 200, description = "the report file (PDF, JSONL or CSV) or the record of a report ID"),
              (status = 400, description = "bad scope"), (status = 404, description = "nothing to report, or no such report")),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Response, Problem> {
    if name.starts_with("R-") {
        return record(&state, &name).await;
    }
    let ty = ReportType::parse(&name).ok_or_else(|| {
        Problem::not_found(format!(
            "no report type `{name}`: use lineage, compliance, audit-trail, or a report ID R-…"
        ))
    })?;
    let format = format_of(&q, &headers)?;
    let scope = Scope {
        subject: q.subject,
        from: q.from,
        to: q.to,
        job_functions: q.job_function.into_iter().collect(),
        include_admin: q.include_admin,
    };
    let printed_name = match &caller.principal {
        Principal::User(s) => s.user.printed_name.clone(),
        Principal::Service(_) => caller.actor.as_str().to_owned(),
    };
    let by = Requester {
        actor: caller.actor.clone(),
        printed_name,
    };
    let dir = tempfile::tempdir().map_err(|e| Problem::internal(&e))?;
    let path = dir.path().join(format!("report.{}", format.as_str()));
    let generated = state
        .reports
        .generate(ty, scope, format, &by, &path)
        .await?;
    let body = tokio::fs::read(&path)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let mut response = ([(header::CONTENT_TYPE, format.media_type())], body).into_response();
    let h = response.headers_mut();
    let disposition = format!(
        "attachment; filename=\"{}.{}\"",
        generated.report_id,
        format.as_str()
    );
    for (k, v) in [
        ("content-disposition", disposition),
        ("x-trailmark-report-id", generated.report_id.clone()),
        ("x-trailmark-report-sha256", generated.sha256.clone()),
        ("x-trailmark-entry-seq", generated.entry_seq.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Ok(response)
}

async fn record(state: &AppState, id: &str) -> Result<Response, Problem> {
    let filter = EntryFilter {
        subject: Some(format!("report:{id}")),
        kind: Some("report.generated".into()),
        limit: 1,
        ..EntryFilter::default()
    };
    let found = state.store.list(&filter).await?;
    let entry = found.into_iter().next().ok_or_else(|| {
        Problem::not_found(format!("no report `{id}` is recorded in this ledger"))
    })?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&entry.canonical).map_err(|e| Problem::internal(&e))?;
    Ok(Json(json!({
        "report_id": id,
        "seq": entry.seq,
        "hash": hex::encode(&entry.hash),
        "recorded_at": entry.recorded_at,
        "actor": entry.actor,
        "payload": parsed["payload"],
    }))
    .into_response())
}
