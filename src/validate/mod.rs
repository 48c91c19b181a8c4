//! Validation as code (docs/VALIDATION.md): the IQ checks, the OQ runner
//! over the protocols in `validation/`, and the evidence package each run
//! leaves: results, evidence, a signed summary PDF, the run's ledger
//! record and a manifest of hashes.

pub mod iq;
pub mod oq;
pub mod protocol;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::identity::service::SignRequest;
use crate::instance::Instance;
use crate::ledger::{Actor, Seq, Subject};
use crate::sequencer::AppendRequest;
use oq::Outcome;
use protocol::ValidationSet;

/// `format` of `results.json`.
pub const RESULTS_FORMAT: &str = "trailmark-validation-v1";
/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.sha256";

/// Who executes or signs: user ID and password (re-authentication).
#[derive(Clone)]
pub struct Signer {
    /// User ID.
    pub user_id: String,
    /// Password (never written anywhere).
    pub password: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `V-IQ-…` or `V-OQ-…`.
    pub run_id: String,
    /// pass or fail.
    pub verdict: &'static str,
    /// Every requirement covered by a case that ran (OQ); always true for IQ.
    pub complete: bool,
    /// Requirements not covered by a case that ran.
    pub uncovered: Vec<String>,
    /// Deviations raised.
    pub deviations: usize,
    /// Passed / failed / not run.
    pub counts: (usize, usize, usize),
    /// The run's ledger entry.
    pub entry_seq: Seq,
    /// Whether the executor signed it.
    pub signed: bool,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// OQ options.
#[derive(Debug, Clone, Default)]
pub struct OqOptions {
    /// A staged instance's URL (its data directory is the installation's).
    pub target: Option<String>,
    /// Only these cases (a partial run is never complete).
    pub only: Vec<String>,
    /// The `trailmark` executable for `cli` steps.
    pub binary: PathBuf,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn run_id(phase: &str) -> String {
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).expect("the OS provides randomness");
    format!(
        "V-{}-{}-{}",
        phase.to_uppercase(),
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        hex::encode(r)
    )
}

/// Refuses to write into a directory that holds anything: evidence is never
/// overwritten.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty; give a new directory for the evidence package (evidence is never overwritten)",
            out.display()
        );
    }
    std::fs::create_dir_all(out.join("evidence"))
        .with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

/// Re-authenticates the executor (if any), then creates the output
/// directory; returns the executor's user ID and printed name.
async fn begin(
    opened: &Instance,
    out: &Path,
    executor: Option<&Signer>,
) -> anyhow::Result<Option<(String, String)>> {
    // The package ends with a signed PDF: refuse at once, before anything
    // runs or is recorded, when the installation cannot sign one.
    if crate::report::sign::ReportSigner::from_dir(&opened.dir)?.is_none() {
        bail!(
            "the installation has no report-signing key to sign the evidence package; run `trailmark ca init-reports` first"
        );
    }
    let executed_by = match executor {
        Some(s) => Some((s.user_id.clone(), authenticate(opened, s).await?)),
        None => None,
    };
    prepare_out(out)?;
    Ok(executed_by)
}

/// Checks the executor's credentials before anything runs, so a wrong
/// password stops the run at once (the attempt counts toward lockout).
async fn authenticate(opened: &Instance, signer: &Signer) -> anyhow::Result<String> {
    let s = signer.clone();
    opened.with_identity(|identity| async move {
        let login = identity.login(&s.user_id, &s.password).await?;
        let caller = identity.authenticate_session(&login.session.token).await?;
        let name = caller.user.printed_name.clone();
        let _ = identity.logout(&caller).await;
        if login.must_change_password {
            return Err(crate::identity::IdentityError::Conflict(format!(
                "{} must change the password before signing (log in over the API and POST /v1/account/password)",
                s.user_id
            )));
        }
        Ok(name)
    })
    .await
}

/// The host the run executes on.
fn environment() -> Value {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.into());
    json!({
        "host": host, "os": os, "arch": std::env::consts::ARCH,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "user": std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
    })
}

fn software(binary: &Path) -> Value {
    let sha = std::fs::read(binary)
        .map(|b| protocol::sha256_hex(&b))
        .unwrap_or_default();
    json!({"name": "trailmark", "version": env!("CARGO_PKG_VERSION"), "sha256": sha, "path": binary,
           "profile": if cfg!(debug_assertions) { "debug" } else { "release" }})
}

/// Runs the IQ on the installation and writes the package to `out`.
///
/// # Errors
/// An unusable output directory, a wrong executor password, or a failure to
/// record the run (the checks themselves fail as results, not errors).
pub async fn run_iq(
    opened: &Instance,
    out: &Path,
    binary: &Path,
    expected: &iq::Expected,
    executor: Option<&Signer>,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let executed_by = begin(opened, out, executor).await?;
    let id = run_id("iq");
    let started_at = now();
    let checks = iq::run(opened, binary, expected).await;
    let mut deviations = Vec::new();
    for c in checks.iter().filter(|c| c.result == Outcome::Fail) {
        deviations.push(oq::Deviation {
            id: format!("DEV-{:03}", deviations.len() + 1),
            case: c.id.clone(),
            step: 0,
            requirements: c.covers.clone(),
            expected: c.expected.clone(),
            observed: c.observed.clone(),
            raised_at: now(),
            impact: "the installation differs from what was approved; assess before use".into(),
        });
    }
    for c in &checks {
        std::fs::write(
            out.join("evidence").join(format!("{}.json", c.id)),
            serde_json::to_vec_pretty(c)?,
        )?;
    }
    let passed = checks.iter().filter(|c| c.result == Outcome::Pass).count();
    let failed = checks.len() - passed;
    let verdict = if failed == 0 { "pass" } else { "fail" };
    let set = ValidationSet::embedded().map_err(anyhow::Error::msg)?;
    let results = json!({
        "format": RESULTS_FORMAT, "phase": "iq", "run_id": id,
        "started_at": started_at, "finished_at": now(),
        "executed_by": executed_by.as_ref().map(|(u, n)| json!({"user_id": u, "printed_name": n})),
        "installation": installation(opened),
        "software": software(binary), "environment": environment(),
        "requirements": {"file": protocol::REQUIREMENTS.0, "sha256": set.requirements_sha256, "count": set.requirements.len()},
        "checks": checks, "deviations": deviations,
        "verdict": verdict, "complete": true, "uncovered": [],
        "counts": {"passed": passed, "failed": failed, "not_run": 0},
    });
    seal(opened, out, results, executor, executed_by, started).await
}

fn installation(opened: &Instance) -> Value {
    json!({"data_dir": opened.dir.path(), "origin": opened.config.origin, "backend": opened.store.backend_name(),
           "verifier_key": opened.key.verifier().to_text()})
}

/// Runs the OQ (a throw-away instance unless `options.target`) and writes the
/// package to `out`.
///
/// # Errors
/// An unusable output directory, a wrong executor password, an instance
/// that cannot start, or a failure to record the run.
pub async fn run_oq(
    opened: &Instance,
    out: &Path,
    options: &OqOptions,
    executor: Option<&Signer>,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let executed_by = begin(opened, out, executor).await?;
    let set = ValidationSet::embedded().map_err(anyhow::Error::msg)?;
    for id in &options.only {
        if !set.cases().any(|c| c.id == *id) {
            bail!("there is no test case {id}; see validation/oq/");
        }
    }
    let id = run_id("oq");
    let started_at = now();
    let install_db = opened.dir.database_url(&opened.config, None);
    let instance = match &options.target {
        None => oq::UnderTest::throwaway(&opened.config, Some(install_db.as_str())).await?,
        Some(url) => oq::UnderTest::staged(opened, url).await?,
    };
    eprintln!(
        "OQ {id} against {} ({})",
        instance.base,
        if instance.throwaway {
            "throw-away instance"
        } else {
            "staged instance"
        }
    );
    let target = json!({
        "kind": if instance.throwaway { "throw-away" } else { "staged" },
        "url": instance.base,
        "backend": instance.store.backend_name(),
        "configuration": if instance.throwaway {
            "the installation's trailmark.toml; targets replaced by simulated QMS and LMS (3 attempts, 50-200 ms backoff)"
        } else { "the staged installation's own" },
    });
    let runner = oq::Runner::new(
        &instance,
        options.binary.clone(),
        out.join("evidence"),
        id.clone(),
    );
    let (cases, deviations) = runner.run(&set, &options.only).await;
    drop(runner);
    instance.close().await;

    let mut traceability = Vec::new();
    let mut uncovered = Vec::new();
    for r in &set.requirements {
        let covering: Vec<&oq::CaseResult> =
            cases.iter().filter(|c| c.covers.contains(&r.id)).collect();
        let ran: Vec<&&oq::CaseResult> = covering
            .iter()
            .filter(|c| c.result != Outcome::NotRun)
            .collect();
        let result = if r.planned.is_some() {
            "planned"
        } else if ran.is_empty() {
            uncovered.push(r.id.clone());
            "not tested"
        } else if ran.iter().any(|c| c.result == Outcome::Fail) {
            "fail"
        } else {
            "pass"
        };
        traceability.push(json!({"requirement": r.id, "text": r.text, "source": r.source, "risk": r.risk,
            "planned": r.planned, "cases": covering.iter().map(|c| json!({"id": c.id, "result": c.result})).collect::<Vec<_>>(),
            "result": result}));
    }
    let count = |o: Outcome| cases.iter().filter(|c| c.result == o).count();
    let (passed, failed, not_run) = (
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::NotRun),
    );
    let complete = uncovered.is_empty() && options.only.is_empty();
    let verdict = if complete && failed == 0 {
        "pass"
    } else {
        "fail"
    };
    let results = json!({
        "format": RESULTS_FORMAT, "phase": "oq", "run_id": id,
        "started_at": started_at, "finished_at": now(),
        "executed_by": executed_by.as_ref().map(|(u, n)| json!({"user_id": u, "printed_name": n})),
        "installation": installation(opened),
        "target": target,
        "software": software(&options.binary), "environment": environment(),
        "tools": [{"name": "trailmark validate oq (built-in runner)", "version": env!("CARGO_PKG_VERSION")}],
        "requirements": {"file": protocol::REQUIREMENTS.0, "sha256": set.requirements_sha256, "count": set.requirements.len(),
                         "items": set.requirements},
        "protocols": set.protocols.iter().map(|p| json!({"file": p.file, "sha256": p.sha256, "title": p.title, "cases": p.cases.len()})).collect::<Vec<_>>(),
        "partial": !options.only.is_empty(),
        "cases": cases, "deviations": deviations, "traceability": traceability,
        "verdict": verdict, "complete": complete, "uncovered": uncovered,
        "counts": {"passed": passed, "failed": failed, "not_run": not_run},
    });
    seal(opened, out, results, executor, executed_by, started).await
}

/// Records the run, signs it, writes the summary PDF, the record and the
/// manifest (docs/VALIDATION.md §5).
async fn seal(
    opened: &Instance,
    out: &Path,
    mut results: Value,
    executor: Option<&Signer>,
    executed_by: Option<(String, String)>,
    started: Instant,
) -> anyhow::Result<RunSummary> {
    results["duration_seconds"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    let bytes = serde_json::to_vec_pretty(&results)?;
    std::fs::write(out.join("results.json"), &bytes)?;
    let results_sha = protocol::sha256_hex(&bytes);
    let id = results["run_id"].as_str().unwrap_or_default().to_owned();
    let phase = results["phase"].as_str().unwrap_or_default().to_owned();
    let verdict: &'static str = if results["verdict"] == "pass" {
        "pass"
    } else {
        "fail"
    };
    let complete = results["complete"] == true;
    let uncovered: Vec<String> =
        serde_json::from_value(results["uncovered"].clone()).unwrap_or_default();
    let counts = (
        results["counts"]["passed"].as_u64().unwrap_or(0) as usize,
        results["counts"]["failed"].as_u64().unwrap_or(0) as usize,
        results["counts"]["not_run"].as_u64().unwrap_or(0) as usize,
    );
    let deviation_ids: Vec<Value> = results["deviations"]
        .as_array()
        .map(|d| d.iter().map(|d| d["id"].clone()).collect())
        .unwrap_or_default();

    let mut payload = Map::new();
    payload.insert("run_id".into(), json!(id));
    payload.insert("phase".into(), json!(phase));
    payload.insert("verdict".into(), json!(verdict));
    payload.insert("complete".into(), json!(complete));
    payload.insert("uncovered".into(), json!(uncovered));
    payload.insert("counts".into(), results["counts"].clone());
    payload.insert("deviations".into(), json!(deviation_ids));
    payload.insert("results_sha256".into(), json!(results_sha));
    payload.insert(
        "requirements_sha256".into(),
        results["requirements"]["sha256"].clone(),
    );
    if let Some(p) = results.get("protocols") {
        payload.insert("protocols".into(), p.clone());
    }
    payload.insert(
        "software".into(),
        json!({"version": results["software"]["version"], "sha256": results["software"]["sha256"]}),
    );
    if let Some(t) = results.get("target") {
        payload.insert(
            "target".into(),
            json!({"kind": t["kind"], "backend": t["backend"]}),
        );
    }
    payload.insert("started_at".into(), results["started_at"].clone());
    payload.insert("finished_at".into(), results["finished_at"].clone());
    let actor = match &executed_by {
        Some((user, _)) => Actor::parse(&format!("user:{user}"))?,
        None => Actor::parse("system:cli")?,
    };
    let subject = Subject::parse(&format!("validation:run/{id}"))?;
    let receipt = opened
        .with_sequencer(|seq| async move {
            let kind = &crate::ledger::kind::VALIDATION_RUN_RECORDED;
            Ok(seq
                .append(AppendRequest::new(kind, actor, subject, payload))
                .await?)
        })
        .await?;
    let mut signatures = Vec::new();
    if let Some(s) = executor {
        signatures.push(sign_entry(opened, &receipt.hash.to_hex(), "executed", s).await?);
    }
    let record = Record::load(opened, receipt.seq).await?;
    summary::write(opened, &out.join("summary.pdf"), &results, &record)?;
    std::fs::write(
        out.join("record.json"),
        serde_json::to_vec_pretty(&record.to_json())?,
    )?;
    write_manifest(out)?;
    Ok(RunSummary {
        run_id: id,
        verdict,
        complete,
        uncovered,
        deviations: deviation_ids.len(),
        counts,
        entry_seq: receipt.seq,
        signed: !signatures.is_empty(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Signs the entry with hash `target` as `signer`, re-authenticating with
/// both components; returns the signature entry's seq.
async fn sign_entry(
    opened: &Instance,
    target: &str,
    meaning: &str,
    signer: &Signer,
) -> anyhow::Result<Seq> {
    let (s, target, meaning) = (signer.clone(), target.to_owned(), meaning.to_owned());
    opened
        .with_identity(|identity| async move {
            let login = identity.login(&s.user_id, &s.password).await?;
            let caller = identity.authenticate_session(&login.session.token).await?;
            let signed = identity
                .sign(
                    &caller,
                    SignRequest {
                        target,
                        meaning,
                        user_id: Some(s.user_id.clone()),
                        password: s.password.clone(),
                    },
                )
                .await;
            let _ = identity.logout(&caller).await;
            signed.map(|r| r.seq)
        })
        .await
}

/// The run's ledger entry and the signatures on it.
pub struct Record {
    /// The `validation.run.recorded` entry's seq.
    pub seq: Seq,
    /// Its hash.
    pub hash: String,
    /// Its canonical bytes.
    pub canonical: Vec<u8>,
    /// The signatures on it: (seq, canonical bytes, rendered line).
    pub signatures: Vec<(Seq, Vec<u8>, crate::identity::signature::SignatureView)>,
}

impl Record {
    /// Reads the entry `seq` and its signature children.
    ///
    /// # Errors
    /// A missing entry or a database error.
    pub async fn load(opened: &Instance, seq: Seq) -> anyhow::Result<Record> {
        let entry = opened
            .store
            .entry(seq)
            .await?
            .with_context(|| format!("entry {seq} is missing"))?;
        let mut signatures = Vec::new();
        for child in opened.store.children(seq).await? {
            if let Some(e) = opened.store.entry(child).await?
                && let Some(view) = crate::identity::signature::view_of(child, &e.canonical)
            {
                signatures.push((child, e.canonical, view));
            }
        }
        Ok(Record {
            seq,
            hash: hex::encode(&entry.hash),
            canonical: entry.canonical,
            signatures,
        })
    }

    /// `record.json`: the entries as JSON, exactly their canonical bytes parsed.
    pub fn to_json(&self) -> Value {
        let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
        json!({"run_entry": {"seq": self.seq, "hash": self.hash, "entry": parse(&self.canonical)},
               "signatures": self.signatures.iter().map(|(seq, c, v)| json!({"seq": seq, "manifestation": v.line, "entry": parse(c)})).collect::<Vec<_>>()})
    }
}

fn files_under(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files_under(&p, root, out)?;
        } else if p
            .strip_prefix(root)
            .map(|r| r != Path::new(MANIFEST))
            .unwrap_or(false)
        {
            out.push(p.strip_prefix(root).expect("under root").to_owned());
        }
    }
    Ok(())
}

fn file_sha(path: &Path) -> std::io::Result<String> {
    Ok(protocol::sha256_hex(&std::fs::read(path)?))
}

/// Writes `MANIFEST.sha256` (the `sha256sum` format) over every other file.
fn write_manifest(out: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    files_under(out, out, &mut files)?;
    files.sort();
    let mut text = String::new();
    for f in files {
        text.push_str(&format!("{}  {}\n", file_sha(&out.join(&f))?, f.display()));
    }
    std::fs::write(out.join(MANIFEST), text)?;
    Ok(())
}

/// What `validate check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// Run ID.
    pub run_id: String,
    /// Files checked against the manifest.
    pub files: usize,
    /// The run entry's seq.
    pub seq: Seq,
    /// The run entry's hash.
    pub hash: String,
    /// Verdict and completeness as recorded.
    pub verdict: String,
    /// As recorded.
    pub complete: bool,
    /// The signatures' manifestation lines.
    pub signatures: Vec<String>,
}

/// Re-hashes every file against the manifest, finds the run's entry in the
/// ledger and checks it records this `results.json`.
///
/// # Errors
/// Names the first file or record that does not match.
pub async fn check(opened: &Instance, dir: &Path) -> anyhow::Result<CheckReport> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("{} has no {MANIFEST}", dir.display()))?;
    let mut listed = BTreeMap::new();
    for line in manifest.lines() {
        let (sha, file) = line
            .split_once("  ")
            .with_context(|| format!("{MANIFEST}: malformed line `{line}`"))?;
        listed.insert(PathBuf::from(file), sha.to_owned());
    }
    let mut present = Vec::new();
    files_under(dir, dir, &mut present)?;
    for f in &present {
        let Some(want) = listed.get(f) else {
            bail!(
                "{} is not in the manifest: a file was added after sealing",
                f.display()
            );
        };
        if file_sha(&dir.join(f))? != *want {
            bail!(
                "{} changed since the package was sealed (its SHA-256 differs from the manifest)",
                f.display()
            );
        }
    }
    if let Some(missing) = listed.keys().find(|f| !present.contains(f)) {
        bail!(
            "{} is listed in the manifest but missing",
            missing.display()
        );
    }
    let results: Value = serde_json::from_slice(&std::fs::read(dir.join("results.json"))?)?;
    let run_id = results["run_id"]
        .as_str()
        .context("results.json has no run_id")?
        .to_owned();
    let record: Value = serde_json::from_slice(&std::fs::read(dir.join("record.json"))?)?;
    let seq = record["run_entry"]["seq"]
        .as_u64()
        .and_then(Seq::new)
        .context("record.json has no run entry")?;
    let entry = opened.store.entry(seq).await?.with_context(|| {
        format!("entry {seq} is not in this ledger: is --data the installation that ran {run_id}?")
    })?;
    let stored: Value = serde_json::from_slice(&entry.canonical)?;
    if stored["kind"] != "validation.run.recorded" || stored["payload"]["run_id"] != run_id.as_str()
    {
        bail!("entry {seq} of this ledger is not the record of {run_id}");
    }
    let results_sha = file_sha(&dir.join("results.json"))?;
    if stored["payload"]["results_sha256"] != results_sha.as_str() {
        bail!("results.json is not the one recorded in entry {seq} (SHA-256 {results_sha})");
    }
    let pdf = std::fs::read(dir.join("summary.pdf"))?;
    let ca = std::fs::read_to_string(opened.dir.file("report-ca.pem"))
        .ok()
        .and_then(|p| crate::report::sign::cert_der_from_pem(&p).ok());
    crate::report::verify::check_pdf_signature(&pdf, ca.as_deref()).map_err(|e| {
        anyhow::anyhow!("summary.pdf: its signature does not verify against report-ca.pem: {e}")
    })?;
    let current = Record::load(opened, seq).await?;
    Ok(CheckReport {
        run_id,
        files: present.len(),
        seq,
        hash: current.hash,
        verdict: stored["payload"]["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        complete: stored["payload"]["complete"] == true,
        signatures: current
            .signatures
            .iter()
            .map(|(_, _, v)| v.line.clone())
            .collect(),
    })
}

/// Checks the package, then signs its run entry with `meaning`.
///
/// # Errors
/// A package that does not check, or a refused signature (wrong password,
/// role, sequence, self-approval).
pub async fn sign(
    opened: &Instance,
    dir: &Path,
    meaning: &str,
    signer: &Signer,
) -> anyhow::Result<(CheckReport, Seq)> {
    let report = check(opened, dir).await?;
    let seq = sign_entry(opened, &report.hash, meaning, signer).await?;
    let after = check(opened, dir).await?;
    Ok((after, seq))
}
