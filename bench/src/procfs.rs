//! Memory and CPU figures read from /proc (Linux), for a process tree and for ourselves.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of the times in /proc/<pid>/stat (`USER_HZ`). It is 100 on
/// every Linux architecture that userspace can see (the kernel converts to it).
const USER_HZ: f64 = 100.0;

/// Memory and CPU of a process and its descendants at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TreeSample {
    /// Processes found (the root and its descendants).
    pub processes: u32,
    /// Sum of VmRSS, bytes (shared pages of forked workers are counted once per process).
    pub rss_bytes: u64,
    /// Sum of Pss from smaps_rollup, bytes (shared pages split between their users);
    /// 0 when not readable.
    pub pss_bytes: u64,
    /// User + system CPU seconds of the live processes.
    pub cpu_s: f64,
}

/// The fields of /proc/<pid>/stat after the command name: (ppid, utime + stime ticks).
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn stat_of(pid: u32) -> Option<(u32, u64)> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A `Key:   123 kB` line's value in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `pid` and every descendant, found through the ppid of every process in /proc.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _)) = stat_of(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied().filter(|k| *k != pid));
        }
        i += 1;
    }
    out
}

/// Memory and CPU of `pid` and its descendants; `None` when `pid` does not exist.
pub fn sample_tree(pid: u32) -> Option<TreeSample> {
    stat_of(pid)?;
    let mut s = TreeSample::default();
    for p in tree(pid) {
        let Some((_, ticks)) = stat_of(p) else {
            continue;
        };
        s.processes += 1;
        s.cpu_s += ticks as f64 / USER_HZ;
        if let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) {
            s.rss_bytes += kb_field(&status, "VmRSS:").unwrap_or(0);
        }
        if let Ok(rollup) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            s.pss_bytes += kb_field(&rollup, "Pss:").unwrap_or(0);
        }
    }
    Some(s)
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_s() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
        .map_or(0.0, |(_, ticks)| ticks as f64 / USER_HZ)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_ascii_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let line = "1234 (tokio rt) wo)rker) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat(line), Some((1, 300)));
    }

    #[test]
    fn self_sample() {
        let me = std::process::id();
        let s = sample_tree(me).expect("our own process");
        assert!(s.processes >= 1);
        assert!(s.rss_bytes > 0);
        assert!(loadavg()[0] >= 0.0);
        assert!(self_cpu_s() >= 0.0);
    }

    #[test]
    fn kb_lines() {
        assert_eq!(
            kb_field("Name: x\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
        assert_eq!(kb_field("Name: x\n", "VmRSS:"), None);
    }
}
