//! The HTTP API against the real server: appends, reads, proofs, errors.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use trailmark::audit::{self, InclusionProof};
use trailmark::ledger::merkle::leaf_hash;

use crate::harness::{Api, INIT_ENTRIES, TestLedger, record, wait_for_checkpoint};

#[tokio::test]
async fn an_appended_entry_reads_back_with_its_hash_and_a_verifiable_proof() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let (status, receipt) = api.post(&record(1)).await;
    assert_eq!(status, 201, "{receipt}");
    let seq = receipt["seq"].as_u64().unwrap();
    let (status, entry) = api.get(&format!("/v1/entries/{seq}")).await;
    assert_eq!(status, 200);
    let canonical = entry["canonical"].as_str().unwrap();
    assert_eq!(
        leaf_hash(canonical.as_bytes()).to_hex(),
        receipt["hash"].as_str().unwrap()
    );
    assert_eq!(entry["entry"]["actor"], "service:integration");
    assert_eq!(entry["entry"]["payload"]["name"], "Zoë Łukasz 李雷");
    assert_eq!(entry["entry"]["recorded_at"].as_str().unwrap().len(), 27);

    wait_for_checkpoint(&ledger.opened, seq + 1).await;
    let proof: InclusionProof = api
        .http
        .get(format!("{}/v1/proofs/inclusion?seq={seq}", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    audit::check_inclusion_proof(&proof, &ledger.opened.key.verifier()).unwrap();
    let note = api
        .http
        .get(format!("{}/v1/checkpoint", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(note.starts_with("trailmark.test/it\n"), "{note}");
    assert!(note.contains("\n\n\u{2014} trailmark.test/it "));
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn a_thousand_concurrent_appends_get_contiguous_seqs_and_a_valid_chain() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let before = ledger.opened.store.size().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..1000 {
        let api = api.clone();
        tasks.spawn(async move { api.post(&record(n)).await });
    }
    let mut seqs = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (status, receipt) = done.unwrap();
        assert_eq!(status, 201, "{receipt}");
        assert!(
            seqs.insert(receipt["seq"].as_u64().unwrap()),
            "a seq was handed out twice"
        );
    }
    let expected: BTreeSet<u64> = (before..before + 1000).collect();
    assert_eq!(seqs, expected, "seqs must be contiguous");
    server.stop().await;
    let report = ledger.verify().await.unwrap();
    assert_eq!(report.entries, before + 1000);
    assert_eq!(
        report.pending_unattested, 0,
        "stopping the server signs the tail"
    );
    let metrics = reqwest_metrics_after_restart(&ledger).await;
    assert!(
        metrics.contains("trailmark_batch_entries_bucket"),
        "{metrics}"
    );
    ledger.finish().await;
}

async fn reqwest_metrics_after_restart(ledger: &TestLedger) -> String {
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    api.post(&record(5000)).await;
    // The metrics count wrong passwords and locks: not for anonymous callers.
    let anonymous = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&ledger.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.stop().await;
    text
}

/// (what, body text, token, expected status, problem slug, a word the detail must contain)
type BadCase<'a> = (&'a str, String, Option<&'a str>, u16, &'a str, &'a str);

#[tokio::test]
async fn bad_input_gets_a_problem_that_says_what_to_fix_and_appends_nothing() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let (_, first) = api.post(&json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-1", "payload": {"a": 1}, "idempotency_key": "evt-1"})).await;
    let size_before = ledger.opened.store.size().await.unwrap();
    let huge = "x".repeat(300 * 1024);
    let no_hash = "0".repeat(64);
    // (what, body text, token, expected status, expected problem slug, a word the detail must contain)
    let cases: Vec<BadCase> = vec![
        ("malformed JSON", "{\"kind\": ".into(), Some(&ledger.admin_token), 400, "malformed-json", "EOF"),
        ("wrong type", json!({"kind": 5, "subject": "qms:x", "payload": {}}).to_string(), Some(&ledger.admin_token), 400, "malformed-json", "kind"),
        ("payload not an object", json!({"kind": "qms.capa.opened", "subject": "qms:x", "payload": [1]}).to_string(), Some(&ledger.admin_token), 400, "malformed-json", "payload"),
        ("unknown member", json!({"kind": "qms.capa.opened", "subject": "qms:x", "payload": {}, "colour": "red"}).to_string(), Some(&ledger.admin_token), 400, "malformed-json", "colour"),
        ("unknown kind", json!({"kind": "qms.capa.exploded", "subject": "qms:x", "payload": {}}).to_string(), Some(&ledger.admin_token), 422, "invalid-entry", "GET /v1/kinds"),
        ("kind only Trailmark writes", json!({"kind": "ledger.genesis", "subject": "qms:x", "payload": {}}).to_string(), Some(&ledger.admin_token), 403, "kind-not-appendable", "Trailmark's own operations"),
        // Outcomes only Trailmark records, forged by a token whose scope is `*`.
        ("forged delivery outcome", json!({"kind": "integration.handover.delivered", "subject": "lms:assignment/A-1", "payload": {"message_id": "msg_1", "status": 204}}).to_string(), Some(&ledger.admin_token), 403, "kind-not-appendable", "delivery workers"),
        ("forged rules outcome", json!({"kind": "lms.assignment.created", "subject": "lms:assignment/A-1", "payload": {}}).to_string(), Some(&ledger.admin_token), 403, "kind-not-appendable", "integration rules"),
        ("source fact past the rules", json!({"kind": "lms.completion.recorded", "subject": "person:E1", "payload": {"data": {}, "event": {"id": "x", "source": "s", "type": "t"}}}).to_string(), Some(&ledger.admin_token), 403, "kind-not-appendable", "POST /v1/events"),
        ("bad subject", json!({"kind": "qms.capa.opened", "subject": "CAPA 1", "payload": {}}).to_string(), Some(&ledger.admin_token), 422, "invalid-entry", "SCHEME:ID"),
        ("correction without reason", json!({"kind": "ledger.correction", "subject": "qms:x", "payload": {}, "parents": [first["hash"]]}).to_string(), Some(&ledger.admin_token), 422, "invalid-entry", "reason"),
        ("unknown parent", json!({"kind": "ledger.annotation", "subject": "qms:x", "payload": {}, "parents": [no_hash]}).to_string(), Some(&ledger.admin_token), 422, "unknown-parent", "not an entry"),
        ("oversized body", json!({"kind": "qms.capa.opened", "subject": "qms:x", "payload": {"blob": huge}}).to_string(), Some(&ledger.admin_token), 413, "body-too-large", "limit"),
        ("missing token", json!({"kind": "qms.capa.opened", "subject": "qms:x", "payload": {}}).to_string(), None, 401, "unauthorized", "Bearer"),
        ("forged token", json!({"kind": "qms.capa.opened", "subject": "qms:x", "payload": {}}).to_string(), Some("tmk_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 401, "unauthorized", "unknown"),
        ("replayed key, new content", json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-1", "payload": {"a": 2}, "idempotency_key": "evt-1"}).to_string(), Some(&ledger.admin_token), 409, "idempotency-conflict", "different content"),
    ];
    for (what, body, token, status, slug, word) in cases {
        let mut request = api
            .http
            .post(format!("{}/v1/entries", api.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("urn:trailmark:problem:{slug}"),
            "{what}: {problem}"
        );
        assert_eq!(problem["status"], status, "{what}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(word),
            "{what}: detail {detail:?} should mention {word:?}"
        );
        if slug == "idempotency-conflict" {
            assert_eq!(
                problem["original_seq"], first["seq"],
                "{what}: the conflict names the original seq"
            );
        }
    }
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size_before,
        "nothing may be appended by bad input"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn the_same_key_and_content_returns_the_original_entry() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let body = json!({"kind": "qms.capa.opened", "subject": "qms:sop/SOP-017@4", "payload": {"version": 4}, "idempotency_key": "qms-evt-1"});
    let (s1, r1) = api.post(&body).await;
    let response = api
        .http
        .post(format!("{}/v1/entries", api.base))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(s1, 201);
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let r2: Value = response.json().await.unwrap();
    assert_eq!(r1["seq"], r2["seq"]);
    assert_eq!(r1["hash"], r2["hash"]);
    assert_eq!(r2["replayed"], true);
    // Concurrent duplicates in one batch are also applied once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let api = api.clone();
        tasks.spawn(async move { api.post(&json!({"kind": "qms.capa.opened", "subject": "qms:capa/C-9", "payload": {}, "idempotency_key": "dup"})).await });
    }
    let mut seqs = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, v) = r.unwrap();
        assert!(status == 200 || status == 201, "{v}");
        seqs.insert(v["seq"].as_u64().unwrap());
    }
    assert_eq!(
        seqs.len(),
        1,
        "twenty deliveries of one event make one entry"
    );
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn listing_filters_and_pages_with_a_cursor() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    for n in 0..30 {
        let (s, _) = api.post(&record(n)).await;
        assert_eq!(s, 201);
    }
    let (_, page) = api.get("/v1/entries?correlation_id=corr-3&limit=2").await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["entry"]["correlation_id"] == "corr-3")
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = api
        .get(&format!(
            "/v1/entries?correlation_id=corr-3&limit=2&cursor={cursor}"
        ))
        .await;
    let first_of_2 = page2["entries"][0]["seq"].as_u64().unwrap();
    assert!(first_of_2 > entries[1]["seq"].as_u64().unwrap());
    let (_, all) = api
        .get("/v1/entries?correlation_id=corr-3&limit=1000")
        .await;
    assert_eq!(
        all["entries"].as_array().unwrap().len(),
        4,
        "records 3, 10, 17 and 24 carry corr-3"
    );
    assert!(all["next_cursor"].is_null());
    let (_, by_kind) = api.get("/v1/entries?kind=admin.token.created").await;
    assert_eq!(by_kind["entries"].as_array().unwrap().len(), 1);
    let (status, bad) = api.get("/v1/entries?from=yesterday").await;
    assert_eq!(status, 400);
    assert!(bad["detail"].as_str().unwrap().contains("RFC 3339"));
    let (status, _) = api.get("/v1/entries?limit=5000").await;
    assert_eq!(status, 400);
    let (status, _) = api.get("/v1/entries/999999").await;
    assert_eq!(status, 404);
    let reader = reqwest::get(format!("{}/v1/entries", api.base))
        .await
        .unwrap();
    assert_eq!(reader.status().as_u16(), 401, "entry content needs a token");
    server.stop().await;
    ledger.finish().await;
}

/// Free text is a scan, so a page scans at most a window of seqs after its
/// cursor (`Store::text_scan_rows`): pages may be short or empty and still
/// have a `next_cursor`, and walking them finds exactly what one unbounded
/// scan finds. A cursor past every seq is an empty last page, not a panic.
#[tokio::test]
async fn free_text_pages_scan_bounded_windows_and_walk_on_to_the_end() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let mut needles = Vec::new();
    for n in 0..30 {
        let mut body = record(n);
        if n % 11 == 4 {
            body["payload"]["remark"] = json!(format!("Needle-Found-{n}"));
        }
        let (s, r) = api.post(&body).await;
        assert_eq!(s, 201, "{r}");
        if n % 11 == 4 {
            needles.push(r["seq"].as_u64().unwrap());
        }
    }
    let seqs = |page: &Value| -> Vec<u64> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    // This ledger fits in one default window: one page has every match,
    // found regardless of case.
    let (_, all) = api.get("/v1/entries?text=needle-FOUND&limit=1000").await;
    assert_eq!(seqs(&all), needles);
    assert!(all["next_cursor"].is_null());

    // With a window of 4 seqs, the pages are walked window by window.
    ledger.opened.store.set_text_scan_rows(4);
    let size = ledger.opened.store.size().await.unwrap();
    let (mut found, mut cursor, mut pages) = (Vec::new(), None::<String>, 0u64);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/entries?text=needle-found&limit=1000&cursor={c}"),
            None => "/v1/entries?text=needle-found&limit=1000".to_owned(),
        };
        let (s, page) = api.get(&path).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        let start = cursor.as_ref().map_or(0, |c| c.parse::<u64>().unwrap() + 1);
        let got = seqs(&page);
        assert!(
            got.iter().all(|s| (start..start + 4).contains(s)),
            "{got:?} outside the window from {start}"
        );
        if pages == 1 {
            assert!(
                got.is_empty(),
                "the first window holds the init entries only"
            );
            assert_eq!(page["next_cursor"], "3", "an empty page still goes on");
        }
        found.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100, "the walk ends");
    }
    assert_eq!(found, needles, "the walk finds what one scan finds");
    assert_eq!(ledger.opened.store.size().await.unwrap(), size);
    assert_eq!(pages, size.div_ceil(4), "one page per window, to the end");
    // A full page ends at its last row, inside the window.
    let (_, one) = api
        .get(&format!(
            "/v1/entries?text=needle-found&limit=1&cursor={}",
            needles[0] - 1
        ))
        .await;
    assert_eq!(seqs(&one), vec![needles[0]]);
    assert_eq!(one["next_cursor"], needles[0].to_string());

    // A cursor past every seq (and past what the database column holds) is
    // an empty last page, with or without text.
    for path in [
        "/v1/entries?cursor=18446744073709551615",
        "/v1/entries?text=needle&cursor=18446744073709551615",
        "/v1/entries?cursor=9223372036854775807",
    ] {
        let (s, page) = api.get(path).await;
        assert_eq!(s, 200, "{path}: {page}");
        assert!(
            seqs(&page).is_empty() && page["next_cursor"].is_null(),
            "{path}: {page}"
        );
    }
    for path in [
        "/v1/entries/18446744073709551615",
        "/v1/entries/9223372036854775808",
    ] {
        let (s, page) = api.get(path).await;
        assert_eq!(s, 404, "{path}: {page}");
    }
    ledger.opened.store.set_text_scan_rows(0);
    assert!(ledger.opened.store.text_scan_rows() >= 40_000);
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn a_correction_names_the_corrected_entry_which_stays_readable() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    let (_, original) = api.post(&record(1)).await;
    let (status, correction) = api
        .post(&json!({"kind": "ledger.correction", "subject": "person:E0001", "parents": [original["hash"]],
            "reason": "score transcribed from the wrong attempt", "payload": {"field": "score", "old": 0.95, "new": 0.92}}))
        .await;
    assert_eq!(status, 201, "{correction}");
    let (_, view) = api.get(&format!("/v1/entries/{}", original["seq"])).await;
    assert_eq!(view["children"], json!([correction["seq"]]));
    assert_eq!(
        view["entry"]["payload"]["score"], 0.95,
        "the earlier value stays readable"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn consistency_proofs_between_sizes_verify() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let api = Api::new(&server, &ledger.admin_token);
    for n in 0..40 {
        api.post(&record(n)).await;
    }
    wait_for_checkpoint(&ledger.opened, 42).await;
    let (status, proof) = api.get("/v1/proofs/consistency?from=7").await;
    assert_eq!(status, 200, "{proof}");
    let to = proof["to"].as_u64().unwrap();
    let note = proof["checkpoint"].as_str().unwrap();
    let vkey = ledger.opened.key.verifier();
    let new = trailmark::ledger::Checkpoint::open(note, &vkey).unwrap();
    let (_, incl) = api.get("/v1/proofs/inclusion?seq=3&size=7").await;
    let path: Vec<_> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| trailmark::ledger::Hash::parse_hex(h.as_str().unwrap()).unwrap())
        .collect();
    // Root of size 7 from the stored leaves, independently of the server's proof code.
    let leaves: Vec<_> = ledger
        .opened
        .store
        .entries_page(0, 7)
        .await
        .unwrap()
        .iter()
        .map(|e| leaf_hash(&e.canonical))
        .collect();
    let root7 = trailmark::ledger::merkle::root_of(&leaves);
    trailmark::ledger::merkle::verify_consistency(7, to, &root7, &new.root, &path).unwrap();
    assert_eq!(
        incl["tree_size"], 7,
        "an inclusion proof for a caller-chosen size"
    );
    let (status, _) = api.get("/v1/proofs/consistency?from=0").await;
    assert_eq!(status, 400);
    let (status, _) = api
        .get(&format!("/v1/proofs/consistency?from=1&to={}", to + 1000))
        .await;
    assert_eq!(status, 400);
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn a_second_writer_on_the_same_database_cannot_fork_the_chain() {
    let ledger = TestLedger::new().await;
    let a = ledger.start().await;
    let b = ledger.start().await;
    let (api_a, api_b) = (
        Api::new(&a, &ledger.admin_token),
        Api::new(&b, &ledger.admin_token),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200 {
        let api = if n % 2 == 0 {
            api_a.clone()
        } else {
            api_b.clone()
        };
        tasks.spawn(async move { api.post(&record(n)).await });
    }
    let mut seqs = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (status, receipt) = done.unwrap();
        assert_eq!(status, 201, "{receipt}");
        assert!(seqs.insert(receipt["seq"].as_u64().unwrap()));
    }
    assert_eq!(seqs.len(), 200);
    assert_eq!(
        *seqs.last().unwrap() - *seqs.first().unwrap(),
        199,
        "one contiguous chain across both writers"
    );
    a.stop().await;
    b.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing() {
    let ledger = TestLedger::new().await;
    let mut config = ledger.config();
    config.sequencer.queue_max_entries = 1;
    config.sequencer.batch_max_entries = 1;
    let server = ledger.start_with(&config).await;
    let api = Api::new(&server, &ledger.admin_token);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300 {
        let api = api.clone();
        tasks.spawn(async move {
            let r = api
                .http
                .post(format!("{}/v1/entries", api.base))
                .bearer_auth(&api.token)
                .json(&record(n))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        });
    }
    let (mut ok, mut busy) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (201, _) => ok += 1,
            (503, Some(_)) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        busy > 0,
        "300 simultaneous appends into a queue of one must overflow"
    );
    server.stop().await;
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        INIT_ENTRIES + ok,
        "exactly the acknowledged appends were written"
    );
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn operational_endpoints_answer() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let base = server.url();
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let openapi: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    // Every route of the one route table is documented, with its method.
    for (method, path, _) in trailmark::api::ROUTES {
        if *path == "/openapi.json" {
            continue;
        }
        // A catch-all `{*x}` route is documented as the parameter `{x}`.
        let documented = path.replace("{*", "{");
        assert!(
            openapi["paths"][documented.as_str()][method.to_lowercase()].is_object(),
            "OpenAPI lacks {method} {path}"
        );
    }
    let kinds: Value = reqwest::get(format!("{base}/v1/kinds"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        kinds
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "ledger.correction" && k["reason_required"] == true)
    );
    let missing = reqwest::get(format!("{base}/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(&ledger.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "trailmark_appends_total",
        "trailmark_queue_depth",
        "trailmark_commit_seconds",
        "trailmark_batch_entries",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    server.stop().await;
    ledger.finish().await;
}
