//! CPU utilisation from `/proc/stat`: a pure parser of its text and the busy-core count between
//! two snapshots, which is what the CPU power estimate multiplies by watts per busy core.

/// Cumulative CPU time since boot, in USER_HZ ticks, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time doing anything but idling or waiting for I/O.
    pub busy_ticks: u64,
    /// All time, busy or not.
    pub total_ticks: u64,
}

/// One `/proc/stat` snapshot: the machine-wide times and how many CPUs it counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub cpus: usize,
    pub times: CpuTimes,
}

/// Parses `/proc/stat`. The aggregate `cpu` line's fields are user nice system idle iowait irq
/// softirq steal guest guest_nice; guest time is already inside user/nice, so it is not added
/// again, and iowait counts as idle (a core waiting on the disk draws idle power).
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, String> {
    let mut times = None;
    let mut cpus = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => times = Some(parse_cpu_fields(words)?),
            Some(w) if w.starts_with("cpu") && w[3..].parse::<u32>().is_ok() => cpus += 1,
            _ => {}
        }
    }
    let times = times.ok_or("/proc/stat has no aggregate `cpu` line")?;
    Ok(ProcStat {
        cpus: cpus.max(1),
        times,
    })
}

fn parse_cpu_fields<'a>(words: impl Iterator<Item = &'a str>) -> Result<CpuTimes, String> {
    let fields: Vec<u64> = words
        .take(8) // user..steal; guest and guest_nice are inside user and nice
        .map(|w| {
            w.parse()
                .map_err(|_| format!("/proc/stat: bad cpu field `{w}`"))
        })
        .collect::<Result<_, _>>()?;
    if fields.len() < 4 {
        return Err("/proc/stat: the `cpu` line has fewer than 4 fields".into());
    }
    let total_ticks: u64 = fields.iter().sum();
    let idle_ticks = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy_ticks: total_ticks - idle_ticks,
        total_ticks,
    })
}

/// This process's CPU time (user + system, all threads) in USER_HZ ticks, from the text of
/// `/proc/self/stat`. Fields after the command name (which may hold spaces and parentheses,
/// hence the last `)`) start at field 3; utime and stime are fields 14 and 15.
pub fn parse_self_stat_ticks(text: &str) -> Result<u64, String> {
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or("/proc/self/stat: no `)` after the command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let w = fields
            .get(n - 3)
            .ok_or(format!("/proc/self/stat: no field {n}"))?;
        w.parse()
            .map_err(|_| format!("/proc/self/stat: bad field {n} `{w}`"))
    };
    Ok(field(14)? + field(15)?)
}

/// How many cores were busy on average between two snapshots (0 ..= `now.cpus`). Counters that
/// went backwards (CPU hot-unplug) or an empty interval give 0 rather than nonsense.
pub fn busy_cores(prev: &ProcStat, now: &ProcStat) -> f64 {
    let total = now.times.total_ticks.saturating_sub(prev.times.total_ticks);
    let busy = now.times.busy_ticks.saturating_sub(prev.times.busy_ticks);
    if total == 0 {
        return 0.0;
    }
    let fraction = (busy as f64 / total as f64).clamp(0.0, 1.0);
    fraction * now.cpus as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "\
cpu  100 10 50 800 40 0 0 0 7 0
cpu0 50 5 25 400 20 0 0 0 7 0
cpu1 50 5 25 400 20 0 0 0 0 0
intr 12345 0 0
ctxt 999
btime 1700000000
";

    // 200 ticks later: 150 busy (user 100 + system 50), 50 idle.
    const STAT_B: &str = "\
cpu  200 10 100 850 40 0 0 0 9 0
cpu0 100 5 50 425 20 0 0 0 9 0
cpu1 100 5 50 425 20 0 0 0 0 0
";

    #[test]
    fn the_aggregate_line_and_cpu_count_are_parsed() {
        let s = parse_proc_stat(STAT_A).unwrap();
        assert_eq!(s.cpus, 2);
        // total = 100+10+50+800+40 = 1000 (guest 7 not added again); idle = 800+40.
        assert_eq!(
            s.times,
            CpuTimes {
                busy_ticks: 160,
                total_ticks: 1000
            }
        );
    }

    #[test]
    fn busy_cores_come_from_deltas() {
        let (a, b) = (
            parse_proc_stat(STAT_A).unwrap(),
            parse_proc_stat(STAT_B).unwrap(),
        );
        // 150 of 200 ticks busy on 2 CPUs = 1.5 busy cores.
        assert!((busy_cores(&a, &b) - 1.5).abs() < 1e-12);
        assert_eq!(busy_cores(&b, &b), 0.0);
        assert_eq!(busy_cores(&b, &a), 0.0, "backwards counters give 0");
        // From the zero snapshot: the average since boot.
        assert!((busy_cores(&ProcStat::default(), &a) - 0.32).abs() < 1e-12);
    }

    #[test]
    fn old_kernels_with_four_fields_parse() {
        let s = parse_proc_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            s.times,
            CpuTimes {
                busy_ticks: 6,
                total_ticks: 10
            }
        );
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(parse_proc_stat("intr 1 2\n").is_err());
        assert!(parse_proc_stat("cpu 1 x 3 4\n").is_err());
        assert!(parse_proc_stat("cpu 1 2\n").is_err());
    }

    #[test]
    fn process_ticks_are_utime_plus_stime_even_with_odd_command_names() {
        let text = "4242 (grid serve) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_self_stat_ticks(text), Ok(1801));
        assert!(parse_self_stat_ticks("4242 (x) S 1 2").is_err());
        let mine = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_self_stat_ticks(&mine).is_ok());
    }
}
