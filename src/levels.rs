//! The two gradings of DOMAIN.md and the other small closed sets the engine keys on.
//!
//! Each is parsed once at the edge (serde, `FromStr`) and is then impossible to get wrong.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Customer service level, one per customer. Ordered from most to least important:
/// key-assurance > diamond > gold > silver > bronze > standard (DOMAIN.md "Two gradings").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerLevel {
    Key,
    Diamond,
    Gold,
    Silver,
    Bronze,
    Standard,
}

impl CustomerLevel {
    pub const ALL: [CustomerLevel; 6] = [
        Self::Key,
        Self::Diamond,
        Self::Gold,
        Self::Silver,
        Self::Bronze,
        Self::Standard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Diamond => "diamond",
            Self::Gold => "gold",
            Self::Silver => "silver",
            Self::Bronze => "bronze",
            Self::Standard => "standard",
        }
    }
}

/// Assurance level, one per circuit. Ordered from most to least important: AAA > AA > A > ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssuranceLevel {
    #[serde(rename = "AAA")]
    Aaa,
    #[serde(rename = "AA")]
    Aa,
    #[serde(rename = "A")]
    A,
    #[serde(rename = "ordinary")]
    Ordinary,
}

impl AssuranceLevel {
    pub const ALL: [AssuranceLevel; 4] = [Self::Aaa, Self::Aa, Self::A, Self::Ordinary];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aaa => "AAA",
            Self::Aa => "AA",
            Self::A => "A",
            Self::Ordinary => "ordinary",
        }
    }
}

/// Geographic scope of a circuit, which selects the row of the restoration-limit table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Both ends in one city.
    IntraCity,
    /// Between cities of one province.
    IntraProvince,
    /// Between provinces.
    InterProvince,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Self::IntraCity, Self::IntraProvince, Self::InterProvince];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IntraCity => "intra_city",
            Self::IntraProvince => "intra_province",
            Self::InterProvince => "inter_province",
        }
    }
}

/// Alarm severity, normalised from TMF642 `perceivedSeverity` and VES `eventSeverity`.
/// Ordered from most to least severe; `Cleared` is not a severity of an active alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
    Indeterminate,
    Cleared,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Warning => "warning",
            Self::Indeterminate => "indeterminate",
            Self::Cleared => "cleared",
        }
    }
}

/// Error for a level or scope name that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! from_str_by_name {
    ($ty:ty, $what:literal, $expected:literal, [$($alias:literal => $val:expr),* $(,)?]) => {
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let lower = s.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $($alias => Ok($val),)*
                    _ => Err(UnknownName { what: $what, value: s.to_string(), expected: $expected }),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

from_str_by_name!(CustomerLevel, "customer level", "key, diamond, gold, silver, bronze, standard", [
    "key" => CustomerLevel::Key, "key_assurance" => CustomerLevel::Key,
    "diamond" => CustomerLevel::Diamond, "gold" => CustomerLevel::Gold,
    "silver" => CustomerLevel::Silver, "bronze" => CustomerLevel::Bronze,
    "standard" => CustomerLevel::Standard,
]);
from_str_by_name!(AssuranceLevel, "assurance level", "AAA, AA, A, ordinary", [
    "aaa" => AssuranceLevel::Aaa, "aa" => AssuranceLevel::Aa, "a" => AssuranceLevel::A,
    "ordinary" => AssuranceLevel::Ordinary,
]);
from_str_by_name!(Scope, "scope", "intra_city, intra_province, inter_province", [
    "intra_city" => Scope::IntraCity, "intra_province" => Scope::IntraProvince,
    "inter_province" => Scope::InterProvince,
]);
from_str_by_name!(Severity, "severity", "critical, major, minor, warning, indeterminate, cleared", [
    "critical" => Severity::Critical, "major" => Severity::Major, "minor" => Severity::Minor,
    "warning" => Severity::Warning, "indeterminate" => Severity::Indeterminate,
    "cleared" => Severity::Cleared, "normal" => Severity::Cleared,
]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_most_important_first() {
        assert!(CustomerLevel::Key < CustomerLevel::Diamond);
        assert!(CustomerLevel::Bronze < CustomerLevel::Standard);
        assert!(AssuranceLevel::Aaa < AssuranceLevel::Aa);
        assert!(AssuranceLevel::A < AssuranceLevel::Ordinary);
    }

    #[test]
    fn names_round_trip_and_unknown_is_named() {
        for l in AssuranceLevel::ALL {
            assert_eq!(l.as_str().parse::<AssuranceLevel>(), Ok(l));
        }
        for l in CustomerLevel::ALL {
            assert_eq!(l.as_str().parse::<CustomerLevel>(), Ok(l));
        }
        let err = "platinum".parse::<CustomerLevel>().unwrap_err();
        assert!(err.to_string().contains("platinum"));
        assert_eq!("NORMAL".parse::<Severity>(), Ok(Severity::Cleared));
    }
}
