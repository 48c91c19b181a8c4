//! The QA console's first pages (docs/CONSOLE.md): log-in with the session
//! in an HttpOnly, SameSite cookie; CSRF on every form; output escaping;
//! the permission checked on the page itself; the entry page's signatures
//! and server-verified inclusion proof.

use reqwest::redirect::Policy;
use serde_json::json;

use crate::harness::{TestLedger, wait_for_checkpoint};
use crate::people::{Http, own_password, person};

/// A browser without JavaScript: no redirects followed, cookies by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &reqwest::Response) -> Vec<String> {
        let raw: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &raw {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        raw
    }

    async fn get(&mut self, path: &str) -> (u16, String, Option<String>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&r);
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, r.text().await.unwrap(), location)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, Vec<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(trailmark::console::urlencode(form))
            .send()
            .await
            .unwrap();
        let set = self.keep(&r);
        let status = r.status().as_u16();
        (status, r.text().await.unwrap(), set)
    }

    /// The hidden `csrf` field of the page's (first) form.
    fn csrf(page: &str) -> String {
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf field")
            + 19;
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    }

    /// The value of the hidden input `name`.
    fn hidden(page: &str, name: &str) -> String {
        let key = format!("name=\"{name}\" value=\"");
        let at = page.find(&key).expect("the hidden field") + key.len();
        page[at..at + page[at..].find('"').unwrap()].to_owned()
    }

    async fn post_owned(
        &mut self,
        path: &str,
        form: &[(String, String)],
    ) -> (u16, String, Vec<String>) {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post(path, &form).await
    }

    async fn log_in(&mut self, user: &str, password: &str) -> (u16, String, Vec<String>) {
        let (_, form, _) = self.get("/console/login").await;
        let csrf = Self::csrf(&form);
        self.post(
            "/console/login",
            &[("user_id", user), ("password", password), ("csrf", &csrf)],
        )
        .await
    }
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one browser session walked page by page, as a QA reviewer uses the console
async fn console_login_trail_and_entry_with_signatures_verified_proof_escaping_and_csrf() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let reviewer = person(&ledger, &http, "qa1", "Quinn <Reviewer>", &["qa_reviewer"]).await;
    let operator = person(&ledger, &http, "op1", "Otto Operator", &["operator"]).await;
    // A record whose payload carries markup, and a signature on it.
    let (s, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(
                json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-UI-1",
                        "payload": {"title": "<script>alert(1)</script>"}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let seq = r["seq"].as_u64().unwrap();
    let (s, b) = http
        .call(
            "POST",
            "/v1/signatures",
            Some(&reviewer.session),
            Some(json!({"target": r["hash"], "meaning": "reviewed", "user_id": "qa1", "password": reviewer.password})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    wait_for_checkpoint(&ledger.opened, seq + 2).await;

    let mut browser = Browser::new(&server.url());
    // Not logged in: every page sends to the log-in page.
    let (s, _, location) = browser.get("/console/trail").await;
    assert_eq!((s, location.as_deref()), (303, Some("/console/login")));
    // A log-in POST without the form's token is refused.
    let (s, _, _) = browser
        .post(
            "/console/login",
            &[
                ("user_id", "qa1"),
                ("password", &reviewer.password),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(s, 403);
    // A wrong password: 401 and the reason, no session cookie.
    let (s, body, set) = browser.log_in("qa1", "not-the-password").await;
    assert_eq!(s, 401, "{body}");
    assert!(set.iter().all(|c| !c.starts_with("tm_session=")));
    // The right one: a session cookie that scripts cannot read and other sites cannot send.
    let (s, _, set) = browser.log_in("qa1", &own_password("qa1", 1)).await;
    assert_eq!(s, 303);
    let session = set
        .iter()
        .find(|c| c.starts_with("tm_session=tms_"))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag");

    // The trail: the printed name (escaped), the kind, the signature line.
    let (s, trail, _) = browser
        .get("/console/trail?subject=qms:capa/CAPA-UI-1")
        .await;
    assert_eq!(s, 200, "{trail}");
    assert!(trail.contains("qms.capa.opened"));
    assert!(
        trail.contains("Quinn &lt;Reviewer&gt; (qa1), Reviewed"),
        "{trail}"
    );
    assert!(!trail.contains("<Reviewer>"));
    // The entry: markup in the payload is text, the proof is verified here.
    let (s, page, _) = browser.get(&format!("/console/entries/{seq}")).await;
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<script>"),
        "no markup from the payload reaches the page"
    );
    assert!(page.contains("Verified"), "{page}");
    assert!(page.contains("Quinn &lt;Reviewer&gt; (qa1), Reviewed"));

    // The subject's lineage: the record and its signature, linked.
    let (s, lineage, _) = browser.get("/console/lineage/qms:capa/CAPA-UI-1").await;
    assert_eq!(s, 200, "{lineage}");
    assert!(
        lineage.contains("qms.capa.opened") && lineage.contains("signature.applied"),
        "{lineage}"
    );

    // Review by exception: the queue names what needs a look, a wrong
    // password records nothing, the right one records the review and its
    // `reviewed` signature, and the next review starts where it ended.
    let (s, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(json!({"kind": "ledger.correction", "subject": "qms:capa/CAPA-UI-1", "parents": [r["hash"]],
                        "reason": "title typed wrongly", "payload": {"field": "title", "new": "Valve leak"}})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, queue, _) = browser.get("/console/review").await;
    assert_eq!(s, 200, "{queue}");
    assert!(queue.contains("Correction: title typed wrongly"), "{queue}");
    assert!(
        queue.contains("Administrative change"),
        "user creations need a look"
    );
    let from = Browser::hidden(&queue, "from_seq");
    let to = Browser::hidden(&queue, "to_seq");
    let csrf = Browser::csrf(&queue);
    let correction_mark = format!("mark_{}", r["seq"]);
    let form = |password: &'static str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("from_seq".to_owned(), from.clone()),
            ("to_seq".to_owned(), to.clone()),
            (correction_mark.clone(), "follow-up".to_owned()),
            ("user_id".to_owned(), "qa1".to_owned()),
            ("password".to_owned(), password.to_owned()),
        ]
    };
    let reviews = |ledger: &TestLedger| {
        let store = ledger.opened.store.clone();
        async move {
            store
                .list(&trailmark::store::EntryFilter {
                    kind: Some("review.audit_trail.completed".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    let wrong: Vec<(String, String)> = form("not-the-password");
    let wrong: Vec<(&str, &str)> = wrong
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, body, _) = browser.post("/console/review", &wrong).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(
        reviews(&ledger).await,
        0,
        "a refused signature records no review"
    );
    let right_password = own_password("qa1", 1);
    let mut right: Vec<(String, String)> = form("x");
    right.last_mut().unwrap().1 = right_password;
    let right: Vec<(&str, &str)> = right
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, _, _) = browser.post("/console/review", &right).await;
    assert_eq!(s, 303);
    assert_eq!(reviews(&ledger).await, 1);
    let review = ledger
        .opened
        .store
        .list(&trailmark::store::EntryFilter {
            kind: Some("review.audit_trail.completed".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    let recorded: serde_json::Value = serde_json::from_slice(&review.canonical).unwrap();
    assert_eq!(recorded["payload"]["from_seq"].to_string(), from);
    assert_eq!(recorded["payload"]["to_seq"].to_string(), to);
    assert_eq!(recorded["payload"]["follow_up"], 1);
    let (_, review_page, _) = browser
        .get(&format!("/console/entries/{}", review.seq))
        .await;
    assert!(
        review_page.contains("Quinn &lt;Reviewer&gt; (qa1), Reviewed"),
        "{review_page}"
    );
    let (_, next, _) = browser.get("/console/review").await;
    assert_eq!(
        Browser::hidden(&next, "from_seq"),
        to,
        "the next review starts where the last ended"
    );
    // Replaying the old form is refused: its range starts before the last review's end.
    let (s, _, _) = browser.post("/console/review", &right).await;
    assert_eq!(s, 409);
    assert_eq!(reviews(&ledger).await, 1);

    // Log-out needs the session's CSRF token.
    let (s, _, _) = browser.post("/console/logout", &[("csrf", "0000")]).await;
    assert_eq!(s, 403);
    let csrf = Browser::csrf(&trail);
    let (s, _, set) = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(s, 303);
    assert!(set.iter().any(|c| c.starts_with("tm_session=;")), "{set:?}");
    let (s, _, _) = browser.get("/console/trail").await;
    assert_eq!(s, 303, "the session is closed");

    // Pages check the session themselves: a first log-in with the one-time
    // password reaches no page until the password is changed. (Every role
    // holds entries:read, so the per-page permission check is exercised by
    // the administration pages, which come next.)
    crate::people::create_user(&ledger, "new1", "Nina New", &["qa_reviewer"]).await;
    let mut newcomer = Browser::new(&server.url());
    let (s, _, _) = newcomer
        .log_in("new1", &crate::people::initial_password("new1"))
        .await;
    assert_eq!(s, 303);
    let (s, page, _) = newcomer.get(&format!("/console/entries/{seq}")).await;
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("Password change required"));
    drop(operator);
    // verify checks the review's signature like any other.
    let report = ledger.verify().await.unwrap();
    assert!(report.signatures >= 2);
    server.stop().await;
    ledger.finish().await;
}

/// The newest entry of `kind`, parsed.
async fn newest(ledger: &TestLedger, kind: &str) -> Option<serde_json::Value> {
    crate::people::kinds_of(ledger, kind).await.pop()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one operations session: replay, administration, then every page and form per role
async fn operations_replay_administration_and_every_page_and_form_authorised() {
    use crate::integration::{count_becomes, master_data, with_targets};
    use trailmark::sim::Fault;

    let ledger = TestLedger::new().await;
    let (server, http, lms, _qms) = with_targets(&ledger, |t| {
        t.max_attempts = 2;
        t.backoff_initial_ms = 20;
        t.breaker_failures = 10;
    })
    .await;
    let _admin = person(&ledger, &http, "adm1", "Ada Admin", &["administrator"]).await;
    let _reviewer = person(&ledger, &http, "qa1", "Quinn Reviewer", &["qa_reviewer"]).await;
    let _operator = person(&ledger, &http, "op1", "Otto Operator", &["operator"]).await;
    // The LMS refuses everything: the assignment is dead-lettered.
    lms.set_fault(Fault::Status(503));
    master_data(&http, &ledger.admin_token, 1).await;
    let dead = count_becomes(
        &ledger,
        "SELECT COUNT(*) FROM outbox WHERE status = 'dead'",
        1,
    )
    .await;
    assert_eq!(dead, 1);
    lms.set_fault(Fault::None);

    let mut admin = Browser::new(&server.url());
    assert_eq!(admin.log_in("adm1", &own_password("adm1", 1)).await.0, 303);
    let mut reviewer = Browser::new(&server.url());
    assert_eq!(reviewer.log_in("qa1", &own_password("qa1", 1)).await.0, 303);
    let mut operator = Browser::new(&server.url());
    assert_eq!(operator.log_in("op1", &own_password("op1", 1)).await.0, 303);
    let mut stranger = Browser::new(&server.url());

    // Every page checks the session and its own permission (not a hidden link).
    for path in [
        "/console/trail",
        "/console/review",
        "/console/ops",
        "/console/admin",
        "/console/lineage/person:E0001",
        "/console/entries/1",
    ] {
        let (s, _, location) = stranger.get(path).await;
        assert_eq!(
            (s, location.as_deref()),
            (303, Some("/console/login")),
            "{path}"
        );
    }
    for path in [
        "/console/ops",
        "/console/admin",
        "/console/lineage/person:E0001",
    ] {
        let (s, page, _) = operator.get(path).await;
        assert_eq!(s, 403, "{path}: {page}");
        assert!(page.contains("Your roles do not grant"), "{page}");
    }
    let (s, page, _) = operator.get("/console/trail").await;
    assert_eq!(s, 200);
    assert!(
        !page.contains("href=\"/console/ops\""),
        "no link to what the operator may not see"
    );
    let (s, page, _) = reviewer.get("/console/ops").await;
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("1 dead letter.") && page.contains("integration:manage"),
        "{page}"
    );
    assert!(
        !page.contains("action=\"/console/ops/replay\""),
        "no replay form without integration:manage"
    );

    // Every form refuses a POST without the session's token, and changes nothing.
    let size = ledger.opened.store.size().await.unwrap();
    let forms = [
        "/console/review",
        "/console/ops/replay",
        "/console/ops/verify",
        "/console/ops/report",
        "/console/admin/user",
        "/console/admin/users",
        "/console/admin/tokens",
        "/console/admin/token/revoke",
        "/console/logout",
    ];
    for path in forms {
        let (s, body, _) = admin
            .post(path, &[("csrf", "forged"), ("reason", "x")])
            .await;
        assert_eq!(s, 403, "{path}: {body}");
    }
    // And a form of a permission the viewer lacks is refused with the session's own token.
    let (_, page, _) = reviewer.get("/console/trail").await;
    let csrf = Browser::csrf(&page);
    for path in [
        "/console/ops/replay",
        "/console/admin/user",
        "/console/admin/users",
        "/console/admin/tokens",
        "/console/admin/token/revoke",
    ] {
        let (s, body, _) = reviewer
            .post(path, &[("csrf", &csrf), ("reason", "x")])
            .await;
        assert_eq!(s, 403, "{path}: {body}");
    }
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "refused forms append nothing"
    );

    // The operations page: health, queue, SLA, the dead letter with its form.
    let (s, ops, _) = admin.get("/console/ops").await;
    assert_eq!(s, 200, "{ops}");
    for text in [
        "Last signed checkpoint",
        "Last full verification",
        "never: run one",
        "Queue depth",
        "Hand-over SLA",
        "lms",
        "Replay",
    ] {
        assert!(ops.contains(text), "{text}: {ops}");
    }
    let csrf = Browser::csrf(&ops);
    let message = Browser::hidden(&ops, "message_id");
    let replay = |password: String, reason: &'static str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("message_id".to_owned(), message.clone()),
            ("reason".to_owned(), reason.to_owned()),
            ("user_id".to_owned(), "adm1".to_owned()),
            ("password".to_owned(), password),
        ]
    };
    // No reason: refused, nothing recorded.
    let (s, body, _) = admin
        .post_owned("/console/ops/replay", &replay(own_password("adm1", 1), " "))
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("Give a reason"));
    // A wrong password: refused, recorded as a security refusal, not replayed.
    let (s, body, _) = admin
        .post_owned(
            "/console/ops/replay",
            &replay("not-my-password".into(), "LMS back after maintenance"),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body.contains("the password is wrong") && body.contains("LMS back after maintenance"),
        "the reason is kept: {body}"
    );
    let refusal = newest(&ledger, "security.auth.refused")
        .await
        .expect("the refusal is recorded");
    assert_eq!(
        refusal["payload"]["action"],
        format!("replay dead letter {message}")
    );
    assert!(
        newest(&ledger, "integration.handover.replayed")
            .await
            .is_none()
    );
    // The right one: replayed with the reason, attributed, and delivered.
    let (s, _, _) = admin
        .post_owned(
            "/console/ops/replay",
            &replay(own_password("adm1", 1), "LMS back after maintenance"),
        )
        .await;
    assert_eq!(s, 303);
    let replayed = newest(&ledger, "integration.handover.replayed")
        .await
        .expect("the replay is recorded");
    assert_eq!(replayed["actor"], "user:adm1");
    assert_eq!(replayed["reason"], "LMS back after maintenance");
    assert_eq!(replayed["payload"]["message_id"], message.as_str());
    let delivered = count_becomes(
        &ledger,
        "SELECT COUNT(*) FROM outbox WHERE status = 'dead'",
        0,
    )
    .await;
    assert_eq!(delivered, 0);
    let (_, ops, _) = admin.get("/console/ops").await;
    assert!(ops.contains("None: every hand-over was delivered"), "{ops}");

    // Verify now: recorded with who asked and the result.
    let (s, _, _) = admin.post("/console/ops/verify", &[("csrf", &csrf)]).await;
    assert_eq!(s, 303);
    let mut run = None;
    for _ in 0..200 {
        run = ledger.opened.store.last_verify_run().await.unwrap();
        if run.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let run = run.expect("the verification is recorded");
    assert_eq!(
        (run.result.as_str(), run.by_whom.as_str()),
        ("intact", "user:adm1"),
        "{run:?}"
    );
    let (_, ops, _) = admin.get("/console/ops").await;
    assert!(
        ops.contains("intact") && ops.contains("by user:adm1"),
        "{ops}"
    );

    // A report download: a signed PDF, recorded.
    let (_, page, _) = reviewer.get("/console/ops").await;
    let rcsrf = Browser::csrf(&page);
    let r = reviewer
        .http
        .post(format!("{}/console/ops/report", server.url()))
        .header("cookie", reviewer.cookie_header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(trailmark::console::urlencode(&[
            ("csrf", rcsrf.as_str()),
            ("type", "audit-trail"),
            ("format", "pdf"),
            ("subject", ""),
            ("from", "2020-01-01"),
            ("to", "2100-01-01"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert!(r.bytes().await.unwrap().starts_with(b"%PDF"));
    let generated = newest(&ledger, "report.generated").await.expect("recorded");
    assert_eq!(generated["actor"], "user:qa1");

    // Administration: a change needs its reason; the reason is recorded.
    let (s, page, _) = admin.get("/console/admin").await;
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("Otto Operator")
            && page.contains("API tokens")
            && page.contains("signatures:apply")
    );
    let acsrf = Browser::csrf(&page);
    let change = |reason: &'static str| {
        vec![
            ("csrf", acsrf.clone()),
            ("user_id", "op1".to_owned()),
            ("role_operator", "on".to_owned()),
            ("role_trainer", "on".to_owned()),
            ("status", "active".to_owned()),
            ("reason", reason.to_owned()),
        ]
    };
    let size = ledger.opened.store.size().await.unwrap();
    let form: Vec<(&str, String)> = change("");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, body, _) = admin.post("/console/admin/user", &form).await;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("Nothing was changed"));
    assert_eq!(ledger.opened.store.size().await.unwrap(), size);
    let form: Vec<(&str, String)> = change("Otto now also trains new operators (CC-2026-031)");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, body, _) = admin.post("/console/admin/user", &form).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("trainer") && body.contains("recorded as"),
        "{body}"
    );
    let changed = newest(&ledger, "admin.user.changed").await.unwrap();
    assert_eq!(
        changed["reason"],
        "Otto now also trains new operators (CC-2026-031)"
    );
    assert_eq!(changed["actor"], "user:adm1");
    // A token is issued (shown once) and revoked with a reason.
    let (s, body, _) = admin
        .post(
            "/console/admin/tokens",
            &[
                ("csrf", &acsrf),
                ("principal", "qms"),
                ("reason", "QMS connector for site B"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("tmk_"), "the token is shown once");
    let issued = newest(&ledger, "admin.token.created").await.unwrap();
    let token_id = issued["payload"]["token_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!token_id.is_empty(), "{issued}");
    assert!(
        !issued.to_string().contains("tmk_"),
        "no secret in the ledger"
    );
    let (s, body, _) = admin
        .post(
            "/console/admin/token/revoke",
            &[
                ("csrf", &acsrf),
                ("token_id", &token_id),
                ("reason", "site B connector retired"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let revoked = newest(&ledger, "admin.token.revoked").await.unwrap();
    assert_eq!(revoked["reason"], "site B connector retired");

    // Free text in the trail finds the refusal's action text.
    let (s, trail, _) = reviewer
        .get(&format!(
            "/console/trail?text={}",
            trailmark::console::urlencode(&[("x", message.as_str())]).trim_start_matches("x=")
        ))
        .await;
    assert_eq!(s, 200);
    assert!(
        trail.contains("integration.handover.replayed") && trail.contains("security.auth.refused"),
        "{trail}"
    );
    let (_, none, _) = reviewer
        .get("/console/trail?text=no-such-text-anywhere")
        .await;
    assert!(none.contains("0 entries"), "{none}");

    let report = ledger.verify().await.unwrap();
    assert!(report.entries > 0);
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn console_sessions_end_after_inactivity_and_cookies_are_secure_over_tls() {
    let ledger = TestLedger::new().await;
    let mut config = ledger.config();
    config.identity.session_idle_seconds = 600;
    // The test client stands in for the TLS-terminating proxy.
    config.transport.trusted_proxies = vec!["127.0.0.1".into()];
    let server = ledger.start_with(&config).await;
    let http = Http::new(&server);
    let _reviewer = person(&ledger, &http, "qa1", "Quinn Reviewer", &["qa_reviewer"]).await;

    // Behind a trusted TLS-terminating proxy the cookies are also `Secure`.
    let tls = Browser::new(&server.url());
    let r = tls
        .http
        .get(format!("{}/console/login", server.url()))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let login_cookie = set
        .iter()
        .find(|c| c.starts_with("tm_login_csrf="))
        .expect("the log-in form's cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(login_cookie.contains(flag), "{login_cookie}");
    }
    let form = r.text().await.unwrap();
    let csrf = Browser::csrf(&form);
    let token = login_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("tm_login_csrf=");
    let r = tls
        .http
        .post(format!("{}/console/login", server.url()))
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("tm_login_csrf={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(trailmark::console::urlencode(&[
            ("user_id", "qa1"),
            ("password", own_password("qa1", 1).as_str()),
            ("csrf", csrf.as_str()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tm_session=tms_"))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(session.contains(flag), "{session}");
    }

    // The inactivity timeout of the identity issue ends a console session.
    let mut browser = Browser::new(&server.url());
    assert_eq!(browser.log_in("qa1", &own_password("qa1", 1)).await.0, 303);
    assert_eq!(browser.get("/console/trail").await.0, 200);
    ledger.opened.clock.advance(chrono::Duration::seconds(601));
    let (s, _, location) = browser.get("/console/trail").await;
    assert_eq!((s, location.as_deref()), (303, Some("/console/login")));
    let closed = newest(&ledger, "security.session.closed")
        .await
        .expect("the timeout is recorded");
    assert_eq!(closed["payload"]["cause"], "inactivity");
    assert_eq!(closed["payload"]["user_id"], "qa1");
    server.stop().await;
    ledger.finish().await;
}

/// Review scopes (docs/CONSOLE.md §4): each scope reviews only its own
/// subjects and keeps its own place; a period can stop at a chosen instant;
/// an unknown scope or unreadable instant is refused and records nothing.
#[tokio::test]
#[allow(clippy::too_many_lines)] // successive reviews of several scopes, each depending on the one before
async fn review_scopes_keep_their_own_place_and_a_period_stops_where_asked() {
    let ledger = TestLedger::new().await;
    let server = ledger.start().await;
    let http = Http::new(&server);
    let _reviewer = person(&ledger, &http, "qa1", "Quinn Reviewer", &["qa_reviewer"]).await;
    let mut last = serde_json::Value::Null;
    for body in [
        json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-SC-1", "payload": {"title": "Seal"}}),
        json!({"kind": "ledger.correction", "subject": "qms:capa/CAPA-SC-1", "reason": "scope test correction",
               "payload": {"field": "title", "new": "Seal leak"}}),
    ] {
        let mut body = body;
        if last.is_object() {
            body["parents"] = json!([last["hash"]]);
        }
        let (s, r) = http
            .call("POST", "/v1/entries", Some(&ledger.admin_token), Some(body))
            .await;
        assert_eq!(s, 201, "{r}");
        last = r;
    }
    let correction = last["seq"].as_u64().unwrap();
    let mut browser = Browser::new(&server.url());
    assert_eq!(browser.log_in("qa1", &own_password("qa1", 1)).await.0, 303);
    let all_rows = ledger.opened.store.entries_page(0, 10_000).await.unwrap();
    let in_range = |prefix: &str, from: u64, to: u64| {
        all_rows
            .iter()
            .filter(|e| e.seq.get() >= from && e.seq.get() < to && e.subject.starts_with(prefix))
            .count() as u64
    };

    // The quality queue holds the correction but not the user's creation.
    let (s, quality, _) = browser.get("/console/review?scope=quality").await;
    assert_eq!(s, 200, "{quality}");
    assert!(quality.contains("Correction: scope test correction"));
    assert!(
        !quality.contains("Administrative change"),
        "user:qa1's creation is outside the quality scope"
    );
    assert_eq!(Browser::hidden(&quality, "scope"), "quality");
    let (from, to) = (
        Browser::hidden(&quality, "from_seq"),
        Browser::hidden(&quality, "to_seq"),
    );
    let sign_form = |page: &str, scope: &str, until: &str, password: &str| {
        vec![
            ("csrf".to_owned(), Browser::csrf(page)),
            ("scope".to_owned(), scope.to_owned()),
            ("until".to_owned(), until.to_owned()),
            ("from_seq".to_owned(), Browser::hidden(page, "from_seq")),
            ("to_seq".to_owned(), Browser::hidden(page, "to_seq")),
            ("user_id".to_owned(), "qa1".to_owned()),
            ("password".to_owned(), password.to_owned()),
        ]
    };
    let password = own_password("qa1", 1);
    let quality_form = sign_form(&quality, "quality", "", &password);
    let (s, body, _) = browser.post_owned("/console/review", &quality_form).await;
    assert_eq!(s, 303, "{body}");
    let review = newest(&ledger, "review.audit_trail.completed")
        .await
        .unwrap();
    assert_eq!(review["subject"], "review:audit-trail/quality");
    let p = &review["payload"];
    assert_eq!(p["scope"], "quality");
    assert_eq!(p["subject_prefixes"], json!(["qms:"]));
    assert_eq!(p["from_seq"].to_string(), from);
    assert_eq!(p["to_seq"].to_string(), to);
    let (f, t) = (from.parse().unwrap(), to.parse().unwrap());
    assert_eq!(p["in_scope"], in_range("qms:", f, t));
    assert_eq!(p["in_scope"], 2, "the CAPA record and its correction");
    let items = p["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{p}");
    assert_eq!(items[0]["seq"], correction);
    assert_eq!(p["routine"], 1);
    // The same form again is stale.
    let (s, _, _) = browser.post_owned("/console/review", &quality_form).await;
    assert_eq!(s, 409);

    // Each scope keeps its own place: `all` has not been reviewed yet, and
    // quality's next review starts where the last one ended.
    let (_, all, _) = browser.get("/console/review").await;
    assert_eq!(Browser::hidden(&all, "from_seq"), "0");
    assert!(all.contains("Administrative change") && all.contains("Correction: scope test"));
    let (_, quality_next, _) = browser.get("/console/review?scope=quality").await;
    assert!(
        !quality_next.contains("name=\"from_seq\""),
        "no quality entry since the review: {quality_next}"
    );
    assert!(quality_next.contains("There is nothing to review or sign."));

    // A period that stops at the correction's time ends before it (exclusive).
    let at = all_rows
        .iter()
        .find(|e| e.seq.get() == correction)
        .unwrap()
        .recorded_at
        .clone();
    let first_at = all_rows
        .iter()
        .find(|e| e.recorded_at >= at)
        .unwrap()
        .seq
        .get();
    let (s, period, _) = browser
        .get(&format!("/console/review?scope=all&until={at}"))
        .await;
    assert_eq!(s, 200, "{period}");
    assert_eq!(Browser::hidden(&period, "to_seq"), first_at.to_string());
    assert!(!period.contains("Correction: scope test"), "{period}");
    // A forged form reaching past the period is refused.
    let mut past = sign_form(&period, "all", &at, &password);
    past[4].1 = (correction + 1).to_string();
    let (s, _, _) = browser.post_owned("/console/review", &past).await;
    assert_eq!(s, 409);
    let (s, body, _) = browser
        .post_owned(
            "/console/review",
            &sign_form(&period, "all", &at, &password),
        )
        .await;
    assert_eq!(s, 303, "{body}");
    let review = newest(&ledger, "review.audit_trail.completed")
        .await
        .unwrap();
    assert_eq!(review["subject"], "review:audit-trail/all");
    assert_eq!(review["payload"]["until"], at.as_str());
    assert_eq!(review["payload"]["to_seq"], first_at);
    assert_eq!(review["payload"]["in_scope"], first_at);
    let (_, all_next, _) = browser.get("/console/review").await;
    assert_eq!(Browser::hidden(&all_next, "from_seq"), first_at.to_string());
    assert!(all_next.contains("Correction: scope test"));
    // A period ending before the scope's last review has nothing in it.
    let (s, empty, _) = browser
        .get("/console/review?scope=access&until=2000-01-01")
        .await;
    assert_eq!(s, 200);
    assert!(empty.contains("There is nothing to review or sign."));

    // Bad input says what is accepted and records nothing.
    let size = ledger.opened.store.size().await.unwrap();
    let (s, page, _) = browser.get("/console/review?scope=qms").await;
    assert_eq!(s, 400);
    assert!(page.contains("choose one of: all, quality, training, access"));
    let (s, page, _) = browser.get("/console/review?until=last%20Friday").await;
    assert_eq!(s, 400);
    assert!(page.contains("2026-09-30T18:00"), "{page}");
    let mut bogus = sign_form(&all_next, "all", "", &password);
    bogus[1].1 = "everything".to_owned();
    let (s, page, _) = browser.post_owned("/console/review", &bogus).await;
    assert_eq!(s, 422, "{page}");
    assert_eq!(ledger.opened.store.size().await.unwrap(), size);
    ledger.verify().await.unwrap();
    server.stop().await;
    ledger.finish().await;
}

/// Missing training is raised by the review whose period it fell due in,
/// even when it was assigned in an earlier, already reviewed range, and by
/// no other review (docs/CONSOLE.md §4).
#[tokio::test]
#[allow(clippy::too_many_lines)] // two reviews either side of the due time, the second depending on the first
async fn overdue_training_is_raised_by_the_review_whose_period_it_fell_due_in() {
    use crate::integration::{event, send, settle, with_targets};

    let ledger = TestLedger::new().await;
    let (server, http, _lms, _qms) = with_targets(&ledger, |_| {}).await;
    let _reviewer = person(&ledger, &http, "qa1", "Quinn Reviewer", &["qa_reviewer"]).await;
    let mut browser = Browser::new(&server.url());
    assert_eq!(browser.log_in("qa1", &own_password("qa1", 1)).await.0, 303);
    // SOP-017 v3 became effective 30 days less ten minutes ago, with a
    // 30-day window: E1's assignment falls due ten minutes from now (on the
    // test's clock, which the test moves forward instead of waiting; within
    // the session's inactivity timeout).
    let clock = ledger.opened.clock.clone();
    let due = clock.now() + chrono::Duration::minutes(10);
    let effective =
        (due - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (s, body) = send(&http, &ledger.admin_token, vec![
        event("qms.training_category.changed.v1", "cat-sop", "2026-01-01T00:00:00Z",
            json!({"category": "SOP", "completion_window_days": 30})),
        event("qms.training_matrix.changed.v1", "mx-sop017", "2026-01-01T00:00:00Z",
            json!({"document_id": "SOP-017", "job_functions": ["OP"]})),
        event("hr.person.changed.v1", "p-E1", "2026-01-01T00:00:00Z",
            json!({"person_id": "E1", "name": "Operator 1", "active": true,
                   "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z"}]})),
        event("qms.document.revision_effective.v2", "rev-017-3", &effective,
            json!({"document_id": "SOP-017", "version": "3", "effective_at": effective, "category": "SOP"})),
    ])
    .await;
    assert_eq!(s, 202, "{body}");
    settle(&ledger).await;
    let (assigned,): (i64,) = ledger
        .db
        .raw()
        .await
        .row(
            "SELECT created_seq FROM assignments WHERE person_id = 'E1' AND status = 'open'",
            &[],
        )
        .await
        .expect("E1 is assigned SOP-017 v3");
    let password = own_password("qa1", 1);
    let sign = |page: &str| {
        vec![
            ("csrf".to_owned(), Browser::csrf(page)),
            ("scope".to_owned(), "training".to_owned()),
            ("from_seq".to_owned(), Browser::hidden(page, "from_seq")),
            ("to_seq".to_owned(), Browser::hidden(page, "to_seq")),
            ("user_id".to_owned(), "qa1".to_owned()),
            ("password".to_owned(), password.clone()),
        ]
    };
    // Something new in the training scope, so a review has a range.
    let mut n = 0;
    let mut touch = || {
        n += 1;
        json!({"kind": "qms.capa.opened", "subject": format!("person:T{n}"), "payload": {"n": n}})
    };

    // Review 1: assigned in its range, not yet due: not raised.
    let (_, first, _) = browser.get("/console/review?scope=training").await;
    assert!(clock.now() < due);
    assert!(!first.contains("Training overdue"), "{first}");
    let (s, body, _) = browser.post_owned("/console/review", &sign(&first)).await;
    assert_eq!(s, 303, "{body}");

    // It falls due; review 2 raises it, though it was assigned before its range.
    clock.advance(due - clock.now() + chrono::Duration::milliseconds(200));
    let (s, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(touch()),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (_, second, _) = browser.get("/console/review?scope=training").await;
    let from: u64 = Browser::hidden(&second, "from_seq").parse().unwrap();
    assert!(
        assigned < from as i64,
        "the assignment lies before review 2's range"
    );
    assert!(
        second.contains("not completed (assigned before this review&#39;s range)")
            || second.contains("not completed (assigned before this review's range)"),
        "{second}"
    );
    let (s, body, _) = browser.post_owned("/console/review", &sign(&second)).await;
    assert_eq!(s, 303, "{body}");
    let review = newest(&ledger, "review.audit_trail.completed")
        .await
        .unwrap();
    let p = &review["payload"];
    let items = p["items"].as_array().unwrap();
    let overdue = items
        .iter()
        .find(|i| i["seq"] == assigned && i["kind"] == "lms.assignment.created")
        .unwrap_or_else(|| panic!("{p}"));
    // The signed record names whose training on what, and when it fell due.
    let why = overdue["why"].as_str().unwrap();
    let due_at = chrono::DateTime::parse_from_rfc3339(
        why.trim_start_matches("Training overdue: person E1, SOP-017 version 3, due ")
            .split(',')
            .next()
            .unwrap(),
    )
    .unwrap_or_else(|e| panic!("`{why}` names no due time: {e}"));
    assert!(
        (due_at.with_timezone(&chrono::Utc) - due)
            .num_seconds()
            .abs()
            <= 5,
        "{why} (due about {due})"
    );
    let in_range = items
        .iter()
        .filter(|i| i["seq"].as_u64().unwrap() >= from)
        .count() as u64;
    assert_eq!(
        p["routine"].as_u64().unwrap(),
        p["in_scope"].as_u64().unwrap() - in_range,
        "the carried item is not counted against the range"
    );

    // Review 3: it is still open, but it fell due in review 2's period.
    let (s, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(touch()),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (_, third, _) = browser.get("/console/review?scope=training").await;
    assert!(third.contains("name=\"from_seq\""), "{third}");
    assert!(!third.contains("Training overdue"), "{third}");
    server.stop().await;
    ledger.finish().await;
}
