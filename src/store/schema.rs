//! What the IQ and the OQ read of the database itself: the migrations the
//! binary carries and those applied, the append-only triggers, the server's
//! version, and raw statements for the OQ's tamper steps (docs/VALIDATION.md
//! §2, §3). Nothing here is reachable over the API.

use sqlx::Row as _;

use super::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Store, StoreError};

/// One migration: version, description, SHA-384 checksum (hex).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    /// Version number (the file's prefix).
    pub version: i64,
    /// Description (the file's name after the prefix).
    pub description: String,
    /// sqlx's checksum of the SQL, hex.
    pub checksum: String,
}

/// Tables (with their columns) and indexes (with their tables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaShape {
    /// Table name to column names.
    pub tables: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// (index name, table name).
    pub indexes: std::collections::BTreeSet<(String, String)>,
}

/// The append-only triggers the migrations create, per backend.
pub const SQLITE_TRIGGERS: &[&str] = &[
    "checkpoints_no_delete",
    "checkpoints_no_update",
    "entries_no_delete",
    "entries_no_update",
    "entry_parents_no_delete",
    "entry_parents_no_update",
    "merkle_nodes_no_delete",
    "merkle_nodes_no_update",
    "users_no_delete",
];
/// The append-only triggers the migrations create on PostgreSQL.
pub const POSTGRES_TRIGGERS: &[&str] = &[
    "checkpoints_append_only",
    "checkpoints_no_truncate",
    "entries_append_only",
    "entries_no_truncate",
    "entry_parents_append_only",
    "entry_parents_no_truncate",
    "merkle_nodes_append_only",
    "merkle_nodes_no_truncate",
    "users_no_delete",
    "users_no_truncate",
];

impl Store {
    /// The migrations compiled into this binary for this backend.
    pub fn expected_migrations(&self) -> Vec<Migration> {
        let migrator = match &self.backend {
            Backend::Sqlite(_) => &SQLITE_MIGRATIONS,
            Backend::Postgres(_) => &POSTGRES_MIGRATIONS,
        };
        migrator
            .iter()
            .map(|m| Migration {
                version: m.version,
                description: m.description.to_string(),
                checksum: hex::encode(&*m.checksum),
            })
            .collect()
    }

    /// The migrations recorded as applied in `_sqlx_migrations`, with a
    /// flag for failed ones (description prefixed `FAILED: `).
    ///
    /// # Errors
    /// A database error.
    pub async fn applied_migrations(&self) -> Result<Vec<Migration>, StoreError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let checksum: Vec<u8> = r.try_get("checksum")?;
                    let description: String = r.try_get("description")?;
                    let success: bool = r.try_get("success")?;
                    Ok(Migration {
                        version: r.try_get("version")?,
                        description: if success { description } else { format!("FAILED: {description}") },
                        checksum: hex::encode(checksum),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The append-only triggers this backend should have, and of those the
    /// ones present and enabled.
    ///
    /// # Errors
    /// A database error.
    pub async fn append_only_triggers(
        &self,
    ) -> Result<(&'static [&'static str], Vec<String>), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
                )
                .fetch_all(pool)
                .await?;
                Ok((SQLITE_TRIGGERS, names))
            }
            Backend::Postgres(pool) => {
                // tgenabled 'D' is a disabled trigger: present but not guarding.
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname",
                )
                .fetch_all(pool)
                .await?;
                Ok((POSTGRES_TRIGGERS, names))
            }
        }
    }

    /// The tables with their columns, and the indexes with their tables,
    /// that the migrations created: what must be the same on both backends
    /// (types differ by dialect; the implicit indexes of primary keys and
    /// UNIQUE constraints are left out, being named by each engine).
    ///
    /// # Errors
    /// A database error.
    pub async fn shape(&self) -> Result<SchemaShape, StoreError> {
        // (table, column) and (index, table) pairs.
        type Pairs = Vec<(String, String)>;
        let (columns, indexes): (Pairs, Pairs) = match &self.backend {
            Backend::Sqlite(pool) => (
                sqlx::query_as(
                    "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
                )
                .fetch_all(pool)
                .await?,
                sqlx::query_as(
                    "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%'",
                )
                .fetch_all(pool)
                .await?,
            ),
            Backend::Postgres(pool) => (
                sqlx::query_as(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
                )
                .fetch_all(pool)
                .await?,
                sqlx::query_as(
                    "SELECT i.indexname::text, i.tablename::text FROM pg_indexes i WHERE i.schemaname = current_schema() AND i.tablename <> '_sqlx_migrations' AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))",
                )
                .fetch_all(pool)
                .await?,
            ),
        };
        let mut shape = SchemaShape::default();
        for (table, column) in columns {
            shape.tables.entry(table).or_default().insert(column);
        }
        shape.indexes = indexes.into_iter().collect();
        Ok(shape)
    }

    /// The database server's version string.
    ///
    /// # Errors
    /// A database error.
    pub async fn server_version(&self) -> Result<String, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(pool)
                    .await?;
                format!("SQLite {v}")
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar("SELECT version()")
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Runs one statement as written, around the application: the OQ's
    /// tamper steps do what a database administrator could. Returns the
    /// rows affected, or the database's refusal.
    ///
    /// # Errors
    /// The database's error, as the database gave it.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = sql.to_owned();
        on_pool!(self, pool => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}
