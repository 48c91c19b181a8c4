//! The HTTP API (axum): routes, shared state, authentication, authorisation,
//! OpenAPI.
//!
//! Every route is in [`ROUTES`] with the one permission it needs (or none:
//! public). The `authorize` middleware runs before any handler: it looks the
//! matched route up, authenticates the bearer credential (an API token
//! `tmk_...` of a service principal, or a session `tms_...` of a user),
//! checks the permission against the roles matrix or the token's scopes, and
//! puts the [`Caller`] into the request. A route missing from the table is
//! refused, so no route can be added without an authority check.
//!
//! Public routes reveal hashes and counts, not content: the checkpoint,
//! proofs, kinds, health, metrics, the OpenAPI document, and the login itself.

mod entries;
pub(crate) mod integration;
mod ops;
mod people;
pub mod problem;
mod proofs;
mod reports;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use utoipa::OpenApi;

use crate::identity::roles::{Permission, grants};
use crate::identity::service::{SessionCaller, TokenCaller};
use crate::identity::{self, Identity};
use crate::ledger::{Actor, VerifierKey};
use crate::sequencer::SequencerHandle;
use crate::store::{Store, TokenRow};
use crate::telemetry::Metrics;
pub use problem::Problem;

/// How long a looked-up token is trusted before it is read again (so a
/// revocation takes effect within this time).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most tokens kept in the cache.
const TOKEN_CACHE_MAX: usize = 10_000;

/// Every route, with the permission it needs (`None`: public). The one
/// place where routes meet authority; `trailmark roles` prints it and the
/// authorisation matrix test walks it.
pub const ROUTES: &[(&str, &str, Option<Permission>)] = &[
    ("POST", "/v1/entries", Some(Permission::EntriesAppend)),
    ("GET", "/v1/entries", Some(Permission::EntriesRead)),
    ("GET", "/v1/entries/{seq}", Some(Permission::EntriesRead)),
    ("POST", "/v1/signatures", Some(Permission::SignaturesApply)),
    ("POST", "/v1/sessions", None),
    (
        "DELETE",
        "/v1/sessions/current",
        Some(Permission::AccountSelf),
    ),
    ("GET", "/v1/account", Some(Permission::AccountSelf)),
    (
        "POST",
        "/v1/account/password",
        Some(Permission::AccountSelf),
    ),
    ("GET", "/v1/users", Some(Permission::UsersRead)),
    ("POST", "/v1/users", Some(Permission::UsersManage)),
    ("GET", "/v1/users/{id}", Some(Permission::UsersRead)),
    ("PATCH", "/v1/users/{id}", Some(Permission::UsersManage)),
    (
        "POST",
        "/v1/users/{id}/password",
        Some(Permission::UsersManage),
    ),
    (
        "POST",
        "/v1/users/{id}/certificate",
        Some(Permission::KeysManage),
    ),
    ("GET", "/v1/tokens", Some(Permission::TokensManage)),
    ("POST", "/v1/tokens", Some(Permission::TokensManage)),
    (
        "POST",
        "/v1/tokens/{id}/revoke",
        Some(Permission::TokensManage),
    ),
    (
        "POST",
        "/v1/tokens/{id}/rotate",
        Some(Permission::TokensManage),
    ),
    ("GET", "/v1/roles", Some(Permission::RolesRead)),
    ("GET", "/v1/signing-policy", Some(Permission::RolesRead)),
    ("PUT", "/v1/signing-policy", Some(Permission::PolicyManage)),
    ("GET", "/v1/checkpoint", None),
    ("GET", "/v1/proofs/inclusion", None),
    ("GET", "/v1/proofs/consistency", None),
    ("GET", "/v1/kinds", None),
    ("POST", "/v1/events", Some(Permission::EventsSend)),
    ("POST", "/xapi/statements", Some(Permission::EventsSend)),
    ("GET", "/v1/schemas", None),
    ("GET", "/v1/schemas/{name}/{version}", None),
    (
        "GET",
        "/v1/capas/{id}/closure-readiness",
        Some(Permission::IntegrationRead),
    ),
    (
        "POST",
        "/v1/capas/{id}/closure",
        Some(Permission::CapaClose),
    ),
    ("GET", "/v1/compliance", Some(Permission::IntegrationRead)),
    (
        "GET",
        "/v1/lineage/{*subject}",
        Some(Permission::IntegrationRead),
    ),
    (
        "GET",
        "/v1/deadletters",
        Some(Permission::IntegrationManage),
    ),
    (
        "POST",
        "/v1/deadletters/{id}/replay",
        Some(Permission::IntegrationManage),
    ),
    ("POST", "/v1/reconciliations", Some(Permission::EventsSend)),
    (
        "GET",
        "/v1/reports/{name}",
        Some(Permission::ReportsGenerate),
    ),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", Some(Permission::MetricsRead)),
    ("GET", "/openapi.json", None),
];

/// The route table as text, for `trailmark roles`.
pub fn route_table_text() -> String {
    let mut out = String::from("route                                   permission\n");
    for (method, path, perm) in ROUTES {
        out.push_str(&format!(
            "{:<7} {:<31} {}\n",
            method,
            path,
            perm.map_or("public", Permission::as_str)
        ));
    }
    out
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The single writer.
    pub sequencer: SequencerHandle,
    /// Metrics.
    pub metrics: Metrics,
    /// The ledger's verifier key.
    pub verifier: VerifierKey,
    /// Users, sessions, tokens, signatures.
    pub identity: Identity,
    /// Events, rules, hand-overs.
    pub integration: crate::integration::Integration,
    /// Signed reports.
    pub reports: crate::report::Reporter,
    tokens: Arc<Mutex<HashMap<String, (TokenRow, Instant)>>>,
}

impl AppState {
    /// Shared state for the router.
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        metrics: Metrics,
        verifier: VerifierKey,
        identity: Identity,
        integration: crate::integration::Integration,
        reports: crate::report::Reporter,
    ) -> AppState {
        AppState {
            store,
            sequencer,
            metrics,
            verifier,
            identity,
            integration,
            reports,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRow>, Problem> {
        if let Some((row, at)) = self.tokens.lock().expect("token cache lock").get(id)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(Some(row.clone()));
        }
        let row = self.store.token(id).await?;
        if let Some(row) = &row {
            let mut cache = self.tokens.lock().expect("token cache lock");
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(id.to_owned(), (row.clone(), Instant::now()));
        }
        Ok(row)
    }

    /// The caller's client certificate: the one Trailmark's own TLS
    /// handshake verified against `tls_client_ca`, else the one a trusted
    /// TLS-terminating proxy forwarded in `client_cert_header` (URL-encoded
    /// PEM). The header from any other peer is ignored (docs/SECURITY.md).
    fn client_certificate(&self, parts: &Parts) -> Result<Option<Vec<u8>>, Problem> {
        let transport = parts.extensions.get::<crate::transport::RequestTransport>();
        if let Some(der) = transport.and_then(|t| t.client_certificate.as_deref()) {
            return Ok(Some(der.to_vec()));
        }
        let Some(name) = &self.identity.config().client_cert_header else {
            return Ok(None);
        };
        let Some(value) = parts.headers.get(name.as_str()) else {
            return Ok(None);
        };
        if !transport.is_some_and(|t| t.from_trusted_proxy) {
            tracing::warn!(
                header = %name,
                "ignored a client-certificate header from a peer not in trusted_proxies"
            );
            return Ok(None);
        }
        let text = value
            .to_str()
            .map_err(|_| Problem::unauthorized("the client certificate header is not ASCII"))?;
        let pem = percent_decode(text);
        let der = identity::ca::pem_to_der(&pem)
            .ok()
            .and_then(|d| d.into_iter().next())
            .ok_or_else(|| Problem::unauthorized("the forwarded client certificate is not PEM"))?;
        Ok(Some(der))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who is calling: a user in a session, or a service with a token.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person.
    User(Box<SessionCaller>),
    /// A machine.
    Service(Box<TokenCaller>),
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// As an actor (`user:druiz`, `service:qms`).
    pub actor: Actor,
    /// The principal behind it.
    pub principal: Principal,
}

impl Caller {
    /// Whether the caller holds `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        match &self.principal {
            Principal::User(s) => grants(&s.roles, permission),
            Principal::Service(t) => t.scopes.permissions().contains(&permission),
        }
    }

    /// Whether the caller may append entries of `kind`.
    pub fn may_append_kind(&self, kind: &str) -> bool {
        match &self.principal {
            Principal::User(_) => true,
            Principal::Service(t) => t.scopes.allows_kind(kind),
        }
    }

    /// The session, for routes only people use.
    ///
    /// # Errors
    /// 403 for a service token.
    pub fn session(&self) -> Result<&SessionCaller, Problem> {
        match &self.principal {
            Principal::User(s) => Ok(s),
            Principal::Service(_) => Err(Problem::forbidden(
                "this needs a person's session (POST /v1/sessions), not an API token",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Caller, Problem> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Problem::internal(&"a handler needs a caller on a route the table marks public")
        })
    }
}

async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, Problem> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Problem::unauthorized("send `Authorization: Bearer <credential>`: a session from POST /v1/sessions, or an API token from `trailmark token create`")
    })?;
    let text = header
        .to_str()
        .map_err(|_| Problem::unauthorized("the Authorization header is not ASCII"))?;
    let credential = text
        .strip_prefix("Bearer ")
        .ok_or_else(|| {
            Problem::unauthorized("the Authorization header must use the Bearer scheme")
        })?
        .trim();
    if credential.starts_with("tms_") {
        let session = state.identity.authenticate_session(credential).await?;
        let actor = session.user.user_id.actor();
        return Ok(Caller {
            actor,
            principal: Principal::User(Box::new(session)),
        });
    }
    let (id, presented) = identity::parse_token(credential).ok_or_else(|| {
        Problem::unauthorized("the bearer credential is neither a Trailmark API token (tmk_...) nor a session (tms_...)")
    })?;
    let refused = || {
        tracing::warn!(token_id = id, "refused a request with an unknown API token");
        Problem::unauthorized("the API token is unknown, wrong or revoked")
    };
    let row = state.token(id).await?.ok_or_else(refused)?;
    let cert = state.client_certificate(parts)?;
    let token = state
        .identity
        .check_token(row, &presented, cert.as_deref())
        .inspect_err(|e| tracing::warn!(token_id = id, reason = %e, "refused an API token"))?;
    let actor =
        identity::principal_actor(&token.token.principal).map_err(|e| Problem::internal(&e))?;
    Ok(Caller {
        actor,
        principal: Principal::Service(Box::new(token)),
    })
}

/// Turns axum's plain-text `413` (a body over its route's limit) into
/// problem+json naming the setting that sets the limit.
async fn too_large(request: Request, next: Next) -> Response {
    let batch = matches!(request.uri().path(), "/v1/events" | "/xapi/statements");
    let response = next.run(request).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE
        || response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
    {
        return response;
    }
    let detail = if batch {
        "the body exceeds the server's limit for event batches ([integration] max_batch_bytes, 4 MiB by default); split the batch"
    } else {
        "the body exceeds the server's limit (max_body_bytes, 256 KiB by default); send smaller payloads (an entry's payload may be at most 64 KiB)"
    };
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "The request body is too large",
        detail,
    )
    .into_response()
}

/// The authority check in front of every handler.
async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return next.run(request).await;
    };
    // axum answers HEAD with the GET handler, so HEAD needs what GET needs.
    let lookup = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let entry = ROUTES.iter().find(|(m, p, _)| {
        *p == path && Method::from_bytes(m.as_bytes()).is_ok_and(|m| m == lookup)
    });
    let permission = match entry {
        Some((_, _, p)) => *p,
        None if method == Method::OPTIONS => None,
        None => {
            return Problem::internal(&format!("route {method} {path} is not in the ROUTES table"))
                .into_response();
        }
    };
    let Some(permission) = permission else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let caller = match authenticate(&state, &parts).await {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    if let Principal::User(s) = &caller.principal
        && s.must_change_password
        && permission != Permission::AccountSelf
    {
        return Problem::from(identity::IdentityError::PasswordChangeRequired(
            "your password must be changed first (first login or expiry): POST /v1/account/password".into(),
        ))
        .into_response();
    }
    if !caller.may(permission) {
        tracing::info!(actor = %caller.actor, route = %path, permission = permission.as_str(), "refused: no permission");
        return Problem::forbidden(format!(
            "{} lacks permission `{}` for {method} {path}; `trailmark roles` shows which roles grant it",
            caller.actor,
            permission.as_str()
        ))
        .with("permission", permission.as_str())
        .into_response();
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Trailmark", description = "Append-only, hash-chained, Merkle-checkpointed audit-trail ledger. Errors are RFC 9457 problem+json."),
    paths(
        entries::append, entries::list, entries::get_entry,
        people::login, people::logout, people::account, people::change_password,
        people::list_users, people::create_user, people::get_user, people::change_user,
        people::reset_password, people::import_certificate,
        people::list_tokens, people::create_token, people::revoke_token, people::rotate_token,
        people::roles, people::get_policy, people::set_policy, people::sign,
        proofs::checkpoint, proofs::inclusion, proofs::consistency,
        ops::kinds, ops::healthz, ops::readyz, ops::metrics,
        integration::post_events, integration::xapi_statements, integration::list_schemas, integration::get_schema,
        integration::closure_readiness, integration::close_capa, integration::compliance, integration::lineage,
        integration::dead_letters, integration::replay, integration::reconcile,
        reports::report,
    ),
    components(schemas(
        entries::AppendBody, entries::AppendResponse, entries::EntryView, entries::EntryPage,
        crate::identity::signature::SignatureView, crate::identity::signature::SourceSignatureView,
        crate::identity::service::NewUser, crate::identity::service::UserChange,
        crate::identity::service::UserView, crate::identity::service::TokenScopes,
        crate::identity::service::SignRequest,
        people::LoginBody, people::LoginResponse, people::PasswordBody, people::PasswordResponse,
        people::CreateUserBody, people::ChangeUserBody, people::ResetBody, people::CertificateBody,
        people::TokenBody, people::TokenResponse, people::RevokeBody, people::RotateResponse,
        people::TokenView, people::PolicyBody, people::SignatureResponse,
        crate::audit::InclusionProof, proofs::ConsistencyProof, ops::KindView,
        crate::integration::Ack, integration::EventsResponse, integration::SchemaEntry,
        crate::integration::queries::Readiness, integration::ClosureBody, integration::ClosureResponse,
        crate::integration::queries::ComplianceRow, crate::integration::queries::Lineage,
        crate::integration::queries::DeadLetter, integration::ReplayBody, integration::ReconciliationBody,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI 3.1 document, generated from the handlers and types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole router: the API's routes behind `authorize`, then `pages` (the
/// console, which authenticates its own cookie and checks each page's
/// permission itself, docs/CONSOLE.md).
pub fn router(
    state: AppState,
    pages: Router<AppState>,
    max_body_bytes: usize,
    max_batch_bytes: usize,
) -> Router {
    let batch = DefaultBodyLimit::max(max_batch_bytes);
    Router::new()
        .route("/v1/entries", post(entries::append).get(entries::list))
        .route("/v1/entries/{seq}", get(entries::get_entry))
        .route("/v1/signatures", post(people::sign))
        .route("/v1/sessions", post(people::login))
        .route(
            "/v1/sessions/current",
            axum::routing::delete(people::logout),
        )
        .route("/v1/account", get(people::account))
        .route("/v1/account/password", post(people::change_password))
        .route(
            "/v1/users",
            get(people::list_users).post(people::create_user),
        )
        .route(
            "/v1/users/{id}",
            get(people::get_user).patch(people::change_user),
        )
        .route("/v1/users/{id}/password", post(people::reset_password))
        .route(
            "/v1/users/{id}/certificate",
            post(people::import_certificate),
        )
        .route(
            "/v1/tokens",
            get(people::list_tokens).post(people::create_token),
        )
        .route("/v1/tokens/{id}/revoke", post(people::revoke_token))
        .route("/v1/tokens/{id}/rotate", post(people::rotate_token))
        .route("/v1/roles", get(people::roles))
        .route(
            "/v1/signing-policy",
            get(people::get_policy).put(people::set_policy),
        )
        .route("/v1/checkpoint", get(proofs::checkpoint))
        .route("/v1/proofs/inclusion", get(proofs::inclusion))
        .route("/v1/proofs/consistency", get(proofs::consistency))
        .route("/v1/kinds", get(ops::kinds))
        .route("/v1/events", post(integration::post_events).layer(batch))
        .route(
            "/xapi/statements",
            post(integration::xapi_statements).layer(batch),
        )
        .route("/v1/schemas", get(integration::list_schemas))
        .route("/v1/schemas/{name}/{version}", get(integration::get_schema))
        .route(
            "/v1/capas/{id}/closure-readiness",
            get(integration::closure_readiness),
        )
        .route("/v1/capas/{id}/closure", post(integration::close_capa))
        .route("/v1/compliance", get(integration::compliance))
        .route("/v1/reports/{name}", get(reports::report))
        .route("/v1/lineage/{*subject}", get(integration::lineage))
        .route("/v1/deadletters", get(integration::dead_letters))
        .route("/v1/deadletters/{id}/replay", post(integration::replay))
        .route("/v1/reconciliations", post(integration::reconcile))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .merge(pages)
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(too_large))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
