//! RFC 9162 (Certificate Transparency v2) Merkle tree math for Liaison's
//! tamper-evident audit logs.
//!
//! This module owns the pure arithmetic of an append-only Merkle log and
//! nothing else: leaf and node hashing (RFC 9162 §2.1.1), tree roots, the
//! O(log n) [`Frontier`] used to append without rereading the log, inclusion
//! and consistency proofs (generation §2.1.3.1 / §2.1.4.1, verification
//! §2.1.3.2 / §2.1.4.2), the canonical bytes of a [`TreeHead`] that another
//! module signs, and the [`Proof`] JSON interchange shape.
//!
//! It does no IO, keeps no clock and does no signing. Storage plugs in through
//! the [`LeafHashes`] trait, so proofs can be produced from a `Vec`, a database
//! or a file of leaf hashes alike.
//!
//! Every function is total: malformed input (wrong sizes, short or long
//! proofs, corrupted persisted state) comes back as a [`MerkleError`], never a
//! panic, because proofs and tree heads arrive from other federation members.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// RFC 9162 §2.1.1 domain separation: leaves and interior nodes are hashed
/// with different one-byte prefixes so a leaf can never be passed off as a
/// node (second-preimage resistance).
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Errors from building or checking Merkle proofs and frontiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A leaf index that does not exist in a tree of the given size.
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A proof whose length cannot be right for the claimed sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { got: usize, expected: usize },
    /// The hashes chained to a root other than the one claimed.
    #[error("computed root does not match")]
    RootMismatch,
    /// A consistency proof that does not reproduce the old tree's root.
    #[error("computed old root does not match")]
    OldRootMismatch,
    /// A proof that walked off the tree shape (RFC 9162 `sn` not ending at 0).
    #[error("proof does not fit a tree of size {size}")]
    MalformedProof { size: u64 },
    /// Storage could not supply a leaf hash that the requested tree needs.
    #[error("leaf missing at index {index}")]
    LeafMissing { index: u64 },
    /// A consistency request going backwards in time.
    #[error("old size {old_size} is greater than new size {new_size}")]
    SizeDecreased { old_size: u64, new_size: u64 },
    /// A subtree request whose leaf range does not fit in u64.
    #[error("subtree at level {level} index {index} is out of range")]
    SubtreeOutOfRange { level: u32, index: u64 },
    /// Storage could not supply a perfect subtree's root that a proof needs.
    #[error("subtree at level {level} index {index} is not in storage")]
    SubtreeMissing { level: u32, index: u64 },
    /// Appending to a tree that already holds u64::MAX leaves.
    #[error("tree is full at size {size}")]
    TreeFull { size: u64 },
    /// Persisted frontier state that cannot describe a tree of its size.
    #[error("frontier of size {size} needs {expected} hashes, got {got}")]
    InvalidFrontier {
        size: u64,
        expected: usize,
        got: usize,
    },
    /// A [`Proof`] of the other kind was supplied.
    #[error("expected {expected} proof, got {got} proof")]
    WrongProofKind {
        expected: &'static str,
        got: &'static str,
    },
    /// A [`Proof`] issued for a different log.
    #[error("proof is for log {got:?}, expected log {expected:?}")]
    LogIdMismatch { expected: String, got: String },
    /// A [`Proof`] whose tree size differs from the tree head it is checked against.
    #[error("proof is for tree size {proof_size}, tree head has size {head_size}")]
    TreeSizeMismatch { proof_size: u64, head_size: u64 },
}

/// RFC 9162 leaf hash: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// RFC 9162 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Root of the empty tree: `SHA-256("")` (RFC 9162 §2.1.1, MTH({})).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// MTH(D\[n\]) per RFC 9162 §2.1.1, from the leaves' hashes.
///
/// Computed left to right with a [`Frontier`] rather than by the recursive
/// definition: same result (the split at the largest power of two below `n`
/// is exactly the binary decomposition a frontier keeps), O(log n) memory and
/// no recursion depth to worry about.
pub fn root_from_leaves(leaf_hashes: &[Hash]) -> Hash {
    let mut frontier = Frontier::new();
    for hash in leaf_hashes {
        // A slice cannot hold u64::MAX hashes, so push cannot fail here.
        if frontier.push(*hash).is_err() {
            break;
        }
    }
    frontier.root()
}

/// Combines perfect-subtree roots listed left to right (largest first) into
/// the root of the tree they make up: the rightmost pair is joined first,
/// because RFC 9162's split puts every smaller remainder on the right.
fn fold_right_to_left(subtrees: &[Hash]) -> Hash {
    let mut iter = subtrees.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |acc, left| node_hash(left, &acc))
}

/// The compact range `[0, size)` of a Merkle log: one root per perfect
/// subtree, one per set bit of `size`, largest (leftmost) first.
///
/// This is all a log writer needs to keep to append and to know its current
/// root in O(log n) time and space. It serializes as
/// `{"size": N, "hashes": ["hex", ...]}` so a store can persist it next to the
/// log, and deserialization rejects a hash count that does not match `size`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "FrontierRepr", into = "FrontierRepr")]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

/// Wire form of [`Frontier`]; kept separate so deserialization goes through
/// the invariant check in [`Frontier::from_parts`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontierRepr {
    size: u64,
    #[serde(with = "hex_hashes")]
    hashes: Vec<Hash>,
}

impl TryFrom<FrontierRepr> for Frontier {
    type Error = MerkleError;
    fn try_from(repr: FrontierRepr) -> Result<Self, Self::Error> {
        Frontier::from_parts(repr.size, repr.hashes)
    }
}

impl From<Frontier> for FrontierRepr {
    fn from(frontier: Frontier) -> Self {
        FrontierRepr {
            size: frontier.size,
            hashes: frontier.hashes,
        }
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from persisted parts, checking that `hashes` has
    /// one entry per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::InvalidFrontier {
                size,
                expected,
                got: hashes.len(),
            });
        }
        Ok(Self { size, hashes })
    }

    /// Builds the frontier of a tree from all of its leaf hashes.
    pub fn from_leaves(leaf_hashes: &[Hash]) -> Result<Self, MerkleError> {
        let mut frontier = Self::new();
        for hash in leaf_hashes {
            frontier.push(*hash)?;
        }
        Ok(frontier)
    }

    /// Appends a leaf hash and returns the index the leaf got.
    ///
    /// Each carry in `size + 1` merges the two smallest subtrees, like binary
    /// addition, so this costs at most log2(n) node hashes.
    pub fn push(&mut self, leaf_hash: Hash) -> Result<u64, MerkleError> {
        self.push_reporting(leaf_hash, |_, _| {})
    }

    /// As [`push`](Frontier::push), and hands `completed` each perfect subtree of
    /// level 1 or more that this leaf completes, smallest first: what a store that
    /// keeps interior nodes writes beside the leaf.
    pub fn push_reporting(
        &mut self,
        leaf_hash: Hash,
        mut completed: impl FnMut(SubtreeId, &Hash),
    ) -> Result<u64, MerkleError> {
        let index = self.size;
        let new_size = index
            .checked_add(1)
            .ok_or(MerkleError::TreeFull { size: index })?;
        let merges = new_size.trailing_zeros() as usize;
        // Checked before mutating so a (theoretically impossible) broken
        // invariant leaves the frontier untouched instead of half-updated.
        if self.hashes.len() != index.count_ones() as usize || self.hashes.len() < merges {
            return Err(MerkleError::InvalidFrontier {
                size: index,
                expected: index.count_ones() as usize,
                got: self.hashes.len(),
            });
        }
        let mut node = leaf_hash;
        for level in 1..=merges as u32 {
            if let Some(left) = self.hashes.pop() {
                node = node_hash(&left, &node);
                // The subtree just closed ends at the new size: its index at this
                // level is the number of whole subtrees of its width, minus one.
                completed((level, (new_size >> level) - 1), &node);
            }
        }
        self.hashes.push(node);
        self.size = new_size;
        Ok(index)
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Current tree root (MTH of all leaves pushed); [`empty_root`] when empty.
    pub fn root(&self) -> Hash {
        fold_right_to_left(&self.hashes)
    }

    /// Perfect-subtree roots, largest (leftmost) first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }
}

/// A perfect subtree, `(level, index)`: the `2^level` leaves starting at
/// `index * 2^level`. Level 0 is one leaf.
pub type SubtreeId = (u32, u64);

/// A store that keeps interior nodes keeps the perfect subtrees of every level that is
/// a multiple of this: about one row per 15 leaves, and any subtree's root from at
/// most `2^(STRIDE-1)` stored rows below it.
pub const STORED_LEVEL_STRIDE: u32 = 4;

/// Read access to a log's leaf hashes, so proofs can be generated from any
/// storage.
///
/// Only [`leaf_hash_at`](LeafHashes::leaf_hash_at) is required. Proof
/// generation asks for whole perfect subtrees through
/// [`perfect_subtree_hash`](LeafHashes::perfect_subtree_hash); the default
/// recomputes them from leaves (O(2^level) hashes, so O(n) per proof). A store
/// that keeps interior node hashes can override it to make proofs O(log² n).
pub trait LeafHashes {
    /// The leaf hash at `index`, or `None` if storage does not have it.
    fn leaf_hash_at(&self, index: u64) -> Option<Hash>;

    /// Root of the perfect subtree covering leaves
    /// `[index * 2^level, (index + 1) * 2^level)`.
    fn perfect_subtree_hash(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        let out_of_range = MerkleError::SubtreeOutOfRange { level, index };
        let width = 1u64.checked_shl(level).ok_or(out_of_range.clone())?;
        let start = index.checked_mul(width).ok_or(out_of_range.clone())?;
        // The subtree's last leaf must be addressable too.
        start.checked_add(width - 1).ok_or(out_of_range)?;
        root_of_leaf_range(self, start, width)
    }
}

impl LeafHashes for [Hash] {
    fn leaf_hash_at(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.get(index).copied()
    }
}

impl LeafHashes for Vec<Hash> {
    fn leaf_hash_at(&self, index: u64) -> Option<Hash> {
        self.as_slice().leaf_hash_at(index)
    }
}

/// MTH of the `width` leaves starting at `start`, read one by one.
/// Callers guarantee `start + width` does not overflow and `width > 0`.
fn root_of_leaf_range<L: LeafHashes + ?Sized>(
    leaves: &L,
    start: u64,
    width: u64,
) -> Result<Hash, MerkleError> {
    let mut frontier = Frontier::new();
    for offset in 0..width {
        let index = start.saturating_add(offset);
        let hash = leaves
            .leaf_hash_at(index)
            .ok_or(MerkleError::LeafMissing { index })?;
        frontier.push(hash)?;
    }
    Ok(frontier.root())
}

/// MTH(D\[start:end\]) for a non-empty range, assembled from perfect subtrees.
///
/// Every range RFC 9162's recursion asks for starts at a multiple of a power
/// of two at least as large as the range, so its binary decomposition
/// (largest block first) consists of aligned perfect subtrees that a store
/// may have cached. A misaligned block (never produced here) falls back to
/// reading leaves so the function stays correct for any input.
fn range_root<L: LeafHashes + ?Sized>(
    leaves: &L,
    start: u64,
    end: u64,
) -> Result<Hash, MerkleError> {
    let width = end.saturating_sub(start);
    let mut blocks = Vec::with_capacity(width.count_ones() as usize);
    let mut pos = start;
    for level in (0..u64::BITS).rev() {
        let block = 1u64 << level;
        if width & block == 0 {
            continue;
        }
        let hash = if pos.is_multiple_of(block) {
            leaves.perfect_subtree_hash(level, pos >> level)?
        } else {
            root_of_leaf_range(leaves, pos, block)?
        };
        blocks.push(hash);
        pos = pos.saturating_add(block);
    }
    Ok(fold_right_to_left(&blocks))
}

/// The perfect subtrees (level 0: leaves) that [`consistency_proof`] reads for these
/// sizes, in the order it reads them. A store fetches exactly these, then builds the
/// proof from them with [`KnownSubtrees`]: O(log n) rows where reading every leaf
/// would be O(n) per proof.
pub fn consistency_proof_subtrees(
    old_size: u64,
    new_size: u64,
) -> Result<Vec<SubtreeId>, MerkleError> {
    // Runs the proof itself over storage that notes what it is asked for, so the
    // list cannot drift from the recursion that uses it.
    struct Noting(std::cell::RefCell<Vec<SubtreeId>>);
    impl LeafHashes for Noting {
        fn leaf_hash_at(&self, index: u64) -> Option<Hash> {
            self.0.borrow_mut().push((0, index));
            Some([0; 32])
        }
        fn perfect_subtree_hash(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
            self.0.borrow_mut().push((level, index));
            Ok([0; 32])
        }
    }
    let noting = Noting(std::cell::RefCell::new(Vec::new()));
    consistency_proof(&noting, old_size, new_size)?;
    let mut wanted = noting.0.into_inner();
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|id| seen.insert(*id));
    Ok(wanted)
}

/// Perfect-subtree roots fetched ahead of a proof (see
/// [`consistency_proof_subtrees`]); a subtree not among them is missing storage.
#[derive(Debug, Clone, Default)]
pub struct KnownSubtrees(std::collections::HashMap<SubtreeId, Hash>);

impl FromIterator<(SubtreeId, Hash)> for KnownSubtrees {
    fn from_iter<I: IntoIterator<Item = (SubtreeId, Hash)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl LeafHashes for KnownSubtrees {
    fn leaf_hash_at(&self, index: u64) -> Option<Hash> {
        self.0.get(&(0, index)).copied()
    }
    fn perfect_subtree_hash(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or(MerkleError::SubtreeMissing { level, index })
    }
}

/// Largest power of two strictly below `n`, for `n >= 2` (RFC 9162's `k`).
fn split_point(n: u64) -> u64 {
    let bits_below = u64::BITS - n.saturating_sub(1).leading_zeros();
    1u64 << bits_below.saturating_sub(1)
}

/// Fails unless storage holds at least `size` leaves; proofs over a tree the
/// store does not have must not silently succeed (e.g. size 1 needs no hashes).
fn require_leaves<L: LeafHashes + ?Sized>(leaves: &L, size: u64) -> Result<(), MerkleError> {
    if let Some(last) = size.checked_sub(1) {
        leaves
            .leaf_hash_at(last)
            .ok_or(MerkleError::LeafMissing { index: last })?;
    }
    Ok(())
}

/// Inclusion proof PATH(index, D\[size\]) per RFC 9162 §2.1.3.1: sibling
/// subtree roots from the leaf up to the root.
pub fn inclusion_proof<L: LeafHashes + ?Sized>(
    leaves: &L,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    require_leaves(leaves, size)?;
    // The recursion, unrolled top-down over the window [lo, hi); it emits
    // siblings root-first, so the result is reversed at the end.
    let (mut lo, mut hi) = (0u64, size);
    let mut proof = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        let mid = lo + k;
        if index < mid {
            proof.push(range_root(leaves, mid, hi)?);
            hi = mid;
        } else {
            proof.push(range_root(leaves, lo, mid)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The root and every leaf's inclusion proof for a whole tree at once, in O(n log n)
/// hashes where calling [`inclusion_proof`] per leaf costs O(n²): the tree is built
/// level by level, a level's unpaired last node moving up unchanged, which is the
/// same tree as RFC 9162's split at the largest power of two (its right border).
pub fn root_and_inclusion_proofs(leaf_hashes: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    let mut proofs: Vec<Vec<Hash>> = vec![Vec::new(); leaf_hashes.len()];
    let mut level: Vec<Hash> = leaf_hashes.to_vec();
    // Where each leaf's ancestor sits in the current level.
    let mut at: Vec<usize> = (0..leaf_hashes.len()).collect();
    while level.len() > 1 {
        for (proof, pos) in proofs.iter_mut().zip(at.iter_mut()) {
            if let Some(sibling) = level.get(*pos ^ 1) {
                proof.push(*sibling);
            }
            *pos >>= 1;
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [single] => *single,
                _ => empty_root(),
            })
            .collect();
    }
    let root = level.first().copied().unwrap_or_else(empty_root);
    (root, proofs)
}

/// Consistency proof PROOF(old_size, D\[new_size\]) per RFC 9162 §2.1.4.1.
///
/// Empty when `old_size == 0` or `old_size == new_size`, which is what
/// [`verify_consistency`] expects for those cases.
pub fn consistency_proof<L: LeafHashes + ?Sized>(
    leaves: &L,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizeDecreased { old_size, new_size });
    }
    require_leaves(leaves, new_size)?;
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled; emits nodes top-down, reversed below.
    let (mut m, mut lo, mut hi, mut whole_old_tree) = (old_size, 0u64, new_size, true);
    let mut proof = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            // When the old tree is exactly this subtree the verifier already
            // has its root (old_root), so it is left out.
            if !whole_old_tree {
                proof.push(range_root(leaves, lo, hi)?);
            }
            break;
        }
        let k = split_point(n);
        let mid = lo + k;
        if m <= k {
            proof.push(range_root(leaves, mid, hi)?);
            hi = mid;
        } else {
            proof.push(range_root(leaves, lo, mid)?);
            m -= k;
            lo = mid;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Lengths of the two parts of an inclusion proof (as in transparency-dev's
/// `decompInclProof`): hashes below the point where the paths to `index` and
/// `size - 1` diverge, and hashes along the right border above it. Used to
/// reject wrong-length proofs up front with a clear message.
fn decompose_inclusion(index: u64, size: u64) -> (u32, u32) {
    let inner = u64::BITS - (index ^ size.saturating_sub(1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// Verifies an inclusion proof with the algorithm of RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decompose_inclusion(index, size);
    let expected = inner as usize + border as usize;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }
    // RFC 9162 §2.1.3.2 step by step; `fn_`/`sn` are the RFC's fn/sn.
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::MalformedProof { size });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(MerkleError::MalformedProof { size });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof with the algorithm of RFC 9162 §2.1.4.2.
///
/// Edge cases follow transparency-dev's `proof.VerifyConsistency`:
/// `old_size == new_size` needs an empty proof and equal roots;
/// `old_size == 0` needs an empty proof and accepts any roots (every tree
/// extends the empty tree; checking that a size-0 head carries
/// [`empty_root`] is the caller's business).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if new_size < old_size {
        return Err(MerkleError::SizeDecreased { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    // Expected length, as transparency-dev computes it: the inclusion path of
    // leaf old_size-1 minus the levels inside the old tree's last perfect
    // subtree, plus that subtree's root unless it is the whole old tree.
    let (inner, border) = decompose_inclusion(old_size - 1, new_size);
    let shift = old_size.trailing_zeros();
    let inner = inner.saturating_sub(shift);
    let old_is_perfect = old_size.is_power_of_two();
    let expected = usize::from(!old_is_perfect) + inner as usize + border as usize;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    }

    // RFC 9162 §2.1.4.2 step by step.
    // 2. If first is an exact power of 2, prepend first_hash to the path.
    let prefix: &[Hash] = if old_is_perfect {
        std::slice::from_ref(old_root)
    } else {
        &[]
    };
    let mut path = prefix.iter().chain(proof.iter());
    // 1. (after the prepend, so it also covers a proof that was only the
    // prepended root) An empty path fails.
    let Some(first) = path.next() else {
        return Err(MerkleError::WrongProofLength {
            got: proof.len(),
            expected,
        });
    };
    // 3.
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    // 4.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let mut fr = *first;
    let mut sr = *first;
    // 6.
    for c in path {
        if sn == 0 {
            return Err(MerkleError::MalformedProof { size: new_size });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    if sn != 0 {
        return Err(MerkleError::MalformedProof { size: new_size });
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// A log's signed statement of its size and root at a moment.
///
/// JSON: `{"size": 8, "root": "<64 hex chars>", "timestamp_ms": 1700000000000}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeHead {
    /// Number of leaves in the tree.
    pub size: u64,
    /// MTH of those leaves.
    #[serde(with = "hex_hash")]
    pub root: Hash,
    /// When the log produced this head, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl TreeHead {
    /// Domain tag that starts [`TreeHead::signing_bytes`]; the version lets the
    /// encoding change later without old signatures verifying new meanings.
    pub const SIGNING_DOMAIN: &'static [u8] = b"liaison-tree-head-v1\n";

    /// Canonical bytes to sign for this head in log `log_id`.
    ///
    /// Layout (every field fixed-width or length-prefixed, so no two distinct
    /// `(log_id, head)` pairs encode to the same bytes):
    ///
    /// | bytes | content |
    /// |---|---|
    /// | 21 | ASCII `"liaison-tree-head-v1\n"` |
    /// | 8 | `len(log_id)` as u64 big-endian |
    /// | len | `log_id` as UTF-8 |
    /// | 8 | `size` as u64 big-endian |
    /// | 32 | `root` |
    /// | 8 | `timestamp_ms` as i64 big-endian (two's complement) |
    pub fn signing_bytes(&self, log_id: &str) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(Self::SIGNING_DOMAIN.len() + 8 + log_id.len() + 8 + 32 + 8);
        out.extend_from_slice(Self::SIGNING_DOMAIN);
        out.extend_from_slice(&(log_id.len() as u64).to_be_bytes());
        out.extend_from_slice(log_id.as_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }
}

/// A Merkle proof as exchanged in JSON between Liaison nodes and auditors.
///
/// Inclusion:
/// `{"kind":"inclusion","log_id":"…","size":8,"leaf_index":5,"leaf_hash":"hex","hashes":["hex",…]}`
///
/// Consistency:
/// `{"kind":"consistency","log_id":"…","old_size":6,"new_size":8,"hashes":["hex",…]}`
///
/// Hashes are lowercase hex (uppercase is accepted on input), ordered from the
/// leaf upwards exactly as RFC 9162 lists them. Roots are not carried: they
/// come from signed [`TreeHead`]s, which is what makes the proof mean anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proof {
    /// Leaf `leaf_index` with hash `leaf_hash` is in the tree of `size` leaves.
    Inclusion {
        log_id: String,
        size: u64,
        leaf_index: u64,
        #[serde(with = "hex_hash")]
        leaf_hash: Hash,
        #[serde(with = "hex_hashes")]
        hashes: Vec<Hash>,
    },
    /// The tree of `new_size` leaves extends the tree of `old_size` leaves.
    Consistency {
        log_id: String,
        old_size: u64,
        new_size: u64,
        #[serde(with = "hex_hashes")]
        hashes: Vec<Hash>,
    },
}

impl Proof {
    fn kind(&self) -> &'static str {
        match self {
            Proof::Inclusion { .. } => "inclusion",
            Proof::Consistency { .. } => "consistency",
        }
    }

    fn check_log_id(expected: &str, got: &str) -> Result<(), MerkleError> {
        if expected != got {
            return Err(MerkleError::LogIdMismatch {
                expected: expected.to_owned(),
                got: got.to_owned(),
            });
        }
        Ok(())
    }

    fn check_size(proof_size: u64, head: &TreeHead) -> Result<(), MerkleError> {
        if proof_size != head.size {
            return Err(MerkleError::TreeSizeMismatch {
                proof_size,
                head_size: head.size,
            });
        }
        Ok(())
    }

    /// Checks an inclusion proof of log `log_id` against a (separately
    /// signature-checked) tree head.
    pub fn verify_inclusion(&self, log_id: &str, head: &TreeHead) -> Result<(), MerkleError> {
        let Proof::Inclusion {
            log_id: proof_log,
            size,
            leaf_index,
            leaf_hash,
            hashes,
        } = self
        else {
            return Err(MerkleError::WrongProofKind {
                expected: "inclusion",
                got: self.kind(),
            });
        };
        Self::check_log_id(log_id, proof_log)?;
        Self::check_size(*size, head)?;
        verify_inclusion(leaf_hash, *leaf_index, *size, hashes, &head.root)
    }

    /// Checks a consistency proof of log `log_id` between two (separately
    /// signature-checked) tree heads.
    pub fn verify_consistency(
        &self,
        log_id: &str,
        old: &TreeHead,
        new: &TreeHead,
    ) -> Result<(), MerkleError> {
        let Proof::Consistency {
            log_id: proof_log,
            old_size,
            new_size,
            hashes,
        } = self
        else {
            return Err(MerkleError::WrongProofKind {
                expected: "consistency",
                got: self.kind(),
            });
        };
        Self::check_log_id(log_id, proof_log)?;
        Self::check_size(*old_size, old)?;
        Self::check_size(*new_size, new)?;
        verify_consistency(*old_size, *new_size, &old.root, &new.root, hashes)
    }
}

/// Decodes one 64-character hex hash.
fn decode_hash(text: &str) -> Result<Hash, hex::FromHexError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)?;
    Ok(out)
}

/// Serde adapter: a [`Hash`] as a hex string.
mod hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(hash: &Hash, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(hash))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Hash, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::decode_hash(&text).map_err(D::Error::custom)
    }
}

/// Serde adapter: a list of [`Hash`]es as hex strings.
mod hex_hashes {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(
        hashes: &[Hash],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(hashes.iter().map(hex::encode))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Hash>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| super::decode_hash(text).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;
    use proptest::prelude::*;

    /// Leaf hashes of `n` distinct synthetic entries.
    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn all_inclusion_proofs_at_once_match_rfc_9162() {
        for n in 1..=70u64 {
            let l = leaves(n);
            let (root, proofs) = root_and_inclusion_proofs(&l);
            assert_eq!(root, root_from_leaves(&l), "n={n}");
            assert_eq!(proofs.len() as u64, n);
            for (i, p) in proofs.iter().enumerate() {
                let i = i as u64;
                assert_eq!(p, &inclusion_proof(&l, i, n).unwrap(), "n={n} i={i}");
                verify_inclusion(&l[i as usize], i, n, p, &root).unwrap();
            }
        }
        let (root, proofs) = root_and_inclusion_proofs(&[]);
        assert_eq!(root, empty_root());
        assert!(proofs.is_empty());
    }

    /// An in-memory tree that stores every perfect subtree root, to exercise
    /// the `perfect_subtree_hash` override and keep exhaustive tests fast.
    struct Levels(Vec<Vec<Hash>>);

    impl Levels {
        fn new(leaves: &[Hash]) -> Self {
            let mut levels = vec![leaves.to_vec()];
            while levels.last().unwrap().len() > 1 {
                let next = levels
                    .last()
                    .unwrap()
                    .chunks_exact(2)
                    .map(|pair| node_hash(&pair[0], &pair[1]))
                    .collect();
                levels.push(next);
            }
            Levels(levels)
        }
    }

    impl LeafHashes for Levels {
        fn leaf_hash_at(&self, index: u64) -> Option<Hash> {
            self.0[0].get(index as usize).copied()
        }
        fn perfect_subtree_hash(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
            self.0
                .get(level as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
                .ok_or(MerkleError::SubtreeOutOfRange { level, index })
        }
    }

    /// MTH straight from the RFC 9162 §2.1.1 recursive definition.
    fn reference_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_mth(&d[..k]), &reference_mth(&d[k..]))
            }
        }
    }

    /// PATH straight from RFC 9162 §2.1.3.1.
    fn reference_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = reference_path(m, &d[..k]);
            p.push(reference_mth(&d[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &d[k..]);
            p.push(reference_mth(&d[..k]));
            p
        }
    }

    /// SUBPROOF straight from RFC 9162 §2.1.4.1.
    fn reference_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![reference_mth(d)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = reference_subproof(m, &d[..k], b);
            p.push(reference_mth(&d[k..]));
            p
        } else {
            let mut p = reference_subproof(m - k, &d[k..], false);
            p.push(reference_mth(&d[..k]));
            p
        }
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn hashes_match_rfc6962_known_answers() {
        // Values from transparency-dev/merkle rfc6962/rfc6962_test.go.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex::encode(leaf_hash(b"L123456")),
            "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
        );
        assert_eq!(root_from_leaves(&[]), empty_root());
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for n in 2u64..2000 {
            let k = split_point(n);
            assert!(k.is_power_of_two() && k < n && 2 * k >= n, "n={n} k={k}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
        assert_eq!(split_point((1 << 63) + 1), 1 << 63);
    }

    #[test]
    fn root_matches_reference_definition_up_to_512() {
        let all = leaves(512);
        for n in 0..=512 {
            assert_eq!(
                root_from_leaves(&all[..n]),
                reference_mth(&all[..n]),
                "n={n}"
            );
        }
    }

    #[test]
    fn frontier_root_equals_root_from_leaves_for_every_size_up_to_512() {
        let all = leaves(512);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (n, hash) in all.iter().enumerate() {
            assert_eq!(frontier.push(*hash).unwrap(), n as u64);
            assert_eq!(frontier.size(), n as u64 + 1);
            assert_eq!(frontier.root(), root_from_leaves(&all[..=n]), "n={}", n + 1);
            assert_eq!(
                frontier.hashes().len(),
                frontier.size().count_ones() as usize
            );
        }
    }

    #[test]
    fn proofs_match_reference_definitions() {
        let all = leaves(70);
        for n in 1..=70usize {
            let d = &all[..n];
            for m in 0..n {
                let got = inclusion_proof(d, m as u64, n as u64).unwrap();
                assert_eq!(got, reference_path(m, d), "inclusion m={m} n={n}");
            }
            for m in 1..n {
                let got = consistency_proof(d, m as u64, n as u64).unwrap();
                assert_eq!(
                    got,
                    reference_subproof(m, d, true),
                    "consistency m={m} n={n}"
                );
            }
        }
    }

    /// Shared 512-leaf data: a tree of all perfect subtrees (valid for every
    /// prefix size, since a prefix's perfect subtrees are the same nodes) and
    /// the root of every prefix. Built once: SHA-256 is slow in debug builds.
    struct Fixture {
        leaves: Vec<Hash>,
        tree: Levels,
        roots: Vec<Hash>,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        FIXTURE.get_or_init(|| {
            let leaves = leaves(512);
            let mut frontier = Frontier::new();
            let mut roots = vec![frontier.root()];
            for hash in &leaves {
                frontier.push(*hash).unwrap();
                roots.push(frontier.root());
            }
            Fixture {
                tree: Levels::new(&leaves),
                leaves,
                roots,
            }
        })
    }

    #[test]
    fn every_inclusion_proof_for_every_size_up_to_512_verifies() {
        let f = fixture();
        // Sizes are interleaved across two threads: ~1M node hashes in all.
        std::thread::scope(|scope| {
            for lane in 0..2usize {
                scope.spawn(move || {
                    for n in (1..=512usize).filter(|n| n % 2 == lane) {
                        for i in 0..n {
                            let proof = inclusion_proof(&f.tree, i as u64, n as u64).unwrap();
                            verify_inclusion(&f.leaves[i], i as u64, n as u64, &proof, &f.roots[n])
                                .unwrap_or_else(|e| panic!("i={i} n={n}: {e}"));
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn every_consistency_proof_up_to_128_verifies() {
        let f = fixture();
        for n in 0..=128usize {
            for m in 0..=n {
                let proof = consistency_proof(&f.tree, m as u64, n as u64).unwrap();
                verify_consistency(m as u64, n as u64, &f.roots[m], &f.roots[n], &proof)
                    .unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
            }
        }
    }

    /// The subtrees named ahead are exactly enough: a proof built from them alone
    /// equals the one built from every subtree (itself checked against the leaves
    /// above), and each is a perfect subtree inside the new tree, so a store can
    /// have it.
    #[test]
    fn a_proof_from_the_subtrees_named_ahead_equals_one_from_all_leaves() {
        let all = leaves(160);
        let tree = Levels::new(&all);
        for n in 0..=160u64 {
            let prefix = Levels::new(&all[..n as usize]);
            for m in 0..=n {
                let wanted = consistency_proof_subtrees(m, n).unwrap();
                let known: KnownSubtrees = wanted
                    .iter()
                    .map(|&(level, index)| {
                        assert!((index + 1) << level <= n, "m={m} n={n}: ({level}, {index})");
                        (
                            (level, index),
                            tree.perfect_subtree_hash(level, index).unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(
                    consistency_proof(&known, m, n).unwrap(),
                    consistency_proof(&prefix, m, n).unwrap(),
                    "m={m} n={n}"
                );
            }
        }
        // One row per level of the tree at most, not one per leaf.
        let wanted = consistency_proof_subtrees(1_000_001, 4_000_037).unwrap();
        assert!(wanted.len() <= 2 * 22, "{}", wanted.len());
        assert!(matches!(
            consistency_proof(&KnownSubtrees::default(), 3, 7),
            Err(MerkleError::LeafMissing { index: 6 })
        ));
    }

    /// Every perfect subtree is reported once, when its last leaf arrives, with the
    /// root the tree has for it.
    #[test]
    fn push_reports_each_completed_subtree_once() {
        let all = leaves(300);
        let tree = Levels::new(&all);
        let mut frontier = Frontier::new();
        let mut reported = Vec::new();
        for leaf in &all {
            frontier
                .push_reporting(*leaf, |id, hash| reported.push((id, *hash)))
                .unwrap();
        }
        let expected: usize = (1..9).map(|level| 300 >> level).sum();
        assert_eq!(reported.len(), expected);
        for ((level, index), hash) in reported {
            assert_eq!(tree.perfect_subtree_hash(level, index).unwrap(), hash);
        }
        assert_eq!(frontier.root(), root_from_leaves(&all));
    }

    #[test]
    fn default_and_cached_subtree_paths_agree() {
        let all = leaves(300);
        let tree = Levels::new(&all);
        for (i, n) in [(0u64, 300u64), (17, 300), (299, 300), (128, 129), (5, 256)] {
            assert_eq!(
                inclusion_proof(&all[..n as usize], i, n).unwrap(),
                inclusion_proof(&tree, i, n).unwrap()
            );
            assert_eq!(
                consistency_proof(&all[..n as usize], i + 1, n).unwrap(),
                consistency_proof(&tree, i + 1, n).unwrap()
            );
        }
    }

    #[test]
    fn generation_errors() {
        let all = leaves(5);
        assert_eq!(
            inclusion_proof(&all, 7, 5).unwrap_err().to_string(),
            "index 7 is not below tree size 5"
        );
        assert_eq!(
            inclusion_proof(&all, 0, 6).unwrap_err().to_string(),
            "leaf missing at index 5"
        );
        assert_eq!(
            inclusion_proof(&all[..0], 0, 1).unwrap_err(),
            MerkleError::LeafMissing { index: 0 }
        );
        assert_eq!(
            consistency_proof(&all, 3, 2).unwrap_err().to_string(),
            "old size 3 is greater than new size 2"
        );
        assert_eq!(
            consistency_proof(&all, 2, 9).unwrap_err(),
            MerkleError::LeafMissing { index: 8 }
        );
        assert!(consistency_proof(&all, 0, 5).unwrap().is_empty());
        assert!(consistency_proof(&all, 5, 5).unwrap().is_empty());
        assert!(consistency_proof(&all, 0, 0).unwrap().is_empty());
        assert_eq!(
            Vec::<Hash>::new().perfect_subtree_hash(64, 0).unwrap_err(),
            MerkleError::SubtreeOutOfRange {
                level: 64,
                index: 0
            }
        );
        assert_eq!(
            Vec::<Hash>::new().perfect_subtree_hash(63, 2).unwrap_err(),
            MerkleError::SubtreeOutOfRange {
                level: 63,
                index: 2
            }
        );
    }

    #[test]
    fn verification_errors_have_clear_messages() {
        let all = leaves(5);
        let root = root_from_leaves(&all);
        let proof = inclusion_proof(&all, 2, 5).unwrap();
        assert_eq!(proof.len(), 3);
        let err = verify_inclusion(&all[2], 2, 5, &proof[..2], &root).unwrap_err();
        assert_eq!(err.to_string(), "proof has 2 hashes, expected 3");
        let err = verify_inclusion(&all[3], 2, 5, &proof, &root).unwrap_err();
        assert_eq!(err.to_string(), "computed root does not match");
        let err = verify_inclusion(&all[2], 5, 5, &proof, &root).unwrap_err();
        assert_eq!(err.to_string(), "index 5 is not below tree size 5");
        let err = verify_consistency(5, 4, &root, &root, &[]).unwrap_err();
        assert_eq!(err.to_string(), "old size 5 is greater than new size 4");
        let err = verify_consistency(3, 3, &root, &root, &[root]).unwrap_err();
        assert_eq!(err.to_string(), "proof has 1 hashes, expected 0");
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let h = leaf_hash(b"x");
        let big = [h; 64];
        for size in [u64::MAX, u64::MAX - 1, (1 << 63) + 1, 1 << 63] {
            for index in [0, 1, size / 2, size - 1] {
                for len in [0, 1, 63, 64] {
                    assert!(verify_inclusion(&h, index, size, &big[..len], &h).is_err());
                }
            }
            for old in [1, 2, 3, size / 2, size - 1] {
                for len in [0, 1, 63, 64] {
                    assert!(verify_consistency(old, size, &h, &h, &big[..len]).is_err());
                }
            }
        }
        let mut full = Frontier::from_parts(u64::MAX, vec![h; 64]).unwrap();
        assert_eq!(
            full.push(h).unwrap_err(),
            MerkleError::TreeFull { size: u64::MAX }
        );
        // Proof generation over a tiny store with an absurd size fails cleanly.
        assert!(inclusion_proof(&big[..], 3, u64::MAX).is_err());
        assert!(consistency_proof(&big[..], 3, u64::MAX).is_err());
    }

    #[test]
    fn frontier_serde_round_trips_and_rejects_corruption() {
        let all = leaves(13);
        let frontier = Frontier::from_leaves(&all).unwrap();
        let json = serde_json::to_string(&frontier).unwrap();
        assert!(json.starts_with("{\"size\":13,\"hashes\":[\""), "{json}");
        let back: Frontier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frontier);
        assert_eq!(back.root(), root_from_leaves(&all));

        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["size"] = 12.into();
        let err = serde_json::from_value::<Frontier>(value).unwrap_err();
        assert!(
            err.to_string()
                .contains("frontier of size 12 needs 2 hashes, got 3"),
            "{err}"
        );
        let bad_hex = r#"{"size":1,"hashes":["zz"]}"#;
        assert!(serde_json::from_str::<Frontier>(bad_hex).is_err());
        let short = r#"{"size":1,"hashes":["00"]}"#;
        assert!(serde_json::from_str::<Frontier>(short).is_err());
    }

    #[test]
    fn signing_bytes_layout() {
        let head = TreeHead {
            size: 0x0102030405060708,
            root: [0xab; 32],
            timestamp_ms: -2,
        };
        let bytes = head.signing_bytes("log-a");
        let mut expected = b"liaison-tree-head-v1\n".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(b"log-a");
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(bytes, expected);
        // The length prefix keeps log_id from bleeding into the size field.
        assert_ne!(head.signing_bytes("a"), head.signing_bytes("a\0"));

        let json = serde_json::to_string(&head).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"size\":{},\"root\":\"{}\",\"timestamp_ms\":-2}}",
                head.size,
                "ab".repeat(32)
            )
        );
        assert_eq!(serde_json::from_str::<TreeHead>(&json).unwrap(), head);
    }

    #[test]
    fn proof_json_shape_and_verify() {
        let all = leaves(8);
        let old = TreeHead {
            size: 6,
            root: root_from_leaves(&all[..6]),
            timestamp_ms: 1,
        };
        let new = TreeHead {
            size: 8,
            root: root_from_leaves(&all),
            timestamp_ms: 2,
        };
        let inclusion = Proof::Inclusion {
            log_id: "L".into(),
            size: 8,
            leaf_index: 5,
            leaf_hash: all[5],
            hashes: inclusion_proof(&all, 5, 8).unwrap(),
        };
        let value = serde_json::to_value(&inclusion).unwrap();
        assert_eq!(value["kind"], "inclusion");
        assert_eq!(value["leaf_index"], 5);
        assert_eq!(value["leaf_hash"], hex::encode(all[5]));
        assert_eq!(value["hashes"].as_array().unwrap().len(), 3);
        let back: Proof = serde_json::from_value(value).unwrap();
        assert_eq!(back, inclusion);
        inclusion.verify_inclusion("L", &new).unwrap();
        assert_eq!(
            inclusion
                .verify_inclusion("M", &new)
                .unwrap_err()
                .to_string(),
            "proof is for log \"L\", expected log \"M\""
        );
        assert_eq!(
            inclusion
                .verify_inclusion("L", &old)
                .unwrap_err()
                .to_string(),
            "proof is for tree size 8, tree head has size 6"
        );
        assert_eq!(
            inclusion
                .verify_consistency("L", &old, &new)
                .unwrap_err()
                .to_string(),
            "expected consistency proof, got inclusion proof"
        );

        let consistency = Proof::Consistency {
            log_id: "L".into(),
            old_size: 6,
            new_size: 8,
            hashes: consistency_proof(&all, 6, 8).unwrap(),
        };
        let json = serde_json::to_string(&consistency).unwrap();
        assert!(json.starts_with("{\"kind\":\"consistency\",\"log_id\":\"L\",\"old_size\":6,\"new_size\":8,\"hashes\":[\""), "{json}");
        let back: Proof = serde_json::from_str(&json).unwrap();
        back.verify_consistency("L", &old, &new).unwrap();
        assert_eq!(
            back.verify_consistency("L", &new, &old).unwrap_err(),
            MerkleError::TreeSizeMismatch {
                proof_size: 6,
                head_size: 8
            }
        );
        assert!(back.verify_inclusion("L", &new).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Any single flipped bit in the leaf hash, the root or any proof hash
        /// makes a valid inclusion proof fail.
        #[test]
        fn inclusion_bit_flip_fails(n in 1u64..=512, i_seed in any::<u64>(), target in any::<usize>(), bit in 0usize..256) {
            let i = i_seed % n;
            let f = fixture();
            let root = f.roots[n as usize];
            let proof = inclusion_proof(&f.tree, i, n).unwrap();
            prop_assert!(verify_inclusion(&f.leaves[i as usize], i, n, &proof, &root).is_ok());
            let slot = target % (proof.len() + 2);
            let mut leaf = f.leaves[i as usize];
            let mut root2 = root;
            let mut proof2 = proof.clone();
            match slot {
                0 => leaf = flip(&leaf, bit),
                1 => root2 = flip(&root2, bit),
                s => proof2[s - 2] = flip(&proof2[s - 2], bit),
            }
            prop_assert!(verify_inclusion(&leaf, i, n, &proof2, &root2).is_err());
        }

        /// Consistency proofs between random m <= n <= 512 verify, and any
        /// flipped bit in a proof hash or a root makes them fail (except the
        /// roots when m == 0, which transparency-dev deliberately ignores).
        #[test]
        fn consistency_verifies_and_bit_flip_fails(n in 0u64..=512, m_seed in any::<u64>(), target in any::<usize>(), bit in 0usize..256) {
            let m = m_seed % (n + 1);
            let f = fixture();
            let old_root = f.roots[m as usize];
            let new_root = f.roots[n as usize];
            let proof = consistency_proof(&f.tree, m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &old_root, &new_root, &proof).is_ok());
            let slots = proof.len() + if m == 0 { 0 } else { 2 };
            prop_assume!(slots > 0);
            let slot = target % slots;
            let (mut r1, mut r2, mut p) = (old_root, new_root, proof.clone());
            if m == 0 {
                p[slot] = flip(&p[slot], bit);
            } else {
                match slot {
                    0 => r1 = flip(&r1, bit),
                    1 => r2 = flip(&r2, bit),
                    s => p[s - 2] = flip(&p[s - 2], bit),
                }
            }
            prop_assert!(verify_consistency(m, n, &r1, &r2, &p).is_err());
        }

        /// Arbitrary sizes, indices and proof contents never panic.
        #[test]
        fn verification_is_total(index in any::<u64>(), size in any::<u64>(), old in any::<u64>(), len in 0usize..70, seed in any::<[u8; 32]>()) {
            let proof = vec![seed; len];
            let _ = verify_inclusion(&seed, index, size, &proof, &seed);
            let _ = verify_consistency(old, size, &seed, &seed, &proof);
            let _ = verify_consistency(old.min(size), size, &seed, &seed, &proof);
        }
    }
}
