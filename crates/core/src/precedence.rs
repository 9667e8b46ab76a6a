//! Precedence: FLASH > IMMEDIATE > PRIORITY > ROUTINE; higher is always delivered first.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Ordered so that `Flash > Immediate > Priority > Routine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precedence {
    Routine,
    Priority,
    Immediate,
    Flash,
}

impl Precedence {
    pub const ALL: [Precedence; 4] = [Self::Flash, Self::Immediate, Self::Priority, Self::Routine];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routine => "ROUTINE",
            Self::Priority => "PRIORITY",
            Self::Immediate => "IMMEDIATE",
            Self::Flash => "FLASH",
        }
    }

    /// 3 for FLASH down to 0 for ROUTINE; what a store sorts by.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        match rank {
            0 => Some(Self::Routine),
            1 => Some(Self::Priority),
            2 => Some(Self::Immediate),
            3 => Some(Self::Flash),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a precedence, expected `FLASH`, `IMMEDIATE`, `PRIORITY` or `ROUTINE`")]
pub struct PrecedenceError(pub String);

impl FromStr for Precedence {
    type Err = PrecedenceError;
    fn from_str(s: &str) -> Result<Self, PrecedenceError> {
        // The single letters are the prosigns used on military circuits.
        match s.trim().to_ascii_uppercase().as_str() {
            "FLASH" | "Z" => Ok(Self::Flash),
            "IMMEDIATE" | "O" => Ok(Self::Immediate),
            "PRIORITY" | "P" => Ok(Self::Priority),
            "ROUTINE" | "R" => Ok(Self::Routine),
            _ => Err(PrecedenceError(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Precedence {
    type Error = PrecedenceError;
    fn try_from(s: String) -> Result<Self, PrecedenceError> {
        s.parse()
    }
}
impl From<Precedence> for String {
    fn from(p: Precedence) -> String {
        p.as_str().to_owned()
    }
}
impl fmt::Display for Precedence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_outranks_everything() {
        assert!(Precedence::Flash > Precedence::Immediate);
        assert!(Precedence::Immediate > Precedence::Priority);
        assert!(Precedence::Priority > Precedence::Routine);
        for p in Precedence::ALL {
            assert_eq!(p.as_str().parse::<Precedence>().unwrap(), p);
            assert_eq!(Precedence::from_rank(p.rank()), Some(p));
        }
        assert!("urgent".parse::<Precedence>().is_err());
    }
}
