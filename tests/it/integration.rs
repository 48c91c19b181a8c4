//! The QMS-LMS integration end to end (docs/INTEGRATION.md): events in over
//! real HTTP, the rules, and hand-overs delivered to real HTTP receivers
//! (`trailmark::sim::Receiver`) that verify Standard Webhooks signatures and
//! count what they got. Runs on SQLite and PostgreSQL like every storage test.

use std::time::Duration;

use serde_json::{Value, json};
use trailmark::config::{Config, TargetConfig};
use trailmark::instance::Server;
use trailmark::integration::webhook::Secret;
use trailmark::sim::{Fault, Receiver};
use trailmark::store::Bind;

use crate::harness::TestLedger;
use crate::people::{Http, kinds_of, person};

pub(crate) fn event(ty: &str, id: &str, time: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "test://qms", "type": ty, "time": time, "data": data})
}

pub(crate) async fn send(http: &Http, token: &str, events: Vec<Value>) -> (u16, Value) {
    let r = http
        .http
        .post(format!("{}/v1/events", http.base))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the rules worker has nothing pending.
/// Waits until `check` holds, polling every 10 ms, for at most `secs`:
/// the wait ends on the event, not on a guess of how long it takes.
pub(crate) async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until no outbox message is pending: every hand-over's delivery
/// has an outcome, so nothing more will reach the receivers.
pub(crate) async fn outbox_settled(ledger: &TestLedger) {
    until(20, "every outbox message to have an outcome", || async {
        count(
            ledger,
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
            &[],
        )
        .await
            == 0
    })
    .await;
}

pub(crate) async fn settle(ledger: &TestLedger) {
    for _ in 0..400 {
        let pending = ledger
            .opened
            .store
            .inbox_status_counts()
            .await
            .unwrap()
            .into_iter()
            .find(|(status, _)| status == "pending")
            .map_or(0, |(_, n)| n);
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the rules worker did not drain the inbox in 10 s");
}

/// Polls `sql` (a COUNT) for up to 10 s until it equals `want`; returns
/// the last value.
pub(crate) async fn count_becomes(ledger: &TestLedger, sql: &'static str, want: i64) -> i64 {
    let mut n = count(ledger, sql, &[]).await;
    for _ in 0..200 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        n = count(ledger, sql, &[]).await;
    }
    n
}

async fn count(ledger: &TestLedger, sql: &'static str, binds: &[Bind]) -> i64 {
    let (n,): (i64,) = ledger.db.raw().await.row(sql, binds).await.unwrap();
    n
}

async fn status_of(ledger: &TestLedger, person: &str, version: &str) -> Option<String> {
    ledger
        .db
        .raw()
        .await
        .row::<(String,)>(
            "SELECT status FROM assignments WHERE person_id = $1 AND document_id = 'SOP-017' AND version = $2 AND origin = 'sop'",
            &[Bind::Text(person.into()), Bind::Text(version.into())],
        )
        .await
        .map(|r| r.0)
}

/// Starts the server with an `lms` and a `qms` target pointing at fresh
/// receivers; `tweak` adjusts the target settings.
pub(crate) async fn with_targets(
    ledger: &TestLedger,
    tweak: impl Fn(&mut TargetConfig),
) -> (Server, Http, Receiver, Receiver) {
    let mut config: Config = ledger.config();
    let mut receivers = Vec::new();
    for name in ["lms", "qms"] {
        let secret = Secret::generate();
        std::fs::write(
            ledger.opened.dir.path().join(format!("{name}.whsec")),
            secret.to_text(),
        )
        .unwrap();
        let receiver = Receiver::start(name, secret).await.unwrap();
        let mut t = TargetConfig {
            url: receiver.url(),
            secret_file: format!("{name}.whsec"),
            backoff_initial_ms: 50,
            backoff_max_ms: 400,
            timeout_ms: 1_000,
            breaker_open_ms: 300,
            ..TargetConfig::default()
        };
        tweak(&mut t);
        config.integration.targets.insert(name.into(), t);
        receivers.push(receiver);
    }
    let server = ledger.start_with(&config).await;
    let http = Http::new(&server);
    let qms = receivers.pop().unwrap();
    let lms = receivers.pop().unwrap();
    (server, http, lms, qms)
}

/// SOP category (30 days), SOP-017 trained by OP, people E1..=En in OP
/// since January, Q1 in QA, and SOP-017 v3 effective on 10 January.
pub(crate) async fn master_data(http: &Http, token: &str, n: usize) {
    let mut events = vec![
        event(
            "qms.training_category.changed.v1",
            "cat-sop",
            "2026-01-01T00:00:00Z",
            json!({"category": "SOP", "completion_window_days": 30}),
        ),
        event(
            "qms.training_matrix.changed.v1",
            "mx-sop017",
            "2026-01-01T00:00:00Z",
            json!({"document_id": "SOP-017", "job_functions": ["OP"]}),
        ),
    ];
    for i in 1..=n {
        events.push(event("hr.person.changed.v1", &format!("p-E{i}"), "2026-01-01T00:00:00Z",
            json!({"person_id": format!("E{i}"), "name": format!("Operator {i}"), "active": true,
                   "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z"}]})));
    }
    events.push(event(
        "hr.person.changed.v1",
        "p-Q1",
        "2026-01-01T00:00:00Z",
        json!({"person_id": "Q1", "name": "QA One", "active": true,
               "job_functions": [{"job_function": "QA", "valid_from": "2026-01-01T00:00:00Z"}]}),
    ));
    events.push(event("qms.document.revision_effective.v2", "rev-017-3", "2026-01-10T00:00:00Z",
        json!({"document_id": "SOP-017", "version": "3", "effective_at": "2026-01-10T00:00:00Z", "category": "SOP"})));
    let (status, body) = send(http, token, events).await;
    assert_eq!(status, 202, "{body}");
}

pub(crate) fn completion(id: &str, person: &str, version: &str, at: &str, outcome: &str) -> Value {
    event(
        "lms.completion.recorded.v1",
        id,
        at,
        json!({"person_id": person, "document_id": "SOP-017",
        "version": version, "completed_at": at, "outcome": outcome}),
    )
}

#[tokio::test]
async fn document_control_a_revision_assigns_every_mapped_person_supersedes_and_retirement_cancels()
{
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    master_data(&http, &token, 5).await;
    settle(&ledger).await;
    for i in 1..=5 {
        assert_eq!(
            status_of(&ledger, &format!("E{i}"), "3").await.as_deref(),
            Some("open")
        );
    }
    assert_eq!(
        status_of(&ledger, "Q1", "3").await,
        None,
        "QA is not mapped to SOP-017"
    );

    let (status, _) = send(&http, &token, vec![event("qms.document.revision_effective.v2", "rev-017-4",
        "2026-03-01T00:00:00Z", json!({"document_id": "SOP-017", "version": "4", "effective_at": "2026-03-01T00:00:00Z"}))]).await;
    assert_eq!(status, 202);
    settle(&ledger).await;
    for i in 1..=5 {
        let p = format!("E{i}");
        assert_eq!(
            status_of(&ledger, &p, "4").await.as_deref(),
            Some("open"),
            "{p} gets v4"
        );
        assert_eq!(
            status_of(&ledger, &p, "3").await.as_deref(),
            Some("cancelled"),
            "{p}'s v3 is superseded"
        );
    }
    // Due = effective + the SOP category's 30 days (carried over from v3).
    let due: Option<(String,)> = ledger
        .db
        .raw()
        .await
        .row(
            "SELECT due_at FROM assignments WHERE person_id = 'E1' AND version = '4'",
            &[],
        )
        .await;
    assert_eq!(due.unwrap().0, "2026-03-31T00:00:00.000000Z");

    let (status, _) = send(
        &http,
        &token,
        vec![event(
            "qms.document.revision_retired.v1",
            "ret-017-4",
            "2026-04-01T00:00:00Z",
            json!({"document_id": "SOP-017", "version": "4", "retired_at": "2026-04-01T00:00:00Z"}),
        )],
    )
    .await;
    assert_eq!(status, 202);
    settle(&ledger).await;
    assert_eq!(
        status_of(&ledger, "E1", "4").await.as_deref(),
        Some("cancelled")
    );
    // 5 + 5 created, 5 + 5 cancelled: 20 messages to the LMS, each once.
    assert!(
        lms.wait_for(20, Duration::from_secs(15)).await,
        "{:?}",
        lms.stats()
    );
    assert_eq!(lms.stats().duplicates, 0);
    assert_eq!(lms.stats().bad_signatures, 0);
    let types: Vec<String> = lms
        .messages()
        .iter()
        .filter_map(|m| m.message_type.clone())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "lms.assignment.cancelled")
            .count(),
        10
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn time_travel_a_job_change_mid_period_and_a_revision_between_two_completions() {
    let ledger = TestLedger::new().await;
    let (server, http, _lms, qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    let admin = person(&ledger, &http, "qa1", "Quinn Auditor", &["qa_reviewer"]).await;
    master_data(&http, &token, 2).await;
    // E1 trains on v3 in February; v4 is effective 1 March; E1 trains on
    // v4 on 20 March. Deviations on 10 and 25 March.
    let (s, b) = send(&http, &token, vec![
        completion("c-1", "E1", "3", "2026-02-01T09:00:00Z", "completed"),
        event("qms.document.revision_effective.v2", "rev-017-4", "2026-03-01T00:00:00Z",
              json!({"document_id": "SOP-017", "version": "4", "effective_at": "2026-03-01T00:00:00Z"})),
        completion("c-2", "E1", "4", "2026-03-20T09:00:00Z", "completed"),
        event("qms.deviation.opened.v1", "dev-1", "2026-03-10T12:00:00Z",
              json!({"deviation_id": "DEV-1", "people": ["E1"], "document_id": "SOP-017", "occurred_at": "2026-03-10T12:00:00Z"})),
        event("qms.deviation.opened.v1", "dev-2", "2026-03-25T12:00:00Z",
              json!({"deviation_id": "DEV-2", "people": ["E1"], "document_id": "SOP-017", "occurred_at": "2026-03-25T12:00:00Z"})),
        // Q1 moves from QA into OP on 15 March.
        event("hr.person.changed.v1", "p-Q1-2", "2026-03-15T00:00:00Z",
              json!({"person_id": "Q1", "name": "QA One", "active": true, "job_functions": [
                  {"job_function": "QA", "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2026-03-15T00:00:00Z"},
                  {"job_function": "OP", "valid_from": "2026-03-15T00:00:00Z"}]})),
    ]).await;
    assert_eq!(s, 202, "{b}");
    settle(&ledger).await;

    let status = |dev: &'static str| {
        let db = &ledger.db;
        async move {
            let (canonical,): (Vec<u8>,) = db.raw().await.row(
                "SELECT canonical FROM entries WHERE kind = 'qms.deviation.training_status' AND subject = $1",
                &[Bind::Text(format!("qms:deviation/{dev}"))]).await.unwrap();
            serde_json::from_slice::<Value>(&canonical).unwrap()["payload"].clone()
        }
    };
    let d1 = status("DEV-1").await;
    assert_eq!(d1["version_effective"], "4", "v4 was effective on 10 March");
    assert_eq!(
        d1["people"][0]["trained"], false,
        "a v3 completion does not count for v4"
    );
    assert_eq!(d1["people"][0]["latest_version_trained"], "3");
    assert_eq!(d1["gaps"], json!(["E1"]));
    let d2 = status("DEV-2").await;
    assert_eq!(d2["people"][0]["trained"], true);
    assert_eq!(
        d2["people"][0]["completed_at"],
        "2026-03-20T09:00:00.000000Z"
    );
    assert!(qms.wait_for(1, Duration::from_secs(10)).await);
    let gap = &qms.messages()[0];
    assert_eq!(gap.message_type.as_deref(), Some("qms.training_gap.found"));
    assert_eq!(gap.body["data"]["person_id"], "E1");

    // The job change created Q1's assignment on the current SOP-017.
    assert_eq!(status_of(&ledger, "Q1", "4").await.as_deref(), Some("open"));
    // Compliance for March: v4's required people include Q1 (joined mid-period).
    let (s, rows) = http
        .call(
            "GET",
            "/v1/compliance?from=2026-03-01&to=2026-04-01",
            Some(&admin.session),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    let of = |p: &str| rows.iter().find(|r| r["person_id"] == p).cloned().unwrap();
    assert_eq!(of("E1")["status"], "on_time");
    assert_eq!(
        of("E2")["status"],
        "overdue",
        "due 31 March, never completed"
    );
    assert_eq!(of("Q1")["job_functions"], json!(["OP"]));
    assert!(of("E1")["completion_entry_hash"].is_string());
    let csv = reqwest::Client::new()
        .get(format!(
            "{}/v1/compliance?from=2026-03-01&to=2026-04-01&format=csv",
            http.base
        ))
        .bearer_auth(&admin.session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("document_id,version,effective_at,person_id"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), rows.len() + 1);
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one CAPA followed from its action to its closure, step by step
async fn capa_closure_is_refused_and_recorded_until_completions_and_verification_are_evidenced() {
    let ledger = TestLedger::new().await;
    let (server, http, _lms, qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    let approver = person(&ledger, &http, "qa2", "Quincy Approver", &["qa_approver"]).await;
    let second = person(&ledger, &http, "qa4", "Quentin Second", &["qa_approver"]).await;
    let reviewer = person(&ledger, &http, "qa5", "Quilla Reviewer", &["qa_reviewer"]).await;
    master_data(&http, &token, 2).await;
    let (s, b) = send(
        &http,
        &token,
        vec![event(
            "qms.capa.training_action.v1",
            "capa-a1",
            "2026-03-02T00:00:00Z",
            json!({"capa_id": "CAPA-7", "action_id": "A1", "document_id": "SOP-017", "version": "3",
               "people": ["E1", "E2"], "due_date": "2026-03-31", "verification_required": true}),
        )],
    )
    .await;
    assert_eq!(s, 202, "{b}");
    settle(&ledger).await;
    let close = || {
        http.call(
            "POST",
            "/v1/capas/CAPA-7/closure",
            Some(&approver.session),
            Some(json!({"reason": "effective"})),
        )
    };
    let (s, refused) = close().await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(refused["details"]["missing"].as_array().unwrap().len(), 2);
    let refusals = count(
        &ledger,
        "SELECT COUNT(*) FROM entries WHERE kind = 'integration.capa.closure_refused'",
        &[],
    )
    .await;
    assert_eq!(refusals, 1, "the refusal is recorded");

    // E1 passes with a trainer's verification (xAPI); E2 only completes.
    let statement = |id: &str, person: &str, verb: &str, instructor: Option<&str>| {
        let mut s = json!({"id": id, "actor": {"account": {"homePage": "https://lms", "name": person}},
            "verb": {"id": format!("http://adlnet.gov/expapi/verbs/{verb}")},
            "object": {"id": "urn:trailmark:document:SOP-017:3"}, "timestamp": "2026-03-05T10:00:00Z"});
        if let Some(i) = instructor {
            s["context"] =
                json!({"instructor": {"account": {"homePage": "https://lms", "name": i}}});
        }
        s
    };
    let r = reqwest::Client::new()
        .post(format!("{}/xapi/statements", http.base))
        .bearer_auth(&token)
        .header("x-experience-api-version", "1.0.3")
        .json(&json!([
            statement(
                "6fa2a7c0-0000-4000-8000-000000000001",
                "E1",
                "passed",
                Some("T9")
            ),
            statement(
                "6fa2a7c0-0000-4000-8000-000000000002",
                "E2",
                "completed",
                None
            )
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    settle(&ledger).await;
    let (_, readiness) = http
        .call(
            "GET",
            "/v1/capas/CAPA-7/closure-readiness",
            Some(&approver.session),
            None,
        )
        .await;
    assert_eq!(readiness["ready"], false, "{readiness}");
    assert_eq!(readiness["missing"][0]["person_id"], "E2");
    assert_eq!(readiness["missing"][0]["missing"], "verification");

    let r = reqwest::Client::new()
        .post(format!("{}/xapi/statements", http.base))
        .bearer_auth(&token)
        .json(&statement(
            "6fa2a7c0-0000-4000-8000-000000000003",
            "E2",
            "passed",
            Some("T9"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    settle(&ledger).await;
    let (_, readiness) = http
        .call(
            "GET",
            "/v1/capas/CAPA-7/closure-readiness",
            Some(&approver.session),
            None,
        )
        .await;
    assert_eq!(readiness["ready"], true, "{readiness}");
    let (s, closed) = close().await;
    assert_eq!(s, 201, "{closed}");
    let (s, _) = close().await;
    assert_eq!(s, 409, "closed once");
    // QA signs the closure.
    // Reviewed, then approved by another approver: the one who recorded it
    // may not approve it (the signing policy of SIGNATURES.md §2).
    let (s, sig) = http
        .sign(
            &reviewer.session,
            closed["hash"].as_str().unwrap(),
            "reviewed",
            Some("qa5"),
            &reviewer.password,
        )
        .await;
    assert_eq!(s, 201, "{sig}");
    let (s, sig) = http
        .sign(
            &second.session,
            closed["hash"].as_str().unwrap(),
            "approved",
            Some("qa4"),
            &second.password,
        )
        .await;
    assert_eq!(s, 201, "{sig}");
    // The QMS got the evidence of both, readiness, and the closure.
    assert!(
        qms.wait_for(4, Duration::from_secs(10)).await,
        "{:?}",
        qms.messages()
    );
    let types: Vec<String> = qms
        .messages()
        .iter()
        .filter_map(|m| m.message_type.clone())
        .collect();
    // E1's verified pass, E2's completion, then E2's verification.
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "qms.completion.evidence")
            .count(),
        3,
        "{types:?}"
    );
    assert!(types.contains(&"qms.capa.closure_readiness.changed".to_owned()));
    assert!(types.contains(&"qms.capa.closed".to_owned()));
    // Lineage of the CAPA reaches the completions and the deliveries.
    let (s, lineage) = http
        .call(
            "GET",
            "/v1/lineage/qms:capa/CAPA-7",
            Some(&approver.session),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = lineage["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "qms.capa.training_action",
        "lms.assignment.created",
        "lms.completion.recorded",
        "integration.assignment.completed",
        "qms.capa.closed",
        "signature.applied",
    ] {
        assert!(kinds.contains(&k), "lineage lacks {k}: {kinds:?}");
    }
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn duplicate_reordered_late_and_invalid_events_apply_once_or_not_at_all() {
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    // A completion before its person and document exist: parked.
    let early = completion("c-early", "E1", "3", "2026-02-01T00:00:00Z", "completed");
    let (s, _) = send(&http, &token, vec![early.clone()]).await;
    assert_eq!(s, 202);
    settle(&ledger).await;
    let parked = count(
        &ledger,
        "SELECT COUNT(*) FROM inbox WHERE status = 'parked'",
        &[],
    )
    .await;
    assert_eq!(parked, 1);
    // Redelivery: acknowledged, not applied twice.
    let (s, dup) = send(&http, &token, vec![early.clone()]).await;
    assert_eq!(s, 200, "{dup}");
    assert_eq!(dup["events"][0]["duplicate"], true);
    // Same id, other content: refused.
    let mut other = early.clone();
    other["data"]["version"] = json!("9");
    let (s, conflict) = send(&http, &token, vec![other]).await;
    assert_eq!(s, 409, "{conflict}");
    // A batch with one bad event is refused whole, naming the member.
    let bad = event(
        "qms.document.revision_effective.v2",
        "rev-bad",
        "2026-01-01T00:00:00Z",
        json!({"document_id": "SOP-017", "version": "5", "effective_at": "next week"}),
    );
    let entries_before = count(&ledger, "SELECT COUNT(*) FROM entries", &[]).await;
    let (s, p) = send(
        &http,
        &token,
        vec![
            completion("c-ok", "E2", "3", "2026-02-01T00:00:00Z", "completed"),
            bad,
        ],
    )
    .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["field"], "events[1].data.effective_at");
    assert_eq!(
        count(&ledger, "SELECT COUNT(*) FROM entries", &[]).await,
        entries_before,
        "nothing recorded"
    );
    // Unknown version: refused with the accepted ones.
    let (s, p) = send(
        &http,
        &token,
        vec![event(
            "qms.document.revision_effective.v9",
            "x",
            "2026-01-01T00:00:00Z",
            json!({}),
        )],
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        p["detail"].as_str().unwrap().contains("accepted: v1, v2"),
        "{p}"
    );
    // Binary mode, v1 (upcast), and the revision before the people: the
    // master data arrives in reverse order and everything converges.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/events", http.base))
        .bearer_auth(&token)
        .header("ce-specversion", "1.0")
        .header("ce-id", "rev-017-3-binary")
        .header("ce-source", "test://qms")
        .header("ce-type", "qms.document.revision_effective.v1")
        .header("content-type", "application/json")
        .body(
            json!({"document_id": "SOP-017", "revision": "3", "effective_date": "2026-01-10"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    master_data(&http, &token, 2).await;
    settle(&ledger).await;
    // The early completion is applied once its master data arrived.
    let parked = count_becomes(
        &ledger,
        "SELECT COUNT(*) FROM inbox WHERE status = 'parked'",
        0,
    )
    .await;
    assert_eq!(parked, 0);
    settle(&ledger).await;
    assert_eq!(
        status_of(&ledger, "E1", "3").await.as_deref(),
        Some("completed")
    );
    assert_eq!(status_of(&ledger, "E2", "3").await.as_deref(), Some("open"));
    // One assignment per person and version, whatever the order.
    assert_eq!(
        count(&ledger, "SELECT COUNT(*) FROM assignments", &[]).await,
        2
    );
    assert!(lms.wait_for(2, Duration::from_secs(10)).await);
    outbox_settled(&ledger).await;
    assert_eq!(lms.stats().accepted, 2);
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one target taken through each fault in turn, then replayed
async fn delivery_faults_retry_break_dead_letter_and_replay_without_loss_or_double_effect() {
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |t| {
        t.max_attempts = 6;
        t.breaker_failures = 3;
        t.timeout_ms = 300;
    })
    .await;
    let token = ledger.admin_token.clone();
    let admin = person(&ledger, &http, "it1", "Ivy Admin", &["administrator"]).await;
    // 500s then slow then hanging: retried until delivered.
    lms.fail_next(2, 500);
    master_data(&http, &token, 3).await;
    settle(&ledger).await;
    assert!(
        lms.wait_for(3, Duration::from_secs(15)).await,
        "{:?}",
        lms.stats()
    );
    lms.set_fault(Fault::Hang);
    let faults_before = lms.stats().faults;
    let (s, _) = send(&http, &token, vec![event("qms.document.revision_effective.v2", "rev-4", "2026-03-01T00:00:00Z",
        json!({"document_id": "SOP-017", "version": "4", "effective_at": "2026-03-01T00:00:00Z"}))]).await;
    assert_eq!(s, 202);
    until(10, "the hanging LMS to be called", || async {
        lms.stats().faults > faults_before
    })
    .await;
    // Down: connection refused; the breaker opens.
    lms.set_fault(Fault::None);
    lms.stop().await;
    until(20, "a delivery error counted for the LMS", || async {
        let metrics = reqwest::Client::new()
            .get(format!("{}/metrics", http.base))
            .bearer_auth(&ledger.admin_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.contains("trailmark_delivery_errors_total{target=\"lms\"}")
    })
    .await;
    lms.resume().await.unwrap();
    // 3 v4 assignments + 3 v3 cancellations.
    assert!(
        lms.wait_for(9, Duration::from_secs(20)).await,
        "{:?}",
        lms.stats()
    );
    let failed = count(
        &ledger,
        "SELECT COUNT(*) FROM entries WHERE kind = 'integration.handover.failed'",
        &[],
    )
    .await;
    assert!(failed >= 2, "every failed attempt is an entry ({failed})");

    // Permanently failing: dead-lettered after 4 attempts, then replayed.
    lms.set_fault(Fault::Status(503));
    let (s, _) = send(
        &http,
        &token,
        vec![event(
            "hr.person.changed.v1",
            "p-E9",
            "2026-03-02T00:00:00Z",
            json!({"person_id": "E9", "name": "Nine", "active": true,
               "job_functions": [{"job_function": "OP", "valid_from": "2026-03-02T00:00:00Z"}]}),
        )],
    )
    .await;
    assert_eq!(s, 202);
    let mut dead = Value::Null;
    for _ in 0..200 {
        let (_, d) = http
            .call("GET", "/v1/deadletters", Some(&admin.session), None)
            .await;
        if d.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m["last_error"] == "HTTP 503 Service Unavailable")
        }) {
            dead = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e9 = dead
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|m| m["last_error"] == "HTTP 503 Service Unavailable")
        })
        .cloned();
    assert_eq!(
        e9.as_ref().map(|m| m["attempts"].clone()),
        Some(json!(6)),
        "{dead}"
    );
    lms.set_fault(Fault::None);
    let id = e9.unwrap()["id"].as_str().unwrap().to_owned();
    let (s, r) = http
        .call(
            "POST",
            &format!("/v1/deadletters/{id}/replay"),
            Some(&admin.session),
            Some(json!({"reason": ""})),
        )
        .await;
    assert_eq!(s, 400, "a replay needs a reason: {r}");
    // A replay is a person's decision, re-authenticated with both
    // components: not without them, not with a wrong password, and not by
    // an API token. None of these replays anything.
    for (bearer, body, status) in [
        (admin.session.as_str(), json!({"reason": "r"}), 422),
        (
            admin.session.as_str(),
            json!({"reason": "r", "user_id": "it1", "password": "wrong-Qz-1"}),
            401,
        ),
        (
            ledger.admin_token.as_str(),
            json!({"reason": "r", "user_id": "it1", "password": admin.password}),
            403,
        ),
    ] {
        let (s, r) = http
            .call(
                "POST",
                &format!("/v1/deadletters/{id}/replay"),
                Some(bearer),
                Some(body),
            )
            .await;
        assert_eq!(s, status, "{r}");
    }
    assert!(
        kinds_of(&ledger, "integration.handover.replayed")
            .await
            .is_empty()
    );
    // Replay every dead letter (the outage may have exhausted others too).
    for m in dead.as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let (s, r) = http
            .call(
                "POST",
                &format!("/v1/deadletters/{id}/replay"),
                Some(&admin.session),
                Some(json!({"reason": "LMS maintenance finished", "user_id": "it1", "password": admin.password})),
            )
            .await;
        assert_eq!(s, 202, "{r}");
    }
    assert!(
        lms.wait_for(10, Duration::from_secs(10)).await,
        "{:?}",
        lms.stats()
    );
    // A wrong secret is a failure too: the receiver refuses the signature.
    assert_eq!(lms.stats().bad_signatures, 0);
    // No message delivered twice in effect.
    let unique: std::collections::BTreeSet<String> =
        lms.messages().iter().map(|m| m.id.clone()).collect();
    assert_eq!(unique.len(), lms.messages().len());
    // Every message ends delivered (a message the receiver took while
    // Trailmark timed out is sent again, answered as a duplicate, and
    // recorded delivered); late dead letters are replayed too.
    let mut delivered = 0;
    for _ in 0..200 {
        delivered = count(
            &ledger,
            "SELECT COUNT(*) FROM outbox WHERE target = 'lms' AND status = 'delivered'",
            &[],
        )
        .await;
        if delivered == 10 {
            break;
        }
        let (_, d) = http
            .call("GET", "/v1/deadletters", Some(&admin.session), None)
            .await;
        for m in d.as_array().into_iter().flatten() {
            let id = m["id"].as_str().unwrap();
            http.call(
                "POST",
                &format!("/v1/deadletters/{id}/replay"),
                Some(&admin.session),
                Some(json!({"reason": "retry after outage", "user_id": "it1", "password": admin.password})),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, String, i64, Option<String>, String)> = ledger.db.raw().await.rows(
        "SELECT id, status, attempts, last_error, next_attempt_at FROM outbox WHERE target = 'lms' ORDER BY created_seq", &[]).await;
    assert_eq!(
        delivered, 10,
        "every message is delivered and recorded once: {rows:?}"
    );
    assert_eq!(
        count(
            &ledger,
            "SELECT COUNT(*) FROM outbox WHERE target = 'lms'",
            &[]
        )
        .await,
        10
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn a_wrong_signature_secret_is_refused_by_the_target_and_dead_lettered() {
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |t| t.max_attempts = 2).await;
    // Replace the secret Trailmark signs with: the receiver keeps its own.
    server.stop().await;
    std::fs::write(
        ledger.opened.dir.path().join("lms.whsec"),
        Secret::generate().to_text(),
    )
    .unwrap();
    let mut config = ledger.config();
    let mut t = TargetConfig {
        url: lms.url(),
        secret_file: "lms.whsec".into(),
        max_attempts: 2,
        backoff_initial_ms: 20,
        ..TargetConfig::default()
    };
    t.breaker_failures = 10;
    config.integration.targets.insert("lms".into(), t);
    let server = ledger.start_with(&config).await;
    let http2 = Http::new(&server);
    let _ = http;
    master_data(&http2, &ledger.admin_token, 1).await;
    let dead = count_becomes(
        &ledger,
        "SELECT COUNT(*) FROM outbox WHERE status = 'dead'",
        1,
    )
    .await;
    assert_eq!(dead, 1);
    assert!(lms.stats().bad_signatures >= 2);
    assert_eq!(lms.stats().accepted, 0);
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_delivery_loses_nothing() {
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |_| {}).await;
    lms.stop().await;
    master_data(&http, &ledger.admin_token, 20).await;
    settle(&ledger).await;
    until(
        20,
        "a delivery attempt to fail while the LMS is down",
        || async {
            count(
                &ledger,
                "SELECT COUNT(*) FROM entries WHERE kind = 'integration.handover.failed'",
                &[],
            )
            .await
                > 0
        },
    )
    .await;
    server.stop().await;
    let pending = count(
        &ledger,
        "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
        &[],
    )
    .await;
    assert_eq!(pending, 20, "nothing delivered while the LMS was down");
    lms.resume().await.unwrap();
    let mut config = ledger.config();
    for name in ["lms", "qms"] {
        config.integration.targets.insert(
            name.into(),
            TargetConfig {
                url: lms.url(),
                secret_file: format!("{name}.whsec"),
                backoff_initial_ms: 20,
                backoff_max_ms: 100,
                ..TargetConfig::default()
            },
        );
    }
    let server = ledger.start_with(&config).await;
    assert!(
        lms.wait_for(20, Duration::from_secs(20)).await,
        "{:?}",
        lms.stats()
    );
    outbox_settled(&ledger).await;
    assert_eq!(lms.stats().accepted, 20);
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn schemas_are_published_and_only_allowed_senders_may_send() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let (s, list) = http.call("GET", "/v1/schemas", None, None).await;
    assert_eq!(s, 200);
    assert!(list.as_array().unwrap().len() >= 10);
    let (s, schema) = http
        .call(
            "GET",
            "/v1/schemas/qms.document.revision_effective/v2",
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(schema["additionalProperties"], false);
    let (s, _) = http
        .call(
            "GET",
            "/v1/schemas/qms.document.revision_effective/v7",
            None,
            None,
        )
        .await;
    assert_eq!(s, 404);
    // The docs list every type.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/EVENTS.md")).unwrap();
    for t in trailmark::integration::events::TYPES {
        assert!(
            doc.contains(&format!("`{}.v{}`", t.name, t.current)),
            "docs/EVENTS.md lacks {}",
            t.name
        );
    }
    // A person may not send events; an lms-only sender may not send QMS events.
    let reviewer = person(&ledger, &http, "qa3", "Quinta Reviewer", &["qa_reviewer"]).await;
    let (s, _) = http
        .call(
            "POST",
            "/v1/events",
            Some(&reviewer.session),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 403);
    let lms_token = ledger
        .opened
        .issue_token("lms", "test: an LMS sender")
        .await
        .unwrap();
    let (s, p) = send(&http, &lms_token, vec![event("qms.deviation.opened.v1", "d", "2026-01-01T00:00:00Z",
        json!({"deviation_id": "D", "people": ["E1"], "document_id": "SOP-017", "occurred_at": "2026-01-01T00:00:00Z"}))]).await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = send(
        &http,
        &lms_token,
        vec![completion(
            "c",
            "E1",
            "3",
            "2026-01-01T00:00:00Z",
            "completed",
        )],
    )
    .await;
    assert_eq!(s, 202, "{p}");
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn a_full_batch_fits_its_own_body_limit_and_an_oversized_body_is_a_problem() {
    let ledger = TestLedger::new().await;
    let (server, http, _lms, _qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    // 1,000 events of about 330 bytes: over the 256 KiB general limit,
    // within the 4 MiB batch limit.
    let batch: Vec<Value> = (0..trailmark::integration::events::BATCH_MAX)
        .map(|i| {
            event("hr.person.changed.v1", &format!("bulk-{i:04}"), "2026-01-01T00:00:00Z",
                json!({"person_id": format!("B{i:04}"), "name": format!("Bulk-loaded operator number {i:04} of the night shift"), "active": true,
                       "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z"}]}))
        })
        .collect();
    let size = Value::Array(batch.clone()).to_string().len();
    assert!(size > 256 * 1024, "the batch is {size} bytes");
    let (s, body) = send(&http, &token, batch).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(
        body["events"].as_array().map(Vec::len),
        Some(1_000),
        "{body}"
    );

    // Over the batch limit: a problem naming the setting, nothing recorded.
    let before = count(&ledger, "SELECT COUNT(*) FROM inbox", &[]).await;
    let huge = format!("[{}]", "0".repeat(5 * 1024 * 1024));
    let r = http
        .http
        .post(format!("{}/v1/events", http.base))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents-batch+json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_batch_bytes"),
        "{problem}"
    );
    assert_eq!(
        count(&ledger, "SELECT COUNT(*) FROM inbox", &[]).await,
        before
    );
    // Elsewhere the general limit holds, also as problem+json.
    let r = http
        .http
        .post(format!("{}/v1/entries", http.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"x\":\"{}\"}}", "a".repeat(300 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes"),
        "{problem}"
    );
    server.stop().await;
    ledger.finish().await;
}

/// A mixed workload with conflicting and independent events. Sent as one
/// batch, the rules worker pipelines it (docs/INTEGRATION.md §3.6); sent one
/// event at a time, each waits for the previous. Both must end in the same
/// state.
fn mixed_workload() -> Vec<Value> {
    let t = |d: u32| format!("2026-02-{d:02}T09:00:00Z");
    let mut events = vec![
        event(
            "qms.training_category.changed.v1",
            "w-cat",
            &t(1),
            json!({"category": "SOP", "completion_window_days": 14}),
        ),
        event(
            "qms.training_matrix.changed.v1",
            "w-mx-a",
            &t(1),
            json!({"document_id": "SOP-A", "job_functions": ["OP"]}),
        ),
        event(
            "qms.training_matrix.changed.v1",
            "w-mx-b",
            &t(1),
            json!({"document_id": "SOP-B", "job_functions": ["OP", "QC"]}),
        ),
    ];
    for i in 1..=8 {
        let f = if i <= 6 { "OP" } else { "QC" };
        events.push(event(
            "hr.person.changed.v1",
            &format!("w-p{i}"),
            &t(1),
            json!({"person_id": format!("W{i}"), "name": format!("W {i}"), "active": true,
            "job_functions": [{"job_function": f, "valid_from": t(1)}]}),
        ));
    }
    let rev = |id: &str, doc: &str, v: &str, d: u32| {
        event(
            "qms.document.revision_effective.v2",
            id,
            &t(d),
            json!({"document_id": doc, "version": v, "effective_at": t(d), "category": "SOP"}),
        )
    };
    let done = |id: &str, p: u32, doc: &str, v: &str, d: u32| {
        event(
            "lms.completion.recorded.v1",
            id,
            &t(d),
            json!({"person_id": format!("W{p}"), "document_id": doc, "version": v, "completed_at": t(d), "outcome": "completed"}),
        )
    };
    let dev = |id: &str, people: &[u32], doc: &str, d: u32| {
        let people: Vec<String> = people.iter().map(|p| format!("W{p}")).collect();
        event(
            "qms.deviation.opened.v1",
            id,
            &t(d),
            json!({"deviation_id": id, "people": people, "document_id": doc, "occurred_at": t(d)}),
        )
    };
    events.extend([
        rev("w-a1", "SOP-A", "1", 2),
        rev("w-b1", "SOP-B", "1", 2),
        done("w-c1", 1, "SOP-A", "1", 3),
        done("w-c2", 2, "SOP-A", "1", 3),
        done("w-c3", 7, "SOP-B", "1", 3),
        done("w-c4", 1, "SOP-B", "1", 4),
        dev("DEV-W1", &[1, 2, 3], "SOP-A", 5),
        done("w-c5", 3, "SOP-A", "1", 6),
        // W4 moves from OP to QC: no SOP-A any more, SOP-B still.
        event("hr.person.changed.v1", "w-p4-move", &t(6), json!({"person_id": "W4", "name": "W 4", "active": true,
            "job_functions": [{"job_function": "OP", "valid_from": t(1), "valid_to": t(6)}, {"job_function": "QC", "valid_from": t(6)}]})),
        rev("w-a2", "SOP-A", "2", 7),
        done("w-c6", 1, "SOP-A", "2", 8),
        done("w-c7", 2, "SOP-A", "1", 8),
        dev("DEV-W2", &[1, 2], "SOP-A", 9),
        event("qms.document.revision_retired.v1", "w-b1-ret", &t(10), json!({"document_id": "SOP-B", "version": "1", "retired_at": t(10)})),
        done("w-c8", 8, "SOP-B", "1", 11),
        event("hr.person.changed.v1", "w-p5-off", &t(11), json!({"person_id": "W5", "name": "W 5", "active": false,
            "job_functions": [{"job_function": "OP", "valid_from": t(1)}]})),
        done("w-c9", 6, "SOP-A", "2", 12),
        dev("DEV-W3", &[6, 5], "SOP-A", 13),
    ]);
    events
}

/// The projections a workload leaves, without recording times or IDs that
/// differ between runs.
async fn projection(ledger: &TestLedger) -> Vec<String> {
    let mut raw = ledger.db.raw().await;
    let mut out = Vec::new();
    type AssignmentRow = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        i64,
    );
    let rows: Vec<AssignmentRow> = raw
        .rows(
            "SELECT assignment_id, person_id, document_id, version, origin, status, completed_at, verified FROM assignments ORDER BY assignment_id",
            &[],
        )
        .await;
    out.extend(rows.into_iter().map(|r| format!("{r:?}")));
    let inbox: Vec<(String, String)> = raw
        .rows("SELECT event_id, status FROM inbox ORDER BY event_id", &[])
        .await;
    out.extend(inbox.into_iter().map(|r| format!("{r:?}")));
    let outbox: Vec<(String, String, String)> = raw
        .rows("SELECT target, message_type, subject FROM outbox ORDER BY target, message_type, subject, body", &[])
        .await;
    out.extend(outbox.into_iter().map(|r| format!("{r:?}")));
    let findings: Vec<(Vec<u8>,)> = raw
        .rows("SELECT canonical FROM entries WHERE kind = 'qms.deviation.training_status' ORDER BY subject", &[])
        .await;
    for (c,) in findings {
        let mut v: Value = serde_json::from_slice(&c).unwrap();
        for p in v["payload"]["people"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("completion_seq"); // differs by run
        }
        out.push(v["payload"].to_string());
    }
    out
}

#[tokio::test]
async fn pipelined_rules_end_in_the_state_of_one_event_at_a_time() {
    let together = TestLedger::new().await;
    let (server, http, _lms, _qms) = with_targets(&together, |_| {}).await;
    let (s, b) = send(&http, &together.admin_token, mixed_workload()).await;
    assert_eq!(s, 202, "{b}");
    settle(&together).await;
    let pipelined = projection(&together).await;
    server.stop().await;

    let apart = TestLedger::new().await;
    let (server, http, _lms, _qms) = with_targets(&apart, |_| {}).await;
    for e in mixed_workload() {
        let (s, b) = send(&http, &apart.admin_token, vec![e]).await;
        assert_eq!(s, 202, "{b}");
        settle(&apart).await;
    }
    let serial = projection(&apart).await;
    server.stop().await;

    assert!(
        pipelined.iter().any(|r| r.contains("cancelled")) && pipelined.len() > 40,
        "the workload exercises supersession, retirement and leaving: {pipelined:#?}"
    );
    assert_eq!(pipelined, serial);
    together.finish().await;
    apart.finish().await;
}

/// A revision signed in the QMS: the signatures travel with every hand-over
/// derived from it, with the event they were recorded on, so the LMS can
/// check them against the signed content without asking Trailmark.
#[tokio::test]
async fn source_signatures_travel_with_the_hand_overs_derived_from_the_signed_event() {
    use base64::Engine as _;
    use ed25519_dalek::{Signer as _, Verifier as _};
    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    master_data(&http, &token, 2).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let content = b"SOP-017 v4 approved for release";
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let signature = json!({"system": "qms", "signer": "jdoe", "printed_name": "Jane Doe", "meaning": "Approval",
        "signed_at": "2026-02-01T10:00:00Z", "method": "user ID + password", "algorithm": "ed25519",
        "signature": b64(&key.sign(content).to_bytes()), "signed_content": b64(content),
        "public_key": b64(key.verifying_key().as_bytes())});
    let revision = event(
        "qms.document.revision_effective.v2",
        "rev-017-4",
        "2026-02-01T00:00:00Z",
        json!({"document_id": "SOP-017", "version": "4", "effective_at": "2026-02-01T00:00:00Z",
               "category": "SOP", "source_signatures": [signature]}),
    );
    let (status, body) = send(&http, &token, vec![revision]).await;
    assert_eq!(status, 202, "{body}");
    settle(&ledger).await;
    // v3's two assignments and v4's two: only v4's derive from the signed event.
    assert!(
        lms.wait_for(4, Duration::from_secs(10)).await,
        "{:?}",
        lms.stats()
    );
    let v4: Vec<_> = lms
        .messages()
        .into_iter()
        .filter(|m| m.body["data"]["version"] == "4")
        .collect();
    assert!(!v4.is_empty());
    for m in &v4 {
        let carried = &m.body["data"]["source_signatures"];
        assert_eq!(carried["event"]["id"], "rev-017-4", "{}", m.body);
        let s = &carried["signatures"][0];
        assert_eq!(s["signer"], "jdoe");
        let decode = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        let public =
            ed25519_dalek::VerifyingKey::from_bytes(&decode(&s["public_key"]).try_into().unwrap())
                .unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&decode(&s["signature"])).unwrap();
        public
            .verify(&decode(&s["signed_content"]), &sig)
            .expect("the LMS can check the QMS signature it received");
    }
    let v3_carries = lms
        .messages()
        .iter()
        .filter(|m| m.body["data"]["version"] == "3")
        .any(|m| !m.body["data"]["source_signatures"].is_null());
    assert!(
        !v3_carries,
        "hand-overs of an unsigned event carry no signatures"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

/// A completion that arrives before the assignment it satisfies completes
/// the assignment when it is created: the assignment's state, the message
/// to the LMS and the compliance query agree. A CAPA's retraining is not
/// satisfied by training done before the action.
#[tokio::test]
async fn a_completion_before_its_assignment_completes_it_but_not_a_later_capa_retraining() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let token = ledger.admin_token.clone();
    master_data(&http, &token, 2).await;
    let person = |id: &str, function: &str, from: &str| {
        event(
            "hr.person.changed.v1",
            id,
            from,
            json!({"person_id": "E3", "name": "Operator 3", "active": true,
                   "job_functions": [{"job_function": function, "valid_from": from}]}),
        )
    };
    // E3 is known (in QA) and trains on SOP-017 v3 before being required to.
    let (s, b) = send(
        &http,
        &token,
        vec![
            person("p-E3-qa", "QA", "2026-01-01T00:00:00Z"),
            completion("c-E3", "E3", "3", "2026-01-20T09:00:00Z", "completed"),
        ],
    )
    .await;
    assert_eq!(s, 202, "{b}");
    settle(&ledger).await;
    // Then moves to OP, which the matrix maps to SOP-017.
    let (s, b) = send(
        &http,
        &token,
        vec![person("p-E3-op", "OP", "2026-01-25T00:00:00Z")],
    )
    .await;
    assert_eq!(s, 202, "{b}");
    settle(&ledger).await;
    assert_eq!(
        status_of(&ledger, "E3", "3").await.as_deref(),
        Some("completed")
    );
    let (created,): (Vec<u8>,) = ledger
        .db
        .raw()
        .await
        .row(
            "SELECT e.canonical FROM entries e JOIN assignments a ON a.created_seq = e.seq WHERE a.person_id = 'E3' AND a.origin = 'sop'",
            &[],
        )
        .await
        .unwrap();
    let created: Value = serde_json::from_slice(&created).unwrap();
    assert_eq!(
        created["payload"]["data"]["completed_by"]["completed_at"], "2026-01-20T09:00:00.000000Z",
        "the LMS is told the assignment is already satisfied"
    );
    let (s, rows) = http
        .call(
            "GET",
            "/v1/compliance?from=2026-01-01&to=2026-02-01",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rows}");
    let e3 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["person_id"] == "E3")
        .cloned()
        .unwrap();
    assert_eq!(e3["status"], "on_time", "{e3}");
    assert_eq!(e3["completed_at"], "2026-01-20T09:00:00.000000Z");
    // A CAPA retraining on the same version, ordered afterwards, stays open.
    let capa = event(
        "qms.capa.training_action.v1",
        "capa-e3",
        "2026-02-01T00:00:00Z",
        json!({"capa_id": "CAPA-E3", "action_id": "A1", "document_id": "SOP-017", "version": "3",
               "people": ["E3"], "due_date": "2026-02-28", "verification_required": false}),
    );
    assert_eq!(send(&http, &token, vec![capa]).await.0, 202);
    settle(&ledger).await;
    let capa_status = count(
        &ledger,
        "SELECT COUNT(*) FROM assignments WHERE person_id = 'E3' AND capa_id = 'CAPA-E3' AND status = 'open'",
        &[],
    )
    .await;
    assert_eq!(
        capa_status, 1,
        "training before the CAPA does not evidence it"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

/// Supersession and job changes under the compliance rules: an assignment
/// already past due when a newer version supersedes it stays overdue in
/// compliance (with when it ended), one superseded before its due date is
/// cancelled, and a person who moves to a function that does not need the
/// document has their open SOP assignment ended with the reason.
#[tokio::test]
async fn overdue_survives_supersession_and_a_job_change_ends_the_old_functions_training() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let token = ledger.admin_token.clone();
    // v3 effective 10 January, due 9 February (30-day window); nobody trains.
    master_data(&http, &token, 2).await;
    let revision = |v: &str, at: &str| {
        event(
            "qms.document.revision_effective.v2",
            &format!("rev-017-{v}"),
            at,
            json!({"document_id": "SOP-017", "version": v, "effective_at": at, "category": "SOP"}),
        )
    };
    // v4 on 1 March supersedes v3 a month past due; v5 on 5 March
    // supersedes v4 before its due date (31 March).
    for (v, at) in [("4", "2026-03-01T00:00:00Z"), ("5", "2026-03-05T00:00:00Z")] {
        assert_eq!(send(&http, &token, vec![revision(v, at)]).await.0, 202);
        settle(&ledger).await;
    }
    assert_eq!(
        status_of(&ledger, "E1", "3").await.as_deref(),
        Some("cancelled")
    );
    let compliance = |from: &'static str, to: &'static str| {
        let (http, token) = (&http, &token);
        async move {
            let (s, rows) = http
                .call(
                    "GET",
                    &format!("/v1/compliance?from={from}&to={to}"),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{rows}");
            rows.as_array().unwrap().clone()
        }
    };
    let january = compliance("2026-01-01", "2026-02-01").await;
    let e1 = january.iter().find(|r| r["person_id"] == "E1").unwrap();
    assert_eq!(
        e1["status"], "overdue",
        "worked untrained from 9 February to 1 March: {e1}"
    );
    assert_eq!(e1["assignment_ended_at"], "2026-03-01T00:00:00.000000Z");
    let march = compliance("2026-03-01", "2026-03-02").await;
    let v4 = march
        .iter()
        .find(|r| r["person_id"] == "E1" && r["version"] == "4")
        .unwrap();
    assert_eq!(
        v4["status"], "cancelled",
        "superseded before it was due: {v4}"
    );

    // E2 moves from OP to QA on 10 March: QA needs no SOP-017.
    let mover = event(
        "hr.person.changed.v1",
        "p-E2-qa",
        "2026-03-10T00:00:00Z",
        json!({"person_id": "E2", "name": "Operator 2", "active": true,
               "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2026-03-10T00:00:00Z"},
                                 {"job_function": "QA", "valid_from": "2026-03-10T00:00:00Z"}]}),
    );
    assert_eq!(send(&http, &token, vec![mover]).await.0, 202);
    settle(&ledger).await;
    let (reason,): (Option<String>,) = ledger
        .db
        .raw()
        .await
        .row(
            "SELECT cancel_reason FROM assignments WHERE person_id = 'E2' AND version = '5' AND origin = 'sop'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reason.as_deref(), Some("job function changed"));
    assert_eq!(
        status_of(&ledger, "E1", "5").await.as_deref(),
        Some("open"),
        "E1 stays in OP"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

/// Late HR data: a move into a function reported weeks after it happened
/// dates the training it requires from the move (business time), not from
/// when Trailmark heard of it, and the person counts as required from then.
#[tokio::test]
async fn a_job_change_reported_late_is_due_from_when_it_happened() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let token = ledger.admin_token.clone();
    // v3 effective 10 January, 30-day window.
    master_data(&http, &token, 1).await;
    // E3 moved into OP on 15 January; HR reports it on 1 March.
    let late = event(
        "hr.person.changed.v1",
        "p-E3",
        "2026-03-01T00:00:00Z",
        json!({"person_id": "E3", "name": "Operator 3", "active": true,
               "job_functions": [{"job_function": "OP", "valid_from": "2026-01-15T00:00:00Z"}]}),
    );
    assert_eq!(send(&http, &token, vec![late]).await.0, 202);
    settle(&ledger).await;
    let (due,): (String,) = ledger
        .db
        .raw()
        .await
        .row(
            "SELECT due_at FROM assignments WHERE person_id = 'E3' AND document_id = 'SOP-017' AND version = '3'",
            &[],
        )
        .await
        .expect("E3 is assigned SOP-017 v3");
    assert_eq!(due, "2026-02-14T00:00:00.000000Z", "15 January + 30 days");
    let (s, rows) = http
        .call(
            "GET",
            "/v1/compliance?from=2026-01-01&to=2026-02-01",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{rows}");
    let e3 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["person_id"] == "E3")
        .cloned();
    let e3 = e3.expect("E3 was required in January, from the 15th");
    assert_eq!(e3["status"], "overdue", "{e3}");
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}
