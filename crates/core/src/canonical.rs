//! The canonical form of an agreement's meaning, and what parties sign.
//!
//! Canonical bytes are the agreement's checked value as JSON with object keys sorted,
//! no insignificant whitespace and integers only (the JSON Canonicalization Scheme,
//! RFC 8785, restricted to values without floats), behind a domain tag. Comments,
//! whitespace, key order and the order of sets (parties, channels, conditions...) do
//! not change it; any change of meaning does. Events and signatures are outside it:
//! each event is signed on its own, bound to the agreement's digest.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::agreement::{Agreement, Event};
use crate::signing::{KeyError, PublicKey};

const AGREEMENT_TAG: &[u8] = b"liaison-agreement-v1\n";
const EVENT_TAG: &[u8] = b"liaison-agreement-event-v1\n";

/// Sorted-key compact JSON of any serializable value.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json's Value keeps objects in a BTreeMap: serialising through it sorts keys.
    match serde_json::to_value(value).and_then(|v| serde_json::to_vec(&v)) {
        Ok(bytes) => bytes,
        // Our types serialise infallibly (no maps with non-string keys, no floats).
        Err(e) => format!("\"unserialisable: {e}\"").into_bytes(),
    }
}

pub fn agreement_bytes(a: &Agreement) -> Vec<u8> {
    let mut out = AGREEMENT_TAG.to_vec();
    out.extend(canonical_json(a));
    out
}

pub type Digest32 = [u8; 32];

pub fn agreement_digest(a: &Agreement) -> Digest32 {
    Sha256::digest(agreement_bytes(a)).into()
}

/// What a party signs for a lifecycle event: the event bound to the agreement's digest,
/// so an event cannot be replayed onto another agreement or version.
pub fn event_bytes(a: &Agreement, event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Signed<'a> {
        agreement: &'a str,
        version: u32,
        digest: String,
        event: &'a Event,
    }
    let mut out = EVENT_TAG.to_vec();
    out.extend(canonical_json(&Signed {
        agreement: &a.id,
        version: a.version,
        digest: hex::encode(agreement_digest(a)),
        event,
    }));
    out
}

/// The outcome of checking every signature in an agreement document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SignatureReport {
    /// Parties with a valid signature by one of their listed keys.
    pub signed: Vec<String>,
    /// One line per problem; empty means every party signed and every event verifies.
    pub problems: Vec<String>,
}

impl SignatureReport {
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks that every party signed the canonical text with a key the agreement lists
/// for it, and that every lifecycle event carries a valid signature of its party.
pub fn verify_signatures(a: &Agreement) -> SignatureReport {
    let bytes = agreement_bytes(a);
    let mut report = SignatureReport::default();
    for party in &a.parties {
        let mut found = false;
        for sig in a.signatures.iter().filter(|s| s.party == party.id) {
            if !party.keys.contains(&sig.key) {
                report.problems.push(format!(
                    "signature of `{}` uses key `{}`, which the agreement does not list for `{}`",
                    party.id, sig.key, party.id
                ));
                continue;
            }
            match PublicKey::parse(&sig.key).and_then(|k| k.verify_b64(&bytes, &sig.signature)) {
                Ok(()) => found = true,
                Err(e) => report.problems.push(format!(
                    "signature of `{}` does not verify over this text: {e}",
                    party.id
                )),
            }
        }
        if found {
            report.signed.push(party.id.to_string());
        } else if !a.signatures.iter().any(|s| s.party == party.id) {
            report
                .problems
                .push(format!("`{}` has not signed this text", party.id));
        }
    }
    for (i, event) in a.events.iter().enumerate() {
        match verify_event(a, event) {
            Ok(()) => {}
            Err(e) => report.problems.push(format!(
                "event {i} (`{}` by `{}` at {}): {e}",
                event.kind.name(),
                event.party,
                event.at
            )),
        }
    }
    report
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventSignatureError {
    #[error("not signed")]
    Unsigned,
    #[error("party has no listed key")]
    NoKey,
    #[error("{0}")]
    Key(#[from] KeyError),
}

pub fn verify_event(a: &Agreement, event: &Event) -> Result<(), EventSignatureError> {
    let sig = event
        .signature
        .as_deref()
        .ok_or(EventSignatureError::Unsigned)?;
    let party = a
        .party(event.party.as_str())
        .ok_or(EventSignatureError::NoKey)?;
    if party.keys.is_empty() {
        return Err(EventSignatureError::NoKey);
    }
    let bytes = event_bytes(a, event);
    let mut last = EventSignatureError::NoKey;
    for key in &party.keys {
        match PublicKey::parse(key).and_then(|k| k.verify_b64(&bytes, sig)) {
            Ok(()) => return Ok(()),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}
