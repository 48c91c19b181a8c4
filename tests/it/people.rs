//! People, access and Part 11 signatures, end to end over HTTP on both
//! databases. One test per clause of docs/SIGNATURES.md and REGULATORY.md
//! that concerns identity or signatures; each is named after its clause.

use std::time::Duration;
use trailmark::ledger::{Seq, UserId};

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

use base64::Engine as _;
use serde_json::{Value, json};
use trailmark::audit::AuditError;
use trailmark::config::Config;
use trailmark::identity::service::NewUser;
use trailmark::instance::Server;
use trailmark::sim::Mailbox;

use crate::harness::{TestLedger, record};

/// An HTTP caller without a fixed credential.
#[derive(Clone)]
pub struct Http {
    pub http: reqwest::Client,
    pub base: String,
}

impl Http {
    pub fn new(server: &Server) -> Http {
        Http {
            http: reqwest::Client::new(),
            base: server.url(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/sessions",
            None,
            Some(json!({"user_id": user, "password": password})),
        )
        .await
    }

    /// Signs `target` (hex) with `meaning`; `user_id` only when given.
    pub async fn sign(
        &self,
        session: &str,
        target: &str,
        meaning: &str,
        user_id: Option<&str>,
        password: &str,
    ) -> (u16, Value) {
        let mut body = json!({"target": target, "meaning": meaning, "password": password});
        if let Some(u) = user_id {
            body["user_id"] = u.into();
        }
        self.call("POST", "/v1/signatures", Some(session), Some(body))
            .await
    }
}

/// A user who changed the initial password (so holds a key and certificate)
/// and has an open session.
pub struct Person {
    pub password: String,
    pub session: String,
}

/// Test passwords, distinct per user without containing the user ID.
pub fn initial_password(id: &str) -> String {
    format!("initial-{}-Pa55word", hex::encode(id))
}

pub fn own_password(id: &str, n: u32) -> String {
    format!("own-{}-secret-{n}-Xy", hex::encode(id))
}

/// A server whose one-time passwords go to a simulated mailbox, signed with
/// a secret the test writes to the data directory (mode 0600).
pub async fn started_with_mailbox(ledger: &TestLedger) -> (Server, Http, Mailbox) {
    use std::os::unix::fs::PermissionsExt;
    let secret = trailmark::webhook::Secret::generate();
    let file = ledger.data_dir().join("credential.whsec");
    std::fs::write(&file, secret.to_text()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = ledger.config();
    let mailbox = Mailbox::start(secret).await.unwrap();
    config.identity.credential_webhook_url = Some(mailbox.url().to_owned());
    config.identity.credential_webhook_secret_file = Some("credential.whsec".into());
    let server = ledger.start_with(&config).await;
    let http = Http::new(&server);
    (server, http, mailbox)
}

/// Creates a user as `trailmark user create` does.
pub async fn create_user(ledger: &TestLedger, id: &str, name: &str, roles: &[&str]) {
    ledger
        .opened
        .create_user(
            NewUser {
                user_id: id.into(),
                printed_name: name.into(),
                email: format!("{id}@example.com"),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                identity_verified_by: Some("user:hr-officer".into()),
                identity_verification_method: "passport checked in person".into(),
                initial_password: Some(initial_password(id)),
            },
            "test user",
        )
        .await
        .unwrap();
}

/// Creates, logs in, and changes the password (making the signing key and certificate).
pub async fn person(
    ledger: &TestLedger,
    http: &Http,
    id: &str,
    name: &str,
    roles: &[&str],
) -> Person {
    create_user(ledger, id, name, roles).await;
    let (status, login) = http.login(id, &initial_password(id)).await;
    assert_eq!(status, 201, "{login}");
    assert_eq!(
        login["must_change_password"], true,
        "first login forces a change"
    );
    let session = login["session"].as_str().unwrap().to_owned();
    let (status, body) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&session),
            Some(json!({"current_password": initial_password(id), "new_password": own_password(id, 1)})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["account"]["certificate_sha256"].is_string(), "{body}");
    Person {
        password: own_password(id, 1),
        session,
    }
}

/// Appends a record with the integration token; returns (seq, hash).
async fn target(http: &Http, token: &str, n: usize) -> (u64, String) {
    let (status, r) = http
        .call("POST", "/v1/entries", Some(token), Some(record(n)))
        .await;
    assert_eq!(status, 201, "{r}");
    (
        r["seq"].as_u64().unwrap(),
        r["hash"].as_str().unwrap().to_owned(),
    )
}

async fn started(ledger: &TestLedger, tweak: impl FnOnce(&mut Config)) -> (Server, Http) {
    let mut config = ledger.config();
    tweak(&mut config);
    let server = ledger.start_with(&config).await;
    let http = Http::new(&server);
    (server, http)
}

/// Every entry of `kind`, parsed, oldest first (at most 1,000).
pub(crate) async fn kinds_of(ledger: &TestLedger, kind: &str) -> Vec<Value> {
    let rows = ledger
        .opened
        .store
        .list(&trailmark::store::EntryFilter {
            kind: Some(kind.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_slice(&r.canonical).unwrap())
        .collect()
}

#[tokio::test]
async fn part11_11_10_d_only_authenticated_people_and_systems_get_in() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let ana = person(&ledger, &http, "ana", "Ana Silva", &["qa_reviewer"]).await;
    assert_eq!(http.call("GET", "/v1/entries", None, None).await.0, 401);
    assert_eq!(
        http.call("HEAD", "/v1/entries", None, None).await.0,
        401,
        "HEAD needs what GET needs"
    );
    let (status, p) = http
        .call(
            "GET",
            "/v1/entries",
            Some("tms_000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(p["type"], "urn:trailmark:problem:unauthorized");
    assert_eq!(
        http.call("GET", "/v1/entries", Some(&ana.session), None)
            .await
            .0,
        200
    );
    let (status, p) = http.login("ana", "not her password").await;
    assert_eq!(
        (status, p["detail"].as_str().unwrap()),
        (401, "the user ID or password is wrong")
    );
    let (status, p2) = http.login("nobody", "not her password").await;
    assert_eq!(status, 401);
    assert_eq!(
        p["detail"], p2["detail"],
        "an unknown user ID reads like a wrong password"
    );
    assert_eq!(
        http.call("DELETE", "/v1/sessions/current", Some(&ana.session), None)
            .await
            .0,
        204
    );
    assert_eq!(
        http.call("GET", "/v1/entries", Some(&ana.session), None)
            .await
            .0,
        401,
        "logout ends the session"
    );
    let opened = kinds_of(&ledger, "security.session.opened").await;
    let closed = kinds_of(&ledger, "security.session.closed").await;
    assert_eq!(
        (opened.len(), closed.len()),
        (1, 1),
        "Annex 11 §12: who entered, and when they left"
    );
    assert_eq!(closed[0]["payload"]["cause"], "logout");
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

/// Every route × every role, expected allow/deny generated from the one matrix.
#[tokio::test]
async fn part11_11_10_g_authority_matrix_every_route_every_role() {
    use trailmark::api::ROUTES;
    use trailmark::identity::roles::{Role, grants};
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let mut principals: Vec<(String, String, Vec<Role>)> = Vec::new();
    for role in Role::ALL.into_iter().filter(|r| r.is_for_people()) {
        let id = format!("u-{}", role.as_str().replace('_', "-"));
        let p = person(
            &ledger,
            &http,
            &id,
            &format!("Holder of {}", role.as_str()),
            &[role.as_str()],
        )
        .await;
        principals.push((role.as_str().to_owned(), p.session, vec![role]));
    }
    principals.push((
        "integration".into(),
        ledger.admin_token.clone(),
        vec![Role::Integration],
    ));
    let mut checked = 0;
    for (name, credential, roles) in &principals {
        for (method, path, permission) in ROUTES {
            if *path == "/v1/sessions/current" {
                continue; // logout would end the session; checked last below
            }
            let concrete = path.replace("{seq}", "1").replace("{id}", "nobody");
            let (status, body) = http
                .call(method, &concrete, Some(credential), Some(json!({})))
                .await;
            match permission {
                None => assert!(
                    status != 401 && status != 403,
                    "{method} {path} is public, {name} got {status}: {body}"
                ),
                Some(p) if grants(roles, *p) => assert!(
                    status != 401 && status != 403,
                    "{name} holds {} for {method} {path} but got {status}: {body}",
                    p.as_str()
                ),
                Some(p) => {
                    assert_eq!(
                        status,
                        403,
                        "{name} lacks {} for {method} {path}: {body}",
                        p.as_str()
                    );
                    assert_eq!(body["permission"], p.as_str());
                }
            }
            checked += 1;
        }
        let (status, _) = http
            .call("DELETE", "/v1/sessions/current", Some(credential), None)
            .await;
        let expected = if grants(roles, trailmark::identity::roles::Permission::AccountSelf) {
            204
        } else {
            403
        };
        assert_eq!(status, expected, "{name}: logout");
    }
    assert_eq!(checked, principals.len() * (ROUTES.len() - 1));
    server.stop().await;
    ledger.finish().await;
}

/// A tiny webhook receiver standing in for the customer's alerting.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/alert",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alert", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn part11_11_300_d_the_fifth_wrong_password_locks_records_and_alerts_at_once() {
    let ledger = TestLedger::new().await;
    let (hook, mut alerts) = webhook().await;
    let (server, http) = started(&ledger, |c| c.identity.alert_webhook_url = Some(hook)).await;
    let bob = person(&ledger, &http, "bob", "Bob Marley", &["qa_approver"]).await;
    let (_, t) = target(&http, &ledger.admin_token, 1).await;
    for attempt in 1..=4 {
        assert_eq!(http.login("bob", "guess").await.0, 401, "attempt {attempt}");
    }
    assert!(
        kinds_of(&ledger, "security.account.locked")
            .await
            .is_empty(),
        "four failures do not lock"
    );
    assert_eq!(http.login("bob", "guess").await.0, 401);
    let locked = kinds_of(&ledger, "security.account.locked").await;
    assert_eq!(locked.len(), 1, "the lock is in the ledger");
    assert_eq!(locked[0]["payload"]["consecutive_failures"], 5);
    let alert = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .expect("the webhook fired")
        .unwrap();
    assert_eq!(
        (alert["alert"].as_str(), alert["user_id"].as_str()),
        (Some("account-locked"), Some("bob"))
    );
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(&ledger.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trailmark_accounts_locked_total 1"),
        "{metrics}"
    );
    // Even the right password is refused, with the answer any wrong one
    // gets: a log-in does not disclose that an account exists or is
    // locked; the lock is told to the administrators (ledger, log, metric,
    // webhook) above.
    let (status, p) = http.login("bob", &bob.password).await;
    assert_eq!(
        (status, p["detail"].as_str()),
        (401, Some("the user ID or password is wrong")),
        "even the right password"
    );
    let (status, _) = http
        .sign(&bob.session, &t, "approved", Some("bob"), &bob.password)
        .await;
    assert_eq!(
        status, 401,
        "a locked user cannot sign: the session ended with the lock"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn part11_11_200_a_continuous_session_first_signing_needs_both_components_then_password_only()
{
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |c| c.identity.session_idle_seconds = 600).await;
    let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (_, a) = target(&http, &ledger.admin_token, 1).await;
    let (_, b) = target(&http, &ledger.admin_token, 2).await;
    let (status, p) = http
        .sign(&rev.session, &a, "reviewed", None, &rev.password)
        .await;
    assert_eq!(status, 422, "first signing without the user ID: {p}");
    assert!(p["detail"].as_str().unwrap().contains("both components"));
    let (status, s1) = http
        .sign(&rev.session, &a, "reviewed", Some("rev"), &rev.password)
        .await;
    assert_eq!(status, 201, "{s1}");
    let (status, s2) = http
        .sign(&rev.session, &b, "reviewed", None, &rev.password)
        .await;
    assert_eq!(status, 201, "later signings need the password only: {s2}");
    let manifestation = |seq: u64| {
        let ledger = &ledger;
        async move {
            let e = ledger
                .opened
                .store
                .entry(Seq::new(seq).unwrap())
                .await
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_slice(&e.canonical).unwrap();
            v["payload"]["manifestation"]["authentication"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        manifestation(s1["seq"].as_u64().unwrap()).await,
        "user-id-and-password"
    );
    assert_eq!(
        manifestation(s2["seq"].as_u64().unwrap()).await,
        "password-in-session"
    );
    let (status, _) = http
        .sign(&rev.session, &b, "verified", None, "wrong password")
        .await;
    assert_eq!(status, 401, "the password is checked every time");
    ledger.opened.clock.advance(chrono::Duration::seconds(601));
    let (status, p) = http
        .sign(&rev.session, &b, "verified", None, &rev.password)
        .await;
    assert_eq!(
        status, 401,
        "after the inactivity timeout the session is over: {p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("inactivity"));
    let (_, login) = http.login("rev", &rev.password).await;
    let session = login["session"].as_str().unwrap();
    assert_eq!(
        http.sign(session, &b, "verified", None, &rev.password)
            .await
            .0,
        422,
        "a new session starts with both again"
    );
    assert_eq!(
        http.sign(session, &b, "verified", Some("rev"), &rev.password)
            .await
            .0,
        201
    );
    let closed = kinds_of(&ledger, "security.session.closed").await;
    assert_eq!(closed[0]["payload"]["cause"], "inactivity");
    server.stop().await;
    let report = ledger.verify().await.unwrap();
    assert_eq!(report.signatures, 3);
    ledger.finish().await;
}

#[tokio::test]
async fn part11_11_50_annex11_14_every_view_of_an_entry_shows_name_time_and_meaning() {
    let ledger = TestLedger::new().await;
    let (server, http) =
        started(&ledger, |c| c.identity.display_utc_offset = "+01:00".into()).await;
    let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (seq, hash) = target(&http, &ledger.admin_token, 1).await;
    let (status, s) = http
        .sign(&rev.session, &hash, "reviewed", Some("rev"), &rev.password)
        .await;
    assert_eq!(status, 201, "{s}");
    let (_, one) = http
        .call(
            "GET",
            &format!("/v1/entries/{seq}"),
            Some(&ledger.admin_token),
            None,
        )
        .await;
    let sig = &one["signatures"][0];
    assert_eq!(sig["printed_name"], "Rita Evans");
    assert_eq!(sig["meaning_text"], "Reviewed");
    assert!(sig["signed_at"].as_str().unwrap().ends_with('Z'));
    assert!(sig["signed_at_local"].as_str().unwrap().ends_with("+01:00"));
    let line = sig["line"].as_str().unwrap();
    assert!(line.starts_with("Rita Evans (rev), Reviewed, "), "{line}");
    let (_, page) = http
        .call(
            "GET",
            "/v1/entries?kind=qms.capa.opened",
            Some(&ledger.admin_token),
            None,
        )
        .await;
    assert_eq!(
        page["entries"][0]["signatures"][0]["line"], line,
        "the list shows the same rendering"
    );
    server.stop().await;
    ledger.finish().await;
}

/// An insider holding the ledger key appends a copy of a real signature onto
/// another entry through the sequencer: the chain is intact, verify must
/// still refuse the signature.
#[tokio::test]
async fn part11_11_70_annex11_14_a_signature_moved_or_altered_fails_verification() {
    use trailmark::ledger::{Actor, Hash, Subject, kind};
    use trailmark::sequencer::{AppendRequest, Sequencer};
    for case in ["copied onto another entry", "manifestation changed"] {
        let ledger = TestLedger::new().await;
        let (server, http) = started(&ledger, |_| {}).await;
        let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
        let (_, a) = target(&http, &ledger.admin_token, 1).await;
        let (_, b) = target(&http, &ledger.admin_token, 2).await;
        let (_, s) = http
            .sign(&rev.session, &a, "reviewed", Some("rev"), &rev.password)
            .await;
        server.stop().await;
        ledger.verify().await.unwrap();
        let stored = ledger
            .opened
            .store
            .entry(s["seq"].as_u64().and_then(Seq::new).unwrap())
            .await
            .unwrap()
            .unwrap();
        let entry: Value = serde_json::from_slice(&stored.canonical).unwrap();
        let mut payload = entry["payload"].clone();
        let parent = match case {
            "copied onto another entry" => {
                payload["target"] = b.clone().into();
                b.clone()
            }
            _ => {
                payload["manifestation"]["meaning"] = "approved".into();
                payload["manifestation"]["meaning_text"] = "Approved".into();
                a.clone()
            }
        };
        let sequencer = Sequencer::start(
            ledger.opened.store.clone(),
            ledger.opened.key.clone(),
            ledger.config().sequencer,
            Default::default(),
        )
        .await
        .unwrap();
        sequencer
            .handle()
            .append(AppendRequest {
                kind: kind::lookup("signature.applied").unwrap(),
                actor: Actor::parse("user:rev").unwrap(),
                subject: Subject::parse("person:E0001").unwrap(),
                correlation_id: None,
                idempotency_key: None,
                parents: vec![Hash::parse_hex(&parent).unwrap()],
                reason: None,
                payload: payload.as_object().unwrap().clone(),
                effects: vec![],
                parent_refs: vec![],
            })
            .await
            .unwrap();
        sequencer.shutdown().await;
        match ledger.verify().await {
            Err(AuditError::Signature(e)) => {
                assert_eq!(e.rule, 5, "{case}: {e}");
                assert!(e.to_string().contains("does not verify"), "{case}: {e}");
            }
            other => panic!("{case}: verify must refuse the signature, got {other:?}"),
        }
        ledger.finish_tampered().await;
    }
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn part11_11_300_c_old_signatures_survive_password_change_and_deactivation_and_the_inactive_cannot_sign()
 {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (_, a) = target(&http, &ledger.admin_token, 1).await;
    let (_, b) = target(&http, &ledger.admin_token, 2).await;
    let (_, c) = target(&http, &ledger.admin_token, 3).await;
    assert_eq!(
        http.sign(&rev.session, &a, "reviewed", Some("rev"), &rev.password)
            .await
            .0,
        201
    );
    // The user changes the password: the key is re-wrapped, the certificate stays.
    let (status, body) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&rev.session),
            Some(json!({"current_password": rev.password, "new_password": own_password("rev", 2)})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http
        .call("POST", "/v1/account/password", Some(&rev.session),
            Some(json!({"current_password": own_password("rev", 2), "new_password": own_password("rev", 1)})))
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("urn:trailmark:problem:invalid-request")),
        "no reuse of recent passwords: {body}"
    );
    assert_eq!(
        http.sign(&rev.session, &b, "reviewed", None, &own_password("rev", 2))
            .await
            .0,
        201
    );
    ledger.verify().await.unwrap();

    // An expired certificate cannot sign: load one valid for a minute, then
    // move the clock past its end.
    let (cert_pem, key_pem) = ledger.opened.dir.ca().unwrap().unwrap();
    let ca = trailmark::identity::ca::Ca::load(&cert_pem, &key_pem).unwrap();
    let user = ledger
        .opened
        .store
        .user(&uid("rev"))
        .await
        .unwrap()
        .unwrap();
    let key: [u8; 32] = user.public_key.clone().unwrap().try_into().unwrap();
    let now = ledger.opened.clock.now();
    let der = ca
        .issue_user_certificate(
            &uid("rev"),
            "Rita Evans",
            &key,
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::seconds(60),
        )
        .unwrap();
    let (status, body) = http
        .call("POST", "/v1/users/rev/certificate", Some(&admin.session), Some(json!({"certificate_pem": pem_of(&der), "reason": "short-lived certificate for the expiry test"})))
        .await;
    assert_eq!(status, 201, "{body}");
    ledger.opened.clock.advance(chrono::Duration::seconds(61));
    let (status, p) = http
        .sign(&rev.session, &c, "reviewed", None, &own_password("rev", 2))
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    assert_eq!(
        kinds_of(&ledger, "security.signature.refused").await.len(),
        1
    );
    // A fresh certificate, then deactivation.
    let (status, _) = http
        .call(
            "POST",
            "/v1/users/rev/certificate",
            Some(&admin.session),
            Some(json!({"reason": "renewal after expiry"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = http
        .call(
            "PATCH",
            "/v1/users/rev",
            Some(&admin.session),
            Some(json!({"status": "deactivated", "reason": "left the company"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["certificate_sha256"],
        Value::Null,
        "deactivation revokes the certificate"
    );
    assert_eq!(
        http.sign(&rev.session, &c, "reviewed", None, &own_password("rev", 2))
            .await
            .0,
        401,
        "the session ended"
    );
    assert_eq!(
        http.login("rev", &own_password("rev", 2)).await.0,
        401,
        "a deactivated user cannot log in, so cannot sign"
    );
    server.stop().await;
    let report = ledger.verify().await.unwrap();
    assert_eq!(report.signatures, 2, "both earlier signatures remain valid");
    ledger.finish().await;
}

#[tokio::test]
async fn part11_11_100_user_ids_are_unique_never_reused_and_identity_verification_is_recorded() {
    let ledger = TestLedger::new().await;
    let (server, http, channel) = started_with_mailbox(&ledger).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let body = json!({"user_id": "zoe", "printed_name": "Zoë Weber", "email": "zoe@example.com", "roles": ["operator"],
        "identity_verification_method": "ID card checked by HR", "reason": "new hire"});
    assert_eq!(
        http.call(
            "POST",
            "/v1/users",
            Some(&admin.session),
            Some(body.clone())
        )
        .await
        .0,
        201
    );
    let created = kinds_of(&ledger, "admin.user.created").await;
    let zoe = created
        .iter()
        .find(|e| e["payload"]["user_id"] == "zoe")
        .unwrap();
    assert_eq!(zoe["payload"]["identity_verified_by"], "user:root");
    assert_eq!(
        zoe["payload"]["identity_verification_method"],
        "ID card checked by HR"
    );
    assert_eq!(zoe["actor"], "user:root");
    assert_eq!(zoe["reason"], "new hire");
    assert_eq!(
        zoe["payload"]["one_time_password"],
        "sent to the person through the credential channel"
    );
    let first = channel
        .password_for("zoe")
        .expect("Zoë got her one-time password");
    assert_eq!(http.login("zoe", &first).await.0, 201);
    let (status, _) = http
        .call(
            "PATCH",
            "/v1/users/zoe",
            Some(&admin.session),
            Some(json!({"status": "deactivated", "reason": "left"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, p) = http
        .call("POST", "/v1/users", Some(&admin.session), Some(body))
        .await;
    assert_eq!(status, 409, "a deactivated ID stays taken: {p}");
    assert!(p["detail"].as_str().unwrap().contains("never reused"));
    let mut raw = ledger.db.raw().await;
    let err = raw
        .exec("DELETE FROM users WHERE user_id = 'zoe'")
        .await
        .expect_err("user rows are never deleted");
    assert!(err.contains("never reused"), "{err}");
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn annex11_12_access_changes_record_who_old_new_and_a_mandatory_reason() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    create_user(&ledger, "op", "Otto Park", &["operator"]).await;
    let size = ledger.opened.store.size().await.unwrap();
    let (status, p) = http
        .call(
            "PATCH",
            "/v1/users/op",
            Some(&admin.session),
            Some(json!({"roles": ["operator", "trainer"]})),
        )
        .await;
    assert_eq!(status, 400, "missing reason: {p}");
    assert!(p["detail"].as_str().unwrap().contains("reason"), "{p}");
    let (status, p) = http
        .call(
            "PATCH",
            "/v1/users/op",
            Some(&admin.session),
            Some(json!({"roles": ["operator", "trainer"], "reason": "  "})),
        )
        .await;
    assert_eq!(status, 422, "blank reason: {p}");
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "nothing appended"
    );
    let (status, _) = http
        .call(
            "PATCH",
            "/v1/users/op",
            Some(&admin.session),
            Some(json!({"roles": ["operator", "trainer"], "reason": "now also trains the line"})),
        )
        .await;
    assert_eq!(status, 200);
    let changed = kinds_of(&ledger, "admin.user.changed").await;
    let last = changed.last().unwrap();
    assert_eq!(last["actor"], "user:root");
    assert_eq!(last["reason"], "now also trains the line");
    assert_eq!(
        last["payload"]["changes"]["roles"],
        json!({"old": ["operator"], "new": ["operator", "trainer"]})
    );
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn part11_11_10_f_and_g_separation_of_duties_and_sequence() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let appr = person(&ledger, &http, "appr", "Amy Prover", &["qa_approver"]).await;
    let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (status, p) = http
        .call(
            "PATCH",
            "/v1/users/root",
            Some(&admin.session),
            Some(json!({"roles": ["administrator", "qa_approver"], "reason": "I want to sign"})),
        )
        .await;
    assert_eq!(
        status, 403,
        "an administrator cannot grant themselves signing roles: {p}"
    );
    // Amy authors a record, then cannot review or approve it.
    let (status, r) = http
        .call("POST", "/v1/entries", Some(&appr.session), Some(record(9)))
        .await;
    assert_eq!(status, 201, "{r}");
    let own = r["hash"].as_str().unwrap().to_owned();
    let (status, p) = http
        .sign(
            &appr.session,
            &own,
            "reviewed",
            Some("appr"),
            &appr.password,
        )
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("separation of duties")
    );
    // Approval before review is refused; after another person's review it passes.
    let (_, t) = target(&http, &ledger.admin_token, 1).await;
    let (status, p) = http
        .sign(&appr.session, &t, "approved", Some("appr"), &appr.password)
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("after review"));
    assert_eq!(
        http.sign(&rev.session, &t, "approved", Some("rev"), &rev.password)
            .await
            .0,
        403,
        "a reviewer has no authority to approve"
    );
    assert_eq!(
        http.sign(&rev.session, &t, "reviewed", Some("rev"), &rev.password)
            .await
            .0,
        201
    );
    assert_eq!(
        http.sign(&appr.session, &t, "approved", Some("appr"), &appr.password)
            .await
            .0,
        201
    );
    assert_eq!(
        http.sign(&appr.session, &t, "approved", None, &appr.password)
            .await
            .0,
        409,
        "once per meaning"
    );
    server.stop().await;
    assert_eq!(ledger.verify().await.unwrap().signatures, 2);
    ledger.finish().await;
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_appends_nothing() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let rev = person(&ledger, &http, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let (_, t) = target(&http, &ledger.admin_token, 1).await;
    let size = ledger.opened.store.size().await.unwrap();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown meaning",
            json!({"target": t, "meaning": "approve", "user_id": "rev", "password": rev.password}),
            422,
            "reviewed",
        ),
        (
            "malformed hash",
            json!({"target": "xyz", "meaning": "reviewed", "user_id": "rev", "password": rev.password}),
            422,
            "64",
        ),
        (
            "unknown hash",
            json!({"target": "ab".repeat(32), "meaning": "reviewed", "user_id": "rev", "password": rev.password}),
            404,
            "no entry",
        ),
        (
            "missing password",
            json!({"target": t, "meaning": "reviewed", "user_id": "rev"}),
            400,
            "password",
        ),
        (
            "unknown member",
            json!({"target": t, "meaning": "reviewed", "password": "x", "pin": 1}),
            400,
            "pin",
        ),
    ];
    for (what, body, status, hint) in cases {
        let (got, p) = http
            .call("POST", "/v1/signatures", Some(&rev.session), Some(body))
            .await;
        assert_eq!(got, status, "{what}: {p}");
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:trailmark:problem:"),
            "{what}: {p}"
        );
        assert!(p["detail"].as_str().unwrap().contains(hint), "{what}: {p}");
        assert!(
            !p.to_string().contains(&rev.password),
            "{what}: the password is never echoed"
        );
    }
    // An expired token.
    let token = ledger
        .opened
        .issue_token("lms", "expiry test")
        .await
        .unwrap();
    let days = ledger.config().identity.token_default_days;
    ledger
        .opened
        .clock
        .advance(chrono::Duration::days(i64::from(days) + 1));
    let size = size + 1;
    let (status, p) = http
        .call("POST", "/v1/entries", Some(&token), Some(record(2)))
        .await;
    assert_eq!(status, 401, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "nothing appended by any of it"
    );
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn part11_11_10_h_tokens_are_scoped_rotatable_revocable_and_can_be_pinned_to_a_client_certificate()
 {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |c| {
        c.identity.client_cert_header = Some("x-client-cert".into());
        // The test client stands in for the TLS proxy.
        c.transport.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let (status, t) = http.call("POST", "/v1/tokens", Some(&admin.session), Some(json!({"principal": "qms", "scopes": {"kinds": ["qms.*"], "permissions": ["entries:append"]}, "reason": "QMS connector"}))).await;
    assert_eq!(status, 201, "{t}");
    let qms = t["token"].as_str().unwrap().to_owned();
    let capa = json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-1", "payload": {}});
    assert_eq!(
        http.call("POST", "/v1/entries", Some(&qms), Some(capa.clone()))
            .await
            .0,
        201
    );
    let annotation = json!({"kind": "ledger.annotation", "subject": "person:E0001", "payload": {}});
    let (status, p) = http
        .call("POST", "/v1/entries", Some(&qms), Some(annotation))
        .await;
    assert_eq!(status, 403, "an annotation is outside a qms.* scope: {p}");
    assert_eq!(
        http.call("GET", "/v1/entries", Some(&qms), None).await.0,
        403,
        "no entries:read scope"
    );
    // Rotation: both work during the overlap.
    let (status, r) = http
        .call(
            "POST",
            &format!("/v1/tokens/{}/rotate", t["token_id"].as_str().unwrap()),
            Some(&admin.session),
            Some(json!({"overlap_minutes": 30, "reason": "quarterly rotation"})),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let new = r["new"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        http.call("POST", "/v1/entries", Some(&new), Some(capa.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        http.call("POST", "/v1/entries", Some(&qms), Some(capa.clone()))
            .await
            .0,
        201,
        "the old one still works in the overlap"
    );
    let (status, _) = http
        .call(
            "POST",
            &format!(
                "/v1/tokens/{}/revoke",
                r["new"]["token_id"].as_str().unwrap()
            ),
            Some(&admin.session),
            Some(json!({"reason": "connector decommissioned"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        http.call("POST", "/v1/entries", Some(&new), Some(capa.clone()))
            .await
            .0,
        401,
        "revoked at once"
    );
    // Pinned to a client certificate forwarded by the TLS proxy.
    let material = trailmark::identity::ca::create_ca("lms.example.com", "Example", 30).unwrap();
    let other = trailmark::identity::ca::create_ca("intruder.example.com", "Example", 30).unwrap();
    let (status, t) = http.call("POST", "/v1/tokens", Some(&admin.session), Some(json!({"principal": "lms", "client_certificate_pem": material.certificate_pem, "reason": "LMS connector, mTLS"}))).await;
    assert_eq!(status, 201, "{t}");
    let lms = t["token"].as_str().unwrap();
    let send = |cert: Option<&str>| {
        let mut r = reqwest::Client::new()
            .post(format!("{}/v1/entries", server.url()))
            .bearer_auth(lms)
            .json(&record(3));
        if let Some(c) = cert {
            r = r.header(
                "x-client-cert",
                c.replace('\n', "%0A")
                    .replace(' ', "%20")
                    .replace('+', "%2B"),
            );
        }
        r.send()
    };
    assert_eq!(
        send(None).await.unwrap().status(),
        401,
        "without the certificate"
    );
    assert_eq!(
        send(Some(&other.certificate_pem)).await.unwrap().status(),
        401,
        "another certificate"
    );
    assert_eq!(
        send(Some(&material.certificate_pem))
            .await
            .unwrap()
            .status(),
        201,
        "the pinned certificate"
    );
    server.stop().await;
    ledger.verify().await.unwrap();
    ledger.finish().await;
}

#[tokio::test]
async fn source_system_signatures_survive_the_hand_over_labelled_and_verified() {
    use ed25519_dalek::Signer as _;
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let content = b"CAPA-2026-014 closure approval v3";
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let good = json!({"system": "qms", "signer": "jdoe", "printed_name": "Jane Doe", "meaning": "Approval",
        "signed_at": "2026-11-20T10:00:00Z", "method": "user ID + password", "algorithm": "ed25519",
        "signature": b64(&key.sign(content).to_bytes()), "signed_content": b64(content), "public_key": b64(key.verifying_key().as_bytes())});
    let mut forged = good.clone();
    forged["signed_content"] = b64(b"CAPA-2026-014 closure approval v4").into();
    let bare = json!({"system": "qms", "signer": "mlee", "printed_name": "Min Lee", "meaning": "Review",
        "signed_at": "2026-11-19T09:00:00Z", "method": "SSO + PIN"});
    let (status, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(
                json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-2026-014",
        "payload": {"capa": "CAPA-2026-014", "source_signatures": [good, forged, bare]}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (_, view) = http
        .call(
            "GET",
            &format!("/v1/entries/{}", r["seq"]),
            Some(&ledger.admin_token),
            None,
        )
        .await;
    let shown: Vec<(&str, &str)> = view["source_signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap(),
                s["verification"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("source-system", "valid"),
            ("source-system", "invalid"),
            ("source-system", "not-verifiable")
        ]
    );
    assert_eq!(
        view["entry"]["payload"]["source_signatures"][0]["signer"], "jdoe",
        "stored verbatim"
    );
    let (status, p) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(
                json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-1",
        "payload": {"source_signatures": [{"system": "qms"}]}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    server.stop().await;
    ledger.finish().await;
}

/// The base URL a `trailmark serve` writing its output to `log` prints once
/// it listens (within 30 s).
pub(crate) async fn serving_url_in(log: &std::path::Path) -> String {
    for _ in 0..1500 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find_map(|l| l.strip_prefix("trailmark serving "))
        {
            let url = line.split(" on ").nth(1).unwrap_or_default();
            return url
                .split(' ')
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not print where it listens within 30 s: {log:?}");
}

/// No password, token, session secret or private key appears in the
/// server's logs (at debug level), its error bodies, the ledger or an export.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario: every secret made, then every place searched
async fn no_secret_reaches_logs_errors_the_ledger_or_exports() {
    use std::process::Stdio;
    let ledger = TestLedger::new().await;
    create_user(&ledger, "root", "Ada Admin", &["administrator"]).await;
    create_user(&ledger, "rev", "Rita Evans", &["qa_reviewer"]).await;
    let log_path = ledger.dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // Port 0: the server binds a port the system chooses and prints it, so
    // no other process can take it between choosing and binding.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trailmark"))
        .args(["serve", "--data"])
        .arg(ledger.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("TRAILMARK_DATA")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = Http {
        http: reqwest::Client::new(),
        base: serving_url_in(&log_path).await,
    };
    for _ in 0..200 {
        let ready = http.http.get(format!("{}/readyz", http.base)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut secrets: Vec<String> = vec![
        initial_password("root"),
        own_password("root", 1),
        initial_password("rev"),
        own_password("rev", 1),
        "wrong-guess-Pa55".into(),
        ledger.admin_token.splitn(3, '_').nth(2).unwrap().to_owned(),
    ];
    let mut bodies = Vec::new();
    let mut sessions = Vec::new();
    for (id, _) in [("root", 0), ("rev", 1)] {
        let (_, login) = http.login(id, &initial_password(id)).await;
        let session = login["session"].as_str().unwrap().to_owned();
        secrets.push(session.splitn(3, '_').nth(2).unwrap().to_owned());
        let (_, r) = http.call("POST", "/v1/account/password", Some(&session),
            Some(json!({"current_password": initial_password(id), "new_password": own_password(id, 1)}))).await;
        bodies.push(r);
        sessions.push(session);
    }
    bodies.push(http.login("rev", "wrong-guess-Pa55").await.1);
    bodies.push(
        http.call(
            "POST",
            "/v1/account/password",
            Some(&sessions[1]),
            Some(json!({"current_password": "wrong-guess-Pa55", "new_password": "short"})),
        )
        .await
        .1,
    );
    bodies.push(
        http.call(
            "POST",
            "/v1/account/password",
            Some(&sessions[1]),
            Some(json!({"current_password": own_password("rev", 1), "new_password": 12345})),
        )
        .await
        .1,
    );
    let (_, t) = http
        .call(
            "POST",
            "/v1/tokens",
            Some(&sessions[0]),
            Some(json!({"principal": "qms", "reason": "connector"})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_owned();
    secrets.push(token.splitn(3, '_').nth(2).unwrap().to_owned());
    let (_, r) = http
        .call("POST", "/v1/entries", Some(&token), Some(record(1)))
        .await;
    bodies.push(
        http.sign(
            &sessions[1],
            r["hash"].as_str().unwrap(),
            "reviewed",
            Some("rev"),
            "wrong-guess-Pa55",
        )
        .await
        .1,
    );
    bodies.push(
        http.sign(
            &sessions[1],
            r["hash"].as_str().unwrap(),
            "reviewed",
            Some("rev"),
            &own_password("rev", 1),
        )
        .await
        .1,
    );
    bodies.push(
        http.call(
            "POST",
            "/v1/entries",
            Some(&format!("{token}x")),
            Some(record(2)),
        )
        .await
        .1,
    );
    bodies.push(
        http.call("DELETE", "/v1/sessions/current", Some(&sessions[1]), None)
            .await
            .1,
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .unwrap();
    child.wait().await.unwrap();
    // Private keys: the user's unwrapped seed and the CA key.
    let user = ledger
        .opened
        .store
        .user(&uid("rev"))
        .await
        .unwrap()
        .unwrap();
    let seed = trailmark::identity::password::unwrap(
        user.wrapped_key.as_deref().unwrap(),
        &own_password("rev", 1),
        &uid("rev"),
    )
    .unwrap();
    secrets.push(hex::encode(seed));
    secrets.push(base64::engine::general_purpose::STANDARD.encode(seed));
    let (_, ca_key) = ledger.opened.dir.ca().unwrap().unwrap();
    secrets.push(ca_key.lines().nth(1).unwrap().to_owned());
    secrets.push(hex::encode(ledger.opened.key.seed()));
    let export = ledger.dir.path().join("export");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_trailmark"))
        .args(["export", "--data"])
        .arg(ledger.data_dir())
        .arg("--out")
        .arg(&export)
        .env_remove("DATABASE_URL")
        .env_remove("TRAILMARK_DATA")
        .status()
        .unwrap();
    assert!(status.success());
    let mut haystacks = vec![
        ("server log", std::fs::read_to_string(&log_path).unwrap()),
        (
            "error and response bodies",
            serde_json::to_string(&bodies).unwrap(),
        ),
        (
            "export entries",
            std::fs::read_to_string(export.join("entries.jsonl")).unwrap(),
        ),
    ];
    let mut ledger_text = String::new();
    for seq in 0..ledger.opened.store.size().await.unwrap() {
        ledger_text.push_str(&String::from_utf8_lossy(
            &ledger
                .opened
                .store
                .entry(Seq::new(seq).unwrap())
                .await
                .unwrap()
                .unwrap()
                .canonical,
        ));
    }
    haystacks.push(("ledger", ledger_text));
    assert!(
        haystacks[0].1.contains("wrong password"),
        "the log is real and at debug level"
    );
    assert!(
        haystacks[2].1.contains("signature.applied"),
        "the export holds the signature"
    );
    assert!(
        secrets.iter().all(|s| s.len() >= 16),
        "every secret is long enough that a match means a leak"
    );
    for (where_, text) in &haystacks {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({} chars) appears in the {where_}",
                secret.len()
            );
        }
    }
    ledger.finish().await;
}

/// §11.300(b) periodic revision, §11.300(c) loss management, and a signing
/// policy change that `verify` applies from the seq it was recorded at.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario: expiry, then loss through the channel, then a policy change
async fn part11_11_300_b_c_expiry_forces_a_change_loss_reissues_the_key_and_policy_changes_are_recorded()
 {
    let ledger = TestLedger::new().await;
    let (server, http, channel) = started_with_mailbox(&ledger).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let op = person(&ledger, &http, "op", "Otto Park", &["operator"]).await;
    let (_, t) = target(&http, &ledger.admin_token, 1).await;
    // Expiry: the password's age runs out.
    let mut raw = ledger.db.raw().await;
    raw.exec(
        "UPDATE users SET password_expires_at = '2020-01-01T00:00:00.000000Z' WHERE user_id = 'op'",
    )
    .await
    .unwrap();
    let (status, p) = http
        .call("GET", "/v1/entries", Some(&op.session), None)
        .await;
    assert_eq!(
        (status, p["type"].as_str()),
        (403, Some("urn:trailmark:problem:password-change-required")),
        "{p}"
    );
    let (status, _) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&op.session),
            Some(json!({"current_password": op.password, "new_password": own_password("op", 2)})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        http.call("GET", "/v1/entries", Some(&op.session), None)
            .await
            .0,
        200
    );
    // Loss: the administrator resets the password; the certificate is revoked.
    let old_cert = ledger
        .opened
        .store
        .user(&uid("op"))
        .await
        .unwrap()
        .unwrap()
        .certificate_sha256
        .unwrap();
    let (status, v) = http
        .call(
            "POST",
            "/v1/users/op/password",
            Some(&admin.session),
            Some(json!({"reason": "forgotten password; identity confirmed by phone call-back"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["certificate_sha256"], Value::Null);
    assert_eq!(v["must_change_password"], true);
    // The one-time password went to Otto through the channel, not to the
    // administrator.
    assert!(!v.to_string().contains("one_time_password"), "{v}");
    let temporary = channel.password_for("op").expect("sent to the person");
    let (_, login) = http.login("op", &temporary).await;
    let session = login["session"].as_str().unwrap().to_owned();
    let (status, _) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&session),
            Some(json!({"current_password": temporary, "new_password": own_password("op", 3)})),
        )
        .await;
    assert_eq!(status, 200);
    let new_cert = ledger
        .opened
        .store
        .user(&uid("op"))
        .await
        .unwrap()
        .unwrap()
        .certificate_sha256
        .unwrap();
    assert_ne!(old_cert, new_cert, "a new key and certificate");
    let set = kinds_of(&ledger, "admin.user.password_set").await;
    assert!(
        set.iter()
            .any(|e| e["payload"]["certificate_revoked"]["cause"] == "password-reset")
    );
    // Policy: operators may not sign `verified` until the policy says so.
    assert_eq!(
        http.sign(&session, &t, "verified", Some("op"), &own_password("op", 3))
            .await
            .0,
        403
    );
    let (_, mut policy) = http
        .call("GET", "/v1/signing-policy", Some(&admin.session), None)
        .await;
    policy["meanings"]["verified"]["roles"]
        .as_array_mut()
        .unwrap()
        .push("operator".into());
    let (status, p) = http
        .call(
            "PUT",
            "/v1/signing-policy",
            Some(&admin.session),
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(status, 400, "a reason is required: {p}");
    let (status, p) = http
        .call(
            "PUT",
            "/v1/signing-policy",
            Some(&admin.session),
            Some(json!({"policy": policy, "reason": "operators verify line clearance"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        http.sign(&session, &t, "verified", Some("op"), &own_password("op", 3))
            .await
            .0,
        201
    );
    let changes = kinds_of(&ledger, "admin.signing_policy.changed").await;
    assert_eq!(changes.len(), 2, "the initial policy and the change");
    assert!(
        !changes[1]["payload"]["old"]["meanings"]["verified"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("operator"))
    );
    server.stop().await;
    assert_eq!(
        ledger.verify().await.unwrap().signatures,
        1,
        "verify applies the policy in force at the signature"
    );
    ledger.finish().await;
}

/// §11.300 with NIST SP 800-63B §3.1.1.2: a password long enough for the
/// length rule but easy to guess (a repeat, a sequence, a repeated word,
/// blanks, the user's own name) is refused over the API with 422 and the
/// reason, appends nothing and is never echoed; an administrator sets
/// none; a strong one is accepted.
#[tokio::test]
async fn part11_11_300_guessable_passwords_are_refused_with_the_reason_and_strong_ones_accepted() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger, |_| {}).await;
    let admin = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let md = person(
        &ledger,
        &http,
        "mdel",
        "Marguerite Delacroix",
        &["operator"],
    )
    .await;
    let size = ledger.opened.store.size().await.unwrap();
    let refused = |status: u16, p: &Value, weak: &str, reason: &str| {
        assert_eq!(status, 422, "{weak:?}: {p}");
        assert_eq!(p["type"], "urn:trailmark:problem:invalid-request", "{p}");
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("too easy to guess") && detail.contains(reason),
            "{weak:?}: the refusal says why: {detail}"
        );
        assert!(
            weak.trim().is_empty() || !p.to_string().contains(weak.trim()),
            "{weak:?} is echoed: {p}"
        );
    };
    for (weak, reason) in [
        ("aaaaaaaaaaaa", "Repeats like"),
        ("123456789012", "Sequences like abc"),
        ("passwordpassword", "Repeats like"),
        ("            ", "Repeats like"),
        ("Marguerite Delacroix", "your name, user ID or email"),
        ("Delacroix Marguerite 1", "your name, user ID or email"),
        ("marguerite@example.com", "your name, user ID or email"),
    ] {
        let (status, p) = http
            .call(
                "POST",
                "/v1/account/password",
                Some(&md.session),
                Some(json!({"current_password": md.password, "new_password": weak})),
            )
            .await;
        refused(status, &p, weak, reason);
    }
    // An administrator cannot set a password at all (SIGNATURES.md §4.2):
    // a reset or a new user names none, and one given is refused unread.
    for (path, body) in [
        (
            "/v1/users/mdel/password",
            json!({"new_password": "qwertyuiopasdf", "reason": "password lost; identity checked"}),
        ),
        (
            "/v1/users",
            json!({"user_id": "weak1", "printed_name": "Walter Eakins", "email": "weak1@example.com",
            "roles": ["operator"], "identity_verification_method": "passport checked in person",
            "initial_password": "Walter Eakins 2026", "reason": "new hire"}),
        ),
    ] {
        let (status, p) = http
            .call("POST", path, Some(&admin.session), Some(body))
            .await;
        assert_eq!(status, 400, "{path}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("unknown field"),
            "{p}"
        );
        assert!(
            !p.to_string().contains("qwertyuiopasdf")
                && !p.to_string().contains("Walter Eakins 2026")
        );
    }
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "a refused password appends nothing"
    );
    let strong = "violet-ferry-Quantum-41-lantern";
    let (status, body) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&md.session),
            Some(json!({"current_password": md.password, "new_password": strong})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http.login("mdel", strong).await.0, 201);
    server.stop().await;
    ledger.finish().await;
}
