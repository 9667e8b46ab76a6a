//! The node's background machines: per-peer delivery, acknowledgements back to
//! senders, hotline heartbeats, FLASH escalation, agreement refresh and signed tree
//! heads. Each is a loop that asks the core what to do and does the IO.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use liaison_core::audit::AuditEvent;
use liaison_core::delivery::still_releasable;
use liaison_core::envelope::{
    Envelope, EnvelopeBatch, Receipt, ReceiptBatch, ReceiptKind, SignedTreeHead,
};
use liaison_core::hotline::flash_overdue;
use liaison_core::merkle::Hash;
use liaison_core::precedence::Precedence;
use liaison_store::{OutboxRow, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::federation::{
    Heartbeat, HeartbeatBody, HeartbeatReply, SETTLE_PATH, SettleQuestion, SettleRequest,
    heartbeat_bytes,
};
use crate::metrics::{add, inc};
use crate::node::Node;

/// How long a federation request may take before it counts as failed.
pub const FEDERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest real sleep of an idle loop; bounds how late a due retry can be noticed.
pub const IDLE_POLL: Duration = Duration::from_millis(100);
pub const ACK_BATCH_MAX: u32 = 256;
/// Pause after the store refused a write the lane needed (a full disk, say).
pub const STORE_RETRY: Duration = Duration::from_secs(1);

async fn idle(
    shutdown: &mut watch::Receiver<bool>,
    wake: Option<&tokio::sync::Notify>,
    d: Duration,
) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = async { match wake { Some(w) => w.notified().await, None => std::future::pending().await } } => *shutdown.borrow(),
    }
}

/// A delivery lane: FLASH and IMMEDIATE travel in their own lane so a bulk backlog in
/// flight never delays them; each lane keeps a bounded number of batches in flight.
#[derive(Debug, Clone, Copy)]
pub struct Lane {
    pub express: bool,
    pub precedence_min: u8,
    pub precedence_max: u8,
    pub in_flight_max: usize,
}

pub const EXPRESS: Lane = Lane {
    express: true,
    precedence_min: 2,
    precedence_max: 3,
    in_flight_max: 4,
};
pub const BULK: Lane = Lane {
    express: false,
    precedence_min: 0,
    precedence_max: 1,
    in_flight_max: 3,
};
/// Envelopes per express batch: small, so each is on the wire at once.
pub const EXPRESS_BATCH_MAX: u32 = 32;
/// Envelopes per bulk batch while urgent traffic is about: a bulk batch's writes hold
/// the store's one writer at both ends, and a FLASH write may have to wait for one.
pub const BULK_BATCH_WHILE_URGENT: u32 = crate::node::BATCH_WHILE_URGENT as u32;

/// How many envelopes a lane's next batch may hold. After a batch goes unanswered
/// (the peer was unreachable, say) and when the lane starts, batches start small and
/// double with each one answered, one at a time, up to the configured size: a peer
/// that returns is not handed several full batches at once, whose writes a FLASH
/// arriving just then would wait behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    size: u32,
    start: u32,
    max: u32,
}

impl Window {
    pub fn new(start: u32, max: u32) -> Self {
        let max = max.max(1);
        let start = start.clamp(1, max);
        Self {
            size: start,
            start,
            max,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether batches are still growing towards the full size.
    pub fn opening(&self) -> bool {
        self.size < self.max
    }

    pub fn answered(&mut self, ok: bool) {
        self.size = if ok {
            self.size.saturating_mul(2).min(self.max)
        } else {
            self.start
        };
    }
}

/// Sends one peer's queue for one lane, highest precedence first, in batches.
pub async fn deliver<S: Store>(
    node: Arc<Node<S>>,
    peer: String,
    lane: Lane,
    mut shutdown: watch::Receiver<bool>,
) {
    let batch_max = if lane.express {
        EXPRESS_BATCH_MAX
    } else {
        node.config.delivery.batch_max.max(1)
    };
    let wake = node.lane_wakes.get(&(peer.clone(), lane.express)).cloned();
    // Rows on the wire, by seq: left out of the next fetch so it takes the next batch.
    // Kept in memory rather than written as a lease: a write costs an fsync on the
    // path of every batch, and after a restart nothing is on the wire anyway.
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::new(Mutex::new(HashSet::new()));
    // Each task answers whether the peer's receipts came back and verified.
    let mut tasks: JoinSet<bool> = JoinSet::new();
    let mut window = Window::new(
        if lane.express {
            batch_max
        } else {
            BULK_BATCH_WHILE_URGENT.min(batch_max)
        },
        batch_max,
    );
    loop {
        if *shutdown.borrow() {
            while tasks.join_next().await.is_some() {}
            return;
        }
        // While urgent traffic is about, one bulk batch at a time: the store's one
        // writer at each end then has room for the FLASH writes between bulk writes.
        let urgent_about = !lane.express && node.urgent_about();
        let in_flight_max = if urgent_about || window.opening() {
            1
        } else {
            lane.in_flight_max
        };
        while tasks.len() >= in_flight_max {
            if let Some(answered) = tasks.join_next().await {
                window.answered(answered.unwrap_or(false));
            }
        }
        let now = node.now();
        // The bulk lane yields while urgent traffic waits: a returning peer gets the
        // FLASH and IMMEDIATE backlog before any ROUTINE.
        if !lane.express {
            let urgent = node
                .store
                .outbox_due_range(
                    &peer,
                    now.as_millisecond(),
                    1,
                    EXPRESS.precedence_min,
                    EXPRESS.precedence_max,
                )
                .await;
            if urgent.is_ok_and(|u| !u.is_empty()) {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
                continue;
            }
        }
        let limit = if urgent_about {
            window.size().min(BULK_BATCH_WHILE_URGENT)
        } else {
            window.size()
        };
        let busy: Vec<i64> = in_flight
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        let due = match node
            .store
            .outbox_due_range_excluding(
                &peer,
                now.as_millisecond(),
                limit,
                lane.precedence_min,
                lane.precedence_max,
                &busy,
            )
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(%peer, "outbox unavailable: {e}");
                if idle(&mut shutdown, None, STORE_RETRY).await {
                    return;
                }
                continue;
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = async { match &wake { Some(w) => w.notified().await, None => std::future::pending().await } } => {}
                Some(answered) = tasks.join_next(), if !tasks.is_empty() => {
                    window.answered(answered.unwrap_or(false));
                }
            }
            continue;
        }
        // Re-check each envelope against the agreements in force now: one that lapsed
        // while waiting bounces with the reason.
        let set = node.agreements();
        let consents = node.consents();
        let mut sending: Vec<Sending> = Vec::with_capacity(due.len());
        // Sent once (or maybe, before a restart) and no longer sendable: the peer may
        // hold it with its receipt lost, so it is asked rather than bounced.
        let mut in_doubt: Vec<Sending> = Vec::new();
        // A bounce the store refused leaves its row due: without a pause the lane would
        // fetch it again at once, and spin for as long as the store refuses writes.
        let mut unrecorded = false;
        for row in due {
            let env = match Envelope::from_json(row.envelope_json.as_bytes()) {
                Ok(e) => e,
                Err(e) => {
                    unrecorded |= !bounce(
                        &node,
                        &row.envelope_id,
                        vec![format!("stored envelope is unreadable: {e}")],
                    )
                    .await;
                    continue;
                }
            };
            let d = still_releasable(&set, &env.header, &consents, now);
            if d.allowed() || node.may_have_been_sent(row.seq) {
                let (digest, leaf) = env.header.digest_and_leaf();
                let on_way = Sending {
                    row,
                    env,
                    digest,
                    leaf,
                };
                if d.allowed() {
                    sending.push(on_way);
                } else {
                    in_doubt.push(on_way);
                }
                continue;
            }
            unrecorded |= !bounce(
                &node,
                &row.envelope_id,
                d.reasons.iter().map(ToString::to_string).collect(),
            )
            .await;
        }
        if !in_doubt.is_empty() {
            spawn_errand(&mut tasks, &node, &peer, &in_flight, Errand::Ask, in_doubt);
        }
        if sending.is_empty() {
            if unrecorded && idle(&mut shutdown, None, STORE_RETRY).await {
                while tasks.join_next().await.is_some() {}
                return;
            }
            continue;
        }
        spawn_errand(&mut tasks, &node, &peer, &in_flight, Errand::Send, sending);
    }
}

/// What a lane task does with its rows.
#[derive(Debug, Clone, Copy)]
enum Errand {
    /// Send the envelopes.
    Send,
    /// Ask the peer about envelopes sent earlier that can no longer be sent.
    Ask,
}

/// Runs `errand` for `rows` on a task of the lane, keeping the rows out of the lane's
/// next fetches until it is done.
fn spawn_errand<S: Store>(
    tasks: &mut JoinSet<bool>,
    node: &Arc<Node<S>>,
    peer: &str,
    in_flight: &Arc<Mutex<HashSet<i64>>>,
    errand: Errand,
    rows: Vec<Sending>,
) {
    let seqs: Vec<i64> = rows.iter().map(|s| s.row.seq).collect();
    if let Ok(mut g) = in_flight.lock() {
        g.extend(seqs.iter().copied());
    }
    let (node, peer, in_flight) = (node.clone(), peer.to_owned(), in_flight.clone());
    tasks.spawn(async move {
        let answer = match errand {
            Errand::Send => send_batch(&node, &peer, rows).await,
            Errand::Ask => ask_peer(&node, &peer, rows).await,
        };
        if let Ok(mut g) = in_flight.lock() {
            for seq in &seqs {
                g.remove(seq);
            }
        }
        let (answered, head) = match answer {
            Answer::Answered(head) => (true, head),
            Answer::Unanswered => (false, None),
        };
        // Off the lane: a consistency check may ask the peer for a proof, and the
        // next batch need not wait for it.
        if let Some(sth) = head {
            tokio::spawn(async move {
                crate::audit::observe_peer_head(&node, &peer, &sth).await;
            });
        }
        answered
    });
}

/// An outbox row on its way, with its parsed envelope, that envelope's digest (what
/// the receipt must name) and its leaf hash in the batch it is signed in, computed
/// once.
#[derive(Debug)]
struct Sending {
    row: OutboxRow,
    env: Envelope,
    digest: String,
    leaf: Hash,
}

/// How a batch's errand ended.
#[derive(Debug)]
enum Answer {
    /// The peer answered with a receipt batch that verified, carrying its signed tree
    /// head (to be observed) if it sent one.
    Answered(Option<SignedTreeHead>),
    /// No verified answer: the rows are rescheduled.
    Unanswered,
}

async fn send_batch<S: Store>(node: &Node<S>, peer: &str, sending: Vec<Sending>) -> Answer {
    if !node.pins.is_pinned(peer) {
        retry_all(
            node,
            &sending,
            &format!("no agreement in force pins a key for `{peer}`"),
        )
        .await;
        return Answer::Unanswered;
    }
    // One signature for the batch. The envelopes travel as stored (unsigned), so
    // the wire form is written around their text rather than re-encoded.
    let leaves: Vec<Hash> = sending.iter().map(|s| s.leaf).collect();
    let (head, signature) = EnvelopeBatch::sign_head(&leaves, node.now(), &node.key);
    let head = match serde_json::to_string(&head) {
        Ok(h) => h,
        Err(e) => {
            retry_all(node, &sending, &format!("cannot encode a batch head: {e}")).await;
            return Answer::Unanswered;
        }
    };
    let body = format!(
        "{{\"head\":{head},\"signature\":\"{signature}\",\"envelopes\":[{}]}}",
        sending
            .iter()
            .map(|s| s.row.envelope_json.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    exchange(
        node,
        peer,
        "/federation/v1/envelopes",
        Bytes::from(body),
        sending,
        "",
    )
    .await
}

/// Asks the peer about envelopes sent earlier that can no longer be sent: its signed
/// answers settle each one, delivered (it holds it) or bounced (it never got it, and
/// now refuses it for good). Until it answers they stay queued, in doubt.
async fn ask_peer<S: Store>(node: &Node<S>, peer: &str, asking: Vec<Sending>) -> Answer {
    add(&node.metrics.settle_asked, asking.len() as u64);
    let context = "in doubt: sent while an agreement allowed it, no receipt yet, and no \
                   agreement allows sending it now; asking the peer whether it arrived";
    if !node.pins.can_reach(peer) {
        retry_all(
            node,
            &asking,
            &format!("{context}: no agreement signed with `{peer}` lets us ask"),
        )
        .await;
        return Answer::Unanswered;
    }
    let request = SettleRequest {
        envelopes: asking
            .iter()
            .map(|s| SettleQuestion {
                id: s.env.header.id.clone(),
                digest: s.digest.clone(),
            })
            .collect(),
    };
    let body = match serde_json::to_vec(&request) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            retry_all(node, &asking, &format!("{context}: {e}")).await;
            return Answer::Unanswered;
        }
    };
    tracing::info!(%peer, count = asking.len(), "asking the peer about envelopes no longer sendable");
    exchange(node, peer, SETTLE_PATH, body, asking, context).await
}

/// Posts `body` to the peer and settles `sending` with the receipt batch it answers;
/// on any failure reschedules them all (`context` prefixes the reason).
async fn exchange<S: Store>(
    node: &Node<S>,
    peer: &str,
    path: &str,
    body: Bytes,
    sending: Vec<Sending>,
    context: &str,
) -> Answer {
    let addresses = node.config.peer_addresses(peer);
    let answer = node
        .client
        .post(peer, &addresses, path, body, FEDERATION_TIMEOUT)
        .await;
    // From here the peer may hold these envelopes, whatever happens to the answer.
    if !matches!(&answer, Err(e) if e.never_reached_peer()) {
        let seqs: Vec<i64> = sending.iter().map(|s| s.row.seq).collect();
        node.mark_sent(&seqs);
    }
    let why = match answer {
        Ok((status, bytes)) if status.is_success() => match ReceiptBatch::from_json(&bytes) {
            Ok(receipts) => return settle(node, peer, sending, receipts, bytes.len()).await,
            Err(e) => format!("peer answered with unreadable receipts: {e}"),
        },
        Ok((status, bytes)) => format!(
            "peer answered {status}: {}",
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(300)
                .collect::<String>()
        ),
        Err(e) => e.to_string(),
    };
    let why = if context.is_empty() {
        why
    } else {
        format!("{context}: {why}")
    };
    retry_all(node, &sending, &why).await;
    Answer::Unanswered
}

/// Returns `false` if the store could not record the bounce (the row stays queued).
async fn bounce<S: Store>(node: &Node<S>, id: &str, reasons: Vec<String>) -> bool {
    let audit = node.audit(AuditEvent::MessageBounced {
        id: id.to_owned(),
        reasons: reasons.clone(),
    });
    match node
        .store
        .outbox_bounce(id, &reasons.join("; "), node.clock.now_ms(), &[audit])
        .await
    {
        Ok(true) => {
            inc(&node.metrics.bounced);
            tracing::info!(%id, "bounced: {}", reasons.join("; "));
            crate::events::publish(node, "outbox");
            true
        }
        Ok(false) => true,
        Err(e) => {
            tracing::error!(%id, "cannot record bounce: {e}");
            false
        }
    }
}

async fn retry_all<S: Store>(node: &Node<S>, rows: &[Sending], why: &str) {
    let now_ms = node.clock.now_ms();
    let retries: Vec<(String, u32, i64)> = rows
        .iter()
        .map(|s| {
            let attempts = s.row.attempts.saturating_add(1);
            let next = node
                .retry
                .next_attempt_ms(now_ms, attempts, node.random.u64());
            (s.row.envelope_id.clone(), attempts, next)
        })
        .collect();
    // One transaction (one fsync) for the batch, not one per envelope.
    if let Err(e) = node.store.outbox_retry_batch(&retries, why).await {
        tracing::error!(count = rows.len(), "cannot schedule retries: {e}");
        // The rows stay due and would be sent again at once; the lane keeps them out
        // of its next fetch until this returns.
        tokio::time::sleep(STORE_RETRY).await;
    }
    add(&node.metrics.retries, rows.len() as u64);
    tracing::debug!(count = rows.len(), "delivery failed, retrying later: {why}");
}

/// Matches receipts to what was sent; only a batch signed by the peer's pinned key,
/// naming exactly an envelope's digest, releases that envelope from the outbox.
/// Answers whether the batch verified, with its tree head if it carries one.
async fn settle<S: Store>(
    node: &Node<S>,
    peer: &str,
    sent: Vec<Sending>,
    batch: ReceiptBatch,
    batch_bytes: usize,
) -> Answer {
    let keys = node.party_keys(peer);
    let tree_head = batch.tree_head.clone();
    let urgent = sent
        .iter()
        .any(|s| s.row.precedence >= Precedence::Immediate.rank());
    let receipts = if batch.head.receiver.as_str() == peer {
        // Hashing every body is CPU work the runtime's workers should not wait on,
        // unless the batch is light; an urgent one never queues behind bulk work.
        let weight = match crate::cpu::weight_of_batch(batch_bytes) {
            crate::cpu::Weight::Light => crate::cpu::Weight::Light,
            _ if urgent => crate::cpu::Weight::Heavy,
            _ => crate::cpu::Weight::Bulk,
        };
        crate::cpu::run(weight, move || batch.verify_split(&keys))
            .await
            .unwrap_or_else(|e| {
                Err(liaison_core::envelope::EnvelopeError::Malformed(format!(
                    "receipt check stopped: {e}"
                )))
            })
    } else {
        Err(liaison_core::envelope::EnvelopeError::Malformed(format!(
            "receipts are from `{}`",
            batch.head.receiver
        )))
    };
    let receipts = match receipts {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, "receipt batch does not verify, keeping the envelopes: {e}");
            retry_all(node, &sent, "no valid receipt").await;
            return Answer::Unanswered;
        }
    };
    // For benchmarks: the receipt is back and verified (recording it is one commit more).
    let verified_at = std::time::Instant::now();
    let by_id: HashMap<&str, &Receipt> = receipts
        .iter()
        .map(|r| (r.body.envelope_id.as_str(), r))
        .collect();
    let mut delivered: Vec<(String, String)> = Vec::new();
    // Forgotten as "sent" only once the outcome is recorded: a row whose receipt the
    // store refused to record is still queued, and the peer still holds it.
    let mut settled: Vec<i64> = Vec::new();
    let mut delivered_seqs: Vec<i64> = Vec::new();
    let mut audit = Vec::new();
    let mut unanswered: Vec<Sending> = Vec::new();
    for s in sent {
        let Some(r) = by_id.get(s.row.envelope_id.as_str()) else {
            unanswered.push(s);
            continue;
        };
        if r.body.envelope_id != s.env.header.id || r.body.envelope_digest != s.digest {
            tracing::warn!(%peer, id = %s.env.header.id, "receipt names another digest; keeping the envelope");
            unanswered.push(s);
            continue;
        }
        match r.body.kind {
            ReceiptKind::Stored => {
                audit.push(node.audit(AuditEvent::ReceiptReceived {
                    id: s.row.envelope_id.clone(),
                    receipt: "stored".into(),
                    peer: peer.to_owned(),
                }));
                delivered_seqs.push(s.row.seq);
                delivered.push((s.row.envelope_id, r.to_json()));
            }
            ReceiptKind::Refused => {
                let mut reasons = vec![format!("refused by `{peer}`")];
                reasons.extend(r.body.reasons.iter().cloned());
                if bounce(node, &s.row.envelope_id, reasons).await {
                    settled.push(s.row.seq);
                }
            }
            ReceiptKind::Acknowledged => unanswered.push(s),
        }
    }
    if !delivered.is_empty() {
        let ids: Vec<String> = delivered.iter().map(|(id, _)| id.clone()).collect();
        match node.record_receipts(delivered, audit, urgent).await {
            Ok(flags) => {
                settled.extend(delivered_seqs.iter().copied());
                add(
                    &node.metrics.delivered,
                    flags.iter().filter(|f| **f).count() as u64,
                );
                if let Ok(w) = node.delivered_watch.lock()
                    && let Some(tx) = w.as_ref()
                {
                    let recorded_at = std::time::Instant::now();
                    for (id, fresh) in ids.into_iter().zip(&flags) {
                        if *fresh {
                            let _ = tx.send(crate::node::Delivered {
                                id,
                                verified_at,
                                recorded_at,
                            });
                        }
                    }
                }
                crate::events::publish(node, "outbox");
            }
            Err(e) => {
                tracing::error!("cannot record receipts: {e}");
                // As in `retry_all`: the rows stay due; keep them off the wire a moment.
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
    node.forget_sent(&settled);
    if !unanswered.is_empty() {
        retry_all(node, &unanswered, "no valid receipt").await;
    }
    Answer::Answered(tree_head)
}

/// Sends acknowledgement receipts back to the peers whose messages were acknowledged.
pub async fn send_acks<S: Store>(
    node: Arc<Node<S>>,
    peer: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let addresses = node.config.peer_addresses(&peer);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = node
            .store
            .ack_outbox_due(&peer, ACK_BATCH_MAX)
            .await
            .unwrap_or_default();
        if due.is_empty() {
            if idle(&mut shutdown, Some(&node.ack_wake), IDLE_POLL * 5).await {
                return;
            }
            continue;
        }
        let body = format!(
            "{{\"receipts\":[{}]}}",
            due.iter()
                .map(|r| r.ack_receipt_json.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        match node
            .client
            .post(
                &peer,
                &addresses,
                "/federation/v1/acks",
                Bytes::from(body),
                FEDERATION_TIMEOUT,
            )
            .await
        {
            Ok((status, _)) if status.is_success() => {
                let ids: Vec<String> = due.iter().map(|r| r.envelope_id.clone()).collect();
                if node.store.ack_outbox_done(&ids).await.is_ok() {
                    add(&node.metrics.acks_sent, ids.len() as u64);
                }
                backoff = Duration::from_millis(100);
            }
            Ok((status, _)) => {
                tracing::warn!(%peer, %status, "acknowledgements refused");
                if idle(&mut shutdown, None, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::debug!(%peer, "acknowledgements not delivered yet: {e}");
                if idle(&mut shutdown, None, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Heartbeats every hotline when due; a failure marks it down at once.
pub async fn hotlines<S: Store>(node: Arc<Node<S>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if idle(&mut shutdown, None, IDLE_POLL).await {
            return;
        }
        let now_ms = node.clock.now_ms();
        let due: Vec<_> = match node.hotlines.lock() {
            Ok(h) => h
                .iter()
                .filter(|(_, e)| e.monitor.due(now_ms))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            Err(_) => continue,
        };
        for ((agreement, channel, peer), entry) in due {
            let body = HeartbeatBody {
                from: entry.my_desk.clone(),
                to: entry.peer_desk.clone(),
                agreement: agreement.clone(),
                channel: channel.clone(),
                nonce: hex::encode(node.random.bytes16()),
                sent_at: node.now(),
            };
            let signature = node.key.sign_b64(&heartbeat_bytes("heartbeat", &body));
            let hb = Heartbeat {
                body: body.clone(),
                signature,
            };
            let bytes = Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
            let started = Instant::now();
            let addresses = node.config.peer_addresses(&peer);
            let result = if node.pins.is_pinned(&peer) {
                node.client
                    .post(
                        &peer,
                        &addresses,
                        "/federation/v1/heartbeat",
                        bytes,
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                Err(format!("no agreement in force pins a key for `{peer}`"))
            };
            let rtt_ms = started.elapsed().as_millis() as i64;
            let outcome = match result {
                Ok((status, reply)) if status.is_success() => match serde_json::from_slice::<
                    HeartbeatReply,
                >(&reply)
                {
                    Ok(r)
                        if r.body.nonce == body.nonce
                            && node.party_keys(&peer).iter().any(|k| {
                                k.verify_b64(
                                    &heartbeat_bytes("heartbeat-reply", &r.body),
                                    &r.signature,
                                )
                                .is_ok()
                            }) =>
                    {
                        if let Some(sth) = &r.body.tree_head {
                            crate::audit::observe_peer_head(&node, &peer, sth).await;
                        }
                        Ok(())
                    }
                    Ok(_) => Err(
                        "heartbeat reply is not signed by the peer or answers another heartbeat"
                            .to_owned(),
                    ),
                    Err(e) => Err(format!("unreadable heartbeat reply: {e}")),
                },
                Ok((status, _)) => Err(format!("peer answered {status}")),
                Err(e) => Err(e),
            };
            let now_ms = node.clock.now_ms();
            let mut change = None;
            if let Ok(mut h) = node.hotlines.lock()
                && let Some(e) = h.get_mut(&(agreement.clone(), channel.clone(), peer.clone()))
            {
                match &outcome {
                    Ok(()) => e.monitor.on_ok(now_ms, rtt_ms, node.random.u64()),
                    Err(why) => e.monitor.on_failure(now_ms, why.clone(), node.random.u64()),
                }
                let state = e.monitor.state(now_ms).as_str();
                if state != e.last_state {
                    change = Some((
                        e.last_state,
                        state,
                        e.monitor.failure.clone().unwrap_or_default(),
                    ));
                    e.last_state = state;
                }
            }
            match outcome {
                Ok(()) => inc(&node.metrics.heartbeats_ok),
                Err(_) => inc(&node.metrics.heartbeats_failed),
            }
            if let Some((from, to, detail)) = change {
                tracing::info!(%agreement, %channel, %peer, "hotline {from} → {to} {detail}");
                let audit = node.audit(AuditEvent::HotlineState {
                    channel: channel.clone(),
                    peer: peer.clone(),
                    state: to.to_owned(),
                    detail,
                });
                let _ = node.store.audit_append(&[audit]).await;
                crate::events::publish(&node, "hotlines");
            }
        }
        // Degradation by silence is a state change too.
        let now_ms = node.clock.now_ms();
        let mut silent = Vec::new();
        if let Ok(mut h) = node.hotlines.lock() {
            for ((_, channel, peer), e) in h.iter_mut() {
                let state = e.monitor.state(now_ms).as_str();
                if state != e.last_state {
                    e.last_state = state;
                    silent.push((channel.clone(), peer.clone(), state));
                }
            }
        }
        for (channel, peer, state) in silent {
            let audit = node.audit(AuditEvent::HotlineState {
                channel,
                peer,
                state: state.to_owned(),
                detail: "no heartbeat answered in time".into(),
            });
            let _ = node.store.audit_append(&[audit]).await;
            crate::events::publish(&node, "hotlines");
        }
    }
}

/// Raises an escalation for each FLASH message not acknowledged by a person within its
/// hotline's deadline.
pub async fn escalations<S: Store>(node: Arc<Node<S>>, mut shutdown: watch::Receiver<bool>) {
    // Each unacknowledged FLASH's (agreement, channel), read from its envelope once:
    // parsing every waiting envelope on every pass cost a runtime worker milliseconds
    // per pass once hundreds waited, and FLASH traffic on that worker waited with it.
    // Holds only ids still unacknowledged (pruned each pass), so it is bounded by the
    // inbox's unacknowledged FLASH.
    let mut routes: HashMap<String, Option<(String, String)>> = HashMap::new();
    loop {
        if idle(&mut shutdown, None, IDLE_POLL * 2).await {
            return;
        }
        let Ok(unacked) = node
            .store
            .inbox_unacked(liaison_core::precedence::Precedence::Flash.rank())
            .await
        else {
            continue;
        };
        let waiting: HashSet<&str> = unacked.iter().map(|r| r.envelope_id.as_str()).collect();
        routes.retain(|id, _| waiting.contains(id.as_str()));
        let now_ms = node.clock.now_ms();
        for row in unacked.iter().filter(|r| r.escalated_ms.is_none()) {
            if !routes.contains_key(&row.envelope_id) {
                let route = Envelope::from_json(row.envelope_json.as_bytes())
                    .ok()
                    .map(|env| (env.header.agreement, env.header.channel));
                routes.insert(row.envelope_id.clone(), route);
            }
            let route = routes.get(&row.envelope_id).and_then(Option::as_ref);
            // The deadline is asked each pass: it follows the agreements in force.
            let Some(deadline) =
                route.and_then(|(agreement, channel)| node.ack_deadline_ms(agreement, channel))
            else {
                continue;
            };
            if !flash_overdue(row.received_ms, deadline, false, now_ms) {
                continue;
            }
            let reason = format!(
                "FLASH from `{}` to `{}` not acknowledged within {}s",
                row.from_desk,
                row.to_desk,
                deadline / 1000
            );
            let audit = node.audit(AuditEvent::Escalation {
                id: row.envelope_id.clone(),
                desk: row.to_desk.clone(),
                deadline_ms: deadline,
            });
            match node
                .store
                .escalation_insert(&row.envelope_id, now_ms, &reason, &[audit])
                .await
            {
                Ok(_) => {
                    // Counted as soon as it is recorded: whoever sees the escalation
                    // listed sees it counted too.
                    inc(&node.metrics.escalations);
                    let _ = node
                        .store
                        .inbox_mark_escalated(&row.envelope_id, now_ms)
                        .await;
                    tracing::warn!(id = %row.envelope_id, "{reason}");
                    crate::events::publish(&node, "escalations");
                }
                Err(e) => tracing::error!("cannot record escalation: {e}"),
            }
        }
    }
}

/// Reloads agreements (an install by the CLI lands in the store), re-pins keys as
/// agreements lapse on the node's clock, audits agreement events, signs tree heads.
pub async fn maintenance<S: Store>(node: Arc<Node<S>>, mut shutdown: watch::Receiver<bool>) {
    let mut last_head = Instant::now() - Duration::from_secs(3600);
    loop {
        if let Err(e) = node.refresh_agreements().await {
            tracing::error!("cannot refresh agreements: {e}");
        }
        if let Err(e) = node.audit_agreement_events().await {
            tracing::error!("cannot audit agreement events: {e}");
        }
        if last_head.elapsed() >= Duration::from_millis(500) {
            if let Err(e) = node.sign_tree_head().await {
                tracing::error!("cannot sign tree head: {e}");
            }
            last_head = Instant::now();
        }
        if idle(&mut shutdown, None, Duration::from_millis(200)).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_doubles_while_answered_and_starts_over_when_not() {
        let mut w = Window::new(16, 128);
        let mut sizes = vec![w.size()];
        for ok in [true, true, true, true, false, true] {
            w.answered(ok);
            sizes.push(w.size());
        }
        assert_eq!(sizes, [16, 32, 64, 128, 128, 16, 32]);
        assert!(w.opening());
        // A configured size below the start is the size from the first batch on.
        let w = Window::new(16, 4);
        assert_eq!((w.size(), w.opening()), (4, false));
    }
}
