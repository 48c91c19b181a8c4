//! Reads of the integration tables (docs/INTEGRATION.md §2-4). The writes
//! are [`StateWrite::Sql`](super::StateWrite::Sql) effects of entries; the
//! SQL of both lives with the rules in `crate::integration`, which knows the
//! tables' meaning. This module only runs it on either backend.

pub mod rules;

use sqlx::FromRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{Backend, Bind, Store, StoreError};

pub mod outbox;
pub mod views;

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
    pub async fn rows<T: AnyRow>(
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
    pub async fn row<T: AnyRow>(
        &self,
        sql: &'static str,
        binds: &[Bind],
    ) -> Result<Option<T>, StoreError> {
        Ok(self.rows(sql, binds).await?.into_iter().next())
    }
}
