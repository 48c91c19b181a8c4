//! The ledger's pure core: entries, canonical form, hashes, the Merkle tree,
//! proofs, signed checkpoints and streaming verification.
//!
//! Nothing here knows about SQL, HTTP or the clock of a server: every function
//! is a deterministic computation over bytes, so the same code checks the
//! database (`trailmark verify`), an export (`trailmark verify-export`) and the
//! test vectors. The byte formats are specified in `docs/FORMAT.md`.
//!
//! ```
//! use trailmark::ledger::merkle::{Frontier, leaf_hash};
//! let mut tree = Frontier::default();
//! tree.push(leaf_hash(b"entry 0"));
//! tree.push(leaf_hash(b"entry 1"));
//! assert_eq!(tree.size(), 2);
//! ```

pub mod entry;
pub mod hash;
pub mod jcs;
pub mod kind;
pub mod merkle;
pub mod note;
pub mod seq;
pub mod user_id;
pub mod verify;

pub use entry::{Actor, Entry, EntryError, Subject, Timestamp};
pub use hash::Hash;
pub use kind::{Class, KindDef};
pub use note::{Checkpoint, LedgerKey, NoteError, VerifierKey};
pub use seq::{Seq, SeqOutOfRange};
pub use user_id::{InvalidUserId, UserId};
