//! Envelopes: the signed unit that crosses between nodes, and receipts: the receiving
//! node's signed statement that it durably stored (or refused, or a person
//! acknowledged) an envelope.
//!
//! Wire form is JSON. What is signed is a domain tag followed by the canonical JSON
//! (sorted keys, no whitespace) of everything but the signature; the body is bound by
//! its SHA-256 so a header can be checked without re-hashing large bodies twice.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_json;
use crate::ids::{DeskId, PartyId};
use crate::label::Label;
use crate::merkle::TreeHead;
use crate::precedence::Precedence;
use crate::signing::{KeyError, PartyKey, PublicKey};

/// Largest body accepted, in bytes.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest encoded envelope or receipt accepted from another party, in bytes.
pub const ENCODED_BYTES_MAX: usize = BODY_BYTES_MAX * 2 + 64 * 1024;

const ENVELOPE_TAG: &[u8] = b"liaison-envelope-v1\n";
const RECEIPT_TAG: &[u8] = b"liaison-receipt-v1\n";

/// 128 random bits as 32 lowercase hex digits; the caller supplies the randomness.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvelopeId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("`{0}` is not an envelope id, expected 32 lowercase hex digits")]
    BadId(String),
    #[error("envelope is {0} bytes, expected at most {ENCODED_BYTES_MAX}")]
    TooLarge(usize),
    #[error("body is {0} bytes, expected at most {BODY_BYTES_MAX}")]
    BodyTooLarge(usize),
    #[error("not a valid envelope: {0}")]
    Malformed(String),
    #[error("body does not match the signed hash")]
    BodyHash,
    #[error("signature of `{party}` does not verify: {source}")]
    Signature { party: String, source: KeyError },
}

impl EnvelopeId {
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(hex::encode(bytes))
    }
    pub fn parse(s: &str) -> Result<Self, EnvelopeError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(EnvelopeError::BadId(s.chars().take(64).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EnvelopeId {
    type Error = EnvelopeError;
    fn try_from(s: String) -> Result<Self, EnvelopeError> {
        Self::parse(&s)
    }
}
impl From<EnvelopeId> for String {
    fn from(id: EnvelopeId) -> String {
        id.0
    }
}
impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub id: EnvelopeId,
    pub from: DeskId,
    pub to: DeskId,
    /// Whose information this is; the sender's party unless passed on.
    pub originator: PartyId,
    /// The agreement and channel the sender's decision chose.
    pub agreement: String,
    pub agreement_version: u32,
    pub channel: String,
    /// The label as the sender wrote it.
    pub label: Label,
    pub precedence: Precedence,
    pub created_at: Timestamp,
    pub reply_to: Option<EnvelopeId>,
    /// Hex SHA-256 of the body's UTF-8 bytes.
    pub body_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub header: Header,
    pub body: String,
    /// Base64 Ed25519 signature of the sending party over the header's signing bytes.
    pub signature: String,
}

pub fn body_hash(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

impl Header {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = ENVELOPE_TAG.to_vec();
        out.extend(canonical_json(self));
        out
    }
}

impl Envelope {
    /// Signs a header (its `body_sha256` is set here) and body as the key's party.
    pub fn seal(mut header: Header, body: String, key: &PartyKey) -> Result<Self, EnvelopeError> {
        if body.len() > BODY_BYTES_MAX {
            return Err(EnvelopeError::BodyTooLarge(body.len()));
        }
        header.body_sha256 = body_hash(&body);
        let signature = key.sign_b64(&header.signing_bytes());
        Ok(Self {
            header,
            body,
            signature,
        })
    }

    /// Checks the body hash and the sender's signature.
    pub fn verify(&self, sender: &PublicKey) -> Result<(), EnvelopeError> {
        if body_hash(&self.body) != self.header.body_sha256 {
            return Err(EnvelopeError::BodyHash);
        }
        sender
            .verify_b64(&self.header.signing_bytes(), &self.signature)
            .map_err(|source| EnvelopeError::Signature {
                party: self.header.from.party_str().to_owned(),
                source,
            })
    }

    /// Parses another party's bytes; size-limited, never panics.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > ENCODED_BYTES_MAX {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        let env: Self =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        env.checked()
    }

    /// Like [`Envelope::from_json`], for one element of an already parsed batch (whose
    /// request size the caller bounded), so it is not parsed twice.
    pub fn from_value(value: serde_json::Value) -> Result<Self, EnvelopeError> {
        let env: Self =
            serde_json::from_value(value).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        env.checked()
    }

    fn checked(self) -> Result<Self, EnvelopeError> {
        if self.body.len() > BODY_BYTES_MAX {
            return Err(EnvelopeError::BodyTooLarge(self.body.len()));
        }
        Ok(self)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of the signed header and signature: what a receipt refers to.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.header.signing_bytes());
        h.update(self.signature.as_bytes());
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptKind {
    /// Durably stored by the receiving node.
    Stored,
    /// Refused by the receiving node's own decision; `reasons` say why.
    Refused,
    /// A person at the receiving desk acknowledged it.
    Acknowledged,
}

/// A tree head signed by the node that keeps the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    pub log_id: String,
    pub head: TreeHead,
    pub signature: String,
}

impl SignedTreeHead {
    pub fn sign(log_id: &str, head: TreeHead, key: &PartyKey) -> Self {
        let signature = key.sign_b64(&head.signing_bytes(log_id));
        Self {
            log_id: log_id.to_owned(),
            head,
            signature,
        }
    }
    pub fn verify(&self, key: &PublicKey) -> Result<(), KeyError> {
        key.verify_b64(&self.head.signing_bytes(&self.log_id), &self.signature)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub envelope_id: EnvelopeId,
    /// `Envelope::digest` of what was received.
    pub envelope_digest: String,
    pub receiver: PartyId,
    pub kind: ReceiptKind,
    pub at: Timestamp,
    /// The label as the receiver marks it (stored and acknowledged receipts).
    pub receiver_label: Option<Label>,
    /// Why it was refused.
    pub reasons: Vec<String>,
    /// Who acknowledged (acknowledged receipts).
    pub acknowledged_by: Option<String>,
    /// The receiver's latest signed audit tree head.
    pub tree_head: Option<SignedTreeHead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub body: ReceiptBody,
    pub signature: String,
}

impl ReceiptBody {
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = RECEIPT_TAG.to_vec();
        out.extend(canonical_json(self));
        out
    }
}

impl Receipt {
    pub fn sign(body: ReceiptBody, key: &PartyKey) -> Self {
        let signature = key.sign_b64(&body.signing_bytes());
        Self { body, signature }
    }

    /// Checks the receiver's signature and that the receipt is about `envelope`.
    pub fn verify(&self, receiver: &PublicKey, envelope: &Envelope) -> Result<(), EnvelopeError> {
        if self.body.envelope_id != envelope.header.id
            || self.body.envelope_digest != envelope.digest()
        {
            return Err(EnvelopeError::Malformed(
                "receipt is for another envelope".to_owned(),
            ));
        }
        receiver
            .verify_b64(&self.body.signing_bytes(), &self.signature)
            .map_err(|source| EnvelopeError::Signature {
                party: self.body.receiver.to_string(),
                source,
            })
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > ENCODED_BYTES_MAX {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Raw signature bytes of a base64 string, for callers that need them.
pub fn decode_signature(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, seed: u8) -> PartyKey {
        PartyKey::from_seed(PartyId::new(p).unwrap(), [seed; 32])
    }

    fn header() -> Header {
        Header {
            id: EnvelopeId::from_random([9; 16]),
            from: DeskId::new("USA.intel").unwrap(),
            to: DeskId::new("ROK.intel").unwrap(),
            originator: PartyId::new("USA").unwrap(),
            agreement: "rok-usa-jpn-information-sharing".into(),
            agreement_version: 1,
            channel: "intelligence-exchange".into(),
            label: "USA:SECRET".parse().unwrap(),
            precedence: Precedence::Flash,
            created_at: "2019-11-22T12:00:00Z".parse().unwrap(),
            reply_to: None,
            body_sha256: String::new(),
        }
    }

    #[test]
    fn sealed_envelopes_verify_and_tampering_fails() {
        let usa = key("USA", 1);
        let env = Envelope::seal(header(), "report".into(), &usa).unwrap();
        env.verify(&usa.public()).unwrap();
        let back = Envelope::from_json(env.to_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        back.verify(&usa.public()).unwrap();

        let mut t = env.clone();
        t.body.push('!');
        assert_eq!(t.verify(&usa.public()), Err(EnvelopeError::BodyHash));
        let mut t = env.clone();
        t.header.label = "USA:CONFIDENTIAL".parse().unwrap();
        assert!(matches!(
            t.verify(&usa.public()),
            Err(EnvelopeError::Signature { .. })
        ));
        let mut t = env.clone();
        t.header.to = DeskId::new("JPN.intel").unwrap();
        assert!(t.verify(&usa.public()).is_err());
        assert!(env.verify(&key("USA", 2).public()).is_err());
    }

    #[test]
    fn receipts_bind_the_envelope() {
        let usa = key("USA", 1);
        let rok = key("ROK", 3);
        let env = Envelope::seal(header(), "report".into(), &usa).unwrap();
        let r = Receipt::sign(
            ReceiptBody {
                envelope_id: env.header.id.clone(),
                envelope_digest: env.digest(),
                receiver: PartyId::new("ROK").unwrap(),
                kind: ReceiptKind::Stored,
                at: "2019-11-22T12:00:01Z".parse().unwrap(),
                receiver_label: Some("ROK:II급 비밀".parse().unwrap()),
                reasons: vec![],
                acknowledged_by: None,
                tree_head: None,
            },
            &rok,
        );
        r.verify(&rok.public(), &env).unwrap();
        assert!(r.verify(&usa.public(), &env).is_err());
        let other = Envelope::seal(
            Header {
                id: EnvelopeId::from_random([8; 16]),
                ..header()
            },
            "x".into(),
            &usa,
        )
        .unwrap();
        assert!(r.verify(&rok.public(), &other).is_err());
        let back = Receipt::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{}", b"null", b"\xff\xfe", b"{\"header\":1}"] {
            assert!(Envelope::from_json(bytes).is_err());
            assert!(Receipt::from_json(bytes).is_err());
        }
        assert!(EnvelopeId::parse("XYZ").is_err());
        assert!(EnvelopeId::parse(&"a".repeat(32)).is_ok());
    }
}
