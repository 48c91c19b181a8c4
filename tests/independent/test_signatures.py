#!/usr/bin/env python3
"""Self-test of the SIGNATURES.md §7 checks (signatures.py) on a real export.

usage: test_signatures.py EXPORT_DIR --key VERIFIER_KEY_TEXT_OR_FILE

Any changed byte of an export breaks the hash chain before a signature rule
is reached, so each case here feeds the parsed entries of a genuine export
(which must first pass verify_export.verify with its signatures) straight into
SignatureChecker, with one thing changed -- a manifestation member, the target,
a missing certificate, a role change inserted before a signature, ... -- and
asserts that the checker refuses it with the expected rule number (or, for
the control cases, accepts it).

Some cases need a certificate with one specific defect whose signature still
verifies. They use a test CA and a test signing key made here, recorded with
inserted admin.ca.trusted / admin.certificate.issued entries, and re-sign the
manifestation with the test key, so only the defect under test is wrong.

The export must contain a `reviewed` signature followed by an `approved`
signature by another user on the same target, as the demo's does.
"""
import argparse
import base64
import datetime
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from tmcommon import VerifyError, parse_json, leaf_hash
from signatures import SignatureChecker, signed_message, parse_utc
import verify_export


# ---------------------------------------------------------------- the export as a list of (entry, hash)

def load_entries(export_dir):
    """Fresh parsed copies of every entry with its real hash (cheap enough to redo per case)."""
    with open(os.path.join(export_dir, "entries.jsonl"), "rb") as f:
        raws = f.read().split(b"\n")[:-1]
    return [[parse_json(r.decode("utf-8")), leaf_hash(r).hex()] for r in raws]


def run_checker(rows):
    """Feed rows in order; position = seq. Returns the checker; raises VerifyError."""
    chk = SignatureChecker()
    for i, (e, h) in enumerate(rows):
        chk.observe(i, e, h)
    return chk


def find(rows, kind, **payload):
    """Index of the first row of `kind` whose payload has the given members."""
    for i, (e, _) in enumerate(rows):
        if e["kind"] == kind and all(e["payload"].get(k) == v for k, v in payload.items()):
            return i
    raise SystemExit(f"the export has no {kind} entry with {payload}")


def sig_index(rows, meaning):
    for i, (e, _) in enumerate(rows):
        if e["kind"] == "signature.applied" and e["payload"]["manifestation"]["meaning"] == meaning:
            return i
    raise SystemExit(f"the export has no signature.applied with meaning {meaning!r}")


_fake = [0]


def new_entry(kind, subject, payload, near, actor="system:cli"):
    """An entry to insert next to entry `near`; its 'hash' is a unique fake
    (the checker only uses hashes to name targets)."""
    _fake[0] += 1
    e = {"v": 1, "seq": 0, "prev": "0" * 64, "recorded_at": near["recorded_at"], "kind": kind,
         "actor": actor, "subject": subject, "correlation_id": None, "idempotency_key": None,
         "parents": [], "reason": "self-test", "payload": payload}
    return [e, hashlib.sha256(b"fake entry %d" % _fake[0]).hexdigest()]


def user_changed(rows, near, uid, field, old, new):
    return new_entry("admin.user.changed", "user:" + uid,
                     {"user_id": uid, "changes": {field: {"old": old, "new": new}}}, rows[near][0])


# ---------------------------------------------------------------- test certificates

def b64(b):
    return base64.b64encode(b).decode()


def raw_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def make_ca(not_before, not_after, ca_flag=True):
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Self-test CA")])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
    if ca_flag is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca_flag, path_length=0 if ca_flag else None), critical=True)
    return key, b.sign(key, None)


def make_user_cert(ca_key, ca_cert, user_key, uid, cn, not_before, not_after,
                   key_usage="sign", is_ca=False):
    attrs = []
    if uid:  # False: a certificate without a UID attribute
        attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    b = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
         .public_key(user_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if key_usage is not None:
        sign = key_usage == "sign"
        b = b.add_extension(x509.KeyUsage(digital_signature=sign, content_commitment=False,
                                          key_encipherment=not sign, data_encipherment=False,
                                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                                          encipher_only=False, decipher_only=False), critical=True)
    return b.sign(ca_key, None)


def forge(rows, meaning, uid_in_cert=None, cn=None, key_usage="sign", is_ca=False, ca_flag=True,
          cert_window=None, ca_window=None, user_key=None, recorded_pub=None):
    """Re-sign the signature with `meaning` with a test CA and key.

    Inserts admin.ca.trusted and admin.certificate.issued just before the
    signature and replaces its certificate_sha256 and signature. The keyword
    arguments introduce one defect each; with none, the result is valid."""
    i = sig_index(rows, meaning)
    e = rows[i][0]
    m = e["payload"]["manifestation"]
    uid = m["user_id"]
    signed_at = parse_utc(m["signed_at"])
    day = datetime.timedelta(days=1)
    ca_nb, ca_na = ca_window or (signed_at - day, signed_at + 365 * day)
    nb, na = cert_window or (signed_at - day, signed_at + 30 * day)
    ca_key, ca_cert = make_ca(ca_nb, ca_na, ca_flag)
    signing_key = ed25519.Ed25519PrivateKey.generate()
    cert_key = user_key or signing_key  # the key the certificate carries
    cert = make_user_cert(ca_key, ca_cert, cert_key, uid if uid_in_cert is None else uid_in_cert,
                          m["printed_name"] if cn is None else cn, nb, na, key_usage, is_ca)
    ca_der = ca_cert.public_bytes(serialization.Encoding.DER)
    der = cert.public_bytes(serialization.Encoding.DER)
    ca_h, h = hashlib.sha256(ca_der).hexdigest(), hashlib.sha256(der).hexdigest()
    if recorded_pub is None:
        recorded_pub = raw_pub(signing_key)
    trusted = new_entry("admin.ca.trusted", "ca:" + ca_h,
                        {"certificate": b64(ca_der), "certificate_sha256": ca_h,
                         "subject": "CN=Self-test CA", "source": "imported"}, e)
    issued = new_entry("admin.certificate.issued", "user:" + uid,
                       {"user_id": uid, "certificate": b64(der), "certificate_sha256": h,
                        "public_key": b64(recorded_pub),
                        "not_before": nb.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "not_after": na.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}, e, actor="system:trailmark")
    m["certificate_sha256"] = h
    e["payload"]["signature"] = b64(signing_key.sign(signed_message(m, e["payload"]["target"])))
    rows[i:i] = [trusted, issued]


# ---------------------------------------------------------------- the cases

def cases():
    """(name, expected rule number, "identity" or None for 'accepted', mutate(rows))."""
    R, A = "reviewed", "approved"   # the two signatures of the demo

    def sig(rows, meaning=A):
        return rows[sig_index(rows, meaning)][0]

    def man(rows, meaning=A):
        return sig(rows, meaning)["payload"]["manifestation"]

    def set_(d, k, v):
        d[k] = v

    def pop(d, k):
        d.pop(k)

    def other_hash(rows):
        """The hash of an earlier entry that is not the signed target."""
        t = sig(rows)["payload"]["target"]
        return next(h for e, h in rows if h != t and not e["kind"].startswith(("admin.", "ledger.")))

    def insert_before_sig(rows, make, meaning=A):
        i = sig_index(rows, meaning)
        rows.insert(i, make(rows, i))

    def uid(rows, meaning=A):
        return man(rows, meaning)["user_id"]

    def shift(ts, **kw):
        return (parse_utc(ts) + datetime.timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def remove(rows, kind, **payload):
        del rows[find(rows, kind, **payload)]

    yield "unchanged export", None, lambda rows: None

    # rule 1
    yield "parents is not [target]", 1, lambda rows: set_(sig(rows), "parents", [other_hash(rows)])
    yield "algorithm is ed448", 1, lambda rows: set_(sig(rows)["payload"], "algorithm", "ed448")
    yield "manifestation has an extra member", 1, lambda rows: set_(man(rows), "location", "Basel")
    yield "manifestation lacks authentication", 1, lambda rows: pop(man(rows), "authentication")
    yield "payload has an extra member", 1, lambda rows: set_(sig(rows)["payload"], "comment", "x")
    yield "signed_at has no fraction", 1, lambda rows: set_(man(rows), "signed_at", man(rows)["signed_at"][:19] + "Z")
    yield "meaning outside the vocabulary", 1, lambda rows: set_(man(rows), "meaning", "blessed")
    yield "target is upper-case hex", 1, lambda rows: (
        set_(sig(rows)["payload"], "target", sig(rows)["payload"]["target"].upper()),
        set_(sig(rows), "parents", [sig(rows)["payload"]["target"]]))

    # rule 2
    yield "actor is the other signer", 2, lambda rows: set_(sig(rows), "actor", "user:" + uid(rows, R))
    yield "actor is a service", 2, lambda rows: set_(sig(rows), "actor", "service:qms")

    # rule 3
    yield "certificate_sha256 unknown", 3, lambda rows: set_(man(rows), "certificate_sha256", "ab" * 32)
    yield "certificate of the other signer", 3, lambda rows: set_(
        man(rows), "certificate_sha256", man(rows, R)["certificate_sha256"])
    yield "certificate.issued removed", 3, lambda rows: remove(rows, "admin.certificate.issued", user_id=uid(rows))

    def revoke(rows, i):
        return new_entry("admin.certificate.revoked", "user:" + uid(rows),
                         {"user_id": uid(rows), "certificate_sha256": man(rows)["certificate_sha256"],
                          "cause": "key-loss"}, rows[i][0])
    yield "certificate revoked before the signature", 3, lambda rows: insert_before_sig(rows, revoke)
    yield "certificate revoked after the signature (control)", None, lambda rows: rows.append(
        revoke(rows, len(rows) - 1))

    # rule 4 -- the demo's own certificates and CA
    yield "admin.ca.trusted removed", 4, lambda rows: remove(rows, "admin.ca.trusted")
    yield "signed_at 2 days earlier (before the validity of CA and certificate)", 4, lambda rows: set_(
        man(rows), "signed_at", shift(man(rows)["signed_at"], days=-2))
    yield "public_key of certificate.issued is another key", 4, lambda rows: set_(
        rows[find(rows, "admin.certificate.issued", user_id=uid(rows))][0]["payload"], "public_key",
        rows[find(rows, "admin.certificate.issued", user_id=uid(rows, R))][0]["payload"]["public_key"])
    yield "printed name changed before the signature (CN now stale)", "CN", lambda rows: insert_before_sig(
        rows, lambda r, i: user_changed(r, i, uid(r), "printed_name", man(r)["printed_name"], "Dana Ruiz-Okafor"))
    # rule 4 -- test certificates with one defect each (signature re-made, so rule 5 would pass)
    yield "test CA and certificate, no defect (control)", None, lambda rows: forge(rows, A)
    yield "certificate UID is another user", 4, lambda rows: forge(rows, A, uid_in_cert="revans")
    yield "certificate has no UID", 4, lambda rows: forge(rows, A, uid_in_cert=False)
    yield "certificate CN is not the printed name", "CN", lambda rows: forge(rows, A, cn="D. Ruiz")
    yield "certificate keyUsage only keyEncipherment", 4, lambda rows: forge(rows, A, key_usage="encipher")
    yield "certificate has no keyUsage", 4, lambda rows: forge(rows, A, key_usage=None)
    yield "certificate is a CA", 4, lambda rows: forge(rows, A, is_ca=True)
    yield "issuing 'CA' has cA=FALSE", 4, lambda rows: forge(rows, A, ca_flag=False)

    def window(rows, days_before, days_after):
        s = parse_utc(man(rows)["signed_at"])
        return s + datetime.timedelta(days=days_before), s + datetime.timedelta(days=days_after)
    yield "certificate expired at signed_at", 4, lambda rows: forge(rows, A, cert_window=window(rows, -30, -1))
    yield "issuing CA expired at signed_at", 4, lambda rows: forge(rows, A, ca_window=window(rows, -30, -1))
    yield "certificate holds an ECDSA key", 4, lambda rows: forge(
        rows, A, user_key=ec.generate_private_key(ec.SECP256R1()))
    yield "certificate key differs from the signing key recorded", 4, lambda rows: forge(
        rows, A, user_key=ed25519.Ed25519PrivateKey.generate())

    # rule 5
    def flip(rows):
        s = base64.b64decode(sig(rows)["payload"]["signature"])
        sig(rows)["payload"]["signature"] = b64(bytes([s[0] ^ 1]) + s[1:])
    yield "signature bit flipped", 5, flip
    yield "signature of the other signer", 5, lambda rows: set_(
        sig(rows)["payload"], "signature", sig(rows, R)["payload"]["signature"])
    yield "signature truncated to 63 bytes", 5, lambda rows: set_(
        sig(rows)["payload"], "signature", b64(base64.b64decode(sig(rows)["payload"]["signature"])[:63]))
    yield "meaning_text changed", 5, lambda rows: set_(man(rows), "meaning_text", "Approved (final)")
    yield "authentication changed", 5, lambda rows: set_(man(rows), "authentication", "password-in-session")
    yield "signed_at moved 1 µs", 5, lambda rows: set_(man(rows), "signed_at", shift(man(rows)["signed_at"], microseconds=1))

    def move(rows):
        h = other_hash(rows)
        sig(rows)["payload"]["target"] = h
        sig(rows)["parents"] = [h]
    yield "signature moved to another entry (target and parents)", 5, move

    # rule 6 (recorded_at is not signed, so only rule 6 can notice)
    yield "recorded 301 s after signed_at", 6, lambda rows: set_(
        sig(rows), "recorded_at", shift(man(rows)["signed_at"], seconds=301))
    yield "recorded exactly 300 s after signed_at (control)", None, lambda rows: set_(
        sig(rows), "recorded_at", shift(man(rows)["signed_at"], seconds=300))
    yield "recorded 1 µs before signed_at", 6, lambda rows: set_(
        sig(rows), "recorded_at", shift(man(rows)["signed_at"], microseconds=-1))

    # rule 7
    def roles_of(rows, u):
        return rows[find(rows, "admin.user.created", user_id=u)][0]["payload"]["roles"]
    yield "approver's roles changed to qa_reviewer before the signature", 7, lambda rows: insert_before_sig(
        rows, lambda r, i: user_changed(r, i, uid(r), "roles", roles_of(r, uid(r)), ["qa_reviewer"]))
    yield "approver's roles changed after the signature (control)", None, lambda rows: rows.append(
        user_changed(rows, len(rows) - 1, uid(rows), "roles", roles_of(rows, uid(rows)), ["qa_reviewer"]))
    yield "approver deactivated before the signature", 7, lambda rows: insert_before_sig(
        rows, lambda r, i: user_changed(r, i, uid(r), "status", "active", "deactivated"))
    yield "approver locked out before the signature", 7, lambda rows: insert_before_sig(
        rows, lambda r, i: new_entry("security.account.locked", "user:" + uid(r),
                                     {"user_id": uid(r), "consecutive_failures": 5}, r[i][0]))

    def lock_unlock(rows):
        insert_before_sig(rows, lambda r, i: new_entry(
            "security.account.locked", "user:" + uid(r), {"user_id": uid(r), "consecutive_failures": 5}, r[i][0]))
        insert_before_sig(rows, lambda r, i: user_changed(r, i, uid(r), "status", "locked", "active"))
    yield "approver locked then unlocked (control)", None, lambda rows: lock_unlock(rows)

    def policy_change(edit):
        def mutate(rows):
            old = rows[find(rows, "admin.signing_policy.changed")][0]["payload"]["new"]
            new = parse_json(verify_export.jcs(old))  # a copy
            edit(new)
            insert_before_sig(rows, lambda r, i: new_entry(
                "admin.signing_policy.changed", "config:signing-policy", {"old": old, "new": new}, r[i][0]))
        return mutate
    yield "policy: approved needs validation_engineer", 7, policy_change(
        lambda p: set_(p["meanings"]["approved"], "roles", ["validation_engineer"]))
    yield "policy: approved removed", 7, policy_change(lambda p: p["meanings"].pop("approved"))
    yield "no signing policy recorded", 7, lambda rows: remove(rows, "admin.signing_policy.changed")

    # identity replay (§1, §3): not a §7 rule, but the replay cannot go on
    def duplicate_user(rows):
        i = find(rows, "admin.user.created", user_id=uid(rows))
        rows.insert(sig_index(rows, A), [parse_json(verify_export.jcs(rows[i][0])), "cd" * 32])
    yield "admin.user.created twice for one ID", "identity", duplicate_user
    yield "certificate_sha256 of certificate.issued is not the DER's", "identity", lambda rows: set_(
        rows[find(rows, "admin.certificate.issued", user_id=uid(rows))][0]["payload"], "certificate_sha256", "ef" * 32)


def note_cases():
    """Requirements of §2/§6 outside §7: accepted, but a note must name them."""
    R = "reviewed"

    def drop_review(rows):
        del rows[sig_index(rows, R)]
    yield "review signature removed", "approval_requires_review", drop_review

    def change_subject(rows):
        rows[sig_index(rows, R)][0]["subject"] = "qms:capa/OTHER"
    yield "signature subject differs from the target's", "target's subject", change_subject


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--key", required=True)
    a = ap.parse_args()

    # The export itself must pass the full verifier, signatures included.
    r = verify_export.verify(a.export_dir, a.key, verify_export.load_format_registry())
    print(f"export verifies: {r['entries']} entries, {r['signatures']} signatures checked")
    if r["signatures"] < 2:
        raise SystemExit("the export needs at least two signatures (run `trailmark demo`)")

    failures = 0
    for name, want, mutate in cases():
        rows = load_entries(a.export_dir)
        mutate(rows)
        try:
            chk = run_checker(rows)
            got, detail = None, f"accepted, {chk.checked} signatures"
            # A string other than "identity" expects acceptance with a note naming it.
            if isinstance(want, str) and want != "identity" and any(want in n for n in chk.notes):
                got, detail = want, "accepted with a note: " + "; ".join(chk.notes)
        except VerifyError as ex:
            if ex.msg.startswith("signature rule "):
                got = int(ex.msg.split(":")[0].split()[-1])
            else:
                got = "identity" if ex.msg.startswith("identity") else ex.msg
            detail = f"seq {ex.seq}: {ex.msg}"
        ok = got == want
        failures += not ok
        label = "accept" if want is None else want if isinstance(want, str) else f"rule {want}"
        print(f"{'ok ' if ok else 'BAD'} [{label:>8}] {name}: {detail}")

    for name, needle, mutate in note_cases():
        rows = load_entries(a.export_dir)
        mutate(rows)
        try:
            chk = run_checker(rows)
            notes = chk.notes
            ok = any(needle in n for n in notes)
            detail = "; ".join(notes) or "no note"
        except VerifyError as ex:
            ok, detail = False, f"refused: seq {ex.seq}: {ex.msg}"
        failures += not ok
        print(f"{'ok ' if ok else 'BAD'} [{'note':>8}] {name}: {detail}")

    print("all cases behaved as expected" if not failures else f"{failures} case(s) did NOT behave as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
