//! The OQ runner (docs/VALIDATION.md §3, §4): starts a throw-away instance
//! (or uses a staged one), runs every test case of the protocols step by
//! step, and records what it observed with the evidence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::protocol::{Action, Case, Step, ValidationSet};
use crate::config::{Config, TargetConfig};
use crate::instance::Instance;
use crate::integration::webhook::Secret;
use crate::sim::{Mailbox, Receiver};
use crate::store::Store;

/// Longest output kept in the evidence, per stream or body.
const EVIDENCE_TEXT_MAX: usize = 16_384;
/// Default seconds to poll for `wait`, `settle` and expected entries.
const DEFAULT_TIMEOUT_S: u64 = 15;
/// The administrator the runner creates on the instance.
pub const ADMIN: &str = "oq-admin";
/// Keys whose values never reach the evidence.
const SECRET_KEYS: &[&str] = &[
    "password",
    "current_password",
    "new_password",
    "initial_password",
    "token",
    "session",
    "secret",
    "csrf",
];

/// The instance under test.
pub struct UnderTest {
    /// Its API, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its ledger's origin.
    pub origin: String,
    /// Its database URL when it is not the data directory's SQLite file.
    pub database_url: Option<String>,
    /// Its database.
    pub store: Store,
    /// Whether the runner created it for this run (destructive steps allowed).
    pub throwaway: bool,
    /// The simulated QMS and LMS (throw-away instances only).
    pub targets: BTreeMap<String, Receiver>,
    /// Variables the fixture set up: the admin session, tokens.
    pub fixture: BTreeMap<String, String>,
    /// The simulated credential channel one-time passwords go to
    /// (throw-away instances only; `${otp:ID}` in a step is the newest).
    pub mailbox: Option<Mailbox>,
    server: Option<crate::instance::Server>,
    pg_drop: Option<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl UnderTest {
    /// A fresh instance from this binary with the installation's
    /// configuration: SQLite in a temporary directory, or a new database on
    /// the installation's PostgreSQL server.
    ///
    /// # Errors
    /// If the instance cannot be created or started.
    pub async fn throwaway(
        installation: &Config,
        install_db: Option<&str>,
    ) -> anyhow::Result<UnderTest> {
        let tmp = tempfile::Builder::new().prefix("trailmark-oq-").tempdir()?;
        let data = tmp.path().join("data");
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).expect("the OS provides randomness");
        let suffix = hex::encode(id);
        let (database_url, pg_drop) = match install_db.filter(|u| u.starts_with("postgres")) {
            Some(url) => {
                let name = format!("trailmark_oq_{suffix}");
                let admin = Store::open_url(url)
                    .await
                    .context("connecting to the installation's PostgreSQL server")?;
                admin
                    .execute_raw(&format!("CREATE DATABASE {name}"))
                    .await
                    .map_err(|e| anyhow::anyhow!("creating the throw-away database {name}: {e}"))?;
                admin.close().await;
                let (prefix, _) = url
                    .split('?')
                    .next()
                    .unwrap_or(url)
                    .rsplit_once('/')
                    .context("the PostgreSQL URL names no database")?;
                (
                    Some(format!("{prefix}/{name}")),
                    Some((url.to_owned(), name)),
                )
            }
            None => (None, None),
        };
        let (mut opened, _token) = Instance::initialise(
            &data,
            Some(format!("oq.trailmark.local/{suffix}")),
            database_url.as_deref(),
        )
        .await?;
        // The installation's settings, so that a changed setting is what OQ tests.
        let mut config = installation.clone();
        config.origin = opened.config.origin.clone();
        config.database_url = database_url.clone();
        config.listen = "127.0.0.1:0".into();
        let mut targets = BTreeMap::new();
        config.integration.targets.clear();
        for name in ["lms", "qms"] {
            let secret = Secret::generate();
            let file = format!("{name}.whsec");
            write_private(&data.join(&file), &secret.to_text())?;
            let receiver = Receiver::start(name, secret).await?;
            // Simulated systems with test timing: retries in milliseconds,
            // so that dead-lettering takes seconds (recorded in the package).
            config.integration.targets.insert(
                name.to_owned(),
                TargetConfig {
                    url: receiver.url(),
                    secret_file: file,
                    max_attempts: 3,
                    backoff_initial_ms: 50,
                    backoff_max_ms: 200,
                    timeout_ms: 2_000,
                    breaker_failures: 50,
                    breaker_open_ms: 200,
                    ..TargetConfig::default()
                },
            );
            targets.insert(name.to_owned(), receiver);
        }
        // One-time passwords go to a simulated mail system, never to the
        // administrator (SIGNATURES.md §4.2).
        let secret = Secret::generate();
        write_private(&data.join("credential.whsec"), &secret.to_text())?;
        let mailbox = Mailbox::start(secret).await?;
        config.identity.credential_webhook_url = Some(mailbox.url().to_owned());
        config.identity.credential_webhook_secret_file = Some("credential.whsec".into());
        std::fs::write(data.join("trailmark.toml"), toml::to_string(&config)?)?;
        opened.config = config;
        let (fixture, admin_initial) =
            make_fixture(&opened, ADMIN, "a throw-away instance").await?;
        let server = opened.start_server("127.0.0.1:0").await?;
        let base = server.url();
        let mut instance = UnderTest {
            base,
            origin: opened.config.origin.clone(),
            data,
            database_url,
            store: opened.store.clone(),
            throwaway: true,
            targets,
            fixture,
            mailbox: Some(mailbox),
            server: Some(server),
            pg_drop,
            _tmp: Some(tmp),
        };
        instance.sign_in_admin(ADMIN, &admin_initial).await?;
        Ok(instance)
    }

    /// A staged installation already running at `base` whose data directory
    /// is `opened`: the fixture is made through the data directory.
    ///
    /// # Errors
    /// If the fixture cannot be created.
    pub async fn staged(opened: &Instance, base: &str) -> anyhow::Result<UnderTest> {
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).expect("the OS provides randomness");
        let admin = format!("{ADMIN}-{}", hex::encode(id));
        let (fixture, admin_initial) = make_fixture(opened, &admin, "a staged instance").await?;
        let mut instance = UnderTest {
            base: base.trim_end_matches('/').to_owned(),
            origin: opened.config.origin.clone(),
            data: opened.dir.path().to_owned(),
            database_url: opened.config.database_url.clone(),
            store: opened.store.clone(),
            throwaway: false,
            targets: BTreeMap::new(),
            fixture,
            mailbox: None,
            server: None,
            pg_drop: None,
            _tmp: None,
        };
        instance.sign_in_admin(&admin, &admin_initial).await?;
        Ok(instance)
    }

    async fn sign_in_admin(&mut self, id: &str, initial: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let (session, password) = first_sign_in(&http, &self.base, id, initial).await?;
        self.fixture.insert("admin".into(), session);
        self.fixture
            .insert("admin_password".into(), password.clone());
        self.fixture.insert(format!("password:{id}"), password);
        Ok(())
    }

    /// Stops the server and the simulated systems, drops a throw-away
    /// PostgreSQL database. On a staged instance, revokes the fixture's
    /// tokens and deactivates its administrator, so the run leaves no
    /// working credential behind (both on the record, with a reason).
    pub async fn close(mut self) {
        if !self.throwaway {
            self.retire_fixture().await;
        }
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        for target in self.targets.values() {
            target.stop().await;
        }
        // A staged instance's store is the installation's, still in use.
        if self.throwaway {
            self.store.close().await;
        }
        if let Some((url, name)) = self.pg_drop.take()
            && let Ok(admin) = Store::open_url(&url).await
        {
            if let Err(e) = admin
                .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                tracing::warn!(error = %e, database = %name, "could not drop the throw-away database");
            }
            admin.close().await;
        }
    }
}

impl UnderTest {
    async fn retire_fixture(&self) {
        let http = reqwest::Client::new();
        let Some(admin) = self.fixture.get("admin") else {
            return;
        };
        let reason = "OQ run finished: fixture credential retired";
        for (name, token) in self.fixture.iter().filter(|(k, _)| k.starts_with("token:")) {
            let Some(id) = token.strip_prefix("tmk_").and_then(|t| t.split('_').next()) else {
                continue;
            };
            let r = http
                .post(format!("{}/v1/tokens/{id}/revoke", self.base))
                .bearer_auth(admin)
                .json(&json!({"reason": reason}))
                .send()
                .await;
            if !r.as_ref().is_ok_and(|r| r.status().is_success()) {
                tracing::error!(token = %name, "could not revoke the OQ fixture token; revoke it with `trailmark token revoke`");
            }
        }
        if let Some(id) = self.fixture.get("admin_id") {
            let r = http
                .patch(format!("{}/v1/users/{id}", self.base))
                .bearer_auth(admin)
                .json(&json!({"status": "deactivated", "reason": reason}))
                .send()
                .await;
            if !r.as_ref().is_ok_and(|r| r.status().is_success()) {
                tracing::error!(user = %id, "could not deactivate the OQ administrator; deactivate it with PATCH /v1/users");
            }
        }
    }
}

/// The OQ's fixture on an instance's data directory, as an administrator
/// would make it with the CLI: the administrator `admin` (its one-time
/// password is returned) and a token for each source system.
async fn make_fixture(
    opened: &Instance,
    admin: &str,
    on: &str,
) -> anyhow::Result<(BTreeMap<String, String>, String)> {
    let initial = crate::identity::password::one_time_password(admin);
    opened
        .create_user(
            crate::identity::service::NewUser {
                user_id: admin.into(),
                printed_name: "OQ Administrator".into(),
                email: "oq-admin@oq.invalid".into(),
                roles: vec!["administrator".into()],
                identity_verified_by: Some("system:cli".into()),
                identity_verification_method: format!("OQ fixture on {on}"),
                initial_password: Some(initial.clone()),
            },
            &format!("OQ fixture: the OQ administrator of {on}"),
        )
        .await?;
    let mut fixture = BTreeMap::from([("admin_id".to_owned(), admin.to_owned())]);
    for system in ["qms", "lms", "hr"] {
        let why = format!("OQ fixture: a source system's token on {on}");
        fixture.insert(
            format!("token:{system}"),
            opened.issue_token(system, &why).await?,
        );
    }
    Ok((fixture, initial))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Logs in with the one-time password and replaces it; returns the session
/// credential and the new password.
async fn first_sign_in(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    initial: &str,
) -> anyhow::Result<(String, String)> {
    let r = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"user_id": id, "password": initial}))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 201 {
        bail!("{id} could not log in: {status} {body}");
    }
    let session = body["session"]
        .as_str()
        .context("no session credential")?
        .to_owned();
    let password = crate::identity::password::one_time_password(id);
    let r = http
        .post(format!("{base}/v1/account/password"))
        .bearer_auth(&session)
        .json(&json!({"current_password": initial, "new_password": password}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "{id} could not replace the one-time password: {}",
            r.status()
        );
    }
    Ok((session, password))
}

/// The outcome of a step or case.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every check met.
    Pass,
    /// A check not met.
    Fail,
    /// Not executed (a failed earlier step, or not possible here).
    NotRun,
}

impl Outcome {
    /// As written in the package.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::NotRun => "not-run",
        }
    }
}

/// One executed (or skipped) step.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// 1-based.
    pub n: usize,
    /// Action.
    pub action: &'static str,
    /// Expected result in words.
    pub expected: String,
    /// What was observed, in words.
    pub observed: String,
    /// Outcome.
    pub result: Outcome,
    /// Every check not met.
    pub failures: Vec<String>,
    /// UTC.
    pub started_at: String,
    /// UTC.
    pub finished_at: String,
    /// The evidence file, relative to the package.
    pub evidence: Option<String>,
}

/// One test case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case ID.
    pub id: String,
    /// Title.
    pub title: String,
    /// Requirements.
    pub covers: Vec<String>,
    /// Preconditions.
    pub preconditions: Vec<String>,
    /// The protocol file.
    pub protocol: String,
    /// Outcome.
    pub result: Outcome,
    /// Why it did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run_reason: Option<String>,
    /// UTC.
    pub started_at: String,
    /// UTC.
    pub finished_at: String,
    /// Steps.
    pub steps: Vec<StepResult>,
}

/// A deviation raised by a failed step.
#[derive(Debug, Clone, Serialize)]
pub struct Deviation {
    /// `DEV-NNN`.
    pub id: String,
    /// Case.
    pub case: String,
    /// Step number (0: the case as a whole).
    pub step: usize,
    /// Requirements affected.
    pub requirements: Vec<String>,
    /// Expected.
    pub expected: String,
    /// Observed.
    pub observed: String,
    /// UTC.
    pub raised_at: String,
    /// What it means for the run.
    pub impact: String,
}

/// Evidence of one step, written to `evidence/CASE/NN.json`.
#[derive(Debug, Default, Serialize)]
struct Evidence {
    exchanges: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cli: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sql: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edit: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modes: Option<Value>,
    entries_appended: Vec<Value>,
}

/// Runs OQ cases against an instance.
pub struct Runner<'a> {
    /// The instance.
    pub instance: &'a UnderTest,
    /// The `trailmark` binary for `cli` steps.
    pub binary: PathBuf,
    /// Where evidence files go (`DIR/evidence`).
    pub evidence_dir: PathBuf,
    /// Run ID (`${run}`).
    pub run_id: String,
    http: reqwest::Client,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl<'a> Runner<'a> {
    /// A runner writing evidence under `evidence_dir`.
    pub fn new(
        instance: &'a UnderTest,
        binary: PathBuf,
        evidence_dir: PathBuf,
        run_id: String,
    ) -> Runner<'a> {
        Runner {
            instance,
            binary,
            evidence_dir,
            run_id,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a TLS-less client builds"),
        }
    }

    /// Runs every case of `set` (or those in `only`), in order; returns the
    /// results and the deviations.
    pub async fn run(
        &self,
        set: &ValidationSet,
        only: &[String],
    ) -> (Vec<CaseResult>, Vec<Deviation>) {
        let mut results = Vec::new();
        let mut deviations = Vec::new();
        for protocol in &set.protocols {
            for case in &protocol.cases {
                if !only.is_empty() && !only.contains(&case.id) {
                    continue;
                }
                let result = self.run_case(case, &protocol.file).await;
                for step in result.steps.iter().filter(|s| s.result == Outcome::Fail) {
                    deviations.push(Deviation {
                        id: format!("DEV-{:03}", deviations.len() + 1),
                        case: case.id.clone(),
                        step: step.n,
                        requirements: case.covers.clone(),
                        expected: step.expected.clone(),
                        observed: if step.failures.is_empty() {
                            step.observed.clone()
                        } else {
                            step.failures.join("; ")
                        },
                        raised_at: step.finished_at.clone(),
                        impact: format!(
                            "{} fails; its later steps were not run; the run went on with the next case",
                            case.id
                        ),
                    });
                }
                eprintln!(
                    "  {} {:<8} {}",
                    match result.result {
                        Outcome::Pass => "pass",
                        Outcome::Fail => "FAIL",
                        Outcome::NotRun => "n/a ",
                    },
                    case.id,
                    case.title
                );
                // The deviation under its case, so a console or CI log says
                // which step failed and what was observed.
                for d in deviations.iter().filter(|d| d.case == case.id) {
                    eprintln!("      {} step {}: {}", d.id, d.step, d.observed);
                }
                results.push(result);
            }
        }
        (results, deviations)
    }

    async fn run_case(&self, case: &Case, protocol: &str) -> CaseResult {
        let started_at = now();
        let not_run = |reason: String| CaseResult {
            id: case.id.clone(),
            title: case.title.clone(),
            covers: case.covers.clone(),
            preconditions: case.preconditions.clone(),
            protocol: protocol.to_owned(),
            result: Outcome::NotRun,
            not_run_reason: Some(reason),
            started_at: started_at.clone(),
            finished_at: now(),
            steps: Vec::new(),
        };
        let needs_targets = case.steps.iter().any(|s| s.action == Action::Target);
        if !self.instance.throwaway && (case.destructive() || needs_targets) {
            return not_run(if case.destructive() {
                "changes the database around the application; runs only on a throw-away instance"
                    .into()
            } else {
                "needs the simulated QMS and LMS of a throw-away instance".into()
            });
        }
        // Every case starts on an idle instance, so that the tail of an
        // earlier case's hand-overs is not taken for this case's entries.
        if let Err(e) = self.idle(Duration::from_secs(DEFAULT_TIMEOUT_S)).await {
            return not_run(format!(
                "the instance did not become idle before the case: {e}"
            ));
        }
        let tmp = match tempfile::Builder::new()
            .prefix("trailmark-oq-case-")
            .tempdir()
        {
            Ok(t) => t,
            Err(e) => return not_run(format!("no scratch directory: {e}")),
        };
        let mut vars = self.instance.fixture.clone();
        vars.insert("run".into(), self.run_id.clone());
        // A well-formed token Trailmark never issued.
        vars.insert(
            "token:forged".into(),
            "tmk_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        );
        vars.insert("tmp".into(), tmp.path().display().to_string());
        vars.insert("data".into(), self.instance.data.display().to_string());
        vars.insert("origin".into(), self.instance.origin.clone());
        vars.insert("today".into(), Utc::now().format("%Y-%m-%d").to_string());
        vars.insert(
            "now".into(),
            Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let mut steps = Vec::new();
        let mut failed = false;
        for (i, step) in case.steps.iter().enumerate() {
            let n = i + 1;
            if failed {
                steps.push(StepResult {
                    n,
                    action: step.action.as_str(),
                    expected: step.expect.clone(),
                    observed: "not run: an earlier step of this case failed".into(),
                    result: Outcome::NotRun,
                    failures: Vec::new(),
                    started_at: now(),
                    finished_at: now(),
                    evidence: None,
                });
                continue;
            }
            let step_started = now();
            let mut evidence = Evidence::default();
            let before = self.instance.store.size().await.unwrap_or(0);
            let (observed, mut failures) = match self.run_step(step, &mut vars, &mut evidence).await
            {
                Ok(x) => x,
                Err(e) => (
                    format!("the step could not be carried out: {e:#}"),
                    vec![format!("{e:#}")],
                ),
            };
            self.check_entries(step, before, &mut evidence, &mut failures)
                .await;
            let rel = format!("evidence/{}/{:02}.json", case.id, n);
            let evidence_value = json!({
                "case": case.id, "step": n, "action": step.action.as_str(), "expected": step.expect,
                "definition": redact(serde_json::to_value(step).unwrap_or(Value::Null)),
                "observed": observed, "failures": failures,
                "started_at": step_started, "finished_at": now(),
                "evidence": evidence,
            });
            let written = self.write_evidence(&rel, &evidence_value);
            let result = if failures.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            failed = result == Outcome::Fail;
            steps.push(StepResult {
                n,
                action: step.action.as_str(),
                expected: step.expect.clone(),
                observed,
                result,
                failures,
                started_at: step_started,
                finished_at: now(),
                evidence: written.then_some(rel),
            });
        }
        CaseResult {
            id: case.id.clone(),
            title: case.title.clone(),
            covers: case.covers.clone(),
            preconditions: case.preconditions.clone(),
            protocol: protocol.to_owned(),
            result: if failed { Outcome::Fail } else { Outcome::Pass },
            not_run_reason: None,
            started_at,
            finished_at: now(),
            steps,
        }
    }

    fn write_evidence(&self, rel: &str, value: &Value) -> bool {
        let path = self
            .evidence_dir
            .parent()
            .unwrap_or(&self.evidence_dir)
            .join(rel);
        let ok = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| {
                std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap_or_default())
            });
        if let Err(e) = &ok {
            tracing::error!(error = %e, file = %path.display(), "could not write evidence");
        }
        ok.is_ok()
    }

    async fn check_entries(
        &self,
        step: &Step,
        before: u64,
        evidence: &mut Evidence,
        failures: &mut Vec<String>,
    ) {
        if !step.entries_absent.is_empty()
            && let Err(e) = self.settle(step).await
        {
            failures.push(e.to_string());
        }
        let deadline =
            Instant::now() + Duration::from_secs(step.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
        loop {
            let appended = self
                .instance
                .store
                .entries_page(before, 500)
                .await
                .unwrap_or_default();
            let kinds: Vec<&str> = appended.iter().map(|e| e.kind.as_str()).collect();
            let missing: Vec<&String> = step
                .entries
                .iter()
                .filter(|k| !kinds.contains(&k.as_str()))
                .collect();
            if missing.is_empty() || Instant::now() > deadline || !failures.is_empty() {
                evidence.entries_appended = appended
                    .iter()
                    .map(|e| {
                        json!({"seq": e.seq, "kind": e.kind, "actor": e.actor, "subject": e.subject,
                                    "recorded_at": e.recorded_at, "hash": hex::encode(&e.hash)})
                    })
                    .collect();
                if failures.is_empty() {
                    for k in missing {
                        failures.push(format!("no `{k}` entry was appended"));
                    }
                }
                for k in &step.entries_absent {
                    if kinds.contains(&k.as_str()) {
                        failures.push(format!("a `{k}` entry was appended; none was expected"));
                    }
                }
                if step.no_entries && !appended.is_empty() {
                    failures.push(format!(
                        "{} entries were appended ({}); none were expected",
                        appended.len(),
                        kinds.join(", ")
                    ));
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run_step(
        &self,
        step: &Step,
        vars: &mut BTreeMap<String, String>,
        evidence: &mut Evidence,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let mut failures = Vec::new();
        self.learn_one_time_passwords(vars);
        let observed = match step.action {
            Action::Http | Action::Events => {
                let mut last = String::new();
                for _ in 0..step.repeat.unwrap_or(1).max(1) {
                    let (status, body) = self.exchange(step, vars, evidence).await?;
                    last = describe(status, &body);
                    check_response(step, status, &body, vars, &mut failures);
                    if !failures.is_empty() {
                        break;
                    }
                }
                last
            }
            Action::Wait => {
                let deadline = Instant::now()
                    + Duration::from_secs(step.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S));
                let mut polls = 0;
                loop {
                    polls += 1;
                    let mut scratch = Evidence::default();
                    let (status, body) = self.exchange(step, vars, &mut scratch).await?;
                    let mut f = Vec::new();
                    check_response(step, status, &body, vars, &mut f);
                    if f.is_empty() || Instant::now() > deadline {
                        evidence.exchanges.extend(scratch.exchanges);
                        failures = f;
                        break format!("after {polls} polls: {}", describe(status, &body));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Action::User => self.user(step, vars, evidence, &mut failures).await?,
            Action::Settle => self.settle(step).await.unwrap_or_else(|e| {
                failures.push(e.to_string());
                e.to_string()
            }),
            Action::Cli => self.cli(step, vars, evidence, &mut failures).await?,
            Action::Modes => self.modes(step, vars, evidence, &mut failures)?,
            Action::Sql => {
                let text = match (&step.sql_postgres, self.instance.store.backend_name()) {
                    (Some(pg), "postgres") => pg.as_str(),
                    _ => step.sql.as_deref().unwrap_or_default(),
                };
                let sql = substitute(text, vars)?;
                let outcome = self.instance.store.writer().execute_raw(&sql).await;
                let refused = outcome.is_err();
                evidence.sql = Some(json!({"statement": sql, "refused": refused,
                    "database_said": match &outcome { Ok(n) => format!("{n} rows affected"), Err(e) => e.to_string() }}));
                if Some(refused) != step.refused {
                    failures.push(if refused {
                        "the database refused the statement; it was expected to accept it".into()
                    } else {
                        "the database accepted the statement; it was expected to refuse it".into()
                    });
                }
                match outcome {
                    Ok(n) => format!("accepted: {n} rows affected"),
                    Err(e) => format!("refused: {}", truncate(&e.to_string(), 300)),
                }
            }
            Action::Edit => {
                let file =
                    PathBuf::from(substitute(step.file.as_deref().unwrap_or_default(), vars)?);
                let n = step.line.unwrap_or(0);
                let find = substitute(step.find.as_deref().unwrap_or_default(), vars)?;
                let replace = substitute(step.replace.as_deref().unwrap_or_default(), vars)?;
                // Bytes, not text: a PDF is edited as well as a JSONL file.
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let Some(line) = lines.get_mut(n.saturating_sub(1)).filter(|_| n > 0) else {
                    bail!("{} has no line {n}", file.display());
                };
                let Some(at) = line
                    .windows(find.len().max(1))
                    .position(|w| w == find.as_bytes())
                else {
                    bail!("line {n} of {} does not contain `{find}`", file.display());
                };
                line.splice(at..at + find.len(), replace.bytes());
                std::fs::write(&file, lines.join(&b'\n'))?;
                evidence.edit =
                    Some(json!({"file": file, "line": n, "find": find, "replace": replace}));
                format!(
                    "line {n} of {} changed: `{find}` -> `{replace}`",
                    file.display()
                )
            }
            Action::Target => {
                let name = step.target.as_deref().unwrap_or_default();
                let target = self
                    .instance
                    .targets
                    .get(name)
                    .with_context(|| format!("no simulated target `{name}`"))?;
                let fault = step.fault.as_deref().unwrap_or_default();
                match fault {
                    "stop" => target.stop().await,
                    "resume" => target.resume().await?,
                    status => {
                        let status: u16 = status.parse().with_context(|| {
                            format!("fault `{status}`: use an HTTP status, `stop` or `resume`")
                        })?;
                        target.fail_next(step.count.unwrap_or(1) as usize, status);
                    }
                }
                evidence.target = Some(
                    json!({"target": name, "fault": fault, "count": step.count, "stats": format!("{:?}", target.stats())}),
                );
                format!(
                    "simulated {name}: {fault}{}",
                    step.count.map(|c| format!(" x{c}")).unwrap_or_default()
                )
            }
        };
        Ok((observed, failures))
    }

    /// One HTTP request of an `http`, `events` or `wait` step, recorded in
    /// the evidence with its secrets redacted.
    async fn exchange(
        &self,
        step: &Step,
        vars: &BTreeMap<String, String>,
        evidence: &mut Evidence,
    ) -> anyhow::Result<(u16, Value)> {
        let Outgoing {
            method,
            path,
            auth,
            body,
            content_type,
        } = Outgoing::of(step, vars)?;
        let (cookie, bearer) = credentials(&auth, vars)?;
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.instance.base));
        if let Some(b) = &bearer {
            request = request.bearer_auth(b);
        }
        if let Some(c) = &cookie {
            request = request.header("cookie", format!("{}={c}", crate::console::SESSION_COOKIE));
        }
        if let Some(b) = &body {
            request = request
                .header("content-type", &content_type)
                .body(b.clone());
        }
        let started = now();
        let (status, headers, value) = read_response(request.send().await?).await?;
        let shown_body = shown_body(step, body.as_deref(), vars);
        evidence.exchanges.push(json!({
            "at": started,
            "request": {"method": method.as_str(), "path": path, "auth": describe_auth(&auth), "content_type": body.as_ref().map(|_| content_type.clone()), "body": shown_body},
            "response": {"status": status, "headers": headers, "body": redact_truncated(&value)},
        }));
        Ok((status, value))
    }

    async fn user(
        &self,
        step: &Step,
        vars: &mut BTreeMap<String, String>,
        evidence: &mut Evidence,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let id = substitute(step.user.as_deref().unwrap_or_default(), vars)?;
        let name = step.name.clone().unwrap_or_else(|| format!("OQ User {id}"));
        let create = Step {
            action: Action::Http,
            request: Some("POST /v1/users".into()),
            auth: Some("admin".into()),
            body: Some(
                json!({"user_id": id, "printed_name": name, "email": format!("{id}@oq.invalid"),
                "roles": step.roles, "identity_verification_method": "OQ fixture: identity checked by the validation engineer",
                "reason": format!("OQ test user for run {}", self.run_id)}),
            ),
            ..blank(step)
        };
        // The one-time password goes to the person through the credential
        // channel: the simulated mail system of a throw-away instance. A
        // staged instance's channel is the site's, so its OQ users are made
        // by the data-directory holder, as `trailmark user create` does.
        let initial = match &self.instance.mailbox {
            Some(mailbox) => {
                let (status, body) = self.exchange(&create, vars, evidence).await?;
                if status != 201 {
                    failures.push(format!("creating {id} answered {status}: {body}"));
                    return Ok(describe(status, &body));
                }
                match mailbox.password_for(&id) {
                    Some(p) => p,
                    None => {
                        failures.push(format!("{id} was created but no one-time password reached the credential channel"));
                        return Ok(format!("{id} created; no one-time password sent"));
                    }
                }
            }
            None => match self.create_at_the_server(&id, &name, &step.roles).await {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("creating {id} at the server: {e:#}"));
                    return Ok(format!("{id} not created"));
                }
            },
        };
        let (session, password) =
            match first_sign_in(&self.http, &self.instance.base, &id, &initial).await {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("{e:#}"));
                    return Ok(format!("{id} created; first sign-in failed"));
                }
            };
        evidence.exchanges.push(json!({"request": {"method": "POST", "path": "/v1/sessions", "body": {"user_id": id, "password": "[redacted]"}},
            "then": {"method": "POST", "path": "/v1/account/password", "body": {"current_password": "[redacted]", "new_password": "[redacted]"}},
            "response": "session opened; one-time password replaced"}));
        vars.insert(format!("session:{id}"), session);
        vars.insert(format!("password:{id}"), password);
        Ok(format!(
            "{id} created with roles {}; signed in; one-time password replaced",
            step.roles.join(", ")
        ))
    }

    /// `${otp:ID}`: the newest one-time password the simulated credential
    /// channel got for each user (throw-away instances).
    fn learn_one_time_passwords(&self, vars: &mut BTreeMap<String, String>) {
        if let Some(mailbox) = &self.instance.mailbox {
            for (user, otp) in mailbox.latest() {
                vars.insert(format!("otp:{user}"), otp);
            }
        }
    }

    /// Creates an OQ user as the data-directory holder does (`trailmark
    /// user create`); returns the one-time password.
    async fn create_at_the_server(
        &self,
        id: &str,
        name: &str,
        roles: &[String],
    ) -> anyhow::Result<String> {
        let initial = crate::identity::password::one_time_password(id);
        let opened =
            Instance::open(&self.instance.data, self.instance.database_url.as_deref()).await?;
        let created = opened
            .create_user(
                crate::identity::service::NewUser {
                    user_id: id.to_owned(),
                    printed_name: name.to_owned(),
                    email: format!("{id}@oq.invalid"),
                    roles: roles.to_vec(),
                    identity_verified_by: None,
                    identity_verification_method:
                        "OQ fixture: identity checked by the validation engineer".into(),
                    initial_password: Some(initial.clone()),
                },
                &format!("OQ test user for run {}", self.run_id),
            )
            .await;
        opened.store.close().await;
        created.map(|()| initial)
    }

    async fn settle(&self, step: &Step) -> anyhow::Result<String> {
        self.idle(Duration::from_secs(
            step.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S),
        ))
        .await
    }

    /// Waits until the rules worker has applied every event and every
    /// message is delivered (or dead-lettered).
    async fn idle(&self, limit: Duration) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let left = crate::integration::queries::backlog(&self.instance.store).await?;
            if left.is_idle() {
                return Ok(format!("idle after {} ms", started.elapsed().as_millis()));
            }
            if started.elapsed() > limit {
                bail!(
                    "not idle after {} s: {} events not applied, {} messages not delivered",
                    limit.as_secs(),
                    left.events,
                    left.messages
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `modes`: each path's permission bits against the protocol's; the
    /// SQLite-only paths only when the instance runs on SQLite.
    fn modes(
        &self,
        step: &Step,
        vars: &BTreeMap<String, String>,
        evidence: &mut Evidence,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let sqlite = self.instance.store.database_file().is_some();
        let mut wanted: Vec<(&String, &String)> = step.modes.iter().collect();
        if sqlite {
            wanted.extend(&step.modes_sqlite);
        }
        let mut seen = Vec::new();
        let mut shown = Vec::new();
        for (path, want) in wanted {
            let path = substitute(path, vars)?;
            let want = u32::from_str_radix(want, 8).with_context(|| format!("mode `{want}`"))?;
            let found = crate::config::mode_of(Path::new(&path));
            let text = found.map_or_else(|| "absent".to_owned(), |m| format!("{m:04o}"));
            if found != Some(want) {
                failures.push(format!("{path} is {text}; expected {want:04o}"));
            }
            shown.push(format!("{path} {text}"));
            seen.push(json!({"path": path, "expected": format!("{want:04o}"), "found": text}));
        }
        let note = if sqlite || step.modes_sqlite.is_empty() {
            String::new()
        } else {
            format!(
                "; not applicable on {}: {}",
                self.instance.store.backend_name(),
                step.modes_sqlite
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        evidence.modes = Some(json!({"paths": seen, "sqlite_paths_checked": sqlite}));
        Ok(format!("{}{note}", shown.join(", ")))
    }

    async fn cli(
        &self,
        step: &Step,
        vars: &BTreeMap<String, String>,
        evidence: &mut Evidence,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<String> {
        let mut args = vec![
            "--data".to_owned(),
            self.instance.data.display().to_string(),
        ];
        if let Some(url) = &self.instance.database_url {
            args.push("--database-url".into());
            args.push(url.clone());
        }
        for a in &step.args {
            args.push(substitute(a, vars)?);
        }
        let output = tokio::time::timeout(
            Duration::from_secs(step.timeout_s.unwrap_or(300)),
            tokio::process::Command::new(&self.binary)
                .args(&args)
                .env_remove("TRAILMARK_PASSWORD")
                .env_remove("DATABASE_URL")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("the command did not finish in time")??;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("postgres") {
                    crate::config::redact_url(a)
                } else {
                    a.clone()
                }
            })
            .collect();
        evidence.cli = Some(json!({"program": "trailmark", "args": shown, "exit": code,
            "stdout": truncate(&stdout, EVIDENCE_TEXT_MAX), "stderr": truncate(&stderr, EVIDENCE_TEXT_MAX)}));
        if let Some(want) = step.exit
            && want != code
        {
            failures.push(format!("exit code {code}; expected {want}"));
        }
        let both = format!("{stdout}\n{stderr}");
        for s in &step.output_contains {
            let s = substitute(s, vars)?;
            if !both.contains(&s) {
                failures.push(format!("the output does not contain `{s}`"));
            }
        }
        let first = both.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Ok(format!(
            "`trailmark {}` exited {code}: {}",
            step.args.join(" "),
            truncate(first, 300)
        ))
    }
}

fn blank(step: &Step) -> Step {
    Step {
        action: Action::Http,
        expect: step.expect.clone(),
        auth: None,
        request: None,
        body: None,
        raw_body: None,
        form: BTreeMap::new(),
        extract: BTreeMap::new(),
        content_type: None,
        events: Vec::new(),
        source: None,
        repeat: None,
        status: None,
        json: BTreeMap::new(),
        body_contains: Vec::new(),
        body_excludes: Vec::new(),
        entries: Vec::new(),
        entries_absent: Vec::new(),
        no_entries: false,
        save: BTreeMap::new(),
        args: Vec::new(),
        exit: None,
        output_contains: Vec::new(),
        sql: None,
        sql_postgres: None,
        refused: None,
        file: None,
        line: None,
        find: None,
        replace: None,
        target: None,
        fault: None,
        count: None,
        modes: BTreeMap::new(),
        modes_sqlite: BTreeMap::new(),
        user: None,
        name: None,
        roles: Vec::new(),
        timeout_s: None,
    }
}

/// The request of an `http`, `events` or `wait` step, variables
/// substituted.
struct Outgoing {
    method: String,
    path: String,
    /// `none`, `admin`, `console:USER`, or a session or token variable.
    auth: String,
    body: Option<String>,
    content_type: String,
}

impl Outgoing {
    fn of(step: &Step, vars: &BTreeMap<String, String>) -> anyhow::Result<Outgoing> {
        if step.action == Action::Events {
            return Outgoing::events(step, vars);
        }
        let request = substitute(step.request.as_deref().unwrap_or_default(), vars)?;
        let (method, path) = request
            .split_once(' ')
            .context("request is `METHOD /path`")?;
        let body = match (&step.body, &step.raw_body) {
            (Some(b), _) => Some(substitute_json(b, vars)?.to_string()),
            (None, Some(raw)) => Some(substitute(raw, vars)?),
            (None, None) if !step.form.is_empty() => Some(urlencoded(&step.form, vars)?),
            (None, None) => None,
        };
        let default_type = if step.form.is_empty() {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        Ok(Outgoing {
            method: method.to_owned(),
            path: path.to_owned(),
            auth: step.auth.clone().unwrap_or_else(|| "none".into()),
            body,
            content_type: step
                .content_type
                .clone()
                .unwrap_or_else(|| default_type.into()),
        })
    }

    /// An `events` step: its events as one CloudEvents batch from its
    /// source, with `specversion` and `source` filled in.
    fn events(step: &Step, vars: &BTreeMap<String, String>) -> anyhow::Result<Outgoing> {
        let source = step.source.clone().unwrap_or_default();
        let events: Vec<Value> = step
            .events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if let Some(o) = e.as_object_mut() {
                    o.entry("specversion").or_insert(json!("1.0"));
                    o.entry("source").or_insert(json!(format!("oq://{source}")));
                }
                e
            })
            .collect();
        Ok(Outgoing {
            method: "POST".to_owned(),
            path: "/v1/events".to_owned(),
            auth: step.auth.clone().unwrap_or(format!("token:{source}")),
            body: Some(substitute_json(&Value::Array(events), vars)?.to_string()),
            content_type: "application/cloudevents-batch+json".to_owned(),
        })
    }
}

/// The session cookie or bearer credential `auth` names. `console:USER`:
/// the console's session cookie carries the same session credential as
/// the API's bearer.
fn credentials(
    auth: &str,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let cookie =
        match auth.strip_prefix("console:") {
            Some(user) => Some(vars.get(&format!("session:{user}")).cloned().with_context(
                || {
                    format!(
                        "auth `{auth}`: {user} has no session (create the user in an earlier step)"
                    )
                },
            )?),
            None => None,
        };
    let bearer = match auth {
        _ if cookie.is_some() => None,
        "none" => None,
        "admin" => Some(vars.get("admin").cloned().context("no admin session")?),
        other => Some(vars.get(other).cloned().with_context(|| {
            format!("auth `{other}`: no such session or token (create it in an earlier step)")
        })?),
    };
    Ok((cookie, bearer))
}

/// A response's status, its headers worth keeping, and its body: JSON as
/// JSON, text as a string, anything else by type, size and SHA-256.
async fn read_response(
    response: reqwest::Response,
) -> anyhow::Result<(u16, BTreeMap<String, String>, Value)> {
    let status = response.status().as_u16();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let headers: BTreeMap<String, String> = response
        .headers()
        .iter()
        .filter(|(k, _)| {
            k.as_str().starts_with("x-trailmark") || *k == "content-type" || *k == "retry-after"
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = response.bytes().await?;
    let value = if media.contains("json") {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    } else if media.starts_with("text/") || bytes.is_empty() {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        json!({"content_type": media, "bytes": bytes.len(), "sha256": super::protocol::sha256_hex(&bytes)})
    };
    Ok((status, headers, value))
}

/// The request body as the evidence shows it: secrets redacted; a form
/// field by field, so its password is redacted too.
fn shown_body(step: &Step, body: Option<&str>, vars: &BTreeMap<String, String>) -> Option<Value> {
    if step.form.is_empty() {
        body.map(|b| {
            serde_json::from_str::<Value>(b)
                .map_or_else(|_| Value::String(truncate(b, EVIDENCE_TEXT_MAX)), redact)
        })
    } else {
        let fields: serde_json::Map<String, Value> = step
            .form
            .iter()
            .map(|(k, v)| {
                (
                    substitute(k, vars).unwrap_or_else(|_| k.clone()),
                    Value::String(substitute(v, vars).unwrap_or_default()),
                )
            })
            .collect();
        Some(redact(Value::Object(fields)))
    }
}

/// A response body as text: a string as it is, anything else as JSON.
fn body_text(body: &Value) -> String {
    match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe_auth(auth: &str) -> String {
    match auth.split_once(':') {
        Some((kind, who)) => format!("{kind} of {who} ([redacted])"),
        None => auth.to_owned(),
    }
}

fn describe(status: u16, body: &Value) -> String {
    let text = body_text(body);
    format!("HTTP {status}: {}", truncate(&redact_text(&text), 400))
}

fn check_response(
    step: &Step,
    status: u16,
    body: &Value,
    vars: &mut BTreeMap<String, String>,
    failures: &mut Vec<String>,
) {
    if let Some(want) = step.status
        && want != status
    {
        failures.push(format!("status {status}; expected {want}"));
    }
    for (pointer, want) in &step.json {
        let got = body.pointer(pointer);
        let want = match substitute_json(want, vars) {
            Ok(w) => w,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let ok = match (&want, got) {
            (Value::String(s), Some(g)) if s == "<any>" => !g.is_null(),
            (Value::String(s), got) if s == "<null>" => got.is_none_or(Value::is_null),
            (_, Some(g)) => *g == want,
            (_, None) => false,
        };
        if !ok {
            failures.push(format!(
                "{pointer} is {}; expected {want}",
                got.map_or("absent".into(), |g| truncate(&g.to_string(), 200))
            ));
        }
    }
    let text = body_text(body);
    for s in &step.body_contains {
        let s = substitute(s, vars).unwrap_or_else(|_| s.clone());
        if !text.contains(&s) {
            failures.push(format!("the response does not contain `{s}`"));
        }
    }
    for s in &step.body_excludes {
        let s = substitute(s, vars).unwrap_or_else(|_| s.clone());
        if text.contains(s.as_str()) {
            failures.push(format!("the response contains `{s}`"));
        }
    }
    for (name, [before, after]) in &step.extract {
        let found = text.find(before.as_str()).and_then(|at| {
            let rest = &text[at + before.len()..];
            rest.find(after.as_str()).map(|end| rest[..end].to_owned())
        });
        match found {
            Some(v) => {
                vars.insert(name.clone(), v);
            }
            None => failures.push(format!(
                "cannot extract {name}: `{before}`...`{after}` is not in the response"
            )),
        }
    }
    for (name, pointer) in &step.save {
        match body.pointer(pointer) {
            Some(Value::String(s)) => {
                vars.insert(name.clone(), s.clone());
            }
            Some(v) if !v.is_null() => {
                vars.insert(name.clone(), v.to_string());
            }
            _ => failures.push(format!("cannot save {name}: {pointer} is absent")),
        }
    }
}

/// Replaces `${name}` with variables.
///
/// # Errors
/// An unknown variable.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            bail!("unclosed `${{` in `{text}`");
        };
        let name = &rest[start + 2..start + end];
        if let Some(n) = name.strip_prefix("pad:") {
            // `${pad:N}`: N characters, for limit tests.
            let n: usize = n
                .parse()
                .with_context(|| format!("`${{{name}}}`: N must be a number"))?;
            out.push_str(&"x".repeat(n));
        } else {
            let value = vars
                .get(name)
                .with_context(|| format!("unknown variable `${{{name}}}`"))?;
            out.push_str(value);
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn urlencoded(
    form: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut pairs = Vec::new();
    for (k, v) in form {
        pairs.push((substitute(k, vars)?, substitute(v, vars)?));
    }
    Ok(crate::console::urlencode(&pairs))
}

fn substitute_json(value: &Value, vars: &BTreeMap<String, String>) -> anyhow::Result<Value> {
    Ok(match value {
        Value::String(s) => Value::String(substitute(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| substitute_json(v, vars))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), substitute_json(v, vars)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces the values of secret-bearing keys with `[redacted]`.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    if SECRET_KEYS.contains(&k.as_str()) && !v.is_null() && !v.is_boolean() {
                        (k, Value::String("[redacted]".into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_text(&s)),
        other => other,
    }
}

/// Masks credentials that appear inside text (`tmk_…`, `tms_…`).
fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("tmk_").or_else(|| rest.find("tms_")) {
        let j = rest.find("tms_").map_or(i, |j| j.min(i));
        let j = rest.find("tmk_").map_or(j, |k| k.min(j));
        out.push_str(&rest[..j]);
        let tail = &rest[j..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(tail.len());
        out.push_str("[redacted]");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_truncated(value: &Value) -> Value {
    let text = value.to_string();
    if text.len() > EVIDENCE_TEXT_MAX {
        Value::String(truncate(&redact_text(&text), EVIDENCE_TEXT_MAX))
    } else {
        redact(value.clone())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_and_unknown_ones_named() {
        let vars = BTreeMap::from([
            ("a".to_owned(), "x".to_owned()),
            ("session:u".to_owned(), "s".to_owned()),
        ]);
        assert_eq!(substitute("1${a}2${session:u}", &vars).unwrap(), "1x2s");
        assert_eq!(substitute("${pad:3}", &vars).unwrap(), "xxx");
        assert!(
            substitute("${b}", &vars)
                .unwrap_err()
                .to_string()
                .contains("${b}")
        );
        assert!(substitute("${a", &vars).is_err());
    }

    #[test]
    fn secrets_never_reach_the_evidence() {
        let v = redact(
            json!({"user_id": "u", "password": "hunter2hunter2", "nested": [{"token": "tmk_abc_def"}],
            "detail": "token tmk_0123_secret refused", "must_change_password": true}),
        );
        let text = v.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("tmk_"),
            "{text}"
        );
        assert_eq!(v["must_change_password"], true);
        assert_eq!(v["user_id"], "u");
    }

    #[test]
    fn checks_name_what_differs() {
        let mut step = blank(&Step {
            expect: "x".into(),
            ..blank_seed()
        });
        step.status = Some(201);
        step.json.insert("/a".into(), json!("<any>"));
        step.json.insert("/b".into(), json!(2));
        let mut vars = BTreeMap::new();
        let mut failures = Vec::new();
        check_response(&step, 409, &json!({"b": 3}), &mut vars, &mut failures);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("409"));
    }

    fn blank_seed() -> Step {
        toml::from_str("action = \"settle\"\nexpect = \"x\"").unwrap()
    }
}
