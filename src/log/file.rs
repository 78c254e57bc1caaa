//! The durable log in `SWITCHYARD_DATA_DIR` (SPEC §10): an append-only segment format
//! of its own, with the retained events also in memory for serving.
//!
//! ## On disk
//!
//! ```text
//! <dir>/LOCK                          held (flock) by the one process using the folder
//! <dir>/meta.json                     {"format":1,"epoch":"k7Qm2x"}, written once
//! <dir>/segment-00000000000000000001.log   events 1…, then the next segment:
//! <dir>/segment-00000000000000004097.log   its name is the seq of its first event
//! ```
//!
//! A segment is a run of records, `[len: u32 LE][crc32(payload): u32 LE][payload]`, where
//! the payload is the event's JSON envelope exactly as the transports send it
//! (`{"id","topic","type","data","ts"}`): the bytes encoded once for the wire are the
//! bytes stored. At start every segment is read back; each envelope is checked (length,
//! CRC, JSON, contiguous sequence) and encoded again, once. A record cut short or
//! damaged at the **tail of the newest segment** — a torn write, the process killed in
//! the middle of an append — is cut off (the file is truncated there) and never served;
//! damage anywhere else stops the start with the file and offset named.
//!
//! ## Appends and group commit
//!
//! One writer thread owns the files. `append` sends its events to it and waits; the
//! writer takes every append that is waiting (up to [`MAX_GROUP`] events), numbers and
//! encodes them, writes them in one `write`, `fsync`s once (`SWITCHYARD_FSYNC=batch`, the
//! default), and only then hands them to the in-memory log (which wakes the readers) and
//! answers each caller: a `201` means the event is on disk. Under load, one `fsync`
//! covers every append that arrived while the previous one ran. A write or `fsync` that
//! fails answers every caller of the batch `503 log_unavailable`, and the segment is cut
//! back to where the batch began, so nothing unacknowledged is served after a restart
//! either — unless the machine dies between the failed write and the truncation, in which
//! case the unacknowledged tail may come back (an event that was stored but not
//! acknowledged, which a publisher's retry then doubles; SPEC §10 forbids the other way).
//!
//! With `SWITCHYARD_FSYNC=off` the writer does not `fsync`: a `201` event is in the
//! kernel's page cache and survives the process being killed, but not a power cut or a
//! kernel crash (the kernel writes back within about 30 s).
//!
//! ## Retention
//!
//! The in-memory copy is retained as [`MemoryLog`] retains (count, age, bytes). A
//! segment is deleted once every event in it has left retention; the newest segment is
//! never deleted, so the head survives even when every event has aged out. Segments roll
//! at [`SEGMENT_BYTES`], so the folder holds at most the retained events plus one
//! segment.
//!
//! Why not an embedded store (redb, fjall, sled)? The log is append-only, read in order
//! and trimmed from the front: exactly a segment file. A store would add a B-tree or LSM
//! write path (and its own compaction) to give back the same order, and the events would
//! still have to be held in memory encoded for the fan-out. The format above is about 300
//! lines with its recovery, and its fast path is one `write` + one `fsync` per group.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::memory::{MemoryConfig, MemoryLog, encode, new_epoch};
use super::{AppendError, Head, Log, LogCounters, LogStats, ReadError};
use crate::event::{Event, NewEvent};

/// The on-disk format this build reads and writes.
pub const FORMAT: u32 = 1;
/// A segment is closed and a new one started once it is this big.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Most events one group commit writes.
pub const MAX_GROUP: usize = 4096;
/// Appends waiting for the writer; past this, `append` waits for room.
const QUEUE: usize = 1024;
/// Longest record accepted when reading back (an event is at most a few hundred KiB).
const MAX_RECORD: u32 = 16 << 20;
/// Longest the start waits for the data dir's `LOCK` held by another process to be let go
/// (a process that was just killed), before refusing to start.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How the data dir is configured.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The folder.
    pub dir: PathBuf,
    /// `fsync` each group before answering (`SWITCHYARD_FSYNC=batch`).
    pub fsync: bool,
    /// Retention of the events.
    pub retain: MemoryConfig,
    /// A segment is closed once it is this big ([`SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    epoch: String,
}

struct Append {
    events: Vec<NewEvent>,
    done: oneshot::Sender<Result<Vec<Arc<Event>>, AppendError>>,
}

/// The durable log (see the module doc).
pub struct FileLog {
    memory: Arc<MemoryLog>,
    appends: mpsc::Sender<Append>,
    /// Held for the life of the log: the folder's `LOCK`.
    _lock: File,
}

/// What the start found on disk, for the start-up log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    /// Events read back (before retention).
    pub events: u64,
    /// Bytes cut off a torn tail.
    pub cut: u64,
    /// Segments found.
    pub segments: usize,
}

impl FileLog {
    /// Opens (or creates) the log in `config.dir`: `Err` with one line naming the folder
    /// and what is wrong when it cannot be used.
    pub fn open(config: FileConfig) -> Result<(FileLog, Recovered), String> {
        let dir = &config.dir;
        let name =
            |e: &dyn std::fmt::Display| format!("SWITCHYARD_DATA_DIR={}: {e}", dir.display());
        std::fs::create_dir_all(dir)
            .map_err(|e| name(&format!("cannot create the folder ({e})")))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| name(&format!("cannot write in the folder ({e})")))?;
        // A process that was just killed may hold it a moment longer (the kernel lets go
        // of its files as it exits): wait up to LOCK_WAIT before calling it taken.
        let waited = Instant::now();
        let mut locked = lock.try_lock();
        while matches!(locked, Err(std::fs::TryLockError::WouldBlock))
            && waited.elapsed() < LOCK_WAIT
        {
            std::thread::sleep(Duration::from_millis(50));
            locked = lock.try_lock();
        }
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(name(
                    &"another switchyard process is using this folder (it holds LOCK)",
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(name(&format!("cannot lock LOCK ({e})")));
            }
        }
        let epoch = read_or_create_meta(dir).map_err(|e| name(&e))?;
        let mut segments = list_segments(dir).map_err(|e| name(&e))?;
        let mut recovered = Recovered {
            segments: segments.len(),
            ..Recovered::default()
        };
        // Read every segment back, oldest first; the retention limits apply as it goes.
        let mut head = segments
            .last()
            .map_or(0, |(first, _)| first.saturating_sub(1));
        let mut events: Vec<(Instant, Arc<Event>)> = Vec::new();
        let segment_bytes = config.segment_bytes;
        let memory_config = config.retain.clone();
        let memory = Arc::new(MemoryLog::with_epoch(epoch.clone(), 0, memory_config));
        let newest = segments.len().saturating_sub(1);
        let mut expect = segments.first().map_or(1, |(first, _)| *first);
        for (i, (first, path)) in segments.iter().enumerate() {
            if *first != expect {
                return Err(name(&format!(
                    "{} should start at event {expect}: a segment is missing",
                    path.display()
                )));
            }
            let read = read_segment(path, &epoch, expect).map_err(|e| name(&e))?;
            if let Some(bad_at) = read.damaged_at {
                if i != newest {
                    return Err(name(&format!(
                        "{} is damaged at byte {bad_at}; move it away to start without it (later events are kept)",
                        path.display()
                    )));
                }
                let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bad_at);
                recovered.cut = len.saturating_sub(bad_at);
                let file = OpenOptions::new().write(true).open(path).map_err(|e| {
                    name(&format!(
                        "cannot cut the torn tail of {}: {e}",
                        path.display()
                    ))
                })?;
                file.set_len(bad_at)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| {
                        name(&format!(
                            "cannot cut the torn tail of {}: {e}",
                            path.display()
                        ))
                    })?;
                tracing::warn!(
                    segment = %path.display(),
                    at = bad_at,
                    bytes = recovered.cut,
                    "cut a torn write at the tail of the log"
                );
            }
            recovered.events += read.events.len() as u64;
            expect += read.events.len() as u64;
            if let Some((_, last)) = read.events.last() {
                head = last.seq;
            }
            events.extend(read.events);
            // Retention applies as the events come in: memory stays bounded.
            memory.restore(events.drain(..));
        }
        // The memory log was made with head 0: make one with the real head if nothing
        // was retained (every event aged out), so the next event is head + 1.
        let memory = if memory.head() != head {
            Arc::new(MemoryLog::with_epoch(
                epoch.clone(),
                head,
                config.retain.clone(),
            ))
        } else {
            memory
        };
        // Append to the newest segment, or start the first.
        if segments.is_empty() {
            segments.push((head + 1, segment_path(dir, head + 1)));
        }
        let (first, path) = segments
            .last()
            .cloned()
            .unwrap_or((1, segment_path(dir, 1)));
        let file = open_append(&path).map_err(|e| name(&e))?;
        sync_dir(dir).map_err(|e| name(&e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let writer = Writer {
            dir: dir.clone(),
            epoch,
            fsync: config.fsync,
            memory: memory.clone(),
            segments: segments.into_iter().collect(),
            file,
            current_first: first,
            size,
            segment_bytes,
            next_seq: head + 1,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| name(&format!("cannot start the log writer: {e}")))?;
        Ok((
            FileLog {
                memory,
                appends: tx,
                _lock: lock,
            },
            recovered,
        ))
    }

    /// Bytes retained in memory.
    pub fn bytes(&self) -> u64 {
        self.memory.bytes()
    }
}

impl Log for FileLog {
    fn epoch(&self) -> &str {
        self.memory.epoch()
    }

    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, AppendError>> {
        async move {
            let (done, answer) = oneshot::channel();
            self.appends
                .send(Append { events, done })
                .await
                .map_err(|_| AppendError::Unavailable("the log writer has stopped".into()))?;
            answer
                .await
                .map_err(|_| AppendError::Unavailable("the log writer has stopped".into()))?
        }
        .boxed()
    }

    fn read_after(
        &self,
        pos: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, ReadError>> {
        self.memory.read_after(pos, max)
    }

    fn head(&self) -> u64 {
        self.memory.head()
    }

    fn watch(&self) -> Option<watch::Receiver<Head>> {
        self.memory.watch()
    }

    fn close(&self) {
        self.memory.close();
    }

    fn stats(&self) -> LogStats {
        self.memory.stats()
    }

    fn counters(&self) -> &LogCounters {
        self.memory.counters()
    }
}

/// The writer thread's state: the files.
struct Writer {
    dir: PathBuf,
    epoch: String,
    fsync: bool,
    memory: Arc<MemoryLog>,
    /// Every segment: its first seq and path, oldest first (the last is `file`).
    segments: VecDeque<(u64, PathBuf)>,
    file: File,
    current_first: u64,
    size: u64,
    segment_bytes: u64,
    next_seq: u64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Append>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut count = group[0].events.len();
            while count < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => {
                        count += next.events.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, group: Vec<Append>) {
        let received = SystemTime::now();
        let mut seq = self.next_seq;
        let mut encoded: Vec<(Vec<Arc<Event>>, oneshot::Sender<_>)> =
            Vec::with_capacity(group.len());
        let mut buf = Vec::new();
        for append in group {
            let mut events = Vec::with_capacity(append.events.len());
            for new in append.events {
                let event = Arc::new(encode(&self.epoch, seq, new, received));
                seq += 1;
                record(&mut buf, &event.json);
                events.push(event);
            }
            encoded.push((events, append.done));
        }
        let result = self.write(&buf);
        match result {
            Ok(()) => {
                self.next_seq = seq;
                let all: Vec<Arc<Event>> = encoded
                    .iter()
                    .flat_map(|(e, _)| e.iter().cloned())
                    .collect();
                self.memory.insert(&all);
                self.trim();
                for (events, done) in encoded {
                    let _ = done.send(Ok(events));
                }
            }
            Err(e) => {
                self.memory.counters().errors.inc();
                tracing::error!(error = %e, dir = %self.dir.display(), "the log could not store a batch; answering 503");
                for (_, done) in encoded {
                    let _ = done.send(Err(AppendError::Unavailable(e.clone())));
                }
            }
        }
    }

    /// Writes `buf` at the end of the current segment (rolling first if it is full),
    /// and `fsync`s; on failure cuts the segment back to where it was.
    fn write(&mut self, buf: &[u8]) -> Result<(), String> {
        if self.size >= self.segment_bytes {
            self.roll()?;
        }
        let before = self.size;
        let written = self.file.write_all(buf).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(before);
                Err(format!("writing the data dir failed: {e}"))
            }
        }
    }

    fn roll(&mut self) -> Result<(), String> {
        let path = segment_path(&self.dir, self.next_seq);
        let file = open_append(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.current_first = self.next_seq;
        self.size = 0;
        self.segments.push_back((self.next_seq, path));
        Ok(())
    }

    /// Deletes the segments whose every event has left retention.
    fn trim(&mut self) {
        let first_kept = self.memory.first_seq();
        while self.segments.len() > 1 && self.segments.get(1).is_some_and(|(s, _)| *s <= first_kept)
        {
            if let Some((_, path)) = self.segments.pop_front()
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(segment = %path.display(), error = %e, "could not delete a segment that left retention");
            }
        }
    }
}

fn record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("segment-{first:020}.log"))
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for writing: {e}", path.display()))
}

/// Makes a created or renamed file's name durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync the folder: {e}"))
}

fn read_or_create_meta(dir: &Path) -> Result<String, String> {
    let path = dir.join("meta.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let meta: Meta = serde_json::from_slice(&bytes)
                .map_err(|e| format!("meta.json is not a switchyard log's ({e})"))?;
            if meta.format != FORMAT {
                return Err(format!(
                    "the folder holds a log of format {}; this switchyard reads format {FORMAT}",
                    meta.format
                ));
            }
            if meta.epoch.is_empty() || !meta.epoch.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err("meta.json names no valid epoch".into());
            }
            Ok(meta.epoch)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let epoch = new_epoch();
            let tmp = dir.join("meta.json.tmp");
            let body = serde_json::to_vec(&Meta {
                format: FORMAT,
                epoch: epoch.clone(),
            })
            .map_err(|e| e.to_string())?;
            File::create(&tmp)
                .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot write meta.json ({e})"))?;
            sync_dir(dir)?;
            Ok(epoch)
        }
        Err(e) => Err(format!("cannot read meta.json ({e})")),
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list the folder ({e})"))? {
        let entry = entry.map_err(|e| format!("cannot list the folder ({e})"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_prefix("segment-")
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((first.max(1), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

struct Segment {
    events: Vec<(Instant, Arc<Event>)>,
    /// Where the first record that cannot be read starts.
    damaged_at: Option<u64>,
}

#[derive(Deserialize)]
struct Stored {
    id: String,
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    ts: String,
}

/// Reads a segment's records: events from `first` on, and where the readable part ends.
fn read_segment(path: &Path, epoch: &str, first: u64) -> Result<Segment, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {} ({e})", path.display()))?;
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut events = Vec::new();
    let mut at = 0usize;
    let mut seq = first;
    while at < bytes.len() {
        let Some(event) = parse_record(&bytes[at..], epoch, seq) else {
            return Ok(Segment {
                events,
                damaged_at: Some(at as u64),
            });
        };
        let (len, received, event) = event;
        let age = wall.duration_since(received).unwrap_or(Duration::ZERO);
        events.push((now.checked_sub(age).unwrap_or(now), Arc::new(event)));
        at += len;
        seq += 1;
    }
    Ok(Segment {
        events,
        damaged_at: None,
    })
}

/// One record at the start of `bytes`, if it is whole and sound and is event `seq`:
/// its length on disk, when it was received, and the event encoded again.
fn parse_record(bytes: &[u8], epoch: &str, seq: u64) -> Option<(usize, SystemTime, Event)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(8..8 + len as usize)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let stored: Stored = serde_json::from_slice(payload).ok()?;
    let (their_epoch, their_seq) = stored.id.rsplit_once('-')?;
    if their_epoch != epoch || their_seq.parse::<u64>().ok()? != seq {
        return None;
    }
    let received = humantime::parse_rfc3339(&stored.ts).ok()?;
    let new = NewEvent::new(&stored.topic, &stored.kind, stored.data).ok()?;
    let event = encode(epoch, seq, new, received);
    // Encoding again gives the same bytes: what was served before the restart is served after.
    (event.json.as_ref() == payload).then_some((8 + len as usize, received, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> NewEvent {
        NewEvent::new("a", "t", serde_json::json!(n)).expect("valid event")
    }

    fn config(dir: &Path) -> FileConfig {
        FileConfig {
            dir: dir.to_owned(),
            fsync: true,
            retain: MemoryConfig::default(),
            segment_bytes: SEGMENT_BYTES,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn events_epoch_and_head_survive_reopening() {
        let dir = temp("reopen");
        let (log, rec) = FileLog::open(config(&dir)).expect("open");
        assert_eq!(rec.events, 0);
        let epoch = log.epoch().to_owned();
        let stored = log.append((1..=5).map(ev).collect()).await.expect("append");
        assert_eq!(stored.last().map(|e| e.seq), Some(5));
        drop(log);
        let (log, rec) = FileLog::open(config(&dir)).expect("reopen");
        assert_eq!(rec.events, 5);
        assert_eq!(log.epoch(), epoch);
        assert_eq!(log.head(), 5);
        let again = log.read_after(0, 10).await.expect("read");
        let ids: Vec<_> = again.iter().map(|e| e.json.clone()).collect();
        assert_eq!(
            ids,
            stored.iter().map(|e| e.json.clone()).collect::<Vec<_>>(),
            "the same bytes"
        );
        let next = log.append(vec![ev(6)]).await.expect("append");
        assert_eq!(next[0].seq, 6);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_a_second_process_is_refused() {
        let dir = temp("torn");
        let (log, _) = FileLog::open(config(&dir)).expect("open");
        log.append((1..=3).map(ev).collect()).await.expect("append");
        let err = FileLog::open(config(&dir))
            .err()
            .expect("a second open is refused");
        assert!(err.contains("another switchyard process"), "{err}");
        drop(log);
        let segment = segment_path(&dir, 1);
        let whole = std::fs::metadata(&segment).expect("segment").len();
        // Half of a fourth record.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{'])
            .expect("write");
        drop(f);
        let (log, rec) = FileLog::open(config(&dir)).expect("reopen");
        assert_eq!((rec.events, rec.cut), (3, 9));
        assert_eq!(std::fs::metadata(&segment).expect("segment").len(), whole);
        assert_eq!(log.append(vec![ev(4)]).await.expect("append")[0].seq, 4);
        drop(log);
        let (log, _) = FileLog::open(config(&dir)).expect("reopen");
        assert_eq!(log.head(), 4);
        drop(log);
        std::fs::write(dir.join("meta.json"), br#"{"format":99,"epoch":"abc"}"#).expect("meta");
        let err = FileLog::open(config(&dir)).err().expect("another format");
        assert!(err.contains("format 99"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn segments_that_left_retention_are_deleted_and_the_head_stays() {
        let dir = temp("trim");
        let mut c = config(&dir);
        c.retain.retain = 2;
        c.segment_bytes = 1; // every append after the first starts a segment
        let (log, _) = FileLog::open(c.clone()).expect("open");
        for n in 1..=5 {
            log.append(vec![ev(n)]).await.expect("append");
        }
        let segments = || {
            list_segments(&dir)
                .expect("list")
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            segments(),
            [4, 5],
            "segments whose events all left retention are gone"
        );
        drop(log);
        let (log, rec) = FileLog::open(c.clone()).expect("reopen");
        assert_eq!(rec.events, 2);
        assert_eq!(log.stats().retained, 2);
        assert_eq!(log.head(), 5);
        drop(log);
        // Every event aged out: the head (and so every cursor) stays.
        c.retain.retain_age = Duration::ZERO;
        let (log, _) = FileLog::open(c.clone()).expect("reopen");
        assert_eq!(log.head(), 5);
        assert_eq!(log.stats().retained, 0);
        assert_eq!(log.append(vec![ev(6)]).await.expect("append")[0].seq, 6);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
