//! The identity tables as projections of the administrative and security
//! entries (docs/STATE.md §3): tokens, users, certificates, trusted CAs and
//! the signing policy. Secrets and their digests are never in an entry and
//! are not projected.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::{EntryView, Projector, StateMismatch, Table, member, seq_cell, text};
use crate::store::Cell;

/// The kinds these rules read.
pub(super) const READS: &[&str] = &[
    "admin.token.created",
    "admin.token.revoked",
    "admin.user.created",
    "admin.user.changed",
    "admin.user.password_set",
    "security.account.locked",
    "admin.certificate.issued",
    "admin.certificate.revoked",
    "admin.ca.trusted",
    "admin.signing_policy.changed",
];

/// A user row that must exist for an entry that changes it.
fn changed_user(
    p: &mut Projector,
    e: &EntryView<'_>,
    user: &str,
    changes: &[(&str, Cell)],
) -> Result<(), StateMismatch> {
    let key = [Cell::Text(user.to_owned())];
    if p.update(Table::Users, &key, |_| true, changes, e.seq) {
        Ok(())
    } else {
        Err(StateMismatch::Unprojectable {
            seq: e.seq,
            problem: format!(
                "`{}` changes user {user}, whom no earlier entry created",
                e.kind
            ),
        })
    }
}

fn der(e: &EntryView<'_>, payload: &Value) -> Result<Vec<u8>, StateMismatch> {
    STANDARD
        .decode(member(e, payload, "certificate")?)
        .map_err(|_| StateMismatch::Unprojectable {
            seq: e.seq,
            problem: format!("`{}` has a `certificate` that is not base64", e.kind),
        })
}

/// Applies one identity entry.
pub(super) fn apply(p: &mut Projector, e: &EntryView<'_>) -> Result<(), StateMismatch> {
    let payload = e.payload;
    let s = |name: &str| member(e, payload, name);
    let seq = e.seq;
    match e.kind {
        "admin.token.created" => {
            let cells = vec![
                Cell::Text(s("token_id")?),
                Cell::Text(s("principal")?),
                Cell::Text(e.recorded_at.to_owned()),
                seq_cell(seq),
                Cell::Json(payload["scopes"].clone()),
                text(&payload["expires_at"]),
                text(&payload["client_certificate_sha256"]),
                Cell::Null,
                Cell::Null,
            ];
            p.upsert(Table::ApiTokens, cells, seq);
        }
        "admin.token.revoked" => {
            let changes = [
                ("revoked_at", Cell::Text(s("effective_at")?)),
                ("revoked_seq", seq_cell(seq)),
            ];
            let key = [Cell::Text(s("token_id")?)];
            p.update(Table::ApiTokens, &key, |_| true, &changes, seq);
        }
        "admin.user.created" => {
            let cells = vec![
                Cell::Text(s("user_id")?),
                Cell::Text(s("printed_name")?),
                Cell::Text(s("email")?),
                Cell::Json(payload["roles"].clone()),
                Cell::Text("active".into()),
                seq_cell(seq),
                Cell::Int(1),
                Cell::Null,
            ];
            p.upsert(Table::Users, cells, seq);
        }
        "admin.user.changed" => {
            let mut changes = Vec::new();
            if let Some(map) = payload["changes"].as_object() {
                for (field, change) in map {
                    let new = &change["new"];
                    match field.as_str() {
                        "printed_name" => changes.push(("printed_name", text(new))),
                        "email" => changes.push(("email", text(new))),
                        "status" => changes.push(("status", text(new))),
                        "roles" => changes.push(("roles", Cell::Json(new.clone()))),
                        _ => {}
                    }
                }
            }
            changed_user(p, e, &s("user_id")?, &changes)?;
            revoke_noted(p, payload, seq);
        }
        "admin.user.password_set" => {
            let must_change =
                payload["must_change"]
                    .as_bool()
                    .ok_or_else(|| StateMismatch::Unprojectable {
                        seq,
                        problem: "`admin.user.password_set` has no boolean `must_change`".into(),
                    })?;
            let changes = [("must_change_password", Cell::Int(i64::from(must_change)))];
            changed_user(p, e, &s("user_id")?, &changes)?;
            revoke_noted(p, payload, seq);
        }
        "security.account.locked" => {
            let changes = [("status", Cell::Text("locked".into()))];
            changed_user(p, e, &s("user_id")?, &changes)?;
        }
        "admin.certificate.issued" => {
            let sha = s("certificate_sha256")?;
            let user = s("user_id")?;
            let cells = vec![
                Cell::Text(sha.clone()),
                Cell::Text(user.clone()),
                Cell::Blob(der(e, payload)?),
                Cell::Text(s("not_before")?),
                Cell::Text(s("not_after")?),
                seq_cell(seq),
                Cell::Null,
                Cell::Null,
            ];
            p.upsert(Table::Certificates, cells, seq);
            changed_user(p, e, &user, &[("certificate_sha256", Cell::Text(sha))])?;
        }
        "admin.certificate.revoked" => {
            revoke(p, &s("certificate_sha256")?, &s("cause")?, seq);
        }
        "admin.ca.trusted" => {
            let cells = vec![
                Cell::Text(s("certificate_sha256")?),
                Cell::Blob(der(e, payload)?),
                Cell::Text(s("subject")?),
                seq_cell(seq),
            ];
            p.upsert(Table::TrustedCas, cells, seq);
        }
        "admin.signing_policy.changed" => {
            let cells = vec![
                Cell::Int(1),
                Cell::Json(payload["new"].clone()),
                seq_cell(seq),
            ];
            p.upsert(Table::SigningPolicy, cells, seq);
        }
        _ => {}
    }
    Ok(())
}

/// A certificate revocation noted inside a user change or password reset
/// (`certificate_revoked`).
fn revoke_noted(p: &mut Projector, payload: &Value, seq: u64) {
    let noted = &payload["certificate_revoked"];
    if let (Some(sha), Some(cause)) = (
        noted["certificate_sha256"].as_str(),
        noted["cause"].as_str(),
    ) {
        revoke(p, sha, cause, seq);
    }
}

/// Revokes a certificate and detaches it from the user holding it.
fn revoke(p: &mut Projector, sha: &str, cause: &str, seq: u64) {
    let changes = [
        ("revoked_seq", seq_cell(seq)),
        ("revoked_cause", Cell::Text(cause.to_owned())),
    ];
    p.update(
        Table::Certificates,
        &[Cell::Text(sha.to_owned())],
        |_| true,
        &changes,
        seq,
    );
    let column = Table::Users.column("certificate_sha256");
    let held = Cell::Text(sha.to_owned());
    p.update_all(
        Table::Users,
        |row| row[column] == held,
        &[("certificate_sha256", Cell::Null)],
        seq,
    );
}
