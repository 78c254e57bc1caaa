//! Subscriber pools: the subscribers of this process, or child processes each running
//! a share of them (JSON lines on their stdout, "stop" on their stdin).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::Error;
use crate::args::Args;
use crate::procfs;
use crate::sub::{SubConfig, subscriber};
use crate::track::{PoolResult, Shared, Snapshot};

/// The subscribers of this process.
pub struct LocalPool {
    /// Their counters.
    pub shared: Arc<Shared>,
    /// Subscribers to open.
    pub subscribers: u64,
    spawner: JoinHandle<()>,
}

impl LocalPool {
    /// Starts opening `subscribers` subscribers at `ramp_per_sec` (0 = at once), at most
    /// `max_pending` handshakes at a time.
    pub fn start(
        cfg: SubConfig,
        subscribers: u64,
        ramp_per_sec: u64,
        max_pending: usize,
    ) -> LocalPool {
        let shared = Arc::new(Shared::new());
        let cfg = Arc::new(cfg);
        let sh = shared.clone();
        let spawner = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every subscriber.
            let mut set = JoinSet::new();
            let slots = Arc::new(Semaphore::new(max_pending.max(1)));
            let start = Instant::now();
            for i in 0..subscribers {
                if ramp_per_sec > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / ramp_per_sec as f64);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due).await;
                    }
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                set.spawn(subscriber(cfg.clone(), sh.clone(), permit));
                while set.try_join_next().is_some() {}
            }
            while set.join_next().await.is_some() {}
            std::future::pending::<()>().await;
        });
        LocalPool {
            shared,
            subscribers,
            spawner,
        }
    }

    /// The counters now, with this process's CPU time.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.shared.snapshot();
        s.cpu_s = procfs::self_cpu_s();
        s
    }

    /// Closes every subscriber and returns the figures.
    pub async fn stop(self) -> PoolResult {
        self.spawner.abort();
        let _ = self.spawner.await;
        self.shared.result(procfs::self_cpu_s())
    }
}

/// A message from a child on its stdout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildMsg {
    /// Counters so far (every 250 ms).
    Progress(Snapshot),
    /// The final figures, after "stop".
    Result(PoolResult),
}

struct ChildProc {
    process: Child,
    stdin: Option<ChildStdin>,
    subscribers: u64,
    latest: Arc<Mutex<Snapshot>>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    result: Option<oneshot::Receiver<PoolResult>>,
}

/// Subscribers spread over child processes.
pub struct RemotePool {
    children: Vec<ChildProc>,
}

impl RemotePool {
    /// Re-executes this program `procs` times with a share of the subscribers each; on a
    /// loopback server child i binds its sockets to 127.0.0.(2 + i).
    pub fn spawn(
        args: &Args,
        procs: u32,
        topic: &str,
        loopback: bool,
    ) -> Result<RemotePool, Error> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::new(format!("cannot find this program to re-execute: {e}")))?;
        let mut children = Vec::new();
        let p = u64::from(procs);
        let urls = args.urls();
        for i in 0..procs {
            // Child i connects to the i-th URL, round robin (sub_config checked there is one).
            let url = urls
                .get(i as usize % urls.len().max(1))
                .copied()
                .unwrap_or(&args.url);
            let share = args.subscribers / p + u64::from(u64::from(i) < args.subscribers % p);
            let ramp = args.ramp_per_sec.div_ceil(p);
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("--child")
                .args(["--url", url])
                .args(["--server", args.server.name()])
                .args(["--transport", args.transport.name()])
                .args(["--subscribers", &share.to_string()])
                .args(["--ramp-per-sec", &ramp.to_string()])
                .args(["--max-pending", &args.max_pending.to_string()])
                .args(["--events", &args.events.to_string()])
                .args(["--topic", topic])
                .args(["--connect-timeout", &args.connect_timeout.to_string()])
                .args(["--poll-timeout", &args.poll_timeout.to_string()])
                .args(["--threads", &args.threads.to_string()])
                .args(["--timeout", &args.timeout.to_string()])
                .arg("--quiet");
            if loopback {
                let ip = child_source(i)?;
                cmd.args(["--source-ip", &ip.to_string()]);
            }
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            let mut process = cmd
                .spawn()
                .map_err(|e| Error::new(format!("cannot start child {i}: {e}")))?;
            let stdout = process
                .stdout
                .take()
                .ok_or_else(|| Error::new("child without stdout"))?;
            let latest = Arc::new(Mutex::new(Snapshot::default()));
            let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (tx, rx) = oneshot::channel();
            let (l, x) = (latest.clone(), exited.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut tx = Some(tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<ChildMsg>(&line) {
                        Ok(ChildMsg::Progress(s)) => {
                            if let Ok(mut g) = l.lock() {
                                *g = s;
                            }
                        }
                        Ok(ChildMsg::Result(r)) => {
                            if let Ok(mut g) = l.lock() {
                                *g = r.snapshot;
                            }
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(r);
                            }
                        }
                        Err(e) => {
                            eprintln!("switchyard-bench: child {i}: unreadable line ({e}): {line}")
                        }
                    }
                }
                x.store(true, std::sync::atomic::Ordering::Release);
            });
            children.push(ChildProc {
                stdin: process.stdin.take(),
                process,
                subscribers: share,
                latest,
                exited,
                result: Some(rx),
            });
        }
        Ok(RemotePool { children })
    }

    /// The children's latest counters, summed.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for c in &self.children {
            if let Ok(s) = c.latest.lock() {
                total.merge(&s);
            }
        }
        total
    }

    /// Whether every child has finished its connection attempts (or died).
    pub fn ramp_done(&self) -> bool {
        self.children.iter().all(|c| {
            c.exited.load(std::sync::atomic::Ordering::Acquire)
                || c.latest
                    .lock()
                    .map_or(true, |s| s.attempted >= c.subscribers)
        })
    }

    /// Tells every child to stop, collects their results (a child that died counts its
    /// subscribers that never reported as failed).
    pub async fn stop(mut self) -> Vec<PoolResult> {
        for c in &mut self.children {
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(b"stop\n").await;
                let _ = stdin.flush().await;
            }
        }
        let mut results = Vec::new();
        for (i, c) in self.children.iter_mut().enumerate() {
            let got = match c.result.take() {
                Some(rx) => tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            let r = got.unwrap_or_else(|| {
                let mut snapshot = c.latest.lock().map(|s| *s).unwrap_or_default();
                let missing = c.subscribers.saturating_sub(snapshot.attempted);
                snapshot.failed += missing;
                snapshot.attempted += missing;
                PoolResult {
                    snapshot,
                    hist: Vec::new(),
                    errors: vec![format!(
                        "child {i} gave no result (died or hung); its latencies are lost"
                    )],
                }
            });
            results.push(r);
            if tokio::time::timeout(Duration::from_secs(10), c.process.wait())
                .await
                .is_err()
            {
                let _ = c.process.kill().await;
            }
        }
        results
    }
}

fn child_source(i: u32) -> Result<IpAddr, Error> {
    let host = 2 + i;
    if host > 0x00ff_fffe {
        return Err(Error::new("too many children for 127.0.0.0/8"));
    }
    let [_, b, c, d] = host.to_be_bytes();
    Ok(IpAddr::V4(Ipv4Addr::new(127, b, c, d)))
}

/// A child's main loop: run the share of subscribers, report progress as JSON lines,
/// stop on "stop" (or end of stdin, or the run timeout plus a minute).
pub async fn child_main(cfg: SubConfig, args: &Args) -> Result<(), Error> {
    let pool = LocalPool::start(cfg, args.subscribers, args.ramp_per_sec, args.max_pending);
    let mut out = tokio::io::stdout();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.trim() != "stop" => continue,
                _ => break,
            }
        }
        let _ = stop_tx.send(());
    });
    let give_up = Instant::now() + Duration::from_secs(args.timeout + 60);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            () = tokio::time::sleep_until(give_up) => break,
            _ = tick.tick() => {
                let line = json_line(&ChildMsg::Progress(pool.snapshot()))?;
                if out.write_all(line.as_bytes()).await.is_err() {
                    break; // the parent is gone
                }
                let _ = out.flush().await;
            }
        }
    }
    let result = pool.stop().await;
    let line = json_line(&ChildMsg::Result(result))?;
    out.write_all(line.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

fn json_line(msg: &ChildMsg) -> Result<String, Error> {
    let mut s = serde_json::to_string(msg).map_err(|e| Error::new(format!("encode: {e}")))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_addresses() {
        assert_eq!(
            child_source(0).ok(),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            child_source(254).ok(),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 0)))
        );
    }

    #[test]
    fn messages_round_trip() {
        let line = json_line(&ChildMsg::Progress(Snapshot {
            connected: 3,
            ..Default::default()
        }))
        .expect("encode");
        match serde_json::from_str::<ChildMsg>(&line) {
            Ok(ChildMsg::Progress(s)) => assert_eq!(s.connected, 3),
            other => panic!("{other:?}"),
        }
    }
}
