//! Signed reports (docs/REPORTS.md) from a real CAPA flow: every type as a
//! PDF checked by Trailmark's own verifier and by two independent ones
//! (pyHanko, poppler's pdfsig), its text extracted with pdftotext, a flipped
//! byte rejected by all three, and the JSONL and CSV forms complete.
//!
//! The external tools are installed by `.ci/run`. Outside CI a missing tool
//! skips only that tool's checks, with a message saying so; under `CI` it
//! fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use trailmark::ledger::Seq;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use trailmark::report::verify::check_file;

use crate::harness::TestLedger;
use crate::integration::{event, master_data, send, settle, with_targets};
use crate::people::{Http, person};

/// A tool on PATH (or named by an environment variable), or `None` with a
/// message; under `CI` a missing tool is a failure.
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required under CI (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED the {name} checks: {name} is not installed (set {env} or put it on PATH; .ci/run installs it)"
        );
    }
    found
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// pyHanko's and pdfsig's verdicts on a PDF: (pyhanko intact and trusted,
/// pdfsig valid and trusted), or `None` for a tool that is missing.
fn external_verdicts(pdf: &Path, ca_pem: &Path, nss: &Path) -> (Option<bool>, Option<bool>) {
    let pyhanko = tool("pyhanko", "TRAILMARK_PYHANKO").map(|bin| {
        let (ok, text) = run(Command::new(bin)
            .args(["sign", "validate", "--trust-replace", "--trust"])
            .arg(ca_pem)
            .arg(pdf));
        let good = ok && text.contains(":INTACT:TRUSTED");
        if !good {
            eprintln!("pyhanko on {}: {text}", pdf.display());
        }
        good
    });
    // pdfsig trusts through an NSS database, which only certutil makes.
    let nss_ready = nss.join("cert9.db").exists();
    if !nss_ready && tool("pdfsig", "TRAILMARK_PDFSIG").is_some() {
        eprintln!("pdfsig skipped: no NSS database because certutil (libnss3-tools) is missing");
    }
    let pdfsig = tool("pdfsig", "TRAILMARK_PDFSIG")
        .filter(|_| nss_ready)
        .map(|bin| {
            // pdfsig exits 0 even on a digest mismatch: read its words.
            let (_, text) = run(Command::new(bin)
                .arg("-nssdir")
                .arg(format!("sql:{}", nss.display()))
                .arg(pdf));
            let good =
                text.contains("Signature is Valid.") && text.contains("Certificate is Trusted.");
            if !good {
                eprintln!("pdfsig on {}: {text}", pdf.display());
            }
            good
        });
    (pyhanko, pdfsig)
}

fn nss_db(dir: &Path, ca_pem: &Path) -> PathBuf {
    let db = dir.join("nss");
    std::fs::create_dir_all(&db).unwrap();
    if let Some(certutil) = tool("certutil", "TRAILMARK_CERTUTIL") {
        let (ok, text) = run(Command::new(&certutil)
            .arg("-N")
            .arg("-d")
            .arg(format!("sql:{}", db.display()))
            .arg("--empty-password"));
        assert!(ok, "{text}");
        let (ok, text) = run(Command::new(&certutil)
            .args(["-A", "-n", "trailmark-report-ca", "-t", "CT,C,C", "-i"])
            .arg(ca_pem)
            .arg("-d")
            .arg(format!("sql:{}", db.display())));
        assert!(ok, "{text}");
    }
    db
}

fn pdftotext(pdf: &Path) -> Option<String> {
    tool("pdftotext", "TRAILMARK_PDFTOTEXT").map(|bin| {
        let (ok, text) = run(Command::new(bin).arg("-layout").arg(pdf).arg("-"));
        assert!(ok, "{text}");
        text
    })
}

async fn download(
    http: &Http,
    session: &str,
    path: &str,
) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let r = http
        .http
        .get(format!("{}{path}", http.base))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.bytes().await.unwrap().to_vec(), headers)
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario: each report type generated, then each checked in turn
async fn every_report_type_is_signed_readable_proved_and_recorded() {
    let ledger = TestLedger::new().await;
    let (server, http, _lms, qms) = with_targets(&ledger, |_| {}).await;
    let token = ledger.admin_token.clone();
    let recorder = person(&ledger, &http, "qa2", "李雷", &["qa_approver"]).await;
    let reviewer = person(&ledger, &http, "qa5", "Łukasz Müller", &["qa_reviewer"]).await;
    let approver = person(&ledger, &http, "qa4", "Zoë Ødegaard", &["qa_approver"]).await;
    let operator = person(&ledger, &http, "op1", "Olaf Operator", &["operator"]).await;
    master_data(&http, &token, 3).await;
    let (s, b) = send(&http, &token, vec![
        event("hr.person.changed.v1", "p-E2-name", "2026-01-02T00:00:00Z",
            json!({"person_id": "E2", "name": "Jürgen Weiß", "active": true,
                   "job_functions": [{"job_function": "OP", "valid_from": "2026-01-01T00:00:00Z"}]})),
        event("qms.capa.training_action.v1", "capa-a1", "2026-03-02T00:00:00Z",
            json!({"capa_id": "CAPA-9", "action_id": "A1", "document_id": "SOP-017", "version": "3",
                   "people": ["E1"], "due_date": "2026-03-31", "verification_required": false})),
        event("lms.completion.recorded.v1", "done-E1", "2026-03-05T10:00:00Z",
            json!({"person_id": "E1", "document_id": "SOP-017", "version": "3",
                   "completed_at": "2026-03-05T10:00:00Z", "outcome": "passed"})),
    ]).await;
    assert_eq!(s, 202, "{b}");
    settle(&ledger).await;
    let (s, closed) = http
        .call(
            "POST",
            "/v1/capas/CAPA-9/closure",
            Some(&recorder.session),
            Some(json!({"reason": "retraining evidenced"})),
        )
        .await;
    assert_eq!(s, 201, "{closed}");
    let target = closed["hash"].as_str().unwrap().to_owned();
    let (s, sig) = http
        .sign(
            &reviewer.session,
            &target,
            "reviewed",
            Some("qa5"),
            &reviewer.password,
        )
        .await;
    assert_eq!(s, 201, "{sig}");
    let (s, sig) = http
        .sign(
            &approver.session,
            &target,
            "approved",
            Some("qa4"),
            &approver.password,
        )
        .await;
    assert_eq!(s, 201, "{sig}");
    assert!(qms.wait_for(3, std::time::Duration::from_secs(10)).await);
    crate::integration::outbox_settled(&ledger).await;

    let dir = ledger.dir.path().to_owned();
    let ca_pem = ledger.data_dir().join("report-ca.pem");
    let ca_der =
        trailmark::report::sign::cert_der_from_pem(&std::fs::read_to_string(&ca_pem).unwrap())
            .unwrap();
    let vkey = ledger.opened.key.verifier();
    let nss = nss_db(&dir, &ca_pem);

    let cases = [
        ("lineage", "/v1/reports/lineage?subject=qms:capa/CAPA-9"),
        (
            "compliance",
            "/v1/reports/compliance?from=2026-01-01&to=2026-12-31",
        ),
        (
            "audit-trail",
            "/v1/reports/audit-trail?subject=qms:capa/CAPA-9&include_admin=true",
        ),
    ];
    for (name, query) in cases {
        let (status, pdf, headers) = download(&http, &reviewer.session, query).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&pdf));
        assert_eq!(headers["content-type"], "application/pdf");
        let report_id = headers["x-trailmark-report-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let path = dir.join(format!("{name}.pdf"));
        std::fs::write(&path, &pdf).unwrap();

        // Trailmark's own verifier: all seven steps, with trust.
        let checked =
            check_file(&pdf, &vkey, Some(&ca_der)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked.bundle.report_id, report_id);
        assert!(checked.signature.as_ref().unwrap().cms.chained_to.is_some());
        assert!(checked.bundle.entries > 0 && checked.bundle.rows > 0);

        // The independent validators accept it.
        let (py, sig) = external_verdicts(&path, &ca_pem, &nss);
        assert_ne!(py, Some(false), "{name}: pyHanko rejects the report");
        assert_ne!(sig, Some(false), "{name}: pdfsig rejects the report");

        // One flipped byte outside /Contents: all three reject it.
        let mut flipped = pdf.clone();
        let at = pdf.len() / 5;
        flipped[at] ^= 0x01;
        let fpath = dir.join(format!("{name}-flipped.pdf"));
        std::fs::write(&fpath, &flipped).unwrap();
        let err = check_file(&flipped, &vkey, Some(&ca_der)).unwrap_err();
        assert!(err.step <= 2, "{name}: {err}");
        let (py, sig) = external_verdicts(&fpath, &ca_pem, &nss);
        assert_ne!(py, Some(true), "{name}: pyHanko accepts a changed file");
        assert_ne!(sig, Some(true), "{name}: pdfsig accepts a changed file");

        // The text a person reads.
        if let Some(text) = pdftotext(&path) {
            let flat: String = text.split_whitespace().collect();
            assert!(text.contains(&report_id), "{name}: report ID missing");
            assert!(text.contains("Page 1 of"), "{name}: page numbers missing");
            assert!(
                text.contains("Łukasz Müller"),
                "{name}: generated-by name missing:\n{text}"
            );
            match name {
                "compliance" => {
                    assert!(text.contains("Jürgen Weiß (E2)"), "{text}");
                    assert!(text.contains("on time"), "{text}");
                }
                _ => {
                    for needle in [
                        "李雷",
                        "Zoë Ødegaard",
                        "Reviewed (reviewed)",
                        "Approved (approved)",
                    ] {
                        assert!(text.contains(needle), "{name}: `{needle}` missing:\n{text}");
                    }
                    // Shown in full, as four groups of 16 (a table cell wraps them).
                    for group in target.as_bytes().chunks(16) {
                        let group = std::str::from_utf8(group).unwrap();
                        assert!(
                            flat.contains(group),
                            "{name}: the closure's hash is not shown in full ({group})"
                        );
                    }
                }
            }
        }

        // Recorded: the report.generated entry names the file's SHA-256.
        let (s, record) = http
            .call(
                "GET",
                &format!("/v1/reports/{report_id}"),
                Some(&reviewer.session),
                None,
            )
            .await;
        assert_eq!(s, 200, "{record}");
        assert_eq!(
            record["payload"]["sha256"],
            hex::encode(Sha256::digest(&pdf))
        );
        assert_eq!(record["payload"]["type"], name);
    }

    // The electronic forms: JSONL re-verifies on its own, and its entries
    // hash as in the ledger; the CSV has a line per row.
    let (s, jsonl, _) = download(
        &http,
        &reviewer.session,
        "/v1/reports/audit-trail?subject=qms:capa/CAPA-9&format=jsonl",
    )
    .await;
    assert_eq!(s, 200);
    let checked = check_file(&jsonl, &vkey, None).unwrap();
    assert!(checked.signature.is_none());
    let text = String::from_utf8(jsonl.clone()).unwrap();
    let mut entries = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(e) = v["entry"].as_str() {
            let seq = v["seq"].as_u64().unwrap();
            let stored = ledger
                .opened
                .store
                .entry(Seq::new(seq).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(e.as_bytes(), stored.canonical.as_slice());
            assert_eq!(
                trailmark::ledger::merkle::leaf_hash(e.as_bytes()).to_hex(),
                hex::encode(&stored.hash)
            );
            entries += 1;
        }
    }
    assert_eq!(entries, checked.bundle.entries);
    let (s, csv, h) = download(
        &http,
        &reviewer.session,
        "/v1/reports/audit-trail?subject=qms:capa/CAPA-9&format=csv",
    )
    .await;
    assert_eq!(s, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("band,seq,recorded_at,kind,actor,subject,content,hash,cites\r\n"));
    let mut reader_rows = 0;
    let mut quoted = false;
    for c in csv.chars() {
        match c {
            '"' => quoted = !quoted,
            '\n' if !quoted => reader_rows += 1,
            _ => {}
        }
    }
    assert_eq!(
        reader_rows - 1,
        checked.bundle.rows as usize,
        "one CSV line per row"
    );

    // Tampering with the JSONL: an altered entry, then a wrong proof node.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // A row's own cell, changed: refused at step 6, naming the column.
    let r = lines
        .iter()
        .position(|l| l.starts_with("{\"cites\"") && l.contains("CAPA-9"))
        .unwrap();
    let original = lines[r].clone();
    lines[r] = original.replacen("CAPA-9", "CAPA-8", 1);
    let err = check_file((lines.join("\n") + "\n").as_bytes(), &vkey, None).unwrap_err();
    assert_eq!(err.step, 6, "{err}");
    assert!(err.reason.contains("column"), "{err}");
    lines[r] = original;
    let i = lines
        .iter()
        .position(|l| l.starts_with("{\"entry\""))
        .unwrap();
    let altered = lines[i].replacen("CAPA-9", "CAPA-8", 1);
    assert_ne!(altered, lines[i]);
    let original = std::mem::replace(&mut lines[i], altered);
    let err = check_file((lines.join("\n") + "\n").as_bytes(), &vkey, None).unwrap_err();
    assert_eq!(err.step, 5, "{err}");
    lines[i] = original;
    let n = lines
        .iter()
        .position(|l| l.starts_with("{\"node\""))
        .unwrap();
    let mut node: Value = serde_json::from_str(&lines[n]).unwrap();
    node["node"][2] = json!("00".repeat(32));
    lines[n] = node.to_string();
    let err = check_file((lines.join("\n") + "\n").as_bytes(), &vkey, None).unwrap_err();
    assert_eq!(err.step, 5, "{err}");
    assert!(err.reason.contains("not included"), "{err}");

    // Who may ask, and what a bad request gets.
    let (s, p) = http
        .call(
            "GET",
            "/v1/reports/lineage?subject=qms:capa/CAPA-9",
            Some(&operator.session),
            None,
        )
        .await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = http
        .call(
            "GET",
            "/v1/reports/compliance?from=2026-02-01&to=2026-01-01",
            Some(&reviewer.session),
            None,
        )
        .await;
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("before"), "{p}");
    let (s, p) = http
        .call(
            "GET",
            "/v1/reports/lineage?subject=qms:capa/NOPE",
            Some(&reviewer.session),
            None,
        )
        .await;
    assert_eq!(s, 404, "{p}");
    let (s, _) = http
        .call(
            "GET",
            "/v1/reports/R-0000000000000000",
            Some(&reviewer.session),
            None,
        )
        .await;
    assert_eq!(s, 404);

    server.stop().await;
    let report = ledger.verify().await.unwrap();
    assert!(report.entries > 0);
    ledger.finish().await;
}
