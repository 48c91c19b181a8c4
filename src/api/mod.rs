//! The HTTP API (axum): routes, shared state, authentication, OpenAPI.
//!
//! Writes need a bearer API token; reads of entries too. The checkpoint,
//! proofs, kinds, health, metrics and OpenAPI document are public: they reveal
//! hashes and counts, not content, and inspectors need them.

mod entries;
mod ops;
pub mod problem;
mod proofs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use utoipa::OpenApi;

use crate::identity;
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
    tokens: Arc<Mutex<HashMap<String, (TokenRow, Instant)>>>,
}

impl AppState {
    /// Shared state for the router.
    pub fn new(
        store: Store,
        sequencer: SequencerHandle,
        metrics: Metrics,
        verifier: VerifierKey,
    ) -> AppState {
        AppState {
            store,
            sequencer,
            metrics,
            verifier,
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
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal as an actor (`service:qms`).
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("send `Authorization: Bearer <token>`; `trailmark token create --principal NAME` issues one"))?;
        let text = header
            .to_str()
            .map_err(|_| Problem::unauthorized("the Authorization header is not ASCII"))?;
        let token = text.strip_prefix("Bearer ").ok_or_else(|| {
            Problem::unauthorized("the Authorization header must use the Bearer scheme")
        })?;
        let (id, presented) = identity::parse_token(token.trim()).ok_or_else(|| {
            Problem::unauthorized("the bearer token is not a Trailmark API token (tmk_...)")
        })?;
        let refused = || {
            tracing::warn!(
                token_id = id,
                "refused a request with an unknown, wrong or revoked API token"
            );
            Problem::unauthorized("the API token is unknown, wrong or revoked")
        };
        let row = state.token(id).await?.ok_or_else(refused)?;
        if row.revoked || !identity::secret_matches(&presented, &row.secret_hash) {
            return Err(refused());
        }
        let actor = identity::principal_actor(&row.principal).map_err(|e| Problem::internal(&e))?;
        Ok(Caller { actor })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Trailmark", description = "Append-only, hash-chained, Merkle-checkpointed audit-trail ledger. Errors are RFC 9457 problem+json."),
    paths(
        entries::append, entries::list, entries::get_entry,
        proofs::checkpoint, proofs::inclusion, proofs::consistency,
        ops::kinds, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        entries::AppendBody, entries::AppendResponse, entries::EntryView, entries::EntryPage,
        crate::audit::InclusionProof, proofs::ConsistencyProof, ops::KindView,
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

/// The whole router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/entries", post(entries::append).get(entries::list))
        .route("/v1/entries/{seq}", get(entries::get_entry))
        .route("/v1/checkpoint", get(proofs::checkpoint))
        .route("/v1/proofs/inclusion", get(proofs::inclusion))
        .route("/v1/proofs/consistency", get(proofs::consistency))
        .route("/v1/kinds", get(ops::kinds))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// A running server: the sequencer plus the HTTP listener.
pub struct Server {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    sequencer: crate::sequencer::Sequencer,
}

impl Server {
    /// Starts the sequencer on `store` and serves the API on `listen`
    /// (`127.0.0.1:0` picks a free port).
    ///
    /// # Errors
    /// If the ledger cannot be loaded or the address cannot be bound.
    pub async fn start(
        store: Store,
        key: crate::ledger::LedgerKey,
        config: &crate::config::Config,
        listen: &str,
    ) -> anyhow::Result<Server> {
        let metrics = Metrics::default();
        let verifier = key.verifier();
        let sequencer = crate::sequencer::Sequencer::start(
            store.clone(),
            key,
            config.sequencer.clone(),
            metrics.clone(),
        )
        .await?;
        let state = AppState::new(store, sequencer.handle(), metrics, verifier);
        let app = router(state, config.max_body_bytes)
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server {
            addr,
            stop,
            http,
            sequencer,
        })
    }

    /// The base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets requests in flight finish, then
    /// stops the sequencer (which signs a final checkpoint).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server ended with an error"),
            Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
        }
        self.sequencer.shutdown().await;
    }
}
