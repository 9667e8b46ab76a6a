//! How links reach peers and take their connections: TCP in a running node, a simulated
//! network in deterministic tests. Everything above (TLS, HTTP/2, pinning) is the same
//! either way, so a simulation exercises the real link code.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream a link can run TLS over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send + 'a>>;

/// Opens byte streams to peers' addresses.
pub trait Dialer: Send + Sync + std::fmt::Debug + 'static {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a>;
}

/// The operating system's TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            // Small requests (heartbeats, receipts) must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as BoxStream)
        })
    }
}

/// Accepts peers' byte streams.
pub trait Listener: Send + 'static {
    type Io: Stream;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (tcp, addr) = TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, addr))
    }
}
