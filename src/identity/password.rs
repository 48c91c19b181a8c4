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

/// The strongest score of the strength estimator (zxcvbn: 0 to 4, each
/// step about a hundred times more guesses).
pub const SCORE_MAX: u8 = 4;

/// The configured rules a new password must meet (`[identity]` in
/// `trailmark.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Fewest characters.
    pub min_chars: usize,
    /// Lowest accepted strength score, 0 to [`SCORE_MAX`].
    pub min_score: u8,
}

/// Whose password it is: what the password must not be built from.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The user ID.
    pub user_id: &'a UserId,
    /// The legal printed name.
    pub printed_name: &'a str,
    /// The email address.
    pub email: &'a str,
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
    /// The strength estimator guesses it too easily: a common password, a
    /// repeat, a sequence, a keyboard row, or the user's own name.
    #[error(
        "the new password is too easy to guess: {warning} {advice} (strength {score} of 4; at least {min_score} is required)"
    )]
    TooGuessable {
        /// The estimator's score, 0 to [`SCORE_MAX`].
        score: u8,
        /// The configured minimum.
        min_score: u8,
        /// What makes it guessable, one sentence.
        warning: String,
        /// What to do instead, one or more sentences.
        advice: String,
    },
    /// It equals one of the recent passwords.
    #[error("the new password equals one of the last {recent} passwords; choose another")]
    Reused {
        /// How many recent passwords were compared.
        recent: usize,
    },
}

/// Checks a new password against the policy and the user's recent hashes:
/// length, the user ID, guessability (NIST SP 800-63B §3.1.1.2: common,
/// repetitive or sequential passwords and the user's own name, ID or
/// email are refused) and reuse, in that order. Never echoes the password.
///
/// CPU-bound (the estimator, and Argon2 per recent hash): async callers run
/// it on the blocking pool.
///
/// # Errors
/// What the password lacks, in words a user can act on.
pub fn check_policy(
    password: &str,
    owner: &Owner<'_>,
    policy: Policy,
    recent_hashes: &[String],
) -> Result<(), PasswordRejected> {
    let chars = password.chars().count();
    if chars < policy.min_chars {
        return Err(PasswordRejected::TooShort {
            chars,
            min_chars: policy.min_chars,
        });
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(PasswordRejected::TooLong);
    }
    let lower = password.to_lowercase();
    if lower.contains(&owner.user_id.as_str().to_lowercase()) {
        return Err(PasswordRejected::ContainsUserId);
    }
    check_strength(password, &lower, owner, policy.min_score)?;
    if recent_hashes.iter().any(|h| matches(password, h)) {
        return Err(PasswordRejected::Reused {
            recent: recent_hashes.len(),
        });
    }
    Ok(())
}

/// The zxcvbn score against `min_score`, with the owner's ID, name and
/// email as words an attacker would try first. Whoever targets this user
/// knows those words, so a password that contains them scores no higher
/// than what is left without them (`Lima Ana 2026` is `  2026` to them).
fn check_strength(
    password: &str,
    lower: &str,
    owner: &Owner<'_>,
    min_score: u8,
) -> Result<(), PasswordRejected> {
    let words = personal_words(owner);
    let inputs: Vec<&str> = words.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(password, &inputs);
    let mut score = u8::from(estimate.score());
    let mut feedback = estimate.feedback().cloned();
    let rest = without_words(lower, &words);
    let personal = rest.len() < lower.len();
    if personal {
        let left = zxcvbn::zxcvbn(&rest, &[]);
        if u8::from(left.score()) < score {
            score = u8::from(left.score());
            feedback = left.feedback().cloned();
        }
    }
    if score >= min_score {
        return Ok(());
    }
    let warning = match feedback
        .as_ref()
        .and_then(zxcvbn::feedback::Feedback::warning)
    {
        // zxcvbn gives no warning for the user's own words; say it in ours.
        _ if personal => "It is built from your name, user ID or email address.".to_owned(),
        Some(w) => w.to_string(),
        None => "It follows a pattern that password-guessing tools try early.".to_owned(),
    };
    let mut advice: Vec<String> = feedback
        .map(|f| f.suggestions().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if advice.is_empty() {
        advice.push("Add another word or two. Uncommon words are better.".into());
    }
    Err(PasswordRejected::TooGuessable {
        score,
        min_score,
        warning,
        advice: advice.join(" "),
    })
}

/// `lower` with every occurrence of `words` removed, longest word first.
fn without_words(lower: &str, words: &[String]) -> String {
    let mut by_length: Vec<&String> = words.iter().collect();
    by_length.sort_by_key(|w| std::cmp::Reverse(w.len()));
    by_length
        .into_iter()
        .fold(lower.to_owned(), |rest, w| rest.replace(w.as_str(), ""))
}

/// The owner's user ID, printed name (whole, without spaces, and each part)
/// and email (whole, local part and its parts, domain without its
/// top-level label), lower case, three characters or more.
fn personal_words(owner: &Owner<'_>) -> Vec<String> {
    let name = owner.printed_name.to_lowercase();
    let email = owner.email.to_lowercase();
    let (local, domain) = email.split_once('@').unwrap_or((email.as_str(), ""));
    let mut words = vec![
        owner.user_id.as_str().to_lowercase(),
        name.split_whitespace().collect::<String>(),
        name.clone(),
        email.clone(),
        local.to_owned(),
        domain.to_owned(),
    ];
    for text in [name.as_str(), local] {
        words.extend(
            text.split(|c: char| !c.is_alphanumeric())
                .map(str::to_owned),
        );
    }
    if let Some((labels, _top)) = domain.rsplit_once('.') {
        words.extend(labels.split('.').map(str::to_owned));
    }
    words.retain(|w| w.chars().count() >= 3);
    words.sort();
    words.dedup();
    words
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

    const POLICY: super::Policy = super::Policy {
        min_chars: 12,
        min_score: 3,
    };

    fn owner(id: &crate::ledger::UserId) -> super::Owner<'_> {
        super::Owner {
            user_id: id,
            printed_name: "Ana Lima",
            email: "ana.lima@example.com",
        }
    }

    #[test]
    fn generated_passwords_never_contain_the_user_id_so_the_policy_accepts_them() {
        // A one-letter ID is in about half of all raw 24-character draws,
        // so 500 accepted draws show the redraw works.
        for id in ["a", "Z", "op1"] {
            for _ in 0..500 {
                let p = super::one_time_password(id);
                assert_eq!(p.len(), 24);
                let id = uid(&id.to_lowercase());
                super::check_policy(&p, &owner(&id), POLICY, &[]).unwrap();
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
        let ana = uid("ana");
        let old = hash("an old passphrase", CHEAP);
        let short = check_policy("short", &owner(&ana), POLICY, &[]).unwrap_err();
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
                &owner(&ana),
                POLICY,
                std::slice::from_ref(&old)
            ),
            Err(PasswordRejected::Reused { recent: 1 })
        );
        assert_eq!(
            check_policy("my name is ANA ok", &owner(&ana), POLICY, &[]),
            Err(PasswordRejected::ContainsUserId)
        );
        check_policy("a new passphrase", &owner(&ana), POLICY, &[old]).unwrap();
    }

    #[test]
    fn guessable_passwords_are_refused_with_the_reason_and_never_echoed() {
        let ana = uid("al01");
        for (password, reason) in [
            ("aaaaaaaaaaaa", "Repeats like \"aaa\""),
            ("123456789012", "Sequences like abc"),
            ("passwordpassword", "Repeats like \"abcabcabc\""),
            ("            ", "Repeats like \"aaa\""),
            ("qwertyuiopasdf", "commonly used password"),
            ("Ana Lima Ana Lima", "your name, user ID or email"),
            ("Lima Ana 12345", "your name, user ID or email"),
            ("AnaLima2026!", "your name, user ID or email"),
            ("ana.lima@example.com", "your name, user ID or email"),
        ] {
            let refused = check_policy(password, &owner(&ana), POLICY, &[]).unwrap_err();
            let PasswordRejected::TooGuessable {
                score, min_score, ..
            } = &refused
            else {
                panic!("{password:?}: {refused:?}");
            };
            assert!(*score < 3 && *min_score == 3, "{password:?}: {refused}");
            let text = refused.to_string();
            assert!(text.contains(reason), "{password:?}: {text}");
            assert!(text.contains("at least 3 is required"), "{text}");
            let shown = password.trim();
            assert!(
                shown.is_empty() || !text.contains(shown),
                "never echoed: {text}"
            );
        }
    }

    #[test]
    fn the_minimum_score_is_configurable_and_strong_passwords_pass() {
        let ana = uid("ana");
        let lax = Policy {
            min_chars: 12,
            min_score: 0,
        };
        check_policy("aaaaaaaaaaaa", &owner(&ana), lax, &[]).unwrap();
        for strong in ["correct horse battery staple", "own-726576-secret-1-Xy"] {
            check_policy(strong, &owner(&ana), POLICY, &[]).unwrap();
        }
        let strict = Policy {
            min_chars: 12,
            min_score: SCORE_MAX,
        };
        let refused = check_policy("Delacroix2026!!", &owner(&ana), strict, &[]).unwrap_err();
        assert!(
            matches!(refused, PasswordRejected::TooGuessable { min_score: 4, .. }),
            "{refused}"
        );
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
