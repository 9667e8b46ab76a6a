//! `liaison user add|list|passwd|disable|token`: the accounts of a node's people,
//! managed by the operator on the node's own store.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use liaison_node::users::{self, People, SessionPolicy, UserSpec};
use liaison_node::{Config, NodeDir, OsRandom, SystemClock};
use liaison_store::{SqliteStore, Store};

use crate::Exit;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an account. The password is read from LIAISON_PASSWORD or one line of stdin.
    Add(AddArgs),
    /// List accounts.
    List(DirArg),
    /// Set a new password (LIAISON_PASSWORD or stdin); ends the user's sessions.
    Passwd(NameArgs),
    /// Disable an account; ends its sessions.
    Disable(NameArgs),
    /// Issue an API token for a user (printed once).
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct DirArg {
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Sign-in name.
    #[arg(long)]
    name: String,
    /// Name shown to others, as on acknowledgements.
    #[arg(long)]
    display_name: Option<String>,
    /// duty-officer, release-officer, agreement-officer or administrator (repeatable).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// A desk of this party the user staffs (repeatable), e.g. `ROK.navy`.
    #[arg(long = "desk")]
    desks: Vec<String>,
    /// Highest level the user may see or send, in the party's own scale.
    #[arg(long)]
    clearance: String,
    /// Console language: en, ko, zh-CN or ja.
    #[arg(long, default_value = "en")]
    language: String,
    /// IANA time zone for dates and times.
    #[arg(long, default_value = "UTC")]
    time_zone: String,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    #[arg(long)]
    dir: PathBuf,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[arg(long)]
    dir: PathBuf,
    name: String,
    /// What the token is for.
    #[arg(long, default_value = "api")]
    label: String,
}

fn people() -> People {
    People::new(
        Arc::new(SystemClock),
        Arc::new(OsRandom),
        SessionPolicy::default(),
        None,
    )
}

fn password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("LIAISON_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn open(dir: &Path) -> anyhow::Result<(Config, SqliteStore)> {
    let config = Config::load(dir)?;
    let store = SqliteStore::open(&NodeDir(dir.to_path_buf()).store()).await?;
    Ok((config, store))
}

pub async fn run(cmd: Command) -> anyhow::Result<Exit> {
    match cmd {
        Command::Add(a) => {
            let (config, store) = open(&a.dir).await?;
            let set = liaison_node::stored_agreements(&store).await?;
            let spec = UserSpec {
                name: a.name.clone(),
                display_name: a.display_name,
                roles: a.roles,
                desks: a.desks,
                clearance: a.clearance,
                language: a.language,
                time_zone: a.time_zone,
            };
            // Check before asking for a password, so a typo costs no typing.
            users::check_spec(&spec, &config.party, &set)?;
            let pw = password()?;
            let r = users::add_user(
                &store,
                &config.party,
                &set,
                &people(),
                &spec,
                &pw,
                "operator",
            )
            .await;
            store.close().await;
            r?;
            println!("added {}", a.name);
        }
        Command::List(a) => {
            let (_, store) = open(&a.dir).await?;
            let list = store.user_list().await;
            store.close().await;
            for u in list? {
                println!(
                    "{:<20} {:<10} roles={} desks={} clearance={} language={} zone={}",
                    u.name,
                    if u.disabled { "DISABLED" } else { "active" },
                    u.roles,
                    u.desks,
                    u.clearance,
                    u.language,
                    u.time_zone
                );
            }
        }
        Command::Passwd(a) => {
            let (_, store) = open(&a.dir).await?;
            let pw = password()?;
            let r =
                users::change_user(&store, &people(), &a.name, Some(&pw), false, "operator").await;
            store.close().await;
            r?;
            println!("password changed for {}; their sessions ended", a.name);
        }
        Command::Disable(a) => {
            let (_, store) = open(&a.dir).await?;
            let r = users::change_user(&store, &people(), &a.name, None, true, "operator").await;
            store.close().await;
            r?;
            println!("disabled {}; their sessions ended", a.name);
        }
        Command::Token(a) => {
            let (_, store) = open(&a.dir).await?;
            let r = users::issue_token(&store, &people(), &a.name, &a.label).await;
            store.close().await;
            println!("{}", r?);
        }
    }
    Ok(Exit::Ok)
}
