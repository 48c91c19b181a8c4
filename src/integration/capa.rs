//! CAPA closure (docs/INTEGRATION.md §3, point 2): refused, and recorded as
//! `integration.capa.closure_refused`, until every required training is
//! evidenced; otherwise recorded as `qms.capa.closed` with the action and
//! completion entries as parents and a message to the QMS, in one append.

use serde_json::{Map, json};

use super::{Integration, IntegrationError, queries};
use crate::ledger::{Actor, Hash, Subject, kind};
use crate::sequencer::{AppendRequest, Receipt};
use crate::store::capa_closed;

/// Closes CAPA `id` for `actor`, with `reason`.
///
/// # Errors
/// `NotFound` for a CAPA without a training action; `Refused` when it is
/// closed already, or not ready (then with the refusal's entry in the
/// details); a ledger or database error.
pub async fn close(
    ig: &Integration,
    actor: &Actor,
    id: &str,
    reason: &str,
) -> Result<Receipt, IntegrationError> {
    let r = queries::closure_readiness(ig, id).await?;
    if !r.known {
        return Err(IntegrationError::NotFound(format!(
            "no training action of CAPA `{id}` was received"
        )));
    }
    if r.status == "closed" {
        return Err(IntegrationError::Refused {
            message: format!("CAPA `{id}` is closed already"),
            details: json!({}),
        });
    }
    let subject = Subject::parse(&format!("qms:capa/{id}"))
        .map_err(|e| IntegrationError::NotFound(format!("CAPA `{id}`: {e}")))?;
    let action_hashes: Vec<Hash> = r
        .actions
        .iter()
        .filter_map(|a| {
            a["entry_hash"]
                .as_str()
                .and_then(|h| Hash::parse_hex(h).ok())
        })
        .collect();
    if !r.ready {
        let mut payload = Map::new();
        payload.insert("capa_id".into(), json!(id));
        payload.insert("missing".into(), json!(r.missing));
        payload.insert("reason_given".into(), json!(reason));
        let refused = AppendRequest {
            kind: &kind::INTEGRATION_CAPA_CLOSURE_REFUSED,
            actor: actor.clone(),
            subject,
            correlation_id: None,
            idempotency_key: None,
            parents: action_hashes,
            reason: None,
            payload,
            effects: vec![],
            parent_refs: vec![],
        };
        let receipt = ig.sequencer().append(refused).await?;
        return Err(IntegrationError::Refused {
            message: format!(
                "CAPA `{id}` cannot close: {} required training item(s) are not evidenced; the refusal is entry {}",
                r.missing.len(),
                receipt.seq
            ),
            details: json!({"missing": r.missing, "refusal_seq": receipt.seq}),
        });
    }
    let mut parents = action_hashes;
    for item in &r.required {
        if let Some(h) = item["completion_entry_hash"]
            .as_str()
            .and_then(|h| Hash::parse_hex(h).ok())
            && !parents.contains(&h)
        {
            parents.push(h);
        }
    }
    parents.truncate(256);
    let data = json!({"capa_id": id, "reason": reason, "closed_by": actor.to_string(),
                      "evidence": r.required});
    let message = super::message_id();
    let mut payload = super::handover_payload(&message, "qms", "qms.capa.closed", &data);
    payload.insert("capa_id".into(), json!(id));
    let correlation = format!("capa-{id}");
    let closed = AppendRequest {
        kind: &kind::QMS_CAPA_CLOSED,
        actor: actor.clone(),
        subject: subject.clone(),
        correlation_id: Some(correlation.chars().take(128).collect()),
        idempotency_key: None,
        parents,
        reason: Some(reason.to_owned()),
        payload,
        effects: vec![
            capa_closed(id),
            super::outbox_write(
                &message,
                "qms",
                "qms.capa.closed",
                subject.as_str(),
                &correlation,
                &data,
            ),
        ],
        parent_refs: vec![],
    };
    let receipt = ig.sequencer().append(closed).await?;
    ig.metrics()
        .handovers
        .get_or_create(&crate::telemetry::label("target", "qms"))
        .inc();
    ig.wake_delivery();
    Ok(receipt)
}
