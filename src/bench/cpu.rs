//! CPU time of the processes of a setup, from `/proc/<pid>/stat` (user + system): read around a
//! scenario and divided by its operations, it gives CPU µs per operation per process, which
//! holds steady on a shared, noisy machine where throughput does not.

/// A process of a setup and its part in it (`node1`, `balancer`, `nginx`, `redis`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// What it is in the setup.
    pub role: String,
    /// Its process id.
    pub pid: u32,
}

/// CPU time used so far by each of `processes`, in microseconds (0 for one that is gone or on a
/// system without `/proc`).
pub fn sample(processes: &[Process]) -> Vec<u64> {
    processes.iter().map(|p| cpu_micros(p.pid)).collect()
}

/// The CPU microseconds each process used between two [`sample`]s, per operation, by role, and
/// their sum under `total`.
pub fn per_op(
    processes: &[Process],
    before: &[u64],
    after: &[u64],
    ops: u64,
) -> Vec<(String, f64)> {
    if ops == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, f64)> = processes
        .iter()
        .zip(before.iter().zip(after))
        .map(|(p, (b, a))| (p.role.clone(), a.saturating_sub(*b) as f64 / ops as f64))
        .collect();
    let total = out.iter().map(|(_, us)| us).sum();
    out.push(("total".to_owned(), total));
    out
}

/// User + system CPU time of `pid` in microseconds.
fn cpu_micros(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 1_000_000 / clock_ticks()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_time_of_this_process_is_read() {
        let me = [Process {
            role: "me".into(),
            pid: std::process::id(),
        }];
        let before = sample(&me);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has counted at least 30 ms of CPU (its tick is 10 ms).
        while sample(&me)[0] < before[0] + 30_000 {
            assert!(started.elapsed().as_secs() < 10, "no CPU time counted");
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let after = sample(&me);
        let per = per_op(&me, &before, &after, 10);
        assert_eq!(per[0].0, "me");
        assert!(per[0].1 >= 3_000.0, "{per:?}");
        assert_eq!(per[1], ("total".to_owned(), per[0].1));
    }
}
