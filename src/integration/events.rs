//! The event contract (docs/INTEGRATION.md §1): CloudEvents 1.0 envelopes,
//! the registry of accepted types and versions, their schemas (generated
//! from the same types that parse them), upcasting and validation.

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{PartialSchema, ToSchema};

use crate::ledger::Timestamp;

/// Most events in one batch.
pub const BATCH_MAX: usize = 1_000;

/// Which system a type belongs to (and so which principals may send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Quality management.
    Qms,
    /// Learning management.
    Lms,
    /// Human resources.
    Hr,
}

impl System {
    /// Its name in `[integration.senders]`.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Qms => "qms",
            System::Lms => "lms",
            System::Hr => "hr",
        }
    }
}

/// One accepted event type.
#[derive(Debug)]
pub struct EventType {
    /// Name without the version suffix.
    pub name: &'static str,
    /// The current version.
    pub current: u32,
    /// Older versions that are upcast.
    pub upcast_from: &'static [u32],
    /// The sending system.
    pub system: System,
    /// The entry kind it is recorded as.
    pub kind: &'static str,
    /// One line.
    pub description: &'static str,
}

/// Every accepted type (docs/INTEGRATION.md §1.2; docs/EVENTS.md).
pub static TYPES: &[EventType] = &[
    EventType {
        name: "hr.person.changed",
        current: 1,
        upcast_from: &[],
        system: System::Hr,
        kind: "hr.person.updated",
        description: "a person's name, status and the whole history of their job functions",
    },
    EventType {
        name: "qms.job_function.changed",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.job_function.changed",
        description: "a job function was created, renamed or deactivated",
    },
    EventType {
        name: "qms.training_category.changed",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.training_category.changed",
        description: "the completion window of a document category",
    },
    EventType {
        name: "qms.training_matrix.changed",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.training_matrix.changed",
        description: "the job functions that must be trained on a document (the whole list)",
    },
    EventType {
        name: "qms.document.revision_effective",
        current: 2,
        upcast_from: &[1],
        system: System::Qms,
        kind: "qms.document.revision_effective",
        description: "a controlled document version became (or becomes) effective",
    },
    EventType {
        name: "qms.document.revision_retired",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.document.revision_retired",
        description: "a controlled document version was retired",
    },
    EventType {
        name: "qms.capa.training_action",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.capa.training_action",
        description: "a CAPA requires retraining of job functions or people",
    },
    EventType {
        name: "qms.deviation.opened",
        current: 1,
        upcast_from: &[],
        system: System::Qms,
        kind: "qms.deviation.opened",
        description: "a deviation naming the people involved, the procedure and the time of the event",
    },
    EventType {
        name: "lms.completion.recorded",
        current: 1,
        upcast_from: &[],
        system: System::Lms,
        kind: "lms.completion.recorded",
        description: "a person completed (or passed an assessment on) a document version",
    },
];

/// Looks a type up by name (without version).
pub fn lookup(name: &str) -> Option<&'static EventType> {
    TYPES.iter().find(|t| t.name == name)
}

/// A span of a person's job function (valid time).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpan {
    /// Job function ID.
    pub job_function: String,
    /// Start of the assignment to the function (RFC 3339).
    #[schema(format = DateTime)]
    pub valid_from: String,
    /// End, exclusive (RFC 3339); absent while current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub valid_to: Option<String>,
}

/// `hr.person.changed.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersonChanged {
    /// Person (employee) ID.
    pub person_id: String,
    /// Legal name.
    pub name: String,
    /// Whether the person is employed and must be trained.
    pub active: bool,
    /// The whole history of job functions (replaces what was known).
    #[schema(inline)]
    pub job_functions: Vec<FunctionSpan>,
}

/// `qms.job_function.changed.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobFunctionChanged {
    /// Job function ID.
    pub job_function: String,
    /// Display name.
    pub name: String,
    /// Whether it is in use.
    pub active: bool,
}

/// `qms.training_category.changed.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoryChanged {
    /// Document category, e.g. `SOP`, `WI`.
    pub category: String,
    /// Days from effective date to due date (1 to 3650).
    pub completion_window_days: u32,
}

/// `qms.training_matrix.changed.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatrixChanged {
    /// Document ID.
    pub document_id: String,
    /// Every job function that must be trained on it (replaces the list).
    pub job_functions: Vec<String>,
}

/// `qms.document.revision_effective.v2`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevisionEffective {
    /// Document ID.
    pub document_id: String,
    /// Version (revision) label.
    pub version: String,
    /// When it is effective (RFC 3339).
    #[schema(format = DateTime)]
    pub effective_at: String,
    /// Document category (decides the completion window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `qms.document.revision_effective.v1` (upcast to v2).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevisionEffectiveV1 {
    /// Document ID.
    pub document_id: String,
    /// Revision label.
    pub revision: String,
    /// Effective date (`YYYY-MM-DD`, UTC midnight).
    #[schema(format = Date)]
    pub effective_date: String,
}

/// `qms.document.revision_retired.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RevisionRetired {
    /// Document ID.
    pub document_id: String,
    /// Version label.
    pub version: String,
    /// When it stopped being effective (RFC 3339).
    #[schema(format = DateTime)]
    pub retired_at: String,
}

/// `qms.capa.training_action.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapaTrainingAction {
    /// CAPA ID.
    pub capa_id: String,
    /// Action ID within the CAPA.
    pub action_id: String,
    /// Document to retrain on.
    pub document_id: String,
    /// Its version.
    pub version: String,
    /// Job functions to retrain (everyone active in them).
    #[serde(default)]
    pub job_functions: Vec<String>,
    /// People to retrain by ID.
    #[serde(default)]
    pub people: Vec<String>,
    /// Due date (`YYYY-MM-DD`, end of day UTC).
    #[schema(format = Date)]
    pub due_date: String,
    /// Whether a trainer's verification (`passed` with `verified_by`) is needed.
    pub verification_required: bool,
}

/// `qms.deviation.opened.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviationOpened {
    /// Deviation ID.
    pub deviation_id: String,
    /// People involved.
    pub people: Vec<String>,
    /// The procedure followed.
    pub document_id: String,
    /// When the event happened (RFC 3339).
    #[schema(format = DateTime)]
    pub occurred_at: String,
}

/// `lms.completion.recorded.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompletionRecorded {
    /// Person ID.
    pub person_id: String,
    /// Document ID.
    pub document_id: String,
    /// The version trained on.
    pub version: String,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub completed_at: String,
    /// `completed`, or `passed` for an assessed completion.
    pub outcome: Outcome,
    /// Trainer who verified (with `passed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The LMS's assignment ID, when it echoes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
}

/// A completion's outcome.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Completed.
    Completed,
    /// Passed an assessment.
    Passed,
}

/// Parsed, upcast and checked data of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// `hr.person.changed`.
    Person(PersonChanged),
    /// `qms.job_function.changed`.
    JobFunction(JobFunctionChanged),
    /// `qms.training_category.changed`.
    Category(CategoryChanged),
    /// `qms.training_matrix.changed`.
    Matrix(MatrixChanged),
    /// `qms.document.revision_effective`.
    Effective(RevisionEffective),
    /// `qms.document.revision_retired`.
    Retired(RevisionRetired),
    /// `qms.capa.training_action`.
    CapaAction(CapaTrainingAction),
    /// `qms.deviation.opened`.
    Deviation(DeviationOpened),
    /// `lms.completion.recorded`.
    Completion(CompletionRecorded),
}

impl EventData {
    /// The subject of the entry that records it.
    pub fn subject(&self) -> String {
        match self {
            EventData::Person(d) => format!("person:{}", d.person_id),
            EventData::JobFunction(d) => format!("qms:job_function/{}", d.job_function),
            EventData::Category(d) => format!("qms:training_category/{}", d.category),
            EventData::Matrix(d) => format!("qms:document/{}", d.document_id),
            EventData::Effective(d) => format!("qms:document/{}@{}", d.document_id, d.version),
            EventData::Retired(d) => format!("qms:document/{}@{}", d.document_id, d.version),
            EventData::CapaAction(d) => format!("qms:capa/{}", d.capa_id),
            EventData::Deviation(d) => format!("qms:deviation/{}", d.deviation_id),
            EventData::Completion(d) => format!("person:{}", d.person_id),
        }
    }

    /// As JSON (the entry's `payload.data`).
    pub fn to_value(&self) -> Value {
        let v = match self {
            EventData::Person(d) => serde_json::to_value(d),
            EventData::JobFunction(d) => serde_json::to_value(d),
            EventData::Category(d) => serde_json::to_value(d),
            EventData::Matrix(d) => serde_json::to_value(d),
            EventData::Effective(d) => serde_json::to_value(d),
            EventData::Retired(d) => serde_json::to_value(d),
            EventData::CapaAction(d) => serde_json::to_value(d),
            EventData::Deviation(d) => serde_json::to_value(d),
            EventData::Completion(d) => serde_json::to_value(d),
        };
        v.unwrap_or(Value::Null)
    }

    /// Parses stored data of a current-version type (from an entry).
    ///
    /// # Errors
    /// If the kind is not an event kind or the data does not parse.
    pub fn from_entry(kind: &str, data: Value) -> Result<EventData, EventError> {
        let t = TYPES
            .iter()
            .find(|t| t.kind == kind)
            .ok_or_else(|| EventError::new("type", format!("`{kind}` is not an event kind")))?;
        parse_current(t.name, data, "data")
    }
}

/// Why an event was refused: the member and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EventError {
    /// The member, as a path (`data.effective_at`).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl EventError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> EventError {
        EventError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error under a prefix (`events[3]`).
    pub fn under(mut self, prefix: &str) -> EventError {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// A CloudEvent as received, before checking the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type` as sent.
    pub type_sent: String,
    /// `time`.
    pub time: Option<String>,
    /// `subject` (kept, not used).
    pub subject: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// Extension `correlationid`.
    pub correlation_id: Option<String>,
    /// `data`.
    pub data: Value,
}

/// A checked event, ready to record.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The envelope.
    pub envelope: Envelope,
    /// Its type.
    pub event_type: &'static EventType,
    /// The version sent.
    pub version: u32,
    /// Upcast and checked data.
    pub data: EventData,
    /// `source_signatures` carried in `data`, kept as SIGNATURES.md §8 says.
    pub source_signatures: Option<Value>,
    /// Normalised `time` (RFC 3339 UTC, microseconds).
    pub time: Option<String>,
}

impl Checked {
    /// The idempotency key: `ce:` + hex SHA-256(source || LF || id).
    pub fn idempotency_key(&self) -> String {
        idempotency_key(&self.envelope.source, &self.envelope.id)
    }

    /// The entry payload (§1.1).
    pub fn payload(&self) -> Map<String, Value> {
        let mut event = Map::new();
        event.insert("id".into(), Value::String(self.envelope.id.clone()));
        event.insert("source".into(), Value::String(self.envelope.source.clone()));
        event.insert(
            "type".into(),
            Value::String(self.envelope.type_sent.clone()),
        );
        if let Some(t) = &self.time {
            event.insert("time".into(), Value::String(t.clone()));
        }
        if self.version != self.event_type.current {
            event.insert(
                "upcast_to".into(),
                Value::String(format!(
                    "{}.v{}",
                    self.event_type.name, self.event_type.current
                )),
            );
        }
        let mut payload = Map::new();
        payload.insert("event".into(), Value::Object(event));
        payload.insert("data".into(), self.data.to_value());
        if let Some(s) = &self.source_signatures {
            payload.insert("source_signatures".into(), s.clone());
        }
        payload
    }
}

/// The idempotency key of `source` + `id`.
pub fn idempotency_key(source: &str, id: &str) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(b"\n");
    h.update(id.as_bytes());
    format!("ce:{}", hex::encode(h.finalize()))
}

/// Reads a structured-mode event (one JSON object).
///
/// # Errors
/// A missing or malformed attribute, named.
pub fn structured(value: Value) -> Result<Envelope, EventError> {
    let Value::Object(mut map) = value else {
        return Err(EventError::new("", "an event must be a JSON object"));
    };
    let mut text = |name: &str, required: bool| -> Result<Option<String>, EventError> {
        match map.remove(name) {
            Some(Value::String(s)) => Ok(Some(s)),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(EventError::new(
                name,
                "is required (CloudEvents 1.0 context attribute)",
            )),
            Some(_) => Err(EventError::new(name, "must be a string")),
        }
    };
    let specversion = text("specversion", true)?.unwrap_or_default();
    let id = text("id", true)?.unwrap_or_default();
    let source = text("source", true)?.unwrap_or_default();
    let type_sent = text("type", true)?.unwrap_or_default();
    let time = text("time", false)?;
    let subject = text("subject", false)?;
    let dataschema = text("dataschema", false)?;
    let correlation_id = text("correlationid", false)?;
    let content_type = text("datacontenttype", false)?;
    if map.contains_key("data_base64") {
        return Err(EventError::new(
            "data_base64",
            "is not accepted: every event type carries JSON `data`",
        ));
    }
    let data = map.remove("data").unwrap_or(Value::Null);
    if let Some(ct) = content_type
        && !ct.starts_with("application/json")
    {
        return Err(EventError::new(
            "datacontenttype",
            format!("`{ct}` is not accepted; use application/json"),
        ));
    }
    let envelope = Envelope {
        id,
        source,
        type_sent,
        time,
        subject,
        dataschema,
        correlation_id,
        data,
    };
    check_envelope(&envelope, &specversion)?;
    Ok(envelope)
}

/// Checks the context attributes common to every mode.
///
/// # Errors
/// The first attribute that is wrong.
pub fn check_envelope(e: &Envelope, specversion: &str) -> Result<(), EventError> {
    if specversion != "1.0" {
        return Err(EventError::new(
            "specversion",
            format!("`{specversion}` is not supported; send \"1.0\""),
        ));
    }
    for (name, value, max) in [("id", &e.id, 256), ("source", &e.source, 512)] {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(EventError::new(
                name,
                format!("must be 1 to {max} characters without control characters"),
            ));
        }
    }
    if let Some(c) = &e.correlation_id
        && crate::ledger::entry::check_token_field("correlation_id", Some(c), 128).is_err()
    {
        return Err(EventError::new(
            "correlationid",
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// The type name and version an envelope names.
///
/// # Errors
/// Unknown type, unknown version, or no version anywhere.
pub fn resolve_type(e: &Envelope) -> Result<(&'static EventType, u32), EventError> {
    let (name, version) = match e.type_sent.rsplit_once(".v") {
        Some((name, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            (name, v.parse::<u32>().ok())
        }
        _ => (e.type_sent.as_str(), None),
    };
    let t = lookup(name).ok_or_else(|| {
        EventError::new(
            "type",
            format!(
                "`{}` is not an accepted event type; GET /v1/schemas lists them",
                e.type_sent
            ),
        )
    })?;
    let from_schema = e.dataschema.as_deref().and_then(|s| {
        let (_, tail) = s.rsplit_once(&format!("/schemas/{name}/v"))?;
        tail.parse::<u32>().ok()
    });
    let version = match (version, from_schema) {
        (Some(a), Some(b)) if a != b => {
            return Err(EventError::new(
                "dataschema",
                format!("names version {b} but the type names version {a}"),
            ));
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            return Err(EventError::new(
                "type",
                format!(
                    "`{}` carries no version: send `{name}.v{}` or a dataschema ending in /schemas/{name}/v{}",
                    e.type_sent, t.current, t.current
                ),
            ));
        }
    };
    if version != t.current && !t.upcast_from.contains(&version) {
        let mut accepted: Vec<String> = t.upcast_from.iter().map(|v| format!("v{v}")).collect();
        accepted.push(format!("v{}", t.current));
        return Err(EventError::new(
            "type",
            format!(
                "`{name}` version {version} is unknown; accepted: {}",
                accepted.join(", ")
            ),
        ));
    }
    Ok((t, version))
}

/// Checks an envelope's data against its type: upcast, parse (unknown
/// members refused), then the value rules.
///
/// # Errors
/// The member that is wrong.
pub fn check(envelope: Envelope) -> Result<Checked, EventError> {
    let (event_type, version) = resolve_type(&envelope)?;
    let time = match &envelope.time {
        Some(t) => Some(normalise_time(t).map_err(|e| EventError::new("time", e.to_string()))?),
        None => None,
    };
    let mut data = envelope.data.clone();
    let source_signatures = match &mut data {
        Value::Object(map) => map.remove("source_signatures"),
        _ => None,
    };
    if let Some(list) = &source_signatures {
        // The shared check reads them where an entry payload keeps them.
        let mut payload = Map::new();
        payload.insert("source_signatures".into(), list.clone());
        crate::identity::signature::check_source_signatures(&payload).map_err(|e| {
            EventError::new(
                "data.source_signatures",
                e.to_string().replace("payload.", "data."),
            )
        })?;
    }
    let parsed = if version == event_type.current {
        parse_current(event_type.name, data, "data")?
    } else {
        upcast(event_type.name, version, data)?
    };
    validate(&parsed).map_err(|e| e.under("data"))?;
    Ok(Checked {
        envelope,
        event_type,
        version,
        data: parsed,
        source_signatures,
        time,
    })
}

fn typed<T: DeserializeOwned>(data: Value, prefix: &str) -> Result<T, EventError> {
    if !data.is_object() {
        return Err(EventError::new(prefix, "must be a JSON object"));
    }
    serde_path_to_error::deserialize::<_, T>(data).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        EventError::new(field, e.into_inner().to_string())
    })
}

fn parse_current(name: &str, data: Value, prefix: &str) -> Result<EventData, EventError> {
    Ok(match name {
        "hr.person.changed" => EventData::Person(typed(data, prefix)?),
        "qms.job_function.changed" => EventData::JobFunction(typed(data, prefix)?),
        "qms.training_category.changed" => EventData::Category(typed(data, prefix)?),
        "qms.training_matrix.changed" => EventData::Matrix(typed(data, prefix)?),
        "qms.document.revision_effective" => EventData::Effective(typed(data, prefix)?),
        "qms.document.revision_retired" => EventData::Retired(typed(data, prefix)?),
        "qms.capa.training_action" => EventData::CapaAction(typed(data, prefix)?),
        "qms.deviation.opened" => EventData::Deviation(typed(data, prefix)?),
        "lms.completion.recorded" => EventData::Completion(typed(data, prefix)?),
        other => return Err(EventError::new("type", format!("`{other}` has no parser"))),
    })
}

fn upcast(name: &str, version: u32, data: Value) -> Result<EventData, EventError> {
    match (name, version) {
        ("qms.document.revision_effective", 1) => {
            let v1: RevisionEffectiveV1 = typed(data, "data")?;
            let date = NaiveDate::parse_from_str(&v1.effective_date, "%Y-%m-%d").map_err(|_| {
                EventError::new(
                    "data.effective_date",
                    format!("`{}` is not a date (YYYY-MM-DD)", v1.effective_date),
                )
            })?;
            Ok(EventData::Effective(RevisionEffective {
                document_id: v1.document_id,
                version: v1.revision,
                effective_at: format!("{date}T00:00:00Z"),
                category: None,
                title: None,
            }))
        }
        _ => Err(EventError::new(
            "type",
            format!("no upcast from `{name}` version {version}"),
        )),
    }
}

/// An identifier: 1 to 64 of `A-Z a-z 0-9 . _ - /`.
fn check_id(field: &str, value: &str) -> Result<(), EventError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EventError::new(
            field,
            format!("`{value}` must be 1 to 64 of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// A time that is not RFC 3339 with an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 time with an offset")]
pub struct TimeError {
    /// The time as given.
    pub text: String,
}

/// Parses an RFC 3339 time with an offset and writes it as Trailmark
/// stores times (UTC, six fractional digits).
///
/// # Errors
/// If it is not RFC 3339.
pub fn normalise_time(text: &str) -> Result<String, TimeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)).to_string())
        .map_err(|_| TimeError {
            text: text.to_owned(),
        })
}

fn time_field(field: &str, text: &str) -> Result<(), EventError> {
    normalise_time(text)
        .map(|_| ())
        .map_err(|e| EventError::new(field, e.to_string()))
}

fn date_field(field: &str, text: &str) -> Result<(), EventError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| EventError::new(field, format!("`{text}` is not a date (YYYY-MM-DD)")))
}

fn ids(field: &str, values: &[String]) -> Result<(), EventError> {
    for (i, v) in values.iter().enumerate() {
        check_id(&format!("{field}[{i}]"), v)?;
    }
    Ok(())
}

/// The value rules the schema's types cannot say.
fn validate(d: &EventData) -> Result<(), EventError> {
    match d {
        EventData::Person(p) => {
            check_id("person_id", &p.person_id)?;
            if p.name.trim().is_empty() {
                return Err(EventError::new("name", "must not be empty"));
            }
            for (i, s) in p.job_functions.iter().enumerate() {
                check_id(&format!("job_functions[{i}].job_function"), &s.job_function)?;
                time_field(&format!("job_functions[{i}].valid_from"), &s.valid_from)?;
                if let Some(to) = &s.valid_to {
                    time_field(&format!("job_functions[{i}].valid_to"), to)?;
                    if normalise_time(to).ok() <= normalise_time(&s.valid_from).ok() {
                        return Err(EventError::new(
                            format!("job_functions[{i}].valid_to"),
                            "must be after valid_from",
                        ));
                    }
                }
            }
        }
        EventData::JobFunction(j) => check_id("job_function", &j.job_function)?,
        EventData::Category(c) => {
            check_id("category", &c.category)?;
            if !(1..=3650).contains(&c.completion_window_days) {
                return Err(EventError::new(
                    "completion_window_days",
                    "must be 1 to 3650",
                ));
            }
        }
        EventData::Matrix(m) => {
            check_id("document_id", &m.document_id)?;
            ids("job_functions", &m.job_functions)?;
        }
        EventData::Effective(e) => {
            check_id("document_id", &e.document_id)?;
            check_id("version", &e.version)?;
            time_field("effective_at", &e.effective_at)?;
            if let Some(c) = &e.category {
                check_id("category", c)?;
            }
        }
        EventData::Retired(r) => {
            check_id("document_id", &r.document_id)?;
            check_id("version", &r.version)?;
            time_field("retired_at", &r.retired_at)?;
        }
        EventData::CapaAction(a) => {
            check_id("capa_id", &a.capa_id)?;
            check_id("action_id", &a.action_id)?;
            check_id("document_id", &a.document_id)?;
            check_id("version", &a.version)?;
            ids("job_functions", &a.job_functions)?;
            ids("people", &a.people)?;
            date_field("due_date", &a.due_date)?;
            if a.job_functions.is_empty() && a.people.is_empty() {
                return Err(EventError::new(
                    "people",
                    "name at least one person or job function to retrain",
                ));
            }
        }
        EventData::Deviation(d) => {
            check_id("deviation_id", &d.deviation_id)?;
            check_id("document_id", &d.document_id)?;
            ids("people", &d.people)?;
            if d.people.is_empty() {
                return Err(EventError::new("people", "name the people involved"));
            }
            time_field("occurred_at", &d.occurred_at)?;
        }
        EventData::Completion(c) => {
            check_id("person_id", &c.person_id)?;
            check_id("document_id", &c.document_id)?;
            check_id("version", &c.version)?;
            time_field("completed_at", &c.completed_at)?;
            if let Some(v) = &c.verified_by {
                check_id("verified_by", v)?;
            }
        }
    }
    Ok(())
}

/// The JSON Schema (2020-12) of a type's version, or `None` if unknown.
pub fn schema(name: &str, version: u32) -> Option<Value> {
    let t = lookup(name)?;
    let schema = match (name, version) {
        ("hr.person.changed", 1) => PersonChanged::schema(),
        ("qms.job_function.changed", 1) => JobFunctionChanged::schema(),
        ("qms.training_category.changed", 1) => CategoryChanged::schema(),
        ("qms.training_matrix.changed", 1) => MatrixChanged::schema(),
        ("qms.document.revision_effective", 2) => RevisionEffective::schema(),
        ("qms.document.revision_effective", 1) => RevisionEffectiveV1::schema(),
        ("qms.document.revision_retired", 1) => RevisionRetired::schema(),
        ("qms.capa.training_action", 1) => CapaTrainingAction::schema(),
        ("qms.deviation.opened", 1) => DeviationOpened::schema(),
        ("lms.completion.recorded", 1) => {
            let mut s = serde_json::to_value(CompletionRecorded::schema()).ok()?;
            s["properties"]["outcome"] = serde_json::json!({
                "type": "string", "enum": ["completed", "passed"],
                "description": "`completed`, or `passed` for an assessed completion"
            });
            return Some(finish_schema(t, version, s));
        }
        _ => return None,
    };
    Some(finish_schema(
        t,
        version,
        serde_json::to_value(schema).ok()?,
    ))
}

fn finish_schema(t: &EventType, version: u32, mut s: Value) -> Value {
    if let Value::Object(map) = &mut s {
        map.insert(
            "$schema".into(),
            Value::String("https://json-schema.org/draft/2020-12/schema".into()),
        );
        map.insert(
            "$id".into(),
            Value::String(format!("/v1/schemas/{}/v{version}", t.name)),
        );
        map.insert(
            "title".into(),
            Value::String(format!("{}.v{version}", t.name)),
        );
        map.insert("description".into(), Value::String(t.description.into()));
        map.insert("additionalProperties".into(), Value::Bool(false));
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            props.insert(
                "source_signatures".into(),
                serde_json::json!({
                    "type": "array", "maxItems": 16,
                    "description": "signatures applied in the source system (docs/SIGNATURES.md §8), kept on the entry",
                    "items": {"type": "object", "required": ["signer", "meaning", "signed_at", "system"]}
                }),
            );
        }
    }
    s
}

/// Every (type, version) with a schema, for `GET /v1/schemas`.
pub fn schema_list() -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    for t in TYPES {
        for v in t.upcast_from {
            out.push((t.name.to_owned(), *v, false));
        }
        out.push((t.name.to_owned(), t.current, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(t: &str, data: Value) -> Envelope {
        Envelope {
            id: "e1".into(),
            source: "qms://x".into(),
            type_sent: t.into(),
            time: None,
            subject: None,
            dataschema: None,
            correlation_id: None,
            data,
        }
    }

    #[test]
    fn v1_revision_is_upcast_to_v2() {
        let c = check(env(
            "qms.document.revision_effective.v1",
            json!({"document_id": "SOP-017", "revision": "4", "effective_date": "2026-03-01"}),
        ))
        .unwrap();
        assert_eq!(
            c.data,
            EventData::Effective(RevisionEffective {
                document_id: "SOP-017".into(),
                version: "4".into(),
                effective_at: "2026-03-01T00:00:00Z".into(),
                category: None,
                title: None,
            })
        );
        assert_eq!(
            c.payload()["event"]["upcast_to"],
            "qms.document.revision_effective.v2"
        );
    }

    #[test]
    fn unknown_version_and_unversioned_types_are_refused_with_the_accepted_ones() {
        let e = check(env("qms.document.revision_effective.v7", json!({}))).unwrap_err();
        assert!(e.message.contains("accepted: v1, v2"), "{e}");
        let e = check(env("qms.document.revision_effective", json!({}))).unwrap_err();
        assert!(e.message.contains("carries no version"), "{e}");
        let mut with_schema = env(
            "qms.document.revision_retired",
            json!({"document_id": "D", "version": "1", "retired_at": "2026-01-01T00:00:00Z"}),
        );
        with_schema.dataschema = Some("https://x/schemas/qms.document.revision_retired/v1".into());
        check(with_schema).unwrap();
    }

    #[test]
    fn a_bad_member_is_named_by_its_path() {
        let e = check(env(
            "hr.person.changed.v1",
            json!({"person_id": "E1", "name": "A", "active": true,
                   "job_functions": [{"job_function": "OP", "valid_from": "yesterday"}]}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "data.job_functions[0].valid_from");
        let e = check(env(
            "hr.person.changed.v1",
            json!({"person_id": "E1", "name": "A", "active": true, "job_functions": [], "extra": 1}),
        ))
        .unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{e}");
        let e = check(env(
            "lms.completion.recorded.v1",
            json!({"person_id": "E1", "document_id": "D", "version": "1",
                   "completed_at": "2026-01-01T00:00:00Z", "outcome": "attended"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "data.outcome");
    }

    #[test]
    fn every_type_and_version_has_a_closed_schema_naming_its_required_members() {
        for (name, version, _) in schema_list() {
            let s = schema(&name, version).unwrap_or_else(|| panic!("{name} v{version}"));
            assert_eq!(s["additionalProperties"], false, "{name}");
            assert!(
                s["required"].as_array().is_some_and(|r| !r.is_empty()),
                "{name}"
            );
            assert_eq!(s["title"], format!("{name}.v{version}"));
        }
        let s = schema("qms.document.revision_effective", 2).unwrap();
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(required, ["document_id", "version", "effective_at"]);
    }

    #[test]
    fn the_idempotency_key_is_unambiguous_because_control_characters_are_refused() {
        // LF separates source and id in the key, so neither may hold one.
        let mut e = env("qms.deviation.opened.v1", json!({}));
        e.source = "a\nb".into();
        assert_eq!(check_envelope(&e, "1.0").unwrap_err().field, "source");
        assert_eq!(idempotency_key("s", "i").len(), 3 + 64);
        assert_eq!(idempotency_key("s", "i"), idempotency_key("s", "i"));
    }
}
