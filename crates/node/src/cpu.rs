//! Where CPU-heavy work (hashing and signing whole batches) runs: on tokio's blocking
//! pool when the runtime has several workers, so a FLASH never waits behind it; inline
//! on a single-threaded runtime, where there is no other worker to protect and where a
//! deterministic simulation must not depend on an operating-system thread's timing.
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

/// Whether checking a batch body of `bytes` counts as bulk work.
pub fn is_bulk(bytes: usize) -> bool {
    bytes > BULK_BYTES_MIN
}

fn multi_threaded() -> bool {
    matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    )
}

pub async fn run<T, F>(f: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if multi_threaded() {
        tokio::task::spawn_blocking(f).await
    } else {
        Ok(f())
    }
}

/// [`run`], taking a turn among bulk work first when `bulk`.
pub async fn run_as<T, F>(bulk: bool, f: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if !bulk || !multi_threaded() {
        return run(f).await;
    }
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    let turns = TURNS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Semaphore::new(cores.saturating_sub(1).max(1))
    });
    // The semaphore is never closed; without a permit the work still runs.
    let _turn = turns.acquire().await.ok();
    run(f).await
}
