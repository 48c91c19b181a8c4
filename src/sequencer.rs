//! The single writer: takes appends from a bounded queue, batches them into
//! one transaction (group commit), assigns contiguous seqs in arrival order,
//! hashes, extends the Merkle tree, signs checkpoints, commits, and only then
//! acknowledges each caller.
//!
//! ```text
//!  callers --try_send--> [bounded queue] --> sequencer task
//!                                              | prepare: validate, idempotency, parents,
//!                                              |          seq/prev/recorded_at, hash, tree nodes
//!                                              | checkpoint due? consistency-check, sign
//!                                              | Store::write_batch (one transaction)
//!                                              v
//!                                   acknowledge (seq, hash, tree_size)
//! ```
//!
//! Crash windows:
//! - Before `write_batch` commits, nothing is durable and nobody was
//!   acknowledged: a crash loses only unacknowledged appends, which callers
//!   retry (with the same idempotency key, safely).
//! - After commit and before the acknowledgement, the entries are durable but
//!   the caller saw an error or nothing; a retry with the same idempotency key
//!   returns the original entry.
//! - A commit that reports an error has an outcome the error does not tell:
//!   on PostgreSQL the connection can drop after the server committed. The
//!   sequencer reads the head back ([`outcome`]): the batch's last entry
//!   there means it was written, and the callers get their receipts; the
//!   head it was built on means nothing was written, and they are told so;
//!   anything else (or no answer) is said as not known, with the retry that
//!   is safe. `Store::inject_fault` forces each window in tests
//!   (`crash::commit_windows`, both backends).
//! - A batch that commits without a checkpoint (one was signed less than
//!   `checkpoint_interval_ms` ago) leaves an unattested tail; the timer signs
//!   it within the interval. If the process dies first, [`Sequencer::start`]
//!   re-verifies the tail from its canonical bytes and signs it. Known gap:
//!   entries forged into the tail by someone with write access to the
//!   database while no server runs would be attested the same way; `verify`
//!   with a checkpoint saved outside the database and the `ledger.tail_attested`
//!   log line are the controls (see docs/ARCHITECTURE.md).
//!
//! Another writer (a second server, a CLI command) is harmless: the store
//! takes a writer lock and checks the head inside the transaction, so a stale
//! writer finds the head moved, writes nothing, reloads and rebuilds its batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::SequencerConfig;
use crate::ledger::entry::{self, EntryError, EntryParts};
use crate::ledger::kind::{self, Class, KindDef};
use crate::ledger::merkle::{self, Frontier, NodeId, ProofPlan};
use crate::ledger::{Actor, Checkpoint, Entry, Hash, LedgerKey, Seq, Subject, Timestamp};
use crate::store::{
    BatchWrite, Head, IdempotentHit, NewCheckpoint, NewEntry, SequencedWrite, StateWrite, Store,
    StoreError,
};
use crate::telemetry::Metrics;

/// Entries between two WAL checkpoints (SQLite; about 3 pages an entry).
const WAL_CHECKPOINT_ENTRIES: u64 = 512;
/// How often a batch is rebuilt after another writer moved the head. Each
/// rebuild means the other writer committed, so the ledger progresses; with
/// two busy writers on one SQLite file, 5 was measured to run out (2 runs in
/// 8 of `a_second_writer_on_the_same_database_cannot_fork_the_chain`).
const HEAD_MOVED_RETRIES: usize = 64;

/// One append, validated field by field but not yet sequenced.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Registered kind.
    pub kind: &'static KindDef,
    /// Authenticated principal.
    pub actor: Actor,
    /// What it is about.
    pub subject: Subject,
    /// Flow grouping.
    pub correlation_id: Option<String>,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Hashes of earlier entries it derives from.
    pub parents: Vec<Hash>,
    /// Why.
    pub reason: Option<String>,
    /// Content.
    pub payload: Map<String, Value>,
    /// Identity state changes written in the same transaction as the entry.
    pub effects: Vec<StateWrite>,
    /// Within a group ([`SequencerHandle::append_group`]): indices of
    /// earlier requests of the same group whose entries are parents of this
    /// one, placed before `parents`. Empty for a single append.
    pub parent_refs: Vec<usize>,
}

impl AppendRequest {
    /// A request with only the required fields: no correlation or
    /// idempotency key, no parents, reason or effects.
    pub fn new(
        kind: &'static KindDef,
        actor: Actor,
        subject: Subject,
        payload: Map<String, Value>,
    ) -> AppendRequest {
        AppendRequest {
            kind,
            actor,
            subject,
            correlation_id: None,
            idempotency_key: None,
            parents: Vec::new(),
            reason: None,
            payload,
            effects: Vec::new(),
            parent_refs: Vec::new(),
        }
    }

    /// Checks the request against the entry rules that do not need the
    /// database (the sequencer checks parents and idempotency).
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check(&self) -> Result<(), EntryError> {
        self.prepare().map(|_| ())
    }

    /// Checks the request and computes, on the caller's task, what the
    /// sequencer would otherwise compute inside its single loop: the
    /// payload's canonical bytes (once) and the idempotency digest.
    fn prepare(&self) -> Result<(Vec<u8>, Hash), EntryError> {
        entry::check_token_field("correlation_id", self.correlation_id.as_deref(), 128)?;
        entry::check_token_field("idempotency_key", self.idempotency_key.as_deref(), 256)?;
        entry::check_parents(self.kind, &self.parents)?;
        entry::check_reason(self.kind, self.reason.as_deref())?;
        let payload = entry::canonical_payload(&self.payload);
        if payload.len() > entry::PAYLOAD_MAX_BYTES {
            return Err(EntryError::Field {
                field: "payload",
                problem: format!(
                    "is {} bytes in canonical form; the limit is {}",
                    payload.len(),
                    entry::PAYLOAD_MAX_BYTES
                ),
            });
        }
        let digest = self.digest_with(&payload);
        Ok((payload, digest))
    }

    /// The digest that tells a replay (same content) from a conflict: SHA-256
    /// over every content field, each length-prefixed (absent fields marked),
    /// with the payload in canonical form. Internal; stored per entry.
    fn digest_with(&self, payload_canonical: &[u8]) -> Hash {
        let mut framed = Vec::with_capacity(128 + payload_canonical.len());
        let mut field = |bytes: Option<&[u8]>| match bytes {
            Some(b) => {
                framed.extend_from_slice(&(b.len() as u64).to_be_bytes());
                framed.extend_from_slice(b);
            }
            None => framed.extend_from_slice(&u64::MAX.to_be_bytes()),
        };
        field(Some(self.kind.name.as_bytes()));
        field(Some(self.actor.as_str().as_bytes()));
        field(Some(self.subject.as_str().as_bytes()));
        field(self.correlation_id.as_deref().map(str::as_bytes));
        field(Some(
            &self
                .parents
                .iter()
                .flat_map(|p| *p.as_bytes())
                .collect::<Vec<u8>>(),
        ));
        field(self.reason.as_deref().map(str::as_bytes));
        field(Some(payload_canonical));
        if !self.parent_refs.is_empty() {
            // Only group members carry refs; single appends keep the
            // digest they always had.
            let refs: Vec<u8> = self
                .parent_refs
                .iter()
                .flat_map(|r| (*r as u64).to_be_bytes())
                .collect();
            field(Some(&refs));
        }
        Hash::sha256(&[&framed])
    }
}

/// What the caller gets once its entry is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's seq.
    pub seq: Seq,
    /// The entry's hash.
    pub hash: Hash,
    /// When it was recorded.
    pub recorded_at: String,
    /// Tree size after the batch that holds it (a checkpoint of at least this
    /// size is signed within the checkpoint interval).
    pub tree_size: u64,
    /// True when an earlier entry with the same idempotency key and content
    /// was returned instead of appending.
    pub replayed: bool,
}

/// Why an append was not done. Nothing was written in any of these cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The queue is full; retry after a moment.
    #[error("the ledger's append queue is full; retry after a moment")]
    QueueFull,
    /// The key was used before for different content.
    #[error(
        "idempotency key `{key}` was already used for different content by entry {original_seq}"
    )]
    Conflict {
        /// The key.
        key: String,
        /// The entry that used it.
        original_seq: Seq,
    },
    /// A parent hash names no earlier entry.
    #[error("parent {0} is not an entry of this ledger")]
    UnknownParent(Hash),
    /// A group member names a parent by an index that is not an earlier
    /// member of its group.
    #[error("group member {member} names parent ref {parent_ref}, which is not an earlier member")]
    BadParentRef {
        /// The member.
        member: usize,
        /// The ref.
        parent_ref: usize,
    },
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] EntryError),
    /// The sequencer cannot write now (database down, integrity failure).
    #[error("the ledger cannot accept writes: {0}")]
    Unavailable(String),
}

impl AppendError {
    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AppendError::QueueFull | AppendError::Unavailable(_))
    }
}

/// Why the sequencer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database has no genesis entry.
    #[error("the ledger is empty: run `trailmark init` first")]
    NotInitialised,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored ledger does not match the key or fails its own checks.
    #[error("ledger integrity: {0}")]
    Integrity(String),
}

/// One request of a job, prepared on the caller's task.
struct Item {
    request: AppendRequest,
    payload_canonical: Vec<u8>,
    digest: Hash,
}

/// What a caller queued: one request, or a group committed all together.
struct Job {
    items: Vec<Item>,
    respond: oneshot::Sender<Result<Vec<Receipt>, AppendError>>,
}

/// A handle for appending; cheap to clone.
#[derive(Clone)]
pub struct SequencerHandle {
    queue: mpsc::Sender<Job>,
    halted: Arc<AtomicBool>,
    metrics: Metrics,
}

impl SequencerHandle {
    /// Appends one entry and waits until it is durable.
    ///
    /// # Errors
    /// See [`AppendError`]; nothing is written when an error is returned,
    /// except [`AppendError::Unavailable`] after a lost connection, where the
    /// caller should retry with the same idempotency key.
    pub async fn append(&self, request: AppendRequest) -> Result<Receipt, AppendError> {
        let mut receipts = self.append_group(vec![request]).await?;
        receipts
            .pop()
            .ok_or_else(|| AppendError::Unavailable("the sequencer answered nothing".into()))
    }

    /// Appends several entries atomically: all of them land, contiguous and
    /// in this order, in one transaction with their state writes, or none
    /// does. A member may name earlier members as parents
    /// ([`AppendRequest::parent_refs`]). A member whose idempotency key and
    /// content match a committed entry is answered with that entry
    /// (`replayed`); a conflict or an unknown parent refuses the whole group.
    ///
    /// # Errors
    /// As [`SequencerHandle::append`], for the group as a whole.
    pub async fn append_group(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Receipt>, AppendError> {
        let mut items = Vec::with_capacity(requests.len());
        for (member, request) in requests.into_iter().enumerate() {
            if let Some(&bad) = request.parent_refs.iter().find(|r| **r >= member) {
                self.metrics.refusals.inc();
                return Err(AppendError::BadParentRef {
                    member,
                    parent_ref: bad,
                });
            }
            match request.prepare() {
                Ok((payload_canonical, digest)) => items.push(Item {
                    request,
                    payload_canonical,
                    digest,
                }),
                Err(e) => {
                    self.metrics.refusals.inc();
                    return Err(e.into());
                }
            }
        }
        if items.is_empty() {
            return Ok(vec![]);
        }
        let (respond, answer) = oneshot::channel();
        match self.queue.try_send(Job { items, respond }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.refusals.inc();
                return Err(AppendError::QueueFull);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(AppendError::Unavailable("the sequencer has stopped".into()));
            }
        }
        let result = answer.await.unwrap_or_else(|_| {
            Err(AppendError::Unavailable(
                "the sequencer stopped before answering".into(),
            ))
        });
        match &result {
            Ok(receipts) => {
                let replays = receipts.iter().filter(|r| r.replayed).count();
                if replays > 0 {
                    self.metrics.replays.inc_by(replays as u64);
                }
            }
            Err(_) => {
                self.metrics.refusals.inc();
            }
        }
        result
    }

    /// True once the sequencer refused to continue (integrity failure).
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Appends waiting now.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The running sequencer task.
pub struct Sequencer {
    handle: SequencerHandle,
    task: Task,
}

/// Where the sequencer loop runs.
enum Task {
    /// On the caller's runtime (PostgreSQL: its connections belong to that
    /// runtime's I/O driver).
    Shared(JoinHandle<()>),
    /// On its own OS thread with its own current-thread runtime (SQLite,
    /// whose driver talks to its worker thread over channels). Measured: on
    /// two cores under HTTP load the shared runtime made the sequencer wait
    /// behind request tasks after every commit, leaving the database idle.
    Dedicated(oneshot::Receiver<()>),
}

struct State {
    store: Store,
    key: LedgerKey,
    config: SequencerConfig,
    metrics: Metrics,
    halted: Arc<AtomicBool>,
    head: Head,
    frontier: Frontier,
    /// Size and root of the newest signed checkpoint.
    checkpoint: (u64, Hash),
    checkpoint_at: Instant,
    /// Entries committed since the last WAL checkpoint.
    since_wal_checkpoint: u64,
    /// Where `recorded_at` and checkpoint times come from.
    clock: Clock,
}

/// Writes the genesis entry and the first checkpoint of a new ledger.
///
/// # Errors
/// If the ledger is not empty or the database fails.
pub async fn write_genesis(store: &Store, key: &LedgerKey) -> Result<Receipt, StartError> {
    if store.head().await?.is_some() {
        return Err(StartError::Integrity(
            "the database already holds a ledger".into(),
        ));
    }
    let mut payload = Map::new();
    payload.insert("origin".into(), key.name().into());
    payload.insert("verifier_key".into(), key.verifier().to_text().into());
    payload.insert(
        "software".into(),
        format!("trailmark {}", env!("CARGO_PKG_VERSION")).into(),
    );
    let genesis = Entry {
        seq: Seq::GENESIS,
        prev: Hash::ZERO,
        recorded_at: Timestamp::now(),
        kind: &kind::LEDGER_GENESIS,
        actor: Actor::system(),
        subject: Subject::parse(&format!("ledger:{}", key.name()))
            .map_err(|e| StartError::Integrity(e.to_string()))?,
        correlation_id: None,
        idempotency_key: None,
        parents: vec![],
        reason: None,
        payload,
    };
    let (canonical, hash) = genesis.seal();
    let checkpoint = Checkpoint {
        origin: key.name().to_owned(),
        size: 1,
        root: hash,
    };
    let batch = BatchWrite {
        expected_head: None,
        entries: vec![NewEntry {
            seq: Seq::GENESIS,
            hash,
            canonical,
            recorded_at: genesis.recorded_at.to_string(),
            kind: genesis.kind.name,
            actor: genesis.actor.to_string(),
            subject: genesis.subject.to_string(),
            correlation_id: None,
            idempotency_key: None,
            request_digest: hash,
            parent_seqs: vec![],
            seal: Some(key.sign_raw(&checkpoint.body()).to_vec()),
        }],
        nodes: vec![],
        checkpoint: Some(NewCheckpoint {
            size: 1,
            root: hash,
            note: key.sign_note(&checkpoint.body()),
            signed_at: Timestamp::now().to_string(),
        }),
        state: vec![],
    };
    store.write_batch(&batch).await?;
    Ok(Receipt {
        seq: Seq::GENESIS,
        hash,
        recorded_at: genesis.recorded_at.to_string(),
        tree_size: 1,
        replayed: false,
    })
}

impl Sequencer {
    /// Loads the head, tree and last checkpoint, checks them against each
    /// other and the key, attests an unattested tail, and starts the task.
    ///
    /// # Errors
    /// If the ledger is empty, the database fails, or the stored ledger is
    /// inconsistent with its last checkpoint or the key.
    pub async fn start(
        store: Store,
        key: LedgerKey,
        config: SequencerConfig,
        metrics: Metrics,
    ) -> Result<Sequencer, StartError> {
        Sequencer::start_with_clock(store, key, config, metrics, Clock::system()).await
    }

    /// [`Sequencer::start`] recording times from `clock` (a test's
    /// adjustable clock; the composition root passes the instance's).
    ///
    /// # Errors
    /// As [`Sequencer::start`].
    pub async fn start_with_clock(
        store: Store,
        key: LedgerKey,
        config: SequencerConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<Sequencer, StartError> {
        let halted = Arc::new(AtomicBool::new(false));
        let mut state = State::load(
            store.writer(),
            key,
            config.clone(),
            metrics.clone(),
            halted.clone(),
        )
        .await?;
        state.clock = clock;
        if state.checkpoint.0 < state.head.seq.size() {
            state.attest_tail().await?;
        }
        let (queue, receiver) = mpsc::channel(config.queue_max_entries.max(1));
        let handle = SequencerHandle {
            queue,
            halted,
            metrics,
        };
        let task = if state.store.backend_name() == "sqlite" {
            let (done, finished) = oneshot::channel();
            std::thread::Builder::new()
                .name("trailmark-sequencer".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(run(state, receiver, config)),
                        Err(e) => tracing::error!(error = %e, "cannot start the sequencer runtime"),
                    }
                    let _ = done.send(());
                })
                .map_err(|e| {
                    StartError::Integrity(format!("cannot start the sequencer thread: {e}"))
                })?;
            Task::Dedicated(finished)
        } else {
            Task::Shared(tokio::spawn(run(state, receiver, config)))
        };
        Ok(Sequencer { handle, task })
    }

    /// A handle for appending.
    pub fn handle(&self) -> SequencerHandle {
        self.handle.clone()
    }

    /// Stops accepting appends once every handle is dropped, signs a final
    /// checkpoint over anything unattested, and waits for the task.
    pub async fn shutdown(self) {
        drop(self.handle);
        let ended = match self.task {
            Task::Shared(task) => task.await.map_err(|e| e.to_string()),
            Task::Dedicated(finished) => finished.await.map_err(|e| e.to_string()),
        };
        if let Err(e) = ended {
            tracing::error!(error = %e, "sequencer task ended abnormally");
        }
    }
}

/// Why a checkpoint was not signed. A plan or consistency failure means the
/// stored tree is not the one the last checkpoint attests: the sequencer
/// halts rather than sign a fork.
#[derive(Debug, thiserror::Error)]
enum CheckpointError {
    /// The sizes make no consistency proof.
    #[error("{0}")]
    Plan(merkle::ProofError),
    /// The database failed while reading the proof.
    #[error("{0}")]
    Store(StoreError),
    /// The new tree does not extend the last signed one.
    #[error(
        "refusing to sign checkpoint {size}: not consistent with checkpoint {old_size}: {problem}"
    )]
    Inconsistent {
        /// The size to sign.
        size: u64,
        /// The last signed size.
        old_size: u64,
        /// What the proof check found.
        problem: merkle::ProofError,
    },
}

impl State {
    async fn load(
        store: Store,
        key: LedgerKey,
        config: SequencerConfig,
        metrics: Metrics,
        halted: Arc<AtomicBool>,
    ) -> Result<State, StartError> {
        // Read the newest checkpoint before the head: entries are never
        // removed, so a head read afterwards covers at least the checkpoint
        // even while another writer appends and signs between the two reads.
        let stored = store.latest_checkpoint().await?;
        let head = store.head().await?.ok_or(StartError::NotInitialised)?;
        let verifier = key.verifier();
        let genesis = store
            .entry(Seq::GENESIS)
            .await?
            .ok_or_else(|| StartError::Integrity("entry 0 is missing".into()))?;
        let genesis_key = serde_json::from_slice::<Value>(&genesis.canonical)
            .ok()
            .and_then(|v| v["payload"]["verifier_key"].as_str().map(str::to_owned));
        if genesis_key.as_deref() != Some(verifier.to_text().as_str()) {
            return Err(StartError::Integrity(format!(
                "the ledger key in the data directory ({}) is not the key named by the genesis entry ({})",
                verifier.to_text(),
                genesis_key.unwrap_or_else(|| "none".into())
            )));
        }
        let frontier = store.frontier(head.seq.size()).await?;
        let head_row = store
            .entry(head.seq)
            .await?
            .ok_or_else(|| StartError::Integrity(format!("entry {} vanished", head.seq)))?;
        let seal_body = Checkpoint {
            origin: key.name().to_owned(),
            size: head.seq.size(),
            root: frontier.root(),
        }
        .body();
        if !head_row
            .seal
            .as_deref()
            .is_some_and(|seal| verifier.verify_raw(&seal_body, seal))
        {
            return Err(StartError::Integrity(format!(
                "the newest entry (seq {}) carries no valid batch seal: it was written around the sequencer, not by this ledger; run `trailmark verify`",
                head.seq
            )));
        }
        let stored =
            stored.ok_or_else(|| StartError::Integrity("no checkpoint is stored".into()))?;
        let signed = Checkpoint::open(&stored.note, &verifier)
            .map_err(|e| StartError::Integrity(format!("checkpoint {}: {e}", stored.size)))?;
        if signed.size != stored.size || signed.root.as_bytes().as_slice() != stored.root.as_slice()
        {
            return Err(StartError::Integrity(format!(
                "checkpoint {} row does not match its signed note",
                stored.size
            )));
        }
        if signed.size > head.seq.size() {
            return Err(StartError::Integrity(format!(
                "the newest checkpoint attests {} entries but the ledger holds {}: entries were removed; run `trailmark verify`",
                signed.size,
                head.seq.size()
            )));
        }
        let proof = store
            .proof(
                &ProofPlan::consistency(signed.size, head.seq.size())
                    .map_err(|e| StartError::Integrity(e.to_string()))?,
                &HashMap::new(),
            )
            .await?;
        merkle::verify_consistency(
            signed.size,
            head.seq.size(),
            &signed.root,
            &frontier.root(),
            &proof,
        )
        .map_err(|e| {
            StartError::Integrity(format!(
                "the stored tree is not consistent with checkpoint {}: {e}; run `trailmark verify`",
                signed.size
            ))
        })?;
        metrics
            .ledger_size
            .set(i64::try_from(head.seq.size()).unwrap_or(i64::MAX));
        Ok(State {
            store,
            key,
            config,
            metrics,
            halted,
            head,
            frontier,
            checkpoint: (signed.size, signed.root),
            checkpoint_at: Instant::now(),
            since_wal_checkpoint: 0,
            clock: Clock::system(),
        })
    }

    /// Re-derives the unattested tail's hashes from the canonical bytes,
    /// checks the chain, and signs a checkpoint over it.
    async fn attest_tail(&mut self) -> Result<(), StartError> {
        let (from, to) = (self.checkpoint.0, self.head.seq.size());
        let mut frontier = self.store.frontier(from).await?;
        let mut prev = self
            .store
            .entry(
                Seq::at_size(from.saturating_sub(1))
                    .map_err(|e| StartError::Integrity(e.to_string()))?,
            )
            .await?
            .map(|e| e.hash)
            .unwrap_or_default();
        let mut next = from;
        while next < to {
            let page = self
                .store
                .entries_page(next, crate::store::STREAM_PAGE_ROWS)
                .await?;
            if page.is_empty() {
                break;
            }
            for row in page {
                // Another writer (the server, while a CLI verb starts) may
                // have appended past the head this process loaded.
                if row.seq.get() >= to {
                    break;
                }
                let hash = merkle::leaf_hash(&row.canonical);
                let parsed = entry::ParsedEntry::parse(&row.canonical)
                    .and_then(|p| p.check())
                    .map_err(|e| StartError::Integrity(format!("entry {}: {e}", row.seq)))?;
                if row.seq.get() != next
                    || parsed.seq.get() != next
                    || hash.as_bytes().as_slice() != row.hash.as_slice()
                    || parsed.prev.as_bytes().as_slice() != prev.as_slice()
                {
                    return Err(StartError::Integrity(format!(
                        "unattested entry {} does not chain; run `trailmark verify`",
                        row.seq
                    )));
                }
                prev = row.hash;
                frontier.push(hash);
                next += 1;
            }
        }
        if frontier.size() != to || frontier.root() != self.frontier.root() {
            return Err(StartError::Integrity(
                "the unattested tail does not match the stored tree; run `trailmark verify`".into(),
            ));
        }
        tracing::warn!(
            from_seq = from,
            to_seq = to - 1,
            "ledger.tail_attested: signing entries committed before the last stop without a checkpoint"
        );
        let cp = self
            .sign_checkpoint(to, self.frontier.root(), &HashMap::new())
            .await
            .map_err(|e| StartError::Integrity(e.to_string()))?;
        self.store
            .write_checkpoint((self.head.seq, self.head.hash), cp)
            .await?;
        self.checkpoint = (to, self.frontier.root());
        self.metrics.checkpoints.inc();
        Ok(())
    }

    /// Checks the new tree against the last signed checkpoint with a
    /// consistency proof from the stored tree (plus `extra` uncommitted
    /// nodes), then signs. Never signs a fork.
    async fn sign_checkpoint(
        &self,
        size: u64,
        root: Hash,
        extra: &HashMap<NodeId, Hash>,
    ) -> Result<NewCheckpoint, CheckpointError> {
        let (old_size, old_root) = self.checkpoint;
        let plan = ProofPlan::consistency(old_size, size).map_err(CheckpointError::Plan)?;
        let proof = self
            .store
            .proof(&plan, extra)
            .await
            .map_err(CheckpointError::Store)?;
        merkle::verify_consistency(old_size, size, &old_root, &root, &proof).map_err(
            |problem| CheckpointError::Inconsistent {
                size,
                old_size,
                problem,
            },
        )?;
        let body = Checkpoint {
            origin: self.key.name().to_owned(),
            size,
            root,
        }
        .body();
        Ok(NewCheckpoint {
            size,
            root,
            note: self.key.sign_note(&body),
            signed_at: Timestamp::from_datetime(self.clock.now()).to_string(),
        })
    }

    async fn reload(&mut self) -> Result<(), StartError> {
        let fresh = State::load(
            self.store.clone(),
            self.key.clone(),
            self.config.clone(),
            self.metrics.clone(),
            self.halted.clone(),
        )
        .await?;
        self.head = fresh.head;
        self.frontier = fresh.frontier;
        self.checkpoint = fresh.checkpoint;
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        self.checkpoint_at.elapsed() >= Duration::from_millis(self.config.checkpoint_interval_ms)
    }

    /// Signs and writes a checkpoint over everything committed, if anything is unattested.
    async fn checkpoint_tail(&mut self) {
        let size = self.head.seq.size();
        if self.checkpoint.0 >= size || self.halted.load(Ordering::SeqCst) {
            return;
        }
        let root = self.frontier.root();
        match self.sign_checkpoint(size, root, &HashMap::new()).await {
            Ok(cp) => match self
                .store
                .write_checkpoint((self.head.seq, self.head.hash), cp)
                .await
            {
                Ok(()) => {
                    self.checkpoint = (size, root);
                    self.checkpoint_at = Instant::now();
                    self.metrics.checkpoints.inc();
                }
                Err(StoreError::HeadMoved { .. }) => {
                    self.metrics.head_moved.inc();
                    if let Err(e) = self.reload().await {
                        self.halt(&e.to_string());
                    }
                }
                Err(e) => tracing::error!(error = %e, "writing a checkpoint failed; will retry"),
            },
            Err(e) => self.halt(&e.to_string()),
        }
    }

    fn halt(&self, why: &str) {
        tracing::error!(
            reason = why,
            "the sequencer stops accepting writes: the stored ledger failed an integrity check; run `trailmark verify`"
        );
        self.halted.store(true, Ordering::SeqCst);
    }
}

/// One member's fate while a batch is prepared.
enum ItemPlan {
    /// A committed entry with the same key and content.
    Replay(Receipt),
    /// Gets the entry at this index of the batch.
    New(usize),
    /// Same key and content as the entry at this index of the batch.
    SameAs(usize),
}

/// One job's fate while a batch is prepared.
enum Planned {
    /// Answer now with an error; nothing of the job is in the batch.
    Refused(AppendError),
    /// One plan per member.
    Items(Vec<ItemPlan>),
}

struct Prepared {
    write: BatchWrite,
    plans: Vec<Planned>,
    new_head: Head,
    new_frontier: Frontier,
}

/// What a member will be, decided before anything of its job is added to
/// the batch (so a refused group leaves no trace).
enum Decision {
    Replay(Receipt),
    SameAs(usize),
    New(Vec<Hash>),
}

/// Prepares a batch of jobs in arrival order: the lookups, then each job
/// decided whole (a group is refused whole, before anything of it enters
/// the batch) and its new members sequenced; then the batch seal and, when
/// `sign`, a checkpoint.
async fn prepare(state: &State, jobs: &[Job], sign: bool) -> Result<Prepared, StoreError> {
    let lookups = Lookups::read(&state.store, jobs).await?;
    let mut batch = Batch::new(state);
    let mut plans = Vec::with_capacity(jobs.len());
    for job in jobs {
        // First decide every member without touching the batch: a group is
        // refused whole. Members resolve to the hash they will have, known
        // once sequenced, so refs are resolved in the second pass.
        match batch.decide(job, &lookups) {
            Ok(decisions) => plans.push(Planned::Items(batch.sequence(job, decisions, &lookups))),
            Err(refused) => plans.push(Planned::Refused(refused)),
        }
    }
    batch.finish(state, plans, sign).await
}

/// What a batch's two lookups found, one query each: the committed entries
/// holding its idempotency keys (by key and actor), and the seqs of the
/// committed parents it names.
struct Lookups {
    hits: HashMap<(String, String), IdempotentHit>,
    known_parents: HashMap<Hash, Seq>,
}

impl Lookups {
    async fn read(store: &Store, jobs: &[Job]) -> Result<Lookups, StoreError> {
        let keys: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.items.iter())
            .filter_map(|i| i.request.idempotency_key.as_deref())
            .collect();
        let hits = if keys.is_empty() {
            HashMap::new()
        } else {
            store.idempotent_hits(&keys).await?
        };
        let parent_hashes: Vec<Hash> = jobs
            .iter()
            .flat_map(|j| j.items.iter())
            .flat_map(|i| i.request.parents.iter().copied())
            .collect();
        let known_parents = if parent_hashes.is_empty() {
            HashMap::new()
        } else {
            store.seqs_of(&parent_hashes).await?
        };
        Ok(Lookups {
            hits,
            known_parents,
        })
    }
}

/// A batch being built on the committed head: the write, the tree
/// extended by its entries (with the nodes not yet stored), its own head,
/// and the keys and hashes of its entries so far.
struct Batch {
    /// Entries committed before the batch (the tree size a replay reports).
    committed_size: u64,
    write: BatchWrite,
    frontier: Frontier,
    /// Leaves and interior nodes of the batch, for the checkpoint's
    /// consistency proof.
    extra: HashMap<NodeId, Hash>,
    head: Head,
    /// `(idempotency key, actor)` of each entry to its index and digest.
    keys: HashMap<(String, String), (usize, Hash)>,
    /// Hash of each entry to its seq.
    hashes: HashMap<Hash, Seq>,
    recorded_at: Timestamp,
    /// Every entry of a batch is recorded at the same instant, formatted once.
    recorded_at_text: String,
}

impl Batch {
    /// An empty batch on `state`'s head, recorded now or, if the clock is
    /// behind, at the newest entry's time.
    fn new(state: &State) -> Batch {
        let head = state.head.clone();
        let now = Timestamp::from_datetime(state.clock.now());
        let recorded_at = if now < head.recorded_at {
            head.recorded_at
        } else {
            now
        };
        if now < head.recorded_at {
            tracing::warn!(clock = %now, previous = %head.recorded_at, "the clock is behind the newest entry; recording with the newest entry's time");
        }
        Batch {
            committed_size: state.head.seq.size(),
            write: BatchWrite {
                expected_head: Some((state.head.seq, state.head.hash)),
                ..BatchWrite::default()
            },
            frontier: state.frontier.clone(),
            extra: HashMap::new(),
            head,
            keys: HashMap::new(),
            hashes: HashMap::new(),
            recorded_at,
            recorded_at_text: recorded_at.to_string(),
        }
    }

    /// Decides every member of a job, in order, without touching the
    /// batch; the first member refused refuses the job.
    fn decide(&self, job: &Job, lookups: &Lookups) -> Result<Vec<Decision>, AppendError> {
        let mut decisions: Vec<Decision> = Vec::with_capacity(job.items.len());
        let mut group_keys: HashMap<(String, String), (usize, Hash)> = HashMap::new();
        for item in &job.items {
            let decision = self.decide_member(item, lookups, &mut group_keys, &decisions)?;
            decisions.push(decision);
        }
        Ok(decisions)
    }

    /// One member's fate: by its idempotency key, a replay of a committed
    /// entry, the same as an earlier entry of the batch or group, or a
    /// conflict; then every parent must be committed or earlier in the
    /// batch. `group_keys` holds the keys of the group's members decided
    /// new so far (`decided`), with the batch index each will have.
    fn decide_member(
        &self,
        item: &Item,
        lookups: &Lookups,
        group_keys: &mut HashMap<(String, String), (usize, Hash)>,
        decided: &[Decision],
    ) -> Result<Decision, AppendError> {
        let request = &item.request;
        let digest = item.digest;
        if let Some(key) = &request.idempotency_key {
            let id = (key.clone(), request.actor.to_string());
            if let Some(hit) = lookups.hits.get(&id) {
                if hit.request_digest == digest {
                    return Ok(Decision::Replay(Receipt {
                        seq: hit.seq,
                        hash: hit.hash,
                        recorded_at: hit.recorded_at.clone(),
                        tree_size: self.committed_size,
                        replayed: true,
                    }));
                }
                return Err(AppendError::Conflict {
                    key: key.clone(),
                    original_seq: hit.seq,
                });
            }
            let earlier = self.keys.get(&id).or_else(|| group_keys.get(&id));
            if let Some((index, earlier_digest)) = earlier {
                if *earlier_digest == digest {
                    return Ok(Decision::SameAs(*index));
                }
                let original_seq = self.write.entries.get(*index).map_or_else(
                    || Seq::at_size(self.committed_size + *index as u64).unwrap_or_default(),
                    |e| e.seq,
                );
                return Err(AppendError::Conflict {
                    key: key.clone(),
                    original_seq,
                });
            }
            // The index the member's entry will have in the batch.
            let new_before = decided
                .iter()
                .filter(|d| matches!(d, Decision::New(_)))
                .count();
            group_keys.insert(id, (self.write.entries.len() + new_before, digest));
        }
        for p in &request.parents {
            if !lookups.known_parents.contains_key(p) && !self.hashes.contains_key(p) {
                return Err(AppendError::UnknownParent(*p));
            }
        }
        Ok(Decision::New(request.parents.clone()))
    }

    /// Sequences a decided job's new members in order; each member's refs
    /// resolve to the hashes of the members before it.
    fn sequence(
        &mut self,
        job: &Job,
        decisions: Vec<Decision>,
        lookups: &Lookups,
    ) -> Vec<ItemPlan> {
        let mut member_hashes: Vec<Option<Hash>> = Vec::with_capacity(job.items.len());
        let mut item_plans = Vec::with_capacity(job.items.len());
        for (item, decision) in job.items.iter().zip(decisions) {
            let explicit = match decision {
                Decision::Replay(receipt) => {
                    member_hashes.push(Some(receipt.hash));
                    item_plans.push(ItemPlan::Replay(receipt));
                    continue;
                }
                Decision::SameAs(index) => {
                    member_hashes.push(Some(self.write.entries[index].hash));
                    item_plans.push(ItemPlan::SameAs(index));
                    continue;
                }
                Decision::New(parents) => parents,
            };
            let mut parents: Vec<Hash> = item
                .request
                .parent_refs
                .iter()
                .filter_map(|r| member_hashes.get(*r).copied().flatten())
                .collect();
            parents.extend(explicit);
            let (index, hash) = self.push(item, parents, lookups);
            member_hashes.push(Some(hash));
            item_plans.push(ItemPlan::New(index));
        }
        item_plans
    }

    /// Adds one new entry after the batch's head: its canonical bytes and
    /// hash, the tree nodes it completes, its state writes, its key and
    /// hash for the members after it. Returns its index and hash.
    fn push(&mut self, item: &Item, parents: Vec<Hash>, lookups: &Lookups) -> (usize, Hash) {
        let request = &item.request;
        let mut parent_seqs = Vec::with_capacity(parents.len());
        for p in &parents {
            if let Some(seq) = lookups.known_parents.get(p).or_else(|| self.hashes.get(p)) {
                parent_seqs.push(*seq);
            }
        }
        // Seqs end at 2^63-1, far past the 2^53-1 the entry format allows
        // (which `verify` checks); a repeated seq would be refused by the
        // database's primary key, never written.
        let seq = self.head.seq.next().unwrap_or(self.head.seq);
        let (canonical, hash) = EntryParts {
            seq,
            prev: &self.head.hash,
            recorded_at: &self.recorded_at_text,
            kind: request.kind.name,
            actor: request.actor.as_str(),
            subject: request.subject.as_str(),
            correlation_id: request.correlation_id.as_deref(),
            idempotency_key: request.idempotency_key.as_deref(),
            parents: &parents,
            reason: request.reason.as_deref(),
            payload_canonical: &item.payload_canonical,
        }
        .seal();
        self.extra.insert(
            NodeId {
                level: 0,
                index: seq.get(),
            },
            hash,
        );
        let (nodes, extra) = (&mut self.write.nodes, &mut self.extra);
        self.frontier.push_with(hash, |id, node| {
            nodes.push((id, node));
            extra.insert(id, node);
        });
        self.write
            .state
            .extend(request.effects.iter().map(|w| SequencedWrite {
                seq,
                at: self.recorded_at_text.clone(),
                hash,
                write: w.clone(),
            }));
        let index = self.write.entries.len();
        if let Some(key) = &request.idempotency_key {
            self.keys.insert(
                (key.clone(), request.actor.to_string()),
                (index, item.digest),
            );
        }
        self.hashes.insert(hash, seq);
        self.write.entries.push(NewEntry {
            seq,
            hash,
            canonical,
            recorded_at: self.recorded_at_text.clone(),
            kind: request.kind.name,
            actor: request.actor.to_string(),
            subject: request.subject.to_string(),
            correlation_id: request.correlation_id.clone(),
            idempotency_key: request.idempotency_key.clone(),
            request_digest: item.digest,
            parent_seqs,
            seal: None,
        });
        self.head = Head {
            seq,
            hash,
            recorded_at: self.recorded_at,
        };
        (index, hash)
    }

    /// Seals the batch's last entry and, when `sign`, signs a checkpoint
    /// over the batch's tree (after its consistency check).
    async fn finish(
        mut self,
        state: &State,
        plans: Vec<Planned>,
        sign: bool,
    ) -> Result<Prepared, StoreError> {
        if let Some(last) = self.write.entries.last_mut() {
            // The batch seal: only the ledger key can make one, so entries
            // written around the sequencer are recognisable (FORMAT §3.5).
            let body = Checkpoint {
                origin: state.key.name().to_owned(),
                size: self.frontier.size(),
                root: self.frontier.root(),
            }
            .body();
            last.seal = Some(state.key.sign_raw(&body).to_vec());
        }
        if sign && !self.write.entries.is_empty() {
            match state
                .sign_checkpoint(self.frontier.size(), self.frontier.root(), &self.extra)
                .await
            {
                Ok(cp) => self.write.checkpoint = Some(cp),
                Err(e) => return Err(StoreError::Corrupt(e.to_string())),
            }
        }
        Ok(Prepared {
            write: self.write,
            plans,
            new_head: self.head,
            new_frontier: self.frontier,
        })
    }
}

async fn commit(state: &mut State, jobs: Vec<Job>) {
    if state.halted.load(Ordering::SeqCst) {
        for job in jobs {
            let _ = job.respond.send(Err(AppendError::Unavailable("the ledger failed an integrity check; writes are stopped until an administrator runs `trailmark verify`".into())));
        }
        return;
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sign = state.checkpoint_due();
        let preparing = Instant::now();
        let prepared = prepare(state, &jobs, sign).await;
        state
            .metrics
            .prepare_seconds
            .observe(preparing.elapsed().as_secs_f64());
        let prepared = match prepared {
            Ok(p) => p,
            Err(StoreError::Corrupt(why)) => {
                state.halt(&why);
                for job in jobs {
                    let _ = job.respond.send(Err(AppendError::Unavailable(why.clone())));
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "preparing a batch failed");
                for job in jobs {
                    let _ = job.respond.send(Err(AppendError::Unavailable(
                        "the database is not answering; retry".into(),
                    )));
                }
                return;
            }
        };
        let started = Instant::now();
        let written = if prepared.write.entries.is_empty() {
            Ok(())
        } else {
            state.store.write_batch(&prepared.write).await
        };
        match written {
            Ok(()) => {
                state
                    .metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                committed(state, prepared, jobs).await;
                return;
            }
            Err(StoreError::HeadMoved { expected, found }) if attempt <= HEAD_MOVED_RETRIES => {
                state.metrics.head_moved.inc();
                tracing::warn!(%expected, %found, "another writer appended to this ledger; reloading and rebuilding the batch");
                if let Err(e) = state.reload().await {
                    state.halt(&e.to_string());
                }
            }
            Err(e) => {
                // The commit's outcome is not known from the error alone: on
                // PostgreSQL the connection can drop after the server
                // committed. The head says which it was.
                match outcome(state, &prepared).await {
                    Outcome::Written => {
                        tracing::warn!(error = %e, "the commit reported an error, but the batch is in the ledger; answering with its receipts");
                        committed(state, prepared, jobs).await;
                    }
                    Outcome::NotWritten => {
                        tracing::error!(error = %e, "committing a batch failed; nothing was written");
                        for job in jobs {
                            let _ = job.respond.send(Err(AppendError::Unavailable(
                                "the batch could not be committed; the ledger's head shows nothing was written; retry".into(),
                            )));
                        }
                        if let Err(e) = state.reload().await {
                            state.halt(&e.to_string());
                        }
                    }
                    Outcome::Unknown(why) => {
                        tracing::error!(error = %e, %why, "a batch's commit failed and its outcome cannot be read; writes stop");
                        for job in jobs {
                            let _ = job.respond.send(Err(AppendError::Unavailable(
                                "the batch's commit failed and whether it was written is not known (the database does not answer); retry with the same idempotency key: an append that was written is answered with its receipt".into(),
                            )));
                        }
                        if let Err(e) = state.reload().await {
                            state.halt(&e.to_string());
                        }
                    }
                }
                return;
            }
        }
    }
}

/// What a failed commit did, read back from the ledger's head.
enum Outcome {
    /// The batch's last entry is the head: it was committed.
    Written,
    /// The head is still the one the batch was built on.
    NotWritten,
    /// The head cannot be read, or is neither.
    Unknown(String),
}

async fn outcome(state: &State, prepared: &Prepared) -> Outcome {
    match state.store.head().await {
        Ok(Some(h)) if h.seq == prepared.new_head.seq && h.hash == prepared.new_head.hash => {
            Outcome::Written
        }
        Ok(Some(h)) if h.seq == state.head.seq && h.hash == state.head.hash => Outcome::NotWritten,
        Ok(Some(h)) => Outcome::Unknown(format!(
            "the head is seq {} hash {}, neither the batch's nor the one it was built on",
            h.seq, h.hash
        )),
        Ok(None) => Outcome::Unknown("the ledger reads as empty".into()),
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// A batch is in the ledger: move the head, answer every job with its
/// receipts, and checkpoint SQLite's WAL when it is due.
async fn committed(state: &mut State, prepared: Prepared, jobs: Vec<Job>) {
    let count = prepared.write.entries.len();
    if count > 0 {
        state.metrics.batch_entries.observe(count as f64);
        state.metrics.appends.inc_by(count as u64);
    }
    state.since_wal_checkpoint += count as u64;
    state.head = prepared.new_head;
    state.frontier = prepared.new_frontier;
    let tree_size = state.head.seq.size();
    state
        .metrics
        .ledger_size
        .set(i64::try_from(tree_size).unwrap_or(i64::MAX));
    if let Some(cp) = &prepared.write.checkpoint {
        state.checkpoint = (cp.size, cp.root);
        state.checkpoint_at = Instant::now();
        state.metrics.checkpoints.inc();
    }
    let entries = &prepared.write.entries;
    let receipt = |i: usize, replayed: bool| Receipt {
        seq: entries[i].seq,
        hash: entries[i].hash,
        recorded_at: entries[i].recorded_at.clone(),
        tree_size,
        replayed,
    };
    for (job, plan) in jobs.into_iter().zip(prepared.plans) {
        let answer = match plan {
            Planned::Refused(e) => Err(e),
            Planned::Items(items) => Ok(items
                .into_iter()
                .map(|p| match p {
                    ItemPlan::Replay(r) => r,
                    ItemPlan::New(i) => receipt(i, false),
                    ItemPlan::SameAs(i) => receipt(i, true),
                })
                .collect()),
        };
        let _ = job.respond.send(answer);
    }
    // Between batches, after the callers have their answers: the WAL
    // checkpoint delays the next batch, not this one's callers.
    if state.since_wal_checkpoint >= WAL_CHECKPOINT_ENTRIES {
        state.since_wal_checkpoint = 0;
        if let Err(e) = state.store.checkpoint_wal().await {
            tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
}

async fn run(mut state: State, mut receiver: mpsc::Receiver<Job>, config: SequencerConfig) {
    let interval = Duration::from_millis(config.checkpoint_interval_ms);
    loop {
        let unattested = state.checkpoint.0 < state.head.seq.size();
        let due = tokio::time::Instant::from_std(state.checkpoint_at + interval);
        let first = tokio::select! {
            job = receiver.recv() => job,
            () = tokio::time::sleep_until(due), if unattested => {
                state.checkpoint_tail().await;
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(config.batch_max_wait_ms);
        while jobs.len() < config.batch_max_entries.max(1) {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::error::TryRecvError::Empty) if config.batch_max_wait_ms > 0 => {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(job)) => jobs.push(job),
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
        state
            .metrics
            .queue_depth
            .set(i64::try_from(receiver.len()).unwrap_or(i64::MAX));
        commit(&mut state, jobs).await;
    }
    state.checkpoint_tail().await;
}

/// A request for a record entry, as the API and CLI build it.
///
/// # Errors
/// If the kind is unknown, not appendable by callers, or a field is invalid.
pub fn record_request(
    kind_name: &str,
    actor: Actor,
    subject: &str,
    payload: Map<String, Value>,
    api: bool,
) -> Result<AppendRequest, EntryError> {
    let kind = kind::lookup(kind_name).ok_or_else(|| EntryError::Field {
        field: "kind",
        problem: format!("`{kind_name}` is not a registered kind; GET /v1/kinds lists them"),
    })?;
    if api && !kind.api_appendable() {
        return Err(EntryError::Field {
            field: "kind",
            problem: format!(
                "`{kind_name}` is written by Trailmark itself and cannot be appended by callers"
            ),
        });
    }
    if kind.class == Class::Genesis {
        return Err(EntryError::Field {
            field: "kind",
            problem: "there is only one genesis entry".into(),
        });
    }
    Ok(AppendRequest {
        kind,
        actor,
        subject: Subject::parse(subject)?,
        correlation_id: None,
        idempotency_key: None,
        parents: vec![],
        reason: None,
        payload,
        effects: vec![],
        parent_refs: vec![],
    })
}
