//! Counters and gauges the node exposes at `/metrics` in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub delivered: AtomicU64,
    pub bounced: AtomicU64,
    pub settle_asked: AtomicU64,
    pub retries: AtomicU64,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub arrivals_refused: AtomicU64,
    pub tampered: AtomicU64,
    pub acks_sent: AtomicU64,
    pub acks_received: AtomicU64,
    pub escalations: AtomicU64,
    pub heartbeats_ok: AtomicU64,
    pub heartbeats_failed: AtomicU64,
    pub forks: AtomicU64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Builds exposition text; one `# TYPE` line per family.
#[derive(Debug, Default)]
pub struct Exposition(pub String);

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.0, "{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n")
                    )
                })
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
    pub fn counter(&mut self, name: &str, help: &str, c: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, &[], c.load(Ordering::Relaxed) as f64);
    }
}

impl Metrics {
    pub fn render(&self, out: &mut Exposition) {
        out.counter(
            "liaison_messages_accepted_total",
            "Messages accepted for sending",
            &self.accepted,
        );
        out.counter(
            "liaison_messages_refused_total",
            "Messages refused at acceptance by the release decision",
            &self.refused,
        );
        out.counter(
            "liaison_messages_delivered_total",
            "Messages with a valid stored receipt from the peer",
            &self.delivered,
        );
        out.counter(
            "liaison_messages_bounced_total",
            "Messages given up on, with a reason",
            &self.bounced,
        );
        out.counter(
            "liaison_settle_asked_total",
            "Envelopes sent but no longer sendable, asked about at the peer before bouncing",
            &self.settle_asked,
        );
        out.counter(
            "liaison_delivery_retries_total",
            "Failed delivery attempts rescheduled",
            &self.retries,
        );
        out.counter(
            "liaison_messages_received_total",
            "Messages received and stored",
            &self.received,
        );
        out.counter(
            "liaison_messages_duplicate_total",
            "Duplicate deliveries ignored",
            &self.duplicates,
        );
        out.counter(
            "liaison_arrivals_refused_total",
            "Arriving messages refused by this node's own decision",
            &self.arrivals_refused,
        );
        out.counter(
            "liaison_envelopes_tampered_total",
            "Arriving envelopes whose signature or hash failed",
            &self.tampered,
        );
        out.counter(
            "liaison_acks_sent_total",
            "Acknowledgement receipts delivered to senders",
            &self.acks_sent,
        );
        out.counter(
            "liaison_acks_received_total",
            "Acknowledgement receipts received from peers",
            &self.acks_received,
        );
        out.counter(
            "liaison_escalations_total",
            "FLASH messages not acknowledged in time",
            &self.escalations,
        );
        out.counter(
            "liaison_heartbeats_ok_total",
            "Hotline heartbeats answered",
            &self.heartbeats_ok,
        );
        out.counter(
            "liaison_heartbeats_failed_total",
            "Hotline heartbeats failed",
            &self.heartbeats_failed,
        );
        out.counter(
            "liaison_audit_forks_total",
            "Peers caught showing inconsistent audit tree heads",
            &self.forks,
        );
    }
}
