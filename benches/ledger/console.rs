//! `console`: the QA console's audit-trail page (`GET /console/trail`) over
//! a big ledger: first page, a deep page and each filter, as a signed-in
//! qa_reviewer through the real server; each page checked (status, rows,
//! every row against its stored entry) and timed, and the same filter timed
//! through `Store::list` alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use sqlx::Connection as _;
use trailmark::instance::Instance;
use trailmark::ledger::{Actor, Seq, UserId};
use trailmark::sequencer::{AppendRequest, record_request};
use trailmark::store::{EntryFilter, Store};

use crate::common::{fill, fresh_pg_if, ms, percentile};
use crate::people::{create_people, own_password_of, ready};

/// Flags of `console`.
#[derive(clap::Args)]
pub struct ConsoleArgs {
    /// Fixture entries in the ledger.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub entries: u64,
    /// Timed requests per page (after 2 warm-ups).
    #[arg(long, value_name = "K", default_value_t = 30)]
    pub samples: usize,
    /// Keeps the ledger in DIR: reused and topped up to N by the next run
    /// (default: a temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A PostgreSQL URL: a fresh `trailmark_bench_console` database on its
    /// server (default: `TRAILMARK_BENCH_DATABASE_URL`, else SQLite).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// A word in the `comment` of one fixture entry in four.
const COMMON_WORD: &str = "refresher";
/// A word in the `comment` of one fixture entry in 10,000.
const RARE_WORD: &str = "forklift";
/// A word in no fixture entry: free-text search reads every entry.
const ABSENT_WORD: &str = "quetzalcoatl";
/// People (`person:E00000` ...) the fixture's records are about.
const PEOPLE: u64 = 20_000;
/// The console's rows per trail page (`console::PAGE_ROWS`).
const PAGE_ROWS: usize = 50;
/// The user who reads the trail.
const READER: &str = "qa-console";

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
    let person = format!("E{:05}", n % PEOPLE);
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
        limit: PAGE_ROWS as u32,
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
            "after" => f.after_seq = v.map(|s| s.parse::<u64>()).transpose()?.map(Seq::clamped),
            other => bail!("no trail parameter `{other}`"),
        }
    }
    if f.text.is_some() {
        f.before_seq = Some(Seq::clamped(f.after_seq.map_or(0, Seq::size) + window));
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
    store: &Store,
    params: &[(&'static str, String)],
    seqs: &[u64],
) -> anyhow::Result<()> {
    let seqs: Vec<Seq> = seqs.iter().copied().map(Seq::clamped).collect();
    let stored = store.canonical_of(&seqs).await?;
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
                "after" => seq.get() > want.parse::<u64>()?,
                other => bail!("no trail parameter `{other}`"),
            };
            anyhow::ensure!(ok, "entry {seq} on the page does not match {k}={want}");
        }
    }
    Ok(())
}

async fn recorded_at_of(store: &Store, seq: u64) -> anyhow::Result<String> {
    Ok(store
        .entry(Seq::clamped(seq))
        .await?
        .with_context(|| format!("entry {seq} exists"))?
        .recorded_at)
}

/// The seq of the first entry recorded at or after the time of entry `seq`
/// (`recorded_at` does not decrease along the chain).
async fn first_at_time_of(store: &Store, seq: u64) -> anyhow::Result<u64> {
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

/// The ledger `console` reads: opened, the fixture entries it holds, and
/// (entries, time) of what this run appended.
struct Ledger {
    opened: Instance,
    fixture: u64,
    built: Option<(u64, Duration)>,
}

/// What the pages must show, counted from the fixture's definition.
struct Expected {
    person: String,
    workflow: String,
    subject_n: usize,
    completion_n: usize,
    capa_n: usize,
    hr_n: usize,
    workflow_n: usize,
    /// Entries with each of [`WORDS`] among the first `window` seqs.
    word_n: [usize; 3],
    /// The seqs a free-text page scans (`Store::text_scan_rows`).
    window: u64,
    counting: Duration,
}

/// The words of the free-text pages.
const WORDS: [&str; 3] = [COMMON_WORD, RARE_WORD, ABSENT_WORD];

/// The audit-trail page over a ledger of N fixture entries: each page
/// checked and timed over HTTP, and its filter timed through
/// `Store::list` alone.
pub async fn run(args: &ConsoleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.samples >= 1, "--samples must be at least 1");
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let Ledger {
        opened,
        fixture,
        built,
    } = open_ledger(args, &dir).await?;
    let analyzed = analyze(&opened).await?;
    let expected = Expected::count(&opened, fixture).await?;
    let reader_is_new = add_reader(&opened).await?;
    let server = opened.start_server("127.0.0.1:0").await?;
    let base = server.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&http, &base, reader_is_new).await?;
    let size = opened.store.size().await?;
    let mut cases = filter_cases(&expected, size);
    cases.extend(time_cases(&opened.store, size).await?);
    cases.extend(text_cases(&expected));

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
        expected.counting.as_secs_f64()
    );
    println!(
        "method             GET /console/trail as a signed-in qa_reviewer, one client, keep-alive, {} samples after 2 warm-ups; then Store::list alone with the same filter",
        args.samples
    );
    println!(
        "{:<48} {:>4}  {:>8} {:>8} {:>8}  {:>14}  {:>9}",
        "page", "rows", "p50 ms", "p95 ms", "max ms", "Store::list p50", "< 200 ms"
    );
    let page = Page {
        http: &http,
        base: &base,
        cookie: &cookie,
        store: &opened.store,
        window: expected.window,
        samples: args.samples,
    };
    let mut misses = Vec::new();
    for case in &cases {
        if !page.measure(case).await? {
            misses.push(case.name.clone());
        }
    }
    server.stop().await;
    print_result(args, &opened, &cases, &misses);
    opened.store.close().await;
    Ok(())
}

/// The ledger in `dir`: made fresh, or reused and topped up to N fixture
/// entries.
async fn open_ledger(args: &ConsoleArgs, dir: &Path) -> anyhow::Result<Ledger> {
    let database = args
        .database_url
        .clone()
        .or_else(|| std::env::var("TRAILMARK_BENCH_DATABASE_URL").ok());
    let marker = dir.join("console-fixture");
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
    let done = if fresh {
        0
    } else {
        fixture_done(dir, &marker)?
    };
    let entries = args.entries;
    let mut built = None;
    if done < entries {
        std::fs::write(&marker, format!("filling {done}..{entries}\n"))?;
        let started = Instant::now();
        fill(&opened, done..entries, 4096, fixture_request).await?;
        built = Some((entries - done, started.elapsed()));
        std::fs::write(&marker, format!("entries {entries}\n"))?;
    }
    Ok(Ledger {
        opened,
        fixture: done.max(entries),
        built,
    })
}

/// The fixture entries an earlier run left in `dir`, from its `marker`
/// file (`entries N`).
fn fixture_done(dir: &Path, marker: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(marker).with_context(|| {
        format!(
            "{} holds a ledger that `console` did not build (no console-fixture file)",
            dir.display()
        )
    })?;
    Ok(text
        .trim()
        .strip_prefix("entries ")
        .with_context(|| {
            format!(
                "{}: `{}`: an earlier build was interrupted; remove the directory",
                marker.display(),
                text.trim()
            )
        })?
        .parse()?)
}

/// PostgreSQL plans with statistics; autovacuum gathers them in a normal
/// installation (the project's test server runs with autovacuum off). The
/// note for the `backend` line.
async fn analyze(opened: &Instance) -> anyhow::Result<&'static str> {
    if opened.store.backend_name() != "postgres" {
        return Ok("");
    }
    let url = opened.dir.database_url(&opened.config, None);
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
    Ok(" (ANALYZE run first, as autovacuum would)")
}

impl Expected {
    /// Enumerates the `fixture` entries of the ledger's fixture.
    async fn count(opened: &Instance, fixture: u64) -> anyhow::Result<Expected> {
        let started = Instant::now();
        let mut expected = Expected {
            person: format!("person:E{:05}", 12_345 % PEOPLE),
            workflow: format!("wf-{:06}", fixture / 2 / 8),
            subject_n: 0,
            completion_n: 0,
            capa_n: 0,
            hr_n: 0,
            workflow_n: 0,
            word_n: [0; 3],
            // A free-text page scans the first `window` seqs; the fixture
            // starts at the seq of its first entry (the set-up entries come
            // before it).
            window: opened.store.text_scan_rows(),
            counting: Duration::ZERO,
        };
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
            expected.add(fixture_entry(n), base.get() + n);
        }
        expected.counting = started.elapsed();
        Ok(expected)
    }

    /// Counts fixture entry `e`, stored at `seq`.
    fn add(&mut self, e: FixtureEntry, seq: u64) {
        self.subject_n += usize::from(e.subject == self.person);
        self.completion_n += usize::from(e.kind == "lms.completion.recorded");
        self.capa_n += usize::from(e.kind == "qms.capa.opened");
        self.hr_n += usize::from(e.actor == "service:hr");
        self.workflow_n += usize::from(e.correlation_id == self.workflow);
        let text = format!(
            "{} {} {} {} {}",
            e.kind,
            e.actor,
            e.subject,
            e.correlation_id,
            Value::Object(e.payload)
        )
        .to_lowercase();
        if seq < self.window {
            for (count, word) in self.word_n.iter_mut().zip(WORDS) {
                *count += usize::from(text.contains(word));
            }
        }
    }
}

/// The reader, a qa_reviewer, created (before the server starts) unless an
/// earlier run did; whether it is new.
async fn add_reader(opened: &Instance) -> anyhow::Result<bool> {
    let exists = opened.store.user(&UserId::parse(READER)?).await?.is_some();
    if !exists {
        create_people(opened, &[(READER, "Quinn Auditor", "qa_reviewer")]).await?;
    }
    Ok(!exists)
}

/// Logs the reader in through the console's form (a new reader first
/// replaces the one-time password); the session cookie (`tm_session=...`).
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    reader_is_new: bool,
) -> anyhow::Result<String> {
    if reader_is_new {
        ready(http, base, READER).await?;
    }
    let session = console_login(http, base, READER, &own_password_of(READER)).await?;
    Ok(format!("tm_session={session}"))
}

/// At most a page of `n` rows.
fn page_rows(n: usize) -> usize {
    n.min(PAGE_ROWS)
}

/// The first page, a deep page and a page for each field filter.
fn filter_cases(expected: &Expected, size: u64) -> Vec<TrailCase> {
    let deep = size.saturating_sub(1000);
    let s = |v: &str| v.to_owned();
    let case = |name: String, params: Vec<(&'static str, String)>, rows: usize| TrailCase {
        name,
        params,
        rows: page_rows(rows),
        first_seq: None,
    };
    let e = expected;
    vec![
        TrailCase {
            first_seq: Some(0),
            ..case(s("first page"), vec![], size as usize)
        },
        TrailCase {
            first_seq: Some(deep + 1),
            ..case(
                s("deep page (after = size - 1000)"),
                vec![("after", deep.to_string())],
                (size - 1 - deep) as usize,
            )
        },
        case(
            format!("subject {} ({} entries)", e.person, e.subject_n),
            vec![("subject", e.person.clone())],
            e.subject_n,
        ),
        case(
            format!("kind lms.completion.recorded ({})", e.completion_n),
            vec![("kind", s("lms.completion.recorded"))],
            e.completion_n,
        ),
        case(
            format!("kind qms.capa.opened ({})", e.capa_n),
            vec![("kind", s("qms.capa.opened"))],
            e.capa_n,
        ),
        case(
            format!("actor service:hr ({})", e.hr_n),
            vec![("actor", s("service:hr"))],
            e.hr_n,
        ),
        case(
            format!("correlation_id {} ({})", e.workflow, e.workflow_n),
            vec![("correlation_id", e.workflow.clone())],
            e.workflow_n,
        ),
    ]
}

/// Time windows over the middle 2% and the middle half of the ledger.
async fn time_cases(store: &Store, size: u64) -> anyhow::Result<Vec<TrailCase>> {
    let mut cases = Vec::new();
    for (label, from, to) in [
        ("2%", size / 2, size / 2 + size / 50),
        ("50%", size / 4, size * 3 / 4),
    ] {
        let from_at = recorded_at_of(store, from).await?;
        // A small ledger's window can fall inside one batch (one time):
        // widen it to the next batch.
        let mut to = to;
        let mut to_at = recorded_at_of(store, to).await?;
        while to_at == from_at && to + 1 < size {
            to += 1;
            to_at = recorded_at_of(store, to).await?;
        }
        anyhow::ensure!(
            from_at < to_at,
            "entries {from} to {to} were recorded at the same time"
        );
        let first = first_at_time_of(store, from).await?;
        let in_window = first_at_time_of(store, to).await? - first;
        cases.push(TrailCase {
            name: format!("time range, {label} of the ledger ({in_window})"),
            params: vec![("from", from_at), ("to", to_at)],
            rows: page_rows(in_window as usize),
            first_seq: Some(first),
        });
    }
    Ok(cases)
}

/// A free-text page for each of [`WORDS`].
fn text_cases(expected: &Expected) -> Vec<TrailCase> {
    WORDS
        .iter()
        .zip(expected.word_n)
        .map(|(word, count)| TrailCase {
            name: format!(
                "text `{word}` ({count} in the first {} seqs)",
                expected.window
            ),
            params: vec![("text", (*word).to_owned())],
            rows: page_rows(count),
            first_seq: None,
        })
        .collect()
}

/// How each page is requested, checked and timed.
struct Page<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    cookie: &'a str,
    store: &'a Store,
    window: u64,
    samples: usize,
}

impl Page<'_> {
    /// Requests the page of `case` 2 + samples times (the first checked in
    /// full), then times `Store::list` with its filter; prints its line.
    /// Whether its p95 is under 200 ms.
    async fn measure(&self, case: &TrailCase) -> anyhow::Result<bool> {
        let query = if case.params.is_empty() {
            String::new()
        } else {
            format!("?{}", trailmark::console::urlencode(&case.params))
        };
        let url = format!("{}/console/trail{query}", self.base);
        let mut times = Vec::with_capacity(self.samples);
        for i in 0..self.samples + 2 {
            let started = Instant::now();
            let response = self
                .http
                .get(&url)
                .header("cookie", self.cookie)
                .send()
                .await?;
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
                self.check(case, &seqs).await?;
            }
            if i >= 2 {
                times.push(took);
            }
        }
        let filter = filter_of(&case.params, self.window)?;
        let mut store_times = Vec::with_capacity(self.samples);
        for _ in 0..self.samples {
            let started = Instant::now();
            std::hint::black_box(self.store.list(&filter).await?);
            store_times.push(started.elapsed());
        }
        times.sort();
        store_times.sort();
        let p95 = percentile(&times, 0.95);
        let met = p95 < Duration::from_millis(200);
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
        Ok(met)
    }

    /// The page's rows: in seq order, from the expected first seq when the
    /// case knows it, each matching the filters, and the same as
    /// `Store::list` returns.
    async fn check(&self, case: &TrailCase, seqs: &[u64]) -> anyhow::Result<()> {
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
        check_page_content(self.store, &case.params, seqs).await?;
        let listed: Vec<u64> = self
            .store
            .list(&filter_of(&case.params, self.window)?)
            .await?
            .iter()
            .map(|e| e.seq.get())
            .collect();
        anyhow::ensure!(
            listed == seqs,
            "{}: the page differs from Store::list",
            case.name
        );
        Ok(())
    }
}

/// The pages under 200 ms, and the command line that repeats the run.
fn print_result(args: &ConsoleArgs, opened: &Instance, cases: &[TrailCase], misses: &[String]) {
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
        "reproduce          {}cargo bench --bench ledger -- console --entries {} --samples {}{}",
        if opened.store.backend_name() == "postgres" && args.database_url.is_none() {
            "TRAILMARK_BENCH_DATABASE_URL=postgres://... "
        } else {
            ""
        },
        args.entries,
        args.samples,
        args.dir
            .as_ref()
            .map(|d| format!(" --dir {}", d.display()))
            .unwrap_or_default()
    );
}
