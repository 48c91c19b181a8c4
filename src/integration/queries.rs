//! The read side of the integration points (docs/INTEGRATION.md §3-4):
//! CAPA closure readiness, the compliance report, lineage, dead letters and
//! reconciliation counts. The SQL and its rows are the store's
//! (`store::integration::views`); what the rows mean is decided here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::Integration;
use crate::ledger::Seq;
use crate::store::{SopAssignmentRow, Store, StoreError};

/// Most entries a lineage walk returns.
pub const LINEAGE_MAX: usize = 10_000;

/// Whether a CAPA may close.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// CAPA ID.
    pub capa_id: String,
    /// Whether Trailmark has seen a training action of it.
    pub known: bool,
    /// `open` or `closed`.
    pub status: String,
    /// Every required completion (and verification) is evidenced.
    pub ready: bool,
    /// Readiness as last announced to the QMS.
    #[serde(skip)]
    pub flagged_ready: bool,
    /// The training actions.
    pub actions: Vec<Value>,
    /// Every required assignment with its evidence.
    pub required: Vec<Value>,
    /// What is missing: assignment, person, and `completion` or `verification`.
    pub missing: Vec<Value>,
}

/// The closure readiness of a CAPA.
///
/// # Errors
/// A database error.
pub async fn closure_readiness(ig: &Integration, capa: &str) -> Result<Readiness, StoreError> {
    let state = ig.store().capa_state(capa).await?;
    let actions = ig.store().capa_actions(capa).await?;
    let rows = ig.store().capa_assignments(capa).await?;
    let mut required = Vec::new();
    let mut missing = Vec::new();
    for a in rows {
        let lacking = if a.status != "completed" {
            Some("completion")
        } else if a.verification_required == 1 && a.verified == 0 {
            Some("verification")
        } else {
            None
        };
        let item = json!({
            "assignment_id": a.assignment_id, "person_id": a.person_id, "document_id": a.document_id,
            "version": a.version, "action_id": a.action_id,
            "verification_required": a.verification_required == 1, "status": a.status,
            "completed_at": a.completed_at, "verified": a.verified == 1,
            "assignment_entry_hash": hex::encode(&a.entry_hash),
            "completion_entry_hash": a.completion_hash.as_ref().map(hex::encode),
        });
        if let Some(what) = lacking {
            let mut m = item.clone();
            m["missing"] = json!(what);
            missing.push(m);
        }
        required.push(item);
    }
    let (status, flagged) = state.map_or(("open".into(), 0), |s| (s.status, s.ready));
    Ok(Readiness {
        capa_id: capa.into(),
        known: !actions.is_empty(),
        ready: !actions.is_empty() && missing.is_empty(),
        flagged_ready: flagged == 1,
        status,
        actions: actions
            .into_iter()
            .map(|a| {
                json!({"action_id": a.action_id, "document_id": a.document_id, "version": a.version,
                       "verification_required": a.verification_required == 1,
                       "due_at": a.due_at, "seq": a.seq, "entry_hash": hex::encode(a.entry_hash)})
            })
            .collect(),
        required,
        missing,
    })
}

/// One line of the compliance report.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ComplianceRow {
    /// Document.
    pub document_id: String,
    /// Version.
    pub version: String,
    /// When it became effective.
    pub effective_at: String,
    /// Person required.
    pub person_id: String,
    /// Their name from HR master data.
    pub person_name: Option<String>,
    /// The job functions that made them required.
    pub job_functions: Vec<String>,
    /// The SOP assignment, if any.
    pub assignment_id: Option<String>,
    /// When it was created (its entry's time).
    pub assignment_created_at: Option<String>,
    /// From when, in business time, the person had to be trained: the
    /// effective time, or later when they took up the job function later.
    pub required_from: Option<String>,
    /// Recording lag: seconds from `required_from` to `assignment_created_at`.
    pub lag_seconds: Option<i64>,
    /// Due.
    pub due_at: Option<String>,
    /// Earliest completion on this version.
    pub completed_at: Option<String>,
    /// `on_time`, `late`, `open`, `overdue`, `missing` or `cancelled`. An
    /// assignment cancelled (superseded, retired, person inactive) after
    /// its due date without a completion before then is `overdue`.
    pub status: String,
    /// When a cancelled assignment ended, in business time: the next
    /// version's effective time for a supersession, otherwise when the
    /// cancellation was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_ended_at: Option<String>,
    /// Seq of the assignment entry.
    pub assignment_entry_seq: Option<Seq>,
    /// Hash of the assignment entry.
    pub assignment_entry_hash: Option<String>,
    /// Seq of the completion entry.
    pub completion_entry_seq: Option<Seq>,
    /// Hash of the completion entry.
    pub completion_entry_hash: Option<String>,
}

fn seconds_between(a: &str, b: &str) -> Option<i64> {
    let a = chrono::DateTime::parse_from_rfc3339(a).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b).ok()?;
    Some((b - a).num_seconds())
}

/// The unified training-compliance record for revisions effective in
/// `[from, to)` (normalised times), optionally for one job function.
///
/// # Errors
/// A database error.
pub async fn compliance(
    ig: &Integration,
    from: &str,
    to: &str,
    job_function: Option<&str>,
    now: &str,
) -> Result<Vec<ComplianceRow>, StoreError> {
    let functions: Vec<String> = job_function.map(str::to_owned).into_iter().collect();
    let mut out = Vec::new();
    for revision in revisions_effective(ig.store(), from, to).await? {
        out.extend(compliance_of_revision(ig.store(), &revision, to, &functions, now).await?);
    }
    Ok(out)
}

/// A period bound that is neither a date nor an RFC 3339 time; the text
/// says both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}, or a date YYYY-MM-DD")]
pub struct PeriodError(pub crate::integration::events::TimeError);

/// A bound of a reporting period (RFC 3339, or a date `YYYY-MM-DD` meaning
/// its midnight UTC), as Trailmark stores times.
///
/// # Errors
/// What is accepted, when it is neither.
pub fn period_bound(text: &str) -> Result<String, PeriodError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(crate::ledger::Timestamp::from_datetime(
            d.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        )
        .to_string());
    }
    crate::integration::events::normalise_time(text).map_err(PeriodError)
}

/// A revision that went effective: document, version, effective time.
pub type Revision = (String, String, String);

/// Revisions effective in `[from, to)`, in effective order.
///
/// # Errors
/// A database error.
pub async fn revisions_effective(
    store: &Store,
    from: &str,
    to: &str,
) -> Result<Vec<Revision>, StoreError> {
    Ok(store
        .revisions_effective(from, to)
        .await?
        .into_iter()
        .map(|r| (r.document_id, r.version, r.effective_at))
        .collect())
}

/// The compliance rows of one revision, by person: who had to be trained
/// (in a required job function at the effective time, or joining one before
/// `to`), limited to `functions` unless empty.
///
/// # Errors
/// A database error.
pub async fn compliance_of_revision(
    store: &Store,
    revision: &Revision,
    to: &str,
    functions: &[String],
    now: &str,
) -> Result<Vec<ComplianceRow>, StoreError> {
    Ok(
        compliance_with_evidence(store, revision, to, functions, now)
            .await?
            .into_iter()
            .map(|(row, _)| row)
            .collect(),
    )
}

/// The entries a compliance row rests on besides its assignment and
/// completion (docs/REPORTS.md §4.1): seqs of the revision, the person's
/// master data, the training matrix, the cancellation and the superseding
/// revision.
#[derive(Debug, Clone, Default)]
pub struct RowEvidence {
    /// The revision entry (`qms.document.revision_effective`).
    pub revision: Option<Seq>,
    /// The person entries (`hr.person.updated`): name and job functions.
    pub person: BTreeSet<Seq>,
    /// The training matrix entries of the document.
    pub matrix: BTreeSet<Seq>,
    /// The `lms.assignment.cancelled` entry of a cancelled assignment.
    pub cancellation: Option<Seq>,
    /// Why it was cancelled.
    pub end_reason: Option<String>,
    /// The next revision's entry, for a supersession.
    pub superseded_by: Option<Seq>,
}

/// One required person as the matrix and HR data say: job functions, name,
/// and the entries that say so.
#[derive(Default)]
struct Required {
    functions: BTreeSet<String>,
    name: Option<String>,
    person: BTreeSet<Seq>,
    matrix: BTreeSet<Seq>,
}

/// [`compliance_of_revision`] with each row's [`RowEvidence`]. Four
/// queries per revision.
///
/// # Errors
/// A database error.
pub async fn compliance_with_evidence(
    store: &Store,
    (doc, version, effective_at): &Revision,
    to: &str,
    functions: &[String],
    now: &str,
) -> Result<Vec<(ComplianceRow, RowEvidence)>, StoreError> {
    // The version is current from its effective time until the next
    // version's or its retirement: only who took up a mapped job function
    // before then (and before `to`) had to be trained on it.
    let current = store.revision_span(doc, version).await?;
    let revision_seq = current.as_ref().map(|c| c.known_seq);
    let until = current
        .iter()
        .flat_map(|c| [c.retired_at.clone(), c.next_effective_at.clone()])
        .flatten()
        .fold(to.to_owned(), |a, b| a.min(b));
    let mut people: BTreeMap<String, Required> = BTreeMap::new();
    for r in store.required_people(doc, &until, effective_at).await? {
        if functions.is_empty() || functions.contains(&r.job_function) {
            let e = people.entry(r.person_id).or_default();
            e.functions.insert(r.job_function);
            e.name = r.name;
            e.person.extend(r.function_event_seq);
            e.person.extend(r.name_event_seq);
            e.matrix.extend(r.matrix_event_seq);
        }
    }
    // The first SOP assignment of each person counts; a cancelled one comes
    // with when it ended, in business time.
    let mut first_assignment: BTreeMap<String, SopAssignmentRow> = BTreeMap::new();
    for a in store.sop_assignments(doc, version, effective_at).await? {
        first_assignment.entry(a.person_id.clone()).or_insert(a);
    }
    let mut first_completion: BTreeMap<String, (String, Vec<u8>, Seq)> = BTreeMap::new();
    for c in store.version_completions(doc, version).await? {
        first_completion
            .entry(c.person_id)
            .or_insert((c.completed_at, c.entry_hash, c.seq));
    }
    let mut out = Vec::with_capacity(people.len());
    for (person, required) in people {
        let a = first_assignment.get(&person);
        let c = first_completion.get(&person);
        let completed_at = c.map(|c| c.0.clone());
        let status = compliance_status(
            a.map(|a| a.due_at.as_str()),
            completed_at.as_deref(),
            a.filter(|a| a.status == "cancelled")
                .map(|a| a.ended_at.as_deref().unwrap_or(now)),
            now,
        );
        let required_from = a.map(|a| {
            a.required_from
                .clone()
                .unwrap_or_else(|| effective_at.clone())
        });
        let row = ComplianceRow {
            document_id: doc.clone(),
            version: version.clone(),
            effective_at: effective_at.clone(),
            person_id: person,
            person_name: required.name,
            job_functions: required.functions.into_iter().collect(),
            assignment_id: a.map(|a| a.id.clone()),
            assignment_created_at: a.map(|a| a.created_at.clone()),
            lag_seconds: a
                .zip(required_from.as_deref())
                .and_then(|(a, from)| seconds_between(from, &a.created_at)),
            required_from,
            due_at: a.map(|a| a.due_at.clone()),
            completed_at,
            status: status.into(),
            assignment_ended_at: a.and_then(|a| a.ended_at.clone()),
            assignment_entry_seq: a.map(|a| a.seq),
            assignment_entry_hash: a.map(|a| hex::encode(&a.hash)),
            completion_entry_seq: c.map(|c| c.2),
            completion_entry_hash: c.map(|c| hex::encode(&c.1)),
        };
        let evidence = RowEvidence {
            revision: revision_seq,
            person: required.person,
            matrix: required.matrix,
            cancellation: a.and_then(|a| a.closed_seq),
            end_reason: a.and_then(|a| a.cancel_reason.clone()),
            superseded_by: a.and_then(|a| a.superseded_by),
        };
        out.push((row, evidence));
    }
    Ok(out)
}

/// The compliance status (docs/INTEGRATION.md §3, point 4) of an
/// assignment due `due` (none: `missing`), completed first at `completed`,
/// judged at `as_of`; `ended` is set for a cancelled assignment, when it
/// ended. The query and the report's proof (`report::proof`) both use it.
pub fn compliance_status(
    due: Option<&str>,
    completed: Option<&str>,
    ended: Option<&str>,
    as_of: &str,
) -> &'static str {
    let Some(due) = due else {
        return "missing";
    };
    if let Some(ended) = ended {
        // Cancelled while already past due and not trained: the person
        // worked untrained until then, so it stays overdue (the supersession
        // is shown in `ended_at`); cancelled before its due date, it was
        // never owed.
        return match completed {
            Some(done) if done <= due => "on_time",
            Some(done) if done <= ended => "late",
            _ if ended > due => "overdue",
            _ => "cancelled",
        };
    }
    match completed {
        Some(done) if done <= due => "on_time",
        Some(_) => "late",
        None if as_of > due => "overdue",
        None => "open",
    }
}

/// One RFC 4180 field: quoted when it holds a comma, quote or line break.
pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The compliance rows as CSV (RFC 4180, header first).
pub fn compliance_csv(rows: &[ComplianceRow]) -> String {
    let mut out = String::from(
        "document_id,version,effective_at,person_id,job_functions,assignment_id,required_from,assignment_created_at,lag_seconds,due_at,completed_at,status,assignment_ended_at,assignment_entry_hash,completion_entry_hash\r\n",
    );
    for r in rows {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let fields = [
            r.document_id.clone(),
            r.version.clone(),
            r.effective_at.clone(),
            r.person_id.clone(),
            r.job_functions.join(" "),
            o(&r.assignment_id),
            o(&r.required_from),
            o(&r.assignment_created_at),
            r.lag_seconds.map(|l| l.to_string()).unwrap_or_default(),
            o(&r.due_at),
            o(&r.completed_at),
            r.status.clone(),
            o(&r.assignment_ended_at),
            o(&r.assignment_entry_hash),
            o(&r.completion_entry_hash),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The lineage graph of a subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lineage {
    /// The subject asked for.
    pub subject: String,
    /// Entries reached: seq, hash, kind, subject, recorded_at.
    pub entries: Vec<Value>,
    /// `[parent_seq, child_seq]` pairs.
    pub edges: Vec<[Seq; 2]>,
    /// True when the walk stopped at the limit.
    pub truncated: bool,
}

/// Walks `parents` from every entry with `subject`: everything derived
/// from them (transitively), and the direct parents of every entry reached.
///
/// # Errors
/// A database error.
pub async fn lineage(store: &Store, subject: &str) -> Result<Lineage, StoreError> {
    let mut seen: BTreeSet<Seq> = store.lineage_seeds(subject).await?.into_iter().collect();
    let mut queue: VecDeque<Seq> = seen.iter().copied().collect();
    let mut edges: BTreeSet<(Seq, Seq)> = BTreeSet::new();
    let mut truncated = false;
    while let Some(seq) = queue.pop_front() {
        for child in store.children(seq).await? {
            edges.insert((seq, child));
            if seen.len() >= LINEAGE_MAX {
                truncated = true;
                break;
            }
            if seen.insert(child) {
                queue.push_back(child);
            }
        }
    }
    let reached: Vec<Seq> = seen.iter().copied().collect();
    for seq in reached {
        for p in store.parents(seq).await? {
            edges.insert((p, seq));
            if seen.len() < LINEAGE_MAX {
                seen.insert(p);
            } else {
                truncated = true;
            }
        }
    }
    let mut entries = Vec::with_capacity(seen.len());
    for seq in &seen {
        if let Some(e) = store.lineage_entry(*seq).await? {
            entries.push(json!({"seq": e.seq, "hash": hex::encode(e.hash), "kind": e.kind,
                                "subject": e.subject, "recorded_at": e.recorded_at, "actor": e.actor}));
        }
    }
    Ok(Lineage {
        subject: subject.into(),
        entries,
        edges: edges
            .into_iter()
            .filter(|(p, c)| seen.contains(p) && seen.contains(c))
            .map(|(p, c)| [p, c])
            .collect(),
        truncated,
    })
}

/// What Trailmark recorded from `source` with event time in `[from, to)`:
/// the count, the SHA-256 of the sorted IDs joined by LF, and the IDs.
///
/// # Errors
/// A database error.
pub async fn seen_from(
    ig: &Integration,
    source: &str,
    from: &str,
    to: &str,
) -> Result<(u64, String, Vec<String>), StoreError> {
    let mut ids = ig.store().event_ids_from(source, from, to).await?;
    ids.sort();
    Ok((ids.len() as u64, id_set_sha256(&ids), ids))
}

/// SHA-256 (hex) of IDs sorted byte-wise and joined by LF.
pub fn id_set_sha256(ids: &[String]) -> String {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let joined = sorted
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    hex::encode(Sha256::digest(joined.as_bytes()))
}

/// A message that could not be delivered.
pub type DeadLetter = crate::store::DeadLetterRow;

/// Every dead letter, oldest first.
///
/// # Errors
/// A database error.
pub async fn dead_letters(ig: &Integration) -> Result<Vec<DeadLetter>, StoreError> {
    ig.store().dead_letters().await
}

/// Work the integration has not finished: events received but not yet
/// applied by the rules worker (pending or parked behind an earlier one),
/// and messages not yet delivered (dead letters are finished, not waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Events waiting to be applied.
    pub events: i64,
    /// Messages waiting to be delivered.
    pub messages: i64,
}

impl Backlog {
    /// Nothing is waiting.
    pub fn is_idle(&self) -> bool {
        self.events == 0 && self.messages == 0
    }
}

/// The integration's [`Backlog`] now.
///
/// # Errors
/// A database error.
pub async fn backlog(store: &Store) -> Result<Backlog, StoreError> {
    Ok(Backlog {
        events: store.events_waiting().await?,
        messages: store.messages_waiting().await?,
    })
}
