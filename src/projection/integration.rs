//! The integration tables as projections (docs/STATE.md §3, docs/INTEGRATION.md):
//! the inbox from the source events and their settlement, master data and
//! completions from the application of an event (the effects ride on its
//! `integration.event.applied` entry), assignments, CAPAs and the outbox
//! from the rules' hand-overs and the delivery outcomes.
//!
//! Each rule mirrors the statement the rules worker, the delivery worker or
//! the CAPA closure runs for that entry, with the same parsing and time
//! normalisation (`integration::events`), and reads nothing but entries
//! and the state projected so far.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde_json::Value;

use super::{
    EntryView, Pending, Projector, StateMismatch, Table, hash_cell, member, seq_cell, text,
};
use crate::integration::events::{self, EventData, Outcome};
use crate::ledger::kind::{self, Writers};
use crate::ledger::{Hash, Timestamp};
use crate::store::Cell;

/// Kinds of hand-overs: entries whose payload carries an outbox message
/// (`message_id`, `target`, `message_type`, `data`).
const HANDOVERS: &[&str] = &[
    "lms.assignment.created",
    "lms.assignment.cancelled",
    "integration.handover.sent",
    "qms.capa.closed",
];

/// Whether these rules read entries of `kind`.
pub(super) fn reads(kind: &str) -> bool {
    HANDOVERS.contains(&kind)
        || matches!(
            kind,
            "integration.event.applied"
                | "integration.event.parked"
                | "integration.event.rejected"
                | "integration.assignment.completed"
                | "integration.handover.delivered"
                | "integration.handover.dead_lettered"
                | "integration.handover.replayed"
        )
        || kind::lookup(kind).is_some_and(|k| k.writers == Writers::SourceEvents)
}

fn unprojectable(e: &EntryView<'_>, problem: impl Into<String>) -> StateMismatch {
    StateMismatch::Unprojectable {
        seq: e.seq,
        problem: problem.into(),
    }
}

fn text_of(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

/// Applies one integration entry.
pub(super) fn apply(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    if HANDOVERS.contains(&e.kind) {
        handover(p, e)?;
    }
    match e.kind {
        "integration.event.applied" => applied(p, e),
        "integration.event.parked" | "integration.event.rejected" => settled(p, e),
        "lms.assignment.created" => {
            assigned(p, e);
            Ok(())
        }
        "lms.assignment.cancelled" => {
            let data = &e.payload["data"];
            let changes = [
                ("status", text_of("cancelled")),
                ("cancel_reason", text(&data["reason"])),
                ("closed_seq", seq_cell(e.seq)),
            ];
            let status = Table::Assignments.column("status");
            let key = [text(&data["assignment_id"])];
            p.update(
                Table::Assignments,
                &key,
                |r| r[status] == text_of("open"),
                &changes,
                e.seq,
            );
            Ok(())
        }
        "integration.handover.sent" => {
            if e.payload["message_type"] == "qms.capa.closure_readiness.changed" {
                let key = [text(&e.payload["data"]["capa_id"])];
                p.update(
                    Table::Capas,
                    &key,
                    |_| true,
                    &[("ready", Cell::Int(1))],
                    e.seq,
                );
            }
            Ok(())
        }
        "qms.capa.closed" => {
            let changes = [
                ("status", text_of("closed")),
                ("closed_seq", seq_cell(e.seq)),
            ];
            let key = [Cell::Text(member(e, e.payload, "capa_id")?)];
            p.update(Table::Capas, &key, |_| true, &changes, e.seq);
            Ok(())
        }
        "integration.assignment.completed" => completed(p, e),
        "integration.handover.delivered" => {
            let changes = [
                ("status", text_of("delivered")),
                ("delivered_at", text_of(e.recorded_at)),
                ("outcome_seq", seq_cell(e.seq)),
            ];
            outcome(p, e, "pending", &changes)
        }
        "integration.handover.dead_lettered" => {
            let changes = [
                ("status", text_of("dead")),
                ("outcome_seq", seq_cell(e.seq)),
            ];
            outcome(p, e, "pending", &changes)
        }
        "integration.handover.replayed" => outcome(p, e, "dead", &[("status", text_of("pending"))]),
        _ => recorded(p, e),
    }
}

/// A source event recorded by `/v1/events` (its idempotency key is
/// `ce:` and the event key): its inbox row, and the event kept until the
/// rules settle it.
fn recorded(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let Some(event_key) = e.idempotency_key.and_then(|k| k.strip_prefix("ce:")) else {
        return Ok(());
    };
    let envelope = &e.payload["event"];
    let cells = vec![
        text_of(event_key),
        Cell::Text(member(e, envelope, "source")?),
        Cell::Text(member(e, envelope, "id")?),
        Cell::Text(member(e, envelope, "type")?),
        text_of(e.kind),
        text(&envelope["time"]),
        seq_cell(e.seq),
        hash_cell(&e.hash),
        text_of(e.recorded_at),
        e.correlation_id.map_or(Cell::Null, text_of),
        text_of("pending"),
        Cell::Null,
        Cell::Null,
    ];
    p.insert_absent(Table::Inbox, cells, e.seq);
    p.pending.insert(
        e.hash,
        Pending {
            seq: e.seq,
            kind: e.kind.to_owned(),
            event_key: event_key.to_owned(),
            received_at: e.recorded_at.to_owned(),
            event_time: envelope["time"].as_str().map(str::to_owned),
            data: e.payload["data"].to_string(),
        },
    );
    Ok(())
}

/// The inbox row of a parked or rejected event; a rejected event leaves
/// the backlog, a parked one stays for its retry.
fn settled(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let Some(event) = e.parents.first() else {
        return Err(unprojectable(e, "names no event as its parent"));
    };
    let (status, event_key) = if e.kind == "integration.event.rejected" {
        ("rejected", p.pending.remove(event).map(|q| q.event_key))
    } else {
        ("parked", p.pending.get(event).map(|q| q.event_key.clone()))
    };
    if let Some(event_key) = event_key {
        let changes = [
            ("status", text_of(status)),
            ("status_seq", seq_cell(e.seq)),
            ("detail", text(&e.payload["reason"])),
        ];
        p.update(
            Table::Inbox,
            &[Cell::Text(event_key)],
            |_| true,
            &changes,
            e.seq,
        );
    }
    Ok(())
}

/// What applying an event wrote, with the applied entry's seq and time (the
/// effects ride on it) and the event's own seq and hash.
struct Application<'a> {
    applied_seq: u64,
    applied_at: &'a str,
    event_seq: u64,
    event_hash: Hash,
}

/// An applied event: its master data or completion, and its inbox row.
fn applied(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let Some(event_hash) = e.parents.first().copied() else {
        return Err(unprojectable(e, "names no event as its parent"));
    };
    let Some(event) = p.pending.remove(&event_hash) else {
        // An event this ledger never recorded through /v1/events: nothing
        // in the integration tables derives from it.
        return Ok(());
    };
    let data: Value = serde_json::from_str(&event.data)
        .map_err(|err| unprojectable(e, format!("event {}: {err}", event.seq)))?;
    let data = EventData::from_entry(&event.kind, data)
        .map_err(|err| unprojectable(e, format!("event {}: {err}", event.seq)))?;
    let at = Application {
        applied_seq: e.seq,
        applied_at: e.recorded_at,
        event_seq: event.seq,
        event_hash,
    };
    let bad_time =
        |err: &dyn std::fmt::Display| unprojectable(e, format!("event {}: {err}", event.seq));
    match data {
        EventData::Person(person) => {
            let source_time = event
                .event_time
                .clone()
                .unwrap_or(event.received_at.clone());
            people(p, &at, &person, &source_time).map_err(|err| bad_time(&err))?;
        }
        EventData::JobFunction(j) => job_function(p, &at, j),
        EventData::Category(c) => category(p, &at, c),
        EventData::Matrix(m) => matrix(p, &at, m),
        EventData::Effective(r) => {
            let effective_at =
                events::normalise_time(&r.effective_at).map_err(|err| bad_time(&err))?;
            effective(p, &at, r, effective_at);
        }
        EventData::Retired(r) => {
            let retired_at = events::normalise_time(&r.retired_at).map_err(|err| bad_time(&err))?;
            retired(p, &at, r, retired_at);
        }
        EventData::CapaAction(a) => capa_action(p, &at, a).map_err(|err| bad_time(&err))?,
        EventData::Completion(c) => {
            let completed_at =
                events::normalise_time(&c.completed_at).map_err(|err| bad_time(&err))?;
            completion(p, &at, c, completed_at);
        }
        EventData::Deviation(_) => {}
    }
    let changes = [
        ("status", text_of("applied")),
        ("status_seq", seq_cell(e.seq)),
        ("detail", Cell::Null),
    ];
    let key = [Cell::Text(event.event_key)];
    p.update(Table::Inbox, &key, |_| true, &changes, e.seq);
    Ok(())
}

/// A job function's master data.
fn job_function(p: &mut Projector, at: &Application<'_>, j: events::JobFunctionChanged) {
    let cells = vec![
        Cell::Text(j.job_function),
        Cell::Text(j.name),
        Cell::Int(i64::from(j.active)),
        seq_cell(at.event_seq),
    ];
    p.upsert(Table::JobFunctions, cells, at.applied_seq);
}

/// A training category and its completion window.
fn category(p: &mut Projector, at: &Application<'_>, c: events::CategoryChanged) {
    let cells = vec![
        Cell::Text(c.category),
        Cell::Int(i64::from(c.completion_window_days)),
        seq_cell(at.event_seq),
    ];
    p.upsert(Table::TrainingCategories, cells, at.applied_seq);
}

/// A document's training matrix: the rows in force are superseded, and
/// one row per job function it now names.
fn matrix(p: &mut Projector, at: &Application<'_>, m: events::MatrixChanged) {
    let (document, superseded) = (
        Table::TrainingMatrix.column("document_id"),
        Table::TrainingMatrix.column("superseded_seq"),
    );
    let doc = text_of(&m.document_id);
    p.update_all(
        Table::TrainingMatrix,
        |r| r[document] == doc && r[superseded] == Cell::Null,
        &[
            ("superseded_seq", seq_cell(at.applied_seq)),
            ("superseded_at", text_of(at.applied_at)),
        ],
        at.applied_seq,
    );
    let functions: BTreeSet<String> = m.job_functions.into_iter().collect();
    for f in functions {
        let cells = vec![
            doc.clone(),
            Cell::Text(f),
            seq_cell(at.applied_seq),
            text_of(at.applied_at),
            Cell::Null,
            Cell::Null,
        ];
        p.upsert(Table::TrainingMatrix, cells, at.applied_seq);
    }
}

/// A retired revision: its retirement time on the version's row.
fn retired(
    p: &mut Projector,
    at: &Application<'_>,
    r: events::RevisionRetired,
    retired_at: String,
) {
    let key = [Cell::Text(r.document_id), Cell::Text(r.version)];
    let changes = [
        ("retired_at", Cell::Text(retired_at)),
        ("retired_seq", seq_cell(at.applied_seq)),
    ];
    p.update(
        Table::DocumentVersions,
        &key,
        |_| true,
        &changes,
        at.applied_seq,
    );
}

/// A CAPA action's due date that is not `YYYY-MM-DD` (the event check
/// lets none through, so a stored one is a defect).
#[derive(Debug, thiserror::Error)]
#[error("due_date `{0}` is not a date")]
struct DueDateError(String);

/// A CAPA action: its CAPA opened (or no longer ready), and the action
/// row, due at the end of its due date (UTC).
fn capa_action(
    p: &mut Projector,
    at: &Application<'_>,
    a: events::CapaTrainingAction,
) -> Result<(), DueDateError> {
    let due = NaiveDate::parse_from_str(&a.due_date, "%Y-%m-%d")
        .map_err(|_| DueDateError(a.due_date.clone()))?
        .and_hms_opt(23, 59, 59)
        .expect("a valid time")
        .and_utc();
    let key = [Cell::Text(a.capa_id.clone())];
    if !p.update(
        Table::Capas,
        &key,
        |_| true,
        &[("ready", Cell::Int(0))],
        at.applied_seq,
    ) {
        let cells = vec![
            Cell::Text(a.capa_id.clone()),
            text_of("open"),
            Cell::Int(0),
            Cell::Null,
        ];
        p.upsert(Table::Capas, cells, at.applied_seq);
    }
    let cells = vec![
        Cell::Text(a.capa_id),
        Cell::Text(a.action_id),
        Cell::Text(a.document_id),
        Cell::Text(a.version),
        Cell::Int(i64::from(a.verification_required)),
        Cell::Text(Timestamp::from_datetime(due).to_string()),
        seq_cell(at.event_seq),
        hash_cell(&at.event_hash),
    ];
    p.insert_absent(Table::CapaActions, cells, at.applied_seq);
    Ok(())
}

/// A training completion (`ON CONFLICT DO NOTHING`).
fn completion(
    p: &mut Projector,
    at: &Application<'_>,
    c: events::CompletionRecorded,
    completed_at: String,
) {
    let outcome = if c.outcome == Outcome::Passed {
        "passed"
    } else {
        "completed"
    };
    let cells = vec![
        seq_cell(at.event_seq),
        Cell::Text(c.person_id),
        Cell::Text(c.document_id),
        Cell::Text(c.version),
        Cell::Text(completed_at),
        text_of(outcome),
        c.verified_by.map_or(Cell::Null, Cell::Text),
        hash_cell(&at.event_hash),
    ];
    p.insert_absent(Table::Completions, cells, at.applied_seq);
}

/// A person's master data: unless an older change arrived after a newer
/// one, the person row, and the spans known now in place of the earlier.
fn people(
    p: &mut Projector,
    at: &Application<'_>,
    person: &events::PersonChanged,
    source_time: &str,
) -> Result<(), events::TimeError> {
    let key = [text_of(&person.person_id)];
    let time = Table::People.column("source_time");
    if p.get(Table::People, &key)
        .is_some_and(|row| matches!(&row[time], Cell::Text(t) if t.as_str() > source_time))
    {
        return Ok(());
    }
    let cells = vec![
        text_of(&person.person_id),
        text_of(&person.name),
        Cell::Int(i64::from(person.active)),
        text_of(source_time),
        seq_cell(at.applied_seq),
    ];
    p.upsert(Table::People, cells, at.applied_seq);
    let (id, superseded) = (
        Table::PersonFunctions.column("person_id"),
        Table::PersonFunctions.column("superseded_seq"),
    );
    let who = text_of(&person.person_id);
    p.update_all(
        Table::PersonFunctions,
        |r| r[id] == who && r[superseded] == Cell::Null,
        &[
            ("superseded_seq", seq_cell(at.applied_seq)),
            ("superseded_at", text_of(at.applied_at)),
        ],
        at.applied_seq,
    );
    for span in &person.job_functions {
        let from = events::normalise_time(&span.valid_from)?;
        let to = span
            .valid_to
            .as_deref()
            .map(events::normalise_time)
            .transpose()?;
        let cells = vec![
            who.clone(),
            text_of(&span.job_function),
            Cell::Text(from),
            to.map_or(Cell::Null, Cell::Text),
            seq_cell(at.applied_seq),
            text_of(at.applied_at),
            Cell::Null,
            Cell::Null,
        ];
        p.upsert(Table::PersonFunctions, cells, at.applied_seq);
    }
    Ok(())
}

/// A revision that became effective: its row, with category and title
/// carried over from the latest earlier version that has a category; a
/// retirement already known stays.
fn effective(
    p: &mut Projector,
    at: &Application<'_>,
    r: events::RevisionEffective,
    effective_at: String,
) {
    let (doc, eff, cat, title) = (
        Table::DocumentVersions.column("document_id"),
        Table::DocumentVersions.column("effective_at"),
        Table::DocumentVersions.column("category"),
        Table::DocumentVersions.column("title"),
    );
    let document = text_of(&r.document_id);
    let earlier = p
        .rows(Table::DocumentVersions)
        .filter(|row| row[doc] == document && row[cat] != Cell::Null)
        .max_by(|a, b| sortable(&a[eff]).cmp(sortable(&b[eff])))
        .map(|row| (row[cat].clone(), row[title].clone()));
    let (old_category, old_title) = earlier.unwrap_or((Cell::Null, Cell::Null));
    let category = r.category.map_or(old_category, Cell::Text);
    let title = r.title.map_or(old_title, Cell::Text);
    let changes = [
        ("effective_at", Cell::Text(effective_at.clone())),
        ("category", category.clone()),
        ("title", title.clone()),
        ("known_seq", seq_cell(at.event_seq)),
        ("known_at", text_of(at.applied_at)),
        ("entry_hash", hash_cell(&at.event_hash)),
    ];
    let key = [document.clone(), text_of(&r.version)];
    if !p.update(
        Table::DocumentVersions,
        &key,
        |_| true,
        &changes,
        at.applied_seq,
    ) {
        let cells = vec![
            document,
            Cell::Text(r.version),
            Cell::Text(effective_at),
            Cell::Null,
            category,
            title,
            seq_cell(at.event_seq),
            text_of(at.applied_at),
            hash_cell(&at.event_hash),
            Cell::Null,
        ];
        p.upsert(Table::DocumentVersions, cells, at.applied_seq);
    }
}

/// A text cell as a string to order by (times are RFC 3339 UTC with six
/// fractional digits, so text order is time order).
fn sortable(cell: &Cell) -> &str {
    match cell {
        Cell::Text(t) => t,
        _ => "",
    }
}

/// The outbox row of a hand-over.
fn handover(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let cells = vec![
        Cell::Text(member(e, e.payload, "message_id")?),
        Cell::Text(member(e, e.payload, "target")?),
        Cell::Text(member(e, e.payload, "message_type")?),
        text_of(e.subject),
        Cell::Json(e.payload["data"].clone()),
        e.correlation_id.map_or(Cell::Null, text_of),
        seq_cell(e.seq),
        text_of(e.recorded_at),
        hash_cell(&e.hash),
        text_of("pending"),
        Cell::Null,
        Cell::Null,
    ];
    p.upsert(Table::Outbox, cells, e.seq);
    Ok(())
}

/// A new assignment (`ON CONFLICT DO NOTHING`).
fn assigned(p: &mut Projector, e: &EntryView<'_>) {
    let d = &e.payload["data"];
    let flag = |v: &Value| Cell::Int(i64::from(v.as_bool().unwrap_or(false)));
    let cells = vec![
        text(&d["assignment_id"]),
        text(&d["person_id"]),
        text(&d["document_id"]),
        text(&d["version"]),
        text(&d["origin"]),
        text(&d["capa_id"]),
        text(&d["action_id"]),
        flag(&d["verification_required"]),
        text(&d["effective_at"]),
        text(&d["due_at"]),
        seq_cell(e.seq),
        text_of(e.recorded_at),
        hash_cell(&e.hash),
        text_of("open"),
        Cell::Null,
        Cell::Null,
        Cell::Null,
        Cell::Int(0),
        Cell::Null,
        Cell::Null,
        text(&d["required_from"]),
    ];
    p.insert_absent(Table::Assignments, cells, e.seq);
}

/// An assignment completed by the completion event named as first parent.
fn completed(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let completion_seq = e.payload["completion_seq"]
        .as_u64()
        .ok_or_else(|| unprojectable(e, "has no `completion_seq`"))?;
    // The completion's entry hash, from its projected row (it was applied
    // before any assignment it completes).
    let hash = p
        .get(Table::Completions, &[seq_cell(completion_seq)])
        .map(|row| row[Table::Completions.column("entry_hash")].clone())
        .ok_or_else(|| {
            unprojectable(
                e,
                format!(
                    "completes with completion {completion_seq}, which no applied event recorded"
                ),
            )
        })?;
    let changes = [
        ("status", text_of("completed")),
        ("completed_at", text(&e.payload["completed_at"])),
        ("completion_seq", seq_cell(completion_seq)),
        ("completion_hash", hash),
        (
            "verified",
            Cell::Int(i64::from(e.payload["verified"].as_bool().unwrap_or(false))),
        ),
    ];
    let key = [Cell::Text(member(e, e.payload, "assignment_id")?)];
    p.update(Table::Assignments, &key, |_| true, &changes, e.seq);
    Ok(())
}

/// A delivery outcome or replay on the outbox row of `message_id`, when the
/// row is in `from`.
fn outcome(
    p: &mut Projector,
    e: &EntryView<'_>,
    from: &str,
    changes: &[(&str, Cell)],
) -> Result<(), StateMismatch> {
    let status = Table::Outbox.column("status");
    let from = text_of(from);
    let key = [Cell::Text(member(e, e.payload, "message_id")?)];
    p.update(Table::Outbox, &key, |r| r[status] == from, changes, e.seq);
    Ok(())
}
