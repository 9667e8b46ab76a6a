//! Envelopes: the unit that crosses between nodes, signed by the sending party, and
//! receipts: the receiving node's signed statement that it durably stored (or refused,
//! or a person acknowledged) an envelope.
//!
//! Wire form is JSON. What is signed is a domain tag followed by the canonical JSON
//! (sorted keys, no whitespace) of everything but the signature; the body is bound by
//! its SHA-256 so a header can be checked without re-hashing large bodies twice.
//!
//! Both directions sign once per batch, not once per item: the signer signs a head
//! naming the RFC 9162 Merkle root over its items' leaf hashes, and each item, stored
//! with the head and its inclusion proof, still verifies alone. An envelope is signed
//! when it is sent ([`EnvelopeBatch::sign`]), not when it is accepted: it waits in its
//! sender's outbox unsigned.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_json;
use crate::ids::{DeskId, PartyId};
use crate::label::Label;
use crate::merkle::{
    Hash, TreeHead, leaf_hash, root_and_inclusion_proofs, root_from_leaves, verify_inclusion,
};
use crate::precedence::Precedence;
use crate::signing::{KeyError, PartyKey, PublicKey};

/// Largest body accepted, in bytes.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest encoded envelope or receipt accepted from another party, in bytes.
pub const ENCODED_BYTES_MAX: usize = BODY_BYTES_MAX * 2 + 64 * 1024;

const ENVELOPE_TAG: &[u8] = b"liaison-envelope-v1\n";
const RECEIPT_TAG: &[u8] = b"liaison-receipt-v1\n";
const RECEIPT_BATCH_TAG: &[u8] = b"liaison-receipt-batch-v1\n";
const ENVELOPE_BATCH_TAG: &[u8] = b"liaison-envelope-batch-v1\n";

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

    /// A new id that sorts by creation time: the first 48 bits are the milliseconds
    /// since the Unix epoch (as in UUIDv7, RFC 9562), the other 80 are random. Stores
    /// index envelopes by id; random ids would land each insert on a different index
    /// page, so a commit of a few hundred envelopes rewrote a few hundred pages.
    /// Ordered ids append instead. An instant before 1970 counts as 0.
    pub fn time_ordered(created: Timestamp, random: [u8; 16]) -> Self {
        let ms = u64::try_from(created.as_millisecond()).unwrap_or(0);
        let mut bytes = random;
        for (b, m) in bytes.iter_mut().zip(ms.to_be_bytes().into_iter().skip(2)) {
            *b = m;
        }
        Self::from_random(bytes)
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
    /// Base64 Ed25519 signature of the sending party over the head of the batch the
    /// envelope travelled in; empty while it waits in its sender's outbox.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// That batch's head and this envelope's place in it; absent until sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<EnvelopeProof>,
}

/// What is signed: a domain tag, then the canonical JSON of the signed part.
fn tagged<T: Serialize>(tag: &[u8], value: &T) -> Vec<u8> {
    let mut out = tag.to_vec();
    out.extend(canonical_json(value));
    out
}

pub fn body_hash(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

impl Header {
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged(ENVELOPE_TAG, self)
    }

    /// [`Envelope::digest`] and the envelope's leaf hash in a batch, from one
    /// canonical form of the header.
    pub fn digest_and_leaf(&self) -> (String, Hash) {
        let bytes = self.signing_bytes();
        (hex::encode(Sha256::digest(&bytes)), leaf_hash(&bytes))
    }
}

impl Envelope {
    /// An envelope ready to wait in its sender's outbox: the body's hash is set in
    /// the header; it is signed when sent, in a batch ([`EnvelopeBatch::sign`]).
    pub fn unsigned(mut header: Header, body: String) -> Result<Self, EnvelopeError> {
        if body.len() > BODY_BYTES_MAX {
            return Err(EnvelopeError::BodyTooLarge(body.len()));
        }
        header.body_sha256 = body_hash(&body);
        Ok(Self {
            header,
            body,
            signature: String::new(),
            batch: None,
        })
    }

    /// Checks, for an envelope kept alone after it arrived, the body hash, that it
    /// is in its batch, and the sender's signature over the batch's head.
    pub fn verify(&self, sender: &PublicKey) -> Result<(), EnvelopeError> {
        if body_hash(&self.body) != self.header.body_sha256 {
            return Err(EnvelopeError::BodyHash);
        }
        let Some(proof) = &self.batch else {
            return Err(EnvelopeError::Malformed(
                "envelope carries no signed batch".to_owned(),
            ));
        };
        if proof.head.sender.as_str() != self.header.from.party_str() {
            return Err(EnvelopeError::Malformed(
                "envelope and its batch name different senders".to_owned(),
            ));
        }
        let (_, leaf) = self.header.digest_and_leaf();
        in_batch(
            "envelope",
            &leaf,
            proof.index,
            proof.head.size,
            &proof.path,
            &proof.head.root,
        )?;
        sender
            .verify_b64(&proof.head.signing_bytes(), &self.signature)
            .map_err(|source| EnvelopeError::Signature {
                party: proof.head.sender.to_string(),
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

    fn checked(self) -> Result<Self, EnvelopeError> {
        if self.body.len() > BODY_BYTES_MAX {
            return Err(EnvelopeError::BodyTooLarge(self.body.len()));
        }
        Ok(self)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Hex SHA-256 of the header's signing bytes: what a receipt refers to. The header
    /// binds the body by its hash; the signature is left out, since each batch an
    /// envelope is sent in signs it anew.
    pub fn digest(&self) -> String {
        self.header.digest_and_leaf().0
    }
}

/// What a sender signs once for a whole batch of envelopes: how many there are and
/// the RFC 9162 Merkle root over the leaf hashes of each header's signing bytes, in
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeBatchHead {
    pub sender: PartyId,
    pub at: Timestamp,
    pub size: u64,
    /// Hex Merkle root of the envelopes' headers.
    pub root: String,
}

impl EnvelopeBatchHead {
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged(ENVELOPE_BATCH_TAG, self)
    }
}

/// Shows that one envelope is in a signed batch, so it verifies on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeProof {
    pub head: EnvelopeBatchHead,
    pub index: u64,
    /// Hex sibling hashes from the leaf up (RFC 9162 inclusion proof).
    pub path: Vec<String>,
}

/// Envelopes as they cross: one head, one signature, the envelopes in the head's order
/// (without their own signature or proof, which the receiver attaches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeBatch {
    pub head: EnvelopeBatchHead,
    /// Base64 Ed25519 signature of the sender over the head's signing bytes.
    pub signature: String,
    pub envelopes: Vec<Envelope>,
}

/// One envelope of an arrived batch after [`EnvelopeBatch::verify_split`]: signed and
/// with its proof attached, or why it is not to be trusted.
pub type Verified = (Envelope, Result<String, EnvelopeError>);

impl EnvelopeBatch {
    /// Signs the envelopes' leaf hashes (from [`Header::digest_and_leaf`], in the order
    /// the envelopes travel) as one batch.
    pub fn sign_head(
        leaves: &[Hash],
        at: Timestamp,
        key: &PartyKey,
    ) -> (EnvelopeBatchHead, String) {
        let head = EnvelopeBatchHead {
            sender: key.party.clone(),
            at,
            size: leaves.len() as u64,
            root: hex::encode(root_from_leaves(leaves)),
        };
        let signature = key.sign_b64(&head.signing_bytes());
        (head, signature)
    }

    /// Signs unsigned envelopes as one batch.
    pub fn sign(envelopes: Vec<Envelope>, at: Timestamp, key: &PartyKey) -> Self {
        let leaves: Vec<Hash> = envelopes
            .iter()
            .map(|e| e.header.digest_and_leaf().1)
            .collect();
        let (head, signature) = Self::sign_head(&leaves, at, key);
        Self {
            head,
            signature,
            envelopes,
        }
    }

    /// Parses another party's bytes; never panics. The caller bounds the size.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let batch: Self =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        for env in &batch.envelopes {
            if env.body.len() > BODY_BYTES_MAX {
                return Err(EnvelopeError::BodyTooLarge(env.body.len()));
            }
        }
        Ok(batch)
    }

    /// Checks the one signature against any of `keys` and that the head covers exactly
    /// these headers, all from the signer's party; then checks each body against its
    /// header. Returns every envelope, in order, with its digest, or with why it is
    /// not trusted: all of them when the batch as a whole does not verify, one alone
    /// when only its body was altered. A trusted envelope comes back signed, with its
    /// proof, so it verifies alone ([`Envelope::verify`]).
    pub fn verify_split(self, keys: &[PublicKey]) -> Vec<Verified> {
        let sender = self.head.sender.to_string();
        let digests: Vec<(String, Hash)> = self
            .envelopes
            .iter()
            .map(|e| e.header.digest_and_leaf())
            .collect();
        let leaves: Vec<Hash> = digests.iter().map(|(_, leaf)| *leaf).collect();
        let (root, paths) = root_and_inclusion_proofs(&leaves);
        let whole = self.check_head(&root, keys);
        let Self {
            head,
            signature,
            envelopes,
        } = self;
        envelopes
            .into_iter()
            .zip(digests)
            .zip(paths)
            .enumerate()
            .map(|(index, ((mut env, (digest, _)), path))| {
                if let Err(e) = &whole {
                    return (env, Err(e.clone()));
                }
                if env.header.from.party_str() != sender {
                    let why = format!(
                        "envelope from `{}` in a batch signed by `{sender}`",
                        env.header.from
                    );
                    return (env, Err(EnvelopeError::Malformed(why)));
                }
                if body_hash(&env.body) != env.header.body_sha256 {
                    return (env, Err(EnvelopeError::BodyHash));
                }
                env.signature = signature.clone();
                env.batch = Some(EnvelopeProof {
                    head: head.clone(),
                    index: index as u64,
                    path: path.iter().map(hex::encode).collect(),
                });
                (env, Ok(digest))
            })
            .collect()
    }

    fn check_head(&self, root: &Hash, keys: &[PublicKey]) -> Result<(), EnvelopeError> {
        let bad = |why: &str| Err(EnvelopeError::Malformed(why.to_owned()));
        if self.head.size != self.envelopes.len() as u64 {
            return bad("envelope batch head counts another number of envelopes");
        }
        if parse_hash(&self.head.root)? != *root {
            return bad("envelope batch head does not cover these envelopes");
        }
        let signed = self.head.signing_bytes();
        let mut last = KeyError::BadSignature;
        for key in keys {
            match key.verify_b64(&signed, &self.signature) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(EnvelopeError::Signature {
            party: self.head.sender.to_string(),
            source: last,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
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
    /// The receiver's signature: over the body's signing bytes, or, for a receipt
    /// taken out of a [`ReceiptBatch`], over the batch head that `batch` proves the
    /// body is in.
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProof>,
}

/// What a receiver signs once for a whole batch of receipts: how many there are and
/// the RFC 9162 Merkle root over the leaf hashes of each body's signing bytes, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHead {
    pub receiver: PartyId,
    pub at: Timestamp,
    pub size: u64,
    /// Hex Merkle root of the receipt bodies.
    pub root: String,
}

impl BatchHead {
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged(RECEIPT_BATCH_TAG, self)
    }
}

/// Shows that one receipt body is in a signed batch: the head and the body's inclusion
/// proof, so the receipt verifies on its own, without the rest of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchProof {
    pub head: BatchHead,
    pub index: u64,
    /// Hex sibling hashes from the leaf up (RFC 9162 inclusion proof).
    pub path: Vec<String>,
}

/// The answer to a batch of envelopes: a receipt body for each, one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBatch {
    pub head: BatchHead,
    pub receipts: Vec<ReceiptBody>,
    /// Base64 Ed25519 signature of the receiver over the head's signing bytes.
    pub signature: String,
    /// The receiver's latest signed audit tree head, once for the batch. Signed on its
    /// own, so it stays out of the head and out of every stored receipt.
    pub tree_head: Option<SignedTreeHead>,
}

impl ReceiptBody {
    pub fn signing_bytes(&self) -> Vec<u8> {
        tagged(RECEIPT_TAG, self)
    }
}

impl Receipt {
    pub fn sign(body: ReceiptBody, key: &PartyKey) -> Self {
        let signature = key.sign_b64(&body.signing_bytes());
        Self {
            body,
            signature,
            batch: None,
        }
    }

    /// Checks the receiver's signature (directly or through the signed batch head)
    /// and that the receipt is about `envelope`.
    pub fn verify(&self, receiver: &PublicKey, envelope: &Envelope) -> Result<(), EnvelopeError> {
        if self.body.envelope_id != envelope.header.id
            || self.body.envelope_digest != envelope.digest()
        {
            return Err(EnvelopeError::Malformed(
                "receipt is for another envelope".to_owned(),
            ));
        }
        let signed = match &self.batch {
            None => self.body.signing_bytes(),
            Some(proof) => {
                if proof.head.receiver != self.body.receiver {
                    return Err(EnvelopeError::Malformed(
                        "receipt and its batch name different receivers".to_owned(),
                    ));
                }
                in_batch(
                    "receipt",
                    &leaf_hash(&self.body.signing_bytes()),
                    proof.index,
                    proof.head.size,
                    &proof.path,
                    &proof.head.root,
                )?;
                proof.head.signing_bytes()
            }
        };
        receiver
            .verify_b64(&signed, &self.signature)
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

/// Checks that `leaf` sits at `index` of a signed batch of `size` with hex `root`,
/// by its hex inclusion `path`.
fn in_batch(
    what: &str,
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[String],
    root: &str,
) -> Result<(), EnvelopeError> {
    let path = path
        .iter()
        .map(|h| parse_hash(h))
        .collect::<Result<Vec<Hash>, _>>()?;
    verify_inclusion(leaf, index, size, &path, &parse_hash(root)?)
        .map_err(|e| EnvelopeError::Malformed(format!("{what} is not in its batch: {e}")))
}

fn parse_hash(text: &str) -> Result<Hash, EnvelopeError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| EnvelopeError::Malformed(format!("`{text}` is not a hex SHA-256 hash")))?;
    Ok(out)
}

impl ReceiptBatch {
    /// Signs receipt bodies as one batch. Each body's own `receiver` should be the
    /// signer's party; the bodies' tree heads are left to the head.
    pub fn sign(
        receipts: Vec<ReceiptBody>,
        at: Timestamp,
        tree_head: Option<SignedTreeHead>,
        key: &PartyKey,
    ) -> Self {
        let leaves: Vec<Hash> = receipts
            .iter()
            .map(|b| leaf_hash(&b.signing_bytes()))
            .collect();
        let head = BatchHead {
            receiver: key.party.clone(),
            at,
            size: receipts.len() as u64,
            root: hex::encode(root_from_leaves(&leaves)),
        };
        let signature = key.sign_b64(&head.signing_bytes());
        Self {
            head,
            receipts,
            signature,
            tree_head,
        }
    }

    /// Parses another party's bytes; size-limited, never panics.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() > ENCODED_BYTES_MAX {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// Checks the one signature against any of `keys` and that the head covers exactly
    /// these bodies, all from the signer; then splits the batch into receipts that
    /// each verify alone ([`Receipt::verify`]). Nothing is returned unless all of it
    /// holds: one altered body refuses the whole batch.
    pub fn verify_split(self, keys: &[PublicKey]) -> Result<Vec<Receipt>, EnvelopeError> {
        let bad = |why: &str| Err(EnvelopeError::Malformed(why.to_owned()));
        if self.head.size != self.receipts.len() as u64 {
            return bad("receipt batch head counts another number of receipts");
        }
        if self
            .receipts
            .iter()
            .any(|b| b.receiver != self.head.receiver)
        {
            return bad("receipt batch holds receipts of another receiver");
        }
        let leaves: Vec<Hash> = self
            .receipts
            .iter()
            .map(|b| leaf_hash(&b.signing_bytes()))
            .collect();
        let (root, paths) = root_and_inclusion_proofs(&leaves);
        if parse_hash(&self.head.root)? != root {
            return bad("receipt batch head does not cover these receipts");
        }
        let signed = self.head.signing_bytes();
        let mut last = KeyError::BadSignature;
        if !keys
            .iter()
            .any(|k| match k.verify_b64(&signed, &self.signature) {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            })
        {
            return Err(EnvelopeError::Signature {
                party: self.head.receiver.to_string(),
                source: last,
            });
        }
        let head = self.head;
        let signature = self.signature;
        Ok(self
            .receipts
            .into_iter()
            .zip(paths)
            .enumerate()
            .map(|(index, (body, path))| Receipt {
                body,
                signature: signature.clone(),
                batch: Some(BatchProof {
                    head: head.clone(),
                    index: index as u64,
                    path: path.iter().map(hex::encode).collect(),
                }),
            })
            .collect())
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

    #[test]
    fn time_ordered_ids_sort_by_creation_and_keep_80_random_bits() {
        let at = |ms: i64| Timestamp::from_millisecond(ms).unwrap();
        let a = EnvelopeId::time_ordered(at(1_790_000_000_000), [0xff; 16]);
        let b = EnvelopeId::time_ordered(at(1_790_000_000_001), [0x00; 16]);
        assert!(a.as_str() < b.as_str(), "{a} then {b}");
        // 1_790_000_000_000 ms is 0x01a0_c450_6c00.
        assert_eq!(a.as_str(), "01a0c4506c00ffffffffffffffffffff");
        assert_eq!(EnvelopeId::parse(a.as_str()).unwrap(), a);
        let early = EnvelopeId::time_ordered(at(-5), [7; 16]);
        assert_eq!(early.as_str(), "00000000000007070707070707070707");
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

    /// An envelope as the receiver keeps it: sent in a batch of one, checked, split.
    fn sealed(h: Header, body: &str, key: &PartyKey) -> Envelope {
        let env = Envelope::unsigned(h, body.to_owned()).unwrap();
        let at = "2019-11-22T12:00:00Z".parse().unwrap();
        let (env, digest) = EnvelopeBatch::sign(vec![env], at, key)
            .verify_split(&[key.public()])
            .remove(0);
        assert_eq!(digest, Ok(env.digest()));
        env
    }

    #[test]
    fn sealed_envelopes_verify_and_tampering_fails() {
        let usa = key("USA", 1);
        let env = sealed(header(), "report", &usa);
        env.verify(&usa.public()).unwrap();
        let back = Envelope::from_json(env.to_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        back.verify(&usa.public()).unwrap();

        let mut t = env.clone();
        t.body.push('!');
        assert_eq!(t.verify(&usa.public()), Err(EnvelopeError::BodyHash));
        let mut t = env.clone();
        t.header.label = "USA:CONFIDENTIAL".parse().unwrap();
        // The altered header is no longer the leaf its batch signed.
        assert!(matches!(
            t.verify(&usa.public()),
            Err(EnvelopeError::Malformed(m)) if m.contains("not in its batch")
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
        let env = sealed(header(), "report", &usa);
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
        let other = sealed(
            Header {
                id: EnvelopeId::from_random([8; 16]),
                ..header()
            },
            "x",
            &usa,
        );
        assert!(r.verify(&rok.public(), &other).is_err());
        let back = Receipt::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    fn stored_body(env: &Envelope, receiver: &str) -> ReceiptBody {
        ReceiptBody {
            envelope_id: env.header.id.clone(),
            envelope_digest: env.digest(),
            receiver: PartyId::new(receiver).unwrap(),
            kind: ReceiptKind::Stored,
            at: "2019-11-22T12:00:01Z".parse().unwrap(),
            receiver_label: Some("ROK:II급 비밀".parse().unwrap()),
            reasons: vec![],
            acknowledged_by: None,
            tree_head: None,
        }
    }

    fn envelopes(n: u8) -> Vec<Envelope> {
        let usa = key("USA", 1);
        (0..n)
            .map(|i| {
                sealed(
                    Header {
                        id: EnvelopeId::from_random([i; 16]),
                        ..header()
                    },
                    &format!("report {i}"),
                    &usa,
                )
            })
            .collect()
    }

    fn batch(envs: &[Envelope], rok: &PartyKey) -> ReceiptBatch {
        let at = "2019-11-22T12:00:01Z".parse().unwrap();
        let sth = SignedTreeHead::sign(
            "ROK",
            TreeHead {
                size: 3,
                root: [7; 32],
                timestamp_ms: 1,
            },
            rok,
        );
        ReceiptBatch::sign(
            envs.iter().map(|e| stored_body(e, "ROK")).collect(),
            at,
            Some(sth),
            rok,
        )
    }

    #[test]
    fn a_batch_receipt_splits_into_receipts_that_each_verify_alone() {
        let rok = key("ROK", 3);
        for n in [1u8, 2, 5, 32] {
            let envs = envelopes(n);
            let b = batch(&envs, &rok);
            let wire = ReceiptBatch::from_json(b.to_json().as_bytes()).unwrap();
            assert_eq!(wire, b);
            wire.tree_head
                .as_ref()
                .unwrap()
                .verify(&rok.public())
                .unwrap();
            let receipts = wire
                .verify_split(&[key("X", 9).public(), rok.public()])
                .unwrap();
            assert_eq!(receipts.len(), envs.len());
            for (r, env) in receipts.iter().zip(&envs) {
                // Stored and read back alone, without the rest of the batch.
                let alone = Receipt::from_json(r.to_json().as_bytes()).unwrap();
                alone.verify(&rok.public(), env).unwrap();
                assert!(alone.verify(&key("USA", 1).public(), env).is_err());
            }
            // A receipt is bound to its own envelope, not a neighbour's.
            if n > 1 {
                assert!(receipts[0].verify(&rok.public(), &envs[1]).is_err());
            }
        }
    }

    #[test]
    fn a_tampered_batch_is_refused_whole() {
        let rok = key("ROK", 3);
        let envs = envelopes(5);
        let good = batch(&envs, &rok);

        let mut t = good.clone();
        t.receipts[2].kind = ReceiptKind::Refused;
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.receipts[4].envelope_digest = envs[0].digest();
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.receipts.swap(0, 1);
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.receipts.pop();
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.head.size = 4;
        t.receipts.pop();
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.head.at = "2019-11-22T12:00:02Z".parse().unwrap();
        assert!(t.verify_split(&[rok.public()]).is_err());
        let mut t = good.clone();
        t.receipts[1].receiver = PartyId::new("JPN").unwrap();
        assert!(t.verify_split(&[rok.public()]).is_err());
        assert!(
            good.clone()
                .verify_split(&[key("USA", 1).public()])
                .is_err()
        );
        assert!(good.clone().verify_split(&[]).is_err());

        // One receipt taken out of the batch and altered no longer verifies.
        let receipts = good.verify_split(&[rok.public()]).unwrap();
        let mut r = receipts[3].clone();
        r.body.receiver_label = None;
        assert!(r.verify(&rok.public(), &envs[3]).is_err());
        let mut r = receipts[3].clone();
        if let Some(p) = r.batch.as_mut() {
            p.index = 2;
        }
        assert!(r.verify(&rok.public(), &envs[3]).is_err());
        let mut r = receipts[3].clone();
        if let Some(p) = r.batch.as_mut() {
            p.path[0] = hex::encode([0u8; 32]);
        }
        assert!(r.verify(&rok.public(), &envs[3]).is_err());
        let mut r = receipts[3].clone();
        r.batch = None;
        assert!(r.verify(&rok.public(), &envs[3]).is_err());
    }

    fn unsigned(n: u8) -> Vec<Envelope> {
        (0..n)
            .map(|i| {
                Envelope::unsigned(
                    Header {
                        id: EnvelopeId::from_random([i; 16]),
                        ..header()
                    },
                    format!("report {i}"),
                )
                .unwrap()
            })
            .collect()
    }

    fn sent(n: u8, usa: &PartyKey) -> EnvelopeBatch {
        let at = "2019-11-22T12:00:00Z".parse().unwrap();
        EnvelopeBatch::sign(unsigned(n), at, usa)
    }

    #[test]
    fn an_envelope_batch_splits_into_envelopes_that_each_verify_alone() {
        let usa = key("USA", 1);
        for n in [1u8, 2, 5, 32] {
            let wire = sent(n, &usa);
            let text = wire.to_json();
            // The envelopes cross without a signature or proof of their own.
            assert_eq!(text.matches("\"signature\"").count(), 1, "{text}");
            assert!(!text.contains("\"batch\""), "{text}");
            let back = EnvelopeBatch::from_json(text.as_bytes()).unwrap();
            assert_eq!(back, wire);
            let split = back.verify_split(&[key("X", 9).public(), usa.public()]);
            assert_eq!(split.len(), n as usize);
            for (i, (env, digest)) in split.iter().enumerate() {
                assert_eq!(digest.as_deref(), Ok(env.digest().as_str()));
                assert_eq!(env.digest(), unsigned(n)[i].digest());
                // Stored and read back alone, without the rest of the batch.
                let alone = Envelope::from_json(env.to_json().as_bytes()).unwrap();
                alone.verify(&usa.public()).unwrap();
                assert!(alone.verify(&key("USA", 2).public()).is_err());
            }
            if n > 1 {
                // A proof names its own place in the batch, not a neighbour's.
                let mut e = split[0].0.clone();
                e.batch = split[1].0.batch.clone();
                assert!(e.verify(&usa.public()).is_err());
            }
        }
    }

    #[test]
    fn a_tampered_envelope_batch_is_refused_whole_and_an_altered_body_alone() {
        let usa = key("USA", 1);
        let good = sent(5, &usa);
        let refused_whole = |b: EnvelopeBatch| {
            let split = b.verify_split(&[usa.public()]);
            split.iter().all(|(_, r)| r.is_err()) && !split.is_empty()
        };
        let mut t = good.clone();
        t.envelopes[2].header.label = "USA:CONFIDENTIAL".parse().unwrap();
        assert!(refused_whole(t));
        let mut t = good.clone();
        t.envelopes.swap(0, 1);
        assert!(refused_whole(t));
        let mut t = good.clone();
        t.head.size = 4;
        t.envelopes.pop();
        assert!(refused_whole(t));
        let mut t = good.clone();
        t.envelopes.pop();
        assert!(refused_whole(t));
        let mut t = good.clone();
        t.head.at = "2019-11-22T12:00:02Z".parse().unwrap();
        assert!(refused_whole(t));
        assert!(refused_whole(
            good.clone().clone_with_keys_of(&key("USA", 2))
        ));

        // A body altered after signing: its header still matches, so only it is refused.
        let mut t = good.clone();
        t.envelopes[3].body.push('!');
        let split = t.verify_split(&[usa.public()]);
        for (i, (_, r)) in split.iter().enumerate() {
            assert_eq!(r.is_err(), i == 3, "{i}: {r:?}");
        }
        assert_eq!(split[3].1, Err(EnvelopeError::BodyHash));

        // Signed by USA, but one envelope claims to come from another party.
        let mut envs = unsigned(3);
        envs[1].header.from = DeskId::new("JPN.intel").unwrap();
        let at = "2019-11-22T12:00:00Z".parse().unwrap();
        let split = EnvelopeBatch::sign(envs, at, &usa).verify_split(&[usa.public()]);
        assert!(split[0].1.is_ok() && split[1].1.is_err() && split[2].1.is_ok());

        // One envelope taken out of the batch and altered no longer verifies.
        let split = good.verify_split(&[usa.public()]);
        let mut e = split[4].0.clone();
        e.header.precedence = Precedence::Routine;
        assert!(e.verify(&usa.public()).is_err());
        let mut e = split[4].0.clone();
        if let Some(p) = e.batch.as_mut() {
            p.path[0] = hex::encode([0u8; 32]);
        }
        assert!(e.verify(&usa.public()).is_err());
        let mut e = split[4].0.clone();
        e.batch = None;
        assert!(e.verify(&usa.public()).is_err());
        let mut e = split[4].0.clone();
        e.signature = sent(5, &key("USA", 2)).signature;
        assert!(e.verify(&usa.public()).is_err());
    }

    proptest::proptest! {
        // Each case signs and checks a batch of up to 39: 64 cases keep it quick.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whichever envelope of a batch is altered after signing, and however: an
        /// altered body refuses that envelope alone, an altered header the whole
        /// batch; whatever is trusted verifies alone once stored and read back.
        #[test]
        fn any_alteration_after_signing_is_caught(n in 1u8..40, which in 0usize..40, what in 0u8..4) {
            let usa = key("USA", 1);
            let mut b = sent(n, &usa);
            let i = which % usize::from(n);
            let env = &mut b.envelopes[i];
            match what {
                0 => env.body.push('!'),
                1 => env.header.precedence = Precedence::Routine,
                2 => env.header.to = DeskId::new("JPN.intel").unwrap(),
                _ => env.header.reply_to = Some(EnvelopeId::from_random([0xee; 16])),
            }
            let split = b.verify_split(&[usa.public()]);
            proptest::prop_assert_eq!(split.len(), usize::from(n));
            for (j, (env, checked)) in split.iter().enumerate() {
                let refused = if what == 0 { j == i } else { true };
                proptest::prop_assert_eq!(checked.is_err(), refused, "{} of {}", j, n);
                if checked.is_ok() {
                    let kept = Envelope::from_json(env.to_json().as_bytes()).unwrap();
                    proptest::prop_assert!(kept.verify(&usa.public()).is_ok());
                }
            }
        }
    }

    impl EnvelopeBatch {
        /// The same envelopes and head, signed by another key.
        fn clone_with_keys_of(mut self, other: &PartyKey) -> Self {
            self.signature = other.sign_b64(&self.head.signing_bytes());
            self
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{}", b"null", b"\xff\xfe", b"{\"header\":1}"] {
            assert!(Envelope::from_json(bytes).is_err());
            assert!(EnvelopeBatch::from_json(bytes).is_err());
            assert!(Receipt::from_json(bytes).is_err());
            assert!(ReceiptBatch::from_json(bytes).is_err());
        }
        assert!(EnvelopeId::parse("XYZ").is_err());
        assert!(EnvelopeId::parse(&"a".repeat(32)).is_ok());
    }
}
