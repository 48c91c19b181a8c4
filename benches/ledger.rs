//! Trailmark's benchmarks: figures for docs/PERFORMANCE.md, each with its
//! baseline measured in the same run.
//!
//! ```text
//! cargo bench --bench ledger -- append   [--seconds S] [--clients C]
//! cargo bench --bench ledger -- build    --dir DIR --entries N
//! cargo bench --bench ledger -- verify   --dir DIR
//! cargo bench --bench ledger -- proof    --dir DIR [--samples K]
//! ```
//!
//! `append` uses a fresh ledger in a temp dir on SQLite, or on PostgreSQL
//! when `TRAILMARK_BENCH_DATABASE_URL` names a database to create fresh
//! ledgers in (it is dropped and recreated). `build` makes a ledger of N
//! entries through the sequencer (no HTTP) for `verify` and `proof`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use sqlx::Connection as _;
use trailmark::api::Server;
use trailmark::audit::{self, VerifyOptions};
use trailmark::cli;
use trailmark::ledger::Actor;
use trailmark::ledger::merkle::ProofPlan;
use trailmark::sequencer::{Sequencer, record_request};
use trailmark::telemetry::Metrics;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn payload(n: u64) -> Map<String, Value> {
    json!({"person_id": format!("E{:05}", n % 5000), "document": "SOP-017", "version": 4, "verb": "completed",
           "score": 0.95, "completed_at": "2026-11-25T10:15:00Z", "attempt": n % 3 + 1, "printed_name": "Zoë Łukasz"})
    .as_object()
    .unwrap()
    .clone()
}

fn body(n: u64) -> Value {
    json!({"kind": "lms.completion.recorded", "subject": format!("person:E{:05}", n % 5000), "correlation_id": format!("asg-{}", n % 997),
           "idempotency_key": format!("xapi-{n:012}"), "payload": payload(n)})
}

/// The same body as [`body`], formatted directly: the load generator shares
/// the two cores with the server, so it should cost as little as `wrk` would.
fn body_text(n: u64) -> String {
    format!(
        r#"{{"kind":"lms.completion.recorded","subject":"person:E{p:05}","correlation_id":"asg-{a}","idempotency_key":"xapi-{n:012}","payload":{{"person_id":"E{p:05}","document":"SOP-017","version":4,"verb":"completed","score":0.95,"completed_at":"2026-11-25T10:15:00Z","attempt":{t},"printed_name":"Zoë Łukasz"}}}}"#,
        p = n % 5000,
        a = n % 997,
        t = n % 3 + 1
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn fresh_pg(base: &str, name: &str) -> anyhow::Result<String> {
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

/// HTTP appends from C concurrent clients for S seconds, then the plain
/// INSERT baseline with the same batch sizes on the same database.
async fn append(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = arg(args, "--seconds").map_or(Ok(10), |s| s.parse())?;
    let clients: u64 = arg(args, "--clients").map_or(Ok(64), |s| s.parse())?;
    let tmp = tempfile::tempdir()?;
    let pg = std::env::var("TRAILMARK_BENCH_DATABASE_URL").ok();
    let url = match &pg {
        Some(base) => Some(fresh_pg(base, "trailmark_bench").await?),
        None => None,
    };
    let (opened, token) = cli::initialise(
        &tmp.path().join("data"),
        Some("bench.trailmark.local/append".into()),
        url.as_deref(),
    )
    .await?;
    let server = Server::start(
        opened.store.clone(),
        opened.key.clone(),
        &opened.config,
        opened.dir.path(),
        "127.0.0.1:0",
    )
    .await?;
    let base = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs(2);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
        tasks.spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("{base}/v1/entries");
            let auth = format!("Bearer {token}");
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
                if started.elapsed() > warmup {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        });
    }
    tokio::time::sleep(warmup).await;
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
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done?);
    }
    server.stop().await;
    latencies.sort();
    let appended = size_at_end - size_at_start;
    let rate = appended as f64 / elapsed.as_secs_f64();
    let (batches, batch_entries) = batch_counts(&metrics_after, &metrics_before);
    let mean_batch = batch_entries / batches.max(1.0);
    println!("backend            {}", opened.store.backend_name());
    println!("clients            {clients}");
    println!(
        "appended           {appended} entries in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!("throughput         {rate:.0} entries/s (durable: acknowledged after COMMIT)");
    println!(
        "latency            p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    let commit_ms = (read_metric(&metrics_after, "trailmark_commit_seconds_sum")
        - read_metric(&metrics_before, "trailmark_commit_seconds_sum"))
        * 1e3
        / (read_metric(&metrics_after, "trailmark_commit_seconds_count")
            - read_metric(&metrics_before, "trailmark_commit_seconds_count"))
        .max(1.0);
    let prepare_ms = (read_metric(&metrics_after, "trailmark_prepare_seconds_sum")
        - read_metric(&metrics_before, "trailmark_prepare_seconds_sum"))
        * 1e3
        / (read_metric(&metrics_after, "trailmark_prepare_seconds_count")
            - read_metric(&metrics_before, "trailmark_prepare_seconds_count"))
        .max(1.0);
    println!(
        "prepare            mean {prepare_ms:.2} ms per batch (idempotency and parent lookups, hashing, seal, checkpoint when due)"
    );
    println!(
        "batches            {batches:.0}, mean {mean_batch:.1} entries per batch, mean commit {commit_ms:.2} ms ({:.0}% of the time in COMMIT)",
        commit_ms * batches / elapsed.as_secs_f64() / 10.0
    );

    // Baseline: the same rows, plain INSERTs into an unchained table, same
    // batch size, same durability, no HTTP, no hashing, no tree, no signing.
    let rows = appended.max(10_000);
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

fn read_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn batch_counts(after: &str, before: &str) -> (f64, f64) {
    let read = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    };
    (
        read(after, "trailmark_batch_entries_count")
            - read(before, "trailmark_batch_entries_count"),
        read(after, "trailmark_batch_entries_sum") - read(before, "trailmark_batch_entries_sum"),
    )
}

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
                        .push_bind("lms.completion.recorded")
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

/// Builds a ledger of N entries through the sequencer (no HTTP).
async fn build(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(arg(args, "--dir").context("--dir DIR")?);
    let entries: u64 = arg(args, "--entries").context("--entries N")?.parse()?;
    let (opened, _) = if dir.join("data/trailmark.toml").exists() {
        (cli::open(&dir.join("data"), None).await?, String::new())
    } else {
        cli::initialise(
            &dir.join("data"),
            Some("bench.trailmark.local/big".into()),
            None,
        )
        .await?
    };
    let mut config = opened.config.sequencer.clone();
    config.batch_max_entries = arg(args, "--batch").map_or(Ok(4096), |s| s.parse())?;
    config.queue_max_entries = 65_536;
    let sequencer = Sequencer::start(
        opened.store.clone(),
        opened.key.clone(),
        config,
        Metrics::default(),
    )
    .await?;
    let handle = sequencer.handle();
    let start_size = opened.store.size().await?;
    let started = Instant::now();
    let actor = Actor::parse("service:bench")?;
    let in_flight = 2048u64;
    let mut next = start_size;
    let mut tasks = tokio::task::JoinSet::new();
    while next < entries || !tasks.is_empty() {
        while next < entries && (tasks.len() as u64) < in_flight {
            let mut request = record_request(
                "lms.completion.recorded",
                actor.clone(),
                &format!("person:E{:05}", next % 5000),
                payload(next),
                true,
            )?;
            request.correlation_id = Some(format!("asg-{}", next % 997));
            let handle = handle.clone();
            tasks.spawn(async move { handle.append(request).await });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            done??;
        }
        if next % 1_000_000 == 0 && tasks.len() as u64 == in_flight - 1 {
            eprintln!(
                "  {next} entries, {:.0}/s",
                (next - start_size) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    drop(handle);
    sequencer.shutdown().await;
    let size = opened.store.size().await?;
    println!(
        "built              {} entries in {:.1} s ({:.0}/s through the sequencer, no HTTP)",
        size - start_size,
        started.elapsed().as_secs_f64(),
        (size - start_size) as f64 / started.elapsed().as_secs_f64()
    );
    opened.store.close().await;
    Ok(())
}

/// Verifies the ledger in DIR and measures plain SHA-256 over the same bytes.
async fn verify(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(arg(args, "--dir").context("--dir DIR")?);
    let opened = cli::open(&dir.join("data"), None).await?;
    let report = audit::verify_store(
        &opened.store,
        &opened.key.verifier(),
        &VerifyOptions {
            check_canonical: true,
            external_checkpoint: None,
        },
        |_| {},
    )
    .await?;
    println!(
        "verify             {} entries, {} checkpoints in {:.2} s: {:.0} entries/s (canonical-form check on)",
        report.entries,
        report.checkpoints,
        report.seconds,
        report.rate()
    );
    let fast = audit::verify_store(
        &opened.store,
        &opened.key.verifier(),
        &VerifyOptions::default(),
        |_| {},
    )
    .await?;
    println!("verify (no canon.) {:.0} entries/s", fast.rate());
    // What checking alone costs: the same rows already in memory, one core.
    {
        let mut rows = Vec::new();
        let mut from = 0u64;
        loop {
            let page = opened
                .store
                .verify_page(from, trailmark::store::STREAM_PAGE_ROWS)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            rows.extend(page);
        }
        let t = Instant::now();
        let mut checker =
            trailmark::ledger::verify::ChainVerifier::new(opened.key.verifier(), true);
        for row in &rows {
            let (hash, index) = row.hash_and_index();
            checker.push(row.seq, Some(hash), &row.canonical, Some(index))?;
        }
        println!(
            "checks only        {:.0} entries/s (ChainVerifier::push over rows in memory, one core)",
            rows.len() as f64 / t.elapsed().as_secs_f64()
        );
    }
    // What reading alone costs: the same pages, no checks.
    let t = Instant::now();
    let (mut from, mut rows) = (0u64, 0u64);
    loop {
        let page = opened
            .store
            .entries_page(from, trailmark::store::STREAM_PAGE_ROWS)
            .await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        rows += page.len() as u64;
    }
    println!(
        "read only          {:.0} rows/s (the store's paged read, one page at a time)",
        rows as f64 / t.elapsed().as_secs_f64()
    );
    {
        use sqlx::Row as _;
        let url = format!("sqlite://{}", dir.join("data/ledger.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        for (label, sql) in [
            (
                "3 columns",
                "SELECT seq, hash, canonical FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
            ),
            (
                "5 columns, index columns joined",
                "SELECT seq, hash, canonical, seal, recorded_at || ' ' || kind || ' ' || actor || ' ' || subject || ' ' || COALESCE(correlation_id, '') || ' ' || COALESCE(idempotency_key, '') FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
            ),
        ] {
            let t = Instant::now();
            let (mut from, mut rows) = (0i64, 0u64);
            loop {
                let page = sqlx::query(sql)
                    .bind(from)
                    .bind(8192i64)
                    .fetch_all(&mut conn)
                    .await?;
                let Some(last) = page.last() else { break };
                from = last.get::<i64, _>(0) + 1;
                rows += page.len() as u64;
            }
            println!(
                "read {label:<32} {:.0} rows/s",
                rows as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    // Baseline: SHA-256 over the same canonical bytes, already in memory.
    let mut bytes_total = 0usize;
    let mut sha_time = Duration::ZERO;
    let mut from = 0u64;
    loop {
        let page = opened.store.entries_page(from, 8192).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        let t = Instant::now();
        for row in &page {
            std::hint::black_box(trailmark::ledger::merkle::leaf_hash(&row.canonical));
            bytes_total += row.canonical.len();
        }
        sha_time += t.elapsed();
    }
    let sha_rate = report.entries as f64 / sha_time.as_secs_f64();
    println!(
        "plain SHA-256      {sha_rate:.0} entries/s over the same {:.1} MB (in memory, one core)",
        bytes_total as f64 / 1e6
    );
    println!(
        "ratio              verify / plain SHA-256 = {:.3}",
        report.rate() / sha_rate
    );
    opened.store.close().await;
    Ok(())
}

/// Times inclusion proofs at the ledger's current size: store reads + assembly.
async fn proof(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(arg(args, "--dir").context("--dir DIR")?);
    let samples: usize = arg(args, "--samples").map_or(Ok(1000), |s| s.parse())?;
    let opened = cli::open(&dir.join("data"), None).await?;
    let size = opened
        .store
        .latest_checkpoint()
        .await?
        .context("no checkpoint")?
        .size;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut times = Vec::with_capacity(samples);
    let mut nodes_read = 0usize;
    for _ in 0..samples {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let seq = state % size;
        let t = Instant::now();
        let p = audit::inclusion_proof(&opened.store, seq, Some(size)).await?;
        times.push(t.elapsed());
        nodes_read += ProofPlan::inclusion(seq, size)?.needed().len();
        std::hint::black_box(p);
    }
    times.sort();
    println!("ledger size        {size}");
    println!(
        "inclusion proof    p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {samples} random entries ({:.1} stored nodes read per proof)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        nodes_read as f64 / samples as f64
    );
    opened.store.close().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Some(what) = args.first() else {
        println!(
            "usage: cargo bench --bench ledger -- append|build|verify|proof [options]; see benches/ledger.rs"
        );
        return Ok(());
    };
    runtime.block_on(async {
        match what.as_str() {
            "append" => append(&args).await,
            "build" => build(&args).await,
            "verify" => verify(&args).await,
            "proof" => proof(&args).await,
            other => bail!("unknown benchmark `{other}`"),
        }
    })
}
