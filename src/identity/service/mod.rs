//! The identity operations. Each change is one ledger entry carrying the old
//! and new values and a reason, with its state change written in the same
//! transaction (docs/SIGNATURES.md §3); nothing is edited without a record.
//!
//! Concurrency: changes to users, tokens, keys and the policy are serialised
//! by one async mutex in this process, so the old value read before an
//! append is still the old value when it lands. A second server process on
//! the same database is not covered by that mutex (a known gap; the database
//! still refuses duplicate user IDs). The Argon2id work runs before the
//! mutex is taken, on the blocking pool.
//!
//! The operations are grouped by subject, each an `impl Identity` block of
//! its own: `users` (create, change, list), `passwords` (set, change,
//! lockout and its alert), `sessions` (login, session check, logout),
//! `tokens` (API tokens and their scopes), `certificates` (trusted CAs
//! and user certificates) and `signing` (the signing policy, the signing
//! ceremony and re-authentication). This file holds what they share: the
//! service, its errors, the one append shape and the field checks.

mod certificates;
mod handover;
mod passwords;
mod sessions;
mod signing;
mod tokens;
mod users;

pub use sessions::{Login, SessionCaller};
pub use signing::{Reauth, SignRequest};
pub use tokens::{TokenCaller, TokenScopes};
pub use users::{NewUser, UserChange, UserView};

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use super::ca::Ca;
use super::password::Cost;
use super::roles::Role;
use crate::clock::Clock;
use crate::config::IdentityConfig;
use crate::identity::signature;
use crate::ledger::UserId;
use crate::ledger::kind::KindDef;
use crate::ledger::{Actor, Hash, Subject, Timestamp};
use crate::sequencer::{AppendError, AppendRequest, Receipt, SequencerHandle};
use crate::store::{StateWrite, Store, StoreError, UserRow};
use crate::telemetry::Metrics;

/// Why an identity operation was refused. Nothing was written in any case
/// except where a variant says so (failed passwords are counted).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The request is malformed or breaks a rule; says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Credentials missing or wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed (authority, separation of duties, sequence).
    #[error("{0}")]
    Forbidden(String),
    /// The account is locked.
    #[error("{0}")]
    Locked(String),
    /// The password must be changed before anything else.
    #[error("{0}")]
    PasswordChangeRequired(String),
    /// No such user, token, entry or certificate.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The ledger refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, IdentityError>;

fn invalid(text: impl Into<String>) -> IdentityError {
    IdentityError::Invalid(text.into())
}

/// The wording of every failed login: it never says which part was wrong.
const LOGIN_REFUSED: &str = "the user ID or password is wrong";

/// Why the identity settings cannot start the service.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    /// `identity.display_utc_offset` is malformed.
    #[error("{0}")]
    Offset(signature::OffsetError),
    /// `identity.argon2_*` is out of Argon2's range.
    #[error("identity.argon2_* parameters: {0}")]
    Argon2(argon2::Error),
    /// `identity.password_min_score` is above the estimator's scale.
    #[error(
        "identity.password_min_score is {0}; it must be 0 to 4 (3 is the default and the recommended minimum)"
    )]
    PasswordScore(u8),
}

/// The identity service.
#[derive(Clone)]
pub struct Identity {
    store: Store,
    sequencer: SequencerHandle,
    config: IdentityConfig,
    cost: Cost,
    offset: FixedOffset,
    metrics: Metrics,
    ca: Option<Arc<Ca>>,
    changes: Arc<tokio::sync::Mutex<()>>,
    http: reqwest::Client,
    clock: Clock,
    /// The hash checked when there is no attempt to evaluate (unknown user,
    /// locked, no attempt left), so every answer costs one Argon2 check.
    decoy: Arc<tokio::sync::OnceCell<String>>,
    /// Signs what goes to the credential channel (SIGNATURES.md §4.2).
    credential_secret: Option<crate::webhook::Secret>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    Timestamp::from_datetime(at).to_string()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    Timestamp::parse(text).ok().map(|t| t.datetime())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "{field} must be 1 to {max} printable characters"
        )));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<()> {
    check_text("email", email, 254)?;
    match email.split_once('@') {
        Some((a, b)) if !a.is_empty() && b.contains('.') && !email.contains(' ') => Ok(()),
        _ => Err(invalid(format!(
            "email `{email}` is not an address like name@example.com"
        ))),
    }
}

fn check_roles(roles: &[String]) -> Result<()> {
    if roles.is_empty() {
        return Err(invalid(
            "roles must name at least one role; to end a person's access, deactivate the account",
        ));
    }
    for r in roles {
        match Role::parse(r) {
            Some(role) if role.is_for_people() => {}
            _ => {
                return Err(invalid(format!(
                    "role `{r}` is not a role people hold; use: {}",
                    super::roles::people_roles().join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(invalid(
            "reason is required for every administrative change (Annex 11 §9): say why",
        ));
    }
    Ok(())
}

/// Whether the user must change the password before anything else: an
/// administrator set it, or it expired (§11.300(b)).
fn must_change_password(user: &UserRow, at: DateTime<Utc>) -> bool {
    user.must_change_password || parse_time(&user.password_expires_at).is_none_or(|t| t <= at)
}

fn roles_of(user: &UserRow) -> Vec<Role> {
    user.roles.iter().filter_map(|r| Role::parse(r)).collect()
}

impl Identity {
    /// The service over `store`, appending through `sequencer`.
    ///
    /// # Errors
    /// If the configured display offset or Argon2 cost is malformed.
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        config: IdentityConfig,
        metrics: Metrics,
        ca: Option<Ca>,
        clock: Clock,
    ) -> std::result::Result<Identity, IdentityConfigError> {
        let offset = signature::parse_offset(&config.display_utc_offset)
            .map_err(IdentityConfigError::Offset)?;
        argon2::Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            1,
            Some(32),
        )
        .map_err(IdentityConfigError::Argon2)?;
        if config.password_min_score > super::password::SCORE_MAX {
            return Err(IdentityConfigError::PasswordScore(
                config.password_min_score,
            ));
        }
        Ok(Identity {
            cost: Cost {
                memory_kib: config.argon2_memory_kib,
                iterations: config.argon2_iterations,
            },
            store,
            sequencer,
            config,
            offset,
            metrics,
            ca: ca.map(Arc::new),
            changes: Arc::new(tokio::sync::Mutex::new(())),
            decoy: Arc::new(tokio::sync::OnceCell::new()),
            credential_secret: None,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("a plain HTTP client builds"),
            clock,
        })
    }

    /// The same service, signing what it sends to the credential channel
    /// with `secret` (read from the data directory by the composition root).
    #[must_use]
    pub fn with_credential_secret(mut self, secret: Option<crate::webhook::Secret>) -> Identity {
        self.credential_secret = secret;
        self
    }

    /// The configured password rules.
    fn password_policy(&self) -> super::password::Policy {
        super::password::Policy {
            min_chars: self.config.password_min_chars,
            min_score: self.config.password_min_score,
        }
    }

    /// Now, on the service's clock.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// The Argon2id cost used for new hashes.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    #[allow(clippy::too_many_arguments)] // one call shape for every identity entry
    async fn append(
        &self,
        kind: &'static KindDef,
        actor: &Actor,
        subject: &str,
        parents: Vec<Hash>,
        reason: Option<&str>,
        payload: Value,
        effects: Vec<StateWrite>,
    ) -> Result<Receipt> {
        let Value::Object(payload) = payload else {
            unreachable!("payloads are built as objects")
        };
        let request = AppendRequest {
            kind,
            actor: actor.clone(),
            subject: Subject::parse(subject).map_err(|e| invalid(e.to_string()))?,
            correlation_id: None,
            idempotency_key: None,
            parents,
            reason: reason.map(str::to_owned),
            payload,
            effects,
            parent_refs: vec![],
        };
        Ok(self.sequencer.append(request).await?)
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f)
            .await
            .expect("password work does not panic")
    }

    /// The stored user `user_id`.
    ///
    /// # Errors
    /// Not found, or a database error.
    async fn existing(&self, user_id: &UserId) -> Result<UserRow> {
        self.store
            .user(user_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no user `{user_id}`")))
    }
}
