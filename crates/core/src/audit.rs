//! Audit entries: what a node records in its append-only Merkle log, in a canonical
//! encoding so any party can recompute the leaf hashes (RFC 9162: SHA-256(0x00 ‖ entry)).
//!
//! An entry is canonical JSON (sorted keys, no whitespace) of `{at, event}`. Its
//! position is bound by the tree itself; each stored row also keeps the root after it
//! was appended, so a verifier names the first row where history was changed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::canonical::canonical_json;
use crate::merkle::{Frontier, Hash, leaf_hash};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AuditEvent {
    MessageAccepted {
        id: String,
        from: String,
        to: String,
        label: String,
        precedence: String,
        agreement: String,
        channel: String,
    },
    MessageRefused {
        from: String,
        to: String,
        label: String,
        reasons: Vec<String>,
    },
    MessageSent {
        id: String,
        peer: String,
    },
    MessageReceived {
        id: String,
        from: String,
        to: String,
        receiver_label: String,
        precedence: String,
    },
    ArrivalRefused {
        id: String,
        from: String,
        reasons: Vec<String>,
    },
    MessageBounced {
        id: String,
        reasons: Vec<String>,
    },
    ReceiptReceived {
        id: String,
        receipt: String,
        peer: String,
    },
    Acknowledged {
        id: String,
        by: String,
    },
    AckReceiptReceived {
        id: String,
        peer: String,
        by: String,
    },
    Escalation {
        id: String,
        desk: String,
        deadline_ms: i64,
    },
    HotlineState {
        channel: String,
        peer: String,
        state: String,
        detail: String,
    },
    AgreementInstalled {
        id: String,
        version: u32,
        digest: String,
    },
    AgreementEvent {
        agreement: String,
        event: String,
        party: String,
        at: String,
    },
    ConsentGranted {
        originator: String,
        from: String,
        to: String,
    },
    ConsentWithdrawn {
        originator: String,
        from: String,
        to: String,
    },
    PeerForked {
        peer: String,
        detail: String,
    },
    TamperedEnvelope {
        peer: String,
        detail: String,
    },
    /// A sender asked about envelopes it had sent but could no longer send (their
    /// agreement stopped allowing them before a receipt came back). Each id this
    /// node held was answered with a receipt; every other id was answered "not
    /// held" and is refused for good, so a copy still in flight never lands.
    EnvelopesSettled {
        peer: String,
        ids: Vec<String>,
    },
    /// An account was created or changed (`change` names what, never a secret).
    AccountChanged {
        name: String,
        by: String,
        change: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub event: AuditEvent,
}

impl AuditEntry {
    pub fn encode(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn leaf(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// Parses a stored entry; the caller re-encodes it to check it is canonical.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

impl AuditEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::MessageAccepted { .. } => "message-accepted",
            Self::MessageRefused { .. } => "message-refused",
            Self::MessageSent { .. } => "message-sent",
            Self::MessageReceived { .. } => "message-received",
            Self::ArrivalRefused { .. } => "arrival-refused",
            Self::MessageBounced { .. } => "message-bounced",
            Self::ReceiptReceived { .. } => "receipt-received",
            Self::Acknowledged { .. } => "acknowledged",
            Self::AckReceiptReceived { .. } => "ack-receipt-received",
            Self::Escalation { .. } => "escalation",
            Self::HotlineState { .. } => "hotline-state",
            Self::AgreementInstalled { .. } => "agreement-installed",
            Self::AgreementEvent { .. } => "agreement-event",
            Self::ConsentGranted { .. } => "consent-granted",
            Self::ConsentWithdrawn { .. } => "consent-withdrawn",
            Self::PeerForked { .. } => "peer-forked",
            Self::TamperedEnvelope { .. } => "tampered-envelope",
            Self::EnvelopesSettled { .. } => "envelopes-settled",
            Self::AccountChanged { .. } => "account-changed",
        }
    }
}

/// One stored row of a log, as a verifier reads it back.
#[derive(Debug, Clone, Copy)]
pub struct StoredLeaf<'a> {
    pub index: u64,
    pub entry: &'a [u8],
    pub leaf: Hash,
    /// Root of the tree of entries `0..=index`, as recorded when this row was appended.
    pub root_after: Hash,
}

/// Checks a stored log from its start: every row decodes, is canonical, sits at the
/// next index, has the right leaf hash and the root recorded after it matches the root
/// recomputed from everything before. Returns the frontier of the verified log, or the
/// index of the first bad row and why.
pub fn verify_log<'a>(
    rows: impl IntoIterator<Item = StoredLeaf<'a>>,
) -> Result<Frontier, (u64, String)> {
    let mut frontier = Frontier::new();
    for row in rows {
        let expected = frontier.size();
        if row.index != expected {
            return Err((
                expected,
                format!(
                    "row {} found where entry {expected} belongs: entries deleted or reordered",
                    row.index
                ),
            ));
        }
        let Some(entry) = AuditEntry::decode(row.entry) else {
            return Err((
                expected,
                "entry is not a valid audit entry: edited".to_owned(),
            ));
        };
        if entry.encode() != row.entry {
            return Err((
                expected,
                "entry is not in canonical form: edited".to_owned(),
            ));
        }
        let leaf = leaf_hash(row.entry);
        if leaf != row.leaf {
            return Err((
                expected,
                "stored leaf hash does not match the entry: edited".to_owned(),
            ));
        }
        frontier.push(leaf).map_err(|e| (expected, e.to_string()))?;
        if frontier.root() != row.root_after {
            return Err((expected, "root after this entry differs from the one recorded: history before it was changed or rows were reordered".to_owned()));
        }
    }
    Ok(frontier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_tampering_is_named() {
        let entries: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                AuditEntry {
                    at: "2019-11-22T15:00:00Z".parse().unwrap(),
                    event: AuditEvent::MessageBounced {
                        id: format!("{i}"),
                        reasons: vec!["lapsed".into()],
                    },
                }
                .encode()
            })
            .collect();
        assert_eq!(
            AuditEntry::decode(&entries[0]).unwrap().encode(),
            entries[0]
        );
        let mut f = Frontier::new();
        let rows: Vec<(Hash, Hash)> = entries
            .iter()
            .map(|e| {
                let l = leaf_hash(e);
                f.push(l).unwrap();
                (l, f.root())
            })
            .collect();
        let stored = |order: &[usize]| -> Vec<StoredLeaf<'_>> {
            order
                .iter()
                .enumerate()
                .map(|(i, &k)| StoredLeaf {
                    index: i as u64,
                    entry: &entries[k],
                    leaf: rows[k].0,
                    root_after: rows[k].1,
                })
                .collect()
        };
        assert_eq!(
            verify_log(stored(&[0, 1, 2, 3, 4])).unwrap().root(),
            f.root()
        );
        assert_eq!(verify_log(stored(&[0, 1, 3, 2, 4])).unwrap_err().0, 2);
        let mut edited = stored(&[0, 1, 2, 3, 4]);
        let changed = entries[3]
            .iter()
            .map(|b| if *b == b'3' { b'7' } else { *b })
            .collect::<Vec<u8>>();
        edited[3].entry = &changed;
        assert_eq!(verify_log(edited).unwrap_err().0, 3);
        let mut gap = stored(&[0, 1, 2, 3, 4]);
        gap.remove(1);
        assert_eq!(verify_log(gap).unwrap_err().0, 1);
    }
}
