//! `liaison bench`: durable delivery between two local nodes, against this machine's
//! own Ed25519 rate measured in the same run.

use liaison_node::bench::{BenchOptions, run};

use anyhow::Context;

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
    /// FLASH messages sent (at 100/s) while the backlog waits: the p99 of the default
    /// 200 is their second-slowest, so raise it for a steadier tail figure.
    #[arg(long, default_value_t = 200)]
    flash: usize,
    /// Offered rate for the latency run, messages per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long)]
    json: bool,
    /// Build the two nodes' directories here (it must not exist yet) and keep them,
    /// so a node can be started again on the stored messages (start time, memory).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

pub async fn bench(args: Args) -> anyhow::Result<Exit> {
    let dir = match &args.keep {
        Some(path) => {
            // Refuses an existing path, so a kept run never mixes with another's stores.
            std::fs::create_dir(path)
                .with_context(|| format!("--keep {}: cannot create it", path.display()))?;
            Place::Kept(path.clone())
        }
        None => Place::Temporary(tempfile::tempdir()?),
    };
    let opts = BenchOptions {
        messages: args.messages,
        rate_messages: args.rate_messages,
        rate_per_s: args.rate,
        backlog: args.backlog,
        flash: args.flash,
    };
    let r = run(dir.path(), &opts, |s| eprintln!("bench: {s}")).await?;
    if args.json {
        #[derive(serde::Serialize)]
        struct WithMemory<'a> {
            #[serde(flatten)]
            report: &'a liaison_node::bench::BenchReport,
            peak_rss_bytes: Option<u64>,
        }
        let out = WithMemory {
            report: &r,
            peak_rss_bytes: peak_rss_bytes(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "Ed25519 sign+verify (1 KiB, one core): {:>10.0} /s",
            r.ed25519_sign_verify_per_s
        );
        println!(
            "fsync of a 4 KiB write (this disk):  p50 {:>5.2} ms  p99 {:>5.2} ms  max {:.1} ms \
             ({} samples; a FLASH waits for two in series)",
            r.disk_sync.p50_ms, r.disk_sync.p99_ms, r.disk_sync.max_ms, r.disk_sync.samples
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
            format!("{} FLASH, {} ROUTINE queued", args.flash, r.backlog_routine),
            &r.flash,
        );
        println!(
            "  {:<34} {:>6.0} msgs/s of the backlog, meanwhile",
            "ROUTINE delivered while FLASH flow", r.flash.others_per_s
        );
        match peak_rss_bytes() {
            Some(b) => println!(
                "peak RSS of this process (both nodes and the bench): {:.0} MB",
                b as f64 / 1e6
            ),
            None => println!("peak RSS: not available on this system"),
        }
    }
    if let Place::Kept(path) = &dir {
        eprintln!(
            "bench: the nodes' directories are kept in {}",
            path.display()
        );
    }
    Ok(Exit::Ok)
}

/// Where the two nodes live: a directory removed at the end, or one kept.
enum Place {
    Temporary(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl Place {
    fn path(&self) -> &std::path::Path {
        match self {
            Place::Temporary(t) => t.path(),
            Place::Kept(p) => p,
        }
    }
}

/// The process's high-water resident set (VmHWM), which the standing memory target
/// is about; Linux only.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
