//! The operations page (docs/CONSOLE.md §3): ledger health (last
//! checkpoint, last full verification, queue depth), dead letters with a
//! re-authenticated replay, the hand-over SLA per target, and signed report
//! downloads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Viewer, failed, page, viewer_may, viewer_posting};
use crate::api::AppState;
use crate::identity::IdentityError;
use crate::identity::roles::{Permission, grants};
use crate::identity::service::Reauth;
use crate::integration::IntegrationError;
use crate::ledger::Actor;
use crate::report::{Format, ReportType, Requester, Scope};

/// Delivered messages per target the SLA figures are computed over.
const SLA_WINDOW: i64 = 10_000;

#[derive(Deserialize, Default)]
pub(super) struct OpsQuery {
    replayed: Option<u64>,
    verifying: Option<u8>,
}

pub(super) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<OpsQuery>,
) -> Response {
    let v = match viewer_may(&state, &headers, Permission::IntegrationRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let notice = match (q.replayed, q.verifying) {
        (Some(seq), _) => Some(html! {
            p.ok role="status" { "Replayed: the message is queued again, recorded as entry "
                a href={ "/console/entries/" (seq) } { (seq) } "." }
        }),
        (_, Some(_)) => Some(html! {
            p.ok role="status" { "A full verification started; its result appears below when it ends (reload)." }
        }),
        _ => None,
    };
    render(&state, &v, StatusCode::OK, notice, None).await
}

/// The replay form's fields kept after a refusal.
#[derive(Default)]
struct Kept {
    message_id: String,
    reason: String,
}

async fn render(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    notice: Option<Markup>,
    kept: Option<Kept>,
) -> Response {
    match body(state, v, notice, kept.unwrap_or_default()).await {
        Ok(b) => page(status, "Operations", Some(v), b),
        Err(e) => failed("Operations", v, &e),
    }
}

/// Seconds between two RFC 3339 times, if both parse.
fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = DateTime::parse_from_rfc3339(from).ok()?;
    let b = DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

fn age(at: &str) -> String {
    DateTime::parse_from_rfc3339(at).map_or_else(
        |_| "?".into(),
        |t| {
            let s = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
            match s {
                0..=119 => format!("{s} s ago"),
                120..=7199 => format!("{} min ago", s / 60),
                7200..=172_799 => format!("{} h ago", s / 3600),
                _ => format!("{} days ago", s / 86_400),
            }
        },
    )
}

fn plural(n: i64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The hand-over SLA of one target.
struct Sla {
    delivered: usize,
    p50: f64,
    p95: f64,
    breaches: usize,
    pending: i64,
    oldest_pending: Option<String>,
    dead: i64,
}

async fn sla(state: &AppState) -> Result<BTreeMap<String, Sla>, crate::store::StoreError> {
    let limit = state.integration.config().delivery_sla_seconds as f64;
    let counts = state.store.outbox_tallies().await?;
    let mut out: BTreeMap<String, Sla> = BTreeMap::new();
    let blank = || Sla {
        delivered: 0,
        p50: 0.0,
        p95: 0.0,
        breaches: 0,
        pending: 0,
        oldest_pending: None,
        dead: 0,
    };
    for t in counts {
        let s = out.entry(t.target).or_insert_with(blank);
        match t.status.as_str() {
            "pending" => {
                s.pending = t.messages;
                s.oldest_pending = t.oldest_created_at;
            }
            "dead" => s.dead = t.messages,
            _ => {}
        }
    }
    let targets: Vec<String> = out.keys().cloned().collect();
    for target in targets {
        let rows = state.store.delivery_times(&target, SLA_WINDOW).await?;
        let mut latencies: Vec<f64> = rows
            .iter()
            .filter_map(|r| seconds_between(&r.created_at, &r.delivered_at))
            .collect();
        latencies.sort_by(f64::total_cmp);
        if let Some(s) = out.get_mut(&target) {
            s.delivered = latencies.len();
            s.p50 = percentile(&latencies, 0.5);
            s.p95 = percentile(&latencies, 0.95);
            s.breaches = latencies.iter().filter(|l| **l > limit).count();
        }
    }
    Ok(out)
}

async fn body(
    state: &AppState,
    v: &Viewer,
    notice: Option<Markup>,
    kept: Kept,
) -> Result<Markup, crate::store::StoreError> {
    let sla = sla(state).await?;
    let manage = grants(&v.caller.roles, Permission::IntegrationManage);
    let dead = if manage {
        crate::integration::queries::dead_letters(&state.integration).await?
    } else {
        Vec::new()
    };
    let dead_total: i64 = sla.values().map(|s| s.dead).sum();
    let pending_total: i64 = sla.values().map(|s| s.pending).sum();
    let limit = state.integration.config().delivery_sla_seconds;
    let health = health_section(state, v, dead_total, pending_total).await?;
    Ok(html! {
        @if let Some(n) = notice { (n) }
        (health)
        (sla_section(&sla, limit))
        (dead_section(v, manage, &dead, dead_total, &kept))
        (reports_section(v))
    })
}

/// The ledger's size, checkpoint, last verification and queue depth.
async fn health_section(
    state: &AppState,
    v: &Viewer,
    dead_total: i64,
    pending_total: i64,
) -> Result<Markup, crate::store::StoreError> {
    let size = state.store.size().await?;
    let checkpoint = state.store.latest_checkpoint().await?;
    let last_verify = state.store.last_verify_run().await?;
    let inbox = crate::integration::queries::backlog(&state.store)
        .await?
        .events;
    let verifying = crate::audit::VERIFYING.load(Ordering::Relaxed);
    Ok(html! {
        section aria-labelledby="health" {
            h2 #health { "Ledger health" }
            dl {
                dt { "Entries" } dd { (size) }
                dt { "Last signed checkpoint" } dd {
                    @match &checkpoint {
                        Some(cp) => {
                            "size " (cp.size) ", signed " (cp.signed_at) " (" (age(&cp.signed_at)) ")"
                            @if cp.size < size { "; " (size - cp.size) " newer entries not yet covered" }
                        },
                        None => { span.warn { "none yet" } },
                    }
                }
                dt { "Last full verification" } dd {
                    @match &last_verify {
                        Some(r) => {
                            @if r.result == "intact" { span.ok { "intact" } } @else { span.bad { (r.result) } }
                            " at " (r.finished_at) " (" (age(&r.finished_at)) ", by " (r.by_whom) "): "
                            (r.entries) " entries, " (r.checkpoints) " checkpoints, " (r.signatures) " signatures"
                            @if r.result != "intact" { div.bad { (r.detail) } }
                        },
                        None => { span.warn { "never: run one" } },
                    }
                    @if verifying { div role="status" { "A verification is running." } }
                    form.inline method="post" action="/console/ops/verify" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        button type="submit" disabled[verifying] { "Verify now" }
                    }
                }
                dt { "Queue depth" } dd {
                    (inbox) " events waiting to be applied; " (pending_total) " messages waiting to be delivered; "
                    @if dead_total > 0 { span.bad { (plural(dead_total, "dead letter")) } } @else { "no dead letters" }
                }
            }
        }
    })
}

/// Delivery latency per target against the SLA.
fn sla_section(sla: &BTreeMap<String, Sla>, limit: u64) -> Markup {
    html! {
        section aria-labelledby="sla" {
            h2 #sla { "Hand-over SLA" }
            table {
                caption { "Delivery latency (queued to accepted) of the newest " (SLA_WINDOW) " deliveries per target; the SLA is " (limit) " s" }
                thead { tr { th scope="col" { "Target" } th scope="col" { "Delivered" } th scope="col" { "p50 (s)" } th scope="col" { "p95 (s)" } th scope="col" { "Over the SLA" } th scope="col" { "Waiting" } th scope="col" { "Oldest waiting" } th scope="col" { "Dead letters" } } }
                tbody {
                    @if sla.is_empty() { tr { td colspan="8" { "No hand-over has been queued yet." } } }
                    @for (target, s) in sla {
                        tr {
                            td { (target) }
                            td { (s.delivered) }
                            td { (format!("{:.2}", s.p50)) }
                            td { (format!("{:.2}", s.p95)) }
                            td { @if s.breaches > 0 { span.bad { (s.breaches) } } @else { "0" } }
                            td { (s.pending) }
                            td { @if let Some(o) = &s.oldest_pending { (age(o)) } @else { "none" } }
                            td { @if s.dead > 0 { span.bad { (s.dead) } } @else { "0" } }
                        }
                    }
                }
            }
        }
    }
}

/// The dead letters, each with its replay form (for `integration:manage`).
fn dead_section(
    v: &Viewer,
    manage: bool,
    dead: &[crate::integration::queries::DeadLetter],
    dead_total: i64,
    kept: &Kept,
) -> Markup {
    html! {
        section aria-labelledby="dead" {
            h2 #dead { "Dead letters" }
            @if !manage {
                p { (plural(dead_total, "dead letter")) ". Listing and replaying them needs " code { "integration:manage" } "." }
            } @else if dead.is_empty() {
                p { "None: every hand-over was delivered or is still being tried." }
            } @else {
                p { "A replay sends the same message again (same ID, so the receiver deduplicates). It needs your user ID, password and a reason, and is recorded as " code { "integration.handover.replayed" } "." }
                table {
                    caption { (plural(dead.len() as i64, "dead letter")) ", oldest first" }
                    thead { tr { th scope="col" { "Message" } th scope="col" { "Target" } th scope="col" { "Type" } th scope="col" { "Subject" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Hand-over" } th scope="col" { "Replay" } } }
                    tbody {
                        @for d in dead {
                            @let keep = kept.message_id == d.id;
                            tr {
                                td { code { (d.id) } }
                                td { (d.target) }
                                td { code { (d.message_type) } }
                                td.subject { a href={ "/console/lineage/" (d.subject) } { (d.subject) } }
                                td { (d.attempts) }
                                td { (d.last_error.clone().unwrap_or_default()) }
                                td { a href={ "/console/entries/" (d.created_seq) } { (d.created_seq) } }
                                td {
                                    form.replay method="post" action="/console/ops/replay" aria-label={ "Replay " (d.id) } {
                                        input type="hidden" name="csrf" value=(v.csrf);
                                        input type="hidden" name="message_id" value=(d.id);
                                        div.field { label for={ "reason-" (d.id) } { "Reason" }
                                            input id={ "reason-" (d.id) } name="reason" required value=(if keep { kept.reason.as_str() } else { "" }); }
                                        div.field { label for={ "user-" (d.id) } { "User ID" }
                                            input id={ "user-" (d.id) } name="user_id" autocomplete="username" required; }
                                        div.field { label for={ "password-" (d.id) } { "Password" }
                                            input id={ "password-" (d.id) } name="password" type="password" autocomplete="current-password" required; }
                                        button type="submit" { "Replay" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The report forms (for `reports:generate`).
fn reports_section(v: &Viewer) -> Markup {
    let reports = grants(&v.caller.roles, Permission::ReportsGenerate);
    html! {
        section aria-labelledby="reports" {
            h2 #reports { "Reports" }
            @if reports {
                p { "Each report is generated now, signed with the report certificate and recorded as " code { "report.generated" } "." }
                // (type, label, subject: none / optional / required, period, admin entries)
                @for (ty, label, subject, period, admin) in [
                    ("audit-trail", "Audit-trail copy: a subject, or a period", Some(false), true, true),
                    ("compliance", "Training compliance of a period", None, true, false),
                    ("lineage", "Lineage of a subject", Some(true), false, false),
                ] {
                    form.report method="post" action="/console/ops/report" aria-label=(label) {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="hidden" name="type" value=(ty);
                        strong { (label) }
                        @if let Some(required) = subject {
                            div.field { label for={ (ty) "-subject" } { "Subject" }
                                input id={ (ty) "-subject" } name="subject" required[required] placeholder="qms:capa/CAPA-2026-031"; }
                        }
                        @if period {
                            div.field { label for={ (ty) "-from" } { "From (YYYY-MM-DD)" } input id={ (ty) "-from" } name="from" required[subject.is_none()]; }
                            div.field { label for={ (ty) "-to" } { "To (exclusive)" } input id={ (ty) "-to" } name="to" required[subject.is_none()]; }
                        }
                        @if ty == "compliance" {
                            div.field { label for="compliance-jf" { "Job function (optional)" } input id="compliance-jf" name="job_function"; }
                        }
                        @if admin {
                            label for={ (ty) "-admin" } { input id={ (ty) "-admin" } type="checkbox" name="include_admin"; " with administrative and security entries" }
                        }
                        div.field { label for={ (ty) "-format" } { "Format" }
                            select id={ (ty) "-format" } name="format" { option value="pdf" { "PDF (signed)" } option value="jsonl" { "JSONL" } option value="csv" { "CSV" } } }
                        button type="submit" { "Download" }
                    }
                }
            } @else {
                p { "Reports need " code { "reports:generate" } "." }
            }
        }
    }
}

/// The page again with what was refused and why (an alert).
async fn refusal(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    text: &str,
    kept: Option<Kept>,
) -> Response {
    let notice = html! { p.error role="alert" { (text) } };
    render(state, v, status, Some(notice), kept).await
}

/// `POST /console/ops/replay`.
pub(super) async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    let v = match viewer_posting(
        &state,
        &headers,
        field("csrf"),
        Permission::IntegrationManage,
    )
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (id, reason) = (
        field("message_id").to_owned(),
        field("reason").trim().to_owned(),
    );
    let kept = || {
        Some(Kept {
            message_id: id.clone(),
            reason: reason.clone(),
        })
    };
    if reason.is_empty() {
        return refusal(
            &state,
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Give a reason: why is the message sent again? Nothing was recorded.",
            kept(),
        )
        .await;
    }
    let user_id = Some(field("user_id")).filter(|s| !s.is_empty());
    if let Err(e) = state
        .identity
        .reauthenticate(
            &v.caller,
            user_id,
            field("password"),
            Reauth::Act(&format!("replay dead letter {id}")),
        )
        .await
    {
        let status = match e {
            IdentityError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IdentityError::Forbidden(_) | IdentityError::Locked(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let text = format!("{e}. The message was not replayed.");
        return refusal(&state, &v, status, &text, kept()).await;
    }
    let actor = match Actor::parse(&format!("user:{}", v.caller.user.user_id)) {
        Ok(a) => a,
        Err(e) => {
            return failed("Operations", &v, &e);
        }
    };
    match state.integration.replay(&actor, &id, &reason).await {
        Ok(receipt) => {
            Redirect::to(&format!("/console/ops?replayed={}", receipt.seq)).into_response()
        }
        Err(IntegrationError::NotFound(m)) => {
            refusal(&state, &v, StatusCode::NOT_FOUND, &m, kept()).await
        }
        Err(e) => failed("Operations", &v, &e),
    }
}

/// `POST /console/ops/verify`: a full verification in the background,
/// recorded in `verify_runs` when it ends.
pub(super) async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.get("csrf").map_or("", String::as_str);
    let v = match viewer_posting(&state, &headers, csrf, Permission::IntegrationRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(claim) = crate::audit::claim_verification() {
        let by = format!("user:{}", v.caller.user.user_id);
        let (store, key, sequencer) = (
            state.store.clone(),
            state.verifier.clone(),
            state.sequencer.clone(),
        );
        tokio::spawn(async move {
            let _claim = claim;
            let options = crate::audit::VerifyOptions {
                check_canonical: true,
                external_checkpoint: None,
            };
            // A failure is logged and recorded by `verify_and_alert`.
            let _ = crate::audit::verify_and_alert(&store, &key, &sequencer, &options, &by).await;
        });
    }
    Redirect::to("/console/ops?verifying=1").into_response()
}

/// `POST /console/ops/report`: generates, signs and records a report and
/// returns it as a download.
pub(super) async fn report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let v = match viewer_posting(
        &state,
        &headers,
        &field("csrf").unwrap_or_default(),
        Permission::ReportsGenerate,
    )
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(ty) = field("type").as_deref().and_then(ReportType::parse) else {
        let text = "Choose a report type: audit-trail, compliance or lineage.";
        return refusal(&state, &v, StatusCode::BAD_REQUEST, text, None).await;
    };
    let format = field("format")
        .as_deref()
        .and_then(Format::parse)
        .unwrap_or(Format::Pdf);
    let scope = Scope {
        subject: field("subject"),
        from: field("from"),
        to: field("to"),
        job_functions: field("job_function").into_iter().collect(),
        include_admin: field("include_admin").is_some(),
    };
    let by = match Actor::parse(&format!("user:{}", v.caller.user.user_id)) {
        Ok(actor) => Requester {
            actor,
            printed_name: v.caller.user.printed_name.clone(),
        },
        Err(e) => {
            return failed("Operations", &v, &e);
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return failed("Operations", &v, &e);
        }
    };
    let path = dir.path().join(format!("report.{}", format.as_str()));
    let generated = match state.reports.generate(ty, scope, format, &by, &path).await {
        Ok(g) => g,
        Err(crate::report::ReportError::Input(m) | crate::report::ReportError::NotFound(m)) => {
            let text = format!("{m}. Nothing was recorded.");
            return refusal(&state, &v, StatusCode::BAD_REQUEST, &text, None).await;
        }
        Err(e) => {
            return failed("Operations", &v, &e);
        }
    };
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) => {
            return failed("Operations", &v, &e);
        }
    };
    let mut response = ([(header::CONTENT_TYPE, format.media_type())], bytes).into_response();
    if let Ok(d) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        generated.report_id,
        format.as_str()
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, d);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
