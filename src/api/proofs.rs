//! `GET /v1/checkpoint` and the RFC 9162 proofs.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AppState, Problem};
use crate::audit::{self, InclusionProof, ProofRequestError};
use crate::ledger::merkle::ProofPlan;

/// An RFC 9162 consistency proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// RFC 9162 consistency proof (hex).
    pub proof: Vec<String>,
    /// A signed checkpoint of exactly `to`, when one exists.
    pub checkpoint: Option<String>,
}

/// Parameters of the inclusion proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The entry.
    seq: crate::ledger::Seq,
    /// Tree size; default: the smallest signed checkpoint that covers the entry.
    size: Option<u64>,
}

/// Parameters of the consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// Older size (> 0).
    from: u64,
    /// Newer size; default: the newest signed checkpoint.
    to: Option<u64>,
}

/// The newest signed checkpoint, as a C2SP signed note.
#[utoipa::path(get, path = "/v1/checkpoint", responses((status = 200, description = "signed note", content_type = "text/plain")))]
pub async fn checkpoint(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    let cp = state
        .store
        .latest_checkpoint()
        .await?
        .ok_or_else(|| Problem::not_found("the ledger has no checkpoint yet"))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cp.note,
    ))
}

fn query_problem(e: QueryRejection, allowed: &str) -> Problem {
    Problem::bad_query(format!("{}; expected {allowed}", e.body_text()))
}

/// Proves that entry `seq` is in the tree of `size` (portable form, docs/FORMAT.md §2.1).
#[utoipa::path(get, path = "/v1/proofs/inclusion", params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, description = "bad parameters"), (status = 404, description = "no such entry or not yet checkpointed")))]
pub async fn inclusion(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<InclusionProof>, Problem> {
    let Query(q) = query.map_err(|e| query_problem(e, "seq=N and optionally size=S"))?;
    match audit::inclusion_proof(&state.store, q.seq, q.size).await {
        Ok(proof) => Ok(Json(proof)),
        Err(ProofRequestError::OutOfRange(m)) => Err(Problem::bad_query(m)),
        Err(ProofRequestError::NotFound(m)) => Err(Problem::not_found(m)),
        Err(ProofRequestError::Store(e)) => Err(e.into()),
    }
}

/// Proves that the tree of size `from` is a prefix of the tree of size `to`.
#[utoipa::path(get, path = "/v1/proofs/consistency", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, description = "bad parameters")))]
pub async fn consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, Problem> {
    let Query(q) = query.map_err(|e| query_problem(e, "from=M and optionally to=N"))?;
    let tree = state.store.size().await?;
    let (to, checkpoint) = match q.to {
        Some(to) => (
            to,
            state
                .store
                .checkpoint_at_least(to)
                .await?
                .filter(|c| c.size == to)
                .map(|c| c.note),
        ),
        None => {
            let cp = state
                .store
                .latest_checkpoint()
                .await?
                .ok_or_else(|| Problem::not_found("the ledger has no checkpoint yet"))?;
            (cp.size, Some(cp.note))
        }
    };
    if q.from == 0 || q.from > to || to > tree {
        return Err(Problem::bad_query(format!(
            "need 0 < from <= to <= {tree} (the ledger's size), got from {} to {to}",
            q.from
        )));
    }
    let plan = ProofPlan::consistency(q.from, to).map_err(|e| Problem::bad_query(e.to_string()))?;
    let proof = state.store.proof(&plan, &HashMap::new()).await?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        proof: proof.iter().map(|h| h.to_hex()).collect(),
        checkpoint,
    }))
}
