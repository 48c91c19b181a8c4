//! The integration over HTTP (docs/INTEGRATION.md): CloudEvents and xAPI
//! in, schemas, CAPA closure readiness and closure, compliance, lineage,
//! dead letters and reconciliation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Caller, Principal, Problem};
use crate::identity::service::Reauth;
use crate::integration::events::{self, Envelope, EventError};
use crate::integration::queries::{self, ComplianceRow, DeadLetter, Lineage, Readiness};
use crate::integration::{Ack, IntegrationError, reconcile};

impl From<IntegrationError> for Problem {
    fn from(e: IntegrationError) -> Problem {
        match e {
            IntegrationError::Event(EventError { field, message }) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-event",
                "The event does not match its type's schema",
                format!(
                    "{field}: {message}; GET /v1/schemas lists the accepted types and their schemas"
                ),
            )
            .with("field", field),
            IntegrationError::Forbidden(m) => Problem::forbidden(m),
            IntegrationError::Conflict(m) => Problem::new(
                StatusCode::CONFLICT,
                "event-conflict",
                "The event ID was used for different content",
                m,
            ),
            IntegrationError::NotFound(m) => Problem::not_found(m),
            IntegrationError::Refused { message, details } => Problem::new(
                StatusCode::CONFLICT,
                "refused",
                "The request is refused in the record's current state",
                message,
            )
            .with("details", details),
            IntegrationError::Append(a) => Problem::from(a),
            IntegrationError::Store(s) => Problem::from(s),
        }
    }
}

/// What `POST /v1/events` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsResponse {
    /// One per event, in order.
    pub events: Vec<Ack>,
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, EventError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| EventError {
                field: name.into(),
                message: "is not ASCII".into(),
            })
        })
        .transpose()
}

fn json_body(body: &Bytes) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_json(format!(
            "the body is not well-formed JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn service_principal(caller: &Caller) -> Option<String> {
    match &caller.principal {
        Principal::Service(t) => Some(
            t.token
                .principal
                .strip_prefix("service:")
                .unwrap_or(&t.token.principal)
                .to_owned(),
        ),
        Principal::User(_) => None,
    }
}

async fn ingest(
    state: &AppState,
    caller: &Caller,
    envelopes: Vec<Envelope>,
    prefix_each: bool,
) -> Result<Vec<Ack>, Problem> {
    let mut checked = Vec::with_capacity(envelopes.len());
    for (i, e) in envelopes.into_iter().enumerate() {
        let c = events::check(e).map_err(|err| {
            state.metrics.events_refused.inc();
            Problem::from(IntegrationError::Event(if prefix_each {
                err.under(&format!("events[{i}]"))
            } else {
                err
            }))
        })?;
        checked.push(c);
    }
    let principal = service_principal(caller);
    let scope = |k: &str| caller.may_append_kind(k);
    Ok(state
        .integration
        .ingest(&caller.actor, principal.as_deref(), &scope, checked)
        .await?)
}

/// Receives CloudEvents 1.0: binary mode (`ce-*` headers, body = data),
/// structured mode (`application/cloudevents+json`) or a batch
/// (`application/cloudevents-batch+json`). Each event is in the ledger
/// before the answer; a redelivery answers `200` with `duplicate: true`.
#[utoipa::path(post, path = "/v1/events", request_body(content = Value, description = "a CloudEvent (binary or structured) or a batch"),
    responses((status = 202, body = EventsResponse, description = "recorded"), (status = 200, body = EventsResponse, description = "every event was a redelivery"),
              (status = 403, description = "sender not allowed for the type"), (status = 409, description = "same source and id, other content"),
              (status = 422, description = "unknown type or version, or data not matching the schema; `field` names the member")),
    security(("bearer" = [])))]
pub async fn post_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bad = |e: EventError| {
        state.metrics.events_refused.inc();
        Problem::from(IntegrationError::Event(e))
    };
    let (envelopes, batch) = if content_type.starts_with("application/cloudevents-batch+json") {
        let Value::Array(items) = json_body(&body)? else {
            return Err(Problem::bad_json("a batch must be a JSON array of events"));
        };
        if items.is_empty() || items.len() > events::BATCH_MAX {
            return Err(Problem::bad_json(format!(
                "a batch holds 1 to {} events",
                events::BATCH_MAX
            )));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            out.push(events::structured(item).map_err(|e| bad(e.under(&format!("events[{i}]"))))?);
        }
        (out, true)
    } else if content_type.starts_with("application/cloudevents+json") {
        (
            vec![events::structured(json_body(&body)?).map_err(bad)?],
            false,
        )
    } else if headers.contains_key("ce-specversion") {
        if !content_type.starts_with("application/json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The body's media type is not accepted",
                "binary-mode events carry JSON data: send Content-Type: application/json",
            ));
        }
        let get = |name: &str, required: bool| -> Result<Option<String>, Problem> {
            let v = header_text(&headers, name).map_err(bad)?;
            if required && v.is_none() {
                return Err(bad(EventError {
                    field: name.into(),
                    message: "is required in binary mode".into(),
                }));
            }
            Ok(v)
        };
        let specversion = get("ce-specversion", true)?.unwrap_or_default();
        let envelope = Envelope {
            id: get("ce-id", true)?.unwrap_or_default(),
            source: get("ce-source", true)?.unwrap_or_default(),
            type_sent: get("ce-type", true)?.unwrap_or_default(),
            time: get("ce-time", false)?,
            subject: get("ce-subject", false)?,
            dataschema: get("ce-dataschema", false)?,
            correlation_id: get("ce-correlationid", false)?,
            data: json_body(&body)?,
        };
        events::check_envelope(&envelope, &specversion).map_err(bad)?;
        (vec![envelope], false)
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body's media type is not accepted",
            "send a CloudEvent: binary mode (ce-* headers with application/json), application/cloudevents+json, or application/cloudevents-batch+json",
        ));
    };
    let acks = ingest(&state, &caller, envelopes, batch).await?;
    let status = if acks.iter().all(|a| a.duplicate) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(EventsResponse { events: acks })).into_response())
}

/// One accepted schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaEntry {
    /// Type name (without version).
    pub name: String,
    /// Version.
    pub version: u32,
    /// Whether it is the current version (older ones are upcast).
    pub current: bool,
    /// The system that sends it.
    pub system: String,
    /// The entry kind it is recorded as.
    pub kind: String,
    /// Where its JSON Schema is.
    pub url: String,
}

/// Every accepted event type and version.
#[utoipa::path(get, path = "/v1/schemas", responses((status = 200, body = Vec<SchemaEntry>)))]
pub async fn list_schemas() -> Json<Vec<SchemaEntry>> {
    Json(
        events::schema_list()
            .into_iter()
            .filter_map(|(name, version, current)| {
                let t = events::lookup(&name)?;
                Some(SchemaEntry {
                    url: format!("/v1/schemas/{name}/v{version}"),
                    system: t.system.as_str().into(),
                    kind: t.kind.into(),
                    name,
                    version,
                    current,
                })
            })
            .collect(),
    )
}

/// The JSON Schema (2020-12) of one type's version.
#[utoipa::path(get, path = "/v1/schemas/{name}/{version}",
    params(("name" = String, Path, description = "type name without version"), ("version" = String, Path, description = "`v1`, `v2`, ...")),
    responses((status = 200, body = Value, content_type = "application/schema+json"), (status = 404, description = "unknown type or version")))]
pub async fn get_schema(
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let v = version
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            Problem::not_found(format!("`{version}` is not a version; use v1, v2, ..."))
        })?;
    let schema = events::schema(&name, v).ok_or_else(|| {
        Problem::not_found(format!(
            "no schema for `{name}` v{v}; GET /v1/schemas lists them"
        ))
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/schema+json")],
        serde_json::to_string_pretty(&schema).unwrap_or_default(),
    )
        .into_response())
}

const XAPI_COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";
const XAPI_PASSED: &str = "http://adlnet.gov/expapi/verbs/passed";

/// Maps one xAPI statement to an `lms.completion.recorded` envelope.
fn xapi_envelope(statement: &Value, source: &str, field: &str) -> Result<Envelope, EventError> {
    let err = |f: &str, m: &str| EventError {
        field: format!("{field}.{f}"),
        message: m.into(),
    };
    let id = statement["id"].as_str().ok_or_else(|| {
        err(
            "id",
            "is required here: Trailmark recognises a redelivered statement by it",
        )
    })?;
    let person = statement["actor"]["account"]["name"]
        .as_str()
        .ok_or_else(|| err("actor.account.name", "is required: it is the person ID"))?;
    let outcome = match statement["verb"]["id"].as_str() {
        Some(XAPI_COMPLETED) => "completed",
        Some(XAPI_PASSED) => "passed",
        _ => {
            return Err(err(
                "verb.id",
                &format!("must be {XAPI_COMPLETED} or {XAPI_PASSED}"),
            ));
        }
    };
    let object = statement["object"]["id"].as_str().unwrap_or_default();
    let rest = object
        .strip_prefix("urn:trailmark:document:")
        .ok_or_else(|| {
            err(
                "object.id",
                "must be urn:trailmark:document:{document_id}:{version}",
            )
        })?;
    let (document, version) = rest.rsplit_once(':').ok_or_else(|| {
        err(
            "object.id",
            "must be urn:trailmark:document:{document_id}:{version}",
        )
    })?;
    let completed_at = statement["timestamp"]
        .as_str()
        .or_else(|| statement["stored"].as_str())
        .ok_or_else(|| err("timestamp", "is required: it is the completion time"))?;
    let mut data = json!({
        "person_id": person, "document_id": document, "version": version,
        "completed_at": completed_at, "outcome": outcome,
    });
    if outcome == "passed"
        && let Some(v) = statement["context"]["instructor"]["account"]["name"].as_str()
    {
        data["verified_by"] = json!(v);
    }
    Ok(Envelope {
        id: id.into(),
        source: source.into(),
        type_sent: "lms.completion.recorded.v1".into(),
        time: Some(completed_at.into()),
        subject: None,
        dataschema: None,
        correlation_id: None,
        data,
    })
}

/// Training completions as xAPI 1.0.3 statements (verbs `completed` and
/// `passed`), one or an array; answers the statement IDs.
#[utoipa::path(post, path = "/xapi/statements", request_body(content = Value, description = "an xAPI statement or an array of them"),
    responses((status = 200, body = Vec<String>, description = "statement IDs, each recorded"), (status = 422, description = "unsupported verb or object, or missing id")),
    security(("bearer" = [])))]
pub async fn xapi_statements(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    if let Some(v) = headers
        .get("x-experience-api-version")
        .and_then(|v| v.to_str().ok())
        && !v.starts_with("1.0")
    {
        return Err(Problem::bad_json(format!(
            "X-Experience-API-Version {v} is not supported; send 1.0.3"
        )));
    }
    let source = format!(
        "xapi:{}",
        service_principal(&caller).unwrap_or_else(|| caller.actor.to_string())
    );
    let (statements, many) = match json_body(&body)? {
        Value::Array(items) if !items.is_empty() && items.len() <= events::BATCH_MAX => {
            (items, true)
        }
        Value::Array(_) => {
            return Err(Problem::bad_json(format!(
                "send 1 to {} statements",
                events::BATCH_MAX
            )));
        }
        one => (vec![one], false),
    };
    let mut envelopes = Vec::with_capacity(statements.len());
    for (i, s) in statements.iter().enumerate() {
        let field = if many {
            format!("[{i}]")
        } else {
            "statement".into()
        };
        envelopes.push(xapi_envelope(s, &source, &field).map_err(|e| {
            state.metrics.events_refused.inc();
            Problem::from(IntegrationError::Event(e))
        })?);
    }
    let acks = ingest(&state, &caller, envelopes, many).await?;
    let ids: Vec<String> = acks.into_iter().map(|a| a.id).collect();
    Ok(([("x-experience-api-version", "1.0.3")], Json(ids)).into_response())
}

/// Whether every required completion (and verification) of a CAPA's
/// training actions is evidenced, and what is missing.
#[utoipa::path(get, path = "/v1/capas/{id}/closure-readiness", params(("id" = String, Path, description = "CAPA ID")),
    responses((status = 200, body = Readiness), (status = 404, description = "no training action of that CAPA was received")),
    security(("bearer" = [])))]
pub async fn closure_readiness(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Readiness>, Problem> {
    let r = queries::closure_readiness(&state.integration, &id).await?;
    if !r.known {
        return Err(Problem::not_found(format!(
            "no training action of CAPA `{id}` was received"
        )));
    }
    Ok(Json(r))
}

/// `POST /v1/capas/{id}/closure`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClosureBody {
    /// Why the CAPA is closed (recorded).
    pub reason: String,
}

/// The recorded closure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClosureResponse {
    /// The `qms.capa.closed` entry; sign it with `POST /v1/signatures` (`approved`).
    pub seq: crate::ledger::Seq,
    /// Its hash.
    pub hash: String,
}

/// Records a CAPA's closure, refused (409, and recorded as
/// `integration.capa.closure_refused`) until every required training is
/// evidenced (§11.10(f)).
#[utoipa::path(post, path = "/v1/capas/{id}/closure", params(("id" = String, Path, description = "CAPA ID")), request_body = ClosureBody,
    responses((status = 201, body = ClosureResponse), (status = 404, description = "unknown CAPA"),
              (status = 409, description = "not ready (missing listed in `details`) or closed already")),
    security(("bearer" = [])))]
pub async fn close_capa(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: ClosureBody = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_json(format!("the body must be {{\"reason\": \"...\"}}: {e}")))?;
    if body.reason.trim().is_empty() {
        return Err(Problem::bad_json(
            "`reason` must say why the CAPA is closed",
        ));
    }
    let receipt =
        crate::integration::capa::close(&state.integration, &caller.actor, &id, &body.reason)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(ClosureResponse {
            seq: receipt.seq,
            hash: receipt.hash.to_hex(),
        }),
    )
        .into_response())
}

/// `GET /v1/compliance` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ComplianceQuery {
    /// Start (RFC 3339 or `YYYY-MM-DD`), inclusive.
    pub from: String,
    /// End (RFC 3339 or `YYYY-MM-DD`), exclusive.
    pub to: String,
    /// One job function only.
    pub job_function: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A period bound as a query parameter: the message says which one.
pub(crate) fn period_bound(name: &str, text: &str) -> Result<String, Problem> {
    queries::period_bound(text).map_err(|m| Problem::bad_query(format!("`{name}`: {m}")))
}

/// The unified training-compliance record of a period (JSON or CSV).
#[utoipa::path(get, path = "/v1/compliance", params(ComplianceQuery),
    responses((status = 200, body = Vec<ComplianceRow>), (status = 400, description = "bad period")),
    security(("bearer" = [])))]
pub async fn compliance(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ComplianceQuery>,
) -> Result<Response, Problem> {
    let from = period_bound("from", &q.from)?;
    let to = period_bound("to", &q.to)?;
    if from >= to {
        return Err(Problem::bad_query("`from` must be before `to`"));
    }
    let now = crate::ledger::Timestamp::from_datetime(state.integration.clock().now()).to_string();
    let rows = queries::compliance(
        &state.integration,
        &from,
        &to,
        q.job_function.as_deref(),
        &now,
    )
    .await?;
    let csv = q.format.as_deref() == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"));
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            queries::compliance_csv(&rows),
        )
            .into_response());
    }
    Ok(Json(rows).into_response())
}

/// The lineage of a subject: what its entries came from and everything
/// derived from them, as entries and `parents` edges.
#[utoipa::path(get, path = "/v1/lineage/{subject}", params(("subject" = String, Path, description = "e.g. qms:capa/CAPA-2026-014")),
    responses((status = 200, body = Lineage), (status = 404, description = "no entry has that subject")),
    security(("bearer" = [])))]
pub async fn lineage(
    State(state): State<AppState>,
    Path(subject): Path<String>,
) -> Result<Json<Lineage>, Problem> {
    let l = queries::lineage(state.integration.store(), &subject).await?;
    if l.entries.is_empty() {
        return Err(Problem::not_found(format!(
            "no entry has subject `{subject}`"
        )));
    }
    Ok(Json(l))
}

/// Messages that exhausted their delivery attempts.
#[utoipa::path(get, path = "/v1/deadletters", responses((status = 200, body = Vec<DeadLetter>)), security(("bearer" = [])))]
pub async fn dead_letters(State(state): State<AppState>) -> Result<Json<Vec<DeadLetter>>, Problem> {
    Ok(Json(queries::dead_letters(&state.integration).await?))
}

/// `POST /v1/deadletters/{id}/replay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Why it is sent again (recorded).
    pub reason: String,
    /// Your user ID: a replay re-authenticates with both components
    /// (§11.200(a)(1)), as the console does.
    pub user_id: Option<String>,
    /// Your password.
    #[serde(default)]
    pub password: String,
}

/// Queues a dead letter again, recorded as `integration.handover.replayed`.
#[utoipa::path(post, path = "/v1/deadletters/{id}/replay", params(("id" = String, Path, description = "message ID")), request_body = ReplayBody,
    responses((status = 202, body = Value), (status = 404, description = "no dead letter with that ID")),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    // A replay is a person's decision, re-authenticated like every other
    // action the console asks the password for: an API token cannot.
    let session = caller.session()?;
    let body: ReplayBody = serde_json::from_slice(&body).map_err(|_| {
        Problem::bad_json(
            "the body must be {\"reason\": \"...\", \"user_id\": \"...\", \"password\": \"...\"}",
        )
    })?;
    if body.reason.trim().is_empty() {
        return Err(Problem::bad_json(
            "`reason` must say why the message is sent again",
        ));
    }
    state
        .identity
        .reauthenticate(
            session,
            body.user_id.as_deref(),
            &body.password,
            Reauth::Act(&format!("replay dead letter {id}")),
        )
        .await?;
    let receipt = state
        .integration
        .replay(&caller.actor, &id, &body.reason)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message_id": id, "seq": receipt.seq, "hash": receipt.hash.to_hex()})),
    )
        .into_response())
}

/// `POST /v1/reconciliations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationBody {
    /// The CloudEvents `source` whose events are counted.
    pub source: String,
    /// Start (RFC 3339), inclusive, of event `time`.
    pub from: String,
    /// End, exclusive.
    pub to: String,
    /// How many events the source sent in the period.
    pub count: u64,
    /// Lowercase hex SHA-256 of their IDs sorted byte-wise, joined by LF.
    pub id_set_sha256: String,
    /// The IDs themselves, to list the differences.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

/// Compares a source system's counts for a period with what Trailmark
/// recorded; the result is an entry (`matched` or `drift`).
#[utoipa::path(post, path = "/v1/reconciliations", request_body = ReconciliationBody,
    responses((status = 201, body = Value)), security(("bearer" = [])))]
pub async fn reconcile(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, Problem> {
    let b: ReconciliationBody = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_json(format!("{e}; see ReconciliationBody in GET /openapi.json"))
    })?;
    let claim = reconcile::Claim {
        from: period_bound("from", &b.from)?,
        to: period_bound("to", &b.to)?,
        source: b.source,
        count: b.count,
        id_set_sha256: b.id_set_sha256,
        ids: b.ids,
    };
    let payload = reconcile::record(&state.integration, &caller.actor, claim).await?;
    Ok((StatusCode::CREATED, Json(Value::Object(payload))).into_response())
}
