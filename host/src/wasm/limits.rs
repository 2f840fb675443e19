//! Per-guest limits: a cap on linear memories plus tables, and a CPU quota
//! enforced on epoch ticks.
use crate::plan::CpuQuota;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes charged per table element (a pointer-sized reference).
pub const TABLE_ELEMENT_BYTES: u64 = 8;

/// Tracks and caps a guest's memories and tables. Growth past the cap
/// fails inside the guest (`memory.grow` returns -1), it never reaches the
/// host allocator.
#[derive(Debug, Default)]
pub struct GuestLimiter {
    cap: Option<u64>,
    memory: u64,
    tables: u64,
    refused: u64,
    meter: Option<Arc<Meter>>,
}

/// Memory use of one guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub table_bytes: u64,
    /// Growth requests that were refused by the cap.
    pub refused: u64,
}

/// Live resource use of a container's guests (one, or an instance per
/// request), readable from other tasks while they run (container stats).
#[derive(Debug, Default)]
pub struct Meter {
    memory: AtomicU64,
    tables: AtomicU64,
    cpu_ns: AtomicU64,
}

impl Meter {
    /// Linear memory plus table bytes the guest holds now.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed) + self.tables.load(Ordering::Relaxed)
    }
    /// CPU time spent running the guest (its polls on executor threads).
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }
    pub(crate) fn add_cpu(&self, ns: u64) {
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl GuestLimiter {
    /// Reports growth to `meter` as well.
    pub fn with_meter(mut self, meter: Arc<Meter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Adds growth to the meter, which sums every live guest charged to
    /// it (an instance per request shares its container's).
    fn publish(&self, memory: u64, tables: u64) {
        if let Some(m) = &self.meter {
            m.memory.fetch_add(memory, Ordering::Relaxed);
            m.tables.fetch_add(tables, Ordering::Relaxed);
        }
    }

    pub fn new(cap: Option<u64>) -> Self {
        GuestLimiter { cap, memory: 0, tables: 0, refused: 0, meter: None }
    }

    pub fn usage(&self) -> Usage {
        Usage { memory_bytes: self.memory, table_bytes: self.tables, refused: self.refused }
    }

    fn admit(&mut self, grow: u64) -> bool {
        let ok = self.cap.is_none_or(|cap| self.memory + self.tables + grow <= cap);
        if !ok {
            self.refused += 1;
            tracing::debug!(cap = self.cap, memory = self.memory, tables = self.tables, grow, "guest growth refused by memory limit");
        }
        ok
    }
}

/// The guest's memory is gone with its store: the meter no longer counts it.
impl Drop for GuestLimiter {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.memory.fetch_sub(self.memory, Ordering::Relaxed);
            m.tables.fetch_sub(self.tables, Ordering::Relaxed);
        }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let grow = desired.saturating_sub(current) as u64;
        if !self.admit(grow) {
            return Ok(false);
        }
        self.memory += grow;
        self.publish(grow, 0);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let grow = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        if !self.admit(grow) {
            return Ok(false);
        }
        self.tables += grow;
        self.publish(0, grow);
        Ok(true)
    }
}

/// CPU quota on epoch ticks: in each period the guest may run `quota`;
/// past that it is parked until the period ends. Time in host calls counts
/// as running (an upper bound, so the guest never gets more than its share).
#[derive(Debug)]
pub struct CpuThrottle {
    quota: Duration,
    period: Duration,
    period_start: Instant,
    used: Duration,
    resumed: Instant,
}

impl CpuThrottle {
    pub fn new(q: CpuQuota) -> Self {
        let now = Instant::now();
        CpuThrottle {
            quota: Duration::from_micros(q.quota_us.max(1)),
            period: Duration::from_micros(q.period_us.max(1000)),
            period_start: now,
            used: Duration::ZERO,
            resumed: now,
        }
    }

    /// Called on each epoch tick. Returns how long to park the guest.
    pub fn on_tick(&mut self, now: Instant) -> Option<Duration> {
        self.used += now.saturating_duration_since(self.resumed);
        self.resumed = now;
        if now.saturating_duration_since(self.period_start) >= self.period {
            self.period_start = now;
            self.used = Duration::ZERO;
            return None;
        }
        if self.used < self.quota {
            return None;
        }
        let park = (self.period_start + self.period).saturating_duration_since(now);
        // The guest resumes when the new period starts.
        self.period_start += self.period;
        self.used = Duration::ZERO;
        self.resumed = now + park;
        Some(park)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_and_tables_share_one_cap() {
        let mut l = GuestLimiter::new(Some(1 << 20));
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(l.table_growing(0, 1000, None).unwrap());
        assert!(!l.memory_growing(512 << 10, 1 << 20, None).unwrap(), "would pass the cap");
        assert!(l.memory_growing(512 << 10, (1 << 20) - 8000 - 8, None).unwrap());
        assert_eq!(l.usage().refused, 1);
        assert_eq!(l.usage().table_bytes, 8000);
        assert!(!l.memory_growing(0, 10, Some(5)).unwrap(), "declared maximum still applies");
        let mut unlimited = GuestLimiter::new(None);
        assert!(unlimited.memory_growing(0, 1 << 32, None).unwrap());
    }

    #[test]
    fn throttle_parks_after_quota() {
        let q = CpuQuota { quota_us: 20_000, period_us: 100_000 };
        let mut t = CpuThrottle::new(q);
        let start = t.resumed;
        assert_eq!(t.on_tick(start + Duration::from_millis(10)), None);
        let park = t.on_tick(start + Duration::from_millis(20)).expect("quota used up");
        assert_eq!(park, Duration::from_millis(80));
        // after parking, a fresh period
        assert_eq!(t.on_tick(start + Duration::from_millis(110)), None);
    }
}
