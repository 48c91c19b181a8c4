//! `sign` and `verify-signatures`: Part 11 signings over HTTP (sequential
//! and concurrent, with one Argon2id as the baseline), and `verify` over a
//! ledger of signatures against a ledger of the same size without any.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use trailmark::audit::{self, VerifyOptions, VerifyReport};
use trailmark::identity::password;
use trailmark::identity::roles::{Meaning, SigningPolicy};
use trailmark::identity::signature::{self, Manifestation, SignatureChecker};
use trailmark::instance::Instance;
use trailmark::ledger::{Actor, Hash, Subject, Timestamp, UserId, kind};
use trailmark::sequencer::{AppendRequest, SequencerHandle, record_request};

use crate::common::{
    body_text, bulk_sequencer, fresh_pg_if, in_window, latency_line, ms, payload, percentile,
    read_metric,
};
use crate::people::{Person, create_people, ready};

/// Flags of `sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Signatures in each sequential pass (at least 4); the concurrent
    /// pass signs a quarter of them by each of 4 signers.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub count: u64,
    /// A PostgreSQL URL: the ledger goes into a fresh
    /// `trailmark_bench_sign` database on its server (default: SQLite in a
    /// temp dir).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `verify-signatures`.
#[derive(clap::Args)]
pub struct VerifySignaturesArgs {
    /// Signatures (and records they sign) appended through the sequencer.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub count: u64,
}

/// The qa_reviewers of the concurrent pass of `sign`.
const SIGNERS: [&str; 4] = ["signer-1", "signer-2", "signer-3", "signer-4"];

/// One signing over HTTP; the wall time of the request and its response.
/// The first signing of the session sends user ID and password, later ones
/// the password only (§11.200(a)(1)).
async fn sign_over_http(
    http: &reqwest::Client,
    base: &str,
    person: &mut Person,
    target: &str,
    meaning: &str,
) -> anyhow::Result<Duration> {
    let mut body = json!({"target": target, "meaning": meaning, "password": person.password});
    if !person.signed_once {
        body["user_id"] = person.user_id.clone().into();
    }
    let started = Instant::now();
    let response = http
        .post(format!("{base}/v1/signatures"))
        .bearer_auth(&person.session)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.bytes().await?;
    let elapsed = started.elapsed();
    if status != 201 {
        bail!(
            "{} signing {target} `{meaning}`: {status} {}",
            person.user_id,
            String::from_utf8_lossy(&text)
        );
    }
    person.signed_once = true;
    Ok(elapsed)
}

/// Appends `count` records over HTTP with the integration token, 32 in
/// flight; their hashes in order.
async fn targets_over_http(
    base: &str,
    token: &str,
    first: u64,
    count: u64,
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/entries");
    let auth = format!("Bearer {token}");
    in_window(count, 32, |i| {
        let request = http
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body_text(first + i));
        async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let receipt: Value = response.json().await?;
            anyhow::ensure!(status == 201, "target append: {status} {receipt}");
            Ok(receipt["hash"]
                .as_str()
                .context("the receipt has a hash")?
                .to_owned())
        }
    })
    .await
}

/// `trailmark_signing_seconds` (sum, count) from the server's metrics.
async fn signing_metric(base: &str) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    Ok((
        read_metric(&text, "trailmark_signing_seconds_sum"),
        read_metric(&text, "trailmark_signing_seconds_count"),
    ))
}

/// The mean of `trailmark_signing_seconds` between two readings, in ms.
fn server_mean_ms(before: (f64, f64), after: (f64, f64)) -> f64 {
    (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e3
}

/// A run of signings: who signed what, how long it took and each latency.
struct Pass {
    meaning: &'static str,
    who: String,
    wall: Duration,
    latencies: Vec<Duration>,
    /// The server's own mean time per signing (ms).
    server_mean: f64,
}

/// Sequential signing latency over HTTP, then 4 concurrent signers.
pub async fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let count = args.count;
    anyhow::ensure!(count >= 4, "--count must be at least 4");
    let tmp = tempfile::tempdir()?;
    let url = fresh_pg_if(args.database_url.as_deref(), "trailmark_bench_sign").await?;
    let (opened, token) = Instance::initialise(
        &tmp.path().join("data"),
        Some("bench.trailmark.local/sign".into()),
        url.as_deref(),
    )
    .await?;
    let mut people = vec![
        ("reviewer", "Rita Evans", "qa_reviewer"),
        ("approver", "Dana Ruiz", "qa_approver"),
    ];
    people.extend(SIGNERS.iter().map(|id| (*id, "Sam Signer", "qa_reviewer")));
    create_people(&opened, &people).await?;
    let server = opened.start_server("127.0.0.1:0").await?;
    let base = server.url();
    let http = reqwest::Client::new();
    let mut reviewer = ready(&http, &base, "reviewer").await?;
    let mut approver = ready(&http, &base, "approver").await?;
    let mut concurrent = Vec::new();
    for id in SIGNERS {
        concurrent.push(ready(&http, &base, id).await?);
    }
    let argon2_runs = argon2_baseline(&opened, &reviewer.password).await?;

    // Sequential: the reviewer signs `reviewed` on each target, then the
    // approver signs `approved` on each (approval needs the review).
    let targets = targets_over_http(&base, &token, 0, count).await?;
    let mut passes = Vec::new();
    for (person, meaning) in [(&mut reviewer, "reviewed"), (&mut approver, "approved")] {
        passes.push(sequential_pass(&http, &base, person, meaning, &targets).await?);
    }
    let per = count / 4;
    let together = concurrent_pass(&base, &token, concurrent, per).await?;
    server.stop().await;
    let report = audit::verify_store(
        &opened.store,
        &opened.key.verifier(),
        &VerifyOptions::default(),
        |_| {},
    )
    .await?;
    print_argon2(&opened, &argon2_runs);
    print_passes(passes, together, per);
    println!(
        "verify             {} entries, {} signatures checked, all valid ({:.2} s)",
        report.entries, report.signatures, report.seconds
    );
    anyhow::ensure!(
        report.signatures == 2 * count + 4 * per,
        "verify checked {} signatures, expected {}",
        report.signatures,
        2 * count + 4 * per
    );
    println!(
        "reproduce          cargo bench --bench ledger -- sign --count {count}{}",
        args.database_url
            .as_deref()
            .map(|u| format!(" --database-url {u}"))
            .unwrap_or_default()
    );
    opened.store.close().await;
    Ok(())
}

/// Baseline: one Argon2id in this process, with the reviewer's stored
/// parameters, 20 runs; their times, sorted.
async fn argon2_baseline(opened: &Instance, pw: &str) -> anyhow::Result<Vec<Duration>> {
    let hash = opened
        .store
        .user(&UserId::parse("reviewer")?)
        .await?
        .context("the reviewer exists")?
        .password_hash;
    let pw = pw.to_owned();
    let mut argon2_runs = tokio::task::spawn_blocking(move || {
        (0..20)
            .map(|_| {
                let started = Instant::now();
                assert!(password::matches(&pw, &hash));
                started.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .await?;
    argon2_runs.sort();
    Ok(argon2_runs)
}

/// `person` signs `meaning` on each of `targets`, one after the other.
async fn sequential_pass(
    http: &reqwest::Client,
    base: &str,
    person: &mut Person,
    meaning: &'static str,
    targets: &[String],
) -> anyhow::Result<Pass> {
    let before = signing_metric(base).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(targets.len());
    for target in targets {
        latencies.push(sign_over_http(http, base, person, target, meaning).await?);
    }
    let wall = started.elapsed();
    let after = signing_metric(base).await?;
    Ok(Pass {
        meaning,
        who: person.user_id.clone(),
        wall,
        latencies,
        server_mean: server_mean_ms(before, after),
    })
}

/// Concurrent: 4 reviewers, each signing its own `per` targets.
async fn concurrent_pass(
    base: &str,
    token: &str,
    signers: Vec<Person>,
    per: u64,
) -> anyhow::Result<Pass> {
    let targets = targets_over_http(base, token, 1_000_000, per * 4).await?;
    let before = signing_metric(base).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut person, chunk) in signers
        .into_iter()
        .zip(targets.chunks(per as usize).map(<[String]>::to_vec))
    {
        let base = base.to_owned();
        tasks.spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(chunk.len());
            for target in &chunk {
                latencies
                    .push(sign_over_http(&http, &base, &mut person, target, "reviewed").await?);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut together = Vec::new();
    while let Some(done) = tasks.join_next().await {
        together.extend(done??);
    }
    let wall = started.elapsed();
    let after = signing_metric(base).await?;
    Ok(Pass {
        meaning: "reviewed",
        who: String::new(),
        wall,
        latencies: together,
        server_mean: server_mean_ms(before, after),
    })
}

/// The backend, the Argon2id parameters and the baseline's figures.
fn print_argon2(opened: &Instance, argon2_runs: &[Duration]) {
    let one_argon2 = argon2_runs.iter().sum::<Duration>() / argon2_runs.len() as u32;
    let identity = &opened.config.identity;
    println!("backend            {}", opened.store.backend_name());
    println!(
        "argon2id           m={} KiB, t={}, p=1 (the identity config in force, IdentityConfig::default())",
        identity.argon2_memory_kib, identity.argon2_iterations
    );
    println!(
        "argon2id alone     mean {:.1} ms, min {:.1} ms per hash (password::matches in the bench process, 20 runs, one core)",
        ms(one_argon2),
        ms(argon2_runs[0])
    );
    println!(
        "note               each signing runs Argon2id TWICE (password check + key unwrap): {:.1} ms of pure KDF per signing here",
        2.0 * ms(one_argon2)
    );
}

/// The sequential passes, then the concurrent one (`per` signatures each).
fn print_passes(passes: Vec<Pass>, mut together: Pass, per: u64) {
    for mut pass in passes {
        println!(
            "sequential         {} signatures `{}` by {} over HTTP in {:.2} s ({:.1} signatures/s); 1st with user_id + password, then password only",
            pass.latencies.len(),
            pass.meaning,
            pass.who,
            pass.wall.as_secs_f64(),
            pass.latencies.len() as f64 / pass.wall.as_secs_f64()
        );
        println!("  latency          {}", latency_line(&mut pass.latencies));
        println!(
            "  server side      mean {:.1} ms (trailmark_signing_seconds: Identity::sign, without HTTP and routing)",
            pass.server_mean
        );
    }
    let latencies = &mut together.latencies;
    println!(
        "concurrent         4 qa_reviewers x {per} = {} signatures `{}` in {:.2} s: {:.1} signatures/s",
        latencies.len(),
        together.meaning,
        together.wall.as_secs_f64(),
        latencies.len() as f64 / together.wall.as_secs_f64()
    );
    latencies.sort();
    println!(
        "  latency          p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.99)),
        ms(*latencies.last().expect("signatures"))
    );
    println!(
        "  server side      mean {:.1} ms (trailmark_signing_seconds)",
        together.server_mean
    );
}

/// Appends `count` records through `handle`, 256 in flight; (hash, subject)
/// of each, in order.
async fn records_through(
    handle: &SequencerHandle,
    count: u64,
) -> anyhow::Result<Vec<(Hash, String)>> {
    let actor = Actor::parse("service:bench")?;
    in_window(count, 256, |n| {
        let subject = format!("person:E{:05}", n % 5000);
        let request = record_request("qms.capa.opened", actor.clone(), &subject, payload(n), true);
        let handle = handle.clone();
        async move { Ok((handle.append(request?).await?.hash, subject)) }
    })
    .await
}

/// The ledger of signatures: its instance, the reviewer's signing key, and
/// how long each part took.
struct SignedLedger {
    opened: Instance,
    seed: [u8; 32],
    http_signing: Duration,
    records_time: Duration,
    signatures_time: Duration,
}

/// `verify` over a ledger of N+1 signatures against a ledger of the same
/// size without any.
pub async fn verify_signatures(args: &VerifySignaturesArgs) -> anyhow::Result<()> {
    let count = args.count;
    let all_started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let signed = signed_ledger(&tmp, count).await?;
    let size = signed.opened.store.size().await?;
    let (plain, plain_time) = plain_ledger(&tmp, size).await?;
    let (signed_runs, plain_runs) = verify_runs(&signed.opened, &plain).await?;
    let (s, p) = (best(&signed_runs), best(&plain_runs));
    anyhow::ensure!(
        s.signatures == count + 1 && p.signatures == 0,
        "verify checked {} signatures (expected {}) and {} on the plain ledger",
        s.signatures,
        count + 1,
        p.signatures
    );
    let memory = InMemory::measure(&signed.opened, &signed.seed).await?;

    println!("backend            {}", signed.opened.store.backend_name());
    println!(
        "signing over HTTP  1 signature in {:.1} ms (the real path: 2 Argon2id, sign, append)",
        ms(signed.http_signing)
    );
    println!(
        "signed ledger      {size} entries: {count} records in {:.2} s, then {count} signature.applied in {:.2} s (Ed25519 with the reviewer's real key, through the sequencer, no HTTP), plus 1 record and 1 signature over HTTP and the setup entries",
        signed.records_time.as_secs_f64(),
        signed.signatures_time.as_secs_f64()
    );
    println!(
        "plain ledger       {size} entries, all records but the setup entries, built in {:.2} s",
        plain_time.as_secs_f64()
    );
    print_verify_runs(&signed_runs, &plain_runs, &s, &p, &memory);
    println!(
        "total time         {:.1} s",
        all_started.elapsed().as_secs_f64()
    );
    println!("reproduce          cargo bench --bench ledger -- verify-signatures --count {count}");
    signed.opened.store.close().await;
    plain.store.close().await;
    Ok(())
}

/// A fresh ledger with one reviewer's signature made over HTTP, then
/// `count` records and `count` signatures on them made in this process.
async fn signed_ledger(tmp: &tempfile::TempDir, count: u64) -> anyhow::Result<SignedLedger> {
    let (signed, token) = Instance::initialise(
        &tmp.path().join("signed/data"),
        Some("bench.trailmark.local/verify-signatures".into()),
        None,
    )
    .await?;

    // One real signing over HTTP proves the path and makes the key.
    create_people(&signed, &[("reviewer", "Rita Evans", "qa_reviewer")]).await?;
    let server = signed.start_server("127.0.0.1:0").await?;
    let base = server.url();
    let http = reqwest::Client::new();
    let mut reviewer = ready(&http, &base, "reviewer").await?;
    let first = targets_over_http(&base, &token, 0, 1).await?;
    let http_signing = sign_over_http(&http, &base, &mut reviewer, &first[0], "reviewed").await?;
    server.stop().await;

    // The rest: the reviewer's real key, signed in this process, appended
    // through a local sequencer (no HTTP, no Argon2id per signature).
    let (seed, template) = reviewer_key(&signed, &reviewer.password).await?;
    let sequencer = bulk_sequencer(&signed, 4096).await?;
    let handle = sequencer.handle();
    let started = Instant::now();
    let records = records_through(&handle, count).await?;
    let records_time = started.elapsed();
    let started = Instant::now();
    let offset = signature::parse_offset(&signed.config.identity.display_utc_offset)
        .map_err(anyhow::Error::msg)?;
    let actor = Actor::parse("user:reviewer")?;
    let signature_kind = kind::lookup(signature::KIND).context("signature.applied is a kind")?;
    in_window(count, 256, |i| {
        let (target, subject) = records[i as usize].clone();
        let (handle, actor, mut manifestation) = (handle.clone(), actor.clone(), template.clone());
        async move {
            let at = Timestamp::now();
            manifestation.signed_at = at.to_string();
            manifestation.signed_at_local = signature::local_time(at.datetime(), offset);
            let request = AppendRequest {
                kind: signature_kind,
                actor,
                subject: Subject::parse(&subject)?,
                correlation_id: None,
                idempotency_key: None,
                parents: vec![target],
                reason: None,
                payload: signature::sign(&seed, &target, manifestation),
                effects: vec![],
                parent_refs: vec![],
            };
            handle.append(request).await?;
            anyhow::Ok(())
        }
    })
    .await?;
    let signatures_time = started.elapsed();
    drop(handle);
    sequencer.shutdown().await;
    Ok(SignedLedger {
        opened: signed,
        seed,
        http_signing,
        records_time,
        signatures_time,
    })
}

/// The reviewer's signing key, unwrapped with `pw`, and the manifestation
/// of a `reviewed` signature by the reviewer (without its times).
async fn reviewer_key(signed: &Instance, pw: &str) -> anyhow::Result<([u8; 32], Manifestation)> {
    let user = signed
        .store
        .user(&UserId::parse("reviewer")?)
        .await?
        .context("the reviewer exists")?;
    let wrapped = user.wrapped_key.clone().context("the reviewer has a key")?;
    let pw = pw.to_owned();
    let id = user.user_id.clone();
    let seed = tokio::task::spawn_blocking(move || password::unwrap(&wrapped, &pw, &id))
        .await?
        .context("the password unwraps the reviewer's key")?;
    let meaning = Meaning::parse("reviewed").map_err(anyhow::Error::msg)?;
    let template = Manifestation {
        user_id: user.user_id.to_string(),
        printed_name: user.printed_name.clone(),
        meaning: meaning.as_str().to_owned(),
        meaning_text: SigningPolicy::default().text(meaning),
        signed_at: String::new(),
        signed_at_local: String::new(),
        certificate_sha256: user
            .certificate_sha256
            .clone()
            .context("the reviewer has a certificate")?,
        authentication: "password-in-session".into(),
    };
    Ok((seed, template))
}

/// The same number of entries, all plain records; the time it took.
async fn plain_ledger(tmp: &tempfile::TempDir, size: u64) -> anyhow::Result<(Instance, Duration)> {
    let (plain, _) = Instance::initialise(
        &tmp.path().join("plain/data"),
        Some("bench.trailmark.local/verify-plain".into()),
        None,
    )
    .await?;
    let sequencer = bulk_sequencer(&plain, 4096).await?;
    let handle = sequencer.handle();
    let started = Instant::now();
    records_through(&handle, size - plain.store.size().await?).await?;
    let plain_time = started.elapsed();
    drop(handle);
    sequencer.shutdown().await;
    anyhow::ensure!(
        plain.store.size().await? == size,
        "the ledgers differ in size"
    );
    Ok((plain, plain_time))
}

/// verify (as `trailmark verify`: canonical-form check on), 3 runs each,
/// alternating.
async fn verify_runs(
    signed: &Instance,
    plain: &Instance,
) -> anyhow::Result<(Vec<VerifyReport>, Vec<VerifyReport>)> {
    let options = VerifyOptions {
        check_canonical: true,
        external_checkpoint: None,
    };
    let (mut signed_runs, mut plain_runs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        signed_runs.push(
            audit::verify_store(&signed.store, &signed.key.verifier(), &options, |_| {}).await?,
        );
        plain_runs.push(
            audit::verify_store(&plain.store, &plain.key.verifier(), &options, |_| {}).await?,
        );
    }
    Ok((signed_runs, plain_runs))
}

/// The fastest of `runs`.
fn best(runs: &[VerifyReport]) -> VerifyReport {
    runs.iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("runs")
        .clone()
}

/// What the signature checks alone cost over the signed ledger's rows in
/// memory, with plain Ed25519 as the baseline.
struct InMemory {
    signature_bytes: f64,
    record_bytes: f64,
    relevant: usize,
    checked: u64,
    checks_only: Duration,
    messages: usize,
    ed25519_only: Duration,
}

impl InMemory {
    async fn measure(signed: &Instance, seed: &[u8; 32]) -> anyhow::Result<InMemory> {
        let mut rows = Vec::new();
        let mut from = 0u64;
        loop {
            let page = signed
                .store
                .entries_page(from, trailmark::store::STREAM_PAGE_ROWS)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.seq.size();
            rows.extend(page);
        }
        let mean_bytes = |kind: &str| {
            let (n, bytes) = rows
                .iter()
                .filter(|r| r.kind == kind)
                .fold((0usize, 0usize), |(n, b), r| (n + 1, b + r.canonical.len()));
            bytes as f64 / n.max(1) as f64
        };
        let relevant: Vec<_> = rows
            .iter()
            .filter(|r| SignatureChecker::is_relevant(&r.kind))
            .collect();
        let t = Instant::now();
        let mut checker = SignatureChecker::default();
        for row in &relevant {
            checker.observe(row.seq.get(), &row.canonical)?;
        }
        let checks_only = t.elapsed();
        // Baseline: plain Ed25519 verify_strict over the same signed messages.
        let key = ed25519_dalek::VerifyingKey::from_bytes(&signature::public_key(seed))?;
        let mut signed_messages = Vec::new();
        for row in rows.iter().filter(|r| r.kind == signature::KIND) {
            signed_messages.push(signed_message(&row.canonical)?);
        }
        let t = Instant::now();
        for (message, sig) in &signed_messages {
            key.verify_strict(message, sig)?;
        }
        Ok(InMemory {
            signature_bytes: mean_bytes(signature::KIND),
            record_bytes: mean_bytes("lms.completion.recorded"),
            relevant: relevant.len(),
            checked: checker.checked,
            checks_only,
            messages: signed_messages.len(),
            ed25519_only: t.elapsed(),
        })
    }
}

/// The message a `signature.applied` entry signs, and its signature.
fn signed_message(canonical: &[u8]) -> anyhow::Result<(Vec<u8>, ed25519_dalek::Signature)> {
    let entry: Value = serde_json::from_slice(canonical)?;
    let sp: signature::SignaturePayload = serde_json::from_value(entry["payload"].clone())?;
    let target = Hash::parse_hex(&sp.target).map_err(anyhow::Error::msg)?;
    let sig = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&sp.signature)?
    };
    Ok((
        signature::message(&target, &sp.manifestation),
        ed25519_dalek::Signature::from_slice(&sig)?,
    ))
}

/// The verify runs of both ledgers, their difference, and the in-memory
/// checks.
fn print_verify_runs(
    signed_runs: &[VerifyReport],
    plain_runs: &[VerifyReport],
    s: &VerifyReport,
    p: &VerifyReport,
    memory: &InMemory,
) {
    println!(
        "mean entry size    signature.applied {:.0} bytes, record {:.0} bytes (canonical)",
        memory.signature_bytes, memory.record_bytes
    );
    let runs = |r: &[VerifyReport]| {
        r.iter()
            .map(|x| format!("{:.3}", x.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "verify signed      {} entries, {} signatures checked; runs {} s; best {:.3} s = {:.0} entries/s (canonical-form check on)",
        s.entries,
        s.signatures,
        runs(signed_runs),
        s.seconds,
        s.rate()
    );
    println!(
        "verify plain       {} entries, {} signatures; runs {} s; best {:.3} s = {:.0} entries/s",
        p.entries,
        p.signatures,
        runs(plain_runs),
        p.seconds,
        p.rate()
    );
    let difference = s.seconds - p.seconds;
    println!(
        "difference         {difference:.3} s more for {} signatures (best runs)",
        s.signatures
    );
    println!(
        "signatures/s       {:.0} = signatures / difference, if signature checks were the only extra work (they are not quite: signature entries are larger and each has one parent to resolve)",
        s.signatures as f64 / difference
    );
    println!(
        "checks only        {:.0} signatures/s (SignatureChecker::observe over the {} relevant rows in memory, one core)",
        memory.checked as f64 / memory.checks_only.as_secs_f64(),
        memory.relevant
    );
    println!(
        "plain Ed25519      {:.0} verifications/s (verify_strict over the same {} messages in memory, one core)",
        memory.messages as f64 / memory.ed25519_only.as_secs_f64(),
        memory.messages
    );
}
