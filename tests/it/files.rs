//! Files private by default (21 CFR 11.10(d)): the data directory is
//! owner-only and every file holding a secret (the database with its WAL
//! and shared memory, the configuration, the keys) is 0600, from `init`
//! on; `serve` tightens a looser installation and says so; IQ-14 names a
//! path and its mode when one is readable by others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use trailmark::config::mode_of;
use trailmark::validate::{self, iq};

use crate::harness::{TestLedger, backend};
use crate::people::serving_url_in;

fn trailmark() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_trailmark"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("TRAILMARK_DATA")
        .env_remove("TRAILMARK_PASSWORD");
    command
}

/// `trailmark init` on SQLite in `data`.
fn init(data: &Path) {
    let out = trailmark()
        .args(["init", "--origin", "trailmark.test/files", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn wal(data: &Path, suffix: &str) -> PathBuf {
    data.join(format!("ledger.db{suffix}"))
}

/// Every secret of a data directory made by `init`, and its database files.
const PRIVATE: [&str; 6] = [
    "trailmark.toml",
    "ledger.key",
    "ca.key",
    "report-ca.key",
    "report-signing.key",
    "ledger.db",
];

/// Runs `trailmark serve` until it answers `/readyz`; returns the child and
/// its log. The child is killed when dropped.
async fn serve(data: &Path, log_path: &Path) -> tokio::process::Child {
    let log = std::fs::File::create(log_path).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trailmark"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("DATABASE_URL")
        .env_remove("TRAILMARK_DATA")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = serving_url_in(log_path).await;
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never became ready");
}

/// IQ-14 of an IQ run on `data` (SQLite), as `validate iq` writes it.
async fn iq_14(data: &Path, out: &Path) -> Value {
    let opened = trailmark::instance::Instance::open(data, None)
        .await
        .unwrap();
    validate::run_iq(
        &opened,
        out,
        Path::new(env!("CARGO_BIN_EXE_trailmark")),
        &iq::Expected::default(),
        None,
    )
    .await
    .unwrap();
    opened.store.close().await;
    private_files_check(out)
}

fn private_files_check(out: &Path) -> Value {
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    results["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "IQ-14")
        .cloned()
        .expect("IQ-14 ran")
}

#[tokio::test]
async fn part11_11_10_d_init_makes_the_data_directory_and_every_secret_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory made beforehand with the usual 0755 is made private too.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    set_mode(&data, 0o755);
    init(&data);
    assert_eq!(mode_of(&data), Some(0o700), "the data directory");
    for name in PRIVATE {
        assert_eq!(mode_of(&data.join(name)), Some(0o600), "{name}");
    }
    for suffix in ["-wal", "-shm"] {
        let path = wal(&data, suffix);
        assert!(
            mode_of(&path).is_none_or(|m| m == 0o600),
            "{}: {:?}",
            path.display(),
            mode_of(&path)
        );
    }
    // What inspectors need stays readable: the verifier key and certificates.
    for public in ["verifier-key", "ca.pem", "report-ca.pem"] {
        assert!(data.join(public).exists(), "{public}");
    }
}

#[tokio::test]
async fn part11_11_10_d_a_served_database_its_wal_and_shm_are_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let log = tmp.path().join("serve.log");
    let mut child = serve(&data, &log).await;
    // SQLite creates the -wal and -shm files with the database file's mode.
    for suffix in ["", "-wal", "-shm"] {
        let path = wal(&data, suffix);
        assert_eq!(mode_of(&path), Some(0o600), "{}", path.display());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("readable by group or others"),
        "nothing to tighten on a new installation: {text}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn part11_11_10_d_a_loose_installation_fails_iq_and_serve_makes_it_private_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    // As an installation made before files were private by default.
    set_mode(&data, 0o755);
    set_mode(&data.join("ledger.db"), 0o644);
    set_mode(&data.join("ledger.key"), 0o640);
    let check = iq_14(&data, &tmp.path().join("iq-loose")).await;
    assert_eq!(check["result"], "fail", "{check}");
    let observed = check["observed"].as_str().unwrap();
    for (path, mode) in [
        (data.clone(), "0755"),
        (data.join("ledger.db"), "0644"),
        (data.join("ledger.key"), "0640"),
    ] {
        assert!(
            observed.contains(&format!("{} mode {mode}", path.display())),
            "IQ-14 names {} and its mode: {observed}",
            path.display()
        );
    }

    let log = tmp.path().join("serve.log");
    let mut child = serve(&data, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    for (path, mode) in [(data.clone(), "0755"), (data.join("ledger.db"), "0644")] {
        assert!(
            text.contains(&format!("warning: {} was mode {mode}", path.display())),
            "serve warns about {}: {text}",
            path.display()
        );
    }
    assert_eq!(mode_of(&data), Some(0o700));
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(
            mode_of(&wal(&data, suffix)),
            Some(0o600),
            "ledger.db{suffix}"
        );
    }
    assert_eq!(mode_of(&data.join("ledger.key")), Some(0o600));
    child.kill().await.unwrap();
    child.wait().await.unwrap();

    let check = iq_14(&data, &tmp.path().join("iq-private")).await;
    assert_eq!(check["result"], "pass", "{check}");
}

#[tokio::test]
async fn iq_14_passes_on_a_new_installation_and_says_when_database_files_do_not_apply() {
    let ledger = TestLedger::new().await;
    let out = ledger.dir.path().join("iq");
    validate::run_iq(
        &ledger.opened,
        &out,
        Path::new(env!("CARGO_BIN_EXE_trailmark")),
        &iq::Expected::default(),
        None,
    )
    .await
    .unwrap();
    let check = private_files_check(&out);
    assert_eq!(check["result"], "pass", "{check}");
    let observed = check["observed"].as_str().unwrap();
    if backend() == "postgres" {
        assert!(
            observed.contains("database files: not applicable"),
            "{observed}"
        );
    } else {
        assert!(!observed.contains("not applicable"), "{observed}");
        assert_eq!(check["details"]["database_files"], "checked", "{check}");
    }
    ledger.finish().await;
}
