//! `liaison demo`: the seed scenario on four local nodes (ROK, PRC, USA, JPN) sharing a
//! controllable clock that starts shortly before midnight 2019-11-23 KST.
//!
//! The story is a list of steps, each an action and the outcome it expects. In check
//! mode every outcome is verified and the run fails if one did not happen. Progress is
//! kept in the demo directory, so a demo killed mid-story resumes where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use liaison_core::ids::PartyId;
use liaison_core::signed_document::{append_event, sign_as_parties};
use liaison_core::signing::PartyKey;
use liaison_store::{SqliteStore, Store};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Delivery, Listen, NodeDir, Peer};
use crate::node::SendRequest;
use crate::{NodeError, OsRandom, Running, ScenarioClock, SharedClock};

pub const PARTIES: [&str; 4] = ["ROK", "PRC", "USA", "JPN"];
pub const DEFAULT_START: &str = "2019-11-22T23:50:00+09:00";
pub const MIDNIGHT: &str = "2019-11-23T00:00:00+09:00";
const SHARING: &str = "rok-usa-jpn-information-sharing";
const CONDITION: &str = "jpn-export-restrictions-lifted";

/// A person the demo creates on a party's node.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    pub party: &'static str,
    pub name: &'static str,
    pub display_name: &'static str,
    pub roles: &'static [&'static str],
    pub desks: &'static [&'static str],
    pub clearance: &'static str,
    pub language: &'static str,
    pub time_zone: &'static str,
}

impl DemoUser {
    /// Demo passwords are printed for everyone to use; never a pattern for real ones.
    pub fn password(&self) -> String {
        format!("{}-demo", self.name)
    }
}

const ALL_ROLES: &[&str] = &[
    "duty-officer",
    "release-officer",
    "agreement-officer",
    "administrator",
];

pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        party: "ROK",
        name: "rok.navy",
        display_name: "김민준 (ROK Navy duty)",
        roles: &["duty-officer"],
        desks: &["ROK.navy"],
        clearance: "II급 비밀",
        language: "ko",
        time_zone: "Asia/Seoul",
    },
    DemoUser {
        party: "ROK",
        name: "rok.intel",
        display_name: "이서연 (ROK intelligence duty)",
        roles: &["duty-officer"],
        desks: &["ROK.intel"],
        clearance: "II급 비밀",
        language: "ko",
        time_zone: "Asia/Seoul",
    },
    DemoUser {
        party: "ROK",
        name: "rok.junior",
        display_name: "박지훈 (cleared CONFIDENTIAL)",
        roles: &["duty-officer"],
        desks: &["ROK.intel"],
        clearance: "III급 비밀",
        language: "ko",
        time_zone: "Asia/Seoul",
    },
    DemoUser {
        party: "ROK",
        name: "rok.admin",
        display_name: "ROK administrator",
        roles: ALL_ROLES,
        desks: &["ROK.minister", "ROK.navy", "ROK.air", "ROK.intel"],
        clearance: "I급 비밀",
        language: "en",
        time_zone: "Asia/Seoul",
    },
    DemoUser {
        party: "PRC",
        name: "prc.navy",
        display_name: "王伟 (PRC Navy duty)",
        roles: &["duty-officer"],
        desks: &["PRC.navy"],
        clearance: "非密",
        language: "zh-CN",
        time_zone: "Asia/Shanghai",
    },
    DemoUser {
        party: "PRC",
        name: "prc.admin",
        display_name: "PRC administrator",
        roles: ALL_ROLES,
        desks: &["PRC.minister", "PRC.navy", "PRC.air"],
        clearance: "非密",
        language: "zh-CN",
        time_zone: "Asia/Shanghai",
    },
    DemoUser {
        party: "USA",
        name: "usa.intel",
        display_name: "Sam Carter (USA intelligence duty)",
        roles: &["duty-officer"],
        desks: &["USA.intel"],
        clearance: "SECRET",
        language: "en",
        time_zone: "Asia/Seoul",
    },
    DemoUser {
        party: "USA",
        name: "usa.admin",
        display_name: "USA administrator",
        roles: ALL_ROLES,
        desks: &["USA.secdef", "USA.usfk", "USA.intel"],
        clearance: "TOP SECRET",
        language: "en",
        time_zone: "America/New_York",
    },
    DemoUser {
        party: "JPN",
        name: "jpn.intel",
        display_name: "佐藤花子 (JPN intelligence duty)",
        roles: &["duty-officer"],
        desks: &["JPN.intel"],
        clearance: "極秘",
        language: "ja",
        time_zone: "Asia/Tokyo",
    },
    DemoUser {
        party: "JPN",
        name: "jpn.admin",
        display_name: "JPN administrator",
        roles: ALL_ROLES,
        desks: &["JPN.minister", "JPN.intel"],
        clearance: "機密",
        language: "ja",
        time_zone: "Asia/Tokyo",
    },
];

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub start: Option<Timestamp>,
    pub speed: f64,
    pub extend: bool,
    pub check: bool,
    /// First port; each party takes two (API, federation). 0 picks free ports.
    pub base_port: u16,
}

/// What the demo keeps between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub extend: bool,
    /// The scenario clock when last saved (ms since the epoch).
    pub clock_ms: Option<i64>,
    /// Steps done, by name, with what they produced (envelope ids).
    pub done: BTreeMap<String, Vec<String>>,
}

#[allow(missing_debug_implementations)]
pub struct Demo {
    pub dir: PathBuf,
    pub clock: SharedClock,
    pub nodes: BTreeMap<String, Running>,
    pub progress: Progress,
    pub check: bool,
    pub failures: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Other(e.to_string())
}

fn free_port() -> Result<u16, NodeError> {
    crate::ports::free_local_port().map_err(err)
}

fn node_dir(root: &Path, party: &str) -> PathBuf {
    root.join("nodes").join(party)
}

/// The scenario's agreement files, as shipped in `examples/scenario`.
pub fn scenario_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "rok-prc-hotlines.toml",
            include_str!("../../../examples/scenario/rok-prc-hotlines.toml"),
        ),
        (
            "rok-usa-jpn-information-sharing.toml",
            include_str!("../../../examples/scenario/rok-usa-jpn-information-sharing.toml"),
        ),
        (
            "usa-rok-cost-sharing.toml",
            include_str!("../../../examples/scenario/usa-rok-cost-sharing.toml"),
        ),
        (
            "usa-jpn-cost-sharing.toml",
            include_str!("../../../examples/scenario/usa-jpn-cost-sharing.toml"),
        ),
        (
            "korea-peace-roadmap.toml",
            include_str!("../../../examples/scenario/korea-peace-roadmap.toml"),
        ),
    ]
}

/// Creates the four nodes, their keys, and the scenario agreements signed by every
/// party, unless `root` already holds them.
async fn create(root: &Path, base_port: u16, progress: impl Fn(&str)) -> Result<(), NodeError> {
    let mut ports = Vec::new();
    for i in 0..PARTIES.len() {
        let p = if base_port == 0 {
            (free_port()?, free_port()?)
        } else {
            (base_port + 100 * i as u16, base_port + 100 * i as u16 + 1)
        };
        ports.push(p);
    }
    let mut seeds = Vec::new();
    for _ in PARTIES {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(err)?;
        seeds.push(seed);
    }
    let keys: Vec<PartyKey> = PARTIES
        .iter()
        .zip(&seeds)
        .map(|(p, s)| {
            PartyId::new(p)
                .map(|id| PartyKey::from_seed(id, *s))
                .map_err(err)
        })
        .collect::<Result<_, _>>()?;
    // Every party signs every agreement it is party to; drafts stay unsigned.
    let agreements_dir = root.join("agreements");
    std::fs::create_dir_all(&agreements_dir).map_err(err)?;
    let mut signed = Vec::new();
    for (name, text) in scenario_files() {
        let a = liaison_core::parse::parse_agreement(name, text).map_err(err)?;
        // Drafts stay unsigned.
        let text = if a.draft {
            text.to_owned()
        } else {
            sign_as_parties(name, text, &keys).map_err(err)?
        };
        std::fs::write(agreements_dir.join(name), &text).map_err(err)?;
        signed.push((name, text, a.draft));
    }
    for (i, party) in PARTIES.iter().enumerate() {
        let (api, fed) = ports.get(i).copied().unwrap_or_default();
        let peers = PARTIES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, q)| Peer {
                party: (*q).to_owned(),
                addresses: vec![format!(
                    "127.0.0.1:{}",
                    ports.get(j).map(|p| p.1).unwrap_or_default()
                )],
            })
            .collect();
        let config = Config {
            party: (*party).to_owned(),
            api: Listen {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], api)),
            },
            federation: Listen {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], fed)),
            },
            peers,
            delivery: Delivery {
                batch_max: 256,
                retry_delay_ms_min: 100,
                retry_delay_ms_max: 5_000,
            },
        };
        let dir = node_dir(root, party);
        crate::init(&dir, &config, seeds.get(i).copied().unwrap_or_default()).await?;
        let store = SqliteStore::open(&NodeDir(dir.clone()).store()).await?;
        for (name, text, draft) in &signed {
            if !draft && text.contains(&format!("id = \"{party}\"")) {
                crate::install_agreement(&store, name, text, 0).await?;
            }
        }
        let set = crate::stored_agreements(&store).await?;
        let people = crate::users::People::new(
            Arc::new(crate::clock::SystemClock),
            Arc::new(OsRandom),
            crate::users::SessionPolicy::default(),
            None,
        );
        for u in DEMO_USERS.iter().filter(|u| u.party == *party) {
            let spec = crate::users::UserSpec {
                name: u.name.to_owned(),
                display_name: Some(u.display_name.to_owned()),
                roles: u.roles.iter().map(|r| (*r).to_owned()).collect(),
                desks: u.desks.iter().map(|d| (*d).to_owned()).collect(),
                clearance: u.clearance.to_owned(),
                language: u.language.to_owned(),
                time_zone: u.time_zone.to_owned(),
            };
            crate::users::add_user(&store, party, &set, &people, &spec, &u.password(), "demo")
                .await
                .map_err(err)?;
        }
        store.close().await;
        progress(&format!("created node {party} in {}", dir.display()));
    }
    Ok(())
}

fn load_progress(root: &Path) -> Progress {
    std::fs::read_to_string(root.join("progress.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

impl Demo {
    pub async fn open(opts: &DemoOptions, progress: impl Fn(&str)) -> Result<Self, NodeError> {
        let fresh = !node_dir(&opts.dir, "ROK")
            .join(crate::config::CONFIG_FILE)
            .exists();
        if fresh {
            std::fs::create_dir_all(&opts.dir).map_err(err)?;
            create(&opts.dir, opts.base_port, &progress).await?;
        } else {
            progress(&format!("resuming the demo in {}", opts.dir.display()));
        }
        let mut saved = load_progress(&opts.dir);
        if fresh {
            saved.extend = opts.extend;
        }
        let start = match (opts.start, saved.clock_ms) {
            (Some(t), _) if fresh => t,
            (_, Some(ms)) => Timestamp::from_millisecond(ms).map_err(err)?,
            (Some(t), None) => t,
            (None, None) => DEFAULT_START.parse().map_err(err)?,
        };
        let clock: SharedClock = Arc::new(ScenarioClock::new(start, opts.speed));
        let mut nodes = BTreeMap::new();
        for p in PARTIES {
            nodes.insert(
                p.to_owned(),
                crate::start(&node_dir(&opts.dir, p), clock.clone(), Arc::new(OsRandom)).await?,
            );
        }
        Ok(Self {
            dir: opts.dir.clone(),
            clock,
            nodes,
            progress: saved,
            check: opts.check,
            failures: Vec::new(),
        })
    }

    pub fn save(&mut self) {
        self.progress.clock_ms = Some(self.clock.now_ms());
        if let Ok(t) = serde_json::to_string_pretty(&self.progress) {
            let tmp = self.dir.join("progress.json.tmp");
            if std::fs::write(&tmp, t).is_ok() {
                let _ = std::fs::rename(tmp, self.dir.join("progress.json"));
            }
        }
    }

    pub fn node(&self, party: &str) -> Result<&Running, NodeError> {
        self.nodes
            .get(party)
            .ok_or_else(|| err(format!("no node {party}")))
    }

    pub fn api_urls(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|(p, r)| (p.clone(), format!("http://{}/", r.api_addr)))
            .collect()
    }

    fn now_kst(&self) -> String {
        let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(9));
        liaison_core::lifecycle::show_instant(self.clock.now(), &zone)
    }

    fn say(&self, what: &str) {
        println!("[{}] {what}", self.now_kst());
    }

    fn verified(&mut self, ok: bool, what: &str) {
        if ok {
            println!("  ✔ {what}");
        } else {
            println!("  ✘ {what}");
            self.failures.push(what.to_owned());
        }
    }

    /// Waits (in real time, bounded) until `f` holds.
    async fn until<F, Fut>(&self, real: Duration, mut f: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if f().await {
                return true;
            }
            if start.elapsed() > real {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the scenario clock reaches `t`.
    async fn clock_reaches(&self, t: Timestamp) {
        loop {
            let now = self.clock.now();
            if now >= t {
                return;
            }
            let left = t.as_millisecond() - now.as_millisecond();
            tokio::time::sleep(
                self.clock
                    .real_duration(left)
                    .min(Duration::from_millis(200)),
            )
            .await;
        }
    }

    fn done(&self, step: &str) -> Option<Vec<String>> {
        self.progress.done.get(step).cloned()
    }

    fn mark(&mut self, step: &str, ids: Vec<String>) {
        self.progress.done.insert(step.to_owned(), ids);
        self.save();
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of a message a person writes"
    )]
    async fn send(
        &self,
        party: &str,
        from: &str,
        to: &str,
        label: &str,
        precedence: &str,
        body: &str,
        originator: Option<&str>,
    ) -> Result<String, String> {
        let node = self.node(party).map_err(|e| e.to_string())?.node.clone();
        let req = SendRequest {
            from: from.into(),
            to: to.into(),
            label: label.into(),
            precedence: precedence.into(),
            body: body.into(),
            originator: originator.map(str::to_owned),
            reply_to: None,
        };
        match node.send(req).await {
            Ok(a) => Ok(a.id),
            Err(crate::node::SendError::Refused(d)) => Err(d
                .reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n      ")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn inbox_label(&self, party: &str, id: &str) -> Option<String> {
        let node = &self.node(party).ok()?.node;
        node.store
            .inbox_get(id)
            .await
            .ok()
            .flatten()
            .map(|r| r.receiver_label)
    }

    async fn outbox_state(&self, party: &str, id: &str) -> Option<(String, Option<String>, bool)> {
        let node = &self.node(party).ok()?.node;
        let r = node.store.outbox_get(id).await.ok().flatten()?;
        Some((
            r.state.as_str().to_owned(),
            r.bounce_reason,
            r.acked_ms.is_some(),
        ))
    }

    async fn hotlines_up(&self, party: &str) -> bool {
        let Ok(r) = self.node(party) else {
            return false;
        };
        let views = crate::api::hotline_views(&r.node);
        !views.is_empty() && views.iter().all(|h| h.state == "up")
    }

    /// Plays the story; returns the failures (empty when every outcome happened).
    pub async fn play(&mut self) -> Result<(), NodeError> {
        let wait = Duration::from_secs(if self.check { 60 } else { 600 });
        let midnight: Timestamp = MIDNIGHT.parse().map_err(err)?;

        // 1. Hotlines come up.
        if self.done("hotlines").is_none() {
            self.say("ROK–PRC hotlines: heartbeats start (tested hourly, and at random moments)");
            let up = self
                .until(wait, || async {
                    self.hotlines_up("ROK").await && self.hotlines_up("PRC").await
                })
                .await;
            self.verified(
                up,
                "ministers', navy and air-force hotlines are up on both sides",
            );
            self.mark("hotlines", vec![]);
        }

        // 2. A FLASH call ROK.navy → PRC.navy, acknowledged by a person in time.
        let flash = match self.done("flash-acked") {
            Some(ids) => ids,
            None => {
                self.say("ROK.navy → PRC.navy FLASH: \"Unidentified vessel crossing the maritime boundary at 37.5N 124.6E\"");
                let id = self
                    .send(
                        "ROK",
                        "ROK.navy",
                        "PRC.navy",
                        "ROK:평문",
                        "FLASH",
                        "Unidentified vessel crossing the maritime boundary at 37.5N 124.6E",
                        None,
                    )
                    .await;
                self.verified(id.is_ok(), "accepted under the ROK–PRC hotlines agreement");
                let ids: Vec<String> = id.into_iter().collect();
                self.mark("flash-acked", ids.clone());
                ids
            }
        };
        if let Some(id) = flash.first() {
            let arrived = self
                .until(wait, || async {
                    self.inbox_label("PRC", id).await.is_some()
                })
                .await;
            let label = self.inbox_label("PRC", id).await.unwrap_or_default();
            self.verified(
                arrived && label == "PRC:非密",
                &format!("arrives at PRC.navy marked `{label}`"),
            );
            if let Ok(prc) = self.node("PRC") {
                let _ = crate::api::acknowledge(&prc.node, id, "PRC duty officer Wang").await;
            }
            let acked = self
                .until(wait, || async {
                    self.outbox_state("ROK", id).await.is_some_and(|s| s.2)
                })
                .await;
            self.say("PRC.navy duty officer Wang acknowledges");
            self.verified(acked, "ROK holds PRC's signed acknowledgement receipt");
        }

        // 3. A second FLASH on the air-force line that nobody acknowledges.
        let unacked = match self.done("flash-unacked") {
            Some(ids) => ids,
            None => {
                self.say("ROK.air → PRC.air FLASH: \"Aircraft without transponder entering KADIZ\"; nobody answers");
                let id = self
                    .send(
                        "ROK",
                        "ROK.air",
                        "PRC.air",
                        "ROK:평문",
                        "FLASH",
                        "Aircraft without transponder entering KADIZ",
                        None,
                    )
                    .await;
                let ids: Vec<String> = id.into_iter().collect();
                self.mark("flash-unacked", ids.clone());
                ids
            }
        };
        if let Some(id) = unacked.first() {
            let escalated = self
                .until(wait, || async {
                    let Ok(prc) = self.node("PRC") else {
                        return false;
                    };
                    prc.node
                        .store
                        .escalation_list()
                        .await
                        .is_ok_and(|l| l.iter().any(|e| &e.envelope_id == id))
                })
                .await;
            self.verified(
                escalated,
                "not acknowledged within the 5-minute deadline: PRC raises an escalation",
            );
        }

        // 4. SECRET reports from USA.intel reach ROK and JPN in their own markings.
        let reports = match self.done("reports") {
            Some(ids) => ids,
            None => {
                self.say("USA.intel → ROK.intel and JPN.intel, USA:SECRET reports");
                let a = self
                    .send(
                        "USA",
                        "USA.intel",
                        "ROK.intel",
                        "USA:SECRET",
                        "IMMEDIATE",
                        "Missile launch indications, Sinpo",
                        None,
                    )
                    .await;
                let b = self
                    .send(
                        "USA",
                        "USA.intel",
                        "JPN.intel",
                        "USA:SECRET",
                        "IMMEDIATE",
                        "Missile launch indications, Sinpo",
                        None,
                    )
                    .await;
                let ids: Vec<String> = a.into_iter().chain(b).collect();
                self.mark("reports", ids.clone());
                ids
            }
        };
        for (id, party, want) in reports
            .iter()
            .zip([("ROK", "ROK:II급 비밀"), ("JPN", "JPN:極秘")])
            .map(|(id, (p, w))| (id, p, w))
        {
            let arrived = self
                .until(wait, || async {
                    self.inbox_label(party, id).await.is_some()
                })
                .await;
            let label = self.inbox_label(party, id).await.unwrap_or_default();
            self.verified(
                arrived && label == want,
                &format!("{party}.intel sees it as `{label}`"),
            );
        }

        // 5. JPN tries to pass USA's report to PRC.
        if self.done("jpn-to-prc").is_none() {
            self.say("JPN.intel tries to pass USA's report to PRC.navy");
            let r = self
                .send(
                    "JPN",
                    "JPN.intel",
                    "PRC.navy",
                    "USA:SECRET",
                    "ROUTINE",
                    "Missile launch indications, Sinpo",
                    Some("USA"),
                )
                .await;
            if let Err(reasons) = &r {
                println!("      {reasons}");
            }
            self.verified(
                r.is_err(),
                "refused: no agreement between JPN and PRC, no consent from USA",
            );
            self.mark("jpn-to-prc", vec![]);
        }

        // 6. Optionally, Japan lifts the export restrictions before midnight.
        if self.progress.extend && self.done("condition").is_none() {
            self.say(
                "JPN records: export restrictions on chemicals for ROK's chip industry lifted",
            );
            let r = self.record_condition().await;
            self.verified(
                r.is_ok(),
                &format!(
                    "condition `{CONDITION}` recorded, signed by JPN, installed on every node{}",
                    r.err().map(|e| format!(": {e}")).unwrap_or_default()
                ),
            );
            self.mark("condition", vec![]);
        }

        // 7. Just before midnight JPN's link drops; ROK queues classified traffic for JPN.
        let queued = match self.done("queued") {
            Some(ids) => ids,
            None => {
                let before: Timestamp = "2019-11-22T23:59:00+09:00".parse().map_err(err)?;
                self.clock_reaches(before).await;
                self.say("JPN's node goes offline for maintenance; ROK.intel sends two II급 비밀 reports to JPN.intel");
                if let Some(jpn) = self.nodes.remove("JPN") {
                    jpn.stop().await;
                }
                let mut ids = Vec::new();
                for body in [
                    "Coastal radar picture, East Sea",
                    "Submarine contact report",
                ] {
                    if let Ok(id) = self
                        .send(
                            "ROK",
                            "ROK.intel",
                            "JPN.intel",
                            "ROK:II급 비밀",
                            "PRIORITY",
                            body,
                            None,
                        )
                        .await
                    {
                        ids.push(id);
                    }
                }
                self.verified(
                    ids.len() == 2,
                    "accepted before midnight and queued while JPN is away",
                );
                self.mark("queued", ids.clone());
                ids
            }
        };

        // 8. The clock crosses midnight.
        if self.done("midnight").is_none() {
            self.clock_reaches(midnight + jiff::SignedDuration::from_secs(5))
                .await;
            self.say("midnight KST has passed");
            if !self.nodes.contains_key("JPN") {
                let jpn = crate::start(
                    &node_dir(&self.dir, "JPN"),
                    self.clock.clone(),
                    Arc::new(OsRandom),
                )
                .await?;
                self.nodes.insert("JPN".into(), jpn);
                self.say("JPN's node is back");
            }
            self.mark("midnight", vec![]);
        }
        if !self.nodes.contains_key("JPN") {
            let jpn = crate::start(
                &node_dir(&self.dir, "JPN"),
                self.clock.clone(),
                Arc::new(OsRandom),
            )
            .await?;
            self.nodes.insert("JPN".into(), jpn);
        }
        for id in &queued {
            if self.progress.extend {
                let ok = self
                    .until(wait, || async {
                        self.inbox_label("JPN", id).await.is_some()
                    })
                    .await;
                self.verified(ok, "the condition was recorded in time: ROK's queued report reaches JPN after midnight");
            } else {
                let ok = self
                    .until(wait, || async {
                        self.outbox_state("ROK", id)
                            .await
                            .is_some_and(|s| s.0 == "bounced")
                    })
                    .await;
                let reason = self
                    .outbox_state("ROK", id)
                    .await
                    .and_then(|s| s.1)
                    .unwrap_or_default();
                if ok {
                    println!("      {reason}");
                }
                self.verified(
                    ok && reason.contains("notice of withdrawal"),
                    "ROK's queued report bounces: ROK's participation lapsed at midnight",
                );
            }
        }
        if self.done("after-midnight").is_none() {
            let usa = self
                .send(
                    "USA",
                    "USA.intel",
                    "JPN.intel",
                    "USA:SECRET",
                    "ROUTINE",
                    "Follow-up assessment",
                    None,
                )
                .await;
            self.verified(
                usa.is_ok(),
                "USA → JPN SECRET is still allowed after midnight",
            );
            if let Ok(id) = &usa {
                let arrived = self
                    .until(wait, || async {
                        self.inbox_label("JPN", id).await.is_some()
                    })
                    .await;
                self.verified(arrived, "and reaches JPN.intel");
            }
            let rok = self
                .send(
                    "ROK",
                    "ROK.intel",
                    "JPN.intel",
                    "ROK:II급 비밀",
                    "ROUTINE",
                    "New report",
                    None,
                )
                .await;
            if self.progress.extend {
                self.verified(
                    rok.is_ok(),
                    "ROK → JPN classified traffic goes on: the agreement holds",
                );
            } else {
                if let Err(r) = &rok {
                    println!("      {r}");
                }
                self.verified(
                    rok.is_err(),
                    "new ROK → JPN classified traffic is refused with the reason",
                );
            }
            self.mark("after-midnight", vec![]);
        }

        // 9. Obligations with their figures and sources.
        self.say("cost-sharing obligations, as the agreements record them:");
        let mut shown = 0;
        if let Ok(usa) = self.node("USA") {
            for c in usa.node.agreements().iter() {
                for o in &c.agreement.obligations {
                    if let liaison_core::agreement::Owed::Payment { amount, currency } = &o.owed {
                        println!(
                            "      {} → {}: {currency} {} per {:?} ({:?}) — {}",
                            o.from,
                            o.to,
                            liaison_core::agreement::thousands(*amount),
                            o.per,
                            o.state,
                            o.source
                        );
                        shown += 1;
                    }
                }
            }
        }
        self.verified(
            shown >= 4,
            "four payment obligations shown with figures and sources",
        );

        // 10. Every event is in each party's audit log, which verifies.
        for (p, r) in &self.nodes {
            let rows = r
                .node
                .store
                .audit_rows(0, u32::MAX)
                .await
                .unwrap_or_default();
            let ok = liaison_core::audit::verify_log(rows.iter().map(|r| {
                liaison_core::audit::StoredLeaf {
                    index: r.index,
                    entry: &r.entry,
                    leaf: r.leaf,
                    root_after: r.root_after,
                }
            }))
            .is_ok();
            println!(
                "  {} {p}: audit log of {} entries verifies",
                if ok { "✔" } else { "✘" },
                rows.len()
            );
            if !ok {
                self.failures
                    .push(format!("{p}'s audit log does not verify"));
            }
        }
        self.save();
        Ok(())
    }

    async fn record_condition(&self) -> Result<(), NodeError> {
        let path = self.dir.join("agreements").join(format!("{SHARING}.toml"));
        let text = std::fs::read_to_string(&path).map_err(err)?;
        let key = crate::load_key(&node_dir(&self.dir, "JPN"), "JPN")?;
        let updated = append_event(
            &path.display().to_string(),
            &text,
            &key,
            "condition-recorded",
            self.clock.now(),
            Some(CONDITION),
        )
        .map_err(err)?;
        std::fs::write(&path, &updated).map_err(err)?;
        for r in self.nodes.values() {
            crate::install_agreement(
                &r.node.store,
                &path.display().to_string(),
                &updated,
                self.clock.now_ms(),
            )
            .await?;
            r.node.refresh_agreements().await?;
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        self.save();
        for (_, r) in std::mem::take(&mut self.nodes) {
            r.stop().await;
        }
    }
}
