//! The identity tables: users, password history, sessions, API tokens,
//! certificates, trusted CAs and the signing policy (docs/SIGNATURES.md).
//!
//! Changes that matter to the record arrive as [`StateWrite`]s attached to
//! the ledger entry that records them, and are written by
//! [`Store::write_batch`](super::Store::write_batch) in that entry's
//! transaction: the entry and the state change land together or not at all.
//! Operational counters (failed logins, session activity) are written here
//! directly; the security events they lead to are entries.

use sqlx::QueryBuilder;

use super::{Backend, Store, StoreError, StoredEntry, entry_from_row_at, seq_of, u64_of};
use crate::ledger::{Hash, Seq, UserId};

/// A change to the identity tables, written in the same transaction as the
/// entry that records it.
#[derive(Clone)]
pub enum StateWrite {
    /// A new API token (`admin.token.created`).
    CreateToken {
        /// Public token ID.
        id: String,
        /// The principal it authenticates.
        principal: String,
        /// SHA-256 of the secret.
        secret_hash: Hash,
        /// JSON `{"kinds": [...], "permissions": [...]}`.
        scopes: String,
        /// RFC 3339 UTC.
        expires_at: String,
        /// Pinned client certificate, lowercase hex SHA-256.
        client_cert_sha256: Option<String>,
    },
    /// A token stops working at `effective_at` (`admin.token.revoked`).
    RevokeToken {
        /// Public token ID.
        id: String,
        /// RFC 3339 UTC; in the future during a rotation's overlap.
        effective_at: String,
    },
    /// A new user (`admin.user.created`).
    CreateUser {
        /// User ID.
        user_id: UserId,
        /// Legal printed name.
        printed_name: String,
        /// Email.
        email: String,
        /// JSON array of roles.
        roles: String,
        /// Argon2id PHC string of the administrator-set password.
        password_hash: String,
        /// RFC 3339 UTC.
        password_expires_at: String,
    },
    /// Profile, roles or status changed (`admin.user.changed`).
    UpdateUser {
        /// User ID.
        user_id: UserId,
        /// Legal printed name.
        printed_name: String,
        /// Email.
        email: String,
        /// JSON array of roles.
        roles: String,
        /// `active`, `locked` or `deactivated`.
        status: String,
    },
    /// A new password (`admin.user.password_set`), with the key material
    /// wrapped under it (or none after an administrator reset).
    SetPassword {
        /// User ID.
        user_id: UserId,
        /// Argon2id PHC string.
        password_hash: String,
        /// RFC 3339 UTC.
        expires_at: String,
        /// Whether the next login must change it.
        must_change: bool,
        /// Wrapped signing key (docs/SIGNATURES.md §4), `None` to drop it.
        wrapped_key: Option<String>,
        /// The signing key's public half.
        public_key: Option<Vec<u8>>,
    },
    /// A certificate for a user (`admin.certificate.issued`); becomes the
    /// user's current one.
    AddCertificate {
        /// Lowercase hex SHA-256 of the DER.
        sha256: String,
        /// User ID.
        user_id: UserId,
        /// The certificate.
        der: Vec<u8>,
        /// RFC 3339.
        not_before: String,
        /// RFC 3339.
        not_after: String,
    },
    /// A certificate revoked (`admin.certificate.revoked`).
    RevokeCertificate {
        /// Lowercase hex SHA-256 of the DER.
        sha256: String,
        /// Why.
        cause: String,
    },
    /// A CA trusted for user certificates (`admin.ca.trusted`).
    TrustCa {
        /// Lowercase hex SHA-256 of the DER.
        sha256: String,
        /// The CA certificate.
        der: Vec<u8>,
        /// Display subject.
        subject: String,
    },
    /// The signing policy in force (`admin.signing_policy.changed`).
    SetPolicy {
        /// JSON policy.
        policy: String,
    },
    /// One statement on the integration tables (docs/INTEGRATION.md):
    /// master data, inbox, assignments, outbox. Written so that it cannot
    /// fail on a constraint (`ON CONFLICT` clauses), because a failed
    /// statement fails the whole batch.
    Sql {
        /// The statement, `$n` placeholders (both backends).
        sql: &'static str,
        /// Its parameters in order.
        binds: Vec<Bind>,
    },
}

/// A parameter of a [`StateWrite::Sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
    /// Integer.
    Int(i64),
    /// Integer or NULL.
    OptInt(Option<i64>),
    /// Bytes.
    Blob(Vec<u8>),
    /// The recording entry's seq.
    Seq,
    /// The recording entry's `recorded_at`.
    At,
    /// The recording entry's hash (32 bytes).
    Hash,
}

impl std::fmt::Debug for StateWrite {
    /// Names the change and its subject only: never a hash of a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, who) = match self {
            StateWrite::CreateToken { id, .. } => ("CreateToken", id.as_str()),
            StateWrite::RevokeToken { id, .. } => ("RevokeToken", id.as_str()),
            StateWrite::CreateUser { user_id, .. } => ("CreateUser", user_id.as_str()),
            StateWrite::UpdateUser { user_id, .. } => ("UpdateUser", user_id.as_str()),
            StateWrite::SetPassword { user_id, .. } => ("SetPassword", user_id.as_str()),
            StateWrite::AddCertificate { sha256, .. } => ("AddCertificate", sha256.as_str()),
            StateWrite::RevokeCertificate { sha256, .. } => ("RevokeCertificate", sha256.as_str()),
            StateWrite::TrustCa { sha256, .. } => ("TrustCa", sha256.as_str()),
            StateWrite::SetPolicy { .. } => ("SetPolicy", ""),
            StateWrite::Sql { sql, .. } => {
                return write!(
                    f,
                    "Sql({})",
                    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                );
            }
        };
        write!(f, "{what}({who})")
    }
}

/// A state write with the seq and time of the entry that records it.
#[derive(Debug, Clone)]
pub struct SequencedWrite {
    /// The recording entry.
    pub seq: Seq,
    /// Its `recorded_at`.
    pub at: String,
    /// Its hash.
    pub hash: Hash,
    /// The change.
    pub write: StateWrite,
}

/// Writes the state changes of a batch through the open transaction `$tx`.
macro_rules! write_state_body {
    ($tx:ident, $writes:expr) => {{
        for sw in $writes {
            let seq = sw.seq.to_db();
            let at = sw.at.clone();
            match &sw.write {
                StateWrite::CreateToken { id, principal, secret_hash, scopes, expires_at, client_cert_sha256 } => {
                    sqlx::query("INSERT INTO api_tokens (id, principal, secret_hash, created_at, created_seq, scopes, expires_at, client_cert_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                        .bind(id.clone()).bind(principal.clone()).bind(secret_hash.to_vec()).bind(at).bind(seq)
                        .bind(scopes.clone()).bind(expires_at.clone()).bind(client_cert_sha256.clone())
                        .execute(&mut *$tx).await?;
                }
                StateWrite::RevokeToken { id, effective_at } => {
                    sqlx::query("UPDATE api_tokens SET revoked_at = $1, revoked_seq = $2 WHERE id = $3")
                        .bind(effective_at.clone()).bind(seq).bind(id.clone())
                        .execute(&mut *$tx).await?;
                }
                StateWrite::CreateUser { user_id, printed_name, email, roles, password_hash, password_expires_at } => {
                    sqlx::query("INSERT INTO users (user_id, printed_name, email, roles, status, created_seq, password_hash, password_set_at, password_expires_at, must_change_password) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, 1)")
                        .bind(user_id.clone()).bind(printed_name.clone()).bind(email.clone()).bind(roles.clone())
                        .bind(seq).bind(password_hash.clone()).bind(at).bind(password_expires_at.clone())
                        .execute(&mut *$tx).await?;
                    sqlx::query("INSERT INTO password_history (user_id, password_hash, set_seq) VALUES ($1, $2, $3)")
                        .bind(user_id.clone()).bind(password_hash.clone()).bind(seq)
                        .execute(&mut *$tx).await?;
                }
                StateWrite::UpdateUser { user_id, printed_name, email, roles, status } => {
                    sqlx::query("UPDATE users SET printed_name = $1, email = $2, roles = $3, status = $4, failed_logins = CASE WHEN $4 = 'active' THEN 0 ELSE failed_logins END, credential_epoch = credential_epoch + CASE WHEN roles <> $3 OR status <> $4 THEN 1 ELSE 0 END WHERE user_id = $5")
                        .bind(printed_name.clone()).bind(email.clone()).bind(roles.clone()).bind(status.clone()).bind(user_id.clone())
                        .execute(&mut *$tx).await?;
                }
                StateWrite::SetPassword { user_id, password_hash, expires_at, must_change, wrapped_key, public_key } => {
                    sqlx::query("UPDATE users SET password_hash = $1, password_set_at = $2, password_expires_at = $3, must_change_password = $4, failed_logins = 0, wrapped_key = $5, public_key = $6, credential_epoch = credential_epoch + 1 WHERE user_id = $7")
                        .bind(password_hash.clone()).bind(at).bind(expires_at.clone()).bind(i64::from(*must_change))
                        .bind(wrapped_key.clone()).bind(public_key.clone()).bind(user_id.clone())
                        .execute(&mut *$tx).await?;
                    sqlx::query("INSERT INTO password_history (user_id, password_hash, set_seq) VALUES ($1, $2, $3)")
                        .bind(user_id.clone()).bind(password_hash.clone()).bind(seq)
                        .execute(&mut *$tx).await?;
                }
                StateWrite::AddCertificate { sha256, user_id, der, not_before, not_after } => {
                    sqlx::query("INSERT INTO certificates (sha256, user_id, der, not_before, not_after, issued_seq) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(sha256.clone()).bind(user_id.clone()).bind(der.clone()).bind(not_before.clone()).bind(not_after.clone()).bind(seq)
                        .execute(&mut *$tx).await?;
                    sqlx::query("UPDATE users SET certificate_sha256 = $1 WHERE user_id = $2")
                        .bind(sha256.clone()).bind(user_id.clone())
                        .execute(&mut *$tx).await?;
                }
                StateWrite::RevokeCertificate { sha256, cause } => {
                    sqlx::query("UPDATE certificates SET revoked_seq = $1, revoked_cause = $2 WHERE sha256 = $3")
                        .bind(seq).bind(cause.clone()).bind(sha256.clone())
                        .execute(&mut *$tx).await?;
                    sqlx::query("UPDATE users SET certificate_sha256 = NULL WHERE certificate_sha256 = $1")
                        .bind(sha256.clone())
                        .execute(&mut *$tx).await?;
                }
                StateWrite::TrustCa { sha256, der, subject } => {
                    sqlx::query("INSERT INTO trusted_cas (sha256, der, subject, added_seq) VALUES ($1, $2, $3, $4)")
                        .bind(sha256.clone()).bind(der.clone()).bind(subject.clone()).bind(seq)
                        .execute(&mut *$tx).await?;
                }
                StateWrite::SetPolicy { policy } => {
                    sqlx::query("DELETE FROM signing_policy").execute(&mut *$tx).await?;
                    sqlx::query("INSERT INTO signing_policy (id, policy, set_seq) VALUES (1, $1, $2)")
                        .bind(policy.clone()).bind(seq)
                        .execute(&mut *$tx).await?;
                }
                StateWrite::Sql { sql, binds } => {
                    let recording = (seq, at, sw.hash.to_vec());
                    let q = bind_values!(sqlx::query(*sql), binds, Some(&recording));
                    q.execute(&mut *$tx).await?;
                }
            }
        }
        Ok::<(), StoreError>(())
    }};
}
pub(crate) use write_state_body;

/// A user as stored. `Debug` leaves out the password hash and key material.
#[derive(Clone)]
pub struct UserRow {
    /// User ID.
    pub user_id: UserId,
    /// Legal printed name.
    pub printed_name: String,
    /// Email.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
    /// `active`, `locked` or `deactivated`.
    pub status: String,
    /// Seq of `admin.user.created`.
    pub created_seq: u64,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// RFC 3339 UTC.
    pub password_set_at: String,
    /// RFC 3339 UTC.
    pub password_expires_at: String,
    /// The next login must change the password.
    pub must_change_password: bool,
    /// Consecutive failed password checks.
    pub failed_logins: u64,
    /// Wrapped signing key (JSON).
    pub wrapped_key: Option<String>,
    /// Public signing key.
    pub public_key: Option<Vec<u8>>,
    /// Current certificate.
    pub certificate_sha256: Option<String>,
    /// Raised by every credential change; sessions of older epochs are void.
    pub credential_epoch: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("user_id", &self.user_id)
            .field("status", &self.status)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// An API token as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// Public token ID.
    pub id: String,
    /// The principal.
    pub principal: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// When it was created.
    pub created_at: String,
    /// When it stops (stopped) working because it was revoked.
    pub revoked_at: Option<String>,
    /// JSON scopes.
    pub scopes: String,
    /// When it expires.
    pub expires_at: Option<String>,
    /// Pinned client certificate.
    pub client_cert_sha256: Option<String>,
}

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Public session ID.
    pub id: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// The user.
    pub user_id: UserId,
    /// RFC 3339 UTC.
    pub opened_at: String,
    /// RFC 3339 UTC of the last request.
    pub last_seen_at: String,
    /// Set at logout or timeout.
    pub closed_at: Option<String>,
    /// Whether this session has signed with both components (§11.200(a)(1)).
    pub signed_once: bool,
    /// The user's credential epoch the session is valid under.
    pub epoch: i64,
}

/// A certificate as stored.
#[derive(Debug, Clone)]
pub struct CertificateRow {
    /// Lowercase hex SHA-256 of the DER.
    pub sha256: String,
    /// Owner.
    pub user_id: UserId,
    /// DER.
    pub der: Vec<u8>,
    /// Revocation cause, if revoked.
    pub revoked_cause: Option<String>,
}

/// A `users` row as the database holds it.
#[derive(sqlx::FromRow)]
struct UserRecord {
    user_id: UserId,
    printed_name: String,
    email: String,
    roles: String,
    status: String,
    created_seq: i64,
    password_hash: String,
    password_set_at: String,
    password_expires_at: String,
    must_change_password: i64,
    failed_logins: i64,
    wrapped_key: Option<String>,
    public_key: Option<Vec<u8>>,
    certificate_sha256: Option<String>,
    credential_epoch: i64,
}

const USER_COLUMNS: &str = "user_id, printed_name, email, roles, status, created_seq, password_hash, password_set_at, password_expires_at, must_change_password, failed_logins, wrapped_key, public_key, certificate_sha256, credential_epoch";

fn user_from(r: UserRecord) -> Result<UserRow, StoreError> {
    let roles = serde_json::from_str(&r.roles)
        .map_err(|e| StoreError::Corrupt(format!("roles of user {}: {e}", r.user_id)))?;
    Ok(UserRow {
        created_seq: u64_of(r.created_seq, "created_seq")?,
        failed_logins: u64_of(r.failed_logins, "failed_logins")?,
        user_id: r.user_id,
        printed_name: r.printed_name,
        email: r.email,
        roles,
        status: r.status,
        password_hash: r.password_hash,
        password_set_at: r.password_set_at,
        password_expires_at: r.password_expires_at,
        must_change_password: r.must_change_password != 0,
        wrapped_key: r.wrapped_key,
        public_key: r.public_key,
        certificate_sha256: r.certificate_sha256,
        credential_epoch: r.credential_epoch,
    })
}

const TOKEN_COLUMNS: &str =
    "id, principal, secret_hash, created_at, revoked_at, scopes, expires_at, client_cert_sha256";

/// A `sessions` row as the database holds it.
#[derive(sqlx::FromRow)]
struct SessionRecord {
    id: String,
    secret_hash: Vec<u8>,
    user_id: UserId,
    opened_at: String,
    last_seen_at: String,
    closed_at: Option<String>,
    signed_once: i64,
    epoch: i64,
}

impl Store {
    /// A user by ID.
    ///
    /// # Errors
    /// A database error or a corrupt row.
    pub async fn user(&self, user_id: &UserId) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        let row: Option<UserRecord> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id.clone()).fetch_optional(pool).await?
        });
        row.map(user_from).transpose()
    }

    /// Every user, by ID.
    ///
    /// # Errors
    /// A database error or a corrupt row.
    pub async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY user_id");
        let rows: Vec<UserRecord> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        rows.into_iter().map(user_from).collect()
    }

    /// The last `count` password hashes of a user, newest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn password_history(
        &self,
        user_id: &UserId,
        count: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY set_seq DESC LIMIT $2")
                .bind(user_id.clone()).bind(i64::from(count)).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Claims one password attempt for an active user before the password
    /// is checked: raises the consecutive-failure count unless it has
    /// reached `limit`. Returns the count with this attempt, or `None` when
    /// the user is not active or has no attempt left. One atomic statement,
    /// so concurrent attempts cannot all pass the check (SIGNATURES.md §4).
    ///
    /// # Errors
    /// A database error.
    pub async fn claim_password_attempt(
        &self,
        user_id: &UserId,
        limit: u64,
    ) -> Result<Option<u64>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("UPDATE users SET failed_logins = failed_logins + 1 WHERE user_id = $1 AND status = 'active' AND failed_logins < $2 RETURNING failed_logins")
                .bind(user_id.clone()).bind(limit).fetch_optional(pool).await?
        });
        row.map(|(count,)| u64_of(count, "failed_logins"))
            .transpose()
    }

    /// Clears the failure count after a correct password, if the user is
    /// still active; returns the credential epoch a session opened now is
    /// valid under, or `None` when the account was locked or changed
    /// meanwhile.
    ///
    /// # Errors
    /// A database error.
    pub async fn password_attempt_succeeded(
        &self,
        user_id: &UserId,
    ) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = on_pool!(self, pool => {
            sqlx::query_as("UPDATE users SET failed_logins = 0 WHERE user_id = $1 AND status = 'active' RETURNING credential_epoch")
                .bind(user_id.clone()).fetch_optional(pool).await?
        });
        Ok(row.map(|(epoch,)| epoch))
    }

    /// An API token by its public ID.
    ///
    /// # Errors
    /// A database error.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
        let row: Option<TokenRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_owned()).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// Every API token, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_seq");
        let rows: Vec<TokenRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Opens a session.
    ///
    /// # Errors
    /// A database error.
    pub async fn open_session(
        &self,
        id: &str,
        secret_hash: &Hash,
        user_id: &UserId,
        at: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO sessions (id, secret_hash, user_id, opened_at, last_seen_at, epoch) VALUES ($1, $2, $3, $4, $4, $5)")
                .bind(id.to_owned()).bind(secret_hash.to_vec()).bind(user_id.clone()).bind(at.to_owned()).bind(epoch)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// A session by its public ID.
    ///
    /// # Errors
    /// A database error.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<SessionRecord> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, secret_hash, user_id, opened_at, last_seen_at, closed_at, signed_once, epoch FROM sessions WHERE id = $1")
                .bind(id.to_owned()).fetch_optional(pool).await?
        });
        Ok(row.map(|r| SessionRow {
            id: r.id,
            secret_hash: r.secret_hash,
            user_id: r.user_id,
            opened_at: r.opened_at,
            last_seen_at: r.last_seen_at,
            closed_at: r.closed_at,
            signed_once: r.signed_once != 0,
            epoch: r.epoch,
        }))
    }

    /// Records activity on a session (the inactivity clock restarts).
    ///
    /// # Errors
    /// A database error.
    pub async fn touch_session(&self, id: &str, at: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND closed_at IS NULL")
                .bind(at.to_owned()).bind(id.to_owned()).execute(pool).await?;
        });
        Ok(())
    }

    /// Marks that the session signed once with both components.
    ///
    /// # Errors
    /// A database error.
    pub async fn session_signed(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET signed_once = 1 WHERE id = $1")
                .bind(id.to_owned()).execute(pool).await?;
        });
        Ok(())
    }

    /// Ends a session; `false` if it had already ended.
    ///
    /// # Errors
    /// A database error.
    pub async fn close_session(&self, id: &str, at: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET closed_at = $1 WHERE id = $2 AND closed_at IS NULL")
                .bind(at.to_owned()).bind(id.to_owned()).execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Ends every open session of a user but `keep` (a credential change:
    /// password, reset, roles, lock, deactivation); returns the IDs ended,
    /// so each can be recorded.
    ///
    /// # Errors
    /// A database error.
    pub async fn close_sessions_of(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
        at: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("UPDATE sessions SET closed_at = $1 WHERE user_id = $2 AND closed_at IS NULL AND id <> $3 RETURNING id")
                .bind(at.to_owned()).bind(user_id.clone()).bind(keep.unwrap_or("").to_owned())
                .fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Moves session `id` to its user's current credential epoch: the
    /// session that changed the password itself stays valid.
    ///
    /// # Errors
    /// A database error.
    pub async fn move_session_to_current_epoch(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET epoch = (SELECT u.credential_epoch FROM users u WHERE u.user_id = sessions.user_id) WHERE id = $1")
                .bind(id.to_owned()).execute(pool).await?;
        });
        Ok(())
    }

    /// A certificate by its SHA-256.
    ///
    /// # Errors
    /// A database error.
    pub async fn certificate(&self, sha256: &str) -> Result<Option<CertificateRow>, StoreError> {
        let row: Option<(String, UserId, Vec<u8>, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT sha256, user_id, der, revoked_cause FROM certificates WHERE sha256 = $1")
                .bind(sha256.to_owned()).fetch_optional(pool).await?
        });
        Ok(
            row.map(|(sha256, user_id, der, revoked_cause)| CertificateRow {
                sha256,
                user_id,
                der,
                revoked_cause,
            }),
        )
    }

    /// The trusted CA certificates (DER).
    ///
    /// # Errors
    /// A database error.
    pub async fn trusted_cas(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows: Vec<(Vec<u8>,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT der FROM trusted_cas ORDER BY added_seq").fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The signing policy in force (JSON), if one was recorded.
    ///
    /// # Errors
    /// A database error.
    pub async fn signing_policy(&self) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT policy FROM signing_policy WHERE id = 1").fetch_optional(pool).await?
        });
        Ok(row.map(|r| r.0))
    }

    /// The `signature.applied` entries whose parent is one of `seqs`, as
    /// (target seq, signature entry), in seq order.
    ///
    /// # Errors
    /// A database error.
    pub async fn signatures_on(&self, seqs: &[Seq]) -> Result<Vec<(Seq, StoredEntry)>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in seqs.chunks(500) {
            macro_rules! run {
                ($db:ty, $pool:ident) => {{
                    let mut qb: QueryBuilder<$db> = QueryBuilder::new(
                        "SELECT p.parent_seq, e.seq, e.hash, e.canonical, e.recorded_at, e.kind, e.actor, e.subject, e.correlation_id, e.idempotency_key, e.seal FROM entry_parents p JOIN entries e ON e.seq = p.seq WHERE e.kind = 'signature.applied' AND p.parent_seq IN (",
                    );
                    let mut list = qb.separated(", ");
                    for s in chunk {
                        list.push_bind(*s);
                    }
                    qb.push(") ORDER BY e.seq");
                    let rows = qb.build().fetch_all($pool).await?;
                    for row in &rows {
                        use sqlx::Row as _;
                        let target: i64 = row.try_get(0)?;
                        out.push((seq_of(target)?, entry_from_row_at(row, 1)?));
                    }
                }};
            }
            match &self.backend {
                Backend::Sqlite(pool) => run!(sqlx::Sqlite, pool),
                Backend::Postgres(pool) => run!(sqlx::Postgres, pool),
            }
        }
        Ok(out)
    }
}
