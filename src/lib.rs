//! Trailmark: an append-only, hash-chained, Merkle-checkpointed audit-trail
//! ledger for the QMS-LMS integration. See `docs/ARCHITECTURE.md`.

pub mod ledger;
