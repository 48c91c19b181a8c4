//! `build`, `verify` and `proof`: a big ledger made through the sequencer,
//! then verified (with what reading and checking alone cost, and plain
//! SHA-256 as the baseline) and asked for inclusion proofs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::Connection as _;
use trailmark::audit::{self, VerifyOptions, VerifyReport};
use trailmark::instance::Instance;
use trailmark::ledger::merkle::ProofPlan;
use trailmark::ledger::{Actor, Seq};
use trailmark::sequencer::record_request;

use crate::common::{fill, payload, percentile};

/// Flags of `build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The directory of the ledger (its data directory is DIR/data); made
    /// when missing, topped up when it exists.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The size the ledger is built up to.
    #[arg(long, value_name = "N")]
    pub entries: u64,
    /// The sequencer's largest batch.
    #[arg(long, value_name = "B", default_value_t = 4096)]
    pub batch: usize,
}

/// Flags of `verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The directory `build` made.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Flags of `proof`.
#[derive(clap::Args)]
pub struct ProofArgs {
    /// The directory `build` made.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Random entries to prove.
    #[arg(long, value_name = "K", default_value_t = 1000)]
    pub samples: usize,
}

/// Builds a ledger of N entries through the sequencer (no HTTP).
pub async fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let (opened, _) = if dir.join("data/trailmark.toml").exists() {
        (
            Instance::open(&dir.join("data"), None).await?,
            String::new(),
        )
    } else {
        Instance::initialise(
            &dir.join("data"),
            Some("bench.trailmark.local/big".into()),
            None,
        )
        .await?
    };
    let start_size = opened.store.size().await?;
    let actor = Actor::parse("service:bench")?;
    let started = Instant::now();
    fill(&opened, start_size..args.entries, args.batch, |n| {
        let mut request = record_request(
            "qms.capa.opened",
            actor.clone(),
            &format!("person:E{:05}", n % 5000),
            payload(n),
            true,
        )?;
        request.correlation_id = Some(format!("asg-{}", n % 997));
        Ok(request)
    })
    .await?;
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
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let opened = Instance::open(&args.dir.join("data"), None).await?;
    let report = verify_twice(&opened).await?;
    checks_only(&opened).await?;
    read_only(&opened).await?;
    sqlite_reads(&args.dir).await?;
    sha256_baseline(&opened, &report).await?;
    opened.store.close().await;
    Ok(())
}

/// `audit::verify_store` with the canonical-form check and without; the
/// report of the first.
async fn verify_twice(opened: &Instance) -> anyhow::Result<VerifyReport> {
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
    Ok(report)
}

/// What checking alone costs: the same rows already in memory, one core.
async fn checks_only(opened: &Instance) -> anyhow::Result<()> {
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
    let mut checker = trailmark::ledger::verify::ChainVerifier::new(opened.key.verifier(), true);
    for row in &rows {
        let (hash, index) = row.hash_and_index();
        checker.push(row.seq, Some(hash), &row.canonical, Some(index))?;
    }
    println!(
        "checks only        {:.0} entries/s (ChainVerifier::push over rows in memory, one core)",
        rows.len() as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What reading alone costs: the same pages, no checks.
async fn read_only(opened: &Instance) -> anyhow::Result<()> {
    let t = Instant::now();
    let (mut from, mut rows) = (0u64, 0u64);
    loop {
        let page = opened
            .store
            .entries_page(from, trailmark::store::STREAM_PAGE_ROWS)
            .await?;
        let Some(last) = page.last() else { break };
        from = last.seq.size();
        rows += page.len() as u64;
    }
    println!(
        "read only          {:.0} rows/s (the store's paged read, one page at a time)",
        rows as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Paged reads straight from the SQLite file of `dir`: three columns, and
/// five with the index columns joined into one.
async fn sqlite_reads(dir: &Path) -> anyhow::Result<()> {
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
    Ok(())
}

/// Baseline: SHA-256 over the same canonical bytes, already in memory.
async fn sha256_baseline(opened: &Instance, report: &VerifyReport) -> anyhow::Result<()> {
    let mut bytes_total = 0usize;
    let mut sha_time = Duration::ZERO;
    let mut from = 0u64;
    loop {
        let page = opened.store.entries_page(from, 8192).await?;
        let Some(last) = page.last() else { break };
        from = last.seq.size();
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
    Ok(())
}

/// Times inclusion proofs at the ledger's current size: store reads + assembly.
pub async fn proof(args: &ProofArgs) -> anyhow::Result<()> {
    let samples = args.samples;
    let opened = Instance::open(&args.dir.join("data"), None).await?;
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
        let p = audit::inclusion_proof(&opened.store, Seq::clamped(seq), Some(size)).await?;
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
