//! Passwords and the password-wrapped signing key (docs/SIGNATURES.md §4).
//!
//! Hashes are Argon2id PHC strings, which carry their own parameters, so a
//! change of the configured cost applies to new hashes and old ones still
//! verify. The user's Ed25519 seed is sealed with ChaCha20-Poly1305 under a
//! key derived from the password by Argon2id with its own salt: the server
//! holds only ciphertext and cannot sign without the user.
//!
//! These functions are CPU-bound (tens of milliseconds by design); async
//! callers run them on the blocking pool.

use crate::ledger::UserId;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

/// Associated data prefix of the key wrapping.
const WRAP_CONTEXT: &[u8] = b"trailmark.user-key.v1";
/// Longest accepted password in bytes (bounds Argon2 input and request size).
pub const PASSWORD_MAX_BYTES: usize = 256;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
}

impl Cost {
    fn argon2(self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, 1, Some(32))
            .expect("configured Argon2 parameters are within range");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC parameter string, e.g. `m=19456,t=2,p=1`.
    pub fn describe(self) -> String {
        format!(
            "argon2id v=19 m={},t={},p=1",
            self.memory_kib, self.iterations
        )
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the OS provides randomness");
    out
}

/// Hashes a password into a PHC string with a fresh 16-byte salt.
pub fn hash(password: &str, cost: Cost) -> String {
    cost.argon2()
        .hash_password_with_salt(password.as_bytes(), &random::<16>())
        .expect("Argon2 accepts any password up to PASSWORD_MAX_BYTES")
        .to_string()
}

/// Whether `password` matches the PHC string `phc` (its own parameters;
/// the comparison inside is constant-time).
pub fn matches(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// Why a new password breaks the policy (§11.300), so a caller can tell a
/// reused password from a short one without reading the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    /// Fewer characters than the configured minimum.
    #[error("the new password has {chars} characters; it needs at least {min_chars}")]
    TooShort {
        /// Characters given.
        chars: usize,
        /// The configured minimum.
        min_chars: usize,
    },
    /// More than [`PASSWORD_MAX_BYTES`] bytes.
    #[error("the new password is longer than {max} bytes", max = PASSWORD_MAX_BYTES)]
    TooLong,
    /// It contains the user ID (any case).
    #[error("the new password must not contain the user ID")]
    ContainsUserId,
    /// It equals one of the recent passwords.
    #[error("the new password equals one of the last {recent} passwords; choose another")]
    Reused {
        /// How many recent passwords were compared.
        recent: usize,
    },
}

/// Checks a new password against the policy and the user's recent hashes.
///
/// # Errors
/// What the password lacks, in words a user can act on.
pub fn check_policy(
    password: &str,
    user_id: &UserId,
    min_chars: usize,
    recent_hashes: &[String],
) -> Result<(), PasswordRejected> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(PasswordRejected::TooShort { chars, min_chars });
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(PasswordRejected::TooLong);
    }
    if password
        .to_lowercase()
        .contains(&user_id.as_str().to_lowercase())
    {
        return Err(PasswordRejected::ContainsUserId);
    }
    if recent_hashes.iter().any(|h| matches(password, h)) {
        return Err(PasswordRejected::Reused {
            recent: recent_hashes.len(),
        });
    }
    Ok(())
}

/// A signing seed sealed under a password-derived key, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Format version, 1.
    pub v: u32,
    /// Argon2id memory (KiB).
    pub m: u32,
    /// Argon2id passes.
    pub t: u32,
    /// Base64 16-byte salt.
    pub salt: String,
    /// Base64 12-byte nonce.
    pub nonce: String,
    /// Base64 ciphertext and tag (48 bytes).
    pub sealed: String,
}

fn kek(password: &str, salt: &[u8], cost: Cost) -> LessSafeKey {
    let mut key = [0u8; 32];
    cost.argon2()
        .hash_password_into(password.as_bytes(), salt, &mut key)
        .expect("Argon2 accepts the salt and output length");
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32-byte key"))
}

fn aad(user_id: &UserId) -> Vec<u8> {
    let mut aad = WRAP_CONTEXT.to_vec();
    aad.push(0);
    aad.extend_from_slice(user_id.as_str().as_bytes());
    aad
}

/// Seals `seed` under `password` for `user_id`; returns the stored JSON.
pub fn wrap(seed: &[u8; 32], password: &str, user_id: &UserId, cost: Cost) -> String {
    let salt = random::<16>();
    let nonce = random::<12>();
    let mut buffer = seed.to_vec();
    kek(password, &salt, cost)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(user_id)),
            &mut buffer,
        )
        .expect("sealing 32 bytes cannot fail");
    serde_json::to_string(&WrappedKey {
        v: 1,
        m: cost.memory_kib,
        t: cost.iterations,
        salt: STANDARD.encode(salt),
        nonce: STANDARD.encode(nonce),
        sealed: STANDARD.encode(buffer),
    })
    .expect("serialisable")
}

/// Opens a wrapped seed with `password`; `None` if the password is wrong or
/// the stored value is damaged (the two are indistinguishable by design).
pub fn unwrap(stored: &str, password: &str, user_id: &UserId) -> Option<[u8; 32]> {
    let w: WrappedKey = serde_json::from_str(stored).ok()?;
    if w.v != 1 {
        return None;
    }
    let salt = STANDARD.decode(&w.salt).ok()?;
    let nonce: [u8; 12] = STANDARD.decode(&w.nonce).ok()?.try_into().ok()?;
    let mut buffer = STANDARD.decode(&w.sealed).ok()?;
    let cost = Cost {
        memory_kib: w.m,
        iterations: w.t,
    };
    Params::new(cost.memory_kib, cost.iterations, 1, Some(32)).ok()?;
    let plain = kek(password, &salt, cost)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(user_id)),
            &mut buffer,
        )
        .ok()?;
    plain.try_into().ok()
}

/// A fresh Ed25519 seed.
pub fn new_seed() -> [u8; 32] {
    random::<32>()
}

/// Random password for `user_id` (a one-time password shown once, or a
/// fixture's replacement): 24 base64url characters, drawn again while they
/// contain the user ID in any case, which the password policy refuses
/// (a short ID such as `op1` would otherwise fail now and then, and a
/// one-letter ID about half the time).
pub fn one_time_password(user_id: &str) -> String {
    use base64::Engine as _;
    let id = user_id.to_lowercase();
    loop {
        let mut bytes = [0u8; 18];
        getrandom::fill(&mut bytes).expect("the OS provides randomness");
        let candidate = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if id.is_empty() || !candidate.to_lowercase().contains(&id) {
            return candidate;
        }
    }
}

#[cfg(test)]
mod tests {
    fn uid(id: &str) -> crate::ledger::UserId {
        crate::ledger::UserId::parse(id).unwrap()
    }

    #[test]
    fn generated_passwords_never_contain_the_user_id_so_the_policy_accepts_them() {
        // A one-letter ID is in about half of all raw 24-character draws,
        // so 500 accepted draws show the redraw works.
        for id in ["a", "Z", "op1"] {
            for _ in 0..500 {
                let p = super::one_time_password(id);
                assert_eq!(p.len(), 24);
                super::check_policy(&p, &uid(&id.to_lowercase()), 12, &[]).unwrap();
            }
        }
    }
    use super::*;

    const CHEAP: Cost = Cost {
        memory_kib: 64,
        iterations: 1,
    };

    #[test]
    fn hashes_record_their_parameters_and_verify_only_the_password() {
        let h = hash("correct horse battery", CHEAP);
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(matches("correct horse battery", &h));
        assert!(!matches("correct horse batterz", &h));
        assert_ne!(h, hash("correct horse battery", CHEAP), "salted");
    }

    #[test]
    fn policy_refuses_short_reused_and_user_id_passwords() {
        let old = hash("an old passphrase", CHEAP);
        let short = check_policy("short", &uid("ana"), 12, &[]).unwrap_err();
        assert!(short.to_string().contains("at least 12"));
        assert_eq!(
            short,
            PasswordRejected::TooShort {
                chars: 5,
                min_chars: 12
            }
        );
        assert_eq!(
            check_policy(
                "an old passphrase",
                &uid("ana"),
                12,
                std::slice::from_ref(&old)
            ),
            Err(PasswordRejected::Reused { recent: 1 })
        );
        assert_eq!(
            check_policy("my name is ANA ok", &uid("ana"), 12, &[]),
            Err(PasswordRejected::ContainsUserId)
        );
        check_policy("a new passphrase", &uid("ana"), 12, &[old]).unwrap();
    }

    #[test]
    fn a_wrapped_seed_opens_only_with_its_password_and_user() {
        let seed = new_seed();
        let stored = wrap(&seed, "pass phrase one", &uid("ana"), CHEAP);
        assert_eq!(unwrap(&stored, "pass phrase one", &uid("ana")), Some(seed));
        assert_eq!(unwrap(&stored, "pass phrase two", &uid("ana")), None);
        assert_eq!(
            unwrap(&stored, "pass phrase one", &uid("bob")),
            None,
            "bound to the user ID"
        );
        assert!(!stored.contains(&STANDARD.encode(seed)));
    }
}
