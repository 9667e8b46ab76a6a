//! Test support: a cluster of real nodes on loopback sharing a manual clock.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liaison_core::envelope::{Envelope, EnvelopeBatch, EnvelopeId, Header};
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::precedence::Precedence;
use liaison_core::signed_document::sign_as_parties;
use liaison_core::signing::PartyKey;
use liaison_node::config::{Config, Delivery, Listen, Peer};
use liaison_node::{ManualClock, Running, SeededRandom};
use liaison_store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BEFORE_MIDNIGHT: &str = "2019-11-22T22:00:00+09:00";
pub const ALL_PARTIES: [&str; 4] = ["ROK", "PRC", "USA", "JPN"];
const WAIT: Duration = Duration::from_secs(30);

pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenario")
}

pub fn seed_of(party: &str) -> [u8; 32] {
    let i = ALL_PARTIES.iter().position(|p| *p == party).unwrap() as u8;
    [i + 11; 32]
}

pub fn key_of(party: &str) -> PartyKey {
    PartyKey::from_seed(PartyId::new(party).unwrap(), seed_of(party))
}

/// The scenario's agreement files signed by every party's key.
pub fn signed_scenario() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = std::fs::read_to_string(&p).unwrap();
        if text.contains("draft = true") {
            continue;
        }
        let keys: Vec<PartyKey> = ALL_PARTIES.iter().map(|p| key_of(p)).collect();
        text = sign_as_parties(&name, &text, &keys).unwrap();
        out.push((name, text));
    }
    out
}

fn free_port() -> u16 {
    liaison_node::ports::free_local_port().unwrap()
}

pub struct Cluster {
    pub clock: Arc<ManualClock>,
    /// Wall clock for sessions and sign-in throttling.
    pub wall: Arc<ManualClock>,
    _tmp: tempfile::TempDir,
    pub dirs: BTreeMap<String, PathBuf>,
    pub configs: BTreeMap<String, Config>,
    pub nodes: BTreeMap<String, Option<Running>>,
}

impl Cluster {
    pub async fn start(parties: &[&str], at: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(at.parse().unwrap()));
        let ports: BTreeMap<String, (u16, u16)> = parties
            .iter()
            .map(|p| (p.to_string(), (free_port(), free_port())))
            .collect();
        let agreements = signed_scenario();
        let mut dirs = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for p in parties {
            let (api, fed) = ports[*p];
            let peers = parties
                .iter()
                .filter(|q| *q != p)
                .map(|q| Peer {
                    party: q.to_string(),
                    addresses: vec![format!("127.0.0.1:{}", ports[*q].1)],
                })
                .collect();
            let config = Config {
                party: p.to_string(),
                api: Listen {
                    listen: format!("127.0.0.1:{api}").parse().unwrap(),
                },
                federation: Listen {
                    listen: format!("127.0.0.1:{fed}").parse().unwrap(),
                },
                peers,
                delivery: Delivery {
                    batch_max: 256,
                    retry_delay_ms_min: 50,
                    retry_delay_ms_max: 400,
                },
            };
            let dir = tmp.path().join(p);
            liaison_node::init(&dir, &config, seed_of(p)).await.unwrap();
            let store = SqliteStore::open(&dir.join("node.db")).await.unwrap();
            for (name, text) in &agreements {
                liaison_node::install_agreement(&store, name, text, 0)
                    .await
                    .unwrap();
            }
            store.close().await;
            dirs.insert(p.to_string(), dir);
            configs.insert(p.to_string(), config);
        }
        let mut c = Cluster {
            wall: Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap())),
            clock,
            _tmp: tmp,
            dirs,
            configs,
            nodes: BTreeMap::new(),
        };
        for p in parties {
            c.restart(p).await;
        }
        c
    }

    pub async fn restart(&mut self, party: &str) {
        let dir = self.dirs[party].clone();
        // A fresh random stream per start: a restarted node must not reuse envelope ids.
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seed = u64::from(seed_of(party)[0])
            + 1000 * STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let running = liaison_node::start_with(
            &dir,
            self.clock.clone(),
            self.wall.clone(),
            Arc::new(SeededRandom::new(seed)),
        )
        .await
        .unwrap();
        self.nodes.insert(party.to_owned(), Some(running));
    }

    pub async fn kill(&mut self, party: &str) {
        if let Some(Some(r)) = self.nodes.insert(party.to_owned(), None) {
            r.stop().await;
        }
    }

    pub async fn stop(mut self) {
        let parties: Vec<String> = self.nodes.keys().cloned().collect();
        for p in parties {
            self.kill(&p).await;
        }
    }

    pub fn running(&self, party: &str) -> &Running {
        self.nodes[party].as_ref().unwrap()
    }

    pub fn public_key(&self, party: &str) -> [u8; 32] {
        key_of(party).public().to_bytes()
    }

    pub fn party_key(&self, party: &str) -> PartyKey {
        key_of(party)
    }

    pub fn federation_addr(&self, party: &str) -> String {
        self.configs[party].federation.listen.to_string()
    }

    pub async fn api(
        &self,
        party: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let token = std::fs::read_to_string(self.dirs[party].join("operator.token")).unwrap();
        http_as(
            &self.configs[party].api.listen.to_string(),
            Some(token.trim()),
            method,
            path,
            body,
        )
        .await
    }

    pub async fn send(
        &self,
        party: &str,
        from: &str,
        to: &str,
        label: &str,
        precedence: &str,
        body: &str,
    ) -> Result<String, String> {
        let req = serde_json::json!({ "from": from, "to": to, "label": label, "precedence": precedence, "body": body }).to_string();
        let (status, text) = self
            .api(party, "POST", "/api/v1/messages", Some(&req))
            .await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status == 201 {
            Ok(v["id"].as_str().unwrap().to_owned())
        } else {
            Err(format!("{status} {text}"))
        }
    }

    pub async fn inbox(&self, party: &str, desk: &str) -> Vec<serde_json::Value> {
        let (status, text) = self
            .api(
                party,
                "GET",
                &format!("/api/v1/messages?desk={desk}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn message(&self, party: &str, id: &str) -> serde_json::Value {
        let (status, text) = self
            .api(party, "GET", &format!("/api/v1/messages/{id}"), None)
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn wait_inbox(&self, party: &str, desk: &str, n: usize) {
        let start = Instant::now();
        loop {
            let got = self.inbox(party, desk).await.len();
            if got >= n {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{party} {desk}: {got} of {n} messages arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_state(&self, party: &str, id: &str, state: &str) {
        let start = Instant::now();
        loop {
            let m = self.message(party, id).await;
            if m["state"] == state {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{party} {id}: state {} never became {state}",
                m["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_hotline(&self, party: &str, channel: &str, state: &str) {
        let start = Instant::now();
        loop {
            let (_, text) = self.api(party, "GET", "/api/v1/hotlines", None).await;
            let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
            if v.iter()
                .any(|h| h["channel"] == channel && h["state"] == state)
            {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{party} {channel} never became {state}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a line of the party's metrics: some are counted by the server after
    /// the client already has its answer (a refused handshake, say).
    pub async fn wait_metric(&self, party: &str, line: &str) {
        let start = Instant::now();
        loop {
            let (_, text) = self.api(party, "GET", "/metrics", None).await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{party} never showed `{line}`: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_escalation(&self, party: &str, id: &str) {
        let start = Instant::now();
        loop {
            let (_, text) = self.api(party, "GET", "/api/v1/escalations", None).await;
            if text.contains(id) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "{party}: no escalation for {id}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An envelope as a sender's outbox holds it: signed only when sent
    /// ([`Cluster::signed_batch`]).
    pub fn envelope(
        &self,
        key: &PartyKey,
        from: &str,
        to: &str,
        label: &str,
        body: &str,
    ) -> Envelope {
        self.envelope_numbered(42, key, from, to, label, body)
    }

    /// [`Cluster::envelope`] with an id made from `n`.
    pub fn envelope_numbered(
        &self,
        n: u8,
        key: &PartyKey,
        from: &str,
        to: &str,
        label: &str,
        body: &str,
    ) -> Envelope {
        let header = Header {
            id: EnvelopeId::from_random([n; 16]),
            from: DeskId::new(from).unwrap(),
            to: DeskId::new(to).unwrap(),
            originator: key.party.clone(),
            agreement: "rok-usa-jpn-information-sharing".into(),
            agreement_version: 1,
            channel: "intelligence-exchange".into(),
            label: label.parse().unwrap(),
            precedence: Precedence::Routine,
            created_at: self.clock.now_ts(),
            reply_to: None,
            body_sha256: String::new(),
        };
        Envelope::unsigned(header, body.to_owned()).unwrap()
    }

    /// `envelopes` as they cross: one batch, signed by `key`, in wire form.
    pub fn signed_batch(&self, key: &PartyKey, envelopes: &[&Envelope]) -> EnvelopeBatch {
        EnvelopeBatch::sign(
            envelopes.iter().map(|e| (*e).clone()).collect(),
            self.clock.now_ts(),
            key,
        )
    }

    pub async fn audit_kinds(&self, party: &str) -> Vec<String> {
        let store = &self.running(party).node.store;
        let rows = store.audit_rows(0, 100_000).await.unwrap();
        rows.iter()
            .map(|r| {
                let e = liaison_core::audit::AuditEntry::decode(&r.entry).unwrap();
                e.event.name().to_owned()
            })
            .collect()
    }
}

trait NowTs {
    fn now_ts(&self) -> jiff::Timestamp;
}
impl NowTs for ManualClock {
    fn now_ts(&self) -> jiff::Timestamp {
        liaison_node::Clock::now(self)
    }
}

/// HTTP/1.1 over a fresh connection; enough for the local API in tests.
pub async fn http_as(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let page = browse(
        addr,
        method,
        path,
        &headers,
        body.map(|b| ("application/json", b)),
    )
    .await;
    (page.status, page.body)
}

/// A response as a browser would see it.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// The session cookie a sign-in set.
    pub fn session_cookie(&self) -> Option<String> {
        let v = self.header("set-cookie")?;
        v.split(';').next().map(str::to_owned)
    }

    /// The CSRF secret a signed-in page carries.
    pub fn csrf(&self) -> String {
        let i = self.body.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
        let rest = &self.body[i..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// One HTTP/1.1 request with extra headers; reads the whole response.
pub async fn browse(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Page {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ctype, body) = body.unwrap_or(("application/json", ""));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // A server may answer before reading a huge body (413); ignore a reset while writing.
    let _ = s.write_all(body.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            r = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_owned()
    };
    Page {
        status,
        head: head.to_owned(),
        body,
    }
}
