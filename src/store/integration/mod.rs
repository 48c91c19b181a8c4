//! The integration tables (docs/INTEGRATION.md §2-4): their SQL, as named
//! constants with named row structs, and [`Store::rows`] that runs a read
//! on either backend. Writes are [`StateWrite::Sql`](super::StateWrite::Sql)
//! effects of entries, built by named constructors here.
//!
//! - `views.rs`: the reads of the integration points' queries (readiness,
//!   compliance, lineage, dead letters, reconciliation, backlog), the
//!   console's operations and review pages, and the demo.
//! - `outbox.rs`: the inbox and outbox reads of ingestion, replay and
//!   delivery, and the effects that receive an event, queue, deliver,
//!   retry, dead-letter or replay a message, and close a CAPA.
//!
//! The rules worker's SQL (`crate::integration::rules`) is still written
//! with its rules and run through [`Store::rows`] and `StateWrite::Sql`.

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
