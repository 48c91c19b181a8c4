//! Certificates: CAs trusted for user certificates, certificates issued by
//! Trailmark's CA or imported from an enterprise CA, each checked against
//! the user's signing key, name and ID; a new certificate revokes the one
//! it supersedes.

use crate::ledger::UserId;
use crate::ledger::kind;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Duration as ChronoDuration;
use serde_json::json;

use super::{Identity, IdentityError, Result, check_reason, invalid, rfc3339};
use crate::identity::ca;
use crate::ledger::Actor;
use crate::store::{StateWrite, UserRow};

impl Identity {
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
        self.append(&kind::ADMIN_CA_TRUSTED, by, &format!("ca:{}", info.fingerprint_sha256), vec![], Some(reason),
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
        user_id: &UserId,
        reason: &str,
    ) -> Result<String> {
        let ca = self.ca.clone().ok_or_else(|| IdentityError::Conflict("Trailmark runs no CA here (`trailmark ca init`); import a certificate from your enterprise CA instead".into()))?;
        let user = self.existing(user_id).await?;
        let key: [u8; 32] = user.public_key.clone().and_then(|k| k.try_into().ok())
            .ok_or_else(|| IdentityError::Conflict(format!("user `{user_id}` has no signing key yet; it is made when they change their password")))?;
        let from = self.now() - ChronoDuration::minutes(5);
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
        user_id: &UserId,
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
        let info = ca::check_user_certificate(&der, &cas, self.now())
            .map_err(|e| invalid(e.to_string()))?;
        certifies(&info, user)?;
        let _guard = self.changes.lock().await;
        if let Some(old) = &user.certificate_sha256 {
            self.append(
                &kind::ADMIN_CERTIFICATE_REVOKED,
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
        let effects = vec![StateWrite::AddCertificate {
            sha256: info.fingerprint_sha256.clone(),
            user_id: user.user_id.clone(),
            der: der.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
        }];
        self.append(&kind::ADMIN_CERTIFICATE_ISSUED, by, &format!("user:{}", user.user_id), vec![], Some(reason),
            json!({"user_id": user.user_id, "certificate": STANDARD.encode(&der), "certificate_sha256": info.fingerprint_sha256,
                   "public_key": STANDARD.encode(info.public_key), "not_before": rfc3339(info.not_before), "not_after": rfc3339(info.not_after)}),
            effects).await?;
        Ok(info.fingerprint_sha256)
    }
}

/// Whether a certificate that passed the checks is the user's: their
/// signing key, their printed name as CN and their user ID as UID.
fn certifies(info: &ca::CertificateInfo, user: &UserRow) -> Result<()> {
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
    Ok(())
}
