//! Loopback ports for nodes that a process starts itself: the demo, the benchmark and
//! the tests. A node reads its addresses from config, so a port is chosen before the
//! node binds it.
//!
//! Ports come from below the kernel's ephemeral range. A port taken by binding port 0
//! is in that range, and between choosing it and the node binding it the kernel may
//! give it to an outgoing connection as its source port, or to another port-0 bind.
//! Nodes on loopback dial each other all the time, so that happened: a test node
//! failed with "Address already in use".

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// Lowest port handed out: above the registered services most machines run.
const LOWEST: u16 = 20_000;
/// Where the kernel's ephemeral range starts when it cannot be read (Linux's default).
const EPHEMERAL_DEFAULT: u16 = 32_768;

/// A loopback port nothing listens on now, below the ephemeral range, never handed out
/// twice by this process.
pub fn free_local_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let top = ephemeral_start().max(LOWEST + 1_000);
    let span = u64::from(top - LOWEST);
    // A random start per call: processes started together try different ports.
    let mut at = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..span {
        let port = LOWEST + u16::try_from(at).unwrap_or(0);
        at = (at + 1) % span;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port between {LOWEST} and {top}"),
    ))
}

/// First port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_DEFAULT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_local_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!((LOWEST..ephemeral_start().max(LOWEST + 1_000)).contains(&p));
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
