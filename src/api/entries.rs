//! `POST /v1/entries`, `GET /v1/entries`, `GET /v1/entries/{seq}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use std::collections::HashMap;

use super::{AppState, Caller, Problem};
use crate::identity::signature::{self, SignatureView, SourceSignatureView};
use crate::ledger::{Hash, Seq, Timestamp};
use crate::sequencer::record_request;
use crate::store::{EntryFilter, LIST_LIMIT_MAX, StoredEntry};

/// An append. Unknown members are rejected so that typos are not silently lost.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// A registered kind (GET /v1/kinds), e.g. `qms.capa.opened`.
    pub kind: String,
    /// The record the entry is about, `SCHEME:ID`, e.g. `qms:capa/CAPA-2026-014`.
    pub subject: String,
    /// Kind-specific content; a JSON object of at most 64 KiB.
    #[schema(value_type = Object)]
    pub payload: Map<String, Value>,
    /// Groups the entries of one business flow.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Hashes (hex) of earlier entries this one derives from; a correction names the corrected entry first.
    #[serde(default)]
    pub parents: Vec<String>,
    /// Why; required for corrections and administrative kinds.
    #[serde(default)]
    pub reason: Option<String>,
    /// The caller's key for safe retries (or the `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// What an append returns once the entry is durable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppendResponse {
    /// The entry's position.
    pub seq: Seq,
    /// The entry's hash (hex).
    pub hash: String,
    /// When the ledger recorded it.
    pub recorded_at: String,
    /// Tree size after its batch; a checkpoint of at least this size follows within 100 ms.
    pub tree_size: u64,
    /// True if an earlier entry with the same idempotency key and content was returned.
    pub replayed: bool,
}

/// One entry as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntryView {
    /// Position.
    pub seq: Seq,
    /// Hash (hex).
    pub hash: String,
    /// The entry (parsed from its canonical bytes).
    #[schema(value_type = Object)]
    pub entry: Value,
    /// The exact canonical bytes, as hashed.
    pub canonical: String,
    /// Seqs of later entries naming this one as a parent (corrections, annotations); only on GET /v1/entries/{seq}.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<Seq>>,
    /// Part 11 signatures on this entry: printed name, time and meaning (§11.50).
    pub signatures: Vec<SignatureView>,
    /// Signatures the source system (QMS, LMS) carried in the payload,
    /// labelled as such, with a verification status computed now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_signatures: Vec<SourceSignatureView>,
}

/// A page of entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntryPage {
    /// Entries in seq order.
    pub entries: Vec<EntryView>,
    /// Pass as `cursor` for the next page; absent on the last page. (A
    /// free-text page scans a bounded window of seqs, so it may hold fewer
    /// than `limit` entries, even none, and still have one.)
    pub next_cursor: Option<String>,
}

/// Filters and paging of `GET /v1/entries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Exact subject.
    subject: Option<String>,
    /// Exact kind.
    kind: Option<String>,
    /// Exact actor.
    actor: Option<String>,
    /// Exact correlation ID.
    correlation_id: Option<String>,
    /// Recorded at or after (RFC 3339).
    from: Option<String>,
    /// Recorded before (RFC 3339).
    to: Option<String>,
    /// Free text anywhere in the entry (payload, reason, subject),
    /// case-insensitive for ASCII.
    text: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

fn view(
    row: StoredEntry,
    children: Option<Vec<Seq>>,
    signatures: Vec<SignatureView>,
) -> Result<EntryView, Problem> {
    let entry: Value = serde_json::from_slice(&row.canonical)
        .map_err(|e| Problem::internal(&format!("stored entry {} is not JSON: {e}", row.seq)))?;
    let source_signatures = entry
        .get("payload")
        .map(signature::source_signatures)
        .unwrap_or_default();
    let canonical = String::from_utf8(row.canonical).map_err(|e| Problem::internal(&e))?;
    Ok(EntryView {
        seq: row.seq,
        hash: hex::encode(&row.hash),
        entry,
        canonical,
        children,
        signatures,
        source_signatures,
    })
}

/// The signatures on each of `seqs`, rendered once for every view.
async fn signatures_by_target(
    state: &AppState,
    seqs: &[Seq],
) -> Result<HashMap<Seq, Vec<SignatureView>>, Problem> {
    let mut out: HashMap<Seq, Vec<SignatureView>> = HashMap::new();
    for (target, entry) in state.store.signatures_on(seqs).await? {
        if let Some(v) = signature::view_of(entry.seq, &entry.canonical) {
            out.entry(target).or_default().push(v);
        }
    }
    Ok(out)
}

fn body_problem(rejection: BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large",
            "the body exceeds the server's limit (max_body_bytes); send smaller payloads (an entry's payload may be at most 64 KiB)",
        )
    } else {
        Problem::bad_json(format!("the request body could not be read: {rejection}"))
    }
}

/// Appends an entry. The entry is durable (committed) before this returns.
#[utoipa::path(post, path = "/v1/entries", request_body = AppendBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "alternative to the body's idempotency_key")),
    responses(
        (status = 201, body = AppendResponse, description = "appended"),
        (status = 200, body = AppendResponse, description = "replay: an entry with this idempotency key and content exists"),
        (status = 400, description = "malformed JSON (problem+json)"),
        (status = 401, description = "missing or invalid token"),
        (status = 403, description = "the token's scope does not include the kind, or the kind is written only by Trailmark or through POST /v1/events (problem type kind-not-appendable)"),
        (status = 409, description = "idempotency key used for different content"),
        (status = 413, description = "body too large"),
        (status = 422, description = "invalid entry: unknown kind, bad field, unknown parent"),
        (status = 503, description = "queue full or ledger unavailable; see Retry-After"),
    ),
    security(("bearer" = [])))]
pub async fn append(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = body.map_err(body_problem)?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct.to_str().unwrap_or("").starts_with("application/json")
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body must be JSON",
            "send `Content-Type: application/json`",
        ));
    }
    let body: AppendBody =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| {
                let at = e.path().to_string();
                let detail = if at == "." {
                    e.inner().to_string()
                } else {
                    format!("`{at}`: {}", e.inner())
                };
                Problem::bad_json(format!(
                    "{detail}; see GET /openapi.json for the AppendBody schema"
                ))
            })?;
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    Problem::bad_json("the Idempotency-Key header must be printable ASCII")
                })?
                .to_owned(),
        ),
        None => None,
    };
    let idempotency_key = match (body.idempotency_key, header_key) {
        (Some(b), Some(h)) if b != h => {
            return Err(Problem::from(crate::ledger::EntryError::Field {
                field: "idempotency_key",
                problem: "differs from the Idempotency-Key header; send one or make them equal"
                    .into(),
            }));
        }
        (b, h) => b.or(h),
    };
    if let Some(kind) = crate::ledger::kind::lookup(&body.kind)
        && !kind.api_appendable()
    {
        // Before the scope check: no token scope can grant this, and the
        // caller learns where the kind does come from.
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "kind-not-appendable",
            "This kind is not appended through POST /v1/entries",
            format!(
                "`{}` is {}; nothing was appended",
                kind.name,
                kind.writers.rule()
            ),
        )
        .with("kind", kind.name)
        .with("written_by", kind.writers.as_str()));
    }
    if !caller.may_append_kind(&body.kind) {
        return Err(Problem::forbidden(format!(
            "this token's scopes do not include kind `{}`; issue a token scoped to it",
            body.kind
        )));
    }
    if body.kind.starts_with("qms.")
        || body.kind.starts_with("lms.")
        || body.kind.starts_with("hr.")
    {
        signature::check_source_signatures(&body.payload).map_err(|e| {
            Problem::from(crate::ledger::EntryError::Field {
                field: "payload",
                problem: e.to_string(),
            })
        })?;
    }
    let mut request = record_request(&body.kind, caller.actor, &body.subject, body.payload, true)?;
    request.correlation_id = body.correlation_id;
    request.idempotency_key = idempotency_key;
    request.reason = body.reason;
    request.parents = body
        .parents
        .iter()
        .map(|p| {
            Hash::parse_hex(p).map_err(|m| crate::ledger::EntryError::Field {
                field: "parents",
                problem: format!("`{p}`: {m}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let receipt = state.sequencer.append(request).await?;
    let status = if receipt.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let response = AppendResponse {
        seq: receipt.seq,
        hash: receipt.hash.to_hex(),
        recorded_at: receipt.recorded_at,
        tree_size: receipt.tree_size,
        replayed: receipt.replayed,
    };
    let mut out = (status, Json(response)).into_response();
    out.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v1/entries/{}", receipt.seq)).expect("ASCII"),
    );
    if receipt.replayed {
        out.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(out)
}

fn time_bound(name: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| Timestamp::from_datetime(t.with_timezone(&chrono::Utc)).to_string())
                .map_err(|_| {
                    Problem::bad_query(format!(
                        "`{name}` must be an RFC 3339 time such as 2026-11-21T09:00:00Z, got `{v}`"
                    ))
                })
        })
        .transpose()
}

/// Lists entries in seq order, filtered, with cursor paging.
#[utoipa::path(get, path = "/v1/entries", params(ListQuery),
    responses((status = 200, body = EntryPage), (status = 400, description = "invalid filter"), (status = 401, description = "missing or invalid token")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<EntryPage>, Problem> {
    let Query(q) = query.map_err(|e| {
        Problem::bad_query(format!(
            "{}; allowed: subject, kind, actor, correlation_id, from, to, text, cursor, limit",
            e.body_text()
        ))
    })?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(Problem::bad_query(format!(
            "`limit` must be between 1 and {LIST_LIMIT_MAX}"
        )));
    }
    let after_seq = q
        .cursor
        .map(|c| {
            // A cursor past the last possible seq finds nothing, as any
            // cursor past the end does.
            c.parse::<u64>().map(Seq::clamped).map_err(|_| {
                Problem::bad_query("`cursor` must be the next_cursor of a previous page")
            })
        })
        .transpose()?;
    let text = q.text.filter(|t| !t.is_empty());
    // A free-text page scans at most a window of seqs after the cursor
    // (Store::text_scan_rows): it may hold fewer than `limit` entries, or
    // none, and still have a next_cursor until the window reaches the end.
    let window_end = match &text {
        Some(_) => Some(
            after_seq
                .map_or(0, |a| a.get().saturating_add(1))
                .saturating_add(state.store.text_scan_rows()),
        ),
        None => None,
    };
    let filter = EntryFilter {
        subject: q.subject,
        kind: q.kind,
        actor: q.actor,
        correlation_id: q.correlation_id,
        from: time_bound("from", q.from)?,
        to: time_bound("to", q.to)?,
        text,
        after_seq,
        before_seq: window_end.map(|end| Seq::new(end).unwrap_or(Seq::MAX)),
        limit,
    };
    let rows = state.store.list(&filter).await?;
    let next_cursor = if rows.len() == limit as usize {
        rows.last().map(|r| r.seq.to_string())
    } else {
        match window_end {
            Some(end) if end < state.store.size().await? => Some((end - 1).to_string()),
            _ => None,
        }
    };
    let seqs: Vec<Seq> = rows.iter().map(|r| r.seq).collect();
    let mut signatures = signatures_by_target(&state, &seqs).await?;
    let entries = rows
        .into_iter()
        .map(|r| {
            let sigs = signatures.remove(&r.seq).unwrap_or_default();
            view(r, None, sigs)
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(EntryPage {
        entries,
        next_cursor,
    }))
}

/// One entry, with the seqs of the entries that name it as a parent.
#[utoipa::path(get, path = "/v1/entries/{seq}", params(("seq" = u64, Path, description = "the entry's seq")),
    responses((status = 200, body = EntryView), (status = 404, description = "no such entry"), (status = 401, description = "missing or invalid token")),
    security(("bearer" = [])))]
pub async fn get_entry(
    State(state): State<AppState>,
    _caller: Caller,
    seq: Result<Path<u64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<EntryView>, Problem> {
    let Path(seq) = seq.map_err(|_| {
        Problem::bad_query("the path must be /v1/entries/{seq} with seq a non-negative integer")
    })?;
    let none = || Problem::not_found(format!("there is no entry {seq}"));
    let seq = Seq::new(seq).ok_or_else(none)?;
    let row = state.store.entry(seq).await?.ok_or_else(none)?;
    let children = state.store.children(seq).await?;
    let signatures = signatures_by_target(&state, &[seq])
        .await?
        .remove(&seq)
        .unwrap_or_default();
    Ok(Json(view(row, Some(children), signatures)?))
}
