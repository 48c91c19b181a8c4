//! Reads of the integration tables for the queries of the integration points
//! (`crate::integration::queries`: closure readiness, compliance, lineage,
//! dead letters, reconciliation counts, backlog), the console's operations
//! and review pages, and the demo. Each statement is a constant here and
//! each read a method returning named rows; what the rows mean for a status
//! or a page stays with the caller.

use super::super::{Backend, Bind, Store, StoreError, StoredEntry, entry_from_row};
use crate::ledger::Seq;

/// A CAPA's status and readiness as last announced.
const CAPA_STATE: &str = "SELECT status, ready FROM capas WHERE capa_id = $1";

/// The training actions of a CAPA.
const CAPA_ACTIONS: &str = "SELECT action_id, document_id, version, verification_required, due_at, seq, entry_hash \
     FROM capa_actions WHERE capa_id = $1 ORDER BY action_id";

/// The assignments a CAPA requires (not cancelled), with their evidence.
const CAPA_ASSIGNMENTS: &str = "SELECT assignment_id, person_id, document_id, version, action_id, verification_required, status, verified, completed_at, completion_hash, entry_hash \
     FROM assignments WHERE capa_id = $1 AND status <> 'cancelled' ORDER BY assignment_id";

/// Revisions effective in `[$1, $2)`, in effective order.
const REVISIONS_EFFECTIVE: &str = "SELECT document_id, version, effective_at FROM document_versions \
     WHERE effective_at >= $1 AND effective_at < $2 ORDER BY effective_at, document_id, version";

/// How long a version is current: its entry, its retirement and the next
/// version's effective time.
const REVISION_SPAN: &str = "SELECT v.known_seq, v.retired_at, \
     (SELECT MIN(d.effective_at) FROM document_versions d WHERE d.document_id = v.document_id AND d.effective_at > v.effective_at) AS next_effective_at \
     FROM document_versions v WHERE v.document_id = $1 AND v.version = $2";

/// Who the training matrix requires on a document: people in a mapped job
/// function from before `$2` until after `$3`, with the event entries (the
/// first parent of the `integration.event.applied` that wrote each row) of
/// the function, the name and the matrix.
const REQUIRED_PEOPLE: &str = "SELECT DISTINCT pf.person_id, tm.job_function, p.name, \
     (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = pf.known_seq AND ep.position = 0) AS function_event_seq, \
     (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = p.known_seq AND ep.position = 0) AS name_event_seq, \
     (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = tm.known_seq AND ep.position = 0) AS matrix_event_seq \
     FROM training_matrix tm JOIN person_functions pf ON pf.job_function = tm.job_function LEFT JOIN people p ON p.person_id = pf.person_id \
     WHERE tm.document_id = $1 AND tm.superseded_seq IS NULL AND pf.superseded_seq IS NULL AND pf.valid_from < $2 AND (pf.valid_to IS NULL OR pf.valid_to > $3)";

/// The SOP assignments of a version in creation order. A cancelled one
/// comes with when it ended, in business time: the next version's
/// effective time (after `$3`, the version's) for a supersession, otherwise
/// when the cancellation was recorded.
const SOP_ASSIGNMENTS: &str = "SELECT a.person_id, a.assignment_id AS id, a.created_at, a.due_at, a.status, a.entry_hash AS hash, a.created_seq AS seq, \
     CASE WHEN a.status <> 'cancelled' THEN NULL \
          WHEN a.cancel_reason = 'superseded by a newer version' THEN \
               (SELECT MIN(d.effective_at) FROM document_versions d WHERE d.document_id = a.document_id AND d.effective_at > $3) \
          ELSE (SELECT e.recorded_at FROM entries e WHERE e.seq = a.closed_seq) END AS ended_at, \
     a.required_from, CASE WHEN a.status = 'cancelled' THEN a.closed_seq END AS closed_seq, CASE WHEN a.status = 'cancelled' THEN a.cancel_reason END AS cancel_reason, \
     CASE WHEN a.status = 'cancelled' AND a.cancel_reason = 'superseded by a newer version' THEN \
          (SELECT d.known_seq FROM document_versions d WHERE d.document_id = a.document_id AND d.effective_at > $3 ORDER BY d.effective_at, d.version LIMIT 1) END AS superseded_by \
     FROM assignments a WHERE a.document_id = $1 AND a.version = $2 AND a.origin = 'sop' ORDER BY a.created_seq";

/// The completions of a version, earliest first.
const VERSION_COMPLETIONS: &str = "SELECT person_id, completed_at, entry_hash, seq FROM completions \
     WHERE document_id = $1 AND version = $2 ORDER BY completed_at";

/// The first entries about a subject, where a lineage walk starts.
const LINEAGE_SEEDS: &str = "SELECT seq FROM entries WHERE subject = $1 ORDER BY seq LIMIT 1000";

/// An entry as a lineage graph shows it.
const LINEAGE_ENTRY: &str =
    "SELECT seq, hash, kind, subject, recorded_at, actor FROM entries WHERE seq = $1";

/// IDs of the events received from a source with event time in `[$2, $3)`.
const EVENTS_FROM_SOURCE: &str =
    "SELECT event_id FROM inbox WHERE source = $1 AND event_time >= $2 AND event_time < $3";

/// Every dead letter, oldest first.
const DEAD_LETTERS: &str = "SELECT id, target, message_type, subject, attempts, last_error, created_seq, correlation_id \
     FROM outbox WHERE status = 'dead' ORDER BY created_seq";

/// Events received and not yet applied.
const EVENTS_WAITING: &str = "SELECT COUNT(*) FROM inbox WHERE status IN ('pending', 'parked')";

/// Messages not yet delivered.
const MESSAGES_WAITING: &str = "SELECT COUNT(*) FROM outbox WHERE status = 'pending'";

/// Inbox rows by status.
const INBOX_BY_STATUS: &str = "SELECT status, COUNT(*) FROM inbox GROUP BY status ORDER BY status";

/// Outbox rows by status.
const OUTBOX_BY_STATUS: &str =
    "SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status";

/// Outbox rows by target and status, with the oldest creation time.
const OUTBOX_BY_TARGET: &str = "SELECT target, status, COUNT(*) AS messages, MIN(created_at) AS oldest_created_at \
     FROM outbox GROUP BY target, status";

/// When the newest delivered messages of a target were created and delivered.
const DELIVERY_TIMES: &str = "SELECT created_at, delivered_at FROM outbox \
     WHERE target = $1 AND status = 'delivered' AND delivered_at IS NOT NULL ORDER BY created_seq DESC LIMIT $2";

/// Entries by kind, most frequent first.
const ENTRIES_BY_KIND: &str =
    "SELECT kind, COUNT(*) FROM entries GROUP BY kind ORDER BY COUNT(*) DESC, kind";

/// The newest entry of a kind.
const LATEST_OF_KIND: &str = "SELECT seq, hash, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key, seal \
     FROM entries WHERE kind = $1 ORDER BY seq DESC LIMIT 1";

/// The first entry recorded at or after a time.
const FIRST_RECORDED_SINCE: &str =
    "SELECT seq FROM entries WHERE recorded_at >= $1 ORDER BY recorded_at, seq LIMIT 1";

/// When an assignment is due, and whose training on what it is.
const ASSIGNMENT_DUE: &str =
    "SELECT due_at, person_id, document_id, version FROM assignments WHERE assignment_id = $1";

/// Creation entries of open assignments created before entry `$1`, due at
/// or before `$2`, and due after `$3` or created at or after entry `$4`;
/// at most `$5`.
const OVERDUE_ASSIGNMENTS: &str = "SELECT created_seq FROM assignments WHERE status = 'open' AND created_seq < $1 \
     AND due_at <= $2 AND (due_at > $3 OR created_seq >= $4) ORDER BY due_at, assignment_id LIMIT $5";

/// A CAPA's status (`open`, `closed`) and whether it was announced ready (1).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CapaStateRow {
    /// `open` or `closed`.
    pub status: String,
    /// 1 once readiness was announced to the QMS.
    pub ready: i64,
}

/// A training action of a CAPA.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CapaActionRow {
    /// Action ID.
    pub action_id: String,
    /// Document to train on.
    pub document_id: String,
    /// Its version.
    pub version: String,
    /// 1 when a trainer must verify.
    pub verification_required: i64,
    /// Due.
    pub due_at: String,
    /// The action's entry.
    pub seq: Seq,
    /// Its hash.
    pub entry_hash: Vec<u8>,
}

/// An assignment a CAPA requires, with its evidence.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CapaAssignmentRow {
    /// Assignment ID.
    pub assignment_id: String,
    /// Person.
    pub person_id: String,
    /// Document.
    pub document_id: String,
    /// Version.
    pub version: String,
    /// The CAPA action that required it.
    pub action_id: Option<String>,
    /// 1 when a trainer must verify.
    pub verification_required: i64,
    /// `open`, `completed`...
    pub status: String,
    /// 1 once verified.
    pub verified: i64,
    /// When completed.
    pub completed_at: Option<String>,
    /// The completion entry's hash.
    pub completion_hash: Option<Vec<u8>>,
    /// The assignment entry's hash.
    pub entry_hash: Vec<u8>,
}

/// A document version that went effective.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevisionRow {
    /// Document.
    pub document_id: String,
    /// Version.
    pub version: String,
    /// When it became effective.
    pub effective_at: String,
}

/// How long a version is current.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevisionSpanRow {
    /// The revision entry.
    pub known_seq: Seq,
    /// When the document was retired.
    pub retired_at: Option<String>,
    /// When the next version became effective.
    pub next_effective_at: Option<String>,
}

/// A person the training matrix requires, through one job function.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequiredPersonRow {
    /// Person.
    pub person_id: String,
    /// The mapped job function they hold.
    pub job_function: String,
    /// Their name from HR master data.
    pub name: Option<String>,
    /// The event entry of the job function.
    pub function_event_seq: Option<Seq>,
    /// The event entry of the name.
    pub name_event_seq: Option<Seq>,
    /// The event entry of the matrix row.
    pub matrix_event_seq: Option<Seq>,
}

/// An SOP assignment of a version, as the compliance query reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SopAssignmentRow {
    /// Person.
    pub person_id: String,
    /// Assignment ID.
    pub id: String,
    /// When it was created (its entry's time).
    pub created_at: String,
    /// Due.
    pub due_at: String,
    /// `open`, `completed` or `cancelled`.
    pub status: String,
    /// The assignment entry's hash.
    pub hash: Vec<u8>,
    /// The assignment entry.
    pub seq: Seq,
    /// When a cancelled assignment ended, in business time.
    pub ended_at: Option<String>,
    /// From when the person had to be trained, if later than effective.
    pub required_from: Option<String>,
    /// The cancellation entry of a cancelled assignment.
    pub closed_seq: Option<Seq>,
    /// Why a cancelled assignment was cancelled.
    pub cancel_reason: Option<String>,
    /// The superseding revision's entry, for a supersession.
    pub superseded_by: Option<Seq>,
}

/// A completion of a version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionCompletionRow {
    /// Person.
    pub person_id: String,
    /// When completed.
    pub completed_at: String,
    /// The completion entry's hash.
    pub entry_hash: Vec<u8>,
    /// The completion entry.
    pub seq: Seq,
}

/// An entry as a lineage graph shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LineageEntryRow {
    /// Position.
    pub seq: Seq,
    /// Hash.
    pub hash: Vec<u8>,
    /// Kind.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Recording time.
    pub recorded_at: String,
    /// Actor.
    pub actor: String,
}

/// A message that could not be delivered (also what `GET /v1/deadletters`
/// answers, as `DeadLetter`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterRow {
    /// Message ID.
    pub id: String,
    /// Target.
    pub target: String,
    /// Message type.
    pub message_type: String,
    /// Subject.
    pub subject: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// The hand-over entry.
    pub created_seq: Seq,
    /// Correlation.
    pub correlation_id: String,
}

/// How many messages of a target are in one status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxTallyRow {
    /// Target.
    pub target: String,
    /// Status.
    pub status: String,
    /// Messages.
    pub messages: i64,
    /// When the oldest of them was created.
    pub oldest_created_at: Option<String>,
}

/// When a delivered message was created and delivered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryTimesRow {
    /// Created (its hand-over entry's time).
    pub created_at: String,
    /// Delivered (its outcome entry's time).
    pub delivered_at: String,
}

/// When an assignment is due, and whose training on what it is.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AssignmentDueRow {
    /// Due.
    pub due_at: String,
    /// Person.
    pub person_id: String,
    /// Document.
    pub document_id: String,
    /// Version.
    pub version: String,
}

/// The single column of each row.
fn firsts<T>(rows: Vec<(T,)>) -> Vec<T> {
    rows.into_iter().map(|(v,)| v).collect()
}

impl Store {
    /// A CAPA's status and announced readiness, if Trailmark knows it.
    ///
    /// # Errors
    /// A database error.
    pub async fn capa_state(&self, capa_id: &str) -> Result<Option<CapaStateRow>, StoreError> {
        self.row(CAPA_STATE, &[Bind::Text(capa_id.into())]).await
    }

    /// The training actions of a CAPA, by action ID.
    ///
    /// # Errors
    /// A database error.
    pub async fn capa_actions(&self, capa_id: &str) -> Result<Vec<CapaActionRow>, StoreError> {
        self.rows(CAPA_ACTIONS, &[Bind::Text(capa_id.into())]).await
    }

    /// The assignments a CAPA requires (cancelled ones left out), by ID.
    ///
    /// # Errors
    /// A database error.
    pub async fn capa_assignments(
        &self,
        capa_id: &str,
    ) -> Result<Vec<CapaAssignmentRow>, StoreError> {
        self.rows(CAPA_ASSIGNMENTS, &[Bind::Text(capa_id.into())])
            .await
    }

    /// Revisions effective in `[from, to)`, in effective order.
    ///
    /// # Errors
    /// A database error.
    pub async fn revisions_effective(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<RevisionRow>, StoreError> {
        self.rows(
            REVISIONS_EFFECTIVE,
            &[Bind::Text(from.into()), Bind::Text(to.into())],
        )
        .await
    }

    /// How long a version of a document is current.
    ///
    /// # Errors
    /// A database error.
    pub async fn revision_span(
        &self,
        document_id: &str,
        version: &str,
    ) -> Result<Option<RevisionSpanRow>, StoreError> {
        self.row(
            REVISION_SPAN,
            &[Bind::Text(document_id.into()), Bind::Text(version.into())],
        )
        .await
    }

    /// Who the training matrix requires on a document: holders of a mapped
    /// job function taken up before `until` and held after `effective_at`,
    /// one row per person and function.
    ///
    /// # Errors
    /// A database error.
    pub async fn required_people(
        &self,
        document_id: &str,
        until: &str,
        effective_at: &str,
    ) -> Result<Vec<RequiredPersonRow>, StoreError> {
        self.rows(
            REQUIRED_PEOPLE,
            &[
                Bind::Text(document_id.into()),
                Bind::Text(until.into()),
                Bind::Text(effective_at.into()),
            ],
        )
        .await
    }

    /// The SOP assignments of a version (effective at `effective_at`), in
    /// creation order.
    ///
    /// # Errors
    /// A database error.
    pub async fn sop_assignments(
        &self,
        document_id: &str,
        version: &str,
        effective_at: &str,
    ) -> Result<Vec<SopAssignmentRow>, StoreError> {
        self.rows(
            SOP_ASSIGNMENTS,
            &[
                Bind::Text(document_id.into()),
                Bind::Text(version.into()),
                Bind::Text(effective_at.into()),
            ],
        )
        .await
    }

    /// The completions of a version, earliest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn version_completions(
        &self,
        document_id: &str,
        version: &str,
    ) -> Result<Vec<VersionCompletionRow>, StoreError> {
        self.rows(
            VERSION_COMPLETIONS,
            &[Bind::Text(document_id.into()), Bind::Text(version.into())],
        )
        .await
    }

    /// Seqs of the first 1,000 entries about `subject`.
    ///
    /// # Errors
    /// A database error.
    pub async fn lineage_seeds(&self, subject: &str) -> Result<Vec<Seq>, StoreError> {
        Ok(firsts(
            self.rows(LINEAGE_SEEDS, &[Bind::Text(subject.into())])
                .await?,
        ))
    }

    /// Entry `seq` as a lineage graph shows it.
    ///
    /// # Errors
    /// A database error.
    pub async fn lineage_entry(&self, seq: Seq) -> Result<Option<LineageEntryRow>, StoreError> {
        self.row(LINEAGE_ENTRY, &[Bind::Int(seq.to_db())]).await
    }

    /// IDs of the events received from `source` with event time in
    /// `[from, to)`, in no particular order.
    ///
    /// # Errors
    /// A database error.
    pub async fn event_ids_from(
        &self,
        source: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(firsts(
            self.rows(
                EVENTS_FROM_SOURCE,
                &[
                    Bind::Text(source.into()),
                    Bind::Text(from.into()),
                    Bind::Text(to.into()),
                ],
            )
            .await?,
        ))
    }

    /// Every dead letter, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
        self.rows(DEAD_LETTERS, &[]).await
    }

    /// Events received and not yet applied (pending or parked).
    ///
    /// # Errors
    /// A database error.
    pub async fn events_waiting(&self) -> Result<i64, StoreError> {
        Ok(self.row(EVENTS_WAITING, &[]).await?.map_or(0, |(n,)| n))
    }

    /// Messages not yet delivered (pending; dead letters are not waiting).
    ///
    /// # Errors
    /// A database error.
    pub async fn messages_waiting(&self) -> Result<i64, StoreError> {
        Ok(self.row(MESSAGES_WAITING, &[]).await?.map_or(0, |(n,)| n))
    }

    /// `(status, rows)` of the inbox, by status.
    ///
    /// # Errors
    /// A database error.
    pub async fn inbox_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.rows(INBOX_BY_STATUS, &[]).await
    }

    /// `(status, rows)` of the outbox, by status.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.rows(OUTBOX_BY_STATUS, &[]).await
    }

    /// Outbox messages by target and status.
    ///
    /// # Errors
    /// A database error.
    pub async fn outbox_tallies(&self) -> Result<Vec<OutboxTallyRow>, StoreError> {
        self.rows(OUTBOX_BY_TARGET, &[]).await
    }

    /// Creation and delivery times of the newest `limit` delivered messages
    /// of `target`, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn delivery_times(
        &self,
        target: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryTimesRow>, StoreError> {
        self.rows(
            DELIVERY_TIMES,
            &[Bind::Text(target.into()), Bind::Int(limit)],
        )
        .await
    }

    /// `(kind, entries)` of the ledger, most frequent first.
    ///
    /// # Errors
    /// A database error.
    pub async fn entry_counts_by_kind(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.rows(ENTRIES_BY_KIND, &[]).await
    }

    /// The newest entry of `kind`.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_entry_of_kind(
        &self,
        kind: &str,
    ) -> Result<Option<StoredEntry>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(LATEST_OF_KIND)
                .bind(kind.to_owned())
                .fetch_optional(pool)
                .await?;
            row.map(|r| entry_from_row(&r)).transpose()
        })
    }

    /// Seq of the first entry recorded at or after `at`.
    ///
    /// # Errors
    /// A database error.
    pub async fn first_seq_recorded_since(&self, at: &str) -> Result<Option<Seq>, StoreError> {
        Ok(self
            .row(FIRST_RECORDED_SINCE, &[Bind::Text(at.into())])
            .await?
            .map(|(seq,)| seq))
    }

    /// When assignment `assignment_id` is due, and whose training on what.
    ///
    /// # Errors
    /// A database error.
    pub async fn assignment_due(
        &self,
        assignment_id: &str,
    ) -> Result<Option<AssignmentDueRow>, StoreError> {
        self.row(ASSIGNMENT_DUE, &[Bind::Text(assignment_id.into())])
            .await
    }

    /// Creation entries of open assignments created before entry `to`, due
    /// at or before `due_until`, and either due after `due_after` or created
    /// at or after entry `from`; by due date, at most `limit`.
    ///
    /// # Errors
    /// A database error.
    pub async fn overdue_assignment_seqs(
        &self,
        to: Seq,
        due_until: &str,
        due_after: &str,
        from: Seq,
        limit: i64,
    ) -> Result<Vec<Seq>, StoreError> {
        Ok(firsts(
            self.rows(
                OVERDUE_ASSIGNMENTS,
                &[
                    Bind::Int(to.to_db()),
                    Bind::Text(due_until.into()),
                    Bind::Text(due_after.into()),
                    Bind::Int(from.to_db()),
                    Bind::Int(limit),
                ],
            )
            .await?,
        ))
    }
}
