//! An entry's position in the ledger.
//!
//! Seqs are 0-based and contiguous; entry `n` is leaf `n` of the Merkle tree.
//! They are kept below 2^63 so that every seq fits the databases' signed
//! 64-bit integers: the only way to make a [`Seq`] is from a `u64` or `i64`
//! that is checked, so the store's conversions cannot wrap.
//!
//! ```
//! use trailmark::ledger::Seq;
//! let seq = Seq::new(41).unwrap();
//! assert_eq!(seq.next().unwrap().get(), 42);
//! assert!(Seq::new(u64::MAX).is_none());
//! assert!(Seq::try_from(-1_i64).is_err());
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sqlx::Database;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

/// A position in the ledger (0-based), below 2^63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Seq(u64);

/// A number that is not a seq (negative, or 2^63 and above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a ledger seq (seqs are 0 to 2^63-1)")]
pub struct SeqOutOfRange(pub i128);

impl Seq {
    /// The first entry (the genesis entry).
    pub const GENESIS: Seq = Seq(0);

    /// The last possible seq (2^63-1): past every stored one, the bound of
    /// an open-ended range.
    pub const MAX: Seq = Seq(i64::MAX as u64);

    /// The seq `n`, or `None` above 2^63-1.
    #[must_use]
    pub const fn new(n: u64) -> Option<Seq> {
        if n > i64::MAX as u64 {
            None
        } else {
            Some(Seq(n))
        }
    }

    /// `n`, or [`Seq::MAX`] above it: for a bound that came from a caller
    /// (a cursor, a range end), where past the end simply finds nothing.
    #[must_use]
    pub const fn clamped(n: u64) -> Seq {
        match Seq::new(n) {
            Some(seq) => seq,
            None => Seq::MAX,
        }
    }

    /// The seq of the entry a tree of `size` leaves appends next (that is,
    /// the tree's size as a position).
    ///
    /// # Errors
    /// [`SeqOutOfRange`] for a size of 2^63 or more.
    pub fn at_size(size: u64) -> Result<Seq, SeqOutOfRange> {
        Seq::new(size).ok_or(SeqOutOfRange(i128::from(size)))
    }

    /// The position as a number (the Merkle leaf index).
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position as the databases store it. Lossless: a seq is below 2^63.
    #[must_use]
    #[allow(clippy::cast_possible_wrap)] // checked at construction: below 2^63
    pub const fn to_db(self) -> i64 {
        self.0 as i64
    }

    /// The size of the ledger whose last entry this is.
    #[must_use]
    pub const fn size(self) -> u64 {
        self.0 + 1
    }

    /// The entry after this one, or `None` past 2^63-1.
    #[must_use]
    pub const fn next(self) -> Option<Seq> {
        Seq::new(self.0 + 1)
    }

    /// The entry before this one, or `None` for the genesis entry.
    #[must_use]
    pub const fn prev(self) -> Option<Seq> {
        match self.0.checked_sub(1) {
            Some(n) => Some(Seq(n)),
            None => None,
        }
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TryFrom<u64> for Seq {
    type Error = SeqOutOfRange;
    fn try_from(n: u64) -> Result<Seq, SeqOutOfRange> {
        Seq::at_size(n)
    }
}

impl TryFrom<i64> for Seq {
    type Error = SeqOutOfRange;
    fn try_from(n: i64) -> Result<Seq, SeqOutOfRange> {
        u64::try_from(n)
            .map(Seq)
            .map_err(|_| SeqOutOfRange(i128::from(n)))
    }
}

impl From<Seq> for u64 {
    fn from(seq: Seq) -> u64 {
        seq.0
    }
}

impl<'de> Deserialize<'de> for Seq {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seq, D::Error> {
        let n = u64::deserialize(deserializer)?;
        Seq::try_from(n).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Seq {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .description(Some("An entry's position in the ledger, 0-based"))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(0))
            .into()
    }
}

impl utoipa::ToSchema for Seq {}

// The databases hold seqs as signed 64-bit integers (`BIGINT`, SQLite's
// `INTEGER`): a `Seq` binds and reads as one, and a stored value outside the
// range fails the read instead of wrapping.
impl<DB: Database> sqlx::Type<DB> for Seq
where
    i64: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> sqlx::Encode<'q, DB> for Seq
where
    i64: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i64 as sqlx::Encode<'q, DB>>::encode_by_ref(&self.to_db(), buf)
    }
}

impl<'r, DB: Database> sqlx::Decode<'r, DB> for Seq
where
    i64: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Seq, BoxDynError> {
        let n = <i64 as sqlx::Decode<'r, DB>>::decode(value)?;
        Ok(Seq::try_from(n)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seq_fits_a_signed_64_bit_integer_both_ways() {
        let top = Seq::new(i64::MAX as u64).expect("2^63-1 is a seq");
        assert_eq!(top.to_db(), i64::MAX);
        assert_eq!(Seq::try_from(i64::MAX), Ok(top));
        assert!(top.next().is_none());
        assert!(Seq::new(1 << 63).is_none());
        assert_eq!(Seq::try_from(-1_i64), Err(SeqOutOfRange(-1)));
        assert_eq!(Seq::GENESIS.prev(), None);
        assert_eq!(Seq::GENESIS.size(), 1);
    }

    #[test]
    fn json_carries_a_seq_as_a_plain_number_and_refuses_one_out_of_range() {
        let seq: Seq = serde_json::from_str("12").expect("a number");
        assert_eq!(serde_json::to_string(&seq).expect("serialises"), "12");
        assert!(serde_json::from_str::<Seq>("9223372036854775808").is_err());
        assert!(serde_json::from_str::<Seq>("-3").is_err());
    }
}
