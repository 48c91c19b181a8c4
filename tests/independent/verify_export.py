#!/usr/bin/env python3
"""Independent verifier for a Trailmark ledger export (FORMAT.md v1, §5).

usage: verify_export.py EXPORT_DIR --key VERIFIER_KEY_TEXT_OR_FILE
                        [--kinds FILE] [--print-hashes] [--print-roots]
                        [--no-signatures]

Besides the ledger checks of docs/FORMAT.md §5, every `signature.applied`
entry is checked against rules 1-7 of docs/SIGNATURES.md §7 (signatures.py),
unless --no-signatures is given.

Exit 0 and "OK ..." if every check passes; exit 1 and "FAILED at seq N: ..."
on the first failure.
"""
import argparse
import datetime
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmcommon import (VerifyError, VerifierKey, load_key_arg, verify_signed_checkpoint,
                      parse_json, check_no_lone_surrogates, jcs, Num, leaf_hash, mth,
                      HEX64, ORIGIN_RE)

MEMBERS = {"v", "seq", "prev", "recorded_at", "kind", "actor", "subject",
           "correlation_id", "idempotency_key", "parents", "reason", "payload"}
ZERO64 = "0" * 64
MAX_SEQ = 2 ** 53 - 1
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
KIND_SEG = re.compile(r"[a-z][a-z0-9_]*\Z")
ACTOR_RE = re.compile(r"(system|service|user):[A-Za-z0-9._@-]{1,128}\Z")
SCHEME_RE = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")
# Unicode White_Space property (guess: FORMAT.md says only "not only white space")
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                  "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

# The kind -> class registry is the table in FORMAT.md §1.3, between the
# `kinds:begin` and `kinds:end` markers; --kinds adds kinds of a newer ledger.
FORMAT_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "FORMAT.md")


def load_format_registry(path=FORMAT_MD):
    text = open(path, encoding="utf-8").read()
    table = {}
    body = text[text.index("<!-- kinds:begin"):text.index("<!-- kinds:end -->")]
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            table[cells[0]] = cells[1]
    if "ledger.genesis" not in table:
        raise SystemExit(f"{path}: no kinds table found")
    return table


def kind_class(kind, table):
    if kind in table:
        return table[kind], False
    raise VerifyError(f"kind {kind} is not in the registry (FORMAT.md §1.3); this verifier may be older than the ledger")


def printable(v, lo, hi):
    return isinstance(v, str) and lo <= len(v) <= hi and PRINTABLE.match(v)


def check_entry(i, raw, e, hashes_by_hex, prev_hash_hex, prev_time, vkey_text, table, stats):
    """§1 rules and §5 step 2/3 for line i. Raises VerifyError(seq=i)."""
    def bad(msg):
        raise VerifyError(msg, i)

    if not isinstance(e, dict):
        bad("line is not a JSON object")
    missing = MEMBERS - e.keys()
    extra = e.keys() - MEMBERS
    if missing:
        bad(f"missing member(s) {sorted(missing)}")
    if extra:
        bad(f"extra member(s) {sorted(extra)}")

    v = e["v"]
    if not isinstance(v, Num) or v.value != 1:
        bad(f"v must be the integer 1, got {getattr(v, 'text', v)!r}")
    seq = e["seq"]
    if not isinstance(seq, Num) or not seq.is_integer() or not 0 <= seq.value <= MAX_SEQ:
        bad(f"seq is not an integer in 0..2^53-1: {getattr(seq, 'text', seq)!r}")
    if int(seq.value) != i:
        bad(f"seq is {int(seq.value)} but this is line {i} (expected seq {i})")

    prev = e["prev"]
    if not isinstance(prev, str) or not HEX64.match(prev):
        bad("prev is not 64 lowercase hex characters")
    want_prev = ZERO64 if i == 0 else prev_hash_hex
    if prev != want_prev:
        bad(f"prev is {prev} but expected {want_prev}"
            + ("" if i == 0 else f" (the hash of line {i-1}): line {i-1} or this prev was altered"))

    t = e["recorded_at"]
    if not isinstance(t, str) or not TIME_RE.match(t):
        bad(f"recorded_at {t!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        bad(f"recorded_at {t!r} is not a valid date/time")
    if prev_time is not None and t < prev_time:
        bad(f"recorded_at {t} is earlier than line {i-1}'s {prev_time}")

    kind = e["kind"]
    if not isinstance(kind, str) or len(kind) > 96:
        bad("kind is not a string of at most 96 characters")
    segs = kind.split(".")
    if len(segs) < 2 or not all(KIND_SEG.match(s) for s in segs):
        bad(f"kind {kind!r} is not a dotted lowercase name with at least two segments")

    actor = e["actor"]
    if not isinstance(actor, str) or not ACTOR_RE.match(actor):
        bad(f"actor {actor!r} is not system:/service:/user:NAME")

    subj = e["subject"]
    if not isinstance(subj, str) or ":" not in subj:
        bad(f"subject {subj!r} is not SCHEME:ID")
    scheme, ident = subj.split(":", 1)
    if not SCHEME_RE.match(scheme) or not printable(ident, 1, 512):
        bad(f"subject {subj!r}: bad SCHEME or ID")

    cid = e["correlation_id"]
    if cid is not None and not printable(cid, 1, 128):
        bad("correlation_id is not null or 1..128 printable ASCII characters")
    ik = e["idempotency_key"]
    if ik is not None and not printable(ik, 1, 256):
        bad("idempotency_key is not null or 1..256 printable ASCII characters")

    parents = e["parents"]
    if not isinstance(parents, list):
        bad("parents is not an array")
    if len(parents) > 64:
        bad(f"parents has {len(parents)} elements (max 64)")
    if len(set(p for p in parents if isinstance(p, str))) != len(parents):
        bad("parents has duplicates or non-strings")
    for p in parents:
        if not HEX64.match(p):
            bad(f"parent {p!r} is not a 64-character hex hash")
        if p not in hashes_by_hex:
            bad(f"parent {p} does not name an entry with a smaller seq")

    reason = e["reason"]
    if reason is not None:
        if not isinstance(reason, str):
            bad("reason is not a string or null")
        if not 1 <= len(reason) <= 4000:  # counted in Unicode scalar values (guess)
            bad(f"reason has {len(reason)} characters (1..4000)")
        if all(c in WHITE_SPACE for c in reason):
            bad("reason is only white space")

    payload = e["payload"]
    if not isinstance(payload, dict):
        bad("payload is not an object")
    if len(jcs(payload).encode("utf-8")) > 65536:
        bad("payload canonical form exceeds 65,536 bytes")

    # class rules (§1.3)
    cls, guessed = kind_class(kind, table)
    if guessed:
        stats["guessed_kinds"].setdefault(kind, cls)
    if cls == "genesis" and i != 0:
        bad(f"kind {kind} is of class genesis but only entry 0 may be genesis")
    if cls in ("correction", "administrative") and reason is None:
        bad(f"reason is null but kind {kind} is of class {cls}{' (class guessed)' if guessed else ''}")
    if cls == "genesis" and reason is not None:
        bad("reason must be null for the genesis entry")
    if cls == "signature" and len(parents) != 1:
        bad(f"signature {kind} must name exactly one parent (the signed target), has {len(parents)}")
    if cls == "correction" and not parents:
        bad(f"correction {kind} has no parents (its first parent must be the corrected entry)")

    # canonical form (RFC 8785) — checked, never used for hashing
    canon = jcs(e).encode("utf-8")
    if canon != raw:
        k = next((j for j in range(min(len(canon), len(raw))) if canon[j] != raw[j]), min(len(canon), len(raw)))
        bad(f"bytes are not RFC 8785 canonical: first difference at byte {k}: "
            f"have {raw[max(0,k-20):k+20]!r}, canonical {canon[max(0,k-20):k+20]!r}")

    # genesis (§1.4, §5 step 3)
    if i == 0:
        if kind != "ledger.genesis":
            bad(f"entry 0 has kind {kind!r}, must be ledger.genesis")
        if actor != "system:trailmark":
            bad(f"genesis actor is {actor!r}, must be system:trailmark")
        if parents != []:
            bad("genesis parents must be []")
        if set(payload) != {"origin", "verifier_key", "software"}:
            bad(f"genesis payload members {sorted(payload)} != [origin, software, verifier_key]")
        origin = payload["origin"]
        if not isinstance(origin, str) or not ORIGIN_RE.match(origin):
            bad(f"genesis origin {origin!r} is not a valid origin (§3.1)")
        if subj != "ledger:" + origin:
            bad(f"genesis subject {subj!r} != 'ledger:' + origin")
        sw = payload["software"]
        if not isinstance(sw, str) or not sw.startswith("trailmark ") or len(sw) == len("trailmark "):
            bad(f"genesis software {sw!r} is not 'trailmark VERSION'")
        if payload["verifier_key"] != vkey_text:
            bad(f"genesis verifier_key {payload['verifier_key']!r} != the verifier key {vkey_text!r}")
        stats["origin"] = origin
        stats["software"] = sw
    return t


def load_kinds(path):
    table = load_format_registry()
    for ln in open(path, encoding="utf-8"):
        ln = ln.strip()
        if ln and not ln.startswith("#"):
            k, c = ln.split()
            if c not in ("genesis", "record", "correction", "administrative", "security", "signature"):
                raise SystemExit(f"--kinds: unknown class {c}")
            table[k] = c
    return table


def read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise VerifyError(f"cannot read {what}: {e}")


def verify(export_dir, key_arg, table, print_hashes=False, print_roots=False, signatures=True):
    stats = {"guessed_kinds": {}}
    # SIGNATURES.md §7, run in seq order alongside the ledger checks, so the
    # first failure reported is the one with the smallest seq.
    sigcheck = None
    if signatures:
        from signatures import SignatureChecker  # needs cryptography.x509
        sigcheck = SignatureChecker()
    # §5 step 1: verifier key
    vk_file = read_file(os.path.join(export_dir, "verifier-key"), "verifier-key")
    if not vk_file.endswith(b"\n") or vk_file.count(b"\n") != 1 or b"\r" in vk_file:
        raise VerifyError("export verifier-key is not exactly one LF-terminated line")
    try:
        export_key_text = vk_file[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError("export verifier-key is not UTF-8")
    VerifierKey(export_key_text)  # parses
    if key_arg is not None:
        key_text = load_key_arg(key_arg)
        vkey = VerifierKey(key_text)
        if export_key_text != key_text:
            raise VerifyError(f"export verifier-key {export_key_text!r} != given key {key_text!r}")
    else:
        print("WARNING: no --key given; trusting the export's own verifier-key", file=sys.stderr)
        key_text = export_key_text
        vkey = VerifierKey(key_text)

    # §5 step 2 and 3: entries
    data = read_file(os.path.join(export_dir, "entries.jsonl"), "entries.jsonl")
    lines = data.split(b"\n")
    last_unterminated = lines.pop()  # b"" iff file ends with LF (or is empty)
    n_complete = len(lines)
    hashes = []
    by_hex = {}
    prev_time = None
    for i, raw in enumerate(lines + ([last_unterminated] if last_unterminated else [])):
        if i == n_complete:
            raise VerifyError("last line is not terminated by LF (truncated file?)", i)
        if not raw:
            raise VerifyError("empty line", i)
        if b"\r" in raw:
            raise VerifyError("line contains CR", i)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as ex:
            raise VerifyError(f"line is not valid UTF-8: {ex}", i)
        try:
            e = parse_json(text)
            check_no_lone_surrogates(e)
        except VerifyError as ex:
            raise VerifyError(ex.msg, i)
        prev_time = check_entry(i, raw, e, by_hex, hashes[-1].hex() if hashes else None,
                                prev_time, key_text, table, stats)
        h = leaf_hash(raw)  # hash exactly the bytes given
        if sigcheck is not None:
            sigcheck.observe(i, e, h.hex())
        hashes.append(h)
        by_hex.setdefault(h.hex(), i)
    n = len(hashes)
    if n == 0:
        raise VerifyError("entries.jsonl is empty (no genesis entry)", 0)

    # §5 step 4: checkpoint
    try:
        origin, size, root = verify_signed_checkpoint(
            read_file(os.path.join(export_dir, "checkpoint"), "checkpoint"), vkey)
    except VerifyError as ex:
        raise VerifyError(ex.msg, None)
    if origin != stats["origin"]:
        raise VerifyError(f"checkpoint origin {origin!r} != genesis origin {stats['origin']!r}")
    if size == 0:
        raise VerifyError("checkpoint size is 0 (a Trailmark ledger is never empty)")
    if size > n:
        raise VerifyError(f"checkpoint size {size} exceeds the {n} entries in entries.jsonl: "
                          f"the ledger was truncated (entries {n}..{size-1} missing)", n)
    got = mth(hashes[:size])
    if got != root:
        raise VerifyError(f"checkpoint root {root.hex()} != MTH of the first {size} entry hashes "
                          f"{got.hex()}; the hash chain is internally consistent, so the last entry (seq {size-1}, "
                          f"whose hash no later prev pins) was altered, or entries were re-chained "
                          f"from an earlier seq",
                          size - 1)
    if n != size:
        raise VerifyError(f"entries.jsonl has {n} lines but the checkpoint attests {size} (§4): "
                          f"entries from seq {size} are not covered by the checkpoint", size)

    if print_hashes:
        for h in hashes:
            print(h.hex())
    if print_roots:
        for s in range(1, n + 1):
            print(s, mth(hashes[:s]).hex())
    return {"entries": n, "size": size, "root": root.hex(), "origin": origin,
            "key": key_text, "software": stats["software"], "guessed": stats["guessed_kinds"],
            "head": hashes[-1].hex(),
            "signatures": None if sigcheck is None else sigcheck.checked,
            "signature_notes": [] if sigcheck is None else sigcheck.notes}


def diagnose_prev_mismatch(export_dir, key_arg, ex):
    """After a prev mismatch at seq j, tell whether line j-1 or line j was altered:
    if the signed root matches the tree in which line j-1 has the hash that line j's
    prev names, line j-1's bytes were changed. Best effort; never changes the verdict."""
    if ex.seq is None or not ex.msg.startswith("prev is ") or ex.seq == 0:
        return None
    try:
        j = ex.seq
        vkey = VerifierKey(load_key_arg(key_arg) if key_arg else
                           open(os.path.join(export_dir, "verifier-key"), encoding="utf-8").read().rstrip("\n"))
        _, size, root = verify_signed_checkpoint(open(os.path.join(export_dir, "checkpoint"), "rb").read(), vkey)
        raws = open(os.path.join(export_dir, "entries.jsonl"), "rb").read().split(b"\n")[:-1]
        hs = [leaf_hash(r) for r in raws]
        if size > len(hs):
            return None
        claimed = bytes.fromhex(ex.msg.split()[2])
        alt = list(hs)
        alt[j - 1] = claimed
        if mth(alt[:size]) == root:
            return (f"diagnosis: with seq {j-1} given the hash that seq {j}'s prev names, the tree matches "
                    f"the signed root: the bytes of seq {j-1} were altered")
        return f"diagnosis: the signed root does not pin the alteration to seq {j-1} alone"
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--key", help="verifier key text, or a file holding it (obtain out of band)")
    ap.add_argument("--kinds", help="file of 'kind class' lines (the registry FORMAT.md does not give)")
    ap.add_argument("--print-hashes", action="store_true")
    ap.add_argument("--print-roots", action="store_true")
    ap.add_argument("--no-signatures", action="store_true",
                    help="skip the Part 11 signature checks of docs/SIGNATURES.md §7")
    a = ap.parse_args()
    table = load_kinds(a.kinds) if a.kinds else load_format_registry()
    try:
        r = verify(a.export_dir, a.key, table, a.print_hashes, a.print_roots,
                   signatures=not a.no_signatures)
    except VerifyError as ex:
        where = f"seq {ex.seq}" if ex.seq is not None else "checkpoint/key"
        print(f"FAILED at {where}: {ex.msg}")
        d = diagnose_prev_mismatch(a.export_dir, a.key, ex)
        if d:
            print(d)
        return 1
    print(f"OK: {r['entries']} entries, origin {r['origin']}, checkpoint size {r['size']}, "
          f"root {r['root']}, head hash {r['head']}, created by {r['software']!r}"
          + ("" if r["signatures"] is None else f", {r['signatures']} signatures checked"))
    for n in r["signature_notes"]:
        print(f"NOTE (SIGNATURES.md §2/§6, not a §7 rule): {n}")
    if r["guessed"]:
        print("NOTE: kind->class registry not in FORMAT.md; classes assumed: "
              + ", ".join(f"{k}={c}" for k, c in sorted(r["guessed"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
