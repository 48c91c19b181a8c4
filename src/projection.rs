//! State as a projection of the ledger (docs/STATE.md): the rows the state
//! tables must hold, rebuilt from the entries alone, one rule per table
//! family, and the comparison `verify` makes with what is stored.
//!
//! This module knows nothing about SQL: [`Projector::apply`] takes entries
//! in seq order, [`Projector::compare`] takes the stored rows as cells
//! (read by `Store::state_snapshot`) and names the first difference.
//!
//! ```
//! use trailmark::projection::Projector;
//! let projector = Projector::default();
//! assert!(Projector::reads("lms.completion.recorded"));
//! assert!(!Projector::reads("ledger.annotation"));
//! # let _ = projector;
//! ```

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::integration::events::{self, EventData, Outcome};
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
        columns: &[("id", Int), ("policy", Json), ("set_seq", Int)],
    },
    TableSpec {
        name: "completions",
        key_columns: 1,
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
];

const API_TOKENS: usize = 0;
const USERS: usize = 1;
const CERTIFICATES: usize = 2;
const TRUSTED_CAS: usize = 3;
const SIGNING_POLICY: usize = 4;
const COMPLETIONS: usize = 5;

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

/// The expected state, built entry by entry.
#[derive(Debug, Default)]
pub struct Projector {
    tables: [BTreeMap<String, Row>; 6],
    /// Completion events not yet applied, by entry hash: their seq and
    /// `data` as compact JSON text. An event leaves when the rules apply or
    /// reject it, so this holds the integration's backlog, not its history.
    pending_completions: HashMap<Hash, (u64, String)>,
}

fn text(v: &Value) -> Cell {
    v.as_str().map_or(Cell::Null, |s| Cell::Text(s.to_owned()))
}

fn seq_cell(seq: u64) -> Cell {
    Cell::Int(i64::try_from(seq).unwrap_or(i64::MAX))
}

impl Projector {
    /// Whether entries of `kind` change projected state (the others need
    /// not be parsed).
    pub fn reads(kind: &str) -> bool {
        matches!(
            kind,
            "admin.token.created"
                | "admin.token.revoked"
                | "admin.user.created"
                | "admin.user.changed"
                | "admin.user.password_set"
                | "security.account.locked"
                | "admin.certificate.issued"
                | "admin.certificate.revoked"
                | "admin.ca.trusted"
                | "admin.signing_policy.changed"
                | "lms.completion.recorded"
                | "integration.event.applied"
                | "integration.event.rejected"
        )
    }

    fn put(&mut self, table: usize, cells: Vec<Cell>, written_by: u64) {
        let key = key_of(&TABLES[table], &cells);
        self.tables[table].insert(key, Row { cells, written_by });
    }

    /// Changes one column of an existing row; a row that does not exist is
    /// an unprojectable entry.
    fn set(
        &mut self,
        table: usize,
        key: &str,
        changes: &[(&str, Cell)],
        seq: u64,
    ) -> Result<(), StateMismatch> {
        let spec = &TABLES[table];
        let full_key = format!("{}={key}", spec.columns[0].0);
        let row =
            self.tables[table]
                .get_mut(&full_key)
                .ok_or_else(|| StateMismatch::Unprojectable {
                    seq,
                    problem: format!(
                        "it changes {} {full_key}, which no earlier entry created",
                        spec.name
                    ),
                })?;
        for (column, value) in changes {
            let i = spec
                .columns
                .iter()
                .position(|(c, _)| c == column)
                .expect("projected column");
            row.cells[i] = value.clone();
        }
        row.written_by = seq;
        Ok(())
    }

    /// Applies one entry (in seq order) to the expected state.
    ///
    /// # Errors
    /// An entry of a projected kind whose payload lacks what its kind
    /// writes.
    pub fn apply(&mut self, e: &EntryView<'_>) -> Result<(), StateMismatch> {
        let p = e.payload;
        let seq = e.seq;
        let bad = |what: &str| StateMismatch::Unprojectable {
            seq,
            problem: format!("`{}` payload {what}", e.kind),
        };
        let s = |name: &str| -> Result<String, StateMismatch> {
            p[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("has no string `{name}`")))
        };
        match e.kind {
            "admin.token.created" => {
                let cells = vec![
                    Cell::Text(s("token_id")?),
                    Cell::Text(s("principal")?),
                    Cell::Text(e.recorded_at.to_owned()),
                    seq_cell(seq),
                    Cell::Json(p["scopes"].clone()),
                    text(&p["expires_at"]),
                    text(&p["client_certificate_sha256"]),
                    Cell::Null,
                    Cell::Null,
                ];
                self.put(API_TOKENS, cells, seq);
            }
            "admin.token.revoked" => {
                let changes = [
                    ("revoked_at", Cell::Text(s("effective_at")?)),
                    ("revoked_seq", seq_cell(seq)),
                ];
                self.set(API_TOKENS, &s("token_id")?, &changes, seq)?;
            }
            "admin.user.created" => {
                let cells = vec![
                    Cell::Text(s("user_id")?),
                    Cell::Text(s("printed_name")?),
                    Cell::Text(s("email")?),
                    Cell::Json(p["roles"].clone()),
                    Cell::Text("active".into()),
                    seq_cell(seq),
                    Cell::Int(1),
                    Cell::Null,
                ];
                self.put(USERS, cells, seq);
            }
            "admin.user.changed" => {
                let user = s("user_id")?;
                let mut changes = Vec::new();
                if let Some(map) = p["changes"].as_object() {
                    for (field, change) in map {
                        let new = &change["new"];
                        let cell = match field.as_str() {
                            "printed_name" | "email" | "status" => text(new),
                            "roles" => Cell::Json(new.clone()),
                            _ => continue,
                        };
                        let column = TABLES[USERS]
                            .columns
                            .iter()
                            .find(|(c, _)| c == field)
                            .map(|(c, _)| *c)
                            .expect("listed above");
                        changes.push((column, cell));
                    }
                }
                self.set(USERS, &user, &changes, seq)?;
                self.revoke_noted(p, seq)?;
            }
            "admin.user.password_set" => {
                let must_change = p["must_change"]
                    .as_bool()
                    .ok_or_else(|| bad("has no boolean `must_change`"))?;
                let changes = [("must_change_password", Cell::Int(i64::from(must_change)))];
                self.set(USERS, &s("user_id")?, &changes, seq)?;
                self.revoke_noted(p, seq)?;
            }
            "security.account.locked" => {
                let changes = [("status", Cell::Text("locked".into()))];
                self.set(USERS, &s("user_id")?, &changes, seq)?;
            }
            "admin.certificate.issued" => {
                use base64::Engine as _;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(s("certificate")?)
                    .map_err(|_| bad("has a `certificate` that is not base64"))?;
                let sha = s("certificate_sha256")?;
                let user = s("user_id")?;
                let cells = vec![
                    Cell::Text(sha.clone()),
                    Cell::Text(user.clone()),
                    Cell::Blob(der),
                    Cell::Text(s("not_before")?),
                    Cell::Text(s("not_after")?),
                    seq_cell(seq),
                    Cell::Null,
                    Cell::Null,
                ];
                self.put(CERTIFICATES, cells, seq);
                self.set(
                    USERS,
                    &user,
                    &[("certificate_sha256", Cell::Text(sha))],
                    seq,
                )?;
            }
            "admin.certificate.revoked" => {
                self.revoke(&s("certificate_sha256")?, &s("cause")?, seq)?;
            }
            "admin.ca.trusted" => {
                use base64::Engine as _;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(s("certificate")?)
                    .map_err(|_| bad("has a `certificate` that is not base64"))?;
                let cells = vec![
                    Cell::Text(s("certificate_sha256")?),
                    Cell::Blob(der),
                    Cell::Text(s("subject")?),
                    seq_cell(seq),
                ];
                self.put(TRUSTED_CAS, cells, seq);
            }
            "admin.signing_policy.changed" => {
                let cells = vec![Cell::Int(1), Cell::Json(p["new"].clone()), seq_cell(seq)];
                self.tables[SIGNING_POLICY].clear();
                self.put(SIGNING_POLICY, cells, seq);
            }
            "lms.completion.recorded" => {
                self.pending_completions
                    .insert(e.hash, (seq, p["data"].to_string()));
            }
            "integration.event.applied" => {
                if let Some((event_seq, data)) = e
                    .parents
                    .first()
                    .and_then(|h| self.pending_completions.remove(h))
                {
                    let cells = completion_row(event_seq, e.parents[0], &data).map_err(|m| {
                        StateMismatch::Unprojectable {
                            seq: event_seq,
                            problem: m,
                        }
                    })?;
                    self.put(COMPLETIONS, cells, seq);
                }
            }
            "integration.event.rejected" => {
                if let Some(h) = e.parents.first() {
                    self.pending_completions.remove(h);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A certificate revocation noted inside a user change or password
    /// reset (`certificate_revoked`).
    fn revoke_noted(&mut self, p: &Value, seq: u64) -> Result<(), StateMismatch> {
        let noted = &p["certificate_revoked"];
        if let (Some(sha), Some(cause)) = (
            noted["certificate_sha256"].as_str(),
            noted["cause"].as_str(),
        ) {
            self.revoke(sha, cause, seq)?;
        }
        Ok(())
    }

    fn revoke(&mut self, sha: &str, cause: &str, seq: u64) -> Result<(), StateMismatch> {
        let changes = [
            ("revoked_seq", seq_cell(seq)),
            ("revoked_cause", Cell::Text(cause.to_owned())),
        ];
        self.set(CERTIFICATES, sha, &changes, seq)?;
        let holders: Vec<String> = self.tables[USERS]
            .iter()
            .filter(|(_, row)| row.cells[7] == Cell::Text(sha.to_owned()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in holders {
            let row = self.tables[USERS].get_mut(&key).expect("found above");
            row.cells[7] = Cell::Null;
            row.written_by = seq;
        }
        Ok(())
    }

    /// Compares the stored rows of every projected table (in [`TABLES`]
    /// order) with the projection.
    ///
    /// Returns the number of rows compared.
    ///
    /// # Errors
    /// The first difference, table by table, in key order.
    pub fn compare(&self, stored: &[Vec<Vec<Cell>>]) -> Result<u64, StateMismatch> {
        let mut compared = 0u64;
        for (i, spec) in TABLES.iter().enumerate() {
            let rows = stored.get(i).map_or(&[][..], Vec::as_slice);
            let mut found: BTreeMap<String, &Vec<Cell>> = BTreeMap::new();
            for row in rows {
                found.insert(key_of(spec, row), row);
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

/// The `completions` row of an applied completion event, by the rule of
/// docs/INTEGRATION.md (the same parsing and time normalisation as the
/// rules worker).
fn completion_row(seq: u64, hash: Hash, data: &str) -> Result<Vec<Cell>, String> {
    let data: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let EventData::Completion(c) =
        EventData::from_entry("lms.completion.recorded", data).map_err(|e| e.to_string())?
    else {
        return Err("not a completion".into());
    };
    let completed_at = events::normalise_time(&c.completed_at)?;
    let outcome = if c.outcome == Outcome::Passed {
        "passed"
    } else {
        "completed"
    };
    Ok(vec![
        seq_cell(seq),
        Cell::Text(c.person_id),
        Cell::Text(c.document_id),
        Cell::Text(c.version),
        Cell::Text(completed_at),
        Cell::Text(outcome.into()),
        c.verified_by.map_or(Cell::Null, Cell::Text),
        Cell::Blob(hash.0.to_vec()),
    ])
}
