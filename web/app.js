/* app.js - the flowd dashboard (issue 9, section 2; docs/operations.md).
 *
 * One static page that asks the REST API of the node serving it for
 * everything it shows (docs/api.md). No framework, no build step, no
 * network beyond that node. Pages are picked by the URL's hash:
 *
 *   #/runs?flow=&status=&trigger=&since=   runs, filters, counts, live
 *   #/runs/<id>                            one run: DAG, Gantt, steps, logs
 *   #/flows, #/flows/<name>                flows; one flow: schedules,
 *                                          pause, backfill, start, versions
 *   #/events?id=                           recent events and their runs
 *   #/cluster                              nodes, indexes, lags, tasks
 *
 * Every element is built with the DOM API (el(), svg()): text goes in as
 * text nodes and attributes through setAttribute, never through innerHTML,
 * so nothing the API answers is ever parsed as HTML.
 *
 * Live updates: GET /v1/watch (Server-Sent Events, read with fetch() since
 * EventSource cannot send the Authorization header). Where a node has no
 * such route (404/405) a page falls back to blocking reads (?index=N&wait=30s).
 */
'use strict';

(() => {
  // -------------------------------------------------------------- DOM

  const SVG_NS = 'http://www.w3.org/2000/svg';

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2), value);
      } else if (key === 'testid') {
        node.setAttribute('data-testid', value);
      } else if (key === 'value' || key === 'checked') {
        node[key] = value;
      } else {
        node.setAttribute(key, value === true ? '' : String(value));
      }
    }
  }

  function append(node, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /* An HTML element: el('a', {href, class, testid, onclick}, children...).
   * Children are appended before the attributes are set, so that a
   * <select>'s value can name one of its options. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    append(node, children);
    setAttrs(node, attrs);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    append(node, children);
    setAttrs(node, attrs);
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  const enc = encodeURIComponent;

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
    }
    const text = q.toString();
    return text ? '?' + text : '';
  }

  function withQuery(path, params) {
    const extra = query(params);
    if (!extra) return path;
    return path + (path.includes('?') ? '&' + extra.slice(1) : extra);
  }

  // ------------------------------------------------------- formatting

  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
  const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
  const TRIGGER_TYPES = ['manual', 'schedule', 'backfill', 'event', 'on_finish', 'resume'];
  const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };

  function ms(iso) {
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? null : t;
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, '0');
  }

  function fmtTime(iso) {
    const t = ms(iso);
    if (t === null) return '—';
    const d = new Date(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(millis) {
    if (millis === null || millis === undefined || Number.isNaN(millis)) return '—';
    const m = Math.max(0, millis);
    if (m < 1000) return `${Math.round(m)} ms`;
    if (m < 60e3) return `${(m / 1000).toFixed(m < 10e3 ? 1 : 0)} s`;
    const s = Math.round(m / 1000);
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function fmtAgo(iso) {
    const t = ms(iso);
    if (t === null) return '—';
    const d = Date.now() - t;
    return d >= 0 ? `${fmtDuration(d)} ago` : `in ${fmtDuration(-d)}`;
  }

  /* A time as the local wall clock, its RFC 3339 UTC form in the tooltip. */
  function timeEl(iso, relative = false) {
    if (!iso) return el('span', { class: 'muted' }, '—');
    const text = relative ? fmtAgo(iso) : fmtTime(iso);
    return el('time', { datetime: iso, title: iso }, text);
  }

  function runDuration(run) {
    const start = ms(run.started_at) ?? ms(run.created_at);
    if (start === null) return null;
    const end = ms(run.finished_at) ?? (TERMINAL.has(run.status) ? start : Date.now());
    return end - start;
  }

  function badge(status, testid, extra = {}) {
    return el('span', { class: `badge s-${status || 'unknown'}`, testid, ...extra }, status || 'unknown');
  }

  function compactJson(value, max = 120) {
    const text = JSON.stringify(value);
    return text.length > max ? text.slice(0, max - 1) + '…' : text;
  }

  /* JSON with object keys sorted, two-space indented: the form versions are
   * diffed in, so that a key order change is no difference. */
  function stableJson(value) {
    const sort = (v) => {
      if (Array.isArray(v)) return v.map(sort);
      if (v && typeof v === 'object') {
        return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
      }
      return v;
    };
    return JSON.stringify(sort(value), null, 2);
  }

  function runLink(id, testid = 'run-link') {
    return el('a', { href: `#/runs/${enc(id)}`, class: 'mono', testid }, id);
  }

  /* A flow of project default, branch main links to its page; one of
   * another branch (docs/lifecycle.md) shows where it lives. */
  function isMain(project, branch) {
    return (project || 'default') === 'default' && (branch || 'main') === 'main';
  }

  function flowLink(name, project = 'default', branch = 'main') {
    if (isMain(project, branch)) {
      return el('a', { href: `#/flows/${enc(name)}`, testid: 'flow-link' }, name);
    }
    return el('a', { href: `#/flows/${enc(name)}${query({ project, branch })}`, testid: 'flow-link', 'data-branch': branch },
      name, ' ', el('span', { class: 'tag' }, `${project}/${branch}`));
  }

  /* The API path of a flow: /v1/flows/NAME in default/main, else under
   * its project's branch. */
  function flowBase(project, branch, name) {
    return isMain(project, branch) ? `/v1/flows/${enc(name)}`
      : `/v1/projects/${enc(project)}/branches/${enc(branch)}/flows/${enc(name)}`;
  }

  // ---------------------------------------------------------- session

  const TOKEN_KEY = 'flowd.token';
  const session = { token: null, role: 'reader', node: null };

  function isAdmin() {
    return session.role === 'admin';
  }

  function authHeaders(extra) {
    const headers = { ...extra };
    if (session.token) headers.Authorization = `Bearer ${session.token}`;
    return headers;
  }

  class ApiError extends Error {
    constructor(status, body, headers) {
      const err = body && body.error ? body.error : {};
      super(err.message || `HTTP ${status}`);
      this.status = status;
      this.code = err.code || null;
      this.field = err.field || null;
      this.headers = headers;
    }

    describe() {
      const what = this.code ? `${this.code}: ${this.message}` : this.message;
      return this.field ? `${what} (field ${this.field})` : what;
    }
  }

  /* One request to the API; resolves {status, json, text, headers} for a
   * 2xx answer and throws ApiError otherwise. A 401 signs the user out
   * (the token was revoked or mistyped). */
  async function api(path, { method = 'GET', body, signal, headers } = {}) {
    const init = { method, signal, cache: 'no-store', headers: authHeaders({ Accept: 'application/json', ...headers }) };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (e) {
      json = null;
    }
    if (res.status === 401 && session.token !== null) {
      signOut('The node refused the token (401). Enter it again.');
    }
    if (!res.ok) throw new ApiError(res.status, json, res.headers);
    return { status: res.status, json, text, headers: res.headers };
  }

  /* The token's role. flowd has no "who am I" route and no admin-only route
   * that changes nothing, so the page asks for a write that cannot succeed:
   * POST /v1/flows/%20/runs. flowd checks authorization before it validates
   * (verified against a real node: a reader gets 403 forbidden, an admin
   * 400 invalid_value for the flow name), and " " never matches the flow
   * name pattern, so nothing is created, forwarded or logged to Raft. With
   * no token configured at all the node accepts everything: 400 too, admin.
   * Anything else (a node that is shutting down) counts as reader: the page
   * then shows no write controls, which is the safe side. */
  async function probeRole() {
    try {
      await api('/v1/flows/%20/runs', { method: 'POST', body: {} });
      return 'admin';
    } catch (e) {
      if (e instanceof ApiError && e.status === 400) return 'admin';
      return 'reader';
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    session.token = null;
    session.role = 'reader';
    if (current) current.close();
    current = null;
    showLogin(message);
  }

  // ---------------------------------------------------------- notices

  function notice(message, kind = 'info') {
    const box = document.getElementById('notices');
    const item = el('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : null, testid: `notice-${kind}` },
      el('span', {}, message),
      el('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
    box.appendChild(item);
    if (kind !== 'error') setTimeout(() => item.remove(), 6000);
    return item;
  }

  function errorText(e) {
    return e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e);
  }

  // ------------------------------------------------------ page context

  /* What one page owns: an AbortController for its requests and streams,
   * and its timers. Leaving the page closes it: every request is aborted,
   * every loop sees `alive` false and ends. */
  class PageContext {
    constructor() {
      this.ctrl = new AbortController();
      this.timers = new Set();
    }

    get signal() {
      return this.ctrl.signal;
    }

    get alive() {
      return !this.ctrl.signal.aborted;
    }

    close() {
      this.ctrl.abort();
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
    }

    /* A promise that resolves after `millis`, or at once when the page closes. */
    delay(millis) {
      return new Promise((resolve) => {
        if (!this.alive) return resolve();
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.signal.removeEventListener('abort', done);
          resolve();
        }, millis);
        const done = () => resolve();
        this.timers.add(t);
        this.signal.addEventListener('abort', done, { once: true });
      });
    }

    /* fn() every `millis` while the page is open. */
    every(millis, fn) {
      const next = () => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          if (!this.alive) return;
          try {
            fn();
          } finally {
            next();
          }
        }, millis);
        this.timers.add(t);
      };
      next();
    }

    /* fn, called at most once per `millis` however often it is asked for. */
    coalesce(millis, fn) {
      let pending = false;
      return () => {
        if (pending || !this.alive) return;
        pending = true;
        const t = setTimeout(() => {
          this.timers.delete(t);
          pending = false;
          if (this.alive) fn();
        }, millis);
        this.timers.add(t);
      };
    }

    /* Run an async task of the page; its failure is shown unless the page
     * has closed meanwhile. */
    spawn(promise) {
      promise.catch((e) => {
        if (this.alive && !(e && e.name === 'AbortError')) notice(errorText(e), 'error');
      });
    }
  }

  // ----------------------------------------------------------- streams

  /* Reads a text/event-stream body and calls onEvent({type, data, id}) for
   * each event (the WHATWG parsing rules: `field: value` lines, `data`
   * lines joined by newlines, a blank line ends an event, `:` lines are
   * comments). onEvent returning false stops reading. */
  async function readEventStream(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let event = { type: '', data: [], id: null };
    const dispatch = () => {
      const ev = event;
      event = { type: '', data: [], id: null };
      if (ev.data.length === 0) return true;
      return onEvent({ type: ev.type || 'message', data: ev.data.join('\n'), id: ev.id }) !== false;
    };
    const line = (text) => {
      if (text === '') return dispatch();
      if (text.startsWith(':')) return true;
      const colon = text.indexOf(':');
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? '' : text.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') event.data.push(value);
      else if (field === 'event') event.type = value;
      else if (field === 'id' && !value.includes('\0')) event.id = value;
      return true;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let m;
        while ((m = /\r\n|\r|\n/.exec(buffer)) !== null) {
          // a lone \r at the end may be the first half of \r\n
          if (m[0] === '\r' && m.index === buffer.length - 1) break;
          const text = buffer.slice(0, m.index);
          buffer = buffer.slice(m.index + m[0].length);
          if (line(text) === false) return;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  function isEventStream(res) {
    return (res.headers.get('Content-Type') || '').startsWith('text/event-stream');
  }

  const live = { state: 'idle' };

  function setLive(state) {
    live.state = state;
    const dot = document.getElementById('live');
    if (!dot) return;
    const labels = {
      idle: '', connecting: 'connecting…', live: 'live', polling: 'polling', reconnecting: 'reconnecting…',
    };
    dot.className = `live live-${state}`;
    dot.dataset.state = state;
    dot.textContent = state in labels ? labels[state] : state;
    dot.title = {
      live: 'Updates arrive through GET /v1/watch',
      polling: 'This node has no GET /v1/watch: updates arrive through blocking reads',
    }[state] || '';
  }

  /* Follows GET /v1/watch?<filter> (docs/api.md, "Streams"): on.event(type,
   * data) for every event, on.resync() whenever changes may have been
   * missed: a `reset` event (the stream goes on after it), or a connection
   * that neither resumes (Last-Event-ID) nor starts from `since` (the
   * X-Flowd-Index of the list the page shows, so list-then-watch has no
   * gap). Reconnects with Last-Event-ID. Resolves false at once when the
   * node has no such route (or refuses the filter: a 4xx), so that the
   * caller can fall back to blocking reads; true when the page closed. */
  async function watch(ctx, filter, on, since = null) {
    let lastId = null;
    let failures = 0;
    setLive('connecting');
    while (ctx.alive) {
      const from = lastId === null && since ? { index: since } : {};
      let res = null;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        res = await fetch('/v1/watch' + query({ ...filter, ...from }), { headers, signal: ctx.signal, cache: 'no-store' });
      } catch (e) {
        if (!ctx.alive) return true;
      }
      if (res && res.status === 401) {
        signOut('The node refused the token (401). Enter it again.');
        return true;
      }
      if (res && res.status >= 400 && res.status < 500 && ![408, 429].includes(res.status)) {
        res.body?.cancel().catch(() => {});
        return false;
      }
      if (!res || !res.ok || !isEventStream(res)) {
        res?.body?.cancel().catch(() => {}); // 503 too_many_streams, shutting down: later
        failures++;
        setLive('reconnecting');
        await ctx.delay(Math.min(10000, 500 * 2 ** Math.min(failures, 5)));
        continue;
      }
      failures = 0;
      setLive('live');
      if (lastId === null && !since) on.resync();
      try {
        await readEventStream(res, (ev) => {
          if (ev.id !== null) lastId = ev.id;
          let data = null;
          try {
            data = JSON.parse(ev.data);
          } catch (e) {
            return true;
          }
          if (ev.type === 'reset') on.resync();
          else on.event(ev.type, data);
          return ctx.alive;
        });
      } catch (e) {
        if (!ctx.alive) return true;
      }
      if (!ctx.alive) return true;
      setLive('reconnecting');
      await ctx.delay(500);
    }
    return true;
  }

  /* Re-reads `path` as a blocking read (docs/api.md, "Blocking reads"):
   * ?index=N&wait=30s holds the request until what it shows changed after N.
   * onData(json) for each answer whose X-Flowd-Index moved; stops when
   * until(json) is true or the page closes. An answer that comes back at
   * once with the same index (no index, a run that left memory) waits 2 s
   * before the next, so that this never spins. */
  async function pollBlocking(ctx, path, onData, until) {
    let index = null;
    let failures = 0;
    setLive('polling');
    while (ctx.alive) {
      const started = Date.now();
      const url = index === null ? path : withQuery(path, { index, wait: '30s' });
      try {
        const r = await api(url, { signal: ctx.signal });
        failures = 0;
        const next = r.headers.get('X-Flowd-Index');
        if (index === null || next !== index) onData(r.json);
        if (until && until(r.json)) return;
        const quick = Date.now() - started < 1000;
        const moved = next !== null && next !== index;
        index = next;
        if (next === null || (quick && !moved)) await ctx.delay(2000);
      } catch (e) {
        if (!ctx.alive) return;
        failures++;
        await ctx.delay(Math.min(10000, 1000 * failures));
      }
    }
  }

  /* Live updates for a page: the watch stream from `since`, or blocking
   * reads where the node has none. */
  function follow(ctx, filter, since, on, fallback) {
    ctx.spawn((async () => {
      const watched = await watch(ctx, filter, on, since);
      if (!watched && ctx.alive) await fallback();
    })());
  }

  // ------------------------------------------------------------ router

  const PAGES = [
    [/^\/?$/, pageRuns],
    [/^\/runs$/, pageRuns],
    [/^\/runs\/([^/]+)$/, pageRun],
    [/^\/flows$/, pageFlows],
    [/^\/flows\/([^/]+)$/, pageFlow],
    [/^\/events$/, pageEvents],
    [/^\/cluster$/, pageCluster],
  ];

  const NAV = [['runs', 'Runs'], ['flows', 'Flows'], ['events', 'Events'], ['cluster', 'Cluster']];

  let current = null;

  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    const at = raw.indexOf('?');
    const path = at < 0 ? raw : raw.slice(0, at);
    const params = new URLSearchParams(at < 0 ? '' : raw.slice(at + 1));
    return { path, params };
  }

  function renderNav(path) {
    const section = (path.split('/')[1] || 'runs');
    replace(document.getElementById('nav'), NAV.map(([key, label]) =>
      el('a', {
        href: `#/${key}`, testid: `nav-${key}`,
        class: section === key ? 'active' : null, 'aria-current': section === key ? 'page' : null,
      }, label)));
  }

  function renderSession() {
    const box = document.getElementById('session');
    if (session.token === null) {
      replace(box);
      return;
    }
    const node = session.node;
    replace(box,
      el('span', { id: 'live', class: 'live', testid: 'live-status', 'aria-live': 'polite' }),
      node ? el('span', { class: 'node', testid: 'node-info' }, `node ${node.node_id} · ${node.role}`) : null,
      el('span', { class: `role role-${session.role}`, testid: 'role' }, session.role),
      el('button', { type: 'button', class: 'link', testid: 'sign-out', onclick: () => signOut('Signed out.') }, 'Sign out'));
    setLive(live.state);
  }

  function route() {
    if (session.token === null) return;
    if (current) current.close();
    const ctx = new PageContext();
    current = ctx;
    live.state = 'idle';
    setLive('idle');
    const { path, params } = parseHash();
    renderNav(path);
    const main = document.getElementById('main');
    const match = PAGES.map(([rx, page]) => [rx.exec(path), page]).find(([m]) => m);
    if (!match) {
      replace(main, el('section', { class: 'card' }, el('h1', {}, 'Not found'),
        el('p', {}, 'No page at ', el('code', {}, location.hash), '. ', el('a', { href: '#/runs' }, 'Runs'))));
      return;
    }
    const [m, page] = match;
    const args = m.slice(1).map((s) => decodeURIComponent(s));
    const root = el('div', { class: 'page', 'data-loaded': 'false', 'data-route': location.hash });
    replace(main, root, el('p', { class: 'muted loading' }, 'Loading…'));
    page(ctx, root, params, ...args).then(() => {
      if (!ctx.alive) return;
      main.querySelector('.loading')?.remove();
      root.dataset.loaded = 'true';
    }).catch((e) => {
      if (!ctx.alive) return;
      main.querySelector('.loading')?.remove();
      root.dataset.loaded = 'error';
      append(root, el('section', { class: 'card error', role: 'alert', testid: 'page-error' },
        el('h2', {}, 'Could not load this page'), el('p', {}, errorText(e))));
    });
  }

  // ----------------------------------------------------------- sign-in

  function showLogin(message) {
    replace(document.getElementById('nav'));
    renderSession();
    const input = el('input', {
      id: 'token', type: 'password', autocomplete: 'current-password', testid: 'token-input',
      'aria-describedby': 'token-help',
    });
    const status = el('p', { class: 'error-text', role: 'alert', testid: 'login-error' }, message || '');
    const form = el('form', { class: 'card login', testid: 'login-form' },
      el('h1', {}, 'Sign in to flowd'),
      el('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'flowd', hidden: true, 'aria-hidden': 'true', tabindex: -1 }),
      el('label', { for: 'token' }, 'API token'),
      input,
      el('p', { id: 'token-help', class: 'muted' },
        'An admin or reader token from the node\'s [auth] section. It is kept in this tab\'s ' +
        'session storage until you sign out or close the tab. Leave it empty for a node with no tokens.'),
      el('button', { type: 'submit', class: 'primary', testid: 'token-submit' }, 'Sign in'),
      status);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      status.textContent = 'Checking…';
      try {
        await signIn(input.value.trim());
      } catch (e) {
        session.token = null;
        status.textContent = e instanceof ApiError && e.status === 401
          ? 'The node refused this token.' : `Could not reach the node: ${errorText(e)}`;
      }
    });
    replace(document.getElementById('main'), form);
    input.focus();
  }

  async function signIn(token) {
    session.token = token;
    const res = await fetch('/v1/cluster', { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null), res.headers);
    session.node = await res.json();
    session.role = await probeRole();
    sessionStorage.setItem(TOKEN_KEY, token);
    renderSession();
    route();
  }

  // -------------------------------------------------------------- runs

  function triggerSummary(t) {
    if (!t) return '—';
    switch (t.type) {
      case 'schedule':
      case 'backfill':
        return `${t.type} #${t.schedule} · ${fmtTime(t.nominal_time)}`;
      case 'event':
        return `event ${(t.events || []).join(', ')}`;
      case 'on_finish':
        return `after ${t.upstream_flow} ${t.upstream_status || ''}`.trim();
      default:
        return t.type;
    }
  }

  function runRow(run) {
    return el('tr', { testid: 'run-row', 'data-run-id': run.id, 'data-status': run.status, 'data-sig': runSignature(run) },
      el('td', {}, runLink(run.id)),
      el('td', {}, flowLink(run.flow, run.project, run.branch), el('span', { class: 'muted' }, ` v${run.version}`)),
      el('td', {}, badge(run.status, 'run-status')),
      el('td', { class: 'trigger' }, triggerSummary(run.trigger)),
      el('td', {}, timeEl(run.created_at, true)),
      el('td', { class: 'num' }, fmtDuration(runDuration(run))),
      el('td', { class: 'reason muted', title: run.reason || '' }, run.reason || ''));
  }

  /* What a run's row shows, but for the times that move by themselves. */
  function runSignature(run) {
    return JSON.stringify([run.status, run.reason, run.started_at, run.finished_at, run.version]);
  }

  /* Rows for `runs` in `tbody`, reusing the row of a run whose signature is
   * unchanged, so that a live update does not rebuild the table (and a
   * focused link keeps its focus). */
  function syncRunRows(tbody, runs) {
    const old = new Map([...tbody.querySelectorAll('tr[data-run-id]')].map((tr) => [tr.dataset.runId, tr]));
    const rows = runs.map((run) => {
      const tr = old.get(run.id);
      if (!tr || tr.dataset.sig !== runSignature(run)) return runRow(run);
      tr.cells[4].replaceChildren(timeEl(run.created_at, true));
      tr.cells[5].textContent = fmtDuration(runDuration(run));
      return tr;
    });
    const same = rows.length === tbody.children.length && rows.every((tr, i) => tbody.children[i] === tr);
    if (!same) tbody.replaceChildren(...rows);
  }

  function selectField(id, label, value, options, onChange) {
    return el('div', { class: 'field' },
      el('label', { for: id }, label),
      el('select', { id, testid: id, value, onchange: (ev) => onChange(ev.target.value) },
        options.map(([v, text]) => el('option', { value: v }, text))));
  }

  async function pageRuns(ctx, root, params) {
    document.title = 'Runs · flowd';
    const filters = {
      flow: params.get('flow') || '', status: params.get('status') || '',
      trigger: params.get('trigger') || '', since: params.get('since') || '',
    };
    const setFilter = (key, value) => {
      location.hash = '#/runs' + query({ ...filters, [key]: value });
    };
    // trigger type and time range are not query parameters of GET /v1/runs:
    // they filter the pages loaded, so load bigger pages when they are set
    const pageSize = filters.trigger || filters.since ? 200 : 50;
    const listPath = '/v1/runs' + query({ flow: filters.flow, status: filters.status, limit: pageSize });

    const flows = await api('/v1/flows', { signal: ctx.signal }).then((r) => r.json.flows).catch(() => []);
    const state = { runs: new Map(), cursor: null };

    const matches = (run) => {
      if (filters.flow && run.flow !== filters.flow) return false;
      if (filters.trigger && (!run.trigger || run.trigger.type !== filters.trigger)) return false;
      if (filters.since && RANGES[filters.since] && ms(run.created_at) < Date.now() - RANGES[filters.since]) return false;
      return true;
    };
    const visible = () => [...state.runs.values()]
      .filter((r) => matches(r) && (!filters.status || r.status === filters.status))
      .sort((a, b) => (ms(b.created_at) - ms(a.created_at)) || (a.id < b.id ? 1 : -1));

    // counts by status, built once and updated in place; a click filters
    const countOf = Object.fromEntries(RUN_STATUSES.map((s) => [s, el('span', { class: 'n' }, '0')]));
    const loaded = el('span', { class: 'muted' });
    const counts = el('div', { class: 'counts', testid: 'run-counts', role: 'group', 'aria-label': 'Runs by status' },
      RUN_STATUSES.map((s) => el('button', {
        type: 'button', class: `count s-${s}${filters.status === s ? ' selected' : ''}`, testid: `count-${s}`,
        'aria-pressed': filters.status === s ? 'true' : 'false',
        title: filters.status === s ? 'Show every status' : `Show only ${s} runs`,
        onclick: () => setFilter('status', filters.status === s ? '' : s),
      }, countOf[s], ` ${s}`)),
      loaded);
    const tbody = el('tbody', { testid: 'runs-body' });
    const more = el('button', { type: 'button', testid: 'load-more', onclick: () => ctx.spawn(loadMore()) }, 'Load more');
    const footer = el('div', { class: 'table-footer' });

    function olderThanRange() {
      if (!filters.since || !RANGES[filters.since]) return false;
      const all = [...state.runs.values()];
      const oldest = Math.min(...all.map((r) => ms(r.created_at)));
      return all.length > 0 && oldest < Date.now() - RANGES[filters.since];
    }

    function render() {
      const runs = visible();
      const byStatus = Object.fromEntries(RUN_STATUSES.map((s) => [s, 0]));
      // counts ignore the status filter: they are what the status filter picks from
      for (const r of state.runs.values()) if (matches(r)) byStatus[r.status] = (byStatus[r.status] || 0) + 1;
      for (const s of RUN_STATUSES) countOf[s].textContent = String(byStatus[s]);
      loaded.textContent = ` of ${state.runs.size} loaded`;
      if (runs.length) syncRunRows(tbody, runs);
      else replace(tbody, el('tr', {}, el('td', { colspan: 7, class: 'empty', testid: 'runs-empty' }, 'No runs match.')));
      const canLoad = state.cursor && !olderThanRange();
      replace(footer, canLoad ? more : el('span', { class: 'muted' }, state.cursor ? 'Older runs are outside the time range.' : 'No older runs.'));
    }
    const renderSoon = ctx.coalesce(150, render);

    function merge(list) {
      for (const run of list) {
        const { steps, ...row } = run;
        state.runs.set(row.id, row);
      }
    }

    async function loadMore() {
      more.disabled = true;
      try {
        const r = await api(withQuery(listPath, { cursor: state.cursor }), { signal: ctx.signal });
        merge(r.json.runs);
        state.cursor = r.json.next_cursor;
        render();
      } finally {
        more.disabled = false;
      }
    }

    async function refreshFirstPage() {
      const r = await api(listPath, { signal: ctx.signal });
      merge(r.json.runs);
      if (state.runs.size === r.json.runs.length) state.cursor = r.json.next_cursor;
      renderSoon();
    }

    // Runs the watch stream names that the page does not hold: fetched one
    // by one when few, with one first-page read when many.
    const unknown = new Set();
    const fetchUnknown = ctx.coalesce(300, () => {
      const ids = [...unknown];
      unknown.clear();
      if (ids.length > 10) {
        ctx.spawn(refreshFirstPage());
        return;
      }
      for (const id of ids) {
        ctx.spawn(api(`/v1/runs/${enc(id)}`, { signal: ctx.signal }).then((r) => {
          if (matches(r.json)) {
            merge([r.json]);
            renderSoon();
          }
        }).catch((e) => {
          if (!(e instanceof ApiError)) throw e;
        }));
      }
    });

    function onEvent(type, data) {
      if (type !== 'run' || !data.run_id) return;
      const run = state.runs.get(data.run_id);
      if (!run) {
        if (!filters.flow || data.flow === filters.flow) {
          unknown.add(data.run_id);
          fetchUnknown();
        }
        return;
      }
      run.status = data.status;
      if ('reason' in data) run.reason = data.reason;
      const at = data.ts_ms ? new Date(data.ts_ms).toISOString() : new Date().toISOString();
      if (data.status === 'running' && !run.started_at) run.started_at = at;
      if (TERMINAL.has(data.status) && !run.finished_at) run.finished_at = at;
      renderSoon();
    }

    const flowNames = flows.map((f) => f.name);
    if (filters.flow && !flowNames.includes(filters.flow)) flowNames.push(filters.flow);
    append(root,
      el('div', { class: 'page-head' }, el('h1', {}, 'Runs')),
      el('form', { class: 'filters card', testid: 'run-filters', onsubmit: (ev) => ev.preventDefault() },
        selectField('filter-flow', 'Flow', filters.flow, [['', 'all flows'], ...flowNames.map((n) => [n, n])], (v) => setFilter('flow', v)),
        selectField('filter-status', 'Status', filters.status, [['', 'any status'], ...RUN_STATUSES.map((s) => [s, s])], (v) => setFilter('status', v)),
        selectField('filter-trigger', 'Trigger', filters.trigger, [['', 'any trigger'], ...TRIGGER_TYPES.map((s) => [s, s])], (v) => setFilter('trigger', v)),
        selectField('filter-since', 'Created', filters.since, [['', 'any time'], ...Object.keys(RANGES).map((k) => [k, `last ${k}`])], (v) => setFilter('since', v))),
      counts,
      el('div', { class: 'card table-card' },
        el('table', { class: 'runs', testid: 'runs-table' },
          el('thead', {}, el('tr', {}, ['Run', 'Flow', 'Status', 'Trigger', 'Created', 'Duration', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
          tbody),
        footer));

    const first = await api(listPath, { signal: ctx.signal });
    merge(first.json.runs);
    state.cursor = first.json.next_cursor;
    render();
    ctx.every(5000, render); // relative times and running durations

    follow(ctx, { flow: filters.flow }, first.headers.get('X-Flowd-Index'),
      { event: onEvent, resync: () => ctx.spawn(refreshFirstPage()) },
      () => pollBlocking(ctx, listPath, (json) => {
        merge(json.runs);
        renderSoon();
      }));
  }

  // --------------------------------------------------------------- a run

  /* Layer of each step: 0 without dependencies, else one more than its
   * deepest dependency (the spec guarantees no cycle). */
  function layers(steps) {
    const byName = new Map(steps.map((s) => [s.name, s]));
    const depth = new Map();
    const visit = (name, seen = new Set()) => {
      if (depth.has(name)) return depth.get(name);
      if (seen.has(name)) return 0;
      seen.add(name);
      const deps = (byName.get(name)?.depends_on || []).filter((d) => byName.has(d));
      const d = deps.length ? 1 + Math.max(...deps.map((x) => visit(x, seen))) : 0;
      depth.set(name, d);
      return d;
    };
    steps.forEach((s) => visit(s.name));
    const out = [];
    for (const s of steps) (out[depth.get(s.name)] ||= []).push(s);
    // order each layer by the mean position of its dependencies: fewer crossings
    for (let i = 1; i < out.length; i++) {
      const pos = new Map(out[i - 1].map((s, j) => [s.name, j]));
      const key = (s) => {
        const ps = s.depends_on.filter((d) => pos.has(d)).map((d) => pos.get(d));
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Infinity;
      };
      out[i] = out[i].map((s, j) => [key(s), j, s]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
    }
    return out;
  }

  function truncate(text, n) {
    return text.length > n ? text.slice(0, n - 1) + '…' : text;
  }

  function dagSvg(steps, selected, onSelect) {
    const W = 168;
    const H = 44;
    const GX = 64;
    const GY = 18;
    const PAD = 12;
    const cols = layers(steps);
    const rows = Math.max(1, ...cols.map((c) => c.length));
    const width = PAD * 2 + cols.length * W + Math.max(0, cols.length - 1) * GX;
    const height = PAD * 2 + rows * H + (rows - 1) * GY;
    const at = new Map();
    cols.forEach((col, i) => col.forEach((s, j) => {
      const offset = ((rows - col.length) * (H + GY)) / 2;
      at.set(s.name, { x: PAD + i * (W + GX), y: PAD + offset + j * (H + GY) });
    }));
    const edges = [];
    for (const s of steps) {
      for (const d of s.depends_on || []) {
        const a = at.get(d);
        const b = at.get(s.name);
        if (!a || !b) continue;
        const x1 = a.x + W;
        const y1 = a.y + H / 2;
        const x2 = b.x - 4;
        const y2 = b.y + H / 2;
        const mx = (x1 + x2) / 2;
        edges.push(svg('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
      }
    }
    const nodes = steps.map((s) => {
      const p = at.get(s.name);
      const tries = (s.attempts || []).length;
      const pick = () => onSelect(s.name, null);
      return svg('g', {
        class: `node s-${s.status}${selected === s.name ? ' selected' : ''}`, transform: `translate(${p.x},${p.y})`,
        tabindex: 0, role: 'button', 'aria-label': `step ${s.name}: ${s.status}; show its logs`,
        testid: 'dag-step', 'data-step': s.name, 'data-status': s.status,
        onclick: pick, onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); pick(); } },
      },
      svg('title', {}, `${s.name}: ${s.status}${tries > 1 ? ` after ${tries} attempts` : ''}`),
      svg('rect', { width: W, height: H, rx: 7 }),
      svg('text', { x: 10, y: 18, class: 'name' }, truncate(s.name, 20)),
      svg('text', { x: 10, y: 34, class: 'sub' }, s.status + (tries > 1 ? ` · ${tries} attempts` : '')));
    });
    return svg('svg', {
      class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': 'Steps and their dependencies', testid: 'dag',
    },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))),
    edges, nodes);
  }

  /* Tick spacing (ms) giving about six ticks over `span`. */
  function tickStep(span) {
    const steps = [100, 250, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3];
    return steps.find((s) => span / s <= 7) || 86400e3 * Math.ceil(span / 86400e3 / 7);
  }

  function ganttSvg(run, selected, onSelect) {
    const LABEL = 150;
    const CHART = 760;
    const ROW = 26;
    const TOP = 26;
    const now = Date.now();
    const attempts = run.steps.flatMap((s) => (s.attempts || []).map((a) => ({ step: s, a })));
    const t0 = Math.min(...[ms(run.started_at) ?? ms(run.created_at), ...attempts.map(({ a }) => ms(a.started_at))].filter((t) => t !== null));
    const ends = attempts.map(({ a }) => ms(a.finished_at) ?? now);
    const t1 = Math.max(t0 + 1000, ms(run.finished_at) ?? (TERMINAL.has(run.status) ? t0 : now), ...ends);
    const x = (t) => LABEL + ((t - t0) / (t1 - t0)) * CHART;
    const height = TOP + run.steps.length * ROW + 6;
    const width = LABEL + CHART + 20;
    const step = tickStep(t1 - t0);
    const ticks = [];
    for (let t = 0; t <= t1 - t0; t += step) {
      const tx = x(t0 + t);
      const last = tx > LABEL + CHART - 50; // keep the label inside the chart
      ticks.push(svg('line', { class: 'tick', x1: tx, x2: tx, y1: TOP - 6, y2: height }),
        svg('text', { class: 'tick-label', x: last ? tx - 3 : tx + 3, y: TOP - 10, 'text-anchor': last ? 'end' : null }, `+${fmtDuration(t)}`));
    }
    const rows = run.steps.map((s, i) => {
      const y = TOP + i * ROW;
      const bars = [];
      let prevEnd = null;
      for (const a of s.attempts || []) {
        const start = ms(a.started_at);
        if (start === null) continue;
        const end = ms(a.finished_at) ?? now;
        if (prevEnd !== null && start > prevEnd) {
          bars.push(svg('line', { class: 'retry-wait', x1: x(prevEnd), x2: x(start), y1: y + ROW / 2, y2: y + ROW / 2 },
            svg('title', {}, `retry wait ${fmtDuration(start - prevEnd)}`)));
        }
        prevEnd = end;
        const bx = x(start);
        const bw = Math.max(3, x(end) - bx);
        const label = `#${a.attempt} n${a.node}`;
        const exit = a.exit_code !== null && a.exit_code !== undefined ? `, exit ${a.exit_code}` : (a.signal ? `, signal ${a.signal}` : '');
        bars.push(svg('g', {
          class: `bar s-${a.status}`, testid: 'gantt-attempt', 'data-step': s.name, 'data-attempt': a.attempt, 'data-node': a.node,
          tabindex: 0, role: 'button', 'aria-label': `${s.name} attempt ${a.attempt} on node ${a.node}: ${a.status}`,
          onclick: () => onSelect(s.name, a.attempt),
          onkeydown: (ev) => { if (ev.key === 'Enter') onSelect(s.name, a.attempt); },
        },
        svg('title', {}, `${s.name} attempt ${a.attempt} on node ${a.node}: ${a.status}${exit}` +
          `${a.reason ? ` (${a.reason})` : ''}, ${fmtDuration(end - start)}`),
        svg('rect', { x: bx, y: y + 4, width: bw, height: ROW - 8, rx: 3 }),
        bw > 52 ? svg('text', { x: bx + 5, y: y + ROW / 2 + 4, class: 'bar-label' }, label) : null));
      }
      return svg('g', { class: `row${selected === s.name ? ' selected' : ''}` },
        svg('rect', { class: 'row-bg', x: 0, y, width, height: ROW }),
        svg('text', { x: 6, y: y + ROW / 2 + 4, class: 'row-label' }, truncate(s.name, 20)),
        bars);
    });
    return svg('svg', {
      class: 'gantt', viewBox: `0 0 ${width} ${height}`, width: '100%', role: 'group',
      'aria-label': 'Timeline of attempts', testid: 'gantt', preserveAspectRatio: 'xMinYMin meet',
    }, ticks, rows);
  }

  function triggerDetails(run) {
    const t = run.trigger || {};
    const row = (k, ...v) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, v));
    const rows = [row('Type', el('span', { testid: 'trigger-type' }, t.type || 'unknown'))];
    switch (t.type) {
      case 'manual':
        rows.push(row('Origin', 'started through the API (POST /v1/flows/{flow}/runs)'));
        break;
      case 'schedule':
      case 'backfill':
        rows.push(row('Schedule', el('a', { href: `#/flows/${enc(run.flow)}` }, `#${t.schedule}`), ' of ', run.flow));
        rows.push(row('Tick', timeEl(t.nominal_time), el('span', { class: 'muted' }, ` (${t.nominal_time})`)));
        break;
      case 'event':
        rows.push(row('Trigger', `#${t.trigger}`));
        rows.push(row('Events', (t.events || []).join(', ')));
        rows.push(row('Event ids', (t.event_ids || []).map((id, i) => [i ? ', ' : '',
          el('a', { href: `#/events${query({ id })}`, class: 'mono', testid: 'trigger-event-id' }, id)])));
        break;
      case 'on_finish':
        rows.push(row('Upstream', flowLink(t.upstream_flow), ' run ', runLink(t.upstream_run, 'upstream-run'), ' ', badge(t.upstream_status)));
        break;
      case 'resume':
        rows.push(row('Resumes', runLink(t.run_id, 'origin-run'), el('span', { class: 'muted' }, ' (its steps that succeeded are reused)')));
        break;
      default:
        rows.push(row('Trigger', el('code', {}, compactJson(t, 400))));
    }
    return el('table', { class: 'kv', testid: 'trigger' }, el('tbody', {}, rows));
  }

  function paramsTable(run) {
    const entries = Object.entries(run.parameters || {});
    const rows = entries.map(([k, v]) => el('tr', {}, el('th', { scope: 'row' }, k), el('td', {}, el('code', {}, JSON.stringify(v)))));
    if (run.idempotency_key) rows.push(el('tr', {}, el('th', { scope: 'row' }, 'idempotency key'), el('td', {}, el('code', {}, run.idempotency_key))));
    return rows.length ? el('table', { class: 'kv', testid: 'parameters' }, el('tbody', {}, rows))
      : el('p', { class: 'muted', testid: 'parameters' }, 'No parameters.');
  }

  function lastAttempt(step) {
    const a = step.attempts || [];
    return a.length ? a[a.length - 1] : null;
  }

  function stepsTable(run, onSelect) {
    return el('table', { class: 'steps', testid: 'steps-table' },
      el('thead', {}, el('tr', {}, ['Step', 'Status', 'Attempts', 'Nodes', 'Exit', 'Started', 'Duration', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, run.steps.map((s) => {
        const a = lastAttempt(s);
        const nodes = [...new Set((s.attempts || []).map((x) => x.node))].join(', ');
        const exit = !a ? '' : [a.exit_code !== null && a.exit_code !== undefined ? `exit ${a.exit_code}` : '',
          a.signal ? `signal ${a.signal}` : '', a.reason && a.reason !== 'exited' ? a.reason : ''].filter(Boolean).join(', ');
        const end = ms(s.finished_at) ?? (s.status === 'running' ? Date.now() : null);
        return el('tr', { testid: 'step-row', 'data-step': s.name, 'data-status': s.status },
          el('td', {}, s.name),
          el('td', {}, badge(s.status, 'step-status')),
          el('td', { class: 'num' }, String((s.attempts || []).length)),
          el('td', {}, s.reused_from ? ['from ', runLink(s.reused_from.run_id, 'reused-from'), ` #${s.reused_from.attempt}`] : nodes),
          el('td', {}, exit),
          el('td', {}, timeEl(s.started_at)),
          el('td', { class: 'num' }, end !== null && ms(s.started_at) !== null ? fmtDuration(end - ms(s.started_at)) : '—'),
          el('td', {}, a ? el('button', { type: 'button', class: 'small', testid: 'show-logs', onclick: () => onSelect(s.name, null) }, 'Logs') : ''));
      })));
  }

  /* The step whose logs a run page shows until the user picks one: the
   * first failed step, else a running one, else the last that ran. */
  function defaultStep(run) {
    const ran = run.steps.filter((s) => (s.attempts || []).length);
    return (ran.find((s) => s.status === 'failed') || ran.find((s) => s.status === 'running') ||
      ran.find((s) => lastAttempt(s)?.status === 'failed') || ran[ran.length - 1] || null)?.name || null;
  }

  /* The logs of one attempt: followed live (?follow=true, SSE) while it
   * runs, read (retrying 503 not_stored_yet) once it ended. */
  function logPanel(ctx, runId, onPick) {
    const title = el('h2', {}, 'Logs');
    const picker = el('div', { class: 'attempt-picker' });
    const state = el('p', { class: 'muted', testid: 'log-state' });
    const stdout = el('pre', { class: 'log', testid: 'log-stdout', tabindex: 0, 'aria-label': 'standard output' });
    const stderr = el('pre', { class: 'log stderr', testid: 'log-stderr', tabindex: 0, 'aria-label': 'standard error' });
    const root = el('section', { class: 'card logs', testid: 'logs' }, title, picker, state,
      el('h3', {}, 'stdout'), stdout, el('h3', {}, 'stderr'), stderr);
    let shown = null; // {key, status, ctrl}

    function setText(pre, text) {
      pre.textContent = text;
      pre.classList.toggle('empty', text === '');
    }

    function appendText(pre, text) {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.classList.remove('empty');
      pre.appendChild(document.createTextNode(text));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }

    async function readStored(step, attempt, signal) {
      const path = `/v1/runs/${enc(runId)}/steps/${enc(step)}/logs?attempt=${attempt}`;
      for (let tries = 0; ctx.alive && !signal.aborted; tries++) {
        try {
          const r = await api(path, { signal });
          setText(stdout, r.json.stdout || '');
          setText(stderr, r.json.stderr || '');
          state.textContent = r.json.truncated ? 'The log was truncated (limits.max_log_bytes).' : '';
          root.dataset.state = 'stored';
          return;
        } catch (e) {
          if (signal.aborted) return;
          if (e instanceof ApiError && e.status === 503) {
            state.textContent = e.code === 'not_stored_yet'
              ? 'PostgreSQL has not stored this log yet; retrying…' : `${errorText(e)}; retrying…`;
            const after = Number(e.headers.get('Retry-After')) || 1;
            await ctx.delay(Math.min(after, 5) * 1000);
          } else if (e instanceof ApiError && e.status === 404) {
            state.textContent = 'This attempt has no log.';
            root.dataset.state = 'none';
            return;
          } else {
            throw e;
          }
        }
      }
    }

    /* Follows the running attempt (docs/api.md, "Followed logs"): 'ended'
     * when the stream reached `end`; 'cut' when it stopped before (an
     * `error` event: the node running the step could not be reached) and
     * following again may work; 'unsupported' when the node answers no
     * stream (no such feature, 503 too_many_streams): the caller waits for
     * the attempt to end instead. */
    async function followLive(step, attempt, signal) {
      const path = `/v1/runs/${enc(runId)}/steps/${enc(step)}/logs?follow=true&attempt=${attempt}`;
      const res = await fetch(path, { headers: authHeaders({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
      if (!res.ok || !isEventStream(res)) {
        res.body?.cancel().catch(() => {});
        return 'unsupported';
      }
      // each stream starts from the attempt's first byte
      setText(stdout, '');
      setText(stderr, '');
      state.textContent = 'Following the running attempt…';
      root.dataset.state = 'following';
      let outcome = 'cut';
      await readEventStream(res, (ev) => {
        let data = null;
        try {
          data = JSON.parse(ev.data);
        } catch (e) {
          return true;
        }
        if (ev.type === 'output' && typeof data.text === 'string') {
          appendText(data.stream === 'stderr' ? stderr : stdout, data.text);
        } else if (ev.type === 'end') {
          outcome = 'ended';
          return false;
        } else if (ev.type === 'error') {
          state.textContent = `The stream broke off (${data.message || 'error'}); following again…`;
          return false;
        }
        return true;
      });
      return outcome;
    }

    async function load(step, attempt, status, signal) {
      if (status === 'running') {
        let outcome = 'cut';
        for (let tries = 0; outcome === 'cut' && tries < 30 && !signal.aborted; tries++) {
          if (tries) await ctx.delay(1000);
          try {
            outcome = await followLive(step, attempt, signal);
          } catch (e) {
            if (signal.aborted) return;
          }
        }
        if (signal.aborted) return;
        if (outcome !== 'ended') {
          state.textContent = 'The attempt is running; its output shows when it ends.';
          root.dataset.state = 'waiting';
          return; // show() is called again when the attempt's status changes
        }
      }
      await readStored(step, attempt, signal);
    }

    function renderPicker(step) {
      const attempts = step.attempts || [];
      replace(picker,
        el('label', { for: 'log-attempt' }, 'Attempt '),
        el('select', {
          id: 'log-attempt', testid: 'log-attempt', value: shown ? String(shown.attempt) : '',
          onchange: (ev) => onPick(step.name, Number(ev.target.value)),
        }, attempts.map((a) => el('option', { value: String(a.attempt) },
          `#${a.attempt} on node ${a.node}: ${a.status}${a.exit_code !== null && a.exit_code !== undefined ? ` (exit ${a.exit_code})` : ''}`))));
    }

    /* Show `attempt` (a number, or null for the last) of `step` (a run's step object). */
    function show(step, attempt) {
      if (!step || !(step.attempts || []).length) {
        if (shown) shown.ctrl.abort();
        shown = null;
        title.textContent = 'Logs';
        replace(picker);
        setText(stdout, '');
        setText(stderr, '');
        state.textContent = 'No step has started yet.';
        return;
      }
      const a = step.attempts.find((x) => x.attempt === attempt) || lastAttempt(step);
      const key = `${step.name}#${a.attempt}`;
      if (shown && shown.key === key && shown.status === a.status) return;
      const sameAttempt = shown && shown.key === key;
      if (shown) shown.ctrl.abort();
      const ctrl = new AbortController();
      ctx.signal.addEventListener('abort', () => ctrl.abort(), { once: true });
      shown = { key, status: a.status, attempt: a.attempt, ctrl };
      title.textContent = `Logs of step ${step.name}`;
      root.dataset.step = step.name;
      root.dataset.attempt = String(a.attempt);
      renderPicker(step);
      if (!sameAttempt) {
        setText(stdout, '');
        setText(stderr, '');
        state.textContent = 'Loading…';
      }
      ctx.spawn(load(step.name, a.attempt, a.status, ctrl.signal));
    }

    return { root, show };
  }

  async function pageRun(ctx, root, params, id) {
    document.title = `Run ${id} · flowd`;
    let run;
    let since = null; // the X-Flowd-Index the page's run was read at
    try {
      const r = await api(`/v1/runs/${enc(id)}`, { signal: ctx.signal });
      run = r.json;
      since = r.headers.get('X-Flowd-Index');
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      // a run just created (the start form goes straight to it) may not be
      // applied on this node yet: the leader knows it (and the stream then
      // starts now, with a re-read)
      run = await api(`/v1/runs/${enc(id)}?consistent=true`, { signal: ctx.signal }).then((r) => r.json).catch((e2) => {
        if (e2 instanceof ApiError && e2.status === 404) return null;
        throw e2;
      });
    }
    if (run === null) {
      append(root, el('section', { class: 'card', testid: 'not-found' }, el('h1', {}, 'No such run'), el('p', {}, `There is no run ${id}.`)));
      return;
    }
    let picked = null; // {step, attempt} the user chose
    const head = el('section', { class: 'card run-head' });
    const info = el('div', { class: 'grid2' });
    const dag = el('div', { class: 'scroll' });
    const gantt = el('div', { class: 'scroll' });
    const steps = el('div', { class: 'scroll' });
    const pick = (step, attempt) => {
      picked = { step, attempt };
      render();
      logs.root.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
    };
    const logs = logPanel(ctx, id, pick);

    // The header's parts that change; the cancel box is built once, so that
    // a re-render never resets a confirmation the user is answering.
    const statusSlot = el('span', {});
    const metaSlot = el('p', { class: 'meta' });
    const reasonSlot = el('div', {});
    const cancelBox = el('div', { class: 'actions' });
    const cancelButton = el('button', { type: 'button', class: 'danger', testid: 'cancel-button', onclick: askCancel }, 'Cancel run');
    replace(cancelBox, cancelButton);

    function askCancel() {
      replace(cancelBox,
        el('span', {}, 'Cancel this run? Running steps are stopped. '),
        el('button', { type: 'button', class: 'danger', testid: 'cancel-confirm', onclick: doCancel }, 'Yes, cancel'),
        el('button', { type: 'button', testid: 'cancel-abort', onclick: () => replace(cancelBox, cancelButton) }, 'No'));
    }

    async function doCancel() {
      try {
        const r = await api(`/v1/runs/${enc(id)}/cancel`, { method: 'POST', body: {}, signal: ctx.signal });
        replace(cancelBox, cancelButton);
        update(r.json.steps ? r.json : { ...run, ...r.json });
        notice(`Run ${id} cancelled.`);
      } catch (e) {
        if (!ctx.alive) return;
        notice(`Cancel failed: ${errorText(e)}`, 'error');
        replace(cancelBox, cancelButton);
      }
    }

    replace(head,
      el('div', { class: 'title-row' },
        el('h1', {}, 'Run ', el('span', { class: 'mono', testid: 'run-id' }, run.id)),
        statusSlot, cancelBox),
      metaSlot, reasonSlot);

    function renderHead() {
      replace(statusSlot, badge(run.status, 'run-status', { 'data-run-id': run.id }));
      cancelBox.hidden = !isAdmin() || TERMINAL.has(run.status);
      if (cancelBox.hidden && cancelBox.firstChild !== cancelButton) replace(cancelBox, cancelButton);
      if (!isAdmin()) cancelBox.remove();
      replace(metaSlot,
        'Flow ', flowLink(run.flow, run.project, run.branch), ` version ${run.version} · created `, timeEl(run.created_at),
        ' · started ', timeEl(run.started_at), ' · finished ', timeEl(run.finished_at),
        ' · ', el('span', { testid: 'run-duration' }, fmtDuration(runDuration(run))));
      replace(reasonSlot, run.reason ? el('p', { class: `reason-line s-${run.status}`, testid: 'run-reason' }, run.reason) : null);
    }

    function selectedStep() {
      const name = picked ? picked.step : defaultStep(run);
      return run.steps.find((s) => s.name === name) || null;
    }

    function render() {
      renderHead();
      renderLife();
      const sel = selectedStep();
      replace(dag, dagSvg(run.steps, sel?.name, pick));
      replace(gantt, ganttSvg(run, sel?.name, pick));
      replace(steps, stepsTable(run, pick));
      logs.show(sel, picked && sel && picked.step === sel.name ? picked.attempt : null);
    }

    function update(next) {
      run = next;
      render();
    }

    // Tags, where it came from and what came of it (docs/lifecycle.md).
    const lifeSlot = el('div', {});
    const resumesSlot = el('div', { testid: 'resumes' });
    const lifeActions = el('div', { class: 'actions' });

    async function lifeAction(verb, body) {
      try {
        const r = await api(`/v1/runs/${enc(id)}/${verb}`, { method: 'POST', body, signal: ctx.signal });
        if (verb === 'resume') {
          notice(`Run ${r.json.id} resumes ${id}.`);
          location.hash = `#/runs/${enc(r.json.id)}`;
        } else {
          notice(`Run ${id} redriven.`);
          update(r.json);
          // The page stopped following the run when it ended: again now,
          // until this drive ends. This node may not have applied the
          // redrive yet (the leader answered): older reads are not shown.
          const want = r.json.redrive_count || 0;
          const current = (x) => (x.redrive_count || 0) >= want;
          pollBlocking(ctx, `/v1/runs/${enc(id)}`, (x) => { if (current(x)) update(x); },
            (x) => current(x) && TERMINAL.has(x.status));
        }
      } catch (e) {
        if (ctx.alive) notice(`${verb} failed: ${errorText(e)}`, 'error');
      }
    }

    function renderLife() {
      const chips = (tags, cls, testid) => (tags || []).map((t) => el('span', { class: `tag ${cls}`, testid }, t));
      const rows = [
        el('tr', {}, el('th', { scope: 'row' }, 'Tags'), el('td', {}, (run.tags || []).length ? chips(run.tags, '', 'user-tag') : el('span', { class: 'muted' }, 'none'))),
        el('tr', {}, el('th', { scope: 'row' }, 'System'), el('td', {}, chips(run.system_tags, 'muted', 'system-tag'))),
      ];
      if (run.origin_run_id) rows.push(el('tr', {}, el('th', { scope: 'row' }, 'Resumes'), el('td', {}, runLink(run.origin_run_id, 'origin-link'))));
      if (run.redrive_count) rows.push(el('tr', {}, el('th', { scope: 'row' }, 'Redriven'), el('td', { testid: 'redrive-count' }, `${run.redrive_count} time${run.redrive_count === 1 ? '' : 's'}`)));
      replace(lifeSlot, el('table', { class: 'kv', testid: 'lifecycle' }, el('tbody', {}, rows)));
      const canRestart = isAdmin() && (run.status === 'failed' || run.status === 'cancelled');
      replace(lifeActions, canRestart ? [
        el('button', { type: 'button', testid: 'resume-button', onclick: () => lifeAction('resume', {}) }, 'Resume (reuse what succeeded)'),
        el('button', { type: 'button', testid: 'redrive-button', onclick: () => lifeAction('redrive', {}) }, 'Redrive in place'),
      ] : null);
    }

    // The runs that resume this one: its system tag origin:<id>.
    const loadResumes = () => ctx.spawn(api(`/v1/runs${query({ tag: `origin:${id}`, limit: 20 })}`, { signal: ctx.signal }).then((r) => {
      const runs = r.json.runs || [];
      replace(resumesSlot, runs.length ? ['Resumed by ', runs.map((x, i) => [i ? ', ' : '', runLink(x.id, 'resume-link'), ' ', badge(x.status)])] : null);
    }).catch(() => {}));

    replace(info,
      el('section', { class: 'card' }, el('h2', {}, 'Parameters'), paramsTable(run)),
      el('section', { class: 'card' }, el('h2', {}, 'Trigger'), triggerDetails(run)),
      el('section', { class: 'card' }, el('h2', {}, 'Life cycle'), lifeSlot, resumesSlot, lifeActions));
    append(root, head, info,
      el('section', { class: 'card' }, el('h2', {}, 'Steps'), dag),
      el('section', { class: 'card' }, el('h2', {}, 'Timeline'),
        el('p', { class: 'muted legend' }, 'One bar per attempt, labelled with its number and the node it ran on; a dashed line is a retry wait.'),
        gantt),
      el('section', { class: 'card' }, steps),
      logs.root);
    render();
    loadResumes();

    const refetch = ctx.coalesce(200, () => ctx.spawn(api(`/v1/runs/${enc(id)}`, { signal: ctx.signal }).then((r) => update(r.json)).catch((e) => {
      if (!(e instanceof ApiError && e.status === 404)) throw e; // not applied here yet: the next event brings it
    })));
    ctx.every(1000, () => {
      // a running run's bars and durations grow
      if (TERMINAL.has(run.status)) return;
      renderHead();
      replace(gantt, ganttSvg(run, selectedStep()?.name, pick));
    });
    if (TERMINAL.has(run.status)) return;
    follow(ctx, { run: id }, since, {
      event: (type, data) => { if (data.run_id === id) refetch(); },
      resync: refetch,
    }, () => pollBlocking(ctx, `/v1/runs/${enc(id)}`, update, (r) => TERMINAL.has(r.status)));
  }

  // ------------------------------------------------------------- flows

  async function pageFlows(ctx, root) {
    document.title = 'Flows · flowd';
    const { flows } = (await api('/v1/flows', { signal: ctx.signal })).json;
    append(root,
      el('div', { class: 'page-head' }, el('h1', {}, 'Flows')),
      el('div', { class: 'card table-card' },
        el('table', { testid: 'flows-table' },
          el('thead', {}, el('tr', {}, ['Flow', 'Version', 'Description', 'Updated', ''].map((h) => el('th', { scope: 'col' }, h)))),
          el('tbody', {}, flows.length ? flows.map((f) => el('tr', { testid: 'flow-row', 'data-flow': f.name },
            el('td', {}, flowLink(f.name, f.project, f.branch)),
            el('td', { class: 'num' }, `v${f.version}`),
            el('td', {}, f.description || el('span', { class: 'muted' }, '—')),
            el('td', {}, timeEl(f.updated_at, true)),
            el('td', {}, el('a', { href: `#/runs${query({ flow: f.name })}` }, 'runs'))))
            : el('tr', {}, el('td', { colspan: 5, class: 'empty' }, 'No flows are deployed. Deploy one with PUT /v1/flows/{flow}.'))))));
  }

  // A line diff (longest common subsequence) of two texts: [{op, text}]
  // with op ' ', '-' or '+'. Common head and tail are trimmed first; a
  // middle too big for the table is shown as removed then added.
  function lineDiff(aText, bText) {
    const a = aText.split('\n');
    const b = bText.split('\n');
    let start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    let endA = a.length;
    let endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
      endA--;
      endB--;
    }
    const same = (text) => ({ op: ' ', text });
    return [...a.slice(0, start).map(same), ...lcsDiff(a.slice(start, endA), b.slice(start, endB)), ...a.slice(endA).map(same)];
  }

  function lcsDiff(a, b) {
    const n = a.length;
    const m = b.length;
    const del = (text) => ({ op: '-', text });
    const add = (text) => ({ op: '+', text });
    if (n * m > 4e6) return [...a.map(del), ...b.map(add)];
    const w = m + 1;
    const L = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[i * w + j] = a[i] === b[j] ? L[(i + 1) * w + j + 1] + 1 : Math.max(L[(i + 1) * w + j], L[i * w + j + 1]);
      }
    }
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) {
        out.push({ op: ' ', text: a[i] });
        i++;
        j++;
      } else if (L[(i + 1) * w + j] >= L[i * w + j + 1]) {
        out.push(del(a[i++]));
      } else {
        out.push(add(b[j++]));
      }
    }
    return [...out, ...a.slice(i).map(del), ...b.slice(j).map(add)];
  }

  /* The diff as lines, with unchanged stretches beyond 3 lines of context folded. */
  function diffView(lines) {
    const CONTEXT = 3;
    const changed = lines.map((l) => l.op !== ' ');
    const near = lines.map((_, i) => changed.slice(Math.max(0, i - CONTEXT), i + CONTEXT + 1).some(Boolean));
    const out = [];
    let folded = 0;
    const flush = () => {
      if (folded) out.push(el('div', { class: 'diff-fold' }, `… ${folded} unchanged line${folded > 1 ? 's' : ''}`));
      folded = 0;
    };
    lines.forEach((l, i) => {
      if (!near[i]) {
        folded++;
        return;
      }
      flush();
      const cls = l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same';
      out.push(el('div', { class: `diff-line ${cls}`, testid: `diff-${cls}` }, `${l.op} ${l.text}`));
    });
    flush();
    if (!changed.some(Boolean)) return el('p', { class: 'muted', testid: 'diff-none' }, 'The two versions have the same spec.');
    return el('div', { class: 'diff', testid: 'diff', role: 'region', 'aria-label': 'Differences' }, out);
  }

  function versionsSection(ctx, flow) {
    const box = el('section', { class: 'card', testid: 'versions' }, el('h2', {}, 'Versions'));
    ctx.spawn((async () => {
      let versions;
      try {
        versions = (await api(`${flowBase(flow.project, flow.branch, flow.name)}/versions`, { signal: ctx.signal })).json.versions;
      } catch (e) {
        append(box, el('p', { class: 'error-text' }, `Versions are unavailable: ${errorText(e)}`));
        return;
      }
      const specText = (v) => (v && v.spec ? stableJson(v.spec) : null);
      const options = versions.map((v) => [String(v.version), `v${v.version} · ${fmtTime(v.created_at)}${v.spec ? '' : ' (spec not stored yet)'}`]);
      const last = versions.length - 1;
      const pickA = el('select', { id: 'diff-a', testid: 'diff-a', value: String(versions[Math.max(0, last - 1)]?.version ?? '') },
        options.map(([v, t]) => el('option', { value: v }, t)));
      const pickB = el('select', { id: 'diff-b', testid: 'diff-b', value: String(versions[last]?.version ?? '') },
        options.map(([v, t]) => el('option', { value: v }, t)));
      const out = el('div', {});
      const redraw = () => {
        const a = versions.find((v) => String(v.version) === pickA.value);
        const b = versions.find((v) => String(v.version) === pickB.value);
        const ta = specText(a);
        const tb = specText(b);
        replace(out, ta === null || tb === null ? el('p', { class: 'muted' }, 'PostgreSQL does not hold one of these specs yet.') : diffView(lineDiff(ta, tb)));
      };
      pickA.addEventListener('change', redraw);
      pickB.addEventListener('change', redraw);
      append(box,
        el('table', { class: 'compact' }, el('tbody', {}, versions.slice().reverse().map((v) => el('tr', { testid: 'version-row' },
          el('td', {}, `v${v.version}`), el('td', {}, timeEl(v.created_at)),
          el('td', { class: 'muted' }, v.version === flow.version ? 'current' : ''))))),
        versions.length > 1
          ? el('div', { class: 'filters' },
            el('div', { class: 'field' }, el('label', { for: 'diff-a' }, 'From'), pickA),
            el('div', { class: 'field' }, el('label', { for: 'diff-b' }, 'To'), pickB))
          : el('p', { class: 'muted' }, 'Only one version: nothing to compare.'),
        out);
      if (versions.length > 1) redraw();
    })());
    return box;
  }

  function fireRow(fire) {
    return el('tr', { testid: 'fire-row' },
      el('td', {}, timeEl(fire.nominal_time)),
      el('td', {}, timeEl(fire.decided_at, true)),
      el('td', {}, badge(fire.outcome, 'fire-outcome')),
      el('td', { class: 'num' }, fire.count > 1 ? String(fire.count) : ''),
      el('td', {}, fire.run_id ? runLink(fire.run_id) : ''),
      el('td', { class: 'muted' }, fire.reason || ''));
  }

  function scheduleCard(s) {
    const counters = Object.entries(s.counters || {});
    return el('div', { class: 'schedule', testid: 'schedule', 'data-schedule': s.schedule },
      el('h3', {}, `Schedule #${s.schedule} `, el('code', {}, s.cron), el('span', { class: 'muted' }, ` ${s.timezone}`)),
      el('p', { class: 'counters' }, counters.map(([k, v]) => el('span', { class: `counter s-${k}` }, `${k} ${v}`))),
      el('div', { class: 'grid2' },
        el('div', {},
          el('h4', {}, 'Next fire times'),
          el('ol', { class: 'times', testid: 'next-fires' }, (s.next_fire_times || []).slice(0, 5).map((t) =>
            el('li', {}, timeEl(t), el('span', { class: 'muted' }, ` · ${fmtAgo(t)}`))))),
        el('div', {},
          el('h4', {}, 'Last fires'),
          (s.last_fires || []).length
            ? el('table', { class: 'compact' },
              el('thead', {}, el('tr', {}, ['Tick', 'Decided', 'Outcome', 'Count', 'Run', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
              el('tbody', {}, s.last_fires.slice().reverse().map(fireRow)))
            : el('p', { class: 'muted' }, 'No tick decided yet.'))));
  }

  function isoMinute(t) {
    return new Date(Math.floor(t / 60e3) * 60e3).toISOString().replace('.000Z', 'Z');
  }

  function backfillForm(ctx, flow, schedules) {
    const result = el('div', { testid: 'backfill-result', 'aria-live': 'polite' });
    const now = Date.now();
    const from = el('input', { id: 'backfill-from', testid: 'backfill-from', type: 'text', value: isoMinute(now - 3600e3), required: true, spellcheck: 'false' });
    const to = el('input', { id: 'backfill-to', testid: 'backfill-to', type: 'text', value: isoMinute(now), required: true, spellcheck: 'false' });
    const which = el('select', { id: 'backfill-schedule', testid: 'backfill-schedule' },
      el('option', { value: '' }, 'every schedule'),
      schedules.map((s) => el('option', { value: String(s.schedule) }, `#${s.schedule} ${s.cron}`)));
    const submit = el('button', { type: 'submit', class: 'primary', testid: 'backfill-submit' }, 'Backfill');
    const form = el('form', { class: 'form', testid: 'backfill-form' },
      el('h3', {}, 'Backfill'),
      el('p', { class: 'muted' }, 'One run per tick in [from, to] (RFC 3339). A range backfilled before returns the same runs.'),
      el('div', { class: 'filters' },
        el('div', { class: 'field' }, el('label', { for: 'backfill-from' }, 'From'), from),
        el('div', { class: 'field' }, el('label', { for: 'backfill-to' }, 'To'), to),
        el('div', { class: 'field' }, el('label', { for: 'backfill-schedule' }, 'Schedule'), which)),
      submit, result);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      const body = { from: from.value.trim(), to: to.value.trim() };
      if (which.value !== '') body.schedule = Number(which.value);
      ctx.spawn(api(`${flowBase(flow.project, flow.branch, flow.name)}/backfill`, { method: 'POST', body, signal: ctx.signal }).then((r) => {
        const runs = r.json.runs || [];
        replace(result, el('p', { class: 'ok-text' }, `${r.json.ticks} tick${r.json.ticks === 1 ? '' : 's'}, ${runs.length} run${runs.length === 1 ? '' : 's'}.`),
          runs.length ? el('ul', { class: 'runs-list' }, runs.slice(0, 50).map((x) => el('li', {}, runLink(x.run_id), ` #${x.schedule} · ${fmtTime(x.nominal_time)}`))) : null);
      }).catch((e) => {
        replace(result, el('p', { class: 'error-text', role: 'alert' }, errorText(e)));
      }).finally(() => { submit.disabled = false; }));
    });
    return form;
  }

  /* The start-a-run form, one field per declared parameter by its type
   * (core/spec.c: string, int, float, bool, json). An empty optional field
   * is left out, so the flow's default applies. */
  function startRunForm(ctx, flow) {
    // required parameters first, then by name
    const declared = Object.entries((flow.spec && flow.spec.parameters) || {})
      .sort(([a, pa], [b, pb]) => (!!pb.required - !!pa.required) || a.localeCompare(b));
    const error = el('p', { class: 'error-text', role: 'alert', testid: 'start-run-error' });
    const inputs = declared.map(([name, p]) => paramInput(name, p));
    const key = el('input', { id: 'run-idempotency-key', testid: 'run-idempotency-key', type: 'text', spellcheck: 'false' });
    const submit = el('button', { type: 'submit', class: 'primary', testid: 'start-run-submit' }, 'Start run');
    const form = el('form', { class: 'form', testid: 'start-run-form', novalidate: true },
      el('h3', {}, 'Start a run'),
      inputs.length ? inputs.map((i) => i.field) : el('p', { class: 'muted' }, 'This flow declares no parameters.'),
      el('div', { class: 'field' }, el('label', { for: 'run-idempotency-key' }, 'Idempotency key ', el('span', { class: 'muted' }, '(optional)')), key),
      submit, error);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      error.textContent = '';
      const parameters = {};
      for (const input of inputs) {
        const { value, problem } = input.read();
        if (problem) {
          error.textContent = `${input.name}: ${problem}`;
          input.focus();
          return;
        }
        if (value !== undefined) parameters[input.name] = value;
      }
      const body = { parameters };
      if (key.value.trim()) body.idempotency_key = key.value.trim();
      submit.disabled = true;
      ctx.spawn(api(`${flowBase(flow.project, flow.branch, flow.name)}/runs`, { method: 'POST', body, signal: ctx.signal }).then((r) => {
        location.hash = `#/runs/${enc(r.json.id)}`;
      }).catch((e) => {
        error.textContent = errorText(e);
      }).finally(() => { submit.disabled = false; }));
    });
    return form;
  }

  function paramInput(name, p) {
    const id = `param-${name}`;
    const hasDefault = p.default !== undefined;
    const hint = [p.type, p.required ? 'required' : 'optional', hasDefault ? `default ${JSON.stringify(p.default)}` : '']
      .filter(Boolean).join(', ');
    const common = { id, name, testid: id, 'data-type': p.type, required: !!p.required, 'aria-describedby': `${id}-hint` };
    let control;
    if (p.type === 'bool') {
      control = el('select', common,
        el('option', { value: '' }, hasDefault ? `default (${p.default})` : (p.required ? 'choose…' : 'not set')),
        el('option', { value: 'true' }, 'true'), el('option', { value: 'false' }, 'false'));
    } else if (p.type === 'json') {
      control = el('textarea', { ...common, rows: 3, spellcheck: 'false', placeholder: hasDefault ? JSON.stringify(p.default) : '{"any": "JSON"}' });
    } else {
      const type = p.type === 'int' || p.type === 'float' ? 'number' : 'text';
      control = el('input', {
        ...common, type, step: p.type === 'int' ? '1' : p.type === 'float' ? 'any' : null,
        placeholder: hasDefault ? String(p.default) : '', spellcheck: type === 'text' ? 'false' : null,
      });
    }
    const field = el('div', { class: 'field' },
      el('label', { for: id }, name, p.required ? el('span', { class: 'req', title: 'required' }, ' *') : ''),
      control,
      el('small', { id: `${id}-hint`, class: 'muted' }, p.description ? `${p.description} · ${hint}` : hint));
    return { name, field, focus: () => control.focus(), read: () => readParam(p, control.value) };
  }

  function readParam(p, raw) {
    const text = raw.trim();
    if (text === '') return p.required && p.default === undefined ? { problem: 'is required' } : { value: undefined };
    switch (p.type) {
      case 'int':
        return /^-?\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? { value: Number(text) } : { problem: 'must be an integer' };
      case 'float':
        return Number.isFinite(Number(text)) ? { value: Number(text) } : { problem: 'must be a number' };
      case 'bool':
        return { value: text === 'true' };
      case 'json':
        try {
          return { value: JSON.parse(text) };
        } catch (e) {
          return { problem: 'must be JSON' };
        }
      default:
        return { value: raw };
    }
  }

  async function pageFlow(ctx, root, params, name) {
    document.title = `${name} · flowd`;
    const base = flowBase(params.get('project'), params.get('branch'), name);
    let flow;
    try {
      flow = (await api(base, { signal: ctx.signal })).json;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        append(root, el('section', { class: 'card', testid: 'not-found' }, el('h1', {}, 'No such flow'), el('p', {}, `No flow ${name} was ever deployed.`)));
        return;
      }
      throw e;
    }
    const sched = { paused: false, schedules: [] };
    const pausedBadge = el('span', { testid: 'flow-paused' });
    const pauseBox = el('span', { class: 'actions' });
    const schedBox = el('div', { testid: 'schedules' });
    const recent = el('div', {});

    function renderPause() {
      if (pausedBadge.dataset.paused === String(sched.paused) && pauseBox.dataset.schedules === String(sched.schedules.length)) {
        return; // unchanged: keep the button (and the focus on it)
      }
      replace(pausedBadge, badge(sched.paused ? 'paused' : 'active'));
      pausedBadge.dataset.paused = String(sched.paused);
      pauseBox.dataset.schedules = String(sched.schedules.length);
      // pausing acts on schedule ticks only: no button for a flow without one
      if (!isAdmin() || !flow.deployed || (!sched.schedules.length && !sched.paused)) {
        replace(pauseBox);
        return;
      }
      const action = sched.paused ? 'unpause' : 'pause';
      replace(pauseBox, el('button', {
        type: 'button', testid: `${action}-button`,
        title: sched.paused ? 'Ticks fire again' : 'Every tick is recorded as skipped while paused',
        onclick: (ev) => {
          const button = ev.currentTarget;
          button.disabled = true;
          ctx.spawn(api(`${base}/${action}`, { method: 'POST', body: {}, signal: ctx.signal }).then((r) => {
            writes++;
            sched.paused = r.json.paused;
            renderPause();
            notice(`Flow ${name} ${r.json.paused ? 'paused' : 'unpaused'}.`);
            return loadSchedule(true);
          }).catch((e) => {
            button.disabled = false;
            notice(`${action} failed: ${errorText(e)}`, 'error');
          }));
        },
      }, sched.paused ? 'Unpause' : 'Pause'));
    }

    function renderSchedules() {
      replace(schedBox, sched.schedules.length ? sched.schedules.map(scheduleCard)
        : el('p', { class: 'muted' }, 'This flow has no schedule.'));
    }

    // A read answered by a node that has not applied a pause yet must not
    // undo what the pause's answer showed (no watch event would correct
    // it): after a write the schedule is read from the leader
    // (consistent=true), and an answer older than one already shown (a
    // lower X-Flowd-Index), or sent before the write, is dropped.
    let shownIndex = 0;
    let writes = 0;

    async function loadSchedule(consistent = false) {
      if (!flow.deployed) return;
      const before = writes;
      try {
        const r = await api(`${base}/schedule${consistent ? '?consistent=true' : ''}`, { signal: ctx.signal });
        const index = Number(r.headers.get('X-Flowd-Index')) || 0;
        if ((before !== writes && !consistent) || index < shownIndex) return;
        shownIndex = index;
        seen(r);
        Object.assign(sched, r.json);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) throw e;
      }
      renderPause();
      renderSchedules();
    }

    // the lowest X-Flowd-Index of the page's first reads: the change stream
    // starts there, so no change between those reads and it is missed
    let since = null;
    const seen = (r) => {
      const index = Number(r.headers.get('X-Flowd-Index'));
      if (index && (since === null || index < since)) since = index;
    };

    const runsQuery = { flow: name, project: flow.project, branch: flow.branch, limit: 10 };
    async function loadRecent() {
      const r = await api(`/v1/runs${query(runsQuery)}`, { signal: ctx.signal });
      seen(r);
      replace(recent, r.json.runs.length
        ? el('table', { class: 'runs compact', testid: 'recent-runs' },
          el('thead', {}, el('tr', {}, ['Run', 'Flow', 'Status', 'Trigger', 'Created', 'Duration', 'Reason'].map((h) => el('th', { scope: 'col' }, h)))),
          el('tbody', {}, r.json.runs.map(runRow)))
        : el('p', { class: 'muted' }, 'No runs yet.'));
    }

    // A/B (docs/lifecycle.md): the same flow in the project's other
    // branches, its runs paired with theirs by tick or event.
    const compareBox = el('section', { class: 'card', testid: 'compare-box', hidden: true });
    async function loadCompare() {
      const { flows } = (await api('/v1/flows', { signal: ctx.signal })).json;
      const others = flows.filter((f) => f.name === name && f.project === flow.project && f.branch !== flow.branch)
        .map((f) => f.branch);
      if (!others.length) return;
      const branches = [flow.branch, ...others].slice(0, 8);
      const r = await api(`/v1/projects/${enc(flow.project)}/flows/${enc(name)}/compare${query({ branches: branches.join(','), limit: 10 })}`, { signal: ctx.signal });
      compareBox.hidden = false;
      replace(compareBox, el('h2', {}, 'Compare branches'),
        r.json.pairs.length ? el('table', { class: 'runs compact', testid: 'compare' },
          el('thead', {}, el('tr', {}, [el('th', { scope: 'col' }, 'Tick or event'), ...branches.map((b) => el('th', { scope: 'col' }, b))])),
          el('tbody', {}, r.json.pairs.map((p) => el('tr', { testid: 'compare-row' },
            el('td', { class: 'mono' }, p.key),
            ...branches.map((b) => {
              const x = p.runs[b];
              return el('td', {}, x ? [runLink(x.run_id, 'compare-run'), ' ', badge(x.status),
                x.duration_ms !== null ? el('span', { class: 'muted' }, ` ${fmtDuration(x.duration_ms)}`) : ''] : '—');
            })))))
          : el('p', { class: 'muted' }, `No runs of ${branches.join(' and ')} started by the same tick or event yet.`));
    }

    const spec = flow.spec || {};
    append(root,
      el('section', { class: 'card' },
        el('div', { class: 'title-row' },
          el('h1', {}, el('span', { testid: 'flow-name' }, flow.name),
            isMain(flow.project, flow.branch) ? null : el('span', { class: 'tag', testid: 'flow-branch' }, `${flow.project}/${flow.branch}`)),
          el('span', { class: 'badge' }, `v${flow.version}`),
          flow.deployed ? pausedBadge : badge('undeployed', 'flow-undeployed'),
          pauseBox),
        el('p', { class: 'meta' }, flow.description || el('span', { class: 'muted' }, 'No description.'),
          ' · updated ', timeEl(flow.updated_at), ' · ',
          el('a', { href: `#/runs${query({ flow: name })}` }, 'all runs'))),
      el('section', { class: 'card' }, el('h2', {}, 'Schedules'), schedBox),
      el('section', { class: 'card' }, el('h2', {}, 'Recent runs'), recent),
      compareBox,
      isAdmin() && flow.deployed ? el('section', { class: 'card grid2 forms' },
        startRunForm(ctx, flow),
        el('div', { testid: 'backfill-box' })) : null,
      el('section', { class: 'card' }, el('h2', {}, 'Current spec'),
        el('pre', { class: 'spec', testid: 'spec', tabindex: 0 }, stableJson(spec))),
      versionsSection(ctx, flow));

    await Promise.all([loadSchedule(), loadRecent(), loadCompare()]);
    const backfillBox = root.querySelector('[data-testid="backfill-box"]');
    if (backfillBox) {
      append(backfillBox, sched.schedules.length ? backfillForm(ctx, flow, sched.schedules)
        : el('p', { class: 'muted' }, 'Backfill needs a schedule; this flow has none.'));
    }
    ctx.every(5000, renderSchedules); // relative times

    const refresh = ctx.coalesce(1000, () => ctx.spawn(Promise.all([loadSchedule(), loadRecent()])));
    // the stream names a flow by its key: project/branch/name outside default/main
    const key = isMain(flow.project, flow.branch) ? name : `${flow.project}/${flow.branch}/${name}`;
    follow(ctx, { flow: key }, since, { event: refresh, resync: refresh },
      () => pollBlocking(ctx, `/v1/runs${query(runsQuery)}`, refresh));
  }

  // ------------------------------------------------------------ events

  /* Without GET /v1/events (a node older than it): the events the triggers
   * of recent runs name, newest first. Events that triggered nothing are
   * not there. */
  async function eventsFromRuns(ctx) {
    const r = await api('/v1/runs?limit=500', { signal: ctx.signal });
    const byId = new Map();
    for (const run of r.json.runs) {
      const t = run.trigger || {};
      if (t.type !== 'event') continue;
      (t.event_ids || []).forEach((id, i) => {
        const ev = byId.get(id) || { id, name: (t.events || [])[i] || (t.events || [])[0] || '', received_at: run.created_at, payload: undefined, runs: [] };
        ev.runs.push({ flow: run.flow, run_id: run.id });
        if (ms(run.created_at) < ms(ev.received_at)) ev.received_at = run.created_at;
        byId.set(id, ev);
      });
    }
    return [...byId.values()].sort((a, b) => ms(b.received_at) - ms(a.received_at));
  }

  /* What an event did to one trigger: {flow, trigger, outcome, run_id,
   * reason} as POST /v1/events answers (or a bare run id). */
  function eventOutcome(r) {
    if (typeof r === 'string') return el('div', {}, runLink(r));
    return el('div', { class: 'outcome' },
      r.flow ? flowLink(r.flow) : null, ' ',
      r.outcome ? badge(r.outcome, 'event-outcome') : null, ' ',
      r.run_id ? runLink(r.run_id) : null,
      r.reason ? el('span', { class: 'muted' }, ` ${r.reason}`) : null);
  }

  function eventRow(ev, highlight) {
    const runs = ev.runs || [];
    return el('tr', { testid: 'event-row', 'data-event-id': ev.id, class: highlight ? 'highlight' : null },
      el('td', {}, el('code', { testid: 'event-id' }, ev.id)),
      el('td', {}, ev.name),
      el('td', {}, timeEl(ev.received_at, true)),
      el('td', {}, ev.payload === undefined ? el('span', { class: 'muted' }, '—')
        : el('details', {}, el('summary', {}, el('code', {}, compactJson(ev.payload, 60))), el('pre', {}, JSON.stringify(ev.payload, null, 2)))),
      el('td', { testid: 'event-runs' }, runs.length ? runs.map(eventOutcome) : el('span', { class: 'muted' }, 'nothing')));
  }

  async function pageEvents(ctx, root, params) {
    document.title = 'Events · flowd';
    const nameFilter = params.get('name') || '';
    const idFilter = params.get('id') || '';
    const tbody = el('tbody', { testid: 'events-body' });
    const banner = el('div', {});
    const footer = el('div', { class: 'table-footer' });
    const state = { events: [], cursor: null, fallback: false };

    const listPath = (cursor) => '/v1/events' + query({ name: nameFilter, limit: 100, cursor });

    function render() {
      let events = state.events;
      if (nameFilter) events = events.filter((e) => e.name === nameFilter);
      if (idFilter) events = events.filter((e) => e.id === idFilter);
      replace(tbody, events.length ? events.map((e) => eventRow(e, e.id === idFilter))
        : el('tr', {}, el('td', { colspan: 5, class: 'empty', testid: 'events-empty' },
          idFilter ? `Event ${idFilter} is not among the recent events.` : 'No recent events.')));
      replace(footer, state.cursor
        ? el('button', { type: 'button', testid: 'load-more', onclick: () => ctx.spawn(loadMore()) }, 'Load more')
        : el('span', { class: 'muted' }, 'No older events.'));
    }

    async function loadFirst() {
      try {
        const r = await api(listPath(null), { signal: ctx.signal });
        state.events = r.json.events;
        state.cursor = r.json.next_cursor;
      } catch (e) {
        if (!(e instanceof ApiError && [404, 405].includes(e.status))) throw e;
        state.fallback = true;
        state.events = await eventsFromRuns(ctx);
        state.cursor = null;
        replace(banner, el('p', { class: 'notice warn', testid: 'events-fallback' },
          'This node has no GET /v1/events yet: shown are the events named by the triggers of the 500 newest runs ' +
          '(events that started nothing are missing).'));
      }
      render();
    }

    async function loadMore() {
      const r = await api(listPath(state.cursor), { signal: ctx.signal });
      state.events.push(...r.json.events);
      state.cursor = r.json.next_cursor;
      render();
    }

    const nameInput = el('input', { id: 'event-name', testid: 'event-name-filter', type: 'search', value: nameFilter, placeholder: 'any name', spellcheck: 'false' });
    append(root,
      el('div', { class: 'page-head' }, el('h1', {}, 'Events')),
      el('p', { class: 'muted' }, 'Events posted to POST /v1/events. Their id is the de-duplication key: an event posted again with an id seen within ',
        el('code', {}, 'limits.event_dedupe_s'), ' is answered as a duplicate and triggers nothing new.'),
      el('form', {
        class: 'filters card', testid: 'event-filters',
        onsubmit: (ev) => { ev.preventDefault(); location.hash = '#/events' + query({ name: nameInput.value.trim() }); },
      },
      el('div', { class: 'field' }, el('label', { for: 'event-name' }, 'Event name'), nameInput),
      el('button', { type: 'submit' }, 'Filter'),
      idFilter ? el('span', { class: 'muted' }, `Showing event ${idFilter} · `, el('a', { href: '#/events' }, 'show all')) : null),
      banner,
      el('div', { class: 'card table-card' },
        el('table', { testid: 'events-table' },
          el('thead', {}, el('tr', {}, ['Id', 'Name', 'Received', 'Payload', 'Triggered runs'].map((h) => el('th', { scope: 'col' }, h)))),
          tbody),
        footer));
    await loadFirst();
    // no change stream for events: refresh the first page while nothing older is shown
    ctx.every(5000, () => {
      if (state.events.length <= 100) ctx.spawn(loadFirst());
    });
  }

  // ----------------------------------------------------------- cluster

  /* flowd_tasks_running{node="N"} and flowd_tasks_ready from GET /metrics. */
  function taskGauges(text) {
    const running = {};
    let ready = null;
    for (const line of text.split('\n')) {
      let m = /^flowd_tasks_running\{[^}]*node="([^"]*)"[^}]*\}\s+(\S+)/.exec(line);
      if (m) running[m[1]] = Number(m[2]);
      m = /^flowd_tasks_ready(?:\{\})?\s+(\S+)/.exec(line);
      if (m) ready = Number(m[1]);
    }
    return { running, ready };
  }

  function stat(label, value, testid, sub) {
    return el('div', { class: 'stat', testid },
      el('div', { class: 'stat-label' }, label),
      el('div', { class: 'stat-value' }, value),
      sub ? el('div', { class: 'stat-sub muted' }, sub) : null);
  }

  function lagText(n, unit = 'entries') {
    return n === 0 ? 'in step' : `${n} ${unit} behind`;
  }

  async function pageCluster(ctx, root) {
    document.title = 'Cluster · flowd';
    const body = el('div', {});
    append(root, el('div', { class: 'page-head' }, el('h1', {}, 'Cluster')), body);

    async function load() {
      const [c, metrics] = await Promise.all([
        api('/v1/cluster', { signal: ctx.signal }).then((r) => r.json),
        api('/metrics', { signal: ctx.signal, headers: { Accept: 'text/plain' } }).then((r) => taskGauges(r.text)).catch(() => null),
      ]);
      session.node = c;
      renderSession();
      setLive('polling');
      const sch = c.scheduler || {};
      const lag = sch.fire_lag_ms || {};
      replace(body,
        el('section', { class: 'card' },
          el('h2', {}, `Node ${c.node_id}`, el('span', { class: 'muted' }, ' (the node serving this page)')),
          el('div', { class: 'stats' },
            stat('Role', badge(c.role, 'cluster-role'), 'stat-role'),
            stat('Leader', c.leader ? `node ${c.leader.id}` : 'none', 'stat-leader', c.leader ? c.leader.api_address : 'election under way'),
            stat('Term', String(c.term), 'stat-term'),
            stat('Commit index', String(c.commit_index), 'stat-commit'),
            stat('Applied index', String(c.applied_index), 'stat-applied', lagText(c.commit_index - c.applied_index)),
            stat('PostgreSQL index', String(c.db_applied_index), 'stat-db', lagText(c.applied_index - c.db_applied_index)),
            stat('PostgreSQL backlog', `${c.db_backlog} entries`, 'stat-backlog', `${fmtDuration(c.db_backlog_ms)} behind`),
            stat('PostgreSQL writer', badge(c.db_connected ? 'connected' : 'disconnected', 'db-connected'), 'stat-db-connected'),
            stat('Tasks ready', metrics && metrics.ready !== null ? String(metrics.ready) : '—', 'stat-ready', 'waiting for a free slot'))),
        el('section', { class: 'card table-card' },
          el('h2', {}, 'Members'),
          el('table', { testid: 'members-table' },
            el('thead', {}, el('tr', {}, ['Node', 'Raft address', 'API address', 'Voting', 'Leader', 'Liveness', 'Running tasks'].map((h) => el('th', { scope: 'col' }, h)))),
            el('tbody', {}, (c.members || []).map((m) => el('tr', { testid: 'member-row', 'data-node': m.id },
              el('td', {}, `node ${m.id}`, m.id === c.node_id ? el('span', { class: 'muted' }, ' (this)') : ''),
              el('td', { class: 'mono' }, m.raft_address),
              el('td', { class: 'mono' }, el('a', { href: `http://${m.api_address}/`, title: 'Open this node\'s dashboard' }, m.api_address)),
              el('td', {}, m.role),
              el('td', {}, m.leader || (c.leader && c.leader.id === m.id) ? badge('leader', 'member-leader') : ''),
              el('td', {}, m.live === true ? badge('live', 'member-live') : m.live === false ? badge('down', 'member-live') : el('span', { class: 'muted' }, 'unknown')),
              el('td', { class: 'num', testid: 'member-tasks' }, metrics ? String(metrics.running[String(m.id)] ?? 0) : '—'))))),
          el('p', { class: 'muted' }, 'Indexes, lags and liveness are as this node sees them; open another node\'s address for its own view. ' +
            'Running tasks come from flowd_tasks_running in GET /metrics.')),
        el('section', { class: 'card' },
          el('h2', {}, 'Scheduler'),
          el('div', { class: 'stats' },
            stat('Schedules', String(sch.schedules ?? '—'), 'stat-schedules'),
            stat('Ticks fired here', String(sch.ticks_fired ?? '—'), 'stat-ticks', 'while this node led'),
            stat('Fire lag p50', lag.samples ? `${lag.p50} ms` : '—', 'stat-lag-p50'),
            stat('Fire lag p99', lag.samples ? `${lag.p99} ms` : '—', 'stat-lag-p99'),
            stat('Fire lag max', lag.samples ? `${lag.max} ms` : '—', 'stat-lag-max', lag.samples ? `${lag.samples} samples` : null))));
    }

    await load();
    ctx.every(2000, () => ctx.spawn(load()));
  }

  // -------------------------------------------------------------- boot

  async function boot() {
    window.addEventListener('hashchange', route);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved === null) {
      showLogin();
      return;
    }
    try {
      await signIn(saved);
    } catch (e) {
      session.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(e instanceof ApiError && e.status === 401 ? 'The node refused the saved token.' : `Could not reach the node: ${errorText(e)}`);
    }
  }

  boot();
})();
