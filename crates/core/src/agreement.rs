//! The agreement: a signed, versioned document among parties that opens channels,
//! maps classification levels, sets release rules, a term, conditions and obligations.
//!
//! This module holds the checked domain value. `parse` builds it from TOML;
//! `canonical` turns its meaning into bytes to sign; `lifecycle` says what it means at
//! an instant.

use jiff::{Span, Timestamp, Zoned};
use serde::Serialize;

use crate::ids::{DeskId, PartyId};

/// A checked agreement. INVARIANT: every id referenced anywhere names a declared party,
/// desk, channel, level or condition; level mappings are strictly increasing.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub id: String,
    pub version: u32,
    pub title: String,
    /// A draft is never in force, whatever its events say.
    pub draft: bool,
    pub parties: Vec<Party>,
    pub channels: Vec<Channel>,
    pub classification: Classification,
    pub release: ReleaseRules,
    /// None only for drafts, which never come into force.
    pub term: Option<Term>,
    pub conditions: Vec<Condition>,
    pub obligations: Vec<Obligation>,
    /// Lifecycle events, each signed by its party; not part of the signed text.
    #[serde(skip)]
    pub events: Vec<Event>,
    /// Parties' signatures over the canonical text.
    #[serde(skip)]
    pub signatures: Vec<PartySignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Party {
    pub id: PartyId,
    pub name: String,
    /// `ed25519:` + base64 public keys; empty until the party's key is known.
    pub keys: Vec<String>,
    pub desks: Vec<Desk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desk {
    pub id: DeskId,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    Hotline,
    Exchange,
}

#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub kind: ChannelKind,
    /// Desks joined by this channel; traffic flows between desks of different parties.
    pub desks: Vec<DeskId>,
    /// Highest common level allowed, as an index into `classification.common`.
    pub ceiling: usize,
    /// Hotlines: how often the line is tested.
    pub test_interval: Option<Span>,
    /// Hotlines: how soon a person must acknowledge a FLASH message.
    pub ack_deadline: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The common scale, lowest first.
    pub common: Vec<String>,
    /// Each party's own levels, lowest first, each mapped to a common index.
    pub parties: Vec<PartyScale>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartyScale {
    pub party: PartyId,
    /// INVARIANT: common indices strictly increase along the list.
    pub levels: Vec<PartyLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartyLevel {
    pub name: String,
    pub common: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThirdPartyRule {
    /// The default: passing an originator's information on needs its consent.
    OriginatorConsent,
    /// Never, not even with consent.
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseRules {
    pub third_party: ThirdPartyRule,
    pub grants: Vec<ReleaseGrant>,
}

/// A clause granting in advance what would otherwise need the originator's consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseGrant {
    pub id: String,
    pub originator: PartyId,
    pub from: PartyId,
    pub to: Vec<PartyId>,
    /// Highest common level the grant covers.
    pub ceiling: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Term {
    /// When the agreement takes effect; its time zone fixes calendar arithmetic.
    pub effective: Zoned,
    /// None: indefinite.
    pub length: Option<Span>,
    pub auto_renew: bool,
    /// How long before a term's end a notice of withdrawal must be given.
    pub notice: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub id: String,
    pub text: String,
    /// Parties whose signed event may record the condition as met.
    pub may_record: Vec<PartyId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObligationState {
    Agreed,
    Proposed,
    Disputed,
    Fulfilled,
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Owed {
    /// Money in whole units of the currency.
    Payment {
        amount: u64,
        currency: String,
    },
    Act {
        act: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    Once,
    Month,
    Quarter,
    Year,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obligation {
    pub id: String,
    pub from: PartyId,
    pub to: PartyId,
    pub owed: Owed,
    pub per: Per,
    /// Which period, as people name it (`2019`, `2020`).
    pub period: Option<String>,
    pub state: ObligationState,
    /// Where the figure comes from; two sources that disagree are two obligations.
    pub source: String,
    pub note: Option<String>,
    /// The obligation holds only once this condition is recorded.
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum EventKind {
    /// The party signed; its participation starts at `max(effective, at)`.
    Signed,
    NoticeOfWithdrawal,
    /// Withdraws an earlier notice; with a condition, only once that condition is recorded.
    NoticeWithdrawn {
        condition: Option<String>,
    },
    ConditionRecorded {
        condition: String,
    },
    Suspended {
        until: Option<Timestamp>,
    },
    Resumed,
    /// Ends the agreement for every party.
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub kind: EventKind,
    pub party: PartyId,
    pub at: Timestamp,
    /// Base64 Ed25519 signature by `party` over the event's signing bytes.
    #[serde(skip)]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartySignature {
    pub party: PartyId,
    pub key: String,
    pub signature: String,
}

impl Agreement {
    pub fn party(&self, id: &str) -> Option<&Party> {
        self.parties.iter().find(|p| p.id.as_str() == id)
    }
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }
    pub fn scale(&self, party: &str) -> Option<&PartyScale> {
        self.classification
            .parties
            .iter()
            .find(|s| s.party.as_str() == party)
    }
    pub fn common_name(&self, index: usize) -> &str {
        self.classification
            .common
            .get(index)
            .map(String::as_str)
            .unwrap_or("?")
    }
    pub fn condition(&self, id: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.id == id)
    }
}

impl PartyScale {
    pub fn to_common(&self, name: &str) -> Option<usize> {
        self.levels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.common)
    }
    pub fn from_common(&self, common: usize) -> Option<&str> {
        self.levels
            .iter()
            .find(|l| l.common == common)
            .map(|l| l.name.as_str())
    }
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hotline => "hotline",
            Self::Exchange => "exchange",
        }
    }
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::NoticeOfWithdrawal => "notice-of-withdrawal",
            Self::NoticeWithdrawn { .. } => "notice-withdrawn",
            Self::ConditionRecorded { .. } => "condition-recorded",
            Self::Suspended { .. } => "suspended",
            Self::Resumed => "resumed",
            Self::Terminated => "terminated",
        }
    }
}

/// Whole amounts as people read them: `923000000` as `923,000,000`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
