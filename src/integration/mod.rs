//! The QMS-LMS integration (docs/INTEGRATION.md): events in, the rules
//! worker that turns them into hand-overs, the outbox delivery worker, and
//! the queries of the four integration points.
//!
//! ```text
//! api::integration --ingest--> event entry + inbox row (one commit) --> ack
//!                                     |
//!        rules::Worker (one task, inbox in seq order) --one group--> sequencer
//!                                     |   derived entries + projections + outbox rows
//!        delivery::Worker (per target) --Standard Webhooks--> LMS / QMS
//!                                         outcome entry + outbox row update
//! ```

pub mod capa;
pub mod delivery;
pub mod events;
pub mod queries;
pub mod reconcile;
pub mod rules;
pub use crate::webhook;

use crate::clock::Clock;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::config::IntegrationConfig;
use crate::ledger::{Actor, Subject, kind};
use crate::sequencer::{AppendError, AppendRequest, SequencerHandle};
use crate::store::{StateWrite, Store, StoreError};
use crate::telemetry::Metrics;
use events::Checked;

/// What can go wrong in the integration, for the API to map.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// The event or request is invalid: the member and what to fix.
    #[error(transparent)]
    Event(#[from] events::EventError),
    /// The caller may not send this.
    #[error("{0}")]
    Forbidden(String),
    /// The same `source` + `id` was recorded with other content.
    #[error("{0}")]
    Conflict(String),
    /// A record does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done in the record's state (closure before readiness).
    #[error("{message}")]
    Refused {
        /// What and why.
        message: String,
        /// Details (what is missing).
        details: Value,
    },
    /// The ledger refused or failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer for one event.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Ack {
    /// CloudEvents `id`.
    pub id: String,
    /// CloudEvents `source`.
    pub source: String,
    /// The event entry.
    pub seq: crate::ledger::Seq,
    /// Its hash.
    pub hash: String,
    /// True when this event was recorded before (nothing new was written).
    pub duplicate: bool,
}

/// The integration service: shared by the API handlers and the workers.
#[derive(Clone)]
pub struct Integration {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sequencer: SequencerHandle,
    config: IntegrationConfig,
    metrics: Metrics,
    rules_wake: Notify,
    delivery_wake: Notify,
    clock: Clock,
}

impl Integration {
    /// The service over a running sequencer.
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        config: IntegrationConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Integration {
        Integration {
            inner: Arc::new(Inner {
                store,
                sequencer,
                config,
                metrics,
                rules_wake: Notify::new(),
                delivery_wake: Notify::new(),
                clock,
            }),
        }
    }

    /// The clock the rules judge "now" by (the sequencer's).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The writer.
    pub fn sequencer(&self) -> &SequencerHandle {
        &self.inner.sequencer
    }

    /// The settings.
    pub fn config(&self) -> &IntegrationConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Wakes the rules worker (new events).
    pub fn wake_rules(&self) {
        self.inner.rules_wake.notify_one();
    }

    /// Wakes the delivery workers (new outbox rows).
    pub fn wake_delivery(&self) {
        self.inner.delivery_wake.notify_waiters();
    }

    pub(crate) async fn rules_woken(&self) {
        self.inner.rules_wake.notified().await;
    }

    pub(crate) fn delivery_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.delivery_wake.notified()
    }

    /// Queues a dead letter again, recorded as
    /// `integration.handover.replayed` (parent: the hand-over) with the
    /// reason; the outbox row returns to `pending` in the same commit.
    /// The caller has checked who may do this (API: the token's
    /// permission; console: re-authentication too).
    ///
    /// # Errors
    /// Not found (no dead letter with that ID), a blank reason, or the
    /// ledger's refusal.
    pub async fn replay(
        &self,
        actor: &Actor,
        id: &str,
        reason: &str,
    ) -> Result<crate::sequencer::Receipt, IntegrationError> {
        if reason.trim().is_empty() {
            return Err(IntegrationError::Refused {
                message: "a reason must say why the message is sent again".into(),
                details: Value::Null,
            });
        }
        let dead = self.inner.store.dead_handover(id).await?.ok_or_else(|| {
            IntegrationError::NotFound(format!(
                "no dead letter `{id}`; GET /v1/deadletters lists them"
            ))
        })?;
        let bad = |what: &str| {
            IntegrationError::Store(StoreError::Corrupt(format!("outbox row {id}: {what}")))
        };
        let mut payload = Map::new();
        payload.insert("message_id".into(), json!(id));
        payload.insert("target".into(), json!(dead.target));
        payload.insert("attempts_before".into(), json!(dead.attempts));
        payload.insert("last_error".into(), json!(dead.last_error));
        let request = AppendRequest {
            kind: &kind::INTEGRATION_HANDOVER_REPLAYED,
            actor: actor.clone(),
            subject: Subject::parse(&dead.subject).map_err(|_| bad("subject"))?,
            correlation_id: None,
            idempotency_key: None,
            parents: vec![
                crate::ledger::Hash::from_slice(&dead.handover_hash)
                    .map_err(|_| bad("hand-over hash"))?,
            ],
            reason: Some(reason.to_owned()),
            payload,
            effects: vec![crate::store::outbox_replayed(id)],
            parent_refs: vec![],
        };
        let receipt = self.inner.sequencer.append(request).await?;
        self.wake_delivery();
        Ok(receipt)
    }

    /// Records checked events (all or none) and acknowledges them: each is
    /// in the ledger before this returns. `principal` is the calling
    /// service's principal (`None` for a person, who may not send events);
    /// `may_append_kind` is the token's kind scope.
    ///
    /// # Errors
    /// Forbidden (principal or scope), conflict (same source + id, other
    /// content), or the ledger's refusal.
    pub async fn ingest(
        &self,
        actor: &Actor,
        principal: Option<&str>,
        may_append_kind: &(dyn Fn(&str) -> bool + Sync),
        events: Vec<Checked>,
    ) -> Result<Vec<Ack>, IntegrationError> {
        for (i, e) in events.iter().enumerate() {
            let system = e.event_type.system.as_str();
            let allowed = self.inner.config.senders.get(system);
            let ok = principal.is_some_and(|p| allowed.is_some_and(|a| a.iter().any(|x| x == p)));
            if !ok {
                self.inner.metrics.events_refused.inc();
                return Err(IntegrationError::Forbidden(format!(
                    "events[{i}]: {actor} may not send `{}` events; [integration.senders] {system} lists {}",
                    e.envelope.type_sent,
                    allowed.map_or_else(|| "nobody".to_owned(), |a| a.join(", "))
                )));
            }
            if !may_append_kind(e.event_type.kind) {
                self.inner.metrics.events_refused.inc();
                return Err(IntegrationError::Forbidden(format!(
                    "events[{i}]: the token's kind scope does not allow `{}`",
                    e.event_type.kind
                )));
            }
        }
        let mut acks: Vec<Option<Ack>> = vec![None; events.len()];
        let mut requests = Vec::new();
        let mut positions = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let key = e.idempotency_key();
            let event_key = key.trim_start_matches("ce:").to_owned();
            if let Some(seen) = self.inner.store.event_recorded(&event_key).await? {
                let seq = seen.seq;
                let stored = self.inner.store.entry(seq).await?;
                let same = stored
                    .as_ref()
                    .and_then(|s| serde_json::from_slice::<Value>(&s.canonical).ok())
                    .is_some_and(|v| v["payload"] == Value::Object(e.payload()));
                if !same {
                    self.inner.metrics.events_refused.inc();
                    return Err(IntegrationError::Conflict(format!(
                        "events[{i}]: source `{}` id `{}` was recorded as entry {seq} with other content; send new content under a new id",
                        e.envelope.source, e.envelope.id
                    )));
                }
                self.inner.metrics.events_duplicate.inc();
                acks[i] = Some(Ack {
                    id: e.envelope.id.clone(),
                    source: e.envelope.source.clone(),
                    seq,
                    hash: hex::encode(seen.entry_hash),
                    duplicate: true,
                });
                continue;
            }
            let correlation = e
                .envelope
                .correlation_id
                .clone()
                .unwrap_or_else(|| key.chars().take(67).collect());
            let kind = kind::lookup(e.event_type.kind).ok_or_else(|| {
                IntegrationError::Forbidden(format!("kind {} is not registered", e.event_type.kind))
            })?;
            requests.push(AppendRequest {
                kind,
                actor: actor.clone(),
                subject: Subject::parse(&e.data.subject()).map_err(|err| events::EventError {
                    field: "data".into(),
                    message: err.to_string(),
                })?,
                correlation_id: Some(correlation.clone()),
                idempotency_key: Some(key),
                parents: vec![],
                reason: None,
                payload: e.payload(),
                effects: vec![crate::store::inbox_received(
                    &event_key,
                    &e.envelope.source,
                    &e.envelope.id,
                    &e.envelope.type_sent,
                    e.event_type.kind,
                    e.time.as_deref(),
                    &correlation,
                )],
                parent_refs: vec![],
            });
            positions.push(i);
        }
        let receipts = self.inner.sequencer.append_group(requests).await?;
        for (receipt, i) in receipts.into_iter().zip(positions) {
            let e = &events[i];
            if receipt.replayed {
                self.inner.metrics.events_duplicate.inc();
            } else {
                self.inner
                    .metrics
                    .events_received
                    .get_or_create(&vec![("type".to_owned(), e.event_type.name.to_owned())])
                    .inc();
            }
            acks[i] = Some(Ack {
                id: e.envelope.id.clone(),
                source: e.envelope.source.clone(),
                seq: receipt.seq,
                hash: receipt.hash.to_hex(),
                duplicate: receipt.replayed,
            });
        }
        self.wake_rules();
        Ok(acks.into_iter().flatten().collect())
    }
}

/// The ID of an assignment: `A-` + the first 16 hex of SHA-256 over its
/// identity (person, document, version, origin), so the same duty gets the
/// same ID whichever event implies it first.
pub fn assignment_id(person: &str, document: &str, version: &str, origin: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [person, document, version, origin] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("A-{}", &hex::encode(h.finalize())[..16])
}

/// A fresh outbox message ID: `msg_` + 96 random bits, hex.
pub fn message_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("msg_{}", hex::encode(bytes))
}

/// The state write that puts a message in the outbox, in the transaction
/// of the hand-over entry that records it.
pub fn outbox_write(
    id: &str,
    target: &str,
    message_type: &str,
    subject: &str,
    correlation_id: &str,
    data: &Value,
) -> StateWrite {
    crate::store::outbox_enqueued(
        id,
        target,
        message_type,
        subject,
        correlation_id,
        &data.to_string(),
    )
}

/// A hand-over entry's payload: the message, its target and ID.
pub fn handover_payload(
    id: &str,
    target: &str,
    message_type: &str,
    data: &Value,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("message_id".into(), json!(id));
    m.insert("target".into(), json!(target));
    m.insert("message_type".into(), json!(message_type));
    m.insert("data".into(), data.clone());
    m
}
