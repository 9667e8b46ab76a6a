//! Deterministic fault simulation: the scenario's four nodes (ROK, PRC, USA, JPN) run
//! their real machines — release decisions, delivery lanes, TLS links, receipts, audit
//! logs — in one process on turmoil's simulated network and clock, each on its own
//! store. One seed fixes the workload (senders, desks, precedences, labels, replies,
//! acknowledgements, the midnight lapse of ROK's participation, and sometimes the
//! signed agreement event that averts it, reaching each node at its own moment) and
//! the faults
//! (partitions and heals, held and released traffic, lossy links, node crashes and
//! restarts, clock skew, a store that refuses writes for a while). After the faults stop
//! and everything heals, [`check`] looks for violations of Liaison's promises.
//!
//! What is durable is exactly what a store method committed: a crash drops the node's
//! tasks and memory, never its store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use liaison_core::audit::{AuditEntry, AuditEvent, StoredLeaf, verify_log};
use liaison_core::envelope::Envelope;
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::label::Label;
use liaison_core::release::{ReleaseRequest, decide};
use liaison_core::signed_document::sign_as_parties;
use liaison_core::signing::PartyKey;
use liaison_link::{BoxStream, DialFuture, Dialer, Listener};
use liaison_node::config::{Config, Delivery, Listen, Peer};
use liaison_node::node::SendRequest;
use liaison_node::{Clock, Node, Parts, Random, SeededRandom};
use liaison_store::{OutboxState, Store};

pub const PARTIES: [&str; 4] = ["ROK", "PRC", "USA", "JPN"];
const FEDERATION_PORT: u16 = 7101;
/// The scenario clock at the start: a few minutes before ROK's participation in the
/// sharing agreement lapses at midnight KST.
const ORIGIN: &str = "2019-11-22T23:59:20+09:00";
/// Simulated time during which traffic is offered and faults happen.
pub const ACTIVE: Duration = Duration::from_secs(60);
/// Quiet time after every fault is healed, for retries and receipts to settle.
pub const SETTLE: Duration = Duration::from_secs(45);

/// The routes the workload draws from: (from, to, label). Some are refused by the
/// agreements (JPN passing to PRC; labels above a channel's ceiling), which the check
/// expects to be refused.
const ROUTES: &[(&str, &str, &str)] = &[
    ("ROK.navy", "PRC.navy", "ROK:평문"),
    ("PRC.navy", "ROK.navy", "PRC:非密"),
    ("ROK.air", "PRC.air", "ROK:평문"),
    ("USA.intel", "ROK.intel", "USA:SECRET"),
    ("USA.intel", "JPN.intel", "USA:SECRET"),
    ("USA.intel", "JPN.intel", "USA:CONFIDENTIAL"),
    ("ROK.intel", "JPN.intel", "ROK:II급 비밀"),
    ("ROK.intel", "USA.intel", "ROK:III급 비밀"),
    ("JPN.intel", "USA.intel", "JPN:極秘"),
    ("JPN.intel", "ROK.intel", "JPN:秘"),
    ("JPN.intel", "PRC.navy", "JPN:秘"),
    ("USA.intel", "ROK.intel", "USA:TOP SECRET"),
];
const PRECEDENCES: [&str; 4] = ["ROUTINE", "PRIORITY", "IMMEDIATE", "FLASH"];

/// The schedule's random stream (the node's own seeded generator, so there is one
/// implementation of it).
#[derive(Debug)]
pub struct Rng(SeededRandom);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SeededRandom::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.u64()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(usize::try_from(self.below(items.len() as u64)).unwrap_or(0))
    }
}

/// A fault and when it starts (ms of simulated time) and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Partition {
        a: usize,
        b: usize,
        from_ms: u64,
        to_ms: u64,
    },
    Hold {
        a: usize,
        b: usize,
        from_ms: u64,
        to_ms: u64,
    },
    Lossy {
        a: usize,
        b: usize,
        from_ms: u64,
        to_ms: u64,
        percent: u64,
    },
    Crash {
        node: usize,
        from_ms: u64,
        to_ms: u64,
    },
    StoreRefuses {
        node: usize,
        from_ms: u64,
        to_ms: u64,
    },
}

impl Fault {
    /// When the fault starts and ends, in ms of simulated time.
    pub fn window(&self) -> (u64, u64) {
        match *self {
            Self::Partition { from_ms, to_ms, .. }
            | Self::Hold { from_ms, to_ms, .. }
            | Self::Lossy { from_ms, to_ms, .. }
            | Self::Crash { from_ms, to_ms, .. }
            | Self::StoreRefuses { from_ms, to_ms, .. } => (from_ms, to_ms),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Partition { .. } => "partition",
            Self::Hold { .. } => "delay (held traffic)",
            Self::Lossy { .. } => "lossy link",
            Self::Crash { .. } => "crash and restart",
            Self::StoreRefuses { .. } => "store refuses writes",
        }
    }
}

/// Everything one seed decides.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    /// Clock skew per node, in ms.
    pub skew_ms: [i64; 4],
    /// (at ms, route index, precedence index, reply to an earlier send?)
    pub sends: Vec<(u64, usize, usize, bool)>,
    /// Share of received messages a person acknowledges, in percent.
    pub ack_percent: u64,
    pub faults: Vec<Fault>,
    /// JPN records the condition on which ROK withdrew its notice (the sharing
    /// agreement's `condition-recorded` event), at this ms of simulated time; the
    /// signed file reaches each node's store after its own delay in ms (agreement
    /// officers install it one by one). Before midnight it averts ROK's lapse.
    pub condition: Option<(u64, [u64; 4])>,
}

/// The agreement and condition of [`Schedule::condition`].
const SHARING: &str = "rok-usa-jpn-information-sharing";
const CONDITION: &str = "jpn-export-restrictions-lifted";

impl Schedule {
    pub fn from_seed(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let active = ACTIVE.as_millis() as u64;
        let mut skew_ms = [0i64; 4];
        for s in &mut skew_ms {
            *s = i64::try_from(r.below(10_001)).unwrap_or(0) - 5_000;
        }
        let n = 15 + r.below(30);
        let mut sends: Vec<(u64, usize, usize, bool)> = (0..n)
            .map(|_| {
                (
                    r.below(active),
                    usize::try_from(r.below(ROUTES.len() as u64)).unwrap_or(0),
                    usize::try_from(r.below(4)).unwrap_or(0),
                    r.chance(15),
                )
            })
            .collect();
        sends.sort();
        let mut faults = Vec::new();
        for _ in 0..r.below(6) {
            let from_ms = r.below(active);
            let to_ms = (from_ms + 500 + r.below(20_000)).min(active);
            let a = usize::try_from(r.below(4)).unwrap_or(0);
            let b = (a + 1 + usize::try_from(r.below(3)).unwrap_or(0)) % 4;
            let f = match r.below(5) {
                0 => Fault::Partition {
                    a,
                    b,
                    from_ms,
                    to_ms,
                },
                1 => Fault::Hold {
                    a,
                    b,
                    from_ms,
                    to_ms,
                },
                2 => Fault::Lossy {
                    a,
                    b,
                    from_ms,
                    to_ms,
                    percent: 10 + r.below(50),
                },
                3 => Fault::Crash {
                    node: a,
                    from_ms,
                    to_ms,
                },
                _ => Fault::StoreRefuses {
                    node: a,
                    from_ms,
                    to_ms,
                },
            };
            faults.push(f);
        }
        let ack_percent = 30 + r.below(70);
        // Drawn last, so that the rest of a seed's schedule is what it was before.
        let condition = r.chance(35).then(|| {
            let at = r.below(active);
            let mut delays = [0u64; 4];
            for d in &mut delays {
                *d = r.below(8_000);
            }
            (at, delays)
        });
        Self {
            seed,
            skew_ms,
            sends,
            ack_percent,
            faults,
            condition,
        }
    }
}

/// A store the simulation can make refuse writes.
pub trait FaultyStore: Store {
    fn refuse_writes(&self, refuse: bool);
}

/// The scenario clock as a node sees it: simulated time, plus that node's skew.
#[derive(Debug)]
struct SimClock {
    origin: Timestamp,
    skew_ms: i64,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        self.origin
            + SignedDuration::from_millis(
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX / 2) + self.skew_ms,
            )
    }
}

#[derive(Debug)]
struct SimDialer;

impl Dialer for SimDialer {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let s = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(turmoil::net::TcpStream, std::net::SocketAddr)> {
        self.0.accept().await
    }
}

fn host(party: &str) -> String {
    party.to_ascii_lowercase()
}

fn key_of(seed: u64, i: usize, party: &str) -> Option<PartyKey> {
    let mut bytes = [0u8; 32];
    let mut r = Rng::new(seed ^ 0x5eed_0000 ^ (i as u64));
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    Some(PartyKey::from_seed(PartyId::new(party).ok()?, bytes))
}

fn config_of(i: usize) -> Config {
    let party = PARTIES.get(i).copied().unwrap_or("ROK");
    let unused: std::net::SocketAddr = ([127, 0, 0, 1], 9).into();
    Config {
        party: party.to_owned(),
        api: Listen { listen: unused },
        federation: Listen { listen: unused },
        peers: PARTIES
            .iter()
            .filter(|p| **p != party)
            .map(|p| Peer {
                party: (*p).to_owned(),
                addresses: vec![format!("{}:{FEDERATION_PORT}", host(p))],
            })
            .collect(),
        delivery: Delivery {
            batch_max: 64,
            retry_delay_ms_min: 100,
            retry_delay_ms_max: 4_000,
        },
    }
}

/// What the workload did, for the check.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Envelope id → (sender index, receiver index).
    pub accepted: BTreeMap<String, (usize, usize)>,
    pub refused: u64,
    pub unavailable: u64,
    pub acked: u64,
    pub crashes: u64,
}

/// The result of one seed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub accepted: usize,
    pub delivered: usize,
    pub bounced: usize,
    pub refused: u64,
    pub faults: BTreeMap<&'static str, u64>,
}

type Nodes<S> = Arc<Mutex<Vec<Option<Arc<Node<S>>>>>>;

fn node_at<S: Store>(nodes: &Nodes<S>, i: usize) -> Option<Arc<Node<S>>> {
    nodes.lock().ok().and_then(|n| n.get(i).cloned().flatten())
}

/// Runs one seed on `stores` (one per party, fresh and empty) and checks the outcome.
pub fn run<S: FaultyStore>(seed: u64, stores: Vec<S>) -> Outcome {
    let schedule = Schedule::from_seed(seed);
    let mut outcome = Outcome {
        seed,
        ..Outcome::default()
    };
    for f in &schedule.faults {
        *outcome.faults.entry(f.kind()).or_insert(0) += 1;
    }
    *outcome.faults.entry("clock skew").or_insert(0) += 1;
    if schedule.condition.is_some() {
        *outcome
            .faults
            .entry("agreement event (condition recorded)")
            .or_insert(0) += 1;
    }
    let origin: Timestamp = match ORIGIN.parse() {
        Ok(t) => t,
        Err(e) => {
            outcome.violations.push(format!("bad origin: {e}"));
            return outcome;
        }
    };
    let keys: Vec<PartyKey> = PARTIES
        .iter()
        .enumerate()
        .filter_map(|(i, p)| key_of(seed, i, p))
        .collect();
    let mut agreements = Vec::new();
    for (name, text) in liaison_node::demo::scenario_files() {
        if text.contains("draft = true") {
            continue;
        }
        match sign_as_parties(name, text, &keys) {
            Ok(t) => agreements.push((name, t)),
            Err(e) => outcome.violations.push(format!("cannot sign {name}: {e}")),
        }
    }
    let nodes: Nodes<S> = Arc::new(Mutex::new(vec![None, None, None, None]));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let boots = Arc::new(Mutex::new([0u64; 4]));

    let mut sim = turmoil::Builder::new()
        .simulation_duration(ACTIVE + SETTLE + Duration::from_secs(10))
        .tick_duration(Duration::from_millis(10))
        .rng_seed(seed)
        .max_message_latency(Duration::from_millis(20))
        .build();

    for (i, party) in PARTIES.iter().enumerate() {
        let store = stores.get(i).cloned();
        let key = keys.get(i).cloned();
        let agreements = agreements.clone();
        let nodes = nodes.clone();
        let boots = boots.clone();
        let skew_ms = schedule.skew_ms.get(i).copied().unwrap_or(0);
        sim.host(host(party), move || {
            let store = store.clone();
            let key = key.clone();
            let agreements = agreements.clone();
            let nodes = nodes.clone();
            let boots = boots.clone();
            async move {
                let (Some(store), Some(key)) = (store, key) else {
                    return Err("no store or key".into());
                };
                let machines = loop {
                    let boot = {
                        let mut b = boots.lock().map_err(|_| "lock")?;
                        let slot = b.get_mut(i).ok_or("no slot")?;
                        *slot += 1;
                        *slot
                    };
                    if boot == 1 {
                        for (name, text) in &agreements {
                            liaison_node::install_agreement(&store, name, text, 0).await?;
                        }
                    }
                    let listener =
                        turmoil::net::TcpListener::bind(("0.0.0.0", FEDERATION_PORT)).await?;
                    let launched = liaison_node::launch(Parts {
                        config: config_of(i),
                        key: key.clone(),
                        store: store.clone(),
                        clock: Arc::new(SimClock { origin, skew_ms }),
                        random: Arc::new(SeededRandom::new(seed ^ ((i as u64) << 32) ^ boot)),
                        dialer: Arc::new(SimDialer),
                        federation: SimListener(listener),
                    })
                    .await;
                    match launched {
                        Ok(m) => break m,
                        // A node does not start while its store refuses writes (start-up
                        // records agreement events and signs a tree head); it says why
                        // and exits. A supervisor (systemd's Restart=on-failure, say)
                        // starts it again, as this does.
                        Err(liaison_node::NodeError::Store(
                            e @ (liaison_store::StoreError::DiskFull { .. }
                            | liaison_store::StoreError::ReadOnly { .. }
                            | liaison_store::StoreError::Busy { .. }),
                        )) => {
                            tracing::info!(%party, "node did not start, restarting it in 2 s: {e}");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                if let Ok(mut n) = nodes.lock()
                    && let Some(slot) = n.get_mut(i)
                {
                    *slot = Some(machines.node.clone());
                }
                std::future::pending::<()>().await;
                drop(machines);
                Ok(())
            }
        });
    }

    // The workload: people sending, replying and acknowledging.
    {
        let nodes = nodes.clone();
        let ledger = ledger.clone();
        let sends = schedule.sends.clone();
        let ack_percent = schedule.ack_percent;
        sim.client("people", async move {
            let mut r = Rng::new(seed ^ 0xac4);
            let start = tokio::time::Instant::now();
            let mut sent: Vec<(String, usize)> = Vec::new();
            for (at, route, prec, reply) in sends {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                let Some((from, to, label)) = ROUTES.get(route).copied() else {
                    continue;
                };
                let sender = party_index(from);
                let Some(node) = node_at(&nodes, sender) else {
                    continue;
                };
                let reply_to = if reply {
                    sent.last().map(|(id, _)| id.clone())
                } else {
                    None
                };
                let req = SendRequest {
                    from: from.into(),
                    to: to.into(),
                    label: label.into(),
                    precedence: PRECEDENCES.get(prec).copied().unwrap_or("ROUTINE").into(),
                    body: format!("seed {seed} message at {at} ms"),
                    originator: None,
                    reply_to,
                };
                match node.send(req).await {
                    Ok(a) => {
                        let receiver = party_index(to);
                        if let Ok(mut l) = ledger.lock() {
                            l.accepted.insert(a.id.clone(), (sender, receiver));
                        }
                        sent.push((a.id, receiver));
                    }
                    Err(liaison_node::node::SendError::Refused(_)) => {
                        if let Ok(mut l) = ledger.lock() {
                            l.refused += 1;
                        }
                    }
                    Err(_) => {
                        if let Ok(mut l) = ledger.lock() {
                            l.unavailable += 1;
                        }
                    }
                }
                // People acknowledge some of what arrived.
                for (id, receiver) in &sent {
                    if !r.chance(ack_percent / 4) {
                        continue;
                    }
                    if let Some(n) = node_at(&nodes, *receiver)
                        && let Ok(Some(row)) = n.store.inbox_get(id).await
                        && row.acked_ms.is_none()
                        && liaison_node::api::acknowledge(&n, id, "duty officer")
                            .await
                            .is_ok()
                        && let Ok(mut l) = ledger.lock()
                    {
                        l.acked += 1;
                    }
                }
            }
            tokio::time::sleep_until(start + ACTIVE + SETTLE).await;
            Ok(())
        });
    }

    // An agreement officer at JPN records the condition; the signed file is installed
    // on each node's store when it reaches that node (a crashed node reads it on
    // restart; a store refusing writes is tried again).
    if let Some((at_ms, delays)) = schedule.condition {
        let text = agreements
            .iter()
            .find(|(name, _)| name.contains(SHARING))
            .map(|(name, text)| (name.to_string(), text.clone()));
        let jpn = keys.get(3).cloned();
        let jpn_skew = schedule.skew_ms.get(3).copied().unwrap_or(0);
        let stores = stores.clone();
        sim.client("agreement officers", async move {
            let (Some((name, text)), Some(jpn)) = (text, jpn) else {
                return Err("no sharing agreement or JPN key".into());
            };
            let start = tokio::time::Instant::now();
            tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
            let at =
                origin + SignedDuration::from_millis(i64::try_from(at_ms).unwrap_or(0) + jpn_skew);
            let recorded = liaison_core::signed_document::append_event(
                &name,
                &text,
                &jpn,
                "condition-recorded",
                at,
                Some(CONDITION),
            )?;
            let mut order: Vec<(u64, usize)> =
                delays.iter().enumerate().map(|(i, d)| (*d, i)).collect();
            order.sort();
            for (delay, i) in order {
                tokio::time::sleep_until(start + Duration::from_millis(at_ms + delay)).await;
                let Some(store) = stores.get(i) else { continue };
                let now_ms = (at + SignedDuration::from_millis(i64::try_from(delay).unwrap_or(0)))
                    .as_millisecond();
                while liaison_node::install_agreement(store, &name, &recorded, now_ms)
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            tokio::time::sleep_until(start + ACTIVE + SETTLE).await;
            Ok(())
        });
    }

    // Drive the simulation, applying faults as their times come, then heal.
    let mut crashed = [false; 4];
    let mut begun = vec![false; schedule.faults.len()];
    let mut ended = vec![false; schedule.faults.len()];
    let active_ms = ACTIVE.as_millis() as u64;
    let end_ms = (ACTIVE + SETTLE).as_millis() as u64;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        if now_ms < active_ms {
            for (k, f) in schedule.faults.iter().enumerate() {
                let (from, to) = f.window();
                let (Some(b), Some(e)) = (begun.get_mut(k), ended.get_mut(k)) else {
                    continue;
                };
                if !*b && now_ms >= from {
                    *b = true;
                    apply(&mut sim, f, true, &stores, &mut crashed, &ledger);
                }
                if *b && !*e && now_ms >= to {
                    *e = true;
                    apply(&mut sim, f, false, &stores, &mut crashed, &ledger);
                }
            }
        } else {
            heal(&mut sim, &stores, &mut crashed);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                outcome.violations.push(format!("simulation failed: {e}"));
                break;
            }
        }
        if now_ms > end_ms + 10_000 {
            break;
        }
    }
    let ledger = ledger.lock().map(|l| l.clone()).unwrap_or_default();
    outcome.accepted = ledger.accepted.len();
    outcome.refused = ledger.refused;
    check(&stores, &keys, &ledger, &mut outcome);
    outcome
}

fn party_index(desk: &str) -> usize {
    let party = desk.split('.').next().unwrap_or("");
    PARTIES.iter().position(|p| *p == party).unwrap_or(0)
}

fn apply<S: FaultyStore>(
    sim: &mut turmoil::Sim<'_>,
    f: &Fault,
    begin: bool,
    stores: &[S],
    crashed: &mut [bool; 4],
    ledger: &Arc<Mutex<Ledger>>,
) {
    let name = |i: usize| host(PARTIES.get(i).copied().unwrap_or("ROK"));
    match *f {
        Fault::Partition { a, b, .. } if begin => sim.partition(name(a), name(b)),
        Fault::Partition { a, b, .. } => sim.repair(name(a), name(b)),
        Fault::Hold { a, b, .. } if begin => sim.hold(name(a), name(b)),
        Fault::Hold { a, b, .. } => sim.release(name(a), name(b)),
        Fault::Lossy { a, b, percent, .. } => sim.set_link_fail_rate(
            name(a),
            name(b),
            if begin { percent as f64 / 100.0 } else { 0.0 },
        ),
        Fault::Crash { node, .. } => {
            let Some(c) = crashed.get_mut(node) else {
                return;
            };
            if begin && !*c {
                sim.crash(name(node));
                *c = true;
                if let Ok(mut l) = ledger.lock() {
                    l.crashes += 1;
                }
            } else if !begin && *c {
                sim.bounce(name(node));
                *c = false;
            }
        }
        Fault::StoreRefuses { node, .. } => {
            if let Some(s) = stores.get(node) {
                s.refuse_writes(begin);
            }
        }
    }
}

fn heal<S: FaultyStore>(sim: &mut turmoil::Sim<'_>, stores: &[S], crashed: &mut [bool; 4]) {
    for (i, a) in PARTIES.iter().enumerate() {
        for b in PARTIES.iter().skip(i + 1) {
            sim.repair(host(a), host(b));
            sim.release(host(a), host(b));
            sim.set_link_fail_rate(host(a), host(b), 0.0);
        }
        if let Some(c) = crashed.get_mut(i)
            && *c
        {
            sim.bounce(host(a));
            *c = false;
        }
        if let Some(s) = stores.get(i) {
            s.refuse_writes(false);
        }
    }
}

/// Checks Liaison's promises on what the stores hold after everything healed.
fn check<S: Store>(stores: &[S], keys: &[PartyKey], ledger: &Ledger, outcome: &mut Outcome) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            outcome
                .violations
                .push(format!("no runtime for the check: {e}"));
            return;
        }
    };
    rt.block_on(async {
        let v = &mut outcome.violations;
        // Every accepted message: delivered exactly once, or bounced with a reason.
        for (id, (sender, receiver)) in &ledger.accepted {
            let (Some(s), Some(r)) = (stores.get(*sender), stores.get(*receiver)) else {
                continue;
            };
            let out = s.outbox_get(id).await.ok().flatten();
            let inbox = r.inbox_get(id).await.ok().flatten();
            match (&out, &inbox) {
                (None, _) => v.push(format!(
                    "{id}: accepted but not in {}'s outbox",
                    PARTIES.get(*sender).copied().unwrap_or("?")
                )),
                (Some(o), Some(_)) if o.state == OutboxState::Delivered => outcome.delivered += 1,
                (Some(o), None) if o.state == OutboxState::Bounced => {
                    if o.bounce_reason.as_deref().is_none_or(str::is_empty) {
                        v.push(format!("{id}: bounced without a reason"));
                    }
                    outcome.bounced += 1;
                }
                (Some(o), Some(i)) if o.state == OutboxState::Bounced => v.push(format!(
                    "{id}: bounced at the sender ({} → {}, at {} ms: {}) but stored by the receiver (at {} ms)",
                    o.from_desk,
                    o.to_desk,
                    o.bounced_ms.unwrap_or_default(),
                    o.bounce_reason.as_deref().unwrap_or_default(),
                    i.received_ms,
                )),
                (Some(o), i) => v.push(format!(
                    "{id}: still `{}` after the network healed ({} → {}, precedence {}, {} attempts, next at {} ms, last error: {}; at receiver: {})",
                    o.state.as_str(),
                    o.from_desk,
                    o.to_desk,
                    o.precedence,
                    o.attempts,
                    o.next_attempt_ms,
                    o.last_error.as_deref().unwrap_or("none"),
                    if i.is_some() { "stored" } else { "absent" }
                )),
            }
        }
        for (ri, r) in stores.iter().enumerate() {
            let party = PARTIES.get(ri).copied().unwrap_or("?");
            let set = match liaison_node::stored_agreements(r).await {
                Ok(s) => s,
                Err(e) => {
                    v.push(format!("{party}: agreements unreadable: {e}"));
                    continue;
                }
            };
            // Nothing arrived that the receiver's agreements refused at that instant,
            // nothing arrived that nobody accepted, and each id at most once.
            for desk in set.party_desks(party) {
                let rows = r.inbox_list(&desk, 100_000, None).await.unwrap_or_default();
                let mut seen = std::collections::BTreeSet::new();
                for row in rows {
                    if !seen.insert(row.envelope_id.clone()) {
                        v.push(format!("{}: stored twice at {party}", row.envelope_id));
                    }
                    if !ledger.accepted.contains_key(&row.envelope_id) {
                        v.push(format!(
                            "{}: at {party} but never accepted",
                            row.envelope_id
                        ));
                    }
                    let Ok(env) = Envelope::from_json(row.envelope_json.as_bytes()) else {
                        v.push(format!(
                            "{}: stored envelope does not parse",
                            row.envelope_id
                        ));
                        continue;
                    };
                    let (Ok(from), Ok(to)) =
                        (DeskId::new(&row.from_desk), DeskId::new(&row.to_desk))
                    else {
                        continue;
                    };
                    let label: &Label = &env.header.label;
                    let at = Timestamp::from_millisecond(row.received_ms)
                        .unwrap_or(Timestamp::UNIX_EPOCH);
                    let d = decide(
                        &set,
                        &ReleaseRequest {
                            from: &from,
                            to: &to,
                            label,
                            originator: Some(&env.header.originator),
                            consents: &[],
                        },
                        at,
                    );
                    if !d.allowed() {
                        v.push(format!(
                            "{}: {party} stored it at {at} although its agreements refuse it then",
                            row.envelope_id
                        ));
                    }
                }
            }
            // Every delivered message's receipt verifies against the receiver's key.
            for o in r.outbox_list(None, 100_000, None).await.unwrap_or_default() {
                if o.state != OutboxState::Delivered {
                    continue;
                }
                let Some(receipt) = o.receipt_json.as_deref() else {
                    v.push(format!("{}: delivered without a receipt", o.envelope_id));
                    continue;
                };
                let peer = PARTIES.iter().position(|p| *p == o.peer);
                let Some(pk) = peer.and_then(|p| keys.get(p)).map(PartyKey::public) else {
                    continue;
                };
                if !receipt_verifies(receipt, &o.envelope_json, &pk) {
                    v.push(format!("{}: its receipt does not verify", o.envelope_id));
                }
            }
            // The audit log verifies from its start; no peer was seen to fork.
            let mut rows = Vec::new();
            let mut start = 0;
            while let Ok(chunk) = r.audit_rows(start, 10_000).await {
                if chunk.is_empty() {
                    break;
                }
                start += chunk.len() as u64;
                rows.extend(chunk);
            }
            if let Err((i, why)) = verify_log(rows.iter().map(|x| StoredLeaf {
                index: x.index,
                entry: &x.entry,
                leaf: x.leaf,
                root_after: x.root_after,
            })) {
                v.push(format!(
                    "{party}: audit log does not verify at entry {i}: {why}"
                ));
            }
            for x in &rows {
                if let Some(AuditEntry {
                    event: AuditEvent::PeerForked { peer, detail },
                    ..
                }) = AuditEntry::decode(&x.entry)
                {
                    v.push(format!("{party} saw {peer}'s log fork: {detail}"));
                }
            }
        }
    });
}

fn receipt_verifies(
    receipt: &str,
    envelope_json: &str,
    key: &liaison_core::signing::PublicKey,
) -> bool {
    let (Ok(r), Ok(env)) = (
        serde_json::from_str::<liaison_core::envelope::Receipt>(receipt),
        Envelope::from_json(envelope_json.as_bytes()),
    ) else {
        return false;
    };
    r.verify(key, &env).is_ok()
}

impl FaultyStore for liaison_store::MemoryStore {
    fn refuse_writes(&self, refuse: bool) {
        let _ = self.set_fail_writes(refuse.then_some(liaison_store::WriteFault::DiskFull));
    }
}
