//! The registry of entry kinds: every `kind` the ledger accepts, with its class.
//!
//! The class decides the rules of `docs/FORMAT.md` §1.3 (whether `reason` is
//! required, whether a first parent is required). A kind not in this list is
//! rejected at the API and by `verify`.

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

/// One registered kind.
#[derive(Debug, PartialEq, Eq)]
pub struct KindDef {
    /// Dotted name, e.g. `qms.document.revision_effective`.
    pub name: &'static str,
    /// Its class.
    pub class: Class,
    /// Whether an API caller may append it with `POST /v1/entries`; the
    /// others are written only by Trailmark itself (genesis, token changes).
    pub api_appendable: bool,
    /// One line for people reading the registry (`GET /v1/kinds`).
    pub description: &'static str,
}

const fn kind(
    name: &'static str,
    class: Class,
    api_appendable: bool,
    description: &'static str,
) -> KindDef {
    KindDef {
        name,
        class,
        api_appendable,
        description,
    }
}

/// Every kind the ledger accepts, in the order shown to people.
pub static KINDS: &[KindDef] = &[
    kind(
        "ledger.genesis",
        Class::Genesis,
        false,
        "the first entry: names the ledger's origin and verifier key",
    ),
    kind(
        "ledger.correction",
        Class::Correction,
        true,
        "corrects the entry named as first parent; the earlier entry stays readable",
    ),
    kind(
        "ledger.annotation",
        Class::Record,
        true,
        "a remark about the entries named as parents",
    ),
    kind(
        "admin.token.created",
        Class::Administrative,
        false,
        "an API token was issued to a principal",
    ),
    kind(
        "admin.token.revoked",
        Class::Administrative,
        false,
        "an API token was revoked",
    ),
    kind(
        "admin.config.changed",
        Class::Administrative,
        true,
        "a configuration value changed (old and new value in the payload)",
    ),
    kind(
        "admin.user.created",
        Class::Administrative,
        false,
        "a user was created, with who verified their identity and how",
    ),
    kind(
        "admin.user.changed",
        Class::Administrative,
        false,
        "a user's name, email, roles or status changed (old and new values)",
    ),
    kind(
        "admin.user.password_set",
        Class::Administrative,
        false,
        "a user's password was set by the user or reset by an administrator",
    ),
    kind(
        "admin.ca.trusted",
        Class::Administrative,
        false,
        "a CA certificate was trusted for user signing certificates",
    ),
    kind(
        "admin.certificate.issued",
        Class::Administrative,
        false,
        "a signing certificate was issued or imported for a user",
    ),
    kind(
        "admin.certificate.revoked",
        Class::Administrative,
        false,
        "a user's signing certificate was revoked",
    ),
    kind(
        "admin.signing_policy.changed",
        Class::Administrative,
        false,
        "the signing policy changed (old and new policy)",
    ),
    kind(
        "security.auth.refused",
        Class::Security,
        false,
        "a request with a missing, unknown or revoked credential was refused",
    ),
    kind(
        "security.account.locked",
        Class::Security,
        false,
        "an account locked after consecutive wrong passwords",
    ),
    kind(
        "security.session.opened",
        Class::Security,
        false,
        "a user logged in",
    ),
    kind(
        "security.session.closed",
        Class::Security,
        false,
        "a session ended at logout or after inactivity",
    ),
    kind(
        "security.signature.refused",
        Class::Security,
        false,
        "a signing attempt was refused (wrong password, authority, sequence)",
    ),
    kind(
        "signature.applied",
        Class::Signature,
        false,
        "a Part 11 electronic signature on the entry named as parent",
    ),
    kind(
        "qms.document.revision_effective",
        Class::Record,
        true,
        "a controlled document revision became effective",
    ),
    kind(
        "qms.document.revision_retired",
        Class::Record,
        true,
        "a controlled document revision was retired",
    ),
    kind("qms.capa.opened", Class::Record, true, "a CAPA was opened"),
    kind(
        "qms.capa.training_action",
        Class::Record,
        true,
        "a CAPA named training as a corrective or preventive action",
    ),
    kind(
        "qms.capa.closed",
        Class::Record,
        false,
        "a CAPA was closed, after its closure readiness was checked (POST /v1/capas/{id}/closure)",
    ),
    kind(
        "qms.deviation.opened",
        Class::Record,
        true,
        "a deviation was reported",
    ),
    kind(
        "qms.deviation.training_status",
        Class::Record,
        true,
        "training status of the people involved at the time of a deviation",
    ),
    kind(
        "lms.assignment.created",
        Class::Record,
        true,
        "a training assignment was created in the LMS",
    ),
    kind(
        "lms.assignment.cancelled",
        Class::Record,
        true,
        "a training assignment was cancelled",
    ),
    kind(
        "lms.completion.recorded",
        Class::Record,
        true,
        "a person completed a training assignment",
    ),
    kind(
        "hr.person.updated",
        Class::Record,
        true,
        "a person's master data changed",
    ),
    kind(
        "hr.person.job_function_changed",
        Class::Record,
        true,
        "a person moved into or out of a job function",
    ),
    kind(
        "integration.handover.sent",
        Class::Record,
        true,
        "a hand-over was sent to a target system",
    ),
    kind(
        "integration.handover.delivered",
        Class::Record,
        true,
        "a target system acknowledged a hand-over",
    ),
    kind(
        "integration.handover.failed",
        Class::Record,
        true,
        "a hand-over delivery attempt failed",
    ),
    kind(
        "qms.job_function.changed",
        Class::Record,
        true,
        "a job function was created, renamed or deactivated",
    ),
    kind(
        "qms.training_category.changed",
        Class::Record,
        true,
        "the completion window of a document category changed",
    ),
    kind(
        "qms.training_matrix.changed",
        Class::Record,
        true,
        "the job functions that must be trained on a document changed",
    ),
    kind(
        "integration.event.applied",
        Class::Record,
        false,
        "the rules applied an event: its master data and what it caused",
    ),
    kind(
        "integration.event.parked",
        Class::Record,
        false,
        "an event waits for master data it needs",
    ),
    kind(
        "integration.event.rejected",
        Class::Record,
        false,
        "a parked event was rejected: its master data never arrived",
    ),
    kind(
        "integration.assignment.completed",
        Class::Record,
        false,
        "a completion fulfilled a training assignment",
    ),
    kind(
        "integration.capa.closure_refused",
        Class::Record,
        false,
        "a CAPA closure was refused: required training is not evidenced",
    ),
    kind(
        "integration.handover.dead_lettered",
        Class::Record,
        false,
        "a hand-over exhausted its delivery attempts",
    ),
    kind(
        "integration.handover.replayed",
        Class::Administrative,
        false,
        "a dead-lettered hand-over was queued again by a person, with a reason",
    ),
    kind(
        "integration.reconciliation.matched",
        Class::Record,
        false,
        "a source system's counts matched what Trailmark recorded",
    ),
    kind(
        "integration.reconciliation.drift",
        Class::Record,
        false,
        "a source system's counts differ from what Trailmark recorded",
    ),
    kind(
        "admin.report_signing.created",
        Class::Administrative,
        false,
        "the report-signing CA and certificate (P-256) were created",
    ),
    kind(
        "report.generated",
        Class::Record,
        false,
        "a report was generated and signed: its ID, scope and the SHA-256 of the file",
    ),
    kind(
        "review.audit_trail.completed",
        Class::Record,
        false,
        "an audit-trail review by exception: the entries reviewed, each marked, signed `reviewed` by the reviewer (docs/CONSOLE.md §4)",
    ),
    kind(
        "validation.run.recorded",
        Class::Record,
        false,
        "an IQ or OQ run: its verdict, completeness, deviations and the SHA-256 of its results (docs/VALIDATION.md)",
    ),
];

/// Looks a kind up by its exact name.
pub fn lookup(name: &str) -> Option<&'static KindDef> {
    KINDS.iter().find(|k| k.name == name)
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
    fn genesis_is_not_appendable_and_corrections_need_reasons() {
        assert!(!lookup("ledger.genesis").unwrap().api_appendable);
        assert!(lookup("ledger.correction").unwrap().class.requires_reason());
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
        let rows: Vec<(String, String, bool)> = doc[start..end]
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
                (
                    cells[1].to_owned(),
                    cells[2].to_owned(),
                    cells[3] == "callers",
                )
            })
            .collect();
        let code: Vec<(String, String, bool)> = KINDS
            .iter()
            .map(|k| {
                (
                    k.name.to_owned(),
                    k.class.as_str().to_owned(),
                    k.api_appendable,
                )
            })
            .collect();
        assert_eq!(rows, code, "update the table in docs/FORMAT.md §1.3");
    }
}
