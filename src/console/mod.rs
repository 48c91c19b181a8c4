//! The QA console (docs/CONSOLE.md): server-rendered pages under
//! `/console`, with the session in an HttpOnly cookie and a CSRF token in
//! every form. This first part has log-in, log-out, the audit trail and the
//! entry page with its signatures and verified inclusion proof.

mod admin;
mod ops;
mod review;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::api::AppState;
use crate::identity::IdentityError;
use crate::identity::roles::{Permission, grants};
use crate::identity::service::SessionCaller;
use crate::ledger::Seq;
use crate::store::EntryFilter;

/// The session cookie.
pub const SESSION_COOKIE: &str = "tm_session";
/// The log-in form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "tm_login_csrf";
/// Rows per trail page.
const PAGE_ROWS: u32 = 50;

const STYLE: &str = include_str!("style.css");

/// The console's routes (outside the API's bearer-token middleware).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/trail") }))
        .route("/console/style.css", get(style))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/trail", get(trail))
        .route("/console/entries/{seq}", get(entry))
        .route("/console/lineage/{*subject}", get(lineage))
        .route("/console/review", get(review::show).post(review::sign))
        .route("/console/ops", get(ops::show))
        .route("/console/ops/replay", post(ops::replay))
        .route("/console/ops/verify", post(ops::verify))
        .route("/console/ops/report", post(ops::report))
        .route("/console/admin", get(admin::show))
        .route("/console/admin/user", post(admin::change_user))
        .route("/console/admin/users", post(admin::create_user))
        .route("/console/admin/tokens", post(admin::issue_token))
        .route("/console/admin/token/revoke", post(admin::revoke_token))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A signed-in person looking at the console.
struct Viewer {
    caller: SessionCaller,
    csrf: String,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The CSRF token of a session: only whoever holds the (HttpOnly) session
/// credential can compute it.
fn csrf_of(credential: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"trailmark-csrf\0");
    h.update(credential.as_bytes());
    hex::encode(h.finalize())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A console cookie. `Secure` is added to every cookie by
/// `transport::secure` when the request came over HTTPS (Trailmark's TLS or
/// a trusted proxy) or `console.secure_cookies` is set.
fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict{age}"
    ))
    .expect("cookie values are ASCII")
}

/// The signed-in viewer, or the response that sends them to log in.
async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let to_login = || Redirect::to("/console/login").into_response();
    let credential = cookie(headers, SESSION_COOKIE).ok_or_else(to_login)?;
    match state.identity.authenticate_session(&credential).await {
        Ok(caller) if caller.must_change_password => Err(page(
            StatusCode::FORBIDDEN,
            "Password change required",
            None,
            html! { p { "Your password must be changed first (first log-in or expiry). Change it with "
            code { "trailmark user password --id " (caller.user.user_id) } " and log in again." } },
        )),
        Ok(caller) => Ok(Viewer {
            csrf: csrf_of(&credential),
            caller,
        }),
        Err(_) => Err(to_login()),
    }
}

/// The signed-in viewer who holds `permission`, or the log-in redirect or
/// 403 page.
async fn viewer_may(
    state: &AppState,
    headers: &HeaderMap,
    permission: Permission,
) -> Result<Viewer, Response> {
    let v = viewer(state, headers).await?;
    match refused(&v, permission) {
        Some(r) => Err(r),
        None => Ok(v),
    }
}

/// The viewer behind a form: signed in, the form's CSRF token theirs
/// (else 403, nothing done), and holding `permission`.
async fn viewer_posting(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    permission: Permission,
) -> Result<Viewer, Response> {
    let v = viewer(state, headers).await?;
    if !same(&v.csrf, csrf) {
        return Err(page(
            StatusCode::FORBIDDEN,
            "Refused",
            Some(&v),
            html! { p { "The form did not come from this session; nothing was recorded." } },
        ));
    }
    match refused(&v, permission) {
        Some(r) => Err(r),
        None => Ok(v),
    }
}

/// The body of a page that failed inside the server: the cause goes to the
/// log, not to the browser (as the API's problem+json does).
fn internal(e: &dyn std::fmt::Display) -> Markup {
    tracing::error!(error = %e, "a console page failed");
    html! { p.error role="alert" { "The page could not be built; the cause is in the server's log." } }
}

/// The 500 page of `title`: the cause to the log, a generic message shown.
fn failed(title: &str, viewer: &Viewer, e: &dyn std::fmt::Display) -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        title,
        Some(viewer),
        internal(e),
    )
}

/// The 403 page when the viewer's roles lack `permission`.
fn refused(viewer: &Viewer, permission: Permission) -> Option<Response> {
    if grants(&viewer.caller.roles, permission) {
        None
    } else {
        Some(page(
            StatusCode::FORBIDDEN,
            "Not permitted",
            Some(viewer),
            html! { p { "Your roles do not grant " code { (permission.as_str()) } ", which this page needs." } },
        ))
    }
}

fn page(status: StatusCode, title: &str, viewer: Option<&Viewer>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Trailmark" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/console/trail" { "Trailmark" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/console/trail" { "Audit trail" } " "
                            a href="/console/review" { "Review" } " "
                            @if grants(&v.caller.roles, Permission::IntegrationRead) { a href="/console/ops" { "Operations" } " " }
                            @if grants(&v.caller.roles, Permission::UsersRead) { a href="/console/admin" { "Administration" } }
                        }
                        form.logout method="post" action="/console/logout" {
                            span { (v.caller.user.printed_name) " (" (v.caller.user.user_id) ")" }
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" { h1 { (title) } (body) }
            }
        }
    };
    let mut response = (status, Html(markup.into_string())).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

#[derive(Deserialize)]
struct LoginForm {
    user_id: String,
    password: String,
    csrf: String,
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let mut token = [0u8; 16];
    getrandom::fill(&mut token).expect("the OS provides randomness");
    let token = hex::encode(token);
    let mut response = page(
        status,
        "Log in",
        None,
        html! {
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.stacked method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                label for="user_id" { "User ID" }
                input #user_id name="user_id" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &token, Some(600)),
    );
    response
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &form.csrf) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The form expired or did not come from this page; log in again."),
        );
    }
    match state.identity.login(&form.user_id, &form.password).await {
        Ok(login) => {
            let mut response = Redirect::to("/console/trail").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &login.session.token, None),
            );
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_CSRF_COOKIE, "", Some(0)),
            );
            response
        }
        Err(IdentityError::Locked(m)) => login_page(StatusCode::FORBIDDEN, Some(&m)),
        Err(IdentityError::Unauthenticated(m)) => login_page(StatusCode::UNAUTHORIZED, Some(&m)),
        Err(e) => {
            tracing::error!(error = %e, "console log-in failed");
            login_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("Log-in failed; try again."),
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let v = match viewer(&state, &headers).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !same(&v.csrf, &form.csrf) {
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            Some(&v),
            html! { p { "The form did not come from this session." } },
        );
    }
    if let Err(e) = state.identity.logout(&v.caller).await {
        tracing::error!(error = %e, "console log-out failed");
    }
    let mut response = Redirect::to("/console/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    response
}

#[derive(Debug, Default, Deserialize)]
struct TrailQuery {
    subject: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    correlation_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    text: Option<String>,
    after: Option<u64>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

async fn names(state: &AppState) -> HashMap<String, String> {
    state
        .store
        .users()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|u| (format!("user:{}", u.user_id), u.printed_name))
        .collect()
}

fn actor_cell(names: &HashMap<String, String>, actor: &str) -> Markup {
    html! {
        @match names.get(actor) {
            Some(name) => { (name) " " span.muted { "(" (actor) ")" } },
            None => { (actor) },
        }
    }
}

async fn trail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TrailQuery>,
) -> Response {
    let v = match viewer_may(&state, &headers, Permission::EntriesRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A free-text page scans a bounded window of seqs (Store::text_scan_rows)
    // and offers to go on from its end.
    let window_end = nonempty(&q.text).map(|_| {
        q.after
            .map_or(0, |a| a.saturating_add(1))
            .saturating_add(state.store.text_scan_rows())
    });
    let filter = EntryFilter {
        subject: nonempty(&q.subject),
        kind: nonempty(&q.kind),
        actor: nonempty(&q.actor),
        correlation_id: nonempty(&q.correlation_id),
        from: nonempty(&q.from),
        to: nonempty(&q.to),
        text: nonempty(&q.text),
        after_seq: q.after.map(Seq::clamped),
        before_seq: window_end.map(Seq::clamped),
        limit: PAGE_ROWS,
    };
    let rows = match state.store.list(&filter).await {
        Ok(r) => r,
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Audit trail",
                Some(&v),
                internal(&e),
            );
        }
    };
    let seqs: Vec<Seq> = rows.iter().map(|e| e.seq).collect();
    let mut signed: HashMap<Seq, Vec<String>> = HashMap::new();
    for (target, e) in state.store.signatures_on(&seqs).await.unwrap_or_default() {
        if let Some(view) = crate::identity::signature::view_of(e.seq, &e.canonical) {
            signed.entry(target).or_default().push(view.line);
        }
    }
    let names = names(&state).await;
    let size = state.store.size().await.unwrap_or(0);
    let next = if rows.len() == PAGE_ROWS as usize {
        rows.last().map(|e| e.seq.get())
    } else {
        // Fewer matches than a page in this window: go on after it.
        window_end.filter(|end| *end < size).map(|end| end - 1)
    };
    let searched_to = window_end
        .filter(|_| rows.len() < PAGE_ROWS as usize)
        .map(|end| end.min(size).saturating_sub(1));
    let field = |name: &'static str, label: &'static str, value: &Option<String>| {
        html! {
            div.field {
                label for=(name) { (label) }
                input id=(name) name=(name) value=(value.clone().unwrap_or_default());
            }
        }
    };
    let next_link = next.map(|after| {
        let mut params: Vec<(String, String)> = [
            ("subject", &q.subject),
            ("kind", &q.kind),
            ("actor", &q.actor),
            ("correlation_id", &q.correlation_id),
            ("from", &q.from),
            ("to", &q.to),
            ("text", &q.text),
        ]
        .into_iter()
        .filter_map(|(k, v)| nonempty(v).map(|v| (k.to_owned(), v)))
        .collect();
        params.push(("after".into(), after.to_string()));
        format!("/console/trail?{}", urlencode(&params))
    });
    page(
        StatusCode::OK,
        "Audit trail",
        Some(&v),
        html! {
            form.filters method="get" action="/console/trail" role="search" {
                (field("subject", "Subject", &q.subject))
                (field("kind", "Kind", &q.kind))
                (field("actor", "Actor", &q.actor))
                (field("correlation_id", "Correlation ID", &q.correlation_id))
                (field("from", "From (UTC, RFC 3339)", &q.from))
                (field("to", "To (UTC, RFC 3339)", &q.to))
                (field("text", "Text in the entry", &q.text))
                button type="submit" { "Filter" }
            }
            table {
                caption { (rows.len()) " entries" @if q.after.is_some() { " after seq " (q.after.unwrap_or(0)) } ", oldest first" }
                thead { tr { th scope="col" { "Seq" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Actor" } th scope="col" { "Kind" } th scope="col" { "Subject" } th scope="col" { "Signatures" } } }
                tbody {
                    @for e in &rows {
                        tr {
                            td { a href={ "/console/entries/" (e.seq) } { (e.seq) } }
                            td.time { (e.recorded_at) }
                            td { (actor_cell(&names, &e.actor)) }
                            td { code { (e.kind) } }
                            td.subject { (e.subject) }
                            td { @for line in signed.get(&e.seq).into_iter().flatten() { div { (line) } } }
                        }
                    }
                }
            }
            @if let Some(to) = searched_to {
                p role="status" { "Searched the text up to seq " (to) @if next.is_some() { " of " (size - 1) } "." }
            }
            @if let Some(link) = next_link { p { a href=(link) rel="next" { @if searched_to.is_some() { "Search on" } @else { "Next page" } } } }
        },
    )
}

/// `k=v&k=v`, every byte but the unreserved ones percent-encoded (the
/// `application/x-www-form-urlencoded` form of a query or a form body).
pub fn urlencode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

async fn entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Response {
    let v = match viewer_may(&state, &headers, Permission::EntriesRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Past the last possible seq is simply no entry.
    let seq = Seq::clamped(seq);
    let row = match state.store.entry(seq).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "No such entry",
                Some(&v),
                html! { p { "There is no entry " (seq) "." } },
            );
        }
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                Some(&v),
                internal(&e),
            );
        }
    };
    let parsed: Value = serde_json::from_slice(&row.canonical).unwrap_or(Value::Null);
    let pretty = serde_json::to_string_pretty(&parsed).unwrap_or_default();
    let parent_hashes: Vec<crate::ledger::Hash> = parsed["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            h.as_str()
                .and_then(|h| crate::ledger::Hash::parse_hex(h).ok())
        })
        .collect();
    let parent_seqs = state
        .store
        .seqs_of(&parent_hashes)
        .await
        .unwrap_or_default();
    let children = state.store.children(seq).await.unwrap_or_default();
    let signatures: Vec<String> = state
        .store
        .signatures_on(&[seq])
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, e)| {
            crate::identity::signature::view_of(e.seq, &e.canonical).map(|v| v.line)
        })
        .collect();
    let proof = proof_status(&state, seq).await;
    let names = names(&state).await;
    page(
        StatusCode::OK,
        &format!("Entry {seq}"),
        Some(&v),
        html! {
            dl {
                dt { "Kind" } dd { code { (row.kind) } }
                dt { "Subject" } dd { (row.subject) " · " a href={ "/console/lineage/" (row.subject) } { "lineage" } }
                dt { "Actor" } dd { (actor_cell(&names, &row.actor)) }
                dt { "Recorded (UTC)" } dd { (row.recorded_at) }
                dt { "Hash" } dd { code.hash { (hex::encode(&row.hash)) } }
                dt { "Parents" } dd {
                    @if parent_hashes.is_empty() { "none" }
                    @for h in &parent_hashes {
                        @match parent_seqs.get(h) {
                            Some(p) => { a href={ "/console/entries/" (p) } { (p) } " " },
                            None => { code { (h.to_hex()) } " " },
                        }
                    }
                }
                dt { "Children" } dd {
                    @if children.is_empty() { "none" }
                    @for c in &children { a href={ "/console/entries/" (c) } { (c) } " " }
                }
                dt { "Signatures" } dd {
                    @if signatures.is_empty() { "none" }
                    @for line in &signatures { div.signature { (line) } }
                }
                dt { "Inclusion proof" } dd { (proof) }
            }
            h2 { "The entry as recorded" }
            pre { code { (pretty) } }
        },
    )
}

/// Proves the entry against the newest signed checkpoint and checks the
/// proof and the checkpoint's signature here, with the ledger's key.
async fn proof_status(state: &AppState, seq: Seq) -> Markup {
    let checkpoint = match state.store.latest_checkpoint().await {
        Ok(Some(cp)) if cp.size > seq.get() => cp,
        _ => {
            return html! { span.warn { "not yet covered by a signed checkpoint (one is signed within a second); reload" } };
        }
    };
    let proof = match crate::audit::inclusion_proof(&state.store, seq, Some(checkpoint.size)).await
    {
        Ok(p) => p,
        Err(e) => return html! { span.bad { "no proof: " (e) } },
    };
    match crate::audit::check_inclusion_proof(&proof, &state.verifier) {
        Ok(()) => html! {
            span.ok { "Verified" } " against the signed checkpoint of size " (checkpoint.size)
            " (" (proof.path.len()) " hashes on the path)"
        },
        Err(e) => html! { span.bad { "NOT verified: " (e) } },
    }
}

/// A simple graph of the lineage, drawn in the server as SVG: one row per
/// entry in ledger order, indented by its depth (longest path from an entry
/// without a parent in the walk), with a line from each parent. Skipped
/// above 150 entries, where the timeline alone is readable and a drawing is not.
fn lineage_graph(l: &crate::integration::queries::Lineage) -> Markup {
    const ROW: i64 = 22;
    const STEP: i64 = 26;
    if l.entries.len() < 2 || l.entries.len() > 150 {
        return html! {};
    }
    let seqs: Vec<Seq> = l
        .entries
        .iter()
        .map(|e| e["seq"].as_u64().map_or(Seq::MAX, Seq::clamped))
        .collect();
    let mut depth: HashMap<Seq, i64> = HashMap::new();
    for s in &seqs {
        let d = l
            .edges
            .iter()
            .filter(|[_, c]| c == s)
            .filter_map(|[p, _]| depth.get(p))
            .max()
            .map_or(0, |d| d + 1);
        depth.insert(*s, d.min(12));
    }
    let at = |s: &Seq| {
        let row = seqs.iter().position(|x| x == s).unwrap_or(0) as i64;
        (
            12 + depth.get(s).copied().unwrap_or(0) * STEP,
            12 + row * ROW,
        )
    };
    let height = 12 + seqs.len() as i64 * ROW;
    html! {
        figure.graph {
            svg xmlns="http://www.w3.org/2000/svg" width="900" height=(height) viewBox={ "0 0 900 " (height) } role="img"
                aria-label={ "Graph of " (seqs.len()) " entries and " (l.edges.len()) " derivations" } {
                @for [p, c] in &l.edges {
                    @let ((x1, y1), (x2, y2)) = (at(p), at(c));
                    path d={ "M" (x1) " " (y1) " C" (x1) " " (y2) " " (x1) " " (y2) " " (x2) " " (y2) } fill="none" stroke="#8a94a3" stroke-width="1.2" {}
                }
                @for (i, e) in l.entries.iter().enumerate() {
                    @let (x, y) = at(&seqs[i]);
                    @let kind = e["kind"].as_str().unwrap_or("");
                    @let bad = kind.ends_with("dead_lettered") || kind.ends_with("refused") || kind.ends_with("failed");
                    a href={ "/console/entries/" (seqs[i]) } {
                        circle cx=(x) cy=(y) r="5" fill=(if bad { "#a40e26" } else { "#174ea6" }) {}
                        text x=(x + 10) y=(y + 4) font-size="12" fill="#1b1f24" { (seqs[i]) " " (kind) }
                    }
                }
            }
            figcaption { "Each entry in ledger order, indented by how far it is derived; lines run from parent to child. Red: refused, failed or dead-lettered." }
        }
    }
}

/// The lineage of a subject (docs/INTEGRATION.md §6) as a timeline: each
/// entry reached, what it was derived from, and what it led to.
async fn lineage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(subject): Path<String>,
) -> Response {
    let v = match viewer_may(&state, &headers, Permission::IntegrationRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let l = match crate::integration::queries::lineage(&state.store, &subject).await {
        Ok(l) => l,
        Err(e) => {
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Lineage",
                Some(&v),
                internal(&e),
            );
        }
    };
    let mut parents: HashMap<Seq, Vec<Seq>> = HashMap::new();
    let mut children: HashMap<Seq, Vec<Seq>> = HashMap::new();
    for [p, c] in &l.edges {
        parents.entry(*c).or_default().push(*p);
        children.entry(*p).or_default().push(*c);
    }
    let links = |seqs: Option<&Vec<Seq>>| {
        html! { @for s in seqs.into_iter().flatten() { a href={ "/console/entries/" (s) } { (s) } " " } }
    };
    let kind_count = |k: &str| l.entries.iter().filter(|e| e["kind"] == k).count();
    let (sent, delivered, failed, dead, replayed) = (
        kind_count("integration.handover.sent") + kind_count("lms.assignment.created"),
        kind_count("integration.handover.delivered"),
        kind_count("integration.handover.failed"),
        kind_count("integration.handover.dead_lettered"),
        kind_count("integration.handover.replayed"),
    );
    let readiness = match subject.strip_prefix("qms:capa/") {
        Some(capa) => crate::integration::queries::closure_readiness(&state.integration, capa)
            .await
            .ok()
            .filter(|r| r.known),
        None => None,
    };
    page(
        StatusCode::OK,
        &format!("Lineage of {subject}"),
        Some(&v),
        html! {
            @if l.entries.is_empty() { p { "No entry has this subject." } }
            @if l.truncated { p.warn role="status" { "The walk stopped at its limit; the timeline is incomplete." } }
            @if let Some(r) = &readiness {
                section aria-labelledby="readiness" {
                    h2 #readiness { "Closure readiness" }
                    @if r.ready {
                        p { span.ok { "Ready" } ": every required completion" @if r.required.iter().any(|i| i["verification_required"] == true) { " and verification" } " is evidenced (" (r.required.len()) "). Status: " (r.status) "." }
                    } @else {
                        p { span.bad { "Not ready" } ": " (r.missing.len()) " of " (r.required.len()) " required items are missing. Status: " (r.status) "." }
                        table {
                            caption { "What is still missing" }
                            thead { tr { th scope="col" { "Person" } th scope="col" { "Document" } th scope="col" { "Missing" } th scope="col" { "Assignment status" } } }
                            tbody {
                                @for m in &r.missing {
                                    tr {
                                        td { a href={ "/console/lineage/person:" (m["person_id"].as_str().unwrap_or("")) } { (m["person_id"].as_str().unwrap_or("")) } }
                                        td { (m["document_id"].as_str().unwrap_or("")) " v" (m["version"].as_str().unwrap_or("")) }
                                        td { (m["missing"].as_str().unwrap_or("")) }
                                        td { (m["status"].as_str().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if sent + delivered + failed + dead + replayed > 0 {
                p { "Hand-overs: " (sent) " sent, " (delivered) " delivered, " (failed) " failed attempts, "
                    @if dead > 0 { span.bad { (dead) " dead-lettered" } } @else { "0 dead-lettered" }
                    ", " (replayed) " replayed." }
            }
            (lineage_graph(&l))
            table {
                caption { (l.entries.len()) " entries, in ledger order" }
                thead { tr { th scope="col" { "Seq" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Kind" } th scope="col" { "Subject" } th scope="col" { "Derived from" } th scope="col" { "Led to" } } }
                tbody {
                    @for e in &l.entries {
                        @let seq = e["seq"].as_u64().map_or(Seq::MAX, Seq::clamped);
                        tr {
                            td { a href={ "/console/entries/" (seq) } { (seq) } }
                            td.time { (e["recorded_at"].as_str().unwrap_or("")) }
                            td { code { (e["kind"].as_str().unwrap_or("")) } }
                            td { (e["subject"].as_str().unwrap_or("")) }
                            td { (links(parents.get(&seq))) }
                            td { (links(children.get(&seq))) }
                        }
                    }
                }
            }
        },
    )
}
