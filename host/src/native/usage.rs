//! What a container has used, in the units containerd's metrics take
//! (bytes, nanoseconds), from a cgroup's stats or a process's `/proc`.
use libcgroups::stats::Stats;

/// Memory and CPU a container used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use now, bytes.
    pub memory: u64,
    /// The most memory it used at once, bytes (0: not known).
    pub memory_max: u64,
    /// Its memory limit, bytes (0: none known).
    pub memory_limit: u64,
    /// CPU time in all, and in user and kernel mode, nanoseconds.
    pub cpu_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
}

/// How a cgroup hierarchy counts CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuUnits {
    /// cgroup v1: `cpuacct.usage` in nanoseconds, `cpuacct.stat`'s user
    /// and system in clock ticks (USER_HZ).
    V1 { ticks_per_second: u64 },
    /// cgroup v2: `cpu.stat`'s usage, user and system all in microseconds.
    V2,
}

/// Clock ticks per second (USER_HZ) of `/proc` and cgroup v1 figures.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

impl Usage {
    /// From libcgroups' stats of a hierarchy counting CPU in `units`.
    pub fn from_cgroup(s: &Stats, units: CpuUnits) -> Usage {
        let cpu = &s.cpu.usage;
        let (total, user, kernel) = match units {
            CpuUnits::V1 { ticks_per_second } => {
                let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / ticks_per_second.max(1);
                (cpu.usage_total, ns(cpu.usage_user), ns(cpu.usage_kernel))
            }
            CpuUnits::V2 => {
                let ns = |us: u64| us.saturating_mul(1000);
                (ns(cpu.usage_total), ns(cpu.usage_user), ns(cpu.usage_kernel))
            }
        };
        let m = &s.memory.memory;
        Usage { memory: m.usage, memory_max: m.max_usage, memory_limit: m.limit, cpu_ns: total, cpu_user_ns: user, cpu_kernel_ns: kernel }
    }

    /// From `/proc/PID` (a worker process): resident memory, and user and
    /// kernel CPU time.
    pub fn of_process(pid: i32) -> Usage {
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let tick = ticks_per_second();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after "(comm) ": state is 0, utime 11, stime 12.
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
        let ns = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0).saturating_mul(1_000_000_000) / tick;
        let (user, kernel) = (ns(11), ns(12));
        Usage { memory: rss * page, cpu_ns: user + kernel, cpu_user_ns: user, cpu_kernel_ns: kernel, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcgroups::stats::{CpuStats, CpuUsage, MemoryData, MemoryStats};

    fn stats(total: u64, user: u64, kernel: u64) -> Stats {
        Stats {
            cpu: CpuStats { usage: CpuUsage { usage_total: total, usage_user: user, usage_kernel: kernel, ..Default::default() }, ..Default::default() },
            memory: MemoryStats { memory: MemoryData { usage: 5 << 20, max_usage: 9 << 20, limit: 64 << 20, ..Default::default() }, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn cgroup_v2_microseconds_become_nanoseconds() {
        // As libcgroups reads cpu.stat: usage_usec 7730, user_usec 4387, system_usec 3498.
        let u = Usage::from_cgroup(&stats(7730, 4387, 3498), CpuUnits::V2);
        assert_eq!((u.cpu_ns, u.cpu_user_ns, u.cpu_kernel_ns), (7_730_000, 4_387_000, 3_498_000));
        assert_eq!((u.memory, u.memory_max, u.memory_limit), (5 << 20, 9 << 20, 64 << 20));
    }

    #[test]
    fn cgroup_v1_ticks_become_nanoseconds_and_the_total_stays() {
        let u = Usage::from_cgroup(&stats(1_234_567_890, 80, 40), CpuUnits::V1 { ticks_per_second: 100 });
        assert_eq!((u.cpu_ns, u.cpu_user_ns, u.cpu_kernel_ns), (1_234_567_890, 800_000_000, 400_000_000));
    }

    #[test]
    fn a_process_reports_its_own_use() {
        let u = Usage::of_process(std::process::id() as i32);
        assert!(u.memory > 0 && u.cpu_ns == u.cpu_user_ns + u.cpu_kernel_ns, "{u:?}");
    }
}
