//! Roles, permissions and the signing policy: the one authorisation matrix.
//!
//! [`MATRIX`] says which permission each role grants; the API's route table
//! names one permission per route, and `trailmark roles` prints both. The
//! signing policy (which roles may sign with which meaning, and the
//! sequence and separation-of-duties rules) is recorded in the ledger
//! (docs/SIGNATURES.md §2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Permission {
    /// Append entries (`POST /v1/entries`).
    EntriesAppend,
    /// Read entries and their signatures.
    EntriesRead,
    /// Apply a Part 11 signature.
    SignaturesApply,
    /// Read users.
    UsersRead,
    /// Create and change users, reset passwords, unlock.
    UsersManage,
    /// Issue, rotate and revoke API tokens.
    TokensManage,
    /// Manage CAs and user certificates.
    KeysManage,
    /// Change the signing policy.
    PolicyManage,
    /// Read the roles matrix and the signing policy.
    RolesRead,
    /// One's own account: password, key, logout.
    AccountSelf,
    /// Send CloudEvents and xAPI statements, post reconciliations.
    EventsSend,
    /// Read integration state: closure readiness, compliance, lineage.
    IntegrationRead,
    /// Inspect and replay dead letters.
    IntegrationManage,
    /// Record a CAPA's closure (refused until its training is evidenced).
    CapaClose,
    /// Generate signed reports (`GET /v1/reports/...`); each is recorded.
    ReportsGenerate,
    /// Scrape `/metrics` (which counts wrong passwords and locks: not for
    /// anonymous callers).
    MetricsRead,
}

impl Permission {
    /// Every permission, in display order.
    pub const ALL: [Permission; 16] = [
        Permission::EntriesAppend,
        Permission::EntriesRead,
        Permission::SignaturesApply,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::TokensManage,
        Permission::KeysManage,
        Permission::PolicyManage,
        Permission::RolesRead,
        Permission::AccountSelf,
        Permission::EventsSend,
        Permission::IntegrationRead,
        Permission::IntegrationManage,
        Permission::CapaClose,
        Permission::ReportsGenerate,
        Permission::MetricsRead,
    ];

    /// Its name, as in token scopes and `trailmark roles`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::EntriesAppend => "entries:append",
            Permission::EntriesRead => "entries:read",
            Permission::SignaturesApply => "signatures:apply",
            Permission::UsersRead => "users:read",
            Permission::UsersManage => "users:manage",
            Permission::TokensManage => "tokens:manage",
            Permission::KeysManage => "keys:manage",
            Permission::PolicyManage => "policy:manage",
            Permission::RolesRead => "roles:read",
            Permission::AccountSelf => "account:self",
            Permission::EventsSend => "events:send",
            Permission::IntegrationRead => "integration:read",
            Permission::IntegrationManage => "integration:manage",
            Permission::CapaClose => "capa:close",
            Permission::ReportsGenerate => "reports:generate",
            Permission::MetricsRead => "metrics:read",
        }
    }

    /// Parses a permission name.
    pub fn parse(text: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl From<Permission> for &'static str {
    fn from(p: Permission) -> &'static str {
        p.as_str()
    }
}

/// A role a user (or, for `integration`, a token) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Manages users, tokens, keys and configuration; signs nothing by default.
    Administrator,
    /// Reviews records and their audit trail.
    QaReviewer,
    /// Approves records.
    QaApprover,
    /// Delivers training and records completions.
    Trainer,
    /// Performs tasks and signs for training completed.
    Operator,
    /// Runs IQ/OQ.
    ValidationEngineer,
    /// Reads everything, changes nothing.
    Inspector,
    /// A machine principal (QMS, LMS, HR).
    Integration,
}

use Permission as P;

/// The authorisation matrix: role → permissions. The only place it is written.
pub const MATRIX: &[(Role, &[Permission])] = &[
    (
        Role::Administrator,
        &[
            P::EntriesRead,
            P::UsersRead,
            P::UsersManage,
            P::TokensManage,
            P::KeysManage,
            P::PolicyManage,
            P::RolesRead,
            P::AccountSelf,
            P::IntegrationRead,
            P::IntegrationManage,
            P::ReportsGenerate,
            P::MetricsRead,
        ],
    ),
    (
        Role::QaReviewer,
        &[
            P::EntriesAppend,
            P::EntriesRead,
            P::SignaturesApply,
            P::UsersRead,
            P::RolesRead,
            P::AccountSelf,
            P::IntegrationRead,
            P::ReportsGenerate,
        ],
    ),
    (
        Role::QaApprover,
        &[
            P::EntriesAppend,
            P::EntriesRead,
            P::SignaturesApply,
            P::UsersRead,
            P::RolesRead,
            P::AccountSelf,
            P::IntegrationRead,
            P::CapaClose,
            P::ReportsGenerate,
        ],
    ),
    (
        Role::Trainer,
        &[
            P::EntriesAppend,
            P::EntriesRead,
            P::SignaturesApply,
            P::AccountSelf,
            P::IntegrationRead,
        ],
    ),
    (
        Role::Operator,
        &[P::EntriesRead, P::SignaturesApply, P::AccountSelf],
    ),
    (
        Role::ValidationEngineer,
        &[
            P::EntriesAppend,
            P::EntriesRead,
            P::SignaturesApply,
            P::RolesRead,
            P::AccountSelf,
            P::IntegrationRead,
        ],
    ),
    (
        Role::Inspector,
        &[
            P::EntriesRead,
            P::UsersRead,
            P::RolesRead,
            P::AccountSelf,
            P::IntegrationRead,
            P::ReportsGenerate,
        ],
    ),
    (
        Role::Integration,
        &[
            P::EntriesAppend,
            P::EntriesRead,
            P::EventsSend,
            P::IntegrationRead,
            P::MetricsRead,
        ],
    ),
];

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 8] = [
        Role::Administrator,
        Role::QaReviewer,
        Role::QaApprover,
        Role::Trainer,
        Role::Operator,
        Role::ValidationEngineer,
        Role::Inspector,
        Role::Integration,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::QaReviewer => "qa_reviewer",
            Role::QaApprover => "qa_approver",
            Role::Trainer => "trainer",
            Role::Operator => "operator",
            Role::ValidationEngineer => "validation_engineer",
            Role::Inspector => "inspector",
            Role::Integration => "integration",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The permissions it grants.
    pub fn permissions(self) -> &'static [Permission] {
        MATRIX
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, p)| *p)
            .expect("every role is in the matrix")
    }

    /// Whether a user may hold it (`integration` is for tokens only).
    pub fn is_for_people(self) -> bool {
        self != Role::Integration
    }
}

/// Whether any of `roles` grants `permission`.
pub fn grants(roles: &[Role], permission: Permission) -> bool {
    roles.iter().any(|r| r.permissions().contains(&permission))
}

/// The controlled vocabulary of signature meanings (§11.50).
pub const MEANINGS: [&str; 8] = [
    "authored",
    "reviewed",
    "approved",
    "verified",
    "executed",
    "training-completed",
    "responsible",
    "rejected",
];

/// A meaning from [`MEANINGS`]; the only way to get one is [`Meaning::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meaning(&'static str);

/// A meaning outside the controlled vocabulary [`MEANINGS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a signature meaning; use one of: {}", MEANINGS.join(", "))]
pub struct UnknownMeaning {
    /// The meaning as given.
    pub text: String,
}

impl Meaning {
    /// `authored`.
    pub const AUTHORED: Meaning = Meaning("authored");
    /// `reviewed`.
    pub const REVIEWED: Meaning = Meaning("reviewed");
    /// `approved`.
    pub const APPROVED: Meaning = Meaning("approved");

    /// Parses a meaning of the controlled vocabulary.
    ///
    /// # Errors
    /// A meaning outside it; the message lists the vocabulary.
    pub fn parse(text: &str) -> Result<Meaning, UnknownMeaning> {
        MEANINGS
            .iter()
            .find(|m| **m == text)
            .map(|m| Meaning(m))
            .ok_or_else(|| UnknownMeaning {
                text: text.to_owned(),
            })
    }

    /// The meaning's name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// One meaning's entry in the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeaningPolicy {
    /// Display text.
    pub text: String,
    /// Roles that may sign with it.
    pub roles: Vec<String>,
}

/// The sequence and separation-of-duties switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    /// `approved` needs an earlier `reviewed` by another user.
    pub approval_requires_review: bool,
    /// No `reviewed`/`approved` on one's own entry or one's `authored` target.
    pub no_self_approval: bool,
    /// An administrator cannot grant themselves signing roles.
    pub no_self_grant_of_signing_roles: bool,
}

/// The signing policy (docs/SIGNATURES.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningPolicy {
    /// Per meaning: display text and roles.
    pub meanings: BTreeMap<String, MeaningPolicy>,
    /// The rules.
    pub rules: PolicyRules,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        let m = |text: &str, roles: &[Role]| MeaningPolicy {
            text: text.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        };
        use Role::*;
        let meanings = BTreeMap::from([
            (
                "authored".to_owned(),
                m(
                    "Authored",
                    &[QaReviewer, QaApprover, Trainer, ValidationEngineer],
                ),
            ),
            (
                "reviewed".to_owned(),
                m("Reviewed", &[QaReviewer, QaApprover]),
            ),
            ("approved".to_owned(), m("Approved", &[QaApprover])),
            (
                "verified".to_owned(),
                m("Verified", &[QaReviewer, ValidationEngineer]),
            ),
            (
                "executed".to_owned(),
                m("Executed", &[ValidationEngineer, Operator]),
            ),
            (
                "training-completed".to_owned(),
                m(
                    "Training completed",
                    &[
                        Operator,
                        Trainer,
                        QaReviewer,
                        QaApprover,
                        ValidationEngineer,
                    ],
                ),
            ),
            ("responsible".to_owned(), m("Responsible", &[QaApprover])),
            (
                "rejected".to_owned(),
                m("Rejected", &[QaReviewer, QaApprover]),
            ),
        ]);
        SigningPolicy {
            meanings,
            rules: PolicyRules {
                approval_requires_review: true,
                no_self_approval: true,
                no_self_grant_of_signing_roles: true,
            },
        }
    }
}

/// Why a signing policy cannot be used, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A meaning of the vocabulary has no entry.
    #[error(
        "the policy has no entry for meaning `{0}`; every meaning of the vocabulary needs one (an empty `roles` list disables it)"
    )]
    MissingMeaning(&'static str),
    /// A meaning's display text is empty or longer than 64 characters.
    #[error("meaning `{0}` needs a display text of 1 to 64 characters")]
    DisplayText(&'static str),
    /// A meaning names a role people do not hold.
    #[error(
        "meaning `{meaning}` names role `{role}`, which is not a role people hold; use one of: {}",
        people_roles().join(", ")
    )]
    NotAPeopleRole {
        /// The meaning.
        meaning: &'static str,
        /// The role as written.
        role: String,
    },
    /// An entry for a meaning outside the vocabulary.
    #[error(
        "the policy names `{0}`, which is not in the controlled vocabulary: {vocabulary}",
        vocabulary = MEANINGS.join(", ")
    )]
    UnknownMeaning(String),
}

impl SigningPolicy {
    /// Checks that every meaning of the vocabulary is present with known
    /// roles and a display text, and nothing else.
    ///
    /// # Errors
    /// What is wrong and how to fix it.
    pub fn check(&self) -> Result<(), PolicyError> {
        for m in MEANINGS {
            let Some(p) = self.meanings.get(m) else {
                return Err(PolicyError::MissingMeaning(m));
            };
            if p.text.trim().is_empty() || p.text.len() > 64 {
                return Err(PolicyError::DisplayText(m));
            }
            for r in &p.roles {
                match Role::parse(r) {
                    Some(role) if role.is_for_people() => {}
                    _ => {
                        return Err(PolicyError::NotAPeopleRole {
                            meaning: m,
                            role: r.clone(),
                        });
                    }
                }
            }
        }
        if let Some(extra) = self.meanings.keys().find(|k| Meaning::parse(k).is_err()) {
            return Err(PolicyError::UnknownMeaning(extra.clone()));
        }
        Ok(())
    }

    /// Whether someone holding `roles` may sign with `meaning`.
    pub fn allows(&self, roles: &[String], meaning: Meaning) -> bool {
        self.meanings
            .get(meaning.as_str())
            .is_some_and(|p| p.roles.iter().any(|r| roles.contains(r)))
    }

    /// Roles that may sign with at least one meaning.
    pub fn signing_roles(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .meanings
            .values()
            .flat_map(|p| p.roles.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The display text of a meaning.
    pub fn text(&self, meaning: Meaning) -> String {
        self.meanings
            .get(meaning.as_str())
            .map_or_else(|| meaning.as_str().to_owned(), |p| p.text.clone())
    }
}

/// Names of the roles people may hold.
pub fn people_roles() -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|r| r.is_for_people())
        .map(Role::as_str)
        .collect()
}

/// The matrix as text, for `trailmark roles`.
pub fn matrix_text(policy: &SigningPolicy) -> String {
    let mut out = String::from("role                 permissions\n");
    for (role, perms) in MATRIX {
        let names: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
        out.push_str(&format!("{:<20} {}\n", role.as_str(), names.join(", ")));
    }
    out.push_str("\nmeaning              display text          roles that may sign\n");
    for (m, p) in &policy.meanings {
        out.push_str(&format!("{m:<20} {:<21} {}\n", p.text, p.roles.join(", ")));
    }
    let r = &policy.rules;
    out.push_str(&format!(
        "\nrules: approval_requires_review={} no_self_approval={} no_self_grant_of_signing_roles={}\n",
        r.approval_requires_review, r.no_self_approval, r.no_self_grant_of_signing_roles
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_in_the_matrix_once_and_inspectors_only_read() {
        for role in Role::ALL {
            assert_eq!(MATRIX.iter().filter(|(r, _)| *r == role).count(), 1);
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for p in Role::Inspector.permissions() {
            assert!(
                matches!(
                    p,
                    P::EntriesRead
                        | P::UsersRead
                        | P::RolesRead
                        | P::AccountSelf
                        | P::IntegrationRead
                        // Records only that a report was generated, by whom.
                        | P::ReportsGenerate
                ),
                "inspectors are read-only, but hold {p:?}"
            );
        }
        assert!(!grants(&[Role::Administrator], P::SignaturesApply));
    }

    #[test]
    fn the_default_policy_is_valid_and_a_broken_one_is_not() {
        let policy = SigningPolicy::default();
        policy.check().unwrap();
        let approved = Meaning::parse("approved").unwrap();
        assert!(policy.allows(&["qa_approver".into()], approved));
        assert!(!policy.allows(&["qa_reviewer".into()], approved));
        assert!(
            Meaning::parse("approve")
                .unwrap_err()
                .to_string()
                .contains("approved")
        );
        let mut broken = policy.clone();
        broken.meanings.remove("rejected");
        assert_eq!(broken.check(), Err(PolicyError::MissingMeaning("rejected")));
        assert!(broken.check().unwrap_err().to_string().contains("rejected"));
        let mut broken = policy;
        broken
            .meanings
            .get_mut("approved")
            .unwrap()
            .roles
            .push("integration".into());
        assert!(
            broken
                .check()
                .unwrap_err()
                .to_string()
                .contains("integration")
        );
    }
}
