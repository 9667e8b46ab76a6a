use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt as _;
use tokio_rustls::TlsConnector;

use crate::prefixed::Prefixed;
use crate::transport::{Dialer, TcpDialer};
use crate::verify::PinnedServerVerifier;
use crate::{Identity, LinkError, LinkStats, Pins, bump};

/// Largest response body [`Client::post`] accepts.
pub const RESPONSE_MAX: usize = 16 * 1024 * 1024;
/// Longest one address may take to give a link (TCP connect, TLS handshake
/// and the server's verdict on our certificate) before the next address is
/// tried. The call's own timeout still bounds the whole.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type Key = (String, String);
type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>;

/// The outbound half of a link. Cheap to clone; clones share connections.
///
/// Keeps one HTTP/2 connection per (party, address), multiplexing every
/// request to that peer over it, and reconnects when it breaks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    dialer: Arc<dyn Dialer>,
    pins: Pins,
    stats: Arc<LinkStats>,
    pool: Mutex<HashMap<Key, Slot>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("party", &self.inner.identity.party())
            .field("connections", &self.pool().len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client speaking as `identity`, trusting servers pinned in `pins`.
    pub fn new(identity: Identity, pins: Pins, stats: Arc<LinkStats>) -> Client {
        Client::with_dialer(identity, pins, stats, Arc::new(TcpDialer))
    }

    /// [`Client::new`] over another network (a simulated one in tests).
    pub fn with_dialer(
        identity: Identity,
        pins: Pins,
        stats: Arc<LinkStats>,
        dialer: Arc<dyn Dialer>,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                identity,
                dialer,
                pins,
                stats,
                pool: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// POST `body` (as `application/json`) to `path` on `party`'s node.
    ///
    /// `addrs` ("host:port") are tried in order until one gives a connection
    /// whose server holds `party`'s pinned key; an existing connection to
    /// an address is reused. Once a request has been sent it is not retried
    /// elsewhere (POST is not idempotent). `timeout` bounds the whole call,
    /// connecting included. Any status is returned as is, with the body
    /// (at most [`RESPONSE_MAX`] bytes).
    pub async fn post(
        &self,
        party: &str,
        addrs: &[String],
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(http::StatusCode, Bytes), LinkError> {
        let result =
            match tokio::time::timeout(timeout, self.post_inner(party, addrs, path, body)).await {
                Ok(r) => r,
                Err(_) => {
                    // The pooled connection may be dead without either end having noticed
                    // (packets lost, no reset): reusing it, every later request would
                    // time out too. The next request dials afresh.
                    self.forget(party);
                    Err(LinkError::Timeout)
                }
            };
        if let Err(e) = &result {
            bump(&self.inner.stats.request_failures);
            tracing::debug!(party, error = %e, "post failed");
        }
        result
    }

    /// Drop every pooled connection to `party` (e.g. when its pin is
    /// removed). Requests in flight on them finish; new ones reconnect.
    pub fn forget(&self, party: &str) {
        self.pool().retain(|(p, _), _| p != party);
    }

    async fn post_inner(
        &self,
        party: &str,
        addrs: &[String],
        path: &str,
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), LinkError> {
        if !self.inner.pins.can_reach(party) {
            return Err(LinkError::Handshake {
                party: party.to_owned(),
                reason: "party is not pinned".to_owned(),
            });
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };

        let mut last = None;
        for addr in addrs {
            let mut sender = match self.connection(party, addr).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(party, %addr, error = %e, "address failed, trying next");
                    last = Some(e);
                    continue;
                }
            };
            let uri = format!("https://{addr}{path}");
            let req = http::Request::post(uri)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| LinkError::Http(format!("bad request: {e}")))?;
            bump(&self.inner.stats.requests_sent);
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    self.evict(party, addr);
                    return Err(classify(party, &e));
                }
            };
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), RESPONSE_MAX);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| LinkError::Http(format!("reading response body: {e}")))?
                .to_bytes();
            return Ok((status, bytes));
        }
        Err(last.unwrap_or_else(|| LinkError::Connect {
            addr: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address given"),
        }))
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict(&self, party: &str, addr: &str) {
        self.pool().remove(&(party.to_owned(), addr.to_owned()));
    }

    /// A ready sender for (party, addr), reusing the pooled connection or
    /// dialling a new one. Concurrent callers for the same key wait for one
    /// dial instead of each opening a connection.
    async fn connection(
        &self,
        party: &str,
        addr: &str,
    ) -> Result<SendRequest<Full<Bytes>>, LinkError> {
        let slot = Arc::clone(
            self.pool()
                .entry((party.to_owned(), addr.to_owned()))
                .or_default(),
        );
        let mut guard = slot.lock().await;
        if let Some(sender) = guard.as_mut() {
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender.clone());
            }
            *guard = None;
        }
        let sender = match tokio::time::timeout(DIAL_TIMEOUT, self.dial(party, addr)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(LinkError::Connect {
                    addr: addr.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no link within the dial timeout",
                    ),
                });
            }
        };
        *guard = Some(sender.clone());
        Ok(sender)
    }

    async fn dial(&self, party: &str, addr: &str) -> Result<SendRequest<Full<Bytes>>, LinkError> {
        let tcp = self
            .inner
            .dialer
            .dial(addr)
            .await
            .map_err(|source| LinkError::Connect {
                addr: addr.to_owned(),
                source,
            })?;

        let verifier = Arc::new(PinnedServerVerifier {
            expected_party: party.to_owned(),
            pins: self.inner.pins.clone(),
            stats: Arc::clone(&self.inner.stats),
            algs: crate::provider().signature_verification_algorithms,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                self.inner.identity.certified_key(),
            )));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let connector = TlsConnector::from(Arc::new(config));

        let mut tls = connector
            .connect(server_name(party), tcp)
            .await
            .map_err(|e| handshake_error(party, &e))?;

        // In TLS 1.3 the server judges our certificate after our side of the
        // handshake is done: its verdict is the first thing we read (an
        // alert, or its HTTP/2 SETTINGS frame). Wait for it here.
        let mut first = vec![0u8; 4096];
        let n = tls
            .read(&mut first)
            .await
            .map_err(|e| handshake_error(party, &e))?;
        if n == 0 {
            return Err(LinkError::Handshake {
                party: party.to_owned(),
                reason: "server closed the connection".to_owned(),
            });
        }
        first.truncate(n);
        let io = Prefixed::new(Bytes::from(first), tls);

        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let (sender, conn) = builder
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| classify(party, &e))?;
        let party_owned = party.to_owned();
        let addr_owned = addr.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(party = %party_owned, addr = %addr_owned, error = %e, "outbound link closed");
            }
        });
        tracing::debug!(party, addr, "outbound link up");
        Ok(sender)
    }
}

/// SNI sent to the server. Servers ignore it; it mirrors the certificate SAN.
fn server_name(party: &str) -> ServerName<'static> {
    let label: String = party
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    let label = label.trim_matches('-');
    ServerName::try_from(format!("liaison-{label}.invalid"))
        .or_else(|_| ServerName::try_from("liaison.invalid".to_owned()))
        .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

fn handshake_error(party: &str, e: &std::io::Error) -> LinkError {
    let reason = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    };
    LinkError::Handshake {
        party: party.to_owned(),
        reason,
    }
}

/// A TLS failure anywhere under a hyper error is a handshake-level refusal
/// (e.g. an alert from a server that dropped our pin); the rest is HTTP/2.
fn classify(party: &str, e: &hyper::Error) -> LinkError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return LinkError::Handshake {
                party: party.to_owned(),
                reason: tls.to_string(),
            };
        }
        source = err.source();
    }
    LinkError::Http(e.to_string())
}
