//! The command line: parses arguments (clap) and runs each verb. `main`
//! only calls [`run`]. Exit codes: 0 success, 1 the ledger or export failed
//! verification, 2 a usage or input error, 3 an operational failure.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::api::Server;
use crate::audit::{self, AuditError, VerifyOptions};
use crate::config::{Config, DataDir, SequencerConfig};
use crate::identity;
use crate::ledger::{Actor, LedgerKey};
use crate::sequencer::{Sequencer, write_genesis};
use crate::store::Store;
use crate::telemetry::Metrics;

/// Trailmark: the audit-trail ledger for the QMS-LMS integration.
#[derive(Debug, Parser)]
#[command(name = "trailmark", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Data directory (configuration, ledger key, SQLite database).
    #[arg(long, global = true, env = "TRAILMARK_DATA", default_value = crate::config::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// PostgreSQL URL (postgres://...); default: SQLite in the data directory.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the configuration, the ledger key, the database and the genesis entry.
    Init {
        /// The ledger's origin (its public name), e.g. qa.example.com/trailmark.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on (default from trailmark.toml, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the demo: a fresh ledger, realistic entries through the real server, verify, export.
    Demo,
    /// Append one entry through a running server (token in TRAILMARK_TOKEN).
    Append(AppendArgs),
    /// Re-check the whole ledger: hashes, chain, fields, tree, every checkpoint.
    Verify {
        /// A signed checkpoint saved outside the database (proves nothing was truncated).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the complete electronic copy: entries.jsonl, checkpoint, verifier-key.
    Export {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an export offline, needing only the directory and the verifier key.
    VerifyExport {
        /// The export directory.
        dir: PathBuf,
        /// The verifier key (text or a file holding it), obtained out of band.
        #[arg(long)]
        key: String,
    },
    /// Print a portable inclusion proof of one entry, with its signed checkpoint.
    Proof {
        /// The entry.
        #[arg(long)]
        seq: u64,
        /// Tree size (default: the smallest checkpoint covering the entry).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token; prints it once on stdout.
    Create {
        /// Principal name, e.g. qms (becomes service:qms).
        #[arg(long)]
        principal: String,
        /// Why the token is issued (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
struct AppendArgs {
    /// Server URL.
    #[arg(long, env = "TRAILMARK_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API token.
    #[arg(long, env = "TRAILMARK_TOKEN", hide_env_values = true)]
    token: String,
    /// Registered kind.
    #[arg(long)]
    kind: String,
    /// Subject, SCHEME:ID.
    #[arg(long)]
    subject: String,
    /// Payload, a JSON object.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Reason (required for corrections).
    #[arg(long)]
    reason: Option<String>,
    /// Parent entry hash; repeat for several.
    #[arg(long = "parent")]
    parents: Vec<String>,
    /// Correlation ID.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// An error with the exit code it should produce.
struct Exit(i32, anyhow::Error);

fn usage(e: impl Into<anyhow::Error>) -> Exit {
    Exit(2, e.into())
}

fn failure(e: impl Into<anyhow::Error>) -> Exit {
    Exit(3, e.into())
}

/// Parses the command line and runs it; returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    crate::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 3;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => 0,
        Err(Exit(code, e)) => {
            eprintln!("error: {e:#}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Exit> {
    let g = &cli.global;
    match cli.command {
        Command::Init { origin } => init(g, origin).await,
        Command::Serve { listen } => serve(g, listen).await,
        Command::Demo => crate::demo::run(&g.data).await.map_err(failure),
        Command::Append(args) => append(args).await,
        Command::Verify { checkpoint, json } => verify(g, checkpoint.as_deref(), json).await,
        Command::Export { out } => export(g, &out).await,
        Command::VerifyExport { dir, key } => verify_export(&dir, &key),
        Command::Proof { seq, size } => proof(g, seq, size).await,
        Command::Token(TokenCommand::Create { principal, reason }) => {
            token_create(g, &principal, &reason).await
        }
    }
}

/// An opened ledger: configuration, store and key.
pub struct Opened {
    /// `trailmark.toml`.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The ledger key.
    pub key: LedgerKey,
}

/// Opens an initialised data directory.
///
/// # Errors
/// If the directory is not initialised, the key is unreadable or the database unreachable.
pub async fn open(data: &Path, database_url: Option<&str>) -> anyhow::Result<Opened> {
    let dir = DataDir::at(data);
    let config = dir.config()?;
    let key = dir.ledger_key(&config.origin)?;
    let url = dir.database_url(&config, database_url);
    let store = Store::open_url(&url)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
    Ok(Opened { config, store, key })
}

fn random_origin() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("trailmark.local/{}", hex::encode(bytes))
}

/// Creates a data directory and a ledger; returns the opened ledger and the
/// first API token (principal `admin`).
///
/// # Errors
/// If the directory exists, the origin is invalid or the database fails.
pub async fn initialise(
    data: &Path,
    origin: Option<String>,
    database_url: Option<&str>,
) -> anyhow::Result<(Opened, String)> {
    let origin = origin.unwrap_or_else(random_origin);
    crate::ledger::note::check_origin(&origin)?;
    let config = Config {
        origin,
        listen: "127.0.0.1:8080".into(),
        database_url: database_url.map(str::to_owned),
        max_body_bytes: 256 * 1024,
        sequencer: SequencerConfig::default(),
    };
    let dir = DataDir::at(data);
    let key = dir.create(&config)?;
    let url = dir.database_url(&config, database_url);
    let store = Store::open_url(&url)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
    write_genesis(&store, &key).await?;
    let opened = Opened { config, store, key };
    let token = issue_token(
        &opened,
        "admin",
        "initial administrator token created by `trailmark init`",
    )
    .await?;
    Ok((opened, token))
}

/// Issues a token through a short-lived in-process sequencer, so the token
/// row and its `admin.token.created` entry commit together.
///
/// # Errors
/// If the principal is invalid or the ledger cannot be written.
pub async fn issue_token(opened: &Opened, principal: &str, reason: &str) -> anyhow::Result<String> {
    let principal = identity::principal_actor(principal)?;
    let issued = identity::issue_token();
    let sequencer = Sequencer::start(
        opened.store.clone(),
        opened.key.clone(),
        opened.config.sequencer.clone(),
        Metrics::default(),
    )
    .await?;
    let request =
        identity::token_created_request(Actor::parse("system:cli")?, &principal, &issued, reason)?;
    let result = sequencer.handle().append(request).await;
    sequencer.shutdown().await;
    result?;
    Ok(issued.token)
}

async fn init(g: &Global, origin: Option<String>) -> Result<(), Exit> {
    let (opened, token) = initialise(&g.data, origin, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let vkey = opened.key.verifier().to_text();
    opened.store.close().await;
    println!(
        "Initialised ledger `{}` in {}",
        opened.config.origin,
        g.data.display()
    );
    println!();
    println!(
        "Verifier key (give it to QA and inspectors; also in {}):",
        g.data.join("verifier-key").display()
    );
    println!("  {vkey}");
    println!();
    println!("Administrator API token (shown once; store it in a secret manager):");
    println!("  {token}");
    Ok(())
}

async fn serve(g: &Global, listen: Option<String>) -> Result<(), Exit> {
    let opened = open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let listen = listen.unwrap_or_else(|| opened.config.listen.clone());
    let backend = opened.store.backend_name();
    let server = Server::start(
        opened.store.clone(),
        opened.key.clone(),
        &opened.config,
        &listen,
    )
    .await
    .map_err(failure)?;
    tracing::info!(addr = %server.addr, backend, origin = %opened.config.origin, "trailmark is serving");
    eprintln!(
        "trailmark serving {} on {} ({backend})",
        opened.config.origin,
        server.url()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests, signing a final checkpoint");
    server.stop().await;
    opened.store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn append(args: AppendArgs) -> Result<(), Exit> {
    let payload: Map<String, Value> = serde_json::from_str(&args.payload)
        .map_err(|e| usage(anyhow::anyhow!("--payload must be a JSON object: {e}")))?;
    let mut body = Map::new();
    body.insert("kind".into(), args.kind.into());
    body.insert("subject".into(), args.subject.into());
    body.insert("payload".into(), payload.into());
    if let Some(r) = args.reason {
        body.insert("reason".into(), r.into());
    }
    if !args.parents.is_empty() {
        body.insert("parents".into(), args.parents.into());
    }
    if let Some(c) = args.correlation_id {
        body.insert("correlation_id".into(), c.into());
    }
    if let Some(k) = args.idempotency_key {
        body.insert("idempotency_key".into(), k.into());
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/entries", args.server.trim_end_matches('/')))
        .bearer_auth(&args.token)
        .json(&Value::Object(body))
        .send()
        .await
        .map_err(|e| failure(anyhow::anyhow!("cannot reach {}: {e}", args.server)))?;
    let status = response.status();
    let text = response.text().await.map_err(failure)?;
    if status.is_success() {
        println!("{text}");
        Ok(())
    } else {
        Err(usage(anyhow::anyhow!(
            "the server refused the entry ({status}): {text}"
        )))
    }
}

fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} entries ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn audit_exit(e: AuditError) -> Exit {
    match e {
        AuditError::Broken(v) => Exit(1, anyhow::anyhow!("VERIFICATION FAILED: {v}")),
        AuditError::Input(m) => usage(anyhow::anyhow!(m)),
        other => failure(other),
    }
}

async fn verify(g: &Global, checkpoint: Option<&Path>, json: bool) -> Result<(), Exit> {
    let opened = open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let external = checkpoint
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the saved checkpoint {}", p.display()))
        })
        .transpose()
        .map_err(usage)?;
    let total = opened.store.size().await.map_err(failure)?;
    let bar = progress_bar(total, "verifying");
    let options = VerifyOptions {
        check_canonical: true,
        external_checkpoint: external,
    };
    let result = audit::verify_store(&opened.store, &opened.key.verifier(), &options, |n| {
        bar.set_position(n)
    })
    .await;
    indicatif::ProgressBar::finish_and_clear(&bar);
    opened.store.close().await;
    let report = result.map_err(audit_exit)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(failure)?
        );
    } else {
        println!("OK: ledger `{}` is intact", opened.config.origin);
        println!(
            "  entries checked     {} (hash, chain, fields, canonical form, index columns, parents)",
            report.entries
        );
        println!(
            "  checkpoints checked {} (signature and root)",
            report.checkpoints
        );
        if let Some(size) = report.external_checkpoint {
            println!(
                "  saved checkpoint    size {size}: signature, root and consistency with the head"
            );
        }
        if report.pending_unattested > 0 {
            println!(
                "  pending             {} newest entries await their checkpoint (signed within 100 ms by the running server)",
                report.pending_unattested
            );
        }
        println!("  root                {}", report.root);
        println!(
            "  took                {:.2} s ({:.0} entries/s)",
            report.seconds,
            report.rate()
        );
    }
    Ok(())
}

async fn export(g: &Global, out: &Path) -> Result<(), Exit> {
    let opened = open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let total = opened.store.size().await.map_err(failure)?;
    let bar = progress_bar(total, "exporting");
    let result = audit::export(&opened.store, &opened.key.verifier(), out, |n| {
        bar.set_position(n)
    })
    .await;
    indicatif::ProgressBar::finish_and_clear(&bar);
    opened.store.close().await;
    let report = result.map_err(audit_exit)?;
    println!(
        "Exported {} entries ({} bytes) to {}",
        report.entries,
        report.bytes,
        report.dir.display()
    );
    println!(
        "Check it with: trailmark verify-export {} --key {}",
        report.dir.display(),
        report.dir.join("verifier-key").display()
    );
    Ok(())
}

fn verify_export(dir: &Path, key: &str) -> Result<(), Exit> {
    let key = audit::read_verifier_key(key).map_err(audit_exit)?;
    let report = audit::verify_export(dir, &key, |_| {}).map_err(audit_exit)?;
    println!(
        "OK: the export in {} is intact and complete up to its checkpoint",
        dir.display()
    );
    println!("  key          {}", key.to_text());
    println!(
        "  entries      {} (hash, chain, fields, canonical form, parents)",
        report.entries
    );
    println!(
        "  checkpoint   size {} signature and root verified",
        report.entries
    );
    println!("  root         {}", report.root);
    Ok(())
}

async fn proof(g: &Global, seq: u64, size: Option<u64>) -> Result<(), Exit> {
    let opened = open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let result = audit::inclusion_proof(&opened.store, seq, size).await;
    opened.store.close().await;
    let proof = result.map_err(|e| match e {
        audit::ProofRequestError::Store(s) => failure(s),
        other => usage(other),
    })?;
    println!("{}", serde_json::to_string_pretty(&proof).map_err(failure)?);
    Ok(())
}

async fn token_create(g: &Global, principal: &str, reason: &str) -> Result<(), Exit> {
    let opened = open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let token = issue_token(&opened, principal, reason).await;
    opened.store.close().await;
    let token = token.map_err(usage)?;
    eprintln!("Issued a token for {principal}; it is shown once:");
    println!("{token}");
    Ok(())
}
