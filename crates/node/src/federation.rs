//! The federation API peers call over mutual TLS: envelopes in, receipts out;
//! acknowledgement receipts; signed heartbeats; and settling, where a sender asks
//! about envelopes it sent but can no longer send, and gets a signed answer for each
//! (a receipt if this node holds it, otherwise "not held", after which this node
//! refuses that id for good).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jiff::Timestamp;
use liaison_core::audit::AuditEvent;
use liaison_core::canonical::canonical_json;
use liaison_core::delivery::{Arrival, on_arrival};
use liaison_core::envelope::{
    ENCODED_BYTES_MAX, Envelope, EnvelopeBatch, EnvelopeId, Receipt, ReceiptBatch, ReceiptBody,
    ReceiptKind, SignedTreeHead,
};
use liaison_core::ids::PartyId;
use liaison_core::label::Label;
use liaison_core::precedence::Precedence;
use liaison_link::{PeerParty, PeerStanding, Standing};
use liaison_store::{InboxRow, Store};
use serde::{Deserialize, Serialize};

use crate::metrics::{add, inc};
use crate::node::Node;

/// Envelopes accepted in one request.
pub const FEDERATION_BATCH_MAX: usize = 1024;

/// Where a sender asks about envelopes it sent but can no longer send.
pub const SETTLE_PATH: &str = "/federation/v1/settle";
const ACKS_PATH: &str = "/federation/v1/acks";

/// A sender's question: does the receiver hold these envelopes (by id, and the
/// digest the receipt must name)? No content crosses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    pub envelopes: Vec<SettleQuestion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SettleQuestion {
    pub id: EnvelopeId,
    pub digest: String,
}

/// Acknowledgement receipts, each signed on its own (a person acknowledges one
/// message at a time).
#[derive(Debug, Serialize, Deserialize)]
pub struct AckBatch {
    pub receipts: Vec<Receipt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub from: String,
    pub to: String,
    pub agreement: String,
    pub channel: String,
    pub nonce: String,
    pub sent_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub body: HeartbeatBody,
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReplyBody {
    pub nonce: String,
    pub responder: String,
    pub at: Timestamp,
    pub tree_head: Option<SignedTreeHead>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReply {
    pub body: HeartbeatReplyBody,
    pub signature: String,
}

pub fn heartbeat_bytes<T: Serialize>(tag: &str, body: &T) -> Vec<u8> {
    let mut out = format!("liaison-{tag}-v1\n").into_bytes();
    out.extend(canonical_json(body));
    out
}

#[derive(Debug)]
pub struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router<S: Store>(node: Arc<Node<S>>) -> Router {
    Router::new()
        .route("/federation/v1/envelopes", post(envelopes::<S>))
        .route(ACKS_PATH, post(acks::<S>))
        .route("/federation/v1/heartbeat", post(heartbeat::<S>))
        .route(SETTLE_PATH, post(settle::<S>))
        .layer(axum::middleware::from_fn(settling_only_settles))
        .layer(DefaultBodyLimit::max(ENCODED_BYTES_MAX * 4))
        .with_state(node)
}

/// A peer pinned only for settling (no agreement in force with it now) may ask about
/// earlier envelopes and return acknowledgements of them; nothing new crosses.
async fn settling_only_settles(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let settling = req
        .extensions()
        .get::<PeerStanding>()
        .is_some_and(|s| s.0 == Standing::Settling);
    let path = req.uri().path();
    if settling && path != SETTLE_PATH && path != ACKS_PATH {
        let party = req
            .extensions()
            .get::<PeerParty>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        return Problem(
            StatusCode::FORBIDDEN,
            format!(
                "no agreement in force between `{party}` and us: only questions about \
                 envelopes sent earlier are answered"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Parses, verifies and decides an arrived batch (pure CPU, no IO).
fn check_batch<S: Store>(node: &Node<S>, peer: &str, body: &[u8]) -> Result<Checked, Problem> {
    let batch = EnvelopeBatch::from_json(body).map_err(|e| {
        Problem(
            StatusCode::BAD_REQUEST,
            format!("not an envelope batch: {e}"),
        )
    })?;
    within_batch_max(batch.envelopes.len())?;
    if batch.head.sender.as_str() != peer {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            format!(
                "envelope batch signed as `{}` on `{peer}`'s link",
                batch.head.sender
            ),
        ));
    }
    let peer_id = PartyId::new(peer).map_err(|e| Problem(StatusCode::FORBIDDEN, e.to_string()))?;
    let keys = node.party_keys(peer);
    let set = node.agreements();
    let now = node.now();
    let now_ms = now.as_millisecond();
    let consents = node.consents();
    let mut rows = Vec::new();
    let mut audit = Vec::new();
    let mut audit_ends = Vec::new();
    let mut outcomes: Vec<(EnvelopeId, String, Outcome)> = Vec::new();
    // One signature for the batch; each envelope comes back with its proof attached,
    // so the stored copy verifies alone.
    for (env, checked) in batch.verify_split(&keys) {
        let digest = match checked {
            Ok(d) => d,
            Err(e) => {
                let why = if keys.is_empty() {
                    format!("no key pinned for `{peer}`")
                } else {
                    e.to_string()
                };
                inc(&node.metrics.tampered);
                tracing::warn!(%peer, id = %env.header.id, "tampered envelope refused: {why}");
                audit.push(node.audit(AuditEvent::TamperedEnvelope {
                    peer: peer.to_owned(),
                    detail: format!("{}: {why}", env.header.id),
                }));
                outcomes.push((
                    env.header.id.clone(),
                    env.digest(),
                    Outcome::Unverified(vec![format!("envelope refused: {why}")]),
                ));
                continue;
            }
        };
        match on_arrival(&set, &node.party, &peer_id, &env, &consents, now) {
            Arrival::Accept { receiver_label, .. } => {
                // Kept whole (signature and batch proof too) but for the body, which
                // has a column of its own: stored once, not twice.
                let mut kept = env;
                let body = std::mem::take(&mut kept.body);
                let envelope_json = kept.to_json();
                let h = kept.header;
                audit.push(node.audit(AuditEvent::MessageReceived {
                    id: h.id.to_string(),
                    from: h.from.to_string(),
                    to: h.to.to_string(),
                    receiver_label: receiver_label.to_string(),
                    precedence: h.precedence.to_string(),
                }));
                audit_ends.push(audit.len());
                rows.push(InboxRow {
                    seq: 0,
                    envelope_id: h.id.to_string(),
                    from_desk: h.from.to_string(),
                    to_desk: h.to.to_string(),
                    sender_party: peer.to_owned(),
                    precedence: h.precedence.rank(),
                    received_ms: now_ms,
                    envelope_json,
                    receiver_label: receiver_label.to_string(),
                    body,
                    acked_ms: None,
                    acked_by: None,
                    ack_receipt_json: None,
                    escalated_ms: None,
                });
                outcomes.push((h.id, digest, Outcome::Stored(receiver_label)));
            }
            Arrival::Refuse { reasons } => {
                inc(&node.metrics.arrivals_refused);
                tracing::warn!(%peer, id = %env.header.id, "arrival refused by our own decision: {}", reasons.join("; "));
                audit.push(node.audit(AuditEvent::ArrivalRefused {
                    id: env.header.id.to_string(),
                    from: env.header.from.to_string(),
                    reasons: reasons.clone(),
                }));
                outcomes.push((env.header.id, digest, Outcome::Refused(reasons)));
            }
        }
    }
    Ok(Checked {
        rows,
        audit,
        audit_ends,
        outcomes,
        now,
    })
}

/// What checking an arrived batch decided: inbox rows and audit entries to commit,
/// and each envelope's (id, digest, outcome) to receipt.
struct Checked {
    rows: Vec<InboxRow>,
    audit: Vec<Vec<u8>>,
    /// For each row, the end of the audit entries up to and including its own: a
    /// part of the batch committed alone takes its rows' entries with it.
    audit_ends: Vec<usize>,
    outcomes: Vec<(EnvelopeId, String, Outcome)>,
    now: Timestamp,
}

/// What this node decided about one arrived envelope.
enum Outcome {
    /// To be stored, in this label.
    Stored(Label),
    /// Signed by the sender, refused by this node's agreements now. If an earlier
    /// copy is held (it was lawful when it came), the answer is that copy's receipt.
    Refused(Vec<String>),
    /// Not signed by the sender (or unreadable): refused without looking further.
    Unverified(Vec<String>),
}

/// A receipt body from this node at `at`.
fn receipt_body<S: Store>(
    node: &Node<S>,
    envelope_id: EnvelopeId,
    envelope_digest: String,
    at: Timestamp,
    outcome: Result<Label, Vec<String>>,
) -> ReceiptBody {
    let (kind, receiver_label, reasons) = match outcome {
        Ok(l) => (ReceiptKind::Stored, Some(l), Vec::new()),
        Err(r) => (ReceiptKind::Refused, None, r),
    };
    ReceiptBody {
        envelope_id,
        envelope_digest,
        receiver: node.party.clone(),
        kind,
        at,
        receiver_label,
        reasons,
        acknowledged_by: None,
        tree_head: None,
    }
}

/// The answer about an envelope this node holds, as (digest, outcome): stored, naming
/// the held copy's digest and label (the copy the receiver has is the one that
/// counts); refused, naming the `asked` digest, if the held copy cannot be read.
fn held_answer(row: &InboxRow, asked: String) -> (String, Result<Label, Vec<String>>) {
    let env = match Envelope::from_json(row.envelope_json.as_bytes()) {
        Ok(env) => env,
        Err(e) => return (asked, Err(vec![format!("held copy is unreadable: {e}")])),
    };
    match row.receiver_label.parse::<Label>() {
        Ok(label) => (env.digest(), Ok(label)),
        Err(e) => (
            asked,
            Err(vec![format!("held copy's label is unreadable: {e}")]),
        ),
    }
}

/// Refuses a request listing more than [`FEDERATION_BATCH_MAX`] envelopes.
fn within_batch_max(n: usize) -> Result<(), Problem> {
    if n > FEDERATION_BATCH_MAX {
        return Err(Problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{n} envelopes, expected at most {FEDERATION_BATCH_MAX}"),
        ));
    }
    Ok(())
}

/// A store failure, as the peer sees it: try again later. Logged here too: the peer
/// retries quietly, and an operator must learn that this node refuses deliveries.
fn unavailable(e: liaison_store::StoreError) -> Problem {
    tracing::error!("refusing a federation request, the store failed: {e}");
    Problem(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot store: {e}"),
    )
}

async fn envelopes<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Extension(PeerParty(peer)): Extension<PeerParty>,
    body: axum::body::Bytes,
) -> Result<Json<ReceiptBatch>, Problem> {
    // Parsing and verifying a bulk batch is tens of milliseconds of CPU: on the
    // blocking pool it does not hold a runtime worker that a FLASH is waiting for.
    let weight = crate::cpu::weight_of_batch(body.len());
    let checker = node.clone();
    let sender = peer.clone();
    let Checked {
        rows,
        audit,
        audit_ends,
        outcomes,
        now,
    } = crate::cpu::run(weight, move || check_batch(&checker, &sender, &body))
        .await
        .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    // Bulk writes queue for the one writer one at a time, so an urgent batch waits
    // behind at most one of them.
    let urgent = rows
        .iter()
        .any(|r| r.precedence >= Precedence::Immediate.rank());
    let turn = if urgent {
        None
    } else {
        node.bulk_writes.acquire().await.ok()
    };
    // Durable before any receipt is signed (rule 6).
    if urgent {
        node.note_urgent();
    }
    let part = if urgent || !node.urgent_about() {
        rows.len()
    } else {
        BULK_PART_WHILE_URGENT
    };
    let fresh = insert_in_parts(&node, &rows, &audit, &audit_ends, part).await;
    drop(turn);
    let fresh = fresh.map_err(unavailable)?;
    let new = fresh.iter().filter(|b| **b).count() as u64;
    add(&node.metrics.received, new);
    add(&node.metrics.duplicates, fresh.len() as u64 - new);
    // An envelope not stored now is either held already (a retry after a lost
    // receipt), or refused for good earlier; one refused by our agreements now may
    // still be held from when it was lawful. The store answers which, and refuses
    // the rest for good, so the sender is never told "refused" about a message this
    // node holds (nor "stored" about one it will never hold).
    let not_new: std::collections::HashSet<&str> = rows
        .iter()
        .zip(&fresh)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.envelope_id.as_str())
        .collect();
    let ask: Vec<String> = outcomes
        .iter()
        .filter(|(id, _, o)| match o {
            Outcome::Stored(_) => not_new.contains(id.as_str()),
            Outcome::Refused(_) => true,
            Outcome::Unverified(_) => false,
        })
        .map(|(id, _, _)| id.to_string())
        .collect();
    let held: std::collections::HashMap<String, Option<InboxRow>> = if ask.is_empty() {
        std::collections::HashMap::new()
    } else {
        let answers = node
            .store
            .inbox_settle(
                &peer,
                &ask,
                now.as_millisecond(),
                "refused on arrival by this node's agreements",
                &[],
            )
            .await
            .map_err(unavailable)?;
        ask.into_iter().zip(answers).collect()
    };
    let me = node.party.to_string();
    let bodies = outcomes
        .into_iter()
        .map(|(envelope_id, digest, outcome)| {
            let (digest, outcome) = match (held.get(envelope_id.as_str()), outcome) {
                (Some(Some(row)), _) => held_answer(row, digest),
                (Some(None), Outcome::Stored(_)) => (
                    digest,
                    Err(vec![format!(
                        "`{me}` answered earlier that it never received this envelope, and refuses it for good"
                    )]),
                ),
                (_, Outcome::Stored(l)) => (digest, Ok(l)),
                (_, Outcome::Refused(r) | Outcome::Unverified(r)) => (digest, Err(r)),
            };
            receipt_body(&node, envelope_id, digest, now, outcome)
        })
        .collect();
    // One signature for the whole batch; each receipt stays verifiable alone.
    let (key, tree_head) = (node.key.clone(), node.latest_tree_head());
    let receipts = crate::cpu::run(weight, move || {
        ReceiptBatch::sign(bodies, now, tree_head, &key)
    })
    .await
    .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if new > 0 {
        crate::events::publish(&node, "inbox");
    }
    Ok(Json(receipts))
}

/// Rows of a bulk batch committed together while urgent traffic is about: an urgent
/// write waits for the store's one writer to finish at most this many rows.
pub const BULK_PART_WHILE_URGENT: usize = 8;

/// Inserts `rows` with their audit entries (see [`Checked::audit_ends`]), `part` rows
/// to a transaction, in order. Parts committed before a failure stay: each row is
/// stored with its own audit entry, and the sender, with no receipt, sends the batch
/// again, when the stored rows are answered as held.
async fn insert_in_parts<S: Store>(
    node: &Node<S>,
    rows: &[InboxRow],
    audit: &[Vec<u8>],
    audit_ends: &[usize],
    part: usize,
) -> Result<Vec<bool>, liaison_store::StoreError> {
    let mut fresh = Vec::with_capacity(rows.len());
    for (r, a) in parts(rows.len(), audit_ends, audit.len(), part) {
        fresh.extend(
            node.store
                .inbox_insert_batch(
                    rows.get(r).unwrap_or_default(),
                    audit.get(a).unwrap_or_default(),
                )
                .await?,
        );
    }
    Ok(fresh)
}

/// Cuts `rows` rows and `entries` audit entries into parts of at most `part` rows, as
/// (rows, entries) ranges that cover both in order; `audit_ends[i]` is the end of row
/// `i`'s entries, so each row's entry is in its part. Entries after the last row's
/// go with the last part; with no rows, one part takes every entry.
fn parts(
    rows: usize,
    audit_ends: &[usize],
    entries: usize,
    part: usize,
) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let part = part.max(1);
    let mut out = Vec::with_capacity(rows.div_ceil(part).max(1));
    let (mut row, mut entry) = (0, 0);
    loop {
        let to_row = (row + part).min(rows);
        let to_entry = if to_row == rows {
            entries
        } else {
            audit_ends
                .get(to_row - 1)
                .copied()
                .unwrap_or(entries)
                .clamp(entry, entries)
        };
        out.push((row..to_row, entry..to_entry));
        if to_row == rows {
            return out;
        }
        (row, entry) = (to_row, to_entry);
    }
}

/// Answers a sender about envelopes it sent and can no longer send: a stored receipt
/// for each one held, a refused receipt ("not held") for each other, which this node
/// then refuses for good, in one signed batch.
async fn settle<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Extension(PeerParty(peer)): Extension<PeerParty>,
    body: axum::body::Bytes,
) -> Result<Json<ReceiptBatch>, Problem> {
    let req: SettleRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem(
            StatusCode::BAD_REQUEST,
            format!("not a settle request: {e}"),
        )
    })?;
    within_batch_max(req.envelopes.len())?;
    let now = node.now();
    let ids: Vec<String> = req.envelopes.iter().map(|q| q.id.to_string()).collect();
    let audit = node.audit(AuditEvent::EnvelopesSettled {
        peer: peer.clone(),
        ids: ids.clone(),
    });
    let answers = node
        .store
        .inbox_settle(
            &peer,
            &ids,
            now.as_millisecond(),
            &format!("`{peer}` asked at {now}; not held"),
            &[audit],
        )
        .await
        .map_err(unavailable)?;
    let me = node.party.to_string();
    let bodies = req
        .envelopes
        .into_iter()
        .zip(answers)
        .map(|(q, held)| {
            let (digest, outcome) = match &held {
                Some(row) => held_answer(row, q.digest),
                None => (
                    q.digest,
                    Err(vec![format!(
                        "`{me}` never received this envelope from `{peer}`, and refuses it from now on"
                    )]),
                ),
            };
            receipt_body(&node, q.id, digest, now, outcome)
        })
        .collect();
    let (key, tree_head) = (node.key.clone(), node.latest_tree_head());
    let receipts = crate::cpu::run(crate::cpu::Weight::Heavy, move || {
        ReceiptBatch::sign(bodies, now, tree_head, &key)
    })
    .await
    .map_err(|e| Problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(receipts))
}

async fn acks<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Extension(PeerParty(peer)): Extension<PeerParty>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    let batch: AckBatch = serde_json::from_slice(&body)
        .map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("not a receipt batch: {e}")))?;
    let keys = node.party_keys(&peer);
    let mut accepted = 0u64;
    for r in batch.receipts {
        if r.body.kind != ReceiptKind::Acknowledged || r.body.receiver.as_str() != peer {
            continue;
        }
        let Some(row) = node
            .store
            .outbox_get(r.body.envelope_id.as_str())
            .await
            .map_err(|e| Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        else {
            continue;
        };
        let Ok(env) = Envelope::from_json(row.envelope_json.as_bytes()) else {
            continue;
        };
        if !keys.iter().any(|k| r.verify(k, &env).is_ok()) {
            tracing::warn!(%peer, id = %r.body.envelope_id, "acknowledgement receipt does not verify");
            continue;
        }
        let by = r.body.acknowledged_by.clone().unwrap_or_default();
        let audit = node.audit(AuditEvent::AckReceiptReceived {
            id: r.body.envelope_id.to_string(),
            peer: peer.clone(),
            by,
        });
        let newly = node
            .store
            .outbox_set_acked(
                r.body.envelope_id.as_str(),
                &r.to_json(),
                node.clock.now_ms(),
                &[audit],
            )
            .await
            .map_err(|e| Problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        if newly {
            inc(&node.metrics.acks_received);
            accepted += 1;
        }
    }
    if accepted > 0 {
        crate::events::publish(&node, "outbox");
    }
    Ok(Json(serde_json::json!({ "accepted": accepted })))
}

async fn heartbeat<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Extension(PeerParty(peer)): Extension<PeerParty>,
    body: axum::body::Bytes,
) -> Result<Json<HeartbeatReply>, Problem> {
    let hb: Heartbeat = serde_json::from_slice(&body)
        .map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("not a heartbeat: {e}")))?;
    let keys = node.party_keys(&peer);
    let bytes = heartbeat_bytes("heartbeat", &hb.body);
    if !hb.body.from.starts_with(&format!("{peer}."))
        || !keys
            .iter()
            .any(|k| k.verify_b64(&bytes, &hb.signature).is_ok())
    {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "heartbeat signature does not verify".into(),
        ));
    }
    let body = HeartbeatReplyBody {
        nonce: hb.body.nonce,
        responder: node.party.to_string(),
        at: node.now(),
        tree_head: node.latest_tree_head(),
    };
    let signature = node
        .key
        .sign_b64(&heartbeat_bytes("heartbeat-reply", &body));
    Ok(Json(HeartbeatReply { body, signature }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Parts cover every row and entry once, in order, none over `part` rows, and
        /// each row's own entry lies in its part.
        #[test]
        fn parts_keep_each_row_with_its_audit_entry(
            // Entries before each row (tampered or refused envelopes) and after the last.
            before in proptest::collection::vec(0usize..3, 0..40),
            after in 0usize..3,
            part in 1usize..12,
        ) {
            let mut audit_ends = Vec::new();
            let mut entries = 0;
            for b in &before {
                entries += b + 1;
                audit_ends.push(entries);
            }
            entries += after;
            let rows = before.len();
            let cut = parts(rows, &audit_ends, entries, part);
            let (mut row, mut entry) = (0, 0);
            for (r, a) in &cut {
                prop_assert_eq!(r.start, row);
                prop_assert_eq!(a.start, entry);
                prop_assert!(r.len() <= part);
                for i in r.clone() {
                    prop_assert!(a.contains(&(audit_ends[i] - 1)));
                }
                (row, entry) = (r.end, a.end);
            }
            prop_assert_eq!(row, rows);
            prop_assert_eq!(entry, entries);
            prop_assert_eq!(cut.len(), rows.div_ceil(part).max(1));
        }
    }
}
