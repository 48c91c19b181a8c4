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

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::ca::{self, Ca};
use super::password::{self, Cost};
use super::roles::{Meaning, Permission, Role, SigningPolicy};
use super::{IssuedToken, issue_credential, parse_credential, secret_matches};
use crate::config::IdentityConfig;
use crate::identity::signature::{self, Manifestation};
use crate::ledger::{Actor, Hash, Subject, Timestamp, kind};
use crate::sequencer::{AppendError, AppendRequest, Receipt, SequencerHandle};
use crate::store::{SessionRow, StateWrite, Store, StoreError, TokenRow, UserRow};
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

/// Scopes of an API token: which permissions (of the `integration` role)
/// and which entry kinds (`*`, `qms.*` or an exact kind) it may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenScopes {
    /// Kind patterns for `POST /v1/entries`.
    pub kinds: Vec<String>,
    /// Permission names.
    pub permissions: Vec<String>,
}

impl Default for TokenScopes {
    fn default() -> Self {
        TokenScopes {
            kinds: vec!["*".into()],
            permissions: Role::Integration
                .permissions()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        }
    }
}

impl TokenScopes {
    /// Checks the scopes name known permissions of the integration role and
    /// well-formed kind patterns.
    ///
    /// # Errors
    /// What is wrong.
    pub fn check(&self) -> Result<()> {
        if self.permissions.is_empty() {
            return Err(invalid(
                "scopes.permissions is empty; a token needs at least one of entries:append, entries:read",
            ));
        }
        for p in &self.permissions {
            match Permission::parse(p) {
                Some(perm) if Role::Integration.permissions().contains(&perm) => {}
                _ => {
                    return Err(invalid(format!(
                        "scope `{p}` is not available to tokens; use entries:append or entries:read (people sign and administer with their own accounts)"
                    )));
                }
            }
        }
        if self.kinds.is_empty() {
            return Err(invalid(
                "scopes.kinds is empty; use [\"*\"] for every kind or patterns like \"qms.*\"",
            ));
        }
        for k in &self.kinds {
            let stem = k.strip_suffix(".*").unwrap_or(k);
            if k != "*"
                && !stem.split('.').all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                })
            {
                return Err(invalid(format!(
                    "kind scope `{k}` must be `*`, `prefix.*` or a kind name"
                )));
            }
        }
        Ok(())
    }

    /// Whether the token may append entries of `kind`.
    pub fn allows_kind(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| {
            k == "*"
                || k == kind
                || k.strip_suffix('*')
                    .is_some_and(|prefix| kind.starts_with(prefix))
        })
    }

    /// The permissions granted.
    pub fn permissions(&self) -> Vec<Permission> {
        self.permissions
            .iter()
            .filter_map(|p| Permission::parse(p))
            .collect()
    }
}

/// A new user, as an administrator enters it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// User ID, `[a-z0-9][a-z0-9._-]{0,63}`; never reused.
    pub user_id: String,
    /// Legal printed name, as it will appear on signatures.
    pub printed_name: String,
    /// Email.
    pub email: String,
    /// Roles people hold.
    pub roles: Vec<String>,
    /// Who checked the person's identity (default: the administrator).
    pub identity_verified_by: Option<String>,
    /// How the identity was checked (§11.100(b)).
    pub identity_verification_method: String,
    /// Initial password, to be changed at first login.
    pub initial_password: String,
}

/// A change to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// New printed name.
    pub printed_name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New roles (the whole set).
    pub roles: Option<Vec<String>>,
    /// `active` (unlock), `locked` or `deactivated` (final).
    pub status: Option<String>,
}

/// A user as the API shows it (no secrets).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// User ID.
    pub user_id: String,
    /// Printed name.
    pub printed_name: String,
    /// Email.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Status.
    pub status: String,
    /// Password expiry.
    pub password_expires_at: String,
    /// Whether the next login must change the password.
    pub must_change_password: bool,
    /// Current signing certificate.
    pub certificate_sha256: Option<String>,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> UserView {
        UserView {
            user_id: u.user_id.clone(),
            printed_name: u.printed_name.clone(),
            email: u.email.clone(),
            roles: u.roles.clone(),
            status: u.status.clone(),
            password_expires_at: u.password_expires_at.clone(),
            must_change_password: u.must_change_password,
            certificate_sha256: u.certificate_sha256.clone(),
        }
    }
}

/// An authenticated user session.
#[derive(Debug, Clone)]
pub struct SessionCaller {
    /// The user.
    pub user: UserRow,
    /// The session.
    pub session: SessionRow,
    /// Roles parsed.
    pub roles: Vec<Role>,
    /// Whether the password must be changed first.
    pub must_change_password: bool,
}

/// What a re-authentication is for ([`Identity::reauthenticate`]).
#[derive(Debug, Clone, Copy)]
pub enum Reauth<'a> {
    /// A signing with this meaning follows.
    Sign(&'a str),
    /// An action that is not a signing (e.g. a dead-letter replay), named
    /// in the refusal entry if the password is wrong.
    Act(&'a str),
}

/// An authenticated API token.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    /// The token row.
    pub token: TokenRow,
    /// Its scopes.
    pub scopes: TokenScopes,
}

/// What a successful login returns.
#[derive(Debug)]
pub struct Login {
    /// The session credential (shown once).
    pub session: IssuedToken,
    /// Whether the password must be changed before anything else.
    pub must_change_password: bool,
    /// Seconds of inactivity that end the session.
    pub idle_seconds: u64,
}

/// What a signing request carries besides the session.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Hash of the entry to sign (lowercase hex).
    pub target: String,
    /// Meaning from the controlled vocabulary.
    pub meaning: String,
    /// The user ID: required at the first signing of a session (§11.200(a)(1)).
    pub user_id: Option<String>,
    /// The password: required at every signing.
    pub password: String,
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
}

fn now() -> DateTime<Utc> {
    Timestamp::now().datetime()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    Timestamp::from_datetime(at).to_string()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    Timestamp::parse(text).ok().map(|t| t.datetime())
}

fn check_user_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "user_id `{id}` must be 1 to 64 of a-z 0-9 . _ - starting with a letter or digit"
        )))
    }
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
    /// If the configured display offset is malformed.
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        config: IdentityConfig,
        metrics: Metrics,
        ca: Option<Ca>,
    ) -> std::result::Result<Identity, String> {
        let offset = signature::parse_offset(&config.display_utc_offset)?;
        argon2::Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            1,
            Some(32),
        )
        .map_err(|e| format!("identity.argon2_* parameters: {e}"))?;
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
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("a plain HTTP client builds"),
        })
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
        kind_name: &str,
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
            kind: kind::lookup(kind_name).expect("identity kinds are registered"),
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

    // -----------------------------------------------------------------
    // Policy

    /// The signing policy in force (the default until one is recorded).
    ///
    /// # Errors
    /// A database error or a stored policy that does not parse.
    pub async fn policy(&self) -> Result<SigningPolicy> {
        match self.store.signing_policy().await? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                IdentityError::Store(StoreError::Corrupt(format!("signing policy: {e}")))
            }),
            None => Ok(SigningPolicy::default()),
        }
    }

    /// Records a new signing policy (or the first one, at `init`).
    ///
    /// # Errors
    /// An invalid policy, a missing reason, or a ledger error.
    pub async fn set_policy(
        &self,
        by: &Actor,
        policy: SigningPolicy,
        reason: &str,
    ) -> Result<Receipt> {
        check_reason(reason)?;
        policy.check().map_err(IdentityError::Invalid)?;
        let _guard = self.changes.lock().await;
        let old = self.store.signing_policy().await?;
        let old_value: Value = match &old {
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let new_text = serde_json::to_string(&policy).expect("serialisable");
        if old.as_deref() == Some(new_text.as_str()) {
            return Err(IdentityError::Conflict(
                "the signing policy is already this one".into(),
            ));
        }
        self.append(
            "admin.signing_policy.changed",
            by,
            "config:signing-policy",
            vec![],
            Some(reason),
            json!({"old": old_value, "new": policy}),
            vec![StateWrite::SetPolicy { policy: new_text }],
        )
        .await
    }

    // -----------------------------------------------------------------
    // Users

    /// Creates a user with an administrator-set password (changed at first login).
    ///
    /// # Errors
    /// Invalid fields, a taken user ID (never reused), or a ledger error.
    pub async fn create_user(&self, by: &Actor, new: NewUser, reason: &str) -> Result<UserView> {
        check_reason(reason)?;
        check_user_id(&new.user_id)?;
        check_text("printed_name", &new.printed_name, 128)?;
        check_email(&new.email)?;
        check_roles(&new.roles)?;
        check_text(
            "identity_verification_method",
            &new.identity_verification_method,
            256,
        )?;
        let verified_by = new
            .identity_verified_by
            .clone()
            .unwrap_or_else(|| by.to_string());
        check_text("identity_verified_by", &verified_by, 128)?;
        password::check_policy(
            &new.initial_password,
            &new.user_id,
            self.config.password_min_chars,
            &[],
        )
        .map_err(IdentityError::Invalid)?;
        let cost = self.cost;
        let initial = new.initial_password.clone();
        let hash = Self::blocking(move || password::hash(&initial, cost)).await;
        let _guard = self.changes.lock().await;
        if self.store.user(&new.user_id).await?.is_some() {
            return Err(IdentityError::Conflict(format!(
                "user ID `{}` is taken (user IDs are never reused or reassigned, even after deactivation); choose another",
                new.user_id
            )));
        }
        let mut roles = new.roles.clone();
        roles.sort();
        roles.dedup();
        // An administrator-set password expires at once: the first login must change it.
        let expires = rfc3339(now());
        self.append(
            "admin.user.created",
            by,
            &format!("user:{}", new.user_id),
            vec![],
            Some(reason),
            json!({"user_id": new.user_id, "printed_name": new.printed_name, "email": new.email,
                   "roles": roles, "identity_verified_by": verified_by,
                   "identity_verification_method": new.identity_verification_method}),
            vec![StateWrite::CreateUser {
                user_id: new.user_id.clone(),
                printed_name: new.printed_name.clone(),
                email: new.email.clone(),
                roles: serde_json::to_string(&roles).expect("serialisable"),
                password_hash: hash,
                password_expires_at: expires,
            }],
        )
        .await?;
        self.user_view(&new.user_id).await
    }

    /// One user.
    ///
    /// # Errors
    /// Not found, or a database error.
    pub async fn user_view(&self, user_id: &str) -> Result<UserView> {
        self.store
            .user(user_id)
            .await?
            .map(|u| UserView::from(&u))
            .ok_or_else(|| IdentityError::NotFound(format!("no user `{user_id}`")))
    }

    /// Every user.
    ///
    /// # Errors
    /// A database error.
    pub async fn users(&self) -> Result<Vec<UserView>> {
        Ok(self
            .store
            .users()
            .await?
            .iter()
            .map(UserView::from)
            .collect())
    }

    /// Changes a user's name, email, roles or status.
    ///
    /// # Errors
    /// Invalid values, separation of duties, a deactivated user, or a ledger error.
    pub async fn change_user(
        &self,
        by: &Actor,
        user_id: &str,
        change: UserChange,
        reason: &str,
    ) -> Result<UserView> {
        check_reason(reason)?;
        if let Some(n) = &change.printed_name {
            check_text("printed_name", n, 128)?;
        }
        if let Some(e) = &change.email {
            check_email(e)?;
        }
        if let Some(r) = &change.roles {
            check_roles(r)?;
        }
        let policy = self.policy().await?;
        let _guard = self.changes.lock().await;
        let user = self
            .store
            .user(user_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no user `{user_id}`")))?;
        if user.status == "deactivated" {
            return Err(IdentityError::Conflict(format!(
                "user `{user_id}` is deactivated; deactivation is final and the ID stays taken"
            )));
        }
        let mut changes = Map::new();
        let mut next = user.clone();
        if let Some(n) = change.printed_name.filter(|n| *n != user.printed_name) {
            changes.insert(
                "printed_name".into(),
                json!({"old": user.printed_name, "new": n}),
            );
            next.printed_name = n;
        }
        if let Some(e) = change.email.filter(|e| *e != user.email) {
            changes.insert("email".into(), json!({"old": user.email, "new": e}));
            next.email = e;
        }
        if let Some(mut r) = change.roles {
            r.sort();
            r.dedup();
            if r != user.roles {
                let signing = policy.signing_roles();
                let added_signing: Vec<&String> = r
                    .iter()
                    .filter(|x| !user.roles.contains(x) && signing.contains(x))
                    .collect();
                if policy.rules.no_self_grant_of_signing_roles
                    && by.as_str() == format!("user:{user_id}")
                    && !added_signing.is_empty()
                {
                    return Err(IdentityError::Forbidden(format!(
                        "separation of duties: you cannot grant yourself the signing role(s) {added_signing:?}; another administrator must"
                    )));
                }
                changes.insert("roles".into(), json!({"old": user.roles, "new": r}));
                next.roles = r;
            }
        }
        let mut effects = Vec::new();
        let mut extra = Map::new();
        if let Some(s) = change.status.filter(|s| *s != user.status) {
            match (user.status.as_str(), s.as_str()) {
                (_, "deactivated") | ("locked", "active") | ("active", "locked") => {}
                _ => {
                    return Err(invalid(format!(
                        "status `{s}` is not a valid change from `{}`; use active, locked or deactivated",
                        user.status
                    )));
                }
            }
            if s == "deactivated"
                && let Some(sha) = &user.certificate_sha256
            {
                extra.insert(
                    "certificate_revoked".into(),
                    json!({"certificate_sha256": sha, "cause": "deactivated"}),
                );
                effects.push(StateWrite::RevokeCertificate {
                    sha256: sha.clone(),
                    cause: "deactivated".into(),
                });
            }
            changes.insert("status".into(), json!({"old": user.status, "new": s}));
            next.status = s;
        }
        if changes.is_empty() {
            return Err(invalid(
                "nothing to change: every given value equals the current one",
            ));
        }
        effects.insert(
            0,
            StateWrite::UpdateUser {
                user_id: user_id.to_owned(),
                printed_name: next.printed_name.clone(),
                email: next.email.clone(),
                roles: serde_json::to_string(&next.roles).expect("serialisable"),
                status: next.status.clone(),
            },
        );
        let mut payload = json!({"user_id": user_id, "changes": changes});
        payload.as_object_mut().expect("object").extend(extra);
        self.append(
            "admin.user.changed",
            by,
            &format!("user:{user_id}"),
            vec![],
            Some(reason),
            payload,
            effects,
        )
        .await?;
        if next.status != "active" {
            self.store
                .close_sessions_of(user_id, &rfc3339(now()))
                .await?;
        }
        self.user_view(user_id).await
    }

    /// An administrator sets a new password (loss management, §11.300(c)):
    /// the old signing key cannot be unwrapped any more, so the certificate
    /// is revoked and a new key is made at the user's next password change.
    ///
    /// # Errors
    /// Policy, a missing reason, or a ledger error.
    pub async fn reset_password(
        &self,
        by: &Actor,
        user_id: &str,
        new_password: &str,
        reason: &str,
    ) -> Result<UserView> {
        check_reason(reason)?;
        let user = self.existing(user_id).await?;
        if user.status == "deactivated" {
            return Err(IdentityError::Conflict(format!(
                "user `{user_id}` is deactivated"
            )));
        }
        let recent = self
            .store
            .password_history(user_id, self.config.password_history_count)
            .await?;
        let (pw, id, min, cost) = (
            new_password.to_owned(),
            user_id.to_owned(),
            self.config.password_min_chars,
            self.cost,
        );
        let hash = Self::blocking(move || {
            password::check_policy(&pw, &id, min, &recent).map(|()| password::hash(&pw, cost))
        })
        .await
        .map_err(IdentityError::Invalid)?;
        let _guard = self.changes.lock().await;
        let mut effects = vec![StateWrite::SetPassword {
            user_id: user_id.to_owned(),
            password_hash: hash,
            expires_at: rfc3339(now()),
            must_change: true,
            wrapped_key: None,
            public_key: None,
        }];
        let mut payload = json!({"user_id": user_id, "set_by": "administrator", "must_change": true, "expires_at": rfc3339(now())});
        if let Some(sha) = &user.certificate_sha256 {
            effects.push(StateWrite::RevokeCertificate {
                sha256: sha.clone(),
                cause: "password-reset".into(),
            });
            payload["certificate_revoked"] =
                json!({"certificate_sha256": sha, "cause": "password-reset"});
        }
        self.append(
            "admin.user.password_set",
            by,
            &format!("user:{user_id}"),
            vec![],
            Some(reason),
            payload,
            effects,
        )
        .await?;
        self.store
            .close_sessions_of(user_id, &rfc3339(now()))
            .await?;
        self.user_view(user_id).await
    }

    async fn existing(&self, user_id: &str) -> Result<UserRow> {
        self.store
            .user(user_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no user `{user_id}`")))
    }

    /// The user changes their own password. The signing key is re-wrapped
    /// under the new password, or made (and certified by Trailmark's CA, if
    /// it runs one) when the user has none. Returns a CSR for an enterprise
    /// CA when a new key was made and Trailmark runs no CA.
    ///
    /// # Errors
    /// Wrong current password (counted), policy, or a ledger error.
    pub async fn change_password(
        &self,
        caller: &SessionCaller,
        current: &str,
        new_password: &str,
    ) -> Result<Option<String>> {
        let user = self.existing(&caller.user.user_id).await?;
        let ok = {
            let (pw, h) = (current.to_owned(), user.password_hash.clone());
            Self::blocking(move || password::matches(&pw, &h)).await
        };
        if !ok {
            self.password_failed(&user).await?;
            return Err(IdentityError::Unauthenticated(
                "the current password is wrong".into(),
            ));
        }
        let recent = self
            .store
            .password_history(&user.user_id, self.config.password_history_count)
            .await?;
        let (old_pw, pw, id, min, cost) = (
            current.to_owned(),
            new_password.to_owned(),
            user.user_id.clone(),
            self.config.password_min_chars,
            self.cost,
        );
        let wrapped_old = user.wrapped_key.clone();
        let (hash, seed, fresh) = Self::blocking(move || -> std::result::Result<_, String> {
            password::check_policy(&pw, &id, min, &recent)?;
            let (seed, fresh) = match wrapped_old
                .as_deref()
                .and_then(|w| password::unwrap(w, &old_pw, &id))
            {
                Some(seed) => (seed, false),
                None => (password::new_seed(), true),
            };
            Ok((password::hash(&pw, cost), seed, fresh))
        })
        .await
        .map_err(IdentityError::Invalid)?;
        let (pw, id) = (new_password.to_owned(), user.user_id.clone());
        let wrapped = Self::blocking(move || password::wrap(&seed, &pw, &id, cost)).await;
        let public = signature::public_key(&seed);
        let expires =
            rfc3339(now() + ChronoDuration::days(i64::from(self.config.password_max_age_days)));
        let cause = if user.must_change_password {
            "first login after an administrator set the password"
        } else if parse_time(&user.password_expires_at).is_some_and(|t| t <= now()) {
            "the password had expired"
        } else {
            "the user changed their password"
        };
        let _guard = self.changes.lock().await;
        let actor = super::user_actor(&user.user_id).map_err(|e| invalid(e.to_string()))?;
        self.append(
            "admin.user.password_set",
            &actor,
            &format!("user:{}", user.user_id),
            vec![],
            Some(cause),
            json!({"user_id": user.user_id, "set_by": "self", "must_change": false, "expires_at": expires, "new_signing_key": fresh}),
            vec![StateWrite::SetPassword {
                user_id: user.user_id.clone(),
                password_hash: hash,
                expires_at: expires.clone(),
                must_change: false,
                wrapped_key: Some(wrapped),
                public_key: Some(public.to_vec()),
            }],
        )
        .await?;
        drop(_guard);
        if !fresh {
            return Ok(None);
        }
        match &self.ca {
            Some(_) => {
                self.issue_certificate(
                    &Actor::system(),
                    &user.user_id,
                    "a signing key was created at the user's password change",
                )
                .await?;
                Ok(None)
            }
            None => ca::user_csr_pem(&user.user_id, &user.printed_name, &seed)
                .map(Some)
                .map_err(|e| invalid(e.to_string())),
        }
    }

    // -----------------------------------------------------------------
    // Sessions and passwords

    async fn password_failed(&self, user: &UserRow) -> Result<()> {
        self.metrics.password_failures.inc();
        let count = self.store.login_failed(&user.user_id).await?;
        tracing::warn!(user_id = %user.user_id, consecutive_failures = count, "wrong password");
        if count >= self.config.lockout_failures && user.status == "active" {
            self.lock_account(user, count).await?;
        }
        Ok(())
    }

    async fn lock_account(&self, user: &UserRow, count: u64) -> Result<()> {
        let _guard = self.changes.lock().await;
        let current = self.existing(&user.user_id).await?;
        if current.status != "active" {
            return Ok(());
        }
        let receipt = self
            .append(
                "security.account.locked",
                &Actor::system(),
                &format!("user:{}", user.user_id),
                vec![],
                None,
                json!({"user_id": user.user_id, "consecutive_failures": count}),
                vec![StateWrite::UpdateUser {
                    user_id: current.user_id.clone(),
                    printed_name: current.printed_name.clone(),
                    email: current.email.clone(),
                    roles: serde_json::to_string(&current.roles).expect("serialisable"),
                    status: "locked".into(),
                }],
            )
            .await?;
        self.store
            .close_sessions_of(&user.user_id, &rfc3339(now()))
            .await?;
        // The alert of §11.300(d): at once, on three channels.
        self.metrics.accounts_locked.inc();
        tracing::warn!(user_id = %user.user_id, consecutive_failures = count, seq = receipt.seq,
            "SECURITY ALERT: account locked after consecutive wrong passwords");
        if let Some(url) = self.config.alert_webhook_url.clone() {
            let body = json!({"alert": "account-locked", "user_id": user.user_id, "consecutive_failures": count,
                              "seq": receipt.seq, "recorded_at": receipt.recorded_at});
            let client = self.http.clone();
            tokio::spawn(async move {
                if let Err(e) = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                {
                    tracing::error!(error = %e, "the security alert webhook failed; the lock is in the ledger and the metric");
                }
            });
        }
        Ok(())
    }

    /// Checks user ID and password and opens a session.
    ///
    /// # Errors
    /// Wrong credentials (counted; the 5th locks), a locked or deactivated account.
    pub async fn login(&self, user_id: &str, password_text: &str) -> Result<Login> {
        if password_text.len() > password::PASSWORD_MAX_BYTES {
            return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into()));
        }
        let user = self.store.user(user_id).await?;
        let Some(user) = user else {
            // Same work as a real check, so timing does not reveal which IDs exist.
            let (pw, cost) = (password_text.to_owned(), self.cost);
            Self::blocking(move || {
                password::matches(&pw, &password::hash("not-a-user-password", cost))
            })
            .await;
            tracing::warn!(user_id, "login refused: unknown user ID");
            self.metrics.password_failures.inc();
            return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into()));
        };
        match user.status.as_str() {
            "locked" => {
                return Err(IdentityError::Locked(format!(
                    "account `{user_id}` is locked after repeated wrong passwords; an administrator must unlock it"
                )));
            }
            "deactivated" => return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into())),
            _ => {}
        }
        let ok = {
            let (pw, h) = (password_text.to_owned(), user.password_hash.clone());
            Self::blocking(move || password::matches(&pw, &h)).await
        };
        if !ok {
            self.password_failed(&user).await?;
            return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into()));
        }
        self.store.login_succeeded(user_id).await?;
        let session = issue_credential("tms");
        let at = rfc3339(now());
        self.store
            .open_session(&session.id, &session.secret_hash, user_id, &at)
            .await?;
        let actor = super::user_actor(user_id).map_err(|e| invalid(e.to_string()))?;
        self.append(
            "security.session.opened",
            &actor,
            &format!("user:{user_id}"),
            vec![],
            None,
            json!({"user_id": user_id, "session_id": session.id}),
            vec![],
        )
        .await?;
        let must_change = must_change_password(&user, now());
        Ok(Login {
            session,
            must_change_password: must_change,
            idle_seconds: self.config.session_idle_seconds,
        })
    }

    /// Authenticates a session credential (`tms_...`): the session is open,
    /// active within the inactivity timeout, and its user active.
    ///
    /// # Errors
    /// Unauthenticated with what to do.
    pub async fn authenticate_session(&self, credential: &str) -> Result<SessionCaller> {
        let refused = |why: &str| {
            IdentityError::Unauthenticated(format!("{why}; log in again with POST /v1/sessions"))
        };
        let (id, presented) = parse_credential(credential, "tms")
            .ok_or_else(|| refused("the session credential is malformed"))?;
        let session = self
            .store
            .session(id)
            .await?
            .ok_or_else(|| refused("the session is unknown"))?;
        if !secret_matches(&presented, &session.secret_hash) {
            tracing::warn!(
                session_id = id,
                "refused a session credential with a wrong secret"
            );
            return Err(refused("the session is unknown"));
        }
        if session.closed_at.is_some() {
            return Err(refused("the session has ended"));
        }
        let idle = ChronoDuration::seconds(
            i64::try_from(self.config.session_idle_seconds).unwrap_or(i64::MAX / 2_000),
        );
        let last = parse_time(&session.last_seen_at).unwrap_or_default();
        let at = now();
        if at - last > idle {
            if self.store.close_session(id, &rfc3339(at)).await? {
                let actor = Actor::system();
                self.append(
                    "security.session.closed",
                    &actor,
                    &format!("user:{}", session.user_id),
                    vec![],
                    None,
                    json!({"user_id": session.user_id, "session_id": id, "cause": "inactivity"}),
                    vec![],
                )
                .await?;
            }
            return Err(refused(&format!(
                "the session ended after {} seconds of inactivity",
                self.config.session_idle_seconds
            )));
        }
        let user = self.existing(&session.user_id).await?;
        if user.status != "active" {
            return Err(refused(&format!("the account is {}", user.status)));
        }
        self.store.touch_session(id, &rfc3339(at)).await?;
        let must_change = must_change_password(&user, at);
        Ok(SessionCaller {
            roles: roles_of(&user),
            must_change_password: must_change,
            user,
            session,
        })
    }

    /// Ends a session at logout.
    ///
    /// # Errors
    /// A database or ledger error.
    pub async fn logout(&self, caller: &SessionCaller) -> Result<()> {
        if self
            .store
            .close_session(&caller.session.id, &rfc3339(now()))
            .await?
        {
            let actor =
                super::user_actor(&caller.user.user_id).map_err(|e| invalid(e.to_string()))?;
            self.append("security.session.closed", &actor, &format!("user:{}", caller.user.user_id), vec![], None,
                json!({"user_id": caller.user.user_id, "session_id": caller.session.id, "cause": "logout"}), vec![]).await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // API tokens

    /// Issues an API token; the secret is only in the returned value.
    ///
    /// # Errors
    /// Invalid principal, scopes, expiry or certificate; a ledger error.
    pub async fn issue_token(
        &self,
        by: &Actor,
        principal: &str,
        scopes: TokenScopes,
        expires_in_days: Option<u32>,
        client_certificate_pem: Option<&str>,
        reason: &str,
    ) -> Result<(IssuedToken, String)> {
        check_reason(reason)?;
        scopes.check()?;
        let principal = super::principal_actor(principal).map_err(|e| invalid(e.to_string()))?;
        if !principal.as_str().starts_with("service:") {
            return Err(invalid(
                "tokens are for service principals (e.g. `qms`); people log in with POST /v1/sessions",
            ));
        }
        let days = expires_in_days.unwrap_or(self.config.token_default_days);
        if days == 0 || days > 730 {
            return Err(invalid("expires_in_days must be 1 to 730"));
        }
        let pin = match client_certificate_pem {
            Some(pem) => {
                let der = ca::pem_to_der(pem)
                    .map_err(|e| invalid(e.to_string()))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| invalid("client_certificate_pem holds no certificate"))?;
                x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| invalid(format!("client certificate: {e}")))?;
                Some(Hash::sha256(&[&der]).to_string())
            }
            None => None,
        };
        let expires_at = rfc3339(now() + ChronoDuration::days(i64::from(days)));
        let issued = super::issue_token();
        let _guard = self.changes.lock().await;
        self.append(
            "admin.token.created",
            by,
            &format!("token:{}", issued.id),
            vec![],
            Some(reason),
            json!({"token_id": issued.id, "principal": principal.as_str(), "scopes": scopes,
                   "expires_at": expires_at, "client_certificate_sha256": pin}),
            vec![StateWrite::CreateToken {
                id: issued.id.clone(),
                principal: principal.to_string(),
                secret_hash: issued.secret_hash,
                scopes: serde_json::to_string(&scopes).expect("serialisable"),
                expires_at: expires_at.clone(),
                client_cert_sha256: pin,
            }],
        )
        .await?;
        Ok((issued, expires_at))
    }

    /// Revokes a token, at once or after `overlap_minutes` (rotation).
    ///
    /// # Errors
    /// Unknown or already revoked token; a ledger error.
    pub async fn revoke_token(
        &self,
        by: &Actor,
        token_id: &str,
        overlap_minutes: u32,
        reason: &str,
    ) -> Result<String> {
        check_reason(reason)?;
        let _guard = self.changes.lock().await;
        let row = self
            .store
            .token(token_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no token `{token_id}`")))?;
        if row.revoked_at.is_some() {
            return Err(IdentityError::Conflict(format!(
                "token `{token_id}` is already revoked"
            )));
        }
        let effective = rfc3339(now() + ChronoDuration::minutes(i64::from(overlap_minutes)));
        self.append(
            "admin.token.revoked",
            by,
            &format!("token:{token_id}"),
            vec![],
            Some(reason),
            json!({"token_id": token_id, "effective_at": effective}),
            vec![StateWrite::RevokeToken {
                id: token_id.to_owned(),
                effective_at: effective.clone(),
            }],
        )
        .await?;
        Ok(effective)
    }

    /// Rotates a token without downtime: a new token with the same principal
    /// and scopes, and the old one revoked after `overlap_minutes`.
    ///
    /// # Errors
    /// Unknown or revoked token; a ledger error.
    pub async fn rotate_token(
        &self,
        by: &Actor,
        token_id: &str,
        overlap_minutes: u32,
        reason: &str,
    ) -> Result<(IssuedToken, String, String)> {
        let row = self
            .store
            .token(token_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no token `{token_id}`")))?;
        if row.revoked_at.is_some() {
            return Err(IdentityError::Conflict(format!(
                "token `{token_id}` is revoked; issue a new one instead"
            )));
        }
        let scopes: TokenScopes = serde_json::from_str(&row.scopes).unwrap_or_default();
        let principal = row.principal.clone();
        let (issued, expires) = self
            .issue_token(
                by,
                &principal,
                scopes,
                None,
                None,
                &format!("rotation of token {token_id}: {reason}"),
            )
            .await?;
        let effective = self
            .revoke_token(
                by,
                token_id,
                overlap_minutes,
                &format!("rotated to token {}: {reason}", issued.id),
            )
            .await?;
        Ok((issued, expires, effective))
    }

    /// Checks a presented API token (with the client certificate, if the
    /// proxy forwarded one) against its stored row.
    ///
    /// # Errors
    /// Unauthenticated, saying why where that reveals nothing secret.
    pub fn check_token(
        &self,
        row: TokenRow,
        presented: &Hash,
        client_cert_der: Option<&[u8]>,
    ) -> Result<TokenCaller> {
        if !secret_matches(presented, &row.secret_hash) {
            return Err(IdentityError::Unauthenticated(
                "the API token is unknown, wrong or revoked".into(),
            ));
        }
        let at = now();
        if row
            .revoked_at
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|t| t <= at)
        {
            return Err(IdentityError::Unauthenticated(
                "the API token is unknown, wrong or revoked".into(),
            ));
        }
        if row
            .expires_at
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|t| t <= at)
        {
            return Err(IdentityError::Unauthenticated(format!(
                "the API token {} expired at {}; rotate it (`trailmark token rotate`)",
                row.id,
                row.expires_at.clone().unwrap_or_default()
            )));
        }
        if let Some(pin) = &row.client_cert_sha256 {
            let Some(der) = client_cert_der else {
                return Err(IdentityError::Unauthenticated(format!(
                    "token {} is pinned to a client certificate; connect through the TLS proxy with that certificate",
                    row.id
                )));
            };
            let presented_pin = Hash::sha256(&[der]).to_string();
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                presented_pin.as_bytes(),
                pin.as_bytes(),
            )) {
                return Err(IdentityError::Unauthenticated(format!(
                    "the client certificate is not the one token {} is pinned to",
                    row.id
                )));
            }
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| IdentityError::Unauthenticated(format!("client certificate: {e}")))?;
            if !cert.validity().is_valid() {
                return Err(IdentityError::Unauthenticated(
                    "the client certificate is outside its validity period".into(),
                ));
            }
        }
        let scopes = serde_json::from_str(&row.scopes)
            .map_err(|e| IdentityError::Store(StoreError::Corrupt(format!("token scopes: {e}"))))?;
        Ok(TokenCaller { token: row, scopes })
    }

    // -----------------------------------------------------------------
    // CAs and certificates

    /// Trusts a CA certificate for user certificates.
    ///
    /// # Errors
    /// Not a valid CA certificate, already trusted, or a ledger error.
    pub async fn trust_ca(
        &self,
        by: &Actor,
        der: &[u8],
        source: &str,
        reason: &str,
    ) -> Result<String> {
        check_reason(reason)?;
        let info = ca::check_ca_certificate(der).map_err(|e| invalid(e.to_string()))?;
        let _guard = self.changes.lock().await;
        if self.store.trusted_cas().await?.iter().any(|d| d == der) {
            return Err(IdentityError::Conflict("this CA is already trusted".into()));
        }
        self.append("admin.ca.trusted", by, &format!("ca:{}", info.fingerprint_sha256), vec![], Some(reason),
            json!({"certificate": STANDARD.encode(der), "certificate_sha256": info.fingerprint_sha256, "subject": info.subject, "source": source}),
            vec![StateWrite::TrustCa { sha256: info.fingerprint_sha256.clone(), der: der.to_vec(), subject: info.subject }]).await?;
        Ok(info.fingerprint_sha256)
    }

    /// Issues a certificate for the user's current key from Trailmark's CA.
    ///
    /// # Errors
    /// No CA, no key, or a ledger error.
    pub async fn issue_certificate(
        &self,
        by: &Actor,
        user_id: &str,
        reason: &str,
    ) -> Result<String> {
        let ca = self.ca.clone().ok_or_else(|| IdentityError::Conflict("Trailmark runs no CA here (`trailmark ca init`); import a certificate from your enterprise CA instead".into()))?;
        let user = self.existing(user_id).await?;
        let key: [u8; 32] = user.public_key.clone().and_then(|k| k.try_into().ok())
            .ok_or_else(|| IdentityError::Conflict(format!("user `{user_id}` has no signing key yet; it is made when they change their password")))?;
        let from = now() - ChronoDuration::minutes(5);
        let der = ca
            .issue_user_certificate(
                user_id,
                &user.printed_name,
                &key,
                from,
                from + ChronoDuration::days(365),
            )
            .map_err(|e| invalid(e.to_string()))?;
        self.record_certificate(by, &user, der, reason).await
    }

    /// Loads a certificate issued externally for the user's key.
    ///
    /// # Errors
    /// It does not match the user's key or does not pass the checks.
    pub async fn import_certificate(
        &self,
        by: &Actor,
        user_id: &str,
        pem: &str,
        reason: &str,
    ) -> Result<String> {
        check_reason(reason)?;
        let user = self.existing(user_id).await?;
        let der = ca::pem_to_der(pem)
            .map_err(|e| invalid(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid("the PEM holds no certificate"))?;
        self.record_certificate(by, &user, der, reason).await
    }

    async fn record_certificate(
        &self,
        by: &Actor,
        user: &UserRow,
        der: Vec<u8>,
        reason: &str,
    ) -> Result<String> {
        let cas = self.store.trusted_cas().await?;
        let info =
            ca::check_user_certificate(&der, &cas, now()).map_err(|e| invalid(e.to_string()))?;
        if user.public_key.as_deref() != Some(&info.public_key[..]) {
            return Err(invalid(format!(
                "the certificate's key is not user `{}`'s signing key; issue it from the CSR Trailmark gave at their password change",
                user.user_id
            )));
        }
        if info.printed_name.as_deref() != Some(user.printed_name.as_str()) {
            return Err(invalid(format!(
                "the certificate names CN {:?}, not the user's printed name `{}`",
                info.printed_name, user.printed_name
            )));
        }
        if info.user_id.as_deref() != Some(user.user_id.as_str()) {
            return Err(invalid(format!(
                "the certificate names UID {:?}, not `{}`",
                info.user_id, user.user_id
            )));
        }
        let _guard = self.changes.lock().await;
        let mut effects = Vec::new();
        if let Some(old) = &user.certificate_sha256 {
            self.append(
                "admin.certificate.revoked",
                by,
                &format!("user:{}", user.user_id),
                vec![],
                Some("superseded by a new certificate"),
                json!({"user_id": user.user_id, "certificate_sha256": old, "cause": "superseded"}),
                vec![StateWrite::RevokeCertificate {
                    sha256: old.clone(),
                    cause: "superseded".into(),
                }],
            )
            .await?;
        }
        effects.push(StateWrite::AddCertificate {
            sha256: info.fingerprint_sha256.clone(),
            user_id: user.user_id.clone(),
            der: der.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
        });
        self.append("admin.certificate.issued", by, &format!("user:{}", user.user_id), vec![], Some(reason),
            json!({"user_id": user.user_id, "certificate": STANDARD.encode(&der), "certificate_sha256": info.fingerprint_sha256,
                   "public_key": STANDARD.encode(info.public_key), "not_before": rfc3339(info.not_before), "not_after": rfc3339(info.not_after)}),
            effects).await?;
        Ok(info.fingerprint_sha256)
    }

    // -----------------------------------------------------------------
    // The signing ceremony (docs/SIGNATURES.md §6)

    /// Signs the entry `request.target` with `request.meaning`.
    ///
    /// # Errors
    /// Missing or wrong credentials (counted), authority, sequence, separation
    /// of duties, certificate problems; nothing is appended but a refusal entry.
    pub async fn sign(&self, caller: &SessionCaller, request: SignRequest) -> Result<Receipt> {
        let started = std::time::Instant::now();
        let user_id = caller.user.user_id.clone();
        // §11.200(a)(1): both components at the first signing of a session.
        let authentication = match (&request.user_id, caller.session.signed_once) {
            (Some(given), _) if *given != user_id => {
                return Err(IdentityError::Unauthenticated(format!(
                    "user_id `{given}` is not the user of this session"
                )));
            }
            (Some(_), _) => "user-id-and-password",
            (None, false) => {
                return Err(invalid(
                    "the first signing in a session needs both components: send user_id and password",
                ));
            }
            (None, true) => "password-in-session",
        };
        let meaning = Meaning::parse(&request.meaning).map_err(IdentityError::Invalid)?;
        let target = Hash::parse_hex(&request.target).map_err(|e| {
            invalid(format!(
                "target: {e}; send the entry's hash as 64 lowercase hex digits"
            ))
        })?;
        let user = self.existing(&user_id).await?;
        if user.status != "active" {
            return Err(IdentityError::Locked(format!(
                "account `{user_id}` is {}; it cannot sign",
                user.status
            )));
        }
        let (pw, wrapped, id) = (
            request.password.clone(),
            user.wrapped_key.clone(),
            user_id.clone(),
        );
        let hash = user.password_hash.clone();
        let (ok, seed) = Self::blocking(move || {
            if pw.len() > password::PASSWORD_MAX_BYTES || !password::matches(&pw, &hash) {
                return (false, None);
            }
            (
                true,
                wrapped
                    .as_deref()
                    .and_then(|w| password::unwrap(w, &pw, &id)),
            )
        })
        .await;
        if !ok {
            self.password_failed(&user).await?;
            self.refuse(&user_id, &request, "wrong password").await?;
            return Err(IdentityError::Unauthenticated(
                "the password is wrong; the signature was not applied".into(),
            ));
        }
        self.store.login_succeeded(&user_id).await?;
        let seed = seed.ok_or_else(|| IdentityError::Conflict("you have no signing key yet: change your password (POST /v1/account/password) to create one".into()))?;
        let cert_sha = user.certificate_sha256.clone().ok_or_else(|| {
            IdentityError::Conflict(
                "you have no valid signing certificate; ask an administrator to issue one".into(),
            )
        })?;
        let cert = self
            .store
            .certificate(&cert_sha)
            .await?
            .ok_or_else(|| IdentityError::Conflict("your certificate is missing".into()))?;
        let cas = self.store.trusted_cas().await?;
        let signed_at = now();
        match ca::check_user_certificate(&cert.der, &cas, signed_at) {
            Err(e) => {
                self.refuse(&user_id, &request, "certificate not valid")
                    .await?;
                return Err(IdentityError::Forbidden(format!(
                    "your signing certificate cannot be used: {e}"
                )));
            }
            // A key made without a CA (the CSR path) has no certificate until
            // the enterprise CA's arrives; the old one must not sign for it.
            Ok(info) if info.public_key != signature::public_key(&seed) => {
                return Err(IdentityError::Conflict("your certificate is for an earlier signing key; ask an administrator to load the certificate issued from your new key's CSR".into()));
            }
            Ok(_) => {}
        }
        let policy = self.policy().await?;
        if !policy.allows(&user.roles, meaning) {
            self.refuse(&user_id, &request, "no authority for this meaning")
                .await?;
            return Err(IdentityError::Forbidden(format!(
                "your roles {:?} may not sign `{}`; the signing policy allows {:?}",
                user.roles,
                meaning.as_str(),
                policy
                    .meanings
                    .get(meaning.as_str())
                    .map(|p| p.roles.clone())
                    .unwrap_or_default()
            )));
        }
        let seqs = self.store.seqs_of(&[target]).await?;
        let target_seq = *seqs
            .get(&target)
            .ok_or_else(|| IdentityError::NotFound(format!("no entry has hash {target}")))?;
        let target_entry = self
            .store
            .entry(target_seq)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("entry {target_seq} is missing")))?;
        if target_entry.kind == signature::KIND {
            return Err(invalid(
                "a signature entry cannot itself be signed; sign the record it is on",
            ));
        }
        let _guard = self.changes.lock().await;
        let existing: Vec<Manifestation> = self
            .store
            .signatures_on(&[target_seq])
            .await?
            .into_iter()
            .filter_map(|(_, e)| {
                let parsed = crate::ledger::entry::ParsedEntry::parse(&e.canonical).ok()?;
                serde_json::from_str::<signature::SignaturePayload>(parsed.payload.get())
                    .ok()
                    .map(|p| p.manifestation)
            })
            .collect();
        if existing
            .iter()
            .any(|m| m.user_id == user_id && m.meaning == meaning.as_str())
        {
            return Err(IdentityError::Conflict(format!(
                "you already signed entry {target_seq} as `{}`",
                meaning.as_str()
            )));
        }
        if matches!(meaning.as_str(), "reviewed" | "approved") && policy.rules.no_self_approval {
            let own = target_entry.actor == format!("user:{user_id}")
                || existing
                    .iter()
                    .any(|m| m.user_id == user_id && m.meaning == "authored");
            if own {
                drop(_guard);
                self.refuse(&user_id, &request, "separation of duties")
                    .await?;
                return Err(IdentityError::Forbidden(format!(
                    "separation of duties: you authored entry {target_seq}, so you cannot sign it `{}`",
                    meaning.as_str()
                )));
            }
        }
        if meaning.as_str() == "approved"
            && policy.rules.approval_requires_review
            && !existing
                .iter()
                .any(|m| m.meaning == "reviewed" && m.user_id != user_id)
        {
            drop(_guard);
            self.refuse(&user_id, &request, "approval before review")
                .await?;
            return Err(IdentityError::Forbidden(format!(
                "entry {target_seq} has no `reviewed` signature by another person yet; approval comes after review (§11.10(f))"
            )));
        }
        let manifestation = Manifestation {
            user_id: user_id.clone(),
            printed_name: user.printed_name.clone(),
            meaning: meaning.as_str().to_owned(),
            meaning_text: policy.text(meaning),
            signed_at: rfc3339(signed_at),
            signed_at_local: signature::local_time(signed_at, self.offset),
            certificate_sha256: cert_sha,
            authentication: authentication.to_owned(),
        };
        let payload = signature::sign(&seed, &target, manifestation);
        let actor = super::user_actor(&user_id).map_err(|e| invalid(e.to_string()))?;
        let receipt = self
            .append(
                signature::KIND,
                &actor,
                &target_entry.subject,
                vec![target],
                None,
                Value::Object(payload),
                vec![],
            )
            .await?;
        drop(_guard);
        if !caller.session.signed_once {
            self.store.session_signed(&caller.session.id).await?;
        }
        self.metrics.signatures.inc();
        self.metrics
            .signing_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// Re-authentication before a record that is appended only once it
    /// passes: the console's signed review ([`Reauth::Sign`]) and its
    /// dead-letter replay ([`Reauth::Act`]). The user active and the
    /// password right; a wrong one counts toward lockout and is recorded as
    /// a refusal (`security.signature.refused` for a signing, as in
    /// [`Identity::sign`]; `security.auth.refused` for an action). A signing
    /// needs both components at the session's first signing and the policy
    /// allowing the meaning; an action always needs both. Appends nothing
    /// on success.
    ///
    /// # Errors
    /// As the first checks of [`Identity::sign`].
    pub async fn reauthenticate(
        &self,
        caller: &SessionCaller,
        user_id: Option<&str>,
        password_text: &str,
        purpose: Reauth<'_>,
    ) -> Result<()> {
        let me = caller.user.user_id.clone();
        let both_needed = match purpose {
            Reauth::Sign(_) => !caller.session.signed_once,
            Reauth::Act(_) => true,
        };
        match (user_id, both_needed) {
            (Some(given), _) if given != me => {
                return Err(IdentityError::Unauthenticated(format!(
                    "user_id `{given}` is not the user of this session"
                )));
            }
            (None, true) => {
                return Err(invalid(match purpose {
                    Reauth::Sign(_) => {
                        "the first signing in a session needs both components: give your user ID and password"
                    }
                    Reauth::Act(_) => {
                        "this action needs both components: give your user ID and password"
                    }
                }));
            }
            _ => {}
        }
        let meaning = match purpose {
            Reauth::Sign(m) => Some(Meaning::parse(m).map_err(IdentityError::Invalid)?),
            Reauth::Act(_) => None,
        };
        let user = self.existing(&me).await?;
        if user.status != "active" {
            return Err(IdentityError::Locked(format!(
                "account `{me}` is {}; it cannot sign or act",
                user.status
            )));
        }
        let (pw, hash) = (password_text.to_owned(), user.password_hash.clone());
        let ok = Self::blocking(move || {
            pw.len() <= password::PASSWORD_MAX_BYTES && password::matches(&pw, &hash)
        })
        .await;
        if !ok {
            self.password_failed(&user).await?;
            match (purpose, meaning) {
                (Reauth::Act(action), _) => {
                    self.append(
                        "security.auth.refused",
                        &Actor::system(),
                        &format!("user:{me}"),
                        vec![],
                        None,
                        json!({"user_id": me, "cause": "wrong password at re-authentication",
                               "action": action.chars().take(128).collect::<String>()}),
                        vec![],
                    )
                    .await?;
                }
                (Reauth::Sign(_), m) => {
                    let request = SignRequest {
                        target: String::new(),
                        meaning: m.map(|m| m.as_str().to_owned()).unwrap_or_default(),
                        user_id: Some(me.clone()),
                        password: String::new(),
                    };
                    self.refuse(&me, &request, "wrong password").await?;
                }
            }
            return Err(IdentityError::Unauthenticated(
                "the password is wrong; nothing was recorded or signed".into(),
            ));
        }
        if let Some(meaning) = meaning {
            let policy = self.policy().await?;
            if !policy.allows(&user.roles, meaning) {
                let request = SignRequest {
                    target: String::new(),
                    meaning: meaning.as_str().to_owned(),
                    user_id: Some(me.clone()),
                    password: String::new(),
                };
                self.refuse(&me, &request, "no authority for this meaning")
                    .await?;
                return Err(IdentityError::Forbidden(format!(
                    "your roles may not sign `{}`",
                    meaning.as_str()
                )));
            }
        }
        Ok(())
    }

    async fn refuse(&self, user_id: &str, request: &SignRequest, cause: &str) -> Result<()> {
        let actor = Actor::system();
        self.append("security.signature.refused", &actor, &format!("user:{user_id}"), vec![], None,
            json!({"user_id": user_id, "target": request.target.chars().take(64).collect::<String>(),
                   "meaning": request.meaning.chars().take(32).collect::<String>(), "cause": cause}), vec![]).await?;
        Ok(())
    }
}
