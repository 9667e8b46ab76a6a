//! A real node on a real, small file system: it fills up, then turns read-only. The
//! node must refuse new work with an answer that says why (not hang, not crash, not
//! claim to have accepted), keep everything it had accepted, and carry on once the
//! volume is writable again.
//!
//! The volume is a tmpfs mounted over the sender's node directory, which needs
//! `CAP_SYS_ADMIN` (tests run as root in CI); where mounting is not permitted the test
//! says so and passes without running.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// A tmpfs over a directory, keeping what was in it; unmounted on drop.
struct Volume {
    at: PathBuf,
}

impl Volume {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        let keep = at.with_extension("keep");
        copy_dir(at, &keep);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        copy_dir(&keep, at);
        Some(Self { at: at.to_owned() })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.at)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn send_big(pair: &Pair, n: usize) -> (u16, String) {
    let filler = "x".repeat(48 * 1024);
    let body = format!(
        r#"{{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","body":"report {n} {filler}"}}"#
    );
    pair.api(0, "POST", "/api/v1/messages", Some(&body))
        .unwrap()
}

fn accepted_id(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_full_then_read_only_volume_refuses_new_work_and_loses_nothing() {
    let mut pair = Pair::new();
    // The receiver is away, so accepted messages stay in the sender's outbox.
    pair.kill(1);
    pair.stop(0);
    let Some(volume) = Volume::mount(&pair.dirs[0], "3m") else {
        println!("skipped: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    };
    pair.start(0);

    // Fill the volume. Each accept is durable before it is answered, so the first
    // refusal must come with a 5xx that names the cause.
    let mut accepted = BTreeSet::new();
    let mut refusal = None;
    for n in 0..400 {
        match send_big(&pair, n) {
            (201, text) => {
                accepted.insert(accepted_id(&text));
            }
            (status, text) => {
                refusal = Some((status, text));
                break;
            }
        }
    }
    let (status, text) = refusal.expect("a 3 MiB volume never filled");
    assert!(
        !accepted.is_empty(),
        "nothing was accepted before the volume filled"
    );
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("disk full"), "{text}");
    // Still up and still refusing clearly, not hanging or crashing.
    let (status, text) = send_big(&pair, 1000);
    assert_eq!(status, 503, "{text}");
    println!("full volume: {} accepted, then: {text}", accepted.len());

    // Room again: the node takes new work without a restart (its writer connection
    // must not stay stuck in the transaction SQLite rolled back).
    volume.remount("size=64m");
    let (status, text) = send_big(&pair, 2000);
    assert_eq!(status, 201, "{text}");
    accepted.insert(accepted_id(&text));

    // Read-only: a volume cannot turn read-only under open files, so stop the node
    // first; started on it, the node must refuse to run and say why.
    pair.stop(0);
    volume.remount("ro");
    let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .args(["serve", "--dir", pair.dirs[0].to_str().unwrap()])
        .args(["--clock", "2019-11-22T20:00:00+09:00"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "served from a read-only volume: {stderr}"
    );
    assert!(
        stderr.contains("read-only") || stderr.contains("writable"),
        "{stderr}"
    );
    println!("read-only volume: {}", stderr.trim());

    // Writable again: everything accepted before reaches the receiver, once each.
    volume.remount("rw");
    pair.start(0);
    pair.start(1);
    pair.wait_for(&accepted);
    pair.stop(0);
    pair.stop(1);
    drop(volume);
}
