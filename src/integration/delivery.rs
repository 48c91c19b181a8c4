//! The outbox delivery worker (docs/INTEGRATION.md §4.2): one task per
//! target sends due messages with Standard Webhooks signatures, records each
//! outcome as an entry (the outbox row changes in that entry's transaction),
//! retries with exponential backoff and jitter, dead-letters after
//! `max_attempts`, and keeps a circuit breaker and a rate limit per target.
//!
//! **Invariant:** a message leaves `pending` only with its outcome entry. A
//! crash between the target's answer and that commit sends it again; the
//! receiver dedupes on `webhook-id`.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Integration;
use super::webhook::{self, Secret};
use crate::config::TargetConfig;
use crate::ledger::{Actor, Hash, Subject, Timestamp, kind};
use crate::sequencer::AppendRequest;
use crate::store::{DueMessageRow, outbox_dead_lettered, outbox_delivered, outbox_retry_scheduled};
use crate::telemetry::label;

/// A configured target with its secret.
#[derive(Clone)]
pub struct Target {
    /// Its name (`lms`, `qms`).
    pub name: String,
    /// Its settings.
    pub config: TargetConfig,
    /// Its Standard Webhooks secret.
    pub secret: Secret,
}

/// Circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// Runs one target's worker until `stop` turns true.
pub async fn run(ig: Integration, target: Target, mut stop: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(target.config.timeout_ms))
        .connect_timeout(Duration::from_millis(target.config.timeout_ms.min(2_000)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target = %target.name, error = %e, "cannot build the HTTP client; deliveries to this target stop");
            return;
        }
    };
    let labels = label("target", &target.name);
    let mut breaker = Breaker::Closed { failures: 0 };
    let spacing = if target.config.rate_per_second > 0 {
        Some(Duration::from_secs_f64(
            1.0 / f64::from(target.config.rate_per_second),
        ))
    } else {
        None
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let notified = ig.delivery_notified();
        if let Breaker::Open { until } = breaker {
            if Instant::now() < until {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            breaker = Breaker::HalfOpen;
            ig.metrics().breaker_state.get_or_create(&labels).set(2);
            tracing::info!(target = %target.name, "breaker half-open: sending one probe");
        }
        let limit = if breaker == Breaker::HalfOpen {
            1
        } else {
            target.config.concurrency.max(1) as i64
        };
        let now = Timestamp::now().to_string();
        let due = match ig.store().due_messages(&target.name, &now, limit).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(target = %target.name, error = %e, "reading the outbox failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Ok(backlog) = ig.store().pending_messages_for(&target.name).await {
            ig.metrics()
                .outbox_backlog
                .get_or_create(&labels)
                .set(backlog);
        }
        if due.is_empty() {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let mut sends = JoinSet::new();
        for row in due {
            let client = client.clone();
            let target = target.clone();
            sends.spawn(async move {
                let result = send(&client, &target, &row).await;
                (row, result)
            });
            if let Some(gap) = spacing {
                tokio::time::sleep(gap).await;
            }
        }
        let mut outcomes = JoinSet::new();
        while let Some(joined) = sends.join_next().await {
            let Ok((row, result)) = joined else { continue };
            match &result {
                Ok(_) => breaker = Breaker::Closed { failures: 0 },
                Err(_) => {
                    breaker = match breaker {
                        Breaker::Closed { failures }
                            if failures + 1 < target.config.breaker_failures =>
                        {
                            Breaker::Closed {
                                failures: failures + 1,
                            }
                        }
                        Breaker::Open { until } => Breaker::Open { until },
                        _ => {
                            tracing::warn!(target = %target.name, "breaker open: the target failed {} times in a row", target.config.breaker_failures);
                            Breaker::Open {
                                until: Instant::now()
                                    + Duration::from_millis(target.config.breaker_open_ms),
                            }
                        }
                    };
                }
            }
            let ig = ig.clone();
            let target = target.clone();
            outcomes.spawn(async move { record(&ig, &target, &row, result).await });
        }
        while let Some(done) = outcomes.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(target = %target.name, error = %e, "recording a delivery outcome failed; the message will be sent again");
            }
        }
        let state = match breaker {
            Breaker::Closed { .. } => 0,
            Breaker::Open { .. } => 1,
            Breaker::HalfOpen => 2,
        };
        ig.metrics().breaker_state.get_or_create(&labels).set(state);
    }
}

/// The JSON body of a message (docs/INTEGRATION.md §4.1).
pub fn message_body(
    row_id: &str,
    message_type: &str,
    subject: &str,
    correlation: &str,
    seq: crate::ledger::Seq,
    hash: &[u8],
    data: &str,
) -> String {
    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    json!({
        "type": message_type, "id": row_id, "subject": subject, "correlation_id": correlation,
        "entry": {"seq": seq, "hash": hex::encode(hash)}, "data": data,
    })
    .to_string()
}

/// Why a delivery attempt failed; its text is what the outcome entry and
/// the outbox row record as `error`.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// The target answered with a status outside 2xx.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// No answer within the target's timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The connection could not be made.
    #[error("connection failed (target down?)")]
    Connect,
    /// Any other failure of the request (its URL left out).
    #[error(transparent)]
    Request(reqwest::Error),
}

/// Sends one message. `Ok(status)` for a 2xx, else why not.
async fn send(
    client: &reqwest::Client,
    target: &Target,
    row: &DueMessageRow,
) -> Result<u16, DeliveryError> {
    let (id, correlation) = (&row.id, &row.correlation_id);
    let body = message_body(
        id,
        &row.message_type,
        &row.subject,
        correlation,
        row.created_seq,
        &row.handover_hash,
        &row.body,
    );
    let timestamp = chrono::Utc::now().timestamp();
    let signature = webhook::signature(&target.secret, id, timestamp, body.as_bytes());
    let answer = client
        .post(&target.config.url)
        .header(webhook::ID, id.as_str())
        .header(webhook::TIMESTAMP, timestamp.to_string())
        .header(webhook::SIGNATURE, signature)
        .header("idempotency-key", id.as_str())
        .header("x-correlation-id", correlation.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err(DeliveryError::Status(r.status())),
        Err(e) if e.is_timeout() => Err(DeliveryError::Timeout(target.config.timeout_ms)),
        Err(e) if e.is_connect() => Err(DeliveryError::Connect),
        Err(e) => Err(DeliveryError::Request(e.without_url())),
    }
}

/// The delay before attempt `attempts + 1`: exponential, capped, with
/// jitter in [50 %, 100 %].
pub fn backoff(config: &TargetConfig, attempts: u32) -> Duration {
    let exp = config
        .backoff_initial_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
    let capped = exp.min(config.backoff_max_ms);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let fraction = 0.5 + f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) / 2.0;
    Duration::from_millis((capped as f64 * fraction) as u64)
}

/// Records an attempt's outcome as an entry with the outbox row's change.
async fn record(
    ig: &Integration,
    target: &Target,
    row: &DueMessageRow,
    result: Result<u16, DeliveryError>,
) -> Result<(), crate::sequencer::AppendError> {
    let DueMessageRow {
        id,
        subject,
        correlation_id: correlation,
        created_at,
        handover_hash: hash,
        attempts,
        next_attempt_at: scheduled,
        ..
    } = row;
    let labels = label("target", &target.name);
    let attempt = u32::try_from(*attempts).unwrap_or(0) + 1;
    let mut payload = Map::new();
    payload.insert("message_id".into(), json!(id));
    payload.insert("target".into(), json!(target.name));
    payload.insert("attempt".into(), json!(attempt));
    let (kind, effect) = match result {
        Ok(status) => {
            let latency = chrono::DateTime::parse_from_rfc3339(created_at)
                .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds())
                .unwrap_or(0)
                .max(0);
            ig.metrics()
                .delivery_seconds
                .get_or_create(&labels)
                .observe(latency as f64 / 1000.0);
            if latency as u64 > ig.config().delivery_sla_seconds * 1000 {
                ig.metrics()
                    .delivery_sla_breaches
                    .get_or_create(&labels)
                    .inc();
            }
            payload.insert("status".into(), json!(status));
            payload.insert("latency_ms".into(), json!(latency));
            (&kind::INTEGRATION_HANDOVER_DELIVERED, outbox_delivered(id))
        }
        Err(error) => {
            let error = error.to_string();
            ig.metrics().delivery_errors.get_or_create(&labels).inc();
            payload.insert("error".into(), json!(error));
            if attempt >= target.config.max_attempts {
                ig.metrics().dead_letters.get_or_create(&labels).inc();
                tracing::warn!(target = %target.name, message = %id, attempts = attempt, error = %error, "message dead-lettered");
                (
                    &kind::INTEGRATION_HANDOVER_DEAD_LETTERED,
                    outbox_dead_lettered(id, &error),
                )
            } else {
                let next = chrono::Utc::now()
                    + chrono::Duration::from_std(backoff(&target.config, attempt))
                        .unwrap_or_default();
                let next = Timestamp::from_datetime(next).to_string();
                payload.insert("next_attempt_at".into(), json!(next));
                (
                    &kind::INTEGRATION_HANDOVER_FAILED,
                    outbox_retry_scheduled(id, &error, &next),
                )
            }
        }
    };
    let parent = Hash::from_slice(hash)
        .map_err(|e| crate::sequencer::AppendError::Unavailable(e.to_string()))?;
    let request = AppendRequest {
        kind,
        actor: Actor::parse("system:delivery").expect("a valid actor"),
        subject: Subject::parse(subject).map_err(crate::sequencer::AppendError::Invalid)?,
        correlation_id: Some(correlation.clone()),
        // One outcome per scheduled attempt: a second recording of the
        // same attempt (a retry after a lost answer) is a replay. A replay
        // of a dead letter schedules anew, so its attempts get new keys.
        idempotency_key: Some(format!("{id}/{scheduled}")),
        parents: vec![parent],
        reason: None,
        payload,
        effects: vec![effect],
        parent_refs: vec![],
    };
    ig.sequencer().append(request).await.map(|_| ())
}

/// The configured targets with their secrets read from the data directory.
///
/// # Errors
/// A target without URL or with an unreadable or malformed secret file.
pub fn load_targets(
    config: &crate::config::IntegrationConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for (name, t) in &config.targets {
        if t.url.is_empty() {
            anyhow::bail!("[integration.targets.{name}] has no url");
        }
        let path = data_dir.join(&t.secret_file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "[integration.targets.{name}] secret_file {}: {e}",
                path.display()
            )
        })?;
        let secret = Secret::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "[integration.targets.{name}] secret_file {}: {e}",
                path.display()
            )
        })?;
        out.push(Target {
            name: name.clone(),
            config: t.clone(),
            secret,
        });
    }
    Ok(out)
}
