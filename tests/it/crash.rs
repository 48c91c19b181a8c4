//! Crash safety: `kill -9` the real server process in the middle of a load;
//! after a restart every acknowledged entry is present and the ledger verifies.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{INIT_ENTRIES, TestLedger, record, wait_for_checkpoint};

/// Starts `trailmark serve` on a port the system chooses (port 0, so no
/// other process can take it between choosing and binding) and returns it
/// with its base URL, read from the line it prints once it listens.
async fn spawn_server(ledger: &TestLedger) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trailmark"))
        .args(["serve", "--data"])
        .arg(ledger.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("TRAILMARK_DATA")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Duration::from_secs(30);
    let base = tokio::time::timeout(deadline, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("trailmark serving ") {
                let url = rest.split(" on ").nth(1).unwrap_or_default();
                return url.split(' ').next().unwrap_or_default().to_owned();
            }
        }
        panic!("the server exited before it listened");
    })
    .await
    .expect("the server listens within 30 s");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base.trim_end_matches('/').to_owned())
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_load_loses_no_acknowledged_entry() {
    let ledger = TestLedger::new().await;
    let (mut child, base) = spawn_server(&ledger).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (base, token, stop, acks) = (
            base.clone(),
            ledger.admin_token.clone(),
            stop.clone(),
            acks.clone(),
        );
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            let mut n = worker * 100_000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let sent = client
                    .post(format!("{base}/v1/entries"))
                    .bearer_auth(&token)
                    .json(&record(n))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 201 {
                    break;
                }
                let Ok(body) = response.json::<serde_json::Value>().await else {
                    break;
                };
                acknowledged.push((
                    body["seq"].as_u64().unwrap(),
                    body["hash"].as_str().unwrap().to_owned(),
                ));
                acks.fetch_add(1, Ordering::SeqCst);
            }
            acknowledged
        });
    }
    // Kill mid-load: once a few hundred appends were acknowledged.
    for _ in 0..600 {
        if acks.load(Ordering::SeqCst) >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().unwrap(); // SIGKILL: no shutdown, no final checkpoint
    child.wait().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    while let Some(done) = tasks.join_next().await {
        acknowledged.extend(done.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "the load ran before the kill ({} acknowledged)",
        acknowledged.len()
    );

    let (mut child, base) = spawn_server(&ledger).await;
    let client = reqwest::Client::new();
    for (seq, hash) in &acknowledged {
        let entry: serde_json::Value = client
            .get(format!("{base}/v1/entries/{seq}"))
            .bearer_auth(&ledger.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            entry["hash"].as_str(),
            Some(hash.as_str()),
            "acknowledged entry {seq} must survive the crash"
        );
    }
    // The restarted server attests the crash's tail with a checkpoint
    // within its interval; wait for it rather than race it (under load the
    // kill could come first, and the assertion below would test the clock).
    let size = ledger.opened.store.size().await.unwrap();
    wait_for_checkpoint(&ledger.opened, size).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let report = ledger.verify().await.unwrap();
    assert!(report.entries >= acknowledged.len() as u64 + 2);
    assert_eq!(
        report.pending_unattested, 0,
        "the restart attested the tail left by the crash"
    );
    ledger.finish().await;
}

/// A SQLite property, so it runs on SQLite whatever the suite's backend:
/// under continuous appends the WAL is checkpointed and rewound between
/// batches. (A checkpointer that never caught up once let it reach 27 GB.)
#[tokio::test]
async fn the_sqlite_wal_stays_bounded_under_continuous_appends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (opened, _) =
        trailmark::instance::Instance::initialise(&data, Some("trailmark.test/wal".into()), None)
            .await
            .unwrap();
    let sequencer = trailmark::sequencer::Sequencer::start(
        opened.store.clone(),
        opened.key.clone(),
        opened.config.sequencer.clone(),
        trailmark::telemetry::Metrics::default(),
    )
    .await
    .unwrap();
    let actor = trailmark::ledger::Actor::parse("service:wal").unwrap();
    let mut largest_wal = 0u64;
    for round in 0..16 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..500 {
            let handle = sequencer.handle();
            let body = record(round * 500 + n);
            let request = trailmark::sequencer::record_request(
                body["kind"].as_str().unwrap(),
                actor.clone(),
                body["subject"].as_str().unwrap(),
                body["payload"].as_object().unwrap().clone(),
                true,
            )
            .unwrap();
            tasks.spawn(async move { handle.append(request).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let wal = std::fs::metadata(data.join("ledger.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        largest_wal = largest_wal.max(wal);
    }
    sequencer.shutdown().await;
    assert_eq!(opened.store.size().await.unwrap(), 8_000 + INIT_ENTRIES);
    // Measured: about 2 MB with the checkpoints, 14 MB and growing without.
    assert!(
        largest_wal < 4 << 20,
        "the WAL grew to {largest_wal} bytes over 8,000 appends"
    );
    opened.store.close().await;
}

/// The three commit windows (docs/ARCHITECTURE.md, "Crash windows"), each
/// forced with the store's fault hook on the backend under test: the
/// sequencer reads the head back and answers what is known.
mod commit_windows {
    use serde_json::{Value, json};
    use trailmark::store::Fault;

    use crate::harness::{TestLedger, record};
    use crate::people::Http;

    async fn append(http: &Http, token: &str, key: &str) -> (u16, Value) {
        let mut body = record(7);
        body["idempotency_key"] = json!(key);
        http.call("POST", "/v1/entries", Some(token), Some(body))
            .await
    }

    async fn size(ledger: &TestLedger) -> u64 {
        ledger.opened.store.size().await.unwrap()
    }

    /// Committed, then the connection failed: the caller gets the receipt,
    /// the entry is there once, and a retry with the same key replays it.
    #[tokio::test]
    async fn a_commit_that_failed_after_the_data_was_durable_is_answered_with_its_receipt() {
        let ledger = TestLedger::new().await;
        let server = ledger.start().await;
        let http = Http::new(&server);
        let before = size(&ledger).await;
        ledger.opened.store.inject_fault(Fault::CommitFailsAfter);
        let (status, r) = append(&http, &ledger.admin_token, "after-1").await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(r["seq"], json!(before), "{r}");
        assert_eq!(size(&ledger).await, before + 1);
        let (status, again) = append(&http, &ledger.admin_token, "after-1").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["seq"], r["seq"]);
        assert_eq!(again["replayed"], json!(true));
        // The sequencer's head moved with it: the next append chains on.
        let (status, next) = append(&http, &ledger.admin_token, "after-2").await;
        assert_eq!(status, 201, "{next}");
        assert_eq!(next["seq"], json!(before + 1));
        server.stop().await;
        ledger.verify().await.expect("the ledger verifies");
        ledger.finish().await;
    }

    /// Failed before the commit: the caller is told nothing was written,
    /// nothing was, and a retry with the same key appends it once.
    #[tokio::test]
    async fn a_commit_that_failed_before_reaching_the_database_says_nothing_was_written() {
        let ledger = TestLedger::new().await;
        let server = ledger.start().await;
        let http = Http::new(&server);
        let before = size(&ledger).await;
        ledger.opened.store.inject_fault(Fault::CommitFailsBefore);
        let (status, p) = append(&http, &ledger.admin_token, "before-1").await;
        assert_eq!(status, 503, "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was written"),
            "{p}"
        );
        assert_eq!(size(&ledger).await, before);
        let (status, r) = append(&http, &ledger.admin_token, "before-1").await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(r["seq"], json!(before));
        server.stop().await;
        ledger.verify().await.expect("the ledger verifies");
        ledger.finish().await;
    }

    /// Another writer appended first: the sequencer reloads the head and
    /// rebuilds the batch; the caller never sees it.
    #[tokio::test]
    async fn a_moved_head_is_reloaded_and_the_batch_rebuilt() {
        let ledger = TestLedger::new().await;
        let server = ledger.start().await;
        let http = Http::new(&server);
        let before = size(&ledger).await;
        ledger.opened.store.inject_fault(Fault::HeadMoved);
        let (status, r) = append(&http, &ledger.admin_token, "moved-1").await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(r["seq"], json!(before));
        assert_eq!(size(&ledger).await, before + 1);
        server.stop().await;
        ledger.verify().await.expect("the ledger verifies");
        ledger.finish().await;
    }
}
