//! Test harness: a fresh ledger on a fresh database, the real server on
//! port 0, an HTTP client, and raw SQL that goes around the application.

use std::path::PathBuf;

use serde_json::Value;
use sqlx::{Connection as _, PgConnection, SqliteConnection};
use trailmark::config::Config;
use trailmark::instance::Instance;
use trailmark::instance::Server;
use trailmark::store::{AnyRow, Bind};

/// Which database the storage tests use, as a short label for messages.
pub fn backend() -> &'static str {
    if std::env::var("TRAILMARK_TEST_DATABASE_URL").is_ok() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A fresh database: a SQLite file in the test's temp dir, or a new
/// PostgreSQL database on the server named by `TRAILMARK_TEST_DATABASE_URL`.
pub struct TestDb {
    /// URL to open it.
    pub url: String,
    pg_admin: Option<(String, String)>,
    /// Set once the PostgreSQL database is dropped; a `TestDb` dropped
    /// without it (a test that panicked) drops the database then.
    dropped: std::sync::atomic::AtomicBool,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.pg_admin.is_none() || self.dropped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // Drop may run inside the test's runtime: the DROP runs on a thread
        // with its own, and is waited for, so no database outlives its test.
        let (base, name) = self.pg_admin.clone().expect("checked above");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            rt.block_on(drop_pg(&base, &name));
        })
        .join();
    }
}

async fn drop_pg(base: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(base).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

impl TestDb {
    pub async fn new(dir: &std::path::Path) -> TestDb {
        match std::env::var("TRAILMARK_TEST_DATABASE_URL") {
            Ok(base) => {
                let mut id = [0u8; 6];
                getrandom::fill(&mut id).unwrap();
                let name = format!("trailmark_t_{}", hex::encode(id));
                let mut admin = PgConnection::connect(&base)
                    .await
                    .expect("TRAILMARK_TEST_DATABASE_URL must reach a PostgreSQL server");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let (prefix, _) = base.rsplit_once('/').expect("the URL names a database");
                TestDb {
                    url: format!("{prefix}/{name}"),
                    pg_admin: Some((base, name)),
                    dropped: std::sync::atomic::AtomicBool::new(false),
                }
            }
            // The file `trailmark init` creates inside the data directory.
            Err(_) => TestDb {
                url: format!("sqlite://{}", dir.join("data").join("ledger.db").display()),
                pg_admin: None,
                dropped: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }

    /// Drops the PostgreSQL database (SQLite files go with the temp dir).
    pub async fn drop_db(&self) {
        if let Some((base, name)) = &self.pg_admin {
            drop_pg(base, name).await;
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A raw connection that bypasses Trailmark entirely.
    pub async fn raw(&self) -> Raw {
        if self.pg_admin.is_some() {
            Raw::Pg(PgConnection::connect(&self.url).await.unwrap())
        } else {
            Raw::Sqlite(SqliteConnection::connect(&self.url).await.unwrap())
        }
    }
}

/// Raw SQL for tampering, the same statements on both backends where possible.
pub enum Raw {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

macro_rules! on_conn {
    ($raw:expr, $c:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($c) => $body,
            Raw::Pg($c) => $body,
        }
    };
}

/// Binds [`Bind`] values to a raw read on either backend; the recording
/// entry's seq, time or hash belong to writes only.
fn bind_values<'q, DB, T>(
    mut q: sqlx::query::QueryAs<'q, DB, T, <DB as sqlx::Database>::Arguments>,
    binds: &[Bind],
) -> sqlx::query::QueryAs<'q, DB, T, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t.clone()),
            Bind::OptText(t) => q.bind(t.clone()),
            Bind::Int(i) => q.bind(*i),
            Bind::OptInt(i) => q.bind(*i),
            Bind::Blob(v) => q.bind(v.clone()),
            other => panic!("a raw read binds values, not {other:?}"),
        };
    }
    q
}

impl Raw {
    pub fn is_pg(&self) -> bool {
        matches!(self, Raw::Pg(_))
    }

    /// Runs SQL; returns the database's error text on failure.
    pub async fn exec(&mut self, sql: &str) -> Result<(), String> {
        let sql = sql.to_owned();
        on_conn!(self, c => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(|_| ()).map_err(|e| e.to_string()))
    }

    /// Removes the append-only triggers, as a database administrator could.
    pub async fn drop_triggers(&mut self) {
        let sql = if self.is_pg() {
            "ALTER TABLE entries DISABLE TRIGGER USER; ALTER TABLE checkpoints DISABLE TRIGGER USER; ALTER TABLE merkle_nodes DISABLE TRIGGER USER; ALTER TABLE entry_parents DISABLE TRIGGER USER;"
        } else {
            "DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete; DROP TRIGGER checkpoints_no_update; DROP TRIGGER checkpoints_no_delete; DROP TRIGGER merkle_nodes_no_update; DROP TRIGGER merkle_nodes_no_delete; DROP TRIGGER entry_parents_no_delete; DROP TRIGGER entry_parents_no_update;"
        };
        self.exec(sql).await.unwrap();
    }

    pub async fn canonical(&mut self, seq: i64) -> Vec<u8> {
        on_conn!(self, c => sqlx::query_scalar("SELECT canonical FROM entries WHERE seq = $1").bind(seq).fetch_one(c).await.unwrap())
    }

    pub async fn set_canonical(&mut self, seq: i64, bytes: Vec<u8>) -> Result<(), String> {
        on_conn!(self, c => sqlx::query("UPDATE entries SET canonical = $1 WHERE seq = $2").bind(bytes).bind(seq).execute(c).await.map(|_| ()).map_err(|e| e.to_string()))
    }

    pub async fn set_hash(&mut self, seq: i64, hash: Vec<u8>) {
        on_conn!(self, c => sqlx::query("UPDATE entries SET hash = $1 WHERE seq = $2").bind(hash).bind(seq).execute(c).await.map(|_| ()).unwrap());
    }

    pub async fn set_recorded_at(&mut self, seq: i64, value: &str) {
        on_conn!(self, c => sqlx::query("UPDATE entries SET recorded_at = $1 WHERE seq = $2").bind(value.to_owned()).bind(seq).execute(c).await.map(|_| ()).unwrap());
    }

    /// Inserts an entry row from its canonical text, index columns taken from it.
    pub async fn insert_entry(&mut self, canonical: &str) {
        let v: Value = serde_json::from_str(canonical).unwrap();
        let hash = trailmark::ledger::merkle::leaf_hash(canonical.as_bytes())
            .as_bytes()
            .to_vec();
        let (seq, at, kind, actor, subject) = (
            v["seq"].as_i64().unwrap(),
            v["recorded_at"].as_str().unwrap().to_owned(),
            v["kind"].as_str().unwrap().to_owned(),
            v["actor"].as_str().unwrap().to_owned(),
            v["subject"].as_str().unwrap().to_owned(),
        );
        let bytes = canonical.as_bytes().to_vec();
        on_conn!(self, c => sqlx::query("INSERT INTO entries (seq, hash, canonical, recorded_at, kind, actor, subject, request_digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $2)")
            .bind(seq).bind(hash).bind(bytes).bind(at).bind(kind).bind(actor).bind(subject)
            .execute(c).await.map(|_| ()).unwrap());
    }

    /// The first row of a read, typed as the caller asks (a tuple or a
    /// `FromRow` struct); binds are values only.
    pub async fn row<T: AnyRow>(&mut self, sql: &'static str, binds: &[Bind]) -> Option<T> {
        on_conn!(self, c => bind_values(sqlx::query_as::<_, T>(sql), binds).fetch_optional(c).await.unwrap())
    }

    /// Every row of a read, as [`Raw::row`].
    pub async fn rows<T: AnyRow>(&mut self, sql: &'static str, binds: &[Bind]) -> Vec<T> {
        on_conn!(self, c => bind_values(sqlx::query_as::<_, T>(sql), binds).fetch_all(c).await.unwrap())
    }

    pub async fn count(&mut self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        on_conn!(self, c => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(c).await.unwrap())
    }
}

/// A ledger on a fresh database, initialised like `trailmark init` does.
///
/// A test ends it with [`TestLedger::finish`], which verifies the whole
/// stored ledger as `trailmark verify` does, or, when the test broke the
/// ledger on purpose, with [`TestLedger::finish_tampered`]. Dropping it
/// without either fails the test (unless it is failing already); its
/// PostgreSQL database is dropped either way (`TestDb`).
pub struct TestLedger {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub opened: Instance,
    /// The administrator token `init` printed.
    pub admin_token: String,
    finished: bool,
}

impl Drop for TestLedger {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            panic!("a TestLedger ended without finish(): its ledger was never verified");
        }
    }
}

impl TestLedger {
    pub async fn new() -> TestLedger {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(dir.path()).await;
        let url = (backend() == "postgres").then(|| db.url.clone());
        let (mut opened, admin_token) = Instance::initialise(
            &dir.path().join("data"),
            Some("trailmark.test/it".into()),
            url.as_deref(),
        )
        .await
        .unwrap();
        // Tests move time forward on this clock instead of sleeping.
        opened.clock = trailmark::clock::Clock::adjustable();
        TestLedger {
            dir,
            db,
            opened,
            admin_token,
            finished: false,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> Config {
        self.opened.config.clone()
    }

    pub async fn start(&self) -> Server {
        self.start_with(&self.config()).await
    }

    pub async fn start_with(&self, config: &Config) -> Server {
        Server::start(
            self.opened.store.clone(),
            self.opened.key.clone(),
            config,
            self.opened.dir.path(),
            "127.0.0.1:0",
            self.opened.clock.clone(),
        )
        .await
        .unwrap()
    }

    /// Verifies the stored ledger as `trailmark verify` does.
    pub async fn verify(
        &self,
    ) -> Result<trailmark::audit::VerifyReport, trailmark::audit::AuditError> {
        trailmark::audit::verify_store(
            &self.opened.store,
            &self.opened.key.verifier(),
            &trailmark::audit::VerifyOptions {
                check_canonical: true,
                external_checkpoint: None,
            },
            |_| {},
        )
        .await
    }

    /// Verifies the whole stored ledger (every check of `trailmark verify`,
    /// including the derived state), then closes and drops the database.
    pub async fn finish(mut self) {
        if let Err(e) = self.verify().await {
            panic!("the ledger the test leaves behind does not verify: {e}");
        }
        self.close().await;
    }

    /// Ends a test that broke the ledger on purpose: closes and drops the
    /// database without verifying.
    pub async fn finish_tampered(mut self) {
        self.close().await;
    }

    async fn close(&mut self) {
        self.finished = true;
        self.opened.store.close().await;
        self.db.drop_db().await;
    }
}

/// An HTTP client bound to a server and a token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(server: &Server, token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.url(),
            token: token.to_owned(),
        }
    }

    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/entries", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Entries `trailmark init` writes: genesis, the signing policy, the CA, the
/// report-signing keys, the integration token.
pub const INIT_ENTRIES: u64 = 5;

/// A valid record append.
pub fn record(n: usize) -> Value {
    serde_json::json!({
        "kind": "qms.capa.opened",
        "subject": format!("person:E{:04}", n % 50),
        "correlation_id": format!("corr-{}", n % 7),
        "payload": {"n": n, "document": "SOP-017", "version": 4, "score": 0.95, "name": "Zoë Łukasz 李雷"}
    })
}

/// Waits until the newest checkpoint covers `size` entries.
pub async fn wait_for_checkpoint(opened: &Instance, size: u64) {
    for _ in 0..100 {
        if opened
            .store
            .latest_checkpoint()
            .await
            .unwrap()
            .is_some_and(|c| c.size >= size)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no checkpoint of size {size} within 2 s");
}

/// A test that ends without `finish` (a panic) still drops its PostgreSQL
/// database, when its `TestDb` goes.
#[tokio::test]
async fn a_test_database_is_dropped_even_without_finish() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let Some((base, name)) = db.pg_admin.clone() else {
        eprintln!(
            "SKIPPED: SQLite test databases go with their temp dir; this checks PostgreSQL's"
        );
        return;
    };
    drop(db);
    let mut admin = PgConnection::connect(&base).await.unwrap();
    let left: Option<(String,)> =
        sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
    assert_eq!(left, None, "{name} outlived its test");
}
