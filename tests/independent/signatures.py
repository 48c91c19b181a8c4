"""Part 11 signature checks for the independent Trailmark verifier.

Written only from docs/SIGNATURES.md (§3, §5, §6, §7) and docs/FORMAT.md,
never from the Rust code. `SignatureChecker` is fed every entry of a ledger in
seq order (after the FORMAT.md checks of that entry have passed). It replays
the identity entries of SIGNATURES.md §3 -- users, roles, status, certificates,
trusted CAs, the signing policy -- and checks each `signature.applied` entry at
seq s against rules 1-7 of §7 using only what entries before s recorded.

A violation raises VerifyError("signature rule K: ...", seq=s). An identity
entry that cannot be replayed (e.g. a certificate whose recorded SHA-256 is not
the SHA-256 of its DER) raises VerifyError("identity (SIGNATURES.md §3): ...").

Some requirements of SIGNATURES.md §2 and §6 are not among the rules of §7
(the subject of a signature, meaning_text, printed_name, signed_at_local, the
separation-of-duties rules). They are checked too but only reported as notes,
never as failures, because §7 is what the spec says `verify` checks.

Places where the spec left a choice to the implementer are marked GUESS.
"""
import datetime
import hashlib
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from tmcommon import VerifyError, b64decode_strict, jcs, HEX64

# ---------------------------------------------------------------- vocabulary (§1, §2, §3, §6)

USER_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
ROLES = {"administrator", "qa_reviewer", "qa_approver", "trainer", "operator",
         "validation_engineer", "inspector", "integration"}
MEANINGS = {"authored", "reviewed", "approved", "verified", "executed",
            "training-completed", "responsible", "rejected"}
STATUSES = {"active", "locked", "deactivated"}
POLICY_RULES = {"approval_requires_review", "no_self_approval", "no_self_grant_of_signing_roles"}
REVOCATION_CAUSES = {"key-loss", "password-reset", "deactivated", "superseded"}

PAYLOAD_MEMBERS = {"algorithm", "manifestation", "signature", "target"}
MANIFESTATION_MEMBERS = {"user_id", "printed_name", "meaning", "meaning_text", "signed_at",
                         "signed_at_local", "certificate_sha256", "authentication"}
AUTHENTICATIONS = {"user-id-and-password", "password-in-session"}
SIGNED_AT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")       # form of recorded_at
SIGNED_AT_LOCAL_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}\Z")

SIGNATURE_CONTEXT = "trailmark.signature.v1"
MAX_CLOCK_SKEW = datetime.timedelta(seconds=300)  # rule 6


def parse_utc(s):
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` -> aware datetime (None if malformed)."""
    if not isinstance(s, str) or not SIGNED_AT_RE.match(s):
        return None
    try:
        return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def signed_message(manifestation, target):
    """§6: the RFC 8785 bytes of {"context", "manifestation", "target"}."""
    return jcs({"context": SIGNATURE_CONTEXT, "manifestation": manifestation,
                "target": target}).encode("utf-8")


# ---------------------------------------------------------------- replayed state

class User:
    def __init__(self, user_id, printed_name, email, roles, seq):
        self.user_id = user_id
        self.printed_name = printed_name
        self.email = email
        self.roles = list(roles)
        # GUESS: §3 does not say what status admin.user.created gives; a new
        # user is taken to be `active` (the payload has no status member).
        self.status = "active"
        self.created_seq = seq


class IssuedCertificate:
    def __init__(self, user_id, der, public_key, seq):
        self.user_id = user_id
        self.der = der
        self.public_key = public_key  # the 32 raw bytes recorded in the issuing entry
        self.issued_seq = seq
        self.revoked_seq = None       # seq of the first admin.certificate.revoked naming it


class TrustedCA:
    def __init__(self, der, seq):
        self.der = der
        self.seq = seq
        self.cert = None  # parsed lazily (rule 4); a CA that does not parse is never a chain end
        try:
            self.cert = x509.load_der_x509_certificate(der)
        except ValueError:
            pass


def _str(v):
    return isinstance(v, str)


def _str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


class SignatureChecker:
    """Feed every entry in seq order with `observe(seq, entry, entry_hash_hex)`."""

    def __init__(self):
        self.users = {}        # user_id -> User
        self.certs = {}        # certificate sha256 hex -> IssuedCertificate
        self.cas = {}          # CA certificate sha256 hex -> TrustedCA
        self.policy = None     # the signing policy in force (last admin.signing_policy.changed)
        self.entries = {}      # entry hash hex -> (seq, actor, subject): possible targets
        self.signatures = []   # (seq, target, user_id, meaning) of the signatures checked so far
        self.checked = 0       # number of signature.applied entries that passed rules 1-7
        self.notes = []        # requirements outside §7 that did not hold (reported, not fatal)

    # -------------------------------------------------------------- driver

    def observe(self, seq, e, entry_hash_hex):
        kind = e["kind"]
        if kind == "signature.applied":
            self._check_signature(seq, e)
        else:
            replay = self._REPLAY.get(kind)
            if replay is not None:
                replay(self, seq, e, e["payload"])
        # Recorded after the check: a signature may only use entries before it.
        self.entries[entry_hash_hex] = (seq, e["actor"], e["subject"])

    def note(self, seq, msg):
        self.notes.append(f"seq {seq}: {msg}")

    # -------------------------------------------------------------- §3 identity replay

    @staticmethod
    def _identity_error(seq, msg):
        raise VerifyError(f"identity (SIGNATURES.md §3): {msg}", seq)

    def _user_payload_id(self, seq, e, p, must_exist=True):
        """user_id of a `user:<id>` identity entry; subject must name the same user."""
        uid = p.get("user_id")
        if not _str(uid) or not USER_ID_RE.match(uid):
            self._identity_error(seq, f"{e['kind']}: user_id {uid!r} is not a valid user ID (§1)")
        if e["subject"] != "user:" + uid:
            self._identity_error(seq, f"{e['kind']}: subject {e['subject']!r} != 'user:{uid}'")
        if must_exist and uid not in self.users:
            self._identity_error(seq, f"{e['kind']}: user {uid!r} has no earlier admin.user.created")
        return uid

    def _check_roles(self, seq, kind, roles):
        if not _str_list(roles) or len(set(roles)) != len(roles):
            self._identity_error(seq, f"{kind}: roles {roles!r} is not an array of distinct strings")
        unknown = set(roles) - ROLES
        if unknown:
            self._identity_error(seq, f"{kind}: unknown role(s) {sorted(unknown)} (§2)")

    def _user_created(self, seq, e, p):
        uid = self._user_payload_id(seq, e, p, must_exist=False)
        if uid in self.users:
            # §1: admin.user.created MUST NOT appear twice for one ID.
            self._identity_error(seq, f"admin.user.created for {uid!r} again (first at seq "
                                      f"{self.users[uid].created_seq}); user IDs are never reused")
        self._check_roles(seq, e["kind"], p.get("roles"))
        if not _str(p.get("printed_name")):
            self._identity_error(seq, "admin.user.created: printed_name is not a string")
        self.users[uid] = User(uid, p["printed_name"], p.get("email"), p["roles"], seq)

    def _user_changed(self, seq, e, p):
        uid = self._user_payload_id(seq, e, p)
        user = self.users[uid]
        changes = p.get("changes")
        if not isinstance(changes, dict):
            self._identity_error(seq, "admin.user.changed: changes is not an object")
        for field, ch in changes.items():
            if field not in ("printed_name", "email", "roles", "status"):
                self._identity_error(seq, f"admin.user.changed: unknown field {field!r} in changes")
            if not isinstance(ch, dict) or set(ch) != {"old", "new"}:
                self._identity_error(seq, f"admin.user.changed: changes.{field} is not {{\"old\", \"new\"}}")
            new = ch["new"]
            if field == "roles":
                self._check_roles(seq, e["kind"], new)
            elif field == "status":
                if new not in STATUSES:
                    self._identity_error(seq, f"admin.user.changed: status {new!r} is not one of {sorted(STATUSES)}")
                if user.status == "deactivated" and new != "deactivated":
                    self._identity_error(seq, f"admin.user.changed: {uid} is deactivated, which is final (§1)")
            elif not _str(new):
                self._identity_error(seq, f"admin.user.changed: changes.{field}.new is not a string")
            # `old` should be the replayed value; a mismatch means the replay and
            # Trailmark disagree -- reported, not fatal (GUESS: §3 does not say).
            current = getattr(user, field)
            if jcs(ch["old"]) != jcs(current):
                self.note(seq, f"admin.user.changed: changes.{field}.old {jcs(ch['old'])} != replayed "
                               f"value {jcs(current)}")
            setattr(user, field, list(new) if field == "roles" else new)

    def _account_locked(self, seq, e, p):
        # GUESS: security.account.locked itself sets the status to `locked`
        # (§1: "locked (too many failed passwords; an administrator unlocks)");
        # §3 does not say whether an admin.user.changed also records it.
        uid = self._user_payload_id(seq, e, p)
        if self.users[uid].status != "deactivated":
            self.users[uid].status = "locked"

    def _b64(self, seq, value, what):
        """Strict base64 (FORMAT.md conventions) of an identity payload value."""
        try:
            return b64decode_strict(value, what)
        except VerifyError as ex:
            self._identity_error(seq, ex.msg)

    def _der_with_hash(self, seq, kind, p):
        der = self._b64(seq, p.get("certificate"), f"{kind}: certificate")
        want = p.get("certificate_sha256")
        got = hashlib.sha256(der).hexdigest()
        if want != got:
            self._identity_error(seq, f"{kind}: certificate_sha256 {want!r} != SHA-256 of the certificate {got}")
        return der, got

    def _ca_trusted(self, seq, e, p):
        der, h = self._der_with_hash(seq, e["kind"], p)
        if e["subject"] != "ca:" + h:
            self._identity_error(seq, f"admin.ca.trusted: subject {e['subject']!r} != 'ca:{h}'")
        self.cas.setdefault(h, TrustedCA(der, seq))

    def _certificate_issued(self, seq, e, p):
        uid = self._user_payload_id(seq, e, p)
        der, h = self._der_with_hash(seq, e["kind"], p)
        pk = self._b64(seq, p.get("public_key"), "admin.certificate.issued: public_key")
        if len(pk) != 32:
            self._identity_error(seq, "admin.certificate.issued: public_key is not base64 of 32 bytes")
        # GUESS: not_before/not_after are in the form of recorded_at and repeat
        # the certificate's validity; §3 gives neither. A mismatch is a note.
        try:
            c = x509.load_der_x509_certificate(der)
            for member, actual in (("not_before", c.not_valid_before_utc), ("not_after", c.not_valid_after_utc)):
                if parse_utc(p.get(member)) != actual:
                    self.note(seq, f"admin.certificate.issued: {member} {p.get(member)!r} is not the "
                                   f"certificate's {actual.isoformat()}")
        except ValueError:
            pass  # an unparsable certificate fails rule 4 when it is used
        if h in self.certs:
            # GUESS: the same certificate is not issued twice; if it is, the
            # first issuance (and any revocation of it) stays in force.
            self.note(seq, f"certificate {h} issued again (first at seq {self.certs[h].issued_seq})")
            return
        self.certs[h] = IssuedCertificate(uid, der, pk, seq)

    def _certificate_revoked(self, seq, e, p):
        uid = self._user_payload_id(seq, e, p)
        h = p.get("certificate_sha256")
        cert = self.certs.get(h)
        if cert is None or cert.user_id != uid:
            self._identity_error(seq, f"admin.certificate.revoked: no earlier certificate {h!r} issued to {uid}")
        if p.get("cause") not in REVOCATION_CAUSES:
            self._identity_error(seq, f"admin.certificate.revoked: cause {p.get('cause')!r} is not one of "
                                      f"{sorted(REVOCATION_CAUSES)}")
        # GUESS: revocation is final; a certificate revoked once stays revoked.
        if cert.revoked_seq is None:
            cert.revoked_seq = seq

    def _policy_changed(self, seq, e, p):
        if e["subject"] != "config:signing-policy":
            self._identity_error(seq, f"admin.signing_policy.changed: subject {e['subject']!r} "
                                      "!= 'config:signing-policy'")
        new = p.get("new")
        self._check_policy(seq, new)
        if jcs(p.get("old")) != jcs(self.policy):
            self.note(seq, "admin.signing_policy.changed: `old` is not the policy in force before it")
        self.policy = new

    def _check_policy(self, seq, pol):
        """§3: {"meanings": {m: {"text", "roles"}}, "rules": {three booleans}}."""
        def bad(msg):
            self._identity_error(seq, f"admin.signing_policy.changed: new policy: {msg}")
        if not isinstance(pol, dict) or set(pol) != {"meanings", "rules"}:
            bad("is not an object with exactly `meanings` and `rules`")
        if not isinstance(pol["meanings"], dict):
            bad("`meanings` is not an object")
        for m, d in pol["meanings"].items():
            # GUESS: a policy may only name meanings of the controlled
            # vocabulary, and need not name all of them (one it omits cannot be signed).
            if m not in MEANINGS:
                bad(f"meaning {m!r} is not in the controlled vocabulary (§2)")
            if not isinstance(d, dict) or set(d) != {"text", "roles"} or not _str(d["text"]):
                bad(f"meanings.{m} is not {{\"text\": string, \"roles\": [...]}}")
            self._check_roles(seq, "admin.signing_policy.changed", d["roles"])
        rules = pol["rules"]
        if not isinstance(rules, dict) or set(rules) != POLICY_RULES \
                or not all(isinstance(v, bool) for v in rules.values()):
            bad(f"`rules` is not an object of exactly the booleans {sorted(POLICY_RULES)}")

    _REPLAY = {
        "admin.user.created": _user_created,
        "admin.user.changed": _user_changed,
        "security.account.locked": _account_locked,
        "admin.ca.trusted": _ca_trusted,
        "admin.certificate.issued": _certificate_issued,
        "admin.certificate.revoked": _certificate_revoked,
        "admin.signing_policy.changed": _policy_changed,
    }

    # -------------------------------------------------------------- §7: one signature.applied at seq s

    def _check_signature(self, s, e):
        def fail(rule, msg):
            raise VerifyError(f"signature rule {rule}: {msg}", s)

        p = e["payload"]

        # Rule 1: parents is [target], algorithm is ed25519, the manifestation
        # has exactly the members of §6.
        # GUESS: rule 1 also covers the payload's own members (§6 lists them)
        # and the form of each manifestation value as §6's table gives it, so
        # that rules 2-7 can rely on well-formed values.
        if set(p) != PAYLOAD_MEMBERS:
            fail(1, f"payload members {sorted(p)} != {sorted(PAYLOAD_MEMBERS)} (§6)")
        target = p["target"]
        if not _str(target) or not HEX64.match(target):
            fail(1, f"target {target!r} is not a lowercase hex entry hash")
        if e["parents"] != [target]:
            fail(1, f"parents {e['parents']} is not [target] = [{target}]")
        if p["algorithm"] != "ed25519":
            fail(1, f"algorithm {p['algorithm']!r} is not 'ed25519'")
        m = p["manifestation"]
        if not isinstance(m, dict):
            fail(1, "manifestation is not an object")
        if set(m) != MANIFESTATION_MEMBERS:
            missing, extra = MANIFESTATION_MEMBERS - set(m), set(m) - MANIFESTATION_MEMBERS
            fail(1, "manifestation does not have exactly the members of §6"
                    + (f"; missing {sorted(missing)}" if missing else "")
                    + (f"; extra {sorted(extra)}" if extra else ""))
        for k in MANIFESTATION_MEMBERS:
            if not _str(m[k]):
                fail(1, f"manifestation.{k} is not a string")
        if not USER_ID_RE.match(m["user_id"]):
            fail(1, f"manifestation.user_id {m['user_id']!r} is not a user ID (§1)")
        if not m["printed_name"] or not m["meaning_text"]:
            fail(1, "manifestation.printed_name and meaning_text must not be empty")
        if m["meaning"] not in MEANINGS:
            fail(1, f"manifestation.meaning {m['meaning']!r} is not a meaning of §2")
        signed_at = parse_utc(m["signed_at"])
        if signed_at is None:
            fail(1, f"manifestation.signed_at {m['signed_at']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        if not SIGNED_AT_LOCAL_RE.match(m["signed_at_local"]):
            fail(1, f"manifestation.signed_at_local {m['signed_at_local']!r} is not "
                    "'YYYY-MM-DD HH:MM:SS ±HH:MM'")
        if not HEX64.match(m["certificate_sha256"]):
            fail(1, f"manifestation.certificate_sha256 {m['certificate_sha256']!r} is not lowercase hex SHA-256")
        if m["authentication"] not in AUTHENTICATIONS:
            fail(1, f"manifestation.authentication {m['authentication']!r} is not one of {sorted(AUTHENTICATIONS)}")
        if not _str(p["signature"]):
            fail(1, "signature is not a string")

        # Rule 2: actor is user:<manifestation.user_id>.
        uid = m["user_id"]
        if e["actor"] != "user:" + uid:
            fail(2, f"actor {e['actor']!r} is not 'user:{uid}'")

        # Rule 3: a certificate with that SHA-256 was issued to that user and
        # not revoked before s. (Replay only holds entries before s.)
        ch = m["certificate_sha256"]
        issued = self.certs.get(ch)
        if issued is None:
            fail(3, f"no admin.certificate.issued before seq {s} records a certificate with SHA-256 {ch}")
        if issued.user_id != uid:
            fail(3, f"certificate {ch} was issued (seq {issued.issued_seq}) to {issued.user_id!r}, not {uid!r}")
        if issued.revoked_seq is not None:
            fail(3, f"certificate {ch} was revoked at seq {issued.revoked_seq}, before seq {s}")

        # Rule 4: the certificate chains to a trusted CA, passes §5 at
        # signed_at, and its UID is the user ID.
        cert = self._check_certificate(s, issued, uid, signed_at, fail)

        # Rule 5: the signature verifies over the signed message (§6) with the
        # certificate's key.
        try:
            sig = b64decode_strict(p["signature"], "signature")
        except VerifyError as ex:
            fail(5, ex.msg)
        if len(sig) != 64:
            fail(5, f"signature is {len(sig)} bytes, an Ed25519 signature is 64")
        try:
            cert.public_key().verify(sig, signed_message(m, target))
        except InvalidSignature:
            fail(5, "the Ed25519 signature does not verify over the signed message with the "
                    f"key of certificate {ch}")

        # Rule 6: signed_at is not after recorded_at and not more than 300 s before it.
        recorded_at = parse_utc(e["recorded_at"])
        if signed_at > recorded_at:
            fail(6, f"signed_at {m['signed_at']} is after recorded_at {e['recorded_at']}")
        if recorded_at - signed_at > MAX_CLOCK_SKEW:
            fail(6, f"signed_at {m['signed_at']} is more than 300 seconds before recorded_at {e['recorded_at']}")

        # Rule 7: the user was active at s and held a role that the policy in
        # force at s allows for the meaning.
        user = self.users.get(uid)
        if user is None:
            fail(7, f"user {uid!r} has no admin.user.created before seq {s}")
        if user.status != "active":
            fail(7, f"user {uid!r} is {user.status!r}, not 'active', at seq {s}")
        if self.policy is None:
            # GUESS: no admin.signing_policy.changed before s means no policy is
            # in force (§2: `trailmark init` always records one), not the default table.
            fail(7, f"no admin.signing_policy.changed before seq {s}: no signing policy in force")
        allowed = self.policy["meanings"].get(m["meaning"])
        if allowed is None:
            fail(7, f"the signing policy in force does not allow meaning {m['meaning']!r} at all")
        if not set(user.roles) & set(allowed["roles"]):
            fail(7, f"user {uid!r} holds roles {sorted(user.roles)}; meaning {m['meaning']!r} "
                    f"needs one of {sorted(allowed['roles'])}")

        self._check_outside_section_7(s, e, m, target, user, allowed)
        self.signatures.append((s, target, uid, m["meaning"]))
        self.checked += 1

    def _check_certificate(self, s, issued, uid, signed_at, fail):
        """Rule 4 (§5 at signed_at). Returns the parsed certificate."""
        try:
            cert = x509.load_der_x509_certificate(issued.der)
        except ValueError as ex:
            fail(4, f"the certificate (issued at seq {issued.issued_seq}) is not DER X.509: {ex}")

        # Chains to a CA of an admin.ca.trusted entry before s.
        # GUESS: "chains to" means issued directly by a trusted CA; the ledger
        # has no way to record intermediate certificates. The CA must itself be
        # a CA (basicConstraints cA=TRUE) and within its validity at signed_at.
        issuer_ca, why_not = None, []
        for h, ca in self.cas.items():
            if ca.cert is None:
                continue
            try:
                cert.verify_directly_issued_by(ca.cert)
            except (ValueError, TypeError, InvalidSignature) as ex:
                why_not.append(f"ca:{h[:12]}…: {type(ex).__name__} {ex}".strip())
                continue
            issuer_ca = ca
            break
        if issuer_ca is None:
            fail(4, f"certificate {hashlib.sha256(issued.der).hexdigest()} does not chain to "
                    f"a CA of an admin.ca.trusted entry before seq {s}"
                    + (f" ({'; '.join(why_not)})" if why_not else " (no trusted CA recorded)"))
        try:
            ca_bc = issuer_ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            ca_bc = None
        if ca_bc is None or not ca_bc.ca:
            fail(4, f"the issuing trusted CA (seq {issuer_ca.seq}) is not a CA certificate (cA=TRUE)")
        if not (issuer_ca.cert.not_valid_before_utc <= signed_at <= issuer_ca.cert.not_valid_after_utc):
            fail(4, f"the issuing CA (seq {issuer_ca.seq}) is not within its validity at signed_at")

        # §5: an Ed25519 key equal to the user's public key.
        # GUESS: "the user's public key" is the `public_key` recorded in the
        # admin.certificate.issued entry (the ledger has no other record of it).
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            fail(4, f"the certificate's key is {type(key).__name__}, not Ed25519")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if raw != issued.public_key:
            fail(4, "the certificate's key is not the public_key of its admin.certificate.issued entry")

        # §5: UID (0.9.2342.19200300.100.1.1) is the user ID, CN the printed name.
        # GUESS: exactly one UID and one CN attribute; the printed name is the
        # user's printed name in the ledger at s (admin.user.created/changed).
        uids = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.USER_ID)]
        if uids != [uid]:
            fail(4, f"certificate subject UID {uids} is not [{uid!r}]")
        # SIGNATURES.md §7: the CN is checked against the printed name when the
        # certificate is recorded, not at each signature, so a difference here
        # (e.g. a rename after issuance) is a note, not a failure.
        cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        user = self.users.get(uid)
        if user is not None and cns != [user.printed_name]:
            self.note(s, f"§5: certificate subject CN {cns} is not the printed name [{user.printed_name!r}] at this seq")

        # §5: keyUsage digitalSignature or nonRepudiation.
        # GUESS: a certificate without a keyUsage extension fails ("have keyUsage").
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            fail(4, "certificate has no keyUsage extension")
        if not (ku.digital_signature or ku.content_commitment):
            fail(4, "certificate keyUsage has neither digitalSignature nor nonRepudiation")

        # §5: not a CA (no basicConstraints, or cA=FALSE).
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                fail(4, "certificate is a CA certificate (basicConstraints cA=TRUE)")
        except x509.ExtensionNotFound:
            pass

        # §5: within its validity when used, i.e. at signed_at (bounds inclusive, as in RFC 5280).
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not nb <= signed_at <= na:
            fail(4, f"signed_at {signed_at.isoformat()} is outside the certificate's validity "
                    f"{nb.isoformat()} .. {na.isoformat()}")
        return cert

    # -------------------------------------------------------------- §2/§6 requirements that §7 does not list

    def _check_outside_section_7(self, s, e, m, target, user, allowed):
        """Reported as notes only (see the module docstring)."""
        tgt = self.entries.get(target)
        if tgt is None:
            self.note(s, f"target {target} is not an earlier entry")  # cannot happen: FORMAT §5 checks parents
            return
        t_seq, t_actor, t_subject = tgt
        if e["subject"] != t_subject:
            self.note(s, f"§6: subject {e['subject']!r} != the target's subject {t_subject!r}")
        if m["meaning_text"] != allowed["text"]:
            self.note(s, f"§6: meaning_text {m['meaning_text']!r} != the policy's display text {allowed['text']!r}")
        if m["printed_name"] != user.printed_name:
            self.note(s, f"§6: printed_name {m['printed_name']!r} != the user's printed name {user.printed_name!r}")
        local = datetime.datetime.strptime(m["signed_at_local"], "%Y-%m-%d %H:%M:%S %z")
        utc = parse_utc(m["signed_at"]).replace(microsecond=0)  # GUESS: the local form truncates
        if local != utc:
            self.note(s, f"§6: signed_at_local {m['signed_at_local']!r} is not the instant {m['signed_at']}")
        uid, meaning, rules = m["user_id"], m["meaning"], self.policy["rules"]
        earlier = [(u, mn) for (_, t, u, mn) in self.signatures if t == target]
        if (uid, meaning) in earlier:
            self.note(s, f"§2: {uid} already signed {target[:12]}… with meaning {meaning!r}")
        if rules.get("approval_requires_review") and meaning == "approved" \
                and not any(mn == "reviewed" and u != uid for u, mn in earlier):
            self.note(s, "§2 approval_requires_review: no earlier 'reviewed' by another user on the target")
        if rules.get("no_self_approval") and meaning in ("reviewed", "approved") \
                and (t_actor == "user:" + uid or (uid, "authored") in earlier):
            self.note(s, f"§2 no_self_approval: {uid} signs {meaning!r} on an entry they made or authored")
