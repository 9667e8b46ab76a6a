use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::transport::{Listener, Stream};
use crate::verify::{PinnedClientVerifier, ed25519_key_of};
use crate::{Identity, LinkError, LinkStats, PeerParty, PeerStanding, Pins, bump};

/// Most inbound connections served at once; further peers wait in the
/// listen backlog until one closes.
pub const CONNECTIONS_MAX: usize = 256;
/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest [`serve`] waits, after shutdown is asked, for in-flight requests
/// to finish before cutting the remaining connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// HTTP/2 streams one peer may have open on one connection.
const STREAMS_MAX: u32 = 256;
/// Keep-alive pings detect dead peers.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serve `router` over mutual TLS 1.3 + HTTP/2 on `listener` until
/// `shutdown` resolves.
///
/// Only clients whose Ed25519 key is in `pins` complete the handshake. Each
/// request carries the caller's party as a [`PeerParty`] extension; the pin
/// is looked up again for every request, so a party unpinned since it
/// connected gets `403 Forbidden`.
///
/// On shutdown: stop accepting (the listener is dropped, so the port
/// closes), send HTTP/2 GOAWAY on every connection, let in-flight requests
/// finish for at most [`SHUTDOWN_GRACE`], then cut what is left and return.
pub async fn serve<L: Listener>(
    mut listener: L,
    identity: Identity,
    pins: Pins,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stats: Arc<LinkStats>,
) -> Result<(), LinkError> {
    let verifier = Arc::new(PinnedClientVerifier {
        pins: pins.clone(),
        stats: Arc::clone(&stats),
        algs: crate::provider().signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            identity.certified_key(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let limit = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);

    loop {
        // Take a connection slot first, so at most CONNECTIONS_MAX are served.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection errors (reset before accept, fd
                    // exhaustion...): log, back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ConnCtx {
            acceptor: acceptor.clone(),
            pins: pins.clone(),
            router: router.clone(),
            stats: Arc::clone(&stats),
            stop: stop_rx.clone(),
        };
        conns.spawn(async move {
            ctx.run(tcp, addr).await;
            drop(permit);
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "shutdown grace elapsed, cutting connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

struct ConnCtx {
    acceptor: TlsAcceptor,
    pins: Pins,
    router: axum::Router,
    stats: Arc<LinkStats>,
    stop: watch::Receiver<bool>,
}

impl ConnCtx {
    async fn run(mut self, tcp: impl Stream, addr: SocketAddr) {
        let tls = tokio::select! {
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)) => r,
            () = stopped(&mut self.stop) => return,
        };
        let tls = match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "inbound tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "inbound tls handshake timed out");
                return;
            }
        };
        let key = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(ed25519_key_of);
        let key = match key {
            Some(Ok(k)) => k,
            // Unreachable: the verifier accepted an Ed25519 leaf.
            _ => return,
        };
        bump(&self.stats.connections_accepted);
        tracing::debug!(%addr, party = ?self.pins.party_of(&key), "inbound link up");

        let pins = self.pins.clone();
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let router = router.clone();
            let standing = pins.standing_of(&key);
            async move {
                let Some((party, standing)) = standing else {
                    let mut resp = axum::response::Response::new(axum::body::Body::from(
                        "peer is no longer pinned",
                    ));
                    *resp.status_mut() = http::StatusCode::FORBIDDEN;
                    return Ok::<_, Infallible>(resp);
                };
                req.extensions_mut().insert(PeerParty(party));
                req.extensions_mut().insert(PeerStanding(standing));
                router.oneshot(req).await
            }
        });

        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(STREAMS_MAX)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        let mut conn = pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            () = stopped(&mut self.stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%addr, error = %e, "inbound link closed with error");
        }
    }
}

/// Resolves once shutdown has been asked (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
