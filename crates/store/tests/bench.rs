//! Throughput and latency figures for the SQLite store. Ignored by default;
//! run with
//!
//! ```text
//! cargo test --release -p liaison-store --test bench -- --ignored --nocapture
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use liaison_store::{OutboxRow, SqliteStore, Store};

const ENVELOPE: &str = concat!(
    r#"{"v":1,"from":{"party":"mod","desk":"ops"},"to":{"party":"cert","desk":"soc"},"#,
    r#""precedence":"ROUTINE","label":"RESTRICTED","body":"Lorem ipsum dolor sit amet, "#,
    r#"consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore "#,
    r#"magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.","#,
    r#""sig":"3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}"#
);

fn row(i: u64, peers: u64) -> OutboxRow {
    OutboxRow::new_queued(
        format!("env-{i:012}"),
        format!("peer-{}", i % peers),
        "ops",
        "soc",
        // Mostly ROUTINE, some of everything else.
        match i % 100 {
            0 => 3,
            1..=4 => 2,
            5..=19 => 1,
            _ => 0,
        },
        i64::try_from(i).unwrap(),
        ENVELOPE,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn time_calls<F, Fut>(n: usize, mut f: F) -> (Duration, Duration, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        *samples.last().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --release --ignored --nocapture"]
async fn bench_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let store = SqliteStore::open(&path).await.unwrap();
    const PEERS: u64 = 4;

    // 1. Single durable inserts (one fsynced commit per message).
    let n_single = 2_000u64;
    let t = Instant::now();
    for i in 0..n_single {
        assert!(store.outbox_insert(&row(i, PEERS)).await.unwrap());
    }
    let el = t.elapsed();
    println!(
        "outbox_insert (1 row/commit): {n_single} rows in {:.2?} = {:.0} rows/s",
        el,
        n_single as f64 / el.as_secs_f64()
    );

    // 1b. What a FLASH accept commits: one row and its audit entry, fsynced. Each
    // call's time, from the call to the answer.
    let entry = vec![b'a'; 250];
    let (p50, p99, max) = time_calls(1_000, |i| {
        let store = store.clone();
        let entry = entry.clone();
        async move {
            let r = row(n_single + i as u64, PEERS);
            let done = store
                .outbox_commit(std::slice::from_ref(&r), &[], 0, &[entry])
                .await
                .unwrap();
            assert_eq!(done.inserted, vec![true]);
        }
    })
    .await;
    println!(
        "outbox_commit (1 row + 1 audit entry/commit): p50 {p50:.2?} p99 {p99:.2?} max {max:.2?}"
    );

    // 2. 100,000 rows in batches of 1,000 (one commit per batch).
    let mut next = n_single + 1_000;
    let n_batch = 100_000u64;
    let t = Instant::now();
    for chunk in 0..(n_batch / 1_000) {
        let rows: Vec<OutboxRow> = (0..1_000)
            .map(|k| row(next + chunk * 1_000 + k, PEERS))
            .collect();
        let fresh = store.outbox_insert_batch(&rows, &[]).await.unwrap();
        assert!(fresh.iter().all(|f| *f));
    }
    let el = t.elapsed();
    println!(
        "outbox_insert_batch (1,000 rows/commit): {n_batch} rows in {:.2?} = {:.0} rows/s",
        el,
        n_batch as f64 / el.as_secs_f64()
    );
    next += n_batch;

    // 3. Fill up to 1,000,000 queued rows.
    let target: u64 = std::env::var("LIAISON_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    while next < target {
        let end = (next + 10_000).min(target);
        let rows: Vec<OutboxRow> = (next..end).map(|i| row(i, PEERS)).collect();
        store.outbox_insert_batch(&rows, &[]).await.unwrap();
        next = end;
    }
    println!("filled to {target} queued rows in {:.2?}", t.elapsed());
    let size = std::fs::metadata(&path).unwrap().len()
        + std::fs::metadata(dir.path().join("bench.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("database size: {:.0} MiB", size as f64 / (1024.0 * 1024.0));

    let now = i64::MAX;
    let (p50, p99, max) = time_calls(500, |i| {
        let store = store.clone();
        async move {
            let peer = format!("peer-{}", i as u64 % PEERS);
            let due = store.outbox_due(&peer, now, 100).await.unwrap();
            assert_eq!(due.len(), 100);
        }
    })
    .await;
    println!(
        "outbox_due(limit 100) with {target} queued: p50 {p50:.2?} p99 {p99:.2?} max {max:.2?}"
    );

    let (p50, p99, max) = time_calls(500, |i| {
        let store = store.clone();
        async move {
            let peer = format!("peer-{}", i as u64 % PEERS);
            let due = store.outbox_due(&peer, now, 10).await.unwrap();
            assert_eq!(due.len(), 10);
        }
    })
    .await;
    println!(
        "outbox_due(limit 10) with {target} queued: p50 {p50:.2?} p99 {p99:.2?} max {max:.2?}"
    );

    // Worst realistic case: the peer is down and every FLASH/IMMEDIATE row
    // is backing off, so the scan must skip them before finding due rows.
    let backoff: Vec<String> = (0..target)
        .filter(|i| i % PEERS == 0 && i % 100 < 5)
        .map(|i| format!("env-{i:012}"))
        .collect();
    for id in &backoff {
        store
            .outbox_retry(id, 1, i64::MAX - 1, "peer down")
            .await
            .unwrap();
    }
    let (p50, p99, max) = time_calls(50, |_| {
        let store = store.clone();
        async move {
            let due = store.outbox_due("peer-0", i64::MAX - 2, 100).await.unwrap();
            assert_eq!(due.len(), 100);
        }
    })
    .await;
    println!(
        "outbox_due(limit 100) skipping {} backing-off high-precedence rows: p50 {p50:.2?} p99 {p99:.2?} max {max:.2?}",
        backoff.len()
    );

    let (p50, _, _) = time_calls(50, |_| {
        let store = store.clone();
        async move {
            assert_eq!(
                store.outbox_peers_with_due(i64::MAX).await.unwrap().len(),
                4
            );
        }
    })
    .await;
    println!("outbox_peers_with_due: p50 {p50:.2?}");
    let (p50, _, _) = time_calls(50, |_| {
        let store = store.clone();
        async move {
            assert!(store.outbox_next_due_ms("peer-1").await.unwrap().is_some());
        }
    })
    .await;
    println!("outbox_next_due_ms: p50 {p50:.2?}");
    let (p50, _, _) = time_calls(10, |_| {
        let store = store.clone();
        async move {
            let depth = store.outbox_depth().await.unwrap();
            assert_eq!(depth.iter().map(|d| d.count).sum::<u64>(), target);
        }
    })
    .await;
    println!("outbox_depth (full count of {target} queued): p50 {p50:.2?}");

    // Delivering a batch of 100 receipts (one commit).
    let (p50, p99, _) = time_calls(50, |i| {
        let store = store.clone();
        async move {
            let receipts: Vec<(String, String)> = (0..100)
                .map(|k| {
                    (
                        format!("env-{:012}", 200_000 + i * 100 + k),
                        "{\"receipt\":1}".to_owned(),
                    )
                })
                .collect();
            store.outbox_delivered(&receipts, 1, &[]).await.unwrap();
        }
    })
    .await;
    println!("outbox_delivered (100 receipts/commit): p50 {p50:.2?} p99 {p99:.2?}");
    store.close().await;
}
