//! Transport security (docs/SECURITY.md): native TLS (rustls with the
//! `ring` provider) whose certificate reloads on SIGHUP or file change,
//! client certificates for service principals (mutual TLS), the security
//! headers on every response, and which requests count as HTTPS.
//!
//! The TLS accept loop ([`serve`]) hands each request of a connection to
//! the router with its peer address (`ConnectInfo`) and a [`TlsConnection`]
//! holding the client certificate the handshake verified against
//! `tls_client_ca`. The [`secure`] middleware turns those into a
//! [`RequestTransport`] (`api` reads the client certificate from it) and
//! sets the response headers. A forwarded header (`X-Forwarded-Proto`, the
//! client-certificate header) is believed only from `trusted_proxies`.
//! Nothing here knows about tokens, sessions or the ledger.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::Digest as _;

use crate::config::{ConsoleConfig, TransportConfig};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most TLS connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4_096;
/// `Strict-Transport-Security` on every HTTPS response: one year.
const HSTS: &str = "max-age=31536000";
/// Largest PEM file read (a certificate chain, a key, a CA bundle).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What is wrong with the transport settings or their files.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A file could not be read.
    #[error("{setting} {path}: {source}")]
    Read {
        /// The setting naming the file (`tls_cert`, ...).
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{setting} {path}: {problem}")]
    Pem {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// The key does not fit the certificate (or rustls cannot use it).
    #[error(
        "tls_key {key} does not fit the certificate in tls_cert {cert} ({problem}); give the key the certificate was issued for"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        problem: String,
    },
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("[transport] tls_cert and tls_key go together: set both for TLS, or neither")]
    Incomplete,
    /// A setting that only means something with TLS on.
    #[error("[transport] {0} needs TLS: set tls_cert and tls_key too")]
    NeedsTls(&'static str),
    /// A `trusted_proxies` entry is neither an address nor a network.
    #[error(
        "[transport] trusted_proxies entry `{0}` is neither an IP address nor a network (10.0.0.5, 10.0.0.0/24, fd00::/8)"
    )]
    TrustedProxy(String),
    /// The client-certificate header is configured with no proxy to believe.
    #[error(
        "[identity] client_cert_header is set but [transport] trusted_proxies is empty: list the address of the TLS proxy that sets the header, or remove client_cert_header"
    )]
    HeaderWithoutProxy,
    /// A reload was asked of a server without TLS.
    #[error("TLS is off (no tls_cert): there is no certificate to reload")]
    TlsOff,
    /// rustls refused the set-up.
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An address or network of `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.5`, `10.0.0.0/24`, `::1` or `fd00::/8`.
    ///
    /// # Errors
    /// [`TransportError::TrustedProxy`] naming the entry.
    pub fn parse(text: &str) -> Result<Network, TransportError> {
        let bad = || TransportError::TrustedProxy(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` lies in the network (an IPv4-mapped IPv6 peer counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Put on every request of a TLS connection by the accept loop.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    /// The client's end-entity certificate (DER), verified in the handshake
    /// against `tls_client_ca`; none if the client sent none.
    pub client_certificate: Option<Arc<[u8]>>,
}

/// What the transport establishes about a request, for the handlers.
#[derive(Debug, Clone)]
pub struct RequestTransport {
    /// The request came over Trailmark's TLS, or a trusted proxy says it
    /// reached the proxy over HTTPS.
    pub https: bool,
    /// The TCP peer is in `trusted_proxies`: its forwarded headers count.
    pub from_trusted_proxy: bool,
    /// The client certificate Trailmark's own TLS handshake verified (DER).
    pub client_certificate: Option<Arc<[u8]>>,
}

/// What the [`secure`] middleware needs to know.
#[derive(Debug, Clone)]
pub struct Policy {
    tls: bool,
    secure_cookies: bool,
    trusted_proxies: Arc<[Network]>,
}

impl Policy {
    /// Whether forwarded headers from `ip` are believed.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

/// The middleware in front of everything: marks the request with its
/// [`RequestTransport`], then adds `X-Content-Type-Options`,
/// `Referrer-Policy` and `X-Frame-Options` to every response (unless the
/// handler set them), HSTS to HTTPS responses, and `Secure` to every cookie
/// when TLS is on, the request was HTTPS or `console.secure_cookies` is set.
pub async fn secure(State(policy): State<Policy>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let tls = request.extensions().get::<TlsConnection>().cloned();
    let from_trusted_proxy = peer.is_some_and(|ip| policy.trusts(ip));
    let forwarded_https = from_trusted_proxy && forwarded_https(request.headers());
    let https = tls.is_some() || forwarded_https;
    request.extensions_mut().insert(RequestTransport {
        https,
        from_trusted_proxy,
        client_certificate: tls.and_then(|t| t.client_certificate),
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    if https || policy.tls || policy.secure_cookies {
        secure_cookies(headers);
    }
    response
}

/// `X-Forwarded-Proto: https` (the first, client-facing, value).
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Adds `; Secure` to every `Set-Cookie` that lacks it.
fn secure_cookies(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| {
            let has = value.to_str().is_ok_and(|v| {
                v.split(';')
                    .any(|a| a.trim().eq_ignore_ascii_case("secure"))
            });
            if has {
                return value.clone();
            }
            let mut bytes = value.as_bytes().to_vec();
            bytes.extend_from_slice(b"; Secure");
            HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| value.clone())
        })
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// How `listen` is served: the [`Policy`], and with TLS on the acceptor
/// and the certificate that reloads.
pub struct Transport {
    policy: Policy,
    tls: Option<Tls>,
    reload_interval: Duration,
}

struct Tls {
    certificate: Arc<ServerCertificate>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Transport {
    /// Checks the settings and loads the certificate, key and client CAs
    /// (relative paths from `data_dir`).
    ///
    /// # Errors
    /// A setting without its partner, an unreadable or unusable file, a
    /// bad `trusted_proxies` entry, or `client_cert_header` with no proxy.
    pub fn from_config(
        transport: &TransportConfig,
        console: &ConsoleConfig,
        client_cert_header: Option<&str>,
        data_dir: &Path,
    ) -> Result<Transport, TransportError> {
        let trusted_proxies = transport
            .trusted_proxies
            .iter()
            .map(|t| Network::parse(t))
            .collect::<Result<Arc<[Network]>, _>>()?;
        if client_cert_header.is_some() && trusted_proxies.is_empty() {
            return Err(TransportError::HeaderWithoutProxy);
        }
        let tls = match (&transport.tls_cert, &transport.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(
                &data_dir.join(cert),
                &data_dir.join(key),
                transport.tls_client_ca.as_ref().map(|c| data_dir.join(c)),
            )?),
            (None, None) if transport.tls_client_ca.is_some() => {
                return Err(TransportError::NeedsTls("tls_client_ca"));
            }
            (None, None) if transport.http_redirect_listen.is_some() => {
                return Err(TransportError::NeedsTls("http_redirect_listen"));
            }
            (None, None) => None,
            _ => return Err(TransportError::Incomplete),
        };
        Ok(Transport {
            policy: Policy {
                tls: tls.is_some(),
                secure_cookies: console.secure_cookies,
                trusted_proxies,
            },
            tls,
            reload_interval: Duration::from_secs(transport.tls_reload_interval_seconds),
        })
    }

    /// Whether `listen` speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The server certificate in use, with TLS on.
    pub fn certificate(&self) -> Option<Arc<ServerCertificate>> {
        self.tls.as_ref().map(|t| t.certificate.clone())
    }

    /// `app` behind the [`secure`] middleware.
    pub fn layer(&self, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(
            self.policy.clone(),
            secure,
        ))
    }

    /// Serves `app` on `listener` (TLS or plain) until `stopped` resolves,
    /// then lets the requests in flight finish.
    ///
    /// # Errors
    /// If the plain-HTTP server fails.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        stopped: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
        async move {
            match acceptor {
                Some(acceptor) => {
                    serve_tls(listener, acceptor, app, stopped).await;
                    Ok(())
                }
                None => {
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stopped)
                    .await
                }
            }
        }
    }

    /// With TLS on, the task that reloads the certificate on SIGHUP and,
    /// every `tls_reload_interval_seconds`, when its files changed; it ends
    /// when `stopping` turns true.
    pub fn reload_task(
        &self,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let certificate = self.certificate()?;
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the TLS certificate reloads only on file change");
                None
            }
        };
        let interval = self.reload_interval;
        Some(async move {
            #[cfg(unix)]
            reload_loop(certificate, hangup, interval, stopping).await;
            #[cfg(not(unix))]
            reload_loop(certificate, interval, stopping).await;
        })
    }
}

/// The 308 answer of `http_redirect_listen`: the same host and path on
/// `https://` at `https_port`.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_without_port)
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            });
        let Some(host) = host else {
            return (
                StatusCode::BAD_REQUEST,
                "send a Host header; this address only redirects to https://",
            )
                .into_response();
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = if https_port == 443 {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}:{https_port}{path}")
        };
        (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response()
    })
}

/// `example.com:80` -> `example.com`, `[::1]:80` -> `[::1]`.
fn host_without_port(host: &str) -> &str {
    match host.rfind([':', ']']) {
        Some(i) if host.as_bytes()[i] == b':' => &host[..i],
        _ => host,
    }
}

/// The rustls provider Trailmark uses: *ring*, which x509-parser builds
/// already, rather than aws-lc-rs (a C and assembly build).
///
/// rustls 0.23.48 deprecated it because *ring* has no post-quantum key
/// exchange (X25519MLKEM768); TLS 1.3 here uses X25519 or the NIST curves.
/// A known gap, in docs/SECURITY.md.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    fn load(cert: &Path, key: &Path, client_ca: Option<PathBuf>) -> Result<Tls, TransportError> {
        let provider = crypto_provider();
        let certificate = Arc::new(ServerCertificate::load(cert, key, provider.clone())?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            Some(path) => builder.with_client_cert_verifier(client_verifier(&path, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            certificate,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Client certificates must chain to one of the CAs in `path`, be within
/// their validity and fit for client authentication; a client may also send
/// none (people with browsers), and then a token pinned to a certificate is
/// refused by `api`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TransportError> {
    let pem = read_pem("tls_client_ca", path)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates("tls_client_ca", path, &pem)? {
        roots.add(ca).map_err(|e| TransportError::Pem {
            setting: "tls_client_ca",
            path: path.to_owned(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TransportError::Pem {
            setting: "tls_client_ca",
            path: path.to_owned(),
            problem: e.to_string(),
        })
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    let read = |source| TransportError::Read {
        setting,
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TransportError::Pem {
            setting,
            path: path.to_owned(),
            problem: "larger than 1 MiB; expected a PEM file".into(),
        });
    }
    Ok(bytes)
}

fn certificates(
    setting: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let problem = |problem: String| TransportError::Pem {
        setting,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            "no certificate in the PEM file (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The server's certificate and key, reloadable: handshakes use the one
/// loaded last; a reload that fails leaves it in place.
#[derive(Debug)]
pub struct ServerCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The certificate in use and the SHA-256 of the two files it came
    /// from; the lock is held only to clone or replace the `Arc`.
    current: RwLock<(Arc<CertifiedKey>, [u8; 32])>,
}

impl ServerCertificate {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ServerCertificate, TransportError> {
        let files = read_pair(cert, key)?;
        let certified = certified_key(cert, key, &files, &provider)?;
        Ok(ServerCertificate {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new((certified, files.stamp)),
        })
    }

    /// Reads `tls_cert` and `tls_key` again and, if they changed, serves
    /// the new pair from the next handshake on; returns whether it changed.
    ///
    /// # Errors
    /// An unreadable file, no certificate or key, or a key that does not
    /// fit; the certificate in use stays.
    pub fn reload(&self) -> Result<bool, TransportError> {
        let files = read_pair(&self.cert, &self.key)?;
        let in_use = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        if in_use == files.stamp {
            return Ok(false);
        }
        let certified = certified_key(&self.cert, &self.key, &files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = (certified, files.stamp);
        Ok(true)
    }

    /// SHA-256 (hex) of the end-entity certificate in use, for logs.
    pub fn sha256(&self) -> String {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .0
            .end_entity_cert()
            .map(|c| hex::encode(sha2::Sha256::digest(c.as_ref())))
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .clone(),
        )
    }
}

/// The bytes of `tls_cert` and `tls_key`, and the SHA-256 over both.
struct PemPair {
    cert: Vec<u8>,
    key: Vec<u8>,
    stamp: [u8; 32],
}

fn read_pair(cert: &Path, key: &Path) -> Result<PemPair, TransportError> {
    let cert_pem = read_pem("tls_cert", cert)?;
    let key_pem = read_pem("tls_key", key)?;
    let mut hash = sha2::Sha256::new();
    hash.update((cert_pem.len() as u64).to_be_bytes());
    hash.update(&cert_pem);
    hash.update(&key_pem);
    Ok(PemPair {
        cert: cert_pem,
        key: key_pem,
        stamp: hash.finalize().into(),
    })
}

fn certified_key(
    cert: &Path,
    key: &Path,
    files: &PemPair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TransportError> {
    let chain = certificates("tls_cert", cert, &files.cert)?;
    // The PEM parser's error is not echoed: it could quote key material.
    let private = PrivateKeyDer::from_pem_slice(&files.key).map_err(|_| TransportError::Pem {
        setting: "tls_key",
        path: key.to_owned(),
        problem: "no private key in the PEM file (expected PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| TransportError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            problem: e.to_string(),
        })
}

fn reload_logged(certificate: &ServerCertificate, trigger: &'static str) {
    match certificate.reload() {
        Ok(true) => tracing::info!(
            trigger,
            certificate_sha256 = %certificate.sha256(),
            "TLS certificate reloaded"
        ),
        Ok(false) => {
            if trigger == "SIGHUP" {
                tracing::info!("SIGHUP: the TLS certificate files are unchanged");
            }
        }
        Err(e) => tracing::error!(
            trigger,
            error = %e,
            "TLS certificate reload failed; the certificate in use stays"
        ),
    }
}

async fn reload_loop(
    certificate: Arc<ServerCertificate>,
    #[cfg(unix)] mut hangup: Option<tokio::signal::unix::Signal>,
    interval: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        #[cfg(unix)]
        let signalled = async {
            let received = match hangup.as_mut() {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !received {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let tick = async {
            match &mut ticks {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    return;
                }
            }
            () = signalled => reload_logged(&certificate, "SIGHUP"),
            () = tick => reload_logged(&certificate, "file change"),
        }
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    stopped: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stopped);
    loop {
        let (tcp, peer, permit) = tokio::select! {
            () = &mut stopped => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(acceptor, tcp, peer, app, watcher).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn accept(
    listener: &tokio::net::TcpListener,
    permits: &Arc<tokio::sync::Semaphore>,
) -> (
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
) {
    loop {
        // The semaphore is never closed; were it, accepting would stop.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return std::future::pending().await;
        };
        match listener.accept().await {
            Ok((tcp, peer)) => return (tcp, peer, permit),
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // A plain-HTTP request, an untrusted or expired client
            // certificate, or a client that distrusts ours.
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let connection = TlsConnection {
        client_certificate: stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| Arc::from(c.as_ref())),
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(connection.clone());
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "a TLS connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let net = Network::parse("10.0.0.0/24").unwrap();
        assert!(net.contains("10.0.0.77".parse().unwrap()));
        assert!(!net.contains("10.0.1.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.0.0.5".parse().unwrap()),
            "a mapped IPv4 peer"
        );
        let one = Network::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "proxy.example", "10.0.0.1/", "::/129", ""] {
            assert!(
                matches!(Network::parse(bad), Err(TransportError::TrustedProxy(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused_with_what_to_fix() {
        let dir = Path::new("/nonexistent");
        let console = ConsoleConfig::default();
        let mut t = TransportConfig::default();
        assert!(Transport::from_config(&t, &console, None, dir).is_ok_and(|t| !t.is_tls()));
        let e = Transport::from_config(&t, &console, Some("x-client-cert"), dir)
            .err()
            .unwrap();
        assert!(e.to_string().contains("trusted_proxies is empty"), "{e}");
        t.tls_cert = Some("tls.pem".into());
        let e = Transport::from_config(&t, &console, None, dir)
            .err()
            .unwrap();
        assert!(matches!(e, TransportError::Incomplete), "{e}");
        t.tls_key = Some("tls.key".into());
        let e = Transport::from_config(&t, &console, None, dir)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("tls_cert /nonexistent/tls.pem: "),
            "{e}"
        );
        let mut t = TransportConfig {
            tls_client_ca: Some("ca.pem".into()),
            ..TransportConfig::default()
        };
        let e = Transport::from_config(&t, &console, None, dir)
            .err()
            .unwrap();
        assert!(e.to_string().contains("tls_client_ca needs TLS"), "{e}");
        t.tls_client_ca = None;
        t.trusted_proxies = vec!["a proxy".into()];
        let e = Transport::from_config(&t, &console, None, dir)
            .err()
            .unwrap();
        assert!(e.to_string().contains("`a proxy`"), "{e}");
    }

    #[test]
    fn cookies_get_secure_once() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; HttpOnly"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2; Secure"));
        secure_cookies(&mut headers);
        let all: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(all, ["a=1; HttpOnly; Secure", "b=2; Secure"]);
    }

    #[test]
    fn redirects_keep_the_host_and_drop_its_port() {
        assert_eq!(host_without_port("example.com:80"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
