//! `liaison audit`: verify, show and prove a node's tamper-evident audit log, and check
//! proofs offline with only the party's public key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use liaison_core::audit::{AuditEntry, StoredLeaf, verify_log};
use liaison_core::envelope::SignedTreeHead;
use liaison_core::merkle::{
    Hash, Proof, TreeHead, consistency_proof, inclusion_proof, leaf_hash, root_from_leaves,
};
use liaison_core::signing::PublicKey;
use liaison_store::{AuditRow, SqliteStore, Store};
use serde::{Deserialize, Serialize};

use crate::{Exit, read_text};

/// Rows read from the store per query.
const PAGE: u32 = 10_000;

/// Format tag of [`ProofFile`].
pub const PROOF_FORMAT: &str = "liaison-audit-proof-v1";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Recompute every leaf and running root of a node's log (read-only). Exit 0 if the
    /// whole log verifies, 1 naming the first bad entry.
    Verify {
        /// The node's directory (holds `node.db`).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the log's entries: index, time, kind and details.
    Show {
        #[arg(long)]
        dir: PathBuf,
        /// Only entries recorded at or after this RFC 3339 instant.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Print a proof (JSON) that entry N is in the log of size M, or with
    /// `--consistency OLD` that the log of size M extends the log of size OLD, with
    /// tree heads signed by the node's key.
    Proof {
        #[arg(long)]
        dir: PathBuf,
        /// Index of the entry to prove included.
        #[arg(long, required_unless_present = "consistency")]
        entry: Option<u64>,
        /// Size of the tree proved against; the whole log if absent.
        #[arg(long)]
        size: Option<u64>,
        /// Prove that the log of size M extends the log of this size instead.
        #[arg(long, conflicts_with = "entry")]
        consistency: Option<u64>,
    },
    /// Check a proof printed by `liaison audit proof` offline. Exit 0 valid, 1 invalid.
    Check {
        /// The proof file.
        proof: PathBuf,
        /// The party's public key: `ed25519:...`, or a path to its `.pub` file.
        #[arg(long)]
        key: String,
    },
}

/// What `liaison audit proof` prints and `liaison audit check` verifies.
///
/// An inclusion proof carries `head` (the tree of `size` entries) and `entry`; a
/// consistency proof carries `old_head` and `head`. Every head is signed by the log's
/// party over `TreeHead::signing_bytes(log_id)`, so the file can be checked with
/// nothing but that party's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The Merkle proof, in `liaison_core::merkle::Proof`'s JSON shape.
    pub proof: Proof,
    /// Signed head of the tree the proof is checked against (the newer one for a
    /// consistency proof).
    pub head: SignedTreeHead,
    /// Consistency proofs: the signed head of the older tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_head: Option<SignedTreeHead>,
    /// Inclusion proofs: the entry's canonical bytes, as UTF-8, so the checker can
    /// recompute its leaf hash (SHA-256(0x00 ‖ entry)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

pub fn run(cmd: Command) -> anyhow::Result<Exit> {
    match cmd {
        Command::Verify { dir } => crate::block_on(verify(&dir)).and_then(|r| r),
        Command::Show {
            dir,
            since,
            limit,
            json,
        } => crate::block_on(show(&dir, since.as_deref(), limit, json)).and_then(|r| r),
        Command::Proof {
            dir,
            entry,
            size,
            consistency,
        } => crate::block_on(proof(&dir, entry, size, consistency)).and_then(|r| r),
        Command::Check { proof, key } => check(&proof, &key),
    }
}

async fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
    let path = dir.join("node.db");
    if !path.exists() {
        bail!("no node store at `{}`", path.display());
    }
    SqliteStore::open_read_only(&path)
        .await
        .with_context(|| format!("cannot open `{}` read-only", path.display()))
}

/// Rows `0..end` (or to the end of the log), read in pages.
async fn read_rows(store: &SqliteStore, end: Option<u64>) -> anyhow::Result<Vec<AuditRow>> {
    let mut rows: Vec<AuditRow> = Vec::new();
    let mut next = 0u64;
    loop {
        let want = match end {
            Some(e) if next >= e => break,
            Some(e) => u32::try_from(e - next).unwrap_or(PAGE).min(PAGE),
            None => PAGE,
        };
        let page = store.audit_rows(next, want).await?;
        let Some(last) = page.last() else { break };
        // Continue after the last index actually read, so a gap does not loop.
        next = last.index.saturating_add(1);
        let full = page.len() >= want as usize;
        rows.extend(page);
        if !full {
            break;
        }
    }
    Ok(rows)
}

fn stored(rows: &[AuditRow]) -> impl Iterator<Item = StoredLeaf<'_>> {
    rows.iter().map(|r| StoredLeaf {
        index: r.index,
        entry: &r.entry,
        leaf: r.leaf,
        root_after: r.root_after,
    })
}

/// Verifies rows `0..end` (the whole log if `None`) and returns their root, or the
/// first bad entry and why.
async fn verified_root(
    store: &SqliteStore,
    end: Option<u64>,
) -> anyhow::Result<Result<(u64, Hash), (u64, String)>> {
    let rows = read_rows(store, end).await?;
    Ok(verify_log(stored(&rows)).map(|f| (f.size(), f.root())))
}

async fn verify(dir: &Path) -> anyhow::Result<Exit> {
    let store = open(dir).await?;
    let result = verified_root(&store, None).await;
    let head = store.audit_head().await;
    store.close().await;
    let (size, root) = match result? {
        Ok(v) => v,
        Err((index, why)) => {
            println!("entry {index}: {why}");
            return Ok(Exit::Code(1));
        }
    };
    let (head_size, head_root) = head?;
    if head_size != size {
        let first = size.min(head_size);
        println!(
            "entry {first}: the log holds {size} entries but the node recorded {head_size}: entries deleted at the end or added outside the node"
        );
        return Ok(Exit::Code(1));
    }
    if head_root != root {
        println!(
            "entry {}: root {} differs from the root the node recorded ({})",
            size.saturating_sub(1),
            hex::encode(root),
            hex::encode(head_root)
        );
        return Ok(Exit::Code(1));
    }
    // The node keeps the tree heads it signs in memory only; when a signed head is
    // stored with the node in future, it is checked here as well.
    println!("{size} entries verify, root {}", hex::encode(root));
    Ok(Exit::Ok)
}

/// One entry as `liaison audit show --json` prints it.
#[derive(Debug, Serialize)]
struct ShownEntry {
    index: u64,
    #[serde(flatten)]
    entry: Option<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    undecodable: Option<String>,
}

async fn show(
    dir: &Path,
    since: Option<&str>,
    limit: Option<u64>,
    json: bool,
) -> anyhow::Result<Exit> {
    let since = since
        .map(|s| liaison_core::parse::parse_instant(s).map_err(|e| anyhow::anyhow!("--since: {e}")))
        .transpose()?;
    let limit = limit.unwrap_or(u64::MAX);
    let store = open(dir).await?;
    let mut shown: Vec<ShownEntry> = Vec::new();
    let mut printed = 0u64;
    let mut next = 0u64;
    'pages: while printed < limit {
        let page = store.audit_rows(next, PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.index.saturating_add(1);
        let full = page.len() >= PAGE as usize;
        for row in page {
            if printed >= limit {
                break 'pages;
            }
            let entry = AuditEntry::decode(&row.entry);
            if let (Some(s), Some(e)) = (since, &entry)
                && e.at < s
            {
                continue;
            }
            printed += 1;
            let item = ShownEntry {
                index: row.index,
                undecodable: entry
                    .is_none()
                    .then(|| String::from_utf8_lossy(&row.entry).into_owned()),
                entry,
            };
            if json {
                shown.push(item);
            } else {
                println!("{}", line(&item));
            }
        }
        if !full {
            break;
        }
    }
    store.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    }
    Ok(Exit::Ok)
}

fn line(item: &ShownEntry) -> String {
    let Some(e) = &item.entry else {
        return format!(
            "{:>6}  (not a valid audit entry: {})",
            item.index,
            item.undecodable.as_deref().unwrap_or("")
        );
    };
    let mut details = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&e.event) {
        for (k, v) in fields {
            if k == "kind" {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            details.push(format!("{k}={v}"));
        }
    }
    format!(
        "{:>6}  {}  {:<20}  {}",
        item.index,
        e.at,
        e.event.name(),
        details.join(" ")
    )
}

async fn proof(
    dir: &Path,
    entry: Option<u64>,
    size: Option<u64>,
    consistency: Option<u64>,
) -> anyhow::Result<Exit> {
    let config = liaison_node::Config::load(dir)?;
    let party = config.party.clone();
    let key = liaison_node::load_key(dir, &party)?;
    let store = open(dir).await?;
    let result = build_proof(&store, &party, &key, entry, size, consistency).await;
    store.close().await;
    let file = result?;
    println!("{}", serde_json::to_string_pretty(&file)?);
    Ok(Exit::Ok)
}

async fn build_proof(
    store: &SqliteStore,
    party: &str,
    key: &liaison_core::signing::PartyKey,
    entry: Option<u64>,
    size: Option<u64>,
    consistency: Option<u64>,
) -> anyhow::Result<ProofFile> {
    let (log_size, _) = store.audit_head().await?;
    let size = size.unwrap_or(log_size);
    if size > log_size {
        bail!("--size {size} is larger than the log ({log_size} entries)");
    }
    // Never sign a head over a log that does not verify.
    let rows = read_rows(store, Some(size)).await?;
    let (verified, root) = match verify_log(stored(&rows)) {
        Ok(f) => (f.size(), f.root()),
        Err((index, why)) => {
            bail!("the log does not verify (entry {index}: {why}); refusing to sign a head")
        }
    };
    if verified != size {
        bail!("the log holds {verified} entries, expected {size}");
    }
    let leaves = store.audit_leaf_hashes(0, size).await?;
    if root_from_leaves(&leaves) != root {
        bail!("the log's leaf hashes changed while it was read");
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let sign = |size: u64, root: Hash| {
        SignedTreeHead::sign(
            party,
            TreeHead {
                size,
                root,
                timestamp_ms: now,
            },
            key,
        )
    };
    let head = sign(size, root);
    if let Some(old) = consistency {
        if old > size {
            bail!("--consistency {old} is larger than --size {size}");
        }
        let old_root = root_from_leaves(leaves.get(..old as usize).unwrap_or_default());
        let hashes = consistency_proof(&leaves, old, size)?;
        return Ok(ProofFile {
            format: PROOF_FORMAT.to_owned(),
            proof: Proof::Consistency {
                log_id: party.to_owned(),
                old_size: old,
                new_size: size,
                hashes,
            },
            head,
            old_head: Some(sign(old, old_root)),
            entry: None,
        });
    }
    let index = entry.context("--entry or --consistency is required")?;
    let row = usize::try_from(index)
        .ok()
        .and_then(|i| rows.get(i))
        .with_context(|| format!("entry {index} is not in the log of size {size}"))?;
    let text = String::from_utf8(row.entry.clone())
        .map_err(|_| anyhow::anyhow!("entry {index} is not UTF-8"))?;
    let hashes = inclusion_proof(&leaves, index, size)?;
    Ok(ProofFile {
        format: PROOF_FORMAT.to_owned(),
        proof: Proof::Inclusion {
            log_id: party.to_owned(),
            size,
            leaf_index: index,
            leaf_hash: leaf_hash(text.as_bytes()),
            hashes,
        },
        head,
        old_head: None,
        entry: Some(text),
    })
}

fn parse_key(key: &str) -> anyhow::Result<PublicKey> {
    if key.starts_with("ed25519:") {
        return Ok(PublicKey::parse(key.trim())?);
    }
    let text = read_text(Path::new(key))?;
    PublicKey::parse(text.trim()).with_context(|| format!("`{key}` holds no public key"))
}

fn check(path: &Path, key: &str) -> anyhow::Result<Exit> {
    let key = parse_key(key)?;
    let text = read_text(path)?;
    let verdict = serde_json::from_str::<ProofFile>(&text)
        .map_err(|e| format!("not a proof file: {e}"))
        .and_then(|file| check_file(&file, &key));
    match verdict {
        Ok(what) => {
            println!("valid: {what}");
            Ok(Exit::Ok)
        }
        Err(why) => {
            println!("invalid: {why}");
            Ok(Exit::Code(1))
        }
    }
}

/// Checks a proof file with only the party's public key; says what it proved.
pub fn check_file(file: &ProofFile, key: &PublicKey) -> Result<String, String> {
    if file.format != PROOF_FORMAT {
        return Err(format!("unknown format `{}`", file.format));
    }
    let log_id = file.head.log_id.as_str();
    file.head
        .verify(key)
        .map_err(|e| format!("tree head of size {}: {e}", file.head.head.size))?;
    match &file.proof {
        Proof::Inclusion {
            leaf_index,
            leaf_hash: claimed,
            ..
        } => {
            let entry = file
                .entry
                .as_deref()
                .ok_or("inclusion proof without its entry")?;
            if leaf_hash(entry.as_bytes()) != *claimed {
                return Err(format!(
                    "entry {leaf_index}: its leaf hash is not the one proved"
                ));
            }
            let decoded = AuditEntry::decode(entry.as_bytes())
                .filter(|e| e.encode() == entry.as_bytes())
                .ok_or_else(|| format!("entry {leaf_index} is not a canonical audit entry"))?;
            file.proof
                .verify_inclusion(log_id, &file.head.head)
                .map_err(|e| format!("entry {leaf_index}: {e}"))?;
            Ok(format!(
                "entry {leaf_index} ({} at {}) is in the log of `{log_id}` of size {}, root {}",
                decoded.event.name(),
                decoded.at,
                file.head.head.size,
                hex::encode(file.head.head.root)
            ))
        }
        Proof::Consistency { .. } => {
            let old = file
                .old_head
                .as_ref()
                .ok_or("consistency proof without the old tree head")?;
            if old.log_id != log_id {
                return Err(format!(
                    "tree heads are of different logs: `{}` and `{log_id}`",
                    old.log_id
                ));
            }
            old.verify(key)
                .map_err(|e| format!("tree head of size {}: {e}", old.head.size))?;
            file.proof
                .verify_consistency(log_id, &old.head, &file.head.head)
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "the log of `{log_id}` of size {} (root {}) extends the one of size {} (root {})",
                file.head.head.size,
                hex::encode(file.head.head.root),
                old.head.size,
                hex::encode(old.head.root)
            ))
        }
    }
}
