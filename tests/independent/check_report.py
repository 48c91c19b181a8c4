#!/usr/bin/env python3
"""Check a Trailmark report proof bundle (docs/REPORTS.md §4, §4.1, §7 steps 4-6).

usage: check_report.py BUNDLE.jsonl|REPORT.pdf --key VERIFIER_KEY_TEXT_OR_FILE

Written from docs/REPORTS.md and docs/FORMAT.md alone. For a PDF, the
attached `trailmark-proof.jsonl` is extracted with the standard library
(zlib, re); the PDF's CMS signature (steps 1-2) is NOT checked here: use
pyHanko or pdfsig for it.

Exit 0 and "OK: <n> rows, <m> entries checked against checkpoint <size>",
or 1 and "FAILED: row <k>: ..." / "FAILED: step <s> (...): ..." at the first
failure. Choices the spec leaves open are marked `# GUESS:`.
"""
import argparse
import os
import re
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmcommon import (jcs, VerifyError, VerifierKey, load_key_arg, verify_signed_checkpoint,  # noqa: E402
                      parse_json, check_no_lone_surrogates, jcs, Num, leaf_hash, HEX64,
                      subtree_hash, inclusion_ranges, verify_inclusion,
                      rfc3339_micros, stored_time_micros, sha256)
from verify_export import load_format_registry, MEMBERS as ENTRY_MEMBERS, ACTOR_RE  # noqa: E402

FORMAT = "trailmark-report-proof-v2"
HEADER_MEMBERS = {"format", "report_id", "type", "scope", "generated_at", "generated_by",
                  "origin", "checkpoint", "columns"}
STATUSES = ["on_time", "late", "open", "overdue", "missing", "cancelled"]
SUPERSEDED = "superseded by a newer version"
COMPLIANCE_COLUMNS = ["document", "effective_at", "person", "job_functions", "assigned_at",
                      "lag", "due_at", "completed_at", "status", "evidence"]
FACT_KEYS = {"document_id", "version", "effective_at", "person_id", "person_name", "job_functions",
             "assignment_id", "required_from", "recorded_at", "due_at", "completed_at",
             "ended_at", "end_reason", "as_of", "status"}
# Cells of a lineage / audit-trail row that §4.1 proves from the one cited entry.
ENTRY_CELLS = ["seq", "recorded_at", "kind", "actor", "subject", "hash", "details", "content"]
ROLES = {  # role -> (kind, required actor or None)
    "revision": ("qms.document.revision_effective", None),
    "person": ("hr.person.updated", None),
    "matrix": ("qms.training_matrix.changed", None),
    "assignment": ("lms.assignment.created", "system:rules"),
    "completion": ("lms.completion.recorded", None),
    "cancellation": ("lms.assignment.cancelled", "system:rules"),
    "superseded_by": ("qms.document.revision_effective", None),
}
NULL = "\u2014"  # "—" for a null (§4.1 display cells)


class Fail(VerifyError):
    pass


def fail(msg):
    raise Fail(msg)


def as_uint(v, what):
    if isinstance(v, bool) or not isinstance(v, Num) or not v.is_integer() or not 0 <= v.value <= 2 ** 53 - 1:
        fail(f"{what} is not a non-negative integer: {show(v)}")
    return int(v.value)


def show(v):
    """A value as it would be written in JSON, for messages."""
    try:
        return jcs(v)
    except TypeError:
        return repr(v)


def same(a, b):
    """JSON value equality (numbers by value)."""
    return jcs(a) == jcs(b)


def text(v):
    """A fact value as display text: strings unchanged, numbers as JSON writes
    them, null as an em dash."""
    # GUESS: §4.1 writes `v<version>` etc. without saying how a non-string
    # value is printed; Trailmark's facts are all strings, numbers are printed
    # as in JSON.
    if v is None:
        return NULL
    if isinstance(v, str):
        return v
    return jcs(v)


def exact_members(obj, members, what):
    if not isinstance(obj, dict):
        fail(f"{what} is not a JSON object")
    if set(obj) != set(members):
        missing = sorted(set(members) - set(obj))
        extra = sorted(set(obj) - set(members))
        fail(f"{what}: members {sorted(obj)}; missing {missing}, unexpected {extra}")


# ---------------------------------------------------------------- PDF (REPORTS.md §3, §7 step 3)

def _pdf_objects(pdf):
    """Object offsets from the classic cross-reference table Trailmark writes
    (one section, no incremental update: the signature is 'the last
    incremental-free write', §3)."""
    m = re.search(rb"startxref\s+([0-9]+)\s+%%EOF\s*\Z", pdf)
    if not m:
        fail("step 3 (PDF): no startxref/%%EOF at the end of the file")
    if len(re.findall(rb"startxref", pdf)) != 1:
        fail("step 3 (PDF): more than one startxref (an incremental update?); Trailmark writes one")
    xref = int(m.group(1))
    xm = re.compile(rb"xref\s*\n([0-9]+) ([0-9]+)\s*\n").match(pdf, xref)
    if not xm:
        fail("step 3 (PDF): startxref does not point at a classic xref table")
    first, count = int(xm.group(1)), int(xm.group(2))
    pos = xm.end()
    offs = {}
    for i in range(count):
        row = pdf[pos:pos + 20]
        rm = re.fullmatch(rb"([0-9]{10}) ([0-9]{5}) ([nf])[ \r\n]{2}", row)
        if not rm:
            fail(f"step 3 (PDF): malformed xref row {row!r}")
        if rm.group(3) == b"n":
            offs[first + i] = int(rm.group(1))
        pos += 20
    tm = re.compile(rb"\s*trailer\s*<<(.*?)>>\s*startxref", re.S).match(pdf, pos)
    if not tm:
        fail("step 3 (PDF): no trailer after the xref table")
    root = re.search(rb"/Root\s+([0-9]+)\s+0\s+R", tm.group(1))
    if not root:
        fail("step 3 (PDF): trailer has no /Root")
    return offs, int(root.group(1))


def _pdf_object(pdf, offs, num):
    if num not in offs:
        fail(f"step 3 (PDF): object {num} is not in the xref table")
    m = re.compile(rb"%d 0 obj\s*" % num).match(pdf, offs[num])
    if not m:
        fail(f"step 3 (PDF): xref offset of object {num} does not point at '{num} 0 obj'")
    return m.end()


def _dict_text(pdf, start):
    """The text of the dictionary starting at `start` ('<<'), nested << >> balanced."""
    if pdf[start:start + 2] != b"<<":
        fail("step 3 (PDF): object is not a dictionary")
    depth, i = 0, start
    while i < len(pdf):
        if pdf[i:i + 2] == b"<<":
            depth += 1
            i += 2
        elif pdf[i:i + 2] == b">>":
            depth -= 1
            i += 2
            if depth == 0:
                return pdf[start:i], i
        elif pdf[i:i + 1] == b"(":  # literal string: skip it (balanced parens, escapes)
            j, d = i + 1, 1
            while d:
                c = pdf[j:j + 1]
                if c == b"\\":
                    j += 1
                elif c == b"(":
                    d += 1
                elif c == b")":
                    d -= 1
                elif c == b"":
                    fail("step 3 (PDF): unterminated string")
                j += 1
            i = j
        else:
            i += 1
    fail("step 3 (PDF): unterminated dictionary")


def extract_pdf_bundle(pdf):
    """The attached trailmark-proof.jsonl of a report PDF (REPORTS.md §3: an
    /EmbeddedFile in the /EmbeddedFiles name tree, FlateDecode). Returns
    (bundle bytes, notes)."""
    notes = []
    if not pdf.startswith(b"%PDF-"):
        fail("step 3 (PDF): not a PDF file")
    offs, root = _pdf_objects(pdf)
    cat, _ = _dict_text(pdf, _pdf_object(pdf, offs, root))
    if not re.search(rb"/Type\s*/Catalog\b", cat):
        fail("step 3 (PDF): /Root is not a /Catalog")
    ef = re.search(rb"/EmbeddedFiles\s*<<\s*/Names\s*\[(.*?)\]\s*>>", cat, re.S)
    if not ef:
        fail("step 3 (PDF): the catalog has no /EmbeddedFiles name tree with a /Names array")
    pairs = re.findall(rb"\(([^()\\]*)\)\s*([0-9]+)\s+0\s+R", ef.group(1))
    # GUESS: "the one /EmbeddedFile stream" (§7 step 3): exactly one name in the tree.
    if len(pairs) != 1 or pairs[0][0] != b"trailmark-proof.jsonl":
        fail(f"step 3 (PDF): the /EmbeddedFiles names are {[p[0] for p in pairs]}, expected only "
             "(trailmark-proof.jsonl)")
    fs, _ = _dict_text(pdf, _pdf_object(pdf, offs, int(pairs[0][1])))
    if not re.search(rb"/Type\s*/Filespec\b", fs) or b"/F (trailmark-proof.jsonl)" not in fs:
        fail("step 3 (PDF): the name tree does not point at a /Filespec for trailmark-proof.jsonl")
    if not re.search(rb"/AFRelationship\s*/Supplement\b", fs):
        fail("step 3 (PDF): the file specification lacks /AFRelationship /Supplement (§3)")
    efm = re.search(rb"/EF\s*<<\s*/F\s+([0-9]+)\s+0\s+R", fs)
    if not efm:
        fail("step 3 (PDF): the file specification has no /EF /F stream")
    if len(re.findall(rb"/Type\s*/EmbeddedFile\b", pdf)) != 1:
        fail("step 3 (PDF): the file does not hold exactly one /EmbeddedFile stream")
    num = int(efm.group(1))
    sd, after = _dict_text(pdf, _pdf_object(pdf, offs, num))
    if not re.search(rb"/Type\s*/EmbeddedFile\b", sd):
        fail(f"step 3 (PDF): object {num} is not an /EmbeddedFile")
    if not re.search(rb"/Filter\s*/FlateDecode\b", sd) or re.search(rb"/DecodeParms", sd):
        fail("step 3 (PDF): the embedded file is not plain /FlateDecode")
    lm = re.search(rb"/Length\s+([0-9]+)(\s+0\s+R)?", sd)
    if not lm or lm.group(2):
        fail("step 3 (PDF): the embedded file has no direct /Length")
    length = int(lm.group(1))
    sm = re.compile(rb"\s*stream\r?\n").match(pdf, after)
    if not sm:
        fail("step 3 (PDF): no stream after the embedded file's dictionary")
    start = sm.end()
    if not re.compile(rb"\r?\n?endstream").match(pdf, start + length):
        fail("step 3 (PDF): the embedded file's /Length does not end at endstream")
    # Step 3: the stream must lie inside the signed byte range. (Whether the
    # signature over that range is valid is steps 1-2: pyHanko / pdfsig.)
    brs = re.findall(rb"/ByteRange\s*\[\s*([0-9]+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s*\]", pdf)
    if len(brs) != 1:
        fail(f"step 3 (PDF): expected one signature /ByteRange, found {len(brs)}")
    a, b, c, d = (int(x) for x in brs[0])
    if not (a <= start and start + length <= a + b) and not (c <= start and start + length <= c + d):
        fail("step 3 (PDF): the embedded file is not inside the signed byte range")
    try:
        bundle = zlib.decompress(pdf[start:start + length])
    except zlib.error as e:
        fail(f"step 3 (PDF): the embedded file does not inflate: {e}")
    size = re.search(rb"/Params\s*<<[^>]*?/Size\s+([0-9]+)", sd)
    if size and int(size.group(1)) != len(bundle):
        fail(f"step 3 (PDF): /Params /Size {int(size.group(1))} != {len(bundle)} inflated bytes")
    # GUESS: REPORTS.md does not mention it, but Trailmark's /Desc names the
    # bundle's SHA-256; a mismatch is reported as a note, not a failure.
    desc = re.search(rb"/Desc \([^)]*SHA-256 ([0-9a-f]{64})\)", fs)
    if desc and desc.group(1).decode() != sha256(bundle).hex():
        notes.append("the file specification's /Desc names a SHA-256 other than the attached bundle's")
    return bundle, notes


# ---------------------------------------------------------------- the bundle (§4, §7 steps 4-5)

def _lines(bundle):
    try:
        t = bundle.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"bundle: not UTF-8: {e}")
    if "\r" in t:
        fail("bundle: contains CR")
    if not t.endswith("\n"):
        fail("bundle: does not end with LF (cut short?)")
    lines = t[:-1].split("\n")
    out = []
    for i, ln in enumerate(lines, 1):
        if not ln:
            fail(f"bundle: line {i} is empty")
        try:
            v = parse_json(ln)
            check_no_lone_surrogates(v)
        except VerifyError as e:
            fail(f"bundle: line {i}: {e.msg}")
        # GUESS: §4 says only "one JSON object per line"; Trailmark writes every
        # line in RFC 8785 form, and this narrow reader requires it.
        if jcs(v) != ln:
            fail(f"bundle: line {i} is not in RFC 8785 canonical form")
        out.append(v)
    return out


def _check_entry_shape(e, seq, registry):
    """Enough of FORMAT.md §1 to read the entry safely (the hash and the
    inclusion path prove the rest was signed)."""
    # GUESS: step 5 asks only for canonical bytes, seq, hash and path; the
    # members of FORMAT.md §1 and a known kind (§1.3 "MUST reject") are checked too.
    exact_members(e, ENTRY_MEMBERS, f"step 5 (entry seq {seq})")
    if not isinstance(e["kind"], str) or e["kind"] not in registry:
        fail(f"step 5 (entry seq {seq}): kind {show(e['kind'])} is not in the registry (FORMAT.md §1.3); "
             "this verifier may be older than the ledger")
    if not isinstance(e["actor"], str) or not ACTOR_RE.match(e["actor"]):
        fail(f"step 5 (entry seq {seq}): bad actor {show(e['actor'])}")
    if not isinstance(e["subject"], str):
        fail(f"step 5 (entry seq {seq}): subject is not a string")
    try:
        stored_time_micros(e["recorded_at"], "recorded_at")
    except VerifyError as ex:
        fail(f"step 5 (entry seq {seq}): {ex.msg}")
    if not isinstance(e["payload"], dict):
        fail(f"step 5 (entry seq {seq}): payload is not an object")


def parse_and_prove(bundle, vkey):
    """§4 layout and §7 steps 4 and 5. Returns (header, rows, entries, size, root)
    where rows is a list of row objects and entries maps seq -> (hash hex, entry)."""
    lines = _lines(bundle)
    if not lines:
        fail("bundle: empty")
    header = lines[0]
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        f = header.get("format") if isinstance(header, dict) else None
        fail(f"bundle: format is {show(f)}, expected {FORMAT}"
             + (" (v1 has no facts or roles: its rows cannot be proved)" if f == "trailmark-report-proof-v1" else ""))
    # GUESS: §4 lists the header members; no other member is accepted.
    exact_members(header, HEADER_MEMBERS, "bundle header")
    for k in ("report_id", "type", "generated_at", "origin", "checkpoint"):
        if not isinstance(header[k], str):
            fail(f"bundle header: {k} is not a string")
    if header["type"] not in ("lineage", "compliance", "audit-trail"):
        fail(f"bundle header: unknown report type {header['type']!r}")
    if not isinstance(header["scope"], dict):
        fail("bundle header: scope is not an object")
    exact_members(header["generated_by"], {"actor", "printed_name"}, "bundle header generated_by")
    try:
        stored_time_micros(header["generated_at"], "generated_at")
    except VerifyError as e:
        fail(f"bundle header: {e.msg}")
    # GUESS: §1 defines the report ID but §7 does not list it as a check; it is
    # cheap and binds the header, so it is checked.
    rid = "R-" + sha256(jcs({"type": header["type"], "scope": header["scope"],
                             "generated_at": header["generated_at"],
                             "actor": header["generated_by"]["actor"]}).encode("utf-8")).hex()[:16]
    if header["report_id"] != rid:
        fail(f"bundle header: report_id {header['report_id']} != {rid} computed from type, scope, "
             "generated_at and actor (§1)")
    cols = header["columns"]
    if not isinstance(cols, list) or not cols:
        fail("bundle header: columns is not a non-empty array")
    for c in cols:
        exact_members(c, {"key", "label"}, "bundle header column")
        if not isinstance(c["key"], str) or not isinstance(c["label"], str):
            fail("bundle header: column key/label is not a string")
    keys = [c["key"] for c in cols]
    if len(set(keys)) != len(keys):
        fail("bundle header: duplicate column keys")

    # step 4: the checkpoint
    try:
        origin, size, root = verify_signed_checkpoint(header["checkpoint"].encode("utf-8"), vkey)
    except VerifyError as e:
        fail(f"step 4 (checkpoint): {e.msg}")
    if header["origin"] != origin:
        fail(f"step 4 (checkpoint): header origin {header['origin']!r} != checkpoint origin {origin!r}")
    if size == 0:
        fail("step 4 (checkpoint): size 0")

    # the line groups, in the order of §4: rows, entries, nodes, end
    i = 1
    rows, entries, nodes = [], {}, {}
    while i < len(lines) and isinstance(lines[i], dict) and "row" in lines[i]:
        exact_members(lines[i], {"row", "facts", "cites"}, f"row {len(rows) + 1}")
        rows.append(lines[i])
        i += 1
    last = -1
    registry = load_format_registry()
    while i < len(lines) and isinstance(lines[i], dict) and "entry" in lines[i]:
        ln = lines[i]
        exact_members(ln, {"seq", "hash", "entry"}, f"step 5 (entry line {i + 1})")
        seq = as_uint(ln["seq"], f"step 5 (entry line {i + 1}): seq")
        if seq <= last:
            fail(f"step 5 (entry seq {seq}): entry lines are not in strictly ascending seq order")
        last = seq
        h, raw = ln["hash"], ln["entry"]
        if not isinstance(h, str) or not HEX64.match(h):
            fail(f"step 5 (entry seq {seq}): hash is not 64 lowercase hex digits")
        if not isinstance(raw, str):
            fail(f"step 5 (entry seq {seq}): entry is not a JSON string")
        b = raw.encode("utf-8")
        try:
            e = parse_json(raw)
            check_no_lone_surrogates(e)
        except VerifyError as ex:
            fail(f"step 5 (entry seq {seq}): {ex.msg}")
        if jcs(e).encode("utf-8") != b:
            fail(f"step 5 (entry seq {seq}): the entry's bytes are not RFC 8785 canonical")
        if not isinstance(e, dict) or "seq" not in e:
            fail(f"step 5 (entry seq {seq}): the entry is not an object with a seq")
        if as_uint(e["seq"], f"step 5 (entry seq {seq}): entry's seq") != seq:
            fail(f"step 5 (entry seq {seq}): the entry's own seq is {show(e['seq'])}, the line says {seq}")
        _check_entry_shape(e, seq, registry)
        got = leaf_hash(b).hex()
        if got != h:
            fail(f"step 5 (entry seq {seq}): hash recomputed from the bytes is {got}, the line says {h}")
        if seq >= size:
            fail(f"step 5 (entry seq {seq}): not below the checkpoint size {size}")
        entries[seq] = (h, e)
        i += 1
    lastnode = None
    while i < len(lines) and isinstance(lines[i], dict) and "node" in lines[i]:
        exact_members(lines[i], {"node"}, f"step 5 (node line {i + 1})")
        nd = lines[i]["node"]
        if not isinstance(nd, list) or len(nd) != 3 or not isinstance(nd[2], str) or not HEX64.match(nd[2]):
            fail(f"step 5 (node line {i + 1}): not [level, index, hex]")
        lvl = as_uint(nd[0], f"step 5 (node line {i + 1}): level")
        idx = as_uint(nd[1], f"step 5 (node line {i + 1}): index")
        # GUESS: §4 says "tree nodes, ascending" and that (level, index) names a
        # node, without defining either. Read here as: the node at (level, index)
        # is the hash of the perfect subtree over leaves
        # [index * 2^level, (index + 1) * 2^level), inside the tree of size S,
        # and lines ascend by (level, index), without duplicates.
        if lvl > 62 or (idx + 1) << lvl > size:
            fail(f"step 5 (node line {i + 1}): node ({lvl}, {idx}) is not a perfect subtree of the tree "
                 f"of size {size}")
        if lastnode is not None and (lvl, idx) <= lastnode:
            fail(f"step 5 (node line {i + 1}): node ({lvl}, {idx}) is not ascending after {lastnode}")
        lastnode = (lvl, idx)
        nodes[(lvl, idx)] = bytes.fromhex(nd[2])
        i += 1
    if i >= len(lines):
        fail("step 5 (end line): the bundle has no end line (cut short)")
    end = lines[i]
    if not isinstance(end, dict) or set(end) != {"end"}:
        fail(f"bundle: line {i + 1} is not a row, entry, node or end line in the order of §4")
    exact_members(end["end"], {"rows", "entries", "nodes"}, "step 5 (end line)")
    if i != len(lines) - 1:
        fail(f"bundle: {len(lines) - 1 - i} line(s) after the end line")
    for what, have in (("rows", len(rows)), ("entries", len(entries)), ("nodes", len(nodes))):
        want = as_uint(end["end"][what], f"step 5 (end line): {what}")
        if want != have:
            fail(f"step 5 (end line): says {want} {what}, the bundle has {have}")

    # step 5: each entry's RFC 9162 path, assembled from the node lines
    used = set()
    for seq, (h, _) in entries.items():
        def node(lvl, idx, seq=seq):
            if (lvl, idx) not in nodes:
                fail(f"step 5 (entry seq {seq}): its inclusion path needs node ({lvl}, {idx}), "
                     "which no node line gives")
            used.add((lvl, idx))
            return nodes[(lvl, idx)]
        path = [subtree_hash(lo, hi, node) for lo, hi in inclusion_ranges(seq, size)]
        if not verify_inclusion(seq, size, bytes.fromhex(h), path, root):
            fail(f"step 5 (entry seq {seq}): its inclusion path does not verify against the checkpoint "
                 f"root {root.hex()} at size {size}")
    # GUESS: the spec names the needed nodes only through the Rust
    # ProofPlan::inclusion(seq, S).needed(); here a node line no path uses is refused.
    unused = sorted(set(nodes) - used)
    if unused:
        fail(f"step 5 (node lines): {len(unused)} node(s) no inclusion path uses, e.g. {unused[0]}")
    for (lvl, idx), v in nodes.items():  # level 0 nodes are entry hashes
        if lvl == 0 and idx in entries and entries[idx][0] != v.hex():
            fail(f"step 5 (node (0, {idx})): differs from the hash of entry {idx}")
    return header, rows, entries, size, root


# ---------------------------------------------------------------- rows (§4.1, §7 step 6)

def _cites(row, k, entries):
    cites = row["cites"]
    if not isinstance(cites, list):
        fail(f"row {k}: cites is not an array")
    out = []
    seen = set()
    for c in cites:
        exact_members(c, {"seq", "hash", "as"}, f"row {k}: cite")
        seq = as_uint(c["seq"], f"row {k}: cite seq")
        if not isinstance(c["hash"], str) or not isinstance(c["as"], str):
            fail(f"row {k}: cite hash/as is not a string")
        if seq not in entries:
            fail(f"row {k}: cites seq {seq}, which is not among the checked entries")
        if entries[seq][0] != c["hash"]:
            fail(f"row {k}: cites seq {seq} with hash {c['hash']}, the entry's hash is {entries[seq][0]}")
        # GUESS: §4.1 does not say whether a row may cite one entry twice; refused.
        if seq in seen:
            fail(f"row {k}: cites seq {seq} twice")
        seen.add(seq)
        out.append((c["as"], seq, entries[seq][1]))
    return out


def _data(e, k, role, seq):
    """`data.X` of §4.1 is the payload's `data` object (the source envelope,
    FORMAT.md §1.3; the rules' entries carry one too)."""
    # GUESS: §4.1 writes `data.document_id` etc.; read as payload.data.document_id.
    d = e["payload"].get("data")
    if not isinstance(d, dict):
        fail(f"row {k}: {role} cite #{seq}: the entry's payload has no data object")
    return d


def _inst(v, what):
    return rfc3339_micros(v, what)


def _fact_time(f, name, k, nullable):
    v = f[name]
    if v is None:
        if not nullable:
            fail(f"row {k}: fact {name} is null")
        return None
    try:
        return stored_time_micros(v, name)
    except VerifyError as e:
        fail(f"row {k}: fact {e.msg}")


def _eq_instant(k, role, seq, field, entry_val, fact_name, fact_val):
    try:
        got = _inst(entry_val, f"{role} cite #{seq} {field}")
    except VerifyError as e:
        fail(f"row {k}: {e.msg}")
    if got != stored_time_micros(fact_val, fact_name):
        fail(f"row {k}: fact {fact_name}: {show(fact_val)}, but the {role} cite #{seq} has {field} "
             f"{show(entry_val)}")


def _eq(k, role, seq, field, entry_val, fact_name, fact_val):
    if not same(entry_val, fact_val):
        fail(f"row {k}: fact {fact_name}: {show(fact_val)}, but the {role} cite #{seq} has {field} "
             f"{show(entry_val)}")


def lag_text(s):
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def check_compliance_row(k, row, header, entries, scope_from, scope_to):
    f = row["facts"]
    exact_members(f, FACT_KEYS, f"row {k}: facts")
    for name in ("document_id", "person_id"):
        if not isinstance(f[name], str) or not f[name]:
            fail(f"row {k}: fact {name} is not a non-empty string")
    # GUESS: version is a string in every genuine bundle, but §4.1 does not
    # give its type; a string or an integer is accepted.
    if not (isinstance(f["version"], str) and f["version"]) and not isinstance(f["version"], Num):
        fail(f"row {k}: fact version is not a string or number")
    for name in ("person_name", "assignment_id", "end_reason"):
        if f[name] is not None and not isinstance(f[name], str):
            fail(f"row {k}: fact {name} is not a string or null")
    jf = f["job_functions"]
    # GUESS: "sorted" = by Unicode code point (= UTF-8 byte order); no duplicates;
    # at least one (a person is required through a function).
    if not isinstance(jf, list) or not jf or not all(isinstance(x, str) for x in jf):
        fail(f"row {k}: fact job_functions is not a non-empty array of strings")
    if jf != sorted(set(jf)):
        fail(f"row {k}: fact job_functions {show(jf)} is not sorted without duplicates")
    if f["status"] not in STATUSES:
        fail(f"row {k}: fact status {show(f['status'])} is not one of {STATUSES}")
    if f["as_of"] != header["generated_at"]:
        fail(f"row {k}: fact as_of {show(f['as_of'])} is not the report's generated_at {header['generated_at']}")
    has_asg = f["assignment_id"] is not None
    eff = _fact_time(f, "effective_at", k, False)
    # GUESS: §4.1 marks only some facts "(or null)"; required_from, recorded_at
    # and due_at are null exactly when there is no assignment (as in Trailmark's
    # "missing" rows), ended_at and end_reason are null together, and only an
    # assignment can end.
    req = _fact_time(f, "required_from", k, not has_asg)
    rec = _fact_time(f, "recorded_at", k, not has_asg)
    due = _fact_time(f, "due_at", k, not has_asg)
    if not has_asg and (f["required_from"], f["recorded_at"], f["due_at"]) != (None, None, None):
        fail(f"row {k}: facts required_from/recorded_at/due_at are set without an assignment")
    done = _fact_time(f, "completed_at", k, True)
    ended = _fact_time(f, "ended_at", k, True)
    as_of = _fact_time(f, "as_of", k, False)
    if (f["ended_at"] is None) != (f["end_reason"] is None):
        fail(f"row {k}: facts ended_at and end_reason are not both set or both null")
    if f["end_reason"] is not None and not has_asg:
        fail(f"row {k}: fact end_reason is set without an assignment")
    # GUESS: §1 says compliance covers revisions effective in [from, to); a row
    # outside the scope is refused.
    if not scope_from <= eff < scope_to:
        fail(f"row {k}: fact effective_at {f['effective_at']} is outside the report's scope [from, to)")

    # -- each cite's role and kind
    cites = _cites(row, k, entries)
    by = {}
    for role, seq, e in cites:
        if role not in ROLES:
            fail(f"row {k}: cite #{seq} has role {role!r}, which compliance rows do not have")
        kind, actor = ROLES[role]
        if e["kind"] != kind:
            fail(f"row {k}: {role} cite #{seq} is a {e['kind']} entry, the role needs {kind}")
        if actor and e["actor"] != actor:
            fail(f"row {k}: {role} cite #{seq} has actor {e['actor']}, the role needs {actor}")
        by.setdefault(role, []).append((seq, e))
    superseded = f["end_reason"] == SUPERSEDED
    want_n = {"revision": (1, 1), "person": (1, None), "matrix": (1, None),
              "assignment": (int(has_asg),) * 2, "completion": (int(done is not None),) * 2,
              "cancellation": (int(f["end_reason"] is not None),) * 2,
              "superseded_by": (int(superseded),) * 2}
    for role, (lo, hi) in want_n.items():
        n = len(by.get(role, []))
        if n < lo or (hi is not None and n > hi):
            need = f"{lo}" if lo == hi else f"at least {lo}"
            fail(f"row {k}: {n} {role} cite(s), the facts need {need}")

    # -- each fact against the entries
    (rseq, rev), = by["revision"]
    d = _data(rev, k, "revision", rseq)
    _eq(k, "revision", rseq, "data.document_id", d.get("document_id"), "document_id", f["document_id"])
    _eq(k, "revision", rseq, "data.version", d.get("version"), "version", f["version"])
    _eq_instant(k, "revision", rseq, "data.effective_at", d.get("effective_at"), "effective_at", f["effective_at"])

    persons = [(s, e, _data(e, k, "person", s)) for s, e in by["person"]]
    for s, e, d in persons:
        _eq(k, "person", s, "data.person_id", d.get("person_id"), "person_id", f["person_id"])
    if f["person_name"] is not None:
        if not any(d.get("name") == f["person_name"] for _, _, d in persons):
            fail(f"row {k}: fact person_name: {show(f['person_name'])}, but no person cite has that data.name "
                 f"(" + ", ".join(f"#{s}: {show(d.get('name'))}" for s, _, d in persons) + ")")
    for fn in jf:
        ok = False
        for s, e, d in persons:
            spans = d.get("job_functions")
            if not isinstance(spans, list):
                continue
            for sp in spans:
                # GUESS: a span is an object {job_function, valid_from, valid_to?};
                # a span that is not such an object is skipped, not a failure.
                if not isinstance(sp, dict) or sp.get("job_function") != fn:
                    continue
                try:
                    vf = _inst(sp.get("valid_from"), f"person cite #{s} valid_from")
                    vt = sp.get("valid_to")
                    vt = None if vt is None else _inst(vt, f"person cite #{s} valid_to")
                except VerifyError as ex:
                    fail(f"row {k}: {ex.msg}")
                if vf < scope_to and (vt is None or vt > eff):
                    ok = True
        if not ok:
            fail(f"row {k}: fact job_functions: no person cite has a span of {fn!r} with valid_from before "
                 f"the scope's to and valid_to absent or after {f['effective_at']}")
    matrices = [(s, _data(e, k, "matrix", s)) for s, e in by["matrix"]]
    for s, d in matrices:
        _eq(k, "matrix", s, "data.document_id", d.get("document_id"), "document_id", f["document_id"])
    for fn in jf:
        if not any(isinstance(d.get("job_functions"), list) and fn in d["job_functions"] for _, d in matrices):
            fail(f"row {k}: fact job_functions: {fn!r} is in no matrix cite's data.job_functions")

    if has_asg:
        (s, e), = by["assignment"]
        d = _data(e, k, "assignment", s)
        for field in ("assignment_id", "person_id", "document_id", "version"):
            _eq(k, "assignment", s, f"data.{field}", d.get(field), field, f[field])
        if d.get("origin") != "sop":
            fail(f"row {k}: assignment cite #{s} has data.origin {show(d.get('origin'))}, not \"sop\"")
        _eq_instant(k, "assignment", s, "data.due_at", d.get("due_at"), "due_at", f["due_at"])
        # GUESS: "when absent" also covers a required_from that is present but null.
        if d.get("required_from") is not None:
            _eq_instant(k, "assignment", s, "data.required_from", d["required_from"], "required_from",
                        f["required_from"])
        else:
            _eq_instant(k, "assignment", s, "data.effective_at", d.get("effective_at"), "required_from",
                        f["required_from"])
        if e["recorded_at"] != f["recorded_at"]:
            fail(f"row {k}: fact recorded_at: {show(f['recorded_at'])}, but the assignment cite #{s} was "
                 f"recorded at {e['recorded_at']}")
    if done is not None:
        (s, e), = by["completion"]
        d = _data(e, k, "completion", s)
        for field in ("person_id", "document_id", "version"):
            _eq(k, "completion", s, f"data.{field}", d.get(field), field, f[field])
        _eq_instant(k, "completion", s, "data.completed_at", d.get("completed_at"), "completed_at",
                    f["completed_at"])
    if f["end_reason"] is not None:
        (s, e), = by["cancellation"]
        d = _data(e, k, "cancellation", s)
        _eq(k, "cancellation", s, "data.assignment_id", d.get("assignment_id"), "assignment_id",
            f["assignment_id"])
        _eq(k, "cancellation", s, "data.reason", d.get("reason"), "end_reason", f["end_reason"])
        if not superseded and e["recorded_at"] != f["ended_at"]:
            # GUESS: compared as stored strings; both are Trailmark's stored form.
            fail(f"row {k}: fact ended_at: {show(f['ended_at'])}, but the cancellation cite #{s} was "
                 f"recorded at {e['recorded_at']}")
    if superseded:
        (s, e), = by["superseded_by"]
        d = _data(e, k, "superseded_by", s)
        _eq(k, "superseded_by", s, "data.document_id", d.get("document_id"), "document_id", f["document_id"])
        _eq_instant(k, "superseded_by", s, "data.effective_at", d.get("effective_at"), "ended_at", f["ended_at"])
        if not ended > eff:
            fail(f"row {k}: superseded_by cite #{s} is effective {f['ended_at']}, not after the row's "
                 f"effective_at {f['effective_at']}")

    # -- the status from the facts (INTEGRATION.md §3 point 4)
    if not has_asg:
        st = "missing"
    elif f["end_reason"] is not None:
        if done is not None and done <= due:
            st = "on_time"
        elif done is not None and done <= ended:
            st = "late"
        elif ended > due:
            st = "overdue"
        else:
            st = "cancelled"
    elif done is not None:
        st = "on_time" if done <= due else "late"
    else:
        st = "overdue" if as_of > due else "open"
    if f["status"] != st:
        fail(f"row {k}: fact status: {show(f['status'])}, but the facts give {st!r}")

    # -- every display cell from the facts
    if f["person_name"]:
        person = f"{f['person_name']} ({f['person_id']})"
    else:
        person = f["person_id"]
    if has_asg:
        assigned = f"{f['required_from']}\nrecorded {f['recorded_at']}"
        # GUESS: "in whole seconds" truncates toward zero (a lag of -0.5 s is 0 s).
        diff = rec - req
        s = diff // 1_000_000 if diff >= 0 else -((-diff) // 1_000_000)
        lag = lag_text(s)
        due_cell = f["due_at"]
    else:
        assigned, lag, due_cell = "not assigned", "", ""
    if done is None:
        completed = "not completed"
    else:
        completed = f["completed_at"]
        # GUESS: without an assignment required_from is null, and no note is added.
        if req is not None and done < req:
            completed += "\nbefore the assignment was required"
    status = f["status"].replace("_", " ")
    # GUESS: "a cancelled assignment" = end_reason set (whatever the status).
    if f["end_reason"] is not None:
        status += f"\nended {f['ended_at']}: {f['end_reason']}"
    ev = []
    for role in ("assignment", "completion"):
        if by.get(role):
            (s, _), = by[role]
            ev.append(f"{role} #{s}\n{entries[s][0]}")
        else:
            ev.append(f"{role}: none")
    want = {
        "document": f"{text(f['document_id'])} v{text(f['version'])}",
        "effective_at": f["effective_at"],
        "person": person,
        "job_functions": ", ".join(jf),
        "assigned_at": assigned,
        "lag": lag,
        "due_at": due_cell,
        "completed_at": completed,
        "status": status,
        "evidence": "\n".join(ev),
    }
    cells = row["row"]
    for col in COMPLIANCE_COLUMNS:
        if cells.get(col) != want[col]:
            fail(f"row {k}: column {col}: shows {show(cells.get(col))}, the facts give {show(want[col])}")
    return f


def counts_text(c):
    return " · ".join(f"{c[s]} {s.replace('_', ' ')}" for s in STATUSES)


def _counts(v, what):
    exact_members(v, STATUSES, what)
    return {s: as_uint(v[s], f"{what}.{s}") for s in STATUSES}


def check_compliance(header, rows, entries):
    keys = [c["key"] for c in header["columns"]]
    # GUESS: the columns are the display cells of §4.1, in that table's order.
    if keys != COMPLIANCE_COLUMNS:
        fail(f"bundle header: compliance columns are {keys}, expected {COMPLIANCE_COLUMNS}")
    scope = header["scope"]
    # GUESS: scope has from and to (stored form) and optionally job_functions;
    # the job function filter is not checked against the rows (§4.1 is silent).
    if not isinstance(scope, dict) or not {"from", "to"} <= set(scope) or not set(scope) <= {"from", "to", "job_functions"}:
        fail(f"bundle header: compliance scope {show(scope)} is not {{from, to[, job_functions]}}")
    try:
        sfrom = rfc3339_micros(scope["from"], "scope.from")
        sto = rfc3339_micros(scope["to"], "scope.to")
    except VerifyError as e:
        fail(f"bundle header: {e.msg}")
    cur = None  # the open revision band: (k, facts, n rows, counts)
    revisions, required, total = 0, 0, {s: 0 for s in STATUSES}
    overall = False
    for k, row in enumerate(rows, 1):
        facts, cells = row["facts"], row["row"]
        if not isinstance(facts, dict) or not isinstance(cells, dict):
            fail(f"row {k}: row and facts must be objects")
        if overall:
            fail(f"row {k}: a row after the overall band")
        if "band" in facts:
            if row["cites"] != []:
                fail(f"row {k}: a band with cites")
            exact_members(cells, {"band"}, f"row {k}: band cells")
            band = facts["band"]
            if band == "revision":
                exact_members(facts, {"band", "document_id", "version", "effective_at", "required"}, f"row {k}: facts")
                if cur is not None:
                    fail(f"row {k}: a revision band before the totals band of the revision opened at row {cur[0]}")
                try:
                    stored_time_micros(facts["effective_at"], "effective_at")
                except VerifyError as e:
                    fail(f"row {k}: fact {e.msg}")
                n = as_uint(facts["required"], f"row {k}: fact required")
                want = (f"{text(facts['document_id'])} version {text(facts['version'])} · effective "
                        f"{facts['effective_at']} · {n} people required")
                if cells["band"] != want:
                    fail(f"row {k}: column band: shows {show(cells['band'])}, the facts give {show(want)}")
                cur = [k, facts, 0, {s: 0 for s in STATUSES}]
            elif band == "totals":
                exact_members(facts, {"band", "document_id", "version", "counts"}, f"row {k}: facts")
                if cur is None:
                    fail(f"row {k}: a totals band without a revision band")
                rk, rf, n, got = cur
                if not same(facts["document_id"], rf["document_id"]) or not same(facts["version"], rf["version"]):
                    fail(f"row {k}: totals band for {show(facts['document_id'])} v{show(facts['version'])} closes "
                         f"the revision band of row {rk} ({show(rf['document_id'])} v{show(rf['version'])})")
                req = as_uint(rf["required"], f"row {rk}: fact required")
                if n != req:
                    fail(f"row {rk}: fact required: {req}, but the revision has {n} rows (rows {rk + 1} to {k - 1})")
                c = _counts(facts["counts"], f"row {k}: fact counts")
                for s in STATUSES:
                    if c[s] != got[s]:
                        fail(f"row {k}: fact counts.{s}: {c[s]}, but the rows of the revision have {got[s]}")
                want = f"Totals for {text(facts['document_id'])} v{text(facts['version'])}: {sum(c.values())} required · {counts_text(c)}"
                if cells["band"] != want:
                    fail(f"row {k}: column band: shows {show(cells['band'])}, the facts give {show(want)}")
                revisions += 1
                required += n
                for s in STATUSES:
                    total[s] += c[s]
                cur = None
            elif band == "overall":
                exact_members(facts, {"band", "revisions", "required", "counts"}, f"row {k}: facts")
                if cur is not None:
                    fail(f"row {k}: the overall band before the totals band of the revision opened at row {cur[0]}")
                kk = as_uint(facts["revisions"], f"row {k}: fact revisions")
                nn = as_uint(facts["required"], f"row {k}: fact required")
                c = _counts(facts["counts"], f"row {k}: fact counts")
                if kk != revisions:
                    fail(f"row {k}: fact revisions: {kk}, but the report has {revisions} revision bands")
                if nn != required:
                    fail(f"row {k}: fact required: {nn}, but the revisions have {required} rows")
                for s in STATUSES:
                    if c[s] != total[s]:
                        fail(f"row {k}: fact counts.{s}: {c[s]}, but the totals bands sum to {total[s]}")
                # GUESS: the text is literal ("1 revisions"), no singular forms.
                want = (f"Overall: {kk} revisions effective in the period · {nn} person-revisions required · "
                        f"{counts_text(c)}")
                if cells["band"] != want:
                    fail(f"row {k}: column band: shows {show(cells['band'])}, the facts give {show(want)}")
                overall = True
            else:
                fail(f"row {k}: band {show(band)} is not revision, totals or overall")
            continue
        # GUESS: a row's cells are exactly the columns.
        exact_members(cells, COMPLIANCE_COLUMNS, f"row {k}: cells")
        if cur is None:
            fail(f"row {k}: a person row outside a revision band")
        rf = cur[1]
        f = check_compliance_row(k, row, header, entries, sfrom, sto)
        for name in ("document_id", "version", "effective_at"):
            if not same(f[name], rf[name]):
                fail(f"row {k}: fact {name}: {show(f[name])}, but the revision band of row {cur[0]} has {show(rf[name])}")
        cur[2] += 1
        cur[3][f["status"]] += 1
    if cur is not None:
        fail(f"row {cur[0]}: the revision band is never closed by a totals band")
    # GUESS: "ends the report when it has rows" read as: when it has at least
    # one revision band.
    if revisions and not overall:
        fail("the report has revisions but no overall band")


def json_text(v):
    """A payload value as a cell shows it: strings as they are, others as JSON."""
    # GUESS: "as JSON" is the canonical (RFC 8785) text, as the entry holds it.
    return v if isinstance(v, str) else jcs(v)


def flatten(prefix, v, out):
    """`path: value` lines (§4.1): object keys in code-point order joined
    with `.`, array items as `[i]`, an empty array as `[]`, an empty object
    gives no line."""
    if isinstance(v, dict):
        for key in sorted(v):
            flatten(f"{prefix}.{key}" if prefix else key, v[key], out)
    elif isinstance(v, list) and v:
        for i, item in enumerate(v):
            flatten(f"{prefix}[{i}]", item, out)
    else:
        out.append(f"{prefix}: {json_text(v)}")
    return out


def own_content(e):
    """The first lines of an audit-trail row's content cell."""
    lines = flatten("", e["payload"], [])
    if e.get("reason") is not None:
        lines.append(f"Reason: {e['reason']}")
    return lines


def describe(e, seq):
    """The first lines of a lineage row's details cell (§4.1 table)."""
    p, kind = e["payload"], e["kind"]

    def m(k):
        v = p.get(k)
        return "" if v is None and k not in p else json_text(v)

    if kind == "signature.applied":
        man = p.get("manifestation") or {}

        def q(k):
            v = man.get(k) if isinstance(man, dict) else None
            return v if isinstance(v, str) else "?"
        text = (f"Signed by {q('printed_name')} ({q('user_id')}) · meaning: {q('meaning_text')} ({q('meaning')}) · "
                f"{q('signed_at')} UTC ({q('signed_at_local')}) · entry #{seq}")
    elif kind == "integration.handover.sent":
        text = f"Hand-over to {m('target')}: {m('message_type')} (message {m('message_id')})"
    elif kind == "integration.handover.delivered":
        text = (f"delivered to {m('target')} (HTTP {m('status')}, attempt {m('attempt')}, {m('latency_ms')} ms) "
                f"at {e['recorded_at']} · #{seq}")
    elif kind == "integration.handover.failed":
        text = f"attempt {m('attempt')} failed: {m('error')} · #{seq}"
    elif kind == "integration.handover.dead_lettered":
        text = f"dead-lettered after {m('attempts')} attempts: {m('last_error')} · #{seq}"
    elif kind == "integration.handover.replayed":
        text = f"replayed by {e['actor']}: {e.get('reason') or ''} · #{seq}"
    elif kind.startswith("integration.handover."):
        text = f"{kind} · #{seq}"
    else:
        # GUESS: "the first 8 lines" of the flattened data, joined by line breaks.
        text = "\n".join(flatten("", p["data"] if "data" in p else p, [])[:8])
    if e.get("reason") is not None:
        text += f"\nReason: {e['reason']}"
    return text


def check_entry_rows(header, rows, entries):
    """Lineage and audit-trail rows (§4.1)."""
    keys = [c["key"] for c in header["columns"]]
    own_cell = "details" if header["type"] == "lineage" else "content"
    missing = [c for c in ENTRY_CELLS[:6] + [own_cell] if c not in keys]
    if missing:
        fail(f"bundle header: {header['type']} columns {keys} lack {missing}")
    scope = header["scope"]
    last = -1
    for k, row in enumerate(rows, 1):
        facts, cells = row["facts"], row["row"]
        if not isinstance(facts, dict) or not isinstance(cells, dict):
            fail(f"row {k}: row and facts must be objects")
        if "band" in facts:
            # GUESS: the note's text is not checked (§4.1 gives none).
            if facts != {"band": "note"}:
                fail(f"row {k}: band facts {show(facts)} are not {{\"band\": \"note\"}}")
            exact_members(cells, {"band"}, f"row {k}: band cells")
            if row["cites"] != []:
                fail(f"row {k}: a band with cites")
            continue
        if facts != {}:
            fail(f"row {k}: facts {show(facts)}, a {header['type']} row has {{}}")
        # GUESS: a row's cells are exactly the columns.
        exact_members(cells, keys, f"row {k}: cells")
        cites = _cites(row, k, entries)
        if len(cites) != 1 or cites[0][0] != "entry":
            fail(f"row {k}: cites {[(r, s) for r, s, _ in cites]}, a {header['type']} row has exactly one, "
                 "as \"entry\"")
        _, seq, e = cites[0]
        # GUESS: "in seq order" (§1) read as strictly ascending.
        if seq <= last:
            fail(f"row {k}: seq {seq} is not after the previous row's {last} (rows are in seq order)")
        last = seq
        want = {"seq": str(seq), "recorded_at": e["recorded_at"], "kind": e["kind"],
                "subject": e["subject"], "hash": entries[seq][0]}
        for col in ("seq", "recorded_at", "kind", "subject", "hash"):
            if cells[col] != want[col]:
                fail(f"row {k}: column {col}: shows {show(cells[col])}, entry #{seq} has {show(want[col])}")
        a = cells["actor"]
        suffix = f" ({e['actor']})"
        # GUESS: "a printed name" is any non-empty text.
        if not isinstance(a, str) or not (a == e["actor"] or (a.endswith(suffix) and len(a) > len(suffix))):
            fail(f"row {k}: column actor: shows {show(a)}, entry #{seq} has actor {e['actor']}")
        own = "details" if header["type"] == "lineage" else "content"
        said = describe(e, seq) if own == "details" else "\n".join(own_content(e))
        shown = cells[own]
        if not isinstance(shown, str) or not (shown == said or shown.startswith(said + "\n")):
            fail(f"row {k}: column {own}: shows {show(shown)}, entry #{seq} begins {show(said)}")
        if header["type"] == "audit-trail":
            # GUESS: §1 says which entries an audit trail holds; checked here:
            # a subject scope holds entries of that subject, a time scope
            # entries recorded in [from, to), and admin.*/security.* entries
            # only with include_admin.
            if "subject" in scope and e["subject"] != scope["subject"]:
                fail(f"row {k}: entry #{seq} is about {e['subject']}, the report's subject is {scope['subject']}")
            if "from" in scope and "to" in scope:
                t = rfc3339_micros(e["recorded_at"])
                if not rfc3339_micros(scope["from"], "scope.from") <= t < rfc3339_micros(scope["to"], "scope.to"):
                    fail(f"row {k}: entry #{seq} was recorded at {e['recorded_at']}, outside the scope [from, to)")
            if scope.get("include_admin") is not True and e["kind"].split(".")[0] in ("admin", "security"):
                fail(f"row {k}: entry #{seq} is a {e['kind']} entry, but the report does not include admin entries")
    return [c for c in keys if c not in ENTRY_CELLS]


def check_bundle(bundle, key):
    """Check a proof bundle (bytes) with the verifier key (text, a file
    holding it, or a VerifierKey). Raises VerifyError at the first failure;
    returns a summary dict."""
    vkey = key if isinstance(key, VerifierKey) else VerifierKey(load_key_arg(key))
    header, rows, entries, size, root = parse_and_prove(bundle, vkey)
    # step 6, first part: every cite is a checked entry with its hash, no entry uncited
    # GUESS: "the row number" of §7 step 6 is 1-based over the row lines,
    # bands included (the header is not a row).
    cited = set()
    for k, row in enumerate(rows, 1):
        if not isinstance(row["cites"], list):
            fail(f"row {k}: cites is not an array")
        for c in _cites(row, k, entries):
            cited.add(c[1])
    uncited = sorted(set(entries) - cited)
    if uncited:
        fail(f"step 6 (cites): entry seq {uncited[0]} is in the bundle but no row cites it")
    notes = []
    if header["type"] == "compliance":
        check_compliance(header, rows, entries)
    else:
        unchecked = check_entry_rows(header, rows, entries)
        for c in unchecked:
            notes.append(f"column {c!r} is not covered by REPORTS.md §4.1 and was not checked")
        notes.append("the lines of the details/content cells after an entry's own (about other entries) "
                     "and the printed names in the actor cells are not proved by the row (REPORTS.md §4.1)")
    return {"rows": len(rows), "entries": len(entries), "size": size, "root": root.hex(),
            "report_id": header["report_id"], "type": header["type"], "notes": notes}


def check_input(data, key):
    """A bundle or a PDF report. Returns (summary, notes)."""
    notes = []
    if data.startswith(b"%PDF-"):
        data, notes = extract_pdf_bundle(data)
        notes.append("the PDF's CMS signature (REPORTS.md §7 steps 1-2) is not checked by this script; "
                     "check it with pyHanko or pdfsig")
    r = check_bundle(data, key)
    return r, notes + r["notes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="a JSONL proof bundle or a PDF report")
    ap.add_argument("--key", required=True, help="verifier key text, or a file holding it")
    a = ap.parse_args()
    try:
        with open(a.input, "rb") as fh:
            data = fh.read()
        r, notes = check_input(data, a.key)
    except VerifyError as ex:
        print(f"FAILED: {ex.msg}")
        return 1
    except OSError as ex:
        print(f"FAILED: cannot read {a.input}: {ex}")
        return 1
    except Exception as ex:  # malformed input this reader did not foresee: still a refusal
        import traceback
        traceback.print_exc()
        print(f"FAILED: malformed input ({type(ex).__name__}: {ex})")
        return 1
    print(f"OK: {r['rows']} rows, {r['entries']} entries checked against checkpoint {r['size']}")
    print(f"  {r['type']} report {r['report_id']}, checkpoint root {r['root']}")
    for n in notes:
        print(f"NOTE: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
