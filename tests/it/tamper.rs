//! Tampering that goes around the application with raw SQL: the triggers
//! refuse it; with the triggers dropped, `verify` catches it and names the
//! first bad seq.

use trailmark::audit::{AuditError, VerifyOptions};
use trailmark::ledger::merkle::leaf_hash;
use trailmark::ledger::verify::VerifyError;

use crate::harness::{Api, INIT_ENTRIES, TestLedger, record};

/// A ledger of `n` records (plus genesis and the admin token entry), server stopped.
async fn ledger_with(n: usize) -> TestLedger {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    for i in 0..n {
        let (s, _) = api.post(&record(i)).await;
        assert_eq!(s, 201);
    }
    server.stop().await;
    ledger
}

fn broken(result: Result<trailmark::audit::VerifyReport, AuditError>) -> VerifyError {
    match result {
        Err(AuditError::Broken(e)) => e,
        other => panic!("verify should have failed, got {other:?}"),
    }
}

/// The SQLite and PostgreSQL migrations declare the same tables, columns
/// and indexes. Needs both databases at once, so it compares in the
/// PostgreSQL pass (`.ci/run` runs both); the SQLite pass says so.
#[tokio::test]
async fn both_backends_migrate_to_the_same_tables_columns_and_indexes() {
    let ledger = TestLedger::new().await;
    if ledger.opened.store.backend_name() != "postgres" {
        eprintln!(
            "SKIPPED the schema comparison in the SQLite pass: it needs PostgreSQL too, and runs with TRAILMARK_TEST_DATABASE_URL (the PostgreSQL pass of .ci/run)"
        );
        ledger.finish().await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = trailmark::store::Store::open_sqlite(&dir.path().join("shape.db"))
        .await
        .unwrap();
    let (lite, pg) = (
        sqlite.shape().await.unwrap(),
        ledger.opened.store.shape().await.unwrap(),
    );
    assert!(
        lite.tables.len() > 20 && lite.indexes.len() > 10,
        "{lite:?}"
    );
    assert_eq!(
        lite.tables.keys().collect::<Vec<_>>(),
        pg.tables.keys().collect::<Vec<_>>(),
        "tables"
    );
    for (table, columns) in &lite.tables {
        assert_eq!(Some(columns), pg.tables.get(table), "columns of {table}");
    }
    assert_eq!(lite.indexes, pg.indexes, "indexes");
    sqlite.close().await;
    ledger.finish().await;
}

#[tokio::test]
async fn triggers_reject_update_delete_and_truncate_from_any_connection() {
    let ledger = ledger_with(3).await;
    let mut raw = ledger.db.raw().await;
    for (sql, what) in [
        (
            "UPDATE entries SET kind = 'x.y' WHERE seq = 1",
            "UPDATE entries",
        ),
        ("DELETE FROM entries WHERE seq = 4", "DELETE entries"),
        ("UPDATE checkpoints SET note = 'x'", "UPDATE checkpoints"),
        ("DELETE FROM checkpoints", "DELETE checkpoints"),
        ("DELETE FROM merkle_nodes", "DELETE merkle_nodes"),
        (
            "UPDATE merkle_nodes SET level = level",
            "UPDATE merkle_nodes",
        ),
    ] {
        let err = raw.exec(sql).await.expect_err(what);
        assert!(err.contains("append-only"), "{what}: {err}");
    }
    if raw.is_pg() {
        let err = raw.exec("TRUNCATE entries").await.expect_err("TRUNCATE");
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(raw.count("entries").await as u64, INIT_ENTRIES + 3);
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn verify_names_the_first_bad_seq_for_each_manipulation() {
    // Entries: 0 genesis, 1 token, 2..21 records.
    let cases: &[&str] = &[
        "payload byte",
        "timestamp column",
        "timestamp in entry",
        "delete middle",
        "swap two",
        "forged tail",
        "newest deleted",
    ];
    for case in cases {
        let ledger = ledger_with(20).await;
        let mut raw = ledger.db.raw().await;
        raw.drop_triggers().await;
        let found = match *case {
            "payload byte" => {
                let mut bytes = raw.canonical(10).await;
                let at = bytes
                    .windows(12)
                    .position(|w| w == b"\"score\":0.95")
                    .unwrap();
                bytes[at + 11] = b'6';
                raw.set_canonical(10, bytes).await.unwrap();
                broken(ledger.verify().await)
            }
            "timestamp column" => {
                raw.set_recorded_at(12, "2020-01-01T00:00:00.000000Z").await;
                broken(ledger.verify().await)
            }
            "timestamp in entry" => {
                // The attacker rewrites the time inside the entry and fixes that row's hash.
                let text = String::from_utf8(raw.canonical(12).await).unwrap();
                let start = text.find("\"recorded_at\":\"").unwrap() + 15;
                let mut changed = text.clone();
                changed.replace_range(start..start + 4, "2027");
                raw.set_canonical(12, changed.clone().into_bytes())
                    .await
                    .unwrap();
                raw.set_hash(12, leaf_hash(changed.as_bytes()).to_vec())
                    .await;
                raw.set_recorded_at(12, &changed[start..start + 27]).await;
                broken(ledger.verify().await)
            }
            "delete middle" => {
                raw.exec("DELETE FROM entries WHERE seq = 15")
                    .await
                    .unwrap();
                broken(ledger.verify().await)
            }
            "swap two" => {
                let (a, b) = (raw.canonical(7).await, raw.canonical(8).await);
                raw.set_canonical(7, b).await.unwrap();
                raw.set_canonical(8, a).await.unwrap();
                broken(ledger.verify().await)
            }
            "forged tail" => {
                // A well-formed entry chained onto the head, inserted behind the ledger's back.
                let head = ledger.opened.store.head().await.unwrap().unwrap();
                let forged = format!(
                    r#"{{"actor":"service:admin","correlation_id":null,"idempotency_key":null,"kind":"qms.capa.closed","parents":[],"payload":{{}},"prev":"{}","reason":null,"recorded_at":"{}","seq":{},"subject":"qms:capa/CAPA-1","v":1}}"#,
                    head.hash,
                    head.recorded_at,
                    head.seq.size()
                );
                raw.insert_entry(&forged).await;
                broken(ledger.verify().await)
            }
            "newest deleted" => {
                raw.exec("DELETE FROM entries WHERE seq >= 18")
                    .await
                    .unwrap();
                broken(ledger.verify().await)
            }
            _ => unreachable!(),
        };
        let text = found.to_string();
        match (*case, &found) {
            ("payload byte", VerifyError::HashMismatch { seq: 10, .. }) => {}
            (
                "timestamp column",
                VerifyError::IndexMismatch {
                    seq: 12,
                    column: "recorded_at",
                    ..
                },
            ) => {}
            ("timestamp in entry", VerifyError::ChainBroken { seq: 13, .. }) => {}
            // A checkpoint signed at size 13 while the records were appended
            // (a busy machine) is reached before entry 13's `prev`.
            ("timestamp in entry", VerifyError::RootMismatch { size: 13, .. }) => {}
            (
                "delete middle",
                VerifyError::Gap {
                    expected: 15,
                    found: 16,
                },
            ) => {}
            ("swap two", VerifyError::HashMismatch { seq: 7, .. }) => {}
            ("forged tail", VerifyError::Unsealed { seq }) if *seq == 20 + INIT_ENTRIES => {}
            // The first checkpoint past the cut is named: the final one
            // (size 25), or one signed while the records were appended.
            ("newest deleted", VerifyError::Truncated { entries: 18, size })
                if *size > 18 && *size <= 20 + INIT_ENTRIES => {}
            _ => panic!("{case}: unexpected finding: {text}"),
        }
        assert!(
            text.contains("seq"),
            "{case}: the message names a seq: {text}"
        );
        ledger.finish_tampered().await;
    }
}

#[tokio::test]
async fn truncation_with_checkpoints_removed_too_is_caught_by_a_saved_checkpoint() {
    let ledger = ledger_with(20).await;
    let saved = ledger
        .opened
        .store
        .latest_checkpoint()
        .await
        .unwrap()
        .unwrap()
        .note;
    let mut raw = ledger.db.raw().await;
    raw.drop_triggers().await;
    // The attacker deletes the newest entries and every checkpoint and tree node that mentions them.
    raw.exec("DELETE FROM entries WHERE seq >= 17; DELETE FROM checkpoints WHERE size > 17; DELETE FROM merkle_nodes WHERE ((idx + 1) << CAST(level AS INTEGER)) > 17;")
        .await
        .unwrap();
    let remaining = ledger
        .opened
        .store
        .latest_checkpoint()
        .await
        .unwrap()
        .map(|c| c.size)
        .unwrap_or(0);
    if remaining < 17 {
        // Give the shortened ledger a checkpoint again, as a start of the server would.
        let server = ledger.start().await;
        server.stop().await;
    }
    let without_anchor = ledger.verify().await;
    assert!(
        without_anchor.is_ok(),
        "a consistent shortened ledger is indistinguishable without an outside anchor: {without_anchor:?}"
    );
    let with_anchor = trailmark::audit::verify_store(
        &ledger.opened.store,
        &ledger.opened.key.verifier(),
        &VerifyOptions {
            check_canonical: true,
            external_checkpoint: Some(saved),
        },
        |_| {},
    )
    .await;
    match with_anchor {
        Err(AuditError::Broken(VerifyError::Truncated { entries: 17, size }))
            if size == 20 + INIT_ENTRIES => {}
        other => panic!("the saved checkpoint must prove truncation: {other:?}"),
    }
    ledger.finish().await;
}

#[tokio::test]
async fn the_server_refuses_to_start_on_a_truncated_ledger() {
    let ledger = ledger_with(10).await;
    let mut raw = ledger.db.raw().await;
    raw.drop_triggers().await;
    raw.exec("DELETE FROM entries WHERE seq >= 9")
        .await
        .unwrap();
    let started = trailmark::instance::Server::start(
        ledger.opened.store.clone(),
        ledger.opened.key.clone(),
        &ledger.config(),
        ledger.opened.dir.path(),
        "127.0.0.1:0",
        ledger.opened.clock.clone(),
    )
    .await;
    let err = started.err().expect("must refuse").to_string();
    assert!(err.contains("entries were removed"), "{err}");
    ledger.finish_tampered().await;
}

#[tokio::test]
async fn every_single_byte_change_to_stored_entries_is_detected_and_restoring_it_heals() {
    let ledger = ledger_with(12).await;
    let mut raw = ledger.db.raw().await;
    raw.drop_triggers().await;
    let size = ledger.opened.store.size().await.unwrap() as i64;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..24 {
        let seq = (next() % size as u64) as i64;
        let original = raw.canonical(seq).await;
        let at = (next() % original.len() as u64) as usize;
        let mut changed = original.clone();
        changed[at] ^= 1 + (next() % 255) as u8;
        raw.set_canonical(seq, changed).await.unwrap();
        let finding = broken(ledger.verify().await);
        assert!(
            finding.to_string().starts_with(&format!("seq {seq}:")),
            "byte {at} of seq {seq}: {finding}"
        );
        raw.set_canonical(seq, original).await.unwrap();
        ledger.verify().await.unwrap();
    }
    ledger.finish().await;
}

/// A stopped ledger with state in every projected table: users with
/// certificates, a revoked token, a trusted CA, the signing policy,
/// applied completions, parents and tree nodes.
async fn ledger_with_state() -> TestLedger {
    use crate::integration::{completion, master_data, send, settle};
    use crate::people::{Http, person};
    use serde_json::json;
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (status, t) = http
        .call("POST", "/v1/tokens", Some(&admin.session),
            Some(json!({"principal": "qms", "scopes": {"kinds": ["qms.*"], "permissions": ["entries:append"]}, "reason": "QMS connector"})))
        .await;
    assert_eq!(status, 201, "{t}");
    let path = format!("/v1/tokens/{}/revoke", t["token_id"].as_str().unwrap());
    let (status, r) = http
        .call(
            "POST",
            &path,
            Some(&admin.session),
            Some(json!({"reason": "decommissioned"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    master_data(&http, &ledger.admin_token, 2).await;
    let done = vec![
        crate::integration::event(
            "qms.capa.training_action.v1",
            "capa-a1",
            "2026-01-11T00:00:00Z",
            json!({"capa_id": "CAPA-9", "action_id": "A1", "document_id": "SOP-017", "version": "3",
                   "people": ["E1"], "due_date": "2026-03-31", "verification_required": false}),
        ),
        completion("c1", "E1", "3", "2026-01-12T09:00:00Z", "completed"),
        completion("c2", "E2", "3", "2026-03-01T09:00:00Z", "completed"),
    ];
    assert_eq!(send(&http, &ledger.admin_token, done).await.0, 202);
    settle(&ledger).await;
    server.stop().await;
    ledger
        .verify()
        .await
        .expect("the untouched ledger verifies");
    ledger
}

/// Each state table, the parent index and the tree nodes, edited around
/// the application (triggers dropped): `verify` names the table, the row
/// and the entry that last wrote it. Each edit is undone before the next,
/// and the restored ledger verifies again.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one manipulation per state table on one ledger, each checked and mended in turn
async fn verify_replays_the_state_and_names_every_edited_table() {
    let ledger = ledger_with_state().await;
    let mut raw = ledger.db.raw().await;
    raw.drop_triggers().await;
    raw.exec(if raw.is_pg() {
        "ALTER TABLE users DISABLE TRIGGER USER"
    } else {
        "DROP TRIGGER users_no_delete"
    })
    .await
    .unwrap();
    // (table, the edit, what the failure must name). The edits marked
    // in `REFUSED_IN_REPORTS` change what a compliance report shows, so a
    // report generated on the edited state is refused offline as well.
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "completions",
            "UPDATE completions SET person_id = 'E2' WHERE person_id = 'E1'",
            &["completions", "person_id", "E1"],
        ),
        (
            "completions",
            "UPDATE completions SET completed_at = '2026-01-01T00:00:00.000000Z'",
            &["completions", "completed_at", "last written by entry"],
        ),
        (
            "completions",
            "DELETE FROM completions WHERE person_id = 'E2'",
            &["completions", "missing"],
        ),
        (
            "api_tokens",
            "UPDATE api_tokens SET revoked_at = NULL, revoked_seq = NULL",
            &["api_tokens", "revoked_"],
        ),
        (
            "api_tokens",
            "UPDATE api_tokens SET scopes = '{\"kinds\":[\"*\"],\"permissions\":[\"entries:append\",\"entries:read\",\"events:send\"]}' WHERE principal = 'service:qms'",
            &["api_tokens", "scopes"],
        ),
        (
            "users",
            "UPDATE users SET roles = '[\"qa_reviewer\",\"qa_approver\"]' WHERE user_id = 'rev'",
            &["users", "user_id=rev", "roles"],
        ),
        (
            "users",
            "UPDATE users SET status = 'active', certificate_sha256 = NULL WHERE user_id = 'rev'",
            &["users", "certificate_sha256"],
        ),
        (
            "certificates",
            "UPDATE certificates SET not_after = '2099-01-01T00:00:00.000000Z'",
            &["certificates", "not_after"],
        ),
        (
            "trusted_cas",
            "INSERT INTO trusted_cas (sha256, der, subject, added_seq) VALUES ('ab', x'00', 'CN=Mallory', 3)",
            &["trusted_cas", "written by no entry"],
        ),
        (
            "signing_policy",
            "UPDATE signing_policy SET policy = '{\"meanings\":{},\"rules\":{}}'",
            &["signing_policy", "policy"],
        ),
        (
            "inbox",
            "UPDATE inbox SET status = 'pending', status_seq = NULL WHERE event_id = 'c2'",
            &["inbox", "status"],
        ),
        (
            "people",
            "UPDATE people SET active = 0 WHERE person_id = 'E2'",
            &["people", "person_id=E2", "active"],
        ),
        (
            "people",
            "UPDATE people SET name = 'Mallory' WHERE person_id = 'E2'",
            &["people", "person_id=E2", "name"],
        ),
        (
            "person_functions",
            "UPDATE person_functions SET job_function = 'QA' WHERE person_id = 'E1'",
            &["person_functions", "person_id=E1"],
        ),
        (
            "training_categories",
            "UPDATE training_categories SET window_days = 365",
            &["training_categories", "window_days"],
        ),
        (
            "training_matrix",
            "INSERT INTO training_matrix (document_id, job_function, known_seq, known_at) VALUES ('SOP-017', 'QA', 1, '2026-01-01T00:00:00.000000Z')",
            &["training_matrix", "written by no entry"],
        ),
        (
            "document_versions",
            "UPDATE document_versions SET effective_at = '2026-02-01T00:00:00.000000Z'",
            &["document_versions", "effective_at"],
        ),
        (
            "assignments",
            "UPDATE assignments SET due_at = '2099-01-01T00:00:00.000000Z'",
            &["assignments", "due_at"],
        ),
        (
            "assignments",
            "UPDATE assignments SET status = 'cancelled', cancel_reason = 'forged' WHERE person_id = 'E2'",
            &["assignments", "status"],
        ),
        (
            "capa_actions",
            "UPDATE capa_actions SET due_at = '2099-01-01T00:00:00.000000Z'",
            &["capa_actions", "capa_id=CAPA-9"],
        ),
        (
            "capas",
            "UPDATE capas SET status = 'closed', ready = 1",
            &["capas", "CAPA-9"],
        ),
        (
            "outbox",
            "UPDATE outbox SET status = 'delivered', delivered_at = '2026-01-01T00:00:00.000000Z' WHERE status = 'pending'",
            &["outbox", "status"],
        ),
        (
            "merkle_nodes",
            "UPDATE merkle_nodes SET hash = (SELECT hash FROM merkle_nodes WHERE level = 1 AND idx = 1) WHERE level = 1 AND idx = 0",
            &["merkle_nodes", "level 1, index 0"],
        ),
        (
            "entry_parents",
            "UPDATE entry_parents SET parent_seq = 0 WHERE seq = (SELECT MAX(seq) FROM entry_parents)",
            &["entry_parents", "stored"],
        ),
    ];
    let pg = raw.is_pg();
    let blob = |sql: &str| {
        if pg {
            sql.replace("x'00'", "'\\x00'::bytea")
        } else {
            sql.to_owned()
        }
    };
    for (table, edit, names) in cases {
        raw.exec(&format!("CREATE TABLE saved AS SELECT * FROM {table}"))
            .await
            .unwrap();
        raw.exec(&blob(edit))
            .await
            .unwrap_or_else(|e| panic!("{edit}: {e}"));
        let err = match ledger.verify().await {
            Err(AuditError::State(e)) => e.to_string(),
            other => panic!("{edit}: verify should name the state, got {other:?}"),
        };
        for name in *names {
            assert!(err.contains(name), "{edit}: `{err}` does not name {name}");
        }
        if REFUSED_IN_REPORTS.contains(edit) {
            let bundle = compliance_bundle(&ledger).await;
            let err =
                trailmark::report::verify::check_file(&bundle, &ledger.opened.key.verifier(), None)
                    .expect_err(&format!(
                        "{edit}: verify-report accepted a report of the edited state"
                    ));
            assert_eq!(err.step, 6, "{edit}: {err}");
            if let Some(refusal) = independent_refusal(&ledger, &bundle) {
                assert!(
                    refusal.contains("FAILED"),
                    "{edit}: the independent verifier said {refusal}"
                );
            }
        }
        raw.exec(&format!(
            "DELETE FROM {table}; INSERT INTO {table} SELECT * FROM saved; DROP TABLE saved"
        ))
        .await
        .unwrap();
        ledger
            .verify()
            .await
            .unwrap_or_else(|e| panic!("after undoing `{edit}`: {e}"));
    }
    ledger.finish().await;
}

/// The edits of `verify_replays_the_state_and_names_every_edited_table`
/// that change a compliance report's cells: each makes a row claim what
/// its entries do not say (REPORTS.md §4.1). The others either touch no
/// report, or make one leave a row or a completion out, which citations
/// cannot prove and `verify`'s replay catches.
const REFUSED_IN_REPORTS: &[&str] = &[
    "UPDATE completions SET person_id = 'E2' WHERE person_id = 'E1'",
    "UPDATE completions SET completed_at = '2026-01-01T00:00:00.000000Z'",
    "UPDATE people SET name = 'Mallory' WHERE person_id = 'E2'",
    "INSERT INTO training_matrix (document_id, job_function, known_seq, known_at) VALUES ('SOP-017', 'QA', 1, '2026-01-01T00:00:00.000000Z')",
    "UPDATE document_versions SET effective_at = '2026-02-01T00:00:00.000000Z'",
    "UPDATE assignments SET due_at = '2099-01-01T00:00:00.000000Z'",
    "UPDATE assignments SET status = 'cancelled', cancel_reason = 'forged' WHERE person_id = 'E2'",
];

/// A compliance report of 2026 (JSONL), generated on the stored state as
/// `trailmark report` does.
async fn compliance_bundle(ledger: &TestLedger) -> Vec<u8> {
    use trailmark::report::{Format, ReportType, Reporter, Requester, Scope};
    let out = ledger.dir.path().join("compliance.jsonl");
    let scope = Scope {
        from: Some("2026-01-01".into()),
        to: Some("2027-01-01".into()),
        ..Scope::default()
    }
    .checked(ReportType::Compliance)
    .unwrap();
    let store = ledger.opened.store.clone();
    let origin = ledger.opened.config.origin.clone();
    let path = out.clone();
    ledger
        .opened
        .with_sequencer(|seq| async move {
            let by = Requester {
                actor: trailmark::ledger::Actor::parse("system:cli")?,
                printed_name: "tamper test".into(),
            };
            Reporter::new(store, seq, None, origin)
                .generate(ReportType::Compliance, scope, Format::Jsonl, &by, &path)
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    std::fs::read(&out).unwrap()
}

/// What `tests/independent/check_report.py` says of a bundle, or `None`
/// (with a message) where Python or its `cryptography` package is missing
/// outside CI.
fn independent_refusal(ledger: &TestLedger, bundle: &[u8]) -> Option<String> {
    let path = ledger.dir.path().join("independent.jsonl");
    std::fs::write(&path, bundle).unwrap();
    let key = ledger.dir.path().join("verifier-key.txt");
    std::fs::write(
        &key,
        format!("{}\n", ledger.opened.key.verifier().to_text()),
    )
    .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/independent/check_report.py"
    );
    match std::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .arg("--key")
        .arg(&key)
        .output()
    {
        Ok(out) if out.status.code() == Some(1) => {
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(out) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if std::env::var_os("CI").is_none() && said.contains("No module named") {
                eprintln!("SKIPPED the independent report check: {said}");
                return None;
            }
            panic!("the independent verifier did not refuse the report: {said}");
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is required under CI: {e}"
            );
            eprintln!("SKIPPED the independent report check: python3 does not run: {e}");
            None
        }
    }
}

/// The server's scheduled verification replays the state too: a completion
/// edited under a running server is found within the interval and recorded
/// as `security.verification.failed` naming the table, once, not at every
/// interval.
#[tokio::test]
async fn the_scheduled_verification_records_a_state_edit_once() {
    let ledger = ledger_with_state().await;
    let mut config = ledger.config();
    config.verify.interval_seconds = 1;
    let server = ledger.start_with(&config).await;
    let mut raw = ledger.db.raw().await;
    raw.exec("CREATE TABLE saved AS SELECT * FROM completions")
        .await
        .unwrap();
    raw.exec("UPDATE completions SET person_id = 'E2' WHERE person_id = 'E1'")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let found = loop {
        let found = raw_alerts(&ledger).await;
        if !found.is_empty() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(found.len(), 1, "one alert within the interval: {found:?}");
    let payload = &found[0];
    assert_eq!(payload["requested_by"], "system:schedule");
    assert_eq!(payload["found_in"], "derived state");
    let problem = payload["problem"].as_str().unwrap();
    assert!(
        problem.contains("`completions`") && problem.contains("person_id"),
        "{problem}"
    );
    // Two more scheduled runs find the same problem: still one alert.
    let runs = raw.count("verify_runs").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while raw.count("verify_runs").await < runs + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule ran again within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(raw_alerts(&ledger).await.len(), 1);
    server.stop().await;
    raw.exec(
        "DELETE FROM completions; INSERT INTO completions SELECT * FROM saved; DROP TABLE saved",
    )
    .await
    .unwrap();
    ledger
        .verify()
        .await
        .expect("mended, the ledger with its alert verifies");
    ledger.finish().await;
}

/// The payloads of the `security.verification.failed` entries.
async fn raw_alerts(ledger: &TestLedger) -> Vec<serde_json::Value> {
    let rows: Vec<(Vec<u8>,)> = ledger
        .db
        .raw()
        .await
        .rows(
            "SELECT canonical FROM entries WHERE kind = 'security.verification.failed' ORDER BY seq",
            &[],
        )
        .await;
    rows.into_iter()
        .map(|(c,)| serde_json::from_slice::<serde_json::Value>(&c).unwrap()["payload"].clone())
        .collect()
}
