//! `trailmark demo`: the seeds' three scenarios end to end on a fresh
//! embedded ledger. A QMS and an LMS run inside the process as real HTTP
//! webhook receivers ([`crate::sim::Receiver`]) that verify Trailmark's
//! Standard Webhooks signatures; they and HR send their events to the real
//! server over HTTP with their own tokens, and QA signs in and signs.
//!
//! The business events carry their own times: the demo plays the last six
//! weeks of a filling site in a few seconds, so event times (what happened
//! when) lie in the past while recording times (what Trailmark knew when)
//! are now. The compliance report shows both for each assignment: when the
//! person had to be trained (`required_from`, business time) and when
//! Trailmark recorded it, with the recording lag between them, so no row
//! reads as a completion before its assignment unless the training really
//! came before the duty (and then the row says so).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, NaiveTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::audit::{self, VerifyOptions};
use crate::config::TargetConfig;
use crate::instance::{Instance, Server};
use crate::integration::webhook::Secret;
use crate::sim::Receiver;
use crate::store::Store;

const MARKER: &str = ".trailmark-demo";
const WAIT: Duration = Duration::from_secs(60);

/// The operators' job function, mapped to SOP-017.
const OPERATOR: &str = "filling-operator";
const SOP: &str = "SOP-017";
const DEVIATION: &str = "DEV-2026-118";
const CAPA: &str = "CAPA-2026-031";
/// Operators: E1001 to E1040.
const OPERATORS: usize = 40;
/// Involved in the deviation: one trained on v5 before it, one not.
const DEVIATION_PEOPLE: [&str; 2] = ["E1009", "E1014"];
/// Completes v5 after its due date.
const LATE: &str = "E1017";
/// Has not completed v5 at all.
const OVERDUE: &str = "E1023";

const FIRST: [&str; 20] = [
    "Anna", "Łukasz", "Zoë", "Sean", "Priya", "Jürgen", "María", "Kenji", "Fatima", "Olivia",
    "Björn", "Chloé", "Dawid", "Elif", "Farah", "Gustav", "Hana", "Ifeoma", "João", "Leila",
];
const LAST: [&str; 12] = [
    "Müller",
    "Nowak",
    "Dubois",
    "O'Brien",
    "Raman",
    "Weiß",
    "González",
    "Sato",
    "Al-Sayed",
    "Lindqvist",
    "Ødegaard",
    "Nakamura",
];

/// The HTTP side of the demo: the server's URL and a client.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !bearer.is_empty() {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, bearer, body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Sends CloudEvents as one batch.
    async fn events(&self, token: &str, events: Vec<Value>) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(token)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(events).to_string())
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "POST /v1/events answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn day(t: &str) -> &str {
    t.get(..10).unwrap_or(t)
}

/// A CloudEvent from `system` (`qms`, `lms`, `hr`).
fn ce(system: &str, ty: &str, id: &str, time: DateTime<Utc>, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": format!("https://{system}.demo.example"),
           "type": ty, "time": rfc(time), "data": data})
}

fn operator_id(i: usize) -> String {
    format!("E{}", 1001 + i)
}

/// How many outbox messages are dead letters.
async fn dead_letters(store: &crate::store::Store) -> anyhow::Result<i64> {
    Ok(store
        .outbox_status_counts()
        .await?
        .into_iter()
        .find(|(status, _)| status == "dead")
        .map_or(0, |(_, n)| n))
}

/// Waits until the rules worker has applied everything received and the
/// outbox is delivered.
async fn settle(store: &crate::store::Store) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let left = crate::integration::queries::backlog(store).await?;
        if left.is_idle() {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!(
                "the integration did not settle in {} s: {} events not applied, {} messages not delivered",
                WAIT.as_secs(),
                left.events,
                left.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulated system: its webhook receiver, with the secret written
/// where the target configuration expects it.
async fn system(data: &Path, name: &str) -> anyhow::Result<(Receiver, TargetConfig)> {
    let secret = Secret::generate();
    let file = format!("{name}.whsec");
    write_private(&data.join(&file), &secret.to_text())?;
    let receiver = Receiver::start(name, secret).await?;
    let target = TargetConfig {
        url: receiver.url(),
        secret_file: file,
        ..TargetConfig::default()
    };
    Ok((receiver, target))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A QA user who has replaced the one-time password and holds a session.
struct Staff {
    id: &'static str,
    name: &'static str,
    session: String,
    password: String,
}

async fn sign_in(
    api: &Api,
    id: &'static str,
    name: &'static str,
    initial: &str,
) -> anyhow::Result<Staff> {
    let login = api
        .ok(
            Method::POST,
            "/v1/sessions",
            "",
            Some(json!({"user_id": id, "password": initial})),
        )
        .await?;
    let session = login["session"].as_str().unwrap_or_default().to_owned();
    let password = crate::identity::password::one_time_password(id);
    api.ok(
        Method::POST,
        "/v1/account/password",
        &session,
        Some(json!({"current_password": initial, "new_password": password})),
    )
    .await?;
    Ok(Staff {
        id,
        name,
        session,
        password,
    })
}

/// The QA staff: user id, printed name, role.
const STAFF: [(&str, &str, &str); 3] = [
    ("druiz", "Dana Ruiz", "qa_approver"),
    ("revans", "Rita Evans", "qa_reviewer"),
    ("mchen", "Marcus Chen", "qa_approver"),
];

/// What every step of the demo shares: the ledger and its server, the
/// simulated systems and the tokens they send with.
struct Demo {
    data: PathBuf,
    opened: Instance,
    server: Server,
    api: Api,
    store: Store,
    integration_token: String,
    qms_token: String,
    lms_token: String,
    hr_token: String,
    /// The QA staff's one-time passwords, in the order of [`STAFF`].
    initial: Vec<String>,
    qms: Receiver,
    lms: Receiver,
    /// The assignments the LMS has received.
    lms_assignments: Arc<Mutex<Vec<Value>>>,
}

impl Demo {
    /// The assignments the LMS has received that satisfy `keep`.
    fn lms_assignments(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.lms_assignments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|a| keep(a))
            .cloned()
            .collect()
    }
}

/// The site's business time: now, and hours of days before it.
struct Timeline {
    now: DateTime<Utc>,
}

impl Timeline {
    fn at(&self, days_ago: i64, hour: u32) -> DateTime<Utc> {
        (self.now.date_naive() - chrono::Days::new(days_ago.unsigned_abs()))
            .and_time(NaiveTime::from_hms_opt(hour, 0, 0).expect("a valid hour"))
            .and_utc()
    }
}

/// QA's three roles in a CAPA closure, signed in.
struct Qa {
    recorder: Staff,
    reviewer: Staff,
    approver: Staff,
}

/// The period of the compliance record and the reports, RFC 3339.
struct Period {
    from: String,
    to: String,
}

/// A report the demo wrote: its id, file and size in bytes.
type Written = (String, PathBuf, usize);

/// Runs the demo in `data` (created fresh; a previous demo there is
/// replaced). With `serve`, keeps the server and the simulated systems
/// running on the configured listen address until interrupted.
///
/// # Errors
/// If the directory holds something that is not a demo, or any step fails.
pub async fn run(data: &Path, serve: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    clear(data)?;
    let demo = set_up(data, serve).await?;
    print_intro(&demo);
    let t = Timeline { now: Utc::now() };
    master_data(&demo, &t).await?;
    let delivered_v5 = revision(&demo, &t).await?;
    deviation(&demo, &t, &delivered_v5).await?;
    let qa = capa(&demo, &t).await?;
    let period = audit_readiness(&demo, &t, &qa).await?;
    lms_outage(&demo).await?;
    ledger_summary(&demo).await?;
    let written = reports(&demo, &qa, &period).await?;
    finish(demo, serve, started, &t, &period, &written).await
}

/// Removes a previous demo from `data`, refusing anything else.
fn clear(data: &Path) -> anyhow::Result<()> {
    if data.exists() {
        if !data.join(MARKER).exists() {
            bail!(
                "{} exists and is not a demo directory; pass --data with a new directory for the demo",
                data.display()
            );
        }
        std::fs::remove_dir_all(data)
            .with_context(|| format!("removing the previous demo in {}", data.display()))?;
    }
    Ok(())
}

/// Set-up: a fresh instance with the systems' tokens and the QA staff, the
/// simulated QMS and LMS as its targets, and its server started.
async fn set_up(data: &Path, serve: bool) -> anyhow::Result<Demo> {
    let mut origin_bytes = [0u8; 4];
    getrandom::fill(&mut origin_bytes).expect("the OS provides randomness");
    let (mut opened, integration_token) = Instance::initialise(
        data,
        Some(format!(
            "demo.trailmark.local/{}",
            hex::encode(origin_bytes)
        )),
        None,
    )
    .await?;
    std::fs::write(
        data.join(MARKER),
        "created by `trailmark demo`; the demo replaces this directory when run again\n",
    )?;
    let [qms_token, lms_token, hr_token] = issue_tokens(&mut opened).await?;
    let initial = create_staff(&mut opened).await?;

    // The QMS and the LMS: real HTTP servers that verify every delivery's
    // signature and deduplicate on its id. The LMS records the
    // assignments it is given, as an LMS would.
    let (qms, qms_target) = system(data, "qms").await?;
    let (lms, mut lms_target) = system(data, "lms").await?;
    // Demo timing for the LMS: 3 attempts 100-400 ms apart (a site would
    // keep the default 8 attempts over minutes), so that Scenario 4's outage
    // dead-letters within a second.
    lms_target.max_attempts = 3;
    lms_target.backoff_initial_ms = 100;
    lms_target.backoff_max_ms = 400;
    let lms_assignments: Arc<Mutex<Vec<Value>>> = Arc::default();
    {
        let inbox = Arc::clone(&lms_assignments);
        lms.set_hook(Arc::new(move |m| {
            if m.message_type.as_deref() == Some("lms.assignment.created") {
                inbox
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(m.body["data"].clone());
            }
        }));
    }
    opened.config.integration.targets = [
        ("qms".to_owned(), qms_target),
        ("lms".to_owned(), lms_target),
    ]
    .into_iter()
    .collect();
    let listen = if serve {
        opened.config.listen.clone()
    } else {
        "127.0.0.1:0".to_owned()
    };
    let server = opened.start_server(&listen).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url(),
    };
    let store = opened.store.clone();
    Ok(Demo {
        data: data.to_owned(),
        opened,
        server,
        api,
        store,
        integration_token,
        qms_token,
        lms_token,
        hr_token,
        initial,
        qms,
        lms,
        lms_assignments,
    })
}

/// The QMS's, the LMS's and HR's tokens, in that order.
async fn issue_tokens(opened: &mut Instance) -> anyhow::Result<[String; 3]> {
    let mut tokens = Vec::new();
    for (system, why) in [
        ("qms", "demo: the QMS sends documents, deviations and CAPAs"),
        ("lms", "demo: the LMS sends training completions"),
        ("hr", "demo: HR sends people and their job functions"),
    ] {
        tokens.push(opened.issue_token(system, why).await?);
    }
    Ok(<[String; 3]>::try_from(tokens).expect("three tokens"))
}

/// Creates the QA staff; returns their one-time passwords.
async fn create_staff(opened: &mut Instance) -> anyhow::Result<Vec<String>> {
    let mut initial = Vec::new();
    for (id, name, role) in STAFF {
        let password = crate::identity::password::one_time_password(id);
        opened
            .create_user(
                crate::identity::service::NewUser {
                    user_id: id.into(),
                    printed_name: name.into(),
                    email: format!("{id}@demo.example"),
                    roles: vec![role.into()],
                    identity_verified_by: Some("user:hr-officer".into()),
                    identity_verification_method: "passport checked in person at onboarding".into(),
                    initial_password: Some(password.clone()),
                },
                "demo: QA staff who close and sign CAPAs",
            )
            .await?;
        initial.push(password);
    }
    Ok(initial)
}

fn print_intro(demo: &Demo) {
    println!(
        "Trailmark demo: a sterile filling site's QMS and LMS hand over through Trailmark.\n\
         Event times are the site's last weeks; the demo plays them in seconds.\n"
    );
    println!(
        "1. Ledger {} initialised in {} (SQLite). Trailmark serves {}; the QMS listens on {} and the LMS on {}.",
        demo.opened.config.origin,
        demo.data.display(),
        demo.server.url(),
        demo.qms.url(),
        demo.lms.url()
    );
}

/// Master data, as HR and the QMS know it, and SOP-017 v4 with everyone
/// trained on it.
async fn master_data(demo: &Demo, t: &Timeline) -> anyhow::Result<()> {
    let (api, store) = (&demo.api, &demo.store);
    let hired = t.at(400, 8);
    let master = vec![
        ce(
            "qms",
            "qms.training_category.changed.v1",
            "cat-sop",
            hired,
            json!({"category": "SOP", "completion_window_days": 14}),
        ),
        ce(
            "qms",
            "qms.job_function.changed.v1",
            "jf-op",
            hired,
            json!({"job_function": OPERATOR, "name": "Filling operator", "active": true}),
        ),
        ce(
            "qms",
            "qms.job_function.changed.v1",
            "jf-qc",
            hired,
            json!({"job_function": "qc-analyst", "name": "QC analyst", "active": true}),
        ),
        ce(
            "qms",
            "qms.training_matrix.changed.v1",
            "mx-sop017",
            hired,
            json!({"document_id": SOP, "job_functions": [OPERATOR]}),
        ),
    ];
    api.events(&demo.qms_token, master).await?;
    api.events(&demo.hr_token, people(hired)).await?;
    settle(store).await?;

    // v4 went effective long ago and everyone was trained on it.
    let v4 = t.at(200, 0);
    api.events(&demo.qms_token, vec![ce("qms", "qms.document.revision_effective.v2", "rev-sop017-4", v4,
        json!({"document_id": SOP, "version": "4", "effective_at": rfc(v4), "category": "SOP", "title": "Aseptic filling line set-up"}))]).await?;
    settle(store).await?;
    let v4_done: Vec<Value> = (0..OPERATORS)
        .map(|i| {
            let at = t.at(195 - (i % 5) as i64, 9 + (i % 7) as u32);
            ce("lms", "lms.completion.recorded.v1", &format!("done-{}-v4", operator_id(i)), at,
               json!({"person_id": operator_id(i), "document_id": SOP, "version": "4", "completed_at": rfc(at), "outcome": "completed"}))
        })
        .collect();
    api.events(&demo.lms_token, v4_done).await?;
    settle(store).await?;
    println!(
        "2. Master data arrived as events: {} people from HR, 2 job functions, SOP-017 trained by filling operators within 14 days; \
         SOP-017 v4 went effective on {} and all {OPERATORS} operators completed it.",
        OPERATORS + 4,
        day(&rfc(v4))
    );
    Ok(())
}

/// HR's people, all hired at `hired`: the filling operators and four QC
/// analysts.
fn people(hired: DateTime<Utc>) -> Vec<Value> {
    let mut people = Vec::new();
    for i in 0..OPERATORS {
        // One name in Han script, so that the reports show CJK rendering.
        let name = if i == 12 {
            "李雷".to_owned()
        } else {
            format!(
                "{} {}",
                FIRST[i % FIRST.len()],
                LAST[(i * 7 + i / 12) % LAST.len()]
            )
        };
        people.push(ce(
            "hr",
            "hr.person.changed.v1",
            &format!("person-{}", operator_id(i)),
            hired,
            json!({"person_id": operator_id(i), "name": name, "active": true,
                   "job_functions": [{"job_function": OPERATOR, "valid_from": rfc(hired)}]}),
        ));
    }
    for (i, name) in ["李雷", "Sofia Rossi", "Tomás Novák", "Aiyana Redcloud"]
        .iter()
        .enumerate()
    {
        people.push(ce(
            "hr",
            "hr.person.changed.v1",
            &format!("person-Q{}", 2001 + i),
            hired,
            json!({"person_id": format!("Q{}", 2001 + i), "name": name, "active": true,
                   "job_functions": [{"job_function": "qc-analyst", "valid_from": rfc(hired)}]}),
        ));
    }
    people
}

/// Scenario 1: an SOP revision goes effective and assigns the operators.
/// Returns the v5 assignments the LMS received.
async fn revision(demo: &Demo, t: &Timeline) -> anyhow::Result<Vec<Value>> {
    println!("\nScenario 1: an SOP revision goes effective");
    let lms_before = demo.lms.stats().accepted;
    let v5 = t.at(35, 0);
    demo.api.events(&demo.qms_token, vec![ce("qms", "qms.document.revision_effective.v2", "rev-sop017-5", v5,
        json!({"document_id": SOP, "version": "5", "effective_at": rfc(v5), "category": "SOP", "title": "Aseptic filling line set-up"}))]).await?;
    settle(&demo.store).await?;
    let delivered_v5 = demo.lms_assignments(|a| a["version"] == "5" && a["origin"] == "sop");
    let due = delivered_v5
        .first()
        .and_then(|a| a["due_at"].as_str())
        .unwrap_or_default()
        .to_owned();
    println!(
        "3. SOP-017 v5 effective {}: {} filling operators assigned, due {}; the LMS received {} signed assignment messages.",
        day(&rfc(v5)),
        delivered_v5.len(),
        day(&due),
        demo.lms.stats().accepted - lms_before
    );
    check_assigned_all(&delivered_v5)?;
    Ok(delivered_v5)
}

/// The LMS reports completions of v5: most within a few days, one late,
/// one never; the deviation's untrained operator only after the deviation.
fn v5_completions(t: &Timeline, delivered_v5: &[Value]) -> Vec<Value> {
    let mut v5_done = Vec::new();
    for a in delivered_v5 {
        let person = a["person_id"].as_str().unwrap_or_default().to_owned();
        let i: i64 = person[1..].parse::<i64>().unwrap_or(1001) - 1001;
        let when = match person.as_str() {
            p if p == OVERDUE => continue,
            p if p == LATE => t.at(16, 14),
            p if p == DEVIATION_PEOPLE[0] => t.at(26, 10),
            _ => t.at(34 - i % 9, 9 + (i % 8) as u32),
        };
        v5_done.push(ce("lms", "lms.completion.recorded.v1", &format!("done-{person}-v5"), when,
            json!({"person_id": person, "document_id": SOP, "version": "5", "completed_at": rfc(when),
                   "outcome": "completed", "assignment_id": a["assignment_id"]})));
    }
    v5_done
}

/// Scenario 2: a deviation, reported by the QMS after the completions that
/// happened before it, finds an operator trained only on a superseded
/// version.
async fn deviation(demo: &Demo, t: &Timeline, delivered_v5: &[Value]) -> anyhow::Result<()> {
    let v5_done = v5_completions(t, delivered_v5);
    let deviation_at = t.at(29, 14) + chrono::Duration::minutes(2);
    demo.api.events(&demo.lms_token, v5_done).await?;
    demo.api.events(&demo.qms_token, vec![ce("qms", "qms.deviation.opened.v1", "dev-2026-118", deviation_at,
        json!({"deviation_id": DEVIATION, "people": DEVIATION_PEOPLE, "document_id": SOP, "occurred_at": rfc(deviation_at)}))]).await?;
    settle(&demo.store).await?;
    println!("\nScenario 2: a deviation");
    let status = demo
        .store
        .latest_entry_of_kind("qms.deviation.training_status")
        .await?
        .context("the deviation's training status was not recorded")?;
    let status: Value = serde_json::from_str(&String::from_utf8_lossy(&status.canonical))?;
    print_deviation_finding(deviation_at, &status["payload"]);
    let gaps: Vec<_> = demo
        .qms
        .messages()
        .into_iter()
        .filter(|m| m.message_type.as_deref() == Some("qms.training_gap.found"))
        .collect();
    check_one_gap(gaps.len())?;
    println!(
        "     The QMS received the training gap: \"{}\"",
        gaps.first()
            .and_then(|m| m.body["data"]["finding"].as_str())
            .unwrap_or_default()
    );
    Ok(())
}

fn print_deviation_finding(deviation_at: DateTime<Utc>, finding: &Value) {
    println!(
        "4. {DEVIATION} on {}: SOP-017 v{} was effective then.",
        day(&rfc(deviation_at)),
        finding["version_effective"].as_str().unwrap_or("?")
    );
    for p in finding["people"].as_array().into_iter().flatten() {
        let who = p["person_id"].as_str().unwrap_or_default();
        if p["trained"] == true {
            println!(
                "     {who} had completed v{} on {}.",
                finding["version_effective"].as_str().unwrap_or("?"),
                day(p["completed_at"].as_str().unwrap_or_default())
            );
        } else {
            println!(
                "     {who} had not; the last version {who} had completed was v{} (superseded), on {}.",
                p["latest_version_trained"].as_str().unwrap_or("?"),
                day(p["latest_completed_at"].as_str().unwrap_or_default())
            );
        }
    }
}

/// Scenario 3: CAPA retraining gates closure. QA signs in, the closure is
/// refused until the LMS reports the retraining, then recorded and signed.
async fn capa(demo: &Demo, t: &Timeline) -> anyhow::Result<Qa> {
    println!("\nScenario 3: CAPA retraining gates closure");
    let mut staff = Vec::new();
    for ((id, name, _), password) in STAFF.iter().zip(&demo.initial) {
        staff.push(sign_in(&demo.api, id, name, password).await?);
    }
    let [recorder, reviewer, approver] =
        <[Staff; 3]>::try_from(staff).map_err(|_| anyhow::anyhow!("three QA staff"))?;
    let qa = Qa {
        recorder,
        reviewer,
        approver,
    };
    let closure = format!("/v1/capas/{CAPA}/closure");
    let reason = json!({"reason": "retraining of the shift on SOP-017 v5 completed and verified by a trainer"});
    capa_refused(demo, t, &qa.recorder, &closure, &reason).await?;
    capa_retrained(demo, &qa.recorder).await?;
    capa_closed(demo, &qa, &closure, reason).await?;
    Ok(qa)
}

/// The CAPA's training action is assigned, and closing it at once is
/// refused.
async fn capa_refused(
    demo: &Demo,
    t: &Timeline,
    recorder: &Staff,
    closure: &str,
    reason: &Value,
) -> anyhow::Result<()> {
    let capa_due = (t.now.date_naive() + chrono::Days::new(14))
        .format("%Y-%m-%d")
        .to_string();
    demo.api
        .events(
            &demo.qms_token,
            vec![ce(
                "qms",
                "qms.capa.training_action.v1",
                "capa-2026-031-a1",
                t.now,
                json!({"capa_id": CAPA, "action_id": "A1", "document_id": SOP, "version": "5",
               "people": DEVIATION_PEOPLE, "due_date": capa_due, "verification_required": true}),
            )],
        )
        .await?;
    settle(&demo.store).await?;
    let (refused, problem) = demo
        .api
        .call(
            Method::POST,
            closure,
            &recorder.session,
            Some(reason.clone()),
        )
        .await?;
    check_refused(refused, &problem)?;
    let refusal_seq = demo
        .store
        .latest_entry_of_kind("integration.capa.closure_refused")
        .await?
        .map_or(0, |e| e.seq.get());
    println!(
        "5. {CAPA} retrains {} on SOP-017 v5 with a trainer's verification, due {capa_due}; the LMS got the assignments.\n   \
         {} tried to close it at once: refused (409, {} completions missing), and the refusal is entry {refusal_seq}.",
        DEVIATION_PEOPLE.join(" and "),
        recorder.name,
        problem["details"]["missing"].as_array().map_or(0, Vec::len),
    );
    Ok(())
}

/// The LMS: the trainees pass, a trainer verifies, and the LMS sends xAPI
/// statements for the CAPA assignments it holds; the CAPA is then ready.
async fn capa_retrained(demo: &Demo, recorder: &Staff) -> anyhow::Result<()> {
    let statements: Vec<Value> = demo
        .lms_assignments(|a| a["capa_id"] == CAPA)
        .iter()
        .enumerate()
        .map(|(n, a)| {
            json!({"id": format!("9b0c8e2a-5d1f-4c3e-8a7b-{:012}", n + 1),
                   "actor": {"account": {"homePage": "https://lms.demo.example", "name": a["person_id"]}},
                   "verb": {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"en-US": "passed"}},
                   "object": {"id": format!("urn:trailmark:document:{SOP}:5")},
                   "context": {"instructor": {"account": {"homePage": "https://lms.demo.example", "name": "T-0042"}}},
                   "timestamp": rfc(Utc::now())})
        })
        .collect();
    let sent = statements.len();
    demo.api
        .ok(
            Method::POST,
            "/xapi/statements",
            &demo.lms_token,
            Some(Value::Array(statements)),
        )
        .await?;
    settle(&demo.store).await?;
    let readiness = demo
        .api
        .ok(
            Method::GET,
            &format!("/v1/capas/{CAPA}/closure-readiness"),
            &recorder.session,
            None,
        )
        .await?;
    check_ready(&readiness)?;
    println!(
        "6. The LMS sent {sent} xAPI statements (passed, verified by trainer T-0042): {CAPA} is ready to close, and the QMS was told."
    );
    Ok(())
}

/// The recorder closes the CAPA; the reviewer and the approver sign it.
async fn capa_closed(demo: &Demo, qa: &Qa, closure: &str, reason: Value) -> anyhow::Result<()> {
    let Qa {
        recorder,
        reviewer,
        approver,
    } = qa;
    let closed = demo
        .api
        .ok(Method::POST, closure, &recorder.session, Some(reason))
        .await?;
    let closed_hash = closed["hash"].as_str().unwrap_or_default().to_owned();
    let closed_seq = closed["seq"].as_u64().unwrap_or_default();
    for (who, meaning) in [(reviewer, "reviewed"), (approver, "approved")] {
        demo.api.ok(
            Method::POST,
            "/v1/signatures",
            &who.session,
            Some(json!({"target": closed_hash, "meaning": meaning, "user_id": who.id, "password": who.password})),
        )
        .await?;
    }
    settle(&demo.store).await?;
    let view = demo
        .api
        .ok(
            Method::GET,
            &format!("/v1/entries/{closed_seq}"),
            &recorder.session,
            None,
        )
        .await?;
    println!(
        "7. {} recorded the closure (entry {closed_seq}); {} reviewed and {} approved it with Part 11 signatures:",
        recorder.name, reviewer.name, approver.name
    );
    for s in view["signatures"].as_array().into_iter().flatten() {
        println!("     {}", s["line"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// Audit readiness: the unified compliance record for the period, and the
/// lineage of the deviation and the CAPA.
async fn audit_readiness(demo: &Demo, t: &Timeline, qa: &Qa) -> anyhow::Result<Period> {
    let period = Period {
        from: rfc(t.at(42, 0)),
        to: rfc(t.now),
    };
    let (from, to) = (&period.from, &period.to);
    let session = &qa.reviewer.session;
    let rows = demo
        .api
        .ok(
            Method::GET,
            &format!("/v1/compliance?from={from}&to={to}&job_function={OPERATOR}"),
            session,
            None,
        )
        .await?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    print_compliance(&period, &rows)?;
    let lineage = demo
        .api
        .ok(
            Method::GET,
            &format!("/v1/lineage/qms:deviation/{DEVIATION}"),
            session,
            None,
        )
        .await?;
    let reached = lineage["entries"].as_array().map_or(0, Vec::len);
    let capa_lineage = demo
        .api
        .ok(
            Method::GET,
            &format!("/v1/lineage/qms:capa/{CAPA}"),
            session,
            None,
        )
        .await?;
    let capa_reached = capa_lineage["entries"].as_array().map_or(0, Vec::len);
    println!(
        "9. Lineage is one walk of the ledger's parent links: {DEVIATION} reaches {reached} entries (the deviation, the version and completion it was judged on, \
         the gap and its delivery); {CAPA} reaches {capa_reached} (the action, assignments, completions, evidence, readiness, refusal, closure, signatures and deliveries)."
    );
    Ok(period)
}

/// Prints the compliance tally, checks it, and prints the late and overdue
/// rows.
fn print_compliance(period: &Period, rows: &[Value]) -> anyhow::Result<()> {
    let tally = |s: &str| rows.iter().filter(|r| r["status"] == s).count();
    println!(
        "\nAudit readiness\n8. Compliance of filling operators for revisions effective {} to {}: {} required, {} on time, {} late, {} overdue.",
        day(&period.from),
        day(&period.to),
        rows.len(),
        tally("on_time"),
        tally("late"),
        tally("overdue")
    );
    check_compliance(rows, (tally("on_time"), tally("late"), tally("overdue")))?;
    for r in rows
        .iter()
        .filter(|r| r["status"] == "late" || r["status"] == "overdue")
    {
        let evidence = r["completion_entry_hash"]
            .as_str()
            .or_else(|| r["assignment_entry_hash"].as_str())
            .unwrap_or_default();
        println!(
            "     {} {} on SOP-017 v{}: due {}, completed {} (evidence entry {}…)",
            r["person_id"].as_str().unwrap_or_default(),
            r["status"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            day(r["due_at"].as_str().unwrap_or_default()),
            r["completed_at"].as_str().map_or("never", day),
            evidence.get(..12).unwrap_or(evidence)
        );
    }
    Ok(())
}

/// Scenario 4: the LMS is down when a new operator joins the line; the
/// assignment is dead-lettered.
async fn lms_outage(demo: &Demo) -> anyhow::Result<()> {
    println!("\nScenario 4: the LMS is down");
    demo.lms.stop().await;
    let joined = Utc::now();
    demo.api
        .events(
            &demo.hr_token,
            vec![ce(
                "hr",
                "hr.person.changed.v1",
                "person-E9001-join",
                joined,
                json!({"person_id": "E9001", "name": "Noor Haddad", "active": true,
               "job_functions": [{"job_function": OPERATOR, "valid_from": rfc(joined)}]}),
            )],
        )
        .await?;
    let down_since = Instant::now();
    while dead_letters(&demo.store).await? == 0 {
        if down_since.elapsed() > WAIT {
            bail!("the assignment was not dead-lettered while the LMS was down");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo.lms.resume().await?;
    println!(
        "10. E9001 Noor Haddad joined the filling line while the LMS was down: the SOP-017 v5 assignment was tried 3 times and dead-lettered \
         (integration.handover.dead_lettered). It waits in the console's Operations page (/console/ops) for a replay with a reason."
    );
    Ok(())
}

/// What the ledger holds, by kind of entry; then the check that neither
/// simulated system refused a signature.
async fn ledger_summary(demo: &Demo) -> anyhow::Result<()> {
    let store = &demo.store;
    let kinds = store.entry_counts_by_kind().await?;
    let total: i64 = kinds.iter().map(|k| k.1).sum();
    let of = |k: &str| kinds.iter().find(|(n, _)| n == k).map_or(0, |(_, c)| *c);
    let received: i64 = store.inbox_status_counts().await?.iter().map(|s| s.1).sum();
    let dead = dead_letters(store).await?;
    let handed =
        of("lms.assignment.created") + of("integration.handover.sent") + of("qms.capa.closed");
    let findings = of("qms.deviation.training_status") + of("integration.capa.closure_refused");
    let (applied, delivered, completed, signed) = (
        of("integration.event.applied"),
        of("integration.handover.delivered"),
        of("integration.assignment.completed"),
        of("signature.applied"),
    );
    let setup = total - received - applied - handed - delivered - completed - findings - signed;
    println!(
        "\n11. The ledger holds {total} entries:\n    \
         {received} events received and {applied} records of their application;\n    \
         {handed} hand-overs ({} assignments to the LMS, {} messages to the QMS) and {delivered} deliveries confirmed \
         ({} by the LMS, {} by the QMS, {dead} dead-lettered);\n    \
         {completed} assignments completed, {findings} findings (a deviation's training status, a refused closure), {signed} signatures;\n    \
         {setup} for set-up and sign-in (users, tokens, the signing CA and policy, sessions).",
        of("lms.assignment.created"),
        handed - of("lms.assignment.created"),
        demo.lms.stats().accepted,
        demo.qms.stats().accepted,
    );
    check_signatures_accepted(demo)
}

/// Signed reports for the inspector, fetched over HTTP as QA would, each
/// PDF verified against the ledger's key and the report CA.
async fn reports(demo: &Demo, qa: &Qa, period: &Period) -> anyhow::Result<Vec<Written>> {
    let (from, to) = (&period.from, &period.to);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reports_dir = demo.data.join("reports");
    std::fs::create_dir_all(&reports_dir)?;
    let mut written = Vec::new();
    for (name, query) in [
        (
            format!("lineage-{CAPA}.pdf"),
            format!("/v1/reports/lineage?subject=qms:capa/{CAPA}"),
        ),
        (
            "compliance.pdf".to_owned(),
            format!("/v1/reports/compliance?from={from}&to={to}&job_function={OPERATOR}"),
        ),
        (
            format!("audit-trail-{CAPA}.pdf"),
            format!("/v1/reports/audit-trail?subject=qms:capa/{CAPA}"),
        ),
        (
            "compliance.csv".to_owned(),
            format!("/v1/reports/compliance?from={from}&to={to}&format=csv"),
        ),
    ] {
        let response = demo
            .api
            .http
            .get(format!("{}{query}", demo.api.base))
            .bearer_auth(&qa.reviewer.session)
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            bail!(
                "GET {query} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let id = response
            .headers()
            .get("x-trailmark-report-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await?;
        let path = reports_dir.join(&name);
        std::fs::write(&path, &bytes)?;
        if name.ends_with(".pdf") {
            check_report(demo, &name, &bytes)?;
        }
        written.push((id, path, bytes.len()));
    }
    print_reports(&written);
    Ok(written)
}

fn print_reports(written: &[Written]) {
    println!(
        "\n12. Signed reports for the inspector (PAdES signature by the report-signing certificate, entries and proofs attached; each recorded as report.generated):"
    );
    for (id, path, bytes) in written {
        println!("    {id}  {}  ({} KB)", path.display(), bytes / 1024);
    }
    println!(
        "    Each compliance row shows when the person had to be trained (business time) beside when Trailmark recorded the assignment, and the recording lag between them: the demo replays weeks of history in seconds, so its lags are days. A completion before the person was required says so. Every row, status and total is recomputed from its cited entries by verify-report."
    );
}

/// Verifies and exports the ledger as an inspector would, prints how to
/// check it again, and with `serve` keeps serving until interrupted.
async fn finish(
    demo: Demo,
    serve: bool,
    started: Instant,
    t: &Timeline,
    period: &Period,
    written: &[Written],
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(150)).await;
    let note = demo
        .api
        .http
        .get(format!("{}/v1/checkpoint", demo.api.base))
        .send()
        .await?
        .text()
        .await?;
    let saved = demo.data.join("saved-checkpoint");
    std::fs::write(&saved, &note)?;
    let Demo {
        data,
        opened,
        server,
        store,
        integration_token,
        ..
    } = demo;
    let vkey = opened.key.verifier();
    let server = if serve {
        Some(server)
    } else {
        server.stop().await;
        None
    };
    let report = audit::verify_and_record(
        &store,
        &vkey,
        &VerifyOptions {
            check_canonical: true,
            external_checkpoint: Some(note),
        },
        "demo",
        |_| {},
    )
    .await?;
    let export_dir = data.join("export");
    let exported = audit::export(&store, &vkey, &export_dir, |_| {}).await?;
    audit::verify_export(&export_dir, &vkey, |_| {})?;
    println!(
        "13. verify: {} entries, {} checkpoints and {} signatures intact; export of {} entries checked offline.",
        report.entries, report.checkpoints, report.signatures, exported.entries
    );
    print_done(&data, started, &saved, &export_dir, written);
    if let Some(server) = server {
        print_serving(&server.url(), &integration_token, t, period);
        crate::instance::shutdown_signal().await;
        server.stop().await;
    } else {
        println!(
            "  cargo run --release -- serve --data {}   (or run the demo with --serve)",
            data.display()
        );
    }
    opened.store.close().await;
    Ok(())
}

fn print_done(data: &Path, started: Instant, saved: &Path, export_dir: &Path, written: &[Written]) {
    println!(
        "\nDone in {:.1} s. The data stays in {}:",
        started.elapsed().as_secs_f64(),
        data.display()
    );
    println!(
        "  cargo run --release -- verify --data {} --checkpoint {}",
        data.display(),
        saved.display()
    );
    println!(
        "  cargo run --release -- verify-export {} --key {}",
        export_dir.display(),
        data.join("verifier-key").display()
    );
    if let Some((_, path, _)) = written.first() {
        println!(
            "  cargo run --release -- verify-report {} --key {} --ca {}",
            path.display(),
            data.join("verifier-key").display(),
            data.join("report-ca.pem").display()
        );
    }
}

fn print_serving(url: &str, integration_token: &str, t: &Timeline, period: &Period) {
    println!(
        "\nServing on {url} with the QMS and the LMS still listening; Ctrl-C stops.\n\
         The `integration` principal's token reads everything (a secret: keep it out of shell history and logs):\n  \
         export TRAILMARK_TOKEN={integration_token}\n  \
         curl -H \"authorization: Bearer $TRAILMARK_TOKEN\" '{url}/v1/compliance?from={}&to={}&format=csv'\n  \
         curl -H \"authorization: Bearer $TRAILMARK_TOKEN\" {url}/v1/lineage/qms:deviation/{DEVIATION}\n  \
         curl -H \"authorization: Bearer $TRAILMARK_TOKEN\" {url}/v1/capas/{CAPA}/closure-readiness\n  \
         curl -H \"authorization: Bearer $TRAILMARK_TOKEN\" {url}/metrics",
        day(&period.from),
        day(&rfc(t.now + chrono::Days::new(1))),
    );
}

// The checks the demo makes of its own outcome: it fails if the outcome
// is not the one the scenarios lead to.

/// Scenario 1 assigned v5 to every operator.
fn check_assigned_all(delivered_v5: &[Value]) -> anyhow::Result<()> {
    if delivered_v5.len() != OPERATORS {
        bail!(
            "expected {OPERATORS} assignments of v5, the LMS got {}",
            delivered_v5.len()
        );
    }
    Ok(())
}

/// Scenario 2 sent the QMS exactly one training gap.
fn check_one_gap(gaps: usize) -> anyhow::Result<()> {
    if gaps != 1 {
        bail!("the QMS should have received one training gap, got {gaps}");
    }
    Ok(())
}

/// Closing the CAPA before the retraining was refused with 409.
fn check_refused(refused: u16, problem: &Value) -> anyhow::Result<()> {
    if refused != 409 {
        bail!("closing {CAPA} before the retraining should be refused, got {refused}: {problem}");
    }
    Ok(())
}

/// The CAPA is ready to close after the LMS's completions.
fn check_ready(readiness: &Value) -> anyhow::Result<()> {
    if readiness["ready"] != true {
        bail!("{CAPA} is not ready after the LMS's completions: {readiness}");
    }
    Ok(())
}

/// The compliance record is all on time but one late and one overdue.
fn check_compliance(rows: &[Value], tally: (usize, usize, usize)) -> anyhow::Result<()> {
    if tally != (OPERATORS - 2, 1, 1) {
        bail!("the compliance record differs from what the LMS reported: {rows:?}");
    }
    Ok(())
}

/// Neither simulated system refused a delivery's signature.
fn check_signatures_accepted(demo: &Demo) -> anyhow::Result<()> {
    if demo.lms.stats().bad_signatures + demo.qms.stats().bad_signatures > 0 {
        bail!("a simulated system refused a signature");
    }
    Ok(())
}

/// A PDF report verifies against the ledger's key and the report CA.
fn check_report(demo: &Demo, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let ca = crate::report::sign::cert_der_from_pem(&std::fs::read_to_string(
        demo.data.join("report-ca.pem"),
    )?)?;
    crate::report::verify::check_file(bytes, &demo.opened.key.verifier(), Some(&ca))
        .map_err(|e| anyhow::anyhow!("{name} does not verify: {e}"))?;
    Ok(())
}
