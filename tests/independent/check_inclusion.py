#!/usr/bin/env python3
"""Check a Trailmark portable inclusion proof (FORMAT.md §2.1).

usage: check_inclusion.py PROOF_JSON_FILE --key VERIFIER_KEY_TEXT_OR_FILE
Exit 0 and "OK ..." or 1 and "FAILED: ...".
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tmcommon import (VerifyError, VerifierKey, load_key_arg, verify_signed_checkpoint,
                      parse_json, check_no_lone_surrogates, jcs, Num, leaf_hash,
                      verify_inclusion, HEX64)

FIELDS = {"format", "entry", "leaf_index", "tree_size", "leaf_hash", "path", "checkpoint"}


def as_int(v, what):
    if not isinstance(v, Num) or not v.is_integer() or v.value < 0 or v.value > 2 ** 53 - 1:
        raise VerifyError(f"{what} is not a non-negative integer")
    return int(v.value)


def check(proof_bytes, key_arg):
    vkey = VerifierKey(load_key_arg(key_arg))
    try:
        p = parse_json(proof_bytes.decode("utf-8"))
    except UnicodeDecodeError:
        raise VerifyError("proof file is not UTF-8")
    if not isinstance(p, dict):
        raise VerifyError("proof is not a JSON object")
    missing = FIELDS - p.keys()
    if missing:
        raise VerifyError(f"proof lacks member(s) {sorted(missing)}")
    extra = p.keys() - FIELDS
    if extra:  # FORMAT.md does not say whether extra members are allowed
        print(f"WARNING: proof has unspecified member(s) {sorted(extra)}", file=sys.stderr)
    if p["format"] != "trailmark-inclusion-proof-v1":
        raise VerifyError(f"format is {p['format']!r}, expected trailmark-inclusion-proof-v1")
    entry, ckpt = p["entry"], p["checkpoint"]
    if not isinstance(entry, str) or not isinstance(ckpt, str):
        raise VerifyError("entry and checkpoint must be JSON strings")
    idx = as_int(p["leaf_index"], "leaf_index")
    size = as_int(p["tree_size"], "tree_size")
    lh = p["leaf_hash"]
    if not isinstance(lh, str) or not HEX64.match(lh):
        raise VerifyError("leaf_hash is not 64 lowercase hex characters")
    path = p["path"]
    if not isinstance(path, list) or not all(isinstance(h, str) and HEX64.match(h) for h in path):
        raise VerifyError("path is not an array of 64-character hex hashes")

    # 1. SHA-256(0x00 || UTF-8 bytes of entry) == leaf_hash
    try:
        entry_bytes = entry.encode("utf-8")
    except UnicodeEncodeError:
        raise VerifyError("entry contains a lone surrogate")
    got = leaf_hash(entry_bytes)
    if got.hex() != lh:
        raise VerifyError(f"hash of entry {got.hex()} != leaf_hash {lh}")
    # 2. entry's seq == leaf_index
    e = parse_json(entry)
    check_no_lone_surrogates(e)
    if not isinstance(e, dict) or "seq" not in e:
        raise VerifyError("entry is not a JSON object with a seq")
    seq = as_int(e["seq"], "entry seq")
    if seq != idx:
        raise VerifyError(f"entry seq {seq} != leaf_index {idx}")
    canonical = jcs(e).encode("utf-8") == entry_bytes
    if not canonical:  # not required by §2.1, but the ledger only stores canonical bytes
        raise VerifyError("entry bytes are not RFC 8785 canonical")
    # 3. checkpoint signed by the key, size == tree_size
    origin, csize, root = verify_signed_checkpoint(ckpt.encode("utf-8"), vkey)
    if csize != size:
        raise VerifyError(f"checkpoint size {csize} != tree_size {size}")
    # 4. path verifies against the checkpoint root
    if not verify_inclusion(idx, size, got, [bytes.fromhex(h) for h in path], root):
        raise VerifyError(f"inclusion path does not lead from leaf {idx} to the checkpoint root {root.hex()} "
                          f"at size {size}")
    return idx, size, origin, root, e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("proof")
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    try:
        with open(a.proof, "rb") as f:
            data = f.read()
        idx, size, origin, root, e = check(data, a.key)
    except (VerifyError, OSError) as ex:
        print(f"FAILED: {getattr(ex, 'msg', ex)}")
        return 1
    print(f"OK: entry seq {idx} ({e.get('kind')}, {e.get('subject')}) is included in the ledger "
          f"{origin} at size {size}, root {root.hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
