//! The IQ checks (docs/VALIDATION.md §2): the installation as it is, each
//! check with expected and observed values and pass/fail.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::oq::Outcome;
use super::protocol::{PROTOCOLS, REQUIREMENTS, ValidationSet, sha256_hex};
use crate::audit::{self, VerifyOptions};
use crate::instance::Instance;

/// Least free space where the data directory lives.
pub const DISK_MIN_BYTES: u64 = 1 << 30;

/// One IQ check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `IQ-NN`.
    pub id: String,
    /// What it checks.
    pub title: String,
    /// Requirements it supports.
    pub covers: Vec<String>,
    /// Expected.
    pub expected: String,
    /// Observed.
    pub observed: String,
    /// Outcome.
    pub result: Outcome,
    /// Values behind the observation (the flattened configuration, the
    /// migrations, ...).
    pub details: Value,
}

/// What the IQ compares against.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    /// An earlier IQ's `results.json`: its observed binary hash and
    /// configuration become the expected ones.
    pub baseline: Option<Value>,
    /// An approved configuration (a `trailmark.toml`): its controlled keys
    /// are the expected ones.
    pub config: Option<toml::Value>,
}

fn check(
    id: &str,
    title: &str,
    covers: &[&str],
    expected: String,
    observed: String,
    ok: bool,
    details: Value,
) -> Check {
    Check {
        id: id.into(),
        title: title.into(),
        covers: covers.iter().map(|s| (*s).to_owned()).collect(),
        expected,
        observed,
        result: if ok { Outcome::Pass } else { Outcome::Fail },
        details,
    }
}

/// A `trailmark.toml`-shaped value flattened to dotted keys.
pub fn flatten(value: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Null => {
                out.insert(prefix.to_owned(), "(none)".into());
            }
            Value::String(s) => {
                out.insert(prefix.to_owned(), s.clone());
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// Whether a configuration key is controlled: it changes what the software
/// does to records, people or hand-overs. Names, addresses and the
/// targets' URLs are site-specific and only recorded.
pub fn controlled(key: &str) -> bool {
    (key.starts_with("identity.")
        && key != "identity.alert_webhook_url"
        && key != "identity.credential_webhook_url")
        || key.starts_with("sequencer.")
        || key.starts_with("verify.")
        || (key.starts_with("integration.") && !key.starts_with("integration.targets."))
        || key == "max_body_bytes"
}

/// Redacts what may carry a secret in a configuration value.
fn redact_config(key: &str, value: &str) -> String {
    if key == "database_url" || key.ends_with("_url") || key.ends_with(".url") {
        crate::config::redact_url(value)
    } else {
        value.to_owned()
    }
}

/// The built-in defaults of the controlled settings.
pub fn default_controlled() -> BTreeMap<String, String> {
    let defaults = json!({
        "max_body_bytes": 256 * 1024,
        "sequencer": crate::config::SequencerConfig::default(),
        "identity": crate::config::IdentityConfig::default(),
        "integration": crate::config::IntegrationConfig::default(),
        "verify": crate::config::VerifyConfig::default(),
    });
    flatten(&defaults)
        .into_iter()
        .filter(|(k, _)| controlled(k))
        .collect()
}

/// What one IQ check found: the expected value (which may depend on the
/// baseline or the installation), the observed one, pass or fail, and the
/// values behind the observation.
struct Observation {
    expected: String,
    observed: String,
    ok: bool,
    details: Value,
}

/// What the checks look at: the installation, its executable, what it is
/// compared against, and the time of the checks that need one (taken once,
/// when first asked for).
struct Iq<'a> {
    opened: &'a Instance,
    binary: &'a Path,
    expected: &'a Expected,
    now: OnceLock<DateTime<Utc>>,
}

impl Iq<'_> {
    fn now(&self) -> DateTime<Utc> {
        *self.now.get_or_init(Utc::now)
    }
}

type Observing<'a> = Pin<Box<dyn Future<Output = Observation> + Send + 'a>>;

/// One row of the IQ table: what is checked, the requirements it supports,
/// and how it is observed.
struct IqCheck {
    id: &'static str,
    title: &'static str,
    covers: &'static [&'static str],
    observe: for<'a> fn(&'a Iq<'a>) -> Observing<'a>,
}

/// The IQ checks, in the order they run and are reported.
const CHECKS: [IqCheck; 14] = [
    IqCheck {
        id: "IQ-01",
        title: "Software: version and SHA-256 of the installed executable",
        covers: &["URS-017", "URS-046"],
        observe: |iq| Box::pin(async move { software(iq) }),
    },
    IqCheck {
        id: "IQ-02",
        title: "Build: a release build for this platform",
        covers: &["URS-046"],
        observe: |_| Box::pin(async move { build() }),
    },
    IqCheck {
        id: "IQ-03",
        title: "Configuration: every controlled setting as approved (secrets redacted)",
        covers: &["URS-046"],
        observe: |iq| Box::pin(async move { configuration(iq) }),
    },
    IqCheck {
        id: "IQ-04",
        title: "Database: backend reachable, version recorded",
        covers: &["URS-046"],
        observe: |iq| Box::pin(database(iq)),
    },
    IqCheck {
        id: "IQ-05",
        title: "Schema: the release's migrations applied with their checksums",
        covers: &["URS-046"],
        observe: |iq| Box::pin(schema(iq)),
    },
    IqCheck {
        id: "IQ-06",
        title: "Append-only guards: the database triggers that refuse UPDATE and DELETE of the ledger",
        covers: &["URS-008", "URS-046"],
        observe: |iq| Box::pin(append_only_guards(iq)),
    },
    IqCheck {
        id: "IQ-07",
        title: "Ledger key: present, private, and the published verifier key is its own",
        covers: &["URS-002", "URS-035"],
        observe: |iq| Box::pin(async move { ledger_key(iq) }),
    },
    IqCheck {
        id: "IQ-08",
        title: "Signing CA: present, valid now, trusted in the ledger",
        covers: &["URS-020", "URS-046"],
        observe: |iq| Box::pin(signing_ca(iq)),
    },
    IqCheck {
        id: "IQ-09",
        title: "Report signing: certificate valid, chained to the report CA, key usable",
        covers: &["URS-057"],
        observe: |iq| Box::pin(async move { report_signing(iq) }),
    },
    IqCheck {
        id: "IQ-10",
        title: "Clock: UTC system time not behind the ledger; clock source recorded",
        covers: &["URS-044"],
        observe: |iq| Box::pin(clock(iq)),
    },
    IqCheck {
        id: "IQ-11",
        title: "Disk: free space where the data directory lives",
        covers: &["URS-046"],
        observe: |iq| Box::pin(async move { disk(iq) }),
    },
    IqCheck {
        id: "IQ-12",
        title: "Ledger: `verify` passes over every entry, checkpoint and signature",
        covers: &["URS-001", "URS-039"],
        observe: |iq| Box::pin(ledger(iq)),
    },
    IqCheck {
        id: "IQ-13",
        title: "Validation set: requirements and protocols of this release, every requirement covered",
        covers: &["URS-017", "URS-032"],
        observe: |_| Box::pin(async move { validation_set() }),
    },
    IqCheck {
        id: "IQ-14",
        title: "Private files: the data directory owner-only, the database, its WAL and the keys 0600",
        covers: &["URS-064"],
        observe: |iq| Box::pin(async move { private_files(iq) }),
    },
];

/// Runs every IQ check on the installation `opened`, for the executable
/// at `binary`.
pub async fn run(opened: &Instance, binary: &Path, expected: &Expected) -> Vec<Check> {
    let iq = Iq {
        opened,
        binary,
        expected,
        now: OnceLock::new(),
    };
    let mut checks = Vec::with_capacity(CHECKS.len());
    for c in &CHECKS {
        let o = (c.observe)(&iq).await;
        checks.push(check(
            c.id, c.title, c.covers, o.expected, o.observed, o.ok, o.details,
        ));
    }
    checks
}

/// IQ-01: the executable's version and SHA-256, the baseline's if there is
/// one.
fn software(iq: &Iq<'_>) -> Observation {
    let version = env!("CARGO_PKG_VERSION");
    let binary = iq.binary;
    let (sha, size) = match std::fs::read(binary) {
        Ok(bytes) => (sha256_hex(&bytes), bytes.len()),
        Err(e) => (format!("unreadable: {e}"), 0),
    };
    let baseline_sha = iq
        .expected
        .baseline
        .as_ref()
        .and_then(|b| b.pointer("/software/sha256"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (expected, ok) = match &baseline_sha {
        Some(b) => (
            format!("version {version}, SHA-256 {b} (the baseline IQ's)"),
            *b == sha,
        ),
        None => (
            format!("version {version}; SHA-256 recorded as the baseline for later IQ runs"),
            size > 0,
        ),
    };
    Observation {
        expected,
        observed: format!(
            "version {version}, SHA-256 {sha}, {size} bytes, {}",
            binary.display()
        ),
        ok,
        details: json!({"version": version, "sha256": sha, "bytes": size, "path": binary}),
    }
}

/// IQ-02: a release build, and for which platform.
fn build() -> Observation {
    let version = env!("CARGO_PKG_VERSION");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    Observation {
        expected: format!("release build, {target}"),
        observed: format!("{profile} build, {target}, package trailmark {version}"),
        ok: profile == "release",
        details: json!({"profile": profile, "target": target, "package": format!("trailmark {version}")}),
    }
}

/// IQ-03: every controlled setting equal to the approved configuration,
/// the baseline IQ's, or the built-in defaults (in that order of choice).
fn configuration(iq: &Iq<'_>) -> Observation {
    let observed = flatten(&serde_json::to_value(&iq.opened.config).unwrap_or(Value::Null));
    let redacted: BTreeMap<String, String> = observed
        .iter()
        .map(|(k, v)| (k.clone(), redact_config(k, v)))
        .collect();
    let (source, wanted) = expected_configuration(iq.expected);
    let mut variances = Vec::new();
    for (k, want) in &wanted {
        let got = observed
            .get(k)
            .cloned()
            .unwrap_or_else(|| "(absent)".into());
        if *want != got {
            variances.push(format!("{k} = {got} (expected {want})"));
        }
    }
    for k in observed
        .keys()
        .filter(|k| controlled(k) && !wanted.contains_key(*k))
    {
        variances.push(format!(
            "{k} = {} (not in the expected configuration)",
            observed[k]
        ));
    }
    Observation {
        expected: format!("{} controlled settings equal to {source}", wanted.len()),
        observed: if variances.is_empty() {
            format!("{} settings, no variance", observed.len())
        } else {
            format!("variances: {}", variances.join("; "))
        },
        ok: variances.is_empty(),
        details: json!({"observed": redacted, "expected": wanted, "variances": variances}),
    }
}

/// The controlled settings IQ-03 expects, and where they come from.
fn expected_configuration(expected: &Expected) -> (String, BTreeMap<String, String>) {
    if let Some(file) = &expected.config {
        let v = serde_json::to_value(file).unwrap_or(Value::Null);
        (
            "the approved configuration file".into(),
            flatten(&v)
                .into_iter()
                .filter(|(k, _)| controlled(k))
                .collect(),
        )
    } else if let Some(b) = expected
        .baseline
        .as_ref()
        .and_then(|b| b.pointer("/checks"))
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c["id"] == "IQ-03")
                .and_then(|c| c.pointer("/details/observed"))
                .cloned()
        })
    {
        (
            "the baseline IQ's configuration".into(),
            b.as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| controlled(k))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        )
    } else {
        ("the built-in defaults".into(), default_controlled())
    }
}

/// IQ-04: the database answers, with its version.
async fn database(iq: &Iq<'_>) -> Observation {
    let backend = iq.opened.store.backend_name();
    let db = iq.opened.store.server_version().await;
    Observation {
        expected: "the configured database answers".into(),
        observed: match &db {
            Ok(v) => format!("{backend}: {v}"),
            Err(e) => format!("{backend}: {e}"),
        },
        ok: db.is_ok(),
        details: json!({"backend": backend, "version": db.as_ref().ok()}),
    }
}

/// IQ-05: the release's migrations applied, with the checksums compiled
/// into this binary, and no others.
async fn schema(iq: &Iq<'_>) -> Observation {
    let want = iq.opened.store.expected_migrations();
    let applied = iq.opened.store.applied_migrations().await;
    let expected = format!(
        "{} migrations, each with the checksum compiled into this binary",
        want.len()
    );
    let got = match &applied {
        Ok(got) => got,
        Err(e) => {
            return Observation {
                expected,
                observed: e.to_string(),
                ok: false,
                details: Value::Null,
            };
        }
    };
    let ok = *got == want;
    let mut diffs = Vec::new();
    for m in &want {
        match got.iter().find(|g| g.version == m.version) {
            None => diffs.push(format!("{} {} not applied", m.version, m.description)),
            Some(g) if g.checksum != m.checksum || g.description != m.description => {
                diffs.push(format!(
                    "{} {} applied with checksum {}",
                    g.version,
                    g.description,
                    &g.checksum[..16.min(g.checksum.len())]
                ));
            }
            Some(_) => {}
        }
    }
    for g in got
        .iter()
        .filter(|g| !want.iter().any(|m| m.version == g.version))
    {
        diffs.push(format!(
            "{} {} applied but not part of this release",
            g.version, g.description
        ));
    }
    Observation {
        expected,
        observed: if ok {
            format!(
                "{} migrations applied, checksums equal: {}",
                got.len(),
                got.iter()
                    .map(|m| format!("{} {}", m.version, m.description))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            diffs.join("; ")
        },
        ok,
        details: json!({"expected": want, "applied": got}),
    }
}

/// IQ-06: every append-only trigger of the release present and enabled.
async fn append_only_guards(iq: &Iq<'_>) -> Observation {
    let expected = "every append-only trigger of the release present and enabled".to_owned();
    match &iq.opened.store.append_only_triggers().await {
        Ok((want, present)) => {
            let missing: Vec<&&str> = want
                .iter()
                .filter(|t| !present.iter().any(|p| p == *t))
                .collect();
            Observation {
                expected,
                observed: if missing.is_empty() {
                    format!("all {} present and enabled", want.len())
                } else {
                    format!(
                        "missing or disabled: {}",
                        missing
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                ok: missing.is_empty(),
                details: json!({"expected": want, "present": present}),
            }
        }
        Err(e) => Observation {
            expected,
            observed: e.to_string(),
            ok: false,
            details: Value::Null,
        },
    }
}

/// IQ-07: the ledger key private (mode 0600), and the published verifier
/// key its own.
fn ledger_key(iq: &Iq<'_>) -> Observation {
    let opened = iq.opened;
    let key_file = opened.dir.file("ledger.key");
    let mode = file_mode(&key_file);
    let vkey_file = std::fs::read_to_string(opened.dir.file("verifier-key")).unwrap_or_default();
    let vkey = opened.key.verifier().to_text();
    let ok = mode == Some(0o600) && vkey_file.trim() == vkey;
    Observation {
        expected: "ledger.key mode 0600; verifier-key equals the key's verifier key".into(),
        observed: format!(
            "ledger.key mode {}; verifier-key {}",
            mode.map_or("unknown".into(), |m| format!("{m:04o}")),
            if vkey_file.trim() == vkey {
                "matches"
            } else {
                "DIFFERS"
            }
        ),
        ok,
        details: json!({"verifier_key": vkey}),
    }
}

/// IQ-14: the data directory and every secret in it private: no group or
/// other access. On PostgreSQL the database's files are the server's and
/// the check says so.
fn private_files(iq: &Iq<'_>) -> Observation {
    let opened = iq.opened;
    let database = opened.store.database_file();
    let paths = opened.dir.private_paths(&opened.config, database);
    let loose: Vec<String> = paths
        .iter()
        .filter(|p| !p.is_private())
        .map(crate::config::PrivatePath::describe)
        .collect();
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| {
            p.found.is_none() && (p.path == opened.dir.path() || Some(p.path.as_path()) == database)
        })
        .map(crate::config::PrivatePath::describe)
        .collect();
    let present = paths.iter().filter(|p| p.found.is_some()).count();
    let database_note = match database {
        Some(_) => String::new(),
        None => format!(
            "; database files: not applicable ({} keeps them; restrict them on the database server)",
            opened.store.backend_name()
        ),
    };
    let observed = if loose.is_empty() && missing.is_empty() {
        format!("all {present} present paths private{database_note}")
    } else {
        let mut problems = Vec::new();
        if !loose.is_empty() {
            problems.push(format!("readable by group or others: {}", loose.join(", ")));
        }
        if !missing.is_empty() {
            problems.push(format!("missing: {}", missing.join(", ")));
        }
        format!("{}{database_note}", problems.join("; "))
    };
    Observation {
        expected: "data directory 0700; trailmark.toml, ledger.key, CA and report keys, webhook secrets, and on SQLite the database with its -wal and -shm 0600 (no group or other access)".into(),
        observed,
        ok: loose.is_empty() && missing.is_empty(),
        details: json!({
            "paths": paths.iter().map(|p| json!({
                "path": p.path,
                "mode": p.found.map(|m| format!("{m:04o}")),
                "required": format!("{:04o}", p.mode),
                "private": p.is_private(),
            })).collect::<Vec<_>>(),
            "database_files": if database.is_some() { "checked" } else { "not applicable: PostgreSQL" },
        }),
    }
}

/// IQ-08: the signing CA (see [`ca_check`]).
async fn signing_ca(iq: &Iq<'_>) -> Observation {
    let (observed, ok, details) = ca_check(iq.opened, iq.now()).await;
    Observation {
        expected: "ca.pem and ca.key present and matching, valid now, recorded as trusted".into(),
        observed,
        ok,
        details,
    }
}

/// IQ-09: the report-signing key makes a signature that verifies and
/// chains to the report CA.
fn report_signing(iq: &Iq<'_>) -> Observation {
    let opened = iq.opened;
    let (observed, ok) = match crate::report::sign::ReportSigner::from_dir(&opened.dir) {
        Ok(Some(signer)) => {
            let digest = [7u8; 32];
            let ca_der = std::fs::read_to_string(opened.dir.file("report-ca.pem"))
                .ok()
                .and_then(|p| crate::report::sign::cert_der_from_pem(&p).ok());
            match signer
                .sign_digest(&digest)
                .map_err(|e| e.to_string())
                .and_then(|cms| {
                    crate::report::sign::verify_cms(&cms, &digest, ca_der.as_deref())
                        .map_err(|e| e.to_string())
                }) {
                Ok(_) => (
                    format!(
                        "{}: a test signature verifies and chains to report-ca.pem",
                        signer.signer_name()
                    ),
                    true,
                ),
                Err(e) => (format!("{}: {e}", signer.signer_name()), false),
            }
        }
        Ok(None) => (
            "no report-signing key (run `trailmark ca init-reports`)".into(),
            false,
        ),
        Err(e) => (e.to_string(), false),
    };
    Observation {
        expected:
            "report-signing.pem/.key present; a test signature verifies against report-ca.pem"
                .into(),
        observed,
        ok,
        details: Value::Null,
    }
}

/// IQ-10: the system time not behind the newest entry; the clock source
/// and synchronisation recorded.
async fn clock(iq: &Iq<'_>) -> Observation {
    let now = iq.now();
    let head = iq.opened.store.head().await.ok().flatten();
    let newest = head.as_ref().map(|h| h.recorded_at.to_string());
    let newest_time = newest
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    Observation {
        expected: "system time >= the newest entry's recorded_at".into(),
        observed: format!(
            "system time {}, newest entry {}, clock source {source}, systemd-timesyncd synchronised: {}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            newest.as_deref().unwrap_or("(none)"),
            if synced { "yes" } else { "not reported" }
        ),
        ok: newest_time.is_none_or(|t| now >= t),
        details: json!({"system_time": now, "newest_entry": newest, "clock_source": source, "timesync_synchronized": synced}),
    }
}

/// IQ-11: free space where the data directory lives.
fn disk(iq: &Iq<'_>) -> Observation {
    let free = free_bytes(iq.opened.dir.path());
    Observation {
        expected: format!("at least {} MiB free", DISK_MIN_BYTES >> 20),
        observed: free.map_or("unknown (df failed)".into(), |b| {
            format!("{} MiB free", b >> 20)
        }),
        ok: free.is_some_and(|b| b >= DISK_MIN_BYTES),
        details: json!({"free_bytes": free}),
    }
}

/// IQ-12: `verify` over the whole ledger, recorded as a verification run.
async fn ledger(iq: &Iq<'_>) -> Observation {
    let opened = iq.opened;
    let verified = audit::verify_and_record(
        &opened.store,
        &opened.key.verifier(),
        &VerifyOptions::default(),
        "validate iq",
        |_| {},
    )
    .await;
    let (observed, ok, details) = match &verified {
        Ok(r) => (
            format!(
                "{} entries, {} checkpoints, {} signatures intact; root {}",
                r.entries, r.checkpoints, r.signatures, r.root
            ),
            true,
            json!({"entries": r.entries, "checkpoints": r.checkpoints, "signatures": r.signatures, "root": r.root}),
        ),
        Err(e) => (e.to_string(), false, Value::Null),
    };
    Observation {
        expected: "every check of docs/FORMAT.md §5 passes".into(),
        observed,
        ok,
        details,
    }
}

/// IQ-13: the embedded requirements and protocols parse and cover every
/// requirement, and equal the source tree's copies where those exist.
fn validation_set() -> Observation {
    let set = ValidationSet::embedded();
    let mut files =
        vec![json!({"file": REQUIREMENTS.0, "sha256": sha256_hex(REQUIREMENTS.1.as_bytes())})];
    let mut differs = Vec::new();
    for (name, text) in std::iter::once(&REQUIREMENTS).chain(PROTOCOLS.iter()) {
        if let Ok(on_disk) = std::fs::read(name)
            && on_disk != text.as_bytes()
        {
            differs.push((*name).to_owned());
        }
        if *name != REQUIREMENTS.0 {
            files.push(json!({"file": name, "sha256": sha256_hex(text.as_bytes())}));
        }
    }
    let (observed, ok) = match &set {
        Ok(s) => {
            let uncovered = s.uncovered();
            let ok = uncovered.is_empty() && differs.is_empty();
            (
                format!(
                    "{} requirements, {} test cases in {} protocols; uncovered: {}; source-tree copies: {}",
                    s.requirements.len(),
                    s.cases().count(),
                    s.protocols.len(),
                    if uncovered.is_empty() {
                        "none".into()
                    } else {
                        uncovered.join(", ")
                    },
                    if differs.is_empty() {
                        "equal or absent".into()
                    } else {
                        format!("DIFFER: {}", differs.join(", "))
                    }
                ),
                ok,
            )
        }
        Err(e) => (e.to_string(), false),
    };
    Observation {
        expected: "the embedded set parses, covers every requirement, and equals the source tree's copies when present".into(),
        observed,
        ok,
        details: json!({"files": files}),
    }
}

/// IQ-08's observation: `ca.pem` and `ca.key` present and loading
/// together, the certificate valid at `now` and trusted in the ledger.
async fn ca_check(opened: &Instance, now: DateTime<Utc>) -> (String, bool, Value) {
    let pem = match opened.dir.ca() {
        Ok(Some((cert, _))) => cert,
        Ok(None) => {
            return (
                "no ca.pem (run `trailmark ca init`)".into(),
                false,
                Value::Null,
            );
        }
        Err(e) => return (e.to_string(), false, Value::Null),
    };
    if let Err(e) = opened.ca() {
        return (
            format!("ca.pem and ca.key do not load together: {e:#}"),
            false,
            Value::Null,
        );
    }
    let Ok(der) =
        crate::identity::ca::pem_to_der(&pem).map(|d| d.into_iter().next().unwrap_or_default())
    else {
        return ("ca.pem is not PEM".into(), false, Value::Null);
    };
    let parsed = x509_parser::parse_x509_certificate(&der);
    let Ok((_, cert)) = parsed else {
        return (
            "ca.pem is not an X.509 certificate".into(),
            false,
            Value::Null,
        );
    };
    let from = cert.validity().not_before.timestamp();
    let to = cert.validity().not_after.timestamp();
    let valid = (from..=to).contains(&now.timestamp());
    let fingerprint = sha256_hex(&der);
    let trusted = opened
        .store
        .trusted_cas()
        .await
        .map(|cas| cas.contains(&der))
        .unwrap_or(false);
    (
        format!(
            "{}, valid {} to {}{}, {}",
            cert.subject(),
            cert.validity().not_before,
            cert.validity().not_after,
            if valid { "" } else { " (NOT valid now)" },
            if trusted {
                "trusted in the ledger"
            } else {
                "NOT trusted in the ledger"
            }
        ),
        valid && trusted,
        json!({"sha256": fingerprint, "subject": cert.subject().to_string()}),
    )
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|_| 0o600)
}

/// Free bytes on the file system holding `path`, from `df -Pk`.
fn free_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controlled_settings_and_redaction() {
        let d = default_controlled();
        assert_eq!(
            d.get("identity.lockout_failures").map(String::as_str),
            Some("5")
        );
        assert!(!d.contains_key("origin"));
        assert!(!controlled("integration.targets.lms.url"));
        assert_eq!(
            redact_config("database_url", "postgres://u:pw@h/db"),
            crate::config::redact_url("postgres://u:pw@h/db")
        );
        assert!(!redact_config("database_url", "postgres://u:pw@h/db").contains("pw"));
    }
}
