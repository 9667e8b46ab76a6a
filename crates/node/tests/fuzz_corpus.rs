//! Runs every file of the fuzz corpus (`fuzz/corpus/<target>/`) and every input the
//! fuzzer once crashed on (`fuzz/regressions/<target>/`) through the same functions the
//! fuzz targets call, on stable and without a fuzzer, so a fixed crash stays fixed.
//!
//! `LIAISON_WRITE_SEEDS=1` rewrites the generated seeds (real envelopes, receipts,
//! tree heads and proofs produced by the code, the scenario's agreements).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

use liaison_core::envelope::{ReceiptBody, ReceiptKind, SignedTreeHead};
use liaison_core::merkle::{TreeHead, consistency_proof, inclusion_proof, leaf_hash};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn corpus_and_regressions_never_panic() {
    if std::env::var_os("LIAISON_WRITE_SEEDS").is_some() {
        write_seeds();
    }
    let mut ran = 0;
    for (name, check) in targets::TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                ran += 1;
            }
        }
    }
    // The seeds are committed: an empty run means the paths are wrong.
    assert!(
        ran >= 20,
        "only {ran} corpus files found under {}",
        fuzz_dir().display()
    );
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn write_seeds() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenario");
    for entry in std::fs::read_dir(scenario).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        write("agreement", &name, &std::fs::read(&path).unwrap());
    }
    for (i, l) in [
        "ROK:II급 비밀",
        "COMMON:TOP SECRET",
        "USA:SECRET",
        "JPN:極秘",
    ]
    .iter()
    .enumerate()
    {
        write("label", &i.to_string(), l.as_bytes());
    }

    let key = targets::fuzz_key();
    let env = targets::sample_envelope().unwrap();
    write("envelope", "sealed.json", env.to_json().as_bytes());
    let batch = targets::sample_batch().unwrap();
    write("envelope", "batch.json", batch.to_json().as_bytes());

    let leaves: Vec<_> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
    let head = TreeHead {
        size: 7,
        root: liaison_core::merkle::root_from_leaves(&leaves),
        timestamp_ms: 1_574_434_800_000,
    };
    let sth = SignedTreeHead::sign("AA", head, &key);
    write(
        "tree_head",
        "signed.json",
        serde_json::to_string(&sth).unwrap().as_bytes(),
    );

    let body = |kind, reasons: Vec<String>, tree_head| ReceiptBody {
        envelope_id: env.header.id.clone(),
        envelope_digest: env.digest(),
        receiver: liaison_core::ids::PartyId::new("BB").unwrap(),
        kind,
        at: env.header.created_at,
        receiver_label: Some("BB:II".parse().unwrap()),
        reasons,
        acknowledged_by: None,
        tree_head,
    };
    let stored = liaison_core::envelope::Receipt::sign(
        body(ReceiptKind::Stored, vec![], Some(sth.clone())),
        &key,
    );
    let refused = liaison_core::envelope::Receipt::sign(
        body(ReceiptKind::Refused, vec!["no channel".to_owned()], None),
        &key,
    );
    write("receipt", "stored.json", stored.to_json().as_bytes());
    write("receipt", "refused.json", refused.to_json().as_bytes());

    let incl = liaison_core::merkle::Proof::Inclusion {
        log_id: "AA".to_owned(),
        size: 7,
        leaf_index: 3,
        leaf_hash: leaves[3],
        hashes: inclusion_proof(&leaves, 3, 7).unwrap(),
    };
    let cons = liaison_core::merkle::Proof::Consistency {
        log_id: "AA".to_owned(),
        old_size: 3,
        new_size: 7,
        hashes: consistency_proof(&leaves, 3, 7).unwrap(),
    };
    write(
        "merkle_proof",
        "inclusion.json",
        serde_json::to_string(&incl).unwrap().as_bytes(),
    );
    write(
        "merkle_proof",
        "consistency.json",
        serde_json::to_string(&cons).unwrap().as_bytes(),
    );
    let mut raw = vec![0u8];
    raw.extend(3u64.to_le_bytes());
    raw.extend(3u64.to_le_bytes());
    for l in &leaves {
        raw.extend(l);
    }
    write("merkle_proof", "raw", &raw);

    write(
        "node_config",
        "node.toml",
        b"party = \"ROK\"\n\n[api]\nlisten = \"127.0.0.1:7100\"\n\n[federation]\nlisten = \"127.0.0.1:7101\"\n\n[[peers]]\nparty = \"PRC\"\naddresses = [\"127.0.0.1:7201\"]\n\n[delivery]\nbatch_max = 256\nretry_delay_ms_min = 100\nretry_delay_ms_max = 30000\n",
    );

    let api = |which: u8, body: String| {
        let mut v = vec![which];
        v.extend(body.into_bytes());
        v
    };
    write(
        "api_bodies",
        "send",
        &api(
            0,
            r#"{"from":"ROK.navy","to":"PRC.navy","label":"ROK:평문","precedence":"FLASH","body":"hello","originator":"USA","reply_to":null}"#.to_owned(),
        ),
    );
    write(
        "api_bodies",
        "ack",
        &api(1, r#"{"by":"duty officer"}"#.to_owned()),
    );
    write("api_bodies", "envelopes", &api(2, batch.to_json()));
    write(
        "api_bodies",
        "receipts",
        &api(3, format!(r#"{{"receipts":[{}]}}"#, stored.to_json())),
    );
    write(
        "api_bodies",
        "consistency",
        &api(5, r#"{"old_size":3,"new_size":7}"#.to_owned()),
    );
    write(
        "api_bodies",
        "settle",
        &api(
            6,
            format!(
                r#"{{"envelopes":[{{"id":"{}","digest":"{}"}}]}}"#,
                env.header.id,
                env.digest()
            ),
        ),
    );
}
