//! The registry of entry kinds: every `kind` the ledger accepts, with its class.
//!
//! The class decides the rules of `docs/FORMAT.md` §1.3 (whether `reason` is
//! required, whether a first parent is required). A kind not in this list is
//! rejected at the API and by `verify`.
//!
//! Each kind is a named static (`integration.event.applied` is
//! [`INTEGRATION_EVENT_APPLIED`]), so code that writes a kind names it and the
//! compiler checks it; [`lookup`] is for names that arrive as text (the API,
//! stored entries).

/// What sort of fact an entry records; decides which fields are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Entry 0 only.
    Genesis,
    /// A quality, training or integration fact.
    Record,
    /// Corrects an earlier entry (its first parent), with a reason.
    Correction,
    /// A change to configuration, principals, tokens or keys, with a reason.
    Administrative,
    /// An access-control event.
    Security,
    /// A Part 11 signature on the entry named as its only parent.
    Signature,
}

impl Class {
    /// The class's name as written in `docs/FORMAT.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Genesis => "genesis",
            Class::Record => "record",
            Class::Correction => "correction",
            Class::Administrative => "administrative",
            Class::Security => "security",
            Class::Signature => "signature",
        }
    }

    /// Whether entries of this class must carry a non-null `reason`.
    pub fn requires_reason(self) -> bool {
        matches!(self, Class::Correction | Class::Administrative)
    }
}

/// Who may write entries of a kind (docs/FORMAT.md §1.3, "written by").
///
/// `POST /v1/entries` accepts only [`Writers::Callers`] kinds; the others are
/// written by Trailmark's own paths, and `trailmark verify` checks the rule
/// that each class of writer leaves visible in the entry ([`check_writer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Any authenticated caller through `POST /v1/entries`.
    Callers,
    /// A source system's fact, recorded by `POST /v1/events` or
    /// `POST /xapi/statements` with its envelope, where the rules apply it.
    SourceEvents,
    /// Trailmark's rules worker (actor `system:rules`).
    Rules,
    /// Trailmark's delivery workers (actor `system:delivery`).
    Delivery,
    /// Trailmark's own operations (identity, signatures, reports, reviews,
    /// validation), on a person's behalf or its own.
    Trailmark,
}

impl Writers {
    /// The name written in docs/FORMAT.md §1.3.
    pub fn as_str(self) -> &'static str {
        match self {
            Writers::Callers => "callers",
            Writers::SourceEvents => "source events",
            Writers::Rules => "rules",
            Writers::Delivery => "delivery",
            Writers::Trailmark => "Trailmark only",
        }
    }

    /// The rule in words, for errors and `GET /v1/kinds`.
    pub fn rule(self) -> &'static str {
        match self {
            Writers::Callers => "any authorised caller may append it with POST /v1/entries",
            Writers::SourceEvents => {
                "a source-system fact: send it as an event to POST /v1/events (or an xAPI statement to POST /xapi/statements), where the integration rules apply it"
            }
            Writers::Rules => "an outcome of Trailmark's integration rules (actor system:rules)",
            Writers::Delivery => {
                "a delivery outcome recorded by Trailmark's delivery workers (actor system:delivery)"
            }
            Writers::Trailmark => {
                "recorded by Trailmark's own operations (identity, signatures, reports, reviews, validation)"
            }
        }
    }
}

/// One registered kind.
#[derive(Debug, PartialEq, Eq)]
pub struct KindDef {
    /// Dotted name, e.g. `qms.document.revision_effective`.
    pub name: &'static str,
    /// Its class.
    pub class: Class,
    /// Who may write it; only [`Writers::Callers`] kinds are accepted by
    /// `POST /v1/entries`.
    pub writers: Writers,
    /// One line for people reading the registry (`GET /v1/kinds`).
    pub description: &'static str,
}

impl KindDef {
    /// Whether an API caller may append it with `POST /v1/entries`.
    pub fn api_appendable(&self) -> bool {
        self.writers == Writers::Callers
    }
}

const fn kind(
    name: &'static str,
    class: Class,
    writers: Writers,
    description: &'static str,
) -> KindDef {
    KindDef {
        name,
        class,
        writers,
        description,
    }
}

/// `ledger.genesis`.
pub static LEDGER_GENESIS: KindDef = kind(
    "ledger.genesis",
    Class::Genesis,
    Writers::Trailmark,
    "the first entry: names the ledger's origin and verifier key",
);

/// `ledger.correction`.
pub static LEDGER_CORRECTION: KindDef = kind(
    "ledger.correction",
    Class::Correction,
    Writers::Callers,
    "corrects the entry named as first parent; the earlier entry stays readable",
);

/// `ledger.annotation`.
pub static LEDGER_ANNOTATION: KindDef = kind(
    "ledger.annotation",
    Class::Record,
    Writers::Callers,
    "a remark about the entries named as parents",
);

/// `admin.token.created`.
pub static ADMIN_TOKEN_CREATED: KindDef = kind(
    "admin.token.created",
    Class::Administrative,
    Writers::Trailmark,
    "an API token was issued to a principal",
);

/// `admin.token.revoked`.
pub static ADMIN_TOKEN_REVOKED: KindDef = kind(
    "admin.token.revoked",
    Class::Administrative,
    Writers::Trailmark,
    "an API token was revoked",
);

/// `admin.config.changed`.
pub static ADMIN_CONFIG_CHANGED: KindDef = kind(
    "admin.config.changed",
    Class::Administrative,
    Writers::Callers,
    "a configuration value changed (old and new value in the payload)",
);

/// `admin.user.created`.
pub static ADMIN_USER_CREATED: KindDef = kind(
    "admin.user.created",
    Class::Administrative,
    Writers::Trailmark,
    "a user was created, with who verified their identity and how",
);

/// `admin.user.changed`.
pub static ADMIN_USER_CHANGED: KindDef = kind(
    "admin.user.changed",
    Class::Administrative,
    Writers::Trailmark,
    "a user's name, email, roles or status changed (old and new values)",
);

/// `admin.user.password_set`.
pub static ADMIN_USER_PASSWORD_SET: KindDef = kind(
    "admin.user.password_set",
    Class::Administrative,
    Writers::Trailmark,
    "a user's password was set by the user or reset by an administrator",
);

/// `admin.ca.trusted`.
pub static ADMIN_CA_TRUSTED: KindDef = kind(
    "admin.ca.trusted",
    Class::Administrative,
    Writers::Trailmark,
    "a CA certificate was trusted for user signing certificates",
);

/// `admin.certificate.issued`.
pub static ADMIN_CERTIFICATE_ISSUED: KindDef = kind(
    "admin.certificate.issued",
    Class::Administrative,
    Writers::Trailmark,
    "a signing certificate was issued or imported for a user",
);

/// `admin.certificate.revoked`.
pub static ADMIN_CERTIFICATE_REVOKED: KindDef = kind(
    "admin.certificate.revoked",
    Class::Administrative,
    Writers::Trailmark,
    "a user's signing certificate was revoked",
);

/// `admin.signing_policy.changed`.
pub static ADMIN_SIGNING_POLICY_CHANGED: KindDef = kind(
    "admin.signing_policy.changed",
    Class::Administrative,
    Writers::Trailmark,
    "the signing policy changed (old and new policy)",
);

/// `security.auth.refused`.
pub static SECURITY_AUTH_REFUSED: KindDef = kind(
    "security.auth.refused",
    Class::Security,
    Writers::Trailmark,
    "a request with a missing, unknown or revoked credential was refused",
);

/// `security.account.locked`.
pub static SECURITY_ACCOUNT_LOCKED: KindDef = kind(
    "security.account.locked",
    Class::Security,
    Writers::Trailmark,
    "an account locked after consecutive wrong passwords",
);

/// `security.session.opened`.
pub static SECURITY_SESSION_OPENED: KindDef = kind(
    "security.session.opened",
    Class::Security,
    Writers::Trailmark,
    "a user logged in",
);

/// `security.session.closed`.
pub static SECURITY_SESSION_CLOSED: KindDef = kind(
    "security.session.closed",
    Class::Security,
    Writers::Trailmark,
    "a session ended at logout or after inactivity",
);

/// `security.signature.refused`.
pub static SECURITY_SIGNATURE_REFUSED: KindDef = kind(
    "security.signature.refused",
    Class::Security,
    Writers::Trailmark,
    "a signing attempt was refused (wrong password, authority, sequence)",
);

/// `security.verification.failed`.
pub static SECURITY_VERIFICATION_FAILED: KindDef = kind(
    "security.verification.failed",
    Class::Security,
    Writers::Trailmark,
    "a full verification (scheduled or asked for) found the ledger or the state derived from it not intact; the first problem in the payload",
);

/// `signature.applied`.
pub static SIGNATURE_APPLIED: KindDef = kind(
    "signature.applied",
    Class::Signature,
    Writers::Trailmark,
    "a Part 11 electronic signature on the entry named as parent",
);

/// `qms.document.revision_effective`.
pub static QMS_DOCUMENT_REVISION_EFFECTIVE: KindDef = kind(
    "qms.document.revision_effective",
    Class::Record,
    Writers::SourceEvents,
    "a controlled document revision became effective",
);

/// `qms.document.revision_retired`.
pub static QMS_DOCUMENT_REVISION_RETIRED: KindDef = kind(
    "qms.document.revision_retired",
    Class::Record,
    Writers::SourceEvents,
    "a controlled document revision was retired",
);

/// `qms.capa.opened`.
pub static QMS_CAPA_OPENED: KindDef = kind(
    "qms.capa.opened",
    Class::Record,
    Writers::Callers,
    "a CAPA was opened",
);

/// `qms.capa.training_action`.
pub static QMS_CAPA_TRAINING_ACTION: KindDef = kind(
    "qms.capa.training_action",
    Class::Record,
    Writers::SourceEvents,
    "a CAPA named training as a corrective or preventive action",
);

/// `qms.capa.closed`.
pub static QMS_CAPA_CLOSED: KindDef = kind(
    "qms.capa.closed",
    Class::Record,
    Writers::Trailmark,
    "a CAPA was closed, after its closure readiness was checked (POST /v1/capas/{id}/closure)",
);

/// `qms.deviation.opened`.
pub static QMS_DEVIATION_OPENED: KindDef = kind(
    "qms.deviation.opened",
    Class::Record,
    Writers::SourceEvents,
    "a deviation was reported",
);

/// `qms.deviation.training_status`.
pub static QMS_DEVIATION_TRAINING_STATUS: KindDef = kind(
    "qms.deviation.training_status",
    Class::Record,
    Writers::Rules,
    "training status of the people involved at the time of a deviation",
);

/// `lms.assignment.created`.
pub static LMS_ASSIGNMENT_CREATED: KindDef = kind(
    "lms.assignment.created",
    Class::Record,
    Writers::Rules,
    "a training assignment was created in the LMS",
);

/// `lms.assignment.cancelled`.
pub static LMS_ASSIGNMENT_CANCELLED: KindDef = kind(
    "lms.assignment.cancelled",
    Class::Record,
    Writers::Rules,
    "a training assignment was cancelled",
);

/// `lms.completion.recorded`.
pub static LMS_COMPLETION_RECORDED: KindDef = kind(
    "lms.completion.recorded",
    Class::Record,
    Writers::SourceEvents,
    "a person completed a training assignment",
);

/// `hr.person.updated`.
pub static HR_PERSON_UPDATED: KindDef = kind(
    "hr.person.updated",
    Class::Record,
    Writers::SourceEvents,
    "a person's master data changed",
);

/// `hr.person.job_function_changed`.
pub static HR_PERSON_JOB_FUNCTION_CHANGED: KindDef = kind(
    "hr.person.job_function_changed",
    Class::Record,
    Writers::SourceEvents,
    "a person moved into or out of a job function",
);

/// `integration.handover.sent`.
pub static INTEGRATION_HANDOVER_SENT: KindDef = kind(
    "integration.handover.sent",
    Class::Record,
    Writers::Rules,
    "a hand-over was sent to a target system",
);

/// `integration.handover.delivered`.
pub static INTEGRATION_HANDOVER_DELIVERED: KindDef = kind(
    "integration.handover.delivered",
    Class::Record,
    Writers::Delivery,
    "a target system acknowledged a hand-over",
);

/// `integration.handover.failed`.
pub static INTEGRATION_HANDOVER_FAILED: KindDef = kind(
    "integration.handover.failed",
    Class::Record,
    Writers::Delivery,
    "a hand-over delivery attempt failed",
);

/// `qms.job_function.changed`.
pub static QMS_JOB_FUNCTION_CHANGED: KindDef = kind(
    "qms.job_function.changed",
    Class::Record,
    Writers::SourceEvents,
    "a job function was created, renamed or deactivated",
);

/// `qms.training_category.changed`.
pub static QMS_TRAINING_CATEGORY_CHANGED: KindDef = kind(
    "qms.training_category.changed",
    Class::Record,
    Writers::SourceEvents,
    "the completion window of a document category changed",
);

/// `qms.training_matrix.changed`.
pub static QMS_TRAINING_MATRIX_CHANGED: KindDef = kind(
    "qms.training_matrix.changed",
    Class::Record,
    Writers::SourceEvents,
    "the job functions that must be trained on a document changed",
);

/// `integration.event.applied`.
pub static INTEGRATION_EVENT_APPLIED: KindDef = kind(
    "integration.event.applied",
    Class::Record,
    Writers::Rules,
    "the rules applied an event: its master data and what it caused",
);

/// `integration.event.parked`.
pub static INTEGRATION_EVENT_PARKED: KindDef = kind(
    "integration.event.parked",
    Class::Record,
    Writers::Rules,
    "an event waits for master data it needs",
);

/// `integration.event.rejected`.
pub static INTEGRATION_EVENT_REJECTED: KindDef = kind(
    "integration.event.rejected",
    Class::Record,
    Writers::Rules,
    "a parked event was rejected: its master data never arrived",
);

/// `integration.assignment.completed`.
pub static INTEGRATION_ASSIGNMENT_COMPLETED: KindDef = kind(
    "integration.assignment.completed",
    Class::Record,
    Writers::Rules,
    "a completion fulfilled a training assignment",
);

/// `integration.capa.closure_refused`.
pub static INTEGRATION_CAPA_CLOSURE_REFUSED: KindDef = kind(
    "integration.capa.closure_refused",
    Class::Record,
    Writers::Trailmark,
    "a CAPA closure was refused: required training is not evidenced",
);

/// `integration.handover.dead_lettered`.
pub static INTEGRATION_HANDOVER_DEAD_LETTERED: KindDef = kind(
    "integration.handover.dead_lettered",
    Class::Record,
    Writers::Delivery,
    "a hand-over exhausted its delivery attempts",
);

/// `integration.handover.replayed`.
pub static INTEGRATION_HANDOVER_REPLAYED: KindDef = kind(
    "integration.handover.replayed",
    Class::Administrative,
    Writers::Trailmark,
    "a dead-lettered hand-over was queued again by a person, with a reason",
);

/// `integration.reconciliation.matched`.
pub static INTEGRATION_RECONCILIATION_MATCHED: KindDef = kind(
    "integration.reconciliation.matched",
    Class::Record,
    Writers::Trailmark,
    "a source system's counts matched what Trailmark recorded",
);

/// `integration.reconciliation.drift`.
pub static INTEGRATION_RECONCILIATION_DRIFT: KindDef = kind(
    "integration.reconciliation.drift",
    Class::Record,
    Writers::Trailmark,
    "a source system's counts differ from what Trailmark recorded",
);

/// `admin.report_signing.created`.
pub static ADMIN_REPORT_SIGNING_CREATED: KindDef = kind(
    "admin.report_signing.created",
    Class::Administrative,
    Writers::Trailmark,
    "the report-signing CA and certificate (P-256) were created",
);

/// `report.generated`.
pub static REPORT_GENERATED: KindDef = kind(
    "report.generated",
    Class::Record,
    Writers::Trailmark,
    "a report was generated and signed: its ID, scope and the SHA-256 of the file",
);

/// `review.audit_trail.completed`.
pub static REVIEW_AUDIT_TRAIL_COMPLETED: KindDef = kind(
    "review.audit_trail.completed",
    Class::Record,
    Writers::Trailmark,
    "an audit-trail review by exception: the entries reviewed, each marked, signed `reviewed` by the reviewer (docs/CONSOLE.md §4)",
);

/// `validation.run.recorded`.
pub static VALIDATION_RUN_RECORDED: KindDef = kind(
    "validation.run.recorded",
    Class::Record,
    Writers::Trailmark,
    "an IQ or OQ run: its verdict, completeness, deviations and the SHA-256 of its results (docs/VALIDATION.md)",
);

/// Every kind the ledger accepts, in the order shown to people.
pub static KINDS: &[&KindDef] = &[
    &LEDGER_GENESIS,
    &LEDGER_CORRECTION,
    &LEDGER_ANNOTATION,
    &ADMIN_TOKEN_CREATED,
    &ADMIN_TOKEN_REVOKED,
    &ADMIN_CONFIG_CHANGED,
    &ADMIN_USER_CREATED,
    &ADMIN_USER_CHANGED,
    &ADMIN_USER_PASSWORD_SET,
    &ADMIN_CA_TRUSTED,
    &ADMIN_CERTIFICATE_ISSUED,
    &ADMIN_CERTIFICATE_REVOKED,
    &ADMIN_SIGNING_POLICY_CHANGED,
    &SECURITY_AUTH_REFUSED,
    &SECURITY_ACCOUNT_LOCKED,
    &SECURITY_SESSION_OPENED,
    &SECURITY_SESSION_CLOSED,
    &SECURITY_SIGNATURE_REFUSED,
    &SECURITY_VERIFICATION_FAILED,
    &SIGNATURE_APPLIED,
    &QMS_DOCUMENT_REVISION_EFFECTIVE,
    &QMS_DOCUMENT_REVISION_RETIRED,
    &QMS_CAPA_OPENED,
    &QMS_CAPA_TRAINING_ACTION,
    &QMS_CAPA_CLOSED,
    &QMS_DEVIATION_OPENED,
    &QMS_DEVIATION_TRAINING_STATUS,
    &LMS_ASSIGNMENT_CREATED,
    &LMS_ASSIGNMENT_CANCELLED,
    &LMS_COMPLETION_RECORDED,
    &HR_PERSON_UPDATED,
    &HR_PERSON_JOB_FUNCTION_CHANGED,
    &INTEGRATION_HANDOVER_SENT,
    &INTEGRATION_HANDOVER_DELIVERED,
    &INTEGRATION_HANDOVER_FAILED,
    &QMS_JOB_FUNCTION_CHANGED,
    &QMS_TRAINING_CATEGORY_CHANGED,
    &QMS_TRAINING_MATRIX_CHANGED,
    &INTEGRATION_EVENT_APPLIED,
    &INTEGRATION_EVENT_PARKED,
    &INTEGRATION_EVENT_REJECTED,
    &INTEGRATION_ASSIGNMENT_COMPLETED,
    &INTEGRATION_CAPA_CLOSURE_REFUSED,
    &INTEGRATION_HANDOVER_DEAD_LETTERED,
    &INTEGRATION_HANDOVER_REPLAYED,
    &INTEGRATION_RECONCILIATION_MATCHED,
    &INTEGRATION_RECONCILIATION_DRIFT,
    &ADMIN_REPORT_SIGNING_CREATED,
    &REPORT_GENERATED,
    &REVIEW_AUDIT_TRAIL_COMPLETED,
    &VALIDATION_RUN_RECORDED,
];

/// Looks a kind up by its exact name.
pub fn lookup(name: &str) -> Option<&'static KindDef> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// An entry written by someone its kind's writer rule (FORMAT §1.3) does
/// not allow; the text names the rule and what the entry shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    /// A rules or delivery outcome with another actor.
    #[error("`{kind}` is {}; this entry's actor is `{actor}`", .writers.rule())]
    WrongActor {
        /// The kind.
        kind: &'static str,
        /// Its writer rule.
        writers: Writers,
        /// The actor the entry shows.
        actor: String,
    },
    /// A source-system fact without its source envelope.
    #[error(
        "`{kind}` is {}; this entry has no source envelope (payload `event` with `id`, `source`, `type`, and `data`)",
        .writers.rule()
    )]
    NoEnvelope {
        /// The kind.
        kind: &'static str,
        /// Its writer rule.
        writers: Writers,
    },
    /// A source-system fact with one of Trailmark's own actors.
    #[error(
        "`{kind}` is a source system's fact; Trailmark's own actor `{actor}` cannot have sent it"
    )]
    SystemActor {
        /// The kind.
        kind: &'static str,
        /// The actor the entry shows.
        actor: String,
    },
}

/// Checks the writer rule of `kind` against what an entry shows: the actor
/// of a rules or delivery outcome, and the source envelope (`event` with
/// `id`, `source`, `type`, and `data`) of a source-system fact. Kinds written
/// by callers or by Trailmark's own operations carry nothing more to check.
///
/// # Errors
/// The rule broken, in words.
pub fn check_writer(
    kind: &KindDef,
    actor: &str,
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), WriterError> {
    let actor_must_be = |wanted: &str| {
        if actor == wanted {
            Ok(())
        } else {
            Err(WriterError::WrongActor {
                kind: kind.name,
                writers: kind.writers,
                actor: actor.to_owned(),
            })
        }
    };
    match kind.writers {
        Writers::Rules => actor_must_be("system:rules"),
        Writers::Delivery => actor_must_be("system:delivery"),
        Writers::SourceEvents => {
            let envelope = payload.get("event").and_then(|e| e.as_object());
            let complete = envelope.is_some_and(|e| {
                ["id", "source", "type"]
                    .iter()
                    .all(|m| e.get(*m).is_some_and(serde_json::Value::is_string))
            }) && payload.contains_key("data");
            if !complete {
                return Err(WriterError::NoEnvelope {
                    kind: kind.name,
                    writers: kind.writers,
                });
            }
            if actor.starts_with("system:") {
                return Err(WriterError::SystemActor {
                    kind: kind.name,
                    actor: actor.to_owned(),
                });
            }
            Ok(())
        }
        Writers::Callers | Writers::Trailmark => Ok(()),
    }
}

/// Whether `name` is shaped like a kind: lowercase dotted segments.
pub fn is_well_formed(name: &str) -> bool {
    name.len() <= 96
        && name.split('.').count() >= 2
        && name.split('.').all(|segment| {
            let mut bytes = segment.bytes();
            matches!(bytes.next(), Some(b'a'..=b'z'))
                && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_well_formed_and_unique() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(is_well_formed(k.name), "{} is not well formed", k.name);
            assert!(
                KINDS[..i].iter().all(|other| other.name != k.name),
                "{} twice",
                k.name
            );
        }
        assert!(!is_well_formed("Ledger.genesis"));
        assert!(!is_well_formed("genesis"));
        assert!(!is_well_formed("ledger..x"));
    }

    #[test]
    fn writer_rules_name_what_each_outcome_must_show() {
        let payload = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let delivered = &INTEGRATION_HANDOVER_DELIVERED;
        assert!(
            check_writer(
                delivered,
                "system:delivery",
                &payload(serde_json::json!({}))
            )
            .is_ok()
        );
        let forged = check_writer(
            delivered,
            "service:integration",
            &payload(serde_json::json!({})),
        );
        assert!(forged.unwrap_err().to_string().contains("system:delivery"));
        let assigned = &LMS_ASSIGNMENT_CREATED;
        assert!(check_writer(assigned, "service:lms", &payload(serde_json::json!({}))).is_err());
        let completion = &LMS_COMPLETION_RECORDED;
        let enveloped = payload(
            serde_json::json!({"event": {"id": "c1", "source": "s", "type": "t"}, "data": {}}),
        );
        assert!(check_writer(completion, "service:lms", &enveloped).is_ok());
        assert!(check_writer(completion, "system:rules", &enveloped).is_err());
        let bare = check_writer(
            completion,
            "service:lms",
            &payload(serde_json::json!({"data": {}})),
        );
        assert!(matches!(bare, Err(WriterError::NoEnvelope { .. })));
        assert!(bare.unwrap_err().to_string().contains("envelope"));
        let annotation = &LEDGER_ANNOTATION;
        assert!(annotation.api_appendable());
        assert!(!completion.api_appendable() && !delivered.api_appendable());
    }

    #[test]
    fn genesis_is_not_appendable_and_corrections_need_reasons() {
        assert!(!&LEDGER_GENESIS.api_appendable());
        assert!(&LEDGER_CORRECTION.class.requires_reason());
        assert!(lookup("no.such_kind").is_none());
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/FORMAT.md carries the registry for verifiers written from the
    /// spec alone; this keeps the two equal.
    #[test]
    fn the_registry_in_format_md_equals_the_code() {
        let doc = include_str!("../../docs/FORMAT.md");
        let start = doc
            .find("<!-- kinds:begin")
            .expect("FORMAT.md has the kinds table");
        let end = doc.find("<!-- kinds:end -->").expect("the table ends");
        let rows: Vec<(String, String, String)> = doc[start..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
                (
                    cells[1].to_owned(),
                    cells[2].to_owned(),
                    cells[3].to_owned(),
                )
            })
            .collect();
        let code: Vec<(String, String, String)> = KINDS
            .iter()
            .map(|k| {
                (
                    k.name.to_owned(),
                    k.class.as_str().to_owned(),
                    k.writers.as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(rows, code, "update the table in docs/FORMAT.md §1.3");
    }
}
