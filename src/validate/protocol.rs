//! The validation set as data: the requirements and the OQ protocols
//! (docs/VALIDATION.md §1, §3), compiled into the binary so that the
//! protocols that run are the ones released with it, and the coverage rule
//! (every requirement covered by at least one test case).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// `validation/requirements.toml`, as released with this binary.
pub const REQUIREMENTS: (&str, &str) = (
    "validation/requirements.toml",
    include_str!("../../validation/requirements.toml"),
);

/// `validation/oq/*.toml`, as released with this binary, in run order. A
/// unit test checks this list against the directory.
pub const PROTOCOLS: &[(&str, &str)] = &[
    (
        "validation/oq/01-ledger.toml",
        include_str!("../../validation/oq/01-ledger.toml"),
    ),
    (
        "validation/oq/02-access.toml",
        include_str!("../../validation/oq/02-access.toml"),
    ),
    (
        "validation/oq/03-signatures.toml",
        include_str!("../../validation/oq/03-signatures.toml"),
    ),
    (
        "validation/oq/04-integration.toml",
        include_str!("../../validation/oq/04-integration.toml"),
    ),
    (
        "validation/oq/05-delivery.toml",
        include_str!("../../validation/oq/05-delivery.toml"),
    ),
    (
        "validation/oq/06-reports.toml",
        include_str!("../../validation/oq/06-reports.toml"),
    ),
    (
        "validation/oq/07-console.toml",
        include_str!("../../validation/oq/07-console.toml"),
    ),
    (
        "validation/oq/08-tamper.toml",
        include_str!("../../validation/oq/08-tamper.toml"),
    ),
];

/// One user requirement.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// `URS-NNN`.
    pub id: String,
    /// The requirement in one sentence.
    pub text: String,
    /// Its source: a clause of REGULATORY.md or a function of PRODUCT.md.
    pub source: String,
    /// GAMP 5 risk: high, medium, low.
    pub risk: String,
    /// Why that risk.
    #[serde(default)]
    pub rationale: String,
    /// Set when the requirement is accepted but delivered by a later
    /// release: what delivers it. Such a requirement is listed, not tested,
    /// and does not count for completeness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<String>,
}

/// `requirements.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementsFile {
    version: u32,
    requirement: Vec<Requirement>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// One HTTP request to the instance.
    Http,
    /// A CloudEvents batch to `POST /v1/events`.
    Events,
    /// Create a user, first log-in, replace the one-time password.
    User,
    /// Poll a request until its checks pass.
    Wait,
    /// Wait until the rules worker and the deliveries are idle.
    Settle,
    /// Run the `trailmark` binary on the instance's data directory.
    Cli,
    /// A raw SQL statement on the instance's database (destructive).
    Sql,
    /// Change one line of a file.
    Edit,
    /// Make a simulated target fail, stop or resume.
    Target,
    /// Read the permission bits of files and directories.
    Modes,
}

impl Action {
    /// Its name in the protocols.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Http => "http",
            Action::Events => "events",
            Action::User => "user",
            Action::Wait => "wait",
            Action::Settle => "settle",
            Action::Cli => "cli",
            Action::Sql => "sql",
            Action::Edit => "edit",
            Action::Target => "target",
            Action::Modes => "modes",
        }
    }
}

/// One numbered step of a test case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// The expected result, in words.
    pub expect: String,
    /// Who calls: `none`, `admin`, `session:USER`, `token:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// `METHOD /path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// JSON body (written as TOML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A raw body instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// An HTML form body (`application/x-www-form-urlencoded`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub form: BTreeMap<String, String>,
    /// Variable -> [text before, text after]: saves what stands between
    /// them in the response (an HTML page's hidden field).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, [String; 2]>,
    /// Content type of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `events`: the events (type, id, time, data); `source` is the system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Value>,
    /// `events`: which system sends them (`qms`, `lms`, `hr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Repetitions, each checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Expected HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// JSON pointer -> expected value (`"<any>"`: present, not null).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, Value>,
    /// Substrings the response body must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_contains: Vec<String>,
    /// Substrings the response body must not contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_excludes: Vec<String>,
    /// Kinds that must be appended during the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// Kinds that must not be appended during the step (checked once the
    /// rules worker and the deliveries are idle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries_absent: Vec<String>,
    /// The step must append nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_entries: bool,
    /// Variable -> JSON pointer into the response.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    /// `cli`: arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `cli`: expected exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// `cli`: substrings of stdout and stderr together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_contains: Vec<String>,
    /// `sql`: the statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `sql`: the statement on PostgreSQL, where it must differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_postgres: Option<String>,
    /// `sql`: the database must refuse it (`true`) or accept it (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<bool>,
    /// `edit`: the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `edit`: 1-based line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `edit`: text to find in the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<String>,
    /// `edit`: its replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// `target`: `lms` or `qms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `target`: an HTTP status to answer, `stop` or `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// `target`: for how many deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `modes`: path -> the exact permission bits it must have, octal
    /// (`"0600"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, String>,
    /// `modes`: more paths checked only when the instance runs on SQLite
    /// (the database files); on PostgreSQL the observed result says they do
    /// not apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes_sqlite: BTreeMap<String, String>,
    /// `user`: the user ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `user`: printed name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user`: roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Seconds to poll (`wait`, `entries`, `settle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// One test case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// `OQ-AREA-NN`.
    pub id: String,
    /// What it shows.
    pub title: String,
    /// Requirement IDs.
    pub covers: Vec<String>,
    /// What must hold before step 1.
    #[serde(default)]
    pub preconditions: Vec<String>,
    /// The steps, numbered from 1 in order.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

impl Case {
    /// Whether a step changes the database around the application, so the
    /// case runs only on a throw-away instance.
    pub fn destructive(&self) -> bool {
        self.steps.iter().any(|s| s.action == Action::Sql)
    }
}

/// One protocol file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Where it came from.
    #[serde(skip)]
    pub file: String,
    /// SHA-256 of its bytes.
    #[serde(skip)]
    pub sha256: String,
    /// Its title.
    pub title: String,
    /// What it covers, in words.
    #[serde(default)]
    pub description: String,
    /// The test cases.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// The requirements and protocols of one run, with their hashes.
#[derive(Debug, Clone)]
pub struct ValidationSet {
    /// The requirements in file order.
    pub requirements: Vec<Requirement>,
    /// SHA-256 of `requirements.toml`.
    pub requirements_sha256: String,
    /// The protocols in run order.
    pub protocols: Vec<Protocol>,
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why the requirements or protocols cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ValidationSetError {
    /// A file is not the TOML its schema expects.
    #[error("{file}: {problem}")]
    Toml {
        /// The file.
        file: String,
        /// What the TOML reader found.
        problem: toml::de::Error,
    },
    /// The requirements file has a version other than 1.
    #[error("{file}: version {version} is not supported (1 is)")]
    Version {
        /// The file.
        file: String,
        /// Its version.
        version: u32,
    },
    /// A requirement ID appears twice.
    #[error("{file}: requirement {id} twice")]
    DuplicateRequirement {
        /// The file.
        file: String,
        /// The ID.
        id: String,
    },
    /// A risk other than high, medium or low.
    #[error("{file}: {id} has risk `{risk}`; use high, medium or low")]
    Risk {
        /// The file.
        file: String,
        /// The requirement.
        id: String,
        /// The risk given.
        risk: String,
    },
    /// A test case ID appears twice.
    #[error("{file}: test case {id} twice")]
    DuplicateCase {
        /// The file.
        file: String,
        /// The ID.
        id: String,
    },
    /// A test case without steps.
    #[error("{file}: {case} has no steps")]
    NoSteps {
        /// The file.
        file: String,
        /// The case.
        case: String,
    },
    /// A case covers something that is not a requirement.
    #[error("{file}: {case} covers {requirement}, which is not a requirement")]
    UnknownRequirement {
        /// The file.
        file: String,
        /// The case.
        case: String,
        /// What it names.
        requirement: String,
    },
    /// A step lacks what its action needs.
    #[error("{file}: {case} step {step}: {problem}")]
    Step {
        /// The file.
        file: String,
        /// The case.
        case: String,
        /// The step, counted from 1.
        step: usize,
        /// What it lacks.
        problem: StepError,
    },
}

impl ValidationSet {
    /// The set compiled into this binary.
    ///
    /// # Errors
    /// If a file does not parse (a release would not pass its own tests).
    pub fn embedded() -> Result<ValidationSet, ValidationSetError> {
        ValidationSet::parse(REQUIREMENTS, PROTOCOLS)
    }

    /// Parses requirements and protocols given as (name, text).
    ///
    /// # Errors
    /// A file that does not parse, a duplicate ID, a case covering an
    /// unknown requirement, or a step missing what its action needs.
    pub fn parse(
        requirements: (&str, &str),
        protocols: &[(&str, &str)],
    ) -> Result<ValidationSet, ValidationSetError> {
        use ValidationSetError as E;
        let file: RequirementsFile = toml::from_str(requirements.1).map_err(|problem| E::Toml {
            file: requirements.0.to_owned(),
            problem,
        })?;
        if file.version != 1 {
            return Err(E::Version {
                file: requirements.0.to_owned(),
                version: file.version,
            });
        }
        let mut ids = BTreeSet::new();
        for r in &file.requirement {
            if !ids.insert(r.id.clone()) {
                return Err(E::DuplicateRequirement {
                    file: requirements.0.to_owned(),
                    id: r.id.clone(),
                });
            }
            if !["high", "medium", "low"].contains(&r.risk.as_str()) {
                return Err(E::Risk {
                    file: requirements.0.to_owned(),
                    id: r.id.clone(),
                    risk: r.risk.clone(),
                });
            }
        }
        let mut parsed = Vec::new();
        let mut case_ids = BTreeSet::new();
        for (name, text) in protocols {
            let named = || (*name).to_owned();
            let mut p: Protocol = toml::from_str(text).map_err(|problem| E::Toml {
                file: named(),
                problem,
            })?;
            p.file = named();
            p.sha256 = sha256_hex(text.as_bytes());
            for case in &p.cases {
                if !case_ids.insert(case.id.clone()) {
                    return Err(E::DuplicateCase {
                        file: named(),
                        id: case.id.clone(),
                    });
                }
                if case.steps.is_empty() {
                    return Err(E::NoSteps {
                        file: named(),
                        case: case.id.clone(),
                    });
                }
                for r in &case.covers {
                    if !ids.contains(r) {
                        return Err(E::UnknownRequirement {
                            file: named(),
                            case: case.id.clone(),
                            requirement: r.clone(),
                        });
                    }
                }
                for (i, step) in case.steps.iter().enumerate() {
                    check_step(step).map_err(|problem| E::Step {
                        file: named(),
                        case: case.id.clone(),
                        step: i + 1,
                        problem,
                    })?;
                }
            }
            parsed.push(p);
        }
        Ok(ValidationSet {
            requirements: file.requirement,
            requirements_sha256: sha256_hex(requirements.1.as_bytes()),
            protocols: parsed,
        })
    }

    /// Every case in run order.
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.protocols.iter().flat_map(|p| p.cases.iter())
    }

    /// Requirement -> the cases covering it, for every requirement that is
    /// not planned.
    pub fn coverage(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = self
            .requirements
            .iter()
            .filter(|r| r.planned.is_none())
            .map(|r| (r.id.clone(), Vec::new()))
            .collect();
        for case in self.cases() {
            for r in &case.covers {
                if let Some(v) = map.get_mut(r) {
                    v.push(case.id.clone());
                }
            }
        }
        map
    }

    /// Requirements no case covers.
    pub fn uncovered(&self) -> Vec<String> {
        self.coverage()
            .into_iter()
            .filter(|(_, cases)| cases.is_empty())
            .map(|(r, _)| r)
            .collect()
    }
}

/// What a step lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// No expected result.
    #[error("every step needs `expect`, the expected result in words")]
    NoExpect,
    /// A member its action needs is absent.
    #[error("action `{action}` needs {what}")]
    Needs {
        /// The action.
        action: &'static str,
        /// What it needs, as the protocol writes it.
        what: &'static str,
    },
}

fn check_step(step: &Step) -> Result<(), StepError> {
    let need = |ok: bool, what: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(StepError::Needs {
                action: step.action.as_str(),
                what,
            })
        }
    };
    if step.expect.trim().is_empty() {
        return Err(StepError::NoExpect);
    }
    match step.action {
        Action::Http | Action::Wait => need(
            step.request
                .as_deref()
                .is_some_and(|r| r.split_once(' ').is_some()),
            "`request = \"METHOD /path\"`",
        ),
        Action::Events => need(
            !step.events.is_empty() && step.source.is_some(),
            "`source` and `events`",
        ),
        Action::User => need(
            step.user.is_some() && !step.roles.is_empty(),
            "`user` and `roles`",
        ),
        Action::Settle => Ok(()),
        Action::Cli => need(!step.args.is_empty(), "`args`"),
        Action::Sql => need(
            step.sql.is_some() && step.refused.is_some(),
            "`sql` and `refused`",
        ),
        Action::Edit => need(
            step.file.is_some()
                && step.line.is_some()
                && step.find.is_some()
                && step.replace.is_some(),
            "`file`, `line`, `find` and `replace`",
        ),
        Action::Target => need(
            step.target.is_some() && step.fault.is_some(),
            "`target` and `fault`",
        ),
        Action::Modes => need(
            !step.modes.is_empty()
                && step
                    .modes
                    .values()
                    .chain(step.modes_sqlite.values())
                    .all(|m| u32::from_str_radix(m, 8).is_ok_and(|m| m <= 0o7777)),
            "`modes` (path -> octal mode such as \"0600\")",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_released_set_parses_and_covers_every_requirement() {
        let set = ValidationSet::embedded().unwrap();
        assert!(set.requirements.len() >= 40);
        assert_eq!(
            set.uncovered(),
            Vec::<String>::new(),
            "requirements without an OQ case"
        );
    }

    #[test]
    fn the_embedded_protocol_list_is_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/validation/oq");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| format!("validation/oq/{}", e.unwrap().file_name().to_string_lossy()))
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = PROTOCOLS.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(embedded, on_disk, "add new protocol files to PROTOCOLS");
    }

    #[test]
    fn a_requirement_without_a_case_is_reported_and_bad_protocols_are_refused() {
        let reqs = "version = 1\n[[requirement]]\nid = \"URS-001\"\ntext = \"a\"\nsource = \"s\"\nrisk = \"high\"\n[[requirement]]\nid = \"URS-002\"\ntext = \"b\"\nsource = \"s\"\nrisk = \"low\"\n";
        let case = "title = \"t\"\n[[case]]\nid = \"OQ-1\"\ntitle = \"t\"\ncovers = [\"URS-001\"]\n[[case.step]]\naction = \"settle\"\nexpect = \"idle\"\n";
        let set = ValidationSet::parse(("r", reqs), &[("p", case)]).unwrap();
        assert_eq!(set.uncovered(), vec!["URS-002".to_owned()]);
        let unknown = case.replace("URS-001", "URS-009");
        assert!(
            ValidationSet::parse(("r", reqs), &[("p", &unknown)])
                .unwrap_err()
                .to_string()
                .contains("URS-009")
        );
        let no_expect = case.replace("expect = \"idle\"", "expect = \"\"");
        assert!(matches!(
            ValidationSet::parse(("r", reqs), &[("p", &no_expect)]),
            Err(ValidationSetError::Step {
                problem: StepError::NoExpect,
                ..
            })
        ));
        let http = case.replace("action = \"settle\"", "action = \"http\"");
        assert!(
            ValidationSet::parse(("r", reqs), &[("p", &http)])
                .unwrap_err()
                .to_string()
                .contains("request")
        );
        let risk = reqs.replace("\"low\"", "\"none\"");
        assert!(ValidationSet::parse(("r", &risk), &[("p", case)]).is_err());
    }
}
