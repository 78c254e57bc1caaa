// Acme CMS — the switchyard demo app: a Projects area and a notification bell.
//
// The data flow is one-way on purpose: every change is sent to the HTTP API
// (`/demo/api/...`) and the page changes ONLY when the matching event arrives over the
// live connection. So every open tab, including the one that made the change, shows the
// same thing, and the page shows at once when live updates stop working.
//
// Sign-in: the demo has no passwords, picking an editor is the sign-in. POST
// /demo/api/login answers a session, kept in this tab's sessionStorage and sent as
// `Authorization: Bearer` on every demo request. The live connection follows `projects`
// and this editor's own `notifications/<user>` with a subscriber token that the demo's
// backend signs for exactly those topics (GET /demo/api/token): the client calls
// `getToken` before each connect and after the token expires, which is all an app does.
//
// Startup: GET /demo/api/state → render → connect() from the snapshot's cursor (the
// server takes both under one lock, so no change is missed or seen twice). A `reset`
// from the connection means events may be missing: fetch the snapshot again and
// re-render; the stream goes on by itself.
//
// Events are applied idempotently by object id, because after a refetch an event can
// arrive for an object the snapshot already holds.
//
// Plain DOM, no framework. Text from the server only ever reaches the page as text
// nodes or attributes (no innerHTML), so nothing in the data is interpreted as markup.

import { connect } from './switchyard.js';

/** The demo's editors (the server's list; used before the first snapshot). */
const USERS = ['ada', 'grace', 'linus'];
const USER_KEY = 'acme-cms.user';
const SESSION_KEY = 'acme-cms.session.';
/** Most entries kept in the "Recent activity" panel. */
const ACTIVITY_MAX = 12;

const params = new URLSearchParams(location.search);
const user = pickUser();
/** `?token_ttl=5`: ask for tokens that last 5 s, to watch the client refresh them. */
const tokenTtl = Number(params.get('token_ttl')) || null;
/** `?transports=longpoll` or `?transports=sse,longpoll` narrows the transports (debugging). */
const transports = (params.get('transports') || '')
  .split(',').map((t) => t.trim()).filter(Boolean);

/** What automated browser tests look at. */
const demo = {
  conn: null,
  state: null,
  /** True once the snapshot is rendered and the connection has settled (live, degraded or off). */
  ready: false,
  /** Ids of the envelopes received, in order. */
  events: [],
  /** `error` events of the connection ({code, message, topic}), in order. */
  errors: [],
  /** How many subscriber tokens the page fetched. */
  tokens: 0,
  getToken,
};
window.demo = demo;

/** While a refetch after `reset` runs, events wait here and are applied on top of it. */
let pending = null;

// ---------------------------------------------------------------- tiny DOM helpers

const $ = (id) => document.getElementById(id);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

/** `h('li', {class: 'x', testid: 'item-3', onclick: fn}, 'text', child)`; strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const ICONS = {
  comment: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z',
  plus: 'M12 5v14M5 12h14',
  check: 'M20 6 9 17l-5-5',
};

function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

const displayName = (u) => (u ? u[0].toUpperCase() + u.slice(1) : '');

function avatar(u, cls = 'avatar') {
  return h('span', { class: `${cls} u-${USERS.includes(u) ? u : 'other'}`, title: displayName(u), 'aria-hidden': 'true' },
    (u || '?')[0].toUpperCase());
}

function timeLabel(ts) {
  const t = new Date(ts);
  if (Number.isNaN(t.getTime())) return '';
  const secs = (Date.now() - t.getTime()) / 1000;
  if (secs < 60) return 'just now';
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  return t.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

let toastTimer = null;
function toast(message) {
  const el = $('toast');
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

// ---------------------------------------------------------------- HTTP API

async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Authorization: `Bearer ${await session(attempt > 0)}` };
    if (body) headers['Content-Type'] = 'application/json';
    const res = await fetch(`/demo/api/${path}`, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await res.json().catch(() => null);
    // A session from before a server restart: sign in again, once.
    if (res.status === 401 && attempt === 0) continue;
    if (!res.ok) throw new Error(data?.error?.message || `${res.status} ${res.statusText}`);
    return data;
  }
}

/** This tab's demo session (signing in as `user` when it has none, or `fresh`). */
async function session(fresh) {
  const key = SESSION_KEY + user;
  const kept = (() => { try { return sessionStorage.getItem(key); } catch { return null; } })();
  if (kept && !fresh) return kept;
  const res = await fetch('/demo/api/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok || !data?.session) throw new Error(data?.error?.message || `sign-in: ${res.status}`);
  try { sessionStorage.setItem(key, data.session); } catch { /* private mode */ }
  return data.session;
}

/** The client's `getToken`: a subscriber token for this editor's topics, from the demo's backend. */
async function getToken() {
  const answer = await api('GET', tokenTtl ? `token?ttl_s=${tokenTtl}` : 'token');
  demo.tokens += 1;
  return answer.token;
}

/** Sends a change; the page updates when its event arrives. Returns false on failure. */
async function send(what, method, path, body) {
  try {
    await api(method, path, body);
    return true;
  } catch (e) {
    toast(`Could not ${what}: ${e.message}`);
    return false;
  }
}

/** Runs `fn` with the form's controls disabled; clears `input` when `fn` succeeds. */
async function submitting(form, input, fn) {
  const controls = form.querySelectorAll('input, button');
  controls.forEach((c) => { c.disabled = true; });
  const ok = await fn(input.value.trim());
  controls.forEach((c) => { c.disabled = false; });
  if (ok) input.value = '';
  input.focus();
}

// ---------------------------------------------------------------- user

function pickUser() {
  const stored = (() => { try { return localStorage.getItem(USER_KEY); } catch { return null; } })();
  const u = [params.get('user'), stored].find((c) => USERS.includes(c)) || USERS[0];
  try { localStorage.setItem(USER_KEY, u); } catch { /* private mode */ }
  if (params.get('user') !== u) {
    params.set('user', u);
    history.replaceState(null, '', `?${params}`);
  }
  return u;
}

function renderUserPicker(users) {
  const select = $('user');
  select.replaceChildren(...users.map((u) => h('option', { value: u, selected: u === user }, displayName(u))));
  $('me-avatar').replaceWith(Object.assign(avatar(user), { id: 'me-avatar' }));
  select.onchange = () => {
    try { localStorage.setItem(USER_KEY, select.value); } catch { /* private mode */ }
    params.set('user', select.value);
    location.search = `?${params}`; // a new user means new topics: load the page afresh
  };
}

// ---------------------------------------------------------------- projects

function renderProjects() {
  const box = $('projects');
  const { projects } = demo.state;
  box.replaceChildren(...projects.map(projectView));
  if (!projects.length) box.append(h('p', { class: 'empty-state' }, 'No projects yet. Create the first one above.'));
}

function projectView(p) {
  const input = h('input', {
    testid: `add-item-${p.id}`, maxlength: 120, placeholder: 'Add an item…', 'aria-label': `New item in ${p.name}`, required: true,
  });
  const form = h('form', { class: 'add-item', autocomplete: 'off' },
    input,
    h('button', { type: 'submit', class: 'btn', testid: `add-item-btn-${p.id}` }, icon('plus'), 'Add'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitting(form, input, (title) => title && send('add the item', 'POST', `projects/${p.id}/items`, { title }));
  });

  const card = h('article', { class: 'card project', testid: `project-${p.id}`, 'data-id': p.id },
    h('header', { class: 'project-head' },
      h('h2', { class: 'project-name' }),
      h('span', { class: 'project-count muted' })),
    h('div', { class: 'progress', 'aria-hidden': 'true' }, h('span')),
    h('ul', { class: 'items' }),
    form);
  fillProject(card, p);
  for (const item of p.items) card.querySelector('.items').append(itemView(item));
  return card;
}

/** Updates the parts of a project card that change (name, counts). */
function fillProject(card, p) {
  card.querySelector('.project-name').textContent = p.name;
  const done = p.items.filter((i) => i.done).length;
  card.querySelector('.project-count').textContent =
    p.items.length ? `${done} of ${p.items.length} done` : 'No items yet';
  card.querySelector('.progress span').style.width = `${p.items.length ? (100 * done) / p.items.length : 0}%`;
  const list = card.querySelector('.items');
  const empty = list.querySelector('.items-empty');
  if (!p.items.length && !empty) list.append(h('li', { class: 'items-empty muted' }, 'Nothing here yet.'));
  if (p.items.length && empty) empty.remove();
}

function itemView(item) {
  const li = h('li', { class: 'item', testid: `item-${item.id}`, 'data-id': item.id });
  const check = h('input', { type: 'checkbox', class: 'check', 'aria-label': 'Done' });
  check.addEventListener('change', async () => {
    const wanted = check.checked;
    check.disabled = true;
    const ok = await send('update the item', 'PATCH', `projects/${item.project_id}/items/${item.id}`, { done: wanted });
    check.disabled = false;
    // The event sets the box; until then (or on failure) show what the data says.
    if (!ok || li.dataset.done !== String(wanted)) check.checked = li.dataset.done === 'true';
  });

  const title = h('button', { type: 'button', class: 'title', title: 'Click to rename' });
  title.addEventListener('click', () => editTitle(li, item));

  const toggle = h('button', { type: 'button', class: 'comments-toggle', 'aria-expanded': 'false' },
    icon('comment'), h('span', { class: 'comment-count' }));
  const comments = h('div', { class: 'comments', hidden: true },
    h('ol', { class: 'comment-list' }),
    commentForm(item));
  toggle.addEventListener('click', () => {
    comments.hidden = !comments.hidden;
    toggle.setAttribute('aria-expanded', String(!comments.hidden));
    if (!comments.hidden) comments.querySelector('input').focus();
  });

  li.append(
    h('div', { class: 'item-row' },
      check,
      h('div', { class: 'item-main' }, title, h('div', { class: 'item-meta muted' })),
      toggle),
    comments);
  fillItem(li, item);
  return li;
}

/** Updates an item row in place (keeps an open comment thread and a half-typed comment). */
function fillItem(li, item) {
  li.dataset.title = item.title;
  li.dataset.done = String(item.done);
  li.classList.toggle('done', item.done);
  li.querySelector('.check').checked = item.done;
  li.querySelector('.title').textContent = item.title;
  li.querySelector('.item-meta').replaceChildren(avatar(item.updated_by, 'avatar xs'),
    `${item.done ? 'Completed' : 'Updated'} by ${displayName(item.updated_by)}`);
  const n = item.comments.length;
  li.querySelector('.comment-count').textContent = n ? String(n) : '';
  li.querySelector('.comments-toggle').title = n === 1 ? '1 comment' : `${n} comments`;
  const list = li.querySelector('.comment-list');
  const shown = new Set([...list.children].map((c) => c.dataset.id));
  for (const c of item.comments) if (!shown.has(String(c.id))) list.append(commentView(c));
}

function editTitle(li, item) {
  const title = li.querySelector('.title');
  if (li.querySelector('.title-edit')) return;
  const input = h('input', { class: 'title-edit', maxlength: 120, value: li.dataset.title, 'aria-label': 'Item title' });
  let finished = false;
  const finish = async (save) => {
    if (finished) return;
    finished = true;
    const value = input.value.trim();
    if (save && value && value !== li.dataset.title) {
      input.disabled = true;
      await send('rename the item', 'PATCH', `projects/${item.project_id}/items/${item.id}`, { title: value });
    }
    input.remove();
    title.hidden = false;
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') finish(true);
    if (e.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
  title.hidden = true;
  title.after(input);
  input.focus();
  input.select();
}

function commentView(c) {
  return h('li', { class: 'comment', 'data-id': c.id },
    avatar(c.author, 'avatar sm'),
    h('div', {},
      h('div', { class: 'comment-head' }, h('strong', {}, displayName(c.author)), ' ',
        h('time', { class: 'muted', datetime: c.ts }, timeLabel(c.ts))),
      h('p', {}, c.text)));
}

function commentForm(item) {
  const input = h('input', { maxlength: 1000, placeholder: 'Write a comment…', 'aria-label': 'Comment', required: true });
  const form = h('form', { class: 'comment-form', autocomplete: 'off' }, input, h('button', { type: 'submit', class: 'btn' }, 'Comment'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitting(form, input, (text) => text && send('add the comment', 'POST', `projects/${item.project_id}/items/${item.id}/comments`, { text }));
  });
  return form;
}

/** Brief highlight for something another editor changed. */
function flash(el, by) {
  if (!el || by === user) return;
  el.classList.remove('flash');
  void el.offsetWidth; // restart the animation
  el.classList.add('flash');
}

// ---------------------------------------------------------------- notifications

function renderBell() {
  const { notifications } = demo.state;
  const unread = notifications.filter((n) => !n.read).length;
  demo.state.unread = unread;
  const badge = $('bell-count');
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
  $('bell').title = unread ? `Notifications (${unread} unread)` : 'Notifications';
  $('bell-summary').textContent = notifications.length ? `${notifications.length} total` : '';
  const list = $('notes');
  list.replaceChildren(...notifications.map((n) =>
    h('li', { class: `note${n.read ? '' : ' unread'}${seenUnread.has(n.id) ? ' fresh' : ''}` },
      h('button', { type: 'button', onclick: () => { closeBell(); reveal(n.item_id); } },
        h('span', { class: 'note-text' }, n.text),
        h('time', { class: 'muted', datetime: n.ts }, timeLabel(n.ts))))));
  if (!notifications.length) list.append(h('li', { class: 'empty' }, "You're all caught up."));
}

/** Notifications that were unread when the menu was opened stay highlighted while it is open. */
let seenUnread = new Set();

function openBell() {
  seenUnread = new Set(demo.state.notifications.filter((n) => !n.read).map((n) => n.id));
  $('bell-menu').hidden = false;
  $('bell').setAttribute('aria-expanded', 'true');
  renderBell();
  if (seenUnread.size) send('mark notifications read', 'POST', `notifications/${user}/read`, {});
}

function closeBell() {
  seenUnread = new Set();
  $('bell-menu').hidden = true;
  $('bell').setAttribute('aria-expanded', 'false');
  renderBell();
}

function reveal(itemId) {
  const el = byTestId(`item-${itemId}`);
  if (!el) return;
  el.scrollIntoView({ behavior: 'smooth', block: 'center' });
  el.classList.remove('flash');
  void el.offsetWidth;
  el.classList.add('flash');
}

// ---------------------------------------------------------------- activity panel

function logActivity(text, by, ts) {
  const list = $('activity');
  list.querySelector('.empty')?.remove();
  list.prepend(h('li', {}, avatar(by, 'avatar sm'),
    h('div', {}, h('span', {}, text), h('time', { class: 'muted', datetime: ts }, timeLabel(ts)))));
  while (list.children.length > ACTIVITY_MAX) list.lastChild.remove();
}

// ---------------------------------------------------------------- events

const findProject = (id) => demo.state.projects.find((p) => p.id === id);

/** Applies one envelope to `demo.state` and the page. Safe to apply twice. */
function apply(env) {
  const d = env.data || {};
  const who = displayName(d.by);
  switch (env.type) {
    case 'project.created': {
      const p = d.project;
      if (findProject(p.id)) return;
      const project = { ...p, items: p.items || [] };
      demo.state.projects.push(project);
      $('projects').querySelector('.empty-state')?.remove();
      const card = projectView(project);
      $('projects').append(card);
      flash(card, d.by);
      logActivity(`${who} created the project “${p.name}”`, d.by, env.ts);
      return;
    }
    case 'item.created':
    case 'item.updated': {
      const item = d.item;
      const project = findProject(item.project_id);
      if (!project) return;
      const at = project.items.findIndex((i) => i.id === item.id);
      const known = at >= 0;
      if (known) project.items[at] = item; else project.items.push(item);
      const card = byTestId(`project-${project.id}`);
      let li = byTestId(`item-${item.id}`);
      if (li) fillItem(li, item);
      else card.querySelector('.items').append(li = itemView(item));
      fillProject(card, project);
      flash(li, d.by);
      const verb = env.type === 'item.created' ? 'added' : item.done ? 'completed' : 'updated';
      logActivity(`${who} ${verb} “${item.title}” in ${project.name}`, d.by, env.ts);
      return;
    }
    case 'comment.created': {
      const c = d.comment;
      const item = findProject(d.project_id)?.items.find((i) => i.id === c.item_id);
      if (!item || item.comments.some((x) => x.id === c.id)) return;
      item.comments.push(c);
      fillItem(byTestId(`item-${item.id}`), item);
      logActivity(`${displayName(c.author)} commented on “${item.title}”`, c.author, env.ts);
      return;
    }
    case 'notification.created': {
      const list = demo.state.notifications;
      if (!list.some((n) => n.id === d.id)) list.unshift(d);
      renderBell();
      return;
    }
    case 'notification.read':
      demo.state.notifications.forEach((n) => { n.read = true; });
      renderBell();
      return;
    default:
      // An event type this page does not know: nothing to show.
  }
}

function onEvent(env) {
  demo.events.push(env.id);
  if (pending) pending.push(env);
  else apply(env);
}

/** `reset`: events may be missing, so take a fresh snapshot; the stream carries on. */
async function refetch() {
  if (pending) return; // one refetch at a time; events keep queueing for it
  pending = [];
  for (let delay = 1000; ; delay = Math.min(delay * 2, 15000)) {
    try {
      demo.state = await api('GET', 'state');
      break;
    } catch (e) {
      toast(`Could not reload the projects (${e.message}); retrying…`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  renderProjects();
  renderBell();
  const queued = pending;
  pending = null;
  queued.forEach(apply);
}

// ---------------------------------------------------------------- connection status

const TRANSPORT_NAMES = { websocket: 'WebSocket', sse: 'Server-Sent Events', longpoll: 'long polling' };
/** Why the client is on a fallback (the `reason` of a `degraded` mode), in words. */
const REASONS = {
  disabled: 'WebSocket is switched off on this server.',
  forced: 'the transports were chosen in the page address.',
  preference: 'the server prefers it.',
  remembered: 'WebSocket failed here recently, so it is skipped for a while.',
  upgrade_failed: 'the WebSocket connection could not be opened (often a proxy in between).',
  no_ready: 'a stream was held back on the way (a buffering proxy).',
  stalled: 'the faster connection went silent.',
  http_status: 'the server answered with an error.',
  network_error: 'the network dropped the faster connection.',
  closed: 'the faster connection was closed.',
  probe_failed: 'WebSocket was tried again and still does not work.',
};

/** How this tab gets its updates (the client shares one connection among the tabs). */
const ROLES = {
  leader: ' — this tab holds the connection for every tab of this site',
  follower: ' — fed by another tab of this site (one connection for all tabs)',
  alone: ' — this tab has a connection of its own',
};

function showMode(mode, transport, reason) {
  demo.lastMode = { mode, transport, reason };
  const conn = $('conn');
  conn.dataset.mode = mode;
  $('conn-mode').textContent = mode;
  const via = mode === 'live' || mode === 'degraded' ? transport || '' : '';
  $('conn-transport').textContent = via;
  $('conn-sep').hidden = !via;
  $('conn-reason').textContent = mode === 'degraded' && reason ? `(${reason})` : '';
  const how = TRANSPORT_NAMES[transport] || transport;
  conn.title = ({
    live: `Live updates over ${how}`,
    degraded: `Live updates over ${how}${reason ? ` — ${reason}` : ''}`,
    reconnecting: 'Connection lost — reconnecting…',
    off: 'Live updates are switched off',
  }[mode] || 'Connecting…') + (ROLES[demo.conn && demo.conn.role] || '');

  const notice = $('notice-degraded');
  notice.hidden = mode !== 'degraded';
  if (mode === 'degraded') {
    notice.replaceChildren(
      h('strong', {}, `Live updates are running over ${how}`),
      reason ? ` because ${REASONS[reason] || `of “${reason}”.`} ` : '. ',
      'Everything still updates; changes may take a moment longer.');
  }
  $('banner-off').hidden = mode !== 'off';
  if (demo.state && ['live', 'degraded', 'off'].includes(mode)) demo.ready = true;
}

// ---------------------------------------------------------------- startup

function wireStaticControls() {
  $('refresh').addEventListener('click', () => location.reload());
  $('bell').addEventListener('click', (e) => {
    e.stopPropagation();
    if ($('bell-menu').hidden) openBell(); else closeBell();
  });
  document.addEventListener('click', (e) => {
    if (!$('bell-menu').hidden && !e.target.closest('.bell-wrap')) closeBell();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('bell-menu').hidden) closeBell();
  });
  const form = $('new-project');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitting(form, $('new-project-name'), (name) => name && send('create the project', 'POST', 'projects', { name }));
  });
}

async function start() {
  wireStaticControls();
  renderUserPicker(USERS);
  try {
    demo.state = await api('GET', 'state');
  } catch (e) {
    $('loading').textContent = `Could not load the projects: ${e.message}. `;
    $('loading').append(h('button', { type: 'button', class: 'btn', onclick: () => location.reload() }, 'Try again'));
    return;
  }
  renderUserPicker(demo.state.users || USERS);
  renderProjects();
  renderBell();

  const conn = connect({
    url: '/v1',
    topics: demo.state.topics,
    cursor: demo.state.cursor,
    getToken,
    // The tabs of one editor share a connection; another editor's tab (another token)
    // has its own.
    share: user,
    ...(transports.length ? { transports } : {}),
  });
  demo.conn = conn;
  conn.on('event', onEvent);
  conn.on('error', (e) => {
    demo.errors.push(e);
    toast(`Live updates: ${e.message}`);
  });
  conn.on('mode', ({ mode, transport, reason }) => showMode(mode, transport, reason));
  conn.on('reset', () => { refetch(); });
  conn.on('role', (role) => {
    $('conn').dataset.role = role;
    const last = demo.lastMode || { mode: conn.mode, transport: conn.transport, reason: null };
    showMode(last.mode, last.transport, last.reason);
  });
  if (conn.mode) showMode(conn.mode, conn.transport);
}

// Keep "just now" / "5 min ago" honest.
setInterval(() => {
  document.querySelectorAll('time[datetime]').forEach((t) => { t.textContent = timeLabel(t.getAttribute('datetime')); });
}, 30000);

start();
