//! Reconciliation (docs/INTEGRATION.md): a source system's count and ID-set
//! hash for a period, compared with what Trailmark recorded from it; the
//! comparison is recorded as `integration.reconciliation.matched` or
//! `integration.reconciliation.drift`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::{Integration, IntegrationError, queries};
use crate::ledger::{Actor, Subject, kind};
use crate::sequencer::AppendRequest;

/// What a source system says it sent from `source` with event time in
/// `[from, to)` (both already normalised by `queries::period_bound`).
#[derive(Debug, Clone)]
pub struct Claim {
    /// The CloudEvents `source`.
    pub source: String,
    /// Start, inclusive.
    pub from: String,
    /// End, exclusive.
    pub to: String,
    /// How many events the source sent.
    pub count: u64,
    /// Lowercase hex SHA-256 of their IDs sorted byte-wise, joined by LF.
    pub id_set_sha256: String,
    /// The IDs themselves, to list the differences.
    pub ids: Option<Vec<String>>,
}

/// At most this many IDs are listed on each side of a difference.
const LISTED: usize = 1000;

/// Compares `claim` with the record and appends the result for `actor`;
/// returns the entry's payload with `matched` and `seq` added.
///
/// # Errors
/// A database or ledger error.
pub async fn record(
    ig: &Integration,
    actor: &Actor,
    claim: Claim,
) -> Result<Map<String, Value>, IntegrationError> {
    let (count, hash, ids) = queries::seen_from(ig, &claim.source, &claim.from, &claim.to).await?;
    let matched = count == claim.count && hash == claim.id_set_sha256.to_ascii_lowercase();
    let mut payload = Map::new();
    payload.insert("source".into(), json!(claim.source));
    payload.insert("from".into(), json!(claim.from));
    payload.insert("to".into(), json!(claim.to));
    payload.insert("source_count".into(), json!(claim.count));
    payload.insert("source_id_set_sha256".into(), json!(claim.id_set_sha256));
    payload.insert("recorded_count".into(), json!(count));
    payload.insert("recorded_id_set_sha256".into(), json!(hash));
    if let Some(theirs) = &claim.ids {
        let ours: BTreeSet<&String> = ids.iter().collect();
        let theirs: BTreeSet<&String> = theirs.iter().collect();
        let missing: Vec<&&String> = theirs.difference(&ours).take(LISTED).collect();
        let extra: Vec<&&String> = ours.difference(&theirs).take(LISTED).collect();
        payload.insert("missing_in_trailmark".into(), json!(missing));
        payload.insert("unknown_to_source".into(), json!(extra));
    }
    if !matched {
        ig.metrics().reconciliation_drift.inc();
        tracing::warn!(source = %claim.source, source_count = claim.count, recorded = count, "reconciliation drift");
    }
    let kind = if matched {
        &kind::INTEGRATION_RECONCILIATION_MATCHED
    } else {
        &kind::INTEGRATION_RECONCILIATION_DRIFT
    };
    let subject = Subject::parse("integration:reconciliation")
        .map_err(|e| IntegrationError::NotFound(format!("the reconciliation subject: {e}")))?;
    let request = AppendRequest::new(kind, actor.clone(), subject, payload.clone());
    let receipt = ig.sequencer().append(request).await?;
    payload.insert("matched".into(), json!(matched));
    payload.insert("seq".into(), json!(receipt.seq));
    Ok(payload)
}
