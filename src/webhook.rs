//! Standard Webhooks signing and verification: HMAC-SHA256 (`v1`) over
//! `{webhook-id}.{webhook-timestamp}.{body}`.
//!
//! The format is the one in the Standard Webhooks specification 1.0.0
//! (<https://www.standardwebhooks.com/>), so a receiver can check what we send
//! with any of the reference libraries, and we can check what they send.
//!
//! ```
//! # use trailmark::webhook::{self, Secret};
//! # use axum::http::{HeaderMap, HeaderValue};
//! let secret = Secret::generate();
//! let body = br#"{"type":"course.completed"}"#;
//! let now = 1_700_000_000;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(webhook::ID, HeaderValue::from_static("msg_1"));
//! headers.insert(webhook::TIMESTAMP, HeaderValue::from(now));
//! let signature = webhook::signature(&secret, "msg_1", now, body);
//! headers.insert(webhook::SIGNATURE, signature.parse().unwrap());
//!
//! let id = webhook::verify(&secret, &headers, body, now, 300).unwrap();
//! assert_eq!(id, "msg_1");
//! ```
//!
//! Main types: [`Secret`] (the shared key, parsed from its `whsec_` text form),
//! [`signature`] (the sender's side), [`verify`] (the receiver's side) and
//! [`WebhookError`].
//!
//! Only the symmetric scheme is implemented. Signatures of other versions in
//! the `webhook-signature` header (for example the asymmetric `v1a`) are
//! ignored, as the specification allows.

use std::fmt;

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// Header carrying the message id, the same on every delivery attempt of one
/// message; receivers use it as the idempotency key.
pub const ID: &str = "webhook-id";
/// Header carrying the attempt time in whole seconds since the Unix epoch.
pub const TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying a space-separated list of `version,base64` signatures.
pub const SIGNATURE: &str = "webhook-signature";

/// Prefix of the text form of a symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Version tag of an HMAC-SHA256 signature.
pub const SIGNATURE_VERSION: &str = "v1";

/// Shortest key accepted, in bytes (the specification's minimum, 192 bits).
pub const SECRET_MIN_BYTES: usize = 24;
/// Longest key accepted, in bytes (the specification's maximum, 512 bits).
pub const SECRET_MAX_BYTES: usize = 64;
/// Length of a key made by [`Secret::generate`], in bytes.
pub const SECRET_GENERATED_BYTES: usize = 32;
/// Longest `webhook-id` accepted by [`verify`], in bytes.
pub const ID_MAX_BYTES: usize = 256;
/// At most this many entries of the `webhook-signature` list are looked at;
/// the rest are ignored. Rotation needs two; this leaves room to spare.
pub const SIGNATURES_MAX: usize = 16;

/// A symmetric webhook signing key shared by a sender and a receiver.
///
/// Its text form is `whsec_` followed by the key in standard base64. `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parse the text form `whsec_<standard base64>`.
    ///
    /// Leading and trailing whitespace is ignored (secrets are often pasted).
    ///
    /// # Errors
    ///
    /// [`WebhookError::SecretPrefix`] without the `whsec_` prefix,
    /// [`WebhookError::SecretEncoding`] when the rest is not standard base64,
    /// [`WebhookError::SecretLength`] when the key is shorter than
    /// [`SECRET_MIN_BYTES`] or longer than [`SECRET_MAX_BYTES`].
    pub fn parse(text: &str) -> Result<Secret, WebhookError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix)?;
        // The decoder's error names the offending byte, which is part of the
        // secret: it is dropped, not shown.
        let key = BASE64
            .decode(encoded)
            .map_err(|_| WebhookError::SecretEncoding)?;
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(WebhookError::SecretLength { bytes: key.len() });
        }
        Ok(Secret { key })
    }

    /// Make a new random secret of [`SECRET_GENERATED_BYTES`] bytes from the
    /// operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes; there is no safe
    /// way to go on without them.
    #[must_use]
    pub fn generate() -> Secret {
        let mut key = vec![0_u8; SECRET_GENERATED_BYTES];
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Secret { key }
    }

    /// The text form, `whsec_` followed by the key in standard base64, which
    /// [`Secret::parse`] reads back.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret was refused or a delivery failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret text does not start with `whsec_`.
    #[error(
        "the webhook secret does not start with `whsec_`; copy the whole secret, prefix included"
    )]
    SecretPrefix,
    /// The secret text after `whsec_` is not standard base64.
    #[error(
        "the webhook secret is not standard base64 after `whsec_`; copy it again without changes"
    )]
    SecretEncoding,
    /// The decoded key has a length outside the accepted range.
    #[error(
        "the webhook secret decodes to {bytes} bytes but must have {SECRET_MIN_BYTES} to \
         {SECRET_MAX_BYTES}; generate a new secret"
    )]
    SecretLength {
        /// Length of the decoded key.
        bytes: usize,
    },
    /// A required header is absent.
    #[error("the `{0}` header is missing; the sender must send Standard Webhooks headers")]
    MissingHeader(&'static str),
    /// A header is present but not visible ASCII.
    #[error("the `{0}` header is not visible ASCII text; the sender must fix its headers")]
    InvalidHeader(&'static str),
    /// The `webhook-id` is empty, too long, or contains a `.`, which would
    /// make the signed content ambiguous.
    #[error(
        "the `webhook-id` header must be 1 to {ID_MAX_BYTES} bytes without `.`; the sender must \
         fix its message ids"
    )]
    BadId,
    /// The `webhook-timestamp` is not a whole number of seconds.
    #[error(
        "the `webhook-timestamp` header is not a Unix time in whole seconds; the sender must \
         send digits only"
    )]
    BadTimestamp,
    /// The timestamp is older than the tolerance allows: a late delivery or a
    /// replay.
    #[error(
        "the message timestamp {timestamp} is {} s before now ({now}), more than the {tolerance_secs} s \
         allowed; check both clocks, or the sender must sign each attempt afresh",
        now.saturating_sub(*timestamp)
    )]
    TooOld {
        /// The `webhook-timestamp` sent.
        timestamp: i64,
        /// The receiver's time.
        now: i64,
        /// The tolerance in force.
        tolerance_secs: i64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "the message timestamp {timestamp} is {} s after now ({now}), more than the {tolerance_secs} s \
         allowed; check both clocks",
        timestamp.saturating_sub(*now)
    )]
    TooNew {
        /// The `webhook-timestamp` sent.
        timestamp: i64,
        /// The receiver's time.
        now: i64,
        /// The tolerance in force.
        tolerance_secs: i64,
    },
    /// No `v1` signature in the header matches the message.
    #[error(
        "no `v1` signature in `webhook-signature` matches the message; check that both sides use \
         the same secret and that the body is passed on byte for byte"
    )]
    NoMatchingSignature,
}

/// The bytes that are signed: `{msg_id}.{timestamp}.{body}`.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The `webhook-signature` header value for one message: `v1,` followed by the
/// standard base64 of HMAC-SHA256(key, `{msg_id}.{timestamp}.{body}`).
///
/// `msg_id` must not contain `.` (see [`WebhookError::BadId`]) and `body` must
/// be exactly the bytes sent. Sign every delivery attempt with its own
/// timestamp; the id stays the same across attempts.
#[must_use]
pub fn signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = hmac::sign(&secret.hmac_key(), &signed_content(msg_id, timestamp, body));
    format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag.as_ref()))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .ok_or(WebhookError::MissingHeader(name))?
        .to_str()
        .map(str::trim)
        .map_err(|_| WebhookError::InvalidHeader(name))
}

fn parse_timestamp(text: &str) -> Result<i64, WebhookError> {
    // Digits only: `i64::from_str` would also take a sign.
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(WebhookError::BadTimestamp);
    }
    text.parse().map_err(|_| WebhookError::BadTimestamp)
}

/// Check a delivery: its headers, its timestamp against `now_unix` within
/// `tolerance_secs` either way, and its signature in constant time. Returns
/// the `webhook-id`, for the caller to deduplicate on.
///
/// `body` must be the raw request body, not a re-serialization of it.
///
/// # Errors
///
/// In the order checked: [`WebhookError::MissingHeader`] or
/// [`WebhookError::InvalidHeader`] for any of the three headers,
/// [`WebhookError::BadId`], [`WebhookError::BadTimestamp`],
/// [`WebhookError::TooOld`] or [`WebhookError::TooNew`], and
/// [`WebhookError::NoMatchingSignature`] when none of the first
/// [`SIGNATURES_MAX`] entries is a matching `v1` signature.
pub fn verify(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<String, WebhookError> {
    let msg_id = header(headers, ID)?;
    let timestamp_text = header(headers, TIMESTAMP)?;
    let signatures = header(headers, SIGNATURE)?;

    if msg_id.is_empty() || msg_id.len() > ID_MAX_BYTES || msg_id.contains('.') {
        return Err(WebhookError::BadId);
    }
    let timestamp = parse_timestamp(timestamp_text)?;
    if timestamp < now_unix.saturating_sub(tolerance_secs) {
        return Err(WebhookError::TooOld {
            timestamp,
            now: now_unix,
            tolerance_secs,
        });
    }
    if timestamp > now_unix.saturating_add(tolerance_secs) {
        return Err(WebhookError::TooNew {
            timestamp,
            now: now_unix,
            tolerance_secs,
        });
    }

    let key = secret.hmac_key();
    let content = signed_content(msg_id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter(|entry| !entry.is_empty())
        .take(SIGNATURES_MAX)
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
        .any(|tag| hmac::verify(&key, &content, &tag).is_ok());
    if matched {
        Ok(msg_id.to_owned())
    } else {
        Err(WebhookError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // The test vector published with the Standard Webhooks reference
    // libraries; recomputed independently before being written here.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ID, HeaderValue::from_str(id).unwrap());
        headers.insert(TIMESTAMP, HeaderValue::from_str(timestamp).unwrap());
        headers.insert(SIGNATURE, HeaderValue::from_str(signature).unwrap());
        headers
    }

    fn vector_headers(signature: &str) -> HeaderMap {
        headers(VECTOR_ID, &VECTOR_TIMESTAMP.to_string(), signature)
    }

    #[test]
    fn signing_reproduces_the_published_test_vector() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let signed = signature(&secret, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY);
        assert_eq!(signed, VECTOR_SIGNATURE);
    }

    #[test]
    fn the_published_test_vector_verifies() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let id = verify(
            &secret,
            &vector_headers(VECTOR_SIGNATURE),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(id.as_deref(), Ok(VECTOR_ID));
    }

    #[test]
    fn a_generated_secret_round_trips_through_text_and_verifies() {
        let secret = Secret::generate();
        let text = secret.to_text();
        assert!(text.starts_with(SECRET_PREFIX));
        let parsed = Secret::parse(&text).unwrap();
        assert_eq!(parsed.to_text(), text);

        let body = br#"{"type":"training.assigned"}"#;
        let signed = signature(&secret, "msg_1", 1_000, body);
        let id = verify(
            &parsed,
            &headers("msg_1", "1000", &signed),
            body,
            1_000,
            300,
        );
        assert_eq!(id.as_deref(), Ok("msg_1"));
    }

    #[test]
    fn two_generated_secrets_differ() {
        assert_ne!(Secret::generate().to_text(), Secret::generate().to_text());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret(..)");
        assert!(!shown.contains("MfKQ"));
    }

    #[test]
    fn secret_parsing_refuses_bad_text() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            WebhookError::SecretPrefix
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").unwrap_err(),
            WebhookError::SecretEncoding
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            WebhookError::SecretLength { bytes: 5 }
        );
        let long = format!("{SECRET_PREFIX}{}", BASE64.encode([7_u8; 65]));
        assert_eq!(
            Secret::parse(&long).unwrap_err(),
            WebhookError::SecretLength { bytes: 65 }
        );
        // Pasted with a newline: still fine.
        assert!(Secret::parse(&format!("{VECTOR_SECRET}\n")).is_ok());
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let result = verify(
            &secret,
            &vector_headers(VECTOR_SIGNATURE),
            br#"{"test": 2432232315}"#,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(result, Err(WebhookError::NoMatchingSignature));
    }

    #[test]
    fn a_tampered_id_or_timestamp_is_refused() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let other_id = headers("msg_other", "1614265330", VECTOR_SIGNATURE);
        let other_time = headers(VECTOR_ID, "1614265331", VECTOR_SIGNATURE);
        for headers in [other_id, other_time] {
            let result = verify(&secret, &headers, VECTOR_BODY, VECTOR_TIMESTAMP, 300);
            assert_eq!(result, Err(WebhookError::NoMatchingSignature));
        }
    }

    #[test]
    fn a_signature_made_with_another_secret_is_refused() {
        let result = verify(
            &Secret::generate(),
            &vector_headers(VECTOR_SIGNATURE),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(result, Err(WebhookError::NoMatchingSignature));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let headers = vector_headers(VECTOR_SIGNATURE);
        let check = |now| verify(&secret, &headers, VECTOR_BODY, now, 300);

        assert!(check(VECTOR_TIMESTAMP + 300).is_ok());
        assert!(check(VECTOR_TIMESTAMP - 300).is_ok());
        assert_eq!(
            check(VECTOR_TIMESTAMP + 301),
            Err(WebhookError::TooOld {
                timestamp: VECTOR_TIMESTAMP,
                now: VECTOR_TIMESTAMP + 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(VECTOR_TIMESTAMP - 301),
            Err(WebhookError::TooNew {
                timestamp: VECTOR_TIMESTAMP,
                now: VECTOR_TIMESTAMP - 301,
                tolerance_secs: 300
            })
        );
        // Extremes do not overflow.
        assert!(verify(&secret, &headers, VECTOR_BODY, i64::MAX, i64::MAX).is_ok());
        assert!(matches!(
            verify(&secret, &headers, VECTOR_BODY, i64::MIN, 0),
            Err(WebhookError::TooNew { .. })
        ));
    }

    #[test]
    fn one_matching_signature_among_several_is_enough() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let old_secret = Secret::generate();
        let old = signature(&old_secret, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY);
        let list = format!(
            "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== \
             {old}  v2,abc v1,not*base64 {VECTOR_SIGNATURE}"
        );
        let id = verify(
            &secret,
            &vector_headers(&list),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(id.as_deref(), Ok(VECTOR_ID));
    }

    #[test]
    fn a_matching_signature_under_another_version_is_ignored() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let relabelled = VECTOR_SIGNATURE.replacen("v1,", "v1a,", 1);
        let result = verify(
            &secret,
            &vector_headers(&relabelled),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(result, Err(WebhookError::NoMatchingSignature));
    }

    #[test]
    fn signatures_past_the_limit_are_not_looked_at() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let filler = vec!["v1,AAAA"; SIGNATURES_MAX].join(" ");
        let list = format!("{filler} {VECTOR_SIGNATURE}");
        let result = verify(
            &secret,
            &vector_headers(&list),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            300,
        );
        assert_eq!(result, Err(WebhookError::NoMatchingSignature));
    }

    #[test]
    fn missing_headers_are_named() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        for name in [ID, TIMESTAMP, SIGNATURE] {
            let mut headers = vector_headers(VECTOR_SIGNATURE);
            headers.remove(name);
            let result = verify(&secret, &headers, VECTOR_BODY, VECTOR_TIMESTAMP, 300);
            assert_eq!(result, Err(WebhookError::MissingHeader(name)));
            assert!(result.unwrap_err().to_string().contains(name));
        }
    }

    #[test]
    fn malformed_ids_and_timestamps_are_refused() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let check = |id: &str, timestamp: &str| {
            verify(
                &secret,
                &headers(id, timestamp, VECTOR_SIGNATURE),
                VECTOR_BODY,
                VECTOR_TIMESTAMP,
                300,
            )
        };
        assert_eq!(check("msg.1", "1614265330"), Err(WebhookError::BadId));
        assert_eq!(
            check(&"m".repeat(ID_MAX_BYTES + 1), "1614265330"),
            Err(WebhookError::BadId)
        );
        for timestamp in [
            "",
            "+1614265330",
            "-5",
            "1614265330.0",
            "soon",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(VECTOR_ID, timestamp),
                Err(WebhookError::BadTimestamp),
                "{timestamp:?}"
            );
        }
    }
}
