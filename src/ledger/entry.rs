//! Entries: the immutable records of the ledger, their validation, canonical
//! bytes (RFC 8785) and hash (`SHA-256(0x00 || canonical)`), as specified in
//! `docs/FORMAT.md` §1.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::hash::Hash;
use super::kind::{self, Class, KindDef};
use super::merkle::leaf_hash;
use super::seq::Seq;

/// The entry format version written in every entry's `v`.
pub const FORMAT_VERSION: u64 = 1;
/// Largest canonical payload, in bytes.
pub const PAYLOAD_MAX_BYTES: usize = 65_536;
/// Most parents one entry may name.
pub const PARENTS_MAX: usize = 64;
/// Longest reason, in characters.
pub const REASON_MAX_CHARS: usize = 4_000;

/// Why an entry (or a field meant for one) is not acceptable. The message
/// names the field and says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The bytes are not a JSON object with exactly the entry's members.
    #[error("not a valid entry object: {0}")]
    Json(String),
    /// One member has an invalid value.
    #[error("`{field}` {problem}")]
    Field {
        /// The member's name.
        field: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
}

fn field_error(field: &'static str, problem: impl Into<String>) -> EntryError {
    EntryError::Field {
        field,
        problem: problem.into(),
    }
}

fn printable_ascii(text: &str) -> bool {
    text.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The authenticated principal that caused an entry: `system:NAME`,
/// `service:NAME` or `user:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// The actor Trailmark itself uses for entries it writes on its own.
    pub fn system() -> Actor {
        Actor("system:trailmark".into())
    }

    /// Parses an actor.
    ///
    /// # Errors
    /// If the prefix is not `system:`, `service:` or `user:` or the name is
    /// not 1 to 128 characters of `[A-Za-z0-9._@-]`.
    pub fn parse(text: &str) -> Result<Actor, EntryError> {
        Actor::check(text)?;
        Ok(Actor(text.to_owned()))
    }

    /// Checks an actor without keeping it.
    ///
    /// # Errors
    /// As [`Actor::parse`].
    pub fn check(text: &str) -> Result<(), EntryError> {
        let name = ["system:", "service:", "user:"]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
            .ok_or_else(|| {
                field_error("actor", "must start with `system:`, `service:` or `user:`")
            })?;
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
        if !ok {
            return Err(field_error(
                "actor",
                "name must be 1 to 128 characters of letters, digits, `.`, `_`, `@`, `-`",
            ));
        }
        Ok(())
    }

    /// The actor `user:<id>` of a user ID that `identity::UserId` has
    /// checked: its rules are narrower than an actor name's, so the
    /// result is always a valid actor.
    pub(crate) fn of_user_id(id: &str) -> Actor {
        debug_assert!(Actor::check(&format!("user:{id}")).is_ok());
        Actor(format!("user:{id}"))
    }

    /// The actor as written in entries.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The record an entry is about, `SCHEME:ID`, e.g. `qms:capa/CAPA-2026-014`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Parses a subject.
    ///
    /// # Errors
    /// If the scheme is not `[a-z][a-z0-9-]{0,31}` or the ID is not 1 to 512
    /// printable ASCII characters.
    pub fn parse(text: &str) -> Result<Subject, EntryError> {
        Subject::check(text)?;
        Ok(Subject(text.to_owned()))
    }

    /// Checks a subject without keeping it.
    ///
    /// # Errors
    /// As [`Subject::parse`].
    pub fn check(text: &str) -> Result<(), EntryError> {
        let Some((scheme, id)) = text.split_once(':') else {
            return Err(field_error(
                "subject",
                "must be `SCHEME:ID`, e.g. `qms:capa/CAPA-2026-014`",
            ));
        };
        let scheme_ok = (1..=32).contains(&scheme.len())
            && scheme.as_bytes()[0].is_ascii_lowercase()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !scheme_ok {
            return Err(field_error(
                "subject",
                "scheme must be lowercase letters, digits and `-`, starting with a letter, at most 32",
            ));
        }
        if !(1..=512).contains(&id.len()) || !printable_ascii(id) {
            return Err(field_error(
                "subject",
                "ID after the `:` must be 1 to 512 printable ASCII characters without spaces",
            ));
        }
        Ok(())
    }

    /// The subject as written in entries.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UTC time with microsecond precision, written `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to microseconds.
    pub fn now() -> Timestamp {
        Timestamp(Utc::now().trunc_subsecs(6))
    }

    /// Wraps a time, truncating it to microseconds.
    pub fn from_datetime(time: DateTime<Utc>) -> Timestamp {
        Timestamp(time.trunc_subsecs(6))
    }

    /// Parses exactly the 27-character form.
    ///
    /// # Errors
    /// If the text is not `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn parse(text: &str) -> Result<Timestamp, EntryError> {
        let problem = || {
            field_error(
                "recorded_at",
                "must be UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 characters)",
            )
        };
        // Fixed positions, parsed by hand: `verify` parses one per entry.
        let b = text.as_bytes();
        let separators = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ];
        if b.len() != 27 || separators.iter().any(|&(i, c)| b[i] != c) {
            return Err(problem());
        }
        let number = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |acc, d| {
                d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
            })
        };
        let field = |from, to| number(from, to).ok_or_else(problem);
        let date =
            chrono::NaiveDate::from_ymd_opt(field(0, 4)? as i32, field(5, 7)?, field(8, 10)?)
                .ok_or_else(problem)?;
        let time = chrono::NaiveTime::from_hms_micro_opt(
            field(11, 13)?,
            field(14, 16)?,
            field(17, 19)?,
            field(20, 26)?,
        )
        .filter(|_| field(17, 19).is_ok_and(|s| s < 60))
        .ok_or_else(problem)?;
        Ok(Timestamp(DateTime::from_naive_utc_and_offset(
            date.and_time(time),
            Utc,
        )))
    }

    /// The underlying time.
    pub fn datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

/// Checks an optional short identifier (`correlation_id`, `idempotency_key`).
///
/// # Errors
/// If it is present but empty, too long or not printable ASCII.
pub fn check_token_field(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<(), EntryError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || !printable_ascii(v) => Err(field_error(
            field,
            format!("must be 1 to {max} printable ASCII characters without spaces, or null"),
        )),
        _ => Ok(()),
    }
}

/// Checks `reason` against the rules of the kind's class.
///
/// # Errors
/// If a reason is required and missing, blank, or too long.
pub fn check_reason(kind: &KindDef, reason: Option<&str>) -> Result<(), EntryError> {
    match reason {
        None if kind.class.requires_reason() => Err(field_error(
            "reason",
            format!(
                "is required for `{}` ({} entries must say why)",
                kind.name,
                kind.class.as_str()
            ),
        )),
        None => Ok(()),
        Some(_) if kind.class == Class::Genesis => {
            Err(field_error("reason", "must be null for the genesis entry"))
        }
        Some(r) if r.trim().is_empty() => Err(field_error(
            "reason",
            "must not be empty or only white space",
        )),
        Some(r) if r.chars().count() > REASON_MAX_CHARS => Err(field_error(
            "reason",
            format!("must be at most {REASON_MAX_CHARS} characters"),
        )),
        Some(_) => Ok(()),
    }
}

/// Checks the parent list's shape (existence is checked by the store).
///
/// # Errors
/// Too many parents, duplicates, or a correction without a parent.
pub fn check_parents(kind: &KindDef, parents: &[Hash]) -> Result<(), EntryError> {
    if parents.len() > PARENTS_MAX {
        return Err(field_error(
            "parents",
            format!("may name at most {PARENTS_MAX} entries"),
        ));
    }
    for (i, p) in parents.iter().enumerate() {
        if parents[..i].contains(p) {
            return Err(field_error("parents", format!("names {p} twice")));
        }
    }
    if kind.class == Class::Correction && parents.is_empty() {
        return Err(field_error(
            "parents",
            "must name the corrected entry first (a correction needs at least one parent)",
        ));
    }
    if kind.class == Class::Signature && parents.len() != 1 {
        return Err(field_error(
            "parents",
            "must name exactly one entry, the signed target, for a signature",
        ));
    }
    if kind.class == Class::Genesis && !parents.is_empty() {
        return Err(field_error(
            "parents",
            "must be empty for the genesis entry",
        ));
    }
    Ok(())
}

/// An entry as the ledger builds it, before canonicalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position in the ledger, 0-based.
    pub seq: Seq,
    /// Hash of entry `seq - 1`, or [`Hash::ZERO`] for entry 0.
    pub prev: Hash,
    /// When the ledger sequenced it.
    pub recorded_at: Timestamp,
    /// The registered kind.
    pub kind: &'static KindDef,
    /// Who caused it.
    pub actor: Actor,
    /// What it is about.
    pub subject: Subject,
    /// Groups entries of one business flow.
    pub correlation_id: Option<String>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Entries it was derived from.
    pub parents: Vec<Hash>,
    /// Why (required for corrections and administrative changes).
    pub reason: Option<String>,
    /// Kind-specific content.
    pub payload: Map<String, Value>,
}

/// An entry's fields by reference, with the payload already in canonical
/// form: the fast path of the sequencer, which canonicalises each payload
/// once on the caller's task and writes the fixed envelope directly.
#[derive(Debug, Clone, Copy)]
pub struct EntryParts<'a> {
    /// Position.
    pub seq: Seq,
    /// Previous entry's hash.
    pub prev: &'a Hash,
    /// `recorded_at` in its 27-character form.
    pub recorded_at: &'a str,
    /// Kind name.
    pub kind: &'a str,
    /// Actor.
    pub actor: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// Correlation ID.
    pub correlation_id: Option<&'a str>,
    /// Idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Parents.
    pub parents: &'a [Hash],
    /// Reason.
    pub reason: Option<&'a str>,
    /// The payload's RFC 8785 bytes.
    pub payload_canonical: &'a [u8],
}

fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // serde_json escapes exactly as RFC 8785 §3.2.2.2 asks: `"` and `\`, the
    // two-character escapes \b \t \n \f \r, other controls as \u00xx in
    // lowercase hex, everything else literal. A test checks it against JCS.
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

fn push_nullable(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(t) => push_json_string(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

impl EntryParts<'_> {
    /// Appends the RFC 8785 canonical bytes of the entry to `out`. The
    /// members are written in JCS order (UTF-16 code-unit order of the
    /// names, which for these ASCII names is byte order).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.reserve(256 + self.payload_canonical.len());
        out.extend_from_slice(b"{\"actor\":");
        push_json_string(out, self.actor);
        out.extend_from_slice(b",\"correlation_id\":");
        push_nullable(out, self.correlation_id);
        out.extend_from_slice(b",\"idempotency_key\":");
        push_nullable(out, self.idempotency_key);
        out.extend_from_slice(b",\"kind\":");
        push_json_string(out, self.kind);
        out.extend_from_slice(b",\"parents\":[");
        for (i, parent) in self.parents.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(parent.to_hex().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"payload\":");
        out.extend_from_slice(self.payload_canonical);
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.prev.to_hex().as_bytes());
        out.extend_from_slice(b"\",\"reason\":");
        push_nullable(out, self.reason);
        out.extend_from_slice(b",\"recorded_at\":");
        push_json_string(out, self.recorded_at);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.extend_from_slice(b",\"subject\":");
        push_json_string(out, self.subject);
        out.extend_from_slice(b",\"v\":");
        out.extend_from_slice(FORMAT_VERSION.to_string().as_bytes());
        out.push(b'}');
    }

    /// Canonical bytes and their hash.
    pub fn seal(&self) -> (Vec<u8>, Hash) {
        let mut bytes = Vec::new();
        self.write_canonical(&mut bytes);
        let hash = leaf_hash(&bytes);
        (bytes, hash)
    }
}

/// The RFC 8785 bytes of a payload object.
pub fn canonical_payload(payload: &Map<String, Value>) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(payload).expect("a JSON map always serialises")
}

#[cfg(test)]
#[derive(Serialize)]
struct Wire<'a> {
    v: u64,
    seq: Seq,
    prev: String,
    recorded_at: String,
    kind: &'a str,
    actor: &'a str,
    subject: &'a str,
    correlation_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    parents: Vec<String>,
    reason: Option<&'a str>,
    payload: &'a Map<String, Value>,
}

impl Entry {
    /// The RFC 8785 canonical bytes: what is stored, exported and hashed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let payload = canonical_payload(&self.payload);
        let recorded_at = self.recorded_at.to_string();
        let mut out = Vec::new();
        EntryParts {
            seq: self.seq,
            prev: &self.prev,
            recorded_at: &recorded_at,
            kind: self.kind.name,
            actor: self.actor.as_str(),
            subject: self.subject.as_str(),
            correlation_id: self.correlation_id.as_deref(),
            idempotency_key: self.idempotency_key.as_deref(),
            parents: &self.parents,
            reason: self.reason.as_deref(),
            payload_canonical: &payload,
        }
        .write_canonical(&mut out);
        out
    }

    /// The canonical bytes as the JCS crate makes them from the whole
    /// entry: the reference the direct writer is tested against.
    #[cfg(test)]
    fn canonical_bytes_by_crate(&self) -> Vec<u8> {
        let wire = Wire {
            v: FORMAT_VERSION,
            seq: self.seq,
            prev: self.prev.to_hex(),
            recorded_at: self.recorded_at.to_string(),
            kind: self.kind.name,
            actor: self.actor.as_str(),
            subject: self.subject.as_str(),
            correlation_id: self.correlation_id.as_deref(),
            idempotency_key: self.idempotency_key.as_deref(),
            parents: self.parents.iter().map(Hash::to_hex).collect(),
            reason: self.reason.as_deref(),
            payload: &self.payload,
        };
        serde_json_canonicalizer::to_vec(&wire)
            .expect("an entry of strings, integers and a JSON map always serialises")
    }

    /// Canonical bytes and their hash.
    pub fn seal(&self) -> (Vec<u8>, Hash) {
        let bytes = self.canonical_bytes();
        let hash = leaf_hash(&bytes);
        (bytes, hash)
    }
}

fn nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// An entry parsed back from its canonical bytes, borrowing from them.
/// Every member must be present (`null` where empty) and no other member may be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsedEntry<'a> {
    /// Format version.
    pub v: u64,
    /// Position.
    pub seq: u64,
    /// Previous hash, hex.
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    /// Sequencing time.
    #[serde(borrow)]
    pub recorded_at: Cow<'a, str>,
    /// Kind name.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Actor.
    #[serde(borrow)]
    pub actor: Cow<'a, str>,
    /// Subject.
    #[serde(borrow)]
    pub subject: Cow<'a, str>,
    /// Correlation ID or null.
    #[serde(borrow, deserialize_with = "nullable")]
    pub correlation_id: Option<Cow<'a, str>>,
    /// Idempotency key or null.
    #[serde(borrow, deserialize_with = "nullable")]
    pub idempotency_key: Option<Cow<'a, str>>,
    /// Parent hashes, hex.
    #[serde(borrow)]
    pub parents: Vec<Cow<'a, str>>,
    /// Reason or null.
    #[serde(borrow, deserialize_with = "nullable")]
    pub reason: Option<Cow<'a, str>>,
    /// The payload's JSON text.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// The checked fields of a parsed entry that verifiers compare.
#[derive(Debug, Clone)]
pub struct CheckedFields {
    /// `seq`.
    pub seq: Seq,
    /// `prev`.
    pub prev: Hash,
    /// `recorded_at`.
    pub recorded_at: Timestamp,
    /// The kind's registry entry.
    pub kind: &'static KindDef,
    /// `parents`.
    pub parents: Vec<Hash>,
}

impl<'a> ParsedEntry<'a> {
    /// Parses canonical bytes into borrowed fields (no field checks yet).
    ///
    /// # Errors
    /// If the bytes are not JSON of the entry's shape.
    pub fn parse(bytes: &'a [u8]) -> Result<ParsedEntry<'a>, EntryError> {
        serde_json::from_slice(bytes).map_err(|e| EntryError::Json(e.to_string()))
    }

    /// Checks every member against `docs/FORMAT.md` §1.
    ///
    /// # Errors
    /// The first member that breaks a rule.
    pub fn check(&self) -> Result<CheckedFields, EntryError> {
        if self.v != FORMAT_VERSION {
            return Err(field_error(
                "v",
                format!("must be {FORMAT_VERSION}, found {}", self.v),
            ));
        }
        if self.seq > (1 << 53) - 1 {
            return Err(field_error("seq", "must be at most 2^53 - 1"));
        }
        let prev = Hash::parse_hex(&self.prev).map_err(|p| field_error("prev", p.to_string()))?;
        let recorded_at = Timestamp::parse(&self.recorded_at)?;
        if !kind::is_well_formed(&self.kind) {
            return Err(field_error(
                "kind",
                "must be lowercase dotted segments, e.g. `qms.capa.opened`",
            ));
        }
        let kind = kind::lookup(&self.kind).ok_or_else(|| {
            field_error("kind", format!("`{}` is not a registered kind", self.kind))
        })?;
        Actor::check(&self.actor)?;
        Subject::check(&self.subject)?;
        check_token_field("correlation_id", self.correlation_id.as_deref(), 128)?;
        check_token_field("idempotency_key", self.idempotency_key.as_deref(), 256)?;
        let parents = self
            .parents
            .iter()
            .map(|p| Hash::parse_hex(p).map_err(|e| field_error("parents", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        check_parents(kind, &parents)?;
        check_reason(kind, self.reason.as_deref())?;
        let payload = self.payload.get();
        if !payload.starts_with('{') {
            return Err(field_error("payload", "must be a JSON object"));
        }
        if payload.len() > PAYLOAD_MAX_BYTES {
            return Err(field_error(
                "payload",
                format!("must be at most {PAYLOAD_MAX_BYTES} bytes in canonical form"),
            ));
        }
        Ok(CheckedFields {
            // Below 2^53, so a seq.
            seq: Seq::new(self.seq)
                .ok_or_else(|| field_error("seq", "must be at most 2^53 - 1"))?,
            prev,
            recorded_at,
            kind,
            parents,
        })
    }
}

/// Whether `bytes` are exactly the RFC 8785 form of the JSON they contain.
pub fn is_canonical(bytes: &[u8]) -> bool {
    super::jcs::is_canonical(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut payload = Map::new();
        payload.insert("document".into(), Value::from("SOP-017"));
        payload.insert("version".into(), Value::from(4));
        payload.insert(
            "title".into(),
            Value::from("Reinigung der Abfüllanlage — Zoë"),
        );
        Entry {
            seq: Seq::new(1).unwrap(),
            prev: Hash::sha256(&[b"x"]),
            recorded_at: Timestamp::parse("2026-11-21T09:41:07.512311Z").unwrap(),
            kind: &kind::QMS_DOCUMENT_REVISION_EFFECTIVE,
            actor: Actor::parse("service:qms").unwrap(),
            subject: Subject::parse("qms:sop/SOP-017@4").unwrap(),
            correlation_id: Some("corr-1".into()),
            idempotency_key: None,
            parents: vec![],
            reason: None,
            payload,
        }
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_and_parse_back() {
        let entry = sample();
        let (bytes, hash) = entry.seal();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(
            r#"{"actor":"service:qms","correlation_id":"corr-1","idempotency_key":null,"kind":"#
        ));
        assert!(text.ends_with(r#""seq":1,"subject":"qms:sop/SOP-017@4","v":1}"#));
        assert!(is_canonical(&bytes));
        assert_eq!(hash, leaf_hash(&bytes));
        let parsed = ParsedEntry::parse(&bytes).unwrap();
        let fields = parsed.check().unwrap();
        assert_eq!(fields.seq.get(), 1);
        assert_eq!(fields.prev, entry.prev);
        assert_eq!(fields.recorded_at, entry.recorded_at);
    }

    #[test]
    fn missing_extra_or_mistyped_members_are_rejected() {
        let (bytes, _) = sample().seal();
        let mut value: Value = serde_json::from_slice(&bytes).unwrap();
        value.as_object_mut().unwrap().remove("reason");
        assert!(
            ParsedEntry::parse(&serde_json::to_vec(&value).unwrap()).is_err(),
            "missing reason must fail"
        );
        let mut value: Value = serde_json::from_slice(&bytes).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .insert("extra".into(), Value::Null);
        assert!(ParsedEntry::parse(&serde_json::to_vec(&value).unwrap()).is_err());
        let mut value: Value = serde_json::from_slice(&bytes).unwrap();
        value["seq"] = Value::from("1");
        assert!(ParsedEntry::parse(&serde_json::to_vec(&value).unwrap()).is_err());
    }

    #[test]
    fn field_rules() {
        assert!(Actor::parse("service:qms").is_ok());
        assert!(Actor::parse("qms").is_err());
        assert!(Actor::parse("user:bad name").is_err());
        assert!(Subject::parse("qms:capa/CAPA-2026-014").is_ok());
        assert!(Subject::parse("QMS:x").is_err());
        assert!(Subject::parse("qms:").is_err());
        assert!(Subject::parse("qms:has space").is_err());
        assert!(Timestamp::parse("2026-11-21T09:41:07.512311Z").is_ok());
        assert!(Timestamp::parse("2026-11-21T09:41:07.5123Z").is_err());
        assert!(Timestamp::parse("2026-11-21T09:41:07.512311+00:00").is_err());
        let correction = &kind::LEDGER_CORRECTION;
        assert!(check_reason(correction, None).is_err());
        assert!(check_reason(correction, Some("  ")).is_err());
        assert!(check_reason(correction, Some("typo in lot number")).is_ok());
        assert!(check_parents(correction, &[]).is_err());
        let h = Hash::sha256(&[b"p"]);
        assert!(check_parents(correction, &[h, h]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_direct_writer_equals_rfc8785_of_the_whole_entry(
            actor in "[A-Za-z0-9._@-]{1,20}",
            subject in "[!-~]{1,40}",
            reason in proptest::option::of("\\PC{0,30}|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}\u{e9}]{0,10}"),
            text in "\\PC{0,30}|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}]{0,10}",
            number in proptest::num::f64::NORMAL,
            seq in 0u64..(1 << 53),
            parents in 0usize..3,
        ) {
            let mut payload = Map::new();
            payload.insert(text.clone(), Value::from(text.clone()));
            payload.insert("n".into(), serde_json::Number::from_f64(number).map(Value::Number).unwrap_or(Value::Null));
            payload.insert("nested".into(), serde_json::json!({"z": [1, 2.5, null], "a": {"é": true}}));
            let entry = Entry {
                seq: Seq::new(seq).unwrap(),
                prev: Hash::sha256(&[b"p"]),
                recorded_at: Timestamp::now(),
                kind: &kind::LEDGER_ANNOTATION,
                actor: Actor::parse(&format!("user:{actor}")).unwrap(),
                subject: Subject::parse(&format!("qms:{subject}")).unwrap(),
                correlation_id: Some(subject.clone()),
                idempotency_key: None,
                parents: (0..parents).map(|i| Hash::sha256(&[&[i as u8]])).collect(),
                reason,
                payload,
            };
            proptest::prop_assert_eq!(entry.canonical_bytes(), entry.canonical_bytes_by_crate());
        }
    }

    #[test]
    fn non_canonical_bytes_are_noticed() {
        assert!(is_canonical(br#"{"a":1,"b":[1,2]}"#));
        assert!(!is_canonical(br#"{"b":1,"a":2}"#));
        assert!(!is_canonical(br#"{"a": 1}"#));
        assert!(!is_canonical(br#"{"a":1.0}"#));
    }
}
