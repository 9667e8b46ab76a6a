//! Where CPU-heavy work (hashing and signing whole batches) runs: on tokio's blocking
//! pool when the runtime has several workers, so a FLASH never waits behind it; in
//! place when it is light (a batch of one or two envelopes), and on a single-threaded
//! runtime, where there is no other worker to protect and where a deterministic
//! simulation must not depend on an operating-system thread's timing.
//!
//! Bulk work (large batches) also takes turns for all cores but one, process-wide:
//! three 512-envelope batches verified at once on a two-core machine left a FLASH
//! batch's check, the store's writer and the network a third of a core each, and a
//! FLASH that arrived just after a peer came back waited 100-200 ms for CPU.

use std::sync::OnceLock;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// A batch body above this many bytes is bulk work (an express batch of 32 envelopes
/// of 1 KiB is about 60 KiB; hashing and verifying cost grows with the bytes).
pub const BULK_BYTES_MIN: usize = 64 * 1024;

/// A batch body of at most this many bytes is light work: one or two envelopes of
/// 1 KiB to check (about 70 µs each, mostly the signature), or their receipts.
pub const LIGHT_BYTES_MAX: usize = 4 * 1024;

/// How heavy a piece of CPU work is, as its caller can tell from its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Runs in place. Handing it to the blocking pool and back is two thread
    /// wake-ups, which on a busy two-core machine took longer than the work itself
    /// (a FLASH's check, its receipt's signature and that receipt's check each waited
    /// for them).
    Light,
    /// Runs on the blocking pool.
    Heavy,
    /// Runs on the blocking pool, taking turns among bulk work.
    Bulk,
}

/// The weight of checking a batch body of `bytes` (and of signing or checking the
/// receipts that answer it).
pub fn weight_of_batch(bytes: usize) -> Weight {
    if bytes <= LIGHT_BYTES_MAX {
        Weight::Light
    } else if bytes > BULK_BYTES_MIN {
        Weight::Bulk
    } else {
        Weight::Heavy
    }
}

fn multi_threaded() -> bool {
    matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    )
}

/// Runs `f` as its `weight` says: light work and any work on a single-threaded
/// runtime in place, the rest on the blocking pool (bulk work taking turns first).
pub async fn run<T, F>(weight: Weight, f: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if weight == Weight::Light || !multi_threaded() {
        return Ok(f());
    }
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    // The semaphore is never closed; without a permit the work still runs.
    let _turn = match weight {
        Weight::Bulk => TURNS
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
                Semaphore::new(cores.saturating_sub(1).max(1))
            })
            .acquire()
            .await
            .ok(),
        Weight::Light | Weight::Heavy => None,
    };
    tokio::task::spawn_blocking(f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_weighs_by_its_bytes() {
        assert_eq!(weight_of_batch(1_700), Weight::Light);
        assert_eq!(weight_of_batch(LIGHT_BYTES_MAX), Weight::Light);
        assert_eq!(weight_of_batch(LIGHT_BYTES_MAX + 1), Weight::Heavy);
        assert_eq!(weight_of_batch(BULK_BYTES_MIN), Weight::Heavy);
        assert_eq!(weight_of_batch(BULK_BYTES_MIN + 1), Weight::Bulk);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn light_work_runs_in_place_and_the_rest_on_the_blocking_pool() {
        let here = std::thread::current().id();
        let light = run(Weight::Light, move || std::thread::current().id()).await;
        assert_eq!(light.ok(), Some(here));
        for w in [Weight::Heavy, Weight::Bulk] {
            let there = run(w, move || std::thread::current().id()).await;
            assert!(there.is_ok_and(|id| id != here), "{w:?}");
        }
    }
}
