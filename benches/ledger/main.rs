//! Trailmark's benchmarks: figures for docs/PERFORMANCE.md, each with its
//! baseline measured in the same run. One bench target (`ledger`), one
//! subcommand per benchmark; `--help` lists them, `VERB --help` their flags.
//!
//! ```text
//! cargo bench --bench ledger -- append   [--seconds S] [--clients C]
//! cargo bench --bench ledger -- build    --dir DIR --entries N [--batch B]
//! cargo bench --bench ledger -- verify   --dir DIR
//! cargo bench --bench ledger -- proof    --dir DIR [--samples K]
//! cargo bench --bench ledger -- sign     [--count N] [--database-url URL]
//! cargo bench --bench ledger -- verify-signatures [--count N]
//! cargo bench --bench ledger -- events   [--count N] [--clients C] [--people P] [--verify] [--database-url URL]
//! cargo bench --bench ledger -- fanout   [--people N] [--timeout S] [--database-url URL]
//! cargo bench --bench ledger -- latency  [--rate R] [--seconds S] [--functions F] [--database-url URL]
//! cargo bench --bench ledger -- reports  [--people N] [--documents D] [--keep DIR]
//! cargo bench --bench ledger -- console  [--entries N] [--samples K] [--dir DIR] [--database-url URL]
//! cargo bench --bench ledger -- --help   (or VERB --help)
//! ```
//!
//! `append` uses a fresh ledger in a temp dir on SQLite, or on PostgreSQL
//! when `TRAILMARK_BENCH_DATABASE_URL` names a database to create fresh
//! ledgers in (it is dropped and recreated). `build` makes a ledger of N
//! entries through the sequencer (no HTTP) for `verify` and `proof`.
//! `sign` times Part 11 signings over HTTP on a fresh ledger (SQLite, or a
//! fresh `trailmark_bench_sign` database next to `--database-url`).
//! `verify-signatures` times `verify` over a ledger of N signatures against
//! a ledger of the same size without any.
//! `events`, `fanout` and `latency` measure the QMS-LMS integration
//! (docs/INTEGRATION.md) on a fresh ledger with the real server: events
//! accepted and applied per second, one revision fanned out to N people and
//! delivered to a simulated LMS, and event-to-delivery latency at a steady
//! rate (SQLite, or a fresh `trailmark_bench_{mode}` database next to
//! `--database-url`).
//! `console` times the QA console's audit-trail page (first page, a deep
//! page, each filter, free text) as a signed-in qa_reviewer over a ledger of
//! N fixture entries (default 1,000,000) that it builds through the
//! sequencer, or reuses and tops up in `--dir DIR`; on PostgreSQL with
//! `--database-url` or `TRAILMARK_BENCH_DATABASE_URL` (a fresh
//! `trailmark_bench_console` database).

mod append;
mod common;
mod integration;
mod people;
mod reports;
mod signatures;
mod verify;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use serde_json::{Map, Value, json};
use sqlx::Connection as _;
use trailmark::instance::Instance;
use trailmark::ledger::Actor;
use trailmark::sequencer::{AppendRequest, record_request};
use trailmark::store::EntryFilter;

use common::{fill, fresh_pg_if, ms, percentile};
use people::{create_people, own_password_of, ready};

/// Flags of `console`.
#[derive(clap::Args)]
struct ConsoleArgs {
    /// Fixture entries in the ledger.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    entries: u64,
    /// Timed requests per page (after 2 warm-ups).
    #[arg(long, value_name = "K", default_value_t = 30)]
    samples: usize,
    /// Keeps the ledger in DIR: reused and topped up to N by the next run
    /// (default: a temp dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// A PostgreSQL URL: a fresh `trailmark_bench_console` database on its
    /// server (default: `TRAILMARK_BENCH_DATABASE_URL`, else SQLite).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

// ---------------------------------------------------------------------------
// The QMS-LMS integration: events in, rules, hand-overs out
// (docs/INTEGRATION.md). Every mode runs the real server (sequencer, HTTP
// API, rules worker, delivery workers) on a fresh ledger; `fanout` and
// `latency` deliver to a `sim::Receiver` over real HTTP.
// ---------------------------------------------------------------------------

/// Trailmark's benchmarks: figures for docs/PERFORMANCE.md, each with its
/// baseline measured in the same run.
#[derive(Parser)]
#[command(
    name = "ledger",
    bin_name = "cargo bench --bench ledger --",
    after_help = "`VERB --help` lists the flags of each; docs/PERFORMANCE.md has the figures and the commands that made them."
)]
struct Cli {
    #[command(subcommand)]
    verb: Option<Verb>,
}

#[derive(Subcommand)]
enum Verb {
    /// HTTP appends from C concurrent clients for S seconds, then plain
    /// INSERTs of the same rows in the same batches as the baseline.
    ///
    /// A fresh ledger in a temp dir on SQLite, or on PostgreSQL when
    /// TRAILMARK_BENCH_DATABASE_URL names a database: a fresh
    /// `trailmark_bench` database is made next to it (dropped and
    /// recreated).
    Append(append::AppendArgs),
    /// Builds (or tops up) a ledger of N entries through the sequencer, no
    /// HTTP, for `verify` and `proof`.
    Build(verify::BuildArgs),
    /// Verifies the ledger `build` made, and times reading alone, checking
    /// alone and plain SHA-256 over the same bytes.
    Verify(verify::VerifyArgs),
    /// Times inclusion proofs of random entries at the ledger's current
    /// size.
    Proof(verify::ProofArgs),
    /// Part 11 signings over HTTP on a fresh ledger: sequential, then 4
    /// concurrent signers, with one Argon2id as the baseline.
    Sign(signatures::SignArgs),
    /// `verify` over a ledger of N signatures against a ledger of the same
    /// size without any.
    VerifySignatures(signatures::VerifySignaturesArgs),
    /// Completion events accepted and applied per second, from C
    /// concurrent senders, through the real server.
    Events(integration::EventsArgs),
    /// One revision fanned out to N people and delivered to a simulated
    /// LMS.
    Fanout(integration::FanoutArgs),
    /// Event-to-delivery latency at a steady rate of revision events.
    Latency(integration::LatencyArgs),
    /// A lineage report and a compliance report (signed PDFs, and JSONL),
    /// generated and checked.
    Reports(reports::ReportsArgs),
    /// The QA console's audit-trail page over a big ledger: first page, a
    /// deep page, each filter, free text.
    Console(ConsoleArgs),
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` to every bench binary; it means
    // nothing here.
    let args = std::env::args_os().filter(|a| a != "--bench");
    let Some(verb) = Cli::parse_from(args).verb else {
        // `cargo bench` on its own runs every bench with no verb: show what
        // there is rather than fail.
        Cli::command().print_help()?;
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &verb {
            Verb::Append(args) => append::run(args).await,
            Verb::Build(args) => verify::build(args).await,
            Verb::Verify(args) => verify::verify(args).await,
            Verb::Proof(args) => verify::proof(args).await,
            Verb::Sign(args) => signatures::sign(args).await,
            Verb::VerifySignatures(args) => signatures::verify_signatures(args).await,
            Verb::Events(args) => integration::events(args).await,
            Verb::Fanout(args) => integration::fanout(args).await,
            Verb::Latency(args) => integration::latency(args).await,
            Verb::Reports(args) => reports::run(args).await,
            Verb::Console(args) => console(args).await,
        }
    })
}

// `console`: the QA console's audit-trail page over a big ledger.

/// A word in the `comment` of one fixture entry in four.
const CONSOLE_COMMON_WORD: &str = "refresher";
/// A word in the `comment` of one fixture entry in 10,000.
const CONSOLE_RARE_WORD: &str = "forklift";
/// A word in no fixture entry: free-text search reads every entry.
const CONSOLE_ABSENT_WORD: &str = "quetzalcoatl";
/// People (`person:E00000` ...) the fixture's records are about.
const CONSOLE_PEOPLE: u64 = 20_000;
/// The console's rows per trail page (`console::PAGE_ROWS`).
const CONSOLE_PAGE_ROWS: usize = 50;
/// The user who reads the trail.
const CONSOLE_READER: &str = "qa-console";

/// Entry n of the `console` fixture: seven kinds (one in 100,000 a
/// `qms.capa.opened`, one in 1,000 a `qms.deviation.opened`, the rest LMS
/// and HR records), 20,000 people as subjects, four actors, a correlation ID
/// shared by 8 consecutive entries, and a comment with a common or a rare
/// word.
struct FixtureEntry {
    kind: &'static str,
    actor: &'static str,
    subject: String,
    correlation_id: String,
    payload: Map<String, Value>,
}

fn fixture_entry(n: u64) -> FixtureEntry {
    let person = format!("E{:05}", n % CONSOLE_PEOPLE);
    let comment = if n % 10_000 == 4_321 {
        "forklift recertification after the incident"
    } else {
        [
            "annual GMP refresher",
            "initial training on the revised SOP",
            "read and understood",
            "classroom session with a practical assessment",
        ][(n / 7 % 4) as usize]
    };
    let (kind, subject, payload) = if n % 100_000 == 77_777 {
        let id = format!("CAPA-{:05}", n / 100_000);
        (
            "qms.capa.opened",
            format!("qms:capa/{id}"),
            json!({"capa_id": id, "title": "Training gaps found in the internal audit", "owner": "QA operations", "comment": comment}),
        )
    } else if n % 1_000 == 500 {
        let id = format!("DEV-{:06}", n / 1_000);
        (
            "qms.deviation.opened",
            format!("qms:deviation/{id}"),
            json!({"deviation_id": id, "site": "Basel", "classification": "minor", "people": [person], "comment": comment}),
        )
    } else {
        let kind = match n % 10 {
            0..=6 => "lms.completion.recorded",
            7 | 8 => "lms.assignment.created",
            _ => "hr.person.updated",
        };
        (
            kind,
            format!("person:{person}"),
            json!({"person_id": person, "document": format!("SOP-{:03}", n % 300), "version": n % 7 + 1, "score": 0.95,
                   "completed_at": "2026-11-25T10:15:00Z", "attempt": n % 3 + 1, "printed_name": "Zoë Łukasz", "comment": comment}),
        )
    };
    // Source facts carry their envelope and rules outcomes their actor, as
    // the writer rules of docs/FORMAT.md §1.3 ask (`verify` checks them).
    let payload = if matches!(
        kind,
        "lms.completion.recorded" | "hr.person.updated" | "qms.deviation.opened"
    ) {
        json!({"event": {"id": format!("evt-{n}"), "source": "https://source.bench.example", "type": format!("{kind}.v1"),
                         "time": "2026-11-25T10:15:00Z"}, "data": payload})
    } else {
        payload
    };
    let actor = match kind {
        "lms.assignment.created" => "system:rules",
        "hr.person.updated" => "service:hr",
        k if k.starts_with("qms.") => "user:qa.lead",
        _ if (n / 10).is_multiple_of(5) => "service:lms-import",
        _ => "service:lms",
    };
    FixtureEntry {
        kind,
        actor,
        subject,
        correlation_id: format!("wf-{:06}", n / 8),
        payload: payload.as_object().cloned().unwrap_or_default(),
    }
}

fn fixture_request(n: u64) -> anyhow::Result<AppendRequest> {
    let e = fixture_entry(n);
    let mut request = record_request(e.kind, Actor::parse(e.actor)?, &e.subject, e.payload, false)?;
    request.correlation_id = Some(e.correlation_id);
    Ok(request)
}

/// One page the `console` benchmark requests.
struct TrailCase {
    name: String,
    params: Vec<(&'static str, String)>,
    /// Rows the page must show.
    rows: usize,
    /// The seq of the first row, when the case knows it.
    first_seq: Option<u64>,
}

/// A filter with the trail page's query parameters, for `Store::list`.
/// The filter the console builds for `params`; a free-text page scans at
/// most `window` seqs from its cursor (`Store::text_scan_rows`).
fn filter_of(params: &[(&'static str, String)], window: u64) -> anyhow::Result<EntryFilter> {
    let mut f = EntryFilter {
        limit: CONSOLE_PAGE_ROWS as u32,
        ..EntryFilter::default()
    };
    for (k, v) in params {
        let v = Some(v.clone());
        match *k {
            "subject" => f.subject = v,
            "kind" => f.kind = v,
            "actor" => f.actor = v,
            "correlation_id" => f.correlation_id = v,
            "from" => f.from = v,
            "to" => f.to = v,
            "text" => f.text = v,
            "after" => f.after_seq = v.map(|s| s.parse()).transpose()?,
            other => bail!("no trail parameter `{other}`"),
        }
    }
    if f.text.is_some() {
        f.before_seq = Some(f.after_seq.map_or(0, |a| a + 1) + window);
    }
    Ok(f)
}

/// The text between the first `start` in `text` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The count in the trail page's caption ("N entries ...") and the seqs of
/// its table rows, in page order.
fn trail_rows(html: &str) -> anyhow::Result<(usize, Vec<u64>)> {
    let caption = between(html, "<caption>", " entries")
        .context("the page has a caption `N entries`")?
        .parse()?;
    let body = between(html, "<tbody>", "</tbody>").context("the page has a table body")?;
    let seqs = body
        .split("<tr>")
        .skip(1)
        .map(|row| {
            Ok(between(row, "href=\"/console/entries/", "\"")
                .context("each row links its entry")?
                .parse::<u64>()?)
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    anyhow::ensure!(
        seqs.len() == body.matches("<tr").count(),
        "a table row without an entry link"
    );
    Ok((caption, seqs))
}

/// Checks the rows of a page against the stored bytes of each entry: every
/// row satisfies every filter of `params`.
async fn check_page_content(
    store: &trailmark::store::Store,
    params: &[(&'static str, String)],
    seqs: &[u64],
) -> anyhow::Result<()> {
    let stored = store.canonical_of(seqs).await?;
    anyhow::ensure!(stored.len() == seqs.len(), "a listed entry is not stored");
    for (seq, bytes) in stored {
        let entry: Value = serde_json::from_slice(&bytes)?;
        let text = String::from_utf8(bytes)?.to_lowercase();
        let recorded_at = entry["recorded_at"].as_str().unwrap_or_default();
        for (k, want) in params {
            let ok = match *k {
                "subject" | "kind" | "actor" | "correlation_id" => {
                    entry[*k].as_str() == Some(want.as_str())
                }
                "from" => recorded_at >= want.as_str(),
                "to" => recorded_at < want.as_str(),
                "text" => text.contains(&want.to_lowercase()),
                "after" => seq > want.parse::<u64>()?,
                other => bail!("no trail parameter `{other}`"),
            };
            anyhow::ensure!(ok, "entry {seq} on the page does not match {k}={want}");
        }
    }
    Ok(())
}

async fn recorded_at_of(store: &trailmark::store::Store, seq: u64) -> anyhow::Result<String> {
    Ok(store
        .entry(seq)
        .await?
        .with_context(|| format!("entry {seq} exists"))?
        .recorded_at)
}

/// The seq of the first entry recorded at or after the time of entry `seq`
/// (`recorded_at` does not decrease along the chain).
async fn first_at_time_of(store: &trailmark::store::Store, seq: u64) -> anyhow::Result<u64> {
    let at = recorded_at_of(store, seq).await?;
    let mut first = seq;
    while first > 0 && recorded_at_of(store, first - 1).await? == at {
        first -= 1;
    }
    Ok(first)
}

/// Logs `user_id` in through the console's form; the session cookie.
async fn console_login(
    http: &reqwest::Client,
    base: &str,
    user_id: &str,
    password: &str,
) -> anyhow::Result<String> {
    fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.strip_prefix(&format!("{name}=")))
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    }
    let form = http.get(format!("{base}/console/login")).send().await?;
    anyhow::ensure!(
        form.status().as_u16() == 200,
        "GET /console/login: {}",
        form.status()
    );
    let cookie = set_cookie(&form, "tm_login_csrf").context("the form sets tm_login_csrf")?;
    let html = form.text().await?;
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"")
        .context("the form has a csrf field")?
        .to_owned();
    anyhow::ensure!(
        csrf == cookie,
        "the form's csrf field differs from its cookie"
    );
    let body = trailmark::console::urlencode(&[
        ("user_id", user_id),
        ("password", password),
        ("csrf", &csrf),
    ]);
    let response = http
        .post(format!("{base}/console/login"))
        .header("cookie", format!("tm_login_csrf={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let session = set_cookie(&response, "tm_session");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        status == 303 && location == "/console/trail",
        "POST /console/login: {status} to `{location}`: {}",
        response.text().await.unwrap_or_default()
    );
    session.context("the log-in sets tm_session")
}

/// `console`: the audit-trail page (`GET /console/trail`) over a ledger of N
/// fixture entries, first page, a deep page and each filter, as a signed-in
/// qa_reviewer through the real server; each page checked (status, rows,
/// every row against its stored entry) and timed, and the same filter timed
/// through `Store::list` alone.
async fn console(args: &ConsoleArgs) -> anyhow::Result<()> {
    let (entries, samples) = (args.entries, args.samples);
    anyhow::ensure!(samples >= 1, "--samples must be at least 1");
    let database = args
        .database_url
        .clone()
        .or_else(|| std::env::var("TRAILMARK_BENCH_DATABASE_URL").ok());
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let marker = dir.join("console-fixture");

    // The ledger: made fresh, or reused and topped up to N fixture entries.
    let (opened, fresh) = if dir.join("data/trailmark.toml").exists() {
        (Instance::open(&dir.join("data"), None).await?, false)
    } else {
        let url = fresh_pg_if(database.as_deref(), "trailmark_bench_console").await?;
        let (opened, _) = Instance::initialise(
            &dir.join("data"),
            Some("bench.trailmark.local/console".into()),
            url.as_deref(),
        )
        .await?;
        (opened, true)
    };
    let done: u64 = if fresh {
        0
    } else {
        let text = std::fs::read_to_string(&marker).with_context(|| {
            format!(
                "{} holds a ledger that `console` did not build (no console-fixture file)",
                dir.display()
            )
        })?;
        text.trim()
            .strip_prefix("entries ")
            .with_context(|| {
                format!(
                    "{}: `{}`: an earlier build was interrupted; remove the directory",
                    marker.display(),
                    text.trim()
                )
            })?
            .parse()?
    };
    let mut built = None;
    if done < entries {
        std::fs::write(&marker, format!("filling {done}..{entries}\n"))?;
        let started = Instant::now();
        fill(&opened, done..entries, 4096, fixture_request).await?;
        built = Some((entries - done, started.elapsed()));
        std::fs::write(&marker, format!("entries {entries}\n"))?;
    }
    let fixture = done.max(entries);
    // PostgreSQL plans with statistics; autovacuum gathers them in a normal
    // installation (the project's test server runs with autovacuum off).
    let analyzed = if opened.store.backend_name() == "postgres" {
        let url = opened.dir.database_url(&opened.config, None);
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
        " (ANALYZE run first, as autovacuum would)"
    } else {
        ""
    };

    // What each filter must find, from the fixture's definition.
    let started = Instant::now();
    let person = format!("person:E{:05}", 12_345 % CONSOLE_PEOPLE);
    let workflow = format!("wf-{:06}", fixture / 2 / 8);
    let words = [CONSOLE_COMMON_WORD, CONSOLE_RARE_WORD, CONSOLE_ABSENT_WORD];
    let (mut subject_n, mut completion_n, mut capa_n, mut hr_n, mut workflow_n) = (0, 0, 0, 0, 0);
    let mut word_n = [0usize; 3];
    // A free-text page scans the first `window` seqs; the fixture starts
    // at the seq of its first entry (the set-up entries come before it).
    let window = opened.store.text_scan_rows();
    let base = opened
        .store
        .list(&EntryFilter {
            correlation_id: Some(fixture_entry(0).correlation_id),
            limit: 1,
            ..EntryFilter::default()
        })
        .await?
        .first()
        .map(|e| e.seq)
        .context("the fixture's first entry")?;
    for n in 0..fixture {
        let e = fixture_entry(n);
        subject_n += usize::from(e.subject == person);
        completion_n += usize::from(e.kind == "lms.completion.recorded");
        capa_n += usize::from(e.kind == "qms.capa.opened");
        hr_n += usize::from(e.actor == "service:hr");
        workflow_n += usize::from(e.correlation_id == workflow);
        let text = format!(
            "{} {} {} {} {}",
            e.kind,
            e.actor,
            e.subject,
            e.correlation_id,
            Value::Object(e.payload)
        )
        .to_lowercase();
        if base + n < window {
            for (count, word) in word_n.iter_mut().zip(words) {
                *count += usize::from(text.contains(word));
            }
        }
    }
    let counting = started.elapsed();

    // The reader: a qa_reviewer who replaced the one-time password.
    let exists = opened.store.user(CONSOLE_READER).await?.is_some();
    if !exists {
        create_people(&opened, &[(CONSOLE_READER, "Quinn Auditor", "qa_reviewer")]).await?;
    }
    let server = opened.start_server("127.0.0.1:0").await?;
    let base = server.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    if !exists {
        ready(&http, &base, CONSOLE_READER).await?;
    }
    let session = console_login(
        &http,
        &base,
        CONSOLE_READER,
        &own_password_of(CONSOLE_READER),
    )
    .await?;
    let cookie = format!("tm_session={session}");
    let size = opened.store.size().await?;

    let page = |n: usize| n.min(CONSOLE_PAGE_ROWS);
    let deep = size.saturating_sub(1000);
    let s = |v: &str| v.to_owned();
    let mut cases = vec![
        TrailCase {
            name: s("first page"),
            params: vec![],
            rows: page(size as usize),
            first_seq: Some(0),
        },
        TrailCase {
            name: s("deep page (after = size - 1000)"),
            params: vec![("after", deep.to_string())],
            rows: page((size - 1 - deep) as usize),
            first_seq: Some(deep + 1),
        },
        TrailCase {
            name: format!("subject {person} ({subject_n} entries)"),
            params: vec![("subject", person.clone())],
            rows: page(subject_n),
            first_seq: None,
        },
        TrailCase {
            name: format!("kind lms.completion.recorded ({completion_n})"),
            params: vec![("kind", s("lms.completion.recorded"))],
            rows: page(completion_n),
            first_seq: None,
        },
        TrailCase {
            name: format!("kind qms.capa.opened ({capa_n})"),
            params: vec![("kind", s("qms.capa.opened"))],
            rows: page(capa_n),
            first_seq: None,
        },
        TrailCase {
            name: format!("actor service:hr ({hr_n})"),
            params: vec![("actor", s("service:hr"))],
            rows: page(hr_n),
            first_seq: None,
        },
        TrailCase {
            name: format!("correlation_id {workflow} ({workflow_n})"),
            params: vec![("correlation_id", workflow.clone())],
            rows: page(workflow_n),
            first_seq: None,
        },
    ];
    // Time windows over the middle 2% and the middle half of the ledger.
    for (label, from, to) in [
        ("2%", size / 2, size / 2 + size / 50),
        ("50%", size / 4, size * 3 / 4),
    ] {
        let from_at = recorded_at_of(&opened.store, from).await?;
        // A small ledger's window can fall inside one batch (one time):
        // widen it to the next batch.
        let mut to = to;
        let mut to_at = recorded_at_of(&opened.store, to).await?;
        while to_at == from_at && to + 1 < size {
            to += 1;
            to_at = recorded_at_of(&opened.store, to).await?;
        }
        anyhow::ensure!(
            from_at < to_at,
            "entries {from} to {to} were recorded at the same time"
        );
        let first = first_at_time_of(&opened.store, from).await?;
        let in_window = first_at_time_of(&opened.store, to).await? - first;
        cases.push(TrailCase {
            name: format!("time range, {label} of the ledger ({in_window})"),
            params: vec![("from", from_at), ("to", to_at)],
            rows: page(in_window as usize),
            first_seq: Some(first),
        });
    }
    for (word, count) in words.iter().zip(word_n) {
        cases.push(TrailCase {
            name: format!("text `{word}` ({count} in the first {window} seqs)"),
            params: vec![("text", (*word).to_owned())],
            rows: page(count),
            first_seq: None,
        });
    }

    println!(
        "backend            {}{analyzed}",
        opened.store.backend_name()
    );
    match built {
        Some((n, took)) => println!(
            "ledger             {size} entries, {fixture} of them the fixture ({n} appended now in {:.1} s, {:.0}/s through the sequencer)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        ),
        None => println!(
            "ledger             {size} entries, {fixture} of them the fixture (reused {})",
            dir.display()
        ),
    }
    println!(
        "expected rows      from the fixture's definition ({fixture} entries enumerated in {:.1} s); every page also checked row by row against the stored entries",
        counting.as_secs_f64()
    );
    println!(
        "method             GET /console/trail as a signed-in qa_reviewer, one client, keep-alive, {samples} samples after 2 warm-ups; then Store::list alone with the same filter"
    );
    println!(
        "{:<48} {:>4}  {:>8} {:>8} {:>8}  {:>14}  {:>9}",
        "page", "rows", "p50 ms", "p95 ms", "max ms", "Store::list p50", "< 200 ms"
    );
    let mut misses = Vec::new();
    for case in &cases {
        let query = if case.params.is_empty() {
            String::new()
        } else {
            format!("?{}", trailmark::console::urlencode(&case.params))
        };
        let url = format!("{base}/console/trail{query}");
        let mut times = Vec::with_capacity(samples);
        for i in 0..samples + 2 {
            let started = Instant::now();
            let response = http.get(&url).header("cookie", &cookie).send().await?;
            let status = response.status().as_u16();
            let html = response.text().await?;
            let took = started.elapsed();
            anyhow::ensure!(status == 200, "{}: {status} {}", case.name, html);
            let (caption, seqs) = trail_rows(&html)?;
            anyhow::ensure!(
                caption == seqs.len() && seqs.len() == case.rows,
                "{}: {} rows (caption {caption}), expected {}",
                case.name,
                seqs.len(),
                case.rows
            );
            if i == 0 {
                anyhow::ensure!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "{}: rows not in seq order",
                    case.name
                );
                if let Some(first) = case.first_seq {
                    anyhow::ensure!(
                        seqs.first() == Some(&first) && seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "{}: the page starts at {:?}, expected {first} and consecutive seqs",
                        case.name,
                        seqs.first()
                    );
                }
                check_page_content(&opened.store, &case.params, &seqs).await?;
                let listed: Vec<u64> = opened
                    .store
                    .list(&filter_of(&case.params, window)?)
                    .await?
                    .iter()
                    .map(|e| e.seq)
                    .collect();
                anyhow::ensure!(
                    listed == seqs,
                    "{}: the page differs from Store::list",
                    case.name
                );
            }
            if i >= 2 {
                times.push(took);
            }
        }
        let filter = filter_of(&case.params, window)?;
        let mut store_times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            std::hint::black_box(opened.store.list(&filter).await?);
            store_times.push(started.elapsed());
        }
        times.sort();
        store_times.sort();
        let p95 = percentile(&times, 0.95);
        let met = p95 < Duration::from_millis(200);
        if !met {
            misses.push(case.name.clone());
        }
        println!(
            "{:<48} {:>4}  {:>8.1} {:>8.1} {:>8.1}  {:>14.1}  {:>9}",
            case.name,
            case.rows,
            ms(percentile(&times, 0.5)),
            ms(p95),
            ms(*times.last().expect("samples")),
            ms(percentile(&store_times, 0.5)),
            if met { "met" } else { "MISSES" }
        );
    }
    server.stop().await;
    println!(
        "result             {} of {} pages under 200 ms at p95{}",
        cases.len() - misses.len(),
        cases.len(),
        if misses.is_empty() {
            String::new()
        } else {
            format!("; misses: {}", misses.join("; "))
        }
    );
    println!(
        "reproduce          {}cargo bench --bench ledger -- console --entries {entries} --samples {samples}{}",
        if opened.store.backend_name() == "postgres" && args.database_url.is_none() {
            "TRAILMARK_BENCH_DATABASE_URL=postgres://... "
        } else {
            ""
        },
        args.dir
            .as_ref()
            .map(|d| format!(" --dir {}", d.display()))
            .unwrap_or_default()
    );
    opened.store.close().await;
    Ok(())
}
