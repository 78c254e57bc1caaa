//! The event model and its encodings: topics, cursors, the envelope and the wire frames.
//!
//! Pure data: no I/O, no tokio, no protocol library. An [`Event`] is encoded exactly
//! once, when it is published, into the three byte strings the transports send (JSON
//! envelope, SSE frame, WebSocket frame); every subscriber then shares those bytes.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Longest topic name, in bytes (SPEC §1).
pub const MAX_TOPIC_LEN: usize = 200;
/// Longest event `type`, in bytes.
pub const MAX_TYPE_LEN: usize = 100;
/// Most topics one subscription may name.
pub const MAX_TOPICS: usize = 100;

/// A validated topic name: 1–200 characters of `A-Z a-z 0-9 . _ - : /`.
///
/// Cheap to clone (an `Arc<str>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a topic, a type or a cursor was refused. The message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl Topic {
    /// Parses a topic name, refusing anything outside the allowed alphabet and length.
    pub fn parse(s: &str) -> Result<Topic, InvalidInput> {
        if s.is_empty() || s.len() > MAX_TOPIC_LEN {
            return Err(InvalidInput(format!(
                "topic {:?} must be 1 to {MAX_TOPIC_LEN} characters long",
                truncate(s)
            )));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')))
        {
            return Err(InvalidInput(format!(
                "topic {:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ - : /",
                truncate(s)
            )));
        }
        Ok(Topic(Arc::from(s)))
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A set of topics a subscription listens to. Small, sorted, deduplicated.
///
/// A sorted `Vec` beats a hash set for the handful of topics a page subscribes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSet(Vec<Topic>);

impl TopicSet {
    /// Parses the comma-separated `topics` query value (`a,b,c`).
    pub fn parse_list(list: &str) -> Result<TopicSet, InvalidInput> {
        let names: Vec<&str> = list.split(',').collect();
        Self::from_names(names)
    }

    /// Builds a set from individual names, validating each and the count.
    pub fn from_names<I, S>(names: I) -> Result<TopicSet, InvalidInput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut topics = Vec::new();
        for name in names {
            topics.push(Topic::parse(name.as_ref())?);
            if topics.len() > MAX_TOPICS {
                return Err(InvalidInput(format!(
                    "at most {MAX_TOPICS} topics per subscription"
                )));
            }
        }
        topics.sort();
        topics.dedup();
        Ok(TopicSet(topics))
    }

    /// Whether `topic` is in the set.
    pub fn contains(&self, topic: &str) -> bool {
        self.0.binary_search_by(|t| t.as_str().cmp(topic)).is_ok()
    }

    /// Adds every topic of `other`; fails if the union would exceed [`MAX_TOPICS`].
    pub fn extend(&mut self, other: &TopicSet) -> Result<(), InvalidInput> {
        let mut all = self.0.clone();
        all.extend(other.0.iter().cloned());
        all.sort();
        all.dedup();
        if all.len() > MAX_TOPICS {
            return Err(InvalidInput(format!(
                "at most {MAX_TOPICS} topics per subscription"
            )));
        }
        self.0 = all;
        Ok(())
    }

    /// Removes every topic of `other`.
    pub fn remove(&mut self, other: &TopicSet) {
        self.0.retain(|t| !other.0.contains(t));
    }

    /// The topics, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Topic> {
        self.0.iter()
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for TopicSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Most patterns in a token's `topics` or in `SWITCHYARD_PUBLIC_TOPICS`.
pub const MAX_PATTERNS: usize = 1000;

/// Topic patterns: a topic name, or a prefix ending in `*` (`projects/*`; `*` alone is
/// every topic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Patterns {
    /// Every topic.
    pub fn all() -> Patterns {
        Patterns {
            exact: Vec::new(),
            prefixes: vec![String::new()],
        }
    }

    /// Parses patterns, each a topic name or a prefix ending in `*`.
    pub fn parse<I, S>(patterns: I) -> Result<Patterns, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Patterns::default();
        for (i, p) in patterns.into_iter().enumerate() {
            let p = p.as_ref().trim();
            if i >= MAX_PATTERNS {
                return Err(format!("at most {MAX_PATTERNS} topic patterns"));
            }
            let (stem, prefix) = match p.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (p, false),
            };
            let valid = stem.len() <= MAX_TOPIC_LEN
                && stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
            if !valid || (!prefix && stem.is_empty()) {
                return Err(format!(
                    "topic pattern {:?} must be a topic name or a prefix ending in * (projects/*, or * for every topic)",
                    p.chars().take(40).collect::<String>()
                ));
            }
            if prefix {
                out.prefixes.push(stem.to_owned());
            } else {
                out.exact.push(stem.to_owned());
            }
        }
        Ok(out)
    }

    /// Parses a comma-separated list (`SWITCHYARD_PUBLIC_TOPICS`); empty is none.
    pub fn parse_list(list: &str) -> Result<Patterns, String> {
        if list.trim().is_empty() {
            return Ok(Patterns::default());
        }
        Patterns::parse(list.split(','))
    }

    /// Whether `topic` matches one of the patterns.
    pub fn matches(&self, topic: &str) -> bool {
        self.exact.iter().any(|e| e == topic)
            || self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }

    /// Whether every topic matches (`*`).
    pub fn is_all(&self) -> bool {
        self.prefixes.iter().any(String::is_empty)
    }

    /// Whether no topic matches.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

impl std::fmt::Display for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self
            .exact
            .iter()
            .cloned()
            .chain(self.prefixes.iter().map(|p| format!("{p}*")))
            .collect();
        f.write_str(&all.join(","))
    }
}

/// A position in the log: the epoch of the log and a sequence number.
///
/// Printed as `<epoch>-<seq>` (e.g. `k7Qm2x-1042`). Sequence 0 means "before the first
/// event". Clients treat the string as opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The log's epoch, chosen at random when the log was created.
    pub epoch: Arc<str>,
    /// The sequence number of the last event this cursor has seen.
    pub seq: u64,
}

/// Longest cursor string accepted from a client.
pub const MAX_CURSOR_LEN: usize = 64;

impl Cursor {
    /// Parses `<epoch>-<seq>`; the epoch is 1–32 alphanumerics, the sequence a `u64`.
    pub fn parse(s: &str) -> Result<Cursor, InvalidInput> {
        let invalid = || {
            InvalidInput(format!(
                "cursor {:?} is malformed: pass back a cursor exactly as the server gave it \
                 (an event `id` or a `cursor` field), or omit it to start from now",
                truncate(s)
            ))
        };
        if s.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let (epoch, seq) = s.rsplit_once('-').ok_or_else(invalid)?;
        if epoch.is_empty() || epoch.len() > 32 || !epoch.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(invalid());
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let seq = seq.parse().map_err(|_| invalid())?;
        Ok(Cursor {
            epoch: Arc::from(epoch),
            seq,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// A published event with its encodings. Shared as `Arc<Event>` by every subscriber.
#[derive(Debug)]
pub struct Event {
    /// Position in the log.
    pub seq: u64,
    /// The topic it was published to.
    pub topic: Topic,
    /// The cursor string (`id` in the envelope).
    pub id: Box<str>,
    /// The JSON envelope: `{"id","topic","type","data","ts"}`.
    pub json: Bytes,
    /// The SSE frame: `id: <cursor>\ndata: <envelope>\n\n`.
    pub sse: Bytes,
    /// The whole WebSocket frame as a server sends it (RFC 6455 §5.2: final, text,
    /// unmasked, its length) of the message `{"op":"event",<envelope fields>}`, for
    /// writing straight onto a socket.
    pub ws_frame: Bytes,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    topic: &'a Topic,
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a serde_json::Value,
    ts: &'a str,
}

impl Event {
    /// Encodes an event once into all its wire forms.
    pub fn encode(
        epoch: &str,
        seq: u64,
        topic: Topic,
        kind: &str,
        data: &serde_json::Value,
        received: SystemTime,
    ) -> Event {
        let id = format!("{epoch}-{seq}");
        let ts = humantime::format_rfc3339_millis(received).to_string();
        let envelope = Envelope {
            id: &id,
            topic: &topic,
            kind,
            data,
            ts: &ts,
        };
        // Serialising a struct of strings and a `Value` cannot fail; compact output has
        // no raw newlines (JSON escapes them inside strings), so it fits one `data:` line.
        let json = serde_json::to_string(&envelope).unwrap_or_else(|_| String::from("{}"));
        let sse = format!("id: {id}\ndata: {json}\n\n");
        let ws = format!("{{\"op\":\"event\",{}", &json[1..]);
        Event {
            seq,
            topic,
            id: id.into_boxed_str(),
            json: Bytes::from(json),
            sse: Bytes::from(sse),
            ws_frame: ws_text_frame(ws.as_bytes()),
        }
    }
}

/// A final, unmasked WebSocket text frame (RFC 6455 §5.2) of `payload`: `FIN` + text
/// opcode, then the length in the shortest of its three encodings, then the payload.
pub fn ws_text_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x81);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// The payload of a frame made by [`ws_text_frame`].
pub fn ws_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// An event as a publisher hands it in, already validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Target topic.
    pub topic: Topic,
    /// Event type, 1–100 printable characters.
    pub kind: String,
    /// Any JSON value.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// Validates the parts of an event a publisher sent.
    pub fn new(topic: &str, kind: &str, data: serde_json::Value) -> Result<NewEvent, InvalidInput> {
        let topic = Topic::parse(topic)?;
        if kind.is_empty() || kind.len() > MAX_TYPE_LEN {
            return Err(InvalidInput(format!(
                "type {:?} must be 1 to {MAX_TYPE_LEN} characters long",
                truncate(kind)
            )));
        }
        if kind.chars().any(char::is_control) {
            return Err(InvalidInput(format!(
                "type {:?} must not contain control characters",
                truncate(kind)
            )));
        }
        Ok(NewEvent {
            topic,
            kind: kind.to_owned(),
            data,
        })
    }
}

/// Shortens client input quoted back in an error message.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_alphabet() {
        assert!(Topic::parse("projects/42").is_ok());
        assert!(Topic::parse("notifications/user-7:a_b.c").is_ok());
        assert!(Topic::parse("").is_err());
        assert!(Topic::parse("a b").is_err());
        assert!(Topic::parse("é").is_err());
        assert!(Topic::parse(&"a".repeat(200)).is_ok());
        assert!(Topic::parse(&"a".repeat(201)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor::parse("k7Qm2x-1042").expect("valid");
        assert_eq!(c.seq, 1042);
        assert_eq!(c.to_string(), "k7Qm2x-1042");
        for bad in [
            "",
            "abc",
            "-1",
            "abc-",
            "ab c-1",
            "abc-1x",
            "abc-99999999999999999999999",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn one_encoding_for_every_transport() {
        let topic = Topic::parse("t").expect("topic");
        let data = serde_json::json!({"text": "two\nlines"});
        let ev = Event::encode("ep", 7, topic, "x.y", &data, SystemTime::UNIX_EPOCH);
        let json = std::str::from_utf8(&ev.json).expect("utf8");
        assert_eq!(
            json,
            r#"{"id":"ep-7","topic":"t","type":"x.y","data":{"text":"two\nlines"},"ts":"1970-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(ev.sse, format!("id: ep-7\ndata: {json}\n\n"));
        assert_eq!(
            ws_payload(&ev.ws_frame),
            format!("{{\"op\":\"event\",{}", &json[1..]).as_bytes()
        );
    }

    /// The frame written straight to sockets: final, text, unmasked, with each of the
    /// three length encodings.
    #[test]
    fn ws_frames_carry_their_length() {
        for (len, header) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![b'x'; len];
            let frame = ws_text_frame(&payload);
            assert_eq!(frame[..header.len()], header, "length {len}");
            assert_eq!(frame[header.len()..], payload, "length {len}");
            assert_eq!(ws_payload(&frame), payload, "length {len}");
        }
    }
}
