//! Liaison's node-to-node transport: mutual TLS 1.3 + HTTP/2 between nodes
//! whose Ed25519 identity keys are pinned by agreements.
//!
//! # Trust model
//!
//! Each party has one Ed25519 identity key. A node presents a self-signed
//! X.509 certificate for that key. Trust comes **only** from pinning: a peer
//! is accepted when the Ed25519 key in its end-entity certificate is in
//! [`Pins`] (and, when dialling, maps to the party we meant to reach), and the
//! TLS 1.3 `CertificateVerify` signature proves it holds the private key.
//!
//! Certificate validity dates, issuers, names and chains are deliberately
//! **not** checked: nodes may run on a simulated clock, and a self-signed
//! pinned certificate gains nothing from them. Revocation is done by
//! removing a pin ([`Pins::replace`]); the server re-checks the pin on every
//! request, and the client drops pooled connections on [`Client::forget`].
//!
//! Only TLS 1.3 is offered or accepted, with the `ring` provider.
//!
//! This crate moves bytes; it knows nothing of agreements or other Liaison
//! types.

mod client;
mod error;
mod identity;
mod pins;
mod prefixed;
mod server;
mod transport;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};

pub use client::{Client, DIAL_TIMEOUT, RESPONSE_MAX};
pub use error::LinkError;
pub use identity::Identity;
pub use pins::{Pins, Standing};
pub use server::{CONNECTIONS_MAX, HANDSHAKE_TIMEOUT, SHUTDOWN_GRACE, serve};
pub use transport::{BoxStream, DialFuture, Dialer, Listener, Stream, TcpDialer};

/// The verified calling party, inserted into every request's extensions by
/// [`serve`]. Handlers read it with `axum::Extension<PeerParty>` or
/// `request.extensions().get::<PeerParty>()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerParty(pub String);

/// The calling party's [`Standing`] when the request arrived, inserted beside
/// [`PeerParty`]: a node answers a [`Standing::Settling`] peer only about
/// envelopes sent earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerStanding(pub Standing);

/// Counters a node can export as metrics. Shared between the server and
/// client of a node (or kept separate), always behind an `Arc`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// TLS handshakes this side refused because the peer's key was not
    /// pinned, was pinned for another party, or was not an Ed25519
    /// certificate.
    pub handshakes_refused: AtomicU64,
    /// Inbound connections that completed the TLS handshake.
    pub connections_accepted: AtomicU64,
    /// Requests handed to an HTTP/2 connection by [`Client::post`].
    pub requests_sent: AtomicU64,
    /// Calls to [`Client::post`] that returned an error.
    pub request_failures: AtomicU64,
}

impl LinkStats {
    /// A fresh set of zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A plain copy of the counters, for metrics export and tests.
    pub fn snapshot(&self) -> LinkStatsSnapshot {
        LinkStatsSnapshot {
            handshakes_refused: self.handshakes_refused.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            requests_sent: self.requests_sent.load(Ordering::Relaxed),
            request_failures: self.request_failures.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of [`LinkStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStatsSnapshot {
    pub handshakes_refused: u64,
    pub connections_accepted: u64,
    pub requests_sent: u64,
    pub request_failures: u64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The rustls provider used on both ends: `ring`, TLS 1.3 cipher suites only.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(PROVIDER.get_or_init(|| {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
        std::sync::Arc::new(p)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    /// A peer presenting a pinned certificate without holding its key fails
    /// the TLS 1.3 signature check, on either end.
    #[tokio::test]
    async fn pinned_certificate_without_its_key_is_refused() {
        let a = Identity::from_ed25519_seed("A", [1; 32]).unwrap();
        let b = Identity::from_ed25519_seed("B", [2; 32]).unwrap();
        let m = Identity::from_ed25519_seed("M", [9; 32]).unwrap();
        let pins = Pins::from_map(HashMap::from([
            (a.public_key(), "A".to_owned()),
            (b.public_key(), "B".to_owned()),
        ]));

        // Client impersonating A against B's server.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = vec![listener.local_addr().unwrap().to_string()];
        let sstats = Arc::new(LinkStats::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            b.clone(),
            pins.clone(),
            axum::Router::new(),
            async move {
                let _ = rx.await;
            },
            Arc::clone(&sstats),
        ));
        let fake_a = Identity::impostor(&a, &m);
        let client = Client::new(fake_a, pins.clone(), Arc::new(LinkStats::new()));
        let err = client
            .post("B", &addr, "/", bytes::Bytes::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::Handshake { .. }), "{err:?}");
        assert_eq!(sstats.snapshot().connections_accepted, 0);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();

        // Server impersonating B against A's client.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = vec![listener.local_addr().unwrap().to_string()];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Identity::impostor(&b, &m),
            pins.clone(),
            axum::Router::new(),
            async move {
                let _ = rx.await;
            },
            Arc::new(LinkStats::new()),
        ));
        let client = Client::new(a, pins, Arc::new(LinkStats::new()));
        let err = client
            .post("B", &addr, "/", bytes::Bytes::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        match err {
            LinkError::Handshake { reason, .. } => {
                assert!(reason.to_lowercase().contains("signature"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
