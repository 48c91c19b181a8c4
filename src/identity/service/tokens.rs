//! API tokens of service principals: their scopes, issue, revocation,
//! rotation without downtime, and the check of a presented token (with its
//! pinned client certificate, if any).

use crate::ledger::kind;
use chrono::Duration as ChronoDuration;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Identity, IdentityError, Result, check_reason, invalid, parse_time, rfc3339};
use crate::identity::roles::{Permission, Role};
use crate::identity::{IssuedToken, ca, secret_matches};
use crate::ledger::{Actor, Hash};
use crate::store::{StateWrite, StoreError, TokenRow};

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
                        "scope `{p}` is not available to tokens; use entries:append, entries:read, events:send, integration:read or metrics:read (people sign and administer with their own accounts)"
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

/// An authenticated API token.
#[derive(Debug, Clone)]
pub struct TokenCaller {
    /// The token row.
    pub token: TokenRow,
    /// Its scopes.
    pub scopes: TokenScopes,
}

impl Identity {
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
        let principal =
            crate::identity::principal_actor(principal).map_err(|e| invalid(e.to_string()))?;
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
        let expires_at = rfc3339(self.now() + ChronoDuration::days(i64::from(days)));
        let issued = crate::identity::issue_token();
        let _guard = self.changes.lock().await;
        self.append(
            &kind::ADMIN_TOKEN_CREATED,
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
        let row = self.stored_token(token_id).await?;
        if row.revoked_at.is_some() {
            return Err(IdentityError::Conflict(format!(
                "token `{token_id}` is already revoked"
            )));
        }
        let effective = rfc3339(self.now() + ChronoDuration::minutes(i64::from(overlap_minutes)));
        self.append(
            &kind::ADMIN_TOKEN_REVOKED,
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
        let row = self.stored_token(token_id).await?;
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

    /// The stored token `token_id`.
    ///
    /// # Errors
    /// Not found, or a database error.
    async fn stored_token(&self, token_id: &str) -> Result<TokenRow> {
        self.store
            .token(token_id)
            .await?
            .ok_or_else(|| IdentityError::NotFound(format!("no token `{token_id}`")))
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
        let at = self.now();
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
                    "token {} is pinned to a client certificate; connect over TLS with that certificate (tls_client_ca), or through the trusted TLS proxy that forwards it",
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
}
