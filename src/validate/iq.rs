//! The IQ checks (docs/VALIDATION.md §2): the installation as it is, each
//! check with expected and observed values and pass/fail.

use std::collections::BTreeMap;
use std::path::Path;

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
    (key.starts_with("identity.") && key != "identity.alert_webhook_url")
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

/// Runs every IQ check on the installation `opened`, for the executable
/// at `binary`.
pub async fn run(opened: &Instance, binary: &Path, expected: &Expected) -> Vec<Check> {
    let mut checks = Vec::new();
    let version = env!("CARGO_PKG_VERSION");

    // IQ-01 software
    let (sha, size) = match std::fs::read(binary) {
        Ok(bytes) => (sha256_hex(&bytes), bytes.len()),
        Err(e) => (format!("unreadable: {e}"), 0),
    };
    let baseline_sha = expected
        .baseline
        .as_ref()
        .and_then(|b| b.pointer("/software/sha256"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (exp, ok) = match &baseline_sha {
        Some(b) => (
            format!("version {version}, SHA-256 {b} (the baseline IQ's)"),
            *b == sha,
        ),
        None => (
            format!("version {version}; SHA-256 recorded as the baseline for later IQ runs"),
            size > 0,
        ),
    };
    checks.push(check(
        "IQ-01",
        "Software: version and SHA-256 of the installed executable",
        &["URS-017", "URS-046"],
        exp,
        format!(
            "version {version}, SHA-256 {sha}, {size} bytes, {}",
            binary.display()
        ),
        ok,
        json!({"version": version, "sha256": sha, "bytes": size, "path": binary}),
    ));

    // IQ-02 build
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS);
    checks.push(check(
        "IQ-02",
        "Build: a release build for this platform",
        &["URS-046"],
        format!("release build, {target}"),
        format!("{profile} build, {target}, package trailmark {version}"),
        profile == "release",
        json!({"profile": profile, "target": target, "package": format!("trailmark {version}")}),
    ));

    // IQ-03 configuration
    let observed = flatten(&serde_json::to_value(&opened.config).unwrap_or(Value::Null));
    let redacted: BTreeMap<String, String> = observed
        .iter()
        .map(|(k, v)| (k.clone(), redact_config(k, v)))
        .collect();
    let (source, wanted): (String, BTreeMap<String, String>) = if let Some(file) = &expected.config
    {
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
    };
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
    checks.push(check(
        "IQ-03",
        "Configuration: every controlled setting as approved (secrets redacted)",
        &["URS-046"],
        format!("{} controlled settings equal to {source}", wanted.len()),
        if variances.is_empty() {
            format!("{} settings, no variance", observed.len())
        } else {
            format!("variances: {}", variances.join("; "))
        },
        variances.is_empty(),
        json!({"observed": redacted, "expected": wanted, "variances": variances}),
    ));

    // IQ-04 database
    let backend = opened.store.backend_name();
    let db = opened.store.server_version().await;
    checks.push(check(
        "IQ-04",
        "Database: backend reachable, version recorded",
        &["URS-046"],
        "the configured database answers".into(),
        match &db {
            Ok(v) => format!("{backend}: {v}"),
            Err(e) => format!("{backend}: {e}"),
        },
        db.is_ok(),
        json!({"backend": backend, "version": db.as_ref().ok()}),
    ));

    // IQ-05 schema
    let want = opened.store.expected_migrations();
    let applied = opened.store.applied_migrations().await;
    let (observed_text, ok, details) = match &applied {
        Ok(got) => {
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
            (
                if ok {
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
                json!({"expected": want, "applied": got}),
            )
        }
        Err(e) => (e.to_string(), false, Value::Null),
    };
    checks.push(check(
        "IQ-05",
        "Schema: the release's migrations applied with their checksums",
        &["URS-046"],
        format!(
            "{} migrations, each with the checksum compiled into this binary",
            want.len()
        ),
        observed_text,
        ok,
        details,
    ));

    // IQ-06 append-only guards
    let triggers = opened.store.append_only_triggers().await;
    let (observed_text, ok, details) = match &triggers {
        Ok((want, present)) => {
            let missing: Vec<&&str> = want
                .iter()
                .filter(|t| !present.iter().any(|p| p == *t))
                .collect();
            (
                if missing.is_empty() {
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
                missing.is_empty(),
                json!({"expected": want, "present": present}),
            )
        }
        Err(e) => (e.to_string(), false, Value::Null),
    };
    checks.push(check(
        "IQ-06",
        "Append-only guards: the database triggers that refuse UPDATE and DELETE of the ledger",
        &["URS-008", "URS-046"],
        "every append-only trigger of the release present and enabled".into(),
        observed_text,
        ok,
        details,
    ));

    // IQ-07 ledger key
    let key_file = opened.dir.file("ledger.key");
    let mode = file_mode(&key_file);
    let vkey_file = std::fs::read_to_string(opened.dir.file("verifier-key")).unwrap_or_default();
    let vkey = opened.key.verifier().to_text();
    let ok = mode == Some(0o600) && vkey_file.trim() == vkey;
    checks.push(check(
        "IQ-07",
        "Ledger key: present, private, and the published verifier key is its own",
        &["URS-002", "URS-035"],
        "ledger.key mode 0600; verifier-key equals the key's verifier key".into(),
        format!(
            "ledger.key mode {}; verifier-key {}",
            mode.map_or("unknown".into(), |m| format!("{m:04o}")),
            if vkey_file.trim() == vkey {
                "matches"
            } else {
                "DIFFERS"
            }
        ),
        ok,
        json!({"verifier_key": vkey}),
    ));

    // IQ-08 signing CA
    let now = Utc::now();
    let ca = ca_check(opened, now).await;
    checks.push(check(
        "IQ-08",
        "Signing CA: present, valid now, trusted in the ledger",
        &["URS-020", "URS-046"],
        "ca.pem and ca.key present and matching, valid now, recorded as trusted".into(),
        ca.0,
        ca.1,
        ca.2,
    ));

    // IQ-09 report signing
    let (observed_text, ok) = match crate::report::sign::ReportSigner::from_dir(&opened.dir) {
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
    checks.push(check(
        "IQ-09",
        "Report signing: certificate valid, chained to the report CA, key usable",
        &["URS-057"],
        "report-signing.pem/.key present; a test signature verifies against report-ca.pem".into(),
        observed_text,
        ok,
        Value::Null,
    ));

    // IQ-10 clock
    let head = opened.store.head().await.ok().flatten();
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
    let ok = newest_time.is_none_or(|t| now >= t);
    checks.push(check(
        "IQ-10",
        "Clock: UTC system time not behind the ledger; clock source recorded",
        &["URS-044"],
        "system time >= the newest entry's recorded_at".into(),
        format!(
            "system time {}, newest entry {}, clock source {source}, systemd-timesyncd synchronised: {}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            newest.as_deref().unwrap_or("(none)"),
            if synced { "yes" } else { "not reported" }
        ),
        ok,
        json!({"system_time": now, "newest_entry": newest, "clock_source": source, "timesync_synchronized": synced}),
    ));

    // IQ-11 disk
    let free = free_bytes(opened.dir.path());
    checks.push(check(
        "IQ-11",
        "Disk: free space where the data directory lives",
        &["URS-046"],
        format!("at least {} MiB free", DISK_MIN_BYTES >> 20),
        free.map_or("unknown (df failed)".into(), |b| {
            format!("{} MiB free", b >> 20)
        }),
        free.is_some_and(|b| b >= DISK_MIN_BYTES),
        json!({"free_bytes": free}),
    ));

    // IQ-12 ledger
    let verified = audit::verify_and_record(
        &opened.store,
        &opened.key.verifier(),
        &VerifyOptions::default(),
        "validate iq",
        |_| {},
    )
    .await;
    let (observed_text, ok, details) = match &verified {
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
    checks.push(check(
        "IQ-12",
        "Ledger: `verify` passes over every entry, checkpoint and signature",
        &["URS-001", "URS-039"],
        "every check of docs/FORMAT.md §5 passes".into(),
        observed_text,
        ok,
        details,
    ));

    // IQ-13 validation set
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
    let (observed_text, ok) = match &set {
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
        Err(e) => (e.clone(), false),
    };
    checks.push(check(
        "IQ-13",
        "Validation set: requirements and protocols of this release, every requirement covered",
        &["URS-017", "URS-032"],
        "the embedded set parses, covers every requirement, and equals the source tree's copies when present".into(),
        observed_text,
        ok,
        json!({"files": files}),
    ));
    checks
}

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
