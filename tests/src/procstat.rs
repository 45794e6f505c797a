//! What benchmarks read from /proc to tell their own CPU use from other load: CPU time of
//! processes and of the whole machine, and the pid of the harness's nats-server.

use std::path::Path;
use std::process::Command;

/// Clock ticks per second of /proc's CPU times (USER_HZ; `getconf CLK_TCK`, else Linux's 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of process `pid` (all its threads), in clock ticks; `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // Then field 3 is the state, and utime, stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU ticks of several processes together (those gone count 0).
pub fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// Busy time of the whole machine (all cores), in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct MachineTicks {
    /// The `cpu` line of /proc/stat less idle and iowait.
    pub busy: u64,
    /// Of it, steal: time the hypervisor gave to someone else.
    pub steal: u64,
}

/// With the processes' own times, shows how much other load shared the machine in a window.
pub fn machine_busy_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let busy = total.saturating_sub(*v.get(3)?).saturating_sub(*v.get(4)?);
    Some(MachineTicks {
        busy,
        steal: *v.get(7)?,
    })
}

/// The nats-server process started on `conf` (the harness does not expose its pid).
pub fn find_server_pid(conf: &Path) -> Option<u32> {
    let wanted = conf.display().to_string();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_server = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).ends_with("nats-server"));
        let has_conf = args.contains(&wanted.as_bytes());
        (is_server && has_conf).then_some(pid)
    })
}
