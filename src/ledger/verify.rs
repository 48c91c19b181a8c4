//! Streaming verification of a ledger: entries are fed in seq order and
//! checked one at a time against `docs/FORMAT.md` §5, with O(log n) memory
//! (a tree frontier, the previous hash and time). The same checker serves the
//! database (`trailmark verify`) and an export (`trailmark verify-export`).

use super::Timestamp;
use super::entry::{self, ParsedEntry};
use super::hash::Hash;
use super::kind::{Class, WriterError, Writers, check_writer};
use super::merkle::{self, Frontier, NodeId};
use super::note::{Checkpoint, VerifierKey};
use super::seq::Seq;

/// The first thing found wrong, with the seq where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An entry is missing: the next one has a higher seq.
    #[error("seq {expected}: entry is missing (the next stored entry is seq {found})")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
    /// The entry's bytes do not hash to the stored hash.
    #[error(
        "seq {seq}: the entry's bytes hash to {computed}, but {stored} is stored: the entry was changed"
    )]
    HashMismatch {
        /// Where.
        seq: u64,
        /// Stored hash.
        stored: String,
        /// Recomputed hash.
        computed: String,
    },
    /// `prev` does not name the previous entry.
    #[error(
        "seq {seq}: `prev` is {found} but the previous entry's hash is {expected}: the chain is broken"
    )]
    ChainBroken {
        /// Where.
        seq: u64,
        /// Hash of the previous entry.
        expected: String,
        /// `prev` found.
        found: String,
    },
    /// The entry is not a valid entry.
    #[error("seq {seq}: {problem}")]
    Malformed {
        /// Where.
        seq: u64,
        /// What.
        problem: String,
    },
    /// The entry's own `seq` is not its position.
    #[error(
        "seq {position}: the entry says it is seq {claimed}: entries were reordered or replaced"
    )]
    WrongPosition {
        /// Position in the stream.
        position: u64,
        /// `seq` inside the entry.
        claimed: u64,
    },
    /// `recorded_at` went backwards.
    #[error("seq {seq}: recorded_at {found} is earlier than the previous entry's {previous}")]
    TimeWentBack {
        /// Where.
        seq: u64,
        /// Previous time.
        previous: String,
        /// This time.
        found: String,
    },
    /// A database index column disagrees with the entry's bytes.
    #[error(
        "seq {seq}: the `{column}` column holds {stored:?} but the entry says {entry:?}: the database row was changed"
    )]
    IndexMismatch {
        /// Where.
        seq: u64,
        /// Which column.
        column: &'static str,
        /// Stored value.
        stored: String,
        /// Value in the entry.
        entry: String,
    },
    /// A parent is not an earlier entry.
    #[error("seq {seq}: parent {parent} is not an earlier entry of this ledger")]
    BadParent {
        /// Where.
        seq: u64,
        /// The parent hash.
        parent: String,
    },
    /// Entry 0 is not a valid genesis for this key.
    #[error("seq 0: {0}")]
    Genesis(String),
    /// A checkpoint's signature or body fails.
    #[error("checkpoint of size {size}: {problem}")]
    Checkpoint {
        /// Its size.
        size: u64,
        /// What.
        problem: String,
    },
    /// A checkpoint's root is not the root of the entries.
    #[error(
        "checkpoint of size {size}: root {signed} is signed but the entries give {computed}: an entry before seq {size} was changed, removed or inserted"
    )]
    RootMismatch {
        /// Its size.
        size: u64,
        /// Signed root.
        signed: String,
        /// Computed root.
        computed: String,
    },
    /// The ledger has fewer entries than a checkpoint attests.
    #[error(
        "the ledger has {entries} entries but a signed checkpoint attests {size}: entries from seq {entries} on were removed (truncation)"
    )]
    Truncated {
        /// Entries found.
        entries: u64,
        /// Checkpoint size.
        size: u64,
    },
    /// The newest entry lacks a valid batch seal.
    #[error(
        "seq {seq}: the newest entry carries no valid batch seal: it was not written by this ledger's sequencer (entries were added around the application)"
    )]
    Unsealed {
        /// The newest seq.
        seq: u64,
    },
    /// An entry breaks its kind's writer rule (FORMAT §1.3): an outcome
    /// only Trailmark writes, recorded by someone else.
    #[error("seq {seq}: {problem}")]
    Writer {
        /// Where.
        seq: u64,
        /// The rule and what the entry shows.
        problem: WriterError,
    },
    /// Entries beyond the newest checkpoint that no checkpoint attests.
    #[error("seq {from}..{to}: {count} entries are not covered by any signed checkpoint (the server signs one within its checkpoint interval; entries that stay unattested were added outside the ledger)", count = .to - .from + 1)]
    Unattested {
        /// First unattested seq.
        from: u64,
        /// Last unattested seq.
        to: u64,
    },
}

/// What one verified entry told the verifier (for the caller's own checks).
#[derive(Debug)]
pub struct Verified {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
    /// Its parents.
    pub parents: Vec<Hash>,
    /// Its kind.
    pub kind: &'static crate::ledger::kind::KindDef,
}

/// The six index columns in the order the store joins them.
pub const INDEX_COLUMNS: [&str; 6] = [
    "recorded_at",
    "kind",
    "actor",
    "subject",
    "correlation_id",
    "idempotency_key",
];

/// Appends the index columns' encoding to `out`: each value as
/// `<length in characters>:<value>`, a null as `-`. Unambiguous, and what
/// `Store::verify_page` computes in SQL from the stored columns.
pub fn encode_index(out: &mut String, values: [Option<&str>; 6]) {
    for value in values {
        match value {
            Some(v) => {
                // Decimal length without the formatting machinery (hot in `verify`).
                let mut n = if v.is_ascii() {
                    v.len()
                } else {
                    v.chars().count()
                };
                let mut digits = [0u8; 20];
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                out.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
                out.push(':');
                out.push_str(v);
            }
            None => out.push('-'),
        }
    }
}

/// Decodes [`encode_index`]; `None` if the text is not such an encoding.
pub fn decode_index(text: &str) -> Option<Vec<Option<String>>> {
    let mut rest = text;
    let mut out = Vec::with_capacity(6);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('-') {
            out.push(None);
            rest = r;
            continue;
        }
        let (len, r) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let end = r.char_indices().nth(len).map_or(r.len(), |(i, _)| i);
        if r[..end].chars().count() != len {
            return None;
        }
        out.push(Some(r[..end].to_owned()));
        rest = &r[end..];
    }
    (out.len() == 6).then_some(out)
}

fn index_mismatch(seq: u64, stored: &str, expected: &str) -> VerifyError {
    let (stored_values, entry_values) = (decode_index(stored), decode_index(expected));
    if let (Some(s), Some(e)) = (&stored_values, &entry_values) {
        for (i, column) in INDEX_COLUMNS.iter().enumerate() {
            if s[i] != e[i] {
                return VerifyError::IndexMismatch {
                    seq,
                    column,
                    stored: s[i].clone().unwrap_or_else(|| "NULL".into()),
                    entry: e[i].clone().unwrap_or_else(|| "null".into()),
                };
            }
        }
    }
    VerifyError::IndexMismatch {
        seq,
        column: "index columns",
        stored: stored.to_owned(),
        entry: expected.to_owned(),
    }
}

/// The result of [`ChainVerifier::precheck`]: what the sequential checks need.
#[derive(Debug)]
pub struct Prechecked {
    hash: Hash,
    fields: entry::CheckedFields,
}

/// The streaming checker.
pub struct ChainVerifier {
    key: VerifierKey,
    check_canonical: bool,
    next: u64,
    prev: Hash,
    prev_time: Option<Timestamp>,
    frontier: Frontier,
    /// Interior nodes completed since the last [`ChainVerifier::take_nodes`],
    /// with the seq whose leaf completed each; kept only when asked for.
    completed: Option<Vec<(NodeId, Hash, u64)>>,
    /// Whether the writer rule of each kind is checked (FORMAT §1.3).
    check_writers: bool,
}

impl ChainVerifier {
    /// A checker for a ledger signed by `key`. With `check_canonical`, every
    /// entry's bytes must also be exactly RFC 8785 (slower; `verify` does it).
    pub fn new(key: VerifierKey, check_canonical: bool) -> ChainVerifier {
        ChainVerifier {
            key,
            check_canonical,
            next: 0,
            prev: Hash::ZERO,
            prev_time: None,
            frontier: Frontier::default(),
            completed: None,
            check_writers: false,
        }
    }

    /// Also checks each entry against its kind's writer rule (docs/FORMAT.md
    /// §1.3): rules and delivery outcomes by Trailmark's own actors, source
    /// facts with their envelope. `trailmark verify` does.
    pub fn checking_writers(mut self) -> ChainVerifier {
        self.check_writers = true;
        self
    }

    /// Also collects the interior tree nodes (level >= 1) each entry
    /// completes, for comparison with a stored tree; drain them with
    /// [`ChainVerifier::take_nodes`] after each page.
    pub fn collecting_nodes(mut self) -> ChainVerifier {
        self.completed = Some(Vec::new());
        self
    }

    /// The nodes completed since the last call: `(node, hash, seq)`.
    pub fn take_nodes(&mut self) -> Vec<(NodeId, Hash, u64)> {
        self.completed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Entries checked so far.
    pub fn size(&self) -> u64 {
        self.next
    }

    /// Root of the entries checked so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Checks the next entry. `stored_seq` and `stored_hash_hex` are what
    /// the database claims (for an export: the line number and `None`);
    /// `index` is the database's encoded index columns, if any.
    ///
    /// # Errors
    /// The first rule this entry breaks.
    pub fn push(
        &mut self,
        stored_seq: u64,
        stored_hash_hex: Option<&str>,
        canonical: &[u8],
        index: Option<&str>,
    ) -> Result<Verified, VerifyError> {
        let pre = self.precheck(stored_seq, stored_hash_hex, canonical, index);
        self.apply(stored_seq, pre)
    }

    /// The checks of one entry that need no other entry: hash, fields,
    /// index columns, canonical form, genesis. Pure, so callers may run it
    /// for many entries in parallel and then [`ChainVerifier::apply`] the
    /// results in seq order.
    ///
    /// # Errors
    /// The first rule this entry breaks on its own.
    pub fn precheck(
        &self,
        stored_seq: u64,
        stored_hash_hex: Option<&str>,
        canonical: &[u8],
        index: Option<&str>,
    ) -> Result<Prechecked, VerifyError> {
        let position = stored_seq;
        let hash = merkle::leaf_hash(canonical);
        if let Some(stored) = stored_hash_hex {
            let mut computed = [0u8; 64];
            hex::encode_to_slice(hash.as_bytes(), &mut computed).expect("64 bytes hold 32 in hex");
            if stored.as_bytes() != computed {
                return Err(VerifyError::HashMismatch {
                    seq: position,
                    stored: stored.to_owned(),
                    computed: hash.to_hex(),
                });
            }
        }
        let malformed = |problem: String| VerifyError::Malformed {
            seq: position,
            problem,
        };
        let parsed = ParsedEntry::parse(canonical).map_err(|e| malformed(e.to_string()))?;
        let fields = parsed.check().map_err(|e| malformed(e.to_string()))?;
        if let Some(stored) = index {
            let mut expected = String::with_capacity(stored.len());
            encode_index(
                &mut expected,
                [
                    Some(&parsed.recorded_at),
                    Some(&parsed.kind),
                    Some(&parsed.actor),
                    Some(&parsed.subject),
                    parsed.correlation_id.as_deref(),
                    parsed.idempotency_key.as_deref(),
                ],
            );
            if stored != expected {
                return Err(index_mismatch(position, stored, &expected));
            }
        }
        if self.check_canonical && !entry::is_canonical(canonical) {
            return Err(malformed(
                "the bytes are not in RFC 8785 canonical form".into(),
            ));
        }
        if fields.seq == Seq::GENESIS {
            self.check_genesis(&parsed, fields.kind.class)?;
        } else if fields.kind.class == Class::Genesis {
            return Err(malformed("only entry 0 may be a genesis entry".into()));
        }
        if self.check_writers {
            let payload = if fields.kind.writers == Writers::SourceEvents {
                serde_json::from_str(parsed.payload.get()).unwrap_or_default()
            } else {
                serde_json::Map::new()
            };
            check_writer(fields.kind, &parsed.actor, &payload).map_err(|problem| {
                VerifyError::Writer {
                    seq: position,
                    problem,
                }
            })?;
        }
        Ok(Prechecked { hash, fields })
    }

    /// The checks that need the entries before: position, chain, time, and
    /// the tree. Takes the [`ChainVerifier::precheck`] result of the entry
    /// stored at `stored_seq`, which must be the next one.
    ///
    /// # Errors
    /// A gap, the entry's own precheck failure, or a broken chain or clock.
    pub fn apply(
        &mut self,
        stored_seq: u64,
        pre: Result<Prechecked, VerifyError>,
    ) -> Result<Verified, VerifyError> {
        let position = self.next;
        if stored_seq != position {
            return Err(VerifyError::Gap {
                expected: position,
                found: stored_seq,
            });
        }
        let Prechecked { hash, fields } = pre?;
        if fields.seq.get() != position {
            return Err(VerifyError::WrongPosition {
                position,
                claimed: fields.seq.get(),
            });
        }
        if fields.prev != self.prev {
            return Err(VerifyError::ChainBroken {
                seq: position,
                expected: self.prev.to_hex(),
                found: fields.prev.to_hex(),
            });
        }
        if let Some(previous) = self.prev_time
            && fields.recorded_at < previous
        {
            return Err(VerifyError::TimeWentBack {
                seq: position,
                previous: previous.to_string(),
                found: fields.recorded_at.to_string(),
            });
        }
        match &mut self.completed {
            Some(nodes) => self
                .frontier
                .push_with(hash, |id, node| nodes.push((id, node, position))),
            None => self.frontier.push(hash),
        }
        self.prev = hash;
        self.prev_time = Some(fields.recorded_at);
        self.next += 1;
        Ok(Verified {
            seq: position,
            hash,
            parents: fields.parents,
            kind: fields.kind,
        })
    }

    fn check_genesis(&self, parsed: &ParsedEntry<'_>, class: Class) -> Result<(), VerifyError> {
        let fail = |m: String| Err(VerifyError::Genesis(m));
        if class != Class::Genesis {
            return fail(format!(
                "entry 0 is `{}`, not `ledger.genesis`",
                parsed.kind
            ));
        }
        if parsed.actor != "system:trailmark"
            || parsed.subject != format!("ledger:{}", self.key.name())
        {
            return fail(format!(
                "genesis must be by `system:trailmark` about `ledger:{}`",
                self.key.name()
            ));
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct GenesisPayload {
            origin: String,
            verifier_key: String,
            software: String,
        }
        let payload: GenesisPayload = serde_json::from_str(parsed.payload.get())
            .map_err(|e| VerifyError::Genesis(format!("payload: {e}")))?;
        if payload.origin != self.key.name() {
            return fail(format!(
                "origin `{}` is not the key's name `{}`",
                payload.origin,
                self.key.name()
            ));
        }
        if payload.verifier_key != self.key.to_text() {
            return fail(format!(
                "the genesis names verifier key {} but the ledger is being checked with {}",
                payload.verifier_key,
                self.key.to_text()
            ));
        }
        if !payload.software.starts_with("trailmark ") {
            return fail("`software` must name the trailmark version".into());
        }
        Ok(())
    }

    /// Checks a signed checkpoint note whose size equals the entries pushed so
    /// far; `stored` (size, root) are the database columns, if any.
    ///
    /// # Errors
    /// If the signature, origin or root does not hold.
    pub fn check_checkpoint_here(
        &self,
        note: &str,
        stored: Option<(u64, &[u8])>,
    ) -> Result<Checkpoint, VerifyError> {
        let checkpoint = self.open_checkpoint(note, stored)?;
        if checkpoint.size != self.next {
            return Err(VerifyError::Checkpoint {
                size: checkpoint.size,
                problem: format!("checked at {} entries", self.next),
            });
        }
        let computed = self.frontier.root();
        if checkpoint.root != computed {
            return Err(VerifyError::RootMismatch {
                size: checkpoint.size,
                signed: checkpoint.root.to_hex(),
                computed: computed.to_hex(),
            });
        }
        Ok(checkpoint)
    }

    /// Checks the batch seal of the newest entry pushed: the key's signature
    /// over the checkpoint body of the tree so far (docs/FORMAT.md §3.5).
    ///
    /// # Errors
    /// [`VerifyError::Unsealed`] if it is missing or does not verify.
    pub fn check_seal(&self, seal: Option<&[u8]>) -> Result<(), VerifyError> {
        let body = Checkpoint {
            origin: self.key.name().to_owned(),
            size: self.next,
            root: self.frontier.root(),
        }
        .body();
        match seal {
            Some(sig) if self.next > 0 && self.key.verify_raw(&body, sig) => Ok(()),
            _ => Err(VerifyError::Unsealed {
                seq: self.next.saturating_sub(1),
            }),
        }
    }

    /// Opens a signed checkpoint note with the key; `stored` (size, root) are
    /// the database's columns, which must match the note.
    ///
    /// # Errors
    /// If the note fails or disagrees with the stored columns.
    pub fn open_checkpoint(
        &self,
        note: &str,
        stored: Option<(u64, &[u8])>,
    ) -> Result<Checkpoint, VerifyError> {
        let size_hint = stored.map_or(0, |s| s.0);
        let checkpoint =
            Checkpoint::open(note, &self.key).map_err(|e| VerifyError::Checkpoint {
                size: size_hint,
                problem: e.to_string(),
            })?;
        if let Some((size, root)) = stored
            && (checkpoint.size != size || checkpoint.root.as_bytes().as_slice() != root)
        {
            return Err(VerifyError::Checkpoint {
                size,
                problem: "the database row's size or root differs from its signed note".into(),
            });
        }
        Ok(checkpoint)
    }
}
