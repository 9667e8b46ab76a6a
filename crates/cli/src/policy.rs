//! `liaison policy explain`: one release decision with the clauses that decided it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use liaison_core::agreement::Agreement;
use liaison_core::ids::{DeskId, PartyId};
use liaison_core::label::Label;
use liaison_core::parse::parse_agreement;
use liaison_core::release::{AgreementSet, ReleaseRequest, decide};

use crate::Exit;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decide whether a message may cross, and say why. Exit 0 allow, 3 deny, 1 error.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Directory of agreement files (`*.toml`).
    #[arg(long)]
    agreements: PathBuf,
    /// Sending desk, e.g. `USA.intel`.
    #[arg(long)]
    from: String,
    /// Receiving desk, e.g. `ROK.intel`.
    #[arg(long)]
    to: String,
    /// Label in a party's own scale (`USA:SECRET`) or the common one (`COMMON:SECRET`).
    #[arg(long)]
    label: String,
    /// The party whose information this is, if not the sender's.
    #[arg(long)]
    originator: Option<String>,
    /// RFC 3339 instant to decide at; now if absent.
    #[arg(long)]
    at: Option<String>,
    /// Print JSON: `decision`, `receiver_label`, `reasons`, ...
    #[arg(long)]
    json: bool,
}

/// Loads every `*.toml` agreement in a directory; any invalid file is an error listing
/// all its problems.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Agreement>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory `{}`", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        let text = crate::read_text(&p)?;
        match parse_agreement(&p.display().to_string(), &text) {
            Ok(a) => out.push(a),
            Err(d) => problems.push(d.to_string()),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("invalid agreements:\n{}", problems.join("\n"));
    }
    Ok(out)
}

pub fn run(cmd: Command) -> anyhow::Result<Exit> {
    match cmd {
        Command::Explain(args) => explain(args),
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<Exit> {
    let from = DeskId::new(&args.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = DeskId::new(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let label: Label = args
        .label
        .parse()
        .map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    let originator = args
        .originator
        .as_deref()
        .map(PartyId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--originator: {e}"))?;
    let at = crate::instant_or_now(args.at.as_deref())?;
    let set = AgreementSet::new(load_dir(&args.agreements)?);
    let req = ReleaseRequest {
        from: &from,
        to: &to,
        label: &label,
        originator: originator.as_ref(),
        consents: &[],
    };
    let d = decide(&set, &req, at);
    if args.json {
        let json = serde_json::json!({
            "decision": d.decision,
            "receiver_label": d.receiver_label.as_ref().map(ToString::to_string),
            "common_level": d.common_level,
            "agreement": d.agreement,
            "channel": d.channel,
            "at": at.to_string(),
            "reasons": d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "clauses": d.reasons,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let verdict = if d.allowed() { "ALLOW" } else { "DENY" };
        println!("{verdict} {} → {} {} at {at}", from, to, label);
        if let Some(l) = &d.receiver_label {
            println!("arrives as {l}");
        }
        for r in &d.reasons {
            println!("  - {r}");
        }
    }
    Ok(if d.allowed() { Exit::Ok } else { Exit::Code(3) })
}
