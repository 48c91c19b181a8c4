//! What several benchmarks share: the record they append, fresh PostgreSQL
//! databases, bulk appends through a sequencer, a window of concurrent
//! tasks, and the arithmetic of their figures (percentiles, metrics).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use sqlx::Connection as _;
use trailmark::instance::Instance;
use trailmark::sequencer::{AppendRequest, Sequencer};
use trailmark::telemetry::Metrics;

/// The payload of record n: a training completion of one of 5,000 people.
pub fn payload(n: u64) -> Map<String, Value> {
    json!({"person_id": format!("E{:05}", n % 5000), "document": "SOP-017", "version": 4, "verb": "completed",
           "score": 0.95, "completed_at": "2026-11-25T10:15:00Z", "attempt": n % 3 + 1, "printed_name": "Zoë Łukasz"})
    .as_object()
    .unwrap()
    .clone()
}

/// The body of `POST /v1/entries` for record n.
pub fn body(n: u64) -> Value {
    json!({"kind": "qms.capa.opened", "subject": format!("person:E{:05}", n % 5000), "correlation_id": format!("asg-{}", n % 997),
           "idempotency_key": format!("xapi-{n:012}"), "payload": payload(n)})
}

/// The same body as [`body`], formatted directly: the load generator shares
/// the two cores with the server, so it should cost as little as `wrk` would.
pub fn body_text(n: u64) -> String {
    format!(
        r#"{{"kind":"qms.capa.opened","subject":"person:E{p:05}","correlation_id":"asg-{a}","idempotency_key":"xapi-{n:012}","payload":{{"person_id":"E{p:05}","document":"SOP-017","version":4,"verb":"completed","score":0.95,"completed_at":"2026-11-25T10:15:00Z","attempt":{t},"printed_name":"Zoë Łukasz"}}}}"#,
        p = n % 5000,
        a = n % 997,
        t = n % 3 + 1
    )
}

/// The value at fraction `p` (0 to 1) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50, p90, p99, max and mean of `latencies` (sorted in place).
pub fn latency_line(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    format!(
        "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.9)),
        ms(percentile(latencies, 0.99)),
        ms(*latencies.last().expect("at least one sample")),
        ms(mean)
    )
}

/// The value of the metric line `name` in a Prometheus text, or 0.
pub fn read_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Drops and recreates the database `name` on the server of `base` (a
/// PostgreSQL URL); the URL of the fresh database.
pub async fn fresh_pg(base: &str, name: &str) -> anyhow::Result<String> {
    let mut admin = sqlx::PgConnection::connect(base).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let (prefix, _) = base.rsplit_once('/').context("the URL names a database")?;
    Ok(format!("{prefix}/{name}"))
}

/// [`fresh_pg`] for the database `name` when `base` is given: the URL to
/// initialise a ledger with (`None`: SQLite in the data directory).
pub async fn fresh_pg_if(base: Option<&str>, name: &str) -> anyhow::Result<Option<String>> {
    match base {
        Some(base) => Ok(Some(fresh_pg(base, name).await?)),
        None => Ok(None),
    }
}

/// A sequencer over `opened` for bulk appends: batches of up to `batch`
/// entries, a queue of 65,536.
pub async fn bulk_sequencer(opened: &Instance, batch: usize) -> anyhow::Result<Sequencer> {
    let mut config = opened.config.sequencer.clone();
    config.batch_max_entries = batch;
    config.queue_max_entries = 65_536;
    Ok(Sequencer::start(
        opened.store.clone(),
        opened.key.clone(),
        config,
        Metrics::default(),
    )
    .await?)
}

/// Appends the entries `make(n)` for every n in `range` through a bulk
/// sequencer (batches of up to `batch`, 2,048 appends in flight, no HTTP):
/// what `build` and `console` use to make big ledgers.
pub async fn fill<F>(
    opened: &Instance,
    range: std::ops::Range<u64>,
    batch: usize,
    mut make: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> anyhow::Result<AppendRequest>,
{
    let sequencer = bulk_sequencer(opened, batch).await?;
    let handle = sequencer.handle();
    let started = Instant::now();
    let in_flight = 2048u64;
    let mut next = range.start;
    let mut reported = range.start;
    let mut tasks = tokio::task::JoinSet::new();
    while next < range.end || !tasks.is_empty() {
        while next < range.end && (tasks.len() as u64) < in_flight {
            let request = make(next)?;
            let handle = handle.clone();
            tasks.spawn(async move { handle.append(request).await });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            done??;
        }
        if next - reported >= 250_000 {
            reported = next;
            eprintln!(
                "  {next} entries, {:.0}/s",
                (next - range.start) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    drop(handle);
    sequencer.shutdown().await;
    Ok(())
}

/// Runs `count` tasks made by `make` with at most `window` in flight;
/// their results in index order.
pub async fn in_window<T, F, Fut>(count: u64, window: usize, mut make: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < count || !tasks.is_empty() {
        while next < count && tasks.len() < window {
            let (i, work) = (next, make(next));
            tasks.spawn(async move { work.await.map(|v| (i, v)) });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            let (i, v) = done??;
            results[i as usize] = Some(v);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every task reported"))
        .collect())
}
