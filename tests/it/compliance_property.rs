//! Property: `GET /v1/compliance` equals a from-scratch recomputation from
//! the ledger's entries under docs/INTEGRATION.md §3, whatever order the
//! events arrive in: reordered, duplicated, and HR data reported late (after
//! the revision it bears on), on the backend under test.
//!
//! The universe: one SOP (30-day window) mapped to one job function, one
//! version, people who take up the function before or after the version is
//! effective and keep it, completions before or after their assignment
//! exists (in business and in arrival order). The category and matrix are
//! sent first: a matrix change is due from when it is recorded (§3, point
//! 1), which is order-dependent by design. Leavers, movers and supersession
//! have their own named tests in `integration.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::harness::TestLedger;
use crate::integration::{event, send, settle};
use crate::people::Http;

const BASE: &str = "2026-01-01T00:00:00Z";
const WINDOW_DAYS: i64 = 30;

fn day(d: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(BASE)
        .unwrap()
        .with_timezone(&Utc)
        + Duration::days(d)
}

fn stored(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Day the version is effective.
    effective: i64,
    /// Per person: the day they take up the function.
    joins: Vec<i64>,
    /// (person, day) completions on the version.
    completions: Vec<(usize, i64)>,
    /// Arrival order of the source events (a permutation), and which are
    /// sent a second time afterwards.
    order: Vec<usize>,
    again: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        20i64..60,
        prop::collection::vec(0i64..100, 1..5),
        prop::collection::vec((0usize..4, 0i64..120), 0..6),
    )
        .prop_flat_map(|(effective, joins, completions)| {
            let people = joins.len();
            let completions: Vec<(usize, i64)> = completions
                .into_iter()
                .map(|(p, d)| (p % people, d))
                .collect();
            let n = 1 + people + completions.len();
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let again = prop::collection::vec(0..n, 0..3);
            (
                Just(effective),
                Just(joins),
                Just(completions),
                order,
                again,
            )
        })
        .prop_map(|(effective, joins, completions, order, again)| Scenario {
            effective,
            joins,
            completions,
            order,
            again,
        })
}

/// The source events of a scenario: the revision, a person each, the
/// completions; each with its business time as the CloudEvent time, so a
/// person's event is "late" whenever it arrives after the revision.
fn source_events(s: &Scenario) -> Vec<Value> {
    let mut out = vec![event(
        "qms.document.revision_effective.v2",
        "rev-1",
        &day(s.effective).to_rfc3339(),
        json!({"document_id": "SOP-P", "version": "1", "effective_at": day(s.effective).to_rfc3339(), "category": "SOP"}),
    )];
    for (i, join) in s.joins.iter().enumerate() {
        out.push(event(
            "hr.person.changed.v1",
            &format!("p-{i}"),
            &day(*join).to_rfc3339(),
            json!({"person_id": format!("E{i}"), "name": format!("Person {i}"), "active": true,
                   "job_functions": [{"job_function": "OP", "valid_from": day(*join).to_rfc3339()}]}),
        ));
    }
    for (k, (p, d)) in s.completions.iter().enumerate() {
        out.push(event(
            "lms.completion.recorded.v1",
            &format!("c-{k}"),
            &day(*d).to_rfc3339(),
            json!({"person_id": format!("E{p}"), "document_id": "SOP-P", "version": "1",
                   "completed_at": day(*d).to_rfc3339(), "outcome": "completed"}),
        ));
    }
    out
}

/// (required_from, due_at, completed_at, status) per person, from the
/// entries alone: the applied revision, person and completion events.
async fn recomputed(ledger: &TestLedger, now: &str) -> BTreeMap<String, Value> {
    let mut effective = None;
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    let mut completed: BTreeMap<String, String> = BTreeMap::new();
    for kind in [
        "qms.document.revision_effective",
        "hr.person.updated",
        "lms.completion.recorded",
    ] {
        let filter = trailmark::store::EntryFilter {
            kind: Some(kind.into()),
            limit: 500,
            ..trailmark::store::EntryFilter::default()
        };
        for e in ledger.opened.store.list(&filter).await.unwrap() {
            let entry: Value = serde_json::from_slice(&e.canonical).unwrap();
            let d = &entry["payload"]["data"];
            let time = |k: &str| {
                let t = DateTime::parse_from_rfc3339(d[k].as_str().unwrap()).unwrap();
                stored(t.with_timezone(&Utc))
            };
            match kind {
                "qms.document.revision_effective" => effective = Some(time("effective_at")),
                "hr.person.updated" => {
                    let from = d["job_functions"][0]["valid_from"].as_str().unwrap();
                    let from = DateTime::parse_from_rfc3339(from).unwrap();
                    joined.insert(
                        d["person_id"].as_str().unwrap().into(),
                        stored(from.with_timezone(&Utc)),
                    );
                }
                _ => {
                    let at = time("completed_at");
                    let person = d["person_id"].as_str().unwrap().to_owned();
                    let first = completed.entry(person).or_insert(at.clone());
                    if at < *first {
                        *first = at;
                    }
                }
            }
        }
    }
    let effective = effective.expect("the revision is recorded");
    let mut out = BTreeMap::new();
    for (person, from) in joined {
        // Required from the later of the effective time and the move; due
        // one window later (INTEGRATION.md §3, point 1).
        let required_from = from.max(effective.clone());
        let due =
            DateTime::parse_from_rfc3339(&required_from).unwrap() + Duration::days(WINDOW_DAYS);
        let due = stored(due.with_timezone(&Utc));
        let done = completed.get(&person).cloned();
        let status = match &done {
            Some(d) if *d <= due => "on_time",
            Some(_) => "late",
            None if now > due.as_str() => "overdue",
            None => "open",
        };
        out.insert(
            person,
            json!({"required_from": required_from, "due_at": due, "completed_at": done, "status": status}),
        );
    }
    out
}

async fn run(s: Scenario) -> Result<(), TestCaseError> {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let token = ledger.admin_token.clone();
    let setup = vec![
        event(
            "qms.training_category.changed.v1",
            "cat",
            BASE,
            json!({"category": "SOP", "completion_window_days": WINDOW_DAYS}),
        ),
        event(
            "qms.training_matrix.changed.v1",
            "mx",
            BASE,
            json!({"document_id": "SOP-P", "job_functions": ["OP"]}),
        ),
    ];
    assert_eq!(send(&http, &token, setup).await.0, 202);
    settle(&ledger).await;
    let events = source_events(&s);
    let arriving: Vec<Value> = s.order.iter().map(|i| events[*i].clone()).collect();
    let (first, second) = arriving.split_at(arriving.len() / 2);
    let (status, body) = send(&http, &token, first.to_vec()).await;
    prop_assert_eq!(status, 202, "{}", body);
    settle(&ledger).await;
    let mut rest = second.to_vec();
    rest.extend(s.again.iter().map(|i| events[*i].clone()));
    let (status, body) = send(&http, &token, rest).await;
    prop_assert_eq!(status, 202, "{}", body);
    settle(&ledger).await;
    // Every event's master data has arrived by now, so what was parked is
    // woken and applied; wait for that too.
    for _ in 0..400 {
        let waiting = trailmark::integration::queries::backlog(&ledger.opened.store)
            .await
            .unwrap()
            .events;
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let now = stored(Utc::now());
    let (status, rows) = http
        .call(
            "GET",
            "/v1/compliance?from=2026-01-01&to=2026-12-01",
            Some(&token),
            None,
        )
        .await;
    prop_assert_eq!(status, 200, "{}", rows);
    let mut shown = BTreeMap::new();
    for r in rows.as_array().unwrap() {
        shown.insert(
            r["person_id"].as_str().unwrap().to_owned(),
            json!({"required_from": r["required_from"], "due_at": r["due_at"],
                   "completed_at": r["completed_at"], "status": r["status"]}),
        );
    }
    let expected = recomputed(&ledger, &now).await;
    let inbox: Vec<(String, String, Option<String>)> = ledger
        .db
        .raw()
        .await
        .rows(
            "SELECT event_id, status, detail FROM inbox ORDER BY seq",
            &[],
        )
        .await;
    server.stop().await;
    ledger.finish().await;
    prop_assert_eq!(
        shown,
        expected,
        "arrival order {:?}, again {:?}, inbox {:?}",
        s.order,
        s.again,
        inbox
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn compliance_equals_a_recomputation_from_the_entries_in_any_arrival_order(s in scenario()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(s))?;
    }
}
