//! People and machines over HTTP: sessions, the account, users, tokens,
//! roles, the signing policy and the signing ceremony (docs/SIGNATURES.md).
//! Every handler here is behind the route table's permission check; the
//! identity rules themselves live in `identity::service`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{AppState, Caller, Problem, ROUTES};
use crate::identity::roles::{MATRIX, SigningPolicy};
use crate::identity::service::{NewUser, SignRequest, TokenScopes, UserChange, UserView};
use crate::identity::signature::SignatureView;
use crate::ledger::UserId;

/// A user ID from a path: text that is not a user ID names no user.
fn path_user(id: &str) -> Result<UserId, Problem> {
    UserId::parse(id).map_err(|_| Problem::not_found(format!("no user `{id}`")))
}

/// Parses a JSON body; the error names the path but never echoes a value
/// (bodies here carry passwords).
fn parse<T: DeserializeOwned>(body: &Bytes, schema: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(
        |e: serde_path_to_error::Error<serde_json::Error>| {
            let at = e.path().to_string();
            let what = match e.inner().classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    "is not well-formed JSON".to_owned()
                }
                _ => {
                    let text = e.inner().to_string();
                    // "missing field `x`" and "unknown field `x`" name fields, not values.
                    if text.starts_with("missing field") || text.starts_with("unknown field") {
                        text.split(" at line").next().unwrap_or(&text).to_owned()
                    } else {
                        "has a value of the wrong type".to_owned()
                    }
                }
            };
            Problem::bad_json(format!(
                "the body {what} (at `{at}`); see the {schema} schema in GET /openapi.json"
            ))
        },
    )
}

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// User ID.
    pub user_id: String,
    /// Password.
    pub password: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer credential `tms_...`, shown once.
    pub session: String,
    /// If true, only `POST /v1/account/password` works until the password is changed.
    pub must_change_password: bool,
    /// Seconds of inactivity that end the session.
    pub idle_seconds: u64,
}

/// Logs in with user ID and password (the two components of §11.200).
#[utoipa::path(post, path = "/v1/sessions", request_body = LoginBody,
    responses((status = 201, body = LoginResponse), (status = 401, description = "wrong user ID or password"),
              (status = 403, description = "account locked")))]
pub async fn login(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<LoginResponse>), Problem> {
    let body: LoginBody = parse(&body, "LoginBody")?;
    let login = state.identity.login(&body.user_id, &body.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(LoginResponse {
            session: login.session.token.clone(),
            must_change_password: login.must_change_password,
            idle_seconds: login.idle_seconds,
        }),
    ))
}

/// Ends the session (logout).
#[utoipa::path(delete, path = "/v1/sessions/current", responses((status = 204)), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, Problem> {
    state.identity.logout(caller.session()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(get, path = "/v1/account", responses((status = 200, body = UserView)), security(("bearer" = [])))]
pub async fn account(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserView>, Problem> {
    let s = caller.session()?;
    Ok(Json(state.identity.user_view(&s.user.user_id).await?))
}

/// `POST /v1/account/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// After a password change.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordResponse {
    /// The account now.
    pub account: UserView,
    /// A CSR for the enterprise CA, when a new signing key was made and
    /// Trailmark runs no CA.
    pub csr_pem: Option<String>,
}

/// Changes one's own password; re-wraps (or makes) the signing key.
#[utoipa::path(post, path = "/v1/account/password", request_body = PasswordBody,
    responses((status = 200, body = PasswordResponse), (status = 401, description = "current password wrong"),
              (status = 422, description = "the new password breaks the policy")), security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<PasswordResponse>, Problem> {
    let s = caller.session()?;
    let body: PasswordBody = parse(&body, "PasswordBody")?;
    let csr_pem = state
        .identity
        .change_password(s, &body.current_password, &body.new_password)
        .await?;
    Ok(Json(PasswordResponse {
        account: state.identity.user_view(&s.user.user_id).await?,
        csr_pem,
    }))
}

/// Every user.
#[utoipa::path(get, path = "/v1/users", responses((status = 200, body = [UserView])), security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<UserView>>, Problem> {
    Ok(Json(state.identity.users().await?))
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    /// User ID, never reused.
    pub user_id: String,
    /// Legal printed name.
    pub printed_name: String,
    /// Email.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Who verified the identity (default: the caller).
    #[serde(default)]
    pub identity_verified_by: Option<String>,
    /// How the identity was verified (§11.100(b)).
    pub identity_verification_method: String,
    /// Why (recorded). There is no password here: Trailmark sends a
    /// one-time password to the person through the credential channel.
    pub reason: String,
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", request_body = CreateUserBody,
    responses((status = 201, body = UserView), (status = 409, description = "user ID taken (never reused), or no credential channel to send the one-time password"),
              (status = 422, description = "invalid field or missing reason")), security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<UserView>), Problem> {
    let b: CreateUserBody = parse(&body, "CreateUserBody")?;
    let new = NewUser {
        user_id: b.user_id,
        printed_name: b.printed_name,
        email: b.email,
        roles: b.roles,
        identity_verified_by: b.identity_verified_by,
        identity_verification_method: b.identity_verification_method,
        initial_password: None,
    };
    let view = state
        .identity
        .create_user(&caller.actor, new, &b.reason)
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", responses((status = 200, body = UserView), (status = 404)), security(("bearer" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, Problem> {
    let id = path_user(&id)?;
    Ok(Json(state.identity.user_view(&id).await?))
}

/// `PATCH /v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeUserBody {
    /// New printed name.
    #[serde(default)]
    pub printed_name: Option<String>,
    /// New email.
    #[serde(default)]
    pub email: Option<String>,
    /// New roles (the whole set).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// `active` (unlock), `locked`, `deactivated` (final).
    #[serde(default)]
    pub status: Option<String>,
    /// Why (recorded).
    pub reason: String,
}

/// Changes a user; the entry records old and new values.
#[utoipa::path(patch, path = "/v1/users/{id}", request_body = ChangeUserBody,
    responses((status = 200, body = UserView), (status = 403, description = "separation of duties"),
              (status = 409, description = "deactivated"), (status = 422, description = "invalid change")), security(("bearer" = [])))]
pub async fn change_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<UserView>, Problem> {
    let id = path_user(&id)?;
    let b: ChangeUserBody = parse(&body, "ChangeUserBody")?;
    let change = UserChange {
        printed_name: b.printed_name,
        email: b.email,
        roles: b.roles,
        status: b.status,
    };
    Ok(Json(
        state
            .identity
            .change_user(&caller.actor, &id, change, &b.reason)
            .await?,
    ))
}

/// `POST /v1/users/{id}/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// Why (recorded), e.g. "user forgot password, identity checked by phone".
    pub reason: String,
}

/// An administrator resets a password (loss management: the certificate is revoked).
#[utoipa::path(post, path = "/v1/users/{id}/password", request_body = ResetBody,
    responses((status = 200, body = UserView)), security(("bearer" = [])))]
pub async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<UserView>, Problem> {
    let id = path_user(&id)?;
    let b: ResetBody = parse(&body, "ResetBody")?;
    Ok(Json(
        state
            .identity
            .reset_password(&caller.actor, &id, None, &b.reason)
            .await?,
    ))
}

/// `POST /v1/users/{id}/certificate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateBody {
    /// A certificate from the enterprise CA (PEM); absent: issue one from Trailmark's CA.
    #[serde(default)]
    pub certificate_pem: Option<String>,
    /// Why (recorded).
    pub reason: String,
}

/// Issues or loads a user's signing certificate.
#[utoipa::path(post, path = "/v1/users/{id}/certificate", request_body = CertificateBody,
    responses((status = 201, description = "recorded; body: {certificate_sha256}")), security(("bearer" = [])))]
pub async fn import_certificate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let id = path_user(&id)?;
    let b: CertificateBody = parse(&body, "CertificateBody")?;
    let sha = match &b.certificate_pem {
        Some(pem) => {
            state
                .identity
                .import_certificate(&caller.actor, &id, pem, &b.reason)
                .await?
        }
        None => {
            if b.reason.trim().is_empty() {
                return Err(Problem::from(crate::identity::IdentityError::Invalid(
                    "reason is required".into(),
                )));
            }
            state
                .identity
                .issue_certificate(&caller.actor, &id, &b.reason)
                .await?
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"certificate_sha256": sha})),
    ))
}

/// A token as listed (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Public ID.
    pub id: String,
    /// Principal.
    pub principal: String,
    /// Scopes.
    pub scopes: TokenScopes,
    /// Created.
    pub created_at: String,
    /// Expiry.
    pub expires_at: Option<String>,
    /// Revocation time (future during a rotation overlap).
    pub revoked_at: Option<String>,
    /// Pinned client certificate.
    pub client_certificate_sha256: Option<String>,
}

/// Every token.
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [TokenView])), security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Vec<TokenView>>, Problem> {
    let rows = state.store.tokens().await?;
    Ok(Json(
        rows.into_iter()
            .map(|t| TokenView {
                scopes: serde_json::from_str(&t.scopes).unwrap_or_default(),
                id: t.id,
                principal: t.principal,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
                client_certificate_sha256: t.client_cert_sha256,
            })
            .collect(),
    ))
}

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Service principal, e.g. `qms`.
    pub principal: String,
    /// Scopes (default: entries:append and entries:read, every kind).
    #[serde(default)]
    pub scopes: Option<TokenScopes>,
    /// Days to expiry (default 90).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Client certificate (PEM) to pin.
    #[serde(default)]
    pub client_certificate_pem: Option<String>,
    /// Why (recorded).
    pub reason: String,
}

/// A new token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Public ID.
    pub token_id: String,
    /// The bearer token; store it now, it is not shown again.
    pub token: String,
    /// Expiry.
    pub expires_at: String,
}

/// Issues a token.
#[utoipa::path(post, path = "/v1/tokens", request_body = TokenBody,
    responses((status = 201, body = TokenResponse)), security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenResponse>), Problem> {
    let b: TokenBody = parse(&body, "TokenBody")?;
    let (issued, expires_at) = state
        .identity
        .issue_token(
            &caller.actor,
            &b.principal,
            b.scopes.unwrap_or_default(),
            b.expires_in_days,
            b.client_certificate_pem.as_deref(),
            &b.reason,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token_id: issued.id.clone(),
            token: issued.token.clone(),
            expires_at,
        }),
    ))
}

/// `POST /v1/tokens/{id}/revoke` and `/rotate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Minutes the token keeps working (rotation overlap; default 0 for
    /// revoke, 60 for rotate).
    #[serde(default)]
    pub overlap_minutes: Option<u32>,
    /// Why (recorded).
    pub reason: String,
}

/// Revokes a token.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", request_body = RevokeBody,
    responses((status = 200, description = "revoked; body: {effective_at}")), security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let b: RevokeBody = parse(&body, "RevokeBody")?;
    let at = state
        .identity
        .revoke_token(
            &caller.actor,
            &id,
            b.overlap_minutes.unwrap_or(0),
            &b.reason,
        )
        .await?;
    state.tokens.lock().expect("token cache lock").remove(&id);
    Ok(Json(json!({"effective_at": at})))
}

/// After a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotateResponse {
    /// The new token.
    pub new: TokenResponse,
    /// When the old token stops working.
    pub old_token_valid_until: String,
}

/// Rotates a token without downtime.
#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", request_body = RevokeBody,
    responses((status = 201, body = RotateResponse)), security(("bearer" = [])))]
pub async fn rotate_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RotateResponse>), Problem> {
    let b: RevokeBody = parse(&body, "RevokeBody")?;
    let (issued, expires_at, until) = state
        .identity
        .rotate_token(
            &caller.actor,
            &id,
            b.overlap_minutes.unwrap_or(60),
            &b.reason,
        )
        .await?;
    state.tokens.lock().expect("token cache lock").remove(&id);
    Ok((
        StatusCode::CREATED,
        Json(RotateResponse {
            new: TokenResponse {
                token_id: issued.id.clone(),
                token: issued.token.clone(),
                expires_at,
            },
            old_token_valid_until: until,
        }),
    ))
}

/// The roles matrix, the route table and the signing policy.
#[utoipa::path(get, path = "/v1/roles", responses((status = 200, description = "matrix, routes, policy")), security(("bearer" = [])))]
pub async fn roles(State(state): State<AppState>, _caller: Caller) -> Result<Json<Value>, Problem> {
    let matrix: Vec<Value> = MATRIX
        .iter()
        .map(|(r, p)| json!({"role": r.as_str(), "permissions": p.iter().map(|x| x.as_str()).collect::<Vec<_>>()}))
        .collect();
    let routes: Vec<Value> = ROUTES
        .iter()
        .map(|(m, p, perm)| json!({"method": m, "path": p, "permission": perm.map(|x| x.as_str())}))
        .collect();
    let policy = state.identity.policy().await?;
    Ok(Json(
        json!({"matrix": matrix, "routes": routes, "signing_policy": policy}),
    ))
}

/// The signing policy in force.
#[utoipa::path(get, path = "/v1/signing-policy", responses((status = 200, description = "the policy")), security(("bearer" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<SigningPolicy>, Problem> {
    Ok(Json(state.identity.policy().await?))
}

/// `PUT /v1/signing-policy`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The whole new policy.
    #[schema(value_type = Object)]
    pub policy: SigningPolicy,
    /// Why (recorded).
    pub reason: String,
}

/// Changes the signing policy (recorded with old and new values).
#[utoipa::path(put, path = "/v1/signing-policy", request_body = PolicyBody,
    responses((status = 200, description = "the policy now")), security(("bearer" = [])))]
pub async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<SigningPolicy>, Problem> {
    let b: PolicyBody = parse(&body, "PolicyBody")?;
    state
        .identity
        .set_policy(&caller.actor, b.policy, &b.reason)
        .await?;
    Ok(Json(state.identity.policy().await?))
}

/// A signature applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureResponse {
    /// The `signature.applied` entry.
    pub seq: crate::ledger::Seq,
    /// Its hash.
    pub hash: String,
    /// As every view shows it.
    pub signature: SignatureView,
}

/// The signing ceremony: re-authenticates and signs an entry (§11.200, §11.70).
#[utoipa::path(post, path = "/v1/signatures", request_body = SignRequest,
    responses((status = 201, body = SignatureResponse), (status = 401, description = "wrong or missing credentials"),
              (status = 403, description = "authority, separation of duties, sequence, certificate, locked"),
              (status = 404, description = "no entry with that hash"), (status = 422, description = "unknown meaning or malformed hash")),
    security(("bearer" = [])))]
pub async fn sign(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<SignatureResponse>), Problem> {
    let s = caller.session()?;
    let b: SignRequest = parse(&body, "SignRequest")?;
    let receipt = state.identity.sign(s, b).await?;
    let entry = state
        .store
        .entry(receipt.seq)
        .await?
        .ok_or_else(|| Problem::internal(&"the signature entry just appended is missing"))?;
    let view = crate::identity::signature::view_of(receipt.seq, &entry.canonical)
        .ok_or_else(|| Problem::internal(&"the signature entry does not parse"))?;
    Ok((
        StatusCode::CREATED,
        Json(SignatureResponse {
            seq: receipt.seq,
            hash: receipt.hash.to_hex(),
            signature: view,
        }),
    ))
}
