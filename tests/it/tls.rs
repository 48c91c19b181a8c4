//! Transport security (docs/SECURITY.md, issue 17): native TLS with
//! certificates made here with rcgen, mutual TLS for service principals
//! (a token pinned to a certificate; a wrong CA and an expired certificate
//! refused in the handshake), certificate reload, security headers, HSTS,
//! `Secure` cookies, and forwarded headers believed only from trusted
//! proxies. The client is tokio-rustls + hyper, so every assertion is about
//! what crossed a real socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose};
use rcgen::{IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use trailmark::config::Config;
use trailmark::identity::service::TokenScopes;

use crate::harness::{TestLedger, record};

/// A CA made for the test: its certificate (PEM) and what signs with it.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM, and the certificate's DER.
struct Leaf {
    pem: String,
    key_pem: String,
    der: Vec<u8>,
}

enum Validity {
    Current,
    Expired,
}

fn ca(name: &str) -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    TestCa {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `localhost` and 127.0.0.1.
fn server_leaf(ca: &TestCa, name: &str) -> Leaf {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(params, ca)
}

/// A service principal's client certificate.
fn client_leaf(ca: &TestCa, name: &str, validity: Validity) -> Leaf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Validity::Expired = validity {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    }
    sign(params, ca)
}

fn sign(params: CertificateParams, ca: &TestCa) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Writes `content` to `path` by rename, so a reload never sees half a
/// file; keys owner-only.
fn write(path: &Path, content: &str, secret: bool) {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).unwrap();
    file.write_all(content.as_bytes()).unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Puts `leaf` where `config` says the server certificate is.
fn install(ledger: &TestLedger, leaf: &Leaf) {
    write(&ledger.dir.path().join("tls.pem"), &leaf.pem, false);
    write(&ledger.dir.path().join("tls.key"), &leaf.key_pem, true);
}

/// TLS on with `leaf`; client certificates from `client_ca` if given.
fn tls_config(ledger: &TestLedger, leaf: &Leaf, client_ca: Option<&TestCa>) -> Config {
    install(ledger, leaf);
    let mut config = ledger.config();
    config.transport.tls_cert = Some(ledger.dir.path().join("tls.pem"));
    config.transport.tls_key = Some(ledger.dir.path().join("tls.key"));
    if let Some(ca) = client_ca {
        write(&ledger.dir.path().join("client-ca.pem"), &ca.pem, false);
        // Relative paths are read from the data directory.
        config.transport.tls_client_ca = Some("../client-ca.pem".into());
    }
    config
}

/// A client that trusts `ca` and presents `identity`, if given.
fn client(ca: &TestCa, identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(trailmark::transport::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    // A resumed session reports the certificate of the session it resumes;
    // every connection here is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// One request over a raw TLS connection, `Connection: close`: the
/// status line and headers, or why the connection failed (with TLS 1.3 a
/// client learns that the server refused its certificate on its first
/// read, from the alert).
async fn raw_get(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<String, String> {
    let mut stream = connect(addr, tls).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut text = Vec::new();
    stream
        .read_to_end(&mut text)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// What came back over TLS.
struct Reply {
    status: u16,
    headers: axum::http::HeaderMap,
    body: String,
    /// The certificate the server presented (DER).
    served: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn call(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Reply, String> {
    let stream = connect(addr, tls).await?;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("http: {e}"))?;
    let connection = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map(Value::to_string).unwrap_or_default())
        .unwrap();
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            let cause = connection.await.map(|r| r.err().map(|e| format!("{e:?}")));
            return Err(format!("request: {e:?}; connection: {cause:?}"));
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        served,
    })
}

/// Waits (up to 10 s) until the server presents `leaf`.
async fn until_served(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, leaf: &Leaf) {
    for _ in 0..200 {
        let r = call(addr, tls, "GET", "/healthz", &[], None).await.unwrap();
        if r.served == leaf.der {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the new certificate was not served within 10 s");
}

#[tokio::test]
async fn tls_serves_the_api_refuses_plain_http_and_sends_hsts_security_headers_and_secure_cookies()
{
    let ledger = TestLedger::new().await;
    let server_ca = ca("Test server CA");
    let leaf = server_leaf(&server_ca, "trailmark one");
    let mut config = tls_config(&ledger, &leaf, None);
    config.transport.http_redirect_listen = Some("127.0.0.1:0".into());
    let server = ledger.start_with(&config).await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let tls = client(&server_ca, None);

    let (admin, body) = (ledger.admin_token.clone(), record(1));
    let auth = format!("Bearer {admin}");
    let r = call(
        server.addr,
        &tls,
        "POST",
        "/v1/entries",
        &[("authorization", &auth)],
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "an append over TLS: {}", r.body);
    assert_eq!(r.served, leaf.der);
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(r.header(name), value, "{name} on an API response");
    }
    let r = call(server.addr, &tls, "GET", "/console/login", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie");
    assert!(
        cookie.starts_with("tm_login_csrf=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    assert!(
        r.header("content-security-policy")
            .contains("frame-ancestors 'none'")
    );

    // Plain HTTP on the TLS port gets no HTTP answer at all.
    let plain = reqwest::get(format!("http://{}/healthz", server.addr)).await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the server's CA stops.
    let stranger = client(&ca("Some other CA"), None);
    let e = call(server.addr, &stranger, "GET", "/healthz", &[], None)
        .await
        .err()
        .unwrap();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // The redirect listener sends browsers to https:// on the TLS port.
    let redirect = server.redirect_addr.expect("http_redirect_listen is set");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{redirect}/console/trail?kind=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!(
            "https://127.0.0.1:{}/console/trail?kind=a",
            server.addr.port()
        )
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn mutual_tls_pins_a_token_to_its_client_certificate_and_refuses_a_wrong_ca_or_an_expired_one()
 {
    let ledger = TestLedger::new().await;
    let (server_ca, client_ca, rogue_ca) = (ca("Server CA"), ca("Client CA"), ca("Rogue CA"));
    let lms = client_leaf(&client_ca, "lms.example.com", Validity::Current);
    let qms = client_leaf(&client_ca, "qms.example.com", Validity::Current);
    let expired = client_leaf(&client_ca, "lms.example.com", Validity::Expired);
    let rogue = client_leaf(&rogue_ca, "lms.example.com", Validity::Current);
    let pem = lms.pem.clone();
    let (issued, _) = ledger
        .opened
        .with_identity(|identity| async move {
            let reason = "LMS connector over mutual TLS";
            let scopes = TokenScopes::default();
            let actor = trailmark::instance::cli_actor();
            identity
                .issue_token(&actor, "lms", scopes, None, Some(&pem), reason)
                .await
        })
        .await
        .unwrap();
    let mut config = tls_config(&ledger, &server_leaf(&server_ca, "one"), Some(&client_ca));
    // The header path exists but this peer is not a trusted proxy.
    config.identity.client_cert_header = Some("x-client-cert".into());
    config.transport.trusted_proxies = vec!["192.0.2.10".into()];
    let server = ledger.start_with(&config).await;
    let auth = format!("Bearer {}", issued.token);
    let append = async |tls: &Arc<rustls::ClientConfig>, headers: &[(&str, &str)]| {
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        call(
            server.addr,
            tls,
            "POST",
            "/v1/entries",
            &all,
            Some(&record(2)),
        )
        .await
    };

    let r = append(&client(&server_ca, Some(&lms)), &[]).await.unwrap();
    assert_eq!(r.status, 201, "the pinned certificate: {}", r.body);
    let r = append(&client(&server_ca, Some(&qms)), &[]).await.unwrap();
    assert_eq!(r.status, 401, "another valid certificate: {}", r.body);
    let r = append(&client(&server_ca, None), &[]).await.unwrap();
    assert_eq!(r.status, 401, "no certificate: {}", r.body);
    assert!(
        r.body.contains("pinned to a client certificate"),
        "{}",
        r.body
    );
    let forwarded = lms
        .pem
        .replace('\n', "%0A")
        .replace(' ', "%20")
        .replace('+', "%2B");
    let r = append(&client(&server_ca, None), &[("x-client-cert", &forwarded)])
        .await
        .unwrap();
    assert_eq!(
        r.status, 401,
        "the header from an untrusted peer: {}",
        r.body
    );
    // People with browsers connect without a certificate.
    let r = call(
        server.addr,
        &client(&server_ca, None),
        "GET",
        "/healthz",
        &[],
        None,
    )
    .await;
    assert_eq!(r.unwrap().status, 200);

    // Refused in the handshake, before any HTTP.
    let e = raw_get(server.addr, &client(&server_ca, Some(&rogue)))
        .await
        .err()
        .unwrap();
    assert!(e.contains("UnknownCA"), "a certificate of another CA: {e}");
    let e = raw_get(server.addr, &client(&server_ca, Some(&expired)))
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("CertificateExpired"),
        "an expired certificate: {e}"
    );
    let ok = raw_get(server.addr, &client(&server_ca, Some(&lms)))
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    server.stop().await;
    ledger.finish().await;
}

#[tokio::test]
async fn the_certificate_reloads_on_sighup_and_on_file_change_and_a_broken_one_keeps_the_old() {
    let ledger = TestLedger::new().await;
    let server_ca = ca("Server CA");
    let (one, two, three) = (
        server_leaf(&server_ca, "one"),
        server_leaf(&server_ca, "two"),
        server_leaf(&server_ca, "three"),
    );
    let tls = client(&server_ca, None);
    let mut config = tls_config(&ledger, &one, None);
    config.transport.tls_reload_interval_seconds = 0;
    let server = ledger.start_with(&config).await;
    let served = |r: Reply| r.served;
    let get = async || {
        call(server.addr, &tls, "GET", "/healthz", &[], None)
            .await
            .unwrap()
    };
    assert_eq!(served(get().await), one.der);

    write(
        &ledger.dir.path().join("tls.pem"),
        "not a certificate\n",
        false,
    );
    let e = server.reload_tls().unwrap_err().to_string();
    assert!(
        e.contains("tls_cert") && e.contains("no certificate in the PEM file"),
        "{e}"
    );
    assert_eq!(
        served(get().await),
        one.der,
        "a failed reload keeps the old one"
    );
    write(&ledger.dir.path().join("tls.pem"), &two.pem, false);
    let e = server.reload_tls().unwrap_err().to_string();
    assert!(
        e.contains("does not fit the certificate"),
        "two with one's key: {e}"
    );
    assert_eq!(served(get().await), one.der);

    install(&ledger, &two);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    until_served(server.addr, &tls, &two).await;
    server.stop().await;

    // With the interval on, a changed file is picked up without a signal.
    config.transport.tls_reload_interval_seconds = 1;
    let server = ledger.start_with(&config).await;
    let r = call(server.addr, &tls, "GET", "/healthz", &[], None)
        .await
        .unwrap();
    assert_eq!(r.served, two.der);
    install(&ledger, &three);
    until_served(server.addr, &tls, &three).await;
    server.stop().await;
    ledger.finish().await;
}

/// Cookies and HSTS of a plain-HTTP server for a request claiming
/// `X-Forwarded-Proto: https`.
async fn forwarded_login(ledger: &TestLedger, config: &Config) -> (String, Option<String>) {
    let server = ledger.start_with(config).await;
    let r = reqwest::Client::new()
        .get(format!("{}/console/login", server.url()))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let hsts = r
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned());
    server.stop().await;
    (cookie, hsts)
}

#[tokio::test]
async fn forwarded_https_counts_only_from_trusted_proxies_and_secure_cookies_can_be_forced() {
    let ledger = TestLedger::new().await;
    let mut config = ledger.config();
    let (cookie, hsts) = forwarded_login(&ledger, &config).await;
    assert!(
        !cookie.contains("Secure"),
        "an untrusted peer's header: {cookie}"
    );
    assert_eq!(hsts, None);

    config.transport.trusted_proxies = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
    let (cookie, hsts) = forwarded_login(&ledger, &config).await;
    assert!(
        cookie.ends_with("; Secure"),
        "a trusted proxy's header: {cookie}"
    );
    assert_eq!(hsts.as_deref(), Some("max-age=31536000"));

    config.transport.trusted_proxies = Vec::new();
    config.console.secure_cookies = true;
    let (cookie, hsts) = forwarded_login(&ledger, &config).await;
    assert!(
        cookie.ends_with("; Secure"),
        "console.secure_cookies: {cookie}"
    );
    assert_eq!(hsts, None, "no HSTS over plain HTTP");

    // `serve` reads both settings from trailmark.toml.
    let text = "origin = \"trailmark.test/it\"\n[transport]\ntls_cert = \"tls.pem\"\ntls_key = \"tls.key\"\ntrusted_proxies = [\"10.0.0.5\"]\n[console]\nsecure_cookies = true\n";
    let parsed: Config = toml::from_str(text).unwrap();
    assert!(parsed.console.secure_cookies);
    assert_eq!(parsed.transport.tls_reload_interval_seconds, 5);
    ledger.finish().await;
}
