//! Known-answer and mutated-proof tests for `liaison_core::merkle`.
//!
//! Vector source: the public transparency-dev Merkle library,
//! repository `transparency-dev/merkle`, file `proof/verify_test.go`
//! (the `leaves`, `roots`, `inclusionProofs` and `consistencyProofs` tables,
//! and the probe lists of `corruptInclusionProof` / `corruptConsistencyProof`,
//! `TestVerifyInclusionSingleEntry`, `TestVerifyInclusion` and
//! `TestVerifyConsistency`), plus the hasher answers in `rfc6962/rfc6962_test.go`
//! of the same repository. These are the classic Certificate Transparency
//! 8-leaf test vectors; values are copied verbatim, none are computed here.
//!
//! Differences forced by the typed API: Go passes byte slices of any length,
//! Rust passes `[u8; 32]`. Where Go uses an empty slice as "garbage" or a
//! short string such as "WrongLeaf" as a hash, these tests use the all-zero
//! hash or the string zero-padded to 32 bytes; Go's "wrong hash size" cases
//! cannot be expressed and are dropped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use liaison_core::merkle::{
    Frontier, Hash, MerkleError, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    node_hash, root_from_leaves, verify_consistency, verify_inclusion,
};

fn dh(text: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).unwrap();
    out
}

/// A short Go byte string used as a hash, zero-padded to 32 bytes.
fn padded(text: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out[..text.len()].copy_from_slice(text);
    out
}

/// The 8 leaf inputs (`leaves` in verify_test.go).
fn leaf_inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect()
}

fn leaf_hashes() -> Vec<Hash> {
    leaf_inputs().iter().map(|l| leaf_hash(l)).collect()
}

/// `roots[i]` is the root of the tree of the first i+1 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn root(size: u64) -> Hash {
    dh(ROOTS[size as usize - 1])
}

const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";
const EMPTY_TREE_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `inclusionProofs`: (1-based leaf, size, proof). The invalid {0, 0} entry
/// is covered separately in `inclusion_out_of_range_probes`.
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            3,
            3,
            vec![dh(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            2,
            5,
            vec![
                dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// `consistencyProofs`: (size1, size2, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                dh("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

#[test]
fn rfc6962_hasher_known_answers() {
    assert_eq!(empty_root(), dh(EMPTY_TREE_HASH));
    assert_eq!(
        leaf_hash(&[]),
        dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    assert_eq!(
        leaf_hash(b"L123456"),
        dh("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    );
    // The empty tree's root is not the hash of an empty leaf.
    assert_ne!(empty_root(), leaf_hash(&[]));
    // Node hashing depends on order and differs from hashing the concatenation as a leaf.
    let (a, b) = (leaf_hash(b"Hello"), leaf_hash(b"World"));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    let mut concat = a.to_vec();
    concat.extend_from_slice(&b);
    assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
}

#[test]
fn roots_for_sizes_1_to_8() {
    let hashes = leaf_hashes();
    let mut frontier = Frontier::new();
    for size in 1..=8u64 {
        assert_eq!(
            root_from_leaves(&hashes[..size as usize]),
            root(size),
            "size {size}"
        );
        frontier.push(hashes[size as usize - 1]).unwrap();
        assert_eq!(frontier.root(), root(size), "frontier size {size}");
    }
    assert_eq!(
        hex::encode(root_from_leaves(&hashes)),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
}

#[test]
fn inclusion_proofs_are_generated_exactly() {
    let hashes = leaf_hashes();
    for (leaf, size, want) in inclusion_vectors() {
        let got = inclusion_proof(&hashes[..size as usize], leaf - 1, size).unwrap();
        assert_eq!(got, want, "leaf {leaf} size {size}");
    }
}

#[test]
fn consistency_proofs_are_generated_exactly() {
    let hashes = leaf_hashes();
    for (size1, size2, want) in consistency_vectors() {
        let got = consistency_proof(&hashes[..size2 as usize], size1, size2).unwrap();
        assert_eq!(got, want, "{size1} -> {size2}");
    }
}

/// Port of `corruptInclusionProof`: every probe must fail.
fn corrupt_inclusion(
    index: u64,
    size: u64,
    proof: &[Hash],
    root: Hash,
    leaf: Hash,
) -> Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> {
    let some = dh(SOME_HASH);
    let empty = dh(EMPTY_TREE_HASH);
    let garbage = [0u8; 32];
    let with = |extra_front: &[Hash], extra_back: &[Hash]| {
        let mut p = extra_front.to_vec();
        p.extend_from_slice(proof);
        p.extend_from_slice(extra_back);
        p
    };
    let p = proof.to_vec();
    let mut probes = vec![
        // Wrong leaf index (Go's uint64 wrap-around for index 0 included).
        (
            index.wrapping_sub(1),
            size,
            root,
            leaf,
            p.clone(),
            "leafIndex - 1".to_owned(),
        ),
        (
            index + 1,
            size,
            root,
            leaf,
            p.clone(),
            "leafIndex + 1".to_owned(),
        ),
        (
            index ^ 2,
            size,
            root,
            leaf,
            p.clone(),
            "leafIndex ^ 2".to_owned(),
        ),
        // Wrong tree height.
        (
            index,
            size * 2,
            root,
            leaf,
            p.clone(),
            "treeSize * 2".to_owned(),
        ),
        (
            index,
            size / 2,
            root,
            leaf,
            p.clone(),
            "treeSize / 2".to_owned(),
        ),
        // Wrong leaf or root.
        (
            index,
            size,
            root,
            padded(b"WrongLeaf"),
            p.clone(),
            "wrong leaf".to_owned(),
        ),
        (index, size, empty, leaf, p.clone(), "empty root".to_owned()),
        (index, size, some, leaf, p.clone(), "random root".to_owned()),
        // Garbage at the end.
        (
            index,
            size,
            root,
            leaf,
            with(&[], &[garbage]),
            "trailing garbage".to_owned(),
        ),
        (
            index,
            size,
            root,
            leaf,
            with(&[], &[root]),
            "trailing root".to_owned(),
        ),
        // Garbage at the front.
        (
            index,
            size,
            root,
            leaf,
            with(&[garbage], &[]),
            "preceding garbage".to_owned(),
        ),
        (
            index,
            size,
            root,
            leaf,
            with(&[root], &[]),
            "preceding root".to_owned(),
        ),
    ];
    for i in 0..proof.len() {
        let mut wrong = p.clone();
        wrong[i][0] ^= 8;
        probes.push((
            index,
            size,
            root,
            leaf,
            wrong,
            format!("modified proof[{i}] bit 3"),
        ));
    }
    if !proof.is_empty() {
        probes.push((
            index,
            size,
            root,
            leaf,
            p[..p.len() - 1].to_vec(),
            "removed component".to_owned(),
        ));
    }
    if proof.len() > 1 {
        let mut wrong = vec![proof[0], some];
        wrong.extend_from_slice(&proof[1..]);
        probes.push((
            index,
            size,
            root,
            leaf,
            wrong,
            "inserted component".to_owned(),
        ));
    }
    probes
}

#[test]
fn inclusion_vectors_verify_and_every_corruption_fails() {
    let hashes = leaf_hashes();
    for (leaf, size, proof) in inclusion_vectors() {
        let index = leaf - 1;
        let leaf_hash = hashes[index as usize];
        let root = root(size);
        verify_inclusion(&leaf_hash, index, size, &proof, &root)
            .unwrap_or_else(|e| panic!("leaf {leaf} size {size}: {e}"));
        let probes = corrupt_inclusion(index, size, &proof, root, leaf_hash);
        assert!(probes.len() >= 12);
        for (i, s, r, l, p, desc) in probes {
            assert!(
                verify_inclusion(&l, i, s, &p, &r).is_err(),
                "leaf {leaf} size {size}: incorrectly verified against {desc}"
            );
        }
    }
}

#[test]
fn inclusion_single_entry() {
    // TestVerifyInclusionSingleEntry: root and leaf hash of a 1-entry tree
    // are the same and the proof is empty.
    let hash = leaf_hash(b"data");
    let empty = [0u8; 32];
    verify_inclusion(&hash, 0, 1, &[], &hash).unwrap();
    assert_eq!(
        verify_inclusion(&empty, 0, 1, &[], &hash),
        Err(MerkleError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(&hash, 0, 1, &[], &empty),
        Err(MerkleError::RootMismatch)
    );
}

#[test]
fn inclusion_out_of_range_probes() {
    // TestVerifyInclusion's probes {0,0}, {0,1}, {1,0}, {2,1} with mismatched
    // leaf/root and an empty proof.
    let some = dh(SOME_HASH);
    let empty = dh(EMPTY_TREE_HASH);
    let zero = [0u8; 32];
    for (index, size) in [(0u64, 0u64), (0, 1), (1, 0), (2, 1)] {
        assert!(verify_inclusion(&some, index, size, &[], &zero).is_err());
        assert!(verify_inclusion(&zero, index, size, &[], &empty).is_err());
        assert!(verify_inclusion(&some, index, size, &[], &empty).is_err());
    }
    // The {0, 0} entry of inclusionProofs is not a valid request.
    assert_eq!(
        inclusion_proof(&leaf_hashes(), 0, 0),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
}

/// Port of `corruptConsistencyProof`: every probe must fail.
fn corrupt_consistency(
    size1: u64,
    size2: u64,
    root1: Hash,
    root2: Hash,
    proof: &[Hash],
) -> Vec<(u64, u64, Hash, Hash, Vec<Hash>, String)> {
    let wrong_root = padded(b"WrongRoot");
    let garbage = [0u8; 32];
    let with = |front: &[Hash], back: &[Hash]| {
        let mut p = front.to_vec();
        p.extend_from_slice(proof);
        p.extend_from_slice(back);
        p
    };
    let p = proof.to_vec();
    let mut probes = vec![
        // Wrong size1.
        (
            size1 - 1,
            size2,
            root1,
            root2,
            p.clone(),
            "size1 - 1".to_owned(),
        ),
        (
            size1 + 1,
            size2,
            root1,
            root2,
            p.clone(),
            "size1 + 1".to_owned(),
        ),
        (
            size1 ^ 2,
            size2,
            root1,
            root2,
            p.clone(),
            "size1 ^ 2".to_owned(),
        ),
        // Wrong tree height.
        (
            size1,
            size2 * 2,
            root1,
            root2,
            p.clone(),
            "size2 * 2".to_owned(),
        ),
        (
            size1,
            size2 / 2,
            root1,
            root2,
            p.clone(),
            "size2 / 2".to_owned(),
        ),
        // Wrong root.
        (
            size1,
            size2,
            wrong_root,
            root2,
            p.clone(),
            "wrong root1".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            wrong_root,
            p.clone(),
            "wrong root2".to_owned(),
        ),
        (
            size1,
            size2,
            root2,
            root1,
            p.clone(),
            "swapped roots".to_owned(),
        ),
        // Empty proof.
        (size1, size2, root1, root2, vec![], "empty proof".to_owned()),
        // Garbage at the end.
        (
            size1,
            size2,
            root1,
            root2,
            with(&[], &[garbage]),
            "trailing garbage".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            root2,
            with(&[], &[root1]),
            "trailing root1".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            root2,
            with(&[], &[root2]),
            "trailing root2".to_owned(),
        ),
        // Garbage at the front.
        (
            size1,
            size2,
            root1,
            root2,
            with(&[garbage], &[]),
            "preceding garbage".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            root2,
            with(&[root1], &[]),
            "preceding root1".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            root2,
            with(&[root2], &[]),
            "preceding root2".to_owned(),
        ),
        (
            size1,
            size2,
            root1,
            root2,
            with(&[proof[0]], &[]),
            "preceding proof[0]".to_owned(),
        ),
    ];
    if !proof.is_empty() {
        probes.push((
            size1,
            size2,
            root1,
            root2,
            p[..p.len() - 1].to_vec(),
            "truncated proof".to_owned(),
        ));
    }
    for i in 0..proof.len() {
        let mut wrong = p.clone();
        wrong[i][0] ^= 16;
        probes.push((
            size1,
            size2,
            root1,
            root2,
            wrong,
            format!("modified proof[{i}] bit 4"),
        ));
    }
    probes
}

#[test]
fn consistency_vectors_verify_and_every_corruption_fails() {
    for (size1, size2, proof) in consistency_vectors() {
        let (root1, root2) = (root(size1), root(size2));
        verify_consistency(size1, size2, &root1, &root2, &proof)
            .unwrap_or_else(|e| panic!("{size1} -> {size2}: {e}"));
        // As in verifierConsistencyCheck: only non-trivial proofs are mutated.
        if proof.is_empty() {
            continue;
        }
        for (s1, s2, r1, r2, p, desc) in corrupt_consistency(size1, size2, root1, root2, &proof) {
            assert!(
                verify_consistency(s1, s2, &r1, &r2, &p).is_err(),
                "{size1} -> {size2}: incorrectly verified against {desc}"
            );
        }
    }
}

#[test]
fn consistency_edge_cases() {
    // TestVerifyConsistency's table; Go's "don't care" byte strings padded.
    let root1 = padded(b"don't care 1");
    let root2 = padded(b"don't care 2");
    let empty = dh(EMPTY_TREE_HASH);
    let proof2 = vec![empty];
    let cases: Vec<(u64, u64, Hash, Hash, Vec<Hash>, bool)> = vec![
        (0, 0, root1, root2, vec![], true),
        (1, 1, root1, root2, vec![], true),
        // Sizes that are always consistent.
        (0, 0, root1, root1, vec![], false),
        (0, 1, root1, root2, vec![], false),
        (1, 1, root2, root2, vec![], false),
        // Time travel to the past.
        (1, 0, root1, root2, vec![], true),
        (2, 1, root1, root2, vec![], true),
        // Empty proof.
        (1, 2, root1, root2, vec![], true),
        // Roots don't match.
        (0, 0, empty, root2, vec![], true),
        (1, 1, empty, root2, vec![], true),
        // Roots match but the proof is not empty.
        (0, 0, empty, empty, proof2.clone(), true),
        (0, 1, empty, empty, proof2.clone(), true),
        (1, 1, empty, empty, proof2, true),
    ];
    for (i, (size1, size2, r1, r2, proof, want_err)) in cases.into_iter().enumerate() {
        let got = verify_consistency(size1, size2, &r1, &r2, &proof);
        assert_eq!(
            got.is_err(),
            want_err,
            "case {i} ({size1} -> {size2}): {got:?}"
        );
    }
}

#[test]
fn error_messages() {
    let hashes = leaf_hashes();
    assert_eq!(
        verify_inclusion(&hashes[0], 7, 5, &[], &root(5))
            .unwrap_err()
            .to_string(),
        "index 7 is not below tree size 5"
    );
    let proof = inclusion_proof(&hashes, 0, 8).unwrap();
    assert_eq!(
        verify_inclusion(&hashes[0], 0, 3, &proof, &root(3))
            .unwrap_err()
            .to_string(),
        "proof has 3 hashes, expected 2"
    );
    assert_eq!(
        verify_inclusion(&hashes[1], 0, 8, &proof, &root(8))
            .unwrap_err()
            .to_string(),
        "computed root does not match"
    );
    assert_eq!(
        verify_consistency(1, 8, &root(1), &root(8), &[])
            .unwrap_err()
            .to_string(),
        "proof has 0 hashes, expected 3"
    );
    assert_eq!(
        inclusion_proof(&hashes[..4], 0, 5).unwrap_err().to_string(),
        "leaf missing at index 4"
    );
}
