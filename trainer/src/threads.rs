//! libtorch's intra-op threads, adapted to the cores other processes leave free.
//!
//! libtorch's OpenMP pool runs one thread per core and its threads spin at the end of every
//! parallel region until the slowest one arrives. When another process takes a core, the thread
//! on that core is descheduled for a whole time slice while its siblings spin, and every op waits
//! for it: on 2 cores, the demo fell from 199 to 48 img/s beside one `yes > /dev/null`, while one
//! thread kept 101 img/s. So a training with `run.threads = 0` on the CPU (the binary's
//! [`crate::Trainer::adapt_threads`]) samples, every couple of seconds, how much CPU time
//! the other processes got ([`CpuSample`]: the busy and stolen time of the CPUs this process may
//! run on, from `/proc/stat`, less this process's own from `/proc/self/stat`), and runs as many intra-op threads as cores
//! remain, at least one and at most libtorch's default. A change takes two samples in a row that
//! agree, so that a passing burst does not flap it.
//!
//! The thread count is process-global (and changes float summation order), so only the binary
//! turns this on; library users and tests keep a fixed count.

use std::time::{Duration, Instant};

/// Seconds between samples.
const INTERVAL: Duration = Duration::from_secs(2);
/// Cores other processes may take before a thread is given up: a core busy a quarter of the
/// time already stalls a spinning pool (a thread there misses one region in four).
const TOLERATED: f64 = 0.25;

/// Cumulative CPU time, in clock ticks: the machine's total and busy time (busy counts time
/// stolen by the hypervisor too) and this process's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuSample {
    /// Every tick of every CPU (`/proc/stat`'s `cpu` line summed).
    pub total: u64,
    /// The ticks not idle and not waiting for I/O.
    pub busy: u64,
    /// This process's user and system ticks (all its threads).
    pub own: u64,
    /// The CPUs `/proc/stat` counts (the host's, in a container that shares its `/proc`).
    pub cpus: usize,
}

impl CpuSample {
    /// The sample now, over the CPUs this process may run on; `None` where `/proc` is not
    /// Linux's.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Self::parse(&stat, &own, allowed_cpus(&status).as_deref())
    }

    /// The sample of `/proc/stat` and `/proc/self/stat` texts, summed over the CPUs in `allowed`
    /// (every CPU when `None`): in a container whose cpuset is a part of a larger host that
    /// shares its `/proc`, work on the other CPUs does not count.
    pub fn parse(stat: &str, self_stat: &str, allowed: Option<&[usize]>) -> Option<Self> {
        let (mut total, mut busy, mut cpus) = (0u64, 0u64, 0usize);
        for line in stat.lines() {
            // cpuN user nice system idle iowait irq softirq steal guest guest_nice
            // (Not the `cpu ` line of the sums: its first field is not a CPU number.)
            let Some(rest) =
                line.strip_prefix("cpu").filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let Some(Ok(n)) = fields.next().map(str::parse::<usize>) else { continue };
            if allowed.is_some_and(|a| !a.contains(&n)) {
                continue;
            }
            let ticks: Vec<u64> = fields.map(str::parse).collect::<Result<_, _>>().ok()?;
            // guest and guest_nice are already counted in user and nice.
            let all: u64 = ticks.iter().take(8).sum();
            let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
            (total, busy, cpus) = (total + all, busy + all.saturating_sub(idle), cpus + 1);
        }
        if cpus == 0 {
            return None;
        }
        // pid (comm) state ppid ...: utime and stime are fields 14 and 15; comm may hold spaces.
        let rest = &self_stat[self_stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Self { total, busy, own: utime + stime, cpus })
    }

    /// Cores the other processes (and the hypervisor) used on average from `earlier` to `self`;
    /// `None` when no time passed.
    pub fn others_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        Some(busy.saturating_sub(own) as f64 / total as f64 * self.cpus as f64)
    }
}

/// The CPUs of `Cpus_allowed_list` in a `/proc/self/status` text (`0-3,8,10-11`).
fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?.trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        if hi < lo || hi - lo > 1 << 16 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    Some(cpus)
}

/// The intra-op threads to run beside `others` cores of other work, on `cpus` cores, at most
/// `max` (libtorch's default: in a container limited to fewer cores than its host shows, the
/// limit).
pub(crate) fn threads_for(others: f64, cpus: usize, max: usize) -> usize {
    let free = cpus as f64 - (others - TOLERATED).max(0.0).ceil();
    (free.max(1.0) as usize).clamp(1, max.max(1))
}

/// Adapts libtorch's intra-op threads while a training runs (see the module's documentation).
#[derive(Debug)]
pub(crate) struct ThreadGovernor {
    max: usize,
    last: CpuSample,
    at: Instant,
    pending: Option<usize>,
}

impl ThreadGovernor {
    /// A governor from now on, starting from libtorch's current thread count as the most it will
    /// run; `None` where `/proc` cannot be read.
    pub fn start() -> Option<Self> {
        let max = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        Some(Self { max, last: CpuSample::now()?, at: Instant::now(), pending: None })
    }

    /// Called after every step: at most every [`INTERVAL`], samples the machine and sets the
    /// thread count when two samples in a row ask for the same new one.
    pub fn tick(&mut self) {
        if self.at.elapsed() < INTERVAL {
            return;
        }
        let Some(now) = CpuSample::now() else { return };
        let others = now.others_since(&self.last);
        (self.last, self.at) = (now, Instant::now());
        let Some(others) = others else { return };
        let want = threads_for(others, now.cpus, self.max);
        let current = usize::try_from(tch::get_num_threads()).unwrap_or(1);
        if let Some(n) = self.settle(want, current) {
            tch::set_num_threads(n as i32);
        }
    }

    /// The thread count to set when `want` differs from `current` for the second sample in a
    /// row; a sample that agrees with `current`, or a different `want`, starts over.
    fn settle(&mut self, want: usize, current: usize) -> Option<usize> {
        if want == current {
            self.pending = None;
            return None;
        }
        if self.pending.replace(want) == Some(want) {
            self.pending = None;
            return Some(want);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  5586984 580550 345964 506808 14846 0 3944 99559 0 0\n\
                        cpu0 2778251 278762 148483 308978 5588 0 316 48701 0 0\n\
                        cpu1 2808732 301788 197481 197829 9258 0 3628 50857 0 0\n\
                        intr 23184403 0 0\n";
    const SELF: &str = "4242 (my (odd) name) R 1 4242 4242 0 -1 4194560 100 0 0 0 \
                        1500 250 0 0 20 0 3 0 12345 1000000 500";

    /// The counters of real `/proc` lines: the per-CPU totals, the idle and iowait ticks left out
    /// of busy, only the allowed CPUs, and the process's user + system ticks found past a command
    /// name holding `)` and spaces.
    #[test]
    fn a_sample_reads_the_machine_and_the_process() {
        let cpu0 = 2778251 + 278762 + 148483 + 308978 + 5588 + 316 + 48701;
        let cpu1 = 2808732 + 301788 + 197481 + 197829 + 9258 + 3628 + 50857;
        let s = CpuSample::parse(STAT, SELF, None).unwrap();
        let busy = cpu0 + cpu1 - 308978 - 5588 - 197829 - 9258;
        assert_eq!(s, CpuSample { total: cpu0 + cpu1, busy, own: 1750, cpus: 2 });
        let s = CpuSample::parse(STAT, SELF, Some(&[1, 5])).unwrap();
        assert_eq!(s, CpuSample { total: cpu1, busy: cpu1 - 197829 - 9258, own: 1750, cpus: 1 });
        assert_eq!(CpuSample::parse(STAT, SELF, Some(&[7])), None, "no allowed CPU listed");
        assert_eq!(CpuSample::parse("intr 1 2\n", SELF, None), None);
        assert_eq!(CpuSample::parse(STAT, "4242 no-paren", None), None);
        // On this machine's own /proc (Linux), the process has used some CPU and the machine more.
        if let Some(s) = CpuSample::now() {
            assert!(s.busy <= s.total && s.own <= s.total && s.cpus >= 1, "{s:?}");
        }
    }

    #[test]
    fn the_allowed_cpus_are_read_from_the_status_list() {
        let status = "Name:\tregioncl\nCpus_allowed:\tff\nCpus_allowed_list:\t0-3,8,10-11\n";
        assert_eq!(allowed_cpus(status), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t5\n"), Some(vec![5]));
        assert_eq!(allowed_cpus("Name:\tx\n"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t3-1\n"), None);
    }

    /// Others' cores are the machine's busy ticks less ours, as a share of all ticks.
    #[test]
    fn others_are_the_busy_time_that_is_not_ours() {
        let a = CpuSample { total: 1000, busy: 400, own: 300, cpus: 2 };
        // 200 more ticks on 2 CPUs (1 s at 100 Hz): 150 busy, 40 of them ours -> 1.1 cores.
        let b = CpuSample { total: 1200, busy: 550, own: 340, cpus: 2 };
        assert!((b.others_since(&a).unwrap() - 1.1).abs() < 1e-12);
        assert_eq!(a.others_since(&a), None, "no time passed");
    }

    /// A core is given up once others take more than a quarter of one; never below one thread,
    /// never above the most.
    #[test]
    fn threads_are_the_cores_others_leave() {
        assert_eq!(threads_for(0.0, 2, 2), 2);
        assert_eq!(threads_for(0.2, 2, 2), 2);
        assert_eq!(threads_for(0.4, 2, 2), 1, "`yes` sharing 2 cores with our 4 threads");
        assert_eq!(threads_for(1.0, 2, 2), 1);
        assert_eq!(threads_for(3.0, 2, 2), 1);
        assert_eq!(threads_for(1.3, 16, 16), 14);
        assert_eq!(threads_for(0.0, 16, 8), 8);
    }

    /// A change needs two samples in a row asking for it; a burst of one sample, or samples that
    /// alternate, change nothing.
    #[test]
    fn a_change_takes_two_samples_that_agree() {
        let mut g = ThreadGovernor {
            max: 2,
            last: CpuSample { total: 0, busy: 0, own: 0, cpus: 2 },
            at: Instant::now(),
            pending: None,
        };
        assert_eq!(g.settle(1, 2), None, "one sample");
        assert_eq!(g.settle(2, 2), None, "the burst passed");
        assert_eq!(g.settle(1, 2), None);
        assert_eq!(g.settle(1, 2), Some(1), "two in a row");
        assert_eq!(g.settle(2, 1), None);
        assert_eq!(g.settle(3, 1), None, "a different count starts over");
        assert_eq!(g.settle(2, 1), None);
        assert_eq!(g.settle(2, 1), Some(2));
    }
}
