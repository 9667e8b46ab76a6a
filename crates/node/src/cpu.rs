//! Where CPU-heavy work (hashing and signing whole batches) runs: on tokio's blocking
//! pool when the runtime has several workers, so a FLASH never waits behind it; inline
//! on a single-threaded runtime, where there is no other worker to protect and where a
//! deterministic simulation must not depend on an operating-system thread's timing.

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinError;

pub async fn run<T, F>(f: F) -> Result<T, JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::spawn_blocking(f).await,
        _ => Ok(f()),
    }
}
