//! `Hash`: a 32-byte SHA-256 value (an entry hash or a Merkle node), shown as
//! lowercase hex.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 output: an entry hash (which is also its Merkle leaf hash) or an
/// interior Merkle node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash([u8; 32]);

/// Why bytes or text are not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not 64 characters of hex.
    #[error("a hash is 64 hex digits, got {0} characters")]
    HexLength(usize),
    /// A character outside `[0-9a-f]`.
    #[error("a hash is lowercase hex digits [0-9a-f] only")]
    HexDigit,
    /// Not 32 bytes.
    #[error("a hash is 32 bytes, got {0}")]
    Length(usize),
}

/// The hash of an empty byte string, `MTH({})` in RFC 9162.
pub const EMPTY_TREE_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl Hash {
    /// The all-zero hash, used as `prev` of entry 0.
    pub const ZERO: Hash = Hash([0; 32]);

    /// A hash from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 32 bytes, owned (for a database column).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Parses exactly 64 lowercase hex digits.
    ///
    /// # Errors
    /// [`HashError`] naming what is wrong (length or character).
    pub fn parse_hex(text: &str) -> Result<Hash, HashError> {
        if text.len() != 64 {
            return Err(HashError::HexLength(text.len()));
        }
        if text
            .bytes()
            .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(HashError::HexDigit);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| HashError::HexDigit)?;
        Ok(Hash(out))
    }

    /// Builds a hash from a byte slice that must be exactly 32 bytes long.
    ///
    /// # Errors
    /// [`HashError::Length`] if the slice is not 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, HashError> {
        <[u8; 32]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| HashError::Length(bytes.len()))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn sha256(parts: &[&[u8]]) -> Hash {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(hasher.finalize().into())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64-byte buffer holds 32 bytes of hex");
        f.write_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(Hash::sha256(&[]), EMPTY_TREE_ROOT);
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let h = Hash::sha256(&[b"abc"]);
        assert_eq!(Hash::parse_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash::parse_hex(&h.to_hex().to_uppercase()).is_err());
        assert!(Hash::parse_hex("00").is_err());
        assert_eq!(h.to_string(), h.to_hex());
    }
}
