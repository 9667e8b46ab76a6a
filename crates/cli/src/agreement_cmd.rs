//! `liaison agreement`: check, show, sign and verify agreement files.

use std::path::PathBuf;

use anyhow::Context;
use liaison_core::agreement::{Agreement, Owed, Per};
use liaison_core::canonical::{agreement_digest, verify_signatures};
use liaison_core::lifecycle::{Participation, term_end_after};
use liaison_core::parse::parse_agreement;
use liaison_core::signed_document::sign_document;
use liaison_core::signing::PartyKey;

use crate::{Exit, read_text, write_atomic};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check agreement files; every problem is reported as file:line:column. Exit 0 valid, 1 not.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Parties, channels, each party's state, next deadline and obligations.
    Show {
        file: PathBuf,
        /// RFC 3339 instant; now if absent.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sign the agreement (and the key's party's events) with a party key.
    Sign {
        file: PathBuf,
        /// Secret key file written by `liaison keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Add the key to the party's `keys` if missing (voids others' signatures).
        #[arg(long)]
        add_key: bool,
    },
    /// Verify every party's signature and every event's. Exit 0 only if all are valid.
    Verify { file: PathBuf },
    /// Install into a node's store; refused unless every signature verifies.
    Install {
        file: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<Exit> {
    match cmd {
        Command::Check { files } => check(&files),
        Command::Show { file, at, json } => show(&file, at.as_deref(), json),
        Command::Sign { file, key, add_key } => sign(&file, &key, add_key),
        Command::Verify { file } => verify(&file),
        Command::Install { file, dir } => {
            crate::block_on(crate::node_cmd::install(&file, &dir)).and_then(|r| r)
        }
    }
}

fn load(file: &std::path::Path) -> anyhow::Result<Agreement> {
    let text = read_text(file)?;
    parse_agreement(&file.display().to_string(), &text).map_err(|d| anyhow::anyhow!("{d}"))
}

fn check(files: &[PathBuf]) -> anyhow::Result<Exit> {
    let mut bad = 0usize;
    for f in files {
        let result = read_text(f).and_then(|text| {
            parse_agreement(&f.display().to_string(), &text).map_err(|d| anyhow::anyhow!("{d}"))
        });
        match result {
            Ok(a) => println!(
                "{}: ok: `{}` version {} ({} parties, {} channels)",
                f.display(),
                a.id,
                a.version,
                a.parties.len(),
                a.channels.len()
            ),
            Err(e) => {
                bad += 1;
                eprintln!("{e:#}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} file(s) invalid", files.len());
        Ok(Exit::Code(1))
    } else {
        Ok(Exit::Ok)
    }
}

fn show(file: &std::path::Path, at: Option<&str>, json: bool) -> anyhow::Result<Exit> {
    let a = load(file)?;
    let t = crate::instant_or_now(at)?;
    let compiled = liaison_core::release::Compiled::new(a);
    let a = &compiled.agreement;
    let states: Vec<(String, Participation)> = a
        .parties
        .iter()
        .map(|p| (p.id.to_string(), compiled.participation(&p.id, t)))
        .collect();
    let next = next_deadline(a, &states, t);
    let zone = liaison_core::lifecycle::zone_of(a);
    if json {
        let v = serde_json::json!({
            "id": a.id, "version": a.version, "title": a.title, "draft": a.draft,
            "digest": hex_digest(a),
            "at": t.to_string(),
            "parties": a.parties,
            "states": a.parties.iter().zip(&states).map(|(p, (_, s))| serde_json::json!({"party": p.id, "participation": s, "explain": s.explain(&p.id, &zone)})).collect::<Vec<_>>(),
            "channels": a.channels,
            "term": a.term,
            "next_deadline": next.as_ref().map(|(t, what)| serde_json::json!({"at": t.to_string(), "what": what})),
            "conditions": a.conditions,
            "obligations": a.obligations,
            "events": a.events,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    println!(
        "{} — {} (version {}){}",
        a.id,
        a.title,
        a.version,
        if a.draft { " DRAFT" } else { "" }
    );
    println!("digest {}", hex_digest(a));
    println!("at {}", liaison_core::lifecycle::show_instant(t, &zone));
    println!("\nparties:");
    for (p, (_, s)) in a.parties.iter().zip(&states) {
        let desks: Vec<&str> = p.desks.iter().map(|d| d.id.as_str()).collect();
        println!(
            "  {:<4} {:<20} {}  [{}]",
            p.id,
            s.name(),
            p.name,
            desks.join(", ")
        );
        println!("       {}", s.explain(&p.id, &zone));
    }
    if !a.channels.is_empty() {
        println!("\nchannels:");
        for c in &a.channels {
            let desks: Vec<&str> = c.desks.iter().map(|d| d.as_str()).collect();
            let extra = match (&c.test_interval, &c.ack_deadline) {
                (Some(i), Some(d)) => {
                    format!(", tested every {i:#}, FLASH acknowledged within {d:#}")
                }
                _ => String::new(),
            };
            println!(
                "  {} ({}): {} up to {}{extra}",
                c.id,
                c.kind.as_str(),
                desks.join(" ↔ "),
                a.common_name(c.ceiling)
            );
        }
    }
    if let Some(term) = &a.term {
        print!("\nterm: effective {}", term.effective);
        if let Some(l) = term.length {
            print!(", length {l:#}");
        }
        if term.auto_renew {
            print!(", renewed automatically");
        }
        if let Some(n) = term.notice {
            print!(", notice {n:#}");
        }
        println!();
    }
    match &next {
        Some((when, what)) => println!(
            "next deadline: {} — {what}",
            liaison_core::lifecycle::show_instant(*when, &zone)
        ),
        None => println!("next deadline: none"),
    }
    if !a.conditions.is_empty() {
        println!("\nconditions:");
        for c in &a.conditions {
            let recorded = a.events.iter().find(|e| matches!(&e.kind, liaison_core::agreement::EventKind::ConditionRecorded { condition } if *condition == c.id) && e.at <= t);
            let status = match recorded {
                Some(e) => format!("recorded by {} at {}", e.party, e.at),
                None => "not recorded".to_owned(),
            };
            println!("  {}: {} — {status}", c.id, c.text);
        }
    }
    if !a.obligations.is_empty() {
        println!("\nobligations:");
        for o in &a.obligations {
            let what = match &o.owed {
                Owed::Payment { amount, currency } => {
                    format!("{currency} {}", liaison_core::agreement::thousands(*amount))
                }
                Owed::Act { act } => act.clone(),
            };
            let per = match o.per {
                Per::Once => "",
                Per::Month => " a month",
                Per::Quarter => " a quarter",
                Per::Year => " a year",
            };
            let period = o
                .period
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            println!(
                "  {}: {} → {}: {what}{per}{period} [{:?}]",
                o.id, o.from, o.to, o.state
            );
            println!("       source: {}", o.source);
            if let Some(n) = &o.note {
                println!("       note: {n}");
            }
            if let Some(c) = &o.condition {
                println!("       only once condition `{c}` is recorded");
            }
        }
    }
    if !a.events.is_empty() {
        println!("\nevents:");
        for e in &a.events {
            println!(
                "  {} {} by {}{}",
                e.at,
                e.kind.name(),
                e.party,
                if e.signature.is_some() {
                    " (signed)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(Exit::Ok)
}

fn hex_digest(a: &Agreement) -> String {
    agreement_digest(a)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The soonest instant after `t` at which something must happen or will change.
fn next_deadline(
    a: &Agreement,
    states: &[(String, Participation)],
    t: jiff::Timestamp,
) -> Option<(jiff::Timestamp, String)> {
    let mut candidates: Vec<(jiff::Timestamp, String)> = Vec::new();
    for (p, s) in states {
        match s {
            Participation::NoticeGiven {
                lapses, condition, ..
            } => {
                let unless = condition
                    .as_ref()
                    .map(|c| format!(" unless `{c}` is recorded first"))
                    .unwrap_or_default();
                candidates.push((*lapses, format!("{p}'s participation lapses{unless}")));
            }
            Participation::Signed { effective } => {
                candidates.push((*effective, "the agreement takes effect".to_owned()))
            }
            Participation::Suspended { until: Some(u), .. } => {
                candidates.push((*u, format!("{p}'s suspension ends")))
            }
            _ => {}
        }
    }
    if let Some(term) = &a.term
        && let Some(end) = term_end_after(term, t)
    {
        if let Some(n) = term.notice
            && let Ok(deadline) = end
                .to_zoned(term.effective.time_zone().clone())
                .checked_sub(n)
            && deadline.timestamp() > t
        {
            candidates.push((
                deadline.timestamp(),
                "last moment to give notice before the term ends".to_owned(),
            ));
        }
        let what = if term.auto_renew {
            "the term renews unless notice was given"
        } else {
            "the term ends"
        };
        candidates.push((end, what.to_owned()));
    }
    candidates
        .into_iter()
        .filter(|(w, _)| *w > t)
        .min_by_key(|(w, _)| *w)
}

fn sign(file: &std::path::Path, key: &std::path::Path, add_key: bool) -> anyhow::Result<Exit> {
    let key_text = read_text(key)?;
    let key = PartyKey::from_file(&key_text).with_context(|| format!("`{}`", key.display()))?;
    let text = read_text(file)?;
    let (signed, summary) = sign_document(&file.display().to_string(), &text, &key, add_key)?;
    write_atomic(file, &signed)?;
    println!(
        "{}: signed by {} with {}",
        file.display(),
        key.party,
        key.public()
    );
    if summary.key_added {
        println!(
            "added the key to {}'s keys; dropped {} signature(s) over the old text",
            key.party, summary.dropped_signatures
        );
    }
    if summary.events_signed > 0 {
        println!("signed {} event(s) of {}", summary.events_signed, key.party);
    }
    Ok(Exit::Ok)
}

fn verify(file: &std::path::Path) -> anyhow::Result<Exit> {
    let a = load(file)?;
    let report = verify_signatures(&a);
    for p in &report.signed {
        println!("{}: signature of {p}: valid", file.display());
    }
    for problem in &report.problems {
        eprintln!("{}: {problem}", file.display());
    }
    if report.is_complete() {
        println!(
            "{}: every party's signature and every event verify",
            file.display()
        );
        Ok(Exit::Ok)
    } else {
        Ok(Exit::Code(1))
    }
}
