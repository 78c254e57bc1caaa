// switchyard browser client — an ES module with no dependencies (SPEC §8, §11).
//
//   import { connect } from '/switchyard.js';
//   const conn = connect({ topics: ['projects/42', 'notifications/user-7'] });
//   conn.on('event', (e) => render(e));          // {id, topic, type, data, ts}
//   conn.on('mode', (m) => showBanner(m));       // {mode, transport, reason}
//   conn.on('reset', (r) => refetchEverything()); // {reason, cursor}
//   await conn.subscribe(['projects/5']);         // change topics on the live connection
//
// How it works. Every tab of one origin and API `url` shares ONE server connection
// (SPEC §11): the tabs elect a leader with the Web Locks API, the leader runs the
// connection for the union of every tab's topics, and feeds the other tabs over a
// BroadcastChannel. Three layers, one class each:
//
//   Connection  what the page holds: its own topics, cursor, mode, listeners, role.
//   Hub         in the leader tab only: every tab's topics and positions; decides which
//               tab gets which event (each tab: its own topics, after its own position),
//               which cursor the connection must resume from, and whom a reset concerns.
//   Engine      the one server connection: ask `${url}/negotiate` which transports the
//               server offers; try them in order, each with a ready deadline (a stream that
//               opens but never says `ready` is being held back by a proxy); watch the live
//               stream for silence; on failure fall back to the next transport, remember the
//               failure in localStorage for a while, report it to `${url}/reports`, and
//               reconnect with exponential back-off and full jitter. Every (re)connect
//               resumes from the last cursor, duplicates are dropped by cursor, and from a
//               fallback the better transport is probed now and then and switched to "make
//               before break", so nothing is lost or doubled.
//
// A tab alone (`share: false`, or a browser without Web Locks or BroadcastChannel) runs
// the same Hub and Engine for itself, with no channel. The wire between tabs is
// described in docs/protocol.md ("One connection per browser").
//
// The client owns reconnection: it never relies on EventSource's automatic retry or on
// `Last-Event-ID` surviving a proxy; the cursor always travels in the URL.

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
/** Codes of a refused token or topic (SPEC §9), as 401/403 bodies and WebSocket `error`s carry them. */
const AUTH_CODES = new Set(['token_required', 'token_invalid', 'token_expired', 'topic_forbidden']);
/** A `getToken` that has not answered within this has failed (`token_unavailable`). */
const TOKEN_TIMEOUT_MS = 15000;
/**
 * A token with less than this left (by negotiate's `token_expires_in_ms`, at most half
 * its remaining life) is not sent again: the client fetches the next one first, so a
 * poll or ticket never races `exp`.
 */
const TOKEN_MARGIN_MS = 1000;
/** The server's limits on topics (SPEC §1, docs/protocol.md). */
const MAX_TOPIC_LEN = 200;
const MAX_TOPICS = 100;
const TOPIC_CHARS = /^[A-Za-z0-9._:/-]+$/;
const TOO_MANY = `the tabs sharing this connection would follow more than ${MAX_TOPICS} topics in all`;

/** Sharing between tabs (docs/protocol.md, "One connection per browser"). */
const SHARE = {
  heartbeatMs: 300, // the leader says it is alive this often
  silenceMs: 800, // a follower that heard nothing from its leader this long asks…
  pingMs: 600, // …and a leader that does not answer within this is frozen: taken over
  hiddenSlack: 3, // a hidden leader's timers run at most once a second: allow it 3× both
  checkMs: 150, // how often a follower looks at the silence
  gatherMs: 100, // a new leader waits this long for the other tabs' positions
  rollMs: 4000, // the leader asks every tab to say it is still there this often
};

const now = () => Date.now();
const isHidden = () => typeof document !== 'undefined' && document.visibilityState === 'hidden';
/** `ms` spread by ±25 %, so many tabs do not act in lockstep. */
const jitter = (ms) => Math.round(ms * (0.75 + Math.random() * 0.5));
const randomId = () => Math.random().toString(36).slice(2, 10) + now().toString(36).slice(-4);

/**
 * Splits a cursor `<epoch>-<seq>` for ordering and duplicate detection, once: positions
 * are kept parsed, and compared with `before` and `later`. Cursors are otherwise opaque:
 * `id` is handed back to the server verbatim.
 * @param {string|null|undefined} cursor
 * @returns {{id: string, epoch: string, seq: bigint} | null}
 */
function parseCursor(cursor) {
  const m = typeof cursor === 'string' && /^([A-Za-z0-9]{1,32})-(\d{1,20})$/.exec(cursor);
  return m ? { id: cursor, epoch: m[1], seq: BigInt(m[2]) } : null;
}

/**
 * Whether position `a` must be resumed from before position `b` (both parsed): `a` is
 * earlier in the same log, or from another log (whose events cannot be compared, so the
 * server decides).
 */
function before(a, b) {
  if (!a || !b) return false;
  return a.epoch !== b.epoch || a.seq < b.seq;
}

/** `b` if it is later than `a` in the same log, else `a` (null counts as "nothing yet"). */
function later(a, b) {
  if (!a) return b || null;
  return b && a.epoch === b.epoch && b.seq > a.seq ? b : a;
}

/** A map of topic → parsed position, as `{topic: cursor string | null}` for a message. */
function positionsOut(map) {
  const out = {};
  for (const [t, p] of map) out[t] = p ? p.id : null;
  return out;
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
 * The server's topic rule, with the server's words (so a bad topic is refused here
 * exactly as the server would refuse it, without costing the connection).
 * @returns {string|null} the error message, or null for a good name
 */
function topicError(name) {
  const shown = JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
  if (!name.length || name.length > MAX_TOPIC_LEN) {
    return `topic ${shown} must be 1 to ${MAX_TOPIC_LEN} characters long`;
  }
  if (!TOPIC_CHARS.test(name)) {
    const bad = [...name].find((c) => !TOPIC_CHARS.test(c));
    return `topic ${shown} contains ${JSON.stringify(bad)}; allowed are A-Z a-z 0-9 . _ - : /`;
  }
  return null;
}

/** `topics` as an array of names (an array or a comma-separated string). */
function topicList(topics) {
  const list = typeof topics === 'string' ? topics.split(',') : topics;
  return (Array.isArray(list) ? list : []).map((t) => String(t).trim()).filter(Boolean);
}

/** An Error with the server's `{code, message}` shape. */
/**
 * The server's refusal of a token or of a topic (a 401/403 whose body names one of
 * AUTH_CODES), as `{reason: 'token', code, message, topic}`; null for any other answer.
 */
function authRefusal(status, body) {
  const e = body && body.error;
  if ((status !== 401 && status !== 403) || !e || !AUTH_CODES.has(e.code)) return null;
  return { reason: 'token', code: e.code, message: String(e.message || ''), topic: typeof e.topic === 'string' ? e.topic : null };
}

function clientError(code, message) {
  return Object.assign(new Error(message), { code });
}

/**
 * Opens a live connection. See `switchyard.d.ts` for the options and the events.
 * @param {import('./switchyard').ConnectOptions} options
 * @returns {import('./switchyard').Connection}
 */
export function connect(options) {
  return new Connection(options);
}

// ---- the page's connection ----------------------------------------------------------

class Connection {
  /** @param {import('./switchyard').ConnectOptions} options */
  constructor(options = {}) {
    const topics = topicList(options.topics);
    if (!topics.length) throw new TypeError('switchyard.connect: `topics` must name at least one topic');
    const cursor = options.cursor ? String(options.cursor) : null;
    const refused = refusal(topics, cursor, 0);
    if (refused) throw new TypeError(`switchyard.connect: ${refused.message}`);

    const allowed = topicList(options.transports);
    const o = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      if (options[key] !== undefined && options[key] !== null) o[key] = options[key];
    }
    // Resolved against the page, never a hard-coded host.
    const base = new URL(String(o.url), globalThis.location ? globalThis.location.href : undefined)
      .href.replace(/[?#].*$/, '').replace(/\/+$/, '');
    /** What the Engine needs; in a shared connection, the leader tab's options are used. */
    this._engineOptions = {
      o,
      base,
      // The app's narrowing of the server's transports (null = take what the server offers).
      allowed: allowed.length ? allowed : null,
      storage: options.storage !== undefined ? options.storage : safeLocalStorage(),
      reportsOn: options.reports !== false,
      // SPEC §9: called before each connect and after `token_expired`.
      getToken: typeof options.getToken === 'function' ? options.getToken : null,
      // Cookies (the `switchyard_token` cookie) on requests to an API on another origin.
      credentials: options.withCredentials ? 'include' : 'same-origin',
    };
    this.id = randomId();
    /** `debug`: a function that is told, in words, what the sharing between tabs does. */
    this._debug = typeof options.debug === 'function' ? options.debug : null;
    /** This tab's topics, each with the position it has been served up to (null: the head). */
    this._positions = new Map(topics.map((t) => [t, parseCursor(cursor)]));
    this._rev = 0; // bumped by every change of topics
    this._acked = -1; // the last change the hub confirmed: positions advance with it only
    this._waiters = []; // subscribe/unsubscribe promises: {rev, resolve}
    this._listeners = { event: new Set(), mode: new Set(), reset: new Set(), error: new Set(), role: new Set() };
    this._mode = 'reconnecting';
    this._transport = null;
    this._reason = 'connecting';
    this._role = null;
    this._inbox = []; // the hub's messages to this tab, delivered in order on a microtask
    this._hub = null; // alone, or leading: the Hub runs here
    this._share = null;
    this._closed = false;

    const shareable = options.share !== false && typeof BroadcastChannel === 'function'
      && globalThis.navigator && navigator.locks && typeof navigator.locks.request === 'function';
    // Tabs share only when everything that shapes the connection is the same, and they
    // are in the same group: the leader's token serves every tab, so tabs of different
    // users in one browser (a `share` name per user) must not share.
    const tuning = Object.keys(DEFAULTS).filter((k) => k !== 'url' && o[k] !== DEFAULTS[k]).map((k) => `${k}=${o[k]}`);
    const group = typeof options.share === 'string' ? options.share : '';
    this._shareName = shareable
      ? `switchyard:${base}|${allowed.join(',') || '*'}|${tuning.join(',')}|${this._engineOptions.reportsOn}|${this._engineOptions.credentials}|${group}`
      : null;

    this._onVisibility = () => {
      if (this._share) this._share.beat();
      this._wake(isHidden() ? 'hidden' : 'visible');
    };
    this._onOnline = () => this._wake('online');
    this._onPageShow = (e) => {
      if (!e.persisted) return;
      if (this._share) this._share.rejoin();
      this._wake('pageshow');
    };
    this._onPageHide = (e) => { if (e.persisted && this._share) this._share.leave(); };
    // Page Lifecycle: a browser freezes hidden tabs (and says so first); a frozen leader
    // would starve every other tab, so it hands over before it stops.
    this._onFreeze = () => { if (this._share) this._share.freeze(); };
    this._onResume = () => { if (this._share) this._share.resume(); };
    if (typeof document !== 'undefined') {
      document.addEventListener('visibilitychange', this._onVisibility);
      document.addEventListener('freeze', this._onFreeze);
      document.addEventListener('resume', this._onResume);
    }
    if (typeof window !== 'undefined') {
      window.addEventListener('online', this._onOnline);
      window.addEventListener('pageshow', this._onPageShow);
      window.addEventListener('pagehide', this._onPageHide);
    }
    // Start on the next tick, so listeners added right after connect() see the first mode.
    Promise.resolve().then(() => {
      if (this._closed) return;
      this._emit('mode', { mode: this._mode, transport: null, reason: this._reason });
      if (this._shareName) {
        this._share = new Share(this, this._shareName);
        this._share.start();
      } else {
        this._setRole('alone');
        this._lead(null).start();
      }
    });
  }

  /** The transport in use, or null while (re)connecting or off. */
  get transport() {
    return this._transport;
  }

  /** `live`, `degraded`, `reconnecting` or `off`. */
  get mode() {
    return this._mode;
  }

  /** `leader` (holds the connection for the tabs), `follower` (fed by another tab) or `alone`. */
  get role() {
    return this._role;
  }

  /** The topics this tab follows. */
  get topics() {
    return [...this._positions.keys()];
  }

  /**
   * The cursor this tab resumes after: the earliest position of its topics (the last
   * event's id, a reset's cursor, or where the connection has got to).
   */
  get cursor() {
    let first = null;
    for (const p of this._positions.values()) {
      if (p && (!first || before(p, first))) first = p;
    }
    return first ? first.id : null;
  }

  /**
   * Adds a listener for `event`, `mode`, `reset`, `error` or `role`.
   * @returns {() => void} removes the listener again
   */
  on(name, fn) {
    const set = this._listeners[name];
    if (!set) throw new TypeError(`switchyard: unknown event "${name}" (event, mode, reset, error, role)`);
    if (typeof fn !== 'function') throw new TypeError('switchyard: listener must be a function');
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Follows more topics on the live connection. A new topic starts from the head (what
   * the connection has reached), or after `options.cursor`; topics already followed keep
   * their position. Resolves once the connection follows them; a bad topic or cursor
   * rejects with the server's `{code, message}` (also emitted as `error`) and changes
   * nothing.
   */
  subscribe(topics, options = {}) {
    const list = topicList(topics);
    const cursor = options && options.cursor ? String(options.cursor) : null;
    const fresh = list.filter((t, i) => !this._positions.has(t) && list.indexOf(t) === i);
    const refused = refusal(list, cursor, this._positions.size + fresh.length - list.length);
    if (refused) return this._refuse(refused);
    if (!fresh.length || this._closed) return Promise.resolve();
    const add = {};
    for (const t of fresh) {
      add[t] = cursor;
      this._positions.set(t, parseCursor(cursor));
    }
    return this._change({ t: 'sub', add });
  }

  /** Stops following topics; events of the others are neither lost nor repeated. */
  unsubscribe(topics) {
    const list = topicList(topics);
    const refused = refusal(list, null, 0);
    if (refused) return this._refuse(refused);
    const remove = list.filter((t) => this._positions.delete(t));
    if (!remove.length || this._closed) return Promise.resolve();
    return this._change({ t: 'unsub', remove });
  }

  /** Stops everything: sockets, polls, timers and page listeners. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (this._share) this._share.close();
    else if (this._hub) this._hub.close();
    this._hub = this._share = null;
    if (typeof document !== 'undefined') {
      document.removeEventListener('visibilitychange', this._onVisibility);
      document.removeEventListener('freeze', this._onFreeze);
      document.removeEventListener('resume', this._onResume);
    }
    if (typeof window !== 'undefined') {
      window.removeEventListener('online', this._onOnline);
      window.removeEventListener('pageshow', this._onPageShow);
      window.removeEventListener('pagehide', this._onPageHide);
    }
    for (const w of this._waiters.splice(0)) w.resolve();
    this._mode = 'off';
    this._transport = null;
    this._reason = 'closed';
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
    if (mode === this._mode && transport === this._transport && reason === this._reason) return;
    this._mode = mode;
    this._transport = transport || null;
    this._reason = reason || null;
    this._emit('mode', { mode, transport: this._transport, reason: this._reason });
  }

  _setRole(role) {
    if (this._closed || role === this._role) return;
    this._role = role;
    this._emit('role', role);
  }

  _say(line) {
    if (this._debug) {
      try {
        this._debug(line);
      } catch { /* the app's problem */ }
    }
  }

  _refuse(error) {
    this._emit('error', { code: error.code, message: error.message, topic: null });
    return Promise.reject(error);
  }

  // ---- talking to the hub (here, or in the leader tab) ------------------------------

  /** Sends a change of topics to the hub; resolves when the hub has applied it. */
  _change(body) {
    const rev = ++this._rev;
    const done = new Promise((resolve) => this._waiters.push({ rev, resolve }));
    this._toHub({ ...body, from: this.id, rev });
    return done;
  }

  /** The whole state of this tab, for a (new) leader. */
  _joinMessage() {
    return {
      t: 'join', from: this.id, rev: this._rev, topics: positionsOut(this._positions),
      visible: !isHidden(),
    };
  }

  _toHub(msg) {
    if (this._hub) this._hub.handle(msg);
    else if (this._share) this._share.send(msg);
  }

  _wake(kind) {
    if (!this._closed) this._toHub({ t: 'wake', from: this.id, kind, visible: !isHidden() });
  }

  /** This tab runs the hub (alone, or as the leader); `post` reaches the other tabs. */
  _lead(post) {
    this._hub = new Hub(this, (msg) => {
      if (post) post(msg);
      this._deliver(msg);
    });
    this._hub.handle(this._joinMessage());
    return this._hub;
  }

  /** The hub's messages to this tab itself: in order, after the current task's work. */
  _deliver(msg) {
    this._inbox.push(msg);
    if (this._inbox.length > 1) return;
    queueMicrotask(() => {
      for (let i = 0; i < this._inbox.length; i++) this._receive(this._inbox[i]);
      this._inbox.length = 0;
    });
  }

  /** A message from the hub (SPEC §11): each tab its own events, resets and mode. */
  _receive(msg) {
    if (this._closed) return;
    // Positions move with the connection only once the hub knows this tab's topics, and
    // not while the hub holds this tab back (its position is behind the connection's).
    const synced = this._acked === this._rev && !(msg.held && msg.held.includes(this.id));
    switch (msg.t) {
      case 'ev': {
        const env = msg.env;
        const at = env && parseCursor(env.id);
        if (!at) return;
        const pos = this._positions.get(env.topic);
        const mine = msg.to.includes(this.id) && this._positions.has(env.topic) && (!pos || before(pos, at));
        if (mine) this._positions.set(env.topic, at);
        if (synced) this._advance(at);
        if (mine) this._emit('event', env);
        break;
      }
      case 'pos':
        if (synced) this._advance(parseCursor(msg.c));
        break;
      case 'reset': {
        if (msg.to !== this.id) return;
        const at = parseCursor(msg.cursor);
        for (const t of this._positions.keys()) this._positions.set(t, at);
        this._emit('reset', { reason: msg.reason, cursor: msg.cursor });
        break;
      }
      case 'mode':
        this._setMode(msg.mode, msg.transport, msg.reason);
        break;
      case 'ack':
        if (msg.to !== this.id) return;
        if (msg.rev === this._rev) {
          for (const [t, p] of Object.entries(msg.topics || {})) {
            if (this._positions.has(t)) this._positions.set(t, parseCursor(p));
          }
          this._acked = msg.rev;
        }
        if (msg.mode) this._setMode(msg.mode.mode, msg.mode.transport, msg.mode.reason);
        break;
      case 'live':
        if (msg.to !== this.id) return;
        for (const w of this._waiters.filter((x) => x.rev <= msg.rev)) w.resolve();
        this._waiters = this._waiters.filter((x) => x.rev > msg.rev);
        break;
      case 'error':
        if (msg.to && msg.to !== this.id) return;
        // A refused topic (the hub no longer follows it for this tab).
        if (msg.drop) this._positions.delete(msg.drop);
        this._emit('error', { code: msg.code, message: msg.message, topic: msg.topic || null });
        if (msg.alone && this._share && !this._hub) {
          this._share.close();
          this._share = null;
          this._setRole('alone');
          this._lead(null).start();
        }
        break;
      default:
    }
  }

  /** The connection got to `at` for every topic of this tab: nothing before it is owed. */
  _advance(at) {
    for (const [t, p] of this._positions) this._positions.set(t, later(p, at));
  }
}

/**
 * Why a set of topics (and an optional cursor) would be refused by the server, as the
 * server would say it; null when they are fine. `more` is how many topics the tab
 * follows beyond `list`.
 */
function refusal(list, cursor, more) {
  for (const t of list) {
    const message = topicError(t);
    if (message) return clientError('invalid_topic', message);
  }
  if (list.length + more > MAX_TOPICS) {
    return clientError('invalid_topic', `at most ${MAX_TOPICS} topics per connection (${list.length + more} asked)`);
  }
  if (cursor !== null && (!parseCursor(cursor) || cursor.length > 64)) {
    return clientError('invalid_cursor', `cursor ${JSON.stringify(cursor.slice(0, 64))} is not <epoch>-<seq>`);
  }
  return null;
}

function safeLocalStorage() {
  try {
    return globalThis.localStorage || null;
  } catch {
    return null; // e.g. blocked third-party storage
  }
}

// ---- sharing one connection between tabs --------------------------------------------

/**
 * Leader election and the channel between tabs. The tab that holds the Web Lock
 * `name` leads: it runs the Hub and posts its messages on the BroadcastChannel `name`;
 * the others send their topics and positions to it and receive their events from it.
 * A leader that closes releases the lock and the next tab in the lock's queue leads at
 * once; one that stops answering (frozen, hung) is taken over with `steal`. Every
 * leadership has a term: messages of an older term are ignored, so a frozen leader that
 * wakes up cannot feed anyone twice.
 */
class Share {
  constructor(conn, name) {
    this.conn = conn;
    this.name = name;
    this.term = 0;
    this.leader = null; // {id, term} of the tab we take messages from
    this.leading = null; // the lock request we lead with
    this.queued = null; // our place in the lock's queue
    this.heard = now(); // last message from the leader
    this.pingAt = 0;
    this.peers = false; // another tab has been seen
    this.roll = 0;
    this.here = new Map(); // as leader: tab → the last roll it answered
    this.closed = false;
  }

  start() {
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (e) => this._message(e.data);
    this.conn._setRole('follower');
    this._queue();
    this.send(this.conn._joinMessage());
    this.check = setInterval(() => this._check(), SHARE.checkMs);
  }

  send(msg) {
    if (this.closed) return;
    try {
      this.channel.postMessage(msg);
    } catch { /* closed */ }
  }

  /** Sends this tab's whole state again (a new leader, or the old one forgot us). */
  rejoin() {
    if (!this.leading) this.send(this.conn._joinMessage());
  }

  leave() {
    if (!this.leading) this.send({ t: 'leave', from: this.conn.id });
  }

  /** The page is being frozen: hand the lead over, leave the queue for it, and go quiet. */
  freeze() {
    if (this.closed || this.frozen) return;
    this.frozen = true;
    this.conn._say('page frozen: handing over');
    if (this.leading) {
      this._resign();
      this.conn._setRole('follower');
    } else {
      this.leave();
    }
    if (this.queued) this._abort(this.queued);
  }

  /** The page runs again: follow whoever leads now, from this tab's own positions. */
  resume() {
    if (this.closed || !this.frozen) return;
    this.frozen = false;
    this.conn._say('page resumed');
    this.heard = now();
    this.pingAt = 0;
    this._queue();
    this.rejoin();
  }

  close() {
    clearInterval(this.check);
    if (this.leading) this._resign();
    else this.leave();
    this.closed = true;
    if (this.queued) this._abort(this.queued);
    this.channel.close();
  }

  // ---- the lock ---------------------------------------------------------------------

  _queue() {
    if (this.closed || this.frozen || this.queued || this.leading) return;
    this.queued = this._request({});
  }

  /** Takes the lock from a leader that does not answer. */
  _steal() {
    if (this.closed || this.frozen || this.leading) return;
    if (this.queued) this._abort(this.queued);
    this._request({ steal: true });
  }

  _request(options) {
    const req = { ctrl: new AbortController(), aborted: false };
    const opts = options.steal ? { steal: true } : { signal: req.ctrl.signal };
    navigator.locks.request(this.name, opts, () => this._granted(req)).then(
      () => {},
      () => {
        // Aborted by us (we stole, or closed), or stolen from us while we led.
        if (this.leading === req) this._stepDown();
      },
    );
    return req;
  }

  _abort(req) {
    req.aborted = true;
    if (this.queued === req) this.queued = null;
    req.ctrl.abort();
  }

  /** The lock is ours: lead until we resign or it is stolen. */
  _granted(req) {
    if (this.queued === req) this.queued = null;
    if (this.closed || req.aborted) return undefined;
    this.conn._say(`leading (term ${Math.max(this.term, this.leader ? this.leader.term : 0) + 1})`);
    this.leading = req;
    this.term = Math.max(this.term, this.leader ? this.leader.term : 0) + 1;
    this.leader = { id: this.conn.id, term: this.term };
    this.here.clear();
    this._post({ t: 'leader' });
    const hub = this.conn._lead((msg) => this._post(msg));
    this.conn._setRole('leader');
    // The other tabs answer `leader` with their positions at once; a moment to gather
    // them spares a rewind of the connection for each.
    setTimeout(() => hub.start(), this.peers ? SHARE.gatherMs : 0);
    // Heartbeats matter only to followers: a leader with none stays quiet (a tab that
    // comes along pings, and that is answered).
    this.beating = setInterval(() => {
      if (hub.members.size > 1) this.beat();
    }, SHARE.heartbeatMs);
    this.rolling = setInterval(() => this._roll(), SHARE.rollMs);
    return new Promise((resolve) => { req.release = resolve; });
  }

  /** As leader: "alive", and whether hidden (then its timers are throttled). */
  beat() {
    if (this.leading) this._post({ t: 'hb', hidden: isHidden() });
  }

  _resign() {
    const req = this.leading;
    this._post({ t: 'resign' });
    this._stopLeading();
    if (req && req.release) req.release();
  }

  /** Someone else leads now (the lock was stolen, or a newer term spoke). */
  _stepDown() {
    const req = this.leading;
    if (!req) return;
    this.conn._say('stepping down: another tab leads');
    this._post({ t: 'resign' });
    this._stopLeading();
    if (req.release) req.release();
    this.conn._setRole('follower');
    this.conn._setMode('reconnecting', null, 'leader_changed');
    this.heard = now();
    this._queue();
    this.rejoin();
  }

  _stopLeading() {
    this.leading = null;
    clearInterval(this.beating);
    clearInterval(this.rolling);
    if (this.conn._hub) this.conn._hub.close();
    this.conn._hub = null;
  }

  /** A message from this tab as the leader, to every other tab. */
  _post(msg) {
    this.send({ ...msg, from: this.conn.id, term: this.term });
  }

  /** Every roll, each tab says it is there; one that missed a whole roll is forgotten. */
  _roll() {
    const hub = this.conn._hub;
    if (!hub) return;
    this.roll++;
    for (const id of hub.members.keys()) {
      if (id === this.conn.id) continue;
      if (!this.here.has(id)) this.here.set(id, this.roll);
      if (this.here.get(id) < this.roll - 1) {
        this.here.delete(id);
        hub.handle({ t: 'leave', from: id });
        this._post({ t: 'gone', to: id });
      }
    }
    this._post({ t: 'roll', n: this.roll });
  }

  // ---- messages -----------------------------------------------------------------------

  _message(msg) {
    if (this.closed || !msg || typeof msg.t !== 'string') return;
    this.peers = true;
    if (typeof msg.term === 'number') {
      this._fromLeader(msg);
      return;
    }
    // From a tab to the leader.
    const hub = this.leading && this.conn._hub;
    if (!hub) return;
    if (msg.t === 'ping') {
      // Answered from a timer task, not from this message's: a page whose timers and
      // sockets are stopped (frozen, hung) may still get messages, and must not pass for
      // a working leader.
      setTimeout(() => this.beat(), 0);
      return;
    }
    if (msg.t === 'here') {
      this.here.set(msg.from, msg.n);
      return;
    }
    if (msg.t === 'join') this.here.set(msg.from, this.roll);
    if (msg.t === 'leave') this.here.delete(msg.from);
    hub.handle(msg);
  }

  _fromLeader(msg) {
    const current = this.leader && msg.from === this.leader.id && msg.term === this.leader.term;
    if (!current) {
      const newer = msg.term > this.term || (!this.leader && msg.term === this.term)
        || (msg.term === this.term && this.leader && msg.from > this.leader.id);
      if (!newer) {
        // A leader of an older term (a frozen tab that woke up): remind it who leads.
        if (this.leading) this._post({ t: 'leader' });
        return;
      }
      if (this.leading) this._stepDown();
      this.conn._say(`following ${msg.from} (term ${msg.term})`);
      this.term = msg.term;
      this.leader = { id: msg.from, term: msg.term };
      this.rejoin();
    }
    this.heard = now();
    this.pingAt = 0;
    switch (msg.t) {
      case 'hb':
        this.leaderHidden = !!msg.hidden;
        return;
      case 'leader':
        return;
      case 'resign':
        this.leader = null;
        return;
      case 'roll':
        this.send({ t: 'here', from: this.conn.id, n: msg.n });
        return;
      case 'gone':
        if (msg.to === this.conn.id) this.rejoin();
        return;
      default:
        this.conn._receive(msg);
    }
  }

  /** A follower's watch over its leader: silence, then a ping, then a take-over. */
  _check() {
    if (this.closed || this.frozen || this.leading) return;
    const t = now();
    const slack = this.leaderHidden ? SHARE.hiddenSlack : 1;
    if (t - this.heard < SHARE.silenceMs * slack) return;
    if (!this.pingAt) {
      this.conn._say(`leader silent for ${t - this.heard} ms: ping`);
      this.pingAt = t;
      this.send({ t: 'ping', from: this.conn.id });
      return;
    }
    if (t - this.pingAt < SHARE.pingMs * slack) return;
    // No answer: the leader is frozen or hung. Tabs that noticed together draw lots.
    const heard = this.heard;
    this.pingAt = 0;
    this.conn._say('leader did not answer: taking over');
    setTimeout(() => { if (this.heard === heard) this._steal(); }, Math.random() * 150);
  }
}

// ---- the hub: every tab's topics and positions, in the leading tab --------------------

/**
 * Serves the tabs from one Engine. Each tab ("member") has topics, each with the
 * position it has been served up to. The engine follows the union of the topics from
 * the earliest position any tab needs; the hub hands each event to the tabs that follow
 * its topic and are not past it, and moves every tab's positions along with the
 * engine. `from` is where the engine's unbroken run of the log begins: a tab whose
 * position is earlier is not served (it would get a gap) until the engine has been
 * rewound to it.
 */
class Hub {
  constructor(conn, post) {
    this.conn = conn;
    this.post = post;
    /** @type {Map<string, {topics: Map<string, string|null>, visible: boolean}>} */
    this.members = new Map();
    // Positions here are parsed cursors (see parseCursor), parsed once as they arrive.
    this.head = null; // the furthest the connection has got: where new topics start
    this.from = null;
    this.engine = null;
    this.mode = { mode: 'reconnecting', transport: null, reason: 'connecting' };
    this.waiting = []; // confirmations owed to tabs: {to, rev, gen}
    this.closed = false;
  }

  start() {
    if (this.engine || this.closed) return;
    this.from = this._need();
    this.engine = new Engine(this.conn._engineOptions, this, this._union(), this.from && this.from.id);
  }

  close() {
    this.closed = true;
    if (this.engine) this.engine.close();
    this.members.clear();
  }

  /** A message from a tab (this one included). */
  handle(msg) {
    if (this.closed) return;
    const member = this.members.get(msg.from);
    switch (msg.t) {
      case 'join': {
        const topics = new Map();
        for (const [t, p] of Object.entries(msg.topics || {})) {
          const known = member && member.topics.get(t);
          topics.set(t, later(known || null, parseCursor(p)) || this.head);
        }
        this.members.set(msg.from, { topics, visible: msg.visible !== false });
        if (this._tooMany()) {
          // The tab cannot be served by this connection: it opens one of its own.
          if (member) this.members.set(msg.from, member);
          else this.members.delete(msg.from);
          this.post({ t: 'error', to: msg.from, code: 'invalid_topic', alone: true,
            message: `${TOO_MANY}; this tab uses a connection of its own` });
          return;
        }
        this._sync();
        this._ack(msg.from, msg.rev);
        return;
      }
      case 'sub':
      case 'unsub': {
        if (!member) {
          this.post({ t: 'gone', to: msg.from });
          return;
        }
        const added = Object.entries(msg.add || {}).filter(([t]) => !member.topics.has(t));
        for (const [t, p] of added) member.topics.set(t, parseCursor(p) || this.head);
        for (const t of msg.remove || []) member.topics.delete(t);
        if (this._tooMany()) {
          for (const [t] of added) member.topics.delete(t);
          this.post({ t: 'error', to: msg.from, code: 'invalid_topic', message: TOO_MANY });
        }
        this._sync();
        this._ack(msg.from, msg.rev);
        return;
      }
      case 'leave':
        this.members.delete(msg.from);
        this._sync();
        return;
      case 'wake':
        if (member) member.visible = msg.visible !== false;
        if (this.engine) this.engine.wake(msg.kind);
        return;
      default:
    }
  }

  /**
   * Confirms a tab's topics: `ack` at once (its positions, the mode), `live` once the
   * server follows them (what `subscribe()` and `unsubscribe()` resolve on).
   */
  _ack(id, rev) {
    const m = this.members.get(id);
    if (!m) return;
    this.post({ t: 'ack', to: id, rev, topics: positionsOut(m.topics), mode: this.mode });
    const gen = this.engine ? this.engine._wantGen : 0;
    if (this.engine && this.engine._liveGen >= gen) this.post({ t: 'live', to: id, rev });
    else this.waiting.push({ to: id, rev, gen });
  }

  /** The server follows the topics of the engine's change `gen`. */
  live(gen) {
    const due = this.waiting.filter((w) => w.gen <= gen);
    this.waiting = this.waiting.filter((w) => w.gen > gen);
    for (const w of due) this.post({ t: 'live', to: w.to, rev: w.rev });
  }

  /** Whether the tabs follow more topics in all than one server connection may. */
  _tooMany() {
    return this._union().length > MAX_TOPICS;
  }

  /** Every topic some tab follows, sorted. */
  _union() {
    const all = new Set();
    for (const m of this.members.values()) for (const t of m.topics.keys()) all.add(t);
    return [...all].sort();
  }

  /** The earliest position any tab needs (null: from the head). */
  _need() {
    let need = null;
    for (const m of this.members.values()) {
      for (const p of m.topics.values()) if (p && (!need || before(p, need))) need = p;
    }
    return need;
  }

  /** Tells the engine the topics and the position the tabs need now. */
  _sync() {
    if (!this.engine || this.closed) return;
    const need = this._need();
    if (this.engine.want(this._union(), need && need.id)) this.from = need;
  }

  /** Whether the engine's run of the log covers every position of `m`. */
  _covered(m) {
    if (!this.from) return true;
    for (const p of m.topics.values()) if (p && before(p, this.from)) return false;
    return true;
  }

  /** Whether no tab is visible (then nobody is looking, and timers are throttled). */
  hidden() {
    for (const m of this.members.values()) if (m.visible) return false;
    return true;
  }

  // ---- what the engine says -------------------------------------------------------

  event(env) {
    const at = parseCursor(env.id);
    const to = [];
    const held = [];
    for (const [id, m] of this.members) {
      if (!this._covered(m)) {
        held.push(id);
        continue;
      }
      if (m.topics.has(env.topic)) {
        const p = m.topics.get(env.topic);
        if (!p || before(p, at)) to.push(id);
      }
      for (const [t, p] of m.topics) m.topics.set(t, later(p, at));
    }
    this.head = later(this.head, at);
    this.post(held.length ? { t: 'ev', env, to, held } : { t: 'ev', env, to });
  }

  /** The engine got to `c` without an event (ready, a poll's answer, negotiate's head). */
  advance(c) {
    const at = parseCursor(c);
    const held = [];
    for (const [id, m] of this.members) {
      if (!this._covered(m)) held.push(id);
      else for (const [t, p] of m.topics) m.topics.set(t, later(p, at));
    }
    this.head = later(this.head, at);
    this.post(held.length ? { t: 'pos', c, held } : { t: 'pos', c });
  }

  /**
   * The server could not resume from `from` and continues after `r.cursor`. A tab is
   * told only if its own history is in doubt: a position at or before `from`, from
   * another log, or (cursor_ahead) beyond the head. A tab whose position was still good
   * but lies before the new cursor is served again by rewinding the engine to it.
   */
  reset(r, from) {
    const cursor = parseCursor(r.cursor);
    const start = parseCursor(from);
    if (!cursor) return;
    for (const [id, m] of this.members) {
      let hit = false;
      for (const pos of m.topics.values()) {
        if (!pos) continue;
        if (pos.epoch !== cursor.epoch) hit = true;
        else if (start && start.epoch === pos.epoch && pos.seq <= start.seq) hit = true;
        else if (r.reason === 'cursor_ahead' && pos.seq > cursor.seq) hit = true;
      }
      if (!hit) continue;
      for (const t of m.topics.keys()) m.topics.set(t, cursor);
      this.post({ t: 'reset', to: id, reason: r.reason, cursor: r.cursor });
    }
    this.head = cursor;
    this.from = cursor;
    // After the link has handed out what it holds: rewind for the tabs left behind.
    queueMicrotask(() => this._sync());
  }

  setMode(mode, transport, reason) {
    this.mode = { mode, transport, reason };
    this.post({ t: 'mode', ...this.mode });
  }

  error(code, message) {
    this.post({ t: 'error', code: String(code || 'error'), message: String(message || '') });
  }

  /**
   * The server refused `topic` (`topic_forbidden`, or `token_required`): each tab that
   * follows it is told with an `error` and stops following it; the others, and that tab's
   * other topics, carry on. Without it the stream would be refused again and again.
   */
  refuse(topic, code, message) {
    for (const [id, m] of this.members) {
      if (!m.topics.delete(topic)) continue;
      this.post({ t: 'error', to: id, code, message, topic, drop: topic });
    }
    this._sync();
  }
}

// ---- the engine: one server connection -----------------------------------------------

/**
 * The one server connection. It follows the topics and resumes from the cursor its Hub
 * gives it, and tells the Hub every event, reset, position and mode; it knows nothing
 * of tabs.
 */
class Engine {
  constructor(options, hub, topics, cursor) {
    this._o = options.o;
    this._allowed = options.allowed;
    this._storage = options.storage;
    this._reportsOn = options.reportsOn;
    this._getToken = options.getToken;
    this._credentials = options.credentials;
    this._token = null; // the token from the last getToken
    this._tokenRenew = null; // when (now()) to fetch the next one before using it again
    this._base = options.base;
    this._hub = hub;
    this._topics = topics;
    this._cursor = null;
    this._pos = null; // parsed _cursor
    this._seen = new Set();
    this._seenRing = [];
    if (cursor) this._setCursor(cursor);

    this._mode = 'reconnecting';
    this._modeTransport = null;
    this._modeReason = 'connecting';
    this._order = []; // server order ∩ app choice, from the last negotiate
    this._urls = {}; // transport → its URL, from the last negotiate
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
    this._idle = !topics.length; // no tab follows anything: no stream
    this._wantGen = 0; // bumped by every change of topics or rewind
    this._liveGen = -1; // the last change the server has confirmed
    this._opsGen = []; // WebSocket: the change each unanswered subscribe/unsubscribe carries
    this._gen = 0;
    this._closed = false;
    this._reported = new Map();
    this._reportCount = 0;
    this._start();
  }

  /**
   * The tabs now need `topics`, none of them from before `need`. A rewind (an earlier
   * `need`) reopens the stream there; otherwise a WebSocket changes its topics in band
   * (`subscribe` / `unsubscribe`) and SSE or long-polling reopen at the cursor. Returns
   * whether it rewound.
   */
  want(topics, need) {
    if (this._closed) return false;
    const rewind = !!need && (!this._cursor || before(parseCursor(need), this._pos));
    const added = topics.filter((t) => !this._topics.includes(t));
    const removed = this._topics.filter((t) => !topics.includes(t));
    this._topics = topics;
    if (rewind) {
      this._setCursor(need);
      this._seen.clear();
      this._seenRing = [];
    }
    if (!rewind && !added.length && !removed.length) return false;
    const gen = ++this._wantGen;
    if (!topics.length) {
      this._idle = true;
      this._closeLinks();
      this._clearTimer('reconnect');
      this._clearTimer('off');
      this._live(gen); // following nothing is in effect at once
      return rewind;
    }
    if (this._idle) {
      this._idle = false;
      this._start();
      return rewind;
    }
    const link = this._active;
    if (!rewind && link && link.ready && link.name === 'websocket') {
      // A frame is at most 16 KiB: 40 topics of up to 200 characters fit.
      for (let i = 0; i < added.length; i += 40) link.op({ op: 'subscribe', topics: added.slice(i, i + 40) }, gen);
      for (let i = 0; i < removed.length; i += 40) link.op({ op: 'unsubscribe', topics: removed.slice(i, i + 40) }, gen);
      this._closePending(); // a probe opened with the old topics
      return false;
    }
    this._reopen();
    return rewind;
  }

  /** Opens the transport in use again, at the cursor, with the current topics. */
  _reopen() {
    this._closePending();
    const link = this._active;
    // Negotiating, waiting to reconnect or between attempts: the next attempt opens
    // with the current topics and cursor anyway.
    if (!link || this._negotiating) return;
    this._active = null;
    link.close();
    this._clearTimer('watchdog');
    this._clearTimer('probe');
    this._roundList = [link.name].concat(this._candidates().filter((n) => n !== link.name));
    this._tryNext();
  }

  _closePending() {
    if (this._pending) this._pending.close();
    this._pending = null;
  }

  /** The server follows the topics of change `gen` (a link opened with them is ready). */
  _live(gen) {
    if (gen <= this._liveGen) return;
    this._liveGen = gen;
    this._hub.live(gen);
  }

  /** Stops everything: sockets, polls and timers. Final. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._gen++;
    for (const t of this._timers.values()) clearTimeout(t);
    this._timers.clear();
    if (this._pending) this._pending.close();
    if (this._active) this._active.close();
    this._pending = this._active = null;
  }

  // ---- events ---------------------------------------------------------------------

  _setMode(mode, transport, reason) {
    if (this._closed) return;
    if (mode === this._mode && transport === this._modeTransport && reason === this._modeReason) return;
    this._mode = mode;
    this._modeTransport = transport;
    this._modeReason = reason;
    this._hub.setMode(mode, transport, reason);
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
    if (this._cursor && !(next && this._pos && next.epoch === this._pos.epoch && next.seq > this._pos.seq)) return;
    this._setCursor(cursor);
    this._hub.advance(cursor);
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
    this._hub.event(env);
  }

  /** The server could not resume: tell the app, continue from the cursor it gave. */
  _linkReset(link, body) {
    if (link !== this._active && link !== this._pending) return;
    if (!body || typeof body.cursor !== 'string') return;
    const from = this._cursor;
    this._setCursor(body.cursor);
    this._seen.clear();
    this._seenRing = [];
    this._hub.reset({ reason: String(body.reason || 'unknown'), cursor: body.cursor }, from);
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
    if (this._closed || this._negotiating || this._idle) return;
    this._clearTimer('reconnect');
    this._clearTimer('off');
    this._closeLinks();
    const gen = ++this._gen;
    let info;
    this._negotiating = true;
    try {
      if (this._getToken) this._token = await this._fetchToken();
      info = await this._negotiate();
    } catch (err) {
      if (this._closed || gen !== this._gen) return;
      if (err && err.code) {
        this._authFailed(err);
        return;
      }
      this._setMode('reconnecting', null, (err && err.reason) || 'network_error');
      this._scheduleReconnect(this._backoff());
      return;
    } finally {
      this._negotiating = false;
    }
    if (this._closed || gen !== this._gen) return;
    if (info.heartbeat_ms > 0) this._heartbeatMs = info.heartbeat_ms;
    const left = Number(info.token_expires_in_ms);
    this._tokenRenew = this._token && Number.isFinite(left) && left >= 0
      ? now() + left - Math.min(TOKEN_MARGIN_MS, left / 2) : null;
    if (info.poll_timeout_ms > 0) this._pollTimeoutMs = info.poll_timeout_ms;
    // Start from the head the server named, so nothing published from now on is missed.
    if (!this._cursor && typeof info.cursor === 'string' && info.cursor) this._adoptCursor(info.cursor);
    // The server's table: each transport's URL as it gives it; a name this client does
    // not speak is refused (said once on the console), never guessed at.
    this._urls = {};
    for (const t of info.transports) {
      const name = t && t.name;
      if (!Object.hasOwn(LINKS, name) || typeof t.url !== 'string') {
        if (typeof console !== 'undefined') console.warn('switchyard: negotiate offered a transport this client does not speak:', t);
        continue;
      }
      this._urls[name] = new URL(t.url, `${this._base}/`).href;
    }
    const offered = Object.keys(this._urls);
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

  /** Asks the app for a token (SPEC §9); `token_unavailable` when it cannot give one. */
  async _fetchToken() {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${TOKEN_TIMEOUT_MS} ms`)), TOKEN_TIMEOUT_MS);
    });
    let token;
    try {
      token = await Promise.race([this._getToken({ topics: [...this._topics] }), late]);
    } catch (e) {
      throw { reason: 'token', code: 'token_unavailable', message: `getToken failed: ${(e && e.message) || e}`, topic: null };
    } finally {
      clearTimeout(timer);
    }
    if (typeof token !== 'string' || !token) {
      throw { reason: 'token', code: 'token_unavailable', message: 'getToken must resolve to a token (a non-empty string)', topic: null };
    }
    return token;
  }

  /**
   * Whether the round's token is about to expire. A link about to send it (a poll, a
   * ticket) ends as if the server had said `reconnect` `token_expired`: a new token,
   * a new round, from the cursor.
   */
  _tokenEnding(link) {
    if (this._tokenRenew === null || now() < this._tokenRenew) return false;
    // Later, not now: a link opening is not yet the engine's `_active`.
    setTimeout(() => this._linkReconnect(link, { reason: 'token_expired', after_ms: 0 }));
    return true;
  }

  /** Headers that carry the token (long polls, negotiate, tickets). */
  _authHeaders(headers = {}) {
    return this._token ? { ...headers, Authorization: `Bearer ${this._token}` } : headers;
  }

  /**
   * The query a WebSocket or EventSource opens with to carry the token: `&ticket=` of a
   * one-time ticket (`POST /tickets`), so the token itself never sits in a URL. Empty
   * without a token (a cookie, if any, travels by itself).
   */
  async _ticketQuery() {
    if (!this._token) return '';
    let res;
    try {
      res = await fetch(`${this._base}/tickets`, {
        method: 'POST', cache: 'no-store', credentials: this._credentials, headers: this._authHeaders(),
      });
    } catch {
      throw { reason: 'network_error' };
    }
    const body = await res.json().catch(() => null);
    if (!res.ok || !body || typeof body.ticket !== 'string') throw authRefusal(res.status, body) || { reason: 'http_status' };
    return `&ticket=${encodeURIComponent(body.ticket)}`;
  }

  /**
   * The server refused the token or a topic. A topic is dropped for the tabs that asked
   * (they get an `error`) and the rest reconnects at once; a token that expired is
   * fetched again; a token that is refused (or that getToken cannot give) is an `error`,
   * retried with back-off. Nothing is held against the transport: it is not remembered
   * as failed, nor reported.
   */
  _authFailed(err) {
    this._closeLinks();
    this._setMode('reconnecting', null, err.code);
    if (err.topic && (err.code === 'topic_forbidden' || err.code === 'token_required')) {
      this._hub.refuse(err.topic, err.code, err.message);
      this._scheduleReconnect(0);
      return;
    }
    this._token = null;
    if (err.code !== 'token_expired') this._hub.error(err.code, err.message);
    this._scheduleReconnect(this._backoff());
  }

  /** A link could not open for its token or topics (see `_authFailed`). */
  _linkAuthFailed(link, err) {
    link.close();
    if (link === this._pending) {
      this._pending = null;
      this._scheduleProbe();
      return;
    }
    if (link !== this._active) return;
    this._active = null;
    this._authFailed(err);
  }

  async _negotiate() {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this._o.readyTimeoutMs + 1000);
    try {
      let res;
      try {
        res = await fetch(`${this._base}/negotiate?topics=${this._topicsParam()}`,
          { cache: 'no-store', credentials: this._credentials, signal: ctrl.signal, headers: this._authHeaders() });
      } catch {
        throw { reason: 'network_error' };
      }
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        const refused = authRefusal(res.status, body);
        if (refused) throw refused;
      }
      if (!res.ok || !body || !Array.isArray(body.transports)) {
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
    const link = new LINKS[name](this, name, role);
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
    if (info && typeof info.cursor === 'string' && !this._cursor) this._adoptCursor(info.cursor);
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
    this._live(link.gen);
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
    const limit = link.heartbeatMs * this._o.stallFactor * (this._hub.hidden() ? HIDDEN_RELAX : 1);
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
    if (!target || this._pending || this._hub.hidden()) {
      this._scheduleProbe();
      return;
    }
    this._pending = this._makeLink(target, 'probe');
  }

  /** A tab became visible, came online or was restored: check now, catch up now. */
  wake(kind) {
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
        credentials: this._credentials,
        keepalive: true,
      }).catch(() => {});
    } catch { /* ignore */ }
  }

  // ---- URLs -----------------------------------------------------------------------

  _topicsParam() {
    return this._topics.map(encodeURIComponent).join(',');
  }

  /** The transport's URL from negotiate `?topics=…&cursor=…`, with ws:/wss: for the WebSocket. */
  _streamUrl(name) {
    let url = `${this._urls[name]}?topics=${this._topicsParam()}`;
    if (this._cursor) url += `&cursor=${encodeURIComponent(this._cursor)}`;
    if (name === 'websocket') url = url.replace(/^http(s?):/i, 'ws$1:');
    return url;
  }
}

// ---- transports ---------------------------------------------------------------------

/**
 * One attempt at one transport. It reports to its Engine (`conn`), which decides what a
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
    this.gen = conn._wantGen; // the topics it opens with
    this._ops = []; // WebSocket: changes sent, waiting for `subscribed`
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

  /** Gets a ticket for the token (if any), then runs `open(query)` under `guard`. */
  withTicket(open) {
    if (this.conn._tokenEnding(this)) return;
    this.conn._ticketQuery().then((query) => {
      if (!this.closed) this.guard(() => open(query));
    }, (err) => {
      if (this.closed) return;
      if (err && err.code) this.conn._linkAuthFailed(this, err);
      else this.fail((err && err.reason) || 'network_error');
    });
  }
}

/** WebSocket: JSON text frames; `{"op":"ready"}` first, heartbeats visible. */
class WsLink extends Link {
  open() {
    this.withTicket((query) => {
      const ws = new WebSocket(this.conn._streamUrl('websocket') + query);
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
      case 'subscribed': // the answer to the oldest subscribe/unsubscribe sent
      case 'error': { // …or its refusal; the session goes on
        const gen = this._ops.shift();
        if (msg.op === 'error' && typeof msg.topic === 'string' && AUTH_CODES.has(msg.code)) {
          this.conn._hub.refuse(msg.topic, msg.code, msg.message);
        } else if (msg.op === 'error') {
          this.conn._hub.error(msg.code, msg.message);
        }
        if (gen !== undefined && this === this.conn._active) this.conn._live(gen);
        break;
      }
      default: // heartbeat, pong: liveness only
    }
  }

  /** Sends a subscribe or unsubscribe for change `gen`; `subscribed` confirms it. */
  op(frame, gen) {
    this._ops.push(gen);
    this.send(frame);
  }

  /** Sends a client op (subscribe, unsubscribe, ping); a dead socket fails the link. */
  send(op) {
    try {
      this.ws.send(JSON.stringify(op));
    } catch {
      this.fail('closed');
    }
  }

  /** After a wake-up: a closed socket is dead; an open one is asked for a pong. */
  check() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.fail('closed');
      return;
    }
    const asked = now();
    this.send({ op: 'ping' });
    if (this.closed) return;
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
    this.withTicket((query) => {
      const es = new EventSource(this.conn._streamUrl('sse') + query,
        { withCredentials: this.conn._credentials === 'include' });
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
    if (this.conn._tokenEnding(this)) return;
    const url = this.conn._streamUrl('longpoll') + (first ? '&timeout=0' : '');
    fetch(url, { cache: 'no-store', credentials: this.conn._credentials, signal: ctrl.signal,
      headers: this.conn._authHeaders({ Accept: 'application/json' }) })
      .then((res) => {
        if (!res.ok) {
          return res.json().catch(() => null).then((body) => {
            throw authRefusal(res.status, body) || { reason: 'http_status' };
          });
        }
        return res.json().catch(() => { throw { reason: 'http_status' }; });
      })
      .then((answer) => {
        if (this.closed || ctrl !== this.ctrl) return;
        this.clearTimer(deadline);
        this.answer(answer || {});
      }, (err) => {
        if (this.closed || ctrl !== this.ctrl) return; // closed, or superseded by kick()
        this.clearTimer(deadline);
        if (err && err.code) this.conn._linkAuthFailed(this, err);
        else this.fail(stalled ? 'stalled' : (err && err.reason) || 'network_error');
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

/** The client's transport table: a name the server offers → the link that speaks it. */
const LINKS = Object.freeze({ websocket: WsLink, sse: SseLink, longpoll: PollLink });

/** Transport names this client speaks, best first (the server's order wins). */
export const TRANSPORTS = Object.freeze(Object.keys(LINKS));
