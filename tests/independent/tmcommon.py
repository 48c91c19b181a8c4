"""Shared code for the independent Trailmark export verifier.

Written only from docs/FORMAT.md (format version 1).
"""
import base64
import binascii
import datetime
import hashlib
import json
import math
import re
from decimal import Decimal


class VerifyError(Exception):
    def __init__(self, msg, seq=None):
        super().__init__(msg)
        self.seq = seq
        self.msg = msg


# ---------------------------------------------------------------- encodings

HEX64 = re.compile(r"[0-9a-f]{64}\Z")
ORIGIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\Z")
INT_RE = re.compile(r"(0|[1-9][0-9]*)\Z")


def b64decode_strict(s, what):
    """RFC 4648 §4 with padding, no line breaks; also reject non-canonical
    encodings (non-zero pad bits) by re-encoding (a guess: FORMAT.md does not say)."""
    if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", s) or len(s) % 4:
        raise VerifyError(f"{what}: not padded standard base64: {s!r}")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VerifyError(f"{what}: bad base64: {e}")
    if base64.b64encode(raw).decode() != s:
        raise VerifyError(f"{what}: non-canonical base64")
    return raw


def sha256(b):
    return hashlib.sha256(b).digest()


def leaf_hash(b):
    return sha256(b"\x00" + b)


def node_hash(l, r):
    return sha256(b"\x01" + l + r)


# ---------------------------------------------------------------- verifier key (§3.3) / signed note (§3.2)

def key_id(name, pub):
    return sha256(name.encode() + b"\n" + b"\x01" + pub)[:4]


class VerifierKey:
    def __init__(self, text):
        self.text = text
        parts = text.split("+", 2)  # base64 may itself contain "+"; name and key ID cannot
        if len(parts) != 3:
            raise VerifyError(f"verifier key: expected NAME+KEYID+KEY, got {len(parts)} '+'-separated fields")
        name, kid_hex, kb64 = parts
        if not ORIGIN_RE.match(name):
            raise VerifyError(f"verifier key: key name {name!r} is not a valid origin (§3.1)")
        if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
            raise VerifyError(f"verifier key: key ID {kid_hex!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(kb64, "verifier key")
        if len(raw) != 33 or raw[0] != 0x01:
            raise VerifyError("verifier key: key data is not 0x01 || 32-byte Ed25519 public key")
        pub = raw[1:]
        want = key_id(name, pub).hex()
        if want != kid_hex:
            raise VerifyError(f"verifier key: key ID {kid_hex} != computed {want}")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        try:
            self.pk = Ed25519PublicKey.from_public_bytes(pub)
        except Exception as e:
            raise VerifyError(f"verifier key: bad Ed25519 public key: {e}")
        self.name, self.kid, self.pub = name, bytes.fromhex(kid_hex), pub

    def verify(self, sig, msg):
        from cryptography.exceptions import InvalidSignature
        try:
            self.pk.verify(sig, msg)
            return True
        except InvalidSignature:
            return False


def load_key_arg(arg):
    """--key is the key text or a file holding it (optionally followed by one LF)."""
    import os
    if os.path.isfile(arg):
        with open(arg, "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise VerifyError("--key file is not UTF-8")
        if text.endswith("\n"):
            text = text[:-1]
    else:
        text = arg
    if "\n" in text or "\r" in text:
        raise VerifyError("--key: key must be a single line")
    return text


EMDASH = "\u2014"


def parse_checkpoint_body(body):
    """§3.1: exactly three LF-terminated lines."""
    if not body.endswith("\n"):
        raise VerifyError("checkpoint body does not end with LF")
    lines = body[:-1].split("\n")
    if len(lines) != 3:
        raise VerifyError(f"checkpoint body has {len(lines)} lines, expected exactly 3 (no extension lines)")
    origin, size_s, root_b64 = lines
    if not ORIGIN_RE.match(origin):
        raise VerifyError(f"checkpoint origin {origin!r} is invalid")
    if not INT_RE.match(size_s):
        raise VerifyError(f"checkpoint size {size_s!r} is not a decimal integer without sign/leading zeros")
    size = int(size_s)
    if len(root_b64) != 44:
        raise VerifyError("checkpoint root is not 44 base64 characters")
    root = b64decode_strict(root_b64, "checkpoint root")
    if len(root) != 32:
        raise VerifyError("checkpoint root is not 32 bytes")
    return origin, size, root


def verify_signed_checkpoint(note_bytes, vkey):
    """§3.2. Returns (origin, size, root)."""
    try:
        note = note_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError("checkpoint is not UTF-8")
    if "\r" in note:
        raise VerifyError("checkpoint contains CR")
    if not note.endswith("\n"):
        raise VerifyError("checkpoint does not end with LF")
    i = note.rfind("\n\n")
    if i < 0:
        raise VerifyError("checkpoint: no empty line separating body and signatures")
    body = note[: i + 1]
    sig_block = note[i + 2:]
    sig_lines = sig_block[:-1].split("\n")
    if not sig_lines or sig_lines == [""]:
        raise VerifyError("checkpoint: no signature lines")
    good = False
    for ln in sig_lines:
        if not ln.startswith(EMDASH + " "):
            raise VerifyError(f"checkpoint: malformed signature line {ln!r} (must start with U+2014 and a space)")
        rest = ln[2:]
        parts = rest.split(" ")
        if len(parts) != 2 or not parts[0]:
            raise VerifyError(f"checkpoint: malformed signature line {ln!r}")
        name, b64 = parts
        raw = b64decode_strict(b64, "checkpoint signature")
        if len(raw) < 5:
            raise VerifyError("checkpoint: signature too short")
        kid, sig = raw[:4], raw[4:]
        if name != vkey.name or kid != vkey.kid:
            continue  # unknown key: ignore (§3.2)
        if len(sig) != 64:
            raise VerifyError("checkpoint: Ed25519 signature is not 64 bytes")
        if not vkey.verify(sig, body.encode("utf-8")):
            raise VerifyError("checkpoint: Ed25519 signature does not verify under the verifier key")
        good = True
    if not good:
        raise VerifyError("checkpoint: no signature line from the verifier key "
                          f"(name {vkey.name}, key ID {vkey.kid.hex()})")
    origin, size, root = parse_checkpoint_body(body)
    if origin != vkey.name:
        raise VerifyError(f"checkpoint origin {origin!r} != key name {vkey.name!r} (§3.2: the key name is the origin)")
    return origin, size, root


# ---------------------------------------------------------------- strict JSON + RFC 8785

class Num:
    """A JSON number: original text and its IEEE-754 double value."""
    __slots__ = ("text", "value")

    def __init__(self, text):
        self.text = text
        v = float(text)  # correctly rounded (also for integer literals)
        if math.isinf(v) or math.isnan(v):
            raise VerifyError(f"number {text} is outside the IEEE-754 double range")
        self.value = v

    def is_integer(self):
        return self.value == math.floor(self.value)


def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise VerifyError(f"duplicate member {k!r}")
        d[k] = v
    return d


def _bad_const(c):
    raise VerifyError(f"non-JSON constant {c}")


_decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_float=Num, parse_int=Num,
                            parse_constant=_bad_const, strict=True)


def parse_json(text):
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as e:
        raise VerifyError(f"invalid JSON: {e}")


def check_no_lone_surrogates(v):
    if isinstance(v, str):
        for ch in v:
            if 0xD800 <= ord(ch) <= 0xDFFF:
                raise VerifyError("string contains a lone surrogate (not I-JSON)")
    elif isinstance(v, dict):
        for k, x in v.items():
            check_no_lone_surrogates(k)
            check_no_lone_surrogates(x)
    elif isinstance(v, list):
        for x in v:
            check_no_lone_surrogates(x)


def es_number(x):
    """ECMAScript Number.prototype.toString(x) for a finite double."""
    if x == 0:
        return "0"  # also -0
    if x < 0:
        return "-" + es_number(-x)
    # shortest round-trip digits (Python repr = shortest, closest; same as ES)
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0")
    # value = 0.ds * 10^n  -> n as in ES spec: value = ds * 10^(n-k)
    k = len(ds)
    n = exp + len(digits)  # position of decimal point relative to all digits
    if k <= n <= 21:
        return ds + "0" * (n - k)
    if 0 < n <= 21:
        return ds[:n] + "." + ds[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + ds
    e = n - 1
    es = ("+" if e >= 0 else "-") + str(abs(e))
    if k == 1:
        return ds + "e" + es
    return ds[0] + "." + ds[1:] + "e" + es


_ESC = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def jcs_string(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if o in _ESC:
            out.append(_ESC[o])
        elif o < 0x20:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_key(s):
    return s.encode("utf-16-be")  # big-endian bytes sort like UTF-16 code units


def jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, Num):
        return es_number(v.value)
    if isinstance(v, (int, float)):
        return es_number(float(v))
    if isinstance(v, str):
        return jcs_string(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(jcs_string(k) + ":" + jcs(v[k]) for k in sorted(v, key=_utf16_key)) + "}"
    raise TypeError(type(v))


# ---------------------------------------------------------------- Merkle tree (RFC 9162 §2.1)

def _split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    """MTH over a list of leaf hashes (entry hashes are already leaf hashes)."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    # iterative, equivalent to the recursive RFC definition
    level = list(leaves)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def mth_rec(leaves):
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(mth_rec(leaves[:k]), mth_rec(leaves[k:]))


def inclusion_path(m, leaves):
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return inclusion_path(m, leaves[:k]) + [mth_rec(leaves[k:])]
    return inclusion_path(m - k, leaves[k:]) + [mth_rec(leaves[:k])]


def verify_inclusion(leaf_index, tree_size, leaf, path, root):
    """RFC 9162 §2.1.3.2."""
    if leaf_index >= tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def subtree_hash(lo, hi, node):
    """MTH of the leaves [lo, hi) of an RFC 9162 tree, computed from perfect,
    aligned subtrees: node(level, index) returns the hash of leaves
    [index * 2^level, (index + 1) * 2^level). A range of a power-of-two size
    aligned to it is one such node; any other range (the right edge of a tree
    whose size is not a power of two) is split as RFC 9162 §2.1.1 splits it,
    into a perfect left part and the rest."""
    n = hi - lo
    if n <= 0:
        raise ValueError("empty range")
    if n & (n - 1) == 0 and lo % n == 0:
        return node(n.bit_length() - 1, lo // n)
    k = _split(n)
    return node_hash(subtree_hash(lo, lo + k, node), subtree_hash(lo + k, hi, node))


def perfect_subtrees(lo, hi):
    """The (level, index) nodes subtree_hash(lo, hi, ...) reads, left to right."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        return [(n.bit_length() - 1, lo // n)]
    k = _split(n)
    return perfect_subtrees(lo, lo + k) + perfect_subtrees(lo + k, hi)


def inclusion_ranges(m, n):
    """The leaf ranges [lo, hi) whose MTHs are PATH(m, D[n]) of RFC 9162
    §2.1.3.1, in path order (closest to the leaf first)."""
    if not 0 <= m < n:
        raise ValueError("leaf index out of range")
    out = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


# ---------------------------------------------------------------- RFC 3339 times

# re.ASCII: \d would otherwise also match non-ASCII digits; [0-9] is used anyway.
RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))\Z", re.ASCII)
# Trailmark's stored form (FORMAT.md §1 recorded_at, REPORTS.md §4.1 facts)
STORED_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z", re.ASCII)


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def rfc3339_micros(s, what="time"):
    """Parse an RFC 3339 date-time (§5.6: 'T'/'t', 'Z'/'z' or a numeric offset,
    any number of fractional digits) and return the instant as whole
    microseconds since 1970-01-01T00:00:00Z, the fraction truncated (not
    rounded) to six digits. A leap second (:60) is refused: Trailmark never
    stores one (FORMAT.md §1) and it has no unique instant to compare."""
    if not isinstance(s, str):
        raise VerifyError(f"{what}: {s!r} is not a string")
    m = RFC3339_RE.match(s)
    if not m:
        raise VerifyError(f"{what}: {s!r} is not an RFC 3339 date-time")
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and hh <= 23 and mi <= 59 and ss <= 59):
        raise VerifyError(f"{what}: {s!r} is not a valid calendar date and time")
    off = 0
    if not m.group(8):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise VerifyError(f"{what}: {s!r} has an invalid offset")
        off = (oh * 60 + om) * (1 if m.group(9) == "+" else -1)
    micros = int((frac + "000000")[:6])
    secs = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off * 60
    return secs * 1_000_000 + micros


def stored_time_micros(s, what="time"):
    """A time in Trailmark's stored form, YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    if not isinstance(s, str) or not STORED_TIME_RE.match(s):
        raise VerifyError(f"{what}: {s!r} is not in the stored form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return rfc3339_micros(s, what)
