//! `trailmark demo`: a fresh ledger, a few hundred realistic entries sent by
//! the QMS, LMS and HR principals through the real HTTP server, then verify,
//! a saved checkpoint, export and the inspector's offline check.
//! Later issues grow this into the full integration scenario.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::audit::{self, VerifyOptions};
use crate::cli;

const MARKER: &str = ".trailmark-demo";

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn append(&self, body: Value) -> anyhow::Result<(u64, String)> {
        let response = self
            .http
            .post(format!("{}/v1/entries", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: Value = response.json().await?;
        if !status.is_success() {
            bail!("append refused ({status}): {value}");
        }
        Ok((
            value["seq"].as_u64().unwrap_or_default(),
            value["hash"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}

async fn demo_login(
    http: &reqwest::Client,
    base: &str,
    user_id: &str,
    password: &str,
) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"user_id": user_id, "password": password}))
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("login of {user_id} refused ({status}): {v}");
    }
    Ok(v["session"].as_str().unwrap_or_default().to_owned())
}

async fn demo_call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    session: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(session)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("POST {path} refused ({status}): {v}");
    }
    Ok(v)
}

const PEOPLE: &[(&str, &str, &str)] = &[
    ("E1001", "Anna Müller", "filling-operator"),
    ("E1002", "Łukasz Nowak", "filling-operator"),
    ("E1003", "李雷", "qc-analyst"),
    ("E1004", "Zoë Dubois", "qc-analyst"),
    ("E1005", "Sean O'Brien", "packaging-operator"),
    ("E1006", "Priya Raman", "packaging-operator"),
    ("E1007", "Jürgen Weiß", "maintenance-technician"),
    ("E1008", "Maria González", "filling-operator"),
    ("E1009", "Kenji Sato", "qc-analyst"),
    ("E1010", "Fatima Al-Sayed", "packaging-operator"),
    ("E1011", "Olivia Smith", "filling-operator"),
    ("E1012", "Björn Lindqvist", "maintenance-technician"),
];

const SOPS: &[(&str, u32, &str, &[&str])] = &[
    (
        "SOP-017",
        4,
        "Aseptic filling line set-up",
        &["filling-operator", "maintenance-technician"],
    ),
    (
        "SOP-022",
        7,
        "Environmental monitoring of grade A/B areas",
        &["qc-analyst", "filling-operator"],
    ),
    (
        "SOP-031",
        2,
        "Line clearance for packaging",
        &["packaging-operator"],
    ),
    ("SOP-040", 5, "HPLC system suitability", &["qc-analyst"]),
    (
        "SOP-052",
        3,
        "Preventive maintenance of the capping machine",
        &["maintenance-technician", "packaging-operator"],
    ),
    (
        "SOP-017",
        5,
        "Aseptic filling line set-up",
        &["filling-operator", "maintenance-technician"],
    ),
];

/// Runs the demo in `data` (created fresh; a previous demo there is replaced).
///
/// # Errors
/// If the directory holds something that is not a demo, or any step fails.
pub async fn run(data: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    if data.exists() {
        if !data.join(MARKER).exists() {
            bail!(
                "{} exists and is not a demo directory; pass --data with a new directory for the demo",
                data.display()
            );
        }
        std::fs::remove_dir_all(data)
            .with_context(|| format!("removing the previous demo in {}", data.display()))?;
    }
    let mut origin_bytes = [0u8; 4];
    getrandom::fill(&mut origin_bytes).expect("the OS provides randomness");
    let (opened, _admin) = cli::initialise(
        data,
        Some(format!(
            "demo.trailmark.local/{}",
            hex::encode(origin_bytes)
        )),
        None,
    )
    .await?;
    std::fs::write(
        data.join(MARKER),
        "created by `trailmark demo`; the demo replaces this directory when run again\n",
    )?;
    let qms = cli::issue_token(&opened, "qms", "demo: the QMS sends quality events").await?;
    let lms = cli::issue_token(
        &opened,
        "lms",
        "demo: the LMS sends assignments and completions",
    )
    .await?;
    let hr = cli::issue_token(&opened, "hr", "demo: HR sends people and job functions").await?;
    // QA staff who will sign, created before the server starts (as
    // `trailmark user create` would) with one-time passwords.
    let mut staff = Vec::new();
    for (id, name, role) in [
        ("revans", "Rita Evans", "qa_reviewer"),
        ("druiz", "Dana Ruiz", "qa_approver"),
    ] {
        let initial = cli::one_time_password();
        cli::create_user(
            &opened,
            crate::identity::service::NewUser {
                user_id: id.into(),
                printed_name: name.into(),
                email: format!("{id}@demo.example"),
                roles: vec![role.into()],
                identity_verified_by: Some("user:hr-officer".into()),
                identity_verification_method: "passport checked in person at onboarding".into(),
                initial_password: initial.clone(),
            },
            "demo: QA staff who sign CAPA records",
        )
        .await?;
        staff.push((id, initial));
    }
    println!(
        "1. Initialised ledger `{}` in {} (SQLite)",
        opened.config.origin,
        data.display()
    );

    let server = opened.start_server("127.0.0.1:0").await?;
    let http = reqwest::Client::new();
    let client = |token: &str| Client {
        http: http.clone(),
        base: server.url(),
        token: token.to_owned(),
    };
    let (qms, lms, hr) = (client(&qms), client(&lms), client(&hr));
    println!(
        "2. Serving on {}; the QMS, LMS and HR now send their events over HTTP",
        server.url()
    );

    let mut count = 0usize;
    // The named people plus a workforce generated from them, so that every
    // SOP revision fans out to a realistic number of assignments.
    let functions = [
        "filling-operator",
        "qc-analyst",
        "packaging-operator",
        "maintenance-technician",
    ];
    let generated: Vec<(String, String, &str)> = (0..28)
        .map(|i| {
            (
                format!("E{}", 1013 + i),
                format!(
                    "{} {}",
                    ["Ana", "Ben", "Chloé", "Dawid", "Elif", "Farah", "Gustav"][i % 7],
                    ["Kowalski", "Nakamura", "Ødegaard", "Silva"][i % 4]
                ),
                functions[i % 4],
            )
        })
        .collect();
    let people: Vec<(&str, &str, &str)> = PEOPLE
        .iter()
        .copied()
        .chain(
            generated
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), *c)),
        )
        .collect();
    for (id, name, function) in &people {
        hr.append(json!({"kind": "hr.person.updated", "subject": format!("person:{id}"), "idempotency_key": format!("hr-{id}-v1"),
            "payload": {"person_id": id, "printed_name": name, "job_functions": [function], "active": true}})).await?;
        count += 1;
    }
    let mut completions: Vec<(String, String, &str)> = Vec::new();
    for (n, (doc, version, title, functions)) in SOPS.iter().enumerate() {
        let corr = format!("rev-{doc}-{version}");
        let (_, revision) = qms.append(json!({"kind": "qms.document.revision_effective", "subject": format!("qms:sop/{doc}@{version}"),
            "correlation_id": corr, "idempotency_key": format!("qms-evt-{}", 88100 + n),
            "payload": {"document": doc, "version": version, "title": title, "effective_on": "2026-11-23", "category": "SOP", "job_functions": functions}})).await?;
        count += 1;
        let trainees: Vec<_> = people.iter().filter(|p| functions.contains(&p.2)).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (pid, _, _)) in trainees.iter().enumerate() {
            let body = json!({"kind": "lms.assignment.created", "subject": format!("lms:assignment/A-{}{:02}", 900 + n, i),
                "correlation_id": corr, "parents": [revision], "idempotency_key": format!("lms-asg-{}-{pid}", corr),
                "payload": {"person_id": pid, "document": doc, "version": version, "due_on": "2026-12-07", "window_days": 14}});
            let c = Client {
                http: lms.http.clone(),
                base: lms.base.clone(),
                token: lms.token.clone(),
            };
            let pid = pid.to_string();
            tasks.spawn(async move { c.append(body).await.map(|r| (r, pid)) });
        }
        while let Some(done) = tasks.join_next().await {
            let ((_, hash), pid) = done??;
            count += 1;
            let (_, sent) = qms.append(json!({"kind": "integration.handover.sent", "subject": format!("person:{pid}"), "correlation_id": corr, "parents": [hash],
                "payload": {"target": "lms", "message": "training assignment", "attempt": 1}})).await?;
            lms.append(json!({"kind": "integration.handover.delivered", "subject": format!("person:{pid}"), "correlation_id": corr, "parents": [sent],
                "payload": {"target": "lms", "acknowledged_by": "lms", "latency_ms": 40 + (count % 60)}})).await?;
            count += 2;
            completions.push((pid, hash, doc));
        }
    }
    let mut correction_target = None;
    for (i, (pid, assignment, doc)) in completions.iter().enumerate() {
        if i % 9 == 8 {
            continue; // some training is still open: later issues report it as missing
        }
        let (seq, hash) = lms.append(json!({"kind": "lms.completion.recorded", "subject": format!("person:{pid}"), "parents": [assignment],
            "idempotency_key": format!("xapi-stmt-{i:04}"),
            "payload": {"person_id": pid, "document": doc, "verb": "completed", "score": if i == 3 { 0.72 } else { 0.95 }, "completed_at": "2026-11-25T10:15:00Z"}})).await?;
        count += 1;
        if i == 3 {
            correction_target = Some((seq, hash));
        }
    }
    let (_, capa) = qms.append(json!({"kind": "qms.capa.opened", "subject": "qms:capa/CAPA-2026-014", "correlation_id": "CAPA-2026-014",
        "payload": {"capa_id": "CAPA-2026-014", "title": "Filling line set-up step skipped", "source": "deviation DEV-2026-118"}})).await?;
    let (action_seq, action) = qms.append(json!({"kind": "qms.capa.training_action", "subject": "qms:capa/CAPA-2026-014", "correlation_id": "CAPA-2026-014", "parents": [capa],
        "payload": {"document": "SOP-017", "version": 5, "job_functions": ["filling-operator"], "due_on": "2026-12-01", "verification_required": true}})).await?;
    qms.append(json!({"kind": "qms.deviation.opened", "subject": "qms:deviation/DEV-2026-118", "correlation_id": "DEV-2026-118",
        "payload": {"deviation_id": "DEV-2026-118", "procedure": "SOP-017", "occurred_at": "2026-11-24T14:02:00Z", "people": ["E1002"]}})).await?;
    count += 3;
    if let Some((seq, hash)) = &correction_target {
        lms.append(
            json!({"kind": "ledger.correction", "subject": "person:E1001", "parents": [hash],
            "reason": "score was transcribed from the wrong attempt; the LMS record shows 0.92",
            "payload": {"corrects_seq": seq, "field": "score", "old": 0.72, "new": 0.92}}),
        )
        .await?;
        count += 1;
    }
    // A retry of an event the QMS already sent: acknowledged, not applied twice.
    let replay = qms.append(json!({"kind": "qms.document.revision_effective", "subject": "qms:sop/SOP-017@4", "correlation_id": "rev-SOP-017-4",
        "idempotency_key": "qms-evt-88100", "payload": {"document": "SOP-017", "version": 4, "title": "Aseptic filling line set-up", "effective_on": "2026-11-23", "category": "SOP", "job_functions": ["filling-operator", "maintenance-technician"]}})).await?;
    println!(
        "3. Appended {count} entries over HTTP (people, SOP revisions, assignments, hand-overs, completions, a CAPA, a deviation, a correction with its reason)"
    );
    println!(
        "   A redelivered QMS event (idempotency key qms-evt-88100) returned the original entry, seq {}",
        replay.0
    );

    // Part 11: two people review and approve the CAPA's training action.
    let mut signers = Vec::new();
    for (id, initial) in &staff {
        let session = demo_login(&http, &server.url(), id, initial).await?;
        let own = cli::one_time_password();
        demo_call(
            &http,
            &server.url(),
            "/v1/account/password",
            &session,
            json!({"current_password": initial, "new_password": own}),
        )
        .await?;
        signers.push((id, session, own));
    }
    for ((id, session, password), meaning) in signers.iter().zip(["reviewed", "approved"]) {
        demo_call(
            &http,
            &server.url(),
            "/v1/signatures",
            session,
            json!({"target": action, "meaning": meaning, "user_id": id, "password": password}),
        )
        .await?;
    }
    let view: Value = http
        .get(format!("{}/v1/entries/{action_seq}", server.url()))
        .bearer_auth(&qms.token)
        .send()
        .await?
        .json()
        .await?;
    println!(
        "4. Part 11 signatures on entry {action_seq} (the CAPA's training action), as every view shows them:"
    );
    for s in view["signatures"].as_array().into_iter().flatten() {
        println!("     {}", s["line"].as_str().unwrap_or_default());
    }

    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let note = http
        .get(format!("{}/v1/checkpoint", server.url()))
        .send()
        .await?
        .text()
        .await?;
    let target = correction_target.map_or(1, |(s, _)| s);
    let proof: audit::InclusionProof = http
        .get(format!("{}/v1/proofs/inclusion?seq={target}", server.url()))
        .send()
        .await?
        .json()
        .await?;
    let vkey = opened.key.verifier();
    audit::check_inclusion_proof(&proof, &vkey)
        .map_err(|e| anyhow::anyhow!("the demo's inclusion proof did not verify: {e}"))?;
    println!(
        "5. Inclusion proof of entry {target} in the signed checkpoint of size {} verified offline",
        proof.tree_size
    );
    server.stop().await;

    let saved = data.join("saved-checkpoint");
    std::fs::write(&saved, &note)?;
    let report = audit::verify_store(
        &opened.store,
        &vkey,
        &VerifyOptions {
            check_canonical: true,
            external_checkpoint: Some(note),
        },
        |_| {},
    )
    .await?;
    println!(
        "6. verify: {} entries, {} checkpoints and {} signatures intact; consistent with the saved checkpoint",
        report.entries, report.checkpoints, report.signatures
    );
    let export_dir = data.join("export");
    let exported = audit::export(&opened.store, &vkey, &export_dir, |_| {}).await?;
    let checked = audit::verify_export(&export_dir, &vkey, |_| {})?;
    println!(
        "7. export: {} entries written to {}; the inspector's offline check passed (root {})",
        exported.entries,
        export_dir.display(),
        &checked.root[..16]
    );
    opened.store.close().await;
    println!();
    println!(
        "Done in {:.1} s. Where things are:",
        started.elapsed().as_secs_f64()
    );
    println!("  database          {}", data.join("ledger.db").display());
    println!(
        "  verifier key      {}",
        data.join("verifier-key").display()
    );
    println!("  saved checkpoint  {}", saved.display());
    println!("  export            {}", export_dir.display());
    println!("Try:");
    println!(
        "  cargo run --release -- verify --data {} --checkpoint {}",
        data.display(),
        saved.display()
    );
    println!(
        "  cargo run --release -- verify-export {} --key {}",
        export_dir.display(),
        data.join("verifier-key").display()
    );
    println!(
        "  cargo run --release -- proof --data {} --seq {target}",
        data.display()
    );
    Ok(())
}
