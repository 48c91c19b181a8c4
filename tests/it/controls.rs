//! Part 11 controls held against races and insiders (issue 17): the
//! lockout cannot be outrun by concurrent guesses, no session outlives a
//! credential change, log-in answers tell nobody which accounts exist or
//! are locked, and the last administrator and approver stay.

use serde_json::{Value, json};

use crate::harness::TestLedger;
use crate::people::{
    Http, create_user, initial_password, kinds_of, own_password, person, started_with_mailbox,
};

async fn started(ledger: &TestLedger) -> (trailmark::instance::Server, Http) {
    let server = ledger.start_with(&ledger.config()).await;
    let http = Http::new(&server);
    (server, http)
}

/// Whether `session` is still accepted.
async fn works(http: &Http, session: &str) -> bool {
    http.call("GET", "/v1/account", Some(session), None).await.0 == 200
}

async fn change(http: &Http, admin: &str, id: &str, body: Value) -> (u16, Value) {
    http.call("PATCH", &format!("/v1/users/{id}"), Some(admin), Some(body))
        .await
}

/// 64 log-ins sent at once, one of them with the right password: the count
/// is taken before the password is checked, so at most the threshold is
/// evaluated, the account ends locked, and whatever session the race gave
/// stops working with the lock and stays dead after an unlock.
#[tokio::test]
async fn concurrent_guesses_never_yield_a_session_past_the_lockout() {
    let ledger = TestLedger::new().await;
    let (_server, http) = started(&ledger).await;
    let root = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let victim = person(&ledger, &http, "race", "Rae Race", &["qa_reviewer"]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (http, password) = (http.clone(), victim.password.clone());
        tasks.spawn(async move {
            let guess = if i == 40 {
                password
            } else {
                format!("wrong-guess-{i}-Qz")
            };
            http.login("race", &guess).await
        });
    }
    let mut won = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        match status {
            201 => won.push(body["session"].as_str().unwrap().to_owned()),
            401 => assert_eq!(body["detail"], "the user ID or password is wrong", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(won.len() <= 1, "at most the right password wins: {won:?}");
    // 63 wrong guesses for a threshold of 5: the account is locked once.
    let locks = kinds_of(&ledger, "security.account.locked").await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    let (status, _) = http.login("race", &victim.password).await;
    assert_eq!(status, 401, "a locked account does not log in");
    for s in won.iter().chain([&victim.session]) {
        assert!(!works(&http, s).await, "the lock ends every session");
    }
    let (status, body) = change(
        &http,
        &root.session,
        "race",
        json!({"status": "active", "reason": "identity confirmed by phone"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for s in won.iter().chain([&victim.session]) {
        assert!(
            !works(&http, s).await,
            "an unlock does not revive a session"
        );
    }
    let (status, _) = http.login("race", &victim.password).await;
    assert_eq!(
        status, 201,
        "after the unlock the right password works again"
    );
    ledger.finish().await;
}

/// Unknown, deactivated, locked and wrong: one answer for all four.
#[tokio::test]
async fn log_in_answers_do_not_tell_which_accounts_exist_or_are_locked() {
    let ledger = TestLedger::new().await;
    let (_server, http) = started(&ledger).await;
    let root = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    person(&ledger, &http, "lock1", "Lou Locked", &["qa_reviewer"]).await;
    person(&ledger, &http, "gone1", "Gil Gone", &["qa_reviewer"]).await;
    for _ in 0..5 {
        http.login("lock1", "wrong-guess-Qz-1").await;
    }
    let (status, _) = change(
        &http,
        &root.session,
        "gone1",
        json!({"status": "deactivated", "reason": "left the company"}),
    )
    .await;
    assert_eq!(status, 200);
    let answers = [
        http.login("nobody-here", "some-password-Qz-1").await,
        http.login("Not A User ID", "some-password-Qz-1").await,
        http.login("lock1", &own_password("lock1", 1)).await,
        http.login("gone1", &own_password("gone1", 1)).await,
        http.login("root", "wrong-guess-Qz-2").await,
    ];
    for (status, body) in &answers {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(body, &answers[0].1, "the same answer for every refusal");
    }
    ledger.finish().await;
}

/// A password change ends the user's other sessions (a restricted one
/// included: it never gains permissions); a reset, a role change and a
/// deactivation end them all. Each ending is recorded.
#[tokio::test]
async fn sessions_end_when_credentials_change() {
    let ledger = TestLedger::new().await;
    let (_server, http, _channel) = started_with_mailbox(&ledger).await;
    let root = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    // Two sessions opened with the one-time password: both restricted.
    create_user(&ledger, "ses1", "Sam Sessions", &["qa_reviewer"]).await;
    let (_, a) = http.login("ses1", &initial_password("ses1")).await;
    let (_, b) = http.login("ses1", &initial_password("ses1")).await;
    let (a, b) = (
        a["session"].as_str().unwrap(),
        b["session"].as_str().unwrap(),
    );
    let (status, body) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(b),
            Some(json!({"current_password": initial_password("ses1"), "new_password": own_password("ses1", 1)})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(works(&http, b).await, "the session that changed it goes on");
    assert!(
        !works(&http, a).await,
        "the other restricted session never gains permissions"
    );
    let closed = kinds_of(&ledger, "security.session.closed").await;
    assert!(
        closed.iter().any(
            |e| e["payload"]["session_id"] == a.split('_').nth(1).unwrap()
                && e["payload"]["cause"] == "password changed"
        ),
        "the ending is recorded: {closed:?}"
    );
    // A role change ends every session.
    let (_, c) = http.login("ses1", &own_password("ses1", 1)).await;
    let c = c["session"].as_str().unwrap().to_owned();
    let (status, _) = change(
        &http,
        &root.session,
        "ses1",
        json!({"roles": ["qa_reviewer", "trainer"], "reason": "now also trains"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !works(&http, b).await && !works(&http, &c).await,
        "a role change ends them"
    );
    // A reset by an administrator ends every session.
    let (_, d) = http.login("ses1", &own_password("ses1", 1)).await;
    let d = d["session"].as_str().unwrap().to_owned();
    assert!(works(&http, &d).await);
    let (status, body) = http
        .call(
            "POST",
            "/v1/users/ses1/password",
            Some(&root.session),
            Some(json!({"reason": "forgot it"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!works(&http, &d).await, "a reset ends them");
    ledger.finish().await;
}

/// The last active administrator cannot remove their own role or leave,
/// the last approver cannot be deactivated, and an empty role set is
/// refused; each refusal appends nothing.
#[tokio::test]
async fn the_last_administrator_and_approver_stay() {
    let ledger = TestLedger::new().await;
    let (_server, http) = started(&ledger).await;
    let root = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    person(&ledger, &http, "appr", "Abe Approver", &["qa_approver"]).await;
    let size = ledger.opened.store.size().await.unwrap();
    for (id, body, status, says) in [
        (
            "root",
            json!({"roles": ["inspector"], "reason": "step down"}),
            409,
            "last active administrator",
        ),
        (
            "appr",
            json!({"status": "deactivated", "reason": "left"}),
            409,
            "approve",
        ),
        (
            "appr",
            json!({"roles": [], "reason": "no roles"}),
            422,
            "at least one role",
        ),
    ] {
        let (s, b) = change(&http, &root.session, id, body).await;
        assert_eq!(s, status, "{b}");
        assert!(b["detail"].as_str().unwrap().contains(says), "{b}");
    }
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "nothing appended"
    );
    // With a second administrator the first may step down.
    person(&ledger, &http, "root2", "Bea Admin", &["administrator"]).await;
    let (s, b) = change(
        &http,
        &root.session,
        "root",
        json!({"roles": ["inspector"], "reason": "handing over to root2"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    ledger.finish().await;
}

/// An administrator never learns a person's password, so cannot sign in
/// their name (SIGNATURES.md §4.2): no password can be given over the API,
/// without a credential channel no account is made or reset, and a reset's
/// one-time password goes only to the person, who alone then makes the new
/// signing key.
#[tokio::test]
async fn an_administrator_never_learns_a_persons_password() {
    let ledger = TestLedger::new().await;
    let (server, http) = started(&ledger).await;
    let root = person(&ledger, &http, "root", "Ada Admin", &["administrator"]).await;
    let vic = person(&ledger, &http, "vic", "Vic Victim", &["qa_reviewer"]).await;
    let size = ledger.opened.store.size().await.unwrap();
    let new_user = json!({"user_id": "nat", "printed_name": "Nat New", "email": "nat@example.com",
        "roles": ["operator"], "identity_verification_method": "passport checked in person", "reason": "new hire"});
    for (path, body) in [
        ("/v1/users", new_user.clone()),
        ("/v1/users/vic/password", json!({"reason": "forgot it"})),
    ] {
        let (s, p) = http
            .call("POST", path, Some(&root.session), Some(body))
            .await;
        assert_eq!(s, 409, "{path}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("credential channel"),
            "{p}"
        );
    }
    assert_eq!(
        ledger.opened.store.size().await.unwrap(),
        size,
        "nothing appended"
    );
    server.stop().await;

    let (_server, http, channel) = started_with_mailbox(&ledger).await;
    let (_, login) = http.login("root", &root.password).await;
    let admin = login["session"].as_str().unwrap().to_owned();
    let (s, v) = http
        .call(
            "POST",
            "/v1/users/vic/password",
            Some(&admin),
            Some(json!({"reason": "lost; identity checked by phone"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let sent = channel.password_for("vic").expect("sent to Vic");
    assert!(
        !v.to_string().contains(&sent),
        "the administrator's answer holds no password"
    );
    let reset = kinds_of(&ledger, "admin.user.password_set").await;
    assert!(
        !serde_json::to_string(&reset).unwrap().contains(&sent),
        "nor does the ledger"
    );
    // What the administrator knows opens nothing: not Vic's old password.
    assert_eq!(http.login("vic", &vic.password).await.0, 401);
    // Vic, with the password only Vic received, chooses a new one and signs.
    let (s, l) = http.login("vic", &sent).await;
    assert_eq!(s, 201, "{l}");
    let session = l["session"].as_str().unwrap().to_owned();
    let (s, b) = http
        .call(
            "POST",
            "/v1/account/password",
            Some(&session),
            Some(json!({"current_password": sent, "new_password": own_password("vic", 2)})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, r) = http
        .call(
            "POST",
            "/v1/entries",
            Some(&ledger.admin_token),
            Some(crate::harness::record(7)),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, sig) = http
        .sign(
            &session,
            r["hash"].as_str().unwrap(),
            "reviewed",
            Some("vic"),
            &own_password("vic", 2),
        )
        .await;
    assert_eq!(s, 201, "{sig}");
    ledger.finish().await;
}
