//! Real processes, real SQLite, real TLS on loopback: SIGKILL a receiver in the middle
//! of a stream, and a sender right after it accepted; nothing is lost or duplicated.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../src/local_api.rs"]
#[allow(dead_code)]
mod local_api;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn liaison(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_liaison"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) {
    let o = liaison(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A port no other test in this process was given: the OS may hand a just-released
/// port out again, so remember what was handed out.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

struct Pair {
    _tmp: tempfile::TempDir,
    dirs: [PathBuf; 2],
    apis: [String; 2],
    children: [Option<Child>; 2],
}

const PARTIES: [&str; 2] = ["USA", "ROK"];

impl Pair {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
        let dirs = [tmp.path().join("usa"), tmp.path().join("rok")];
        for (i, p) in PARTIES.iter().enumerate() {
            let other = 1 - i;
            ok(&[
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
        ok(&["agreement", "verify", file.to_str().unwrap()]);
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
            _tmp: tmp,
            dirs,
            apis,
            children: [None, None],
        };
        pair.start(0);
        pair.start(1);
        pair
    }

    fn start(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .args([
                "serve",
                "--dir",
                self.dirs[i].to_str().unwrap(),
                "--clock",
                "2019-11-22T20:00:00+09:00",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dirs[i].join("serve.log")).unwrap())
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

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn send(&self, n: usize) -> Option<String> {
        let body = format!(
            r#"{{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","precedence":"PRIORITY","body":"report {n}"}}"#
        );
        let (status, text) =
            local_api::request(&self.apis[0], "POST", "/api/v1/messages", Some(&body)).ok()?;
        assert_eq!(status, 201, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        Some(v["id"].as_str().unwrap().to_owned())
    }

    fn inbox_ids(&self) -> Vec<String> {
        let Ok((200, text)) = local_api::request(
            &self.apis[1],
            "GET",
            "/api/v1/messages?desk=ROK.intel&limit=1000",
            None,
        ) else {
            return Vec::new();
        };
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        v.iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn wait_for(&self, sent: &BTreeSet<String>) {
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
        self.kill(0);
        self.kill(1);
    }
}

#[test]
fn receiver_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut pair = Pair::new();
    let mut sent = BTreeSet::new();
    for n in 0..300 {
        if n == 120 {
            pair.kill(1);
        }
        if n == 240 {
            pair.start(1);
        }
        sent.insert(pair.send(n).unwrap());
    }
    pair.wait_for(&sent);
    // Once more after a second kill, for receipts that were lost in flight.
    pair.kill(1);
    pair.start(1);
    pair.wait_for(&sent);
}

#[test]
fn sender_killed_after_accepting_loses_nothing() {
    let mut pair = Pair::new();
    pair.kill(1);
    let mut sent = BTreeSet::new();
    for n in 0..200 {
        sent.insert(pair.send(n).unwrap());
    }
    pair.kill(0);
    pair.start(1);
    pair.start(0);
    pair.wait_for(&sent);
}
