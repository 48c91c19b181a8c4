//! Sessions: login with user ID and password, the session check on
//! every request (inactivity ends a session), and logout (§11.300,
//! Annex 11 §12).

use crate::ledger::UserId;
use crate::ledger::kind;
use chrono::Duration as ChronoDuration;
use serde_json::json;

use super::passwords::Attempt;
use super::{
    Identity, IdentityError, LOGIN_REFUSED, Result, must_change_password, parse_time, rfc3339,
    roles_of,
};
use crate::identity::roles::Role;
use crate::identity::{IssuedToken, issue_credential, parse_credential, secret_matches};
use crate::ledger::Actor;
use crate::store::{SessionRow, UserRow};

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

impl Identity {
    /// Checks user ID and password and opens a session.
    ///
    /// # Errors
    /// Wrong credentials (counted; the 5th locks), a locked or deactivated account.
    pub async fn login(&self, user_id: &str, password_text: &str) -> Result<Login> {
        // Text that is not a user ID is refused exactly as an unknown one.
        let user = match UserId::parse(user_id) {
            Ok(id) => self.store.user(&id).await?,
            Err(_) => None,
        };
        // Unknown, deactivated, locked and wrong get the same answer after
        // the same work (one counted attempt, one Argon2 check): the
        // answer tells nobody which accounts exist or are locked. The
        // lock itself is in the ledger and alerted (§11.300(d)).
        let epoch = match self
            .attempt_password(user.as_ref(), password_text, |_| ())
            .await?
        {
            Attempt::Right { epoch, .. } => epoch,
            Attempt::Wrong | Attempt::Refused => {
                tracing::warn!(user_id, "login refused");
                return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into()));
            }
        };
        let Some(user) = user else {
            return Err(IdentityError::Unauthenticated(LOGIN_REFUSED.into()));
        };
        let user_id = &user.user_id;
        let session = issue_credential("tms");
        let at = rfc3339(self.now());
        self.store
            .open_session(&session.id, &session.secret_hash, user_id, &at, epoch)
            .await?;
        let actor = user_id.actor();
        self.append(
            &kind::SECURITY_SESSION_OPENED,
            &actor,
            &format!("user:{user_id}"),
            vec![],
            None,
            json!({"user_id": user_id, "session_id": session.id}),
            vec![],
        )
        .await?;
        let must_change = must_change_password(&user, self.now());
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
        let at = self.now();
        if at - last > idle {
            if self.store.close_session(id, &rfc3339(at)).await? {
                self.session_closed(&Actor::system(), &session.user_id, id, "inactivity")
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
        // A credential change (password, reset, roles, lock, unlock,
        // deactivation) raised the epoch after this session was opened.
        if session.epoch != user.credential_epoch {
            if self.store.close_session(id, &rfc3339(at)).await? {
                self.session_closed(
                    &Actor::system(),
                    &session.user_id,
                    id,
                    "credentials changed",
                )
                .await?;
            }
            return Err(refused(
                "the session ended because the account's credentials changed",
            ));
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
            .close_session(&caller.session.id, &rfc3339(self.now()))
            .await?
        {
            let actor = caller.user.user_id.actor();
            self.session_closed(&actor, &caller.user.user_id, &caller.session.id, "logout")
                .await?;
        }
        Ok(())
    }

    /// Records the end of a session that was just closed.
    /// Ends every open session of `user_id` but `keep`, each recorded with
    /// `cause` (a credential change).
    pub(super) async fn end_sessions(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
        cause: &str,
    ) -> Result<()> {
        let ended = self
            .store
            .close_sessions_of(user_id, keep, &rfc3339(self.now()))
            .await?;
        for id in ended {
            self.session_closed(&Actor::system(), user_id, &id, cause)
                .await?;
        }
        Ok(())
    }

    async fn session_closed(
        &self,
        actor: &Actor,
        user_id: &UserId,
        session_id: &str,
        cause: &str,
    ) -> Result<()> {
        self.append(
            &kind::SECURITY_SESSION_CLOSED,
            actor,
            &format!("user:{user_id}"),
            vec![],
            None,
            json!({"user_id": user_id, "session_id": session_id, "cause": cause}),
            vec![],
        )
        .await?;
        Ok(())
    }
}
