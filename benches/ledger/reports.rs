//! `reports`: a lineage report of 1,000 entries, and a compliance report
//! for 10,000 people and 200 document revisions (each revision required by
//! one of 20 job functions of 500 people: 100,000 rows, about 190,000 cited
//! entries), both as signed PDFs. The fixture's entries go through the
//! sequencer (real hashes, tree and checkpoints); the integration tables
//! that the rules worker would fill are derived from them in SQL (SQLite
//! only), because replaying 190,000 events through the rules is not what is
//! measured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trailmark::instance::Instance;
use trailmark::ledger::{Actor, Hash, Subject, kind};
use trailmark::report::{Format, ReportType, Reporter, Requester, Scope};
use trailmark::sequencer::{AppendRequest, Sequencer, SequencerHandle};
use trailmark::telemetry::Metrics;

/// Flags of `reports`.
#[derive(clap::Args)]
pub struct ReportsArgs {
    /// People in the compliance fixture.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub people: usize,
    /// Document revisions in the compliance fixture.
    #[arg(long, value_name = "D", default_value_t = 200)]
    pub documents: usize,
    /// Keeps the reports and the verifier key in DIR (to time `trailmark
    /// verify-report` on its own).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// The job functions of the compliance fixture.
const FUNCTIONS: usize = 20;

/// Peak resident memory since the last reset (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// An entry the rules would write (actor `system:rules`).
fn bench_request(
    kind_name: &str,
    subject: &str,
    parents: Vec<Hash>,
    payload: Value,
) -> AppendRequest {
    AppendRequest {
        kind: kind::lookup(kind_name).expect("registered kind"),
        actor: Actor::parse("system:rules").expect("actor"),
        subject: Subject::parse(subject).expect("subject"),
        correlation_id: None,
        idempotency_key: None,
        parents,
        reason: None,
        payload: payload.as_object().cloned().unwrap_or_default(),
        effects: Vec::new(),
        parent_refs: Vec::new(),
    }
}

/// An entry a source system sent (actor `service:…`).
fn source_request(kind_name: &str, actor: &str, subject: &str, payload: Value) -> AppendRequest {
    AppendRequest {
        actor: Actor::parse(actor).expect("actor"),
        ..bench_request(kind_name, subject, vec![], payload)
    }
}

pub async fn run(args: &ReportsArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (opened, _token) = Instance::initialise(
        &tmp.path().join("data"),
        Some("bench.trailmark.local/reports".into()),
        None,
    )
    .await?;
    let sequencer = Sequencer::start(
        opened.store.clone(),
        opened.key.clone(),
        opened.config.sequencer.clone(),
        Metrics::default(),
    )
    .await?;
    let seq = sequencer.handle();
    let started = Instant::now();
    lineage_fixture(&seq).await?;
    let mut groups = Groups {
        seq: &seq,
        batch: Vec::new(),
        appended: 0,
    };
    compliance_sources(&mut groups, args.people, args.documents).await?;
    compliance_assignments(&mut groups, args.people, args.documents).await?;
    let appended = groups.appended;
    let store = opened.store.clone();
    derive_state(&opened.dir.database_url(&opened.config, None)).await?;
    println!("backend            {}", store.backend_name());
    println!(
        "fixture            {} entries appended and state derived in {:.1} s",
        appended + 1000,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signer = trailmark::report::sign::ReportSigner::from_dir(&opened.dir)?.map(Arc::new);
    let reporter = Reporter::new(
        store.clone(),
        seq.clone(),
        signer,
        opened.config.origin.clone(),
    );
    let by = Requester {
        actor: Actor::parse("system:cli")?,
        printed_name: "Benchmark".into(),
    };
    for case in cases() {
        generate(
            &reporter,
            &by,
            &opened,
            tmp.path(),
            case,
            args.keep.as_deref(),
        )
        .await?;
    }
    // The sequencer stops once every handle is gone.
    drop(reporter);
    drop(seq);
    sequencer.shutdown().await;
    opened.store.close().await;
    Ok(())
}

/// Lineage fixture: a CAPA action and 999 entries derived from it.
async fn lineage_fixture(seq: &SequencerHandle) -> anyhow::Result<()> {
    let root = seq
        .append(bench_request(
            "qms.capa.training_action",
            "qms:capa/BENCH-1",
            vec![],
            json!({"capa_id": "BENCH-1", "action_id": "A1", "document_id": "D000", "version": "1"}),
        ))
        .await?;
    let mut batch = Vec::new();
    for i in 0..999 {
        batch.push(bench_request(
            "lms.assignment.created",
            &format!("lms:assignment/A-LIN-{i:04}"),
            vec![root.hash],
            json!({"assignment_id": format!("A-LIN-{i:04}"), "person_id": format!("P{i:05}"), "document_id": "D000", "version": "1"}),
        ));
        if batch.len() == 500 {
            seq.append_group(std::mem::take(&mut batch)).await?;
        }
    }
    seq.append_group(std::mem::take(&mut batch)).await?;
    Ok(())
}

/// Entries appended in groups of about 1,000; `appended` counts them.
struct Groups<'a> {
    seq: &'a SequencerHandle,
    batch: Vec<AppendRequest>,
    appended: usize,
}

impl Groups<'_> {
    /// Appends the batch as one group once it holds 1,000 entries.
    async fn flush_when_full(&mut self) -> anyhow::Result<()> {
        if self.batch.len() >= 1000 {
            let group = std::mem::take(&mut self.batch);
            self.appended += group.len();
            self.seq.append_group(group).await?;
        }
        Ok(())
    }

    /// Appends the batch as one group, however many it holds.
    async fn flush(&mut self) -> anyhow::Result<()> {
        let group = std::mem::take(&mut self.batch);
        self.appended += group.len();
        self.seq.append_group(group).await?;
        Ok(())
    }

    /// `event`, then the `integration.event.applied` that wrote its rows
    /// (its first parent is the event).
    fn push_applied(&mut self, event: AppendRequest, subject: &str) {
        self.batch.push(event);
        let mut applied = bench_request("integration.event.applied", subject, vec![], json!({}));
        applied.parent_refs = vec![self.batch.len() - 1];
        self.batch.push(applied);
    }
}

/// Compliance fixture, as the rules worker would leave it, so that every
/// row proves its cells (REPORTS.md §4.1): an HR event per person and a
/// matrix event per document, each followed by the
/// `integration.event.applied` that wrote its rows (the report cites the
/// event, the applied entry's first parent); a revision event per
/// document.
async fn compliance_sources(
    groups: &mut Groups<'_>,
    people_n: usize,
    docs_n: usize,
) -> anyhow::Result<()> {
    for p in 0..people_n {
        let name = match p % 4 {
            0 => format!("Zoë Müller {p}"),
            1 => format!("李雷 {p}"),
            2 => format!("Łukasz Nowak {p}"),
            _ => format!("Anna Sato {p}"),
        };
        let subject = format!("person:P{p:05}");
        let event = source_request(
            "hr.person.updated",
            "service:hr",
            &subject,
            json!({"data": {"person_id": format!("P{p:05}"), "name": name, "active": true,
                            "job_functions": [{"job_function": format!("JF{:02}", p % FUNCTIONS), "valid_from": "2026-01-01T00:00:00Z"}]}}),
        );
        groups.push_applied(event, &subject);
        groups.flush_when_full().await?;
    }
    for d in 0..docs_n {
        let subject = format!("qms:matrix/D{d:03}");
        let event = source_request(
            "qms.training_matrix.changed",
            "service:qms",
            &subject,
            json!({"data": {"document_id": format!("D{d:03}"), "job_functions": [format!("JF{:02}", d % FUNCTIONS)]}}),
        );
        groups.push_applied(event, &subject);
        groups.batch.push(source_request(
            "qms.document.revision_effective",
            "service:qms",
            &format!("qms:sop/D{d:03}@1"),
            json!({"data": {"document_id": format!("D{d:03}"), "version": "1",
                            "effective_at": format!("2026-06-01T{:02}:{:02}:00Z", d / 60, d % 60)}}),
        ));
    }
    groups.flush().await
}

/// An assignment entry per (revision, required person), and a completion
/// entry for 9 in 10 of them.
async fn compliance_assignments(
    groups: &mut Groups<'_>,
    people_n: usize,
    docs_n: usize,
) -> anyhow::Result<()> {
    for d in 0..docs_n {
        let effective = format!("2026-06-01T{:02}:{:02}:00.000000Z", d / 60, d % 60);
        for p in (d % FUNCTIONS..people_n).step_by(FUNCTIONS) {
            groups.batch.push(bench_request(
                "lms.assignment.created",
                &format!("lms:assignment/A-D{d:03}-P{p:05}"),
                vec![],
                json!({"data": {"assignment_id": format!("A-D{d:03}-P{p:05}"), "person_id": format!("P{p:05}"),
                                "document_id": format!("D{d:03}"), "version": "1", "origin": "sop",
                                "effective_at": effective, "required_from": effective,
                                "due_at": "2026-06-20T23:59:59.000000Z"}}),
            ));
            if p % 10 != 3 {
                groups.batch.push(source_request(
                    "lms.completion.recorded",
                    "service:lms",
                    &format!("person:P{p:05}"),
                    json!({"data": {"person_id": format!("P{p:05}"), "document_id": format!("D{d:03}"), "version": "1",
                                    "completed_at": format!("2026-06-{:02}T10:00:00Z", 2 + p % 25)}}),
                ));
            }
            groups.flush_when_full().await?;
        }
    }
    groups.flush().await
}

/// The rows the rules worker would have written, read back from the
/// entries (the applied entry of an event is the next seq), written by raw
/// SQL around the application on the instance's SQLite database `url`.
async fn derive_state(url: &str) -> anyhow::Result<()> {
    let data =
        |path: &str| format!("json_extract(CAST(canonical AS TEXT), '$.payload.data.{path}')");
    let fill: Vec<String> = vec![
        format!(
            "INSERT INTO people (person_id, name, active, source_time, known_seq) SELECT {}, {}, 1, '2026-01-01T00:00:00.000000Z', seq + 1 FROM entries WHERE kind = 'hr.person.updated'",
            data("person_id"),
            data("name")
        ),
        format!(
            "INSERT INTO person_functions (person_id, job_function, valid_from, known_seq, known_at) SELECT {}, {}, '2026-01-01T00:00:00.000000Z', seq + 1, recorded_at FROM entries WHERE kind = 'hr.person.updated'",
            data("person_id"),
            data("job_functions[0].job_function")
        ),
        format!(
            "INSERT INTO training_matrix (document_id, job_function, known_seq, known_at) SELECT {}, {}, seq + 1, recorded_at FROM entries WHERE kind = 'qms.training_matrix.changed'",
            data("document_id"),
            data("job_functions[0]")
        ),
        format!(
            "INSERT INTO document_versions (document_id, version, effective_at, known_seq, known_at, entry_hash) SELECT {}, '1', replace({}, 'Z', '.000000Z'), seq, recorded_at, hash FROM entries WHERE kind = 'qms.document.revision_effective'",
            data("document_id"),
            data("effective_at")
        ),
        format!(
            "INSERT INTO assignments (assignment_id, person_id, document_id, version, origin, verification_required, effective_at, due_at, required_from, created_seq, created_at, entry_hash, status) SELECT {}, {}, {}, '1', 'sop', 0, {}, {}, {}, seq, recorded_at, hash, 'open' FROM entries WHERE kind = 'lms.assignment.created' AND subject LIKE 'lms:assignment/A-D%'",
            data("assignment_id"),
            data("person_id"),
            data("document_id"),
            data("effective_at"),
            data("due_at"),
            data("required_from")
        ),
        format!(
            "INSERT INTO completions (seq, person_id, document_id, version, completed_at, outcome, entry_hash) SELECT seq, {}, {}, '1', replace({}, 'Z', '.000000Z'), 'passed', hash FROM entries WHERE kind = 'lms.completion.recorded' AND subject LIKE 'person:P%'",
            data("person_id"),
            data("document_id"),
            data("completed_at")
        ),
    ];
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await?;
    for sql in fill {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await?;
    }
    Ok(())
}

/// One report to generate: its type, scope, the name printed, its format.
type Case = (ReportType, Scope, &'static str, Format);

/// The lineage report, the compliance report, and the latter as JSONL.
fn cases() -> [Case; 3] {
    let month = || Scope {
        from: Some("2026-06-01".into()),
        to: Some("2026-07-01".into()),
        ..Scope::default()
    };
    [
        (
            ReportType::Lineage,
            Scope {
                subject: Some("qms:capa/BENCH-1".into()),
                ..Scope::default()
            },
            "lineage (1,000 entries)",
            Format::Pdf,
        ),
        (
            ReportType::Compliance,
            month(),
            "compliance (10,000 people x 200 revisions)",
            Format::Pdf,
        ),
        (
            ReportType::Compliance,
            month(),
            "the same as JSONL (no PDF)",
            Format::Jsonl,
        ),
    ]
}

/// Generates one report into `dir` and prints its time, size, peak memory
/// and phases; keeps a copy in `keep`; checks it as `verify-report` does.
async fn generate(
    reporter: &Reporter,
    by: &Requester,
    opened: &Instance,
    dir: &Path,
    (ty, scope, name, format): Case,
    keep: Option<&Path>,
) -> anyhow::Result<()> {
    let out = dir.join(format!("{}.{}", ty.as_str(), format.as_str()));
    reset_peak_rss();
    let before = peak_rss_mib();
    let t = Instant::now();
    let g = reporter.generate(ty, scope, format, by, &out).await?;
    let took = t.elapsed();
    let peak = peak_rss_mib();
    println!(
        "{name:<44} {:.2} s  {} rows, {} entries cited, {} pages, {:.1} MB; peak RSS {:.0} MiB (was {:.0} MiB before)",
        took.as_secs_f64(),
        g.rows,
        g.cited,
        g.pages,
        g.bytes as f64 / 1e6,
        peak,
        before
    );
    for (phase, secs) in &g.phases {
        println!("  {phase:<40} {secs:.2} s");
    }
    let t = Instant::now();
    if let Some(dir) = keep {
        // Kept for timing `trailmark verify-report` on its own.
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&out, dir.join(out.file_name().unwrap_or_default()))?;
        std::fs::write(
            dir.join("verifier-key"),
            format!("{}\n", opened.key.verifier().to_text()),
        )?;
    }
    let bytes = std::fs::read(&out)?;
    let checked = trailmark::report::verify::check_file(&bytes, &opened.key.verifier(), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "  verify-report    {:.2} s ({} entries, {} nodes)",
        t.elapsed().as_secs_f64(),
        checked.bundle.entries,
        checked.bundle.nodes
    );
    Ok(())
}
