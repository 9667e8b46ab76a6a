//! The `liaison` binary as people use it: exit codes, messages, files it writes.

// Integration tests: a panic is a failed test, which is what we want.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn liaison(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_liaison"))
        .args(args)
        .output()
        .unwrap()
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenario")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_the_scenario_and_rejects_a_broken_copy() {
    let files: Vec<String> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let args: Vec<&str> = std::iter::once("agreement")
        .chain(std::iter::once("check"))
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = liaison(&args);
    assert!(o.status.success(), "{}", text(&o));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    let good = std::fs::read_to_string(scenario_dir().join("rok-prc-hotlines.toml")).unwrap();
    std::fs::write(
        &broken,
        good.replace("ceiling = \"UNCLASSIFIED\"", "ceiling = \"SECRETISH\"")
            .replace("party = \"PRC\"", "party = \"DPRK\""),
    )
    .unwrap();
    let o = liaison(&["agreement", "check", broken.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert_eq!(
        out.matches("`SECRETISH` is not on the common scale")
            .count(),
        3,
        "{out}"
    );
    assert!(out.contains("unknown party `DPRK`"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with(&format!("{}:", broken.display())))
            .count()
            >= 4,
        "{out}"
    );

    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, [0xffu8, 0xfe, 0, 1]).unwrap();
    let o = liaison(&["agreement", "check", binary.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not UTF-8"), "{}", text(&o));
}

#[test]
fn explain_exits_0_on_allow_3_on_deny_1_on_error() {
    let dir = scenario_dir();
    let d = dir.to_str().unwrap();
    let o = liaison(&[
        "policy",
        "explain",
        "--agreements",
        d,
        "--from",
        "USA.intel",
        "--to",
        "ROK.intel",
        "--label",
        "USA:SECRET",
        "--at",
        "2019-11-22T23:59:59+09:00",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["receiver_label"], "ROK:II급 비밀");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.is_string())
    );

    let o = liaison(&[
        "policy",
        "explain",
        "--agreements",
        d,
        "--from",
        "ROK.intel",
        "--to",
        "JPN.intel",
        "--label",
        "ROK:II급 비밀",
        "--at",
        "2019-11-23T00:00:01+09:00",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert!(v["receiver_label"].is_null());
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("notice of withdrawal")
    );

    let o = liaison(&[
        "policy",
        "explain",
        "--agreements",
        d,
        "--from",
        "ROK.intel",
        "--to",
        "JPN.intel",
        "--label",
        "SECRET",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--label"), "{}", text(&o));
    let o = liaison(&[
        "policy",
        "explain",
        "--agreements",
        d,
        "--from",
        "ROK.intel",
        "--to",
        "JPN.intel",
        "--label",
        "ROK:II급 비밀",
        "--at",
        "yesterday",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("RFC 3339"), "{}", text(&o));
}

#[test]
fn keygen_sign_verify_round_trip_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    for p in ["ROK", "PRC"] {
        let o = liaison(&["keygen", "--party", p, "--out", keys.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Refuses to overwrite a secret key.
    assert_eq!(
        liaison(&["keygen", "--party", "ROK", "--out", keys.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let file = dir.path().join("hotlines.toml");
    std::fs::copy(scenario_dir().join("rok-prc-hotlines.toml"), &file).unwrap();
    let f = file.to_str().unwrap();
    let rok = keys.join("ROK.key");
    let prc = keys.join("PRC.key");

    // Unsigned: verify fails.
    assert_eq!(liaison(&["agreement", "verify", f]).status.code(), Some(1));
    // A key the agreement does not list is refused unless added.
    let o = liaison(&["agreement", "sign", f, "--key", rok.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--add-key"), "{}", text(&o));
    for k in [&rok, &prc] {
        let o = liaison(&[
            "agreement",
            "sign",
            f,
            "--key",
            k.to_str().unwrap(),
            "--add-key",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // PRC's key addition voided ROK's signature; ROK signs again.
    let o = liaison(&["agreement", "sign", f, "--key", rok.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = liaison(&["agreement", "verify", f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Comments survive signing.
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("# ROK–PRC defence hotlines.")
    );

    // Reformatting keeps signatures valid; a change of meaning breaks them.
    let signed = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        signed
            .replace(
                "# No classified sharing",
                "# (reworded comment) No classified sharing",
            )
            .replace("version = 1", "version   =   1"),
    )
    .unwrap();
    assert_eq!(liaison(&["agreement", "verify", f]).status.code(), Some(0));
    std::fs::write(
        &file,
        signed.replacen("test_interval = \"1h\"", "test_interval = \"2h\"", 1),
    )
    .unwrap();
    let o = liaison(&["agreement", "verify", f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not verify"), "{}", text(&o));
    // A tampered event signature is caught.
    std::fs::write(
        &file,
        signed.replacen(
            "at = 2019-11-17T15:00:00+07:00",
            "at = 2019-11-17T16:00:00+07:00",
            1,
        ),
    )
    .unwrap();
    let o = liaison(&["agreement", "verify", f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn show_prints_states_deadline_and_obligations() {
    let f = scenario_dir().join("rok-usa-jpn-information-sharing.toml");
    let o = liaison(&[
        "agreement",
        "show",
        f.to_str().unwrap(),
        "--at",
        "2019-11-22T12:00:00+09:00",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("notice given"), "{out}");
    assert!(
        out.contains("next deadline: 2019-11-23T00:00:00+09:00"),
        "{out}"
    );
    let f = scenario_dir().join("usa-rok-cost-sharing.toml");
    let out = text(&liaison(&[
        "agreement",
        "show",
        f.to_str().unwrap(),
        "--at",
        "2019-11-22T12:00:00+09:00",
    ]));
    assert!(out.contains("USD 923,000,000 a year (2019)"), "{out}");
    assert!(out.contains("USD 5,000,000,000 a year (2020)"), "{out}");
    assert!(out.contains("source: news report"), "{out}");
}
