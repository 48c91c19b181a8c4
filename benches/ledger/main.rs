//! Trailmark's benchmarks: figures for docs/PERFORMANCE.md, each with its
//! baseline measured in the same run. One bench target (`ledger`), one
//! subcommand per benchmark; `--help` lists them, `VERB --help` their flags.
//!
//! ```text
//! cargo bench --bench ledger -- append   [--seconds S] [--clients C]
//! cargo bench --bench ledger -- build    --dir DIR --entries N [--batch B]
//! cargo bench --bench ledger -- verify   --dir DIR
//! cargo bench --bench ledger -- proof    --dir DIR [--samples K]
//! cargo bench --bench ledger -- sign     [--count N] [--database-url URL]
//! cargo bench --bench ledger -- verify-signatures [--count N]
//! cargo bench --bench ledger -- events   [--count N] [--clients C] [--people P] [--verify] [--database-url URL]
//! cargo bench --bench ledger -- fanout   [--people N] [--timeout S] [--database-url URL]
//! cargo bench --bench ledger -- latency  [--rate R] [--seconds S] [--functions F] [--database-url URL]
//! cargo bench --bench ledger -- reports  [--people N] [--documents D] [--keep DIR]
//! cargo bench --bench ledger -- console  [--entries N] [--samples K] [--dir DIR] [--database-url URL]
//! cargo bench --bench ledger -- --help   (or VERB --help)
//! ```
//!
//! `append` uses a fresh ledger in a temp dir on SQLite, or on PostgreSQL
//! when `TRAILMARK_BENCH_DATABASE_URL` names a database to create fresh
//! ledgers in (it is dropped and recreated). `build` makes a ledger of N
//! entries through the sequencer (no HTTP) for `verify` and `proof`.
//! `sign` times Part 11 signings over HTTP on a fresh ledger (SQLite, or a
//! fresh `trailmark_bench_sign` database next to `--database-url`).
//! `verify-signatures` times `verify` over a ledger of N signatures against
//! a ledger of the same size without any.
//! `events`, `fanout` and `latency` measure the QMS-LMS integration
//! (docs/INTEGRATION.md) on a fresh ledger with the real server: events
//! accepted and applied per second, one revision fanned out to N people and
//! delivered to a simulated LMS, and event-to-delivery latency at a steady
//! rate (SQLite, or a fresh `trailmark_bench_{mode}` database next to
//! `--database-url`).
//! `console` times the QA console's audit-trail page (first page, a deep
//! page, each filter, free text) as a signed-in qa_reviewer over a ledger of
//! N fixture entries (default 1,000,000) that it builds through the
//! sequencer, or reuses and tops up in `--dir DIR`; on PostgreSQL with
//! `--database-url` or `TRAILMARK_BENCH_DATABASE_URL` (a fresh
//! `trailmark_bench_console` database).
//!
//! The modules, by subject: `append`; `verify` (`build`, `verify`,
//! `proof`); `signatures` (`sign`, `verify-signatures`); `integration`
//! (`events`, `fanout`, `latency`); `reports`; `console`; and what they
//! share, `common` (records, fresh databases, bulk appends, percentiles)
//! and `people` (users and their log-in).

mod append;
mod common;
mod console;
mod integration;
mod people;
mod reports;
mod signatures;
mod verify;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Trailmark's benchmarks: figures for docs/PERFORMANCE.md, each with its
/// baseline measured in the same run.
#[derive(Parser)]
#[command(
    name = "ledger",
    bin_name = "cargo bench --bench ledger --",
    after_help = "`VERB --help` lists the flags of each; docs/PERFORMANCE.md has the figures and the commands that made them."
)]
struct Cli {
    #[command(subcommand)]
    verb: Option<Verb>,
}

#[derive(Subcommand)]
enum Verb {
    /// HTTP appends from C concurrent clients for S seconds, then plain
    /// INSERTs of the same rows in the same batches as the baseline.
    ///
    /// A fresh ledger in a temp dir on SQLite, or on PostgreSQL when
    /// TRAILMARK_BENCH_DATABASE_URL names a database: a fresh
    /// `trailmark_bench` database is made next to it (dropped and
    /// recreated).
    Append(append::AppendArgs),
    /// Builds (or tops up) a ledger of N entries through the sequencer, no
    /// HTTP, for `verify` and `proof`.
    Build(verify::BuildArgs),
    /// Verifies the ledger `build` made, and times reading alone, checking
    /// alone and plain SHA-256 over the same bytes.
    Verify(verify::VerifyArgs),
    /// Times inclusion proofs of random entries at the ledger's current
    /// size.
    Proof(verify::ProofArgs),
    /// Part 11 signings over HTTP on a fresh ledger: sequential, then 4
    /// concurrent signers, with one Argon2id as the baseline.
    Sign(signatures::SignArgs),
    /// `verify` over a ledger of N signatures against a ledger of the same
    /// size without any.
    VerifySignatures(signatures::VerifySignaturesArgs),
    /// Completion events accepted and applied per second, from C
    /// concurrent senders, through the real server.
    Events(integration::EventsArgs),
    /// One revision fanned out to N people and delivered to a simulated
    /// LMS.
    Fanout(integration::FanoutArgs),
    /// Event-to-delivery latency at a steady rate of revision events.
    Latency(integration::LatencyArgs),
    /// A lineage report and a compliance report (signed PDFs, and JSONL),
    /// generated and checked.
    Reports(reports::ReportsArgs),
    /// The QA console's audit-trail page over a big ledger: first page, a
    /// deep page, each filter, free text.
    Console(console::ConsoleArgs),
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench` to every bench binary; it means
    // nothing here.
    let args = std::env::args_os().filter(|a| a != "--bench");
    let Some(verb) = Cli::parse_from(args).verb else {
        // `cargo bench` on its own runs every bench with no verb: show what
        // there is rather than fail.
        Cli::command().print_help()?;
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &verb {
            Verb::Append(args) => append::run(args).await,
            Verb::Build(args) => verify::build(args).await,
            Verb::Verify(args) => verify::verify(args).await,
            Verb::Proof(args) => verify::proof(args).await,
            Verb::Sign(args) => signatures::sign(args).await,
            Verb::VerifySignatures(args) => signatures::verify_signatures(args).await,
            Verb::Events(args) => integration::events(args).await,
            Verb::Fanout(args) => integration::fanout(args).await,
            Verb::Latency(args) => integration::latency(args).await,
            Verb::Reports(args) => reports::run(args).await,
            Verb::Console(args) => console::run(args).await,
        }
    })
}
