// Type declarations for the switchyard browser client (`/switchyard.js`).

/** The three transports, as the server names them. */
export type TransportName = 'websocket' | 'sse' | 'longpoll';

/** Transport names this client speaks (the server's negotiate order wins). */
export const TRANSPORTS: readonly TransportName[];

/**
 * How a tab gets its events (SPEC §11):
 * - `leader`: this tab holds the one server connection for every tab of its origin and API `url`;
 * - `follower`: another tab holds it and feeds this one;
 * - `alone`: this tab has a connection of its own (`share: false`, or no Web Locks or
 *   BroadcastChannel in this browser).
 * A tab is `follower` until it knows better (a few ms after `connect()`).
 */
export type Role = 'leader' | 'follower' | 'alone';

/** Prefix of the localStorage keys that remember a failed transport. */
export const FAILURE_KEY_PREFIX: 'switchyard:failed:';

/**
 * What the client currently has:
 * - `live`: WebSocket;
 * - `degraded`: SSE or long-poll — still live, but through a fallback;
 * - `reconnecting`: no stream at the moment, working on it;
 * - `off`: every transport is switched off by the operator (or none of those the app
 *   allows is on): the page must tell the user to refresh by hand. The client asks
 *   negotiate again now and then (`offRetryMs`) and connects by itself if one comes back.
 */
export type Mode = 'live' | 'degraded' | 'reconnecting' | 'off';

/** A cause, as reported to `POST /v1/reports`. */
export type FallbackReason =
  | 'upgrade_failed'
  | 'no_ready'
  | 'stalled'
  | 'http_status'
  | 'network_error'
  | 'closed'
  | 'disabled'
  | 'probe_failed';

/** One event, identical on every transport (SPEC §2). */
export interface Envelope<T = unknown> {
  /** The event's cursor, `<epoch>-<seq>`; treat it as opaque. */
  id: string;
  topic: string;
  type: string;
  data: T;
  /** The server's receive time, RFC 3339, UTC, milliseconds. */
  ts: string;
}

/** Payload of the `mode` event. */
export interface ModeChange {
  mode: Mode;
  /** The transport in use (`live`, `degraded`), else null. */
  transport: TransportName | null;
  /**
   * Why: null when `live`. When `degraded`: a {@link FallbackReason} of the fallback
   * that led here, or `remembered` (a better transport failed recently and is skipped),
   * `disabled` (the operator switched WebSocket off), `forced` (the app's `transports`
   * option excludes WebSocket), `preference` (the operator lists another transport
   * first). When `reconnecting`: `connecting` at start, a {@link FallbackReason}, or the
   * server's reconnect reason (e.g. `shutdown`), or `leader_changed` (a tab that led
   * handed the connection to another). When `off`: `disabled`.
   */
  reason: FallbackReason | 'remembered' | 'forced' | 'preference' | 'connecting' | (string & {}) | null;
}

/** Payload of the `error` event: a refusal, in the server's words. */
export interface ClientError {
  /**
   * `invalid_topic`, `invalid_cursor`, a code of the server's `error` frame, or a token
   * refusal (SPEC §9): `topic_forbidden` / `token_required` (with `topic`: this tab no
   * longer follows it, its other topics carry on), `token_invalid`, `token_unavailable`
   * (`getToken` threw, timed out or gave no string; retried with back-off).
   */
  code: string;
  message: string;
  /** The topic refused, for `topic_forbidden` and `token_required`; else null. */
  topic: string | null;
}

/** What `getToken` is told: the topics the connection is about to follow (every tab's). */
export interface TokenRequest {
  topics: string[];
}

/** Payload of the `reset` event: events may be missing, refetch the app's state. */
export interface ResetInfo {
  /** `unknown_epoch` (server restarted), `cursor_expired`, `cursor_ahead`, … */
  reason: string;
  /** Where the stream continues (the client has already adopted it). */
  cursor: string;
}

export interface ConnectOptions {
  /** Topics to follow: an array or a comma-separated string. At least one. */
  topics: string[] | string;
  /** API base, resolved against `location`. Default `/v1`. */
  url?: string;
  /** Resume after this cursor (an event `id` saved earlier). Default: from now. */
  cursor?: string | null;
  /**
   * Narrows the transports the server offers (its order is kept), e.g. `['longpoll']`
   * for debugging. An array or a comma-separated string.
   */
  transports?: TransportName[] | string;
  /** A transport must deliver `ready` within this. Default 4000. */
  readyTimeoutMs?: number;
  /** Silence longer than this many heartbeats is a dead stream. Default 2.5. */
  stallFactor?: number;
  /** First reconnect delay (full jitter: a random delay up to it). Default 500. */
  backoffBaseMs?: number;
  /** Cap of the exponential back-off. Default 30000. */
  backoffMaxMs?: number;
  /** How long a failed transport is remembered (and skipped) in localStorage. Default 600000. */
  failMemoryMs?: number;
  /** From a fallback, how often (±25 %) to probe the better transport. Default 60000. */
  probeIntervalMs?: number;
  /** With every transport off, how often (±25 %) to ask negotiate again. Default 60000. */
  offRetryMs?: number;
  /** A long-poll that has not answered after poll_timeout_ms + this is a stall. Default 5000. */
  pollSlackMs?: number;
  /** Where failures are remembered. Default `localStorage`; null disables the memory. */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  /** Set false to not POST fallback reports. Default true. */
  reports?: boolean;
  /**
   * Share one server connection among the tabs of this origin and API `url` (SPEC §11).
   * Tabs share only when their `url`, `transports`, tuning options, `reports` and
   * `withCredentials` are the same. Default true; false gives this tab a connection of its
   * own; a string is a group: only tabs with the same string share. The leader's
   * `getToken` serves every tab of its group, so when one browser can hold several users
   * on one origin, pass the user's id.
   */
  share?: boolean | string;
  /**
   * Returns a subscriber token (a JWT, SPEC §9) for the topics asked. Called before each
   * connect and after the server ends a stream with `token_expired`; the token goes in
   * `Authorization: Bearer` on polls and negotiate, and WebSocket and SSE open with a
   * one-time ticket (`POST /tickets`), so it never sits in a URL. Without it the
   * `switchyard_token` cookie, if the app sets one, is what the server sees.
   */
  getToken?: (request: TokenRequest) => Promise<string>;
  /**
   * Send cookies to an API on another origin (`fetch` `credentials: 'include'`,
   * `EventSource` `withCredentials`): for the `switchyard_token` cookie across origins.
   * The server must then list this page's origin in SWITCHYARD_ALLOWED_ORIGINS. Default false.
   */
  withCredentials?: boolean;
  /** Told, in words, what the sharing between tabs does (leading, following, taking over). */
  debug?: (line: string) => void;
}

export interface SubscribeOptions {
  /** Start the new topics after this cursor instead of at the head. */
  cursor?: string;
}

export interface ConnectionEvents {
  event: Envelope;
  mode: ModeChange;
  reset: ResetInfo;
  /** A refused `subscribe`/`unsubscribe` (also its rejection), or a refusal by the server. */
  error: ClientError;
  role: Role;
}

export interface Connection {
  /** Adds a listener; returns a function that removes it again. */
  on<K extends keyof ConnectionEvents>(name: K, fn: (payload: ConnectionEvents[K]) => void): () => void;
  /** The transport in use, or null while reconnecting or off. */
  readonly transport: TransportName | null;
  /** The current mode (`reconnecting` until the first transport is ready; `off` after close()). */
  readonly mode: Mode;
  /**
   * The cursor this tab resumes after (the earliest position of its topics: the last
   * event's id, a reset's cursor, or where the connection has got to), or null.
   */
  readonly cursor: string | null;
  /** `leader`, `follower` or `alone`; see {@link Role}. */
  readonly role: Role | null;
  /** The topics this tab follows. */
  readonly topics: string[];
  /**
   * Follows more topics on the live connection: each new topic starts at the head (or
   * after `options.cursor`); topics already followed keep their position. Resolves once
   * the server follows them; rejects with a {@link ClientError} (emitted as `error` too)
   * for a bad topic or cursor, or more than 100 topics, and changes nothing.
   */
  subscribe(topics: string[] | string, options?: SubscribeOptions): Promise<void>;
  /** Stops following topics; the others' events are neither lost nor repeated. */
  unsubscribe(topics: string[] | string): Promise<void>;
  /** Stops everything: sockets, polls, timers and page listeners. Final. */
  close(): void;
}

/** Opens a connection; it starts on the next microtask, so add listeners right away. */
export function connect(options: ConnectOptions): Connection;
