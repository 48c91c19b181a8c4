//! A simulated external system (a QMS or LMS webhook receiver) served over
//! real HTTP on 127.0.0.1, with delivery faults to inject on demand.
//!
//! The demo and the integration tests point Trailmark's delivery at
//! [`Receiver::url`], then break the receiver with [`Receiver::set_fault`],
//! [`Receiver::fail_next`] or [`Receiver::stop`] and check what arrived with
//! [`Receiver::messages`] and [`Receiver::stats`].
//!
//! ```no_run
//! # use trailmark::{sim::{Fault, Receiver}, integration::webhook::Secret};
//! # async fn demo() -> std::io::Result<()> {
//! let secret = Secret::generate();
//! let lms = Receiver::start("lms", secret.clone()).await?;
//! lms.fail_next(2, 503); // the first two attempts fail, the third lands
//! // ... deliver to lms.url() ...
//! assert!(lms.wait_for(1, std::time::Duration::from_secs(10)).await);
//! lms.stop().await; // "target down": connections are refused
//! lms.resume().await?; // back on the same port
//! # Ok(()) }
//! ```
//!
//! What a request to `POST /hooks` gets, in order:
//! 1. a pending [`Receiver::fail_next`] status, else the standing [`Fault`];
//! 2. `401` when the Standard Webhooks signature (tolerance
//!    [`TOLERANCE_SECS`]) does not verify;
//! 3. `400` when the body is not JSON;
//! 4. `200` when the `webhook-id` was accepted before (a duplicate), else
//!    `204` and the message is stored.
//!
//! Known gap: the store is not bounded; the receiver is meant for tests and
//! demos, not for long runs.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::integration::webhook;

/// Path that takes deliveries.
pub const PATH: &str = "/hooks";
/// Allowed clock difference for `webhook-timestamp`, in seconds.
pub const TOLERANCE_SECS: i64 = 300;
/// Largest request body accepted, in bytes; larger ones get `413`.
pub const BODY_MAX_BYTES: usize = 1024 * 1024;
/// How long [`Fault::Hang`] holds a request when nothing stops it.
pub const HANG: Duration = Duration::from_secs(3600);
/// How long [`Receiver::stop`] waits for open connections to close before
/// abandoning them.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Header read into [`Received::idempotency_key`].
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header read into [`Received::correlation_id`].
pub const CORRELATION_ID: &str = "x-correlation-id";
const LISTEN_BACKLOG: u32 = 128;

/// What the receiver does with the requests that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave: verify the signature, deduplicate, answer `204` (`200` for a
    /// duplicate).
    #[default]
    None,
    /// Answer this status and record nothing.
    Status(u16),
    /// Wait this long, then behave as [`Fault::None`].
    Slow(Duration),
    /// Never answer (hold the request for [`HANG`]), so that the sender's
    /// timeout has to fire.
    Hang,
}

/// Counters since the receiver started; each request counts in `requests`
/// and in at most one other counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests to `POST /hooks`, whatever became of them.
    pub requests: u64,
    /// Messages accepted and stored: unique `webhook-id`s.
    pub accepted: u64,
    /// Requests with a `webhook-id` accepted before.
    pub duplicates: u64,
    /// Requests refused with `401`: missing or wrong signature headers, stale
    /// timestamp, no matching signature.
    pub bad_signatures: u64,
    /// Requests that met a fault: a [`Receiver::fail_next`] status,
    /// [`Fault::Status`], [`Fault::Hang`], or [`Fault::Slow`] (which then
    /// also counts in one of the others).
    pub faults: u64,
    /// Correctly signed requests whose body is not JSON, refused with `400`.
    pub malformed: u64,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `webhook-id` header.
    pub id: String,
    /// The `idempotency-key` header, when sent.
    pub idempotency_key: Option<String>,
    /// The `x-correlation-id` header, when sent.
    pub correlation_id: Option<String>,
    /// The `type` field of the JSON body, when it is a string.
    pub message_type: Option<String>,
    /// The body.
    pub body: serde_json::Value,
    /// When the receiver accepted it.
    pub received_at: SystemTime,
}

/// Called once for each newly accepted message (not for duplicates).
///
/// It runs inside the request, before the answer is sent, so it must not
/// block: spawn a task for anything slow, such as sending a message back.
pub type Hook = Arc<dyn Fn(&Received) + Send + Sync>;

/// A running (or stopped) simulated receiver. Clones share the same server.
///
/// Dropping the last clone shuts the server down.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

/// Owned by the handles; the server task does not hold it, so that dropping
/// the last handle drops it and so stops the server.
struct Inner {
    shared: Arc<Shared>,
    address: SocketAddr,
    /// The server task while listening; `None` while stopped. The async lock
    /// keeps `stop` and `resume` from interleaving.
    server: tokio::sync::Mutex<Option<Server>>,
}

struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// State the request handlers use.
struct Shared {
    name: String,
    secret: webhook::Secret,
    /// The standing fault and pending `fail_next` answers, under one lock so
    /// that each request takes exactly one decision.
    plan: Mutex<Plan>,
    counters: Counters,
    /// Accepted ids and messages, under one lock: the duplicate check and the
    /// insert are one step.
    store: Mutex<Store>,
    /// Number of accepted messages, for `wait_for`.
    accepted_tx: watch::Sender<usize>,
    /// Bumped by `stop` to release requests held by `Slow` and `Hang`.
    stop_tx: watch::Sender<u64>,
    hook: Mutex<Option<Hook>>,
}

#[derive(Default)]
struct Plan {
    standing: Fault,
    fail_count: usize,
    fail_status: u16,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    bad_signatures: AtomicU64,
    faults: AtomicU64,
    malformed: AtomicU64,
}

#[derive(Default)]
struct Store {
    ids: HashSet<String>,
    messages: Vec<Received>,
}

/// A poisoned lock only means a hook panicked; the data is still consistent
/// because every critical section is a single step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn assert_status(status: u16) {
    assert!(
        (200..=599).contains(&status),
        "a simulated answer must be a final HTTP status (200 to 599), not {status}"
    );
}

/// Bind with `SO_REUSEADDR`, so that `resume` can take the port back at once
/// although connections to it may still be in `TIME_WAIT`.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

fn serve(shared: Arc<Shared>, listener: TcpListener) -> Server {
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let app = Router::new()
        .route(PATH, post(deliver))
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .with_state(Arc::clone(&shared));
    let task = tokio::spawn(async move {
        // A dropped sender also means "shut down".
        let signal = async {
            let _ = shutdown_rx.await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!(receiver = %shared.name, %error, "simulated receiver failed");
        }
    });
    Server { shutdown, task }
}

/// Ask the server to stop taking connections, release held requests, and
/// wait (at most [`STOP_GRACE`]) for open connections to close.
async fn shut_down(shared: &Shared, server: Server) {
    let Server { shutdown, mut task } = server;
    let _ = shutdown.send(());
    shared.stop_tx.send_modify(|generation| *generation += 1);
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        // Known gap: connections still open now stay open until their
        // clients close them; only the listener is certainly gone.
        tracing::warn!(receiver = %shared.name, "connections still open after the grace period");
        task.abort();
    }
}

impl Receiver {
    /// Start a receiver named `name` (used in logs) that checks signatures
    /// with `secret`, listening on 127.0.0.1 at a port the system chooses.
    ///
    /// # Errors
    ///
    /// When the socket cannot be opened or bound.
    pub async fn start(name: &str, secret: webhook::Secret) -> io::Result<Receiver> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            secret,
            plan: Mutex::new(Plan::default()),
            counters: Counters::default(),
            store: Mutex::new(Store::default()),
            accepted_tx: watch::Sender::new(0),
            stop_tx: watch::Sender::new(0),
            hook: Mutex::new(None),
        });
        let server = serve(Arc::clone(&shared), listener);
        tracing::info!(receiver = %name, %address, "simulated receiver listening");
        Ok(Receiver {
            inner: Arc::new(Inner {
                shared,
                address,
                server: tokio::sync::Mutex::new(Some(server)),
            }),
        })
    }

    /// The name given to [`Receiver::start`].
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The listening address; the port stays the same across
    /// [`Receiver::stop`] and [`Receiver::resume`].
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    /// Where to POST deliveries, such as `http://127.0.0.1:41234/hooks`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.inner.address)
    }

    /// Apply `fault` to every following request (after any pending
    /// [`Receiver::fail_next`] answers). [`Fault::None`] heals the receiver.
    ///
    /// # Panics
    ///
    /// For [`Fault::Status`] outside 200 to 599: a mistake in the caller.
    pub fn set_fault(&self, fault: Fault) {
        if let Fault::Status(status) = fault {
            assert_status(status);
        }
        lock(&self.inner.shared.plan).standing = fault;
    }

    /// Answer the next `count` requests with `status`, then go back to the
    /// standing fault. Replaces any earlier `fail_next` still pending.
    ///
    /// # Panics
    ///
    /// For a `status` outside 200 to 599: a mistake in the caller.
    pub fn fail_next(&self, count: usize, status: u16) {
        assert_status(status);
        let mut plan = lock(&self.inner.shared.plan);
        plan.fail_count = count;
        plan.fail_status = status;
    }

    /// Run `hook` for each newly accepted message from now on, replacing any
    /// earlier one. See [`Hook`].
    pub fn set_hook(&self, hook: Hook) {
        *lock(&self.inner.shared.hook) = Some(hook);
    }

    /// Take the target down: close the listener, so that new connections
    /// are refused, and close open connections. Requests held by
    /// [`Fault::Slow`] or [`Fault::Hang`] are answered `503`. Returns when
    /// the server is gone, or after [`STOP_GRACE`] at most. Stopping a
    /// stopped receiver does nothing.
    pub async fn stop(&self) {
        let mut server = self.inner.server.lock().await;
        if let Some(running) = server.take() {
            shut_down(&self.inner.shared, running).await;
            tracing::info!(receiver = %self.inner.shared.name, "simulated receiver stopped");
        }
    }

    /// Listen again on the same address after [`Receiver::stop`]. Messages,
    /// counters, fault and hook are kept. Resuming a running receiver does
    /// nothing.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound again, for example because another
    /// program took it meanwhile.
    pub async fn resume(&self) -> io::Result<()> {
        let mut server = self.inner.server.lock().await;
        if server.is_none() {
            let listener = bind(self.inner.address)?;
            *server = Some(serve(Arc::clone(&self.inner.shared), listener));
            tracing::info!(receiver = %self.inner.shared.name, "simulated receiver resumed");
        }
        Ok(())
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let counters = &self.inner.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: read(&counters.requests),
            accepted: read(&counters.accepted),
            duplicates: read(&counters.duplicates),
            bad_signatures: read(&counters.bad_signatures),
            faults: read(&counters.faults),
            malformed: read(&counters.malformed),
        }
    }

    /// The accepted messages, each once, in the order they arrived.
    #[must_use]
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.inner.shared.store).messages.clone()
    }

    /// Wait until at least `unique` messages have been accepted; `false` if
    /// `timeout` passes first.
    pub async fn wait_for(&self, unique: usize, timeout: Duration) -> bool {
        let mut accepted = self.inner.shared.accepted_tx.subscribe();
        let reached = accepted.wait_for(|count| *count >= unique);
        matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_)))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: shut the server down without waiting.
        if let Some(Server { shutdown, task }) = self.server.get_mut().take() {
            let _ = shutdown.send(());
            self.shared
                .stop_tx
                .send_modify(|generation| *generation += 1);
            drop(task);
        }
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.inner.shared.name)
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

/// What one request meets before the normal path.
enum Decision {
    Answer(u16),
    Delay(Duration),
    Proceed,
}

impl Shared {
    fn decide(&self) -> Decision {
        let mut plan = lock(&self.plan);
        if plan.fail_count > 0 {
            plan.fail_count -= 1;
            return Decision::Answer(plan.fail_status);
        }
        match plan.standing {
            Fault::None => Decision::Proceed,
            Fault::Status(status) => Decision::Answer(status),
            Fault::Slow(delay) => Decision::Delay(delay),
            Fault::Hang => Decision::Delay(HANG),
        }
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }
}

fn status(code: u16) -> StatusCode {
    // Codes are checked when the fault is set.
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn deliver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Subscribed before anything waits, so a `stop` from now on is seen.
    let mut stopped = shared.stop_tx.subscribe();
    shared.count(|c| &c.requests);

    match shared.decide() {
        Decision::Answer(code) => {
            shared.count(|c| &c.faults);
            return status(code);
        }
        Decision::Delay(delay) => {
            shared.count(|c| &c.faults);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stopped.changed() => return StatusCode::SERVICE_UNAVAILABLE,
            }
        }
        Decision::Proceed => {}
    }

    let id = match webhook::verify(&shared.secret, &headers, &body, now_unix(), TOLERANCE_SECS) {
        Ok(id) => id,
        Err(error) => {
            shared.count(|c| &c.bad_signatures);
            tracing::debug!(receiver = %shared.name, %error, "refused a delivery");
            return StatusCode::UNAUTHORIZED;
        }
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        shared.count(|c| &c.malformed);
        return StatusCode::BAD_REQUEST;
    };

    let received = {
        let mut store = lock(&shared.store);
        if store.ids.contains(&id) {
            shared.count(|c| &c.duplicates);
            return StatusCode::OK;
        }
        let received = Received {
            idempotency_key: header_text(&headers, IDEMPOTENCY_KEY),
            correlation_id: header_text(&headers, CORRELATION_ID),
            message_type: json
                .get("type")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            body: json,
            received_at: SystemTime::now(),
            id: id.clone(),
        };
        store.ids.insert(id);
        store.messages.push(received.clone());
        shared.count(|c| &c.accepted);
        shared.accepted_tx.send_replace(store.messages.len());
        received
    };

    // Outside the store lock: the hook may read the receiver.
    let hook = lock(&shared.hook).clone();
    if let Some(hook) = hook {
        hook(&received);
    }
    StatusCode::NO_CONTENT
}

/// Seconds since the Unix epoch, by the system clock.
fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A simulated credential channel (the site's mail or identity system):
/// keeps every one-time password Trailmark sends it, so the demo, the OQ
/// and the tests can hand each to its person (docs/SIGNATURES.md §4.2).
pub struct Mailbox {
    url: String,
    refused: Arc<AtomicU64>,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
    task: JoinHandle<()>,
}

impl Mailbox {
    /// Starts it on a port of 127.0.0.1 the system chooses; it takes only
    /// messages signed with `secret` (Standard Webhooks).
    ///
    /// # Errors
    /// If no port can be bound.
    pub async fn start(secret: webhook::Secret) -> io::Result<Mailbox> {
        let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let refused: Arc<AtomicU64> = Arc::default();
        let (kept, refusals) = (Arc::clone(&got), Arc::clone(&refused));
        let app = Router::new().route(
            "/credentials",
            post(move |headers: HeaderMap, body: Bytes| {
                let (kept, refusals, secret) =
                    (Arc::clone(&kept), Arc::clone(&refusals), secret.clone());
                async move {
                    if webhook::verify(&secret, &headers, &body, now_unix(), TOLERANCE_SECS)
                        .is_err()
                    {
                        refusals.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::UNAUTHORIZED;
                    }
                    match serde_json::from_slice(&body) {
                        Ok(v) => {
                            kept.lock().unwrap_or_else(PoisonError::into_inner).push(v);
                            StatusCode::NO_CONTENT
                        }
                        Err(_) => StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/credentials", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Mailbox {
            url,
            refused,
            got,
            task,
        })
    }

    /// How many messages were refused for a missing or wrong signature.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Where Trailmark sends (`identity.credential_webhook_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The newest one-time password sent for `user_id`.
    pub fn password_for(&self, user_id: &str) -> Option<String> {
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|m| m["user_id"] == user_id)
            .and_then(|m| m["one_time_password"].as_str().map(str::to_owned))
    }

    /// The newest one-time password of each user it got, by user ID.
    pub fn latest(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for m in self
            .got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if let (Some(u), Some(p)) = (m["user_id"].as_str(), m["one_time_password"].as_str()) {
                out.retain(|(id, _)| id != u);
                out.push((u.to_owned(), p.to_owned()));
            }
        }
        out
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn now() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A delivery as Trailmark sends it: signed with `secret` at `timestamp`.
    fn delivery(
        client: &reqwest::Client,
        receiver: &Receiver,
        secret: &webhook::Secret,
        id: &str,
        timestamp: i64,
        body: &str,
    ) -> reqwest::RequestBuilder {
        client
            .post(receiver.url())
            .header("content-type", "application/json")
            .header(webhook::ID, id)
            .header(webhook::TIMESTAMP, timestamp.to_string())
            .header(
                webhook::SIGNATURE,
                webhook::signature(secret, id, timestamp, body.as_bytes()),
            )
            .body(body.to_owned())
    }

    async fn send(
        client: &reqwest::Client,
        receiver: &Receiver,
        secret: &webhook::Secret,
        id: &str,
    ) -> u16 {
        let body = format!(r#"{{"type":"training.assigned","data":{{"id":"{id}"}}}}"#);
        delivery(client, receiver, secret, id, now(), &body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn started() -> (Receiver, webhook::Secret) {
        let secret = webhook::Secret::generate();
        let receiver = Receiver::start("test", secret.clone()).await.unwrap();
        (receiver, secret)
    }

    #[tokio::test]
    async fn a_signed_message_is_accepted_and_stored_with_its_headers() {
        let (receiver, secret) = started().await;
        let response = delivery(
            &client(),
            &receiver,
            &secret,
            "msg_1",
            now(),
            r#"{"type":"qms.capa.closed","n":1}"#,
        )
        .header(IDEMPOTENCY_KEY, "key-1")
        .header(CORRELATION_ID, "corr-1")
        .send()
        .await
        .unwrap();
        assert_eq!(response.status().as_u16(), 204);

        let messages = receiver.messages();
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert_eq!(message.id, "msg_1");
        assert_eq!(message.idempotency_key.as_deref(), Some("key-1"));
        assert_eq!(message.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(message.message_type.as_deref(), Some("qms.capa.closed"));
        assert_eq!(message.body["n"], 1);
        assert_eq!(
            receiver.stats(),
            Stats {
                requests: 1,
                accepted: 1,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn a_repeated_id_answers_200_and_is_stored_once() {
        let (receiver, secret) = started().await;
        let client = client();
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 204);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 200);
        assert_eq!(send(&client, &receiver, &secret, "msg_2").await, 204);
        let ids: Vec<_> = receiver.messages().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["msg_1", "msg_2"]);
        assert_eq!(
            receiver.stats(),
            Stats {
                requests: 3,
                accepted: 2,
                duplicates: 1,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn bad_signatures_answer_401_and_store_nothing() {
        let (receiver, secret) = started().await;
        let client = client();
        let other = webhook::Secret::generate();
        let body = r#"{"type":"x"}"#;

        let wrong_secret = delivery(&client, &receiver, &other, "msg_1", now(), body);
        let stale = delivery(&client, &receiver, &secret, "msg_2", now() - 301, body);
        let unsigned = client.post(receiver.url()).body(body);
        let tampered =
            delivery(&client, &receiver, &secret, "msg_3", now(), body).body(r#"{"type":"y"}"#);
        for request in [wrong_secret, stale, unsigned, tampered] {
            assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
        }
        assert!(receiver.messages().is_empty());
        assert_eq!(
            receiver.stats(),
            Stats {
                requests: 4,
                bad_signatures: 4,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn a_signed_body_that_is_not_json_answers_400() {
        let (receiver, secret) = started().await;
        let status = delivery(&client(), &receiver, &secret, "msg_1", now(), "not json")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 400);
        assert_eq!(receiver.stats().malformed, 1);
        assert!(receiver.messages().is_empty());
    }

    #[tokio::test]
    async fn a_status_fault_answers_that_status_until_healed() {
        let (receiver, secret) = started().await;
        let client = client();
        receiver.set_fault(Fault::Status(500));
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 500);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 500);
        assert!(receiver.messages().is_empty());

        receiver.set_fault(Fault::None);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 204);
        assert_eq!(
            receiver.stats(),
            Stats {
                requests: 3,
                accepted: 1,
                faults: 2,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn fail_next_fails_that_many_then_returns_to_the_standing_fault() {
        let (receiver, secret) = started().await;
        let client = client();
        receiver.fail_next(2, 503);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 503);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 503);
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 204);

        receiver.set_fault(Fault::Status(500));
        receiver.fail_next(1, 429);
        assert_eq!(send(&client, &receiver, &secret, "msg_2").await, 429);
        assert_eq!(send(&client, &receiver, &secret, "msg_2").await, 500);
        assert_eq!(receiver.stats().faults, 4);
        assert_eq!(receiver.messages().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_receiver_answers_late_but_accepts() {
        let (receiver, secret) = started().await;
        receiver.set_fault(Fault::Slow(Duration::from_millis(300)));
        let started_at = Instant::now();
        assert_eq!(send(&client(), &receiver, &secret, "msg_1").await, 204);
        assert!(started_at.elapsed() >= Duration::from_millis(300));
        assert_eq!(receiver.messages().len(), 1);
        assert_eq!(receiver.stats().faults, 1);
    }

    #[tokio::test]
    async fn a_hanging_receiver_makes_the_sender_time_out() {
        let (receiver, secret) = started().await;
        receiver.set_fault(Fault::Hang);
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let started_at = Instant::now();
        let error = delivery(&impatient, &receiver, &secret, "msg_1", now(), "{}")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert!(started_at.elapsed() < Duration::from_secs(5));
        assert!(receiver.messages().is_empty());

        // A hung request does not hold up stopping.
        let stopping = Instant::now();
        receiver.stop().await;
        assert!(stopping.elapsed() < STOP_GRACE);
    }

    #[tokio::test]
    async fn a_stopped_receiver_refuses_connections_and_resumes_on_the_same_port() {
        let (receiver, secret) = started().await;
        let client = client(); // one client throughout: its pooled connection must not survive stop
        let url = receiver.url();
        assert_eq!(send(&client, &receiver, &secret, "msg_1").await, 204);

        receiver.stop().await;
        receiver.stop().await; // twice is harmless
        let started_at = Instant::now();
        let error = delivery(&client, &receiver, &secret, "msg_2", now(), "{}")
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert!(
            started_at.elapsed() < Duration::from_secs(2),
            "refused fast"
        );
        assert!(
            tokio::net::TcpStream::connect(receiver.address())
                .await
                .is_err()
        );

        receiver.resume().await.unwrap();
        receiver.resume().await.unwrap(); // twice is harmless
        assert_eq!(receiver.url(), url);
        assert_eq!(send(&client, &receiver, &secret, "msg_2").await, 204);
        let ids: Vec<_> = receiver.messages().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["msg_1", "msg_2"]);
    }

    #[tokio::test]
    async fn wait_for_returns_once_enough_messages_arrived_or_times_out() {
        let (receiver, secret) = started().await;
        assert!(receiver.wait_for(0, Duration::ZERO).await);
        assert!(!receiver.wait_for(1, Duration::from_millis(100)).await);

        let sender = {
            let receiver = receiver.clone();
            let secret = secret.clone();
            tokio::spawn(async move {
                let client = client();
                for id in ["msg_1", "msg_1", "msg_2"] {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    send(&client, &receiver, &secret, id).await;
                }
            })
        };
        assert!(receiver.wait_for(2, Duration::from_secs(10)).await);
        sender.await.unwrap();
        assert!(!receiver.wait_for(3, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn the_hook_runs_once_per_new_message() {
        let (receiver, secret) = started().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        receiver.set_hook(Arc::new(move |message: &Received| {
            assert_eq!(message.message_type.as_deref(), Some("training.assigned"));
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let client = client();
        for id in ["msg_1", "msg_1", "msg_2"] {
            send(&client, &receiver, &secret, id).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_port() {
        let (receiver, _secret) = started().await;
        let address = receiver.address();
        let clone = receiver.clone();
        drop(receiver);
        assert!(
            tokio::net::TcpStream::connect(address).await.is_ok(),
            "a clone keeps it up"
        );
        drop(clone);
        let deadline = Instant::now() + Duration::from_secs(2);
        while tokio::net::TcpStream::connect(address).await.is_ok() {
            assert!(Instant::now() < deadline, "port still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    #[should_panic(expected = "final HTTP status")]
    fn an_impossible_status_is_a_programming_error() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (receiver, _secret) = runtime.block_on(started());
        receiver.fail_next(1, 42);
    }
}
