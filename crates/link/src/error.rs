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
    /// Whether the request certainly never reached the peer: no TCP connection could
    /// be made. Anything later may have been received and acted on — a TLS failure
    /// too: with TLS 1.3 even a server's refusal of our certificate surfaces only
    /// after the request was written, and a connection that breaks mid-stream reports
    /// a TLS error although the peer may have processed the request.
    pub fn never_reached_peer(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}
