//! Clocks a node can run on: the system's, or a scenario's clock that starts at a
//! chosen instant and runs N times faster. Everything that needs `now` asks a `Clock`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
    /// How many clock milliseconds pass per real millisecond.
    fn speed(&self) -> f64 {
        1.0
    }
    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }
    /// Real time to wait for `clock_ms` of this clock to pass.
    fn real_duration(&self, clock_ms: i64) -> Duration {
        let ms = (clock_ms.max(0) as f64 / self.speed().max(1e-9)).ceil();
        Duration::from_millis(ms.min(3_600_000.0) as u64)
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Starts at `origin` and runs `speed` times faster than real time.
#[derive(Debug)]
pub struct ScenarioClock {
    origin: Timestamp,
    started: Instant,
    speed: f64,
}

impl ScenarioClock {
    pub fn new(origin: Timestamp, speed: f64) -> Self {
        Self {
            origin,
            started: Instant::now(),
            speed: speed.max(0.0),
        }
    }
}

impl Clock for ScenarioClock {
    fn now(&self) -> Timestamp {
        let real = self.started.elapsed().as_secs_f64();
        let elapsed = SignedDuration::from_secs_f64(real * self.speed);
        self.origin.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
    fn speed(&self) -> f64 {
        self.speed
    }
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn new(t: Timestamp) -> Self {
        Self(std::sync::Mutex::new(t))
    }
    pub fn set(&self, t: Timestamp) {
        if let Ok(mut g) = self.0.lock() {
            *g = t;
        }
    }
    pub fn advance_ms(&self, ms: i64) {
        if let Ok(mut g) = self.0.lock() {
            *g = g.checked_add(SignedDuration::from_millis(ms)).unwrap_or(*g);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0.lock().map(|g| *g).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}
