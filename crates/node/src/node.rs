//! A running node: its identity, store, agreements, clock and the machines that move
//! messages. Decisions come from `liaison_core`; this module only wires them to IO.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use liaison_core::agreement::{ChannelKind, EventKind};
use liaison_core::audit::{AuditEntry, AuditEvent};
use liaison_core::canonical::agreement_digest;
use liaison_core::envelope::{Envelope, EnvelopeId, Header, SignedTreeHead};
use liaison_core::hotline::Monitor;
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::label::Label;
use liaison_core::parse::{clock_ms, parse_agreement};
use liaison_core::precedence::Precedence;
use liaison_core::release::{AgreementSet, Consent, Decision, ReleaseRequest, decide};
use liaison_core::signing::{PartyKey, PublicKey};
use liaison_link::{Client, LinkStats, Pins};
use liaison_store::{OutboxRow, Store, StoreError};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::{Metrics, inc};
use crate::random::Random;

/// Accepted messages in one group commit.
pub const ACCEPT_BATCH_MAX: usize = 512;
/// Receipts recorded in one group commit: a default bulk batch's worth, so an urgent
/// write waiting for the commit under way waits a few milliseconds, not tens.
pub const RECEIPT_BATCH_MAX: usize = 128;
/// Accepts or receipts in one group commit while urgent traffic is about
/// ([`Node::urgent_about`]): the commit an urgent write may find under way is short.
pub const BATCH_WHILE_URGENT: usize = 16;
/// Writes waiting for the writer.
pub const WRITE_QUEUE_MAX: usize = 8192;
/// How long after the last urgent message bulk work keeps to small pieces.
pub const URGENT_QUIET_MS: i64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Link(#[from] liaison_link::LinkError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Other(String),
}

/// What a person asks to send.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub from: String,
    pub to: String,
    pub label: String,
    #[serde(default = "routine")]
    pub precedence: String,
    pub body: String,
    #[serde(default)]
    pub originator: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
}

fn routine() -> String {
    "ROUTINE".to_owned()
}

/// Why a send was not accepted; the API maps these to 4xx/5xx.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("refused by the release decision")]
    Refused(Box<Decision>),
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    pub id: String,
    pub receiver_label: String,
    pub agreement: String,
    pub channel: String,
    pub reasons: Vec<String>,
}

/// A checked send request and its release decision.
#[derive(Debug)]
pub struct Prepared {
    pub from: DeskId,
    pub to: DeskId,
    pub label: Label,
    pub precedence: Precedence,
    pub originator: PartyId,
    pub reply_to: Option<EnvelopeId>,
    pub now: jiff::Timestamp,
    pub decision: Decision,
}

/// A write for the node's outbox writer.
enum WriteJob {
    /// A message accepted for sending, with its audit entry.
    Accept {
        row: Box<OutboxRow>,
        audit: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A peer's verified receipts `(envelope_id, receipt_json)` with their audit
    /// entries; answered with a flag per receipt (`true`: delivered now).
    Receipts {
        receipts: Vec<(String, String)>,
        audit: Vec<Vec<u8>>,
        done: oneshot::Sender<Result<Vec<bool>, String>>,
    },
}

/// A message whose receipt came back, as a benchmark sees it: when the peer's signed
/// receipt had been verified, and when it was recorded (durably, in the outbox).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub verified_at: std::time::Instant,
    pub recorded_at: std::time::Instant,
}

impl WriteJob {
    /// (accepted messages, receipts) this job adds to a commit.
    fn size(&self) -> (usize, usize) {
        match self {
            Self::Accept { .. } => (1, 0),
            Self::Receipts { receipts, .. } => (0, receipts.len()),
        }
    }
}

/// Key of a hotline monitor: (agreement, channel, peer party).
pub type HotlineKey = (String, String, String);

#[derive(Debug, Clone)]
pub struct HotlineEntry {
    pub monitor: Monitor,
    pub my_desk: String,
    pub peer_desk: String,
    pub ack_deadline_ms: i64,
    pub last_state: &'static str,
}

pub struct Node<S: Store> {
    pub party: PartyId,
    pub key: PartyKey,
    pub store: S,
    pub config: Config,
    pub clock: SharedClock,
    pub random: Arc<dyn Random>,
    agreements: RwLock<Arc<AgreementSet>>,
    agreements_fingerprint: Mutex<String>,
    pub pins: Pins,
    pub client: Client,
    pub link_stats: Arc<LinkStats>,
    pub metrics: Metrics,
    /// Wakes a peer's delivery lane: (peer, express?) → notify. A stored permit means
    /// an accept during a send is not missed.
    pub lane_wakes: HashMap<(String, bool), Arc<Notify>>,
    pub ack_wake: Notify,
    pub hotlines: Mutex<BTreeMap<HotlineKey, HotlineEntry>>,
    writer: mpsc::Sender<WriteJob>,
    /// FLASH and IMMEDIATE writes: the writer takes these first, in commits of their own.
    urgent_writer: mpsc::Sender<WriteJob>,
    /// Tells the writer to commit what it was handed and stop: sent once every other
    /// machine of the node has stopped, so nothing settled on the way out is dropped.
    writer_close: tokio::sync::watch::Sender<bool>,
    pub retry: liaison_core::delivery::RetryPolicy,
    /// Latest signed head of this node's own audit log.
    pub tree_head: Mutex<Option<SignedTreeHead>>,
    pub events: tokio::sync::broadcast::Sender<String>,
    /// Serialises checks of peers' tree heads: receipts and heartbeats arrive on many
    /// tasks at once, and one fork must raise one alarm.
    pub peer_log_lock: tokio::sync::Mutex<()>,
    /// One permit: bulk (PRIORITY and ROUTINE) inbox writes of arrived batches take
    /// turns for the store's single writer, so a FLASH arrival queues behind at most
    /// one of them (the outbox writer orders its own writes, urgent first).
    pub bulk_writes: tokio::sync::Semaphore,
    /// Clock time of the last FLASH or IMMEDIATE accepted here or arrived from a peer;
    /// bulk work goes in small pieces for a while after it ([`Node::urgent_about`]).
    urgent_seen_ms: std::sync::atomic::AtomicI64,
    /// Outbox rows (by seq) put on the wire by this process and not settled yet.
    sent: Mutex<std::collections::HashSet<i64>>,
    /// Highest outbox seq when this process started: a row at or below it may have
    /// been sent by an earlier process that stopped before recording anything.
    boot_seq: std::sync::atomic::AtomicI64,
    /// Benchmarks listen here for messages as their receipts are recorded.
    pub delivered_watch: Mutex<Option<mpsc::UnboundedSender<Delivered>>>,
}

impl<S: Store> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.party)
    }
}

impl<S: Store> Node<S> {
    #[expect(
        clippy::too_many_arguments,
        reason = "each is an injected edge: config, key, store, clock, randomness, network"
    )]
    pub fn new(
        config: Config,
        key: PartyKey,
        store: S,
        clock: SharedClock,
        random: Arc<dyn Random>,
        client: Client,
        pins: Pins,
        link_stats: Arc<LinkStats>,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let (urgent_tx, urgent_rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let (writer_close, close) = tokio::sync::watch::channel(false);
        let config_peers: Vec<String> = config.peers.iter().map(|p| p.party.clone()).collect();
        let retry = liaison_core::delivery::RetryPolicy {
            retry_delay_ms_min: config.delivery.retry_delay_ms_min,
            retry_delay_ms_max: config.delivery.retry_delay_ms_max,
        };
        let node = Arc::new(Self {
            party: key.party.clone(),
            key,
            store,
            config,
            clock,
            random,
            agreements: RwLock::new(Arc::new(AgreementSet::default())),
            agreements_fingerprint: Mutex::new(String::new()),
            pins,
            client,
            link_stats,
            metrics: Metrics::default(),
            lane_wakes: config_peers
                .iter()
                .flat_map(|p| {
                    [
                        ((p.clone(), true), Arc::new(Notify::new())),
                        ((p.clone(), false), Arc::new(Notify::new())),
                    ]
                })
                .collect(),
            ack_wake: Notify::new(),
            hotlines: Mutex::new(BTreeMap::new()),
            writer: tx,
            urgent_writer: urgent_tx,
            writer_close,
            retry,
            tree_head: Mutex::new(None),
            events: tokio::sync::broadcast::channel(crate::events::EVENTS_BUFFER_MAX).0,
            delivered_watch: Mutex::new(None),
            sent: Mutex::new(std::collections::HashSet::new()),
            boot_seq: std::sync::atomic::AtomicI64::new(i64::MAX),
            bulk_writes: tokio::sync::Semaphore::new(1),
            urgent_seen_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            peer_log_lock: tokio::sync::Mutex::new(()),
        });
        let writer = group_commit(node.clone(), urgent_rx, rx, close);
        (node, writer)
    }

    fn writer_for(&self, urgent: bool) -> &mpsc::Sender<WriteJob> {
        if urgent {
            &self.urgent_writer
        } else {
            &self.writer
        }
    }

    /// Lets the writer commit what it holds and stop (see [`crate::stop_machines`]).
    pub fn close_writer(&self) {
        let _ = self.writer_close.send(true);
    }

    /// Records a peer's verified receipts (with their audit entries) durably, in the
    /// writer's next group commit (an `urgent` one if any is for a FLASH or IMMEDIATE
    /// message); a flag per receipt, `true` if that message became delivered now.
    ///
    /// While urgent traffic is about, bulk receipts go in parts of
    /// [`BATCH_WHILE_URGENT`], each committed before the next is handed over, so an
    /// urgent write waits for one short commit, not a whole batch's. A part recorded
    /// before a failure stays recorded; the rest stay queued and are sent again, and
    /// the peer answers those as held.
    pub async fn record_receipts(
        &self,
        mut receipts: Vec<(String, String)>,
        mut audit: Vec<Vec<u8>>,
        urgent: bool,
    ) -> Result<Vec<bool>, String> {
        let part = if !urgent && audit.len() == receipts.len() && self.urgent_about() {
            BATCH_WHILE_URGENT
        } else {
            receipts.len().max(1)
        };
        let mut flags = Vec::with_capacity(receipts.len());
        loop {
            let rest = receipts.split_off(part.min(receipts.len()));
            let rest_audit = audit.split_off(part.min(audit.len()));
            let (done, wait) = oneshot::channel();
            self.writer_for(urgent)
                .send(WriteJob::Receipts {
                    receipts,
                    audit,
                    done,
                })
                .await
                .map_err(|_| "node is shutting down".to_owned())?;
            flags.extend(
                wait.await
                    .map_err(|_| "node is shutting down".to_owned())??,
            );
            if rest.is_empty() {
                return Ok(flags);
            }
            (receipts, audit) = (rest, rest_audit);
        }
    }

    pub fn wake_lane(&self, peer: &str, express: bool) {
        if let Some(n) = self.lane_wakes.get(&(peer.to_owned(), express)) {
            n.notify_one();
        }
    }

    /// Records the outbox's highest seq at start-up (see [`Node::may_have_been_sent`]).
    pub async fn note_boot_seq(&self) -> Result<(), NodeError> {
        let newest = self.store.outbox_list(None, 1, None).await?;
        let seq = newest.first().map_or(0, |r| r.seq);
        self.boot_seq
            .store(seq, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Marks outbox rows as on the wire (before the request leaves).
    pub fn mark_sent(&self, seqs: &[i64]) {
        if let Ok(mut g) = self.sent.lock() {
            g.extend(seqs.iter().copied());
        }
    }

    /// Forgets rows that were delivered or bounced.
    pub fn forget_sent(&self, seqs: &[i64]) {
        if let Ok(mut g) = self.sent.lock() {
            for s in seqs {
                g.remove(s);
            }
        }
    }

    /// Whether the peer may hold this outbox row: this process sent it, or an
    /// earlier process may have (nothing durable says it did not — writing that
    /// before every send would cost an fsync per batch). Such a row is never bounced
    /// on this node's word alone: the peer is asked first.
    pub fn may_have_been_sent(&self, seq: i64) -> bool {
        seq <= self.boot_seq.load(std::sync::atomic::Ordering::Relaxed)
            || self.sent.lock().map_or(true, |g| g.contains(&seq))
    }

    /// Notes FLASH or IMMEDIATE traffic (accepted here, or arrived) now.
    pub fn note_urgent(&self) {
        self.urgent_seen_ms
            .fetch_max(self.clock.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether FLASH or IMMEDIATE traffic passed within [`URGENT_QUIET_MS`]: bulk
    /// writes and batches then stay small, so an urgent one never waits long for the
    /// store's one writer at either end.
    pub fn urgent_about(&self) -> bool {
        self.clock.now_ms().saturating_sub(
            self.urgent_seen_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        ) < URGENT_QUIET_MS
    }

    pub fn agreements(&self) -> Arc<AgreementSet> {
        match self.agreements.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// An audit entry for `event` at the clock's now.
    pub fn audit(&self, event: AuditEvent) -> Vec<u8> {
        AuditEntry {
            at: self.now(),
            event,
        }
        .encode()
    }

    /// The public key(s) the agreements list for a party.
    pub fn party_keys(&self, party: &str) -> Vec<PublicKey> {
        self.agreements().party_keys(party)
    }

    /// Reloads agreements from the store when they changed, re-pins peers' keys for
    /// the agreements in force now, and rebuilds the hotline monitors.
    pub async fn refresh_agreements(&self) -> Result<(), NodeError> {
        let rows = self.store.agreement_list().await?;
        let fingerprint: String = rows
            .iter()
            // The text, not only the digest: new events leave the digest unchanged.
            .map(|r| {
                format!(
                    "{}:{}:{}:{};",
                    r.id,
                    r.version,
                    r.digest_hex,
                    hex::encode(liaison_core::merkle::leaf_hash(r.text.as_bytes()))
                )
            })
            .collect();
        let changed = {
            let mut g = self
                .agreements_fingerprint
                .lock()
                .map_err(|_| NodeError::Other("lock poisoned".into()))?;
            let changed = *g != fingerprint;
            *g = fingerprint;
            changed
        };
        if changed {
            let mut list = Vec::new();
            for r in &rows {
                match parse_agreement(&format!("store:{}", r.id), &r.text) {
                    Ok(a) => list.push(a),
                    Err(e) => {
                        tracing::error!(agreement = %r.id, "stored agreement no longer parses: {e}")
                    }
                }
            }
            let set = Arc::new(AgreementSet::new(list));
            if let Ok(mut g) = self.agreements.write() {
                *g = set;
            }
        }
        self.repin();
        self.rebuild_hotlines();
        Ok(())
    }

    /// Pins the keys of parties that share an agreement in force with us now; the
    /// keys of parties that signed an agreement with us that is not in force (lapsed,
    /// ended, not yet started) are pinned for settling only, so that an envelope sent
    /// while one was in force can still be asked after (see `settle` below).
    pub fn repin(&self) {
        let set = self.agreements();
        let now = self.now();
        let mut map = HashMap::new();
        let mut settling = HashMap::new();
        for c in set.iter() {
            let me = self.party.as_str();
            if c.agreement.party(me).is_none() || c.agreement.draft {
                continue;
            }
            let in_force = c.participation(&self.party, now).participates();
            for p in &c.agreement.parties {
                if p.id == self.party {
                    continue;
                }
                let target = if in_force && c.participation(&p.id, now).participates() {
                    &mut map
                } else {
                    &mut settling
                };
                for k in &p.keys {
                    if let Ok(pk) = PublicKey::parse(k) {
                        target.insert(pk.to_bytes(), p.id.to_string());
                    }
                }
            }
        }
        // Our own key too, so a node can talk to another replica of itself.
        map.insert(self.key.public().to_bytes(), self.party.to_string());
        let before: Vec<String> = {
            let mut v: Vec<String> = self.pins_parties();
            v.sort();
            v
        };
        self.pins.replace_with_settling(map, settling);
        let mut after = self.pins_parties();
        after.sort();
        for gone in before.iter().filter(|p| !after.contains(p)) {
            tracing::info!(peer = %gone, "no agreement in force any more: link closed");
            self.client.forget(gone);
        }
    }

    fn pins_parties(&self) -> Vec<String> {
        self.config
            .peers
            .iter()
            .map(|p| p.party.clone())
            .filter(|p| self.pins.is_pinned(p))
            .collect()
    }

    fn rebuild_hotlines(&self) {
        let set = self.agreements();
        let now = self.now();
        let now_ms = now.as_millisecond();
        let Ok(mut hotlines) = self.hotlines.lock() else {
            return;
        };
        let mut wanted = BTreeMap::new();
        for c in set.iter() {
            let a = &c.agreement;
            if !c.participation(&self.party, now).participates() {
                continue;
            }
            for ch in a
                .channels
                .iter()
                .filter(|ch| ch.kind == ChannelKind::Hotline)
            {
                let Some(mine) = ch
                    .desks
                    .iter()
                    .find(|d| d.party_str() == self.party.as_str())
                else {
                    continue;
                };
                for theirs in ch
                    .desks
                    .iter()
                    .filter(|d| d.party_str() != self.party.as_str())
                {
                    if !c.participation(&theirs.party(), now).participates() {
                        continue;
                    }
                    let key = (a.id.clone(), ch.id.clone(), theirs.party_str().to_owned());
                    let interval = ch.test_interval.as_ref().map(clock_ms).unwrap_or(3_600_000);
                    let deadline = ch.ack_deadline.as_ref().map(clock_ms).unwrap_or(300_000);
                    wanted.insert(
                        key,
                        (interval, deadline, mine.to_string(), theirs.to_string()),
                    );
                }
            }
        }
        hotlines.retain(|k, _| wanted.contains_key(k));
        for (k, (interval, deadline, mine, theirs)) in wanted {
            hotlines.entry(k).or_insert_with(|| HotlineEntry {
                monitor: Monitor::new(interval, now_ms),
                my_desk: mine,
                peer_desk: theirs,
                ack_deadline_ms: deadline,
                last_state: "unknown",
            });
        }
    }

    /// The FLASH acknowledgement deadline of the hotline joining two desks, if any.
    pub fn ack_deadline_ms(&self, agreement: &str, channel: &str) -> Option<i64> {
        let set = self.agreements();
        let ch = set.get(agreement)?.agreement.channel(channel)?.clone();
        if ch.kind != ChannelKind::Hotline {
            return None;
        }
        ch.ack_deadline.as_ref().map(clock_ms)
    }

    /// Consents this node holds (recorded by release officers); none yet.
    pub fn consents(&self) -> Vec<Consent> {
        Vec::new()
    }

    /// Checks a request and runs the release decision, without storing anything: what
    /// compose shows before the officer presses send, and the first half of `send`.
    pub fn prepare(&self, req: &SendRequest) -> Result<Prepared, SendError> {
        let bad = |field: &'static str, message: String| SendError::BadRequest { field, message };
        let from = DeskId::new(req.from.trim()).map_err(|e| bad("from", e.to_string()))?;
        let to = DeskId::new(req.to.trim()).map_err(|e| bad("to", e.to_string()))?;
        if from.party() != self.party {
            return Err(bad(
                "from",
                format!(
                    "`{from}` is not a desk of this node's party `{}`",
                    self.party
                ),
            ));
        }
        let set = self.agreements();
        if !set.knows_desk(from.as_str()) {
            return Err(bad(
                "from",
                format!(
                    "unknown desk `{from}`, expected a desk declared by an installed agreement"
                ),
            ));
        }
        // A desk of a party we have an agreement with must be declared; a party we have
        // no agreement with at all is for the release decision to refuse, with reasons.
        if !set.knows_desk(to.as_str()) && set.knows_party(to.party_str()) {
            return Err(bad(
                "to",
                format!("unknown desk `{to}`, expected a desk declared by an installed agreement"),
            ));
        }
        let label: Label = req
            .label
            .parse()
            .map_err(|e: liaison_core::label::LabelError| bad("label", e.to_string()))?;
        let precedence: Precedence =
            req.precedence
                .parse()
                .map_err(|e: liaison_core::precedence::PrecedenceError| {
                    bad("precedence", e.to_string())
                })?;
        if req.body.len() > liaison_core::envelope::BODY_BYTES_MAX {
            return Err(bad(
                "body",
                format!(
                    "body is {} bytes, expected at most {}",
                    req.body.len(),
                    liaison_core::envelope::BODY_BYTES_MAX
                ),
            ));
        }
        let originator = match &req.originator {
            Some(o) => PartyId::new(o).map_err(|e| bad("originator", e.to_string()))?,
            None => self.party.clone(),
        };
        let reply_to = match &req.reply_to {
            Some(r) => Some(EnvelopeId::parse(r).map_err(|e| bad("reply_to", e.to_string()))?),
            None => None,
        };
        let now = self.now();
        let consents = self.consents();
        let decision = decide(
            &set,
            &ReleaseRequest {
                from: &from,
                to: &to,
                label: &label,
                originator: Some(&originator),
                consents: &consents,
            },
            now,
        );
        Ok(Prepared {
            from,
            to,
            label,
            precedence,
            originator,
            reply_to,
            now,
            decision,
        })
    }

    /// Accepts a message for sending: decides, commits the envelope to the outbox
    /// (durable, group-committed), and only then answers.
    pub async fn send(&self, req: SendRequest) -> Result<Accepted, SendError> {
        let bad = |field: &'static str, message: String| SendError::BadRequest { field, message };
        let Prepared {
            from,
            to,
            label,
            precedence,
            originator,
            reply_to,
            now,
            decision,
        } = self.prepare(&req)?;
        if !decision.allowed() {
            inc(&self.metrics.refused);
            let entry = self.audit(AuditEvent::MessageRefused {
                from: from.to_string(),
                to: to.to_string(),
                label: label.to_string(),
                reasons: decision.reasons.iter().map(ToString::to_string).collect(),
            });
            if let Err(e) = self.store.audit_append(&[entry]).await {
                return Err(SendError::Unavailable(e.to_string()));
            }
            return Err(SendError::Refused(Box::new(decision)));
        }
        let (Some(agreement), Some(version), Some(channel), Some(receiver_label)) = (
            decision.agreement.clone(),
            decision.agreement_version,
            decision.channel.clone(),
            decision.receiver_label.clone(),
        ) else {
            return Err(SendError::Unavailable(
                "decision allowed without a route".into(),
            ));
        };
        let header = Header {
            id: EnvelopeId::time_ordered(now, self.random.bytes16()),
            from: from.clone(),
            to: to.clone(),
            originator,
            agreement: agreement.clone(),
            agreement_version: version,
            channel: channel.clone(),
            label: label.clone(),
            precedence,
            created_at: now,
            reply_to,
            body_sha256: String::new(),
        };
        // Signed when sent, once per batch (workers.rs): not on the accept's path.
        let env = Envelope::unsigned(header, req.body).map_err(|e| bad("body", e.to_string()))?;
        let id = env.header.id.to_string();
        let row = OutboxRow::new_queued(
            id.clone(),
            to.party_str(),
            from.as_str(),
            to.as_str(),
            precedence.rank(),
            now.as_millisecond(),
            env.to_json(),
        );
        let audit = self.audit(AuditEvent::MessageAccepted {
            id: id.clone(),
            from: from.to_string(),
            to: to.to_string(),
            label: label.to_string(),
            precedence: precedence.to_string(),
            agreement: agreement.clone(),
            channel: channel.clone(),
        });
        let (done, wait) = oneshot::channel();
        self.writer_for(precedence >= Precedence::Immediate)
            .send(WriteJob::Accept {
                row: Box::new(row),
                audit,
                done,
            })
            .await
            .map_err(|_| SendError::Unavailable("node is shutting down".into()))?;
        match wait.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SendError::Unavailable(e)),
            Err(_) => return Err(SendError::Unavailable("node is shutting down".into())),
        }
        inc(&self.metrics.accepted);
        let urgent = precedence >= Precedence::Immediate;
        if urgent {
            self.note_urgent();
        }
        self.wake_lane(to.party_str(), urgent);
        Ok(Accepted {
            id,
            receiver_label: receiver_label.to_string(),
            agreement,
            channel,
            reasons: decision.reasons.iter().map(ToString::to_string).collect(),
        })
    }

    /// Signs the current head of this node's audit log.
    pub async fn sign_tree_head(&self) -> Result<SignedTreeHead, NodeError> {
        let (size, root) = self.store.audit_head().await?;
        let head = liaison_core::merkle::TreeHead {
            size,
            root,
            timestamp_ms: self.clock.now_ms(),
        };
        let sth = SignedTreeHead::sign(self.party.as_str(), head, &self.key);
        if let Ok(mut g) = self.tree_head.lock() {
            *g = Some(sth.clone());
        }
        Ok(sth)
    }

    pub fn latest_tree_head(&self) -> Option<SignedTreeHead> {
        self.tree_head.lock().ok().and_then(|g| g.clone())
    }

    /// Records every agreement event of installed agreements in the audit log once.
    pub async fn audit_agreement_events(&self) -> Result<(), NodeError> {
        let set = self.agreements();
        let mut entries = Vec::new();
        for c in set.iter() {
            let a = &c.agreement;
            let key = format!("audited:{}:{}", a.id, hex::encode(agreement_digest(a)));
            let seen: usize = self
                .store
                .meta_get(&key)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if seen >= a.events.len() {
                continue;
            }
            for e in a.events.iter().skip(seen) {
                entries.push(
                    AuditEntry {
                        at: self.now(),
                        event: AuditEvent::AgreementEvent {
                            agreement: a.id.clone(),
                            event: e.kind.name().to_owned(),
                            party: e.party.to_string(),
                            at: e.at.to_string(),
                        },
                    }
                    .encode(),
                );
                if let EventKind::ConditionRecorded { condition } = &e.kind {
                    tracing::info!(agreement = %a.id, %condition, "condition recorded");
                }
            }
            self.store.audit_append(&entries).await?;
            entries.clear();
            self.store
                .meta_put(&key, &a.events.len().to_string())
                .await?;
        }
        Ok(())
    }
}

/// The node's outbox writer. Accepts and peers' receipts that arrive while a commit
/// runs share the next one: one transaction and one fsync for all of them, so
/// durability does not cap throughput, and neither kind of write queues for the
/// store's single writer behind the other. Urgent writes (FLASH and IMMEDIATE) come
/// first and are committed on their own, so one waits for at most the commit under
/// way, never for a queue of bulk ones nor inside a large commit.
async fn group_commit<S: Store>(
    node: Arc<Node<S>>,
    mut urgent_rx: mpsc::Receiver<WriteJob>,
    mut rx: mpsc::Receiver<WriteJob>,
    mut close: tokio::sync::watch::Receiver<bool>,
) {
    let mut jobs: Vec<WriteJob> = Vec::with_capacity(ACCEPT_BATCH_MAX);
    loop {
        // On close, commit what was already handed over, then stop.
        let (first, urgent) = tokio::select! {
            biased;
            Some(j) = urgent_rx.recv() => (j, true),
            Some(j) = rx.recv() => (j, false),
            _ = close.wait_for(|c| *c) => match (urgent_rx.try_recv(), rx.try_recv()) {
                (Ok(j), bulk) => {
                    if let Ok(b) = bulk {
                        jobs.push(b);
                    }
                    (j, true)
                }
                (Err(_), Ok(j)) => (j, false),
                (Err(_), Err(_)) => return,
            },
        };
        jobs.push(first);
        let queue = if urgent { &mut urgent_rx } else { &mut rx };
        let (mut accepts, mut receipts) = jobs
            .iter()
            .map(WriteJob::size)
            .fold((0, 0), |(a, r), (ja, jr)| (a + ja, r + jr));
        let (accepts_max, receipts_max) = if node.urgent_about() {
            (BATCH_WHILE_URGENT, BATCH_WHILE_URGENT)
        } else {
            (ACCEPT_BATCH_MAX, RECEIPT_BATCH_MAX)
        };
        while accepts < accepts_max && receipts < receipts_max {
            let Ok(j) = queue.try_recv() else { break };
            let (ja, jr) = j.size();
            accepts += ja;
            receipts += jr;
            jobs.push(j);
        }
        commit(&node, &mut jobs, accepts, receipts).await;
    }
}

/// Commits `jobs` in one transaction and answers each.
async fn commit<S: Store>(
    node: &Node<S>,
    jobs: &mut Vec<WriteJob>,
    accepts: usize,
    receipts: usize,
) {
    let mut rows = Vec::with_capacity(accepts);
    let mut delivered = Vec::with_capacity(receipts);
    let mut audit = Vec::with_capacity(accepts + receipts);
    for j in jobs.iter() {
        match j {
            WriteJob::Accept { row, audit: a, .. } => {
                rows.push(OutboxRow::clone(row));
                audit.push(a.clone());
            }
            WriteJob::Receipts {
                receipts, audit: a, ..
            } => {
                delivered.extend(receipts.iter().cloned());
                audit.extend(a.iter().cloned());
            }
        }
    }
    let result = node
        .store
        .outbox_commit(&rows, &delivered, node.clock.now_ms(), &audit)
        .await
        .map_err(|e| e.to_string());
    let mut flags = result
        .as_ref()
        .map(|c| c.delivered.iter().copied())
        .ok()
        .into_iter()
        .flatten();
    for j in jobs.drain(..) {
        match j {
            WriteJob::Accept { done, .. } => {
                let _ = done.send(result.as_ref().map(|_| ()).map_err(Clone::clone));
            }
            WriteJob::Receipts { receipts, done, .. } => {
                let answer = match &result {
                    Ok(_) => Ok(flags.by_ref().take(receipts.len()).collect()),
                    Err(e) => Err(e.clone()),
                };
                let _ = done.send(answer);
            }
        }
    }
}
