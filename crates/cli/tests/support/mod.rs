//! Shared by the CLI's integration tests: the `liaison` binary, and a USA–ROK node
//! pair made with it (`init`, `keygen`, `agreement sign --add-key`, `install`, `serve`).

#![allow(dead_code)]

#[path = "../../src/local_api.rs"]
#[allow(dead_code)]
pub mod local_api;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn liaison(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_liaison"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(args: &[&str]) -> String {
    let o = liaison(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// What a command printed, stdout then stderr.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs and expects exit 1; returns stdout + stderr.
pub fn fails(args: &[&str]) -> String {
    let o = liaison(args);
    let text = text(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {text}");
    text
}

pub fn free_port() -> u16 {
    liaison_node::ports::free_local_port().unwrap()
}

pub struct Pair {
    pub tmp: tempfile::TempDir,
    pub dirs: [PathBuf; 2],
    pub apis: [String; 2],
    pub public_keys: [String; 2],
    children: [Option<Child>; 2],
}

pub const PARTIES: [&str; 2] = ["USA", "ROK"];

impl Pair {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
        let dirs = [tmp.path().join("usa"), tmp.path().join("rok")];
        let mut public_keys = [String::new(), String::new()];
        for (i, p) in PARTIES.iter().enumerate() {
            let other = 1 - i;
            let out = ok(&[
                "init",
                "--party",
                p,
                "--dir",
                dirs[i].to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{}", ports[i].0),
                "--federation",
                &format!("127.0.0.1:{}", ports[i].1),
                "--peer",
                &format!("{}=127.0.0.1:{}", PARTIES[other], ports[other].1),
            ]);
            public_keys[i] = out
                .split_whitespace()
                .find(|w| w.starts_with("ed25519:"))
                .unwrap()
                .to_owned();
        }
        ok(&[
            "keygen",
            "--party",
            "JPN",
            "--out",
            tmp.path().join("jpn").to_str().unwrap(),
        ]);
        let file = tmp.path().join("sharing.toml");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/scenario/rok-usa-jpn-information-sharing.toml"),
            &file,
        )
        .unwrap();
        let keys = [
            dirs[0].join("keys/USA.key"),
            dirs[1].join("keys/ROK.key"),
            tmp.path().join("jpn/JPN.key"),
        ];
        for add in [true, false] {
            for k in &keys {
                let mut args = vec![
                    "agreement",
                    "sign",
                    file.to_str().unwrap(),
                    "--key",
                    k.to_str().unwrap(),
                ];
                if add {
                    args.push("--add-key");
                }
                ok(&args);
            }
        }
        for d in &dirs {
            ok(&[
                "agreement",
                "install",
                file.to_str().unwrap(),
                "--dir",
                d.to_str().unwrap(),
            ]);
        }
        let apis = [
            format!("127.0.0.1:{}", ports[0].0),
            format!("127.0.0.1:{}", ports[1].0),
        ];
        let mut pair = Pair {
            tmp,
            dirs,
            apis,
            public_keys,
            children: [None, None],
        };
        pair.start(0);
        pair.start(1);
        pair
    }

    pub fn start(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .args([
                "serve",
                "--dir",
                self.dirs[i].to_str().unwrap(),
                "--clock",
                "2019-11-22T20:00:00+09:00",
            ])
            .stdout(Stdio::null())
            // Appended across restarts, so a failure can show every life of the node.
            .env(
                "LIAISON_LOG",
                std::env::var("LIAISON_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dirs[i].join("serve.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
        let start = Instant::now();
        while local_api::request(&self.apis[i], "GET", "/healthz", None)
            .map(|r| r.0)
            .ok()
            != Some(200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node {} did not start: {}",
                PARTIES[i],
                std::fs::read_to_string(self.dirs[i].join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: the node stops cleanly and its store is closed (WAL checkpointed).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let status = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    c.kill().unwrap();
                    c.wait().unwrap();
                    panic!("node {} did not stop on Ctrl-C", PARTIES[i]);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A local API call to node `i` with the operator's token.
    pub fn api(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let token = std::fs::read_to_string(self.dirs[i].join("operator.token"))?;
        local_api::request_as(&self.apis[i], Some(token.trim()), method, path, body)
    }

    pub fn send(&self, n: usize) -> String {
        let body = format!(
            r#"{{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","precedence":"PRIORITY","body":"report {n}"}}"#
        );
        let (status, text) = self
            .api(0, "POST", "/api/v1/messages", Some(&body))
            .unwrap();
        assert_eq!(status, 201, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub fn wait_delivered(&self, sent: &BTreeSet<String>) {
        let start = Instant::now();
        loop {
            let delivered = sent
                .iter()
                .filter(|id| {
                    self.api(0, "GET", &format!("/api/v1/messages/{id}"), None)
                        .ok()
                        .and_then(|(_, t)| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .is_some_and(|v| v["state"] == "delivered")
                })
                .count();
            if delivered == sent.len() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{delivered} of {} delivered",
                sent.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// How node `i` ended, if it is no longer running (it should be).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.children[i]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `lines` lines node `i` logged, across its restarts.
    pub fn log(&self, i: usize, lines: usize) -> String {
        let all = std::fs::read_to_string(self.dirs[i].join("serve.log")).unwrap_or_default();
        let from = all.lines().count().saturating_sub(lines);
        all.lines().skip(from).collect::<Vec<_>>().join("\n")
    }

    pub fn inbox_ids(&self) -> Vec<String> {
        let Ok((200, text)) =
            self.api(1, "GET", "/api/v1/messages?desk=ROK.intel&limit=1000", None)
        else {
            return Vec::new();
        };
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        v.iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn wait_for(&self, sent: &BTreeSet<String>) {
        let start = Instant::now();
        loop {
            let ids = self.inbox_ids();
            let unique: BTreeSet<String> = ids.iter().cloned().collect();
            assert_eq!(
                unique.len(),
                ids.len(),
                "duplicates in the receiver's inbox"
            );
            assert!(
                unique.is_subset(sent),
                "the receiver holds messages nobody sent"
            );
            if unique == *sent {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} of {} arrived",
                unique.len(),
                sent.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
