//! Classification labels: `PARTY:LEVEL` in a party's own scale, or `COMMON:LEVEL`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::agreement::Agreement;
use crate::ids::PartyId;

/// Longest label accepted, in bytes.
pub const LABEL_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// The agreement's common scale.
    Common,
    /// One party's own markings.
    Party(PartyId),
}

/// A classification marking. The level is a name in the scheme's scale; whether it
/// exists is known only against an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label {
    pub scheme: Scheme,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("`{0}` is not a label, expected `PARTY:LEVEL` such as `USA:SECRET` or `COMMON:SECRET`")]
    Syntax(String),
    #[error("label is {0} bytes, expected at most 256")]
    TooLong(usize),
}

impl Label {
    pub fn party(party: &PartyId, level: &str) -> Self {
        Self {
            scheme: Scheme::Party(party.clone()),
            level: level.to_owned(),
        }
    }

    /// The label's place on an agreement's common scale, if the agreement maps it.
    pub fn to_common(&self, a: &Agreement) -> Option<usize> {
        match &self.scheme {
            Scheme::Common => a
                .classification
                .common
                .iter()
                .position(|c| *c == self.level),
            Scheme::Party(p) => a.scale(p.as_str())?.to_common(&self.level),
        }
    }
}

impl FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        if s.len() > LABEL_BYTES_MAX {
            return Err(LabelError::TooLong(s.len()));
        }
        let bad = || LabelError::Syntax(s.to_owned());
        let (scheme, level) = s.split_once(':').ok_or_else(bad)?;
        let level = level.trim();
        if level.is_empty() || level.chars().any(char::is_control) {
            return Err(bad());
        }
        let scheme = match scheme.trim() {
            "COMMON" => Scheme::Common,
            p => Scheme::Party(PartyId::new(p).map_err(|_| bad())?),
        };
        Ok(Self {
            scheme,
            level: level.to_owned(),
        })
    }
}

impl TryFrom<String> for Label {
    type Error = LabelError;
    fn try_from(s: String) -> Result<Self, LabelError> {
        s.parse()
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.to_string()
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::Common => write!(f, "COMMON:{}", self.level),
            Scheme::Party(p) => write!(f, "{p}:{}", self.level),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_party_and_common_labels() {
        let l: Label = "ROK:II급 비밀".parse().unwrap();
        assert_eq!(l.scheme, Scheme::Party(PartyId::new("ROK").unwrap()));
        assert_eq!(l.level, "II급 비밀");
        assert_eq!(l.to_string(), "ROK:II급 비밀");
        let c: Label = "COMMON:TOP SECRET".parse().unwrap();
        assert_eq!(c.scheme, Scheme::Common);
        for bad in ["", "SECRET", ":SECRET", "USA:", "U SA:SECRET", "USA:\u{7}"] {
            assert!(bad.parse::<Label>().is_err(), "{bad}");
        }
        assert!("USA:".repeat(100).parse::<Label>().is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in ".{0,80}") {
            if let Ok(l) = s.parse::<Label>() {
                let again: Label = l.to_string().parse().unwrap();
                prop_assert_eq!(again, l);
            }
        }
    }
}
