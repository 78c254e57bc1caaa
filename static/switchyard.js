// switchyard browser client — an ES module with no dependencies (SPEC §8).
//
//   import { connect } from '/switchyard.js';
//   const conn = connect({ topics: ['projects/42', 'notifications/user-7'] });
//   conn.on('event', (e) => render(e));          // {id, topic, type, data, ts}
//   conn.on('mode', (m) => showBanner(m));       // {mode, transport, reason}
//   conn.on('reset', (r) => refetchEverything()); // {reason, cursor}
//
// How it works, in one paragraph: ask `${url}/negotiate` which transports the server
// offers and in what order; try them one after the other, each with a ready deadline
// (a stream that opens but never says `ready` is being held back by a proxy); watch the
// live stream for silence; on failure fall back to the next transport, remember the
// failure in localStorage for a while, report it to `${url}/reports`, and reconnect with
// exponential back-off and full jitter. Every (re)connect resumes from the last cursor,
// duplicates are dropped by cursor, and from a fallback the better transport is probed
// now and then and switched to "make before break", so nothing is lost or doubled.
//
// The client owns reconnection: it never relies on EventSource's automatic retry or on
// `Last-Event-ID` surviving a proxy; the cursor always travels in the URL.

/** Transport names, best first (the server's order wins; this is only the vocabulary). */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'longpoll']);

/**
 * Prefix of the localStorage keys that remember a failed transport:
 * `switchyard:failed:<transport>` = `{"until": <ms since 1970>, "reason": "no_ready"}`
 * (a bare number is accepted too). Expired entries are removed when read.
 */
export const FAILURE_KEY_PREFIX = 'switchyard:failed:';

/** Reasons the server accepts in `POST /reports` (anything else is a 400). */
const REPORT_REASONS = new Set([
  'upgrade_failed', 'no_ready', 'stalled', 'http_status',
  'network_error', 'closed', 'disabled', 'probe_failed',
]);

/** Tuning defaults; every one can be overridden in `connect()` options. */
const DEFAULTS = {
  url: '/v1',
  readyTimeoutMs: 4000, // a transport must deliver `ready` within this
  stallFactor: 2.5, // silence longer than this many heartbeats = dead
  backoffBaseMs: 500, // first reconnect delay (full jitter: 0..base)
  backoffMaxMs: 30000, // cap of the exponential back-off
  failMemoryMs: 10 * 60 * 1000, // how long a failed transport is skipped on later loads
  probeIntervalMs: 60000, // from a fallback, how often to try the better transport
  offRetryMs: 60000, // with every transport off, how often to ask negotiate again
  pollSlackMs: 5000, // a poll that takes poll_timeout_ms + this is a stall
};

/** A connection that lived this long (and heard something after `ready`) was healthy. */
const STABLE_MS = 10000;
/** In a hidden tab, timers are throttled and nobody is looking: allow 4× the silence. */
const HIDDEN_RELAX = 4;
/** Two quick drops or stalls of one transport in a row make it a failed transport. */
const STRIKES_TO_FALL_BACK = 2;
/** After a wake-up, an open WebSocket must answer a ping within this, or it is dead. */
const WAKE_PONG_MS = 3000;
/** Envelope ids remembered for duplicate detection (a small ring). */
const SEEN_IDS = 512;

const now = () => Date.now();
const isHidden = () => typeof document !== 'undefined' && document.visibilityState === 'hidden';
/** `ms` spread by ±25 %, so many tabs do not act in lockstep. */
const jitter = (ms) => Math.round(ms * (0.75 + Math.random() * 0.5));

/**
 * Splits a cursor `<epoch>-<seq>` for duplicate detection. Cursors are otherwise
 * opaque: they are handed back to the server verbatim.
 * @param {string|null|undefined} cursor
 * @returns {{epoch: string, seq: bigint} | null}
 */
function parseCursor(cursor) {
  const m = typeof cursor === 'string' && /^([A-Za-z0-9]{1,32})-(\d{1,20})$/.exec(cursor);
  return m ? { epoch: m[1], seq: BigInt(m[2]) } : null;
}

/** Parses JSON, or returns null. */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Opens a live connection. See `switchyard.d.ts` for the options and the events.
 * @param {import('./switchyard').ConnectOptions} options
 * @returns {import('./switchyard').Connection}
 */
export function connect(options) {
  return new Connection(options);
}

class Connection {
  /** @param {import('./switchyard').ConnectOptions} options */
  constructor(options = {}) {
    const topics = typeof options.topics === 'string' ? options.topics.split(',') : options.topics;
    this._topics = (Array.isArray(topics) ? topics : []).map((t) => String(t).trim()).filter(Boolean);
    if (!this._topics.length) throw new TypeError('switchyard.connect: `topics` must name at least one topic');
    const allowed = typeof options.transports === 'string' ? options.transports.split(',') : options.transports;
    /** The app's narrowing of the server's transports (null = take what the server offers). */
    this._allowed = Array.isArray(allowed) && allowed.length ? allowed.map((t) => String(t).trim()) : null;
    this._o = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      if (options[key] !== undefined && options[key] !== null) this._o[key] = options[key];
    }
    this._storage = options.storage !== undefined ? options.storage : safeLocalStorage();
    this._reportsOn = options.reports !== false;
    // Resolved against the page, never a hard-coded host.
    this._base = new URL(String(this._o.url), globalThis.location ? globalThis.location.href : undefined)
      .href.replace(/[?#].*$/, '').replace(/\/+$/, '');

    this._listeners = { event: new Set(), mode: new Set(), reset: new Set() };
    this._cursor = null;
    this._pos = null; // parsed _cursor
    this._seen = new Set();
    this._seenRing = [];
    if (options.cursor) this._setCursor(String(options.cursor));

    this._mode = 'reconnecting';
    this._modeTransport = null;
    this._modeReason = 'connecting';
    this._order = []; // server order ∩ app choice, from the last negotiate
    this._baseWhy = null; // why the best offered transport is not WebSocket
    this._why = null; // the latest fallback reason
    this._heartbeatMs = 15000;
    this._pollTimeoutMs = 25000;
    /** @type {Link|null} the transport in use (or being tried, while `ready` is false) */
    this._active = null;
    /** @type {Link|null} a probe of a better transport */
    this._pending = null;
    this._roundList = null; // transports still to try in this round
    this._attempt = 0; // back-off exponent
    this._strikes = {}; // per transport: quick drops / stalls in a row
    this._timers = new Map();
    this._reconnectKind = null; // 'server' (honour after_ms) or 'backoff'
    this._negotiating = false;
    this._gen = 0;
    this._closed = false;
    this._reported = new Map();
    this._reportCount = 0;

    this._onVisibility = () => this._wake(isHidden() ? 'hidden' : 'visible');
    this._onOnline = () => this._wake('online');
    this._onPageShow = (e) => { if (e.persisted) this._wake('pageshow'); };
    if (typeof document !== 'undefined') document.addEventListener('visibilitychange', this._onVisibility);
    if (typeof window !== 'undefined') {
      window.addEventListener('online', this._onOnline);
      window.addEventListener('pageshow', this._onPageShow);
    }
    // Start on the next tick, so listeners added right after connect() see the first mode.
    Promise.resolve().then(() => {
      if (this._closed) return;
      this._emit('mode', { mode: this._mode, transport: null, reason: this._modeReason });
      this._start();
    });
  }

  /** The transport in use, or null while (re)connecting or off. */
  get transport() {
    return this._active && this._active.ready ? this._active.name : null;
  }

  /** `live`, `degraded`, `reconnecting` or `off`. */
  get mode() {
    return this._mode;
  }

  /** The cursor the next (re)connect resumes after: the last event's id, or a reset's. */
  get cursor() {
    return this._cursor;
  }

  /**
   * Adds a listener for `event`, `mode` or `reset`.
   * @returns {() => void} removes the listener again
   */
  on(name, fn) {
    const set = this._listeners[name];
    if (!set) throw new TypeError(`switchyard: unknown event "${name}" (event, mode, reset)`);
    if (typeof fn !== 'function') throw new TypeError('switchyard: listener must be a function');
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Stops everything: sockets, polls, timers and page listeners. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._gen++;
    for (const t of this._timers.values()) clearTimeout(t);
    this._timers.clear();
    if (this._pending) this._pending.close();
    if (this._active) this._active.close();
    this._pending = this._active = null;
    if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', this._onVisibility);
    if (typeof window !== 'undefined') {
      window.removeEventListener('online', this._onOnline);
      window.removeEventListener('pageshow', this._onPageShow);
    }
    this._mode = 'off';
    this._modeReason = 'closed';
  }

  // ---- events ---------------------------------------------------------------------

  _emit(name, payload) {
    for (const fn of [...this._listeners[name]]) {
      try {
        fn(payload);
      } catch (err) {
        setTimeout(() => { throw err; }); // surface it, but keep the client running
      }
    }
  }

  _setMode(mode, transport, reason) {
    if (this._closed) return;
    if (mode === this._mode && transport === this._modeTransport && reason === this._modeReason) return;
    this._mode = mode;
    this._modeTransport = transport;
    this._modeReason = reason;
    this._emit('mode', { mode, transport, reason });
  }

  /** Sets the mode after a transport became ready (or was swapped). */
  _announce() {
    const name = this._active.name;
    if (name === 'websocket') {
      this._setMode('live', name, null);
    } else if (name === this._order[0]) {
      this._setMode('degraded', name, this._baseWhy || 'preference');
    } else {
      this._setMode('degraded', name, this._why || 'remembered');
    }
  }

  // ---- cursor and duplicates ------------------------------------------------------

  _setCursor(cursor) {
    this._cursor = cursor;
    this._pos = parseCursor(cursor);
  }

  /** Moves the cursor forward to a position the server gave (never backwards). */
  _adoptCursor(cursor) {
    if (typeof cursor !== 'string' || !cursor) return;
    const next = parseCursor(cursor);
    if (!this._cursor) this._setCursor(cursor);
    else if (next && this._pos && next.epoch === this._pos.epoch && next.seq > this._pos.seq) this._setCursor(cursor);
  }

  /** Delivers an envelope unless it was seen before (by id, or by seq within an epoch). */
  _linkEvent(link, env) {
    if (link !== this._active && link !== this._pending) return;
    if (!env || typeof env.id !== 'string' || this._seen.has(env.id)) return;
    const pos = parseCursor(env.id);
    if (pos && this._pos && pos.epoch === this._pos.epoch && pos.seq <= this._pos.seq) return;
    this._seen.add(env.id);
    this._seenRing.push(env.id);
    if (this._seenRing.length > SEEN_IDS) this._seen.delete(this._seenRing.shift());
    this._setCursor(env.id);
    this._emit('event', env);
  }

  /** The server could not resume: tell the app, continue from the cursor it gave. */
  _linkReset(link, body) {
    if (link !== this._active && link !== this._pending) return;
    if (!body || typeof body.cursor !== 'string') return;
    this._setCursor(body.cursor);
    this._emit('reset', { reason: String(body.reason || 'unknown'), cursor: body.cursor });
  }

  // ---- timers -----------------------------------------------------------------------

  _timer(name, ms, fn) {
    this._clearTimer(name);
    this._timers.set(name, setTimeout(() => {
      this._timers.delete(name);
      if (!this._closed) fn();
    }, Math.max(0, ms)));
  }

  _clearTimer(name) {
    clearTimeout(this._timers.get(name));
    this._timers.delete(name);
  }

  /** Exponential back-off with full jitter; each call grows the next delay. */
  _backoff() {
    const cap = Math.min(this._o.backoffMaxMs, this._o.backoffBaseMs * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    return Math.random() * cap;
  }

  _scheduleReconnect(delay, kind = 'backoff') {
    this._reconnectKind = kind;
    this._timer('reconnect', delay, () => this._start());
  }

  // ---- negotiate and the round of attempts --------------------------------------------

  /** Asks negotiate, then tries the transports in order. */
  async _start() {
    if (this._closed || this._negotiating) return;
    this._clearTimer('reconnect');
    this._clearTimer('off');
    this._closeLinks();
    const gen = ++this._gen;
    let info;
    this._negotiating = true;
    try {
      info = await this._negotiate();
    } catch (err) {
      if (this._closed || gen !== this._gen) return;
      this._setMode('reconnecting', null, (err && err.reason) || 'network_error');
      this._scheduleReconnect(this._backoff());
      return;
    } finally {
      this._negotiating = false;
    }
    if (this._closed || gen !== this._gen) return;
    if (info.heartbeat_ms > 0) this._heartbeatMs = info.heartbeat_ms;
    if (info.poll_timeout_ms > 0) this._pollTimeoutMs = info.poll_timeout_ms;
    // Start from the head the server named, so nothing published from now on is missed.
    if (!this._cursor && typeof info.cursor === 'string' && info.cursor) this._setCursor(info.cursor);
    const offered = info.transports.map((t) => t && t.name).filter((n) => TRANSPORTS.includes(n));
    this._order = this._allowed ? offered.filter((n) => this._allowed.includes(n)) : offered;
    if (!this._order.length) {
      // Every transport is off (or none the app accepts): the page must offer a refresh.
      this._setMode('off', null, 'disabled');
      this._timer('off', jitter(this._o.offRetryMs), () => this._start());
      return;
    }
    this._baseWhy = !offered.includes('websocket') ? 'disabled'
      : !this._order.includes('websocket') ? 'forced' : null;
    const list = this._candidates();
    this._why = list[0] !== this._order[0] ? 'remembered' : null;
    this._roundList = list;
    this._tryNext();
  }

  async _negotiate() {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this._o.readyTimeoutMs + 1000);
    try {
      let res;
      try {
        res = await fetch(`${this._base}/negotiate?topics=${this._topicsParam()}`,
          { cache: 'no-store', credentials: 'same-origin', signal: ctrl.signal });
      } catch {
        throw { reason: 'network_error' };
      }
      const body = res.ok ? await res.json().catch(() => null) : null;
      if (!body || !Array.isArray(body.transports)) {
        if (res.status === 400 && typeof console !== 'undefined') {
          console.warn('switchyard: negotiate refused the request (check the topics):', res.status);
        }
        throw { reason: 'http_status' };
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The transports to try: those not remembered as failed first, then the others. */
  _candidates() {
    const fresh = this._order.filter((n) => !this._remembered(n));
    return fresh.concat(this._order.filter((n) => !fresh.includes(n)));
  }

  _tryNext() {
    const name = this._roundList && this._roundList.shift();
    if (!name) {
      this._roundList = null;
      this._setMode('reconnecting', null, this._why || 'closed');
      this._scheduleReconnect(this._backoff());
      return;
    }
    this._active = this._makeLink(name, 'attempt');
  }

  _makeLink(name, role) {
    const Kind = name === 'websocket' ? WsLink : name === 'sse' ? SseLink : PollLink;
    const link = new Kind(this, name, role);
    link.open();
    return link;
  }

  _closeLinks() {
    if (this._pending) this._pending.close();
    if (this._active) this._active.close();
    this._pending = this._active = null;
    this._clearTimer('watchdog');
    this._clearTimer('probe');
  }

  // ---- what links report ----------------------------------------------------------

  _linkReady(link, info) {
    if (link !== this._active && link !== this._pending) return;
    if (info && info.heartbeat_ms > 0) link.heartbeatMs = info.heartbeat_ms;
    if (!this._cursor && info && typeof info.cursor === 'string') this._setCursor(info.cursor);
    this._forget(link.name);
    if (link === this._pending) {
      // A probe is ready: it replays from the cursor it was opened
      // with, the old link delivered up to now, duplicates are dropped by cursor. Switch.
      const old = this._active;
      this._active = link;
      this._pending = null;
      if (old) old.close();
    }
    this._roundList = null;
    this._announce();
    this._arm();
    this._scheduleProbe();
  }

  _linkFailed(link, reason) {
    if (link === this._pending) {
      this._pending = null;
      this._remember(link.name, 'probe_failed');
      this._report(link.name, this._active ? this._active.name : 'none', 'probe_failed');
      this._scheduleProbe();
      return;
    }
    if (link !== this._active) return;
    if (link.ready) {
      this._lost(link, reason);
      return;
    }
    // An attempt of this round failed: remember, report, try the next one.
    this._active = null;
    this._remember(link.name, reason);
    this._report(link.name, (this._roundList && this._roundList[0]) || 'none', reason);
    this._why = reason;
    this._tryNext();
  }

  /** A transport that was ready died (closed, errored or stalled). */
  _lost(link, reason) {
    const name = link.name;
    if (this._active === link) this._active = null;
    link.close();
    this._closeLinks();
    const lifetime = now() - link.readyAt;
    if (link.proven && lifetime >= STABLE_MS) this._attempt = 0;
    if (reason === 'stalled' || lifetime < STABLE_MS) this._strikes[name] = (this._strikes[name] || 0) + 1;
    if ((this._strikes[name] || 0) >= STRIKES_TO_FALL_BACK) {
      this._fallbackFrom(link, reason);
      return;
    }
    this._setMode('reconnecting', null, reason);
    if (reason === 'stalled' && this._order.length) {
      // The server answered recently and this path went quiet: re-open the same
      // transport at once, without a negotiate (whose pooled HTTP connection may sit on
      // the very path that stalled); if that attempt fails, the rest of the list follows.
      this._why = reason;
      this._roundList = [name].concat(this._candidates().filter((n) => n !== name));
      this._tryNext();
      return;
    }
    // Closed or errored: the server may be gone (restart, crash). Back off, then ask
    // negotiate first, so a dead server does not get every transport marked failed.
    this._scheduleReconnect(this._backoff());
  }

  /** Gives up on a ready transport: remember it, report it, go down the list now. */
  _fallbackFrom(link, reason) {
    if (!link) return;
    const name = link.name;
    if (this._active === link) this._active = null;
    link.close();
    this._closeLinks();
    this._strikes[name] = 0;
    this._remember(name, reason);
    const list = this._candidates().filter((n) => n !== name).concat(name);
    this._report(name, list[0] === name ? 'none' : list[0], reason);
    this._why = reason;
    this._setMode('reconnecting', null, reason);
    this._roundList = list;
    this._tryNext();
  }

  /** The server is draining: come back after the delay it chose (already jittered). */
  _linkReconnect(link, body) {
    if (link === this._pending) {
      this._pending = null;
      link.close();
      return;
    }
    if (link !== this._active) return;
    this._closeLinks();
    this._attempt = 0;
    const after = Number(body && body.after_ms);
    this._setMode('reconnecting', null, String((body && body.reason) || 'reconnect'));
    this._scheduleReconnect(after >= 0 ? after : this._backoff(), 'server');
  }

  /** A frame arrived after `ready`: the transport works, forget its strikes. */
  _linkProven(link) {
    this._strikes[link.name] = 0;
  }

  // ---- liveness ---------------------------------------------------------------------

  /**
   * Watchdog over the active stream: silence past stallFactor × heartbeat (relaxed in
   * hidden tabs) means dead. Long-poll has its own per-request deadline instead.
   */
  _arm() {
    this._clearTimer('watchdog');
    const link = this._active;
    if (!link || !link.ready || link.name === 'longpoll') return;
    const limit = link.heartbeatMs * this._o.stallFactor * (isHidden() ? HIDDEN_RELAX : 1);
    const silent = now() - link.last;
    if (silent < limit) {
      this._timer('watchdog', limit - silent + 20, () => this._arm());
      return;
    }
    // WebSocket and SSE alike: the server sends a heartbeat the page can see (WS
    // `{"op":"heartbeat"}`, SSE a named `heartbeat` event), so silence means the bytes
    // stopped somewhere on the way.
    link.fail('stalled');
  }

  /** From a fallback, now and then try the better transport. */
  _scheduleProbe() {
    this._clearTimer('probe');
    const link = this._active;
    if (!link || !link.ready || link.name === this._order[0]) return;
    this._timer('probe', jitter(this._o.probeIntervalMs), () => this._probe());
  }

  _probe() {
    const link = this._active;
    if (!link || !link.ready) return;
    const index = this._order.indexOf(link.name);
    const better = index < 0 ? this._order : this._order.slice(0, index);
    const target = better.find((n) => !this._remembered(n));
    if (!target || this._pending || isHidden()) {
      this._scheduleProbe();
      return;
    }
    this._pending = this._makeLink(target, 'probe');
  }

  /** Page became visible, came online or was restored: check now, catch up now. */
  _wake(kind) {
    if (this._closed) return;
    if (kind === 'hidden') {
      this._arm();
      return;
    }
    if (this._mode === 'off' && this._timers.has('off')) {
      this._start();
      return;
    }
    if (this._timers.has('reconnect') && this._reconnectKind !== 'server') {
      this._start();
      return;
    }
    const link = this._active;
    if (!link || !link.ready) return;
    link.check();
    if (this._active === link) this._arm();
  }

  // ---- failure memory and reports ---------------------------------------------------

  _remembered(name) {
    if (!this._storage) return false;
    try {
      const raw = this._storage.getItem(FAILURE_KEY_PREFIX + name);
      if (!raw) return false;
      const value = parseJson(raw);
      const until = Number(value && typeof value === 'object' ? value.until : value);
      if (until > now()) return true;
      this._storage.removeItem(FAILURE_KEY_PREFIX + name);
    } catch { /* storage unavailable */ }
    return false;
  }

  _remember(name, reason) {
    if (!this._storage || !(this._o.failMemoryMs > 0)) return;
    try {
      this._storage.setItem(FAILURE_KEY_PREFIX + name,
        JSON.stringify({ until: now() + this._o.failMemoryMs, reason }));
    } catch { /* full or unavailable */ }
  }

  _forget(name) {
    try {
      if (this._storage) this._storage.removeItem(FAILURE_KEY_PREFIX + name);
    } catch { /* unavailable */ }
  }

  /** POST {from, to, reason} to the reports endpoint; fire and forget, lightly throttled. */
  _report(from, to, reason) {
    if (!this._reportsOn || !REPORT_REASONS.has(reason)) return;
    const key = `${from}>${to}:${reason}`;
    if (now() - (this._reported.get(key) || 0) < 10000 || this._reportCount >= 50) return;
    this._reported.set(key, now());
    this._reportCount++;
    try {
      fetch(`${this._base}/reports`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ from, to, reason }),
        credentials: 'same-origin',
        keepalive: true,
      }).catch(() => {});
    } catch { /* ignore */ }
  }

  // ---- URLs -----------------------------------------------------------------------

  _topicsParam() {
    return this._topics.map(encodeURIComponent).join(',');
  }

  /** `${url}/${path}?topics=…&cursor=…`, with ws:/wss: for the WebSocket. */
  _streamUrl(path) {
    let url = `${this._base}/${path}?topics=${this._topicsParam()}`;
    if (this._cursor) url += `&cursor=${encodeURIComponent(this._cursor)}`;
    if (path === 'ws') url = url.replace(/^http(s?):/i, 'ws$1:');
    return url;
  }
}

function safeLocalStorage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null; // e.g. blocked third-party storage
  }
}

// ---- transports ---------------------------------------------------------------------

/**
 * One attempt at one transport. It reports to its Connection, which decides what a
 * failure means; once closed it says nothing more.
 */
class Link {
  constructor(conn, name, role) {
    this.conn = conn;
    this.name = name;
    /** 'attempt' (part of a round) or 'probe' (a better transport) */
    this.role = role;
    this.ready = false;
    this.readyAt = 0;
    this.opened = false;
    this.proven = false; // heard something after `ready`
    this.closed = false;
    this.last = now(); // last message of any kind
    this.heartbeatMs = conn._heartbeatMs;
    this._timers = new Set();
    this._readyTimer = this.timer(conn._o.readyTimeoutMs, () => this.fail(this.deadlineReason()));
  }

  timer(ms, fn) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  clearTimer(t) {
    clearTimeout(t);
    this._timers.delete(t);
  }

  deadlineReason() {
    return 'no_ready';
  }

  /** Any message: the stream is alive. */
  touch() {
    this.last = now();
    if (this.ready && !this.proven) {
      this.proven = true;
      this.conn._linkProven(this);
    }
  }

  markReady(info) {
    if (this.closed || this.ready) return;
    this.ready = true;
    this.readyAt = now();
    this.last = now();
    this.clearTimer(this._readyTimer);
    this.conn._linkReady(this, info || {});
  }

  fail(reason) {
    if (this.closed) return;
    this.close();
    this.conn._linkFailed(this, reason);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this.shutdown();
  }

  /** Runs a constructor that may throw (bad URL) and turns the throw into a failure. */
  guard(fn) {
    try {
      fn();
    } catch {
      setTimeout(() => this.fail('network_error'));
    }
  }
}

/** WebSocket: JSON text frames; `{"op":"ready"}` first, heartbeats visible. */
class WsLink extends Link {
  open() {
    this.guard(() => {
      const ws = new WebSocket(this.conn._streamUrl('ws'));
      this.ws = ws;
      ws.onopen = () => { this.opened = true; };
      ws.onmessage = (m) => this.message(m.data);
      // A refused upgrade (426 from a proxy that stripped it, 503, 403) surfaces as a
      // close before open: the browser does not expose the HTTP status.
      ws.onclose = () => this.fail(this.ready || this.opened ? 'closed' : 'upgrade_failed');
    });
  }

  deadlineReason() {
    return this.opened ? 'no_ready' : 'upgrade_failed';
  }

  message(data) {
    if (this.closed) return;
    const msg = typeof data === 'string' ? parseJson(data) : null;
    if (!msg || typeof msg.op !== 'string') return;
    this.touch();
    switch (msg.op) {
      case 'ready':
        this.markReady(msg);
        break;
      case 'event': {
        const { op, ...envelope } = msg;
        this.conn._linkEvent(this, envelope);
        break;
      }
      case 'reset':
        this.conn._linkReset(this, msg);
        break;
      case 'reconnect':
        this.conn._linkReconnect(this, msg);
        break;
      default: // heartbeat, pong, subscribed, error: liveness only
    }
  }

  /** After a wake-up: a closed socket is dead; an open one is asked for a pong. */
  check() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.fail('closed');
      return;
    }
    const asked = now();
    try {
      this.ws.send('{"op":"ping"}');
    } catch {
      this.fail('closed');
      return;
    }
    // A socket that a sleeping laptop or a changed network left half-dead stays OPEN
    // without a word: no answer to the ping soon means it is gone.
    this.timer(WAKE_PONG_MS, () => {
      if (this.last < asked) this.fail('stalled');
    });
  }

  shutdown() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000);
    } catch { /* already closed */ }
  }
}

/** Server-Sent Events through EventSource; control events `ready`, `reset`, `reconnect`. */
class SseLink extends Link {
  open() {
    this.guard(() => {
      const es = new EventSource(this.conn._streamUrl('sse'));
      this.es = es;
      es.onopen = () => { this.opened = true; };
      es.addEventListener('ready', (e) => {
        this.touch();
        this.markReady(parseJson(e.data));
      });
      es.onmessage = (e) => {
        this.touch();
        this.conn._linkEvent(this, parseJson(e.data));
      };
      // The server's heartbeat: a comment line for curl plus this named event, which is
      // what EventSource lets a page see.
      es.addEventListener('heartbeat', () => this.touch());
      es.addEventListener('reset', (e) => {
        this.touch();
        this.conn._linkReset(this, parseJson(e.data));
      });
      es.addEventListener('reconnect', (e) => {
        this.touch();
        this.conn._linkReconnect(this, parseJson(e.data));
      });
      // Never let EventSource retry by itself: close it and let the Connection decide.
      // CLOSED before open means a fatal answer (HTTP status or content type).
      es.onerror = () => {
        const fatal = es.readyState === EventSource.CLOSED;
        this.fail(this.ready || this.opened ? 'closed' : fatal ? 'http_status' : 'network_error');
      };
    });
  }

  check() {
    if (!this.es || this.es.readyState === EventSource.CLOSED) this.fail('closed');
    // Otherwise the watchdog (re-armed by the caller, unrelaxed now) judges the silence.
  }

  shutdown() {
    if (this.es) this.es.close();
  }
}

/**
 * Long polling: a fetch loop on `${url}/poll`. The first poll uses `timeout=0`, so
 * its answer is the quick "ready"; later polls wait the server's poll timeout, and one
 * that has not answered after poll_timeout_ms + pollSlackMs is a stall.
 */
class PollLink extends Link {
  open() {
    this.poll();
  }

  poll() {
    if (this.closed) return;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const first = !this.ready;
    let stalled = false;
    const deadline = first ? null
      : this.timer(this.conn._pollTimeoutMs + this.conn._o.pollSlackMs, () => {
        stalled = true;
        ctrl.abort();
      });
    const url = this.conn._streamUrl('poll') + (first ? '&timeout=0' : '');
    fetch(url, { cache: 'no-store', credentials: 'same-origin', signal: ctrl.signal,
      headers: { Accept: 'application/json' } })
      .then((res) => {
        if (!res.ok) throw { reason: 'http_status' };
        return res.json().catch(() => { throw { reason: 'http_status' }; });
      })
      .then((answer) => {
        if (this.closed || ctrl !== this.ctrl) return;
        this.clearTimer(deadline);
        this.answer(answer || {});
      }, (err) => {
        if (this.closed || ctrl !== this.ctrl) return; // closed, or superseded by kick()
        this.clearTimer(deadline);
        this.fail(stalled ? 'stalled' : (err && err.reason) || 'network_error');
      });
  }

  answer(a) {
    this.touch();
    if (!this.ready) this.markReady({ cursor: a.cursor });
    // A reset comes before every event of the same answer (the server cuts an answer
    // short rather than put events before a reset).
    if (a.reset) this.conn._linkReset(this, a.reset);
    for (const env of Array.isArray(a.events) ? a.events : []) {
      if (this.closed) return;
      this.conn._linkEvent(this, env);
    }
    if (this.closed) return;
    this.conn._adoptCursor(a.cursor);
    if (a.reconnect) {
      this.conn._linkReconnect(this, a.reconnect);
      return;
    }
    if (!this.closed) this.poll();
  }

  /** After a wake-up: do not wait for the pending poll, ask again now. */
  check() {
    const old = this.ctrl;
    this.ctrl = null;
    if (old) old.abort();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this.poll();
  }

  shutdown() {
    const ctrl = this.ctrl;
    this.ctrl = null;
    if (ctrl) ctrl.abort();
  }
}
