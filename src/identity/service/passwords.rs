//! Passwords: an administrator's reset, the user's own change (which
//! re-wraps or makes the signing key), wrong passwords counted toward
//! lockout, and the lock with its alert (§11.300).

use crate::ledger::UserId;
use crate::ledger::kind;
use chrono::Duration as ChronoDuration;
use serde_json::json;

use super::handover::Recipient;
use super::{
    Identity, IdentityError, Result, SessionCaller, UserView, check_reason, invalid, parse_time,
    rfc3339,
};
use crate::identity::ca;
use crate::identity::password;
use crate::identity::signature;
use crate::ledger::Actor;
use crate::sequencer::Receipt;
use crate::store::{StateWrite, UserRow};

impl Identity {
    /// An administrator sets a new password (loss management, §11.300(c)):
    /// the old signing key cannot be unwrapped any more, so the certificate
    /// is revoked and a new key is made at the user's next password change.
    ///
    /// # Errors
    /// Policy, a missing reason, or a ledger error.
    pub async fn reset_password(
        &self,
        by: &Actor,
        user_id: &UserId,
        given: Option<&str>,
        reason: &str,
    ) -> Result<UserView> {
        check_reason(reason)?;
        let (new_password, route) =
            self.one_time_password(by, given.map(str::to_owned), user_id)?;
        let new_password = new_password.as_str();
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
        let (pw, id, policy, cost) = (
            new_password.to_owned(),
            user_id.to_owned(),
            self.password_policy(),
            self.cost,
        );
        let (name, email) = (user.printed_name.clone(), user.email.clone());
        let to = Recipient {
            user_id,
            printed_name: &user.printed_name,
            email: &user.email,
        };
        let hash = Self::blocking(move || {
            let owner = password::Owner {
                user_id: &id,
                printed_name: &name,
                email: &email,
            };
            password::check_policy(&pw, &owner, policy, &recent).map(|()| password::hash(&pw, cost))
        })
        .await
        .map_err(|e| invalid(e.to_string()))?;
        self.hand_over(route, &to, new_password, "password reset")
            .await?;
        let _guard = self.changes.lock().await;
        let mut effects = vec![StateWrite::SetPassword {
            user_id: user_id.to_owned(),
            password_hash: hash,
            expires_at: rfc3339(self.now()),
            must_change: true,
            wrapped_key: None,
            public_key: None,
        }];
        let mut payload = json!({"user_id": user_id, "set_by": "administrator", "must_change": true, "expires_at": rfc3339(self.now()),
                                 "one_time_password": route.recorded()});
        if let Some(sha) = &user.certificate_sha256 {
            effects.push(StateWrite::RevokeCertificate {
                sha256: sha.clone(),
                cause: "password-reset".into(),
            });
            payload["certificate_revoked"] =
                json!({"certificate_sha256": sha, "cause": "password-reset"});
        }
        self.append(
            &kind::ADMIN_USER_PASSWORD_SET,
            by,
            &format!("user:{user_id}"),
            vec![],
            Some(reason),
            payload,
            effects,
        )
        .await?;
        self.end_sessions(user_id, None, "password reset by an administrator")
            .await?;
        self.user_view(user_id).await
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
        match self.attempt_password(Some(&user), current, |_| ()).await? {
            Attempt::Right { .. } => {}
            Attempt::Wrong => {
                return Err(IdentityError::Unauthenticated(
                    "the current password is wrong".into(),
                ));
            }
            Attempt::Refused => {
                return Err(IdentityError::Locked(
                    "the account is locked or inactive; an administrator must unlock it".into(),
                ));
            }
        }
        let key = self.new_password_key(&user, current, new_password).await?;
        let expires = rfc3339(
            self.now() + ChronoDuration::days(i64::from(self.config.password_max_age_days)),
        );
        let cause = if user.must_change_password {
            "first login after an administrator set the password"
        } else if parse_time(&user.password_expires_at).is_some_and(|t| t <= self.now()) {
            "the password had expired"
        } else {
            "the user changed their password"
        };
        let _guard = self.changes.lock().await;
        let actor = user.user_id.actor();
        self.append(
            &kind::ADMIN_USER_PASSWORD_SET,
            &actor,
            &format!("user:{}", user.user_id),
            vec![],
            Some(cause),
            json!({"user_id": user.user_id, "set_by": "self", "must_change": false, "expires_at": expires, "new_signing_key": key.fresh}),
            vec![StateWrite::SetPassword {
                user_id: user.user_id.clone(),
                password_hash: key.hash,
                expires_at: expires.clone(),
                must_change: false,
                wrapped_key: Some(key.wrapped),
                public_key: Some(key.public.to_vec()),
            }],
        )
        .await?;
        drop(_guard);
        // Every other session ends; this one, which proved the current
        // password and chose the new one, moves to the new epoch.
        self.store
            .move_session_to_current_epoch(&caller.session.id)
            .await?;
        self.end_sessions(&user.user_id, Some(&caller.session.id), "password changed")
            .await?;
        if !key.fresh {
            return Ok(None);
        }
        self.certify_new_key(&user, &key.seed).await
    }

    /// The new password's hash (after the policy check against the recent
    /// ones) and the signing key wrapped under it: the user's key unwrapped
    /// with the current password, or a new one.
    async fn new_password_key(
        &self,
        user: &UserRow,
        current: &str,
        new_password: &str,
    ) -> Result<PasswordKey> {
        let recent = self
            .store
            .password_history(&user.user_id, self.config.password_history_count)
            .await?;
        let (old_pw, pw, id, policy, cost) = (
            current.to_owned(),
            new_password.to_owned(),
            user.user_id.clone(),
            self.password_policy(),
            self.cost,
        );
        let (name, email) = (user.printed_name.clone(), user.email.clone());
        let wrapped_old = user.wrapped_key.clone();
        let (hash, seed, fresh) = Self::blocking(move || {
            let owner = password::Owner {
                user_id: &id,
                printed_name: &name,
                email: &email,
            };
            password::check_policy(&pw, &owner, policy, &recent)?;
            let (seed, fresh) = match wrapped_old
                .as_deref()
                .and_then(|w| password::unwrap(w, &old_pw, &id))
            {
                Some(seed) => (seed, false),
                None => (password::new_seed(), true),
            };
            Ok::<_, password::PasswordRejected>((password::hash(&pw, cost), seed, fresh))
        })
        .await
        .map_err(|e| invalid(e.to_string()))?;
        let (pw, id) = (new_password.to_owned(), user.user_id.clone());
        let wrapped = Self::blocking(move || password::wrap(&seed, &pw, &id, cost)).await;
        Ok(PasswordKey {
            hash,
            public: signature::public_key(&seed),
            seed,
            fresh,
            wrapped,
        })
    }

    /// A key made at a password change is certified by Trailmark's CA, if
    /// it runs one; otherwise the user gets a CSR for the enterprise CA.
    async fn certify_new_key(&self, user: &UserRow, seed: &[u8; 32]) -> Result<Option<String>> {
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
            None => ca::user_csr_pem(&user.user_id, &user.printed_name, seed)
                .map(Some)
                .map_err(|e| invalid(e.to_string())),
        }
    }

    /// The one password check, for log-in, signing, re-authentication and
    /// password change (SIGNATURES.md §4). The attempt is counted first, in
    /// one atomic statement that refuses once the lockout threshold is
    /// reached, so concurrent guesses cannot outrun the count; only then is
    /// the password checked. A right password clears the count and yields
    /// the credential epoch a session is valid under, plus what `then`
    /// computed from the password on the same blocking task (unwrapping the
    /// signing key). A wrong one stays counted and locks the account at the
    /// threshold. Without an attempt to evaluate, the password is checked
    /// against a decoy hash, so every outcome costs the same work.
    pub(super) async fn attempt_password<T: Send + 'static>(
        &self,
        user: Option<&UserRow>,
        text: &str,
        then: impl FnOnce(&str) -> T + Send + 'static,
    ) -> Result<Attempt<T>> {
        let claimed = match user {
            Some(u) => {
                self.store
                    .claim_password_attempt(&u.user_id, self.config.lockout_failures)
                    .await?
            }
            None => None,
        };
        let hash = match (user, claimed) {
            (Some(u), Some(_)) => u.password_hash.clone(),
            _ => self.decoy_hash().await,
        };
        let pw = text.to_owned();
        let checked = Self::blocking(move || {
            let right = pw.len() <= password::PASSWORD_MAX_BYTES && password::matches(&pw, &hash);
            right.then(|| then(&pw))
        })
        .await;
        let (Some(user), Some(count)) = (user, claimed) else {
            self.metrics.password_failures.inc();
            return Ok(Attempt::Refused);
        };
        let Some(value) = checked else {
            self.metrics.password_failures.inc();
            tracing::warn!(user_id = %user.user_id, consecutive_failures = count, "wrong password");
            if count >= self.config.lockout_failures {
                self.lock_account(user, count).await?;
            }
            return Ok(Attempt::Wrong);
        };
        match self.store.password_attempt_succeeded(&user.user_id).await? {
            Some(epoch) => Ok(Attempt::Right { epoch, value }),
            None => Ok(Attempt::Refused),
        }
    }

    /// The hash of a random password nobody knows, made once.
    async fn decoy_hash(&self) -> String {
        let cost = self.cost;
        self.decoy
            .get_or_init(|| async move {
                Self::blocking(move || password::hash(&password::one_time_password("decoy"), cost))
                    .await
            })
            .await
            .clone()
    }

    async fn lock_account(&self, user: &UserRow, count: u64) -> Result<()> {
        let _guard = self.changes.lock().await;
        let current = self.existing(&user.user_id).await?;
        if current.status != "active" {
            return Ok(());
        }
        let receipt = self
            .append(
                &kind::SECURITY_ACCOUNT_LOCKED,
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
        self.end_sessions(&user.user_id, None, "account locked")
            .await?;
        // The alert of §11.300(d): at once, on three channels.
        self.metrics.accounts_locked.inc();
        tracing::warn!(user_id = %user.user_id, consecutive_failures = count, seq = %receipt.seq,
            "SECURITY ALERT: account locked after consecutive wrong passwords");
        self.send_lock_alert(&user.user_id, count, &receipt);
        Ok(())
    }

    /// The webhook channel of the lock alert, when one is configured: sent
    /// on its own task, so a slow receiver delays nothing; a failure is
    /// logged (the lock is in the ledger and the metric already).
    fn send_lock_alert(&self, user_id: &UserId, count: u64, receipt: &Receipt) {
        if let Some(url) = self.config.alert_webhook_url.clone() {
            let body = json!({"alert": "account-locked", "user_id": user_id, "consecutive_failures": count,
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
    }
}

/// What one password check found ([`Identity::attempt_password`]).
pub(super) enum Attempt<T> {
    /// Right: a session opened now is valid under `epoch`.
    Right {
        /// The user's credential epoch.
        epoch: i64,
        /// What the caller computed from the password.
        value: T,
    },
    /// Wrong: counted (and the account locked at the threshold).
    Wrong,
    /// Not evaluated: unknown user, account not active, or no attempt left.
    Refused,
}

/// What a password change writes: the new hash, and the signing key
/// wrapped under the new password (`fresh` when it was made now).
struct PasswordKey {
    hash: String,
    seed: [u8; 32],
    public: [u8; 32],
    fresh: bool,
    wrapped: String,
}
