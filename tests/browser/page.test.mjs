// The browser page, driven in Debian's headless Chromium against a running lab.
//
//   cd tests/browser && npm ci && node --test
//
// Starts the lab itself (LAB_BIN, default target/release/lab, relative to the repository)
// on a free loopback port with a short --history and --queue-capacity, opens the page in a room of its own and
// checks what a person would: every message shows once in all four panes with the same id
// and order, text stays text, a pane that disconnects and reconnects misses and doubles
// nothing, a pane that comes back too late shows a gap, a refused text stays in the
// composer, a server that starts again is noticed, the layout holds at 375 px, the
// console stays clean. Saves results/screenshot.png (1280x900). Never downloads a browser:
// CHROMIUM (default /usr/bin/chromium) is the one Debian installs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const LAB_BIN = path.resolve(repo, process.env.LAB_BIN || 'target/release/lab');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(repo, 'results', 'screenshot.png');
const KINDS = ['poll', 'longpoll', 'sse', 'ws'];
const ROOM = 'browser-' + Date.now().toString(36);
const USER = 'tester';
// A short history, so that the gap test can outrun it; the other tests stay well inside it.
const HISTORY = 25;
// A long-poll client's queue holds this many messages; one that misses more is refilled
// from history, so the gap test reaches the long-poll pane's queue too.
const QUEUE_CAPACITY = 8;

let lab;
let labLog = '';
let base;
let browser;
let page;
const consoleErrors = [];
const dialogs = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

// Retries `check` until it stops throwing or the time is up; then rethrows its error.
async function eventually(check, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > end) throw e;
      await delay(100);
    }
  }
}

// On `port` when given (a restart), else on a free one.
async function startLab(port) {
  port = port ?? (await freePort());
  base = `http://127.0.0.1:${port}`;
  lab = spawn(LAB_BIN, ['--addr', `127.0.0.1:${port}`, '--history', String(HISTORY), '--queue-capacity', String(QUEUE_CAPACITY)], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (d) => { labLog = (labLog + d).slice(-20000); };
  lab.stdout.on('data', keep);
  lab.stderr.on('data', keep);
  const exited = new Promise((resolve) => lab.once('exit', (code, sig) => resolve(`lab exited (${code ?? sig})`)));
  const end = Date.now() + 60000;
  while (Date.now() < end) {
    const early = await Promise.race([exited, delay(100).then(() => null)]);
    if (early) throw new Error(`${early} before /healthz answered:\n${labLog}`);
    try {
      const res = await fetch(base + '/healthz');
      if (res.ok) return;
    } catch {
      // not listening yet
    }
  }
  throw new Error(`lab did not answer /healthz within 60 s:\n${labLog}`);
}

async function stopLab() {
  if (!lab || lab.exitCode !== null || lab.signalCode !== null) return;
  const gone = new Promise((r) => lab.once('exit', r));
  lab.kill('SIGTERM');
  const t = setTimeout(() => lab.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(t);
}

// [id, user, text] of every message row in a pane, top to bottom.
function rows(kind) {
  return page.$$eval(`[data-testid=pane-${kind}] [data-testid=msg]`, (els) =>
    els.map((e) => [Number(e.dataset.id), e.querySelector('.user').textContent, e.querySelector('.text').textContent]));
}

async function allRows() {
  const out = {};
  for (const k of KINDS) out[k] = await rows(k);
  return out;
}

// All four panes hold the same rows, ids rising by one, no markers, each text once.
async function assertPanesAgree(texts) {
  const all = await allRows();
  const first = all[KINDS[0]];
  for (const k of KINDS) {
    assert.deepEqual(all[k], first, `pane ${k} differs from pane ${KINDS[0]}`);
  }
  for (let i = 1; i < first.length; i++) {
    assert.equal(first[i][0], first[i - 1][0] + 1, `ids not consecutive at row ${i}: ${first[i - 1][0]} then ${first[i][0]}`);
  }
  for (const t of texts) {
    assert.equal(first.filter((r) => r[2] === t).length, 1, `"${t}" should appear exactly once`);
  }
  const markers = await page.$$eval('[data-testid=gap], [data-testid=missing]', (els) => els.map((e) => e.textContent));
  assert.deepEqual(markers, [], 'no gap or missing markers expected');
  return first;
}

async function waitForText(text, ms = 10000) {
  await eventually(async () => {
    for (const k of KINDS) {
      const r = await rows(k);
      assert.ok(r.some((x) => x[2] === text), `pane ${k} has not shown "${text}" yet`);
    }
  }, ms);
}

async function compose(text, via) {
  await page.selectOption('[data-testid=via]', via);
  await page.fill('[data-testid=text]', text);
  await page.press('[data-testid=text]', 'Enter');
}

async function postDirect(user, text, room = ROOM) {
  const res = await fetch(`${base}/rooms/${room}/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, text, client_ts: Date.now() * 1000 }),
  });
  assert.equal(res.status, 201, `POST answered ${res.status}`);
  return (await res.json()).id;
}

async function paneState(kind) {
  return page.textContent(`[data-testid=pane-${kind}] [data-testid=state]`);
}

async function waitOpen(kind) {
  await eventually(async () => assert.equal(await paneState(kind), 'open', `pane ${kind} not open`), 15000);
}

before(async () => {
  assert.ok(existsSync(LAB_BIN), `no lab binary at ${LAB_BIN}: cargo build --release --bin lab (or set LAB_BIN)`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  await startLab();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location().url });
  });
  page.on('pageerror', (e) => consoleErrors.push({ text: 'uncaught: ' + e.message, url: '' }));
  page.on('dialog', async (d) => {
    dialogs.push(d.type() + ': ' + d.message());
    await d.dismiss();
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopLab();
});

test('the page opens with all four panes connected to the room', async () => {
  const res = await page.goto(`${base}/?room=${ROOM}&name=${USER}`);
  assert.equal(res.status(), 200);
  assert.equal(await page.title(), 'The transport lab');
  for (const k of KINDS) await waitOpen(k);
  // Faster short polling keeps the test short; the setting applies from the next poll.
  await page.fill('[data-testid=poll-interval]', '200');
  assert.equal(await page.inputValue('[data-testid=room]'), ROOM);
  assert.match(await page.textContent('[data-testid=client-id]'), /^page-[a-z0-9]+$/);
});

test('messages sent by POST and over the WebSocket show once in every pane, same ids, same order', async () => {
  const sent = [];
  for (const [i, via] of ['post', 'ws', 'post', 'ws'].entries()) {
    const text = `hello ${i + 1} via ${via}`;
    await compose(text, via);
    await waitForText(text);
    sent.push(text);
  }
  const list = await assertPanesAgree(sent);
  assert.deepEqual(list.map((r) => r[2]), sent, 'messages in the order they were sent');
  assert.ok(list.every((r) => r[1] === USER), 'sent as the name in the composer');
  assert.equal(await page.inputValue('[data-testid=text]'), '', 'the composer clears after sending');
});

test('message text is shown as text, never as HTML', async () => {
  const evil = '<img src=x onerror=alert(1)>';
  await compose(evil, 'post');
  await waitForText(evil);
  await delay(300);
  for (const k of KINDS) {
    const r = await rows(k);
    assert.equal(r.filter((x) => x[2] === evil).length, 1, `pane ${k} shows the markup once, as text`);
  }
  assert.equal(await page.locator('.pane img').count(), 0, 'no <img> element was made');
  assert.deepEqual(dialogs, [], 'no dialog fired');
  await assertPanesAgree([evil]);
});

test('a pane that disconnects and reconnects while messages are sent misses nothing and doubles nothing', async () => {
  for (const kind of KINDS) {
    const toggle = `[data-testid=pane-${kind}] [data-testid=toggle]`;
    const texts = [];
    // A sender that keeps going across the disconnect and the reconnect.
    const sender = (async () => {
      for (let i = 1; i <= 8; i++) {
        const t = `${kind} churn ${i}`;
        await postDirect('bob', t);
        texts.push(t);
        await delay(60);
      }
    })();
    await delay(100);
    await page.click(toggle);
    assert.equal(await paneState(kind), 'closed');
    assert.equal(await page.textContent(toggle), 'Connect');
    await delay(250);
    await page.click(toggle);
    await sender;
    await waitOpen(kind);
    await waitForText(texts[texts.length - 1]);
    await delay(300); // a duplicate, if any, would come right behind
    await assertPanesAgree(texts);
  }
});

test('counters count requests, bytes, messages and latency', async () => {
  // Let every pane render its latest numbers.
  await delay(300);
  const counters = {};
  for (const k of KINDS) {
    const get = (id) => page.textContent(`[data-testid=pane-${k}] [data-testid=${id}]`);
    const n = async (id) => Number((await get(id)).replace(/[^0-9]/g, ''));
    counters[k] = {
      requests: await n('requests'),
      messages: await n('messages'),
      bytes: await get('bytes'),
      empty: await get('empty'),
      p50: await get('p50'),
      p99: await get('p99'),
    };
    const c = counters[k];
    assert.ok(c.requests >= 1, `${k}: requests ${c.requests}`);
    assert.equal(c.messages, (await rows(k)).length, `${k}: message counter matches the list`);
    assert.match(c.bytes, /^\d+(\.\d)? (B|KiB|MiB)$/, `${k}: bytes ${c.bytes}`);
    assert.match(c.p50, /\d ms$|\d s$/, `${k}: p50 ${c.p50}`);
    assert.match(c.p99, /\d ms$|\d s$/, `${k}: p99 ${c.p99}`);
  }
  // Short polling asks far more often than it is answered with something.
  assert.ok(counters.poll.requests > counters.sse.requests, 'short polling made more requests than SSE');
  assert.match(counters.poll.empty, /^\d/, 'short polling counts empty answers');
  assert.equal(counters.sse.empty, 'n/a');
  assert.equal(counters.ws.empty, 'n/a');
});

test('a text the server refuses stays in the composer, whole', async () => {
  const errorsBefore = consoleErrors.length;
  // Over the server's --max-message-bytes (4096): the server says so, the page does
  // not cut the text to fit.
  const long = 'x'.repeat(5000);
  const status = () => page.textContent('[data-testid=send-status]');
  await compose(long, 'post');
  await eventually(async () => assert.match(await status(), /^Not sent: .*the limit is 4096/));
  assert.equal(await page.inputValue('[data-testid=text]'), long, 'kept, whole, after a refused POST');
  await compose(long, 'ws');
  await eventually(async () => assert.match(await status(), /^WebSocket: .*the limit is 4096/));
  assert.equal(await page.inputValue('[data-testid=text]'), long, 'given back after the socket refused it');
  await page.fill('[data-testid=text]', '');
  // Enter pressed again while the text is on its way (a slow answer) sends it once.
  await page.route('**/rooms/*/messages', async (r) => {
    if (r.request().method() === 'POST') await delay(400);
    await r.continue();
  });
  await compose('sent once', 'post');
  await page.press('[data-testid=text]', 'Enter');
  await waitForText('sent once');
  await delay(600);
  await page.unroute('**/rooms/*/messages');
  for (const k of KINDS) {
    assert.equal((await rows(k)).filter((r) => r[2] === 'sent once').length, 1, `pane ${k}`);
  }
  // The browser logs the refused POST's 413 itself; nothing else was logged.
  const logged = consoleErrors.splice(errorsBefore);
  assert.ok(logged.every((e) => /413/.test(e.text)), JSON.stringify(logged));
});

test('an emptied poll interval means the default, and a new one applies at once', async () => {
  const requests = async () =>
    Number((await page.textContent('[data-testid=pane-poll] [data-testid=requests]')).replace(/[^0-9]/g, ''));
  const rate = async () => {
    const before = await requests();
    await delay(1500);
    return (await requests()) - before;
  };
  await page.fill('[data-testid=poll-interval]', '');
  await page.dispatchEvent('[data-testid=poll-interval]', 'change');
  assert.ok((await rate()) <= 3, 'an empty field polls at the default 1 s, not at the 50 ms floor');
  // A minute's interval, and the pane asleep in it after one poll...
  await page.fill('[data-testid=poll-interval]', '60000');
  await page.dispatchEvent('[data-testid=poll-interval]', 'change');
  await delay(500);
  // ...is not waited out: 200 ms applies now.
  await page.fill('[data-testid=poll-interval]', '200');
  await page.dispatchEvent('[data-testid=poll-interval]', 'change');
  assert.ok((await rate()) >= 5, '200 ms applies without waiting out the old interval');
});

test('screenshot: four panes with the same messages and their counters', async () => {
  await page.setViewportSize({ width: 1280, height: 900 });
  const last = ['typed here, sent with POST', 'typed here, sent over the WebSocket'];
  await compose(last[0], 'post');
  await waitForText(last[0]);
  await compose(last[1], 'ws');
  await waitForText(last[1]);
  await assertPanesAgree(last);
  await page.evaluate(() => window.scrollTo(0, 0));
  await delay(200);
  mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  assert.ok(existsSync(SCREENSHOT));
});

test('the results section shows the latest loadgen run, or how to make one', async () => {
  await eventually(async () => {
    const shown = await page.locator('[data-testid=results-table], [data-testid=no-results]').count();
    assert.equal(shown, 1, 'results section still empty');
  });
  if (await page.locator('[data-testid=no-results]').count()) {
    assert.match(await page.textContent('[data-testid=no-results]'), /cargo run --release --bin loadgen -- --mode all/);
  }

  // The table itself, from a fixed run file served in place of the lab's.
  const run = (mode, p50) => ({
    mode,
    users: 100,
    latency_us: { p50, p90: p50 * 2, p99: p50 * 4, p999: p50 * 8, max: p50 * 20, mean: p50 * 1.5, count: 10000 },
    deliveries: { expected: 10000, received: 10000, lost: 0, duplicated: 0, out_of_order: 0 },
    requests: { total: 5000, empty: 1200 },
    bytes_received: 3456789,
    send_lag_us: { p99: 900, max: 4000, count: 100 },
    server: { cpu_seconds: 1.25, rss_bytes: 24 * 1024 * 1024, bytes_sent: 4567890 },
    loadgen: { cpu_seconds: 2.5 },
  });
  const fixture = { runs: [run('poll', 250000), run('long_poll', 1800), run('sse', 900), run('ws', 700)] };
  fixture.runs[0].deliveries.lost = 3;
  // A transport that delivered nothing has no latency to show (the loadgen writes
  // zeros with a count of 0).
  fixture.runs[3].latency_us = { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0, count: 0 };
  Object.assign(fixture.runs[3].deliveries, { received: 0, lost: 10000 });
  await page.route('**/api/results/latest', (r) =>
    r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(fixture) }));
  await page.click('[data-testid=results-refresh]');
  await eventually(async () => assert.equal(await page.locator('[data-testid=results-row]').count(), 4));
  const first = await page.$$eval('[data-testid=results-row]:first-child td', (tds) => tds.map((t) => t.textContent));
  assert.equal(first[0], 'poll');
  assert.equal(first[1], '100');
  assert.equal(first[2], '250.0', 'p50 in ms');
  assert.equal(first[8], '10,000 / 10,000');
  assert.equal(first[9], '3', 'lost');
  const last = await page.$$eval('[data-testid=results-row]:last-child td', (tds) => tds.map((t) => t.textContent));
  assert.equal(last[0], 'ws');
  assert.deepEqual(last.slice(2, 8), ['–', '–', '–', '–', '–', '–'], 'no latency measured');
  // A load that fails takes the shown run's header line with its table.
  await page.unroute('**/api/results/latest');
  fixture.created_unix_s = 1795777152;
  await page.route('**/api/results/latest', (r) =>
    r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(fixture) }));
  await page.click('[data-testid=results-refresh]');
  await eventually(async () => assert.match(await page.textContent('#results-meta'), /measured 2026-11-27/));
  await page.unroute('**/api/results/latest');
  await page.route('**/api/results/latest', (r) =>
    r.fulfill({ status: 200, contentType: 'application/json', body: '{"runs": [' }));
  await page.click('[data-testid=results-refresh]');
  await eventually(async () => assert.match(await page.textContent('#results-body'), /Could not load results/));
  assert.equal(await page.textContent('#results-meta'), '', 'no header line left from the earlier run');
  await page.unroute('**/api/results/latest');
});

test('usable at 375 px wide: nothing sticks out sideways', async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  await delay(200);
  const widths = await page.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    panes: Array.from(document.querySelectorAll('.pane'), (p) => p.getBoundingClientRect().right),
  }));
  assert.ok(widths.doc <= 375, `page is ${widths.doc} px wide`);
  assert.ok(widths.panes.every((r) => r <= 375), `a pane reaches ${Math.max(...widths.panes)} px`);
  await page.screenshot({ path: path.join(os.tmpdir(), 'lab-page-375.png'), fullPage: true });
  // The composer still sends at this width.
  await compose('hello from a phone', 'post');
  await waitForText('hello from a phone');
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('a pane that comes back after the history moved on shows a gap, then carries on', async () => {
  // A room of its own, joined afresh: every pane starts at id 0.
  const room = ROOM + '-gap';
  await page.goto(`${base}/?room=${room}&name=${USER}`);
  for (const k of KINDS) await waitOpen(k);
  await page.fill('[data-testid=poll-interval]', '200');
  // All four away; the room's history (HISTORY messages) moves past where they were.
  for (const k of KINDS) {
    await page.click(`[data-testid=pane-${k}] [data-testid=toggle]`);
    assert.equal(await paneState(k), 'closed');
  }
  const total = HISTORY + 15;
  for (let i = 1; i <= total; i++) await postDirect('carol', `gap test ${i}`, room);
  for (const k of KINDS) await page.click(`[data-testid=pane-${k}] [data-testid=toggle]`);
  await waitForText(`gap test ${total}`);
  await delay(300);
  const firstHeld = total - HISTORY + 1;
  for (const k of KINDS) {
    const gaps = await page.$$eval(`[data-testid=pane-${k}] [data-testid=gap]`, (els) => els.map((e) => e.textContent));
    assert.equal(gaps.length, 1, `pane ${k} shows one gap marker`);
    assert.match(gaps[0], new RegExp(`messages 1–${firstHeld - 1} `), `pane ${k}: ${gaps[0]}`);
    const r = await rows(k);
    assert.deepEqual(r.map((x) => x[0]), Array.from({ length: HISTORY }, (_, i) => firstHeld + i), `pane ${k} carries on from the oldest held id`);
  }
  assert.equal(await page.locator('[data-testid=missing]').count(), 0);
});

test('the console shows no errors and no dialog fired', async () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(dialogs, []);
});

// Last: the server is stopped and started again, which the browser logs as failed
// requests while it is away.
test('after the server starts again, every pane says so and shows its messages', async () => {
  const room = ROOM + '-restart';
  await page.goto(`${base}/?room=${room}&name=${USER}`);
  for (const k of KINDS) await waitOpen(k);
  await page.fill('[data-testid=poll-interval]', '200');
  for (let i = 1; i <= 5; i++) await postDirect('dave', `before restart ${i}`, room);
  await waitForText('before restart 5');
  await stopLab();
  await startLab(Number(new URL(base).port));
  // The new server's ids start again at 1, below the 5 every pane has shown.
  const after = [];
  for (let i = 1; i <= 3; i++) {
    after.push(`after restart ${i}`);
    await postDirect('dave', after[i - 1], room);
  }
  await waitForText(after[2], 30000);
  await delay(300);
  for (const k of KINDS) {
    const said = await page.$$eval(`[data-testid=pane-${k}] [data-testid=restart]`, (els) => els.length);
    assert.equal(said, 1, `pane ${k} says once that the server started again`);
    const r = await rows(k);
    assert.deepEqual(r.slice(5).map((x) => [x[0], x[2]]), after.map((t, i) => [i + 1, t]), `pane ${k}`);
  }
});
