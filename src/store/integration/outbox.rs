//! The inbox and the outbox (docs/INTEGRATION.md §2, §4): the reads of
//! ingestion, replay and the delivery workers, and the [`StateWrite`]s
//! that receive an event, queue a message, record a delivery outcome or a
//! replay, and close a CAPA, each written in the transaction of the entry
//! that records it. Each statement is a constant here.

use super::super::{Bind, StateWrite, Store, StoreError};
use crate::ledger::Seq;

/// Whether an event was recorded, by its key (`source` + `id`).
const EVENT_RECORDED: &str = "SELECT seq, entry_hash FROM inbox WHERE event_key = $1";

/// Receives an event into the inbox, pending; a second copy changes nothing.
const INBOX_RECEIVED: &str = "INSERT INTO inbox (event_key, source, event_id, type, kind, event_time, seq, entry_hash, received_at, correlation_id, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending') ON CONFLICT (event_key) DO NOTHING";

/// Queues a message, due at once.
const OUTBOX_ENQUEUED: &str = "INSERT INTO outbox (id, target, message_type, subject, body, correlation_id, created_seq, created_at, handover_hash, status, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10)";

/// A target's pending messages due by `$2`, in due order, at most `$3`.
const DUE_MESSAGES: &str = "SELECT id, message_type, subject, body, correlation_id, created_seq, created_at, handover_hash, attempts, next_attempt_at \
     FROM outbox WHERE target = $1 AND status = 'pending' AND next_attempt_at <= $2 ORDER BY next_attempt_at, created_seq LIMIT $3";

/// A target's pending messages.
const PENDING_FOR_TARGET: &str =
    "SELECT COUNT(*) FROM outbox WHERE target = $1 AND status = 'pending'";

/// A message delivered.
const OUTBOX_DELIVERED: &str = "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = $1, outcome_seq = $2, last_error = NULL WHERE id = $3 AND status = 'pending'";

/// A message given up on after its last attempt.
const OUTBOX_DEAD_LETTERED: &str = "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = $1, outcome_seq = $2 WHERE id = $3 AND status = 'pending'";

/// A failed attempt, with the next one scheduled.
const OUTBOX_RETRY_SCHEDULED: &str = "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3 AND status = 'pending'";

/// A dead letter with what its replay records.
const DEAD_HANDOVER: &str = "SELECT subject, handover_hash, target, attempts, last_error FROM outbox WHERE id = $1 AND status = 'dead'";

/// A dead letter queued again, due at once.
const OUTBOX_REPLAYED: &str = "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, last_error = NULL WHERE id = $2 AND status = 'dead'";

/// A CAPA closed.
const CAPA_CLOSED: &str = "UPDATE capas SET status = 'closed', closed_seq = $1 WHERE capa_id = $2";

/// The entry that recorded an event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecordedEventRow {
    /// The event entry.
    pub seq: Seq,
    /// Its hash.
    pub entry_hash: Vec<u8>,
}

/// A message due for delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueMessageRow {
    /// Message ID (the `webhook-id`).
    pub id: String,
    /// Message type.
    pub message_type: String,
    /// Subject.
    pub subject: String,
    /// The message data, JSON.
    pub body: String,
    /// Correlation.
    pub correlation_id: String,
    /// The hand-over entry.
    pub created_seq: Seq,
    /// Its time.
    pub created_at: String,
    /// Its hash.
    pub handover_hash: Vec<u8>,
    /// Attempts made.
    pub attempts: i64,
    /// When this attempt was scheduled.
    pub next_attempt_at: String,
}

/// A dead letter as its replay records it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadHandoverRow {
    /// Subject.
    pub subject: String,
    /// The hand-over entry's hash.
    pub handover_hash: Vec<u8>,
    /// Target.
    pub target: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
}

impl Store {
    /// The entry that recorded the event with key `event_key`, if any.
    ///
    /// # Errors
    /// A database error.
    pub async fn event_recorded(
        &self,
        event_key: &str,
    ) -> Result<Option<RecordedEventRow>, StoreError> {
        self.row(EVENT_RECORDED, &[Bind::Text(event_key.into())])
            .await
    }

    /// Pending messages of `target` due by `now`, in due order, at most
    /// `limit`.
    ///
    /// # Errors
    /// A database error.
    pub async fn due_messages(
        &self,
        target: &str,
        now: &str,
        limit: i64,
    ) -> Result<Vec<DueMessageRow>, StoreError> {
        self.rows(
            DUE_MESSAGES,
            &[
                Bind::Text(target.into()),
                Bind::Text(now.into()),
                Bind::Int(limit),
            ],
        )
        .await
    }

    /// How many messages of `target` are pending.
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_messages_for(&self, target: &str) -> Result<i64, StoreError> {
        Ok(self
            .row(PENDING_FOR_TARGET, &[Bind::Text(target.into())])
            .await?
            .map_or(0, |(n,)| n))
    }

    /// The dead letter `message_id`, if it is one.
    ///
    /// # Errors
    /// A database error.
    pub async fn dead_handover(
        &self,
        message_id: &str,
    ) -> Result<Option<DeadHandoverRow>, StoreError> {
        self.row(DEAD_HANDOVER, &[Bind::Text(message_id.into())])
            .await
    }
}

/// Receives an event into the inbox, pending, with the recording entry's
/// seq, hash and time (a second copy of the key changes nothing).
pub fn inbox_received(
    event_key: &str,
    source: &str,
    event_id: &str,
    type_sent: &str,
    kind: &str,
    event_time: Option<&str>,
    correlation_id: &str,
) -> StateWrite {
    StateWrite::Sql {
        sql: INBOX_RECEIVED,
        binds: vec![
            Bind::Text(event_key.to_owned()),
            Bind::Text(source.to_owned()),
            Bind::Text(event_id.to_owned()),
            Bind::Text(type_sent.to_owned()),
            Bind::Text(kind.to_owned()),
            Bind::OptText(event_time.map(str::to_owned)),
            Bind::Seq,
            Bind::Hash,
            Bind::At,
            Bind::Text(correlation_id.to_owned()),
        ],
    }
}

/// Puts a message (`body`, JSON) in the outbox, pending and due at once,
/// created by the hand-over entry that records it.
pub fn outbox_enqueued(
    message_id: &str,
    target: &str,
    message_type: &str,
    subject: &str,
    correlation_id: &str,
    body: &str,
) -> StateWrite {
    StateWrite::Sql {
        sql: OUTBOX_ENQUEUED,
        binds: vec![
            Bind::Text(message_id.to_owned()),
            Bind::Text(target.to_owned()),
            Bind::Text(message_type.to_owned()),
            Bind::Text(subject.to_owned()),
            Bind::Text(body.to_owned()),
            Bind::Text(correlation_id.to_owned()),
            Bind::Seq,
            Bind::At,
            Bind::Hash,
            Bind::At,
        ],
    }
}

/// A pending message delivered, at the outcome entry's time.
pub fn outbox_delivered(message_id: &str) -> StateWrite {
    StateWrite::Sql {
        sql: OUTBOX_DELIVERED,
        binds: vec![Bind::At, Bind::Seq, Bind::Text(message_id.to_owned())],
    }
}

/// A pending message dead-lettered after its last attempt failed with `error`.
pub fn outbox_dead_lettered(message_id: &str, error: &str) -> StateWrite {
    StateWrite::Sql {
        sql: OUTBOX_DEAD_LETTERED,
        binds: vec![
            Bind::Text(error.to_owned()),
            Bind::Seq,
            Bind::Text(message_id.to_owned()),
        ],
    }
}

/// A pending message's attempt failed with `error`; the next is due at
/// `next_attempt_at`.
pub fn outbox_retry_scheduled(message_id: &str, error: &str, next_attempt_at: &str) -> StateWrite {
    StateWrite::Sql {
        sql: OUTBOX_RETRY_SCHEDULED,
        binds: vec![
            Bind::Text(error.to_owned()),
            Bind::Text(next_attempt_at.to_owned()),
            Bind::Text(message_id.to_owned()),
        ],
    }
}

/// A dead letter queued again with no attempts, due at the replay entry's
/// time.
pub fn outbox_replayed(message_id: &str) -> StateWrite {
    StateWrite::Sql {
        sql: OUTBOX_REPLAYED,
        binds: vec![Bind::At, Bind::Text(message_id.to_owned())],
    }
}

/// A CAPA closed by the recording entry.
pub fn capa_closed(capa_id: &str) -> StateWrite {
    StateWrite::Sql {
        sql: CAPA_CLOSED,
        binds: vec![Bind::Seq, Bind::Text(capa_id.to_owned())],
    }
}
