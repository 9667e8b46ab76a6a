//! A crash loop with real processes, real SQLite and real TLS on loopback: while a
//! client keeps sending, the sender, the receiver or both are SIGKILLed at random
//! moments and restarted, again and again. Afterwards, read straight from both stores:
//! every accepted message sits in the sender's outbox, delivered, and in the receiver's
//! inbox exactly once; nothing else is there except messages whose send got no answer
//! because the sender died while handling it.
//!
//! `LIAISON_CRASH_CYCLES` sets the number of kill-and-restart cycles (default 3; the
//! campaign runs 100 or more); `LIAISON_CRASH_SEED` replays a run's random moments.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use support::*;

/// xorshift64*: the test's only randomness, from a seed it prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[derive(Default)]
struct Traffic {
    /// Answered 201: the node promised these are durable.
    accepted: BTreeMap<usize, String>,
    /// No answer at all: the sender may or may not have committed these.
    unanswered: BTreeSet<usize>,
    refused: usize,
}

fn query<T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>>(
    dir: &Path,
    sql: &str,
) -> Vec<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("node.db"))
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        rows
    })
}

fn body_number(envelope_json: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(envelope_json).unwrap();
    v["body"]
        .as_str()
        .and_then(|b| b.strip_prefix("report "))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn nodes_killed_at_random_moments_lose_and_duplicate_nothing() {
    let cycles: usize = std::env::var("LIAISON_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("LIAISON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash loop: {cycles} cycles, LIAISON_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut pair = Pair::new();
    let api = pair.apis[0].clone();
    let token = std::fs::read_to_string(pair.dirs[0].join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (traffic, stop, token) = (traffic.clone(), stop.clone(), token.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = format!(
                    r#"{{"from":"USA.intel","to":"ROK.intel","label":"USA:SECRET","precedence":"{}","body":"report {n}"}}"#,
                    if n % 5 == 0 { "FLASH" } else { "ROUTINE" }
                );
                let answer = support::local_api::request_as(
                    &api,
                    Some(&token),
                    "POST",
                    "/api/v1/messages",
                    Some(&body),
                );
                let mut t = traffic.lock().unwrap();
                match answer {
                    Ok((201, text)) => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        t.accepted.insert(n, v["id"].as_str().unwrap().to_owned());
                    }
                    Ok((status, text)) => {
                        // A refusal is an answer: nothing was accepted. Only a node that
                        // is up answers, so anything but 5xx while starting is a bug.
                        assert!(status >= 500, "{status}: {text}");
                        t.refused += 1;
                    }
                    Err(_) => {
                        t.unanswered.insert(n);
                    }
                }
                drop(t);
                n += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };

    let mut kills = [0usize; 2];
    for _ in 0..cycles {
        std::thread::sleep(rng.ms(50, 700));
        let victims: &[usize] = match rng.next() % 4 {
            0 | 1 => &[1],
            2 => &[0],
            _ => &[0, 1],
        };
        for &v in victims {
            pair.kill(v);
            kills[v] += 1;
        }
        std::thread::sleep(rng.ms(1, 300));
        for &v in victims {
            pair.start(v);
        }
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    // Let delivery finish: nothing queued at the sender (its store, read while it runs).
    let start = Instant::now();
    loop {
        let queued: Vec<(i64,)> = query(
            &pair.dirs[0],
            "SELECT count(*) FROM outbox WHERE state = 'queued'",
        );
        if queued[0].0 == 0 {
            break;
        }
        for i in 0..2 {
            if let Some(status) = pair.exited(i) {
                panic!("node {i} ended by itself ({status}):\n{}", pair.log(i, 200));
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            let stuck: Vec<(String, i64, i64, Option<String>)> = query(
                &pair.dirs[0],
                "SELECT envelope_id, attempts, next_attempt_ms, last_error \
                 FROM outbox WHERE state = 'queued'",
            );
            panic!(
                "{} still queued after 120 s: {stuck:#?}\n--- sender log ---\n{}\n--- receiver log ---\n{}",
                queued[0].0,
                pair.log(0, 200),
                pair.log(1, 200)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // One more receiver crash after delivery: a lost receipt must not duplicate.
    pair.kill(1);
    pair.start(1);
    pair.stop(0);
    pair.stop(1);

    let t = traffic.lock().unwrap();
    let outbox: Vec<(String, String, String)> = query(
        &pair.dirs[0],
        "SELECT o.envelope_id, o.state, e.envelope_json \
         FROM outbox AS o JOIN outbox_envelope AS e USING (seq)",
    );
    let inbox: Vec<(String,)> = query(&pair.dirs[1], "SELECT envelope_id FROM inbox");
    let outbox_ids: BTreeSet<&str> = outbox.iter().map(|r| r.0.as_str()).collect();
    let inbox_ids: BTreeSet<&str> = inbox.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        outbox_ids.len(),
        outbox.len(),
        "duplicate ids in the outbox"
    );
    assert_eq!(
        inbox_ids.len(),
        inbox.len(),
        "duplicates in the receiver's inbox"
    );
    for (n, id) in &t.accepted {
        assert!(
            outbox_ids.contains(id.as_str()),
            "report {n} ({id}) was accepted but is not in the sender's store"
        );
    }
    for (id, state, json) in &outbox {
        assert_eq!(state, "delivered", "{id} ended {state}");
        let n = body_number(json);
        assert!(
            t.accepted.get(&n) == Some(id) || t.unanswered.contains(&n),
            "{id} (report {n}) is in the outbox but was neither accepted nor unanswered"
        );
    }
    assert_eq!(
        inbox_ids, outbox_ids,
        "the receiver's inbox differs from what the sender delivered"
    );
    assert!(!t.accepted.is_empty(), "no traffic flowed");
    println!(
        "crash loop: {cycles} cycles ({} sender kills, {} receiver kills), {} accepted, \
         {} unanswered ({} of them committed), {} refused while starting, {} delivered once each",
        kills[0],
        kills[1],
        t.accepted.len(),
        t.unanswered.len(),
        outbox.len() - t.accepted.len(),
        t.refused,
        inbox.len()
    );
}
