//! People and machines: users, passwords, sessions, roles, API tokens,
//! signing keys and certificates (docs/SIGNATURES.md).
//!
//! - [`roles`]: the one authorisation matrix and the signing policy.
//! - [`password`]: Argon2id hashes and the password-wrapped signing key.
//! - [`ca`]: Trailmark's own CA and the certificate checks (x509-parser).
//! - [`service`]: the operations (create a user, log in, sign, rotate a
//!   token...), each recorded by a ledger entry written with its state change.
//!
//! A bearer credential is `tmk_<id>_<secret>` (an API token) or
//! `tms_<id>_<secret>` (a user session): a public 12-hex-digit ID and a
//! 256-bit random secret (base64url). Only `SHA-256(secret)` is stored; the
//! secret is shown once. Checking compares hashes in constant time.

pub mod ca;
pub mod password;
pub mod roles;
pub mod service;
pub mod signature;

pub use service::{Identity, IdentityError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::ledger::{Actor, Hash};

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

/// Makes a new random API token.
///
/// # Panics
/// If the operating system has no randomness to give.
pub fn issue_token() -> IssuedToken {
    issue_credential("tmk")
}

/// Makes a new random bearer credential with `prefix` (`tmk` or `tms`).
///
/// # Panics
/// If the operating system has no randomness to give.
pub fn issue_credential(prefix: &str) -> IssuedToken {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).expect("the OS provides randomness");
    getrandom::fill(&mut secret).expect("the OS provides randomness");
    let secret_text = URL_SAFE_NO_PAD.encode(secret);
    let id = hex::encode(id);
    IssuedToken {
        token: format!("{prefix}_{id}_{secret_text}"),
        secret_hash: Hash::sha256(&[secret_text.as_bytes()]),
        id,
    }
}

/// Splits a presented bearer token into its ID and the hash of its secret.
/// `None` if it is not shaped like a Trailmark token.
pub fn parse_token(token: &str) -> Option<(&str, Hash)> {
    parse_credential(token, "tmk")
}

/// Splits a bearer credential with `prefix` into its ID and secret hash.
pub fn parse_credential<'t>(token: &'t str, prefix: &str) -> Option<(&'t str, Hash)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return None;
    }
    Some((id, Hash::sha256(&[secret.as_bytes()])))
}

/// Constant-time comparison of a presented secret's hash with the stored one.
pub fn secret_matches(presented: &Hash, stored: &[u8]) -> bool {
    stored.len() == 32 && bool::from(presented.as_bytes().ct_eq(stored))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_and_match_only_themselves() {
        let a = issue_token();
        let b = issue_token();
        let (id, hash) = parse_token(&a.token).unwrap();
        assert_eq!(id, a.id);
        assert!(secret_matches(&hash, a.secret_hash.as_bytes()));
        assert!(!secret_matches(&hash, b.secret_hash.as_bytes()));
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
