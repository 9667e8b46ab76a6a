//! Real TCP on 127.0.0.1, real TLS, real HTTP/2.

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests; a panic anywhere here is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::routing::post;
use bytes::Bytes;
use http::StatusCode;
use liaison_link::{Client, Identity, LinkError, LinkStats, PeerParty, Pins, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(10);

fn ident(party: &str, seed: u8) -> Identity {
    Identity::from_ed25519_seed(party, [seed; 32]).unwrap()
}

fn pins_of(ids: &[&Identity]) -> Pins {
    Pins::from_map(
        ids.iter()
            .map(|i| (i.public_key(), i.party().to_owned()))
            .collect::<HashMap<_, _>>(),
    )
}

/// Echoes `<caller party>:<body>`.
async fn echo(Extension(PeerParty(party)): Extension<PeerParty>, body: Bytes) -> Vec<u8> {
    let mut out = format!("{party}:").into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn slow(body: Bytes) -> Bytes {
    tokio::time::sleep(Duration::from_millis(500)).await;
    body
}

fn router() -> axum::Router {
    axum::Router::new()
        .route("/echo", post(echo))
        .route("/slow", post(slow))
}

struct Server {
    addr: SocketAddr,
    stats: Arc<LinkStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LinkError>>,
}

impl Server {
    async fn start(identity: Identity, pins: Pins) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(LinkStats::new());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            identity,
            pins,
            router(),
            async move {
                let _ = rx.await;
            },
            Arc::clone(&stats),
        ));
        Server {
            addr,
            stats,
            stop: Some(tx),
            task,
        }
    }

    fn addrs(&self) -> Vec<String> {
        vec![self.addr.to_string()]
    }
}

fn client(identity: &Identity, pins: Pins) -> (Client, Arc<LinkStats>) {
    let stats = Arc::new(LinkStats::new());
    (
        Client::new(identity.clone(), pins, Arc::clone(&stats)),
        stats,
    )
}

#[tokio::test]
async fn pinned_peers_talk_and_multiplex() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let (client, cstats) = client(&a, pins_of(&[&a, &b]));

    let (status, body) = client
        .post(
            "B",
            &server.addrs(),
            "/echo",
            Bytes::from_static(b"{\"x\":1}"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"A:{\"x\":1}");

    let mut set = tokio::task::JoinSet::new();
    for i in 0..100 {
        let client = client.clone();
        let addrs = server.addrs();
        set.spawn(async move {
            let payload = format!("{{\"i\":{i}}}");
            let (status, body) = client
                .post("B", &addrs, "echo", Bytes::from(payload.clone()), T)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, Bytes::from(format!("A:{payload}")));
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let s = server.stats.snapshot();
    assert_eq!(
        s.connections_accepted, 1,
        "all requests over one connection"
    );
    assert_eq!(s.handshakes_refused, 0);
    let c = cstats.snapshot();
    assert_eq!(c.requests_sent, 101);
    assert_eq!(c.request_failures, 0);

    // A status other than 2xx is a response, not an error.
    let (status, _) = client
        .post("B", &server.addrs(), "/nowhere", Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Collects everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime so the thread-local subscriber sees the server's logs.
#[tokio::test(flavor = "current_thread")]
async fn unpinned_client_is_refused_and_logged() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (a, b) = (ident("A", 1), ident("B", 2));
    // B pins only itself; A pins B.
    let server = Server::start(b.clone(), pins_of(&[&b])).await;
    let (client, cstats) = client(&a, pins_of(&[&a, &b]));

    let err = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Handshake { party, .. } if party == "B"),
        "{err:?}"
    );
    assert_eq!(server.stats.snapshot().handshakes_refused, 1);
    assert_eq!(server.stats.snapshot().connections_accepted, 0);
    assert_eq!(cstats.snapshot().request_failures, 1);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("client key is not pinned"), "{logs}");
    let a_key = base64_std(&a.public_key());
    assert!(logs.contains(&a_key), "{logs}");
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn server_with_wrong_party_key_is_refused_by_client() {
    let (a, b, c) = (ident("A", 1), ident("B", 2), ident("C", 3));
    let server = Server::start(c.clone(), pins_of(&[&a, &b, &c])).await;
    let (client, cstats) = client(&a, pins_of(&[&a, &b, &c]));

    let err = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    match &err {
        LinkError::Handshake { party, reason } => {
            assert_eq!(party, "B");
            assert!(reason.contains("pinned for party C"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(cstats.snapshot().handshakes_refused, 1);
    assert_eq!(server.stats.snapshot().connections_accepted, 0);

    // Dialling the right party at that address works.
    let (status, _) = client
        .post("C", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn party_without_pin_is_not_dialled() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let (client, _) = client(&a, pins_of(&[&a]));
    let err = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Handshake { .. }), "{err:?}");
    assert_eq!(server.stats.snapshot().connections_accepted, 0);
}

#[tokio::test]
async fn addresses_are_tried_in_order() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (client, _) = client(&a, pins_of(&[&a, &b]));

    let addrs = vec![closed.to_string(), server.addr.to_string()];
    let (status, body) = client
        .post("B", &addrs, "/echo", Bytes::from_static(b"hi"), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"A:hi");

    // Only the closed address: a connect error naming it.
    let err = client
        .post("B", &[closed.to_string()], "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LinkError::Connect { addr, .. } if *addr == closed.to_string()),
        "{err:?}"
    );
}

#[tokio::test]
async fn unpinning_cuts_existing_connection_and_forget_reconnects() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server_pins = pins_of(&[&a, &b]);
    let server = Server::start(b.clone(), server_pins.clone()).await;
    let (client, _) = client(&a, pins_of(&[&a, &b]));

    let (status, _) = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // B's agreement with A lapses: requests on the open connection are refused.
    server_pins.replace(HashMap::from([(b.public_key(), "B".to_owned())]));
    let (status, _) = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Forgetting makes a new handshake, which is refused.
    client.forget("B");
    let err = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Handshake { .. }), "{err:?}");
    assert_eq!(server.stats.snapshot().connections_accepted, 1);
    assert_eq!(server.stats.snapshot().handshakes_refused, 1);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_and_closes_port() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let mut server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let (client, _) = client(&a, pins_of(&[&a, &b]));

    let (status, _) = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // A slow request is in flight when shutdown is asked.
    let in_flight = {
        let client = client.clone();
        let addrs = server.addrs();
        tokio::spawn(async move {
            client
                .post("B", &addrs, "/slow", Bytes::from_static(b"late"), T)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();

    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"late");

    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));

    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "port still accepting"
    );
    // And the client sees the link gone.
    let err = client
        .post("B", &server.addrs(), "/echo", Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LinkError::Connect { .. } | LinkError::Http(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn timeout_is_reported() {
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let (client, cstats) = client(&a, pins_of(&[&a, &b]));
    let err = client
        .post(
            "B",
            &server.addrs(),
            "/slow",
            Bytes::new(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Timeout), "{err:?}");
    assert_eq!(cstats.snapshot().request_failures, 1);
}

/// `cargo test --release -p liaison-link --test link -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand in release mode"]
async fn throughput() {
    const REQUESTS: usize = 20_000;
    const IN_FLIGHT: usize = 64;
    let (a, b) = (ident("A", 1), ident("B", 2));
    let server = Server::start(b.clone(), pins_of(&[&a, &b])).await;
    let (client, _) = client(&a, pins_of(&[&a, &b]));
    let body = Bytes::from(vec![b'x'; 1024]);
    client
        .post("B", &server.addrs(), "/echo", body.clone(), T)
        .await
        .unwrap();

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (client, addrs, body, next) = (
            client.clone(),
            server.addrs(),
            body.clone(),
            Arc::clone(&next),
        );
        set.spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                let t = Instant::now();
                let (status, resp) = client
                    .post("B", &addrs, "/echo", body.clone(), T)
                    .await
                    .unwrap();
                assert_eq!(status, StatusCode::OK);
                assert_eq!(resp.len(), 1026);
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::with_capacity(REQUESTS);
    while let Some(r) = set.join_next().await {
        lat.extend(r.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} POSTs of 1 KiB, {IN_FLIGHT} in flight, one connection: {:.0} req/s, p50 {:?}, p99 {:?}",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
    );
    assert_eq!(lat.len(), REQUESTS);
    assert_eq!(server.stats.snapshot().connections_accepted, 1);
}
