//! `events`, `fanout` and `latency`: the QMS-LMS integration, events in,
//! rules, hand-overs out (docs/INTEGRATION.md). Every mode runs the real
//! server (sequencer, HTTP API, rules worker, delivery workers) on a fresh
//! ledger; `fanout` and `latency` deliver to a `sim::Receiver` over real
//! HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use serde_json::{Value, json};
use trailmark::audit::{self, VerifyOptions};
use trailmark::instance::Instance;
use trailmark::integration::webhook::Secret;
use trailmark::sim::{Received, Receiver};

use crate::common::{fresh_pg_if, latency_line, ms, percentile};

/// Flags of `events`.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Completion events sent.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub count: u64,
    /// Concurrent senders, one event a request.
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub clients: u64,
    /// People the completions are for.
    #[arg(long, value_name = "P", default_value_t = 2_000)]
    pub people: u64,
    /// Then time `verify` (with its replay) on the ledger it made.
    #[arg(long)]
    pub verify: bool,
    /// A PostgreSQL URL: a fresh `trailmark_bench_events` database on its
    /// server (default: SQLite in a temp dir).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `fanout`.
#[derive(clap::Args)]
pub struct FanoutArgs {
    /// People in the revision's job function (one message each).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub people: u64,
    /// Seconds to wait for each milestone.
    #[arg(long, value_name = "S", default_value_t = 110)]
    pub timeout: u64,
    /// A PostgreSQL URL: a fresh `trailmark_bench_fanout` database on its
    /// server (default: SQLite in a temp dir).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `latency`.
#[derive(clap::Args)]
pub struct LatencyArgs {
    /// Revision events sent a second.
    #[arg(long, value_name = "R", default_value_t = 500)]
    pub rate: u64,
    /// Seconds of sending.
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub seconds: u64,
    /// Job functions, one person in each.
    #[arg(long, value_name = "F", default_value_t = 100)]
    pub functions: u64,
    /// A PostgreSQL URL: a fresh `trailmark_bench_latency` database on its
    /// server (default: SQLite in a temp dir).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// The CloudEvents `source` of every benchmark event.
const EVENT_SOURCE: &str = "bench://trailmark";

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A structured-mode CloudEvent; `correlation` becomes the `correlationid`
/// extension (the correlation ID of everything the event causes).
fn cloud_event(id: &str, event_type: &str, data: Value, correlation: Option<&str>) -> Value {
    let mut event = json!({"specversion": "1.0", "id": id, "source": EVENT_SOURCE,
                           "type": event_type, "time": now_rfc3339(), "data": data});
    if let Some(c) = correlation {
        event["correlationid"] = c.into();
    }
    event
}

/// POSTs one event (an object) or a batch (an array) to `/v1/events` and
/// requires `202`.
async fn send_events(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    events: &Value,
) -> anyhow::Result<()> {
    let content_type = if events.is_array() {
        "application/cloudevents-batch+json"
    } else {
        "application/cloudevents+json"
    };
    let response = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(serde_json::to_vec(events)?)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.bytes().await?;
    anyhow::ensure!(
        status == 202,
        "POST /v1/events: {status} {}",
        String::from_utf8_lossy(&text)
    );
    Ok(())
}

/// A fresh ledger with the integration (SQLite in a temp dir, or a fresh
/// PostgreSQL database next to `--database-url`), the server started, and
/// an `lms` target pointing at `lms` when given.
struct IntegrationBench {
    _tmp: tempfile::TempDir,
    opened: Instance,
    token: String,
    server: trailmark::instance::Server,
    http: reqwest::Client,
}

impl IntegrationBench {
    async fn start(
        database_url: Option<&str>,
        name: &str,
        lms: Option<(&Receiver, &Secret)>,
    ) -> anyhow::Result<IntegrationBench> {
        let tmp = tempfile::tempdir()?;
        let url = fresh_pg_if(database_url, &format!("trailmark_bench_{name}")).await?;
        let (mut opened, token) = Instance::initialise(
            &tmp.path().join("data"),
            Some(format!("bench.trailmark.local/{name}")),
            url.as_deref(),
        )
        .await?;
        if let Some((receiver, secret)) = lms {
            let file = "lms-webhook-secret";
            let path = opened.dir.path().join(file);
            std::fs::write(&path, secret.to_text())?;
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            opened.config.integration.targets.insert(
                "lms".into(),
                trailmark::config::TargetConfig {
                    url: receiver.url(),
                    secret_file: file.into(),
                    ..Default::default()
                },
            );
        }
        let server = opened.start_server("127.0.0.1:0").await?;
        Ok(IntegrationBench {
            _tmp: tmp,
            opened,
            token,
            server,
            http: reqwest::Client::new(),
        })
    }

    fn base(&self) -> String {
        self.server.url()
    }

    async fn send(&self, events: &Value) -> anyhow::Result<()> {
        send_events(&self.http, &self.base(), &self.token, events).await
    }

    /// Sends `events` in batches of 500: 1,000 `hr.person.changed` events
    /// (about 300 bytes each) exceed the default `max_body_bytes` (256 KiB).
    async fn send_batched(&self, events: Vec<Value>) -> anyhow::Result<()> {
        for chunk in events.chunks(500) {
            self.send(&Value::Array(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// A count by raw SQL around the application, on the instance's
    /// database (a connection per call: not for hot polling loops).
    async fn count(&self, sql: &'static str) -> anyhow::Result<i64> {
        use sqlx::Connection as _;
        let url = self.opened.dir.database_url(&self.opened.config, None);
        Ok(if url.starts_with("postgres") {
            sqlx::query_scalar(sql)
                .fetch_one(&mut sqlx::PgConnection::connect(&url).await?)
                .await?
        } else {
            sqlx::query_scalar(sql)
                .fetch_one(&mut sqlx::SqliteConnection::connect(&url).await?)
                .await?
        })
    }

    async fn pending(&self) -> anyhow::Result<i64> {
        let rows = self.opened.store.inbox_status_counts().await?;
        Ok(rows
            .iter()
            .find(|(status, _)| status == "pending")
            .map_or(0, |(_, n)| *n))
    }

    /// Waits (polling every 5 ms) until no inbox row is pending; the time
    /// it took, or an error after `timeout`.
    async fn drained(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if self.pending().await? == 0 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} inbox rows still pending after {:.1} s",
                    self.pending().await?,
                    timeout.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `inbox` rows by status, e.g. `applied 20005, parked 0`.
    async fn inbox_line(&self) -> anyhow::Result<String> {
        let rows = self.opened.store.inbox_status_counts().await?;
        Ok(rows
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", "))
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await?
            .text()
            .await?)
    }

    async fn stop(self) {
        self.server.stop().await;
        self.opened.store.close().await;
    }
}

/// Master data for SOP training: category `SOP` (30 days), each document's
/// job functions, and each person (active, in one job function since
/// 2020), people in batches of 1,000; then waits until all of it is
/// applied. The time it took.
async fn master_data(
    bench: &IntegrationBench,
    documents: &[(String, Vec<String>)],
    people: &[(String, String)],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut events = vec![cloud_event(
        "setup-category-SOP",
        "qms.training_category.changed.v1",
        json!({"category": "SOP", "completion_window_days": 30}),
        None,
    )];
    events.extend(documents.iter().map(|(document, functions)| {
        cloud_event(
            &format!("setup-matrix-{document}"),
            "qms.training_matrix.changed.v1",
            json!({"document_id": document, "job_functions": functions}),
            None,
        )
    }));
    events.extend(people.iter().map(|(person, function)| {
        cloud_event(
            &format!("setup-person-{person}"),
            "hr.person.changed.v1",
            json!({"person_id": person, "name": format!("Person {person}"), "active": true,
                   "job_functions": [{"job_function": function, "valid_from": "2020-01-01T00:00:00Z"}]}),
            None,
        )
    }));
    bench.send_batched(events).await?;
    bench.drained(Duration::from_secs(110)).await?;
    Ok(started.elapsed())
}

fn revision_event(id: &str, document: &str, version: &str, correlation: Option<&str>) -> Value {
    let effective_at = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    cloud_event(
        id,
        "qms.document.revision_effective.v2",
        json!({"document_id": document, "version": version, "effective_at": effective_at, "category": "SOP"}),
        correlation,
    )
}

/// `trailmark_delivery_seconds{target="lms"}` from a metrics text: count,
/// mean, and the bucket upper bounds that hold p50 and p99.
fn delivery_histogram(text: &str, target: &str) -> Option<String> {
    let label = format!("target=\"{target}\"");
    let value = |line: &str| -> Option<f64> { line.rsplit(' ').next()?.parse().ok() };
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (None, None);
    for line in text.lines().filter(|l| l.contains(&label)) {
        if line.starts_with("trailmark_delivery_seconds_bucket") {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((bound, value(line)?));
        } else if line.starts_with("trailmark_delivery_seconds_sum") {
            sum = value(line);
        } else if line.starts_with("trailmark_delivery_seconds_count") {
            count = value(line);
        }
    }
    let (sum, count) = (sum?, count?);
    if count == 0.0 {
        return None;
    }
    let bucket_of = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map_or("?".to_owned(), |(b, _)| {
                if b.is_infinite() {
                    "+Inf".to_owned()
                } else {
                    format!("<= {:.0} ms", b * 1e3)
                }
            })
    };
    Some(format!(
        "{count:.0} deliveries, mean {:.1} ms, p50 {}, p99 {} (histogram buckets)",
        sum / count * 1e3,
        bucket_of(0.5),
        bucket_of(0.99)
    ))
}

/// The receiver's counters, as `fanout` and `latency` print them.
fn print_receiver(receiver: &Receiver) {
    let stats = receiver.stats();
    println!(
        "receiver           {} requests, {} accepted, {} duplicates, {} bad signatures, {} faults",
        stats.requests, stats.accepted, stats.duplicates, stats.bad_signatures, stats.faults
    );
}

/// `events`: C concurrent senders POST `--count` completions, one event a
/// request, for people and a document set up first (so every completion is
/// applied, none parked).
pub async fn events(args: &EventsArgs) -> anyhow::Result<()> {
    let (count, clients) = (args.count, args.clients);
    let bench = IntegrationBench::start(args.database_url.as_deref(), "events", None).await?;
    events_setup(&bench, args.people).await?;
    let started = Instant::now();
    let mut latencies = send_completions(&bench, count, clients, args.people).await?;
    let accepted = started.elapsed();
    let pending_at_last_ack = bench.pending().await?;
    bench.drained(Duration::from_secs(110)).await?;
    let applied = started.elapsed();
    let completed = bench
        .count("SELECT COUNT(*) FROM inbox WHERE kind = 'lms.completion.recorded' AND status = 'applied'")
        .await?;
    println!("clients            {clients}, one event a request (structured mode)");
    println!(
        "accepted           {count} events in {:.2} s: {:.0} events/s (HTTP 202, event entry + inbox row committed)",
        accepted.as_secs_f64(),
        count as f64 / accepted.as_secs_f64()
    );
    println!("202 latency        {}", latency_line(&mut latencies));
    println!(
        "end to end         {count} events in {:.2} s: {:.0} events/s (until no inbox row is pending; {pending_at_last_ack} were pending at the last 202)",
        applied.as_secs_f64(),
        count as f64 / applied.as_secs_f64()
    );
    println!(
        "rules alone        {:.0} events/s after the last 202 ({pending_at_last_ack} rows in {:.2} s)",
        pending_at_last_ack as f64 / (applied - accepted).as_secs_f64().max(1e-9),
        (applied - accepted).as_secs_f64()
    );
    println!(
        "completions        {completed} applied; inbox: {}",
        bench.inbox_line().await?
    );
    println!(
        "ledger             {} entries",
        bench.opened.store.size().await?
    );
    if args.verify {
        verify_with_replay(&bench).await?;
    }
    bench.stop().await;
    Ok(())
}

/// `people_n` people in job function `OPS`, and one revision of `SOP-EV`
/// that they must train on.
async fn events_setup(bench: &IntegrationBench, people_n: u64) -> anyhow::Result<()> {
    let people: Vec<(String, String)> = (0..people_n)
        .map(|p| (format!("E{p:05}"), "OPS".to_owned()))
        .collect();
    let setup = master_data(bench, &[("SOP-EV".into(), vec!["OPS".into()])], &people).await?;
    let revision_started = Instant::now();
    bench
        .send(&revision_event("setup-rev-SOP-EV-1", "SOP-EV", "1", None))
        .await?;
    bench.drained(Duration::from_secs(110)).await?;
    let revision_time = revision_started.elapsed();
    let assignments = bench.count("SELECT COUNT(*) FROM assignments").await?;
    println!("backend            {}", bench.opened.store.backend_name());
    println!(
        "setup              {people_n} people + matrix + category applied in {:.2} s; revision -> {assignments} assignments in {:.2} s (no delivery target: outbox rows stay pending)",
        setup.as_secs_f64(),
        revision_time.as_secs_f64()
    );
    Ok(())
}

/// `clients` senders POST `count` completions between them; the latency
/// of each 202.
async fn send_completions(
    bench: &IntegrationBench,
    count: u64,
    clients: u64,
    people_n: u64,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, next) = (bench.http.clone(), next.clone());
        let url = format!("{}/v1/events", bench.base());
        let auth = format!("Bearer {}", bench.token);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let event = cloud_event(
                    &format!("completion-{n:08}"),
                    "lms.completion.recorded.v1",
                    json!({"person_id": format!("E{:05}", n % people_n), "document_id": "SOP-EV", "version": "1",
                           "completed_at": now_rfc3339(), "outcome": "completed"}),
                    None,
                );
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/cloudevents+json")
                    .body(serde_json::to_vec(&event)?)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let text = response.bytes().await?;
                anyhow::ensure!(
                    status == 202,
                    "completion {n}: {status} {}",
                    String::from_utf8_lossy(&text)
                );
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    Ok(latencies)
}

/// The replay on a ledger of integration entries, where most kinds are
/// projected (docs/STATE.md), unlike `verify --dir` over records.
async fn verify_with_replay(bench: &IntegrationBench) -> anyhow::Result<()> {
    let report = audit::verify_store(
        &bench.opened.store,
        &bench.opened.key.verifier(),
        &VerifyOptions {
            check_canonical: true,
            external_checkpoint: None,
        },
        |_| {},
    )
    .await?;
    println!(
        "verify with replay {} entries, {} state rows in {:.2} s: {:.0} entries/s",
        report.entries,
        report.state_rows,
        report.seconds,
        report.rate()
    );
    Ok(())
}

/// When each stage of a fan-out finished, counted from the revision's 202
/// (`None`: not within the timeout).
struct Milestones {
    assignments: Option<Duration>,
    applied: Option<Duration>,
    first: Option<Duration>,
    delivered: Option<Duration>,
}

/// `fanout`: one revision effective for N people in its job function; the
/// `lms` target is a `sim::Receiver`.
pub async fn fanout(args: &FanoutArgs) -> anyhow::Result<()> {
    let people_n = args.people;
    let timeout = Duration::from_secs(args.timeout);
    let secret = Secret::generate();
    let receiver = Receiver::start("lms", secret.clone()).await?;
    let bench = IntegrationBench::start(
        args.database_url.as_deref(),
        "fanout",
        Some((&receiver, &secret)),
    )
    .await?;
    let people: Vec<(String, String)> = (0..people_n)
        .map(|p| (format!("F{p:05}"), "FAN".to_owned()))
        .collect();
    let setup = master_data(&bench, &[("SOP-FAN".into(), vec!["FAN".into()])], &people).await?;
    println!("backend            {}", bench.opened.store.backend_name());
    println!(
        "setup              {people_n} people + matrix + category applied in {:.2} s",
        setup.as_secs_f64()
    );
    anyhow::ensure!(
        receiver.stats().accepted == 0,
        "nothing is delivered before the revision"
    );

    let sent = Instant::now();
    bench
        .send(&revision_event("fan-rev-1", "SOP-FAN", "1", None))
        .await?;
    let acked = Instant::now();
    let seen = watch_fanout(&bench, &receiver, people_n, timeout, acked).await?;
    print_fanout(&seen, people_n, timeout, acked - sent, &receiver);
    let outbox = bench.opened.store.outbox_status_counts().await?;
    println!("outbox             {outbox:?}");
    if let Some(h) = delivery_histogram(&bench.metrics().await?, "lms") {
        println!("delivery_seconds   {h}");
    }
    println!("inbox              {}", bench.inbox_line().await?);
    bench.stop().await;
    receiver.stop().await;
    Ok(())
}

/// Watches the assignments, the inbox and the receiver at once until each
/// is done or `timeout` passed.
async fn watch_fanout(
    bench: &IntegrationBench,
    receiver: &Receiver,
    people_n: u64,
    timeout: Duration,
    acked: Instant,
) -> anyhow::Result<Milestones> {
    let n = people_n as usize;
    let assignments_done = async {
        loop {
            let c = bench
                .count("SELECT COUNT(*) FROM assignments WHERE document_id = 'SOP-FAN'")
                .await?;
            if c as u64 >= people_n {
                return anyhow::Ok(Some(acked.elapsed()));
            }
            if acked.elapsed() > timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let applied = async { bench.drained(timeout).await.map(|_| acked.elapsed()) };
    let first = async { receiver.wait_for(1, timeout).await.then(|| acked.elapsed()) };
    let delivered = async { receiver.wait_for(n, timeout).await.then(|| acked.elapsed()) };
    let (assignments, applied, first, delivered) =
        tokio::join!(assignments_done, applied, first, delivered);
    Ok(Milestones {
        assignments: assignments?,
        applied: applied.ok(),
        first,
        delivered,
    })
}

/// The milestones of a fan-out to `people_n` people.
fn print_fanout(
    seen: &Milestones,
    people_n: u64,
    timeout: Duration,
    ack: Duration,
    receiver: &Receiver,
) {
    let n = people_n as usize;
    let show = |d: Option<Duration>| {
        d.map_or(format!("not within {:.0} s", timeout.as_secs_f64()), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    println!("revision 202       {:.1} ms", ms(ack));
    println!(
        "assignments        {people_n} rows after {} from the 202",
        show(seen.assignments)
    );
    println!(
        "inbox drained      {} from the 202 (assignment entries, state and outbox rows committed)",
        show(seen.applied)
    );
    println!("first message      {} from the 202", show(seen.first));
    println!(
        "all delivered      {n} unique messages at the receiver after {} from the 202{}",
        show(seen.delivered),
        seen.delivered.map_or(String::new(), |d| format!(
            ": {:.0} messages/s end to end",
            n as f64 / d.as_secs_f64()
        ))
    );
    print_receiver(receiver);
    if let (Some(a), Some(d)) = (seen.assignments, seen.delivered) {
        println!(
            "delivery after     {:.2} s between the last assignment row and the last message",
            (d.saturating_sub(a)).as_secs_f64()
        );
    }
}

/// What `latency` sent: each event's send time by correlation ID, the
/// latency of each 202, the worst lag behind schedule, and how long
/// sending took.
struct Sent {
    at: HashMap<String, SystemTime>,
    acks: Vec<Duration>,
    worst_lag: Duration,
    sending: Duration,
}

/// `latency`: a steady `--rate` revision-effective events a second for
/// `--seconds`, each for its own document mapped to a job function with
/// exactly one person, so each event yields one `lms` message; latency is
/// the receiver's arrival time minus the event's send time (matched by the
/// event's `correlationid`).
pub async fn latency(args: &LatencyArgs) -> anyhow::Result<()> {
    let (rate, functions) = (args.rate, args.functions);
    let total = rate * args.seconds;
    let secret = Secret::generate();
    let receiver = Receiver::start("lms", secret.clone()).await?;
    let bench = IntegrationBench::start(
        args.database_url.as_deref(),
        "latency",
        Some((&receiver, &secret)),
    )
    .await?;
    let people: Vec<(String, String)> = (0..functions)
        .map(|f| (format!("L{f:03}"), format!("FN-L{f:03}")))
        .collect();
    let documents: Vec<(String, Vec<String>)> = (0..total)
        .map(|i| {
            (
                format!("SOP-L{i:06}"),
                vec![format!("FN-L{:03}", i % functions)],
            )
        })
        .collect();
    let setup = master_data(&bench, &documents, &people).await?;
    println!("backend            {}", bench.opened.store.backend_name());
    println!(
        "setup              {total} documents in the matrix, {functions} people (one per job function) applied in {:.2} s",
        setup.as_secs_f64()
    );

    let started = Instant::now();
    let mut sent = send_at_rate(&bench, total, rate, started).await?;
    let all = receiver
        .wait_for(total as usize, Duration::from_secs(90))
        .await;
    let waited = started.elapsed();
    print_latency(&receiver, &mut sent, total, rate, (!all).then_some(waited));
    print_receiver(&receiver);
    if let Some(h) = delivery_histogram(&bench.metrics().await?, "lms") {
        println!("delivery_seconds   {h} (server side: hand-over entry -> 2xx)");
    }
    println!("inbox              {}", bench.inbox_line().await?);
    bench.stop().await;
    receiver.stop().await;
    Ok(())
}

/// Sends `total` revision events, event i due `i / rate` seconds after
/// `started`, each in its own task.
async fn send_at_rate(
    bench: &IntegrationBench,
    total: u64,
    rate: u64,
    started: Instant,
) -> anyhow::Result<Sent> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let (http, base, token) = (bench.http.clone(), bench.base(), bench.token.clone());
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tasks.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let correlation = format!("lat-{i:06}");
            let event = revision_event(
                &format!("lat-rev-{i:06}"),
                &format!("SOP-L{i:06}"),
                "1",
                Some(&correlation),
            );
            let lag = due.elapsed();
            let sent_at = SystemTime::now();
            let t = Instant::now();
            send_events(&http, &base, &token, &event).await?;
            anyhow::Ok((correlation, sent_at, t.elapsed(), lag))
        });
    }
    let mut sent = Sent {
        at: HashMap::new(),
        acks: Vec::new(),
        worst_lag: Duration::ZERO,
        sending: Duration::ZERO,
    };
    while let Some(done) = tasks.join_next().await {
        let (correlation, sent_at, ack, lag) = done??;
        sent.at.insert(correlation, sent_at);
        sent.acks.push(ack);
        sent.worst_lag = sent.worst_lag.max(lag);
    }
    sent.sending = started.elapsed();
    Ok(sent)
}

/// Sending, the 202s, and the event-to-receiver latencies (`gave_up`: the
/// time after which the receiver stopped waiting, when not all arrived).
fn print_latency(
    receiver: &Receiver,
    sent: &mut Sent,
    total: u64,
    rate: u64,
    gave_up: Option<Duration>,
) {
    let messages = receiver.messages();
    let mut latencies = Vec::new();
    let mut unmatched = 0u64;
    for m in &messages {
        match m.correlation_id.as_ref().and_then(|c| sent.at.get(c)) {
            Some(at) => latencies.push(m.received_at.duration_since(*at).unwrap_or_default()),
            None => unmatched += 1,
        }
    }
    println!(
        "sent               {total} events at {rate}/s target in {:.2} s ({:.0}/s achieved; worst start lag {:.1} ms)",
        sent.sending.as_secs_f64(),
        total as f64 / sent.sending.as_secs_f64(),
        ms(sent.worst_lag)
    );
    println!("202 latency        {}", latency_line(&mut sent.acks));
    println!(
        "delivered          {} of {total} messages{} ({} not matched to an event)",
        messages.len(),
        gave_up.map_or(String::new(), |waited| format!(
            " (gave up {:.1} s after the start)",
            waited.as_secs_f64()
        )),
        unmatched
    );
    if !latencies.is_empty() {
        println!("event -> receiver  {}", latency_line(&mut latencies));
        println!(
            "p99 by send second {} (ms)",
            p99_by_second(&messages, &sent.at)
        );
    }
}

/// Per second of sending: does latency grow over the run? `second:p99`
/// pairs.
fn p99_by_second(messages: &[Received], sent: &HashMap<String, SystemTime>) -> String {
    let mut by_second: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    let first_sent = sent
        .values()
        .min()
        .copied()
        .unwrap_or(std::time::UNIX_EPOCH);
    for m in messages {
        if let Some(at) = m.correlation_id.as_ref().and_then(|c| sent.get(c)) {
            let second = at.duration_since(first_sent).unwrap_or_default().as_secs();
            by_second
                .entry(second)
                .or_default()
                .push(m.received_at.duration_since(*at).unwrap_or_default());
        }
    }
    by_second
        .iter_mut()
        .map(|(s, v)| {
            v.sort();
            format!("{s}:{:.0}", ms(percentile(v, 0.99)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
