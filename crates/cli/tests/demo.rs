//! `liaison demo --check`: the whole seed story, both endings, and a demo killed
//! mid-story that resumes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::{Command, Stdio};
use std::time::Duration;

fn demo(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn the_agreement_lapses_at_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = demo(&["--check", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("ROK's queued report bounces"), "{out}");
    assert!(
        out.contains("USA → JPN SECRET is still allowed after midnight"),
        "{out}"
    );
    assert!(!out.contains('✘'), "{out}");
}

#[test]
fn recording_the_condition_keeps_it_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = demo(&["--check", "--extend", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("the agreement holds"), "{out}");
    assert!(!out.contains('✘'), "{out}");
}

#[test]
fn a_demo_killed_mid_story_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .args(["demo", "--dir", d, "--speed", "40", "--base-port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Long enough to be mid-story: nodes created, some messages sent.
    std::thread::sleep(Duration::from_secs(6));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.path().join("progress.json").exists());
    let (ok, out) = demo(&["--check", "--dir", d]);
    assert!(ok, "{out}");
    assert!(out.contains("resuming the demo"), "{out}");
    assert!(!out.contains('✘'), "{out}");
}
