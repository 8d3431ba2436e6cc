// The transport lab's page: one room, joined four ways at once.
// Plain browser JavaScript, no build step, no dependencies. Every piece of text that
// comes from the network is put into the page with textContent, never as HTML.
'use strict';

(() => {
  // Beyond any id the server will hand out: `after=NOW` asks where "now" is.
  const NOW = 9007199254740991;
  const POLL_LIMIT = 100;
  const MAX_ROWS = 300;          // rows kept per pane's list; counters keep counting
  const RETRY_MS = 1000;         // first retry delay, doubled up to RETRY_MAX_MS
  const RETRY_MAX_MS = 8000;
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  // eslint-disable-next-line no-control-regex
  const CONTROL_RE = /[\u0000-\u001f\u007f]/;

  const $ = (sel, root = document) => root.querySelector(sel);
  const clientId = 'page-' + randomId(12);

  function randomId(n) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
  }

  // Microseconds since the Unix epoch, as the protocol's client_ts.
  function nowMicros() {
    return Math.round((performance.timeOrigin + performance.now()) * 1000);
  }

  // UTF-8 length of a string, without allocating.
  function utf8Len(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) { n += 4; i++; }
      else n += 3;
    }
    return n;
  }

  function fmtBytes(n) {
    if (n == null || !Number.isFinite(n)) return '–';
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + ' MiB';
    return (n / 1024 / 1024 / 1024).toFixed(2) + ' GiB';
  }

  // Receive times come from Date.now(), good to a millisecond: no more digits than that.
  function fmtMs(ms) {
    if (ms == null || !Number.isFinite(ms)) return '–';
    if (Math.abs(ms) < 10) return ms.toFixed(1) + ' ms';
    if (Math.abs(ms) < 10000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(1) + ' s';
  }

  function fmtInt(n) {
    return Number.isFinite(n) ? n.toLocaleString('en-US') : '–';
  }

  // A sleep that ends early when the signal aborts.
  function sleep(ms, signal) {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      function done() {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      }
    });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  // ---- page state -------------------------------------------------------------------

  const ui = {
    name: $('#name'),
    room: $('#room'),
    text: $('#text'),
    via: $('#via'),
    form: $('#composer'),
    status: $('#send-status'),
    pollInterval: $('#poll-interval'),
    lpTimeout: $('#lp-timeout'),
  };

  const params = new URLSearchParams(location.search);
  let room = ROOM_RE.test(params.get('room') || '') ? params.get('room') : 'lobby';
  ui.room.value = room;
  ui.name.value = validName(params.get('name')) ? params.get('name') : storedName() || 'guest-' + randomId(4);
  $('#client-id').textContent = clientId;

  function validName(s) {
    return typeof s === 'string' && s.length >= 1 && [...s].length <= 64 && !CONTROL_RE.test(s);
  }

  function storedName() {
    try {
      const s = localStorage.getItem('lab.name');
      return validName(s) ? s : null;
    } catch {
      return null;
    }
  }

  function roomPath(suffix) {
    return '/rooms/' + encodeURIComponent(room) + '/' + suffix;
  }

  // The short poll past the end, whose `last_id` says where "now" is.
  function nowUrl() {
    return roomPath('messages') + '?after=' + NOW + '&limit=1';
  }

  // An empty or non-numeric field means the default, not 0.
  function numberSetting(input, lo, hi, fallback) {
    const raw = input.value.trim();
    const v = Number(raw);
    return raw !== '' && Number.isFinite(v) ? Math.min(hi, Math.max(lo, Math.round(v))) : fallback;
  }

  // ---- one pane per transport ----------------------------------------------------------

  class Pane {
    constructor(root) {
      this.root = root;
      this.kind = root.dataset.kind;
      this.stream = this.kind === 'sse' || this.kind === 'ws';
      root.append($('#pane-body').content.cloneNode(true));
      this.stateEl = $('[data-testid=state]', root);
      this.toggleEl = $('[data-testid=toggle]', root);
      this.listEl = $('[data-testid=list]', root);
      this.out = {};
      for (const k of ['requests', 'empty', 'bytes', 'messages', 'p50', 'p99']) {
        this.out[k] = $(`[data-testid=${k}]`, root);
      }
      if (this.stream) {
        this.out.empty.textContent = 'n/a';
        this.out.empty.parentElement.title = 'A stream has no empty answers: it sends only when there is something to say';
        this.out.requests.parentElement.title = (this.kind === 'ws'
          ? 'WebSocket upgrade requests (one per connection)'
          : 'Stream requests (one per connection)') +
          ', and after a break one short poll that asks where "now" is';
      }
      this.toggleEl.addEventListener('click', () => (this.wanted ? this.disconnect() : this.connect()));
      this.wanted = false;
      this.gen = 0;          // bumped on every (re)start; stale callbacks compare and bail
      this.abort = null;
      this.retryDelay = RETRY_MS;
      this.reset();
    }

    reset() {
      this.lastId = null;
      this.lostTouch = false;  // a stream reopened after a break checks where "now" is
      this.gapOpen = false;
      this.c = { requests: 0, empty: 0, bytes: 0, messages: 0 };
      this.lat = [];         // sorted latencies, ms
      this.listEl.replaceChildren();
      this.render();
    }

    setState(s) {
      this.state = s;
      this.stateEl.textContent = s;
      this.stateEl.dataset.state = s;
      this.root.dataset.state = s;
    }

    // User intent: connect. Resumes after the last id this pane has seen.
    connect() {
      this.wanted = true;
      this.toggleEl.textContent = 'Disconnect';
      this.toggleEl.setAttribute('aria-pressed', 'true');
      this.restart('connecting');
    }

    disconnect() {
      this.wanted = false;
      this.lostTouch = true;
      this.toggleEl.textContent = 'Connect';
      this.toggleEl.setAttribute('aria-pressed', 'false');
      this.stop();
      this.setState('closed');
      if (this.kind === 'ws') failPending('WebSocket pane disconnected: message not sent');
    }

    stop() {
      this.gen++;
      if (this.abort) this.abort.abort();
      this.abort = null;
      if (this.es) { this.es.close(); this.es = null; }
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000, 'disconnect');
      }
    }

    restart(state) {
      this.stop();
      if (!this.wanted) return;
      this.setState(state);
      if (this.lastId == null) return; // started by joinRoom() once "now" is known
      const gen = this.gen;
      this.abort = new AbortController();
      const signal = this.abort.signal;
      if (this.kind === 'poll') this.pollLoop(gen, signal, false);
      else if (this.kind === 'longpoll') this.pollLoop(gen, signal, true);
      else if (this.lostTouch) this.checkThenStream(gen, signal);
      else this.startStream(gen);
    }

    startStream(gen) {
      if (this.kind === 'sse') this.startSse(gen); else this.startWs(gen);
    }

    // A stream back after a break first asks where "now" is: a server that started
    // again and has not yet reached the pane's id has a newest id below it, and a
    // stream resumed after the pane's id would pass over the new server's messages
    // without a word (a poll's answer says as much by itself). A new server that has
    // already passed the pane's id cannot be told from the old one by its ids.
    async checkThenStream(gen, signal) {
      const body = await this.fetchJson(nowUrl(), gen, signal);
      if (body == null) return;
      this.lostTouch = false;
      if (Number.isInteger(body.last_id) && body.last_id < this.lastId) this.restarted();
      this.render();
      this.startStream(gen);
    }

    // An error on a live connection: show it and try again after a growing delay.
    scheduleRetry(gen) {
      if (gen !== this.gen || !this.wanted) return;
      this.lostTouch = true;
      this.setState('retrying');
      const delay = this.retryDelay;
      this.retryDelay = Math.min(RETRY_MAX_MS, this.retryDelay * 2);
      this.stop();
      const g = this.gen;
      setTimeout(() => { if (g === this.gen && this.wanted) this.restart('retrying'); }, delay);
    }

    opened() {
      this.retryDelay = RETRY_MS;
      if (this.state !== 'open') this.setState('open');
    }

    // Short polling and long polling share one loop; they differ in the URL and in
    // whether the loop waits between answers.
    async pollLoop(gen, signal, long) {
      let first = true;
      while (gen === this.gen) {
        let url;
        if (long) {
          // The first poll of a connection answers at once: it makes the server's queue
          // for this client and shows the pane is through. Later polls are held.
          const t = first ? 0 : numberSetting(ui.lpTimeout, 0, 60000, 25000);
          first = false;
          url = roomPath('long-poll') + '?client=' + encodeURIComponent(clientId) +
            '&after=' + this.lastId + '&timeout_ms=' + t + '&limit=' + POLL_LIMIT;
        } else {
          url = roomPath('messages') + '?after=' + this.lastId + '&limit=' + POLL_LIMIT;
        }
        const asked = this.lastId;
        const started = performance.now();
        const body = await this.fetchJson(url, gen, signal);
        if (body == null) return;
        if (!Array.isArray(body.messages)) {
          this.scheduleRetry(gen);
          return;
        }
        this.opened();
        if (Number.isInteger(body.last_id) && body.last_id < asked) {
          // The room's newest id is below what this pane has shown: the server started
          // again (its ids with it). Show the new server's messages from its first.
          this.restarted();
          continue;
        }
        const received = Date.now();
        const msgs = body.messages;
        if (msgs.length === 0) this.c.empty++;
        if (body.gap) this.gap(asked, msgs.length ? msgs[0].id : null);
        for (const m of msgs) this.deliver(m, received);
        this.render();
        let wait;
        if (msgs.length >= POLL_LIMIT) wait = 0; // more is waiting
        else if (long) {
          // Ask again at once, so the next message finds a poll waiting; only a run of
          // empty answers (a timeout of 0) is slowed down, to no more than 5 a second.
          wait = msgs.length ? 0 : Math.max(0, 200 - (performance.now() - started));
        } else wait = numberSetting(ui.pollInterval, 50, 60000, 1000);
        if (wait > 0) await sleep(wait, signal);
      }
    }

    startSse(gen) {
      const es = new EventSource(roomPath('events') + '?after=' + this.lastId);
      this.es = es;
      this.c.requests++;
      this.render();
      es.onopen = () => { if (gen === this.gen) this.opened(); };
      es.addEventListener('message', (e) => {
        if (gen !== this.gen) return;
        // The event as it came over the wire, less comments and the retry line.
        this.c.bytes += utf8Len('id: ' + e.lastEventId + '\nevent: message\ndata: ' + e.data + '\n\n');
        let m;
        try { m = JSON.parse(e.data); } catch { return this.render(); }
        this.deliver(m);
        this.render();
      });
      es.addEventListener('gap', (e) => {
        if (gen !== this.gen) return;
        this.c.bytes += utf8Len('event: gap\ndata: ' + e.data + '\n\n');
        let g = {};
        try { g = JSON.parse(e.data); } catch { /* a gap without details is still a gap */ }
        this.gap(g.after, g.next_id);
        this.render();
      });
      // EventSource would reconnect by itself every `retry` (1 s) for as long as the
      // server is away; the pane reconnects instead, with after= the last id it has
      // shown, backing off as the other panes do.
      es.onerror = () => {
        if (gen !== this.gen) return;
        this.scheduleRetry(gen);
      };
    }

    startWs(gen) {
      const user = ui.name.value;
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      let url = scheme + '//' + location.host + roomPath('ws') + '?after=' + this.lastId;
      if (validName(user)) url += '&user=' + encodeURIComponent(user);
      const ws = new WebSocket(url);
      this.ws = ws;
      this.wsUser = user;
      this.c.requests++;
      this.render();
      ws.onopen = () => {
        if (gen !== this.gen) return;
        this.opened();
        flushPending();
      };
      ws.onmessage = (e) => {
        if (gen !== this.gen) return;
        if (typeof e.data !== 'string') return;
        this.c.bytes += utf8Len(e.data);
        let m;
        try { m = JSON.parse(e.data); } catch { return this.render(); }
        if (m && m.gap === true) this.gap(m.after, m.next_id);
        else if (m && typeof m.id === 'number') this.deliver(m);
        else if (m && typeof m.error === 'string') {
          showStatus('WebSocket: ' + m.error, true);
          giveBackWsText();
        }
        this.render();
      };
      ws.onclose = (e) => {
        if (gen !== this.gen) return;
        this.ws = null;
        if (e.code === 1009) {
          // Over 16 x the server's message limit, a frame is refused by closing the
          // socket, without an error frame: the text comes back to the composer.
          showStatus('WebSocket: the server closed the socket on a message that large', true);
          giveBackWsText();
        }
        this.scheduleRetry(gen);
      };
    }

    // A new message from this pane's transport, received at `at` (ms since the epoch).
    // Anything at or below the last id shown is a duplicate and is dropped.
    deliver(m, at = Date.now()) {
      if (!m || typeof m.id !== 'number') return;
      if (this.lastId != null && m.id <= this.lastId) return;
      if (this.lastId != null && m.id > this.lastId + 1 && !this.gapOpen) {
        this.marker('missing', `ids ${this.lastId + 1}–${m.id - 1} not received`);
      }
      this.gapOpen = false;
      this.lastId = m.id;
      this.c.messages++;
      let latency = null;
      if (typeof m.client_ts === 'number') {
        latency = (at * 1000 - m.client_ts) / 1000;
        insertSorted(this.lat, latency);
      }
      const li = el('li', 'msg');
      li.dataset.testid = 'msg';
      li.dataset.id = String(m.id);
      li.append(
        el('span', 'id', '#' + m.id),
        el('span', 'user', String(m.user ?? '')),
        el('span', 'text', String(m.text ?? '')),
        el('span', 'lat', latency == null ? '' : fmtMs(latency)),
      );
      this.append(li);
    }

    // The server's ids went back: it restarted, or the room was made anew. The pane
    // says so and goes on from the new server's first message.
    restarted() {
      this.marker('restart', 'the server started again: its ids begin anew here');
      this.lastId = 0;
      this.gapOpen = false;
    }

    // One request of this pane's, counted, its answer's JSON; or null, the retry
    // scheduled, when it failed (or the pane was restarted meanwhile).
    async fetchJson(url, gen, signal) {
      try {
        this.c.requests++;
        this.render();
        const res = await fetch(url, { signal, cache: 'no-store' });
        const text = await res.text();
        if (gen !== this.gen) return null;
        this.c.bytes += utf8Len(text);
        if (!res.ok) throw new Error('HTTP ' + res.status);
        const body = JSON.parse(text);
        if (body === null || typeof body !== 'object') throw new Error('unexpected answer');
        return body;
      } catch {
        if (gen === this.gen) {
          this.render();
          this.scheduleRetry(gen);
        }
        return null;
      }
    }

    // The server says messages between `after` and `next` are no longer held.
    gap(after, next) {
      let what = 'gap: some messages are no longer held by the server';
      if (Number.isFinite(after) && Number.isFinite(next) && next > after + 1) {
        what = `gap: messages ${after + 1}–${next - 1} are no longer held by the server`;
      }
      this.marker('gap', what);
      this.gapOpen = true;
    }

    marker(kind, text) {
      const li = el('li', 'marker ' + kind, text);
      li.dataset.testid = kind;
      this.append(li);
    }

    // Whether the list was scrolled to its end is read once a frame, before the frame's
    // first row: read after every row, it made the browser lay the list out again per
    // message, which froze the page for seconds in a burst.
    append(li) {
      const list = this.listEl;
      if (this.follow == null) {
        this.follow = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
        requestAnimationFrame(() => {
          if (this.follow) list.scrollTop = list.scrollHeight;
          this.follow = null;
        });
      }
      list.append(li);
      while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
    }

    render() {
      if (this.renderQueued) return;
      this.renderQueued = true;
      requestAnimationFrame(() => {
        this.renderQueued = false;
        const o = this.out;
        o.requests.textContent = fmtInt(this.c.requests);
        if (!this.stream) o.empty.textContent = fmtInt(this.c.empty);
        o.bytes.textContent = fmtBytes(this.c.bytes);
        o.messages.textContent = fmtInt(this.c.messages);
        o.p50.textContent = fmtMs(percentile(this.lat, 0.5));
        o.p99.textContent = fmtMs(percentile(this.lat, 0.99));
      });
    }
  }

  function insertSorted(a, v) {
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (a[mid] <= v) lo = mid + 1; else hi = mid;
    }
    a.splice(lo, 0, v);
  }

  // Nearest-rank percentile of a sorted array.
  function percentile(sorted, q) {
    if (sorted.length === 0) return null;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  }

  const panes = Array.from(document.querySelectorAll('.pane'), (root) => new Pane(root));
  const wsPane = panes.find((p) => p.kind === 'ws');

  // ---- joining a room -------------------------------------------------------------------

  // Every pane starts from the same "now": the room's newest id, learned with one short
  // poll past the end. So all four show the same messages from the same point on.
  let joinGen = 0;
  async function joinRoom() {
    const gen = ++joinGen;
    for (const p of panes) {
      p.stop();
      p.reset();
      p.setState(p.wanted ? 'connecting' : 'closed');
    }
    let delay = RETRY_MS;
    for (;;) {
      try {
        const res = await fetch(nowUrl(), { cache: 'no-store' });
        const body = await res.json();
        if (!res.ok || !Number.isInteger(body.last_id)) throw new Error('HTTP ' + res.status);
        if (gen !== joinGen) return;
        for (const p of panes) {
          p.lastId = body.last_id;
          if (p.wanted) p.restart('connecting');
        }
        return;
      } catch {
        if (gen !== joinGen) return;
        for (const p of panes) if (p.wanted) p.setState('retrying');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(RETRY_MAX_MS, delay * 2);
        if (gen !== joinGen) return;
      }
    }
  }

  // ---- sending ------------------------------------------------------------------------

  let pending = [];   // texts waiting for the WebSocket pane's socket to open
  // The last text put on the socket: given back when the server refuses one (its error
  // frame does not say which, and the last is the likeliest).
  let lastWsText = null;
  // The text being sent (a POST not yet answered, or queued for the socket): the same
  // text again is not sent twice by a second Enter.
  let sending = null;

  function showStatus(text, isError) {
    ui.status.textContent = text;
    ui.status.classList.toggle('error', !!isError);
  }

  function failPending(why) {
    if (pending.length) showStatus(why, true);
    pending = [];
    sending = null;
  }

  function flushPending() {
    const ws = wsPane.ws;
    while (pending.length && ws && ws.readyState === WebSocket.OPEN && wsPane.wsUser === ui.name.value) {
      const text = pending.shift();
      ws.send(JSON.stringify({ text, client_ts: nowMicros() }));
      sent(text);
      lastWsText = text;
      showStatus('Sent over the WebSocket');
    }
  }

  // The text the server refused over the socket comes back to the composer, if that
  // is empty.
  function giveBackWsText() {
    if (ui.text.value === '' && lastWsText != null) ui.text.value = lastWsText;
  }

  // A text leaves the composer once it is sent, not before: one that fails stays there
  // to be sent again. What was typed since is left alone.
  function sent(text) {
    if (sending === text) sending = null;
    if (ui.text.value === text) ui.text.value = '';
  }

  async function sendPost(user, text) {
    const started = performance.now();
    try {
      const res = await fetch(roomPath('messages'), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user, text, client_ts: nowMicros() }),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error || 'HTTP ' + res.status);
      sent(text);
      showStatus(`Sent #${body.id} with POST in ${fmtMs(performance.now() - started)}`);
    } catch (e) {
      if (sending === text) sending = null;
      showStatus('Not sent: ' + e.message, true);
    }
  }

  function sendWs(user, text) {
    if (!wsPane.wanted) {
      sending = null;
      showStatus('Connect the WebSocket pane to send over it', true);
      return;
    }
    pending.push(text);
    if (wsPane.wsUser !== user) {
      // The socket sends as the user it was opened with: reopen it under the new
      // name. It resumes after the last id it showed, so nothing is lost.
      wsPane.restart('connecting');
    } else {
      flushPending();
      if (pending.length) showStatus('Waiting for the WebSocket to open…');
    }
  }

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const user = ui.name.value;
    const text = ui.text.value;
    if (!validName(user)) {
      showStatus('Name: 1 to 64 characters, no control characters', true);
      ui.name.focus();
      return;
    }
    // The length limit is the server's (--max-message-bytes): it says so when a text
    // is over it, and the text stays here.
    if (text.length === 0 || text === sending) return;
    sending = text;
    if (ui.via.value === 'ws') sendWs(user, text); else sendPost(user, text);
    ui.text.focus();
  });

  // A new interval or timeout takes effect now, not after the sleep or held poll that
  // was started with the old one.
  for (const [input, kind] of [[ui.pollInterval, 'poll'], [ui.lpTimeout, 'longpoll']]) {
    input.addEventListener('change', () => {
      const pane = panes.find((p) => p.kind === kind);
      if (pane.wanted && pane.state === 'open') pane.restart('open');
    });
  }

  ui.name.addEventListener('change', () => {
    if (!validName(ui.name.value)) return;
    try { localStorage.setItem('lab.name', ui.name.value); } catch { /* private mode */ }
    if (wsPane.wanted) wsPane.restart('connecting');
  });

  ui.room.addEventListener('change', () => {
    const r = ui.room.value.trim();
    if (!ROOM_RE.test(r)) {
      showStatus('Room: 1 to 64 of A–Z, a–z, 0–9, _ and -', true);
      ui.room.value = room;
      return;
    }
    if (r === room) return;
    room = r;
    const q = new URLSearchParams(location.search);
    q.set('room', room);
    history.replaceState(null, '', '?' + q.toString());
    failPending('Room changed: message not sent');
    showStatus('Joined room ' + room);
    joinRoom();
  });

  // ---- measured results ---------------------------------------------------------------

  // A summary with nothing in it (`count` 0: no delivery measured) shows as '–', not 0.00.
  const measured = (s) => (s && s.count !== 0 ? s : undefined);

  const COLUMNS = [
    ['Mode', (r) => (typeof r.part_of === 'string' ? `${r.mode} (in ${r.part_of})` : r.mode), 'text'],
    ['Users', (r) => r.users, 'int'],
    ['p50', (r) => measured(r.latency_us)?.p50, 'us', 'Latency (ms)'],
    ['p90', (r) => measured(r.latency_us)?.p90, 'us'],
    ['p99', (r) => measured(r.latency_us)?.p99, 'us'],
    ['p99.9', (r) => measured(r.latency_us)?.p999, 'us'],
    ['max', (r) => measured(r.latency_us)?.max, 'us'],
    ['mean', (r) => measured(r.latency_us)?.mean, 'us'],
    ['received / due', (r) => r.deliveries, 'recv', 'Deliveries'],
    ['lost', (r) => r.deliveries?.lost, 'bad'],
    ['dup', (r) => r.deliveries?.duplicated, 'bad'],
    ['reordered', (r) => r.deliveries?.out_of_order, 'bad'],
    ['total', (r) => r.requests?.total, 'int', 'HTTP requests'],
    ['empty', (r) => r.requests?.empty, 'int'],
    ['received', (r) => r.bytes_received, 'bytes', 'Bytes'],
    ['server sent', (r) => r.server?.bytes_sent, 'bytes'],
    ['p99', (r) => measured(r.send_lag_us)?.p99, 'us', 'Send lag (ms)'],
    ['max', (r) => measured(r.send_lag_us)?.max, 'us'],
    ['server CPU s', (r) => r.server?.cpu_seconds, 'sec', 'Cost'],
    ['server RSS', (r) => r.server?.rss_bytes, 'bytes'],
    ['loadgen CPU s', (r) => r.loadgen?.cpu_seconds, 'sec'],
  ];

  function cell(kind, v) {
    const td = el('td');
    switch (kind) {
      case 'text': td.textContent = v == null ? '–' : String(v); break;
      case 'int': td.textContent = typeof v === 'number' ? fmtInt(v) : '–'; break;
      case 'us': td.textContent = typeof v === 'number' ? (v / 1000).toFixed(v < 10000 ? 2 : 1) : '–'; break;
      case 'sec': td.textContent = typeof v === 'number' ? v.toFixed(2) : '–'; break;
      case 'bytes': td.textContent = typeof v === 'number' ? fmtBytes(v) : '–'; break;
      case 'bad':
        td.textContent = typeof v === 'number' ? fmtInt(v) : '–';
        if (typeof v === 'number' && v > 0) td.className = 'bad';
        break;
      case 'recv':
        if (v && typeof v.received === 'number' && typeof v.expected === 'number') {
          td.textContent = fmtInt(v.received) + ' / ' + fmtInt(v.expected);
          if (v.received < v.expected) td.className = 'bad';
        } else td.textContent = '–';
        break;
      default: td.textContent = v == null ? '–' : String(v);
    }
    return td;
  }

  function renderResults(data) {
    const meta = $('#results-meta');
    const body = $('#results-body');
    body.replaceChildren();
    meta.replaceChildren();
    const runs = data && Array.isArray(data.runs) ? data.runs : [];
    if (runs.length === 0) return noResults();
    for (const text of runFacts(data)) meta.append(el('span', 'fact', text));
    const table = el('table');
    table.dataset.testid = 'results-table';
    const thead = el('thead');
    const groups = el('tr');
    const heads = el('tr');
    for (let i = 0; i < COLUMNS.length; i++) {
      const [label, , , group] = COLUMNS[i];
      if (i < 2) {
        const th = el('th', i === 0 ? 'sticky' : null, label);
        th.rowSpan = 2;
        th.scope = 'col';
        groups.append(th);
        continue;
      }
      if (group) {
        let span = 1;
        while (i + span < COLUMNS.length && !COLUMNS[i + span][3]) span++;
        const th = el('th', 'group', group);
        th.colSpan = span;
        th.scope = 'colgroup';
        groups.append(th);
      }
      const th = el('th', null, label);
      th.scope = 'col';
      heads.append(th);
    }
    thead.append(groups, heads);
    const tbody = el('tbody');
    for (const r of runs) {
      const tr = el('tr');
      tr.dataset.testid = 'results-row';
      COLUMNS.forEach(([, get, kind], i) => {
        const td = cell(kind, r && typeof r === 'object' ? get(r) : null);
        if (i === 0) td.classList.add('sticky', 'mode');
        tr.append(td);
      });
      tbody.append(tr);
    }
    table.append(thead, tbody);
    body.append(table);
  }

  // A line about where and when the runs were measured, from the run file's own fields.
  function runFacts(d) {
    const out = [];
    // toISOString throws for a time beyond what a Date can hold.
    if (Number.isFinite(d.created_unix_s) && Math.abs(d.created_unix_s) < 8.64e12) {
      out.push('measured ' + new Date(d.created_unix_s * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC');
    }
    const t = d.tool;
    if (t && typeof t === 'object') {
      let s = [t.name, t.version].filter((x) => typeof x === 'string').join(' ');
      if (typeof t.git_commit === 'string') s += ' @ ' + t.git_commit.slice(0, 10);
      if (s) out.push(s);
    }
    const m = d.machine;
    if (m && typeof m === 'object') {
      const parts = [];
      if (Number.isFinite(m.cores)) parts.push(m.cores + ' cores');
      if (Number.isFinite(m.memory_bytes)) parts.push(fmtBytes(m.memory_bytes) + ' memory');
      if (typeof m.kernel === 'string') parts.push('Linux ' + m.kernel);
      if (parts.length) out.push(parts.join(', '));
    }
    if (typeof d.server_process === 'string') out.push('server: ' + d.server_process);
    const runs = d.runs;
    if (runs.every((r) => r && Number.isFinite(r.duration_s))) {
      const secs = [...new Set(runs.map((r) => r.duration_s))];
      if (secs.length === 1) out.push(secs[0] + ' s per run');
    }
    return out;
  }

  function noResults() {
    const p = el('p', 'empty-results');
    p.dataset.testid = 'no-results';
    p.append('No results yet: run ', el('code', null, 'cargo run --release --bin loadgen -- --mode all'));
    $('#results-body').replaceChildren(p);
  }

  async function loadResults() {
    const body = $('#results-body');
    try {
      const res = await fetch('/api/results/latest', { cache: 'no-store' });
      if (res.status === 404 || res.status === 204) {
        $('#results-meta').replaceChildren();
        return noResults();
      }
      if (!res.ok) {
        // The server says why in {"error": ...} (a results file over its size limit).
        let why = 'HTTP ' + res.status;
        try {
          why = (await res.json()).error || why;
        } catch (_) { /* not JSON: the status says enough */ }
        throw new Error(why);
      }
      renderResults(await res.json());
    } catch (e) {
      const p = el('p', 'error', 'Could not load results: ' + e.message);
      $('#results-meta').replaceChildren();
      body.replaceChildren(p);
    }
  }

  $('#results-refresh').addEventListener('click', loadResults);

  // ---- start ---------------------------------------------------------------------------

  for (const p of panes) {
    p.wanted = true;
    p.toggleEl.textContent = 'Disconnect';
    p.toggleEl.setAttribute('aria-pressed', 'true');
  }
  joinRoom();
  loadResults();
})();
