//! The integration tables (docs/INTEGRATION.md §2-4): all of their SQL.
//!
//! - [`rules`]: what the rules worker reads to decide, and the writes it
//!   attaches to the entries that record its outcomes;
//! - [`outbox`]: the inbox and outbox of ingestion, replay and delivery,
//!   and the CAPA closure;
//! - [`views`]: the reads of the integration points, the console and the
//!   demo (readiness, compliance, lineage, dead letters, backlog).
//!
//! Each statement is a named constant or a named constructor; each read a
//! `Store` method returning named rows (`sqlx::FromRow`). Writes are
//! [`StateWrite::Sql`](super::StateWrite::Sql) effects, written in the
//! transaction of the entry that records them. What the rows mean (status
//! rules, what is due) stays with `crate::integration`. The generic
//! `Store::rows` that runs them is private to `store`.

pub mod outbox;
pub mod rules;
pub mod views;

use sqlx::FromRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{Backend, Bind, Store, StoreError};

/// A row type readable from both backends.
pub trait AnyRow:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl Store {
    /// Runs a read (`$n` placeholders) and returns every row.
    ///
    /// # Errors
    /// A database error, or a bind that only writes may use.
    pub(in crate::store) async fn rows<T: AnyRow>(
        &self,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Vec<T>, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                bind_values!(sqlx::query_as::<_, T>(sql), binds, None)
                    .fetch_all(pool)
                    .await?
            }
            Backend::Postgres(pool) => {
                bind_values!(sqlx::query_as::<_, T>(sql), binds, None)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// The first row of a read, if any.
    ///
    /// # Errors
    /// As [`Store::rows`].
    pub(in crate::store) async fn row<T: AnyRow>(
        &self,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Option<T>, StoreError> {
        Ok(self.rows(sql, binds).await?.into_iter().next())
    }
}
