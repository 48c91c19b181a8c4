//! The data directory and configuration: where the database, the ledger key
//! and `trailmark.toml` live, and how `DATABASE_URL` / `TRAILMARK_DATA`
//! override them.
//!
//! Layout of a data directory (`./trailmark-data` by default):
//!
//! | file | what |
//! | --- | --- |
//! | `trailmark.toml` | configuration (origin, listen address, sequencer limits) |
//! | `ledger.key` | the ledger's Ed25519 seed, hex, mode 0600: signs checkpoints |
//! | `verifier-key` | the matching verifier key, for inspectors |
//! | `ledger.db` | the SQLite database (unless a PostgreSQL URL is configured) |
//! | `ca.pem`, `ca.key` | Trailmark's signing CA (`trailmark ca init`); the key mode 0600 |
//! | `report-ca.*`, `report-signing.*` | the report-signing CA and certificate; the keys mode 0600 |
//! | `*.whsec` | a hand-over target's webhook secret (`secret_file`), mode 0600 |
//!
//! Private by default: `init` makes the directory 0700 and writes every
//! secret 0600 (the configuration too: `database_url` may carry a
//! password); the SQLite database and its `-wal` and `-shm` files are 0600
//! ([`crate::store::Store::open_sqlite`]). [`DataDir::private_paths`] lists
//! what must be private, for the IQ and for `serve`, which tightens a
//! looser mode and says so ([`DataDir::make_private`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::LedgerKey;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "trailmark-data";

/// Files of a data directory that hold secrets and are owner-only: the
/// configuration (`database_url` may carry a password), the ledger key,
/// Trailmark's CA key and the report keys. The targets' webhook secrets
/// and the SQLite database files join them in [`DataDir::private_paths`].
pub const SECRET_FILES: [&str; 5] = [
    "trailmark.toml",
    "ledger.key",
    "ca.key",
    "report-ca.key",
    "report-signing.key",
];

/// Mode of the data directory: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode of a file that holds a secret: the owner reads and writes.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// A path that must be private, and its mode as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrivatePath {
    /// The file or directory.
    pub path: PathBuf,
    /// The mode it is created with: [`PRIVATE_DIR_MODE`] or
    /// [`PRIVATE_FILE_MODE`].
    pub mode: u32,
    /// Its permission bits as found; `None` when it does not exist.
    pub found: Option<u32>,
}

impl PrivatePath {
    /// Whether neither group nor others have any access (or it is absent).
    pub fn is_private(&self) -> bool {
        self.found.is_none_or(|m| m & 0o077 == 0)
    }

    /// `path mode 0644` or `path absent`, for messages.
    pub fn describe(&self) -> String {
        match self.found {
            Some(m) => format!("{} mode {m:04o}", self.path.display()),
            None => format!("{} absent", self.path.display()),
        }
    }
}

/// Permission bits of `path`, `None` if it does not exist (on other systems
/// than Unix, the modes do not apply and every path reads as private).
pub fn mode_of(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Some(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        Some(if meta.is_dir() {
            PRIVATE_DIR_MODE
        } else {
            PRIVATE_FILE_MODE
        })
    }
}

/// The file of a `sqlite://PATH` URL; `None` for any other database.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    url.strip_prefix("sqlite://").map(PathBuf::from)
}

/// What can go wrong reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory has not been initialised.
    #[error("{0} is not an initialised data directory: run `trailmark init --data {0}` first")]
    NotInitialised(String),
    /// The data directory is initialised already.
    #[error("{0} already holds a ledger; choose another --data directory")]
    AlreadyInitialised(String),
    /// A file's content is invalid.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Group-commit settings of the sequencer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SequencerConfig {
    /// Most appends waiting for the sequencer; beyond it, 503 with Retry-After.
    pub queue_max_entries: usize,
    /// Most entries in one transaction.
    pub batch_max_entries: usize,
    /// How long the sequencer waits to fill a batch after the first append.
    pub batch_max_wait_ms: u64,
    /// Minimum interval between signed checkpoints.
    pub checkpoint_interval_ms: u64,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        SequencerConfig {
            queue_max_entries: 8_192,
            batch_max_entries: 512,
            batch_max_wait_ms: 1,
            checkpoint_interval_ms: 100,
        }
    }
}

/// `trailmark.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ledger's origin (also its key name).
    pub origin: String,
    /// Address `serve` listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// PostgreSQL URL; absent means SQLite inside the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Largest accepted request body.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Sequencer limits.
    #[serde(default)]
    pub sequencer: SequencerConfig,
    /// Passwords, lockout, sessions, tokens and alerts.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Events in, rules, hand-overs out (docs/INTEGRATION.md).
    #[serde(default)]
    pub integration: IntegrationConfig,
    /// The server's scheduled full verification (docs/STATE.md §2).
    #[serde(default)]
    pub verify: VerifyConfig,
    /// Native TLS, mutual TLS and trusted proxies (docs/SECURITY.md).
    #[serde(default)]
    pub transport: TransportConfig,
    /// The QA console (docs/CONSOLE.md).
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// Transport security (docs/SECURITY.md): native TLS with certificate
/// reload, client certificates for service principals, and the proxies
/// whose forwarded headers are believed. Relative paths are read from the
/// data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// The server's certificate chain (PEM, leaf first); with `tls_key`
    /// it turns TLS on for `listen`, and plain HTTP there is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); keep
    /// it mode 0600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that issue service principals' client
    /// certificates; none: no client certificates are asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds between checks whether `tls_cert` or `tls_key` changed (a
    /// change is loaded; SIGHUP loads at once); 0 turns the check off.
    pub tls_reload_interval_seconds: u64,
    /// An extra plain-HTTP address that answers every request with a 308
    /// redirect to `https://` on the TLS port (needs TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_redirect_listen: Option<String>,
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/24`) of reverse
    /// proxies: only from these peers are `X-Forwarded-Proto` and
    /// `[identity] client_cert_header` believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval_seconds: 5,
            http_redirect_listen: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The QA console's settings (docs/CONSOLE.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Mark cookies `Secure` even on plain HTTP (a proxy terminates TLS
    /// but is not in `trusted_proxies`); with TLS on they always are.
    pub secure_cookies: bool,
}

/// The server's scheduled full verification: entries, derived tables and
/// state; a failure is recorded as `security.verification.failed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Seconds between two scheduled verifications; 0 turns the schedule
    /// off (the console's "Verify now" and `trailmark verify` remain).
    pub interval_seconds: u64,
}

impl Default for VerifyConfig {
    fn default() -> VerifyConfig {
        VerifyConfig {
            interval_seconds: 86_400,
        }
    }
}

/// The QMS-LMS integration (docs/INTEGRATION.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrationConfig {
    /// System (`qms`, `lms`, `hr`) -> the principals that may send its events.
    pub senders: std::collections::BTreeMap<String, Vec<String>>,
    /// Completion window when a document's category has none, in days.
    pub default_window_days: u32,
    /// A parked event older than this is rejected.
    pub park_max_seconds: u64,
    /// Delivery latency above this counts as an SLA breach.
    pub delivery_sla_seconds: u64,
    /// Hand-over targets by name (`lms`, `qms`).
    pub targets: std::collections::BTreeMap<String, TargetConfig>,
    /// Body limit of `POST /v1/events` and `POST /xapi/statements`, whose
    /// batches of up to 1,000 events outgrow `max_body_bytes`.
    pub max_batch_bytes: usize,
}

impl Default for IntegrationConfig {
    fn default() -> Self {
        let senders = [("qms", "qms"), ("lms", "lms"), ("hr", "hr")]
            .into_iter()
            .map(|(system, p)| {
                (
                    system.to_owned(),
                    vec![p.to_owned(), "integration".to_owned()],
                )
            })
            .collect();
        IntegrationConfig {
            senders,
            default_window_days: 30,
            park_max_seconds: 86_400,
            delivery_sla_seconds: 300,
            targets: std::collections::BTreeMap::new(),
            max_batch_bytes: 4 * 1024 * 1024,
        }
    }
}

/// One webhook target (docs/INTEGRATION.md §4.2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Where messages are POSTed.
    pub url: String,
    /// The Standard Webhooks secret (`whsec_...`), a file in the data
    /// directory (mode 0600); never in this file.
    pub secret_file: String,
    /// Per attempt.
    pub timeout_ms: u64,
    /// Attempts before the message is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// Messages per second (0: unlimited).
    pub rate_per_second: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open_ms: u64,
    /// Messages in flight at once.
    pub concurrency: usize,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            url: String::new(),
            secret_file: String::new(),
            timeout_ms: 5_000,
            max_attempts: 8,
            backoff_initial_ms: 500,
            backoff_max_ms: 300_000,
            rate_per_second: 0,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
            concurrency: 16,
        }
    }
}

/// Settings of people and access (docs/SIGNATURES.md §4). The signing
/// policy is not here: it is recorded in the ledger, so that `verify` knows
/// the policy in force at every entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Shortest accepted password, in characters.
    pub password_min_chars: usize,
    /// Lowest accepted strength score of a new password, 0 (anything long
    /// enough) to 4, from the zxcvbn estimator with the user's ID, name and
    /// email as known words; 3 refuses what a guesser finds within about
    /// 10^8 tries (common passwords, repeats, sequences, keyboard rows, the
    /// user's own name).
    pub password_min_score: u8,
    /// A new password may not equal any of the last this many.
    pub password_history_count: u32,
    /// Days until a password must be changed.
    pub password_max_age_days: u32,
    /// Consecutive wrong passwords that lock the account.
    pub lockout_failures: u64,
    /// Seconds of inactivity that end a session (§11.200: the end of a
    /// continuous session).
    pub session_idle_seconds: u64,
    /// Days an API token is valid unless `--expires-in-days` says otherwise.
    pub token_default_days: u32,
    /// Where lockout and other security alerts are POSTed as JSON (none: log
    /// and metric only).
    pub alert_webhook_url: Option<String>,
    /// Where one-time passwords are POSTed as JSON for the site's mail or
    /// identity system to forward to the person (account creation, reset):
    /// without it, only `trailmark user create` at the server can make
    /// accounts, because no one else may see another person's password
    /// (docs/SIGNATURES.md §4.2). Use an internal `https://` address.
    pub credential_webhook_url: Option<String>,
    /// The Standard Webhooks secret (`whsec_…`, a file in the data
    /// directory, mode 0600) that signs each one-time password sent, so the
    /// site's system takes only Trailmark's; required with the URL.
    pub credential_webhook_secret_file: Option<String>,
    /// Offset in which signing times are displayed, `+HH:MM` or `-HH:MM`.
    pub display_utc_offset: String,
    /// Header in which a TLS-terminating proxy forwards the client
    /// certificate (URL-encoded PEM, as nginx's `$ssl_client_escaped_cert`);
    /// none: tokens pinned to a certificate are refused.
    pub client_cert_header: Option<String>,
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            password_min_chars: 12,
            password_min_score: 3,
            password_history_count: 5,
            password_max_age_days: 90,
            lockout_failures: 5,
            session_idle_seconds: 900,
            token_default_days: 90,
            alert_webhook_url: None,
            credential_webhook_url: None,
            credential_webhook_secret_file: None,
            display_utc_offset: "+00:00".into(),
            client_cert_header: None,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_body() -> usize {
    256 * 1024
}

/// An initialised data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    /// The directory (not checked).
    pub fn at(path: impl Into<PathBuf>) -> DataDir {
        DataDir { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether `init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.file("trailmark.toml").exists()
    }

    /// Creates the directory with a new random key and the config.
    ///
    /// # Errors
    /// If it is already initialised or a file cannot be written.
    pub fn create(&self, config: &Config) -> Result<LedgerKey, ConfigError> {
        if self.is_initialised() {
            return Err(ConfigError::AlreadyInitialised(
                self.path.display().to_string(),
            ));
        }
        create_private_dir(&self.path)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| ConfigError::Invalid {
            path: self.file("ledger.key"),
            problem: format!("no randomness: {e}"),
        })?;
        let key =
            LedgerKey::from_seed(&config.origin, &seed).map_err(|e| ConfigError::Invalid {
                path: self.file("trailmark.toml"),
                problem: e.to_string(),
            })?;
        write_secret(
            &self.file("ledger.key"),
            &format!("{}\n", hex::encode(seed)),
        )?;
        let vkey = self.file("verifier-key");
        fs::write(&vkey, format!("{}\n", key.verifier().to_text())).map_err(io(&vkey))?;
        let toml_path = self.file("trailmark.toml");
        let text = toml::to_string(config).map_err(|e| ConfigError::Invalid {
            path: toml_path.clone(),
            problem: e.to_string(),
        })?;
        // Owner-only, like the key: `database_url` may carry a password.
        write_secret(
            &toml_path,
            &format!("# Trailmark configuration; see README.md\n{text}"),
        )?;
        Ok(key)
    }

    /// Reads `trailmark.toml`.
    ///
    /// # Errors
    /// If the directory is not initialised or the file is invalid.
    pub fn config(&self) -> Result<Config, ConfigError> {
        if !self.is_initialised() {
            return Err(ConfigError::NotInitialised(self.path.display().to_string()));
        }
        let path = self.file("trailmark.toml");
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path,
            problem: e.to_string(),
        })
    }

    /// Reads the ledger key.
    ///
    /// # Errors
    /// If the key file is missing or malformed.
    pub fn ledger_key(&self, origin: &str) -> Result<LedgerKey, ConfigError> {
        let path = self.file("ledger.key");
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| ConfigError::Invalid {
            path: path.clone(),
            problem: "must hold 64 hex digits (an Ed25519 seed)".into(),
        })?;
        LedgerKey::from_seed(origin, &seed).map_err(|e| ConfigError::Invalid {
            path,
            problem: e.to_string(),
        })
    }

    /// The database URL: `DATABASE_URL`-style override, else the config's,
    /// else SQLite in the directory.
    pub fn database_url(&self, config: &Config, override_url: Option<&str>) -> String {
        override_url
            .map(str::to_owned)
            .or_else(|| config.database_url.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.file("ledger.db").display()))
    }
}

impl DataDir {
    /// Writes Trailmark's CA certificate and key (key owner-only).
    ///
    /// # Errors
    /// If a CA is there already or the files cannot be written.
    pub fn write_ca(&self, certificate_pem: &str, key_pem: &str) -> Result<(), ConfigError> {
        if self.file("ca.key").exists() {
            return Err(ConfigError::Invalid {
                path: self.file("ca.key"),
                problem: "a CA exists already; Trailmark keeps one CA per data directory".into(),
            });
        }
        write_secret(&self.file("ca.key"), key_pem)?;
        fs::write(self.file("ca.pem"), certificate_pem).map_err(io(&self.file("ca.pem")))
    }

    /// Trailmark's CA (certificate PEM, key PEM), if `ca init` ran here.
    ///
    /// # Errors
    /// If the files exist but cannot be read.
    pub fn ca(&self) -> Result<Option<(String, String)>, ConfigError> {
        let (cert, key) = (self.file("ca.pem"), self.file("ca.key"));
        if !key.exists() {
            return Ok(None);
        }
        let cert_pem = fs::read_to_string(&cert).map_err(io(&cert))?;
        let key_pem = fs::read_to_string(&key).map_err(io(&key))?;
        Ok(Some((cert_pem, key_pem)))
    }
}

impl DataDir {
    /// Every path that must be private, with its mode as found: the
    /// directory, [`SECRET_FILES`], each target's `secret_file`, the
    /// credential channel's secret, and on
    /// SQLite the database file `database_file` with its `-wal` and `-shm`
    /// (`None` on PostgreSQL, whose files the server keeps).
    pub fn private_paths(&self, config: &Config, database_file: Option<&Path>) -> Vec<PrivatePath> {
        let mut files: Vec<PathBuf> = SECRET_FILES.iter().map(|f| self.file(f)).collect();
        files.extend(
            config
                .integration
                .targets
                .values()
                .filter(|t| !t.secret_file.is_empty())
                .map(|t| self.file(&t.secret_file)),
        );
        files.extend(
            config
                .identity
                .credential_webhook_secret_file
                .iter()
                .map(|f| self.file(f)),
        );
        if let Some(db) = database_file {
            files.push(db.to_owned());
            for suffix in ["-wal", "-shm"] {
                let mut name = db.as_os_str().to_owned();
                name.push(suffix);
                files.push(PathBuf::from(name));
            }
        }
        let dir = PrivatePath {
            path: self.path.clone(),
            mode: PRIVATE_DIR_MODE,
            found: mode_of(&self.path),
        };
        std::iter::once(dir)
            .chain(files.into_iter().map(|path| PrivatePath {
                found: mode_of(&path),
                path,
                mode: PRIVATE_FILE_MODE,
            }))
            .collect()
    }

    /// Sets every path of [`DataDir::private_paths`] that group or others
    /// may access to its private mode; returns those it changed, with the
    /// mode found before, for the caller to report.
    ///
    /// # Errors
    /// If a mode cannot be changed (a file owned by another user).
    pub fn make_private(
        &self,
        config: &Config,
        database_file: Option<&Path>,
    ) -> Result<Vec<PrivatePath>, ConfigError> {
        let loose: Vec<PrivatePath> = self
            .private_paths(config, database_file)
            .into_iter()
            .filter(|p| !p.is_private())
            .collect();
        #[cfg(unix)]
        for p in &loose {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&p.path, fs::Permissions::from_mode(p.mode)).map_err(|e| {
                ConfigError::Invalid {
                    path: p.path.clone(),
                    problem: format!(
                        "readable by others and cannot be made private ({e}); run `chmod {:o} {}` as its owner",
                        p.mode,
                        p.path.display()
                    ),
                }
            })?;
        }
        Ok(loose)
    }
}

/// Files of the report-signing keys (docs/REPORTS.md §6).
pub const REPORT_FILES: [&str; 4] = [
    "report-ca.pem",
    "report-ca.key",
    "report-signing.pem",
    "report-signing.key",
];

/// The report-signing files of a data directory, read.
pub struct ReportKeyFiles {
    /// The signing certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The report CA's certificate.
    pub ca_pem: String,
    /// Where the key is, for messages.
    pub key_path: PathBuf,
}

impl DataDir {
    /// Writes the report CA and signing certificate with their keys (keys
    /// owner-only), all PEM.
    ///
    /// # Errors
    /// If they exist already or cannot be written.
    pub fn write_report_keys(
        &self,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), ConfigError> {
        if let Some(existing) = REPORT_FILES
            .iter()
            .map(|f| self.file(f))
            .find(|p| p.exists())
        {
            return Err(ConfigError::Invalid {
                path: existing,
                problem: "report-signing keys exist already".into(),
            });
        }
        fs::write(self.file("report-ca.pem"), ca_cert_pem)
            .map_err(io(&self.file("report-ca.pem")))?;
        write_secret(&self.file("report-ca.key"), ca_key_pem)?;
        fs::write(self.file("report-signing.pem"), cert_pem)
            .map_err(io(&self.file("report-signing.pem")))?;
        write_secret(&self.file("report-signing.key"), key_pem)
    }

    /// The report-signing certificate, its key and the report CA (PEM),
    /// if the keys are here: `report::sign::ReportSigner::from_dir` makes
    /// the signer of them.
    ///
    /// # Errors
    /// If the key exists but a file is unreadable.
    pub fn report_key_files(&self) -> Result<Option<ReportKeyFiles>, ConfigError> {
        let key = self.file("report-signing.key");
        if !key.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let p = self.file(name);
            fs::read_to_string(&p).map_err(io(&p))
        };
        Ok(Some(ReportKeyFiles {
            cert_pem: read("report-signing.pem")?,
            key_pem: read("report-signing.key")?,
            ca_pem: read("report-ca.pem")?,
            key_path: key,
        }))
    }
}

/// Creates the data directory owner-only (0700), and makes an existing one
/// so: it is about to hold the ledger's keys.
fn create_private_dir(path: &Path) -> Result<(), ConfigError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(PRIVATE_DIR_MODE);
        builder.create(path).map_err(io(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(io(path))
    }
    #[cfg(not(unix))]
    builder.create(path).map_err(io(path))
}

fn write_secret(path: &Path, content: &str) -> Result<(), ConfigError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(content.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// A database URL with any password replaced by `***`, safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with every section at its default.
    fn test_config() -> Config {
        Config {
            origin: "trailmark.test/cfg".into(),
            listen: default_listen(),
            database_url: None,
            max_body_bytes: default_body(),
            sequencer: SequencerConfig::default(),
            identity: IdentityConfig::default(),
            integration: IntegrationConfig::default(),
            verify: VerifyConfig::default(),
            transport: TransportConfig::default(),
            console: ConsoleConfig::default(),
        }
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[test]
    fn create_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::at(dir.path().join("d"));
        let config = test_config();
        let key = data.create(&config).unwrap();
        assert_eq!(data.config().unwrap(), config);
        assert_eq!(data.ledger_key(&config.origin).unwrap().seed(), key.seed());
        assert!(matches!(
            data.create(&config),
            Err(ConfigError::AlreadyInitialised(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.file("ledger.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(data.file("trailmark.toml"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the config may hold a database password"
            );
            assert_eq!(mode_of(data.path()), Some(0o700));
        }
    }

    #[cfg(unix)]
    #[test]
    fn loose_modes_are_found_and_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::at(dir.path().join("d"));
        let mut config = test_config();
        config.integration.targets.insert(
            "lms".into(),
            TargetConfig {
                secret_file: "lms.whsec".into(),
                ..TargetConfig::default()
            },
        );
        data.create(&config).unwrap();
        let db = data.file("ledger.db");
        for (path, mode) in [
            (data.path().to_owned(), 0o755),
            (data.file("lms.whsec"), 0o644),
            (db.clone(), 0o640),
        ] {
            std::fs::write(&path, "x").ok();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let found = data.private_paths(&config, Some(&db));
        let loose: Vec<String> = found
            .iter()
            .filter(|p| !p.is_private())
            .map(PrivatePath::describe)
            .collect();
        assert_eq!(
            loose,
            [
                format!("{} mode 0755", data.path().display()),
                format!("{} mode 0644", data.file("lms.whsec").display()),
                format!("{} mode 0640", db.display()),
            ]
        );
        assert!(
            found
                .iter()
                .any(|p| p.path == data.file("ledger.db-wal") && p.found.is_none()),
            "an absent -wal is listed, and private"
        );
        let changed = data.make_private(&config, Some(&db)).unwrap();
        assert_eq!(changed.len(), 3);
        assert!(
            data.private_paths(&config, Some(&db))
                .iter()
                .all(PrivatePath::is_private)
        );
        assert_eq!(mode_of(data.path()), Some(0o700));
        assert_eq!(mode_of(&db), Some(0o600));
        assert!(data.make_private(&config, Some(&db)).unwrap().is_empty());
    }
}
