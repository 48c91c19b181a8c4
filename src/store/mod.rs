//! The only code that talks SQL. One [`Store`] over SQLite (the embedded
//! default) or PostgreSQL, the single insert path into the ledger
//! ([`Store::write_batch`]) and the reads the API, proofs and `verify` need.
//!
//! Every query is written once and runs on both backends: the `on_pool!`
//! macro expands the same body for each pool type, and all SQL uses `$N`
//! placeholders, which both drivers accept.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL`, PostgreSQL
//! with `synchronous_commit=on`, so a committed batch survives a crash of the
//! process or the machine; the sequencer acknowledges only after commit.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::ledger::merkle::{Frontier, NodeId, ProofPlan};
use crate::ledger::{Hash, Seq, Timestamp};

/// Key of the PostgreSQL advisory lock that serialises ledger writers
/// ("TRLMARK1" as a big-endian integer).
pub const WRITER_LOCK_KEY: i64 = 0x5452_4C4D_4152_4B31;
/// Rows the SQLite worker may queue ahead of the reader.
const ROW_BUFFER_ROWS: usize = 4_096;
/// Page cache of the SQLite writer connection, in KiB.
const WRITER_CACHE_KIB: u32 = 65_536;
/// Rows per page when streaming the ledger (verify, export).
pub const STREAM_PAGE_ROWS: u32 = 8_192;
/// Largest page the entry listing returns.
pub const LIST_LIMIT_MAX: u32 = 1_000;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed or the schema does not match the migrations.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}`: use `sqlite://PATH` or `postgres://...`")]
    UnsupportedUrl(String),
    /// Another writer appended since this writer last looked; nothing was written.
    #[error("the ledger head moved (expected {expected}, found {found}); another writer appended")]
    HeadMoved {
        /// What the writer expected.
        expected: String,
        /// What the database holds.
        found: String,
    },
    /// A stored value is not what the ledger wrote (tampering or corruption).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The SQLite database file could not be created owner-only.
    #[error("creating {path} (mode 0600): {source}")]
    CreateFile {
        /// The database file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the ledger database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// The pool the single writer uses. On SQLite it is one dedicated
    /// connection with a large page cache: in WAL mode a connection drops its
    /// cache whenever another connection wrote, so a writer that hopped between
    /// pooled connections re-read its index pages on every batch.
    writer: Backend,
    /// [`Store::text_scan_rows`] when set (0: the backend's default); shared
    /// by every clone of this handle.
    text_scan: Arc<AtomicU64>,
    /// A fault the next [`Store::write_batch`] suffers; shared by clones.
    fault: Arc<std::sync::Mutex<Option<Fault>>>,
    /// The SQLite database file; `None` on PostgreSQL.
    file: Option<Arc<std::path::Path>>,
}

/// A fault injected into the next batch write, to test the sequencer's
/// handling of each commit window (docs/ARCHITECTURE.md, "Crash
/// windows"). Never set outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The commit fails before it reaches the database: nothing is written.
    CommitFailsBefore,
    /// The data is committed, then the connection fails before the answer
    /// arrives (PostgreSQL): the writer sees an error for a durable batch.
    CommitFailsAfter,
    /// Another writer appended first: the head check finds the head moved.
    HeadMoved,
}

macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Binds [`Bind`] parameters to a query on either backend. `$recording` is
/// `Some(&(seq, recorded_at, hash))` of the entry a write rides on, or
/// `None` for a read, where `Seq`, `At` and `Hash` are an error.
macro_rules! bind_values {
    ($q:expr, $binds:expr, $recording:expr) => {{
        let recording: Option<&(i64, String, Vec<u8>)> = $recording;
        let mut q = $q;
        for b in $binds {
            q = match (b, recording) {
                (Bind::Text(t), _) => q.bind(t.clone()),
                (Bind::OptText(t), _) => q.bind(t.clone()),
                (Bind::Int(i), _) => q.bind(*i),
                (Bind::OptInt(i), _) => q.bind(*i),
                (Bind::Blob(v), _) => q.bind(v.clone()),
                (Bind::Seq, Some((seq, _, _))) => q.bind(*seq),
                (Bind::At, Some((_, at, _))) => q.bind(at.clone()),
                (Bind::Hash, Some((_, _, hash))) => q.bind(hash.clone()),
                (Bind::Seq | Bind::At | Bind::Hash, None) => {
                    return Err(StoreError::Corrupt(
                        "a read cannot bind the recording entry's seq, time or hash".into(),
                    ));
                }
            };
        }
        q
    }};
}

mod identity;
pub mod integration;
mod ops;
mod projection;
pub mod schema;

pub use identity::{
    Bind, CertificateRow, SequencedWrite, SessionRow, StateWrite, TokenRow, UserRow,
};
pub use integration::AnyRow;
pub use integration::outbox::{
    DeadHandoverRow, DueMessageRow, RecordedEventRow, capa_closed, inbox_received,
    outbox_dead_lettered, outbox_delivered, outbox_enqueued, outbox_replayed,
    outbox_retry_scheduled,
};
pub use integration::views::{
    AssignmentDueRow, CapaActionRow, CapaAssignmentRow, CapaStateRow, DeadLetterRow,
    DeliveryTimesRow, LineageEntryRow, OutboxTallyRow, RequiredPersonRow, RevisionRow,
    RevisionSpanRow, SopAssignmentRow, VersionCompletionRow,
};
pub use ops::VerifyRun;
pub use projection::{Cell, ColumnType, StateSnapshot, TableSpec};

/// The newest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its seq.
    pub seq: Seq,
    /// Its hash.
    pub hash: Hash,
    /// Its `recorded_at`.
    pub recorded_at: Timestamp,
}

/// An entry as stored: canonical bytes plus the index columns derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position.
    pub seq: Seq,
    /// Entry hash as stored.
    pub hash: Vec<u8>,
    /// Canonical bytes as stored.
    pub canonical: Vec<u8>,
    /// Index column.
    pub recorded_at: String,
    /// Index column.
    pub kind: String,
    /// Index column.
    pub actor: String,
    /// Index column.
    pub subject: String,
    /// Index column.
    pub correlation_id: Option<String>,
    /// Index column.
    pub idempotency_key: Option<String>,
    /// The batch seal, on the last entry of each committed batch.
    pub seal: Option<Vec<u8>>,
}

/// One row of the verification stream: three columns, because on SQLite
/// every column value is copied (measured: 3 columns read at ~880k rows/s,
/// 10 columns at ~210k).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRow {
    /// Position (a count in the verification stream, checked there).
    pub seq: u64,
    /// Canonical bytes as stored.
    pub canonical: Vec<u8>,
    /// The stored hash in lowercase hex (64 characters) followed by the
    /// index columns encoded as [`crate::ledger::verify::encode_index`] does.
    pub packed: String,
}

impl VerifyRow {
    /// The stored hash (hex) and the encoded index columns.
    pub fn hash_and_index(&self) -> (&str, &str) {
        if self.packed.len() >= 64 && self.packed.is_char_boundary(64) {
            self.packed.split_at(64)
        } else {
            ("", self.packed.as_str())
        }
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root as stored.
    pub root: Vec<u8>,
    /// The signed note.
    pub note: String,
    /// When it was signed.
    pub signed_at: String,
}

/// An entry ready to be written by [`Store::write_batch`].
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Position.
    pub seq: Seq,
    /// Its hash.
    pub hash: Hash,
    /// Canonical bytes.
    pub canonical: Vec<u8>,
    /// `recorded_at` text.
    pub recorded_at: String,
    /// Kind name.
    pub kind: &'static str,
    /// Actor text.
    pub actor: String,
    /// Subject text.
    pub subject: String,
    /// Correlation ID.
    pub correlation_id: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Digest of the request content, to tell a replay from a conflict.
    pub request_digest: Hash,
    /// Seqs of the parents, in `parents` order.
    pub parent_seqs: Vec<Seq>,
    /// The batch seal, on the batch's last entry only.
    pub seal: Option<Vec<u8>>,
}

/// A checkpoint ready to be written.
#[derive(Debug, Clone)]
pub struct NewCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root.
    pub root: Hash,
    /// Signed note.
    pub note: String,
    /// Signing time.
    pub signed_at: String,
}

/// Everything one ledger transaction writes.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// The head the writer built on: `None` only for the genesis batch.
    pub expected_head: Option<(Seq, Hash)>,
    /// New entries, contiguous from `expected_head.seq + 1`.
    pub entries: Vec<NewEntry>,
    /// Interior Merkle nodes completed by these entries.
    pub nodes: Vec<(NodeId, Hash)>,
    /// A checkpoint signed over the resulting tree, if one is due.
    pub checkpoint: Option<NewCheckpoint>,
    /// Identity state changed by entries of this batch.
    pub state: Vec<identity::SequencedWrite>,
}

/// Filters of the entry listing; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Exact subject.
    pub subject: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact correlation ID.
    pub correlation_id: Option<String>,
    /// `recorded_at >= from`.
    pub from: Option<String>,
    /// `recorded_at < to`.
    pub to: Option<String>,
    /// Free text anywhere in the entry's canonical JSON (payload, reason,
    /// subject, ...), case-insensitive for ASCII; `%` and `_` are literal.
    pub text: Option<String>,
    /// Only entries with `seq > after_seq` (the cursor).
    pub after_seq: Option<Seq>,
    /// Only entries with `seq < before_seq` (bounds a free-text scan).
    pub before_seq: Option<Seq>,
    /// Page size, at most [`LIST_LIMIT_MAX`].
    pub limit: u32,
}

/// An earlier entry with the same idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotentHit {
    /// Its seq.
    pub seq: Seq,
    /// Its hash.
    pub hash: Hash,
    /// Its `recorded_at`.
    pub recorded_at: String,
    /// Digest of the request that created it.
    pub request_digest: Hash,
}

fn u64_of(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

/// A stored seq: a negative one is corruption, not a position.
fn seq_of(value: i64) -> Result<Seq, StoreError> {
    Seq::try_from(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A seq, size or index as the database's BIGINT. Stored values stay below
/// 2^53; a larger one can only come from a caller (a cursor, `GET
/// /v1/entries/{seq}`) and becomes `i64::MAX`, past every stored value, so
/// it finds nothing instead of panicking on a stranger's input.
fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn hash_of(bytes: &[u8], what: &str) -> Result<Hash, StoreError> {
    Hash::from_slice(bytes).map_err(|m| StoreError::Corrupt(format!("{what}: {m}")))
}

/// An entry's idempotency columns.
#[derive(sqlx::FromRow)]
struct IdempotencyRow {
    idempotency_key: String,
    actor: String,
    seq: i64,
    hash: Vec<u8>,
    recorded_at: String,
    request_digest: Vec<u8>,
}

/// A `checkpoints` row as the database holds it.
#[derive(sqlx::FromRow)]
struct CheckpointRow {
    size: i64,
    root: Vec<u8>,
    note: String,
    signed_at: String,
}

fn checkpoint_from_row(row: CheckpointRow) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        size: u64_of(row.size, "size")?,
        root: row.root,
        note: row.note,
        signed_at: row.signed_at,
    })
}

const ENTRY_COLUMNS: &str = "seq, hash, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key, seal";

fn entry_from_row<R: Row>(row: &R) -> Result<StoredEntry, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    entry_from_row_at(row, 0)
}

/// An entry whose [`ENTRY_COLUMNS`] start at column `at`.
fn entry_from_row_at<R: Row>(row: &R, at: usize) -> Result<StoredEntry, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredEntry {
        seq: seq_of(row.try_get(at)?)?,
        hash: row.try_get(at + 1)?,
        canonical: row.try_get(at + 2)?,
        recorded_at: row.try_get(at + 3)?,
        kind: row.try_get(at + 4)?,
        actor: row.try_get(at + 5)?,
        subject: row.try_get(at + 6)?,
        correlation_id: row.try_get(at + 7)?,
        idempotency_key: row.try_get(at + 8)?,
        seal: row.try_get(at + 9)?,
    })
}

/// Writes everything of one batch through an open transaction `$tx`.
/// Expanded once per backend by `write_batch`.
macro_rules! write_batch_body {
    ($tx:ident, $batch:expr, $db:ty) => {{
        let batch: &BatchWrite = $batch;
        // The head check makes a second writer harmless: it cannot fork the
        // chain, it only finds the head moved and rebuilds its batch.
        let found: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await?;
        let found = match found {
            Some((seq, hash)) => Some((seq_of(seq)?, hash_of(&hash, "head hash")?)),
            None => None,
        };
        if found != batch.expected_head {
            let show = |h: &Option<(Seq, Hash)>| match h {
                Some((s, h)) => format!("seq {s} hash {h}"),
                None => "an empty ledger".to_owned(),
            };
            return Err(StoreError::HeadMoved { expected: show(&batch.expected_head), found: show(&found) });
        }
        for chunk in batch.entries.chunks(64) {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                "INSERT INTO entries (seq, hash, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key, request_digest, seal) ",
            );
            qb.push_values(chunk, |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(e.hash.to_vec())
                    .push_bind(e.canonical.clone())
                    .push_bind(e.recorded_at.clone())
                    .push_bind(e.kind)
                    .push_bind(e.actor.clone())
                    .push_bind(e.subject.clone())
                    .push_bind(e.correlation_id.clone())
                    .push_bind(e.idempotency_key.clone())
                    .push_bind(e.request_digest.to_vec())
                    .push_bind(e.seal.clone());
            });
            qb.build().execute(&mut *$tx).await?;
        }
        let parents: Vec<(Seq, Seq, usize)> = batch
            .entries
            .iter()
            .flat_map(|e| e.parent_seqs.iter().enumerate().map(move |(i, p)| (e.seq, *p, i)))
            .collect();
        for chunk in parents.chunks(256) {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new("INSERT INTO entry_parents (seq, parent_seq, position) ");
            qb.push_values(chunk, |mut row, (seq, parent, position)| {
                row.push_bind(*seq).push_bind(*parent).push_bind(*position as i64);
            });
            qb.build().execute(&mut *$tx).await?;
        }
        for chunk in batch.nodes.chunks(256) {
            let mut qb: QueryBuilder<$db> = QueryBuilder::new("INSERT INTO merkle_nodes (level, idx, hash) ");
            qb.push_values(chunk, |mut row, (id, hash)| {
                row.push_bind(id.level as i64).push_bind(i64_of(id.index)).push_bind(hash.to_vec());
            });
            qb.build().execute(&mut *$tx).await?;
        }
        if let Some(cp) = &batch.checkpoint {
            // Another writer (a CLI verb while the server runs) may have signed
            // this size already: the head check above proved the same tree, and
            // Ed25519 signatures are deterministic, so its note is this note.
            sqlx::query("INSERT INTO checkpoints (size, root, note, signed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING")
                .bind(i64_of(cp.size))
                .bind(cp.root.to_vec())
                .bind(cp.note.clone())
                .bind(cp.signed_at.clone())
                .execute(&mut *$tx)
                .await?;
        }
        identity::write_state_body!($tx, &batch.state)?;
        Ok::<(), StoreError>(())
    }};
}

/// Creates `path` empty and owner-only if it does not exist; an existing
/// file is left as it is.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateFile {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite ledger at `path` and migrates it.
    ///
    /// A new database file is created owner-only (0600) before SQLite opens
    /// it; SQLite gives the `-wal` and `-shm` files it creates the mode of
    /// the database file (measured with SQLite 3.40 and the bundled one:
    /// `part11_11_10_d_a_served_database_its_wal_and_shm_are_owner_only`),
    /// so no process-wide umask is needed. An existing file keeps its mode:
    /// `serve` tightens a looser one (`instance::make_private`).
    ///
    /// # Errors
    /// If the file cannot be created or opened or the schema cannot be migrated.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // Statement journals (multi-row INSERTs into tables with UNIQUE
            // indexes) in memory, not in temp files: measured 12% of the
            // writer's time as pwrite() of the sub-journal.
            // Rows travel from the SQLite worker thread in a channel of this
            // size; the default (50) woke the reader every few rows. Measured
            // with `verify`: 290k context switches per million rows.
            .row_buffer_size(ROW_BUFFER_ROWS)
            .pragma("temp_store", "memory")
            // No checkpoint inside commits: the sequencer, the only writer,
            // checkpoints between batches (`Store::checkpoint_wal`), after it
            // has answered its callers. Measured: checkpoints inside commits
            // cost throughput (every 1,000 pages) or p99 latency (every
            // 10,000); a background checkpointer on another connection never
            // caught up under continuous writes, so the WAL never rewound
            // (27 GB in three minutes).
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.pragma("cache_size", format!("-{WRITER_CACHE_KIB}")))
            .await?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
            writer: Backend::Sqlite(writer),
            text_scan: Arc::default(),
            fault: Arc::default(),
            file: Some(Arc::from(path)),
        })
    }

    /// Opens a PostgreSQL ledger and migrates it.
    ///
    /// # Errors
    /// If the server cannot be reached or the schema cannot be migrated.
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(url)?.options([
            ("synchronous_commit", "on"),
            // JIT compilation cost 38-75 ms on short trail pages at 1M
            // entries (docs/PERFORMANCE.md); no query here gains from it.
            ("jit", "off"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Store {
            backend: Backend::Postgres(pool.clone()),
            writer: Backend::Postgres(pool),
            text_scan: Arc::default(),
            fault: Arc::default(),
            file: None,
        })
    }

    /// Opens a database by URL: `postgres://...`, `postgresql://...` or `sqlite://PATH`.
    ///
    /// # Errors
    /// As [`Store::open_sqlite`] and [`Store::open_postgres`].
    pub async fn open_url(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::open_postgres(url).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Store::open_sqlite(Path::new(path)).await
        } else {
            Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)))
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        match &self.writer {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// Copies committed WAL frames into the SQLite database file (PASSIVE).
    /// Called by the writer between batches, when nothing else writes, so it
    /// completes and the next commit rewinds the WAL. A no-op on PostgreSQL.
    /// Safe at any moment: only committed frames are copied.
    ///
    /// # Errors
    /// A database error.
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(pool) = &self.backend {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The same database seen through the writer's connection: the
    /// sequencer does all its reads and writes through this handle.
    pub fn writer(&self) -> Store {
        Store {
            backend: self.writer.clone(),
            writer: self.writer.clone(),
            text_scan: Arc::clone(&self.text_scan),
            fault: Arc::clone(&self.fault),
            file: self.file.clone(),
        }
    }

    /// The SQLite database file (its `-wal` and `-shm` files lie beside
    /// it); `None` on PostgreSQL, whose files belong to the server.
    pub fn database_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The single insert path into the ledger: writes a whole batch in one
    /// transaction that first takes the writer lock and checks the head.
    ///
    /// Crash safety: the batch is one transaction, so after a crash either all
    /// of it (entries, nodes, checkpoint, token rows) is there or none is.
    ///
    /// # Errors
    /// [`StoreError::HeadMoved`] if another writer appended (nothing written),
    /// or a database error (nothing written).
    pub async fn write_batch(&self, batch: &BatchWrite) -> Result<(), StoreError> {
        let fault = self.fault.lock().map(|mut f| f.take()).unwrap_or(None);
        if fault == Some(Fault::HeadMoved) {
            return Err(StoreError::HeadMoved {
                expected: format!("{:?}", batch.expected_head.map(|h| h.0)),
                found: "another writer's entry (injected fault)".into(),
            });
        }
        match &self.backend {
            Backend::Sqlite(pool) => {
                // BEGIN IMMEDIATE takes SQLite's write lock up front, so the
                // head check and the inserts see no concurrent writer.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                write_batch_body!(tx, batch, sqlx::Sqlite)?;
                Self::commit_with(tx, fault).await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITER_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                write_batch_body!(tx, batch, sqlx::Postgres)?;
                Self::commit_with(tx, fault).await?;
            }
        }
        Ok(())
    }

    /// Commits, or suffers the injected commit fault.
    async fn commit_with<DB: sqlx::Database>(
        tx: sqlx::Transaction<'_, DB>,
        fault: Option<Fault>,
    ) -> Result<(), StoreError> {
        let lost = || {
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection lost during COMMIT (injected fault)",
            )))
        };
        match fault {
            Some(Fault::CommitFailsBefore) => {
                tx.rollback().await?;
                Err(lost())
            }
            Some(Fault::CommitFailsAfter) => {
                tx.commit().await?;
                Err(lost())
            }
            _ => Ok(tx.commit().await?),
        }
    }

    /// Makes the next batch write suffer `fault` (tests of the commit
    /// windows; every clone of this handle shares it).
    pub fn inject_fault(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(fault);
        }
    }

    /// Writes only a checkpoint (when one falls due between batches).
    ///
    /// # Errors
    /// [`StoreError::HeadMoved`] if the head is not `head`, or a database error.
    pub async fn write_checkpoint(
        &self,
        head: (Seq, Hash),
        checkpoint: NewCheckpoint,
    ) -> Result<(), StoreError> {
        self.write_batch(&BatchWrite {
            expected_head: Some(head),
            checkpoint: Some(checkpoint),
            ..BatchWrite::default()
        })
        .await
    }

    /// The newest entry, or `None` for an empty (uninitialised) ledger.
    ///
    /// # Errors
    /// A database error, or a stored value that cannot be what was written.
    pub async fn head(&self) -> Result<Option<Head>, StoreError> {
        let row: Option<(i64, Vec<u8>, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq, hash, recorded_at FROM entries ORDER BY seq DESC LIMIT 1")
                .fetch_optional(pool)
                .await?
        });
        row.map(|(seq, hash, at)| {
            Ok(Head {
                seq: seq_of(seq)?,
                hash: hash_of(&hash, "head hash")?,
                recorded_at: Timestamp::parse(&at)
                    .map_err(|e| StoreError::Corrupt(format!("head recorded_at: {e}")))?,
            })
        })
        .transpose()
    }

    /// Number of entries (head seq + 1).
    ///
    /// # Errors
    /// As [`Store::head`].
    pub async fn size(&self) -> Result<u64, StoreError> {
        Ok(self.head().await?.map_or(0, |h| h.seq.size()))
    }

    /// Hashes of the given tree nodes; level 0 comes from `entries.hash`.
    /// Missing nodes are absent from the map.
    ///
    /// # Errors
    /// A database error or a malformed stored hash.
    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        let leaves: Vec<i64> = ids
            .iter()
            .filter(|id| id.level == 0)
            .map(|id| i64_of(id.index))
            .collect();
        let interior: Vec<&NodeId> = ids.iter().filter(|id| id.level > 0).collect();
        for chunk in leaves.chunks(500) {
            let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
                let mut qb = QueryBuilder::new("SELECT seq, hash FROM entries WHERE seq IN (");
                let mut sep = qb.separated(", ");
                for seq in chunk {
                    sep.push_bind(*seq);
                }
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await?
            });
            for (seq, hash) in rows {
                out.insert(
                    NodeId {
                        level: 0,
                        index: u64_of(seq, "seq")?,
                    },
                    hash_of(&hash, "leaf")?,
                );
            }
        }
        for chunk in interior.chunks(200) {
            let rows: Vec<(i64, i64, Vec<u8>)> = on_pool!(self, pool => {
                let mut qb = QueryBuilder::new("SELECT level, idx, hash FROM merkle_nodes WHERE ");
                for (i, id) in chunk.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(level = ").push_bind(id.level as i64).push(" AND idx = ").push_bind(i64_of(id.index)).push(")");
                }
                qb.build_query_as().fetch_all(pool).await?
            });
            for (level, idx, hash) in rows {
                let level = u8::try_from(level)
                    .map_err(|_| StoreError::Corrupt(format!("node level {level}")))?;
                out.insert(
                    NodeId {
                        level,
                        index: u64_of(idx, "node index")?,
                    },
                    hash_of(&hash, "node")?,
                );
            }
        }
        Ok(out)
    }

    /// Rebuilds the tree frontier of the first `size` entries from stored nodes.
    ///
    /// # Errors
    /// If a node is missing (corruption) or on a database error.
    pub async fn frontier(&self, size: u64) -> Result<Frontier, StoreError> {
        let ids = Frontier::node_ids(size);
        let nodes = self.nodes(&ids).await?;
        let hashes = ids
            .iter()
            .map(|id| {
                nodes.get(id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "tree node level {} index {} is missing",
                        id.level, id.index
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Frontier::from_nodes(size, hashes).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Computes a proof from stored nodes, with `extra` nodes (not yet
    /// committed) taking precedence.
    ///
    /// # Errors
    /// If a node is missing or on a database error.
    pub async fn proof(
        &self,
        plan: &ProofPlan,
        extra: &HashMap<NodeId, Hash>,
    ) -> Result<Vec<Hash>, StoreError> {
        let needed: Vec<NodeId> = plan
            .needed()
            .into_iter()
            .filter(|id| !extra.contains_key(id))
            .collect();
        let mut nodes = self.nodes(&needed).await?;
        nodes.extend(extra.iter().map(|(k, v)| (*k, *v)));
        plan.assemble(&nodes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The newest signed checkpoint.
    ///
    /// # Errors
    /// A database error.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row: Option<CheckpointRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT size, root, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(pool)
                .await?
        });
        row.map(checkpoint_from_row).transpose()
    }

    /// The smallest stored checkpoint whose size is at least `size`.
    ///
    /// # Errors
    /// A database error.
    pub async fn checkpoint_at_least(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row: Option<CheckpointRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT size, root, note, signed_at FROM checkpoints WHERE size >= $1 ORDER BY size LIMIT 1")
                .bind(i64_of(size))
                .fetch_optional(pool)
                .await?
        });
        row.map(checkpoint_from_row).transpose()
    }

    /// Checkpoints with `size > after`, ascending, at most `limit`.
    ///
    /// # Errors
    /// A database error.
    pub async fn checkpoints_page(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows: Vec<CheckpointRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT size, root, note, signed_at FROM checkpoints WHERE size > $1 ORDER BY size LIMIT $2")
                .bind(i64_of(after))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(checkpoint_from_row).collect()
    }

    /// One entry by seq.
    ///
    /// # Errors
    /// A database error.
    pub async fn entry(&self, seq: Seq) -> Result<Option<StoredEntry>, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT seq, hash, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key, seal FROM entries WHERE seq = $1",
            )
            .bind(seq)
            .fetch_optional(pool)
            .await?;
            row.map(|r| entry_from_row(&r)).transpose()
        })
    }

    /// Entries with `seq >= from`, ascending, at most `limit`: the streaming
    /// read of `verify` and `export`.
    ///
    /// # Errors
    /// A database error.
    pub async fn entries_page(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT seq, hash, canonical, recorded_at, kind, actor, subject, correlation_id, idempotency_key, seal FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
            )
            .bind(i64_of(from))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(entry_from_row).collect()
        })
    }

    /// Rows for `verify` with `seq >= from`, ascending, at most `limit`: the
    /// bytes, the seal, and the six index columns in one string (see
    /// [`crate::ledger::verify::encode_index`]). Measured: five columns read
    /// three times as fast as ten on SQLite, where each value is copied.
    ///
    /// # Errors
    /// A database error.
    pub async fn verify_page(&self, from: u64, limit: u32) -> Result<Vec<VerifyRow>, StoreError> {
        // The same columns on both backends; only the hex function differs.
        macro_rules! packed {
            ($hex:literal) => {
                concat!(
                    "SELECT seq, canonical, ",
                    $hex,
                    " || length(recorded_at) || ':' || recorded_at || length(kind) || ':' || kind || ",
                    "length(actor) || ':' || actor || length(subject) || ':' || subject || ",
                    "CASE WHEN correlation_id IS NULL THEN '-' ELSE length(correlation_id) || ':' || correlation_id END || ",
                    "CASE WHEN idempotency_key IS NULL THEN '-' ELSE length(idempotency_key) || ':' || idempotency_key END ",
                    "FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2"
                )
            };
        }
        let rows: Vec<(i64, Vec<u8>, String)> = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_as(packed!("lower(hex(hash))"))
                    .bind(i64_of(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_as(packed!("encode(hash, 'hex')"))
                    .bind(i64_of(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
            }
        };
        rows.into_iter()
            .map(|(seq, canonical, packed)| {
                Ok(VerifyRow {
                    seq: u64_of(seq, "seq")?,
                    canonical,
                    packed,
                })
            })
            .collect()
    }

    /// `(seq, canonical bytes)` with `seq >= from`, ascending, at most
    /// `limit`: the streaming read of `export`.
    ///
    /// # Errors
    /// A database error.
    pub async fn canonical_page(
        &self,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq, canonical FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2")
                .bind(i64_of(from))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(seq, canonical)| Ok((u64_of(seq, "seq")?, canonical)))
            .collect()
    }

    /// How many seqs one page of a free-text search scans at most (the
    /// console's trail and `GET /v1/entries?text=` go on from there): a
    /// free-text match is a scan, about 0.5 µs per entry on SQLite and 3 µs
    /// on PostgreSQL at 1M entries (docs/PERFORMANCE.md), so a page stays
    /// near 100 ms.
    pub fn text_scan_rows(&self) -> u64 {
        match self.text_scan.load(Ordering::Relaxed) {
            0 => match &self.backend {
                Backend::Sqlite(_) => 200_000,
                Backend::Postgres(_) => 40_000,
            },
            n => n,
        }
    }

    /// Sets [`Store::text_scan_rows`] for this handle and its clones (0
    /// restores the default): a smaller window for a slower disk, or for a
    /// test that walks the windows of a small ledger.
    pub fn set_text_scan_rows(&self, rows: u64) {
        self.text_scan.store(rows, Ordering::Relaxed);
    }

    /// A filtered page of entries, ascending by seq.
    ///
    /// # Errors
    /// A database error.
    pub async fn list(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let limit = i64::from(filter.limit.clamp(1, LIST_LIMIT_MAX));
        // The canonical bytes are UTF-8 JSON; each backend reads them as
        // text and matches without regard to ASCII case.
        let text_match = match &self.backend {
            Backend::Sqlite(_) => " AND CAST(canonical AS TEXT) LIKE ",
            Backend::Postgres(_) => " AND convert_from(canonical, 'UTF8') ILIKE ",
        };
        let pattern = filter.text.as_deref().map(|t| {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        on_pool!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT ");
            qb.push(ENTRY_COLUMNS).push(" FROM entries WHERE 1 = 1");
            if let Some(v) = &filter.subject {
                qb.push(" AND subject = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.kind {
                qb.push(" AND kind = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.actor {
                qb.push(" AND actor = ").push_bind(v.clone());
            }
            if let Some(v) = &filter.correlation_id {
                qb.push(" AND correlation_id = ").push_bind(v.clone());
            }
            // `recorded_at` never decreases along the chain (the sequencer
            // clamps it; verify checks it), so a time window is a seq range:
            // found with the time index, then walked with the primary key,
            // instead of a walk from seq 0 filtering on time (PostgreSQL) or
            // a sort of the whole window (SQLite).
            if let Some(v) = &filter.from {
                qb.push(" AND seq >= COALESCE((SELECT seq FROM entries WHERE recorded_at >= ")
                    .push_bind(v.clone())
                    .push(" ORDER BY recorded_at, seq LIMIT 1), 9223372036854775807)");
            }
            if let Some(v) = &filter.to {
                qb.push(" AND seq < COALESCE((SELECT seq FROM entries WHERE recorded_at >= ")
                    .push_bind(v.clone())
                    .push(" ORDER BY recorded_at, seq LIMIT 1), 9223372036854775807)");
            }
            if let Some(v) = filter.before_seq {
                qb.push(" AND seq < ").push_bind(v);
            }
            if let Some(p) = &pattern {
                qb.push(text_match).push_bind(p.clone()).push(" ESCAPE '\\'");
            }
            if let Some(v) = filter.after_seq {
                qb.push(" AND seq > ").push_bind(v);
            }
            qb.push(" ORDER BY seq LIMIT ").push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(entry_from_row).collect()
        })
    }

    /// The canonical bytes of the given entries, ascending by seq (entries
    /// that do not exist are left out). At most a few hundred seqs a call.
    ///
    /// # Errors
    /// A database error.
    pub async fn canonical_of(&self, seqs: &[Seq]) -> Result<Vec<(Seq, Vec<u8>)>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT seq, canonical FROM entries WHERE seq IN (");
            let mut list = qb.separated(", ");
            for s in seqs {
                list.push_bind(*s);
            }
            qb.push(") ORDER BY seq");
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(seq, c)| Ok((seq_of(seq)?, c)))
            .collect()
    }

    /// Seqs of the entries that name `seq` as a parent (corrections,
    /// annotations, derived entries), ascending.
    ///
    /// # Errors
    /// A database error.
    pub async fn children(&self, seq: Seq) -> Result<Vec<Seq>, StoreError> {
        let rows: Vec<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq FROM entry_parents WHERE parent_seq = $1 ORDER BY seq LIMIT 1000")
                .bind(seq)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|(s,)| seq_of(s)).collect()
    }

    /// Seqs of the parents of entry `seq`, in the entry's `parents` order.
    ///
    /// # Errors
    /// A database error.
    pub async fn parents(&self, seq: Seq) -> Result<Vec<Seq>, StoreError> {
        let rows: Vec<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT parent_seq FROM entry_parents WHERE seq = $1 ORDER BY position")
                .bind(seq)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|(s,)| seq_of(s)).collect()
    }

    /// Seqs of the entries with these hashes (those that exist).
    ///
    /// # Errors
    /// A database error.
    pub async fn seqs_of(&self, hashes: &[Hash]) -> Result<HashMap<Hash, Seq>, StoreError> {
        let mut out = HashMap::new();
        for chunk in hashes.chunks(500) {
            let rows: Vec<(Vec<u8>, i64)> = on_pool!(self, pool => {
                let mut qb = QueryBuilder::new("SELECT hash, seq FROM entries WHERE hash IN (");
                let mut sep = qb.separated(", ");
                for h in chunk {
                    sep.push_bind(h.to_vec());
                }
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await?
            });
            for (hash, seq) in rows {
                out.insert(hash_of(&hash, "entry hash")?, seq_of(seq)?);
            }
        }
        Ok(out)
    }

    /// Earlier entries carrying any of these idempotency keys, keyed by
    /// (key, actor).
    ///
    /// # Errors
    /// A database error.
    pub async fn idempotent_hits(
        &self,
        keys: &[&str],
    ) -> Result<HashMap<(String, String), IdempotentHit>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(500) {
            let rows: Vec<IdempotencyRow> = on_pool!(self, pool => {
                let mut qb = QueryBuilder::new(
                    "SELECT idempotency_key, actor, seq, hash, recorded_at, request_digest FROM entries WHERE idempotency_key IN (",
                );
                let mut sep = qb.separated(", ");
                for k in chunk {
                    sep.push_bind(k.to_string());
                }
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await?
            });
            for r in rows {
                out.insert(
                    (r.idempotency_key, r.actor),
                    IdempotentHit {
                        seq: seq_of(r.seq)?,
                        hash: hash_of(&r.hash, "entry hash")?,
                        recorded_at: r.recorded_at,
                        request_digest: hash_of(&r.request_digest, "request digest")?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Runs `SELECT 1`: is the database answering?
    ///
    /// # Errors
    /// A database error.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }
}
