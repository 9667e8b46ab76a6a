//! Audit logs across the federation: a node restored from an old backup rewrites its
//! history, and its peers' consistency checks catch it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liaison_node::audit::PeerLog;
use liaison_store::Store;
use support::*;

/// Sends `n` messages each way and waits until both inboxes hold them.
async fn exchange(c: &Cluster, round: &str, n: usize, rok_had: usize, usa_had: usize) {
    for i in 0..n {
        c.send(
            "USA",
            "USA.intel",
            "ROK.intel",
            "USA:SECRET",
            "ROUTINE",
            &format!("{round} report {i}"),
        )
        .await
        .unwrap();
        c.send(
            "ROK",
            "ROK.intel",
            "USA.intel",
            "ROK:II급 비밀",
            "ROUTINE",
            &format!("{round} answer {i}"),
        )
        .await
        .unwrap();
    }

    wait_inbox(c, "ROK", "ROK.intel", rok_had + n).await;
    wait_inbox(c, "USA", "USA.intel", usa_had + n).await;
}

/// Waits for `n` messages in a desk's inbox, moving the clock on so that deliveries
/// scheduled for a retry (after a peer restarted) become due.
async fn wait_inbox(c: &Cluster, party: &str, desk: &str, n: usize) {
    let start = Instant::now();
    loop {
        let got = c.inbox(party, desk).await.len();
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{party} {desk}: {got} of {n} messages arrived"
        );
        c.clock.advance_ms(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What USA remembers of ROK's log.
async fn usa_view_of_rok(c: &Cluster) -> PeerLog {
    c.running("USA")
        .node
        .store
        .peer_get("log:ROK")
        .await
        .unwrap()
        .map(|j| serde_json::from_str(&j).unwrap())
        .unwrap_or_default()
}

/// Waits until USA has verified a head of ROK's log of at least `size` entries,
/// sending a message now and then so a fresh receipt carries ROK's newest head.
async fn wait_usa_sees_rok(c: &Cluster, size: u64) -> u64 {
    let start = Instant::now();
    let mut i = 0;
    loop {
        let seen = usa_view_of_rok(c).await;
        assert!(seen.forked.is_none(), "fork raised too early: {seen:?}");
        if let Some(h) = seen.head.as_ref().filter(|h| h.head.size >= size) {
            return h.head.size;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "USA never saw ROK's log reach {size} entries: {seen:?}"
        );
        i += 1;
        if i % 10 == 0 {
            c.send(
                "USA",
                "USA.intel",
                "ROK.intel",
                "USA:SECRET",
                "ROUTINE",
                &format!("nudge {i}"),
            )
            .await
            .unwrap();
        }
        c.clock.advance_ms(100);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts a stopped node with a random source of its own: `Cluster::restart` seeds
/// every start of a party alike, so a restarted node would draw the same envelope ids
/// again (and a new message would be taken for a duplicate of an old one).
async fn restart_with_seed(c: &mut Cluster, party: &str, seed: u64) {
    let dir = c.dirs[party].clone();
    let running = liaison_node::start(
        &dir,
        c.clock.clone(),
        Arc::new(liaison_node::SeededRandom::new(seed)),
    )
    .await
    .unwrap();
    c.nodes.insert(party.to_owned(), Some(running));
}

fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let dst = to.join(format!("node.db{suffix}"));
        let _ = std::fs::remove_file(&dst);
        let src = from.join(format!("node.db{suffix}"));
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

async fn forks(c: &Cluster, party: &str) -> Option<u64> {
    let (_, text) = c.api(party, "GET", "/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix("liaison_audit_forks_total "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_backup_is_caught_by_its_peers_consistency_check() {
    let mut c = Cluster::start(&["ROK", "USA"], BEFORE_MIDNIGHT).await;
    exchange(&c, "first", 3, 0, 0).await;
    let (first_size, _) = c.running("ROK").node.store.audit_head().await.unwrap();
    wait_usa_sees_rok(&c, first_size).await;

    // A backup of ROK, taken while it is stopped (its store closed, WAL checkpointed).
    c.kill("ROK").await;
    let rok_dir = c.dirs["ROK"].clone();
    let backup = rok_dir.parent().unwrap().join("rok-backup");
    copy_store(&rok_dir, &backup);
    restart_with_seed(&mut c, "ROK", 1001).await;

    // ROK's log grows past the backup, and USA sees it do so.
    exchange(&c, "second", 4, 3, 3).await;
    let (grown, _) = c.running("ROK").node.store.audit_head().await.unwrap();
    assert!(grown > first_size);
    let seen = wait_usa_sees_rok(&c, grown).await;
    assert!(seen > first_size);
    assert_eq!(forks(&c, "USA").await, Some(0));

    // ROK is restored from the old backup and goes on along a different history.
    c.kill("ROK").await;
    copy_store(&backup, &rok_dir);
    restart_with_seed(&mut c, "ROK", 1002).await;
    let (restored, _) = c.running("ROK").node.store.audit_head().await.unwrap();
    assert!(restored < seen, "restored {restored}, USA saw {seen}");
    for i in 0..3 {
        let _ = c
            .send(
                "ROK",
                "ROK.intel",
                "USA.intel",
                "ROK:II급 비밀",
                "ROUTINE",
                &format!("after restore {i}"),
            )
            .await;
        let _ = c
            .send(
                "USA",
                "USA.intel",
                "ROK.intel",
                "USA:SECRET",
                "ROUTINE",
                &format!("after restore {i}"),
            )
            .await;
    }

    let start = Instant::now();
    loop {
        if forks(&c, "USA").await == Some(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "USA never raised the fork alarm: {:?}",
            usa_view_of_rok(&c).await
        );
        c.clock.advance_ms(500);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = usa_view_of_rok(&c).await;
    let detail = view.forked.expect("USA stores that ROK forked");
    assert!(detail.contains("log of `ROK` forked"), "{detail}");
    assert!(
        c.audit_kinds("USA")
            .await
            .iter()
            .any(|k| k == "peer-forked"),
        "USA's audit log records the fork"
    );
    // One alarm, not one per head: the peer stays marked as forked.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(forks(&c, "USA").await, Some(1));
    // USA's own log still verifies.
    let rows = c
        .running("USA")
        .node
        .store
        .audit_rows(0, 100_000)
        .await
        .unwrap();
    let stored = rows.iter().map(|r| liaison_core::audit::StoredLeaf {
        index: r.index,
        entry: &r.entry,
        leaf: r.leaf,
        root_after: r.root_after,
    });
    let frontier = liaison_core::audit::verify_log(stored).unwrap();
    assert_eq!(
        (frontier.size(), frontier.root()),
        c.running("USA").node.store.audit_head().await.unwrap()
    );
    c.stop().await;
}
