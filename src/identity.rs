//! Who is calling: API tokens for machine principals (QMS, LMS, HR, scripts).
//!
//! A token is `tmk_<id>_<secret>`: a public 12-hex-digit ID and a 256-bit
//! random secret (base64url). Only `SHA-256(secret)` is stored; the secret is
//! shown once, at creation. Checking compares hashes in constant time.
//! Users, roles, passwords and Part 11 signatures arrive with the identity
//! issue and build on the `actor` prefixes defined here (`user:`, `service:`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Map;
use subtle::ConstantTimeEq as _;

use crate::ledger::kind;
use crate::ledger::{Actor, Hash, Subject};
use crate::sequencer::{AppendRequest, Effect};

/// A freshly issued token: the secret text is only ever in this value.
pub struct IssuedToken {
    /// Public ID (appears in logs and the ledger).
    pub id: String,
    /// The whole bearer token, `tmk_<id>_<secret>`, shown once.
    pub token: String,
    /// What to store.
    pub secret_hash: Hash,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"<secret>")
            .finish()
    }
}

/// Makes a new random token.
///
/// # Panics
/// If the operating system has no randomness to give.
pub fn issue_token() -> IssuedToken {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).expect("the OS provides randomness");
    getrandom::fill(&mut secret).expect("the OS provides randomness");
    let secret_text = URL_SAFE_NO_PAD.encode(secret);
    let id = hex::encode(id);
    IssuedToken {
        token: format!("tmk_{id}_{secret_text}"),
        secret_hash: Hash::sha256(&[secret_text.as_bytes()]),
        id,
    }
}

/// Splits a presented bearer token into its ID and the hash of its secret.
/// `None` if it is not shaped like a Trailmark token.
pub fn parse_token(token: &str) -> Option<(&str, Hash)> {
    let rest = token.strip_prefix("tmk_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return None;
    }
    Some((id, Hash::sha256(&[secret.as_bytes()])))
}

/// Constant-time comparison of a presented secret's hash with the stored one.
pub fn secret_matches(presented: &Hash, stored: &[u8]) -> bool {
    stored.len() == 32 && bool::from(presented.0.ct_eq(stored))
}

/// Turns a principal name into an actor: `qms` becomes `service:qms`;
/// a name with a prefix (`user:E1042`) is kept.
///
/// # Errors
/// If the result is not a valid actor.
pub fn principal_actor(principal: &str) -> Result<Actor, crate::ledger::EntryError> {
    if principal.contains(':') {
        Actor::parse(principal)
    } else {
        Actor::parse(&format!("service:{principal}"))
    }
}

/// The `admin.token.created` append that records and stores a new token.
///
/// # Errors
/// If the principal or reason is invalid.
pub fn token_created_request(
    by: Actor,
    principal: &Actor,
    issued: &IssuedToken,
    reason: &str,
) -> Result<AppendRequest, crate::ledger::EntryError> {
    let mut payload = Map::new();
    payload.insert("token_id".into(), issued.id.clone().into());
    payload.insert("principal".into(), principal.to_string().into());
    Ok(AppendRequest {
        kind: kind::lookup("admin.token.created").expect("registered"),
        actor: by,
        subject: Subject::parse(&format!("token:{}", issued.id))?,
        correlation_id: None,
        idempotency_key: None,
        parents: vec![],
        reason: Some(reason.to_owned()),
        payload,
        effect: Some(Effect::CreateToken {
            id: issued.id.clone(),
            principal: principal.to_string(),
            secret_hash: issued.secret_hash,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_match_only_themselves() {
        let a = issue_token();
        let b = issue_token();
        let (id, hash) = parse_token(&a.token).unwrap();
        assert_eq!(id, a.id);
        assert!(secret_matches(&hash, &a.secret_hash.0));
        assert!(!secret_matches(&hash, &b.secret_hash.0));
        assert!(parse_token("Bearer nonsense").is_none());
        assert!(
            !format!("{a:?}").contains(&a.token[20..]),
            "Debug must not print the secret"
        );
    }

    #[test]
    fn principals_become_service_actors() {
        assert_eq!(principal_actor("qms").unwrap().as_str(), "service:qms");
        assert_eq!(
            principal_actor("user:E1042").unwrap().as_str(),
            "user:E1042"
        );
        assert!(principal_actor("bad name").is_err());
    }
}
