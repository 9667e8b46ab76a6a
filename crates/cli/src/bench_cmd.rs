//! `liaison bench`: durable delivery between two local nodes, against this machine's
//! own Ed25519 rate measured in the same run.

use liaison_node::bench::{BenchOptions, run};

use crate::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages for the throughput run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// ROUTINE messages waiting while FLASH latency is measured.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Messages for the fixed-rate latency run.
    #[arg(long, default_value_t = 5_000)]
    rate_messages: usize,
    /// Offered rate for the latency run, messages per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long)]
    json: bool,
}

pub async fn bench(args: Args) -> anyhow::Result<Exit> {
    let dir = tempfile::tempdir()?;
    let opts = BenchOptions {
        messages: args.messages,
        rate_messages: args.rate_messages,
        rate_per_s: args.rate,
        backlog: args.backlog,
        flash: 200,
    };
    let r = run(dir.path(), &opts, |s| eprintln!("bench: {s}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "Ed25519 sign+verify (1 KiB, one core): {:>10.0} /s",
            r.ed25519_sign_verify_per_s
        );
        println!(
            "durable end-to-end (accept → receipt recorded): {:>8.0} msgs/s  (ratio {:.2})",
            r.throughput_msgs_per_s, r.ratio_to_sign_verify
        );
        println!("latency, accept → signed receipt back and verified (→ receipt recorded):");
        let line = |what: String, l: &liaison_node::bench::Latency| {
            println!(
                "  {what:<34} p50 {:>6.1} ms  p99 {:>6.1} ms   (p50 {:.1} ms  p99 {:.1} ms)",
                l.receipt_p50_ms, l.receipt_p99_ms, l.recorded_p50_ms, l.recorded_p99_ms
            );
        };
        line(format!("at {} msgs/s", args.rate), &r.latency);
        line(
            format!("FLASH with {} ROUTINE queued", r.backlog_routine),
            &r.flash,
        );
    }
    Ok(Exit::Ok)
}
