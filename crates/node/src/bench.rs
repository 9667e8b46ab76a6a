//! `liaison bench`: two nodes on loopback, 1 KiB messages, durable end to end
//! (accepted → stored by the peer → signed receipt back and recorded), measured
//! against this machine's own Ed25519 sign+verify rate in the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liaison_core::ids::PartyId;
use liaison_core::signed_document::sign_as_parties;
use liaison_core::signing::PartyKey;
use liaison_store::{SqliteStore, Store};
use tokio::sync::mpsc;

use crate::config::{Config, Delivery, Listen, Peer};
use crate::node::{Delivered, SendRequest};
use crate::{Running, ScenarioClock, SeededRandom, SharedClock};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub messages: usize,
    pub rate_messages: usize,
    pub rate_per_s: u64,
    pub backlog: usize,
    pub flash: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            messages: 20_000,
            rate_messages: 5_000,
            rate_per_s: 1_000,
            backlog: 100_000,
            flash: 200,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub ed25519_sign_verify_per_s: f64,
    /// This disk's own durable-write latency, measured in the same run: a FLASH waits
    /// for two such syncs in series (the sender's accept, the receiver's store).
    pub disk_sync: DiskSync,
    pub throughput_msgs_per_s: f64,
    pub ratio_to_sign_verify: f64,
    /// Accepted → the peer's signed receipt back and verified.
    pub latency: Latency,
    pub flash: Latency,
    pub backlog_routine: usize,
}

/// Latency percentiles in ms, to the receipt back and verified at the sender, and to
/// the receipt recorded there (one commit more).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub receipt_p50_ms: f64,
    pub receipt_p99_ms: f64,
    pub recorded_p50_ms: f64,
    pub recorded_p99_ms: f64,
    /// Other messages (a backlog draining) whose receipts were recorded meanwhile, per
    /// second of the run: what the measured traffic's precedence cost them.
    pub others_per_s: f64,
}

/// Latency of one durable 4 KiB write (`pwrite` then `fsync`, as a commit appends a
/// WAL page and syncs it), in ms.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskSync {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Times `samples` durable 4 KiB writes to a scratch file in `dir` (removed after),
/// each appended and synced as SQLite appends and syncs its WAL on a commit.
pub fn disk_sync_latency(dir: &Path, samples: usize) -> Result<DiskSync, crate::NodeError> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("disk-sync-probe");
    let io =
        |e: std::io::Error| crate::NodeError::Other(format!("disk probe {}: {e}", path.display()));
    let file = std::fs::File::create(&path).map_err(io)?;
    let page = [0x5au8; 4096];
    let mut ms = Vec::with_capacity(samples);
    for i in 0..samples {
        let start = Instant::now();
        file.write_at(&page, (i as u64) * 4096).map_err(io)?;
        file.sync_all().map_err(io)?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    drop(file);
    std::fs::remove_file(&path).map_err(io)?;
    let max_ms = ms.iter().copied().fold(0.0, f64::max);
    let (p50_ms, p99_ms) = p50_p99(ms);
    Ok(DiskSync {
        samples,
        p50_ms,
        p99_ms,
        max_ms,
    })
}

/// The median and the 99th percentile of `v`.
fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Sign + verify pairs per second on one core, the ceiling for signed delivery.
pub fn ed25519_rate(duration: Duration) -> Result<f64, crate::NodeError> {
    let party = PartyId::new("BENCH").map_err(|e| crate::NodeError::Other(e.to_string()))?;
    let key = PartyKey::from_seed(party, [7; 32]);
    let public = key.public();
    let msg = vec![0x5au8; 1024];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let sig = key.sign(&msg);
        let _ = public.verify(&msg, &sig);
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn pair(root: &Path, clock: SharedClock) -> Result<(Running, Running), crate::NodeError> {
    let err = |e: std::io::Error| crate::NodeError::Other(e.to_string());
    let port = || crate::ports::free_local_port().map_err(err);
    let parties = ["USA", "ROK"];
    let ports = [(port()?, port()?), (port()?, port()?)];
    let text = include_str!("../../../examples/scenario/rok-usa-jpn-information-sharing.toml");
    let keys: Vec<PartyKey> = ["USA", "ROK", "JPN"]
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            PartyId::new(p)
                .ok()
                .map(|id| PartyKey::from_seed(id, [i as u8 + 40; 32]))
        })
        .collect();
    let signed = sign_as_parties("bench", text, &keys)
        .map_err(|e| crate::NodeError::Other(e.to_string()))?;
    let mut running = Vec::new();
    for (i, p) in parties.iter().enumerate() {
        let (api, fed) = ports.get(i).copied().unwrap_or((0, 0));
        let (_, ofed) = ports.get(1 - i).copied().unwrap_or((0, 0));
        let config = Config {
            party: (*p).to_owned(),
            api: Listen {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], api)),
            },
            federation: Listen {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], fed)),
            },
            peers: vec![Peer {
                party: parties.get(1 - i).copied().unwrap_or("").to_owned(),
                addresses: vec![format!("127.0.0.1:{ofed}")],
            }],
            // The default batch size; retries sooner than the default, since the
            // FLASH run measures how fast a returning peer is noticed.
            delivery: Delivery {
                retry_delay_ms_min: 20,
                retry_delay_ms_max: 200,
                ..Delivery::default()
            },
        };
        let dir = root.join(p);
        let seed = keys.get(i).map(PartyKey::seed).unwrap_or([0; 32]);
        crate::init(&dir, &config, seed).await?;
        let store = SqliteStore::open(&dir.join(crate::config::STORE_FILE)).await?;
        crate::install_agreement(&store, "bench", &signed, 0).await?;
        store.close().await;
        running.push(
            crate::start(
                &dir,
                clock.clone(),
                Arc::new(SeededRandom::new(i as u64 + 1)),
            )
            .await?,
        );
    }
    let rok = running
        .pop()
        .ok_or_else(|| crate::NodeError::Other("no node".into()))?;
    let usa = running
        .pop()
        .ok_or_else(|| crate::NodeError::Other("no node".into()))?;
    Ok((usa, rok))
}

fn request(n: usize, precedence: &str, body: &str) -> SendRequest {
    SendRequest {
        from: "USA.intel".into(),
        to: "ROK.intel".into(),
        label: "USA:SECRET".into(),
        precedence: precedence.into(),
        body: format!("{n:08} {body}"),
        originator: None,
        reply_to: None,
    }
}

pub async fn run(
    root: &Path,
    opts: &BenchOptions,
    progress: impl Fn(&str),
) -> Result<BenchReport, crate::NodeError> {
    progress("measuring Ed25519 sign+verify on one core");
    let ed = ed25519_rate(Duration::from_secs(2))?;
    progress("measuring this disk's durable 4 KiB write");
    let disk_sync = disk_sync_latency(root, 1_000)?;
    let clock: SharedClock = Arc::new(ScenarioClock::new(
        "2019-11-22T12:00:00+09:00"
            .parse()
            .map_err(|e: jiff::Error| crate::NodeError::Other(e.to_string()))?,
        1.0,
    ));
    let (usa, rok) = pair(root, clock).await?;
    let node = usa.node.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Ok(mut w) = node.delivered_watch.lock() {
        *w = Some(tx);
    }
    let body = "x".repeat(1024 - 9);

    // 1. Throughput: as fast as accepts go, until every receipt is back.
    progress(&format!("throughput: {} messages", opts.messages));
    let started = Instant::now();
    let concurrency = 256;
    let mut handles = Vec::new();
    let per = opts.messages.div_ceil(concurrency);
    for c in 0..concurrency {
        let node = node.clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..per {
                if let Err(e) = node.send(request(c * per + k, "ROUTINE", &body)).await {
                    tracing::error!("bench send refused: {e:?}");
                    return;
                }
            }
        }));
    }
    let total = per * concurrency;
    let mut got = 0;
    while got < total {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    for h in handles {
        let _ = h.await;
    }
    let throughput = got as f64 / started.elapsed().as_secs_f64();

    // 2. Latency at a fixed offered rate.
    progress(&format!(
        "latency: {} messages at {}/s",
        opts.rate_messages, opts.rate_per_s
    ));
    let latency = paced(
        &node,
        &mut rx,
        opts.rate_messages,
        opts.rate_per_s,
        "ROUTINE",
        &body,
    )
    .await;

    // 3. FLASH while a ROUTINE backlog waits: the peer is down while the backlog is
    // queued, then comes back; FLASH sent now must overtake the backlog.
    progress(&format!(
        "FLASH latency with {} ROUTINE queued",
        opts.backlog
    ));
    let rok_dir = root.join("ROK");
    rok.stop().await;
    let mut handles = Vec::new();
    let per = opts.backlog.div_ceil(concurrency);
    for c in 0..concurrency {
        let node = node.clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..per {
                let _ = node
                    .send(request(1_000_000 + c * per + k, "ROUTINE", &body))
                    .await;
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let rok = crate::start(&rok_dir, node.clock.clone(), Arc::new(SeededRandom::new(9))).await?;
    let flash = paced(&node, &mut rx, opts.flash, 100, "FLASH", &body).await;

    if let Ok(mut w) = node.delivered_watch.lock() {
        *w = None;
    }
    usa.stop().await;
    rok.stop().await;
    Ok(BenchReport {
        ed25519_sign_verify_per_s: ed,
        disk_sync,
        throughput_msgs_per_s: throughput,
        ratio_to_sign_verify: throughput / ed,
        latency,
        flash,
        backlog_routine: opts.backlog,
    })
}

/// Sends `n` messages at `rate` per second; returns the latencies of this run's
/// messages (others delivered meanwhile are ignored). Times are taken where they
/// happen (at accept and in the sender's settling), not when this loop looks.
async fn paced<S: Store>(
    node: &Arc<crate::Node<S>>,
    rx: &mut mpsc::UnboundedReceiver<Delivered>,
    n: usize,
    rate: u64,
    precedence: &str,
    body: &str,
) -> Latency {
    let mut t = Tracker::default();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let mut seen = 0usize;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Instant)>();
    for k in 0..n {
        let due = start + interval * k as u32;
        tokio::time::sleep_until(due.into()).await;
        let node = node.clone();
        let req = request(2_000_000 + k, precedence, body);
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let at = Instant::now();
            if let Ok(a) = node.send(req).await {
                let _ = done_tx.send((a.id, at));
            }
        });
        while let Ok(d) = rx.try_recv() {
            t.delivered(d);
            seen += 1;
        }
        while let Ok((id, at)) = done_rx.try_recv() {
            t.accepted(id, at);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while t.receipt.len() < n && Instant::now() < deadline {
        tokio::select! {
            Some(d) = rx.recv() => {
                t.delivered(d);
                seen += 1;
            }
            Some((id, at)) = done_rx.recv() => t.accepted(id, at),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let others_per_s = seen.saturating_sub(t.receipt.len()) as f64 / start.elapsed().as_secs_f64();
    let (receipt_p50_ms, receipt_p99_ms) = p50_p99(t.receipt);
    let (recorded_p50_ms, recorded_p99_ms) = p50_p99(t.recorded);
    Latency {
        receipt_p50_ms,
        receipt_p99_ms,
        recorded_p50_ms,
        recorded_p99_ms,
        others_per_s,
    }
}

/// Pairs accept times with receipts, whichever is seen first.
#[derive(Default)]
struct Tracker {
    sent: HashMap<String, Instant>,
    early: HashMap<String, Delivered>,
    receipt: Vec<f64>,
    recorded: Vec<f64>,
}

impl Tracker {
    fn accepted(&mut self, id: String, at: Instant) {
        match self.early.remove(&id) {
            Some(d) => self.pair(at, &d),
            None => {
                self.sent.insert(id, at);
            }
        }
    }
    fn delivered(&mut self, d: Delivered) {
        match self.sent.remove(&d.id) {
            Some(at) => self.pair(at, &d),
            None => {
                self.early.insert(d.id.clone(), d);
            }
        }
    }
    fn pair(&mut self, at: Instant, d: &Delivered) {
        let ms = |then: Instant| then.saturating_duration_since(at).as_secs_f64() * 1000.0;
        self.receipt.push(ms(d.verified_at));
        self.recorded.push(ms(d.recorded_at));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn disk_probe_times_each_sync_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk_sync_latency(dir.path(), 25).unwrap();
        assert_eq!(d.samples, 25);
        assert!(d.p50_ms > 0.0 && d.p50_ms <= d.p99_ms && d.p99_ms <= d.max_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn disk_probe_names_the_file_it_cannot_write() {
        let err = disk_sync_latency(Path::new("/nonexistent-liaison-dir"), 3).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent-liaison-dir/disk-sync-probe"),
            "{err}"
        );
    }
}
