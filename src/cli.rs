//! The command line: parses arguments (clap) and runs each verb. `main`
//! only calls [`run`]. Exit codes: 0 success, 1 the ledger or export failed
//! verification, 2 a usage or input error, 3 an operational failure.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::audit::{self, AuditError, VerifyOptions};
use crate::identity::roles::SigningPolicy;
use crate::identity::service::{NewUser, TokenScopes};
use crate::instance::{Instance, cli_actor, shutdown_signal};
use crate::ledger::Actor;

/// Trailmark: the audit-trail ledger for the QMS-LMS integration.
#[derive(Debug, Parser)]
#[command(name = "trailmark", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// `trailmark report`.
#[derive(Debug, Args)]
struct ReportArgs {
    /// lineage, compliance or audit-trail.
    #[arg(value_name = "TYPE")]
    report: String,
    /// The subject (lineage; audit-trail of one subject), e.g. qms:capa/CAPA-2026-031.
    subject: Option<String>,
    /// Start of the period (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    from: Option<String>,
    /// End of the period, exclusive.
    #[arg(long)]
    to: Option<String>,
    /// Compliance: only this job function; repeat for several.
    #[arg(long = "job-function")]
    job_functions: Vec<String>,
    /// Audit trail: include administrative and security entries.
    #[arg(long)]
    include_admin: bool,
    /// Output file; its extension picks the form: .pdf, .jsonl or .csv.
    #[arg(long)]
    out: PathBuf,
    /// Name a user as the one who generated it (default: system:cli).
    #[arg(long = "as")]
    as_user: Option<String>,
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
    /// Run the demo: the three integration scenarios end to end with a simulated QMS and LMS, then verify and export.
    Demo {
        /// Keep the server and the simulated systems running afterwards (on the configured listen address).
        #[arg(long)]
        serve: bool,
    },
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
    /// Generate a signed report (lineage, compliance, audit-trail) and record it.
    Report(ReportArgs),
    /// Check a report offline: PDF signature, attached entries and their proofs.
    VerifyReport {
        /// The report (.pdf, or the .jsonl bundle).
        file: PathBuf,
        /// The verifier key (text or a file); default: the data directory's.
        #[arg(long)]
        key: Option<String>,
        /// The report CA (PEM) the signer must chain to; default: the data directory's, if there.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage users (works on the data directory; the server may be running).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the signing CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the roles -> permissions matrix and the signing policy in force.
    Roles,
    /// Validation as code: IQ and OQ with a signed evidence package (docs/VALIDATION.md).
    #[command(subcommand)]
    Validate(ValidateCommand),
}

#[derive(Debug, Subcommand)]
enum ValidateCommand {
    /// Installation qualification: check this installation as it is.
    Iq {
        /// A new directory for the evidence package.
        #[arg(long)]
        out: PathBuf,
        /// The user who executes and signs the run (`executed`); password from TRAILMARK_PASSWORD or the terminal.
        #[arg(long)]
        executor: Option<String>,
        /// An earlier IQ package: its binary hash and configuration become the expected ones.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// An approved configuration (trailmark.toml form) to compare the controlled settings with.
        #[arg(long)]
        expected_config: Option<PathBuf>,
    },
    /// Operational qualification: run the protocols of validation/oq against a throw-away instance (or --target).
    Oq {
        /// A new directory for the evidence package.
        #[arg(long)]
        out: PathBuf,
        /// The user who executes and signs the run (`executed`); password from TRAILMARK_PASSWORD or the terminal.
        #[arg(long)]
        executor: Option<String>,
        /// A staged instance's URL; --data must be that instance's data directory.
        #[arg(long)]
        target: Option<String>,
        /// Run only this test case (repeat); a partial run is never complete.
        #[arg(long = "case")]
        cases: Vec<String>,
    },
    /// Sign a package's run entry (reviewed, approved, or executed afterwards), after checking it.
    Sign {
        /// The package directory.
        dir: PathBuf,
        /// reviewed, approved or executed.
        #[arg(long)]
        meaning: String,
        /// The signer's user ID; password from TRAILMARK_PASSWORD or the terminal.
        #[arg(long)]
        user: String,
    },
    /// Check a package: every file against its manifest, results.json against the ledger; list its signatures.
    Check {
        /// The package directory.
        dir: PathBuf,
    },
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
        /// Kinds it may append: `*`, `qms.*` or a kind; repeat for several (default `*`).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Permissions: entries:append, entries:read; repeat (default both).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Days until it expires (default from trailmark.toml, 90).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// PEM file of the client certificate the token is pinned to.
        #[arg(long)]
        client_cert: Option<PathBuf>,
    },
    /// Revoke a token at once.
    Revoke {
        /// Token ID (the 12 hex digits after tmk_).
        #[arg(long)]
        id: String,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
    /// Replace a token: prints the new one; the old one works for the overlap.
    Rotate {
        /// Token ID.
        #[arg(long)]
        id: String,
        /// Minutes both tokens work, so clients swap without downtime.
        #[arg(long, default_value_t = 60)]
        overlap_minutes: u32,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
    /// List tokens (IDs, principals, scopes, expiry; never secrets).
    List,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; prints a one-time password to change at first login.
    Create {
        /// User ID (never reused).
        #[arg(long)]
        id: String,
        /// Legal printed name.
        #[arg(long)]
        name: String,
        /// Email.
        #[arg(long)]
        email: String,
        /// Role; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Who verified the person's identity (default: system:cli).
        #[arg(long)]
        verified_by: Option<String>,
        /// How the identity was verified (§11.100(b)).
        #[arg(long)]
        verification_method: String,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
    /// List users.
    List,
    /// Change your own password (the one-time one, or an expired one): the
    /// current password from TRAILMARK_PASSWORD, the new one from
    /// TRAILMARK_NEW_PASSWORD, or both asked on the terminal. Creates your
    /// signing key and certificate when you have none.
    Password {
        /// Your user ID.
        #[arg(long)]
        id: String,
    },
    /// Load a certificate issued by an enterprise CA for a user's key.
    Certificate {
        /// User ID.
        #[arg(long)]
        id: String,
        /// PEM file.
        #[arg(long)]
        cert: PathBuf,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create Trailmark's own signing CA in the data directory and trust it.
    Init {
        /// CA common name.
        #[arg(long, default_value = "Trailmark signing CA")]
        name: String,
        /// Organisation.
        #[arg(long, default_value = "Trailmark")]
        organisation: String,
    },
    /// Create the report-signing CA and certificate (P-256) in an existing data directory.
    InitReports,
    /// Trust an enterprise CA certificate (PEM) for user certificates.
    Import {
        /// PEM file.
        file: PathBuf,
        /// Why (recorded in the ledger).
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
    if matches!(cli.command, Command::Validate(_)) {
        crate::telemetry::init_logging_at("error");
    } else {
        crate::telemetry::init_logging();
    }
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
        Command::Demo { serve } => crate::demo::run(&g.data, serve).await.map_err(failure),
        Command::Append(args) => append(args).await,
        Command::Verify { checkpoint, json } => verify(g, checkpoint.as_deref(), json).await,
        Command::Export { out } => export(g, &out).await,
        Command::VerifyExport { dir, key } => verify_export(&dir, &key),
        Command::Proof { seq, size } => proof(g, seq, size).await,
        Command::Report(args) => report(g, args).await,
        Command::VerifyReport { file, key, ca } => {
            verify_report(g, &file, key.as_deref(), ca.as_deref())
        }
        Command::Token(command) => token(g, command).await,
        Command::User(command) => user(g, command).await,
        Command::Ca(command) => ca(g, command).await,
        Command::Roles => roles(g).await,
        Command::Validate(command) => validate(g, command).await,
    }
}

async fn init(g: &Global, origin: Option<String>) -> Result<(), Exit> {
    let (opened, token) = Instance::initialise(&g.data, origin, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let vkey = opened.key.verifier().to_text();
    let admin_password = crate::identity::password::one_time_password("admin");
    let admin = NewUser {
        user_id: "admin".into(),
        printed_name: "Initial Administrator".into(),
        email: "admin@localhost.invalid".into(),
        roles: vec!["administrator".into()],
        identity_verified_by: Some("system:cli".into()),
        identity_verification_method: "the installer, holding the data directory".into(),
        initial_password: Some(admin_password.clone()),
    };
    let created = opened
        .create_user(admin, "first administrator created by `trailmark init`")
        .await;
    opened.store.close().await;
    created.map_err(failure)?;
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
    println!("Integration API token (shown once; store it in a secret manager):");
    println!("  {token}");
    println!();
    println!("Administrator `admin`, one-time password (change it at first login):");
    println!("  {admin_password}");
    Ok(())
}

async fn serve(g: &Global, listen: Option<String>) -> Result<(), Exit> {
    // Before the database opens, so a new `-wal` takes the database's mode.
    let tightened =
        crate::instance::make_private(&g.data, g.database_url.as_deref()).map_err(usage)?;
    for p in &tightened {
        let was = p.found.map(|m| format!("{m:04o}")).unwrap_or_default();
        let now = format!("{:04o}", p.mode);
        tracing::warn!(path = %p.path.display(), was, now, "group or others could read a private file of the data directory; made it owner-only");
        eprintln!(
            "warning: {} was mode {was}, readable by group or others; now {now}",
            p.path.display()
        );
    }
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let listen = listen.unwrap_or_else(|| opened.config.listen.clone());
    let backend = opened.store.backend_name();
    let server = opened.start_server(&listen).await.map_err(failure)?;
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
        AuditError::Signature(v) => Exit(1, anyhow::anyhow!("VERIFICATION FAILED: {v}")),
        AuditError::State(v) => Exit(1, anyhow::anyhow!("VERIFICATION FAILED: {v}")),
        AuditError::Input(m) => usage(anyhow::anyhow!(m)),
        other => failure(other),
    }
}

async fn verify(g: &Global, checkpoint: Option<&Path>, json: bool) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
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
    let result = audit::verify_and_record(
        &opened.store,
        &opened.key.verifier(),
        &options,
        "cli",
        |n| bar.set_position(n),
    )
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
            "  entries checked     {} (hash, chain, fields, canonical form, index columns, parents, writer rules)",
            report.entries
        );
        println!(
            "  checkpoints checked {} (signature and root)",
            report.checkpoints
        );
        println!(
            "  state rows replayed {} (identity and integration tables, parent index and tree nodes: docs/STATE.md)",
            report.state_rows
        );
        println!(
            "  signatures checked  {} (Ed25519, certificate chain and validity, authority and status at signing)",
            report.signatures
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
    let opened = Instance::open(&g.data, g.database_url.as_deref())
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
    let seq = crate::ledger::Seq::try_from(seq).map_err(usage)?;
    let opened = Instance::open(&g.data, g.database_url.as_deref())
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

async fn token(g: &Global, command: TokenCommand) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let result = token_command(&opened, command).await;
    opened.store.close().await;
    result.map_err(usage)
}

async fn token_command(opened: &Instance, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            principal,
            reason,
            kinds,
            permissions,
            expires_in_days,
            client_cert,
        } => {
            let mut scopes = TokenScopes::default();
            if !kinds.is_empty() {
                scopes.kinds = kinds;
            }
            if !permissions.is_empty() {
                scopes.permissions = permissions;
            }
            let pem = match &client_cert {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let p = principal.clone();
            let (issued, expires) = opened
                .with_identity(|identity| async move {
                    identity
                        .issue_token(
                            &cli_actor(),
                            &p,
                            scopes,
                            expires_in_days,
                            pem.as_deref(),
                            &reason,
                        )
                        .await
                })
                .await?;
            eprintln!(
                "Issued token {} for {principal}, expiring {expires}; it is shown once:",
                issued.id
            );
            println!("{}", issued.token);
        }
        TokenCommand::Revoke { id, reason } => {
            let at = opened
                .with_identity(|identity| async move {
                    identity.revoke_token(&cli_actor(), &id, 0, &reason).await
                })
                .await?;
            eprintln!("Revoked, effective {at}");
        }
        TokenCommand::Rotate {
            id,
            overlap_minutes,
            reason,
        } => {
            let (issued, expires, old_until) = opened
                .with_identity(|identity| async move {
                    identity
                        .rotate_token(&cli_actor(), &id, overlap_minutes, &reason)
                        .await
                })
                .await?;
            eprintln!(
                "New token {} (expires {expires}); the old one works until {old_until}. Shown once:",
                issued.id
            );
            println!("{}", issued.token);
        }
        TokenCommand::List => {
            for t in opened.store.tokens().await? {
                println!(
                    "{}  {:<20} expires {:<25} revoked {:<25} scopes {}{}",
                    t.id,
                    t.principal,
                    t.expires_at.as_deref().unwrap_or("never"),
                    t.revoked_at.as_deref().unwrap_or("-"),
                    t.scopes,
                    t.client_cert_sha256
                        .map(|c| format!(" pinned {c}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn user(g: &Global, command: UserCommand) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let result = user_command(&opened, command).await;
    opened.store.close().await;
    result.map_err(usage)
}

async fn user_command(opened: &Instance, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            id,
            name,
            email,
            roles,
            verified_by,
            verification_method,
            reason,
        } => {
            let password = crate::identity::password::one_time_password(&id);
            let new = NewUser {
                user_id: id.clone(),
                printed_name: name,
                email,
                roles,
                identity_verified_by: verified_by,
                identity_verification_method: verification_method,
                initial_password: Some(password.clone()),
            };
            opened.create_user(new, &reason).await?;
            eprintln!(
                "Created user {id}. One-time password (shown once; it must be changed at first login):"
            );
            println!("{password}");
        }
        UserCommand::Password { id } => {
            let current = password_for(&id).map_err(|Exit(_, e)| e)?;
            let new = match std::env::var("TRAILMARK_NEW_PASSWORD") {
                Ok(p) => p,
                Err(_) => prompt_line(&format!("New password for {id}: "))?,
            };
            let who = id.clone();
            opened
                .with_identity(|identity| async move {
                    let login = identity.login(&who, &current).await?;
                    let caller = identity.authenticate_session(&login.session.token).await?;
                    let changed = identity.change_password(&caller, &current, &new).await;
                    let _ = identity.logout(&caller).await;
                    changed
                })
                .await?;
            eprintln!("Password of {id} changed; recorded in the ledger.");
        }
        UserCommand::List => {
            for u in opened.store.users().await? {
                println!(
                    "{:<20} {:<12} {:<30} {}",
                    u.user_id,
                    u.status,
                    u.printed_name,
                    u.roles.join(",")
                );
            }
        }
        UserCommand::Certificate { id, cert, reason } => {
            let id = crate::ledger::UserId::parse(&id)?;
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let sha = opened
                .with_identity(|identity| async move {
                    identity
                        .import_certificate(&cli_actor(), &id, &pem, &reason)
                        .await
                })
                .await?;
            eprintln!("Certificate {sha} recorded");
        }
    }
    Ok(())
}

async fn ca(g: &Global, command: CaCommand) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let result = match command {
        CaCommand::Init { name, organisation } => opened.create_ca(&name, &organisation).await,
        CaCommand::InitReports => opened.create_report_keys().await,
        CaCommand::Import { file, reason } => {
            let import = async {
                let pem = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let der = crate::identity::ca::pem_to_der(&pem)?
                    .into_iter()
                    .next()
                    .context("the file holds no certificate")?;
                opened
                    .with_identity(|identity| async move {
                        identity
                            .trust_ca(&cli_actor(), &der, "imported", &reason)
                            .await
                    })
                    .await
            };
            import.await
        }
    };
    opened.store.close().await;
    let sha = result.map_err(usage)?;
    eprintln!("Done: certificate SHA-256 {sha}");
    Ok(())
}

async fn report(g: &Global, args: ReportArgs) -> Result<(), Exit> {
    use crate::report::{Format, ReportType, Reporter, Requester, Scope};
    let ty = ReportType::parse(&args.report).ok_or_else(|| {
        usage(anyhow::anyhow!(
            "unknown report type `{}`: use lineage, compliance or audit-trail",
            args.report
        ))
    })?;
    let format = args
        .out
        .extension()
        .and_then(|e| e.to_str())
        .and_then(Format::parse)
        .ok_or_else(|| usage(anyhow::anyhow!("--out must end in .pdf, .jsonl or .csv")))?;
    let scope = Scope {
        subject: args.subject,
        from: args.from,
        to: args.to,
        job_functions: args.job_functions,
        include_admin: args.include_admin,
    };
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let run = async {
        let by = match &args.as_user {
            Some(id) => {
                let user = opened
                    .store
                    .user(&crate::ledger::UserId::parse(id)?)
                    .await?
                    .with_context(|| format!("there is no user `{id}`"))?;
                Requester {
                    actor: Actor::parse(&format!("user:{id}"))?,
                    printed_name: user.printed_name,
                }
            }
            None => Requester {
                actor: cli_actor(),
                printed_name: "Trailmark command line (data-directory holder)".into(),
            },
        };
        let signer =
            crate::report::sign::ReportSigner::from_dir(&opened.dir)?.map(std::sync::Arc::new);
        let out = args.out.clone();
        let store = opened.store.clone();
        let origin = opened.config.origin.clone();
        opened
            .with_sequencer(|seq| async move {
                let reporter = Reporter::new(store, seq, signer, origin);
                Ok(reporter.generate(ty, scope, format, &by, &out).await?)
            })
            .await
    };
    let result = run.await;
    opened.store.close().await;
    let g = result.map_err(failure)?;
    println!(
        "{} {} written to {}",
        g.report_id,
        ty.as_str(),
        g.path.display()
    );
    println!("  sha256       {}", g.sha256);
    println!("  bytes        {}", g.bytes);
    println!("  rows         {}", g.rows);
    println!(
        "  cited        {} entries, proved against checkpoint {} ({})",
        g.cited, g.checkpoint_size, g.checkpoint_root
    );
    if g.pages > 0 {
        println!("  pages        {}", g.pages);
    }
    println!("  recorded as  entry {} ({})", g.entry_seq, g.entry_hash);
    Ok(())
}

fn verify_report(
    g: &Global,
    file: &Path,
    key: Option<&str>,
    ca: Option<&Path>,
) -> Result<(), Exit> {
    let key = match key {
        Some(k) => audit::read_verifier_key(k).map_err(audit_exit)?,
        None => {
            let path = g.data.join("verifier-key");
            if !path.is_file() {
                return Err(usage(anyhow::anyhow!(
                    "give the verifier key with --key (text or file); {} does not exist",
                    path.display()
                )));
            }
            audit::read_verifier_key(&path.to_string_lossy()).map_err(audit_exit)?
        }
    };
    let ca_path = ca.map(Path::to_path_buf).or_else(|| {
        let p = g.data.join("report-ca.pem");
        p.is_file().then_some(p)
    });
    let ca_der = match &ca_path {
        Some(p) => {
            let pem = std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))
                .map_err(usage)?;
            Some(crate::report::sign::cert_der_from_pem(&pem).map_err(usage)?)
        }
        None => None,
    };
    let bytes = std::fs::read(file)
        .with_context(|| format!("reading {}", file.display()))
        .map_err(usage)?;
    match crate::report::verify::check_file(&bytes, &key, ca_der.as_deref()) {
        Ok(checked) => {
            println!("OK: {} checked", file.display());
            for line in checked.lines() {
                println!("  {line}");
            }
            Ok(())
        }
        Err(e) => {
            println!("FAILED: {}", file.display());
            Err(Exit(1, e.into()))
        }
    }
}

async fn roles(g: &Global) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let policy = opened.store.signing_policy().await;
    opened.store.close().await;
    let policy = match policy.map_err(failure)? {
        Some(text) => serde_json::from_str(&text).map_err(failure)?,
        None => SigningPolicy::default(),
    };
    print!("{}", crate::identity::roles::matrix_text(&policy));
    print!("\n{}", crate::api::route_table_text());
    Ok(())
}

/// The signer's password: `TRAILMARK_PASSWORD`, or asked on the terminal.
fn password_for(user: &str) -> Result<String, Exit> {
    if let Ok(p) = std::env::var("TRAILMARK_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(anyhow::anyhow!(
            "{user}'s password is needed to sign: set TRAILMARK_PASSWORD or run on a terminal"
        )));
    }
    prompt_line(&format!("Password for {user} (re-authentication): ")).map_err(failure)
}

/// Reads one line from the terminal after a prompt on stderr.
fn prompt_line(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to ask on: {}", prompt.trim_end_matches(": "));
    }
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn signer(user: Option<String>) -> Result<Option<crate::validate::Signer>, Exit> {
    user.map(|user_id| {
        let password = password_for(&user_id)?;
        Ok(crate::validate::Signer { user_id, password })
    })
    .transpose()
}

fn print_run(phase: &str, out: &Path, s: &crate::validate::RunSummary) {
    let (passed, failed, not_run) = s.counts;
    println!(
        "{phase} {}: {} ({passed} passed, {failed} failed, {not_run} not run; {} deviations) in {:.1} s",
        s.run_id,
        s.verdict.to_uppercase(),
        s.deviations,
        s.seconds
    );
    if phase == "IQ" {
        println!("every installation check ran");
    } else if s.complete {
        println!("complete: every requirement is covered by a test that ran");
    } else {
        println!(
            "NOT complete: not covered by a test that ran: {}",
            if s.uncovered.is_empty() {
                "(a partial run)".to_owned()
            } else {
                s.uncovered.join(", ")
            }
        );
    }
    println!(
        "recorded as ledger entry {}{}; package in {}",
        s.entry_seq,
        if s.signed {
            ", signed `executed`"
        } else {
            " (not signed: name --executor, or `trailmark validate sign`)"
        },
        out.display()
    );
}

async fn validate(g: &Global, command: ValidateCommand) -> Result<(), Exit> {
    let opened = Instance::open(&g.data, g.database_url.as_deref())
        .await
        .map_err(usage)?;
    let binary = std::env::current_exe().map_err(failure)?;
    let outcome = match command {
        ValidateCommand::Iq {
            out,
            executor,
            baseline,
            expected_config,
        } => {
            let executor = signer(executor)?;
            let mut expected = crate::validate::iq::Expected::default();
            if let Some(b) = baseline {
                let text = std::fs::read(b.join("results.json"))
                    .with_context(|| format!("reading the baseline {}", b.display()))
                    .map_err(usage)?;
                expected.baseline = Some(serde_json::from_slice(&text).map_err(usage)?);
            }
            if let Some(f) = expected_config {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))
                    .map_err(usage)?;
                expected.config = Some(toml::from_str(&text).map_err(usage)?);
            }
            let s = crate::validate::run_iq(&opened, &out, &binary, &expected, executor.as_ref())
                .await
                .map_err(failure)?;
            print_run("IQ", &out, &s);
            s.verdict == "pass" && s.complete
        }
        ValidateCommand::Oq {
            out,
            executor,
            target,
            cases,
        } => {
            let executor = signer(executor)?;
            let options = crate::validate::OqOptions {
                target,
                only: cases,
                binary,
            };
            let s = crate::validate::run_oq(&opened, &out, &options, executor.as_ref())
                .await
                .map_err(failure)?;
            print_run("OQ", &out, &s);
            s.verdict == "pass" && s.complete
        }
        ValidateCommand::Sign { dir, meaning, user } => {
            let who = signer(Some(user))?.expect("a signer");
            let (report, seq) = crate::validate::sign(&opened, &dir, &meaning, &who)
                .await
                .map_err(failure)?;
            println!(
                "{}: signed `{meaning}` as entry {seq}; signatures now:",
                report.run_id
            );
            for line in &report.signatures {
                println!("  {line}");
            }
            true
        }
        ValidateCommand::Check { dir } => {
            let report = crate::validate::check(&opened, &dir)
                .await
                .map_err(|e| Exit(1, e))?;
            println!(
                "{}: {} files match the manifest, summary.pdf's signature verifies, and results.json is the one recorded in entry {} (verdict {}, {})",
                report.run_id,
                report.files,
                report.seq,
                report.verdict.to_uppercase(),
                if report.complete {
                    "complete"
                } else {
                    "NOT complete"
                },
            );
            for line in &report.signatures {
                println!("  signed: {line}");
            }
            true
        }
    };
    if outcome {
        Ok(())
    } else {
        Err(Exit(
            1,
            anyhow::anyhow!("the validation run did not pass; see the deviations in the package"),
        ))
    }
}
