// switchyard demo page: a small live view of one topic, with plain browser APIs.
//
// This is not the switchyard client library (that is `switchyard.js`, a later issue);
// it is the least a page needs to do to follow a topic over WebSocket, Server-Sent
// Events or long polling and to resume from its last cursor. See docs/protocol.md.
//
// `Live` holds the connection logic and touches no DOM; the UI at the bottom wires it
// to the page.

/** How long a transport may take to say `ready` before the next one is tried. */
const READY_TIMEOUT_MS = 5000;
/** A stream that is silent for this many heartbeats is treated as dead. */
const SILENCE_HEARTBEATS = 2.5;
/** Reconnect back-off: first delay and cap (each gets up to 50% jitter). */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
/** Failures of one transport before `auto` moves on to the next one. */
const FAILURES_BEFORE_FALLBACK = 2;

const TRANSPORTS = ['websocket', 'sse', 'longpoll'];

/** Absolute URL of an API path, built from the page's own location. */
export function apiUrl(path, params = {}, base = globalThis.location) {
  const url = new URL(path, base);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  return url;
}

function jitter(ms) {
  return Math.round(ms * (0.5 + Math.random() * 0.5));
}

/**
 * One live subscription to one topic. Emits (via the `on` callbacks):
 *   state({state, transport, mode, detail})  connecting | live | reconnecting | off | closed
 *   event(envelope)                          each event once, in order
 *   control(name, body)                      ready, reset, reconnect, heartbeat, error, info
 */
export class Live {
  constructor({ topic, transports = null, cursor = null, base = globalThis.location, on = {} }) {
    this.topic = topic;
    this.forced = transports; // null = auto (negotiate), else an ordered list
    this.cursor = cursor;
    this.base = base;
    this.on = on;
    this.seen = new Set();
    this.seenOrder = [];
    this.order = [];
    this.index = 0;
    this.failures = 0;
    this.heartbeatMs = 15000;
    this.pollTimeoutMs = 25000;
    this.current = null; // {close()} of the open transport
    this.timer = null;
    this.closed = false;
    this.transport = null;
  }

  async start() {
    this.emitState('connecting', null, 'asking /v1/negotiate');
    let offered = [];
    try {
      const res = await fetch(apiUrl('/v1/negotiate', { topics: this.topic }, this.base), {
        cache: 'no-store',
      });
      const body = await res.json();
      if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
      offered = body.transports.map((t) => t.name);
      this.heartbeatMs = body.heartbeat_ms;
      this.pollTimeoutMs = body.poll_timeout_ms;
      if (body.disabled.length) {
        this.emit('control', 'info', {
          message: body.disabled.map((d) => `${d.name}: ${d.reason}`).join('; '),
        });
      }
    } catch (e) {
      // Negotiation is advice; without it, try what was asked for (or everything).
      this.emit('control', 'error', { message: `negotiate failed: ${e.message}` });
      offered = TRANSPORTS;
    }
    if (this.closed) return;
    this.order = this.forced ? this.forced.filter((t) => offered.includes(t)) : offered;
    if (this.order.length === 0) {
      const why = this.forced
        ? `${this.forced.join(', ')} is switched off on this server`
        : 'live updates are switched off; refresh to see changes';
      this.emitState('off', null, why);
      return;
    }
    this.index = 0;
    this.open();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.current?.close();
    this.current = null;
    this.emitState('closed', this.transport, 'disconnected');
  }

  // --- internals -------------------------------------------------------------------

  emit(name, ...args) {
    this.on[name]?.(...args);
  }

  emitState(state, transport, detail) {
    const mode =
      state === 'live' ? (transport === 'websocket' ? 'live' : 'degraded') : state;
    this.emit('state', { state, transport, mode, detail, cursor: this.cursor });
  }

  open() {
    if (this.closed) return;
    const transport = this.order[this.index];
    this.transport = transport;
    this.emitState('connecting', transport, this.cursor ? `resuming after ${this.cursor}` : 'from now');
    const handlers = {
      ready: (body) => this.onReady(transport, body),
      event: (env) => this.onEvent(env),
      reset: (body) => this.onReset(body),
      reconnect: (body) => this.onReconnect(body),
      heartbeat: () => this.emit('control', 'heartbeat', {}),
      alive: () => this.armWatchdog(),
      fail: (why) => this.onFail(transport, why),
    };
    const open = { websocket: openWebSocket, sse: openSse, longpoll: openLongPoll }[transport];
    this.current = open(this, handlers);
    // No `ready` in time: a proxy may be holding the stream back.
    this.armTimer(READY_TIMEOUT_MS, () => this.onFail(transport, 'no ready in time'));
  }

  armTimer(ms, fn) {
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, ms);
  }

  armWatchdog() {
    if (this.transport !== 'websocket') {
      // Long-poll: each poll has its own deadline. SSE: heartbeats are comment lines,
      // which EventSource does not dispatch, so silence cannot be told from an idle
      // topic; EventSource's own error event covers a dropped connection.
      clearTimeout(this.timer);
      return;
    }
    this.armTimer(this.heartbeatMs * SILENCE_HEARTBEATS + 1000, () =>
      this.onFail(this.transport, 'silent past the heartbeat'),
    );
  }

  onReady(transport, body) {
    this.failures = 0;
    if (body.cursor) this.cursor = body.cursor;
    if (body.heartbeat_ms) this.heartbeatMs = body.heartbeat_ms;
    this.emit('control', 'ready', body);
    this.emitState('live', transport, `after ${this.cursor}`);
    this.armWatchdog();
  }

  onEvent(env) {
    this.cursor = env.id;
    if (this.seen.has(env.id)) return; // a duplicate after a reconnect: drop it
    this.seen.add(env.id);
    this.seenOrder.push(env.id);
    if (this.seenOrder.length > 1000) this.seen.delete(this.seenOrder.shift());
    this.emit('event', env);
  }

  onReset(body) {
    // History is incomplete: an app refetches its state here. The stream goes on
    // after body.cursor.
    this.cursor = body.cursor;
    this.emit('control', 'reset', body);
  }

  onReconnect(body) {
    // The server is draining: come back after `after_ms`, from our cursor.
    this.emit('control', 'reconnect', body);
    this.current?.close();
    this.current = null;
    this.emitState('reconnecting', this.transport, `server asked to reconnect in ${body.after_ms} ms`);
    this.armTimer(body.after_ms, () => this.open());
  }

  onFail(transport, why) {
    if (this.closed || transport !== this.transport) return;
    this.current?.close();
    this.current = null;
    this.failures += 1;
    this.emit('control', 'error', { message: `${transport}: ${why}` });
    if (this.failures >= FAILURES_BEFORE_FALLBACK && this.index + 1 < this.order.length) {
      this.index += 1;
      this.failures = 0;
      this.emit('control', 'info', { message: `falling back to ${this.order[this.index]}` });
      this.open();
      return;
    }
    const delay = jitter(Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.failures));
    this.emitState('reconnecting', transport, `${why}; retrying in ${delay} ms`);
    this.armTimer(delay, () => this.open());
  }
}

// --- the three transports -------------------------------------------------------------
// Each returns {close()} and reports through the handlers; `fail` is called at most once
// per attempt that matters (Live ignores calls for a transport it has left).

function openWebSocket(live, h) {
  const url = apiUrl('/v1/ws', { topics: live.topic, cursor: live.cursor }, live.base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  let done = false;
  const ws = new WebSocket(url);
  ws.onmessage = (m) => {
    h.alive();
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    switch (frame.op) {
      case 'ready':
        return h.ready(frame);
      case 'event': {
        const { op, ...envelope } = frame;
        return h.event(envelope);
      }
      case 'heartbeat':
        return h.heartbeat();
      case 'reset':
        return h.reset(frame);
      case 'reconnect':
        done = true;
        return h.reconnect(frame);
      case 'error':
        return live.emit('control', 'error', frame);
      default:
        return undefined; // subscribed, pong: nothing to do here
    }
  };
  ws.onclose = (e) => {
    if (!done) h.fail(`closed (${e.code}${e.reason ? ` ${e.reason}` : ''})`);
    done = true;
  };
  return {
    close() {
      done = true;
      ws.close(1000);
    },
  };
}

function openSse(live, h) {
  const url = apiUrl('/v1/sse', { topics: live.topic, cursor: live.cursor }, live.base);
  let done = false;
  const es = new EventSource(url);
  const json = (fn) => (m) => {
    h.alive();
    try {
      fn(JSON.parse(m.data));
    } catch {
      /* not ours */
    }
  };
  es.addEventListener('ready', json(h.ready));
  es.addEventListener('reset', json(h.reset));
  es.addEventListener(
    'reconnect',
    json((body) => {
      done = true;
      es.close(); // we reconnect on our own schedule, not EventSource's `retry`
      h.reconnect(body);
    }),
  );
  es.onmessage = json(h.event);
  // SSE heartbeats are comment lines: EventSource does not dispatch them.
  es.onerror = () => {
    if (done) return;
    done = true;
    es.close(); // resume ourselves, with ?cursor=, and count the failure
    h.fail(es.readyState === EventSource.CLOSED ? 'refused' : 'connection lost');
  };
  return {
    close() {
      done = true;
      es.close();
    },
  };
}

function openLongPoll(live, h) {
  let stopped = false;
  let ctrl = null;
  let first = true;
  (async () => {
    while (!stopped) {
      // The first poll answers at once (timeout=0): it is this transport's `ready`.
      const params = { topics: live.topic, cursor: live.cursor, timeout: first ? 0 : undefined };
      ctrl = new AbortController();
      const deadline = setTimeout(() => ctrl.abort(), live.pollTimeoutMs + 10000);
      let answer;
      try {
        const res = await fetch(apiUrl('/v1/poll', params, live.base), {
          cache: 'no-store',
          signal: ctrl.signal,
        });
        answer = await res.json();
        if (!res.ok) throw new Error(answer?.error?.message || `HTTP ${res.status}`);
      } catch (e) {
        if (!stopped) h.fail(e.name === 'AbortError' ? 'poll timed out' : e.message);
        return;
      } finally {
        clearTimeout(deadline);
      }
      if (stopped) return;
      const wasFirst = first;
      if (first) {
        first = false;
        h.ready({ cursor: live.cursor || answer.cursor, transport: 'longpoll' });
      }
      // Events first, then a reset (the server's order when both are present).
      for (const env of answer.events) h.event(env);
      if (answer.reset) h.reset(answer.reset);
      live.cursor = answer.cursor; // what to send next
      if (answer.reconnect) {
        stopped = true;
        h.reconnect(answer.reconnect);
        return;
      }
      // An empty answer is long-polling's heartbeat.
      if (!wasFirst && answer.events.length === 0 && !answer.reset) h.heartbeat();
    }
  })();
  return {
    close() {
      stopped = true;
      ctrl?.abort();
    },
  };
}

// --- the page -------------------------------------------------------------------------

function ui() {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const forced = (params.get('transports') || '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => TRANSPORTS.includes(s));

  const topicInput = $('topic');
  const transportSelect = $('transport');
  topicInput.value = params.get('topic') || 'demo';
  $('pub-topic').value = topicInput.value;
  if (forced.length) {
    transportSelect.value = forced[0];
    transportSelect.disabled = true;
    $('forced').hidden = false;
    $('forced-list').textContent = forced.join(', ');
  }

  for (const el of document.querySelectorAll('.origin')) el.textContent = location.origin;

  let live = null;
  let count = 0;

  const setState = ({ state, transport, mode, detail, cursor }) => {
    $('state').textContent = state;
    $('state').dataset.state = state;
    $('mode').textContent = mode;
    $('tp').textContent = transport || '—';
    $('cursor').textContent = cursor || '—';
    $('detail').textContent = detail || '';
    if (transport === 'sse') $('heartbeat').textContent = 'comment lines (EventSource does not show them)';
    else if ($('heartbeat').textContent.startsWith('comment')) $('heartbeat').textContent = '—';
    $('connect').textContent = state === 'closed' || state === 'off' ? 'Connect' : 'Reconnect';
  };

  const activity = (name, body) => {
    if (name === 'heartbeat') {
      $('heartbeat').textContent = new Date().toLocaleTimeString();
      return;
    }
    const li = document.createElement('li');
    li.className = `act act-${name}`;
    const time = document.createElement('time');
    time.textContent = new Date().toLocaleTimeString();
    const tag = document.createElement('b');
    tag.textContent = name;
    const text = document.createElement('span');
    text.textContent = body.message ?? JSON.stringify(body);
    li.append(time, tag, text);
    $('activity').prepend(li);
    while ($('activity').children.length > 50) $('activity').lastChild.remove();
    if (name === 'reset') {
      $('banner').hidden = false;
      $('banner-text').textContent =
        `History incomplete (${body.reason}): an app would refetch its state now. ` +
        `The stream continues after ${body.cursor}.`;
    }
  };

  const addEvent = (env) => {
    count += 1;
    $('count').textContent = String(count);
    $('empty').hidden = true;
    const li = document.createElement('li');
    li.className = 'event';
    const head = document.createElement('div');
    head.className = 'event-head';
    const type = document.createElement('span');
    type.className = 'type';
    type.textContent = env.type;
    const topic = document.createElement('span');
    topic.className = 'topic';
    topic.textContent = env.topic;
    const id = document.createElement('code');
    id.className = 'id';
    id.textContent = env.id;
    const ts = document.createElement('time');
    ts.dateTime = env.ts;
    ts.title = env.ts;
    ts.textContent = new Date(env.ts).toLocaleTimeString();
    head.append(type, topic, id, ts);
    const data = document.createElement('pre');
    data.textContent = JSON.stringify(env.data, null, 2);
    li.append(head, data);
    $('events').prepend(li);
    while ($('events').children.length > 200) $('events').lastChild.remove();
    $('cursor').textContent = env.id;
  };

  const connect = () => {
    const topic = topicInput.value.trim();
    const carry = live && live.topic === topic ? live.cursor : null;
    live?.close();
    if (!live || live.topic !== topic) {
      $('events').replaceChildren();
      $('empty').hidden = false;
      count = 0;
      $('count').textContent = '0';
    }
    $('banner').hidden = true;
    const choice = forced.length
      ? forced
      : transportSelect.value === 'auto'
        ? null
        : [transportSelect.value];
    live = new Live({
      topic,
      transports: choice,
      cursor: carry,
      on: { state: setState, event: addEvent, control: activity },
    });
    live.start();
  };

  $('connect-form').addEventListener('submit', (e) => {
    e.preventDefault();
    connect();
  });
  $('disconnect').addEventListener('click', () => live?.close());
  $('banner-close').addEventListener('click', () => {
    $('banner').hidden = true;
  });

  $('publish-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('pub-result');
    const raw = $('pub-data').value.trim();
    const event = { topic: $('pub-topic').value.trim(), type: $('pub-type').value.trim() };
    if (raw) {
      try {
        event.data = JSON.parse(raw);
      } catch (err) {
        out.className = 'result bad';
        out.textContent = `data is not JSON: ${err.message}`;
        return;
      }
    }
    const headers = { 'Content-Type': 'application/json' };
    const key = $('pub-key').value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    try {
      const res = await fetch(apiUrl('/v1/events'), {
        method: 'POST',
        headers,
        body: JSON.stringify(event),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(`${res.status} ${body.error.code}: ${body.error.message}`);
      out.className = 'result ok';
      out.textContent = `published ${body.ids.join(', ')}`;
    } catch (err) {
      out.className = 'result bad';
      out.textContent = err.message;
    }
  });

  transportSelect.addEventListener('change', connect);
  topicInput.addEventListener('change', () => {
    $('pub-topic').value = topicInput.value.trim();
  });

  connect();
}

if (typeof document !== 'undefined') {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', ui);
  else ui();
}
