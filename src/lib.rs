//! Trailmark: an append-only, hash-chained, Merkle-checkpointed audit-trail
//! ledger for the QMS-LMS integration. See `docs/ARCHITECTURE.md` for the
//! code map and `docs/FORMAT.md` for the byte formats.

pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod identity;
pub mod instance;
pub mod integration;
pub mod ledger;
pub mod projection;
pub mod report;
pub mod sequencer;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod validate;
pub mod webhook;
