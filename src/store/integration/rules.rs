//! The rules worker's SQL (docs/INTEGRATION.md §2-3): the reads it decides
//! from, and the writes it attaches to the entries that record them.
//!
//! Every write is a [`StateWrite::Sql`] built by a named constructor here,
//! written in the recording entry's transaction; each is written so that it
//! cannot fail on a constraint (`ON CONFLICT`, or an update of rows that may
//! not exist), because one failed statement fails the whole batch. `Bind::Seq`,
//! `Bind::At` and `Bind::Hash` stand for the recording entry's seq,
//! `recorded_at` and hash. The meaning of the rows (which event changes
//! what) stays with the rules in `crate::integration::rules`.

use sqlx::FromRow;

use super::super::{Bind, StateWrite, Store, StoreError};
use crate::ledger::Seq;

// ---- reads -----------------------------------------------------------------

const PENDING_EVENTS: &str = "SELECT event_key, seq, entry_hash, kind, correlation_id, received_at, status FROM inbox WHERE status = 'pending' ORDER BY seq LIMIT $1";
const PARKED_EVENTS: &str = "SELECT event_key, seq, entry_hash, kind, correlation_id, received_at, status FROM inbox WHERE status = 'parked' ORDER BY seq";
const PEOPLE_IN_FUNCTION: &str = "SELECT DISTINCT pf.person_id FROM person_functions pf JOIN people p ON p.person_id = pf.person_id WHERE pf.job_function = $1 AND pf.superseded_seq IS NULL AND pf.valid_from <= $2 AND (pf.valid_to IS NULL OR pf.valid_to > $2) AND p.active = 1 ORDER BY pf.person_id";
const FUNCTION_JOINERS: &str = "SELECT pf.person_id, MIN(pf.valid_from) FROM person_functions pf JOIN people p ON p.person_id = pf.person_id WHERE pf.job_function = $1 AND pf.superseded_seq IS NULL AND pf.valid_from > $2 AND pf.valid_from < $3 AND pf.valid_to IS NULL AND p.active = 1 GROUP BY pf.person_id ORDER BY pf.person_id";
const VERSION_EFFECTIVE_AT: &str = "SELECT version, effective_at, category, entry_hash FROM document_versions WHERE document_id = $1 AND effective_at <= $2 AND (retired_at IS NULL OR retired_at > $2) ORDER BY effective_at DESC LIMIT 1";
const CATEGORY_WINDOW: &str = "SELECT window_days FROM training_categories WHERE category = $1";
const ASSIGNMENT_EXISTS: &str = "SELECT assignment_id FROM assignments WHERE assignment_id = $1";
const FIRST_COMPLETION_SINCE: &str = "SELECT seq, entry_hash, completed_at, outcome, verified_by FROM completions WHERE person_id = $1 AND document_id = $2 AND version = $3 AND completed_at >= $4 ORDER BY completed_at, seq LIMIT 1";
const PERSON_SOURCE_TIME: &str = "SELECT source_time FROM people WHERE person_id = $1";
const OPEN_ASSIGNMENTS_OF_PERSON: &str = "SELECT assignment_id, entry_hash FROM assignments WHERE person_id = $1 AND status = 'open' ORDER BY assignment_id";
const DOCUMENTS_OF_FUNCTION: &str = "SELECT DISTINCT document_id FROM training_matrix WHERE job_function = $1 AND superseded_seq IS NULL ORDER BY document_id";
const OPEN_SOP_ASSIGNMENTS_OF_PERSON: &str = "SELECT assignment_id, entry_hash, document_id FROM assignments WHERE person_id = $1 AND status = 'open' AND origin = 'sop' ORDER BY assignment_id";
const FUNCTIONS_OF_DOCUMENT: &str = "SELECT DISTINCT job_function FROM training_matrix WHERE document_id = $1 AND superseded_seq IS NULL ORDER BY job_function";
const LATEST_LABELS: &str = "SELECT category, title FROM document_versions WHERE document_id = $1 AND category IS NOT NULL ORDER BY effective_at DESC LIMIT 1";
const NEXT_EFFECTIVE_AFTER: &str =
    "SELECT MIN(effective_at) FROM document_versions WHERE document_id = $1 AND effective_at > $2";
const OPEN_SOP_ASSIGNMENTS_SUPERSEDED: &str = "SELECT assignment_id, entry_hash FROM assignments WHERE document_id = $1 AND version <> $2 AND origin = 'sop' AND status = 'open' AND effective_at < $3 ORDER BY assignment_id";
const VERSION_KNOWN: &str =
    "SELECT version FROM document_versions WHERE document_id = $1 AND version = $2";
const OPEN_ASSIGNMENTS_ON_VERSION: &str = "SELECT assignment_id, entry_hash FROM assignments WHERE document_id = $1 AND version = $2 AND status = 'open' ORDER BY assignment_id";
const PERSON_KNOWN: &str = "SELECT person_id FROM people WHERE person_id = $1";
const FIRST_COMPLETION_BY: &str = "SELECT completed_at, seq, entry_hash FROM completions WHERE person_id = $1 AND document_id = $2 AND version = $3 AND completed_at <= $4 ORDER BY completed_at LIMIT 1";
const LATEST_COMPLETION_BY: &str = "SELECT version, completed_at FROM completions WHERE person_id = $1 AND document_id = $2 AND completed_at <= $3 ORDER BY completed_at DESC LIMIT 1";
const ASSIGNMENTS_A_COMPLETION_MEETS: &str = "SELECT assignment_id, entry_hash, capa_id FROM assignments WHERE person_id = $1 AND document_id = $2 AND version = $3 AND (status = 'open' OR (status = 'completed' AND verification_required = 1 AND verified = 0 AND $4 = 1)) ORDER BY assignment_id";

/// An inbox row the rules worker takes.
#[derive(Debug, Clone, FromRow)]
pub struct InboxRow {
    /// `source` + `id` key of the event.
    pub event_key: String,
    /// The event's entry.
    pub seq: Seq,
    /// The event entry's hash.
    pub entry_hash: Vec<u8>,
    /// The entry kind.
    pub kind: String,
    /// The event's correlation ID.
    pub correlation_id: String,
    /// When Trailmark received it (RFC 3339).
    pub received_at: String,
    /// `pending` or `parked`.
    pub status: String,
}

/// A person who took up a job function, with when (business time).
#[derive(Debug, Clone)]
pub struct Joiner {
    /// The person.
    pub person_id: String,
    /// The earliest `valid_from` of their current spans in the function.
    pub since: String,
}

/// The version of a document in effect at a time.
#[derive(Debug, Clone, FromRow)]
pub struct EffectiveVersion {
    /// The version.
    pub version: String,
    /// When it took effect.
    pub effective_at: String,
    /// Its training category, if known.
    pub category: Option<String>,
    /// The hash of the entry that made it effective.
    pub entry_hash: Vec<u8>,
}

/// A recorded completion, as the rules read it to complete an assignment.
#[derive(Debug, Clone, FromRow)]
pub struct CompletionRow {
    /// The completion entry.
    pub seq: Seq,
    /// Its hash.
    pub entry_hash: Vec<u8>,
    /// When the training was completed.
    pub completed_at: String,
    /// `passed` or `completed`.
    pub outcome: String,
    /// Who verified effectiveness, if anyone.
    pub verified_by: Option<String>,
}

/// An open assignment and the hash of the entry that created it.
#[derive(Debug, Clone, FromRow)]
pub struct OpenAssignment {
    /// The assignment.
    pub assignment_id: String,
    /// The creating entry's hash.
    pub entry_hash: Vec<u8>,
}

/// An open SOP assignment with its document.
#[derive(Debug, Clone, FromRow)]
pub struct OpenSopAssignment {
    /// The assignment.
    pub assignment_id: String,
    /// The creating entry's hash.
    pub entry_hash: Vec<u8>,
    /// The document it trains on.
    pub document_id: String,
}

/// The category and title most recently known for a document.
#[derive(Debug, Clone, FromRow)]
pub struct DocumentLabels {
    /// Training category.
    pub category: Option<String>,
    /// Title.
    pub title: Option<String>,
}

/// A completion on a version at or before a time.
#[derive(Debug, Clone, FromRow)]
pub struct CompletionOnVersion {
    /// When.
    pub completed_at: String,
    /// The completion entry.
    pub seq: Seq,
    /// Its hash.
    pub entry_hash: Vec<u8>,
}

/// The latest completion on any version of a document.
#[derive(Debug, Clone, FromRow)]
pub struct LatestCompletion {
    /// The version trained on.
    pub version: String,
    /// When.
    pub completed_at: String,
}

/// An assignment a completion can complete (or verify).
#[derive(Debug, Clone, FromRow)]
pub struct CompletableAssignment {
    /// The assignment.
    pub assignment_id: String,
    /// The creating entry's hash.
    pub entry_hash: Vec<u8>,
    /// The CAPA it belongs to, for retraining.
    pub capa_id: Option<String>,
}

fn text(s: &str) -> Bind {
    Bind::Text(s.to_owned())
}

fn firsts(rows: Vec<(String,)>) -> Vec<String> {
    rows.into_iter().map(|(s,)| s).collect()
}

impl Store {
    /// Pending inbox rows in seq order, at most `limit`.
    ///
    /// # Errors
    /// A database error.
    pub async fn pending_events(&self, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        self.rows(PENDING_EVENTS, &[Bind::Int(limit)]).await
    }

    /// Parked inbox rows in seq order.
    ///
    /// # Errors
    /// A database error.
    pub async fn parked_events(&self) -> Result<Vec<InboxRow>, StoreError> {
        self.rows(PARKED_EVENTS, &[]).await
    }

    /// The active people holding `function` at `at` (valid time, as known now).
    ///
    /// # Errors
    /// A database error.
    pub async fn people_in_function(
        &self,
        function: &str,
        at: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(firsts(
            self.rows(PEOPLE_IN_FUNCTION, &[text(function), text(at)])
                .await?,
        ))
    }

    /// Active people who took up `function` after `after` and before
    /// `before` (business time) and hold it still.
    ///
    /// # Errors
    /// A database error.
    pub async fn function_joiners(
        &self,
        function: &str,
        after: &str,
        before: &str,
    ) -> Result<Vec<Joiner>, StoreError> {
        let rows: Vec<(String, String)> = self
            .rows(
                FUNCTION_JOINERS,
                &[text(function), text(after), text(before)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(person_id, since)| Joiner { person_id, since })
            .collect())
    }

    /// The version of `document` in effect at `at` (valid time).
    ///
    /// # Errors
    /// A database error.
    pub async fn version_effective_at(
        &self,
        document: &str,
        at: &str,
    ) -> Result<Option<EffectiveVersion>, StoreError> {
        self.row(VERSION_EFFECTIVE_AT, &[text(document), text(at)])
            .await
    }

    /// The completion window of a training category, if the category is known.
    ///
    /// # Errors
    /// A database error.
    pub async fn category_window_days(&self, category: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = self.row(CATEGORY_WINDOW, &[text(category)]).await?;
        Ok(row.map(|(d,)| d))
    }

    /// Whether an assignment with this ID exists.
    ///
    /// # Errors
    /// A database error.
    pub async fn assignment_exists(&self, id: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self.row(ASSIGNMENT_EXISTS, &[text(id)]).await?;
        Ok(row.is_some())
    }

    /// The earliest completion of `person` on a version completed at or
    /// after `since` (`""` for any).
    ///
    /// # Errors
    /// A database error.
    pub async fn first_completion_since(
        &self,
        person: &str,
        document: &str,
        version: &str,
        since: &str,
    ) -> Result<Option<CompletionRow>, StoreError> {
        self.row(
            FIRST_COMPLETION_SINCE,
            &[text(person), text(document), text(version), text(since)],
        )
        .await
    }

    /// The `source_time` of the person's master data, if known.
    ///
    /// # Errors
    /// A database error.
    pub async fn person_source_time(&self, person: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = self.row(PERSON_SOURCE_TIME, &[text(person)]).await?;
        Ok(row.map(|(t,)| t))
    }

    /// The person's open assignments.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_assignments_of(
        &self,
        person: &str,
    ) -> Result<Vec<OpenAssignment>, StoreError> {
        self.rows(OPEN_ASSIGNMENTS_OF_PERSON, &[text(person)]).await
    }

    /// The documents the training matrix requires of `function`.
    ///
    /// # Errors
    /// A database error.
    pub async fn documents_of_function(&self, function: &str) -> Result<Vec<String>, StoreError> {
        Ok(firsts(
            self.rows(DOCUMENTS_OF_FUNCTION, &[text(function)]).await?,
        ))
    }

    /// The person's open SOP assignments with their documents.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_sop_assignments_of(
        &self,
        person: &str,
    ) -> Result<Vec<OpenSopAssignment>, StoreError> {
        self.rows(OPEN_SOP_ASSIGNMENTS_OF_PERSON, &[text(person)])
            .await
    }

    /// The job functions the training matrix maps `document` to.
    ///
    /// # Errors
    /// A database error.
    pub async fn functions_of_document(&self, document: &str) -> Result<Vec<String>, StoreError> {
        Ok(firsts(
            self.rows(FUNCTIONS_OF_DOCUMENT, &[text(document)]).await?,
        ))
    }

    /// The category and title of the latest version of `document` that had
    /// a category.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_labels(
        &self,
        document: &str,
    ) -> Result<Option<DocumentLabels>, StoreError> {
        self.row(LATEST_LABELS, &[text(document)]).await
    }

    /// When the next version of `document` after `at` takes effect, if any.
    ///
    /// # Errors
    /// A database error.
    pub async fn next_effective_after(
        &self,
        document: &str,
        at: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> = self
            .row(NEXT_EFFECTIVE_AFTER, &[text(document), text(at)])
            .await?;
        Ok(row.and_then(|(t,)| t))
    }

    /// Open SOP assignments on other versions of `document` that took
    /// effect before `effective_at`.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_sop_assignments_superseded(
        &self,
        document: &str,
        version: &str,
        effective_at: &str,
    ) -> Result<Vec<OpenAssignment>, StoreError> {
        self.rows(
            OPEN_SOP_ASSIGNMENTS_SUPERSEDED,
            &[text(document), text(version), text(effective_at)],
        )
        .await
    }

    /// Whether the version is known.
    ///
    /// # Errors
    /// A database error.
    pub async fn version_known(&self, document: &str, version: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .row(VERSION_KNOWN, &[text(document), text(version)])
            .await?;
        Ok(row.is_some())
    }

    /// Open assignments on one version of a document.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_assignments_on(
        &self,
        document: &str,
        version: &str,
    ) -> Result<Vec<OpenAssignment>, StoreError> {
        self.rows(
            OPEN_ASSIGNMENTS_ON_VERSION,
            &[text(document), text(version)],
        )
        .await
    }

    /// Whether HR has told Trailmark of this person.
    ///
    /// # Errors
    /// A database error.
    pub async fn person_known(&self, person: &str) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self.row(PERSON_KNOWN, &[text(person)]).await?;
        Ok(row.is_some())
    }

    /// The person's first completion on a version at or before `at`.
    ///
    /// # Errors
    /// A database error.
    pub async fn first_completion_by(
        &self,
        person: &str,
        document: &str,
        version: &str,
        at: &str,
    ) -> Result<Option<CompletionOnVersion>, StoreError> {
        self.row(
            FIRST_COMPLETION_BY,
            &[text(person), text(document), text(version), text(at)],
        )
        .await
    }

    /// The person's latest completion on any version of `document` at or
    /// before `at`.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_completion_by(
        &self,
        person: &str,
        document: &str,
        at: &str,
    ) -> Result<Option<LatestCompletion>, StoreError> {
        self.row(
            LATEST_COMPLETION_BY,
            &[text(person), text(document), text(at)],
        )
        .await
    }

    /// The assignments a completion on the version meets: open ones, and
    /// with a verified completion also completed ones still awaiting
    /// verification.
    ///
    /// # Errors
    /// A database error.
    pub async fn assignments_a_completion_meets(
        &self,
        person: &str,
        document: &str,
        version: &str,
        verified: bool,
    ) -> Result<Vec<CompletableAssignment>, StoreError> {
        self.rows(
            ASSIGNMENTS_A_COMPLETION_MEETS,
            &[
                text(person),
                text(document),
                text(version),
                Bind::Int(i64::from(verified)),
            ],
        )
        .await
    }
}

// ---- writes ----------------------------------------------------------------

fn sql(sql: &'static str, binds: Vec<Bind>) -> StateWrite {
    StateWrite::Sql { sql, binds }
}

/// The event's inbox row is applied (by the recording entry).
pub fn inbox_applied(event_key: &str) -> StateWrite {
    sql(
        "UPDATE inbox SET status = 'applied', status_seq = $1, detail = NULL WHERE event_key = $2",
        vec![Bind::Seq, text(event_key)],
    )
}

/// The event's inbox row is `parked` or `rejected`, with why.
pub fn inbox_settled(event_key: &str, status: &str, detail: &str) -> StateWrite {
    sql(
        "UPDATE inbox SET status = $1, status_seq = $2, detail = $3 WHERE event_key = $4",
        vec![text(status), Bind::Seq, text(detail), text(event_key)],
    )
}

/// A job function's master data, as of event `known_seq`.
pub fn job_function_known(
    job_function: &str,
    name: &str,
    active: bool,
    known_seq: Seq,
) -> StateWrite {
    sql(
        "INSERT INTO job_functions (job_function, name, active, known_seq) VALUES ($1, $2, $3, $4) ON CONFLICT (job_function) DO UPDATE SET name = excluded.name, active = excluded.active, known_seq = excluded.known_seq",
        vec![
            text(job_function),
            text(name),
            Bind::Int(i64::from(active)),
            Bind::Int(known_seq.to_db()),
        ],
    )
}

/// A training category's completion window, as of event `known_seq`.
pub fn category_known(category: &str, window_days: u32, known_seq: Seq) -> StateWrite {
    sql(
        "INSERT INTO training_categories (category, window_days, known_seq) VALUES ($1, $2, $3) ON CONFLICT (category) DO UPDATE SET window_days = excluded.window_days, known_seq = excluded.known_seq",
        vec![
            text(category),
            Bind::Int(i64::from(window_days)),
            Bind::Int(known_seq.to_db()),
        ],
    )
}

/// A new assignment's row.
#[derive(Debug, Clone)]
pub struct NewAssignment {
    /// Derived ID (`integration::assignment_id`).
    pub assignment_id: String,
    /// Who.
    pub person_id: String,
    /// On what.
    pub document_id: String,
    /// Which version.
    pub version: String,
    /// `sop` or `capa`.
    pub origin: String,
    /// The CAPA, for retraining.
    pub capa_id: Option<String>,
    /// The CAPA's action.
    pub action_id: Option<String>,
    /// Whether effectiveness must be verified.
    pub verification_required: bool,
    /// When the version took effect.
    pub effective_at: String,
    /// Due date.
    pub due_at: String,
    /// Business time from which the person had to be trained.
    pub required_from: String,
}

/// Creates an assignment, open, by the recording entry (once: a second
/// creation of the same ID does nothing).
pub fn assignment_created(a: NewAssignment) -> StateWrite {
    sql(
        "INSERT INTO assignments (assignment_id, person_id, document_id, version, origin, capa_id, action_id, verification_required, effective_at, due_at, created_seq, created_at, entry_hash, status, required_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'open', $14) ON CONFLICT (assignment_id) DO NOTHING",
        vec![
            Bind::Text(a.assignment_id),
            Bind::Text(a.person_id),
            Bind::Text(a.document_id),
            Bind::Text(a.version),
            Bind::Text(a.origin),
            Bind::OptText(a.capa_id),
            Bind::OptText(a.action_id),
            Bind::Int(i64::from(a.verification_required)),
            Bind::Text(a.effective_at),
            Bind::Text(a.due_at),
            Bind::Seq,
            Bind::At,
            Bind::Hash,
            Bind::Text(a.required_from),
        ],
    )
}

/// An assignment completed by the completion entry `completion_seq`.
pub fn assignment_completed(
    id: &str,
    completed_at: &str,
    completion_seq: Seq,
    completion_hash: Vec<u8>,
    verified: bool,
) -> StateWrite {
    sql(
        "UPDATE assignments SET status = 'completed', completed_at = $1, completion_seq = $2, completion_hash = $3, verified = $4 WHERE assignment_id = $5",
        vec![
            text(completed_at),
            Bind::Int(completion_seq.to_db()),
            Bind::Blob(completion_hash),
            Bind::Int(i64::from(verified)),
            text(id),
        ],
    )
}

/// An open assignment cancelled by the recording entry, with why.
pub fn assignment_cancelled(id: &str, why: &str) -> StateWrite {
    sql(
        "UPDATE assignments SET status = 'cancelled', cancel_reason = $1, closed_seq = $2 WHERE assignment_id = $3 AND status = 'open'",
        vec![text(why), Bind::Seq, text(id)],
    )
}

/// A person's master data from HR, as of `source_time`.
pub fn person_known(person_id: &str, name: &str, active: bool, source_time: &str) -> StateWrite {
    sql(
        "INSERT INTO people (person_id, name, active, source_time, known_seq) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, active = excluded.active, source_time = excluded.source_time, known_seq = excluded.known_seq",
        vec![
            text(person_id),
            text(name),
            Bind::Int(i64::from(active)),
            text(source_time),
            Bind::Seq,
        ],
    )
}

/// The person's job-function spans known so far are superseded by the
/// recording entry's.
pub fn person_functions_superseded(person_id: &str) -> StateWrite {
    sql(
        "UPDATE person_functions SET superseded_seq = $1, superseded_at = $2 WHERE person_id = $3 AND superseded_seq IS NULL",
        vec![Bind::Seq, Bind::At, text(person_id)],
    )
}

/// One job-function span of a person (valid time `[from, to)`).
pub fn person_function_known(
    person_id: &str,
    job_function: &str,
    from: &str,
    to: Option<&str>,
) -> StateWrite {
    sql(
        "INSERT INTO person_functions (person_id, job_function, valid_from, valid_to, known_seq, known_at) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            text(person_id),
            text(job_function),
            text(from),
            Bind::OptText(to.map(str::to_owned)),
            Bind::Seq,
            Bind::At,
        ],
    )
}

/// The document's training-matrix rows known so far are superseded.
pub fn matrix_superseded(document_id: &str) -> StateWrite {
    sql(
        "UPDATE training_matrix SET superseded_seq = $1, superseded_at = $2 WHERE document_id = $3 AND superseded_seq IS NULL",
        vec![Bind::Seq, Bind::At, text(document_id)],
    )
}

/// The training matrix maps `document_id` to `job_function`.
pub fn matrix_row_known(document_id: &str, job_function: &str) -> StateWrite {
    sql(
        "INSERT INTO training_matrix (document_id, job_function, known_seq, known_at) VALUES ($1, $2, $3, $4)",
        vec![text(document_id), text(job_function), Bind::Seq, Bind::At],
    )
}

/// A document version in effect.
#[derive(Debug, Clone)]
pub struct VersionEffective {
    /// The document.
    pub document_id: String,
    /// The version.
    pub version: String,
    /// When it takes effect.
    pub effective_at: String,
    /// Training category.
    pub category: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// The event entry.
    pub known_seq: Seq,
    /// The event entry's hash.
    pub entry_hash: Vec<u8>,
}

/// Records (or re-records) a document version in effect.
pub fn version_effective(v: VersionEffective) -> StateWrite {
    sql(
        "INSERT INTO document_versions (document_id, version, effective_at, category, title, known_seq, known_at, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (document_id, version) DO UPDATE SET effective_at = excluded.effective_at, category = excluded.category, title = excluded.title, known_seq = excluded.known_seq, known_at = excluded.known_at, entry_hash = excluded.entry_hash",
        vec![
            Bind::Text(v.document_id),
            Bind::Text(v.version),
            Bind::Text(v.effective_at),
            Bind::OptText(v.category),
            Bind::OptText(v.title),
            Bind::Int(v.known_seq.to_db()),
            Bind::At,
            Bind::Blob(v.entry_hash),
        ],
    )
}

/// A document version retired at `retired_at`.
pub fn version_retired(document_id: &str, version: &str, retired_at: &str) -> StateWrite {
    sql(
        "UPDATE document_versions SET retired_at = $1, retired_seq = $2 WHERE document_id = $3 AND version = $4",
        vec![
            text(retired_at),
            Bind::Seq,
            text(document_id),
            text(version),
        ],
    )
}

/// A CAPA with a (new) training action: open, and not ready to close.
pub fn capa_opened(capa_id: &str) -> StateWrite {
    sql(
        "INSERT INTO capas (capa_id, status, ready) VALUES ($1, 'open', 0) ON CONFLICT (capa_id) DO UPDATE SET ready = 0",
        vec![text(capa_id)],
    )
}

/// A CAPA's training action.
#[derive(Debug, Clone)]
pub struct CapaAction {
    /// The CAPA.
    pub capa_id: String,
    /// The action.
    pub action_id: String,
    /// Retraining on this document...
    pub document_id: String,
    /// ...at this version.
    pub version: String,
    /// Whether effectiveness must be verified.
    pub verification_required: bool,
    /// Due date.
    pub due_at: String,
    /// The event entry.
    pub seq: Seq,
    /// Its hash.
    pub entry_hash: Vec<u8>,
}

/// Records a CAPA's training action (once).
pub fn capa_action_known(a: CapaAction) -> StateWrite {
    sql(
        "INSERT INTO capa_actions (capa_id, action_id, document_id, version, verification_required, due_at, seq, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (capa_id, action_id) DO NOTHING",
        vec![
            Bind::Text(a.capa_id),
            Bind::Text(a.action_id),
            Bind::Text(a.document_id),
            Bind::Text(a.version),
            Bind::Int(i64::from(a.verification_required)),
            Bind::Text(a.due_at),
            Bind::Int(a.seq.to_db()),
            Bind::Blob(a.entry_hash),
        ],
    )
}

/// A CAPA's trainings are all evidenced: it may be closed.
pub fn capa_ready(capa_id: &str) -> StateWrite {
    sql(
        "UPDATE capas SET ready = 1 WHERE capa_id = $1",
        vec![text(capa_id)],
    )
}

/// A completion recorded from the LMS.
#[derive(Debug, Clone)]
pub struct CompletionKnown {
    /// The completion event's entry.
    pub seq: Seq,
    /// Who.
    pub person_id: String,
    /// On what.
    pub document_id: String,
    /// Which version.
    pub version: String,
    /// When.
    pub completed_at: String,
    /// `passed` or `completed`.
    pub outcome: &'static str,
    /// Who verified effectiveness.
    pub verified_by: Option<String>,
    /// The event entry's hash.
    pub entry_hash: Vec<u8>,
}

/// Records a completion (once per event entry).
pub fn completion_known(c: CompletionKnown) -> StateWrite {
    sql(
        "INSERT INTO completions (seq, person_id, document_id, version, completed_at, outcome, verified_by, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (seq) DO NOTHING",
        vec![
            Bind::Int(c.seq.to_db()),
            Bind::Text(c.person_id),
            Bind::Text(c.document_id),
            Bind::Text(c.version),
            Bind::Text(c.completed_at),
            Bind::Text(c.outcome.to_owned()),
            Bind::OptText(c.verified_by),
            Bind::Blob(c.entry_hash),
        ],
    )
}
