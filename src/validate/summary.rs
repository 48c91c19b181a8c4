//! The evidence package's summary PDF (docs/VALIDATION.md §5): scope,
//! environment, results, deviations, traceability and the ledger record,
//! with `results.json` attached, signed like a report (REPORTS.md §6).

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::Context as _;
use chrono::Utc;
use serde_json::Value;

use super::Record;
use crate::instance::Instance;
use crate::report::font::Style;
use crate::report::pdf::{self, Attachment, Column, Doc, Meta};

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn col(label: &str, share: f32, style: Style) -> Column {
    Column {
        label: label.into(),
        share,
        style,
    }
}

/// Writes and signs `path`: the fields of the run, then the sections of
/// its results (installation checks, test cases, deviations,
/// traceability, steps), then `results.json` attached and the signature.
///
/// # Errors
/// No report-signing key, or a write failure.
pub fn write(
    opened: &Instance,
    path: &Path,
    results: &Value,
    record: &Record,
) -> anyhow::Result<()> {
    let signer = crate::report::sign::ReportSigner::from_dir(&opened.dir)?
        .context("the installation has no report-signing key; run `trailmark ca init-reports`")?;
    let phase = s(&results["phase"]).to_uppercase();
    let run_id = s(&results["run_id"]);
    let title = format!("{phase} evidence package");
    let mut doc = Doc::create(
        path,
        true,
        format!("Trailmark · {title}"),
        run_id.clone(),
        format!(
            "Ledger {} · entry {} · results.json attached",
            opened.config.origin, record.seq
        ),
    )?;
    doc.paragraph(
        Style::Bold,
        16.0,
        &format!(
            "{title}: {}",
            if results["verdict"] == "pass" {
                "PASS"
            } else {
                "FAIL"
            }
        ),
    )?;
    doc.space(4.0)?;
    let mut fields = run_fields(results);
    fields.extend(record_fields(results, record));
    doc.fields(&fields)?;
    doc.space(8.0)?;
    checks_table(&mut doc, results)?;
    cases_table(&mut doc, results)?;
    deviations_section(&mut doc, results)?;
    doc.space(8.0)?;
    traceability_table(&mut doc, results)?;
    steps_table(&mut doc, results)?;
    let attached = deflated_results(results)?;
    let meta = Meta {
        title: format!("Trailmark {title} {run_id}"),
        author: match results["executed_by"].as_object() {
            Some(e) => format!("{} ({})", s(&e["printed_name"]), s(&e["user_id"])),
            None => "system:cli".into(),
        },
        subject: format!("{phase} of {}", opened.config.origin),
        created: Utc::now(),
        reason: format!("Trailmark validation evidence {run_id}"),
    };
    finish_and_sign(doc, path, &meta, attached, &signer)
}

/// A field of the title block: label, value, style.
type Field = (String, String, Style);

/// The fields of the run: its ID, verdict and completeness, the counts,
/// when and by whom, the installation and the instance under test.
fn run_fields(results: &Value) -> Vec<Field> {
    let r = Style::Regular;
    let counts = &results["counts"];
    let mut fields = vec![
        ("Run ID".to_owned(), s(&results["run_id"]), Style::Mono),
        ("Verdict".to_owned(), s(&results["verdict"]).to_uppercase(), Style::Bold),
        (
            "Complete".to_owned(),
            if results["phase"] == "iq" {
                "yes: every installation check ran".to_owned()
            } else if results["complete"] == true {
                "yes: every requirement is covered by a test that ran".to_owned()
            } else {
                format!("NO: not covered by a test that ran: {}", results["uncovered"].as_array().map(|u| u.iter().map(s).collect::<Vec<_>>().join(", ")).filter(|t| !t.is_empty()).unwrap_or_else(|| "(a partial run)".into()))
            },
            r,
        ),
        (
            "Results".to_owned(),
            format!("{} passed, {} failed, {} not run; {} deviations", s(&counts["passed"]), s(&counts["failed"]), s(&counts["not_run"]), results["deviations"].as_array().map_or(0, Vec::len)),
            r,
        ),
        ("Executed".to_owned(), format!("{} to {} ({} s)", s(&results["started_at"]), s(&results["finished_at"]), s(&results["duration_seconds"])), r),
        (
            "Executed by".to_owned(),
            match results["executed_by"].as_object() {
                Some(e) => format!("{} ({})", s(&e["printed_name"]), s(&e["user_id"])),
                None => "system:cli (no executor named; sign with `trailmark validate sign DIR --meaning executed`)".into(),
            },
            r,
        ),
        ("Installation".to_owned(), format!("{} · {} · {}", s(&results["installation"]["origin"]), s(&results["installation"]["backend"]), s(&results["installation"]["data_dir"])), r),
    ];
    if let Some(t) = results.get("target") {
        fields.push((
            "Instance under test".to_owned(),
            format!(
                "{} at {} on {}; {}",
                s(&t["kind"]),
                s(&t["url"]),
                s(&t["backend"]),
                s(&t["configuration"])
            ),
            r,
        ));
    }
    fields
}

/// The fields of what ran and where it is recorded: the software, the
/// environment, the requirements and protocols with their hashes, the
/// ledger entry and its signatures, and how to check the package.
fn record_fields(results: &Value, record: &Record) -> Vec<Field> {
    let r = Style::Regular;
    let mut fields = Vec::new();
    let sw = &results["software"];
    fields.push((
        "Software".to_owned(),
        format!(
            "trailmark {} ({} build)",
            s(&sw["version"]),
            s(&sw["profile"])
        ),
        r,
    ));
    fields.push((
        "Executable SHA-256".to_owned(),
        s(&sw["sha256"]),
        Style::Mono,
    ));
    let env = &results["environment"];
    fields.push((
        "Environment".to_owned(),
        format!(
            "{} · {} {} · {} CPUs · OS user {}",
            s(&env["host"]),
            s(&env["os"]),
            s(&env["arch"]),
            s(&env["cpus"]),
            s(&env["user"])
        ),
        r,
    ));
    fields.push((
        "Requirements".to_owned(),
        format!(
            "{} ({} requirements), SHA-256 {}",
            s(&results["requirements"]["file"]),
            s(&results["requirements"]["count"]),
            s(&results["requirements"]["sha256"])
        ),
        r,
    ));
    if let Some(protocols) = results["protocols"].as_array() {
        for p in protocols {
            fields.push((
                "Protocol".to_owned(),
                format!(
                    "{} ({} cases), SHA-256 {}",
                    s(&p["file"]),
                    s(&p["cases"]),
                    s(&p["sha256"])
                ),
                r,
            ));
        }
    }
    fields.push((
        "Ledger record".to_owned(),
        format!(
            "entry {} (validation.run.recorded), hash {}",
            record.seq, record.hash
        ),
        Style::Mono,
    ));
    if record.signatures.is_empty() {
        fields.push(("Signatures".to_owned(), "none yet".into(), r));
    }
    for (seq, _, v) in &record.signatures {
        fields.push((
            "Signature".to_owned(),
            format!("{} · entry {seq}", v.line),
            Style::Bold,
        ));
    }
    fields.push((
        "How to check".to_owned(),
        "This PDF is signed with the installation's report certificate. `trailmark validate check DIR` re-hashes every file of the package against MANIFEST.sha256 and checks results.json against the ledger entry above; `sha256sum -c MANIFEST.sha256` checks the files alone.".into(),
        r,
    ));
    fields
}

/// The installation checks (IQ), if the results have them.
fn checks_table(doc: &mut Doc, results: &Value) -> anyhow::Result<()> {
    let r = Style::Regular;
    if let Some(checks) = results["checks"].as_array() {
        doc.paragraph(Style::Bold, 12.0, "Installation checks")?;
        doc.table(
            vec![
                col("Check", 0.07, Style::Mono),
                col("What", 0.2, r),
                col("Expected", 0.25, r),
                col("Observed", 0.38, r),
                col("Result", 0.1, Style::Bold),
            ],
            7.5,
        )?;
        for c in checks {
            doc.row(&[
                s(&c["id"]),
                s(&c["title"]),
                s(&c["expected"]),
                s(&c["observed"]),
                s(&c["result"]).to_uppercase(),
            ])?;
        }
        doc.end_table();
        doc.space(8.0)?;
    }
    Ok(())
}

/// The results per test case (OQ), if the results have them.
fn cases_table(doc: &mut Doc, results: &Value) -> anyhow::Result<()> {
    let r = Style::Regular;
    if let Some(cases) = results["cases"].as_array() {
        doc.paragraph(Style::Bold, 12.0, "Results per test case")?;
        doc.table(
            vec![
                col("Case", 0.09, Style::Mono),
                col("Title", 0.4, r),
                col("Requirements", 0.29, Style::Mono),
                col("Steps", 0.08, r),
                col("Result", 0.14, Style::Bold),
            ],
            7.5,
        )?;
        for c in cases {
            let steps = c["steps"].as_array().map_or(0, Vec::len);
            let mut result = s(&c["result"]).to_uppercase();
            if let Some(why) = c["not_run_reason"].as_str() {
                result = format!("{result}: {why}");
            }
            doc.row(&[
                s(&c["id"]),
                s(&c["title"]),
                c["covers"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
                steps.to_string(),
                result,
            ])?;
        }
        doc.end_table();
        doc.space(8.0)?;
    }
    Ok(())
}

/// The deviations, or a sentence saying there are none.
fn deviations_section(doc: &mut Doc, results: &Value) -> anyhow::Result<()> {
    let r = Style::Regular;
    doc.paragraph(Style::Bold, 12.0, "Deviations")?;
    let deviations = results["deviations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if deviations.is_empty() {
        doc.paragraph(
            r,
            9.0,
            "None: every check and step met its expected result.",
        )?;
    } else {
        doc.table(
            vec![
                col("ID", 0.07, Style::Mono),
                col("Where", 0.1, Style::Mono),
                col("Expected", 0.3, r),
                col("Observed", 0.38, r),
                col("Raised (UTC)", 0.15, r),
            ],
            7.5,
        )?;
        for d in &deviations {
            let at = if d["step"] == 0 {
                s(&d["case"])
            } else {
                format!("{} step {}", s(&d["case"]), s(&d["step"]))
            };
            doc.row(&[
                s(&d["id"]),
                at,
                s(&d["expected"]),
                s(&d["observed"]),
                s(&d["raised_at"]),
            ])?;
        }
        doc.end_table();
    }
    Ok(())
}

/// The traceability matrix: requirement, test cases, result.
fn traceability_table(doc: &mut Doc, results: &Value) -> anyhow::Result<()> {
    let r = Style::Regular;
    if let Some(trace) = results["traceability"].as_array() {
        doc.paragraph(
            Style::Bold,
            12.0,
            "Traceability matrix: requirement -> test cases -> result",
        )?;
        doc.table(
            vec![
                col("Req.", 0.07, Style::Mono),
                col("Requirement", 0.47, r),
                col("Source", 0.12, r),
                col("Risk", 0.06, r),
                col("Test cases", 0.18, Style::Mono),
                col("Result", 0.1, Style::Bold),
            ],
            7.0,
        )?;
        for t in trace {
            let cases = t["cases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| format!("{} {}", s(&c["id"]), s(&c["result"])))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            let result = match t["planned"].as_str() {
                Some(p) => format!("PLANNED: {p}"),
                None => s(&t["result"]).to_uppercase(),
            };
            doc.row(&[
                s(&t["requirement"]),
                s(&t["text"]),
                s(&t["source"]),
                s(&t["risk"]),
                cases,
                result,
            ])?;
        }
        doc.end_table();
        doc.space(8.0)?;
    }
    Ok(())
}

/// Every step of every case, expected against observed, with its evidence
/// file.
fn steps_table(doc: &mut Doc, results: &Value) -> anyhow::Result<()> {
    let r = Style::Regular;
    if let Some(cases) = results["cases"].as_array() {
        doc.paragraph(Style::Bold, 12.0, "Steps: expected and observed")?;
        doc.table(
            vec![
                col("Step", 0.05, Style::Mono),
                col("Expected", 0.32, r),
                col("Observed", 0.42, r),
                col("Result", 0.07, Style::Bold),
                col("Evidence", 0.14, Style::Mono),
            ],
            7.0,
        )?;
        for c in cases {
            doc.band(&format!("{}: {}", s(&c["id"]), s(&c["title"])))?;
            for st in c["steps"].as_array().into_iter().flatten() {
                let mut observed = s(&st["observed"]);
                if let Some(f) = st["failures"].as_array().filter(|f| !f.is_empty()) {
                    observed = format!(
                        "{observed}\nNOT MET: {}",
                        f.iter().map(s).collect::<Vec<_>>().join("; ")
                    );
                }
                doc.row(&[
                    s(&st["n"]),
                    s(&st["expected"]),
                    observed,
                    s(&st["result"]).to_uppercase(),
                    s(&st["evidence"]).replace("evidence/", ""),
                ])?;
            }
        }
        doc.end_table();
    }

    Ok(())
}

/// `results.json` as attached: its bytes, and a temporary file holding
/// them deflated (so the PDF alone carries the data), read from its start.
fn deflated_results(results: &Value) -> anyhow::Result<(Vec<u8>, File)> {
    let raw = serde_json::to_vec_pretty(results)?;
    let mut attached = tempfile::tempfile()?;
    let mut z = flate2::write::ZlibEncoder::new(&mut attached, flate2::Compression::default());
    z.write_all(&raw)?;
    z.finish()?;
    attached.seek(SeekFrom::Start(0))?;
    Ok((raw, attached))
}

/// Finishes the PDF with `results.json` (`raw`, deflated in `attached`)
/// attached, and signs it with the report certificate.
fn finish_and_sign(
    doc: Doc,
    path: &Path,
    meta: &Meta,
    (raw, mut attached): (Vec<u8>, File),
    signer: &crate::report::sign::ReportSigner,
) -> anyhow::Result<()> {
    let (placeholders, _) = doc.finish(
        meta,
        &mut attached,
        &Attachment {
            name: "results.json",
            media_type: "application/json",
            description: format!(
                "The run's results ({}), SHA-256 {}",
                super::RESULTS_FORMAT,
                super::protocol::sha256_hex(&raw)
            ),
            size: raw.len() as u64,
        },
    )?;
    pdf::sign_file(path, placeholders, |digest| signer.sign_digest(digest))?;
    Ok(())
}
