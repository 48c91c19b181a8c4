//! Checkpoints (C2SP tlog-checkpoint v1.0.0) signed as C2SP signed notes with
//! the ledger's Ed25519 key, and the verifier key string
//! (`name+keyid+base64(0x01||pubkey)`). `docs/FORMAT.md` §3.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use super::hash::Hash;

/// The signed-note signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;
/// Longest origin, in bytes.
pub const ORIGIN_MAX_BYTES: usize = 128;

/// Why a key, checkpoint or note is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The verifier key string is malformed or inconsistent.
    #[error("verifier key: {0}")]
    VerifierKey(String),
    /// The origin is not a valid ledger origin.
    #[error("origin: {0}")]
    Origin(String),
    /// The note is not a well-formed signed note.
    #[error("signed note is malformed: {0}")]
    Malformed(String),
    /// No signature from the expected key was found.
    #[error("the note carries no signature from key {0}")]
    NoSignature(String),
    /// A signature from the expected key is present but does not verify.
    #[error(
        "the signature of key {0} does not verify: the note was changed or signed by another key"
    )]
    BadSignature(String),
    /// The body is not a valid checkpoint.
    #[error("checkpoint body: {0}")]
    Checkpoint(String),
}

/// Checks an origin: 1 to 128 of `[A-Za-z0-9._/-]`, starting alphanumeric.
///
/// # Errors
/// Says which rule is broken.
pub fn check_origin(origin: &str) -> Result<(), NoteError> {
    let ok = (1..=ORIGIN_MAX_BYTES).contains(&origin.len())
        && origin.as_bytes()[0].is_ascii_alphanumeric()
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NoteError::Origin(format!(
            "`{origin}` must be 1 to {ORIGIN_MAX_BYTES} characters of letters, digits, `.`, `_`, `/`, `-`, starting with a letter or digit (e.g. `qa.example.com/trailmark`)"
        )))
    }
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let hash = Hash::sha256(&[name.as_bytes(), b"\n", &[ED25519_TYPE], public]);
    [
        hash.as_bytes()[0],
        hash.as_bytes()[1],
        hash.as_bytes()[2],
        hash.as_bytes()[3],
    ]
}

/// A public key that verifies notes of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses `name+hex8(keyid)+base64(0x01||pubkey)` and checks the key ID.
    ///
    /// # Errors
    /// If any part is malformed or the key ID does not match the key.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let text = text.trim_end_matches('\n');
        let err =
            |m: &str| NoteError::VerifierKey(format!("{m} (expected `name+keyid+base64key`)"));
        // Names never contain `+`, but base64 may: split from the left.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err("needs three parts separated by `+`"));
        };
        if name.is_empty() || name.chars().any(char::is_whitespace) || name.contains('+') {
            return Err(err("the name must be non-empty without spaces or `+`"));
        }
        if id_hex.len() != 8
            || id_hex
                .bytes()
                .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(err("the key ID must be 8 lowercase hex digits"));
        }
        let raw = BASE64
            .decode(key_b64)
            .map_err(|_| err("the key is not valid base64"))?;
        if raw.len() != 33 || raw[0] != ED25519_TYPE {
            return Err(err(
                "the key must be 0x01 followed by a 32-byte Ed25519 public key",
            ));
        }
        let public: [u8; 32] = raw[1..].try_into().expect("length checked");
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| err("not a valid Ed25519 public key"))?;
        let id = key_id(name, &public);
        if hex::encode(id) != id_hex {
            return Err(err("the key ID does not match the name and key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key's name (for a ledger, its origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519_TYPE];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(raw)
        )
    }

    /// Whether `signature` is this key's Ed25519 signature over `body`.
    pub fn verify_raw(&self, body: &str, signature: &[u8]) -> bool {
        Signature::from_slice(signature)
            .is_ok_and(|sig| self.key.verify(body.as_bytes(), &sig).is_ok())
    }

    /// Opens a signed note: checks its shape and that exactly this key signed
    /// it, returning the body (the signed text).
    ///
    /// # Errors
    /// If the note is malformed, unsigned by this key, or the signature fails.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let malformed = |m: &str| NoteError::Malformed(m.to_owned());
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(malformed(
                "control characters other than newline are not allowed",
            ));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no empty line before the signatures"))?;
        let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
        if !signatures.ends_with('\n') || signatures.len() < 2 {
            return Err(malformed("signature lines must end with a newline"));
        }
        let lines: Vec<&str> = signatures[..signatures.len() - 1].split('\n').collect();
        if lines.len() > 100 {
            return Err(malformed("more than 100 signature lines"));
        }
        let mut verified = false;
        for line in lines {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| malformed("a signature line must start with `— `"))?;
            let (name, sig_b64) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line is `— name base64`"))?;
            if name.is_empty() || sig_b64.contains(' ') {
                return Err(malformed("a signature line is `— name base64`"));
            }
            let raw = BASE64
                .decode(sig_b64)
                .map_err(|_| malformed("signature is not valid base64"))?;
            if raw.len() < 5 {
                return Err(malformed("signature is too short"));
            }
            if name != self.name || raw[..4] != self.id {
                continue; // someone else's key: ignored, as signed-note requires
            }
            let sig = Signature::from_slice(&raw[4..])
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            self.key
                .verify(body.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            verified = true;
        }
        if verified {
            Ok(body)
        } else {
            Err(NoteError::NoSignature(self.to_text()))
        }
    }
}

/// The ledger's signing key, named by the ledger's origin.
#[derive(Clone)]
pub struct LedgerKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey")
            .field("name", &self.name)
            .field("key", &"<secret>")
            .finish()
    }
}

impl LedgerKey {
    /// A key from a 32-byte Ed25519 seed.
    ///
    /// # Errors
    /// If `name` is not a valid origin.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<LedgerKey, NoteError> {
        check_origin(name)?;
        Ok(LedgerKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-byte seed (secret; stored in the data directory only).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        let public = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: key_id(&self.name, public.as_bytes()),
            key: public,
        }
    }

    /// The bare Ed25519 signature over `body` (a batch seal, FORMAT §3.5).
    pub fn sign_raw(&self, body: &str) -> [u8; 64] {
        self.key.sign(body.as_bytes()).to_bytes()
    }

    /// Signs `body` (which must end in a newline) as a signed note.
    pub fn sign_note(&self, body: &str) -> String {
        assert!(body.ends_with('\n'), "a note body ends with a newline");
        let verifier = self.verifier();
        let mut raw = verifier.id.to_vec();
        raw.extend_from_slice(&self.key.sign(body.as_bytes()).to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, BASE64.encode(raw))
    }
}

/// A checkpoint body: "the ledger `origin` has `size` entries with this root".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The ledger's origin.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// `MTH` of the first `size` entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The three-line body.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.as_bytes())
        )
    }

    /// Parses a three-line body (no extension lines).
    ///
    /// # Errors
    /// If a line is malformed or there are extension lines.
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        let err = |m: &str| NoteError::Checkpoint(m.to_owned());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| err("must end with a newline"))?
            .split('\n')
            .collect();
        if lines.len() != 3 {
            return Err(err(
                "must be exactly three lines: origin, size, root (no extension lines)",
            ));
        }
        check_origin(lines[0])?;
        let size_text = lines[1];
        if size_text.is_empty()
            || size_text.bytes().any(|b| !b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(err(
                "the size must be a decimal number without leading zeros",
            ));
        }
        let size = size_text
            .parse()
            .map_err(|_| err("the size is too large"))?;
        let root = BASE64
            .decode(lines[2])
            .map_err(|_| err("the root must be base64"))?;
        let root = Hash::from_slice(&root).map_err(|m| err(&m.to_string()))?;
        Ok(Checkpoint {
            origin: lines[0].to_owned(),
            size,
            root,
        })
    }

    /// Opens a signed checkpoint note with `key` and parses its body; the
    /// origin must be the key's name.
    ///
    /// # Errors
    /// If the signature or the body is not valid.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint::parse_body(key.open(note)?)?;
        if checkpoint.origin != key.name() {
            return Err(NoteError::Checkpoint(format!(
                "origin `{}` is not the key's name `{}`",
                checkpoint.origin,
                key.name()
            )));
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open_round_trip() {
        let key = LedgerKey::from_seed("trailmark.test/unit", &[7; 32]).unwrap();
        let cp = Checkpoint {
            origin: "trailmark.test/unit".into(),
            size: 3,
            root: Hash::sha256(&[b"r"]),
        };
        let note = key.sign_note(&cp.body());
        let vkey = VerifierKey::parse(&key.verifier().to_text()).unwrap();
        assert_eq!(Checkpoint::open(&note, &vkey).unwrap(), cp);
        let tampered = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            Checkpoint::open(&tampered, &vkey),
            Err(NoteError::BadSignature(_))
        ));
        let other = LedgerKey::from_seed("trailmark.test/unit", &[8; 32])
            .unwrap()
            .verifier();
        assert!(matches!(
            Checkpoint::open(&note, &other),
            Err(NoteError::NoSignature(_))
        ));
    }

    #[test]
    fn verifier_keys_whose_base64_holds_a_plus_parse() {
        let with_plus = (0u8..=255)
            .map(|i| {
                LedgerKey::from_seed("trailmark.test/plus", &[i; 32])
                    .unwrap()
                    .verifier()
                    .to_text()
            })
            .find(|t| t.splitn(3, '+').nth(2).is_some_and(|b| b.contains('+')))
            .expect("some seed gives a key with `+` in its base64");
        assert_eq!(VerifierKey::parse(&with_plus).unwrap().to_text(), with_plus);
        assert!(VerifierKey::parse("a+b+c").is_err());
        let mut wrong_id = with_plus.clone();
        wrong_id.replace_range(20..21, if &with_plus[20..21] == "0" { "1" } else { "0" });
        assert!(
            VerifierKey::parse(&wrong_id).is_err(),
            "a key ID that does not match must be refused"
        );
    }

    #[test]
    fn checkpoint_body_rules() {
        assert!(Checkpoint::parse_body("o\n01\nAAAA\n").is_err());
        assert!(
            Checkpoint::parse_body("o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n")
                .is_err()
        );
        assert!(
            Checkpoint::parse_body("o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").is_ok()
        );
        assert!(check_origin("has space").is_err());
        assert!(check_origin("a+b").is_err());
    }
}
