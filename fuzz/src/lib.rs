//! What each fuzz target does with its bytes: parse them the way Liaison parses bytes
//! from another party or a person, and, when they parse, use the result the way the
//! node does next (digest, verify, re-encode, decide). Any panic is a finding.
//!
//! The same functions are run over `corpus/` and `regressions/` by the stable test
//! `crates/node/tests/fuzz_corpus.rs`, which includes this file by path; so this file
//! depends only on what `liaison-node`'s tests can see (core, node, serde_json, jiff).

use liaison_core::envelope::{Envelope, EnvelopeBatch, Receipt, SignedTreeHead};
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::label::Label;
use liaison_core::merkle::{Hash, Proof, TreeHead};
use liaison_core::precedence::Precedence;
use liaison_core::release::{AgreementSet, ReleaseRequest, decide};
use liaison_core::signing::{PartyKey, PublicKey};

/// What a target does with one input.
pub type Check = fn(&[u8]);

/// Every target, by the directory name its corpus and regressions use.
pub const TARGETS: &[(&str, Check)] = &[
    ("agreement", agreement),
    ("label", label),
    ("envelope", envelope),
    ("receipt", receipt),
    ("tree_head", tree_head),
    ("merkle_proof", merkle_proof),
    ("node_config", node_config),
    ("api_bodies", api_bodies),
];

/// A fixed key: signatures in fuzz inputs are checked against it (and fail), which
/// still walks the decoding and verification paths.
pub fn fuzz_key() -> PartyKey {
    PartyKey::from_seed(party("AA"), [7u8; 32])
}

fn fuzz_public() -> PublicKey {
    fuzz_key().public()
}

fn party(s: &str) -> PartyId {
    match PartyId::new(s) {
        Ok(p) => p,
        Err(e) => unreachable!("fixed party id: {e:?}"),
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Instants worth asking about for any agreement.
fn probes() -> [jiff::Timestamp; 3] {
    [
        jiff::Timestamp::MIN,
        jiff::Timestamp::from_second(1_574_434_800).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        jiff::Timestamp::MAX,
    ]
}

/// An agreement file: parse, then everything a node does with an installed agreement.
pub fn agreement(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(a) = liaison_core::parse::parse_agreement("fuzz.toml", text) else {
        return;
    };
    let _ = liaison_core::canonical::agreement_digest(&a);
    let channel = a.channels.first().cloned();
    let first_level = a
        .classification
        .parties
        .first()
        .and_then(|s| s.levels.first().map(|l| Label::party(&s.party, &l.name)));
    let parties: Vec<PartyId> = a.parties.iter().map(|p| p.id.clone()).collect();
    let set = AgreementSet::new([a]);
    for c in set.iter() {
        for p in &parties {
            for t in probes() {
                let _ = c.participation(p, t);
            }
        }
    }
    if let (Some(ch), Some(label)) = (channel, first_level)
        && let (Some(from), Some(to)) = (ch.desks.first(), ch.desks.last())
    {
        for t in probes() {
            let req = ReleaseRequest {
                from,
                to,
                label: &label,
                originator: parties.last(),
                consents: &[],
            };
            let d = decide(&set, &req, t);
            let _ = d.reasons.iter().map(ToString::to_string).count();
        }
    }
}

/// A label as a person types it or a peer sends it.
pub fn label(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(l) = text.parse::<Label>() {
        let again: Result<Label, _> = l.to_string().parse();
        assert_eq!(again.as_ref().ok(), Some(&l), "label does not round-trip");
    }
}

/// An envelope from a peer: a batch as it crosses, or one envelope as it is kept.
pub fn envelope(data: &[u8]) {
    if let Ok(batch) = EnvelopeBatch::from_json(data) {
        for (env, checked) in batch.verify_split(&[fuzz_public()]) {
            if checked.is_ok() {
                // What a batch vouched for verifies alone, once stored and read back.
                let kept = Envelope::from_json(env.to_json().as_bytes());
                assert!(
                    kept.is_ok_and(|k| k.verify(&fuzz_public()).is_ok()),
                    "an envelope its batch vouched for does not verify alone"
                );
            }
        }
        return;
    }
    let Ok(env) = Envelope::from_json(data) else {
        return;
    };
    let _ = env.digest();
    let _ = env.verify(&fuzz_public());
    let json = env.to_json();
    match Envelope::from_json(json.as_bytes()) {
        Ok(again) => assert_eq!(again, env, "envelope does not round-trip"),
        Err(e) => panic!("re-encoded envelope does not parse: {e}"),
    }
}

/// A receipt from a peer, checked against an envelope of ours.
pub fn receipt(data: &[u8]) {
    let Ok(r) = Receipt::from_json(data) else {
        return;
    };
    let _ = r.body.signing_bytes();
    if let Some(env) = sample_envelope() {
        let _ = r.verify(&fuzz_public(), &env);
    }
    if let Some(sth) = &r.body.tree_head {
        let _ = sth.verify(&fuzz_public());
    }
    let _ = Receipt::from_json(r.to_json().as_bytes());
}

/// A signed tree head from a peer (heartbeats and receipts carry them).
pub fn tree_head(data: &[u8]) {
    let Ok(sth) = serde_json::from_slice::<SignedTreeHead>(data) else {
        return;
    };
    let _ = sth.verify(&fuzz_public());
    let _ = sth.head.signing_bytes(&sth.log_id);
}

/// A Merkle proof (`liaison audit check`, peers' consistency replies): the JSON shape,
/// verified against heads of the sizes it claims; a leading `0` byte instead feeds
/// the raw RFC 9162 verifiers sizes and hashes straight from the bytes.
pub fn merkle_proof(data: &[u8]) {
    if let Some((0, rest)) = data.split_first() {
        raw_proof(rest);
        return;
    }
    let Ok(proof) = serde_json::from_slice::<Proof>(data) else {
        return;
    };
    let head = |size| TreeHead {
        size,
        root: [0u8; 32],
        timestamp_ms: 0,
    };
    match &proof {
        Proof::Inclusion { log_id, size, .. } => {
            let _ = proof.verify_inclusion(log_id, &head(*size));
        }
        Proof::Consistency {
            log_id,
            old_size,
            new_size,
            ..
        } => {
            let _ = proof.verify_consistency(log_id, &head(*old_size), &head(*new_size));
        }
    }
    let _ = serde_json::to_string(&proof);
}

fn raw_proof(data: &[u8]) {
    let (nums, rest) = data.split_at(data.len().min(16));
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    for (i, byte) in nums.iter().enumerate() {
        if let Some(slot) = if i < 8 {
            a.get_mut(i)
        } else {
            b.get_mut(i - 8)
        } {
            *slot = *byte;
        }
    }
    let (x, y) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
    let hashes: Vec<Hash> = rest
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect();
    let root = hashes.first().copied().unwrap_or([0u8; 32]);
    let _ = liaison_core::merkle::verify_inclusion(&root, x, y, &hashes, &root);
    let _ = liaison_core::merkle::verify_consistency(x, y, &root, &root, &hashes);
    // Proofs built from these leaves must verify: generator and verifier agree.
    let n = hashes.len() as u64;
    if n > 0 {
        let root = liaison_core::merkle::root_from_leaves(&hashes);
        let index = x % n;
        if let Ok(p) = liaison_core::merkle::inclusion_proof(&hashes, index, n) {
            let leaf = hashes.get(index as usize).copied().unwrap_or_default();
            assert!(
                liaison_core::merkle::verify_inclusion(&leaf, index, n, &p, &root).is_ok(),
                "a generated inclusion proof does not verify"
            );
        }
        let old = 1 + y % n;
        if let Ok(p) = liaison_core::merkle::consistency_proof(&hashes, old, n) {
            let old_root = liaison_core::merkle::root_from_leaves(&hashes[..old as usize]);
            assert!(
                liaison_core::merkle::verify_consistency(old, n, &old_root, &root, &p).is_ok(),
                "a generated consistency proof does not verify"
            );
        }
    }
}

/// `node.toml`, written by a person.
pub fn node_config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(cfg) = liaison_node::config::Config::parse("node.toml", text) {
        let _ = cfg.peer_addresses(&cfg.party);
        let again = liaison_node::config::Config::parse("node.toml", &cfg.to_toml());
        assert_eq!(
            again.ok().as_ref(),
            Some(&cfg),
            "node.toml does not round-trip"
        );
    }
}

/// Request bodies the node parses: the local API (send, acknowledge) and the
/// federation API (envelope and receipt batches, heartbeats, consistency requests).
/// The first byte picks which; the rest is the body.
pub fn api_bodies(data: &[u8]) {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<liaison_node::node::SendRequest>(body) {
                // The checks the node makes before deciding, all on the person's text.
                let _ = DeskId::new(&req.from);
                let _ = DeskId::new(&req.to);
                let _ = req.label.parse::<Label>();
                let _ = req.precedence.parse::<Precedence>();
                if let Some(o) = &req.originator {
                    let _ = PartyId::new(o);
                }
                if let Some(r) = &req.reply_to {
                    let _ = liaison_core::envelope::EnvelopeId::parse(r);
                }
            }
        }
        1 => {
            let _ = serde_json::from_slice::<liaison_node::api::AckRequest>(body);
        }
        2 => {
            if let Ok(batch) = EnvelopeBatch::from_json(body) {
                let _ = batch.verify_split(&[fuzz_public()]);
            }
        }
        3 => {
            // A receiver's answer to an envelope batch: one signed head over the
            // receipts' Merkle root; and acknowledgements travelling back.
            if let Ok(batch) = liaison_core::envelope::ReceiptBatch::from_json(body) {
                let _ = batch.verify_split(&[fuzz_public()]);
            }
            let _ = serde_json::from_slice::<liaison_node::federation::AckBatch>(body);
        }
        4 => {
            if let Ok(hb) = serde_json::from_slice::<liaison_node::federation::Heartbeat>(body) {
                let _ = serde_json::to_vec(&hb);
            }
        }
        5 => {
            let _ = serde_json::from_slice::<liaison_node::audit::ConsistencyRequest>(body);
        }
        _ => {
            // A sender's question about envelopes it can no longer send.
            if let Ok(q) = serde_json::from_slice::<liaison_node::federation::SettleRequest>(body) {
                let _ = serde_json::to_vec(&q);
            }
        }
    }
}

/// A real envelope as its receiver keeps it (sent in a signed batch of one), the one
/// receipts in the corpus refer to.
pub fn sample_envelope() -> Option<Envelope> {
    let header = liaison_core::envelope::Header {
        id: liaison_core::envelope::EnvelopeId::from_random([1u8; 16]),
        from: DeskId::new("AA.x").ok()?,
        to: DeskId::new("BB.x").ok()?,
        originator: party("AA"),
        agreement: "fuzz".to_owned(),
        agreement_version: 1,
        channel: "c".to_owned(),
        label: "AA:SECRET".parse().ok()?,
        precedence: Precedence::Flash,
        created_at: jiff::Timestamp::from_second(1_574_434_800).ok()?,
        reply_to: None,
        body_sha256: String::new(),
    };
    let at = header.created_at;
    let env = Envelope::unsigned(header, "fuzz body".to_owned()).ok()?;
    let (env, checked) = EnvelopeBatch::sign(vec![env], at, &fuzz_key())
        .verify_split(&[fuzz_public()])
        .pop()?;
    checked.ok().map(|_| env)
}

/// A real batch of three envelopes as it crosses, signed by [`fuzz_key`].
pub fn sample_batch() -> Option<EnvelopeBatch> {
    let env = sample_envelope()?;
    let envs = (0u8..3)
        .map(|i| {
            let mut header = env.header.clone();
            header.id = liaison_core::envelope::EnvelopeId::from_random([i; 16]);
            Envelope::unsigned(header, format!("fuzz body {i}")).ok()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(EnvelopeBatch::sign(
        envs,
        env.header.created_at,
        &fuzz_key(),
    ))
}
