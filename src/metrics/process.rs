//! Process metrics with the names every Prometheus client library uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …),
//! read from `/proc/self` at each scrape. On a system without `/proc` they are left out.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, which the Linux ABI fixes at
/// 100 for every architecture switchyard runs on).
const USER_HZ: f64 = 100.0;

/// The collector; registered once, in an unprefixed registry.
#[derive(Debug)]
pub struct ProcessCollector {
    start_time: f64,
}

impl ProcessCollector {
    /// A collector for this process, started about now.
    pub fn new() -> ProcessCollector {
        ProcessCollector {
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

/// What `/proc/self` says now.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    threads: Option<i64>,
}

/// User plus system CPU seconds from the text of `/proc/<pid>/stat`: fields 14 and 15,
/// counted after the `)` that ends the command name (which may hold spaces).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")" come field 3 (state) onwards: utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmSize`), in bytes; or `Threads`.
fn status_field(status: &str, name: &str) -> Option<i64> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .trim();
    match value.strip_suffix("kB") {
        Some(kib) => kib.trim().parse::<i64>().ok().map(|k| k * 1024),
        None => value.parse().ok(),
    }
}

fn read() -> Reading {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Reading {
        cpu_seconds: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(cpu_seconds),
        resident_bytes: status_field(&status, "VmRSS"),
        virtual_bytes: status_field(&status, "VmSize"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as i64),
        threads: status_field(&status, "Threads"),
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<i64>,
) -> Result<(), std::fmt::Error> {
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = read();
        if let Some(cpu) = now.cpu_seconds {
            let metric = ConstCounter::new(cpu);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            now.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            now.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            now.open_fds,
        )?;
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .and_then(|(soft, _)| i64::try_from(soft).ok());
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process",
            now.threads,
        )?;
        let start = ConstGauge::new(self.start_time);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            None,
            start.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat =
            "4242 (switch yard) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 6 0 1 2 3";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        let status = "Name:\tswitchyard\nVmSize:\t  10000 kB\nVmRSS:\t    2048 kB\nThreads:\t6\n";
        assert_eq!(status_field(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(status_field(status, "VmSize"), Some(10000 * 1024));
        assert_eq!(status_field(status, "Threads"), Some(6));
        assert_eq!(status_field(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_read() {
        let now = read();
        assert!(now.resident_bytes.is_some_and(|b| b > 0), "{now:?}");
        assert!(now.open_fds.is_some_and(|n| n > 0), "{now:?}");
        assert!(now.cpu_seconds.is_some(), "{now:?}");
    }
}
