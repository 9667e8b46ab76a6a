//! The Liaison node: wires the pure core to a store, the federation link, the local
//! API and a clock. `start` runs one node; several can run in one process.

pub mod api;
pub mod audit;
pub mod bench;
pub mod clock;
pub mod config;
pub mod console;
pub mod cpu;
pub mod demo;
pub mod events;
pub mod federation;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod random;
pub mod users;
pub mod web;
pub mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use liaison_core::audit::AuditEvent;
use liaison_core::canonical::{agreement_digest, verify_signatures};
use liaison_core::ids::PartyId;
use liaison_core::parse::parse_agreement;
use liaison_core::signing::PartyKey;
use liaison_link::{Client, Dialer, Identity, LinkStats, Listener, Pins};
use liaison_store::{AgreementPut, SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::clock::{Clock, ManualClock, ScenarioClock, SharedClock, SystemClock};
pub use crate::config::{Config, NodeDir};
pub use crate::node::{Node, NodeError};
pub use crate::random::{OsRandom, Random, SeededRandom};

/// A started node.
pub struct Running {
    pub api_addr: SocketAddr,
    pub federation_addr: SocketAddr,
    pub node: Arc<Node<SqliteStore>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Running({}, api {}, federation {})",
            self.node.party, self.api_addr, self.federation_addr
        )
    }
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, stops the machines. Nothing is
    /// lost: everything acknowledged was committed before it was acknowledged.
    pub async fn stop(self) {
        stop_machines(&self.shutdown, &self.node, self.tasks, self.writer).await;
        self.node.store.close().await;
    }
}

pub fn load_key(dir: &Path, party: &str) -> Result<PartyKey, NodeError> {
    let path = NodeDir(dir.to_path_buf()).key(party);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| NodeError::Other(format!("cannot read key `{}`: {e}", path.display())))?;
    PartyKey::from_file(&text).map_err(|e| NodeError::Other(format!("`{}`: {e}", path.display())))
}

/// Starts the node in `dir`. Listen addresses come from its config unless overridden
/// (port 0 picks a free port; the chosen addresses are returned).
pub async fn start(
    dir: &Path,
    clock: SharedClock,
    random: Arc<dyn Random>,
) -> Result<Running, NodeError> {
    start_with(dir, clock, Arc::new(SystemClock), random).await
}

/// [`start`] with the wall clock that sessions and sign-in throttling use injected
/// (the node's own clock may run in a scenario's time).
pub async fn start_with(
    dir: &Path,
    clock: SharedClock,
    wall: SharedClock,
    random: Arc<dyn Random>,
) -> Result<Running, NodeError> {
    let config = Config::load(dir)?;
    let key = load_key(dir, &config.party)?;
    if key.party.as_str() != config.party {
        return Err(NodeError::Other(format!(
            "key is for `{}`, but the node is `{}`",
            key.party, config.party
        )));
    }
    let store = SqliteStore::open(&NodeDir(dir.to_path_buf()).store()).await?;
    let api_listener = TcpListener::bind(config.api.listen).await.map_err(|e| {
        NodeError::Other(format!("cannot listen on {} (api): {e}", config.api.listen))
    })?;
    let fed_listener = TcpListener::bind(config.federation.listen)
        .await
        .map_err(|e| {
            NodeError::Other(format!(
                "cannot listen on {} (federation): {e}",
                config.federation.listen
            ))
        })?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|e| NodeError::Other(e.to_string()))?;
    let federation_addr = fed_listener
        .local_addr()
        .map_err(|e| NodeError::Other(e.to_string()))?;
    let Machines {
        node,
        shutdown: shutdown_tx,
        mut tasks,
        writer,
    } = launch(Parts {
        config,
        key,
        store,
        clock,
        random,
        dialer: Arc::new(liaison_link::TcpDialer),
        federation: fed_listener,
    })
    .await?;
    let shutdown_rx = shutdown_tx.subscribe();
    let operator = users::operator_token(dir).map_err(|e| {
        NodeError::Other(format!(
            "cannot read or create `{}`: {e}",
            dir.join(users::OPERATOR_TOKEN_FILE).display()
        ))
    })?;
    let people = Arc::new(users::People::new(
        wall,
        node.random.clone(),
        users::SessionPolicy::default(),
        Some(&operator),
    ));
    let app = web::App {
        node: node.clone(),
        people,
    };
    let api = api::router(app.clone())
        .merge(console::router(app))
        .layer(axum::middleware::from_fn(web::security_headers))
        .into_make_service_with_connect_info::<SocketAddr>();
    let mut rx = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(api_listener, api)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("local API stopped: {e}");
        }
    }));
    Ok(Running {
        api_addr,
        federation_addr,
        node,
        shutdown: shutdown_tx,
        tasks,
        writer,
    })
}

/// The agreements installed in `store`, as a node would load them.
pub async fn stored_agreements<S: liaison_store::Store>(
    store: &S,
) -> Result<liaison_core::release::AgreementSet, NodeError> {
    let rows = store.agreement_list().await?;
    Ok(liaison_core::release::AgreementSet::new(
        rows.iter()
            .filter_map(|r| parse_agreement(&format!("store:{}", r.id), &r.text).ok()),
    ))
}

/// Everything a node's machines run on, injected: a running node gets SQLite, TCP and
/// the system clock; a simulation gets an in-memory store, a simulated network and
/// simulated time.
#[allow(missing_debug_implementations)]
pub struct Parts<S: Store, L: Listener> {
    pub config: Config,
    pub key: PartyKey,
    pub store: S,
    pub clock: SharedClock,
    pub random: Arc<dyn Random>,
    pub dialer: Arc<dyn Dialer>,
    pub federation: L,
}

/// A node's machines, running: delivery lanes, acknowledgements, hotlines,
/// escalations, maintenance and the federation listener (not the local API).
#[allow(missing_debug_implementations)]
pub struct Machines<S: Store> {
    pub node: Arc<Node<S>>,
    pub shutdown: watch::Sender<bool>,
    pub tasks: Vec<JoinHandle<()>>,
    /// The outbox writer, stopped last (see [`Machines::stop`]).
    pub writer: JoinHandle<()>,
}

impl<S: Store> Machines<S> {
    /// Stops everything and waits for it; the store stays open.
    pub async fn stop(self) {
        stop_machines(&self.shutdown, &self.node, self.tasks, self.writer).await;
    }
}

/// Graceful stop: every machine finishes what it has under way (a lane settles the
/// batches it has on the wire), and only then does the writer commit what they
/// handed it and stop.
async fn stop_machines<S: Store>(
    shutdown: &watch::Sender<bool>,
    node: &Node<S>,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
) {
    let grace = std::time::Duration::from_secs(15);
    let _ = shutdown.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(grace, t).await;
    }
    node.close_writer();
    let _ = tokio::time::timeout(grace, writer).await;
}

/// Starts a node's machines on injected parts.
pub async fn launch<S: Store, L: Listener>(parts: Parts<S, L>) -> Result<Machines<S>, NodeError> {
    let Parts {
        config,
        key,
        store,
        clock,
        random,
        dialer,
        federation: fed_listener,
    } = parts;
    let identity = Identity::from_ed25519_seed(&config.party, key.seed())?;
    let stats = Arc::new(LinkStats::new());
    let pins = Pins::new();
    let client = Client::with_dialer(identity.clone(), pins.clone(), stats.clone(), dialer);
    let peers: Vec<String> = {
        let mut p: Vec<String> = config.peers.iter().map(|p| p.party.clone()).collect();
        p.sort();
        p.dedup();
        p
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (node, writer) = Node::new(
        config,
        key,
        store,
        clock,
        random,
        client,
        pins.clone(),
        stats.clone(),
    );
    node.note_boot_seq().await?;
    node.refresh_agreements().await?;
    node.audit_agreement_events().await?;
    node.sign_tree_head().await?;

    let writer = tokio::spawn(writer);
    let mut tasks = vec![
        tokio::spawn(workers::maintenance(node.clone(), shutdown_rx.clone())),
        tokio::spawn(workers::hotlines(node.clone(), shutdown_rx.clone())),
        tokio::spawn(workers::escalations(node.clone(), shutdown_rx.clone())),
    ];
    for peer in peers {
        for lane in [workers::EXPRESS, workers::BULK] {
            tasks.push(tokio::spawn(workers::deliver(
                node.clone(),
                peer.clone(),
                lane,
                shutdown_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(workers::send_acks(
            node.clone(),
            peer,
            shutdown_rx.clone(),
        )));
    }
    let fed = federation::router(node.clone()).merge(audit::router(node.clone()));
    let mut rx = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = liaison_link::serve(fed_listener, identity, pins, fed, stop, stats).await {
            tracing::error!("federation listener stopped: {e}");
        }
    }));
    Ok(Machines {
        node,
        shutdown: shutdown_tx,
        tasks,
        writer,
    })
}

/// What `init` made.
#[derive(Debug)]
pub struct InitReport {
    pub public_key: String,
    pub config: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub store: PathBuf,
}

/// Creates a node directory: config, the party's key, its TLS certificate (for the
/// same key, which agreements pin) and the store with its migrations run.
pub async fn init(dir: &Path, config: &Config, seed: [u8; 32]) -> Result<InitReport, NodeError> {
    let nd = NodeDir(dir.to_path_buf());
    if nd.config().exists() {
        return Err(NodeError::Other(format!(
            "`{}` already exists; refusing to overwrite a node",
            nd.config().display()
        )));
    }
    let party = PartyId::new(&config.party).map_err(|e| NodeError::Other(e.to_string()))?;
    let io = |e: std::io::Error| NodeError::Other(e.to_string());
    std::fs::create_dir_all(dir.join("keys")).map_err(io)?;
    std::fs::create_dir_all(dir.join("tls")).map_err(io)?;
    let key = PartyKey::from_seed(party.clone(), seed);
    write_private(&nd.key(party.as_str()), &key.to_file())?;
    let identity = Identity::from_ed25519_seed(party.as_str(), seed)?;
    let pem = pem("CERTIFICATE", identity.certificate_der());
    std::fs::write(nd.cert(), pem).map_err(io)?;
    let store = SqliteStore::open(&nd.store()).await?;
    store.close().await;
    users::operator_token(dir).map_err(io)?;
    std::fs::write(nd.config(), config.to_toml()).map_err(io)?;
    Ok(InitReport {
        public_key: key.public().to_string(),
        config: nd.config(),
        key: nd.key(party.as_str()),
        cert: nd.cert(),
        store: nd.store(),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), NodeError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| NodeError::Other(format!("cannot create `{}`: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| NodeError::Other(e.to_string()))
}

/// Installs an agreement into a node's store, refusing it unless every party's
/// signature (and every event's) verifies. A running node picks it up within a second.
pub async fn install_agreement<S: Store>(
    store: &S,
    file: &str,
    text: &str,
    now_ms: i64,
) -> Result<String, NodeError> {
    let a = parse_agreement(file, text).map_err(|d| NodeError::Other(d.to_string()))?;
    let report = verify_signatures(&a);
    if !report.is_complete() {
        return Err(NodeError::Other(format!(
            "`{file}` refused: {}",
            report.problems.join("; ")
        )));
    }
    let digest = hex::encode(agreement_digest(&a));
    let audit = liaison_core::audit::AuditEntry {
        at: jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        event: AuditEvent::AgreementInstalled {
            id: a.id.clone(),
            version: a.version,
            digest: digest.clone(),
        },
    }
    .encode();
    let outcome = store
        .agreement_put(&a.id, a.version, text, &digest, now_ms, &[audit])
        .await?;
    Ok(match outcome {
        AgreementPut::Installed => format!("installed `{}` version {}", a.id, a.version),
        AgreementPut::Replaced { previous_version } => format!(
            "installed `{}` version {} (replacing version {previous_version})",
            a.id, a.version
        ),
        AgreementPut::EventsUpdated => {
            format!("updated the events of `{}` version {}", a.id, a.version)
        }
        AgreementPut::Unchanged => {
            format!("`{}` version {} was already installed", a.id, a.version)
        }
        AgreementPut::KeptNewer { installed_version } => format!(
            "kept the installed version {installed_version} of `{}`; version {} is older",
            a.id, a.version
        ),
    })
}
