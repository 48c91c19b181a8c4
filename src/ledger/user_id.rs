//! A person's user ID: the name they log in with and sign under, and the
//! `<id>` of their ledger actor `user:<id>`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use sqlx::Database;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

use super::Actor;

/// A user ID: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
/// The only ways to make one check those rules, so every `UserId` also
/// forms a valid actor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

/// Text that is not a user ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user_id `{0}` must be 1 to 64 of a-z 0-9 . _ - starting with a letter or digit")]
pub struct InvalidUserId(pub String);

impl UserId {
    /// Checks `text` against the user-ID rules.
    ///
    /// # Errors
    /// [`InvalidUserId`], quoting the text (a user ID is not a secret).
    pub fn parse(text: &str) -> Result<UserId, InvalidUserId> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.as_bytes()[0].is_ascii_alphanumeric()
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(UserId(text.to_owned()))
        } else {
            Err(InvalidUserId(text.to_owned()))
        }
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The person's ledger actor, `user:<id>`.
    pub fn actor(&self) -> Actor {
        Actor::of_user_id(&self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<UserId> for &str {
    fn eq(&self, other: &UserId) -> bool {
        *self == other.0
    }
}

impl PartialEq<UserId> for String {
    fn eq(&self, other: &UserId) -> bool {
        *self == other.0
    }
}

impl PartialEq<&UserId> for String {
    fn eq(&self, other: &&UserId) -> bool {
        *self == other.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UserId, D::Error> {
        let text = String::deserialize(deserializer)?;
        UserId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for UserId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A user ID: 1 to 64 of a-z 0-9 . _ - starting with a letter or digit",
            ))
            .pattern(Some("^[a-z0-9][a-z0-9._-]{0,63}$"))
            .into()
    }
}

impl utoipa::ToSchema for UserId {}

// Stored as text; a stored ID that breaks the rules fails the read.
impl<DB: Database> sqlx::Type<DB> for UserId
where
    String: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> sqlx::Encode<'q, DB> for UserId
where
    String: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r, DB: Database> sqlx::Decode<'r, DB> for UserId
where
    String: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<UserId, BoxDynError> {
        let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
        Ok(UserId::parse(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_admit_what_an_actor_admits_and_refuse_the_rest() {
        for good in ["rev", "j.doe", "a_b-c", "0day", &"a".repeat(64)] {
            let id = UserId::parse(good).expect(good);
            assert_eq!(id.actor().as_str(), format!("user:{good}"));
            assert!(Actor::check(id.actor().as_str()).is_ok());
        }
        for bad in ["", "Rev", "-x", ".x", "a b", "a@b", "ä", &"a".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<UserId>("\"Upper\"").is_err());
    }
}
