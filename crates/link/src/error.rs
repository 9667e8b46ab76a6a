use thiserror::Error;

/// Everything that can go wrong moving bytes between nodes.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No TCP connection could be made to `addr`.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake with `party` failed or was refused (by either end).
    #[error("tls handshake with party {party} failed: {reason}")]
    Handshake { party: String, reason: String },
    /// The call did not complete within its timeout.
    #[error("timed out")]
    Timeout,
    /// The HTTP/2 exchange failed after the connection was established
    /// (stream reset, connection lost, malformed message...).
    #[error("http/2 error: {0}")]
    Http(String),
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration error.
    #[error("tls error: {0}")]
    Tls(#[from] rustls::Error),
    /// Certificate or key could not be built or read.
    #[error("certificate error: {0}")]
    Cert(String),
}

impl LinkError {
    /// Whether the request certainly never reached the peer's application: no
    /// connection, or a handshake either side refused. After a timeout or an HTTP/2
    /// failure it may have been received and acted on.
    pub fn never_reached_peer(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Handshake { .. } | Self::Tls(_) | Self::Cert(_)
        )
    }
}
