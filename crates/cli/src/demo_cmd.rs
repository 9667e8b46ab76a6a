//! `liaison demo`: the seed scenario on four local nodes — the README's main command.

use std::path::PathBuf;

use liaison_node::demo::{Demo, DemoOptions};

use crate::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the four nodes live; an existing demo there is resumed.
    #[arg(long, default_value = "liaison-demo")]
    dir: PathBuf,
    /// RFC 3339 instant the scenario clock starts at (default shortly before midnight
    /// 2019-11-23 KST).
    #[arg(long)]
    clock: Option<String>,
    /// How many times faster than real time the clock runs.
    #[arg(long)]
    speed: Option<f64>,
    /// Japan lifts its export restrictions before midnight: ROK's notice is withdrawn
    /// and the agreement holds.
    #[arg(long)]
    extend: bool,
    /// Play the whole story headless on a fast clock, verify every outcome, and exit
    /// 0 only if all happened.
    #[arg(long)]
    check: bool,
    /// Start the four nodes with their users but play no story: a quiet scenario for
    /// exploring the consoles (and for the browser tests).
    #[arg(long, conflicts_with = "check")]
    no_story: bool,
    /// First port (each node takes two, 100 apart per node); 0 picks free ports.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
}

pub async fn run(args: Args) -> anyhow::Result<Exit> {
    let start = args
        .clock
        .as_deref()
        .map(liaison_core::parse::parse_instant)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--clock: {e}"))?;
    let speed = args.speed.unwrap_or(if args.check { 40.0 } else { 4.0 });
    if !(speed.is_finite() && speed > 0.0 && speed <= 10_000.0) {
        anyhow::bail!(
            "--speed: `{speed}` is not a speed, expected a number above 0 and at most 10000"
        );
    }
    let opts = DemoOptions {
        dir: args.dir.clone(),
        start,
        speed,
        extend: args.extend,
        check: args.check,
        base_port: if args.check { 0 } else { args.base_port },
    };
    let started = std::time::Instant::now();
    let mut demo = Demo::open(&opts, |s| println!("{s}")).await?;
    println!(
        "\nLiaison demo — four nodes on this machine, clock ×{speed} from {}",
        demo.clock.now()
    );
    println!("  Consoles (sign in with a name and password below):");
    for (party, url) in demo.api_urls() {
        let logins: Vec<String> = liaison_node::demo::DEMO_USERS
            .iter()
            .filter(|u| u.party == party)
            .map(|u| format!("{} / {}", u.name, u.password()))
            .collect();
        println!("  {party}  {url}   {}", logins.join("   "));
    }
    println!(
        "  (started in {} ms; agreements signed by every party are in {}/agreements)\n",
        started.elapsed().as_millis(),
        opts.dir.display()
    );
    let story = !args.no_story;
    let played = tokio::select! {
        r = demo.play(), if story => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    match played {
        Some(Err(e)) => {
            demo.stop().await;
            return Err(e.into());
        }
        Some(Ok(())) => {}
        None => {
            println!("\nstopping; run the same command again to resume");
            demo.stop().await;
            return Ok(Exit::Ok);
        }
    }
    let failures = demo.failures.clone();
    if args.check {
        demo.stop().await;
        if failures.is_empty() {
            println!("\ndemo check: every expected outcome happened");
            return Ok(Exit::Ok);
        }
        println!(
            "\ndemo check: {} outcome(s) did not happen:",
            failures.len()
        );
        for f in &failures {
            println!("  - {f}");
        }
        return Ok(Exit::Code(1));
    }
    println!(
        "\nthe story is over; the nodes keep running (hotlines keep being tested). Ctrl-C stops them."
    );
    let _ = tokio::signal::ctrl_c().await;
    demo.stop().await;
    Ok(Exit::Ok)
}
