//! Whole-ledger checks and copies: `verify` (the database), `export` (the
//! complete electronic copy of docs/FORMAT.md §4), `verify-export` (the
//! inspector's offline check) and portable inclusion proofs.
//!
//! Verification streams the ledger in pages through
//! [`ChainVerifier`](crate::ledger::verify::ChainVerifier), with the next page
//! fetched while the current one is checked; memory stays flat as the ledger
//! grows (one page of rows, the tree frontier, the checkpoint cursor).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::signature::{SignatureChecker, SignatureError};
use crate::ledger::hash::HashError;
use crate::ledger::merkle::{self, ProofPlan};
use crate::ledger::verify::{ChainVerifier, Prechecked, VerifyError};
use crate::ledger::{Checkpoint, EntryError, Hash, NoteError, Seq, VerifierKey};
use crate::projection::{EntryView, Projector, StateMismatch};
use crate::sequencer::{AppendRequest, SequencerHandle};
use crate::store::{STREAM_PAGE_ROWS, Store, StoreError, VerifyRow};

/// Why a check could not finish or failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The ledger is not intact: the first problem found.
    #[error(transparent)]
    Broken(#[from] VerifyError),
    /// A Part 11 signature breaks a rule of docs/SIGNATURES.md §7.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A state table, the parent index or the stored tree is not the
    /// projection of the entries (docs/STATE.md).
    #[error(transparent)]
    State(#[from] StateMismatch),
    /// The database failed while reading.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The input is not usable (missing file, bad key, bad checkpoint file).
    #[error("{0}")]
    Input(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a successful verification checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Entries checked (hash, chain, fields, index columns, parents).
    pub entries: u64,
    /// Signed checkpoints checked (signature and root).
    pub checkpoints: u64,
    /// Part 11 signatures checked (docs/SIGNATURES.md §7).
    pub signatures: u64,
    /// State-table rows compared with their projection (docs/STATE.md).
    pub state_rows: u64,
    /// Root of all entries.
    pub root: String,
    /// Entries after the newest checkpoint, covered by the head's batch seal
    /// (a running server publishes their checkpoint within its interval).
    pub pending_unattested: u64,
    /// The external checkpoint's size, if one was given and checked.
    pub external_checkpoint: Option<u64>,
    /// Seconds taken.
    pub seconds: f64,
}

impl VerifyReport {
    /// Entries per second.
    pub fn rate(&self) -> f64 {
        self.entries as f64 / self.seconds.max(1e-9)
    }
}

/// [`verify_store`], then its outcome recorded in `verify_runs` (the
/// operations page's "last full verify"): `intact` with the root, `broken`
/// with the first problem, or `error`. A failure to record is logged and
/// does not change the result.
///
/// # Errors
/// As [`verify_store`].
pub async fn verify_and_record(
    store: &Store,
    key: &VerifierKey,
    options: &VerifyOptions,
    by_whom: &str,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, AuditError> {
    let started_at = crate::ledger::Timestamp::now().to_string();
    let result = verify_store(store, key, options, progress).await;
    let (outcome, counts, detail) = match &result {
        Ok(r) => (
            "intact",
            (r.entries, r.checkpoints, r.signatures),
            r.root.clone(),
        ),
        Err(e @ (AuditError::Broken(_) | AuditError::Signature(_) | AuditError::State(_))) => {
            ("broken", (0, 0, 0), e.to_string())
        }
        Err(e) => ("error", (0, 0, 0), e.to_string()),
    };
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let run = crate::store::VerifyRun {
        started_at,
        finished_at: crate::ledger::Timestamp::now().to_string(),
        by_whom: by_whom.to_owned(),
        result: outcome.to_owned(),
        entries: as_i64(counts.0),
        checkpoints: as_i64(counts.1),
        signatures: as_i64(counts.2),
        detail: detail.chars().take(2000).collect(),
    };
    if let Err(e) = store.record_verify_run(&run).await {
        tracing::warn!(error = %e, "the verification's outcome could not be recorded in verify_runs");
    }
    result
}

/// Whether a full verification started by the server (the console's
/// "Verify now" or the schedule) is running: one at a time.
pub static VERIFYING: AtomicBool = AtomicBool::new(false);

/// The problem of the last `security.verification.failed` this process
/// recorded.
static LAST_ALERT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Claims [`VERIFYING`]; `None` when a verification already runs. The
/// claim ends when the guard drops.
pub fn claim_verification() -> Option<VerificationClaim> {
    VERIFYING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .ok()
        .map(|_| VerificationClaim)
}

/// Holds [`VERIFYING`] until dropped.
#[derive(Debug)]
pub struct VerificationClaim;

impl Drop for VerificationClaim {
    fn drop(&mut self) {
        VERIFYING.store(false, Ordering::Release);
    }
}

/// [`verify_and_record`], and when the ledger or what is derived from it
/// is not intact, a `security.verification.failed` entry with the first
/// problem, appended by Trailmark: the failure is on the record, not only
/// in a log. An error that is not a verdict (the database failed) is
/// logged and not recorded.
///
/// # Errors
/// As [`verify_store`].
pub async fn verify_and_alert(
    store: &Store,
    key: &VerifierKey,
    sequencer: &SequencerHandle,
    options: &VerifyOptions,
    by_whom: &str,
) -> Result<VerifyReport, AuditError> {
    let result = verify_and_record(store, key, options, by_whom, |_| {}).await;
    let class = match &result {
        Err(AuditError::Broken(_)) => "entries",
        Err(AuditError::Signature(_)) => "signatures",
        Err(AuditError::State(_)) => "derived state",
        Err(e) => {
            tracing::error!(error = %e, requested_by = by_whom, "a full verification could not finish");
            return result;
        }
        Ok(_) => return result,
    };
    let problem: String = result
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default()
        .chars()
        .take(2_000)
        .collect();
    tracing::error!(requested_by = by_whom, what = class, %problem, "VERIFICATION FAILED");
    {
        // The same problem found again (the schedule runs on while nobody
        // has mended it) is recorded once per process, not every interval.
        let mut last = LAST_ALERT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() == Some(problem.as_str()) {
            return result;
        }
        *last = Some(problem.clone());
    }
    let mut payload = serde_json::Map::new();
    payload.insert("requested_by".into(), by_whom.into());
    payload.insert("found_in".into(), class.into());
    payload.insert("problem".into(), problem.into());
    let request = AppendRequest {
        kind: &crate::ledger::kind::SECURITY_VERIFICATION_FAILED,
        actor: crate::ledger::Actor::system(),
        subject: crate::ledger::Subject::parse("ledger:verification").expect("a valid subject"),
        correlation_id: None,
        idempotency_key: None,
        parents: vec![],
        reason: None,
        payload,
        effects: vec![],
        parent_refs: vec![],
    };
    if let Err(e) = sequencer.append(request).await {
        tracing::error!(error = %e, "the failed verification could not be recorded in the ledger");
    }
    result
}

/// The server's scheduled verification: every `interval` (none when zero)
/// until `stop` turns true, skipped while another verification runs.
pub async fn run_schedule(
    store: Store,
    key: VerifierKey,
    sequencer: SequencerHandle,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if interval.is_zero() {
        return;
    }
    let options = VerifyOptions {
        check_canonical: true,
        external_checkpoint: None,
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(_claim) = claim_verification() else {
            continue;
        };
        let _ = verify_and_alert(&store, &key, &sequencer, &options, "system:schedule").await;
    }
}

/// Options of [`verify_store`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also require every entry's bytes to be RFC 8785 canonical.
    pub check_canonical: bool,
    /// A signed checkpoint note kept outside the database.
    pub external_checkpoint: Option<String>,
}

/// Streams the whole stored ledger through every check of docs/FORMAT.md §5.
/// `progress` is called with the number of entries checked so far.
///
/// # Errors
/// [`AuditError::Broken`] with the first bad seq, or a read failure.
pub async fn verify_store(
    store: &Store,
    key: &VerifierKey,
    options: &VerifyOptions,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let external = open_saved_checkpoint(key, options)?;
    let mut walk = Walk::start(store, key, options, external).await?;
    walk.stream(&mut progress).await?;
    // The state tables, read in one snapshot; entries a running server
    // appended meanwhile are verified and projected first, so the state
    // is compared at the size it belongs to.
    let snapshot = store.state_snapshot(crate::projection::TABLES).await?;
    walk.catch_up(snapshot.size, &mut progress).await?;
    walk.finish(&snapshot.tables, started).await
}

/// The checkpoint saved outside the database, opened with the key.
fn open_saved_checkpoint(
    key: &VerifierKey,
    options: &VerifyOptions,
) -> Result<Option<Checkpoint>, AuditError> {
    options
        .external_checkpoint
        .as_deref()
        .map(|note| {
            Checkpoint::open(note, key).map_err(|e| {
                AuditError::Input(format!(
                    "the saved checkpoint does not verify with {}: {e}",
                    key.to_text()
                ))
            })
        })
        .transpose()
}

/// The state of one [`verify_store`] run as pages of entries pass through.
struct Walk<'a> {
    store: &'a Store,
    verifier: ChainVerifier,
    signatures: SignatureChecker,
    projector: Projector,
    /// The first problem in what is derived from the entries (an entry the
    /// projection cannot replay, the parent index, tree nodes), reported
    /// after the entry checks.
    derived: Option<StateMismatch>,
    checkpoints: std::iter::Peekable<std::vec::IntoIter<crate::store::StoredCheckpoint>>,
    checkpoint_count: u64,
    last_checkpoint_size: u64,
    last_seq: Option<u64>,
    external: Option<Checkpoint>,
}

impl<'a> Walk<'a> {
    /// A walk from entry 0, with the first page of stored checkpoints.
    async fn start(
        store: &'a Store,
        key: &VerifierKey,
        options: &VerifyOptions,
        external: Option<Checkpoint>,
    ) -> Result<Walk<'a>, AuditError> {
        Ok(Walk {
            store,
            verifier: ChainVerifier::new(key.clone(), options.check_canonical)
                .collecting_nodes()
                .checking_writers(),
            signatures: SignatureChecker::default(),
            projector: Projector::default(),
            derived: None,
            // Checkpoints, ascending by size, fetched page by page.
            checkpoints: store
                .checkpoints_page(0, STREAM_PAGE_ROWS)
                .await?
                .into_iter()
                .peekable(),
            checkpoint_count: 0,
            last_checkpoint_size: 0,
            last_seq: None,
            external,
        })
    }

    /// Every page of the stored ledger, prefetched in two stages: while one
    /// page is checked, the next page's derived rows (parent index, tree
    /// nodes) are read, and the page after it. Measured on 1M entries: the
    /// entries' read takes 4.2 s and the derived rows 1.4 s; one after the
    /// other the reader bounded verify.
    async fn stream(&mut self, progress: &mut impl FnMut(u64)) -> Result<(), AuditError> {
        let (rows_tx, mut rows_rx) =
            tokio::sync::mpsc::channel::<Result<Vec<VerifyRow>, StoreError>>(2);
        let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel::<Result<Page, StoreError>>(2);
        let reader_store = self.store.clone();
        let reader = tokio::spawn(async move {
            let mut from = 0u64;
            loop {
                let rows = reader_store.verify_page(from, STREAM_PAGE_ROWS).await;
                let last = match &rows {
                    Ok(rows) => rows.last().map(|r| r.seq),
                    Err(_) => None,
                };
                if rows_tx.send(rows).await.is_err() {
                    break;
                }
                match last {
                    Some(last) => from = last + 1,
                    None => break,
                }
            }
        });
        let deriver_store = self.store.clone();
        let deriver = tokio::spawn(async move {
            while let Some(rows) = rows_rx.recv().await {
                let page = match rows {
                    Ok(rows) => Page::derive(&deriver_store, rows).await,
                    Err(e) => Err(e),
                };
                let stop = page.as_ref().map_or(true, |p| p.rows.is_empty());
                if pages_tx.send(page).await.is_err() || stop {
                    break;
                }
            }
        });
        while let Some(page) = pages_rx.recv().await {
            let page = page?;
            if page.rows.is_empty() {
                break;
            }
            self.page(&page).await?;
            progress(self.verifier.size());
        }
        drop(pages_rx);
        for task in [reader, deriver] {
            task.await
                .map_err(|e| AuditError::Input(format!("the reader task failed: {e}")))?;
        }
        Ok(())
    }

    /// The entries appended after the stream ended, up to `size`.
    async fn catch_up(
        &mut self,
        size: u64,
        progress: &mut impl FnMut(u64),
    ) -> Result<(), AuditError> {
        while self.verifier.size() < size {
            let from = self.verifier.size();
            let limit =
                u32::try_from(size - from).map_or(STREAM_PAGE_ROWS, |n| n.min(STREAM_PAGE_ROWS));
            let page = Page::read(self.store, from, limit).await?;
            if page.rows.is_empty() {
                break;
            }
            self.page(&page).await?;
            progress(self.verifier.size());
        }
        Ok(())
    }

    /// The checks after the last entry: a stored checkpoint beyond it, the
    /// saved checkpoint's consistency, the head's seal over what no
    /// checkpoint attests yet; then what is derived from the entries, and
    /// the state tables (`stored`) against their projection. The report
    /// counts the seconds since `started`.
    async fn finish(
        self,
        stored: &[Vec<Vec<crate::store::Cell>>],
        started: Instant,
    ) -> Result<VerifyReport, AuditError> {
        let Walk {
            store,
            verifier,
            signatures,
            projector,
            derived,
            mut checkpoints,
            checkpoint_count,
            last_checkpoint_size,
            last_seq,
            external,
        } = self;
        let entries = verifier.size();
        if let Some(cp) = checkpoints.next() {
            // A checkpoint beyond the entries streamed: either the ledger grew
            // while it was being verified (a running server appended and signed),
            // or entries were removed. Only the current size can tell.
            let size = verifier
                .open_checkpoint(&cp.note, Some((cp.size, &cp.root)))?
                .size;
            if store.size().await? < size {
                return Err(VerifyError::Truncated { entries, size }.into());
            }
        }
        if let Some(ext) = &external {
            if ext.size > entries {
                return Err(VerifyError::Truncated {
                    entries,
                    size: ext.size,
                }
                .into());
            }
            let plan = ProofPlan::consistency(ext.size, entries)
                .map_err(|e| AuditError::Input(e.to_string()))?;
            let proof = store.proof(&plan, &HashMap::new()).await?;
            merkle::verify_consistency(ext.size, entries, &ext.root, &verifier.root(), &proof)
                .map_err(|e| VerifyError::Checkpoint { size: ext.size, problem: format!("the stored tree has no valid consistency proof from the saved checkpoint to the head: {e}") })?;
        }
        let mut pending = 0;
        if last_checkpoint_size < entries {
            // Not yet in a published checkpoint: the head's batch seal must cover them.
            let head_seal = match last_seq.and_then(Seq::new) {
                Some(seq) => store.entry(seq).await?.and_then(|e| e.seal),
                None => None,
            };
            verifier.check_seal(head_seal.as_deref())?;
            pending = entries - last_checkpoint_size;
        }
        // What is derived from the entries is judged only once the entries
        // themselves passed, so a forged entry is named as such first.
        if let Some(problem) = derived {
            return Err(problem.into());
        }
        let state_rows = projector.compare(stored)?;
        Ok(VerifyReport {
            entries,
            state_rows,
            checkpoints: checkpoint_count,
            signatures: signatures.checked,
            root: verifier.root().to_hex(),
            pending_unattested: pending,
            external_checkpoint: external.map(|c| c.size),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Every check of one page, the next in seq order: the entries (on all
    /// cores, then in order), the signatures, the projection, the stored
    /// checkpoints the page reaches, the saved checkpoint, and the page's
    /// parent index and tree nodes.
    async fn page(&mut self, page: &Page) -> Result<(), AuditError> {
        let mut parent_refs: Vec<(u64, Hash)> = Vec::new();
        let prechecked = precheck_page(&self.verifier, &page.rows);
        for (row, pre) in page.rows.iter().zip(prechecked) {
            let verified = self.verifier.apply(row.seq, pre)?;
            if SignatureChecker::is_relevant(verified.kind.name) {
                self.signatures.observe(row.seq, &row.canonical)?;
            }
            if let Err(problem) = project(&mut self.projector, row, &verified) {
                self.derived.get_or_insert(problem);
            }
            parent_refs.extend(verified.parents.iter().map(|p| (verified.seq, *p)));
            self.checkpoints_here().await?;
            if let Some(ext) = &self.external
                && ext.size == self.verifier.size()
                && ext.root != self.verifier.root()
            {
                return Err(VerifyError::RootMismatch {
                    size: ext.size,
                    signed: ext.root.to_hex(),
                    computed: self.verifier.root().to_hex(),
                }
                .into());
            }
        }
        self.last_seq = page.rows.last().map(|r| r.seq);
        let found =
            check_derived_indexes(self.store, &mut self.verifier, page, parent_refs).await?;
        self.derived = self.derived.take().or(found);
        Ok(())
    }

    /// Checks every stored checkpoint of the size verified so far.
    async fn checkpoints_here(&mut self) -> Result<(), AuditError> {
        while let Some(cp) = self.checkpoints.peek() {
            if cp.size > self.verifier.size() {
                break;
            }
            let cp = self.checkpoints.next().expect("peeked");
            self.verifier
                .check_checkpoint_here(&cp.note, Some((cp.size, &cp.root)))?;
            self.checkpoint_count += 1;
            self.last_checkpoint_size = cp.size;
            if self.checkpoints.peek().is_none() {
                self.checkpoints = self
                    .store
                    .checkpoints_page(cp.size, STREAM_PAGE_ROWS)
                    .await?
                    .into_iter()
                    .peekable();
            }
        }
        Ok(())
    }
}

/// Feeds an entry of a projected kind to the projector.
fn project(
    projector: &mut Projector,
    row: &VerifyRow,
    verified: &crate::ledger::verify::Verified,
) -> Result<(), StateMismatch> {
    if !Projector::reads(verified.kind.name) {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_slice(&row.canonical).map_err(|e| StateMismatch::Unprojectable {
            seq: row.seq,
            problem: e.to_string(),
        })?;
    projector.apply(&EntryView {
        seq: row.seq,
        hash: verified.hash,
        recorded_at: value["recorded_at"].as_str().unwrap_or_default(),
        kind: verified.kind.name,
        subject: value["subject"].as_str().unwrap_or_default(),
        correlation_id: value["correlation_id"].as_str(),
        idempotency_key: value["idempotency_key"].as_str(),
        parents: &verified.parents,
        payload: &value["payload"],
    })
}

/// A page of entries with what the store derived from them: the parent
/// index rows of its seqs and the interior tree nodes its leaves complete.
struct Page {
    rows: Vec<VerifyRow>,
    /// `(seq, parent_seq, position)`, by seq and position.
    parents: Vec<(u64, u64, i64)>,
    /// `(level, index)` to stored hash.
    nodes: HashMap<(u8, u64), Hash>,
}

impl Page {
    /// Reads up to `limit` entries from `from` and what they derive.
    async fn read(store: &Store, from: u64, limit: u32) -> Result<Page, StoreError> {
        Page::derive(store, store.verify_page(from, limit).await?).await
    }

    /// `rows` with their parent index rows and, level by level, the stored
    /// nodes that leaves `first..=last` complete: node `(l, i)` completes at
    /// leaf `(i + 1) * 2^l - 1`, so on each level they are one contiguous
    /// range of the primary key.
    async fn derive(store: &Store, rows: Vec<VerifyRow>) -> Result<Page, StoreError> {
        let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
        else {
            return Ok(Page {
                rows,
                parents: Vec::new(),
                nodes: HashMap::new(),
            });
        };
        let parents = store.parent_index(first, last + 1).await?;
        let mut ranges = Vec::new();
        for level in 1..64u8 {
            let width = 1u64 << level;
            if width > last + 1 {
                break;
            }
            let low = (first + 1).div_ceil(width) - 1;
            let high = (last + 1) / width;
            if low < high {
                ranges.push((level, low, high));
            }
        }
        let nodes = store.node_ranges(&ranges).await?;
        Ok(Page {
            rows,
            parents,
            nodes,
        })
    }
}

/// The checks of a page against the store's derived indexes: every parent
/// exists earlier (`parent_refs`, child and parent hash), the parent index
/// holds exactly the entries' parents in order, and every interior tree
/// node the page completed is stored with the hash the entries give.
async fn check_derived_indexes(
    store: &Store,
    verifier: &mut ChainVerifier,
    page: &Page,
    parent_refs: Vec<(u64, Hash)>,
) -> Result<Option<StateMismatch>, AuditError> {
    let mut expected: Vec<(u64, u64, i64)> = Vec::with_capacity(parent_refs.len());
    if !parent_refs.is_empty() {
        let hashes: Vec<Hash> = parent_refs.iter().map(|(_, h)| *h).collect();
        let found = store.seqs_of(&hashes).await?;
        let mut position = 0i64;
        let mut previous_child = None;
        for (child, parent) in parent_refs {
            match found.get(&parent) {
                Some(seq) if seq.get() < child => {
                    if previous_child != Some(child) {
                        position = 0;
                        previous_child = Some(child);
                    }
                    expected.push((child, seq.get(), position));
                    position += 1;
                }
                _ => {
                    return Err(VerifyError::BadParent {
                        seq: child,
                        parent: parent.to_hex(),
                    }
                    .into());
                }
            }
        }
    }
    let stored = &page.parents;
    if *stored != expected {
        let seq = first_difference(stored, &expected);
        let of = |rows: &[(u64, u64, i64)]| {
            let parents: Vec<String> = rows
                .iter()
                .filter(|r| r.0 == seq)
                .map(|r| format!("{}@{}", r.1, r.2))
                .collect();
            format!("[{}]", parents.join(", "))
        };
        return Ok(Some(StateMismatch::ParentIndex {
            seq,
            stored: of(stored),
            expected: of(&expected),
        }));
    }
    for (id, hash, seq) in verifier.take_nodes() {
        let found = page.nodes.get(&(id.level, id.index));
        if found != Some(&hash) {
            return Ok(Some(StateMismatch::TreeNode {
                level: id.level,
                index: id.index,
                stored: found.map_or_else(
                    || "missing".to_owned(),
                    |h| format!("stored {}", h.to_hex()),
                ),
                expected: hash.to_hex(),
                seq,
            }));
        }
    }
    Ok(None)
}

/// The child seq of the first row where two parent-index listings differ.
fn first_difference(stored: &[(u64, u64, i64)], expected: &[(u64, u64, i64)]) -> u64 {
    stored
        .iter()
        .zip(expected)
        .find(|(a, b)| a != b)
        .map(|(a, b)| a.0.min(b.0))
        .or_else(|| stored.get(expected.len()).map(|r| r.0))
        .or_else(|| expected.get(stored.len()).map(|r| r.0))
        .unwrap_or_default()
}

/// Runs the per-entry checks of a page on all cores (they need no other
/// entry); the caller applies the results in seq order. Measured: the checks
/// alone run at ~380k entries/s on one core, below the read rate.
fn precheck_page(
    verifier: &ChainVerifier,
    page: &[VerifyRow],
) -> Vec<Result<Prechecked, VerifyError>> {
    let check = |row: &VerifyRow| {
        let (hash, index) = row.hash_and_index();
        verifier.precheck(row.seq, Some(hash), &row.canonical, Some(index))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || page.len() < 1_024 {
        return page.iter().map(check).collect();
    }
    let chunk = page.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = page.chunks(chunk);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
            .collect();
        let mut out: Vec<_> = first.iter().map(check).collect();
        for handle in others {
            out.extend(handle.join().expect("a precheck thread panicked"));
        }
        out
    })
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Entries written (the checkpoint's size).
    pub entries: u64,
    /// Bytes of `entries.jsonl`.
    pub bytes: u64,
    /// The directory.
    pub dir: PathBuf,
}

/// Writes the complete electronic copy (docs/FORMAT.md §4): the entries the
/// newest checkpoint attests, the checkpoint and the verifier key.
///
/// # Errors
/// A read or write failure, or an empty ledger.
pub async fn export(
    store: &Store,
    key: &VerifierKey,
    dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<ExportReport, AuditError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let cp = store.latest_checkpoint().await?.ok_or_else(|| {
        AuditError::Input("the ledger has no checkpoint; run `trailmark init`".into())
    })?;
    let path = dir.join("entries.jsonl");
    let file = fs::File::create(&path).map_err(io(&path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let (mut next, mut bytes) = (0u64, 0u64);
    while next < cp.size {
        let page = store.canonical_page(next, STREAM_PAGE_ROWS).await?;
        if page.is_empty() {
            return Err(VerifyError::Truncated {
                entries: next,
                size: cp.size,
            }
            .into());
        }
        for (seq, canonical) in page.into_iter().take_while(|(seq, _)| *seq < cp.size) {
            if seq != next {
                return Err(VerifyError::Gap {
                    expected: next,
                    found: seq,
                }
                .into());
            }
            out.write_all(&canonical).map_err(io(&path))?;
            out.write_all(b"\n").map_err(io(&path))?;
            bytes += canonical.len() as u64 + 1;
            next += 1;
        }
        progress(next);
    }
    let file = out.into_inner().map_err(|e| AuditError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(&path))?;
    let cp_path = dir.join("checkpoint");
    fs::write(&cp_path, &cp.note).map_err(io(&cp_path))?;
    let key_path = dir.join("verifier-key");
    fs::write(&key_path, format!("{}\n", key.to_text())).map_err(io(&key_path))?;
    Ok(ExportReport {
        entries: cp.size,
        bytes,
        dir: dir.to_owned(),
    })
}

/// Reads a verifier key given as the key text or as a file holding it.
///
/// # Errors
/// If neither parses.
pub fn read_verifier_key(arg: &str) -> Result<VerifierKey, AuditError> {
    let text = if Path::new(arg).is_file() {
        fs::read_to_string(arg).map_err(io(Path::new(arg)))?
    } else {
        arg.to_owned()
    };
    VerifierKey::parse(text.trim()).map_err(|e| AuditError::Input(format!("--key: {e}")))
}

/// The inspector's check of an export directory, needing nothing else but
/// the verifier key obtained out of band.
///
/// Memory: a set of entry hashes (for the parents check) grows with the
/// ledger, about 48 bytes an entry; everything else is constant.
///
/// # Errors
/// [`AuditError::Broken`] with the first bad seq, or a missing file.
pub fn verify_export(
    dir: &Path,
    key: &VerifierKey,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, AuditError> {
    let started = Instant::now();
    let key_path = dir.join("verifier-key");
    let shipped = fs::read_to_string(&key_path).map_err(io(&key_path))?;
    if shipped.trim() != key.to_text() {
        return Err(AuditError::Input(format!(
            "the export's verifier-key ({}) is not the key you trust ({}): do not accept this export",
            shipped.trim(),
            key.to_text()
        )));
    }
    let cp_path = dir.join("checkpoint");
    let note = fs::read_to_string(&cp_path).map_err(io(&cp_path))?;
    let mut verifier = ChainVerifier::new(key.clone(), true);
    let mut signatures = SignatureChecker::default();
    let checkpoint = verifier.open_checkpoint(&note, None)?;
    let path = dir.join("entries.jsonl");
    let reader = BufReader::with_capacity(1 << 20, fs::File::open(&path).map_err(io(&path))?);
    let mut seen: HashSet<Hash> = HashSet::new();
    let mut line = Vec::new();
    let mut reader = reader;
    let mut seq = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            return Err(VerifyError::Malformed {
                seq,
                problem:
                    "the last line of entries.jsonl does not end with a newline (the file was cut)"
                        .into(),
            }
            .into());
        }
        let verified = verifier.push(seq, None, &line[..line.len() - 1], None)?;
        if SignatureChecker::is_relevant(verified.kind.name) {
            signatures.observe(seq, &line[..line.len() - 1])?;
        }
        for parent in &verified.parents {
            if !seen.contains(parent) {
                return Err(VerifyError::BadParent {
                    seq,
                    parent: parent.to_hex(),
                }
                .into());
            }
        }
        seen.insert(verified.hash);
        seq += 1;
        if seq.is_multiple_of(65_536) {
            progress(seq);
        }
    }
    progress(seq);
    if checkpoint.size > seq {
        return Err(VerifyError::Truncated {
            entries: seq,
            size: checkpoint.size,
        }
        .into());
    }
    if checkpoint.size < seq {
        return Err(VerifyError::Unattested {
            from: checkpoint.size,
            to: seq - 1,
        }
        .into());
    }
    verifier.check_checkpoint_here(&note, None)?;
    Ok(VerifyReport {
        entries: seq,
        // An export holds entries only; there is no state to replay.
        state_rows: 0,
        checkpoints: 1,
        signatures: signatures.checked,
        root: verifier.root().to_hex(),
        pending_unattested: 0,
        external_checkpoint: None,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The portable inclusion proof of docs/FORMAT.md §2.1.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// `trailmark-inclusion-proof-v1`.
    pub format: String,
    /// The entry's canonical bytes.
    pub entry: String,
    /// Its seq.
    pub leaf_index: u64,
    /// The tree the proof is for.
    pub tree_size: u64,
    /// The entry's hash (hex).
    pub leaf_hash: String,
    /// RFC 9162 inclusion path (hex), leaf to root.
    pub path: Vec<String>,
    /// A signed checkpoint of exactly `tree_size`, when one exists.
    pub checkpoint: Option<String>,
}

/// Why an inclusion proof cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofRequestError {
    /// The parameters are out of range.
    #[error("{0}")]
    OutOfRange(String),
    /// Entry missing or not yet covered by a checkpoint.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the inclusion proof of `seq` in the tree of `size`, or (without a
/// size) in the smallest signed checkpoint that covers it.
///
/// # Errors
/// See [`ProofRequestError`].
pub async fn inclusion_proof(
    store: &Store,
    seq: Seq,
    size: Option<u64>,
) -> Result<InclusionProof, ProofRequestError> {
    let tree = store.size().await?;
    let (size, checkpoint) = match size {
        Some(size) => {
            if size > tree || seq.get() >= size {
                return Err(ProofRequestError::OutOfRange(format!(
                    "need seq < size <= {tree} (the ledger's size), got seq {seq} size {size}"
                )));
            }
            (
                size,
                store
                    .checkpoint_at_least(size)
                    .await?
                    .filter(|c| c.size == size)
                    .map(|c| c.note),
            )
        }
        None => {
            let cp = store.checkpoint_at_least(seq.size()).await?.ok_or_else(|| {
                ProofRequestError::NotFound(format!("entry {seq} does not exist or is not covered by a signed checkpoint yet; retry in a moment"))
            })?;
            (cp.size, Some(cp.note))
        }
    };
    let entry = store
        .entry(seq)
        .await?
        .ok_or_else(|| ProofRequestError::NotFound(format!("there is no entry {seq}")))?;
    let plan = ProofPlan::inclusion(seq.get(), size)
        .map_err(|e| ProofRequestError::OutOfRange(e.to_string()))?;
    let path = store.proof(&plan, &HashMap::new()).await?;
    Ok(InclusionProof {
        format: "trailmark-inclusion-proof-v1".into(),
        entry: String::from_utf8(entry.canonical)
            .map_err(|e| StoreError::Corrupt(format!("entry {seq} is not UTF-8: {e}")))?,
        leaf_index: seq.get(),
        tree_size: size,
        leaf_hash: hex::encode(entry.hash),
        path: path.iter().map(Hash::to_hex).collect(),
        checkpoint,
    })
}

/// Why a portable inclusion proof does not check; each names the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionProofError {
    /// `leaf_hash` is not the hash of the entry's bytes.
    #[error("the entry's bytes do not hash to leaf_hash")]
    LeafHash,
    /// The entry does not parse.
    #[error("{0}")]
    Unparsable(EntryError),
    /// The entry parses but breaks a field rule.
    #[error("the entry is not valid: {0}")]
    InvalidEntry(EntryError),
    /// The entry's bytes are not RFC 8785 canonical.
    #[error("the entry's bytes are not RFC 8785 canonical")]
    NotCanonical,
    /// The entry's seq is not the proof's leaf index.
    #[error("the entry is seq {seq}, the proof says leaf {leaf}")]
    WrongLeaf {
        /// The entry's own seq.
        seq: u64,
        /// The proof's `leaf_index`.
        leaf: u64,
    },
    /// No checkpoint to check the root against.
    #[error("the proof carries no checkpoint")]
    NoCheckpoint,
    /// The checkpoint does not open with the verifier key.
    #[error("{0}")]
    Checkpoint(NoteError),
    /// The checkpoint is for another tree size.
    #[error("the checkpoint is for size {checkpoint}, the proof for {proof}")]
    SizeMismatch {
        /// The checkpoint's size.
        checkpoint: u64,
        /// The proof's `tree_size`.
        proof: u64,
    },
    /// A path element is not a hash.
    #[error("{0}")]
    PathHash(HashError),
    /// The path does not lead to the checkpoint's root.
    #[error("{0}")]
    Path(merkle::ProofError),
}

/// Checks a portable inclusion proof offline (docs/FORMAT.md §2.1).
///
/// # Errors
/// The check that failed.
pub fn check_inclusion_proof(
    proof: &InclusionProof,
    key: &VerifierKey,
) -> Result<(), InclusionProofError> {
    let leaf = merkle::leaf_hash(proof.entry.as_bytes());
    if leaf.to_hex() != proof.leaf_hash {
        return Err(InclusionProofError::LeafHash);
    }
    let parsed = crate::ledger::entry::ParsedEntry::parse(proof.entry.as_bytes())
        .map_err(InclusionProofError::Unparsable)?;
    parsed.check().map_err(InclusionProofError::InvalidEntry)?;
    if !crate::ledger::entry::is_canonical(proof.entry.as_bytes()) {
        return Err(InclusionProofError::NotCanonical);
    }
    if parsed.seq != proof.leaf_index {
        return Err(InclusionProofError::WrongLeaf {
            seq: parsed.seq,
            leaf: proof.leaf_index,
        });
    }
    let note = proof
        .checkpoint
        .as_deref()
        .ok_or(InclusionProofError::NoCheckpoint)?;
    let cp = Checkpoint::open(note, key).map_err(InclusionProofError::Checkpoint)?;
    if cp.size != proof.tree_size {
        return Err(InclusionProofError::SizeMismatch {
            checkpoint: cp.size,
            proof: proof.tree_size,
        });
    }
    let path = proof
        .path
        .iter()
        .map(|h| Hash::parse_hex(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(InclusionProofError::PathHash)?;
    merkle::verify_inclusion(proof.leaf_index, proof.tree_size, &leaf, &path, &cp.root)
        .map_err(InclusionProofError::Path)
}
