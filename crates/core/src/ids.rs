//! Names of parties and desks, checked once so the rest of the core can trust them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest party id or desk name accepted.
pub const NAME_CHARS_MAX: usize = 64;

/// A party's short id, e.g. `ROK`: ASCII letters, digits, `_` or `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartyId(String);

/// A desk: `PARTY.name`, e.g. `ROK.navy`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeskId {
    full: String,
    dot: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "`{0}` is not a party id, expected letters, digits, `_` or `-` starting with a letter (at most 64)"
    )]
    Party(String),
    #[error("`{0}` is not a desk, expected `PARTY.name` such as `ROK.navy`")]
    Desk(String),
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= NAME_CHARS_MAX
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl PartyId {
    pub fn new(s: &str) -> Result<Self, IdError> {
        if valid_name(s) && s != "COMMON" {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Party(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl DeskId {
    pub fn new(s: &str) -> Result<Self, IdError> {
        let Some(dot) = s.find('.') else {
            return Err(IdError::Desk(s.to_owned()));
        };
        let (party, rest) = s.split_at(dot);
        let name = rest.get(1..).unwrap_or("");
        if PartyId::new(party).is_ok() && valid_name(name) {
            Ok(Self {
                full: s.to_owned(),
                dot,
            })
        } else {
            Err(IdError::Desk(s.to_owned()))
        }
    }
    /// The party part: `ROK` of `ROK.navy`.
    pub fn party_str(&self) -> &str {
        self.full.get(..self.dot).unwrap_or("")
    }
    pub fn party(&self) -> PartyId {
        PartyId(self.party_str().to_owned())
    }
    /// The desk's own name: `navy` of `ROK.navy`.
    pub fn name(&self) -> &str {
        self.full.get(self.dot + 1..).unwrap_or("")
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl TryFrom<String> for PartyId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(&s)
    }
}
impl From<PartyId> for String {
    fn from(p: PartyId) -> String {
        p.0
    }
}
impl TryFrom<String> for DeskId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(&s)
    }
}
impl From<DeskId> for String {
    fn from(d: DeskId) -> String {
        d.full
    }
}
impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for DeskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desks_split_into_party_and_name() {
        let d = DeskId::new("ROK.navy").unwrap();
        assert_eq!(d.party_str(), "ROK");
        assert_eq!(d.name(), "navy");
        assert!(DeskId::new("ROK").is_err());
        assert!(DeskId::new(".navy").is_err());
        assert!(DeskId::new("ROK.").is_err());
        assert!(DeskId::new("ROK.na vy").is_err());
        assert!(PartyId::new("COMMON").is_err());
        assert!(PartyId::new("1ROK").is_err());
    }
}
