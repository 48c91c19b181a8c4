//! The output forms of a report, written in one pass over its rows: the
//! proof bundle ([`Bundle`], JSONL: the report itself, or the PDF's
//! attachment), the signed PDF ([`PdfSink`]) and the CSV ([`CsvSink`]).
//! [`Out`] feeds every row to each form being written and remembers the
//! entries the rows cite.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::font::Style;
use super::pdf::{self, Column, Doc, Meta};
use super::sign::ReportSigner;
use super::{
    BUNDLE_FORMAT, BUNDLE_NAME, Col, Format, ReportError, ReportType, Requester, Row, Scope,
    columns,
};
use crate::integration::queries;
use crate::ledger::{Hash, Seq};
use crate::store::StoredCheckpoint;

/// What every form says about the report: what it is, whom it is for, the
/// checkpoint its proofs are against, and the PDF's signer.
pub(super) struct Heading<'a> {
    pub(super) ty: ReportType,
    pub(super) scope: &'a Scope,
    pub(super) report_id: &'a str,
    pub(super) generated_at: &'a str,
    pub(super) now: DateTime<Utc>,
    pub(super) by: &'a Requester,
    pub(super) origin: &'a str,
    pub(super) cp: &'a StoredCheckpoint,
    pub(super) root: &'a Hash,
    pub(super) signer: Option<&'a ReportSigner>,
}

impl Heading<'_> {
    /// The bundle's first line (REPORTS.md §4).
    fn bundle_header(&self, cols: &[Col]) -> Value {
        json!({
            "format": BUNDLE_FORMAT,
            "report_id": self.report_id,
            "type": self.ty.as_str(),
            "scope": self.scope,
            "generated_at": self.generated_at,
            "generated_by": {"actor": self.by.actor.as_str(), "printed_name": self.by.printed_name},
            "origin": self.origin,
            "checkpoint": self.cp.note,
            "columns": cols.iter().map(|c| json!({"key": c.key, "label": c.label})).collect::<Vec<_>>(),
        })
    }
}

/// The file a report became: its SHA-256, size, and pages (PDF only).
pub(super) struct Written {
    pub(super) sha256: String,
    pub(super) bytes: u64,
    pub(super) pages: u64,
}

/// Every form being written at once.
pub(super) struct Out {
    ty: ReportType,
    pub(super) pdf: Option<PdfSink>,
    pub(super) lines: Bundle,
    csv: Option<CsvSink>,
    /// Seq to hash of every entry a row cites.
    pub(super) cited: BTreeMap<Seq, Hash>,
    pub(super) rows: u64,
    pub(super) checkpoint_size: u64,
}

impl Out {
    /// Opens the forms of `format` at `path` (the PDF's bundle goes to
    /// `tmp`) and writes their headings.
    pub(super) fn open(
        heading: &Heading<'_>,
        format: Format,
        path: &Path,
        tmp: &File,
    ) -> Result<Out, ReportError> {
        let cols = columns(heading.ty);
        let mut lines = Bundle::open(format, path, tmp)?;
        lines.line(&heading.bundle_header(cols))?;
        let csv = match format {
            Format::Csv => Some(CsvSink::create(path, cols)?),
            _ => None,
        };
        let pdf = match format {
            Format::Pdf => Some(PdfSink::create(path, heading, cols)?),
            _ => None,
        };
        Ok(Out {
            ty: heading.ty,
            pdf,
            lines,
            csv,
            cited: BTreeMap::new(),
            rows: 0,
            checkpoint_size: heading.cp.size,
        })
    }

    /// Feeds one row to every form; its cites at or beyond the checkpoint
    /// are left out, the others remembered.
    pub(super) fn row(&mut self, row: Row) -> Result<(), ReportError> {
        let cols = columns(self.ty);
        let cites: Vec<(Seq, Hash, &str)> = row
            .cites
            .into_iter()
            .filter(|(seq, _, _)| seq.get() < self.checkpoint_size)
            .collect();
        for (seq, hash, _) in &cites {
            self.cited.insert(*seq, *hash);
        }
        let cites_json: Vec<Value> = cites
            .iter()
            .map(|(seq, h, role)| json!({"seq": seq, "hash": h.to_hex(), "as": role}))
            .collect();
        if let Some(text) = &row.band {
            self.lines
                .line(&json!({"row": {"band": text}, "facts": row.facts, "cites": cites_json}))?;
            if let Some(pdf) = &mut self.pdf {
                pdf.doc.band(text)?;
            }
            if let Some(csv) = &mut self.csv {
                csv.band(text, cols.len())?;
            }
        } else {
            let mut map = Map::new();
            for (c, v) in cols.iter().zip(&row.values) {
                map.insert(c.key.into(), Value::String(v.clone()));
            }
            self.lines
                .line(&json!({"row": map, "facts": row.facts, "cites": cites_json}))?;
            if let Some(pdf) = &mut self.pdf {
                pdf.row(cols, &row.values)?;
            }
            if let Some(csv) = &mut self.csv {
                csv.row(&row.values, &cites)?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Ends every form once the bundle is complete: the bundle flushed,
    /// then the PDF finished with the bundle (`tmp`) attached and signed
    /// (`lap` is told when it is finished, before the signing), or the CSV
    /// flushed; the file at `path` hashed.
    pub(super) fn finish(
        self,
        heading: &Heading<'_>,
        tmp: File,
        path: &Path,
        lap: impl FnOnce(&'static str),
    ) -> Result<Written, ReportError> {
        let Out {
            pdf, lines, csv, ..
        } = self;
        let (bundle_sha, size) = lines.finish()?;
        match (pdf, csv) {
            (Some(pdf), _) => pdf.finish(heading, tmp, &bundle_sha, size, path, lap),
            (None, Some(csv)) => csv.finish(path),
            (None, None) => Ok(Written {
                sha256: bundle_sha,
                bytes: size,
                pages: 0,
            }),
        }
    }
}

/// The proof bundle: a line-oriented sink with its running SHA-256 and
/// size.
pub(super) struct Bundle {
    w: Box<dyn Write + Send>,
    sha: Sha256,
    size: u64,
}

impl Bundle {
    /// The bundle of `format`: the output at `path` itself for JSONL, a
    /// deflated temporary file (`tmp`) for the PDF, nothing for CSV (which
    /// still needs the cited set).
    fn open(format: Format, path: &Path, tmp: &File) -> io::Result<Bundle> {
        let w: Box<dyn Write + Send> = match format {
            Format::Jsonl => Box::new(BufWriter::with_capacity(1 << 16, File::create(path)?)),
            Format::Pdf => Box::new(ZlibEncoder::new(
                BufWriter::with_capacity(1 << 16, tmp.try_clone()?),
                Compression::fast(),
            )),
            Format::Csv => Box::new(io::sink()),
        };
        Ok(Bundle {
            w,
            sha: Sha256::new(),
            size: 0,
        })
    }

    /// Writes `v` as one line.
    pub(super) fn line(&mut self, v: &Value) -> io::Result<()> {
        let mut text = serde_json::to_vec(v).map_err(io::Error::other)?;
        text.push(b'\n');
        self.sha.update(&text);
        self.size += text.len() as u64;
        self.w.write_all(&text)
    }

    /// Flushes the bundle; returns its SHA-256 (hex) and size.
    fn finish(self) -> io::Result<(String, u64)> {
        let Bundle { mut w, sha, size } = self;
        w.flush()?;
        drop(w);
        Ok((hex::encode(sha.finalize()), size))
    }
}

/// The CSV form: a band line, then one line per row with its cites.
struct CsvSink {
    w: BufWriter<File>,
}

impl CsvSink {
    /// Creates the file with its header line.
    fn create(path: &Path, cols: &[Col]) -> io::Result<CsvSink> {
        let mut w = BufWriter::new(File::create(path)?);
        let mut head = vec!["band".to_owned()];
        head.extend(cols.iter().map(|c| c.key.to_owned()));
        head.push("cites".into());
        csv_line(&mut w, &head)?;
        Ok(CsvSink { w })
    }

    /// A band: its text in the first field, the others empty.
    fn band(&mut self, text: &str, columns: usize) -> io::Result<()> {
        let mut fields = vec![text.to_owned()];
        fields.resize(columns + 2, String::new());
        csv_line(&mut self.w, &fields)
    }

    /// A row: no band, its values, and its cites as `seq:hash`.
    fn row(&mut self, values: &[String], cites: &[(Seq, Hash, &str)]) -> io::Result<()> {
        let mut fields: Vec<String> = vec![String::new()];
        fields.extend(values.iter().cloned());
        fields.push(
            cites
                .iter()
                .map(|(s, h, _)| format!("{s}:{}", h.to_hex()))
                .collect::<Vec<_>>()
                .join(" "),
        );
        csv_line(&mut self.w, &fields)
    }

    fn finish(mut self, path: &Path) -> Result<Written, ReportError> {
        self.w.flush()?;
        drop(self);
        Ok(Written {
            sha256: file_sha256(path)?,
            bytes: std::fs::metadata(path)?.len(),
            pages: 0,
        })
    }
}

/// The PDF form: the title block, then the rows as a table.
pub(super) struct PdfSink {
    doc: Doc,
}

impl PdfSink {
    /// Creates the document with its running header and footer, the title
    /// block, and the table's header.
    fn create(path: &Path, heading: &Heading<'_>, cols: &[Col]) -> io::Result<PdfSink> {
        let ty = heading.ty;
        let mut doc = Doc::create(
            path,
            ty != ReportType::Lineage,
            format!("Trailmark · {}", ty.title()),
            heading.report_id.to_owned(),
            format!(
                "Ledger {} · signed; proofs in the attached {BUNDLE_NAME}",
                heading.origin
            ),
        )?;
        title_block(&mut doc, heading)?;
        let pcols = cols
            .iter()
            .map(|c| Column {
                label: c.label.into(),
                share: c.share,
                style: c.style,
            })
            .collect();
        doc.table(
            pcols,
            if ty == ReportType::Compliance {
                6.5
            } else {
                7.0
            },
        )?;
        Ok(PdfSink { doc })
    }

    /// A row of the table, hashes grouped so that they wrap.
    fn row(&mut self, cols: &[Col], values: &[String]) -> io::Result<()> {
        let cells: Vec<String> = cols
            .iter()
            .zip(values)
            .map(|(c, v)| {
                if c.style == Style::Mono {
                    group_hashes(v)
                } else {
                    v.clone()
                }
            })
            .collect();
        self.doc.row(&cells)
    }

    /// Ends the table with the closing paragraph: `rows` rows, `cited`
    /// entries proved against the checkpoint of size `size`.
    pub(super) fn close(&mut self, rows: u64, cited: usize, size: u64) -> io::Result<()> {
        self.doc.end_table();
        self.doc.space(10.0)?;
        self.doc.paragraph(
            Style::Regular,
            8.0,
            &format!(
                "{rows} rows. {cited} ledger entries are cited; each is attached in its canonical form with its RFC 9162 inclusion proof against the checkpoint of size {size}. End of report."
            ),
        )
    }

    /// Finishes the document with the bundle attached (`bundle`, deflated;
    /// `bundle_sha` and `size` of its inflated bytes), then signs it.
    fn finish(
        self,
        heading: &Heading<'_>,
        mut bundle: File,
        bundle_sha: &str,
        size: u64,
        path: &Path,
        lap: impl FnOnce(&'static str),
    ) -> Result<Written, ReportError> {
        let (ty, report_id, by) = (heading.ty, heading.report_id, heading.by);
        let signer = heading.signer.expect("PDF has a signer");
        let meta = Meta {
            title: format!("{} {report_id}", ty.title()),
            author: format!("{} ({})", by.printed_name, by.actor.as_str()),
            subject: format!("{}: {}", ty.as_str(), heading.scope.describe()),
            created: heading.now,
            reason: format!("Trailmark report {report_id}"),
        };
        let (placeholders, pages) = self.doc.finish(
            &meta,
            &mut bundle,
            &pdf::Attachment {
                name: BUNDLE_NAME,
                media_type: "application/jsonl",
                description: format!("Proof bundle ({BUNDLE_FORMAT}), SHA-256 {bundle_sha}"),
                size,
            },
        )?;
        lap("PDF finished (fonts, bundle copied in)");
        let sha256 = pdf::sign_file(path, placeholders, |digest| signer.sign_digest(digest))?;
        Ok(Written {
            sha256,
            bytes: std::fs::metadata(path)?.len(),
            pages,
        })
    }
}

/// The PDF's title block: what the report is, for whom, against which
/// checkpoint, signed by whom, and how to check it.
fn title_block(doc: &mut Doc, h: &Heading<'_>) -> io::Result<()> {
    doc.paragraph(Style::Bold, 16.0, h.ty.title())?;
    doc.space(4.0)?;
    let r = Style::Regular;
    let mut fields = vec![
        ("Report ID".to_owned(), h.report_id.to_owned(), Style::Mono),
        ("Scope".to_owned(), h.scope.describe(), r),
        (
            "Generated".to_owned(),
            format!("{} UTC", h.now.format("%Y-%m-%d %H:%M:%S")),
            r,
        ),
        (
            "Generated by".to_owned(),
            format!("{} ({})", h.by.printed_name, h.by.actor.as_str()),
            r,
        ),
        ("Ledger origin".to_owned(), h.origin.to_owned(), r),
        (
            "Checkpoint".to_owned(),
            format!("size {} · signed {}", h.cp.size, h.cp.signed_at),
            r,
        ),
        (
            "Checkpoint root".to_owned(),
            group_hashes(&h.root.to_hex()),
            Style::Mono,
        ),
    ];
    if let Some(s) = h.signer {
        fields.push((
            "Signed by".to_owned(),
            format!(
                "{} (certificate SHA-256 {})",
                s.signer_name(),
                s.cert_sha256()
            ),
            r,
        ));
    }
    fields.push((
        "How to check".to_owned(),
        format!("The PDF signature covers the whole file. The attached {BUNDLE_NAME} holds every cited entry and its inclusion proof against the checkpoint above: `trailmark verify-report FILE.pdf --key VERIFIER_KEY --ca report-ca.pem` checks both offline."),
        r,
    ));
    doc.fields(&fields)?;
    doc.space(10.0)
}

/// Hex hashes split into groups of 16, so they wrap at group boundaries.
fn group_hashes(text: &str) -> String {
    text.split('\n')
        .map(|part| {
            if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                part.as_bytes()
                    .chunks(16)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes one CSV record: each field escaped, CRLF-terminated.
fn csv_line(w: &mut impl Write, fields: &[String]) -> io::Result<()> {
    let escaped: Vec<String> = fields.iter().map(|f| queries::csv_field(f)).collect();
    w.write_all(escaped.join(",").as_bytes())?;
    w.write_all(b"\r\n")
}

/// SHA-256 (hex) of the file at `path`.
fn file_sha256(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    pdf::copy_into(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_grouped_by_sixteen() {
        let h = "0123456789abcdef".repeat(4);
        assert_eq!(
            group_hashes(&format!("x\n{h}")),
            format!("x\n{0} {0} {0} {0}", "0123456789abcdef")
        );
    }
}
