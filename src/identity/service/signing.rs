//! The signing ceremony (docs/SIGNATURES.md §6): the signing policy, a
//! signature applied once the user's password unwraps their key and every
//! rule allows it, and re-authentication before the records that need it.
//! A refusal after the credentials were checked is itself recorded
//! (`security.signature.refused`, `security.auth.refused`).

use crate::ledger::UserId;
use crate::ledger::kind;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::passwords::Attempt;
use super::{Identity, IdentityError, Result, SessionCaller, check_reason, invalid, rfc3339};
use crate::identity::ca;
use crate::identity::password;
use crate::identity::roles::{Meaning, SigningPolicy};
use crate::identity::signature::{self, Manifestation};
use crate::ledger::{Actor, Hash};
use crate::sequencer::Receipt;
use crate::store::{StateWrite, StoreError, StoredEntry, UserRow};

/// What a re-authentication is for ([`Identity::reauthenticate`]).
#[derive(Debug, Clone, Copy)]
pub enum Reauth<'a> {
    /// A signing with this meaning follows.
    Sign(Meaning),
    /// An action that is not a signing (e.g. a dead-letter replay), named
    /// in the refusal entry if the password is wrong.
    Act(&'a str),
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

impl Identity {
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
        policy.check().map_err(|e| invalid(e.to_string()))?;
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
            &kind::ADMIN_SIGNING_POLICY_CHANGED,
            by,
            "config:signing-policy",
            vec![],
            Some(reason),
            json!({"old": old_value, "new": policy}),
            vec![StateWrite::SetPolicy { policy: new_text }],
        )
        .await
    }

    /// Signs the entry `request.target` with `request.meaning`.
    ///
    /// # Errors
    /// Missing or wrong credentials (counted), authority, sequence, separation
    /// of duties, certificate problems; nothing is appended but a refusal entry.
    pub async fn sign(&self, caller: &SessionCaller, request: SignRequest) -> Result<Receipt> {
        let started = std::time::Instant::now();
        let user_id = caller.user.user_id.clone();
        let authentication = authentication_of(caller, &request)?;
        let meaning = Meaning::parse(&request.meaning).map_err(|e| invalid(e.to_string()))?;
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
        let seed = self.unlock_signing_key(&user, &request).await?;
        let (certificate_sha256, signed_at) =
            self.signing_certificate(&user, &request, &seed).await?;
        let policy = self.authorising_policy(&user, meaning, &request).await?;
        let target_entry = self.signable_entry(target).await?;
        let guard = self.changes.lock().await;
        let existing = self.manifestations_on(target_entry.seq).await?;
        if let Err(refusal) = sequence_rules(&policy, meaning, &user_id, &target_entry, &existing) {
            drop(guard);
            if let Some(cause) = refusal.recorded_as {
                self.refuse(&user_id, &request.target, &request.meaning, cause)
                    .await?;
            }
            return Err(refusal.error);
        }
        let manifestation = Manifestation {
            user_id: user_id.to_string(),
            printed_name: user.printed_name.clone(),
            meaning: meaning.as_str().to_owned(),
            meaning_text: policy.text(meaning),
            signed_at: rfc3339(signed_at),
            signed_at_local: signature::local_time(signed_at, self.offset),
            certificate_sha256,
            authentication: authentication.to_owned(),
        };
        let payload = signature::sign(&seed, &target, manifestation);
        let actor = user_id.actor();
        let receipt = self
            .append(
                &kind::SIGNATURE_APPLIED,
                &actor,
                &target_entry.subject,
                vec![target],
                None,
                Value::Object(payload),
                vec![],
            )
            .await?;
        drop(guard);
        if !caller.session.signed_once {
            self.store.session_signed(&caller.session.id).await?;
        }
        self.metrics.signatures.inc();
        self.metrics
            .signing_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// The user's signing key, unwrapped with the request's password. A
    /// wrong password counts toward lockout and is recorded as a refusal.
    async fn unlock_signing_key(&self, user: &UserRow, request: &SignRequest) -> Result<[u8; 32]> {
        let (wrapped, id) = (user.wrapped_key.clone(), user.user_id.clone());
        let unwrap = move |pw: &str| {
            wrapped
                .as_deref()
                .and_then(|w| password::unwrap(w, pw, &id))
        };
        let seed = match self
            .attempt_password(Some(user), &request.password, unwrap)
            .await?
        {
            Attempt::Right { value, .. } => value,
            Attempt::Wrong => {
                self.refuse(
                    &user.user_id,
                    &request.target,
                    &request.meaning,
                    "wrong password",
                )
                .await?;
                return Err(IdentityError::Unauthenticated(
                    "the password is wrong; the signature was not applied".into(),
                ));
            }
            Attempt::Refused => {
                return Err(IdentityError::Locked(
                    "the account is locked or inactive; the signature was not applied".into(),
                ));
            }
        };
        seed.ok_or_else(|| IdentityError::Conflict("you have no signing key yet: change your password (POST /v1/account/password) to create one".into()))
    }

    /// The user's current certificate, valid now and issued for the key
    /// just unwrapped: its SHA-256, and the signing time it was checked at.
    /// An invalid certificate is recorded as a refusal.
    async fn signing_certificate(
        &self,
        user: &UserRow,
        request: &SignRequest,
        seed: &[u8; 32],
    ) -> Result<(String, DateTime<Utc>)> {
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
        let signed_at = self.now();
        match ca::check_user_certificate(&cert.der, &cas, signed_at) {
            Err(e) => {
                self.refuse(
                    &user.user_id,
                    &request.target,
                    &request.meaning,
                    "certificate not valid",
                )
                .await?;
                return Err(IdentityError::Forbidden(format!(
                    "your signing certificate cannot be used: {e}"
                )));
            }
            // A key made without a CA (the CSR path) has no certificate until
            // the enterprise CA's arrives; the old one must not sign for it.
            Ok(info) if info.public_key != signature::public_key(seed) => {
                return Err(IdentityError::Conflict("your certificate is for an earlier signing key; ask an administrator to load the certificate issued from your new key's CSR".into()));
            }
            Ok(_) => {}
        }
        Ok((cert_sha, signed_at))
    }

    /// The signing policy, when it lets the user's roles sign with
    /// `meaning`; otherwise the refusal is recorded.
    async fn authorising_policy(
        &self,
        user: &UserRow,
        meaning: Meaning,
        request: &SignRequest,
    ) -> Result<SigningPolicy> {
        let policy = self.policy().await?;
        if !policy.allows(&user.roles, meaning) {
            self.refuse(
                &user.user_id,
                &request.target,
                &request.meaning,
                "no authority for this meaning",
            )
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
        Ok(policy)
    }

    /// The entry with hash `target`, if it may be signed (a signature entry
    /// may not).
    async fn signable_entry(&self, target: Hash) -> Result<StoredEntry> {
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
        Ok(target_entry)
    }

    /// The manifestations of the signatures already on entry `seq`.
    async fn manifestations_on(&self, seq: crate::ledger::Seq) -> Result<Vec<Manifestation>> {
        Ok(self
            .store
            .signatures_on(&[seq])
            .await?
            .into_iter()
            .filter_map(|(_, e)| {
                let parsed = crate::ledger::entry::ParsedEntry::parse(&e.canonical).ok()?;
                serde_json::from_str::<signature::SignaturePayload>(parsed.payload.get())
                    .ok()
                    .map(|p| p.manifestation)
            })
            .collect())
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
        reauth_components(caller, user_id, purpose)?;
        let meaning = match purpose {
            Reauth::Sign(m) => Some(m),
            Reauth::Act(_) => None,
        };
        let user = self.existing(&me).await?;
        if user.status != "active" {
            return Err(IdentityError::Locked(format!(
                "account `{me}` is {}; it cannot sign or act",
                user.status
            )));
        }
        match self
            .attempt_password(Some(&user), password_text, |_| ())
            .await?
        {
            Attempt::Right { .. } => {}
            Attempt::Wrong => {
                self.record_failed_reauth(&me, purpose, meaning).await?;
                return Err(IdentityError::Unauthenticated(
                    "the password is wrong; nothing was recorded or signed".into(),
                ));
            }
            Attempt::Refused => {
                return Err(IdentityError::Locked(format!(
                    "account `{me}` is locked or inactive; it cannot sign or act"
                )));
            }
        }
        if let Some(meaning) = meaning {
            let policy = self.policy().await?;
            if !policy.allows(&user.roles, meaning) {
                self.refuse(&me, "", meaning.as_str(), "no authority for this meaning")
                    .await?;
                return Err(IdentityError::Forbidden(format!(
                    "your roles may not sign `{}`",
                    meaning.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Records a wrong password at re-authentication: a refused signing
    /// for [`Reauth::Sign`], a refused action for [`Reauth::Act`].
    async fn record_failed_reauth(
        &self,
        me: &UserId,
        purpose: Reauth<'_>,
        meaning: Option<Meaning>,
    ) -> Result<()> {
        match purpose {
            Reauth::Act(action) => {
                self.append(
                    &kind::SECURITY_AUTH_REFUSED,
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
            Reauth::Sign(_) => {
                self.refuse(
                    me,
                    "",
                    meaning.map_or("", Meaning::as_str),
                    "wrong password",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Records a refused signing of `target` (as sent, at most 64
    /// characters) with `meaning` (at most 32) and why.
    async fn refuse(
        &self,
        user_id: &UserId,
        target: &str,
        meaning: &str,
        cause: &str,
    ) -> Result<()> {
        let actor = Actor::system();
        self.append(
            &kind::SECURITY_SIGNATURE_REFUSED,
            &actor,
            &format!("user:{user_id}"),
            vec![],
            None,
            json!({"user_id": user_id, "target": target.chars().take(64).collect::<String>(),
                   "meaning": meaning.chars().take(32).collect::<String>(), "cause": cause}),
            vec![],
        )
        .await?;
        Ok(())
    }
}

/// How the user authenticated a signing (§11.200(a)(1)): both components
/// at the first signing of a session, the password alone after it.
fn authentication_of(caller: &SessionCaller, request: &SignRequest) -> Result<&'static str> {
    match (&request.user_id, caller.session.signed_once) {
        (Some(given), _) if *given != caller.user.user_id => Err(IdentityError::Unauthenticated(
            format!("user_id `{given}` is not the user of this session"),
        )),
        (Some(_), _) => Ok("user-id-and-password"),
        (None, false) => Err(invalid(
            "the first signing in a session needs both components: send user_id and password",
        )),
        (None, true) => Ok("password-in-session"),
    }
}

/// The components a re-authentication needs: the session's own user ID if
/// one is given; both components for an action and for a session's first
/// signing.
fn reauth_components(
    caller: &SessionCaller,
    user_id: Option<&str>,
    purpose: Reauth<'_>,
) -> Result<()> {
    let both_needed = match purpose {
        Reauth::Sign(_) => !caller.session.signed_once,
        Reauth::Act(_) => true,
    };
    match (user_id, both_needed) {
        (Some(given), _) if given != caller.user.user_id => Err(IdentityError::Unauthenticated(
            format!("user_id `{given}` is not the user of this session"),
        )),
        (None, true) => Err(invalid(match purpose {
            Reauth::Sign(_) => {
                "the first signing in a session needs both components: give your user ID and password"
            }
            Reauth::Act(_) => "this action needs both components: give your user ID and password",
        })),
        _ => Ok(()),
    }
}

/// A signing the sequence rules refuse: recorded as a refused signing
/// with `recorded_as` as its cause, when that is given.
struct SequenceRefusal {
    recorded_as: Option<&'static str>,
    error: IdentityError,
}

/// The sequence rules of a signing: nobody signs an entry twice with one
/// meaning; with `no_self_approval`, its author neither reviews nor
/// approves it; with `approval_requires_review`, approval comes after
/// another person's review (§11.10(f)).
fn sequence_rules(
    policy: &SigningPolicy,
    meaning: Meaning,
    user_id: &UserId,
    target: &StoredEntry,
    existing: &[Manifestation],
) -> std::result::Result<(), SequenceRefusal> {
    let target_seq = target.seq;
    if existing
        .iter()
        .any(|m| m.user_id == user_id && m.meaning == meaning.as_str())
    {
        return Err(SequenceRefusal {
            recorded_as: None,
            error: IdentityError::Conflict(format!(
                "you already signed entry {target_seq} as `{}`",
                meaning.as_str()
            )),
        });
    }
    if (meaning == Meaning::REVIEWED || meaning == Meaning::APPROVED)
        && policy.rules.no_self_approval
    {
        let own = target.actor == format!("user:{user_id}")
            || existing
                .iter()
                .any(|m| m.user_id == user_id && m.meaning == Meaning::AUTHORED.as_str());
        if own {
            return Err(SequenceRefusal {
                recorded_as: Some("separation of duties"),
                error: IdentityError::Forbidden(format!(
                    "separation of duties: you authored entry {target_seq}, so you cannot sign it `{}`",
                    meaning.as_str()
                )),
            });
        }
    }
    if meaning == Meaning::APPROVED
        && policy.rules.approval_requires_review
        && !existing
            .iter()
            .any(|m| m.meaning == Meaning::REVIEWED.as_str() && m.user_id != user_id)
    {
        return Err(SequenceRefusal {
            recorded_as: Some("approval before review"),
            error: IdentityError::Forbidden(format!(
                "entry {target_seq} has no `reviewed` signature by another person yet; approval comes after review (§11.10(f))"
            )),
        });
    }
    Ok(())
}
