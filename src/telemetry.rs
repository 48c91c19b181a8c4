//! Logs and metrics: the tracing subscriber and the Prometheus registry
//! served at `GET /metrics` (appends, batch sizes, queue depth, commit
//! latency, checkpoints).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The ledger's metrics; cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    /// Entries appended.
    pub appends: Counter,
    /// Appends answered from an earlier entry with the same idempotency key.
    pub replays: Counter,
    /// Appends refused (validation, conflict, full queue, unavailable).
    pub refusals: Counter,
    /// Entries per committed batch.
    pub batch_entries: Histogram,
    /// Seconds from BEGIN to COMMIT of a batch.
    pub commit_seconds: Histogram,
    /// Seconds the sequencer spends preparing a batch (lookups, hashing, signing).
    pub prepare_seconds: Histogram,
    /// Appends waiting for the sequencer.
    pub queue_depth: Gauge,
    /// Checkpoints signed.
    pub checkpoints: Counter,
    /// Entries in the ledger.
    pub ledger_size: Gauge,
    /// Batches rebuilt because another writer appended first.
    pub head_moved: Counter,
    /// Accounts locked after consecutive wrong passwords (an alert).
    pub accounts_locked: Counter,
    /// Wrong passwords at login or signing.
    pub password_failures: Counter,
    /// Signatures applied.
    pub signatures: Counter,
    /// Time of a signing ceremony, credentials check included.
    pub signing_seconds: Histogram,
    /// Events recorded, by type.
    pub events_received: Family<Labels, Counter>,
    /// Events acknowledged again (redelivery).
    pub events_duplicate: Counter,
    /// Events refused (schema, version, sender, conflict).
    pub events_refused: Counter,
    /// Events parked for master data.
    pub events_parked: Counter,
    /// Hand-overs put in the outbox, by target.
    pub handovers: Family<Labels, Counter>,
    /// Seconds from hand-over entry to acknowledgement, by target.
    pub delivery_seconds: Family<Labels, Histogram>,
    /// Deliveries slower than the SLA, by target.
    pub delivery_sla_breaches: Family<Labels, Counter>,
    /// Messages pending, by target.
    pub outbox_backlog: Family<Labels, Gauge>,
    /// Failed delivery attempts, by target.
    pub delivery_errors: Family<Labels, Counter>,
    /// Messages dead-lettered, by target.
    pub dead_letters: Family<Labels, Counter>,
    /// Breaker state by target: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<Labels, Gauge>,
    /// Reconciliations that found drift.
    pub reconciliation_drift: Counter,
}

/// Label set of the per-target and per-type metrics.
pub type Labels = Vec<(String, String)>;

/// The label set `name="value"`.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut m = Metrics {
            registry: std::sync::Arc::new(Registry::default()),
            appends: Counter::default(),
            replays: Counter::default(),
            refusals: Counter::default(),
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 14)),
            prepare_seconds: Histogram::new(exponential_buckets(0.000_025, 2.0, 14)),
            queue_depth: Gauge::default(),
            checkpoints: Counter::default(),
            ledger_size: Gauge::default(),
            head_moved: Counter::default(),
            accounts_locked: Counter::default(),
            password_failures: Counter::default(),
            signatures: Counter::default(),
            signing_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            events_received: Family::default(),
            events_duplicate: Counter::default(),
            events_refused: Counter::default(),
            events_parked: Counter::default(),
            handovers: Family::default(),
            delivery_seconds: Family::new_with_constructor(delivery_histogram),
            delivery_sla_breaches: Family::default(),
            outbox_backlog: Family::default(),
            delivery_errors: Family::default(),
            dead_letters: Family::default(),
            breaker_state: Family::default(),
            reconciliation_drift: Counter::default(),
        };
        m.register_integration(&mut registry);
        m.register_ledger(&mut registry);
        m.register_identity(&mut registry);
        m.registry = std::sync::Arc::new(registry);
        m
    }
}

impl Metrics {
    /// Registers the integration's metrics (events, hand-overs, delivery,
    /// reconciliation); the exposition lists them first.
    fn register_integration(&self, registry: &mut Registry) {
        registry.register(
            "trailmark_events_received",
            "Events recorded, by type",
            self.events_received.clone(),
        );
        registry.register(
            "trailmark_events_duplicate",
            "Events acknowledged again (redelivery)",
            self.events_duplicate.clone(),
        );
        registry.register(
            "trailmark_events_refused",
            "Events refused (schema, version, sender, conflict)",
            self.events_refused.clone(),
        );
        registry.register(
            "trailmark_events_parked",
            "Events parked until their master data arrives",
            self.events_parked.clone(),
        );
        registry.register(
            "trailmark_handovers",
            "Hand-overs put in the outbox, by target",
            self.handovers.clone(),
        );
        registry.register(
            "trailmark_delivery_seconds",
            "Time from hand-over entry to acknowledgement by the target",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "trailmark_delivery_sla_breaches",
            "Deliveries slower than [integration] delivery_sla_seconds",
            self.delivery_sla_breaches.clone(),
        );
        registry.register(
            "trailmark_outbox_backlog",
            "Messages waiting for delivery, by target",
            self.outbox_backlog.clone(),
        );
        registry.register(
            "trailmark_delivery_errors",
            "Failed delivery attempts, by target",
            self.delivery_errors.clone(),
        );
        registry.register(
            "trailmark_dead_letters",
            "Messages dead-lettered, by target",
            self.dead_letters.clone(),
        );
        registry.register(
            "trailmark_breaker_state",
            "Circuit breaker per target: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
        registry.register(
            "trailmark_reconciliation_drift",
            "Reconciliations that found drift",
            self.reconciliation_drift.clone(),
        );
    }

    /// Registers the ledger's metrics (appends, batches, queue, checkpoints).
    fn register_ledger(&self, registry: &mut Registry) {
        registry.register(
            "trailmark_appends",
            "Entries appended to the ledger",
            self.appends.clone(),
        );
        registry.register(
            "trailmark_append_replays",
            "Appends answered from an earlier entry with the same idempotency key",
            self.replays.clone(),
        );
        registry.register(
            "trailmark_append_refusals",
            "Appends refused (invalid, conflict, queue full, unavailable)",
            self.refusals.clone(),
        );
        registry.register(
            "trailmark_batch_entries",
            "Entries per committed batch",
            self.batch_entries.clone(),
        );
        registry.register(
            "trailmark_commit_seconds",
            "Time from BEGIN to COMMIT of a batch",
            self.commit_seconds.clone(),
        );
        registry.register(
            "trailmark_prepare_seconds",
            "Time the sequencer spends preparing a batch (lookups, hashing, signing)",
            self.prepare_seconds.clone(),
        );
        registry.register(
            "trailmark_queue_depth",
            "Appends waiting for the sequencer",
            self.queue_depth.clone(),
        );
        registry.register(
            "trailmark_checkpoints",
            "Checkpoints signed",
            self.checkpoints.clone(),
        );
        registry.register(
            "trailmark_ledger_entries",
            "Entries in the ledger",
            self.ledger_size.clone(),
        );
        registry.register(
            "trailmark_head_moved",
            "Batches rebuilt because another writer appended first",
            self.head_moved.clone(),
        );
    }

    /// Registers the identity metrics (lockouts, wrong passwords, signatures).
    fn register_identity(&self, registry: &mut Registry) {
        registry.register(
            "trailmark_accounts_locked",
            "Accounts locked after consecutive wrong passwords (security alert)",
            self.accounts_locked.clone(),
        );
        registry.register(
            "trailmark_password_failures",
            "Wrong passwords at login or signing",
            self.password_failures.clone(),
        );
        registry.register(
            "trailmark_signatures",
            "Part 11 signatures applied",
            self.signatures.clone(),
        );
        registry.register(
            "trailmark_signing_seconds",
            "Duration of a signing ceremony, Argon2id password check included",
            self.signing_seconds.clone(),
        );
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Installs the log subscriber: `RUST_LOG` or `info`, to stderr.
pub fn init_logging() {
    init_logging_at("info,sqlx=warn");
}

/// As [`init_logging`], with `default` as the filter when `RUST_LOG` is
/// unset (`validate` runs an in-process server whose request log would
/// bury the run's own report).
pub fn init_logging_at(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
