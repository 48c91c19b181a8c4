//! The composition root: opens (or creates) a data directory and wires the
//! parts together: store, ledger key, sequencer, identity, integration,
//! reporter, the HTTP API with the console, and the background workers.
//!
//! The command line, the demo, the validation runner, tests and benches
//! build on this module; none of them reaches into `cli`. Nothing below
//! `instance` in the module graph imports it (docs/ARCHITECTURE.md).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::Digest as _;

use crate::api::AppState;
use crate::clock::Clock;
use crate::config::{Config, DataDir, SequencerConfig};
use crate::identity::ca::Ca;
use crate::identity::roles::SigningPolicy;
use crate::identity::service::{NewUser, TokenScopes};
use crate::identity::{Identity, IdentityError};
use crate::ledger::{Actor, LedgerKey, kind};
use crate::sequencer::{Sequencer, write_genesis};
use crate::store::Store;
use crate::telemetry::Metrics;

/// Makes the data directory and every secret in it owner-only again, as
/// `serve` does on start: an installation made before files were private
/// by default, or a file copied in with a looser mode. Returns what it
/// changed, with the mode found, for the caller to warn about.
///
/// # Errors
/// If the directory is not initialised or a mode cannot be changed (the
/// message says which `chmod` to run).
pub fn make_private(
    data: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Vec<crate::config::PrivatePath>> {
    let dir = DataDir::at(data);
    let config = dir.config()?;
    let url = dir.database_url(&config, database_url);
    Ok(dir.make_private(&config, crate::config::sqlite_file(&url).as_deref())?)
}

/// An opened data directory: configuration, store and key.
pub struct Instance {
    /// `trailmark.toml`.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The ledger key.
    pub key: LedgerKey,
    /// The data directory.
    pub dir: DataDir,
    /// The clock the identity rules read (the system's; tests move theirs).
    pub clock: Clock,
}

impl Instance {
    /// Opens an initialised data directory.
    ///
    /// # Errors
    /// If the directory is not initialised, the key is unreadable or the database unreachable.
    pub async fn open(data: &Path, database_url: Option<&str>) -> anyhow::Result<Instance> {
        let dir = DataDir::at(data);
        let config = dir.config()?;
        let key = dir.ledger_key(&config.origin)?;
        let url = dir.database_url(&config, database_url);
        let store = Store::open_url(&url)
            .await
            .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
        Ok(Instance {
            config,
            store,
            key,
            dir,
            clock: Clock::system(),
        })
    }

    /// Creates a data directory and a ledger; returns the opened instance and the
    /// first API token (principal `admin`).
    ///
    /// # Errors
    /// If the directory exists, the origin is invalid or the database fails.
    pub async fn initialise(
        data: &Path,
        origin: Option<String>,
        database_url: Option<&str>,
    ) -> anyhow::Result<(Instance, String)> {
        let origin = origin.unwrap_or_else(random_origin);
        crate::ledger::note::check_origin(&origin)?;
        let config = Config {
            origin,
            listen: "127.0.0.1:8080".into(),
            database_url: database_url.map(str::to_owned),
            max_body_bytes: 256 * 1024,
            sequencer: SequencerConfig::default(),
            identity: crate::config::IdentityConfig::default(),
            integration: crate::config::IntegrationConfig::default(),
            verify: crate::config::VerifyConfig::default(),
            transport: crate::config::TransportConfig::default(),
            console: crate::config::ConsoleConfig::default(),
        };
        let dir = DataDir::at(data);
        let key = dir.create(&config)?;
        let url = dir.database_url(&config, database_url);
        let store = Store::open_url(&url)
            .await
            .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
        write_genesis(&store, &key).await?;
        let instance = Instance {
            config,
            store,
            key,
            dir,
            clock: Clock::system(),
        };
        instance
            .with_identity(|identity| async move {
                identity
                    .set_policy(
                        &cli_actor(),
                        SigningPolicy::default(),
                        "initial signing policy recorded by `trailmark init`",
                    )
                    .await
            })
            .await?;
        instance
            .create_ca("Trailmark signing CA", "Trailmark")
            .await?;
        instance.create_report_keys().await?;
        let token = instance
            .issue_token(
                "integration",
                "initial integration token created by `trailmark init`",
            )
            .await?;
        Ok((instance, token))
    }

    /// Runs `f` with the identity service over a short-lived in-process
    /// sequencer (the CLI's administrative verbs; the server may be running).
    ///
    /// # Errors
    /// If the sequencer cannot start, or what `f` returns.
    pub async fn with_identity<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Identity) -> Fut,
        Fut: std::future::Future<Output = Result<T, IdentityError>>,
    {
        let credential_secret = credential_secret(&self.config.identity, &self.dir)?;
        let metrics = Metrics::default();
        let sequencer = Sequencer::start_with_clock(
            self.store.clone(),
            self.key.clone(),
            self.config.sequencer.clone(),
            metrics.clone(),
            self.clock.clone(),
        )
        .await?;
        let identity = Identity::new(
            self.store.clone(),
            sequencer.handle(),
            self.config.identity.clone(),
            metrics,
            load_ca(&self.dir)?,
            self.clock.clone(),
        )
        .map(|i| i.with_credential_secret(credential_secret.clone()))
        .map_err(anyhow::Error::msg);
        let result = match identity {
            Ok(identity) => f(identity).await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        sequencer.shutdown().await;
        result
    }

    /// Creates Trailmark's CA in the data directory and records it as trusted.
    ///
    /// # Errors
    /// If a CA exists or the ledger cannot be written.
    pub async fn create_ca(&self, name: &str, organisation: &str) -> anyhow::Result<String> {
        let material = crate::identity::ca::create_ca(name, organisation, 3650)?;
        self.dir
            .write_ca(&material.certificate_pem, &material.key_pem)?;
        let der = crate::identity::ca::pem_to_der(&material.certificate_pem)?
            .into_iter()
            .next()
            .context("the new CA certificate")?;
        self.with_identity(|identity| async move {
            identity
                .trust_ca(
                    &cli_actor(),
                    &der,
                    "trailmark",
                    "Trailmark's own signing CA created by `trailmark ca init`",
                )
                .await
        })
        .await
    }

    /// Runs `f` with a short-lived in-process sequencer.
    ///
    /// # Errors
    /// If the sequencer cannot start, or what `f` returns.
    pub async fn with_sequencer<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(crate::sequencer::SequencerHandle) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let sequencer = Sequencer::start_with_clock(
            self.store.clone(),
            self.key.clone(),
            self.config.sequencer.clone(),
            Metrics::default(),
            self.clock.clone(),
        )
        .await?;
        let result = f(sequencer.handle()).await;
        sequencer.shutdown().await;
        result
    }

    /// Creates the report-signing CA and certificate (P-256) in the data
    /// directory and records them (`admin.report_signing.created`).
    ///
    /// # Errors
    /// If they exist or the ledger cannot be written.
    pub async fn create_report_keys(&self) -> anyhow::Result<String> {
        use base64::Engine as _;
        let keys =
            crate::report::sign::generate_report_keys(&self.config.origin, chrono::Utc::now())?;
        let ca_der = crate::report::sign::cert_der_from_pem(&keys.ca_cert_pem)?;
        let der = crate::report::sign::cert_der_from_pem(&keys.cert_pem)?;
        let signer = crate::report::sign::ReportSigner::from_pem(
            &keys.cert_pem,
            &keys.key_pem,
            &keys.ca_cert_pem,
        )?;
        self.dir.write_report_keys(
            &keys.ca_cert_pem,
            &keys.ca_key_pem,
            &keys.cert_pem,
            &keys.key_pem,
        )?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ca_sha = hex::encode(sha2::Sha256::digest(&ca_der));
        let mut payload = serde_json::Map::new();
        payload.insert("ca_certificate".into(), b64.encode(&ca_der).into());
        payload.insert("ca_certificate_sha256".into(), ca_sha.clone().into());
        payload.insert("certificate".into(), b64.encode(&der).into());
        payload.insert("certificate_sha256".into(), signer.cert_sha256().into());
        payload.insert("subject".into(), signer.signer_name().into());
        payload.insert("algorithm".into(), "ecdsa-p256-sha256".into());
        self.with_sequencer(|seq| async move {
            let mut request = crate::sequencer::AppendRequest::new(
                &kind::ADMIN_REPORT_SIGNING_CREATED,
                cli_actor(),
                crate::ledger::Subject::parse(&format!("ca:report/{ca_sha}"))?,
                payload,
            );
            request.reason = Some("report-signing CA and certificate created by `trailmark init` or `trailmark ca init-reports`".into());
            seq.append(request).await?;
            Ok(signer.cert_sha256())
        })
        .await
    }

    /// Creates a user directly on the data directory (the first administrator,
    /// or when no administrator can log in).
    ///
    /// # Errors
    /// Invalid fields, a taken ID, or a ledger error.
    pub async fn create_user(&self, new: NewUser, reason: &str) -> anyhow::Result<()> {
        let reason = reason.to_owned();
        self.with_identity(|identity| async move {
            identity.create_user(&cli_actor(), new, &reason).await
        })
        .await
        .map(|_| ())
    }

    /// Issues a token through a short-lived in-process sequencer, so the token
    /// row and its `admin.token.created` entry commit together.
    ///
    /// # Errors
    /// If the principal is invalid or the ledger cannot be written.
    pub async fn issue_token(&self, principal: &str, reason: &str) -> anyhow::Result<String> {
        let (principal, reason) = (principal.to_owned(), reason.to_owned());
        self.with_identity(|identity| async move {
            identity
                .issue_token(
                    &cli_actor(),
                    &principal,
                    TokenScopes::default(),
                    None,
                    None,
                    &reason,
                )
                .await
        })
        .await
        .map(|(issued, _)| issued.token)
    }

    /// Trailmark's signing CA from the data directory, if there is one.
    ///
    /// # Errors
    /// If the CA files are unreadable or do not match.
    pub fn ca(&self) -> anyhow::Result<Option<Ca>> {
        load_ca(&self.dir)
    }

    /// Starts the sequencer and the HTTP API on this ledger (`127.0.0.1:0`
    /// picks a free port).
    ///
    /// # Errors
    /// If the ledger cannot be loaded or the address cannot be bound.
    pub async fn start_server(&self, listen: &str) -> anyhow::Result<Server> {
        Server::start(
            self.store.clone(),
            self.key.clone(),
            &self.config,
            self.dir.path(),
            listen,
            self.clock.clone(),
        )
        .await
    }
}

fn random_origin() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("trailmark.local/{}", hex::encode(bytes))
}

/// The actor of administrative verbs run on the data directory itself
/// (`system:cli`).
pub fn cli_actor() -> Actor {
    Actor::parse("system:cli").expect("a valid actor")
}

/// The credential channel's signing secret from the data directory, when a
/// channel is configured (then it is required).
///
/// # Errors
/// A channel without a secret file, or an unreadable or malformed one.
fn credential_secret(
    config: &crate::config::IdentityConfig,
    dir: &DataDir,
) -> anyhow::Result<Option<crate::webhook::Secret>> {
    if config.credential_webhook_url.is_none() {
        return Ok(None);
    }
    let Some(name) = &config.credential_webhook_secret_file else {
        anyhow::bail!(
            "identity.credential_webhook_url needs identity.credential_webhook_secret_file: a whsec_ secret in the data directory that signs each one-time password, so the site's system takes only Trailmark's"
        );
    };
    let path = dir.file(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "identity.credential_webhook_secret_file {}: {e}",
            path.display()
        )
    })?;
    crate::webhook::Secret::parse(&text).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "identity.credential_webhook_secret_file {}: {e}",
            path.display()
        )
    })
}

/// Trailmark's CA from the data directory, if there is one.
///
/// # Errors
/// If the CA files are unreadable or do not match.
fn load_ca(dir: &DataDir) -> anyhow::Result<Option<Ca>> {
    match dir.ca()? {
        Some((cert, key)) => Ok(Some(Ca::load(&cert, &key)?)),
        None => Ok(None),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A running server: the sequencer plus the HTTP listener.
pub struct Server {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    /// The address of the plain-HTTP redirect to `https://`, if configured.
    pub redirect_addr: Option<std::net::SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    redirect: Option<Redirect>,
    certificate: Option<Arc<crate::transport::ServerCertificate>>,
    sequencer: crate::sequencer::Sequencer,
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop_workers: tokio::sync::watch::Sender<bool>,
    /// The integration service (rules and delivery run behind it).
    pub integration: crate::integration::Integration,
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
        data_dir: &std::path::Path,
        listen: &str,
        clock: Clock,
    ) -> anyhow::Result<Server> {
        // Checked before anything starts: a TLS setting that does not work
        // stops `serve` with what to fix.
        let transport = crate::transport::Transport::from_config(
            &config.transport,
            &config.console,
            config.identity.client_cert_header.as_deref(),
            data_dir,
        )?;
        let metrics = Metrics::default();
        let verifier = key.verifier();
        let sequencer = Sequencer::start_with_clock(
            store.clone(),
            key,
            config.sequencer.clone(),
            metrics.clone(),
            clock.clone(),
        )
        .await?;
        let ca = load_ca(&DataDir::at(data_dir))?;
        let identity = Identity::new(
            store.clone(),
            sequencer.handle(),
            config.identity.clone(),
            metrics.clone(),
            ca,
            clock.clone(),
        )
        .map_err(anyhow::Error::msg)?
        .with_credential_secret(credential_secret(&config.identity, &DataDir::at(data_dir))?);
        let integration = crate::integration::Integration::new(
            store.clone(),
            sequencer.handle(),
            config.integration.clone(),
            metrics.clone(),
            clock,
        );
        let targets = crate::integration::delivery::load_targets(&config.integration, data_dir)?;
        let (stop_workers, stopping) = tokio::sync::watch::channel(false);
        let mut workers = vec![tokio::spawn(crate::integration::rules::run(
            integration.clone(),
            stopping.clone(),
        ))];
        for target in targets {
            workers.push(tokio::spawn(crate::integration::delivery::run(
                integration.clone(),
                target,
                stopping.clone(),
            )));
        }
        workers.push(tokio::spawn(crate::audit::run_schedule(
            store.clone(),
            verifier.clone(),
            sequencer.handle(),
            std::time::Duration::from_secs(config.verify.interval_seconds),
            stopping.clone(),
        )));
        let signer =
            crate::report::sign::ReportSigner::from_dir(&crate::config::DataDir::at(data_dir))?
                .map(Arc::new);
        let reports = crate::report::Reporter::new(
            store.clone(),
            sequencer.handle(),
            signer,
            config.origin.clone(),
        );
        let state = AppState::new(
            store,
            sequencer.handle(),
            metrics,
            verifier,
            identity,
            integration.clone(),
            reports,
        );
        let app = crate::api::router(
            state,
            crate::console::routes(),
            config.max_body_bytes,
            config.integration.max_batch_bytes,
        )
        .layer(tower_http::trace::TraceLayer::new_for_http());
        let listening =
            Listening::start(transport, config, data_dir, listen, app, &stopping).await?;
        workers.extend(listening.reload);
        Ok(Server {
            addr: listening.addr,
            redirect_addr: listening.redirect.as_ref().map(|r| r.addr),
            stop: listening.stop,
            http: listening.http,
            redirect: listening.redirect,
            certificate: listening.certificate,
            sequencer,
            workers,
            stop_workers,
            integration,
        })
    }

    /// The base URL, `http://ADDR`, or `https://ADDR` with TLS on.
    pub fn url(&self) -> String {
        let scheme = if self.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Reads the TLS certificate and key files again now (what SIGHUP
    /// does); returns whether they changed.
    ///
    /// # Errors
    /// TLS is off, or the files are unusable (the certificate in use stays).
    pub fn reload_tls(&self) -> Result<bool, crate::transport::TransportError> {
        self.certificate
            .as_ref()
            .ok_or(crate::transport::TransportError::TlsOff)?
            .reload()
    }

    /// Stops accepting connections, lets requests in flight finish, then
    /// stops the sequencer (which signs a final checkpoint).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut servers = vec![self.http];
        if let Some(redirect) = self.redirect {
            let _ = redirect.stop.send(());
            servers.push(redirect.http);
        }
        for server in servers {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server ended with an error"),
                Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
            }
        }
        // The workers finish the step in hand (an outcome being recorded)
        // and stop; whatever is pending stays in the inbox and outbox.
        let _ = self.stop_workers.send(true);
        for worker in self.workers {
            if tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .is_err()
            {
                tracing::warn!("an integration worker did not stop within 10 s");
            }
        }
        drop(self.integration);
        self.sequencer.shutdown().await;
    }
}

/// The plain-HTTP listener of `http_redirect_listen`.
struct Redirect {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The HTTP side of a [`Server`]: `listen` (plain or TLS, docs/SECURITY.md),
/// the optional redirect listener, and the certificate reload task.
struct Listening {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    redirect: Option<Redirect>,
    certificate: Option<Arc<crate::transport::ServerCertificate>>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

impl Listening {
    async fn start(
        transport: crate::transport::Transport,
        config: &Config,
        data_dir: &Path,
        listen: &str,
        app: axum::Router,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Listening> {
        let app = transport.layer(app);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let redirect = match &config.transport.http_redirect_listen {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at.as_str())
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot listen on {at} (http_redirect_listen): {e}")
                    })?;
                let redirect_addr = listener.local_addr()?;
                let plain = crate::transport::Transport::from_config(
                    &crate::config::TransportConfig::default(),
                    &config.console,
                    None,
                    data_dir,
                )?;
                let app = plain.layer(crate::transport::redirect_router(addr.port()));
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let http = tokio::spawn(plain.serve(listener, app, async move {
                    let _ = stopped.await;
                }));
                Some(Redirect {
                    addr: redirect_addr,
                    stop,
                    http,
                })
            }
            None => None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(transport.serve(listener, app, async move {
            let _ = stopped.await;
        }));
        let reload = transport.reload_task(stopping.clone()).map(tokio::spawn);
        Ok(Listening {
            addr,
            stop,
            http,
            redirect,
            certificate: transport.certificate(),
            reload,
        })
    }
}
