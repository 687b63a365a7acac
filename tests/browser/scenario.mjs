// Real OvenPlayer releases in real headless Chromium against the real host.
//
// Run by tests/tests/browser.rs inside a fresh network namespace (192.0.2.1 on a veth pair), so
// Chromium gathers a usable ICE candidate and nothing leaves the machine:
//   node scenario.mjs <edge-play|p2p-relay|p2p-rescue|firewalled-edge>
// Environment: HOST_BIN, HOST_CONFIG (the host and its config), HOST_PORT, HOST_ADDR, CHROMIUM,
// ICE_PORTS (firewalled-edge: the configured ICE port range, e.g. 10000-10004), BROWSER_ECHO=1 to
// echo the pages' consoles. Exits non-zero with the reason when a check fails.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const PORT = env.HOST_PORT ?? '3333';
const ADDR = env.HOST_ADDR ?? '192.0.2.1';
const WS_URL = `ws://${ADDR}:${PORT}/app/stream`;
/** A desktop Windows Chrome: host-eligible under the classification rules (headless is not). */
const DESKTOP_CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required',
];

const started = Date.now();
const log = (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a truthy value; fails naming `what` after `ms`. */
async function waitFor(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// The host process

class Host {
  constructor() {
    this.log = '';
    this.child = spawn(env.HOST_BIN, ['--config', env.HOST_CONFIG], {
      env: { ...env, RUST_LOG: 'info,webrtc=warn,rtc=warn', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const pipe of [this.child.stdout, this.child.stderr]) pipe.on('data', (d) => { this.log += d; });
  }
  async ready() {
    await waitFor('the host to serve', 20000, () => {
      if (this.child.exitCode !== null) throw new Error(`host exited:\n${this.log}`);
      return this.log.includes('waiting for viewers');
    });
  }
  async stats() {
    const response = await fetch(`http://127.0.0.1:${PORT}/stats`);
    return response.json();
  }
  /** The host's edge egress to session `id` (0 when it never served it). */
  async egress(id) {
    const session = (await this.stats()).sessions.find((s) => s.id === id);
    assert.ok(session, `session ${id} is live at the host`);
    return session.egress_bytes;
  }
  async metric(name) {
    return (await this.stats()).metrics[name] ?? 0;
  }
  stop() { this.child.kill('SIGKILL'); }
}

// ---------------------------------------------------------------------------------------------
// Viewers: one browser context each (no shared state), instrumented without touching the player

/**
 * Records every signalling message the page receives (with the ICE candidates an `offer` or
 * `candidate` carries, from its `candidates` and its SDP's `a=candidate` lines), and counts
 * decoded frames.
 */
const INSTRUMENT = () => {
  window.__signals = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        try {
          const m = JSON.parse(e.data);
          const signal = { at: Date.now(), command: m.command, id: m.id, peer_id: m.peer_id, code: m.code, error: m.error };
          if (m.command === 'offer' || m.command === 'candidate') {
            const sdp = typeof m.sdp === 'string' ? m.sdp : String(m.sdp?.sdp ?? '');
            signal.candidates = [
              ...(Array.isArray(m.candidates) ? m.candidates : []).map((c) => String(c?.candidate ?? c)),
              ...sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')).map((l) => l.slice(2)),
            ].filter((c) => c !== '');
          }
          window.__signals.push(signal);
        } catch { /* not JSON: the player reports it */ }
      });
    }
  };
  window.__frames = () => [...document.querySelectorAll('video')]
    .reduce((n, v) => n + (v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0), 0);
};

const ovenplayerPage = (wsUrl) => `<!doctype html><html><body>
<div id="player"></div>
<script src="/ovenplayer.js"></script>
<script>
  window.__p2pMode = [];
  window.__errors = [];
  const player = OvenPlayer.create('player', { autoStart: true, mute: true, sources: [{ type: 'webrtc', file: ${JSON.stringify(wsUrl)} }] });
  player.on('p2pMode', (on) => window.__p2pMode.push(on));
  player.on('error', (e) => window.__errors.push(JSON.stringify(e)));
</script></body></html>`;

class Viewer {
  /** `player` is `ovenplayer-0.10.38`, `ovenplayer-0.10.54` or `own` (the host's page at `/`). */
  static async open(browser, name, player) {
    const context = await browser.newContext({ userAgent: DESKTOP_CHROME });
    const page = await context.newPage();
    if (env.BROWSER_ECHO) page.on('console', (m) => log(`${name} console: ${m.text()}`));
    page.on('pageerror', (e) => log(`${name} page error: ${e.message}`));
    await page.addInitScript(INSTRUMENT);
    if (player === 'own') {
      await page.goto(`http://${ADDR}:${PORT}/`);
    } else {
      const script = readFileSync(path.join(here, 'node_modules', player, 'dist', 'ovenplayer.js'));
      await page.route('http://player.test/**', (route) => {
        const url = new URL(route.request().url());
        if (url.pathname === '/ovenplayer.js') return route.fulfill({ body: script, contentType: 'text/javascript' });
        return route.fulfill({ body: ovenplayerPage(WS_URL), contentType: 'text/html' });
      });
      await page.goto('http://player.test/');
    }
    log(`${name} opened (${player})`);
    return Object.assign(new Viewer(), { name, player, context, page });
  }
  frames() { return this.page.evaluate(() => window.__frames()); }
  signals() { return this.page.evaluate(() => window.__signals); }
  p2pMode() { return this.page.evaluate(() => window.__p2pMode ?? []); }
  /** This viewer's session id: the `id` of the first offer it received. */
  async sessionId() {
    const offer = await waitFor(`${this.name}'s first offer`, 15000, async () => (await this.signals()).find((s) => s.command === 'offer'));
    return offer.id;
  }
  /** Waits until `count` more frames are decoded; returns when the first of them arrived. */
  async playing(count = 60, ms = 20000) {
    const from = await this.frames();
    let firstAt = null;
    await waitFor(`${this.name} to decode ${count} frames (from ${from})`, ms, async () => {
      const now = await this.frames();
      if (now > from && firstAt === null) firstAt = Date.now();
      return now >= from + count;
    });
    log(`${this.name} plays: ${await this.frames()} frames decoded`);
    return firstAt;
  }
  /** Every ICE candidate the server sent this viewer (offers and trickled candidates), once each. */
  async offeredCandidates() {
    return [...new Set((await this.signals()).flatMap((s) => s.candidates ?? []))];
  }
  async close() { await this.context.close(); log(`${this.name} closed its page`); }
}

/** `v` plays from the edge: frames decoded, every offer from the edge, the host counts its bytes. */
async function playsFromEdge(host, v, ms = 20000) {
  await v.playing(60, ms);
  const id = await v.sessionId();
  const offers = (await v.signals()).filter((s) => s.command === 'offer');
  assert.ok(offers.every((o) => o.peer_id === 0), `${v.name}: every offer comes from the edge`);
  assert.ok((await host.egress(id)) > 50000, `${v.name}: the host counts what it sends`);
  if (v.player !== 'own') assert.deepEqual(await v.p2pMode(), [false], `${v.name}: p2pMode false`);
}

/** `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...` */
function candidatePort(candidate) {
  const fields = candidate.replace(/^a=/, '').split(/\s+/);
  const port = Number(fields[5]);
  return fields.length >= 8 && fields[6] === 'typ' && Number.isInteger(port) ? port : null;
}

/** `ICE_PORTS`: `10000-10004` or a single port. */
function icePorts() {
  const match = /^(\d+)(?:-(\d+))?$/.exec(env.ICE_PORTS ?? '');
  if (!match) throw new Error(`ICE_PORTS must name the configured ICE port range, e.g. 10000-10004 (got ${JSON.stringify(env.ICE_PORTS)})`);
  const [low, high] = [Number(match[1]), Number(match[2] ?? match[1])];
  return { low, high, has: (port) => port >= low && port <= high };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

const scenarios = {
  /** Our page and both OvenPlayer releases play from the edge (no plugin in the config). */
  async 'edge-play'(host, browser) {
    const viewers = [];
    for (const [name, player] of [['own', 'own'], ['op54', 'ovenplayer-0.10.54'], ['op38', 'ovenplayer-0.10.38']]) {
      viewers.push(await Viewer.open(browser, name, player));
    }
    for (const v of viewers) await playsFromEdge(host, v);
  },

  /**
   * Eight viewers join at once (our page and OvenPlayer 0.10.54, one browser context each) behind
   * a firewall that lets UDP through only on the configured ICE ports (the test installs it in the
   * namespace): every one plays from the edge, and every candidate the host offered is in ICE_PORTS.
   */
  async 'firewalled-edge'(host, browser) {
    const range = icePorts();
    const players = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'own' : 'ovenplayer-0.10.54'));
    const viewers = await Promise.all(players.map((player, i) => Viewer.open(browser, `v${i + 1}-${player === 'own' ? 'own' : 'op54'}`, player)));
    const played = await Promise.allSettled(viewers.map((v) => playsFromEdge(host, v, 45000)));

    const problems = [];
    for (const [i, v] of viewers.entries()) {
      const candidates = await v.offeredCandidates();
      const ports = candidates.map(candidatePort);
      const outside = candidates.filter((_, j) => ports[j] === null || !range.has(ports[j]));
      const outcome = played[i].status === 'fulfilled' ? 'plays' : `does not play (${played[i].reason?.message ?? played[i].reason})`;
      log(`${v.name}: offered ports ${[...new Set(ports)].join(' ') || 'none'}; ${outcome}`);
      if (played[i].status !== 'fulfilled') problems.push(`${v.name} ${outcome}`);
      if (candidates.length === 0) problems.push(`${v.name} was offered no ICE candidate`);
      for (const c of outside) problems.push(`${v.name} was offered a candidate outside ${range.low}-${range.high}: ${c}`);
    }
    assert.deepEqual(problems, [], `every viewer behind the firewall plays, on candidates in ${range.low}-${range.high} only`);
  },

  /** OvenPlayer 0.10.38: one host peer relays to two clients; they fall back when it goes. */
  async 'p2p-relay'(host, browser) {
    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.38');
    await a.playing();
    const aId = await a.sessionId();
    const b = await Viewer.open(browser, 'B', 'ovenplayer-0.10.38');
    const c = await Viewer.open(browser, 'C', 'ovenplayer-0.10.38');
    const clients = [b, c];
    for (const v of clients) {
      const offer = await waitFor(`${v.name}'s offer`, 15000, async () => (await v.signals()).find((s) => s.command === 'offer'));
      assert.equal(offer.peer_id, aId, `${v.name}'s offer comes from host peer A`);
      await v.playing();
      assert.deepEqual(await v.p2pMode(), [true], `${v.name}: p2pMode true`);
    }
    const asked = (await a.signals()).filter((s) => s.command === 'request_offer_p2p').map((s) => s.peer_id).sort();
    const ids = [await b.sessionId(), await c.sessionId()];
    assert.deepEqual(asked, [...ids].sort(), 'A was asked to offer to B and C');
    await sleep(2000);
    for (const [v, id] of clients.map((v, i) => [v, ids[i]])) {
      assert.equal(await host.egress(id), 0, `the edge sends nothing to ${v.name}`);
      await v.playing(30);
    }
    log(`edge egress to A ${await host.egress(aId)} bytes, to B and C 0: the host peer carries them`);

    const closedAt = Date.now();
    await a.close();
    const rescued = await Promise.all(clients.map(async (v, i) => {
      await waitFor(`${v.name}'s stop from the host`, 5000, async () => (await v.signals()).some((s) => s.command === 'stop' && s.peer_id === aId));
      await waitFor(`${v.name}'s edge offer`, 10000, async () => (await v.signals()).some((s) => s.command === 'offer' && s.peer_id === 0));
      const firstFrame = await v.playing(60, 30000);
      assert.deepEqual(await v.p2pMode(), [true, false], `${v.name}: p2pMode true then false`);
      assert.ok((await host.egress(ids[i])) > 0, `the edge serves ${v.name} now`);
      return firstFrame - closedAt;
    }));
    log(`FAILOVER_MS ${rescued.join(' ')} (host page closed -> first frame from the edge)`);
  },

  /** OvenPlayer 0.10.54 as host never offers; its client is rescued by the offer deadline. */
  async 'p2p-rescue'(host, browser) {
    const a = await Viewer.open(browser, 'A', 'ovenplayer-0.10.54');
    await a.playing();
    const aId = await a.sessionId();
    const askedAt = Date.now();
    const b = await Viewer.open(browser, 'B', 'ovenplayer-0.10.54');
    const bId = await waitFor('A to be asked for an offer to B', 15000, async () => (await a.signals()).find((s) => s.command === 'request_offer_p2p')?.peer_id);
    const firstFrame = await b.playing(60, 30000);
    const offers = (await b.signals()).filter((s) => s.command === 'offer');
    assert.deepEqual(offers.map((o) => o.peer_id), [0], 'B got exactly one offer, from the edge');
    assert.equal(await b.sessionId(), bId);
    assert.equal(await host.metric('p2p.offer_timeouts'), 1, 'the offer deadline fired once');
    await waitFor('A to be told to stop relaying to B', 5000, async () => (await a.signals()).some((s) => s.command === 'stop' && s.peer_id === bId));
    await a.playing(30);
    log(`RESCUE_MS ${firstFrame - askedAt} (B opened -> first frame from the edge)`);

    // A failed as a host: it is not chosen again for a while; the next viewer goes to the edge.
    const c = await Viewer.open(browser, 'C', 'ovenplayer-0.10.54');
    await c.playing();
    assert.deepEqual((await c.signals()).filter((s) => s.command === 'offer').map((o) => o.peer_id), [0], 'C is served by the edge');
    assert.equal((await a.signals()).filter((s) => s.command === 'request_offer_p2p').length, 1, 'A was not asked again');
    assert.equal(aId === bId, false);
  },
};

// ---------------------------------------------------------------------------------------------

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`usage: node scenario.mjs <${Object.keys(scenarios).join('|')}>`);
  process.exit(2);
}
const host = new Host();
let browser;
let failed = false;
try {
  await host.ready();
  browser = await chromium.launch({ executablePath: env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  log(`scenario ${name}: Chromium ${browser.version()}`);
  await scenarios[name](host, browser);
  log(`scenario ${name}: passed`);
} catch (e) {
  failed = true;
  console.error(`scenario ${name} FAILED: ${e.stack ?? e}`);
} finally {
  await browser?.close().catch(() => {});
  host.stop();
  if (failed || env.HOST_ECHO) console.error(`--- host log ---\n${host.log}`);
  process.exit(failed ? 1 : 0);
}
