//! Plain row types exchanged with the store.
//!
//! Envelopes, receipts and agreements are opaque text to this crate; the
//! caller supplies the indexed columns alongside them.

use std::fmt;

use crate::StoreResult;
use crate::error::check_failed;

/// Precedence of FLASH messages (the highest).
pub const PRECEDENCE_FLASH: u8 = 3;
/// Precedence of ROUTINE messages (the lowest).
pub const PRECEDENCE_ROUTINE: u8 = 0;

/// Where an outgoing message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Accepted locally, waiting for the peer's signed receipt.
    Queued,
    /// The peer's receipt is stored.
    Delivered,
    /// Given up on; `bounce_reason` says why.
    Bounced,
}

impl OutboxState {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Bounced => "bounced",
        }
    }

    /// Parses the stored spelling.
    #[must_use]
    pub fn from_str_opt(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "delivered" => Some(Self::Delivered),
            "bounced" => Some(Self::Bounced),
            _ => None,
        }
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one [`crate::Store::outbox_commit`] did: a flag per accepted row (`true`:
/// stored now) and per receipt (`true`: that message became delivered now), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCommitted {
    pub inserted: Vec<bool>,
    pub delivered: Vec<bool>,
}

/// One outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Insertion order, assigned by the store (ignored on insert).
    pub seq: i64,
    pub envelope_id: String,
    /// Party id of the receiving node.
    pub peer: String,
    pub from_desk: String,
    pub to_desk: String,
    /// 3 = FLASH .. 0 = ROUTINE.
    pub precedence: u8,
    pub created_ms: i64,
    pub envelope_json: String,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// The peer's signed delivery receipt.
    pub receipt_json: Option<String>,
    pub bounce_reason: Option<String>,
    pub delivered_ms: Option<i64>,
    pub bounced_ms: Option<i64>,
    /// The peer's later "acknowledged by a person" receipt.
    pub acked_receipt_json: Option<String>,
    pub acked_ms: Option<i64>,
}

impl OutboxRow {
    /// A freshly accepted message, due immediately (`next_attempt_ms =
    /// created_ms`).
    #[must_use]
    pub fn new_queued(
        envelope_id: impl Into<String>,
        peer: impl Into<String>,
        from_desk: impl Into<String>,
        to_desk: impl Into<String>,
        precedence: u8,
        created_ms: i64,
        envelope_json: impl Into<String>,
    ) -> Self {
        Self {
            seq: 0,
            envelope_id: envelope_id.into(),
            peer: peer.into(),
            from_desk: from_desk.into(),
            to_desk: to_desk.into(),
            precedence,
            created_ms,
            envelope_json: envelope_json.into(),
            state: OutboxState::Queued,
            attempts: 0,
            next_attempt_ms: created_ms,
            last_error: None,
            receipt_json: None,
            bounce_reason: None,
            delivered_ms: None,
            bounced_ms: None,
            acked_receipt_json: None,
            acked_ms: None,
        }
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Insertion order, assigned by the store (ignored on insert).
    pub seq: i64,
    pub envelope_id: String,
    pub from_desk: String,
    pub to_desk: String,
    /// Party id of the sending node.
    pub sender_party: String,
    /// 3 = FLASH .. 0 = ROUTINE.
    pub precedence: u8,
    pub received_ms: i64,
    /// The envelope as received, its signature and batch proof included, but with
    /// its body left out (rows stored by earlier versions hold it here too):
    /// the body is [`InboxRow::body`], kept once. Put back, the envelope verifies
    /// alone against the sender's key.
    pub envelope_json: String,
    /// The release label as shown to the receiver.
    pub receiver_label: String,
    pub body: String,
    pub acked_ms: Option<i64>,
    pub acked_by: Option<String>,
    pub ack_receipt_json: Option<String>,
    pub escalated_ms: Option<i64>,
}

impl InboxRow {
    /// The cursor that continues an [`crate::Store::inbox_list`] page after
    /// this row.
    #[must_use]
    pub fn cursor(&self) -> InboxCursor {
        InboxCursor {
            precedence: self.precedence,
            received_ms: self.received_ms,
            seq: self.seq,
        }
    }
}

/// Position in an inbox listing (ordered by precedence DESC, received_ms
/// DESC, seq DESC); the next page starts strictly after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor {
    pub precedence: u8,
    pub received_ms: i64,
    pub seq: i64,
}

/// Result of acknowledging an inbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// This call recorded the acknowledgement.
    Acked,
    /// An earlier acknowledgement stands; its data is returned unchanged.
    AlreadyAcked {
        acked_ms: i64,
        acked_by: String,
        ack_receipt_json: String,
    },
}

/// An acknowledgement receipt waiting to be sent back to a message's sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOutboxRow {
    pub seq: i64,
    pub envelope_id: String,
    pub peer: String,
    pub ack_receipt_json: String,
}

/// An installed agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreementRow {
    pub id: String,
    pub version: u32,
    pub text: String,
    pub digest_hex: String,
    pub installed_ms: i64,
}

/// What [`crate::Store::agreement_put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgreementPut {
    /// No agreement with this id was installed; it is now.
    Installed,
    /// An older version was replaced.
    Replaced { previous_version: u32 },
    /// The same version with the same digest was already installed.
    Unchanged,
    /// The same signed text with new lifecycle events or signatures; the text was
    /// replaced by the fuller document.
    EventsUpdated,
    /// A newer version is installed and was kept; nothing was written.
    KeptNewer { installed_version: u32 },
}

/// A stored escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationRow {
    pub seq: i64,
    pub envelope_id: String,
    pub raised_ms: i64,
    pub reason: String,
}

/// Number of queued outbox messages for one peer at one precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDepth {
    pub peer: String,
    pub precedence: u8,
    pub count: u64,
}

/// A person's account. Roles and desks are comma-separated names; the node gives
/// them meaning. `password_hash` is a PHC string, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub display_name: String,
    pub password_hash: String,
    pub roles: String,
    pub desks: String,
    pub clearance: String,
    pub language: String,
    pub time_zone: String,
    pub disabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A signed-in browser. Only the SHA-256 of the session secret is kept, so a copy of
/// the database does not let anyone take a session over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id_hash: String,
    pub user_name: String,
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

/// A per-user API token (stored as the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id_hash: String,
    pub user_name: String,
    pub label: String,
    pub created_ms: i64,
}

/// The rules an outbox row must meet before it is written, in the order SQLite's
/// constraints report them. Both stores check them: the in-memory one has no
/// constraints, and the SQLite one keeps a delivered row's receipt in another table,
/// where a CHECK cannot see it.
pub(crate) fn check_outbox_row(op: &'static str, r: &OutboxRow) -> StoreResult<()> {
    let broken = if r.envelope_id.is_empty() {
        Some("outbox_envelope_id_nonempty")
    } else if r.peer.is_empty() {
        Some("outbox_peer_nonempty")
    } else if r.precedence > 3 {
        Some("outbox_precedence_range")
    } else if r.state == OutboxState::Delivered
        && (r.receipt_json.is_none() || r.delivered_ms.is_none())
    {
        Some("outbox_delivered_has_receipt")
    } else if r.state == OutboxState::Bounced
        && (r.bounce_reason.is_none() || r.bounced_ms.is_none())
    {
        Some("outbox_bounced_has_reason")
    } else if r.acked_ms.is_none() != r.acked_receipt_json.is_none() {
        Some("outbox_ack_complete")
    } else {
        None
    };
    broken.map_or(Ok(()), |c| Err(check_failed(op, c)))
}
