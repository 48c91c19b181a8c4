//! `append`: HTTP appends from C concurrent clients for S seconds, then the
//! plain INSERT baseline with the same batch sizes on the same database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use trailmark::instance::Instance;

use crate::common::{body, body_text, fresh_pg_if, percentile, read_metric};

/// Flags of `append`.
#[derive(clap::Args)]
pub struct AppendArgs {
    /// Seconds measured, after a 2 s warm-up.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent HTTP clients.
    #[arg(long, value_name = "C", default_value_t = 64)]
    pub clients: u64,
}

/// The time the clients run before the measured window.
const WARMUP: Duration = Duration::from_secs(2);

pub async fn run(args: &AppendArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pg = std::env::var("TRAILMARK_BENCH_DATABASE_URL").ok();
    let url = fresh_pg_if(pg.as_deref(), "trailmark_bench").await?;
    let (opened, token) = Instance::initialise(
        &tmp.path().join("data"),
        Some("bench.trailmark.local/append".into()),
        url.as_deref(),
    )
    .await?;
    let server = opened.start_server("127.0.0.1:0").await?;
    let base = server.url();
    let load = Load::start(&base, &token, args.clients);
    let window = Window::measure(&opened, &base, args.seconds).await?;
    let mut latencies = load.stop().await?;
    server.stop().await;
    latencies.sort();
    let rate = window.appended as f64 / window.elapsed.as_secs_f64();
    let mean_batch = print_http(&opened, args.clients, &window, rate, &latencies);

    // Baseline: the same rows, plain INSERTs into an unchained table, same
    // batch size, same durability, no HTTP, no hashing, no tree, no signing.
    let rows = window.appended.max(10_000);
    let db_url =
        url.unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("data/ledger.db").display()));
    let baseline =
        plain_insert_baseline(&db_url, rows, mean_batch.round().max(1.0) as usize).await?;
    println!(
        "plain INSERT       {baseline:.0} rows/s with batches of {:.0} (no HTTP, no chain, no tree, no signature)",
        mean_batch.round()
    );
    println!(
        "ratio              HTTP ledger append / plain INSERT = {:.2}",
        rate / baseline
    );
    opened.store.close().await;
    Ok(())
}

/// The clients: each POSTs one entry at a time until stopped, and keeps
/// the latency of every request after the warm-up.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<Vec<Duration>>,
}

impl Load {
    fn start(base: &str, token: &str, clients: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let url = format!("{base}/v1/entries");
            let auth = format!("Bearer {token}");
            let stop = stop.clone();
            tasks.spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut n = c * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(body_text(n))
                        .send()
                        .await
                        .expect("server up");
                    assert_eq!(
                        r.status().as_u16(),
                        201,
                        "{}",
                        r.text().await.unwrap_or_default()
                    );
                    let _ = r.bytes().await;
                    if started.elapsed() > WARMUP {
                        latencies.push(t.elapsed());
                    }
                }
                latencies
            });
        }
        Load { stop, tasks }
    }

    /// Stops the clients; the latencies of all of them.
    async fn stop(mut self) -> anyhow::Result<Vec<Duration>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            latencies.extend(done?);
        }
        Ok(latencies)
    }
}

/// The measured window: after the warm-up, S seconds, with the ledger's
/// size and the server's metrics at either end.
struct Window {
    appended: u64,
    elapsed: Duration,
    metrics_before: String,
    metrics_after: String,
}

impl Window {
    async fn measure(opened: &Instance, base: &str, seconds: u64) -> anyhow::Result<Window> {
        tokio::time::sleep(WARMUP).await;
        let size_at_start = opened.store.size().await?;
        let measured_from = Instant::now();
        let metrics_before = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let size_at_end = opened.store.size().await?;
        let elapsed = measured_from.elapsed();
        let metrics_after = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        Ok(Window {
            appended: size_at_end - size_at_start,
            elapsed,
            metrics_before,
            metrics_after,
        })
    }

    /// The mean of histogram `name` over the window, in milliseconds.
    fn mean_ms(&self, name: &str) -> f64 {
        let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
        (read_metric(&self.metrics_after, &sum) - read_metric(&self.metrics_before, &sum)) * 1e3
            / (read_metric(&self.metrics_after, &count) - read_metric(&self.metrics_before, &count))
                .max(1.0)
    }
}

/// Prints the HTTP side's figures; the mean entries per batch.
fn print_http(
    opened: &Instance,
    clients: u64,
    window: &Window,
    rate: f64,
    latencies: &[Duration],
) -> f64 {
    let (batches, batch_entries) = batch_counts(&window.metrics_after, &window.metrics_before);
    let mean_batch = batch_entries / batches.max(1.0);
    let elapsed = window.elapsed;
    println!("backend            {}", opened.store.backend_name());
    println!("clients            {clients}");
    println!(
        "appended           {} entries in {:.2} s",
        window.appended,
        elapsed.as_secs_f64()
    );
    println!("throughput         {rate:.0} entries/s (durable: acknowledged after COMMIT)");
    println!(
        "latency            p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    let commit_ms = window.mean_ms("trailmark_commit_seconds");
    let prepare_ms = window.mean_ms("trailmark_prepare_seconds");
    println!(
        "prepare            mean {prepare_ms:.2} ms per batch (idempotency and parent lookups, hashing, seal, checkpoint when due)"
    );
    println!(
        "batches            {batches:.0}, mean {mean_batch:.1} entries per batch, mean commit {commit_ms:.2} ms ({:.0}% of the time in COMMIT)",
        commit_ms * batches / elapsed.as_secs_f64() / 10.0
    );
    mean_batch
}

/// Batches and the entries in them between two metrics texts.
fn batch_counts(after: &str, before: &str) -> (f64, f64) {
    (
        read_metric(after, "trailmark_batch_entries_count")
            - read_metric(before, "trailmark_batch_entries_count"),
        read_metric(after, "trailmark_batch_entries_sum")
            - read_metric(before, "trailmark_batch_entries_sum"),
    )
}

/// Inserts `rows` records in transactions of `batch` rows into a plain
/// table with the ledger's indexes; rows per second.
async fn plain_insert_baseline(url: &str, rows: u64, batch: usize) -> anyhow::Result<f64> {
    let canonical: Vec<Vec<u8>> = (0..rows)
        .map(|n| serde_json::to_vec(&body(n)).unwrap())
        .collect();
    macro_rules! run {
        ($conn:expr, $db:ty, $ddl:expr) => {{
            let conn = &mut $conn;
            sqlx::raw_sql($ddl).execute(&mut *conn).await?;
            let started = Instant::now();
            for (chunk_index, chunk) in canonical.chunks(batch).enumerate() {
                let mut tx = conn.begin().await?;
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new("INSERT INTO plain_rows (seq, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key) ");
                qb.push_values(chunk.iter().enumerate(), |mut row, (i, bytes)| {
                    let n = (chunk_index * batch + i) as i64;
                    row.push_bind(n)
                        .push_bind(bytes.clone())
                        .push_bind("2026-11-21T09:00:00.000000Z")
                        .push_bind("qms.capa.opened")
                        .push_bind("service:admin")
                        .push_bind(format!("person:E{:05}", n % 5000))
                        .push_bind(format!("asg-{}", n % 997))
                        .push_bind(format!("xapi-{n:012}"));
                });
                qb.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
            rows as f64 / started.elapsed().as_secs_f64()
        }};
    }
    let ddl = "DROP TABLE IF EXISTS plain_rows; CREATE TABLE plain_rows (seq BIGINT PRIMARY KEY, canonical BYTEA, recorded_at TEXT, kind TEXT, actor TEXT, subject TEXT, correlation_id TEXT, idempotency_key TEXT); CREATE INDEX plain_subject ON plain_rows (subject, seq); CREATE INDEX plain_kind ON plain_rows (kind, seq); CREATE INDEX plain_actor ON plain_rows (actor, seq); CREATE INDEX plain_corr ON plain_rows (correlation_id, seq); CREATE INDEX plain_time ON plain_rows (recorded_at); CREATE UNIQUE INDEX plain_idem ON plain_rows (idempotency_key, actor);";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        Ok(run!(conn, sqlx::Postgres, ddl))
    } else {
        use std::str::FromStr as _;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        Ok(run!(
            conn,
            sqlx::Sqlite,
            sqlx::AssertSqlSafe(ddl.replace("BYTEA", "BLOB"))
        ))
    }
}
