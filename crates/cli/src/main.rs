//! The `liaison` command.

mod agreement_cmd;
mod audit_cmd;
mod bench_cmd;
mod demo_cmd;
mod keygen;
mod local_api;
mod node_cmd;
mod policy;
mod user_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "liaison",
    version,
    about = "Hotlines and agreement-governed exchange between parties that do not fully trust each other"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a party's Ed25519 signing key.
    Keygen(keygen::Args),
    /// Check, show, sign and verify agreement files.
    #[command(subcommand)]
    Agreement(agreement_cmd::Command),
    /// Verify, show and prove a node's audit log; check proofs offline.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
    /// Explain release decisions.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Create a node: config, key, TLS certificate, store.
    Init(node_cmd::InitArgs),
    /// Manage the accounts of a node's people.
    #[command(subcommand)]
    User(user_cmd::Command),
    /// Run a node until Ctrl-C.
    Serve(node_cmd::ServeArgs),
    /// Send a message through a running node.
    Send(node_cmd::SendArgs),
    /// List a desk's messages on a running node.
    Inbox(node_cmd::InboxArgs),
    /// Acknowledge a received message as a person.
    Ack(node_cmd::AckArgs),
    /// Measure durable delivery between two local nodes.
    Bench(bench_cmd::Args),
    /// The seed scenario on four local nodes with a controllable clock.
    Demo(demo_cmd::Args),
}

/// Runs async node commands on a runtime made for them.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// How a command ended: exit 0, or a specific non-zero code it chose.
#[derive(Debug)]
pub enum Exit {
    Ok,
    Code(u8),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIAISON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Agreement(cmd) => agreement_cmd::run(cmd),
        Command::Audit(cmd) => audit_cmd::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Init(args) => block_on(node_cmd::init(args)).and_then(|r| r),
        Command::User(cmd) => block_on(user_cmd::run(cmd)).and_then(|r| r),
        Command::Serve(args) => block_on(node_cmd::serve(args)).and_then(|r| r),
        Command::Send(args) => node_cmd::send(args),
        Command::Inbox(args) => node_cmd::inbox(args),
        Command::Ack(args) => node_cmd::ack(args),
        Command::Bench(args) => block_on(bench_cmd::bench(args)).and_then(|r| r),
        Command::Demo(args) => block_on(demo_cmd::run(args)).and_then(|r| r),
    };
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Code(c)) => ExitCode::from(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Reads a text file people wrote, refusing non-UTF-8 with a clear message.
pub fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: byte {} is not UTF-8, expected a UTF-8 text file",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Writes a file by renaming a complete temporary copy over it, so a crash never
/// leaves half a file.
pub fn write_atomic(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let tmp = path.with_extension("tmp~");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace `{}`", path.display()))?;
    Ok(())
}

/// Parses an RFC 3339 instant given on the command line, or now.
pub fn instant_or_now(at: Option<&str>) -> anyhow::Result<jiff::Timestamp> {
    match at {
        Some(s) => liaison_core::parse::parse_instant(s).map_err(|e| anyhow::anyhow!("--at: {e}")),
        None => Ok(jiff::Timestamp::now()),
    }
}
