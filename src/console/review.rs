//! Audit-trail review by exception (docs/CONSOLE.md §4): the queue of what
//! needs a human look in a scope since that scope's last signed review, and
//! the signed review record covering exactly those entries.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Timelike as _};
use maud::html;
use serde_json::{Map, Value, json};

use super::{Viewer, actor_cell, names, page, refused, same, viewer};
use crate::api::AppState;
use crate::identity::IdentityError;
use crate::identity::roles::Permission;
use crate::identity::service::SignRequest;
use crate::ledger::{Actor, Seq, Subject, kind};
use crate::sequencer::AppendRequest;

/// The record's kind.
pub const KIND: &str = "review.audit_trail.completed";
/// Most entries of its scope one review covers; the next goes on from there.
const REVIEW_SPAN: u64 = 2_000;
/// Most seqs one review spans, so a narrow scope's page stays quick.
const REVIEW_SCAN: u64 = 50_000;
/// Signatures outside these hours (display offset) need a look.
const HOURS: std::ops::Range<u32> = 7..19;
/// Longest note per item.
const NOTE_MAX: usize = 500;

/// Which subjects a review covers (docs/CONSOLE.md §4).
#[derive(Debug, PartialEq, Eq)]
pub struct Scope {
    /// The name in forms and in the review's subject.
    pub name: &'static str,
    /// What the reviewer reads.
    pub label: &'static str,
    /// Subject prefixes; empty for every subject.
    pub prefixes: &'static [&'static str],
}

/// The review scopes, `all` first.
pub const SCOPES: &[Scope] = &[
    Scope {
        name: "all",
        label: "Whole audit trail",
        prefixes: &[],
    },
    Scope {
        name: "quality",
        label: "Quality records: CAPAs, SOP revisions, deviations, documents",
        prefixes: &["qms:"],
    },
    Scope {
        name: "training",
        label: "Training: people, assignments, completions",
        prefixes: &["lms:", "person:"],
    },
    Scope {
        name: "access",
        label: "Access: users, roles, tokens, log-ins, lockouts",
        prefixes: &["user:", "token:", "session:"],
    },
];

impl Scope {
    /// The scope called `name` (an absent one is `all`).
    pub fn named(name: Option<&str>) -> Option<&'static Scope> {
        let name = name.filter(|n| !n.is_empty()).unwrap_or("all");
        SCOPES.iter().find(|s| s.name == name)
    }

    /// Whether an entry about `subject` is in the scope.
    pub fn covers(&self, subject: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| subject.starts_with(p))
    }

    /// The subject of this scope's review records.
    fn subject(&self) -> String {
        format!("review:audit-trail/{}", self.name)
    }
}

/// The end of a review period: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC)
/// or RFC 3339, as a ledger timestamp (`recorded_at` form).
fn until_of(text: &str) -> Option<String> {
    let text = text.trim();
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").map(|t| t.and_utc())
        })
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .ok()?;
    Some(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Why an entry needs a human look, if it does.
pub fn exception(kind: &str, entry: &Value) -> Option<String> {
    let reason = || entry["reason"].as_str().unwrap_or("").to_owned();
    match kind {
        "ledger.correction" => Some(format!("Correction: {}", reason())),
        k if k.starts_with("admin.") => Some(format!("Administrative change: {}", reason())),
        "security.account.locked" => Some("Account locked after wrong passwords".into()),
        "security.signature.refused" => Some(format!(
            "Signature refused: {}",
            entry["payload"]["cause"].as_str().unwrap_or("")
        )),
        "security.auth.refused" => Some("Authentication refused".into()),
        "integration.handover.failed" => Some("Hand-over attempt failed".into()),
        "integration.handover.dead_lettered" => Some("Hand-over dead-lettered".into()),
        "integration.capa.closure_refused" => Some("CAPA closure refused".into()),
        "integration.reconciliation.drift" => Some("Reconciliation drift".into()),
        // Manual interventions: a person acted where the rules did not.
        "integration.handover.replayed" => Some(format!(
            "Dead letter {} replayed by {}: {}",
            entry["payload"]["message_id"].as_str().unwrap_or(""),
            entry["actor"].as_str().unwrap_or(""),
            reason()
        )),
        "qms.capa.closed" => Some(format!(
            "CAPA closed by {}: {}",
            entry["actor"].as_str().unwrap_or(""),
            reason()
        )),
        "security.verification.failed" => Some(format!(
            "Verification failed ({}): {}",
            entry["payload"]["found_in"].as_str().unwrap_or(""),
            entry["payload"]["problem"].as_str().unwrap_or("")
        )),
        "signature.applied" => {
            let local = entry["payload"]["manifestation"]["signed_at_local"].as_str()?;
            let at = DateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S %:z").ok()?;
            (!HOURS.contains(&at.hour())).then(|| {
                format!(
                    "Signed outside {:02}:00-{:02}:00: {local}",
                    HOURS.start, HOURS.end
                )
            })
        }
        _ => None,
    }
}

/// One entry that needs a look.
#[derive(Clone)]
struct Item {
    seq: Seq,
    hash: String,
    kind: String,
    actor: String,
    subject: String,
    recorded_at: String,
    why: String,
}

impl Item {
    /// The stored entry `e`, needing a look because of `why`.
    fn of(e: crate::store::StoredEntry, why: String) -> Item {
        Item {
            seq: e.seq,
            hash: hex::encode(&e.hash),
            kind: e.kind,
            actor: e.actor,
            subject: e.subject,
            recorded_at: e.recorded_at,
            why,
        }
    }
}

/// Where the scope's next review starts: the `to_seq` of its newest signed
/// review.
async fn start(state: &AppState, scope: &Scope) -> Result<u64, crate::store::StoreError> {
    let mut after = None;
    let mut last = 0;
    loop {
        let page = state
            .store
            .list(&crate::store::EntryFilter {
                subject: Some(scope.subject()),
                kind: Some(KIND.into()),
                after_seq: after,
                limit: crate::store::LIST_LIMIT_MAX,
                ..crate::store::EntryFilter::default()
            })
            .await?;
        let Some(tail) = page.last() else { break };
        after = Some(tail.seq);
        let seqs: Vec<Seq> = page.iter().map(|e| e.seq).collect();
        let signed: Vec<Seq> = state
            .store
            .signatures_on(&seqs)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        for e in page.iter().filter(|e| signed.contains(&e.seq)) {
            let v: Value = serde_json::from_slice(&e.canonical).unwrap_or(Value::Null);
            last = last.max(v["payload"]["to_seq"].as_u64().unwrap_or(0));
        }
        if page.len() < crate::store::LIST_LIMIT_MAX as usize {
            break;
        }
    }
    Ok(last)
}

/// A review's range and what in it needs a look.
struct Range {
    from: u64,
    /// Exclusive.
    to: u64,
    /// Entries of the scope in the range.
    in_scope: u64,
    /// The range stopped at a limit before the period's end.
    cut: bool,
    /// More overdue assignments fell due than one review lists.
    more_overdue: bool,
    items: Vec<Item>,
}

impl Range {
    /// Entries of the range that need no look (items may also name an
    /// overdue assignment's creation entry from before the range).
    fn routine(&self) -> u64 {
        let flagged = self
            .items
            .iter()
            .filter(|i| i.seq.get() >= self.from)
            .count();
        self.in_scope - flagged as u64
    }
}

/// The queue: the scope's entries from its last review's end up to `until`
/// (a ledger timestamp; now if none), within the limits.
async fn queue(
    state: &AppState,
    scope: &Scope,
    until: Option<&str>,
) -> Result<Range, crate::store::StoreError> {
    let from = start(state, scope).await?;
    let end = period_end(state, until).await?.max(from);
    let limit = end.min(from + REVIEW_SCAN);
    let mut range = items_in(state, scope, from, limit).await?;
    range.cut = range.to < end;
    Ok(range)
}

/// The exclusive end of a period: the ledger's size, or the first entry
/// recorded at or after `until` (a ledger timestamp).
async fn period_end(
    state: &AppState,
    until: Option<&str>,
) -> Result<u64, crate::store::StoreError> {
    let mut end = state.store.size().await?;
    if let Some(t) = until
        && let Some(seq) = state.store.first_seq_recorded_since(t).await?
    {
        end = end.min(seq.get());
    }
    Ok(end)
}

/// The entries of `scope` in `[from, limit)` that need a look, stopping
/// after [`REVIEW_SPAN`] entries of the scope.
async fn items_in(
    state: &AppState,
    scope: &Scope,
    from: u64,
    limit: u64,
) -> Result<Range, crate::store::StoreError> {
    let mut items = Vec::new();
    let mut assignments: Vec<(Item, String)> = Vec::new();
    let mut in_scope = 0;
    let mut to = limit;
    let mut at = from;
    'pages: while at < to {
        let rows = state
            .store
            .entries_page(at, crate::store::STREAM_PAGE_ROWS)
            .await?;
        let Some(last) = rows.last().map(|e| e.seq) else {
            break;
        };
        for e in rows.into_iter().take_while(|e| e.seq.get() < to) {
            if !scope.covers(&e.subject) {
                continue;
            }
            if in_scope == REVIEW_SPAN {
                to = e.seq.get();
                break 'pages;
            }
            in_scope += 1;
            let v: Value = serde_json::from_slice(&e.canonical).unwrap_or(Value::Null);
            if e.kind == "integration.assignment.completed" {
                let completed_at = v["payload"]["completed_at"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                assignments.push((Item::of(e, String::new()), completed_at));
                continue;
            }
            if let Some(why) = exception(&e.kind, &v) {
                items.push(Item::of(e, why));
            }
        }
        at = last.size();
    }
    items.extend(late_items(state, &assignments).await?);
    let mut more_overdue = false;
    if scope.covers("lms:assignment/") && to > from {
        let (overdue, more) = overdue_items(state, from, to).await?;
        items.extend(overdue);
        more_overdue = more;
    }
    items.sort_by_key(|i| i.seq);
    Ok(Range {
        from,
        to,
        in_scope,
        cut: false,
        more_overdue,
        items,
    })
}

/// Late training among the completions of the range: a completion after
/// its assignment's due date.
async fn late_items(
    state: &AppState,
    entries: &[(Item, String)],
) -> Result<Vec<Item>, crate::store::StoreError> {
    let mut out = Vec::new();
    for (item, completed_at) in entries {
        let Some(a) = state
            .store
            .assignment_due(assignment_of(&item.subject))
            .await?
        else {
            continue;
        };
        if later(completed_at, &a.due_at) {
            let mut i = item.clone();
            i.why = format!(
                "Training completed late: {}, due {}, completed {completed_at}",
                training(&a.person_id, &a.document_id, &a.version),
                a.due_at
            );
            out.push(i);
        }
    }
    Ok(out)
}

/// Most overdue assignments one review lists (the compliance report lists
/// them all).
const OVERDUE_MAX: usize = 200;

/// Missing training: assignments still open whose due date fell in the
/// review's period, which in time is `(recorded_at(from - 1),
/// recorded_at(to - 1)]`, so that consecutive reviews of a scope share no
/// instant and leave none out. An assignment created in the range already
/// past due is raised too. The item is the assignment's creation entry,
/// which may lie before the range. Also says whether more than
/// [`OVERDUE_MAX`] were found.
async fn overdue_items(
    state: &AppState,
    from: u64,
    to: u64,
) -> Result<(Vec<Item>, bool), crate::store::StoreError> {
    let start = match from {
        0 => String::new(),
        f => state
            .store
            .entry(Seq::clamped(f - 1))
            .await?
            .map(|e| e.recorded_at)
            .unwrap_or_default(),
    };
    let Some(end) = state
        .store
        .entry(Seq::clamped(to.saturating_sub(1)))
        .await?
        .map(|e| e.recorded_at)
    else {
        return Ok((Vec::new(), false));
    };
    // One more than shown, to tell whether there are more.
    let rows = state
        .store
        .overdue_assignment_seqs(
            Seq::clamped(to),
            &end,
            &start,
            Seq::clamped(from),
            OVERDUE_MAX as i64 + 1,
        )
        .await?;
    let more = rows.len() > OVERDUE_MAX;
    let mut out = Vec::new();
    for seq in rows.into_iter().take(OVERDUE_MAX) {
        let Some(e) = state.store.entry(seq).await? else {
            continue;
        };
        let v: Value = serde_json::from_slice(&e.canonical).unwrap_or(Value::Null);
        let data = &v["payload"]["data"];
        let field = |name: &str| data[name].as_str().unwrap_or("(not recorded)").to_owned();
        let before = if e.seq.get() < from {
            " (assigned before this review's range)"
        } else {
            ""
        };
        let why = format!(
            "Training overdue: {}, due {}, not completed{before}",
            training(
                &field("person_id"),
                &field("document_id"),
                &field("version")
            ),
            field("due_at")
        );
        out.push(Item::of(e, why));
    }
    Ok((out, more))
}

/// Whose training on what, as a review item names it.
fn training(person: &str, document: &str, version: &str) -> String {
    format!("person {person}, {document} version {version}")
}

/// `a` is after `b` (RFC 3339 times, compared as instants).
fn later(a: &str, b: &str) -> bool {
    match (
        DateTime::parse_from_rfc3339(a),
        DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

fn assignment_of(subject: &str) -> &str {
    subject.strip_prefix("lms:assignment/").unwrap_or(subject)
}

/// The scope and period a page or form asked for.
struct Asked {
    scope: &'static Scope,
    /// "Up to" as typed (kept in the forms).
    until_text: String,
    /// "Up to" as a ledger timestamp.
    until: Option<String>,
}

/// Why a page or form's `scope` or `until` cannot be used; the text says
/// what is accepted.
#[derive(Debug, thiserror::Error)]
enum AskedError {
    /// No scope of that name.
    #[error(
        "Unknown review scope; choose one of: {}.",
        SCOPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    )]
    UnknownScope,
    /// "Up to" is neither a date nor a time.
    #[error(
        "\"Up to\" must be a UTC date or time such as 2026-09-30 or 2026-09-30T18:00, \
         or RFC 3339; it was \"{0}\"."
    )]
    Until(String),
}

/// Reads `scope` and `until` from a query or form, or says what is accepted.
fn asked(fields: &HashMap<String, String>) -> Result<Asked, AskedError> {
    let scope =
        Scope::named(fields.get("scope").map(String::as_str)).ok_or(AskedError::UnknownScope)?;
    let until_text = fields
        .get("until")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let until = if until_text.is_empty() {
        None
    } else {
        Some(until_of(&until_text).ok_or_else(|| AskedError::Until(until_text.clone()))?)
    };
    Ok(Asked {
        scope,
        until_text,
        until,
    })
}

pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let v = match super::viewer_may(&state, &headers, Permission::EntriesRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match asked(&query) {
        Ok(a) => render(&state, &v, StatusCode::OK, None, None, &a).await,
        Err(m) => page(
            StatusCode::BAD_REQUEST,
            "Review",
            Some(&v),
            html! { p.error role="alert" { (m) } p { a href="/console/review" { "Back to the review" } } },
        ),
    }
}

/// The queue page; `kept` holds a refused form's fields, so the marks and
/// notes survive a mistyped password.
async fn render(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    message: Option<&str>,
    kept: Option<&HashMap<String, String>>,
    asked: &Asked,
) -> Response {
    let kept_field = |name: String| kept.and_then(|k| k.get(&name)).cloned().unwrap_or_default();
    let range = match queue(state, asked.scope, asked.until.as_deref()).await {
        Ok(q) => q,
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Review",
                Some(v),
                super::internal(&e),
            );
        }
    };
    let routine = range.routine();
    let Range {
        from,
        to,
        in_scope,
        cut,
        more_overdue,
        items,
    } = range;
    let names = names(state).await;
    let may_sign = crate::identity::roles::grants(&v.caller.roles, Permission::SignaturesApply);
    let scope = asked.scope;
    page(
        status,
        "Audit-trail review by exception",
        Some(v),
        html! {
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.filters method="get" action="/console/review" {
                div.field {
                    label for="scope" { "Scope" }
                    select #scope name="scope" {
                        @for s in SCOPES {
                            option value=(s.name) selected[s == scope] { (s.label) }
                        }
                    }
                }
                div.field {
                    label for="until" { "Up to (UTC, exclusive; blank for now)" }
                    input #until name="until" value=(asked.until_text) placeholder="2026-09-30T18:00";
                }
                button type="submit" { "Show the queue" }
            }
            p { "Scope: " strong { (scope.label) } " ("
                @if scope.prefixes.is_empty() { "every subject" } @else { "subjects " (scope.prefixes.join(", ")) }
                "). Each scope goes on from the end of its own last signed review." }
            @if in_scope == 0 && !cut {
                p { "Nothing was recorded in this scope's period since its last signed review"
                    @if let Some(u) = &asked.until { " (up to " (u) ")" }
                    ". There is nothing to review or sign." }
            } @else {
            p { "Entries " (from) " to " (to - 1) " (since the last signed review of this scope"
                @if let Some(u) = &asked.until { ", up to " (u) }
                "): " (in_scope) " in the scope, " strong { (items.len()) } " need a look; "
                (routine) " are routine." }
            @if more_overdue {
                p { "More than " (OVERDUE_MAX) " assignments fell due in this period and are still open; the first "
                    (OVERDUE_MAX) " by due date are listed. The compliance report lists them all." }
            }
            @if cut {
                p { "This review stops at " (REVIEW_SPAN) " entries of its scope or " (REVIEW_SCAN)
                    " seqs; the next review of the scope goes on from entry " (to) "." }
            }
            form.review method="post" action="/console/review" {
                input type="hidden" name="csrf" value=(v.csrf);
                input type="hidden" name="scope" value=(scope.name);
                input type="hidden" name="until" value=(asked.until_text);
                input type="hidden" name="from_seq" value=(from);
                input type="hidden" name="to_seq" value=(to);
                table {
                    caption { "Mark each item, then sign the review." }
                    thead { tr { th scope="col" { "Seq" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Why" } th scope="col" { "Actor" } th scope="col" { "Subject" } th scope="col" { "Mark" } th scope="col" { "Note" } } }
                    tbody {
                        @for i in &items {
                            tr {
                                td { a href={ "/console/entries/" (i.seq) } { (i.seq) } }
                                td.time { (i.recorded_at) }
                                td.why { code { (i.kind) } br; (i.why) }
                                td { (actor_cell(&names, &i.actor)) }
                                td.subject { (i.subject) }
                                td {
                                    label.inline for={ "mark_" (i.seq) } { "Mark for " (i.seq) }
                                    select id={ "mark_" (i.seq) } name={ "mark_" (i.seq) } {
                                        option value="ok" { "reviewed, no action" }
                                        option value="follow-up" selected[kept_field(format!("mark_{}", i.seq)) == "follow-up"] { "needs follow-up" }
                                    }
                                }
                                td {
                                    label.inline for={ "note_" (i.seq) } { "Note for " (i.seq) }
                                    input id={ "note_" (i.seq) } name={ "note_" (i.seq) } maxlength=(NOTE_MAX) value=(kept_field(format!("note_{}", i.seq)));
                                }
                            }
                        }
                    }
                }
                @if may_sign {
                    fieldset {
                        legend { "Sign the review (meaning: reviewed)" }
                        label for="user_id" { "User ID" }
                        input #user_id name="user_id" autocomplete="username" required;
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        button type="submit" { "Sign the review of entries " (from) " to " (to - 1) }
                    }
                } @else {
                    p { "Your roles do not grant signatures:apply; someone who holds it signs the review." }
                }
            }
            }
        },
    )
}

pub(super) async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !same(&v.csrf, form.get("csrf").map_or("", String::as_str)) {
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            Some(&v),
            html! { p { "The form did not come from this session; nothing was recorded." } },
        );
    }
    if let Some(r) = refused(&v, Permission::SignaturesApply) {
        return r;
    }
    let asked = match asked(&form) {
        Ok(a) => a,
        Err(m) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Review",
                Some(&v),
                html! { p.error role="alert" { (m) " Nothing was recorded." } p { a href="/console/review" { "Back to the review" } } },
            );
        }
    };
    let scope = asked.scope;
    // The review covers exactly the range the reviewer was shown: from the
    // scope's last review's end (checked again now) to where the page ended.
    let posted = |k: &str| form.get(k).and_then(|s| s.parse::<u64>().ok());
    let (from, end) = match (
        start(&state, scope).await,
        period_end(&state, asked.until.as_deref()).await,
    ) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(e), _) | (_, Err(e)) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Review",
                Some(&v),
                super::internal(&e),
            );
        }
    };
    let stale = "Another review of this scope was signed since this page was shown, or the range is not one this page offers; check the queue again and sign.";
    let to = match (posted("from_seq"), posted("to_seq")) {
        (Some(f), Some(t)) if f == from && f < t && t <= end && t - f <= REVIEW_SCAN => t,
        _ => {
            return render(&state, &v, StatusCode::CONFLICT, Some(stale), None, &asked).await;
        }
    };
    let range = match items_in(&state, scope, from, to).await {
        // A range with nothing of the scope is signed only to step over a
        // full scan window of other subjects.
        Ok(r) if r.to == to && (r.in_scope > 0 || to - from == REVIEW_SCAN) => r,
        Ok(_) => {
            return render(&state, &v, StatusCode::CONFLICT, Some(stale), None, &asked).await;
        }
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Review",
                Some(&v),
                super::internal(&e),
            );
        }
    };
    let user_id = form
        .get("user_id")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let password = form.get("password").map_or("", String::as_str);
    if let Err(e) = state
        .identity
        .reauthenticate(
            &v.caller,
            user_id,
            password,
            crate::identity::service::Reauth::Sign(crate::identity::roles::Meaning::REVIEWED),
        )
        .await
    {
        let status = match e {
            IdentityError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IdentityError::Forbidden(_) | IdentityError::Locked(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return render(
            &state,
            &v,
            status,
            Some(&e.to_string()),
            Some(&form),
            &asked,
        )
        .await;
    }
    let payload = review_record(&form, &asked, &v, (from, to), &range);
    record_and_sign(&state, &v, payload, &form, &asked).await
}

/// Appends the review record and signs it `reviewed` for the reviewer; the
/// reviewer lands on the record.
async fn record_and_sign(
    state: &AppState,
    v: &Viewer,
    payload: Map<String, Value>,
    form: &HashMap<String, String>,
    asked: &Asked,
) -> Response {
    let scope = asked.scope;
    let user_id = form
        .get("user_id")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let password = form.get("password").map_or("", String::as_str);
    // The record's actor is the console: the reviewer's `reviewed`
    // signature on it is what attributes it (no self-review rule).
    let request = AppendRequest::new(
        &kind::REVIEW_AUDIT_TRAIL_COMPLETED,
        Actor::parse("system:console").expect("a valid actor"),
        Subject::parse(&scope.subject()).expect("a valid subject"),
        payload,
    );
    let receipt = match state.sequencer.append(request).await {
        Ok(r) => r,
        Err(e) => {
            return render(
                state,
                v,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&format!("Not recorded: {e}")),
                Some(form),
                asked,
            )
            .await;
        }
    };
    let signed = state
        .identity
        .sign(
            &v.caller,
            SignRequest {
                target: receipt.hash.to_hex(),
                meaning: crate::identity::roles::Meaning::REVIEWED.as_str().into(),
                user_id: user_id.map(str::to_owned),
                password: password.to_owned(),
            },
        )
        .await;
    match signed {
        Ok(_) => Redirect::to(&format!("/console/entries/{}", receipt.seq)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, seq = %receipt.seq, "the review record was appended but its signature failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Review recorded, not signed",
                Some(v),
                html! { p.error role="alert" { "The review record (entry " (receipt.seq) ") was appended, but signing it failed: " (e.to_string())
                ". An unsigned review does not count; sign it from the entry page's API or review again." } },
            )
        }
    }
}

/// The review record's payload: the range, the reviewer, and each item with
/// the reviewer's mark and note.
fn review_record(
    form: &HashMap<String, String>,
    asked: &Asked,
    v: &Viewer,
    (from, to): (u64, u64),
    range: &Range,
) -> Map<String, Value> {
    let scope = asked.scope;
    let items = &range.items;
    let marked: Vec<Value> = items
        .iter()
        .map(|i| {
            let mark = match form.get(&format!("mark_{}", i.seq)).map(String::as_str) {
                Some("follow-up") => "follow-up",
                _ => "ok",
            };
            let note: String = form.get(&format!("note_{}", i.seq)).map_or("", String::as_str).trim().chars().take(NOTE_MAX).collect();
            json!({"seq": i.seq, "hash": i.hash, "kind": i.kind, "why": i.why, "mark": mark, "note": note})
        })
        .collect();
    let mut payload = Map::new();
    payload.insert("scope".into(), json!(scope.name));
    payload.insert("subject_prefixes".into(), json!(scope.prefixes));
    payload.insert("from_seq".into(), json!(from));
    payload.insert("to_seq".into(), json!(to));
    if let Some(u) = &asked.until {
        payload.insert("until".into(), json!(u));
    }
    payload.insert("reviewer".into(), json!(v.caller.user.user_id));
    payload.insert("reviewer_name".into(), json!(v.caller.user.printed_name));
    payload.insert("in_scope".into(), json!(range.in_scope));
    payload.insert("routine".into(), json!(range.routine()));
    if range.more_overdue {
        payload.insert("more_overdue".into(), json!(true));
    }
    payload.insert(
        "follow_up".into(),
        json!(marked.iter().filter(|m| m["mark"] == "follow-up").count()),
    );
    payload.insert("items".into(), Value::Array(marked));
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_their_prefixes_and_all_covers_everything() {
        let named = |n: &str| Scope::named(Some(n)).unwrap();
        assert_eq!(Scope::named(None).unwrap().name, "all");
        assert_eq!(Scope::named(Some("")).unwrap().name, "all");
        assert!(Scope::named(Some("qms")).is_none());
        assert!(named("all").covers("ledger:origin"));
        assert!(named("quality").covers("qms:capa/CAPA-1"));
        assert!(!named("quality").covers("lms:assignment/A-1"));
        assert!(named("training").covers("lms:assignment/A-1"));
        assert!(named("training").covers("person:E1"));
        assert!(named("access").covers("user:qa1"));
        assert!(!named("access").covers("qms:capa/CAPA-1"));
        // Review subjects are valid ledger subjects.
        for s in SCOPES {
            assert!(Subject::parse(&s.subject()).is_ok(), "{}", s.name);
        }
    }

    #[test]
    fn until_reads_dates_times_and_rfc3339_as_ledger_timestamps() {
        for (typed, read) in [
            ("2026-09-30", Some("2026-09-30T00:00:00.000000Z")),
            (" 2026-09-30T18:00 ", Some("2026-09-30T18:00:00.000000Z")),
            ("2026-09-30T18:00:05", Some("2026-09-30T18:00:05.000000Z")),
            (
                "2026-09-30T20:00:00+02:00",
                Some("2026-09-30T18:00:00.000000Z"),
            ),
            ("30/09/2026", None),
            ("2026-13-01", None),
        ] {
            assert_eq!(until_of(typed).as_deref(), read, "{typed:?}");
        }
    }

    #[test]
    fn late_compares_instants_not_strings() {
        assert!(later("2026-11-05T09:00:00Z", "2026-10-31T00:00:00Z"));
        assert!(!later("2026-10-30T23:59:59Z", "2026-10-31T00:00:00Z"));
        // The same instant in another offset, and fractions of a second.
        assert!(!later("2026-10-31T01:00:00+01:00", "2026-10-31T00:00:00Z"));
        assert!(later("2026-10-31T00:00:00.5Z", "2026-10-31T00:00:00Z"));
        assert!(!later("not a time", "2026-10-31T00:00:00Z"));
    }

    #[test]
    fn exceptions_are_named_and_routine_entries_are_not() {
        let e = |kind: &str, v: Value| exception(kind, &v);
        assert!(
            e("ledger.correction", json!({"reason": "typo"}))
                .unwrap()
                .contains("typo")
        );
        assert!(e("admin.user.changed", json!({"reason": "new role"})).is_some());
        let replay = e(
            "integration.handover.replayed",
            json!({"actor": "user:ops1", "reason": "LMS back up", "payload": {"message_id": "msg_1"}}),
        )
        .unwrap();
        assert!(
            replay.contains("msg_1")
                && replay.contains("user:ops1")
                && replay.contains("LMS back up")
        );
        assert!(
            e(
                "qms.capa.closed",
                json!({"actor": "user:qa", "reason": "done"})
            )
            .unwrap()
            .contains("user:qa")
        );
        let failed = e(
            "security.verification.failed",
            json!({"payload": {"found_in": "derived state", "problem": "state table `users`"}}),
        )
        .unwrap();
        assert!(failed.contains("derived state") && failed.contains("users"));
        assert!(e("security.account.locked", json!({})).is_some());
        assert!(e("integration.handover.dead_lettered", json!({})).is_some());
        assert!(e("lms.completion.recorded", json!({})).is_none());
        assert!(e("security.session.opened", json!({})).is_none());
        let sig = |local: &str| json!({"payload": {"manifestation": {"signed_at_local": local}}});
        assert!(e("signature.applied", sig("2026-11-21 03:12:00 +00:00")).is_some());
        assert!(e("signature.applied", sig("2026-11-21 10:12:00 +00:00")).is_none());
    }
}
