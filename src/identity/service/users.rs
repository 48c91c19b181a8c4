//! Users: creation with an administrator-set password, the list, and
//! changes to name, email, roles and status (docs/SIGNATURES.md §3).

use crate::ledger::UserId;
use crate::ledger::kind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::handover::Recipient;
use super::{
    Identity, IdentityError, Result, check_email, check_reason, check_roles, check_text, invalid,
    rfc3339,
};
use crate::identity::password;
use crate::identity::roles::{Meaning, SigningPolicy};
use crate::ledger::Actor;
use crate::store::{StateWrite, UserRow};

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
    /// Initial password, to be changed at first login: given only by the
    /// data-directory holder (`trailmark user create`), who hands it over;
    /// absent, Trailmark makes one and sends it to the person through the
    /// credential channel (SIGNATURES.md §4.2).
    #[serde(default)]
    pub initial_password: Option<String>,
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
    pub user_id: UserId,
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

impl Identity {
    /// Creates a user with an administrator-set password (changed at first login).
    ///
    /// # Errors
    /// Invalid fields, a taken user ID (never reused), or a ledger error.
    pub async fn create_user(&self, by: &Actor, new: NewUser, reason: &str) -> Result<UserView> {
        check_reason(reason)?;
        let user_id = UserId::parse(&new.user_id).map_err(|e| invalid(e.to_string()))?;
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
        let (initial, route) =
            self.one_time_password(by, new.initial_password.clone(), &user_id)?;
        let (cost, policy) = (self.cost, self.password_policy());
        let (id, name, email, initial) = (
            user_id.clone(),
            new.printed_name.clone(),
            new.email.clone(),
            initial,
        );
        let (pw, hash) = Self::blocking(move || {
            let owner = password::Owner {
                user_id: &id,
                printed_name: &name,
                email: &email,
            };
            password::check_policy(&initial, &owner, policy, &[])
                .map(|()| (initial.clone(), password::hash(&initial, cost)))
        })
        .await
        .map_err(|e| invalid(e.to_string()))?;
        let _guard = self.changes.lock().await;
        if self.store.user(&user_id).await?.is_some() {
            return Err(IdentityError::Conflict(format!(
                "user ID `{}` is taken (user IDs are never reused or reassigned, even after deactivation); choose another",
                new.user_id
            )));
        }
        let to = Recipient {
            user_id: &user_id,
            printed_name: &new.printed_name,
            email: &new.email,
        };
        self.hand_over(route, &to, &pw, "account created").await?;
        let mut roles = new.roles.clone();
        roles.sort();
        roles.dedup();
        // An administrator-set password expires at once: the first login must change it.
        let expires = rfc3339(self.now());
        self.append(
            &kind::ADMIN_USER_CREATED,
            by,
            &format!("user:{}", new.user_id),
            vec![],
            Some(reason),
            json!({"user_id": new.user_id, "printed_name": new.printed_name, "email": new.email,
                   "roles": roles, "identity_verified_by": verified_by,
                   "identity_verification_method": new.identity_verification_method,
                   "one_time_password": route.recorded()}),
            vec![StateWrite::CreateUser {
                user_id: user_id.clone(),
                printed_name: new.printed_name.clone(),
                email: new.email.clone(),
                roles: serde_json::to_string(&roles).expect("serialisable"),
                password_hash: hash,
                password_expires_at: expires,
            }],
        )
        .await?;
        self.user_view(&user_id).await
    }

    /// One user.
    ///
    /// # Errors
    /// Not found, or a database error.
    pub async fn user_view(&self, user_id: &UserId) -> Result<UserView> {
        self.existing(user_id).await.map(|u| UserView::from(&u))
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
        user_id: &UserId,
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
        let user = self.existing(user_id).await?;
        if user.status == "deactivated" {
            return Err(IdentityError::Conflict(format!(
                "user `{user_id}` is deactivated; deactivation is final and the ID stays taken"
            )));
        }
        let mut diff = UserDiff::new(&user);
        diff.name_and_email(change.printed_name, change.email);
        if let Some(roles) = change.roles {
            diff.roles(roles, by, user_id, &policy)?;
        }
        if let Some(status) = change.status {
            diff.status(status)?;
        }
        // A person could lock everyone out; the data-directory holder (the
        // CLI) can always create an administrator again.
        if by.as_str().starts_with("user:") {
            self.protect_last(&user, &diff.next, &policy).await?;
        }
        let credentials_changed = diff.next.roles != user.roles || diff.next.status != user.status;
        let (payload, effects) = diff.into_entry(user_id)?;
        self.append(
            &kind::ADMIN_USER_CHANGED,
            by,
            &format!("user:{user_id}"),
            vec![],
            Some(reason),
            payload,
            effects,
        )
        .await?;
        if credentials_changed {
            self.end_sessions(user_id, None, "roles or status changed")
                .await?;
        }
        self.user_view(user_id).await
    }

    /// Refuses a change that would leave no active administrator, or no
    /// active person who may approve (sign `approved`): nobody could then
    /// manage accounts, or release what needs approval.
    async fn protect_last(
        &self,
        old: &UserRow,
        next: &UserRow,
        policy: &SigningPolicy,
    ) -> Result<()> {
        let others: Vec<UserRow> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|u| u.user_id != old.user_id)
            .collect();
        let admin =
            |u: &UserRow| u.status == "active" && u.roles.iter().any(|r| r == "administrator");
        let approver =
            |u: &UserRow| u.status == "active" && policy.allows(&u.roles, Meaning::APPROVED);
        let last = |ok: &dyn Fn(&UserRow) -> bool| ok(old) && !ok(next) && !others.iter().any(ok);
        for (is_last, what) in [
            (last(&admin), "administrator"),
            (last(&approver), "person who may approve (sign `approved`)"),
        ] {
            if is_last {
                return Err(IdentityError::Conflict(format!(
                    "`{}` is the last active {what}; give that authority to another person first",
                    old.user_id
                )));
            }
        }
        Ok(())
    }
}

/// A user change worked out against the stored row: the changed fields
/// with old and new values, the row as it will be, and the effects.
struct UserDiff<'a> {
    old: &'a UserRow,
    next: UserRow,
    changes: Map<String, Value>,
    /// Recorded beside `changes` (a certificate revoked with the user).
    extra: Map<String, Value>,
    /// State changes besides the user row's update.
    effects: Vec<StateWrite>,
}

impl<'a> UserDiff<'a> {
    fn new(old: &'a UserRow) -> UserDiff<'a> {
        UserDiff {
            old,
            next: old.clone(),
            changes: Map::new(),
            extra: Map::new(),
            effects: Vec::new(),
        }
    }

    /// A new printed name or email, where it differs.
    fn name_and_email(&mut self, printed_name: Option<String>, email: Option<String>) {
        let user = self.old;
        if let Some(n) = printed_name.filter(|n| *n != user.printed_name) {
            self.changes.insert(
                "printed_name".into(),
                json!({"old": user.printed_name, "new": n}),
            );
            self.next.printed_name = n;
        }
        if let Some(e) = email.filter(|e| *e != user.email) {
            self.changes
                .insert("email".into(), json!({"old": user.email, "new": e}));
            self.next.email = e;
        }
    }

    /// A new set of roles, where it differs; nobody grants themselves a
    /// signing role when the policy forbids it.
    fn roles(
        &mut self,
        mut r: Vec<String>,
        by: &Actor,
        user_id: &UserId,
        policy: &SigningPolicy,
    ) -> Result<()> {
        let user = self.old;
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
            self.changes
                .insert("roles".into(), json!({"old": user.roles, "new": r}));
            self.next.roles = r;
        }
        Ok(())
    }

    /// A new status, where it differs: unlock, lock, or deactivate (which
    /// revokes the user's certificate).
    fn status(&mut self, s: String) -> Result<()> {
        let user = self.old;
        if s == user.status {
            return Ok(());
        }
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
            self.extra.insert(
                "certificate_revoked".into(),
                json!({"certificate_sha256": sha, "cause": "deactivated"}),
            );
            self.effects.push(StateWrite::RevokeCertificate {
                sha256: sha.clone(),
                cause: "deactivated".into(),
            });
        }
        self.changes
            .insert("status".into(), json!({"old": user.status, "new": s}));
        self.next.status = s;
        Ok(())
    }

    /// The `admin.user.changed` payload and effects (the user row's update
    /// first).
    ///
    /// # Errors
    /// Nothing changes.
    fn into_entry(self, user_id: &UserId) -> Result<(Value, Vec<StateWrite>)> {
        if self.changes.is_empty() {
            return Err(invalid(
                "nothing to change: every given value equals the current one",
            ));
        }
        let mut effects = self.effects;
        effects.insert(
            0,
            StateWrite::UpdateUser {
                user_id: user_id.to_owned(),
                printed_name: self.next.printed_name.clone(),
                email: self.next.email.clone(),
                roles: serde_json::to_string(&self.next.roles).expect("serialisable"),
                status: self.next.status.clone(),
            },
        );
        let mut payload = json!({"user_id": user_id, "changes": self.changes});
        payload.as_object_mut().expect("object").extend(self.extra);
        Ok((payload, effects))
    }
}
