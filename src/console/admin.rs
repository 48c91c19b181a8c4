//! Administration (docs/CONSOLE.md §3): users (create, roles, status),
//! API tokens (issue, revoke) and the role matrix, each change through the
//! same `Identity` calls as the API, with its reason recorded.

use std::collections::HashMap;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};

use super::{Viewer, failed, page, viewer_may, viewer_posting};
use crate::api::AppState;
use crate::identity::IdentityError;
use crate::identity::roles::{MATRIX, Permission, Role, grants};
use crate::identity::service::{NewUser, TokenScopes, UserChange};
use crate::ledger::Actor;

pub(super) async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer_may(&state, &headers, Permission::UsersRead).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    render(&state, &v, StatusCode::OK, None).await
}

async fn render(
    state: &AppState,
    v: &Viewer,
    status: StatusCode,
    notice: Option<Markup>,
) -> Response {
    match body(state, v, notice).await {
        Ok(b) => page(status, "Administration", Some(v), b),
        Err(e) => failed("Administration", v, &e),
    }
}

fn reason_field(id: &str) -> Markup {
    html! {
        div.field {
            label for=(id) { "Reason (recorded)" }
            input id=(id) name="reason" required;
        }
    }
}

fn role_boxes(prefix: &str, held: &[String]) -> Markup {
    html! {
        fieldset.roles {
            legend { "Roles" }
            @for r in Role::ALL.iter().filter(|r| **r != Role::Integration) {
                @let id = format!("{prefix}-{}", r.as_str());
                label for=(id) {
                    input id=(id) type="checkbox" name={ "role_" (r.as_str()) } checked[held.iter().any(|h| h == r.as_str())];
                    " " (r.as_str())
                }
            }
        }
    }
}

async fn body(
    state: &AppState,
    v: &Viewer,
    notice: Option<Markup>,
) -> Result<Markup, IdentityError> {
    let users = state.identity.users().await?;
    let manage_users = grants(&v.caller.roles, Permission::UsersManage);
    let manage_tokens = grants(&v.caller.roles, Permission::TokensManage);
    let tokens = if manage_tokens {
        state.store.tokens().await?
    } else {
        Vec::new()
    };
    Ok(html! {
        @if let Some(n) = notice { (n) }
        section aria-labelledby="users" {
            h2 #users { "Users" }
            table {
                caption { (users.len()) " users; a user ID is never reused" }
                thead { tr { th scope="col" { "User ID" } th scope="col" { "Printed name" } th scope="col" { "Roles" } th scope="col" { "Status" } th scope="col" { "Password expires" } @if manage_users { th scope="col" { "Change" } } } }
                tbody {
                    @for u in &users {
                        tr {
                            td { code { (u.user_id) } }
                            td { (u.printed_name) }
                            td { (u.roles.join(", ")) }
                            td { @if u.status == "active" { (u.status) } @else { span.bad { (u.status) } } }
                            td.time { (u.password_expires_at) }
                            @if manage_users {
                                td {
                                    @if u.status == "deactivated" { "deactivated (final)" } @else {
                                        details { summary { "Change roles or status" }
                                        form.change method="post" action="/console/admin/user" aria-label={ "Change " (u.user_id) } {
                                            input type="hidden" name="csrf" value=(v.csrf);
                                            input type="hidden" name="user_id" value=(u.user_id);
                                            (role_boxes(&format!("u-{}", u.user_id), &u.roles))
                                            div.field {
                                                label for={ "status-" (u.user_id) } { "Status" }
                                                select id={ "status-" (u.user_id) } name="status" {
                                                    @for s in ["active", "locked", "deactivated"] {
                                                        option value=(s) selected[u.status == s] { (s) }
                                                    }
                                                }
                                            }
                                            (reason_field(&format!("reason-{}", u.user_id)))
                                            button type="submit" { "Save" }
                                        }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manage_users {
                h3 { "New user" }
                form.create method="post" action="/console/admin/users" aria-label="New user" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    div.field { label for="new-id" { "User ID" } input id="new-id" name="user_id" required pattern="[a-z0-9][a-z0-9._-]{0,63}"; }
                    div.field { label for="new-name" { "Printed name (as on signatures)" } input id="new-name" name="printed_name" required; }
                    div.field { label for="new-email" { "Email" } input id="new-email" name="email" type="email" required; }
                    (role_boxes("new", &[]))
                    div.field { label for="new-method" { "How the identity was verified" } input id="new-method" name="identity_verification_method" required; }
                    (reason_field("new-reason"))
                    button type="submit" { "Create" }
                }
            }
        }
        @if manage_tokens {
            section aria-labelledby="tokens" {
                h2 #tokens { "API tokens" }
                table {
                    caption { (tokens.len()) " tokens; the secret is shown once, at issue" }
                    thead { tr { th scope="col" { "Token ID" } th scope="col" { "Principal" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Revoked" } th scope="col" { "Revoke" } } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { code { (t.id) } }
                                td { (t.principal) }
                                td.time { (t.created_at) }
                                td.time { (t.expires_at.clone().unwrap_or_default()) }
                                td.time { (t.revoked_at.clone().unwrap_or_default()) }
                                td {
                                    @if t.revoked_at.is_none() {
                                        details { summary { "Revoke" }
                                        form.revoke method="post" action="/console/admin/token/revoke" aria-label={ "Revoke " (t.id) } {
                                            input type="hidden" name="csrf" value=(v.csrf);
                                            input type="hidden" name="token_id" value=(t.id);
                                            (reason_field(&format!("reason-{}", t.id)))
                                            button type="submit" { "Revoke now" }
                                        }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h3 { "New token" }
                form.issue method="post" action="/console/admin/tokens" aria-label="New token" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    div.field { label for="tok-principal" { "Service principal (e.g. qms)" } input id="tok-principal" name="principal" required; }
                    (reason_field("tok-reason"))
                    button type="submit" { "Issue" }
                }
            }
        }
        section aria-labelledby="matrix" {
            h2 #matrix { "Roles and permissions" }
            table {
                caption { "The authorisation matrix (the same for the API and the console)" }
                thead { tr { th scope="col" { "Role" } th scope="col" { "Permissions" } } }
                tbody {
                    @for (role, perms) in MATRIX {
                        tr { td { (role.as_str()) } td { (perms.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) } }
                    }
                }
            }
        }
    })
}

fn field<'a>(form: &'a HashMap<String, String>, k: &str) -> &'a str {
    form.get(k).map_or("", |s| s.trim())
}

fn roles_of(form: &HashMap<String, String>) -> Vec<String> {
    Role::ALL
        .iter()
        .filter(|r| form.contains_key(&format!("role_{}", r.as_str())))
        .map(|r| r.as_str().to_owned())
        .collect()
}

/// The viewer behind an administration form (CSRF, then `permission`) and
/// the actor their changes are recorded under.
async fn posted(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    permission: Permission,
) -> Result<(Viewer, Actor), Response> {
    let v = viewer_posting(state, headers, field(form, "csrf"), permission).await?;
    match Actor::parse(&format!("user:{}", v.caller.user.user_id)) {
        Ok(by) => Ok((v, by)),
        Err(e) => Err(failed("Administration", &v, &e)),
    }
}

/// The page with what happened: a refusal (alert, with the status the API
/// would give) or a done change (status).
async fn outcome(state: &AppState, v: &Viewer, result: Result<Markup, IdentityError>) -> Response {
    match result {
        Ok(done) => {
            render(
                state,
                v,
                StatusCode::OK,
                Some(html! { div.ok role="status" { (done) } }),
            )
            .await
        }
        Err(IdentityError::Store(e)) => failed("Administration", v, &e),
        Err(e) => {
            let status = match &e {
                IdentityError::NotFound(_) => StatusCode::NOT_FOUND,
                IdentityError::Conflict(_) => StatusCode::CONFLICT,
                IdentityError::Forbidden(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let alert = html! { p.error role="alert" { (e) ". Nothing was changed." } };
            render(state, v, status, Some(alert)).await
        }
    }
}

/// `POST /console/admin/user`: roles and status of one user.
pub(super) async fn change_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (v, by) = match posted(&state, &headers, &form, Permission::UsersManage).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user_id = field(&form, "user_id").to_owned();
    let result = async {
        let user_id = crate::ledger::UserId::parse(&user_id)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let current = state.identity.user_view(&user_id).await?;
        let roles = roles_of(&form);
        let status = field(&form, "status").to_owned();
        let change = UserChange {
            roles: (roles != current.roles).then_some(roles),
            status: (!status.is_empty() && status != current.status).then_some(status),
            ..UserChange::default()
        };
        let after = state
            .identity
            .change_user(&by, &user_id, change, field(&form, "reason"))
            .await?;
        Ok(html! { "Saved: " code { (after.user_id) } " has roles " (after.roles.join(", ")) " and is " (after.status) "; recorded as " code { "admin.user.changed" } " with your reason." })
    }
    .await;
    outcome(&state, &v, result).await
}

/// `POST /console/admin/users`: a new user; the one-time password goes to
/// the person through the credential channel, never to the page.
pub(super) async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (v, by) = match posted(&state, &headers, &form, Permission::UsersManage).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = async {
        let user_id = field(&form, "user_id").to_owned();
        let new = NewUser {
            user_id,
            printed_name: field(&form, "printed_name").to_owned(),
            email: field(&form, "email").to_owned(),
            roles: roles_of(&form),
            identity_verified_by: None,
            identity_verification_method: field(&form, "identity_verification_method").to_owned(),
            initial_password: None,
        };
        let made = state.identity.create_user(&by, new, field(&form, "reason")).await?;
        Ok(html! {
            p { "Created " code { (made.user_id) } " (" (made.printed_name) "). A one-time password was sent to " (made.email) " through the credential channel; nobody else sees it. It must be changed at the first log-in." }
        })
    }
    .await;
    outcome(&state, &v, result).await
}

/// `POST /console/admin/tokens`: a token for a service principal, shown once.
pub(super) async fn issue_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (v, by) = match posted(&state, &headers, &form, Permission::TokensManage).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = async {
        let (issued, expires) = state
            .identity
            .issue_token(&by, field(&form, "principal"), TokenScopes::default(), None, None, field(&form, "reason"))
            .await?;
        Ok(html! {
            p { "Issued token " code { (issued.id) } ", valid until " (expires) ". The bearer token, shown only now:" }
            p { code.secret { (issued.token) } }
        })
    }
    .await;
    outcome(&state, &v, result).await
}

/// `POST /console/admin/token/revoke`: at once, with the reason.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (v, by) = match posted(&state, &headers, &form, Permission::TokensManage).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = async {
        let id = field(&form, "token_id").to_owned();
        let at = state.identity.revoke_token(&by, &id, 0, field(&form, "reason")).await?;
        Ok(html! { "Revoked " code { (id) } " at " (at) "; recorded as " code { "admin.token.revoked" } " with your reason." })
    }
    .await;
    outcome(&state, &v, result).await
}
