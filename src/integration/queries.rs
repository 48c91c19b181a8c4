//! The read side of the integration points (docs/INTEGRATION.md §3-4):
//! CAPA closure readiness, the compliance report, lineage, dead letters and
//! reconciliation counts.

// Rows are read as tuples in the order of their SELECT lists, next to the SQL.
#![allow(clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::Integration;
use crate::store::{Bind, Store, StoreError};

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

type AssignmentRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<String>,
    Option<Vec<u8>>,
    Vec<u8>,
);

/// The closure readiness of a CAPA.
///
/// # Errors
/// A database error.
pub async fn closure_readiness(ig: &Integration, capa: &str) -> Result<Readiness, StoreError> {
    let state: Option<(String, i64)> = ig
        .store()
        .row(
            "SELECT status, ready FROM capas WHERE capa_id = $1",
            &[Bind::Text(capa.into())],
        )
        .await?;
    let actions: Vec<(String, String, String, i64, String, i64, Vec<u8>)> = ig
        .store()
        .rows(
            "SELECT action_id, document_id, version, verification_required, due_at, seq, entry_hash FROM capa_actions WHERE capa_id = $1 ORDER BY action_id",
            &[Bind::Text(capa.into())],
        )
        .await?;
    let rows: Vec<AssignmentRow> = ig
        .store()
        .rows(
            "SELECT assignment_id, person_id, document_id, version, action_id, verification_required, status, verified, completed_at, completion_hash, entry_hash FROM assignments WHERE capa_id = $1 AND status <> 'cancelled' ORDER BY assignment_id",
            &[Bind::Text(capa.into())],
        )
        .await?;
    let mut required = Vec::new();
    let mut missing = Vec::new();
    for (id, person, doc, version, action, vreq, status, verified, completed_at, chash, ehash) in
        rows
    {
        let lacking = if status != "completed" {
            Some("completion")
        } else if vreq == 1 && verified == 0 {
            Some("verification")
        } else {
            None
        };
        let item = json!({
            "assignment_id": id, "person_id": person, "document_id": doc, "version": version,
            "action_id": action, "verification_required": vreq == 1, "status": status,
            "completed_at": completed_at, "verified": verified == 1,
            "assignment_entry_hash": hex::encode(&ehash),
            "completion_entry_hash": chash.as_ref().map(hex::encode),
        });
        if let Some(what) = lacking {
            let mut m = item.clone();
            m["missing"] = json!(what);
            missing.push(m);
        }
        required.push(item);
    }
    let (status, flagged) = state.unwrap_or(("open".into(), 0));
    Ok(Readiness {
        capa_id: capa.into(),
        known: !actions.is_empty(),
        ready: !actions.is_empty() && missing.is_empty(),
        flagged_ready: flagged == 1,
        status,
        actions: actions
            .into_iter()
            .map(|(a, d, v, vr, due, seq, h)| {
                json!({"action_id": a, "document_id": d, "version": v, "verification_required": vr == 1,
                       "due_at": due, "seq": seq, "entry_hash": hex::encode(h)})
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
    pub assignment_entry_seq: Option<u64>,
    /// Hash of the assignment entry.
    pub assignment_entry_hash: Option<String>,
    /// Seq of the completion entry.
    pub completion_entry_seq: Option<u64>,
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

/// A bound of a reporting period (RFC 3339, or a date `YYYY-MM-DD` meaning
/// its midnight UTC), as Trailmark stores times.
///
/// # Errors
/// What is accepted, when it is neither.
pub fn period_bound(text: &str) -> Result<String, String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(crate::ledger::Timestamp::from_datetime(
            d.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        )
        .to_string());
    }
    crate::integration::events::normalise_time(text)
        .map_err(|m| format!("{m}, or a date YYYY-MM-DD"))
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
    store
        .rows(
            "SELECT document_id, version, effective_at FROM document_versions WHERE effective_at >= $1 AND effective_at < $2 ORDER BY effective_at, document_id, version",
            &[Bind::Text(from.into()), Bind::Text(to.into())],
        )
        .await
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
    pub revision: Option<u64>,
    /// The person entries (`hr.person.updated`): name and job functions.
    pub person: BTreeSet<u64>,
    /// The training matrix entries of the document.
    pub matrix: BTreeSet<u64>,
    /// The `lms.assignment.cancelled` entry of a cancelled assignment.
    pub cancellation: Option<u64>,
    /// Why it was cancelled.
    pub end_reason: Option<String>,
    /// The next revision's entry, for a supersession.
    pub superseded_by: Option<u64>,
}

/// One required person as the matrix and HR data say: job functions, name,
/// and the entries that say so.
#[derive(Default)]
struct Required {
    functions: BTreeSet<String>,
    name: Option<String>,
    person: BTreeSet<u64>,
    matrix: BTreeSet<u64>,
}

/// An SOP assignment of a version, as the compliance query reads it; the
/// first of each person counts.
#[derive(sqlx::FromRow)]
struct FirstAssignment {
    person_id: String,
    id: String,
    created_at: String,
    due_at: String,
    status: String,
    hash: Vec<u8>,
    seq: i64,
    ended_at: Option<String>,
    required_from: Option<String>,
    closed_seq: Option<i64>,
    cancel_reason: Option<String>,
    superseded_by: Option<i64>,
}

/// Person, job function, name, and the event entries (the first parent of
/// the `integration.event.applied` that wrote each row) of the function,
/// the name and the matrix.
type RequiredRow = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

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
    let current: Option<(i64, Option<String>, Option<String>)> = store
        .row(
            "SELECT v.known_seq, v.retired_at, (SELECT MIN(d.effective_at) FROM document_versions d WHERE d.document_id = v.document_id AND d.effective_at > v.effective_at) FROM document_versions v WHERE v.document_id = $1 AND v.version = $2",
            &[Bind::Text(doc.clone()), Bind::Text(version.clone())],
        )
        .await?;
    let revision_seq = current.as_ref().map(|c| (c.0,));
    let until = current
        .iter()
        .flat_map(|(_, retired, next)| [retired.clone(), next.clone()])
        .flatten()
        .fold(to.to_owned(), |a, b| a.min(b));
    let required: Vec<RequiredRow> = store
        .rows(
            "SELECT DISTINCT pf.person_id, tm.job_function, p.name, (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = pf.known_seq AND ep.position = 0), (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = p.known_seq AND ep.position = 0), (SELECT ep.parent_seq FROM entry_parents ep WHERE ep.seq = tm.known_seq AND ep.position = 0) FROM training_matrix tm JOIN person_functions pf ON pf.job_function = tm.job_function LEFT JOIN people p ON p.person_id = pf.person_id WHERE tm.document_id = $1 AND tm.superseded_seq IS NULL AND pf.superseded_seq IS NULL AND pf.valid_from < $2 AND (pf.valid_to IS NULL OR pf.valid_to > $3)",
            &[Bind::Text(doc.clone()), Bind::Text(until), Bind::Text(effective_at.clone())],
        )
        .await?;
    let mut people: BTreeMap<String, Required> = BTreeMap::new();
    for (person, function, name, function_seq, name_seq, matrix_seq) in required {
        if functions.is_empty() || functions.contains(&function) {
            let e = people.entry(person).or_default();
            e.functions.insert(function);
            e.name = name;
            e.person.extend(function_seq.and_then(seq_of));
            e.person.extend(name_seq.and_then(seq_of));
            e.matrix.extend(matrix_seq.and_then(seq_of));
        }
    }
    // A cancelled assignment comes with when it ended, in business time:
    // the next version's effective time for a supersession, otherwise when
    // the cancellation was recorded.
    let assignments: Vec<FirstAssignment> = store
        .rows(
            "SELECT a.person_id, a.assignment_id AS id, a.created_at, a.due_at, a.status, a.entry_hash AS hash, a.created_seq AS seq,              CASE WHEN a.status <> 'cancelled' THEN NULL                   WHEN a.cancel_reason = 'superseded by a newer version' THEN                        (SELECT MIN(d.effective_at) FROM document_versions d WHERE d.document_id = a.document_id AND d.effective_at > $3)                   ELSE (SELECT e.recorded_at FROM entries e WHERE e.seq = a.closed_seq) END AS ended_at,              a.required_from, CASE WHEN a.status = 'cancelled' THEN a.closed_seq END AS closed_seq, CASE WHEN a.status = 'cancelled' THEN a.cancel_reason END AS cancel_reason,              CASE WHEN a.status = 'cancelled' AND a.cancel_reason = 'superseded by a newer version' THEN                   (SELECT d.known_seq FROM document_versions d WHERE d.document_id = a.document_id AND d.effective_at > $3 ORDER BY d.effective_at, d.version LIMIT 1) END AS superseded_by              FROM assignments a WHERE a.document_id = $1 AND a.version = $2 AND a.origin = 'sop' ORDER BY a.created_seq",
            &[Bind::Text(doc.clone()), Bind::Text(version.clone()), Bind::Text(effective_at.clone())],
        )
        .await?;
    let mut first_assignment: BTreeMap<String, FirstAssignment> = BTreeMap::new();
    for a in assignments {
        first_assignment.entry(a.person_id.clone()).or_insert(a);
    }
    let completions: Vec<(String, String, Vec<u8>, i64)> = store
        .rows(
            "SELECT person_id, completed_at, entry_hash, seq FROM completions WHERE document_id = $1 AND version = $2 ORDER BY completed_at",
            &[Bind::Text(doc.clone()), Bind::Text(version.clone())],
        )
        .await?;
    let mut first_completion: BTreeMap<String, (String, Vec<u8>, i64)> = BTreeMap::new();
    for (person, at, hash, seq) in completions {
        first_completion.entry(person).or_insert((at, hash, seq));
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
            assignment_entry_seq: a.and_then(|a| u64::try_from(a.seq).ok()),
            assignment_entry_hash: a.map(|a| hex::encode(&a.hash)),
            completion_entry_seq: c.and_then(|c| u64::try_from(c.2).ok()),
            completion_entry_hash: c.map(|c| hex::encode(&c.1)),
        };
        let evidence = RowEvidence {
            revision: revision_seq.and_then(|(s,)| seq_of(s)),
            person: required.person,
            matrix: required.matrix,
            cancellation: a.and_then(|a| a.closed_seq).and_then(seq_of),
            end_reason: a.and_then(|a| a.cancel_reason.clone()),
            superseded_by: a.and_then(|a| a.superseded_by).and_then(seq_of),
        };
        out.push((row, evidence));
    }
    Ok(out)
}

fn seq_of(seq: i64) -> Option<u64> {
    u64::try_from(seq).ok()
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
    pub edges: Vec<[i64; 2]>,
    /// True when the walk stopped at the limit.
    pub truncated: bool,
}

/// Walks `parents` from every entry with `subject`: everything derived
/// from them (transitively), and the direct parents of every entry reached.
///
/// # Errors
/// A database error.
pub async fn lineage(store: &Store, subject: &str) -> Result<Lineage, StoreError> {
    let seeds: Vec<(i64,)> = store
        .rows(
            "SELECT seq FROM entries WHERE subject = $1 ORDER BY seq LIMIT 1000",
            &[Bind::Text(subject.into())],
        )
        .await?;
    let mut seen: BTreeSet<i64> = seeds.iter().map(|s| s.0).collect();
    let mut queue: VecDeque<i64> = seen.iter().copied().collect();
    let mut edges: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut truncated = false;
    while let Some(seq) = queue.pop_front() {
        let children: Vec<(i64,)> = store
            .rows(
                "SELECT seq FROM entry_parents WHERE parent_seq = $1 ORDER BY seq",
                &[Bind::Int(seq)],
            )
            .await?;
        for (child,) in children {
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
    let reached: Vec<i64> = seen.iter().copied().collect();
    for seq in reached {
        let parents: Vec<(i64,)> = store
            .rows(
                "SELECT parent_seq FROM entry_parents WHERE seq = $1",
                &[Bind::Int(seq)],
            )
            .await?;
        for (p,) in parents {
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
        let row: Option<(i64, Vec<u8>, String, String, String, String)> = store
            .row(
                "SELECT seq, hash, kind, subject, recorded_at, actor FROM entries WHERE seq = $1",
                &[Bind::Int(*seq)],
            )
            .await?;
        if let Some((seq, hash, kind, subject, at, actor)) = row {
            entries.push(json!({"seq": seq, "hash": hex::encode(hash), "kind": kind,
                                "subject": subject, "recorded_at": at, "actor": actor}));
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
    let rows: Vec<(String,)> = ig
        .store()
        .rows(
            "SELECT event_id FROM inbox WHERE source = $1 AND event_time >= $2 AND event_time < $3",
            &[
                Bind::Text(source.into()),
                Bind::Text(from.into()),
                Bind::Text(to.into()),
            ],
        )
        .await?;
    let mut ids: Vec<String> = rows.into_iter().map(|r| r.0).collect();
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
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
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
    pub created_seq: i64,
    /// Correlation.
    pub correlation_id: String,
}

/// Every dead letter, oldest first.
///
/// # Errors
/// A database error.
pub async fn dead_letters(ig: &Integration) -> Result<Vec<DeadLetter>, StoreError> {
    let rows: Vec<(String, String, String, String, i64, Option<String>, i64, String)> = ig
        .store()
        .rows(
            "SELECT id, target, message_type, subject, attempts, last_error, created_seq, correlation_id FROM outbox WHERE status = 'dead' ORDER BY created_seq",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                target,
                message_type,
                subject,
                attempts,
                last_error,
                created_seq,
                correlation_id,
            )| DeadLetter {
                id,
                target,
                message_type,
                subject,
                attempts,
                last_error,
                created_seq,
                correlation_id,
            },
        )
        .collect())
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
    let (events,): (i64,) = store
        .row(
            "SELECT COUNT(*) FROM inbox WHERE status IN ('pending', 'parked')",
            &[],
        )
        .await?
        .unwrap_or((0,));
    let (messages,): (i64,) = store
        .row("SELECT COUNT(*) FROM outbox WHERE status = 'pending'", &[])
        .await?
        .unwrap_or((0,));
    Ok(Backlog { events, messages })
}
