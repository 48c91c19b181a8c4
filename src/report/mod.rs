//! Signed reports (docs/REPORTS.md): lineage, training compliance and
//! audit-trail copies, as a signed PDF with an attached proof bundle, or as
//! the bundle itself (JSONL) or CSV.
//!
//! One pass over the rows feeds every form (one sink each, in `sink.rs`):
//! [`Out::row`] draws the row into the PDF (pages are written as they
//! fill), appends it to the bundle (a deflated temporary file) and to the
//! CSV, and remembers the seqs it cites.
//! Then the cited entries are appended in seq order with the tree nodes their
//! inclusion paths need, the PDF is finished and signed, and the report is
//! recorded as a `report.generated` entry.

pub mod font;
pub mod pdf;
pub mod proof;
pub mod sign;
mod sink;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::integration::queries;
use crate::ledger::merkle::{NodeId, ProofPlan};
use crate::ledger::{Actor, Hash, Seq, Subject, Timestamp, kind};
use crate::sequencer::{AppendRequest, SequencerHandle};
use crate::store::{Store, StoreError};
use font::Style;
use sign::ReportSigner;
use sink::{Heading, Out, Written};

/// Name of the attached proof bundle.
pub const BUNDLE_NAME: &str = "trailmark-proof.jsonl";
/// Format tag of the bundle's header line.
pub const BUNDLE_FORMAT: &str = "trailmark-report-proof-v2";
/// Most rows a lineage or audit-trail report holds.
pub const MAX_ENTRIES: usize = queries::LINEAGE_MAX;

/// The three report types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportType {
    /// From a triggering quality event to the last completion.
    Lineage,
    /// The unified training-compliance record of a period.
    Compliance,
    /// Complete entries for a subject or a time range.
    AuditTrail,
}

impl ReportType {
    /// `lineage`, `compliance` or `audit-trail`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportType::Lineage => "lineage",
            ReportType::Compliance => "compliance",
            ReportType::AuditTrail => "audit-trail",
        }
    }

    /// Parses the name used in paths and on the command line.
    pub fn parse(text: &str) -> Option<ReportType> {
        [
            ReportType::Lineage,
            ReportType::Compliance,
            ReportType::AuditTrail,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }

    fn title(self) -> &'static str {
        match self {
            ReportType::Lineage => "Lineage report",
            ReportType::Compliance => "Training compliance report",
            ReportType::AuditTrail => "Audit-trail copy",
        }
    }
}

/// What a report covers. Times are normalised ledger times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Lineage, or an audit trail of one subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Start of the period (inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the period (exclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Compliance: only these job functions (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_functions: Vec<String>,
    /// Audit trail: include `admin.*` and `security.*` entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_admin: bool,
}

impl Scope {
    /// Checks the scope against the type and normalises its times (a date
    /// `YYYY-MM-DD` means its midnight UTC).
    ///
    /// # Errors
    /// A message saying what to fix.
    pub fn checked(mut self, ty: ReportType) -> Result<Scope, ReportError> {
        let bad = |m: String| ReportError::Input(m);
        for (name, v) in [("from", &mut self.from), ("to", &mut self.to)] {
            if let Some(t) = v.as_mut() {
                *t = queries::period_bound(t).map_err(|m| bad(format!("`{name}`: {m}")))?;
            }
        }
        if let (Some(f), Some(t)) = (&self.from, &self.to)
            && f >= t
        {
            return Err(bad("`from` must be before `to`".into()));
        }
        if let Some(s) = &self.subject {
            Subject::parse(s).map_err(|e| bad(format!("`subject`: {e}")))?;
        }
        match ty {
            ReportType::Lineage => {
                if self.subject.is_none() {
                    return Err(bad(
                        "a lineage report needs a `subject`, e.g. qms:capa/CAPA-2026-031".into(),
                    ));
                }
                if self.from.is_some()
                    || self.to.is_some()
                    || self.include_admin
                    || !self.job_functions.is_empty()
                {
                    return Err(bad("a lineage report takes only a `subject`".into()));
                }
            }
            ReportType::Compliance => {
                if self.from.is_none() || self.to.is_none() {
                    return Err(bad(
                        "a compliance report needs `from` and `to` (RFC 3339 or YYYY-MM-DD)".into(),
                    ));
                }
                if self.subject.is_some() || self.include_admin {
                    return Err(bad(
                        "a compliance report takes `from`, `to` and `job_function` only".into(),
                    ));
                }
            }
            ReportType::AuditTrail => {
                if self.subject.is_none() && (self.from.is_none() || self.to.is_none()) {
                    return Err(bad(
                        "an audit-trail copy needs a `subject`, or `from` and `to`".into(),
                    ));
                }
                if !self.job_functions.is_empty() {
                    return Err(bad("an audit-trail copy takes no `job_function`".into()));
                }
            }
        }
        Ok(self)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.subject {
            parts.push(format!("subject {s}"));
        }
        match (&self.from, &self.to) {
            (Some(f), Some(t)) => parts.push(format!("from {f} to {t} (exclusive)")),
            (Some(f), None) => parts.push(format!("from {f}")),
            (None, Some(t)) => parts.push(format!("before {t}")),
            (None, None) => {}
        }
        if !self.job_functions.is_empty() {
            parts.push(format!("job functions {}", self.job_functions.join(", ")));
        }
        if self.include_admin {
            parts.push("including administrative and security entries".into());
        }
        parts.join("; ")
    }
}

/// The file form of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Signed PDF with the attached bundle.
    Pdf,
    /// The proof bundle itself: header, rows, entries, nodes.
    Jsonl,
    /// RFC 4180, one line per row.
    Csv,
}

impl Format {
    /// From a file name's extension or a `format` parameter.
    pub fn parse(text: &str) -> Option<Format> {
        match text.to_ascii_lowercase().as_str() {
            "pdf" => Some(Format::Pdf),
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// `pdf`, `jsonl` or `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }

    /// The media type served.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Jsonl => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Who asked for the report.
#[derive(Debug, Clone)]
pub struct Requester {
    /// `user:…` or `system:cli`.
    pub actor: Actor,
    /// Printed name.
    pub printed_name: String,
}

/// A generated, signed and recorded report.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// `R-` and 16 hex digits.
    pub report_id: String,
    /// Report type.
    #[serde(rename = "type")]
    pub ty: ReportType,
    /// File form.
    pub format: Format,
    /// Where the file is.
    pub path: PathBuf,
    /// SHA-256 of the file (hex).
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// Rows shown.
    pub rows: u64,
    /// Entries cited (and proved).
    pub cited: u64,
    /// Pages (PDF only).
    pub pages: u64,
    /// Size of the checkpoint the proofs are against.
    pub checkpoint_size: u64,
    /// Its root (hex).
    pub checkpoint_root: String,
    /// Seq of the `report.generated` entry.
    pub entry_seq: Seq,
    /// Hash of the `report.generated` entry.
    pub entry_hash: String,
    /// Seconds spent in each phase, for logs and benchmarks.
    #[serde(skip)]
    pub phases: Vec<(&'static str, f64)>,
}

/// Why a report was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request is wrong; the message says what to fix.
    #[error("{0}")]
    Input(String),
    /// The subject or period has nothing to report.
    #[error("{0}")]
    NotFound(String),
    /// The report-signing key is not there.
    #[error("{0}")]
    NoSigner(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be written.
    #[error("writing the report: {0}")]
    Io(#[from] io::Error),
    /// The report could not be recorded, so it is not delivered.
    #[error("recording the report in the ledger failed: {0}")]
    Record(String),
}

/// Generates reports: the store to read, the sequencer to record them, the
/// signer, and the ledger origin.
#[derive(Clone)]
pub struct Reporter {
    store: Store,
    sequencer: SequencerHandle,
    signer: Option<Arc<ReportSigner>>,
    origin: String,
    checkpoint_wait: Duration,
}

/// Seconds spent in each phase of a generation, for logs and benchmarks.
struct Phases {
    clock: std::time::Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            clock: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Ends the phase `name`, which began at the previous lap.
    fn lap(&mut self, name: &'static str) {
        self.laps.push((name, self.clock.elapsed().as_secs_f64()));
        self.clock = std::time::Instant::now();
    }
}

struct Col {
    key: &'static str,
    label: &'static str,
    share: f32,
    style: Style,
}

const fn col(key: &'static str, label: &'static str, share: f32, style: Style) -> Col {
    Col {
        key,
        label,
        share,
        style,
    }
}

const LINEAGE_COLUMNS: &[Col] = &[
    col("seq", "Seq", 0.55, Style::Regular),
    col("recorded_at", "Recorded (UTC)", 1.25, Style::Regular),
    col("kind", "Kind", 1.7, Style::Regular),
    col("actor", "Actor", 1.35, Style::Regular),
    col("subject", "Subject", 1.6, Style::Regular),
    col(
        "details",
        "Hand-over, outcome, signature",
        3.0,
        Style::Regular,
    ),
    col("hash", "Entry hash (SHA-256)", 1.8, Style::Mono),
];

const COMPLIANCE_COLUMNS: &[Col] = &[
    col("document", "Document", 1.0, Style::Regular),
    col("effective_at", "Effective", 1.15, Style::Regular),
    col("person", "Person", 1.5, Style::Regular),
    col("job_functions", "Job functions", 1.0, Style::Regular),
    col("assigned_at", "Assigned", 1.15, Style::Regular),
    col("lag", "Lag", 0.6, Style::Regular),
    col("due_at", "Due", 1.15, Style::Regular),
    col("completed_at", "Completed", 1.15, Style::Regular),
    col("status", "Status", 0.75, Style::Bold),
    col(
        "evidence",
        "Evidence: assignment / completion entry",
        2.6,
        Style::Mono,
    ),
];

const AUDIT_COLUMNS: &[Col] = &[
    col("seq", "Seq", 0.5, Style::Regular),
    col("recorded_at", "Recorded (UTC)", 1.2, Style::Regular),
    col("kind", "Kind", 1.6, Style::Regular),
    col("actor", "Actor", 1.3, Style::Regular),
    col("subject", "Subject", 1.5, Style::Regular),
    col(
        "content",
        "Content, reason, corrections, signatures",
        4.5,
        Style::Regular,
    ),
    col("hash", "Entry hash (SHA-256)", 1.45, Style::Mono),
];

fn columns(ty: ReportType) -> &'static [Col] {
    match ty {
        ReportType::Lineage => LINEAGE_COLUMNS,
        ReportType::Compliance => COMPLIANCE_COLUMNS,
        ReportType::AuditTrail => AUDIT_COLUMNS,
    }
}

/// One report row: values by column, or a band (heading or totals), its
/// facts (REPORTS.md §4.1), and the entries it cites with their roles.
#[derive(Debug, Clone, Default)]
struct Row {
    band: Option<String>,
    values: Vec<String>,
    facts: Value,
    cites: Vec<(Seq, Hash, &'static str)>,
}

impl Row {
    /// A note band of a lineage or audit-trail report.
    fn note(text: String) -> Row {
        Row {
            band: Some(text),
            facts: json!({"band": "note"}),
            ..Row::default()
        }
    }

    /// A row showing one entry.
    fn entry(values: Vec<String>, seq: Seq, hash: Hash) -> Row {
        Row {
            band: None,
            values,
            facts: json!({}),
            cites: vec![(seq, hash, proof::role::ENTRY)],
        }
    }
}

/// `R-` and the first 16 hex digits of SHA-256 over the canonical JSON of
/// type, scope, generation time and actor (REPORTS.md §1).
pub fn report_id(ty: ReportType, scope: &Scope, generated_at: &str, actor: &str) -> String {
    let v =
        json!({"type": ty.as_str(), "scope": scope, "generated_at": generated_at, "actor": actor});
    let canonical = serde_json_canonicalizer::to_string(&v).expect("JSON values canonicalise");
    format!(
        "R-{}",
        &hex::encode(Sha256::digest(canonical.as_bytes()))[..16]
    )
}

impl Reporter {
    /// A reporter over `store`, recording through `sequencer`. Without a
    /// signer, PDFs are refused (JSONL and CSV still work).
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        signer: Option<Arc<ReportSigner>>,
        origin: String,
    ) -> Reporter {
        Reporter {
            store,
            sequencer,
            signer,
            origin,
            checkpoint_wait: Duration::from_secs(3),
        }
    }

    /// The signer, if configured.
    pub fn signer(&self) -> Option<&ReportSigner> {
        self.signer.as_deref()
    }

    /// Writes the report to `out`, signs it (PDF), records it, and says what
    /// was made. On any failure the file is removed: nothing half-written
    /// or unrecorded leaves.
    ///
    /// # Errors
    /// See [`ReportError`].
    pub async fn generate(
        &self,
        ty: ReportType,
        scope: Scope,
        format: Format,
        by: &Requester,
        out: &Path,
    ) -> Result<Generated, ReportError> {
        let result = self.generate_inner(ty, scope, format, by, out).await;
        if result.is_err() {
            let _ = std::fs::remove_file(out);
        }
        result
    }

    async fn checkpoint(&self) -> Result<crate::store::StoredCheckpoint, ReportError> {
        let size = self.store.size().await?;
        let deadline = tokio::time::Instant::now() + self.checkpoint_wait;
        loop {
            if let Some(cp) = self.store.checkpoint_at_least(size).await? {
                return Ok(cp);
            }
            if tokio::time::Instant::now() >= deadline {
                return self.store.latest_checkpoint().await?.ok_or_else(|| {
                    ReportError::NotFound("the ledger has no signed checkpoint".into())
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn generate_inner(
        &self,
        ty: ReportType,
        scope: Scope,
        format: Format,
        by: &Requester,
        path: &Path,
    ) -> Result<Generated, ReportError> {
        let scope = scope.checked(ty)?;
        let mut phases = Phases::start();
        let signer = self.signer_for(format)?;
        let now = Utc::now();
        let generated_at = Timestamp::from_datetime(now).to_string();
        let report_id = report_id(ty, &scope, &generated_at, by.actor.as_str());
        let cp = self.checkpoint().await?;
        let root = Hash::from_slice(&cp.root).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let heading = Heading {
            ty,
            scope: &scope,
            report_id: &report_id,
            generated_at: &generated_at,
            now,
            by,
            origin: &self.origin,
            cp: &cp,
            root: &root,
            signer: signer.as_deref(),
        };
        let tmp = tempfile::tempfile()?;
        let mut out = Out::open(&heading, format, path, &tmp)?;
        phases.lap("checkpoint and title");
        self.rows(&heading, &mut out).await?;
        phases.lap("rows (read, laid out, drawn)");
        let cited = self.append_proofs(&mut out, cp.size, &mut phases).await?;
        let rows = out.rows;
        let file = out.finish(&heading, tmp, path, |name| phases.lap(name))?;
        phases.lap("signed and hashed");
        let receipt = self.record(&heading, format, &file, rows, cited).await?;
        phases.lap("recorded");
        let pages = file.pages;
        tracing::info!(report_id = %report_id, ty = ty.as_str(), rows, cited, pages, phases = ?phases.laps, "report generated");
        Ok(Generated {
            report_id,
            ty,
            format,
            path: path.to_owned(),
            sha256: file.sha256,
            bytes: file.bytes,
            rows,
            cited: cited as u64,
            pages,
            checkpoint_size: cp.size,
            checkpoint_root: root.to_hex(),
            entry_seq: receipt.seq,
            entry_hash: receipt.hash.to_hex(),
            phases: phases.laps,
        })
    }

    /// The report signer, which a PDF needs.
    fn signer_for(&self, format: Format) -> Result<Option<Arc<ReportSigner>>, ReportError> {
        match format {
            Format::Pdf => Ok(Some(self.signer.clone().ok_or_else(|| {
                ReportError::NoSigner(
                    "no report-signing certificate in the data directory; run `trailmark ca init-reports`".into(),
                )
            })?)),
            _ => Ok(None),
        }
    }

    /// The rows of the report's type, fed to every form; the PDF's table
    /// is closed after them.
    ///
    /// # Errors
    /// Nothing to report, or a read or write failure.
    async fn rows(&self, heading: &Heading<'_>, out: &mut Out) -> Result<(), ReportError> {
        let (ty, scope) = (heading.ty, heading.scope);
        let mut names = Names::new(self.store.clone());
        match ty {
            ReportType::Lineage => self.lineage_rows(scope, &mut names, out).await?,
            ReportType::Compliance => {
                self.compliance_rows(scope, heading.generated_at, out)
                    .await?;
            }
            ReportType::AuditTrail => self.audit_rows(scope, &mut names, out).await?,
        }
        if out.rows == 0 {
            return Err(ReportError::NotFound(format!(
                "nothing to report for {} ({})",
                ty.as_str(),
                scope.describe()
            )));
        }
        if let Some(pdf) = &mut out.pdf {
            pdf.close(out.rows, out.cited.len(), heading.cp.size)?;
        }
        Ok(())
    }

    /// Appends to the bundle every cited entry in seq order, then the tree
    /// nodes their inclusion paths (against the checkpoint of `size`) need,
    /// then the end line. Returns how many entries are cited.
    async fn append_proofs(
        &self,
        out: &mut Out,
        size: u64,
        phases: &mut Phases,
    ) -> Result<usize, ReportError> {
        let cited: Vec<(Seq, Hash)> = out.cited.iter().map(|(s, h)| (*s, *h)).collect();
        let mut needed: BTreeSet<NodeId> = BTreeSet::new();
        for chunk in cited.chunks(500) {
            let seqs: Vec<Seq> = chunk.iter().map(|c| c.0).collect();
            let entries = self.store.canonical_of(&seqs).await?;
            for ((seq, hash), (got_seq, canonical)) in chunk.iter().zip(entries) {
                if *seq != got_seq {
                    return Err(StoreError::Corrupt(format!("entry {seq} is missing")).into());
                }
                let text = String::from_utf8(canonical)
                    .map_err(|_| StoreError::Corrupt(format!("entry {seq} is not UTF-8")))?;
                out.lines
                    .line(&json!({"seq": seq, "hash": hash.to_hex(), "entry": text}))?;
                let plan = ProofPlan::inclusion(seq.get(), size)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                needed.extend(plan.needed());
            }
        }
        phases.lap("cited entries");
        let needed: Vec<NodeId> = needed.into_iter().collect();
        for chunk in needed.chunks(500) {
            let nodes = self.store.nodes(chunk).await?;
            for id in chunk {
                let h = nodes.get(id).ok_or_else(|| {
                    StoreError::Corrupt(format!("tree node {}/{} is missing", id.level, id.index))
                })?;
                out.lines
                    .line(&json!({"node": [id.level, id.index, h.to_hex()]}))?;
            }
        }
        out.lines.line(
            &json!({"end": {"rows": out.rows, "entries": cited.len(), "nodes": needed.len()}}),
        )?;
        Ok(cited.len())
    }

    /// Records the report as a `report.generated` entry; a report that
    /// cannot be recorded is not delivered.
    async fn record(
        &self,
        heading: &Heading<'_>,
        format: Format,
        file: &Written,
        rows: u64,
        cited: usize,
    ) -> Result<crate::sequencer::Receipt, ReportError> {
        let mut payload = Map::new();
        payload.insert("report_id".into(), json!(heading.report_id));
        payload.insert("type".into(), json!(heading.ty.as_str()));
        payload.insert("scope".into(), json!(heading.scope));
        payload.insert("format".into(), json!(format.as_str()));
        payload.insert("sha256".into(), json!(file.sha256));
        payload.insert("bytes".into(), json!(file.bytes));
        payload.insert("rows".into(), json!(rows));
        payload.insert("cited".into(), json!(cited));
        payload.insert("checkpoint_size".into(), json!(heading.cp.size));
        payload.insert("checkpoint_root".into(), json!(heading.root.to_hex()));
        if file.pages > 0 {
            payload.insert("pages".into(), json!(file.pages));
        }
        self.sequencer
            .append(AppendRequest::new(
                &kind::REPORT_GENERATED,
                heading.by.actor.clone(),
                Subject::parse(&format!("report:{}", heading.report_id))
                    .map_err(|e| ReportError::Record(e.to_string()))?,
                payload,
            ))
            .await
            .map_err(|e| ReportError::Record(e.to_string()))
    }

    async fn lineage_rows(
        &self,
        scope: &Scope,
        names: &mut Names,
        out: &mut Out,
    ) -> Result<(), ReportError> {
        let subject = scope.subject.as_deref().unwrap_or_default();
        let lineage = queries::lineage(&self.store, subject).await?;
        if lineage.entries.is_empty() {
            return Err(ReportError::NotFound(format!(
                "no entry has subject `{subject}`"
            )));
        }
        let seqs: Vec<Seq> = lineage
            .entries
            .iter()
            .filter_map(|e| e["seq"].as_u64().and_then(Seq::new))
            .filter(|s| s.get() < out.checkpoint_size)
            .collect();
        let entries = self.load(&seqs).await?;
        // Final delivery outcome per message, from the outcome entries reached.
        let mut outcome: HashMap<String, String> = HashMap::new();
        for e in &entries {
            if let Some(id) = e.payload.get("message_id").and_then(Value::as_str)
                && e.kind.starts_with("integration.handover.")
                && e.kind != "integration.handover.sent"
            {
                outcome.insert(id.to_owned(), outcome_text(e));
            }
        }
        for e in &entries {
            let mut details = describe(e);
            if e.kind == "integration.handover.sent"
                && let Some(id) = e.payload.get("message_id").and_then(Value::as_str)
            {
                details.push_str(&format!(
                    "\nOutcome: {}",
                    outcome.get(id).map_or("not yet delivered", String::as_str)
                ));
            }
            out.row(Row::entry(
                vec![
                    e.seq.to_string(),
                    e.recorded_at.clone(),
                    e.kind.clone(),
                    names.actor(&e.actor).await?,
                    e.subject.clone(),
                    details,
                    e.hash.to_hex(),
                ],
                e.seq,
                e.hash,
            ))?;
        }
        if lineage.truncated {
            out.row(Row::note(format!(
                "The lineage walk stopped at {MAX_ENTRIES} entries; narrow the subject."
            )))?;
        }
        Ok(())
    }

    async fn compliance_rows(
        &self,
        scope: &Scope,
        generated_at: &str,
        out: &mut Out,
    ) -> Result<(), ReportError> {
        let (from, to) = (
            scope.from.clone().unwrap_or_default(),
            scope.to.clone().unwrap_or_default(),
        );
        let revisions = queries::revisions_effective(&self.store, &from, &to).await?;
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for revision in &revisions {
            let rows = queries::compliance_with_evidence(
                &self.store,
                revision,
                &to,
                &scope.job_functions,
                generated_at,
            )
            .await?;
            let hashes = self.hashes_of(&rows).await?;
            let (facts, text) =
                proof::revision_band(&revision.0, &revision.1, &revision.2, rows.len() as u64);
            out.row(Row {
                band: Some(text),
                facts,
                ..Row::default()
            })?;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for (r, evidence) in rows {
                *counts.entry(r.status.clone()).or_default() += 1;
                let mut cites = Vec::new();
                let mut cite = |seq: Option<Seq>, role: &'static str| {
                    if let Some(seq) = seq
                        && let Some(h) = hashes.get(&seq)
                    {
                        cites.push((seq, *h, role));
                    }
                };
                cite(evidence.revision, proof::role::REVISION);
                for seq in &evidence.person {
                    cite(Some(*seq), proof::role::PERSON);
                }
                for seq in &evidence.matrix {
                    cite(Some(*seq), proof::role::MATRIX);
                }
                cite(r.assignment_entry_seq, proof::role::ASSIGNMENT);
                cite(r.completion_entry_seq, proof::role::COMPLETION);
                cite(evidence.cancellation, proof::role::CANCELLATION);
                cite(evidence.superseded_by, proof::role::SUPERSEDED_BY);
                let ended = evidence.end_reason.is_some();
                let facts = proof::ComplianceFacts {
                    document_id: r.document_id,
                    version: r.version,
                    effective_at: r.effective_at,
                    person_id: r.person_id,
                    person_name: r.person_name,
                    job_functions: r.job_functions,
                    assignment_id: r.assignment_id,
                    required_from: r.required_from,
                    recorded_at: r.assignment_created_at,
                    due_at: r.due_at,
                    completed_at: r.completed_at,
                    ended_at: r.assignment_ended_at.filter(|_| ended),
                    end_reason: evidence.end_reason,
                    as_of: generated_at.to_owned(),
                    status: r.status,
                };
                let shown: Vec<proof::Cite> = cites
                    .iter()
                    .map(|(seq, h, role)| proof::Cite {
                        role,
                        seq: seq.get(),
                        hash: h.to_hex(),
                    })
                    .collect();
                out.row(Row {
                    band: None,
                    values: facts.cells(&shown),
                    facts: serde_json::to_value(&facts).map_err(|e| {
                        ReportError::Store(StoreError::Corrupt(format!("row facts: {e}")))
                    })?,
                    cites,
                })?;
            }
            let (facts, text) = proof::totals_band(&revision.0, &revision.1, &counts);
            out.row(Row {
                band: Some(text),
                facts,
                ..Row::default()
            })?;
            for (k, v) in counts {
                *totals.entry(k).or_default() += v;
            }
        }
        if !revisions.is_empty() {
            let (facts, text) = proof::overall_band(revisions.len() as u64, &totals);
            out.row(Row {
                band: Some(text),
                facts,
                ..Row::default()
            })?;
        }
        Ok(())
    }

    /// The hashes of every entry the rows of a revision rest on, in one
    /// query per 500.
    async fn hashes_of(
        &self,
        rows: &[(queries::ComplianceRow, queries::RowEvidence)],
    ) -> Result<HashMap<Seq, Hash>, ReportError> {
        let mut seqs: BTreeSet<Seq> = BTreeSet::new();
        for (r, e) in rows {
            seqs.extend(r.assignment_entry_seq);
            seqs.extend(r.completion_entry_seq);
            seqs.extend(e.revision);
            seqs.extend(e.cancellation);
            seqs.extend(e.superseded_by);
            seqs.extend(e.person.iter().copied());
            seqs.extend(e.matrix.iter().copied());
        }
        let ids: Vec<NodeId> = seqs
            .into_iter()
            .map(|seq| NodeId {
                level: 0,
                index: seq.get(),
            })
            .collect();
        Ok(self
            .store
            .nodes(&ids)
            .await?
            .into_iter()
            .filter_map(|(id, h)| Some((Seq::new(id.index)?, h)))
            .collect())
    }

    async fn audit_rows(
        &self,
        scope: &Scope,
        names: &mut Names,
        out: &mut Out,
    ) -> Result<(), ReportError> {
        let mut after: Option<Seq> = None;
        let mut count = 0usize;
        loop {
            let filter = crate::store::EntryFilter {
                subject: scope.subject.clone(),
                from: scope.from.clone(),
                to: scope.to.clone(),
                after_seq: after,
                limit: 500,
                ..crate::store::EntryFilter::default()
            };
            let page = self.store.list(&filter).await?;
            if page.is_empty() {
                break;
            }
            after = page.last().map(|e| e.seq);
            let seqs: Vec<Seq> = page
                .iter()
                .filter(|e| e.seq.get() < out.checkpoint_size)
                .filter(|e| {
                    scope.include_admin
                        || !(e.kind.starts_with("admin.") || e.kind.starts_with("security."))
                })
                .map(|e| e.seq)
                .collect();
            for e in self.load(&seqs).await? {
                let content = self.full_content(&e, names).await?;
                out.row(Row::entry(
                    vec![
                        e.seq.to_string(),
                        e.recorded_at.clone(),
                        e.kind.clone(),
                        names.actor(&e.actor).await?,
                        e.subject.clone(),
                        content,
                        e.hash.to_hex(),
                    ],
                    e.seq,
                    e.hash,
                ))?;
                count += 1;
                if count >= MAX_ENTRIES * 10 {
                    out.row(Row::note(format!(
                        "Stopped at {count} entries; narrow the period."
                    )))?;
                    return Ok(());
                }
            }
            if after.is_some_and(|a| a.size() >= out.checkpoint_size) {
                break;
            }
        }
        Ok(())
    }

    /// An entry's complete content for the audit-trail copy: every payload
    /// field, the reason, parents, the earlier values it corrects, and the
    /// signatures on it.
    async fn full_content(&self, e: &Loaded, names: &mut Names) -> Result<String, ReportError> {
        let mut lines = own_content(e);
        if !e.parents.is_empty() {
            let seqs = self.store.seqs_of(&e.parents).await?;
            let named: Vec<String> = e
                .parents
                .iter()
                .map(|h| seqs.get(h).map_or_else(|| h.to_hex(), |s| format!("#{s}")))
                .collect();
            lines.push(format!("Parents: {}", named.join(", ")));
        }
        if e.kind == "ledger.correction"
            && let Some(first) = e.parents.first()
            && let Some(seq) = self.store.seqs_of(&[*first]).await?.get(first).copied()
            && let Some(earlier) = self.load(&[seq]).await?.into_iter().next()
        {
            let mut old = Vec::new();
            flatten("", &Value::Object(earlier.payload.clone()), &mut old);
            lines.push(format!(
                "Corrects #{seq} ({}); earlier values:",
                earlier.kind
            ));
            lines.extend(old.into_iter().map(|l| format!("  was {l}")));
        }
        let children = self.store.children(e.seq).await?;
        for s in self.load(&children).await? {
            if s.kind == "signature.applied" {
                lines.push(signature_line(&s));
            } else if s.kind == "ledger.correction" {
                lines.push(format!(
                    "Corrected by #{} ({}): {}",
                    s.seq,
                    names.actor(&s.actor).await?,
                    s.reason.clone().unwrap_or_default()
                ));
            }
        }
        Ok(lines.join("\n"))
    }

    async fn load(&self, seqs: &[Seq]) -> Result<Vec<Loaded>, ReportError> {
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(500) {
            for (seq, canonical) in self.store.canonical_of(chunk).await? {
                out.push(Loaded::parse(seq, &canonical)?);
            }
        }
        Ok(out)
    }
}

/// An entry parsed for display.
#[derive(Debug, Clone)]
struct Loaded {
    seq: Seq,
    hash: Hash,
    recorded_at: String,
    kind: String,
    actor: String,
    subject: String,
    reason: Option<String>,
    parents: Vec<Hash>,
    payload: Map<String, Value>,
}

impl Loaded {
    fn parse(seq: Seq, canonical: &[u8]) -> Result<Loaded, ReportError> {
        let corrupt = |m: String| ReportError::Store(StoreError::Corrupt(m));
        let v: Value =
            serde_json::from_slice(canonical).map_err(|e| corrupt(format!("entry {seq}: {e}")))?;
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let parents = v
            .get("parents")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|h| Hash::parse_hex(h).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Loaded {
            seq,
            hash: crate::ledger::merkle::leaf_hash(canonical),
            recorded_at: text("recorded_at"),
            kind: text("kind"),
            actor: text("actor"),
            subject: text("subject"),
            reason: v.get("reason").and_then(Value::as_str).map(str::to_owned),
            parents,
            payload: v
                .get("payload")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// Printed names of users, looked up once each.
struct Names {
    store: Store,
    users: HashMap<String, String>,
}

impl Names {
    fn new(store: Store) -> Names {
        Names {
            store,
            users: HashMap::new(),
        }
    }

    /// `Printed Name (user:id)` for users, the actor as is otherwise.
    async fn actor(&mut self, actor: &str) -> Result<String, ReportError> {
        let Some(id) = actor.strip_prefix("user:") else {
            return Ok(actor.to_owned());
        };
        if let Some(n) = self.users.get(id) {
            return Ok(n.clone());
        }
        let stored = match crate::ledger::UserId::parse(id) {
            Ok(id) => self.store.user(&id).await?,
            Err(_) => None,
        };
        let name = match stored {
            Some(u) => format!("{} ({actor})", u.printed_name),
            None => actor.to_owned(),
        };
        self.users.insert(id.to_owned(), name.clone());
        Ok(name)
    }
}

/// The §11.50 line of a signature entry.
fn signature_line(e: &Loaded) -> String {
    let m = e.payload.get("manifestation").cloned().unwrap_or_default();
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    format!(
        "Signed by {} ({}) · meaning: {} ({}) · {} UTC ({}) · entry #{}",
        s("printed_name"),
        s("user_id"),
        s("meaning_text"),
        s("meaning"),
        s("signed_at"),
        s("signed_at_local"),
        e.seq
    )
}

fn outcome_text(e: &Loaded) -> String {
    let p = &e.payload;
    let n = |k: &str| {
        p.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    match e.kind.as_str() {
        "integration.handover.delivered" => format!(
            "delivered to {} (HTTP {}, attempt {}, {} ms) at {} · #{}",
            n("target"),
            n("status"),
            n("attempt"),
            n("latency_ms"),
            e.recorded_at,
            e.seq
        ),
        "integration.handover.failed" => format!(
            "attempt {} failed: {} · #{}",
            n("attempt"),
            n("error"),
            e.seq
        ),
        "integration.handover.dead_lettered" => format!(
            "dead-lettered after {} attempts: {} · #{}",
            n("attempts"),
            n("last_error"),
            e.seq
        ),
        "integration.handover.replayed" => format!(
            "replayed by {}: {} · #{}",
            e.actor,
            e.reason.clone().unwrap_or_default(),
            e.seq
        ),
        other => format!("{other} · #{}", e.seq),
    }
}

/// The details column of a lineage row, before the outcome of a hand-over:
/// everything here comes from the entry itself (REPORTS.md §4.1).
fn describe(e: &Loaded) -> String {
    let p = &e.payload;
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut text = match e.kind.as_str() {
        "signature.applied" => signature_line(e),
        "integration.handover.sent" => format!(
            "Hand-over to {}: {} (message {})",
            s("target"),
            s("message_type"),
            s("message_id")
        ),
        k if k.starts_with("integration.handover.") => outcome_text(e),
        _ => {
            let mut lines = Vec::new();
            let data = p.get("data").cloned().unwrap_or(Value::Object(p.clone()));
            flatten("", &data, &mut lines);
            lines.truncate(8);
            lines.join("\n")
        }
    };
    if let Some(r) = &e.reason {
        text.push_str(&format!("\nReason: {r}"));
    }
    text
}

/// The first lines of the content column of an audit-trail row: the whole
/// payload and the reason, from the entry itself (REPORTS.md §4.1).
fn own_content(e: &Loaded) -> Vec<String> {
    let mut lines = Vec::new();
    flatten("", &Value::Object(e.payload.clone()), &mut lines);
    if let Some(r) = &e.reason {
        lines.push(format!("Reason: {r}"));
    }
    lines
}

/// `a.b: value` lines of a JSON value, arrays indexed.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push(format!("{prefix}: {s}")),
        other => out.push(format!("{prefix}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids_depend_on_every_input() {
        let s = Scope {
            subject: Some("qms:capa/C-1".into()),
            ..Scope::default()
        };
        let a = report_id(
            ReportType::Lineage,
            &s,
            "2026-01-01T00:00:00.000000Z",
            "user:a",
        );
        assert!(a.starts_with("R-") && a.len() == 18);
        assert_ne!(
            a,
            report_id(
                ReportType::AuditTrail,
                &s,
                "2026-01-01T00:00:00.000000Z",
                "user:a"
            )
        );
        assert_ne!(
            a,
            report_id(
                ReportType::Lineage,
                &s,
                "2026-01-01T00:00:00.000001Z",
                "user:a"
            )
        );
        assert_ne!(
            a,
            report_id(
                ReportType::Lineage,
                &s,
                "2026-01-01T00:00:00.000000Z",
                "user:b"
            )
        );
    }

    #[test]
    fn scopes_say_what_is_missing() {
        let err = Scope::default().checked(ReportType::Lineage).unwrap_err();
        assert!(err.to_string().contains("subject"));
        let err = Scope {
            from: Some("2026-02-01".into()),
            to: Some("2026-01-01".into()),
            ..Scope::default()
        }
        .checked(ReportType::Compliance)
        .unwrap_err();
        assert!(err.to_string().contains("before"));
        let ok = Scope {
            from: Some("2026-01-01".into()),
            to: Some("2026-02-01".into()),
            ..Scope::default()
        }
        .checked(ReportType::Compliance)
        .unwrap();
        assert_eq!(ok.from.as_deref(), Some("2026-01-01T00:00:00.000000Z"));
    }
}
