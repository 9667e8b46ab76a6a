//! Node commands: `init`, `serve`, `send`, `inbox`, `ack`, and `agreement install`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use liaison_node::config::{Config, Delivery, Listen, Peer};
use liaison_node::{OsRandom, ScenarioClock, SharedClock, SystemClock};

use crate::Exit;
use crate::local_api::{encode, operator, request_as};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    party: String,
    #[arg(long)]
    dir: PathBuf,
    /// Local API (and console) address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Federation (mutual TLS) address.
    #[arg(long, default_value = "127.0.0.1:7101")]
    federation: SocketAddr,
    /// A peer: `PARTY=ADDR[,ADDR...]`, repeatable.
    #[arg(long = "peer")]
    peers: Vec<String>,
}

pub fn parse_peer(s: &str) -> anyhow::Result<Peer> {
    let (party, addrs) = s
        .split_once('=')
        .with_context(|| format!("--peer `{s}`: expected `PARTY=ADDR[,ADDR...]`"))?;
    let addresses: Vec<String> = addrs
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    for a in &addresses {
        a.parse::<SocketAddr>().with_context(|| {
            format!("--peer `{s}`: `{a}` is not an address such as 127.0.0.1:7201")
        })?;
    }
    Ok(Peer {
        party: party.trim().to_owned(),
        addresses,
    })
}

pub async fn init(args: InitArgs) -> anyhow::Result<Exit> {
    let peers = args
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = Config {
        party: args.party,
        api: Listen {
            listen: args.listen,
        },
        federation: Listen {
            listen: args.federation,
        },
        peers,
        delivery: Delivery::default(),
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let r = liaison_node::init(&args.dir, &config, seed).await?;
    println!("node {} created in {}", config.party, args.dir.display());
    println!("  config  {}", r.config.display());
    println!("  key     {} (secret)", r.key.display());
    println!("  cert    {}", r.cert.display());
    println!("  store   {}", r.store.display());
    println!(
        "public key of {} (list it in agreements): {}",
        config.party, r.public_key
    );
    Ok(Exit::Ok)
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Start the node's clock at this RFC 3339 instant instead of now.
    #[arg(long)]
    clock: Option<String>,
    /// Run the clock N times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    clock_speed: f64,
}

pub fn clock_from(at: Option<&str>, speed: f64) -> anyhow::Result<SharedClock> {
    if !(speed.is_finite() && speed > 0.0 && speed <= 1_000_000.0) {
        bail!(
            "--clock-speed: `{speed}` is not a speed, expected a number above 0 and at most 1000000"
        );
    }
    Ok(match at {
        Some(s) => Arc::new(ScenarioClock::new(
            liaison_core::parse::parse_instant(s).map_err(|e| anyhow::anyhow!("--clock: {e}"))?,
            speed,
        )),
        None if (speed - 1.0).abs() > f64::EPSILON => {
            Arc::new(ScenarioClock::new(jiff::Timestamp::now(), speed))
        }
        None => Arc::new(SystemClock),
    })
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<Exit> {
    let clock = clock_from(args.clock.as_deref(), args.clock_speed)?;
    let running = liaison_node::start(&args.dir, clock.clone(), Arc::new(OsRandom)).await?;
    println!("node {} serving", running.node.party);
    println!(
        "  local API   http://{}/api/v1/  (metrics: http://{}/metrics)",
        running.api_addr, running.api_addr
    );
    println!(
        "  federation  https://{} (mutual TLS)",
        running.federation_addr
    );
    println!("  clock       {} (×{})", clock.now(), clock.speed());
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopping");
    running.stop().await;
    Ok(Exit::Ok)
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[arg(long)]
    label: String,
    #[arg(long, default_value = "ROUTINE")]
    precedence: String,
    #[arg(long)]
    body: String,
    #[arg(long)]
    originator: Option<String>,
}

pub fn send(args: SendArgs) -> anyhow::Result<Exit> {
    let body = serde_json::json!({ "from": args.from, "to": args.to, "label": args.label, "precedence": args.precedence, "body": args.body, "originator": args.originator });
    let (addr, token) = operator(&args.dir)?;
    let (status, text) = request_as(
        &addr,
        Some(&token),
        "POST",
        "/api/v1/messages",
        Some(&body.to_string()),
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
    if status == 201 {
        println!(
            "accepted {} (arrives as {})",
            text_of(&v, "id").unwrap_or("?"),
            text_of(&v, "receiver_label").unwrap_or("?")
        );
        return Ok(Exit::Ok);
    }
    eprintln!(
        "not accepted ({status}): {}",
        text_of(&v, "error").unwrap_or(&text)
    );
    for r in v
        .get("reasons")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        eprintln!("  - {}", r.as_str().unwrap_or_default());
    }
    Ok(Exit::Code(if status == 403 { 3 } else { 1 }))
}

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    desk: String,
    /// `inbox` or `outbox`.
    #[arg(long, default_value = "inbox")]
    r#box: String,
    #[arg(long)]
    json: bool,
}

pub fn inbox(args: InboxArgs) -> anyhow::Result<Exit> {
    let path = format!(
        "/api/v1/messages?desk={}&box={}",
        encode(&args.desk),
        encode(&args.r#box)
    );
    let (addr, token) = operator(&args.dir)?;
    let (status, text) = request_as(&addr, Some(&token), "GET", &path, None)?;
    if status != 200 {
        bail!("{status}: {text}");
    }
    if args.json {
        println!("{text}");
        return Ok(Exit::Ok);
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    for m in list {
        println!(
            "{} {:<9} {} → {} [{}] {} {}",
            text_of(&m, "id").unwrap_or(""),
            text_of(&m, "precedence").unwrap_or(""),
            text_of(&m, "from").unwrap_or(""),
            text_of(&m, "to").unwrap_or(""),
            text_of(&m, "label").unwrap_or(""),
            text_of(&m, "state").unwrap_or(""),
            text_of(&m, "body")
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>()
        );
    }
    Ok(Exit::Ok)
}

#[derive(Debug, clap::Args)]
pub struct AckArgs {
    #[arg(long)]
    dir: PathBuf,
    id: String,
    /// Who acknowledges.
    #[arg(long)]
    by: String,
}

pub fn ack(args: AckArgs) -> anyhow::Result<Exit> {
    let body = serde_json::json!({ "by": args.by }).to_string();
    let (addr, token) = operator(&args.dir)?;
    let (status, text) = request_as(
        &addr,
        Some(&token),
        "POST",
        &format!("/api/v1/messages/{}/ack", encode(&args.id)),
        Some(&body),
    )?;
    if status != 200 {
        bail!("{status}: {text}");
    }
    println!("{text}");
    Ok(Exit::Ok)
}

pub async fn install(file: &Path, dir: &Path) -> anyhow::Result<Exit> {
    let text = crate::read_text(file)?;
    let store =
        liaison_store::SqliteStore::open(&liaison_node::NodeDir(dir.to_path_buf()).store()).await?;
    let result = liaison_node::install_agreement(
        &store,
        &file.display().to_string(),
        &text,
        jiff::Timestamp::now().as_millisecond(),
    )
    .await;
    store.close().await;
    println!("{}", result?);
    Ok(Exit::Ok)
}

fn text_of<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}
