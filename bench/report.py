#!/usr/bin/env python3
"""Turns a bench/compare.sh results directory into BENCHMARKS.md (standard library only).

    python3 bench/report.py bench/results/2026-11-25            # writes BENCHMARKS.md
    python3 bench/report.py DIR --out /tmp/B.md                  # somewhere else
    python3 bench/report.py DIR1 DIR2      # DIR2's scenarios replace DIR1's runs of them

Reads every run's JSON report (<scenario>.<server>.<rep>.json, plus the background
generator's <...>.bg.json in scale-mixed), the exact commands (<run>.cmd), the machine
(machine.txt) and each scenario's timing (<scenario>.meta). Writes one table per
scenario (median and min-max over the repetitions for both servers, the ratio of the
medians switchyard / Nchan, and the bare fan-out's column where it ran), the targets of
issue 4 with the measured value, and DIR/summary.tsv: one line per run with its main
figures (the part kept in git).

Every figure in the tables and targets comes from those files or is computed from them
(medians, ratios, sums). The only figures typed in are the side measurements quoted in
the "What limits" text (a profile, CPU per delivery over many broadcasts, a layout that
was tried), each with its date and the command that gave it.
"""

import argparse
import json
import os
import re
import statistics
import sys

SERVERS = ("switchyard", "nchan")
# The bare fan-out server (bench/src/bare.rs): the floor, run in the two scale scenarios.
FLOOR = "bare"
# The second peer (bench/socketio/server.js): WebSocket and long-poll scenarios only.
PEER = "socketio"
LABEL = {"switchyard": "switchyard", "nchan": "nginx + Nchan", FLOOR: "bare fan-out (floor)",
         PEER: "Socket.IO 4.8 (Node)"}
LOADS = ["load25-sse", "load50-sse", "load90-sse", "load25-ws", "load50-ws", "load90-ws"]
# switchyard's batch publishing (100 events per request), against Nchan's one per request
# of the like-for-like scenario it is named after: not like for like, reported apart.
BATCH = {"fanout-sse-batch": "fanout-sse", "fanout-ws-batch": "fanout-ws", "longpoll-batch": "longpoll"}
# switchyard with SWITCHYARD_TCP_NODELAY=off (Nagle's algorithm, as Nchan's subscriber
# connections run), against Nchan run again in the same scenario.
NAGLE = {f"{base}-nagle": base for base in ["fanout-sse", "fanout-ws"] + LOADS + ["lowrate"]}
ORDER = (["idle-sse", "idle-ws", "fanout-sse", "fanout-ws", "fanout-sse-16pub", "fanout-ws-16pub"] + LOADS
         + ["longpoll", "lowrate", "scale", "scale-mixed", "scale-100k"] + list(NAGLE) + list(BATCH))
RUN_RE = re.compile(r"^(?P<sc>[a-z0-9-]+)\.(?P<srv>switchyard|nchan|bare|socketio)\.(?P<rep>\d+)(?P<bg>\.bg)?\.json$")
MIB = 1024 * 1024


# ---------------------------------------------------------------- loading


class Run:
    """One repetition: the generator's report (and the background one's in scale-mixed)."""

    def __init__(self, rep, fg, bg, cmd):
        self.rep = rep
        self.fg = fg
        self.bg = bg
        self.cmd = cmd


# The line after which BENCHMARKS.md is written by hand and kept as it is.
KEEP = "<!-- Written by hand below this line; bench/report.py keeps it. -->"


def load(dirpath):
    runs = {}  # (scenario, server) -> {rep: {"fg":..., "bg":...}}
    for name in sorted(os.listdir(dirpath)):
        m = RUN_RE.match(name)
        if not m:
            continue
        with open(os.path.join(dirpath, name)) as f:
            report = json.load(f)
        slot = runs.setdefault((m["sc"], m["srv"]), {}).setdefault(int(m["rep"]), {})
        slot["bg" if m["bg"] else "fg"] = report
    out = {}
    for key, reps in runs.items():
        lst = []
        for rep in sorted(reps):
            d = reps[rep]
            if "fg" not in d:
                continue
            cmd_path = os.path.join(dirpath, f"{key[0]}.{key[1]}.{rep}.cmd")
            cmd = open(cmd_path).read().strip() if os.path.exists(cmd_path) else ""
            lst.append(Run(rep, d["fg"], d.get("bg"), cmd))
        out[key] = lst
    return out


def read_kv(path):
    kv = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                kv[k] = v
    return kv


# ---------------------------------------------------------------- figures


def sf(r, *path):
    """A figure from server_figures (None when the server was not measured)."""
    v = r.get("server_figures")
    for p in path:
        if v is None:
            return None
        v = v.get(p)
    return v


def lat(key):
    return lambda run: run.fg["latency"][key]


def fg(key):
    return lambda run: run.fg[key]


def cpu_per_delivery_us(run):
    """Server CPU from the first publish to the last delivery, per delivery, µs."""
    s = sf(run.fg, "cpu_delivery_s")
    n = run.fg["delivered_unique"]
    return None if s is None or not n else 1e6 * s / n


def cores_busy(run):
    r = run.fg
    w = r["delivery_window_s"]
    s = sf(r, "cpu_delivery_s")
    if not w or s is None:
        return None
    return (s + r["generator_cpu_delivery_s"]) / w


def mixed_total_connected(run):
    return run.fg["connected"] + (run.bg["connected"] if run.bg else 0)


def ws_last_s(run):
    """Send time → receipt by the slowest background (WebSocket) subscriber, seconds."""
    if not run.bg or run.bg.get("unexpected_max_latency_ms") is None or not run.bg["unexpected"]:
        return None
    return run.bg["unexpected_max_latency_ms"] / 1000


def mixed_window(run):
    """Publish → the last subscriber of either transport has the event, seconds."""
    a, b = run.fg["delivery_window_s"], ws_last_s(run)
    return a if b is None else max(a, b)


def mixed_bytes_per_conn(run):
    """(RSS with every connection − RSS of the fresh process) / all connections."""
    if not run.bg:
        return None
    fresh = sf(run.bg, "idle", "rss_bytes")
    full = sf(run.fg, "connected", "rss_bytes")
    n = mixed_total_connected(run)
    if fresh is None or full is None or not n:
        return None
    return (full - fresh) / n


# A metric: (label, function(run) -> number or None, format, note)
def fmt_int(v):
    return f"{v:,.0f}"


def fmt_ms(v):
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def fmt_s(v):
    return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"


def fmt_mib(v):
    return f"{v / MIB:,.1f}"


def fmt_f2(v):
    return f"{v:,.2f}"


CONNECT = [
    ("subscribers connected", fg("connected"), fmt_int),
    ("connect failures", fg("connect_failures"), fmt_int),
]

COMPLETENESS = [
    ("missing deliveries", fg("missing"), fmt_int),
    ("duplicated", fg("duplicated"), fmt_int),
    ("out of order", fg("out_of_order"), fmt_int),
]

IDLE = CONNECT + [
    ("ramp (s)", fg("ramp_s"), fmt_s),
    ("server RSS, fresh (MiB)", lambda r: sf(r.fg, "idle", "rss_bytes"), fmt_mib),
    ("server RSS, all connected (MiB)", lambda r: sf(r.fg, "connected", "rss_bytes"), fmt_mib),
    ("**bytes per connection (RSS)**", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
    ("bytes per connection (Pss)", lambda r: sf(r.fg, "pss_bytes_per_connection"), fmt_int),
    ("server processes", lambda r: sf(r.fg, "connected", "processes"), fmt_int),
    ("server CPU s (ramp + hold)", lambda r: sf(r.fg, "cpu_s"), fmt_f2),
    ("generator CPU s", fg("generator_cpu_s"), fmt_f2),
]

FANOUT = CONNECT + [
    ("**deliveries/s**", fg("deliveries_per_s"), fmt_int),
    ("latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("latency p90 (ms)", lat("p90_ms"), fmt_ms),
    ("latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("latency max (ms)", lat("max_ms"), fmt_ms),
    ("**publishes accepted/s**", fg("publish_rate"), fmt_int),
    ("publish requests", fg("publish_requests"), fmt_int),
    ("publishing took (s)", fg("publish_s"), fmt_s),
    ("first publish → last delivery (s)", fg("delivery_window_s"), fmt_s),
    ("server CPU s in that window", lambda r: sf(r.fg, "cpu_delivery_s"), fmt_f2),
    ("**server CPU per delivery (µs)**", cpu_per_delivery_us, fmt_f2),
    ("generator CPU s in that window", fg("generator_cpu_delivery_s"), fmt_f2),
    ("cores busy (server + generator CPU s / window; of 2; a little high, see note)", cores_busy, fmt_f2),
    ("server RSS bytes per connection", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
] + COMPLETENESS

LOAD = CONNECT + [
    ("offered load (events/s)", fg("rate"), fmt_int),
    ("publishes accepted/s", fg("publish_rate"), fmt_int),
    ("deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("**latency p99 (ms)**", lat("p99_ms"), fmt_ms),
    ("latency max (ms)", lat("max_ms"), fmt_ms),
    ("server CPU s (first publish → last delivery)", lambda r: sf(r.fg, "cpu_delivery_s"), fmt_f2),
    ("**server CPU per delivery (µs)**", cpu_per_delivery_us, fmt_f2),
    ("generator CPU s (same window)", fg("generator_cpu_delivery_s"), fmt_f2),
    ("cores busy (server + generator CPU s / window; of 2)", cores_busy, fmt_f2),
] + COMPLETENESS

LONGPOLL = FANOUT[:-3] + [("long-poll reconnects", fg("reconnects"), fmt_int)] + COMPLETENESS

LOWRATE = CONNECT + [
    ("latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("latency p90 (ms)", lat("p90_ms"), fmt_ms),
    ("**latency p99 (ms)**", lat("p99_ms"), fmt_ms),
    ("latency p99.9 (ms)", lat("p999_ms"), fmt_ms),
    ("latency max (ms)", lat("max_ms"), fmt_ms),
    ("latency mean (ms)", lat("mean_ms"), fmt_ms),
    ("publishes accepted/s", fg("publish_rate"), fmt_int),
    ("server CPU s (publishing 10 s)", lambda r: sf(r.fg, "cpu_delivery_s"), fmt_f2),
    ("generator CPU s (publishing 10 s)", fg("generator_cpu_delivery_s"), fmt_f2),
] + COMPLETENESS

SCALE = CONNECT + [
    ("generator processes", fg("procs"), fmt_int),
    ("ramp (s)", fg("ramp_s"), fmt_s),
    ("**publish → last subscriber has it (s)**", fg("delivery_window_s"), fmt_s),
    ("latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("latency max (ms)", lat("max_ms"), fmt_ms),
    ("server RSS, fresh (MiB)", lambda r: sf(r.fg, "idle", "rss_bytes"), fmt_mib),
    ("**server RSS, all connected (MiB)**", lambda r: sf(r.fg, "connected", "rss_bytes"), fmt_mib),
    ("bytes per connection (RSS)", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
    ("bytes per connection (Pss)", lambda r: sf(r.fg, "pss_bytes_per_connection"), fmt_int),
    ("server CPU s (whole run)", lambda r: sf(r.fg, "cpu_s"), fmt_f2),
    ("server CPU s (the broadcast)", lambda r: sf(r.fg, "cpu_delivery_s"), fmt_f2),
] + COMPLETENESS

MIXED = [
    ("connections (SSE + WebSocket)", mixed_total_connected, fmt_int),
    ("SSE connected", fg("connected"), fmt_int),
    ("WebSocket connected", lambda r: r.bg["connected"] if r.bg else None, fmt_int),
    ("connect failures (both)",
     lambda r: r.fg["connect_failures"] + (r.bg["connect_failures"] if r.bg else 0), fmt_int),
    ("WebSocket subscribers that got the event",
     lambda r: r.bg["unexpected"] if r.bg else None, fmt_int),
    ("**publish → last subscriber (either transport) has it (s)**", mixed_window, fmt_s),
    ("publish → last SSE subscriber has it (s)", fg("delivery_window_s"), fmt_s),
    ("send → last WebSocket subscriber has it (s)", ws_last_s, fmt_s),
    ("SSE latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("SSE latency max (ms)", lat("max_ms"), fmt_ms),
    ("server RSS, fresh (MiB)", lambda r: sf(r.bg, "idle", "rss_bytes") if r.bg else None, fmt_mib),
    ("**server RSS, all connected (MiB)**", lambda r: sf(r.fg, "connected", "rss_bytes"), fmt_mib),
    ("bytes per connection, mixed (RSS)", mixed_bytes_per_conn, fmt_int),
    ("bytes per WebSocket connection (RSS)",
     lambda r: sf(r.bg, "rss_bytes_per_connection") if r.bg else None, fmt_int),
    ("bytes per SSE connection (RSS)", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
    ("SSE missing deliveries", fg("missing"), fmt_int),
]

LOAD_TEXT = ("One publisher, one event per request, at a fixed rate (the offered load row) for "
             "15 s to 1,000 subscribers. A server that answers publishes more slowly than that "
             "holds the publisher back (it waits for each answer), so it is measured at the lower "
             "rate in its \"publishes accepted/s\" row and its latency does not compare. The rate is "
             "a percentage of the events/s Nchan's single publisher "
             "reached in this run's fanout-sse and fanout-ws (their median; `NCHAN_CEILING` in "
             "`bench/compare.sh`). Below the ceiling both servers keep up, so what differs is the "
             "latency (send time → receipt) and the CPU each delivery costs.")

SCENARIOS = {
    "load25-sse": ("Fixed load, SSE: 25 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "load25-ws": ("Fixed load, WebSocket: 25 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "load50-sse": ("Fixed load, SSE: 50 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "load50-ws": ("Fixed load, WebSocket: 50 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "load90-sse": ("Fixed load, SSE: 90 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "load90-ws": ("Fixed load, WebSocket: 90 % of Nchan's single-publisher ceiling, 1,000 subscribers, 15 s", LOAD,
                   LOAD_TEXT),
    "idle-sse": ("Idle memory: 10,000 SSE subscribers", IDLE,
                 "10,000 EventSource subscribers connect (2,000/s), the generator reads the "
                 "server's memory a second after the ramp, holds 2 s and leaves. Bytes per "
                 "connection = (RSS connected − RSS of the fresh process) / connections; Pss "
                 "splits pages shared between nginx's processes."),
    "idle-ws": ("Idle memory: 10,000 WebSocket subscribers", IDLE,
                "As above, over WebSocket."),
    "fanout-sse": ("Fan-out over SSE: 1,000 subscribers × 2,000 events", FANOUT,
                   "2,000 events of 64 bytes published as fast as the server accepts them, one "
                   "event per request and one request at a time on both servers "
                   "(switchyard: `POST /v1/events`; Nchan: `POST /pub/<ch>`), to 1,000 "
                   "subscribers. "
                   "Deliveries/s = deliveries / (first publish → last delivery). "
                   "Publishes accepted/s = events accepted / (first publish → last answer): "
                   "the \"publishing under fan-out\" figure. Latency runs from an event's send "
                   "time to its receipt. Server CPU per delivery = the server's CPU time from the "
                   "first publish to the last delivery / deliveries. Cores busy: the CPU readings "
                   "end when the generator notices the last delivery (it checks every 50 ms), "
                   "so they cover slightly more than the window and the figure is a little high."),
    "fanout-ws": ("Fan-out over WebSocket: 1,000 subscribers × 2,000 events", FANOUT,
                  "As above, over WebSocket."),
    "fanout-sse-16pub": ("Fan-out over SSE with 16 concurrent publishers: 1,000 subscribers × 2,000 events",
                         FANOUT,
                         "As fanout-sse, but 16 publishers, each on its own keep-alive connection "
                         "sending one event per request (publisher k sends events k, k + 16, …; "
                         "the order is checked per publisher). Publishes accepted/s counts all 16."),
    "fanout-ws-16pub": ("Fan-out over WebSocket with 16 concurrent publishers: 1,000 subscribers × 2,000 events",
                        FANOUT, "As above, over WebSocket."),
    "longpoll-batch": ("Batch publishing, long-poll: 1,000 pollers × 1,000 events, 100 per request", LONGPOLL,
                       "switchyard only, not like for like: the longpoll scenario with "
                       "switchyard's batch publishing (100 events per `POST /v1/events`)."),
    "fanout-sse-batch": ("Batch publishing, SSE: 1,000 subscribers × 2,000 events, 100 per request", FANOUT,
                         "switchyard only, not like for like: fanout-sse with switchyard's batch "
                         "publishing (100 events per `POST /v1/events`), a feature Nchan does not "
                         "have. Against Nchan's one event per request see \"Batch publishing\" above."),
    "fanout-ws-batch": ("Batch publishing, WebSocket: 1,000 subscribers × 2,000 events, 100 per request", FANOUT,
                        "As above, over WebSocket."),
    "longpoll": ("Long-poll: 1,000 pollers × 1,000 events", LONGPOLL,
                 "1,000 long-pollers, 1,000 events as fast as possible, one per request on both "
                 "servers. switchyard answers "
                 "with everything after the poller's cursor; Nchan answers one message per "
                 "request (the next one after `If-Modified-Since`/`If-None-Match`)."),
    "lowrate": ("Latency at a low rate: 100 SSE subscribers, 20 events/s for 10 s", LOWRATE,
                "200 events at 20/s, one per request on both servers. Latency = receive "
                "time − send time embedded in the event (one clock)."),
    "scale": ("Scale: 19,000 idle SSE connections, then one event to all", SCALE,
              "19,000 SSE subscribers (two generator processes, source addresses 127.0.0.2 "
              "and 127.0.0.3), then one event: the time from sending the publish until the "
              "last subscriber has it. All SSE, because one generator run speaks one "
              "transport; the mixed case is the next scenario. The last column is the floor: "
              "`switchyard-bare` (`bench/src/bare.rs`), a fan-out that does nothing but one "
              "blocking write per subscriber from two threads and keeps nothing per "
              "connection but the socket, measured by the same generator (Nchan's protocol)."),
    "scale-mixed": ("Scale, mixed: 9,500 WebSocket + 9,500 SSE connections, one event", MIXED,
                    "A background generator holds 9,500 idle WebSocket subscribers (and reads "
                    "the fresh server's memory and its own connections' cost); a second one "
                    "opens 9,500 SSE subscribers on the same topic and publishes one event, "
                    "timing it to the last SSE subscriber; the background generator records "
                    "when the slowest of its WebSocket subscribers got the same event, from "
                    "the send time embedded in it (one clock). The time to the last "
                    "subscriber is the later of the two. The last column is the floor, "
                    "`switchyard-bare`, with the same two generators (its WebSockets get one "
                    "unmasked text frame per event, written like its SSE frames)."),
    "scale-100k": ("Scale: 100,000 SSE connections over 6 processes, then one event", SCALE,
                   "100,000 SSE subscribers opened from this one machine by six generator "
                   "processes, each bound to its own source address (127.0.0.2 … 127.0.0.7: a "
                   "process may hold 20,000 files and an address has ~28,000 local ports), then "
                   "one event to all of them. One server process holds at most ~19,000 "
                   "connections under the 20,000-file limit, so both servers run six: "
                   "switchyard as 6 nodes on one Redis log (`SWITCHYARD_REDIS_URL`, each "
                   "generator process on its own node, the event published on the first, which "
                   "writes it to Redis; every node's reader takes it from there), nginx + Nchan "
                   "with 6 workers (`{{WORKERS}}=6`, `reuseport`). The server figures of "
                   "switchyard are the sum over the 6 nodes and `redis-server`."),
}


for _sc, _base in NAGLE.items():
    _title, _metrics, _text = SCENARIOS[_base]
    SCENARIOS[_sc] = (_title + ", switchyard with SWITCHYARD_TCP_NODELAY=off", _metrics,
                      f"As {_base}, with switchyard started with `SWITCHYARD_TCP_NODELAY=off` (Nagle's "
                      "algorithm, which Nchan's subscriber connections run with: nginx sets "
                      "TCP_NODELAY only on kept-alive connections). Nchan is unchanged, run again "
                      "in this scenario's rotation.")


def values(runs, fn):
    out = []
    for run in runs:
        try:
            v = fn(run)
        except (KeyError, TypeError):
            v = None
        if v is not None:
            out.append(float(v))
    return out


def med(vals):
    return statistics.median(vals) if vals else None


def cell(vals, fmt):
    if not vals:
        return "–"
    m = fmt(statistics.median(vals))
    lo, hi = fmt(min(vals)), fmt(max(vals))
    if len(vals) == 1 or lo == hi:
        return m
    return f"{m} ({lo} – {hi})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    if r is None:
        return "–"
    if r >= 10:
        return f"{r:,.1f}×"
    return f"{r:.2f}×"


def complete_cell(runs):
    if not runs:
        return "–"
    n = sum(1 for r in runs if r.fg["complete"])
    return f"{n}/{len(runs)}"


# ---------------------------------------------------------------- report


def scenario_section(sc, data, lines):
    title, metrics, text = SCENARIOS[sc]
    sy, nc = data.get((sc, "switchyard"), []), data.get((sc, "nchan"), [])
    if not sy and not nc:
        return
    lines.append(f"### {title}")
    lines.append("")
    floor = data.get((sc, FLOOR), [])
    peer = data.get((sc, PEER), [])
    lines.append(text + f" Repetitions: switchyard {len(sy)}, Nchan {len(nc)}"
                 + (f", Socket.IO {len(peer)}" if peer else "")
                 + (f", bare fan-out {len(floor)}." if floor else "."))
    lines.append("")

    def row(label, a, b, ratio_cell, f, p, pr):
        cells = [label, a, b, ratio_cell] + ([p, pr] if peer else []) + ([f] if floor else [])
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")

    row("", "switchyard", "nginx + Nchan", "switchyard / Nchan", LABEL[FLOOR], LABEL[PEER], "switchyard / Socket.IO")
    lines.append("|---|" + "---:|" * (3 + (2 if peer else 0) + (1 if floor else 0)))
    for label, fn, fmt in metrics:
        a, b, p = values(sy, fn), values(nc, fn), values(peer, fn)
        row(label, cell(a, fmt), cell(b, fmt), fmt_ratio(ratio(med(a), med(b))), cell(values(floor, fn), fmt),
            cell(p, fmt), fmt_ratio(ratio(med(a), med(p))))
    if any(r.fg["events"] > 0 for r in sy + nc):
        what = "SSE runs complete" if sc == "scale-mixed" else "runs complete"
        row(f"{what} (every event to every subscriber once, in order)",
            complete_cell(sy), complete_cell(nc), "", complete_cell(floor), complete_cell(peer), "")
    if any(r.fg["timed_out"] for r in sy + nc + floor + peer):
        row("runs that timed out", *(str(sum(r.fg["timed_out"] for r in x)) for x in (sy, nc)), "",
            str(sum(r.fg["timed_out"] for r in floor)), str(sum(r.fg["timed_out"] for r in peer)), "")
    lines.append("")
    errs = sorted({e for r in sy + nc + peer for e in r.fg.get("errors", []) + (r.bg or {}).get("errors", [])})
    if errs:
        lines.append("Errors reported by the generator: " + "; ".join(f"`{e}`" for e in errs[:6]))
        lines.append("")


def m(data, sc, srv, fn):
    return med(values(data.get((sc, srv), []), fn))


def rng(data, sc, srv, fn, fmt):
    return cell(values(data.get((sc, srv), []), fn), fmt)


def all_complete(data, sc, srv):
    runs = data.get((sc, srv), [])
    return bool(runs) and all(r.fg["complete"] for r in runs)


HEADLINES = [
    ("idle-sse", "bytes per idle SSE connection (RSS)", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
    ("idle-ws", "bytes per idle WebSocket connection (RSS)", lambda r: sf(r.fg, "rss_bytes_per_connection"), fmt_int),
    ("fanout-sse", "SSE fan-out, one publisher: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-sse", "SSE fan-out, one publisher: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-sse", "SSE fan-out, one publisher: latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("fanout-sse", "SSE fan-out, one publisher: publishes accepted/s", fg("publish_rate"), fmt_int),
    ("fanout-ws", "WebSocket fan-out, one publisher: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-ws", "WebSocket fan-out, one publisher: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-ws", "WebSocket fan-out, one publisher: latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("fanout-ws", "WebSocket fan-out, one publisher: publishes accepted/s", fg("publish_rate"), fmt_int),
    ("fanout-sse-16pub", "SSE fan-out, 16 publishers: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-sse-16pub", "SSE fan-out, 16 publishers: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-ws-16pub", "WebSocket fan-out, 16 publishers: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-ws-16pub", "WebSocket fan-out, 16 publishers: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
] + [
    (sc, f"{'SSE' if sc.endswith('sse') else 'WebSocket'} at {sc[4:6]} % of Nchan's ceiling: latency p99 (ms)",
     lat("p99_ms"), fmt_ms)
    for sc in LOADS
] + [
    ("longpoll", "long-poll, one publisher: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("lowrate", "20 events/s, latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("lowrate", "20 events/s, latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("scale", "19,000 SSE: publish → last subscriber (s)", fg("delivery_window_s"), fmt_s),
    ("scale", "19,000 SSE: server RSS (MiB)", lambda r: sf(r.fg, "connected", "rss_bytes"), fmt_mib),
    ("scale-mixed", "9,500 WS + 9,500 SSE: publish → last subscriber (s)", mixed_window, fmt_s),
    ("scale-mixed", "9,500 WS + 9,500 SSE: server RSS (MiB)", lambda r: sf(r.fg, "connected", "rss_bytes"), fmt_mib),
]

# The batch table: switchyard's batch scenario against Nchan's like-for-like one.
BATCH_ROWS = [
    ("fanout-sse-batch", "SSE fan-out: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-sse-batch", "SSE fan-out: publishes accepted/s", fg("publish_rate"), fmt_int),
    ("fanout-sse-batch", "SSE fan-out: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-ws-batch", "WebSocket fan-out: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-ws-batch", "WebSocket fan-out: publishes accepted/s", fg("publish_rate"), fmt_int),
    ("fanout-ws-batch", "WebSocket fan-out: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("longpoll-batch", "long-poll: deliveries/s", fg("deliveries_per_s"), fmt_int),
]


NAGLE_ROWS = [
    ("fanout-sse-nagle", "SSE fan-out, one publisher: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-sse-nagle", "SSE fan-out, one publisher: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-sse-nagle", "SSE fan-out, one publisher: latency p99 (ms)", lat("p99_ms"), fmt_ms),
    ("fanout-ws-nagle", "WebSocket fan-out, one publisher: deliveries/s", fg("deliveries_per_s"), fmt_int),
    ("fanout-ws-nagle", "WebSocket fan-out, one publisher: server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    ("fanout-ws-nagle", "WebSocket fan-out, one publisher: latency p99 (ms)", lat("p99_ms"), fmt_ms),
] + [
    row for sc in LOADS for row in (
        (sc + "-nagle", f"{'SSE' if sc.endswith('sse') else 'WebSocket'} at {sc[4:6]} % of Nchan's ceiling: "
         "latency p99 (ms)", lat("p99_ms"), fmt_ms),
        (sc + "-nagle", f"{'SSE' if sc.endswith('sse') else 'WebSocket'} at {sc[4:6]} % of Nchan's ceiling: "
         "server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2),
    )
] + [
    ("lowrate-nagle", "20 events/s, latency p50 (ms)", lat("p50_ms"), fmt_ms),
    ("lowrate-nagle", "20 events/s, latency p99 (ms)", lat("p99_ms"), fmt_ms),
]


def nagle_section(data, lines):
    rows = [r for r in NAGLE_ROWS if data.get((r[0], "switchyard"))]
    if not rows:
        return
    lines.append("## With SWITCHYARD_TCP_NODELAY=off (Nagle's algorithm, as Nchan runs)")
    lines.append("")
    lines.append("switchyard sets TCP_NODELAY on every socket by default: a write leaves at "
                 "once (a busy fan-out gathers several events into one write first, "
                 "`SWITCHYARD_FANOUT_LINGER`). nginx sets it only on kept-alive connections, so "
                 "Nchan's subscriber connections run with Nagle's algorithm: while a write is "
                 "unacknowledged the kernel holds the next small ones and sends them together "
                 "when the ACK comes, so the transmit (and, on loopback, the receiver's TCP "
                 "processing) is done once for several events, and part of it in the ACK's "
                 "context, outside the server's CPU. `perf record` of the two WebSocket "
                 "fan-outs (1,000 subscribers × 2,000 events, 2026-12-04, the build before "
                 "the fan-out's linger, when every event left in a write of its own): switchyard "
                 "(TCP_NODELAY) spends 62% of its samples under `__tcp_push_pending_frames`, "
                 "Nchan 12%; both spend about 88% in the kernel. The same scenarios with "
                 "switchyard on Nagle too, Nchan unchanged, same-run medians:")
    lines.append("")
    lines.append("| | switchyard, TCP_NODELAY off | nginx + Nchan | switchyard / Nchan |")
    lines.append("|---|---:|---:|---:|")
    for sc, label, fn, fmt in rows:
        a, b = values(data.get((sc, "switchyard"), []), fn), values(data.get((sc, "nchan"), []), fn)
        lines.append(f"| {label} | {cell(a, fmt)} | {cell(b, fmt)} | {fmt_ratio(ratio(med(a), med(b)))} |")
    lines.append("")


def kept_up(data, sc, srv):
    """Whether `srv` accepted the offered load of `sc` (95 % or more), None if not run."""
    rate, got = m(data, sc, srv, fg("rate")), m(data, sc, srv, fg("publish_rate"))
    if rate is None or got is None:
        return None
    return got >= 0.95 * rate


def headline_section(data, lines):
    lines.append("## Headline figures (like for like)")
    lines.append("")
    lines.append("Medians (min – max); details per scenario below. Every row publishes the same "
                 "way on both servers: one event per request. Batch publishing, which only "
                 "switchyard has, is in the next table.")
    lines.append("")
    peer = any(srv == PEER for _, srv in data)
    lines.append("| | switchyard | nginx + Nchan | switchyard / Nchan |"
                 + (f" {LABEL[PEER]} | switchyard / Socket.IO |" if peer else ""))
    lines.append("|---|---:|---:|---:|" + ("---:|---:|" if peer else ""))
    for sc, label, fn, fmt in HEADLINES:
        a, b = values(data.get((sc, "switchyard"), []), fn), values(data.get((sc, "nchan"), []), fn)
        if not a and not b:
            continue
        p = values(data.get((sc, PEER), []), fn)
        extra = f" {cell(p, fmt)} | {fmt_ratio(ratio(med(a), med(p)))} |" if peer else ""
        peer_runs = data.get((sc, PEER), [])
        if peer and peer_runs and not all(r.fg["complete"] for r in peer_runs) and p:
            extra = (f" {cell(p, fmt)}, runs complete {complete_cell(peer_runs)} | "
                     f"{fmt_ratio(ratio(med(a), med(p)))} |")
        if sc in LOADS:
            # A server whose publishes fell behind the offered load was measured at a lower
            # one (its publisher waited for each answer): its latency is not comparable.
            behind = {srv: kept_up(data, sc, srv) for srv in ("switchyard", "nchan", PEER)}
            if peer and behind[PEER] is not None and not behind[PEER]:
                extra = f" did not keep up ({fmt_int(m(data, sc, PEER, fg('publish_rate')))}/s accepted) | – |"
        lines.append(f"| {label} | {cell(a, fmt)} | {cell(b, fmt)} | {fmt_ratio(ratio(med(a), med(b)))} |" + extra)
    lines.append("")
    rows = [(sc, label, fn, fmt) for sc, label, fn, fmt in BATCH_ROWS if data.get((sc, "switchyard"))]
    if not rows:
        return
    lines.append("## Batch publishing (switchyard only; not like for like)")
    lines.append("")
    lines.append("switchyard takes up to 1,000 events per `POST /v1/events`; these runs send 100 "
                 "per request. Nchan has no batch publish, so its column is its one-event-per-"
                 "request run of the same scenario in this directory: the ratio says what a "
                 "publisher that can batch gains, not that one server is faster than the other.")
    lines.append("")
    lines.append("| | switchyard, 100 events per request | nginx + Nchan, 1 per request | ratio |")
    lines.append("|---|---:|---:|---:|")
    for sc, label, fn, fmt in rows:
        a, b = values(data.get((sc, "switchyard"), []), fn), values(data.get((BATCH[sc], "nchan"), []), fn)
        lines.append(f"| {label} | {cell(a, fmt)} | {cell(b, fmt)} | {fmt_ratio(ratio(med(a), med(b)))} |")
    lines.append("")


def targets_section(data, lines):
    lines.append("## Targets of issue 4 (medians of the same runs, like for like)")
    lines.append("")
    lines.append("Issue 4 set these when the fan-out figures were taken with batch publishing; "
                 "they are measured here with one event per request on both servers, and the "
                 "batch figure is given beside where it differs.")
    lines.append("")
    rows = []  # (target, measured, verdict)
    missed = []

    # 1. Fan-out ≥ 2× on SSE and WebSocket, nothing lost.
    for sc, name in (("fanout-sse", "SSE"), ("fanout-ws", "WebSocket")):
        a, b = m(data, sc, "switchyard", fg("deliveries_per_s")), m(data, sc, "nchan", fg("deliveries_per_s"))
        r = ratio(a, b)
        if r is None:
            continue
        ok = r >= 2 and all_complete(data, sc, "switchyard")
        comp = complete_cell(data.get((sc, "switchyard"), []))
        measured = f"{fmt_int(a)} vs {fmt_int(b)} deliveries/s = **{fmt_ratio(r)}**; switchyard runs complete {comp}"
        if ok:
            verdict = f"met, {fmt_ratio(r / 2)} the target"
        elif r >= 2:
            verdict = "missed: deliveries lost"
            missed.append(sc)
        else:
            verdict = f"missed by {fmt_int(2 * b - a)} deliveries/s ({fmt_ratio(r)} of 2×)"
            missed.append(sc)
        rows.append((f"fan-out deliveries/s ≥ 2× Nchan's, {name}, nothing lost", measured, verdict))

    # 2. Bytes per idle connection ≤ 0.7× Nchan's.
    bpc = lambda r: sf(r.fg, "rss_bytes_per_connection")  # noqa: E731
    pss = lambda r: sf(r.fg, "pss_bytes_per_connection")  # noqa: E731
    for sc, name in (("idle-sse", "SSE"), ("idle-ws", "WebSocket")):
        a, b = m(data, sc, "switchyard", bpc), m(data, sc, "nchan", bpc)
        r = ratio(a, b)
        if r is None:
            continue
        pa, pb = m(data, sc, "switchyard", pss), m(data, sc, "nchan", pss)
        pr = ratio(pa, pb)
        limit = 0.7 * b
        measured = (f"RSS {fmt_int(a)} B vs {fmt_int(b)} B = **{fmt_ratio(r)}** "
                    f"(Pss {fmt_int(pa) if pa else '–'} vs {fmt_int(pb) if pb else '–'} B = {fmt_ratio(pr)})")
        if r <= 0.7:
            verdict = f"met ({fmt_int(limit - a)} B under 0.7× = {fmt_int(limit)} B)"
        else:
            verdict = (f"missed by {fmt_int(a - limit)} B per connection "
                       f"(0.7× Nchan = {fmt_int(limit)} B; switchyard would need {100 * (a - limit) / a:.0f}% less)")
            missed.append(sc)
        rows.append((f"bytes per idle connection ≤ 0.7× Nchan's, {name}", measured, verdict))

    # 3. Low-rate latency p99 ≤ Nchan's.
    a, b = m(data, "lowrate", "switchyard", lat("p99_ms")), m(data, "lowrate", "nchan", lat("p99_ms"))
    if a is not None and b is not None:
        measured = (f"p99 {fmt_ms(a)} ms vs {fmt_ms(b)} ms = **{fmt_ratio(ratio(a, b))}** (runs: "
                    f"{rng(data, 'lowrate', 'switchyard', lat('p99_ms'), fmt_ms)} vs "
                    f"{rng(data, 'lowrate', 'nchan', lat('p99_ms'), fmt_ms)})")
        va = values(data.get(("lowrate", "switchyard"), []), lat("p99_ms"))
        vb = values(data.get(("lowrate", "nchan"), []), lat("p99_ms"))
        overlap = min(va) <= max(vb) and min(vb) <= max(va)
        tie = "; the two ranges overlap: equal within the run-to-run spread" if overlap else ""
        if a <= b:
            verdict = f"met ({fmt_ms(b - a)} ms lower{tie})"
        else:
            verdict = f"missed by {fmt_ms(a - b)} ms{tie}"
            missed.append("lowrate")
        rows.append(("low-rate latency p99 ≤ Nchan's", measured, verdict))

    # 4. Long-poll ≥ 3×.
    a, b = m(data, "longpoll", "switchyard", fg("deliveries_per_s")), m(data, "longpoll", "nchan", fg("deliveries_per_s"))
    r = ratio(a, b)
    if r is not None:
        comp = complete_cell(data.get(("longpoll", "switchyard"), []))
        measured = f"{fmt_int(a)} vs {fmt_int(b)} deliveries/s = **{fmt_ratio(r)}**; switchyard runs complete {comp}"
        if r >= 3 and all_complete(data, "longpoll", "switchyard"):
            verdict = f"met, {fmt_ratio(r / 3)} the target"
        else:
            verdict = f"missed ({fmt_ratio(r)} of 3×)" if r < 3 else "missed: deliveries lost"
            missed.append("longpoll")
        rows.append(("long-poll deliveries/s ≥ 3× Nchan's", measured, verdict))

    # 5. Publishing under fan-out ≥ 5,000/s, nothing lost.
    for sc, name in (("fanout-sse", "SSE"), ("fanout-ws", "WebSocket")):
        a = m(data, sc, "switchyard", fg("publish_rate"))
        b = m(data, sc, "nchan", fg("publish_rate"))
        if a is None:
            continue
        spread = rng(data, sc, "switchyard", fg("publish_rate"), fmt_int)
        comp = complete_cell(data.get((sc, "switchyard"), []))
        measured = (f"**{fmt_int(a)}/s** (runs {spread}; Nchan {fmt_int(b) if b else '–'}/s), "
                    f"subscribers complete {comp}")
        batch = m(data, sc + "-batch", "switchyard", fg("publish_rate"))
        if batch is not None:
            measured += f"; with batches of 100 (not like for like): {fmt_int(batch)}/s"
        if a >= 5000 and all_complete(data, sc, "switchyard"):
            verdict = f"met ({fmt_int(a - 5000)}/s over)"
        else:
            verdict = f"missed by {fmt_int(5000 - a)}/s ({100 * a / 5000:.0f}% of 5,000/s)" if a < 5000 else "missed: deliveries lost"
            missed.append("publish-" + sc)
        rows.append((f"≥ 5,000 publishes/s accepted during the fan-out, {name}, nothing lost", measured, verdict))

    # 6. Scale: ~19,000 in one process, broadcast ≤ half Nchan's time, nothing lost.
    for sc, name, conn_fn, w in (
        ("scale", "19,000 SSE", fg("connected"), fg("delivery_window_s")),
        ("scale-mixed", "9,500 WebSocket + 9,500 SSE", mixed_total_connected, mixed_window),
    ):
        a, b = m(data, sc, "switchyard", w), m(data, sc, "nchan", w)
        if a is None or b is None:
            continue
        runs = data.get((sc, "switchyard"), [])
        conn = m(data, sc, "switchyard", conn_fn)
        comp = complete_cell(runs)
        if sc == "scale-mixed":
            got = values(runs, lambda r: r.bg["unexpected"] if r.bg else None)
            comp += f" (SSE); WebSocket subscribers that got it: {cell(got, fmt_int)}"
            lost = not all(r.bg and r.bg["unexpected"] == r.bg["connected"] == r.bg["subscribers"] for r in runs)
        else:
            lost = False
        lost = lost or not all_complete(data, sc, "switchyard")
        r = ratio(a, b)
        measured = (f"{fmt_int(conn)} connections; {fmt_s(a)} s vs {fmt_s(b)} s = **{fmt_ratio(r)}** "
                    f"(runs {rng(data, sc, 'switchyard', w, fmt_s)} vs {rng(data, sc, 'nchan', w, fmt_s)}); "
                    f"complete {comp}")
        fl = m(data, sc, FLOOR, w)
        if fl is not None:
            measured += (f"; the bare fan-out (one write per subscriber, nothing else): {fmt_s(fl)} s "
                         f"= {fmt_ratio(ratio(fl, b))} of Nchan's, switchyard {fmt_ratio(ratio(a, fl))} of it")
        if r <= 0.5 and not lost:
            verdict = f"met ({fmt_s(b / 2 - a)} s under half of Nchan's)"
        elif r <= 0.5:
            verdict = "missed: deliveries lost"
            missed.append(sc)
        else:
            under = sum(1 for v in values(runs, w) if v <= b / 2)
            verdict = (f"missed by {fmt_s(a - b / 2)} s (half of Nchan's = {fmt_s(b / 2)} s; "
                       f"{under} of {len(runs)} switchyard runs under it)")
            missed.append(sc)
        rows.append((f"one process holds ~19,000 connections and one broadcast reaches all in ≤ ½ "
                     f"Nchan's time ({name})", measured, verdict))

    # 7. 100,000 connections over six processes.
    runs = data.get(("scale-100k", "nchan"), []) + data.get(("scale-100k", "switchyard"), [])
    if runs:
        conn = values(runs, fg("connected"))
        fails = values(runs, fg("connect_failures"))
        procs = values(runs, fg("procs"))
        ok = all(r.fg["connected"] == r.fg["subscribers"] >= 100000 and r.fg["complete"] for r in runs)
        measured = (f"{cell(conn, fmt_int)} connected by {cell(procs, fmt_int)} processes "
                    f"({cell(fails, fmt_int)} failures), ramp {cell(values(runs, fg('ramp_s')), fmt_s)} s; "
                    f"one event to all in {cell(values(runs, fg('delivery_window_s')), fmt_s)} s, "
                    f"complete {complete_cell(runs)} (both servers, 6 processes each)")
        verdict = "met" if ok else "missed"
        if not ok:
            missed.append("scale-100k")
        rows.append(("100,000 connections from this one machine, one event to all, on 6 switchyard "
                     "nodes sharing Redis and on Nchan with 6 workers",
                     measured, verdict))

    lines.append("| target | measured (switchyard vs Nchan) | verdict |")
    lines.append("|---|---|---|")
    for t, meas, v in rows:
        lines.append(f"| {t} | {meas} | {v} |")
    lines.append("")
    return missed


def targets18_section(data, lines, variant=""):
    """The like-for-like targets of issue 18 (variant "-nagle": with switchyard's
    TCP_NODELAY off); returns the scenarios that missed."""
    rows, missed = [], []
    v = variant
    for sc, name in ((f"fanout-sse{v}", "SSE"), (f"fanout-ws{v}", "WebSocket")):
        a, b = m(data, sc, "switchyard", cpu_per_delivery_us), m(data, sc, "nchan", cpu_per_delivery_us)
        r = ratio(a, b)
        if r is None:
            continue
        measured = (f"{fmt_f2(a)} vs {fmt_f2(b)} µs = **{fmt_ratio(r)}** (runs "
                    f"{rng(data, sc, 'switchyard', cpu_per_delivery_us, fmt_f2)} vs "
                    f"{rng(data, sc, 'nchan', cpu_per_delivery_us, fmt_f2)})")
        verdict = "met" if r <= 0.8 else f"missed ({fmt_ratio(r)}; 0.8× = {fmt_f2(0.8 * b)} µs)"
        if r > 0.8:
            missed.append(sc)
        rows.append((f"server CPU per delivery ≤ 0.8× Nchan's, {name}, one publisher", measured, verdict))
    for sc, name in ((f"fanout-sse-16pub{v}", "SSE"), (f"fanout-ws-16pub{v}", "WebSocket")):
        a, b = m(data, sc, "switchyard", fg("deliveries_per_s")), m(data, sc, "nchan", fg("deliveries_per_s"))
        r = ratio(a, b)
        if r is None:
            continue
        measured = (f"{fmt_int(a)} vs {fmt_int(b)} deliveries/s = **{fmt_ratio(r)}** (runs "
                    f"{rng(data, sc, 'switchyard', fg('deliveries_per_s'), fmt_int)} vs "
                    f"{rng(data, sc, 'nchan', fg('deliveries_per_s'), fmt_int)})")
        verdict = "met" if r >= 2 else f"missed ({fmt_ratio(r)} of 2×)"
        if r < 2:
            missed.append(sc)
        rows.append((f"deliveries/s ≥ 2× Nchan's with 16 single-event publishers, {name}", measured, verdict))
    for sc in (x + v for x in LOADS):
        a, b = m(data, sc, "switchyard", lat("p99_ms")), m(data, sc, "nchan", lat("p99_ms"))
        r = ratio(a, b)
        if r is None:
            continue
        rate = m(data, sc, "nchan", fg("rate"))
        measured = (f"{fmt_ms(a)} vs {fmt_ms(b)} ms = **{fmt_ratio(r)}** at {fmt_int(rate)} events/s "
                    f"(runs {rng(data, sc, 'switchyard', lat('p99_ms'), fmt_ms)} vs "
                    f"{rng(data, sc, 'nchan', lat('p99_ms'), fmt_ms)})")
        verdict = "met" if r <= 0.5 else f"missed ({fmt_ratio(r)} of 0.5×)"
        if r > 0.5:
            missed.append(sc)
        rows.append((f"p99 latency ≤ 0.5× Nchan's at {sc[4:6]} % of Nchan's ceiling, "
                     f"{'SSE' if '-sse' in sc else 'WebSocket'}", measured, verdict))
    runs = [r for (sc, srv), rs in data.items()
            if srv == "switchyard" and sc.endswith("-nagle") == bool(v) and sc not in ("idle-sse", "idle-ws")
            for r in rs if r.fg["events"] > 0]
    if runs:
        bad = sum(1 for r in runs if not r.fg["complete"] or r.fg["duplicated"] or r.fg["out_of_order"])
        measured = (f"{len(runs) - bad} of {len(runs)} switchyard runs with events complete, "
                    f"{sum(r.fg['missing'] for r in runs):,} missing, {sum(r.fg['duplicated'] for r in runs):,} "
                    f"duplicated, {sum(r.fg['out_of_order'] for r in runs):,} out of order")
        rows.append(("nothing lost, duplicated or reordered anywhere", measured, "met" if not bad else "missed"))
        if bad:
            missed.append("complete")
    if not rows:
        return missed
    if v:
        lines.append("## Targets of issue 18 with SWITCHYARD_TCP_NODELAY=off (Nagle's algorithm, as Nchan runs)")
    else:
        lines.append("## Targets of issue 18 (like for like, switchyard's defaults; medians of the same "
                     "runs, order rotated per repetition)")
    lines.append("")
    lines.append("| target | measured (switchyard vs Nchan) | verdict |")
    lines.append("|---|---|---|")
    for t, meas, v in rows:
        lines.append(f"| {t} | {meas} | {v} |")
    lines.append("")
    return missed


# What changed in switchyard between the earlier directories and the last one (for the
# before-and-after section; say it anew when a later build is re-run).
CHANGE_NOTE = ("What changed between them: the fan-out's write coalescing "
               "(`SWITCHYARD_FANOUT_LINGER`, docs/protocol.md): a shard whose events come "
               "faster than it writes them gathers up to 8 into one write per socket.")

# What a re-run changed, per scenario: (label, figure, formatter, lower is better).
CHANGE_FIGURES = (
    ("deliveries/s", fg("deliveries_per_s"), fmt_int, False),
    ("server CPU per delivery (µs)", cpu_per_delivery_us, fmt_f2, True),
    ("latency p50 (ms)", lat("p50_ms"), fmt_ms, True),
    ("latency p99 (ms)", lat("p99_ms"), fmt_ms, True),
)


def changes_section(before, before_meta, data, scen_meta, lines):
    """Before and after: every scenario a later directory re-ran, switchyard's figures
    in the earlier and the later run, each beside Nchan's of the same run (so the
    ratios, not the absolute figures, compare across the two runs)."""
    scs = [sc for sc in ORDER if (sc, "switchyard") in before and (sc, "switchyard") in data]
    if not scs:
        return
    was = sorted({before_meta[sc].get("git", "?") for sc in scs})
    now = sorted({scen_meta[sc].get("git", "?") for sc in scs})
    lines.append("## Before and after (scenarios re-run with a later build)")
    lines.append("")
    lines.append(
        "Each scenario below ran twice, each time with Nchan in the same rotation: with "
        f"switchyard {' / '.join(was)} (the earlier directories), then with {' / '.join(now)} "
        "(the last one). The machine's speed drifts between runs, so compare each build's "
        "ratio to Nchan of its own run. " + CHANGE_NOTE)
    lines.append("")
    lines.append("| scenario | figure | switchyard before | Nchan (that run) | ratio before "
                 "| switchyard after | Nchan (that run) | ratio after |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for sc in scs:
        for label, f, fmt, _ in CHANGE_FIGURES:
            a, an = m(before, sc, "switchyard", f), m(before, sc, "nchan", f)
            b, bn = m(data, sc, "switchyard", f), m(data, sc, "nchan", f)
            if a is None or b is None or (a == 0 and b == 0):
                continue
            show = lambda x: "–" if x is None else fmt(x)  # noqa: E731
            r1, r2 = ratio(a, an), ratio(b, bn)
            lines.append(f"| {sc} | {label} | {show(a)} | {show(an)} | "
                         f"{fmt_ratio(r1) if r1 is not None else '–'} | {show(b)} | {show(bn)} | "
                         f"{fmt_ratio(r2) if r2 is not None else '–'} |")
    lines.append("")


def limits_section(data, missed, lines, missed18=(), before=None):
    before = before or {}
    # The broadcast is explained whether or not its target was met: it sits near the floor.
    scale = [x for x in ("scale", "scale-mixed") if (x, "switchyard") in data and (x, "nchan") in data]
    if not missed and not scale:
        return
    lines.append("## What limits the missed targets" if missed else "## What limits the broadcast")
    lines.append("")
    bpc = lambda r: sf(r.fg, "rss_bytes_per_connection")  # noqa: E731
    if "idle-sse" in missed or "idle-ws" in missed:
        sse = m(data, "idle-sse", "switchyard", bpc)
        ws = m(data, "idle-ws", "switchyard", bpc)
        nsse = m(data, "idle-sse", "nchan", bpc)
        lines.append(
            "**Bytes per idle connection.** "
            + (f"An idle SSE connection costs switchyard {fmt_int(sse)} B of RSS, a WebSocket one "
               f"{fmt_int(ws)} B (Nchan: {fmt_int(nsse)} B for SSE). " if sse and ws and nsse else "")
            + "SSE streams are written on the socket after the response head (`src/serve.rs`), "
              "without hyper's two 8 KiB HTTP/1 buffers; WebSocket connections keep tungstenite's "
              "codec state and 1 KiB read buffer."
            + (" For WebSocket the remaining cost has not been broken down here; a heap "
               "profile of 10,000 idle connections (e.g. heaptrack or valgrind's massif) "
               "would show which per-connection allocation to cut." if "idle-ws" in missed else "")
        )
        lines.append("")
    pub_missed = [sc for sc in ("fanout-sse", "fanout-ws") if "publish-" + sc in missed]
    if pub_missed:
        parts = []
        for sc in pub_missed:
            a = m(data, sc, "switchyard", fg("publish_rate"))
            s = m(data, sc, "switchyard", lambda r: sf(r.fg, "cpu_delivery_s"))
            g = m(data, sc, "switchyard", fg("generator_cpu_delivery_s"))
            w = m(data, sc, "switchyard", fg("delivery_window_s"))
            pw = m(data, sc, "switchyard", fg("publish_s"))
            cb = m(data, sc, "switchyard", cores_busy)
            parts.append(
                f"{sc}: {fmt_int(a)} publishes/s; the 2,000 events took {fmt_s(pw)} s to be "
                f"accepted and {fmt_s(w)} s to reach everyone; in that window the server used "
                f"{fmt_f2(s)} CPU s and the generator {fmt_f2(g)} CPU s, about {fmt_f2(cb)} of the "
                f"2 cores")
        busy = [m(data, sc, "switchyard", cores_busy) for sc in pub_missed]
        sg = [ratio(m(data, sc, "switchyard", fg("generator_cpu_delivery_s")),
                    m(data, sc, "switchyard", lambda r: sf(r.fg, "cpu_delivery_s"))) for sc in pub_missed]
        notes = []
        if all(b is not None and b >= 1.8 for b in busy):
            notes.append("The two cores are close to saturated while the fan-out runs")
        if all(x is not None and 0.6 <= x <= 1.6 for x in sg):
            notes.append("The generator spends about as much CPU as the server")
        lines.append(
            "**Publishing under fan-out.** " + "; ".join(parts) + ". "
            + ("; ".join(notes) + ". " if notes else "")
            + "Each publisher waits for the answer to one event before it sends the next, so "
            "one publisher's rate is one over the round trip of a publish while the fan-out it "
            "causes and the generator's reads fill the two cores. switchyard answers a publish "
            "once the event is in the log, before any delivery, on a runtime thread of its own "
            "(`src/lib.rs`: the API runtime); its publishes still share the cores with the "
            "fan-out. The rows with 16 publishers and with batches show the same server with "
            "more events in flight.")
        lines.append("")
    d, n = (m(data, "fanout-ws", "switchyard", cpu_per_delivery_us),
            m(data, "fanout-ws-nagle", "switchyard", cpu_per_delivery_us))
    lo, ln = m(data, "lowrate", "switchyard", lat("p99_ms")), m(data, "lowrate-nagle", "switchyard", lat("p99_ms"))
    cpu_missed = [sc for sc in ("fanout-sse", "fanout-ws") if sc in missed18]
    if None not in (d, n, lo, ln) and cpu_missed:
        lines.append(
            "**Server CPU per delivery with one publisher.** Missed with switchyard's defaults, "
            "met with `SWITCHYARD_TCP_NODELAY=off` (the table \"With SWITCHYARD_TCP_NODELAY=off\" "
            f"above: WebSocket {fmt_f2(d)} µs with TCP_NODELAY, {fmt_f2(n)} µs without). Nearly all "
            "of it is the kernel's send path; the difference to Nchan is Nagle's algorithm, which "
            "nginx leaves on for these connections. The default stays on, as in Go (Centrifugo), "
            "Kestrel (SignalR) and Node's http server (Socket.IO): with Nagle the low-rate p99 "
            f"went from {fmt_ms(lo)} to {fmt_ms(ln)} ms on loopback, and on a real network an "
            "event can wait up to a round trip, more against a client that delays its ACKs.")
        lines.append("")
    elif d is not None and not cpu_missed and ("fanout-ws", "switchyard") in before:
        b = m(before, "fanout-ws", "switchyard", cpu_per_delivery_us)
        bn = m(before, "fanout-ws", "nchan", cpu_per_delivery_us)
        dn = m(data, "fanout-ws", "nchan", cpu_per_delivery_us)
        lines.append(
            "**Server CPU per delivery with one publisher: what changed it.** Nearly all of a "
            "delivery's CPU is the kernel's send path, and with TCP_NODELAY every write is a "
            "segment, whose send (and, on loopback, the receiver's TCP processing, done in the "
            "sender's context) costs about the same whatever its length. Before, every event "
            "left in a write of its own: WebSocket "
            + (f"{fmt_f2(b)} µs against Nchan's {fmt_f2(bn)} µs in the same run ({fmt_ratio(ratio(b, bn))}), " if None not in (b, bn) else "")
            + "where Nchan's connections run with Nagle's algorithm (nginx sets TCP_NODELAY only "
            "on kept-alive connections), so its kernel sends several events per segment. Now a "
            "busy fan-out shard gathers up to 8 events into one write per socket "
            "(`SWITCHYARD_FANOUT_LINGER`, 10 ms at most; docs/protocol.md): "
            + (f"{fmt_f2(d)} µs against Nchan's {fmt_f2(dn)} µs ({fmt_ratio(ratio(d, dn))}). " if dn is not None else f"{fmt_f2(d)} µs. ")
            + "TCP_NODELAY stays on, as in Go (Centrifugo), Kestrel (SignalR) and Node's http "
            "server (Socket.IO): the coalescing happens only when the fan-out is busy, bounded "
            "by a timer rather than by the client's ACKs. "
            + ("The TCP_NODELAY=off tables above are of this build too (both coalesce: the "
               "shard in its writes, the kernel in its segments)."
               if ("fanout-ws-nagle", "switchyard") in before else
               "The TCP_NODELAY=off tables above are of the build before the linger."))
        lines.append("")
    lp = data.get(("longpoll", PEER), [])
    if lp and not all(r.fg["complete"] for r in lp):
        errs = sorted({e for r in lp for e in r.fg.get("errors", [])})
        lines.append(
            f"**Socket.IO over long-polling lost events** in {len(lp) - sum(r.fg['complete'] for r in lp)} "
            f"of {len(lp)} runs (missing {cell(values(lp, fg('missing')), fmt_int)} of "
            f"{fmt_int(lp[0].fg['expected'])} deliveries): sessions ended under the load "
            + (f"(the generator saw `{errs[0]}`) " if errs else "")
            + "and Socket.IO keeps no events for a client that reconnects (its "
            "`connectionStateRecovery` is off by default and is not used here). Not isolated: "
            "whether the sessions ended because Node, saturated, answered the generator's pongs "
            "(each POSTed on a fresh connection, where a browser reuses one) after "
            "`pingTimeout`, or because a waiting poll's connection closed. Over WebSocket every "
            "Socket.IO run was complete.")
        lines.append("")
    loads = [(sc, m(data, sc, srv, cores_busy), srv) for sc in LOADS for srv in SERVERS]
    if any(b is not None for _, b, _ in loads):
        cpd = {sc: (m(data, sc, "switchyard", cpu_per_delivery_us), m(data, sc, "nchan", cpu_per_delivery_us))
               for sc in LOADS}
        def busy_of(sc):
            x = [m(data, sc, srv, cores_busy) for srv in SERVERS]
            return "–" if None in x else f"{x[0]:.2f} / {x[1]:.2f}"

        def gen_ms(sc):
            x = [m(data, sc, srv, lambda r: r.fg["generator_cpu_delivery_s"] / r.fg["published"] * 1e3
                   if r.fg.get("published") else None) for srv in SERVERS]
            return "–" if None in x else f"{x[0]:.1f} / {x[1]:.1f}"
        lines.append(
            "**Latency at the fixed loads.** The p99 target (≤ 0.5× Nchan's) is met in "
            + (", ".join(x for x in LOADS if x not in missed18) or "none")
            + " and missed in " + (", ".join(x for x in LOADS if x in missed18) or "none")
            + ". The machine is not idle at the lower loads either: server and "
            "generator together keep (switchyard / Nchan runs) "
            + ", ".join(f"{busy_of(sc)} cores busy in {sc}" for sc in LOADS)
            + ", because a delivery costs more server CPU at a lower rate ("
            + "; ".join(f"{sc}: {fmt_f2(a)} µs switchyard, {fmt_f2(b)} µs Nchan"
                        for sc, (a, b) in cpd.items() if a is not None and b is not None)
            + "), most likely because each event then finds the threads "
            "of both sides asleep: at a high rate the generator's thread is already awake when "
            "a write arrives, at a low one every write wakes it, and on loopback the writer "
            "pays for that wake-up (not profiled). The generator is the floor under both "
            "servers' latency at the lower loads: it reads every event from 1,000 sockets on "
            "one thread, at "
            + "; ".join(f"{sc}: {gen_ms(sc)} ms of generator CPU per event" for sc in LOADS
                        if gen_ms(sc) != "–")
            + " (switchyard / Nchan runs), so the subscriber it reads last waits for the "
            "999 reads before it whatever the server does; both servers' p50 is about half of "
            "that where the cores have room. What would move it: a generator on a machine of "
            "its own, or less CPU per delivery when events come one at a time (fewer "
            "wake-ups); neither was done in this round.")
        lines.append("")
    for sc, label in (("fanout-sse", "SSE"), ("fanout-ws", "WebSocket")):
        if sc in missed:
            lines.append(f"**Fan-out over {label}**: see the table above; the cores-busy row shows "
                         "whether the two cores were saturated.")
            lines.append("")
    if "lowrate" in missed:
        a = rng(data, "lowrate", "switchyard", lat("p99_ms"), fmt_ms)
        b = rng(data, "lowrate", "nchan", lat("p99_ms"), fmt_ms)
        lines.append(
            f"**Low-rate latency.** The p99 of both servers is a few milliseconds (switchyard "
            f"{a} ms, Nchan {b} ms over the runs); at 20 events/s neither is loaded, and the "
            "difference is within the spread between repetitions on this shared 2-core machine. "
            "What is systematic: switchyard serves publishing connections on a thread of their "
            "own (so that publishing keeps up during a fan-out, the target above), and at an "
            "idle server that costs one more thread wake-up between the publish and the first "
            "write. Measured separately with the same generator command (3 runs each, "
            "2026-11-25): publishing on the stream threads gave p50 1.41 ms and p99 "
            "1.87 – 2.06 ms, on its own thread p50 1.51 – 1.63 ms and p99 2.11 – 2.42 ms. "
            "Nchan's publishing worker writes to its own subscribers without a hand-over. "
            "Tried on 2026-11-26 and not kept: a small audience written by one fan-out task "
            "(each shard filled to 256 sinks before the next is used), so that an event wakes "
            "one task and leaves the other core to the reader: p99 1.57 – 4.44 ms (median 1.72, "
            "6 runs) against 1.42 – 1.85 ms (median 1.61, 6 runs) with the sinks spread over "
            "all 8 shards, alternating runs, and p50 1.17 – 1.46 against 0.98 – 1.25 ms. The "
            "latency here is the writes to 100 sockets and the generator's reads of them on the "
            "same two cores, and the writes are better done in parallel.")
        lines.append("")
    for sc in scale:
        scpu = lambda r: sf(r.fg, "cpu_delivery_s")  # noqa: E731
        gcpu = fg("generator_cpu_delivery_s")
        w = mixed_window if sc == "scale-mixed" else fg("delivery_window_s")
        n = m(data, sc, "switchyard", mixed_total_connected if sc == "scale-mixed" else fg("connected"))
        fig = {srv: (m(data, sc, srv, w), m(data, sc, srv, scpu), m(data, sc, srv, gcpu)) for srv in SERVERS}
        desc = "; ".join(
            f"{LABEL[srv]} {fmt_s(fig[srv][0])} s to the last subscriber, the server using "
            f"{fmt_f2(fig[srv][1])} CPU s and the generator {fmt_f2(fig[srv][2])} CPU s"
            for srv in SERVERS if None not in fig[srv])
        less = (None not in fig["switchyard"] and None not in fig["nchan"]
                and fig["switchyard"][1] < fig["nchan"][1])
        lines.append(
            f"**Broadcast to {fmt_int(n) if n else '?'} ({sc}).** One event is written to every socket. "
            f"Medians: {desc} (the CPU readings run from the publish until the generator notices "
            "the last delivery, which with subscriber child processes reporting every 250 ms can "
            "be a few hundred ms after it, so they are not divided by the time here). "
            + ("switchyard already spends less server CPU on the broadcast than Nchan; the "
               "time that remains is the writes to every socket and the generator's reads, "
               "which share the two cores. " if less else "")
            + (f"Per delivery that is {fmt_f2(1e6 * fig['switchyard'][1] / n)} µs of server CPU "
               f"for switchyard and {fmt_f2(1e6 * fig['nchan'][1] / n)} µs for Nchan. "
               if n and None not in fig["switchyard"] and None not in fig["nchan"] else "")
            + ("Profiled separately (`perf record -a` over 19,000 SSE subscribers × 30 "
              "events at 3/s, 2026-11-25): about 80% of either server's samples are in the "
              "kernel (switchyard 78% and 81% in two runs, Nchan 81%), nearly all under the "
              "one `sendto` per subscriber, which on loopback also runs the receiving "
              "socket's TCP processing and wakes the generator's thread (the largest single "
              "item, 9% of all samples). The generator's processes read the same sockets on "
              "the same two cores: the broadcast is CPU-bound, its time about (server CPU + "
              "generator CPU) / 2. " if sc == "scale" else
               "As above, the broadcast is CPU-bound on the two cores the generators share. ")
            + floor_text(data, sc, w, scpu, n)
            + (" In the mixed run switchyard's slowest WebSocket subscriber had the event after "
               f"{fmt_s(m(data, 'scale-mixed', 'switchyard', ws_last_s))} s and its last SSE one after "
               f"{fmt_s(m(data, 'scale-mixed', 'switchyard', fg('delivery_window_s')))} s (Nchan: "
               f"{fmt_s(m(data, 'scale-mixed', 'nchan', ws_last_s))} s and "
               f"{fmt_s(m(data, 'scale-mixed', 'nchan', fg('delivery_window_s')))} s); both transports "
               "make one `sendto` per subscriber per event (counted with `strace -c`: 12,000 for "
               "2,000 subscribers × 6 events, WebSocket and SSE alike). Caught-up SSE streams and "
               "WebSocket sessions are both written by the direct fan-out (`src/fanout.rs`: a few "
               "tasks, one pass over their sockets, each event's SSE frame and whole WebSocket "
               "frame encoded once); the WebSockets parked first, so within each shard they are "
               "written first and the SSE half finishes last. Measured against the build before "
               "WebSocket sessions parked too (each then delivered from its own task through axum's "
               "and tungstenite's layers), alternating runs on 2026-11-26: median 0.131 s "
               "(0.128 – 0.157, 6 runs) against 0.165 s (0.151 – 0.194, 6 runs). The server of "
               "6d7a302 against that of 80b1119 (the review's fixes between them touch parking, "
               "take-backs and replies, not the writes), in both orders, 2026-11-26: 0.201 s "
               "against 0.185 s (5 and 6 runs) with 80b1119 first in each round, 0.156 s against "
               "0.173 s (6 runs each) with 6d7a302 first: no difference beyond the position "
               "effect."
               if sc == "scale-mixed" else ""))
        lines.append("")


def floor_text(data, sc, w, scpu, n):
    """What the bare fan-out server (the floor) says about the broadcast, if it ran."""
    fl = m(data, sc, FLOOR, w)
    if fl is None:
        return ""
    sy, nc = m(data, sc, "switchyard", w), m(data, sc, "nchan", w)
    fcpu, ycpu = m(data, sc, FLOOR, scpu), m(data, sc, "switchyard", scpu)
    per = (f" On this one broadcast the floor used {fmt_f2(1e6 * fcpu / n)} µs of server CPU per "
           f"delivery, switchyard {fmt_f2(1e6 * ycpu / n)} µs (the first broadcast after the ramp; "
           f"over many in a row both cost less, see {'below' if sc == 'scale' else 'above'})."
           if n and fcpu and ycpu else "")
    side = "" if sc != "scale" else (
        "Measured beside it (19,000 SSE subscribers × 50 events at 5/s, "
        "`switchyard-bench --transport sse --subscribers 19000 --events 50 --rate 5`, "
        "2026-11-26): server CPU per delivery 9.6 – 9.7 µs for switchyard, 12.1 – 12.3 µs for the "
        "build before the direct fan-out (each stream writing from its own task), 9.0 – 9.5 µs "
        "for the bare fan-out. `perf record` of that run before the change put the kernel's "
        "share per delivery at the bare loop's (about 9.5 µs); the rest, about 2.5 µs, was user "
        "time spread over the wake-up, the poll through the body layers and the broadcast "
        "channel's shared slot and waiter list, on memory gone cold since the last event: what "
        "the direct fan-out removes. Tried earlier and not kept: one "
        "current-thread runtime per core, each with its own relay of the hub and its own copy of "
        "every event, cut that from 11.9 – 12.4 to 11.4 – 11.7 µs, but the single broadcast got slower "
        "(0.200 – 0.309 s against 0.193 – 0.242 s, 4 alternating runs each): without work "
        "stealing, the thread whose core the generator's processes take finishes last (the bare "
        "fan-out splits its subscribers the same static way). "
    )
    return (
        f"The floor, measured in the same runs: `switchyard-bare` (`bench/src/bare.rs`), which "
        f"does nothing but one blocking write per subscriber from two threads (no log, no "
        f"tasks, no shared state), took {rng(data, sc, FLOOR, w, fmt_s)} s, "
        f"{fmt_ratio(ratio(fl, nc))} of Nchan's time; switchyard took "
        f"{fmt_ratio(ratio(sy, fl))} of the floor's.{per} " + side
    ).rstrip()


def machine_section(meta, dirpath, lines):
    mem = meta.get("mem_kb")
    lines.append("## Machine and versions")
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    lines.append(f"| CPU | {meta.get('cpu', '?')} — {meta.get('nproc', '?')} cores (`nproc`) |")
    if mem:
        lines.append(f"| memory | {int(mem) / 1024 / 1024:.1f} GiB |")
    lines.append(f"| kernel | {meta.get('kernel', '?')} |")
    lines.append(f"| open files (hard limit per process) | {meta.get('nofile', '?')} |")
    lines.append(f"| nginx | {meta.get('nginx', '?')} |")
    lines.append(f"| Nchan | libnginx-mod-nchan {meta.get('nchan', '?')} |")
    if meta.get("socketio"):
        lines.append(f"| Socket.IO | socket.io {meta['socketio']} on Node.js {meta.get('node', '?')} "
                     "(`bench/socketio/server.js`, one process) |")
    lines.append(f"| rustc | {meta.get('rustc', '?')} |")
    lines.append(f"| switchyard | git {meta.get('git', '?')} |")
    lines.append("")


def commands_section(data, dirs, lines):
    lines.append("## Commands")
    lines.append("")
    lines.append("```sh")
    lines.append("REPS=3 bench/compare.sh        # builds, runs everything, then:")
    lines.append("python3 bench/report.py " + " ".join(
        os.path.relpath(d, REPO) if d.startswith(REPO) else d for d in dirs))
    lines.append("```")
    lines.append("")
    lines.append(
        "`bench/compare.sh` builds `cargo build --release` and `cargo build --release -p "
        "switchyard-bench`, then for each scenario runs the repetitions alternating the two "
        "servers (in the two scale scenarios also the bare fan-out, `switchyard-bare`). Each run "
        "starts a fresh server on its own port, passes its pid to the "
        "generator (`--server-pid`; for nginx the master, whose workers are summed), and "
        "stops it by that pid afterwards. nginx runs from `bench/nchan.conf` (2 workers; 6 in scale-100k, where switchyard runs 6 nodes on one Redis; "
        "`reuseport`, `nchan_message_buffer_length 10000`, subscribers start at the newest "
        "message) in a prefix directory of its own, never the system service. The exact "
        "commands of the first repetition of each scenario (the pid and port change per "
        "run; `DIR` is the per-run nginx prefix):")
    lines.append("")
    lines.append("```text")
    for sc in ORDER:
        for srv in SERVERS + (PEER, FLOOR):
            runs = data.get((sc, srv), [])
            if runs:
                lines.append(f"# {sc}, {srv}")
                for line in runs[0].cmd.splitlines():
                    lines.append(re.sub(r" --json \S+", " --json <out>", line))
    lines.append("```")
    lines.append("")


def summary_tsv(data, path):
    cols = ["scenario", "server", "rep", "connected", "connect_failures", "complete",
            "missing", "duplicated", "out_of_order", "deliveries_per_s", "p50_ms", "p90_ms",
            "p99_ms", "max_ms", "publish_rate", "delivery_window_s", "rss_idle_bytes",
            "rss_connected_bytes", "rss_bytes_per_conn", "pss_bytes_per_conn",
            "server_cpu_s", "server_cpu_delivery_s", "generator_cpu_s",
            "generator_cpu_delivery_s", "bg_connected", "bg_received", "bg_rss_bytes_per_conn"]
    with open(path, "w") as f:
        f.write("\t".join(cols) + "\n")
        for sc in ORDER:
            for srv in SERVERS + (PEER, FLOOR):
                for run in data.get((sc, srv), []):
                    r = run.fg
                    row = [sc, srv, run.rep, r["connected"], r["connect_failures"], r["complete"],
                           r["missing"], r["duplicated"], r["out_of_order"],
                           round(r["deliveries_per_s"]), r["latency"]["p50_ms"],
                           r["latency"]["p90_ms"], r["latency"]["p99_ms"], r["latency"]["max_ms"],
                           round(r["publish_rate"]), round(r["delivery_window_s"], 4),
                           sf(r, "idle", "rss_bytes"), sf(r, "connected", "rss_bytes"),
                           round(sf(r, "rss_bytes_per_connection") or 0),
                           round(sf(r, "pss_bytes_per_connection") or 0),
                           round(sf(r, "cpu_s") or 0, 3), round(sf(r, "cpu_delivery_s") or 0, 3),
                           round(r["generator_cpu_s"], 3), round(r["generator_cpu_delivery_s"], 3),
                           run.bg["connected"] if run.bg else "",
                           run.bg["unexpected"] if run.bg else "",
                           round(sf(run.bg, "rss_bytes_per_connection") or 0) if run.bg else ""]
                    f.write("\t".join(str(v) for v in row) + "\n")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="+",
                    help="bench/compare.sh results directories; a scenario found in a later one "
                         "replaces the earlier one's runs of it (every ratio stays of one run)")
    ap.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"))
    a = ap.parse_args()
    dirs = [os.path.abspath(d) for d in a.dir]
    dirpath = dirs[0]
    data, scen_meta, per_dir = {}, {}, {}
    # The runs the last directory replaced, and their scenarios' meta: the "before" of
    # its re-runs.
    before, before_meta = {}, {}
    for d in dirs:
        got = load(d)
        if not got:
            sys.exit(f"report.py: no run reports in {d}")
        per_dir[d] = got
        for sc in {sc for sc, _ in got}:
            if sc in scen_meta and d == dirs[-1] and len(dirs) > 1:
                before.update({k: v for k, v in data.items() if k[0] == sc})
                before_meta[sc] = scen_meta[sc]
            data = {k: v for k, v in data.items() if k[0] != sc}
            scen_meta[sc] = read_kv(os.path.join(d, f"{sc}.meta"))
        data.update(got)
    meta = read_kv(os.path.join(dirpath, "machine.txt"))
    for d in dirs[1:]:
        for k, v in read_kv(os.path.join(d, "machine.txt")).items():
            meta.setdefault(k, v)
    total = sum(int(v["elapsed_s"]) for v in scen_meta.values() if "elapsed_s" in v)
    dates = sorted(v["started"] for v in scen_meta.values() if "started" in v)

    lines = []
    lines.append("# Benchmarks: switchyard vs nginx + Nchan and Socket.IO")
    lines.append("")
    lines.append(
        "Generated by `bench/report.py` from the JSON reports of `bench/compare.sh` "
        "(raw files in "
        + ", ".join(f"`{os.path.relpath(d, REPO) if d.startswith(REPO) else d}/`" for d in dirs)
        + (" — a scenario of a later directory replaces the earlier one's runs of it, so each "
           "scenario's servers ran in one rotation —" if len(dirs) > 1 else "")
        + " "
        "kept out of git; `summary.tsv` there has one line per run). "
        "Both servers ran on loopback on the same 2-core machine as the load generator "
        "(`switchyard-bench`), which competes with the server for the two cores; the "
        "tables give the generator's CPU next to the server's. Each cell is the **median** "
        "over the repetitions with the (min – max) range; the ratio is of the medians. "
        "Every run used a freshly started server.")
    lines.append("")
    lines.append(
        "The generator is built to take as little of the two cores as it can: one runtime "
        "thread per process, and SSE and WebSocket streams read straight off the socket into "
        "small, never-zeroed buffers (`bench/src/stream.rs`: the response head with "
        "`httparse`, chunked bodies, WebSocket frames with tungstenite's `FrameHeader`). "
        "Until 2026-11-26 it read SSE through hyper's client and WebSockets through "
        "tokio-tungstenite; `perf record -a` during 30 broadcasts to 9,500 WebSocket + 9,500 "
        "SSE subscribers put the generator's processes at 25.7% of all samples with those, "
        "16.6% with the direct reads. Against the same server builds, alternating the two "
        "generators run by run, with either one first (alternating runs on this machine "
        "show a position effect of up to ~9%), scale-mixed, 2026-11-26 07:35 – 08:55 UTC: "
        "switchyard 0.196 s (0.152 – 0.247, 10 runs) with the old generator, 0.176 s "
        "(0.138 – 0.198, 10 runs) with the new; Nchan 0.392 s (0.285 – 0.497, 18 runs) and "
        "0.372 s (0.308 – 0.453, 18 runs). Both servers get more of the cores; switchyard, "
        "which keeps both busy, gains more (the ratio of those medians: 0.50 with the old "
        "generator, 0.47 with the new). Nchan's SSE fan-out, 2 rounds of 2 runs with the "
        "old generator first: 220,000 – 290,000 deliveries/s with the old, 197,000 – "
        "247,000 with the new, within the position effect. The machine's speed drifts "
        "by the hour by more than any of this (the run of 80b1119 at 05:48 – 06:08 UTC "
        "measured Nchan's SSE fan-out at 388,000 – 423,000/s and its broadcast to 19,000 SSE "
        "subscribers at 0.342 – 0.374 s; the run of 6d7a302 at 07:49 – 08:11 UTC at "
        "146,000 – 173,000/s and 0.385 – 0.573 s), so only figures of the same run compare: "
        "the servers alternate run by run, and every ratio below is of one run's medians. "
        "Until 2026-12-04 the fan-out and long-poll scenarios published switchyard's events in "
        "batches of 100 per request and Nchan's one per request, and the headline ratios "
        "(fan-out 9 – 17×) came from that; every like-for-like row now publishes one event "
        "per request on both servers, and the batch runs have a table of their own.")
    lines.append("")
    date = meta.get("date", "?")
    lines.append(f"- **Date**: {date[:10]}" + (f" (scenarios started {dates[0]} … {dates[-1]})" if dates else ""))
    lines.append(f"- **Runs**: {sum(len(v) for v in data.values())} generator runs, "
                 f"{total} s ({total / 60:.1f} min) of scenarios in all")
    lines.append("")
    # A scenario re-run later records its own revision; name those that differ.
    base_git = meta.get("git", "?")
    later = {}
    for sc, m in scen_meta.items():
        if m.get("git") and m["git"] != base_git:
            later.setdefault(m["git"], []).append(sc)
    if later:
        meta = dict(meta)
        meta["git"] = base_git + "".join(
            f"; re-run at {rev}: {', '.join(scs)}" for rev, scs in sorted(later.items()))
    machine_section(meta, dirpath, lines)

    headline_section(data, lines)
    nagle_section(data, lines)
    missed_lines = []
    missed = targets_section(data, missed_lines)
    lines.extend(missed_lines)
    missed18 = targets18_section(data, lines)
    targets18_section(data, lines, "-nagle")
    changes_section(before, before_meta, data, scen_meta, lines)
    limits_section(data, missed, lines, missed18, before)

    lines.append("## Scenarios")
    lines.append("")
    for sc in ORDER:
        scenario_section(sc, data, lines)

    commands_section(data, dirs, lines)

    # Sections written by hand (comparisons of two builds) follow KEEP and survive.
    kept = ""
    if os.path.exists(a.out):
        old = open(a.out).read()
        if KEEP in old:
            kept = "\n" + old[old.index(KEEP):]
    with open(a.out, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n" + kept)
    for d, got in per_dir.items():
        summary_tsv(got, os.path.join(d, "summary.tsv"))
    print(f"report.py: wrote {a.out} and summary.tsv in {', '.join(dirs)}")


if __name__ == "__main__":
    main()
