//! Merkle log throughput: what a writer pays per append, what an auditor pays
//! to recompute a root, and how big proofs get.
//!
//! Run with `cargo bench --bench merkle`. Besides criterion's own report it
//! prints a plain summary (appends/s, leaves/s, proof sizes in hashes) so the
//! figures can be quoted directly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use liaison_core::merkle::{
    Frontier, Hash, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves,
    verify_consistency, verify_inclusion,
};

/// Entries per append batch.
const APPEND_BATCH: usize = 100_000;
/// Leaves an auditor's full verify recomputes.
const VERIFY_LEAVES: usize = 1_000_000;
/// Size of one synthetic log entry, roughly a small JSON audit record.
const ENTRY_BYTES: usize = 256;

fn entries(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut entry = vec![0u8; ENTRY_BYTES];
            entry[..8].copy_from_slice(&(i as u64).to_be_bytes());
            entry
        })
        .collect()
}

fn leaf_hashes(count: usize) -> Vec<Hash> {
    (0..count as u64)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect()
}

/// Leaf hash + frontier push for every entry: the writer's per-append cost.
fn append_all(entries: &[Vec<u8>]) -> Hash {
    let mut frontier = Frontier::new();
    for entry in entries {
        frontier.push(leaf_hash(entry)).unwrap();
    }
    frontier.root()
}

fn bench_append(c: &mut Criterion, batch: usize) {
    let entries = entries(batch);
    let mut group = c.benchmark_group("frontier_append");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(20);
    group.bench_function("leaf_hash_and_push_100k_x256B", |b| {
        b.iter(|| append_all(black_box(&entries)))
    });
    group.finish();
}

fn bench_verify_root(c: &mut Criterion, count: usize) {
    let leaves = leaf_hashes(count);
    let mut group = c.benchmark_group("auditor_verify");
    group.throughput(Throughput::Elements(count as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("root_from_1m_leaf_hashes", |b| {
        b.iter(|| root_from_leaves(black_box(&leaves)))
    });
    group.finish();
}

fn bench_proofs(c: &mut Criterion, n: u64) {
    let leaves = leaf_hashes(n as usize);
    let root = root_from_leaves(&leaves);
    let old = n / 2 + 123;
    let old_root = root_from_leaves(&leaves[..old as usize]);
    let idx = n / 5 + 1;
    let incl = inclusion_proof(&leaves, idx, n).unwrap();
    let cons = consistency_proof(&leaves, old, n).unwrap();
    let mut group = c.benchmark_group(format!("proofs_n{n}"));
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(&leaves[idx as usize], idx, n, black_box(&incl), &root).unwrap())
    });
    group.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(old, n, &old_root, &root, black_box(&cons)).unwrap())
    });
    group.bench_function("generate_inclusion_from_vec", |b| {
        b.iter(|| inclusion_proof(black_box(&leaves), idx, n).unwrap())
    });
    group.finish();
}

/// Proof sizes (in hashes) for the sizes worth quoting.
fn print_proof_sizes() {
    let all = leaf_hashes(1 << 20);
    for log2 in [10u32, 16, 20] {
        let n = 1u64 << log2;
        let leaves = &all[..n as usize];
        let incl_first = inclusion_proof(leaves, 0, n).unwrap().len();
        let incl_last = inclusion_proof(leaves, n - 1, n).unwrap().len();
        // Growing a non-power-of-two old tree is the worst common case; an
        // old size that is a power of two needs one hash less.
        let cons_odd = consistency_proof(leaves, n / 2 + 1, n).unwrap().len();
        let cons_pow2 = consistency_proof(leaves, n / 2, n).unwrap().len();
        let cons_near = consistency_proof(leaves, n - 1, n).unwrap().len();
        println!(
            "proof size n=2^{log2}: inclusion {incl_first} hashes (leaf 0), {incl_last} (leaf n-1); \
             consistency {cons_odd} hashes (from n/2+1), {cons_pow2} (from n/2), {cons_near} (from n-1)"
        );
    }
    // A non-power-of-two size, for contrast.
    let n = (1u64 << 20) - 1;
    let incl = inclusion_proof(&all[..n as usize], n / 3, n).unwrap().len();
    let cons = consistency_proof(&all[..n as usize], n / 3, n)
        .unwrap()
        .len();
    println!(
        "proof size n=2^20-1: inclusion {incl} hashes (leaf n/3); consistency {cons} hashes (from n/3)"
    );
}

/// Plain wall-clock figures, best of a few runs, independent of criterion.
fn print_throughput() {
    let entries = entries(APPEND_BATCH);
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(append_all(black_box(&entries)));
            start.elapsed()
        })
        .min()
        .unwrap();
    println!(
        "appends/s (leaf hash of {ENTRY_BYTES} B entry + frontier push, batches of {APPEND_BATCH}): {:.0}",
        APPEND_BATCH as f64 / best.as_secs_f64()
    );

    let leaves = leaf_hashes(VERIFY_LEAVES);
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            black_box(root_from_leaves(black_box(&leaves)));
            start.elapsed()
        })
        .min()
        .unwrap();
    println!(
        "verify leaves/s (root recomputed from {VERIFY_LEAVES} leaf hashes): {:.0}",
        VERIFY_LEAVES as f64 / best.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench` (criterion's
    // one-iteration test mode, usually a debug build): keep that smoke run
    // small and skip the plain-timing summary.
    let benching = std::env::args().any(|a| a == "--bench");
    if benching {
        print_proof_sizes();
        print_throughput();
    }
    let scale = if benching { 1 } else { 100 };
    let mut criterion = Criterion::default().configure_from_args();
    bench_append(&mut criterion, APPEND_BATCH / scale);
    bench_verify_root(&mut criterion, VERIFY_LEAVES / scale);
    bench_proofs(&mut criterion, (1 << 16) / scale as u64);
    criterion.final_summary();
}
