//! The node's side of the audit log: peers' signed tree heads, consistency checks
//! against them, and the fork alarm; proofs served to peers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::{Json, Router, routing::post};
use bytes::Bytes;
use liaison_core::audit::AuditEvent;
use liaison_core::envelope::SignedTreeHead;
use liaison_core::merkle::{
    Hash, KnownSubtrees, consistency_proof, consistency_proof_subtrees, verify_consistency,
};
use liaison_link::PeerParty;
use liaison_store::Store;
use serde::{Deserialize, Serialize};

use crate::metrics::inc;
use crate::node::Node;

/// What this node remembers of a peer's log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerLog {
    /// The largest verified head seen.
    pub head: Option<SignedTreeHead>,
    /// Set once the peer showed two heads that are not consistent.
    pub forked: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConsistencyRequest {
    pub old_size: u64,
    pub new_size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConsistencyReply {
    pub hashes: Vec<String>,
}

pub fn router<S: Store>(node: Arc<Node<S>>) -> Router {
    Router::new()
        .route(
            "/federation/v1/audit/consistency",
            post(serve_consistency::<S>),
        )
        .with_state(node)
}

/// Answers a peer's request for a consistency proof between two sizes of this node's
/// log. Reads only the O(log n) subtree roots the proof is made of: the peer asks
/// after every receipt batch whose tree head moved, so reading the whole log here
/// made each batch cost time and memory in proportion to everything logged before.
async fn serve_consistency<S: Store>(
    State(node): State<Arc<Node<S>>>,
    Extension(PeerParty(_peer)): Extension<PeerParty>,
    Json(req): Json<ConsistencyRequest>,
) -> Result<Json<ConsistencyReply>, (StatusCode, String)> {
    let wanted = consistency_proof_subtrees(req.old_size, req.new_size)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let known: KnownSubtrees = node
        .store
        .audit_subtrees(&wanted)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .into_iter()
        .collect();
    let proof = consistency_proof(&known, req.old_size, req.new_size)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(ConsistencyReply {
        hashes: proof.iter().map(hex::encode).collect(),
    }))
}

/// Takes note of a peer's signed head (from a receipt or a heartbeat): checks the
/// signature, and when it differs from the last one seen, asks the peer for a
/// consistency proof between them. Two heads that cannot be reconciled raise the alarm.
pub async fn observe_peer_head<S: Store>(node: &Node<S>, peer: &str, sth: &SignedTreeHead) {
    if sth.log_id != peer || !node.party_keys(peer).iter().any(|k| sth.verify(k).is_ok()) {
        tracing::warn!(%peer, "tree head not signed by the peer");
        return;
    }
    let _serial = node.peer_log_lock.lock().await;
    let mut log: PeerLog = match node.store.peer_get(&format!("log:{peer}")).await {
        Ok(Some(j)) => serde_json::from_str(&j).unwrap_or_default(),
        _ => PeerLog::default(),
    };
    if log.forked.is_some() {
        return;
    }
    let Some(old) = log.head.clone() else {
        log.head = Some(sth.clone());
        save(node, peer, &log).await;
        return;
    };
    if old.head.size == sth.head.size && old.head.root == sth.head.root {
        return;
    }
    let (small, large) = if sth.head.size >= old.head.size {
        (&old, sth)
    } else {
        (sth, &old)
    };
    let verdict = if small.head.size == large.head.size {
        Err(format!("two different roots for size {}", small.head.size))
    } else {
        check(node, peer, small, large).await
    };
    match verdict {
        Ok(()) => {
            if sth.head.size > old.head.size {
                log.head = Some(sth.clone());
                save(node, peer, &log).await;
            }
        }
        Err(why) if why.starts_with("unreachable:") => {
            tracing::debug!(%peer, "consistency check postponed: {why}")
        }
        Err(why) => {
            let detail = format!(
                "log of `{peer}` forked: heads of size {} and {} are not consistent: {why}",
                small.head.size, large.head.size
            );
            tracing::error!("{detail}");
            // Recorded (audit entry, peer state) before it is announced (metric, event),
            // so whoever sees the alarm finds the record.
            let audit = node.audit(AuditEvent::PeerForked {
                peer: peer.to_owned(),
                detail: detail.clone(),
            });
            let _ = node.store.audit_append(&[audit]).await;
            log.forked = Some(detail);
            save(node, peer, &log).await;
            inc(&node.metrics.forks);
            crate::events::publish(node, "audit");
        }
    }
}

async fn check<S: Store>(
    node: &Node<S>,
    peer: &str,
    small: &SignedTreeHead,
    large: &SignedTreeHead,
) -> Result<(), String> {
    let req = serde_json::to_vec(&ConsistencyRequest {
        old_size: small.head.size,
        new_size: large.head.size,
    })
    .unwrap_or_default();
    let addresses = node.config.peer_addresses(peer);
    let (status, body) = node
        .client
        .post(
            peer,
            &addresses,
            "/federation/v1/audit/consistency",
            Bytes::from(req),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "peer could not prove consistency ({status}): {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let reply: ConsistencyReply =
        serde_json::from_slice(&body).map_err(|e| format!("unreadable proof: {e}"))?;
    let mut hashes = Vec::with_capacity(reply.hashes.len());
    for h in &reply.hashes {
        let bytes: Hash = hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("proof hash is not 32 bytes of hex")?;
        hashes.push(bytes);
    }
    verify_consistency(
        small.head.size,
        large.head.size,
        &small.head.root,
        &large.head.root,
        &hashes,
    )
    .map_err(|e| e.to_string())
}

async fn save<S: Store>(node: &Node<S>, peer: &str, log: &PeerLog) {
    if let Ok(j) = serde_json::to_string(log) {
        let _ = node.store.peer_put(&format!("log:{peer}"), &j).await;
    }
}

/// Every peer's log as this node sees it.
pub async fn peer_logs<S: Store>(node: &Node<S>) -> Vec<(String, PeerLog)> {
    let mut out = Vec::new();
    if let Ok(list) = node.store.peer_list().await {
        for (k, v) in list {
            if let Some(p) = k.strip_prefix("log:") {
                out.push((p.to_owned(), serde_json::from_str(&v).unwrap_or_default()));
            }
        }
    }
    out
}
