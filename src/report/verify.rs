//! `trailmark verify-report` (docs/REPORTS.md §7): checks a report offline,
//! needing only the file, the verifier key and (for trust) the report CA.
//!
//! A PDF goes through all seven steps; a JSONL report (the bundle itself)
//! through steps 4 to 7. The PDF reader is deliberately narrow: it reads
//! the one signature dictionary and the one embedded file that Trailmark
//! writes, and refuses anything it does not recognise, rather than being a
//! general PDF parser.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::rc::Rc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::BUNDLE_FORMAT;
use super::proof::{CitedEntry, CitedEntryError, RowChecker};
use super::sign::{CmsCheck, verify_cms};
use crate::ledger::entry::{ParsedEntry, is_canonical};
use crate::ledger::merkle::{self, NodeId, ProofPlan};
use crate::ledger::{Checkpoint, Hash, VerifierKey};

/// Which step failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({name}) failed: {reason}")]
pub struct CheckError {
    /// 1 to 7.
    pub step: u8,
    /// The step's name.
    pub name: &'static str,
    /// What was wrong.
    pub reason: String,
}

fn fail(step: u8, reason: impl Into<String>) -> CheckError {
    let name = match step {
        1 => "signature dictionary",
        2 => "CMS signature",
        3 => "attached proof bundle",
        4 => "checkpoint",
        5 => "entries and inclusion proofs",
        6 => "rows and citations",
        _ => "summary",
    };
    CheckError {
        step,
        name,
        reason: reason.into(),
    }
}

/// What the PDF signature checks found.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    /// Bytes covered by the byte range.
    pub signed_bytes: u64,
    /// The `/M` time, as written.
    pub signing_time: String,
    /// The CMS checks.
    pub cms: CmsCheck,
}

/// What the bundle checks found.
#[derive(Debug, Clone, Default)]
pub struct BundleCheck {
    /// Report ID.
    pub report_id: String,
    /// Type.
    pub ty: String,
    /// Scope as JSON.
    pub scope: String,
    /// Generation time.
    pub generated_at: String,
    /// Actor and printed name.
    pub generated_by: String,
    /// Ledger origin.
    pub origin: String,
    /// Checkpoint size.
    pub checkpoint_size: u64,
    /// Checkpoint root (hex).
    pub checkpoint_root: String,
    /// Rows.
    pub rows: u64,
    /// Entries checked.
    pub entries: u64,
    /// Tree nodes supplied.
    pub nodes: u64,
    /// Size of the bundle.
    pub bytes: u64,
}

/// A checked report.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Steps 1-2 (PDF only).
    pub signature: Option<SignatureCheck>,
    /// Steps 3-6.
    pub bundle: BundleCheck,
}

impl Checked {
    /// The lines `verify-report` prints: each step and what it checked.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let b = &self.bundle;
        if let Some(s) = &self.signature {
            out.push(format!(
                "[1] signature dictionary: /ETSI.CAdES.detached; the byte range covers the whole file except /Contents ({} bytes signed)",
                s.signed_bytes
            ));
            out.push(format!(
                "[2] CMS: SHA-256 of the byte range equals the signed message digest; ECDSA P-256 signature over the signed attributes valid; signing-certificate-v2 matches; signer \"{}\" (certificate SHA-256 {}), issued by \"{}\"; {}; signing time {}",
                s.cms.signer_name,
                s.cms.cert_sha256,
                s.cms.issuer_name,
                s.cms.chained_to.as_ref().map_or_else(
                    || "trust NOT checked (give --ca report-ca.pem)".to_owned(),
                    |ca| format!("chains to the given CA \"{ca}\"")
                ),
                s.signing_time
            ));
            out.push(format!(
                "[3] attached {}: format {BUNDLE_FORMAT}, {} bytes",
                super::BUNDLE_NAME,
                b.bytes
            ));
        }
        out.push(format!(
            "[4] checkpoint: origin {}, size {}, root {}; signature valid for the verifier key",
            b.origin, b.checkpoint_size, b.checkpoint_root
        ));
        out.push(format!(
            "[5] entries: {} canonical entries, each hash recomputed from its bytes and proved included in the tree of size {} ({} tree nodes supplied)",
            b.entries, b.checkpoint_size, b.nodes
        ));
        out.push(format!(
            "[6] rows: {} rows; every cited seq and hash is a checked entry, and every row and total follows from its cited entries",
            b.rows
        ));
        out.push(format!(
            "[7] report {} ({}, {}) generated {} by {}",
            b.report_id, b.ty, b.scope, b.generated_at, b.generated_by
        ));
        out
    }
}

/// Checks a report file: a PDF (all steps) or a JSONL bundle (steps 4-7).
///
/// # Errors
/// The first step that fails.
pub fn check_file(
    bytes: &[u8],
    key: &VerifierKey,
    ca_der: Option<&[u8]>,
) -> Result<Checked, CheckError> {
    if bytes.starts_with(b"%PDF-") {
        let (signature, bundle) = check_pdf_signature(bytes, ca_der)?;
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(bundle)
            .read_to_end(&mut inflated)
            .map_err(|e| fail(3, format!("inflating the attached bundle: {e}")))?;
        let bundle = check_bundle(&inflated, key)?;
        Ok(Checked {
            signature: Some(signature),
            bundle,
        })
    } else {
        Ok(Checked {
            signature: None,
            bundle: check_bundle(bytes, key)?,
        })
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn find_from(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn int_after(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut i = at;
    while bytes
        .get(i)
        .is_some_and(|b| *b == b' ' || *b == b'\n' || *b == b'\r')
    {
        i += 1;
    }
    let start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let n = std::str::from_utf8(bytes.get(start..i)?)
        .ok()?
        .parse()
        .ok()?;
    Some((n, i))
}

/// Steps 1-3: the signature over the file, then the embedded bundle's
/// deflated bytes (inside the signed range).
/// Steps 1-3 of a PDF: the one signature, its byte range covering the
/// whole file but `/Contents`, the CMS and its chain to `ca_der`. Returns
/// the check and the attached file's deflated bytes.
///
/// # Errors
/// The first step that fails.
pub fn check_pdf_signature<'a>(
    bytes: &'a [u8],
    ca_der: Option<&[u8]>,
) -> Result<(SignatureCheck, &'a [u8]), CheckError> {
    let sigs = find_all(bytes, b"/Type /Sig\n");
    if sigs.len() != 1 {
        return Err(fail(
            1,
            format!("expected one signature dictionary, found {}", sigs.len()),
        ));
    }
    let at = find_from(bytes, sigs[0], b"/ByteRange [")
        .ok_or_else(|| fail(1, "the signature dictionary has no /ByteRange"))?;
    let mut pos = at + b"/ByteRange [".len();
    let mut range = [0u64; 4];
    for r in &mut range {
        let (n, next) =
            int_after(bytes, pos).ok_or_else(|| fail(1, "/ByteRange is not four integers"))?;
        *r = n;
        pos = next;
    }
    let len = bytes.len() as u64;
    let [a, b, c, d] = range;
    if a != 0 || b >= c || c.checked_add(d) != Some(len) {
        return Err(fail(
            1,
            format!(
                "/ByteRange [{a} {b} {c} {d}] does not cover the whole file of {len} bytes except /Contents (bytes were appended or removed)"
            ),
        ));
    }
    let (b, c) = (b as usize, c as usize);
    if bytes[b] != b'<'
        || bytes[c - 1] != b'>'
        || !bytes[b + 1..c - 1].iter().all(u8::is_ascii_hexdigit)
    {
        return Err(fail(
            1,
            "the gap in /ByteRange is not exactly the /Contents hex string",
        ));
    }
    if find_from(bytes, at, b"/Contents ") != Some(b - b"/Contents ".len()) {
        return Err(fail(
            1,
            "the gap in /ByteRange is not this dictionary's /Contents",
        ));
    }
    let signing_time = find_from(bytes, sigs[0], b"/M (D:")
        .filter(|p| *p < at)
        .and_then(|p| {
            let end = find_from(bytes, p, b")")?;
            std::str::from_utf8(&bytes[p + 4..end])
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "not stated".into());

    let cms_hex = &bytes[b + 1..c - 1];
    let cms = hex::decode(cms_hex).map_err(|e| fail(2, format!("/Contents is not hex: {e}")))?;
    let der_len =
        der_length(&cms).ok_or_else(|| fail(2, "/Contents does not start with a DER SEQUENCE"))?;
    let mut h = Sha256::new();
    h.update(&bytes[..b]);
    h.update(&bytes[c..]);
    let digest: [u8; 32] = h.finalize().into();
    let check = verify_cms(&cms[..der_len], &digest, ca_der).map_err(|e| fail(2, e.to_string()))?;

    let files = find_all(bytes, b"/Type /EmbeddedFile\n");
    if files.len() != 1 {
        return Err(fail(
            3,
            format!("expected one embedded file, found {}", files.len()),
        ));
    }
    let l = find_from(bytes, files[0], b"/Length ")
        .ok_or_else(|| fail(3, "the embedded file has no /Length"))?;
    let (length, after) =
        int_after(bytes, l + b"/Length ".len()).ok_or_else(|| fail(3, "bad /Length"))?;
    let start = find_from(bytes, after, b"stream\n")
        .ok_or_else(|| fail(3, "the embedded file has no stream"))?
        + b"stream\n".len();
    let end = start
        .checked_add(usize::try_from(length).map_err(|_| fail(3, "bad /Length"))?)
        .filter(|e| *e <= b)
        .ok_or_else(|| fail(3, "the embedded file runs past the signed range"))?;
    Ok((
        SignatureCheck {
            signed_bytes: len - (c - b) as u64,
            signing_time,
            cms: check,
        },
        &bytes[start..end],
    ))
}

/// Length of the DER TLV at the start of `der`.
fn der_length(der: &[u8]) -> Option<usize> {
    if der.first() != Some(&0x30) {
        return None;
    }
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*der.get(2 + i)?);
    }
    Some(2 + n + len).filter(|l| *l <= der.len())
}

/// Steps 4-6 over the bundle's lines (header, rows, entries, nodes, end).
///
/// # Errors
/// The first step that fails.
pub fn check_bundle(bundle: &[u8], key: &VerifierKey) -> Result<BundleCheck, CheckError> {
    let mut out = BundleCheck::default();
    let mut lines = Lines {
        rest: bundle,
        at: 0,
    };
    let (header, cp) = read_header(&mut lines, key, &mut out)?;
    let mut scan = Scan::default();
    for (at, line) in lines.by_ref() {
        scan.line(at, line)?;
    }
    if !scan.ended {
        return Err(fail(5, "the bundle has no end line: it was cut short"));
    }
    scan.check_inclusion(&cp)?;
    scan.check_cites()?;
    check_rows(bundle, &header, &scan.row_lines, &scan.entry_lines)?;
    out.rows = scan.row_lines.len() as u64;
    out.entries = scan.entries.len() as u64;
    out.nodes = scan.nodes.len() as u64;
    out.bytes = bundle.len() as u64;
    Ok(out)
}

/// Steps 3 and 4 on the header line: the bundle's format, what the report
/// says about itself (into `out`), and its checkpoint opened with `key`.
fn read_header(
    lines: &mut Lines<'_>,
    key: &VerifierKey,
    out: &mut BundleCheck,
) -> Result<(Value, Checkpoint), CheckError> {
    let (_, line) = lines.next().ok_or_else(|| fail(3, "the bundle is empty"))?;
    let header: Value =
        serde_json::from_slice(line).map_err(|e| fail(3, format!("a line is not JSON: {e}")))?;
    if header["format"] != BUNDLE_FORMAT {
        return Err(fail(
            3,
            format!("format is {}, expected {BUNDLE_FORMAT}", header["format"]),
        ));
    }
    let s = |k: &str| header[k].as_str().unwrap_or_default().to_owned();
    out.report_id = s("report_id");
    out.ty = s("type");
    out.scope = header["scope"].to_string();
    out.generated_at = s("generated_at");
    out.generated_by = format!(
        "{} ({})",
        header["generated_by"]["printed_name"]
            .as_str()
            .unwrap_or("?"),
        header["generated_by"]["actor"].as_str().unwrap_or("?")
    );
    let note = header["checkpoint"]
        .as_str()
        .ok_or_else(|| fail(4, "the header has no checkpoint"))?;
    let cp = Checkpoint::open(note, key).map_err(|e| fail(4, e.to_string()))?;
    out.origin = cp.origin.clone();
    out.checkpoint_size = cp.size;
    out.checkpoint_root = cp.root.to_hex();
    Ok((header, cp))
}

/// What the first pass over the lines after the header gathers: the cites
/// of the rows, the entries with their leaf hashes, the nodes, and where
/// each row and entry line starts (the rows are read again in
/// [`check_rows`]).
#[derive(Default)]
struct Scan {
    cites: BTreeMap<u64, Hash>,
    entries: Vec<(u64, Hash)>,
    entry_lines: HashMap<u64, usize>,
    row_lines: Vec<usize>,
    nodes: HashMap<NodeId, Hash>,
    ended: bool,
}

impl Scan {
    /// One line, starting at offset `at`: a row, an entry, a node or the
    /// end line, and nothing after the end line.
    fn line(&mut self, at: usize, line: &[u8]) -> Result<(), CheckError> {
        // Typed, so that the rows' cells and facts are skipped here and
        // read once, in the row check.
        let v: BundleLine<'_> = serde_json::from_slice(line)
            .map_err(|e| fail(5, format!("a line is not a bundle line: {e}")))?;
        if self.ended {
            return Err(fail(5, "lines after the end line"));
        }
        if let Some(row) = &v.cites {
            if v.row.is_none() {
                return Err(fail(6, "a line has cites but no row"));
            }
            self.row(at, row)
        } else if let Some(text) = v.entry.as_deref() {
            let seq = v.seq.ok_or_else(|| fail(5, "an entry line has no seq"))?;
            self.entry(at, seq, text, v.hash.as_deref())
        } else if let Some(n) = v.node.as_ref().and_then(Value::as_array) {
            self.node(n)
        } else if let Some(end) = &v.end {
            self.end(end)
        } else {
            Err(fail(5, "a line is neither row, entry, node nor end"))
        }
    }

    /// A row's cites: each entry cited with one hash throughout.
    fn row(&mut self, at: usize, cites: &[CiteLine<'_>]) -> Result<(), CheckError> {
        self.row_lines.push(at);
        for c in cites {
            let seq = c.seq;
            let hash =
                Hash::parse_hex(&c.hash).map_err(|e| fail(6, format!("cite of {seq}: {e}")))?;
            if let Some(prev) = self.cites.insert(seq, hash)
                && prev != hash
            {
                return Err(fail(
                    6,
                    format!("entry {seq} is cited with two different hashes"),
                ));
            }
        }
        Ok(())
    }

    /// An entry: in seq order, canonical, of the seq the line says, and
    /// hashing to the hash the line says.
    fn entry(
        &mut self,
        at: usize,
        seq: u64,
        text: &str,
        said: Option<&str>,
    ) -> Result<(), CheckError> {
        if self.entries.last().is_some_and(|(s, _)| *s >= seq) {
            return Err(fail(5, format!("entry {seq} is out of order")));
        }
        if !is_canonical(text.as_bytes()) {
            return Err(fail(5, format!("entry {seq} is not RFC 8785 canonical")));
        }
        let parsed = ParsedEntry::parse(text.as_bytes())
            .map_err(|e| fail(5, format!("entry {seq}: {e}")))?;
        if parsed.seq != seq {
            return Err(fail(
                5,
                format!("the line says seq {seq}, the entry {}", parsed.seq),
            ));
        }
        let leaf = merkle::leaf_hash(text.as_bytes());
        if !matches!(said.map(Hash::parse_hex), Some(Ok(h)) if h == leaf) {
            return Err(fail(
                5,
                format!(
                    "entry {seq}: its bytes hash to {}, the bundle says {:?}",
                    leaf.to_hex(),
                    said
                ),
            ));
        }
        self.entries.push((seq, leaf));
        self.entry_lines.insert(seq, at);
        Ok(())
    }

    /// A tree node: `[level, index, hash]`.
    fn node(&mut self, n: &[Value]) -> Result<(), CheckError> {
        let level = n
            .first()
            .and_then(Value::as_u64)
            .and_then(|l| u8::try_from(l).ok());
        let index = n.get(1).and_then(Value::as_u64);
        let hash = n.get(2).and_then(Value::as_str).map(Hash::parse_hex);
        match (level, index, hash) {
            (Some(level), Some(index), Some(Ok(h))) => {
                self.nodes.insert(NodeId { level, index }, h);
                Ok(())
            }
            _ => Err(fail(5, "a node line is not [level, index, hash]")),
        }
    }

    /// The end line: its counts of rows, entries and nodes are the
    /// bundle's.
    fn end(&mut self, end: &Value) -> Result<(), CheckError> {
        self.ended = true;
        let counts = (
            end["rows"].as_u64(),
            end["entries"].as_u64(),
            end["nodes"].as_u64(),
        );
        let held = (
            self.row_lines.len() as u64,
            self.entries.len() as u64,
            self.nodes.len() as u64,
        );
        if counts != (Some(held.0), Some(held.1), Some(held.2)) {
            return Err(fail(
                5,
                format!(
                    "the end line counts {counts:?}, the bundle holds {} rows, {} entries, {} nodes",
                    held.0, held.1, held.2
                ),
            ));
        }
        Ok(())
    }

    /// Step 5, second half: every entry's inclusion path, from the
    /// bundle's nodes, leads to the checkpoint's root.
    fn check_inclusion(&self, cp: &Checkpoint) -> Result<(), CheckError> {
        for (seq, leaf) in &self.entries {
            let plan = ProofPlan::inclusion(*seq, cp.size)
                .map_err(|e| fail(5, format!("entry {seq}: {e}")))?;
            let path = plan.assemble(&self.nodes).map_err(|e| {
                fail(
                    5,
                    format!("entry {seq}: the bundle lacks a node of its path: {e}"),
                )
            })?;
            merkle::verify_inclusion(*seq, cp.size, leaf, &path, &cp.root).map_err(|e| {
                fail(
                    5,
                    format!("entry {seq} is not included in the checkpoint's tree: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Step 6, first half: the rows cite exactly the entries the bundle
    /// holds, each with its hash.
    fn check_cites(&self) -> Result<(), CheckError> {
        let checked: HashMap<u64, Hash> = self.entries.iter().copied().collect();
        for (seq, hash) in &self.cites {
            match checked.get(seq) {
                Some(h) if h == hash => {}
                Some(h) => {
                    return Err(fail(
                        6,
                        format!(
                            "a row cites entry {seq} as {}, the entry hashes to {}",
                            hash.to_hex(),
                            h.to_hex()
                        ),
                    ));
                }
                None => {
                    return Err(fail(
                        6,
                        format!("a row cites entry {seq}, which the bundle does not hold"),
                    ));
                }
            }
        }
        if checked.len() != self.cites.len() {
            return Err(fail(6, "the bundle holds entries no row cites"));
        }
        Ok(())
    }
}

/// One bundle line after the header, as the first pass reads it.
#[derive(serde::Deserialize)]
struct BundleLine<'a> {
    #[serde(borrow, default)]
    cites: Option<Vec<CiteLine<'a>>>,
    #[serde(default)]
    row: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    entry: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    node: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
}

/// A cite as the first pass reads it.
#[derive(serde::Deserialize)]
struct CiteLine<'a> {
    seq: u64,
    #[serde(borrow)]
    hash: std::borrow::Cow<'a, str>,
}

/// The bundle's lines with their offsets.
struct Lines<'a> {
    rest: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(self.rest.len());
        let line = &self.rest[..end];
        let at = self.at;
        let used = (end + 1).min(self.rest.len());
        self.rest = &self.rest[used..];
        self.at += used;
        Some((at, line))
    }
}

/// The line starting at `at`.
fn line_at(bundle: &[u8], at: usize) -> &[u8] {
    let rest = &bundle[at..];
    &rest[..rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len())]
}

/// Step 6, second half: every row recomputed from its cited entries
/// (REPORTS.md §4.1). Entries are parsed again when cited; the shared ones
/// (revision, person, matrix) from a small cache.
fn check_rows(
    bundle: &[u8],
    header: &Value,
    row_lines: &[usize],
    entry_lines: &HashMap<u64, usize>,
) -> Result<(), CheckError> {
    let mut checker = RowChecker::new(
        header["type"].as_str().unwrap_or_default(),
        &header["scope"],
        header["generated_at"].as_str().unwrap_or_default(),
    );
    let mut cache: HashMap<u64, Rc<CitedEntry>> = HashMap::new();
    let mut entry = |seq: u64| -> Result<Rc<CitedEntry>, CitedEntryError> {
        if let Some(e) = cache.get(&seq) {
            return Ok(Rc::clone(e));
        }
        let at = entry_lines
            .get(&seq)
            .ok_or(CitedEntryError::NotInBundle(seq))?;
        let line: BundleLine<'_> = serde_json::from_slice(line_at(bundle, *at))
            .map_err(|problem| CitedEntryError::Malformed { seq, problem })?;
        let text = line.entry.as_deref().unwrap_or_default();
        let hash = line.hash.as_deref().unwrap_or_default().to_owned();
        let e = Rc::new(CitedEntry::parse(seq, hash, text.as_bytes())?);
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(seq, Rc::clone(&e));
        Ok(e)
    };
    for (i, at) in row_lines.iter().enumerate() {
        let v: Value = serde_json::from_slice(line_at(bundle, *at))
            .map_err(|e| fail(6, format!("row {}: {e}", i + 1)))?;
        checker
            .row(&v, &mut entry)
            .map_err(|e| fail(6, format!("row {}: {e}", i + 1)))?;
    }
    checker.finish().map_err(|e| fail(6, e.to_string()))
}

/// Reads a whole file for checking.
///
/// # Errors
/// A read failure.
pub fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}
