//! Rows prove their cells (docs/REPORTS.md §4.1): the facts a report row
//! shows, how its cells are drawn from them, and the check that recomputes
//! a row from the entries it cites.
//!
//! The generator draws every cell through [`ComplianceFacts::cells`] and the
//! verifier recomputes facts, status and cells from the cited entries with
//! the same functions, so a row either follows from its entries or
//! `verify-report` names the cell that does not. `tests/independent`
//! implements the same section in Python without this code.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::integration::events::normalise_time;

/// Reason of a cancellation by a newer version (INTEGRATION.md §3).
pub const SUPERSEDED: &str = "superseded by a newer version";

/// Statuses, in the order the totals list them.
pub const STATUSES: [&str; 6] = ["on_time", "late", "open", "overdue", "missing", "cancelled"];

/// The role of a cited entry in a row.
pub mod role {
    /// The one entry a lineage or audit-trail row shows.
    pub const ENTRY: &str = "entry";
    /// The revision's `qms.document.revision_effective`.
    pub const REVISION: &str = "revision";
    /// An `hr.person.updated` with the person's name and job functions.
    pub const PERSON: &str = "person";
    /// A `qms.training_matrix.changed` of the document.
    pub const MATRIX: &str = "matrix";
    /// The `lms.assignment.created`.
    pub const ASSIGNMENT: &str = "assignment";
    /// The `lms.completion.recorded`.
    pub const COMPLETION: &str = "completion";
    /// The `lms.assignment.cancelled`.
    pub const CANCELLATION: &str = "cancellation";
    /// The next revision, for a supersession.
    pub const SUPERSEDED_BY: &str = "superseded_by";
}

/// What a compliance row shows, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceFacts {
    /// Document.
    pub document_id: String,
    /// Version.
    pub version: String,
    /// When the version became effective.
    pub effective_at: String,
    /// Person required.
    pub person_id: String,
    /// Their name, when HR data gives one.
    pub person_name: Option<String>,
    /// The job functions that made them required, sorted.
    pub job_functions: Vec<String>,
    /// The SOP assignment; none means `missing`.
    pub assignment_id: Option<String>,
    /// From when (business time) they had to be trained.
    pub required_from: Option<String>,
    /// When Trailmark recorded the assignment.
    pub recorded_at: Option<String>,
    /// Due.
    pub due_at: Option<String>,
    /// Earliest completion on the version.
    pub completed_at: Option<String>,
    /// When a cancelled assignment ended (business time).
    pub ended_at: Option<String>,
    /// Why it was cancelled.
    pub end_reason: Option<String>,
    /// When the status is judged: the report's generation time.
    pub as_of: String,
    /// The status.
    pub status: String,
}

/// A cited entry: the line's role, seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cite {
    /// Role (`role::*`).
    pub role: &'static str,
    /// Seq.
    pub seq: u64,
    /// Hash, hex.
    pub hash: String,
}

impl ComplianceFacts {
    /// The status the rules give these facts (INTEGRATION.md §3, point 4).
    pub fn status(&self) -> &'static str {
        crate::integration::queries::compliance_status(
            self.due_at
                .as_deref()
                .filter(|_| self.assignment_id.is_some()),
            self.completed_at.as_deref(),
            self.end_reason
                .as_ref()
                .map(|_| self.ended_at.as_deref().unwrap_or(self.as_of.as_str())),
            &self.as_of,
        )
    }

    /// The display cells, in column order (REPORTS.md §4.1). `cites` gives
    /// the evidence column its assignment and completion entries.
    pub fn cells(&self, cites: &[Cite]) -> Vec<String> {
        let person = match &self.person_name {
            Some(n) if !n.is_empty() => format!("{n} ({})", self.person_id),
            _ => self.person_id.clone(),
        };
        let assigned = match (&self.assignment_id, &self.required_from, &self.recorded_at) {
            (Some(_), Some(from), Some(at)) => format!("{from}\nrecorded {at}"),
            _ => "not assigned".to_owned(),
        };
        let lag = match (&self.assignment_id, &self.required_from, &self.recorded_at) {
            (Some(_), Some(from), Some(at)) => {
                seconds_between(from, at).map(lag_text).unwrap_or_default()
            }
            _ => String::new(),
        };
        let completed = match &self.completed_at {
            Some(done) => match &self.required_from {
                Some(from) if done < from => format!("{done}\nbefore the assignment was required"),
                _ => done.clone(),
            },
            None => "not completed".to_owned(),
        };
        let mut status = self.status.replace('_', " ");
        if let (Some(ended), Some(reason)) = (&self.ended_at, &self.end_reason) {
            status.push_str(&format!("\nended {ended}: {reason}"));
        }
        let evidence = [role::ASSIGNMENT, role::COMPLETION]
            .iter()
            .map(|r| match cites.iter().find(|c| c.role == *r) {
                Some(c) => format!("{r} #{}\n{}", c.seq, c.hash),
                None => format!("{r}: none"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        vec![
            format!("{} v{}", self.document_id, self.version),
            self.effective_at.clone(),
            person,
            self.job_functions.join(", "),
            assigned,
            lag,
            self.due_at.clone().unwrap_or_default(),
            completed,
            status,
            evidence,
        ]
    }
}

/// Whole seconds from `a` to `b`, truncated toward zero.
pub fn seconds_between(a: &str, b: &str) -> Option<i64> {
    let a = chrono::DateTime::parse_from_rfc3339(a).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b).ok()?;
    Some((b - a).num_seconds())
}

/// A lag for people: seconds, minutes, hours or days.
pub fn lag_text(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// `<n> <status>` for the six statuses, joined by ` · `.
pub fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    STATUSES
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                counts.get(*k).copied().unwrap_or(0),
                k.replace('_', " ")
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Counts with every status present, zeros included.
pub fn full_counts(counts: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    STATUSES
        .iter()
        .map(|k| ((*k).to_owned(), counts.get(*k).copied().unwrap_or(0)))
        .collect()
}

/// The facts and text of a revision band.
pub fn revision_band(
    doc: &str,
    version: &str,
    effective_at: &str,
    required: u64,
) -> (Value, String) {
    (
        json!({"band": "revision", "document_id": doc, "version": version,
               "effective_at": effective_at, "required": required}),
        format!("{doc} version {version} · effective {effective_at} · {required} people required"),
    )
}

/// The facts and text of a revision's totals band.
pub fn totals_band(doc: &str, version: &str, counts: &BTreeMap<String, u64>) -> (Value, String) {
    let n: u64 = counts.values().sum();
    (
        json!({"band": "totals", "document_id": doc, "version": version, "counts": full_counts(counts)}),
        format!(
            "Totals for {doc} v{version}: {n} required · {}",
            counts_text(counts)
        ),
    )
}

/// The facts and text of the overall band.
pub fn overall_band(revisions: u64, counts: &BTreeMap<String, u64>) -> (Value, String) {
    let n: u64 = counts.values().sum();
    (
        json!({"band": "overall", "revisions": revisions, "required": n, "counts": full_counts(counts)}),
        format!(
            "Overall: {revisions} revisions effective in the period · {n} person-revisions required · {}",
            counts_text(counts)
        ),
    )
}

/// A cited entry as the row check reads it.
#[derive(Debug, Clone)]
pub struct CitedEntry {
    /// Seq.
    pub seq: u64,
    /// Hash, hex.
    pub hash: String,
    /// Recorded time.
    pub recorded_at: String,
    /// Kind.
    pub kind: String,
    /// Actor.
    pub actor: String,
    /// Subject.
    pub subject: String,
    /// The whole payload.
    pub payload: serde_json::Map<String, Value>,
    /// The reason, if any.
    pub reason: Option<String>,
}

/// Why a cited entry cannot be read: the row check stops at it.
#[derive(Debug, thiserror::Error)]
pub enum CitedEntryError {
    /// The bundle has no entry line with that seq.
    #[error("entry {0} is not in the bundle")]
    NotInBundle(u64),
    /// Its bundle line or canonical bytes are not the JSON expected.
    #[error("entry {seq}: {problem}")]
    Malformed {
        /// The entry.
        seq: u64,
        /// What the JSON parser found.
        problem: serde_json::Error,
    },
}

impl CitedEntry {
    /// Reads an entry's canonical bytes.
    ///
    /// # Errors
    /// If they are not a JSON object.
    pub fn parse(seq: u64, hash: String, canonical: &[u8]) -> Result<CitedEntry, CitedEntryError> {
        let mut v: Value = serde_json::from_slice(canonical)
            .map_err(|problem| CitedEntryError::Malformed { seq, problem })?;
        let payload = match v.get_mut("payload").map(Value::take) {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(CitedEntry {
            seq,
            hash,
            recorded_at: text("recorded_at"),
            kind: text("kind"),
            actor: text("actor"),
            subject: text("subject"),
            payload,
            reason: v.get("reason").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// `payload.data`, or null.
    pub fn data(&self) -> &Value {
        self.payload.get("data").unwrap_or(&Value::Null)
    }

    /// The entry as the report's renderers read it.
    fn loaded(&self) -> super::Loaded {
        super::Loaded {
            seq: crate::ledger::Seq::clamped(self.seq),
            hash: crate::ledger::Hash::parse_hex(&self.hash).unwrap_or(crate::ledger::Hash::ZERO),
            recorded_at: self.recorded_at.clone(),
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            reason: self.reason.clone(),
            parents: Vec::new(),
            payload: self.payload.clone(),
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.data().get(key).and_then(Value::as_str)
    }

    /// A payload time as Trailmark stores it, for comparing as instants.
    fn time(&self, key: &str) -> Option<String> {
        self.text(key).and_then(|t| normalise_time(t).ok())
    }
}

/// Checks the rows of a bundle in order (REPORTS.md §4.1, step 6).
pub struct RowChecker {
    ty: String,
    scope_to: String,
    as_of: String,
    open: Option<Band>,
    revisions: u64,
    totals: BTreeMap<String, u64>,
    overall_seen: bool,
}

/// The revision band being filled.
struct Band {
    document_id: String,
    version: String,
    effective_at: String,
    required: u64,
    rows: u64,
    counts: BTreeMap<String, u64>,
}

/// A row that the entries do not support: which cell and why.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// A cited entry cannot be read.
    #[error(transparent)]
    Entry(#[from] CitedEntryError),
    /// A cell, cite, band or fact the entries or the report's order do not
    /// support, in the words `verify-report` prints.
    #[error("{0}")]
    Unsupported(String),
}

fn unsupported(text: impl Into<String>) -> RowError {
    RowError::Unsupported(text.into())
}

impl RowChecker {
    /// A checker for a report of type `ty` with the header's scope and
    /// generation time.
    pub fn new(ty: &str, scope: &Value, generated_at: &str) -> RowChecker {
        RowChecker {
            ty: ty.to_owned(),
            scope_to: scope["to"].as_str().unwrap_or_default().to_owned(),
            as_of: generated_at.to_owned(),
            open: None,
            revisions: 0,
            totals: BTreeMap::new(),
            overall_seen: false,
        }
    }

    /// Checks one row line (`{"row", "facts", "cites"}`); `entry` gives a
    /// cited entry by seq (already checked against the checkpoint).
    ///
    /// # Errors
    /// The first cell or cite the entries do not support.
    pub fn row(
        &mut self,
        line: &Value,
        entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
    ) -> Result<(), RowError> {
        let cells = line["row"]
            .as_object()
            .ok_or_else(|| unsupported("the row is not an object"))?;
        let facts = line
            .get("facts")
            .ok_or_else(|| unsupported("the row has no facts"))?;
        let mut cites = Vec::new();
        for c in line["cites"].as_array().into_iter().flatten() {
            let role = match c["as"].as_str() {
                Some(r) => ROLES
                    .iter()
                    .find(|k| **k == r)
                    .copied()
                    .ok_or_else(|| unsupported(format!("a cite has the unknown role `{r}`")))?,
                None => return Err(unsupported("a cite has no role (`as`)")),
            };
            let seq = c["seq"]
                .as_u64()
                .ok_or_else(|| unsupported("a cite has no seq"))?;
            cites.push(Cite {
                role,
                seq,
                hash: c["hash"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if self.overall_seen {
            return Err(unsupported("a row follows the overall totals"));
        }
        if let Some(band) = cells.get("band") {
            let text = band
                .as_str()
                .ok_or_else(|| unsupported("the band is not text"))?;
            if !cites.is_empty() {
                return Err(unsupported("a band cites entries"));
            }
            return self.band(text, facts);
        }
        match self.ty.as_str() {
            "compliance" => self.compliance(cells, facts, &cites, entry),
            "lineage" => entry_row(cells, facts, &cites, entry, "details"),
            "audit-trail" => entry_row(cells, facts, &cites, entry, "content"),
            other => Err(unsupported(format!("unknown report type `{other}`"))),
        }
    }

    /// Checks what must hold after the last row.
    ///
    /// # Errors
    /// A revision without totals, or missing overall totals.
    pub fn finish(&self) -> Result<(), RowError> {
        if self.ty != "compliance" {
            return Ok(());
        }
        if let Some(b) = &self.open {
            return Err(unsupported(format!(
                "{} v{} has no totals band",
                b.document_id, b.version
            )));
        }
        if self.revisions > 0 && !self.overall_seen {
            return Err(unsupported("the overall totals band is missing"));
        }
        Ok(())
    }

    fn band(&mut self, text: &str, facts: &Value) -> Result<(), RowError> {
        if self.ty != "compliance" {
            if *facts != json!({"band": "note"}) {
                return Err(unsupported(format!("a note band has the facts {facts}")));
            }
            return Ok(());
        }
        let s = |k: &str| facts[k].as_str().unwrap_or_default().to_owned();
        let (expected_facts, expected_text) = match facts["band"].as_str() {
            Some("revision") => {
                if let Some(b) = &self.open {
                    return Err(unsupported(format!(
                        "{} v{} has no totals band",
                        b.document_id, b.version
                    )));
                }
                let required = facts["required"]
                    .as_u64()
                    .ok_or_else(|| unsupported("a revision band has no count"))?;
                self.open = Some(Band {
                    document_id: s("document_id"),
                    version: s("version"),
                    effective_at: s("effective_at"),
                    required,
                    rows: 0,
                    counts: BTreeMap::new(),
                });
                self.revisions += 1;
                revision_band(
                    &s("document_id"),
                    &s("version"),
                    &s("effective_at"),
                    required,
                )
            }
            Some("totals") => {
                let b = self
                    .open
                    .take()
                    .ok_or_else(|| unsupported("a totals band without its revision band"))?;
                if b.rows != b.required {
                    return Err(unsupported(format!(
                        "{} v{}: the band says {} people required, {} rows follow",
                        b.document_id, b.version, b.required, b.rows
                    )));
                }
                for (k, v) in &b.counts {
                    *self.totals.entry(k.clone()).or_default() += v;
                }
                totals_band(&b.document_id, &b.version, &b.counts)
            }
            Some("overall") => {
                if let Some(b) = &self.open {
                    return Err(unsupported(format!(
                        "{} v{} has no totals band",
                        b.document_id, b.version
                    )));
                }
                self.overall_seen = true;
                overall_band(self.revisions, &self.totals)
            }
            _ => return Err(unsupported(format!("a band has the facts {facts}"))),
        };
        if *facts != expected_facts {
            return Err(unsupported(format!(
                "band facts {facts}, the rows give {expected_facts}"
            )));
        }
        if text != expected_text {
            return Err(unsupported(format!(
                "band reads `{text}`, the rows give `{expected_text}`"
            )));
        }
        Ok(())
    }

    fn compliance(
        &mut self,
        cells: &serde_json::Map<String, Value>,
        facts: &Value,
        cites: &[Cite],
        entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
    ) -> Result<(), RowError> {
        let f: ComplianceFacts = serde_json::from_value(facts.clone())
            .map_err(|e| unsupported(format!("facts: {e}")))?;
        let band = self
            .open
            .as_mut()
            .ok_or_else(|| unsupported("a row outside a revision band"))?;
        if (
            f.document_id.as_str(),
            f.version.as_str(),
            f.effective_at.as_str(),
        ) != (
            band.document_id.as_str(),
            band.version.as_str(),
            band.effective_at.as_str(),
        ) {
            return Err(unsupported(format!(
                "the row is about {} v{} effective {}, its band {} v{} effective {}",
                f.document_id,
                f.version,
                f.effective_at,
                band.document_id,
                band.version,
                band.effective_at
            )));
        }
        band.rows += 1;
        *band.counts.entry(f.status.clone()).or_default() += 1;
        if f.as_of != self.as_of {
            return Err(unsupported(format!(
                "as_of is {}, the report was generated at {}",
                f.as_of, self.as_of
            )));
        }
        prove_compliance(&f, cites, &self.scope_to, entry)?;
        let status = f.status();
        if f.status != status {
            return Err(unsupported(format!(
                "status: the row says {}, the entries give {status}",
                f.status
            )));
        }
        compare_cells(cells, COMPLIANCE_KEYS, &f.cells(cites))
    }
}

const ROLES: [&str; 8] = [
    role::ENTRY,
    role::REVISION,
    role::PERSON,
    role::MATRIX,
    role::ASSIGNMENT,
    role::COMPLETION,
    role::CANCELLATION,
    role::SUPERSEDED_BY,
];

/// Column keys of the compliance report, in order.
pub const COMPLIANCE_KEYS: &[&str] = &[
    "document",
    "effective_at",
    "person",
    "job_functions",
    "assigned_at",
    "lag",
    "due_at",
    "completed_at",
    "status",
    "evidence",
];

fn compare_cells(
    cells: &serde_json::Map<String, Value>,
    keys: &[&str],
    expected: &[String],
) -> Result<(), RowError> {
    if cells.len() != keys.len() {
        return Err(unsupported(format!(
            "the row has {} cells, the report type {}",
            cells.len(),
            keys.len()
        )));
    }
    for (k, want) in keys.iter().zip(expected) {
        let got = cells.get(*k).and_then(Value::as_str).unwrap_or_default();
        if got != want {
            return Err(unsupported(format!(
                "column {k}: the row shows {got:?}, the entries give {want:?}"
            )));
        }
    }
    Ok(())
}

fn mismatch(role: &str, seq: u64, what: &str, fact: Option<&str>, entry: Option<&str>) -> RowError {
    unsupported(format!(
        "{what}: the row says {}, its {role} entry {seq} says {}",
        fact.map_or("nothing".to_owned(), |f| format!("{f:?}")),
        entry.map_or("nothing".to_owned(), |e| format!("{e:?}"))
    ))
}

fn cited<'a>(cites: &'a [Cite], r: &str) -> impl Iterator<Item = &'a Cite> {
    cites.iter().filter(move |c| c.role == r)
}

fn at_most_one<'a>(cites: &'a [Cite], r: &str, wanted: bool) -> Result<Option<&'a Cite>, RowError> {
    let mut it = cited(cites, r);
    let first = it.next();
    if it.next().is_some() {
        return Err(unsupported(format!(
            "the row cites more than one {r} entry"
        )));
    }
    match (first, wanted) {
        (None, true) => Err(unsupported(format!("the row cites no {r} entry"))),
        (Some(c), false) => Err(unsupported(format!(
            "the row cites a {r} entry ({}) it has no fact for",
            c.seq
        ))),
        (c, _) => Ok(c),
    }
}

fn of_kind(
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
    c: &Cite,
    kind: &str,
    actor: Option<&str>,
) -> Result<Rc<CitedEntry>, RowError> {
    let e = entry(c.seq)?;
    if e.kind != kind {
        return Err(unsupported(format!(
            "its {} entry {} is a {}, not a {kind}",
            c.role, c.seq, e.kind
        )));
    }
    if let Some(a) = actor
        && e.actor != a
    {
        return Err(unsupported(format!(
            "its {} entry {} was written by {}, not {a}",
            c.role, c.seq, e.actor
        )));
    }
    Ok(e)
}

/// Each `(what, the row's fact, what the entry says)` must agree.
fn agree(
    c: &Cite,
    e: &CitedEntry,
    checks: &[(&str, Option<&str>, Option<&str>)],
) -> Result<(), RowError> {
    for (what, fact, got) in checks {
        if fact != got {
            return Err(mismatch(c.role, e.seq, what, *fact, *got));
        }
    }
    Ok(())
}

/// Every fact of a compliance row against its cited entries: the
/// revision, the person and why they were required, the assignment, the
/// completion, and how the assignment ended.
fn prove_compliance(
    f: &ComplianceFacts,
    cites: &[Cite],
    scope_to: &str,
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    prove_revision(f, cites, entry)?;
    prove_required(f, cites, scope_to, entry)?;
    prove_assignment(f, cites, entry)?;
    prove_completion(f, cites, entry)?;
    prove_ending(f, cites, entry)
}

/// The revision: exactly one, of the row's document, version and
/// effective time.
fn prove_revision(
    f: &ComplianceFacts,
    cites: &[Cite],
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    let c = at_most_one(cites, role::REVISION, true)?.ok_or_else(|| unsupported("no revision"))?;
    let e = of_kind(entry, c, "qms.document.revision_effective", None)?;
    agree(
        c,
        &e,
        &[
            ("document", Some(&f.document_id), e.text("document_id")),
            ("version", Some(&f.version), e.text("version")),
            (
                "effective",
                Some(&f.effective_at),
                e.time("effective_at").as_deref(),
            ),
        ],
    )
}

/// The person (with the row's name, if it shows one) and why they were
/// required: their person entries and the document's matrix entries.
fn prove_required(
    f: &ComplianceFacts,
    cites: &[Cite],
    scope_to: &str,
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    let mut persons = Vec::new();
    for c in cited(cites, role::PERSON) {
        let e = of_kind(entry, c, "hr.person.updated", None)?;
        agree(
            c,
            &e,
            &[("person", Some(&f.person_id), e.text("person_id"))],
        )?;
        persons.push(e);
    }
    if persons.is_empty() {
        return Err(unsupported("the row cites no person entry"));
    }
    if let Some(name) = &f.person_name
        && !persons
            .iter()
            .any(|p| p.text("name") == Some(name.as_str()))
    {
        return Err(unsupported(format!(
            "person name: the row says {name:?}, none of its person entries does"
        )));
    }
    let mut matrices = Vec::new();
    for c in cited(cites, role::MATRIX) {
        let e = of_kind(entry, c, "qms.training_matrix.changed", None)?;
        agree(
            c,
            &e,
            &[("document", Some(&f.document_id), e.text("document_id"))],
        )?;
        matrices.push(e);
    }
    required_by(f, &persons, &matrices, scope_to)
}

/// The assignment the rules created, if the row has one; without one, the
/// row has no assignment facts.
fn prove_assignment(
    f: &ComplianceFacts,
    cites: &[Cite],
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    if let Some(c) = at_most_one(cites, role::ASSIGNMENT, f.assignment_id.is_some())? {
        let e = of_kind(entry, c, "lms.assignment.created", Some("system:rules"))?;
        let from = e.time("required_from").or_else(|| e.time("effective_at"));
        agree(
            c,
            &e,
            &[
                (
                    "assignment",
                    f.assignment_id.as_deref(),
                    e.text("assignment_id"),
                ),
                ("person", Some(&f.person_id), e.text("person_id")),
                ("document", Some(&f.document_id), e.text("document_id")),
                ("version", Some(&f.version), e.text("version")),
                ("origin", Some("sop"), e.text("origin")),
                ("due", f.due_at.as_deref(), e.time("due_at").as_deref()),
                ("required from", f.required_from.as_deref(), from.as_deref()),
                ("recorded", f.recorded_at.as_deref(), Some(&e.recorded_at)),
            ],
        )
    } else if f.required_from.is_some()
        || f.recorded_at.is_some()
        || f.due_at.is_some()
        || f.end_reason.is_some()
    {
        Err(unsupported(
            "the row has assignment facts but no assignment",
        ))
    } else {
        Ok(())
    }
}

/// The completion, if the row shows one.
fn prove_completion(
    f: &ComplianceFacts,
    cites: &[Cite],
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    let Some(c) = at_most_one(cites, role::COMPLETION, f.completed_at.is_some())? else {
        return Ok(());
    };
    let e = of_kind(entry, c, "lms.completion.recorded", None)?;
    agree(
        c,
        &e,
        &[
            ("person", Some(&f.person_id), e.text("person_id")),
            ("document", Some(&f.document_id), e.text("document_id")),
            ("version", Some(&f.version), e.text("version")),
            (
                "completed",
                f.completed_at.as_deref(),
                e.time("completed_at").as_deref(),
            ),
        ],
    )
}

/// The cancellation, if the assignment ended, and the revision that
/// superseded it, if that is why.
fn prove_ending(
    f: &ComplianceFacts,
    cites: &[Cite],
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
) -> Result<(), RowError> {
    let superseded = f.end_reason.as_deref() == Some(SUPERSEDED);
    if let Some(c) = at_most_one(cites, role::CANCELLATION, f.end_reason.is_some())? {
        let e = of_kind(entry, c, "lms.assignment.cancelled", Some("system:rules"))?;
        // A supersession ends at the next version's effective time, proved
        // by the `superseded_by` cite below; any other ending when recorded.
        let ended = if superseded {
            f.ended_at.as_deref()
        } else {
            Some(e.recorded_at.as_str())
        };
        agree(
            c,
            &e,
            &[
                (
                    "assignment",
                    f.assignment_id.as_deref(),
                    e.text("assignment_id"),
                ),
                ("reason", f.end_reason.as_deref(), e.text("reason")),
                ("ended", f.ended_at.as_deref(), ended),
            ],
        )?;
    } else if f.ended_at.is_some() {
        return Err(unsupported(
            "the row says the assignment ended but cites no cancellation",
        ));
    }
    if let Some(c) = at_most_one(cites, role::SUPERSEDED_BY, superseded)? {
        let e = of_kind(entry, c, "qms.document.revision_effective", None)?;
        let next = e.time("effective_at");
        agree(
            c,
            &e,
            &[
                ("document", Some(&f.document_id), e.text("document_id")),
                ("ended", f.ended_at.as_deref(), next.as_deref()),
            ],
        )?;
        if next.as_deref() <= Some(f.effective_at.as_str()) {
            return Err(unsupported(format!(
                "its superseding revision {} is not after {}",
                c.seq, f.effective_at
            )));
        }
    }
    Ok(())
}

/// Why the person was required: every job function of the row is held in a
/// person entry (in the period, after the effective time) and mapped to the
/// document by a matrix entry.
fn required_by(
    f: &ComplianceFacts,
    persons: &[Rc<CitedEntry>],
    matrices: &[Rc<CitedEntry>],
    scope_to: &str,
) -> Result<(), RowError> {
    if f.job_functions.is_empty() {
        return Err(unsupported("the row names no job function"));
    }
    let mut sorted = f.job_functions.clone();
    sorted.sort();
    sorted.dedup();
    if sorted != f.job_functions {
        return Err(unsupported("job functions are not sorted and distinct"));
    }
    let listed = |e: &CitedEntry| {
        e.data()["job_functions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for function in &f.job_functions {
        let held = persons.iter().flat_map(|p| listed(p)).any(|span| {
            let time = |k: &str| span[k].as_str().and_then(|t| normalise_time(t).ok());
            span["job_function"].as_str() == Some(function.as_str())
                && time("valid_from").is_some_and(|from| from.as_str() < scope_to)
                && match &span["valid_to"] {
                    Value::Null => true,
                    _ => time("valid_to").is_some_and(|to| to > f.effective_at),
                }
        });
        if !held {
            return Err(unsupported(format!(
                "job function {function}: no person entry has {} in it between the effective time and the end of the period",
                f.person_id
            )));
        }
        if !matrices
            .iter()
            .flat_map(|m| listed(m))
            .any(|j| j.as_str() == Some(function.as_str()))
        {
            return Err(unsupported(format!(
                "job function {function}: no matrix entry maps {} to it",
                f.document_id
            )));
        }
    }
    Ok(())
}

/// A lineage or audit-trail row: one entry, its own fields shown.
fn entry_row(
    cells: &serde_json::Map<String, Value>,
    facts: &Value,
    cites: &[Cite],
    entry: &mut dyn FnMut(u64) -> Result<Rc<CitedEntry>, CitedEntryError>,
    own: &str,
) -> Result<(), RowError> {
    if *facts != json!({}) {
        return Err(unsupported(format!("an entry row has the facts {facts}")));
    }
    let [c] = cites else {
        return Err(unsupported(format!(
            "an entry row cites {} entries, not one",
            cites.len()
        )));
    };
    if c.role != role::ENTRY {
        return Err(unsupported(format!(
            "an entry row cites its entry as {}",
            c.role
        )));
    }
    let e = entry(c.seq)?;
    let seq = e.seq.to_string();
    let cell = |k: &str| cells.get(k).and_then(Value::as_str).unwrap_or_default();
    for (key, want) in [
        ("seq", seq.as_str()),
        ("recorded_at", e.recorded_at.as_str()),
        ("kind", e.kind.as_str()),
        ("subject", e.subject.as_str()),
        ("hash", e.hash.as_str()),
    ] {
        if cell(key) != want {
            return Err(unsupported(format!(
                "column {key}: the row shows {:?}, entry {} says {want:?}",
                cell(key),
                e.seq
            )));
        }
    }
    let actor = cell("actor");
    if actor != e.actor && !actor.ends_with(&format!(" ({})", e.actor)) {
        return Err(unsupported(format!(
            "column actor: the row shows {actor:?}, entry {} was written by {}",
            e.seq, e.actor
        )));
    }
    // What the entry says of itself comes first; what follows names other
    // entries (a hand-over's outcome, parents, corrections, signatures).
    let loaded = e.loaded();
    let said = if own == "details" {
        super::describe(&loaded)
    } else {
        super::own_content(&loaded).join("\n")
    };
    let shown = cell(own);
    if !(shown == said
        || shown
            .strip_prefix(said.as_str())
            .is_some_and(|rest| rest.starts_with('\n')))
    {
        return Err(unsupported(format!(
            "column {own}: the row shows {shown:?}, entry {} begins {said:?}",
            e.seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ComplianceFacts {
        ComplianceFacts {
            document_id: "SOP-1".into(),
            version: "2".into(),
            effective_at: "2026-01-01T00:00:00.000000Z".into(),
            person_id: "E1".into(),
            person_name: Some("Ann".into()),
            job_functions: vec!["op".into()],
            assignment_id: Some("A-1".into()),
            required_from: Some("2026-01-01T00:00:00.000000Z".into()),
            recorded_at: Some("2026-01-01T00:00:05.000000Z".into()),
            due_at: Some("2026-01-31T00:00:00.000000Z".into()),
            completed_at: None,
            ended_at: None,
            end_reason: None,
            as_of: "2026-02-15T00:00:00.000000Z".into(),
            status: String::new(),
        }
    }

    #[test]
    fn the_status_follows_the_rules_of_integration_md() {
        let mut f = facts();
        assert_eq!(f.status(), "overdue");
        f.as_of = "2026-01-15T00:00:00.000000Z".into();
        assert_eq!(f.status(), "open");
        f.completed_at = Some("2026-01-31T00:00:00.000000Z".into());
        assert_eq!(f.status(), "on_time");
        f.completed_at = Some("2026-02-01T00:00:00.000000Z".into());
        assert_eq!(f.status(), "late");
        // Cancelled after the due date without training: still overdue.
        f.completed_at = None;
        f.end_reason = Some(SUPERSEDED.into());
        f.ended_at = Some("2026-02-10T00:00:00.000000Z".into());
        assert_eq!(f.status(), "overdue");
        f.completed_at = Some("2026-02-05T00:00:00.000000Z".into());
        assert_eq!(f.status(), "late");
        f.completed_at = None;
        f.ended_at = Some("2026-01-20T00:00:00.000000Z".into());
        assert_eq!(f.status(), "cancelled");
        f.assignment_id = None;
        assert_eq!(f.status(), "missing");
    }

    #[test]
    fn cells_say_when_training_came_before_the_duty() {
        let mut f = facts();
        f.completed_at = Some("2025-12-20T00:00:00.000000Z".into());
        f.status = f.status().into();
        let cells = f.cells(&[]);
        assert_eq!(cells[2], "Ann (E1)");
        assert_eq!(
            cells[4],
            "2026-01-01T00:00:00.000000Z\nrecorded 2026-01-01T00:00:05.000000Z"
        );
        assert_eq!(cells[5], "5 s");
        assert_eq!(
            cells[7],
            "2025-12-20T00:00:00.000000Z\nbefore the assignment was required"
        );
        assert_eq!(cells[8], "on time");
        assert_eq!(cells[9], "assignment: none\ncompletion: none");
    }

    #[test]
    fn lags_read_as_people_read_them() {
        assert_eq!(lag_text(-3), "-3 s");
        assert_eq!(lag_text(119), "119 s");
        assert_eq!(lag_text(7199), "119 min");
        assert_eq!(lag_text(172_799), "47 h");
        assert_eq!(lag_text(200 * 86_400 + 5), "200 d");
    }
}
