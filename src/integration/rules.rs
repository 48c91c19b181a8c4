//! The rules worker (docs/INTEGRATION.md §2-3): one task takes the inbox in
//! seq order and, for each event, appends one atomic group: an
//! `integration.event.applied` entry carrying the master-data projection
//! and the inbox status, then the derived hand-overs with their outbox rows.
//!
//! **Invariant:** an event is applied whole or not at all; the inbox row
//! leaves `pending` only in the transaction of its group. Rules *ensure*
//! state (an assignment has an ID derived from what it is for and is
//! created once), so the order of events that imply the same duty does not
//! matter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::events::{self, EventData, Outcome};
use super::{Integration, assignment_id, handover_payload, message_id, outbox_write};
use crate::ledger::kind::{self, KindDef};
use crate::ledger::{Actor, Hash, Seq, Subject, Timestamp};
use crate::sequencer::{AppendError, AppendRequest};
use crate::store::integration::rules::{
    self as write, CompletableAssignment, EffectiveVersion, InboxRow, OpenAssignment,
};
use crate::store::{StateWrite, StoreError};

/// Inbox rows taken at once; up to this many groups are in flight in the
/// sequencer together (so one commit carries many events).
const PAGE: i64 = 128;

/// Runs the worker until `stop` turns true.
pub async fn run(ig: Integration, mut stop: watch::Receiver<bool>) {
    let mut parked_due = true;
    let mut last_sweep = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        match step(&ig, &mut parked_due).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "rules worker: retrying after an error");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        if last_sweep.elapsed() > Duration::from_secs(60) {
            parked_due = true;
            last_sweep = std::time::Instant::now();
        }
        tokio::select! {
            () = ig.rules_woken() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Applies what is pending; then, if master data changed since, the parked
/// events. Returns whether anything was done.
///
/// # Errors
/// A database or ledger failure (the worker retries).
pub async fn step(ig: &Integration, parked_due: &mut bool) -> Result<bool, Failure> {
    let rows = ig.store().pending_events(PAGE).await?;
    if !rows.is_empty() {
        if pipelined(ig, rows).await? {
            *parked_due = true;
        }
        return Ok(true);
    }
    if *parked_due {
        *parked_due = false;
        let parked = ig.store().parked_events().await?;
        let mut progressed = false;
        for row in parked {
            progressed |= apply(ig, &row, true).await?;
        }
        if progressed {
            *parked_due = true;
        }
        return Ok(progressed);
    }
    Ok(false)
}

/// A piece of integration state; `None` stands for every value.
#[derive(Debug, Clone)]
enum Res {
    /// A person's master data (existence, job functions).
    Person(Option<String>),
    /// A document's versions.
    Doc(Option<String>),
    /// The assignments (and completions) of a person on a document.
    Assign(Option<String>, Option<String>),
}

impl Res {
    fn overlaps(&self, other: &Res) -> bool {
        fn same(a: Option<&String>, b: Option<&String>) -> bool {
            a.is_none() || b.is_none() || a == b
        }
        match (self, other) {
            (Res::Person(a), Res::Person(b)) | (Res::Doc(a), Res::Doc(b)) => {
                same(a.as_ref(), b.as_ref())
            }
            (Res::Assign(p, d), Res::Assign(q, e)) => {
                same(p.as_ref(), q.as_ref()) && same(d.as_ref(), e.as_ref())
            }
            _ => false,
        }
    }
}

/// What an event's rule reads and writes (docs/INTEGRATION.md §3.6).
#[derive(Debug, Clone, Default)]
struct Footprint {
    reads: Vec<Res>,
    writes: Vec<Res>,
}

impl Footprint {
    /// Whether planning one on the committed state could miss an effect of
    /// the other, or the two could write the same state.
    fn conflicts(&self, other: &Footprint) -> bool {
        let hits = |writes: &[Res], touched: &[Res]| {
            touched.iter().any(|t| writes.iter().any(|w| w.overlaps(t)))
        };
        hits(&self.writes, &other.writes)
            || hits(&self.writes, &other.reads)
            || hits(&other.writes, &self.reads)
    }
}

/// The footprint of an event; `None` when it may touch anything (the
/// matrix, categories, job functions, CAPA actions, a person leaving).
fn footprint(data: &EventData) -> Option<Footprint> {
    let some = |s: &String| Some(s.clone());
    Some(match data {
        EventData::Person(p) if p.active => Footprint {
            reads: vec![Res::Doc(None)],
            writes: vec![
                Res::Person(some(&p.person_id)),
                Res::Assign(some(&p.person_id), None),
            ],
        },
        EventData::Completion(c) => Footprint {
            reads: vec![
                Res::Person(some(&c.person_id)),
                Res::Doc(some(&c.document_id)),
            ],
            writes: vec![Res::Assign(some(&c.person_id), some(&c.document_id))],
        },
        EventData::Deviation(d) => Footprint {
            reads: std::iter::once(Res::Doc(some(&d.document_id)))
                .chain(d.people.iter().flat_map(|p| {
                    [
                        Res::Person(some(p)),
                        Res::Assign(some(p), some(&d.document_id)),
                    ]
                }))
                .collect(),
            writes: vec![],
        },
        EventData::Effective(e) => Footprint {
            reads: vec![Res::Person(None)],
            writes: vec![
                Res::Doc(some(&e.document_id)),
                Res::Assign(None, some(&e.document_id)),
            ],
        },
        EventData::Retired(r) => Footprint {
            reads: vec![],
            writes: vec![
                Res::Doc(some(&r.document_id)),
                Res::Assign(None, some(&r.document_id)),
            ],
        },
        _ => return None,
    })
}

/// Groups submitted to the sequencer and not yet committed, with their
/// keys.
#[derive(Default)]
struct InFlight {
    set: tokio::task::JoinSet<Result<bool, Failure>>,
    keys: std::collections::HashMap<tokio::task::Id, Footprint>,
    changed: bool,
}

impl InFlight {
    fn conflicts(&self, footprint: &Footprint) -> bool {
        self.keys.values().any(|k| k.conflicts(footprint))
    }

    /// Waits for one group to commit.
    async fn one(&mut self) -> Result<(), Failure> {
        let Some(done) = self.set.join_next_with_id().await else {
            return Ok(());
        };
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                Err(Failure::Corrupt(format!("a rules task failed: {e}"))),
            ),
        };
        self.keys.remove(&id);
        self.changed |= result?;
        Ok(())
    }

    /// Waits for every group; the first failure is returned after all have
    /// finished, so that nothing is abandoned mid-commit.
    async fn drain(&mut self) -> Result<(), Failure> {
        let mut first = Ok(());
        while !self.set.is_empty() {
            if let Err(e) = self.one().await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Applies a page of pending rows in seq order, keeping the groups of
/// events with disjoint footprints in flight together. An event is planned
/// only once every earlier event it could read from has committed; an
/// event without a footprint, or a completion that turns out to evidence a
/// CAPA (whose readiness reads other people's assignments), waits for all
/// and is committed alone. Returns whether master data changed.
async fn pipelined(ig: &Integration, rows: Vec<InboxRow>) -> Result<bool, Failure> {
    let mut flight = InFlight::default();
    let result = async {
        for row in rows {
            let loaded = load(ig, &row).await?;
            let keys = footprint(&loaded.data);
            match &keys {
                Some(k) => {
                    while flight.conflicts(k) {
                        flight.one().await?;
                    }
                }
                None => flight.drain().await?,
            }
            let mut prepared = prepare(ig, &row, &loaded, false).await?;
            if let Prepared::Group { capa: true, .. } = prepared
                && !flight.set.is_empty()
            {
                flight.drain().await?;
                prepared = prepare(ig, &row, &loaded, false).await?;
            }
            match prepared {
                Prepared::Settled(changed) => flight.changed |= changed,
                Prepared::Group {
                    group,
                    targets,
                    changed,
                    capa,
                } => match keys {
                    Some(k) if !capa => {
                        let ig = ig.clone();
                        let handle = flight.set.spawn(async move {
                            commit(&ig, group, &targets).await.map(|()| changed)
                        });
                        flight.keys.insert(handle.id(), k);
                    }
                    _ => {
                        commit(ig, group, &targets).await?;
                        flight.changed |= changed;
                    }
                },
            }
        }
        Ok::<(), Failure>(())
    }
    .await;
    let drained = flight.drain().await;
    result?;
    drained?;
    Ok(flight.changed)
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A stored event that cannot be read back.
    #[error("{0}")]
    Corrupt(String),
}

/// What an event needs and Trailmark has not seen.
struct Park(String);

/// The group being built for one event.
struct Plan {
    event_hash: Hash,
    correlation: String,
    actor: Actor,
    now: DateTime<Utc>,
    /// State written with the `integration.event.applied` entry.
    effects: Vec<StateWrite>,
    summary: Map<String, Value>,
    derived: Vec<AppendRequest>,
    /// Assignments this group creates (ID -> row), for the rules that
    /// follow within the same event.
    created: BTreeSet<String>,
    master_data: bool,
    /// The target of each hand-over in `derived`, counted once committed.
    targets: Vec<String>,
    /// A completion that evidences a CAPA assignment.
    capa: bool,
    /// The source signatures of the event and where they were recorded;
    /// every hand-over derived from the event carries them.
    signed: Option<Value>,
}

impl Plan {
    fn write(&mut self, effect: StateWrite) {
        self.effects.push(effect);
    }

    /// Adds a derived entry; returns its index in the group (the applied
    /// entry is member 0, so the first derived entry is member 1).
    fn derive(
        &mut self,
        kind: &'static KindDef,
        subject: &str,
        parents: Vec<Hash>,
        parent_refs: Vec<usize>,
        payload: Map<String, Value>,
        effects: Vec<StateWrite>,
    ) -> usize {
        self.derived.push(AppendRequest {
            kind,
            actor: self.actor.clone(),
            subject: Subject::parse(subject).expect("rule subjects are well formed"),
            correlation_id: Some(self.correlation.clone()),
            idempotency_key: None,
            parents,
            reason: None,
            payload,
            effects,
            parent_refs,
        });
        self.derived.len()
    }

    /// A hand-over to `target` recorded as `kind`, with its outbox row.
    #[allow(clippy::too_many_arguments)]
    fn handover(
        &mut self,
        kind: &'static KindDef,
        target: &str,
        message_type: &str,
        subject: &str,
        parents: Vec<Hash>,
        parent_refs: Vec<usize>,
        mut data: Value,
        mut effects: Vec<StateWrite>,
    ) -> usize {
        if let (Some(signed), Value::Object(map)) = (&self.signed, &mut data) {
            map.insert("source_signatures".into(), signed.clone());
        }
        let id = message_id();
        effects.push(outbox_write(
            &id,
            target,
            message_type,
            subject,
            &self.correlation,
            &data,
        ));
        let payload = handover_payload(&id, target, message_type, &data);
        self.targets.push(target.to_owned());
        self.derive(kind, subject, parents, parent_refs, payload, effects)
    }
}

fn ts(t: DateTime<Utc>) -> String {
    Timestamp::from_datetime(t).to_string()
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Failure::Corrupt(format!("stored time `{text}` is not RFC 3339")))
}

fn hash_of(bytes: &[u8]) -> Result<Hash, Failure> {
    Hash::from_slice(bytes).map_err(|e| Failure::Corrupt(e.to_string()))
}

/// An event read back from its entry.
struct Loaded {
    data: EventData,
    event_time: Option<String>,
    subject: String,
    /// What a receiving system needs to check the source system's
    /// signatures on the event (docs/SIGNATURES.md §8), if it carries any.
    signed: Option<Value>,
}

async fn load(ig: &Integration, row: &InboxRow) -> Result<Loaded, Failure> {
    let InboxRow {
        seq,
        kind: kind_name,
        ..
    } = row;
    let entry = ig
        .store()
        .entry(*seq)
        .await?
        .ok_or_else(|| Failure::Corrupt(format!("event entry {seq} is missing")))?;
    let value: Value = serde_json::from_slice(&entry.canonical)
        .map_err(|e| Failure::Corrupt(format!("entry {seq}: {e}")))?;
    let payload = &value["payload"];
    let data = EventData::from_entry(kind_name, payload["data"].clone())
        .map_err(|e| Failure::Corrupt(format!("entry {seq}: {e}")))?;
    let signed = payload.get("source_signatures").map(|signatures| {
        json!({
            "signatures": signatures,
            "event": {
                "source": payload["event"]["source"], "id": payload["event"]["id"],
                "type": payload["event"]["type"], "entry_seq": seq, "entry_hash": hex::encode(&entry.hash),
            },
        })
    });
    Ok(Loaded {
        data,
        event_time: payload["event"]["time"].as_str().map(str::to_owned),
        subject: entry.subject.clone(),
        signed,
    })
}

/// What applying a row comes to.
enum Prepared {
    /// The group to append, the targets of its hand-overs, whether it
    /// changes master data, and whether it evidences a CAPA.
    Group {
        group: Vec<AppendRequest>,
        targets: Vec<String>,
        changed: bool,
        capa: bool,
    },
    /// Parked or rejected already (recorded); whether it left the parked
    /// state.
    Settled(bool),
}

/// Appends a prepared group and counts its hand-overs once committed.
async fn commit(
    ig: &Integration,
    group: Vec<AppendRequest>,
    targets: &[String],
) -> Result<(), Failure> {
    ig.sequencer().append_group(group).await?;
    for target in targets {
        ig.metrics()
            .handovers
            .get_or_create(&crate::telemetry::label("target", target))
            .inc();
    }
    if !targets.is_empty() {
        ig.wake_delivery();
    }
    Ok(())
}

/// Applies (or parks, or rejects) one inbox row. Returns whether it
/// changed master data or left the parked state.
async fn apply(ig: &Integration, row: &InboxRow, retry: bool) -> Result<bool, Failure> {
    let loaded = load(ig, row).await?;
    match prepare(ig, row, &loaded, retry).await? {
        Prepared::Group {
            group,
            targets,
            changed,
            ..
        } => {
            commit(ig, group, &targets).await?;
            Ok(changed)
        }
        Prepared::Settled(changed) => Ok(changed),
    }
}

/// Plans one row on the committed state: its group, or (recorded here)
/// its parking or rejection.
async fn prepare(
    ig: &Integration,
    row: &InboxRow,
    loaded: &Loaded,
    retry: bool,
) -> Result<Prepared, Failure> {
    let mut plan = Plan {
        event_hash: hash_of(&row.entry_hash)?,
        correlation: row.correlation_id.clone(),
        actor: Actor::parse("system:rules").expect("a valid actor"),
        now: ig.clock().now(),
        effects: vec![],
        summary: Map::new(),
        derived: vec![],
        created: BTreeSet::new(),
        master_data: false,
        targets: vec![],
        capa: false,
        signed: loaded.signed.clone(),
    };
    match rule(ig, &mut plan, row, loaded).await? {
        Ok(()) => applied(plan, row, loaded, retry),
        Err(park) => not_applied(ig, plan, row, loaded, park, retry).await,
    }
}

/// Runs the event's rule into `plan`.
async fn rule(ig: &Integration, plan: &mut Plan, row: &InboxRow, loaded: &Loaded) -> Ruled {
    let seq = row.seq;
    match &loaded.data {
        // An event without a time is as of when Trailmark received it: a
        // time the ledger holds, so the projection can recompute it.
        EventData::Person(p) => {
            let source_time = loaded
                .event_time
                .clone()
                .unwrap_or_else(|| row.received_at.clone());
            person(ig, plan, p, &source_time).await
        }
        EventData::JobFunction(j) => {
            plan.master_data = true;
            plan.write(write::job_function_known(
                &j.job_function,
                &j.name,
                j.active,
                seq,
            ));
            Ok(Ok(()))
        }
        EventData::Category(c) => {
            plan.master_data = true;
            plan.write(write::category_known(
                &c.category,
                c.completion_window_days,
                seq,
            ));
            Ok(Ok(()))
        }
        EventData::Matrix(m) => matrix(ig, plan, m).await,
        EventData::Effective(e) => effective(ig, plan, e, seq).await,
        EventData::Retired(r) => retired(ig, plan, r).await,
        EventData::CapaAction(a) => capa_action(ig, plan, a, seq).await,
        EventData::Deviation(d) => deviation(ig, plan, d).await,
        EventData::Completion(c) => completion(ig, plan, c, seq).await,
    }
}

/// The group of an applied event: `integration.event.applied` (carrying
/// the state writes and the inbox status) then the derived entries.
fn applied(
    mut plan: Plan,
    row: &InboxRow,
    loaded: &Loaded,
    retry: bool,
) -> Result<Prepared, Failure> {
    plan.write(write::inbox_applied(&row.event_key));
    let mut summary = std::mem::take(&mut plan.summary);
    summary.insert("event_seq".into(), json!(row.seq));
    summary.insert("derived".into(), json!(plan.derived.len()));
    let applied = AppendRequest {
        kind: &kind::INTEGRATION_EVENT_APPLIED,
        actor: plan.actor.clone(),
        subject: Subject::parse(&loaded.subject).map_err(|e| Failure::Corrupt(e.to_string()))?,
        correlation_id: Some(plan.correlation.clone()),
        idempotency_key: None,
        parents: vec![plan.event_hash],
        reason: None,
        payload: summary,
        effects: std::mem::take(&mut plan.effects),
        parent_refs: vec![],
    };
    // Refs in derived members are group indices: the applied entry is
    // member 0.
    let mut group = vec![applied];
    group.append(&mut plan.derived);
    Ok(Prepared::Group {
        group,
        targets: plan.targets,
        changed: plan.master_data || retry,
        capa: plan.capa,
    })
}

/// Records an event that cannot be applied yet as parked, or, parked too
/// long, as rejected; a retry of a parked event that still cannot be
/// applied records nothing.
async fn not_applied(
    ig: &Integration,
    plan: Plan,
    row: &InboxRow,
    loaded: &Loaded,
    Park(reason): Park,
    retry: bool,
) -> Result<Prepared, Failure> {
    let age = parse_time(&row.received_at)
        .map(|t| (plan.now - t).num_seconds())
        .unwrap_or(0);
    let too_old = u64::try_from(age).unwrap_or(0) > ig.config().park_max_seconds;
    if retry && !too_old {
        return Ok(Prepared::Settled(false));
    }
    let (kind, status, detail) = if too_old {
        (
            &kind::INTEGRATION_EVENT_REJECTED,
            "rejected",
            format!(
                "{reason}; parked longer than {} s",
                ig.config().park_max_seconds
            ),
        )
    } else {
        ig.metrics().events_parked.inc();
        (&kind::INTEGRATION_EVENT_PARKED, "parked", reason)
    };
    let mut payload = Map::new();
    payload.insert("event_seq".into(), json!(row.seq));
    payload.insert("reason".into(), json!(detail));
    let request = AppendRequest {
        kind,
        actor: plan.actor,
        subject: Subject::parse(&loaded.subject).map_err(|e| Failure::Corrupt(e.to_string()))?,
        correlation_id: Some(plan.correlation),
        idempotency_key: None,
        parents: vec![plan.event_hash],
        reason: None,
        payload,
        effects: vec![write::inbox_settled(&row.event_key, status, &detail)],
        parent_refs: vec![],
    };
    ig.sequencer().append(request).await?;
    tracing::info!(event_seq = row.seq.get(), status, reason = %detail, "event not applied");
    Ok(Prepared::Settled(too_old))
}

type Ruled = Result<Result<(), Park>, Failure>;

/// The people active in `function` at `at` (valid time, as known now).
async fn people_in(ig: &Integration, function: &str, at: &str) -> Result<Vec<String>, Failure> {
    Ok(ig.store().people_in_function(function, at).await?)
}

/// Active people who took up `function` after `at` and before `until`
/// (business time) and hold it still, with when they took it up.
async fn joiners(
    ig: &Integration,
    function: &str,
    at: &str,
    until: &str,
) -> Result<Vec<(String, String)>, Failure> {
    Ok(ig
        .store()
        .function_joiners(function, at, until)
        .await?
        .into_iter()
        .map(|j| (j.person_id, j.since))
        .collect())
}

async fn window_days(ig: &Integration, category: Option<&str>) -> Result<i64, Failure> {
    if let Some(c) = category
        && let Some(d) = ig.store().category_window_days(c).await?
    {
        return Ok(d);
    }
    Ok(i64::from(ig.config().default_window_days))
}

/// What an assignment is for.
struct Duty<'a> {
    person: &'a str,
    document: &'a str,
    version: &'a str,
    origin: String,
    capa: Option<(&'a str, &'a str)>,
    verification_required: bool,
    effective_at: String,
    /// Business time from which the person had to be trained: the
    /// revision's effective time, or when they took up the function later.
    required_from: String,
    due_at: String,
}

/// Ensures an assignment exists: creates it (entry, row, outbox message
/// to the LMS) unless it exists or this group creates it already.
async fn ensure(ig: &Integration, plan: &mut Plan, duty: Duty<'_>) -> Result<(), Failure> {
    let id = assignment_id(duty.person, duty.document, duty.version, &duty.origin);
    if plan.created.contains(&id) || ig.store().assignment_exists(&id).await? {
        return Ok(());
    }
    plan.created.insert(id.clone());
    let (capa_id, action_id) = match duty.capa {
        Some((c, a)) => (Some(c.to_owned()), Some(a.to_owned())),
        None => (None, None),
    };
    let data = json!({
        "assignment_id": id, "person_id": duty.person, "document_id": duty.document,
        "version": duty.version, "origin": duty.origin, "capa_id": capa_id, "action_id": action_id,
        "effective_at": duty.effective_at, "due_at": duty.due_at, "required_from": duty.required_from,
        "verification_required": duty.verification_required,
    });
    let row = write::assignment_created(write::NewAssignment {
        assignment_id: id.clone(),
        person_id: duty.person.into(),
        document_id: duty.document.into(),
        version: duty.version.into(),
        origin: duty.origin.clone(),
        capa_id,
        action_id,
        verification_required: duty.verification_required,
        effective_at: duty.effective_at.clone(),
        due_at: duty.due_at.clone(),
        required_from: duty.required_from.clone(),
    });
    // A completion that arrived before the assignment (training done ahead
    // of a late revision event, or an LMS faster than the QMS) completes it
    // at once, so the assignment, the LMS's messages and compliance agree.
    // An SOP assignment takes any completion on the version; a CAPA's
    // retraining only one at or after the action (docs/INTEGRATION.md §3,
    // "A completion before its assignment").
    let since = if duty.capa.is_some() {
        duty.effective_at.clone()
    } else {
        String::new()
    };
    let earlier = ig
        .store()
        .first_completion_since(duty.person, duty.document, duty.version, &since)
        .await?;
    let mut data = data;
    if let Some(c) = &earlier {
        data["completed_by"] = json!({"completion_seq": c.seq, "completed_at": c.completed_at});
    }
    let parent = plan.event_hash;
    let created = plan.handover(
        &kind::LMS_ASSIGNMENT_CREATED,
        "lms",
        "lms.assignment.created",
        &format!("lms:assignment/{id}"),
        vec![parent],
        vec![],
        data,
        vec![row],
    );
    if let Some(c) = earlier {
        let verified = c.outcome == "passed" && c.verified_by.is_some();
        let (effect, mut payload) =
            completion_of(&id, &c.completed_at, c.seq, c.entry_hash.clone(), verified);
        payload.insert("completion_before_assignment".into(), json!(true));
        plan.derive(
            &kind::INTEGRATION_ASSIGNMENT_COMPLETED,
            &format!("lms:assignment/{id}"),
            vec![hash_of(&c.entry_hash)?],
            vec![created],
            payload,
            vec![effect],
        );
    }
    Ok(())
}

/// An assignment completed by the completion entry `seq` (hash `hash`):
/// the row's update and the `integration.assignment.completed` payload.
fn completion_of(
    id: &str,
    completed_at: &str,
    seq: Seq,
    hash: Vec<u8>,
    verified: bool,
) -> (StateWrite, Map<String, Value>) {
    let effect = write::assignment_completed(id, completed_at, seq, hash, verified);
    let mut payload = Map::new();
    payload.insert("assignment_id".into(), json!(id));
    payload.insert("completed_at".into(), json!(completed_at));
    payload.insert("verified".into(), json!(verified));
    payload.insert("completion_seq".into(), json!(seq));
    (effect, payload)
}

/// Cancels open assignments with an entry and an outbox message each.
fn cancel(plan: &mut Plan, rows: Vec<OpenAssignment>, why: &str) -> Result<(), Failure> {
    for OpenAssignment {
        assignment_id: id,
        entry_hash: hash,
    } in rows
    {
        let parents = vec![plan.event_hash, hash_of(&hash)?];
        let data = json!({"assignment_id": id, "reason": why});
        let effect = write::assignment_cancelled(&id, why);
        plan.handover(
            &kind::LMS_ASSIGNMENT_CANCELLED,
            "lms",
            "lms.assignment.cancelled",
            &format!("lms:assignment/{id}"),
            parents,
            vec![],
            data,
            vec![effect],
        );
    }
    Ok(())
}

async fn person(
    ig: &Integration,
    plan: &mut Plan,
    p: &events::PersonChanged,
    source_time: &str,
) -> Ruled {
    let source_time = source_time.to_owned();
    let known = ig.store().person_source_time(&p.person_id).await?;
    if known.is_some_and(|t| t > source_time) {
        plan.summary.insert("stale".into(), json!(true));
        plan.summary.insert(
            "note".into(),
            json!("an older change of this person arrived after a newer one; nothing changed"),
        );
        return Ok(Ok(()));
    }
    plan.master_data = true;
    plan.write(write::person_known(
        &p.person_id,
        &p.name,
        p.active,
        &source_time,
    ));
    plan.write(write::person_functions_superseded(&p.person_id));
    // Each span with its times normalised, once.
    let mut spans = Vec::with_capacity(p.job_functions.len());
    for span in &p.job_functions {
        let from = events::normalise_time(&span.valid_from)
            .map_err(|err| Failure::Corrupt(err.to_string()))?;
        let to = span
            .valid_to
            .as_deref()
            .map(events::normalise_time)
            .transpose()
            .map_err(|err| Failure::Corrupt(err.to_string()))?;
        plan.write(write::person_function_known(
            &p.person_id,
            &span.job_function,
            &from,
            to.as_deref(),
        ));
        spans.push((&span.job_function, from, to));
    }
    let now = ts(plan.now);
    if !p.active {
        let open = ig.store().open_assignments_of(&p.person_id).await?;
        cancel(plan, open, "person inactive")?;
        return Ok(Ok(()));
    }
    // Every document mapped to a function the person holds now: ensure an
    // assignment on its current version.
    // Each function held now, with when the person took it up (business
    // time): HR may report a change after the fact, and the training it
    // requires fell due counting from then, not from when Trailmark heard.
    let mut functions: BTreeMap<String, String> = BTreeMap::new();
    for (function, from, to) in spans {
        if from <= now && to.as_ref().is_none_or(|t| *t > now) {
            let since = functions.entry(function.clone()).or_insert(from.clone());
            if from < *since {
                *since = from;
            }
        }
    }
    let mut required = BTreeSet::new();
    for (function, since) in functions {
        for doc in ig.store().documents_of_function(&function).await? {
            ensure_current(ig, plan, &p.person_id, &doc, &now, Some(&since)).await?;
            required.insert(doc);
        }
    }
    // A mover keeps no SOP training of a function they left: open SOP
    // assignments on documents none of their current functions needs end
    // with the reason, as a leaver's do (compliance still shows one that
    // was already overdue as overdue).
    let left: Vec<OpenAssignment> = ig
        .store()
        .open_sop_assignments_of(&p.person_id)
        .await?
        .into_iter()
        .filter(|a| !required.contains(&a.document_id))
        .map(|a| OpenAssignment {
            assignment_id: a.assignment_id,
            entry_hash: a.entry_hash,
        })
        .collect();
    cancel(plan, left, "job function changed")?;
    Ok(Ok(()))
}

/// Ensures `person` has an SOP assignment on the version of `doc` effective
/// now, due one window after the later of the version's effective time and
/// `required_since` (when the person took up the function, in business
/// time), or after now when that is not known.
async fn ensure_current(
    ig: &Integration,
    plan: &mut Plan,
    person: &str,
    doc: &str,
    now: &str,
    required_since: Option<&str>,
) -> Result<(), Failure> {
    if let Some(EffectiveVersion {
        version,
        effective_at,
        category,
        ..
    }) = ig.store().version_effective_at(doc, now).await?
    {
        let days = window_days(ig, category.as_deref()).await?;
        let start = match required_since {
            Some(since) => parse_time(std::cmp::max(since, effective_at.as_str()))?,
            None => plan.now,
        };
        let due = ts(start + chrono::Duration::days(days));
        let required_from = ts(start);
        ensure(
            ig,
            plan,
            Duty {
                person,
                document: doc,
                version: &version,
                origin: "sop".into(),
                capa: None,
                verification_required: false,
                effective_at,
                required_from,
                due_at: due,
            },
        )
        .await?;
    }
    Ok(())
}

async fn matrix(ig: &Integration, plan: &mut Plan, m: &events::MatrixChanged) -> Ruled {
    plan.master_data = true;
    let old: BTreeSet<String> = ig
        .store()
        .functions_of_document(&m.document_id)
        .await?
        .into_iter()
        .collect();
    plan.write(write::matrix_superseded(&m.document_id));
    let new: BTreeSet<String> = m.job_functions.iter().cloned().collect();
    for f in &new {
        plan.write(write::matrix_row_known(&m.document_id, f));
    }
    let now = ts(plan.now);
    for f in new.difference(&old) {
        for person in people_in(ig, f, &now).await? {
            ensure_current(ig, plan, &person, &m.document_id, &now, None).await?;
        }
    }
    plan.summary.insert(
        "added_job_functions".into(),
        json!(new.difference(&old).collect::<Vec<_>>()),
    );
    plan.summary.insert(
        "removed_job_functions".into(),
        json!(old.difference(&new).collect::<Vec<_>>()),
    );
    Ok(Ok(()))
}

async fn effective(
    ig: &Integration,
    plan: &mut Plan,
    e: &events::RevisionEffective,
    seq: Seq,
) -> Ruled {
    plan.master_data = true;
    let effective_at =
        events::normalise_time(&e.effective_at).map_err(|err| Failure::Corrupt(err.to_string()))?;
    // The category and title carry over from earlier versions when absent.
    let (old_category, old_title) = match ig.store().latest_labels(&e.document_id).await? {
        Some(l) => (l.category, l.title),
        None => (None, None),
    };
    let category = e.category.clone().or(old_category);
    let title = e.title.clone().or(old_title);
    plan.write(write::version_effective(write::VersionEffective {
        document_id: e.document_id.clone(),
        version: e.version.clone(),
        effective_at: effective_at.clone(),
        category: category.clone(),
        title,
        known_seq: seq,
        entry_hash: plan.event_hash.to_vec(),
    }));
    let now = ts(plan.now);
    let at = if effective_at < now {
        effective_at.clone()
    } else {
        now.clone()
    };
    let days = window_days(ig, category.as_deref()).await?;
    let due = ts(parse_time(&effective_at)? + chrono::Duration::days(days));
    let functions = ig.store().functions_of_document(&e.document_id).await?;
    // Who held a mapped function when the version took effect, and who
    // took one up since (business time, before now and before a newer
    // version) and holds it still: the latter are due one window after they
    // joined, as if HR had reported the move before the revision
    // (INTEGRATION.md §3, point 1), so the order the events arrive in does
    // not change who is assigned or when it is due.
    let next = ig
        .store()
        .next_effective_after(&e.document_id, &effective_at)
        .await?;
    let until = next.map_or(now.clone(), |n| n.min(now.clone()));
    let mut people: BTreeMap<String, String> = BTreeMap::new();
    for f in &functions {
        for person in people_in(ig, f, &at).await? {
            people.insert(person, effective_at.clone());
        }
        for (person, since) in joiners(ig, f, &at, &until).await? {
            let earliest = people.entry(person).or_insert(since.clone());
            if since < *earliest {
                *earliest = since;
            }
        }
    }
    for (person, required_from) in &people {
        let due_at = if *required_from == effective_at {
            due.clone()
        } else {
            ts(parse_time(required_from)? + chrono::Duration::days(days))
        };
        ensure(
            ig,
            plan,
            Duty {
                person,
                document: &e.document_id,
                version: &e.version,
                origin: "sop".into(),
                capa: None,
                verification_required: false,
                effective_at: effective_at.clone(),
                required_from: required_from.clone(),
                due_at,
            },
        )
        .await?;
    }
    if effective_at <= now {
        let superseded = ig
            .store()
            .open_sop_assignments_superseded(&e.document_id, &e.version, &effective_at)
            .await?;
        cancel(plan, superseded, "superseded by a newer version")?;
    }
    plan.summary
        .insert("job_functions".into(), json!(functions));
    plan.summary
        .insert("people_required".into(), json!(people.len()));
    plan.summary.insert("due_at".into(), json!(due));
    Ok(Ok(()))
}

/// `Some(Park)` unless Trailmark has seen `version` of `document` effective.
async fn unless_version_known(
    ig: &Integration,
    document: &str,
    version: &str,
) -> Result<Option<Park>, Failure> {
    let known = ig.store().version_known(document, version).await?;
    Ok((!known).then(|| {
        Park(format!(
            "document {document} version {version} is not known yet"
        ))
    }))
}

async fn retired(ig: &Integration, plan: &mut Plan, r: &events::RevisionRetired) -> Ruled {
    if let Some(park) = unless_version_known(ig, &r.document_id, &r.version).await? {
        return Ok(Err(park));
    }
    plan.master_data = true;
    let retired_at =
        events::normalise_time(&r.retired_at).map_err(|err| Failure::Corrupt(err.to_string()))?;
    plan.write(write::version_retired(
        &r.document_id,
        &r.version,
        &retired_at,
    ));
    let open = ig
        .store()
        .open_assignments_on(&r.document_id, &r.version)
        .await?;
    plan.summary.insert("cancelled".into(), json!(open.len()));
    cancel(plan, open, "version retired")?;
    Ok(Ok(()))
}

async fn unknown_people(ig: &Integration, people: &[String]) -> Result<Vec<String>, Failure> {
    let mut missing = Vec::new();
    for p in people {
        if !ig.store().person_known(p).await? {
            missing.push(p.clone());
        }
    }
    Ok(missing)
}

async fn capa_action(
    ig: &Integration,
    plan: &mut Plan,
    a: &events::CapaTrainingAction,
    seq: Seq,
) -> Ruled {
    if let Some(park) = unless_version_known(ig, &a.document_id, &a.version).await? {
        return Ok(Err(park));
    }
    let missing = unknown_people(ig, &a.people).await?;
    if !missing.is_empty() {
        return Ok(Err(Park(format!(
            "people not known yet: {}",
            missing.join(", ")
        ))));
    }
    let due_date = NaiveDate::parse_from_str(&a.due_date, "%Y-%m-%d")
        .map_err(|_| Failure::Corrupt("stored due_date".into()))?;
    let due = ts(due_date
        .and_hms_opt(23, 59, 59)
        .expect("a valid time")
        .and_utc());
    plan.write(write::capa_opened(&a.capa_id));
    plan.write(write::capa_action_known(write::CapaAction {
        capa_id: a.capa_id.clone(),
        action_id: a.action_id.clone(),
        document_id: a.document_id.clone(),
        version: a.version.clone(),
        verification_required: a.verification_required,
        due_at: due.clone(),
        seq,
        entry_hash: plan.event_hash.to_vec(),
    }));
    let now = ts(plan.now);
    let mut people: BTreeSet<String> = a.people.iter().cloned().collect();
    for f in &a.job_functions {
        people.extend(people_in(ig, f, &now).await?);
    }
    let origin = format!("capa:{}/{}", a.capa_id, a.action_id);
    for person in &people {
        ensure(
            ig,
            plan,
            Duty {
                person,
                document: &a.document_id,
                version: &a.version,
                origin: origin.clone(),
                capa: Some((&a.capa_id, &a.action_id)),
                verification_required: a.verification_required,
                effective_at: now.clone(),
                required_from: now.clone(),
                due_at: due.clone(),
            },
        )
        .await?;
    }
    plan.summary.insert("people".into(), json!(people));
    Ok(Ok(()))
}

async fn deviation(ig: &Integration, plan: &mut Plan, d: &events::DeviationOpened) -> Ruled {
    let occurred =
        events::normalise_time(&d.occurred_at).map_err(|err| Failure::Corrupt(err.to_string()))?;
    let Some(EffectiveVersion {
        version,
        effective_at,
        entry_hash: version_hash,
        ..
    }) = ig
        .store()
        .version_effective_at(&d.document_id, &occurred)
        .await?
    else {
        return Ok(Err(Park(format!(
            "no version of {} is known to have been effective at {occurred}",
            d.document_id
        ))));
    };
    let missing = unknown_people(ig, &d.people).await?;
    if !missing.is_empty() {
        return Ok(Err(Park(format!(
            "people not known yet: {}",
            missing.join(", ")
        ))));
    }
    let mut people = Vec::new();
    let mut evidence = vec![plan.event_hash, hash_of(&version_hash)?];
    let mut gaps = Vec::new();
    for person in &d.people {
        let done = ig
            .store()
            .first_completion_by(person, &d.document_id, &version, &occurred)
            .await?;
        let latest = ig
            .store()
            .latest_completion_by(person, &d.document_id, &occurred)
            .await?;
        let trained = done.is_some();
        if let Some(done) = &done {
            evidence.push(hash_of(&done.entry_hash)?);
        } else {
            gaps.push(person.clone());
        }
        people.push(json!({
            "person_id": person,
            "trained": trained,
            "completed_at": done.as_ref().map(|d| d.completed_at.clone()),
            "completion_seq": done.as_ref().map(|d| d.seq),
            "latest_version_trained": latest.as_ref().map(|l| l.version.clone()),
            "latest_completed_at": latest.as_ref().map(|l| l.completed_at.clone()),
        }));
    }
    let status = json!({
        "deviation_id": d.deviation_id, "document_id": d.document_id,
        "occurred_at": occurred, "version_effective": version,
        "version_effective_at": effective_at, "people": people, "gaps": gaps,
    });
    let mut payload = Map::new();
    if let Value::Object(m) = status.clone() {
        payload = m;
    }
    let status_index = plan.derive(
        &kind::QMS_DEVIATION_TRAINING_STATUS,
        &format!("qms:deviation/{}", d.deviation_id),
        evidence,
        vec![],
        payload,
        vec![],
    );
    for person in &gaps {
        let data = json!({
            "deviation_id": d.deviation_id, "person_id": person, "document_id": d.document_id,
            "version_effective": version, "occurred_at": occurred,
            "finding": format!("{person} had not completed training on {} version {version} before {occurred}", d.document_id),
        });
        plan.handover(
            &kind::INTEGRATION_HANDOVER_SENT,
            "qms",
            "qms.training_gap.found",
            &format!("qms:deviation/{}", d.deviation_id),
            vec![],
            vec![status_index],
            data,
            vec![],
        );
    }
    plan.summary.insert("gaps".into(), json!(gaps));
    Ok(Ok(()))
}

async fn completion(
    ig: &Integration,
    plan: &mut Plan,
    c: &events::CompletionRecorded,
    seq: Seq,
) -> Ruled {
    let missing = unknown_people(ig, std::slice::from_ref(&c.person_id)).await?;
    if !missing.is_empty() {
        return Ok(Err(Park(format!(
            "person {} is not known yet",
            c.person_id
        ))));
    }
    if let Some(park) = unless_version_known(ig, &c.document_id, &c.version).await? {
        return Ok(Err(park));
    }
    let completed_at =
        events::normalise_time(&c.completed_at).map_err(|err| Failure::Corrupt(err.to_string()))?;
    let verified = c.outcome == Outcome::Passed && c.verified_by.is_some();
    plan.write(write::completion_known(write::CompletionKnown {
        seq,
        person_id: c.person_id.clone(),
        document_id: c.document_id.clone(),
        version: c.version.clone(),
        completed_at: completed_at.clone(),
        outcome: if c.outcome == Outcome::Passed {
            "passed"
        } else {
            "completed"
        },
        verified_by: c.verified_by.clone(),
        entry_hash: plan.event_hash.to_vec(),
    }));
    // Open assignments; and, for a verified completion, completed ones
    // still waiting for their verification.
    let open = ig
        .store()
        .assignments_a_completion_meets(&c.person_id, &c.document_id, &c.version, verified)
        .await?;
    let mut capas: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut completed = Vec::new();
    for CompletableAssignment {
        assignment_id: id,
        entry_hash: hash,
        capa_id: capa,
    } in open
    {
        // An assignment that needs verification is completed by any
        // completion and verified by a `passed` one with `verified_by`;
        // closure readiness asks for both.
        let (effect, payload) =
            completion_of(&id, &completed_at, seq, plan.event_hash.to_vec(), verified);
        let parents = vec![plan.event_hash, hash_of(&hash)?];
        let index = plan.derive(
            &kind::INTEGRATION_ASSIGNMENT_COMPLETED,
            &format!("lms:assignment/{id}"),
            parents,
            vec![],
            payload,
            vec![effect],
        );
        completed.push(id.clone());
        if let Some(capa) = capa {
            plan.capa = true;
            let data = json!({
                "capa_id": capa, "assignment_id": id, "person_id": c.person_id,
                "document_id": c.document_id, "version": c.version,
                "completed_at": completed_at, "outcome": if c.outcome == Outcome::Passed { "passed" } else { "completed" },
                "verified_by": c.verified_by, "completion_seq": seq,
            });
            plan.handover(
                &kind::INTEGRATION_HANDOVER_SENT,
                "qms",
                "qms.completion.evidence",
                &format!("qms:capa/{capa}"),
                vec![],
                vec![index],
                data,
                vec![],
            );
            capas.entry(capa).or_default().push(id);
        }
    }
    // A CAPA whose last required completion this is becomes ready.
    for (capa, now_done) in capas {
        let readiness = super::queries::closure_readiness(ig, &capa).await?;
        let still_missing: Vec<&Value> = readiness
            .missing
            .iter()
            .filter(|m| !now_done.iter().any(|d| m["assignment_id"] == json!(d)))
            .collect();
        if still_missing.is_empty() && !readiness.flagged_ready {
            let data = json!({"capa_id": capa, "ready": true, "assignments": readiness.required});
            let effect = write::capa_ready(&capa);
            plan.handover(
                &kind::INTEGRATION_HANDOVER_SENT,
                "qms",
                "qms.capa.closure_readiness.changed",
                &format!("qms:capa/{capa}"),
                vec![plan.event_hash],
                vec![],
                data,
                vec![effect],
            );
        }
    }
    plan.summary
        .insert("assignments_completed".into(), json!(completed));
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{EventData, footprint};

    fn data(kind: &str, value: serde_json::Value) -> EventData {
        EventData::from_entry(kind, value).expect("a valid event")
    }

    fn completion(person: &str, doc: &str) -> EventData {
        data(
            "lms.completion.recorded",
            json!({"person_id": person, "document_id": doc, "version": "1",
                   "completed_at": "2026-01-01T00:00:00Z", "outcome": "completed"}),
        )
    }

    fn effective(doc: &str) -> EventData {
        data(
            "qms.document.revision_effective",
            json!({"document_id": doc, "version": "2", "effective_at": "2026-01-01T00:00:00Z"}),
        )
    }

    fn person(id: &str, active: bool) -> EventData {
        data(
            "hr.person.updated",
            json!({"person_id": id, "name": "N", "active": active,
                   "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z"}]}),
        )
    }

    fn deviation(people: &[&str], doc: &str) -> EventData {
        data(
            "qms.deviation.opened",
            json!({"deviation_id": "D1", "people": people, "document_id": doc,
                   "occurred_at": "2026-01-01T00:00:00Z"}),
        )
    }

    fn conflict(a: &EventData, b: &EventData) -> bool {
        let (a, b) = (footprint(a).unwrap(), footprint(b).unwrap());
        assert_eq!(a.conflicts(&b), b.conflicts(&a), "conflict is symmetric");
        a.conflicts(&b)
    }

    #[test]
    fn events_on_other_people_or_documents_do_not_conflict() {
        assert!(!conflict(
            &completion("E1", "SOP-1"),
            &completion("E2", "SOP-1")
        ));
        assert!(!conflict(
            &completion("E1", "SOP-1"),
            &completion("E1", "SOP-2")
        ));
        assert!(!conflict(&effective("SOP-1"), &effective("SOP-2")));
        assert!(!conflict(&effective("SOP-1"), &completion("E1", "SOP-2")));
        assert!(!conflict(
            &deviation(&["E1"], "SOP-1"),
            &deviation(&["E1"], "SOP-1")
        ));
        assert!(!conflict(
            &deviation(&["E1"], "SOP-1"),
            &completion("E2", "SOP-1")
        ));
        assert!(!conflict(&person("E1", true), &completion("E2", "SOP-1")));
    }

    #[test]
    fn events_that_read_what_another_writes_conflict() {
        assert!(conflict(
            &completion("E1", "SOP-1"),
            &completion("E1", "SOP-1")
        ));
        assert!(conflict(&effective("SOP-1"), &completion("E9", "SOP-1")));
        assert!(conflict(&effective("SOP-1"), &effective("SOP-1")));
        assert!(conflict(&effective("SOP-1"), &person("E9", true)));
        assert!(conflict(&person("E1", true), &completion("E1", "SOP-3")));
        assert!(conflict(&person("E1", true), &person("E1", true)));
        assert!(conflict(
            &deviation(&["E2", "E1"], "SOP-1"),
            &completion("E1", "SOP-1")
        ));
        assert!(conflict(&deviation(&["E1"], "SOP-1"), &effective("SOP-1")));
    }

    #[test]
    fn events_that_may_touch_anything_have_no_footprint() {
        assert!(footprint(&person("E1", false)).is_none());
        let matrix = data(
            "qms.training_matrix.changed",
            json!({"document_id": "SOP-1", "job_functions": ["OP"]}),
        );
        assert!(footprint(&matrix).is_none());
        let capa = data(
            "qms.capa.training_action",
            json!({"capa_id": "C1", "action_id": "A1", "document_id": "SOP-1", "version": "1",
                   "people": ["E1"], "due_date": "2026-02-01", "verification_required": false}),
        );
        assert!(footprint(&capa).is_none());
    }
}
