//! Operational records beside the ledger: full verification runs
//! (migration 0005). Never part of what `verify` checks.

use serde::Serialize;

use super::{Backend, Store, StoreError};

/// One full verification of the stored ledger.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct VerifyRun {
    /// UTC, RFC 3339.
    pub started_at: String,
    /// UTC, RFC 3339.
    pub finished_at: String,
    /// `cli` or `user:ID`.
    pub by_whom: String,
    /// `intact`, `broken` or `error`.
    pub result: String,
    /// Entries checked.
    pub entries: i64,
    /// Checkpoints checked.
    pub checkpoints: i64,
    /// Signatures checked.
    pub signatures: i64,
    /// The root when intact, else what failed.
    pub detail: String,
}

impl Store {
    /// Records a finished verification.
    ///
    /// # Errors
    /// A database error.
    pub async fn record_verify_run(&self, run: &VerifyRun) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO verify_runs (started_at, finished_at, by_whom, result, entries, checkpoints, signatures, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(run.started_at.clone()).bind(run.finished_at.clone()).bind(run.by_whom.clone())
                .bind(run.result.clone()).bind(run.entries).bind(run.checkpoints).bind(run.signatures)
                .bind(run.detail.clone())
                .execute(pool).await?;
        });
        Ok(())
    }

    /// The newest verification, if any ran.
    ///
    /// # Errors
    /// A database error.
    pub async fn last_verify_run(&self) -> Result<Option<VerifyRun>, StoreError> {
        let row: Option<VerifyRun> = on_pool!(self, pool => {
            sqlx::query_as("SELECT started_at, finished_at, by_whom, result, entries, checkpoints, signatures, detail FROM verify_runs ORDER BY id DESC LIMIT 1")
                .fetch_optional(pool).await?
        });
        Ok(row)
    }
}
