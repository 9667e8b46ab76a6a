//! `liaison audit` against a real node pair: the log verifies, proofs check offline
//! with only the party's public key, and hand edits to the SQLite file are named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use support::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sqlx::Connection;

/// A copy of a node's store (and WAL files, if any) in a new directory.
fn copy_store(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let src = from.join(format!("node.db{suffix}"));
        if src.exists() {
            std::fs::copy(&src, to.join(format!("node.db{suffix}"))).unwrap();
        }
    }
    to.to_path_buf()
}

/// Runs raw SQL on a copied store.
fn edit(dir: &Path, f: impl AsyncFnOnce(&mut sqlx::SqliteConnection)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("node.db"));
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        f(&mut conn).await;
        conn.close().await.unwrap();
    });
}

type Row = (Vec<u8>, Vec<u8>, Vec<u8>);

async fn row(conn: &mut sqlx::SqliteConnection, idx: i64) -> Row {
    sqlx::query_as("SELECT entry, leaf, root_after FROM audit WHERE idx = ?1")
        .bind(idx)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn put(conn: &mut sqlx::SqliteConnection, idx: i64, r: &Row) {
    sqlx::query("UPDATE audit SET entry = ?1, leaf = ?2, root_after = ?3 WHERE idx = ?4")
        .bind(&r.0)
        .bind(&r.1)
        .bind(&r.2)
        .bind(idx)
        .execute(conn)
        .await
        .unwrap();
}

fn verify(dir: &Path) -> std::process::Output {
    liaison(&["audit", "verify", "--dir", dir.to_str().unwrap()])
}

fn verify_fails_at(dir: &Path, index: u64) -> String {
    let out = fails(&["audit", "verify", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.starts_with(&format!("entry {index}: ")),
        "expected entry {index} to be named: {out}"
    );
    out
}

fn flip_hex(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    c[0] = if c[0] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

#[test]
fn audit_log_verifies_proves_and_names_tampering() {
    let mut pair = Pair::new();
    let mut sent = BTreeSet::new();
    for n in 0..5 {
        sent.insert(pair.send(n));
    }
    pair.wait_delivered(&sent);
    pair.stop(0);
    pair.stop(1);

    let mut sizes = Vec::new();
    for d in &pair.dirs {
        let o = verify(d);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(" entries verify, root "), "{text}");
        let n: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
        sizes.push(n);
    }
    let usa = pair.dirs[0].clone();
    let usa_dir = usa.to_str().unwrap();
    let size = sizes[0];
    assert!(size >= 15, "USA's log has {size} entries");

    // show: every entry, filtered by time and count, and as JSON.
    let shown = ok(&["audit", "show", "--dir", usa_dir]);
    assert_eq!(shown.lines().count() as u64, size, "{shown}");
    assert!(shown.contains("message-accepted"), "{shown}");
    assert!(shown.contains("receipt-received"), "{shown}");
    let two = ok(&["audit", "show", "--dir", usa_dir, "--limit", "2"]);
    assert_eq!(two.lines().count(), 2);
    let none = ok(&[
        "audit",
        "show",
        "--dir",
        usa_dir,
        "--since",
        "2100-01-01T00:00:00Z",
    ]);
    assert_eq!(none.trim(), "");
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["audit", "show", "--dir", usa_dir, "--json"])).unwrap();
    assert_eq!(json.len() as u64, size);
    assert_eq!(json[3]["index"], 3);
    assert!(json[3]["event"]["kind"].is_string(), "{}", json[3]);

    // proof + check round trip, with the key as a string and as a .pub file.
    let key = pair.public_keys[0].clone();
    let pub_file = pair.tmp.path().join("USA.pub");
    std::fs::write(&pub_file, format!("{key}\n")).unwrap();
    let entry = size / 2;
    let proof = ok(&[
        "audit",
        "proof",
        "--dir",
        usa_dir,
        "--entry",
        &entry.to_string(),
    ]);
    let proof_path = pair.tmp.path().join("proof.json");
    std::fs::write(&proof_path, &proof).unwrap();
    let proof_arg = proof_path.to_str().unwrap();
    let out = ok(&["audit", "check", proof_arg, "--key", &key]);
    assert!(out.starts_with(&format!("valid: entry {entry} ")), "{out}");
    ok(&[
        "audit",
        "check",
        proof_arg,
        "--key",
        pub_file.to_str().unwrap(),
    ]);
    // The other party's key does not sign USA's heads.
    let out = fails(&["audit", "check", proof_arg, "--key", &pair.public_keys[1]]);
    assert!(out.contains("invalid: tree head"), "{out}");

    let v: serde_json::Value = serde_json::from_str(&proof).unwrap();
    assert_eq!(v["proof"]["kind"], "inclusion");
    assert_eq!(v["head"]["head"]["size"], size);
    // One flipped hex digit anywhere that matters makes the proof invalid.
    let mut cases: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut bad = v.clone();
    let h = bad["proof"]["hashes"][0].as_str().unwrap().to_owned();
    bad["proof"]["hashes"][0] = flip_hex(&h).into();
    cases.push(("proof hash", bad));
    let mut bad = v.clone();
    let h = bad["proof"]["leaf_hash"].as_str().unwrap().to_owned();
    bad["proof"]["leaf_hash"] = flip_hex(&h).into();
    cases.push(("leaf hash", bad));
    let mut bad = v.clone();
    let h = bad["head"]["head"]["root"].as_str().unwrap().to_owned();
    bad["head"]["head"]["root"] = flip_hex(&h).into();
    cases.push(("root", bad));
    let mut bad = v.clone();
    let e = bad["entry"].as_str().unwrap().replace("USA", "JPN");
    bad["entry"] = e.into();
    cases.push(("entry", bad));
    for (what, bad) in cases {
        let path = pair.tmp.path().join("bad.json");
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let out = fails(&["audit", "check", path.to_str().unwrap(), "--key", &key]);
        assert!(out.starts_with("invalid: "), "{what}: {out}");
    }

    // Consistency between an older size and the whole log.
    let proof = ok(&[
        "audit",
        "proof",
        "--dir",
        usa_dir,
        "--consistency",
        "3",
        "--size",
        &size.to_string(),
    ]);
    std::fs::write(&proof_path, &proof).unwrap();
    let out = ok(&["audit", "check", proof_arg, "--key", &key]);
    assert!(out.contains("extends the one of size 3"), "{out}");
    let mut bad: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let h = bad["proof"]["hashes"][0].as_str().unwrap().to_owned();
    bad["proof"]["hashes"][0] = flip_hex(&h).into();
    std::fs::write(&proof_path, serde_json::to_string(&bad).unwrap()).unwrap();
    fails(&["audit", "check", proof_arg, "--key", &key]);

    // Hand edits to copies of the store.
    let k = 6i64;
    let edited = copy_store(&usa, &pair.tmp.path().join("edited"));
    edit(&edited, async |c| {
        let mut r = row(c, k).await;
        let text = String::from_utf8(r.0.clone()).unwrap();
        let changed = text.replacen("USA", "JPN", 1);
        assert_ne!(changed, text);
        r.0 = changed.into_bytes();
        put(c, k, &r).await;
    });
    let out = verify_fails_at(&edited, k as u64);
    assert!(out.contains("edited"), "{out}");
    // A proof is refused over a log that does not verify.
    let o = liaison(&[
        "audit",
        "proof",
        "--dir",
        edited.to_str().unwrap(),
        "--entry",
        "0",
    ]);
    assert!(!o.status.success());

    let deleted = copy_store(&usa, &pair.tmp.path().join("deleted"));
    edit(&deleted, async |c| {
        sqlx::query("DELETE FROM audit WHERE idx = ?1")
            .bind(k)
            .execute(c)
            .await
            .unwrap();
    });
    let out = verify_fails_at(&deleted, k as u64);
    assert!(out.contains("deleted or reordered"), "{out}");

    let swapped = copy_store(&usa, &pair.tmp.path().join("swapped"));
    edit(&swapped, async |c| {
        let a = row(c, k).await;
        let b = row(c, k + 2).await;
        put(c, k, &b).await;
        put(c, k + 2, &a).await;
    });
    verify_fails_at(&swapped, k as u64);

    let truncated = copy_store(&usa, &pair.tmp.path().join("truncated"));
    edit(&truncated, async |c| {
        sqlx::query("DELETE FROM audit WHERE idx = ?1")
            .bind(size as i64 - 1)
            .execute(c)
            .await
            .unwrap();
    });
    verify_fails_at(&truncated, size - 1);

    // The original is untouched.
    assert!(verify(&usa).status.success());
}
