//! Reads of the state tables for `verify`'s replay (docs/STATE.md): one
//! consistent snapshot of every projected table with the ledger size it
//! belongs to, and the parent index by seq range.

use std::collections::HashMap;

use sqlx::QueryBuilder;
use sqlx::Row as _;

use super::{Backend, Store, StoreError, hash_of, i64_of, u64_of};
use crate::ledger::Hash;

/// The SQL type a projected column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `INTEGER`/`BIGINT`, possibly NULL.
    Int,
    /// `TEXT`, possibly NULL.
    Text,
    /// `BLOB`/`BYTEA`, possibly NULL.
    Blob,
    /// `TEXT` holding JSON, compared as JSON values (key order and spacing
    /// do not matter), possibly NULL.
    Json,
}

/// One value of a state row, as stored or as projected.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// A JSON value (a `Json` column).
    Json(serde_json::Value),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Text(t) => write!(f, "`{t}`"),
            Cell::Blob(b) => write!(f, "x'{}'", hex::encode(b)),
            Cell::Json(v) => write!(f, "{v}"),
        }
    }
}

/// A projected table: its name, the key columns (first) and the compared
/// columns. Names come from `projection::TABLES`, never from input.
#[derive(Debug)]
pub struct TableSpec {
    /// Table name.
    pub name: &'static str,
    /// How many of `columns` (from the first) form the key.
    pub key_columns: usize,
    /// Whether the key is unique in the table; without a unique key,
    /// duplicate rows are told apart by their order.
    pub unique: bool,
    /// The columns compared, key first.
    pub columns: &'static [(&'static str, ColumnType)],
}

/// Every projected table's rows, read in one transaction, with the number
/// of entries that transaction saw.
#[derive(Debug)]
pub struct StateSnapshot {
    /// `SELECT COUNT(*) FROM entries` in the same snapshot.
    pub size: u64,
    /// Per table (in the order asked), its rows as cells in column order.
    pub tables: Vec<Vec<Vec<Cell>>>,
}

macro_rules! read_cells {
    ($row:expr, $columns:expr) => {{
        let mut cells = Vec::with_capacity($columns.len());
        for (i, (_, ty)) in $columns.iter().enumerate() {
            let cell = match ty {
                ColumnType::Int => $row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Cell::Null, Cell::Int),
                ColumnType::Text => $row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Cell::Null, Cell::Text),
                ColumnType::Blob => $row
                    .try_get::<Option<Vec<u8>>, _>(i)?
                    .map_or(Cell::Null, Cell::Blob),
                ColumnType::Json => match $row.try_get::<Option<String>, _>(i)? {
                    None => Cell::Null,
                    // Text that is not JSON stays text, so it shows as changed.
                    Some(t) => serde_json::from_str(&t).map_or(Cell::Text(t), Cell::Json),
                },
            };
            cells.push(cell);
        }
        cells
    }};
}

impl Store {
    /// Reads every table of `tables` and the number of entries in one
    /// read transaction (a repeatable-read snapshot on PostgreSQL, one WAL
    /// snapshot on SQLite), so a server appending meanwhile cannot make the
    /// state look ahead of the entries.
    ///
    /// # Errors
    /// A database failure.
    pub async fn state_snapshot(&self, tables: &[TableSpec]) -> Result<StateSnapshot, StoreError> {
        let postgres = matches!(self.backend, Backend::Postgres(_));
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            // The head's seq through the primary key, not a count of rows.
            let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM entries")
                .fetch_one(&mut *tx)
                .await?;
            let mut out = Vec::with_capacity(tables.len());
            for table in tables {
                let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
                let sql = format!("SELECT {} FROM {}", columns.join(", "), table.name);
                // Names come from the static `projection::TABLES`, never from input.
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut *tx)
                    .await?;
                let mut cells = Vec::with_capacity(rows.len());
                for row in &rows {
                    cells.push(read_cells!(row, table.columns));
                }
                out.push(cells);
            }
            tx.rollback().await?;
            Ok(StateSnapshot {
                size: u64::try_from(size).unwrap_or(0),
                tables: out,
            })
        })
    }

    /// The stored interior nodes in `ranges` (`(level, from, to)`: the
    /// nodes of `level` with `from <= idx < to`), for `verify`'s comparison
    /// of the nodes a page of entries completes (contiguous on each level).
    /// One query for all levels, the hashes of a level joined in hex in SQL:
    /// a row per node cost more in the driver than the comparison. A level
    /// whose range is not complete is read row by row, so the missing node
    /// can be named.
    ///
    /// # Errors
    /// A database failure or a malformed stored hash.
    pub async fn node_ranges(
        &self,
        ranges: &[(u8, u64, u64)],
    ) -> Result<HashMap<(u8, u64), Hash>, StoreError> {
        let mut out = HashMap::new();
        if ranges.is_empty() {
            return Ok(out);
        }
        let joined = match &self.backend {
            Backend::Sqlite(_) => "group_concat(lower(hex(hash)), '' ORDER BY idx)",
            Backend::Postgres(_) => "string_agg(encode(hash, 'hex'), '' ORDER BY idx)",
        };
        let rows: Vec<(i64, i64, Option<i64>, Option<String>)> = on_pool!(self, pool => {
            let mut qb = QueryBuilder::new("SELECT level, COUNT(*), MIN(idx), ");
            qb.push(joined).push(" FROM merkle_nodes WHERE ");
            for (i, (level, from, to)) in ranges.iter().enumerate() {
                if i > 0 {
                    qb.push(" OR ");
                }
                qb.push("(level = ").push_bind(i64::from(*level))
                    .push(" AND idx >= ").push_bind(i64_of(*from))
                    .push(" AND idx < ").push_bind(i64_of(*to)).push(")");
            }
            qb.push(" GROUP BY level");
            qb.build_query_as().fetch_all(pool).await?
        });
        let mut complete = std::collections::HashSet::new();
        for (level, count, first, hex_joined) in rows {
            let Some(&(level, from, to)) = ranges.iter().find(|r| i64::from(r.0) == level) else {
                continue;
            };
            let hex_joined = hex_joined.unwrap_or_default();
            let whole = u64::try_from(count).ok() == Some(to - from)
                && first.and_then(|f| u64::try_from(f).ok()) == Some(from)
                && hex_joined.len() as u64 == 64 * (to - from);
            if !whole {
                continue;
            }
            // The primary key makes the indices distinct: `to - from` of
            // them, the least `from`, all below `to`, are `from..to`.
            for (idx, hex) in (from..to).zip(hex_joined.as_bytes().chunks(64)) {
                let bytes = hex::decode(hex)
                    .map_err(|_| StoreError::Corrupt(format!("node ({level}, {idx}): not hex")))?;
                out.insert((level, idx), hash_of(&bytes, "node")?);
            }
            complete.insert(level);
        }
        for &(level, from, to) in ranges.iter().filter(|r| !complete.contains(&r.0)) {
            const SQL: &str = "SELECT idx, hash FROM merkle_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx";
            let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, pool => {
                sqlx::query_as(SQL)
                    .bind(i64::from(level))
                    .bind(i64_of(from))
                    .bind(i64_of(to))
                    .fetch_all(pool)
                    .await?
            });
            for (idx, hash) in rows {
                out.insert((level, u64_of(idx, "node index")?), hash_of(&hash, "node")?);
            }
        }
        Ok(out)
    }

    /// The parent index rows `(seq, parent_seq, position)` of the entries
    /// with `from <= seq < to`, by seq and position.
    ///
    /// # Errors
    /// A database failure.
    pub async fn parent_index(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64, i64)>, StoreError> {
        const SQL: &str = "SELECT seq, parent_seq, position FROM entry_parents WHERE seq >= $1 AND seq < $2 ORDER BY seq, position";
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(SQL)
                .bind(i64_of(from))
                .bind(i64_of(to))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(s, p, pos)| {
                (
                    u64::try_from(s).unwrap_or(u64::MAX),
                    u64::try_from(p).unwrap_or(u64::MAX),
                    pos,
                )
            })
            .collect())
    }
}
