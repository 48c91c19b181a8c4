//! Part 11 electronic signatures: the manifestation, the signed message, the
//! `signature.applied` payload, how a signature is shown (§11.50), the
//! checks `verify` runs on every signature from the ledger alone
//! (docs/SIGNATURES.md §7), and source-system signatures (§8).
//!
//! Pure code: no SQL, no HTTP. The signing ceremony that gathers the
//! credentials lives in `identity::service`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, FixedOffset, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::ca;
use super::roles::{Meaning, SigningPolicy};
use crate::ledger::entry::ParsedEntry;
use crate::ledger::{Hash, Seq, Timestamp};

/// Domain separation of the signed message.
pub const CONTEXT: &str = "trailmark.signature.v1";
/// The kind of a signature entry.
pub const KIND: &str = "signature.applied";
/// How far `signed_at` may precede `recorded_at` (rule 6).
pub const MAX_SIGNING_DELAY_SECONDS: i64 = 300;
/// Most source-system signatures one entry may carry.
pub const SOURCE_SIGNATURES_MAX: usize = 32;

/// What a signature shows and asserts (§11.50), signed with the target hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifestation {
    /// Signer's user ID.
    pub user_id: String,
    /// Signer's legal printed name at signing time.
    pub printed_name: String,
    /// Meaning from the controlled vocabulary.
    pub meaning: String,
    /// Its display text at signing time.
    pub meaning_text: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub signed_at: String,
    /// The same instant in the display offset.
    pub signed_at_local: String,
    /// SHA-256 of the signer's certificate, lowercase hex.
    pub certificate_sha256: String,
    /// `user-id-and-password` or `password-in-session`.
    pub authentication: String,
}

/// The payload of a `signature.applied` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePayload {
    /// `ed25519`.
    pub algorithm: String,
    /// What is asserted.
    pub manifestation: Manifestation,
    /// Base64 Ed25519 signature over [`message`].
    pub signature: String,
    /// Target entry hash, lowercase hex.
    pub target: String,
}

/// The bytes a user signs: RFC 8785 of `{context, manifestation, target}`.
pub fn message(target: &Hash, manifestation: &Manifestation) -> Vec<u8> {
    #[derive(Serialize)]
    struct Message<'a> {
        context: &'static str,
        manifestation: &'a Manifestation,
        target: String,
    }
    serde_json_canonicalizer::to_vec(&Message {
        context: CONTEXT,
        manifestation,
        target: target.to_string(),
    })
    .expect("a manifestation serialises")
}

/// Signs and returns the entry payload.
pub fn sign(seed: &[u8; 32], target: &Hash, manifestation: Manifestation) -> Map<String, Value> {
    let signature = SigningKey::from_bytes(seed).sign(&message(target, &manifestation));
    let payload = SignaturePayload {
        algorithm: "ed25519".into(),
        manifestation,
        signature: STANDARD.encode(signature.to_bytes()),
        target: target.to_string(),
    };
    match serde_json::to_value(payload).expect("serialisable") {
        Value::Object(map) => map,
        _ => unreachable!("a struct serialises to an object"),
    }
}

/// The public key of a seed.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// A display offset that is not `+HH:MM` / `-HH:MM` within ±14:59.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("display_utc_offset `{text}` must look like +01:00 or -05:00")]
pub struct OffsetError {
    /// The offset as configured.
    pub text: String,
}

/// Parses a `+HH:MM` / `-HH:MM` display offset.
///
/// # Errors
/// If it is not of that form.
pub fn parse_offset(text: &str) -> Result<FixedOffset, OffsetError> {
    let bad = || OffsetError {
        text: text.to_owned(),
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || rest.len() != 5 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// The displayed local time: `YYYY-MM-DD HH:MM:SS ±HH:MM`.
pub fn local_time(at: DateTime<Utc>, offset: FixedOffset) -> String {
    at.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// The one rendering of a signature (docs/SIGNATURES.md §9), used by API
/// views, reports and the console.
pub fn render_line(m: &Manifestation) -> String {
    format!(
        "{} ({}), {}, {} ({} UTC)",
        m.printed_name, m.user_id, m.meaning_text, m.signed_at_local, m.signed_at
    )
}

/// A signature as every view of its target shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignatureView {
    /// Seq of the `signature.applied` entry.
    pub seq: Seq,
    /// Printed name.
    pub printed_name: String,
    /// User ID.
    pub user_id: String,
    /// Meaning.
    pub meaning: String,
    /// Display text of the meaning.
    pub meaning_text: String,
    /// UTC time.
    pub signed_at: String,
    /// Local display time.
    pub signed_at_local: String,
    /// The rendered line.
    pub line: String,
}

/// The view of a `signature.applied` entry's canonical bytes, if it is one.
pub fn view_of(seq: Seq, canonical: &[u8]) -> Option<SignatureView> {
    let parsed = ParsedEntry::parse(canonical).ok()?;
    let payload: SignaturePayload = serde_json::from_str(parsed.payload.get()).ok()?;
    let m = payload.manifestation;
    Some(SignatureView {
        seq,
        line: render_line(&m),
        printed_name: m.printed_name,
        user_id: m.user_id,
        meaning: m.meaning,
        meaning_text: m.meaning_text,
        signed_at: m.signed_at,
        signed_at_local: m.signed_at_local,
    })
}

// ---------------------------------------------------------------------------
// Source-system signatures (docs/SIGNATURES.md §8)

const SOURCE_REQUIRED: [&str; 6] = [
    "system",
    "signer",
    "printed_name",
    "meaning",
    "signed_at",
    "method",
];
const SOURCE_OPTIONAL: [&str; 5] = [
    "algorithm",
    "signature",
    "signed_content",
    "public_key",
    "certificate",
];

/// Why `payload.source_signatures` is malformed; each names the item and
/// member, counted from 0. The text says `payload.`; the events API, which
/// keeps them under `data`, rewrites that prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceSignatureError {
    /// Not an array.
    #[error("payload.source_signatures must be an array of objects")]
    NotArray,
    /// More than [`SOURCE_SIGNATURES_MAX`] items.
    #[error("payload.source_signatures has {0} items; at most {max}", max = SOURCE_SIGNATURES_MAX)]
    TooMany(usize),
    /// An item is not an object.
    #[error("payload.source_signatures[{0}] must be an object")]
    NotObject(usize),
    /// A required member is absent, empty or not a string.
    #[error("payload.source_signatures[{index}].{member} is required (a non-empty string)")]
    Missing {
        /// The item.
        index: usize,
        /// The member.
        member: &'static str,
    },
    /// A member that is neither required nor optional.
    #[error(
        "payload.source_signatures[{index}] has unknown member `{member}`; allowed: {}, {}",
        SOURCE_REQUIRED.join(", "),
        SOURCE_OPTIONAL.join(", ")
    )]
    UnknownMember {
        /// The item.
        index: usize,
        /// The member.
        member: String,
    },
    /// An optional member that is not a string.
    #[error("payload.source_signatures[{index}].{member} must be a string")]
    NotString {
        /// The item.
        index: usize,
        /// The member.
        member: String,
    },
}

/// Checks the shape of `payload.source_signatures`, if present.
///
/// # Errors
/// What is wrong, naming the item and member.
pub fn check_source_signatures(payload: &Map<String, Value>) -> Result<(), SourceSignatureError> {
    let Some(list) = payload.get("source_signatures") else {
        return Ok(());
    };
    let Value::Array(items) = list else {
        return Err(SourceSignatureError::NotArray);
    };
    if items.len() > SOURCE_SIGNATURES_MAX {
        return Err(SourceSignatureError::TooMany(items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(SourceSignatureError::NotObject(i));
        };
        for r in SOURCE_REQUIRED {
            match o.get(r) {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => {
                    return Err(SourceSignatureError::Missing {
                        index: i,
                        member: r,
                    });
                }
            }
        }
        for (k, v) in o {
            if !SOURCE_REQUIRED.contains(&k.as_str()) && !SOURCE_OPTIONAL.contains(&k.as_str()) {
                return Err(SourceSignatureError::UnknownMember {
                    index: i,
                    member: k.clone(),
                });
            }
            if !v.is_string() {
                return Err(SourceSignatureError::NotString {
                    index: i,
                    member: k.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A source-system signature as shown, with its verification status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceSignatureView {
    /// Always `source-system`: not a Trailmark signature.
    pub label: String,
    /// The source system.
    pub system: String,
    /// The signer as the source names them.
    pub signer: String,
    /// Printed name.
    pub printed_name: String,
    /// The source's meaning text.
    pub meaning: String,
    /// When the source says it was signed.
    pub signed_at: String,
    /// How the source authenticated the signer.
    pub method: String,
    /// `valid`, `invalid` or `not-verifiable`.
    pub verification: String,
    /// Why, for `invalid` and `not-verifiable`.
    pub detail: Option<String>,
}

fn source_status(o: &Map<String, Value>) -> (&'static str, Option<String>) {
    let get = |k: &str| o.get(k).and_then(Value::as_str);
    let Some(sig) = get("signature") else {
        return (
            "not-verifiable",
            Some("the source sent no signature value".into()),
        );
    };
    if get("algorithm") != Some("ed25519") {
        return (
            "not-verifiable",
            Some(format!(
                "algorithm {:?} is not one Trailmark verifies (ed25519)",
                get("algorithm")
            )),
        );
    }
    let Some(content) = get("signed_content").and_then(|c| STANDARD.decode(c).ok()) else {
        return (
            "not-verifiable",
            Some("no signed_content to verify against".into()),
        );
    };
    let key = if let Some(cert) = get("certificate").and_then(|c| STANDARD.decode(c).ok()) {
        match ca::parse_certificate(&cert) {
            Ok(info) => Some(info.public_key),
            Err(e) => return ("invalid", Some(format!("certificate: {e}"))),
        }
    } else {
        get("public_key")
            .and_then(|k| STANDARD.decode(k).ok())
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
    };
    let Some(key) = key else {
        return (
            "not-verifiable",
            Some("no public key or certificate".into()),
        );
    };
    let ok = VerifyingKey::from_bytes(&key).ok().zip(
        STANDARD
            .decode(sig)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok()),
    );
    match ok {
        Some((k, s)) if k.verify_strict(&content, &s).is_ok() => ("valid", None),
        _ => (
            "invalid",
            Some("the signature does not verify over signed_content".into()),
        ),
    }
}

/// The source-system signatures of an entry payload, with statuses computed now.
pub fn source_signatures(payload: &Value) -> Vec<SourceSignatureView> {
    let Some(Value::Array(items)) = payload.get("source_signatures") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_object)
        .map(|o| {
            let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let (verification, detail) = source_status(o);
            SourceSignatureView {
                label: "source-system".into(),
                system: s("system"),
                signer: s("signer"),
                printed_name: s("printed_name"),
                meaning: s("meaning"),
                signed_at: s("signed_at"),
                method: s("method"),
                verification: verification.into(),
                detail,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Verification from the ledger alone (docs/SIGNATURES.md §7)

/// A signature that breaks a rule of §7.
#[derive(Debug, thiserror::Error)]
#[error("seq {seq}: signature check {rule} failed: {problem}")]
pub struct SignatureError {
    /// The `signature.applied` entry (or identity entry) at fault.
    pub seq: u64,
    /// The rule number of docs/SIGNATURES.md §7 (0: an identity entry is malformed).
    pub rule: u8,
    /// What differs.
    pub problem: String,
}

#[derive(Debug, Clone)]
struct UserState {
    roles: Vec<String>,
    status: String,
}

#[derive(Debug, Clone)]
struct CertState {
    user_id: String,
    der: Vec<u8>,
    revoked: bool,
    checked: Option<ca::CertificateInfo>,
}

/// Replays the identity entries of a ledger and checks every signature.
/// Feed it every relevant entry in seq order ([`SignatureChecker::is_relevant`]).
#[derive(Debug, Default)]
pub struct SignatureChecker {
    cas: Vec<Vec<u8>>,
    certificates: HashMap<String, CertState>,
    users: HashMap<String, UserState>,
    policy: Option<SigningPolicy>,
    /// Signatures checked so far.
    pub checked: u64,
}

fn str_of<'v>(payload: &'v Value, key: &str) -> Option<&'v str> {
    payload.get(key).and_then(Value::as_str)
}

fn strings_of(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl SignatureChecker {
    /// Whether entries of `kind` matter to signature checks.
    pub fn is_relevant(kind: &str) -> bool {
        kind == KIND
            || kind.starts_with("admin.user.")
            || kind.starts_with("admin.certificate.")
            || kind == "admin.ca.trusted"
            || kind == "admin.signing_policy.changed"
            || kind == "security.account.locked"
    }

    /// Takes in one relevant entry.
    ///
    /// # Errors
    /// A signature that breaks a rule, or an identity entry that cannot be read.
    pub fn observe(&mut self, seq: u64, canonical: &[u8]) -> Result<(), SignatureError> {
        let fail = failure(seq);
        let parsed = ParsedEntry::parse(canonical).map_err(|e| fail(0, e.to_string()))?;
        let payload: Value = serde_json::from_str(parsed.payload.get())
            .map_err(|e| fail(0, format!("payload: {e}")))?;
        let user = || {
            str_of(&payload, "user_id")
                .map(str::to_owned)
                .ok_or_else(|| fail(0, format!("{} has no user_id", parsed.kind)))
        };
        match parsed.kind.as_ref() {
            "admin.user.created" => {
                let roles = strings_of(payload.get("roles"))
                    .ok_or_else(|| fail(0, "admin.user.created has no roles array".into()))?;
                self.users.insert(
                    user()?,
                    UserState {
                        roles,
                        status: "active".into(),
                    },
                );
            }
            "admin.user.changed" | "admin.user.password_set" => {
                let id = user()?;
                let state = self
                    .users
                    .get_mut(&id)
                    .ok_or_else(|| fail(0, format!("user {id} changed before it was created")))?;
                if let Some(changes) = payload.get("changes") {
                    if let Some(roles) = strings_of(changes.get("roles").and_then(|c| c.get("new")))
                    {
                        state.roles = roles;
                    }
                    if let Some(status) = changes
                        .get("status")
                        .and_then(|c| c.get("new"))
                        .and_then(Value::as_str)
                    {
                        state.status = status.to_owned();
                    }
                }
                if let Some(sha) = payload
                    .get("certificate_revoked")
                    .and_then(|r| str_of(r, "certificate_sha256"))
                    && let Some(c) = self.certificates.get_mut(sha)
                {
                    c.revoked = true;
                }
            }
            "security.account.locked" => {
                if let Some(state) = self.users.get_mut(&user()?) {
                    state.status = "locked".into();
                }
            }
            "admin.certificate.issued" => {
                let der = str_of(&payload, "certificate")
                    .and_then(|c| STANDARD.decode(c).ok())
                    .ok_or_else(|| fail(0, "admin.certificate.issued has no certificate".into()))?;
                let sha = Hash::sha256(&[&der]).to_string();
                self.certificates.insert(
                    sha,
                    CertState {
                        user_id: user()?,
                        der,
                        revoked: false,
                        checked: None,
                    },
                );
            }
            "admin.certificate.revoked" => {
                if let Some(c) = str_of(&payload, "certificate_sha256")
                    .and_then(|sha| self.certificates.get_mut(sha))
                {
                    c.revoked = true;
                }
            }
            "admin.ca.trusted" => {
                let der = str_of(&payload, "certificate")
                    .and_then(|c| STANDARD.decode(c).ok())
                    .ok_or_else(|| fail(0, "admin.ca.trusted has no certificate".into()))?;
                self.cas.push(der);
            }
            "admin.signing_policy.changed" => {
                let policy: SigningPolicy = payload
                    .get("new")
                    .cloned()
                    .ok_or_else(|| fail(0, "policy change without `new`".into()))
                    .and_then(|v| {
                        serde_json::from_value(v).map_err(|e| fail(0, format!("policy: {e}")))
                    })?;
                self.policy = Some(policy);
            }
            KIND => {
                self.check_signature(seq, &parsed, payload)?;
                self.checked += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks one `signature.applied` entry by the rules of SIGNATURES.md
    /// §7, in their order; the first rule broken is the error.
    fn check_signature(
        &mut self,
        seq: u64,
        parsed: &ParsedEntry<'_>,
        payload: Value,
    ) -> Result<(), SignatureError> {
        let fail = failure(seq);
        // 1. shape
        let (p, target, meaning) = signature_shape(seq, parsed, payload)?;
        let m = &p.manifestation;
        // 2. actor
        if parsed.actor != format!("user:{}", m.user_id) {
            return Err(fail(
                2,
                format!("actor {} is not user:{}", parsed.actor, m.user_id),
            ));
        }
        // 3. and 4.
        let (info, signed_at) = self.certificate_at(seq, m)?;
        // 5. the signature itself
        let key = VerifyingKey::from_bytes(&info.public_key)
            .map_err(|e| fail(5, format!("certificate key: {e}")))?;
        let signature = STANDARD
            .decode(&p.signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or_else(|| fail(5, "signature is not 64 bytes of base64".into()))?;
        key.verify_strict(&message(&target, m), &signature)
            .map_err(|_| {
                fail(
                    5,
                    "the Ed25519 signature does not verify over the target and manifestation"
                        .into(),
                )
            })?;
        // 6. timing
        signing_delay(seq, parsed, m, signed_at)?;
        // 7. status and authority at this seq
        self.authority_at(seq, m, meaning)
    }

    /// Rules 3 and 4: the certificate the manifestation names was issued to
    /// the user and not revoked, chains to a trusted CA and was valid at
    /// the signing time (a malformed `signed_at` breaks rule 6). Returns
    /// the certificate's facts and the signing time.
    fn certificate_at(
        &mut self,
        seq: u64,
        m: &Manifestation,
    ) -> Result<(ca::CertificateInfo, DateTime<Utc>), SignatureError> {
        let fail = failure(seq);
        // 3. certificate issued to the user and not revoked
        let cert = self
            .certificates
            .get_mut(&m.certificate_sha256)
            .ok_or_else(|| {
                fail(
                    3,
                    format!(
                        "no certificate {} was issued before this entry",
                        m.certificate_sha256
                    ),
                )
            })?;
        if cert.user_id != m.user_id {
            return Err(fail(
                3,
                format!(
                    "certificate {} belongs to {}, not {}",
                    m.certificate_sha256, cert.user_id, m.user_id
                ),
            ));
        }
        if cert.revoked {
            return Err(fail(
                3,
                format!(
                    "certificate {} was revoked before this signature",
                    m.certificate_sha256
                ),
            ));
        }
        // 4. chain and validity at signing time
        let signed_at = Timestamp::parse(&m.signed_at)
            .map_err(|e| fail(6, format!("signed_at: {e}")))?
            .datetime();
        let info = match &cert.checked {
            Some(info) => info.clone(),
            None => {
                let info = ca::check_user_certificate(&cert.der, &self.cas, signed_at)
                    .map_err(|e| fail(4, e.to_string()))?;
                cert.checked = Some(info.clone());
                info
            }
        };
        if signed_at < info.not_before || signed_at > info.not_after {
            return Err(fail(
                4,
                format!(
                    "signed at {} outside the certificate's validity {} .. {}",
                    m.signed_at, info.not_before, info.not_after
                ),
            ));
        }
        if info.user_id.as_deref() != Some(m.user_id.as_str()) {
            return Err(fail(
                4,
                format!(
                    "the certificate names user {:?}, not {}",
                    info.user_id, m.user_id
                ),
            ));
        }
        Ok((info, signed_at))
    }

    /// Rule 7: the signer was active at this seq and held a role the
    /// signing policy then in force allows for the meaning.
    fn authority_at(
        &self,
        seq: u64,
        m: &Manifestation,
        meaning: Meaning,
    ) -> Result<(), SignatureError> {
        let fail = failure(seq);
        let user = self
            .users
            .get(&m.user_id)
            .ok_or_else(|| fail(7, format!("user {} was never created", m.user_id)))?;
        if user.status != "active" {
            return Err(fail(
                7,
                format!("user {} was {} when signing", m.user_id, user.status),
            ));
        }
        let policy = self.policy.as_ref().ok_or_else(|| {
            fail(
                7,
                "no signing policy was recorded before this signature".into(),
            )
        })?;
        if !policy.allows(&user.roles, meaning) {
            return Err(fail(
                7,
                format!(
                    "user {} held roles {:?}, none of which may sign `{}`",
                    m.user_id, user.roles, m.meaning
                ),
            ));
        }
        Ok(())
    }
}

/// A [`SignatureError`] of entry `seq` by rule number and problem.
fn failure(seq: u64) -> impl Fn(u8, String) -> SignatureError {
    move |rule, problem| SignatureError { seq, rule, problem }
}

/// Rule 1: a signature payload over Ed25519, whose only parent is its
/// target, with a meaning of the vocabulary. Returns the payload, the
/// target's hash and the meaning.
fn signature_shape(
    seq: u64,
    parsed: &ParsedEntry<'_>,
    payload: Value,
) -> Result<(SignaturePayload, Hash, Meaning), SignatureError> {
    let fail = failure(seq);
    let p: SignaturePayload = serde_json::from_value(payload)
        .map_err(|e| fail(1, format!("payload is not a signature payload: {e}")))?;
    if p.algorithm != "ed25519" {
        return Err(fail(1, format!("algorithm {} is not ed25519", p.algorithm)));
    }
    if parsed.parents.len() != 1 || parsed.parents[0] != p.target {
        return Err(fail(
            1,
            format!(
                "parents {:?} are not exactly [target {}]",
                parsed.parents, p.target
            ),
        ));
    }
    let target = Hash::parse_hex(&p.target).map_err(|e| fail(1, format!("target: {e}")))?;
    let meaning = Meaning::parse(&p.manifestation.meaning).map_err(|e| fail(1, e.to_string()))?;
    Ok((p, target, meaning))
}

/// Rule 6: signed at most [`MAX_SIGNING_DELAY_SECONDS`] before the entry
/// was recorded, and not after.
fn signing_delay(
    seq: u64,
    parsed: &ParsedEntry<'_>,
    m: &Manifestation,
    signed_at: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let fail = failure(seq);
    let recorded = Timestamp::parse(&parsed.recorded_at)
        .map_err(|e| fail(6, e.to_string()))?
        .datetime();
    let delay = (recorded - signed_at).num_seconds();
    if signed_at > recorded || delay > MAX_SIGNING_DELAY_SECONDS {
        return Err(fail(
            6,
            format!(
                "signed_at {} is not within {MAX_SIGNING_DELAY_SECONDS} s before recorded_at {}",
                m.signed_at, parsed.recorded_at
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifestation() -> Manifestation {
        Manifestation {
            user_id: "druiz".into(),
            printed_name: "Dana Ruiz".into(),
            meaning: "approved".into(),
            meaning_text: "Approved".into(),
            signed_at: "2026-11-21T13:02:11.394000Z".into(),
            signed_at_local: "2026-11-21 14:02:11 +01:00".into(),
            certificate_sha256: "00".repeat(32),
            authentication: "password-in-session".into(),
        }
    }

    #[test]
    fn the_message_binds_target_and_manifestation() {
        let seed = [7u8; 32];
        let target = Hash::sha256(&[b"entry 41"]);
        let m = manifestation();
        let payload = sign(&seed, &target, m.clone());
        let sig = STANDARD
            .decode(payload["signature"].as_str().unwrap())
            .unwrap();
        let key = VerifyingKey::from_bytes(&public_key(&seed)).unwrap();
        let sig = Signature::from_slice(&sig).unwrap();
        assert!(key.verify_strict(&message(&target, &m), &sig).is_ok());
        let other = Hash::sha256(&[b"entry 42"]);
        assert!(
            key.verify_strict(&message(&other, &m), &sig).is_err(),
            "moved to another entry"
        );
        let mut changed = m;
        changed.meaning = "reviewed".into();
        assert!(
            key.verify_strict(&message(&target, &changed), &sig)
                .is_err()
        );
        let text = String::from_utf8(message(&target, &manifestation())).unwrap();
        assert!(text.starts_with(
            "{\"context\":\"trailmark.signature.v1\",\"manifestation\":{\"authentication\""
        ));
    }

    #[test]
    fn local_time_and_rendering() {
        let at = Timestamp::parse("2026-11-21T13:02:11.394000Z")
            .unwrap()
            .datetime();
        assert_eq!(
            local_time(at, parse_offset("+01:00").unwrap()),
            "2026-11-21 14:02:11 +01:00"
        );
        assert_eq!(
            local_time(at, parse_offset("-05:30").unwrap()),
            "2026-11-21 07:32:11 -05:30"
        );
        assert!(parse_offset("CET").is_err());
        assert_eq!(
            render_line(&manifestation()),
            "Dana Ruiz (druiz), Approved, 2026-11-21 14:02:11 +01:00 (2026-11-21T13:02:11.394000Z UTC)"
        );
    }

    #[test]
    fn source_signatures_are_checked_for_shape_and_verified_when_possible() {
        let seed = [9u8; 32];
        let content = b"CAPA-2026-014 closure v3";
        let sig = SigningKey::from_bytes(&seed).sign(content);
        let mut item = serde_json::json!({"system": "qms", "signer": "jdoe", "printed_name": "J. Doe",
            "meaning": "Approval", "signed_at": "2026-11-20T10:00:00Z", "method": "password",
            "algorithm": "ed25519", "signature": STANDARD.encode(sig.to_bytes()),
            "signed_content": STANDARD.encode(content), "public_key": STANDARD.encode(public_key(&seed))});
        let payload = serde_json::json!({"source_signatures": [item.clone()]});
        check_source_signatures(payload.as_object().unwrap()).unwrap();
        assert_eq!(source_signatures(&payload)[0].verification, "valid");
        item["signed_content"] = STANDARD.encode(b"something else").into();
        assert_eq!(
            source_signatures(&serde_json::json!({"source_signatures": [item.clone()]}))[0]
                .verification,
            "invalid"
        );
        item.as_object_mut().unwrap().remove("signature");
        assert_eq!(
            source_signatures(&serde_json::json!({"source_signatures": [item.clone()]}))[0]
                .verification,
            "not-verifiable"
        );
        item.as_object_mut().unwrap().remove("signer");
        let bad = serde_json::json!({"source_signatures": [item]});
        let missing = check_source_signatures(bad.as_object().unwrap()).unwrap_err();
        assert_eq!(
            missing,
            SourceSignatureError::Missing {
                index: 0,
                member: "signer"
            }
        );
        assert!(missing.to_string().contains("signer"));
    }
}
