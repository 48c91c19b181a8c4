//! State as a projection of the ledger (docs/STATE.md): the rows the state
//! tables must hold, rebuilt from the entries alone, one rule per table
//! family, and the comparison `verify` makes with what is stored.
//!
//! This module knows nothing about SQL: [`Projector::apply`] takes entries
//! in seq order, [`Projector::compare`] takes the stored rows as cells
//! (read by `Store::state_snapshot`) and names the first difference. The
//! rules live by family: `identity.rs` (tokens, users, certificates, CAs,
//! signing policy) and `integration.rs` (inbox, master data, assignments,
//! CAPAs, completions, outbox).
//!
//! ```
//! use trailmark::projection::Projector;
//! assert!(Projector::reads("lms.completion.recorded"));
//! assert!(!Projector::reads("ledger.annotation"));
//! ```

mod identity;
mod integration;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::ledger::Hash;
use crate::store::{Cell, ColumnType, TableSpec};

use ColumnType::{Blob, Int, Json, Text};

/// The projected tables and their compared columns, key first. Columns
/// left out are the documented exceptions of docs/STATE.md §3 (secrets and
/// their digests, operational counters).
pub static TABLES: &[TableSpec] = &[
    TableSpec {
        name: "api_tokens",
        key_columns: 1,
        unique: true,
        columns: &[
            ("id", Text),
            ("principal", Text),
            ("created_at", Text),
            ("created_seq", Int),
            ("scopes", Json),
            ("expires_at", Text),
            ("client_cert_sha256", Text),
            ("revoked_at", Text),
            ("revoked_seq", Int),
        ],
    },
    TableSpec {
        name: "users",
        key_columns: 1,
        unique: true,
        columns: &[
            ("user_id", Text),
            ("printed_name", Text),
            ("email", Text),
            ("roles", Json),
            ("status", Text),
            ("created_seq", Int),
            ("must_change_password", Int),
            ("certificate_sha256", Text),
        ],
    },
    TableSpec {
        name: "certificates",
        key_columns: 1,
        unique: true,
        columns: &[
            ("sha256", Text),
            ("user_id", Text),
            ("der", Blob),
            ("not_before", Text),
            ("not_after", Text),
            ("issued_seq", Int),
            ("revoked_seq", Int),
            ("revoked_cause", Text),
        ],
    },
    TableSpec {
        name: "trusted_cas",
        key_columns: 1,
        unique: true,
        columns: &[
            ("sha256", Text),
            ("der", Blob),
            ("subject", Text),
            ("added_seq", Int),
        ],
    },
    TableSpec {
        name: "signing_policy",
        key_columns: 1,
        unique: true,
        columns: &[("id", Int), ("policy", Json), ("set_seq", Int)],
    },
    TableSpec {
        name: "completions",
        key_columns: 1,
        unique: true,
        columns: &[
            ("seq", Int),
            ("person_id", Text),
            ("document_id", Text),
            ("version", Text),
            ("completed_at", Text),
            ("outcome", Text),
            ("verified_by", Text),
            ("entry_hash", Blob),
        ],
    },
    TableSpec {
        name: "inbox",
        key_columns: 1,
        unique: true,
        columns: &[
            ("event_key", Text),
            ("source", Text),
            ("event_id", Text),
            ("type", Text),
            ("kind", Text),
            ("event_time", Text),
            ("seq", Int),
            ("entry_hash", Blob),
            ("received_at", Text),
            ("correlation_id", Text),
            ("status", Text),
            ("status_seq", Int),
            ("detail", Text),
        ],
    },
    TableSpec {
        name: "people",
        key_columns: 1,
        unique: true,
        columns: &[
            ("person_id", Text),
            ("name", Text),
            ("active", Int),
            ("source_time", Text),
            ("known_seq", Int),
        ],
    },
    TableSpec {
        name: "person_functions",
        key_columns: 5,
        unique: false,
        columns: &[
            ("person_id", Text),
            ("job_function", Text),
            ("valid_from", Text),
            ("valid_to", Text),
            ("known_seq", Int),
            ("known_at", Text),
            ("superseded_seq", Int),
            ("superseded_at", Text),
        ],
    },
    TableSpec {
        name: "job_functions",
        key_columns: 1,
        unique: true,
        columns: &[
            ("job_function", Text),
            ("name", Text),
            ("active", Int),
            ("known_seq", Int),
        ],
    },
    TableSpec {
        name: "training_categories",
        key_columns: 1,
        unique: true,
        columns: &[("category", Text), ("window_days", Int), ("known_seq", Int)],
    },
    TableSpec {
        name: "training_matrix",
        key_columns: 3,
        unique: false,
        columns: &[
            ("document_id", Text),
            ("job_function", Text),
            ("known_seq", Int),
            ("known_at", Text),
            ("superseded_seq", Int),
            ("superseded_at", Text),
        ],
    },
    TableSpec {
        name: "document_versions",
        key_columns: 2,
        unique: true,
        columns: &[
            ("document_id", Text),
            ("version", Text),
            ("effective_at", Text),
            ("retired_at", Text),
            ("category", Text),
            ("title", Text),
            ("known_seq", Int),
            ("known_at", Text),
            ("entry_hash", Blob),
            ("retired_seq", Int),
        ],
    },
    TableSpec {
        name: "assignments",
        key_columns: 1,
        unique: true,
        columns: &[
            ("assignment_id", Text),
            ("person_id", Text),
            ("document_id", Text),
            ("version", Text),
            ("origin", Text),
            ("capa_id", Text),
            ("action_id", Text),
            ("verification_required", Int),
            ("effective_at", Text),
            ("due_at", Text),
            ("created_seq", Int),
            ("created_at", Text),
            ("entry_hash", Blob),
            ("status", Text),
            ("completed_at", Text),
            ("completion_seq", Int),
            ("completion_hash", Blob),
            ("verified", Int),
            ("closed_seq", Int),
            ("cancel_reason", Text),
            ("required_from", Text),
        ],
    },
    TableSpec {
        name: "capa_actions",
        key_columns: 2,
        unique: true,
        columns: &[
            ("capa_id", Text),
            ("action_id", Text),
            ("document_id", Text),
            ("version", Text),
            ("verification_required", Int),
            ("due_at", Text),
            ("seq", Int),
            ("entry_hash", Blob),
        ],
    },
    TableSpec {
        name: "capas",
        key_columns: 1,
        unique: true,
        columns: &[
            ("capa_id", Text),
            ("status", Text),
            ("ready", Int),
            ("closed_seq", Int),
        ],
    },
    TableSpec {
        name: "outbox",
        key_columns: 1,
        unique: true,
        columns: &[
            ("id", Text),
            ("target", Text),
            ("message_type", Text),
            ("subject", Text),
            ("body", Json),
            ("correlation_id", Text),
            ("created_seq", Int),
            ("created_at", Text),
            ("handover_hash", Blob),
            ("status", Text),
            ("delivered_at", Text),
            ("outcome_seq", Int),
        ],
    },
];

/// Positions in [`TABLES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    ApiTokens = 0,
    Users,
    Certificates,
    TrustedCas,
    SigningPolicy,
    Completions,
    Inbox,
    People,
    PersonFunctions,
    JobFunctions,
    TrainingCategories,
    TrainingMatrix,
    DocumentVersions,
    Assignments,
    CapaActions,
    Capas,
    Outbox,
}

impl Table {
    fn spec(self) -> &'static TableSpec {
        &TABLES[self as usize]
    }

    /// The position of `column`; a name not in the spec is a programmer
    /// error.
    fn column(self, column: &str) -> usize {
        self.spec()
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .unwrap_or_else(|| panic!("{} has no projected column {column}", self.spec().name))
    }
}

/// One entry as the projector needs it.
#[derive(Debug, Clone, Copy)]
pub struct EntryView<'a> {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
    /// `recorded_at` as written in the entry.
    pub recorded_at: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Its subject.
    pub subject: &'a str,
    /// Its correlation ID.
    pub correlation_id: Option<&'a str>,
    /// Its idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Its parents.
    pub parents: &'a [Hash],
    /// Its payload.
    pub payload: &'a Value,
}

/// A projected row and the entry that last wrote it.
#[derive(Debug, Clone)]
struct Row {
    cells: Vec<Cell>,
    written_by: u64,
}

/// The first difference between the stored state and the ledger's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateMismatch {
    /// A row's column differs.
    #[error(
        "state table `{table}`, row {key}: column `{column}` is {stored} in the database but {expected} in the ledger (last written by entry {written_by})"
    )]
    Value {
        /// Table.
        table: &'static str,
        /// The row's key, `column=value`.
        key: String,
        /// Column.
        column: &'static str,
        /// Stored value.
        stored: String,
        /// Projected value.
        expected: String,
        /// The entry that last wrote the row.
        written_by: u64,
    },
    /// A row the ledger derives is not stored.
    #[error(
        "state table `{table}`, row {key}: missing from the database (written by entry {written_by})"
    )]
    Missing {
        /// Table.
        table: &'static str,
        /// The row's key.
        key: String,
        /// The entry that wrote it.
        written_by: u64,
    },
    /// A stored row no entry derives.
    #[error("state table `{table}`, row {key}: in the database but written by no entry")]
    Unrecorded {
        /// Table.
        table: &'static str,
        /// The row's key.
        key: String,
    },
    /// The stored parent index differs from the entries' `parents`.
    #[error(
        "index `entry_parents` of entry {seq}: stored {stored}, but the entry names {expected}"
    )]
    ParentIndex {
        /// The child entry.
        seq: u64,
        /// Stored parent seqs in position order.
        stored: String,
        /// Parent seqs the entry's bytes name.
        expected: String,
    },
    /// A stored interior tree node differs from the one computed.
    #[error(
        "table `merkle_nodes`, node (level {level}, index {index}): {stored}, but the entries hash to {expected} (the node completed at entry {seq})"
    )]
    TreeNode {
        /// Level.
        level: u8,
        /// Index.
        index: u64,
        /// Stored hash, or `missing`.
        stored: String,
        /// Computed hash.
        expected: String,
        /// The entry whose leaf completed it.
        seq: u64,
    },
    /// An entry whose rules cannot be replayed (a payload that is not what
    /// its kind writes).
    #[error("entry {seq} cannot be projected: {problem}")]
    Unprojectable {
        /// The entry.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
}

/// A source event recorded and not yet applied or rejected: what the
/// projection of its application needs.
#[derive(Debug)]
struct Pending {
    seq: u64,
    kind: String,
    event_key: String,
    /// When Trailmark received it (the event entry's `recorded_at`).
    received_at: String,
    /// The envelope's `time`, if any.
    event_time: Option<String>,
    /// `data` as compact JSON text.
    data: String,
}

/// The expected state, built entry by entry.
#[derive(Debug)]
pub struct Projector {
    tables: Vec<BTreeMap<String, Row>>,
    /// Source events not yet applied or rejected, by entry hash. An event
    /// leaves when the rules settle it, so this holds the integration's
    /// backlog, not its history.
    pending: HashMap<Hash, Pending>,
}

impl Default for Projector {
    fn default() -> Projector {
        Projector {
            tables: vec![BTreeMap::new(); TABLES.len()],
            pending: HashMap::new(),
        }
    }
}

/// Which rules read an entry of a kind.
enum Family {
    Identity,
    Integration,
}

fn family(kind: &str) -> Option<Family> {
    if identity::READS.contains(&kind) {
        Some(Family::Identity)
    } else if integration::reads(kind) {
        Some(Family::Integration)
    } else {
        None
    }
}

pub(crate) fn text(v: &Value) -> Cell {
    v.as_str().map_or(Cell::Null, |s| Cell::Text(s.to_owned()))
}

pub(crate) fn seq_cell(seq: u64) -> Cell {
    Cell::Int(i64::try_from(seq).unwrap_or(i64::MAX))
}

fn hash_cell(hash: &Hash) -> Cell {
    Cell::Blob(hash.to_vec())
}

/// A string member of a payload, or the entry is unprojectable.
fn member(e: &EntryView<'_>, value: &Value, name: &str) -> Result<String, StateMismatch> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| StateMismatch::Unprojectable {
            seq: e.seq,
            problem: format!("`{}` payload has no string `{name}`", e.kind),
        })
}

/// `column=value` of the key columns, joined by `,`.
fn key_of(spec: &TableSpec, cells: &[Cell]) -> String {
    spec.columns[..spec.key_columns]
        .iter()
        .zip(cells)
        .map(|((c, _), v)| match v {
            Cell::Text(t) => format!("{c}={t}"),
            other => format!("{c}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `key`, or for a table without a unique key its next free occurrence
/// (`key#2`, `key#3`, ...), so duplicate rows count.
fn occurrence<V>(spec: &TableSpec, map: &BTreeMap<String, V>, key: String) -> String {
    if spec.unique || !map.contains_key(&key) {
        return key;
    }
    (2..)
        .map(|n| format!("{key}#{n}"))
        .find(|k| !map.contains_key(k))
        .expect("a free occurrence")
}

impl Projector {
    /// Whether entries of `kind` change projected state (the others need
    /// not be parsed).
    pub fn reads(kind: &str) -> bool {
        family(kind).is_some()
    }

    /// Applies one entry (in seq order) to the expected state.
    ///
    /// # Errors
    /// An entry of a projected kind whose payload lacks what its kind
    /// writes.
    pub fn apply(&mut self, e: &EntryView<'_>) -> Result<(), StateMismatch> {
        match family(e.kind) {
            Some(Family::Identity) => identity::apply(self, e),
            Some(Family::Integration) => integration::apply(self, e),
            None => Ok(()),
        }
    }

    /// The row with `key` (the key columns' cells), if projected.
    fn get(&self, table: Table, key: &[Cell]) -> Option<&[Cell]> {
        self.tables[table as usize]
            .get(&key_of(table.spec(), key))
            .map(|r| r.cells.as_slice())
    }

    /// `INSERT`, or `INSERT ... ON CONFLICT DO UPDATE` of every column.
    fn upsert(&mut self, table: Table, cells: Vec<Cell>, seq: u64) {
        let spec = table.spec();
        let map = &mut self.tables[table as usize];
        let key = occurrence(spec, map, key_of(spec, &cells));
        map.insert(
            key,
            Row {
                cells,
                written_by: seq,
            },
        );
    }

    /// `INSERT ... ON CONFLICT DO NOTHING`.
    fn insert_absent(&mut self, table: Table, cells: Vec<Cell>, seq: u64) {
        let key = key_of(table.spec(), &cells);
        self.tables[table as usize].entry(key).or_insert(Row {
            cells,
            written_by: seq,
        });
    }

    /// `UPDATE ... WHERE` the key is `key` and `only_if` holds: sets each
    /// `(column, value)`. Like SQL, a row that is absent or does not match
    /// is left alone; returns whether a row changed.
    fn update(
        &mut self,
        table: Table,
        key: &[Cell],
        only_if: impl Fn(&[Cell]) -> bool,
        changes: &[(&str, Cell)],
        seq: u64,
    ) -> bool {
        let full = key_of(table.spec(), key);
        match self.tables[table as usize].get_mut(&full) {
            Some(row) if only_if(&row.cells) => {
                for (column, value) in changes {
                    row.cells[table.column(column)] = value.clone();
                }
                row.written_by = seq;
                true
            }
            _ => false,
        }
    }

    /// `UPDATE ... WHERE filter` over every row of a table.
    fn update_all(
        &mut self,
        table: Table,
        filter: impl Fn(&[Cell]) -> bool,
        changes: &[(&str, Cell)],
        seq: u64,
    ) {
        for row in self.tables[table as usize].values_mut() {
            if filter(&row.cells) {
                for (column, value) in changes {
                    row.cells[table.column(column)] = value.clone();
                }
                row.written_by = seq;
            }
        }
    }

    /// Rows of a table, for a rule that reads the projected state.
    fn rows(&self, table: Table) -> impl Iterator<Item = &[Cell]> {
        self.tables[table as usize]
            .values()
            .map(|r| r.cells.as_slice())
    }

    /// Compares the stored rows of every projected table (in [`TABLES`]
    /// order) with the projection. Returns the number of rows compared.
    ///
    /// # Errors
    /// The first difference, table by table, in key order.
    pub fn compare(&self, stored: &[Vec<Vec<Cell>>]) -> Result<u64, StateMismatch> {
        let mut compared = 0u64;
        for (i, spec) in TABLES.iter().enumerate() {
            let rows = stored.get(i).map_or(&[][..], Vec::as_slice);
            let mut found: BTreeMap<String, &Vec<Cell>> = BTreeMap::new();
            for row in rows {
                let key = occurrence(spec, &found, key_of(spec, row));
                found.insert(key, row);
            }
            for (key, expected) in &self.tables[i] {
                let Some(row) = found.remove(key) else {
                    return Err(StateMismatch::Missing {
                        table: spec.name,
                        key: key.clone(),
                        written_by: expected.written_by,
                    });
                };
                compared += 1;
                for (c, (column, _)) in spec.columns.iter().enumerate() {
                    if row[c] != expected.cells[c] {
                        return Err(StateMismatch::Value {
                            table: spec.name,
                            key: key.clone(),
                            column,
                            stored: row[c].to_string(),
                            expected: expected.cells[c].to_string(),
                            written_by: expected.written_by,
                        });
                    }
                }
            }
            if let Some(key) = found.into_keys().next() {
                return Err(StateMismatch::Unrecorded {
                    table: spec.name,
                    key,
                });
            }
        }
        Ok(compared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_names_its_position() {
        for (i, spec) in TABLES.iter().enumerate() {
            assert!(spec.key_columns >= 1 && spec.key_columns <= spec.columns.len());
            let _ = i;
        }
        assert_eq!(Table::Outbox as usize + 1, TABLES.len());
        assert_eq!(Table::Assignments.spec().name, "assignments");
        assert_eq!(Table::PersonFunctions.spec().name, "person_functions");
    }

    #[test]
    fn a_duplicate_row_in_a_table_without_a_key_counts() {
        let mut p = Projector::default();
        let span = || {
            vec![
                Cell::Text("E1".into()),
                Cell::Text("OP".into()),
                Cell::Text("2026-01-01T00:00:00.000000Z".into()),
                Cell::Null,
                Cell::Int(7),
                Cell::Text("2026-01-02T00:00:00.000000Z".into()),
                Cell::Null,
                Cell::Null,
            ]
        };
        p.upsert(Table::PersonFunctions, span(), 7);
        p.upsert(Table::PersonFunctions, span(), 7);
        let mut stored: Vec<Vec<Vec<Cell>>> = vec![vec![]; TABLES.len()];
        stored[Table::PersonFunctions as usize] = vec![span()];
        assert!(matches!(
            p.compare(&stored),
            Err(StateMismatch::Missing {
                table: "person_functions",
                ..
            })
        ));
        stored[Table::PersonFunctions as usize] = vec![span(), span()];
        assert_eq!(p.compare(&stored), Ok(2));
        stored[Table::PersonFunctions as usize] = vec![span(), span(), span()];
        assert!(matches!(
            p.compare(&stored),
            Err(StateMismatch::Unrecorded {
                table: "person_functions",
                ..
            })
        ));
    }
}
